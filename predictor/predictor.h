/*
 * predictor — routing-path prediction: which experts the next layers will ask for, guessed
 * before they ask, with how likely each guess is, so that their reads overlap the compute in
 * between and only the reads worth their cost are started; and how often the guesses are right.
 *
 * Contract
 * - Kinds: PRED_NONE (experts are loaded when asked for), PRED_PREGATE (layer l+d's router
 *   applied to the hidden state after layer l: no training, the residual stream changes
 *   slowly), PRED_AFFINITY (per-token co-activation counts learned online: which experts of
 *   layer l+1 a token used after using its experts of layer l; deeper layers by chaining the
 *   normalised counts), PRED_HYBRID (the mean of the two distributions, per token; pre-gating
 *   alone until the counts know the token's experts).
 * - Every guess is per token first: a probability over the target layer's experts, of which the
 *   token's `width` most likely are its guess (width = top-k gives recall@k).  The batch's guess
 *   is the union of its tokens', each expert with the probability that at least one token uses
 *   it, computed from calibrated per-rank hit rates: the predictor counts, per look-ahead depth
 *   and per rank in a token's list, how often that guess was right, so the probabilities mean
 *   what they say on the model being served rather than what the router's softmax claims.
 *   The list is ranked by that probability (the caller prefetches what is worth its cost).
 * - Per step and layer: pred_predict(layer l, depth d) for target l+d (deepest first, so that
 *   the nearest guess — the one a layer is scored on — is made last), then pred_observe(l+d)
 *   when that layer has routed.  Observing scores the pending guesses of the layer (precision =
 *   correct / guessed, recall = correct / used, over the batch's expert sets; depth 1 only in
 *   the per-layer stats), updates the calibration of every depth and learns the counts.
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
    PRED_HYBRID,
    PRED_KIND_COUNT
} pred_kind;

const char *pred_kind_name(pred_kind kind); /* "none", "pregate", "affinity", "hybrid" */
int pred_kind_parse(const char *name, pred_kind *out);
/* Whether the kind needs the target layer's router logits (pre-gating and the hybrid). */
bool pred_kind_uses_router(pred_kind kind);

enum { PRED_MAX_LOOKAHEAD = 8, PRED_MAX_WIDTH = 64 };

typedef struct pred_opts {
    pred_kind kind;
    int32_t n_layer, n_expert, n_expert_used;
    int32_t lookahead; /* layers guessed ahead, 1..PRED_MAX_LOOKAHEAD; 0 means 1 */
    int32_t width;     /* guesses per token, 1..min(n_expert, PRED_MAX_WIDTH); 0 means top-k */
} pred_opts;

typedef struct pred pred;

int pred_create(pred **out, const pred_opts *opts, char *err, size_t err_size);
void pred_destroy(pred **p);
pred_kind pred_get_kind(const pred *p);
int32_t pred_lookahead(const pred *p);
int32_t pred_width(const pred *p);

/* Guesses layer `layer + depth` for a batch of n_tokens after `layer` routed.  route_id: the
 * tokens' experts at `layer` (n_tokens x top-k, token-major); logits: the target layer's router
 * logits on the current hidden states (n_tokens x n_expert), NULL for PRED_AFFINITY.  Writes
 * the batch's guess ranked by probability (most likely first) into experts[] and prob[] (room
 * for n_expert each) and keeps it to be scored (an empty one too: the counts knew nothing);
 * returns how many (0 also for a target past the last layer, not kept).  Returns -ENOMEM when the
 * per-token buffers cannot grow (nothing is then guessed). */
int32_t pred_predict(pred *p, int32_t layer, int32_t depth, const int32_t *route_id,
                     const float *logits, int64_t n_tokens, int32_t *experts, float *prob);
/* Layer `layer` routed the batch: route_id as above.  Scores and consumes the layer's pending
 * guesses and learns the counts. */
void pred_observe(pred *p, int32_t layer, const int32_t *route_id, int64_t n_tokens);

typedef struct pred_layer_stats {
    uint64_t steps;   /* scored guesses */
    uint64_t guessed; /* experts guessed */
    uint64_t used;    /* experts the layer used (in scored steps) */
    uint64_t correct; /* guessed and used */
} pred_layer_stats;

/* Depth-1 guesses of one layer. */
void pred_get_stats(const pred *p, int32_t layer, pred_layer_stats *out);
/* All layers' guesses made `depth` layers ahead. */
void pred_get_depth_stats(const pred *p, int32_t depth, pred_layer_stats *out);
/* The calibrated probability that a token's rank-r guess at this depth is right. */
double pred_rank_hit_rate(const pred *p, int32_t depth, int32_t rank);

#endif
