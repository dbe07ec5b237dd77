/*
 * The forward pass over a batch of tokens, read top to bottom like the math:
 *
 *   x = embed(tokens)
 *   for each layer:  x += attention(rmsnorm(x))          (GQA, RoPE, optional Q/K norm)
 *                    x += moe(rmsnorm(x))                 (router top-k, grouped experts)
 *   logits = output · rmsnorm(x)                          (only for the tokens that ask)
 *
 * Experts run grouped: the batch's tokens are bucketed by the experts the router picked, and
 * each selected expert runs once over its bucket, so its weights are read once per step no
 * matter how many tokens chose it.  Each token's contributions are summed in ascending expert
 * order, which makes a sequence's result independent of the batch it shares.
 */
#include "model/model_internal.h"

#include <errno.h>
#include <stdatomic.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Scratch for one step; grown (never shrunk) when a larger batch arrives. */
typedef struct scratch {
    int64_t cap_tokens;
    float *x, *h, *q, *k, *v, *attn, *proj, *moe;
    float *router, *route_w;
    int32_t *route_id;
    float *xe, *ge, *ue;         /* one expert's bucket: inputs, gate, up */
    float *de;                   /* every bucket's down outputs, in bucket order */
    float *shg, *shu, *shd;      /* shared expert */
    int32_t *bucket;             /* token indices per expert, concatenated */
    float *bucket_w;
    int32_t *bucket_start;       /* n_expert + 1 */
    kern_attn_token *attn_tok;
    int32_t *out_rows;           /* tokens whose logits are wanted */
    float *probs;                /* n_expert: one token's routing probabilities */
    int32_t *fill;               /* n_expert: bucket cursors, then the experts used */
    int32_t *guess;              /* n_expert: the next layer's predicted experts */
    uint8_t *mark;               /* n_expert */
} scratch;

struct model_ctx {
    model *m;
    int32_t n_seq;
    int32_t n_ctx;
    int64_t kv_dim;
    float *k_cache; /* [n_seq][n_layer][n_ctx][kv_dim] */
    float *v_cache;
    scratch s;
    model_step_stats stats;
};

static float *kv_slot(const model_ctx *ctx, float *base, int32_t seq, int layer, int32_t pos)
{
    size_t per_layer = (size_t)ctx->n_ctx * (size_t)ctx->kv_dim;
    size_t per_seq = per_layer * (size_t)ctx->m->hp.n_layer;
    return base + (size_t)seq * per_seq + (size_t)layer * per_layer + (size_t)pos * ctx->kv_dim;
}

int model_ctx_create(model_ctx **out, model *m, const model_ctx_opts *opts, char *err,
                     size_t err_size)
{
    *out = NULL;
    const model_hparams *hp = &m->hp;
    int32_t n_seq = opts && opts->n_seq > 0 ? opts->n_seq : 1;
    int32_t n_ctx = opts && opts->n_ctx > 0 ? opts->n_ctx : hp->n_ctx_train;
    if (n_ctx <= 0) n_ctx = 4096;
    model_ctx *ctx = calloc(1, sizeof *ctx);
    if (!ctx) goto nomem;
    ctx->m = m;
    ctx->n_seq = n_seq;
    ctx->n_ctx = n_ctx;
    ctx->kv_dim = (int64_t)hp->n_head_kv * hp->head_dim;
    size_t n_floats = (size_t)n_seq * (size_t)hp->n_layer * (size_t)n_ctx * (size_t)ctx->kv_dim;
    /* calloc: untouched pages of a large KV budget cost no memory until used */
    ctx->k_cache = calloc(n_floats, sizeof(float));
    ctx->v_cache = calloc(n_floats, sizeof(float));
    if (!ctx->k_cache || !ctx->v_cache) {
        snprintf(err, err_size, "KV cache of %zu bytes (%d sequences x %d positions): out of memory",
                 2 * n_floats * sizeof(float), n_seq, n_ctx);
        model_ctx_destroy(&ctx);
        return -ENOMEM;
    }
    *out = ctx;
    return 0;
nomem:
    snprintf(err, err_size, "out of memory");
    return -ENOMEM;
}

