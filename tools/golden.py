#!/usr/bin/env python3
"""Golden outputs for the moeserve tests, computed with Hugging Face transformers.

Never run in CI.  Needs the separate venv made from tools/requirements-golden.txt:

    python3 -m venv .venv-golden && .venv-golden/bin/pip install -r tools/requirements-golden.txt
    .venv-golden/bin/python tools/golden.py --all --out tests/data/golden

Default types: f32, f16, bf16 and the quantised q8_0, q4_0, q4_k_m, q6_k, q5_k_m (--quant: only
those; --type: any gen_model.py type).
For every (arch, type) it generates the model with tools/gen_model.py into a temp dir, reads it
back with gguf-py's GGUFReader (dequantised to float32: an independent reader from ours),
builds the matching HF model (MixtralForCausalLM, Qwen2MoeForCausalLM, Qwen3MoeForCausalLM,
OlmoeForCausalLM, GptOssForCausalLM, Glm4MoeForCausalLM, DeepseekV3ForCausalLM / DeepseekV2ForCausalLM;
float32, eager attention, no sliding window but gpt-oss's own), loads every GGUF tensor into
it (strictly: every GGUF tensor consumed and every HF parameter set), and records the
last-position logits of three prompts plus 32 greedy tokens.  The temp model is deleted.

--selfcheck also runs an independent numpy forward pass straight on the GGUF weights
(llama.cpp's math: NORM RoPE on the permuted llama Q/K rows and on deepseek2's rope dims, NEOX
RoPE for the others) and reports max |logit difference| against HF.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import shlex
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import gguf  # noqa: E402
from gguf import GGUFReader, TokenType  # noqa: E402
from gguf.quants import dequantize  # noqa: E402

import gen_model  # noqa: E402

ARCHS = ("llama", "qwen2moe", "qwen3moe", "olmoe", "gpt-oss", "glm4moe", "deepseek2")
PLAIN_TYPES = ("f32", "f16", "bf16")
QUANT_TYPES = ("q8_0", "q4_0", "q4_k_m", "q6_k", "q5_k_m")   # quantised goldens (any gen_model type works)
TYPES = PLAIN_TYPES + QUANT_TYPES
# gpt-oss's quantised goldens are the types its files come in (the Q4_K_M rules are Mixtral's)
ARCH_QUANT_TYPES = {"gpt-oss": ("q8_0", "mxfp4"), "glm4moe": ("q8_0", "q4_k_m"),
                    "deepseek2": ("q8_0", "q4_k_m")}
# presets other than tiny that have goldens, and their types (--all / --quant include them)
EXTRA_PRESETS = {"deepseek2": {"tiny-lite": ("f32", "q8_0")}}
PROMPT_LENGTHS = (5, 23, 80)
N_GREEDY = 32
PROMPT_SEED = 20240601
GREEDY_PROMPT_LEN = 7
ROUTER_GAP = 0.01   # min gap between the k-th and (k+1)-th router logit in accepted prompts
# glm4moe chooses by sigmoid score + bias: the sigmoid squeezes logit gaps by 4 or more, so its
# gap is asked of the choice scores, at what 8-bit activations move a score by (~5e-3)
ARCH_ROUTER_GAP = {"glm4moe": 0.008}
# deepseek2 with sigmoid gating (DeepSeek-V3) asks the same of its choice scores, and twice that of
# the expert groups' scores (each a sum of two choice scores) at the kept / dropped boundary;
# with softmax gating (V2-Lite) the logits' ROUTER_GAP applies.  Its longer chain of matmuls (MLA)
# moves the scores further under 8-bit activations than glm4moe's (up to ~2e-2 in the first MoE
# layer, emulated), so a quantised golden may see a rare flip: on the committed Q8_0 / Q4_K_M
# goldens' 294 (position, layer) choices, emulated Q8_0 / Q8_K activations change 0 / 1
SIGMOID_CHOICE_GAP = 0.008
GREEDY_GAP = 0.05   # min top-1/top-2 logit gap at every greedy step
# tries before giving up on the prompts / the greedy prompt (cumulative).  deepseek2's 80-token
# prompt has 160 routing decisions (2 MoE layers), each a near-tie about 5% of the time (its
# sigmoid choice scores within the kept groups, and the groups): thousands of draws
MAX_TRIES = {"deepseek2": (30000, 40000)}


# --------------------------------------------------------------------------------------
# GGUF reading (gguf-py)
# --------------------------------------------------------------------------------------
def read_gguf(path: str):
    r = GGUFReader(path)
    meta = {}
    for k, f in r.fields.items():
        if k.startswith("GGUF."):
            continue
        meta[k] = f.contents()
    tensors = {}
    for t in r.tensors:
        shape = tuple(int(x) for x in reversed(t.shape))  # numpy shape = reversed ne
        a = dequantize(np.asarray(t.data), t.tensor_type).astype(np.float32, copy=False)
        tensors[t.name] = np.ascontiguousarray(a.reshape(shape))
    return meta, tensors


class HP:
    def __init__(self, meta):
        a = meta["general.architecture"]
        g = lambda k, d=None: meta.get(f"{a}.{k}", d)  # noqa: E731
        self.arch = a
        self.n_vocab = int(g("vocab_size", len(meta["tokenizer.ggml.tokens"])))
        self.n_embd = int(g("embedding_length"))
        self.n_layer = int(g("block_count"))
        self.n_head = int(g("attention.head_count"))
        self.n_head_kv = int(g("attention.head_count_kv"))
        self.head_dim = int(g("attention.key_length", self.n_embd // self.n_head))
        self.n_ctx = int(g("context_length"))
        self.eps = float(g("attention.layer_norm_rms_epsilon"))
        self.rope_base = float(g("rope.freq_base", 10000.0))
        self.n_expert = int(g("expert_count"))
        self.n_expert_used = int(g("expert_used_count"))
        if a in ("qwen2moe", "qwen3moe", "gpt-oss", "glm4moe", "deepseek2"):
            self.n_ff = int(g("expert_feed_forward_length"))
            self.n_ff_dense = int(g("feed_forward_length"))
        else:
            self.n_ff = self.n_ff_dense = int(g("feed_forward_length"))
        self.n_ff_shexp = int(g("expert_shared_feed_forward_length", 0))
        self.n_swa = int(g("attention.sliding_window", 0))
        # glm4moe: block_count counts the MTP layers, which are not run
        self.n_nextn = int(g("nextn_predict_layers", 0))
        self.n_layer -= self.n_nextn
        self.n_dense = int(g("leading_dense_block_count", 0))
        self.n_rot = int(g("rope.dimension_count", self.head_dim))
        self.routed_scale = float(g("expert_weights_scale", 1.0))
        self.norm_topk = bool(g("expert_weights_norm", False))
        self.yarn = None
        if g("rope.scaling.type") == "yarn":
            self.yarn = dict(factor=float(g("rope.scaling.factor")),
                             orig_ctx=int(g("rope.scaling.original_context_length")),
                             beta_fast=float(g("rope.scaling.yarn_beta_fast", 32.0)),
                             beta_slow=float(g("rope.scaling.yarn_beta_slow", 1.0)),
                             # deepseek2: 0.1 * mscale_all_dim (the converter's legacy form)
                             log_mul=float(g("rope.scaling.yarn_log_multiplier", 0.0)))
        # deepseek2 (MLA); q_lora_rank 0: attn_q, no query compression
        self.q_lora_rank = int(g("attention.q_lora_rank", 0))
        self.kv_lora_rank = int(g("attention.kv_lora_rank", 0))
        self.qk_rope = self.n_rot
        self.qk_nope = int(g("attention.key_length_mla", 0)) - self.n_rot
        self.v_head_dim = int(g("attention.value_length_mla", 0))
        self.n_shared = int(g("expert_shared_count", 0))
        self.n_group = int(g("expert_group_count", 1))
        self.n_group_used = int(g("expert_group_used_count", 1))
        self.gating = {1: "softmax", 2: "sigmoid"}.get(int(g("expert_gating_func", 1)))
        self.token_types = [int(x) for x in meta["tokenizer.ggml.token_type"]]


# --------------------------------------------------------------------------------------
# HF model
# --------------------------------------------------------------------------------------
def unpermute(w: np.ndarray, n_head: int) -> np.ndarray:
    """Inverse of convert_hf_to_gguf.py LlamaModel.permute (GGUF NORM-RoPE rows -> HF rows)."""
    rows, cols = w.shape
    return w.reshape(n_head, rows // n_head // 2, 2, cols).swapaxes(1, 2).reshape(rows, cols)


def gpt_oss_layer(sd: dict, p: str, b: str, T) -> None:
    """A gpt-oss layer's GGUF tensors as GptOss parameters: the inverse of convert_hf_to_gguf.py's
    GptOssModel (gate and up back into the interleaved gate_up_proj, [expert][in][out])."""
    for n in "qkv":
        sd[p + f"self_attn.{n}_proj.weight"] = T(b + f"attn_{n}.weight")
        sd[p + f"self_attn.{n}_proj.bias"] = T(b + f"attn_{n}.bias")
    sd[p + "self_attn.o_proj.weight"] = T(b + "attn_output.weight")
    sd[p + "self_attn.o_proj.bias"] = T(b + "attn_output.bias")
    sd[p + "self_attn.sinks"] = T(b + "attn_sinks.weight")
    sd[p + "post_attention_layernorm.weight"] = T(b + "post_attention_norm.weight")
    sd[p + "mlp.router.weight"] = T(b + "ffn_gate_inp.weight")
    sd[p + "mlp.router.bias"] = T(b + "ffn_gate_inp.bias")
    gate, up = T(b + "ffn_gate_exps.weight"), T(b + "ffn_up_exps.weight")      # [E][F][D]
    E, F, D = gate.shape
    gate_up = np.empty((E, D, 2 * F), np.float32)
    gate_up[:, :, 0::2], gate_up[:, :, 1::2] = gate.transpose(0, 2, 1), up.transpose(0, 2, 1)
    gate_up_bias = np.empty((E, 2 * F), np.float32)
    gate_up_bias[:, 0::2], gate_up_bias[:, 1::2] = T(b + "ffn_gate_exps.bias"), T(b + "ffn_up_exps.bias")
    sd[p + "mlp.experts.gate_up_proj"] = gate_up
    sd[p + "mlp.experts.gate_up_proj_bias"] = gate_up_bias
    sd[p + "mlp.experts.down_proj"] = T(b + "ffn_down_exps.weight").transpose(0, 2, 1)   # [E][F][D]
    sd[p + "mlp.experts.down_proj_bias"] = T(b + "ffn_down_exps.bias")


def deepseek2_config(hp: HP, common: dict):
    """transformers' config for a deepseek2 file: DeepseekV3Config (sigmoid gating with the
    selection bias and expert groups) or DeepseekV2Config (softmax gating, top-k over all experts,
    no bias: DeepSeek-V2 / V2-Lite).  The MLA shapes and routing come from the file's keys; the
    attention is HF's naive one (every head decompressed from the latent through kv_b_proj), so
    num_key_value_heads = num_attention_heads, not the file's 1.  The rope dims of the
    checkpoints are interleaved pairs, which ggml's NORM rope (llama.cpp's for deepseek2) rotates
    as they are: V3's rope_interleave=True, V2's complex rotation of adjacent pairs.
    rope_scaling: YaRN with the file's factor / original context / betas, truncate as llama.cpp,
    and mscale = mscale_all_dim = yarn_log_multiplier / 0.1 (the file keeps only the latter;
    DeepSeek-V2/V3 have both equal, so the cos/sin factor mscale/mscale_all_dim is 1 and the
    softmax scale carries (0.1 mscale_all_dim ln(factor) + 1)^2)."""
    import transformers as tf

    y = hp.yarn
    rope_scaling = None
    if y is not None:
        m = round(y["log_mul"] / 0.1, 6)
        rope_scaling = {"type": "yarn", "rope_type": "yarn", "factor": y["factor"],
                        "original_max_position_embeddings": y["orig_ctx"], "beta_fast": y["beta_fast"],
                        "beta_slow": y["beta_slow"], "mscale": m, "mscale_all_dim": m}
    c = dict(common, num_key_value_heads=hp.n_head, intermediate_size=hp.n_ff_dense,
             moe_intermediate_size=hp.n_ff, n_routed_experts=hp.n_expert, n_shared_experts=hp.n_shared,
             kv_lora_rank=hp.kv_lora_rank, q_lora_rank=hp.q_lora_rank or None,
             qk_rope_head_dim=hp.qk_rope, qk_nope_head_dim=hp.qk_nope, v_head_dim=hp.v_head_dim,
             n_group=hp.n_group, topk_group=hp.n_group_used, first_k_dense_replace=hp.n_dense,
             norm_topk_prob=hp.norm_topk, routed_scaling_factor=hp.routed_scale,
             rope_scaling=rope_scaling, attention_bias=False, hidden_act="silu")
    if hp.gating == "sigmoid":
        return tf.DeepseekV3Config(**c, rope_interleave=True), tf.DeepseekV3ForCausalLM
    assert hp.gating == "softmax" and hp.n_group == 1, "deepseek2: softmax gating without groups only"
    return tf.DeepseekV2Config(**c, topk_method="greedy"), tf.DeepseekV2ForCausalLM


def deepseek_v2_softmax_scale(model, hp: HP) -> None:
    """transformers 4.57's DeepseekV2Attention keeps the softmax scale at qk_head_dim^-0.5 under
    YaRN; DeepSeek-V2's own modelling code (and transformers' DeepseekV3Attention, and llama.cpp)
    multiply it by mscale(factor, mscale_all_dim)^2.  Set it as they do."""
    y = hp.yarn
    if y is None or not y["log_mul"]:
        return
    m = (1.0 + y["log_mul"] * math.log(y["factor"])) if y["factor"] > 1 else 1.0
    for layer in model.model.layers:
        att = layer.self_attn
        assert abs(att.scaling - att.qk_head_dim ** -0.5) < 1e-12, "transformers changed DeepseekV2's scaling"
        att.scaling = att.qk_head_dim ** -0.5 * m * m


def deepseek2_layer(sd: dict, p: str, b: str, T, hp: HP, i: int) -> None:
    """A deepseek2 layer's GGUF tensors as DeepseekV3 / V2 parameters: attn_k_b ([H][C][nope],
    transposed by the converter) and attn_v_b ([H][v][C]) back into kv_b_proj
    ([H*(nope+v)][C], each head's nope rows then its v rows) -- the inverse of
    conversion/deepseek.py's split; nothing else is permuted."""
    a = p + "self_attn."
    sd[p + "input_layernorm.weight"] = T(b + "attn_norm.weight")
    if hp.q_lora_rank:
        sd[a + "q_a_proj.weight"] = T(b + "attn_q_a.weight")
        sd[a + "q_a_layernorm.weight"] = T(b + "attn_q_a_norm.weight")
        sd[a + "q_b_proj.weight"] = T(b + "attn_q_b.weight")
    else:
        sd[a + "q_proj.weight"] = T(b + "attn_q.weight")
    sd[a + "kv_a_proj_with_mqa.weight"] = T(b + "attn_kv_a_mqa.weight")
    sd[a + "kv_a_layernorm.weight"] = T(b + "attn_kv_a_norm.weight")
    k_b, v_b = T(b + "attn_k_b.weight"), T(b + "attn_v_b.weight")
    H, C = k_b.shape[0], k_b.shape[1]
    assert k_b.shape == (H, C, hp.qk_nope) and v_b.shape == (H, hp.v_head_dim, C)
    kv_b = np.concatenate([k_b.transpose(0, 2, 1), v_b], axis=1)          # [H][nope+v][C]
    sd[a + "kv_b_proj.weight"] = np.ascontiguousarray(kv_b.reshape(H * (hp.qk_nope + hp.v_head_dim), C))
    sd[a + "o_proj.weight"] = T(b + "attn_output.weight")
    sd[p + "post_attention_layernorm.weight"] = T(b + "ffn_norm.weight")
    ex = ("gate_proj", "up_proj", "down_proj")
    if i < hp.n_dense:
        for gk, hn in zip(("gate", "up", "down"), ex):
            sd[p + f"mlp.{hn}.weight"] = T(b + f"ffn_{gk}.weight")
        return
    sd[p + "mlp.gate.weight"] = T(b + "ffn_gate_inp.weight")
    if hp.gating == "sigmoid":
        sd[p + "mlp.gate.e_score_correction_bias"] = T(b + "exp_probs_b.bias")
    for gk, hn in zip(("gate", "up", "down"), ex):
        w = T(b + f"ffn_{gk}_exps.weight")
        for e in range(hp.n_expert):
            sd[p + f"mlp.experts.{e}.{hn}.weight"] = w[e]
        sd[p + f"mlp.shared_experts.{hn}.weight"] = T(b + f"ffn_{gk}_shexp.weight")


def build_hf(hp: HP, tensors: dict):
    import torch
    import transformers as tf

    common = dict(vocab_size=hp.n_vocab, hidden_size=hp.n_embd, num_hidden_layers=hp.n_layer,
                  num_attention_heads=hp.n_head, num_key_value_heads=hp.n_head_kv,
                  max_position_embeddings=hp.n_ctx, rms_norm_eps=hp.eps, rope_theta=hp.rope_base,
                  tie_word_embeddings=False, attn_implementation="eager", torch_dtype=torch.float32,
                  num_experts_per_tok=hp.n_expert_used, output_router_logits=False,
                  pad_token_id=None, bos_token_id=None, eos_token_id=None)
    a = hp.arch
    if a == "llama":
        cfg = tf.MixtralConfig(**common, intermediate_size=hp.n_ff, num_local_experts=hp.n_expert,
                               head_dim=hp.head_dim, sliding_window=None, router_jitter_noise=0.0)
        cls, moe, ex = tf.MixtralForCausalLM, "block_sparse_moe", ("w1", "w3", "w2")
    elif a == "qwen2moe":
        cfg = tf.Qwen2MoeConfig(**common, intermediate_size=hp.n_ff_dense, moe_intermediate_size=hp.n_ff,
                                shared_expert_intermediate_size=hp.n_ff_shexp, num_experts=hp.n_expert,
                                norm_topk_prob=False, qkv_bias=True, use_sliding_window=False,
                                sliding_window=None, decoder_sparse_step=1, mlp_only_layers=[])
        cls, moe, ex = tf.Qwen2MoeForCausalLM, "mlp", ("gate_proj", "up_proj", "down_proj")
    elif a == "qwen3moe":
        cfg = tf.Qwen3MoeConfig(**common, intermediate_size=hp.n_ff_dense, moe_intermediate_size=hp.n_ff,
                                num_experts=hp.n_expert, head_dim=hp.head_dim, norm_topk_prob=True,
                                attention_bias=False, use_sliding_window=False, sliding_window=None,
                                decoder_sparse_step=1, mlp_only_layers=[])
        cls, moe, ex = tf.Qwen3MoeForCausalLM, "mlp", ("gate_proj", "up_proj", "down_proj")
    elif a == "olmoe":
        assert hp.head_dim * hp.n_head == hp.n_embd, "HF OLMoE needs head_dim*n_head == n_embd"
        cfg = tf.OlmoeConfig(**common, intermediate_size=hp.n_ff, num_experts=hp.n_expert,
                             norm_topk_prob=False, attention_bias=False, clip_qkv=None)
        cls, moe, ex = tf.OlmoeForCausalLM, "mlp", ("gate_proj", "up_proj", "down_proj")
    elif a == "gpt-oss":
        y = hp.yarn
        # truncate=False as gpt-oss's config.json; layer_types default: even layers slide
        cfg = tf.GptOssConfig(**common, intermediate_size=hp.n_ff, num_local_experts=hp.n_expert,
                              head_dim=hp.head_dim, sliding_window=hp.n_swa,
                              rope_scaling=dict(rope_type="yarn", factor=y["factor"],
                                                beta_fast=y["beta_fast"], beta_slow=y["beta_slow"],
                                                truncate=False,
                                                original_max_position_embeddings=y["orig_ctx"]))
        cls, moe, ex = tf.GptOssForCausalLM, "mlp", None
    elif a == "glm4moe":
        cfg = tf.Glm4MoeConfig(**common, intermediate_size=hp.n_ff_dense, moe_intermediate_size=hp.n_ff,
                               n_routed_experts=hp.n_expert, n_shared_experts=1, head_dim=hp.head_dim,
                               partial_rotary_factor=hp.n_rot / hp.head_dim, attention_bias=True,
                               use_qk_norm="blk.0.attn_q_norm.weight" in tensors,
                               first_k_dense_replace=hp.n_dense, n_group=1, topk_group=1,
                               norm_topk_prob=hp.norm_topk, routed_scaling_factor=hp.routed_scale)
        cls, moe, ex = tf.Glm4MoeForCausalLM, "mlp", ("gate_proj", "up_proj", "down_proj")
    elif a == "deepseek2":
        cfg, cls = deepseek2_config(hp, common)
        moe, ex = "mlp", ("gate_proj", "up_proj", "down_proj")
    else:
        raise SystemExit(f"unsupported arch {a}")
    cfg._attn_implementation = "eager"

    torch.manual_seed(0)
    model = cls(cfg).to(torch.float32).eval()

    used = set()

    def T(name):
        used.add(name)
        return tensors[name]

    sd = {"model.embed_tokens.weight": T("token_embd.weight"),
          "model.norm.weight": T("output_norm.weight"),
          "lm_head.weight": T("output.weight")}
    for i in range(hp.n_layer):
        b, p = f"blk.{i}.", f"model.layers.{i}."
        if a == "deepseek2":
            deepseek2_layer(sd, p, b, T, hp, i)
            continue
        q, k = T(b + "attn_q.weight"), T(b + "attn_k.weight")
        if a == "llama":
            q, k = unpermute(q, hp.n_head), unpermute(k, hp.n_head_kv)
        sd[p + "self_attn.q_proj.weight"] = q
        sd[p + "self_attn.k_proj.weight"] = k
        sd[p + "self_attn.v_proj.weight"] = T(b + "attn_v.weight")
        sd[p + "self_attn.o_proj.weight"] = T(b + "attn_output.weight")
        if a == "qwen2moe":
            for n in "qkv":
                sd[p + f"self_attn.{n}_proj.bias"] = T(b + f"attn_{n}.bias")
        if a == "glm4moe":
            for n in "qkv":
                sd[p + f"self_attn.{n}_proj.bias"] = T(b + f"attn_{n}.bias")
        if a in ("qwen3moe", "olmoe") or (a == "glm4moe" and b + "attn_q_norm.weight" in tensors):
            sd[p + "self_attn.q_norm.weight"] = T(b + "attn_q_norm.weight")
            sd[p + "self_attn.k_norm.weight"] = T(b + "attn_k_norm.weight")
        sd[p + "input_layernorm.weight"] = T(b + "attn_norm.weight")
        if a == "gpt-oss":
            gpt_oss_layer(sd, p, b, T)
            continue
        if a == "glm4moe":
            sd[p + "post_attention_layernorm.weight"] = T(b + "post_attention_norm.weight")
            if i < hp.n_dense:
                for gk, hn in zip(("gate", "up", "down"), ex):
                    sd[p + f"mlp.{hn}.weight"] = T(b + f"ffn_{gk}.weight")
                continue
            sd[p + "mlp.gate.e_score_correction_bias"] = T(b + "exp_probs_b.bias")
            for gk, hn in zip(("gate", "up", "down"), ex):
                sd[p + f"mlp.shared_experts.{hn}.weight"] = T(b + f"ffn_{gk}_shexp.weight")
        else:
            sd[p + "post_attention_layernorm.weight"] = T(b + "ffn_norm.weight")
        sd[p + f"{moe}.gate.weight"] = T(b + "ffn_gate_inp.weight")
        stacked = b + "ffn_gate_exps.weight" in tensors
        for e in range(hp.n_expert):
            for gk, hn in zip(("gate", "up", "down"), ex):
                if stacked:
                    w = T(b + f"ffn_{gk}_exps.weight")[e]
                else:
                    w = T(b + f"ffn_{gk}.{e}.weight")
                sd[p + f"{moe}.experts.{e}.{hn}.weight"] = w
        if a == "qwen2moe":
            sd[p + "mlp.shared_expert.gate_proj.weight"] = T(b + "ffn_gate_shexp.weight")
            sd[p + "mlp.shared_expert.up_proj.weight"] = T(b + "ffn_up_shexp.weight")
            sd[p + "mlp.shared_expert.down_proj.weight"] = T(b + "ffn_down_shexp.weight")
            sd[p + "mlp.shared_expert_gate.weight"] = T(b + "ffn_gate_inp_shexp.weight")[None, :]
    # the MTP layers' blocks (glm4moe) are in the file but not in the model: never run
    mtp = {n for n in tensors if n.startswith("blk.") and int(n.split(".")[1]) >= hp.n_layer}
    unused = set(tensors) - used - mtp
    assert not unused, f"GGUF tensors not consumed: {sorted(unused)}"
    sdt = {k: torch.from_numpy(np.array(v, dtype=np.float32)) for k, v in sd.items()}
    params = dict(model.named_parameters())
    buffers = dict(model.named_buffers())
    for k, v in sdt.items():
        assert k in params or k in buffers, f"unexpected HF parameter {k}"
        hf = params[k] if k in params else buffers[k]
        assert tuple(hf.shape) == tuple(v.shape), f"{k}: HF {tuple(hf.shape)} vs GGUF {tuple(v.shape)}"
    missing = set(params) - set(sdt)
    assert not missing, f"HF parameters left unset (random!): {sorted(missing)}"
    for k in buffers:   # Glm4MoeTopkRouter's e_score_correction_bias is a buffer
        if k.endswith("e_score_correction_bias"):
            assert k in sdt, f"HF buffer left unset: {k}"
    res = model.load_state_dict(sdt, strict=False)
    assert not res.unexpected_keys, res.unexpected_keys
    assert all(k in buffers for k in res.missing_keys), res.missing_keys
    assert not res.missing_keys and not res.unexpected_keys
    if a == "deepseek2" and cls.__name__ == "DeepseekV2ForCausalLM":
        deepseek_v2_softmax_scale(model, hp)
    return model, moe


# --------------------------------------------------------------------------------------
# Independent numpy forward (llama.cpp math on the raw GGUF weights)
# --------------------------------------------------------------------------------------
def np_forward_gpt_oss(hp: HP, W: dict, tokens: list[int]) -> np.ndarray:
    """gpt-oss's last-position logits in float64 numpy, written from the model's description
    (llama.cpp's gpt-oss graph): YaRN NEOX RoPE, sinks, even layers in a sliding window,
    biases everywhere, top-k then softmax routing, the clamped SwiGLU."""
    D, H, Hk, hd, T = hp.n_embd, hp.n_head, hp.n_head_kv, hp.head_dim, len(tokens)
    f = lambda n: W[n].astype(np.float64)  # noqa: E731

    def rms(x, w):
        return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + hp.eps) * w

    y, base = hp.yarn, hp.rope_base
    i = np.arange(hd // 2, dtype=np.float64)
    extra = base ** (-2 * i / hd)
    corr = lambda rot: hd * math.log(y["orig_ctx"] / (rot * 2 * math.pi)) / (2 * math.log(base))  # noqa: E731
    low, high = max(corr(y["beta_fast"]), 0.0), min(corr(y["beta_slow"]), hd - 1.0)
    ramp = np.clip((i - low) / (high - low), 0, 1)
    inv = extra / y["factor"] * ramp + extra * (1 - ramp)
    mscale = 0.1 * math.log(y["factor"]) + 1
    ang = np.arange(T)[:, None] * inv[None, :]
    cos, sin = (np.cos(ang) * mscale)[:, None, :], (np.sin(ang) * mscale)[:, None, :]

    def rope(x):
        x0, x1 = x[..., :hd // 2], x[..., hd // 2:]
        return np.concatenate([x0 * cos - x1 * sin, x0 * sin + x1 * cos], axis=-1)

    x = f("token_embd.weight")[tokens]
    qi, ki = np.arange(T)[:, None], np.arange(T)[None, :]
    for il in range(hp.n_layer):
        b = f"blk.{il}."
        h = rms(x, f(b + "attn_norm.weight"))
        q = (h @ f(b + "attn_q.weight").T + f(b + "attn_q.bias")).reshape(T, H, hd)
        k = (h @ f(b + "attn_k.weight").T + f(b + "attn_k.bias")).reshape(T, Hk, hd)
        v = (h @ f(b + "attn_v.weight").T + f(b + "attn_v.bias")).reshape(T, Hk, hd)
        q, k = rope(q), rope(k)
        k, v = np.repeat(k, H // Hk, axis=1), np.repeat(v, H // Hk, axis=1)
        allowed = ki <= qi
        if il % 2 == 0:
            allowed &= ki > qi - hp.n_swa
        sc = np.einsum("thd,uhd->htu", q, k) / math.sqrt(hd)
        sc = np.where(allowed[None], sc, -np.inf)
        sink = f(b + "attn_sinks.weight")[:, None, None]
        m = np.maximum(sc.max(-1, keepdims=True), sink)
        e = np.exp(sc - m)
        pr = e / (e.sum(-1, keepdims=True) + np.exp(sink - m))
        o = np.einsum("htu,uhd->thd", pr, v).reshape(T, H * hd)
        x = x + o @ f(b + "attn_output.weight").T + f(b + "attn_output.bias")
        h = rms(x, f(b + "post_attention_norm.weight"))
        logits = h @ f(b + "ffn_gate_inp.weight").T + f(b + "ffn_gate_inp.bias")
        out = np.zeros_like(x)
        for t in range(T):
            sel = np.argsort(-logits[t], kind="stable")[:hp.n_expert_used]
            w = np.exp(logits[t, sel] - logits[t, sel].max())
            w /= w.sum()
            for e_, we in zip(sel, w):
                g = f(b + "ffn_gate_exps.weight")[e_] @ h[t] + f(b + "ffn_gate_exps.bias")[e_]
                u = f(b + "ffn_up_exps.weight")[e_] @ h[t] + f(b + "ffn_up_exps.bias")[e_]
                g, u = np.minimum(g, 7.0), np.clip(u, -7.0, 7.0)
                act = (u + 1) * g / (1 + np.exp(-1.702 * g))
                out[t] += we * (f(b + "ffn_down_exps.weight")[e_] @ act + f(b + "ffn_down_exps.bias")[e_])
        x = x + out
    x = rms(x, f("output_norm.weight"))
    return x[-1] @ f("output.weight").T


def np_forward_deepseek2(hp: HP, W: dict, tokens: list[int]) -> np.ndarray:
    """deepseek2's last-position logits in float64 numpy, from llama.cpp's description (its
    deepseek2 graph) in the naive form: the latent c = RMSnorm(x Wkv_a[:kv_lora]) decompressed
    per head through attn_k_b / attn_v_b (k_nope[h] = c k_b[h], v[h] = c v_b[h]^T), the rope key
    x Wkv_a[kv_lora:] shared by every head, NORM rope (adjacent pairs) with YaRN on the qk_rope
    dims, softmax scale (1 + yarn_log_multiplier ln factor)^2 / sqrt(qk_nope + qk_rope); routing
    by sigmoid + exp_probs_b within the best expert groups (the others at -inf) weighted by the
    sigmoid, or softmax top-k; optional normalisation, then expert_weights_scale; shared experts."""
    D, H, T = hp.n_embd, hp.n_head, len(tokens)
    C, R, N, V = hp.kv_lora_rank, hp.qk_rope, hp.qk_nope, hp.v_head_dim
    f = lambda n: W[n].astype(np.float64)  # noqa: E731

    def rms(x, w):
        return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + hp.eps) * w

    i = np.arange(R // 2, dtype=np.float64)
    inv = hp.rope_base ** (-2 * i / R)
    scale = 1.0 / math.sqrt(N + R)
    y = hp.yarn
    if y is not None and y["factor"] > 1:
        corr = lambda rot: R * math.log(y["orig_ctx"] / (rot * 2 * math.pi)) / (2 * math.log(hp.rope_base))  # noqa: E731
        low, high = max(math.floor(corr(y["beta_fast"])), 0), min(math.ceil(corr(y["beta_slow"])), R - 1)
        ramp = np.clip((i - low) / max(high - low, 0.001), 0, 1)
        inv = inv / y["factor"] * ramp + inv * (1 - ramp)
        scale *= (1 + y["log_mul"] * math.log(y["factor"])) ** 2
    ang = np.arange(T)[:, None] * inv[None, :]
    cos, sin = np.cos(ang), np.sin(ang)            # T, R/2

    def rope(x):   # x: T, ..., R; NORM: pairs (2i, 2i+1)
        c = cos.reshape(T, *([1] * (x.ndim - 2)), R // 2)
        s_ = sin.reshape(T, *([1] * (x.ndim - 2)), R // 2)
        out = x.copy()
        out[..., 0::2] = x[..., 0::2] * c - x[..., 1::2] * s_
        out[..., 1::2] = x[..., 0::2] * s_ + x[..., 1::2] * c
        return out

    silu = lambda z: z / (1 + np.exp(-z))  # noqa: E731
    x = f("token_embd.weight")[tokens]
    mask = np.triu(np.full((T, T), -np.inf), 1)
    for il in range(hp.n_layer):
        b = f"blk.{il}."
        h = rms(x, f(b + "attn_norm.weight"))
        if hp.q_lora_rank:
            q = rms(h @ f(b + "attn_q_a.weight").T, f(b + "attn_q_a_norm.weight")) @ f(b + "attn_q_b.weight").T
        else:
            q = h @ f(b + "attn_q.weight").T
        q = q.reshape(T, H, N + R)
        q_nope, q_pe = q[..., :N], rope(q[..., N:])
        kv = h @ f(b + "attn_kv_a_mqa.weight").T
        c = rms(kv[:, :C], f(b + "attn_kv_a_norm.weight"))
        k_pe = rope(kv[:, C:])                                              # T, R (one for all heads)
        k_nope = np.einsum("tc,hcn->thn", c, f(b + "attn_k_b.weight"))     # k_b: H, C, N
        v = np.einsum("tc,hvc->thv", c, f(b + "attn_v_b.weight"))          # v_b: H, V, C
        sc = (np.einsum("thn,uhn->htu", q_nope, k_nope) + np.einsum("thr,ur->htu", q_pe, k_pe)) * scale + mask
        sc = np.exp(sc - sc.max(-1, keepdims=True))
        sc /= sc.sum(-1, keepdims=True)
        o = np.einsum("htu,uhv->thv", sc, v).reshape(T, H * V)
        x = x + o @ f(b + "attn_output.weight").T
        h = rms(x, f(b + "ffn_norm.weight"))
        if il < hp.n_dense:
            x = x + (silu(h @ f(b + "ffn_gate.weight").T) * (h @ f(b + "ffn_up.weight").T)) @ f(b + "ffn_down.weight").T
            continue
        logits = h @ f(b + "ffn_gate_inp.weight").T
        if hp.gating == "sigmoid":
            prob = 1 / (1 + np.exp(-logits))
            choice = prob + f(b + "exp_probs_b.bias")
        else:
            prob = np.exp(logits - logits.max(-1, keepdims=True))
            prob /= prob.sum(-1, keepdims=True)
            choice = prob.copy()
        G = hp.n_group
        if G > 1:
            cg = choice.reshape(T, G, -1)
            gscore = np.sort(cg, axis=-1)[..., -2:].sum(-1)
            keep = np.argsort(-gscore, axis=-1, kind="stable")[:, :hp.n_group_used]
            m = np.full((T, G), -np.inf)
            np.put_along_axis(m, keep, 0.0, axis=-1)
            choice = (cg + m[..., None]).reshape(T, -1)
        out = np.zeros_like(x)
        for t in range(T):
            sel = np.argsort(-choice[t], kind="stable")[:hp.n_expert_used]
            w = prob[t, sel]
            if hp.norm_topk:
                w = w / max(w.sum(), 6.103515625e-5)
            w = w * hp.routed_scale
            for e, we in zip(sel, w):
                g_ = W[b + "ffn_gate_exps.weight"][e].astype(np.float64) @ h[t]
                u_ = W[b + "ffn_up_exps.weight"][e].astype(np.float64) @ h[t]
                out[t] += we * (W[b + "ffn_down_exps.weight"][e].astype(np.float64) @ (silu(g_) * u_))
        sh = (silu(h @ f(b + "ffn_gate_shexp.weight").T) * (h @ f(b + "ffn_up_shexp.weight").T)) @ \
            f(b + "ffn_down_shexp.weight").T
        x = x + out + sh
    x = rms(x, f("output_norm.weight"))
    return x[-1] @ f("output.weight").T


def np_forward(hp: HP, W: dict, tokens: list[int]) -> np.ndarray:
    """Last-position logits, float64 numpy, no HF code involved."""
    if hp.arch == "gpt-oss":
        return np_forward_gpt_oss(hp, W, tokens)
    if hp.arch == "deepseek2":
        return np_forward_deepseek2(hp, W, tokens)
    a, D, H, Hk, hd = hp.arch, hp.n_embd, hp.n_head, hp.n_head_kv, hp.head_dim
    T = len(tokens)
    f = lambda n: W[n].astype(np.float64)  # noqa: E731

    def rms(x, w):
        return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + hp.eps) * w

    pos = np.arange(T)[:, None]
    inv = hp.rope_base ** (-np.arange(0, hd, 2) / hd)           # hd/2
    ang = pos * inv[None, :]                                      # T, hd/2
    cos, sin = np.cos(ang)[:, None, :], np.sin(ang)[:, None, :]   # T,1,hd/2

    def rope(x):  # x: T, nh, hd
        y = x.copy()
        if a == "llama":   # NORM: adjacent pairs
            x0, x1 = x[..., 0::2], x[..., 1::2]
            y[..., 0::2] = x0 * cos - x1 * sin
            y[..., 1::2] = x0 * sin + x1 * cos
        else:              # NEOX: halves
            x0, x1 = x[..., :hd // 2], x[..., hd // 2:]
            y[..., :hd // 2] = x0 * cos - x1 * sin
            y[..., hd // 2:] = x0 * sin + x1 * cos
        return y

    silu = lambda z: z / (1 + np.exp(-z))  # noqa: E731
    x = f("token_embd.weight")[tokens]
    mask = np.triu(np.full((T, T), -np.inf), 1)
    for i in range(hp.n_layer):
        b = f"blk.{i}."
        h = rms(x, f(b + "attn_norm.weight"))
        q, k, v = h @ f(b + "attn_q.weight").T, h @ f(b + "attn_k.weight").T, h @ f(b + "attn_v.weight").T
        if a == "qwen2moe":
            q, k, v = q + f(b + "attn_q.bias"), k + f(b + "attn_k.bias"), v + f(b + "attn_v.bias")
        if a == "olmoe":
            q, k = rms(q, f(b + "attn_q_norm.weight")), rms(k, f(b + "attn_k_norm.weight"))
        q, k, v = q.reshape(T, H, hd), k.reshape(T, Hk, hd), v.reshape(T, Hk, hd)
        if a == "qwen3moe":
            q, k = rms(q, f(b + "attn_q_norm.weight")), rms(k, f(b + "attn_k_norm.weight"))
        q, k = rope(q), rope(k)
        g = H // Hk
        k, v = np.repeat(k, g, axis=1), np.repeat(v, g, axis=1)
        s = np.einsum("thd,uhd->htu", q, k) / math.sqrt(hd) + mask
        s = np.exp(s - s.max(-1, keepdims=True))
        s /= s.sum(-1, keepdims=True)
        o = np.einsum("htu,uhd->thd", s, v).reshape(T, H * hd)
        x = x + o @ f(b + "attn_output.weight").T
        h = rms(x, f(b + "ffn_norm.weight"))
        logits = h @ f(b + "ffn_gate_inp.weight").T
        p = np.exp(logits - logits.max(-1, keepdims=True))
        p /= p.sum(-1, keepdims=True)
        out = np.zeros_like(x)
        for t in range(T):
            sel = np.argsort(-p[t], kind="stable")[:hp.n_expert_used]
            w = p[t, sel]
            if a in ("llama", "qwen3moe"):
                w = w / max(w.sum(), 6.103515625e-5)
            for e, we in zip(sel, w):
                if b + "ffn_gate_exps.weight" in W:
                    wg, wu, wd = W[b + "ffn_gate_exps.weight"][e], W[b + "ffn_up_exps.weight"][e], \
                        W[b + "ffn_down_exps.weight"][e]
                else:
                    wg, wu, wd = W[b + f"ffn_gate.{e}.weight"], W[b + f"ffn_up.{e}.weight"], W[b + f"ffn_down.{e}.weight"]
                out[t] += we * (wd.astype(np.float64) @ (silu(wg.astype(np.float64) @ h[t]) * (wu.astype(np.float64) @ h[t])))
        if a == "qwen2moe":
            gsh = 1 / (1 + np.exp(-(h @ f(b + "ffn_gate_inp_shexp.weight"))))
            sh = (silu(h @ f(b + "ffn_gate_shexp.weight").T) * (h @ f(b + "ffn_up_shexp.weight").T)) @ \
                f(b + "ffn_down_shexp.weight").T
            out += gsh[:, None] * sh
        x = x + out
    x = rms(x, f("output_norm.weight"))
    return x[-1] @ f("output.weight").T


# --------------------------------------------------------------------------------------
# Golden computation
# --------------------------------------------------------------------------------------
def sha256_file(path: str) -> str:
    return gen_model.sha256_file(path)


def fmt_floats(v) -> str:
    return "[" + ",".join("%.9g" % float(x) for x in v) + "]"


def deepseek_v3_choice_hook(router_logits: list, group_gaps: list):
    """A forward hook on DeepseekV3TopkRouter recording what decides its choice: the choice
    scores sigmoid(logits) + e_score_correction_bias with the experts of the groups left out at
    -inf (llama.cpp's masking; transformers masks with 0, the same choice while every score is
    positive, which is checked), and each token's gap between the last kept and the first dropped
    group score (sum of a group's two best choice scores)."""
    import torch

    def hook(m, i, o):
        x = i[0].reshape(-1, m.config.hidden_size).float()
        choice = torch.nn.functional.linear(x, m.weight.float()).sigmoid() + m.e_score_correction_bias
        assert bool((choice > 0).all()), "a choice score <= 0: transformers' 0-masking of groups differs"
        G, X = m.n_group, m.n_routed_experts
        if G > 1:
            gs = choice.view(-1, G, X // G).topk(2, dim=-1).values.sum(-1)
            srt = torch.sort(gs.double(), dim=-1, descending=True).values
            if m.topk_group < G:
                group_gaps.append(float((srt[:, m.topk_group - 1] - srt[:, m.topk_group]).min()))
            keep = torch.zeros_like(gs, dtype=torch.bool)
            keep.scatter_(1, gs.topk(m.topk_group, dim=-1).indices, True)
            choice = choice.masked_fill(~keep.repeat_interleave(X // G, dim=1), float("-inf"))
        # the experts transformers chose (its output: ids, weights) are the k best masked scores
        assert torch.equal(torch.sort(o[0], -1).values, torch.sort(choice.topk(m.top_k, -1).indices, -1).values)
        router_logits.append(choice.detach().clone())
    return hook


def golden_for(arch: str, typ: str, seed: int, workdir: str, selfcheck: bool, out_dir: str, preset: str = "tiny"):
    import torch
    import transformers

    torch.set_grad_enabled(False)
    gen_args = ["--arch", arch, "--preset", preset, "--type", typ, "--seed", str(seed)]
    path = os.path.join(workdir, f"{arch}-{preset}-{typ}.gguf")
    gen_model.main(gen_args + ["-o", path])
    sha = sha256_file(path)
    meta, W = read_gguf(path)
    os.remove(path)
    hp = HP(meta)
    model, moe = build_hf(hp, W)

    # Router logits of every layer are captured so that prompts whose routing has a near-tie
    # (gap between the k-th and (k+1)-th router logit < ROUTER_GAP) are rejected: a C
    # implementation with a different rounding must pick the same experts.  Likewise greedy
    # continuations need a top-1/top-2 logit gap >= GREEDY_GAP at every step.
    router_logits, group_gaps = [], []
    if arch == "deepseek2" and hp.gating == "sigmoid":
        hooks = [layer.mlp.gate.register_forward_hook(deepseek_v3_choice_hook(router_logits, group_gaps))
                 for layer in model.model.layers if hasattr(layer.mlp, "gate")]
    elif arch == "deepseek2":   # DeepseekV2MoEGate returns (ids, weights): recompute the logits
        hooks = [layer.mlp.gate.register_forward_hook(
            lambda m, i, o: router_logits.append(
                torch.nn.functional.linear(i[0].reshape(-1, m.gating_dim).float(), m.weight.float()).detach().clone()))
            for layer in model.model.layers if hasattr(layer.mlp, "gate")]
    elif arch == "gpt-oss":   # its router returns the top-k scores: recompute the logits
        hooks = [layer.mlp.router.register_forward_hook(
            lambda m, i, o: router_logits.append(
                torch.nn.functional.linear(i[0].reshape(-1, m.hidden_dim), m.weight, m.bias).detach().clone()))
            for layer in model.model.layers]
    elif arch == "glm4moe":   # its router returns (ids, weights): the choice scores decide
        hooks = [layer.mlp.gate.register_forward_hook(
            lambda m, i, o: router_logits.append(
                (torch.nn.functional.linear(i[0].reshape(-1, m.config.hidden_size), m.weight).sigmoid()
                 + m.e_score_correction_bias).detach().clone()))
            for layer in model.model.layers if hasattr(layer.mlp, "gate")]
    else:
        hooks = [getattr(layer, moe).gate.register_forward_hook(lambda m, i, o: router_logits.append(o.detach().clone()))
                 for layer in model.model.layers]
    k = hp.n_expert_used
    min_gap = ARCH_ROUTER_GAP.get(arch, ROUTER_GAP)
    if arch == "deepseek2" and hp.gating == "sigmoid":
        min_gap = SIGMOID_CHOICE_GAP

    def router_gap():
        """The smallest margin of any routing decision (group gaps count half: a group's score
        is the sum of two choice scores)."""
        g = float("inf")
        for rl in router_logits:
            if k < hp.n_expert:
                srt = torch.sort(rl.double(), dim=-1, descending=True).values
                g = min(g, float((srt[:, k - 1] - srt[:, k]).min()))
        for gg in group_gaps:
            g = min(g, gg / 2)
        return g

    def clear_routing():
        router_logits.clear()
        group_gaps.clear()

    experts_seen = set()
    normal = np.array([i for i, t in enumerate(hp.token_types) if t == int(TokenType.NORMAL)])
    rng = np.random.default_rng(PROMPT_SEED)
    res_prompts, stats, tries = [], {}, 0
    max_abs_logit, min_router_gap = 0.0, float("inf")
    for n in PROMPT_LENGTHS:
        while True:
            tries += 1
            assert tries < MAX_TRIES.get(arch, (2000, 4000))[0], "could not find prompts without routing near-ties"
            toks = [int(x) for x in rng.choice(normal, size=n)]
            clear_routing()
            lg = model(input_ids=torch.tensor([toks])).logits[0, -1].float().numpy()
            gap = router_gap()
            if gap >= min_gap:
                break
        min_router_gap = min(min_router_gap, gap)
        for rl in router_logits:
            experts_seen |= set(torch.topk(rl, k, dim=-1).indices.flatten().tolist())
        max_abs_logit = max(max_abs_logit, float(np.abs(lg).max()))
        res_prompts.append((toks, lg))
        if selfcheck and arch != "glm4moe":   # the numpy forward has no glm4moe path
            ref = np_forward(hp, W, toks)
            d = float(np.abs(ref - lg).max())
            stats["selfcheck_max_abs_diff"] = max(stats.get("selfcheck_max_abs_diff", 0.0), d)
            assert d < 1e-3, f"{arch}/{typ}: numpy forward differs from HF by {d}"

    # greedy decoding with the HF KV cache
    while True:
        tries += 1
        assert tries < MAX_TRIES.get(arch, (2000, 4000))[1], "could not find a greedy prompt without near-ties"
        gprompt = [int(x) for x in rng.choice(normal, size=GREEDY_PROMPT_LEN)]
        clear_routing()
        ids = torch.tensor([gprompt], dtype=torch.long)
        out = model(input_ids=ids, use_cache=True)
        past, gen, min_top_gap = out.past_key_values, [], float("inf")
        lg = out.logits[0, -1]
        for _ in range(N_GREEDY):
            top2 = torch.topk(lg, 2).values
            min_top_gap = min(min_top_gap, float(top2[0] - top2[1]))
            nxt = int(torch.argmax(lg))
            gen.append(nxt)
            out = model(input_ids=torch.tensor([[nxt]]), past_key_values=past, use_cache=True)
            past, lg = out.past_key_values, out.logits[0, -1]
        gap = router_gap()
        if gap >= min_gap and min_top_gap >= GREEDY_GAP:
            break
    min_router_gap = min(min_router_gap, gap)
    for h in hooks:
        h.remove()
    # cross-check against generate()
    g2 = model.generate(ids, max_new_tokens=N_GREEDY, min_new_tokens=N_GREEDY, do_sample=False,
                        pad_token_id=0)[0, len(gprompt):].tolist()
    assert g2 == gen, f"manual greedy {gen} != generate {g2}"
    # and against one uncached forward over the whole sequence (the KV cache's sliding-window
    # layers included)
    full = model(input_ids=torch.tensor([gprompt + gen])).logits[0]
    g3 = [int(torch.argmax(full[len(gprompt) - 1 + j])) for j in range(N_GREEDY)]
    assert g3 == gen, f"cached greedy {gen} != uncached argmax {g3}"

    ref = f"transformers {transformers.__version__} / torch {torch.__version__.split('+')[0]}"
    regen = (f".venv-golden/bin/python tools/golden.py --arch {arch} "
             + (f"--preset {preset} " if preset != "tiny" else "")
             + f"--type {typ} --seed {seed} --out {shlex.quote(out_dir)}")
    parts = [
        '{"arch": %s' % json.dumps(arch),
        '"type": %s' % json.dumps(typ),
        '"generator_args": %s' % json.dumps(gen_args),
        '"model_sha256": %s' % json.dumps(sha),
        '"n_vocab": %d' % hp.n_vocab,
        '"prompts": [\n' + ",\n".join('  {"tokens": %s,\n   "logits": %s}' % (json.dumps(t), fmt_floats(lg_))
                                      for t, lg_ in res_prompts) + "\n]",
        '"greedy": {"prompt": %s, "n_new": %d, "tokens": %s}' % (json.dumps(gprompt), N_GREEDY, json.dumps(gen)),
        '"reference": %s' % json.dumps(ref),
        '"regenerate": %s}' % json.dumps(regen),
    ]
    text = ",\n".join(parts) + "\n"
    json.loads(text)  # well-formed
    stats.update(max_abs_logit=max_abs_logit, min_router_gap=min_router_gap, tries=tries, experts_used=len(experts_seen),
                 n_expert=hp.n_expert, min_greedy_top2_gap=min_top_gap, greedy=gen)
    return text, stats


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="HF-transformers golden outputs for the tiny test models")
    ap.add_argument("--all", action="store_true",
                    help="all %d archs x the default types (%s; gpt-oss: %s; glm4moe, deepseek2: %s) and "
                    "deepseek2's tiny-lite (%s)"
                    % (len(ARCHS), ", ".join(TYPES), ", ".join(PLAIN_TYPES + ARCH_QUANT_TYPES["gpt-oss"]),
                       ", ".join(PLAIN_TYPES + ARCH_QUANT_TYPES["glm4moe"]),
                       ", ".join(EXTRA_PRESETS["deepseek2"]["tiny-lite"])))
    ap.add_argument("--quant", action="store_true", help="only the quantised default types (%s)" % ", ".join(QUANT_TYPES))
    ap.add_argument("--arch", choices=ARCHS, action="append")
    ap.add_argument("--preset", choices=("tiny", "tiny-lite"),
                    help="the model preset (tiny-lite: deepseek2 only); default tiny with --type, "
                    "else every preset that has goldens")
    ap.add_argument("--type", choices=tuple(gen_model.TYPES), action="append",
                    help="any gen_model.py --type (default: all of --all's)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", default="tests/data/golden")
    ap.add_argument("--selfcheck", action="store_true",
                    help="also run the independent numpy forward and compare with HF")
    args = ap.parse_args(argv)
    archs = ARCHS if args.all or not args.arch else args.arch
    if args.preset == "tiny-lite" and any(a != "deepseek2" for a in archs):
        ap.error("--preset tiny-lite is deepseek2's")
    os.makedirs(args.out, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="moeserve-golden-") as tmp:
        for arch in archs:
            presets = {"tiny": PLAIN_TYPES + ARCH_QUANT_TYPES.get(arch, QUANT_TYPES), **EXTRA_PRESETS.get(arch, {})}
            if args.preset or (args.type and not args.all and not args.quant):
                presets = {args.preset or "tiny": presets[args.preset or "tiny"]}
            for preset, default_types in presets.items():
                types = [t for t in default_types if t not in PLAIN_TYPES] if args.quant else \
                    default_types if args.all or not args.type else args.type
                for typ in types:
                    run_one(arch, preset, typ, args, tmp)
    return 0


def run_one(arch: str, preset: str, typ: str, args, tmp: str) -> None:
    text, st = golden_for(arch, typ, args.seed, tmp, args.selfcheck, args.out, preset)
    fn = os.path.join(args.out, f"{arch}-{preset}-{typ}.json")
    with open(fn, "w") as f:
        f.write(text)
    print(f"{fn}: {len(text)} bytes; max|logit| {st['max_abs_logit']:.3g}; "
          f"min router logit gap {st['min_router_gap']:.3g} ({st['tries']} tries); experts used {st['experts_used']}/{st['n_expert']}; "
          f"min greedy top-2 gap {st['min_greedy_top2_gap']:.3g}"
          + (f"; numpy-vs-HF max|d| {st['selfcheck_max_abs_diff']:.3g}" if "selfcheck_max_abs_diff" in st else "")
          + f"; greedy {st['greedy'][:12]}...", flush=True)


if __name__ == "__main__":
    sys.exit(main())
