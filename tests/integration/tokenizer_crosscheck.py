#!/usr/bin/env python3
"""Holds our tokenizer (through tests/tools/tok_tool) against the real implementations on real
vocabularies.

Vocabularies (fetched from PyPI by scripts/setup.sh into .venv/tokenizer-data, see there):
  - llama.cpp's models/ggml-vocab-{gpt-2,llama-bpe,qwen2,qwen35,deepseek-llm,mpt}.gguf, vendored in
    the llama-cpp-python source distribution: real vocabularies and merges of GPT-2, Llama 3,
    Qwen2, Qwen3.5, DeepSeek LLM and GPT-NeoX (pre "mpt": GPT-2's regex, the OLMo case), with the files' own
    tokenizer.ggml.pre;
  - llama.cpp's ggml-vocab-llama-spm.gguf (Llama 2's SentencePiece vocabulary);
  - Mistral's SentencePiece models shipped by mistral-common (tokenizer.model.v1, v3), converted
    to GGUF metadata here (tokens, scores, types) the way convert_hf_to_gguf.py does.

References, and what is independent of our code:
  - Hugging Face `tokenizers` BPE models built from each GGUF's tokens and merges, with the
    pre-tokenizer of the model's real tokenizer.json (ByteLevel for GPT-2/NeoX; Split(regex) +
    ByteLevel for Llama 3, Qwen2 and DeepSeek; the regex strings are the ones in llama.cpp's
    llama-vocab.cpp, copied from those tokenizer.json files), and Qwen2's NFC normalizer (which
    llama.cpp leaves out; we apply it).  Rust's regex engine, BPE merge loop and normalizer are
    independent of our hand-written matchers, heap and NFC tables.
  - `sentencepiece` running Mistral's real .model files: fully independent.
  - llama.cpp's ggml-vocab-*.gguf.inp/.out files: token ids produced by the real HF tokenizers
    (AutoTokenizer) when llama.cpp generated them: fully independent, but only ~40 strings each.
Checks per vocabulary and corpus string (tests/data/tokenizer/corpus.py, 1800+ strings):
  encode equal; decode(our ids) equal to the reference's decode; streaming decode equal to the
  reference's decode; invalid UTF-8 strings round-trip byte for byte.  Plus: special tokens in
  the text parsed with TOKENIZER_PARSE_SPECIAL equal HF with its added tokens; random id
  sequences decode like the reference (U+FFFD for broken UTF-8).

Also: the synthetic vocabularies of the qwen3moe, olmoe, gpt-oss and glm4moe test models
(tools/gen_model.py; gpt-oss's is the only check of the o200k pre-tokenizer, "gpt-4o", llama.cpp
vendoring no such vocabulary) against HF the same way.  Pre-tokenizers with no small real
vocabulary ("deepseek-v3", "kimi-k2") on a byte-level BPE learnt here from the corpus with no
pre-tokenization (tests/data/tokenizer/synth_vocab.py: its merges cross the places where the
splits fall), with a proof that the check can fail: each of a list of deliberately wrong
pre-tokenizers (every alternative of every regex left out, classes and counts changed) must give
HF other ids than the right one on some string.  And our NFC (decode(encode(x)) for pre qwen2)
against Python's unicodedata on 500 strings dense in combining marks, jamo and singletons.

A vocabulary that cannot be found is a failure, never a skip.
Usage: tokenizer_crosscheck.py TOK_TOOL
"""
import json
import os
import random
import subprocess
import sys
import tempfile
import unicodedata

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.environ.get("MOE_SOURCE_ROOT", os.path.dirname(os.path.dirname(HERE)))
sys.path.insert(0, os.path.join(ROOT, "tests", "data", "tokenizer"))
import corpus as corpus_mod  # noqa: E402
import synth_vocab  # noqa: E402

DATA = os.environ.get("MOE_TOKENIZER_DATA", os.path.join(ROOT, ".venv", "tokenizer-data"))

TYPE_NORMAL, TYPE_UNKNOWN, TYPE_CONTROL, TYPE_USER, TYPE_UNUSED, TYPE_BYTE = 1, 2, 3, 4, 5, 6

# Regexes of the real tokenizer.json files (as quoted in llama.cpp's llama-vocab.cpp).
RE_LLAMA3 = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
             r"|\s*[\r\n]+|\s+(?!\S)|\s+")
RE_QWEN2 = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
            r"|\s*[\r\n]+|\s+(?!\S)|\s+")
# o200k (gpt-4o, and gpt-oss's o200k_harmony), as llama-vocab.cpp quotes it
RE_GPT4O = (r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
            r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
            r"|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+")
RE_QWEN35 = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*"
             r"|\s*[\r\n]+|\s+(?!\S)|\s+")
