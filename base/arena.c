/*
 * arena.c — a list of blocks, newest first; an allocation takes the front of the newest block
 * or starts a new one.  The space left in a block that could not hold a request is given up
 * rather than searched later: arenas here live for one request or one template, so the waste
 * is bounded by one block per oversized request and the bookkeeping stays a pointer bump.
 */
#include "base/arena.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

struct arena_block {
    arena_block *next;
    size_t used, cap;
    _Alignas(16) unsigned char data[];
};

void arena_init(arena *a, size_t block_bytes)
{
    a->head = NULL;
    a->block_bytes = block_bytes;
}

void *arena_alloc(arena *a, size_t size)
{
    if (size > SIZE_MAX - 15) return NULL;
    size = (size + 15) & ~(size_t)15;
    arena_block *b = a->head;
    if (!b || b->cap - b->used < size) {
        size_t block = a->block_bytes ? a->block_bytes : ARENA_DEFAULT_BLOCK;
        size_t cap = size > block ? size : block;
        if (cap > SIZE_MAX - sizeof *b) return NULL;
        b = malloc(sizeof *b + cap);
        if (!b) return NULL;
        b->next = a->head;
        b->used = 0;
        b->cap = cap;
        a->head = b;
    }
    void *p = b->data + b->used;
    b->used += size;
    memset(p, 0, size);
    return p;
}

char *arena_strndup(arena *a, const char *s, size_t n)
{
    if (n == SIZE_MAX) return NULL;
    char *p = arena_alloc(a, n + 1);
    if (p && n) memcpy(p, s, n);
    return p;
}

void arena_release(arena *a)
{
    while (a->head) {
        arena_block *next = a->head->next;
        free(a->head);
        a->head = next;
    }
}