static void scratch_free(scratch *s)
{
    free(s->x); free(s->h); free(s->q); free(s->k); free(s->v); free(s->attn); free(s->proj);
    free(s->moe); free(s->router); free(s->route_w); free(s->route_id); free(s->xe); free(s->ge);
    free(s->ue); free(s->de); free(s->shg); free(s->shu); free(s->shd); free(s->bucket);
    free(s->bucket_w); free(s->bucket_start); free(s->attn_tok); free(s->out_rows);
    free(s->probs); free(s->fill); free(s->guess); free(s->mark);
    memset(s, 0, sizeof *s);
}

void model_ctx_destroy(model_ctx **ctxp)
{
    model_ctx *ctx = *ctxp;
    if (!ctx) return;
    scratch_free(&ctx->s);
    free(ctx->k_cache);
    free(ctx->v_cache);
    free(ctx);
    *ctxp = NULL;
}

int32_t model_ctx_n_ctx(const model_ctx *ctx)
{
    return ctx->n_ctx;
}

size_t model_ctx_kv_bytes(const model_ctx *ctx)
{
    return 2 * sizeof(float) * (size_t)ctx->n_seq * (size_t)ctx->m->hp.n_layer *
           (size_t)ctx->n_ctx * (size_t)ctx->kv_dim;
}

void model_ctx_clear_seq(model_ctx *ctx, int32_t seq)
{
    /* Nothing to free: positions are overwritten before they are read again. */
    (void)ctx;
    (void)seq;
}

const model_step_stats *model_ctx_last_stats(const model_ctx *ctx)
{
    return &ctx->stats;
}

static int scratch_reserve(model_ctx *ctx, int64_t n)
{
    scratch *s = &ctx->s;
    if (n <= s->cap_tokens) return 0;
    const model_hparams *hp = &ctx->m->hp;
    int64_t q_dim = (int64_t)hp->n_head * hp->head_dim;
    int64_t ff = hp->n_ff_exp > hp->n_ff_shexp ? hp->n_ff_exp : hp->n_ff_shexp;
    int64_t k = hp->n_expert_used;
    scratch_free(s);
#define ALLOC(field, count) (s->field = malloc((size_t)(count) * sizeof *s->field)) == NULL
    if (ALLOC(x, n * hp->n_embd) || ALLOC(h, n * hp->n_embd) || ALLOC(q, n * q_dim) ||
        ALLOC(k, n * ctx->kv_dim) || ALLOC(v, n * ctx->kv_dim) || ALLOC(attn, n * q_dim) ||
        ALLOC(proj, n * hp->n_embd) || ALLOC(moe, n * hp->n_embd) ||
        ALLOC(router, n * hp->n_expert) || ALLOC(route_w, n * k) || ALLOC(route_id, n * k) ||
        ALLOC(xe, n * hp->n_embd) || ALLOC(ge, n * ff) || ALLOC(ue, n * ff) ||
        ALLOC(de, n * k * hp->n_embd) || ALLOC(shg, n * ff) || ALLOC(shu, n * ff) ||
        ALLOC(shd, n * hp->n_embd) || ALLOC(bucket, n * k) || ALLOC(bucket_w, n * k) ||
        ALLOC(bucket_start, hp->n_expert + 1) || ALLOC(attn_tok, n) || ALLOC(out_rows, n) ||
        ALLOC(probs, hp->n_expert) || ALLOC(fill, hp->n_expert) || ALLOC(guess, hp->n_expert) ||
        ALLOC(mark, hp->n_expert)) {
        scratch_free(s);
        return -ENOMEM;
    }
#undef ALLOC
    s->cap_tokens = n;
    return 0;
}

static uint64_t weight_bytes(const kern_weight *w)
{
    return (uint64_t)w->row_bytes * (uint64_t)w->n_rows;
}

/* Every weight product of the step goes through here, which keeps the work count honest. */
static void matmul(model_ctx *ctx, const kern_weight *w, const float *x, float *y, int64_t n)
{
    kern_matmul(ctx->m->backend, w, x, y, n);
    ctx->stats.matmul_macs += (uint64_t)n * (uint64_t)w->n_rows * (uint64_t)w->n_cols;
}

