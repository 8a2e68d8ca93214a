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


def runs(results, script, stamp):
    """(setup, rate, report) of every `SCRIPT-STAMP-SETUP-RATE.json` one run of a script wrote."""
    prefix = f"{script}-{stamp}-"
    for path in sorted(glob.glob(os.path.join(results, f"{prefix}*.json"))):
        setup, rate = os.path.basename(path)[len(prefix):-5].rsplit("-", 1)
        yield setup, rate, load(path)


def latencies(r, quantiles):
    """A report's latency percentiles in ms, as "a / b / c"."""
    return " / ".join(f"{r['latencyMs'][q]:.2f}" for q in quantiles)


def rss_per_connection(r):
    s = r.get("server") or {}
    return s.get("rssKiB") and s["rssKiB"] * 1024 / max(r["connections"], 1)


def table(title, *columns):
    """Prints a markdown heading and the head of a table with these columns."""
    print(f"### {title}\n")
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))


def compare(results, stamp, machine):
    rows = {}
    for server, rate, report in runs(results, "compare", stamp):
        rows.setdefault(server, {})[rate] = report
    table(f"relay comparison {stamp} ({machine})", "server", "offered msgs/s/room", "delivered/s", "p50 ms", "p99 ms", "lost", "server CPU %", "CPU-s per 1M deliveries")
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


def cross_instance(results, stamp, machine):
    by_rate = {}
    for setup, rate, report in runs(results, "cross-instance", stamp):
        by_rate.setdefault(rate, {})[setup] = report
    table(f"relay across instances {stamp} ({machine})", "deliveries/s", "two instances p50 / p95 / p99 / max ms", "lost (dropped at the instances)",
          "Redis commands/s, CPU", "one instance p50 / p95 / p99 / max ms", "lost")
    lat = lambda r: " / ".join(f"{r['latencyMs'][q]:.2f}" for q in ("p50", "p95", "p99", "max"))
    lost = lambda r: r["lost"] + r["outOfOrder"] + r["duplicated"]
    for rate in sorted(by_rate, key=float):
        two, one = by_rate[rate].get("two"), by_rate[rate].get("one")
        if not two or not one:
            continue
        redis = two.get("redis") or {}
        print(f"| {two['deliveredPerSec']:,.0f} | {lat(two)} | {lost(two)} ({fmt(two.get('relayDroppedAtInstances'), ',')}) | {fmt(redis.get('commandsPerSec'), ',.0f')}, "
              f"{fmt(redis.get('cpuShare') and redis['cpuShare'] * 100, '.1f')} % | {lat(one)} | {lost(one)} |")
    ok = [r["two"]["deliveredPerSec"] for r in by_rate.values() if "two" in r and r["two"]["latencyMs"]["p99"] < 100 and lost(r["two"]) == 0]
    print(f"\nHighest rate across instances with p99 < 100 ms and nothing lost: {fmt(max(ok) if ok else None, ',.0f')} deliveries/s")


def queue_delay(results, stamp, machine):
    table(f"relay 100 x 11 at 57 msg/s per room, queue delay and tail {stamp} ({machine})", "server", "run", "delivered/s",
          "end-to-end p50 / p99 / p99.9 / max ms", "outbound queue delay p50 / p99 / p99.9 (bucket bounds, ms)", "poll-budget deferrals",
          "server CPU-µs per delivery")
    for server, run, r in sorted(runs(results, "queue-delay", stamp), key=lambda x: (x[0], int(x[1]))):
        lat = " / ".join(f"{r['latencyMs'][q]:.2f}" for q in ("p50", "p99", "p99.9", "max"))
        s = r.get("server") or {}
        qd = (s.get("latencyBucketsMs") or {}).get("partyflow_outbound_queue_delay_seconds") or {}
        qd = " / ".join(fmt(qd.get(q), "g") for q in ("p50", "p99", "p999")) if qd.get("count") else "–"
        print(f"| {server} | {run} | {r['deliveredPerSec']:.0f} | {lat} | {qd} | {fmt(r.get('pollBudgetDeferrals'), 'd')} | {fmt(s.get('cpuUsPerDelivery'))} |")


