#!/usr/bin/env bash
# Installs what the tests need, then runs the whole suite: formatting, lints, unit tests and the
# end-to-end tests against the real kernel (network namespaces, veth, bridges, nftables/iptables).
# Run as root. `.ci/run` runs exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."
[[ $(id -u) == 0 ]] || { echo "test: run as root (the end-to-end tests build network namespaces)" >&2; exit 1; }
scripts/deps.sh test
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked -- --show-output 2>&1 | tee target/test.log
# The engine's decisions (attach, detach, rollback, reconcile, repair) run on in-memory fakes
# without root or kernel access: build as root, run the same test binary as nobody.
scripts/unprivileged.sh 2>&1 | tee -a target/test.log
# A short fuzz pass over every target (the long one: scripts/fuzz.sh 300; the long chaos run:
# scripts/chaos.sh; the short chaos run is part of cargo test).
scripts/fuzz.sh 10
# The benchmark suite, short: proves it runs end to end (timings are not checked).
scripts/bench.sh --short 2>&1 | tee target/bench-short.log
# Loud summary of skips: a skip is never a pass.
if grep -q "SKIPPED" target/test.log target/bench-short.log; then
  echo "=== tests that SKIPPED part of their checks (missing kernel features) ==="
  grep -h "SKIPPED" target/test.log target/bench-short.log | sort | uniq -c
fi
