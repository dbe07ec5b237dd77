/*
 * The paged KV cache: blocks of block_tokens positions, a block table per sequence.
 *
 * Why paged: a flat [n_seq][n_ctx] cache reserves every sequence's whole context up front,
 * which on a GPU is memory the expert tier could have used.  Here storage comes from the
 * backend in chunks of blocks as sequences grow, blocks go back to a free list when a sequence
 * is cleared, and the operations reach a position through the table.  Chunks are kept once
 * allocated (the high-water mark): a server at steady load reuses them without reallocating.
 *
 * The table lives twice: a host mirror that this file edits, and its device copy that the
 * operations read.  A reserve that adds blocks queues the changed span of the table on the
 * compute stream, so it is in place before any later operation reads it.
 *
 * Prefix reuse: a full block can be published under a key (the caller's hash of its tokens and
 * of every token before them), and a new sequence attaches the longest run of published blocks
 * its own keys name instead of computing them again — exact, because every position's K and V
 * depend only on the tokens up to it (the batch-invariance contract).  Blocks carry reference
 * counts; one that no sequence holds but that has a key stays in an LRU list, findable, until a
 * reserve needs a block and neither the free list nor a new chunk can give one.
 */
#include "kernels/kernels.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { DEFAULT_BLOCK_TOKENS = 16, CHUNK_TARGET_BYTES = 32 << 20 };

struct kern_kv {
    kern_backend *b;
    kern_kv_opts o;
    kern_kv_layout layout;
    void **table_host;  /* [n_seq][max_blocks] */
    int32_t *table_ids; /* the same, as block ids (-1: none) */
    void **table_dev;
    int32_t *n_held; /* blocks held per sequence */
    size_t block_bytes;
    int32_t blocks_per_chunk, max_chunks, n_chunks;
    void **chunks;
    void **block_ptr; /* [max_chunks * blocks_per_chunk] */
    uint16_t *refs;
    int32_t *free_ids;
    int32_t n_free, n_used;
    /* prefix reuse: per block its key (0: none) and its place in the LRU list of unheld keyed
     * blocks (oldest at lru_head); an open-addressed table from key to block */
    uint64_t *key_of;
    int32_t *lru_prev, *lru_next;
    int32_t lru_head, lru_tail, n_cached;
    int32_t *ht; /* [ht_size]: block id, -1 empty, -2 deleted */
    uint32_t ht_size;
    uint64_t evictions;
};

const char *kern_kv_type_name(kern_kv_type t)
{
    return t == KERN_KV_F32 ? "f32" : "f16";
}

void kern_kv_close(kern_kv **kvp)
{
    kern_kv *kv = *kvp;
    if (!kv) return;
    *kvp = NULL;
    for (int32_t c = 0; c < kv->n_chunks; c++)
        kern_free(kv->b, KERN_MEM_DEVICE, kv->chunks[c]);
    kern_free(kv->b, KERN_MEM_DEVICE, kv->table_dev);
    free(kv->table_host);
    free(kv->table_ids);
    free(kv->n_held);
    free(kv->chunks);
    free(kv->block_ptr);
    free(kv->refs);
    free(kv->key_of);
    free(kv->lru_prev);
    free(kv->lru_next);
    free(kv->ht);
    free(kv->free_ids);
    free(kv);
}

