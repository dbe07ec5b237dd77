/*
 * A tier of the expert cache: equal slots, a direct-mapped table from (layer, expert) to slot,
 * pin counts, and eviction by a policy score.  The same code runs the host tier and the device
 * tier; only the arena and the filler differ (cache_internal.h).
 *
 * Why a scan for the victim instead of an intrusive LRU list: the number of slots is in the
 * hundreds to low thousands (one per resident expert), a miss costs a disk read of megabytes,
 * and a score function makes every policy (LRU, LFU, and whatever is measured next) one small
 * function over the same slot metadata, replayable offline on a recorded trace.
 */
#include "cache/cache_internal.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

const double cache_read_bounds[CACHE_READ_BUCKETS - 1] = {
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25};

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

const char *cache_policy_name(cache_policy p)
{
    switch (p) {
    case CACHE_POLICY_LRU:
        return "lru";
    case CACHE_POLICY_LFU:
        return "lfu";
    case CACHE_POLICY_LRU_PROTECT:
        return "lru-protect";
    case CACHE_POLICY_LFU_HISTORY:
        return "lfu-history";
    case CACHE_POLICY_LRU_PREDICT:
        return "lru-predict";
    case CACHE_POLICY_COUNT:
        break;
    }
    return NULL;
}

int cache_policy_parse(const char *name, cache_policy *out)
{
    for (int p = 0; p < CACHE_POLICY_COUNT; p++) {
        if (!strcmp(name, cache_policy_name((cache_policy)p))) {
            *out = (cache_policy)p;
            return 0;
        }
    }
    return -EINVAL;
}

cache_opts cache_opts_default(void)
{
    return (cache_opts){.queue_depth = 32,
                        .chunk_bytes = 1u << 20,
                        .direct = CACHE_DIRECT_AUTO,
                        .policy = CACHE_POLICY_LRU,
                        .min_slots = 1};
}

/* Lower scores are evicted first. */
static uint64_t score(const cache *c, const cache__slot *s)
{
    switch (c->o.policy) {
    case CACHE_POLICY_LFU:
        /* Frequency first, recency among equals: a 40/24 split keeps both in one integer. */
        return ((s->uses > 0xffffff ? 0xffffff : s->uses) << 40) | (s->last_use & 0xffffffffffull);
    case CACHE_POLICY_LFU_HISTORY: {
        uint64_t n = c->key_requests[s->key];
        return ((n > 0xffffff ? 0xffffff : n) << 40) |
               (0xffffffffffull - (s->last_use & 0xffffffffffull));
    }
    case CACHE_POLICY_LRU_PROTECT:
        if (s->prefetched && c->tick - s->last_use <= (uint64_t)c->o.n_layer) return UINT64_MAX - 1;
        break;
    case CACHE_POLICY_LRU_PREDICT:
        /* expected soon: after everything else, least recent first among them */
        if (c->expected[s->key]) return (UINT64_MAX >> 1) + s->last_use;
        break;
    case CACHE_POLICY_LRU:
    case CACHE_POLICY_COUNT:
        break;
    }
    return s->last_use;
}

/* A slot to load into: an empty one, else the unpinned one with the lowest score; -1 when
 * every slot is pinned. */
static int32_t find_victim(cache *c)
{
    int32_t best = -1;
    uint64_t best_score = UINT64_MAX;
    for (uint32_t i = 0; i < c->n_slots; i++) {
        cache__slot *s = &c->slots[i];
        if (s->state == SLOT_EMPTY) return (int32_t)i;
        if (s->pins || s->state == SLOT_LOADING) continue; /* reads in flight write into it */
        uint64_t sc = score(c, s);
        if (sc < best_score) {
            best_score = sc;
            best = (int32_t)i;
        }
    }
    return best;
}

