//! REST API request bodies: JSON decoding, translation to engine requests and network planning
//! (everything a POST/PUT body goes through before the engine touches the kernel).
#![no_main]

use libfuzzer_sys::fuzz_target;
use shimnet_api::rest::{convert, query_param};
use shimnet_wire::{EndpointAttach, NetworkCreate};

include!("common_spec.rs");

fuzz_target!(|data: &[u8]| {
    let Some((&which, body)) = data.split_first() else {
        return;
    };
    match which % 3 {
        0 => {
            if let Ok(b) = convert::decode::<NetworkCreate>(body) {
                if let Ok(req) = convert::network_request(&b) {
                    if let Ok(spec) = runtime_net::plan::build_spec(req) {
                        check_spec(&spec);
                    }
                }
            }
        }
        1 => {
            if let Ok(b) = convert::decode::<EndpointAttach>(body) {
                let net = runtime_net::NetworkName::new("n1").unwrap();
                if let Ok(r) = convert::attach_request(net, &b) {
                    assert!(
                        r.netns.as_deref().is_some_and(|p| p.is_absolute()),
                        "relative netns accepted: {r:?}"
                    );
                }
            }
        }
        _ => {
            let q = String::from_utf8_lossy(body);
            let _ = query_param(&q, "ifname");
            let _ = query_param(&q, "force");
        }
    }
});
