#!/usr/bin/env python3
"""Seeded random MoE test models in GGUF (llama/Mixtral, qwen2moe, qwen3moe, olmoe, gpt-oss, glm4moe,
deepseek2).

Needs only numpy and gguf-py (tools/requirements.txt); this runs in CI.

    gen_model.py --arch qwen3moe --preset tiny --type f16 --seed 1 -o m.gguf
    gen_model.py --arch llama --preset tiny --type q4_k_m --seed 1 -o m.gguf

Types: f32/f16/bf16 (every 2+-dim tensor), q8_0/q4_0/q4_1/q5_0/q5_1/q4_k/q5_k/q6_k (every
2+-dim tensor but the F32 router, as llama-quantize --pure), q4_k_m/q5_k_m (llama.cpp's
llama-quant.cpp mixes), mxfp4 (llama-quantize's MXFP4_MOE: the 3-D expert tensors MXFP4, the
other 2-D tensors Q8_0, the router F32).  K-quants are quantised by tools/quantize.py (port of ggml's reference
quantisers), the others by gguf-py.

Reproducibility rule: the same arguments always give the same bytes.  Every tensor's
values come from numpy's PCG64 seeded with sha256(f"{seed}:{tensor name}"), drawn in
row-major order of the numpy shape (= reversed ggml ne).  Stacked expert tensors are drawn
under the stacked name (blk.N.ffn_gate_exps.weight); the legacy split layout
(--expert-layout split) writes expert e of that same array as blk.N.ffn_gate.e.weight, so
both layouts hold identical expert values.  Tensors are generated and written in chunks, so
memory stays bounded (mixtral-slice F16, ~12 GB on disk, needs well under 1 GB RSS).

See docs/test-models.md.
"""
from __future__ import annotations

import argparse
import hashlib
import math
import os
import re
import sys
from dataclasses import dataclass, field

import numpy as np

import gguf
from gguf import GGMLQuantizationType as QT
from gguf import GGUFWriter, LlamaFileType, TokenType
from gguf.constants import GGML_QUANT_SIZES

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import quantize as kquant  # noqa: E402  (tools/quantize.py)

ARCHS = ("llama", "qwen2moe", "qwen3moe", "olmoe", "gpt-oss", "glm4moe", "deepseek2")
PRESETS = ("tiny", "small", "mixtral-slice", "olmoe-slice", "qwen3moe-slice", "gpt-oss-slice",
           "glm4moe-slice", "tiny-lite", "deepseek2-slice")
# --type NAME: (type of the 2+-dim tensors, general.file_type).
# f32/f16/bf16: every tensor with 2+ dims in that type (router included).
TYPES = {"f32": (QT.F32, LlamaFileType.ALL_F32),
         "f16": (QT.F16, LlamaFileType.MOSTLY_F16),
         "bf16": (QT.BF16, LlamaFileType.MOSTLY_BF16),
         # single quantised type = llama-quantize --pure: every tensor with 2+ dims in that type
         # except the router ffn_gate_inp (F32); 1-D tensors F32
         "q8_0": (QT.Q8_0, LlamaFileType.MOSTLY_Q8_0),
         "q4_0": (QT.Q4_0, LlamaFileType.MOSTLY_Q4_0),
         "q4_1": (QT.Q4_1, LlamaFileType.MOSTLY_Q4_1),
         "q5_0": (QT.Q5_0, LlamaFileType.MOSTLY_Q5_0),
         "q5_1": (QT.Q5_1, LlamaFileType.MOSTLY_Q5_1),
         "q4_k": (QT.Q4_K, LlamaFileType.MOSTLY_Q4_K_S),
         "q5_k": (QT.Q5_K, LlamaFileType.MOSTLY_Q5_K_S),
         "q6_k": (QT.Q6_K, LlamaFileType.MOSTLY_Q6_K),
         # llama.cpp mixes (llama-quant.cpp llama_tensor_get_type rules, see mix_type())
         "q4_k_m": (QT.Q4_K, LlamaFileType.MOSTLY_Q4_K_M),
         "q5_k_m": (QT.Q5_K, LlamaFileType.MOSTLY_Q5_K_M),
         # llama-quant.cpp MOSTLY_MXFP4_MOE: 3-D (expert) tensors MXFP4, other 2-D tensors Q8_0
         "mxfp4": (QT.MXFP4, LlamaFileType.MOSTLY_MXFP4_MOE)}
PLAIN_TYPES = ("f32", "f16", "bf16")
MIX_TYPES = ("q4_k_m", "q5_k_m")
GGML_QUANT_VERSION = 2   # general.quantization_version written by llama-quantize (quantised files only)
SLICE_ARCH = {"mixtral-slice": "llama", "olmoe-slice": "olmoe", "qwen3moe-slice": "qwen3moe",
              "gpt-oss-slice": "gpt-oss", "glm4moe-slice": "glm4moe", "deepseek2-slice": "deepseek2"}
# deepseek2 comes only in its own presets (MLA has no head_dim / head_count_kv to take from the others)
DEEPSEEK2_PRESETS = ("tiny", "tiny-lite", "small", "deepseek2-slice")

# elements per chunk when generating/writing a tensor (bounds memory)
CHUNK_ELEMS = 1 << 24
# K-quant values in a model from which --jobs worker processes are used
PARALLEL_MIN_ELEMS = 1 << 26


# --------------------------------------------------------------------------------------
# Hyper-parameters
# --------------------------------------------------------------------------------------
@dataclass
class HParams:
    arch: str
    preset: str
    n_embd: int
    n_ff: int            # per-expert FFN size
    n_expert: int
    n_expert_used: int
    n_head: int
    n_head_kv: int
    head_dim: int
    n_layer: int
    n_vocab: int
    n_ctx: int
    rope_base: float
    eps: float
    n_ff_shexp: int = 0  # qwen2moe shared expert FFN size
    n_ff_dense: int = 0  # qwen2moe/qwen3moe feed_forward_length (unused dense size)
    n_swa: int = 0       # gpt-oss: attention.sliding_window (every even layer slides)
    # glm4moe: leading dense layers (of n_ff_dense), MTP layers written after the n_layer run
    # (block_count = n_layer + n_nextn), Q/K norms or not (GLM-4.5 has them, 4.5-Air not),
    # routed_scaling_factor
    n_dense: int = 0
    n_nextn: int = 0
    qk_norm: bool = False
    routed_scale: float = 1.0
    # deepseek2 (MLA): q_lora_rank 0 = no query compression (attn_q, DeepSeek-V2-Lite); head_dim
    # is qk_nope + qk_rope and n_head_kv 1 (the converter's MQA view of the latent cache)
    q_lora_rank: int = 0
    kv_lora_rank: int = 0
    qk_nope: int = 0
    qk_rope: int = 0
    v_head_dim: int = 0
    n_shared: int = 0       # deepseek2: shared experts, each n_ff wide (so n_ff_shexp = n_shared * n_ff)
    n_group: int = 1        # expert groups and how many of them are kept (DeepSeek-V3's router)
    n_group_used: int = 1
    gating: str = "softmax"  # deepseek2 expert_gating_func: "softmax" (V2) or "sigmoid" (V3, exp_probs_b)
    norm_topk: bool = False
    yarn: dict | None = None  # deepseek2: rope_scaling of config.json (factor, orig_ctx, beta_fast/slow, mscale_all_dim)
    extra: dict = field(default_factory=dict)


ARCH_DEFAULTS = {  # rope.freq_base, rms eps (realistic values of the real models)
    "llama": (1e6, 1e-5),
    "qwen2moe": (1e6, 1e-6),
    "qwen3moe": (1e6, 1e-6),
    "olmoe": (1e4, 1e-5),
    "gpt-oss": (150000.0, 1e-5),
    "glm4moe": (1e6, 1e-5),
    "deepseek2": (10000.0, 1e-6),
}
# gpt-oss-20b's config.json rope_scaling (YaRN), written as convert_hf_to_gguf.py writes it
GPT_OSS_YARN = dict(factor=32.0, original_context_length=4096, beta_fast=32.0, beta_slow=1.0)


