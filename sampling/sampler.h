/*
 * sampler — picks the next token from a row of logits, with OpenAI's and llama.cpp's knobs.
 *
 * Contract
 * - One sampler per sequence (per choice of a request).  It owns copies of everything it
 *   needs (logit_bias included) and all its scratch memory, allocated once by
 *   sampler_create(): sampler_sample() never allocates and reads exactly n_vocab floats of
 *   `logits` (the n_vocab given to sampler_create; sampler_n_vocab() returns it so a caller
 *   can check that it matches the model's logits row).  A sampler is used by one thread at a
 *   time (the engine thread); different samplers are independent.
 * - The chain, applied to a private copy of the logits, in this order:
 *     1. logit_bias: logit += bias; a bias of -100 bans the token (logit = -inf).  Entries are
 *        OpenAI's -100..100, token ids 0..n_vocab-1; a repeated token id: the last entry wins.
 *     2. repetition_penalty (CTRL / Hugging Face): every distinct token among the last
 *        repetition_last_n tokens of the sequence (prompt given to sampler_accept_prompt,
 *        then the accepted tokens) has its logit divided by the penalty when positive and
 *        multiplied by it when negative.
 *     3. presence / frequency penalty (OpenAI): logit -= presence * (count > 0)
 *        + frequency * count, where count is how often the token was accepted with
 *        sampler_accept() (generated tokens only, not the prompt).
 *        --> the log-probabilities reported in sampler_result are log_softmax of the logits
 *            at this point: the model's distribution as the request adjusted it (bias and
 *            penalties), before temperature and truncation.  They are the same whatever the
 *            temperature / top_k / top_p / min_p, a token forced by bias shows a logprob near
 *            0, banned tokens (-inf) never appear in the top list.
 *     4. temperature 0: greedy, the argmax (lowest token id among equal logits); steps 5-8
 *        are skipped and no random number is drawn.  Otherwise z = logit / temperature.
 *     5. top_k (k > 0): keep the k highest z (ties: lower token id first).
 *     6. top_p (< 1): of what is left, sorted by z descending (ties: lower id first), keep the
 *        shortest prefix whose probability mass (renormalised over what step 5 kept) is
 *        >= top_p.
 *     7. min_p (> 0): keep the tokens whose probability is >= min_p * the largest probability.
 *     8. draw from the kept tokens in proportion to exp(z).
 *   This is Hugging Face's order (penalty processors, then the Temperature, TopK, TopP, MinP
 *   warpers; vLLM does the same) rather than llama.cpp's default chain, which applies the
 *   temperature after the truncation samplers: with HF's order top_p and min_p act on the
 *   distribution that is actually drawn from, which is what OpenAI-compatible servers do and
 *   what a client tuning temperature together with top_p expects.  Bias before penalties is
 *   the order of llama.cpp and vLLM.
 * - Determinism: a sampler is a pure function of (n_vocab, params, seed, the accepted prompt,
 *   the sequence of logits rows and accepted tokens): the same seed and inputs give the same
 *   tokens, run after run, with the same build (a xoshiro256** generator seeded by splitmix64,
 *   one uniform double per non-greedy draw; every order used is total, ties broken by token
 *   id; float expf from libm, so another libm could differ in the last bit).  Without a seed
 *   one is drawn from getrandom(2) and sampler_seed() returns it, so a run can be replayed.
 * - Cost per token: O(n_vocab) plus O(repetition_last_n) and O(distinct generated tokens) for
 *   the penalties.  top_k and top_p never sort the vocabulary: top_k is a quickselect of
 *   the k best, top_p a weighted quickselect (partition, keep or drop the better side by its
 *   mass), both O(n_vocab) expected whatever k or the size of the nucleus.
 * - Memory: 12 bytes per vocabulary entry (1.8 MB at 150k), plus 4 with repetition_penalty
 *   and 8 with presence / frequency penalties.
 * - Non-finite logits: NaN counts as -inf (never drawn), +inf (given, or reached by a
 *   penalty) as FLT_MAX.
 * - Errors are negative errno values with a message in the caller's buffer naming the
 *   parameter, its value and the allowed range.
 */
