/*
 * model — a Mixture-of-Experts decoder read from a GGUF file, and its forward pass.
 *
 * Contract
 * - model_open() reads the hyper-parameters for the file's architecture (Mixtral as GGUF
 *   `llama` with experts, `qwen2moe`, `qwen3moe`, `olmoe`, `gpt-oss`, `glm4moe`, `deepseek2`),
 * binds every tensor it needs and checks its shape and type, or refuses the file with a message
 * naming the key or tensor. Weights stay in the read-only mapping of the file; small 1-D tensors
 * (norms, biases) are copied out as f32.  A model is immutable after open and may be shared by
 * contexts.
 * - Experts are reached in two ways.  Without an expert cache (model_opts.expert_cache NULL)
 *   they are read through the file's mapping (model_get_expert).  With one, model_open()
 *   hands the cache the file extents of every expert's gate, up and down slices and the forward
 *   pass acquires each layer's experts through it (cache/cache.h): read on demand into a
 *   bounded arena, computed in the order they become resident, released after use.  Both
 *   paths give bit-identical results.
 * - The model places its dense weights on the backend's device once at open (kern_place; free
 *   on the CPU backend).  Experts on a device backend live in a device tier in front of the
 *   host tier, or, without an expert cache, are placed whole when the first context is made.
 *   The device tier's misses are copied in or, with model_opts.cpu_backend, computed on the CPU
 *   from the host tier while the device computes the rest (model_opts.miss_policy).
 * - A model_ctx owns the paged KV cache (kern_kv) and the device scratch of the forward pass.
 *   model_forward() runs one step over a batch of tokens from any mix of sequences (each token
 *   carries its sequence id and position) and writes the logits of the tokens that ask for
 *   them.  A context is used by one thread at a time (the engine thread).
 * - The model does not own the compute backend: the caller opens it, passes it in
 *   model_opts, and closes it after the model.
 * - Errors are negative errno values with a message in the caller's buffer.
 */
#ifndef MOE_MODEL_H
#define MOE_MODEL_H

#include "cache/cache.h"
#include "gguf/gguf.h"
#include "kernels/kernels.h"
#include "predictor/predictor.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum model_arch {
    MODEL_ARCH_LLAMA = 0, /* Mixtral */
    MODEL_ARCH_QWEN2MOE,
    MODEL_ARCH_QWEN3MOE,
    MODEL_ARCH_OLMOE,
    MODEL_ARCH_GPT_OSS,   /* OpenAI gpt-oss-20b / 120b */
    MODEL_ARCH_GLM4MOE,   /* GLM-4.5 / 4.6 / 4.5-Air */
    MODEL_ARCH_DEEPSEEK2, /* DeepSeek-V2 / V3 / R1, Kimi-K2 */
    MODEL_ARCH_COUNT
} model_arch;

typedef enum model_qk_norm {
    MODEL_QK_NORM_NONE = 0,
    MODEL_QK_NORM_PER_HEAD, /* qwen3moe: over each head's head_dim, weights shared by heads */
    MODEL_QK_NORM_FULL,     /* olmoe: over the whole projected Q (or K) vector */
} model_qk_norm;

