/*
 * The host tier: slots in an anonymous mapping, filled from the model file by the reader
 * (io.c: io_uring, O_DIRECT where allowed).
 *
 * Slot layout: each of the three parts occupies the aligned window around its extent (O_DIRECT
 * needs offset, length and memory aligned to the block size), so a part's data starts at
 * (offset - window start) inside its window.  The windows of the largest expert size the slot.
 * A slot's windows are read in chunks of at most chunk_bytes; chunks that do not fit in the
 * ring wait in a FIFO of slots and are submitted as earlier reads complete.
 */
#include "cache/cache_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

enum { ALIGN = 4096 };

typedef struct host_fill {
    cache__io *io;
    cache_extent *ext;    /* [n_keys][CACHE_PARTS], owned copy */
    uint32_t *reads_left; /* per slot: chunks in flight or queued */
    uint64_t *cursor;     /* per slot: bytes of the three windows already submitted */
    uint32_t *queue;      /* slots with chunks still to submit, FIFO */
    uint32_t q_head, q_len;
} host_fill;

static host_fill *fill_of(const cache *c)
{
    return c->fill_state;
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
        for (int p = 0; p < CACHE_PARTS; p++)
            b += window_bytes(&extents[i * CACHE_PARTS + p]);
        if (b > best) best = b;
    }
    return best;
}

/* Where part p's window starts inside a slot: after the windows of the parts before it. */
static uint64_t window_pos(const host_fill *h, int32_t key, int p)
{
    uint64_t pos = 0;
    for (int q = 0; q < p; q++)
        pos += window_bytes(&h->ext[(size_t)key * CACHE_PARTS + q]);
    return pos;
}

/* Submits the slot's next chunk reads while the ring has room; returns false when the slot
 * still has reads to submit. */
