#!/usr/bin/env python3
"""Memory per connection of the test command's party smoke run, against the figure recorded in
perf/party-smoke-rss-bytes: fails when it grows past twice that. A ratio of two memory figures,
so the machine's speed and load do not enter it.

usage: check-smoke-rss.py REPORT.json IDLE_RSS_KIB RECORDED_FILE

Per connection: the server's RSS at the end of the measured window (the load generator's
--server-pid reading, every connection still open) less its RSS before the run, divided by the
connections."""
import json
import sys

report, idle_kib, recorded_file = sys.argv[1], int(sys.argv[2]), sys.argv[3]
r = json.load(open(report))
end_kib, connections = r["server"]["rssKiB"], r["connections"]
per_connection = (end_kib - idle_kib) * 1024 / connections
recorded = float(open(recorded_file).read().split()[0])
print(f"party smoke: RSS {idle_kib} KiB idle, {end_kib} KiB with {connections} connections: "
      f"{per_connection:.0f} B per connection (recorded {recorded:.0f} B, limit {2 * recorded:.0f} B)")
if per_connection > 2 * recorded:
    sys.exit(f"memory per connection grew past twice the recorded figure ({recorded_file})")
