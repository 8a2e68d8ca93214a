#!/usr/bin/env bash
# What a WebSocket connection costs the server in memory, plain and with permessage-deflate
# (the client keeping its context or not): RSS of a fresh one-shard server before and after N
# connections to /echo each sent one 1 KiB message and read its echo (perf/compression-memory.py).
#   N=2000
source "$(dirname "$0")/lib.sh"
N="${N:-2000}"
cd "$ROOT"
cargo build --release -q -p partyflow
rss() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
echo "| client | connections | server RSS before (KiB) | after (KiB) | per connection |"
echo "|---|---|---|---|---|"
for mode in plain context nocontext; do
    port=$(free_port)
    start_server partyflow "$port" --shards 1
    sleep 0.5
    before=$(rss "$SERVER_PID")
    fifo=$(mktemp -u); mkfifo "$fifo"
    taskset -c "$LOADGEN_CPU" python3 perf/compression-memory.py "$port" "$N" "$mode" < "$fifo" > "$fifo.out" &
    client=$!
    exec 3>"$fifo"
    until grep -q ready "$fifo.out" 2>/dev/null; do
        kill -0 "$client" 2>/dev/null || { cat "$fifo.out"; echo "the client failed" >&2; exit 1; }
        sleep 0.2
    done
    sleep 0.5
    after=$(rss "$SERVER_PID")
    exec 3>&-
    wait "$client" || true
    rm -f "$fifo" "$fifo.out"
    stop_server
    echo "| $mode | $N | $before | $after | $(( (after - before) * 1024 / N )) B |"
done
