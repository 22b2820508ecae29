//! CNI spec versions: which ones shimnet speaks and how one is chosen from a configuration.

use std::fmt;

use crate::cni::error::{code, CniError};

/// Versions whose results shimnet can produce, oldest first.
pub const SUPPORTED_VERSIONS: [&str; 5] = ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

/// A supported spec version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Version {
    /// 0.3.0.
    V0_3_0,
    /// 0.3.1.
    V0_3_1,
    /// 0.4.0 (adds CHECK).
    V0_4_0,
    /// 1.0.0 (drops `ips[].version`).
    V1_0_0,
    /// 1.1.0 (adds STATUS, GC, interface `mtu`).
    V1_1_0,
}

impl Version {
    /// Parses a supported version string.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "0.3.0" => Version::V0_3_0,
            "0.3.1" => Version::V0_3_1,
            "0.4.0" => Version::V0_4_0,
            "1.0.0" => Version::V1_0_0,
            "1.1.0" => Version::V1_1_0,
            _ => return None,
        })
    }

    /// The version string.
    pub fn as_str(self) -> &'static str {
        SUPPORTED_VERSIONS[self as usize]
    }

    /// True if results carry `ips[].version` (before 1.0.0).
    pub fn ips_have_version(self) -> bool {
        self < Version::V1_0_0
    }

    /// True if the CHECK command exists in this version (0.4.0 and later).
    pub fn has_check(self) -> bool {
        self >= Version::V0_4_0
    }

    /// True if STATUS and GC exist in this version (1.1.0).
    pub fn has_status_and_gc(self) -> bool {
        self >= Version::V1_1_0
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Chooses the version to answer in: `cniVersion` when given (it must be supported), else the
/// newest supported entry of `cniVersions`.
pub fn negotiate(cni_version: Option<&str>, cni_versions: &[String]) -> Result<Version, CniError> {
    let supported = SUPPORTED_VERSIONS.join(", ");
    if let Some(v) = cni_version.filter(|v| !v.is_empty()) {
        return Version::parse(v).ok_or_else(|| {
            CniError::new(
                code::INCOMPATIBLE_VERSION,
                format!("cniVersion {v:?} is not supported by shimnet; use one of {supported}"),
            )
        });
    }
    if !cni_versions.is_empty() {
        return cni_versions
            .iter()
            .filter_map(|v| Version::parse(v))
            .max()
            .ok_or_else(|| {
                CniError::new(
                    code::INCOMPATIBLE_VERSION,
                    format!(
                        "none of cniVersions {cni_versions:?} is supported by shimnet; add one of {supported}"
                    ),
                )
            });
    }
    Err(CniError::new(
        code::INCOMPATIBLE_VERSION,
        format!("the configuration has no cniVersion; set it to one of {supported}"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiation() {
        assert_eq!(negotiate(Some("0.4.0"), &[]).unwrap(), Version::V0_4_0);
        let e = negotiate(Some("0.2.0"), &[]).unwrap_err();
        assert_eq!(e.code, 1);
        assert!(e.msg.contains("1.1.0"), "{e}");
        let list = vec![
            "0.2.0".to_string(),
            "1.0.0".into(),
            "9.9.9".into(),
            "0.4.0".into(),
        ];
        assert_eq!(negotiate(None, &list).unwrap(), Version::V1_0_0);
        assert_eq!(negotiate(None, &["0.1.0".to_string()]).unwrap_err().code, 1);
        assert_eq!(negotiate(None, &[]).unwrap_err().code, 1);
        assert_eq!(
            negotiate(Some(""), &["1.1.0".into()]).unwrap(),
            Version::V1_1_0
        );
    }

    #[test]
    fn features_by_version() {
        assert!(Version::V0_3_1.ips_have_version() && !Version::V1_0_0.ips_have_version());
        assert!(!Version::V0_3_1.has_check() && Version::V0_4_0.has_check());
        assert!(Version::V1_1_0.has_status_and_gc() && !Version::V1_0_0.has_status_and_gc());
        for v in SUPPORTED_VERSIONS {
            assert_eq!(Version::parse(v).unwrap().as_str(), v);
        }
    }
}
