//! shimnetd's TOML configuration file: parsing, declared-network checks, limits.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shimnet::config::Config;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(cfg) = Config::parse(text, "fuzz") {
        let l = cfg.api.limits();
        assert!(l.max_connections >= 1 && l.max_concurrent_requests >= 1);
        let _ = cfg.firewall.preference();
    }
});
