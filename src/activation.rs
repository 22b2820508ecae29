//! systemd integration without systemd: socket activation (`LISTEN_FDS`/`LISTEN_PID`, as passed by
//! `shimnetd.socket` or `systemd-socket-activate`) and readiness notification (`NOTIFY_SOCKET`,
//! `Type=notify`). Both are no-ops when the variables are absent.

use std::os::fd::{FromRawFd, RawFd};
use std::os::unix::net::UnixListener;

use sd_notify::NotifyState;

/// Socket activation could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ActivationError {
    /// `LISTEN_FDS`/`LISTEN_PID` are malformed.
    #[error("LISTEN_FDS: {0}")]
    Env(#[source] std::io::Error),
    /// The passed descriptor is not a listening unix stream socket.
    #[error("LISTEN_FDS: descriptor {fd} is not a listening unix stream socket: {why}")]
    NotUnixListener {
        /// The descriptor.
        fd: RawFd,
        /// What is wrong with it.
        why: String,
    },
}

/// The API socket handed over by the service manager, if any (the first passed descriptor; the
/// rest are ignored with a warning). It is non-blocking, ready for tokio.
pub fn inherited_listener() -> Result<Option<UnixListener>, ActivationError> {
    let mut fds = sd_notify::listen_fds().map_err(ActivationError::Env)?;
    let Some(fd) = fds.next() else {
        return Ok(None);
    };
    if fds.len() > 0 {
        tracing::warn!(
            extra = fds.len(),
            "LISTEN_FDS: only the first descriptor is used"
        );
    }
    check_unix_listener(fd)?;
    // SAFETY: the service manager passed `fd` to this process for it to own; it is open (checked
    // above) and nothing else in this process has taken it.
    let listener = unsafe { UnixListener::from_raw_fd(fd) };
    listener
        .set_nonblocking(true)
        .map_err(|e| ActivationError::NotUnixListener {
            fd,
            why: e.to_string(),
        })?;
    Ok(Some(listener))
}

fn check_unix_listener(fd: RawFd) -> Result<(), ActivationError> {
    let bad = |why: String| ActivationError::NotUnixListener { fd, why };
    // SAFETY: borrowed only for the duration of the checks; ownership stays with the caller.
    let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    let sock = socket2::SockRef::from(&borrowed);
    let domain = sock.domain().map_err(|e| bad(e.to_string()))?;
    if domain != socket2::Domain::UNIX {
        return Err(bad(format!("domain {domain:?}")));
    }
    let ty = sock.r#type().map_err(|e| bad(e.to_string()))?;
    if ty != socket2::Type::STREAM {
        return Err(bad(format!("type {ty:?}")));
    }
    if !sock.is_listener().map_err(|e| bad(e.to_string()))? {
        return Err(bad("not listening".into()));
    }
    Ok(())
}

/// Tells the service manager the daemon is ready (no-op without `NOTIFY_SOCKET`).
pub fn notify_ready(status: &str) {
    notify(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// Tells the service manager the daemon is stopping.
pub fn notify_stopping() {
    notify(&[NotifyState::Stopping]);
}

fn notify(state: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(state) {
        tracing::warn!("NOTIFY_SOCKET: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    #[test]
    fn only_listening_unix_stream_sockets_are_accepted() {
        let dir = tempfile::tempdir().unwrap();
        let l = UnixListener::bind(dir.path().join("l.sock")).unwrap();
        assert!(check_unix_listener(l.as_raw_fd()).is_ok());
        let d = std::os::unix::net::UnixDatagram::unbound().unwrap();
        let e = check_unix_listener(d.as_raw_fd()).unwrap_err().to_string();
        assert!(
            e.contains("not a listening unix stream socket") && e.contains("type"),
            "{e}"
        );
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        let e = check_unix_listener(a.as_raw_fd()).unwrap_err().to_string();
        assert!(e.contains("not listening"), "{e}");
        // An unbound IPv4 socket: refused for its domain before anything else.
        let t = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        let e = check_unix_listener(t.as_raw_fd()).unwrap_err().to_string();
        assert!(e.contains("domain"), "{e}");
    }
}
