#!/usr/bin/env python3
"""Structured output through `moeserve serve` and the real `openai` client:
response_format {"type": "json_object"} makes even a random-weight model answer with one JSON
object — at any temperature, streamed or not, with max_tokens tight or loose — while the same
request without it is free text; {"type": "json_schema"} makes it answer with a value its schema
accepts (checked by an independent walk here, and for a corpus of schemas — optional properties,
lengths, anyOf, type lists, recursive $ref, enums — by the `jsonschema` package, streamed and not
giving the same text), and a schema with keywords the server cannot enforce is refused with a 400
that names them.
Usage: test_structured.py /path/to/moeserve"""
import json
import sys

import jsonschema
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
try:
    client.chat.completions.create(model=name, messages=messages, max_tokens=4, response_format={"type": "xml"})
    check(False, "response_format xml is refused")
except openai.BadRequestError as e:
    check(e.body.get("param") == "response_format", f"xml: 400 names response_format ({e.body})")

# ---- json_schema: OpenAI's strict structured outputs ------------------------------------------------
SCHEMA = {"type": "object", "additionalProperties": False, "required": ["name", "age", "tags", "ok", "where", "unit"],
          "properties": {"name": {"type": "string", "description": "who"}, "age": {"type": "integer"},
                         "tags": {"type": "array", "items": {"enum": ["red", "green", "blue"]}},
                         "ok": {"type": "boolean"},
                         "where": {"type": "object", "additionalProperties": False, "required": ["lat", "lon"],
                                   "properties": {"lat": {"type": "number"}, "lon": {"type": "number"}}},
                         "unit": {"const": "m"}}}


def fits(value, schema, path="$"):
    """An independent check of the subset the server enforces (with its key order)."""
    if "const" in schema:
        return value == schema["const"] or f"{path}: {value!r} is not {schema['const']!r}"
    if "enum" in schema:
        return value in schema["enum"] or f"{path}: {value!r} not in the enum"
    t = schema["type"]
    if t == "object":
        if not isinstance(value, dict) or list(value) != list(schema["properties"]):
            return f"{path}: keys {list(value) if isinstance(value, dict) else value!r}"
        for k, sub in schema["properties"].items():
            r = fits(value[k], sub, f"{path}.{k}")
            if r is not True:
                return r
        return True
    if t == "array":
        if not isinstance(value, list):
            return f"{path}: not an array"
        for i, v in enumerate(value):
            r = fits(v, schema["items"], f"{path}[{i}]")
            if r is not True:
                return r
        return True
    ok = {"string": lambda v: isinstance(v, str), "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
          "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
          "boolean": lambda v: isinstance(v, bool), "null": lambda v: v is None}[t](value)
    return ok or f"{path}: {value!r} is not {t}"


fmt = {"type": "json_schema", "json_schema": {"name": "person", "strict": True, "schema": SCHEMA}}
for seed in range(6):
    for max_tokens in (90, 200):
        r = client.chat.completions.create(model=name, messages=messages, max_tokens=max_tokens, temperature=1.0,
                                           seed=seed, response_format=fmt)
        value = as_object(r.choices[0].message.content, f"schema, seed {seed}, max_tokens {max_tokens}")
        verdict = fits(value, SCHEMA) if value is not None else "not JSON"
        check(verdict is True, f"schema, seed {seed}, max_tokens {max_tokens}: {verdict}")
        check(r.choices[0].finish_reason == "stop", f"schema, seed {seed}: stopped ({r.choices[0].finish_reason})")
chunks = client.chat.completions.create(model=name, messages=messages, max_tokens=120, temperature=0.7, seed=3,
                                        stream=True, response_format=fmt)
streamed = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
value = as_object(streamed, "schema, streamed")
check(value is not None and fits(value, SCHEMA) is True, "schema, streamed: fits")
# fewer tokens than the shortest valid answer needs: cut, as OpenAI cuts, and said so
r = client.chat.completions.create(model=name, messages=messages, max_tokens=8, temperature=1.0, seed=1,
                                   response_format=fmt)
