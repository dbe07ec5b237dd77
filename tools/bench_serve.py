#!/usr/bin/env python3
"""Load generator for `moeserve serve` on loopback: N concurrent streaming completions, each
with a fixed prompt and max_tokens, measured from the client side (time to first token,
inter-token latency p50/p99, aggregate generated tokens/s); prints a markdown table.

    bench_serve.py --moeserve build-release/cli/moeserve --model M.gguf [--concurrency 1,4,16,64]
                   [--max-tokens 64] [--requests-per-client 2] [--threads 2]
It starts the server itself (port chosen by the OS) and stops it at the end.
"""
import argparse
import json
import re
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request


def stream_one(host, port, model, prompt, max_tokens, out):
    body = json.dumps({"model": model, "prompt": prompt, "max_tokens": max_tokens, "stream": True,
                       "temperature": 0}).encode()
    s = socket.create_connection((host, port))
    s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
              b"Content-Length: " + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n" + body)
    t0 = time.perf_counter()
    stamps, buf = [], b""
    while True:
        data = s.recv(65536)
        if not data:
            break
        now = time.perf_counter()
        buf += data
        # Each SSE event with text counts as a token's arrival (the server sends one per token
        # unless the reader is slow).
        while b"\n\n" in buf:
            ev, buf = buf.split(b"\n\n", 1)
            line = ev.split(b"data: ", 1)[-1]
            if line.startswith(b"[DONE]"):
                continue
            try:
                j = json.loads(line[line.index(b"{"):])
            except ValueError:
                continue
            if j.get("choices") and j["choices"][0].get("text"):
                stamps.append(now)
    s.close()
    out.append((t0, stamps))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--moeserve", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--concurrency", default="1,4,16,64")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--requests-per-client", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--set", action="append", default=[])
    a = ap.parse_args()
    sets = []
    for kv in ["batching.max_running=64", "server.queue_depth=256", f"compute.threads={a.threads}"] + a.set:
        sets += ["--set", kv]
    srv = subprocess.Popen([a.moeserve, "serve", "--model", a.model, "--port", "0", *sets],
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    m = re.search(r"listening on ([0-9.]+):(\d+)", srv.stdout.readline().decode())
    host, port = m.group(1), int(m.group(2))
    while True:
        try:
            urllib.request.urlopen(f"http://{host}:{port}/health", timeout=5)
            break
        except Exception:
            time.sleep(0.1)
    name = json.loads(urllib.request.urlopen(f"http://{host}:{port}/v1/models").read())["data"][0]["id"]
    print("| streams | requests | generated tokens | wall s | aggregate tok/s | TTFT p50 ms | TTFT p99 ms "
          "| ITL p50 ms | ITL p99 ms |")
    print("|---|---|---|---|---|---|---|---|---|")
    for c in [int(x) for x in a.concurrency.split(",")]:
        results, threads = [], []

        def client(i):
            for r in range(a.requests_per_client):
                stream_one(host, port, name, f"Client {i} request {r}: tell me a story about", a.max_tokens,
                           results)

        t0 = time.perf_counter()
        for i in range(c):
            t = threading.Thread(target=client, args=(i,))
            t.start()
            threads.append(t)
        for t in threads:
            t.join()
        wall = time.perf_counter() - t0
        ttft = [st[0] - s0 for s0, st in results if st]
        itl = [b - a_ for _, st in results for a_, b in zip(st, st[1:])]
        n_tok = sum(len(st) for _, st in results)

        def pct(v, p):
            return statistics.quantiles(v, n=100)[p - 1] * 1e3 if len(v) > 1 else (v[0] * 1e3 if v else 0)
        print(f"| {c} | {len(results)} | {n_tok} | {wall:.2f} | {n_tok / wall:.1f} | {pct(ttft, 50):.1f} | "
              f"{pct(ttft, 99):.1f} | {pct(itl, 50):.2f} | {pct(itl, 99):.2f} |", flush=True)
    srv.terminate()
    srv.wait(timeout=60)


if __name__ == "__main__":
    sys.exit(main())
