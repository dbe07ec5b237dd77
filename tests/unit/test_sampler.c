/*
 * test_sampler.c — the sampler against distributions computed here, independently, in double.
 *
 * Each truncation rule (top_k, top_p, min_p) and each penalty is computed by the test from its
 * definition (sort the whole vocabulary, accumulate mass, ...), never by calling the sampler,
 * and checked two ways: the set of tokens drawn must be exactly the kept set, and the counts
 * of tens of thousands of seeded draws must pass a chi-square test against the renormalised
 * distribution at a false-alarm rate of about 1e-6 (so a correct sampler does not flake when
 * the seeds change, and a wrong temperature is caught: see the power check).  Logits arrays
 * are heap blocks of exactly n_vocab floats, so the ASan build catches a read past the row.
 */
#include "sampling/sampler.h"

#include <check.h>
#include <errno.h>
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- test data: a splitmix64 stream, unrelated to the sampler's generator ------------------ */

static uint64_t data_state = 0x2545f4914f6cdd1dull;

static uint64_t data_next(void)
{
    uint64_t z = (data_state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static double data_uniform(void) /* [-1, 1) */
{
    return (double)(data_next() >> 11) * 0x1.0p-52 - 1.0;
}

static float *random_logits(int32_t n, double scale)
{
    float *l = malloc((size_t)n * sizeof *l);
    ck_assert_ptr_nonnull(l);
    for (int32_t i = 0; i < n; i++)
        l[i] = (float)(data_uniform() * scale);
    return l;
}

static float *logits_from(const double *values, int32_t n)
{
    float *l = malloc((size_t)n * sizeof *l);
    ck_assert_ptr_nonnull(l);
    for (int32_t i = 0; i < n; i++)
        l[i] = (float)values[i];
    return l;
}

static sampler *make(int32_t n_vocab, const sampler_params *p)
{
    char err[256] = "";
    sampler *s = NULL;
    int rc = sampler_create(&s, n_vocab, p, err, sizeof err);
    ck_assert_msg(rc == 0, "sampler_create: %d %s", rc, err);
    ck_assert_ptr_nonnull(s);
    return s;
}

static sampler_params seeded(uint64_t seed)
{
    sampler_params p = sampler_params_default();
    p.seed = seed;
    p.has_seed = true;
    return p;
}

/* ---- the reference: the chain of sampler.h written out over a sorted vocabulary ------------- */

typedef struct ref_item {
    int32_t id;
    double z;
} ref_item;

static int ref_cmp(const void *a, const void *b) /* z descending, id ascending */
{
    const ref_item *x = a, *y = b;
    if (x->z != y->z) return x->z > y->z ? -1 : 1;
    return (x->id > y->id) - (x->id < y->id);
}

/* Probabilities of the reference chain over adjusted logits `adj`: temperature, then top_k,
 * top_p (mass renormalised after top_k), min_p.  Writes probs[n] (0 for removed tokens) and
 * returns how many are kept. Asserts that no top_p / min_p boundary is within `margin` of
 * the threshold, so that float rounding in the sampler cannot legitimately decide otherwise. */
static int32_t reference(const double *adj, int32_t n, double temperature, int32_t top_k,
                         double top_p, double min_p, double *probs)
{
    ref_item *it = malloc((size_t)n * sizeof *it);
    ck_assert_ptr_nonnull(it);
    int32_t m = 0;
    for (int32_t i = 0; i < n; i++)
        if (adj[i] != -INFINITY) it[m++] = (ref_item){i, adj[i] / temperature};
    qsort(it, (size_t)m, sizeof *it, ref_cmp);
    if (top_k > 0 && top_k < m) m = top_k;
    double zmax = it[0].z, total = 0.0;
    for (int32_t i = 0; i < m; i++)
        total += exp(it[i].z - zmax);
    const double margin = 1e-5;
    if (top_p < 1.0) {
        double mass = 0.0;
        int32_t keep = m;
        for (int32_t i = 0; i < m; i++) {
            double before = mass;
            mass += exp(it[i].z - zmax) / total;
            if (mass >= top_p) {
                ck_assert_msg(mass - top_p > margin && top_p - before > margin,
                              "ambiguous top_p boundary: %.9f %.9f", before, mass);
                keep = i + 1;
                break;
            }
        }
        m = keep;
    }
    if (min_p > 0.0) {
        int32_t keep = 0;
        for (int32_t i = 0; i < m; i++) {
            double ratio = exp(it[i].z - zmax);
            ck_assert_msg(fabs(ratio - min_p) > margin * min_p, "ambiguous min_p boundary");
            if (ratio >= min_p) keep = i + 1;
        }
        m = keep;
    }
    for (int32_t i = 0; i < n; i++)
        probs[i] = 0.0;
    double kept = 0.0;
    for (int32_t i = 0; i < m; i++)
        kept += exp(it[i].z - zmax);
    for (int32_t i = 0; i < m; i++)
        probs[it[i].id] = exp(it[i].z - zmax) / kept;
    free(it);
    return m;
}

static void log_softmax(const double *adj, int32_t n, double *out)
{
    double max = -INFINITY, sum = 0.0;
    for (int32_t i = 0; i < n; i++)
        if (adj[i] > max) max = adj[i];
    for (int32_t i = 0; i < n; i++)
        sum += exp(adj[i] - max);
    for (int32_t i = 0; i < n; i++)
        out[i] = adj[i] - max - log(sum);
}

/* ---- chi-square ------------------------------------------------------------------------- */

/* Pearson's statistic of counts against probs over n_draws; bins expected below 5 draws are
 * pooled.  A draw of a token of probability 0 gives +inf. */
static double chi_square(const long *counts, const double *probs, int32_t n, long n_draws, int *df)
{
    double stat = 0.0, pool_expected = 0.0;
    long pool_count = 0;
    int bins = 0;
    *df = 1;
    for (int32_t i = 0; i < n; i++) {
        double e = probs[i] * (double)n_draws;
        if (probs[i] == 0.0) {
            if (counts[i] > 0) return INFINITY;
            continue;
        }
        if (e < 5.0) {
            pool_expected += e;
            pool_count += counts[i];
            continue;
        }
        stat += ((double)counts[i] - e) * ((double)counts[i] - e) / e;
        bins++;
    }
    if (pool_expected > 0.0) {
        stat += ((double)pool_count - pool_expected) * ((double)pool_count - pool_expected) /
                (pool_expected < 1.0 ? 1.0 : pool_expected);
        bins++;
    }
    *df = bins > 1 ? bins - 1 : 1;
    return stat;
}

/* Upper critical value for a false-alarm rate of about 1e-6 (z = 4.75), Wilson-Hilferty. */
static double chi_square_critical(int df)
{
    double k = df, z = 4.75, a = 2.0 / (9.0 * k);
    double c = 1.0 - a + z * sqrt(a);
    return k * c * c * c;
}

static void count_draws(sampler *s, const float *logits, int32_t n, long n_draws, long *counts)
{
    for (int32_t i = 0; i < n; i++)
        counts[i] = 0;
    for (long d = 0; d < n_draws; d++) {
        int32_t t = sampler_sample(s, logits, NULL);
        /* not ck_assert: Check reports every passing check to its parent process */
        if (t < 0 || t >= n) ck_abort_msg("drew token %d of %d", t, n);
        counts[t]++;
    }
}

static void assert_follows(const long *counts, const double *probs, int32_t n, long n_draws,
                           const char *what)
{
    int df = 1;
    double stat = chi_square(counts, probs, n, n_draws, &df);
    ck_assert_msg(stat < chi_square_critical(df), "%s: chi-square %.2f with %d df (critical %.2f)",
                  what, stat, df, chi_square_critical(df));
}

/* Every token of probability 0 was never drawn, and every token expected at least 20 times
 * was drawn: the drawn set is the kept set. */
static void assert_kept_set(const long *counts, const double *probs, int32_t n, long n_draws)
{
    for (int32_t i = 0; i < n; i++) {
        if (probs[i] == 0.0) ck_assert_msg(counts[i] == 0, "token %d drawn but removed", i);
        if (probs[i] * (double)n_draws >= 20.0)
            ck_assert_msg(counts[i] > 0, "token %d kept but never drawn", i);
    }
}

static void to_double(const float *l, int32_t n, double *out)
{
    for (int32_t i = 0; i < n; i++)
        out[i] = l[i];
}

/* ---- tests ------------------------------------------------------------------------------ */

START_TEST(greedy_is_argmax_lowest_index)
{
    enum { N = 37 };
    float *l = random_logits(N, 3.0);
    l[11] = 9.0f;
    l[29] = 9.0f; /* a tie: the lower id wins */
    sampler_params p = seeded(1);
    p.temperature = 0.0f;
    p.top_k = 3;
    p.top_p = 0.5f;
    p.min_p = 0.5f;
    sampler *s = make(N, &p);
    for (int i = 0; i < 100; i++)
        ck_assert_int_eq(sampler_sample(s, l, NULL), 11);
    l[11] = 8.999f;
    ck_assert_int_eq(sampler_sample(s, l, NULL), 29);
    for (int32_t i = 0; i < N; i++)
        l[i] = -1.0f; /* all equal: token 0 */
    ck_assert_int_eq(sampler_sample(s, l, NULL), 0);
    sampler_destroy(&s);
    ck_assert_ptr_null(s);
    free(l);
}
END_TEST

START_TEST(temperature_follows_softmax)
{
    enum { N = 12 };
    const long draws = 50000;
    const float temps[] = {0.3f, 1.0f, 1.8f};
    float *l = random_logits(N, 2.0);
    double adj[N], probs[N], wrong[N];
    long counts[N];
    to_double(l, N, adj);
    for (size_t t = 0; t < sizeof temps / sizeof *temps; t++) {
        sampler_params p = seeded(100 + t);
        p.temperature = temps[t];
        sampler *s = make(N, &p);
        count_draws(s, l, N, draws, counts);
        reference(adj, N, temps[t], 0, 1.0, 0.0, probs);
        assert_follows(counts, probs, N, draws, "softmax(l/T)");
        /* power: the same counts must reject a distribution with a 25% different T */
        reference(adj, N, temps[t] * 1.25, 0, 1.0, 0.0, wrong);
        int df = 1;
        double stat = chi_square(counts, wrong, N, draws, &df);
        ck_assert_msg(stat > chi_square_critical(df), "T=%g: the test cannot tell T*1.25 (%.1f)",
                      (double)temps[t], stat);
        sampler_destroy(&s);
    }
    free(l);
}
END_TEST

START_TEST(top_k_keeps_exactly_k)
{
    enum { N = 50 };
    const long draws = 40000;
    float *l = random_logits(N, 2.0);
    double adj[N], probs[N];
    long counts[N];
    to_double(l, N, adj);
    for (int32_t k = 1; k <= 9; k += 4) {
        sampler_params p = seeded(200 + (uint64_t)k);
        p.top_k = k;
        p.temperature = 0.9f;
        sampler *s = make(N, &p);
        count_draws(s, l, N, draws, counts);
        ck_assert_int_eq(reference(adj, N, 0.9, k, 1.0, 0.0, probs), k);
        assert_kept_set(counts, probs, N, draws);
        int drawn = 0;
        for (int32_t i = 0; i < N; i++)
            drawn += counts[i] > 0;
        ck_assert_int_eq(drawn, k);
        assert_follows(counts, probs, N, draws, "top_k");
        sampler_destroy(&s);
    }
    /* a tie across the boundary: ids 2 and 3 share the 3rd highest logit, 2 is kept */
    const double tie[6] = {5.0, 4.0, 3.0, 3.0, 1.0, 0.0};
    float *lt = logits_from(tie, 6);
    sampler_params p = seeded(7);
    p.top_k = 3;
    sampler *s = make(6, &p);
    long c6[6];
    count_draws(s, lt, 6, 20000, c6);
    ck_assert_int_gt(c6[2], 0);
    ck_assert_int_eq(c6[3], 0);
    ck_assert_int_eq(c6[4] + c6[5], 0);
    sampler_destroy(&s);
    /* top_k = n_vocab and beyond keep everything */
    for (int32_t k = 6; k <= 1000; k += 994) {
        p.top_k = k;
        s = make(6, &p);
        count_draws(s, lt, 6, 20000, c6);
        for (int i = 0; i < 6; i++)
            ck_assert_int_gt(c6[i], 0);
        sampler_destroy(&s);
    }
    free(lt);
    free(l);
}
END_TEST

/* top_p over a small and a larger vocabulary (the larger nucleus spans several selection
 * blocks of the sampler); the kept set is the shortest prefix with mass >= p. */
static void check_top_p(int32_t n, double scale, float temperature, float top_p, long draws,
                        uint64_t seed)
{
    float *l = random_logits(n, scale);
    double *adj = malloc((size_t)n * sizeof *adj), *probs = malloc((size_t)n * sizeof *probs);
    double *full = malloc((size_t)n * sizeof *full);
    long *counts = malloc((size_t)n * sizeof *counts);
    ck_assert(adj && probs && full && counts);
    to_double(l, n, adj);
    int32_t kept = reference(adj, n, temperature, 0, top_p, 0.0, probs);
    reference(adj, n, temperature, 0, 1.0, 0.0, full);

    /* the reference itself: mass(kept) >= p, and dropping its least likely token falls short */
    double mass = 0.0, least = 1.0;
    for (int32_t i = 0; i < n; i++)
        if (probs[i] > 0.0) {
            mass += full[i];
            if (full[i] < least) least = full[i];
        }
    ck_assert(mass >= top_p && mass - least < top_p);

    sampler_params p = seeded(seed);
    p.temperature = temperature;
    p.top_p = top_p;
    sampler *s = make(n, &p);
    count_draws(s, l, n, draws, counts);
    assert_kept_set(counts, probs, n, draws);
    /* empirical: the drawn tokens carry (in the full distribution) mass >= p */
    double drawn_mass = 0.0;
    int32_t drawn = 0;
    for (int32_t i = 0; i < n; i++)
        if (counts[i] > 0) {
            drawn_mass += full[i];
            drawn++;
        }
    if (drawn == kept) ck_assert(drawn_mass >= top_p);
    assert_follows(counts, probs, n, draws, "top_p");
    sampler_destroy(&s);
    free(counts);
    free(full);
    free(probs);
    free(adj);
    free(l);
}

START_TEST(top_p_smallest_prefix)
{
    check_top_p(100, 3.0, 1.0f, 0.5f, 40000, 301);
    check_top_p(100, 3.0, 0.8f, 0.9f, 40000, 302);
    check_top_p(100, 3.0, 1.5f, 0.95f, 40000, 303);
    check_top_p(3000, 2.0, 1.0f, 0.3f, 60000, 304); /* a nucleus of a few hundred tokens */
}
END_TEST

START_TEST(min_p_relative_threshold)
{
    enum { N = 60 };
    const long draws = 40000;
    float *l = random_logits(N, 3.0);
    double adj[N], probs[N];
    long counts[N];
    to_double(l, N, adj);
    const float temps[] = {1.0f, 0.6f};
    const float mins[] = {0.05f, 0.2f};
    for (int t = 0; t < 2; t++) {
        sampler_params p = seeded(400 + (uint64_t)t);
        p.temperature = temps[t];
        p.min_p = mins[t];
        sampler *s = make(N, &p);
        count_draws(s, l, N, draws, counts);
        int32_t kept = reference(adj, N, temps[t], 0, 1.0, mins[t], probs);
        ck_assert_int_lt(kept, N);
        /* the definition once more, without sorting: kept <=> p_i >= min_p * p_max */
        double full[N], pmax = 0.0;
        reference(adj, N, temps[t], 0, 1.0, 0.0, full);
        for (int32_t i = 0; i < N; i++)
            if (full[i] > pmax) pmax = full[i];
        for (int32_t i = 0; i < N; i++)
            ck_assert((probs[i] > 0.0) == (full[i] >= mins[t] * pmax));
        assert_kept_set(counts, probs, N, draws);
        assert_follows(counts, probs, N, draws, "min_p");
        sampler_destroy(&s);
    }
    free(l);
}
END_TEST

START_TEST(chain_order)
{
    enum { N = 200 };
    const long draws = 50000;
    float *l = random_logits(N, 4.0);
    double adj[N], probs[N];
    long counts[N];
    to_double(l, N, adj);
    sampler_params p = seeded(500);
    p.temperature = 0.7f;
    p.top_k = 20;
    p.top_p = 0.8f;
    p.min_p = 0.02f;
    sampler *s = make(N, &p);
    count_draws(s, l, N, draws, counts);
    reference(adj, N, 0.7, 20, 0.8, 0.02, probs);
    assert_kept_set(counts, probs, N, draws);
    assert_follows(counts, probs, N, draws, "temperature, top_k, top_p, min_p");
    sampler_destroy(&s);
    free(l);
}
END_TEST

/* The result's full top list (top_logprobs = n_vocab <= 20) is the distribution the request
 * adjusted: compare it with the independent log-softmax of `expected`. */
static void assert_logprobs(sampler *s, const float *l, const double *expected, int32_t n)
{
    double ref[SAMPLER_MAX_TOP_LOGPROBS];
    log_softmax(expected, n, ref);
    sampler_result r;
    int32_t t = sampler_sample(s, l, &r);
    ck_assert_int_ge(t, 0);
    ck_assert_int_eq(r.n_top, n);
    ck_assert_msg(fabs(r.logprob - ref[t]) < 1e-4, "chosen %d: %g vs %g", t, (double)r.logprob,
                  ref[t]);
    for (int32_t j = 0; j < r.n_top; j++) {
        int32_t id = r.top[j].token;
        ck_assert_msg(fabs(r.top[j].logprob - ref[id]) < 1e-4, "token %d: %g vs %g", id,
                      (double)r.top[j].logprob, ref[id]);
    }
}

START_TEST(presence_frequency_penalties)
{
    enum { N = 8 };
    const double base[N] = {1.0, 2.0, 0.5, 1.5, -0.5, 1.2, 0.0, -1.0};
    const int32_t prompt[] = {3, 3, 3, 4};
    const int32_t gen[] = {1, 1, 1, 2, 5, 1};
    const float pres[] = {0.5f, -1.5f, 2.0f}, freq[] = {0.3f, 0.4f, -0.7f};
    float *l = logits_from(base, N);
    for (int c = 0; c < 3; c++) {
        sampler_params p = seeded(600 + (uint64_t)c);
        p.presence_penalty = pres[c];
        p.frequency_penalty = freq[c];
        p.logprobs = true;
        p.top_logprobs = N;
        sampler *s = make(N, &p);
        ck_assert_int_eq(sampler_accept_prompt(s, prompt, 4), 0);
        int count[N] = {0};
        for (size_t i = 0; i < sizeof gen / sizeof *gen; i++) {
            sampler_accept(s, gen[i]);
            count[gen[i]]++;
        }
        double expected[N], probs[N];
        for (int32_t i = 0; i < N; i++)
            expected[i] = base[i] - pres[c] * (count[i] > 0) - freq[c] * count[i];
        assert_logprobs(s, l, expected, N);
        long counts[N];
        count_draws(s, l, N, 50000, counts);
        reference(expected, N, 1.0, 0, 1.0, 0.0, probs);
        assert_follows(counts, probs, N, 50000, "presence/frequency");
        sampler_destroy(&s);
    }
    free(l);
}
END_TEST

START_TEST(repetition_penalty_window)
{
    enum { N = 10 };
    const double base[N] = {1.0, 0.2, -0.3, 2.0, 0.1, 0.0, -1.0, 0.5, 1.1, -2.0};
    float *l = logits_from(base, N);
    /* window of 4: prompt 0 3 3 6, then 7 and 2 generated -> {3, 6, 7, 2}; 0 has left */
    const int32_t prompt[] = {0, 3, 3, 6};
    sampler_params p = seeded(700);
    p.repetition_penalty = 1.5f;
    p.repetition_last_n = 4;
    p.top_logprobs = N;
    sampler *s = make(N, &p);
    ck_assert_int_eq(sampler_accept_prompt(s, prompt, 4), 0);
    sampler_accept(s, 7);
    sampler_accept(s, 2);
    double expected[N];
    memcpy(expected, base, sizeof expected);
    const int32_t window[] = {3, 6, 7, 2};
    for (int i = 0; i < 4; i++) {
        int32_t t = window[i];
        expected[t] = base[t] > 0 ? base[t] / 1.5 : base[t] * 1.5;
    }
    assert_logprobs(s, l, expected, N);
    long counts[N];
    double probs[N];
    count_draws(s, l, N, 50000, counts);
    reference(expected, N, 1.0, 0, 1.0, 0.0, probs);
    assert_follows(counts, probs, N, 50000, "repetition penalty");
    sampler_destroy(&s);

    /* a long prompt: only its last repetition_last_n ids count; penalty < 1 boosts */
    const int32_t long_prompt[] = {9, 8, 8, 1, 0, 4, 4, 5, 5};
    p.repetition_penalty = 0.8f;
    p.repetition_last_n = 3;
    s = make(N, &p);
    ck_assert_int_eq(sampler_accept_prompt(s, long_prompt, 9), 0);
    memcpy(expected, base, sizeof expected);
    expected[4] = base[4] / 0.8;
    expected[5] = base[5] / 0.8; /* 0 stays 0 */
    assert_logprobs(s, l, expected, N);
    const int32_t bad[] = {1, N};
    ck_assert_int_eq(sampler_accept_prompt(s, bad, 2), -EINVAL);
    assert_logprobs(s, l, expected, N); /* nothing of the refused call was recorded */
    sampler_destroy(&s);
    free(l);
}
END_TEST

START_TEST(logit_bias_forces_and_bans)
{
    enum { N = 10 };
    float *l = random_logits(N, 3.0);
    int32_t argmax = 0;
    for (int32_t i = 1; i < N; i++)
        if (l[i] > l[argmax]) argmax = i;
    int32_t weakest = argmax == 0 ? 1 : 0;
    for (int32_t i = 0; i < N; i++)
        if (i != argmax && l[i] < l[weakest]) weakest = i;

    /* +100 forces, at the highest temperature */
    sampler_bias force = {weakest, 100.0f};
    sampler_params p = seeded(800);
    p.temperature = 2.0f;
    p.logit_bias = &force;
    p.n_logit_bias = 1;
    p.top_logprobs = 1;
    sampler *s = make(N, &p);
    for (int i = 0; i < 5000; i++)
        ck_assert_int_eq(sampler_sample(s, l, NULL), weakest);
    sampler_result r;
    ck_assert_int_eq(sampler_sample(s, l, &r), weakest);
    ck_assert(r.logprob > -1e-6f && r.logprob <= 0.0f);
    ck_assert_int_eq(r.top[0].token, weakest);
    sampler_destroy(&s);

    /* -100 bans: never drawn, greedy takes the runner-up */
    sampler_bias ban = {argmax, -100.0f};
    p.logit_bias = &ban;
    p.temperature = 1.0f;
    p.top_logprobs = N;
    s = make(N, &p);
    long counts[N];
    count_draws(s, l, N, 20000, counts);
    ck_assert_int_eq(counts[argmax], 0);
    int32_t runner_up = argmax == 0 ? 1 : 0;
    for (int32_t i = 0; i < N; i++)
        if (i != argmax && l[i] > l[runner_up]) runner_up = i;
    ck_assert_int_ge(sampler_sample(s, l, &r), 0);
    ck_assert_int_eq(r.top[0].token, runner_up);
    ck_assert_int_eq(r.n_top, N - 1); /* the banned token is not listed */
    for (int j = 0; j < r.n_top; j++)
        ck_assert_int_ne(r.top[j].token, argmax);
    sampler_destroy(&s);
    p.temperature = 0.0f;
    s = make(N, &p);
    ck_assert_int_eq(sampler_sample(s, l, NULL), runner_up);
    sampler_destroy(&s);

    /* all banned: -1, for greedy and random draws, with and without a result */
    sampler_bias all[N];
    for (int32_t i = 0; i < N; i++)
        all[i] = (sampler_bias){i, -100.0f};
    p.logit_bias = all;
    p.n_logit_bias = N;
    for (int greedy = 0; greedy < 2; greedy++) {
        p.temperature = greedy ? 0.0f : 1.0f;
        s = make(N, &p);
        ck_assert_int_eq(sampler_sample(s, l, NULL), -1);
        ck_assert_int_eq(sampler_sample(s, l, &r), -1);
        ck_assert(r.logprob == -INFINITY);
        ck_assert_int_eq(r.n_top, 0);
        sampler_destroy(&s);
    }

    /* moderate biases shift the distribution; a repeated token takes its last entry */
    sampler_bias mixed[] = {{2, -100.0f}, {4, 1.5f}, {2, 3.0f}, {7, -2.25f}};
    p.logit_bias = mixed;
    p.n_logit_bias = 4;
    p.temperature = 1.0f;
    s = make(N, &p);
    double expected[N], probs[N];
    to_double(l, N, expected);
    expected[2] += 3.0;
    expected[4] += 1.5;
    expected[7] -= 2.25;
    assert_logprobs(s, l, expected, N);
    count_draws(s, l, N, 50000, counts);
    reference(expected, N, 1.0, 0, 1.0, 0.0, probs);
    assert_follows(counts, probs, N, 50000, "logit_bias");
    sampler_destroy(&s);
    free(l);
}
END_TEST

START_TEST(logprobs_are_log_softmax)
{
    enum { N = 1000 };
    float *l = random_logits(N, 4.0);
    l[500] = l[501] = 10.0f; /* a tie at the top: 500 first */
    l[17] = l[900] = 9.5f;
    float *copy = malloc(N * sizeof *copy);
    ck_assert_ptr_nonnull(copy);
    memcpy(copy, l, N * sizeof *copy);
    double adj[N], ref[N];
    to_double(l, N, adj);
    log_softmax(adj, N, ref);
    /* the independent top 20: sort everything */
    ref_item *all = malloc(N * sizeof *all);
    ck_assert_ptr_nonnull(all);
    for (int32_t i = 0; i < N; i++)
        all[i] = (ref_item){i, adj[i]};
    qsort(all, N, sizeof *all, ref_cmp);

    const float temps[] = {0.0f, 0.5f, 1.5f};
    const float tops[] = {1.0f, 0.9f, 0.5f};
    for (int t = 0; t < 3; t++) {
        sampler_params p = seeded(900 + (uint64_t)t);
        p.temperature = temps[t];
        p.top_p = tops[t];
        p.top_k = t == 2 ? 5 : 0;
        p.logprobs = true;
        p.top_logprobs = SAMPLER_MAX_TOP_LOGPROBS;
        sampler *s = make(N, &p);
        for (int d = 0; d < 200; d++) {
            sampler_result r;
            int32_t tok = sampler_sample(s, l, &r);
            ck_assert_msg(fabs(r.logprob - ref[tok]) < 1e-4, "token %d: %g vs %g", tok,
                          (double)r.logprob, ref[tok]);
            ck_assert_int_eq(r.n_top, SAMPLER_MAX_TOP_LOGPROBS);
            for (int j = 0; j < r.n_top; j++) {
                ck_assert_int_eq(r.top[j].token, all[j].id);
                ck_assert(fabs(r.top[j].logprob - ref[all[j].id]) < 1e-4);
                if (j > 0) ck_assert(r.top[j].logprob <= r.top[j - 1].logprob);
            }
        }
        sampler_destroy(&s);
    }
    ck_assert(memcmp(copy, l, N * sizeof *copy) == 0); /* the caller's row is untouched */

    /* fewer entries asked for, or none */
    sampler_params p = seeded(950);
    p.top_logprobs = 3;
    sampler *s = make(N, &p);
    sampler_result r;
    sampler_sample(s, l, &r);
    ck_assert_int_eq(r.n_top, 3);
    ck_assert_int_eq(r.top[0].token, 500);
    ck_assert_int_eq(r.top[1].token, 501);
    ck_assert_int_eq(r.top[2].token, 17);
    sampler_destroy(&s);
    p.top_logprobs = 0;
    s = make(N, &p);
    int32_t tok = sampler_sample(s, l, &r);
    ck_assert_int_eq(r.n_top, 0);
    ck_assert(fabs(r.logprob - ref[tok]) < 1e-4);
    sampler_destroy(&s);
    free(all);
    free(copy);
    free(l);
}
END_TEST

static void run_sequence(uint64_t seed, bool has_seed, int32_t n, const float *l, int32_t *out,
                         int len, uint64_t *seed_used)
{
    sampler_params p = sampler_params_default();
    p.seed = seed;
    p.has_seed = has_seed;
    p.temperature = 1.2f;
    p.top_p = 0.95f;
    p.presence_penalty = 0.4f;
    p.frequency_penalty = 0.2f;
    p.repetition_penalty = 1.1f;
    sampler *s = make(n, &p);
    const int32_t prompt[] = {1, 2, 3};
    ck_assert_int_eq(sampler_accept_prompt(s, prompt, 3), 0);
    for (int i = 0; i < len; i++) {
        out[i] = sampler_sample(s, l, NULL);
        sampler_accept(s, out[i]);
    }
    if (seed_used) *seed_used = sampler_seed(s);
    sampler_destroy(&s);
}

START_TEST(seed_reproduces)
{
    enum { N = 300, LEN = 300 };
    float *l = random_logits(N, 1.0);
    int32_t a[LEN], b[LEN], c[LEN], d[LEN], e[LEN];
    run_sequence(42, true, N, l, a, LEN, NULL);
    run_sequence(42, true, N, l, b, LEN, NULL);
    ck_assert(memcmp(a, b, sizeof a) == 0);
    run_sequence(43, true, N, l, c, LEN, NULL);
    int differ = 0;
    for (int i = 0; i < LEN; i++)
        differ += a[i] != c[i];
    ck_assert_int_gt(differ, LEN / 2);
    /* no seed: a random one, and replaying it gives the same tokens */
    uint64_t s1, s2;
    run_sequence(0, false, N, l, d, LEN, &s1);
    run_sequence(0, false, N, l, e, LEN, &s2);
    ck_assert(s1 != s2);
    run_sequence(s1, true, N, l, c, LEN, NULL);
    ck_assert(memcmp(c, d, sizeof c) == 0);
    sampler_params p = seeded(12345);
    sampler *s = make(N, &p);
    ck_assert_uint_eq(sampler_seed(s), 12345);
    ck_assert_int_eq(sampler_n_vocab(s), N);
    sampler_destroy(&s);
    sampler_destroy(&s); /* NULL is fine */
    sampler_destroy(NULL);
    free(l);
}
END_TEST

START_TEST(validation_messages)
{
    enum { N = 100 };
    sampler_bias bad_token = {N, 1.0f}, bad_bias = {5, 101.0f}, neg_token = {-1, 1.0f};
    struct {
        const char *name;
        sampler_params p;
        int32_t n_vocab;
        const char *want[3];
    } cases[] = {
        {"temperature", {.temperature = 2.5f}, N, {"temperature", "2.5", "[0, 2]"}},
        {"temperature<0", {.temperature = -0.1f}, N, {"temperature", "-0.1", "[0, 2]"}},
        {"temperature nan", {.temperature = NAN}, N, {"temperature", "nan", "[0, 2]"}},
        {"top_p 0", {.top_p = 0.0f}, N, {"top_p", "= 0", "(0, 1]"}},
        {"top_p 1.5", {.top_p = 1.5f}, N, {"top_p", "1.5", "(0, 1]"}},
        {"min_p", {.min_p = 1.25f}, N, {"min_p", "1.25", "[0, 1]"}},
        {"presence", {.presence_penalty = -3.0f}, N, {"presence_penalty", "-3", "[-2, 2]"}},
        {"frequency", {.frequency_penalty = 2.5f}, N, {"frequency_penalty", "2.5", "[-2, 2]"}},
        {"repetition", {.repetition_penalty = 0.0f}, N, {"repetition_penalty", "= 0", "(0, inf)"}},
        {"repetition inf",
         {.repetition_penalty = INFINITY},
         N,
         {"repetition_penalty", "inf", "(0, inf)"}},
        {"top_k<0", {.top_k = -1}, N, {"top_k", "-1", "[0, 2147483647]"}},
        {"last_n", {.repetition_last_n = 5000}, N, {"repetition_last_n", "5000", "[0, 4096]"}},
        {"last_n<0", {.repetition_last_n = -1}, N, {"repetition_last_n", "-1", "[0, 4096]"}},
        {"top_logprobs", {.top_logprobs = 21}, N, {"top_logprobs", "21", "[0, 20]"}},
        {"bias token",
         {.logit_bias = &bad_token, .n_logit_bias = 1},
         N,
         {"logit_bias", "token 100", "[0, 99]"}},
        {"bias token<0",
         {.logit_bias = &neg_token, .n_logit_bias = 1},
         N,
         {"logit_bias", "token -1", "[0, 99]"}},
        {"bias value",
         {.logit_bias = &bad_bias, .n_logit_bias = 1},
         N,
         {"logit_bias", "101", "[-100, 100]"}},
        {"bias null", {.n_logit_bias = 2}, N, {"logit_bias", "NULL", "2"}},
        {"n_vocab", {.temperature = 1.0f}, 0, {"n_vocab", "= 0", "[1, "}},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        /* start from valid defaults and break the one field the case names */
        sampler_params p = sampler_params_default();
        const sampler_params *c = &cases[i].p;
        if (c->temperature != 0.0f || isnan(c->temperature)) p.temperature = c->temperature;
        if (strcmp(cases[i].name, "top_p 0") == 0 || c->top_p != 0.0f) p.top_p = c->top_p;
        if (c->min_p != 0.0f) p.min_p = c->min_p;
        if (c->presence_penalty != 0.0f) p.presence_penalty = c->presence_penalty;
        if (c->frequency_penalty != 0.0f) p.frequency_penalty = c->frequency_penalty;
        if (strncmp(cases[i].name, "repetition", 10) == 0)
            p.repetition_penalty = c->repetition_penalty;
        if (c->top_k != 0) p.top_k = c->top_k;
        if (c->repetition_last_n != 0) p.repetition_last_n = c->repetition_last_n;
        if (c->top_logprobs != 0) p.top_logprobs = c->top_logprobs;
        p.logit_bias = c->logit_bias;
        p.n_logit_bias = c->n_logit_bias;
        char err[256] = "";
        sampler *s = (sampler *)&p; /* must be reset to NULL */
        int rc = sampler_create(&s, cases[i].n_vocab, &p, err, sizeof err);
        ck_assert_msg(rc == -EINVAL, "%s: rc %d", cases[i].name, rc);
        ck_assert_ptr_null(s);
        for (int w = 0; w < 3; w++)
            ck_assert_msg(strstr(err, cases[i].want[w]), "%s: \"%s\" lacks \"%s\"", cases[i].name,
                          err, cases[i].want[w]);
    }
    /* the edges of every range are accepted */
    sampler_params p = sampler_params_default();
    p.temperature = 2.0f;
    p.top_p = 1e-6f;
    p.min_p = 1.0f;
    p.presence_penalty = -2.0f;
    p.frequency_penalty = 2.0f;
    p.top_k = N;
    p.repetition_last_n = SAMPLER_MAX_REPETITION_LAST_N;
    p.top_logprobs = SAMPLER_MAX_TOP_LOGPROBS;
    sampler_bias edges[] = {{0, -100.0f}, {N - 1, 100.0f}};
    p.logit_bias = edges;
    p.n_logit_bias = 2;
    sampler *s = make(N, &p);
    sampler_destroy(&s);
}
END_TEST

START_TEST(vocab_150k)
{
    enum { N = 151936 }; /* Qwen2's vocabulary */
    float *l = random_logits(N, 6.0);
    l[123] = NAN; /* a broken logit is never drawn */
    int32_t argmax = 0;
    for (int32_t i = 1; i < N; i++)
        if (l[i] > l[argmax]) argmax = i;
    double *adj = malloc(N * sizeof *adj), *probs = malloc(N * sizeof *probs);
    long *counts = calloc(N, sizeof *counts);
    ck_assert(adj && probs && counts);
    to_double(l, N, adj);
    adj[123] = -INFINITY;

    sampler_params p = seeded(1500);
    p.temperature = 0.0f;
    sampler *s = make(N, &p);
    ck_assert_int_eq(sampler_sample(s, l, NULL), argmax);
    sampler_destroy(&s);

    struct {
        int32_t top_k;
        float top_p, min_p, temperature;
    } cfg[] = {
        {40, 1.0f, 0.0f, 1.0f},  {0, 0.2f, 0.0f, 0.5f}, {0, 1.0f, 0.01f, 1.0f},
        {50, 0.9f, 0.05f, 0.8f}, {0, 1.0f, 0.0f, 1.0f},
    };
    for (size_t c = 0; c < sizeof cfg / sizeof *cfg; c++) {
        p = seeded(1600 + c);
        p.top_k = cfg[c].top_k;
        p.top_p = cfg[c].top_p;
        p.min_p = cfg[c].min_p;
        p.temperature = cfg[c].temperature;
        p.top_logprobs = 5;
        s = make(N, &p);
        reference(adj, N, cfg[c].temperature, cfg[c].top_k, cfg[c].top_p, cfg[c].min_p, probs);
        for (int d = 0; d < 60; d++) {
            sampler_result r;
            int32_t t = sampler_sample(s, l, &r);
            ck_assert_int_ge(t, 0);
            ck_assert_int_lt(t, N);
            ck_assert_int_ne(t, 123);
            ck_assert_msg(probs[t] > 0.0, "config %zu drew removed token %d", c, t);
            ck_assert_int_eq(r.top[0].token, argmax);
            sampler_accept(s, t);
        }
        sampler_destroy(&s);
    }
    free(counts);
    free(probs);
    free(adj);
    free(l);
}
END_TEST

/* NaN is never drawn; +inf, given or reached by a penalty, counts as FLT_MAX: no NaN leaks
 * into the draw or the log-probabilities. */
START_TEST(non_finite_logits)
{
    const double values[5] = {1.0, INFINITY, NAN, 3e38, -INFINITY};
    float *l = logits_from(values, 5);
    sampler_params p = seeded(1800);
    p.top_logprobs = 5;
    sampler *s = make(5, &p);
    for (int i = 0; i < 1000; i++) {
        sampler_result r;
        ck_assert_int_eq(sampler_sample(s, l, &r), 1);
        ck_assert(r.logprob == 0.0f);
        ck_assert_int_eq(r.n_top, 3); /* NaN and -inf are not listed */
        for (int j = 0; j < r.n_top; j++)
            ck_assert(!isnan(r.top[j].logprob));
    }
    sampler_destroy(&s);
    /* a repetition penalty below 1 lifts 3e38 past FLT_MAX: a tie with token 1 */
    const int32_t prompt[] = {3};
    p.repetition_penalty = 0.5f;
    s = make(5, &p);
    ck_assert_int_eq(sampler_accept_prompt(s, prompt, 1), 0);
    long counts[5];
    count_draws(s, l, 5, 20000, counts);
    const double half[5] = {0.0, 0.5, 0.0, 0.5, 0.0};
    assert_follows(counts, half, 5, 20000, "tie at FLT_MAX");
    sampler_destroy(&s);
    p.temperature = 0.0f;
    s = make(5, &p);
    ck_assert_int_eq(sampler_accept_prompt(s, prompt, 1), 0);
    ck_assert_int_eq(sampler_sample(s, l, NULL), 1);
    sampler_destroy(&s);
    free(l);
}
END_TEST

/* Every knob on: after create, sampling and accepting take no memory from the heap.  The
 * test is linked with --wrap for malloc, calloc and realloc (tests/meson.build), so every
 * allocation made by the sampler library, or anything in this executable, is counted here. */
void *__real_malloc(size_t size);
void *__real_calloc(size_t n, size_t size);
void *__real_realloc(void *p, size_t size);
void *__wrap_malloc(size_t size);
void *__wrap_calloc(size_t n, size_t size);
void *__wrap_realloc(void *p, size_t size);

static unsigned long n_allocations;

void *__wrap_malloc(size_t size)
{
    n_allocations++;
    return __real_malloc(size);
}

void *__wrap_calloc(size_t n, size_t size)
{
    n_allocations++;
    return __real_calloc(n, size);
}

void *__wrap_realloc(void *p, size_t size)
{
    n_allocations++;
    return __real_realloc(p, size);
}

START_TEST(no_allocation_per_token)
{
    enum { N = 5000 };
    float *l = random_logits(N, 3.0);
    sampler_bias bias[] = {{3, 2.0f}, {4, -100.0f}};
    sampler_params p = seeded(1700);
    p.top_k = 100;
    p.top_p = 0.9f;
    p.min_p = 0.01f;
    p.repetition_penalty = 1.2f;
    p.presence_penalty = 0.5f;
    p.frequency_penalty = 0.5f;
    p.top_logprobs = SAMPLER_MAX_TOP_LOGPROBS;
    p.logit_bias = bias;
    p.n_logit_bias = 2;
    sampler *s = make(N, &p);
    sampler_result r;
    unsigned long at_create = n_allocations;
    for (int i = 0; i < 300; i++)
        sampler_accept(s, sampler_sample(s, l, &r));
    ck_assert_uint_eq(n_allocations, at_create);
    sampler_destroy(&s);
    s = make(N, &p); /* the counter does count: create allocates */
    ck_assert_uint_gt(n_allocations, at_create);
    sampler_destroy(&s);
    free(l);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("sampler");
    TCase *tc = tcase_create("sampler");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, greedy_is_argmax_lowest_index);
    tcase_add_test(tc, temperature_follows_softmax);
    tcase_add_test(tc, top_k_keeps_exactly_k);
    tcase_add_test(tc, top_p_smallest_prefix);
    tcase_add_test(tc, min_p_relative_threshold);
    tcase_add_test(tc, chain_order);
    tcase_add_test(tc, presence_frequency_penalties);
    tcase_add_test(tc, repetition_penalty_window);
    tcase_add_test(tc, logit_bias_forces_and_bans);
    tcase_add_test(tc, logprobs_are_log_softmax);
    tcase_add_test(tc, seed_reproduces);
    tcase_add_test(tc, validation_messages);
    tcase_add_test(tc, vocab_150k);
    tcase_add_test(tc, non_finite_logits);
    tcase_add_test(tc, no_allocation_per_token);
    suite_add_tcase(s, tc);
    SRunner *r = srunner_create(s);
    srunner_run_all(r, CK_NORMAL);
    int failed = srunner_ntests_failed(r);
    srunner_free(r);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