def deepseek2_shapes(preset: str) -> dict:
    """DeepSeek-V3's features at toy size (tiny), DeepSeek-V2-Lite's (tiny-lite), V3's real
    config.json shapes with 1 dense + 2 MoE layers (deepseek2-slice).  Every quantised tensor's
    row length is a multiple of 32 (q8_0 everywhere); the MLA ranks and head sizes all differ, so
    that a rank or head size used for another shows."""
    # DeepSeek-V3's rope_scaling: YaRN, mscale = mscale_all_dim = 1; the tiny models keep
    # factor > 1 with a short original context (the ramp then covers the first rope pairs)
    v3_yarn = dict(factor=4.0, orig_ctx=64, beta_fast=32.0, beta_slow=1.0, mscale_all_dim=1.0)
    mla = dict(n_head_kv=1, q_lora_rank=192, kv_lora_rank=128, qk_nope=64, qk_rope=32, v_head_dim=48)
    if preset == "tiny":
        p = dict(n_embd=256, n_ff=256, n_expert=16, n_expert_used=4, n_head=16, n_layer=3,
                 n_vocab=512, n_ctx=256, n_dense=1, n_ff_dense=1024, n_shared=1, n_group=4,
                 n_group_used=2, gating="sigmoid", norm_topk=True, routed_scale=2.5, yarn=v3_yarn, **mla)
    elif preset == "tiny-lite":   # V2-Lite: no q_lora, softmax top-k without groups or norm, 2 shared
        p = dict(n_embd=256, n_ff=256, n_expert=16, n_expert_used=6, n_head=16, n_layer=3,
                 n_vocab=512, n_ctx=256, n_dense=1, n_ff_dense=1024, n_shared=2, n_group=1,
                 n_group_used=1, gating="softmax", norm_topk=False, routed_scale=1.0,
                 yarn=dict(v3_yarn, mscale_all_dim=0.707), **dict(mla, q_lora_rank=0))
    elif preset == "small":
        p = dict(n_embd=512, n_ff=512, n_expert=16, n_expert_used=4, n_head=16, n_layer=4,
                 n_vocab=2048, n_ctx=1024, n_dense=1, n_ff_dense=2048, n_shared=1, n_group=4,
                 n_group_used=2, gating="sigmoid", norm_topk=True, routed_scale=2.5,
                 yarn=dict(v3_yarn, orig_ctx=256), **dict(mla, q_lora_rank=384, kv_lora_rank=256))
    elif preset == "deepseek2-slice":   # DeepSeek-V3's config.json, 3 of its 61 layers
        p = dict(n_embd=7168, n_ff=2048, n_expert=256, n_expert_used=8, n_head=128, n_head_kv=1,
                 n_layer=3, n_vocab=129280, n_ctx=163840, n_dense=1, n_ff_dense=18432, n_shared=1,
                 n_group=8, n_group_used=4, gating="sigmoid", norm_topk=True, routed_scale=2.5,
                 q_lora_rank=1536, kv_lora_rank=512, qk_nope=128, qk_rope=64, v_head_dim=128,
                 yarn=dict(factor=40.0, orig_ctx=4096, beta_fast=32.0, beta_slow=1.0, mscale_all_dim=1.0))
    else:
        raise SystemExit(f"deepseek2 takes the presets {', '.join(DEEPSEEK2_PRESETS)}, not {preset}")
    p["head_dim"] = p["qk_nope"] + p["qk_rope"]
    return p


def preset_shapes(preset: str, arch: str) -> dict:
    if arch == "deepseek2":
        return deepseek2_shapes(preset)
    if preset in ("tiny-lite", "deepseek2-slice"):
        raise SystemExit(f"preset {preset} is deepseek2's")
    if preset == "tiny":
        p = dict(n_embd=256, n_ff=256, n_expert=8, n_expert_used=2, n_head=4, n_head_kv=2,
                 head_dim=64, n_layer=2, n_vocab=512, n_ctx=256)
        if arch == "qwen3moe":  # H*hd = 512 != n_embd: exercises attention.key_length
            p.update(n_head=8, n_head_kv=2, n_expert_used=4)
        if arch == "olmoe":     # OLMoE has no GQA
            p.update(n_head_kv=4)
        if arch == "qwen2moe":
            p.update(n_ff_shexp=512)
        if arch == "gpt-oss":   # top-4 as the real ones; H*hd = 512 != n_embd as 4096 != 2880;
            # a window of 16 so that the golden prompts (up to 80 tokens) slide past it
            p.update(n_head=8, n_head_kv=2, n_expert_used=4, n_swa=16)
        if arch == "glm4moe":   # GLM-4.5's features: 1 dense layer, 1 MTP layer, Q/K norms,
            # H*hd != n_embd, top-4, routed scaling 2.5 (GLM-4.5's; Air has 1.0)
            p.update(n_head=8, n_head_kv=2, n_expert_used=4, n_layer=3, n_dense=1,
                     n_nextn=1, qk_norm=True, routed_scale=2.5)
    elif preset == "small":
        p = dict(n_embd=512, n_ff=512, n_expert=16, n_expert_used=4, n_head=8, n_head_kv=2,
                 head_dim=64, n_layer=4, n_vocab=2048, n_ctx=1024)
        if arch == "qwen3moe":
            p.update(n_head=8, n_head_kv=2, head_dim=128)
        if arch == "olmoe":
            p.update(n_head_kv=8)
        if arch == "qwen2moe":
            p.update(n_ff_shexp=1024)
        if arch == "gpt-oss":
            p.update(n_swa=128)
        if arch == "glm4moe":
            p.update(n_dense=1, n_ff=256)
    elif preset == "mixtral-slice":
        p = dict(n_embd=4096, n_ff=14336, n_expert=8, n_expert_used=2, n_head=32, n_head_kv=8,
                 head_dim=128, n_layer=4, n_vocab=32000, n_ctx=32768)
    elif preset == "olmoe-slice":
        p = dict(n_embd=2048, n_ff=1024, n_expert=64, n_expert_used=8, n_head=16, n_head_kv=16,
                 head_dim=128, n_layer=4, n_vocab=50304, n_ctx=4096)
    elif preset == "qwen3moe-slice":
        p = dict(n_embd=2048, n_ff=768, n_expert=128, n_expert_used=8, n_head=32, n_head_kv=4,
                 head_dim=128, n_layer=4, n_vocab=151936, n_ctx=40960)
    elif preset == "gpt-oss-slice":   # gpt-oss-20b's config.json, 4 of its 24 layers
        p = dict(n_embd=2880, n_ff=2880, n_expert=32, n_expert_used=4, n_head=64, n_head_kv=8,
                 head_dim=64, n_layer=4, n_vocab=201088, n_ctx=131072, n_swa=128)
    elif preset == "glm4moe-slice":   # GLM-4.5-Air's config.json, 4 of its 46 layers (the first dense)
        p = dict(n_embd=4096, n_ff=1408, n_expert=128, n_expert_used=8, n_head=96, n_head_kv=8,
                 head_dim=128, n_layer=4, n_vocab=151552, n_ctx=131072, n_dense=1)
    else:
        raise SystemExit(f"unknown preset {preset}")
    return p


def make_hparams(args) -> HParams:
    arch = args.arch or SLICE_ARCH.get(args.preset)
    if arch is None:
        raise SystemExit(f"--arch is required for preset {args.preset}")
    p = preset_shapes(args.preset, arch)
    for k in ("n_embd", "n_ff", "n_expert", "n_expert_used", "n_head", "n_head_kv", "head_dim",
              "n_layer", "n_vocab", "n_ctx", "n_ff_shexp", "n_swa"):
        v = getattr(args, k, None)
        if v is not None:
            p[k] = v
    if arch == "qwen2moe" and not p.get("n_ff_shexp"):
        p["n_ff_shexp"] = 4 * p["n_ff"]
    if arch == "gpt-oss" and not p.get("n_swa"):
        p["n_swa"] = 128
    if arch == "deepseek2":   # MLA: one latent KV "head", heads of qk_nope + qk_rope
        p.update(n_head_kv=1, head_dim=p["qk_nope"] + p["qk_rope"])
        p["n_ff_shexp"] = p["n_shared"] * p["n_ff"]
    rope, eps = ARCH_DEFAULTS[arch]
    hp = HParams(arch=arch, preset=args.preset, rope_base=rope, eps=eps, **p)
    if arch == "qwen2moe":
        hp.n_ff_dense = hp.n_ff_shexp          # as in Qwen1.5-MoE (intermediate_size == shared size)
    elif arch == "qwen3moe":
        hp.n_ff_dense = 8 * hp.n_ff            # as in Qwen3-30B-A3B (6144 = 8 * 768)
    elif arch == "gpt-oss":
        hp.n_ff_dense = hp.n_ff                # intermediate_size is the expert width
    elif arch == "glm4moe":
        hp.n_ff_shexp = hp.n_ff                # n_shared_experts = 1
        # the dense layers' intermediate_size: GLM-4.5-Air's 10944, else 4 * n_embd
        hp.n_ff_dense = 10944 if args.preset == "glm4moe-slice" else 4 * hp.n_embd
    if arch == "deepseek2":
        per_group = hp.n_expert // hp.n_group
        if hp.n_expert % hp.n_group or (hp.n_group > 1 and per_group < 2):
            raise SystemExit("deepseek2: n_expert must split into groups of 2 or more experts")
        if hp.n_group_used * per_group < hp.n_expert_used:
            raise SystemExit("deepseek2: the kept expert groups hold fewer than n_expert_used experts")
    # sanity
    if hp.n_head % hp.n_head_kv:
        raise SystemExit("n_head must be a multiple of n_head_kv")
    if not (0 < hp.n_expert_used <= hp.n_expert):
        raise SystemExit("need 0 < n_expert_used <= n_expert")
    if hp.head_dim % 2:
        raise SystemExit("head_dim must be even")
    if arch in ("llama", "qwen2moe", "olmoe") and hp.head_dim * hp.n_head != hp.n_embd:
        print(f"warning: {arch}: head_dim*n_head = {hp.head_dim * hp.n_head} != n_embd = {hp.n_embd} "
              f"(HF {arch} cannot represent this)", file=sys.stderr)
    return hp


