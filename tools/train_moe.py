#!/usr/bin/env python3
"""Trains a small OLMoE-shaped mixture-of-experts language model whose routing is real, and
exports it as GGUF (what tests/data/trained-moe.gguf is).

Random-weight models route almost at random, so neither the expert predictor nor the cache
policies can be judged on them.  This model is trained, on the CPU, on text every Debian 12
machine has offline: the Python 3.11 standard library's sources (/usr/lib/python3.11, Debian's
libpython3.11-stdlib; code, docstrings and comments), every 50th file held out for validation.

- Tokenizer: a byte-level BPE (GPT-2 pre-tokenizer, `tokenizer.ggml.pre = olmo` as OLMoE's
  files say), trained by Hugging Face `tokenizers` on the same text; the four OLMoE specials
  last; ChatML template.
- Model: transformers' OlmoeForCausalLM (Q/K RMS norms, softmax router, top-k without
  renormalisation, load-balancing loss 0.01), trained with AdamW, linear warm-up then cosine
  decay, on sequences cut at random offsets of the token stream (documents separated by
  <|endoftext|>).  Seeded; torch on a fixed number of threads.
- Export: llama.cpp's `olmoe` GGUF (gguf-py constants); weight matrices in Q8_0 (routers and
  norms F32, as llama-quantize leaves them), experts stacked as ffn_{gate,up,down}_exps.
- Goldens: transformers on the exported file's dequantised weights (tools/golden.py's loader,
  a reader independent of moeserve's): last-position logits of three prompts and 32 greedy
  tokens, written like the other goldens.
- Docs: the loss curve (CSV and SVG) and a sampled text.

Needs the golden venv (torch, transformers; never installed in CI):

    python3 -m venv .venv-golden && .venv-golden/bin/pip install -r tools/requirements-golden.txt
    .venv-golden/bin/python tools/train_moe.py --out tests/data/trained-moe.gguf \\
        --golden tests/data/golden/trained-moe.json --docs docs/trained-moe
"""
from __future__ import annotations

import argparse
import glob
import json
import math
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import gguf  # noqa: E402
from gguf import GGMLQuantizationType as QT  # noqa: E402
from gguf import LlamaFileType, TokenType  # noqa: E402

import gen_model  # noqa: E402

SPECIALS = ["<|endoftext|>", "<|padding|>", "<|im_start|>", "<|im_end|>"]
CORPUS_ROOT = "/usr/lib/python3.11"
# Real text has routing near-ties (k-th and k+1-th router logit within golden.ROUTER_GAP) far more
# often than golden.py's random prompts on random weights, so prompts are shorter.
PROMPT_LENGTHS = (5, 11, 23)
GREEDY_PROMPT, N_GREEDY = 8, 32   # the greedy run is teacher-forced in the quantised test
SAMPLE_PROMPTS = ["def main(argv):\n    ", "import os\nimport sys\n\n", "class Stack:\n    \"\"\"A"]


# --------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------
def corpus(root: str) -> tuple[list[str], list[str]]:
    files = sorted(p for p in glob.glob(os.path.join(root, "**", "*.py"), recursive=True)
                   if "site-packages" not in p and "dist-packages" not in p)
    if not files:
        raise SystemExit(f"no Python sources under {root} (Debian's libpython3.11-stdlib)")
    train, val = [], []
    for i, p in enumerate(files):
        with open(p, "rb") as f:
            text = f.read().decode("utf-8", errors="replace")
        (val if i % 50 == 49 else train).append(text)
    return train, val


def train_tokenizer(texts: list[str], n_vocab: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=n_vocab - len(SPECIALS), show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), special_tokens=[])
    tok.train_from_iterator(texts, trainer)
    tok.add_special_tokens(SPECIALS)
    assert tok.get_vocab_size() == n_vocab, tok.get_vocab_size()
    return tok


