/*
 * The forward pass over a batch of tokens, read top to bottom like the math:
 *
 *   x = embed(tokens)
 *   for each layer:  x += attention(rmsnorm(x))          (GQA, RoPE, optional Q/K norm,
 *                                                          sliding window and sinks)
 *                    x += moe(rmsnorm(x))                 (router top-k, grouped experts,
 *                                                          shared expert)
 *                      or ffn(rmsnorm(x))                 (glm4moe's leading dense layers)
 *   logits = output · rmsnorm(x)                          (only for the tokens that ask)
 *
 * Every arithmetic step is a backend operation on device memory (kernels/kernels.h); this file
 * never touches a float.  What stays on the host is bookkeeping on integers: which tokens
 * chose which expert (the expert cache needs the ids on the host to decide what to load), and
 * the KV cache's block reservations.  So a step crosses between host and device at fixed
 * points: the batch's ids and positions go down at the start; each layer's routing comes up
 * and its buckets go down; the logits come up at the end.
 *
 * Experts run grouped: the batch's tokens are bucketed by the experts the router picked, every
 * bucket's inputs are gathered at once, and each selected expert runs once over its bucket, so
 * its weights are read once per step no matter how many tokens chose it.  Each token's
 * contributions are then summed in ascending expert order (moe_combine), which makes a
 * sequence's result independent of the batch it shares and of the order in which the cache
 * made experts resident.
 */
#include "model/cpu_lane.h"
#include "model/model_internal.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Device buffers of one step; grown (never shrunk) when a larger batch arrives. */
typedef struct dev_scratch {
    float *x, *h, *q, *k, *v, *attn, *proj, *moe;
    float *router, *route_w;
    int32_t *route_id;
    float *xe;              /* every bucket's inputs */
    float *ge, *ue;         /* every bucket row's silu(gate) * up; one bucket's up */
    float *de;              /* every bucket's down outputs, in bucket order */
    float *shg, *shu, *shd; /* shared expert */
    float *logits;
    int32_t *token, *pos, *seq, *out_rows;
    int32_t *bucket;    /* token of each bucket row */
    int32_t *comb_rows; /* [n][K]: each token's bucket rows, ascending expert */
    float *comb_w;
    int32_t *bucket_start, *used; /* n_expert + 1 each: the plan's, when routing on the device */
    float *qa;                    /* deepseek2: the low-rank Q, [n][n_lora_q] */
    float *mla;                   /* deepseek2: the per-head regions (mla_attention) */
    int32_t *mla_idx; /* deepseek2: the step's four reshuffles, in units of mla_unit floats */
} dev_scratch;

/* Host-side integer bookkeeping, and the staging of what crosses to and from the device. */
typedef struct host_scratch {
    int32_t *route_id; /* [n][K], copied up from the device */
    float *route_w;
    int32_t *bucket;    /* [n*K] */
    int32_t *comb_rows; /* [n][K] */
    float *comb_w;
    int32_t *bucket_start; /* n_expert + 1 */
    int32_t *fill;         /* n_expert + 1: the number of experts used, then those experts */
    int32_t *guess;        /* n_expert: a coming layer's predicted experts, most likely first */
    float *guess_p;        /* n_expert: their probabilities */
    float *router;         /* [n][n_expert]: a coming layer's router logits, for pre-gating */
    int32_t *out_rows;     /* tokens whose logits are wanted */
    /* misses computed on the CPU (device backends with a CPU backend only) */
    int32_t *on_device, *on_cpu; /* n_expert each: the layer's experts, split */
    float *xe, *de;              /* their bucket rows in and out, laid out as the device's */
    float *ge, *ue;              /* as the device's */
    kern_ffn_expert *group;      /* n_expert: the experts run together */
    cache_ref *refs;             /* n_expert: their cache slots */
    model_miss *miss;            /* n_expert: a layer's misses, their costs and the split */
    uint8_t *to_cpu;             /* n_expert: by expert id, the split */
    kern_ffn_expert *cpu_group;  /* n_expert: the CPU lane's experts ... */
    cache_ref *cpu_refs;         /* ... pinned in the host tier while it runs */
    int32_t *mla_idx;            /* as the device's */
    int32_t *layer_ids;          /* [n_layer][n][K]: every layer's choices, when routing on the
                                  * device, for the counts made after the step */
} host_scratch;

struct model_ctx {
    model *m;
    kern_backend *be;
    int32_t n_seq;
    int32_t n_ctx;
    int64_t kv_dim;
    kern_kv *kv;
    int64_t cap_tokens;
    int64_t cap_logits; /* rows of dev_scratch.logits, grown apart: a prefill wants one */
    dev_scratch d;
    host_scratch hs;
    kern_event *inputs_ready; /* the CPU experts' inputs have reached the host */
    model_cpu_lane *lane;     /* computes them while this thread drives the device */
    model_step_stats stats;
    /* Routing on the device: the layers' expert tables and the device array of parts they
     * point into, built on the first step that can use them, from the placed experts or from
     * a device tier that holds them all (table_src) */
    kern_expert_table *tables;
    const void *table_parts;
    const cache *table_src;
    bool host_routing;
    /* Graphs of steps routed on the device, by shape; a shape is recorded once it has run
     * plainly (one of the last plain shapes), a run that grew every scratch it needs: scratch
     * only grows, and cannot while recording */
    struct step_graph {
        kern_graph *g;
        int64_t n, n_out;
        uint64_t dense_bytes, matmul_macs; /* what the recorded step counted */
    } graphs[4];
    int next_graph;
    struct step_shape {
        int64_t n, n_out;
    } plain[4];
    int next_plain;
    bool no_graphs;
    char graph_error[256];
};

static void tables_free(model_ctx *ctx);

/* Graphs hold the addresses of the step's buffers: any of them moving drops them all (the shapes
 * that ran plainly stay known: buffers only grow). */
static void graphs_drop(model_ctx *ctx)
{
    for (size_t i = 0; i < sizeof ctx->graphs / sizeof ctx->graphs[0]; i++)
        kern_graph_destroy(ctx->be, &ctx->graphs[i].g);
}

/* ---- scratch ----------------------------------------------------------------------------------
 */

/* Whether this context's misses may be computed on the CPU: a device tier, a CPU backend, and a
 * policy that allows it. */
static bool cpu_misses(const model_ctx *ctx)
{
    const model *m = ctx->m;
    return m->experts && m->experts != m->host_tier && m->cpu_backend &&
           m->miss_policy != MODEL_MISS_COPY;
}

/* deepseek2's latent attention moves each head's vectors between token-major rows (what the
 * projections and the attention read and write) and head-major blocks (what one head's
 * absorption matmul reads and writes) with the gather operation, in units of the largest
 * size that divides every piece (the nope, rope, latent and value widths).  The four index
 * lists depend only on the batch size, so they are built once per step.  Regions of
 * dev_scratch.mla for n tokens: A, head-major [H][n][R] (absorbed queries, then the heads'
 * latent outputs); B, token-major [n][H][nope + rope] (the projected queries); C, head-major
 * [H][n][max(nope, V)] (the queries' nope parts, then the heads' values). */
typedef struct mla_shape {
    int64_t H, R, P, N, V; /* heads, latent, rope, nope, value widths */
    int64_t unit;          /* floats per gathered row */
    int64_t region_floats; /* of dev_scratch.mla, per token */
    int64_t idx_per_token; /* of the four index lists together */
} mla_shape;

static int64_t gcd64(int64_t a, int64_t b)
{
    while (b) {
        int64_t t = a % b;
        a = b;
        b = t;
    }
    return a;
}

static mla_shape mla_shape_of(const model_hparams *hp)
{
    mla_shape s = {0};
    if (!hp->mla) return s;
    s.H = hp->n_head;
    s.R = hp->n_lora_kv;
    s.P = hp->n_rot;
    s.N = hp->mla_k - hp->n_rot;
    s.V = hp->mla_v;
    s.unit = gcd64(gcd64(s.R, s.P), gcd64(s.N, s.V));
    s.region_floats = s.H * (s.R + s.N + s.P + (s.N > s.V ? s.N : s.V));
    s.idx_per_token = s.H * (s.N + (s.R + s.P) + s.R + s.V) / s.unit;
    return s;
}

static void scratch_free(model_ctx *ctx)
{
    kern_backend *be = ctx->be;
    graphs_drop(ctx);
    void **dev = (void **)&ctx->d, **host = (void **)&ctx->hs;
    for (size_t i = 0; i < sizeof ctx->d / sizeof(void *); i++)
        kern_free(be, KERN_MEM_DEVICE, dev[i]);
    for (size_t i = 0; i < sizeof ctx->hs / sizeof(void *); i++)
        kern_free(be, KERN_MEM_HOST_PINNED, host[i]);
    memset(&ctx->d, 0, sizeof ctx->d);
    memset(&ctx->hs, 0, sizeof ctx->hs);
    ctx->cap_tokens = 0;
    ctx->cap_logits = 0;
}

