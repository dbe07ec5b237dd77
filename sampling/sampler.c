/*
 * sampler.c — the sampling chain of sampler.h.
 *
 * Design: every sampler_sample() call first writes the adjusted logits (bias, penalties) into a
 * private row `adj`, which is what the log-probabilities are taken from and what greedy takes
 * the argmax of.  For a random draw the tokens that are not banned become candidates
 * {id, z = (adj - max) / temperature}; truncation reorders and shortens that candidate array
 * in place by partitioning (quickselect), never by sorting it.  Since z of the best token is
 * 0, min_p is a plain threshold z >= log(min_p); it is applied before top_p's search (with
 * top_p's mass still measured over everything top_k kept), which gives the same kept set as
 * top_p-then-min_p while top_p only searches what min_p lets through.
 *
 * All orders compare (key descending, id ascending), a total order, so the kept set does not
 * depend on the path the selection took, and the same inputs always take the same path.
 */
#include "sampling/sampler.h"

#include <assert.h>
#include <errno.h>
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

typedef struct cand {
    int32_t id;
    float z; /* (adjusted logit - max) / temperature: <= 0, 0 for the best token */
} cand;

struct sampler {
    int32_t n_vocab;
    sampler_params p; /* logit_bias points at bias below */
    sampler_bias *bias;
    size_t n_bias;
    uint64_t seed;
    uint64_t rng[4]; /* xoshiro256** state */

    float *adj;  /* n_vocab: logits after bias and penalties */
    cand *cands; /* n_vocab */

    /* repetition penalty: a ring of the last repetition_last_n tokens; `mark` dedups the ring
     * on each application without clearing (a token is done when mark == stamp). */
    int32_t *ring;
    size_t ring_len, ring_pos;
    uint32_t *mark;
    uint32_t stamp;

    /* presence / frequency: counts of generated tokens and the list of those with count > 0 */
    uint32_t *gen_count;
    int32_t *gen_seen;
    size_t n_gen_seen;
};

/* ---- random numbers: splitmix64 to seed xoshiro256** (Blackman & Vigna) -------------------- */

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static uint64_t rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

