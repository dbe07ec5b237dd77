#!/usr/bin/env python3
"""The expert map: `GET /v1/experts/stats` and the `/dashboard` page that polls it, against
`moeserve serve` on the sim backend (a host tier at 25% and a device tier at half of it, the
pre-gating predictor on), driven by the real `openai` client.  The JSON is checked against what
the load implies (every token of every layer routed to n_expert_used experts) and against
/metrics; the page is loaded in headless Chromium (Debian's package), whose rendered DOM must show
the model's layers and experts and, after more requests, the new activation count.  A screenshot
lands in the build tree (docs/dashboard.png is one).  Usage: test_dashboard.py /path/to/moeserve"""
import json
import os
import re
import shutil
import subprocess
import sys
import urllib.error
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from serving import BUILD, Server, check, finish, model_path

MOESERVE = sys.argv[1]
KEY = "sk-dashboard-test"


def get(url, key=None, method="GET"):
    req = urllib.request.Request(url, method=method)
    if key:
        req.add_header("Authorization", "Bearer " + key)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.headers.get("Content-Type", ""), r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("Content-Type", ""), e.read().decode()


def stats(base, key=None):
    status, ctype, body = get(base + "/v1/experts/stats", key)
    check(status == 200 and ctype.startswith("application/json"), f"stats: {status} {ctype}")
    return json.loads(body)


def dump_dom(url):
    """The page after its scripts ran for 3 s of virtual time (three polls or more)."""
    r = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=3000",
                        "--dump-dom", url], capture_output=True, text=True, timeout=120)
    check(r.returncode == 0, f"chromium --dump-dom exits 0 ({r.returncode})")
    return r.stdout


model = model_path("dash-qwen3moe-tiny-q4_k_m", "--arch", "qwen3moe", "--preset", "tiny", "--type", "q4_k_m",
                   "--seed", "5")
srv = Server(MOESERVE, model, "--set", "compute.backend=sim", "--set", "cache.host_bytes=25%",
             "--set", "cache.device_bytes=50%", "--set", "predictor.kind=pregate")
base, client = srv.base, srv.client()
name = client.models.list().data[0].id

# ---- the page --------------------------------------------------------------------------------------
status, ctype, page = get(base + "/dashboard")
check(status == 200 and ctype.startswith("text/html"), f"/dashboard is HTML ({status} {ctype})")
check("expert map" in page and "/v1/experts/stats" in page, "the page polls the stats endpoint")
check(get(base + "/dashboard", method="HEAD")[0] == 200, "HEAD /dashboard")
check(get(base + "/dashboard", method="POST")[0] == 405, "POST /dashboard is 405")
check(get(base + "/v1/experts/stats", method="POST")[0] == 405, "POST /v1/experts/stats is 405")

# ---- the numbers before and after a known load --------------------------------------------------------
s0 = stats(base)
L, E, K = s0["n_layer"], s0["n_expert"], s0["n_expert_used"]
check(s0["ready"] and s0["arch"] == "qwen3moe", "ready, the model's architecture")
check(len(s0["activations"]) == L and all(len(r) == E for r in s0["activations"]), "activations: L x E")
check(sum(map(sum, s0["activations"])) == 0 and s0["engine"]["tokens"] == 0, "nothing routed before requests")
check(set(s0["tiers"]) == {"host", "device"} and set(s0["resident"]) == {"host", "device"},
      "a host and a device tier on sim")
check(all(len(r) == E and set(r) <= {"0", "1"} for t in s0["resident"].values() for r in t) and
      all(len(t) == L for t in s0["resident"].values()), "residency: one 0/1 string of E per layer and tier")
check(s0["predictor"]["kind"] == "pregate" and [p["layer"] for p in s0["predictor"]["layers"]] == list(range(1, L)),
      "predictor: one entry per layer after the first")

for i in range(3):
    client.completions.create(model=name, prompt=f"request {i}: the quick brown fox", max_tokens=12,
                              temperature=0)
s1 = stats(base)
tokens = s1["engine"]["tokens"]
check(tokens > 0 and s1["engine"]["steps"] > 0, f"the engine counted its work ({tokens} tokens)")
for il in range(L):
    check(sum(s1["activations"][il]) == tokens * K,
          f"layer {il}: {sum(s1['activations'][il])} activations = {tokens} tokens x top-{K}")