# DeepSeek-V3 / R1 (pre "deepseek-v3"): three isolating splits in turn, as its tokenizer.json has
# them (line breaks in the classes are the characters themselves there, as here; the CJK class
# escaped: U+4E00-U+9FA5, Hiragana, Katakana)
RE_DEEPSEEK3 = [
    r"\p{N}{1,3}",
    "[\u4e00-\u9fa5\u3040-\u309f\u30a0-\u30ff]+",
    r"""[!"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~][A-Za-z]+|[^""" "\r\n" r"""\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+"""
    r"""| ?[\p{P}\p{S}]+[""" "\r\n" r"""]*|\s*[""" "\r\n" r"""]+|\s+(?!\S)|\s+""",
]
# Kimi-K2 (pre "kimi-k2"): the pat_str of its tokenization_kimi.py (tiktoken; llama.cpp's unicode.cpp
# quotes it), one regex: o200k's with Han runs first and Han taken out of the letter classes
RE_KIMI_K2 = "|".join([
    r"[\p{Han}]+",
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}&&[^\p{Han}]]*[\p{Ll}\p{Lm}\p{Lo}\p{M}&&[^\p{Han}]]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?",
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}&&[^\p{Han}]]+[\p{Ll}\p{Lm}\p{Lo}\p{M}&&[^\p{Han}]]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?",
    r"\p{N}{1,3}",
    r" ?[^\s\p{L}\p{N}]+[\r\n]*",
    r"\s*[\r\n]+",
    r"\s+(?!\S)",
    r"\s+",
])
RE_DEEPSEEK = [  # escaped: these classes hold characters that NFC would change
    "[\r\n]",
    "\\s?["
    "A-Za-z\u00b5\u00c0-\u00d6\u00d8-"
    "\u00f6\u00f8-\u01ba\u01bc-\u01bf\u01c4-\u0293\u0295-"
    "\u02af\u0370-\u0373\u0376\u0377\u037b-\u037d\u037f\u0386\u0388"
    "-\u038a\u038c\u038e-\u03a1\u03a3-\u03f5\u03f7-\u0481"
    "\u048a-\u052f\u0531-\u0556\u10a0-\u10c5\u13a0-\u13f5"
    "\u13f8-\u13fd\u1c90-\u1cba\u1cbd-\u1cbf\u1d00-\u1d2b"
    "\u1d6b-\u1d77\u1d79-\u1d9a\u1e00-\u1f15\u1f18-\u1f1d"
    "\u1f20-\u1f45\u1f48-\u1f4d\u1f50-\u1f57\u1f59\u1f5b\u1f5d"
    "\u1f5f-\u1f7d\u1f80-\u1fb4\u1fb6-\u1fbc\u1fbe\u1fc2-"
    "\u1fc4\u1fc6-\u1fcc\u1fd0-\u1fd3\u1fd6-\u1fdb\u1fe0-"
    "\u1fec\u1ff2-\u1ff4\u1ff6-\u1ffc\u2102\u2107\u210a-\u2113"
    "\u2115\u2119-\u211d\u2124\u2126\u2128\u212a-\u212d\u212f-"
    "\u2134\u2139\u213c-\u213f\u2145-\u2149\u214e\u2183\u2184\u2c00"
    "-\u2c7b\u2c7e-\u2ce4\u2ceb-\u2cee\u2cf2\u2cf3\ua640-"
    "\ua66d\ua680-\ua69b\ua722-\ua76f\ua771-\ua787\ua78b-"
    "\ua78e\uab70-\uabbf\ufb00-\ufb06\ufb13-\ufb17\uff21-"
    "\uff3a\uff41-\uff5a\U00010400-\U0001044f\U000104b0-\U000104d3\U000104d8-"
    "\U000104fb\U00010c80-\U00010cb2\U00010cc0-\U00010cf2\U000118a0-\U000118df\U0001e900-"
    "\U0001e943"
    "]+",
    "\\s?[!-/:-~\uff01-\uff0f\uff1a-\uff5e\u2018-\u201f\u3000-\u3002]+",
    "\\s+$",
    "[\u4e00-\u9fa5\u0800-\u4e00\uac00-\ud7ff]+",
    "\\p{N}+",
]

passed = failed = 0


def check(ok: bool, what: str, detail: str = "") -> bool:
    global passed, failed
    if ok:
        passed += 1
    else:
        failed += 1
        if failed <= 60:
            print(f"FAIL {what}{': ' + detail if detail else ''}")
    return ok


def run_tool(tool: str, gguf: str, requests: list) -> list:
    inp = "".join(json.dumps(r) + "\n" for r in requests)
    p = subprocess.run([tool, gguf], input=inp, capture_output=True, text=True, timeout=300)
    lines = p.stdout.splitlines()
    if p.returncode != 0 or len(lines) != len(requests):
        raise RuntimeError(f"tok_tool {gguf}: rc={p.returncode} lines={len(lines)}/{len(requests)}: "
                           f"{p.stderr.strip()[:300]} {lines[:1]}")
    return [json.loads(x) for x in lines]


