//! docker's iptables chain layout for the docker0-compatible mode: `DOCKER-USER` (jumped first
//! from `FORWARD`, ending in `RETURN`) so administrators' rules there still filter container
//! traffic, and empty `DOCKER` chains in `filter` and `nat` for tools that expect them. shimnet's
//! own rules stay in its backend; an iptables DROP in `DOCKER-USER` is final for the packet
//! whatever nftables accepts. Acts on the calling thread's network namespace.

/// The chain administrators put their rules in.
pub const DOCKER_USER: &str = "DOCKER-USER";
/// docker's per-container chain (kept empty: shimnet's DNAT lives in its backend).
pub const DOCKER: &str = "DOCKER";
/// The jump that must be the first rule of `FORWARD`.
pub const JUMP: &str = "-j DOCKER-USER";

/// Whether `FORWARD`'s listing (`iptables -S FORWARD`) has the DOCKER-USER jump first (pure).
pub fn jump_is_first(listing: &[String]) -> bool {
    listing
        .iter()
        .find(|l| l.starts_with("-A FORWARD"))
        .is_some_and(|l| l.trim() == "-A FORWARD -j DOCKER-USER")
}

fn err(e: Box<dyn std::error::Error>) -> String {
    e.to_string().trim().to_string()
}

/// Creates the chains if missing and moves the DOCKER-USER jump to the top of `FORWARD`.
pub fn ensure(v6: bool) -> Result<(), String> {
    let ipt = iptables::new(v6).map_err(err)?;
    if !ipt.chain_exists("filter", DOCKER_USER).map_err(err)? {
        ipt.new_chain("filter", DOCKER_USER).map_err(err)?;
        ipt.append("filter", DOCKER_USER, "-j RETURN")
            .map_err(err)?;
    }
    for table in ["filter", "nat"] {
        if !ipt.chain_exists(table, DOCKER).map_err(err)? {
            ipt.new_chain(table, DOCKER).map_err(err)?;
        }
    }
    let listing = ipt.list("filter", "FORWARD").map_err(err)?;
    if !jump_is_first(&listing) {
        if ipt.exists("filter", "FORWARD", JUMP).map_err(err)? {
            ipt.delete_all("filter", "FORWARD", JUMP).map_err(err)?;
        }
        ipt.insert("filter", "FORWARD", JUMP, 1).map_err(err)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn l(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn jump_must_be_the_first_forward_rule() {
        assert!(jump_is_first(&l(&[
            "-P FORWARD DROP",
            "-A FORWARD -j DOCKER-USER",
            "-A FORWARD -j SHIMNET-FORWARD"
        ])));
        assert!(!jump_is_first(&l(&[
            "-P FORWARD DROP",
            "-A FORWARD -j SHIMNET-FORWARD",
            "-A FORWARD -j DOCKER-USER"
        ])));
        assert!(!jump_is_first(&l(&["-P FORWARD ACCEPT"])));
    }
}