def vocab_for_gguf(tok) -> dict:
    model = json.loads(tok.to_str())["model"]
    inv = {i: t for t, i in tok.get_vocab().items()}
    tokens = [inv[i] for i in range(len(inv))]
    merges = [m if isinstance(m, str) else f"{m[0]} {m[1]}" for m in model["merges"]]
    types = [int(TokenType.CONTROL) if t in SPECIALS else int(TokenType.NORMAL) for t in tokens]
    sid = {s: tokens.index(s) for s in SPECIALS}
    return dict(model="gpt2", pre="olmo", tokens=tokens, types=types, merges=merges,
                bos=sid["<|endoftext|>"], eos=sid["<|endoftext|>"], pad=sid["<|padding|>"],
                add_bos=False, template=gen_model.CHATML)


def encode(tok, texts: list[str]) -> np.ndarray:
    eot = tok.token_to_id("<|endoftext|>")
    out = []
    for enc in tok.encode_batch(texts, add_special_tokens=False):
        out.extend(enc.ids)
        out.append(eot)
    return np.asarray(out, dtype=np.int64)


# --------------------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------------------
def hparams(args) -> gen_model.HParams:
    return gen_model.HParams(arch="olmoe", preset="trained", n_embd=args.embd, n_ff=args.ff,
                             n_expert=args.experts, n_expert_used=args.used, n_head=args.heads,
                             n_head_kv=args.heads, head_dim=args.embd // args.heads, n_layer=args.layers,
                             n_vocab=args.vocab, n_ctx=args.ctx, rope_base=1e4, eps=1e-5)


def make_model(hp: gen_model.HParams, aux: float):
    import torch
    import transformers as tf
    cfg = tf.OlmoeConfig(vocab_size=hp.n_vocab, hidden_size=hp.n_embd, intermediate_size=hp.n_ff,
                         num_hidden_layers=hp.n_layer, num_attention_heads=hp.n_head,
                         num_key_value_heads=hp.n_head_kv, max_position_embeddings=hp.n_ctx,
                         rms_norm_eps=hp.eps, rope_theta=hp.rope_base, tie_word_embeddings=False,
                         num_experts=hp.n_expert, num_experts_per_tok=hp.n_expert_used, norm_topk_prob=False,
                         output_router_logits=True, router_aux_loss_coef=aux, attention_bias=False,
                         clip_qkv=None, pad_token_id=None, bos_token_id=None, eos_token_id=None)
    cfg._attn_implementation = "sdpa"
    return tf.OlmoeForCausalLM(cfg).to(torch.float32)


def lr_at(step: int, args) -> float:
    if step < args.warmup:
        return args.lr * (step + 1) / args.warmup
    t = (step - args.warmup) / max(1, args.steps - args.warmup)
    return args.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, t))))


def train(args, hp, train_ids: np.ndarray, val_ids: np.ndarray):
    import torch
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    model = make_model(hp, args.aux)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"model: {n_params / 1e6:.2f} M parameters, {len(train_ids) / 1e6:.2f} M training tokens", flush=True)
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    keep = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": keep, "weight_decay": 0.0}],
                            lr=args.lr, betas=(0.9, 0.95), eps=1e-8)
    rng = np.random.default_rng(args.seed)
    L = hp.n_ctx
    val_rng = np.random.default_rng(args.seed + 1)
    val_starts = val_rng.integers(0, len(val_ids) - L - 1, size=32)
    val_x = torch.from_numpy(np.stack([val_ids[s:s + L + 1] for s in val_starts]))

    def val_loss():
        model.eval()
        with torch.no_grad():
            out = model(input_ids=val_x[:, :-1], labels=val_x[:, :-1].clone())
        model.train()
        return float(out.loss - args.aux * out.aux_loss) if out.aux_loss is not None else float(out.loss)

    curve = []   # (step, tokens, train loss, val loss, seconds)
    t0 = time.time()
    run_loss, run_n = 0.0, 0
    model.train()
    for step in range(args.steps):
        starts = rng.integers(0, len(train_ids) - L - 1, size=args.batch)
        x = torch.from_numpy(np.stack([train_ids[s:s + L] for s in starts]))
        for g in opt.param_groups:
            g["lr"] = lr_at(step, args)
        out = model(input_ids=x, labels=x.clone())
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        run_loss += float((out.loss - args.aux * out.aux_loss).detach())
        run_n += 1
        if (step + 1) % args.log_every == 0 or step + 1 == args.steps:
            vl = val_loss() if ((step + 1) % (args.log_every * 5) == 0 or step + 1 == args.steps) else float("nan")
            el = time.time() - t0
            curve.append((step + 1, (step + 1) * args.batch * L, run_loss / run_n, vl, el))
            print(f"step {step + 1:6d}  loss {run_loss / run_n:.4f}  val {vl:.4f}  aux {float(out.aux_loss):.3f}  "
                  f"lr {lr_at(step, args):.2e}  {(step + 1) * args.batch * L / el:,.0f} tok/s  {el / 60:.1f} min",
                  flush=True)
            run_loss, run_n = 0.0, 0
    return model, curve