#ifndef MOE_SAMPLER_H
#define MOE_SAMPLER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum { SAMPLER_MAX_TOP_LOGPROBS = 20, SAMPLER_MAX_REPETITION_LAST_N = 4096 };

typedef struct sampler_bias {
    int32_t token;
    float bias;
} sampler_bias;

typedef struct sampler_params {
    float temperature;         /* 0: greedy (argmax, lowest index among equals); 0..2 as OpenAI */
    int32_t top_k;             /* 0 (or >= n_vocab): off; >= 0 */
    float top_p;               /* 1: off; (0, 1] */
    float min_p;               /* 0: off; [0, 1] */
    float repetition_penalty;  /* 1: off; > 0, over the last repetition_last_n tokens */
    int32_t repetition_last_n; /* 0..SAMPLER_MAX_REPETITION_LAST_N; 0 turns the penalty off */
    float presence_penalty;    /* OpenAI: -2..2, over generated tokens */
    float frequency_penalty;   /* OpenAI: -2..2, over generated tokens */
    uint64_t seed;
    bool has_seed;        /* false: a random seed (getrandom), readable with sampler_seed() */
    bool logprobs;        /* informative: sampler_sample fills a result whenever given one */
    int32_t top_logprobs; /* 0..SAMPLER_MAX_TOP_LOGPROBS entries in sampler_result.top */
    const sampler_bias *logit_bias; /* copied by sampler_create; bias -100..100, -100 bans */
    size_t n_logit_bias;
} sampler_params;

/* What a draw reports; log-probabilities as described in the contract (after bias and
 * penalties, before temperature and truncation), natural logarithm. */
typedef struct sampler_result {
    float logprob; /* of the chosen token */
    int32_t n_top; /* entries in top: min(top_logprobs, tokens not banned) */
    struct {
        int32_t token;
        float logprob;
    } top[SAMPLER_MAX_TOP_LOGPROBS]; /* highest first; equal logprobs: lower token id first */
} sampler_result;

typedef struct sampler sampler;

/* temperature 1, top_k 0, top_p 1, min_p 0, repetition_penalty 1 over the last 64 tokens,
 * presence and frequency 0, no seed, no logprobs, no bias. */
sampler_params sampler_params_default(void);

/* Validates every parameter (and every logit_bias entry against n_vocab), copies them and
 * allocates the scratch memory.  -EINVAL with a message for a bad parameter, -ENOMEM, or the
 * error of getrandom(2).  *out is NULL on failure. */
int sampler_create(sampler **out, int32_t n_vocab, const sampler_params *p, char *err,
                   size_t err_size);

/* Frees the sampler and sets *s to NULL; NULL and *s == NULL are fine. */
void sampler_destroy(sampler **s);

/* Feeds the prompt's token ids (may be called several times, in order); they count only
 * for repetition_penalty.  -EINVAL (nothing recorded) when an id is outside 0..n_vocab-1. */
int sampler_accept_prompt(sampler *s, const int32_t *ids, size_t n);

/* Picks a token from `logits` (exactly n_vocab floats, left unchanged).  Returns the token,
 * or -1 when logit_bias banned every token (res then has logprob -inf and n_top 0).  With
 * res non-NULL, fills it (the top list only up to top_logprobs).  Does not record the token:
 * call sampler_accept() with the token the sequence really continues with. */
int32_t sampler_sample(sampler *s, const float *logits, sampler_result *res);

/* Records the token the sequence continued with (normally the one sampler_sample returned)
 * for the penalties.  Ids outside 0..n_vocab-1 are ignored. */
void sampler_accept(sampler *s, int32_t token);

/* The seed in use: the one given, or the one drawn when has_seed was false. */
uint64_t sampler_seed(const sampler *s);

/* The n_vocab the sampler was created with: the length of every logits row it reads. */
int32_t sampler_n_vocab(const sampler *s);

#endif
