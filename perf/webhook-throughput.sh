#!/usr/bin/env bash
# Webhook events per second to a local receiver, memory and Redis modes: the party run's set-up
# (ROOMS rooms x 11 joined and started, a few seconds of play) emits its events while the
# receiver (perf/webhook-receiver.py --gate, on $LOADGEN_CPU) holds the first requests
# unanswered, so a backlog builds without failures or retries; then the gate opens and the
# backlog drains as fast as the server delivers it. Prints events, seconds from the first answer
# to the last, events/s, and the server's CPU over the drain. Server on $SERVER_CPU, one shard.
#   ROOMS=1500
source "$(dirname "$0")/lib.sh"
ROOMS="${ROOMS:-1500}"
cd "$ROOT"
cargo build --release -q -p partyflow -p partyflow-loadgen
stamp=$(date -u +%Y%m%dT%H%M%SZ)
metric() { curl -s "http://127.0.0.1:$1/metrics" | awk -v m="$2" '$1 == m { print $2 }'; }
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
echo "### webhook throughput $stamp ($(machine))"
echo
echo "| mode | events | requests | seconds (first to last request) | events/s | server CPU-s during the drain |"
echo "|---|---|---|---|---|---|"
for mode in memory redis; do
    port=$(free_port); rport=$(free_port)
    extra=()
    if [ "$mode" = redis ]; then
        redis_port=$(free_port)
        redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no >/dev/null &
        redis_pid=$!
        wait_port "$redis_port"
        extra=(--redis "redis://127.0.0.1:$redis_port/0" --secret perf-webhook-throughput)
    fi
    taskset -c "$LOADGEN_CPU" python3 perf/webhook-receiver.py "$rport" --gate > "$RESULTS/webhook-throughput-$stamp-$mode.json" &
    receiver=$!
    wait_port "$rport"
    start_server partyflow "$port" --shards 1 --webhook-url "http://127.0.0.1:$rport/hooks" \
        --webhook-secret perf-webhook-secret-0123 --webhook-timeout 5m --api-rate-per-ip 100000 "${extra[@]}"
    loadgen --url "http://127.0.0.1:$port" --warmup 3s --duration 3s party --rooms "$ROOMS" --players 10 >/dev/null || true
    emitted=$(metric "$port" partyflow_webhook_events_emitted_total)
    before=$(cpu_ticks "$SERVER_PID")
    kill -USR1 "$receiver"
    for _ in $(seq 600); do
        delivered=$(metric "$port" partyflow_webhook_events_delivered_total)
        [ "${delivered%.*}" -ge "${emitted%.*}" ] && break
        sleep 0.1
    done
    after=$(cpu_ticks "$SERVER_PID")
    kill -TERM "$receiver"; wait "$receiver" 2>/dev/null || true
    stop_server
    [ "$mode" = redis ] && { kill "$redis_pid"; wait "$redis_pid" 2>/dev/null || true; }
    python3 -c "
import json, sys
c = json.load(open(sys.argv[1]))
cpu = (int(sys.argv[3]) - int(sys.argv[2])) / 100
print(f\"| $mode | {c['events']} | {c['requests']} | {c['seconds']:.2f} | {c['events'] / max(c['seconds'], 1e-3):,.0f} | {cpu:.2f} |\")
" "$RESULTS/webhook-throughput-$stamp-$mode.json" "$before" "$after"
done
