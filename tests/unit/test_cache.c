/*
 * The expert cache: bytes equal to the file at every budget, with and without O_DIRECT, in
 * waves when a request outgrows the arena; LRU and LFU against a naive reference; traces that
 * replay to the same counters; clear errors for a missing file, a truncated file and an
 * injected read error; and a model whose logits are bit-identical to the mapped path at every
 * budget down to the minimum.
 */
#include "cache/cache.h"
#include "cache/cache_internal.h"
#include "model/cpu_lane.h"
#include "model/model.h"
#include "test_models.h"
#include "test_util.h"

#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

enum { N_LAYER = 3, N_EXPERT = 6, N_KEYS = N_LAYER * N_EXPERT };

typedef struct synth_file {
    char path[600];
    uint8_t *bytes;
    size_t size;
    cache_extent ext[N_KEYS * CACHE_PARTS];
} synth_file;

/* Random bytes with unaligned extents of random sizes, laid out in a random order with gaps
 * wide enough that no two extents share an aligned window (so that a fault injected into one
 * extent's reads hits no other); the last extent ends at the end of the file, so its aligned
 * window reaches past it. */
static void synth_create(synth_file *f, const char *name)
{
    enum { N = N_KEYS * CACHE_PARTS };
    int order[N];
    for (int i = 0; i < N; i++)
        order[i] = i;
    for (int i = N - 1; i > 0; i--) {
        int j = (int)(rng_next() % (uint64_t)(i + 1)), t = order[i];
        order[i] = order[j];
        order[j] = t;
    }
    uint64_t at = 0;
    for (int i = 0; i < N; i++) {
        uint64_t gap = 8192 + rng_next() % 5000, len = 1 + rng_next() % 70000;
        f->ext[order[i]] = (cache_extent){at + gap, len};
        at += gap + len;
    }
    f->size = at;
    snprintf(f->path, sizeof f->path, "%s/%s", test_env_or("MOE_BUILD_ROOT", "."), name);
    f->bytes = malloc(f->size);
    ck_assert_ptr_nonnull(f->bytes);
    for (size_t i = 0; i < f->size; i++)
        f->bytes[i] = (uint8_t)(rng_next() >> 24);
    FILE *out = fopen(f->path, "wb");
    ck_assert_ptr_nonnull(out);
    ck_assert_uint_eq(fwrite(f->bytes, 1, f->size, out), f->size);
    ck_assert_int_eq(fclose(out), 0);
}

static void synth_free(synth_file *f)
{
    unlink(f->path);
    free(f->bytes);
}

static cache *open_synth(const synth_file *f, uint32_t n_slots, cache_direct direct,
                         uint32_t min_slots)
{
    char err[512];
    cache_opts o = cache_opts_default();
    o.path = f->path;
    o.n_layer = N_LAYER;
    o.n_expert = N_EXPERT;
    o.extents = f->ext;
    o.direct = direct;
    o.queue_depth = 4;
    o.chunk_bytes = 16384; /* several chunks per part */
    o.min_slots = min_slots;
    o.budget_bytes = n_slots ? n_slots * cache_slot_bytes(f->ext, N_KEYS) : 0;
    cache *c = NULL;
    ck_assert_msg(cache_open(&c, &o, err, sizeof err) == 0, "%s", err);
    return c;
}

/* Random requests; every handed-out expert is one that was asked for, once, with the file's
 * bytes in each part. */
static void exercise(cache *c, const synth_file *f, int rounds, int max_request)
{
    char err[512];
    for (int r = 0; r < rounds; r++) {
        int32_t layer = (int32_t)(rng_next() % N_LAYER), ids[N_EXPERT], n = 0;
        bool asked[N_EXPERT] = {0}, given[N_EXPERT] = {0};
        int want = 1 + (int)(rng_next() % (uint64_t)max_request);
        while (n < want) {
            int32_t e = (int32_t)(rng_next() % N_EXPERT);
            if (asked[e]) continue;
            asked[e] = true;
            ids[n++] = e;
        }
        ck_assert_msg(cache_request(c, layer, ids, n, err, sizeof err) == 0, "%s", err);
        cache_ref ref;
        int got = 0, rc;
        while ((rc = cache_next(c, &ref, err, sizeof err)) == 0) {
            ck_assert_int_eq(ref.layer, layer);
            ck_assert(asked[ref.expert] && !given[ref.expert]);
            given[ref.expert] = true;
            for (int p = 0; p < CACHE_PARTS; p++) {
                const cache_extent *e = &f->ext[(layer * N_EXPERT + ref.expert) * CACHE_PARTS + p];
                ck_assert_msg(memcmp(ref.part[p], f->bytes + e->offset, e->bytes) == 0,
                              "layer %d expert %d part %d differs from the file", layer, ref.expert,
                              p);
            }
            got++;
            cache_release(c, &ref);
        }
        ck_assert_msg(rc == 1, "cache_next: %s", err);
        ck_assert_int_eq(got, n);
    }
}

