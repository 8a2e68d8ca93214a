#!/usr/bin/env bash
# Relay rooms across two instances through Redis pub/sub, against the same load on one instance
# without Redis. Both instances (1 shard each) on $SERVER_CPU, redis-server and the load
# generator on $LOADGEN_CPU. 100 rooms x 10 members, members alternating between the instances,
# two publishers per room (one per instance), 128 B: deliveries/s = 2,000 x RATE. Per rate:
# latency, loss, Redis commands/s and Redis CPU. Results: perf/results/cross-instance-*.json and
# a markdown table on stdout. Losses at the instances (a publish or receive queue full) are read
# from their /metrics.
#   RATES="10 50 100 150 200"  messages/s per publisher
#   DURATION=10s THREADS=1 (load generator client threads)
source "$(dirname "$0")/lib.sh"
RATES="${RATES:-10 50 100 150 200}"
DURATION="${DURATION:-10s}"
cd "$ROOT"
cargo build --release -q -p partyflow -p partyflow-loadgen
command -v redis-server >/dev/null || { echo "redis-server is not installed" >&2; exit 69; }
stamp=$(date -u +%Y%m%dT%H%M%SZ)
relay_args() { echo "--threads ${THREADS:-1} --warmup 3s --duration $DURATION relay --rooms 100 --members 10 --publishers 2 --rate $1 --payload 128"; }
# redis_stat PORT PID: commands processed so far and the CPU seconds of redis-server.
redis_stat() {
    local cmds ticks
    cmds=$(redis-cli -p "$1" info stats | sed -n 's/^total_commands_processed:\([0-9]*\).*/\1/p')
    ticks=$(awk '{print $14 + $15}' "/proc/$2/stat")
    echo "$cmds $ticks"
}
# relay_dropped PORT: relay messages an instance dropped (publish or receive queue full).
relay_dropped() {
    curl -s "http://127.0.0.1:$1/metrics" | awk '/^partyflow_relay_(publish|received)_dropped_total/ { n += $NF } END { print n + 0 }'
}
for rate in $RATES; do
    rport=$(free_port)
    taskset -c "$LOADGEN_CPU" redis-server --port "$rport" --bind 127.0.0.1 --save "" --appendonly no --loglevel warning &
    redis_pid=$!
    wait_port "$rport"
    a=$(free_port)
    start_server partyflow "$a" --shards 1 --secret s --redis "redis://127.0.0.1:$rport/0" --instance-id a
    a_pid=$SERVER_PID
    b=$(free_port)
    start_server partyflow "$b" --shards 1 --secret s --redis "redis://127.0.0.1:$rport/0" --instance-id b
    b_pid=$SERVER_PID
    read -r cmds0 ticks0 < <(redis_stat "$rport" "$redis_pid")
    start=$(date +%s.%N)
    # shellcheck disable=SC2046
    loadgen --url "http://127.0.0.1:$a" --url "http://127.0.0.1:$b" \
        --json "$RESULTS/cross-instance-$stamp-two-$rate.json" $(relay_args "$rate") >/dev/null || true
    read -r cmds1 ticks1 < <(redis_stat "$rport" "$redis_pid")
    dropped=$(( $(relay_dropped "$a") + $(relay_dropped "$b") ))
    python3 - "$RESULTS/cross-instance-$stamp-two-$rate.json" "$start" "$cmds0" "$cmds1" "$ticks0" "$ticks1" "$(getconf CLK_TCK)" "$dropped" <<'EOF'
import json, sys, time
path, start, c0, c1, t0, t1, hz, dropped = sys.argv[1:]
wall = time.time() - float(start)
r = json.load(open(path))
r["redis"] = {"commandsPerSec": (int(c1) - int(c0)) / wall, "cpuShare": (int(t1) - int(t0)) / int(hz) / wall}
r["relayDroppedAtInstances"] = int(dropped)
json.dump(r, open(path, "w"))
EOF
    SERVER_PID=$a_pid stop_server
    SERVER_PID=$b_pid stop_server
    kill "$redis_pid"; wait "$redis_pid" 2>/dev/null || true
    one=$(free_port)
    start_server partyflow "$one" --shards 1
    # shellcheck disable=SC2046
    loadgen --url "http://127.0.0.1:$one" --server-pid "$SERVER_PID" \
        --json "$RESULTS/cross-instance-$stamp-one-$rate.json" $(relay_args "$rate") >/dev/null || true
    stop_server
done
python3 perf/summarize.py cross-instance "$RESULTS" "$stamp" "$(machine)"
