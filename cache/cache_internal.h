/*
 * Shared between the cache's files.  Not public.
 *
 * A tier is one piece of code (tier.c: the slot table, the policies, pins, waves and the
 * request / next / release protocol) with two plug-ins: its arena (where slot memory is) and
 * its filler (how a slot gets an expert's bytes).  The host tier (host.c) fills from the file
 * with the reader below; the device tier (device.c) fills with backend copies from the tier
 * above it.  A filler starts loads when the core asks and reports each one back through
 * cache__loaded(); the core never blocks except inside the filler's progress(wait).
 *
 * The file reader (io.c), driven by the host tier's filler:
 * The reader owns the file descriptors and the io_uring.  A read is (tag, offset, dst, len,
 * need): `len` bytes are asked for, the first `need` of them must arrive (the rest is alignment
 * padding that may run past the end of the file).  Short reads are resumed and interrupted ones
 * resubmitted inside the reader; the completion callback sees one final result per read: 0, or
 * a negative errno (-ENODATA when the file ended before `need` bytes).
 */
#ifndef MOE_CACHE_INTERNAL_H
#define MOE_CACHE_INTERNAL_H

#include "cache/cache.h"

#include <stdatomic.h>

/* The staging copier (stage.c): a memcpy split over n_threads threads, the caller one of
 * them; cache__stage returns when the whole copy is done.  A NULL stager copies on the
 * caller's thread alone. */
typedef struct cache__stager cache__stager;
int cache__stager_open(cache__stager **out, int n_threads);
int cache__stager_threads(const cache__stager *s);
void cache__stage(cache__stager *s, void *dst, const void *src, size_t len);
void cache__stager_close(cache__stager *s);

typedef enum cache__slot_state { SLOT_EMPTY = 0, SLOT_LOADING, SLOT_READY } cache__slot_state;

typedef struct cache__slot {
    int32_t key; /* layer * n_expert + expert, -1 when empty */
    cache__slot_state state;
    uint32_t pins;
    int error;         /* first error of the current load */
    uint64_t last_use; /* tick of the last request */
    uint64_t uses;     /* requests since it was loaded */
    uint64_t load_start_ns;
    bool prefetched;      /* loaded by cache_prefetch and not requested since */
    uint64_t protect_gen; /* the cache_prefetch call that wants it: not a victim there */
} cache__slot;

/* One requested expert of the current cache_request(). */
typedef struct cache__want {
    int32_t expert;
    int32_t slot; /* -1 while waiting for a free slot */
    bool handed_out;
} cache__want;

typedef struct cache__filler_ops {
    /* Begin loading key into slot (its memory is cache__slot_mem()); the filler calls
     * cache__loaded() when the bytes are there, possibly before returning. */
    void (*start)(cache *c, uint32_t slot, int32_t key);
    /* Hand queued work to the engine that does it (one system call for a batch of reads). */
    int (*flush)(cache *c, char *err, size_t err_size);
    /* Collects completions.  With wait, blocks until at least one load completed, unless
     * nothing is in flight.  Returns 0 or a negative error of the filler itself. */
    int (*progress)(cache *c, bool wait, char *err, size_t err_size);
    uint32_t (*in_flight)(const cache *c);
    /* requests of this tier's own still outstanding at the tier above (NULL: it has none) */
    uint32_t (*upper_busy)(const cache *c);
    /* The message for a load of key that failed with `error`. */
    void (*describe)(const cache *c, int32_t key, int error, char *err, size_t err_size);
    void (*close)(cache *c);
} cache__filler_ops;

struct cache {
    cache_opts o;
    const char *tier_name; /* "host", "device" */
    int32_t n_keys;
    int32_t first_key;          /* keys below are the empty ones of opts.first_layer's layers */
    int32_t *slot_of;           /* [n_keys]: slot or -1 */
    uint32_t *key_requests;     /* [n_keys]: requests since open, kept across evictions */
    uint8_t *expected;          /* [n_keys]: predicted for a layer not requested since */
    atomic_uchar *resident_map; /* [n_keys]: 1 while complete in a slot; read from any thread */
    uint64_t *part_off;         /* [n_keys][CACHE_PARTS]: where each part's data starts in a slot */
    uint64_t *part_bytes;       /* [n_keys][CACHE_PARTS]: its length */
    cache__slot *slots;
    uint32_t n_slots;
    uint64_t slot_bytes;
    uint8_t *arena;
    size_t arena_bytes;
    const cache__filler_ops *fill;
    void *fill_state;
    uint64_t tick;
    /* the current request */
    int32_t layer;
    cache__want *wants;
    int32_t n_wants;
    bool all_fit;
    uint64_t prefetch_gen;
    struct {
        atomic_uint_least64_t hits, misses, evictions, bytes_read, reads, read_errors, stall_ns,
            read_ns_sum, prefetch_issued, prefetch_used, prefetch_wasted, loads;
        atomic_uint_least64_t read_hist[CACHE_READ_BUCKETS];
        atomic_uint resident;
    } st;
};

/* Sizes the slots from the budget in o (n_keys, budgets, min_slots) for slots of slot_bytes;
 * the caller then sets arena, part_off and fill, and calls cache__start(). */
int cache__new(cache **out, const cache_opts *o, uint64_t slot_bytes, const char *tier_name,
               char *err, size_t err_size);
/* Loads everything when the budget holds every expert (with progress in the log). */
int cache__start(cache *c, char *err, size_t err_size);
void cache__free(cache *c);
void cache__loaded(cache *c, uint32_t slot, int result);
void cache__log_msg(const cache *c, const char *msg);
static inline uint8_t *cache__slot_mem(const cache *c, uint32_t slot)
{
    return c->arena + (size_t)slot * c->slot_bytes;
}
/* cache_next without blocking: -EAGAIN when nothing requested is resident yet. */
int cache__next(cache *c, cache_ref *out, bool wait, char *err, size_t err_size);
/* The host tier's filler (host.c): reads from the model file. */
extern const cache__filler_ops cache__host_filler;
bool cache__host_direct(const cache *c);
bool cache__host_uring(const cache *c);

typedef struct cache__io cache__io;
typedef void (*cache__io_done)(void *user, uint64_t tag, int result);
typedef void (*cache__log)(void *user, const char *msg);

int cache__io_open(cache__io **out, const cache_opts *opts, char *err, size_t err_size);
void cache__io_close(cache__io **io);
/* Registers [base, base + bytes) with the ring so that reads into it skip pinning pages per
 * read; where the kernel refuses (memlock limits), reads stay unregistered, said once. */
void cache__io_register(cache__io *io, void *base, size_t bytes);
/* O_DIRECT needs dst, offset and len aligned to this; 1 when reading buffered. */
uint32_t cache__io_align(const cache__io *io);
bool cache__io_direct(const cache__io *io);
bool cache__io_uring(const cache__io *io);
uint64_t cache__io_file_size(const cache__io *io);
/* Room for more reads: submit only while this is true. */
bool cache__io_has_room(const cache__io *io);
uint32_t cache__io_in_flight(const cache__io *io);
/* Queues a read; cache__io_flush() hands queued reads to the kernel in one system call. */
int cache__io_submit(cache__io *io, uint64_t tag, uint64_t offset, void *dst, uint32_t len,
                     uint32_t need);
int cache__io_flush(cache__io *io);
/* Calls done() for completed reads; with wait, blocks until at least one completes.  Returns
 * the number of reads finished or a negative errno from the ring itself. */
int cache__io_reap(cache__io *io, bool wait, cache__io_done done, void *user);

#endif
