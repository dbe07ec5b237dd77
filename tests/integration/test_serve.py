#!/usr/bin/env python3
"""`moeserve serve` on a real (tiny, seeded) model, driven by the real `openai` Python client and
raw sockets on a free loopback port.

What it checks against what:
- greedy completions equal `moeserve generate` on the same prompt (the one-sequence path with no
  scheduler), and streamed text equals the non-streamed text;
- the prompt token counts in `usage` equal the count `moeserve generate` logs for the same text
  or chat;
- 64 concurrent streaming clients each get exactly the text the same request gets alone
  (continuous batching is batch-invariant), complete and well-formed, with no file descriptor
  growth across rounds;
- errors arrive as the client library's exception types; a client that vanishes mid-stream does
  not disturb the others; SIGTERM ends the process with status 0.
Usage: test_serve.py /path/to/moeserve"""
import concurrent.futures
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

import openai

import serving
from serving import Server as _Server, check, model_path

MOESERVE = sys.argv[1]


def generate(model, *args):
    p = subprocess.run([MOESERVE, "generate", "--model", model, "--threads", "2", *args],
                       capture_output=True, timeout=300)
    err = p.stderr.decode(errors="replace")
    assert p.returncode == 0, err
    out = p.stdout.decode(errors="replace")
    m = re.search(r"prompt: (\d+) tokens", err)
    return out[:-1] if out.endswith("\n") else out, int(m.group(1)) if m else -1


def Server(model, *extra):
    return _Server(MOESERVE, model, *extra)


def stream_chat(client, name, messages, max_tokens):
    parts, chunks, finish = [], 0, None
    first_role = None
    for ch in client.chat.completions.create(model=name, messages=messages, max_tokens=max_tokens,
                                             temperature=0, stream=True):
        chunks += 1
        if ch.object != "chat.completion.chunk":
            raise AssertionError(ch.object)
        if not ch.choices:
            continue
        d = ch.choices[0].delta
        if first_role is None and d.role:
            first_role = d.role
        if d.content:
            parts.append(d.content)
        if ch.choices[0].finish_reason:
            finish = ch.choices[0].finish_reason
    return "".join(parts), finish, first_role, chunks


model = model_path("qwen3moe-tiny-q8_0", "--arch", "qwen3moe", "--preset", "tiny", "--type", "q8_0", "--seed", "1")
name = os.path.splitext(os.path.basename(model))[0]
srv = Server(model)
client = srv.client()

# --- models ---------------------------------------------------------------------------------------
ids = [m.id for m in client.models.list().data]
check(ids == [name], f"/v1/models lists the served model ({ids})")

# --- completions: greedy equals the one-sequence path ---------------------------------------------
prompt = "The quick brown fox"
want, want_prompt_tokens = generate(model, "--prompt", prompt, "-n", "24")
r = client.completions.create(model=name, prompt=prompt, max_tokens=24, temperature=0)
check(r.choices[0].text == want, f"completion text equals `generate` ({r.choices[0].text!r} vs {want!r})")
check(r.usage.prompt_tokens == want_prompt_tokens,
      f"usage.prompt_tokens {r.usage.prompt_tokens} equals generate's {want_prompt_tokens}")
check(r.choices[0].finish_reason in ("stop", "length"), f"finish_reason {r.choices[0].finish_reason}")
if r.choices[0].finish_reason == "length":
    check(r.usage.completion_tokens == 24, f"length finish after max_tokens ({r.usage.completion_tokens})")
streamed = "".join(c.choices[0].text for c in client.completions.create(
    model=name, prompt=prompt, max_tokens=24, temperature=0, stream=True) if c.choices)
check(streamed == want, f"streamed completion equals the non-streamed one ({streamed!r})")

# --- chat -----------------------------------------------------------------------------------------
messages = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Say hi."}]
want_chat, want_chat_tokens = generate(model, "--chat", "--system", "You are terse.", "--prompt", "Say hi.",
                                       "-n", "20")
r = client.chat.completions.create(model=name, messages=messages, max_tokens=20, temperature=0)
check(r.object == "chat.completion" and r.choices[0].message.role == "assistant", "chat response shape")
check(r.choices[0].message.content == want_chat,
      f"chat content equals `generate --chat` ({r.choices[0].message.content!r} vs {want_chat!r})")
check(r.usage.prompt_tokens == want_chat_tokens,
      f"chat usage.prompt_tokens {r.usage.prompt_tokens} equals generate's {want_chat_tokens}")