# --------------------------------------------------------------------------------------
# Tensors
# --------------------------------------------------------------------------------------
@dataclass
class TSpec:
    name: str           # stacked / canonical name (also the RNG key)
    shape: tuple        # numpy shape (= reversed ggml ne)
    scale: float        # values = offset + scale * N(0,1)
    offset: float = 0.0
    quant: bool = True  # False: stays F32 (1-D tensors)


def gpt_oss_specs(hp: HParams) -> list[TSpec]:
    """gpt-oss as convert_hf_to_gguf.py's GptOssModel writes it: biases on Q/K/V/O, the router
    and every expert part, one sink logit per head, the pre-MoE norm named
    post_attention_norm; gate and up de-interleaved from HF's fused gate_up_proj."""
    F, D, X = hp.n_ff, hp.n_embd, hp.n_expert
    q_dim, kv_dim = hp.n_head * hp.head_dim, hp.n_head_kv * hp.head_dim
    s_in = 1.0 / math.sqrt(D)
    norm = dict(scale=0.1, offset=1.0, quant=False)
    bias = dict(quant=False)
    out: list[TSpec] = [TSpec("token_embd.weight", (hp.n_vocab, D), 1.0)]
    for i in range(hp.n_layer):
        b = f"blk.{i}."
        out.append(TSpec(b + "attn_norm.weight", (D,), **norm))
        for n, rows, sc in (("q", q_dim, 1.2), ("k", kv_dim, 1.2), ("v", kv_dim, 1.0)):
            out.append(TSpec(b + f"attn_{n}.weight", (rows, D), sc * s_in))
            out.append(TSpec(b + f"attn_{n}.bias", (rows,), 0.2, **bias))
        out.append(TSpec(b + "attn_output.weight", (D, q_dim), 1.0 / math.sqrt(q_dim)))
        out.append(TSpec(b + "attn_output.bias", (D,), 0.2, **bias))
        # sinks of the order of the attention logits: a real share of each softmax
        out.append(TSpec(b + "attn_sinks.weight", (hp.n_head,), 1.0, **bias))
        out.append(TSpec(b + "post_attention_norm.weight", (D,), **norm))
        out.append(TSpec(b + "ffn_gate_inp.weight", (X, D), 2.0 * s_in))
        out.append(TSpec(b + "ffn_gate_inp.bias", (X,), 0.5, **bias))
        # gate and up of std ~2.5: the clamp at 7 is reached now and then
        out.append(TSpec(b + "ffn_gate_exps.weight", (X, F, D), 2.5 * s_in))
        out.append(TSpec(b + "ffn_gate_exps.bias", (X, F), 0.5, **bias))
        out.append(TSpec(b + "ffn_down_exps.weight", (X, D, F), 1.0 / math.sqrt(F)))
        out.append(TSpec(b + "ffn_down_exps.bias", (X, D), 0.2, **bias))
        out.append(TSpec(b + "ffn_up_exps.weight", (X, F, D), 2.5 * s_in))
        out.append(TSpec(b + "ffn_up_exps.bias", (X, F), 0.5, **bias))
    out.append(TSpec("output_norm.weight", (D,), **norm))
    out.append(TSpec("output.weight", (hp.n_vocab, D), 4.0 * s_in))
    return out


def dense_ffn_specs(b: str, D: int, Fd: int, s_in: float) -> list[TSpec]:
    """A leading dense layer's FFN (glm4moe, deepseek2), in the converter's tensor order."""
    return [TSpec(b + "ffn_gate.weight", (Fd, D), s_in),
            TSpec(b + "ffn_down.weight", (D, Fd), 1.0 / math.sqrt(Fd)),
            TSpec(b + "ffn_up.weight", (Fd, D), s_in)]


def moe_ffn_specs(b: str, X: int, F: int, Fs: int, D: int, s_in: float) -> list[TSpec]:
    """The routed experts (stacked) and the ungated shared expert of a DeepSeek-style MoE layer
    (glm4moe, deepseek2), in the converter's tensor order."""
    return [TSpec(b + "ffn_gate_exps.weight", (X, F, D), s_in),
            TSpec(b + "ffn_down_exps.weight", (X, D, F), 1.0 / math.sqrt(F)),
            TSpec(b + "ffn_up_exps.weight", (X, F, D), s_in),
            TSpec(b + "ffn_gate_shexp.weight", (Fs, D), s_in),
            TSpec(b + "ffn_down_shexp.weight", (D, Fs), 1.0 / math.sqrt(Fs)),
            TSpec(b + "ffn_up_shexp.weight", (Fs, D), s_in)]


def glm4moe_specs(hp: HParams) -> list[TSpec]:
    """glm4moe as convert_hf_to_gguf.py's Glm4MoeModel writes it: biases on Q, K and V, the
    pre-FFN norm named post_attention_norm, dense FFNs in the first n_dense layers, the expert
    selection bias exp_probs_b and one ungated shared expert in the others, and the MTP layers'
    blocks after the n_layer run (a whole layer plus its nextn.* tensors)."""
    F, D, X, Fd = hp.n_ff, hp.n_embd, hp.n_expert, hp.n_ff_dense
    q_dim, kv_dim = hp.n_head * hp.head_dim, hp.n_head_kv * hp.head_dim
    s_in = 1.0 / math.sqrt(D)
    norm = dict(scale=0.1, offset=1.0, quant=False)
    out: list[TSpec] = [TSpec("token_embd.weight", (hp.n_vocab, D), 1.0)]
    for i in range(hp.n_layer + hp.n_nextn):
        b = f"blk.{i}."
        out.append(TSpec(b + "attn_norm.weight", (D,), **norm))
        for n, rows, sc in (("q", q_dim, 1.2), ("k", kv_dim, 1.2), ("v", kv_dim, 1.0)):
            out.append(TSpec(b + f"attn_{n}.weight", (rows, D), sc * s_in))
            out.append(TSpec(b + f"attn_{n}.bias", (rows,), 0.2, quant=False))
        if hp.qk_norm:
            out.append(TSpec(b + "attn_q_norm.weight", (hp.head_dim,), **norm))
            out.append(TSpec(b + "attn_k_norm.weight", (hp.head_dim,), **norm))
        out.append(TSpec(b + "attn_output.weight", (D, q_dim), 1.0 / math.sqrt(q_dim)))
        out.append(TSpec(b + "post_attention_norm.weight", (D,), **norm))
        if i < hp.n_dense:
            out += dense_ffn_specs(b, D, Fd, s_in)
            continue
        # router logits of std ~2; selection biases wider than the sigmoid scores' spread, which
        # spaces the choice scores apart (the goldens' near-tie filter needs gaps that 8-bit
        # activations cannot close) while the scores still change many choices
        out.append(TSpec(b + "ffn_gate_inp.weight", (X, D), 2.0 * s_in))
        out.append(TSpec(b + "exp_probs_b.bias", (X,), 0.5, quant=False))
        out += moe_ffn_specs(b, X, F, hp.n_ff_shexp, D, s_in)
        if i >= hp.n_layer:   # the MTP layer's own tensors: present in real files, never run
            out.append(TSpec(b + "nextn.eh_proj.weight", (D, 2 * D), s_in))
            for n in ("enorm", "hnorm", "shared_head_norm"):
                out.append(TSpec(b + f"nextn.{n}.weight", (D,), **norm))
    out.append(TSpec("output_norm.weight", (D,), **norm))
    out.append(TSpec("output.weight", (hp.n_vocab, D), 4.0 * s_in))
    return out


