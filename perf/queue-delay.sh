#!/usr/bin/env bash
# Relay at moderate load (100 rooms x 11, 57 msg/s per room, 128 B: 63k deliveries/s), RUNS runs
# per server, alternating: partyflow, a second partyflow build when BASE_BIN names its release
# folder, and the tokio-tungstenite reference relay; with IDLE=N, N more clients connect to
# /echo all at once first (perf/idle-clients.py) and stay idle. Per run: end-to-end p50/p99/p99.9
# from the load generator and the server's outbound queue delay from its /metrics (the bucket
# bounds its quantiles fall in), plus poll-budget deferrals. Results: perf/results/queue-delay-*.json.
#   RUNS=5 DURATION=10s IDLE=0 BASE_BIN= SERVER_CPU=0 LOADGEN_CPU=1
source "$(dirname "$0")/lib.sh"
RUNS="${RUNS:-5}"
DURATION="${DURATION:-10s}"
IDLE="${IDLE:-0}"
cd "$ROOT"
cargo build --release -q -p partyflow -p partyflow-loadgen -p reference-relay
stamp=$(date -u +%Y%m%dT%H%M%SZ)
servers="partyflow tokio"
[ -n "${BASE_BIN:-}" ] && servers="base partyflow tokio"
for run in $(seq "$RUNS"); do
    for server in $servers; do
        port=$(free_port)
        case $server in
            base) BIN="$BASE_BIN" start_server partyflow "$port" --shards 1 ;;
            *) start_server "$server" "$port" --shards 1 ;;
        esac
        idle_pid=
        if [ "$IDLE" -gt 0 ]; then
            taskset -c "$LOADGEN_CPU" python3 perf/idle-clients.py "$port" "$IDLE" 3600 & idle_pid=$!
            sleep 2
        fi
        loadgen --url "http://127.0.0.1:$port" --server-pid "$SERVER_PID" --warmup 2s --duration "$DURATION" \
            --json "$RESULTS/queue-delay-$stamp-$server-$run.json" relay --rooms 100 --members 11 --rate 57 --payload 128 >/dev/null || true
        if [ "$server" != tokio ]; then
            deferrals=$(python3 -c "import urllib.request,sys; t=urllib.request.urlopen(sys.argv[1]).read().decode(); print(int(sum(float(l.split()[-1]) for l in t.splitlines() if l.startswith('partyflow_poll_budget_deferrals_total'))))" "http://127.0.0.1:$port/metrics" 2>/dev/null || echo -)
            python3 - "$RESULTS/queue-delay-$stamp-$server-$run.json" "$deferrals" <<'PY'
import json, sys
path, deferrals = sys.argv[1], sys.argv[2]
r = json.load(open(path)); r["pollBudgetDeferrals"] = None if deferrals == "-" else int(deferrals)
json.dump(r, open(path, "w"), indent=2)
PY
        fi
        [ -n "$idle_pid" ] && kill "$idle_pid" 2>/dev/null
        stop_server
    done
done
python3 perf/summarize.py queue-delay "$RESULTS" "$stamp" "$(machine)"
