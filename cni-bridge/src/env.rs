//! The `CNI_*` environment of one invocation, checked per command (missing variables are code 4).

use shimnet_compat::cni::CniError;

/// A CNI command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// Attach.
    Add,
    /// Detach.
    Del,
    /// Verify.
    Check,
    /// Report readiness.
    Status,
    /// Remove stale attachments.
    Gc,
    /// Report supported versions.
    Version,
}

/// The environment of one invocation.
#[derive(Debug, Clone)]
pub struct Env {
    /// `CNI_COMMAND`.
    pub command: Command,
    /// `CNI_CONTAINERID`.
    pub container_id: String,
    /// `CNI_NETNS` (may be empty on DEL).
    pub netns: String,
    /// `CNI_IFNAME`.
    pub ifname: String,
    /// `CNI_ARGS`.
    pub args: String,
    /// `CNI_PATH`.
    pub path: String,
}

impl Env {
    /// Reads the environment through `get` (std::env::var in the binary).
    pub fn read(get: impl Fn(&str) -> Option<String>) -> Result<Env, CniError> {
        let var = |k: &str| get(k).unwrap_or_default();
        let command = match var("CNI_COMMAND").as_str() {
            "ADD" => Command::Add,
            "DEL" => Command::Del,
            "CHECK" => Command::Check,
            "STATUS" => Command::Status,
            "GC" => Command::Gc,
            "VERSION" => Command::Version,
            "" => {
                return Err(CniError::env(
                    "CNI_COMMAND is not set; set it to ADD, DEL, CHECK, STATUS, GC or VERSION",
                ))
            }
            other => {
                return Err(CniError::env(format!(
                    "CNI_COMMAND {other:?} is unknown; use ADD, DEL, CHECK, STATUS, GC or VERSION"
                )))
            }
        };
        let env = Env {
            command,
            container_id: var("CNI_CONTAINERID"),
            netns: var("CNI_NETNS"),
            ifname: var("CNI_IFNAME"),
            args: var("CNI_ARGS"),
            path: var("CNI_PATH"),
        };
        let need_id = matches!(command, Command::Add | Command::Del | Command::Check);
        if need_id && env.container_id.is_empty() {
            return Err(CniError::env("CNI_CONTAINERID is not set"));
        }
        if need_id && env.ifname.is_empty() {
            return Err(CniError::env("CNI_IFNAME is not set"));
        }
        if need_id {
            check_container_id(&env.container_id)?;
            check_ifname(&env.ifname)?;
        }
        if matches!(command, Command::Add | Command::Check) {
            if env.netns.is_empty() {
                return Err(CniError::env(
                    "CNI_NETNS is not set; give the container's network namespace path",
                ));
            }
            if !env.netns.starts_with('/') {
                return Err(CniError::env(format!(
                    "CNI_NETNS {:?} is not an absolute path",
                    env.netns
                )));
            }
        }
        Ok(env)
    }
}

/// The CNI spec's container id: 1–255 characters of `[A-Za-z0-9_.-]`.
fn check_container_id(id: &str) -> Result<(), CniError> {
    let ok = id.len() <= 255
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(CniError::env(format!(
            "CNI_CONTAINERID {id:?} is invalid: it must be 1 to 255 characters of letters, digits, '-', '_' and '.'"
        )))
    }
}

/// A Linux interface name: 1–15 bytes of `[A-Za-z0-9_.-]`, not `.` or `..`.
fn check_ifname(name: &str) -> Result<(), CniError> {
    let ok = name.len() <= 15
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(CniError::env(format!(
            "CNI_IFNAME {name:?} is invalid: it must be 1 to 15 characters of letters, digits, '-', '_' and '.'"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn read(pairs: &[(&str, &str)]) -> Result<Env, CniError> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Env::read(|k| m.get(k).cloned())
    }

    #[test]
    fn container_id_and_ifname_are_checked() {
        let base = |id: &'static str, ifname: &'static str| {
            read(&[
                ("CNI_COMMAND", "DEL"),
                ("CNI_CONTAINERID", id),
                ("CNI_IFNAME", ifname),
            ])
        };
        assert!(base("c-1_x.y", "eth0").is_ok());
        for (id, ifname, field) in [
            ("a/b", "eth0", "CNI_CONTAINERID"),
            ("a b", "eth0", "CNI_CONTAINERID"),
            ("c", "eth0123456789012", "CNI_IFNAME"),
            ("c", "x/y", "CNI_IFNAME"),
            ("c", "a b", "CNI_IFNAME"),
            ("c", "..", "CNI_IFNAME"),
        ] {
            let e = base(id, ifname).unwrap_err();
            assert_eq!(e.code, 4, "{id} {ifname}");
            assert!(e.msg.contains(field), "{e:?}");
        }
    }

    #[test]
    fn per_command_requirements() {
        assert_eq!(read(&[]).unwrap_err().code, 4);
        assert_eq!(read(&[("CNI_COMMAND", "FOO")]).unwrap_err().code, 4);
        assert!(read(&[("CNI_COMMAND", "VERSION")]).is_ok());
        assert!(read(&[("CNI_COMMAND", "STATUS")]).is_ok());
        let add = [
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "c"),
            ("CNI_IFNAME", "eth0"),
        ];
        let e = read(&add).unwrap_err();
        assert!(e.msg.contains("CNI_NETNS"), "{e}");
        let mut del = add.to_vec();
        del[0].1 = "DEL";
        assert!(read(&del).is_ok(), "DEL without a netns is fine");
        let mut rel = add.to_vec();
        rel.push(("CNI_NETNS", "netns"));
        assert_eq!(read(&rel).unwrap_err().code, 4);
    }
}