START_TEST(reads_equal_the_file_at_every_budget)
{
    synth_file f;
    synth_create(&f, "cache-synth.bin");
    const uint32_t budgets[] = {0, N_KEYS / 2, 4, 2};
    const cache_direct directs[] = {CACHE_DIRECT_AUTO, CACHE_DIRECT_OFF};
    for (int d = 0; d < 2; d++) {
        for (int b = 0; b < 4; b++) {
            cache *c = open_synth(&f, budgets[b], directs[d], 2);
            cache_stats st;
            cache_get_stats(c, &st);
            ck_assert_int_eq(st.all_resident, budgets[b] == 0);
            ck_assert_int_eq(st.direct, directs[d] == CACHE_DIRECT_AUTO); /* ext4 allows it */
            /* Requests of up to N_EXPERT experts against 2 slots: read in waves. */
            exercise(c, &f, 60, N_EXPERT);
            cache_get_stats(c, &st);
            ck_assert_uint_eq(st.read_errors, 0);
            if (budgets[b] == 0) {
                ck_assert_uint_eq(st.misses, 0);
                ck_assert_uint_eq(st.evictions, 0);
                ck_assert_uint_eq(st.resident, N_KEYS);
            } else {
                ck_assert_uint_gt(st.misses, 0);
                ck_assert_uint_gt(st.evictions, 0);
                ck_assert_uint_le(st.resident, budgets[b]);
            }
            cache_close(&c);
        }
    }
    synth_free(&f);
}
END_TEST

/* A naive reference: keys with their last use and use count, the victim by a full scan. */
typedef struct ref_entry {
    int32_t key;
    uint64_t last, uses;
} ref_entry;

/* Requests per key since the start, for the history policy (keys < N_KEYS). */
static uint64_t ref_history[N_KEYS];

static void reference_run(const int32_t *keys, int n, uint32_t n_slots, cache_policy policy,
                          uint64_t *hits, uint64_t *evictions)
{
    ref_entry *slots = calloc(n_slots, sizeof *slots);
    uint32_t used = 0;
    *hits = *evictions = 0;
    memset(ref_history, 0, sizeof ref_history);
    for (int i = 0; i < n; i++) {
        ref_history[keys[i]]++;
        uint32_t j = 0;
        while (j < used && slots[j].key != keys[i])
            j++;
        if (j < used) {
            (*hits)++;
            slots[j].last = (uint64_t)i + 1;
            slots[j].uses++;
            continue;
        }
        if (used < n_slots) {
            j = used++;
        } else {
            j = 0;
            for (uint32_t k = 1; k < used; k++) {
                uint64_t hk = ref_history[slots[k].key], hj = ref_history[slots[j].key];
                bool less = policy == CACHE_POLICY_LFU ? slots[k].uses < slots[j].uses ||
                                                             (slots[k].uses == slots[j].uses &&
                                                              slots[k].last < slots[j].last)
                            : policy == CACHE_POLICY_LFU_HISTORY
                                ? hk < hj || (hk == hj && slots[k].last > slots[j].last)
                                : slots[k].last < slots[j].last;
                if (less) j = k;
            }
            (*evictions)++;
        }
        slots[j] = (ref_entry){keys[i], (uint64_t)i + 1, 1};
    }
    free(slots);
}