int kern_kv_open(kern_kv **out, kern_backend *b, const kern_kv_opts *opts, char *err,
                 size_t err_size)
{
    *out = NULL;
    kern_kv_opts o = *opts;
    if (!o.block_tokens) o.block_tokens = DEFAULT_BLOCK_TOKENS;
    if (!o.head_dim) o.head_dim = o.kv_dim;
    if (o.n_layer <= 0 || o.kv_dim <= 0 || o.n_seq <= 0 || o.n_ctx <= 0 || o.block_tokens <= 0 ||
        o.head_dim <= 0 || o.kv_dim % o.head_dim) {
        snprintf(err, err_size,
                 "KV cache: bad shape (%d layers, %d wide, %d sequences of %d, "
                 "blocks of %d)",
                 o.n_layer, o.kv_dim, o.n_seq, o.n_ctx, o.block_tokens);
        return -EINVAL;
    }
    kern_kv *kv = calloc(1, sizeof *kv);
    if (!kv) goto nomem;
    kv->b = b;
    kv->o = o;
    int32_t max_blocks = (o.n_ctx + o.block_tokens - 1) / o.block_tokens;
    size_t n_entries = (size_t)o.n_seq * (size_t)max_blocks;
    kv->block_bytes = (size_t)o.n_layer * (o.v_is_k ? 1 : 2) * (size_t)o.block_tokens *
                      (size_t)o.kv_dim * (o.type == KERN_KV_F16 ? 2 : 4);
    size_t per_chunk = CHUNK_TARGET_BYTES / kv->block_bytes;
    if (per_chunk < 1) per_chunk = 1;
    if (per_chunk > n_entries) per_chunk = n_entries;
    kv->blocks_per_chunk = (int32_t)per_chunk;
    kv->max_chunks = (int32_t)((n_entries + per_chunk - 1) / per_chunk);
    size_t max_ids = (size_t)kv->max_chunks * per_chunk;
    kv->table_host = calloc(n_entries, sizeof *kv->table_host);
    kv->table_ids = malloc(n_entries * sizeof *kv->table_ids);
    kv->n_held = calloc((size_t)o.n_seq, sizeof *kv->n_held);
    kv->chunks = calloc((size_t)kv->max_chunks, sizeof *kv->chunks);
    kv->block_ptr = calloc(max_ids, sizeof *kv->block_ptr);
    kv->refs = calloc(max_ids, sizeof *kv->refs);
    kv->free_ids = malloc(max_ids * sizeof *kv->free_ids);
    kv->key_of = calloc(max_ids, sizeof *kv->key_of);
    kv->lru_prev = malloc(max_ids * sizeof *kv->lru_prev);
    kv->lru_next = malloc(max_ids * sizeof *kv->lru_next);
    kv->ht_size = 16;
    while (kv->ht_size < 2 * max_ids)
        kv->ht_size *= 2;
    kv->ht = malloc(kv->ht_size * sizeof *kv->ht);
    if (!kv->table_host || !kv->table_ids || !kv->n_held || !kv->chunks || !kv->block_ptr ||
        !kv->refs || !kv->free_ids || !kv->key_of || !kv->lru_prev || !kv->lru_next || !kv->ht)
        goto nomem;
    for (uint32_t i = 0; i < kv->ht_size; i++)
        kv->ht[i] = -1;
    kv->lru_head = kv->lru_tail = -1;
    for (size_t i = 0; i < n_entries; i++)
        kv->table_ids[i] = -1;
    int rc = kern_alloc(b, KERN_MEM_DEVICE, n_entries * sizeof(void *), (void **)&kv->table_dev);
    if (rc) {
        snprintf(err, err_size, "KV cache: block table of %zu bytes: out of device memory",
                 n_entries * sizeof(void *));
        kern_kv_close(&kv);
        return rc;
    }
    rc = kern_copy(b, KERN_STREAM_COMPUTE, kv->table_dev, kv->table_host,
                   n_entries * sizeof(void *), KERN_COPY_TO_DEVICE);
    if (rc == 0) rc = kern_sync(b, err, err_size);
    if (rc) {
        kern_kv_close(&kv);
        return rc;
    }
    kv->layout = (kern_kv_layout){.table = kv->table_dev,
                                  .n_seq = o.n_seq,
                                  .max_blocks = max_blocks,
                                  .block_tokens = o.block_tokens,
                                  .n_layer = o.n_layer,
                                  .kv_dim = o.kv_dim,
                                  .head_dim = o.head_dim,
                                  .head_major = b->kind != KERN_BACKEND_CUDA,
                                  .v_is_k = o.v_is_k,
                                  .type = o.type};
    *out = kv;
    return 0;
nomem:
    kern_kv_close(&kv);
    snprintf(err, err_size, "KV cache: out of memory");
    return -ENOMEM;
}

static int grow(kern_kv *kv, char *err, size_t err_size)
{
    if (kv->n_chunks == kv->max_chunks) {
        snprintf(err, err_size, "KV cache: every block is in use");
        return -ENOSPC;
    }
    void *mem = NULL;
    size_t bytes = kv->block_bytes * (size_t)kv->blocks_per_chunk;
    int rc = kern_alloc(kv->b, KERN_MEM_DEVICE, bytes, &mem);
    if (rc) {
        snprintf(err, err_size,
                 "KV cache: %zu more bytes for %d blocks of %d positions: out of "
                 "%s memory",
                 bytes, kv->blocks_per_chunk, kv->o.block_tokens,
                 kv->b->kind == KERN_BACKEND_CPU ? "host" : "device");
        return rc;
    }
    /* Host memory is touched now, not block by block as sequences grow: the cache's bytes in
     * /metrics are then the memory the process holds (a soak that watches RSS sees it flat), and
     * no decode step takes the page faults. */
    if (kv->b->kind == KERN_BACKEND_CPU) memset(mem, 0, bytes);
    int32_t c = kv->n_chunks++;
    kv->chunks[c] = mem;
    /* Pushed in reverse so that blocks are handed out in address order. */
    for (int32_t i = kv->blocks_per_chunk - 1; i >= 0; i--) {
        int32_t id = c * kv->blocks_per_chunk + i;
        kv->block_ptr[id] = (uint8_t *)mem + (size_t)i * kv->block_bytes;
        kv->free_ids[kv->n_free++] = id;
    }
    return 0;
}