/* ---- attention -------------------------------------------------------------------------- */

static void add_bias(float *x, const float *bias, int64_t n_tokens, int64_t dim)
{
    for (int64_t t = 0; t < n_tokens; t++)
        for (int64_t i = 0; i < dim; i++) x[t * dim + i] += bias[i];
}

static int attention(model_ctx *ctx, const model_layer *L, int il, const model_batch *b)
{
    const model_hparams *hp = &ctx->m->hp;
    kern_backend *be = ctx->m->backend;
    scratch *s = &ctx->s;
    int64_t n = b->n_tokens;
    int64_t q_dim = (int64_t)hp->n_head * hp->head_dim, kv_dim = ctx->kv_dim;

    be->ops->rmsnorm(be, s->x, L->attn_norm, s->h, hp->n_embd, n, hp->n_embd, hp->rms_eps);
    matmul(ctx, &L->wq, s->h, s->q, n);
    matmul(ctx, &L->wk, s->h, s->k, n);
    matmul(ctx, &L->wv, s->h, s->v, n);
    if (L->bq) {
        add_bias(s->q, L->bq, n, q_dim);
        add_bias(s->k, L->bk, n, kv_dim);
        add_bias(s->v, L->bv, n, kv_dim);
    }
    if (hp->qk_norm == MODEL_QK_NORM_PER_HEAD) {
        be->ops->rmsnorm(be, s->q, L->q_norm, s->q, hp->head_dim, n * hp->n_head, hp->head_dim,
                         hp->rms_eps);
        be->ops->rmsnorm(be, s->k, L->k_norm, s->k, hp->head_dim, n * hp->n_head_kv,
                         hp->head_dim, hp->rms_eps);
    } else if (hp->qk_norm == MODEL_QK_NORM_FULL) {
        be->ops->rmsnorm(be, s->q, L->q_norm, s->q, q_dim, n, q_dim, hp->rms_eps);
        be->ops->rmsnorm(be, s->k, L->k_norm, s->k, kv_dim, n, kv_dim, hp->rms_eps);
    }
    be->ops->rope(be, s->q, n, hp->n_head, hp->head_dim, hp->n_rot, b->pos, hp->rope_freq_base,
                  hp->rope_mode);
    be->ops->rope(be, s->k, n, hp->n_head_kv, hp->head_dim, hp->n_rot, b->pos,
                  hp->rope_freq_base, hp->rope_mode);

    /* Store every token's K/V before any token attends: tokens of one sequence in this batch
     * see each other up to their own position. */
    for (int64_t t = 0; t < n; t++) {
        memcpy(kv_slot(ctx, ctx->k_cache, b->seq[t], il, b->pos[t]), s->k + t * kv_dim,
               (size_t)kv_dim * sizeof(float));
        memcpy(kv_slot(ctx, ctx->v_cache, b->seq[t], il, b->pos[t]), s->v + t * kv_dim,
               (size_t)kv_dim * sizeof(float));
        s->attn_tok[t] = (kern_attn_token){
            .k = kv_slot(ctx, ctx->k_cache, b->seq[t], il, 0),
            .v = kv_slot(ctx, ctx->v_cache, b->seq[t], il, 0),
            .n_kv = b->pos[t] + 1,
        };
    }
    int rc = be->ops->attention(be, s->q, s->attn_tok, s->attn, n, hp->n_head, hp->n_head_kv,
                                hp->head_dim, hp->attn_scale);
    if (rc) return rc;
    matmul(ctx, &L->wo, s->attn, s->proj, n);
    be->ops->add(be, s->x, s->proj, n * hp->n_embd);
    ctx->stats.dense_bytes += weight_bytes(&L->wq) + weight_bytes(&L->wk) +
                              weight_bytes(&L->wv) + weight_bytes(&L->wo);
    return 0;
}

/* ---- mixture of experts ------------------------------------------------------------------ */

/* p = softmax(router logits); keep the k largest (lowest index first among equals); then
 * renormalise and scale as the architecture does. */
