#!/usr/bin/env bash
# The Debian package, built and installed on this machine (the test command's "Debian package"
# stage; needs root for dpkg): lintian finds no error; `dpkg -i` installs it and enables the
# unit; the installed binary names the commit it was built from; `systemd-analyze verify`
# passes on the installed unit; the installed binary, run as the `partyflow` user with the
# installed settings (as the unit runs it), passes its doctor and answers /health; a local edit
# of the settings survives a reinstall; `dpkg --purge` leaves no file of the package behind, nor
# the unit's enablement or the service's state.
set -euo pipefail
cd "$(dirname "$0")/.."
TARGET="${CARGO_TARGET_DIR:-$PWD/target}"
case "$TARGET" in /*) ;; *) TARGET="$PWD/$TARGET" ;; esac

fail() { echo "package test: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || fail "installing a package needs root"

rm -f "$TARGET"/debian/partyflow_*.deb
bash scripts/package.sh --fast >/dev/null
deb=$(ls "$TARGET"/debian/partyflow_*_amd64.deb)
echo "built $(basename "$deb") ($(du -k "$deb" | cut -f1) KiB)"

# Warnings (no manual page, an initial upload closing no bug) are reported, errors fail.
lint_rc=0
lint=$(lintian --fail-on error "$deb" 2>&1) || lint_rc=$?
echo "$lint" | grep -v "running with root privileges" || true
[ "$lint_rc" = 0 ] || fail "lintian found errors"

server_pid=
cleanup() {
    [ -z "$server_pid" ] || kill "$server_pid" 2>/dev/null || true
    dpkg --purge partyflow >/dev/null 2>&1 || true
}
trap cleanup EXIT

dpkg -i "$deb" >/dev/null
getent passwd partyflow >/dev/null || fail "no partyflow user after install"
wants=/etc/systemd/system/multi-user.target.wants/partyflow.service
[ -L "$wants" ] || fail "the unit is not enabled after install"
[ "$(stat -c %U:%G:%a /etc/partyflow/partyflow.toml)" = root:partyflow:640 ] || fail "settings not root:partyflow 0640"

commit=$(git rev-parse --short=12 HEAD)
/usr/bin/partyflow --version | grep -q "($commit)" || fail "--version says '$(/usr/bin/partyflow --version)', not commit $commit"
echo "installed: $(/usr/bin/partyflow --version)"

unit=$(dpkg -L partyflow | grep '/systemd/system/partyflow.service$')
said=$(systemd-analyze verify "$unit" 2>&1) || fail "systemd-analyze verify $unit: $said"
[ -z "$said" ] || fail "systemd-analyze verify $unit: $said"
echo "systemd-analyze verify $unit: clean"

# As the unit runs it: the service's user, its settings, its doctor first (2 = cannot run).
as_service() { setpriv --reuid partyflow --regid partyflow --init-groups "$@"; }
cd /
as_service /usr/bin/partyflow doctor --config /etc/partyflow/partyflow.toml >/dev/null || [ $? -eq 1 ] || fail "doctor says the server cannot run"
log=$(mktemp)
chmod 644 "$log"
setpriv --reuid partyflow --regid partyflow --init-groups \
    /usr/bin/partyflow --config /etc/partyflow/partyflow.toml --listen 127.0.0.1:0 2>"$log" &
server_pid=$!
addr=
for _ in $(seq 100); do
    addr=$(sed -n 's/.*partyflow listening on \([0-9.:]*\).*/\1/p' "$log" | head -n1)
    [ -n "$addr" ] && break
    kill -0 "$server_pid" 2>/dev/null || { cat "$log"; fail "the installed server did not start"; }
    sleep 0.1
done
[ -n "$addr" ] || { cat "$log"; fail "the installed server did not listen"; }
grep -q '"partyflow listening on' "$log" || fail "the installed settings' JSON logs are not in use"
user=$(ps -o user= -p "$server_pid" | tr -d ' ')
[ "$user" = partyflow ] || fail "the server runs as $user, not partyflow"
status=$(python3 -c "import json, urllib.request; print(json.load(urllib.request.urlopen('http://$addr/health'))['status'])")
[ "$status" = ok ] || fail "/health said status $status"
echo "the installed server, as user $user with /etc/partyflow/partyflow.toml: /health status $status"
kill -TERM "$server_pid"
wait "$server_pid" || fail "the installed server did not stop cleanly on SIGTERM"
server_pid=

# A local edit of the settings (a conffile) survives a reinstall of the package.
echo "# local edit" >> /etc/partyflow/partyflow.toml
dpkg -i "$deb" >/dev/null
tail -n1 /etc/partyflow/partyflow.toml | grep -q "# local edit" || fail "a reinstall replaced the local settings"

# Purge: every file of the package goes, and the service's state (systemd's StateDirectory).
install -d -o partyflow -g partyflow /var/lib/partyflow && touch /var/lib/partyflow/state
files=$(dpkg -L partyflow | while read -r f; do [ -f "$f" ] && echo "$f"; done)
dpkg --purge partyflow >/dev/null
left=$(for f in $files /etc/partyflow /var/lib/partyflow "$wants"; do [ -e "$f" ] || [ -L "$f" ] && echo "$f"; done || true)
[ -z "$left" ] || fail "left after purge: $left"
echo "purged: $(echo "$files" | wc -l) files, the unit's enablement and /var/lib/partyflow gone"