static void empty_slot(cache *c, uint32_t i)
{
    cache__slot *s = &c->slots[i];
    if (s->prefetched) atomic_fetch_add(&c->st.prefetch_wasted, 1);
    s->prefetched = false;
    if (s->key >= 0) c->slot_of[s->key] = -1;
    if (s->state == SLOT_READY && !s->error) atomic_fetch_sub(&c->st.resident, 1);
    if (s->key >= 0) atomic_store_explicit(&c->resident_map[s->key], 0, memory_order_relaxed);
    s->key = -1;
    s->state = SLOT_EMPTY;
    s->error = 0;
    s->uses = 0;
}

static void start_load(cache *c, uint32_t i, int32_t key)
{
    cache__slot *s = &c->slots[i];
    s->key = key;
    s->state = SLOT_LOADING;
    s->error = 0;
    s->uses = 0;
    s->load_start_ns = now_ns();
    c->slot_of[key] = (int32_t)i;
    if (c->o.simulate) {
        s->state = SLOT_READY;
        atomic_fetch_add(&c->st.resident, 1);
        atomic_store_explicit(&c->resident_map[key], 1, memory_order_relaxed);
        return;
    }
    c->fill->start(c, i, key);
}

void cache__loaded(cache *c, uint32_t i, int result)
{
    cache__slot *s = &c->slots[i];
    if (result && !s->error) s->error = result;
    s->state = SLOT_READY;
    uint64_t ns = now_ns() - s->load_start_ns;
    int b = 0;
    while (b < CACHE_READ_BUCKETS - 1 && (double)ns * 1e-9 > cache_read_bounds[b])
        b++;
    atomic_fetch_add(&c->st.read_hist[b], 1);
    atomic_fetch_add(&c->st.loads, 1);
    atomic_fetch_add(&c->st.read_ns_sum, ns);
    if (!s->error) {
        atomic_fetch_add(&c->st.resident, 1);
        atomic_store_explicit(&c->resident_map[s->key], 1, memory_order_relaxed);
    }
}

static int progress(cache *c, bool wait, char *err, size_t err_size)
{
    if (c->o.simulate) return 0;
    uint64_t t0 = wait ? now_ns() : 0;
    int rc = c->fill->progress(c, wait, err, err_size);
    if (wait) atomic_fetch_add(&c->st.stall_ns, now_ns() - t0);
    return rc;
}

static int flush(cache *c, char *err, size_t err_size)
{
    return c->o.simulate ? 0 : c->fill->flush(c, err, err_size);
}

static uint32_t in_flight(const cache *c)
{
    return c->o.simulate ? 0 : c->fill->in_flight(c);
}

/* ---- open / close --------------------------------------------------------------------------- */

void cache__log_msg(const cache *c, const char *msg)
{
    if (c->o.log)
        c->o.log(c->o.log_user, msg);
    else
        fprintf(stderr, "%s\n", msg);
}

static int preload_all(cache *c, char *err, size_t err_size)
{
    uint64_t t0 = now_ns();
    int32_t next_report = 10;
    char msg[200];
    uint32_t depth = c->o.queue_depth ? c->o.queue_depth : 32;
    int32_t n_real = c->n_keys - c->first_key;
    for (int32_t key = c->first_key; key < c->n_keys; key++) {
        start_load(c, (uint32_t)(key - c->first_key), key);
        /* Keep the filler busy but bounded. */
        int rc = flush(c, err, err_size);
        while (rc == 0 && in_flight(c) > depth)
            rc = progress(c, true, err, err_size);
        if (rc) return rc;
        int32_t done = key + 1 - c->first_key;
        int32_t pct = (int32_t)((int64_t)done * 100 / n_real);
        if (pct >= next_report || done == n_real) {
            snprintf(msg, sizeof msg, "loading experts into the %s tier: %3d%% (%d/%d, %.1f MiB)",
                     c->tier_name, pct, done, n_real,
                     (double)atomic_load(&c->st.bytes_read) / (1 << 20));
            cache__log_msg(c, msg);
            next_report = pct + 10;
        }
    }
    while (in_flight(c) > 0) {
        int rc = progress(c, true, err, err_size);
        if (rc) return rc;
    }
    for (uint32_t i = 0; i < c->n_slots; i++) {
        if (c->slots[i].error) {
            int e = c->slots[i].error;
            c->fill->describe(c, c->slots[i].key, e, err, err_size);
            return e == -ENODATA ? -EIO : e;
        }
    }
    atomic_store(&c->st.stall_ns, 0); /* start-up is not a stall of the engine */
    double s = (double)(now_ns() - t0) * 1e-9;
    snprintf(msg, sizeof msg,
             "loaded all %d experts into the %s tier (%.1f MiB) in %.2f s (%.0f MiB/s)", n_real,
             c->tier_name, (double)atomic_load(&c->st.bytes_read) / (1 << 20), s,
             (double)atomic_load(&c->st.bytes_read) / (1 << 20) / (s > 0 ? s : 1));
    cache__log_msg(c, msg);
    return 0;
}

