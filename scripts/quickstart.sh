#!/usr/bin/env bash
# Quickstart: install what shimnet needs, build it, start shimnetd on its embedded default
# configuration (bridge shimnet0, 10.87.0.0/16) and run `shimnetctl check` against it.
# shimnetd keeps running in the background; stop it with: kill "$(cat /run/shimnet/shimnetd.pid)"
# Set QUICKSTART_NETNS=<name> to run the daemon inside a fresh network namespace instead of the host's.
set -euo pipefail
cd "$(dirname "$0")/.."
[[ $(id -u) == 0 ]] || { echo "quickstart: run as root (shimnetd manages bridges and firewall rules)" >&2; exit 1; }
scripts/deps.sh run
cargo build --release --locked --bin shimnetd --bin shimnetctl
install -m 0755 target/release/shimnetd target/release/shimnetctl /usr/local/bin/
mkdir -p /run/shimnet /var/log/shimnet
prefix=()
if [[ -n ${QUICKSTART_NETNS:-} ]]; then
  ip netns add "$QUICKSTART_NETNS" 2>/dev/null || true
  ip -n "$QUICKSTART_NETNS" link set lo up
  prefix=(ip netns exec "$QUICKSTART_NETNS")
fi
if [[ -f /run/shimnet/shimnetd.pid ]] && kill -0 "$(cat /run/shimnet/shimnetd.pid)" 2>/dev/null; then
  echo "quickstart: shimnetd already running (pid $(cat /run/shimnet/shimnetd.pid))"
else
  "${prefix[@]}" /usr/local/bin/shimnetd >>/var/log/shimnet/shimnetd.log 2>&1 &
  echo $! > /run/shimnet/shimnetd.pid
  echo "quickstart: started shimnetd (pid $!, log /var/log/shimnet/shimnetd.log)"
fi
for _ in $(seq 1 100); do
  shimnetctl status >/dev/null 2>&1 && break
  sleep 0.1
done
shimnetctl status
shimnetctl network ls
shimnetctl check
