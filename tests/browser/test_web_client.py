"""The web client in a real Chromium (Debian's package, driven by Playwright): a host and four
players play a whole game through the page; one player goes offline for 3 s mid-round and comes
back having applied every event the others did, with the reconnect banner shown and gone; a
reload restores a player's seat; no page logs an error; Chromium negotiates permessage-deflate with
/relay and /ws, and the subprotocol partyflow.v1 with the token beside it. Screenshots of each stage go to
$ARTIFACTS (default: <target>/browser-artifacts), with the page's size and first paint.

Run by scripts/test-all.sh; alone: python3 tests/browser/test_web_client.py (after cargo build
--release, with playwright installed and PARTYFLOW_CHROMIUM naming the browser)."""
import json
import os
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from playwright.sync_api import TimeoutError as PlaywrightTimeout
from playwright.sync_api import expect, sync_playwright

ROOT = Path(__file__).resolve().parents[2]
TARGET = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
if not TARGET.is_absolute():
    TARGET = ROOT / TARGET
ARTIFACTS = Path(os.environ.get("ARTIFACTS", TARGET / "browser-artifacts"))
CHROMIUM = os.environ.get("PARTYFLOW_CHROMIUM", "/usr/bin/chromium")
PHONE = {"width": 390, "height": 844}


def start_server():
    args = [str(TARGET / "release/partyflow"), "--listen", "127.0.0.1:0", "--shards", "2", "--log", "info",
            "--min-round-duration", "2s", "--countdown", "1", "--score-review", "1s"]
    server = subprocess.Popen(args, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 20
    while time.time() < deadline:
        line = server.stderr.readline()
        match = re.search(r"partyflow listening on ([0-9.:]+)", line)
        if match:
            return server, f"http://{match.group(1)}"
    server.kill()
    sys.exit("the server did not start")


def play_word(host):
    """Clicks "correct" if a word is shown. The turn may end between seeing the button and
    clicking it, so the click waits briefly and a vanished button is not an error."""
    if host.get_by_test_id("correct").is_visible():
        try:
            host.get_by_test_id("correct").click(timeout=1000)
        except PlaywrightTimeout:
            pass


def metric(url, name):
    """The sum of a counter over its series in /metrics."""
    with urllib.request.urlopen(url + "/metrics", timeout=10) as response:
        text = response.read().decode()
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name + "{") or line.startswith(name + " "))


