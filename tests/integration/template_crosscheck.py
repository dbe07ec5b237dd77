#!/usr/bin/env python3
"""Chat templates rendered by moeserve (through tests/tools/tmpl_tool) and by Python jinja2 set up
as Hugging Face's apply_chat_template sets it up, compared byte for byte.

Templates: every tests/data/templates/*.jinja (real models' templates, see the README there), the
two synthetic templates of tools/gen_model.py, every built-in template, and a corpus of small
snippets exercising one construct each.  Contexts: message lists of every shape a server sees
(system prompts, multi-turn, empty, unicode, Jinja-looking text, long histories, broken
alternation, tools) with add_generation_prompt on and off.  Where jinja2 raises, tmpl_tool must
fail too; where the template called raise_exception, with the template's own message.

Usage: template_crosscheck.py /path/to/tmpl_tool [EXTRA_TEMPLATE_DIR]"""
import datetime
import glob
import json
import os
import random
import re
import subprocess
import sys
import tempfile

import jinja2
from jinja2.ext import Extension, loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment

ROOT = os.environ.get("MOE_SOURCE_ROOT", os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
TOOL = sys.argv[1]
DATE = "2024-07-26"
passed = failed = 0


def check(cond, what):
    global passed, failed
    if cond:
        passed += 1
    else:
        failed += 1
        print(f"FAIL: {what}")


# ---- the reference: jinja2 as transformers' chat_template_utils configures it ----------------

class RaisedByTemplate(jinja2.exceptions.TemplateError):
    pass


class AssistantTracker(Extension):
    """transformers' {% generation %} tag: renders its body unchanged."""
    tags = {"generation"}

    def parse(self, parser):
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(["name:endgeneration"], drop_needle=True)
        return jinja2.nodes.CallBlock(self.call_method("_render", []), [], [], body).set_lineno(lineno)

    def _render(self, caller):
        return caller()


def raise_exception(message):
    raise RaisedByTemplate(message)


def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def strftime_now(fmt):
    return datetime.datetime.strptime(DATE, "%Y-%m-%d").strftime(fmt)


ENV = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[AssistantTracker, loopcontrols])
ENV.filters["tojson"] = tojson
ENV.globals["raise_exception"] = raise_exception
ENV.globals["strftime_now"] = strftime_now


class PrintableGenerator:
    """A jinja2 filter's generator that prints without its memory address (and the same as
    ours); otherwise it behaves as the generator it wraps: lazy, single pass, no len()."""

    def __init__(self, gen):
        self.gen = gen

    def __iter__(self):
        return self

    def __next__(self):
        return next(self.gen)

    def __repr__(self):
        return f"<generator object {self.gen.__name__} at 0x0>"

    __str__ = __repr__


# For the random templates only: the same environment, generators printable deterministically.
ENV_RANDOM = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[AssistantTracker, loopcontrols])
ENV_RANDOM.filters.update(ENV.filters)
ENV_RANDOM.globals.update(ENV.globals)


def _printable(f):
    if getattr(f, "jinja_pass_arg", None) is not None:  # a pass_context filter
        @jinja2.pass_context
        def wrapped(ctx, *a, **k):
            return PrintableGenerator(f(ctx, *a, **k))
    else:
        def wrapped(*a, **k):
            return PrintableGenerator(f(*a, **k))
    return wrapped


for _name in ("select", "reject", "selectattr", "rejectattr", "map", "items"):
    ENV_RANDOM.filters[_name] = _printable(ENV.filters[_name])


_compiled = {}


def reference(source, ctx, env=ENV):
    """('text', str) | ('raised', message) | ('error', description) | ('refused', description)"""
    key = (id(env), source)
    if key not in _compiled:
        try:
            _compiled[key] = env.from_string(source)
        except jinja2.exceptions.TemplateError as e:
            _compiled[key] = ("refused", f"{type(e).__name__}: {e}")
    tmpl = _compiled[key]
    if isinstance(tmpl, tuple):
        return tmpl
    try:
        return ("text", tmpl.render(**ctx))
    except RaisedByTemplate as e:
        return ("raised", str(e))
    except Exception as e:  # any failure of jinja2 must be a failure for us too
        return ("error", f"{type(e).__name__}: {e}")


# ---- contexts ---------------------------------------------------------------------------------

def m(role, content, **kw):
    return {"role": role, "content": content, **kw}


SYS = m("system", "You are a helpful assistant.")
HISTORY = []
for i in range(40):
    HISTORY.append(m("user", f"Question {i}: what is {i} + {i}?"))
    HISTORY.append(m("assistant", f"It is {2 * i}."))

TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "Get the weather in a city",
    "parameters": {"type": "object", "properties": {
        "city": {"type": "string", "description": "City name, e.g. Zürich"},
        "days": {"type": "integer", "minimum": 1, "maximum": 7}}, "required": ["city"]}}}]