static int scratch_reserve(model_ctx *ctx, int64_t n)
{
    if (n <= ctx->cap_tokens) return 0;
    const model_hparams *hp = &ctx->m->hp;
    kern_backend *be = ctx->be;
    int64_t D = hp->n_embd, q_dim = (int64_t)hp->n_head * hp->head_dim, K = hp->n_expert_used;
    int64_t E = hp->n_expert;
    /* the routed experts' rows (ge, ue) are n_ff_exp wide; the shared expert's and a dense
     * layer's (shg, shu) up to the widest of theirs, which is 9x an expert's on DeepSeek-V3 */
    int64_t fe = hp->n_ff_exp;
    int64_t ff = hp->n_ff_shexp > hp->n_ff_dense ? hp->n_ff_shexp : hp->n_ff_dense;
    if (fe > ff) ff = fe;
    mla_shape ms = mla_shape_of(hp);
    scratch_free(ctx);
    dev_scratch *d = &ctx->d;
    host_scratch *h = &ctx->hs;
    int rc = 0;
#define DEV(field, count)                                                                          \
    (rc = kern_alloc(be, KERN_MEM_DEVICE, (size_t)(count) * sizeof *d->field, (void **)&d->field))
#define HOST(field, count)                                                                         \
    (rc = kern_alloc(be, KERN_MEM_HOST_PINNED, (size_t)(count) * sizeof *h->field,                 \
                     (void **)&h->field))
    if (DEV(x, n * D) || DEV(h, n * D) || DEV(q, n * q_dim) || DEV(k, n * ctx->kv_dim) ||
        DEV(v, n * ctx->kv_dim) || DEV(attn, n * q_dim) || DEV(proj, n * D) || DEV(moe, n * D) ||
        DEV(router, n * E) || DEV(route_w, n * K) || DEV(route_id, n * K) || DEV(xe, n * K * D) ||
        DEV(ge, n * K * fe) || DEV(ue, n * fe) || DEV(de, n * K * D) || DEV(shg, n * ff) ||
        DEV(shu, n * ff) || DEV(shd, n * D) || DEV(token, n) || DEV(pos, n) || DEV(seq, n) ||
        DEV(out_rows, n) || DEV(bucket, n * K) || DEV(comb_rows, n * K) || DEV(comb_w, n * K) ||
        DEV(bucket_start, E + 1) || DEV(used, E + 1) || HOST(route_id, n * K) ||
        HOST(route_w, n * K) || HOST(bucket, n * K) || HOST(comb_rows, n * K) ||
        HOST(comb_w, n * K) || HOST(bucket_start, E + 1) || HOST(fill, E + 1) ||
        (be->kind != KERN_BACKEND_CPU && HOST(layer_ids, hp->n_layer * n * K)) || HOST(guess, E) ||
        HOST(guess_p, E) || HOST(router, n * E) || HOST(out_rows, n) || HOST(group, E) ||
        HOST(refs, E) ||
        (cpu_misses(ctx) &&
         (HOST(on_device, E) || HOST(on_cpu, E) || HOST(xe, n * K * D) || HOST(de, n * K * D) ||
          HOST(ge, n * K * fe) || HOST(ue, n * fe) || HOST(miss, E) || HOST(to_cpu, E) ||
          HOST(cpu_group, E) || HOST(cpu_refs, E))) ||
        (hp->mla && (DEV(qa, n * hp->n_lora_q + 1) || DEV(mla, n * ms.region_floats) ||
                     DEV(mla_idx, n * ms.idx_per_token) || HOST(mla_idx, n * ms.idx_per_token)))) {
        scratch_free(ctx);
        return rc;
    }
#undef DEV
#undef HOST
    ctx->cap_tokens = n;
    return 0;
}

/* ---- context ----------------------------------------------------------------------------------
 */

int model_ctx_create(model_ctx **out, model *m, const model_ctx_opts *opts, char *err,
                     size_t err_size)
{
    *out = NULL;
    const model_hparams *hp = &m->hp;
    int32_t n_seq = opts && opts->n_seq > 0 ? opts->n_seq : 1;
    int32_t n_ctx = opts && opts->n_ctx > 0 ? opts->n_ctx : hp->n_ctx_train;
    if (n_ctx <= 0) n_ctx = 4096;
    int rc = model__reach_experts(m, err, err_size);
    if (rc) return rc;
    model_ctx *ctx = calloc(1, sizeof *ctx);
    if (!ctx) {
        snprintf(err, err_size, "out of memory");
        return -ENOMEM;
    }
    ctx->m = m;
    ctx->be = m->backend;
    ctx->n_seq = n_seq;
    ctx->n_ctx = n_ctx;
    ctx->host_routing = opts && opts->host_routing;
    ctx->no_graphs = opts && opts->no_graphs;
    for (size_t i = 0; i < sizeof ctx->plain / sizeof ctx->plain[0]; i++)
        ctx->plain[i].n = -1;
    ctx->kv_dim = (int64_t)hp->n_head_kv * hp->head_dim;
    kern_kv_opts ko = {.n_layer = hp->n_layer,
                       .kv_dim = (int32_t)ctx->kv_dim,
                       .head_dim = hp->head_dim,
                       .n_seq = n_seq,
                       .n_ctx = n_ctx,
                       .block_tokens = opts ? opts->kv_block_tokens : 0,
                       .type = opts ? opts->kv_type : KERN_KV_F16,
                       .max_cached_blocks = opts ? opts->kv_max_cached_blocks : 0,
                       .v_is_k = hp->mla};
    if ((rc = kern_kv_open(&ctx->kv, m->backend, &ko, err, err_size))) {
        model_ctx_destroy(&ctx);
        return rc;
    }
    if ((rc = kern_event_create(m->backend, &ctx->inputs_ready))) {
        snprintf(err, err_size, "out of memory");
        model_ctx_destroy(&ctx);
        return rc;
    }
    if (cpu_misses(ctx) && (rc = model_cpu_lane_open(&ctx->lane))) {
        snprintf(err, err_size, "starting the thread for the CPU's experts: %s", strerror(-rc));
        model_ctx_destroy(&ctx);
        return rc;
    }
    *out = ctx;
    return 0;
}

void model_ctx_destroy(model_ctx **ctxp)
{
    model_ctx *ctx = *ctxp;
    if (!ctx) return;
    char ignored[64];
    (void)kern_sync(ctx->be, ignored, sizeof ignored); /* nothing queued may outlive its buffers */
    model_cpu_lane_close(&ctx->lane); /* idle: every job is joined before its step returns */
    scratch_free(ctx);
    tables_free(ctx);
    kern_kv_close(&ctx->kv);
    if (ctx->inputs_ready) kern_event_destroy(ctx->be, &ctx->inputs_ready);
    free(ctx);
    *ctxp = NULL;
}

int32_t model_ctx_n_ctx(const model_ctx *ctx)
{
    return ctx->n_ctx;
}

size_t model_ctx_kv_bytes(const model_ctx *ctx)
{
    return kern_kv_allocated_bytes(ctx->kv);
}

uint64_t model_kv_bytes_per_position(const model_hparams *hp, size_t elem_bytes)
{
    return (hp->mla ? 1u : 2u) * (uint64_t)elem_bytes * (uint64_t)hp->n_layer *
           (uint64_t)hp->n_head_kv * (uint64_t)hp->head_dim;
}

size_t model_ctx_kv_bytes_per_1k(const model_ctx *ctx)
{
    const kern_kv_layout *l = kern_kv_get_layout(ctx->kv);
    return kern_kv_block_bytes(ctx->kv) * (size_t)((1024 + l->block_tokens - 1) / l->block_tokens);
}

size_t model_ctx_kv_used_bytes(const model_ctx *ctx)
{
    return kern_kv_block_bytes(ctx->kv) * (size_t)kern_kv_blocks_used(ctx->kv);
}

void model_ctx_clear_seq(model_ctx *ctx, int32_t seq)
{
    kern_kv_clear(ctx->kv, seq);
}

int32_t model_ctx_block_tokens(const model_ctx *ctx)
{
    return kern_kv_get_layout(ctx->kv)->block_tokens;
}

int32_t model_ctx_attach_prefix(model_ctx *ctx, int32_t seq, const uint64_t *keys, int32_t n_keys,
                                char *err, size_t err_size)
{
    return kern_kv_attach_prefix(ctx->kv, seq, keys, n_keys, err, err_size);
}

void model_ctx_publish_block(model_ctx *ctx, int32_t seq, int32_t block, uint64_t key)
{
    kern_kv_publish(ctx->kv, seq, block, key);
}

void model_ctx_prefix_stats(const model_ctx *ctx, kern_kv_prefix_stats *out)
{
    kern_kv_get_prefix_stats(ctx->kv, out);
}

const char *model_ctx_graph_error(const model_ctx *ctx)
{
    return ctx->graph_error[0] ? ctx->graph_error : NULL;
}

const model_step_stats *model_ctx_last_stats(const model_ctx *ctx)
{
    return &ctx->stats;
}

static uint64_t weight_bytes(const kern_weight *w)
{
    return (uint64_t)w->row_bytes * (uint64_t)w->n_rows;
}

/* Every weight product of the step goes through here, which keeps the work count honest. */
static void matmul(model_ctx *ctx, const kern_weight *w, const float *x, float *y, int64_t n)
{
    kern_matmul(ctx->be, w, x, y, n);
    ctx->stats.matmul_macs += (uint64_t)n * (uint64_t)w->n_rows * (uint64_t)w->n_cols;
}

