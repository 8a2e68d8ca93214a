#!/usr/bin/env bash
# Builds the Debian package from this checkout: $CARGO_TARGET_DIR/debian/partyflow_<version>_amd64.deb
# (default target folder: ./target). What it installs where: README "Install on Debian or Ubuntu".
# Extra arguments go to `cargo deb` (e.g. --deb-revision 2).
set -euo pipefail
cd "$(dirname "$0")/.."
command -v cargo-deb >/dev/null || cargo install --locked cargo-deb
# Both binaries first: `cargo deb` alone would build only this package, not the load generator.
cargo build --release --locked --workspace --bins
# Debug symbols go to a separate partyflow-dbgsym .ddeb beside it (backtraces with file and line).
cargo deb --no-build --dbgsym "$@"