static bool pump_slot(cache *c, uint32_t i)
{
    host_fill *h = fill_of(c);
    cache__slot *s = &c->slots[i];
    uint64_t cursor = h->cursor[i];
    for (int p = 0; p < CACHE_PARTS; p++) {
        const cache_extent *e = &h->ext[(size_t)s->key * CACHE_PARTS + p];
        uint64_t wb = window_bytes(e), w0 = align_down(e->offset, ALIGN),
                 pos = window_pos(h, s->key, p);
        if (cursor >= pos + wb) continue;
        while (cursor < pos + wb) {
            if (!cache__io_has_room(h->io)) {
                h->cursor[i] = cursor;
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
            uint64_t fsz = cache__io_file_size(h->io);
            uint64_t ask = file_off >= fsz ? 0 : (file_off + len > fsz ? fsz - file_off : len);
            if (cache__io_direct(h->io)) ask = align_up(ask, ALIGN);
            if (ask > len) ask = len;
            if (need > ask) ask = need; /* lets the read fail with -ENODATA: truncated file */
            h->reads_left[i]++;
            int rc = ask ? cache__io_submit(h->io, i, file_off, cache__slot_mem(c, i) + cursor,
                                            (uint32_t)ask, (uint32_t)need)
                         : 0;
            if (rc) {
                h->reads_left[i]--;
                if (!s->error) s->error = rc;
            } else if (!ask) {
                h->reads_left[i]--;
            }
            atomic_fetch_add(&c->st.bytes_read, ask);
            cursor += len;
        }
    }
    h->cursor[i] = cursor;
    return true;
}

static void pump(cache *c)
{
    host_fill *h = fill_of(c);
    while (h->q_len > 0) {
        uint32_t i = h->queue[h->q_head];
        if (!pump_slot(c, i)) break;
        h->q_head = (h->q_head + 1) % c->n_slots;
        h->q_len--;
        /* nothing to read (empty extents) or every submit failed */
        if (h->reads_left[i] == 0 && c->slots[i].state == SLOT_LOADING) cache__loaded(c, i, 0);
    }
}

static void host_start(cache *c, uint32_t i, int32_t key)
{
    host_fill *h = fill_of(c);
    h->reads_left[i] = 0;
    h->cursor[i] = 0;
    h->queue[(h->q_head + h->q_len) % c->n_slots] = i;
    h->q_len++;
    pump(c);
}

static void on_read(void *user, uint64_t tag, int result)
{
    cache *c = user;
    host_fill *h = fill_of(c);
    cache__slot *s = &c->slots[tag];
    atomic_fetch_add(&c->st.reads, 1);
    if (result) {
        if (!s->error) s->error = result;
        atomic_fetch_add(&c->st.read_errors, 1);
    }
    /* Ready when the last read is back and every chunk was submitted. */
    if (--h->reads_left[tag] == 0 && h->cursor[tag] >= window_pos(h, s->key, CACHE_PARTS))
        cache__loaded(c, (uint32_t)tag, 0);
}

static int host_progress(cache *c, bool wait, char *err, size_t err_size)
{
    host_fill *h = fill_of(c);
    int rc = cache__io_reap(h->io, wait, on_read, c);
    if (rc < 0) {
        snprintf(err, err_size, "reading experts from %s: io_uring: %s", c->o.path, strerror(-rc));
        return rc;
    }
    pump(c);
    rc = cache__io_flush(h->io);
    if (rc)
        snprintf(err, err_size, "reading experts from %s: io_uring submit: %s", c->o.path,
                 strerror(-rc));
    return rc;
}

static int host_flush(cache *c, char *err, size_t err_size)
{
    int rc = cache__io_flush(fill_of(c)->io);
    if (rc)
        snprintf(err, err_size, "reading experts from %s: io_uring submit: %s", c->o.path,
                 strerror(-rc));
    return rc;
}

static uint32_t host_in_flight(const cache *c)
{
    const host_fill *h = fill_of(c);
    return cache__io_in_flight(h->io) + h->q_len;
}

static void host_describe(const cache *c, int32_t key, int error, char *err, size_t err_size)
{
    uint64_t off = fill_of(c)->ext[(size_t)key * CACHE_PARTS].offset;
    snprintf(err, err_size, "reading expert %d of layer %d (file offset %llu) from %s: %s",
             key % c->o.n_expert, key / c->o.n_expert, (unsigned long long)off, c->o.path,
             error == -ENODATA ? "the file is truncated" : strerror(-error));
}

static void host_close(cache *c)
{
    host_fill *h = fill_of(c);
    if (!h) return;
    cache__io_close(&h->io); /* waits for reads in flight before their memory goes */
    if (c->arena) munmap(c->arena, c->arena_bytes);
    c->arena = NULL;
    free(h->ext);
    free(h->reads_left);
    free(h->cursor);
    free(h->queue);
    free(h);
    c->fill_state = NULL;
}

const cache__filler_ops cache__host_filler = {
    .start = host_start,
    .flush = host_flush,
    .progress = host_progress,
    .in_flight = host_in_flight,
    .describe = host_describe,
    .close = host_close,
};

bool cache__host_direct(const cache *c)
{
    return fill_of(c)->io && cache__io_direct(fill_of(c)->io);
}

bool cache__host_uring(const cache *c)
{
    return fill_of(c)->io && cache__io_uring(fill_of(c)->io);
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
    size_t n_keys = (size_t)opts->n_layer * (size_t)opts->n_expert;
    cache_opts o = *opts;
    if (!o.queue_depth) o.queue_depth = 32;
    if (!o.chunk_bytes) o.chunk_bytes = 1u << 20;
    o.chunk_bytes = (uint32_t)align_up(o.chunk_bytes, ALIGN);
    cache *c = NULL;
    int rc = cache__new(&c, &o, cache_slot_bytes(opts->extents, n_keys), "host", err, err_size);
    if (rc) return rc;
    host_fill *h = calloc(1, sizeof *h);
    if (!h) goto oom;
    c->fill = &cache__host_filler;
    c->fill_state = h;
    h->ext = malloc(n_keys * CACHE_PARTS * sizeof *h->ext);
    h->reads_left = calloc(c->n_slots, sizeof *h->reads_left);
    h->cursor = calloc(c->n_slots, sizeof *h->cursor);
    h->queue = calloc(c->n_slots, sizeof *h->queue);
    if (!h->ext || !h->reads_left || !h->cursor || !h->queue) goto oom;
    memcpy(h->ext, opts->extents, n_keys * CACHE_PARTS * sizeof *h->ext);
    for (size_t k = 0; k < n_keys; k++)
        for (int p = 0; p < CACHE_PARTS; p++) {
            const cache_extent *e = &h->ext[k * CACHE_PARTS + (size_t)p];
            c->part_off[k * CACHE_PARTS + (size_t)p] =
                window_pos(h, (int32_t)k, p) + (e->offset - align_down(e->offset, ALIGN));
            c->part_bytes[k * CACHE_PARTS + (size_t)p] = e->bytes;
        }
    if (!o.simulate) {
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
        rc = cache__io_open(&h->io, &c->o, err, err_size);
        if (rc) goto fail;
        cache__io_register(h->io, c->arena, c->arena_bytes);
    }
    if ((rc = cache__start(c, err, err_size))) goto fail;
    *out = c;
    return 0;
oom:
    rc = -ENOMEM;
    snprintf(err, err_size, "out of memory");
fail:
    cache__free(c);
    return rc;
}
