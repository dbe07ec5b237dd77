#!/usr/bin/env python3
"""`moeserve serve` watched by a real Prometheus server (Debian's `prometheus` package) on
loopback: the exposition passes `promtool check metrics` and the official prometheus_client
parser, and after a known load the counters Prometheus scraped — tokens, requests, expert-cache
hits and misses, expert activations — equal what the load implies and what the server reports.
Usage: test_prometheus.py /path/to/moeserve"""
import json
import os
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

from serving import Server, check, finish, model_path

MOESERVE = sys.argv[1]


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
    check(False, "the prometheus package is installed (scripts/setup.sh installs it)")
    finish()

model = model_path("prom-olmoe-tiny-q4_k_m", "--arch", "olmoe", "--preset", "tiny", "--type", "q4_k_m", "--seed", "3")
srv = Server(MOESERVE, model, "--set", "kv.context_length=128", "--set", "cache.host_bytes=25%",
             "--set", "predictor.kind=pregate")
base = srv.base

tmp = tempfile.mkdtemp(prefix="moe-prom-")
prom_port = free_port()
with open(os.path.join(tmp, "prometheus.yml"), "w") as f:
    f.write(f"""global:
  scrape_interval: 1s
scrape_configs:
  - job_name: moeserve
    static_configs:
      - targets: ['{srv.host}:{srv.port}']
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
    rc = srv.stop()
    check(rc == 0, f"the server exits 0 on SIGTERM ({rc}; log tail: {srv.err[-500:]})")
    shutil.rmtree(tmp, ignore_errors=True)
finish()
