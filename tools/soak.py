#!/usr/bin/env python3
"""A bounded soak of `moeserve serve` on loopback: for SECONDS, CLIENTS threads send a mix of
requests — greedy completions and chats (streamed and not) whose text must equal what the same
request got alone before the load, structured output and forced tool calls likewise, seeded n=2
samples, stop strings, clients that vanish
mid-stream, slow readers, and malformed, oversized, unknown and wrong-method requests — against a
server with a small expert cache (a quarter of the experts), optionally failing every Nth expert
read (--faults N: the server retries such steps).  Then it checks that every well-formed request
got a complete and correct answer, every bad one its 4xx, the server's open files and anonymous
memory (less the KV cache's chunks) stayed flat after the warm-up, nothing is left running, and
/metrics counted what the clients saw.  Prints a table and `N passed, N failed`; exits 1 on any
failure.

    soak.py --moeserve build-release/cli/moeserve --model M.gguf [--seconds 120] [--clients 6]
            [--faults N]
"""
import argparse
import json
import os
import random
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import jsonschema
import openai

counts = {"passed": 0, "failed": 0}
failures = []
lock = threading.Lock()


def check(cond, what):
    with lock:
        counts["passed" if cond else "failed"] += 1
        if not cond and len(failures) < 50:
            failures.append(what)
            print(f"FAIL: {what}", flush=True)


