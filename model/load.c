/*
 * Binding a GGUF file to a model: hyper-parameters from the metadata, tensors by name.
 *
 * Each architecture is a row of one table (rope layout, Q/K norm, routing, shared expert,
 * gpt-oss's sinks, sliding windows and clamped SwiGLU), because the MoE families differ in a
 * handful of switches, not in structure.  Biases (attention, router, experts) are bound
 * wherever a file has them, all or none of a kind.  Every tensor is checked for shape and type
 * here, once, so that the forward pass can trust them; a file we cannot run is refused with the
 * name of the key or tensor at fault.
 */
#include "model/model_internal.h"

#include "kernels/cpu/cpu.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct arch_info {
    const char *name;
    model_arch arch;
    kern_rope_mode rope_mode;
    model_qk_norm qk_norm;
    bool norm_topk;
    bool shared_expert;
    bool ff_key_is_expert; /* n_ff_exp lives in expert_feed_forward_length */
    kern_gating gating;
    kern_glu glu;
    const char *ffn_norm;  /* the pre-MoE norm's tensor (blk.N.<name>.weight) */
    bool sinks_and_biases; /* attention sinks and expert biases required (gpt-oss) */
    int32_t swa_pattern;   /* see model_hparams; the key attention.sliding_window required */
    bool yarn_truncate;    /* transformers' rope_scaling truncate for this family's YaRN */
    /* DeepSeek-V3's MoE as GLM-4.5 has it: leading dense layers, MTP layers at the end, the
     * routing normalisation from expert_weights_norm, the expert-selection bias exp_probs_b,
     * router groups, an ungated shared expert of expert_shared_count experts' width, and
     * optional Q/K norms */
    bool deepseek_moe;
} arch_info;

/* Routing normalisation and rope layout as llama.cpp's graphs hard-code them (REFERENCE 3.3,
 * 3.4); the GGUF key expert_weights_norm is not consulted for these architectures.  gpt-oss
 * as transformers' modeling_gpt_oss.py computes it (docs/architecture.md): top-k then softmax,
 * every even layer a sliding window, YaRN with an untruncated correction range.  glm4moe as
 * transformers' modeling_glm4_moe.py computes it: sigmoid scores chosen with the selection bias,
 * partial NEOX rotary (rope.dimension_count < head size), post_attention_norm before the FFN.
 * deepseek2 as transformers' modeling_deepseek_v3.py computes it: the same MoE (softmax when
 * the file names no gating function, as DeepSeek-V2's files), latent attention with NORM
 * (interleaved-pair) rotary on the decoupled key. */
static const arch_info arch_table[MODEL_ARCH_COUNT] = {
    {"llama", MODEL_ARCH_LLAMA, KERN_ROPE_NORM, MODEL_QK_NORM_NONE, true, false, false,
     KERN_GATING_SOFTMAX, KERN_GLU_SILU, "ffn_norm", false, 0, true, false},
    {"qwen2moe", MODEL_ARCH_QWEN2MOE, KERN_ROPE_NEOX, MODEL_QK_NORM_NONE, false, true, true,
     KERN_GATING_SOFTMAX, KERN_GLU_SILU, "ffn_norm", false, 0, true, false},
    {"qwen3moe", MODEL_ARCH_QWEN3MOE, KERN_ROPE_NEOX, MODEL_QK_NORM_PER_HEAD, true, false, true,
     KERN_GATING_SOFTMAX, KERN_GLU_SILU, "ffn_norm", false, 0, true, false},
    {"olmoe", MODEL_ARCH_OLMOE, KERN_ROPE_NEOX, MODEL_QK_NORM_FULL, false, false, false,
     KERN_GATING_SOFTMAX, KERN_GLU_SILU, "ffn_norm", false, 0, true, false},
    {"gpt-oss", MODEL_ARCH_GPT_OSS, KERN_ROPE_NEOX, MODEL_QK_NORM_NONE, false, false, true,
     KERN_GATING_TOPK_SOFTMAX, KERN_GLU_SWIGLU_OAI, "post_attention_norm", true, 2, false, false},
    {"glm4moe", MODEL_ARCH_GLM4MOE, KERN_ROPE_NEOX, MODEL_QK_NORM_PER_HEAD, false, true, true,
     KERN_GATING_SIGMOID, KERN_GLU_SILU, "post_attention_norm", false, 0, true, true},
    {"deepseek2", MODEL_ARCH_DEEPSEEK2, KERN_ROPE_NORM, MODEL_QK_NORM_NONE, false, true, true,
     KERN_GATING_SOFTMAX, KERN_GLU_SILU, "ffn_norm", false, 0, true, true},
};

const char *model_arch_name(model_arch arch)
{
    return arch < MODEL_ARCH_COUNT ? arch_table[arch].name : "unknown";
}

typedef struct loader {
    model *m;
    const char *path;
    char *err;
    size_t err_size;
} loader;

static int fail(loader *ld, int code, const char *fmt, ...)
{
    int n = snprintf(ld->err, ld->err_size, "%s: ", ld->path);
    if (n < 0 || (size_t)n >= ld->err_size) return code;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(ld->err + n, ld->err_size - (size_t)n, fmt, ap);
    va_end(ap);
    return code;
}

/* ---- metadata --------------------------------------------------------------------------- */

static int get_i32(loader *ld, const char *suffix, bool required, int32_t fallback, int32_t *out)
{
    char key[128];
    snprintf(key, sizeof key, "%s.%s", ld->m->hp.arch_name, suffix);
    uint32_t v;
    int rc = gguf_get_u32(ld->m->file, key, &v);
    if (rc == -ENOENT && !required) {
        *out = fallback;
        return 0;
    }
    if (rc == -ENOENT) return fail(ld, -EINVAL, "required key '%s' is missing", key);
    if (rc || v > INT32_MAX)
        return fail(ld, -EINVAL, "key '%s' must be a non-negative 32-bit integer", key);
    *out = (int32_t)v;
    return 0;
}

static int get_f32(loader *ld, const char *suffix, bool required, float fallback, float *out)
{
    char key[128];
    snprintf(key, sizeof key, "%s.%s", ld->m->hp.arch_name, suffix);
    int rc = gguf_get_f32(ld->m->file, key, out);
    if (rc == -ENOENT && !required) {
        *out = fallback;
        return 0;
    }
    if (rc == -ENOENT) return fail(ld, -EINVAL, "required key '%s' is missing", key);
    if (rc || !isfinite(*out)) return fail(ld, -EINVAL, "key '%s' must be a finite number", key);
    return 0;
}

static int get_bool(loader *ld, const char *suffix, bool fallback, bool *out)
{
    char key[128];
    snprintf(key, sizeof key, "%s.%s", ld->m->hp.arch_name, suffix);
    int rc = gguf_get_bool(ld->m->file, key, out);
    if (rc == -ENOENT) {
        *out = fallback;
        return 0;
    }
    return rc ? fail(ld, -EINVAL, "key '%s' must be a boolean", key) : 0;
}

static int read_arch(loader *ld)
{
    gguf_str name;
    int rc = gguf_get_str(ld->m->file, "general.architecture", &name);
    if (rc) return fail(ld, -EINVAL, "key 'general.architecture' is missing or not a string");
    for (int a = 0; a < MODEL_ARCH_COUNT; a++) {
        if (gguf_str_eq(name, arch_table[a].name)) {
            ld->m->hp.arch = arch_table[a].arch;
            ld->m->hp.arch_name = arch_table[a].name;
            return 0;
        }
    }
    return fail(ld, -ENOTSUP,
                "architecture '%.*s' is not supported (supported: llama with experts "
                "(Mixtral), qwen2moe, qwen3moe, olmoe, gpt-oss, glm4moe, deepseek2)",
                (int)(name.len > 64 ? 64 : name.len), name.data);
}