def deepseek2_specs(hp: HParams) -> list[TSpec]:
    """deepseek2 as llama.cpp's converter (conversion/deepseek.py DeepseekV2Model) writes it: MLA
    with the query compressed through attn_q_a / attn_q_a_norm / attn_q_b (attn_q when there is
    no q_lora_rank), the latent KV and the shared rope key from attn_kv_a_mqa, kv_b_proj split per
    head into attn_k_b (transposed: rows of qk_nope) and attn_v_b (rows of kv_lora_rank); dense
    FFNs in the first n_dense layers; routed experts, one or more shared experts (n_shared * n_ff
    wide) and, with sigmoid gating, the selection bias exp_probs_b in the others.  k_b and v_b are
    drawn under their own names, each as the converter would have cut it out of kv_b_proj."""
    F, D, X, Fd, H = hp.n_ff, hp.n_embd, hp.n_expert, hp.n_ff_dense, hp.n_head
    C, R = hp.kv_lora_rank, hp.qk_rope
    s_in = 1.0 / math.sqrt(D)
    norm = dict(scale=0.1, offset=1.0, quant=False)
    out: list[TSpec] = [TSpec("token_embd.weight", (hp.n_vocab, D), 1.0)]
    for i in range(hp.n_layer):
        b = f"blk.{i}."
        out.append(TSpec(b + "attn_norm.weight", (D,), **norm))
        if hp.q_lora_rank:
            Q = hp.q_lora_rank
            out.append(TSpec(b + "attn_q_a.weight", (Q, D), s_in))
            out.append(TSpec(b + "attn_q_a_norm.weight", (Q,), **norm))
            out.append(TSpec(b + "attn_q_b.weight", (H * hp.head_dim, Q), 1.2 / math.sqrt(Q)))
        else:
            out.append(TSpec(b + "attn_q.weight", (H * hp.head_dim, D), 1.2 * s_in))
        # rows: the kv_lora_rank latent, then the qk_rope key shared by every head
        out.append(TSpec(b + "attn_kv_a_mqa.weight", (C + R, D), 1.2 * s_in))
        out.append(TSpec(b + "attn_kv_a_norm.weight", (C,), **norm))
        out.append(TSpec(b + "attn_k_b.weight", (H, C, hp.qk_nope), 1.2 / math.sqrt(C)))
        out.append(TSpec(b + "attn_v_b.weight", (H, hp.v_head_dim, C), 1.0 / math.sqrt(C)))
        out.append(TSpec(b + "attn_output.weight", (D, H * hp.v_head_dim), 1.0 / math.sqrt(H * hp.v_head_dim)))
        out.append(TSpec(b + "ffn_norm.weight", (D,), **norm))
        if i < hp.n_dense:
            out += dense_ffn_specs(b, D, Fd, s_in)
            continue
        out.append(TSpec(b + "ffn_gate_inp.weight", (X, D), 2.0 * s_in))
        if hp.gating == "sigmoid":
            # the selection bias: as glm4moe's, 0.5 N, plus 2 so that every choice score
            # sigmoid + bias is positive; a common offset changes no choice (llama.cpp masks the
            # groups left out with -inf, transformers with 0: they agree only on positive scores)
            out.append(TSpec(b + "exp_probs_b.bias", (X,), 0.5, offset=2.0, quant=False))
        out += moe_ffn_specs(b, X, F, hp.n_ff_shexp, D, s_in)
    out.append(TSpec("output_norm.weight", (D,), **norm))
    out.append(TSpec("output.weight", (hp.n_vocab, D), 4.0 * s_in))
    return out


def tensor_specs(hp: HParams) -> list[TSpec]:
    if hp.arch == "deepseek2":
        return deepseek2_specs(hp)
    if hp.arch == "gpt-oss":
        return gpt_oss_specs(hp)
    if hp.arch == "glm4moe":
        return glm4moe_specs(hp)
    E, F, D = hp.n_embd, hp.n_ff, hp.n_embd
    q_dim, kv_dim = hp.n_head * hp.head_dim, hp.n_head_kv * hp.head_dim
    s_in = 1.0 / math.sqrt(D)
    norm = dict(scale=0.1, offset=1.0, quant=False)
    out: list[TSpec] = [TSpec("token_embd.weight", (hp.n_vocab, D), 1.0)]
    for i in range(hp.n_layer):
        b = f"blk.{i}."
        out.append(TSpec(b + "attn_norm.weight", (D,), **norm))
        out.append(TSpec(b + "attn_q.weight", (q_dim, D), 1.2 * s_in))
        out.append(TSpec(b + "attn_k.weight", (kv_dim, D), 1.2 * s_in))
        out.append(TSpec(b + "attn_v.weight", (kv_dim, D), s_in))
        if hp.arch == "qwen2moe":
            out.append(TSpec(b + "attn_q.bias", (q_dim,), 0.2, quant=False))
            out.append(TSpec(b + "attn_k.bias", (kv_dim,), 0.2, quant=False))
            out.append(TSpec(b + "attn_v.bias", (kv_dim,), 0.2, quant=False))
        if hp.arch == "qwen3moe":
            out.append(TSpec(b + "attn_q_norm.weight", (hp.head_dim,), **norm))
            out.append(TSpec(b + "attn_k_norm.weight", (hp.head_dim,), **norm))
        if hp.arch == "olmoe":
            out.append(TSpec(b + "attn_q_norm.weight", (q_dim,), **norm))
            out.append(TSpec(b + "attn_k_norm.weight", (kv_dim,), **norm))
        out.append(TSpec(b + "attn_output.weight", (D, q_dim), 1.0 / math.sqrt(q_dim)))
        out.append(TSpec(b + "ffn_norm.weight", (D,), **norm))
        # router: logits of std ~2 so that tokens pick different experts
        out.append(TSpec(b + "ffn_gate_inp.weight", (hp.n_expert, D), 2.0 * s_in))
        out.append(TSpec(b + "ffn_gate_exps.weight", (hp.n_expert, F, D), s_in))
        out.append(TSpec(b + "ffn_down_exps.weight", (hp.n_expert, D, F), 1.0 / math.sqrt(F)))
        out.append(TSpec(b + "ffn_up_exps.weight", (hp.n_expert, F, D), s_in))
        if hp.arch == "qwen2moe":
            Fs = hp.n_ff_shexp
            out.append(TSpec(b + "ffn_gate_inp_shexp.weight", (D,), s_in, quant=False))
            out.append(TSpec(b + "ffn_gate_shexp.weight", (Fs, D), s_in))
            out.append(TSpec(b + "ffn_down_shexp.weight", (D, Fs), 1.0 / math.sqrt(Fs)))
            out.append(TSpec(b + "ffn_up_shexp.weight", (Fs, D), s_in))
    out.append(TSpec("output_norm.weight", (D,), **norm))
    # logits of std ~4: max |logit| around 10-20
    out.append(TSpec("output.weight", (hp.n_vocab, D), 4.0 * s_in))
    return out


def rng_for(seed: int, name: str) -> np.random.Generator:
    h = hashlib.sha256(f"{seed}:{name}".encode()).digest()
    return np.random.default_rng(int.from_bytes(h[:16], "little"))


def gen_chunks(spec: TSpec, seed: int):
    """Yield the tensor's float32 values in row-major order, in chunks (1-D arrays)."""
    rng = rng_for(seed, spec.name)
    total = int(np.prod(spec.shape))
    done = 0
    while done < total:
        n = min(CHUNK_ELEMS, total - done)
        a = rng.standard_normal(n, dtype=np.float32)
        a *= np.float32(spec.scale)
        if spec.offset:
            a += np.float32(spec.offset)
        yield a
        done += n


def gen_tensor(spec: TSpec, seed: int) -> np.ndarray:
    """Whole tensor as float32 (before type conversion); for small models / tests."""
    return np.concatenate(list(gen_chunks(spec, seed))).reshape(spec.shape)


def to_bf16_bits(a: np.ndarray) -> np.ndarray:
    """f32 -> bf16 bits, round to nearest even; identical to gguf.quants BF16.quantize."""
    n = a.view(np.uint32)
    n = np.where((n & 0x7fffffff) > 0x7f800000, (n & np.uint32(0xffff0000)) | np.uint32(64 << 16), n)
    n = (n.astype(np.uint64) + (0x7fff + ((n >> 16) & 1))) >> 16
    return n.astype(np.uint16)


def convert(a: np.ndarray, qt: QT, ncols: int = 0) -> np.ndarray:
    """float32 values (whole rows of ncols for the block types) -> bytes of type qt."""
    if qt == QT.F32:
        return a
    if qt == QT.F16:
        return a.astype(np.float16)
    if qt == QT.BF16:
        return to_bf16_bits(a)
    return kquant.quantize(a.reshape(-1, ncols), qt)


def type_nbytes(qt: QT, shape) -> int:
    be, bb = GGML_QUANT_SIZES[qt]
    nel = int(np.prod(shape))
    assert shape[-1] % be == 0
    return nel // be * bb


# --------------------------------------------------------------------------------------
# Per-tensor type choice for the quantised --type values (llama-quant.cpp)
# --------------------------------------------------------------------------------------
def use_more_bits(i_layer: int, n_layers: int) -> bool:
    """llama-quant.cpp use_more_bits (C integer arithmetic)."""
    return i_layer < n_layers // 8 or i_layer >= 7 * n_layers // 8 or (i_layer - n_layers // 8) % 3 == 2