def read_gguf_kv(path: str) -> dict:
    """The metadata of a GGUF file (v2/v3), read with struct: gguf-py's reader takes ~20 s on a
    150k-token vocabulary, this takes well under one."""
    import struct
    data = open(path, "rb").read()
    if data[:4] != b"GGUF":
        raise RuntimeError(f"{path}: not a GGUF file")
    pos = 8
    _, n_kv = struct.unpack_from("<QQ", data, pos)
    pos += 16
    fixed = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}

    def read_str(p):
        (n,) = struct.unpack_from("<Q", data, p)
        return data[p + 8:p + 8 + n].decode("utf-8", "surrogateescape"), p + 8 + n

    def read_val(t, p):
        if t in fixed:
            fmt = "<" + fixed[t]
            return struct.unpack_from(fmt, data, p)[0], p + struct.calcsize(fmt)
        if t == 8:
            return read_str(p)
        if t == 9:
            et, n = struct.unpack_from("<IQ", data, p)
            p += 12
            if et in fixed:
                fmt = "<%d%s" % (n, fixed[et])
                return list(struct.unpack_from(fmt, data, p)), p + struct.calcsize(fmt)
            out = []
            for _ in range(n):
                x, p = read_val(et, p)
                out.append(x)
            return out, p
        raise RuntimeError(f"{path}: unknown value type {t}")

    kv = {}
    for _ in range(n_kv):
        key, pos = read_str(pos)
        (t,) = struct.unpack_from("<I", data, pos)
        kv[key], pos = read_val(t, pos + 4)
    return kv


def read_gguf_vocab(path: str) -> dict:
    kv = read_gguf_kv(path)
    return dict(model=kv.get("tokenizer.ggml.model"), pre=kv.get("tokenizer.ggml.pre"),
                tokens=kv.get("tokenizer.ggml.tokens"), types=kv.get("tokenizer.ggml.token_type"),
                merges=kv.get("tokenizer.ggml.merges"))


# Pre-tokenizers checked on a vocabulary made here (synthetic_vocabularies()): pre -> its splits.
SYNTH_SPLITS = {"deepseek-v3": RE_DEEPSEEK3, "kimi-k2": [RE_KIMI_K2]}


def hf_bpe(v: dict, splits: list | None = None):
    """HF tokenizers' BPE for a vocabulary; splits, when given, replaces the pre-tokenizer's
    regexes (the mutants of check_sensitive())."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers
    vocab = {}
    for i, t in enumerate(v["tokens"]):
        vocab[t] = i
    merges = [tuple(m.split(" ", 1)) for m in v["merges"]]
    pre = v["pre"]
    ignore = pre in ("llama-bpe", "llama3", "llama-v3")
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, ignore_merges=ignore))
    bl = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    if pre in ("gpt-2", "mpt", "olmo"):
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    elif pre in ("llama-bpe", "dbrx", "glm4"):   # glm4: llama.cpp's CHATGLM4 is Llama 3's regex
        tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(RE_LLAMA3), "isolated"), bl])
    elif pre == "qwen2":
        tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(RE_QWEN2), "isolated"), bl])
    elif pre == "gpt-4o":
        tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(RE_GPT4O), "isolated"), bl])
    elif pre == "qwen35":
        tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(RE_QWEN35), "isolated"), bl])
    elif pre in SYNTH_SPLITS:
        tok.pre_tokenizer = pre_tokenizers.Sequence(
            [pre_tokenizers.Split(Regex(r), "isolated") for r in (splits or SYNTH_SPLITS[pre])] + [bl])
    elif pre == "deepseek-llm":
        tok.pre_tokenizer = pre_tokenizers.Sequence(
            [pre_tokenizers.Split(Regex(r), "isolated") for r in RE_DEEPSEEK] + [bl])
    else:
        raise RuntimeError(f"no reference pre-tokenizer for {pre}")
    if pre in ("qwen2", "deepseek-r1-qwen"):  # Qwen3.5's has none: llama.cpp's .out shows it
        tok.normalizer = normalizers.NFC()  # as in Qwen2's tokenizer.json
    tok.decoder = decoders.ByteLevel()
    specials = [AddedToken(t, special=True, normalized=False)
                for t, ty in zip(v["tokens"], v["types"]) if ty in (TYPE_CONTROL, TYPE_UNKNOWN) and t]
    users = [AddedToken(t, special=False, normalized=False)
             for t, ty in zip(v["tokens"], v["types"]) if ty == TYPE_USER and t]
    tok.add_special_tokens(specials)
    tok.add_tokens(users)
    return tok


def read_inp_out(gguf: str):
    inp, out = gguf + ".inp", gguf + ".out"
    if not (os.path.exists(inp) and os.path.exists(out)):
        return None
    texts = open(inp, encoding="utf-8").read().split("\n__ggml_vocab_test__\n")
    if texts and texts[-1] == "":
        texts = texts[:-1]
    ids = [[int(x) for x in line.split()] for line in open(out, encoding="utf-8").read().split("\n")]
    return texts, ids[:len(texts)]


def check_inp_out(name: str, tool: str, gguf: str) -> None:
    io = read_inp_out(gguf)
    if not check(io is not None, f"{name}: llama.cpp .inp/.out reference files present"):
        return
    texts, ref = io
    res = run_tool(tool, gguf, [{"op": "encode", "hex": t.encode().hex(), "flags": 0} for t in texts])
    ok = 0
    for t, r, o in zip(texts, ref, res):
        ok += check(o.get("ids") == r, f"{name} .inp/.out {t[:40]!r}", f"ours {o.get('ids')} ref {r}")
    print(f"  {name}: llama.cpp reference tokenizations (HF AutoTokenizer): {ok}/{len(texts)} equal")


def decode_checks(name, tool, gguf, ref_decode, ids_list, texts, skip=True):
    """Our decode and stream of ids against the reference's decode (errors='replace')."""
    reqs = []
    for ids in ids_list:
        reqs.append({"op": "decode", "ids": ids, "skip": skip})
        reqs.append({"op": "stream", "ids": ids, "skip": skip})
    res = run_tool(tool, gguf, reqs)
    ok = 0
    for k, ids in enumerate(ids_list):
        want = ref_decode(ids)
        ours = bytes.fromhex(res[2 * k].get("hex", "")).decode("utf-8", "replace")
        stream = bytes.fromhex(res[2 * k + 1].get("hex", "")).decode("utf-8")
        good = check(ours == want, f"{name} decode {texts[k]!r}"[:120], f"ours {ours!r} ref {want!r}")
        good &= check(stream == want, f"{name} stream {texts[k]!r}"[:120], f"ours {stream!r} ref {want!r}")
        ok += good
    return ok