text, finish, role, n_chunks = stream_chat(client, name, messages, 20)
check(text == want_chat and finish == r.choices[0].finish_reason and role == "assistant",
      f"streamed chat equals the non-streamed one ({text!r}, {finish}, {role})")
usage_chunks = [c for c in client.chat.completions.create(
    model=name, messages=messages, max_tokens=5, temperature=0, stream=True,
    stream_options={"include_usage": True}) if c.usage]
check(len(usage_chunks) == 1 and usage_chunks[0].usage.prompt_tokens == want_chat_tokens,
      "stream_options.include_usage sends one usage chunk")

# --- seeded sampling is reproducible through the server ---------------------------------------------
a = client.completions.create(model=name, prompt=prompt, max_tokens=16, temperature=1.3, seed=11)
b = client.completions.create(model=name, prompt=prompt, max_tokens=16, temperature=1.3, seed=11)
check(a.choices[0].text == b.choices[0].text, "the same seed gives the same completion")

# --- logprobs -------------------------------------------------------------------------------------
r = client.chat.completions.create(model=name, messages=messages, max_tokens=4, temperature=0, logprobs=True,
                                   top_logprobs=3)
lp = r.choices[0].logprobs
check(lp is not None and len(lp.content) >= 1 and all(len(t.top_logprobs) == 3 for t in lp.content),
      "logprobs with top_logprobs=3 for each token")
if lp and lp.content:
    t0 = lp.content[0]
    check(abs(t0.logprob - t0.top_logprobs[0].logprob) < 1e-6, "greedy token is the most probable one")

# --- errors as the client's exception types --------------------------------------------------------
def raises(exc, fn):
    try:
        fn()
    except exc as e:
        return e
    except Exception as e:  # noqa: BLE001 - report what was raised instead
        print(f"  got {type(e).__name__}: {e}")
        return None
    return None


e = raises(openai.BadRequestError, lambda: client.completions.create(model=name, prompt="x " * 400, max_tokens=4))
check(e is not None and "context length" in str(e), f"prompt longer than the context: 400 ({e})")
e = raises((openai.BadRequestError, openai.NotFoundError),
           lambda: client.completions.create(model="no-such-model", prompt="x", max_tokens=4))
check(e is not None, "unknown model is refused")
e = raises(openai.BadRequestError,
           lambda: client.completions.create(model=name, prompt="x", max_tokens=4, temperature=5))
check(e is not None and "temperature" in str(e), f"temperature out of range names the parameter ({e})")

# --- 64 concurrent streams: complete, valid, batch-invariant; no fd growth ----------------------------
prompts = [f"Story number {i}:" for i in range(8)]
alone = {p: client.completions.create(model=name, prompt=p, max_tokens=12, temperature=0).choices[0].text
         for p in prompts}


def one_stream(i):
    p = prompts[i % len(prompts)]
    c = srv.client()
    parts, finish = [], None
    try:
        for ch in c.completions.create(model=name, prompt=p, max_tokens=12, temperature=0, stream=True):
            if ch.choices:
                parts.append(ch.choices[0].text)
                finish = ch.choices[0].finish_reason or finish
    except openai.APIError as e:  # reported as a failed stream, with the server's log below
        return p, f"<{type(e).__name__}: {e}>", None
    return p, "".join(parts), finish


fds, rss = [], []
for round_ in range(4):
    with concurrent.futures.ThreadPoolExecutor(64) as pool:
        results = list(pool.map(one_stream, range(64)))
    bad = [(p, t) for p, t, f in results if t != alone[p] or f not in ("stop", "length")]
    check(not bad, f"round {round_}: 64 concurrent streams equal their single-request text ({bad[:2]})")
    if bad:
        rc = srv.stop()
        print(f"server exit status {rc}; its log:\n{srv.err[-6000:]}", flush=True)
        serving.finish()
    time.sleep(0.2)
    fds.append(srv.n_fds())
    rss.append(srv.rss_kib())
check(fds[-1] <= fds[0], f"no fd growth across rounds ({fds})")
# The first round grows the allocator's arenas and the scheduler's buffers; later rounds of the
# same load must not keep growing (the margin covers allocator noise and ASan's bounded
# quarantine).
check(rss[-1] - rss[1] < 16 * 1024, f"no memory growth across rounds after the first ({rss} KiB)")