/* rope.scaling.*: none, or YaRN (transformers' _compute_yarn_parameters; gguf-py's keys as
 * convert_hf_to_gguf.py writes them from rope_scaling).  Other scalings are refused. */
static int read_rope_scaling(loader *ld, const arch_info *ai)
{
    model_hparams *hp = &ld->m->hp;
    char key[128];
    snprintf(key, sizeof key, "%s.rope.scaling.type", hp->arch_name);
    gguf_str type;
    int rc = gguf_get_str(ld->m->file, key, &type);
    if (rc == -ENOENT || (rc == 0 && gguf_str_eq(type, "none"))) return 0;
    if (rc) return fail(ld, -EINVAL, "key '%s' must be a string", key);
    if (!gguf_str_eq(type, "yarn"))
        return fail(ld, -ENOTSUP, "rope scaling '%.*s' is not supported (supported: none, yarn)",
                    (int)(type.len > 32 ? 32 : type.len), type.data);
    kern_rope_yarn *y = &hp->yarn;
    float attn_factor = 0.0f;
    int32_t orig_ctx = 0;
    if ((rc = get_f32(ld, "rope.scaling.factor", true, 0.0f, &y->factor)) ||
        (rc = get_i32(ld, "rope.scaling.original_context_length", true, 0, &orig_ctx)) ||
        (rc = get_f32(ld, "rope.scaling.yarn_beta_fast", false, 32.0f, &y->beta_fast)) ||
        (rc = get_f32(ld, "rope.scaling.yarn_beta_slow", false, 1.0f, &y->beta_slow)) ||
        (rc = get_f32(ld, "rope.scaling.yarn_attn_factor", false, 0.0f, &attn_factor)))
        return rc;
    if (y->factor < 1.0f || orig_ctx <= 0 || y->beta_fast <= 0.0f || y->beta_slow <= 0.0f)
        return fail(ld, -EINVAL,
                    "YaRN scaling factor %g, original context %d, betas %g / %g: the factor must "
                    "be at least 1, the others positive",
                    y->factor, orig_ctx, y->beta_fast, y->beta_slow);
    y->orig_ctx = (float)orig_ctx;
    /* transformers: attention_factor when the config gives one, else 0.1 ln(factor) + 1 */
    y->attn_factor = attn_factor > 0.0f ? attn_factor : 0.1f * logf(y->factor) + 1.0f;
    y->truncate = ai->yarn_truncate;
    hp->rope_yarn = true;
    return 0;
}

/* The DeepSeek-V3-family keys (convert_hf_to_gguf.py's Glm4MoeModel writes them): block_count
 * counts the MTP layers, feed_forward_length is the dense layers' width. */
static int read_deepseek_moe(loader *ld, int32_t n_ff)
{
    model_hparams *hp = &ld->m->hp;
    /* a DeepSeek-V2 file names no gating function: softmax (llama.cpp's default there) */
    int32_t gating = hp->arch == MODEL_ARCH_DEEPSEEK2 ? 1 : 2, n_shared = 1;
    int rc;
    if ((rc = get_i32(ld, "leading_dense_block_count", false, 0, &hp->n_layer_dense)) ||
        (rc = get_i32(ld, "nextn_predict_layers", false, 0, &hp->n_nextn)) ||
        (rc = get_bool(ld, "expert_weights_norm", false, &hp->norm_topk)) ||
        (rc = get_i32(ld, "expert_gating_func", false, gating, &gating)) ||
        (rc = get_i32(ld, "expert_group_count", false, 1, &hp->n_group)) ||
        (rc = get_i32(ld, "expert_group_used_count", false, hp->n_group, &hp->n_group_used)) ||
        (rc = get_i32(ld, "expert_shared_count", false, 1, &n_shared)) ||
        (rc = get_i32(ld, "expert_feed_forward_length", true, 0, &hp->n_ff_exp)))
        return rc;
    /* gguf-py's ExpertGatingFuncType: 1 softmax, 2 sigmoid */
    if (gating != 1 && gating != 2)
        return fail(ld, -ENOTSUP, "expert_gating_func %d is not supported (1 softmax, 2 sigmoid)",
                    gating);
    hp->gating = gating == 1 ? KERN_GATING_SOFTMAX : KERN_GATING_SIGMOID;
    if (hp->n_nextn >= hp->n_layer)
        return fail(ld, -EINVAL, "nextn_predict_layers %d leaves no layer of block_count %d",
                    hp->n_nextn, hp->n_layer);
    hp->n_layer -= hp->n_nextn; /* the MTP layers are not run */
    if (hp->n_layer_dense >= hp->n_layer)
        return fail(ld, -EINVAL,
                    "leading_dense_block_count %d leaves no MoE layer of the %d run (after %d "
                    "nextn_predict_layers)",
                    hp->n_layer_dense, hp->n_layer, hp->n_nextn);
    hp->n_ff_dense = n_ff;
    if (hp->n_layer_dense > 0 && n_ff <= 0)
        return fail(ld, -EINVAL, "feed_forward_length is required with leading dense layers");
    int per = hp->n_group > 0 ? hp->n_expert / hp->n_group : 0;
    if (hp->n_group < 1 || hp->n_group > KERN_ROUTER_MAX_GROUPS || hp->n_expert % hp->n_group ||
        hp->n_group_used < 1 || hp->n_group_used > hp->n_group ||
        hp->n_expert_used > hp->n_group_used * per)
        return fail(ld, -EINVAL,
                    "expert_group_count %d / expert_group_used_count %d: the groups must divide "
                    "the %d experts (at most %d groups) and the used ones hold the top %d",
                    hp->n_group, hp->n_group_used, hp->n_expert, KERN_ROUTER_MAX_GROUPS,
                    hp->n_expert_used);
    if (n_shared < 1 || hp->n_ff_exp < 1)
        return fail(ld, -EINVAL,
                    "expert_shared_count and expert_feed_forward_length must be "
                    "positive");
    hp->n_ff_shexp = hp->n_ff_exp * n_shared;
    return 0;
}

/* deepseek2's latent attention, as llama.cpp's converter writes it since the MLA split:
 * key_length and value_length are the latent's (kv_lora_rank + rope, kv_lora_rank; one KV
 * head), the *_mla lengths a query head's.  An older file (no *_mla keys, attn_kv_b unsplit)
 * is refused: its K absorption would need the transpose of a quantised tensor. */
static int read_mla(loader *ld)
{
    model_hparams *hp = &ld->m->hp;
    int rc;
    if ((rc = get_i32(ld, "attention.q_lora_rank", false, 0, &hp->n_lora_q)) ||
        (rc = get_i32(ld, "attention.kv_lora_rank", true, 0, &hp->n_lora_kv)) ||
        (rc = get_i32(ld, "attention.key_length_mla", false, 0, &hp->mla_k)) ||
        (rc = get_i32(ld, "attention.value_length_mla", false, 0, &hp->mla_v)))
        return rc;
    if (hp->mla_k == 0 || hp->mla_v == 0)
        return fail(ld, -ENOTSUP,
                    "%s.attention.key_length_mla / value_length_mla are missing: a file "
                    "converted before llama.cpp split attn_kv_b into attn_k_b and attn_v_b "
                    "(spring 2025); convert the model again with a current convert_hf_to_gguf.py",
                    hp->arch_name);
    if (hp->n_head_kv != 1 || hp->n_lora_kv <= 0 ||
        (int64_t)hp->head_dim != (int64_t)hp->n_lora_kv + hp->n_rot ||
        hp->head_dim_v != hp->n_lora_kv || hp->mla_k <= hp->n_rot || hp->mla_v <= 0)
        return fail(ld, -EINVAL,
                    "latent attention: head_count_kv %d, kv_lora_rank %d, key_length %d, "
                    "value_length %d, rope.dimension_count %d, key_length_mla %d, "
                    "value_length_mla %d: expected one KV head, key_length = kv_lora_rank + the "
                    "rotary dimensions, value_length = kv_lora_rank, key_length_mla above the "
                    "rotary dimensions",
                    hp->n_head_kv, hp->n_lora_kv, hp->head_dim, hp->head_dim_v, hp->n_rot,
                    hp->mla_k, hp->mla_v);
    hp->mla = true;
    return 0;
}