START_TEST(policies_match_a_reference_and_traces_replay)
{
    char err[512];
    enum { STEPS = 3000 };
    int32_t *keys = malloc(STEPS * sizeof *keys);
    /* Skewed popularity so that LRU and LFU differ. */
    for (int i = 0; i < STEPS; i++) {
        uint64_t r = rng_next() % 100;
        keys[i] = (int32_t)(r < 60 ? r % 4 : r % N_KEYS);
    }
    cache_extent ext[N_KEYS * CACHE_PARTS];
    for (int i = 0; i < N_KEYS * CACHE_PARTS; i++)
        ext[i] = (cache_extent){(uint64_t)i * 8192, 100};
    for (int pol = 0; pol < CACHE_POLICY_COUNT; pol++) {
        for (uint32_t n_slots = 2; n_slots <= 10; n_slots += 4) {
            char trace_path[600];
            snprintf(trace_path, sizeof trace_path, "%s/cache-trace-%d-%u.txt",
                     test_env_or("MOE_BUILD_ROOT", "."), pol, n_slots);
            FILE *trace = fopen(trace_path, "w+");
            ck_assert_ptr_nonnull(trace);
            cache_opts o = cache_opts_default();
            o.n_layer = N_LAYER;
            o.n_expert = N_EXPERT;
            o.extents = ext;
            o.simulate = true;
            o.policy = (cache_policy)pol;
            o.trace = trace;
            o.budget_bytes = n_slots * cache_slot_bytes(ext, N_KEYS);
            cache *c = NULL;
            ck_assert_msg(cache_open(&c, &o, err, sizeof err) == 0, "%s", err);
            for (int i = 0; i < STEPS; i++) {
                int32_t e = keys[i] % N_EXPERT;
                ck_assert(cache_request(c, keys[i] / N_EXPERT, &e, 1, err, sizeof err) == 0);
                cache_ref ref;
                ck_assert_int_eq(cache_next(c, &ref, err, sizeof err), 0);
                ck_assert_int_eq(ref.expert, e);
                cache_release(c, &ref);
                ck_assert_int_eq(cache_next(c, &ref, err, sizeof err), 1);
            }
            cache_stats st, replayed;
            cache_get_stats(c, &st);
            cache_close(&c);
            uint64_t hits, evictions;
            reference_run(keys, STEPS, n_slots, (cache_policy)pol, &hits, &evictions);
            ck_assert_msg(st.hits == hits && st.evictions == evictions,
                          "%s with %u slots: %llu hits / %llu evictions, reference %llu / %llu",
                          cache_policy_name((cache_policy)pol), n_slots,
                          (unsigned long long)st.hits, (unsigned long long)st.evictions,
                          (unsigned long long)hits, (unsigned long long)evictions);
            ck_assert_uint_eq(st.hits + st.misses, STEPS);
            rewind(trace);
            ck_assert_msg(cache_trace_replay(trace, (cache_policy)pol, n_slots, 0.0f, &replayed,
                                             err, sizeof err) == 0,
                          "%s", err);
            ck_assert_uint_eq(replayed.hits, st.hits);
            ck_assert_uint_eq(replayed.misses, st.misses);
            ck_assert_uint_eq(replayed.evictions, st.evictions);
            fclose(trace);
            unlink(trace_path);
        }
    }
    /* LFU keeps the popular experts better than LRU on this skew (a sanity check that the
     * policies differ at all). */
    uint64_t lru_hits, lfu_hits, ev;
    reference_run(keys, STEPS, 4, CACHE_POLICY_LRU, &lru_hits, &ev);
    reference_run(keys, STEPS, 4, CACHE_POLICY_LFU, &lfu_hits, &ev);
    ck_assert_uint_ne(lru_hits, lfu_hits);
    free(keys);

    FILE *bad = tmpfile();
    fputs("moeserve-trace 1 2 4\n0 1 2\n1 7\n", bad);
    rewind(bad);
    cache_stats st;
    ck_assert_int_eq(cache_trace_replay(bad, CACHE_POLICY_LRU, 2, 0.0f, &st, err, sizeof err),
                     -EINVAL);
    ck_assert_msg(strstr(err, "line 3") != NULL, "%s", err);
    fclose(bad);
    bad = tmpfile();
    fputs("moeserve-trace 1 2 4\np 1 2/0.5 3/1.5\n", bad); /* a probability above one */
    rewind(bad);
    ck_assert_int_eq(cache_trace_replay(bad, CACHE_POLICY_LRU, 2, 0.0f, &st, err, sizeof err),
                     -EINVAL);
    ck_assert_msg(strstr(err, "line 2") != NULL, "%s", err);
    fclose(bad);
}
END_TEST

static uint64_t fault_lo, fault_hi;
static int fault_at(void *user, uint64_t offset, uint32_t len)
{
    (void)user;
    return offset < fault_hi && offset + len > fault_lo ? -EIO : 0;
}

/* A layer of the (simulated) cache handed out and released at once. */
static void request_all(cache *c, int32_t layer, const int32_t *experts, int32_t n)
{
    char err[256];
    ck_assert_msg(cache_request(c, layer, experts, n, err, sizeof err) == 0, "%s", err);
    cache_ref ref;
    int rc;
    while ((rc = cache_next(c, &ref, err, sizeof err)) == 0)
        cache_release(c, &ref);
    ck_assert_msg(rc == 1, "%s", err);
}

/* Predictions read only the guesses likely enough, the ones the layer then does not ask for
 * are evicted first, lru-predict keeps what is expected where LRU evicts it, and a trace
 * replays the predictions as they happened. */
/* glm4moe's leading dense layers have no experts: their keys are empty, and "every expert",
 * a share of them and the start-up load count only the other layers'. */
