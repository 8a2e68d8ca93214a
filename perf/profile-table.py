#!/usr/bin/env python3
"""Where the server's CPU goes, by category, from a `perf record -g` file (perf/profile.sh).

usage: profile-table.py PERF.data

Each sample counts once, for the function it was in (self time, `perf report --no-children`);
the function's name picks its category, the first rule that matches. Kernel functions ([k]) are
the system calls and the loopback TCP path behind them."""
import re
import subprocess
import sys

# (category, pattern on the symbol), first match wins; kernel symbols are classed apart.
RULES = [
    ("JSON: parsing (simd-json, serde_json)", r"simd_json|serde_json::de|serde::de|from_str|from_slice|Deserialize"),
    ("JSON: encoding (serde_json, envelopes)", r"serde_json::ser|serde::ser|Serialize|to_writer|to_string|to_vec|format_escaped|itoa|ryu|envelope"),
    ("backfill log", r"event_log|EventLog"),
    ("presence", r"presence|Presence"),
    ("histograms and metrics", r"hdrhistogram|Histogram|metrics::"),
    ("timers and deadlines", r"deadlines|Deadline|timer|Timer|BinaryHeap"),
    ("game rules and room state", r"partyflow::game::|partyflow::rooms::|partyflow::session::"),
    ("WebSocket frames (decode, encode, deflate)", r"partyflow::ws::|tungstenite|flate2|zlib|inflate|deflate"),
    ("connection driver and shard turn", r"partyflow::runtime::"),
    ("glommio reactor and task wake-ups", r"glommio|io_uring|futures_lite|async_task|Waker|wake"),
    ("allocator (malloc, free)", r"malloc|free|realloc|calloc|_int_|tcache|arena"),
    ("memcpy, memmove, memset", r"memcpy|memmove|memset"),
    ("hashing (ahash, hashbrown)", r"ahash|hashbrown|Hash"),
]


def main():
    data = sys.argv[1]
    out = subprocess.run(
        ["perf", "report", "-i", data, "--stdio", "--no-children", "--sort", "sym", "-g", "none", "--percent-limit", "0"],
        capture_output=True, text=True, check=True,
    ).stdout
    totals = {}
    top = []
    for line in out.splitlines():
        m = re.match(r"\s*([\d.]+)%\s+\[([k.])\]\s+(.*\S)", line)
        if not m:
            continue
        pct, space, sym = float(m.group(1)), m.group(2), m.group(3)
        if space == "k":
            category = "kernel: syscalls, loopback TCP, scheduler"
        else:
            category = next((name for name, pattern in RULES if re.search(pattern, sym)), "other (user space)")
        totals[category] = totals.get(category, 0.0) + pct
        top.append((pct, sym))
    print(f"| where | share of the server's CPU |\n|---|---|")
    for name, pct in sorted(totals.items(), key=lambda kv: -kv[1]):
        print(f"| {name} | {pct:.1f} % |")
    print("\nTop functions (self):")
    for pct, sym in sorted(top, reverse=True)[:15]:
        print(f"  {pct:5.1f} %  {sym[:110]}")


if __name__ == "__main__":
    main()