def mix_type(name: str, ncols: int, base: QT, ftype: LlamaFileType, hp: HParams) -> QT:
    """llama_tensor_get_type_impl for Q4_K_M / Q5_K_M, restricted to what applies here
    (no imatrix, no Falcon, not a 70B model, output.weight present = untied embeddings)."""
    m = re.match(r"blk\.(\d+)\.", name)
    i_layer = int(m.group(1)) if m else -1
    if name == "output.weight":
        return QT.Q8_0 if ncols % GGML_QUANT_SIZES[base][0] else QT.Q6_K
    if name == "token_embd.weight":
        return base
    if "attn_v.weight" in name:
        # i_attention_wv counts attn_v tensors in llama.cpp's (layer-number) order = layer index
        t = QT.Q6_K if use_more_bits(i_layer, hp.n_layer) else base
        if hp.n_expert == 8:
            t = QT.Q8_0
        return t
    if "attn_k.weight" in name:
        return QT.Q8_0 if hp.n_expert == 8 else base
    if "ffn_down" in name:   # ffn_down_exps, ffn_down.E (split), ffn_down_shexp; layer from the name
        return QT.Q6_K if use_more_bits(i_layer, hp.n_layer) else base
    if "attn_output.weight" in name:
        if hp.n_expert == 8 and ftype == LlamaFileType.MOSTLY_Q4_K_M:
            return QT.Q5_K
        return base
    return base


FALLBACK = {QT.Q4_K: QT.Q5_0, QT.Q5_K: QT.Q5_1, QT.Q6_K: QT.Q8_0}   # tensor_type_fallback


def tensor_type(name: str, spec: TSpec, shape, typ: str, hp: HParams) -> QT:
    qt, ftype = TYPES[typ]
    if not spec.quant:
        return QT.F32
    # deepseek2 as the converter writes it: FFN_GATE_INP is F32 in its F16/BF16 files too
    if hp.arch == "deepseek2" and name.endswith("ffn_gate_inp.weight"):
        return QT.F32
    if typ in PLAIN_TYPES:
        return qt
    if name.endswith("ffn_gate_inp.weight"):     # llama-quantize never quantises the router
        return QT.F32
    if typ == "mxfp4" and len(shape) < 3:       # MXFP4_MOE: only the stacked experts in MXFP4
        qt = QT.Q8_0
    ncols = shape[-1]
    t = mix_type(name, ncols, qt, ftype, hp) if typ in MIX_TYPES else qt
    if ncols % GGML_QUANT_SIZES[t][0]:
        t = FALLBACK.get(t, QT.F16)
        if ncols % GGML_QUANT_SIZES[t][0]:
            t = QT.F16
        print(f"warning: {name}: row length {ncols} is not a multiple of the block size; using {t.name}",
              file=sys.stderr)
    return t


# --------------------------------------------------------------------------------------
# Tokenizer vocabularies
# --------------------------------------------------------------------------------------
CORPUS = r"""
The quick brown fox jumps over the lazy dog. A mixture of experts model routes every token
to a small number of expert networks, chosen by a learned router. Only the selected experts
run, so the model can hold many more parameters than it uses for any single token. The router
computes a score for each expert, takes a softmax, and keeps the top few. Their outputs are
added together, weighted by the router probabilities.

Once upon a time there was a little server that wanted to answer questions quickly. It read
its weights from a file, mapped them into memory, and waited for requests. When a request came,
it split the text into tokens, ran the model one layer after another, and picked the next token.
Then it did it again, and again, until the answer was complete or the user said stop.

In the beginning of the project we wrote the tests first. We generated random models with fixed
seeds, so that every machine would build exactly the same files, and we compared our outputs with
a reference implementation. Numbers that are almost equal are fine; numbers that differ a lot are
a bug. We also measured how fast the server could generate text, how much memory it needed, and
what happened when many users sent requests at the same time.

Questions and answers:
What is the capital of France? Paris is the capital of France.
How many days are there in a week? There are seven days in a week.
Why is the sky blue? Because air scatters blue light more than red light.
Can you write a short poem about the sea? The sea is wide, the sea is deep, it sings the sailors
all to sleep.

static float dot(const float *a, const float *b, int n) {
    float sum = 0.0f;
    for (int i = 0; i < n; i++) {
        sum += a[i] * b[i];
    }
    return sum;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s model.gguf\n", argv[0]);
        return 1;
    }
    struct model *m = model_load(argv[1]);
    if (!m) return 2;
    printf("loaded %d layers, %d experts\n", m->n_layer, m->n_expert);
    model_free(m);
    return 0;
}

def softmax(x):
    x = x - x.max()
    e = np.exp(x)
    return e / e.sum()

def top_k(probs, k):
    idx = np.argsort(-probs)[:k]
    return idx, probs[idx]

for i in range(10):
    print(f"step {i}: value = {i * 3 + 1}")

Numbers like 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 42, 100, 2024 and 3.14159 appear in text too.
Some words are long: internationalization, responsibility, characteristics, understanding,
performance, configuration, implementation, documentation, information, representation.
Others are short: a, an, the, of, to, in, is, it, on, at, by, as, or, we, he, she, they, you.
"""

SPIECE = "\u2581"


def bytes_to_unicode() -> list[tuple[int, str]]:
    """GPT-2's byte -> printable unicode map, in GPT-2 vocabulary order."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("\u00a1"), ord("\u00ac") + 1)) + \
        list(range(ord("\u00ae"), ord("\u00ff") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return [(b, chr(c)) for b, c in zip(bs, cs)]


def train_bpe(words: dict[tuple, int], n_target: int, vocab: set[str], max_train: int = 3000):
    """Greedy BPE on word counts. Returns (merges, new_tokens) with len(new_tokens) <= n_target.
    Ties broken by the pair's strings, so the result is deterministic."""
    words = {w: c for w, c in words.items() if len(w) > 1}
    merges: list[tuple[str, str]] = []
    new_tokens: list[str] = []
    while len(new_tokens) < n_target and len(merges) < max_train and words:
        counts: dict[tuple[str, str], int] = {}
        for w, c in words.items():
            for p in zip(w, w[1:]):
                counts[p] = counts.get(p, 0) + c
        if not counts:
            break
        best = min(counts.items(), key=lambda kv: (-kv[1], kv[0]))[0]
        a, b = best
        merges.append(best)
        t = a + b
        if t not in vocab:
            vocab.add(t)
            new_tokens.append(t)
        nw: dict[tuple, int] = {}
        for w, c in words.items():
            if best in zip(w, w[1:]):
                out, i = [], 0
                while i < len(w):
                    if i + 1 < len(w) and w[i] == a and w[i + 1] == b:
                        out.append(t)
                        i += 2
                    else:
                        out.append(w[i])
                        i += 1
                w = tuple(out)
            if len(w) > 1:
                nw[w] = nw.get(w, 0) + c
        words = nw
    return merges, new_tokens


def extend_merges(merges, new_tokens, vocab: set[str], n_target: int, space: str, base_tokens):
    """Once the corpus is exhausted, add synthetic merges head+tail (head: a learned word-like
    token, tail: a learned letters-only token without the space marker) until n_target new
    tokens exist. Every merge 'a b' has a, b and a+b in the vocabulary."""
    def letters(s: str) -> bool:
        return s.isascii() and s.isalpha()
    learned = [t for t in new_tokens]
    heads = [t for t in learned if letters(t[1:] if t.startswith(space) else t)]
    tails = [t for t in learned if letters(t)]
    tails = [c for c in base_tokens if letters(c)] + tails
    heads = heads + [c for c in base_tokens if letters(c)]
    if not heads or not tails:
        raise SystemExit("corpus too small for the requested vocabulary")
    # round-robin over tails so that the added tokens are varied
    ti = 0
    while len(new_tokens) < n_target:
        added = False
        for h in heads:
            if len(new_tokens) >= n_target:
                break
            tl = tails[ti % len(tails)]
            t = h + tl
            if t not in vocab and len(t) <= 24:
                vocab.add(t)
                merges.append((h, tl))
                new_tokens.append(t)
                added = True
        ti += 1
        if ti % len(tails) == 0 and not added:
            # next generation: allow the tokens made in the previous round as heads
            heads = [t for t in new_tokens if letters(t[1:] if t.startswith(space) else t)]
        if ti > 10 * len(tails) * 1000:
            raise SystemExit("could not fill the vocabulary")
    return merges, new_tokens


GPT2_PAT = re.compile(r"""'s|'t|'re|'ve|'m|'ll|'d| ?[A-Za-z]+| ?[0-9]| ?[^\sA-Za-z0-9]+|\s+(?!\S)|\s+""")

CHATML = ("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] "
          "+ '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}"
          "{% endif %}")
MISTRAL_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token}}"
    "{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %}")


