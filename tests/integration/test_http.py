#!/usr/bin/env python3
"""The HTTP server (server/) in front of a fake engine (tests/tools/fake_serve.c), on free loopback
ports, driven by the real `openai` Python client and by raw sockets.

What it checks against what:
- responses, chunks, usage and logprobs as the `openai` client parses them, against the fake
  engine's documented rule (the prompt echoed back one character per token, computed here
  independently in Python), errors as the client's exception types with OpenAI's error shape;
- raw HTTP: malformed requests, smuggling attempts (CL+TE, duplicate Content-Length), size limits
  (431, 413), slow headers (408), idle timeout, pipelining, chunked bodies, Expect: 100-continue,
  HTTP/1.0, absolute-form targets, HTTP/2 request lines (505), too many connections, a client
  vanishing mid-stream (its job cancelled exactly once), invalid UTF-8 in a prompt;
- back-pressure: a slow reader's stream is coalesced past the high-water mark and stays exact,
  300 pipelined requests to a client that does not read all arrive in order;
- 64 concurrent streaming clients, three rounds, every stream complete and exact; no fd growth;
- /metrics parsed by prometheus_client's own parser, counters equal to the requests made;
- SIGTERM with streams in flight: each ends with a finish_reason chunk and [DONE], exit status 0.
Usage: test_http.py /path/to/fake_serve"""
import concurrent.futures
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import openai
from prometheus_client.parser import text_string_to_metric_families

FAKE = sys.argv[1]
MODEL = "fake-model"
passed = failed = 0


def section(name):
    global t_section
    now = time.time()
    if os.environ.get("HTTP_TEST_TIMES"):
        print(f"  [{now - t_section:5.1f} s] before {name}", flush=True)
    t_section = now


t_section = time.time()


def check(cond, what):
    global passed, failed
    if cond:
        passed += 1
    else:
        failed += 1
        print(f"FAIL: {what}", flush=True)


class Server:
    def __init__(self, *extra, wait_ready=True):
        self.proc = subprocess.Popen([FAKE, "--port", "0", *extra], stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE)
        line = self.proc.stdout.readline().decode()
        m = re.search(r"listening on ([0-9.]+):(\d+)", line)
        assert m, f"no listening line: {line!r} {self.proc.stderr.read().decode()[-2000:]}"
        self.host, self.port = m.group(1), int(m.group(2))
        self.base = f"http://{self.host}:{self.port}"
        self.err = ""

    def client(self, key="unused"):
        return openai.OpenAI(base_url=self.base + "/v1", api_key=key, max_retries=0, timeout=30)

    def n_fds(self):
        return len(os.listdir(f"/proc/{self.proc.pid}/fd"))

    def stop(self, timeout=30):
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = -9
        self.err = self.proc.stderr.read().decode(errors="replace")
        return rc


def expected(text, max_tokens=None):
    """The fake engine's output for a prompt: its characters, up to max_tokens."""
    out = text if max_tokens is None else text[:max_tokens]
    finish = "length" if max_tokens is not None and max_tokens <= len(text) else "stop"
    return out, finish


def http(srv, method, path, body=None, headers=None):
    data = json.dumps(body).encode() if isinstance(body, (dict, list)) else body
    req = urllib.request.Request(srv.base + path, data=data, method=method, headers=headers or {})
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def raw(srv, data, timeout=5.0, chunks=None, pause=0.0):
    """Sends data (or the list chunks, pause seconds apart), reads until the server closes or
    timeout; returns (bytes, closed)."""
    s = socket.create_connection((srv.host, srv.port))
    s.settimeout(timeout)
    try:
        for part in (chunks if chunks is not None else [data]):
            s.sendall(part)
            if pause:
                time.sleep(pause)
    except OSError:
        pass
    out, closed = b"", False
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            b = s.recv(65536)
        except socket.timeout:
            break
        except OSError:
            closed = True
            break
        if not b:
            closed = True
            break
        out += b
    s.close()
    return out, closed


def parse_responses(data):
    """Splits raw bytes into [(status, headers, body)] (Content-Length or chunked bodies)."""
    out = []
    while data:
        head, sep, rest = data.partition(b"\r\n\r\n")
        if not sep:
            break
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ")[1])
        headers = {}
        for ln in lines[1:]:
            k, _, v = ln.partition(":")
            headers[k.strip().lower()] = v.strip()
        if status == 100:
            data = rest
            continue
        if headers.get("transfer-encoding") == "chunked":
            body = b""
            while True:
                size_line, _, rest = rest.partition(b"\r\n")
                n = int(size_line, 16)
                body += rest[:n]
                rest = rest[n + 2:]
                if n == 0:
                    break
        elif "content-length" in headers:
            n = int(headers["content-length"])
            body, rest = rest[:n], rest[n:]
        else:
            body, rest = rest, b""
        out.append((status, headers, body))
        data = rest
    return out


def sse_events(body):
    return [ln[6:] for ln in body.decode().split("\n\n") if ln.startswith("data: ")]


def raises(exc, fn):
    try:
        fn()
    except exc as e:
        return e
    except Exception as e:  # noqa: BLE001 - report what was raised instead
        print(f"  got {type(e).__name__}: {e}")
        return None
    return None