/* DeepSeek's YaRN (transformers' DeepseekV3Attention): the logits are scaled by mscale^2, with
 * mscale = 0.1 mscale_all_dim ln(factor) + 1, and cos and sin by mscale(mscale) /
 * mscale(mscale_all_dim) -- 1 in every published config (llama.cpp assumes the two equal, or
 * mscale = mscale_all_dim for V2's 0.707).  The file carries 0.1 mscale_all_dim as
 * rope.scaling.yarn_log_multiplier; without it transformers puts the factor on cos and sin
 * only, which read_rope_scaling already did. */
static int read_mla_scale(loader *ld)
{
    model_hparams *hp = &ld->m->hp;
    float log_mul = 0.0f;
    int rc = get_f32(ld, "rope.scaling.yarn_log_multiplier", false, 0.0f, &log_mul);
    if (rc) return rc;
    hp->attn_scale = 1.0f / sqrtf((float)hp->mla_k);
    if (!hp->rope_yarn || log_mul == 0.0f) return 0;
    float mscale = 1.0f + log_mul * logf(hp->yarn.factor);
    hp->yarn.attn_factor = 1.0f;
    hp->attn_scale *= mscale * mscale;
    return 0;
}

static int read_hparams(loader *ld)
{
    model_hparams *hp = &ld->m->hp;
    const arch_info *ai = &arch_table[hp->arch];
    int32_t n_ff = 0;
    int rc = 0;
    if ((rc = get_i32(ld, "embedding_length", true, 0, &hp->n_embd)) ||
        (rc = get_i32(ld, "block_count", true, 0, &hp->n_layer)) ||
        (rc = get_i32(ld, "attention.head_count", true, 0, &hp->n_head)) ||
        (rc = get_i32(ld, "context_length", false, 4096, &hp->n_ctx_train)) ||
        (rc = get_i32(ld, "expert_count", false, 0, &hp->n_expert)) ||
        (rc = get_i32(ld, "expert_used_count", false, 0, &hp->n_expert_used)) ||
        (rc = get_i32(ld, "feed_forward_length", false, 0, &n_ff)) ||
        (rc = get_f32(ld, "attention.layer_norm_rms_epsilon", true, 0, &hp->rms_eps)) ||
        (rc = get_f32(ld, "rope.freq_base", false, 10000.0f, &hp->rope_freq_base)) ||
        (rc = get_f32(ld, "expert_weights_scale", false, 1.0f, &hp->expert_weights_scale)))
        return rc;
    if ((rc = get_i32(ld, "attention.head_count_kv", false, hp->n_head, &hp->n_head_kv))) return rc;
    if (hp->n_embd <= 0 || hp->n_layer <= 0 || hp->n_head <= 0 || hp->n_head_kv <= 0)
        return fail(ld, -EINVAL, "embedding_length, block_count and head counts must be positive");
    if (hp->n_head % hp->n_head_kv)
        return fail(ld, -EINVAL,
                    "attention.head_count (%d) is not a multiple of head_count_kv (%d)", hp->n_head,
                    hp->n_head_kv);
    if (hp->n_expert <= 0 || hp->n_expert_used <= 0)
        return fail(ld, -ENOTSUP,
                    "'%s' file without experts (expert_count / expert_used_count missing or 0): "
                    "moeserve serves Mixture-of-Experts models only",
                    hp->arch_name);
    if (hp->n_expert_used > hp->n_expert)
        return fail(ld, -EINVAL, "expert_used_count (%d) exceeds expert_count (%d)",
                    hp->n_expert_used, hp->n_expert);
    if ((rc = get_i32(ld, "attention.key_length", false, hp->n_embd / hp->n_head, &hp->head_dim)) ||
        (rc = get_i32(ld, "attention.value_length", false, hp->head_dim, &hp->head_dim_v)) ||
        (rc = get_i32(ld, "rope.dimension_count", false, hp->head_dim, &hp->n_rot)))
        return rc;
    if (hp->head_dim <= 0 || (hp->head_dim_v != hp->head_dim && hp->arch != MODEL_ARCH_DEEPSEEK2))
        return fail(ld, -ENOTSUP,
                    "attention.key_length %d / value_length %d: only equal, "
                    "positive head sizes are supported",
                    hp->head_dim, hp->head_dim_v);
    if (hp->n_rot <= 0 || hp->n_rot > hp->head_dim || hp->n_rot % 2)
        return fail(ld, -EINVAL,
                    "rope.dimension_count %d must be even and at most the head size %d", hp->n_rot,
                    hp->head_dim);
    if (ai->ff_key_is_expert) {
        int32_t fallback = n_ff > 0 ? n_ff / hp->n_expert_used : 0;
        if ((rc = get_i32(ld, "expert_feed_forward_length", false, fallback, &hp->n_ff_exp)))
            return rc;
    } else {
        hp->n_ff_exp = n_ff;
    }
    if (ai->shared_expert &&
        (rc = get_i32(ld, "expert_shared_feed_forward_length", false, n_ff, &hp->n_ff_shexp)))
        return rc;
    hp->rope_mode = ai->rope_mode;
    hp->qk_norm = ai->qk_norm;
    hp->norm_topk = ai->norm_topk;
    hp->has_shared_expert = ai->shared_expert;
    hp->gating = ai->gating;
    hp->glu = ai->glu;
    hp->has_sinks = hp->has_expert_bias = ai->sinks_and_biases;
    hp->swa_pattern = ai->swa_pattern;
    hp->n_group = hp->n_group_used = 1;
    if (ai->deepseek_moe && (rc = read_deepseek_moe(ld, n_ff))) return rc;
    if ((rc = read_rope_scaling(ld, ai))) return rc;
    if (hp->arch == MODEL_ARCH_DEEPSEEK2 && (rc = read_mla(ld))) return rc;
    if (ai->swa_pattern &&
        ((rc = get_i32(ld, "attention.sliding_window", true, 0, &hp->n_swa)) || hp->n_swa <= 0))
        return rc ? rc : fail(ld, -EINVAL, "attention.sliding_window must be positive");
    float scale = 0.0f;
    if ((rc = get_f32(ld, "attention.scale", false, 0.0f, &scale))) return rc;
    hp->attn_scale = scale != 0.0f ? scale : 1.0f / sqrtf((float)hp->head_dim);
    if (hp->mla && (rc = read_mla_scale(ld))) return rc;
    if (hp->expert_weights_scale == 0.0f) hp->expert_weights_scale = 1.0f;
    if (hp->rms_eps <= 0.0f) return fail(ld, -EINVAL, "layer_norm_rms_epsilon must be positive");
    return 0;
}

/* ---- tensors ------------------------------------------------------------------------------ */