static uint64_t rng_next(uint64_t s[4])
{
    uint64_t result = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

static double rng_uniform(uint64_t s[4]) /* [0, 1), 53 bits */
{
    return (double)(rng_next(s) >> 11) * 0x1.0p-53;
}

/* ---- parameters ----------------------------------------------------------------------------- */

sampler_params sampler_params_default(void)
{
    return (sampler_params){
        .temperature = 1.0f,
        .top_k = 0,
        .top_p = 1.0f,
        .min_p = 0.0f,
        .repetition_penalty = 1.0f,
        .repetition_last_n = 64, /* llama.cpp's default window */
        .presence_penalty = 0.0f,
        .frequency_penalty = 0.0f,
    };
}

/* `lo_open`: the lower bound is excluded.  NaN fails every comparison and is refused. */
static int check_range(const char *name, float v, float lo, bool lo_open, float hi, char *err,
                       size_t err_size)
{
    bool ok = isfinite(v) && (lo_open ? v > lo : v >= lo) && v <= hi;
    if (ok) return 0;
    snprintf(err, err_size, "%s = %g is out of range: allowed %c%g, %g]", name, (double)v,
             lo_open ? '(' : '[', (double)lo, (double)hi);
    return -EINVAL;
}

static int validate(int32_t n_vocab, const sampler_params *p, char *err, size_t err_size)
{
    int rc;
    if (n_vocab <= 0) {
        snprintf(err, err_size, "n_vocab = %d is out of range: allowed [1, %d]", n_vocab,
                 INT32_MAX);
        return -EINVAL;
    }
    if ((rc = check_range("temperature", p->temperature, 0.0f, false, 2.0f, err, err_size)) ||
        (rc = check_range("top_p", p->top_p, 0.0f, true, 1.0f, err, err_size)) ||
        (rc = check_range("min_p", p->min_p, 0.0f, false, 1.0f, err, err_size)) ||
        (rc = check_range("presence_penalty", p->presence_penalty, -2.0f, false, 2.0f, err,
                          err_size)) ||
        (rc = check_range("frequency_penalty", p->frequency_penalty, -2.0f, false, 2.0f, err,
                          err_size)))
        return rc;
    if (!(isfinite(p->repetition_penalty) && p->repetition_penalty > 0.0f)) {
        snprintf(err, err_size,
                 "repetition_penalty = %g is out of range: allowed (0, inf), 1 turns it off",
                 (double)p->repetition_penalty);
        return -EINVAL;
    }
    if (p->top_k < 0) { /* above n_vocab keeps everything, as llama.cpp and vLLM do */
        snprintf(err, err_size, "top_k = %d is out of range: allowed [0, %d] (0 turns it off)",
                 p->top_k, INT32_MAX);
        return -EINVAL;
    }
    if (p->repetition_last_n < 0 || p->repetition_last_n > SAMPLER_MAX_REPETITION_LAST_N) {
        snprintf(err, err_size, "repetition_last_n = %d is out of range: allowed [0, %d]",
                 p->repetition_last_n, SAMPLER_MAX_REPETITION_LAST_N);
        return -EINVAL;
    }
    if (p->top_logprobs < 0 || p->top_logprobs > SAMPLER_MAX_TOP_LOGPROBS) {
        snprintf(err, err_size, "top_logprobs = %d is out of range: allowed [0, %d]",
                 p->top_logprobs, SAMPLER_MAX_TOP_LOGPROBS);
        return -EINVAL;
    }
    if (p->n_logit_bias > 0 && !p->logit_bias) {
        snprintf(err, err_size, "logit_bias is NULL with n_logit_bias = %zu", p->n_logit_bias);
        return -EINVAL;
    }
    if (p->n_logit_bias > (size_t)n_vocab) {
        /* more entries than tokens can only be repeats; bounds the copy */
        snprintf(err, err_size, "logit_bias has %zu entries: allowed at most n_vocab = %d",
                 p->n_logit_bias, n_vocab);
        return -EINVAL;
    }
    for (size_t i = 0; i < p->n_logit_bias; i++) {
        const sampler_bias *b = &p->logit_bias[i];
        if (b->token < 0 || b->token >= n_vocab) {
            snprintf(err, err_size, "logit_bias token %d is out of range: allowed [0, %d]",
                     b->token, n_vocab - 1);
            return -EINVAL;
        }
        if (!(isfinite(b->bias) && b->bias >= -100.0f && b->bias <= 100.0f)) {
            snprintf(err, err_size,
                     "logit_bias for token %d = %g is out of range: allowed [-100, 100]", b->token,
                     (double)b->bias);
            return -EINVAL;
        }
    }
    return 0;
}

static int bias_cmp(const void *a, const void *b)
{
    const sampler_bias *x = a, *y = b;
    return (x->token > y->token) - (x->token < y->token);
}

/* Copies the bias list sorted by token (one entry per token) so that applying it is a walk over
 * a short array; a token given more than once takes the value of its last entry, as a JSON
 * object with a repeated key does in most parsers. */
static int copy_bias(sampler *s, const sampler_params *p)
{
    if (p->n_logit_bias == 0) return 0;
    s->bias = malloc(p->n_logit_bias * sizeof *s->bias);
    if (!s->bias) return -ENOMEM;
    memcpy(s->bias, p->logit_bias, p->n_logit_bias * sizeof *s->bias);
    qsort(s->bias, p->n_logit_bias, sizeof *s->bias, bias_cmp);
    size_t n = 0;
    for (size_t i = 0; i < p->n_logit_bias; i++) {
        if (n > 0 && s->bias[n - 1].token == s->bias[i].token) continue;
        s->bias[n++] = s->bias[i];
    }
    s->n_bias = n;
    if (n != p->n_logit_bias) {
        /* qsort is not stable: replay the caller's list in order so the last entry wins */
        for (size_t i = 0; i < p->n_logit_bias; i++) {
            sampler_bias *hit = bsearch(&p->logit_bias[i], s->bias, n, sizeof *s->bias, bias_cmp);
            assert(hit);
            hit->bias = p->logit_bias[i].bias;
        }
    }
    return 0;
}

int sampler_create(sampler **out, int32_t n_vocab, const sampler_params *p, char *err,
                   size_t err_size)
{
    *out = NULL;
    int rc = validate(n_vocab, p, err, err_size);
    if (rc) return rc;

    sampler *s = calloc(1, sizeof *s);
    if (!s) goto oom;
    s->n_vocab = n_vocab;
    s->p = *p;
    if (copy_bias(s, p)) goto oom;
    s->p.logit_bias = s->bias;
    s->p.n_logit_bias = s->n_bias;

    if (p->has_seed) {
        s->seed = p->seed;
    } else {
        ssize_t got = getrandom(&s->seed, sizeof s->seed, 0);
        if (got != (ssize_t)sizeof s->seed) {
            rc = got < 0 ? -errno : -EIO;
            snprintf(err, err_size, "getrandom for the sampler seed: %s", strerror(-rc));
            goto fail;
        }
    }
    uint64_t x = s->seed;
    for (int i = 0; i < 4; i++)
        s->rng[i] = splitmix64(&x);

    size_t nv = (size_t)n_vocab;
    s->adj = malloc(nv * sizeof *s->adj);
    s->cands = malloc(nv * sizeof *s->cands);
    if (!s->adj || !s->cands) goto oom;
    if (p->repetition_penalty != 1.0f && p->repetition_last_n > 0) {
        s->ring = malloc((size_t)p->repetition_last_n * sizeof *s->ring);
        s->mark = calloc(nv, sizeof *s->mark);
        if (!s->ring || !s->mark) goto oom;
    }
    if (p->presence_penalty != 0.0f || p->frequency_penalty != 0.0f) {
        s->gen_count = calloc(nv, sizeof *s->gen_count);
        s->gen_seen = malloc(nv * sizeof *s->gen_seen);
        if (!s->gen_count || !s->gen_seen) goto oom;
    }
    *out = s;
    return 0;

oom:
    rc = -ENOMEM;
    snprintf(err, err_size, "out of memory for a sampler over %d tokens", n_vocab);
fail:
    sampler_destroy(&s);
    return rc;
}

void sampler_destroy(sampler **sp)
{
    if (!sp || !*sp) return;
    sampler *s = *sp;
    free(s->bias);
    free(s->adj);
    free(s->cands);
    free(s->ring);
    free(s->mark);
    free(s->gen_count);
    free(s->gen_seen);
    free(s);
    *sp = NULL;
}

uint64_t sampler_seed(const sampler *s)
{
    return s->seed;
}

int32_t sampler_n_vocab(const sampler *s)
{
    return s->n_vocab;
}

/* ---- history ---------------------------------------------------------------------------- */

static void ring_push(sampler *s, int32_t token)
{
    if (!s->ring) return;
    size_t cap = (size_t)s->p.repetition_last_n;
    s->ring[s->ring_pos] = token;
    s->ring_pos = (s->ring_pos + 1) % cap;
    if (s->ring_len < cap) s->ring_len++;
}

int sampler_accept_prompt(sampler *s, const int32_t *ids, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= s->n_vocab) return -EINVAL;
    /* only the last repetition_last_n ids can stay in the ring */
    size_t cap = s->ring ? (size_t)s->p.repetition_last_n : 0;
    for (size_t i = n > cap ? n - cap : 0; i < n; i++)
        ring_push(s, ids[i]);
    return 0;
}

