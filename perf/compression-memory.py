"""Opens N WebSocket connections to /echo, each sending one 1 KiB text message and reading its
echo, then holds them until stdin closes: what a connection costs the server in memory with
and without permessage-deflate.

    python3 perf/compression-memory.py PORT N MODE

MODE: `plain` (no offer), `context` (Chrome's offer, `permessage-deflate; client_max_window_bits`:
the client keeps its compression context, so the server keeps an inflater per connection),
`nocontext` (`permessage-deflate; client_no_context_takeover`: the server's connections share
one inflater between messages). Prints "ready" once every echo has come back. Connections come
from 127.0.0.100 upwards, 50 per address (the server's per-address caps).
"""
import json
import socket
import sys
import zlib

OFFERS = {"plain": None, "context": "permessage-deflate; client_max_window_bits", "nocontext": "permessage-deflate; client_no_context_takeover"}


def message(i):
    words = [{"wordId": f"word_{k}", "text": f"word number {k}", "team": f"team_{k % 2}"} for k in range(12)]
    return json.dumps({"type": "PROBE", "connection": i, "payload": {"words": words}})[:1024].encode()


def frame(payload, compressed):
    if compressed:
        c = zlib.compressobj(6, zlib.DEFLATED, -15)
        payload = (c.compress(payload) + c.flush(zlib.Z_SYNC_FLUSH))[:-4]
    head = bytes([0xC1 if compressed else 0x81])
    head += bytes([0x80 | len(payload)]) if len(payload) < 126 else bytes([0x80 | 126]) + len(payload).to_bytes(2, "big")
    return head + b"\0\0\0\0" + payload  # a zero mask leaves the payload as it is


def read_frame(s, buf):
    while True:
        if len(buf) >= 2:
            n, at = buf[1] & 0x7F, 2
            if n == 126 and len(buf) >= 4:
                n, at = int.from_bytes(buf[2:4], "big"), 4
            if n != 126 and len(buf) >= at + n:
                return buf[0], buf[at:at + n], buf[at + n:]
        chunk = s.recv(65536)
        if not chunk:
            raise SystemExit("server closed a connection")
        buf += chunk


def main(port, n, mode):
    offer = OFFERS[mode]
    socks = []
    for i in range(n):
        s = socket.socket()
        s.bind(("127.0.0.%d" % (100 + i // 50), 0))
        s.connect(("127.0.0.1", port))
        ext = f"Sec-WebSocket-Extensions: {offer}\r\n" if offer else ""
        s.sendall(("GET /echo HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                   f"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{ext}\r\n").encode())
        head = b""
        while b"\r\n\r\n" not in head:
            head += s.recv(4096)
        head, rest = head.split(b"\r\n\r\n", 1)
        if not head.startswith(b"HTTP/1.1 101") or (offer is not None) != (b"permessage-deflate" in head):
            raise SystemExit(f"unexpected answer: {head[:200]!r}")
        body = message(i)
        s.sendall(frame(body, offer is not None))
        first, echoed, _ = read_frame(s, rest)
        got = zlib.decompressobj(-15).decompress(echoed + b"\0\0\xff\xff") if first & 0x40 else echoed
        if got != body:
            raise SystemExit("the echo differs")
        socks.append(s)
    print("ready", flush=True)
    sys.stdin.read()


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3])
