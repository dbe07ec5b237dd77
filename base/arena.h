/*
 * arena — a region allocator: many small zeroed allocations, freed all at once.
 *
 * Contract
 * - An arena is a value embedded in its owner (a parsed template, a render, an HTTP request).
 *   A zeroed arena is ready to use with blocks of ARENA_DEFAULT_BLOCK bytes; arena_init()
 *   picks another block size.  arena_release() frees every block at once; the arena is then
 *   empty and may be used again.  Nothing is freed piecemeal, so code that fails from any
 *   depth (a longjmp out of a parser) leaks nothing as long as the owner releases the arena.
 * - arena_alloc() returns zeroed memory aligned to 16 bytes (max_align_t on x86-64), or NULL
 *   when out of memory; a request bigger than the block size gets a block of its own.
 *   Pointers stay valid until arena_release().
 * - One arena belongs to one thread at a time; different arenas are independent.
 */
#ifndef MOE_BASE_ARENA_H
#define MOE_BASE_ARENA_H

#include <stddef.h>

enum { ARENA_DEFAULT_BLOCK = 4096 };

typedef struct arena_block arena_block;

typedef struct arena {
    arena_block *head;  /* the block being filled; older ones follow */
    size_t block_bytes; /* 0: ARENA_DEFAULT_BLOCK */
} arena;

/* Empty arena with blocks of block_bytes (0: the default). */
void arena_init(arena *a, size_t block_bytes);
void *arena_alloc(arena *a, size_t size);
/* n bytes of s and a NUL; NULL when out of memory. */
char *arena_strndup(arena *a, const char *s, size_t n);
/* Frees every block; the block size is kept. */
void arena_release(arena *a);

#endif