static const gguf_tensor *find(loader *ld, const char *name)
{
    return gguf_find_tensor(ld->m->file, name);
}

static int check_type(loader *ld, const gguf_tensor *t)
{
    if (kern_type_supported(t->type)) return 0;
    return fail(ld, -ENOTSUP, "tensor '%.*s' has type %s, which this build cannot compute with",
                (int)t->name.len, t->name.data, gguf_type_name(t->type));
}

static int shape_error(loader *ld, const gguf_tensor *t, int64_t ne0, int64_t ne1, int64_t ne2)
{
    return fail(ld, -EINVAL,
                "tensor '%.*s' has shape {%lld, %lld, %lld}, expected {%lld, %lld, %lld}",
                (int)t->name.len, t->name.data, (long long)t->ne[0], (long long)t->ne[1],
                (long long)t->ne[2], (long long)ne0, (long long)ne1, (long long)ne2);
}

static kern_weight weight_view(const gguf_tensor *t, const uint8_t *data, int64_t n_cols,
                               int64_t n_rows)
{
    return (kern_weight){.data = data,
                         .type = t->type,
                         .n_rows = n_rows,
                         .n_cols = n_cols,
                         .row_bytes = kern_row_bytes(t->type, n_cols)};
}

/* A 2-D weight of n_rows rows of n_cols elements. */
static int bind_weight(loader *ld, const char *name, int64_t n_cols, int64_t n_rows, bool required,
                       kern_weight *out, uint64_t *bytes)
{
    const gguf_tensor *t = find(ld, name);
    if (!t) {
        if (!required) return 0;
        return fail(ld, -EINVAL, "required tensor '%s' is missing", name);
    }
    if (t->ne[0] != n_cols || t->ne[1] != n_rows || t->ne[2] != 1 || t->ne[3] != 1)
        return shape_error(ld, t, n_cols, n_rows, 1);
    int rc = check_type(ld, t);
    if (rc) return rc;
    *out = weight_view(t, t->data, n_cols, n_rows);
    if (bytes) *bytes += t->n_bytes;
    return 0;
}

/* A {n_cols, n_rows, n_head} tensor (deepseek2's per-head absorptions) as one weight of
 * n_head * n_rows rows: head h's matrix is rows [h n_rows, (h + 1) n_rows). */
static int bind_heads(loader *ld, const char *name, int64_t n_cols, int64_t n_rows,
                      kern_weight *out, uint64_t *bytes)
{
    const gguf_tensor *t = find(ld, name);
    int64_t n_head = ld->m->hp.n_head;
    if (!t) return fail(ld, -EINVAL, "required tensor '%s' is missing", name);
    if (t->ne[0] != n_cols || t->ne[1] != n_rows || t->ne[2] != n_head || t->ne[3] != 1)
        return shape_error(ld, t, n_cols, n_rows, n_head);
    int rc = check_type(ld, t);
    if (rc) return rc;
    *out = weight_view(t, t->data, n_cols, n_rows * n_head);
    *bytes += t->n_bytes;
    return 0;
}

static int own(model *m, float *p)
{
    float **grown = realloc(m->owned, (m->n_owned + 1) * sizeof *grown);
    if (!grown) return -ENOMEM;
    m->owned = grown;
    m->owned[m->n_owned++] = p;
    return 0;
}

/* A {n, n_rows} tensor copied out as f32: norm weights, biases, the shared gate (n_rows 1), a
 * layer's expert biases (n_rows n_expert). */
static int bind_f32(loader *ld, const char *name, int64_t n, int64_t n_rows, bool required,
                    const float **out, uint64_t *bytes)
{
    *out = NULL;
    const gguf_tensor *t = find(ld, name);
    if (!t) {
        if (!required) return 0;
        return fail(ld, -EINVAL, "required tensor '%s' is missing", name);
    }
    if (t->ne[0] != n || t->ne[1] != n_rows || t->ne[2] != 1 || t->ne[3] != 1)
        return shape_error(ld, t, n, n_rows, 1);
    int rc = check_type(ld, t);
    if (rc) return rc;
    float *v = malloc((size_t)(n * n_rows) * sizeof *v);
    if (!v || own(ld->m, v)) {
        free(v);
        return fail(ld, -ENOMEM, "out of memory");
    }
    kern_type_info(t->type)->to_f32(t->data, v, n * n_rows);
    *out = v;
    if (bytes) *bytes += t->n_bytes;
    return 0;
}

/* A 1-D tensor of n elements as f32. */
static int bind_vec(loader *ld, const char *name, int64_t n, bool required, const float **out,
                    uint64_t *bytes)
{
    return bind_f32(ld, name, n, 1, required, out, bytes);
}

/* Stacked experts: one {n_cols, n_rows, n_expert} tensor; expert e is the e-th slab. */
static int bind_stacked(loader *ld, const gguf_tensor *t, int64_t n_cols, int64_t n_rows,
                        model_layer *layer, size_t which)
{
    int n_expert = ld->m->hp.n_expert;
    if (t->ne[0] != n_cols || t->ne[1] != n_rows || t->ne[2] != n_expert || t->ne[3] != 1)
        return shape_error(ld, t, n_cols, n_rows, n_expert);
    int rc = check_type(ld, t);
    if (rc) return rc;
    size_t slab = kern_row_bytes(t->type, n_cols) * (size_t)n_rows;
    for (int e = 0; e < n_expert; e++) {
        kern_weight *w = (kern_weight *)((char *)&layer->experts[e] + which);
        *w = weight_view(t, (const uint8_t *)t->data + slab * (size_t)e, n_cols, n_rows);
    }
    return 0;
}

static int bind_experts(loader *ld, int il, model_layer *layer)
{
    const model_hparams *hp = &ld->m->hp;
    static const struct {
        const char *part;
        size_t offset;
        bool down;
    } parts[3] = {
        {"gate", offsetof(model_expert, gate), false},
        {"up", offsetof(model_expert, up), false},
        {"down", offsetof(model_expert, down), true},
    };
    char name[128];
    for (int p = 0; p < 3; p++) {
        int64_t n_cols = parts[p].down ? hp->n_ff_exp : hp->n_embd;
        int64_t n_rows = parts[p].down ? hp->n_embd : hp->n_ff_exp;
        snprintf(name, sizeof name, "blk.%d.ffn_%s_exps.weight", il, parts[p].part);
        const gguf_tensor *t = find(ld, name);
        if (t) {
            int rc = bind_stacked(ld, t, n_cols, n_rows, layer, parts[p].offset);
            if (rc) return rc;
            continue;
        }
        snprintf(name, sizeof name, "blk.%d.ffn_gate_up_exps.weight", il);
        if (find(ld, name))
            return fail(ld, -ENOTSUP,
                        "'%s': fused gate/up experts are not supported (convert without "
                        "fusing them: separate ffn_gate_exps and ffn_up_exps)",
                        name);
        /* Older Mixtral files: one 2-D tensor per expert. */
        for (int e = 0; e < hp->n_expert; e++) {
            snprintf(name, sizeof name, "blk.%d.ffn_%s.%d.weight", il, parts[p].part, e);
            if (!find(ld, name)) {
                if (e == 0)
                    return fail(ld, -EINVAL,
                                "layer %d has no experts: neither 'blk.%d.ffn_%s_exps.weight' "
                                "nor per-expert tensors 'blk.%d.ffn_%s.N.weight'",
                                il, il, parts[p].part, il, parts[p].part);
                return fail(ld, -EINVAL, "required tensor '%s' is missing", name);
            }
            kern_weight *w = (kern_weight *)((char *)&layer->experts[e] + parts[p].offset);
            int rc = bind_weight(ld, name, n_cols, n_rows, true, w, NULL);
            if (rc) return rc;
            ld->m->hp.experts_split = true;
        }
    }
    return 0;
}