def check_bpe(name: str, tool: str, gguf: str, strings: list) -> None:
    v = read_gguf_vocab(gguf)
    tok = hf_bpe(v)
    valid = [s for s in strings if corpus_mod.is_valid(s)]
    invalid = [s for s in strings if not corpus_mod.is_valid(s)]
    tok.encode_special_tokens = True  # plain text: special tokens written in it are just text
    ref = [e.ids for e in tok.encode_batch([s.decode() for s in valid], add_special_tokens=False)]
    res = run_tool(tool, gguf, [{"op": "encode", "hex": s.hex(), "flags": 0} for s in valid])
    enc_ok = 0
    for s, r, o in zip(valid, ref, res):
        enc_ok += check(o.get("ids") == r, f"{name} encode {s[:60]!r}", f"ours {o.get('ids')} ref {r}")
    user = {i for i, ty in enumerate(v["types"]) if ty == TYPE_USER}

    def ref_decode(ids):
        # HF runs user-defined tokens through the ByteLevel decoder too, so DeepSeek's added
        # tokens "\u00fa", "\u00c0", ... (the characters of bytes that UTF-8 never uses) come
        # out as U+FFFD although the text held the letter; like llama.cpp we give back their text
        out, run = [], []
        for i in ids + [None]:
            if i is None or i in user:
                out.append(tok.decode(run, skip_special_tokens=True))
                run = []
                if i is not None:
                    out.append(v["tokens"][i])
            else:
                run.append(i)
        return "".join(out)

    n_user = sum(1 for ids in ref if any(i in user for i in ids))
    if n_user:
        print(f"  {name}: note: {n_user} strings hold user-defined tokens, compared as their text "
              f"(HF would pass them through its ByteLevel decoder)")
    dec_ok = decode_checks(name, tool, gguf, ref_decode, ref, valid)
    print(f"  {name}: encode {enc_ok}/{len(valid)} equal to HF tokenizers, decode+stream {dec_ok}/{len(valid)}")

    # special tokens parsed in the text (TOKENIZER_PARSE_SPECIAL) against HF's added tokens
    tok.encode_special_tokens = False
    specials = [t for t, ty in zip(v["tokens"], v["types"]) if ty == TYPE_CONTROL][:8]
    rng = random.Random(7)
    mixed = []
    for s in valid[:300]:
        t = s.decode()
        cut = rng.randint(0, len(t))
        mixed.append(t[:cut] + rng.choice(specials) + t[cut:] + rng.choice(specials) if specials else t)
    ref = [e.ids for e in tok.encode_batch(mixed, add_special_tokens=False)]
    res = run_tool(tool, gguf, [{"op": "encode", "hex": s.encode().hex(), "flags": 2} for s in mixed])
    sp_ok = 0
    for s, r, o in zip(mixed, ref, res):
        sp_ok += check(o.get("ids") == r, f"{name} parse-special {s[:60]!r}", f"ours {o.get('ids')} ref {r}")
    # and back, special tokens written out (skip_special false) and left out
    no_user = [(r, m) for r, m in zip(ref, mixed) if not any(i in user for i in r)]
    d1 = decode_checks(name, tool, gguf, lambda ids: tok.decode(ids, skip_special_tokens=False),
                       [r for r, _ in no_user], [m for _, m in no_user], skip=False)
    d2 = decode_checks(name, tool, gguf, lambda ids: tok.decode(ids, skip_special_tokens=True),
                       [r for r, _ in no_user], [m for _, m in no_user], skip=True)
    print(f"  {name}: with special tokens parsed: {sp_ok}/{len(mixed)} equal; decoded with them "
          f"{d1}/{len(no_user)}, without {d2}/{len(no_user)}")

    # random id sequences: broken UTF-8 across tokens must decode like HF (U+FFFD)
    rng = random.Random(11)
    normal = [i for i, ty in enumerate(v["types"]) if ty == TYPE_NORMAL]
    seqs = [[rng.choice(normal) for _ in range(rng.randint(1, 12))] for _ in range(300)]
    r_ok = decode_checks(name, tool, gguf, lambda ids: tok.decode(ids, skip_special_tokens=True),
                         seqs, [str(s) for s in seqs])
    print(f"  {name}: random id sequences decoded like HF: {r_ok}/{len(seqs)}")
    # a vocabulary may lack the characters of bytes that never occur in UTF-8 (GPT-NeoX lacks
    # 0xC0, 0xC1, 0xF5..0xFF): HF's BPE drops them, and so do we
    vocab = {t for t, ty in zip(v["tokens"], v["types"]) if ty == TYPE_NORMAL}
    kept = {b for b, ch in bytes_to_unicode().items() if ch in vocab}
    round_trip(name, tool, gguf, invalid, kept)
    if v["pre"] == "qwen2":
        nfc = sum(1 for s in valid if unicodedata.normalize("NFC", s.decode()) != s.decode())
        print(f"  {name}: {nfc} of these strings change under NFC (Qwen2's normalizer, which we apply)")
        check_nfc(name, tool, gguf)


