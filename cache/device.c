/*
 * The device tier: slots in device memory, filled by backend copies from the tier above it.
 *
 * A load here is a request to the upper tier followed by a copy: loads the core starts are
 * queued, and grouped by layer into one upper-tier request at a time (that tier serves one
 * request at a time, in waves when its slots are fewer).  Each expert the upper tier hands out
 * is copied on the copy stream, an event recorded behind it; the upper tier's slot stays pinned
 * until the event says the copy landed, then it is released and the device slot is ready.
 * Copies of one layer's misses therefore overlap each other and the upper tier's reads, and
 * the engine sees a device slot only once its bytes are there.
 *
 * Parts are packed in a device slot at 256-byte alignment (what the GPU's vector loads want),
 * without the host tier's O_DIRECT windows.
 */
#include "cache/cache_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

enum { PART_ALIGN = 256 };

typedef struct copy_in_flight {
    uint32_t slot;
    cache_ref ref;   /* the upper tier's slot, released when the copy lands ... */
    bool holds_ref;  /* ... unless it was staged through the ring, and released then */
    size_t ring_len; /* ring bytes the copy holds (with any wasted tail before it) */
    kern_event *ev;
} copy_in_flight;

typedef struct dev_fill {
    kern_backend *b;
    cache *upper;
    void *registered; /* the upper tier's arena, registered for fast copies */
    uint8_t *ring;    /* else: a pinned staging ring, filled in copy order ... */
    size_t ring_bytes, ring_head, ring_used;
    cache__stager *stager; /* ... by these threads ... */
    size_t chunk;          /* ... a chunk at a time, each chunk's copy queued at once */
    /* loads not yet asked of the upper tier */
    uint32_t *pend_slot;
    int32_t *pend_key;
    uint32_t n_pend;
    /* the upper tier's current request */
    bool active;
    int32_t active_layer;
    int32_t *active_slot; /* [n_expert]: the device slot waiting for that expert, or -1 */
    int32_t n_active;
    int32_t *experts; /* scratch for building a request */
    /* copies on the copy stream, in the order queued (they complete in that order) */
    copy_in_flight *fl;
    uint32_t fl_head, fl_len;
    kern_event **events;  /* one per slot: at most one copy per slot is in flight */
    kern_event *compute;  /* the compute stream's progress when a copy is queued */
    char msg[320];        /* why the last failed load failed */
    uint32_t completions; /* loads finished during the current progress() */
} dev_fill;

static dev_fill *fill_of(const cache *c)
{
    return c->fill_state;
}

static void fail_load(cache *c, uint32_t slot, int rc)
{
    fill_of(c)->completions++;
    cache__loaded(c, slot, rc);
}

static void dev_start(cache *c, uint32_t slot, int32_t key)
{
    dev_fill *d = fill_of(c);
    d->pend_slot[d->n_pend] = slot;
    d->pend_key[d->n_pend] = key;
    d->n_pend++;
}

/* Asks the upper tier for the pending loads of the first pending layer. */
static void start_upper_request(cache *c)
{
    dev_fill *d = fill_of(c);
    int32_t layer = d->pend_key[0] / c->o.n_expert, n = 0;
    uint32_t kept = 0;
    for (uint32_t i = 0; i < d->n_pend; i++) {
        int32_t key = d->pend_key[i];
        if (key / c->o.n_expert == layer) {
            int32_t e = key % c->o.n_expert;
            d->active_slot[e] = (int32_t)d->pend_slot[i];
            d->experts[n++] = e;
        } else {
            d->pend_slot[kept] = d->pend_slot[i];
            d->pend_key[kept++] = key;
        }
    }
    d->n_pend = kept;
    int rc = cache_request(d->upper, layer, d->experts, n, d->msg, sizeof d->msg);
    if (rc) {
        for (int32_t j = 0; j < n; j++) {
            fail_load(c, (uint32_t)d->active_slot[d->experts[j]], rc);
            d->active_slot[d->experts[j]] = -1;
        }
        return;
    }
    d->active = true;
    d->active_layer = layer;
    d->n_active = n;
}

static uint64_t align_up(uint64_t v, uint64_t a)
{
    return (v + a - 1) / a * a;
}

static int retire_copies(cache *c, bool wait_oldest);

