#!/usr/bin/env python3
"""Reads `heaptrack_print --print-peaks` on stdin and prints the allocation sites alive at the
heap's peak as a markdown table: bytes, bytes per connection (argument 1: the connections open),
and where (the allocating function, then the first frames of our code or of the crate).

usage: heaptrack_print ... --print-peaks 1 | heap-table.py CONNECTIONS"""
import re
import sys

connections = max(int(sys.argv[1]), 1)
units = {"B": 1, "K": 1e3, "M": 1e6, "G": 1e9}


def size(text):
    m = re.match(r"([\d.]+)([KMG]?)", text)
    return float(m.group(1)) * units.get(m.group(2) or "B", 1)


sites, peak = [], None
for line in sys.stdin:
    head = re.match(r"^(\S+) consumed over (\d+) calls from", line)
    if head:
        sites.append([size(head.group(1)), int(head.group(2)), []])
        continue
    total = re.match(r"^peak heap memory consumption: (\S+)", line)
    if total:
        peak = size(total.group(1))
        continue
    if sites and len(sites[-1][2]) < 3:
        frame = re.search(r"at (src/\S+|\S*/registry/src/[^/]+/([^/]+/src/\S+))", line)
        if frame:
            sites[-1][2].append(frame.group(2) or frame.group(1))
        elif not sites[-1][2]:
            name = re.match(r"^\s+([A-Za-z_][\w:<>]*)\s*$", line)
            if name:
                sites[-1][2].append(name.group(1))
print(f"peak heap {peak / 1e6:.1f} MB, {peak / connections:,.0f} B per connection ({connections} open)\n" if peak else "")
print("| at the peak | per connection | allocations | where |")
print("|---|---|---|---|")
for total, calls, where in sorted(sites, key=lambda s: -s[0]):
    if total / connections < 10:
        continue
    print(f"| {total / 1e6:.2f} MB | {total / connections:,.0f} B | {calls:,} | {' ← '.join(where)} |")
