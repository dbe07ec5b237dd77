"""Byte-level BPE vocabularies made for pre-tokenizers that have no small real vocabulary to
test with (deepseek-v3 and kimi-k2: llama.cpp vendors no ggml-vocab file of either, and the
real ones are 128k and 160k tokens).

The merges are learnt by Hugging Face tokenizers' BpeTrainer on whole strings, with no
pre-tokenization at all, so that many of them cross the places where a pre-tokenizer splits
(" 1", "a.", ".N", a Han character and a kana after it, "\\n "): a split that one side misses,
adds or moves then changes the tokens, which is what a cross-check of a pre-tokenizer needs.
A vocabulary trained after the pre-tokenizer (as real ones are) would hold no such merge and
hide most split errors.

    make(path, pre, texts, n_merges, specials)   writes a GGUF holding the vocabulary only
Deterministic: the same texts give the same file.
"""
from __future__ import annotations

import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "tools"))
from gen_model import bytes_to_unicode  # noqa: E402

TYPE_NORMAL, TYPE_CONTROL = 1, 3


def byte_chars() -> list:
    """GPT-2's byte -> character map, in byte order of the 256 base tokens as GPT-2 lists them."""
    return [c for _, c in bytes_to_unicode()]


def train(texts: list, n_merges: int) -> tuple:
    """(tokens, merges): the 256 byte tokens, then the learnt ones in the trainer's order (two
    merges may make the same token: "a bc" and "ab c")."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    base = byte_chars()
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    trainer = trainers.BpeTrainer(vocab_size=len(base) + n_merges, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer)
    model = json.loads(tok.to_str())["model"]
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ", 1)) for m in model["merges"]]
    learnt = [t for t, _ in sorted(model["vocab"].items(), key=lambda kv: kv[1]) if t not in set(base)]
    tokens = base + learnt
    known = set(tokens)
    if len(known) != len(tokens) or any(a not in known or b not in known or a + b not in known
                                        for a, b in merges):
        raise RuntimeError("the trainer's vocabulary and merges disagree")
    return tokens, [f"{a} {b}" for a, b in merges]


def make(path: str, pre: str, texts: list, n_merges: int, specials: list) -> None:
    import gguf
    tokens, merges = train(texts, n_merges)
    tokens = tokens + specials
    types = [TYPE_NORMAL] * (len(tokens) - len(specials)) + [TYPE_CONTROL] * len(specials)
    w = gguf.GGUFWriter(path, "llama")
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre(pre)
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    if specials:
        w.add_bos_token_id(len(tokens) - len(specials))
        w.add_eos_token_id(len(tokens) - len(specials) + 1 if len(specials) > 1 else len(tokens) - 1)
    w.add_add_bos_token(False)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
