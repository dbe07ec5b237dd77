#!/usr/bin/env python3
"""Constrained decoding, measured from a client: `moeserve serve` on loopback, the real `openai`
client streaming one request at a time, the same prompts free, under response_format json_object,
under a json_schema, and with a forced tool call.  The server's counters
(moeserve_constrained_mask_seconds_total / moeserve_constrained_masks_total) give the time spent
building the token masks; the table sets it against the decode step it delays.

    bench_structured.py --moeserve build-release/cli/moeserve --model M.gguf [--requests 6]
                        [--max-tokens 64] [--threads 2]

Columns: TTFT (median), decode tokens/s (completion tokens after the first over the time after
the first), the mask's time per generated token, and its share of the decode step.
"""
import argparse
import os
import re
import statistics
import sys
import time
import urllib.request

import openai

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "integration"))
from serving import Server  # noqa: E402

SCHEMA = {"type": "object", "additionalProperties": False, "required": ["name", "experts", "active", "score"],
          "properties": {"name": {"type": "string"}, "experts": {"type": "array", "items": {"type": "integer"}},
                         "active": {"type": "boolean"}, "score": {"type": "number"}}}
TOOLS = [{"type": "function", "function": {
    "name": "route", "description": "Send tokens to experts",
    "parameters": {"type": "object", "additionalProperties": False, "required": ["layer", "experts"],
                   "properties": {"layer": {"type": "integer"},
                                  "experts": {"type": "array", "items": {"type": "integer"}}}}}}]
MODES = {
    "free text": {},
    "json_object": {"response_format": {"type": "json_object"}},
    "json_schema": {"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": SCHEMA}}},
    "tool_choice required": {"tools": TOOLS, "tool_choice": "required"},
}


def counters(base):
    text = urllib.request.urlopen(base + "/metrics").read().decode()
    out = {}
    for name in ("moeserve_constrained_mask_seconds_total", "moeserve_constrained_masks_total"):
        m = re.search(rf"^{name} ([0-9.e+-]+)$", text, re.M)
        out[name] = float(m.group(1)) if m else 0.0
    return out


def one(client, name, prompt, max_tokens, seed, extra):
    t0 = time.perf_counter()
    first, usage = None, None
    for c in client.chat.completions.create(model=name, messages=[{"role": "user", "content": prompt}],
                                            max_tokens=max_tokens, temperature=1.0, seed=seed, stream=True,
                                            stream_options={"include_usage": True}, **extra):
        if c.choices and (c.choices[0].delta.content or c.choices[0].delta.tool_calls) and first is None:
            first = time.perf_counter() - t0
        if c.usage:
            usage = c.usage
    total = time.perf_counter() - t0
    return first or total, total, usage.completion_tokens if usage else 0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--moeserve", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--requests", type=int, default=6)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--context", type=int, default=4096)
    a = ap.parse_args()
    srv = Server(a.moeserve, a.model, "--set", f"compute.threads={a.threads}", "--set",
                 f"kv.context_length={a.context}", "--set", "batching.max_running=1", "--set",
                 "kv.prefix_cache=false")
    base = srv.base
    try:
        client = openai.OpenAI(base_url=base + "/v1", api_key="x", max_retries=0, timeout=600)
        name = client.models.list().data[0].id
        one(client, name, "warm up", 4, 0, {})
        rows = []
        for mode, extra in MODES.items():
            before = counters(base)
            ttfts, decode_t, decode_n = [], 0.0, 0
            for i in range(a.requests):
                first, total, n = one(client, name, f"Describe expert {i} of the router.", a.max_tokens, i, extra)
                ttfts.append(first)
                if n > 1:
                    decode_t += total - first
                    decode_n += n - 1
            after = counters(base)
            masks = after["moeserve_constrained_masks_total"] - before["moeserve_constrained_masks_total"]
            mask_s = after["moeserve_constrained_mask_seconds_total"] - before["moeserve_constrained_mask_seconds_total"]
            step = decode_t / decode_n if decode_n else float("nan")
            per_mask = mask_s / masks if masks else 0.0
            rows.append((mode, statistics.median(ttfts), decode_n / decode_t if decode_t else float("nan"),
                         per_mask * 1e3, step * 1e3, per_mask / step if masks and step == step else 0.0, int(masks)))
        print(f"\nmodel {a.model}, {a.threads} threads, {a.requests} requests × ≤{a.max_tokens} tokens, "
              f"temperature 1, one request at a time\n")
        print("| mode | TTFT p50 (s) | decode tok/s | mask ms/token | decode step ms | mask / step | masks |")
        print("| --- | --- | --- | --- | --- | --- | --- |")
        for r in rows:
            print(f"| {r[0]} | {r[1]:.3f} | {r[2]:.1f} | {r[3]:.3f} | {r[4]:.2f} | {r[5]:.1%} | {r[6]} |")
    finally:
        srv.stop()


if __name__ == "__main__":
    main()