/* n_batch products of a weight's equal row blocks with their own activations (per head). */
static void matmul_batched(model_ctx *ctx, const kern_weight *w, int64_t n_batch, const float *x,
                           float *y, int64_t n)
{
    kern_matmul_batched(ctx->be, w, n_batch, x, y, n);
    ctx->stats.matmul_macs += (uint64_t)n * (uint64_t)w->n_rows * (uint64_t)w->n_cols;
}

/* Waits for the device and turns its first error into the step's. */
static int sync_step(model_ctx *ctx, char *err, size_t err_size)
{
    char msg[320];
    int rc = kern_sync(ctx->be, msg, sizeof msg);
    if (rc) snprintf(err, err_size, "compute backend (%s): %s", ctx->be->name, msg);
    return rc;
}

static int upload(model_ctx *ctx, void *dev, const void *host, size_t bytes, char *err,
                  size_t err_size)
{
    int rc = kern_copy(ctx->be, KERN_STREAM_COMPUTE, dev, host, bytes, KERN_COPY_TO_DEVICE);
    if (rc)
        snprintf(err, err_size, "compute backend (%s): copy to the device failed: %s",
                 ctx->be->name, strerror(-rc));
    return rc;
}

static int download(model_ctx *ctx, void *host, const void *dev, size_t bytes, char *err,
                    size_t err_size)
{
    int rc = kern_copy(ctx->be, KERN_STREAM_COMPUTE, host, dev, bytes, KERN_COPY_TO_HOST);
    if (rc == 0) return sync_step(ctx, err, err_size);
    snprintf(err, err_size, "compute backend (%s): copy to the host failed: %s", ctx->be->name,
             strerror(-rc));
    return rc;
}

/* ---- attention -------------------------------------------------------------------------- */

static void attention(model_ctx *ctx, const model_layer *L, int il, int64_t n)
{
    const model_hparams *hp = &ctx->m->hp;
    kern_backend *be = ctx->be;
    dev_scratch *s = &ctx->d;
    int64_t q_dim = (int64_t)hp->n_head * hp->head_dim, kv_dim = ctx->kv_dim;
    const kern_kv_layout *kv = kern_kv_get_layout(ctx->kv);

    kern_rmsnorm(be, s->x, L->attn_norm, s->h, hp->n_embd, n, hp->n_embd, hp->rms_eps);
    matmul(ctx, &L->wq, s->h, s->q, n);
    matmul(ctx, &L->wk, s->h, s->k, n);
    matmul(ctx, &L->wv, s->h, s->v, n);
    if (L->bq) {
        kern_add_bias(be, s->q, L->bq, n, q_dim);
        kern_add_bias(be, s->k, L->bk, n, kv_dim);
        kern_add_bias(be, s->v, L->bv, n, kv_dim);
    }
    if (hp->qk_norm == MODEL_QK_NORM_PER_HEAD) {
        kern_rmsnorm(be, s->q, L->q_norm, s->q, hp->head_dim, n * hp->n_head, hp->head_dim,
                     hp->rms_eps);
        kern_rmsnorm(be, s->k, L->k_norm, s->k, hp->head_dim, n * hp->n_head_kv, hp->head_dim,
                     hp->rms_eps);
    } else if (hp->qk_norm == MODEL_QK_NORM_FULL) {
        kern_rmsnorm(be, s->q, L->q_norm, s->q, q_dim, n, q_dim, hp->rms_eps);
        kern_rmsnorm(be, s->k, L->k_norm, s->k, kv_dim, n, kv_dim, hp->rms_eps);
    }
    const kern_rope_yarn *yarn = hp->rope_yarn ? &hp->yarn : NULL;
    kern_rope(be, s->q, n, hp->n_head, hp->head_dim, hp->n_rot, s->pos, hp->rope_freq_base,
              hp->rope_mode, yarn);
    kern_rope(be, s->k, n, hp->n_head_kv, hp->head_dim, hp->n_rot, s->pos, hp->rope_freq_base,
              hp->rope_mode, yarn);
    /* Every token's K/V is stored before any token attends: tokens of one sequence in this
     * batch see each other up to their own position. */
    kern_kv_store(be, kv, il, s->k, s->v, s->seq, s->pos, n);
    kern_attention(be, kv, il, s->q, s->seq, s->pos, s->attn, n, hp->n_head, hp->n_head_kv,
                   hp->head_dim, hp->attn_scale, L->window, L->sinks);
    matmul(ctx, &L->wo, s->attn, s->proj, n);
    if (L->bo) kern_add_bias(be, s->proj, L->bo, n, hp->n_embd);
    kern_add(be, s->x, s->proj, n * hp->n_embd);
    ctx->stats.dense_bytes +=
        weight_bytes(&L->wq) + weight_bytes(&L->wk) + weight_bytes(&L->wv) + weight_bytes(&L->wo);
}

/* The step's reshuffles for deepseek2's latent attention (mla_shape says where each lives). */
static void mla_indices(const mla_shape *ms, int64_t n, int32_t *idx)
{
    int64_t u = ms->unit, H = ms->H, R = ms->R, N = ms->N, P = ms->P, V = ms->V, Dq = N + P;
    int64_t b_off = H * n * R; /* region B, after A */
    int32_t *p = idx;
    for (int64_t h = 0; h < H; h++) /* q's nope parts into C, head-major */
        for (int64_t t = 0; t < n; t++)
            for (int64_t j = 0; j < N / u; j++)
                *p++ = (int32_t)((t * H + h) * Dq / u + j);
    for (int64_t t = 0; t < n; t++) /* attention's queries: absorbed (A), then rotary (B) */
        for (int64_t h = 0; h < H; h++) {
            for (int64_t j = 0; j < R / u; j++)
                *p++ = (int32_t)((h * n * R + t * R) / u + j);
            for (int64_t j = 0; j < P / u; j++)
                *p++ = (int32_t)((b_off + (t * H + h) * Dq + N) / u + j);
        }
    for (int64_t h = 0; h < H; h++) /* attention's latent outputs into A, head-major */
        for (int64_t t = 0; t < n; t++)
            for (int64_t j = 0; j < R / u; j++)
                *p++ = (int32_t)((t * H + h) * (R + P) / u + j);
    for (int64_t t = 0; t < n; t++) /* the heads' values, token-major */
        for (int64_t h = 0; h < H; h++)
            for (int64_t j = 0; j < V / u; j++)
                *p++ = (int32_t)((h * n * V + t * V) / u + j);
}

/* deepseek2's multi-head latent attention, in the absorbed form llama.cpp runs (transformers'
 * DeepseekV3Attention decompresses instead; the two agree up to rounding):
 *
 *   q = Wq_b rmsnorm(Wq_a h)  (or Wq h)    per head [nope | rope], rope rotated
 *   [c | k_r] = Wkv_a h                     c = rmsnorm(c): the latent; k_r rotated, shared
 *   q_c = Wk_b[h] q_nope                    the nope query absorbed into the latent space
 *   o = attention([q_c | q_rope], K = V = [c | k_r], one KV head)
 *   out = Wo concat_h(Wv_b[h] o[:R])
 *
 * The cache holds only [c | k_r] per token, and attention's value rows are the same rows: the
 * part of o from k_r is dropped by taking o[:R]. */
static void mla_attention(model_ctx *ctx, const model_layer *L, int il, int64_t n)
{
    const model_hparams *hp = &ctx->m->hp;
    kern_backend *be = ctx->be;
    dev_scratch *s = &ctx->d;
    mla_shape ms = mla_shape_of(hp);
    int64_t H = ms.H, R = ms.R, P = ms.P, N = ms.N, V = ms.V, u = ms.unit;
    float *A = s->mla, *B = A + H * n * R, *C = B + n * H * (N + P);
    const int32_t *idx_qn = s->mla_idx, *idx_q = idx_qn + n * H * N / u,
                  *idx_ol = idx_q + n * H * (R + P) / u, *idx_vo = idx_ol + n * H * R / u;
    const kern_rope_yarn *yarn = hp->rope_yarn ? &hp->yarn : NULL;

    kern_rmsnorm(be, s->x, L->attn_norm, s->h, hp->n_embd, n, hp->n_embd, hp->rms_eps);
    if (L->wq_a.data) {
        matmul(ctx, &L->wq_a, s->h, s->qa, n);
        kern_rmsnorm(be, s->qa, L->q_a_norm, s->qa, hp->n_lora_q, n, hp->n_lora_q, hp->rms_eps);
        matmul(ctx, &L->wq_b, s->qa, B, n);
        ctx->stats.dense_bytes += weight_bytes(&L->wq_a) + weight_bytes(&L->wq_b);
    } else {
        matmul(ctx, &L->wq, s->h, B, n);
        ctx->stats.dense_bytes += weight_bytes(&L->wq);
    }
    /* each head's rotary part sits after its nope part: rotate from there, a head's width on */
    kern_rope(be, B + N, n, (int)H, (int)(N + P), (int)P, s->pos, hp->rope_freq_base, hp->rope_mode,
              yarn);
    matmul(ctx, &L->wkv_a, s->h, s->k, n);
    kern_rmsnorm(be, s->k, L->kv_a_norm, s->k, R, n, R + P, hp->rms_eps);
    kern_rope(be, s->k + R, n, 1, (int)(R + P), (int)P, s->pos, hp->rope_freq_base, hp->rope_mode,
              yarn);

    kern_gather(be, B, idx_qn, C, n * H * N / u, u);
    matmul_batched(ctx, &L->wk_b, H, C, A, n); /* per head: its n rows of C, its R rows */
    kern_gather(be, A, idx_q, s->q, n * H * (R + P) / u, u);

    kern_kv_store(be, kern_kv_get_layout(ctx->kv), il, s->k, s->k, s->seq, s->pos, n);
    kern_attention(be, kern_kv_get_layout(ctx->kv), il, s->q, s->seq, s->pos, s->attn, n, (int)H, 1,
                   (int)(R + P), hp->attn_scale, 0, NULL);

    kern_gather(be, s->attn, idx_ol, A, n * H * R / u, u);
    matmul_batched(ctx, &L->wv_b, H, A, C, n);
    kern_gather(be, C, idx_vo, s->attn, n * H * V / u, u);
    matmul(ctx, &L->wo, s->attn, s->proj, n);
    kern_add(be, s->x, s->proj, n * hp->n_embd);
    ctx->stats.dense_bytes += weight_bytes(&L->wkv_a) + weight_bytes(&L->wk_b) +
                              weight_bytes(&L->wv_b) + weight_bytes(&L->wo);
}

