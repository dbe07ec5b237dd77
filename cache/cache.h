/*
 * cache — the experts' tiers: bounded arenas of equal slots, filled from the tier above.
 *
 * Contract
 * - Tiers chain: the model file -> the host tier (cache_open: RAM, filled by io_uring reads)
 *   -> optionally a device tier (cache_open_device: slots in a backend's device memory, filled
 *   by copies from the host tier).  Every tier is the same slot table, policies, pins, waves
 *   and request / next / release protocol; the model talks only to the tier nearest the
 *   compute, and the part pointers it hands out are that tier's memory (device memory for a
 *   device tier), ready to go into a kern_weight.
 * - An expert is (layer, index); its payload is three extents of the model file (gate, up and
 *   down slices of the stacked tensors), given by the caller in cache_opts.  The cache knows
 *   nothing about what the bytes mean: it hands back a pointer to each part inside a slot.
 * - cache_open() sizes the arena from budget_bytes (a budget that holds every expert loads all
 *   of them at once, with progress in the log, and never evicts) and refuses a budget below
 *   min_slots slots with a message giving the minimum in bytes.  Reads go through io_uring
 *   with O_DIRECT into aligned slot memory (the aligned window around each unaligned extent);
 *   where O_DIRECT is refused it reads buffered and says so once through the log callback;
 *   where io_uring itself is unavailable it falls back to pread, also said once.
 * - One engine step uses it like this, all on one thread (the engine thread):
 *       cache_request(c, layer, experts, n)      pins the hits, starts reads for the misses
 *       while (cache_next(c, &ref) == 0) {       the next requested expert that is resident,
 *           compute with ref.part[0..2]          in the order they become resident
 *           cache_release(c, &ref);              unpins; frees the slot for the next read
 *       }
 *   When the batch asks for more experts than there are slots, the misses are read in waves
 *   as earlier ones are released, so any budget of at least min_slots slots works.
 *   cache_next() returns 1 when every requested expert was handed out, or a negative error
 *   (-EIO for a failed or short read, naming layer, expert and file offset in err); after an
 *   error the request is abandoned (cache_request starts afresh) and the cache stays usable.
 * - Eviction picks, among slots that are not pinned, the one the policy scores lowest (LRU:
 *   least recently used; LFU: least often used, then least recent; LRU-protect: LRU, but an
 *   expert prefetched for the predictor and not yet used is passed over until a whole step —
 *   n_layer requests — has gone by; LFU-history: fewest requests since start, counted across
 *   evictions, and among equals the most recently used — which keeps a fixed subset resident
 *   when a cyclic working set does not fit, where LRU and LFU evict exactly what comes next).  A
 * pinned slot (handed out or being read) is never evicted.
 * - cache_predict() tells the tier what a predictor expects a coming layer to ask for, each
 *   expert with its probability: it reads those at least as likely as the caller's threshold
 *   before they are asked for (never into a pinned slot, one being read, or one this call
 *   keeps), and marks all of them as expected, which the lru-predict policy does not evict.  A
 *   hit on a prefetched expert counts as a used prefetch, its eviction unasked as a wasted one.
 *   When the layer is requested, its prefetched experts that the request did not ask for are
 *   cancelled: they become the first to be evicted (a read still in flight completes first),
 *   and the layer's expectations end.  cache_prefetch() is cache_predict() with every
 *   expert read.
 * - cache_get_stats() may be called from any thread (counters are atomics).
 * - With opts.simulate the cache has no file and reads complete at once: the same policy code
 *   replays a recorded routing trace offline (cache_trace_replay) to compare policies and
 *   budgets on the same trace.
 * - Errors are negative errno values with a message in the caller's buffer.
 */
#ifndef MOE_CACHE_H
#define MOE_CACHE_H

#include "kernels/kernels.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

enum { CACHE_PARTS = 3 }; /* gate, up, down */

typedef struct cache_extent {
    uint64_t offset; /* file offset of the first byte */
    uint64_t bytes;
} cache_extent;

typedef enum cache_policy {
    CACHE_POLICY_LRU = 0,
    CACHE_POLICY_LFU,
    CACHE_POLICY_LRU_PROTECT, /* LRU that passes over prefetched, not yet used experts for a step */
    CACHE_POLICY_LFU_HISTORY, /* requests since start (kept across evictions); newest first among
                                 equals */
    CACHE_POLICY_LRU_PREDICT, /* LRU that passes over what the predictor expects in the layers
                                 ahead (cache_predict), until those layers are requested */
    CACHE_POLICY_COUNT
} cache_policy;