START_TEST(layers_without_experts_take_no_slots)
{
    char err[512];
    enum { D_LAYER = 3, D_EXPERT = 8, D_KEYS = D_LAYER * D_EXPERT };
    cache_extent ext[D_KEYS * CACHE_PARTS];
    for (int i = 0; i < D_KEYS * CACHE_PARTS; i++)
        ext[i] = i < D_EXPERT * CACHE_PARTS ? (cache_extent){0, 0}
                                            : (cache_extent){(uint64_t)i * 8192, 100};
    const double fractions[] = {0.0, 0.25};
    const uint32_t want[] = {2 * D_EXPERT, D_EXPERT / 2};
    for (int i = 0; i < 2; i++) {
        cache_opts o = cache_opts_default();
        o.n_layer = D_LAYER;
        o.n_expert = D_EXPERT;
        o.first_layer = 1;
        o.extents = ext;
        o.simulate = true;
        o.budget_fraction = fractions[i];
        cache *c = NULL;
        ck_assert_msg(cache_open(&c, &o, err, sizeof err) == 0, "%s", err);
        cache_stats st;
        cache_get_stats(c, &st);
        ck_assert_uint_eq(st.n_slots, want[i]);
        ck_assert(st.all_resident == (i == 0));
        const int32_t used[] = {1, 6};
        request_all(c, 2, used, 2);
        ck_assert(cache_holds(c, 2, 1) && cache_holds(c, 2, 6) && !cache_holds(c, 0, 1));
        cache_close(&c);
    }
}
END_TEST

START_TEST(predictions_prefetch_by_probability_and_cancel)
{
    char err[512];
    enum { P_LAYER = 2, P_EXPERT = 8, P_KEYS = P_LAYER * P_EXPERT };
    cache_extent ext[P_KEYS * CACHE_PARTS];
    for (int i = 0; i < P_KEYS * CACHE_PARTS; i++)
        ext[i] = (cache_extent){(uint64_t)i * 8192, 100};
    const cache_policy policies[] = {CACHE_POLICY_LRU, CACHE_POLICY_LRU_PREDICT};
    for (int pi = 0; pi < 2; pi++) {
        FILE *trace = tmpfile();
        ck_assert_ptr_nonnull(trace);
        cache_opts o = cache_opts_default();
        o.n_layer = P_LAYER;
        o.n_expert = P_EXPERT;
        o.extents = ext;
        o.simulate = true;
        o.policy = policies[pi];
        o.trace = trace;
        o.budget_bytes = 4 * cache_slot_bytes(ext, P_KEYS);
        cache *c = NULL;
        ck_assert_msg(cache_open(&c, &o, err, sizeof err) == 0, "%s", err);
        const int32_t l0[] = {0, 1};
        request_all(c, 0, l0, 2);
        const int32_t guess[] = {2, 3, 4};
        const float prob[] = {0.9f, 0.6f, 0.2f};
        ck_assert_int_eq(cache_predict(c, 1, guess, prob, 3, 0.5f, err, sizeof err), 2);
        ck_assert(cache_holds(c, 1, 2) && cache_holds(c, 1, 3) && !cache_holds(c, 1, 4));
        const int32_t l1[] = {2};
        request_all(c, 1, l1, 1); /* 3 was prefetched and not wanted: cancelled */
        const int32_t five[] = {5};
        request_all(c, 0, five, 1);
        ck_assert_msg(!cache_holds(c, 1, 3), "the cancelled prefetch is evicted first");
        ck_assert(cache_holds(c, 0, 0) && cache_holds(c, 0, 1) && cache_holds(c, 1, 2));
        cache_stats st;
        cache_get_stats(c, &st);
        ck_assert_uint_eq(st.prefetch_issued, 2);
        ck_assert_uint_eq(st.prefetch_used, 1);
        ck_assert_uint_eq(st.prefetch_wasted, 1);
        /* Layer 0's expert 0 is the least recent; the predictor expects it (too unlikely to be
         * worth a read, but it is there): lru-predict keeps it, LRU does not. */
        const int32_t zero[] = {0};
        const float low[] = {0.3f};
        ck_assert_int_eq(cache_predict(c, 0, zero, low, 1, 0.5f, err, sizeof err), 0);
        const int32_t seven[] = {7};
        request_all(c, 1, seven, 1);
        if (policies[pi] == CACHE_POLICY_LRU_PREDICT)
            ck_assert(cache_holds(c, 0, 0) && !cache_holds(c, 0, 1));
        else
            ck_assert(!cache_holds(c, 0, 0) && cache_holds(c, 0, 1));
        cache_get_stats(c, &st);
        cache_close(&c);
        /* The trace holds the predictions: replayed at the same threshold it is the same run;
         * without them, nothing is prefetched. */
        cache_stats replayed;
        rewind(trace);
        ck_assert_msg(
            cache_trace_replay(trace, policies[pi], 4, 0.5f, &replayed, err, sizeof err) == 0, "%s",
            err);
        ck_assert_uint_eq(replayed.hits, st.hits);
        ck_assert_uint_eq(replayed.misses, st.misses);
        ck_assert_uint_eq(replayed.evictions, st.evictions);
        ck_assert_uint_eq(replayed.prefetch_issued, st.prefetch_issued);
        ck_assert_uint_eq(replayed.prefetch_used, st.prefetch_used);
        rewind(trace);
        ck_assert(cache_trace_replay(trace, policies[pi], 4, -1.0f, &replayed, err, sizeof err) ==
                  0);
        ck_assert_uint_eq(replayed.prefetch_issued, 0);
        ck_assert_uint_eq(replayed.hits + replayed.misses, st.hits + st.misses);
        fclose(trace);
    }
}
END_TEST

