//! DNS names as the name tables see them: registered names normalised to lower-case keys, query
//! names turned into the same keys (lookups are case-insensitive, RFC 4343), and reverse-lookup
//! names (`in-addr.arpa`, `ip6.arpa`) turned into addresses and back.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use hickory_proto::rr::Name;
use ipnetwork::IpNetwork;

/// Longest DNS name in presentation form without the final dot (RFC 1035: 255 octets on the
/// wire).
pub const MAX_NAME: usize = 253;
/// Longest label (RFC 1035).
pub const MAX_LABEL: usize = 63;

fn label_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'_'
}

/// Why a name cannot be registered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// Empty, or longer than [`MAX_NAME`].
    #[error("must be 1 to {MAX_NAME} characters")]
    Length,
    /// A label is empty (two dots in a row, a leading or trailing dot) or longer than
    /// [`MAX_LABEL`].
    #[error("each dot-separated label must be 1 to {MAX_LABEL} characters")]
    Label,
    /// A byte other than an ASCII letter, digit, '-' or '_'.
    #[error("may only contain ASCII letters, digits, '-', '_' and dots between labels")]
    Byte,
}

/// Checks a name someone wants registered: dot-separated labels of 1–63 ASCII letters, digits,
/// '-' or '_', at most 253 characters, no leading or trailing dot.
pub fn check(name: &str) -> Result<(), NameError> {
    if name.is_empty() || name.len() > MAX_NAME {
        return Err(NameError::Length);
    }
    for label in name.split('.') {
        if label.is_empty() || label.len() > MAX_LABEL {
            return Err(NameError::Label);
        }
        if !label.bytes().all(label_byte) {
            return Err(NameError::Byte);
        }
    }
    Ok(())
}

/// The table key of a registered name: the name in lower case. `None` if [`check`] refuses it.
pub fn key(name: &str) -> Option<String> {
    check(name).ok()?;
    Some(name.to_ascii_lowercase())
}

/// The table key of a query name: its labels in lower case joined by dots, without the root.
/// `None` when a label holds a byte no registered name can contain (such a name never matches a
/// local one) or the name is the root.
pub fn query_key(name: &Name) -> Option<String> {
    let mut out = String::with_capacity(name.len());
    for label in name.iter() {
        if label.is_empty() || !label.iter().copied().all(label_byte) {
            return None;
        }
        if !out.is_empty() {
            out.push('.');
        }
        out.extend(label.iter().map(|b| char::from(b.to_ascii_lowercase())));
    }
    (!out.is_empty()).then_some(out)
}

/// The address a reverse-lookup key stands for (`4.3.2.10.in-addr.arpa` → 10.2.3.4, the 32
/// nibbles of `…ip6.arpa` → an IPv6 address). `None` for anything else, including partial
/// reverse names (a zone's apex, not an address).
pub fn reverse_addr(key: &str) -> Option<IpAddr> {
    if let Some(rest) = key.strip_suffix(".in-addr.arpa") {
        let parts: Vec<&str> = rest.split('.').collect();
        if parts.len() != 4 {
            return None;
        }
        let mut o = [0u8; 4];
        for (slot, p) in o.iter_mut().zip(parts.iter().rev()) {
            // No leading zeros or signs: `010` is not a reverse label for 10.
            if p.is_empty() || p.len() > 3 || (p.len() > 1 && p.starts_with('0')) {
                return None;
            }
            *slot = p.parse().ok()?;
        }
        return Some(IpAddr::V4(Ipv4Addr::from(o)));
    }
    if let Some(rest) = key.strip_suffix(".ip6.arpa") {
        let nibbles: Vec<&str> = rest.split('.').collect();
        if nibbles.len() != 32 {
            return None;
        }
        let mut n: u128 = 0;
        for p in nibbles.iter().rev() {
            let [c] = p.as_bytes() else { return None };
            n = (n << 4) | u128::from(char::from(*c).to_digit(16)?);
        }
        return Some(IpAddr::V6(Ipv6Addr::from(n)));
    }
    None
}

/// True for a key in the reverse-lookup trees (so that it is never mistaken for a host name).
pub fn is_reverse(key: &str) -> bool {
    key == "in-addr.arpa"
        || key == "ip6.arpa"
        || key.ends_with(".in-addr.arpa")
        || key.ends_with(".ip6.arpa")
}

