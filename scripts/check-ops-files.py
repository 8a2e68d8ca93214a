#!/usr/bin/env python3
"""Checks the operations files in tuning/ against the real server.

usage: check-ops-files.py METRICS_FILE PARTYFLOW_BINARY

- tuning/prometheus-alerts.yml passes `promtool check rules`, and its unit tests
  (tuning/prometheus-alerts.test.yml) pass `promtool test rules`;
- every query of tuning/grafana-dashboard.json is valid PromQL (checked by promtool as recording
  rules, with Grafana's variables filled in);
- every metric the alerts and the dashboard use exists in METRICS_FILE (a /metrics scrape);
- tuning/partyflow.service passes `systemd-analyze verify` (where systemd is installed) with its
  binary path pointed at PARTYFLOW_BINARY;
- every key of tuning/sysctl.d/60-partyflow.conf exists on this kernel.
"""
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
TUNING = os.path.join(ROOT, "tuning")
failures = []


def check(ok, what):
    print(("ok    " if ok else "FAIL  ") + what)
    if not ok:
        failures.append(what)


def run(args):
    out = subprocess.run(args, capture_output=True, text=True)
    return out.returncode == 0, (out.stdout + out.stderr).strip()


metrics_file, binary = sys.argv[1], sys.argv[2]
exposed = set()
for line in open(metrics_file):
    if line.startswith("# TYPE "):
        name, kind = line.split()[2:4]
        exposed.add(name)
        if kind == "histogram":
            exposed.update({name + "_bucket", name + "_sum", name + "_count"})

alerts = os.path.join(TUNING, "prometheus-alerts.yml")
ok, said = run(["promtool", "check", "rules", alerts])
check(ok, f"promtool check rules tuning/prometheus-alerts.yml: {said.splitlines()[-1] if said else ''}")
ok, said = run(["promtool", "test", "rules", os.path.join(TUNING, "prometheus-alerts.test.yml")])
check(ok, "promtool test rules tuning/prometheus-alerts.test.yml (the alerts fire on made-up series)" + ("" if ok else f": {said}"))

dashboard = json.load(open(os.path.join(TUNING, "grafana-dashboard.json")))
exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
check(len(exprs) >= 15, f"the dashboard has {len(dashboard['panels'])} panels and {len(exprs)} queries")
with tempfile.TemporaryDirectory() as tmp:
    rules = os.path.join(tmp, "dashboard-queries.yml")
    with open(rules, "w") as f:
        f.write("groups:\n  - name: dashboard\n    rules:\n")
        for i, e in enumerate(exprs):
            filled = e.replace("$__rate_interval", "1m").replace("$instance", ".*")
            f.write(f"      - record: dashboard:query_{i}\n        expr: {json.dumps(filled)}\n")
    ok, said = run(["promtool", "check", "rules", rules])
    check(ok, f"every dashboard query is valid PromQL: {said.splitlines()[-1] if said else ''}")

used = set()
for text in exprs + [open(alerts).read()]:
    used.update(re.findall(r"\b((?:partyflow|process)_[a-z_]+)", text))
missing = sorted(used - exposed)
check(not missing, f"{len(used)} metrics used by the alerts and the dashboard all exist in /metrics" + (f"; missing: {missing}" if missing else ""))

if shutil.which("systemd-analyze"):
    with tempfile.TemporaryDirectory() as tmp:
        unit = os.path.join(tmp, "partyflow.service")
        text = open(os.path.join(TUNING, "partyflow.service")).read().replace("/usr/bin/partyflow", os.path.abspath(binary))
        open(unit, "w").write(text)
        ok, said = run(["systemd-analyze", "verify", unit])
        check(ok and not said, "systemd-analyze verify tuning/partyflow.service" + (f": {said}" if said else ""))
else:
    print("skip  systemd-analyze is not installed: tuning/partyflow.service not verified")

# A leading "-" marks a key older kernels may lack (sysctl skips it there).
keys = [l.split("=")[0].strip() for l in open(os.path.join(TUNING, "sysctl.d", "60-partyflow.conf")) if "=" in l and not l.startswith("#")]
absent = [k for k in keys if not k.startswith("-") and not os.path.exists("/proc/sys/" + k.replace(".", "/"))]
check(not absent, f"the {len(keys)} keys of tuning/sysctl.d/60-partyflow.conf exist on this kernel" + (f"; absent: {absent}" if absent else ""))

sys.exit(1 if failures else 0)
