#!/usr/bin/env python3
"""Three `moeserve serve` replicas behind nginx (Debian's), on loopback, with the shipped
deploy/nginx-moeserve.conf (only its ports changed), driven by the real `openai` client:

- sticky sessions: every request of one X-Session-ID reaches one replica (counted on the
  replicas' own /metrics, whose samples carry replica="…"), different sessions spread out, and
  requests without a session go to all three;
- streaming through the proxy gives the same text as the unstreamed greedy answer;
- SIGKILL of a replica mid-run: the non-streamed requests it held (no byte sent yet) are retried
  by nginx on another replica and succeed, the streams it was sending end with an error the client
  sees, and new requests of its sessions go to the others;
- SIGTERM of a replica: its streams in flight complete, new requests of its sessions go elsewhere;
- counts of sent / completed / failed requests printed and asserted: nothing else is lost.
Also: deploy/kubernetes.yaml parses and keeps its promises (readiness on /health, a grace period
longer than the drain, the config inside passes `moeserve config check`), deploy/prometheus.yml
passes `promtool check config`.
Usage: test_replicas.py /path/to/moeserve"""
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

import openai
import yaml

from serving import ROOT, Nginx, Server, check, finish, model_path

MOESERVE = sys.argv[1]
model = model_path("tools-qwen3moe-tiny-q4_k_m-4k", "--arch", "qwen3moe", "--preset", "tiny", "--type", "q4_k_m",
                   "--seed", "17", "--n-ctx", "4096")
DEPLOY = os.path.join(ROOT, "deploy")


# ---- the manifests -----------------------------------------------------------------------------------
docs = list(yaml.safe_load_all(open(os.path.join(DEPLOY, "kubernetes.yaml"), encoding="utf-8")))
kinds = {d["kind"]: d for d in docs}
check(set(kinds) == {"ConfigMap", "Deployment", "Service"}, f"kubernetes.yaml: ConfigMap, Deployment, Service ({kinds})")
pod = kinds["Deployment"]["spec"]["template"]["spec"]
ctr = pod["containers"][0]
check(ctr["readinessProbe"]["httpGet"]["path"] == "/health", "readiness probe on /health")
cfg_json = json.loads(kinds["ConfigMap"]["data"]["moeserve.json"])
drain_s = int(cfg_json["server"]["drain_timeout_ms"].rstrip("s"))
check(pod["terminationGracePeriodSeconds"] > drain_s, "the grace period covers the drain")
check(kinds["Service"]["spec"]["selector"] == kinds["Deployment"]["spec"]["selector"]["matchLabels"],
      "the Service selects the Deployment's pods")
with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
    cfg_json["model"]["path"] = model
    json.dump(cfg_json, f)
r = subprocess.run([MOESERVE, "config", "check", f.name], capture_output=True, text=True)
os.unlink(f.name)
check(r.returncode == 0, f"the ConfigMap's moeserve.json passes `moeserve config check` ({r.stdout}{r.stderr})")
if shutil.which("promtool"):
    r = subprocess.run(["promtool", "check", "config", os.path.join(DEPLOY, "prometheus.yml")], capture_output=True,
                       text=True)
    check(r.returncode == 0, f"prometheus.yml passes promtool ({r.stdout}{r.stderr})")

# ---- three replicas and nginx ------------------------------------------------------------------------
replicas = [Server(MOESERVE, model, "--set", "kv.context_length=4096", "--set", "compute.threads=1",
                   "--set", f"server.replica=r{i}", "--set", "server.drain_timeout_ms=30s") for i in range(3)]
front = Nginx([r.port for r in replicas])
r = front.check_config()
check(r.returncode == 0, f"nginx -t accepts the config ({r.stderr[-500:]})")
front.start()
base = f"http://127.0.0.1:{front.port}/v1"
name = replicas[0].client().models.list().data[0].id


def client(session=None):
    return openai.OpenAI(base_url=base, api_key="x", max_retries=0, timeout=120,
                         default_headers={"X-Session-ID": session} if session else None)


def served(rep):
    """Chat requests a replica answered with 200, from its /metrics (every sample labelled)."""
    text = urllib.request.urlopen(rep.base + "/metrics", timeout=10).read().decode()
    m = re.search(r'^moeserve_http_requests_total\{replica="(r\d)",endpoint="/v1/chat/completions",code="200"\} '
                  r'(\d+)', text, re.M)
    return int(m.group(2)) if m else 0


counts = {"sent": 0, "completed": 0, "failed": 0}
lock = threading.Lock()


