# Shared helpers of the perf scripts (sourced, not run).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
case "$TARGET" in /*) ;; *) TARGET="$ROOT/$TARGET" ;; esac
BIN="${BIN:-$TARGET/release}"
RESULTS="${RESULTS:-$ROOT/perf/results}"
SERVER_CPU="${SERVER_CPU:-0}"
LOADGEN_CPU="${LOADGEN_CPU:-1}"
mkdir -p "$RESULTS"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

wait_port() {
    for _ in $(seq 100); do
        python3 -c "import socket,sys; socket.create_connection(('127.0.0.1', int(sys.argv[1])), 1).close()" "$1" 2>/dev/null && return 0
        sleep 0.1
    done
    echo "nothing listens on port $1" >&2; return 1
}

# start_server NAME PORT [EXTRA ARGS...]: starts a server pinned to $SERVER_CPU; sets SERVER_PID.
start_server() {
    local name=$1 port=$2; shift 2
    case $name in
        partyflow) taskset -c "$SERVER_CPU" "$BIN/partyflow" --listen "127.0.0.1:$port" --log error "$@" & ;;
        tokio) taskset -c "$SERVER_CPU" "$BIN/reference-relay" "127.0.0.1:$port" >/dev/null & ;;
        node) taskset -c "$SERVER_CPU" node "$ROOT/perf/reference-relay-node/server.js" "$port" >/dev/null & ;;
        *) echo "unknown server $name" >&2; return 2 ;;
    esac
    SERVER_PID=$!
    wait_port "$port"
}

stop_server() { kill "$SERVER_PID" 2>/dev/null || true; wait "$SERVER_PID" 2>/dev/null || true; }

loadgen() { taskset -c "$LOADGEN_CPU" "$BIN/partyflow-loadgen" "$@"; }

machine() { echo "$(nproc)-core $(lscpu | sed -n 's/^Model name: *//p' | head -n1), $(uname -r)"; }
