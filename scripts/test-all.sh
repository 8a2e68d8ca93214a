#!/usr/bin/env bash
# Runs every test of partyflow on a fresh Linux machine:
#   1. unit and integration tests, the panic-containment tests included, under line coverage
#      (scripts/coverage.sh, its own build folder; fails below ./coverage-floor). The integration
#      tests start the real server, redis-server for the persistence and cluster tests, and nginx
#      for the sticky-routing test, on ephemeral loopback ports,
#   2. the Autobahn TestSuite (quick set) against the release server's /echo,
#   3. short load-generator smoke runs of every scenario (party, relay, storm, a 60 s soak with an
#      RSS-growth gate) with the SLO gates on, the party's memory per connection against the
#      recorded figure (perf/party-smoke-rss-bytes),
#   4. every fuzz target for 30 s: cargo fuzz on nightly when installed, otherwise the same
#      targets mutated on stable, inside stage 1,
#   5. the operations files in tuning/ checked against the real server (promtool, systemd-analyze)
#      and `partyflow doctor` on this machine,
#   6. the Debian package built, linted, installed, run as its user and purged
#      (scripts/test-package.sh; needs root).
#   0. cargo fmt --check and cargo clippy -D warnings over the workspace, every target (the
#      criterion benches included: `cargo bench` runs them).
# Installs what is missing (Debian packages) and uses only free loopback ports.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
# Debian puts nginx in /usr/sbin, which a non-login PATH may lack.
export PATH="$PATH:/usr/sbin:/sbin"
SHARED="${PARTYFLOW_SHARED:-$ROOT/../shared}"
# Cargo's output folder: honour CARGO_TARGET_DIR (relative paths are relative to the workspace).
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
case "$TARGET" in /*) ;; *) TARGET="$ROOT/$TARGET" ;; esac
BIN="$TARGET/release"

log() { printf '\n== %s  [%s]\n' "$*" "$(date +%T)"; }
apt_install() {
    [ "$(id -u)" = 0 ] || { echo "missing $*; install it (needs root)"; exit 2; }
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

command -v cargo >/dev/null || { echo "cargo not found: install Rust (https://rustup.rs) first"; exit 2; }
command -v python3 >/dev/null || apt_install python3 python3-venv
python3 -c 'import venv, ensurepip' 2>/dev/null || apt_install python3-venv
# The persistence tests start their own redis-server on free loopback ports.
command -v redis-server >/dev/null || apt_install redis-server
# The sticky-routing test runs tuning/nginx.conf in front of three instances.
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || apt_install nginx-light
# promtool checks /metrics (a test), the alert rules and the dashboard's queries.
command -v promtool >/dev/null || apt_install prometheus
# The JavaScript SDK's tests run on Node >= 20 (its WebSocket).
command -v node >/dev/null || apt_install nodejs
node -e 'process.exit(Number(process.versions.node.split(".")[0]) >= 20 ? 0 : 1)' || { echo "the SDK tests need Node >= 20 (found $(node --version))"; exit 2; }
# The web client's browser test: Debian's chromium driven by Playwright (the Python package from
# PyPI, in a virtual environment in the target folder; no browser is downloaded).
command -v chromium >/dev/null || apt_install chromium
# The package test: lintian on the .deb, adduser for its maintainer scripts.
command -v lintian >/dev/null || apt_install lintian
command -v adduser >/dev/null || apt_install adduser
# The tests that need these tools fail rather than skip them.
export PARTYFLOW_REQUIRE_TOOLS=1

# Starts the release server on a free port with extra args; sets SERVER_PID and SERVER_ADDR.
start_server() {
    local log; log=$(mktemp)
    "$BIN/partyflow" --listen 127.0.0.1:0 --log info "$@" 2>"$log" &
    SERVER_PID=$!
    for _ in $(seq 100); do
        SERVER_ADDR=$(sed -n 's/.*partyflow listening on \([0-9.:]*\).*/\1/p' "$log" | head -n1)
        [ -n "$SERVER_ADDR" ] && return 0
        kill -0 "$SERVER_PID" 2>/dev/null || { cat "$log"; return 1; }
        sleep 0.1
    done
    cat "$log"; return 1
}
stop_server() {
    kill -TERM "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
}
trap 'kill "${SERVER_PID:-}" 2>/dev/null || true' EXIT

stages_passed=0
log "format and lints"
if cargo fmt --version >/dev/null 2>&1; then
    cargo fmt --all --check
else
    echo "rustfmt is not installed (rustup component add rustfmt); format check skipped"
