#!/usr/bin/env bash
# Runs test binaries many times to find flakes: `bash scripts/repeat.sh N binary...` runs each
# binary N times (`cargo nextest run --profile ci --retries 0 --test <binary>`, interop tests
# enabled as in scripts/test.sh) and prints the pass / fail count of each; the failing runs' output
# is kept in target/repeat/<binary>-<run>.log. Exit status 1 if any run failed.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -lt 2 ]; then
  echo "usage: bash scripts/repeat.sh N binary..." >&2
  exit 2
fi
runs=$1
shift
export MACULA_REQUIRE_INTEROP=1
export MACULA_INTEROP_RESULTS="$PWD/target/repeat/interop-results"
mkdir -p target/repeat
cargo build --locked --examples --quiet
failed=0
for binary in "$@"; do
  pass=0
  fail=0
  for run in $(seq 1 "$runs"); do
    log="target/repeat/$binary-$run.log"
    if cargo nextest run --locked --profile ci --retries 0 --test "$binary" >"$log" 2>&1; then
      pass=$((pass + 1))
      rm -f "$log"
    else
      fail=$((fail + 1))
      echo "$binary run $run failed: $log" >&2
    fi
  done
  echo "$binary: $pass passed, $fail failed of $runs runs"
  [ "$fail" = 0 ] || failed=1
done
exit "$failed"
