/*
 * predictor — routing-path prediction: which experts the next layer will ask for, guessed
 * before it asks, so that their reads overlap the compute in between; and how often the
 * guesses are right.
 *
 * Contract
 * - Kinds: PRED_NONE (experts are loaded when asked for), PRED_PREGATE (the model applies
 *   layer l+1's router to the hidden state after layer l: no training, the residual stream
 *   changes slowly), PRED_AFFINITY (counts of which expert of layer l+1 followed which expert
 *   of layer l, learned online here; the guess for l+1 is the experts most often seen after
 *   the ones layer l used).
 * - The forward pass reports each step's guess for a layer (pred_guess) before the layer runs
 *   and what the layer used (pred_actual) after routing; the pair scores the guess: precision
 *   = correct / guessed, recall = correct / used, counted per layer.  A layer without a guess
 *   in a step is not scored.
 * - pred_affinity_guess() fills the affinity guess for layer + 1 from layer's actual experts.
 * - The predictor belongs to the engine thread; pred_get_stats() may be called from any thread
 *   (counters are atomics).
 */
#ifndef MOE_PREDICTOR_H
#define MOE_PREDICTOR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum pred_kind {
    PRED_NONE = 0,
    PRED_PREGATE,
    PRED_AFFINITY,
    PRED_KIND_COUNT
} pred_kind;

const char *pred_kind_name(pred_kind kind); /* "none", "pregate", "affinity" */
int pred_kind_parse(const char *name, pred_kind *out);

typedef struct pred pred;

int pred_create(pred **out, pred_kind kind, int32_t n_layer, int32_t n_expert, char *err,
                size_t err_size);
void pred_destroy(pred **p);
pred_kind pred_get_kind(const pred *p);

void pred_guess(pred *p, int32_t layer, const int32_t *experts, int32_t n);
void pred_actual(pred *p, int32_t layer, const int32_t *experts, int32_t n);
/* The n_guess experts of layer + 1 most often used after `experts` of layer; returns how many
 * were written (fewer when the counts know fewer). */
int32_t pred_affinity_guess(const pred *p, int32_t layer, const int32_t *experts, int32_t n,
                            int32_t n_guess, int32_t *out);

typedef struct pred_layer_stats {
    uint64_t steps;   /* scored guesses */
    uint64_t guessed; /* experts guessed */
    uint64_t used;    /* experts the layer used (in scored steps) */
    uint64_t correct; /* guessed and used */
} pred_layer_stats;

void pred_get_stats(const pred *p, int32_t layer, pred_layer_stats *out);

#endif