int cache__new(cache **out, const cache_opts *opts, uint64_t slot_bytes, const char *tier_name,
               char *err, size_t err_size)
{
    *out = NULL;
    if (opts->n_layer <= 0 || opts->n_expert <= 0) {
        snprintf(err, err_size, "cache: bad options (layers %d, experts %d)", opts->n_layer,
                 opts->n_expert);
        return -EINVAL;
    }
    cache *c = calloc(1, sizeof *c);
    if (!c) {
        snprintf(err, err_size, "out of memory");
        return -ENOMEM;
    }
    c->o = *opts;
    c->o.extents = NULL; /* not kept: each tier derives what it needs at open */
    c->tier_name = tier_name;
    c->n_keys = opts->n_layer * opts->n_expert;
    c->first_key = opts->first_layer > 0 && opts->first_layer < opts->n_layer
                       ? opts->first_layer * opts->n_expert
                       : 0;
    int32_t n_real = c->n_keys - c->first_key; /* the experts there are */
    int rc = 0;
    c->slot_of = malloc((size_t)c->n_keys * sizeof *c->slot_of);
    c->key_requests = calloc((size_t)c->n_keys, sizeof *c->key_requests);
    c->expected = calloc((size_t)c->n_keys, 1);
    c->part_off = calloc((size_t)c->n_keys * CACHE_PARTS, sizeof *c->part_off);
    c->part_bytes = calloc((size_t)c->n_keys * CACHE_PARTS, sizeof *c->part_bytes);
    c->resident_map = calloc((size_t)c->n_keys, sizeof *c->resident_map);
    if (!c->slot_of || !c->key_requests || !c->expected || !c->part_off || !c->part_bytes ||
        !c->resident_map)
        goto oom;
    for (int32_t k = 0; k < c->n_keys; k++)
        c->slot_of[k] = -1;

    c->slot_bytes = slot_bytes ? slot_bytes : 4096;
    uint64_t all = c->slot_bytes * (uint64_t)n_real;
    uint64_t budget = opts->budget_bytes ? opts->budget_bytes : all;
    uint64_t n_slots = budget / c->slot_bytes;
    if (opts->budget_fraction > 0) {
        double share = opts->budget_fraction * (double)n_real;
        n_slots = share >= (double)n_real ? (uint64_t)n_real : (uint64_t)(share + 0.999999);
        budget = n_slots * c->slot_bytes;
    }
    if (opts->budget_min) {
        n_slots = opts->min_slots ? opts->min_slots : 1;
        budget = n_slots * c->slot_bytes;
    }
    if (n_slots >= (uint64_t)n_real) {
        n_slots = (uint64_t)n_real;
        c->all_fit = true;
    }
    uint32_t min_slots = opts->min_slots ? opts->min_slots : 1;
    if (n_slots < min_slots) {
        snprintf(err, err_size,
                 "the %s expert tier's budget (%llu bytes) holds %llu experts of %llu bytes; at "
                 "least %u are needed (%llu bytes, one token's experts of one layer)",
                 tier_name, (unsigned long long)budget, (unsigned long long)n_slots,
                 (unsigned long long)c->slot_bytes, min_slots,
                 (unsigned long long)(c->slot_bytes * min_slots));
        rc = -EINVAL;
        goto fail;
    }
    c->n_slots = (uint32_t)n_slots;
    c->slots = calloc(c->n_slots, sizeof *c->slots);
    c->wants = calloc((size_t)opts->n_expert, sizeof *c->wants);
    if (!c->slots || !c->wants) goto oom;
    for (uint32_t i = 0; i < c->n_slots; i++)
        c->slots[i].key = -1;
    *out = c;
    return 0;
oom:
    rc = -ENOMEM;
    snprintf(err, err_size, "out of memory");
fail:
    cache__free(c);
    return rc;
}