fi
if cargo clippy --version >/dev/null 2>&1; then
    cargo clippy --release --workspace --all-targets --locked -- -D warnings
else
    echo "clippy is not installed (rustup component add clippy); lint check skipped"
fi

log "build (release)"
cargo build --release --workspace --bins --locked

# Fuzzing: cargo fuzz on nightly when installed (a stage of its own, below); otherwise the same
# targets mutated on stable, as tests/fuzz_stable.rs of the stage below, for FUZZ_SECONDS each.
FUZZ_SECONDS=${PARTYFLOW_FUZZ_SECONDS:-30}
NIGHTLY_FUZZ=
cargo +nightly fuzz --version >/dev/null 2>&1 && NIGHTLY_FUZZ=1
if [ -n "$NIGHTLY_FUZZ" ]; then
    log "unit and integration tests (with 10,000 simulated room lifetimes) and panic containment, under line coverage"
    bash scripts/coverage.sh
else
    log "unit and integration tests (with 10,000 simulated room lifetimes), panic containment, and every fuzz target on stable for $FUZZ_SECONDS s (no nightly cargo-fuzz), under line coverage"
    PARTYFLOW_FUZZ_SECONDS=$FUZZ_SECONDS bash scripts/coverage.sh
fi
stages_passed=$((stages_passed + 1))

log "Autobahn TestSuite against /echo: every case but 12.*/13.* at the default limits, then cases 1-7 of every permessage-deflate group"
if [ -x "$SHARED/autobahn/run.sh" ] || [ -f "$SHARED/autobahn/run.sh" ]; then
    start_server --shards 2 --max-message-bytes 16777216
    bash "$SHARED/autobahn/run.sh" --no-compression "ws://$SERVER_ADDR/echo"
    stop_server
    # permessage-deflate (12.*, 13.*): cases 1-7 of every group, the smaller messages (84 cases; the
    # larger ones take minutes and are in perf/RESULTS.md, all 216 OK). A conformance client is
    # no abuser: the per-connection rates are lifted for it.
    start_server --shards 2 --max-message-bytes 16777216 --connection-byte-rate 1073741824 --connection-message-rate 1000000
    small_deflate_cases=$(python3 -c "print(','.join(f'{g}.{c}' for g in ['12.1','12.2','12.3','12.4','12.5','13.1','13.2','13.3','13.4','13.5','13.6','13.7'] for c in range(1, 8)))")
    bash "$SHARED/autobahn/run.sh" "ws://$SERVER_ADDR/echo" "$small_deflate_cases"
    stop_server
    stages_passed=$((stages_passed + 1))
else
    echo "no Autobahn runner at $SHARED/autobahn (set PARTYFLOW_SHARED); skipped"
fi

GATES=(--slo-p95-ms 100 --max-lost 0 --max-error-rate 0.01)
log "load generator smoke: party, 10 rooms x (1 host + 10 players), the real game, two client threads"
start_server --shards 2 --min-round-duration 1s
"$BIN/partyflow-loadgen" --url "http://$SERVER_ADDR" --server-pid "$SERVER_PID" --warmup 2s --duration 5s --threads 2 "${GATES[@]}" \
    --json "$TARGET/smoke-party.json" party --rooms 10 --players 10 --round-duration 4 --swipe-interval 500ms
stop_server
# Memory per connection may not grow past twice the recorded figure (a ratio, not a timing).
python3 scripts/check-smoke-rss.py "$TARGET/smoke-party.json" perf/party-smoke-rss-bytes
log "load generator smoke: relay, 20 rooms x 6 members"
start_server --shards 2
"$BIN/partyflow-loadgen" --url "http://$SERVER_ADDR" --server-pid "$SERVER_PID" --warmup 1s --duration 3s "${GATES[@]}" \
    relay --rooms 20 --members 6 --rate 20 --payload 128
stop_server
log "load generator smoke: pubsub, 20 rooms x 6 members, each in two rooms, with directs"
start_server --shards 2 --pubsub-secret loadgen-smoke-secret-01
"$BIN/partyflow-loadgen" --url "http://$SERVER_ADDR" --server-pid "$SERVER_PID" --warmup 1s --duration 3s "${GATES[@]}" \
    pubsub --rooms 20 --members 6 --rooms-per-conn 2 --rate 20 --direct-rate 2 --pubsub-secret loadgen-smoke-secret-01