def harmony_template() -> str:
    """gpt-oss's chat template (the harmony format) as published with the model: the copy the
    template cross-check renders (tests/data/templates/README.md)."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "data",
                        "templates", "openai-gpt-oss-120b.jinja")
    with open(path, encoding="utf-8") as f:
        return f.read()


# gpt-oss's special tokens (o200k_harmony), in their order there
HARMONY_SPECIALS = ["<|startoftext|>", "<|endoftext|>", "<|return|>", "<|constrain|>", "<|channel|>",
                    "<|start|>", "<|end|>", "<|message|>", "<|call|>"]


def glm_template() -> str:
    """GLM-4.5's chat template family, as published with GLM-4.6 (the copy the template
    cross-check renders, tests/data/templates/README.md)."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "data",
                        "templates", "GLM-4.6.jinja")
    with open(path, encoding="utf-8") as f:
        return f.read()


# GLM-4.5's special tokens (a subset, in their order there)
GLM_SPECIALS = ["<|endoftext|>", "[MASK]", "[gMASK]", "[sMASK]", "<sop>", "<eop>", "<|system|>",
                "<|user|>", "<|assistant|>", "<|observation|>", "<think>", "</think>",
                "<tool_call>", "</tool_call>", "<tool_response>", "</tool_response>",
                "<arg_key>", "</arg_key>", "<arg_value>", "</arg_value>", "/nothink"]


