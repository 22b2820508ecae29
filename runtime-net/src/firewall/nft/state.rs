//! Parses libnftables' JSON listing of table `inet shimnet` into what the backend needs to find
//! its own objects: chain names and commented set/map elements (keys rendered back to nft
//! syntax so they can be deleted).

use serde_json::Value;

use super::rules::set_has_ifname_keys;

/// One set or map element.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Elem {
    /// Set or map name.
    pub set: String,
    /// Key in nft syntax.
    pub key: String,
    /// Element comment (owner), if any.
    pub comment: Option<String>,
}

/// What the table holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Listing {
    /// Chain names.
    pub chains: Vec<String>,
    /// Elements of every set and map.
    pub elems: Vec<Elem>,
}

/// Parses the output of `list table inet shimnet` in JSON mode.
pub fn parse(json: &str) -> Result<Listing, String> {
    let v: Value = serde_json::from_str(json).map_err(|e| format!("bad nft JSON: {e}"))?;
    let items = v
        .get("nftables")
        .and_then(Value::as_array)
        .ok_or("nft JSON without an \"nftables\" array")?;
    let mut out = Listing::default();
    for item in items {
        if let Some(c) = item.get("chain") {
            if let Some(name) = c.get("name").and_then(Value::as_str) {
                out.chains.push(name.to_string());
            }
            continue;
        }
        let (obj, is_map) = match (item.get("set"), item.get("map")) {
            (Some(s), _) => (s, false),
            (None, Some(m)) => (m, true),
            _ => continue,
        };
        let Some(set) = obj.get("name").and_then(Value::as_str) else {
            continue;
        };
        let quote = set_has_ifname_keys(set);
        for e in obj
            .get("elem")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            // Map elements are [key, data] pairs; set elements are bare keys.
            let k = if is_map {
                e.as_array().and_then(|a| a.first()).unwrap_or(e)
            } else {
                e
            };
            let (val, comment) = match k.get("elem") {
                Some(inner) => (
                    inner.get("val").unwrap_or(&Value::Null),
                    inner
                        .get("comment")
                        .and_then(Value::as_str)
                        .map(String::from),
                ),
                None => (k, None),
            };
            let key =
                render(val, quote).ok_or_else(|| format!("unexpected element {val} in {set}"))?;
            out.elems.push(Elem {
                set: set.to_string(),
                key,
                comment,
            });
        }
    }
    Ok(out)
}

/// Renders a JSON element value back to nft syntax.
fn render(v: &Value, quote: bool) -> Option<String> {
    match v {
        Value::String(s) if quote => Some(format!("\"{s}\"")),
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Object(o) => {
            if let Some(p) = o.get("prefix") {
                let addr = p.get("addr")?.as_str()?;
                let len = p.get("len")?.as_u64()?;
                Some(format!("{addr}/{len}"))
            } else if let Some(r) = o.get("range").and_then(Value::as_array) {
                Some(format!(
                    "{}-{}",
                    render(r.first()?, quote)?,
                    render(r.get(1)?, quote)?
                ))
            } else if let Some(c) = o.get("concat").and_then(Value::as_array) {
                let parts: Option<Vec<String>> = c.iter().map(|x| render(x, quote)).collect();
                Some(parts?.join(" . "))
            } else {
                None
            }
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Captured from `nft -j list table inet shimnet` (nftables 1.0.6), trimmed.
    const GOLDEN: &str = r#"{"nftables": [{"metainfo": {"version": "1.0.6", "release_name": "Lester Gooch #5", "json_schema_version": 1}}, {"table": {"family": "inet", "name": "shimnet", "handle": 6}}, {"map": {"family": "inet", "name": "fwd_in", "table": "shimnet", "type": "ifname", "handle": 1, "map": "verdict", "elem": [[{"elem": {"val": "br0", "comment": "my-net.1"}}, {"jump": {"target": "fwdin/my-net.1"}}]]}}, {"map": {"family": "inet", "name": "nat4", "table": "shimnet", "type": "ipv4_addr", "handle": 2, "map": "verdict", "flags": ["interval"], "elem": [[{"elem": {"val": {"prefix": {"addr": "10.2.0.0", "len": 24}}, "comment": "my-net.1"}}, {"jump": {"target": "nat4/my-net.1"}}]]}}, {"set": {"family": "inet", "name": "bridges", "table": "shimnet", "type": "ifname", "handle": 3, "elem": [{"elem": {"val": "br0", "comment": "my-net.1"}}, "br9"]}}, {"map": {"family": "inet", "name": "ports4", "table": "shimnet", "type": ["inet_proto", "inet_service"], "handle": 4, "map": "ipv4_addr . inet_service", "elem": [[{"elem": {"val": {"concat": ["tcp", 8080]}, "comment": "snv1"}}, {"concat": ["10.2.0.2", 80]}]]}}, {"map": {"family": "inet", "name": "ports4h", "table": "shimnet", "type": ["ipv4_addr", "inet_proto", "inet_service"], "handle": 5, "map": "ipv4_addr . inet_service", "elem": [[{"elem": {"val": {"concat": ["10.9.9.9", "udp", 53]}, "comment": "snv1"}}, {"concat": ["10.2.0.2", 53]}]]}}, {"chain": {"family": "inet", "table": "shimnet", "name": "forward", "handle": 7, "type": "filter", "hook": "forward", "prio": 0, "policy": "accept"}}, {"chain": {"family": "inet", "table": "shimnet", "name": "fwdin/my-net.1", "handle": 20}}, {"rule": {"family": "inet", "table": "shimnet", "chain": "forward", "handle": 12, "expr": [{"vmap": {"key": {"meta": {"key": "oifname"}}, "data": "@fwd_in"}}]}}]}"#;

    #[test]
    fn parses_golden_listing() {
        let l = parse(GOLDEN).unwrap();
        assert_eq!(l.chains, ["forward", "fwdin/my-net.1"]);
        let e = |set: &str, key: &str, c: Option<&str>| Elem {
            set: set.into(),
            key: key.into(),
            comment: c.map(String::from),
        };
        assert_eq!(
            l.elems,
            [
                e("fwd_in", "\"br0\"", Some("my-net.1")),
                e("nat4", "10.2.0.0/24", Some("my-net.1")),
                e("bridges", "\"br0\"", Some("my-net.1")),
                e("bridges", "\"br9\"", None),
                e("ports4", "tcp . 8080", Some("snv1")),
                e("ports4h", "10.9.9.9 . udp . 53", Some("snv1")),
            ]
        );
    }

    #[test]
    fn rejects_garbage() {
        assert!(parse("nope").is_err());
        assert!(parse("{}").is_err());
        assert_eq!(parse(r#"{"nftables": []}"#).unwrap(), Listing::default());
    }
}
