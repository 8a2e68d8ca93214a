#!/usr/bin/env bash
# A CPU profile of the server under load: perf samples the server (one shard, pinned to
# $SERVER_CPU) during the measured window while the load generator (on $LOADGEN_CPU) runs
# SCENARIO; prints where the CPU goes by category (perf/profile-table.py) and, when inferno is
# installed (`cargo install inferno`), draws a flame graph into perf/results/.
#   SCENARIO=party (default): party --rooms ${ROOMS:-1000} --players 10, 25 s warm-up, 20 s measured
#   SCENARIO=relay: relay --rooms 100 --members 11 --rate ${RATE:-100}, 2 s warm-up, 10 s measured
source "$(dirname "$0")/lib.sh"
cd "$ROOT"
command -v perf >/dev/null || { echo "perf not found: apt-get install linux-perf" >&2; exit 2; }
cargo build --release -q -p partyflow -p partyflow-loadgen
SCENARIO=${SCENARIO:-party}
case $SCENARIO in
    party) warmup=25; duration=20; connections=$(( ${ROOMS:-1000} * 11 )); run=(party --rooms "${ROOMS:-1000}" --players 10) ;;
    relay) warmup=2; duration=10; connections=1100; run=(relay --rooms 100 --members 11 --rate "${RATE:-100}") ;;
    *) echo "SCENARIO is party or relay" >&2; exit 2 ;;
esac
port=$(free_port)
start_server partyflow "$port" --shards 1
stamp=$(date -u +%Y%m%dT%H%M%SZ)
data="$RESULTS/perf-$SCENARIO-$stamp.data"
loadgen --url "http://127.0.0.1:$port" --server-pid "$SERVER_PID" --warmup "${warmup}s" --duration "${duration}s" \
    --json "$RESULTS/profile-$SCENARIO-$stamp.json" "${run[@]}" &
LOADGEN_PID=$!
# Sample the measured window only: set-up (connections at the load generator's default 1,000/s,
# plus a margin) and warm-up first.
sleep "$(( connections / 1000 + 3 + warmup ))"
perf record -e cpu-clock -F 999 -g -p "$SERVER_PID" -o "$data" -- sleep "$((duration - 4))" 2>/dev/null
wait "$LOADGEN_PID"
stop_server
echo "machine: $(machine); $(date -u +%F)"
python3 perf/profile-table.py "$data"
echo "samples: $data, load generator's report: $RESULTS/profile-$SCENARIO-$stamp.json"
if command -v inferno-flamegraph >/dev/null; then
    perf script -i "$data" 2>/dev/null | inferno-collapse-perf | inferno-flamegraph > "$RESULTS/flamegraph-$SCENARIO-$stamp.svg"
    echo "flame graph: $RESULTS/flamegraph-$SCENARIO-$stamp.svg"
fi
