//! CNI network configuration on stdin and `CNI_ARGS`: parsing, version negotiation and
//! translation to the daemon's network and attach requests, then network planning.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shimnet_api::rest::convert;
use shimnet_compat::cni::translate::AttachEnv;
use shimnet_compat::cni::{
    args, attach_request, negotiate, network_target, NetConf, NetworkTarget,
};

include!("common_spec.rs");

fuzz_target!(|data: &[u8]| {
    // First line: CNI_ARGS; the rest: the configuration.
    let (args_line, stdin) = match data.iter().position(|&b| b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (&data[..0], data),
    };
    let cni_args = args::parse(&String::from_utf8_lossy(args_line)).unwrap_or_default();
    let Ok((raw, conf)) = NetConf::parse(stdin) else {
        return;
    };
    let versions: Vec<String> = raw["cniVersions"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    let _ = negotiate(raw["cniVersion"].as_str(), &versions);
    let _ = shimnet_compat::cni::CniResult::parse(&raw["prevResult"]);
    if let Ok(NetworkTarget::Ensure(nc)) = network_target(&conf, None) {
        if let Ok(req) = convert::network_request(&nc) {
            if let Ok(spec) = runtime_net::plan::build_spec(req) {
                check_spec(&spec);
            }
        }
    }
    let env = AttachEnv {
        container_id: "c1",
        netns: "/run/netns/c1",
        ifname: "eth0",
    };
    if let Ok(a) = attach_request(&conf, env, &cni_args, &[]) {
        let _ = convert::attach_request(runtime_net::NetworkName::new("n").unwrap(), &a);
    }
});