int cache__start(cache *c, char *err, size_t err_size)
{
    if (c->all_fit) {
        if (c->o.simulate) {
            for (int32_t key = c->first_key; key < c->n_keys; key++)
                start_load(c, (uint32_t)(key - c->first_key), key);
        } else {
            int rc = preload_all(c, err, err_size);
            if (rc) return rc;
        }
    }
    if (c->o.trace) fprintf(c->o.trace, "moeserve-trace 1 %d %d\n", c->o.n_layer, c->o.n_expert);
    return 0;
}

void cache__free(cache *c)
{
    if (!c) return;
    if (c->fill && c->fill->close) c->fill->close(c); /* waits for loads in flight */
    free(c->slot_of);
    free(c->key_requests);
    free(c->expected);
    free(c->part_off);
    free(c->part_bytes);
    free(c->resident_map);
    free(c->slots);
    free(c->wants);
    free(c);
}

void cache_close(cache **cp)
{
    cache__free(*cp);
    *cp = NULL;
}

/* ---- requests -------------------------------------------------------------------------------- */

/* Gives waiting wants a slot while unpinned slots exist. */
static void assign(cache *c)
{
    for (int32_t w = 0; w < c->n_wants; w++) {
        cache__want *x = &c->wants[w];
        if (x->slot >= 0 || x->handed_out) continue;
        int32_t key = c->layer * c->o.n_expert + x->expert;
        int32_t i = c->slot_of[key];
        if (i < 0) {
            i = find_victim(c);
            if (i < 0) return;
            if (c->slots[i].state != SLOT_EMPTY) {
                atomic_fetch_add(&c->st.evictions, 1);
                empty_slot(c, (uint32_t)i);
            }
            start_load(c, (uint32_t)i, key);
        }
        x->slot = i;
        c->slots[i].pins++;
    }
}

