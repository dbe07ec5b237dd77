/*
 * Guessing, scoring and calibrating.  A guess is kept per (target layer, depth) until the
 * target layer routes in the same step: each token's ranked list (to calibrate per rank) and
 * the batch's set (to score precision and recall).  Sets are byte arrays indexed by expert: an
 * MoE layer has at most a few hundred experts.
 */
#include "predictor/predictor.h"

#include <errno.h>
#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct score {
    atomic_uint_least64_t steps, guessed, used, correct;
} score;

typedef struct pending {
    bool has;
    int64_t n_tokens;
    int32_t *tok; /* [cap x width]: each token's guesses by rank, -1 past its last */
    int64_t cap;  /* tokens tok has room for */
    uint8_t *set; /* [n_expert]: the batch's guess */
} pending;

struct pred {
    pred_opts o;
    size_t nE;         /* n_expert, for sizes */
    pending *pend;     /* [n_layer][lookahead] */
    uint32_t *counts;  /* [n_layer - 1][n_expert][n_expert]: a at l, then b at l + 1, per token */
    uint64_t *row_sum; /* [n_layer - 1][n_expert] */
    int32_t *prev;     /* [prev_cap x top-k]: the tokens' experts at prev_layer */
    int64_t prev_cap, prev_n;
    int32_t prev_layer;
    uint64_t hits[PRED_MAX_LOOKAHEAD][PRED_MAX_WIDTH], total[PRED_MAX_LOOKAHEAD][PRED_MAX_WIDTH];
    score *layer_score; /* [n_layer], depth 1 */
    score depth_score[PRED_MAX_LOOKAHEAD];
    /* scratch, one token or one batch at a time */
    double *q, *aff, *tmp, *miss; /* [n_expert] */
    uint8_t *mark;                /* [n_expert] */
};

const char *pred_kind_name(pred_kind kind)
{
    switch (kind) {
    case PRED_NONE:
        return "none";
    case PRED_PREGATE:
        return "pregate";
    case PRED_AFFINITY:
        return "affinity";
    case PRED_HYBRID:
        return "hybrid";
    case PRED_KIND_COUNT:
        break;
    }
    return NULL;
}

int pred_kind_parse(const char *name, pred_kind *out)
{
    for (int k = 0; k < PRED_KIND_COUNT; k++) {
        if (!strcmp(name, pred_kind_name((pred_kind)k))) {
            *out = (pred_kind)k;
            return 0;
        }
    }
    return -EINVAL;
}

bool pred_kind_uses_router(pred_kind kind)
{
    return kind == PRED_PREGATE || kind == PRED_HYBRID;
}

static bool uses_counts(pred_kind kind)
{
    return kind == PRED_AFFINITY || kind == PRED_HYBRID;
}

int pred_create(pred **out, const pred_opts *opts, char *err, size_t err_size)
{
    *out = NULL;
    pred_opts o = *opts;
    if (!o.lookahead) o.lookahead = 1;
    if (!o.width) o.width = o.n_expert_used;
    if (o.n_layer <= 0 || o.n_expert <= 0 || o.n_expert_used <= 0 || o.n_expert_used > o.n_expert ||
        o.kind <= PRED_NONE || o.kind >= PRED_KIND_COUNT || o.lookahead < 1 ||
        o.lookahead > PRED_MAX_LOOKAHEAD || o.width < 1 || o.width > o.n_expert ||
        o.width > PRED_MAX_WIDTH) {
        snprintf(err, err_size,
                 "predictor: bad options (kind %d, %d layers, %d experts, top-%d, look-ahead %d "
                 "of 1..%d, width %d of 1..%d)",
                 (int)o.kind, o.n_layer, o.n_expert, o.n_expert_used, o.lookahead,
                 PRED_MAX_LOOKAHEAD, o.width,
                 o.n_expert < PRED_MAX_WIDTH ? o.n_expert : PRED_MAX_WIDTH);
        return -EINVAL;
    }
    pred *p = calloc(1, sizeof *p);
    if (!p) goto oom;
    p->o = o;
    p->nE = (size_t)o.n_expert;
    p->prev_layer = -1;
    size_t E = (size_t)o.n_expert;
    p->pend = calloc((size_t)o.n_layer * (size_t)o.lookahead, sizeof *p->pend);
    p->layer_score = calloc((size_t)o.n_layer, sizeof *p->layer_score);
    p->q = malloc(E * sizeof *p->q);
    p->aff = malloc(E * sizeof *p->aff);
    p->tmp = malloc(E * sizeof *p->tmp);
    p->miss = malloc(E * sizeof *p->miss);
    p->mark = malloc(E);
    if (!p->pend || !p->layer_score || !p->q || !p->aff || !p->tmp || !p->miss || !p->mark)
        goto oom;
    for (size_t i = 0; i < (size_t)o.n_layer * (size_t)o.lookahead; i++)
        if (!(p->pend[i].set = calloc(E, 1))) goto oom;
    if (uses_counts(o.kind) && o.n_layer > 1) {
        p->counts = calloc((size_t)(o.n_layer - 1) * E * E, sizeof *p->counts);
        p->row_sum = calloc((size_t)(o.n_layer - 1) * E, sizeof *p->row_sum);
        if (!p->counts || !p->row_sum) goto oom;
    }
    *out = p;
    return 0;
oom:
    pred_destroy(&p);
    snprintf(err, err_size, "predictor: out of memory");
    return -ENOMEM;
}