static int bind_qk_norm(loader *ld, int il, model_layer *layer)
{
    const model_hparams *hp = &ld->m->hp;
    bool per_head = hp->qk_norm == MODEL_QK_NORM_PER_HEAD;
    int64_t qn = per_head ? hp->head_dim : (int64_t)hp->n_head * hp->head_dim;
    int64_t kn = per_head ? hp->head_dim : (int64_t)hp->n_head_kv * hp->head_dim;
    char name[128];
    int rc;
    if (hp->qk_norm == MODEL_QK_NORM_NONE) return 0;
    snprintf(name, sizeof name, "blk.%d.attn_q_norm.weight", il);
    if ((rc = bind_vec(ld, name, qn, true, &layer->q_norm, &layer->dense_bytes))) return rc;
    snprintf(name, sizeof name, "blk.%d.attn_k_norm.weight", il);
    return bind_vec(ld, name, kn, true, &layer->k_norm, &layer->dense_bytes);
}

/* deepseek2's latent attention (llama.cpp's names; docs/architecture.md has the math). */
static int bind_mla(loader *ld, int il, model_layer *layer)
{
    const model_hparams *hp = &ld->m->hp;
    int64_t D = hp->n_embd, H = hp->n_head, R = hp->n_lora_kv, nope = hp->mla_k - hp->n_rot;
    uint64_t *db = &layer->dense_bytes;
    char name[128];
    int rc;
#define NAME(fmt) (snprintf(name, sizeof name, "blk.%d." fmt, il), name)
    if (hp->n_lora_q > 0) {
        if ((rc = bind_weight(ld, NAME("attn_q_a.weight"), D, hp->n_lora_q, true, &layer->wq_a,
                              db)) ||
            (rc = bind_vec(ld, NAME("attn_q_a_norm.weight"), hp->n_lora_q, true, &layer->q_a_norm,
                           db)) ||
            (rc = bind_weight(ld, NAME("attn_q_b.weight"), hp->n_lora_q, H * hp->mla_k, true,
                              &layer->wq_b, db)))
            return rc;
    } else if ((rc = bind_weight(ld, NAME("attn_q.weight"), D, H * hp->mla_k, true, &layer->wq,
                                 db))) {
        return rc;
    }
    if (find(ld, NAME("attn_kv_b.weight")) && !find(ld, NAME("attn_k_b.weight")))
        return fail(ld, -ENOTSUP,
                    "'%s': an unsplit attn_kv_b (a file converted before llama.cpp's MLA "
                    "split); convert the model again with a current convert_hf_to_gguf.py",
                    name);
    if ((rc = bind_weight(ld, NAME("attn_kv_a_mqa.weight"), D, R + hp->n_rot, true, &layer->wkv_a,
                          db)) ||
        (rc = bind_vec(ld, NAME("attn_kv_a_norm.weight"), R, true, &layer->kv_a_norm, db)) ||
        (rc = bind_heads(ld, NAME("attn_k_b.weight"), nope, R, &layer->wk_b, db)) ||
        (rc = bind_heads(ld, NAME("attn_v_b.weight"), R, hp->mla_v, &layer->wv_b, db)))
        return rc;
    return bind_weight(ld, NAME("attn_output.weight"), H * hp->mla_v, D, true, &layer->wo, db);
#undef NAME
}

static int bind_layer(loader *ld, int il)
{
    model *m = ld->m;
    const model_hparams *hp = &m->hp;
    model_layer *layer = &m->layers[il];
    int64_t q_dim = (int64_t)hp->n_head * hp->head_dim;
    int64_t kv_dim = (int64_t)hp->n_head_kv * hp->head_dim;
    uint64_t *db = &layer->dense_bytes;
    char name[128], ffn_norm[128];
    snprintf(ffn_norm, sizeof ffn_norm, "blk.%d.%s.weight", il, arch_table[hp->arch].ffn_norm);
    int rc = 0;
#define NAME(fmt) (snprintf(name, sizeof name, "blk.%d." fmt, il), name)
    if ((rc = bind_vec(ld, NAME("attn_norm.weight"), hp->n_embd, true, &layer->attn_norm, db)) ||
        (rc = bind_vec(ld, ffn_norm, hp->n_embd, true, &layer->ffn_norm, db)))
        return rc;
    if (hp->mla) {
        if ((rc = bind_mla(ld, il, layer))) return rc;
    } else if ((rc = bind_weight(ld, NAME("attn_q.weight"), hp->n_embd, q_dim, true, &layer->wq,
                                 db)) ||
               (rc = bind_weight(ld, NAME("attn_k.weight"), hp->n_embd, kv_dim, true, &layer->wk,
                                 db)) ||
               (rc = bind_weight(ld, NAME("attn_v.weight"), hp->n_embd, kv_dim, true, &layer->wv,
                                 db)) ||
               (rc = bind_weight(ld, NAME("attn_output.weight"), q_dim, hp->n_embd, true,
                                 &layer->wo, db)) ||
               (rc = bind_vec(ld, NAME("attn_q.bias"), q_dim, false, &layer->bq, db)) ||
               (rc = bind_vec(ld, NAME("attn_k.bias"), kv_dim, false, &layer->bk, db)) ||
               (rc = bind_vec(ld, NAME("attn_v.bias"), kv_dim, false, &layer->bv, db)) ||
               (rc = bind_vec(ld, NAME("attn_output.bias"), hp->n_embd, false, &layer->bo, db)) ||
               (rc = bind_vec(ld, NAME("attn_sinks.weight"), hp->n_head, hp->has_sinks,
                              &layer->sinks, db))) {
        return rc;
    }
    layer->experts = calloc((size_t)hp->n_expert, sizeof *layer->experts);
    if (!layer->experts) return fail(ld, -ENOMEM, "out of memory");
    if ((layer->bq != NULL) != (layer->bk != NULL) || (layer->bq != NULL) != (layer->bv != NULL))
        return fail(ld, -EINVAL, "layer %d has some but not all of the Q/K/V biases", il);
    if (layer->bq) m->hp.has_qkv_bias = true;
    if (hp->swa_pattern && il % hp->swa_pattern < hp->swa_pattern - 1) layer->window = hp->n_swa;
    if ((rc = bind_qk_norm(ld, il, layer))) return rc;
    if (il < hp->n_layer_dense) { /* its experts stay empty */
        if ((rc = bind_weight(ld, NAME("ffn_gate.weight"), hp->n_embd, hp->n_ff_dense, true,
                              &layer->ffn_gate, db)) ||
            (rc = bind_weight(ld, NAME("ffn_up.weight"), hp->n_embd, hp->n_ff_dense, true,
                              &layer->ffn_up, db)))
            return rc;
        return bind_weight(ld, NAME("ffn_down.weight"), hp->n_ff_dense, hp->n_embd, true,
                           &layer->ffn_down, db);
    }
    if ((rc = bind_weight(ld, NAME("ffn_gate_inp.weight"), hp->n_embd, hp->n_expert, true,
                          &layer->router, db)) ||
        (rc = bind_vec(ld, NAME("ffn_gate_inp.bias"), hp->n_expert, false, &layer->router_bias,
                       db)) ||
        (rc = bind_vec(ld, NAME("exp_probs_b.bias"), hp->n_expert, false, &layer->sel_bias, db)))
        return rc;
    if (hp->has_expert_bias) {
        static const char *const part[3] = {"gate", "up", "down"};
        for (int p = 0; p < 3; p++) {
            snprintf(name, sizeof name, "blk.%d.ffn_%s_exps.bias", il, part[p]);
            if ((rc = bind_f32(ld, name, p == 2 ? hp->n_embd : hp->n_ff_exp, hp->n_expert, true,
                               &layer->exp_bias_host[p], db)))
                return rc;
            layer->exp_bias[p] = layer->exp_bias_host[p];
        }
    }
    if (hp->has_shared_expert) {
        bool gated = !arch_table[hp->arch].deepseek_moe;
        if ((rc = bind_vec(ld, NAME("ffn_gate_inp_shexp.weight"), hp->n_embd, gated,
                           &layer->shexp_gate_inp, db)) ||
            (rc = bind_weight(ld, NAME("ffn_gate_shexp.weight"), hp->n_embd, hp->n_ff_shexp, true,
                              &layer->shexp_gate, db)) ||
            (rc = bind_weight(ld, NAME("ffn_up_shexp.weight"), hp->n_embd, hp->n_ff_shexp, true,
                              &layer->shexp_up, db)) ||
            (rc = bind_weight(ld, NAME("ffn_down_shexp.weight"), hp->n_ff_shexp, hp->n_embd, true,
                              &layer->shexp_down, db)))
            return rc;
    }
#undef NAME
    return bind_experts(ld, il, layer);
}

