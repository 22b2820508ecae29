#!/usr/bin/env bash
# Long crash-safety run: attach/detach operations through the REST API, the CNI plugin and the
# Docker plugin socket while shimnetd is SIGKILLed and restarted at random points.
# Usage: scripts/chaos.sh [OPERATIONS] [SEED]   (default 1000 operations, random seed). Run as root.
# Prints: chaos: operations=N kills=K retries=R addresses=A leaks=0 duplicates=0
set -euo pipefail
cd "$(dirname "$0")/.."
[[ $(id -u) == 0 ]] || { echo "chaos: run as root (network namespaces)" >&2; exit 1; }
export SHIMNET_CHAOS_OPS=${1:-1000}
[[ -n ${2:-} ]] && export SHIMNET_CHAOS_SEED=$2
cargo test --locked --test chaos -- --nocapture 2>&1 | grep -E '^chaos:|test result|panicked|problems|FAILED' 
exit "${PIPESTATUS[0]}"