typedef struct model_hparams {
    model_arch arch;
    const char *arch_name; /* as in general.architecture */
    int32_t n_vocab;
    int32_t n_embd;
    int32_t n_layer;
    int32_t n_head;
    int32_t n_head_kv;
    int32_t head_dim;   /* attention.key_length, default n_embd / n_head */
    int32_t head_dim_v; /* attention.value_length, default head_dim */
    /* deepseek2's multi-head latent attention: attention runs as one KV head whose rows are the
     * compressed latent (n_lora_kv) and the shared rotary key (n_rot), so head_dim is
     * n_lora_kv + n_rot and head_dim_v n_lora_kv; each query head's key and value sizes before
     * the absorption are mla_k (nope + rope) and mla_v (docs/architecture.md, deepseek2) */
    bool mla;
    int32_t n_lora_q; /* 0: one Q projection (DeepSeek-V2-Lite) */
    int32_t n_lora_kv;
    int32_t mla_k, mla_v;
    int32_t n_rot; /* rope.dimension_count, default head_dim */
    int32_t n_expert;
    int32_t n_expert_used;
    int32_t n_ff_exp;   /* per-expert FFN width */
    int32_t n_ff_shexp; /* shared expert FFN width, 0 when none */
    int32_t n_ctx_train;
    /* glm4moe: the first n_layer_dense layers have a dense FFN of n_ff_dense instead of experts
     * (their experts are empty: no bytes, never routed to); the file's last n_nextn blocks are
     * its multi-token-prediction layers, which are not run (n_layer excludes them) */
    int32_t n_layer_dense;
    int32_t n_ff_dense;
    int32_t n_nextn;
    int32_t n_group;      /* router groups (kern_router_opts); 1: none */
    int32_t n_group_used; /* groups a token's experts may come from */
    float rms_eps;
    float rope_freq_base;
    bool rope_yarn;      /* rope.scaling.type is yarn: `yarn` holds its parameters */
    kern_rope_yarn yarn; /* (docs/architecture.md, gpt-oss) */
    int32_t n_swa;       /* attention.sliding_window: the window of the sliding layers */
    int32_t swa_pattern; /* layer il slides when il % swa_pattern < swa_pattern - 1; 0: none */
    float attn_scale;    /* 1/sqrt(head_dim) unless the file says otherwise */
    float expert_weights_scale; /* 1 when absent */
    bool norm_topk;             /* renormalise the top-k routing weights to sum 1 */
    kern_gating gating;         /* softmax then top-k, or top-k then softmax (gpt-oss) */
    kern_glu glu;               /* the experts' activation */
    bool has_sinks;             /* attention sinks (gpt-oss) */
    bool has_expert_bias;       /* biases on every expert's gate, up and down (gpt-oss) */
    kern_rope_mode rope_mode;
    model_qk_norm qk_norm;
    bool has_qkv_bias;
    bool has_shared_expert;
    bool experts_split; /* legacy layout: one tensor per expert */
    bool output_tied;   /* no output.weight: logits use token_embd */
} model_hparams;

/* The weights of one expert: gate and up are [n_ff_exp][n_embd], down is [n_embd][n_ff_exp]. */
typedef struct model_expert {
    kern_weight gate;
    kern_weight up;
    kern_weight down;
} model_expert;

typedef struct model_sizes {
    uint64_t dense_bytes;      /* everything that is not a routed expert */
    uint64_t expert_bytes;     /* all routed experts of all layers */
    uint64_t bytes_per_expert; /* gate + up + down of one expert (largest layer) */
    uint64_t n_experts_total;  /* n_layer * n_expert */
} model_sizes;

typedef struct model model;

/* What happens to an expert the device tier does not hold: copied in (then resident for the
 * steps after), or computed on the CPU from the host tier while the device computes the
 * others; auto decides per expert and step from measured rates (docs/architecture.md). */
typedef enum model_miss_policy {
    MODEL_MISS_AUTO = 0,
    MODEL_MISS_COPY,
    MODEL_MISS_CPU,
} model_miss_policy;

const char *model_miss_policy_name(model_miss_policy p);
int model_miss_policy_parse(const char *name, model_miss_policy *out);

