#!/usr/bin/env bash
# Runs the engine's unit tests (module filters below) as an unprivileged user (uid/gid 65534, no
# groups, no capabilities): they use the in-memory kernel and firewall of runtime-net's fakes and a
# store in a temporary directory, so they must pass with no root and no kernel access. Fails if
# they fail, or if fewer tests ran than expected (a filter that matches nothing is no test).
# Run as root (it builds first). Usage: scripts/unprivileged.sh [FILTER...]
set -euo pipefail
cd "$(dirname "$0")/.."
filters=("$@")
((${#filters[@]})) || filters=(engine:: plan:: store::legacy)
bin=$(cargo test -p runtime-net --lib --locked --no-run --message-format=json 2>/dev/null |
  grep -o '"executable":"[^"]*"' | cut -d'"' -f4 | grep -v '^$' | tail -n1)
[[ -x $bin ]] || { echo "unprivileged: no test binary found" >&2; exit 1; }
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
chmod 0777 "$scratch"
log="$scratch/out"
set +e
(cd / && TMPDIR="$scratch" setpriv --reuid=65534 --regid=65534 --clear-groups --inh-caps=-all \
  "$bin" "${filters[@]}") 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
set -e
passed=$(grep -o 'test result: ok\. [0-9]* passed' "$log" | grep -o '[0-9]*' | head -n1)
if ((rc != 0)); then
  echo "unprivileged: the engine's unit tests failed as uid 65534" >&2
  exit 1
fi
if ((${passed:-0} < 30)); then
  echo "unprivileged: only ${passed:-0} tests ran as uid 65534 (filters: ${filters[*]})" >&2
  exit 1
fi
echo "unprivileged: ${passed} engine unit tests passed as uid 65534 (no root, no kernel)"