int cache_request(cache *c, int32_t layer, const int32_t *experts, int32_t n_experts, char *err,
                  size_t err_size)
{
    /* Whatever an abandoned request still pins is released first. */
    for (int32_t w = 0; w < c->n_wants; w++)
        if (c->wants[w].slot >= 0 && !c->wants[w].handed_out) c->slots[c->wants[w].slot].pins--;
    c->n_wants = 0;
    if (layer < 0 || layer >= c->o.n_layer || n_experts < 0 || n_experts > c->o.n_expert) {
        snprintf(err, err_size, "cache: request for %d experts of layer %d is out of range",
                 n_experts, layer);
        return -EINVAL;
    }
    c->layer = layer;
    c->tick++;
    if (c->o.trace) fprintf(c->o.trace, "%d", layer);
    for (int32_t j = 0; j < n_experts; j++) {
        int32_t e = experts[j];
        if (e < 0 || e >= c->o.n_expert) {
            snprintf(err, err_size, "cache: expert %d of layer %d is out of range", e, layer);
            c->n_wants = 0;
            if (c->o.trace) fputc('\n', c->o.trace);
            return -EINVAL;
        }
        if (c->o.trace) fprintf(c->o.trace, " %d", e);
        int32_t key = layer * c->o.n_expert + e;
        if (c->key_requests[key] < UINT32_MAX) c->key_requests[key]++;
        int32_t i = c->slot_of[key];
        if (i >= 0 && c->slots[i].error && c->slots[i].state == SLOT_READY && !c->slots[i].pins) {
            empty_slot(c, (uint32_t)i); /* a failed load is retried, not served */
            i = -1;
        }
        if (i >= 0) {
            atomic_fetch_add(&c->st.hits, 1);
            if (c->slots[i].prefetched) {
                c->slots[i].prefetched = false;
                atomic_fetch_add(&c->st.prefetch_used, 1);
            }
        } else {
            atomic_fetch_add(&c->st.misses, 1);
        }
        c->wants[c->n_wants++] = (cache__want){.expert = e, .slot = -1};
    }
    if (c->o.trace) fputc('\n', c->o.trace);
    /* The layer's prefetches that the request did not want are cancelled (evicted first), and
     * what was expected of it is no longer. */
    for (int32_t e = 0; e < c->o.n_expert; e++) {
        int32_t key = layer * c->o.n_expert + e, i = c->slot_of[key];
        c->expected[key] = 0;
        if (i >= 0 && c->slots[i].prefetched) {
            c->slots[i].last_use = 0;
            c->slots[i].uses = 0;
        }
    }
    /* Touch every requested resident expert before choosing victims, so that a batch never
     * evicts an expert it is about to use. */
    for (int32_t w = 0; w < c->n_wants; w++) {
        int32_t i = c->slot_of[layer * c->o.n_expert + c->wants[w].expert];
        if (i >= 0) {
            c->slots[i].last_use = c->tick;
            c->slots[i].uses++;
        }
    }
    assign(c);
    for (int32_t w = 0; w < c->n_wants; w++) {
        int32_t i = c->wants[w].slot;
        if (i >= 0 && c->slots[i].uses == 0) {
            c->slots[i].last_use = c->tick;
            c->slots[i].uses = 1;
        }
    }
    return flush(c, err, err_size);
}

int cache__next(cache *c, cache_ref *out, bool wait, char *err, size_t err_size)
{
    bool polled = false;
    for (;;) {
        int32_t remaining = 0;
        for (int32_t w = 0; w < c->n_wants; w++) {
            cache__want *x = &c->wants[w];
            if (x->handed_out) continue;
            remaining++;
            if (x->slot < 0) continue;
            cache__slot *s = &c->slots[x->slot];
            if (s->state != SLOT_READY) continue;
            int32_t key = c->layer * c->o.n_expert + x->expert;
            if (s->error) {
                int e = s->error;
                c->fill->describe(c, key, e, err, err_size);
                /* Abandon the request: unpin what it holds and drop the bad slot. */
                for (int32_t v = 0; v < c->n_wants; v++)
                    if (c->wants[v].slot >= 0 && !c->wants[v].handed_out)
                        c->slots[c->wants[v].slot].pins--;
                c->n_wants = 0;
                if (s->pins == 0) empty_slot(c, (uint32_t)(s - c->slots));
                return e == -ENODATA ? -EIO : e;
            }
            x->handed_out = true;
            out->layer = c->layer;
            out->expert = x->expert;
            out->slot = (uint32_t)x->slot;
            uint8_t *mem = cache__slot_mem(c, out->slot);
            for (int p = 0; p < CACHE_PARTS; p++)
                out->part[p] =
                    c->o.simulate ? NULL : mem + c->part_off[(size_t)key * CACHE_PARTS + (size_t)p];
            return 0;
        }
        if (remaining == 0) {
            c->n_wants = 0;
            return 1;
        }
        if (in_flight(c) > 0) {
            if (!wait && polled) return -EAGAIN;
            int rc = progress(c, wait, err, err_size);
            if (rc) return rc;
            polled = true;
            continue;
        }
        assign(c);
        bool any = false;
        for (int32_t w = 0; w < c->n_wants; w++)
            any |= c->wants[w].slot >= 0 && !c->wants[w].handed_out;
        if (!any && !wait) return -EAGAIN; /* the caller holds what it must release first */
        if (!any) {
            snprintf(err, err_size,
                     "cache: every slot of the %s tier is pinned (%u slots); release "
                     "experts before asking for more",
                     c->tier_name, c->n_slots);
            return -EDEADLK;
        }
        int rc = flush(c, err, err_size);
        if (rc) return rc;
    }
}

