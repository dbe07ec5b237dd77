#!/usr/bin/env python3
"""Tool calls through `moeserve serve` and the real `openai` client, for each format the server
reads: a template that never mentions tools (the generator's ChatML: tools described in a system
message, Hermes answers; Mixtral v0.1's, which refuses a system role and wants user and assistant
to alternate: the description opens the first user turn, tool results join the user turns), Qwen3's (<tool_call>), Mistral's v3 tools template ([TOOL_CALLS]) and
Llama 3.1's (JSON with "parameters").

With tool_choice "required" or a named function even a random-weight model answers with
well-formed calls: names among the tools, arguments that parse as JSON and fit the function's
parameters (checked with the `jsonschema` package), finish_reason "tool_calls", content null; one
call when parallel_tool_calls is false; streamed deltas (id, type and name first, then argument
fragments) add up to the same calls as the unstreamed greedy answer.  The prompt is rendered by
the model's own template with the tools and a history of calls and results: its token count
equals that of Python jinja2's rendering (transformers' conventions) tokenized by the same
vocabulary.  Malformed tools, choices naming unknown functions, parameters the server cannot
enforce and templates whose call format it does not read get a 400 naming the problem.
Usage: test_tools.py /path/to/moeserve /path/to/tok_tool"""
import json
import os
import subprocess
import sys

import jinja2
import jsonschema
import openai
from jinja2.sandbox import ImmutableSandboxedEnvironment

from serving import ROOT, Server, check, finish, model_path

MOESERVE, TOK_TOOL = sys.argv[1], sys.argv[2]
model = model_path("tools-qwen3moe-tiny-q4_k_m-4k", "--arch", "qwen3moe", "--preset", "tiny", "--type", "q4_k_m",
                   "--seed", "17", "--n-ctx", "4096")
TEMPLATES = os.path.join(ROOT, "tests", "data", "templates")

TOOLS = [
    {"type": "function", "function": {
        "name": "get_weather", "description": "The weather in a city",
        "parameters": {"type": "object", "additionalProperties": False, "required": ["city", "unit", "days"],
                       "properties": {"city": {"type": "string", "description": "the city"},
                                      "unit": {"enum": ["celsius", "fahrenheit"]},
                                      "days": {"type": "integer"}}}}},
    {"type": "function", "function": {
        "name": "search", "description": "Search the web",
        "parameters": {"type": "object", "properties": {"query": {"type": "string"},
                                                        "limit": {"type": "number"},
                                                        "safe": {"type": "boolean"}}}}},
    {"type": "function", "function": {"name": "ping"}},
    {"type": "function", "function": {
        "name": "schedule", "description": "Book a meeting",
        "parameters": {"type": "object", "required": ["when", "who"],
                       "properties": {"when": {"anyOf": [{"type": "string", "maxLength": 20}, {"type": "integer"}]},
                                      "who": {"type": "array", "items": {"$ref": "#/$defs/person"},
                                              "minItems": 1, "maxItems": 3},
                                      "note": {"type": ["string", "null"]}},
                       "$defs": {"person": {"type": "object", "required": ["name"],
                                            "properties": {"name": {"type": "string", "minLength": 1,
                                                                    "maxLength": 12},
                                                           "email": {"type": "string"}}}}}}},
]
PARAMS = {t["function"]["name"]: t["function"].get("parameters", {"type": "object", "properties": {}})
          for t in TOOLS}
ASK = [{"role": "user", "content": "What is the weather in Zürich for the next 3 days?"}]
HISTORY = ASK + [
    {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_1", "type": "function",
         "function": {"name": "get_weather", "arguments": json.dumps({"city": "Zürich", "unit": "celsius",
                                                                        "days": 3})}}]},
    {"role": "tool", "tool_call_id": "call_1", "content": "{\"temperature\": [4, 6, 5]}"},
    {"role": "assistant", "content": "4 to 6 degrees."},
    {"role": "user", "content": "And in Bern?"},
]


def check_calls(calls, what, allowed, n=None):
    check(calls is not None and len(calls) >= 1, f"{what}: made a call ({calls})")
    if not calls:
        return
    if n is not None:
        check(len(calls) == n, f"{what}: {n} call(s), got {len(calls)}")
    ids = set()
    for c in calls:
        check(c.type == "function" and c.id.startswith("call_") and c.id not in ids, f"{what}: id {c.id}")
        ids.add(c.id)
        check(c.function.name in allowed, f"{what}: {c.function.name} is one of {allowed}")
        try:
            args = json.loads(c.function.arguments)
        except ValueError as e:
            check(False, f"{what}: arguments {c.function.arguments!r} are not JSON ({e})")
            continue
        try:
            jsonschema.validate(args, PARAMS.get(c.function.name, {"type": "object", "properties": {}}))
            ok = True
        except jsonschema.ValidationError as e:
            ok = e.message
        check(ok is True, f"{what}: arguments {c.function.arguments!r} fit {c.function.name}'s parameters ({ok})")