START_TEST(faults_give_clear_errors_and_the_cache_stays_usable)
{
    char err[512];
    synth_file f;
    synth_create(&f, "cache-fault.bin");
    cache_opts o = cache_opts_default();
    o.n_layer = N_LAYER;
    o.n_expert = N_EXPERT;
    o.extents = f.ext;
    o.min_slots = 2;

    /* A missing file. */
    cache *c = NULL;
    o.path = "/nonexistent/model.gguf";
    ck_assert_int_eq(cache_open(&c, &o, err, sizeof err), -ENOENT);
    ck_assert_msg(strstr(err, "/nonexistent/model.gguf") != NULL, "%s", err);

    /* A budget below the minimum names the minimum. */
    o.path = f.path;
    o.budget_bytes = 2 * cache_slot_bytes(f.ext, N_KEYS) - 1;
    ck_assert_int_eq(cache_open(&c, &o, err, sizeof err), -EINVAL);
    ck_assert_msg(strstr(err, "at least 2") != NULL, "%s", err);

    /* An injected read error fails that request, names the expert, and the next request (and
     * a retry of the same expert once the fault is gone) works. */
    o.budget_bytes = 3 * cache_slot_bytes(f.ext, N_KEYS);
    o.fault = fault_at;
    const cache_extent *bad = &f.ext[(1 * N_EXPERT + 2) * CACHE_PARTS + 1];
    fault_lo = bad->offset;
    fault_hi = bad->offset + bad->bytes;
    ck_assert_msg(cache_open(&c, &o, err, sizeof err) == 0, "%s", err);
    int32_t ids[2] = {2, 3};
    cache_ref ref;
    int rc = cache_request(c, 1, ids, 2, err, sizeof err);
    ck_assert_int_eq(rc, 0);
    while ((rc = cache_next(c, &ref, err, sizeof err)) == 0)
        cache_release(c, &ref);
    ck_assert_int_eq(rc, -EIO);
    ck_assert_msg(strstr(err, "expert 2 of layer 1") != NULL, "%s", err);
    fault_lo = fault_hi = 0;
    exercise(c, &f, 20, 3);
    cache_stats st;
    cache_get_stats(c, &st);
    ck_assert_uint_ge(st.read_errors, 1);
    cache_close(&c);

    /* A truncated file: the last extent's end is gone. */
    ck_assert_int_eq(truncate(f.path, (off_t)(f.size - 100)), 0);
    o.fault = NULL;
    o.budget_bytes = 0; /* all: the preload finds it */
    ck_assert_int_eq(cache_open(&c, &o, err, sizeof err), -EIO);
    ck_assert_msg(strstr(err, "truncated") != NULL, "%s", err);
    synth_free(&f);
}
END_TEST

/* ---- the model through the cache --------------------------------------------------------------
 */

enum { N_SEQ = 3, N_DECODE = 4 };

/* Prefill three prompts in one batch, then decode N_DECODE greedy tokens for all three in
 * lockstep; every step's logits are appended to out. */
