#!/usr/bin/env python3
"""`moeserve serve` watched by a real Prometheus server (Debian's `prometheus` package) on
loopback: the exposition passes `promtool check metrics` and the official prometheus_client
parser, and after a known load the counters Prometheus scraped — tokens, requests, expert-cache
hits and misses, expert activations — equal what the load implies and what the server reports.
Usage: test_prometheus.py /path/to/moeserve"""
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request

import openai
from prometheus_client.parser import text_string_to_metric_families

ROOT = os.environ.get("MOE_SOURCE_ROOT", os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
BUILD = os.environ.get("MOE_BUILD_ROOT", ".")
MOESERVE = sys.argv[1]
passed = failed = 0


def check(cond, what):
    global passed, failed
    if cond:
        passed += 1
    else:
        failed += 1
        print(f"FAIL: {what}", flush=True)


def finish():
    print(f"{passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


def model_path(name, *args):
    d = os.path.join(BUILD, "test-models")
    os.makedirs(d, exist_ok=True)
    path = os.path.join(d, name + ".gguf")
    if not os.path.exists(path):
        tmp = f"{path}.{os.getpid()}"
        subprocess.run([sys.executable, os.path.join(ROOT, "tools", "gen_model.py"), *args, "-o", tmp],
                       check=True, capture_output=True)
        os.rename(tmp, path)
    return path


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url):
    with urllib.request.urlopen(url, timeout=10) as r:
        return r.read().decode()


def samples(text):
    """{(name, frozenset(labels)): value} from an exposition, via the official parser."""
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


prometheus = shutil.which("prometheus")
promtool = shutil.which("promtool")
if not prometheus or not promtool:
    print("FAIL: the prometheus package is not installed (scripts/setup.sh installs it)")
    failed += 1
    finish()

model = model_path("prom-olmoe-tiny-q4_k_m", "--arch", "olmoe", "--preset", "tiny", "--type", "q4_k_m", "--seed", "3")
srv = subprocess.Popen([MOESERVE, "serve", "--model", model, "--port", "0", "--set", "compute.threads=2",
                        "--set", "kv.context_length=128", "--set", "cache.host_bytes=25%",
                        "--set", "predictor.kind=pregate"],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE)
line = srv.stdout.readline().decode()
m = re.search(r"listening on ([0-9.]+):(\d+)", line)
assert m, f"no listening line: {line!r}"
base = f"http://{m.group(1)}:{m.group(2)}"
deadline = time.time() + 60
while time.time() < deadline:
    try:
        if get(base + "/health"):
            break
    except (urllib.error.URLError, OSError):
        time.sleep(0.05)

tmp = tempfile.mkdtemp(prefix="moe-prom-")
prom_port = free_port()
with open(os.path.join(tmp, "prometheus.yml"), "w") as f:
    f.write(f"""global:
  scrape_interval: 1s
scrape_configs:
  - job_name: moeserve
    static_configs:
      - targets: ['{m.group(1)}:{m.group(2)}']
""")
prom = subprocess.Popen([prometheus, f"--config.file={tmp}/prometheus.yml", f"--storage.tsdb.path={tmp}/data",
                         f"--web.listen-address=127.0.0.1:{prom_port}"],
                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
api = f"http://127.0.0.1:{prom_port}/api/v1"


def query(expr):
    r = json.loads(get(f"{api}/query?" + urllib.parse.urlencode({"query": expr})))
    res = r["data"]["result"]
    return float(res[0]["value"][1]) if res else None


try:
    # A known load: completions with fixed max_tokens and ignore-able EOS (greedy, stop=None).
    client = openai.OpenAI(base_url=base + "/v1", api_key="unused", max_retries=0, timeout=60)
    name = client.models.list().data[0].id
    prompt_tokens = completion_tokens = 0
    n_requests = 6
    for i in range(n_requests):
        r = client.completions.create(model=name, prompt=f"Request number {i} says hello", max_tokens=12,
                                      temperature=0)
        prompt_tokens += r.usage.prompt_tokens
        completion_tokens += r.usage.completion_tokens
    check(completion_tokens > 0, "the load generated tokens")

    text = get(base + "/metrics")
    p = subprocess.run([promtool, "check", "metrics"], input=text.encode(), capture_output=True)
    check(p.returncode == 0, f"promtool check metrics passes ({p.stdout.decode()[-400:]}{p.stderr.decode()[-400:]})")
    direct = samples(text)
    check(direct.get(("moeserve_generation_tokens_total", frozenset())) == completion_tokens,
          f"generated tokens in /metrics equal the responses' usage ({direct.get(('moeserve_generation_tokens_total', frozenset()))} vs {completion_tokens})")
    check(direct.get(("moeserve_prompt_tokens_total", frozenset())) == prompt_tokens,
          "prompt tokens in /metrics equal the responses' usage")
    host = frozenset({("tier", "host")})
    hits = direct.get(("moeserve_expert_cache_hits_total", host))
    misses = direct.get(("moeserve_expert_cache_misses_total", host))
    check(misses is not None and misses > 0, f"a quarter-size cache misses ({misses})")
    acts = sum(v for (n, l), v in direct.items() if n == "moeserve_expert_activations_total")
    check(acts > 0, "expert activations are counted")
    precision = [v for (n, l), v in direct.items() if n == "moeserve_predictor_precision_ratio"]
    check(precision and all(0.0 <= v <= 1.0 for v in precision), f"predictor precision per layer in [0, 1] ({precision})")

    # Prometheus scrapes the same values once the load has stopped.
    want = {
        "moeserve_generation_tokens_total": completion_tokens,
        "moeserve_prompt_tokens_total": prompt_tokens,
        'moeserve_http_requests_total{endpoint="/v1/completions",code="200"}': n_requests,
        'moeserve_expert_cache_hits_total{tier="host"}': hits,
        'moeserve_expert_cache_misses_total{tier="host"}': misses,
        "sum(moeserve_expert_activations_total)": acts,
    }
    got = {}
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            got = {k: query(k) for k in want}
        except (urllib.error.URLError, OSError, KeyError, ValueError):
            got = {}
        if got and all(got[k] == v for k, v in want.items()):
            break
        time.sleep(0.5)
    for k, v in want.items():
        check(got.get(k) == v, f"Prometheus scraped {k} = {v} (got {got.get(k)})")
    up = query('up{job="moeserve"}')
    check(up == 1, f"Prometheus sees the target up ({up})")
finally:
    prom.send_signal(signal.SIGTERM)
    try:
        prom.wait(timeout=30)
    except subprocess.TimeoutExpired:
        prom.kill()
    srv.send_signal(signal.SIGTERM)
    try:
        rc = srv.wait(timeout=60)
    except subprocess.TimeoutExpired:
        srv.kill()
        rc = -9
    check(rc == 0, f"the server exits 0 on SIGTERM ({rc})")
    shutil.rmtree(tmp, ignore_errors=True)
finish()
