//! The etcd v3 client (crate `etcd-client`) built from `[etcd]`: balanced over every endpoint,
//! TLS from `ca_file`/`cert_file`/`key_file`, credentials from `username` and
//! `password`/`password_file` (the token is renewed when it expires), dial and request timeouts,
//! and "require leader" so that a member cut off from its quorum fails the watch and the lease
//! keep-alive at once instead of serving a stale view.

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

/// Connects (with credentials, authenticates: that needs a member to answer).
pub async fn connect(
    cfg: &EtcdConfig,
    opts: &ConnectOptions,
) -> Result<Client, etcd_client::Error> {
    let c = tokio::time::timeout(
        cfg.dial_timeout(),
        Client::connect(&cfg.endpoints, Some(opts.clone())),
    )
    .await
    .map_err(|_| {
        etcd_client::Error::Internal(format!(
            "no member answered within {} s",
            cfg.dial_timeout_secs
        ))
    })??;
    Ok(c)
}