def check_nfc(name: str, tool: str, gguf: str) -> None:
    """decode(encode(x)) is our NFC of x: compare it with Python's unicodedata on strings dense
    in what NFC changes (combining marks in every order, jamo, singletons, exclusions)."""
    rng = random.Random(5)
    bases = "aeiouAEIOUcnsyzCNSYZ\u03b1\u03b9\u03c5\u03c9\u0391\u0399\u0415\u0418\u0438\u05d0\u05e9\u0915\u0930\u09a1\u0b21\u0f40"
    marks = [chr(c) for c in list(range(0x300, 0x34f)) + list(range(0x591, 0x5c8)) +
             [0x93c, 0x94d, 0x9bc, 0x9be, 0x9d7, 0xb3c, 0xb3e, 0xb56, 0xb57, 0xf71, 0xf72, 0xf74, 0xf80,
              0x3099, 0x309a, 0x1dc0, 0x1dc3, 0x20d0, 0x20e1]]
    singles = [chr(c) for c in (0x212b, 0x2126, 0x212a, 0x0340, 0x0341, 0x0343, 0x0344, 0x0958, 0x0959,
                                0xf900, 0xfa10, 0x2adc, 0xfb1d, 0xfb2a, 0x1f71, 0x1fee, 0x0385, 0x1e9b)]
    texts = []
    for _ in range(500):
        parts = []
        for _ in range(rng.randint(1, 6)):
            r = rng.random()
            if r < 0.6:
                parts.append(rng.choice(bases) + "".join(rng.choice(marks) for _ in range(rng.randint(0, 4))))
            elif r < 0.75:
                parts.append(chr(0x1100 + rng.randrange(19)) + chr(0x1161 + rng.randrange(21)) +
                             (chr(0x11a8 + rng.randrange(27)) if rng.random() < 0.5 else ""))
            elif r < 0.85:
                parts.append(chr(0xac00 + rng.randrange(11172)) + (chr(0x11a8 + rng.randrange(27)) if rng.random() < 0.5 else ""))
            else:
                parts.append(rng.choice(singles) + "".join(rng.choice(marks) for _ in range(rng.randint(0, 2))))
        texts.append("".join(parts))
    res = run_tool(tool, gguf, [{"op": "encode", "hex": t.encode().hex(), "flags": 0} for t in texts])
    dres = run_tool(tool, gguf, [{"op": "decode", "ids": r.get("ids", []), "skip": True} for r in res])
    ok = 0
    for t, d in zip(texts, dres):
        want = unicodedata.normalize("NFC", t)
        got = bytes.fromhex(d.get("hex", "")).decode("utf-8", "replace")
        ok += check(got == want, f"{name} NFC of {t!r}", f"ours {got!r} unicodedata {want!r}")
    print(f"  {name}: our NFC equal to Python's unicodedata (Unicode {unicodedata.unidata_version}): {ok}/{len(texts)}")


def bytes_to_unicode() -> dict:
    """GPT-2's byte -> character map (from openai/gpt-2 encoder.py)."""
    return dict(synth_vocab.bytes_to_unicode())


def round_trip(name: str, tool: str, gguf: str, strings: list, kept: set) -> None:
    reqs = []
    for s in strings:
        reqs.append({"op": "encode", "hex": s.hex(), "flags": 0})
    res = run_tool(tool, gguf, reqs)
    dreqs = [{"op": "decode", "ids": r.get("ids", []), "skip": True} for r in res]
    dres = run_tool(tool, gguf, dreqs)
    ok = 0
    for s, d in zip(strings, dres):
        want = bytes(b for b in s if b in kept)
        ok += check(bytes.fromhex(d.get("hex", "")) == want, f"{name} round trip {s!r}", f"got {d.get('hex')}")
    print(f"  {name}: invalid UTF-8 round trips byte for byte: {ok}/{len(strings)}")


def spm_to_gguf(model_path: str, out_path: str):
    import gguf
    import sentencepiece as spm
    sp = spm.SentencePieceProcessor(model_file=model_path)
    tokens, scores, types = [], [], []
    for i in range(sp.get_piece_size()):
        tokens.append(sp.id_to_piece(i))
        scores.append(sp.get_score(i))
        types.append(TYPE_CONTROL if sp.is_control(i) else TYPE_UNKNOWN if sp.is_unknown(i) else
                     TYPE_BYTE if sp.is_byte(i) else TYPE_UNUSED if sp.is_unused(i) else TYPE_NORMAL)
    w = gguf.GGUFWriter(out_path, "llama")
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_bos_token_id(sp.bos_id())
    w.add_eos_token_id(sp.eos_id())
    w.add_unk_token_id(sp.unk_id())
    w.add_add_bos_token(True)
    w.add_add_eos_token(False)
    w.add_add_space_prefix(True)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return sp


