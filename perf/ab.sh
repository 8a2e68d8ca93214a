#!/usr/bin/env bash
# Two builds back to back, alternating, on the same machine: the party run (1,000 rooms x 11,
# 25 s warm-up, 20 s measured), the relay at moderate load (100 x 11, 57 msg/s per room, 10 s)
# and, for memory, the relay with 11,000 connections at light load (1,000 x 11, 2 msg/s per
# room; SCENARIOS="relay11k"), RUNS times each. The server on $SERVER_CPU with one shard, the load generator on
# $LOADGEN_CPU. BASE_BIN names the other build's release folder (e.g. a worktree of the commit
# before a change, built with its own CARGO_TARGET_DIR). Prints one table; raw JSON in
# perf/results/ab-*.json.
#   BASE_BIN=... RUNS=2 SCENARIOS="party relay" SERVER_ARGS="" (extra flags for both servers)
source "$(dirname "$0")/lib.sh"
: "${BASE_BIN:?set BASE_BIN to the release folder of the build to compare against}"
RUNS="${RUNS:-2}"
SCENARIOS="${SCENARIOS:-party relay}"
cd "$ROOT"
cargo build --release -q -p partyflow -p partyflow-loadgen
# 11,000 connections need as many descriptors in each process.
ulimit -n "$(ulimit -Hn)"
stamp=$(date -u +%Y%m%dT%H%M%SZ)
for run in $(seq "$RUNS"); do
    for scenario in $SCENARIOS; do
        for build in base new; do
            bin="$BIN"; [ "$build" = base ] && bin="$BASE_BIN"
            port=$(free_port)
            # shellcheck disable=SC2086
            BIN="$bin" start_server partyflow "$port" --shards 1 ${SERVER_ARGS:-}
            json="$RESULTS/ab-$stamp-$scenario-$build-$run.json"
            case $scenario in
                party) loadgen --url "http://127.0.0.1:$port" --server-pid "$SERVER_PID" --warmup 25s --duration 20s --json "$json" \
                    party --rooms 1000 --players 10 >/dev/null || true ;;
                relay11k) loadgen --url "http://127.0.0.1:$port" --server-pid "$SERVER_PID" --warmup 5s --duration 10s --connect-rate 5000 --json "$json" \
                    relay --rooms 1000 --members 11 --rate 2 >/dev/null || true ;;
                relay) loadgen --url "http://127.0.0.1:$port" --server-pid "$SERVER_PID" --warmup 2s --duration 10s --json "$json" \
                    relay --rooms 100 --members 11 --rate 57 --payload 128 >/dev/null || true ;;
            esac
            stop_server
        done
    done
done
python3 perf/summarize.py ab "$RESULTS" "$stamp" "$(machine)"
