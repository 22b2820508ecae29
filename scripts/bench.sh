#!/usr/bin/env bash
# The benchmark suite: shimnet's front doors and its peers (reference CNI bridge, netavark) in
# the same run, shimnetd's footprint, data-plane throughput; then `docker run` on a shimnet
# network versus docker's own bridge (needs dockerd; skipped with --short); then cross-node
# throughput per peering mode next to the underlay (benches/peering.rs, two nodes per mode); then
# etcd membership convergence at 10 and 50 nodes, etcd requests per node in the steady state and
# the static peer file's reload time (benches/membership.rs); then name resolution next to dnsmasq
# (tests/bench/dns.rs); last event-driven repair: latency per broken object kind with 1,000
# endpoints, the cost of 5,000 unrelated changes, idle CPU ticks over 60 s without and with peering
# and the time from a peer file edit to the route (tests/bench/repair.rs); then 4,000 endpoints on
# one /20 network across extension bridges (tests/bench/bignet.rs).
# Results: target/bench/results.txt, target/bench/latency.{csv,png}, target/bench/peering.txt,
# target/bench/membership.txt, target/bench/dns.txt, target/bench/repair.txt,
# target/bench/bignet.txt.
# Run as root.
# Usage: scripts/bench.sh [--short]
set -euo pipefail
cd "$(dirname "$0")/.."
[[ $(id -u) == 0 ]] || { echo "bench: run as root (the suite builds network namespaces)" >&2; exit 1; }
if [[ ${1:-} == --short ]]; then
  # Proves the suite runs end to end (20 containers, 2 s iperf3); figures are not meaningful.
  # The dev profile reuses the test build instead of an optimised one.
  SHIMNET_BENCH_SHORT=1 cargo bench --locked --profile dev --bench suite
  cargo bench --locked --profile dev --bench peering -- 2 2>&1 | tee target/bench/peering.txt
  # 10 nodes, 30 s of steady state, 4 nodes for the peer-file comparison.
  cargo bench --locked --profile dev --bench membership -- --steady 30 --file-nodes 4 10 2>&1 | tee target/bench/membership.txt
  SHIMNET_BENCH_SHORT=1 cargo bench --locked --profile dev --bench dns
  # 20 endpoints, 3 runs per kind, 500 flood changes, 5 s idle.
  SHIMNET_BENCH_SHORT=1 cargo bench --locked --profile dev --bench repair
  # 1,100 endpoints on one /20 network: the main bridge and two extensions (512-port bridges).
  SHIMNET_BENCH_SHORT=1 cargo bench --locked --profile dev --bench bignet
else
  cargo bench --locked --bench suite
  SHIMNET_BENCH_RUNS=${SHIMNET_BENCH_RUNS:-50} cargo test --locked --release --test docker -- \
    --ignored --nocapture bench_docker_run_timeline 2>&1 | tee target/bench/docker-run.txt
  cargo bench --locked --bench peering -- "${SHIMNET_BENCH_IPERF_SECS:-8}" 2>&1 | tee target/bench/peering.txt
  cargo bench --locked --bench membership -- 10 50 2>&1 | tee target/bench/membership.txt
  cargo bench --locked --bench dns
  cargo bench --locked --bench repair
  # 4,000 endpoints on one /20 network: growth of attach and detach past one bridge.
  cargo bench --locked --bench bignet
fi
