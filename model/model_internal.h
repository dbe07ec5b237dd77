/*
 * The model's internals, shared between load.c (binding a GGUF file) and forward.c (the
 * forward pass).  Not part of the public interface.
 */
#ifndef MOE_MODEL_INTERNAL_H
#define MOE_MODEL_INTERNAL_H

#include "model/model.h"

typedef struct model_layer {
    const float *attn_norm;
    kern_weight wq, wk, wv, wo;
    const float *bq, *bk, *bv; /* qwen2moe, gpt-oss */
    const float *bo;           /* gpt-oss */
    const float *q_norm, *k_norm;
    const float *sinks; /* [n_head]: gpt-oss's attention sinks */
    int32_t window;     /* > 0: a sliding-window layer */
    /* deepseek2's latent attention: Q through a low-rank pair (wq_a, q_a_norm, wq_b) or wq; the
     * latent and the rotary key from wkv_a; per-head absorptions wk_b (n_lora_kv rows of nope
     * per head) and wv_b (mla_v rows of n_lora_kv per head), heads stacked along the rows */
    kern_weight wq_a, wq_b, wkv_a, wk_b, wv_b;
    const float *q_a_norm, *kv_a_norm;
    const float *ffn_norm;
    kern_weight router;       /* [n_expert][n_embd] */
    const float *router_bias; /* [n_expert], gpt-oss */
    const float *sel_bias;    /* [n_expert]: exp_probs_b, chooses experts but never weights */
    /* gpt-oss: every expert's biases, [n_expert][n_ff_exp] for gate and up, [n_expert][n_embd]
     * for down; on the device (used by the compute backend) and on the host (used by the CPU
     * when it computes a device tier's misses) */
    const float *exp_bias[3], *exp_bias_host[3];
    model_expert *experts;     /* views of the file's mapping */
    model_expert *experts_dev; /* the same on the device, when reached without a cache */
    uint64_t dense_bytes;
    /* shared expert (qwen2moe gates it per token; glm4moe adds it ungated) */
    const float *shexp_gate_inp; /* [n_embd]: one scalar gate per token, or NULL */
    kern_weight shexp_gate, shexp_up, shexp_down;
    /* a leading dense layer's FFN (glm4moe): no router, no experts */
    kern_weight ffn_gate, ffn_up, ffn_down;
} model_layer;

struct model {
    model_hparams hp;
    gguf_file *file;
    kern_backend *backend;
    kern_weight tok_embd;
    kern_weight output;
    const float *output_norm;
    model_layer *layers;
    uint64_t head_bytes; /* output projection + final norm: read every step */
    cache *experts;      /* the tier nearest the compute; NULL: experts through the mapping */
    cache *host_tier;    /* the host tier (== experts on the CPU backend) */
    struct model_placed {
        const void *host, *dev;
    } * placed; /* device copies made at open or on the first context */
    size_t n_placed;
    bool experts_placed;
    /* misses of the device tier: who computes them (forward.c's cost model) */
    kern_backend *cpu_backend;
    model_miss_policy miss_policy;
    double link_bps; /* measured host-to-device copy rate */
    double link_latency_s;
    double cpu_bps;       /* measured CPU read bandwidth */
    double cpu_s_per_mac; /* learnt from the CPU experts' timings */
    _Atomic uint64_t cpu_experts;
    pred *predictor;                 /* NULL: no guesses */
    float min_prob;                  /* least probability prefetched; < 0: from stall_share */
    double stall_share;              /* of recent steps' time, waiting on expert reads (EMA) */
    _Atomic uint64_t *expert_tokens; /* [n_layer][n_expert]: tokens routed, for metrics */
    float **owned;                   /* f32 copies of 1-D tensors, freed at close */
    size_t n_owned;
};

/* Makes the experts reachable by the backend's operations: through the cache, directly from
 * the mapping on the CPU, or placed on the device (once) otherwise. */
int model__reach_experts(model *m, char *err, size_t err_size);
/* Measures the rates the miss policy compares (the link, the CPU's bandwidth). */
void model__calibrate(model *m);

#endif