static void run_model_pred(const char *path, const cache_opts *co, pred_kind kind, float *out,
                           size_t *n_out, cache_stats *st, pred_layer_stats *ps)
{
    char err[512];
    kern_backend *be = open_cpu_isa(2, KERN_ISA_COUNT);
    model *m = NULL;
    model_opts mo = {.backend = be, .expert_cache = co, .predictor = kind};
    if (kind == PRED_HYBRID) { /* two layers ahead, twice top-k wide, every guess read */
        mo.lookahead = 2;
        mo.width = 2 * 2;
        mo.min_prob = 1e-6f;
    }
    /* The cache at open, or after it (as `serve` does, to size the budget from the model). */
    if (co && kind == PRED_NONE) {
        mo.expert_cache = NULL;
        ck_assert_msg(model_open(&m, path, &mo, err, sizeof err) == 0, "%s", err);
        ck_assert_msg(model_open_expert_cache(m, co, NULL, err, sizeof err) == 0, "%s", err);
    } else {
        ck_assert_msg(model_open(&m, path, &mo, err, sizeof err) == 0, "%s", err);
    }
    if (co) ck_assert_int_eq(model_open_expert_cache(m, co, NULL, err, sizeof err), -EEXIST);
    const model_hparams *hp = model_params(m);
    model_ctx *ctx = NULL;
    model_ctx_opts cx = {.n_seq = N_SEQ, .n_ctx = 64};
    ck_assert_msg(model_ctx_create(&ctx, m, &cx, err, sizeof err) == 0, "%s", err);
    const int lens[N_SEQ] = {7, 12, 5};
    int32_t tok[32], pos[32], seq[32], last[N_SEQ];
    uint8_t want[32] = {0};
    int n = 0;
    for (int s = 0; s < N_SEQ; s++) {
        for (int i = 0; i < lens[s]; i++) {
            tok[n] = (int32_t)((s * 97 + i * 31 + 5) % hp->n_vocab);
            pos[n] = i;
            seq[n] = s;
            want[n] = i == lens[s] - 1;
            n++;
        }
    }
    float *logits = malloc((size_t)N_SEQ * (size_t)hp->n_vocab * sizeof *logits);
    model_batch b = {.n_tokens = n, .token = tok, .pos = pos, .seq = seq, .want_logits = want};
    *n_out = 0;
    for (int step = 0; step <= N_DECODE; step++) {
        ck_assert_msg(model_forward(ctx, &b, logits, err, sizeof err) == 0, "%s", err);
        memcpy(out + *n_out, logits, (size_t)N_SEQ * (size_t)hp->n_vocab * sizeof *logits);
        *n_out += (size_t)N_SEQ * (size_t)hp->n_vocab;
        for (int s = 0; s < N_SEQ; s++) {
            last[s] = model_argmax(logits + (size_t)s * (size_t)hp->n_vocab, hp->n_vocab);
            tok[s] = last[s];
            pos[s] = lens[s] + step;
            seq[s] = s;
            want[s] = 1;
        }
        b.n_tokens = N_SEQ;
    }
    if (st) cache_get_stats(model_expert_cache(m), st);
    if (ps) {
        memset(ps, 0, sizeof *ps);
        for (int il = 0; il < hp->n_layer; il++) {
            pred_layer_stats l;
            pred_get_stats(model_predictor(m), il, &l);
            ck_assert_uint_eq(l.steps, il == 0 ? 0 : N_DECODE + 1); /* layer 0 is never guessed */
            ps->guessed += l.guessed;
            ps->used += l.used;
            ps->correct += l.correct;
        }
    }
    free(logits);
    model_ctx_destroy(&ctx);
    model_close(&m);
    kern_close(&be);
}

static void run_model(const char *path, const cache_opts *co, float *out, size_t *n_out,
                      cache_stats *st)
{
    run_model_pred(path, co, PRED_NONE, out, n_out, st, NULL);
}

static void check_model_budgets(const char *name, const char *gen_args)
{
    char path[1024];
    test_model_file(name, gen_args, path, sizeof path);
    size_t cap = (size_t)(N_DECODE + 1) * N_SEQ * 2048;
    float *ref = malloc(cap * sizeof *ref), *got = malloc(cap * sizeof *got);
    size_t n_ref = 0, n_got = 0;
    run_model(path, NULL, ref, &n_ref, NULL);

    cache_stats all;
    cache_opts co = cache_opts_default();
    run_model(path, &co, got, &n_got, &all);
    ck_assert_uint_eq(n_got, n_ref);
    ck_assert_msg(memcmp(ref, got, n_ref * sizeof *ref) == 0, "%s: all-resident cache differs",
                  name);
    ck_assert(all.all_resident);
    uint32_t n_all = all.n_slots;

    char err[256];
    kern_backend *be = open_cpu_isa(1, KERN_ISA_COUNT);
    model *m = NULL;
    model_opts mo = {.backend = be};
    ck_assert(model_open(&m, path, &mo, err, sizeof err) == 0);
    uint32_t k = (uint32_t)model_params(m)->n_expert_used;
    model_close(&m);
    kern_close(&be);

    const uint32_t slots[] = {n_all / 2, n_all / 4, k};
    for (int d = 0; d < 2; d++) {
        for (int b = 0; b < 3; b++) {
            cache_stats st;
            co.direct = d ? CACHE_DIRECT_OFF : CACHE_DIRECT_ON;
            co.budget_bytes = slots[b] * all.slot_bytes;
            run_model(path, &co, got, &n_got, &st);
            ck_assert_msg(memcmp(ref, got, n_ref * sizeof *ref) == 0,
                          "%s: logits differ with %u of %u slots (%s)", name, slots[b], n_all,
                          d ? "buffered" : "O_DIRECT");
            ck_assert_uint_eq(st.n_slots, slots[b]);
            ck_assert_uint_gt(st.misses, 0);
            ck_assert_int_eq(st.direct, d == 0);
            if (slots[b] == k) ck_assert_uint_gt(st.evictions, 0);
        }
    }
    /* Prefetching what a predictor guesses changes which reads happen, never the results. */
    for (int kind = PRED_PREGATE; kind < PRED_KIND_COUNT; kind++) {
        cache_stats st;
        pred_layer_stats ps;
        co.direct = CACHE_DIRECT_AUTO;
        co.budget_bytes = (n_all / 2) * all.slot_bytes;
        run_model_pred(path, &co, (pred_kind)kind, got, &n_got, &st, &ps);
        ck_assert_msg(memcmp(ref, got, n_ref * sizeof *ref) == 0,
                      "%s: logits differ with the %s predictor", name,
                      pred_kind_name((pred_kind)kind));
        ck_assert_uint_le(ps.correct, ps.guessed);
        ck_assert_uint_le(ps.correct, ps.used);
        ck_assert_uint_gt(ps.used, 0);
        ck_assert_uint_le(st.prefetch_used + st.prefetch_wasted, st.prefetch_issued);
        if (kind == PRED_PREGATE) {
            /* Pre-gating always guesses, so with half the experts cached it prefetches. */
            ck_assert_uint_gt(ps.guessed, 0);
            ck_assert_uint_gt(st.prefetch_issued, 0);
        }
    }
    /* One slot fewer than a token's experts is refused, naming the minimum. */
    co.budget_bytes = (k - 1) * all.slot_bytes;
    be = open_cpu_isa(1, KERN_ISA_COUNT);
    mo.backend = be;
    mo.expert_cache = &co;
    ck_assert_int_eq(model_open(&m, path, &mo, err, sizeof err), -EINVAL);
    char want_msg[64];
    snprintf(want_msg, sizeof want_msg, "at least %u", k);
    ck_assert_msg(strstr(err, want_msg) != NULL, "%s", err);
    kern_close(&be);
    free(ref);
    free(got);
}

