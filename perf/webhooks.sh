#!/usr/bin/env bash
# The party run (1,000 rooms x 11, 25 s warm-up, 20 s measured) with webhooks on (to a local
# receiver, perf/webhook-receiver.py, on $LOADGEN_CPU) and off, alternating, RUNS times: CPU per
# delivery and tail, and the webhook events per second the receiver got. The server on
# $SERVER_CPU with one shard. Prints the ab-style table; raw JSON in perf/results/webhooks-*.json.
#   RUNS=2
source "$(dirname "$0")/lib.sh"
RUNS="${RUNS:-2}"
cd "$ROOT"
cargo build --release -q -p partyflow -p partyflow-loadgen
stamp=$(date -u +%Y%m%dT%H%M%SZ)
for run in $(seq "$RUNS"); do
    for mode in off on; do
        port=$(free_port)
        extra=()
        if [ "$mode" = on ]; then
            rport=$(free_port)
            taskset -c "$LOADGEN_CPU" python3 perf/webhook-receiver.py "$rport" > "$RESULTS/webhooks-$stamp-receiver-$run.json" &
            receiver=$!
            wait_port "$rport"
            extra=(--webhook-url "http://127.0.0.1:$rport/hooks" --webhook-secret perf-webhook-secret-0123)
        fi
        start=$(date +%s.%N)
        start_server partyflow "$port" --shards 1 "${extra[@]}"
        loadgen --url "http://127.0.0.1:$port" --server-pid "$SERVER_PID" --warmup 25s --duration 20s \
            --json "$RESULTS/ab-$stamp-party-webhooks_$mode-$run.json" party --rooms 1000 --players 10 >/dev/null || true
        stop_server
        if [ "$mode" = on ]; then
            kill -TERM "$receiver"; wait "$receiver" 2>/dev/null || true
            python3 -c "import json,sys,time; c=json.load(open(sys.argv[1])); print(f'run $run: receiver got {c[\"events\"]} events in {c[\"requests\"]} requests, {c[\"events\"]/(time.time()-float(sys.argv[2])):.0f} events/s over the run')" \
                "$RESULTS/webhooks-$stamp-receiver-$run.json" "$start"
        fi
    done
done
python3 perf/summarize.py ab "$RESULTS" "$stamp" "$(machine)"
