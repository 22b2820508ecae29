//! `CNI_ARGS` (`K=V;K=V`): the static `IP=` and `MAC=` Podman passes there, and
//! `K8S_POD_NAME` (the container's name with Podman, the pod's with Kubernetes runtimes).

use crate::cni::error::CniError;

/// What shimnet reads from `CNI_ARGS`; other keys are ignored.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CniArgs {
    /// `IP=` values (comma-separated in the variable), with or without a prefix length.
    pub ips: Vec<String>,
    /// `MAC=`.
    pub mac: Option<String>,
    /// `K8S_POD_NAME=`.
    pub pod_name: Option<String>,
}

/// Parses `CNI_ARGS`. Pairs without `=` are refused (code 4), unknown keys ignored.
pub fn parse(s: &str) -> Result<CniArgs, CniError> {
    let mut out = CniArgs::default();
    for pair in s.split(';').map(str::trim).filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').ok_or_else(|| {
            CniError::env(format!(
                "CNI_ARGS: {pair:?} is not KEY=VALUE (pairs are separated by ';')"
            ))
        })?;
        match k {
            "IP" => out.ips.extend(
                v.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(String::from),
            ),
            "MAC" if !v.is_empty() => out.mac = Some(v.to_string()),
            "K8S_POD_NAME" if !v.is_empty() => out.pod_name = Some(v.to_string()),
            _ => {}
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn podman_args() {
        let a =
            parse("IgnoreUnknown=1;K8S_POD_NAME=rp2;MAC=02:00:00:00:00:77;IP=10.232.0.77").unwrap();
        assert_eq!(a.ips, vec!["10.232.0.77"]);
        assert_eq!(a.mac.as_deref(), Some("02:00:00:00:00:77"));
        assert_eq!(a.pod_name.as_deref(), Some("rp2"));
        assert_eq!(parse("").unwrap(), CniArgs::default());
        assert_eq!(parse("IP=10.0.0.2,fd00::2").unwrap().ips.len(), 2);
        assert_eq!(parse("IP").unwrap_err().code, 4);
    }
}
