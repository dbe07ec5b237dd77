#!/usr/bin/env python3
"""Prefix caching through `moeserve serve`, driven by the real `openai` client: a request that
repeats an earlier prompt (or extends it, as a chat's next turn does) reports the reused tokens in
`usage.prompt_tokens_details.cached_tokens` as OpenAI does, and gets exactly the text and
log-probabilities it gets from a server with the cache off; /metrics counts the queries and the
tokens reused.  Usage: test_prefix_cache.py /path/to/moeserve"""
import sys
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from serving import Server, check, finish, model_path

MOESERVE = sys.argv[1]
model = model_path("prefix-qwen3moe-tiny-q4_k_m", "--arch", "qwen3moe", "--preset", "tiny", "--type", "q4_k_m",
                   "--seed", "9")
SYSTEM = "You are a careful assistant. " * 4  # a long shared prefix, as agents send
TURNS = ["What is an expert?", "And a router?", "Why cache the prefix?"]


def metric(base, name):
    text = urllib.request.urlopen(base + "/metrics", timeout=10).read().decode()
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name == name:
                return s.value
    return None


def conversation(srv, stream=False):
    """Three turns, each prompt the previous one plus the answer and a new question."""
    client = srv.client()
    name = client.models.list().data[0].id
    messages = [{"role": "system", "content": SYSTEM}]
    out = []
    for turn in TURNS:
        messages.append({"role": "user", "content": turn})
        if stream:
            chunks = list(client.chat.completions.create(model=name, messages=messages, max_tokens=16,
                                                         temperature=0, stream=True,
                                                         stream_options={"include_usage": True}))
            text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
            usage = chunks[-1].usage
            lps = None
        else:
            r = client.chat.completions.create(model=name, messages=messages, max_tokens=16, temperature=0,
                                               logprobs=True, top_logprobs=3)
            text, usage = r.choices[0].message.content, r.usage
            lps = [(t.token, t.logprob, [(x.token, x.logprob) for x in t.top_logprobs])
                   for t in r.choices[0].logprobs.content]
        out.append((text, lps, usage.prompt_tokens, usage.prompt_tokens_details.cached_tokens))
        messages.append({"role": "assistant", "content": text})
    return out


off = Server(MOESERVE, model, "--set", "kv.context_length=1024", "--set", "kv.prefix_cache=false")
ref = conversation(off)
check(all(c == 0 for (_, _, _, c) in ref), "cache off: no cached tokens reported")
check(metric(off.base, "moeserve_prefix_cache_queries_total") == 0, "cache off: no lookups")
off.stop()

on = Server(MOESERVE, model, "--set", "kv.context_length=1024")
got = conversation(on)
for i, ((t0, l0, p0, _), (t1, l1, p1, c1)) in enumerate(zip(ref, got)):
    check(t1 == t0, f"turn {i}: the same text with the cache ({t1!r} vs {t0!r})")
    check(l1 == l0, f"turn {i}: the same log-probabilities with the cache")
    check(p1 == p0, f"turn {i}: prompt_tokens {p1} = {p0}")
check(got[0][3] == 0, f"turn 0: nothing cached yet ({got[0][3]})")
for i in (1, 2):
    # everything before this turn's new message was computed by the turn before: whole blocks of it
    check(got[i][3] > 0 and got[i][3] % 16 == 0 and got[i][3] < got[i][2],
          f"turn {i}: {got[i][3]} of {got[i][2]} prompt tokens cached (whole blocks, not the last token)")
check(got[2][3] >= got[1][3], "the cached part grows with the conversation")
again = conversation(on)
check([g[:3] for g in again] == [g[:3] for g in got], "the conversation again: the same answers")
check(again[0][3] > 0, f"the first turn again: {again[0][3]} tokens cached")
hits = metric(on.base, "moeserve_prefix_cache_hit_tokens_total")
check(hits == sum(g[3] for g in got + again), f"/metrics hit tokens {hits} = the usage fields' sum")
check(metric(on.base, "moeserve_prefix_cache_queries_total") == 6, "one lookup per request")
streamed = conversation(on, stream=True)
check([s[0] for s in streamed] == [g[0] for g in got], "streamed: the same text")
check(all(s[3] > 0 for s in streamed), "streamed: include_usage reports cached tokens")
on.stop()
finish()
