#!/usr/bin/env python3
"""Writes the fuzz targets' seed corpora (tests/fuzz/corpus/<target>/) and the tokenizer
target's vocabularies (tests/fuzz/data/), so that both can be made again and reviewed as code.

    .venv/bin/python tools/fuzz_seeds.py            # rewrites them in place

Seeds are small, valid (or nearly valid) examples of each target's input: libFuzzer mutates
from them, so each one that reaches code the others do not is worth its bytes.  GGUF seeds
are made here with gguf-py or cut from tools/gen_model.py's tiny models (their metadata and
tensor infos, never their weights); every file stays under 64 KiB.  The tokenizer target's
deepseek-v3 and kimi-k2 vocabularies, which no test model has, are learnt on the tokenizer
cross-check's corpus by tests/data/tokenizer/synth_vocab.py (HF tokenizers' trainer, 1000 merges).
"""
from __future__ import annotations

import json
import shutil
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import gguf

ROOT = Path(__file__).resolve().parent.parent
FUZZ = ROOT / "tests" / "fuzz"
sys.path.insert(0, str(ROOT / "tests" / "data" / "tokenizer"))
import corpus  # noqa: E402  (the tokenizer cross-check's corpus)
import synth_vocab  # noqa: E402
MAX_SEED_BYTES = 64 * 1024


def write(target: str, name: str, data: bytes | str) -> None:
    if isinstance(data, str):
        data = data.encode()
    assert len(data) <= MAX_SEED_BYTES, (target, name, len(data))
    path = FUZZ / "corpus" / target / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def tiny_model(arch: str, tmp: Path) -> Path:
    out = tmp / f"{arch}.gguf"
    subprocess.run([sys.executable, str(ROOT / "tools" / "gen_model.py"), "--arch", arch,
                    "--preset", "tiny", "--type", "q4_k_m", "--seed", "1", "-o", str(out)],
                   check=True, stdout=subprocess.DEVNULL)
    return out


def header_of(path: Path) -> bytes:
    """The file up to its data section: magic, counts, metadata and tensor infos."""
    r = gguf.GGUFReader(path)
    return path.read_bytes()[:min(t.data_offset for t in r.tensors)]


def metadata_only(path: Path) -> bytes:
    """The file's metadata with no tensors: what the tokenizer and the template read."""
    r = gguf.GGUFReader(path)
    data = bytearray(path.read_bytes()[:min(t.field.offset for t in r.tensors)])
    struct.pack_into("<Q", data, 8, 0)  # tensor count
    return bytes(data)


# ---- GGUF ------------------------------------------------------------------------------------

def synthetic_gguf(tmp: Path, name: str, build) -> bytes:
    path = tmp / name
    w = gguf.GGUFWriter(str(path), "llama")
    build(w)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path.read_bytes()


def every_value_type(w: gguf.GGUFWriter) -> None:
    w.add_uint8("t.u8", 200)
    w.add_int8("t.i8", -100)
    w.add_uint16("t.u16", 60000)
    w.add_int16("t.i16", -30000)
    w.add_uint32("t.u32", 4000000000)
    w.add_int32("t.i32", -2000000000)
    w.add_float32("t.f32", 1.5)
    w.add_bool("t.bool", True)
    w.add_string("t.str", "caf\u00e9 \u2581x")
    w.add_uint64("t.u64", 2**63 + 5)
    w.add_int64("t.i64", -(2**62))
    w.add_float64("t.f64", -2.25)
    w.add_array("t.arr_i32", [1, -2, 3])
    w.add_array("t.arr_f32", [0.5, 1.5])
    w.add_array("t.arr_str", ["a", "", "bc"])
    w.add_array("t.arr_arr", [[1, 2], [3]])
    w.add_array("t.arr_bool", [True, False])


def some_tensors(w: gguf.GGUFWriter) -> None:
    w.add_uint32("general.alignment", 64)
    w.add_tensor("f32", np.arange(4, dtype=np.float32))
    w.add_tensor("f16", np.ones((2, 8), dtype=np.float16))
    # Quantised payloads are given as bytes: one row of one block each.
    w.add_tensor("q8_0", np.zeros((1, 34), dtype=np.uint8), raw_dtype=gguf.GGMLQuantizationType.Q8_0)
    w.add_tensor("q4_k", np.zeros((1, 144), dtype=np.uint8), raw_dtype=gguf.GGMLQuantizationType.Q4_K)
    w.add_tensor("i32.3d", np.zeros((2, 2, 2), dtype=np.int32))