# --------------------------------------------------------------------------------------
# Export
# --------------------------------------------------------------------------------------
def gguf_tensors(model, hp) -> list[tuple[str, np.ndarray]]:
    """HF state dict -> (GGUF name, float32 array in GGUF's row-major numpy shape), file order."""
    sd = {k: v.detach().to("cpu").float().numpy() for k, v in model.state_dict().items()}
    out = [("token_embd.weight", sd["model.embed_tokens.weight"])]
    for i in range(hp.n_layer):
        p, b = f"model.layers.{i}.", f"blk.{i}."
        out += [(b + "attn_norm.weight", sd[p + "input_layernorm.weight"]),
                (b + "attn_q.weight", sd[p + "self_attn.q_proj.weight"]),
                (b + "attn_k.weight", sd[p + "self_attn.k_proj.weight"]),
                (b + "attn_v.weight", sd[p + "self_attn.v_proj.weight"]),
                (b + "attn_q_norm.weight", sd[p + "self_attn.q_norm.weight"]),
                (b + "attn_k_norm.weight", sd[p + "self_attn.k_norm.weight"]),
                (b + "attn_output.weight", sd[p + "self_attn.o_proj.weight"]),
                (b + "ffn_norm.weight", sd[p + "post_attention_layernorm.weight"]),
                (b + "ffn_gate_inp.weight", sd[p + "mlp.gate.weight"])]
        for gk, hn in (("gate", "gate_proj"), ("up", "up_proj"), ("down", "down_proj")):
            out.append((b + f"ffn_{gk}_exps.weight",
                        np.stack([sd[p + f"mlp.experts.{e}.{hn}.weight"] for e in range(hp.n_expert)])))
    out += [("output_norm.weight", sd["model.norm.weight"]), ("output.weight", sd["lm_head.weight"])]
    return out