START_TEST(model_logits_identical_at_every_budget)
{
    check_model_budgets("cache-qwen3moe-tiny-q4_k_m",
                        "--arch qwen3moe --preset tiny --type q4_k_m --seed 1");
    check_model_budgets("cache-llama-tiny-q8_0", "--arch llama --preset tiny --type q8_0 --seed 1");
}
END_TEST

/* The staging copier (stage.c) splits a copy over its threads: every byte lands where a
 * memcpy puts it, for lengths around its piece boundaries and thread counts, copy after copy
 * (the workers' generations must not skip or repeat a copy). */
START_TEST(staged_copies_equal_memcpy)
{
    static const size_t lens[] = {0, 1, 4095, 4096, 8191, 8192, 12289, 100003, (3u << 20) + 7};
    size_t max = (3u << 20) + 7;
    uint8_t *src = malloc(max), *dst = malloc(max + 64);
    ck_assert(src && dst);
    for (size_t i = 0; i < max; i++)
        src[i] = (uint8_t)(i * 2654435761u >> 13);
    for (int threads = 1; threads <= 4; threads++) {
        cache__stager *st = NULL;
        ck_assert_int_eq(cache__stager_open(&st, threads), 0);
        ck_assert_int_eq(cache__stager_threads(st), threads);
        for (int rep = 0; rep < 40; rep++)
            for (size_t l = 0; l < sizeof lens / sizeof lens[0]; l++) {
                size_t off = (size_t)rep % 7, n = lens[l]; /* unaligned ends too */
                if (n + off > max) n = max - off;
                memset(dst, 0xA5, n + 64);
                cache__stage(st, dst, src + off, n);
                ck_assert_msg(memcmp(dst, src + off, n) == 0, "%d threads, %zu bytes", threads, n);
                for (size_t i = n; i < n + 64; i++)
                    ck_assert_msg(dst[i] == 0xA5, "%d threads, %zu bytes: wrote past the end",
                                  threads, n);
            }
        cache__stager_close(st);
    }
    cache__stage(NULL, dst, src, 100); /* no stager: the caller's memcpy */
    ck_assert(memcmp(dst, src, 100) == 0);
    ck_assert_int_eq(cache__stager_open(&(cache__stager *){NULL}, 0), -EINVAL);
    free(src);
    free(dst);
}
END_TEST

/* The split of a layer's misses between the CPU and the link (model_split_misses): the two
 * run at once, so a split costs the larger of its two sums.  Against every subset of up to 12
 * misses: the split returned costs what it says, is never worse than all-CPU or all-copy, and
 * is within the smaller of one miss's two times of the best subset (the bound of rounding the
 * fractional optimum, which fills the CPU in t_cpu / t_copy order). */