def streamed_calls(client, name, **kw):
    """The calls a stream's deltas add up to, as a client library accumulates them."""
    calls, finish_reason, content = {}, None, ""
    for ch in client.chat.completions.create(model=name, stream=True, **kw):
        if not ch.choices:
            continue
        d = ch.choices[0].delta
        content += d.content or ""
        for tc in d.tool_calls or []:
            if tc.index not in calls:
                check(tc.id is not None and tc.type == "function" and tc.function.name,
                      f"stream: call {tc.index} starts with id, type and name ({tc})")
                calls[tc.index] = {"id": tc.id, "name": tc.function.name, "arguments": ""}
            else:
                check(tc.id is None and tc.function.name is None, "stream: later deltas carry only arguments")
            calls[tc.index]["arguments"] += tc.function.arguments or ""
        finish_reason = ch.choices[0].finish_reason or finish_reason
    return [calls[i] for i in sorted(calls)], finish_reason, content


def tojson(x, indent=None, separators=None, sort_keys=False):
    return json.dumps(x, ensure_ascii=False, indent=indent, separators=separators, sort_keys=sort_keys)


def raise_exception(msg):
    raise jinja2.exceptions.TemplateError(msg)


ENV = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])
ENV.filters["tojson"] = tojson
ENV.globals["raise_exception"] = raise_exception


def reference_prompt_tokens(template_src, messages, tools):
    """transformers' apply_chat_template: arguments as dicts, tools as given; then our vocabulary
    (cross-checked against Hugging Face's elsewhere) on the text, special tokens parsed."""
    msgs = []
    for m in messages:
        m = dict(m)
        if m.get("content") is None:
            m["content"] = ""
        if m.get("tool_calls"):
            m["tool_calls"] = [{**c, "function": {"name": c["function"]["name"],
                                                  "arguments": json.loads(c["function"]["arguments"])}}
                               for c in m["tool_calls"]]
        msgs.append(m)
    def tok(req):
        return json.loads(subprocess.run([TOK_TOOL, model], input=json.dumps(req) + "\n", capture_output=True,
                                         text=True, check=True).stdout)

    info = tok({"op": "info"})
    special = {k: bytes.fromhex(tok({"op": "decode", "ids": [info[k]], "skip": False})["hex"]).decode()
               if info[k] >= 0 else "" for k in ("bos", "eos")}
    text = ENV.from_string(template_src).render(messages=msgs, tools=tools, add_generation_prompt=True,
                                                bos_token=special["bos"], eos_token=special["eos"])
    # as the server: BOS added when the vocabulary asks for it and the text does not start with it
    flags = 2 | (1 if info["add_bos"] and not (special["bos"] and text.startswith(special["bos"])) else 0)
    return len(tok({"op": "encode", "hex": text.encode().hex(), "flags": flags})["ids"])


NAMES = [t["function"]["name"] for t in TOOLS]
CASES = [  # (what, chat template override or None for the file's ChatML, jinja source for the reference)
    ("generic", None, None),
    # Mixtral-Instruct v0.1's template: no tools, no system role, strict alternation
    ("generic on mistral", "mistral", None),
    ("qwen3", os.path.join(TEMPLATES, "Qwen-Qwen3-0.6B.jinja"), "Qwen-Qwen3-0.6B.jinja"),
    ("mistral", os.path.join(TEMPLATES, "mistral-v3-tools.jinja"), None),
    ("llama3.1", os.path.join(TEMPLATES, "meta-llama-Llama-3.1-8B-Instruct.jinja"),
     "meta-llama-Llama-3.1-8B-Instruct.jinja"),
]

