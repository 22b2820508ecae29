//! The decoding rules, each against what Go's `encoding/json` does with the same bytes.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{json, Value};

use crate::{from_slice, from_value, ErrorKind};

#[derive(Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct Conf {
    name: String,
    host_port: u16,
    #[serde(rename = "hostIP")]
    host_ip: String,
    ranges: Vec<Vec<Range>>,
    ports: Vec<Port>,
    labels: BTreeMap<String, String>,
    extra: Option<Value>,
    inner: Option<Box<Conf>>,
}

#[derive(Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct Range {
    subnet: String,
    range_start: Option<String>,
}

#[derive(Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
struct Port {
    host_port: u16,
    container_port: u16,
    #[serde(default)]
    protocol: Option<String>,
}

fn conf(json: &str) -> Conf {
    from_slice(json.as_bytes()).unwrap_or_else(|e| panic!("{json}: {e}"))
}

#[test]
fn keys_match_case_insensitively() {
    let c = conf(r#"{"NAME":"n","HostPort":80,"HostIP":"1.2.3.4"}"#);
    assert_eq!(
        (c.name.as_str(), c.host_port, c.host_ip.as_str()),
        ("n", 80, "1.2.3.4")
    );
    // An underscore is not a case difference.
    assert_eq!(conf(r#"{"host_port":80}"#).host_port, 0);
}

#[test]
fn the_last_duplicate_wins_whatever_its_case() {
    assert_eq!(conf(r#"{"hostPort":1,"HostPort":2}"#).host_port, 2);
    assert_eq!(conf(r#"{"HostPort":2,"hostPort":1}"#).host_port, 1);
    assert_eq!(
        conf(r#"{"hostPort":1,"HOSTPORT":3,"hostPort":4}"#).host_port,
        4
    );
    // An earlier duplicate of the wrong type is discarded like any overwritten value (Go sets 5
    // too, but also reports the earlier type error).
    assert_eq!(conf(r#"{"hostPort":"x","hostport":5}"#).host_port, 5);
}

#[test]
fn exact_name_first() {
    #[derive(Debug, Deserialize)]
    struct Two {
        #[serde(rename = "k")]
        lower: Option<u8>,
        #[serde(rename = "K")]
        upper: Option<u8>,
    }
    // Checked against Go 1.19: `{"K":1,"k":2}` gives k=2, K=1; a KELVIN SIGN key sets `k`, the
    // first field in declaration order that folds equal.
    let t: Two = from_slice(br#"{"K":1,"k":2}"#).unwrap();
    assert_eq!((t.lower, t.upper), (Some(2), Some(1)));
    let t: Two = from_slice(br#"{"\u212a":1}"#).unwrap();
    assert_eq!((t.lower, t.upper), (Some(1), None));
}

#[test]
fn nested_structs_and_arrays_fold_too_but_maps_do_not() {
    let c = conf(
        r#"{"Ranges":[[{"Subnet":"10.0.0.0/24","RangeStart":"10.0.0.5"}]],
            "Ports":[{"host_port":1,"container_port":2}],
            "Labels":{"K8S_POD_NAME":"p","k8s_pod_name":"q"},
            "Extra":{"KeepMe":1},
            "Inner":{"Name":"deep","Inner":{"HOSTPORT":9}}}"#,
    );
    assert_eq!(
        c.ranges,
        vec![vec![Range {
            subnet: "10.0.0.0/24".into(),
            range_start: Some("10.0.0.5".into())
        }]]
    );
    assert_eq!(c.ports[0].container_port, 2);
    assert_eq!(c.labels.len(), 2, "map keys are exact");
    assert_eq!(
        c.extra,
        Some(json!({"KeepMe": 1})),
        "free-form values are untouched"
    );
    let inner = c.inner.unwrap();
    assert_eq!(inner.name, "deep");
    assert_eq!(inner.inner.unwrap().host_port, 9);
}

#[test]
fn unicode_folds_as_go_does() {
    // "ho\u017Ftport": LONG S matches s; "\u212Aey" would match "key".
    assert_eq!(conf(r#"{"ho\u017ftPort":7}"#).host_port, 7);
    assert_eq!(conf("{\"NAM\u{0112}\":\"x\"}").name, "", "Ē is not E");
}

#[test]
fn null_is_absent() {
    let c = conf(r#"{"name":null,"ranges":null,"ports":null,"labels":null,"extra":null}"#);
    assert_eq!(c, Conf::default());
    // A later null clears, as it does in Go for the pointer, slice and map fields Go programs
    // write null from (Go leaves a plain int unchanged).
    assert_eq!(conf(r#"{"hostPort":5,"HostPort":null}"#).host_port, 0);
}

#[test]
fn missing_required_values_are_missing_not_zero() {
    let e = from_slice::<Conf>(
        br#"{"ports":[{"host_port":1,"container_port":2},{"container_port":3}]}"#,
    )
    .unwrap_err();
    assert_eq!(e.path(), "ports[1].host_port");
    assert_eq!(e.kind(), &ErrorKind::Missing);
    assert_eq!(e.to_string(), "ports[1].host_port: missing");
    let e =
        from_slice::<Conf>(br#"{"ports":[{"host_port":null,"container_port":2}]}"#).unwrap_err();
    assert_eq!(e.to_string(), "ports[0].host_port: missing");
    let e = from_slice::<Conf>(br#"{"ports":[null]}"#).unwrap_err();
    assert_eq!(e.to_string(), "ports[0].host_port: missing");
}

#[test]
fn type_errors_and_unknown_fields_name_the_path() {
    let e =
        from_slice::<Conf>(br#"{"Ports":[{"host_port":70000,"container_port":2}]}"#).unwrap_err();
    assert_eq!(e.path(), "ports[0].host_port");
    assert!(
        matches!(e.kind(), ErrorKind::Invalid(m) if m.contains("70000")),
        "{e}"
    );
    let e = from_slice::<Conf>(br#"{"ports":[{"host_port":1,"container_port":2,"colour":1}]}"#)
        .unwrap_err();
    assert_eq!(
        (e.path(), e.kind()),
        ("ports[0].colour", &ErrorKind::UnknownField)
    );
    let e = from_slice::<Conf>(br#"{"ranges":[[{"subnet":5}]]}"#).unwrap_err();
    assert_eq!(e.path(), "ranges[0][0].subnet");
    let e = from_slice::<Conf>(b"[1]").unwrap_err();
    assert_eq!(e.path(), "");
    assert!(!e.is_syntax());
    let e = from_slice::<Conf>(br#"{"name":"a"} x"#).unwrap_err();
    assert!(e.is_syntax(), "{e}");
    assert!(from_slice::<Conf>(br#"{"name":"#).unwrap_err().is_syntax());
}

#[test]
fn unknown_keys_are_ignored_unless_refused() {
    assert_eq!(conf(r#"{"colour":1,"name":"n"}"#).name, "n");
    let e = from_slice::<Port>(br#"{"hostport":1,"containerPort":2}"#).unwrap_err();
    assert_eq!(
        e.kind(),
        &ErrorKind::UnknownField,
        "host_port has an underscore: {e}"
    );
    let p: Port = from_slice(br#"{"HOST_PORT":1,"Container_Port":2,"PROTOCOL":"tcp"}"#).unwrap();
    assert_eq!((p.host_port, p.protocol.as_deref()), (1, Some("tcp")));
}

#[test]
fn enums_newtypes_and_values() {
    #[derive(Debug, PartialEq, Deserialize)]
    #[serde(rename_all = "lowercase")]
    enum Proto {
        Tcp,
        Udp,
    }
    #[derive(Debug, PartialEq, Deserialize)]
    struct Name(String);
    #[derive(Debug, PartialEq, Deserialize)]
    struct S {
        proto: Proto,
        name: Name,
        any: Value,
    }
    let s: S = from_slice(br#"{"PROTO":"udp","Name":"x","ANY":[1,{"A":null}]}"#).unwrap();
    assert_eq!(s.proto, Proto::Udp);
    assert_eq!(s.name, Name("x".into()));
    assert_eq!(s.any, json!([1, {"A": null}]));
    assert!(
        from_slice::<S>(br#"{"proto":"TCP","name":"x","any":1}"#).is_err(),
        "values are exact"
    );
    let _ = Proto::Tcp;
}

#[test]
fn from_value_folds_too() {
    let c: Conf = from_value(&json!({"HostPort": 3, "Ranges": [[{"Subnet": "s"}]]})).unwrap();
    assert_eq!((c.host_port, c.ranges[0][0].subnet.as_str()), (3, "s"));
}