typedef struct model_opts {
    kern_backend *backend; /* required; not owned */
    /* NULL: experts through the mapping.  Else the cache's budget, policy, I/O and log
     * settings; model_open fills in the file, the shapes, the extents and min_slots. */
    const cache_opts *expert_cache;
    /* With a device backend (sim, cuda): the device tier in front of the host tier; NULL
     * there means a tier that holds every expert that fits in the device's free memory less a
     * reserve (reserve_bytes, or 1 GiB / 5% of the device).  Ignored on the CPU backend. */
    const cache_device_opts *device_cache;
    /* With a device tier: the CPU backend that computes misses (not owned; NULL: every miss is
     * copied) and the policy that chooses. */
    kern_backend *cpu_backend;
    model_miss_policy miss_policy;
    /* Guesses the coming layers' experts (scored online; with an expert cache the likely
     * guesses are prefetched so that their reads overlap the layers in between). */
    pred_kind predictor;
    int32_t lookahead; /* layers guessed ahead; 0 means 1 */
    int32_t width;     /* guesses per token; 0 means the model's top-k */
    /* Least probability a guess needs to be read ahead, in (0, 1]; 0 means auto: from 10%
     * when reads keep up to 50% when the engine waits on them (docs/architecture.md). */
    float min_prob;
} model_opts;

int model_open(model **out, const char *path, const model_opts *opts, char *err, size_t err_size);
void model_close(model **m);

const model_hparams *model_params(const model *m);
const gguf_file *model_file(const model *m);
void model_get_sizes(const model *m, model_sizes *out);
const char *model_arch_name(model_arch arch);
/* Puts the experts behind an expert cache after open (what model_opts.expert_cache does at
 * open), so that a caller can size the budget from model_get_sizes() first.  Call before any
 * context runs a step; -EEXIST when the model already has one. */
int model_open_expert_cache(model *m, const cache_opts *opts, const cache_device_opts *device,
                            char *err, size_t err_size);
/* The expert tier nearest the compute (the device tier on a device backend, else the host
 * tier), NULL when experts are read through the mapping. */
const cache *model_expert_cache(const model *m);
/* The host tier (the same as model_expert_cache on the CPU backend), NULL without a cache. */
const cache *model_host_cache(const model *m);
/* Tokens routed to (layer, expert) since open, over every context (counted with atomics, so
 * any thread may read them while the engine runs). */
uint64_t model_expert_tokens(const model *m, int layer, int expert);
/* The routing predictor, NULL for PRED_NONE. */
const pred *model_predictor(const model *m);
/* Starts a predictor after open (kind, lookahead, width and min_prob as in model_opts), e.g.
 * once the expert cache is known not to hold every expert.  Call before any context runs a
 * step; -EEXIST when the model already has one. */
int model_start_predictor(model *m, const model_opts *opts, char *err, size_t err_size);
/* Experts computed on the CPU instead of the device since open (any thread may read it). */
uint64_t model_cpu_experts(const model *m);
/* The expert's weights as mapped from the file; layer < n_layer, index < n_expert are the
 * caller's contract. */
const model_expert *model_get_expert(const model *m, int layer, int index);

/* ---- context: KV cache + scratch ---------------------------------------------------------- */

typedef struct model_ctx model_ctx;

typedef struct model_ctx_opts {
    int32_t n_seq;                /* sequences that can be live at once */
    int32_t n_ctx;                /* positions per sequence; 0: the model's training context */
    kern_kv_type kv_type;         /* KV storage: F16 (the default) or F32 */
    int32_t kv_block_tokens;      /* positions per KV block; 0: 16 */
    int32_t kv_max_cached_blocks; /* prefix reuse: unheld blocks kept at most; 0: memory-bound */
    /* Route every layer through the host even where the device could do it alone (every expert
     * on the device): what benchmarks compare device routing with. */
    bool host_routing;
    /* Never replay a step as a graph (see model_forward); benchmarks compare. */
    bool no_graphs;
} model_ctx_opts;

int model_ctx_create(model_ctx **out, model *m, const model_ctx_opts *opts, char *err,
                     size_t err_size);
void model_ctx_destroy(model_ctx **ctx);
int32_t model_ctx_n_ctx(const model_ctx *ctx);
/* KV storage allocated now (it grows with the positions held, in chunks of blocks), and what
 * 1024 positions of one sequence take. */
size_t model_ctx_kv_bytes(const model_ctx *ctx);
size_t model_ctx_kv_bytes_per_1k(const model_ctx *ctx);
/* What one position of one sequence takes in a KV cache of elem_bytes per value, before any
 * context exists: K and V of every layer, or deepseek2's one latent row per layer. */
