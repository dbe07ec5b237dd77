/*
 * Scoring guesses and learning co-activation counts.  The guess of a layer is kept as a bit
 * set until the layer's actual experts arrive in the same step; both are small (an MoE layer
 * has at most a few hundred experts), so sets are byte arrays indexed by expert.
 */
#include "predictor/predictor.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct layer_score {
    atomic_uint_least64_t steps, guessed, used, correct;
} layer_score;

struct pred {
    pred_kind kind;
    int32_t n_layer, n_expert;
    uint8_t *guess;      /* [n_layer][n_expert]: the pending guess */
    bool *has_guess;     /* [n_layer] */
    uint32_t *affinity;  /* [n_layer - 1][n_expert][n_expert]: used(l, a) then used(l+1, b) */
    int32_t *prev;       /* [n_expert]: the last actual experts of the previous layer */
    int32_t n_prev, prev_layer;
    layer_score *score;  /* [n_layer] */
};

const char *pred_kind_name(pred_kind kind)
{
    switch (kind) {
    case PRED_NONE: return "none";
    case PRED_PREGATE: return "pregate";
    case PRED_AFFINITY: return "affinity";
    case PRED_KIND_COUNT: break;
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

int pred_create(pred **out, pred_kind kind, int32_t n_layer, int32_t n_expert, char *err,
                size_t err_size)
{
    *out = NULL;
    if (n_layer <= 0 || n_expert <= 0 || kind >= PRED_KIND_COUNT) {
        snprintf(err, err_size, "predictor: bad arguments");
        return -EINVAL;
    }
    pred *p = calloc(1, sizeof *p);
    if (!p) goto oom;
    p->kind = kind;
    p->n_layer = n_layer;
    p->n_expert = n_expert;
    p->prev_layer = -1;
    p->guess = calloc((size_t)n_layer * (size_t)n_expert, 1);
    p->has_guess = calloc((size_t)n_layer, sizeof *p->has_guess);
    p->prev = calloc((size_t)n_expert, sizeof *p->prev);
    p->score = calloc((size_t)n_layer, sizeof *p->score);
    if (!p->guess || !p->has_guess || !p->prev || !p->score) goto oom;
    if (kind == PRED_AFFINITY && n_layer > 1) {
        p->affinity = calloc((size_t)(n_layer - 1) * (size_t)n_expert * (size_t)n_expert,
                             sizeof *p->affinity);
        if (!p->affinity) goto oom;
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
    free(p->guess);
    free(p->has_guess);
    free(p->affinity);
    free(p->prev);
    free(p->score);
    free(p);
}

pred_kind pred_get_kind(const pred *p)
{
    return p->kind;
}

void pred_guess(pred *p, int32_t layer, const int32_t *experts, int32_t n)
{
    if (layer < 0 || layer >= p->n_layer) return;
    uint8_t *g = p->guess + (size_t)layer * (size_t)p->n_expert;
    memset(g, 0, (size_t)p->n_expert);
    for (int32_t i = 0; i < n; i++)
        if (experts[i] >= 0 && experts[i] < p->n_expert) g[experts[i]] = 1;
    p->has_guess[layer] = true;
}

void pred_actual(pred *p, int32_t layer, const int32_t *experts, int32_t n)
{
    if (layer < 0 || layer >= p->n_layer) return;
    if (p->has_guess[layer]) {
        const uint8_t *g = p->guess + (size_t)layer * (size_t)p->n_expert;
        uint64_t guessed = 0, correct = 0;
        for (int32_t e = 0; e < p->n_expert; e++) guessed += g[e];
        for (int32_t i = 0; i < n; i++)
            if (experts[i] >= 0 && experts[i] < p->n_expert) correct += g[experts[i]];
        layer_score *s = &p->score[layer];
        atomic_fetch_add(&s->steps, 1);
        atomic_fetch_add(&s->guessed, guessed);
        atomic_fetch_add(&s->used, (uint64_t)n);
        atomic_fetch_add(&s->correct, correct);
        p->has_guess[layer] = false;
    }
    if (p->affinity && layer > 0 && p->prev_layer == layer - 1) {
        uint32_t *a = p->affinity + (size_t)(layer - 1) * (size_t)p->n_expert * (size_t)p->n_expert;
        for (int32_t i = 0; i < p->n_prev; i++)
            for (int32_t j = 0; j < n; j++)
                if (experts[j] >= 0 && experts[j] < p->n_expert)
                    a[(size_t)p->prev[i] * (size_t)p->n_expert + (size_t)experts[j]]++;
    }
    p->n_prev = 0;
    for (int32_t i = 0; i < n; i++)
        if (experts[i] >= 0 && experts[i] < p->n_expert) p->prev[p->n_prev++] = experts[i];
    p->prev_layer = layer;
}

int32_t pred_affinity_guess(const pred *p, int32_t layer, const int32_t *experts, int32_t n,
                            int32_t n_guess, int32_t *out)
{
    if (!p->affinity || layer < 0 || layer + 1 >= p->n_layer || n_guess <= 0) return 0;
    const uint32_t *a = p->affinity + (size_t)layer * (size_t)p->n_expert * (size_t)p->n_expert;
    int32_t got = 0;
    /* Top n_guess by summed counts, highest first, lowest index among equals; zero counts are
     * no evidence and are not guessed.  n_guess is small (a few times top-k). */
    for (int32_t k = 0; k < n_guess; k++) {
        int32_t best = -1;
        uint64_t best_sum = 0;
        for (int32_t b = 0; b < p->n_expert; b++) {
            bool taken = false;
            for (int32_t i = 0; i < got && !taken; i++) taken = out[i] == b;
            if (taken) continue;
            uint64_t sum = 0;
            for (int32_t i = 0; i < n; i++)
                if (experts[i] >= 0 && experts[i] < p->n_expert)
                    sum += a[(size_t)experts[i] * (size_t)p->n_expert + (size_t)b];
            if (sum > best_sum) {
                best_sum = sum;
                best = b;
            }
        }
        if (best < 0) break;
        out[got++] = best;
    }
    return got;
}

void pred_get_stats(const pred *p, int32_t layer, pred_layer_stats *out)
{
    memset(out, 0, sizeof *out);
    if (layer < 0 || layer >= p->n_layer) return;
    layer_score *s = &((pred *)p)->score[layer];
    out->steps = atomic_load(&s->steps);
    out->guessed = atomic_load(&s->guessed);
    out->used = atomic_load(&s->used);
    out->correct = atomic_load(&s->correct);
}