for tier in ("host", "device"):
    t = s1["tiers"][tier]
    held = sum(r.count("1") for r in s1["resident"][tier])
    check(held == t["resident_experts"] and 0 < held <= t["capacity_experts"],
          f"{tier}: the map holds {held} experts, the tier says {t['resident_experts']} of {t['capacity_experts']}")
    check(t["hits"] + t["misses"] > 0 and abs(t["hit_rate"] - t["hits"] / (t["hits"] + t["misses"])) < 1e-6,
          f"{tier}: hit rate from its counters")
check(s1["tiers"]["host"]["bytes_read"] > 0, "the host tier read from the file")

# the same counters as /metrics (Prometheus' parser)
samples = {}
for fam in text_string_to_metric_families(get(base + "/metrics")[2]):
    for smp in fam.samples:
        samples[(smp.name, frozenset(smp.labels.items()))] = smp.value
for il in range(L):
    for e in range(E):
        v = samples.get(("moeserve_expert_activations_total", frozenset({("layer", str(il)), ("expert", str(e))})))
        check(v == s1["activations"][il][e], f"layer {il} expert {e}: /metrics {v} = map {s1['activations'][il][e]}")
# every series the shipped Grafana dashboard queries exists
from serving import ROOT  # noqa: E402
with open(os.path.join(ROOT, "docs", "grafana", "moeserve.json")) as f:
    grafana = json.load(f)
names = {n for (n, _) in samples}
for panel in grafana["panels"]:
    for target in panel["targets"]:
        for metric in re.findall(r"moeserve_[a-z_]+", target["expr"]):
            check(metric in names, f"Grafana panel '{panel['title']}': {metric} is exported")
for p in s1["predictor"]["layers"]:
    v = samples.get(("moeserve_predictor_recall_ratio",
                     frozenset({("predictor", "pregate"), ("layer", str(p["layer"]))})))
    check(v is not None and abs(v - p["recall"]) < 1e-6, f"layer {p['layer']}: recall {p['recall']} = /metrics {v}")

# ---- the page in a browser ----------------------------------------------------------------------------
chromium = shutil.which("chromium")
check(chromium is not None, "chromium is installed (scripts/setup.sh installs it)")
if chromium:
    dom = dump_dom(base + "/dashboard")
    canvas = re.search(r'<canvas id="map"[^>]*data-layers="(\d+)" data-experts="(\d+)" data-activations="(\d+)"', dom)
    check(canvas is not None, "the rendered page has the map")
    if canvas:
        check((int(canvas[1]), int(canvas[2])) == (L, E), f"the map is {canvas[1]} x {canvas[2]} (model {L} x {E})")
        check(int(canvas[3]) == sum(map(sum, s1["activations"])), "the map shows the activations so far")
    check(len(re.findall(r'<tr data-layer="\d+">', dom)) == L, "a table row per layer")
    check(re.search(r'data-updated="[2-9]\d*"', dom) is not None, "the page polled more than once")
    client.completions.create(model=name, prompt="one more request", max_tokens=8, temperature=0)
    total = sum(map(sum, stats(base)["activations"]))
    dom = dump_dom(base + "/dashboard")
    canvas = re.search(r'data-activations="(\d+)"', dom)
    check(canvas is not None and int(canvas[1]) == total and total > sum(map(sum, s1["activations"])),
          "after another request the page shows the new count")
    shot = os.path.join(BUILD, "dashboard.png")
    r = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=3000",
                        "--window-size=1000,560", f"--screenshot={shot}", base + "/dashboard"],
                       capture_output=True, text=True, timeout=120)
    check(r.returncode == 0 and os.path.getsize(shot) > 1000, "a screenshot of the page")
srv.stop()

# ---- with API keys: the page opens without one, the data needs one -----------------------------------
srv = Server(MOESERVE, model, "--set", f'server.api_keys=["{KEY}"]')
check(get(srv.base + "/dashboard")[0] == 200, "/dashboard opens without a key (it holds no data)")
check(get(srv.base + "/v1/experts/stats")[0] == 401, "/v1/experts/stats without the key is 401")
check(get(srv.base + "/v1/experts/stats", KEY)[0] == 200, "/v1/experts/stats with the key")
srv.stop()
finish()