def gguf_seeds(tmp: Path) -> None:
    empty = synthetic_gguf(tmp, "empty.gguf", lambda w: None)
    values = synthetic_gguf(tmp, "values.gguf", every_value_type)
    tensors = synthetic_gguf(tmp, "tensors.gguf", some_tensors)
    v2 = bytearray(tensors)
    struct.pack_into("<I", v2, 4, 2)
    for target in ("gguf", "gguf_header"):
        write(target, "empty", empty)
        write(target, "values", values)
        write(target, "tensors", tensors)
        write(target, "tensors-v2", bytes(v2))
    write("gguf", "truncated-tensor", tensors[:-7])
    write("gguf", "magic-only", b"GGUF")

    for arch, vocab in (("llama", "spm"), ("qwen3moe", "qwen2"), ("olmoe", "olmo"), ("gpt-oss", "gpt-4o")):
        model = tiny_model(arch, tmp)
        meta = metadata_only(model)
        (FUZZ / "data").mkdir(parents=True, exist_ok=True)
        (FUZZ / "data" / f"vocab-{vocab}.gguf").write_bytes(meta)
        write("gguf", f"metadata-{arch}", meta)
        write("gguf_header", f"metadata-{arch}", meta)
        write("gguf_header", f"header-{arch}", header_of(model))
    synthetic_vocabs()


# Pre-tokenizers no test model uses get a vocabulary learnt on the cross-check's corpus with no
# pre-tokenization (tests/data/tokenizer/synth_vocab.py), with the real models' special tokens.
SYNTH_VOCABS = {
    "deepseek-v3": ["<\uff5cbegin\u2581of\u2581sentence\uff5c>", "<\uff5cend\u2581of\u2581sentence\uff5c>",
                    "<\uff5cUser\uff5c>", "<\uff5cAssistant\uff5c>"],
    "kimi-k2": ["[BOS]", "[EOS]", "<|im_end|>", "<|im_user|>", "<|im_assistant|>", "<|im_system|>",
                "<|im_middle|>"],
}


def synthetic_vocabs() -> None:
    texts = [s.decode() for s in corpus.corpus() if corpus.is_valid(s)]
    for pre, specials in SYNTH_VOCABS.items():
        path = FUZZ / "data" / f"vocab-{pre}.gguf"
        synth_vocab.make(str(path), pre, texts, 1000, specials)
        write("gguf_header", f"metadata-{pre}", path.read_bytes())  # tokenizer_create runs there too


# ---- HTTP ------------------------------------------------------------------------------------

def http(method: str, path: str, body: str | None = None, headers: dict | None = None,
         version: str = "1.1") -> str:
    h = {"Host": "127.0.0.1"}
    h.update(headers or {})
    if body is not None and "Transfer-Encoding" not in h:
        h["Content-Length"] = str(len(body.encode()))
    lines = [f"{method} {path} HTTP/{version}"] + [f"{k}: {v}" for k, v in h.items()]
    return "\r\n".join(lines) + "\r\n\r\n" + (body or "")


def chat(content: str, **extra) -> str:
    return json.dumps({"model": "default", "messages": [{"role": "user", "content": content}],
                       **extra})


def completion(prompt: str, **extra) -> str:
    return json.dumps({"model": "default", "prompt": prompt, **extra})