void sampler_accept(sampler *s, int32_t token)
{
    if (token < 0 || token >= s->n_vocab) return;
    ring_push(s, token);
    if (s->gen_count) {
        if (s->gen_count[token]++ == 0) s->gen_seen[s->n_gen_seen++] = token;
    }
}

/* ---- the adjusted logits -------------------------------------------------------------------- */

static void adjust_logits(sampler *s, const float *logits)
{
    float *adj = s->adj;
    for (int32_t i = 0; i < s->n_vocab; i++) {
        float v = logits[i];
        if (isnan(v))
            v = -INFINITY;
        else if (v == INFINITY)
            v = FLT_MAX;
        adj[i] = v;
    }
    for (size_t i = 0; i < s->n_bias; i++) {
        const sampler_bias *b = &s->bias[i];
        adj[b->token] = b->bias <= -100.0f ? -INFINITY : adj[b->token] + b->bias;
    }
    if (s->ring && s->ring_len > 0) {
        float pen = s->p.repetition_penalty;
        if (++s->stamp == 0) { /* wrapped: old marks could alias the new stamp */
            memset(s->mark, 0, (size_t)s->n_vocab * sizeof *s->mark);
            s->stamp = 1;
        }
        for (size_t i = 0; i < s->ring_len; i++) {
            int32_t t = s->ring[i];
            if (s->mark[t] == s->stamp) continue;
            s->mark[t] = s->stamp;
            adj[t] = adj[t] > 0.0f ? fminf(adj[t] / pen, FLT_MAX) : adj[t] * pen;
        }
    }
    if (s->gen_count) {
        float pres = s->p.presence_penalty, freq = s->p.frequency_penalty;
        for (size_t i = 0; i < s->n_gen_seen; i++) {
            int32_t t = s->gen_seen[i];
            adj[t] = fminf(adj[t] - (pres + freq * (float)s->gen_count[t]), FLT_MAX);
        }
    }
}