/* Copies a resident upper-tier expert into its device slot, an event behind it. */
static void issue_copy(cache *c, const cache_ref *ref)
{
    dev_fill *d = fill_of(c);
    int32_t slot = d->active_slot[ref->expert];
    d->active_slot[ref->expert] = -1;
    d->n_active--;
    int32_t key = ref->layer * c->o.n_expert + ref->expert;
    uint8_t *dst = cache__slot_mem(c, (uint32_t)slot);
    /* The slot may have been released moments ago by work that is queued on the compute stream
     * and not yet run: the copy must not overwrite it before that work is done. */
    int rc = kern_event_record(d->b, d->compute, KERN_STREAM_COMPUTE);
    if (rc == 0) rc = kern_stream_wait(d->b, KERN_STREAM_COPY, d->compute);
    uint64_t bytes = 0;
    size_t ring_len = 0;
    if (rc == 0 && d->ring) {
        /* Stage the parts in the ring (contiguous: a copy that would run past the end starts
         * again at the beginning, the tail counted as used until it retires), a chunk at a
         * time: the link copies one chunk while the threads stage the next. */
        size_t need = 0;
        for (int p = 0; p < CACHE_PARTS; p++)
            need += align_up(c->part_bytes[(size_t)key * CACHE_PARTS + (size_t)p], PART_ALIGN);
        size_t waste = d->ring_head + need > d->ring_bytes ? d->ring_bytes - d->ring_head : 0;
        while (d->fl_len > 0 && d->ring_used + waste + need > d->ring_bytes)
            retire_copies(c, true);
        if (waste) d->ring_head = 0;
        uint8_t *at = d->ring + d->ring_head;
        ring_len = waste + need;
        d->ring_head = (d->ring_head + need) % d->ring_bytes;
        d->ring_used += ring_len;
        for (int p = 0; p < CACHE_PARTS && rc == 0; p++) {
            size_t i = (size_t)key * CACHE_PARTS + (size_t)p;
            const uint8_t *src = ref->part[p];
            for (size_t off = 0; off < c->part_bytes[i] && rc == 0; off += d->chunk) {
                size_t n = c->part_bytes[i] - off < d->chunk ? c->part_bytes[i] - off : d->chunk;
                cache__stage(d->stager, at + off, src + off, n);
                rc = kern_copy(d->b, KERN_STREAM_COPY, dst + c->part_off[i] + off, at + off, n,
                               KERN_COPY_TO_DEVICE);
            }
            bytes += c->part_bytes[i];
            at += align_up(c->part_bytes[i], PART_ALIGN);
        }
    } else {
        for (int p = 0; p < CACHE_PARTS && rc == 0; p++) {
            size_t i = (size_t)key * CACHE_PARTS + (size_t)p;
            rc = kern_copy(d->b, KERN_STREAM_COPY, dst + c->part_off[i], ref->part[p],
                           c->part_bytes[i], KERN_COPY_TO_DEVICE);
            bytes += c->part_bytes[i];
        }
    }
    kern_event *ev = d->events[slot];
    if (rc == 0) rc = kern_event_record(d->b, ev, KERN_STREAM_COPY);
    if (rc) {
        snprintf(d->msg, sizeof d->msg, "copying expert %d of layer %d to the device: %s",
                 ref->expert, ref->layer, strerror(-rc));
        d->ring_used -= ring_len;
        cache_release(d->upper, ref);
        fail_load(c, (uint32_t)slot, rc);
        return;
    }
    atomic_fetch_add(&c->st.bytes_read, bytes);
    atomic_fetch_add(&c->st.reads, 1);
    /* staged: the host slot is free for the next read at once */
    if (d->ring) cache_release(d->upper, ref);
    uint32_t at = (d->fl_head + d->fl_len) % c->n_slots;
    d->fl[at] = (copy_in_flight){
        .slot = (uint32_t)slot, .ref = *ref, .holds_ref = !d->ring, .ring_len = ring_len, .ev = ev};
    d->fl_len++;
}