static int bind_tensors(loader *ld)
{
    model *m = ld->m;
    model_hparams *hp = &m->hp;
    const gguf_tensor *embd = find(ld, "token_embd.weight");
    if (!embd) return fail(ld, -EINVAL, "required tensor 'token_embd.weight' is missing");
    if (embd->n_dims != 2 || embd->ne[0] != hp->n_embd || embd->ne[1] <= 0)
        return shape_error(ld, embd, hp->n_embd, embd->ne[1], 1);
    if (embd->ne[1] > INT32_MAX) return fail(ld, -EINVAL, "vocabulary too large");
    hp->n_vocab = (int32_t)embd->ne[1];
    int32_t vocab_key = 0;
    int rc = get_i32(ld, "vocab_size", false, hp->n_vocab, &vocab_key);
    if (rc) return rc;
    if (vocab_key != hp->n_vocab)
        return fail(ld, -EINVAL, "vocab_size %d does not match token_embd rows %d", vocab_key,
                    hp->n_vocab);
    if (hp->n_ff_exp <= 0) {
        /* Some converters omit the expert FFN width; the stacked tensor says it. */
        char name[64] = "blk.0.ffn_gate_exps.weight";
        const gguf_tensor *g = find(ld, name);
        if (!g) g = find(ld, "blk.0.ffn_gate.0.weight");
        if (!g) return fail(ld, -EINVAL, "cannot tell the expert FFN width: no key and no tensor");
        hp->n_ff_exp = (int32_t)g->ne[1];
    }
    if ((rc = bind_weight(ld, "token_embd.weight", hp->n_embd, hp->n_vocab, true, &m->tok_embd,
                          NULL)) ||
        (rc = bind_vec(ld, "output_norm.weight", hp->n_embd, true, &m->output_norm,
                       &m->head_bytes)) ||
        (rc = bind_weight(ld, "output.weight", hp->n_embd, hp->n_vocab, false, &m->output,
                          &m->head_bytes)))
        return rc;
    if (!m->output.data) {
        m->output = m->tok_embd;
        m->head_bytes += find(ld, "token_embd.weight")->n_bytes;
        hp->output_tied = true;
    }
    /* GLM-4.5 has Q/K norms (use_qk_norm), GLM-4.5-Air has none: layer 0 says which */
    if (arch_table[hp->arch].deepseek_moe && !find(ld, "blk.0.attn_q_norm.weight"))
        hp->qk_norm = MODEL_QK_NORM_NONE;
    m->layers = calloc((size_t)hp->n_layer, sizeof *m->layers);
    if (!m->layers) return fail(ld, -ENOMEM, "out of memory");
    for (int il = 0; il < hp->n_layer; il++)
        if ((rc = bind_layer(ld, il))) return rc;
    return 0;
}

static uint64_t weight_bytes(const kern_weight *w);

/* ---- placing weights on the device ------------------------------------------------------ */

static int place(model *m, const void *host, size_t bytes, const void **dev, char *err,
                 size_t err_size)
{
    struct model_placed *grown = realloc(m->placed, (m->n_placed + 1) * sizeof *grown);
    if (!grown) {
        snprintf(err, err_size, "out of memory");
        return -ENOMEM;
    }
    m->placed = grown;
    int rc = kern_place(m->backend, host, bytes, dev, err, err_size);
    if (rc) return rc;
    m->placed[m->n_placed++] = (struct model_placed){.host = host, .dev = *dev};
    return 0;
}

static int place_weight(model *m, kern_weight *w, char *err, size_t err_size)
{
    if (!w->data) return 0;
    return place(m, w->data, weight_bytes(w), &w->data, err, err_size);
}

static int place_vec(model *m, const float **v, int64_t n, char *err, size_t err_size)
{
    if (!*v) return 0;
    const void *dev = NULL;
    int rc = place(m, *v, (size_t)n * sizeof(float), &dev, err, err_size);
    if (rc == 0) *v = dev;
    return rc;
}

/* Dense weights and the small f32 vectors go to the device once. */
static int place_dense(model *m, char *err, size_t err_size)
{
    const model_hparams *hp = &m->hp;
    int64_t q_dim = (int64_t)hp->n_head * hp->head_dim,
            kv_dim = (int64_t)hp->n_head_kv * hp->head_dim;
    int64_t qn = hp->qk_norm == MODEL_QK_NORM_PER_HEAD ? hp->head_dim : q_dim;
    int64_t kn = hp->qk_norm == MODEL_QK_NORM_PER_HEAD ? hp->head_dim : kv_dim;
    int rc;
    if ((rc = place_weight(m, &m->tok_embd, err, err_size))) return rc;
    if (hp->output_tied)
        m->output = m->tok_embd;
    else if ((rc = place_weight(m, &m->output, err, err_size)))
        return rc;
    if ((rc = place_vec(m, &m->output_norm, hp->n_embd, err, err_size))) return rc;
    for (int il = 0; il < hp->n_layer; il++) {
        model_layer *L = &m->layers[il];
        if ((rc = place_weight(m, &L->wq, err, err_size)) ||
            (rc = place_weight(m, &L->wk, err, err_size)) ||
            (rc = place_weight(m, &L->wv, err, err_size)) ||
            (rc = place_weight(m, &L->wo, err, err_size)) ||
            (rc = place_weight(m, &L->wq_a, err, err_size)) ||
            (rc = place_weight(m, &L->wq_b, err, err_size)) ||
            (rc = place_weight(m, &L->wkv_a, err, err_size)) ||
            (rc = place_weight(m, &L->wk_b, err, err_size)) ||
            (rc = place_weight(m, &L->wv_b, err, err_size)) ||
            (rc = place_vec(m, &L->q_a_norm, hp->n_lora_q, err, err_size)) ||
            (rc = place_vec(m, &L->kv_a_norm, hp->n_lora_kv, err, err_size)) ||
            (rc = place_weight(m, &L->router, err, err_size)) ||
            (rc = place_weight(m, &L->shexp_gate, err, err_size)) ||
            (rc = place_weight(m, &L->shexp_up, err, err_size)) ||
            (rc = place_weight(m, &L->shexp_down, err, err_size)) ||
            (rc = place_weight(m, &L->ffn_gate, err, err_size)) ||
            (rc = place_weight(m, &L->ffn_up, err, err_size)) ||
            (rc = place_weight(m, &L->ffn_down, err, err_size)) ||
            (rc = place_vec(m, &L->sel_bias, hp->n_expert, err, err_size)) ||
            (rc = place_vec(m, &L->attn_norm, hp->n_embd, err, err_size)) ||
            (rc = place_vec(m, &L->ffn_norm, hp->n_embd, err, err_size)) ||
            (rc = place_vec(m, &L->bq, q_dim, err, err_size)) ||
            (rc = place_vec(m, &L->bk, kv_dim, err, err_size)) ||
            (rc = place_vec(m, &L->bv, kv_dim, err, err_size)) ||
            (rc = place_vec(m, &L->bo, hp->n_embd, err, err_size)) ||
            (rc = place_vec(m, &L->sinks, hp->n_head, err, err_size)) ||
            (rc = place_vec(m, &L->router_bias, hp->n_expert, err, err_size)) ||
            (rc = place_vec(m, &L->exp_bias[0], (int64_t)hp->n_expert * hp->n_ff_exp, err,
                            err_size)) ||
            (rc = place_vec(m, &L->exp_bias[1], (int64_t)hp->n_expert * hp->n_ff_exp, err,
                            err_size)) ||
            (rc = place_vec(m, &L->exp_bias[2], (int64_t)hp->n_expert * hp->n_embd, err,
                            err_size)) ||
            (rc = place_vec(m, &L->q_norm, qn, err, err_size)) ||
            (rc = place_vec(m, &L->k_norm, kn, err, err_size)) ||
            (rc = place_vec(m, &L->shexp_gate_inp, hp->n_embd, err, err_size)))
            return rc;
    }
    return 0;
}