static void route(const model_hparams *hp, const float *logits, float *p, int32_t *ids,
                  float *weights)
{
    int E = hp->n_expert, K = hp->n_expert_used;
    float max = -INFINITY;
    for (int e = 0; e < E; e++) max = logits[e] > max ? logits[e] : max;
    double sum = 0.0;
    for (int e = 0; e < E; e++) {
        p[e] = expf(logits[e] - max);
        sum += p[e];
    }
    for (int e = 0; e < E; e++) p[e] = (float)(p[e] / sum);
    for (int j = 0; j < K; j++) {
        int best = -1;
        for (int e = 0; e < E; e++) {
            bool taken = false;
            for (int i = 0; i < j; i++) taken |= ids[i] == e;
            if (!taken && (best < 0 || p[e] > p[best])) best = e;
        }
        ids[j] = best;
        weights[j] = p[best];
    }
    if (hp->norm_topk) {
        double topk_sum = 0.0;
        for (int j = 0; j < K; j++) topk_sum += weights[j];
        /* llama.cpp clamps the sum to the smallest normal f16 before dividing */
        if (topk_sum < 6.103515625e-5) topk_sum = 6.103515625e-5;
        for (int j = 0; j < K; j++) weights[j] = (float)(weights[j] / topk_sum);
    }
    if (hp->expert_weights_scale != 1.0f)
        for (int j = 0; j < K; j++) weights[j] *= hp->expert_weights_scale;
}

/* One SwiGLU FFN over n rows of `in`: out = down(silu(gate(in)) * up(in)). */
static void swiglu(model_ctx *ctx, const kern_weight *gate, const kern_weight *up,
                   const kern_weight *down, const float *in, float *g, float *u, float *out,
                   int64_t n)
{
    matmul(ctx, gate, in, g, n);
    matmul(ctx, up, in, u, n);
    ctx->m->backend->ops->silu_mul(ctx->m->backend, g, u, g, n * gate->n_rows);
    matmul(ctx, down, g, out, n);
}

/* One expert over its bucket: the bucket's rows of h in, its rows of de out. */
static void run_expert(model_ctx *ctx, const model_expert *x, int e)
{
    scratch *s = &ctx->s;
    int64_t D = ctx->m->hp.n_embd;
    int32_t b0 = s->bucket_start[e], count = s->bucket_start[e + 1] - b0;
    for (int32_t j = 0; j < count; j++)
        memcpy(s->xe + j * D, s->h + s->bucket[b0 + j] * D, (size_t)D * sizeof(float));
    swiglu(ctx, &x->gate, &x->up, &x->down, s->xe, s->ge, s->ue, s->de + (int64_t)b0 * D, count);
    ctx->stats.expert_bytes +=
        weight_bytes(&x->gate) + weight_bytes(&x->up) + weight_bytes(&x->down);
    ctx->stats.experts_used++;
}

