// Shared by the targets (included with `include!`): invariants of a network spec the planner
// accepted, whatever the input was.
fn check_spec(spec: &runtime_net::NetworkSpec) {
    assert!(
        spec.subnet.contains(spec.gateway),
        "gateway outside subnet: {spec:?}"
    );
    assert_ne!(
        spec.gateway,
        spec.subnet.network(),
        "gateway is the network address"
    );
    if let Some((a, b)) = spec.range4 {
        assert!(
            a <= b && spec.subnet.contains(a) && spec.subnet.contains(b),
            "range: {spec:?}"
        );
    }
    if let (Some(s6), Some(g6)) = (spec.subnet6, spec.gateway6) {
        assert!(s6.contains(g6), "gateway6 outside subnet6: {spec:?}");
    }
    assert!(spec.bridge.as_str().len() <= 15);
}