/* ---- prefix reuse --------------------------------------------------------------------------- */

static uint32_t ht_slot(const kern_kv *kv, uint64_t key)
{
    return (uint32_t)(key ^ (key >> 29)) & (kv->ht_size - 1);
}

/* The block published under key, or -1. */
static int32_t ht_find(const kern_kv *kv, uint64_t key)
{
    for (uint32_t i = ht_slot(kv, key), n = 0; n < kv->ht_size;
         i = (i + 1) & (kv->ht_size - 1), n++) {
        int32_t id = kv->ht[i];
        if (id == -1) return -1;
        if (id >= 0 && kv->key_of[id] == key) return id;
    }
    return -1;
}

static void ht_insert(kern_kv *kv, int32_t id)
{
    uint32_t i = ht_slot(kv, kv->key_of[id]);
    while (kv->ht[i] >= 0)
        i = (i + 1) & (kv->ht_size - 1);
    kv->ht[i] = id;
}

static void ht_remove(kern_kv *kv, int32_t id)
{
    for (uint32_t i = ht_slot(kv, kv->key_of[id]), n = 0; n < kv->ht_size;
         i = (i + 1) & (kv->ht_size - 1), n++) {
        if (kv->ht[i] == -1) return;
        if (kv->ht[i] == id) {
            kv->ht[i] = -2;
            return;
        }
    }
}

static void lru_unlink(kern_kv *kv, int32_t id)
{
    int32_t p = kv->lru_prev[id], n = kv->lru_next[id];
    if (p >= 0)
        kv->lru_next[p] = n;
    else
        kv->lru_head = n;
    if (n >= 0)
        kv->lru_prev[n] = p;
    else
        kv->lru_tail = p;
    kv->n_cached--;
}

static void lru_push(kern_kv *kv, int32_t id)
{
    kv->lru_prev[id] = kv->lru_tail;
    kv->lru_next[id] = -1;
    if (kv->lru_tail >= 0)
        kv->lru_next[kv->lru_tail] = id;
    else
        kv->lru_head = id;
    kv->lru_tail = id;
    kv->n_cached++;
}

/* The least recently released keyed block loses its key and goes to the free list. */
static void evict_oldest(kern_kv *kv)
{
    int32_t id = kv->lru_head;
    lru_unlink(kv, id);
    ht_remove(kv, id);
    kv->key_of[id] = 0;
    kv->free_ids[kv->n_free++] = id;
    kv->evictions++;
}

int32_t kern_kv_attach_prefix(kern_kv *kv, int32_t seq, const uint64_t *keys, int32_t n_keys,
                              char *err, size_t err_size)
{
    if (seq < 0 || seq >= kv->o.n_seq || kv->n_held[seq] != 0 || n_keys < 0) {
        snprintf(err, err_size, "KV cache: a prefix attaches only to an empty sequence");
        return -EINVAL;
    }
    if (n_keys > kv->layout.max_blocks) n_keys = kv->layout.max_blocks;
    size_t row = (size_t)seq * (size_t)kv->layout.max_blocks;
    int32_t n = 0;
    for (; n < n_keys; n++) {
        int32_t id = keys[n] ? ht_find(kv, keys[n]) : -1;
        if (id < 0) break;
        if (kv->refs[id]++ == 0) {
            lru_unlink(kv, id);
            kv->n_used++;
        }
        kv->table_ids[row + (size_t)n] = id;
        kv->table_host[row + (size_t)n] = kv->block_ptr[id];
    }
    kv->n_held[seq] = n;
    if (n == 0) return 0;
    int rc = kern_copy(kv->b, KERN_STREAM_COMPUTE, kv->table_dev + row, kv->table_host + row,
                       (size_t)n * sizeof(void *), KERN_COPY_TO_DEVICE);
    if (rc) {
        snprintf(err, err_size, "KV cache: updating the block table: %s", strerror(-rc));
        kern_kv_clear(kv, seq);
        return rc;
    }
    return n;
}