/* ---- log-probabilities ------------------------------------------------------------------- */

/* log of the softmax normaliser of adj, -inf when every token is banned */
static double log_normaliser(const float *adj, int32_t n, float max)
{
    if (max == -INFINITY) return -INFINITY;
    double sum = 0.0;
    for (int32_t i = 0; i < n; i++)
        sum += (double)expf(adj[i] - max);
    return (double)max + log(sum);
}

static void top_logprobs(const sampler *s, double lse, sampler_result *res)
{
    int32_t want = s->p.top_logprobs, have = 0;
    const float *adj = s->adj;
    for (int32_t i = 0; i < s->n_vocab && want > 0; i++) {
        float v = adj[i];
        if (v == -INFINITY) continue;
        /* ascending id means an equal value never displaces an earlier one */
        if (have == want && !(v > res->top[have - 1].logprob)) continue;
        int32_t j = have < want ? have++ : want - 1;
        while (j > 0 && v > res->top[j - 1].logprob) {
            res->top[j] = res->top[j - 1];
            j--;
        }
        res->top[j].token = i;
        res->top[j].logprob = v; /* the raw value while selecting, the logprob below */
    }
    for (int32_t j = 0; j < have; j++)
        res->top[j].logprob = (float)((double)res->top[j].logprob - lse);
    res->n_top = have;
}

/* ---- truncation --------------------------------------------------------------------------- */

/* The candidates' total order: larger key first, equal keys by lower id.  The key is z
 * during top_k and min_p and the weight exp(z) from top_p on; exp is monotone, so both
 * orders agree (up to weights that round to equal values, which top_p cannot tell apart). */
static inline bool cand_before(const cand *a, const cand *b)
{
    return a->z > b->z || (a->z == b->z && a->id < b->id);
}

static int cand_cmp(const void *a, const void *b)
{
    const cand *x = a, *y = b;
    return cand_before(x, y) ? -1 : cand_before(y, x) ? 1 : 0;
}

static inline void cand_swap(cand *a, cand *b)
{
    cand t = *a;
    *a = *b;
    *b = t;
}

/* Hoare partition of c[lo..hi) (hi - lo > 2) around a median-of-three pivot.  Returns j with
 * lo <= j < hi - 1 such that every c[lo..j] comes before every c[j+1..hi): ids are unique, so
 * the order is strict and both sides are non-empty, which guarantees progress. */
static size_t partition(cand *c, size_t lo, size_t hi)
{
    size_t mid = lo + (hi - lo) / 2;
    if (cand_before(&c[mid], &c[lo])) cand_swap(&c[mid], &c[lo]);
    if (cand_before(&c[hi - 1], &c[lo])) cand_swap(&c[hi - 1], &c[lo]);
    if (cand_before(&c[hi - 1], &c[mid])) cand_swap(&c[hi - 1], &c[mid]);
    cand pivot = c[mid];
    size_t i = lo, j = hi - 1;
    for (;;) {
        while (cand_before(&c[i], &pivot))
            i++;
        while (cand_before(&pivot, &c[j]))
            j--;
        if (i >= j) break;
        cand_swap(&c[i], &c[j]);
        i++;
        j--;
    }
    assert(j >= lo && j < hi - 1);
    return j;
}

enum { SMALL_RANGE = 16, MAX_DEPTH = 64 };

/* Rearranges c[0..n) so that c[0..k) hold the k best candidates (in no particular order):
 * quickselect, with a sort of the last small range, or of the whole range past a depth limit,
 * which bounds the worst case by O(n log n). */
static void select_best(cand *c, size_t n, size_t k)
{
    if (k == 0 || k >= n) return;
    size_t lo = 0, hi = n; /* the boundary k lies strictly inside [lo, hi) */
    for (int depth = 0; hi - lo > SMALL_RANGE && depth < MAX_DEPTH; depth++) {
        size_t j = partition(c, lo, hi);
        if (k <= j)
            hi = j + 1;
        else
            lo = j + 1;
        if (k == lo) return;
    }
    qsort(c + lo, hi - lo, sizeof *c, cand_cmp);
}