int cache_next(cache *c, cache_ref *out, char *err, size_t err_size)
{
    return cache__next(c, out, true, err, err_size);
}

int cache_try_next(cache *c, cache_ref *out, char *err, size_t err_size)
{
    return cache__next(c, out, false, err, err_size);
}

void cache_release(cache *c, const cache_ref *ref)
{
    cache__slot *s = &c->slots[ref->slot];
    if (s->pins > 0) s->pins--;
    /* Waves: a freed slot lets the next waiting expert of this request start loading. */
    assign(c);
    char ignored[64];
    (void)flush(c, ignored, sizeof ignored); /* a failure resurfaces at the next flush */
}

bool cache_resident(const cache *c, int32_t layer, int32_t expert)
{
    if (layer < 0 || layer >= c->o.n_layer || expert < 0 || expert >= c->o.n_expert) return false;
    return atomic_load_explicit(&c->resident_map[layer * c->o.n_expert + expert],
                                memory_order_relaxed) != 0;
}

bool cache_resident_parts(const cache *c, int32_t layer, int32_t expert,
                          const void *part[CACHE_PARTS])
{
    if (!cache_resident(c, layer, expert) || c->o.simulate) return false;
    int32_t key = layer * c->o.n_expert + expert, i = c->slot_of[key];
    if (i < 0 || c->slots[i].state != SLOT_READY || c->slots[i].error) return false;
    const uint8_t *mem = cache__slot_mem(c, (uint32_t)i);
    for (int p = 0; p < CACHE_PARTS; p++)
        part[p] = mem + c->part_off[(size_t)key * CACHE_PARTS + (size_t)p];
    return true;
}

bool cache_holds(const cache *c, int32_t layer, int32_t expert)
{
    if (layer < 0 || layer >= c->o.n_layer || expert < 0 || expert >= c->o.n_expert) return false;
    int32_t i = c->slot_of[layer * c->o.n_expert + expert];
    return i >= 0 && !(c->slots[i].state == SLOT_READY && c->slots[i].error);
}

int cache_wait_idle(cache *c, char *err, size_t err_size)
{
    while (in_flight(c) > 0) {
        int rc = progress(c, true, err, err_size);
        if (rc) return rc;
    }
    return 0;
}

int cache_wait_upper(cache *c, char *err, size_t err_size)
{
    while (!c->o.simulate && c->fill->upper_busy && c->fill->upper_busy(c) > 0) {
        int rc = progress(c, true, err, err_size);
        if (rc) return rc;
    }
    return 0;
}

int cache_prefetch(cache *c, int32_t layer, const int32_t *experts, int32_t n_experts, char *err,
                   size_t err_size)
{
    return cache_predict(c, layer, experts, NULL, n_experts, 0.0f, err, err_size);
}