def request_bytes(method, path, body=b"", extra=b""):
    return (f"{method} {path} HTTP/1.1\r\nHost: x\r\n".encode() + extra +
            (f"Content-Length: {len(body)}\r\n".encode() if body or method == "POST" else b"") +
            b"\r\n" + body)


t_start = time.time()

# ==== the main server ===========================================================================
srv = Server("--delay-ms", "1", "--drain-ms", "500")
client = srv.client()

# --- models -------------------------------------------------------------------------------------
ids = [m.id for m in client.models.list().data]
check(ids == [MODEL], f"/v1/models lists the served model ({ids})")
check(client.models.retrieve(MODEL).id == MODEL, "/v1/models/{id} returns the model")
e = raises(openai.NotFoundError, lambda: client.models.retrieve("other"))
check(e is not None and e.code == "model_not_found", f"an unknown model id is 404 ({e})")

# --- completions ---------------------------------------------------------------------------------
section('--- completions')
prompt = "héllo wörld ☃ 🎉 end"
r = client.completions.create(model=MODEL, prompt=prompt, max_tokens=15)
want, finish = expected(prompt, 15)
check(r.choices[0].text == want and r.choices[0].finish_reason == finish,
      f"completion text and finish ({r.choices[0].text!r}, {r.choices[0].finish_reason})")
check(r.object == "text_completion" and r.id.startswith("cmpl-") and r.model == MODEL and r.created > 0,
      f"completion envelope ({r.object}, {r.id})")
check((r.usage.prompt_tokens, r.usage.completion_tokens, r.usage.total_tokens) ==
      (len(prompt), 15, len(prompt) + 15), f"completion usage ({r.usage})")
r = client.completions.create(model=MODEL, prompt=prompt)
check(r.choices[0].text == prompt and r.choices[0].finish_reason == "stop", "no max_tokens: stop at the end")
parts, fins = [], []
for ch in client.completions.create(model=MODEL, prompt=prompt, max_tokens=40, stream=True):
    check(ch.object == "text_completion", "completion chunks are text_completion objects") if not parts else None
    for c in ch.choices:
        parts.append(c.text)
        fins.append(c.finish_reason)
check("".join(parts) == prompt and fins[-1] == "stop" and all(f is None for f in fins[:-1]),
      f"streamed completion ({''.join(parts)!r}, {fins[-3:]})")
r = client.completions.create(model=MODEL, prompt=[prompt], max_tokens=3)
check(r.choices[0].text == prompt[:3], "a one-string prompt array is accepted")

# --- chat -----------------------------------------------------------------------------------------
section('--- chat')
messages = [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "Say \"hi\"\n\tnow ✓"}]
r = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=100)
check(r.object == "chat.completion" and r.id.startswith("chatcmpl-") and r.choices[0].message.role == "assistant",
      "chat envelope")
check(r.choices[0].message.content == messages[1]["content"] and r.choices[0].finish_reason == "stop",
      f"chat content (JSON escapes survive) ({r.choices[0].message.content!r})")
check(r.usage.prompt_tokens == len("Be terse.") + len(messages[1]["content"]) and
      r.usage.completion_tokens == len(messages[1]["content"]), f"chat usage ({r.usage})")
chunks = list(client.chat.completions.create(model=MODEL, messages=messages, max_tokens=5, stream=True,
                                             stream_options={"include_usage": True}))
first = chunks[0]
check(first.object == "chat.completion.chunk" and first.choices[0].delta.role == "assistant",
      "the first chunk carries the role")
text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
usage = [c for c in chunks if c.usage]
check(text == messages[1]["content"][:5] and finishes == ["length"], f"streamed chat ({text!r}, {finishes})")
check(len(usage) == 1 and usage[0].choices == [] and usage[0].usage.completion_tokens == 5 and chunks[-1] is usage[0],
      "include_usage: one final usage chunk with no choices")
check(len({c.id for c in chunks}) == 1, "all chunks share one id")
r = client.chat.completions.create(model=MODEL, max_tokens=50, messages=[
    {"role": "developer", "content": "x"},
    {"role": "user", "content": [{"type": "text", "text": "ab"}, {"type": "text", "text": "cd"}]}])
check(r.choices[0].message.content == "abcd", "text content parts are joined")
e = raises(openai.BadRequestError, lambda: client.chat.completions.create(model=MODEL, messages=[
    {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "http://x"}}]}]))
check(e is not None and e.param == "messages[0].content", f"an image part is refused with its param ({e})")

# --- n > 1: one job per choice, seed + i ------------------------------------------------------------
section('--- n > 1')
r = client.completions.create(model=MODEL, prompt="!seed x", n=3, seed=7, max_tokens=10)
check(sorted((c.index, c.text) for c in r.choices) == [(0, "7x"), (1, "8x"), (2, "9x")],
      f"n=3 with seed 7 gives seeds 7, 8, 9 ({[(c.index, c.text) for c in r.choices]})")
check(r.usage.prompt_tokens == len("!seed x") and r.usage.completion_tokens == 6, f"n=3 usage ({r.usage})")
# Seeds above INT64_MAX are unsigned 64-bit seeds (found by fuzz_api: the cast was undefined there).
for seed, want in ((2**63 + 2**62, str(2**63 + 2**62)), (-1, str(2**64 - 1))):
    r = client.completions.create(model=MODEL, prompt="!seed x", seed=seed, max_tokens=40)
    check(r.choices[0].text == want + "x", f"seed {seed} reaches the engine as {want} ({r.choices[0].text!r})")
