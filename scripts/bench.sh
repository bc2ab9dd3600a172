#!/usr/bin/env bash
# Runs the relay benchmark (benches/relay_bench.rs) from the checkout this script is in and
# writes its report into BENCHMARKS.md, between the `<!-- relay_bench:begin -->` and
# `<!-- relay_bench:end -->` markers (the hand-written sections stay as they are).
#
#   bash scripts/bench.sh                         # full run, about 20 minutes on 2 cores
#   bash scripts/bench.sh --quick                 # fewer repetitions
#   bash scripts/bench.sh --only stock,ours --json target/relay_bench.json
#
# Extra arguments pass through to relay_bench (see `benches/relay_bench.rs`). The full
# per-sample data is also kept in target/relay_bench.json unless `--json` is given. The run is
# meant for a quiet machine: other load makes the absolute figures noisy (the paired ratios
# less so), and the report's stamp records the load average before and after.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

json=(--json target/relay_bench.json)
for arg in "$@"; do
    if [[ "$arg" == "--json" ]]; then
        json=()
    fi
done

# The helper processes (relays, clients) in release, then the benchmark itself (the bench
# profile), which then needs not build them again.
cargo build --release --example bench_relay --example bench_client
cargo bench --bench relay_bench -- --no-build --write-benchmarks BENCHMARKS.md "${json[@]}" "$@"
