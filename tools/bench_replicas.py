#!/usr/bin/env python3
"""Replicas behind nginx, measured from clients: 1, 2 and 3 `moeserve serve` replicas behind
deploy/nginx-moeserve.conf (Debian's nginx, loopback), CONCURRENCY clients each streaming
REQUESTS greedy chat requests with their own X-Session-ID.  Prints a markdown table: aggregate
completion tokens/s, TTFT p50 / p99, and the speed-up over one replica.  Then a multi-turn chat
replay through 3 replicas, with and without session affinity: the share of prompt tokens the
replicas' prefix caches supplied.

The machine's cores are split between the replicas (--threads in all), so on a small machine
more replicas mean the same compute in more processes: the table shows what the proxy and the
split cost, and on a machine with cores to spare, what they buy.

    bench_replicas.py --moeserve build-release/cli/moeserve --model M.gguf [--threads 2]
                      [--concurrency 6] [--requests 4] [--max-tokens 64]
"""
import argparse
import os
import re
import statistics
import sys
import threading
import time
import urllib.request

import openai

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "integration"))
from serving import Nginx, Server  # noqa: E402


def run(a, n):
    per = max(1, a.threads // n)
    replicas = [Server(a.moeserve, a.model, "--set", f"compute.threads={per}", "--set",
                       f"kv.context_length={a.context}", "--set", f"server.replica=r{i}") for i in range(n)]
    front = Nginx([r.port for r in replicas]).start()
    try:
        name = replicas[0].client().models.list().data[0].id
        ttfts, tokens, lock = [], [0], threading.Lock()

        def client(i):
            c = openai.OpenAI(base_url=f"http://127.0.0.1:{front.port}/v1", api_key="x", max_retries=0, timeout=600,
                              default_headers={"X-Session-ID": f"bench-{i}"})
            for k in range(a.requests):
                t0 = time.perf_counter()
                first, usage = None, None
                for ch in c.chat.completions.create(
                        model=name, messages=[{"role": "user", "content": f"client {i} asks question {k}"}],
                        max_tokens=a.max_tokens, temperature=0, stream=True, stream_options={"include_usage": True}):
                    if first is None and ch.choices and ch.choices[0].delta.content:
                        first = time.perf_counter() - t0
                    if ch.usage:
                        usage = ch.usage
                with lock:
                    ttfts.append(first if first is not None else time.perf_counter() - t0)
                    tokens[0] += usage.completion_tokens if usage else 0

        client(-1)  # warm up every layer of the path once
        ttfts.clear()
        tokens[0] = 0
        t0 = time.perf_counter()
        threads = [threading.Thread(target=client, args=(i,)) for i in range(a.concurrency)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - t0
        ttfts.sort()
        p99 = ttfts[min(len(ttfts) - 1, int(round(0.99 * (len(ttfts) - 1))))]
        return tokens[0] / wall, statistics.median(ttfts), p99, per
    finally:
        front.stop()
        for r in replicas:
            r.stop()


def scrape(rep, family):
    text = urllib.request.urlopen(rep.base + "/metrics", timeout=10).read().decode()
    return sum(float(m.group(1)) for m in re.finditer(rf"^{family}(?:{{[^}}]*}})? ([0-9.e+-]+)$", text, re.M))


def replay(a, sticky):
    """Multi-turn chats through nginx and 3 replicas, each turn the whole conversation so far: the
    share of prompt tokens the replicas' prefix caches supplied."""
    replicas = [Server(a.moeserve, a.model, "--set", "compute.threads=1", "--set", f"kv.context_length={a.context}",
                       "--set", f"server.replica=r{i}") for i in range(3)]
    front = Nginx([r.port for r in replicas]).start()
    try:
        name = replicas[0].client().models.list().data[0].id

        def chat(i):
            c = openai.OpenAI(base_url=f"http://127.0.0.1:{front.port}/v1", api_key="x", max_retries=0, timeout=600,
                              default_headers={"X-Session-ID": f"chat-{i}"} if sticky else None)
            msgs = [{"role": "system", "content": f"You are assistant number {i}. " + "Be brief. " * 40}]
            for t in range(a.turns):
                msgs.append({"role": "user", "content": f"Question {t} of chat {i}: what is expert {t * 7 + i}?"})
                r = c.chat.completions.create(model=name, messages=msgs, max_tokens=16, temperature=0)
                msgs.append({"role": "assistant", "content": r.choices[0].message.content})

        threads = [threading.Thread(target=chat, args=(i,)) for i in range(a.concurrency)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        hit = sum(scrape(r, "moeserve_prefix_cache_hit_tokens_total") for r in replicas)
        prompt = sum(scrape(r, "moeserve_prompt_tokens_total") for r in replicas)
        return hit / prompt if prompt else 0.0, int(hit), int(prompt)
    finally:
        front.stop()
        for r in replicas:
            r.stop()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--moeserve", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 2, help="compute threads of all replicas")
    ap.add_argument("--concurrency", type=int, default=6)
    ap.add_argument("--requests", type=int, default=4)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--context", type=int, default=2048)
    ap.add_argument("--replicas", default="1,2,3")
    ap.add_argument("--turns", type=int, default=6, help="turns per chat of the affinity replay")
    a = ap.parse_args()
    rows = [(n, *run(a, n)) for n in (int(x) for x in a.replicas.split(","))]
    print(f"\nmodel {a.model}, {a.threads} compute threads in all, {a.concurrency} clients × {a.requests} streamed "
          f"requests × ≤{a.max_tokens} tokens, through nginx\n")
    print("| replicas | threads each | tokens/s | TTFT p50 (s) | TTFT p99 (s) | vs 1 replica |")
    print("| --- | --- | --- | --- | --- | --- |")
    for n, tps, p50, p99, per in rows:
        print(f"| {n} | {per} | {tps:.1f} | {p50:.3f} | {p99:.3f} | {tps / rows[0][1]:.2f}× |")
    print(f"\nprefix-cache hits on a multi-turn replay: {a.concurrency} chats × {a.turns} turns through nginx and 3 "
          f"replicas\n")
    print("| routing | prompt tokens | from the prefix cache | hit rate |")
    print("| --- | --- | --- | --- |")
    for sticky in (True, False):
        rate, hit, prompt = replay(a, sticky)
        label = "X-Session-ID (consistent hash)" if sticky else "no session (least_conn)"
        print(f"| {label} | {prompt} | {hit} | {rate:.1%} |")


if __name__ == "__main__":
    main()