/* "lru", "lfu", "lru-protect", "lfu-history", "lru-predict"; NULL for an unknown value. */
const char *cache_policy_name(cache_policy p);
int cache_policy_parse(const char *name, cache_policy *out);

typedef enum cache_direct {
    CACHE_DIRECT_AUTO = 0, /* O_DIRECT where the file system allows it */
    CACHE_DIRECT_OFF,
    CACHE_DIRECT_ON, /* fail when O_DIRECT is refused */
} cache_direct;

typedef struct cache_opts {
    const char *path; /* the model file (ignored when simulate) */
    int32_t n_layer;
    int32_t n_expert;
    const cache_extent *extents; /* [n_layer][n_expert][CACHE_PARTS], copied */
    /* the layers below hold no experts (glm4moe's leading dense layers: empty extents, never
     * requested): "every expert", shares and the start-up load count only the others */
    int32_t first_layer;
    uint64_t budget_bytes;  /* 0: every expert */
    double budget_fraction; /* > 0: this share of all experts instead of budget_bytes */
    bool budget_min;        /* exactly min_slots slots (benchmarks of the worst case) */
    uint32_t min_slots;     /* budgets below this many slots are refused */
    uint32_t queue_depth;   /* io_uring reads in flight; 0: 32 */
    uint32_t chunk_bytes;   /* largest single read; 0: 1 MiB */
    cache_direct direct;
    cache_policy policy;
    bool simulate; /* no I/O: for trace replay */
    FILE *trace;   /* when set, every request is appended as a trace line */
    void (*log)(void *user, const char *msg); /* NULL: stderr */
    void *log_user;
    /* Fault injection for tests: a negative errno returned here replaces the result of the
     * read of [offset, offset + len). */
    int (*fault)(void *user, uint64_t offset, uint32_t len);
    void *fault_user;
} cache_opts;

cache_opts cache_opts_default(void);

typedef struct cache cache;

int cache_open(cache **out, const cache_opts *opts, char *err, size_t err_size);
void cache_close(cache **c);

/* How copies to the device read the host tier: from the tier itself, registered with the
 * backend (page-locked: the fastest copies, but all of it stays resident), or through a pinned
 * staging ring of a fixed size (the host tier stays ordinary memory; each expert is copied into
 * the ring first).  auto registers a host tier of at most a quarter of the machine's RAM. */
typedef enum cache_pinning { CACHE_PIN_AUTO = 0, CACHE_PIN_TIER, CACHE_PIN_RING } cache_pinning;

typedef struct cache_device_opts {
    kern_backend *backend;  /* required: owns the slots' memory and does the copies */
    uint64_t budget_bytes;  /* 0: every expert */
    double budget_fraction; /* > 0: this share of all experts instead */
    bool budget_min;        /* exactly one token's experts of one layer */
    /* With no budget given (the three above unset): device memory to leave free for everything
     * else (the KV cache, the step's scratch).  The tier then takes every expert if they fit in
     * what the device has free minus this, else as many as fit (said in the log). */
    uint64_t reserve_bytes;
    cache_pinning pinning;
    uint64_t ring_bytes;  /* the staging ring; 0: 256 MiB, and at least two experts */
    int stage_threads;    /* threads that fill the ring; 0: a quarter of the cores, 1 to 4 */
    uint64_t stage_chunk; /* bytes staged before their copy is queued; 0: 8 MiB */
    cache_policy policy;
    void (*log)(void *user, const char *msg); /* NULL: the upper tier's */
    void *log_user;
} cache_device_opts;

cache_device_opts cache_device_opts_default(void);
/* A device tier in front of `upper`, which it uses exclusively from then on (a caller talks
 * only to the device tier) and which must be closed after it.  Its arena is kern_alloc'ed
 * device memory; the upper tier's arena is registered with the backend for fast copies.  A
 * budget below one token's experts of one layer is refused with the minimum in bytes. */
int cache_open_device(cache **out, cache *upper, const cache_device_opts *opts, char *err,
                      size_t err_size);

/* A resident expert handed out by cache_next(); valid until cache_release(). */
typedef struct cache_ref {
    int32_t layer;
    int32_t expert;
    const void *part[CACHE_PARTS];
    uint32_t slot;
} cache_ref;

int cache_request(cache *c, int32_t layer, const int32_t *experts, int32_t n_experts, char *err,
                  size_t err_size);
int cache_next(cache *c, cache_ref *out, char *err, size_t err_size);
/* cache_next without waiting: -EAGAIN when none of the requested experts is resident yet (or
 * the next load needs a slot the caller holds), so that a caller can run, as one group, all
 * the experts that are ready. */