/* Finishes the copies that have landed, oldest first. */
static int retire_copies(cache *c, bool wait_oldest)
{
    dev_fill *d = fill_of(c);
    while (d->fl_len > 0) {
        copy_in_flight *f = &d->fl[d->fl_head];
        int q = wait_oldest ? (kern_event_wait(d->b, f->ev) == 0 ? 1 : -EIO)
                            : kern_event_query(d->b, f->ev);
        wait_oldest = false;
        if (q == 0) break;
        if (f->holds_ref) cache_release(d->upper, &f->ref);
        d->ring_used -= f->ring_len;
        if (q < 0) {
            snprintf(d->msg, sizeof d->msg, "copying expert %d of layer %d to the device: %s",
                     f->ref.expert, f->ref.layer, strerror(-q));
            fail_load(c, f->slot, q);
        } else {
            d->completions++;
            cache__loaded(c, f->slot, 0);
        }
        d->fl_head = (d->fl_head + 1) % c->n_slots;
        d->fl_len--;
    }
    return 0;
}

/* Takes what the upper tier's request has ready (blocking for one when wait), and copies it. */
static void drain_upper(cache *c, bool wait)
{
    dev_fill *d = fill_of(c);
    cache_ref ref;
    for (;;) {
        int rc = cache__next(d->upper, &ref, wait, d->msg, sizeof d->msg);
        if (rc == -EAGAIN) return;
        if (rc == 0) {
            issue_copy(c, &ref);
            wait = false;
            continue;
        }
        /* 1: every expert handed out; < 0: the request failed (and was abandoned) */
        if (rc < 0) {
            for (int32_t e = 0; e < c->o.n_expert; e++) {
                if (d->active_slot[e] >= 0) {
                    fail_load(c, (uint32_t)d->active_slot[e], rc);
                    d->active_slot[e] = -1;
                }
            }
        }
        d->active = false;
        d->n_active = 0;
        return;
    }
}

static int dev_progress(cache *c, bool wait, char *err, size_t err_size)
{
    dev_fill *d = fill_of(c);
    d->completions = 0;
    for (;;) {
        retire_copies(c, false);
        if (!d->active && d->n_pend > 0) start_upper_request(c);
        if (d->active) drain_upper(c, false);
        if (!d->active && d->n_pend > 0) continue;
        if (!wait || d->completions > 0) return 0;
        if (d->fl_len > 0) {
            retire_copies(c, true);
            continue;
        }
        if (d->active) {
            drain_upper(c, true);
            continue;
        }
        return 0;
    }
}

static int dev_flush(cache *c, char *err, size_t err_size)
{
    return dev_progress(c, false, err, err_size);
}

static uint32_t dev_in_flight(const cache *c)
{
    const dev_fill *d = fill_of(c);
    return d->n_pend + (uint32_t)d->n_active + d->fl_len;
}

static uint32_t dev_upper_busy(const cache *c)
{
    const dev_fill *d = fill_of(c);
    return d->n_pend + (uint32_t)d->n_active;
}

static void dev_describe(const cache *c, int32_t key, int error, char *err, size_t err_size)
{
    const dev_fill *d = fill_of(c);
    if (d->msg[0])
        snprintf(err, err_size, "%s", d->msg);
    else
        snprintf(err, err_size, "loading expert %d of layer %d into the device tier: %s",
                 key % c->o.n_expert, key / c->o.n_expert, strerror(-error));
}

static void dev_close(cache *c)
{
    dev_fill *d = fill_of(c);
    if (!d) return;
    /* Copies in flight write into the arena and read the upper tier: let them land first. */
    char ignored[64];
    (void)kern_sync(d->b, ignored, sizeof ignored);
    while (d->fl_len > 0) {
        if (d->fl[d->fl_head].holds_ref) cache_release(d->upper, &d->fl[d->fl_head].ref);
        d->fl_head = (d->fl_head + 1) % c->n_slots;
        d->fl_len--;
    }
    if (d->events)
        for (uint32_t i = 0; i < c->n_slots; i++)
            kern_event_destroy(d->b, &d->events[i]);
    kern_event_destroy(d->b, &d->compute);
    kern_unregister(d->b, d->registered);
    kern_free(d->b, KERN_MEM_HOST_PINNED, d->ring);
    cache__stager_close(d->stager);
    kern_free(d->b, KERN_MEM_DEVICE, c->arena);
    c->arena = NULL;
    free(d->pend_slot);
    free(d->pend_key);
    free(d->active_slot);
    free(d->experts);
    free(d->fl);
    free(d->events);
    free(d);
    c->fill_state = NULL;
}