static double span_of(const model_miss *m, int32_t n, uint32_t cpu_mask)
{
    double cpu = 0, copy = 0;
    for (int32_t i = 0; i < n; i++) {
        if (cpu_mask >> i & 1)
            cpu += m[i].t_cpu;
        else
            copy += m[i].t_copy;
    }
    return cpu > copy ? cpu : copy;
}

START_TEST(misses_split_within_one_miss_of_the_best)
{
    /* by hand: Mixtral-like decode misses, 1.3 ms on the CPU, 2.0 ms over the link */
    model_miss two[2] = {{.expert = 3, .t_cpu = 1.3, .t_copy = 2.0},
                         {.expert = 5, .t_cpu = 1.3, .t_copy = 2.0}};
    ck_assert(fabs(model_split_misses(two, 2) - 2.0) < 1e-12); /* one each, not 2.6 on the CPU */
    ck_assert(two[0].to_cpu != two[1].to_cpu);
    model_miss six[6];
    for (int i = 0; i < 6; i++)
        six[i] = (model_miss){.expert = i, .t_cpu = 1.3, .t_copy = 2.0};
    ck_assert(fabs(model_split_misses(six, 6) - 5.2) < 1e-12); /* 4 on the CPU, 2 copied */
    ck_assert(fabs(model_split_misses(six, 0)) == 0.0);

    uint64_t rng = 0x9e3779b97f4a7c15u;
    for (int trial = 0; trial < 3000; trial++) {
        int32_t n = 1 + trial % 12;
        model_miss m[12], orig[12];
        for (int32_t i = 0; i < n; i++) {
            /* log-uniform times over three decades, skewed per trial so that some instances
             * favour the CPU throughout, some the link, some neither */
            double u[2];
            for (int k = 0; k < 2; k++) {
                rng = rng * 6364136223846793005u + 1442695040888963407u;
                u[k] = (double)(rng >> 11) / 9007199254740992.0;
            }
            double skew = (double)(trial % 5 - 2);
            orig[i] = (model_miss){.expert = 10 * i + trial % 7,
                                   .t_cpu = pow(10, 3 * u[0] - 1.5 + 0.5 * skew),
                                   .t_copy = pow(10, 3 * u[1] - 1.5)};
            m[i] = orig[i];
        }
        double best = INFINITY, cpu_all = 0, copy_all = 0, slack = 0;
        for (uint32_t mask = 0; mask < 1u << n; mask++) {
            double sp = span_of(orig, n, mask);
            if (sp < best) best = sp;
        }
        for (int32_t i = 0; i < n; i++) {
            cpu_all += orig[i].t_cpu;
            copy_all += orig[i].t_copy;
            double lo = orig[i].t_cpu < orig[i].t_copy ? orig[i].t_cpu : orig[i].t_copy;
            if (lo > slack) slack = lo;
        }
        double got = model_split_misses(m, n);
        uint32_t mask = 0;
        for (int32_t i = 0; i < n; i++) { /* a permutation of the input, each miss once */
            int32_t j = 0;
            while (j < n && orig[j].expert != m[i].expert)
                j++;
            ck_assert_int_lt(j, n);
            ck_assert(!(mask >> j & 1));
            ck_assert(orig[j].t_cpu == m[i].t_cpu && orig[j].t_copy == m[i].t_copy);
            mask |= 1u << j;
        }
        ck_assert(fabs(span_of(m, n, 0) - copy_all) < 1e-9 * copy_all);
        uint32_t chosen = 0;
        for (int32_t i = 0; i < n; i++)
            chosen |= (uint32_t)m[i].to_cpu << i;
        double claimed = span_of(m, n, chosen), eps = 1e-9 * (cpu_all + copy_all);
        ck_assert_msg(fabs(claimed - got) <= eps, "trial %d: says %g, costs %g", trial, got,
                      claimed);
        ck_assert_msg(got >= best - eps, "trial %d: %g below the optimum %g", trial, got, best);
        ck_assert_msg(got <= best + slack + eps, "trial %d: %g, optimum %g, slack %g", trial, got,
                      best, slack);
        ck_assert(got <= cpu_all + eps && got <= copy_all + eps);
    }
}
END_TEST

int main(void)
{
    Suite *s = suite_create("cache");
    TCase *tc = tcase_create("cache");
    tcase_set_timeout(tc, 600);
    tcase_add_test(tc, staged_copies_equal_memcpy);
    tcase_add_test(tc, misses_split_within_one_miss_of_the_best);
    tcase_add_test(tc, reads_equal_the_file_at_every_budget);
    tcase_add_test(tc, policies_match_a_reference_and_traces_replay);
    tcase_add_test(tc, predictions_prefetch_by_probability_and_cancel);
    tcase_add_test(tc, layers_without_experts_take_no_slots);
    tcase_add_test(tc, faults_give_clear_errors_and_the_cache_stays_usable);
    tcase_add_test(tc, model_logits_identical_at_every_budget);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