/* ---- mixture of experts ------------------------------------------------------------------ */

static kern_router_opts router_opts(const model_hparams *hp, const model_layer *L)
{
    return (kern_router_opts){.n_expert = hp->n_expert,
                              .k = hp->n_expert_used,
                              .gating = hp->gating,
                              .norm = hp->norm_topk,
                              .scale = hp->expert_weights_scale,
                              .sel_bias = L->sel_bias,
                              .n_group = hp->n_group,
                              .n_group_used = hp->n_group_used};
}

/* Routes the n rows of ctx->d.h through layer L's router: ids and weights on the device. */
static void route_on_device(model_ctx *ctx, const model_layer *L, int64_t n)
{
    const model_hparams *hp = &ctx->m->hp;
    dev_scratch *s = &ctx->d;
    kern_router_opts ro = router_opts(hp, L);
    matmul(ctx, &L->router, s->h, s->router, n);
    if (L->router_bias) kern_add_bias(ctx->be, s->router, L->router_bias, n, hp->n_expert);
    kern_router(ctx->be, s->router, n, &ro, s->route_id, s->route_w);
    ctx->stats.dense_bytes += weight_bytes(&L->router);
}

static int copy_up_failed(model_ctx *ctx, int rc, char *err, size_t err_size)
{
    snprintf(err, err_size, "compute backend (%s): copy to the host failed: %s", ctx->be->name,
             strerror(-rc));
    return rc;
}

/* route_on_device, then the ids and weights brought up. */
static int route(model_ctx *ctx, const model_layer *L, int64_t n, char *err, size_t err_size)
{
    dev_scratch *s = &ctx->d;
    route_on_device(ctx, L, n);
    size_t nk = (size_t)n * (size_t)ctx->m->hp.n_expert_used;
    int rc = kern_copy(ctx->be, KERN_STREAM_COMPUTE, ctx->hs.route_w, s->route_w,
                       nk * sizeof *s->route_w, KERN_COPY_TO_HOST);
    if (rc) return copy_up_failed(ctx, rc, err, err_size);
    return download(ctx, ctx->hs.route_id, s->route_id, nk * sizeof *s->route_id, err, err_size);
}

/* Buckets tokens by expert on the host (kern_moe_align_host: the plan the device would make).
 * Returns the number of experts used, listed after it in hs.fill, or -EIO for an id the
 * router cannot have given. */
static int32_t bucket_tokens(model_ctx *ctx, int64_t n, char *err, size_t err_size)
{
    const model_hparams *hp = &ctx->m->hp;
    host_scratch *h = &ctx->hs;
    kern_moe_plan plan = {h->bucket_start, h->fill, h->bucket, h->comb_rows, h->comb_w};
    if (kern_moe_align_host(h->route_id, h->route_w, n, hp->n_expert_used, hp->n_expert, &plan)) {
        snprintf(err, err_size, "compute backend (%s): the router gave an expert id outside 0..%d",
                 ctx->be->name, hp->n_expert - 1);
        return -EIO;
    }
    return h->fill[0];
}

/* One SwiGLU FFN over n rows of `in`: out = down(silu(gate(in)) * up(in)). */
static void swiglu(model_ctx *ctx, const kern_weight *gate, const kern_weight *up,
                   const kern_weight *down, const float *in, float *g, float *u, float *out,
                   int64_t n)
{
    matmul(ctx, gate, in, g, n);
    matmul(ctx, up, in, u, n);
    kern_silu_mul(ctx->be, g, u, g, n * gate->n_rows);
    matmul(ctx, down, g, out, n);
}

/* Bucket of expert e of layer L as an experts-op entry with the weights of x, and its biases
 * where the backend that computes it reads them (the CPU computing a device tier's miss reads
 * the host's copy). */
static kern_ffn_expert ffn_expert(const model_ctx *ctx, const model_layer *L, const model_expert *x,
                                  int e, bool on_cpu)
{
    const model_hparams *hp = &ctx->m->hp;
    int32_t b0 = ctx->hs.bucket_start[e];
    kern_ffn_expert fe = {.gate = x->gate,
                          .up = x->up,
                          .down = x->down,
                          .row0 = b0,
                          .n_rows = ctx->hs.bucket_start[e + 1] - b0,
                          .glu = hp->glu};
    const float *const *bias = on_cpu ? L->exp_bias_host : L->exp_bias;
    if (bias[0]) {
        fe.gate_bias = bias[0] + (int64_t)e * hp->n_ff_exp;
        fe.up_bias = bias[1] + (int64_t)e * hp->n_ff_exp;
        fe.down_bias = bias[2] + (int64_t)e * hp->n_embd;
    }
    return fe;
}

static uint64_t expert_bytes(const kern_ffn_expert *x)
{
    return weight_bytes(&x->gate) + weight_bytes(&x->up) + weight_bytes(&x->down);
}

static double expert_macs(const kern_ffn_expert *x)
{
    return (double)x->n_rows *
           (double)(x->gate.n_rows * x->gate.n_cols * 2 + x->down.n_rows * x->down.n_cols);
}

/* What the CPU computing the n experts of `group` in `seconds` counts; their time teaches the
 * cost model the CPU's compute rate. */
static void cpu_account(model_ctx *ctx, const kern_ffn_expert *group, int n, double seconds,
                        bool lane)
{
    model *m = ctx->m;
    uint64_t bytes = 0;
    double macs = 0;
    for (int i = 0; i < n; i++) {
        bytes += expert_bytes(&group[i]);
        macs += expert_macs(&group[i]);
    }
    double compute = seconds - (double)bytes / m->cpu_bps;
    if (compute > 0 && macs > 0) /* a slow moving average: one odd timing must not swing it */
        m->cpu_s_per_mac = 0.9 * m->cpu_s_per_mac + 0.1 * compute / macs;
    ctx->stats.expert_bytes += bytes;
    ctx->stats.cpu_bytes += bytes;
    ctx->stats.experts_used += (uint32_t)n;
    ctx->stats.cpu_experts += (uint32_t)n;
    if (lane) ctx->stats.cpu_lane_experts += (uint32_t)n;
    ctx->stats.cpu_ns += (uint64_t)(seconds * 1e9);
    ctx->stats.matmul_macs += (uint64_t)macs;
    atomic_fetch_add(&m->cpu_experts, (uint64_t)n);
}

static double seconds_since(const struct timespec *t0)
{
    struct timespec t1;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    return (double)(t1.tv_sec - t0->tv_sec) + (double)(t1.tv_nsec - t0->tv_nsec) * 1e-9;
}

/* The n experts of hs.group on the CPU, here, from the host tier: their buckets' rows of hs.xe
 * in, of hs.de out. */
static void cpu_experts(model_ctx *ctx, int n)
{
    host_scratch *h = &ctx->hs;
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    kern_experts(ctx->m->cpu_backend, h->group, n, h->xe, h->de, h->ge, h->ue);
    cpu_account(ctx, h->group, n, seconds_since(&t0), false);
}

/* The cost model of a miss: the CPU reads the expert once from RAM and does count tokens of
 * work; a copy moves the expert over the link (the device's compute on it is small next to
 * either).  Batch-1 decode mostly goes to the CPU, prefill (many tokens) to the copy. */
static model_miss miss_cost(const model_ctx *ctx, const model_expert *x, int32_t e, int32_t count)
{
    const model *m = ctx->m;
    double bytes = (double)(weight_bytes(&x->gate) + weight_bytes(&x->up) + weight_bytes(&x->down));
    double macs = (double)count *
                  (double)(x->gate.n_rows * x->gate.n_cols * 2 + x->down.n_rows * x->down.n_cols);
    return (model_miss){.expert = e,
                        .t_cpu = bytes / m->cpu_bps + macs * m->cpu_s_per_mac,
                        .t_copy = m->link_latency_s + bytes / m->link_bps};
}