def check_spm(name: str, tool: str, model_path: str, strings: list, tmp: str) -> None:
    gguf_path = os.path.join(tmp, name + ".gguf")
    sp = spm_to_gguf(model_path, gguf_path)
    valid = [s for s in strings if corpus_mod.is_valid(s)]
    invalid = [s for s in strings if not corpus_mod.is_valid(s)]
    ref = [sp.encode(s.decode()) for s in valid]
    res = run_tool(tool, gguf_path, [{"op": "encode", "hex": s.hex(), "flags": 0} for s in valid])
    enc_ok = 0
    for s, r, o in zip(valid, ref, res):
        enc_ok += check(o.get("ids") == r, f"{name} encode {s[:60]!r}", f"ours {o.get('ids')} ref {r}")
    # with BOS (TOKENIZER_ADD_SPECIAL) the same ids after it
    res = run_tool(tool, gguf_path, [{"op": "encode", "hex": s.hex(), "flags": 1} for s in valid[:200]])
    bos_ok = 0
    for s, r, o in zip(valid, ref, res):
        bos_ok += check(o.get("ids") == [sp.bos_id()] + r, f"{name} encode+BOS {s[:60]!r}")
    # decode: sentencepiece drops the dummy-prefix space; the stream keeps it (it continues a prompt)
    reqs = []
    for ids in ref:
        reqs += [{"op": "decode", "ids": ids, "skip": True}, {"op": "stream", "ids": ids, "skip": True}]
    dres = run_tool(tool, gguf_path, reqs)
    dec_ok = 0
    for k, (s, ids) in enumerate(zip(valid, ref)):
        want = sp.decode(ids)
        ours = bytes.fromhex(dres[2 * k]["hex"]).decode("utf-8", "replace")
        stream = bytes.fromhex(dres[2 * k + 1]["hex"]).decode("utf-8")
        good = check(ours == want, f"{name} decode {s[:60]!r}", f"ours {ours!r} ref {want!r}")
        # the stream keeps the leading space: sentencepiece's pieces joined, bytes as bytes
        raw = b"".join(bytes([int(sp.id_to_piece(i)[3:5], 16)]) if sp.is_byte(i)
                       else b"" if sp.is_control(i) else sp.id_to_piece(i).replace("\u2581", " ").encode()
                       for i in ids)
        want_stream = raw.decode("utf-8", "replace")
        good &= check(stream == want_stream, f"{name} stream {s[:60]!r}", f"ours {stream!r} ref {want_stream!r}")
        dec_ok += good
    print(f"  {name}: encode {enc_ok}/{len(valid)} equal to sentencepiece, with BOS {bos_ok}/{min(200, len(valid))}, "
          f"decode+stream {dec_ok}/{len(valid)}")
    round_trip(name, tool, gguf_path, invalid, set(range(256)))


# Deliberately wrong pre-tokenizers: for each regex, each alternative left out and the classes and
# counts changed the ways a hand-written matcher could get them wrong.  Each must give other ids
# than the right one on some string of the corpus with the synthetic vocabulary, or the
# comparison with our matcher could not have caught that mistake.
def _alts(regex: str) -> list:
    """The top-level alternatives of a regex (no '|' inside brackets or groups)."""
    out, depth, cls, cur, k = [], 0, False, "", 0
    while k < len(regex):
        ch = regex[k]
        if ch == "\\":
            cur += regex[k:k + 2]
            k += 2
            continue
        if cls:
            cls = ch != "]"
        elif ch == "[":
            cls = True
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == "|" and depth == 0:
            out.append(cur)
            cur = ""
            k += 1
            continue
        cur += ch
        k += 1
    return out + [cur]


def mutants(splits: list, edits: list, same: dict | None = None) -> list:
    """(what, splits): every top-level alternative left out of each split regex but those in
    `same` ((split, alternative) -> why leaving it out changes nothing), then each
    (what, split index, old, new) edit (every occurrence of old replaced)."""
    out = []
    for k, regex in enumerate(splits):
        alts = _alts(regex)
        for j in range(len(alts)):
            if len(alts) > 1 and (k, j) not in (same or {}):
                out.append((f"split {k + 1} without alternative {j + 1} {alts[j]!r}",
                            splits[:k] + ["|".join(alts[:j] + alts[j + 1:])] + splits[k + 1:]))
        if len(alts) == 1:
            out.append((f"without split {k + 1} {regex!r}", splits[:k] + splits[k + 1:]))
    for what, k, old, new in edits:
        if old not in splits[k]:
            raise RuntimeError(f"mutant {what!r}: {old!r} is not in split {k + 1}")
        out.append((what, splits[:k] + [splits[k].replace(old, new)] + splits[k + 1:]))
    return out


