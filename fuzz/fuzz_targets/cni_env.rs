//! The CNI plugin's `CNI_*` environment: command, container id, netns path, interface name.
#![no_main]

use std::collections::HashMap;

use libfuzzer_sys::fuzz_target;
use shimnet_cni::env::{Command, Env};

fuzz_target!(|data: &[u8]| {
    // One `KEY=VALUE` per line, like an environment block.
    let text = String::from_utf8_lossy(data);
    let vars: HashMap<String, String> = text
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    if let Ok(env) = Env::read(|k| vars.get(k).cloned()) {
        if matches!(env.command, Command::Add | Command::Del | Command::Check) {
            assert!(
                !env.container_id.is_empty() && env.ifname.len() <= 15,
                "{env:?}"
            );
            assert!(
                !env.ifname.contains('/') && !env.container_id.contains('/'),
                "{env:?}"
            );
        }
        if matches!(env.command, Command::Add | Command::Check) {
            assert!(env.netns.starts_with('/'), "{env:?}");
        }
    }
});