static void unplace_all(model *m)
{
    for (size_t i = 0; i < m->n_placed; i++)
        kern_unplace(m->backend, m->placed[i].host, m->placed[i].dev);
    free(m->placed);
    m->placed = NULL;
    m->n_placed = 0;
}

/* Without a cache on a device backend, each layer's three expert tensors are placed whole
 * (one copy per stacked tensor, or per expert in the legacy layout); the per-expert views then
 * point into those copies. */
int model__reach_experts(model *m, char *err, size_t err_size)
{
    const model_hparams *hp = &m->hp;
    if (m->experts || m->experts_placed) return 0;
    for (int il = 0; il < hp->n_layer; il++) {
        model_layer *L = &m->layers[il];
        if (m->backend->kind == KERN_BACKEND_CPU || il < hp->n_layer_dense) {
            L->experts_dev = L->experts; /* a dense layer's are empty */
            continue;
        }
        L->experts_dev = malloc((size_t)hp->n_expert * sizeof *L->experts_dev);
        if (!L->experts_dev) {
            snprintf(err, err_size, "out of memory");
            return -ENOMEM;
        }
        memcpy(L->experts_dev, L->experts, (size_t)hp->n_expert * sizeof *L->experts_dev);
        for (int p = 0; p < CACHE_PARTS; p++) {
            size_t off = p == 0   ? offsetof(model_expert, gate)
                         : p == 1 ? offsetof(model_expert, up)
                                  : offsetof(model_expert, down);
            kern_weight *w0 = (kern_weight *)((char *)&L->experts_dev[0] + off);
            size_t slab = weight_bytes(w0);
            if (!hp->experts_split) {
                const void *dev = NULL;
                int rc = place(m, w0->data, slab * (size_t)hp->n_expert, &dev, err, err_size);
                if (rc) return rc;
                for (int e = 0; e < hp->n_expert; e++)
                    ((kern_weight *)((char *)&L->experts_dev[e] + off))->data =
                        (const uint8_t *)dev + slab * (size_t)e;
            } else {
                for (int e = 0; e < hp->n_expert; e++) {
                    int rc = place_weight(m, (kern_weight *)((char *)&L->experts_dev[e] + off), err,
                                          err_size);
                    if (rc) return rc;
                }
            }
        }
    }
    m->experts_placed = true;
    return 0;
}

/* The file extents of every expert's three parts, from where their views point into the
 * mapping: the cache reads them with its own I/O and never touches those mapped pages. */
int model_open_expert_cache(model *m, const cache_opts *co, const cache_device_opts *device,
                            char *err, size_t err_size)
{
    if (m->experts) {
        snprintf(err, err_size, "the model already has an expert cache");
        return -EEXIST;
    }
    if (m->experts_placed) {
        snprintf(err, err_size,
                 "the model's experts were placed on the device already; open the "
                 "expert cache before the first context");
        return -EEXIST;
    }
    const model_hparams *hp = &m->hp;
    const gguf_tensor *t0 = gguf_tensor_at(m->file, 0);
    const uint8_t *base = (const uint8_t *)t0->data - (gguf_data_offset(m->file) + t0->offset);
    size_t n = (size_t)hp->n_layer * (size_t)hp->n_expert;
    cache_extent *ext = malloc(n * CACHE_PARTS * sizeof *ext);
    if (!ext) {
        snprintf(err, err_size, "out of memory");
        return -ENOMEM;
    }
    for (int il = 0; il < hp->n_layer; il++) {
        for (int e = 0; e < hp->n_expert; e++) {
            const model_expert *x = &m->layers[il].experts[e];
            const kern_weight *parts[CACHE_PARTS] = {&x->gate, &x->up, &x->down};
            for (int p = 0; p < CACHE_PARTS; p++) {
                size_t i =
                    ((size_t)il * (size_t)hp->n_expert + (size_t)e) * CACHE_PARTS + (size_t)p;
                ext[i].bytes = weight_bytes(parts[p]);
                /* a leading dense layer's experts are empty: nothing to read */
                ext[i].offset =
                    ext[i].bytes ? (uint64_t)((const uint8_t *)parts[p]->data - base) : 0;
            }
        }
    }
    cache_opts o = co ? *co : cache_opts_default();
    o.path = gguf_path(m->file);
    o.n_layer = hp->n_layer;
    o.n_expert = hp->n_expert;
    o.first_layer = hp->n_layer_dense;
    o.extents = ext;
    /* One token's experts of one layer must fit at once; larger batches are read in waves. */
    o.min_slots = (uint32_t)hp->n_expert_used;
    int rc = cache_open(&m->host_tier, &o, err, err_size);
    free(ext);
    if (rc) return rc;
    m->experts = m->host_tier;
    if (m->backend->kind == KERN_BACKEND_CPU) return 0;
    cache_device_opts d = device ? *device : cache_device_opts_default();
    d.backend = m->backend;
    size_t free_b = 0, total_b = 0;
    if (!d.reserve_bytes && kern_mem_info(m->backend, &free_b, &total_b) == 0) {
        /* room for the step's scratch and the backend's own buffers when nobody said more */
        uint64_t margin = (uint64_t)total_b / 20;
        d.reserve_bytes = margin > ((uint64_t)1 << 30) ? margin : (uint64_t)1 << 30;
    }
    if ((rc = cache_open_device(&m->experts, m->host_tier, &d, err, err_size))) {
        cache_close(&m->host_tier);
        m->experts = NULL;
        return rc;
    }
    if (m->cpu_backend && m->miss_policy != MODEL_MISS_COPY) model__calibrate(m);
    return 0;
}