/* top_p over weights c[0..n).z: returns m such that c[0..m) is the shortest prefix of the
 * best-first order whose weight reaches `target` (n when all of c falls short), having moved
 * that prefix to the front.  A weighted quickselect: a partition's better side is either
 * enough on its own (the answer is inside it) or taken whole (the answer is beyond it), so
 * the cost is O(n) expected however large the nucleus, and nothing is sorted but the last
 * small range. */
static size_t top_p_select(cand *c, size_t n, double target)
{
    size_t lo = 0, hi = n;
    double taken = 0.0; /* weight of c[0..lo), all of it kept */
    for (int depth = 0; hi - lo > SMALL_RANGE && depth < MAX_DEPTH; depth++) {
        size_t j = partition(c, lo, hi);
        double better = 0.0;
        for (size_t i = lo; i <= j; i++)
            better += (double)c[i].z;
        if (taken + better >= target) {
            hi = j + 1;
        } else {
            taken += better;
            lo = j + 1;
        }
    }
    qsort(c + lo, hi - lo, sizeof *c, cand_cmp);
    for (size_t i = lo; i < hi; i++) {
        taken += (double)c[i].z;
        if (taken >= target) return i + 1;
    }
    /* all of c falls short, or rounding (sums taken in another order) left the target a hair
     * beyond a range that did reach it: keep the whole range */
    return hi;
}

/* top_k, top_p, min_p over candidates holding z, then one draw; see the file comment. */
static int32_t draw(sampler *s, size_t n)
{
    cand *c = s->cands;
    const sampler_params *p = &s->p;

    if (p->top_k > 0 && (size_t)p->top_k < n) {
        select_best(c, n, (size_t)p->top_k);
        n = (size_t)p->top_k;
    }
    /* top_p's mass is measured over what top_k kept; min_p, a threshold on z (p_i >= min_p *
     * p_max <=> z_i >= log(min_p), z of the best being 0), can be applied before top_p's
     * search without changing the result, and then the search only sees what min_p keeps */
    double total = 0.0;
    size_t kept = n;
    if (p->min_p > 0.0f) {
        if (p->top_p < 1.0f)
            for (size_t i = 0; i < n; i++)
                total += (double)expf(c[i].z);
        float threshold = logf(p->min_p);
        kept = 0;
        for (size_t i = 0; i < n; i++)
            if (c[i].z >= threshold) cand_swap(&c[kept++], &c[i]);
        for (size_t i = 0; i < kept; i++)
            c[i].z = expf(c[i].z); /* from here on z holds the weight */
    } else {
        for (size_t i = 0; i < n; i++) {
            c[i].z = expf(c[i].z);
            total += (double)c[i].z;
        }
    }
    if (p->top_p < 1.0f) kept = top_p_select(c, kept, (double)p->top_p * total);
    assert(kept > 0);

    double sum = 0.0;
    for (size_t i = 0; i < kept; i++)
        sum += (double)c[i].z;
    double u = rng_uniform(s->rng) * sum, acc = 0.0;
    for (size_t i = 0; i < kept; i++) {
        acc += (double)c[i].z;
        if (u < acc) return c[i].id;
    }
    return c[kept - 1].id; /* not reached: acc ends equal to sum > u */
}

int32_t sampler_sample(sampler *s, const float *logits, sampler_result *res)
{
    adjust_logits(s, logits);
    const float *adj = s->adj;
    int32_t best = -1;
    float max = -INFINITY;
    for (int32_t i = 0; i < s->n_vocab; i++)
        if (adj[i] > max) {
            max = adj[i];
            best = i;
        }
    if (best < 0) {
        if (res) {
            res->logprob = -INFINITY;
            res->n_top = 0;
        }
        return -1;
    }

    int32_t token = best;
    if (s->p.temperature > 0.0f) {
        float temperature = s->p.temperature;
        size_t n = 0;
        for (int32_t i = 0; i < s->n_vocab; i++)
            if (adj[i] != -INFINITY) s->cands[n++] = (cand){i, (adj[i] - max) / temperature};
        token = draw(s, n);
    }
    if (res) {
        double lse = log_normaliser(adj, s->n_vocab, max);
        res->logprob = (float)((double)adj[token] - lse);
        top_logprobs(s, lse, res);
    }
    return token;
}