def http_seeds() -> None:
    write("http", "get-health", http("GET", "/health"))
    write("http", "head-health", http("HEAD", "/health"))
    write("http", "get-metrics", http("GET", "/metrics"))
    write("http", "get-models", http("GET", "/v1/models"))
    write("http", "get-model", http("GET", "/v1/models/default"))
    write("http", "get-model-unknown", http("GET", "/v1/models/other?x=1"))
    write("http", "get-experts", http("GET", "/v1/experts/stats"))
    write("http", "get-dashboard", http("GET", "/dashboard"))
    write("http", "get-404", http("GET", "/nope"))
    write("http", "absolute-url", http("GET", "http://127.0.0.1/health"))
    write("http", "post-health-405", http("POST", "/health", "{}"))
    write("http", "chat", http("POST", "/v1/chat/completions", chat("Hello there")))
    write("http", "chat-stream", http("POST", "/v1/chat/completions",
                                      chat("Hi \u00e9", stream=True, n=2,
                                           stream_options={"include_usage": True})))
    write("http", "chat-logprobs", http("POST", "/v1/chat/completions",
                                        chat("abc", logprobs=True, top_logprobs=3, max_tokens=2)))
    write("http", "completion", http("POST", "/v1/completions", completion("Once upon")))
    write("http", "completion-stream-logprobs", http(
        "POST", "/v1/completions", completion("xyz", stream=True, logprobs=2, stop=["y"])))
    write("http", "engine-reject", http("POST", "/v1/chat/completions", chat("!reject now")))
    write("http", "engine-busy", http("POST", "/v1/completions", completion("!busy")))
    write("http", "engine-crash-stream", http("POST", "/v1/chat/completions",
                                              chat("!crash abc", stream=True)))
    write("http", "bad-json", http("POST", "/v1/chat/completions", "{\"model\":"))
    write("http", "pipelined", http("GET", "/health") + http("POST", "/v1/completions",
                                                             completion("ab")) + http("GET", "/v1/models"))
    write("http", "chunked", "POST /v1/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked"
          "\r\n\r\n" + "\r\n".join(f"{len(p):x}\r\n{p}" for p in ['{"model":"default",', '"prompt":"hi"}'])
          + "\r\n0\r\n\r\n")
    write("http", "expect-continue", http("POST", "/v1/completions", completion("a"),
                                          {"Expect": "100-continue"}))
    write("http", "http10-keepalive", http("GET", "/health", headers={"Connection": "keep-alive"},
                                           version="1.0"))
    write("http", "connection-close", http("GET", "/health", headers={"Connection": "close"}))
    write("http", "cl-and-te", http("POST", "/v1/completions", completion("a"),
                                    {"Transfer-Encoding": "chunked", "Content-Length": "3"}))
    write("http", "bad-header-name", "GET /health HTTP/1.1\r\nBad Header: x\r\n\r\n")
    write("http", "http2", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
    write("http", "upgrade", http("GET", "/health", headers={"Connection": "Upgrade",
                                                             "Upgrade": "websocket"}))
    write("http", "too-large-body", http("POST", "/v1/completions", "x" * 9000))
    write("http", "keyed-ok", b"\x01" + http("GET", "/v1/models",
                                             headers={"Authorization": "Bearer k"}).encode())
    write("http", "keyed-missing", b"\x01" + http("POST", "/v1/chat/completions", chat("hi")).encode())
    write("http", "keyed-twice", b"\x01" + ("GET /metrics HTTP/1.1\r\nAuthorization: Bearer k\r\n"
                                             "authorization: Bearer k\r\n\r\n").encode())
    write("http", "loading", b"\x02" + http("GET", "/health").encode()
          + http("POST", "/v1/chat/completions", chat("hi")).encode())


# ---- the OpenAI request bodies ------------------------------------------------------------

def api_seeds() -> None:
    chat_kind, completion_kind = b"\x00", b"\x01"
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": [{"type": "text", "text": "Hello"}]},
            {"role": "developer", "content": "x", "name": "dev"}, {"role": "user", "content": "?"}]
    seeds = {
        "chat-min": (chat_kind, {"model": "default", "messages": [{"role": "user", "content": "hi"}]}),
        "chat-all": (chat_kind, {
            "model": "default", "messages": msgs, "max_tokens": 16, "max_completion_tokens": 8,
            "temperature": 0.7, "top_p": 0.9, "top_k": 40, "min_p": 0.05, "repetition_penalty": 1.1,
            "presence_penalty": 0.5, "frequency_penalty": -0.5, "seed": 42, "n": 2, "stream": True,
            "stream_options": {"include_usage": True}, "logprobs": True, "top_logprobs": 2,
            "stop": ["\n", "END"], "logit_bias": {"5": -100, "17": 3.5}, "user": "u1",
            "store": False, "metadata": {"a": "b"}, "tool_choice": "none", "tools": []}),
        "chat-json-object": (chat_kind, {"model": "default", "messages": msgs[:2],
                                         "response_format": {"type": "json_object"}}),
        "chat-json-schema": (chat_kind, {
            "model": "default", "messages": msgs[:2],
            "response_format": {"type": "json_schema", "json_schema": {"name": "x", "strict": True, "schema": {
                "type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "array", "items": {"type": "string"}},
                                                 "c": {"enum": ["x", 1, None]}},
                "required": ["a", "b", "c"], "additionalProperties": False}}}}),
        "chat-tools": (chat_kind, {"model": "default", "messages": msgs[:2],
                                   "tools": [{"type": "function", "function": {"name": "f"}}]}),
        "chat-bad-role": (chat_kind, {"model": "default", "messages": [{"role": "robot", "content": "x"}]}),
        "chat-wrong-model": (chat_kind, {"model": "gpt-4\u00e9", "messages": []}),
        "completion-min": (completion_kind, {"model": "default", "prompt": "Once"}),
        "completion-all": (completion_kind, {
            "model": "default", "prompt": ["only one"], "max_tokens": 3, "logprobs": 5, "echo": False,
            "best_of": 1, "suffix": "", "stop": "x", "n": 4, "seed": -1}),
        "completion-token-ids": (completion_kind, {"model": "default", "prompt": [1, 2, 3]}),
        "completion-echo": (completion_kind, {"model": "default", "prompt": "a", "echo": True}),
    }
    for name, (kind, body) in seeds.items():
        write("api", name, kind + json.dumps(body).encode())
    write("api", "not-json", b"\x00{\"model\": \"default\", ")
    write("api", "trailing", b"\x01{\"model\":\"default\",\"prompt\":\"a\"} x")


