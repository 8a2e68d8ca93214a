#!/usr/bin/env bash
# The relay scenario, same driver and same run, against partyflow and a reference relay server
# (perf/reference-relay: tokio + tokio-tungstenite; and a Node `ws` relay when node and npm are
# there). Each server is pinned to one core ($SERVER_CPU), the load generator to another
# ($LOADGEN_CPU). Per server and offered rate: deliveries/s, p50/p99, loss, server CPU-seconds per
# million deliveries; then RSS at 11,000 idle connections. Results: perf/results/compare-*.json
# and a markdown table on stdout.
#   RATES="57 100 200"  messages/s per room (100 rooms x 11 members, 128 B)
#   DURATION=10s SERVERS="partyflow tokio node" SHARDS=1 SERVER_CPU=0 LOADGEN_CPU=1
source "$(dirname "$0")/lib.sh"
RATES="${RATES:-57 100 150 200 300 400}"
DURATION="${DURATION:-10s}"
SERVERS="${SERVERS:-partyflow tokio node}"
cd "$ROOT"
cargo build --release -q -p partyflow -p partyflow-loadgen -p reference-relay
if [[ " $SERVERS " == *" node "* ]]; then
    if command -v node >/dev/null && command -v npm >/dev/null; then
        (cd perf/reference-relay-node && npm install --silent --no-audit --no-fund >/dev/null)
    else
        echo "node/npm not installed: skipping the Node ws relay"; SERVERS="${SERVERS/node/}"
    fi
fi
stamp=$(date -u +%Y%m%dT%H%M%SZ)
for server in $SERVERS; do
    for rate in $RATES; do
        port=$(free_port)
        start_server "$server" "$port" --shards "${SHARDS:-1}"
        loadgen --url "http://127.0.0.1:$port" --server-pid "$SERVER_PID" --warmup 2s --duration "$DURATION" \
            --json "$RESULTS/compare-$stamp-$server-$rate.json" relay --rooms 100 --members 11 --rate "$rate" --payload 128 >/dev/null || true
        stop_server
    done
    port=$(free_port)
    start_server "$server" "$port" --shards "${SHARDS:-1}"
    loadgen --url "http://127.0.0.1:$port" --server-pid "$SERVER_PID" --warmup 2s --duration 5s --connect-rate 2000 \
        --json "$RESULTS/compare-$stamp-$server-rss.json" relay --rooms 1000 --members 11 --rate 0.5 --payload 128 >/dev/null || true
    stop_server
done
python3 "$ROOT/perf/summarize.py" compare "$RESULTS" "$stamp" "$(machine)"
