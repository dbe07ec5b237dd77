#!/usr/bin/env python3
"""`moeserve config check` and `moeserve config show`, run as an operator runs them.

References, independent of the C code: docs/configuration.md's key table (every key the binary
shows is documented, with the default the binary uses), the example files read with Python's
json module and their sizes and durations read by the small reference parser below, and
Python's json module for where a JSON syntax error is (line and column, on hand-written and on
randomly damaged documents).  Usage: test_config_cli.py /path/to/moeserve"""
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
from fractions import Fraction

ROOT = os.environ.get("MOE_SOURCE_ROOT", os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
MOESERVE = sys.argv[1]
EXAMPLES = ["cpu-only.json", "gpu-tiers.json", "small-ram.json"]
passed = failed = 0


def check(cond, what):
    global passed, failed
    if cond:
        passed += 1
    else:
        failed += 1
        print(f"FAIL: {what}")


def run(*args):
    p = subprocess.run([MOESERVE, *args], capture_output=True, timeout=60)
    return p.returncode, p.stdout.decode(errors="replace"), p.stderr.decode(errors="replace")


# --- reference readings of sizes, durations and budgets (docs/configuration.md) -----------------
SIZE_UNITS = {"b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12, "pb": 10**15,
              "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40, "pib": 2**50}
DURATION_UNITS = {"ms": 1, "s": 1000, "m": 60000, "h": 3600000}


def read_amount(v, units):
    if isinstance(v, int):
        return v
    m = re.fullmatch(r"(\d+(?:\.\d+)?) ?([A-Za-z]*)", v)
    assert m, v
    value = Fraction(m.group(1)) * units[m.group(2).lower() or ("b" if "b" in units else "ms")]
    assert value.denominator == 1, v
    return int(value)


def normalise(key, v):
    """A value in a canonical form, by what the docs say the key's type is."""
    t = KEY_TYPES.get(key, "")
    if t.startswith("size"):
        return read_amount(v, SIZE_UNITS)
    if t.startswith("duration"):
        return read_amount(v, DURATION_UNITS)
    if t.startswith("budget"):
        if v in ("auto", "all"):
            return "auto"
        if isinstance(v, str) and v.endswith("%"):
            return ("%", Fraction(v[:-1]))
        return read_amount(v, SIZE_UNITS)
    return v


# --- the documented keys -------------------------------------------------------------------------
with open(os.path.join(ROOT, "docs", "configuration.md"), encoding="utf-8") as f:
    docs = f.read()
KEY_TYPES, DOC_DEFAULTS = {}, {}
for m in re.finditer(r"^\| `([a-z_]+\.[a-z_]+)` \| ([^|]+) \| ([^|]+) \|", docs, re.M):
    key, type_, default = m.group(1), m.group(2).strip(), m.group(3).strip()
    KEY_TYPES[key] = type_
    if default != "(required)":
        DOC_DEFAULTS[key] = json.loads(default.strip("`"))
check(len(KEY_TYPES) >= 25, f"docs/configuration.md documents {len(KEY_TYPES)} keys")


def flat(doc):
    return {f"{s}.{k}": v for s, keys in doc.items() for k, v in keys.items()}


with tempfile.TemporaryDirectory() as tmp:
    def write(name, text):
        path = os.path.join(tmp, name)
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        return path

    # --- the example deployments: check, show, and show against the file and the docs ----------
    for name in EXAMPLES:
        path = os.path.join(ROOT, "config", name)
        rc, out, err = run("config", "check", path)
        check(rc == 0 and out == "ok\n" and err == "", f"config check {name}: rc {rc}, {out!r} {err!r}")
        rc, out, err = run("config", "show", path)
        check(rc == 0, f"config show {name}: rc {rc} {err}")
        shown = flat(json.loads(out))
        with open(path, encoding="utf-8") as f:
            given = flat(json.load(f))
        check(set(shown) == set(KEY_TYPES), f"{name}: shown keys {sorted(set(shown) ^ set(KEY_TYPES))} differ from the docs")
        for key, value in shown.items():
            if key in given:
                want = given[key]
            elif key == "model.name":  # derived: the file name without .gguf
                want = os.path.basename(given["model.path"])[: -len(".gguf")]
            else:
                want = DOC_DEFAULTS.get(key)
            check(normalise(key, value) == normalise(key, want),
                  f"{name}: {key} shows {value!r}, the {'file' if key in given else 'docs'} say {want!r}")

        # round trip: what show prints checks ok and shows the same again
        again_path = write("again-" + name, out)
        rc2, out2, err2 = run("config", "show", again_path)
        check(rc2 == 0 and out2 == out, f"{name}: show of show differs ({err2})")

    # --- defaults: an empty file and a model path show exactly the documented defaults ----------
    empty = write("empty.json", "{}")
    rc, out, err = run("config", "check", empty)
    check(rc == 2 and "model.path: missing" in err, f"empty config needs model.path: rc {rc} {err!r}")
    rc, out, err = run("config", "show", empty, "--set", "model.path=/srv/m/Model-X.gguf")
    check(rc == 0, f"show with --set model.path: rc {rc} {err}")
    shown = flat(json.loads(out)) if rc == 0 else {}
    for key, want in DOC_DEFAULTS.items():
        if key == "model.name":
            want = "Model-X"
        check(key in shown and normalise(key, shown[key]) == normalise(key, want),
              f"default of {key}: shows {shown.get(key)!r}, docs say {want!r}")

    # --- --set on top of a file -----------------------------------------------------------------
    rc, out, err = run("config", "show", os.path.join(ROOT, "config", "small-ram.json"),
                       "--set", "server.port=9001", "--set", "cache.host_bytes=1.5GiB",
                       "--set", "server.api_keys=k1, k2", "--set", "server.idle_timeout_ms=1.5m",
                       "--set", "io.direct=false", "--set", "model.chat_template=chatml",
                       "--set", "server.port=9002")
    check(rc == 0, f"show with --set: rc {rc} {err}")
    if rc == 0:
        s = flat(json.loads(out))
        check(s["server.port"] == 9002, "the last --set wins")
        check(normalise("cache.host_bytes", s["cache.host_bytes"]) == 3 * 2**29, f"1.5GiB shows as {s['cache.host_bytes']}")
        check(s["server.api_keys"] == ["k1", "k2"], f"api keys {s['server.api_keys']}")
        check(normalise("server.idle_timeout_ms", s["server.idle_timeout_ms"]) == 90000, "1.5m is 90000 ms")
        check(s["io.direct"] is False and s["model.chat_template"] == "chatml", "bool and string overrides")
        check(s["cache.policy"] == "lfu", "keys not overridden keep the file's values")

    # --- errors ----------------------------------------------------------------------------------
    def expect_error(args, parts, what):
        rc, out, err = run("config", *args)
        check(rc == 2 and out == "" and all(p in err for p in parts), f"{what}: rc {rc}, stderr {err!r}")
        return err

    base = os.path.join(ROOT, "config", "cpu-only.json")
    expect_error(["check", base, "--set", "server.prot=1"], ["--set \"server.prot\": unknown key; did you mean server.port?"], "typo in --set")
    expect_error(["check", base, "--set", "server.port=65536"],
                 ["server.port: \"65536\" is out of range: expected an integer from 0 to 65535"], "port range")
    expect_error(["check", base, "--set", "cache.host_bytes=1.5G"], ["cache.host_bytes", "\"1.5G\"", "ambiguous unit 'G'"], "ambiguous size")
    expect_error(["check", base, "--set", "batching.max_running=2000"],
                 ["batching.max_tokens_per_step: 1024 is less than batching.max_running (2000)"], "cross-key rule")
    expect_error(["check", base, "--set"], ["unknown or incomplete option '--set'"], "--set without a value")
    expect_error(["show", os.path.join(tmp, "missing.json")], ["missing.json: cannot open: No such file or directory"], "missing file")
    expect_error(["check", tmp], ["is a directory"], "a directory")
    rc, out, err = run("config")
    check(rc == 2 and "usage: moeserve config" in err, "config without arguments prints usage")
    rc, out, err = run("config", "--help")
    check(rc == 0 and "usage: moeserve config" in out, "config --help")
    rc, out, err = run("--help")
    check(rc == 0 and "config check FILE" in out, "moeserve --help lists config")

    bad = write("bad.json", json.dumps({
        "model": {"path": "/m.gguf", "nmae": "x"},
        "server": {"port": "8080", "host": "300.1.2.3", "max_body_bytes": "8GiBx", "api_keys": ["ok", 7]},
        "cache": {"policy": "LRU", "host_bytes": "0%"},
        "io": {"direct": "yes"},
        "sever": {},
        "log": {"level": "verbose"},
    }, indent=2))
    err = expect_error(["check", bad], [], "a file with many errors")
    lines = err.strip().split("\n")
    want = [
        "\"model.nmae\": unknown key; did you mean model.name?",
        "server.port: \"8080\" is a string: expected an integer from 0 to 65535",
        "server.host: \"300.1.2.3\" is not an IP address",
        "server.max_body_bytes: \"8GiBx\" has an unknown unit 'GiBx'",
        "server.api_keys[1]: 7 is a number: expected a string",
        "cache.policy: \"LRU\" is not a known value: expected one of \"lru\", \"lfu\", \"lru-protect\", \"lfu-history\"",
        "cache.host_bytes: \"0%\" is not a percentage above 0 and at most 100",
        "io.direct: \"yes\" is not a known value: expected \"auto\", true or false",
        "\"sever\": unknown section; did you mean server?",
        "log.level: \"verbose\" is not a known value",
    ]
    check(len(lines) == len(want), f"one line per error: {len(lines)} lines for {len(want)} errors")
    for line, part in zip(lines, want):
        check(line.startswith(bad + ": ") and part in line, f"error line {line!r} should contain {part!r}")

    # --- syntax errors: line and column as Python's json module reports them --------------------
    def position_of(text):
        try:
            json.loads(text)
            return None
        except json.JSONDecodeError as e:
            return e.lineno, e.colno

    def compare_syntax(text, what):
        want = position_of(text)
        path = write("syntax.json", text)
        rc, out, err = run("config", "check", path)
        if want is None:
            check("JSON syntax error" not in err, f"{what}: Python reads it, moeserve says {err!r}")
            return
        m = re.search(r": line (\d+), column (\d+): JSON syntax error", err)
        got = (int(m.group(1)), int(m.group(2))) if m else None
        check(rc == 2 and got == want, f"{what}: moeserve says {got} ({err.strip()!r}), Python says {want}")

    hand = [
        '{"server": {"port": 8080 "host": "x"}}',
        '{"server": {"port": 8080,\n  "host" "x"}}',
        '{"model": {"path": "a\\qb"}}',
        '{"model": {"path": "a\\u12zz"}}',
        '{"model": {"path": "tab\there"}}',
        '{"model": {"path": "unterminated}}',
        '{"server": {"port": 01}}',
        '{"server": {"port": 1.}}',
        '{"server": {"port": -}}',
        '{"server": {"port": tru}}',
        '{"server": {}} {}',
        '{"mod\u00e8le": {"ch\u00e9": 1 2}}',
        '\n\n\n   ',
        '{"a": [1, 2,, 3]}',
        "{'a': 1}",
    ]
    for i, text in enumerate(hand):
        compare_syntax(text, f"hand-written document {i} {text!r}")

    # random damage to a real file: one character deleted, replaced or inserted
    with open(os.path.join(ROOT, "config", "gpu-tiers.json"), encoding="utf-8") as f:
        original = f.read()
    rng = random.Random(7)
    alphabet = '{}[]:,"\\ \n0123456789.-eEtfnul"xé'
    n_damaged = 0
    for i in range(250):
        pos = rng.randrange(len(original))
        op = rng.choice(["delete", "replace", "insert"])
        ch = rng.choice(alphabet)
        text = (original[:pos] + ("" if op == "delete" else ch) + original[pos + (0 if op == "insert" else 1):])
        if position_of(text) is None:
            continue  # still JSON (a changed value): not a syntax case
        n_damaged += 1
        compare_syntax(text, f"damaged #{i}: {op} {ch!r} at {pos}")
    check(n_damaged >= 90, f"{n_damaged} damaged documents were syntax errors")

    # --- the systemd unit parses (where systemd is installed) -------------------------------------
    analyze = shutil.which("systemd-analyze")
    if analyze:
        p = subprocess.run([analyze, "verify", "--man=no", os.path.join(ROOT, "config", "moeserve.service")],
                           capture_output=True, text=True, timeout=60)
        complaints = [l for l in (p.stdout + p.stderr).splitlines()
                      if l.strip() and "/usr/local/bin/moeserve is not executable" not in l]
        check(not complaints, f"systemd-analyze verify: {complaints}")
    else:
        print("note: systemd-analyze not installed: the unit file was not verified")

print(f"{passed} passed, {failed} failed")
sys.exit(1 if failed else 0)