static int moe(model_ctx *ctx, const model_layer *L, int il, int64_t n, int32_t *n_used_out,
               char *err, size_t err_size)
{
    model *m = ctx->m;
    const model_hparams *hp = &ctx->m->hp;
    kern_backend *be = ctx->m->backend;
    scratch *s = &ctx->s;
    int E = hp->n_expert, K = hp->n_expert_used;
    int64_t D = hp->n_embd;

    be->ops->rmsnorm(be, s->x, L->ffn_norm, s->h, D, n, D, hp->rms_eps);
    matmul(ctx, &L->router, s->h, s->router, n);
    for (int64_t t = 0; t < n; t++)
        route(hp, s->router + t * E, s->probs, s->route_id + t * K, s->route_w + t * K);
    ctx->stats.dense_bytes += weight_bytes(&L->router);

    /* Bucket tokens by expert (counting sort keeps token order inside a bucket). */
    memset(s->bucket_start, 0, (size_t)(E + 1) * sizeof *s->bucket_start);
    for (int64_t i = 0; i < n * K; i++) s->bucket_start[s->route_id[i] + 1]++;
    for (int e = 0; e < E; e++) s->bucket_start[e + 1] += s->bucket_start[e];
    int32_t *fill = s->fill;
    memcpy(fill, s->bucket_start, (size_t)E * sizeof *fill);
    for (int64_t t = 0; t < n; t++) {
        for (int j = 0; j < K; j++) {
            int e = s->route_id[t * K + j];
            s->bucket[fill[e]] = (int32_t)t;
            s->bucket_w[fill[e]++] = s->route_w[t * K + j];
        }
    }

    /* Each expert writes its bucket's outputs at the bucket's rows of de, so that the sums
     * below run in ascending expert order whatever order the experts were computed in (the
     * cache hands them out as they become resident). */
    int32_t *used = fill, n_used = 0;
    for (int e = 0; e < E; e++)
        if (s->bucket_start[e + 1] > s->bucket_start[e]) used[n_used++] = e;
    *n_used_out = n_used;
    for (int32_t u = 0; u < n_used; u++)
        atomic_fetch_add(&m->expert_tokens[(size_t)il * (size_t)E + (size_t)used[u]],
                         (uint64_t)(s->bucket_start[used[u] + 1] - s->bucket_start[used[u]]));
    if (m->predictor) pred_actual(m->predictor, il, used, n_used);
    if (m->experts) {
        int rc = cache_request(m->experts, il, used, n_used, err, err_size);
        cache_ref ref;
        while (rc == 0 && (rc = cache_next(m->experts, &ref, err, err_size)) == 0) {
            model_expert x = *model_get_expert(m, il, ref.expert);
            x.gate.data = ref.part[0];
            x.up.data = ref.part[1];
            x.down.data = ref.part[2];
            run_expert(ctx, &x, ref.expert);
            cache_release(m->experts, &ref);
        }
        if (rc < 0) return rc;
    } else {
        for (int32_t j = 0; j < n_used; j++)
            run_expert(ctx, model_get_expert(m, il, used[j]), used[j]);
    }

    memset(s->moe, 0, (size_t)(n * D) * sizeof(float));
    for (int32_t u = 0; u < n_used; u++) {
        int32_t b0 = s->bucket_start[used[u]], count = s->bucket_start[used[u] + 1] - b0;
        for (int32_t j = 0; j < count; j++) {
            float w = s->bucket_w[b0 + j];
            float *dst = s->moe + s->bucket[b0 + j] * D;
            const float *src = s->de + (int64_t)(b0 + j) * D;
            for (int64_t i = 0; i < D; i++) dst[i] += w * src[i];
        }
    }

    if (hp->has_shared_expert) {
        swiglu(ctx, &L->shexp_gate, &L->shexp_up, &L->shexp_down, s->h, s->shg, s->shu, s->shd, n);
        for (int64_t t = 0; t < n; t++) {
            double z = 0.0;
            for (int64_t i = 0; i < D; i++) z += (double)L->shexp_gate_inp[i] * s->h[t * D + i];
            float g = (float)(1.0 / (1.0 + exp(-z)));
            for (int64_t i = 0; i < D; i++) s->moe[t * D + i] += g * s->shd[t * D + i];
        }
        ctx->stats.dense_bytes += weight_bytes(&L->shexp_gate) + weight_bytes(&L->shexp_up) +
                                  weight_bytes(&L->shexp_down);
    }
    be->ops->add(be, s->x, s->moe, n * D);
    return 0;
}

/* ---- routing prediction ------------------------------------------------------------------- */

/* Guesses layer il + 1's experts after layer il ran (s->fill still holds layer il's experts):
 * pre-gating applies layer il + 1's router to the current hidden state; affinity asks the
 * predictor's co-activation counts.  The guess is scored later by pred_actual and, with an
 * expert cache, read ahead while layer il + 1's attention computes. */