int model_open(model **out, const char *path, const model_opts *opts, char *err, size_t err_size)
{
    *out = NULL;
    if (!opts || !opts->backend) {
        snprintf(err, err_size, "%s: no compute backend given", path);
        return -EINVAL;
    }
    model *m = calloc(1, sizeof *m);
    if (!m) {
        snprintf(err, err_size, "%s: out of memory", path);
        return -ENOMEM;
    }
    m->backend = opts->backend;
    m->cpu_backend = opts->cpu_backend;
    m->miss_policy = opts->miss_policy;
    loader ld = {.m = m, .path = path, .err = err, .err_size = err_size};
    int rc = gguf_open(&m->file, path, err, err_size);
    if (rc) goto fail;
    if ((rc = read_arch(&ld)) || (rc = read_hparams(&ld))) goto fail;
    if (m->hp.glu == KERN_GLU_SWIGLU_OAI && !m->backend->ops->swiglu_oai) {
        rc = fail(&ld, -ENOTSUP,
                  "the %s backend cannot run %s (it has no clamped SwiGLU): use the cpu or sim "
                  "backend",
                  m->backend->name, m->hp.arch_name);
        goto fail;
    }
    if ((rc = bind_tensors(&ld))) goto fail;
    if ((rc = place_dense(m, err, err_size))) goto fail;
    bool tiers = opts->expert_cache || (opts->device_cache && m->backend->kind != KERN_BACKEND_CPU);
    if (tiers &&
        (rc = model_open_expert_cache(m, opts->expert_cache, opts->device_cache, err, err_size)))
        goto fail;
    m->expert_tokens =
        calloc((size_t)m->hp.n_layer * (size_t)m->hp.n_expert, sizeof *m->expert_tokens);
    if (!m->expert_tokens) {
        snprintf(err, err_size, "%s: out of memory", path);
        rc = -ENOMEM;
        goto fail;
    }
    if (opts->predictor != PRED_NONE && (rc = model_start_predictor(m, opts, err, err_size)))
        goto fail;
    *out = m;
    return 0;
fail:
    model_close(&m);
    return rc;
}

void model_close(model **mp)
{
    model *m = *mp;
    if (!m) return;
    if (m->experts != m->host_tier) cache_close(&m->experts); /* the device tier first */
    cache_close(&m->host_tier);
    m->experts = NULL;
    if (m->backend) unplace_all(m);
    if (m->layers) {
        for (int il = 0; il < m->hp.n_layer; il++) {
            if (m->layers[il].experts_dev != m->layers[il].experts) free(m->layers[il].experts_dev);
            free(m->layers[il].experts);
        }
    }
    free(m->layers);
    for (size_t i = 0; i < m->n_owned; i++)
        free(m->owned[i]);
    free(m->owned);
    pred_destroy(&m->predictor);
    free((void *)m->expert_tokens);
    gguf_close(&m->file);
    free(m);
    *mp = NULL;
}

const model_hparams *model_params(const model *m)
{
    return &m->hp;
}

const gguf_file *model_file(const model *m)
{
    return m->file;
}

const cache *model_expert_cache(const model *m)
{
    return m->experts;
}

const cache *model_host_cache(const model *m)
{
    return m->host_tier;
}

uint64_t model_expert_tokens(const model *m, int layer, int expert)
{
    return atomic_load(&m->expert_tokens[(size_t)layer * (size_t)m->hp.n_expert + (size_t)expert]);
}

const pred *model_predictor(const model *m)
{
    return m->predictor;
}

int model_start_predictor(model *m, const model_opts *opts, char *err, size_t err_size)
{
    if (m->predictor) {
        snprintf(err, err_size, "the model already has a predictor");
        return -EEXIST;
    }
    m->min_prob = opts->min_prob > 0.0f ? opts->min_prob : -1.0f;
    pred_opts po = {.kind = opts->predictor,
                    .n_layer = m->hp.n_layer,
                    .n_expert = m->hp.n_expert,
                    .n_expert_used = m->hp.n_expert_used,
                    .lookahead = opts->lookahead,
                    .width = opts->width};
    return pred_create(&m->predictor, &po, err, err_size);
}

uint64_t model_cpu_experts(const model *m)
{
    return atomic_load(&m->cpu_experts);
}

static const char *const miss_names[] = {"auto", "copy", "cpu"};

const char *model_miss_policy_name(model_miss_policy p)
{
    return (unsigned)p < 3 ? miss_names[p] : "?";
}

int model_miss_policy_parse(const char *name, model_miss_policy *out)
{
    for (int i = 0; i < 3; i++) {
        if (!strcmp(name, miss_names[i])) {
            *out = (model_miss_policy)i;
            return 0;
        }
    }
    return -EINVAL;
}

/* The link: the best of a few pinned copies of 1 MiB (its latency share) and 64 MiB; the CPU:
 * its read bandwidth with its own threads.  A few tens of milliseconds, once, at open.  The
 * CPU's compute rate starts from a guess and is learnt from the CPU experts'
 * own timings (forward.c). */
void model__calibrate(model *m)
{
    size_t big = (size_t)64 << 20, small = (size_t)1 << 20;
    double t_big = kern_copy_seconds(m->backend, KERN_COPY_TO_DEVICE, big, 3);
    double t_small = kern_copy_seconds(m->backend, KERN_COPY_TO_DEVICE, small, 3);
    /* two points of t = latency + bytes / rate */
    m->link_bps = t_big > t_small ? (double)(big - small) / (t_big - t_small) : 25e9;
    m->link_latency_s =
        t_small > (double)small / m->link_bps ? t_small - (double)small / m->link_bps : 5e-6;
    m->cpu_bps = kern_cpu_best_read_bandwidth(m->cpu_backend, (size_t)256 << 20, 3);
    if (m->cpu_bps <= 0) m->cpu_bps = 10e9;
    /* A quantised dot product keeps a core busy at a few tens of GMAC/s; the first CPU experts'
     * timings replace this guess.  Too slow a guess would never let the CPU be tried. */
    m->cpu_s_per_mac = 1.0 / (40e9 * (double)kern_cpu_n_threads(m->cpu_backend));
}

const model_expert *model_get_expert(const model *m, int layer, int index)
{
    return &m->layers[layer].experts[index];
}

static uint64_t weight_bytes(const kern_weight *w)
{
    return (uint64_t)w->row_bytes * (uint64_t)w->n_rows;
}

/* Whether t belongs to a block past n_layer (glm4moe's MTP layers): never read. */
static bool skipped_layer(const model *m, const gguf_tensor *t)
{
    char name[32];
    int len = t->name.len < sizeof name - 1 ? (int)t->name.len : (int)sizeof name - 1;
    memcpy(name, t->name.data, (size_t)len);
    name[len] = '\0';
    int block = -1;
    return sscanf(name, "blk.%d.", &block) == 1 && block >= m->hp.n_layer;
}

void model_get_sizes(const model *m, model_sizes *out)
{
    memset(out, 0, sizeof *out);
    uint64_t total = 0;
    for (uint64_t i = 0; i < gguf_n_tensors(m->file); i++)
        if (!skipped_layer(m, gguf_tensor_at(m->file, i)))
            total += gguf_tensor_at(m->file, i)->n_bytes;
    for (int il = 0; il < m->hp.n_layer; il++) {
        for (int e = 0; e < m->hp.n_expert; e++) {
            const model_expert *x = &m->layers[il].experts[e];
            uint64_t b = weight_bytes(&x->gate) + weight_bytes(&x->up) + weight_bytes(&x->down);
            out->expert_bytes += b;
            if (b > out->bytes_per_expert) out->bytes_per_expert = b;
        }
    }
    out->dense_bytes = total - out->expert_bytes;
    out->n_experts_total =
        (uint64_t)(m->hp.n_layer - m->hp.n_layer_dense) * (uint64_t)m->hp.n_expert;
}