/* The n experts of hs.group on the compute backend: their buckets' rows of xe in, of de out. */
static void run_group(model_ctx *ctx, int n)
{
    dev_scratch *s = &ctx->d;
    kern_experts(ctx->be, ctx->hs.group, n, s->xe, s->de, s->ge, s->ue);
    for (int i = 0; i < n; i++) {
        ctx->stats.expert_bytes += expert_bytes(&ctx->hs.group[i]);
        ctx->stats.matmul_macs += (uint64_t)expert_macs(&ctx->hs.group[i]);
    }
    ctx->stats.experts_used += (uint32_t)n;
}

/* The experts-op entry of an expert a tier handed out, its parts where that tier holds them. */
static kern_ffn_expert tier_expert(const model_ctx *ctx, int il, const cache_ref *ref, bool on_cpu)
{
    const model_layer *L = &ctx->m->layers[il];
    model_expert x = L->experts[ref->expert];
    x.gate.data = ref->part[0];
    x.up.data = ref->part[1];
    x.down.data = ref->part[2];
    return ffn_expert(ctx, L, &x, ref->expert, on_cpu);
}

/* Requests the experts of layer il from tier c and runs those resident, as a group, as they
 * arrive: on the device (run_group) or, for the host tier of a device backend, on the CPU
 * (cpu_experts).  A failure here is the tier's: an expert that could not be read or copied. */
static int run_from_tier(model_ctx *ctx, cache *c, int il, const int32_t *experts, int32_t n,
                         bool on_cpu, char *err, size_t err_size)
{
    host_scratch *h = &ctx->hs;
    int rc = cache_request(c, il, experts, n, err, err_size);
    while (rc == 0 && (rc = cache_next(c, &h->refs[0], err, err_size)) == 0) {
        int k = 1;
        while (k < n && (rc = cache_try_next(c, &h->refs[k], err, err_size)) == 0)
            k++;
        for (int i = 0; i < k; i++)
            h->group[i] = tier_expert(ctx, il, &h->refs[i], on_cpu);
        if (rc == 0 || rc == 1 || rc == -EAGAIN) {
            if (on_cpu)
                cpu_experts(ctx, k);
            else
                run_group(ctx, k);
        }
        for (int i = 0; i < k; i++)
            cache_release(c, &h->refs[i]);
        if (rc == -EAGAIN) rc = 0;
    }
    if (rc < 0) ctx->stats.expert_read_failed = true;
    return rc < 0 ? rc : 0;
}

/* Which of layer il's experts the device computes (hs.on_device: its tier's hits and the misses
 * copied in) and which the CPU computes from the host tier (hs.on_cpu), each in the order of
 * `used`.  True when the CPU's share runs on the lane, at the same time as the link copies the
 * rest (model_split_misses balances the two); false when it runs after them, on this thread
 * (no lane, or a host tier too small to hold the CPU's share pinned and still read for the
 * copies), where each miss simply goes where it costs less. */
static bool split_layer(model_ctx *ctx, int il, const int32_t *used, int32_t n_used, int32_t *n_dev,
                        int32_t *n_cpu, bool *host_all)
{
    model *m = ctx->m;
    host_scratch *h = &ctx->hs;
    int32_t n_miss = 0, n_to_cpu = 0;
    for (int32_t j = 0; j < n_used; j++) {
        int e = used[j];
        h->to_cpu[e] = 0;
        if (cache_holds(m->experts, il, e)) continue;
        int32_t count = h->bucket_start[e + 1] - h->bucket_start[e];
        h->miss[n_miss++] = miss_cost(ctx, &m->layers[il].experts[e], e, count);
    }
    cache_stats hst;
    cache_get_stats(m->host_tier, &hst);
    *host_all = hst.all_resident;
    bool lane = ctx->lane != NULL;
    if (m->miss_policy == MODEL_MISS_CPU) {
        n_to_cpu = n_miss;
        lane = lane && (uint32_t)n_miss <= hst.n_slots;
        for (int32_t i = 0; i < n_miss; i++)
            h->miss[i].to_cpu = true;
    } else {
        if (lane) {
            model_split_misses(h->miss, n_miss);
            for (int32_t i = 0; i < n_miss; i++)
                n_to_cpu += h->miss[i].to_cpu;
            lane = (uint32_t)n_to_cpu + (n_to_cpu < n_miss) <= hst.n_slots;
        }
        if (!lane) {
            n_to_cpu = 0;
            for (int32_t i = 0; i < n_miss; i++) {
                h->miss[i].to_cpu = h->miss[i].t_cpu < h->miss[i].t_copy;
                n_to_cpu += h->miss[i].to_cpu;
            }
        }
    }
    for (int32_t i = 0; i < n_miss; i++)
        h->to_cpu[h->miss[i].expert] = h->miss[i].to_cpu;
    *n_dev = *n_cpu = 0;
    for (int32_t j = 0; j < n_used; j++) {
        if (h->to_cpu[used[j]])
            h->on_cpu[(*n_cpu)++] = used[j];
        else
            h->on_device[(*n_dev)++] = used[j];
    }
    return lane && n_to_cpu > 0;
}

/* Pins the CPU's share of layer il in the host tier (reading any it lacks) and makes its
 * experts-op entries (hs.cpu_refs, hs.cpu_group); they fit at once (split_layer). */
static int take_host_refs(model_ctx *ctx, int il, int32_t n_cpu, char *err, size_t err_size)
{
    host_scratch *h = &ctx->hs;
    cache *c = ctx->m->host_tier;
    int32_t k = 0;
    int rc = cache_request(c, il, h->on_cpu, n_cpu, err, err_size);
    while (rc == 0 && k < n_cpu && (rc = cache_next(c, &h->cpu_refs[k], err, err_size)) == 0) {
        h->cpu_group[k] = tier_expert(ctx, il, &h->cpu_refs[k], true);
        k++;
    }
    if (rc == 0) rc = cache_next(c, &(cache_ref){0}, err, err_size); /* 1: all handed out */
    if (rc == 1 && k == n_cpu) return 0;
    for (int32_t j = 0; j < k; j++)
        cache_release(c, &h->cpu_refs[j]);
    if (rc >= 0) { /* cannot happen: the request asked for n_cpu experts */
        snprintf(err, err_size, "cache: the host tier handed out %d of %d experts", k, n_cpu);
        rc = -EIO;
    }
    ctx->stats.expert_read_failed = true;
    return rc;
}

static int run_experts(model_ctx *ctx, int il, const int32_t *used, int32_t n_used, char *err,
                       size_t err_size)
{
    model *m = ctx->m;
    if (!m->experts) {
        for (int32_t j = 0; j < n_used; j++)
            ctx->hs.group[j] = ffn_expert(ctx, &m->layers[il], &m->layers[il].experts_dev[used[j]],
                                          used[j], false);
        run_group(ctx, n_used);
        return 0;
    }
    if (!cpu_misses(ctx))
        return run_from_tier(ctx, m->experts, il, used, n_used, false, err, err_size);

    host_scratch *h = &ctx->hs;
    int32_t n_dev = 0, n_cpu = 0;
    bool host_all = false;
    bool lane = split_layer(ctx, il, used, n_used, &n_dev, &n_cpu, &host_all);
    int64_t D = m->hp.n_embd;
    kern_backend *be = ctx->be;
    int rc = 0;
    for (int32_t j = 0; j < n_cpu && rc == 0; j++) { /* their inputs, right behind the gather */
        int32_t b0 = h->bucket_start[h->on_cpu[j]], count = h->bucket_start[h->on_cpu[j] + 1] - b0;
        rc =
            kern_copy(be, KERN_STREAM_COMPUTE, h->xe + (int64_t)b0 * D, ctx->d.xe + (int64_t)b0 * D,
                      (size_t)(count * D) * sizeof(float), KERN_COPY_TO_HOST);
    }
    if (rc == 0 && n_cpu) rc = kern_event_record(be, ctx->inputs_ready, KERN_STREAM_COMPUTE);
    if (rc) {
        snprintf(err, err_size, "compute backend (%s): copy to the host failed: %s", be->name,
                 strerror(-rc));
        return rc;
    }
    if (lane) {
        /* the host tier is the device tier's to use until its requests there are done (a
         * host tier that holds every expert needs no free slot for ours, so the copies of the
         * predictor's prefetches may go on; a smaller one waits for them to land and unpin
         * what they read); then the CPU's experts are pinned there for the lane, which starts
         * on them as soon as their inputs land, while this thread queues the device's hits and
         * feeds it the copies */
        if ((rc = host_all ? cache_wait_upper(m->experts, err, err_size)
                           : cache_wait_idle(m->experts, err, err_size)) ||
            (rc = take_host_refs(ctx, il, n_cpu, err, err_size)))
            return rc;
        model_cpu_lane_post(ctx->lane, &(model_cpu_job){.dev = be,
                                                        .inputs = ctx->inputs_ready,
                                                        .cpu = m->cpu_backend,
                                                        .experts = h->cpu_group,
                                                        .n_experts = n_cpu,
                                                        .x = h->xe,
                                                        .out = h->de,
                                                        .g = h->ge,
                                                        .u = h->ue});
    }
    if (n_dev) rc = run_from_tier(ctx, m->experts, il, h->on_device, n_dev, false, err, err_size);
    if (lane) {
        struct timespec t0;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        double seconds = 0;
        int lane_rc = model_cpu_lane_join(ctx->lane, &seconds);
        ctx->stats.cpu_wait_ns += (uint64_t)(seconds_since(&t0) * 1e9);
        for (int32_t j = 0; j < n_cpu; j++)
            cache_release(m->host_tier, &h->cpu_refs[j]);
        if (rc) return rc;
        if (lane_rc) {
            snprintf(err, err_size, "compute backend (%s): waiting for the CPU experts' inputs: %s",
                     be->name, strerror(-lane_rc));
            return lane_rc;
        }
        cpu_account(ctx, h->cpu_group, n_cpu, seconds, true);
    } else if (rc == 0 && n_cpu) {
        if ((rc = kern_event_wait(be, ctx->inputs_ready)) ||
            (rc = cache_wait_idle(m->experts, err, err_size)) ||
            (rc = run_from_tier(ctx, m->host_tier, il, h->on_cpu, n_cpu, true, err, err_size)))
            return rc;
    }
    for (int32_t j = 0; j < n_cpu && rc == 0; j++) { /* their outputs, in the buckets' rows */
        int32_t b0 = h->bucket_start[h->on_cpu[j]], count = h->bucket_start[h->on_cpu[j] + 1] - b0;
        rc = upload(ctx, ctx->d.de + (int64_t)b0 * D, h->de + (int64_t)b0 * D,
                    (size_t)(count * D) * sizeof(float), err, err_size);
    }
    return rc;
}

