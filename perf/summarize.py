"""Turns the JSON files of a perf run into the markdown rows of perf/RESULTS.md."""
import glob
import json
import os
import sys


def load(path):
    with open(path) as f:
        return json.load(f)


def cpu_s_per_million(r):
    cpu = (r.get("server") or {}).get("cpuShare")
    rate = r.get("deliveredPerSec") or 0
    return cpu * 1e6 / rate if cpu is not None and rate else None


def fmt(v, spec=".2f"):
    return "–" if v is None else format(v, spec)


def compare(results, stamp, machine):
    rows = {}
    for path in sorted(glob.glob(os.path.join(results, f"compare-{stamp}-*.json"))):
        server, rate = os.path.basename(path)[len(f"compare-{stamp}-"):-5].rsplit("-", 1)
        rows.setdefault(server, {})[rate] = load(path)
    print(f"### relay comparison {stamp} ({machine})\n")
    print("| server | offered msgs/s/room | delivered/s | p50 ms | p99 ms | lost | server CPU % | CPU-s per 1M deliveries |")
    print("|---|---|---|---|---|---|---|---|")
    for server, by_rate in rows.items():
        for rate in sorted((k for k in by_rate if k != "rss"), key=float):
            r = by_rate[rate]
            cpu = (r.get("server") or {}).get("cpuShare")
            print(f"| {server} | {rate} | {r['deliveredPerSec']:.0f} | {r['latencyMs']['p50']:.2f} | {r['latencyMs']['p99']:.2f} | "
                  f"{r['lost'] + r['outOfOrder']} | {fmt(cpu and cpu * 100, '.0f')} | {fmt(cpu_s_per_million(r))} |")
    print("\n| server | saturation: highest delivered/s with p99 < 100 ms, nothing lost | RSS at 11,000 connections |")
    print("|---|---|---|")
    for server, by_rate in rows.items():
        ok = [r["deliveredPerSec"] for k, r in by_rate.items() if k != "rss" and r["latencyMs"]["p99"] < 100 and r["lost"] + r["outOfOrder"] == 0 and not r["errors"]]
        rss = (by_rate.get("rss", {}).get("server") or {}).get("rssKiB")
        print(f"| {server} | {fmt(max(ok) if ok else None, '.0f')} | {fmt(rss and rss / 1024, '.1f')} MiB |")


def capacity(path, machine):
    r = load(path)
    s = r.get("server") or {}
    lat = r["latencyMs"]
    print(f"| {machine} | {r['scenario']} | {r['connections']} | {r['deliveredPerSec']:.0f} | {lat['p50']:.2f} | {lat['p95']:.2f} | {lat['p99']:.2f} | {lat['max']:.1f} | "
          f"{r['lost']} | {sum(r['errors'].values())} | {fmt(s.get('cpuShare') and s['cpuShare'] * 100, '.0f')} | {fmt(s.get('rssKiB') and s['rssKiB'] / 1024, '.1f')} MiB | "
          f"{fmt(r['timerTickJitterMs']['p99'])} | {r['loadgenCpuShare'] * 100:.0f} |")


if __name__ == "__main__":
    if sys.argv[1] == "compare":
        compare(*sys.argv[2:5])
    else:
        capacity(sys.argv[2], sys.argv[3])