per = {}
for ch in client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "!seed ab"}], n=2,
                                         seed=41, stream=True):
    for c in ch.choices:
        per.setdefault(c.index, []).append(c.delta.content or "")
check({k: "".join(v) for k, v in per.items()} == {0: "41ab", 1: "42ab"}, f"streamed n=2 ({per})")

# --- logprobs -------------------------------------------------------------------------------------
section('--- logprobs')
lp_text = "aé☃"
r = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": lp_text}], logprobs=True,
                                   top_logprobs=3)
content = r.choices[0].logprobs.content
check("".join(t.token for t in content) == lp_text, "chat logprobs tokens make up the text")
check([t.logprob for t in content] == [-0.25 * (1 + i % 3) for i in range(len(lp_text))], "chat logprob values")
check(all(bytes(t.bytes) == t.token.encode() for t in content), "chat logprob bytes are the token's UTF-8")
check(all(len(t.top_logprobs) == 3 and t.top_logprobs[0].logprob == t.logprob and
          t.top_logprobs[1].token == "alt1" for t in content), "top_logprobs: 3 alternatives, the chosen first")
s_lp = []
for ch in client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": lp_text}],
                                         logprobs=True, stream=True):
    if ch.choices and ch.choices[0].logprobs:
        s_lp += [t.token for t in ch.choices[0].logprobs.content]
check("".join(s_lp) == lp_text, f"streamed chat logprobs ({s_lp})")
st, _, body = http(srv, "POST", "/v1/completions", {"model": MODEL, "prompt": lp_text, "logprobs": 2})
lp = json.loads(body)["choices"][0]["logprobs"] if st == 200 else {}
check(lp.get("tokens") == list(lp_text) and lp.get("text_offset") == [0, 1, 3] and
      lp.get("token_logprobs") == [-0.25, -0.5, -0.75] and all(len(t) == 2 for t in lp.get("top_logprobs", [])),
      f"completions: the legacy logprobs shape ({lp})")

# --- errors ----------------------------------------------------------------------------------------
section('--- errors')
e = raises(openai.BadRequestError, lambda: client.completions.create(model="gpt-4", prompt="x"))
check(e is not None and e.code == "model_not_found" and e.param == "model", f"unknown model: 400 ({e})")
e = raises(openai.BadRequestError, lambda: client.completions.create(model=MODEL, prompt="x", temperature=5))
check(e is not None and e.param == "temperature" and "temperature" in str(e), f"temperature out of range ({e})")
e = raises(openai.BadRequestError, lambda: client.chat.completions.create(model=MODEL, messages=[]))
check(e is not None and e.param == "messages", f"empty messages ({e})")
e = raises(openai.BadRequestError, lambda: client.completions.create(model=MODEL, prompt="!reject x"))
check(e is not None and "fake engine refuses" in str(e), f"the engine's 400 reaches the client ({e})")
e = raises(openai.InternalServerError, lambda: client.completions.create(model=MODEL, prompt="!busy"))
check(e is not None and e.status_code == 503 and e.response.headers.get("retry-after"), f"busy: 503 + Retry-After ({e})")
e = raises(openai.InternalServerError, lambda: client.completions.create(model=MODEL, prompt="!submit500"))
check(e is not None and e.status_code == 500 and "secret" not in e.response.text, f"500 hides internals ({e})")
e = raises(openai.InternalServerError, lambda: client.completions.create(model=MODEL, prompt="!crash abcdef"))
check(e is not None and "secret" not in e.response.text, f"a job failing mid-way: 500 without internals ({e})")
e = raises(openai.APIError, lambda: list(client.chat.completions.create(
    model=MODEL, messages=[{"role": "user", "content": "!crash abcdef"}], stream=True)))
check(e is not None and "secret" not in str(e), f"a stream failing mid-way ends with an error event ({e})")
for body, param in [({"model": MODEL, "prompt": "x", "max_tokens": "5"}, "max_tokens"),
                    ({"model": MODEL, "prompt": "x", "max_tokens": 1.5}, "max_tokens"),
                    ({"model": MODEL, "prompt": "x", "n": 0}, "n"),
                    ({"model": MODEL, "prompt": "x", "stream": "yes"}, "stream"),
                    ({"model": MODEL, "prompt": "x", "stop": ["a", "b", "c", "d", "e"]}, "stop"),
                    ({"model": MODEL, "prompt": "x", "logit_bias": {"abc": 1}}, "logit_bias"),
                    ({"model": MODEL, "prompt": "x", "logit_bias": {"5": 101}}, "logit_bias"),
                    ({"model": MODEL, "prompt": [1, 2, 3]}, "prompt"),
                    ({"model": MODEL, "prompt": "x", "echo": True}, "echo"),
                    ({"model": MODEL, "messages": [{"role": "wizard", "content": "x"}]}, "messages[0].role"),
                    ({"model": MODEL, "messages": [{"role": "user", "content": "x"}],
                      "tools": [{"type": "function", "function": {"name": "no spaces"}}]},
                     "tools[0].function.name"),
                    ({"model": MODEL, "messages": [{"role": "user", "content": "x"}],
                      "functions": [{"name": "f"}]}, "functions"),
                    ({"model": MODEL, "messages": [{"role": "user", "content": "x"}],
                      "tool_choice": "required"}, "tool_choice"),
                    ({"model": MODEL, "messages": [{"role": "assistant", "content": None,
                                                    "tool_calls": [{"id": "a", "function": {"name": "f"}}]}]},
                     "messages[0].tool_calls[0]"),
                    ({"model": MODEL, "prompt": "x", "top_p": 1.5}, "top_p"),
                    ({"model": MODEL, "prompt": "x", "presence_penalty": -3}, "presence_penalty"),
                    ({"prompt": "x"}, "model")]:
    path = "/v1/chat/completions" if "messages" in body else "/v1/completions"
    st, _, out = http(srv, "POST", path, body)
    err = json.loads(out).get("error", {}) if out.startswith(b"{") else {}
    check(st == 400 and err.get("param") == param and err.get("type") == "invalid_request_error" and
          "code" in err and err.get("message"), f"{json.dumps(body)[:70]}: 400 with param {param} ({st} {out[:150]})")
