"""The admin page in a real Chromium (Debian's package, driven by Playwright): a wrong key is
refused; with the server API's key the page lists the rooms, filters them, opens a game room,
kicks a player with a ban (its seat is gone, as the API confirms) and closes the room (the API
then no longer has it). No page error. Screenshots go to $ARTIFACTS.

Run by scripts/test-all.sh; alone: python3 tests/browser/test_admin_page.py (after cargo build
--release, with playwright installed and PARTYFLOW_CHROMIUM naming the browser)."""
import json
import os
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from playwright.sync_api import expect, sync_playwright

ROOT = Path(__file__).resolve().parents[2]
TARGET = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
if not TARGET.is_absolute():
    TARGET = ROOT / TARGET
ARTIFACTS = Path(os.environ.get("ARTIFACTS", TARGET / "browser-artifacts"))
CHROMIUM = os.environ.get("PARTYFLOW_CHROMIUM", "/usr/bin/chromium")
KEY = "admin-page-test-key-0123456789"


def start_server():
    args = [str(TARGET / "release/partyflow"), "--listen", "127.0.0.1:0", "--shards", "2", "--log", "info", "--api-key", KEY]
    server = subprocess.Popen(args, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 20
    while time.time() < deadline:
        match = re.search(r"partyflow listening on ([0-9.:]+)", server.stderr.readline())
        if match:
            return server, f"http://{match.group(1)}"
    server.kill()
    sys.exit("the server did not start")


def request(url, method="GET", body=None, key=None):
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def main():
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    server, url = start_server()
    errors = []
    try:
        status, created = request(url + "/rooms", "POST", {"hostName": "Hana"})
        assert status == 201, created
        room = created["roomId"]
        status, joined = request(url + f"/rooms/{room}/players", "POST", {"playerName": "Ann"})
        assert status == 201, joined
        other_status, other = request(url + "/rooms", "POST", {"hostName": "Otto"})
        assert other_status == 201, other

        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1024, "height": 768})
            page.on("console", lambda m: m.type == "error" and not "401" in m.text and errors.append(m.text))
            page.on("pageerror", lambda e: errors.append(str(e)))
            response = page.goto(url + "/admin")
            assert "default-src 'none'" in response.headers["content-security-policy"]

            page.get_by_test_id("admin-key").fill("not-the-key-not-the-key")
            page.get_by_test_id("admin-login").click()
            expect(page.locator("#login-error")).to_contain_text("not the server's --api-key")

            page.get_by_test_id("admin-key").fill(KEY)
            page.get_by_test_id("admin-login").click()
            row = page.locator(f'[data-testid="room-row"][data-room-id="{room}"]')
            expect(row).to_be_visible()
            expect(page.get_by_test_id("room-row")).to_have_count(2)
            expect(row).to_contain_text("LOBBY")
            page.get_by_test_id("filter-kind").select_option("pubsub")
            expect(page.get_by_test_id("room-row")).to_have_count(0)
            page.get_by_test_id("filter-kind").select_option("game")
            expect(row).to_be_visible()
            page.screenshot(path=str(ARTIFACTS / "admin-1-rooms.png"))

            row.click()
            expect(page.locator("#detail-title")).to_contain_text(room)
            expect(page.locator("#members li")).to_have_count(2)
            page.get_by_test_id("ban").check()
            page.get_by_test_id("kick").click()
            expect(page.locator("#members li")).to_have_count(1)
            status, detail = request(url + f"/api/rooms/{room}", key=KEY)
            assert status == 200 and [m["name"] for m in detail["members"]] == ["Hana"], detail
            page.screenshot(path=str(ARTIFACTS / "admin-2-room.png"))

            page.get_by_test_id("close-room").click()
            page.get_by_test_id("confirm-close").click()
            expect(row).to_have_count(0)
            expect(page.get_by_test_id("room-row")).to_have_count(1)
            status, gone = request(url + f"/api/rooms/{room}", key=KEY)
            assert status == 404, (status, gone)

            # A reload keeps the key for this tab (sessionStorage), so the list comes back.
            page.reload()
            expect(page.get_by_test_id("room-row")).to_have_count(1)
            browser.close()
        assert not errors, errors
        print(f"admin page: logged in, listed, filtered, kicked with a ban, closed {room}; screenshots in {ARTIFACTS}")
    finally:
        server.terminate()
        server.wait(timeout=10)


if __name__ == "__main__":
    main()