def ask(c, text, max_tokens=8, stream=False):
    """One request through the proxy: (text, finish_reason) or None when it failed."""
    with lock:
        counts["sent"] += 1
    try:
        msgs = [{"role": "user", "content": text}]
        if stream:
            parts, fr = [], None
            for ch in c.chat.completions.create(model=name, messages=msgs, max_tokens=max_tokens, temperature=0,
                                                stream=True):
                for ck in ch.choices:
                    parts.append(ck.delta.content or "")
                    fr = ck.finish_reason or fr
            out = ("".join(parts), fr)
            ok = fr is not None
        else:
            r = c.chat.completions.create(model=name, messages=msgs, max_tokens=max_tokens, temperature=0)
            out = (r.choices[0].message.content, r.choices[0].finish_reason)
            ok = True
    except (openai.APIError, OSError, ValueError) as e:  # a stream cut by a dying replica
        out, ok = ("", repr(e)), False
    with lock:
        counts["completed" if ok else "failed"] += 1
    return out if ok else None


# sticky sessions
sessions = [f"user-{i}" for i in range(12)]
home = {}
for s in sessions:
    before = [served(r) for r in replicas]
    for _ in range(3):
        ask(client(s), f"hello from {s}")
    delta = [served(r) - b for r, b in zip(replicas, before)]
    check(sorted(delta) == [0, 0, 3], f"session {s}: all three requests on one replica ({delta})")
    home[s] = delta.index(3)
check(len(set(home.values())) >= 2, f"sessions spread over the replicas ({home})")
before = [served(r) for r in replicas]
for i in range(9):
    ask(client(), f"no session {i}")
delta = [served(r) - b for r, b in zip(replicas, before)]
check(sum(delta) == 9 and all(d > 0 for d in delta), f"requests without a session reach every replica ({delta})")

# streaming through the proxy
plain = ask(client("user-0"), "stream me", max_tokens=24)
streamed = ask(client("user-0"), "stream me", max_tokens=24, stream=True)
check(plain is not None and streamed == plain, f"streamed through nginx = unstreamed ({streamed} vs {plain})")

# SIGKILL mid-run: the victim holds a non-streamed request and a stream of one of its sessions
victim = home["user-0"]
victim_sessions = [s for s in sessions if home[s] == victim]
results = {}


def run(key, *args, **kw):
    results[key] = ask(*args, **kw)


t_plain = threading.Thread(target=run, args=("plain", client(victim_sessions[0]), "long answer"),
                           kwargs={"max_tokens": 3000})
t_stream = threading.Thread(target=run, args=("stream", client(victim_sessions[-1]), "long stream"),
                            kwargs={"max_tokens": 3000, "stream": True})
t_plain.start()
t_stream.start()
time.sleep(0.6)  # both are being generated on the victim
replicas[victim].proc.send_signal(signal.SIGKILL)
replicas[victim].proc.wait(timeout=10)
t_plain.join(180)
t_stream.join(180)
check(results.get("plain") is not None and results["plain"][1] in ("length", "stop"),
      f"a non-streamed request the killed replica held is retried by nginx and answered ({results.get('plain')})")
check(results.get("stream") is None, f"a stream cut by the kill ends with an error the client sees "
                                     f"({results.get('stream')})")
alive = [i for i in range(3) if i != victim]
before = [served(replicas[i]) for i in alive]
for s in victim_sessions:
    check(ask(client(s), f"after the kill, {s}") is not None, f"{s} is served by another replica after the kill")
after = [served(replicas[i]) for i in alive]
check(sum(after) - sum(before) == len(victim_sessions), "the survivors answered them")

# SIGTERM: the replica drains its stream, nginx moves new requests away
draining = alive[0]
drain_sessions = [s for s in sessions if home[s] == draining] or sessions[:1]
# the whole answer, as an undisturbed replica gives it (greedy: the same on every replica)
reference = ask(client(), "drain me", max_tokens=1500, stream=True)
t_stream = threading.Thread(target=run, args=("drained", client(drain_sessions[0]), "drain me"),
                            kwargs={"max_tokens": 1500, "stream": True})
t_stream.start()
time.sleep(0.5)
t0 = time.time()
replicas[draining].proc.send_signal(signal.SIGTERM)
time.sleep(0.2)
moved = [ask(client(s), f"while draining, {s}") for s in drain_sessions]
check(all(m is not None for m in moved), f"requests of the draining replica's sessions succeed elsewhere ({moved})")
t_stream.join(180)
rc = replicas[draining].proc.wait(timeout=60)
check(reference is not None and results.get("drained") == reference,
      f"the draining replica's stream completed: the whole answer ({len((results.get('drained') or ('',))[0])} "
      f"of {len(reference[0]) if reference else '?'} characters)")
check(rc == 0, f"the drained replica exited cleanly ({rc})")

print(f"requests: sent {counts['sent']}, completed {counts['completed']}, failed {counts['failed']}")
check(counts["failed"] == 1 and counts["sent"] == counts["completed"] + counts["failed"],
      "exactly one request failed (the stream cut by SIGKILL); nothing else was lost")

front.stop()
for i, rep in enumerate(replicas):
    if rep.proc.poll() is None:
        check(rep.stop() == 0, f"replica r{i} stops cleanly")
finish()