void pred_destroy(pred **pp)
{
    pred *p = *pp;
    if (!p) return;
    *pp = NULL;
    if (p->pend) {
        for (size_t i = 0; i < (size_t)p->o.n_layer * (size_t)p->o.lookahead; i++) {
            free(p->pend[i].tok);
            free(p->pend[i].set);
        }
    }
    free(p->pend);
    free(p->counts);
    free(p->row_sum);
    free(p->prev);
    free(p->layer_score);
    free(p->q);
    free(p->aff);
    free(p->tmp);
    free(p->miss);
    free(p->mark);
    free(p);
}

pred_kind pred_get_kind(const pred *p)
{
    return p->o.kind;
}

int32_t pred_lookahead(const pred *p)
{
    return p->o.lookahead;
}

int32_t pred_width(const pred *p)
{
    return p->o.width;
}

double pred_rank_hit_rate(const pred *p, int32_t depth, int32_t rank)
{
    if (depth < 1 || depth > p->o.lookahead || rank < 0 || rank >= p->o.width) return 0.0;
    /* Laplace's rule: an unseen rank starts at one half and is measured from its first use. */
    return (double)(p->hits[depth - 1][rank] + 1) / (double)(p->total[depth - 1][rank] + 2);
}

/* ---- one token's distribution over the target layer ---------------------------------------- */

static void softmax(const float *logits, int32_t n, double *out)
{
    double mx = -INFINITY, sum = 0.0;
    for (int32_t e = 0; e < n; e++)
        mx = fmax(mx, (double)logits[e]);
    for (int32_t e = 0; e < n; e++)
        sum += out[e] = exp((double)logits[e] - mx);
    for (int32_t e = 0; e < n; e++)
        out[e] /= sum;
}

/* The counts' distribution over layer + depth's experts for a token that used `mine` at
 * layer: one step of the normalised counts per layer crossed.  False when they know nothing
 * about these experts yet. */
static bool affinity(pred *p, int32_t layer, int32_t depth, const int32_t *mine, double *out)
{
    int32_t E = p->o.n_expert, K = p->o.n_expert_used;
    memset(p->tmp, 0, p->nE * sizeof *p->tmp);
    for (int32_t j = 0; j < K; j++)
        if (mine[j] >= 0 && mine[j] < E) p->tmp[mine[j]] += 1.0 / K;
    for (int32_t d = 0; d < depth; d++) {
        int32_t l = layer + d;
        const uint32_t *c = p->counts + (size_t)l * (size_t)E * (size_t)E;
        const uint64_t *rs = p->row_sum + (size_t)l * (size_t)E;
        memset(out, 0, p->nE * sizeof *out);
        double total = 0.0;
        for (int32_t a = 0; a < E; a++) {
            if (p->tmp[a] == 0.0 || rs[a] == 0) continue;
            double w = p->tmp[a] / (double)rs[a];
            for (int32_t b = 0; b < E; b++)
                out[b] += w * c[(size_t)a * (size_t)E + (size_t)b];
            total += p->tmp[a];
        }
        if (total == 0.0) return false;
        for (int32_t b = 0; b < E; b++)
            p->tmp[b] = out[b] / total;
    }
    memcpy(out, p->tmp, p->nE * sizeof *out);
    return true;
}

