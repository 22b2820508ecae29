//! Docker plugin request bodies: libnetwork call decoding, option and port translation, network
//! planning, and dockerd's daemon.json.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shimnet_compat::docker::wire::{decode, Call};
use shimnet_compat::docker::{daemon_json, options};

include!("common_spec.rs");

const CALLS: &[&str] = &[
    "/Plugin.Activate",
    "/NetworkDriver.CreateNetwork",
    "/NetworkDriver.DeleteNetwork",
    "/NetworkDriver.CreateEndpoint",
    "/NetworkDriver.EndpointOperInfo",
    "/NetworkDriver.DeleteEndpoint",
    "/NetworkDriver.Join",
    "/NetworkDriver.Leave",
    "/NetworkDriver.ProgramExternalConnectivity",
    "/IpamDriver.RequestPool",
    "/IpamDriver.ReleasePool",
    "/IpamDriver.RequestAddress",
    "/IpamDriver.ReleaseAddress",
    "/NetworkDriver.Unknown",
];

fuzz_target!(|data: &[u8]| {
    let Some((&which, body)) = data.split_first() else {
        return;
    };
    if usize::from(which) == CALLS.len() {
        let _ = daemon_json::docker0_settings(std::str::from_utf8(body).ok());
        return;
    }
    let path = CALLS[usize::from(which) % CALLS.len()];
    match decode(path, body) {
        Ok(Call::CreateNetwork(c)) => {
            let _ = options::network_name(&c.network_id);
            if let Ok(req) = options::network_request(&c) {
                if let Ok(spec) = runtime_net::plan::build_spec(req) {
                    check_spec(&spec);
                }
            }
        }
        Ok(Call::CreateEndpoint(c)) => {
            if let Ok(ports) = options::port_requests(&c.ports) {
                for p in ports {
                    let _ = format!("{p:?}");
                }
            }
        }
        _ => {}
    }
});
