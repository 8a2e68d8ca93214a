#!/usr/bin/env bash
# Compression off and on, back to back, RUNS times: the party run (1,000 rooms x 11, 25 s
# warm-up, 20 s measured) and the relay at moderate load (100 x 11, 57 msg/s per room, 10 s)
# with 128-byte messages (under --compression-min-bytes: sent plain) and 1,024-byte ones (24
# bytes of numbers, then JSON-like text); `partymin64` is the party run with the server's
# --compression-min-bytes at 64 (nearly every message compressed). The
# same server binary and flags (compression on by default) each time: "on" is the load
# generator offering permessage-deflate (`--compression`), as browsers do. Bytes on the wire are
# what the clients read off their sockets. Prints one table; raw JSON in
# perf/results/compression-*.json.
#   RUNS=2 SCENARIOS="party relay128 relay1024"
source "$(dirname "$0")/lib.sh"
RUNS="${RUNS:-2}"
SCENARIOS="${SCENARIOS:-party relay128 relay1024}"
cd "$ROOT"
cargo build --release -q -p partyflow -p partyflow-loadgen
stamp=$(date -u +%Y%m%dT%H%M%SZ)
for run in $(seq "$RUNS"); do
    for scenario in $SCENARIOS; do
        for mode in off on; do
            port=$(free_port)
            server=(--shards 1); [ "$scenario" = partymin64 ] && server+=(--compression-min-bytes 64)
            start_server partyflow "$port" "${server[@]}"
            offer=(); [ "$mode" = on ] && offer=(--compression)
            common=(--url "http://127.0.0.1:$port" --server-pid "$SERVER_PID" --json "$RESULTS/compression-$stamp-${scenario}_$mode-$run.json" "${offer[@]}")
            case $scenario in
                party*) loadgen "${common[@]}" --warmup 25s --duration 20s party --rooms 1000 --players 10 >/dev/null || true ;;
                relay*) loadgen "${common[@]}" --warmup 2s --duration 10s relay --rooms 100 --members 11 --rate 57 --payload "${scenario#relay}" >/dev/null || true ;;
            esac
            stop_server
        done
    done
done
python3 perf/summarize.py compression "$RESULTS" "$stamp" "$(machine)"
