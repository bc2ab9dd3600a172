#!/usr/bin/env bash
# Stress runs of the relay node with its defaults (release build), on loopback, bounded:
#
#   bash scripts/stress.sh flood [CONNECTIONS] [STREAMS]
#       CONNECTIONS fresh peers from one address (default 2000) connect to the relay and each
#       that gets through opens STREAMS silent hop streams (default 500); meanwhile a legitimate
#       peer from another address reserves. Prints the relay's memory (RSS) and open file
#       descriptors before, under and after the flood, and how many connections and streams got
#       through.
#   bash scripts/stress.sh soak [SECONDS] [COUNT]
#       Fresh peers (addresses from a pool of 50,000) connect, reserve and disconnect, 64 at a
#       time: a 60 s warm-up, then SECONDS (default 600) more, at most COUNT peers per phase.
#       Prints the relay's RSS and open fds at the cold start, after the warm-up and at the end
#       (peers gone), and whether the end is within 10 % of the warm-up's memory and of the
#       cold start's descriptors (a leak grows with the churn; a warmed-up allocator does not).
#
# Output: one JSON line per measurement, then a summary line.
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:-}
case "$mode" in
  flood | soak) ;;
  *)
    echo "usage: bash scripts/stress.sh flood [CONNECTIONS] [STREAMS] | soak [SECONDS] [COUNT]" >&2
    exit 2
    ;;
esac
cargo build --locked --release --quiet --example relay_node --example bench_client
bin=target/release/examples
work=$(mktemp -d)
relay_pid=
cleanup() {
  [ -n "$relay_pid" ] && kill "$relay_pid" 2>/dev/null || true
  [ -n "${client_pid:-}" ] && kill "$client_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

# The relay: defaults, loopback addresses announced (every peer here is on loopback).
"$bin/relay_node" --listen /ip4/127.0.0.1/tcp/0 --allow-private-addrs --no-registry --ephemeral-identity \
  >"$work/relay.out" 2>"$work/relay.log" &
relay_pid=$!
for _ in $(seq 1 100); do
  [ -s "$work/relay.out" ] && break
  sleep 0.1
done
relay_addr=$(head -n1 "$work/relay.out")
[ -n "$relay_addr" ] || { echo "the relay printed no address; log:" >&2; cat "$work/relay.log" >&2; exit 1; }

sample() { # label -> JSON line with the relay's RSS (KiB) and open fds
  local rss fds
  rss=$(awk '/^VmRSS/ {print $2}' "/proc/$relay_pid/status")
  fds=$(ls "/proc/$relay_pid/fd" | wc -l)
  echo "{\"at\":\"$1\",\"rss_kib\":$rss,\"fds\":$fds}"
}

# Bounded wait for a line matching $2 in file $1.
wait_line() {
  local file=$1 pattern=$2 secs=$3
  for _ in $(seq 1 $((secs * 10))); do
    grep -q "$pattern" "$file" 2>/dev/null && return 0
    sleep 0.1
  done
  echo "timed out after ${secs}s waiting for $pattern in $file" >&2
  return 1
}

sleep 1
before=$(sample start)
echo "$before"
case "$mode" in
  flood)
    connections=${2:-2000}
    streams=${3:-500}
    mkfifo "$work/stdin"
    # Holds its connections and streams until its stdin closes.
    "$bin/bench_client" --relay "$relay_addr" --ip-offset 7 --setup-concurrency 64 \
      flood --connections "$connections" --streams "$streams" <"$work/stdin" >"$work/flood.out" &
    client_pid=$!
    exec 3>"$work/stdin"
    wait_line "$work/flood.out" flooded 600
    cat "$work/flood.out"
    sleep 2
    under=$(sample under-flood)
    echo "$under"
    # A legitimate peer from another address, during the flood.
    legit=$("$bin/bench_client" --relay "$relay_addr" --ip-offset 9000 reserve --count 1 </dev/null | head -n1)
    echo "$legit"
    exec 3>&-
    wait "$client_pid" || true
    client_pid=
    sleep 3
    after=$(sample after)
    echo "$after"
    echo "{\"summary\":\"flood\",\"start\":$before,\"under\":$under,\"after\":$after,\"legit\":$legit}"
    ;;
  soak)
    secs=${2:-600}
    count=${3:-100000000}
    churn() { # seconds, pool offset -> churns for that long, prints the client's summary
      "$bin/bench_client" --relay "$relay_addr" --ip-offset "$2" --setup-concurrency 64 \
        churn --count "$count" --deadline-secs "$1" </dev/null >"$work/churn.out" &
      client_pid=$!
      # Bounded: the client stops starting new reservations at its deadline.
      timeout $(($1 + 120)) tail --pid="$client_pid" -f /dev/null || true
      client_pid=
      cat "$work/churn.out"
    }
    # Warm-up: the allocator and the tables reach their working size.
    churn 60 100
    sleep 10
    warm=$(sample warm)
    echo "$warm"
    churn "$secs" 20000
    sleep 10
    after=$(sample after)
    echo "$after"
    python3 - "$before" "$warm" "$after" <<'EOF'
import json, sys
before, warm, after = (json.loads(a) for a in sys.argv[1:4])
# Memory is compared with the warmed-up relay (a cold process has not sized its allocator yet);
# descriptors with the cold start.
ok = after["rss_kib"] <= warm["rss_kib"] * 1.10 and after["fds"] <= before["fds"] * 1.10
print(json.dumps({"summary": "soak", "start": before, "warm": warm, "after": after,
                  "rss_after_over_warm": round(after["rss_kib"] / warm["rss_kib"], 3),
                  "fds_after_over_start": round(after["fds"] / before["fds"], 3),
                  "within_10_percent": ok}))
EOF
    ;;
esac