# --- a client that vanishes mid-stream ---------------------------------------------------------------
body = json.dumps({"model": name, "prompt": prompt, "max_tokens": 200, "temperature": 0, "stream": True}).encode()
s = socket.create_connection((srv.host, srv.port))
s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
          b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
first = s.recv(4096)
s.close()
check(b" 200 " in first.split(b"\r\n", 1)[0], f"the stream started ({first[:80]!r})")
r = client.completions.create(model=name, prompt=prompt, max_tokens=24, temperature=0)
check(r.choices[0].text == want, "the server keeps serving after a client vanished mid-stream")

rc = srv.stop()
check(rc == 0, f"SIGTERM: exit status 0 (got {rc}; log tail: {srv.err[-500:]})")

# --- a model that fails to load: exit 1 with the reason -------------------------------------------------
with tempfile.TemporaryDirectory() as tmp:
    bad = os.path.join(tmp, "cut.gguf")
    with open(model, "rb") as src, open(bad, "wb") as dst:
        dst.write(src.read(os.path.getsize(model) // 2))
    p = subprocess.run([MOESERVE, "serve", "--model", bad, "--port", "0"], capture_output=True, timeout=60)
    err = p.stderr.decode(errors="replace")
    check(p.returncode == 1 and "cut.gguf" in err, f"a damaged model stops the server with its reason ({err[-300:]})")

# --- the GPU data path on the simulated device: a device tier of a quarter of the experts --------------
# (copies staged through the pinned ring by two threads, as a pageable host tier's would be)
srv = Server(model, "--set", "compute.backend=sim", "--set", "cache.device_bytes=25%", "--set", "kv.type=f16",
             "--set", "cache.miss_policy=copy", "--set", "cache.host_pinning=ring",
             "--set", "cache.staging_threads=2")
client = srv.client()
r = client.completions.create(model=name, prompt=prompt, max_tokens=24, temperature=0)
check(r.choices[0].text == want, f"sim backend, device tier 25%: the CPU's greedy text ({r.choices[0].text!r})")
metrics = urllib.request.urlopen(f"{srv.base}/metrics", timeout=10).read().decode()
check('moeserve_expert_cache_capacity_experts{tier="device"}' in metrics and
      'moeserve_expert_cache_capacity_experts{tier="host"}' in metrics,
      "/metrics has a sample per tier")
m = re.search(r'^moeserve_expert_device_copy_bytes_total (\S+)$', metrics, re.M)
check(m is not None and float(m.group(1)) > 0, "experts were copied into the device tier")
rc = srv.stop()
check(rc == 0 and "sim backend" in srv.err and "device tier" in srv.err,
      f"the log says which backend and tiers run ({srv.err[-400:]})")
check("staged through a pinned ring" in srv.err and "by 2 threads" in srv.err,
      f"the log says the copies are staged, and by how many threads ({srv.err[-400:]})")
check("routing: through the host each layer (the device tier holds part of the experts" in srv.err,
      f"the log says a partial device tier routes through the host ({srv.err[-400:]})")
# ... and with its misses computed on the CPU from the host tier
srv = Server(model, "--set", "compute.backend=sim", "--set", "cache.device_bytes=25%", "--set", "cache.miss_policy=cpu")
client = srv.client()
r = client.completions.create(model=name, prompt=prompt, max_tokens=24, temperature=0)
check(r.choices[0].text == want, f"sim backend, misses on the CPU: the CPU's greedy text ({r.choices[0].text!r})")
metrics = urllib.request.urlopen(f"{srv.base}/metrics", timeout=10).read().decode()
m = re.search(r'^moeserve_expert_cpu_computed_total (\S+)$', metrics, re.M)
check(m is not None and float(m.group(1)) > 0, "misses were computed on the CPU")
# the tier starts empty and policy cpu never copies: every expert ran on the CPU lane, with nothing
# on the device to overlap it, so the engine waited for the lane every layer
cpu_s = re.search(r'^moeserve_expert_cpu_seconds_total (\S+)$', metrics, re.M)
wait_s = re.search(r'^moeserve_engine_cpu_expert_wait_seconds_total (\S+)$', metrics, re.M)
check(cpu_s and wait_s and float(cpu_s.group(1)) > 0 and float(wait_s.group(1)) > 0,
      f"the CPU's time on the misses and the engine's wait for them ({cpu_s and cpu_s.group(1)}, "
      f"{wait_s and wait_s.group(1)})")
check(srv.stop() == 0, "SIGTERM: exit 0")

# ... and with every expert in the device tier: the steps route on the device and replay graphs
for graphs in ("auto", "false"):
    srv = Server(model, "--set", "compute.backend=sim", "--set", "cache.device_bytes=auto",
                 "--set", f"compute.graphs={graphs}")
    client = srv.client()
    r = client.completions.create(model=name, prompt=prompt, max_tokens=24, temperature=0)
    check(r.choices[0].text == want,
          f"sim backend, every expert on the device, graphs {graphs}: the CPU's greedy text ({r.choices[0].text!r})")
    metrics = urllib.request.urlopen(f"{srv.base}/metrics", timeout=10).read().decode()
    steps = re.search(r'^moeserve_engine_steps_total (\S+)$', metrics, re.M)
    routed = re.search(r'^moeserve_engine_steps_routed_on_device_total (\S+)$', metrics, re.M)
    replays = re.search(r'^moeserve_engine_graph_replays_total (\S+)$', metrics, re.M)
    ok = steps and routed and replays and float(routed.group(1)) == float(steps.group(1)) > 20
    # 24 tokens: the prompt's step, a plain decode step, the one recorded, then replays
    ok = ok and (float(replays.group(1)) >= 20 if graphs == "auto" else float(replays.group(1)) == 0)
    check(ok, f"graphs {graphs}: every step routed on the device, replays as configured "
              f"({steps and steps.group(1)}, {routed and routed.group(1)}, {replays and replays.group(1)})")
    check(srv.stop() == 0, "SIGTERM: exit 0")
    check("routing: on the device (every expert there)" in srv.err and
          ("graphs off" in srv.err) == (graphs == "false"),
          f"graphs {graphs}: the log says where the steps route ({srv.err[-600:]})")

# --- logging as configured; a GPU demanded where none can be used --------------------------------------
srv = Server(model, "--set", "log.format=json", "--set", "log.level=debug", "--set", "cache.host_bytes=50%")
client = srv.client()
r = client.completions.create(model=name, prompt=prompt, max_tokens=24, temperature=0)
check(r.choices[0].text == want, "half the experts cached: the same greedy text")
rc = srv.stop()
lines = [l for l in srv.err.splitlines() if l.strip()]
try:
    objs = [json.loads(l) for l in lines]
except ValueError as e:
    objs = []
    check(False, f"log.format=json: every stderr line is a JSON object ({e}; {lines[:3]})")
check(objs and all({"time", "level", "msg"} <= set(o) for o in objs), "JSON log lines have time, level, msg")
check(any("/v1/completions" in o.get("msg", "") for o in objs) or any("/v1/completions" in l for l in lines),
      "log.level=debug logs each request")
check(rc == 0, f"SIGTERM with JSON logs: exit 0 ({rc})")
p = subprocess.run([MOESERVE, "serve", "--model", model, "--port", "0", "--set", "gpu.enabled=true"],
                   capture_output=True, timeout=60)
check(p.returncode == 2 and b"gpu.enabled" in p.stderr and b"CUDA" in p.stderr,
      f"gpu.enabled=true without a usable CUDA device is refused ({p.stderr[-200:]!r})")

# --- deepseek2: its chat template over the API, and a KV budget sized by its latent cache -------
# One position of one sequence takes one latent row per layer: 3 layers x (128 + 32) x 2 bytes
# = 960 bytes in F16 (K and V planes would take twice that).  Half of 16 sequences x 256
# positions is 128 positions each.
ds = model_path("deepseek2-tiny-q8_0", "--arch", "deepseek2", "--preset", "tiny", "--type", "q8_0", "--seed", "1")
srv = Server(ds, "--set", f"kv.budget_bytes={960 * 16 * 128}")
r = srv.client().chat.completions.create(model="deepseek2-tiny-q8_0", messages=[{"role": "user", "content": "Hello"}],
                                         max_tokens=8, temperature=0)
check(r.choices[0].finish_reason in ("stop", "length") and r.usage.completion_tokens >= 1,
      f"deepseek2 answers a chat completion ({r.choices[0].finish_reason}, {r.usage})")
rc = srv.stop()
check(rc == 0 and "context length 256 -> 128 positions" in srv.err,
      f"deepseek2's KV budget counts one latent row per position ({rc}; {srv.err[-600:]})")

serving.finish()