/* The routed experts of layer L over ctx->d.h into ctx->d.moe, through the host: the ids come
 * up, the host buckets them and asks the tiers, and the plan goes back down. */
static int experts_via_host(model_ctx *ctx, const model_layer *L, int il, int64_t n, char *err,
                            size_t err_size)
{
    model *m = ctx->m;
    const model_hparams *hp = &m->hp;
    dev_scratch *s = &ctx->d;
    host_scratch *h = &ctx->hs;
    int E = hp->n_expert, K = hp->n_expert_used;
    size_t nk = (size_t)n * (size_t)K;
    int rc = route(ctx, L, n, err, err_size);
    if (rc) return rc;
    int32_t n_used = bucket_tokens(ctx, n, err, err_size);
    if (n_used < 0) return n_used;
    const int32_t *used = h->fill + 1;
    for (int32_t u = 0; u < n_used; u++)
        atomic_fetch_add(&m->expert_tokens[(size_t)il * (size_t)E + (size_t)used[u]],
                         (uint64_t)(h->bucket_start[used[u] + 1] - h->bucket_start[used[u]]));
    if (m->predictor) pred_observe(m->predictor, il, h->route_id, n);
    if ((rc = upload(ctx, s->bucket, h->bucket, nk * sizeof *h->bucket, err, err_size)) ||
        (rc = upload(ctx, s->comb_rows, h->comb_rows, nk * sizeof *h->comb_rows, err, err_size)) ||
        (rc = upload(ctx, s->comb_w, h->comb_w, nk * sizeof *h->comb_w, err, err_size)))
        return rc;
    kern_gather(ctx->be, s->h, s->bucket, s->xe, (int64_t)nk, hp->n_embd);
    if ((rc = run_experts(ctx, il, used, n_used, err, err_size))) return rc;
    kern_moe_combine(ctx->be, s->de, s->comb_rows, s->comb_w, s->moe, n, K, hp->n_embd);
    return 0;
}

/* The same on the device alone: the plan made there (moe_align), the experts found through
 * the layer's table (experts_routed).  The ids are copied up behind the work, for the counts
 * account_routed makes once the step is done. */
static int experts_on_device(model_ctx *ctx, const model_layer *L, int il, int64_t n, char *err,
                             size_t err_size)
{
    const model_hparams *hp = &ctx->m->hp;
    kern_backend *be = ctx->be;
    dev_scratch *s = &ctx->d;
    int K = hp->n_expert_used;
    int64_t nk = n * K;
    route_on_device(ctx, L, n);
    int rc = kern_copy(be, KERN_STREAM_COMPUTE, ctx->hs.layer_ids + il * nk, s->route_id,
                       (size_t)nk * sizeof *s->route_id, KERN_COPY_TO_HOST);
    if (rc) return copy_up_failed(ctx, rc, err, err_size);
    kern_moe_plan plan = {s->bucket_start, s->used, s->bucket, s->comb_rows, s->comb_w};
    kern_moe_align(be, s->route_id, s->route_w, n, K, hp->n_expert, &plan);
    kern_gather(be, s->h, s->bucket, s->xe, nk, hp->n_embd);
    kern_experts_routed(be, &ctx->tables[il], &plan, n, K, s->xe, s->de, s->ge, s->ue);
    kern_moe_combine(be, s->de, s->comb_rows, s->comb_w, s->moe, n, K, hp->n_embd);
    return 0;
}

static int moe(model_ctx *ctx, const model_layer *L, int il, int64_t n, char *err, size_t err_size)
{
    model *m = ctx->m;
    const model_hparams *hp = &m->hp;
    kern_backend *be = ctx->be;
    dev_scratch *s = &ctx->d;
    int64_t D = hp->n_embd;

    kern_rmsnorm(be, s->x, L->ffn_norm, s->h, D, n, D, hp->rms_eps);
    int rc = ctx->stats.routed_on_device ? experts_on_device(ctx, L, il, n, err, err_size)
                                         : experts_via_host(ctx, L, il, n, err, err_size);
    if (rc) return rc;
    if (hp->has_shared_expert) {
        swiglu(ctx, &L->shexp_gate, &L->shexp_up, &L->shexp_down, s->h, s->shg, s->shu, s->shd, n);
        if (L->shexp_gate_inp)
            kern_gate_add(be, s->h, L->shexp_gate_inp, s->shd, s->moe, n, D);
        else
            kern_add(be, s->moe, s->shd, n * D);
        ctx->stats.dense_bytes += weight_bytes(&L->shexp_gate) + weight_bytes(&L->shexp_up) +
                                  weight_bytes(&L->shexp_down);
    }
    kern_add(be, s->x, s->moe, n * D);
    return 0;
}

/* ---- routing on the device ---------------------------------------------------------------- */

static void tables_free(model_ctx *ctx)
{
    graphs_drop(ctx);
    if (ctx->table_parts) kern_free(ctx->be, KERN_MEM_DEVICE, (void *)ctx->table_parts);
    free(ctx->tables);
    ctx->tables = NULL;
    ctx->table_parts = NULL;
    ctx->table_src = NULL;
}

/* The layers' expert tables from where the experts are on the device; false (no table) when
 * one is not there, or memory is short: the step then routes through the host. */
static bool tables_build(model_ctx *ctx)
{
    model *m = ctx->m;
    const model_hparams *hp = &m->hp;
    tables_free(ctx);
    size_t per_layer = (size_t)hp->n_expert * 3,
           bytes = (size_t)hp->n_layer * per_layer * sizeof(void *);
    const void **parts = calloc((size_t)hp->n_layer * per_layer, sizeof *parts);
    kern_expert_table *tables = calloc((size_t)hp->n_layer, sizeof *tables);
    bool ok = parts && tables;
    for (int il = hp->n_layer_dense; ok && il < hp->n_layer; il++)
        for (int e = 0; ok && e < hp->n_expert; e++) {
            const void **p = parts + (size_t)il * per_layer + (size_t)e * 3;
            if (m->experts) {
                ok = cache_resident_parts(m->experts, il, e, p);
            } else {
                const model_expert *x = &m->layers[il].experts_dev[e];
                p[0] = x->gate.data, p[1] = x->up.data, p[2] = x->down.data;
            }
        }
    void *dev = NULL;
    char ignored[128];
    ok = ok && kern_alloc(ctx->be, KERN_MEM_DEVICE, bytes, &dev) == 0;
    ok = ok &&
         kern_copy(ctx->be, KERN_STREAM_COMPUTE, dev, parts, bytes, KERN_COPY_TO_DEVICE) == 0 &&
         kern_sync(ctx->be, ignored, sizeof ignored) == 0;
    free(parts);
    if (!ok) {
        if (dev) kern_free(ctx->be, KERN_MEM_DEVICE, dev);
        free(tables);
        return false;
    }
    for (int il = hp->n_layer_dense; il < hp->n_layer; il++) {
        const model_layer *L = &m->layers[il];
        tables[il] = (kern_expert_table){.gate = L->experts[0].gate,
                                         .up = L->experts[0].up,
                                         .down = L->experts[0].down,
                                         .parts = (const void *const *)dev + (size_t)il * per_layer,
                                         .gate_bias = L->exp_bias[0],
                                         .up_bias = L->exp_bias[1],
                                         .down_bias = L->exp_bias[2],
                                         .n_expert = hp->n_expert,
                                         .glu = hp->glu};
    }
    ctx->tables = tables;
    ctx->table_parts = dev;
    ctx->table_src = m->experts;
    return true;
}

