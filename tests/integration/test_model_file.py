#!/usr/bin/env python3
"""The model file changing under `moeserve serve` (a quarter of the experts in the host tier, so
that experts are read from the file while serving), with the real `openai` client:

- deleted while serving: nothing changes (the open file and its mapping keep the data): the
  same greedy answers as before, and /health stays 200;
- truncated to half while serving: the server does not crash (no SIGBUS, no core): the next
  requests fail with 503 and a message that says the file was truncated, /health answers 503
  with that message, the log names the file and both sizes, and SIGTERM still ends the process
  with status 0.
Usage: test_model_file.py /path/to/moeserve"""
import json
import os
import shutil
import sys
import tempfile
import urllib.error
import urllib.request

import openai

from serving import Server, check, finish, model_path

MOESERVE = sys.argv[1]
source = model_path("cache-qwen3moe-tiny-q4_k_m", "--arch", "qwen3moe", "--preset", "tiny", "--type", "q4_k_m",
                    "--seed", "5")
tmp = tempfile.mkdtemp(prefix="moeserve-file-")
PROMPTS = [f"expert {i} reads" for i in range(4)]


def answers(client, name):
    return [client.completions.create(model=name, prompt=p, max_tokens=12, temperature=0).choices[0].text
            for p in PROMPTS]


def health(srv):
    try:
        with urllib.request.urlopen(srv.base + "/health", timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


# ---- deleted while serving ------------------------------------------------------------------------------
path = os.path.join(tmp, "deleted.gguf")
shutil.copy(source, path)
srv = Server(MOESERVE, path, "--set", "cache.host_bytes=25%")
client = srv.client()
name = client.models.list().data[0].id
before = answers(client, name)
os.unlink(path)
after = answers(client, name)
check(after == before, f"deleted while serving: the same answers ({after} vs {before})")
check(health(srv)[0] == 200, "deleted while serving: /health stays 200")
check(srv.stop() == 0, "deleted: clean exit")

# ---- truncated while serving ----------------------------------------------------------------------------
path = os.path.join(tmp, "truncated.gguf")
shutil.copy(source, path)
size = os.path.getsize(path)
srv = Server(MOESERVE, path, "--set", "cache.host_bytes=25%", "--set", "model.name=deleted")
client = srv.client()
check(answers(client, name) == before, "a fresh copy answers as the first one did")
os.truncate(path, size // 2)
errors = []
for p in PROMPTS:
    try:
        client.completions.create(model=name, prompt=p, max_tokens=12, temperature=0)
        errors.append(None)
    except openai.APIStatusError as e:
        errors.append((e.status_code, str(e.body)))
check(all(e is not None for e in errors), f"truncated: every request fails ({errors})")
check(all(e and e[0] in (500, 503) for e in errors), f"truncated: 5xx answers ({errors})")
check(any(e and e[0] == 503 and "truncated" in e[1] for e in errors),
      f"truncated: the 503 says the file was truncated ({errors})")
st, body = health(srv)
check(st == 503 and "truncated" in body.get("message", ""), f"truncated: /health 503 says why ({st} {body})")
check(srv.proc.poll() is None, "truncated: the server is still running (no SIGBUS)")
rc = srv.stop()
check(rc == 0, f"truncated: SIGTERM still exits 0 ({rc})")
check(f"{size // 2} bytes now, {size} when loaded" in srv.err and path in srv.err,
      f"truncated: the log names the file and both sizes ({srv.err[-600:]})")
shutil.rmtree(tmp, ignore_errors=True)
finish()