# ---- chat templates ------------------------------------------------------------------------

def template_seeds() -> None:
    conv = b"\x00" + b"\x00Be brief.\x1e\x01Hi\x1e\x02Hello\x1e\x01Bye"
    ctx = json.dumps({"messages": [{"role": "user", "content": "hi", "tool_calls": [
        {"type": "function", "function": {"name": "f", "arguments": {"x": 1}}}]}],
        "tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}],
        "add_generation_prompt": True, "bos_token": "<s>", "eos_token": "</s>"}).encode()
    src = ROOT / "tests" / "data" / "templates"
    for i, path in enumerate(sorted(src.glob("*.jinja"))):
        text = path.read_bytes()
        write("template", path.stem, text + (conv if i % 2 == 0 else b"\x00" + ctx))
    small = {
        "expr": "{{ 1 + 2 * 3 }}{{ 'ab' ~ 'c' }}{{ [1,2,3][1:] }}{{ {'a': 1}.items() | list }}",
        "filters": "{{ 'Hello' | upper | replace('L', 'l') | trim | length }}{{ [3,1,2] | sort | join(',') }}"
                   "{{ messages | map(attribute='role') | select('equalto', 'user') | list | tojson }}",
        "macro": "{% macro m(x, y=2) %}{{ x }}-{{ y }}{% endmacro %}{{ m(1) }}{{ m(3, y=4) }}",
        "loop": "{% for m in messages %}{{ loop.index }}{{ m.role }}{% if loop.last %}!{% endif %}"
                "{% else %}none{% endfor %}",
        "namespace": "{% set ns = namespace(n=0) %}{% for m in messages %}{% set ns.n = ns.n + 1 %}{% endfor %}{{ ns.n }}",
        "strings": "{{ 'a,b'.split(',') }}{{ ' x '.strip() }}{{ 'abc'.startswith('a') }}{{ '%s=%d' % ('k', 3) }}"
                   "{{ '{}{}'.format(1, 'x') }}{{ 'x' * 3 }}{{ 'AbC'.lower().title() }}",
        "raise": "{% if messages | length > 2 %}{{ raise_exception('too many') }}{% endif %}",
        "strftime": "{{ strftime_now('%Y-%m-%d %H:%M') }}",
        "whitespace": "{%- for m in messages -%}\n  {{- m.content -}}\n{%- endfor %}\n{# comment #}",
        "range": "{% for i in range(3, 0, -1) %}{{ i }}{% endfor %}{{ range(5) | sum }}",
    }
    for name, text in small.items():
        write("template", name, text.encode() + conv)


# ---- tokenizer -----------------------------------------------------------------------------

def tokenizer_seeds() -> None:
    texts = ["Hello world", " The quick brown fox jumps over the lazy dog.",
             "caf\u00e9 e\u0301 \u00c5ngstr\u00f6m", "\u4f60\u597d\uff0c\u4e16\u754c",
             "int main(void) { return 0; }\n\tx += 1;", "123 4567 3.14159",
             "<|im_start|>user\nhi<|im_end|>", "<s>[INST] hi [/INST]</s>", "   spaces   and\n\n\nnewlines",
             "emoji \U0001f600\U0001f44d", "\u2581leading",
             "HelloWorld .NET x'\u017f \u6f22\u5b57\u304b\u306a\u3005\u3007 \u2e80 \u9fa6 e\u0301\u200b",
             "1234567 \u0661\u0662\u0663\u0664 \u00bd!!\n\n \t\u3000x"]
    for i, t in enumerate(texts):
        for vocab in range(6):  # the vocabularies of fuzz_tokenizer.c, in its order
            flags = (0x10 if i % 2 else 0) | (0x20 if i % 3 == 0 else 0) | (0x40 if i % 4 == 0 else 0)
            write("tokenizer", f"text{i}-v{vocab}", bytes([vocab | flags]) + t.encode())
    write("tokenizer", "invalid-utf8", b"\x01ab\xff\xc3(\xe2\x82 \xf0\x9f\x98")
    write("tokenizer", "nul", b"\x02a\x00b")