/// The reverse-lookup name of an address, fully qualified.
pub fn reverse_name(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            format!("{}.{}.{}.{}.in-addr.arpa.", o[3], o[2], o[1], o[0])
        }
        IpAddr::V6(v6) => {
            let n = u128::from(v6);
            let mut s = String::with_capacity(73);
            for i in 0..32 {
                let nib = (n >> (i * 4)) & 0xf;
                s.push(char::from_digit(nib as u32, 16).expect("a nibble is a hex digit"));
                s.push('.');
            }
            s.push_str("ip6.arpa.");
            s
        }
    }
}

/// The apex of the reverse zone that holds a subnet's addresses: the subnet rounded out to whole
/// labels (octets for IPv4, nibbles for IPv6), fully qualified (10.89.0.0/24 → `0.89.10.in-addr.arpa.`,
/// 10.89.0.0/20 → `89.10.in-addr.arpa.`).
pub fn reverse_apex(net: IpNetwork) -> String {
    let full = reverse_name(net.network());
    let (labels, keep) = match net {
        IpNetwork::V4(n) => (4usize, usize::from(n.prefix() / 8)),
        IpNetwork::V6(n) => (32usize, usize::from(n.prefix() / 4)),
    };
    // `full` has `labels` address labels then the suffix; drop the host part's labels.
    let drop = labels - keep;
    full.splitn(drop + 1, '.')
        .last()
        .unwrap_or(&full)
        .to_string()
}

/// The fully qualified form of `key` under `domain` (both keys).
pub fn fqdn(key: &str, domain: &str) -> String {
    format!("{key}.{domain}.")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registered_names() {
        assert_eq!(key("Web").as_deref(), Some("web"));
        assert_eq!(key("my.app_1-x").as_deref(), Some("my.app_1-x"));
        assert_eq!(check(""), Err(NameError::Length));
        assert_eq!(check(&"a".repeat(254)), Err(NameError::Length));
        assert!(check(&vec!["a".repeat(63); 3].join(".")).is_ok());
        assert_eq!(check(&"a".repeat(64)), Err(NameError::Label));
        assert_eq!(check("a..b"), Err(NameError::Label));
        assert_eq!(check(".a"), Err(NameError::Label));
        assert_eq!(check("a."), Err(NameError::Label));
        assert_eq!(check("a b"), Err(NameError::Byte));
        assert_eq!(check("wéb"), Err(NameError::Byte));
        assert_eq!(check("a/b"), Err(NameError::Byte));
    }

    #[test]
    fn query_keys_are_lower_case_and_refuse_odd_bytes() {
        let n = Name::from_ascii("WeB.Dns.Shimnet.").unwrap();
        assert_eq!(query_key(&n).as_deref(), Some("web.dns.shimnet"));
        assert_eq!(query_key(&Name::root()), None);
        // A label holding a dot byte must not match the two-label name "a.b".
        let odd = Name::from_labels(vec![b"a.b".to_vec()]).unwrap();
        assert_eq!(query_key(&odd), None);
    }

    #[test]
    fn reverse_names_round_trip() {
        for ip in ["10.89.0.7", "fd00:89::7", "::1", "255.255.255.255"] {
            let ip: IpAddr = ip.parse().unwrap();
            let name = reverse_name(ip);
            let key = name.trim_end_matches('.');
            assert_eq!(reverse_addr(key), Some(ip), "{name}");
            assert!(is_reverse(key));
        }
        assert_eq!(
            reverse_name("10.89.0.7".parse().unwrap()),
            "7.0.89.10.in-addr.arpa."
        );
        assert_eq!(reverse_addr("0.89.10.in-addr.arpa"), None, "a zone apex");
        assert_eq!(reverse_addr("07.0.89.10.in-addr.arpa"), None);
        assert_eq!(reverse_addr("256.0.89.10.in-addr.arpa"), None);
        assert_eq!(reverse_addr("a.0.89.10.in-addr.arpa"), None);
        assert_eq!(reverse_addr("web"), None);
        assert!(!is_reverse("arpa"));
    }

    #[test]
    fn reverse_apex_rounds_out_to_labels() {
        let apex = |s: &str| reverse_apex(s.parse().unwrap());
        assert_eq!(apex("10.89.0.0/24"), "0.89.10.in-addr.arpa.");
        assert_eq!(apex("10.89.0.0/20"), "89.10.in-addr.arpa.");
        assert_eq!(apex("10.0.0.0/8"), "10.in-addr.arpa.");
        assert_eq!(apex("10.89.0.4/30"), "0.89.10.in-addr.arpa.");
        assert_eq!(
            apex("fd00:89::/64"),
            "0.0.0.0.0.0.0.0.9.8.0.0.0.0.d.f.ip6.arpa."
        );
    }
}