/* Whether this step routes on the device: a device backend with every expert on it (placed,
 * or in a device tier that holds them all, whose slots never change).  A predictor then has
 * nothing to prefetch and idles (predict_next), rather than bring every layer's ids up. */
static bool route_on_device_now(model_ctx *ctx)
{
    model *m = ctx->m;
    const model_hparams *hp = &m->hp;
    if (ctx->host_routing || ctx->be->kind == KERN_BACKEND_CPU || hp->n_expert == 0 ||
        hp->n_layer_dense >= hp->n_layer)
        return false;
    if (ctx->tables && ctx->table_src == m->experts) return true;
    if (m->experts) {
        if (m->experts == m->host_tier) return false;
        cache_stats st;
        cache_get_stats(m->experts, &st);
        if (!st.all_resident) return false;
    } else if (!m->experts_placed) {
        return false;
    }
    return tables_build(ctx);
}

/* After a step routed on the device, what the host path counts as it goes: tokens per expert,
 * the experts' bytes and work, and, for a device tier, its requests (all hits: it holds every
 * expert), so that its counters and trace read as they would. */
static int account_routed(model_ctx *ctx, int64_t n, char *err, size_t err_size)
{
    model *m = ctx->m;
    const model_hparams *hp = &m->hp;
    host_scratch *h = &ctx->hs;
    int E = hp->n_expert, K = hp->n_expert_used;
    int32_t *count = h->bucket_start, *used = h->fill;
    for (int il = hp->n_layer_dense; il < hp->n_layer; il++) {
        const int32_t *ids = h->layer_ids + (int64_t)il * n * K;
        memset(count, 0, (size_t)E * sizeof *count);
        for (int64_t i = 0; i < n * K; i++) {
            if (ids[i] < 0 || ids[i] >= E) {
                snprintf(err, err_size, "layer %d: the router gave expert id %d (of %d)", il,
                         ids[i], E);
                return -EIO;
            }
            count[ids[i]]++;
        }
        int32_t n_used = 0;
        for (int e = 0; e < E; e++) {
            if (!count[e]) continue;
            used[n_used++] = e;
            atomic_fetch_add(&m->expert_tokens[(size_t)il * (size_t)E + (size_t)e],
                             (uint64_t)count[e]);
            const model_expert *x = &m->layers[il].experts[e];
            kern_ffn_expert f = {.gate = x->gate, .up = x->up, .down = x->down, .n_rows = count[e]};
            ctx->stats.expert_bytes += expert_bytes(&f);
            ctx->stats.matmul_macs += (uint64_t)expert_macs(&f);
        }
        ctx->stats.experts_used += (uint32_t)n_used;
        if (!m->experts) continue;
        cache_ref ref;
        int rc = cache_request(m->experts, il, used, n_used, err, err_size);
        while (rc == 0 && (rc = cache_next(m->experts, &ref, err, err_size)) == 0)
            cache_release(m->experts, &ref);
        if (rc < 0) return rc;
    }
    return 0;
}

/* A leading dense layer (glm4moe): x += down(silu(gate h) * up h), h = rmsnorm(x). */
static void dense_ffn(model_ctx *ctx, const model_layer *L, int64_t n)
{
    const model_hparams *hp = &ctx->m->hp;
    dev_scratch *s = &ctx->d;
    int64_t D = hp->n_embd;
    kern_rmsnorm(ctx->be, s->x, L->ffn_norm, s->h, D, n, D, hp->rms_eps);
    swiglu(ctx, &L->ffn_gate, &L->ffn_up, &L->ffn_down, s->h, s->shg, s->shu, s->shd, n);
    kern_add(ctx->be, s->x, s->shd, n * D);
    ctx->stats.dense_bytes +=
        weight_bytes(&L->ffn_gate) + weight_bytes(&L->ffn_up) + weight_bytes(&L->ffn_down);
}

/* ---- routing prediction ------------------------------------------------------------------- */

/* The least probability worth a prefetch.  A wrong guess costs a read and a slot; a right
 * one saves a stall.  When reads already keep up (no stall), a read costs little: guesses
 * from 10% are fetched.  When the engine waits on reads, a wasted read delays a demanded one
 * by as much as a right guess saves, so a guess must be right more often than wrong: 50%.
 * In between, linearly in the share of step time spent stalled (saturating at one half). */
static float prefetch_threshold(const model *m)
{
    if (m->min_prob >= 0.0f) return m->min_prob;
    double stall = m->stall_share > 0.5 ? 0.5 : m->stall_share;
    return (float)(0.1 + 0.8 * stall);
}

/* Guesses the experts of the `lookahead` layers after il (deepest first, so that the nearest,
 * most accurate guess is the one a layer is scored on): pre-gating applies each target
 * layer's router to the current hidden state; the counts start from the tokens' experts of
 * layer il (hs.route_id still holds them).  The guesses are scored when their layers route
 * and, with an expert cache, the likely ones are read while the layers in between compute. */
static int predict_next(model_ctx *ctx, int il, int64_t n, char *err, size_t err_size)
{
    model *m = ctx->m;
    const model_hparams *hp = &m->hp;
    host_scratch *h = &ctx->hs;
    /* a dense layer routed nothing: no experts to count from, and the MoE layers after it are
     * guessed from the first of them; a step routed on the device has every expert there, so
     * nothing to prefetch (and its ids stay on the device): the predictor idles */
    if (!m->predictor || il < hp->n_layer_dense || ctx->stats.routed_on_device) return 0;
    int64_t E = hp->n_expert;
    bool router = pred_kind_uses_router(pred_get_kind(m->predictor));
    for (int k = pred_lookahead(m->predictor); k >= 1; k--) {
        int target = il + k;
        if (target >= hp->n_layer) continue;
        int rc;
        if (router) {
            const model_layer *L = &m->layers[target];
            kern_rmsnorm(ctx->be, ctx->d.x, L->ffn_norm, ctx->d.h, hp->n_embd, n, hp->n_embd,
                         hp->rms_eps);
            matmul(ctx, &L->router, ctx->d.h, ctx->d.router, n);
            ctx->stats.dense_bytes += weight_bytes(&L->router);
            if ((rc = download(ctx, h->router, ctx->d.router, (size_t)(n * E) * sizeof *h->router,
                               err, err_size)))
                return rc;
        }
        int32_t n_guess = pred_predict(m->predictor, il, k, h->route_id, router ? h->router : NULL,
                                       n, h->guess, h->guess_p);
        if (n_guess < 0) {
            snprintf(err, err_size, "predictor: out of memory for a batch of %lld tokens",
                     (long long)n);
            return n_guess;
        }
        if (m->experts && n_guess > 0 &&
            (rc = cache_predict(m->experts, target, h->guess, h->guess_p, n_guess,
                                prefetch_threshold(m), err, err_size)) < 0)
            return rc;
    }
    return 0;
}

/* ---- the step ---------------------------------------------------------------------------- */

static int check_batch(const model_ctx *ctx, const model_batch *b, char *err, size_t err_size)
{
    if (b->n_tokens <= 0) {
        snprintf(err, err_size, "empty batch");
        return -EINVAL;
    }
    for (int32_t t = 0; t < b->n_tokens; t++) {
        if (b->token[t] < 0 || b->token[t] >= ctx->m->hp.n_vocab) {
            snprintf(err, err_size, "token %d of the batch: id %d outside the vocabulary (%d)", t,
                     b->token[t], ctx->m->hp.n_vocab);
            return -EINVAL;
        }
        if (b->seq[t] < 0 || b->seq[t] >= ctx->n_seq) {
            snprintf(err, err_size, "token %d of the batch: sequence %d outside 0..%d", t,
                     b->seq[t], ctx->n_seq - 1);
            return -EINVAL;
        }
        if (b->pos[t] < 0 || b->pos[t] >= ctx->n_ctx) {
            snprintf(err, err_size, "token %d of the batch: position %d outside the context (%d)",
                     t, b->pos[t], ctx->n_ctx);
            return -EINVAL;
        }
    }
    return 0;
}

/* The batch's ids, positions and sequences go to the device, and every position it stores gets
 * a KV block. */
static int begin_step(model_ctx *ctx, const model_batch *b, char *err, size_t err_size)
{
    size_t n = (size_t)b->n_tokens;
    for (int32_t t = 0; t < b->n_tokens; t++) {
        int rc = kern_kv_reserve(ctx->kv, b->seq[t], b->pos[t] + 1, err, err_size);
        if (rc) return rc;
    }
    int rc;
    if ((rc = upload(ctx, ctx->d.token, b->token, n * sizeof *b->token, err, err_size)) ||
        (rc = upload(ctx, ctx->d.pos, b->pos, n * sizeof *b->pos, err, err_size)) ||
        (rc = upload(ctx, ctx->d.seq, b->seq, n * sizeof *b->seq, err, err_size)))
        return rc;
    if (ctx->m->hp.mla) {
        mla_shape ms = mla_shape_of(&ctx->m->hp);
        mla_indices(&ms, (int64_t)n, ctx->hs.mla_idx);
        return upload(ctx, ctx->d.mla_idx, ctx->hs.mla_idx,
                      n * (size_t)ms.idx_per_token * sizeof *ctx->hs.mla_idx, err, err_size);
    }
    return 0;
}