def ab(results, stamp, machine):
    table(f"before (base) and after (new), alternating {stamp} ({machine})", "scenario", "build", "run", "delivered/s", "server CPU %",
          "CPU-µs per delivery", "p50 / p95 / p99 / p99.9 ms", "RSS per connection (added by it)", "queue delay p99 / p99.9 ms", "lost", "errors")
    rows = []
    for setup, run, r in runs(results, "ab", stamp):
        scenario, build = setup.rsplit("-", 1)
        rows.append((scenario, build, int(run), r))
    for scenario, build, run, r in sorted(rows, key=lambda x: (x[0], x[1], x[2])):
        s = r.get("server") or {}
        lat, per_conn = latencies(r, ("p50", "p95", "p99", "p99.9")), rss_per_connection(r)
        qd = (s.get("latencyBucketsMs") or {}).get("partyflow_outbound_queue_delay_seconds") or {}
        qd = " / ".join(fmt(qd.get(q), "g") for q in ("p99", "p999")) if qd.get("count") else "–"
        print(f"| {scenario} | {build} | {run} | {r['deliveredPerSec']:.0f} | {fmt(s.get('cpuShare') and s['cpuShare'] * 100, '.1f')} | "
              f"{fmt(s.get('cpuUsPerDelivery'))} | {lat} | {fmt(per_conn, ',.0f')} B ({fmt(s.get('addedBytesPerConnection'), ',.0f')} B) | {qd} | {r['lost'] + r['outOfOrder'] + r['duplicated']} | {sum(r['errors'].values())} |")


def pubsub(results, stamp, machine):
    table(f"/pubsub and /relay at the same load {stamp} ({machine})", "endpoint", "msgs/s per room", "run", "delivered/s", "server CPU %",
          "CPU-µs per delivery", "p50 / p99 / p99.9 ms", "lost", "errors")
    rows = []
    for setup, rate, r in runs(results, "pubsub", stamp):
        endpoint, run = setup.rsplit("_", 1)
        rows.append((endpoint, int(rate), int(run), r))
    names = {"relay": "/relay", "pubsub": "/pubsub", "two": "/pubsub, two instances + Redis", "one": "/pubsub, one instance"}
    for endpoint, rate, run, r in sorted(rows, key=lambda x: (x[1], x[0], x[2])):
        s = r.get("server") or {}
        lat = latencies(r, ("p50", "p99", "p99.9"))
        print(f"| {names.get(endpoint, endpoint)} | {rate} | {run} | {r['deliveredPerSec']:.0f} | {fmt(s.get('cpuShare') and s['cpuShare'] * 100, '.1f')} | "
              f"{fmt(s.get('cpuUsPerDelivery'))} | {lat} | {r['lost'] + r['outOfOrder'] + r['duplicated']} | {sum(r['errors'].values())} |")


def compression(results, stamp, machine):
    table(f"compression off and on, back to back {stamp} ({machine})", "scenario", "compression", "run", "delivered/s", "server CPU %",
          "CPU-µs per delivery", "wire bytes per delivery", "p50 / p95 / p99 ms", "RSS per connection", "lost", "errors")
    rows = []
    for setup, run, r in runs(results, "compression", stamp):
        scenario, mode = setup.rsplit("_", 1)
        rows.append((scenario, mode, int(run), r))
    for scenario, mode, run, r in sorted(rows, key=lambda x: (x[0], x[2], x[1])):
        s = r.get("server") or {}
        lat, per_conn = latencies(r, ("p50", "p95", "p99")), rss_per_connection(r)
        print(f"| {scenario} | {mode} | {run} | {r['deliveredPerSec']:.0f} | {fmt(s.get('cpuShare') and s['cpuShare'] * 100, '.1f')} | "
              f"{fmt(s.get('cpuUsPerDelivery'))} | {fmt(r.get('wireBytesPerDelivery'), '.1f')} | {lat} | {fmt(per_conn, ',.0f')} B | "
              f"{r['lost'] + r['outOfOrder'] + r['duplicated']} | {sum(r['errors'].values())} |")


if __name__ == "__main__":
    if sys.argv[1] == "compare":
        compare(*sys.argv[2:5])
    elif sys.argv[1] == "pubsub":
        pubsub(*sys.argv[2:5])
    elif sys.argv[1] == "compression":
        compression(*sys.argv[2:5])
    elif sys.argv[1] == "ab":
        ab(*sys.argv[2:5])
    elif sys.argv[1] == "queue-delay":
        queue_delay(*sys.argv[2:5])
    elif sys.argv[1] == "cross-instance":
        cross_instance(*sys.argv[2:5])
    else:
        capacity(sys.argv[2], sys.argv[3])