uint64_t model_kv_bytes_per_position(const model_hparams *hp, size_t elem_bytes);
size_t model_ctx_kv_used_bytes(const model_ctx *ctx);
/* Forget a sequence: its next token may start again at position 0. */
void model_ctx_clear_seq(model_ctx *ctx, int32_t seq);
/* Prefix reuse (kern_kv_attach_prefix / kern_kv_publish): positions per KV block; attach a
 * cleared sequence to the published blocks its chained keys name (returns the blocks attached:
 * the sequence's next position is that many blocks in); publish a full block of a sequence. */
int32_t model_ctx_block_tokens(const model_ctx *ctx);
int32_t model_ctx_attach_prefix(model_ctx *ctx, int32_t seq, const uint64_t *keys, int32_t n_keys,
                                char *err, size_t err_size);
void model_ctx_publish_block(model_ctx *ctx, int32_t seq, int32_t block, uint64_t key);
void model_ctx_prefix_stats(const model_ctx *ctx, kern_kv_prefix_stats *out);

typedef struct model_batch {
    int32_t n_tokens;
    const int32_t *token;
    const int32_t *pos; /* position of each token inside its sequence */
    const int32_t *seq; /* sequence id of each token, < n_seq */
    /* Non-zero where the logits of that token are wanted; NULL: only the last token's. */
    const uint8_t *want_logits;
} model_batch;

/* What the last step read: the basis of the bandwidth-floor figures in the benchmark. */
typedef struct model_step_stats {
    uint64_t dense_bytes;      /* dense weights touched */
    uint64_t expert_bytes;     /* bytes of the distinct experts the batch selected */
    uint32_t experts_used;     /* distinct (layer, expert) pairs */
    uint64_t matmul_macs;      /* multiply-adds of all weight products (2 FLOP each) */
    uint32_t cpu_experts;      /* experts a device backend's step computed on the CPU */
    uint32_t cpu_lane_experts; /* of them, those the CPU lane computed while the device worked */
    uint64_t cpu_bytes;        /* their bytes, read from the host tier */
    uint64_t cpu_ns;           /* time the CPU spent computing them */
    /* time the engine thread waited for the CPU's experts after queuing and feeding the
     * device's (the CPU computes them at the same time): the CPU's share of the step when it is
     * the longer one */
    uint64_t cpu_wait_ns;
    /* the step failed because an expert could not be read (the cache reads it again on the next
     * request, so running the same batch again may succeed; its positions are simply stored
     * again) */
    bool expert_read_failed;
    /* the layers chose and grouped their experts on the device (moe_align, experts_routed):
     * no host round trip between a router and its experts */
    bool routed_on_device;
    /* the step was recorded as a graph for its shape (then launched), or launched one that an
     * earlier step of its shape recorded */
    bool graph_captured, graph_replayed;
} model_step_stats;

/* Runs one step.  Each token's K and V are stored at (seq, pos); a token attends to positions
 * 0 .. pos of its sequence, which earlier steps or earlier tokens of this batch must have
 * filled.  Logits rows (n_vocab floats each) are written in batch order for the tokens that
 * want them.
 * A step that routes on the device (model_step_stats.routed_on_device) on a backend with graphs
 * is recorded once a step of its shape (tokens, logits rows) has run plainly, and later steps of
 * that shape replay the recording — on CUDA one launch where the step queued hundreds; the
 * logits are the same bits either way. */
int model_forward(model_ctx *ctx, const model_batch *batch, float *logits, char *err,
                  size_t err_size);
const model_step_stats *model_ctx_last_stats(const model_ctx *ctx);
/* Why this context stopped recording graphs (the backend could not capture a step), or NULL. */
const char *model_ctx_graph_error(const model_ctx *ctx);

/* Index of the largest logit (the lowest index among equals): greedy decoding. */
int32_t model_argmax(const float *logits, int32_t n_vocab);

#endif