# ---- config --------------------------------------------------------------------------------

def config_seeds() -> None:
    for path in sorted((ROOT / "config").glob("*.json")):
        write("config", path.stem, path.read_bytes())
    write("config", "with-sets", b'{"model": {"path": "/m.gguf"}}\x00server.port=9000\n'
          b"cache.host_budget=25%\nserver.max_body_bytes=1.5MiB\nserver.header_timeout_ms=2m\n"
          b"server.api_keys=a,b\nmodel.name=\nnope.key=1")
    write("config", "bad-types", b'{"model": {"path": 3}, "server": {"port": "x", "host": null}}')
    write("config", "unknown-key", b'{"model": {"path": "m.gguf"}, "sever": {}}')
    write("config", "syntax", b'{"model": {"path": "m.gguf",\n  }')


# ---- JSON schema -----------------------------------------------------------------------------

def schema_seeds() -> None:
    seeds = {
        "object": ({"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"},
                                                     "tags": {"type": "array", "items": {"type": "string"}}},
                    "required": ["name", "age", "tags"], "additionalProperties": False},
                   '{"name":"Al\\u00e9x","age":-12,"tags":["a","b"]}'),
        "number": ({"type": "number"}, "-12.5e+3"),
        "enum": ({"enum": ["red", "green", 3, None, True]}, '"green"'),
        "const": ({"const": "fixed"}, '"fixed"'),
        "nested": ({"type": "array", "items": {"type": "object", "properties": {"v": {"type": "boolean"},
                    "n": {"type": "null"}}, "required": ["v", "n"]}}, '[{"v":true,"n":null},{"v":false,"n":null}]'),
        "annotations": ({"$schema": "x", "title": "t", "description": "d", "type": "string", "default": "",
                         "examples": ["e"], "strict": True}, '"esc\\"aped\\n"'),
        "refused": ({"anyOf": [{"type": "string"}]}, '"x"'),
    }
    for name, (schema, text) in seeds.items():
        write("json_schema", name, json.dumps(schema).encode() + b"\x00" + text.encode())
    write("json_schema", "json-object", b'\x00{"a":[1,2.5e-3,true,null,{"b":"\\u0041"}],"c":{}}')
    write("json_schema", "json-object-partial", b'\x00{"a":[1,{"b":"x')


def toolcall_seeds() -> None:
    # first byte b: format b % 4 and chunks of 1 + b / 4 bytes (fuzz_toolcall.c), then the answer
    seeds = {
        'hermes': b'\x01Sure.\n<tool_call>\n{"name": "get", "arguments": {"q": "abc"}}\n</tool_call>',
        'hermes-two': b'\x05<tool_call>\n{"name":"go","arguments":{}}\n</tool_call>\n<tool_call>\n{"name":"get","arguments":{"q":"x","n":3}}\n</tool_call>',
        'llama': b'\x03<|python_tag|>{"name": "get", "parameters": {"q": "a", "n": null}}',
        'mistral': b'\x02[TOOL_CALLS][{"name": "get", "arguments": {"q": "z"}}, {"name": "go", "arguments": {}}]',
        'mistral-args': b'\x06[TOOL_CALLS]get[ARGS]{"q": "hi"}',
        'not-a-call': b'\t<tool_call>\n{"nom": 1}\n</tool_call> after',
        'text': b'\x00plain text with \xc3\xbcn\xc3\xafcode and a < sign',
    }
    for name, data in seeds.items():
        write("toolcall", name, data)


def main() -> None:
    for sub in ("corpus",):
        shutil.rmtree(FUZZ / sub, ignore_errors=True)
    with tempfile.TemporaryDirectory() as tmp:
        gguf_seeds(Path(tmp))
    http_seeds()
    api_seeds()
    template_seeds()
    tokenizer_seeds()
    config_seeds()
    schema_seeds()
    toolcall_seeds()
    total = sum(p.stat().st_size for p in (FUZZ / "corpus").rglob("*") if p.is_file())
    n = sum(1 for p in (FUZZ / "corpus").rglob("*") if p.is_file())
    print(f"fuzz_seeds: {n} seed files, {total} bytes")


if __name__ == "__main__":
    main()
