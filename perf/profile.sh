#!/usr/bin/env bash
# A CPU profile of the server under relay load, as a flame graph: perf samples the server
# (pinned to $SERVER_CPU) while the load generator runs the relay scenario; inferno (installed
# from crates.io on first use) draws perf/results/flamegraph-*.svg.
#   RATE=100 DURATION=10s
source "$(dirname "$0")/lib.sh"
cd "$ROOT"
command -v perf >/dev/null || { echo "perf not found: apt-get install linux-perf" >&2; exit 2; }
command -v inferno-flamegraph >/dev/null || cargo install -q inferno
cargo build --release -q -p partyflow -p partyflow-loadgen
port=$(free_port)
start_server partyflow "$port" --shards 1
stamp=$(date -u +%Y%m%dT%H%M%SZ)
perf record -e cpu-clock -F 999 -g -p "$SERVER_PID" -o "$RESULTS/perf-$stamp.data" -- sleep "$(( ${DURATION_S:-10} + 3 ))" &
PERF_PID=$!
loadgen --url "http://127.0.0.1:$port" --warmup 2s --duration "${DURATION_S:-10}s" relay --rooms 100 --members 11 --rate "${RATE:-100}"
wait "$PERF_PID" || true
stop_server
perf script -i "$RESULTS/perf-$stamp.data" | inferno-collapse-perf | inferno-flamegraph > "$RESULTS/flamegraph-$stamp.svg"
echo "flame graph: $RESULTS/flamegraph-$stamp.svg"
