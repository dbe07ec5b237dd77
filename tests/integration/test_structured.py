#!/usr/bin/env python3
"""Structured output through `moeserve serve` and the real `openai` client:
response_format {"type": "json_object"} makes even a random-weight model answer with one JSON
object — at any temperature, streamed or not, with max_tokens tight or loose — while the same
request without it is free text; json_schema is refused with a clear 400 until it is supported.
Usage: test_structured.py /path/to/moeserve"""
import json
import sys

import openai

from serving import Server, check, finish, model_path

MOESERVE = sys.argv[1]
model = model_path("structured-qwen3moe-tiny-q4_k_m", "--arch", "qwen3moe", "--preset", "tiny", "--type",
                   "q4_k_m", "--seed", "13")
srv = Server(MOESERVE, model)
client = srv.client()
name = client.models.list().data[0].id
messages = [{"role": "user", "content": "Describe an expert as a JSON object."}]


def as_object(text, what):
    try:
        value = json.loads(text)
    except ValueError as e:
        check(False, f"{what}: {text!r} is not JSON ({e})")
        return None
    check(isinstance(value, dict), f"{what}: {text!r} is a JSON object")
    return value


for seed in range(6):
    for max_tokens in (2, 8, 48):
        r = client.chat.completions.create(model=name, messages=messages, max_tokens=max_tokens, temperature=1.0,
                                           seed=seed, response_format={"type": "json_object"})
        c = r.choices[0]
        as_object(c.message.content, f"seed {seed}, max_tokens {max_tokens}")
        check(c.finish_reason == "stop", f"seed {seed}, max_tokens {max_tokens}: it closed the object and stopped "
                                          f"({c.finish_reason})")
        check(r.usage.completion_tokens <= max_tokens, "within max_tokens")

# streamed: the deltas add up to an object; greedy: the same object as unstreamed
chunks = client.chat.completions.create(model=name, messages=messages, max_tokens=32, temperature=0, stream=True,
                                        response_format={"type": "json_object"})
streamed = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
as_object(streamed, "streamed")
plain = client.chat.completions.create(model=name, messages=messages, max_tokens=32, temperature=0,
                                       response_format={"type": "json_object"}).choices[0].message.content
check(plain == streamed, "streamed and not: the same object")
free = client.chat.completions.create(model=name, messages=messages, max_tokens=32, temperature=0)
check(free.choices[0].message.content != plain, "without response_format the model writes freely")
n3 = client.chat.completions.create(model=name, messages=messages, max_tokens=24, temperature=1.0, seed=5, n=3,
                                    response_format={"type": "json_object"})
for i, c in enumerate(n3.choices):
    as_object(c.message.content, f"n=3, choice {i}")
for kind in ({"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}},
             {"type": "xml"}):
    try:
        client.chat.completions.create(model=name, messages=messages, max_tokens=4, response_format=kind)
        check(False, f"response_format {kind['type']} is refused")
    except openai.BadRequestError as e:
        check(e.body.get("param") == "response_format", f"{kind['type']}: 400 names response_format ({e.body})")
srv.stop()
finish()