def export(path: str, model, hp, vocab: dict, args) -> None:
    from gguf.quants import quantize
    w = gguf.GGUFWriter(path, "olmoe")
    gen_model.add_metadata(w, hp, "q8_0", LlamaFileType.MOSTLY_Q8_0, args, vocab=vocab,
                           name=f"moeserve trained OLMoE {hp.n_layer}x{hp.n_expert} seed {args.seed}")
    for name, a in gguf_tensors(model, hp):
        a = np.ascontiguousarray(a, dtype=np.float32)
        if a.ndim == 1 or name.endswith("ffn_gate_inp.weight"):
            w.add_tensor(name, a)
        else:
            w.add_tensor(name, quantize(a, QT.Q8_0), raw_dtype=QT.Q8_0)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def goldens(path: str, val_ids: np.ndarray, out_json: str, regenerate: str, seed: int) -> list[int]:
    """transformers on the exported file's dequantised weights, read back by gguf-py (golden.py's
    loader).  Prompts are windows of the held-out text; as in golden.py, ones whose routing has a
    near-tie (a C implementation that rounds differently would pick other experts) are skipped,
    and so are greedy runs with a near-tie between the two best tokens (the test teacher-forces
    the greedy run, so a routing near-tie there costs at most one step)."""
    import torch
    import transformers
    import golden
    meta, W = golden.read_gguf(path)
    hp = golden.HP(meta)
    model, moe = golden.build_hf(hp, W)
    router_logits = []
    hooks = [getattr(layer, moe).gate.register_forward_hook(lambda m, i, o: router_logits.append(o.detach().clone()))
             for layer in model.model.layers]
    k = hp.n_expert_used

    def router_gap():
        srt = [torch.sort(rl.double(), dim=-1, descending=True).values for rl in router_logits]
        return min(float((s[:, k - 1] - s[:, k]).min()) for s in srt)

    rng = np.random.default_rng(seed)

    def window(n):
        s = int(rng.integers(0, len(val_ids) - n))
        return [int(t) for t in val_ids[s:s + n]]

    prompts, tries = [], 0
    for n in PROMPT_LENGTHS:
        while True:
            tries += 1
            assert tries < 20000, "no held-out window without a routing near-tie"
            toks = window(n)
            router_logits.clear()
            with torch.no_grad():
                lg = model(input_ids=torch.tensor([toks])).logits[0, -1].float().numpy()
            if router_gap() >= golden.ROUTER_GAP:
                break
        prompts.append((toks, lg))
    while True:
        tries += 1
        assert tries < 40000, "no greedy prompt without near-ties"
        gprompt = window(GREEDY_PROMPT)
        router_logits.clear()
        with torch.no_grad():
            gen = model.generate(torch.tensor([gprompt]), max_new_tokens=N_GREEDY,
                                 min_new_tokens=N_GREEDY, do_sample=False, pad_token_id=0,
                                 output_scores=True, return_dict_in_generate=True)
        top2 = min(float(s[0].topk(2).values[0] - s[0].topk(2).values[1]) for s in gen.scores)
        # dequantised_weights_match_transformers wants the exact tokens from F32 weights, where
        # the two implementations differ by ~1e-6: a small router gap is enough there
        if top2 >= golden.GREEDY_GAP and router_gap() >= 1e-3:
            break
    for h in hooks:
        h.remove()
    new = [int(t) for t in gen.sequences[0, len(gprompt):]]
    ref = f"transformers {transformers.__version__} / torch {torch.__version__.split('+')[0]}"
    parts = ['{"arch": "olmoe"', '"type": "q8_0"', '"model_path": "tests/data/trained-moe.gguf"',
             '"model_sha256": %s' % json.dumps(gen_model.sha256_file(path)), '"n_vocab": %d' % hp.n_vocab,
             '"prompts": [\n' + ",\n".join('  {"tokens": %s,\n   "logits": %s}' % (json.dumps(t), golden.fmt_floats(lg))
                                          for t, lg in prompts) + "\n]",
             '"greedy": {"prompt": %s, "n_new": %d, "tokens": %s}' % (json.dumps(gprompt), N_GREEDY,
                                                                      json.dumps(new)),
             '"reference": %s' % json.dumps(ref), '"regenerate": %s}' % json.dumps(regenerate)]
    text = ",\n".join(parts) + "\n"
    json.loads(text)
    with open(out_json, "w") as f:
        f.write(text)
    return gprompt + new


def sample_text(model, tok, prompt: str, seed: int, n: int = 160) -> str:
    import torch
    torch.manual_seed(seed)
    ids = tok.encode(prompt, add_special_tokens=False).ids
    model.eval()
    model.config.output_router_logits = False  # the balancing loss has no place in generate()
    with torch.no_grad():
        out = model.generate(torch.tensor([ids]), max_new_tokens=n, do_sample=True, temperature=0.7, top_k=40,
                             pad_token_id=0)
    return tok.decode([int(t) for t in out[0]])