ok = {"model": MODEL, "prompt": "ok", "store": False, "metadata": {"a": "b"}, "service_tier": "auto",
      "some_vendor_field": [1], "top_k": 5, "min_p": 0.1, "repetition_penalty": 1.1, "user": "u1",
      "stop": "zz", "logit_bias": {"42": -100}, "frequency_penalty": 0.5, "temperature": 0}
st, _, out = http(srv, "POST", "/v1/completions", ok)
check(st == 200 and json.loads(out)["choices"][0]["text"] == "ok", f"known unused and unknown fields are ignored ({out[:200]})")
st, _, out = http(srv, "POST", "/v1/completions", b'{"model": "fake-model", "prompt": ')
check(st == 400 and b"not valid JSON" in out, f"invalid JSON: 400 ({out[:100]})")
st, _, out = http(srv, "POST", "/v1/completions", b'{"model": "fake-model", "prompt": "x"} trailing')
check(st == 400, "JSON with trailing garbage: 400")
st, _, out = http(srv, "POST", "/v1/completions", b'[1, 2]')
check(st == 400, "a JSON array body: 400")
st, _, out = http(srv, "GET", "/v1/nothing")
check(st == 404 and json.loads(out)["error"]["type"] == "invalid_request_error", "unknown path: 404 in OpenAI's shape")
check(raises(openai.NotFoundError, lambda: client.get("/nothing", cast_to=object)) is not None,
      "unknown path: NotFoundError in the client")
st, hdr, out = http(srv, "GET", "/v1/completions")
check(st == 405 and hdr.get("Allow") == "POST", f"GET on a POST endpoint: 405 with Allow ({st}, {hdr.get('Allow')})")
st, hdr, out = http(srv, "DELETE", "/health")
check(st == 405 and "GET" in hdr.get("Allow", ""), "DELETE /health: 405")
st, hdr, out = http(srv, "GET", "/health?probe=1")
check(st == 200 and json.loads(out) == {"status": "ok"}, "/health with a query string")

# --- raw HTTP ----------------------------------------------------------------------------------------
section('--- raw HTTP')
out, closed = raw(srv, b"GARBAGE\r\n\r\n")
check(out.startswith(b"HTTP/1.1 400") and closed, f"a malformed request line: 400 and close ({out[:40]})")
out, closed = raw(srv, b"GET /health HTTP/1.1\r\nHost: x\r\nBad Header: 1\r\n\r\n")
check(out.startswith(b"HTTP/1.1 400") and closed, f"a header name with a space: 400 and close ({out[:40]})")
out, closed = raw(srv, b"GET /health HTTP/1.1\r\nHost: x\r\nX: a\rb\r\n\r\n")
check(out.startswith(b"HTTP/1.1 400") and closed, f"a bare CR in a header value: 400 ({out[:40]})")
body = json.dumps({"model": MODEL, "prompt": "x"}).encode()
smuggle = (b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: " + str(len(body)).encode() +
           b"\r\nTransfer-Encoding: chunked\r\n\r\n" + body)
out, closed = raw(srv, smuggle)
check(out.startswith(b"HTTP/1.1 400") and closed and out.count(b"HTTP/1.1") == 1,
      f"Content-Length with Transfer-Encoding: 400 and close ({out[:60]})")
