#!/usr/bin/env bash
# Builds the cargo-fuzz targets (fuzz/) and runs each for a set time, seeded from fuzz/seeds/.
# Usage: scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]   (default 60 s, every target)
# Prints one line per target: executions, corpus size and findings (crash/timeout/oom files in
# fuzz/artifacts/TARGET/). Exits non-zero if any target found something.
# cargo-fuzz needs nightly features: RUSTC_BOOTSTRAP=1 lets the stable toolchain provide them.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-60}
shift || true
command -v cargo-fuzz >/dev/null || cargo install --locked cargo-fuzz
export RUSTC_BOOTSTRAP=1
cd fuzz
targets=("$@")
((${#targets[@]})) || mapfile -t targets < <(cargo fuzz list)
cargo fuzz build -O -s none 2>&1 | tail -n 3 || { echo "fuzz: build failed" >&2; exit 1; }
failed=0
summary=()
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t" "artifacts/$t"
  cp -n seeds/"$t"/* "corpus/$t/" 2>/dev/null || true
  log=$(mktemp)
  set +e
  cargo fuzz run -O -s none "$t" "corpus/$t" -- -max_total_time="$secs" -print_final_stats=1 \
    -timeout=10 -rss_limit_mb=2048 -artifact_prefix="artifacts/$t/" >"$log" 2>&1
  rc=$?
  set -e
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -n1)
  findings=$(find "artifacts/$t" -type f \( -name 'crash-*' -o -name 'timeout-*' -o -name 'oom-*' -o -name 'leak-*' \) | wc -l)
  corpus=$(find "corpus/$t" -type f | wc -l)
  line="fuzz: $t: ${secs}s executions=${execs:-0} corpus=$corpus findings=$findings"
  echo "$line"
  summary+=("$line")
  if ((rc != 0 || findings != 0)); then
    failed=1
    grep -E 'panicked|ERROR|SUMMARY' "$log" | head -n 20 || true
    echo "fuzz: $t: see fuzz/artifacts/$t/ (reproduce: RUSTC_BOOTSTRAP=1 cargo fuzz run -O -s none $t FILE)"
  fi
  rm -f "$log"
done
printf '%s\n' "=== fuzz summary ===" "${summary[@]}"
exit "$failed"