def deepseek_template(name: str) -> str:
    """DeepSeek-V3's published chat template (tokenizer_config.json) or DeepSeek-V2's, the copies
    the template cross-check renders (tests/data/templates/README.md)."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "data",
                        "templates", name)
    with open(path, encoding="utf-8") as f:
        return f.read()


# DeepSeek-V3's special tokens: begin/end of sentence and pad are its ids 0, 1, 2; the others
# (fill-in-the-middle, chat turns, tool calls) sit after the BPE tokens, in their order there
DEEPSEEK_V3_HEAD = ["<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>", "<｜▁pad▁｜>"]
DEEPSEEK_V3_TAIL = ["<｜fim▁hole｜>", "<｜fim▁begin｜>", "<｜fim▁end｜>", "<｜User｜>", "<｜Assistant｜>",
                    "<|EOT|>", "<｜tool▁calls▁begin｜>", "<｜tool▁calls▁end｜>", "<｜tool▁call▁begin｜>",
                    "<｜tool▁call▁end｜>", "<｜tool▁outputs▁begin｜>", "<｜tool▁outputs▁end｜>",
                    "<｜tool▁output▁begin｜>", "<｜tool▁output▁end｜>", "<｜tool▁sep｜>"]
# DeepSeek-V2's (deepseek-llm vocabulary): after the BPE tokens
DEEPSEEK_V2_TAIL = ["<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>", "<｜fim▁hole｜>", "<｜fim▁begin｜>",
                    "<｜fim▁end｜>", "<|EOT|>"]


def bpe_vocab(hp: HParams) -> dict:
    """Byte-level BPE (tokenizer.ggml.model = gpt2) for qwen2moe / qwen3moe / olmoe / gpt-oss /
    glm4moe / deepseek2."""
    head: list[str] = []     # specials placed before the byte tokens (DeepSeek-V3's ids 0-2)
    if hp.arch == "deepseek2" and hp.preset == "tiny-lite":
        specials = DEEPSEEK_V2_TAIL
        pre = "deepseek-llm"
    elif hp.arch == "deepseek2":
        head, specials = DEEPSEEK_V3_HEAD, DEEPSEEK_V3_TAIL
        pre = "deepseek-v3"
    elif hp.arch == "olmoe":
        specials = ["<|endoftext|>", "<|padding|>", "<|im_start|>", "<|im_end|>"]
        pre = "olmo"
    elif hp.arch == "gpt-oss":
        specials = HARMONY_SPECIALS
        pre = "gpt-4o"
    elif hp.arch == "glm4moe":
        specials = GLM_SPECIALS
        pre = "glm4"
    else:
        specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
        pre = "qwen2"
    b2u = bytes_to_unicode()
    base = [u for _, u in b2u]
    n_new = hp.n_vocab - len(head) - len(base) - len(specials)
    if n_new < 1:
        raise SystemExit(f"n_vocab {hp.n_vocab} too small for a BPE vocabulary "
                         f"(need > {len(head) + len(base) + len(specials)})")
    bmap = dict(b2u)
    words: dict[tuple, int] = {}
    for m in GPT2_PAT.findall(CORPUS):
        w = tuple(bmap[c] for c in m.encode("utf-8"))
        words[w] = words.get(w, 0) + 1
    vocab = set(base)
    merges, new_tokens = train_bpe(words, n_new, vocab)
    merges, new_tokens = extend_merges(merges, new_tokens, vocab, n_new, bmap[ord(" ")], base)
    tokens = head + base + new_tokens + specials
    assert len(tokens) == hp.n_vocab == len(set(tokens))
    types = [int(TokenType.CONTROL)] * len(head) + [int(TokenType.NORMAL)] * (len(base) + len(new_tokens)) + \
        [int(TokenType.CONTROL)] * len(specials)
    sid = {s: tokens.index(s) for s in head + specials}
    if hp.arch == "deepseek2":
        # as the converter's _set_vocab_gpt2 + SpecialVocab write DeepSeek's tokenizer_config.json:
        # BOS added (add_bos_token true), pad = eos; DeepSeek-V2's template for the V2-Lite model
        template = deepseek_template("deepseek-v2.jinja" if hp.preset == "tiny-lite" else "deepseek-v3.jinja")
        return dict(model="gpt2", pre=pre, tokens=tokens, types=types,
                    merges=[f"{a} {b}" for a, b in merges], bos=sid["<｜begin▁of▁sentence｜>"],
                    eos=sid["<｜end▁of▁sentence｜>"], pad=sid["<｜end▁of▁sentence｜>"], add_bos=True,
                    template=template)
    if hp.arch == "gpt-oss":   # as llama.cpp's gpt-oss files: <|return|> ends a reply
        return dict(model="gpt2", pre=pre, tokens=tokens, types=types,
                    merges=[f"{a} {b}" for a, b in merges], bos=sid["<|startoftext|>"],
                    eos=sid["<|return|>"], pad=sid["<|endoftext|>"], add_bos=False,
                    template=harmony_template())
    if hp.arch == "glm4moe":   # as convert_hf_to_gguf.py's _set_vocab_glm: no BOS added
        return dict(model="gpt2", pre=pre, tokens=tokens, types=types,
                    merges=[f"{a} {b}" for a, b in merges], bos=sid["[gMASK]"],
                    eos=sid["<|endoftext|>"], eot=sid["<|user|>"], pad=sid["<|endoftext|>"],
                    add_bos=False, template=glm_template())
    return dict(model="gpt2", pre=pre, tokens=tokens, types=types,
                merges=[f"{a} {b}" for a, b in merges],
                bos=sid["<|endoftext|>"], eos=sid["<|im_end|>"] if hp.arch != "olmoe" else sid["<|endoftext|>"],
                pad=sid.get("<|padding|>", sid["<|endoftext|>"]), add_bos=False, template=CHATML)


def spm_vocab(hp: HParams) -> dict:
    """SentencePiece-style vocabulary (tokenizer.ggml.model = llama) for Mixtral."""
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{i:02X}>" for i in range(256)]
    types = [int(TokenType.UNKNOWN), int(TokenType.CONTROL), int(TokenType.CONTROL)] + [int(TokenType.BYTE)] * 256
    words: dict[tuple, int] = {}
    for w in CORPUS.split():
        t = tuple(SPIECE + w)
        words[t] = words.get(t, 0) + 1
    chars = sorted({c for w in words for c in w})
    n_new = hp.n_vocab - len(tokens) - len(chars)
    if n_new < 1:
        raise SystemExit(f"n_vocab {hp.n_vocab} too small for the SPM vocabulary (need > {len(tokens) + len(chars)})")
    vocab = set(tokens) | set(chars)
    merges, pieces = train_bpe(words, n_new, vocab)
    merges, pieces = extend_merges(merges, pieces, vocab, n_new, SPIECE, chars)
    # scores: merged pieces by rank (higher = merged earlier), single characters last
    scores = [0.0] * len(tokens) + [-float(i) for i in range(len(pieces))] + \
        [-float(len(pieces) + i) for i in range(len(chars))]
    tokens = tokens + pieces + chars
    types += [int(TokenType.NORMAL)] * (len(pieces) + len(chars))
    assert len(tokens) == hp.n_vocab == len(set(tokens))
    return dict(model="llama", tokens=tokens, types=types, scores=scores, bos=1, eos=2, unk=0,
                add_bos=True, template=MISTRAL_TEMPLATE)


# --------------------------------------------------------------------------------------
# Writer
# --------------------------------------------------------------------------------------
ARCH_NAME = {"llama": "Mixtral", "qwen2moe": "Qwen2MoE", "qwen3moe": "Qwen3MoE", "olmoe": "OLMoE",
             "gpt-oss": "gpt-oss", "glm4moe": "GLM-4.5", "deepseek2": "DeepSeek"}


def add_metadata(w: GGUFWriter, hp: HParams, tname: str, ftype: int, args, vocab: dict | None = None,
                 name: str | None = None) -> None:
    """The file's keys; vocab and name default to the generated vocabulary and the test name
    (tools/train_moe.py passes the tokenizer it trained)."""
    a = hp.arch
    w.add_name(name or f"moeserve-test {ARCH_NAME[a]} {hp.preset} {tname} seed {args.seed}")
    w.add_file_type(int(ftype))
    if tname not in PLAIN_TYPES:
        w.add_quantization_version(GGML_QUANT_VERSION)
    if a == "deepseek2":
        add_deepseek2_keys(w, hp)
    else:
        add_arch_keys(w, hp)
    add_tokenizer_keys(w, hp, vocab)


def add_deepseek2_keys(w: GGUFWriter, hp: HParams) -> None:
    """The keys and the order of llama.cpp's converter: TextModel.set_gguf_parameters (the
    generic ones, num_key_value_heads set to 1 first), then DeepseekV2Model's.  config.json's
    head_dim is absent, so key_length / value_length are the MLA cache's (kv_lora_rank + qk_rope
    and kv_lora_rank); expert_weights_norm only when norm_topk_prob is true; the YaRN log
    multiplier is 0.1 * mscale_all_dim (the converter's legacy form, llama.cpp divides by 0.1)."""
    y = hp.yarn
    w.add_block_count(hp.n_layer)
    w.add_context_length(hp.n_ctx)
    w.add_embedding_length(hp.n_embd)
    w.add_feed_forward_length(hp.n_ff_dense)
    w.add_head_count(hp.n_head)
    w.add_head_count_kv(1)
    if y is not None:
        w.add_rope_scaling_type(gguf.RopeScalingType.YARN)
        w.add_rope_scaling_factor(y["factor"])
        w.add_rope_scaling_orig_ctx_len(y["orig_ctx"])
        w.add_rope_scaling_yarn_beta_fast(y["beta_fast"])
        w.add_rope_scaling_yarn_beta_slow(y["beta_slow"])
    w.add_rope_freq_base(hp.rope_base)
    w.add_layer_norm_rms_eps(hp.eps)
    w.add_expert_count(hp.n_expert)
    w.add_expert_used_count(hp.n_expert_used)
    w.add_expert_group_count(hp.n_group)
    w.add_expert_group_used_count(hp.n_group_used)
    w.add_expert_gating_func(gguf.ExpertGatingFuncType.SIGMOID if hp.gating == "sigmoid"
                             else gguf.ExpertGatingFuncType.SOFTMAX)
    w.add_leading_dense_block_count(hp.n_dense)
    w.add_vocab_size(hp.n_vocab)
    if hp.q_lora_rank:
        w.add_q_lora_rank(hp.q_lora_rank)
    w.add_kv_lora_rank(hp.kv_lora_rank)
    w.add_key_length(hp.kv_lora_rank + hp.qk_rope)
    w.add_value_length(hp.kv_lora_rank)
    w.add_key_length_mla(hp.qk_nope + hp.qk_rope)
    w.add_value_length_mla(hp.v_head_dim)
    w.add_expert_feed_forward_length(hp.n_ff)
    w.add_expert_shared_count(hp.n_shared)
    w.add_expert_weights_scale(hp.routed_scale)
    if hp.norm_topk:
        w.add_expert_weights_norm(True)
    w.add_rope_dimension_count(hp.qk_rope)
    if y is not None:
        w.add_rope_scaling_yarn_log_mul(0.1 * y["mscale_all_dim"])


def add_arch_keys(w: GGUFWriter, hp: HParams) -> None:
    a = hp.arch
    w.add_uint32(f"{a}.context_length", hp.n_ctx)
    w.add_uint32(f"{a}.embedding_length", hp.n_embd)
    w.add_uint32(f"{a}.block_count", hp.n_layer + hp.n_nextn)
    if a in ("llama", "olmoe"):
        w.add_uint32(f"{a}.feed_forward_length", hp.n_ff)
    else:
        w.add_uint32(f"{a}.feed_forward_length", hp.n_ff_dense)
        w.add_uint32(f"{a}.expert_feed_forward_length", hp.n_ff)
    if a == "qwen2moe":
        w.add_uint32(f"{a}.expert_shared_feed_forward_length", hp.n_ff_shexp)
    w.add_uint32(f"{a}.attention.head_count", hp.n_head)
    w.add_uint32(f"{a}.attention.head_count_kv", hp.n_head_kv)
    if a in ("qwen3moe", "gpt-oss", "glm4moe") or hp.head_dim * hp.n_head != hp.n_embd:
        w.add_uint32(f"{a}.attention.key_length", hp.head_dim)
        w.add_uint32(f"{a}.attention.value_length", hp.head_dim)
    w.add_float32(f"{a}.attention.layer_norm_rms_epsilon", hp.eps)
    w.add_float32(f"{a}.rope.freq_base", hp.rope_base)
    if a == "llama":
        w.add_uint32(f"{a}.rope.dimension_count", hp.head_dim)
    if a == "gpt-oss":
        w.add_uint32(f"{a}.attention.sliding_window", hp.n_swa)
        w.add_string(f"{a}.rope.scaling.type", "yarn")
        w.add_float32(f"{a}.rope.scaling.factor", GPT_OSS_YARN["factor"])
        w.add_uint32(f"{a}.rope.scaling.original_context_length", GPT_OSS_YARN["original_context_length"])
        w.add_float32(f"{a}.rope.scaling.yarn_beta_fast", GPT_OSS_YARN["beta_fast"])
        w.add_float32(f"{a}.rope.scaling.yarn_beta_slow", GPT_OSS_YARN["beta_slow"])
    if a == "glm4moe":   # Glm4MoeModel.set_gguf_parameters: partial_rotary_factor 0.5
        w.add_uint32(f"{a}.rope.dimension_count", hp.head_dim // 2)
        w.add_uint32(f"{a}.expert_shared_count", 1)
        w.add_uint32(f"{a}.leading_dense_block_count", hp.n_dense)
        w.add_uint32(f"{a}.expert_gating_func", 2)   # ExpertGatingFuncType.SIGMOID
        w.add_float32(f"{a}.expert_weights_scale", hp.routed_scale)
        w.add_bool(f"{a}.expert_weights_norm", True)
        w.add_uint32(f"{a}.nextn_predict_layers", hp.n_nextn)
    w.add_uint32(f"{a}.expert_count", hp.n_expert)
    w.add_uint32(f"{a}.expert_used_count", hp.n_expert_used)
    w.add_uint32(f"{a}.vocab_size", hp.n_vocab)


def add_tokenizer_keys(w: GGUFWriter, hp: HParams, vocab: dict | None) -> None:
    a = hp.arch
    v = vocab or (spm_vocab(hp) if a == "llama" else bpe_vocab(hp))
    w.add_tokenizer_model(v["model"])
    if "pre" in v:
        w.add_tokenizer_pre(v["pre"])
    w.add_token_list(v["tokens"])
    if "scores" in v:
        w.add_token_scores(v["scores"])
    w.add_token_types(v["types"])
    if "merges" in v:
        w.add_token_merges(v["merges"])
    w.add_bos_token_id(v["bos"])
    w.add_eos_token_id(v["eos"])
    if "eot" in v:
        w.add_eot_token_id(v["eot"])
    if "unk" in v:
        w.add_unk_token_id(v["unk"])
    if "pad" in v:
        w.add_pad_token_id(v["pad"])
    w.add_add_bos_token(v["add_bos"])
    w.add_add_eos_token(False)
    if a == "llama":
        w.add_add_space_prefix(True)
    w.add_chat_template(v["template"])


def file_tensors(hp: HParams, layout: str):
    """(file name, spec, expert index or None, numpy shape) in file order."""
    for s in tensor_specs(hp):
        m = re.match(r"blk\.(\d+)\.ffn_(gate|up|down)_exps\.weight$", s.name)
        if layout == "split" and m:
            for e in range(hp.n_expert):
                yield f"blk.{m.group(1)}.ffn_{m.group(2)}.{e}.weight", s, e, s.shape[1:]
        else:
            yield s.name, s, None, s.shape


def write_model(args) -> dict:
    hp = make_hparams(args)
    if args.expert_layout == "split" and hp.arch != "llama":
        raise SystemExit("--expert-layout split is only valid for --arch llama (legacy Mixtral layout)")
    qt, ftype = TYPES[args.type]
    w = GGUFWriter(args.output, hp.arch)
    add_metadata(w, hp, args.type, ftype, args)

    plan = [(name, s, e, shape, tensor_type(name, s, shape, args.type, hp))
            for name, s, e, shape in file_tensors(hp, args.expert_layout)]
    n_params = 0
    type_counts: dict = {}
    for name, s, e, shape, tq in plan:
        nel = int(np.prod(shape))
        n_params += nel
        type_counts[tq.name] = type_counts.get(tq.name, 0) + 1
        if tq in (QT.F32, QT.F16, QT.BF16):
            nb = nel * (4 if tq == QT.F32 else 2)
            dt = np.dtype(np.float32) if tq == QT.F32 else np.dtype(np.float16)
        else:
            nb = type_nbytes(tq, shape)
            dt = np.dtype(np.float32)     # shape is in elements (gguf-py only converts uint8 shapes)
        w.add_tensor_info(name, shape, dt, nb, raw_dtype=tq)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    fout = w.fout[0]
    align = w.data_alignment

    def pad():
        n = fout.tell()
        p = (-n) % align
        if p:
            fout.write(b"\0" * p)

    # stream tensor data; split experts read consecutive slabs of the stacked RNG stream
    # (block types: chunks of whole rows, quantised row by row).  The K-quant quantiser is the
    # slow part (~7 M values/s per core): for big models its chunks go to --jobs worker
    # processes, at most jobs+1 chunks in flight, written back in order (same bytes as serial).
    pool = None
    n_k = sum(int(np.prod(shape)) for _, _, _, shape, tq in plan if tq in kquant.K_TYPES)
    if args.jobs > 1 and n_k >= PARALLEL_MIN_ELEMS:
        import concurrent.futures
        import multiprocessing
        pool = concurrent.futures.ProcessPoolExecutor(args.jobs, mp_context=multiprocessing.get_context("fork"))
    pending: list = []      # futures / arrays / None (= pad), written strictly in order

    def n_busy() -> int:
        return sum(1 for p in pending if p is not None and not isinstance(p, np.ndarray))

    def flush(max_items: int, max_busy: int = 0):
        while pending and (len(pending) > max_items or n_busy() > max_busy):
            item = pending.pop(0)
            if item is None:
                pad()
            elif isinstance(item, np.ndarray):
                item.tofile(fout)
            else:
                item.result().tofile(fout)

    stream = None
    rng = np.random.default_rng(args.seed)
    for name, s, e, shape, tq in plan:
        nel = int(np.prod(shape))
        ncols = shape[-1]
        if args.random_blocks and tq not in (QT.F32, QT.F16, QT.BF16):
            pending.append(None)
            pending.append(random_blocks(rng, tq, shape))
            pending.append(None)
            flush(0)
            continue
        if e is None or e == 0:
            stream = _Stream(gen_chunks(s, args.seed))
        pending.append(None)
        step = CHUNK_ELEMS if tq in (QT.F32, QT.F16, QT.BF16) else max(1, CHUNK_ELEMS // ncols) * ncols
        left = nel
        while left:
            a = stream.take(min(left, step))
            left -= a.size
            if pool is not None and tq in kquant.K_TYPES:
                pending.append(pool.submit(convert, a, tq, ncols))
            else:
                pending.append(convert(a, tq, ncols))
            flush(4 * args.jobs + 8, args.jobs) if pool is not None else flush(0)
        pending.append(None)
    flush(0)
    if pool is not None:
        pool.shutdown()
    fout.flush()
    w.close()
    size = os.path.getsize(args.output)
    return dict(hp=hp, n_params=n_params, size=size, type_counts=type_counts)


# Where each block type keeps its f16 scales: d, then (for the types with a minimum or an
# offset) where that lives and the multiple of d that centres the values on zero (the mean
# code times the mean sub-block scale, or minus the mean code for Q4_1/Q5_1's additive m).
# Zero-mean weights matter: a common positive offset in every row would make every token's
# hidden state, and so its routing, the same.
_SCALES = {QT.Q8_0: (0, None, 0), QT.Q4_0: (0, None, 0), QT.Q5_0: (0, None, 0),
           QT.Q4_1: (0, 2, -7.5), QT.Q5_1: (0, 2, -15.5), QT.Q4_K: (0, 2, 7.5),
           QT.Q5_K: (0, 2, 15.5), QT.Q6_K: (208, None, 0)}


def random_blocks(rng, qt: QT, shape) -> np.ndarray:
    """Random payload with small scales (no inf/nan) and values centred on zero: the speed of a
    real file, for benchmarks, without quantising anything."""
    be, bb = GGML_QUANT_SIZES[qt]
    n_blocks = int(np.prod(shape)) // be
    raw = rng.integers(0, 256, size=(n_blocks, bb), dtype=np.uint8)
    if qt == QT.MXFP4:   # an E8M0 byte: half-scales 2^-11 .. 2^-9, codes up to 12 of them
        raw[:, 0] = rng.integers(117, 120, size=n_blocks, dtype=np.uint8)
        return raw.reshape(-1)
    d_off, m_off, m_mult = _SCALES[qt]
    per_elem = 1.0 / (be if be > 32 else 8)
    d = rng.random(n_blocks, dtype=np.float32) * 0.02 * per_elem + 1e-4
    raw[:, d_off:d_off + 2] = d.astype(np.float16).view(np.uint8).reshape(n_blocks, 2)
    if m_off is not None:
        m = (d * m_mult).astype(np.float16)
        raw[:, m_off:m_off + 2] = m.view(np.uint8).reshape(n_blocks, 2)
    return raw.reshape(-1)


class _Stream:
    def __init__(self, it):
        self.it, self.buf = it, np.empty(0, np.float32)

    def take(self, n: int) -> np.ndarray:
        while self.buf.size < n:
            self.buf = np.concatenate([self.buf, next(self.it)])
        out, self.buf = self.buf[:n], self.buf[n:]
        return out


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--arch", choices=ARCHS, help="default: from the preset for the *-slice presets")
    ap.add_argument("--preset", choices=PRESETS, required=True)
    ap.add_argument("--type", choices=tuple(TYPES), default="f32",
                    help="f32/f16/bf16: every tensor with 2+ dims; q8_0..q6_k: every tensor with 2+ dims "
                         "except the router (F32); q4_k_m/q5_k_m: llama.cpp mixes (docs/test-models.md). "
                         "1-D tensors always F32")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--expert-layout", choices=("stacked", "split"), default="stacked")
    for k in ("n-embd", "n-ff", "n-expert", "n-expert-used", "n-head", "n-head-kv", "head-dim",
              "n-layer", "n-vocab", "n-ctx", "n-ff-shexp", "n-swa"):
        ap.add_argument("--" + k, type=int, dest=k.replace("-", "_"))
    ap.add_argument("--jobs", type=int, default=min(8, os.cpu_count() or 1),
                    help="worker processes for the K-quant quantiser on big models (output does not depend on it)")
    ap.add_argument("--random-blocks", action="store_true",
                    help="quantised tensors get random payload bytes with sane scales instead of a "
                         "quantisation of the float draw: seconds instead of minutes for the big "
                         "slices, for benchmarks (the numbers are not a model's)")
    ap.add_argument("--sha256", action="store_true", help="also print the file's sha256")
    ap.add_argument("-o", "--output", required=True)
    return ap


def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for blk in iter(lambda: f.read(1 << 24), b""):
            h.update(blk)
    return h.hexdigest()


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    r = write_model(args)
    hp = r["hp"]
    msg = (f"{args.output}: arch={hp.arch} preset={hp.preset} type={args.type} seed={args.seed} "
           f"layout={args.expert_layout} n_embd={hp.n_embd} n_ff={hp.n_ff} experts={hp.n_expert}/top{hp.n_expert_used} "
           f"heads={hp.n_head}/{hp.n_head_kv}x{hp.head_dim} layers={hp.n_layer} vocab={hp.n_vocab} "
           f"params={r['n_params']} bytes={r['size']}")
    if hp.arch == "deepseek2":
        msg += (f" q_lora={hp.q_lora_rank} kv_lora={hp.kv_lora_rank} nope/rope/v={hp.qk_nope}/{hp.qk_rope}/"
                f"{hp.v_head_dim} dense={hp.n_dense}x{hp.n_ff_dense} shared={hp.n_shared} "
                f"groups={hp.n_group}/{hp.n_group_used} gating={hp.gating}")
    if args.type not in PLAIN_TYPES:
        msg += " tensors=" + ",".join(f"{k}:{v}" for k, v in sorted(r["type_counts"].items()))
    if args.sha256:
        msg += f" sha256={sha256_file(args.output)}"
    print(msg)
    return 0


if __name__ == "__main__":
    sys.exit(main())