void kern_kv_publish(kern_kv *kv, int32_t seq, int32_t block, uint64_t key)
{
    if (seq < 0 || seq >= kv->o.n_seq || block < 0 || block >= kv->n_held[seq] || !key) return;
    int32_t id = kv->table_ids[(size_t)seq * (size_t)kv->layout.max_blocks + (size_t)block];
    if (kv->key_of[id] || ht_find(kv, key) >= 0) return; /* keyed already, or a twin is */
    kv->key_of[id] = key;
    ht_insert(kv, id);
}

void kern_kv_get_prefix_stats(const kern_kv *kv, kern_kv_prefix_stats *out)
{
    out->cached_blocks = kv->n_cached;
    out->evictions = kv->evictions;
}

int kern_kv_reserve(kern_kv *kv, int32_t seq, int32_t n_pos, char *err, size_t err_size)
{
    if (seq < 0 || seq >= kv->o.n_seq || n_pos < 0 || n_pos > kv->o.n_ctx) {
        snprintf(err, err_size, "KV cache: %d positions of sequence %d are outside %d x %d", n_pos,
                 seq, kv->o.n_seq, kv->o.n_ctx);
        return -EINVAL;
    }
    int32_t need = (n_pos + kv->o.block_tokens - 1) / kv->o.block_tokens;
    int32_t have = kv->n_held[seq];
    if (need <= have) return 0;
    size_t row = (size_t)seq * (size_t)kv->layout.max_blocks;
    for (int32_t i = have; i < need; i++) {
        if (kv->n_free == 0 && kv->n_chunks < kv->max_chunks) {
            int rc = grow(kv, err, err_size);
            if (rc) return rc;
        }
        if (kv->n_free == 0 && kv->lru_head >= 0) evict_oldest(kv);
        if (kv->n_free == 0) {
            snprintf(err, err_size, "KV cache: every block is in use");
            return -ENOSPC;
        }
        int32_t id = kv->free_ids[--kv->n_free];
        kv->refs[id] = 1;
        kv->table_ids[row + (size_t)i] = id;
        kv->table_host[row + (size_t)i] = kv->block_ptr[id];
        kv->n_held[seq] = i + 1;
        kv->n_used++;
    }
    int rc = kern_copy(kv->b, KERN_STREAM_COMPUTE, kv->table_dev + row + have,
                       kv->table_host + row + have, (size_t)(need - have) * sizeof(void *),
                       KERN_COPY_TO_DEVICE);
    if (rc) snprintf(err, err_size, "KV cache: updating the block table: %s", strerror(-rc));
    return rc;
}

void kern_kv_clear(kern_kv *kv, int32_t seq)
{
    if (seq < 0 || seq >= kv->o.n_seq) return;
    size_t row = (size_t)seq * (size_t)kv->layout.max_blocks;
    for (int32_t i = 0; i < kv->n_held[seq]; i++) {
        int32_t id = kv->table_ids[row + (size_t)i];
        kv->table_ids[row + (size_t)i] = -1;
        kv->table_host[row + (size_t)i] = NULL;
        if (--kv->refs[id] == 0) {
            if (kv->key_of[id])
                lru_push(kv, id); /* findable until its memory is needed */
            else
                kv->free_ids[kv->n_free++] = id;
            kv->n_used--;
        }
    }
    while (kv->o.max_cached_blocks > 0 && kv->n_cached > kv->o.max_cached_blocks)
        evict_oldest(kv); /* the configured budget, before the memory's */
    /* The device table keeps stale pointers: no operation reads past what a later reserve
     * rewrites, and rewriting it here would cost a copy per finished request. */
    kv->n_held[seq] = 0;
}

const kern_kv_layout *kern_kv_get_layout(const kern_kv *kv)
{
    return &kv->layout;
}

size_t kern_kv_allocated_bytes(const kern_kv *kv)
{
    return (size_t)kv->n_chunks * (size_t)kv->blocks_per_chunk * kv->block_bytes;
}

size_t kern_kv_block_bytes(const kern_kv *kv)
{
    return kv->block_bytes;
}

int32_t kern_kv_blocks_used(const kern_kv *kv)
{
    return kv->n_used;
}
