//! The etcd v3 client (crate `etcd-client`) built from `[etcd]`: one member at a time (see
//! [`Endpoints`]), TLS from `ca_file`/`cert_file`/`key_file`, credentials from `username` and
//! `password`/`password_file` (the token is renewed when it expires), dial and request timeouts,
//! and "require leader" so that a member cut off from its quorum fails the watch and the lease
//! keep-alive at once instead of serving a stale view.
//!
//! Why one member at a time: the client library's own balancing keeps handing requests to a
//! member that died (its connection attempts fail, but it still counts as ready), so a session of
//! five calls hits the dead member most of the time. Talking to one member and moving to the next
//! on any failure makes a fail-over take one dial timeout, well inside a lease's TTL.

use std::time::Duration;

use etcd_client::{Certificate, Client, ConnectOptions, Identity, TlsOptions};

use crate::config::{ConfigError, EtcdConfig};

fn read(field: &str, path: &std::path::Path) -> Result<Vec<u8>, ConfigError> {
    std::fs::read(path).map_err(|e| ConfigError {
        field: field.into(),
        message: format!("{}: {e}", path.display()),
    })
}

/// The connect options (reads the TLS and password files; an unreadable one is named).
pub fn options(cfg: &EtcdConfig) -> Result<ConnectOptions, ConfigError> {
    let dial = cfg.dial_timeout();
    // HTTP/2 pings find a dead connection (a member gone without a FIN) while streams are open;
    // etcd refuses pings more often than every 5 s (--grpc-keepalive-min-time).
    let mut o = ConnectOptions::new()
        .with_connect_timeout(dial)
        .with_timeout(dial)
        .with_keep_alive(Duration::from_secs(10), dial)
        .with_keep_alive_while_idle(false)
        .with_require_leader(true);
    if let Some(ca) = &cfg.ca_file {
        let mut tls =
            TlsOptions::new().ca_certificate(Certificate::from_pem(read("etcd.ca_file", ca)?));
        if let (Some(c), Some(k)) = (&cfg.cert_file, &cfg.key_file) {
            tls = tls.identity(Identity::from_pem(
                read("etcd.cert_file", c)?,
                read("etcd.key_file", k)?,
            ));
        }
        o = o.with_tls(tls);
    }
    if let Some(user) = &cfg.username {
        let password = match (&cfg.password, &cfg.password_file) {
            (Some(p), _) => p.clone(),
            (None, Some(f)) => String::from_utf8_lossy(&read("etcd.password_file", f)?)
                .lines()
                .next()
                .unwrap_or_default()
                .to_string(),
            (None, None) => String::new(),
        };
        o = o.with_user(user, password).with_auto_token_refresh(true);
    }
    Ok(o)
}

/// Whether an error from etcd says the credentials are wrong (not worth retrying).
pub fn is_auth_failure(e: &etcd_client::Error) -> bool {
    let text = e.to_string();
    text.contains("authentication failed") || text.contains("invalid user ID or password")
}

/// Which member to talk to: starts at a place that depends on the node (so nodes spread over
/// the members) and moves to the next after every failure.
#[derive(Debug, Clone)]
pub struct Endpoints {
    list: Vec<String>,
    current: usize,
}

impl Endpoints {
    /// `list` (not empty), starting at `seed % len`.
    pub fn new(list: &[String], seed: u64) -> Self {
        Endpoints {
            list: list.to_vec(),
            current: (seed % list.len().max(1) as u64) as usize,
        }
    }

    /// The member in use.
    pub fn current(&self) -> &str {
        &self.list[self.current]
    }

    /// Moves to the next member.
    pub fn advance(&mut self) {
        self.current = (self.current + 1) % self.list.len();
    }
}

/// Connects to `endpoint` (with credentials, authenticates: that needs the member to answer).
pub async fn connect(
    cfg: &EtcdConfig,
    opts: &ConnectOptions,
    endpoint: &str,
) -> Result<Client, etcd_client::Error> {
    let c = tokio::time::timeout(
        cfg.dial_timeout(),
        Client::connect([endpoint], Some(opts.clone())),
    )
    .await
    .map_err(|_| {
        etcd_client::Error::Internal(format!(
            "{endpoint} did not answer within {} s",
            cfg.dial_timeout_secs
        ))
    })??;
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_in_turn_from_a_seeded_start() {
        let list: Vec<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
        let mut e = Endpoints::new(&list, 4);
        assert_eq!(e.current(), "b");
        e.advance();
        assert_eq!(e.current(), "c");
        e.advance();
        assert_eq!(e.current(), "a");
        let one = Endpoints::new(&list[..1], 7);
        assert_eq!(one.current(), "a");
    }
}
