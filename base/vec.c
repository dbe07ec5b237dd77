/*
 * vec.c — the capacity growth of vec.h.  Doubling keeps appends amortised O(1); the overflow
 * checks matter because some needs come from untrusted sizes (a GGUF's counts, a request).
 */
#include "base/vec.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int vec_grow(void *items_ptr, size_t *cap, size_t need, size_t elem_bytes, size_t min_cap)
{
    if (need <= *cap) return 0;
    size_t grown = *cap ? *cap : (min_cap ? min_cap : 1);
    while (grown < need)
        grown = grown > SIZE_MAX / 2 ? need : grown * 2;
    if (elem_bytes && grown > SIZE_MAX / elem_bytes) return -ENOMEM;
    /* The pointer is read and written through memcpy so that any T ** may be passed. */
    void *items;
    memcpy(&items, items_ptr, sizeof items);
    void *p = realloc(items, grown * elem_bytes);
    if (!p) return -ENOMEM;
    memcpy(items_ptr, &p, sizeof p);
    *cap = grown;
    return 0;
}