def main():
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    server, url = start_server()
    errors = []
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            pages = {}

            def open_page(name):
                context = browser.new_context(viewport=PHONE, is_mobile=True, has_touch=True)
                page = context.new_page()
                page.on("console", lambda m, n=name: m.type == "error" and errors.append((n, m.text)))
                page.on("pageerror", lambda e, n=name: errors.append((n, str(e))))
                pages[name] = page
                return page

            def shoot(stage, *names):
                for name in names:
                    pages[name].screenshot(path=str(ARTIFACTS / f"{stage}-{name}.png"))

            def state(name, value, timeout=20000):
                expect(pages[name].get_by_test_id("state")).to_have_text(value, timeout=timeout)

            host = open_page("host")
            started = time.time()
            host.goto(url + "/")
            expect(host.get_by_test_id("create-room")).to_be_visible()
            metrics = host.evaluate("""() => ({
                firstPaintMs: performance.getEntriesByType('paint').find(e => e.name === 'first-contentful-paint')?.startTime,
                bytes: performance.getEntriesByType('resource').reduce((n, e) => n + e.encodedBodySize, 0)
                    + performance.getEntriesByType('navigation')[0].encodedBodySize,
            })""")
            shoot("1-home", "host")
            host.fill("input[name=hostName]", "Hana")
            host.fill("input[name=rounds]", "1")
            host.fill("input[name=roundDurationSec]", "4")
            host.get_by_test_id("create-room").click()
            expect(host.get_by_test_id("room-id")).to_have_text(re.compile(r"^[A-Z0-9]{6}$"))
            join_link = host.get_by_test_id("join-link").get_attribute("href")
            players = [f"p{i}" for i in range(4)]
            for i, name in enumerate(players):
                page = open_page(name)
                page.goto(join_link)
                page.get_by_test_id("player-name").fill(f"Player {i}")
                page.get_by_test_id("join").click()
                expect(page.get_by_test_id("connection")).to_have_text("open")
            state("host", "LOBBY")
            shoot("2-lobby", "host", "p0")
            host.get_by_test_id("start-game").click()
            for i, name in enumerate(players):
                state(name, re.compile("TEAM_SETUP|READY_TO_START"))
                pages[name].get_by_test_id(f"team-team_{i % 2 + 1}").click()
            state("host", "READY_TO_START")
            expect(pages["p0"].get_by_test_id("start-game")).to_be_hidden()
            shoot("3-teams", "host", "p0")
            host.get_by_test_id("start-game").click()
            state("host", "ROUND_ACTIVE")
            expect(host.get_by_test_id("word")).not_to_be_empty()
            shoot("4-round", "host", "p0")
            # p3's network goes away for 3 s while the host plays words.
            offline = pages["p3"]
            offline.context.set_offline(True)
            expect(offline.get_by_test_id("connection")).to_have_text("reconnecting")
            expect(offline.locator("#banner")).to_be_visible()
            shoot("5-offline", "p3")
            until = time.time() + 3
            while time.time() < until:
                play_word(host)
                time.sleep(0.2)
            offline.context.set_offline(False)
            expect(offline.get_by_test_id("connection")).to_have_text("open", timeout=15000)
            expect(offline.locator("#banner")).to_be_hidden()
            # Play on to the end of the game.
            deadline = time.time() + 60
            while host.get_by_test_id("state").inner_text() != "FINAL_RESULTS":
                assert time.time() < deadline, "the game did not end"
                play_word(host)
                time.sleep(0.2)
            for name in players:
                state(name, "FINAL_RESULTS")
            shoot("6-final", "host", "p0")
            # The player that went offline applied exactly the events a never-offline one did.
            seen = {name: pages[name].evaluate("window.partyflowEvents") for name in ("p0", "p3")}
            since = max(s[0] for s in seen.values())
            assert [s for s in seen["p3"] if s >= since] == [s for s in seen["p0"] if s >= since], seen
            assert len(set(seen["p3"])) == len(seen["p3"]), "an event applied twice"
            # A reload keeps the seat.
            pages["p2"].reload()
            state("p2", "FINAL_RESULTS")
            expect(pages["p2"].get_by_test_id("connection")).to_have_text("open")
            expect(pages["p2"].get_by_test_id("scores")).to_have_text(host.get_by_test_id("scores").text_content())
            network = re.compile(r"WebSocket connection to|ERR_INTERNET_DISCONNECTED|ERR_NAME_NOT_RESOLVED")
            real = [(n, t) for n, t in errors if not (n == "p3" and network.search(t))]
            assert not real, f"console errors: {real}"
            metrics["gameSeconds"] = round(time.time() - started, 1)
            # Chromium negotiates permessage-deflate with /relay and /ws, a large message comes
            # back intact (compressed both ways; the server counts it), and a game connection
            # opens with its CONNECTED.
            compressed_before = metric(url, "partyflow_compression_messages_compressed_total")
            relay = host.evaluate("""(base) => new Promise((ok, fail) => {
                const a = new WebSocket(base.replace('http', 'ws') + '/relay?room=deflate-check');
                a.onopen = () => a.send(JSON.stringify({words: Array(200).fill('partyflow')}));
                a.onmessage = (e) => ok({extensions: a.extensions, length: e.data.length});
                a.onerror = () => fail('relay socket failed');
            })""", url)
            assert relay["extensions"].startswith("permessage-deflate"), relay
            assert relay["length"] == len(json.dumps({"words": ["partyflow"] * 200}, separators=(",", ":"))), relay
            game = host.evaluate("""async (base) => {
                const room = await (await fetch(base + '/rooms', {method: 'POST', headers: {'Content-Type': 'application/json'},
                    body: JSON.stringify({hostName: 'Deflate'})})).json();
                return await new Promise((ok, fail) => {
                    const s = new WebSocket(room.wsUrl);
                    s.onmessage = (e) => { ok({extensions: s.extensions, first: JSON.parse(e.data).type}); s.close(); };
                    s.onerror = () => fail('game socket failed');
                });
            }""", url)
            assert game["extensions"].startswith("permessage-deflate") and game["first"] == "CONNECTED", game
            # The token in Sec-WebSocket-Protocol, as the SDK (and so every page above) sends it:
            # Chromium's `new WebSocket(url, protocols)` gets partyflow.v1 back and the connection
            # opens; a token alone, with no protocol the server speaks, is refused by Chromium
            # itself (the server selects none: RFC 6455 §4.2.2).
            offered = host.evaluate("""async (base) => {
                const room = await (await fetch(base + '/rooms', {method: 'POST', headers: {'Content-Type': 'application/json'},
                    body: JSON.stringify({hostName: 'Protocols'})})).json();
                const url = base.replace('http', 'ws') + '/ws?roomId=' + room.roomId + '&version=1.0';
                const open = (protocols) => new Promise((ok) => {
                    const s = new WebSocket(url, protocols);
                    s.onmessage = (e) => { ok({protocol: s.protocol, first: JSON.parse(e.data).type}); s.close(); };
                    s.onerror = () => ok({failed: true});
                });
                return {both: await open(['partyflow.v1', 'partyflow.token.' + room.hostToken]),
                        tokenOnly: await open(['partyflow.token.' + room.hostToken])};
            }""", url)
            assert offered["both"] == {"protocol": "partyflow.v1", "first": "CONNECTED"}, offered
            assert offered["tokenOnly"] == {"failed": True}, offered
            assert metric(url, "partyflow_compression_messages_compressed_total") > compressed_before
            metrics["relayExtensions"] = relay["extensions"]
            (ARTIFACTS / "metrics.json").write_text(json.dumps(metrics))
            print(f"web client: {metrics['bytes']} bytes, first contentful paint {metrics['firstPaintMs']:.0f} ms, "
                  f"a whole game in {metrics['gameSeconds']} s; screenshots in {ARTIFACTS}")
            browser.close()
    finally:
        server.kill()


if __name__ == "__main__":
    main()
