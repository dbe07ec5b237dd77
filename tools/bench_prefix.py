#!/usr/bin/env python3
"""Prefix caching, measured from a client: `moeserve serve` started twice on loopback (prefix
cache on, then off), the real `openai` client streaming, greedy.  Prints a markdown table.

  1. Time to first token of a request with a PREFIX-word system prompt, then of a second request that
     shares the prefix and adds a short question (the agent case: one system prompt, many calls).
  2. A multi-turn chat replayed turn by turn (each prompt is the conversation so far): mean TTFT
     and wall time per turn.

    bench_prefix.py --moeserve build-release/cli/moeserve --model M.gguf [--prefix 900]
                    [--turns 10] [--threads 2] [--context 8192]
"""
import argparse
import re
import statistics
import subprocess
import sys
import threading
import time
import urllib.request

import openai

WORDS = ("expert router token cache layer prefetch memory budget tier device host file stream "
         "batch prompt decode attention block hash reuse").split()


def start(moeserve, model, threads, context, cache):
    proc = subprocess.Popen([moeserve, "serve", "--model", model, "--port", "0", "--set", f"compute.threads={threads}",
                             "--set", f"kv.context_length={context}", "--set", "batching.max_running=2",
                             "--set", f"kv.prefix_cache={'true' if cache else 'false'}"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    threading.Thread(target=lambda: [None for _ in iter(proc.stderr.readline, b"")], daemon=True).start()
    m = re.search(r"listening on ([0-9.]+):(\d+)", proc.stdout.readline().decode())
    base = f"http://{m.group(1)}:{m.group(2)}"
    for _ in range(2400):
        try:
            if urllib.request.urlopen(base + "/health", timeout=5).status == 200:
                break
        except OSError:
            time.sleep(0.05)
    return proc, base


def ttft(client, name, messages, max_tokens):
    """(time to first token, whole request, text, cached tokens, prompt tokens)"""
    t0 = time.perf_counter()
    first, text, usage = None, [], None
    for c in client.chat.completions.create(model=name, messages=messages, max_tokens=max_tokens, temperature=0,
                                            stream=True, stream_options={"include_usage": True}):
        if c.choices and c.choices[0].delta.content:
            if first is None:
                first = time.perf_counter() - t0
            text.append(c.choices[0].delta.content)
        if c.usage:
            usage = c.usage
    cached = usage.prompt_tokens_details.cached_tokens if usage and usage.prompt_tokens_details else 0
    return (first or time.perf_counter() - t0, time.perf_counter() - t0, "".join(text), cached,
            usage.prompt_tokens if usage else 0)


def run(args, cache):
    proc, base = start(args.moeserve, args.model, args.threads, args.context, cache)
    client = openai.OpenAI(base_url=base + "/v1", api_key="unused", max_retries=0, timeout=600)
    name = client.models.list().data[0].id
    system = " ".join(WORDS[(i * 7) % len(WORDS)] for i in range(args.prefix))  # about a token a word
    first = ttft(client, name, [{"role": "system", "content": system}, {"role": "user", "content": "Summarise."}], 4)
    second = ttft(client, name, [{"role": "system", "content": system},
                                 {"role": "user", "content": "Now list the tiers."}], 4)
    messages = [{"role": "system", "content": system[: args.prefix // 4 * 4]}]
    turns = []
    for t in range(args.turns):
        messages.append({"role": "user", "content": f"Question {t}: what does the {WORDS[t % len(WORDS)]} do?"})
        r = ttft(client, name, messages, args.answer)
        turns.append(r)
        messages.append({"role": "assistant", "content": r[2]})
    proc.terminate()
    proc.wait(timeout=60)
    return first, second, turns


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--moeserve", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--prefix", type=int, default=900,
                    help="words in the shared system prompt (about 2,000 tokens with the test vocabularies)")
    ap.add_argument("--turns", type=int, default=10)
    ap.add_argument("--answer", type=int, default=24, help="max_tokens per chat turn")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--context", type=int, default=8192)
    args = ap.parse_args()
    on, off = run(args, True), run(args, False)
    print("| prefix cache | prompt tokens | first request TTFT s | second request TTFT s | second: cached tokens | "
          f"chat ({args.turns} turns) mean TTFT s | chat wall s | chat cached tokens |")
    print("|---|---|---|---|---|---|---|---|")
    for label, (first, second, turns) in (("on", on), ("off", off)):
        print(f"| {label} | {second[4]} | {first[0]:.3f} | {second[0]:.3f} | {second[3]} | "
              f"{statistics.mean(t[0] for t in turns):.3f} | {sum(t[1] for t in turns):.2f} | "
              f"{sum(t[3] for t in turns)} |")
    print(f"\nsecond request TTFT: {off[1][0] / on[1][0]:.1f}x faster with the cache; chat: "
          f"{sum(t[1] for t in off[2]) / sum(t[1] for t in on[2]):.2f}x less wall time")
    same = [t[2] for t in on[2]] == [t[2] for t in off[2]]
    print(f"the chat's answers with and without the cache are {'identical' if same else 'DIFFERENT'}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