SYNTH_MUTANTS = {
    "deepseek-v3": [
        ("digits in runs of 1-2", 0, "{1,3}", "{1,2}"),
        ("digits in runs of any length", 0, "{1,3}", "+"),
        ("ASCII digits only", 0, r"\p{N}", "[0-9]"),
        ("decimal digits only (\\p{Nd})", 0, r"\p{N}", r"\p{Nd}"),
        ("ideographs to U+9FFF", 1, "\u9fa5", "\u9fff"),
        ("ideographs to U+9FA4", 1, "\u9fa5", "\u9fa4"),
        ("no Hiragana", 1, "\u3040-\u309f", ""),
        ("no Katakana", 1, "\u30a0-\u30ff", ""),
        ("Katakana without U+30FB-U+30FF", 1, "\u30ff", "\u30fa"),
        ("punctuation then any letters", 2, "][A-Za-z]+", r"]\p{L}+"),
        ("\\p{P} then ASCII letters", 2, r"""[!"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~]""", r"\p{P}"),
        ("no prefix before letters", 2, r"[^" "\r\n" r"\p{L}\p{P}\p{S}]?[", "["),
        ("a prefix required before letters", 2, r"\p{S}]?[\p{L}\p{M}]+", r"\p{S}][\p{L}\p{M}]+"),
        ("marks not in the letter run", 2, r"?[\p{L}\p{M}]+", r"?\p{L}+"),
        ("line breaks can be the prefix", 2, "[^\r\n" + r"\p{L}", r"[^\p{L}"),
        ("any white space before punctuation", 2, r"| ?[\p{P}", r"|\s?[\p{P}"),
        ("no space before punctuation", 2, r"| ?[\p{P}", r"|[\p{P}"),
        ("punctuation only (no \\p{S})", 2, r"| ?[\p{P}\p{S}]+", r"| ?\p{P}+"),
        ("no line breaks after punctuation", 2, "\\p{S}]+[\r\n]*", r"\p{S}]+"),
        ("'/' after punctuation too (o200k's)", 2, "]+[\r\n]*", "]+[\r\n/]*"),
        ("one white space at a time", 2, r"|\s+(?!\S)|\s+", r"|\s"),
    ],
    "kimi-k2": [
        ("Han letters only", 0, r"[\p{Han}]+", r"[\p{Han}&&\p{L}]+"),
        ("Han as the CJK ideograph blocks", 0, r"[\p{Han}]+", "[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]+"),
        ("Han not taken out of the letter classes", 0, r"&&[^\p{Han}]", ""),
        ("llama.cpp's hand-written words: one letter run, no case split, no marks", 0,
         r"[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}&&[^\p{Han}]]*[\p{Ll}\p{Lm}\p{Lo}\p{M}&&[^\p{Han}]]+",
         r"[\p{L}&&[^\p{Han}]]+"),
        ("no prefix before words", 0, r"[^\r\n\p{L}\p{N}]?", ""),
        ("line breaks can be the prefix", 0, r"[^\r\n\p{L}\p{N}]?", r"[^\p{L}\p{N}]?"),
        ("Lt counted as no letter case", 0, r"\p{Lt}", ""),
        ("Lm only in the lower class", 0, r"\p{Lt}\p{Lm}", r"\p{Lt}"),
        ("Lo only in the upper class", 0, r"\p{Ll}\p{Lm}\p{Lo}", r"\p{Ll}\p{Lm}"),
        ("marks in neither letter class", 0, r"\p{Lo}\p{M}", r"\p{Lo}"),
        ("case-sensitive contractions", 0, "(?i:", "(?:"),
        ("no contractions", 0, "(?i:'s|'t|'re|'ve|'m|'ll|'d)?", ""),
        ("digits in runs of 1-2", 0, "{1,3}", "{1,2}"),
        ("ASCII digits only", 0, r"\p{N}{1,3}", "[0-9]{1,3}"),
        ("'/' after punctuation too (o200k's)", 0, r"]+[\r\n]*", r"]+[\r\n/]*"),
        ("no line breaks after punctuation", 0, r"]+[\r\n]*", "]+"),
        ("any white space before punctuation", 0, r"| ?[^\s", r"|\s?[^\s"),
        ("one white space at a time", 0, r"|\s+(?!\S)|\s+", r"|\s"),
    ],
}


# Alternatives whose absence no input can show: (split, alternative) -> why.
SYNTH_SAME = {
    "kimi-k2": {(0, 7): "every character but white space starts some alternative, so the lone "
                        "white space character that \\s+ would take is a piece of its own anyway"},
}


def check_sensitive(name: str, v: dict, splits: list, edits: list, valid: list,
                    same: dict | None = None) -> None:
    def encode(m):
        tok = hf_bpe(v, m)
        tok.encode_special_tokens = True  # as check_bpe compares plain text
        return [e.ids for e in tok.encode_batch(texts, add_special_tokens=False)]

    texts = [s.decode() for s in valid]
    right = encode(None)
    caught = 0
    muts = mutants(splits, edits, same)
    for (k, j), why in (same or {}).items():
        print(f"    {name}: split {k + 1} without alternative {j + 1} {_alts(splits[k])[j]!r}: "
              f"not a wrong pre-tokenizer ({why})")
    for what, m in muts:
        ids = encode(m)
        n = sum(1 for a, b in zip(right, ids) if a != b)
        caught += check(n > 0, f"{name}: the corpus cannot tell a wrong pre-tokenizer ({what}) from the right one")
        print(f"    {name}: wrong pre-tokenizer, {what}: {n} strings tokenised differently")
    print(f"  {name}: {caught}/{len(muts)} deliberately wrong pre-tokenizers give other ids on some string")