static int predict_next(model_ctx *ctx, int il, int32_t n_used_here, int64_t n, char *err,
                        size_t err_size)
{
    model *m = ctx->m;
    const model_hparams *hp = &m->hp;
    scratch *s = &ctx->s;
    if (!m->predictor) return 0;
    int E = hp->n_expert, K = hp->n_expert_used;
    bool pregate = pred_get_kind(m->predictor) == PRED_PREGATE;
    /* Pre-gating looks `lookahead` layers ahead with each one's router; the farthest guess is
     * made first so that the nearest, most accurate one is what a layer is scored on.  Affinity
     * counts only link a layer to the next one. */
    int ahead = pregate ? m->lookahead : 1;
    for (int k = ahead; k >= 1; k--) {
        int target = il + k;
        if (target >= hp->n_layer) continue;
        int32_t n_guess = 0;
        if (pregate) {
            const model_layer *L = &m->layers[target];
            kern_backend *be = m->backend;
            be->ops->rmsnorm(be, s->x, L->ffn_norm, s->h, hp->n_embd, n, hp->n_embd, hp->rms_eps);
            matmul(ctx, &L->router, s->h, s->router, n);
            ctx->stats.dense_bytes += weight_bytes(&L->router);
            memset(s->mark, 0, (size_t)E);
            for (int64_t t = 0; t < n; t++) {
                route(hp, s->router + t * E, s->probs, s->route_id, s->route_w);
                for (int j = 0; j < K; j++) s->mark[s->route_id[j]] = 1;
            }
            for (int e = 0; e < E; e++)
                if (s->mark[e]) s->guess[n_guess++] = e;
        } else {
            n_guess = pred_affinity_guess(m->predictor, il, s->fill, n_used_here, n_used_here,
                                          s->guess);
        }
        pred_guess(m->predictor, target, s->guess, n_guess);
        if (m->experts && n_guess > 0) {
            int rc = cache_prefetch(m->experts, target, s->guess, n_guess, err, err_size);
            if (rc < 0) return rc;
        }
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

int model_forward(model_ctx *ctx, const model_batch *b, float *logits, char *err, size_t err_size)
{
    model *m = ctx->m;
    const model_hparams *hp = &m->hp;
    kern_backend *be = m->backend;
    int rc = check_batch(ctx, b, err, err_size);
    if (rc) return rc;
    int64_t n = b->n_tokens, D = hp->n_embd;
    if (scratch_reserve(ctx, n)) {
        snprintf(err, err_size, "scratch for a batch of %lld tokens: out of memory", (long long)n);
        return -ENOMEM;
    }
    scratch *s = &ctx->s;
    memset(&ctx->stats, 0, sizeof ctx->stats);
    (void)be->ops->take_error(be); /* a failure of an earlier, abandoned step is not ours */

    be->ops->get_rows(be, &m->tok_embd, b->token, s->x, n);
    ctx->stats.dense_bytes += (uint64_t)n * m->tok_embd.row_bytes;
    for (int il = 0; il < hp->n_layer; il++) {
        const model_layer *L = &m->layers[il];
        ctx->stats.dense_bytes += 2 * D * sizeof(float);
        if ((rc = attention(ctx, L, il, b))) {
            snprintf(err, err_size, "attention scratch: out of memory");
            return rc;
        }
        int32_t n_used = 0;
        if ((rc = moe(ctx, L, il, n, &n_used, err, err_size))) return rc;
        if ((rc = predict_next(ctx, il, n_used, n, err, err_size))) return rc;
    }

    int64_t n_out = 0;
    for (int64_t t = 0; t < n; t++)
        if (b->want_logits ? b->want_logits[t] != 0 : t == n - 1) s->out_rows[n_out++] = (int32_t)t;
    for (int64_t j = 0; j < n_out; j++)
        memcpy(s->h + j * D, s->x + s->out_rows[j] * D, (size_t)D * sizeof(float));
    be->ops->rmsnorm(be, s->h, m->output_norm, s->h, D, n_out, D, hp->rms_eps);
    if (n_out > 0) matmul(ctx, &m->output, s->h, logits, n_out);
    ctx->stats.dense_bytes += m->head_bytes;
    if ((rc = be->ops->take_error(be))) {
        snprintf(err, err_size, "compute backend: %s", rc == -ENOMEM ? "out of memory" : "failed");
        return rc;
    }
    return 0;
}

int32_t model_argmax(const float *logits, int32_t n_vocab)
{
    int32_t best = 0;
    for (int32_t i = 1; i < n_vocab; i++)
        if (logits[i] > logits[best]) best = i;
    return best;
}