CALL = {"id": "abc123xyz", "type": "function",
        "function": {"name": "get_weather", "arguments": {"city": "Zürich", "days": 2}}}
CALL_STR = {"id": "abc123xyz", "type": "function",
            "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}

CONVERSATIONS = {
    "system+user": [SYS, m("user", "Hello!")],
    "user only": [m("user", "Hello!")],
    "multi-turn": [m("user", "Hi"), m("assistant", "Hi there"), m("user", "Who are you?")],
    "system multi-turn": [SYS, m("user", "Hi"), m("assistant", "Hi there"), m("user", "Who are you?"),
                          m("assistant", "   I am an assistant   "), m("user", "Another question")],
    "ends with assistant": [m("user", "Hi"), m("assistant", "Hello, how can I help?")],
    "empty content": [m("user", "")],
    "empty turns": [SYS, m("user", ""), m("assistant", ""), m("user", "")],
    "unicode": [m("system", "Réponds en français. 日本語も可。"), m("user", "Ça va? 🙂 ñ e\u0301 مرحبا 한국어 \u200b")],
    "jinja-like text": [m("user", "{{ x }} {% if y %}z{% endif %} {# c #} {{- '-' -}}"), m("assistant", "{% raw %}"),
                        m("user", "}}{{")],
    "quotes and escapes": [m("user", "He said \"hi\", it's \\n not a newline\ttab\r\n"), m("assistant", "'\"\\")],
    "whitespace": [m("system", "  padded system  \n"), m("user", "\n\n  hello  \n\n"), m("assistant", " \t "),
                   m("user", "x ")],
    "long history": [SYS] + HISTORY + [m("user", "And the last one?")],
    "long message": [m("user", "lorem ipsum dolor sit amet " * 400)],
    "think in history": [m("user", "2+2?"), m("assistant", "<think>\nsimple sum\n</think>\n\nIt is 4."),
                         m("user", "and 3+3?")],
    "think last": [m("user", "2+2?"), m("assistant", "<think>\nadding\n</think>\n\n4")],
    "two systems": [SYS, m("system", "Be brief."), m("user", "Hi")],
    "system only": [SYS],
    "no messages": [],
    "user user": [m("user", "one"), m("user", "two")],
    "assistant first": [m("assistant", "I speak first"), m("user", "ok")],
    "unknown role": [m("user", "hi"), m("narrator", "meanwhile")],
    "system in middle": [m("user", "hi"), m("assistant", "hello"), m("system", "new rules"), m("user", "ok")],
    "extra keys": [m("user", "hi", name="alice"), m("assistant", "hello", name="bot")],
    "control chars": [m("user", "bell\x07 nul-free \x1b[31m red \x7f del")],
}

TOOL_CONVERSATIONS = {
    "tools: question": [SYS, m("user", "Weather in Zürich?")],
    "tools: call and result": [m("user", "Weather in Zürich?"),
                               {"role": "assistant", "content": None, "tool_calls": [CALL]},
                               {"role": "tool", "content": "{\"temp\": 21}", "tool_call_id": "abc123xyz"},
                               m("user", "Thanks")],
    "tools: string arguments": [m("user", "Paris?"), {"role": "assistant", "content": "", "tool_calls": [CALL_STR]},
                                {"role": "tool", "content": "sunny", "tool_call_id": "abc123xyz"}],
}


def contexts():
    """(name, context) pairs: each conversation with and without the generation prompt, plus
    variants of the other globals templates read."""
    tokens = [("<s>", "</s>"), ("<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>")]
    out = []
    for k, (name, msgs) in enumerate(CONVERSATIONS.items()):
        bos, eos = tokens[k % 2]
        for agp in (True, False):
            out.append((f"{name} agp={agp}", {"messages": msgs, "add_generation_prompt": agp,
                                               "bos_token": bos, "eos_token": eos}))
    out.append(("no add_generation_prompt key", {"messages": CONVERSATIONS["multi-turn"], "bos_token": "<s>",
                                                  "eos_token": "</s>"}))
    out.append(("no special tokens", {"messages": CONVERSATIONS["multi-turn"], "add_generation_prompt": True}))
    out.append(("tools none", {"messages": CONVERSATIONS["system+user"], "add_generation_prompt": True,
                               "tools": None, "bos_token": "<s>", "eos_token": "</s>"}))
    out.append(("enable_thinking false", {"messages": CONVERSATIONS["think in history"], "add_generation_prompt": True,
                                          "enable_thinking": False, "bos_token": "<s>", "eos_token": "</s>"}))
    out.append(("date_string given", {"messages": CONVERSATIONS["system+user"], "add_generation_prompt": True,
                                      "date_string": "01 Jan 2030", "bos_token": "<s>", "eos_token": "</s>"}))
    for name, msgs in TOOL_CONVERSATIONS.items():
        for agp in (True, False):
            out.append((f"{name} agp={agp}", {"messages": msgs, "tools": TOOLS, "add_generation_prompt": agp,
                                              "bos_token": "<s>", "eos_token": "</s>"}))
    return out


# ---- snippets: one construct each ---------------------------------------------------------------

SNIPPET_CTX = {"messages": CONVERSATIONS["system multi-turn"], "s": "  Hello, World  ", "n": 7, "f": 2.5,
               "l": [3, 1, 2], "d": {"b": 1, "a": [1, {"x": None}], "c": "é\"\n🙂\x01"}, "t": True, "z": None,
               "u8": "héllo wörld 日本", "nested": [{"role": "user", "n": 1}, {"role": "tool", "n": 2},
                                                   {"role": "user", "n": 3}],
               "cases": ["héllo wörld 日本", "ÀÉÎõü ÿ ß straße", "ĀāĂă Łł Źź İ ı ſ", "Ωμέγα ΆΈΊΌΎΏ άέίόύώ σς µ",
                         "Привет МИР ёЁ ђЂ", "o'neil 3rd x2y мир日本語abc", "a-b(c{d[e<f g\th\u3000i"]}
SNIPPETS = [
    "{{ s|trim }}|{{ s|length }}|{{ s.strip() }}|{{ s.lstrip() }}|{{ s.rstrip() }}|{{ s|lower }}|{{ s|upper }}",
    "{{ u8|length }}|{{ u8[1] }}|{{ u8[-2:] }}|{{ u8[::-1] }}|{{ u8|title }}|{{ u8.split() }}|{{ u8|upper }}",
    "{{ n + 1 }} {{ n - 10 }} {{ n * 3 }} {{ n / 2 }} {{ n // 2 }} {{ -n // 2 }} {{ n % 3 }} {{ -n % 3 }} {{ n ** 2 }}",
    "{{ f }} {{ f * 2 }} {{ 1e20 }} {{ 0.1 + 0.2 }} {{ 1 / 3 }} {{ 1e-5 }} {{ 123456789.0 * 10 }} {{ -0.0 }} {{ 2.5e16 }}",
    "{{ t }} {{ not t }} {{ z }} {{ z is none }} {{ t and n }} {{ z or 'dflt' }} {{ undefined_name }}|{{ l }} {{ d }}",
    "{{ d|tojson }}|{{ d|tojson(indent=2) }}|{{ l|tojson }}|{{ 'é\"\\\\'|tojson }}|{{ {}|tojson }}|{{ []|tojson(indent=4) }}",
    "{{ d|tojson(sort_keys=true) }}|{{ d|tojson(ensure_ascii=true) }}|{{ f|tojson }}|{{ t|tojson }}|{{ z|tojson }}",
    "{{ d|string }}|{{ l|string }}|{{ s|string }}|{{ n|string }}|{{ [s, 'it\\'s', \"q\\\"\"]|string }}",
    "{% for x in l %}{{ loop.index }}/{{ loop.index0 }}/{{ loop.revindex }}/{{ loop.revindex0 }}/{{ loop.first }}/"
    "{{ loop.last }}/{{ loop.length }}:{{ x }} {% endfor %}",
    "{% for x in l if x > 1 %}{{ x }}{{ ',' if not loop.last }}{% else %}none{% endfor %}|"
    "{% for x in [] %}{{ x }}{% else %}empty{% endfor %}",
    "{% for k, v in d.items() %}{{ k }}={{ v }};{% endfor %}|{% for k in d %}{{ k }}{% endfor %}|"
    "{% for k, v in d|items %}{{ k }}{% endfor %}",
    "{% set ns = namespace(a=1, found=false) %}{% for x in l %}{% set ns.a = ns.a + x %}"
    "{% if x == 2 %}{% set ns.found = true %}{% endif %}{% endfor %}{{ ns.a }} {{ ns.found }}",
    "{% set x = 5 %}{% for i in [1, 2] %}[{{ x }}]{% set x = i %}{% endfor %}{{ x }}",
    "{% set a, b = [1, 2] %}{{ a }}{{ b }}{% set c %}block {{ a }}{% endset %}[{{ c }}]",
    "{% if n > 5 %}big{% elif n > 2 %}mid{% else %}small{% endif %}|{{ 'y' if t else 'n' }}|{{ 'y' if z }}|",
    "{{ 'a' ~ n ~ z ~ undefined_name }}|{{ 'ab' * 3 }}|{{ [1] + [2] }}|{{ 'x' in 'xyz' }}|{{ 2 in l }}|{{ 'b' in d }}"
    "|{{ 'q' not in d }}",
    "{{ messages|selectattr('role', 'equalto', 'user')|list|length }}|"
    "{{ messages|rejectattr('role', 'equalto', 'user')|map(attribute='role')|join(', ') }}|"
    "{{ nested|selectattr('role', 'eq', 'user')|map(attribute='n')|list }}|{{ l|select('odd')|list }}|"
    "{{ l|reject('equalto', 1)|list }}",
    "{{ l|first }} {{ l|last }} {{ l|join('-') }} {{ l|reverse|list }} {{ l|list }} {{ 'abc'|list }} {{ l|length }}",
    "{{ s.startswith('  He') }} {{ s.endswith('x') }} {{ s.split(',') }} {{ s.replace('l', 'L') }} "
    "{{ s|replace('l', '') }} {{ 'a-b-c'.split('-', 1) }} {{ s.find('World') }} {{ s.count('l') }}",
    "{{ d.get('b') }} {{ d.get('zz', 'def') }} {{ d.keys()|list }} {{ d.values()|list|length }} {{ d['a'][1]['x'] }}",
    "{{ undefined_name|default('dflt') }} {{ z|default('dflt') }} {{ z|default('dflt', true) }} {{ ''|d('e', true) }}",
    "{{ '42'|int + 1 }} {{ '3.7'|int }} {{ 'x'|int }} {{ f|int }} {{ '2.5'|float }} {{ n|float }} {{ -3|abs }}",
    "{{ n is defined }} {{ nope is defined }} {{ nope is undefined }} {{ s is string }} {{ n is number }} "
    "{{ n is integer }} {{ f is float }} {{ d is mapping }} {{ l is iterable }} {{ s is iterable }} "
    "{{ l is sequence }} {{ t is boolean }} {{ t is true }} {{ z is false }} {{ n is odd }} {{ n is even }} "
    "{{ n is divisibleby 7 }} {{ n is divisibleby(3) }} {{ 'abc' is lower }} {{ n is not none }}",
    "{{ messages[0]['role'] }} {{ messages[0].content }} {{ messages[-1].role }} {{ messages[1:3]|length }} "
    "{{ messages[::2]|map(attribute='role')|join }} {{ messages[99] is defined }} {{ d.nope is defined }}",
    "{{ range(3)|list }} {{ range(1, 10, 3)|list }} {{ (1, 2) }} {{ [1, 2][0] }} {{ {'k': 'v'}['k'] }}",
    "{% macro greet(name, punct='!') %}Hello {{ name }}{{ punct }}{% endmacro %}{{ greet('A') }} {{ greet('B', '?') }}"
    " {{ greet(name='C', punct='.') }}",
    "{% for x in l %}{% if x == 1 %}{% continue %}{% endif %}{% if x == 2 %}{% break %}{% endif %}{{ x }}{% endfor %}",
    "a\n  {% if t %}\n    b\n  {% endif %}\nc\n{# comment #}\nd  {%- if t -%}  e  {%- endif -%}  f\n{{ 'g' }}\n",
    "  {%+ if t %}plus{% endif +%}\nline\n    {{ n }}\n    {% for x in l %}\n      {{ x }}\n    {% endfor %}\nend\n",
    "{%- set x = 1 -%}\n\n   text   \n{{- ' v ' -}}\n   more\n{#- c -#}\n!",
    "{% raw %}{{ not evaluated }} {% if %}{% endraw %}|{{ '{{ literal }}' }}",
    "{{ 'a' if n > 100 else 'b' if n > 5 else 'c' }} {{ n > 5 and n < 10 }} {{ not n == 7 }} {{ (n + 1) * 2 }} {{ -n + 1 }}",
    "{{ 'x'|capitalize }} {{ 'hello world'|title }} {{ 'ABC'|lower }} {{ ' a b '|trim }} {{ 'xxaxx'|trim('x') }} "
    "{{ 'a\nb'|indent(2) }}|{{ 'a\n\nb\n'|indent(2, true, true) }}",
    "{{ l|unique|list }} {{ ['A', 'a', 'b']|unique|list }} {{ 'one two  three'|wordcount }} {{ 2.567|round(2) }}",
    "{% for c in cases %}{{ c|upper }}|{{ c|lower }}|{{ c|title }}|{{ c|capitalize }}|{{ c.upper() }}|"
    "{{ c.lower() }}|{{ c.title() }}|{{ c.capitalize() }}\n{% endfor %}",
    "{{ strftime_now('%Y-%m-%d %A %B %d %b %j') }}",
    "{{ raise_exception('custom failure: ' ~ n) }}",
    "{% for x in l %}{{ loop }}{{ loop.previtem is defined }}{{ loop.nextitem|default('-') }} {% endfor %}|{{ loop }}|"
    "{% set ns = namespace(a=1) %}{{ ns.a }}{{ ns.b is defined }}",
    "{% set ns = namespace(a=1) %}{% for k in ns %}{{ k }}{% endfor %}",
    "{% generation %}gen {{ n }}{% endgeneration %}",
    "{{ '%s' }} {{ \"tab\\there\" }} {{ '\\u00e9\\x41\\101' }} {{ 'a' 'b' }} {{ 1_000 }}",
    "{{ 'a%sb' % 'x' }} {{ '%s-%d-%r-%i' % ('s', 3.7, 'q', true) }} {{ 'abc' % [1] }} {{ '100%%' % () }}",
    "{{ 'abc' % 5 }}",
    "{{ dict(a=1, b='x') }} {{ namespace(x=1).x }} {{ [1, 2] == [1, 2] }} {{ {'a': 1} == {'a': 1} }} {{ 1 == 1.0 }}"
    " {{ 'a' < 'b' }} {{ [1, 2] < [1, 3] }} {{ true == 1 }}",
    "{% if l|select('equalto', 99) %}generators are true{% endif %}|{{ l|select('odd')|first }}|"
    "{{ l|map('string')|join('+') }}|{% for x in none|selectattr('a') %}{{ x }}{% endfor %}|{{ none|map('int')|list }}",
    "{% set g = l|select('odd') %}{{ g|list }}{{ g|list }}|{% set g = l|map('string') %}{{ g|first }}{{ g|list }}|"
    "{% set g = l|map('int') %}{{ 1 in g }}{{ g|list }}|{% set g = d|items %}{% for k, v in g %}{{ k }}{% endfor %}"
    "{% for k, v in g %}{{ k }}{% else %}empty{% endfor %}|{% set g = l|reject('odd') %}{{ 9 in g }}{{ g|join }}",
    "{{ 'a{}b{}c'.format(1, 'x') }} {{ '{0}-{1}-{0}'.format('p', 'q') }} {{ '{{}}{x}'.format(x=s) }}",
    # case folding is of string keys only (jinja2's ignore_case), equal keys keep their order
    # (reverse too), and a long sort (a string's characters) is a merge sort, not quadratic
    "{{ [['a'], ['B']]|sort }} {{ ['b', 'B', 'a', 'A']|sort }} {{ ['b', 'B', 'a', 'A']|sort(reverse=true) }} "
    "{{ [{'n': 1, 'k': 'x'}, {'n': 0, 'k': 'y'}, {'n': 1, 'k': 'z'}]|sort(attribute='n', reverse=true)|map(attribute='k')|join }} "
    "{{ ('The quick brown fox jumps over the lazy dog ' * 40)|sort|join }} {{ ['b', 'A', 'c']|min }} {{ ['b', 'A', 'c']|max }}",
    "{{ l|sort }} {{ l|sort(reverse=true) }} {{ ['b', 'A', 'c']|sort }} {{ ['b', 'A', 'c']|sort(case_sensitive=true) }} "
    "{{ nested|sort(attribute='n', reverse=true)|map(attribute='n')|list }} {{ d|dictsort }} "
    "{{ {'b': 2, 'a': 3}|dictsort(by='value') }} {{ l|min }} {{ l|max }} {{ l|sum }} {{ nested|sum(attribute='n') }} "
    "{{ []|max is defined }} {{ [1.5, 2]|sum(start=1) }} {{ ['b', 'A']|max }}",
    "{{ 'x'|safe + '<&>' }} {{ ('a'|safe + '\\'q\\'' + \"\\\"\")|length }} {{ '<b>' + 'y'|safe }} {{ '<' ~ 'x'|safe }}",
    # errors jinja2 raises: ours must fail as well
    "{{ l|select('odd')|length }}",
    "{{ l|select('odd')|last }}",
    "{{ l|map('string')|tojson }}",
    "{{ 'x'|safe + 1 }}",
    "{{ [1, 'a']|sort }}",
    "{{ undefined_name.attr }}",
    "{{ messages[0].nope.deeper }}",
    "{{ 'a' + 1 }}",
    "{{ n + undefined_name }}",
    "{{ 1 / 0 }}",
    "{{ z.attr }}|{{ n.attr }}|{{ s.nope }}",
    "{{ l.append(4) }}",
    "{% for x in z %}{{ x }}{% endfor %}",
    "{{ d|tojson }}{{ undefined_name|tojson }}",
    "{{ 'a' < 1 }}",
]


def run_batch(source, ctxs):
    """Renders source with each context through tmpl_tool; ('parse', message) or a list of
    ('text', str) / ('error', message)."""
    with tempfile.TemporaryDirectory() as tmp:
        tpath, cpath = os.path.join(tmp, "t.jinja"), os.path.join(tmp, "c.json")
        with open(tpath, "w", encoding="utf-8") as f:
            f.write(source)
        with open(cpath, "w", encoding="utf-8") as f:
            json.dump(ctxs, f, ensure_ascii=False)
        p = subprocess.run([TOOL, "--batch", "--date", DATE, tpath, cpath], capture_output=True, timeout=120)
    if p.returncode == 2:
        return ("parse", p.stderr.decode(errors="replace").strip())
    if p.returncode != 0:
        return ("crash", f"exit {p.returncode}: {p.stderr.decode(errors='replace')[-2000:]}")
    lines = [json.loads(line) for line in p.stdout.decode("utf-8").splitlines()]
    return [("text", x["text"]) if "text" in x else ("error", x["error"]) for x in lines]


def compare(label, source, named_ctxs):
    """Counts (matched, total) for one template over its contexts."""
    ours = run_batch(source, [c for _, c in named_ctxs])
    refs = [reference(source, c) for _, c in named_ctxs]
    if isinstance(ours, tuple):
        kinds = {r[0] for r in refs}
        ok = ours[0] == "parse" and kinds == {"refused"}
        check(ok, f"{label}: tmpl_tool {ours[0]}: {ours[1]} (jinja2: {sorted(kinds)})")
        return (len(named_ctxs) if ok else 0, len(named_ctxs))
    matched = 0
    for (name, _), mine, ref in zip(named_ctxs, ours, refs):
        what = f"{label} / {name}"
        # every context is one check of the comparison itself; the message says what differed
        if ref[0] == "text":
            ok = mine == ref
            why = "" if ok else f"{mine[0]}: " + (mine[1] if mine[0] == "error" else _first_diff(mine[1], ref[1]))
        elif ref[0] == "raised":
            ok = mine == ("error", ref[1])
            why = f"jinja2 raised {ref[1]!r}, we gave {mine[0]} {mine[1][:200]!r}"
        else:
            ok = mine[0] == "error"
            why = f"jinja2 failed ({ref[1]}), we rendered {mine[1][:200]!r}"
        check(ok, f"{what}: {why}")
        matched += ok
    return (matched, len(named_ctxs))


def _first_diff(a, b):
    i = next((k for k in range(min(len(a), len(b))) if a[k] != b[k]), min(len(a), len(b)))
    return f"differs at {i}: ours {a[max(0, i - 40):i + 40]!r} vs jinja2 {b[max(0, i - 40):i + 40]!r}"


# ---- random expressions: operators, filters and tests in combinations nobody wrote by hand ----

ATOMS = ["0", "1", "2", "3", "-1", "7", "0.5", "2.25", "-1.5", "1e3", "''", "'a'", "'Bc'", "' x '", "'\\n'", "'é'",
         "none", "true", "false", "[]", "[1, 2]", "['a', 'b']", "{}", "{'k': 1}", "(1, 2)", "n", "f", "s", "l", "d", "t",
         "z", "u8", "nope", "messages", "messages[0]", "nested"]
BINOPS = ["+", "-", "*", "/", "//", "%", "~", "==", "!=", "<", ">", "<=", ">=", "in", "not in", "and", "or"]
FILTERS = ["length", "string", "trim", "upper", "lower", "title", "capitalize", "tojson", "first", "last", "list",
           "default('q')", "default('q', true)", "int", "float", "abs", "join(',')", "reverse|list", "sort",
           "unique|list", "items|list", "select('odd')|list", "map('string')|list", "tojson(indent=1)",
           "replace('a', 'X')", "sum", "min", "max", "dictsort", "count", "wordcount", "round(1)", "safe",
           "select('odd')", "map('string')", "items", "rejectattr('x')", "batch(2)"[:0] or "reject('none')"]
TESTS = ["defined", "undefined", "none", "string", "number", "integer", "float", "iterable", "mapping", "sequence",
         "boolean", "true", "false", "odd", "even", "lower", "upper", "divisibleby(2)", "eq(1)", "in([1, 'a'])",
         "sameas(none)"]
# (no slices: jinja2 compiles them to Python subscripts whose failures on non-sequences depend on
# how the operand was compiled; slicing is covered by the snippets and the real templates)
POSTFIX = [".x", ".role", ".content", "[0]", "[-1]", "['k']", ".upper()", ".strip()",
           ".split()", ".items()", ".keys()", ".get('k')", ".startswith('a')", ".endswith(('c', 'x'))",
           ".replace('a', 'b')", ".lstrip('a ')", ".title()", ".count('a')"]


def random_expr(rng, depth=0):
    k = rng.random()
    if depth >= 3 or k < 0.25:
        e = rng.choice(ATOMS)
    elif k < 0.55:
        e = f"{random_expr(rng, depth + 1)} {rng.choice(BINOPS)} {random_expr(rng, depth + 1)}"
    elif k < 0.7:
        e = f"{random_expr(rng, depth + 1)}|{rng.choice(FILTERS)}"
    elif k < 0.78:
        e = f"{random_expr(rng, depth + 1)} is {rng.choice(['', 'not '])}{rng.choice(TESTS)}"
    elif k < 0.86:
        e = f"({random_expr(rng, depth + 1)}){rng.choice(POSTFIX)}"
    elif k < 0.92:
        e = f"(not {random_expr(rng, depth + 1)})"  # bare `not` after an operator is a name to jinja2
    else:
        e = f"{random_expr(rng, depth + 1)} if {random_expr(rng, depth + 1)} else {random_expr(rng, depth + 1)}"
    return f"({e})" if rng.random() < 0.3 else e


WS = ["", " ", "  ", "\n", "\n  ", "  \n", "\t", "\n\n", " \n \n", "\r\n", "\u3000", "x", "x ", " x\n", "\n  y  "]


def _open(rng, kind):
    left = rng.choice(["", "-", "+"] if kind != "{{" else ["", "-"])
    return kind + left + rng.choice(["", " "])


def _close(rng, kind):
    right = rng.choice(["", "-", "+"] if kind == "%}" else ["", "-"])
    return rng.choice(["", " "]) + right + kind


def random_layout(rng, depth=0):
    """Text and tags with every whitespace-control marker, nested blocks: the lexer's rules."""
    out = []
    for _ in range(rng.randint(1, 5)):
        out.append(rng.choice(WS))
        k = rng.random()
        if k < 0.3:
            expr = rng.choice(["n", "s", "z", "nope", "1 + 1", "'v'"])
            out.append(f"{_open(rng, '{{')}{expr}{_close(rng, '}}')}")
        elif k < 0.45:
            out.append(f"{_open(rng, '{#')} note {_close(rng, '#}')}")
        elif k < 0.55:
            out.append(f"{_open(rng, '{%')}set v = {rng.randint(0, 9)}{_close(rng, '%}')}")
        elif k < 0.62:
            out.append(f"{_open(rng, '{%')}raw{_close(rng, '%}')}{rng.choice(WS)}{{{{ raw }}}}{rng.choice(WS)}"
                       f"{_open(rng, '{%')}endraw{_close(rng, '%}')}")
        elif depth < 3:
            if rng.random() < 0.5:
                head, tail = f"if {rng.choice(['t', 'z', 'n > 3'])}", "endif"
                mid = f"{rng.choice(WS)}{_open(rng, '{%')}else{_close(rng, '%}')}" if rng.random() < 0.4 else ""
            else:
                head, tail = f"for i in {rng.choice(['l', '[]', 'range(2)'])}", "endfor"
                mid = ""
            out.append(f"{_open(rng, '{%')}{head}{_close(rng, '%}')}{random_layout(rng, depth + 1)}{mid}"
                       f"{random_layout(rng, depth + 1) if mid else ''}{_open(rng, '{%')}{tail}{_close(rng, '%}')}")
    out.append(rng.choice(WS))
    return "".join(out)


def random_program(rng, depth=0, in_loop=False):
    """Statements over a few variables: scoping of set in loops, ifs and macros, namespace
    updates, loop variables, break/continue, for-else."""
    vals = ["1", "n", "x", "v1", "v2", "ns.a", "loop.index", "'s'", "l|length", "v1 ~ '.'", "x * 2"]
    conds = ["t", "z", "x is defined", "v1 is defined", "loop.first", "loop.last", "ns.a > 2", "x == 2", "v2"]
    out = []
    for _ in range(rng.randint(1, 4)):
        k = rng.random()
        if k < 0.25:
            out.append(f"[{{{{ {rng.choice(vals)} }}}}]")
        elif k < 0.4:
            out.append(f"{{% set {rng.choice(['v1', 'v2'])} = {rng.choice(vals)} %}}")
        elif k < 0.5:
            out.append(f"{{% set ns.a = ns.a + 1 %}}{{% set ns.s = ns.s ~ {rng.choice(vals)} %}}")
        elif k < 0.6 and in_loop:
            out.append(f"{{% if {rng.choice(conds)} %}}{{% {rng.choice(['break', 'continue'])} %}}{{% endif %}}")
        elif depth < 3 and k < 0.75:
            els = f"{{% else %}}{random_program(rng, depth + 1, in_loop)}" if rng.random() < 0.5 else ""
            out.append(f"{{% if {rng.choice(conds)} %}}{random_program(rng, depth + 1, in_loop)}{els}{{% endif %}}")
        elif depth < 3 and k < 0.9:
            it = rng.choice(["l", "[]", "range(3)", "'ab'", "d", "nested|map(attribute='n')"])
            flt = f" if {rng.choice(['x != 1', 'true', 'x'])}" if rng.random() < 0.3 else ""
            els = f"{{% else %}}E{random_program(rng, depth + 1, in_loop)}" if rng.random() < 0.3 else ""
            out.append(f"{{% for x in {it}{flt} %}}{random_program(rng, depth + 1, True)}{els}{{% endfor %}}")
        elif depth < 2:
            out.append(f"{{% macro mm(x, v2=2) %}}{random_program(rng, depth + 1, False)}{{% endmacro %}}"
                       f"({{{{ mm({rng.choice(vals)}) }}}})")
        else:
            out.append(rng.choice(["a", " ", "\n"]))
    return "".join(out)


def random_expressions(count, seed=int(os.environ.get("TEMPLATE_RANDOM_SEED", "20241126"))):
    rng = random.Random(seed)
    sources = [f"{{{{ {random_expr(rng)} }}}}" for _ in range(count)]
    sources += [f"{{% for x in {random_expr(rng)} %}}[{{{{ x }}}}|{{{{ loop.index }}}}]{{% else %}}-{{% endfor %}}"
                for _ in range(count // 4)]
    sources += [random_layout(rng) for _ in range(count // 2)]
    sources += ["{% set ns = namespace(a=0, s='') %}" + random_program(rng) + "|{{ ns.a }}|{{ ns.s }}|{{ v1 }}|{{ x }}"
                for _ in range(count // 2)]
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "pairs.json")
        with open(path, "w", encoding="utf-8") as f:
            json.dump([{"template": src, "context": SNIPPET_CTX} for src in sources], f, ensure_ascii=False)
        p = subprocess.run([TOOL, "--pairs", "--date", DATE, path], capture_output=True, timeout=300)
    check(p.returncode == 0, f"tmpl_tool --pairs ran ({p.stderr.decode(errors='replace')[-500:]})")
    lines = [json.loads(x) for x in p.stdout.decode("utf-8").splitlines()]
    check(len(lines) == len(sources), f"one answer per random template ({len(lines)} of {len(sources)})")
    matched = 0
    for src, mine in zip(sources, lines):
        ref = reference(src, SNIPPET_CTX, ENV_RANDOM)
        if "parse_error" in mine:
            # refused up front where jinja2 refuses or fails at run time: both reject it
            ok = ref[0] in ("refused", "error")
        elif ref[0] == "text":
            ok = mine.get("text") == ref[1]
        else:
            ok = "error" in mine
        check(ok, f"random {src!r}: ours {mine}, jinja2 {ref}")
        matched += ok
    return matched, len(sources)


def gen_model_templates():
    """CHATML and MISTRAL_TEMPLATE as tools/gen_model.py defines them (read, not imported)."""
    src = open(os.path.join(ROOT, "tools", "gen_model.py"), encoding="utf-8").read()
    out = {}
    for name in ("CHATML", "MISTRAL_TEMPLATE"):
        m_ = re.search(rf"^{name} = (\(.*?\))\n", src, re.S | re.M)
        check(m_ is not None, f"gen_model.py defines {name}")
        if m_:
            out[f"gen_model:{name}"] = eval(m_.group(1), {})  # a parenthesised string literal
    return out


def main():
    ctxs = contexts()
    templates = {}
    for path in sorted(glob.glob(os.path.join(ROOT, "tests", "data", "templates", "*.jinja"))):
        with open(path, encoding="utf-8") as f:
            templates[os.path.basename(path)] = f.read()
    for path in sorted(glob.glob(os.path.join(sys.argv[2], "*.jinja"))) if len(sys.argv) > 2 else []:
        with open(path, encoding="utf-8") as f:
            templates["extra:" + os.path.basename(path)] = f.read()
    templates.update(gen_model_templates())
    names = subprocess.run([TOOL, "--builtin-names"], capture_output=True, text=True, check=True).stdout.strip()
    for name in [n.strip() for n in names.split(",")]:
        src = subprocess.run([TOOL, "--builtin", name], capture_output=True, check=True).stdout.decode("utf-8")
        templates[f"builtin:{name}"] = src
    check(len(templates) >= 20, f"{len(templates)} templates found")

    summary = []
    for label, source in templates.items():
        matched, total = compare(label, source, ctxs)
        summary.append((label, matched, total))
    for label, matched, total in summary:
        print(f"  {label:55s} {matched:3d}/{total} contexts match jinja2")

    snippet_ctx = [("snippet context", SNIPPET_CTX)]
    snip_ok = 0
    for i, source in enumerate(SNIPPETS):
        snip_ok += compare(f"snippet {i}: {source[:50]!r}", source, snippet_ctx)[0]
    print(f"  snippets: {snip_ok}/{len(SNIPPETS)} match jinja2")
    rnd_ok, rnd_total = random_expressions(int(os.environ.get("TEMPLATE_RANDOM_COUNT", "1000")))
    print(f"  random expressions, layouts and programs: {rnd_ok}/{rnd_total} match jinja2")
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


sys.exit(main())