for what, tmpl, ref in CASES:
    extra = ["--set", "kv.context_length=4096"]
    if tmpl:
        extra += ["--set", f"model.chat_template={tmpl}"]
    srv = Server(MOESERVE, model, *extra)
    client = srv.client()
    name = client.models.list().data[0].id
    # Mistral's template wants the conversation to end on a user turn after tool results, and
    # Llama 3.1's allows one call per answer: both fine with these messages.
    for seed in range(3):
        r = client.chat.completions.create(model=name, messages=ASK, tools=TOOLS, tool_choice="required",
                                           max_tokens=160, temperature=1.0, seed=seed)
        c = r.choices[0]
        check_calls(c.message.tool_calls, f"{what} required seed {seed}", NAMES)
        check(c.finish_reason == "tool_calls", f"{what} required seed {seed}: finish_reason {c.finish_reason}")
        check(c.message.content is None, f"{what}: no content besides the calls ({c.message.content!r})")
    for seed in range(3):
        r = client.chat.completions.create(model=name, messages=ASK, tools=TOOLS, max_tokens=200, temperature=1.0,
                                           seed=seed, tool_choice={"type": "function", "function": {"name": "schedule"}})
        check_calls(r.choices[0].message.tool_calls, f"{what} schedule seed {seed}", ["schedule"])
    r = client.chat.completions.create(model=name, messages=ASK, tools=TOOLS, max_tokens=120, temperature=0,
                                       tool_choice={"type": "function", "function": {"name": "search"}},
                                       parallel_tool_calls=False)
    c = r.choices[0]
    check_calls(c.message.tool_calls, f"{what} named", ["search"], n=1)
    # streamed: the same calls as the greedy answer above
    calls, fr, content = streamed_calls(client, name, messages=ASK, tools=TOOLS, max_tokens=120, temperature=0,
                                        tool_choice={"type": "function", "function": {"name": "search"}},
                                        parallel_tool_calls=False)
    want = [{"name": t.function.name, "arguments": t.function.arguments} for t in c.message.tool_calls or []]
    check([{"name": x["name"], "arguments": x["arguments"]} for x in calls] == want,
          f"{what}: streamed calls {calls} equal the unstreamed {want}")
    check(fr == c.finish_reason and content == "", f"{what}: the stream ends as the unstreamed answer "
                                                   f"({fr} vs {c.finish_reason}, {content!r})")
    # n=2: each choice its own calls
    r = client.chat.completions.create(model=name, messages=HISTORY, tools=TOOLS, tool_choice="required", n=2,
                                       max_tokens=160, temperature=1.0, seed=7)
    for i, c in enumerate(r.choices):
        check_calls(c.message.tool_calls, f"{what} n=2 choice {i} after a history of calls", NAMES)
    # auto: the model may answer in words; whatever it writes, the response is well-formed
    r = client.chat.completions.create(model=name, messages=HISTORY, tools=TOOLS, max_tokens=24, temperature=0)
    c = r.choices[0]
    check(c.finish_reason in ("stop", "length", "tool_calls"), f"{what} auto: {c.finish_reason}")
    check(c.message.content is not None or c.message.tool_calls, f"{what} auto: content or calls")
    # the template saw the tools and the history as transformers would show them
    if ref:
        src = open(os.path.join(TEMPLATES, ref), encoding="utf-8").read()
        want_n = reference_prompt_tokens(src, HISTORY, TOOLS)
        check(r.usage.prompt_tokens == want_n,
              f"{what}: prompt of {r.usage.prompt_tokens} tokens, jinja2's rendering has {want_n}")
        none = client.chat.completions.create(model=name, messages=ASK, tools=TOOLS, tool_choice="none",
                                              max_tokens=1, temperature=0)
        check(none.usage.prompt_tokens == reference_prompt_tokens(src, ASK, None),
              f"{what}: tool_choice none shows no tools")
    # what cannot be done is refused up front
    bad = [
        ("tool_choice", dict(tools=TOOLS, tool_choice={"type": "function", "function": {"name": "nope"}})),
        ("tool_choice", dict(tool_choice="required")),
        ("tools[0].function.name", dict(tools=[{"type": "function", "function": {"name": "has space"}}])),
        ("tools[0]", dict(tools=[{"type": "retrieval"}])),
        ("tools[1].function.name", dict(tools=[TOOLS[2], TOOLS[2]])),
        (None, dict(tool_choice="required", tools=[{"type": "function", "function": {
            "name": "f", "parameters": {"type": "object", "properties": {"a": {"type": "string",
                                                                                "pattern": "^x"}}}}}])),
        (None, dict(tools=TOOLS, tool_choice="required", response_format={"type": "json_object"})),
    ]
    for param, kw in bad:
        try:
            client.chat.completions.create(model=name, messages=ASK, max_tokens=4, **kw)
            check(False, f"{what}: {kw} is refused")
        except openai.BadRequestError as e:
            check(param is None or e.body.get("param") == param, f"{what}: 400 names {param} ({e.body})")
            if "pattern" in json.dumps(kw):
                check("pattern" in e.body.get("message", ""), f"{what}: the message names the keyword ({e.body})")
    check(srv.stop() == 0, f"{what}: clean exit")

# a template whose call format is not read: tools refused with a clear message, plain chat served
srv = Server(MOESERVE, model, "--set", "kv.context_length=4096", "--set",
             f"model.chat_template={os.path.join(TEMPLATES, 'deepseek-ai-DeepSeek-V3.1.jinja')}")
client = srv.client()
name = client.models.list().data[0].id
try:
    client.chat.completions.create(model=name, messages=ASK, tools=TOOLS, max_tokens=4)
    check(False, "deepseek template: tools refused")
except openai.BadRequestError as e:
    check("format" in e.body.get("message", ""), f"deepseek template: the 400 says why ({e.body})")
r = client.chat.completions.create(model=name, messages=ASK, max_tokens=4)
check(r.choices[0].message.content is not None, "deepseek template: chat without tools works")
check(srv.stop() == 0, "deepseek: clean exit")
finish()