int cache_predict(cache *c, int32_t layer, const int32_t *experts, const float *prob,
                  int32_t n_experts, float min_prob, char *err, size_t err_size)
{
    if (layer < 0 || layer >= c->o.n_layer || n_experts < 0 || n_experts > c->o.n_expert) {
        snprintf(err, err_size, "cache: prediction of %d experts for layer %d is out of range",
                 n_experts, layer);
        return -EINVAL;
    }
    if (c->o.trace) { /* also when everything fits: a replay at a smaller budget needs them */
        fprintf(c->o.trace, "p %d", layer);
        for (int32_t j = 0; j < n_experts; j++)
            fprintf(c->o.trace, " %d/%.3f", experts[j], prob ? prob[j] : 1.0);
        fputc('\n', c->o.trace);
    }
    if (c->all_fit) return 0;
    uint64_t gen = ++c->prefetch_gen;
    int started = 0;
    /* What is guessed and already resident must not make room for the rest. */
    for (int32_t j = 0; j < n_experts; j++) {
        int32_t e = experts[j];
        if (e < 0 || e >= c->o.n_expert) continue;
        c->expected[layer * c->o.n_expert + e] = 1;
        int32_t i = c->slot_of[layer * c->o.n_expert + e];
        if (i >= 0) c->slots[i].protect_gen = gen;
    }
    for (int32_t j = 0; j < n_experts; j++) {
        int32_t e = experts[j];
        if (e < 0 || e >= c->o.n_expert) continue;
        if (prob && prob[j] < min_prob) break; /* ranked: the rest are less likely still */
        int32_t key = layer * c->o.n_expert + e;
        if (c->slot_of[key] >= 0) continue;
        int32_t best = -1;
        uint64_t best_score = UINT64_MAX;
        for (uint32_t i = 0; i < c->n_slots; i++) {
            cache__slot *s = &c->slots[i];
            if (s->state == SLOT_EMPTY) {
                best = (int32_t)i;
                break;
            }
            if (s->pins || s->state == SLOT_LOADING || s->protect_gen == gen) continue;
            uint64_t sc = score(c, s);
            if (sc < best_score) {
                best_score = sc;
                best = (int32_t)i;
            }
        }
        if (best < 0) break;
        if (c->slots[best].state != SLOT_EMPTY) {
            atomic_fetch_add(&c->st.evictions, 1);
            empty_slot(c, (uint32_t)best);
        }
        start_load(c, (uint32_t)best, key);
        cache__slot *s = &c->slots[best];
        s->prefetched = true;
        s->protect_gen = gen;
        s->last_use = c->tick; /* as recent as the request that will want it */
        atomic_fetch_add(&c->st.prefetch_issued, 1);
        started++;
    }
    if (started) {
        int rc = flush(c, err, err_size);
        if (rc) return rc;
    }
    return started;
}

void cache_get_stats(const cache *c, cache_stats *out)
{
    cache *m = (cache *)c; /* atomics are read-only here */
    *out = (cache_stats){
        .hits = atomic_load(&m->st.hits),
        .misses = atomic_load(&m->st.misses),
        .evictions = atomic_load(&m->st.evictions),
        .bytes_read = atomic_load(&m->st.bytes_read),
        .reads = atomic_load(&m->st.reads),
        .read_errors = atomic_load(&m->st.read_errors),
        .stall_ns = atomic_load(&m->st.stall_ns),
        .read_ns_sum = atomic_load(&m->st.read_ns_sum),
        .prefetch_issued = atomic_load(&m->st.prefetch_issued),
        .prefetch_used = atomic_load(&m->st.prefetch_used),
        .prefetch_wasted = atomic_load(&m->st.prefetch_wasted),
        .loads = atomic_load(&m->st.loads),
        .n_slots = c->n_slots,
        .resident = atomic_load(&m->st.resident),
        .slot_bytes = c->slot_bytes,
        .arena_bytes = c->arena_bytes,
        .direct = c->fill == &cache__host_filler && cache__host_direct(c),
        .uring = c->fill == &cache__host_filler && cache__host_uring(c),
        .all_resident = c->all_fit,
    };
    for (int b = 0; b < CACHE_READ_BUCKETS; b++)
        out->read_hist[b] = atomic_load(&m->st.read_hist[b]);
}
