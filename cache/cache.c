/*
 * The host tier: equal slots, a direct-mapped table from (layer, expert) to slot, pin counts,
 * and eviction by a policy score.
 *
 * Why a scan for the victim instead of an intrusive LRU list: the number of slots is in the
 * hundreds to low thousands (one per resident expert), a miss costs a disk read of megabytes,
 * and a score function makes every policy (LRU, LFU, and whatever is measured next) one small
 * function over the same slot metadata, replayable offline on a recorded trace.
 *
 * Slot layout: each of the three parts occupies the aligned window around its extent (O_DIRECT
 * needs offset, length and memory aligned to the block size), so a part's data starts at
 * (offset - window start) inside its window.  The windows of the largest expert size the slot.
 */
#include "cache/cache_internal.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

enum { ALIGN = 4096 };

const double cache_read_bounds[CACHE_READ_BUCKETS - 1] = {0.0001, 0.00025, 0.0005, 0.001, 0.0025,
                                                          0.005,  0.01,    0.025,  0.05,  0.1,
                                                          0.25};

typedef enum slot_state { SLOT_EMPTY = 0, SLOT_LOADING, SLOT_READY } slot_state;

typedef struct slot {
    int32_t key;          /* layer * n_expert + expert, -1 when empty */
    slot_state state;
    uint32_t pins;
    uint32_t reads_left;  /* chunks still in flight or queued */
    int error;            /* first read error of the current load */
    uint64_t last_use;    /* tick of the last request */
    uint64_t uses;        /* requests since it was loaded */
    uint64_t load_start_ns;
    bool prefetched;      /* loaded by cache_prefetch and not requested since */
    uint64_t protect_gen;  /* the cache_prefetch call that wants it: not a victim there */
} slot;

/* One requested expert of the current cache_request(). */
typedef struct want {
    int32_t expert;
    int32_t slot;    /* -1 while waiting for a free slot */
    bool handed_out;
} want;

struct cache {
    cache_opts o;
    cache_extent *ext; /* owned copy */
    int32_t n_keys;
    int32_t *slot_of;  /* [n_keys]: slot or -1 */
    uint32_t *key_requests; /* [n_keys]: requests since open, kept across evictions */
    slot *slots;
    uint32_t n_slots;
    uint64_t slot_bytes;
    uint8_t *arena;
    size_t arena_bytes;
    cache__io *io;
    uint64_t tick;
    /* the current request */
    int32_t layer;
    want *wants;
    int32_t n_wants;
    /* chunk reads not yet submitted for lack of queue room: a FIFO of (slot, next chunk) */
    uint32_t *load_queue;
    uint32_t load_head, load_len;
    uint64_t *load_cursor; /* per slot: bytes of the three windows already submitted */
    bool all_fit;
    uint64_t prefetch_gen;
    struct {
        atomic_uint_least64_t hits, misses, evictions, bytes_read, reads, read_errors, stall_ns,
            read_ns_sum, prefetch_issued, prefetch_used, prefetch_wasted, loads;
        atomic_uint_least64_t read_hist[CACHE_READ_BUCKETS];
        atomic_uint resident;
    } st;
};

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static uint64_t align_down(uint64_t v, uint64_t a)
{
    return v / a * a;
}
static uint64_t align_up(uint64_t v, uint64_t a)
{
    return (v + a - 1) / a * a;
}

static uint64_t window_bytes(const cache_extent *e)
{
    if (e->bytes == 0) return 0;
    return align_up(e->offset + e->bytes, ALIGN) - align_down(e->offset, ALIGN);
}

uint64_t cache_slot_bytes(const cache_extent *extents, size_t n_experts_total)
{
    uint64_t best = 0;
    for (size_t i = 0; i < n_experts_total; i++) {
        uint64_t b = 0;
        for (int p = 0; p < CACHE_PARTS; p++) b += window_bytes(&extents[i * CACHE_PARTS + p]);
        if (b > best) best = b;
    }
    return best;
}