stop_server
log "load generator smoke: storm, 10 rooms, 30 % of connections dropped and reconnected"
start_server --shards 2
"$BIN/partyflow-loadgen" --url "http://$SERVER_ADDR" --server-pid "$SERVER_PID" --warmup 2s --duration 6s "${GATES[@]}" \
    storm --rooms 10 --players 10 --round-duration 10 --swipe-interval 500ms --drop-fraction 0.3
stop_server
log "soak, 60 s: 20 rooms with churn, replaced every ~15 s; memory must not trend up (perf/RESULTS.md has 30 minutes)"
start_server --shards 2 --countdown 1 --score-review 1s --min-round-duration 5s
"$BIN/partyflow-loadgen" --url "http://$SERVER_ADDR" --server-pid "$SERVER_PID" --warmup 20s --duration 60s --max-lost 0 --max-error-rate 0 \
    soak --rooms 20 --players 4 --round-duration 10 --swipe-interval 500ms --room-lifetime 15s --churn-interval 1s \
    --sample-interval 5s --max-rss-growth-kib-per-min 1024
stop_server
stages_passed=$((stages_passed + 1))

log "JavaScript SDK against the release server (node --test)"
CARGO_TARGET_DIR="$TARGET" node --experimental-websocket --test "$ROOT"/clients/js/test/*.test.mjs
stages_passed=$((stages_passed + 1))

log "web client and admin page in Chromium (Playwright): a whole game, a player offline for 3 s, a reload; log in, list, kick, close"
[ -x "$TARGET/browser-venv/bin/python" ] || python3 -m venv "$TARGET/browser-venv"
"$TARGET/browser-venv/bin/python" -c 'import playwright' 2>/dev/null || "$TARGET/browser-venv/bin/pip" install -q playwright
CARGO_TARGET_DIR="$TARGET" PARTYFLOW_CHROMIUM="$(command -v chromium)" "$TARGET/browser-venv/bin/python" "$ROOT/tests/browser/test_web_client.py"
CARGO_TARGET_DIR="$TARGET" PARTYFLOW_CHROMIUM="$(command -v chromium)" "$TARGET/browser-venv/bin/python" "$ROOT/tests/browser/test_admin_page.py"
stages_passed=$((stages_passed + 1))

log "operations files: alert rules, dashboard queries and metric names, systemd unit, sysctls"
start_server --shards 2 --redis redis://127.0.0.1:1/0 --secret ops-check
metrics_file=$(mktemp)
python3 -c "import urllib.request,sys; sys.stdout.write(urllib.request.urlopen('http://$SERVER_ADDR/metrics').read().decode())" > "$metrics_file"
stop_server
python3 scripts/check-ops-files.py "$metrics_file" "$BIN/partyflow"
# Warnings (exit 1) are this machine's limits; only "cannot run" (2) fails.
"$BIN/partyflow" doctor || [ $? -eq 1 ]
stages_passed=$((stages_passed + 1))

if [ -n "$NIGHTLY_FUZZ" ]; then
    log "fuzzing: every cargo-fuzz target for $FUZZ_SECONDS s (two at a time), seeded from fuzz/seeds"
    fuzz_one() {
        corpus="$TARGET/fuzz-corpus/$1"
        mkdir -p "$corpus" && cp "$ROOT/fuzz/seeds/$1/"* "$corpus/"
        (cd "$ROOT/fuzz" && cargo +nightly fuzz run "$1" "$corpus" -- -max_total_time="$FUZZ_SECONDS" -rss_limit_mb=2048 -print_final_stats=1) \
            > "$TARGET/fuzz-$1.log" 2>&1 || { tail -n 40 "$TARGET/fuzz-$1.log"; echo "fuzz target $1 failed"; return 1; }
        grep -E "stat::number_of_executed_units" "$TARGET/fuzz-$1.log" | sed "s/^/$1: /"
    }
    export -f fuzz_one
    export TARGET ROOT FUZZ_SECONDS
    (cd "$ROOT/fuzz" && cargo +nightly fuzz build) > "$TARGET/fuzz-build.log" 2>&1 || { tail -n 40 "$TARGET/fuzz-build.log"; exit 1; }
    (cd "$ROOT/fuzz" && cargo +nightly fuzz list) | xargs -P 2 -I{} bash -c 'fuzz_one {}'
    stages_passed=$((stages_passed + 1))
fi

log "Debian package: lintian, dpkg -i, --version, systemd-analyze verify, run as its user, purge"
bash scripts/test-package.sh
stages_passed=$((stages_passed + 1))

echo
echo "stages: $stages_passed passed, 0 failed"