class Server:
    def __init__(self, moeserve, model, threads, faults):
        env = dict(os.environ, ASAN_OPTIONS=os.environ.get("ASAN_OPTIONS", "") + ":quarantine_size_mb=8")
        if faults:
            env["MOESERVE_TEST_READ_FAULTS"] = str(faults)
        self.proc = subprocess.Popen(
            [moeserve, "serve", "--model", model, "--port", "0", "--set", f"compute.threads={threads}",
             "--set", "kv.context_length=1024", "--set", "batching.max_running=4", "--set", "cache.host_bytes=25%",
             "--set", "server.max_body_bytes=64KiB"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        self.log = []
        threading.Thread(target=lambda: self.log.extend(iter(self.proc.stderr.readline, b"")), daemon=True).start()
        m = re.search(r"listening on ([0-9.]+):(\d+)", self.proc.stdout.readline().decode())
        self.host, self.port = m.group(1), int(m.group(2))
        self.base = f"http://{self.host}:{self.port}"
        for _ in range(2400):
            try:
                if urllib.request.urlopen(self.base + "/health", timeout=5).status == 200:
                    break
            except (urllib.error.URLError, OSError):
                time.sleep(0.05)

    def status(self, field):
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
        return 0

    def fds(self):
        return len(os.listdir(f"/proc/{self.proc.pid}/fd"))


def kv_bytes(srv):
    """KV cache memory allocated (used and free), from /metrics."""
    text = urllib.request.urlopen(srv.base + "/metrics", timeout=10).read().decode()
    return sum(int(float(v)) for v in re.findall(r'^moeserve_kv_cache_bytes\{[^}]*\} (\S+)', text, re.M))


def raw(srv, payload, read_delay=0.0, read_limit=None):
    """Sends bytes, reads the answer (slowly, or only read_limit bytes then hangs up)."""
    s = socket.create_connection((srv.host, srv.port), timeout=60)
    try:
        s.sendall(payload)
        got = b""
        while True:
            if read_delay:
                time.sleep(read_delay)
            chunk = s.recv(256 if read_delay else 65536)
            if not chunk:
                break
            got += chunk
            if read_limit and len(got) >= read_limit:
                break
        return got
    finally:
        s.close()


def post(path, body, stream=False):
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return (f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {len(data)}\r\n"
            f"Connection: close\r\n\r\n").encode() + data


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--moeserve", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--seconds", type=float, default=120)
    ap.add_argument("--clients", type=int, default=6)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--faults", type=int, default=0,
                    help="fail every Nth expert read (the server retries the step; answers must not change)")
    args = ap.parse_args()

    srv = Server(args.moeserve, args.model, args.threads, args.faults)
    client = openai.OpenAI(base_url=srv.base + "/v1", api_key="unused", max_retries=0, timeout=300)
    name = client.models.list().data[0].id
    prompts = [f"Soak prompt {i}: " + "the experts route the tokens " * (1 + 7 * (i % 3)) for i in range(6)]
    ref_completion = [client.completions.create(model=name, prompt=p, max_tokens=12, temperature=0).choices[0].text
                      for p in prompts]
    ref_chat = [client.chat.completions.create(model=name, messages=[{"role": "user", "content": p}], max_tokens=12,
                                               temperature=0).choices[0].message.content for p in prompts]
    schema = {"type": "object", "required": ["name", "n"],
              "properties": {"name": {"type": "string", "maxLength": 12}, "n": {"type": "integer"},
                             "tags": {"type": "array", "items": {"enum": ["a", "b"]}, "maxItems": 2}}}
    fmt = {"type": "json_schema", "json_schema": {"name": "s", "schema": schema}}
    tools = [{"type": "function", "function": {"name": "route", "parameters": schema}}]

    def structured(i):
        return client.chat.completions.create(model=name, messages=[{"role": "user", "content": prompts[i]}],
                                              max_tokens=48, temperature=0, response_format=fmt)

    def tool_call(i):
        return client.chat.completions.create(model=name, messages=[{"role": "user", "content": prompts[i]}],
                                              max_tokens=64, temperature=0, tools=tools, tool_choice="required",
                                              parallel_tool_calls=False)

    # the short prompts only: a tool request also carries the tools' description
    short = [i for i in range(len(prompts)) if i % 3 == 0]
    ref_structured = {i: structured(i).choices[0].message.content for i in short}
    ref_calls = {i: [(c.function.name, c.function.arguments) for c in tool_call(i).choices[0].message.tool_calls or []]
                 for i in short}
    for i in short:
        jsonschema.validate(json.loads(ref_structured[i]), schema)
        check(len(ref_calls[i]) == 1, f"tool call {i}: one call alone")
    sent = {"ok": 0, "bad": 0}

    def well_formed(rng):
        i = rng.randrange(len(prompts))
        kind = rng.randrange(7)
        if kind >= 5:
            i = short[i % len(short)]
        if kind == 5:  # structured output, greedy: the same object as alone
            check(structured(i).choices[0].message.content == ref_structured[i],
                  f"json_schema {i}: the same object as alone")
        elif kind == 6:  # a forced tool call, greedy: the same call as alone
            r = tool_call(i)
            calls = [(c.function.name, c.function.arguments) for c in r.choices[0].message.tool_calls or []]
            check(calls == ref_calls[i] and r.choices[0].finish_reason == "tool_calls",
                  f"tool call {i}: the same call as alone")
        elif kind == 0:
            r = client.completions.create(model=name, prompt=prompts[i], max_tokens=12, temperature=0)
            check(r.choices[0].text == ref_completion[i], f"completion {i}: the same text as alone")
        elif kind == 1:
            chunks = client.chat.completions.create(model=name, messages=[{"role": "user", "content": prompts[i]}],
                                                    max_tokens=12, temperature=0, stream=True)
            text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
            check(text == ref_chat[i], f"streamed chat {i}: the same text as alone")
        elif kind == 2:
            r = client.chat.completions.create(model=name, messages=[{"role": "user", "content": prompts[i]}],
                                               max_tokens=10, temperature=0.9, seed=rng.randrange(1000), n=2)
            check(len(r.choices) == 2 and all(c.finish_reason in ("stop", "length") for c in r.choices),
                  "n=2: two complete choices")
        elif kind == 3:
            stop = ref_completion[i][3:6] or "zz"
            r = client.completions.create(model=name, prompt=prompts[i], max_tokens=12, temperature=0, stop=[stop])
            check(stop not in r.choices[0].text and ref_completion[i].startswith(r.choices[0].text),
                  f"stop string {stop!r}: cut before it")
        else:  # a slow reader of a stream
            got = raw(srv, post("/v1/completions", {"model": name, "prompt": prompts[i], "max_tokens": 8,
                                                     "stream": True}), read_delay=0.02)
            check(b"data: [DONE]" in got, "a slow reader gets the whole stream")
        with lock:
            sent["ok"] += 1

    def bad(rng):
        kind = rng.randrange(5)
        if kind == 0:
            got = raw(srv, post("/v1/completions", b"{\"model\": \"x\", \"prompt\": "))
            check(got.startswith(b"HTTP/1.1 400"), f"malformed JSON: 400 ({got[:40]!r})")
        elif kind == 1:
            got = raw(srv, post("/v1/completions", b"x" * (80 * 1024)))
            check(got.startswith(b"HTTP/1.1 413"), f"oversized body: 413 ({got[:40]!r})")
        elif kind == 2:
            got = raw(srv, b"GET /v2/nothing HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            check(got.startswith(b"HTTP/1.1 404"), f"unknown URL: 404 ({got[:40]!r})")
        elif kind == 3:
            got = raw(srv, b"GET /v1/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            check(got.startswith(b"HTTP/1.1 405"), f"wrong method: 405 ({got[:40]!r})")
        else:  # a client that vanishes mid-stream
            got = raw(srv, post("/v1/completions", {"model": name, "prompt": prompts[0], "max_tokens": 64,
                                                     "stream": True}), read_limit=200)
            check(got.startswith(b"HTTP/1.1 200"), "the vanishing client's stream had started")
        with lock:
            sent["bad"] += 1

    def worker(seed, deadline):
        rng = random.Random(seed)
        while time.time() < deadline:
            try:
                (bad if rng.random() < 0.3 else well_formed)(rng)
            except Exception as e:  # noqa: BLE001 — any client-side error is a failure to report
                check(False, f"client {seed}: {type(e).__name__}: {e}")

    def close_idle_connections():
        # The client keeps its idle keep-alive connections to the server, as many as were busy at
        # once at the end: they are the server's open files too, so close them (a new client
        # takes over) before counting, or the count is that noise.
        nonlocal client
        client.close()
        client = openai.OpenAI(base_url=srv.base + "/v1", api_key="unused", max_retries=0, timeout=300)
        time.sleep(1.0)  # the server closes its ends when it reads their EOF

    warm = time.time() + min(15.0, args.seconds / 4)
    threads = [threading.Thread(target=worker, args=(s, warm)) for s in range(args.clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    close_idle_connections()
    fds0, rss0, anon0, kv0 = srv.fds(), srv.status("VmRSS"), srv.status("RssAnon"), kv_bytes(srv)
    end = time.time() + args.seconds
    threads = [threading.Thread(target=worker, args=(100 + s, end)) for s in range(args.clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # Vanished clients' requests are cancelled at their next token, and their sockets closed
    # then: on a loaded machine that takes a moment.  A leak stays; a late close does not.
    close_idle_connections()
    settle = time.time() + 10.0
    while srv.fds() > fds0 + 2 and time.time() < settle:
        time.sleep(0.25)
    fds1, rss1, anon1, kv1 = srv.fds(), srv.status("VmRSS"), srv.status("RssAnon"), kv_bytes(srv)
    check(fds1 <= fds0 + 2, f"open files flat after the warm-up ({fds0} -> {fds1})")
    # Anonymous memory, less the KV cache's chunks (it grows, by design, up to what the config
    # allows as the prefix cache keeps blocks): file pages of the mapped model (embedding rows of
    # tokens not seen before) are the page cache's, not the server's.
    grown = (anon1 - kv1 // 1024) - (anon0 - kv0 // 1024)
    check(grown < 16 * 1024, f"memory flat after the warm-up (anonymous {anon0} -> {anon1} KiB, KV "
                             f"{kv0 >> 10} -> {kv1 >> 10} KiB: {grown} KiB more)")
    metrics = urllib.request.urlopen(srv.base + "/metrics", timeout=10).read().decode()
    running = re.search(r"^moeserve_requests_running (\S+)", metrics, re.M)
    check(running and float(running.group(1)) == 0, "nothing left running")
    served = sum(float(v) for v in re.findall(r'^moeserve_http_requests_total\{[^}]*\} (\S+)', metrics, re.M))
    check(served >= sent["ok"] + sent["bad"], f"/metrics counted {served:.0f} requests, the clients sent "
                                              f"{sent['ok'] + sent['bad']} (and more before)")
    retries = re.search(r"^moeserve_engine_step_retries_total (\S+)", metrics, re.M)
    retries = float(retries.group(1)) if retries else -1
    check(retries > 0 if args.faults else retries == 0, f"steps retried after read faults: {retries:.0f}")
    srv.proc.terminate()
    rc = srv.proc.wait(timeout=60)
    check(rc == 0, f"the server exits 0 on SIGTERM ({rc})")
    log = b"".join(srv.log).decode(errors="replace")
    check("ERROR: AddressSanitizer" not in log and "runtime error:" not in log, "no sanitizer report")
    print(f"| seconds | clients | read faults | steps retried | well-formed | bad | open files | RSS KiB | "
          f"anonymous KiB | KV KiB |\n|---|---|---|---|---|---|---|---|---|---|\n"
          f"| {args.seconds:.0f} | {args.clients} | {'1 in ' + str(args.faults) if args.faults else 'none'} | "
          f"{retries:.0f} | {sent['ok']} | {sent['bad']} | {fds0} -> {fds1} | {rss0} -> {rss1} | "
          f"{anon0} -> {anon1} | {kv0 >> 10} -> {kv1 >> 10} |")
    print(f"{counts['passed']} passed, {counts['failed']} failed")
    return 1 if counts["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