check(r.choices[0].finish_reason == "length", f"max_tokens 8 < the schema's shortest answer: length "
                                              f"({r.choices[0].finish_reason}, {r.choices[0].message.content!r})")
# ---- a corpus of schemas: every answer validated by the `jsonschema` package, streamed = unstreamed --------
CORPUS = {
    "optional properties": {"type": "object", "required": ["id"],
                            "properties": {"id": {"type": "integer"}, "nick": {"type": "string", "maxLength": 8},
                                           "score": {"type": "number"}, "tags": {"type": "array",
                                                                                 "items": {"type": "string"}}}},
    "lengths": {"type": "object", "required": ["code", "words"], "additionalProperties": False,
                "properties": {"code": {"type": "string", "minLength": 3, "maxLength": 5},
                               "words": {"type": "array", "items": {"type": "string", "maxLength": 4},
                                         "minItems": 2, "maxItems": 3}}},
    "anyOf and type lists": {"type": "object", "required": ["v", "w"],
                             "properties": {"v": {"anyOf": [{"type": "integer"}, {"type": "string", "maxLength": 6},
                                                            {"type": "array", "items": {"type": "boolean"},
                                                             "maxItems": 2}]},
                                            "w": {"type": ["number", "null"]}}},
    "$ref recursion": {"type": "object", "required": ["root"], "properties": {"root": {"$ref": "#/$defs/node"}},
                       "$defs": {"node": {"type": "object", "required": ["label", "kids"],
                                          "properties": {"label": {"type": "string", "maxLength": 4},
                                                         "kids": {"type": "array", "maxItems": 2,
                                                                  "items": {"$ref": "#/$defs/node"}}}}}},
    "enums and consts": {"type": "object", "required": ["kind", "level", "on"],
                         "properties": {"kind": {"enum": ["a", "bb", 3, None, True]}, "level": {"const": 2.5},
                                        "on": {"type": "boolean"}}},
}
for label, schema in CORPUS.items():
    fmt_c = {"type": "json_schema", "json_schema": {"name": "c", "schema": schema}}
    for seed in range(8):
        r = client.chat.completions.create(model=name, messages=messages, max_tokens=160, temperature=1.0,
                                           seed=seed, response_format=fmt_c)
        text = r.choices[0].message.content
        try:
            jsonschema.validate(json.loads(text), schema)
            ok = True
        except (ValueError, jsonschema.ValidationError) as e:
            ok = str(e)[:200]
        check(ok is True, f"{label}, seed {seed}: {text!r} validates ({ok})")
    kw = dict(model=name, messages=messages, max_tokens=160, temperature=0.8, seed=11, response_format=fmt_c)
    plain = client.chat.completions.create(**kw).choices[0].message.content
    streamed = "".join(ch.choices[0].delta.content or "" for ch in client.chat.completions.create(stream=True, **kw)
                       if ch.choices)
    check(streamed == plain, f"{label}: streamed and not give the same text")

for bad, says in (({"type": "object", "properties": {"a": {"type": "string", "pattern": "^x"}}}, "pattern"),
                  ({"type": "object", "properties": {"a": {"allOf": [{"type": "string"}]}}}, "allOf"),
                  ({"type": "object", "properties": {"a": {"type": "integer", "minimum": 3}}}, "minimum"),
                  ({"type": "object", "properties": {"a": {"$ref": "#/$defs/missing"}}}, "missing"),
                  ({"type": "string"}, "top level must be an object")):
    try:
        client.chat.completions.create(model=name, messages=messages, max_tokens=4,
                                       response_format={"type": "json_schema", "json_schema": {"name": "b", "schema": bad}})
        check(False, f"a schema with {says} is refused")
    except openai.BadRequestError as e:
        check(says in str(e.body), f"the refusal says {says!r}: {e.body}")
try:
    client.chat.completions.create(model=name, messages=messages, max_tokens=4,
                                   response_format={"type": "json_schema", "json_schema": {"name": "b"}})
    check(False, "json_schema without a schema is refused")
except openai.BadRequestError as e:
    check(e.body.get("param") == "response_format", f"no schema: 400 names response_format ({e.body})")
srv.stop()
finish()