static const cache__filler_ops dev_filler = {
    .start = dev_start,
    .flush = dev_flush,
    .progress = dev_progress,
    .in_flight = dev_in_flight,
    .upper_busy = dev_upper_busy,
    .describe = dev_describe,
    .close = dev_close,
};

/* Registers the host tier for copies, or sets up the staging ring (auto: register a host tier
 * of at most a quarter of RAM; page-locking more starves everything else, as users of other
 * servers found pinning tens of GB). */
static int attach_host(cache *c, cache *upper, const cache_device_opts *opts, char *err,
                       size_t err_size)
{
    dev_fill *d = fill_of(c);
    if (!upper->arena) return 0;
    long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
    uint64_t ram = pages > 0 && page > 0 ? (uint64_t)pages * (uint64_t)page : 0;
    bool tier = opts->pinning == CACHE_PIN_TIER ||
                (opts->pinning == CACHE_PIN_AUTO && ram && upper->arena_bytes <= ram / 4);
    char msg[256];
    if (tier) {
        if (kern_register(d->b, upper->arena, upper->arena_bytes) == 0) {
            d->registered = upper->arena;
            return 0;
        }
        if (opts->pinning == CACHE_PIN_TIER) {
            snprintf(err, err_size,
                     "cannot register the host tier (%zu bytes) for copies to the device",
                     upper->arena_bytes);
            return -ENOMEM;
        }
        cache__log_msg(c, "could not register the host tier for copies: staging through a ring");
    }
    size_t ring = opts->ring_bytes ? (size_t)opts->ring_bytes : (size_t)256 << 20;
    if (ring < 2 * c->slot_bytes) ring = (size_t)(2 * c->slot_bytes);
    void *mem = NULL;
    int rc = kern_alloc(d->b, KERN_MEM_HOST_PINNED, ring, &mem);
    if (rc) {
        snprintf(err, err_size, "the pinned staging ring of %zu bytes: out of memory", ring);
        return rc;
    }
    d->ring = mem;
    d->ring_bytes = ring;
    d->chunk = opts->stage_chunk ? (size_t)opts->stage_chunk : (size_t)8 << 20;
    int threads = opts->stage_threads;
    if (threads <= 0) { /* a quarter of the cores, up to 4: what a PCIe 5 link needs */
        long cores = sysconf(_SC_NPROCESSORS_ONLN);
        threads = cores >= 8 ? (int)(cores / 4) : 1;
        threads = threads > 4 ? 4 : threads;
    }
    if (threads > 1 && (rc = cache__stager_open(&d->stager, threads))) {
        snprintf(err, err_size, "the staging ring's %d copy threads: %s", threads, strerror(-rc));
        return rc;
    }
    snprintf(msg, sizeof msg,
             "copies to the device are staged through a pinned ring of %.0f MiB by %d thread%s "
             "(the host tier, %.1f GiB, stays pageable)",
             (double)ring / (1 << 20), threads, threads > 1 ? "s" : "",
             (double)upper->arena_bytes / (1 << 30));
    cache__log_msg(c, msg);
    return 0;
}

cache_device_opts cache_device_opts_default(void)
{
    return (cache_device_opts){.policy = CACHE_POLICY_LRU};
}