int cache_try_next(cache *c, cache_ref *out, char *err, size_t err_size);
void cache_release(cache *c, const cache_ref *ref);
/* True when (layer, expert) is in the tier or on its way in (a request for it will not start a
 * new load).  For deciding, before a request, what to ask this tier for. */
bool cache_holds(const cache *c, int32_t layer, int32_t expert);
/* True while (layer, expert) is complete in a slot of the tier.  Safe from any thread (the
 * expert map reads it while the engine runs); a snapshot, not a promise. */
bool cache_resident(const cache *c, int32_t layer, int32_t expert);
/* The parts of a resident expert as cache_next would hand them out, without a request (no
 * pin, no counters).  Meant for a tier whose budget holds every expert (all_resident): its
 * slots never change, so the pointers stay valid for the tier's life, and a caller may keep
 * them in a device table and replay its requests later (cache_request of experts it already
 * used).  False when the expert is not complete in a slot. */
bool cache_resident_parts(const cache *c, int32_t layer, int32_t expert,
                          const void *part[CACHE_PARTS]);
/* Waits until the tier has no load in flight (a device tier's prefetch copies included), so that
 * the tier above may be used directly.  0 or the filler's negative error. */
int cache_wait_idle(cache *c, char *err, size_t err_size);
/* Waits only until the tier has no request of its own outstanding at the tier above: its copies
 * may still be in flight, holding the upper slots they read pinned.  Enough before a request
 * to the upper tier when that tier holds every expert (the request then needs no free slot);
 * otherwise use cache_wait_idle.  0 or the filler's negative error. */
int cache_wait_upper(cache *c, char *err, size_t err_size);
/* Starts reads for the experts of `layer` a predictor expects, into slots that are neither
 * pinned nor being read nor filled by this same call (the least valuable first), without
 * pinning them: a later request that asks for one finds it resident or in flight.  Stops early
 * when no slot can be taken.  Returns the number of reads started, or a negative error. */
int cache_prefetch(cache *c, int32_t layer, const int32_t *experts, int32_t n_experts, char *err,
                   size_t err_size);
/* experts ranked most likely first; prob[j] the probability that the layer asks for experts[j]
 * (NULL: certain).  Reads those with prob >= min_prob; returns the number of reads started or
 * a negative error.  Recorded in the trace (a "p" line) so that replays see it too. */
int cache_predict(cache *c, int32_t layer, const int32_t *experts, const float *prob,
                  int32_t n_experts, float min_prob, char *err, size_t err_size);

/* Upper bounds (seconds) of the expert-load latency histogram's buckets; the last is +Inf. */
enum { CACHE_READ_BUCKETS = 12 };
extern const double cache_read_bounds[CACHE_READ_BUCKETS - 1];

typedef struct cache_stats {
    uint64_t hits;   /* requested experts already resident (or already being read) */
    uint64_t misses; /* requested experts that had to be read */
    uint64_t evictions;
    uint64_t bytes_read; /* into this tier: from the file (including alignment padding) or
                          * copied from the tier above */
    uint64_t reads;      /* read operations completed */
    uint64_t read_errors;
    uint64_t stall_ns;                      /* time cache_next() waited for reads */
    uint64_t read_ns_sum;                   /* sum over expert loads of submit-to-complete time */
    uint64_t loads;                         /* expert loads completed (the histogram's count) */
    uint64_t read_hist[CACHE_READ_BUCKETS]; /* loads by latency, per bucket (not cumulative) */
    uint64_t prefetch_issued;
    uint64_t prefetch_used;   /* prefetched experts a request then asked for */
    uint64_t prefetch_wasted; /* prefetched experts evicted before any request */
    uint32_t n_slots;
    uint32_t resident; /* slots holding a complete expert */
    uint64_t slot_bytes;
    uint64_t arena_bytes;
    bool direct;       /* O_DIRECT in use */
    bool uring;        /* io_uring in use (else pread) */
    bool all_resident; /* the budget holds every expert */
} cache_stats;

void cache_get_stats(const cache *c, cache_stats *out);
/* Bytes of one slot for these extents (the aligned windows of the largest expert). */
uint64_t cache_slot_bytes(const cache_extent *extents, size_t n_experts_total);

/* Replays a trace written through opts.trace (its first line gives layers and experts) into a
 * simulated cache with the given policy and number of slots, and fills *out with the
 * counters.  Its predictions ("p" lines) are replayed through cache_predict with min_prob as
 * the threshold, or ignored when min_prob is negative (no prefetching).  A malformed trace is
 * -EINVAL with the line named. */
int cache_trace_replay(FILE *trace, cache_policy policy, uint32_t n_slots, float min_prob,
                       cache_stats *out, char *err, size_t err_size);

#endif