const char *cache_policy_name(cache_policy p)
{
    switch (p) {
    case CACHE_POLICY_LRU: return "lru";
    case CACHE_POLICY_LFU: return "lfu";
    case CACHE_POLICY_LRU_PROTECT: return "lru-protect";
    case CACHE_POLICY_LFU_HISTORY: return "lfu-history";
    case CACHE_POLICY_COUNT: break;
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
    return (cache_opts){.queue_depth = 32, .chunk_bytes = 1u << 20, .direct = CACHE_DIRECT_AUTO,
                        .policy = CACHE_POLICY_LRU, .min_slots = 1};
}

static void log_msg(const cache *c, const char *msg)
{
    if (c->o.log)
        c->o.log(c->o.log_user, msg);
    else
        fprintf(stderr, "%s\n", msg);
}

/* Lower scores are evicted first. */
static uint64_t score(const cache *c, const slot *s)
{
    switch (c->o.policy) {
    case CACHE_POLICY_LFU:
        /* Frequency first, recency among equals: a 40/24 split keeps both in one integer. */
        return ((s->uses > 0xffffff ? 0xffffff : s->uses) << 40) | (s->last_use & 0xffffffffffull);
    case CACHE_POLICY_LFU_HISTORY: {
        uint64_t n = c->key_requests[s->key];
        return ((n > 0xffffff ? 0xffffff : n) << 40) | (0xffffffffffull - (s->last_use & 0xffffffffffull));
    }
    case CACHE_POLICY_LRU_PROTECT:
        if (s->prefetched && c->tick - s->last_use <= (uint64_t)c->o.n_layer) return UINT64_MAX - 1;
        break;
    case CACHE_POLICY_LRU:
    case CACHE_POLICY_COUNT: break;
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
        slot *s = &c->slots[i];
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
    slot *s = &c->slots[i];
    if (s->prefetched) atomic_fetch_add(&c->st.prefetch_wasted, 1);
    s->prefetched = false;
    if (s->key >= 0) c->slot_of[s->key] = -1;
    if (s->state == SLOT_READY && !s->error) atomic_fetch_sub(&c->st.resident, 1);
    s->key = -1;
    s->state = SLOT_EMPTY;
    s->error = 0;
    s->uses = 0;
}

/* Part p's window inside slot memory starts after the windows of the parts before it. */
static uint64_t part_pos(const cache *c, int32_t key, int p)
{
    uint64_t pos = 0;
    for (int q = 0; q < p; q++) pos += window_bytes(&c->ext[(size_t)key * CACHE_PARTS + q]);
    return pos;
}

static uint8_t *slot_mem(const cache *c, uint32_t i)
{
    return c->arena + (size_t)i * c->slot_bytes;
}

/* Submits the slot's next chunk reads while the ring has room; returns false when the slot
 * still has reads to submit. */
static bool pump_slot(cache *c, uint32_t i)
{
    slot *s = &c->slots[i];
    uint64_t cursor = c->load_cursor[i];
    for (int p = 0; p < CACHE_PARTS; p++) {
        const cache_extent *e = &c->ext[(size_t)s->key * CACHE_PARTS + p];
        uint64_t wb = window_bytes(e), w0 = align_down(e->offset, ALIGN), pos = part_pos(c, s->key, p);
        if (cursor >= pos + wb) continue;
        while (cursor < pos + wb) {
            if (!cache__io_has_room(c->io)) {
                c->load_cursor[i] = cursor;
                return false;
            }
            uint64_t in_win = cursor - pos;
            uint64_t len = wb - in_win;
            if (len > c->o.chunk_bytes) len = c->o.chunk_bytes;
            /* Bytes that must arrive: up to the extent's end; the rest is padding. */
            uint64_t data_end = e->offset + e->bytes - w0;
            uint64_t need = data_end > in_win ? data_end - in_win : 0;
            if (need > len) need = len;
            uint64_t file_off = w0 + in_win;
            /* A window may reach past the end of the file: ask only for what exists. */
            uint64_t fsz = cache__io_file_size(c->io);
            uint64_t ask = file_off >= fsz ? 0 : (file_off + len > fsz ? fsz - file_off : len);
            if (cache__io_direct(c->io)) ask = align_up(ask, ALIGN);
            if (ask > len) ask = len;
            if (need > ask) ask = need; /* lets the read fail with -ENODATA: truncated file */
            s->reads_left++;
            int rc = ask ? cache__io_submit(c->io, i, file_off, slot_mem(c, i) + cursor, (uint32_t)ask,
                                            (uint32_t)need)
                         : 0;
            if (rc) {
                s->reads_left--;
                if (!s->error) s->error = rc;
            } else if (!ask) {
                s->reads_left--;
            }
            atomic_fetch_add(&c->st.bytes_read, ask);
            cursor += len;
        }
    }
    c->load_cursor[i] = cursor;
    return true;
}

static void pump(cache *c)
{
    while (c->load_len > 0) {
        uint32_t i = c->load_queue[c->load_head];
        if (!pump_slot(c, i)) break;
        c->load_head = (c->load_head + 1) % c->n_slots;
        c->load_len--;
        if (c->slots[i].reads_left == 0 && c->slots[i].state == SLOT_LOADING) {
            /* nothing to read (empty extents) or every submit failed */
            c->slots[i].state = SLOT_READY;
            if (!c->slots[i].error) atomic_fetch_add(&c->st.resident, 1);
        }
    }
}

static void start_load(cache *c, uint32_t i, int32_t key)
{
    slot *s = &c->slots[i];
    s->key = key;
    s->state = SLOT_LOADING;
    s->reads_left = 0;
    s->error = 0;
    s->uses = 0;
    s->load_start_ns = now_ns();
    c->slot_of[key] = (int32_t)i;
    c->load_cursor[i] = 0;
    if (c->o.simulate) {
        s->state = SLOT_READY;
        atomic_fetch_add(&c->st.resident, 1);
        return;
    }
    c->load_queue[(c->load_head + c->load_len) % c->n_slots] = i;
    c->load_len++;
    pump(c);
}

static void on_read(void *user, uint64_t tag, int result)
{
    cache *c = user;
    slot *s = &c->slots[tag];
    atomic_fetch_add(&c->st.reads, 1);
    if (result) {
        if (!s->error) s->error = result;
        atomic_fetch_add(&c->st.read_errors, 1);
    }
    /* Ready when the last read is back and every chunk was submitted. */
    if (--s->reads_left == 0 && c->load_cursor[tag] >= part_pos(c, s->key, CACHE_PARTS)) {
        s->state = SLOT_READY;
        uint64_t ns = now_ns() - s->load_start_ns;
        int b = 0;
        while (b < CACHE_READ_BUCKETS - 1 && (double)ns * 1e-9 > cache_read_bounds[b]) b++;
        atomic_fetch_add(&c->st.read_hist[b], 1);
        atomic_fetch_add(&c->st.loads, 1);
        atomic_fetch_add(&c->st.read_ns_sum, ns);
        if (!s->error) atomic_fetch_add(&c->st.resident, 1);
    }
}

static int reap(cache *c, bool wait, char *err, size_t err_size)
{
    uint64_t t0 = wait ? now_ns() : 0;
    int rc = cache__io_reap(c->io, wait, on_read, c);
    if (wait) atomic_fetch_add(&c->st.stall_ns, now_ns() - t0);
    if (rc < 0) {
        snprintf(err, err_size, "reading experts from %s: io_uring: %s", c->o.path, strerror(-rc));
        return rc;
    }
    pump(c);
    return 0;
}

/* ---- open / close --------------------------------------------------------------------------- */

static int preload_all(cache *c, char *err, size_t err_size)
{
    uint64_t t0 = now_ns();
    int32_t next_report = 10;
    char msg[160];
    for (int32_t key = 0; key < c->n_keys; key++) {
        start_load(c, (uint32_t)key, key);
        /* Keep the ring busy but bounded: reap whenever it is full. */
        while (c->load_len > 0) {
            int rc = reap(c, true, err, err_size);
            if (rc) return rc;
        }
        int32_t pct = (int32_t)((int64_t)(key + 1) * 100 / c->n_keys);
        if (pct >= next_report || key + 1 == c->n_keys) {
            snprintf(msg, sizeof msg, "loading experts: %3d%% (%d/%d, %.1f MiB)", pct, key + 1,
                     c->n_keys, (double)atomic_load(&c->st.bytes_read) / (1 << 20));
            log_msg(c, msg);
            next_report = pct + 10;
        }
    }
    while (cache__io_in_flight(c->io) > 0) {
        int rc = reap(c, true, err, err_size);
        if (rc) return rc;
    }
    for (uint32_t i = 0; i < c->n_slots; i++) {
        if (c->slots[i].error) {
            int32_t key = c->slots[i].key;
            snprintf(err, err_size, "reading expert %d of layer %d from %s: %s",
                     key % c->o.n_expert, key / c->o.n_expert, c->o.path,
                     c->slots[i].error == -ENODATA ? "the file is truncated"
                                                   : strerror(-c->slots[i].error));
            return c->slots[i].error == -ENODATA ? -EIO : c->slots[i].error;
        }
    }
    atomic_store(&c->st.stall_ns, 0); /* start-up is not a stall of the engine */
    double s = (double)(now_ns() - t0) * 1e-9;
    snprintf(msg, sizeof msg, "loaded all %d experts (%.1f MiB) in %.2f s (%.0f MiB/s)", c->n_keys,
             (double)atomic_load(&c->st.bytes_read) / (1 << 20), s,
             (double)atomic_load(&c->st.bytes_read) / (1 << 20) / (s > 0 ? s : 1));
    log_msg(c, msg);
    return 0;
}

int cache_open(cache **out, const cache_opts *opts, char *err, size_t err_size)
{
    *out = NULL;
    if (opts->n_layer <= 0 || opts->n_expert <= 0 || !opts->extents ||
        (!opts->simulate && !opts->path)) {
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
    if (!c->o.queue_depth) c->o.queue_depth = 32;
    if (!c->o.chunk_bytes) c->o.chunk_bytes = 1u << 20;
    c->o.chunk_bytes = (uint32_t)align_up(c->o.chunk_bytes, ALIGN);
    c->n_keys = opts->n_layer * opts->n_expert;
    int rc = 0;
    size_t n_ext = (size_t)c->n_keys * CACHE_PARTS;
    c->ext = malloc(n_ext * sizeof *c->ext);
    c->slot_of = malloc((size_t)c->n_keys * sizeof *c->slot_of);
    c->key_requests = calloc((size_t)c->n_keys, sizeof *c->key_requests);
    if (!c->ext || !c->slot_of || !c->key_requests) goto oom;
    memcpy(c->ext, opts->extents, n_ext * sizeof *c->ext);
    for (int32_t k = 0; k < c->n_keys; k++) c->slot_of[k] = -1;

    c->slot_bytes = cache_slot_bytes(c->ext, (size_t)c->n_keys);
    if (c->slot_bytes == 0) c->slot_bytes = ALIGN;
    uint64_t all = c->slot_bytes * (uint64_t)c->n_keys;
    uint64_t budget = opts->budget_bytes ? opts->budget_bytes : all;
    uint64_t n_slots = budget / c->slot_bytes;
    if (opts->budget_fraction > 0) {
        double share = opts->budget_fraction * (double)c->n_keys;
        n_slots = share >= (double)c->n_keys ? (uint64_t)c->n_keys : (uint64_t)(share + 0.999999);
        budget = n_slots * c->slot_bytes;
    }
    if (opts->budget_min) {
        n_slots = opts->min_slots ? opts->min_slots : 1;
        budget = n_slots * c->slot_bytes;
    }
    if (n_slots >= (uint64_t)c->n_keys) {
        n_slots = (uint64_t)c->n_keys;
        c->all_fit = true;
    }
    uint32_t min_slots = opts->min_slots ? opts->min_slots : 1;
    if (n_slots < min_slots) {
        snprintf(err, err_size,
                 "the expert cache budget (%llu bytes) holds %llu experts of %llu bytes; at least "
                 "%u are needed (%llu bytes, one token's experts of one layer)",
                 (unsigned long long)budget, (unsigned long long)n_slots,
                 (unsigned long long)c->slot_bytes, min_slots,
                 (unsigned long long)(c->slot_bytes * min_slots));
        rc = -EINVAL;
        goto fail;
    }
    c->n_slots = (uint32_t)n_slots;
    c->slots = calloc(c->n_slots, sizeof *c->slots);
    c->wants = calloc((size_t)opts->n_expert, sizeof *c->wants);
    c->load_queue = calloc(c->n_slots, sizeof *c->load_queue);
    c->load_cursor = calloc(c->n_slots, sizeof *c->load_cursor);
    if (!c->slots || !c->wants || !c->load_queue || !c->load_cursor) goto oom;
    for (uint32_t i = 0; i < c->n_slots; i++) c->slots[i].key = -1;
    if (!opts->simulate) {
        c->arena_bytes = (size_t)(c->slot_bytes * c->n_slots);
        void *mem = mmap(NULL, c->arena_bytes, PROT_READ | PROT_WRITE,
                         MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (mem == MAP_FAILED) {
            rc = -errno;
            snprintf(err, err_size, "cannot reserve %zu bytes for the expert cache: %s",
                     c->arena_bytes, strerror(errno));
            goto fail;
        }
        c->arena = mem;
        rc = cache__io_open(&c->io, &c->o, err, err_size);
        if (rc) goto fail;
        cache__io_register(c->io, c->arena, c->arena_bytes);
        if (c->all_fit && (rc = preload_all(c, err, err_size))) goto fail;
    } else if (c->all_fit) {
        for (int32_t key = 0; key < c->n_keys; key++) start_load(c, (uint32_t)key, key);
    }
    if (c->o.trace) fprintf(c->o.trace, "moeserve-trace 1 %d %d\n", opts->n_layer, opts->n_expert);
    *out = c;
    return 0;
oom:
    rc = -ENOMEM;
    snprintf(err, err_size, "out of memory");
fail:
    cache_close(&c);
    return rc;
}

void cache_close(cache **cp)
{
    cache *c = *cp;
    if (!c) return;
    *cp = NULL;
    cache__io_close(&c->io); /* waits for reads in flight before their memory goes */
    if (c->arena) munmap(c->arena, c->arena_bytes);
    free(c->ext);
    free(c->slot_of);
    free(c->key_requests);
    free(c->slots);
    free(c->wants);
    free(c->load_queue);
    free(c->load_cursor);
    free(c);
}

/* ---- requests -------------------------------------------------------------------------------- */

/* Gives waiting wants a slot while unpinned slots exist. */
static void assign(cache *c)
{
    for (int32_t w = 0; w < c->n_wants; w++) {
        want *x = &c->wants[w];
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
        c->wants[c->n_wants++] = (want){.expert = e, .slot = -1};
    }
    if (c->o.trace) fputc('\n', c->o.trace);
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
    if (c->io) {
        int rc = cache__io_flush(c->io);
        if (rc) {
            snprintf(err, err_size, "reading experts from %s: io_uring submit: %s", c->o.path,
                     strerror(-rc));
            return rc;
        }
    }
    return 0;
}

int cache_next(cache *c, cache_ref *out, char *err, size_t err_size)
{
    for (;;) {
        int32_t remaining = 0;
        for (int32_t w = 0; w < c->n_wants; w++) {
            want *x = &c->wants[w];
            if (x->handed_out) continue;
            remaining++;
            if (x->slot < 0) continue;
            slot *s = &c->slots[x->slot];
            if (s->state != SLOT_READY) continue;
            int32_t key = c->layer * c->o.n_expert + x->expert;
            if (s->error) {
                int e = s->error;
                uint64_t off = c->ext[(size_t)key * CACHE_PARTS].offset;
                snprintf(err, err_size,
                         "reading expert %d of layer %d (file offset %llu) from %s: %s", x->expert,
                         c->layer, (unsigned long long)off, c->o.path,
                         e == -ENODATA ? "the file is truncated" : strerror(-e));
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
            uint8_t *mem = slot_mem(c, out->slot);
            for (int p = 0; p < CACHE_PARTS; p++) {
                const cache_extent *e = &c->ext[(size_t)key * CACHE_PARTS + p];
                out->part[p] = c->o.simulate
                                   ? NULL
                                   : mem + part_pos(c, key, p) + (e->offset - align_down(e->offset, ALIGN));
            }
            return 0;
        }
        if (remaining == 0) {
            c->n_wants = 0;
            return 1;
        }
        if (c->io && cache__io_in_flight(c->io) > 0) {
            int rc = reap(c, true, err, err_size);
            if (rc) return rc;
            continue;
        }
        assign(c);
        bool progress = false;
        for (int32_t w = 0; w < c->n_wants; w++) progress |= c->wants[w].slot >= 0 && !c->wants[w].handed_out;
        if (!progress) {
            snprintf(err, err_size, "cache: every slot is pinned (%u slots); release experts "
                                    "before asking for more", c->n_slots);
            return -EDEADLK;
        }
        if (c->io) {
            int rc = cache__io_flush(c->io);
            if (rc) {
                snprintf(err, err_size, "reading experts: io_uring submit: %s", strerror(-rc));
                return rc;
            }
        }
    }
}

void cache_release(cache *c, const cache_ref *ref)
{
    slot *s = &c->slots[ref->slot];
    if (s->pins > 0) s->pins--;
    /* Waves: a freed slot lets the next waiting expert of this request start reading. */
    assign(c);
    if (c->io) (void)cache__io_flush(c->io);
}

int cache_prefetch(cache *c, int32_t layer, const int32_t *experts, int32_t n_experts, char *err,
                   size_t err_size)
{
    if (c->all_fit) return 0;
    if (layer < 0 || layer >= c->o.n_layer || n_experts < 0) {
        snprintf(err, err_size, "cache: prefetch for layer %d is out of range", layer);
        return -EINVAL;
    }
    uint64_t gen = ++c->prefetch_gen;
    int started = 0;
    /* What is guessed and already resident must not make room for the rest. */
    for (int32_t j = 0; j < n_experts; j++) {
        int32_t e = experts[j];
        if (e < 0 || e >= c->o.n_expert) continue;
        int32_t i = c->slot_of[layer * c->o.n_expert + e];
        if (i >= 0) c->slots[i].protect_gen = gen;
    }
    for (int32_t j = 0; j < n_experts; j++) {
        int32_t e = experts[j];
        if (e < 0 || e >= c->o.n_expert) continue;
        int32_t key = layer * c->o.n_expert + e;
        if (c->slot_of[key] >= 0) continue;
        int32_t best = -1;
        uint64_t best_score = UINT64_MAX;
        for (uint32_t i = 0; i < c->n_slots; i++) {
            slot *s = &c->slots[i];
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
        slot *s = &c->slots[best];
        s->prefetched = true;
        s->protect_gen = gen;
        s->last_use = c->tick; /* as recent as the request that will want it */
        atomic_fetch_add(&c->st.prefetch_issued, 1);
        started++;
    }
    if (c->io && started) {
        int rc = cache__io_flush(c->io);
        if (rc) {
            snprintf(err, err_size, "reading experts: io_uring submit: %s", strerror(-rc));
            return rc;
        }
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
        .direct = c->io && cache__io_direct(c->io),
        .uring = c->io && cache__io_uring(c->io),
        .all_resident = c->all_fit,
    };
    for (int b = 0; b < CACHE_READ_BUCKETS; b++) out->read_hist[b] = atomic_load(&m->st.read_hist[b]);
}