int cache_open_device(cache **out, cache *upper, const cache_device_opts *opts, char *err,
                      size_t err_size)
{
    *out = NULL;
    if (!opts->backend || !upper) {
        snprintf(err, err_size, "device tier: no backend or no upper tier");
        return -EINVAL;
    }
    size_t n_keys = (size_t)upper->n_keys;
    uint64_t slot_bytes = 0;
    for (size_t k = 0; k < n_keys; k++) {
        uint64_t b = 0;
        for (int p = 0; p < CACHE_PARTS; p++)
            b += align_up(upper->part_bytes[k * CACHE_PARTS + (size_t)p], PART_ALIGN);
        if (b > slot_bytes) slot_bytes = b;
    }
    cache_opts co = cache_opts_default();
    if (!opts->budget_bytes && opts->budget_fraction <= 0 && !opts->budget_min &&
        opts->reserve_bytes) {
        size_t free_b = 0, total_b = 0;
        uint64_t all = slot_bytes * (uint64_t)(n_keys - (size_t)upper->first_key);
        if (kern_mem_info(opts->backend, &free_b, &total_b) == 0 &&
            free_b < all + opts->reserve_bytes) {
            co.budget_bytes = free_b > opts->reserve_bytes ? free_b - opts->reserve_bytes : 1;
            char msg[256];
            snprintf(msg, sizeof msg,
                     "device memory: %.2f of %.2f GiB free, %.2f GiB kept for the KV cache and "
                     "scratch: the device tier gets %.2f GiB of the experts' %.2f GiB",
                     (double)free_b / (1 << 30), (double)total_b / (1 << 30),
                     (double)opts->reserve_bytes / (1 << 30), (double)co.budget_bytes / (1 << 30),
                     (double)all / (1 << 30));
            if (opts->log)
                opts->log(opts->log_user, msg);
            else if (upper->o.log)
                upper->o.log(upper->o.log_user, msg);
        }
    }
    co.path = upper->o.path;
    co.n_layer = upper->o.n_layer;
    co.n_expert = upper->o.n_expert;
    co.first_layer = upper->o.first_layer;
    co.min_slots = upper->o.min_slots;
    if (opts->budget_bytes) co.budget_bytes = opts->budget_bytes;
    co.budget_fraction = opts->budget_fraction;
    co.budget_min = opts->budget_min;
    co.policy = opts->policy;
    co.log = opts->log ? opts->log : upper->o.log;
    co.log_user = opts->log ? opts->log_user : upper->o.log_user;
    cache *c = NULL;
    int rc = cache__new(&c, &co, slot_bytes, "device", err, err_size);
    if (rc) return rc;
    dev_fill *d = calloc(1, sizeof *d);
    if (!d) goto oom;
    c->fill = &dev_filler;
    c->fill_state = d;
    d->b = opts->backend;
    d->upper = upper;
    d->pend_slot = calloc(c->n_slots, sizeof *d->pend_slot);
    d->pend_key = calloc(c->n_slots, sizeof *d->pend_key);
    d->active_slot = malloc((size_t)c->o.n_expert * sizeof *d->active_slot);
    d->experts = calloc((size_t)c->o.n_expert, sizeof *d->experts);
    d->fl = calloc(c->n_slots, sizeof *d->fl);
    d->events = calloc(c->n_slots, sizeof *d->events);
    if (!d->pend_slot || !d->pend_key || !d->active_slot || !d->experts || !d->fl || !d->events)
        goto oom;
    for (int32_t e = 0; e < c->o.n_expert; e++)
        d->active_slot[e] = -1;
    for (uint32_t i = 0; i < c->n_slots; i++)
        if ((rc = kern_event_create(d->b, &d->events[i]))) goto oom;
    if ((rc = kern_event_create(d->b, &d->compute))) goto oom;
    for (size_t k = 0; k < n_keys; k++) {
        uint64_t pos = 0;
        for (int p = 0; p < CACHE_PARTS; p++) {
            size_t i = k * CACHE_PARTS + (size_t)p;
            c->part_off[i] = pos;
            c->part_bytes[i] = upper->part_bytes[i];
            pos += align_up(upper->part_bytes[i], PART_ALIGN);
        }
    }
    c->arena_bytes = (size_t)(c->slot_bytes * c->n_slots);
    void *mem = NULL;
    if ((rc = kern_alloc(d->b, KERN_MEM_DEVICE, c->arena_bytes, &mem))) {
        snprintf(err, err_size,
                 "the device expert tier: %u slots of %llu bytes (%zu bytes): out of "
                 "device memory",
                 c->n_slots, (unsigned long long)c->slot_bytes, c->arena_bytes);
        goto fail;
    }
    c->arena = mem;
    if ((rc = attach_host(c, upper, opts, err, err_size))) goto fail;
    if ((rc = cache__start(c, err, err_size))) goto fail;
    *out = c;
    return 0;
oom:
    rc = rc ? rc : -ENOMEM;
    snprintf(err, err_size, "out of memory");
fail:
    cache__free(c);
    return rc;
}