out, closed = raw(srv, b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n12345")
check(out.startswith(b"HTTP/1.1 400") and closed, f"duplicate Content-Length: 400 and close ({out[:40]})")
out, closed = raw(srv, b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked, x\r\n\r\n")
check(out.startswith(b"HTTP/1.1 400") and closed, f"chunked not last: 400 ({out[:40]})")
out, closed = raw(srv, b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n")
check(out.startswith(b"HTTP/1.1 400") and closed, "a negative Content-Length: 400")
chunked = (b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n" +
           b"".join(b"%x\r\n%s\r\n" % (len(body[i:i + 7]), body[i:i + 7]) for i in range(0, len(body), 7)) +
           b"0\r\n\r\n")
resp = parse_responses(raw(srv, chunked)[0])
check(len(resp) == 1 and resp[0][0] == 200 and json.loads(resp[0][2])["choices"][0]["text"] == "x",
      "a chunked request body is read")
pipelined = (request_bytes("GET", "/health") +
             request_bytes("POST", "/v1/completions", json.dumps({"model": MODEL, "prompt": "one"}).encode()) +
             request_bytes("POST", "/v1/completions", json.dumps({"model": MODEL, "prompt": "two!", "stream": True}).encode()) +
             request_bytes("GET", "/v1/models", extra=b"Connection: close\r\n"))
resp = parse_responses(raw(srv, pipelined)[0])
check([r[0] for r in resp] == [200, 200, 200, 200], f"four pipelined requests, four answers ({[r[0] for r in resp]})")
if len(resp) == 4:
    check(json.loads(resp[0][2]) == {"status": "ok"} and json.loads(resp[1][2])["choices"][0]["text"] == "one" and
          sse_events(resp[2][2])[-1] == "[DONE]" and
          "".join(json.loads(e)["choices"][0]["text"] for e in sse_events(resp[2][2])[:-1]) == "two!" and
          json.loads(resp[3][2])["object"] == "list", "pipelined answers come in request order")
out, _ = raw(srv, None, chunks=[
    b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\nExpect: 100-continue\r\n"
    b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n", body], pause=0.2)
check(out.startswith(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200"), f"Expect: 100-continue ({out[:50]})")
out, closed = raw(srv, b"POST /v1/completions HTTP/1.0\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
check(out.startswith(b"HTTP/1.1 200") and closed, "HTTP/1.0 without keep-alive: answered and closed")
sbody = json.dumps({"model": MODEL, "prompt": "abc", "stream": True}).encode()
out, closed = raw(srv, b"POST /v1/completions HTTP/1.0\r\nContent-Length: " + str(len(sbody)).encode() + b"\r\n\r\n" + sbody)
check(b"Transfer-Encoding" not in out and out.rstrip().endswith(b"data: [DONE]") and closed,
      "a stream to an HTTP/1.0 client is close-delimited")
bad_utf8 = b'{"model": "fake-model", "prompt": "a\xff\xc3(b\xe2\x82"}'
out, closed = raw(srv, b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: " +
                  str(len(bad_utf8)).encode() + b"\r\n\r\n" + bad_utf8)
resp = parse_responses(out)
try:
    text = json.loads(resp[0][2].decode("utf-8", errors="strict"))["choices"][0]["text"]
except Exception as ex:  # noqa: BLE001
    text = repr(ex)
check(text.startswith("a\ufffd") and "b" in text, f"invalid UTF-8 in a prompt still gives valid UTF-8 JSON ({text!r})")
out, closed = raw(srv, b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
check(b"Connection: close" in out and closed, "Connection: close is honoured")
out, closed = raw(srv, b"GET http://example.com/health HTTP/1.1\r\nHost: example.com\r\nConnection: close\r\n\r\n")
check(out.startswith(b"HTTP/1.1 200"), f"an absolute-form request target ({out[:40]})")
out, closed = raw(srv, b"GET /health HTTP/2.0\r\nHost: x\r\n\r\n")
check(out.startswith(b"HTTP/1.1 505") and closed, f"HTTP/2.0 in a request line: 505 ({out[:40]})")
out, closed = raw(srv, b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding:\r\n chunked\r\n"
                  b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
check(out.startswith(b"HTTP/1.1 400") and closed and out.count(b"HTTP/1.1") == 1,
      f"a folded Transfer-Encoding with Content-Length: 400 ({out[:40]})")
out, closed = raw(srv, b"HEAD /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
check(out.startswith(b"HTTP/1.1 200") and out.endswith(b"\r\n\r\n"), "HEAD has no body")

# --- a client that vanishes mid-stream ------------------------------------------------------------------
section('--- a client that vanishes')
def metric(srv, name, labels=None, key=None):
    st, _, out = http(srv, "GET", "/metrics", headers={"Authorization": f"Bearer {key}"} if key else None)
    for fam in text_string_to_metric_families(out.decode()):
        for s in fam.samples:
            if s.name == name and (labels is None or all(s.labels.get(k) == v for k, v in labels.items())):
                return s.value
    return None


cancels0 = metric(srv, "moeserve_fake_engine_cancels_total")
vbody = json.dumps({"model": MODEL, "prompt": "!loop abc", "max_tokens": 100000, "stream": True}).encode()
s = socket.create_connection((srv.host, srv.port))
s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: " + str(len(vbody)).encode() + b"\r\n\r\n" + vbody)
got = s.recv(4096)
time.sleep(0.05)
s.close()
check(got.startswith(b"HTTP/1.1 200"), "the stream started")
deadline = time.time() + 5
while time.time() < deadline and metric(srv, "moeserve_fake_engine_cancels_total") == cancels0:
    time.sleep(0.05)
check(metric(srv, "moeserve_fake_engine_cancels_total") == cancels0 + 1, "the vanished client's job was cancelled once")
deadline = time.time() + 5
while time.time() < deadline and metric(srv, "moeserve_requests_running") != 0:
    time.sleep(0.05)
check(metric(srv, "moeserve_requests_running") == 0, "and it ended (nothing running)")
r = client.completions.create(model=MODEL, prompt="still here")
check(r.choices[0].text == "still here", "the server keeps serving after a client vanished")

# --- 64 concurrent streams, three rounds, no fd growth ------------------------------------------------------
section('--- 64 concurrent')
shared = srv.client()


def one_stream(i):
    p = f"stream {i} ✓ " + "x" * (i % 7)
    c = shared
    parts, finish, role = [], None, None
    for ch in c.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": p}], stream=True):
        for ck in ch.choices:
            role = role or ck.delta.role
            parts.append(ck.delta.content or "")
            finish = ck.finish_reason or finish
    return p, "".join(parts), finish, role


fds = []
for round_ in range(3):
    with concurrent.futures.ThreadPoolExecutor(64) as pool:
        results = list(pool.map(one_stream, range(64)))
    bad = [(p, t) for p, t, f, role in results if t != p or f != "stop" or role != "assistant"]
    check(not bad, f"round {round_}: 64 concurrent streams complete and exact ({bad[:2]})")
    time.sleep(0.3)
    fds.append(srv.n_fds())
check(fds[-1] <= fds[0], f"no fd growth across rounds ({fds})")

# --- SIGTERM with streams in flight -----------------------------------------------------------------------
section('--- SIGTERM')
started = threading.Semaphore(0)


def stream_text(c, **kw):
    """A completions stream's text and finish_reason; releases `started` at its first chunk."""
    parts, finish = [], None
    for ch in c.completions.create(model=MODEL, stream=True, **kw):
        if not parts:
            started.release()
        for ck in ch.choices:
            parts.append(ck.text)
            finish = ck.finish_reason or finish
    return "".join(parts), finish


def long_stream(results, i):
    try:
        results[i] = stream_text(shared, prompt="!loop ab", max_tokens=100000)
    except Exception as ex:  # noqa: BLE001
        results[i] = ("", repr(ex))


results = [None] * 4
threads = [threading.Thread(target=long_stream, args=(results, i)) for i in range(4)]
for t in threads:
    t.start()
for t in threads:
    started.acquire(timeout=10)
time.sleep(0.1)
rc = srv.stop()
for t in threads:
    t.join(10)
check(rc == 0, f"SIGTERM: exit status 0 (got {rc}; log tail: {srv.err[-1500:]})")
check(all(r and r[1] == "stop" and r[0].startswith("abab") for r in results),
      f"in-flight streams end with a finish chunk and [DONE] ({[(len(r[0]), r[1]) for r in results if r]})")

# --- SIGTERM drains: requests on the way finish, new connections are refused ---------------------------------
section('--- SIGTERM drain')
drain = Server("--delay-ms", "5", "--drain-ms", "20000", "--replica", "r-1")
st, _, out = http(drain, "GET", "/metrics")
samples = [ln for ln in out.decode().splitlines() if ln and not ln.startswith("#")]
check(st == 200 and samples and all('replica="r-1"' in ln for ln in samples),
      f"--replica: every sample carries replica=\"r-1\" ({[ln for ln in samples if 'replica' not in ln][:3]})")
dc = drain.client()
TEXT = "drain ✓ " + "0123456789" * 20  # 208 tokens, 5 ms each: about a second


def finite(results, i):
    try:
        if i % 2:
            r = dc.completions.create(model=MODEL, prompt=TEXT)
            results[i] = (r.choices[0].text, r.choices[0].finish_reason)
            return
        results[i] = stream_text(dc, prompt=TEXT)
    except Exception as ex:  # noqa: BLE001
        results[i] = ("", repr(ex))


results = [None] * 6
threads = [threading.Thread(target=finite, args=(results, i)) for i in range(6)]
for t in threads:
    t.start()
for i in range(3):
    started.acquire(timeout=10)
time.sleep(0.1)
t0 = time.time()
drain.proc.send_signal(signal.SIGTERM)
refused = False
for _ in range(50):  # the listener closes at once
    try:
        socket.create_connection((drain.host, drain.port), timeout=1).close()
        time.sleep(0.02)
    except ConnectionRefusedError:
        refused = True
        break
check(refused, "during the drain new connections are refused (a balancer sends them elsewhere)")
try:  # no second signal: that would end the drain
    rc = drain.proc.wait(timeout=25)
except subprocess.TimeoutExpired:
    drain.proc.kill()
    rc = -9
drain.err = drain.proc.stderr.read().decode(errors="replace")
elapsed = time.time() - t0
for t in threads:
    t.join(10)
check(rc == 0, f"drain: exit status 0 ({rc}; {drain.err[-800:]})")
check(all(r == (TEXT, "stop") for r in results),
      f"drain: every request on the way got its whole answer ({[(len(r[0]), r[1]) for r in results if r]})")
check(elapsed < 15, f"drain: the server exited as soon as the last answer was out ({elapsed:.1f} s)")
# a second SIGTERM ends the drain at once, still cleanly
drain2 = Server("--delay-ms", "1", "--drain-ms", "60000")
dc = drain2.client()
shared_before, shared = shared, dc
results = [None] * 2
threads = [threading.Thread(target=long_stream, args=(results, i)) for i in range(2)]
for t in threads:
    t.start()
for t in threads:
    started.acquire(timeout=10)
time.sleep(0.1)
t0 = time.time()
drain2.proc.send_signal(signal.SIGTERM)
time.sleep(0.3)
rc = drain2.stop(timeout=20)
for t in threads:
    t.join(10)
shared = shared_before
check(rc == 0 and time.time() - t0 < 10, f"a second SIGTERM cuts the drain short ({rc}, {time.time() - t0:.1f} s)")
check(all(r and r[1] == "stop" and r[0].startswith("abab") for r in results),
      f"cut by the second SIGTERM: streams still end with a finish chunk ({results})")

# ==== limits ================================================================================================
section('==== limits')
lim = Server("--max-header", "2048", "--max-body", "65536", "--header-timeout-ms", "800",
             "--idle-timeout-ms", "1000", "--max-connections", "6", "--high-water", "4096", "--send-buffer", "4096")
out, closed = raw(lim, b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 4000 + b"\r\n\r\n")
check(out.startswith(b"HTTP/1.1 431") and closed, f"oversized headers: 431 and close ({out[:40]})")
out, closed = raw(lim, b"GET /" + b"a" * 4000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
check(out.startswith(b"HTTP/1.1 431"), f"an oversized URL: 431 ({out[:40]})")
big = b"x" * 100000
out, closed = raw(lim, b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n" + big)
check(out.startswith(b"HTTP/1.1 413") and closed, f"an oversized body (Content-Length): 413 and close ({out[:40]})")
chunks = [b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"] + \
         [b"8000\r\n" + b"y" * 0x8000 + b"\r\n"] * 3
out, closed = raw(lim, None, chunks=chunks)
check(out.startswith(b"HTTP/1.1 413") and closed, f"an oversized chunked body: 413 ({out[:40]})")
t0 = time.time()
out, closed = raw(lim, None, chunks=[b"GET /health HTTP/1.1\r\n", b"Host: x\r\n", b"X-A: 1\r\n", b"X-B: 1\r\n",
                                      b"X-C: 1\r\n", b"X-D: 1\r\n", b"X-E: 1\r\n"], pause=0.3, timeout=5)
check(out.startswith(b"HTTP/1.1 408") and closed and time.time() - t0 < 4,
      f"headers trickled slower than the header timeout: 408 and close ({out[:40]}, {time.time() - t0:.1f}s)")
t0 = time.time()
out, closed = raw(lim, b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"model\"", timeout=5)
check(out.startswith(b"HTTP/1.1 408") and closed and time.time() - t0 < 4,
      f"a stalled body: 408 after the idle timeout ({out[:40]}, {time.time() - t0:.1f}s)")
s = socket.create_connection((lim.host, lim.port))
s.sendall(request_bytes("GET", "/health"))
time.sleep(0.1)
first = s.recv(4096)
s.settimeout(4)
t0 = time.time()
rest = s.recv(4096)
check(first.startswith(b"HTTP/1.1 200") and rest == b"" and 0.5 < time.time() - t0 < 3,
      f"an idle keep-alive connection is closed after the idle timeout ({time.time() - t0:.1f}s)")
s.close()
held = []
for _ in range(6):
    h = socket.create_connection((lim.host, lim.port))
    held.append(h)
time.sleep(0.1)
out, closed = raw(lim, request_bytes("GET", "/health"), timeout=2)
check(out.startswith(b"HTTP/1.1 503") and closed, f"beyond max_connections: 503 and close ({out[:40]})")
for h in held:
    h.close()
time.sleep(0.2)
out, _ = raw(lim, request_bytes("GET", "/health", extra=b"Connection: close\r\n"), timeout=2)
check(out.startswith(b"HTTP/1.1 200"), "connections free up again")
# --- a slow reader: past the high-water mark the stream coalesces, and stays exact ----------------
s = socket.create_connection((lim.host, lim.port))
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
sbody = json.dumps({"model": MODEL, "prompt": "!loop 0123456789", "max_tokens": 2000, "stream": True}).encode()
s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: " +
          str(len(sbody)).encode() + b"\r\n\r\n" + sbody)
time.sleep(1.0)  # do not read while the engine generates
data = b""
s.settimeout(20)
while True:
    b = s.recv(65536)
    if not b:
        break
    data += b
s.close()
resp = parse_responses(data)
evs = sse_events(resp[0][2]) if resp else []
stext = "".join(json.loads(e)["choices"][0]["text"] for e in evs[:-1])
check(evs and evs[-1] == "[DONE]" and stext == ("0123456789" * 200),
      f"a slow reader gets the exact text ({len(stext)} characters)")
check(len(evs) < 1000, f"back-pressure: a slow reader's text is coalesced into fewer chunks ({len(evs) - 2} for 2000 tokens)")

# --- a pipelining client that does not read: later requests wait, nothing is lost --------------------
s = socket.create_connection((lim.host, lim.port))
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
many = b"".join(request_bytes("GET", f"/v1/models/{MODEL}?i={i}") for i in range(299))
s.sendall(many + request_bytes("GET", "/health", extra=b"Connection: close\r\n"))
time.sleep(0.5)
data = b""
s.settimeout(20)
while True:
    b = s.recv(65536)
    if not b:
        break
    data += b
s.close()
resp = parse_responses(data)
check(len(resp) == 300 and all(r[0] == 200 for r in resp) and json.loads(resp[-1][2]) == {"status": "ok"} and
      all(json.loads(r[2])["id"] == MODEL for r in resp[:-1]), f"300 pipelined requests to a slow reader ({len(resp)})")

check(lim.stop() == 0, f"limits server: exit 0 ({lim.err[-800:]})")

# ==== API keys, loading, and metrics on a fresh server ================================================
section('==== API keys')
keyed = Server("--api-key", "key-one", "--api-key", "key-two", "--loading-ms", "1200")
st, hdr, out = http(keyed, "GET", "/health")
check(st == 503 and json.loads(out)["status"] == "loading", f"/health while loading: 503 ({st})")
e = raises(openai.InternalServerError, lambda: keyed.client("key-two").completions.create(model=MODEL, prompt="x"))
check(e is not None and e.status_code == 503 and e.response.headers.get("retry-after"),
      f"a request while loading: 503 + Retry-After ({e})")
time.sleep(1.3)
st, _, _ = http(keyed, "GET", "/health")
check(st == 200, "/health once loaded: 200, without a key")
e = raises(openai.AuthenticationError, lambda: keyed.client("wrong").models.list())
check(e is not None and e.code == "invalid_api_key", f"a wrong key: 401 AuthenticationError ({e})")
e = raises(openai.AuthenticationError, lambda: keyed.client("key-one-x").completions.create(model=MODEL, prompt="x"))
check(e is not None, "a key with a correct prefix: 401")
st, hdr, _ = http(keyed, "GET", "/v1/models")
check(st == 401 and hdr.get("WWW-Authenticate") == "Bearer", "no key: 401 with WWW-Authenticate")
st, _, _ = http(keyed, "GET", "/metrics")
check(st == 401, "/metrics needs a key when keys are set")
kc = keyed.client("key-two")
# A known set of requests, then the counters must match exactly.
n_comp, n_chat = 5, 3
prompt_tokens = gen_tokens = 0
for i in range(n_comp):
    p = f"metrics {i}"
    r = kc.completions.create(model=MODEL, prompt=p, max_tokens=4)
    prompt_tokens += len(p)
    gen_tokens += 4
for i in range(n_chat):
    p = f"chat {i} ✓"
    r = kc.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": p}], stream=True)
    list(r)
    prompt_tokens += len(p)
    gen_tokens += len(p)
raises(openai.BadRequestError, lambda: kc.completions.create(model=MODEL, prompt="x", top_p=3))
raises(openai.BadRequestError, lambda: kc.completions.create(model=MODEL, prompt="x", top_p=3))
http(keyed, "GET", "/health")
http(keyed, "GET", "/v1/models", headers={"Authorization": "Bearer key-one"})
st, hdr, out = http(keyed, "GET", "/metrics", headers={"Authorization": "Bearer key-one"})
check(st == 200 and hdr.get("Content-Type", "").startswith("text/plain; version=0.0.4"), "/metrics content type")
fams = {f.name: f for f in text_string_to_metric_families(out.decode())}
reqs = {(s.labels["endpoint"], s.labels["code"]): s.value for s in fams["moeserve_http_requests"].samples
        if s.name == "moeserve_http_requests_total"} if "moeserve_http_requests" in fams else {}
check(fams.get("moeserve_http_requests") and fams["moeserve_http_requests"].type == "counter",
      "requests_total is a counter")
check(reqs.get(("/v1/completions", "200")) == n_comp and reqs.get(("/v1/chat/completions", "200")) == n_chat,
      f"requests by endpoint: 200s ({reqs})")
check(reqs.get(("/v1/completions", "400")) == 2 and reqs.get(("/v1/completions", "503")) == 1 and
      reqs.get(("/v1/completions", "401")) == 1, f"requests by endpoint: 400, 401, 503 ({reqs})")
check(reqs.get(("/health", "503")) == 1 and reqs.get(("/health", "200")) == 2 and
      reqs.get(("/v1/models", "401")) == 2 and reqs.get(("/v1/models", "200")) == 1 and
      reqs.get(("/metrics", "401")) == 1, f"health, models and metrics counted ({reqs})")


def value(name, sample=None):
    f = fams.get(name)
    for s in (f.samples if f else []):
        if s.name == (sample or name):
            return s.value
    return None


pt = value("moeserve_prompt_tokens", "moeserve_prompt_tokens_total")
gt = value("moeserve_generation_tokens", "moeserve_generation_tokens_total")
check(pt == prompt_tokens, f"prompt tokens {pt} == {prompt_tokens}")
check(gt == gen_tokens, f"generated tokens {gt} == {gen_tokens}")
for h in ["moeserve_time_to_first_token_seconds", "moeserve_request_duration_seconds",
          "moeserve_request_queue_time_seconds"]:
    check(fams.get(h) and fams[h].type == "histogram" and value(h, h + "_count") == n_comp + n_chat,
          f"{h}: one observation per job ({value(h, h + '_count')})")
itl = value("moeserve_inter_token_latency_seconds", "moeserve_inter_token_latency_seconds_count")
check(itl == gen_tokens - (n_comp + n_chat), f"inter-token latency: one per token after the first ({itl})")
buckets = [s for s in fams["moeserve_request_duration_seconds"].samples if s.name.endswith("_bucket")]
check(buckets and buckets[-1].labels["le"] == "+Inf" and
      all(a.value <= b.value for a, b in zip(buckets, buckets[1:])), "histogram buckets are cumulative, ending at +Inf")
check(value("moeserve_requests_running") == 0 and value("moeserve_requests_waiting") == 0, "nothing running or waiting")
check(value("moeserve_fake_engine_jobs", "moeserve_fake_engine_jobs_total") == n_comp + n_chat, "the engine's write_metrics hook is included")
check(keyed.stop() == 0, f"keyed server: exit 0 ({keyed.err[-800:]})")

print(f"({time.time() - t_start:.1f} s)")
print(f"{passed} passed, {failed} failed")
sys.exit(1 if failed else 0)
