//! Kernel feature report: which link kinds and firewall facilities this host can use, found by
//! trying them in a throwaway network namespace (nothing on the host is touched).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use rtnetlink::{LinkBridge, LinkIpIp, LinkVeth, LinkVxlan};

/// One feature: usable or not, and why.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Feature {
    /// Usable here.
    pub available: bool,
    /// What the probe saw.
    pub detail: String,
}

/// The whole report, by feature name (bridge, veth, vxlan, ipip, tun, nftables, iptables).
pub type Features = BTreeMap<&'static str, Feature>;

fn feature(r: Result<String, String>) -> Feature {
    match r {
        Ok(detail) => Feature {
            available: true,
            detail,
        },
        Err(detail) => Feature {
            available: false,
            detail,
        },
    }
}

async fn try_link(
    handle: &rtnetlink::Handle,
    msg: netlink_packet_route::link::LinkMessage,
) -> Result<String, String> {
    handle
        .link()
        .add(msg)
        .execute()
        .await
        .map(|()| "created a test link".to_string())
        .map_err(|e| e.to_string())
}

/// Runs `f` with an rtnetlink handle inside a fresh network namespace, on a dedicated thread (the
/// namespace dies with the thread). `Err` says why the namespace or the handle could not be had.
fn in_scratch_netns<T, F, Fut>(f: F) -> Result<T, String>
where
    F: FnOnce(rtnetlink::Handle) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = T>,
    T: Send + 'static,
{
    std::thread::spawn(move || -> Result<T, String> {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
            .map_err(|e| format!("unshare: {e}"))?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        rt.block_on(async {
            let (conn, handle, _) = rtnetlink::new_connection().map_err(|e| e.to_string())?;
            tokio::spawn(conn);
            Ok(f(handle).await)
        })
    })
    .join()
    .unwrap_or_else(|_| Err("probe thread panicked".into()))
}

/// Probes link kinds inside a fresh namespace on a dedicated thread, and the firewall tools.
pub fn probe() -> Features {
    let mut out = Features::new();
    let links = in_scratch_netns(|handle| async move {
        let lo = Ipv4Addr::LOCALHOST;
        vec![
            (
                "bridge",
                feature(try_link(&handle, LinkBridge::new("probe-br").build()).await),
            ),
            (
                "veth",
                feature(try_link(&handle, LinkVeth::new("probe-va", "probe-vb").build()).await),
            ),
            (
                "vxlan",
                feature(try_link(&handle, LinkVxlan::new("probe-vx", 42).port(4789).build()).await),
            ),
            (
                "ipip",
                feature(try_link(&handle, LinkIpIp::new("probe-ipip").local(lo).build()).await),
            ),
        ]
    });
    match links {
        Ok(v) => out.extend(v),
        Err(e) => {
            for k in ["bridge", "veth", "vxlan", "ipip"] {
                out.insert(
                    k,
                    Feature {
                        available: false,
                        detail: e.clone(),
                    },
                );
            }
        }
    }
    out.insert(
        "tun",
        feature(
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open("/dev/net/tun")
                .map(|_| "/dev/net/tun opens".to_string())
                .map_err(|e| format!("/dev/net/tun: {e}")),
        ),
    );
    out.insert("nftables", feature(crate::firewall::probe_nftables()));
    out.insert("iptables", feature(crate::firewall::probe_iptables()));
    out
}

/// Whether the kernel can create an IPIP device: tried in a throwaway namespace on a dedicated
/// thread. `Err` carries the reason (e.g. `CONFIG_NET_IPIP` unset).
pub fn kernel_ipip() -> Result<String, String> {
    in_scratch_netns(|handle| async move {
        try_link(
            &handle,
            LinkIpIp::new("probe-ipip")
                .local(Ipv4Addr::LOCALHOST)
                .build(),
        )
        .await
    })?
}