def synthetic_vocabularies(tool: str, strings: list) -> None:
    """Pre-tokenizers with no small real vocabulary: a byte-level BPE learnt on the corpus with no
    pre-tokenization (tests/data/tokenizer/synth_vocab.py), so that its merges cross the splits."""
    # the corpus, and its strings written for these splits eight times more, so that merges
    # across their rarer boundaries are learnt too
    texts = [s.decode() for s in strings if corpus_mod.is_valid(s)] + corpus_mod.SPLITS * 8
    specials = ["<|bos|>", "<|eos|>", "<|im_end|>", "<\uff5cUser\uff5c>"]
    with tempfile.TemporaryDirectory() as tmp:
        for pre, splits in SYNTH_SPLITS.items():
            print(f"synthetic vocabulary, pre {pre} (4000 merges learnt on the corpus):")
            path = os.path.join(tmp, f"synth-{pre}.gguf")
            try:
                synth_vocab.make(path, pre, texts, 4000, specials)
                check_bpe(f"synth-{pre}", tool, path, strings)
                check_sensitive(f"synth-{pre}", read_gguf_vocab(path), splits, SYNTH_MUTANTS[pre],
                                [s for s in strings if corpus_mod.is_valid(s)], SYNTH_SAME.get(pre))
            except Exception as e:
                check(False, f"synth-{pre}: {e}")


def test_model(build: str, arch: str) -> str:
    """Same cache file and arguments as tests/unit/test_models.h's test_model_file()."""
    d = os.path.join(build, "test-models")
    os.makedirs(d, exist_ok=True)
    path = os.path.join(d, f"{arch}-tiny-f32.gguf")
    if not os.path.exists(path):
        tmp = f"{path}.{os.getpid()}"
        subprocess.run([sys.executable, os.path.join(ROOT, "tools", "gen_model.py"), "--arch", arch,
                        "--preset", "tiny", "--type", "f32", "--seed", "1", "-o", tmp],
                       check=True, stdout=subprocess.DEVNULL)
        os.replace(tmp, path)
    return path


def main() -> int:
    if len(sys.argv) != 2:
        print("usage: tokenizer_crosscheck.py TOK_TOOL")
        return 2
    tool = sys.argv[1]
    strings = corpus_mod.corpus()
    print(f"corpus: {len(strings)} strings ({sum(map(corpus_mod.is_valid, strings))} valid UTF-8), data in {DATA}")
    models_dir = os.path.join(DATA, "llama.cpp-models")
    mistral_dir = os.path.join(DATA, "mistral-common")
    for name in ("gpt-2", "llama-bpe", "qwen2", "qwen35", "deepseek-llm", "mpt"):
        gguf = os.path.join(models_dir, f"ggml-vocab-{name}.gguf")
        print(f"vocabulary {name}:")
        if not check(os.path.exists(gguf), f"{name}: {gguf} present",
                     "MISSING (run scripts/setup.sh: it fetches llama-cpp-python's sdist from PyPI)"):
            continue
        try:
            check_bpe(name, tool, gguf, strings)
            check_inp_out(name, tool, gguf)
        except Exception as e:  # a crash of one vocabulary is a failure, the others still run
            check(False, f"{name}: {e}")
    # the synthetic vocabularies of the test models (what the server tests run on), made by
    # tools/gen_model.py into the build tree's cache as the unit tests make them
    build = os.environ.get("MOE_BUILD_ROOT")
    # gpt-oss: pre "gpt-4o" (o200k's regex); glm4moe: "glm4" (Llama 3's regex, merges not ignored)
    for arch in ("qwen3moe", "olmoe", "gpt-oss", "glm4moe"):
        print(f"vocabulary of the {arch} tiny test model:")
        if not check(build is not None, "MOE_BUILD_ROOT is set (run through meson test)"):
            break
        try:
            path = test_model(build, arch)
            check_bpe(f"{arch}-tiny", tool, path, strings)
        except Exception as e:
            check(False, f"{arch}-tiny: {e}")
    synthetic_vocabularies(tool, strings)
    # the trained test model's own byte-level BPE (tools/train_moe.py, trained on Python sources)
    trained = os.path.join(ROOT, "tests", "data", "trained-moe.gguf")
    print("vocabulary of the trained test model:")
    if check(os.path.exists(trained), f"{trained} present"):
        try:
            check_bpe("trained-moe", tool, trained, strings)
        except Exception as e:
            check(False, f"trained-moe: {e}")
    print("vocabulary llama-spm:")
    gguf = os.path.join(models_dir, "ggml-vocab-llama-spm.gguf")
    if check(os.path.exists(gguf), f"llama-spm: {gguf} present", "MISSING"):
        check_inp_out("llama-spm", tool, gguf)
    with tempfile.TemporaryDirectory() as tmp:
        for fname in ("tokenizer.model.v1", "mistral_instruct_tokenizer_240323.model.v3"):
            path = os.path.join(mistral_dir, fname)
            print(f"vocabulary mistral {fname}:")
            if not check(os.path.exists(path), f"{fname} present",
                         "MISSING (run scripts/setup.sh: it fetches mistral-common's sdist from PyPI)"):
                continue
            try:
                check_spm(fname.replace("tokenizer.model.", "mistral-").replace("mistral_instruct_tokenizer_240323.model.", "mistral-"),
                          tool, path, strings, tmp)
            except Exception as e:
                check(False, f"{fname}: {e}")
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
