#!/usr/bin/env bash
# Where the server's memory goes: heaptrack records every allocation of the one-shard server
# (pinned to $SERVER_CPU) while the load generator (on $LOADGEN_CPU) runs SCENARIO; prints the
# allocation sites alive at the heap's peak, grouped by the first frame of our code or of the
# crate that allocated (perf/heap-table.py), per open connection. Needs heaptrack
# (apt-get install heaptrack); the recording is perf/results/heap-*.zst (ignored by git).
#   SCENARIO=party (default): party --rooms ${ROOMS:-1000} --players 10, 25 s warm-up, 10 s measured
#   SCENARIO=relay: relay --rooms ${ROOMS:-1000} --members 11 --rate 2 (11,000 connections), 5 s + 5 s
source "$(dirname "$0")/lib.sh"
cd "$ROOT"
command -v heaptrack >/dev/null || { echo "heaptrack not found: apt-get install heaptrack" >&2; exit 2; }
cargo build --release -q -p partyflow -p partyflow-loadgen
ulimit -n "$(ulimit -Hn)"
SCENARIO=${SCENARIO:-party}
ROOMS=${ROOMS:-1000}
case $SCENARIO in
    party) timing=(--warmup 25s --duration 10s); run=(party --rooms "$ROOMS" --players 10) ;;
    relay) timing=(--warmup 5s --duration 5s --connect-rate 5000); run=(relay --rooms "$ROOMS" --members 11 --rate 2) ;;
    *) echo "SCENARIO is party or relay" >&2; exit 2 ;;
esac
port=$(free_port)
stamp=$(date -u +%Y%m%dT%H%M%SZ)
recording="$RESULTS/heap-$SCENARIO-$stamp"
taskset -c "$SERVER_CPU" heaptrack -o "$recording" "$BIN/partyflow" --listen "127.0.0.1:$port" --log error --shards 1 >/dev/null 2>&1 &
HEAPTRACK_PID=$!
wait_port "$port"
# The server itself (heaptrack's wrapper names it in its own command line too).
server_pid=$(pgrep -f -- "^$BIN/partyflow --listen 127.0.0.1:$port")
loadgen --url "http://127.0.0.1:$port" "${timing[@]}" --json "$RESULTS/heap-$SCENARIO-$stamp.json" "${run[@]}" >/dev/null || true
kill "$server_pid"
wait "$HEAPTRACK_PID" || true
heaptrack_print -f "$recording.zst" --print-peaks 1 --print-allocators 0 --print-temporary 0 --print-leaks 0 --peak-limit 20 2>/dev/null \
    | python3 perf/heap-table.py "$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['connections'])" "$RESULTS/heap-$SCENARIO-$stamp.json")"