/* Everything a step queues once its inputs are on the device: the embeddings, the layers and,
 * for the n_out rows listed in d.out_rows, the head into d.logits. */
static int queue_step(model_ctx *ctx, int64_t n, int64_t n_out, char *err, size_t err_size)
{
    model *m = ctx->m;
    const model_hparams *hp = &m->hp;
    kern_backend *be = ctx->be;
    dev_scratch *s = &ctx->d;
    int64_t D = hp->n_embd;
    int rc;
    kern_get_rows(be, &m->tok_embd, s->token, s->x, n);
    ctx->stats.dense_bytes += (uint64_t)n * m->tok_embd.row_bytes;
    struct timespec t0, t1;
    cache_stats c0, c1;
    bool watch_stalls = m->predictor && m->experts && m->min_prob < 0.0f;
    if (watch_stalls) {
        cache_get_stats(m->experts, &c0);
        clock_gettime(CLOCK_MONOTONIC, &t0);
    }
    for (int il = 0; il < hp->n_layer; il++) {
        const model_layer *L = &m->layers[il];
        ctx->stats.dense_bytes += 2 * D * sizeof(float);
        if (hp->mla)
            mla_attention(ctx, L, il, n);
        else
            attention(ctx, L, il, n);
        if (il < hp->n_layer_dense)
            dense_ffn(ctx, L, n);
        else if ((rc = moe(ctx, L, il, n, err, err_size)))
            return rc;
        if ((rc = predict_next(ctx, il, n, err, err_size))) return rc;
    }
    if (watch_stalls) { /* the prefetch threshold follows how much the steps wait on reads */
        cache_get_stats(m->experts, &c1);
        clock_gettime(CLOCK_MONOTONIC, &t1);
        double dt = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
        double share = dt > 0 ? 1e-9 * (double)(c1.stall_ns - c0.stall_ns) / dt : 0.0;
        m->stall_share = 0.8 * m->stall_share + 0.2 * (share > 1.0 ? 1.0 : share);
    }
    ctx->stats.dense_bytes += m->head_bytes;
    if (n_out == 0) return 0;
    kern_gather(be, s->x, s->out_rows, s->h, n_out, D);
    kern_rmsnorm(be, s->h, m->output_norm, s->h, D, n_out, D, hp->rms_eps);
    matmul(ctx, &m->output, s->h, s->logits, n_out);
    return 0;
}

/* Whether a step of this shape ran plainly lately; with note, remember that one did. */
static bool ran_plainly(model_ctx *ctx, int64_t n, int64_t n_out, bool note)
{
    const size_t n_shapes = sizeof ctx->plain / sizeof ctx->plain[0];
    for (size_t i = 0; i < n_shapes; i++)
        if (ctx->plain[i].n == n && ctx->plain[i].n_out == n_out) return true;
    if (note) {
        ctx->plain[ctx->next_plain] = (struct step_shape){n, n_out};
        ctx->next_plain = (ctx->next_plain + 1) % (int)n_shapes;
    }
    return false;
}

static int graph_launch_failed(model_ctx *ctx, int rc, char *err, size_t err_size)
{
    snprintf(err, err_size, "compute backend (%s): launching the step's graph: %s", ctx->be->name,
             strerror(-rc));
    return rc;
}

/* queue_step, or a graph of it: replayed when this shape has one; recorded, then launched, when
 * the shape ran plainly before (so no scratch grows while recording).  A step that routes
 * through the host waits on the device inside, which a recording cannot hold. */
static int run_step(model_ctx *ctx, int64_t n, int64_t n_out, char *err, size_t err_size)
{
    kern_backend *be = ctx->be;
    if (!ctx->stats.routed_on_device || ctx->no_graphs || !kern_has_graphs(be))
        return queue_step(ctx, n, n_out, err, err_size);
    int rc;
    const size_t n_graphs = sizeof ctx->graphs / sizeof ctx->graphs[0];
    for (size_t i = 0; i < n_graphs; i++) {
        struct step_graph *sg = &ctx->graphs[i];
        if (!sg->g || sg->n != n || sg->n_out != n_out) continue;
        if ((rc = kern_graph_launch(be, sg->g)) == 0) {
            ctx->stats.dense_bytes += sg->dense_bytes;
            ctx->stats.matmul_macs += sg->matmul_macs;
            ctx->stats.graph_replayed = true;
            return 0;
        }
        /* -ESTALE: the backend's scratch moved (grew: big enough now), so record it again */
        kern_graph_destroy(be, &sg->g);
        if (rc != -ESTALE) return graph_launch_failed(ctx, rc, err, err_size);
        break;
    }
    if (ran_plainly(ctx, n, n_out, false) && kern_capture_begin(be) == 0) {
        model_step_stats before = ctx->stats;
        rc = queue_step(ctx, n, n_out, err, err_size);
        kern_graph *g = NULL;
        char why[200];
        int rc_end = kern_capture_end(be, &g, why, sizeof why);
        if (rc) {
            kern_graph_destroy(be, &g);
            return rc;
        }
        if (rc_end == 0) {
            /* a free slot, else the next in turn */
            struct step_graph *sg = NULL;
            for (size_t i = 0; i < n_graphs && !sg; i++)
                if (!ctx->graphs[i].g) sg = &ctx->graphs[i];
            if (!sg) {
                sg = &ctx->graphs[ctx->next_graph];
                ctx->next_graph = (ctx->next_graph + 1) % (int)n_graphs;
                kern_graph_destroy(be, &sg->g);
            }
            *sg = (struct step_graph){.g = g,
                                      .n = n,
                                      .n_out = n_out,
                                      .dense_bytes = ctx->stats.dense_bytes - before.dense_bytes,
                                      .matmul_macs = ctx->stats.matmul_macs - before.matmul_macs};
            if ((rc = kern_graph_launch(be, g))) return graph_launch_failed(ctx, rc, err, err_size);
            ctx->stats.graph_captured = true;
            return 0;
        }
        /* A scratch that had to grow (-EAGAIN) grows in the plain step below, and the next
         * recording holds; what else the backend cannot record, it will not later either. */
        if (rc_end != -EAGAIN) {
            ctx->no_graphs = true;
            snprintf(ctx->graph_error, sizeof ctx->graph_error, "%s", why);
        }
        ctx->stats = before;
    }
    (void)ran_plainly(ctx, n, n_out, true);
    return queue_step(ctx, n, n_out, err, err_size);
}

int model_forward(model_ctx *ctx, const model_batch *b, float *logits, char *err, size_t err_size)
{
    model *m = ctx->m;
    const model_hparams *hp = &m->hp;
    kern_backend *be = ctx->be;
    int rc = check_batch(ctx, b, err, err_size);
    if (rc) return rc;
    int64_t n = b->n_tokens;
    if ((rc = scratch_reserve(ctx, n))) {
        snprintf(err, err_size, "scratch for a batch of %lld tokens: out of %s memory",
                 (long long)n, be->kind == KERN_BACKEND_CPU ? "host" : "device");
        return rc;
    }
    dev_scratch *s = &ctx->d;
    memset(&ctx->stats, 0, sizeof ctx->stats);
    char stale[64];
    (void)kern_sync(be, stale,
                    sizeof stale); /* a failure of an earlier, abandoned step is not ours */
    ctx->stats.routed_on_device = route_on_device_now(ctx);
    if ((rc = begin_step(ctx, b, err, err_size))) return rc;

    int64_t n_out = 0;
    for (int64_t t = 0; t < n; t++)
        if (b->want_logits ? b->want_logits[t] != 0 : t == n - 1)
            ctx->hs.out_rows[n_out++] = (int32_t)t;
    if (n_out > 0 && (rc = upload(ctx, s->out_rows, ctx->hs.out_rows,
                                  (size_t)n_out * sizeof *s->out_rows, err, err_size)))
        return rc;
    if (n_out > ctx->cap_logits) {
        graphs_drop(ctx);
        kern_free(be, KERN_MEM_DEVICE, s->logits);
        s->logits = NULL;
        ctx->cap_logits = 0;
        if ((rc = kern_alloc(be, KERN_MEM_DEVICE, (size_t)(n_out * hp->n_vocab) * sizeof *s->logits,
                             (void **)&s->logits))) {
            snprintf(err, err_size, "logits of %lld tokens: out of %s memory", (long long)n_out,
                     be->kind == KERN_BACKEND_CPU ? "host" : "device");
            return rc;
        }
        ctx->cap_logits = n_out;
    }
    if ((rc = run_step(ctx, n, n_out, err, err_size))) return rc;
    rc = n_out == 0 ? sync_step(ctx, err, err_size)
                    : download(ctx, logits, s->logits,
                               (size_t)(n_out * hp->n_vocab) * sizeof *logits, err, err_size);
    return rc == 0 && ctx->stats.routed_on_device ? account_routed(ctx, n, err, err_size) : rc;
}

int32_t model_argmax(const float *logits, int32_t n_vocab)
{
    int32_t best = 0;
    for (int32_t i = 1; i < n_vocab; i++)
        if (logits[i] > logits[best]) best = i;
    return best;
}