def write_curve(prefix: str, curve, hp, n_params: int) -> None:
    with open(prefix + "-loss.csv", "w") as f:
        f.write("step,tokens,train_loss,val_loss,seconds\n")
        for s, t, tl, vl, el in curve:
            f.write(f"{s},{t},{tl:.4f},{'' if math.isnan(vl) else f'{vl:.4f}'},{el:.0f}\n")
    # A plain SVG (no plotting library in the venvs): train loss as a line, validation as dots.
    W, H, M = 640, 360, 48
    xs = [c[1] for c in curve]
    ys = [c[2] for c in curve] + [c[3] for c in curve if not math.isnan(c[3])]
    y0, y1 = math.floor(min(ys)), math.ceil(max(ys))

    def px(t):
        return M + (W - 2 * M) * t / max(xs)

    def py(v):
        return H - M - (H - 2 * M) * (v - y0) / max(1e-9, y1 - y0)
    line = " ".join(f"{px(c[1]):.1f},{py(c[2]):.1f}" for c in curve)
    dots = "".join(f'<circle cx="{px(c[1]):.1f}" cy="{py(c[3]):.1f}" r="3" fill="#d62728"/>'
                   for c in curve if not math.isnan(c[3]))
    ticks = "".join(f'<text x="{M - 6}" y="{py(v) + 4:.1f}" text-anchor="end">{v}</text>'
                    f'<line x1="{M}" x2="{W - M}" y1="{py(v):.1f}" y2="{py(v):.1f}" stroke="#ddd"/>'
                    for v in range(y0, y1 + 1))
    svg = (f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" '
           f'font-size="12"><rect width="{W}" height="{H}" fill="white"/>{ticks}'
           f'<polyline points="{line}" fill="none" stroke="#1f77b4" stroke-width="1.5"/>{dots}'
           f'<text x="{W / 2}" y="{H - 12}" text-anchor="middle">training tokens (max {max(xs) / 1e6:.0f} M)</text>'
           f'<text x="{M}" y="20">loss (nats/token): train (line), validation (dots) — {hp.n_layer} layers, '
           f'{hp.n_expert} experts top-{hp.n_expert_used}, {n_params / 1e6:.1f} M parameters</text></svg>\n')
    with open(prefix + "-loss.svg", "w") as f:
        f.write(svg)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", help="the GGUF file to write")
    ap.add_argument("--heldout-text", help="only write the held-out (validation) text here and stop: "
                                           "what tools/bench_predictor.py measures on (needs no torch)")
    ap.add_argument("--golden", help="write transformers' goldens for the exported file here")
    ap.add_argument("--docs", help="path prefix for the loss curve (.csv, .svg) and the sample")
    ap.add_argument("--corpus", default=CORPUS_ROOT)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--layers", type=int, default=6)
    ap.add_argument("--embd", type=int, default=256)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--ff", type=int, default=64, help="per-expert FFN size")
    ap.add_argument("--experts", type=int, default=32)
    ap.add_argument("--used", type=int, default=4)
    ap.add_argument("--vocab", type=int, default=8192)
    ap.add_argument("--ctx", type=int, default=256, help="training sequence length (and the file's context)")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--aux", type=float, default=0.01, help="load-balancing loss coefficient")
    ap.add_argument("--log-every", type=int, default=25)
    args = ap.parse_args()

    hp = hparams(args)
    t0 = time.time()
    train_texts, val_texts = corpus(args.corpus)
    if args.heldout_text:
        with open(args.heldout_text, "w") as f:
            f.write("\n".join(val_texts))
        return 0
    if not args.out:
        ap.error("--out is required")
    tok = train_tokenizer(train_texts, args.vocab)
    train_ids, val_ids = encode(tok, train_texts), encode(tok, val_texts)
    print(f"corpus: {len(train_texts)} + {len(val_texts)} files, {len(train_ids) / 1e6:.2f} M + "
          f"{len(val_ids) / 1e6:.2f} M tokens ({time.time() - t0:.0f} s)", flush=True)
    model, curve = train(args, hp, train_ids, val_ids)
    export(args.out, model, hp, vocab_for_gguf(tok), args)
    print(f"wrote {args.out}: {os.path.getsize(args.out) / 1e6:.1f} MB", flush=True)
    cmd = ".venv-golden/bin/python tools/train_moe.py " + " ".join(sys.argv[1:])
    if args.golden:
        g = goldens(args.out, val_ids, args.golden, cmd, args.seed)
        print(f"wrote {args.golden}; greedy: {tok.decode(g)!r}", flush=True)
    if args.docs:
        n_params = sum(p.numel() for p in model.parameters())
        write_curve(args.docs, curve, hp, n_params)
        samples = "".join(f"--- prompt {p!r}, temperature 0.7, top-k 40, seed {args.seed}:\n"
                          f"{sample_text(model, tok, p, args.seed)}\n\n" for p in SAMPLE_PROMPTS)
        with open(args.docs + "-sample.txt", "w") as f:
            f.write(samples)
        print(samples)
    return 0


if __name__ == "__main__":
    sys.exit(main())
