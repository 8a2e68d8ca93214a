#!/usr/bin/env python3
"""Memory per connection of the test command's party smoke run, against the figure recorded in
perf/party-smoke-rss-bytes: fails when it grows past twice that. A ratio of two memory figures,
so the machine's speed and load do not enter it.

usage: check-smoke-rss.py REPORT.json RECORDED_FILE

Per connection: the load generator's addedBytesPerConnection (with --server-pid): the server's
RSS at the end of the measured window, every connection still open, less its RSS before the
run, divided by the connections."""
import json
import sys

report, recorded_file = sys.argv[1], sys.argv[2]
server = json.load(open(report))["server"]
per_connection = server["addedBytesPerConnection"]
recorded = float(open(recorded_file).read().split()[0])
print(f"party smoke: RSS {server['rssBeforeKiB']} KiB before, {server['rssKiB']} KiB at the end: "
      f"{per_connection:.0f} B per connection (recorded {recorded:.0f} B, limit {2 * recorded:.0f} B)")
if per_connection > 2 * recorded:
    sys.exit(f"memory per connection grew past twice the recorded figure ({recorded_file})")
