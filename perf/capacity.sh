#!/usr/bin/env bash
# Capacity of one core. `capacity.sh party` (default): the server on $SERVER_CPU with one shard,
# the load generator on $LOADGEN_CPU, 1,000 rooms x (1 host + 10 players) playing the real game
# for 60 s with the SLO gates on (p95 < 100 ms, nothing lost). Room starts are spread over 20 s
# (the warm-up covers it); add `--synchronized` to the party arguments for the harsher case. `capacity.sh relay`: the relay
# scenario at increasing rates to find the saturation point. Results in perf/results/.
#   ROOMS=1000 DURATION=60s RATES="100 200 300 400 600"
source "$(dirname "$0")/lib.sh"
MODE="${1:-party}"
cd "$ROOT"
cargo build --release -q -p partyflow -p partyflow-loadgen
stamp=$(date -u +%Y%m%dT%H%M%SZ)
port=$(free_port)
case "$MODE" in
    party)
        start_server partyflow "$port" --shards "${SHARDS:-1}"
        status=0
        loadgen --url "http://127.0.0.1:$port" --server-pid "$SERVER_PID" --warmup "${WARMUP:-25s}" --duration "${DURATION:-60s}" \
            --slo-p95-ms 100 --max-lost 0 --max-error-rate 0.001 \
            --json "$RESULTS/capacity-$stamp-party.json" --html "$RESULTS/capacity-$stamp-party.html" \
            party --rooms "${ROOMS:-1000}" --players 10 || status=$?
        stop_server
        python3 perf/summarize.py capacity "$RESULTS/capacity-$stamp-party.json" "$(machine)"
        exit $status
        ;;
    relay)
        stop_server 2>/dev/null || true
        for rate in ${RATES:-100 200 300 400 600}; do
            port=$(free_port)
            start_server partyflow "$port" --shards "${SHARDS:-1}"
            loadgen --url "http://127.0.0.1:$port" --server-pid "$SERVER_PID" --warmup 2s --duration "${DURATION:-10s}" \
                --json "$RESULTS/compare-$stamp-partyflow-$rate.json" relay --rooms 100 --members 11 --rate "$rate" >/dev/null || true
            stop_server
        done
        python3 perf/summarize.py compare "$RESULTS" "$stamp" "$(machine)"
        ;;
    *) echo "usage: capacity.sh [party|relay]" >&2; exit 64 ;;
esac
