//! Checks that a path from a request names a network namespace (a bind mount or `/proc/PID/ns/net`
//! file of the nsfs file system whose namespace type is "network") before anything enters it, and
//! whether a recorded one is still there.

use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// `ioctl(fd, NS_GET_NSTYPE)` (linux/nsfs.h: `_IO(0xb7, 0x3)`).
const NS_GET_NSTYPE: libc::c_ulong = 0xb703;

/// Why a path is not a usable network namespace.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NetnsPathError {
    /// Not an absolute path.
    #[error("{0} is not an absolute path")]
    NotAbsolute(String),
    /// The path cannot be opened.
    #[error("{0} does not exist or cannot be opened: {1}")]
    Missing(String, String),
    /// The file is not a namespace file (not on nsfs).
    #[error("{0} is not a namespace file")]
    NotNamespace(String),
    /// A namespace of another kind (mount, pid, ...).
    #[error("{0} is a namespace but not a network namespace")]
    NotNetwork(String),
}

/// Ok if `path` is an absolute path to a network namespace.
pub fn check_netns(path: &Path) -> Result<(), NetnsPathError> {
    let shown = path.display().to_string();
    if !path.is_absolute() {
        return Err(NetnsPathError::NotAbsolute(shown));
    }
    // statfs first, without opening: a FIFO or device named by a hostile request is never
    // opened (opening a FIFO would block the caller).
    let missing = |e: nix::Error| NetnsPathError::Missing(shown.clone(), e.desc().to_string());
    let nsfs = |fs: nix::sys::statfs::Statfs| fs.filesystem_type() == nix::sys::statfs::NSFS_MAGIC;
    if !nsfs(nix::sys::statfs::statfs(path).map_err(missing)?) {
        return Err(NetnsPathError::NotNamespace(shown));
    }
    // Non-blocking, and checked again on the open descriptor (the path may have changed).
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| NetnsPathError::Missing(shown.clone(), e.to_string()))?;
    if !nsfs(nix::sys::statfs::fstatfs(&file).map_err(missing)?) {
        return Err(NetnsPathError::NotNamespace(shown));
    }
    // SAFETY: NS_GET_NSTYPE takes no argument and only reads the open descriptor, which lives
    // for the duration of the call.
    let kind = unsafe { libc::ioctl(file.as_raw_fd(), NS_GET_NSTYPE as _) };
    if kind != libc::CLONE_NEWNET {
        return Err(NetnsPathError::NotNetwork(shown));
    }
    Ok(())
}

/// True if a namespace path still exists and is a namespace (not a stale empty file).
pub fn alive(path: &Path) -> bool {
    nix::sys::statfs::statfs(path)
        .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::NSFS_MAGIC)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_netns_is_not_alive() {
        assert!(!alive(Path::new("/nonexistent/netns")));
        let f = tempfile::NamedTempFile::new().unwrap();
        assert!(!alive(f.path()), "a plain file is not a namespace");
        assert!(alive(Path::new("/proc/self/ns/net")));
    }

    #[test]
    fn only_network_namespaces_pass() {
        assert_eq!(check_netns(Path::new("/proc/self/ns/net")), Ok(()));
        assert!(matches!(
            check_netns(Path::new("/proc/self/ns/mnt")),
            Err(NetnsPathError::NotNetwork(_))
        ));
        let f = tempfile::NamedTempFile::new().unwrap();
        assert!(matches!(
            check_netns(f.path()),
            Err(NetnsPathError::NotNamespace(_))
        ));
        assert!(matches!(
            check_netns(Path::new("/nonexistent/ns")),
            Err(NetnsPathError::Missing(..))
        ));
        assert!(matches!(
            check_netns(Path::new("run/netns/x")),
            Err(NetnsPathError::NotAbsolute(_))
        ));
        assert!(matches!(
            check_netns(Path::new("/proc")),
            Err(NetnsPathError::NotNamespace(_))
        ));
        // A FIFO is refused without being opened (opening it would block).
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
        assert!(matches!(
            check_netns(&fifo),
            Err(NetnsPathError::NotNamespace(_))
        ));
    }
}
