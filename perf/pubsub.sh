#!/usr/bin/env bash
# /pubsub against /relay at the same load, alternating on one build: 100 rooms x 11 members,
# one publisher per room at each of RATES msg/s, ~128 B messages; the server on $SERVER_CPU
# with one shard, the load generator on $LOADGEN_CPU. Then /pubsub across two instances
# through Redis (members alternating between them, two publishers per room, one per
# instance) against the same load on one instance. Results: perf/results/pubsub-*.json and a
# markdown table on stdout.
#   RUNS=2 RATES="57 300" TWO_RATE=57 DURATION=10s
source "$(dirname "$0")/lib.sh"
RUNS="${RUNS:-2}"
RATES="${RATES:-57 300}"
TWO_RATE="${TWO_RATE:-57}"
DURATION="${DURATION:-10s}"
cd "$ROOT"
cargo build --release -q -p partyflow -p partyflow-loadgen
stamp=$(date -u +%Y%m%dT%H%M%SZ)
# The relay sends 128 B binary messages; /pubsub's data padding makes its text frames as long.
load() {
    case $1 in
        relay) echo "relay --rooms 100 --members $3 --rate $2 --payload 128 --publishers $4" ;;
        pubsub) echo "pubsub --rooms 100 --members $3 --rate $2 --payload 64 --publishers $4" ;;
    esac
}
for run in $(seq "$RUNS"); do
    for rate in $RATES; do
        for endpoint in relay pubsub; do
            port=$(free_port)
            start_server partyflow "$port" --shards 1
            # shellcheck disable=SC2046
            loadgen --url "http://127.0.0.1:$port" --server-pid "$SERVER_PID" --warmup 2s --duration "$DURATION" \
                --json "$RESULTS/pubsub-$stamp-${endpoint}_$run-$rate.json" $(load "$endpoint" "$rate" 11 1) >/dev/null || true
            stop_server
        done
    done
done
if command -v redis-server >/dev/null; then
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
    # shellcheck disable=SC2046
    loadgen --url "http://127.0.0.1:$a" --url "http://127.0.0.1:$b" --warmup 3s --duration "$DURATION" \
        --json "$RESULTS/pubsub-$stamp-two_1-$TWO_RATE.json" $(load pubsub "$TWO_RATE" 10 2) >/dev/null || true
    SERVER_PID=$a_pid stop_server
    SERVER_PID=$b_pid stop_server
    kill "$redis_pid"; wait "$redis_pid" 2>/dev/null || true
    port=$(free_port)
    start_server partyflow "$port" --shards 1
    # shellcheck disable=SC2046
    loadgen --url "http://127.0.0.1:$port" --server-pid "$SERVER_PID" --warmup 2s --duration "$DURATION" \
        --json "$RESULTS/pubsub-$stamp-one_1-$TWO_RATE.json" $(load pubsub "$TWO_RATE" 10 2) >/dev/null || true
    stop_server
else
    echo "redis-server is not installed: the two-instance run is skipped" >&2
fi
python3 perf/summarize.py pubsub "$RESULTS" "$stamp" "$(machine)"