/* The token's `width` most likely experts by q, most likely first (lower index among equals);
 * -1 past the last expert with a non-zero probability. */
static void top_width(const double *q, int32_t E, int32_t W, int32_t *rank)
{
    for (int32_t r = 0; r < W; r++)
        rank[r] = -1;
    for (int32_t e = 0; e < E; e++) {
        if (q[e] <= 0.0) continue;
        if (rank[W - 1] >= 0 && q[e] <= q[rank[W - 1]]) continue;
        int32_t i = W - 1;
        while (i > 0 && (rank[i - 1] < 0 || q[e] > q[rank[i - 1]])) {
            rank[i] = rank[i - 1];
            i--;
        }
        rank[i] = e;
    }
}

int32_t pred_predict(pred *p, int32_t layer, int32_t depth, const int32_t *route_id,
                     const float *logits, int64_t n_tokens, int32_t *experts, float *prob)
{
    const pred_opts *o = &p->o;
    int32_t target = layer + depth, E = o->n_expert, K = o->n_expert_used, W = o->width;
    if (layer < 0 || depth < 1 || depth > o->lookahead || target >= o->n_layer || n_tokens <= 0)
        return 0;
    if (pred_kind_uses_router(o->kind) && !logits) return 0;
    pending *pd = &p->pend[(size_t)target * (size_t)o->lookahead + (size_t)(depth - 1)];
    pd->has = false;
    if (n_tokens > pd->cap) {
        int32_t *grown = realloc(pd->tok, (size_t)n_tokens * (size_t)W * sizeof *grown);
        if (!grown) return -ENOMEM;
        pd->tok = grown;
        pd->cap = n_tokens;
    }
    for (int32_t e = 0; e < E; e++)
        p->miss[e] = 1.0;
    memset(p->mark, 0, p->nE);
    for (int64_t t = 0; t < n_tokens; t++) {
        bool have_aff = uses_counts(o->kind) && p->counts &&
                        affinity(p, layer, depth, route_id + t * K, p->aff);
        if (pred_kind_uses_router(o->kind)) {
            softmax(logits + t * E, E, p->q);
            if (have_aff)
                for (int32_t e = 0; e < E; e++)
                    p->q[e] = 0.5 * (p->q[e] + p->aff[e]);
        } else if (have_aff) {
            memcpy(p->q, p->aff, p->nE * sizeof *p->q);
        } else {
            memset(p->q, 0, p->nE * sizeof *p->q);
        }
        int32_t *rank = pd->tok + t * W;
        top_width(p->q, E, W, rank);
        for (int32_t r = 0; r < W && rank[r] >= 0; r++) {
            p->miss[rank[r]] *= 1.0 - pred_rank_hit_rate(p, depth, r);
            p->mark[rank[r]] = 1;
        }
    }
    int32_t n = 0;
    for (int32_t e = 0; e < E; e++) {
        if (!p->mark[e]) continue;
        /* insertion by probability, most likely first, lower index among equals */
        float pe = (float)(1.0 - p->miss[e]);
        int32_t i = n++;
        while (i > 0 && prob[i - 1] < pe) {
            experts[i] = experts[i - 1];
            prob[i] = prob[i - 1];
            i--;
        }
        experts[i] = e;
        prob[i] = pe;
    }
    memcpy(pd->set, p->mark, p->nE);
    pd->n_tokens = n_tokens;
    pd->has = true; /* an empty guess is scored too: its recall is nothing */
    return n;
}

/* ---- scoring and learning ------------------------------------------------------------------ */

static void add_score(score *s, uint64_t guessed, uint64_t used, uint64_t correct)
{
    atomic_fetch_add(&s->steps, 1);
    atomic_fetch_add(&s->guessed, guessed);
    atomic_fetch_add(&s->used, used);
    atomic_fetch_add(&s->correct, correct);
}

