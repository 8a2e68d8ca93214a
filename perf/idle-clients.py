"""Opens N WebSocket connections to /echo at once and holds them (reading and dropping what the
server sends) for S seconds: clients that arrive together, as after a restart or a network blip.

    python3 perf/idle-clients.py PORT N SECONDS

Connections come from 127.0.0.100 upwards, 50 per address, so that the server's per-address
caps (64 still sending their request, 1,000 in all) admit every one of them.
"""
import selectors
import socket
import sys
import time

UPGRADE = (b"GET /echo HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
           b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")


def main(port, n, seconds):
    socks = []
    for i in range(n):
        s = socket.socket()
        s.bind(("127.0.0.%d" % (100 + i // 50), 0))
        s.connect(("127.0.0.1", port))
        s.sendall(UPGRADE)
        socks.append(s)
    upgraded = sum(1 for s in socks if s.recv(4096).startswith(b"HTTP/1.1 101"))
    print(f"idle-clients: {upgraded} of {n} upgraded", flush=True)
    sel = selectors.DefaultSelector()
    for s in socks:
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ)
    end = time.time() + seconds
    while time.time() < end:
        for key, _ in sel.select(0.1):
            try:
                key.fileobj.recv(65536)
            except OSError:
                pass


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]))
