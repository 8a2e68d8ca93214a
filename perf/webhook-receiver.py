"""A webhook receiver for perf runs: answers 200 to every POST and counts the events it got,
printed on SIGTERM as JSON: {"requests", "events", "seconds"}, the last being the time from the
first answer to the last. With --gate, requests wait unanswered until SIGUSR1 opens the gate
(so a backlog builds up without failures or retries, then drains at full speed).
Usage: webhook-receiver.py PORT [--gate]"""
import json
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

counts = {"requests": 0, "events": 0, "seconds": 0.0}
first = None
gate = threading.Event()
if "--gate" not in sys.argv:
    gate.set()
lock = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        global first
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        gate.wait()
        with lock:
            now = time.monotonic()
            first = first if first is not None else now
            counts["seconds"] = round(now - first, 3)
            counts["requests"] += 1
            counts["events"] += len(json.loads(body).get("events", []))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def stop(*_):
    print(json.dumps(counts), flush=True)
    sys.exit(0)


signal.signal(signal.SIGTERM, stop)
signal.signal(signal.SIGUSR1, lambda *_: gate.set())
ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