static bool token_uses(const int32_t *mine, int32_t K, int32_t e)
{
    for (int32_t j = 0; j < K; j++)
        if (mine[j] == e) return true;
    return false;
}

void pred_observe(pred *p, int32_t layer, const int32_t *route_id, int64_t n_tokens)
{
    const pred_opts *o = &p->o;
    int32_t E = o->n_expert, K = o->n_expert_used, W = o->width;
    if (layer < 0 || layer >= o->n_layer || n_tokens <= 0) return;
    memset(p->mark, 0, p->nE);
    uint64_t used = 0;
    for (int64_t i = 0; i < n_tokens * K; i++) {
        int32_t e = route_id[i];
        if (e >= 0 && e < E && !p->mark[e]) {
            p->mark[e] = 1;
            used++;
        }
    }
    for (int32_t d = 1; d <= o->lookahead; d++) {
        pending *pd = &p->pend[(size_t)layer * (size_t)o->lookahead + (size_t)(d - 1)];
        if (!pd->has) continue;
        pd->has = false;
        uint64_t guessed = 0, correct = 0;
        for (int32_t e = 0; e < E; e++) {
            guessed += pd->set[e];
            correct += pd->set[e] & p->mark[e];
        }
        add_score(&p->depth_score[d - 1], guessed, used, correct);
        if (d == 1) add_score(&p->layer_score[layer], guessed, used, correct);
        if (pd->n_tokens != n_tokens)
            continue; /* not this batch's guess: no per-token calibration */
        for (int64_t t = 0; t < n_tokens; t++) {
            const int32_t *rank = pd->tok + t * W;
            for (int32_t r = 0; r < W && rank[r] >= 0; r++) {
                p->total[d - 1][r]++;
                p->hits[d - 1][r] += token_uses(route_id + t * K, K, rank[r]);
            }
        }
    }
    if (!p->counts) return;
    if (layer > 0 && p->prev_layer == layer - 1 && p->prev_n == n_tokens) {
        uint32_t *c = p->counts + (size_t)(layer - 1) * (size_t)E * (size_t)E;
        uint64_t *rs = p->row_sum + (size_t)(layer - 1) * (size_t)E;
        for (int64_t t = 0; t < n_tokens; t++) {
            for (int32_t i = 0; i < K; i++) {
                int32_t a = p->prev[t * K + i];
                if (a < 0 || a >= E) continue;
                for (int32_t j = 0; j < K; j++) {
                    int32_t b = route_id[t * K + j];
                    if (b < 0 || b >= E) continue;
                    uint32_t *cell = &c[(size_t)a * (size_t)E + (size_t)b];
                    if (*cell == UINT32_MAX) continue; /* saturated: the row stays consistent */
                    (*cell)++;
                    rs[a]++;
                }
            }
        }
    }
    if (n_tokens > p->prev_cap) {
        int32_t *grown = realloc(p->prev, (size_t)n_tokens * (size_t)K * sizeof *grown);
        if (!grown) { /* nothing learned across this layer pair; the next batch tries again */
            p->prev_layer = -1;
            return;
        }
        p->prev = grown;
        p->prev_cap = n_tokens;
    }
    memcpy(p->prev, route_id, (size_t)n_tokens * (size_t)K * sizeof *p->prev);
    p->prev_n = n_tokens;
    p->prev_layer = layer;
}

static void read_score(const score *s, pred_layer_stats *out)
{
    score *m = (score *)s; /* atomics are read-only here */
    out->steps = atomic_load(&m->steps);
    out->guessed = atomic_load(&m->guessed);
    out->used = atomic_load(&m->used);
    out->correct = atomic_load(&m->correct);
}

void pred_get_stats(const pred *p, int32_t layer, pred_layer_stats *out)
{
    memset(out, 0, sizeof *out);
    if (layer >= 0 && layer < p->o.n_layer) read_score(&p->layer_score[layer], out);
}

void pred_get_depth_stats(const pred *p, int32_t depth, pred_layer_stats *out)
{
    memset(out, 0, sizeof *out);
    if (depth >= 1 && depth <= p->o.lookahead) read_score(&p->depth_score[depth - 1], out);
}
