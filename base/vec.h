/*
 * vec — growing a malloc'd array by doubling: the capacity arithmetic every growable buffer
 * in moeserve shares (token ids, spans, tokens, KV entries, text buffers).
 *
 * Contract
 * - The array stays the caller's: a pointer and a capacity in elements, kept wherever the
 *   caller likes (a struct, two locals).  vec_reserve() makes it hold at least `need`
 *   elements: the capacity grows from min_cap (when it is 0) by doubling until it is enough,
 *   and the array is realloc'd once.  Elements past the old capacity are uninitialised.
 * - On failure (out of memory, or a size that does not fit in size_t) it returns -ENOMEM and
 *   leaves the array and the capacity as they were, so the caller frees what it had as usual.
 * - items_ptr is the address of the array pointer (a T ** for any object type T).
 * - No state of its own: any thread, on arrays that thread owns.  free() the array as usual.
 */
#ifndef MOE_BASE_VEC_H
#define MOE_BASE_VEC_H

#include <stddef.h>

/* The slow path of vec_reserve(); call vec_reserve(). */
int vec_grow(void *items_ptr, size_t *cap, size_t need, size_t elem_bytes, size_t min_cap);

/* 0 when *items_ptr holds at least need elements of elem_bytes (growing it if needed), or
 * -ENOMEM.  The common case (room left) costs one comparison. */
static inline int vec_reserve(void *items_ptr, size_t *cap, size_t need, size_t elem_bytes,
                              size_t min_cap)
{
    return need <= *cap ? 0 : vec_grow(items_ptr, cap, need, elem_bytes, min_cap);
}

#endif
