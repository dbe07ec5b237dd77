/*
 * strbuf — a growing, NUL-terminated text: what building a prompt, a message or a tool call's
 * text needs, on top of vec.h's doubling.
 *
 * Contract
 * - Zero-initialised is empty ({0}); data is NULL until the first add, then always
 *   NUL-terminated (the NUL not counted in len).  free(b.data) releases it.
 * - strbuf_add / strbuf_adds return 0 or -ENOMEM; on failure the text is as it was.  Several
 *   adds may be or'ed together and checked once: a failed add leaves the text unchanged, and
 *   the result is then not what was meant, so the caller must not use it.
 */
#ifndef MOE_BASE_STRBUF_H
#define MOE_BASE_STRBUF_H

#include "base/vec.h"

#include <errno.h>
#include <stddef.h>
#include <string.h>

typedef struct strbuf {
    char *data;
    size_t len, cap;
} strbuf;

static inline int strbuf_add(strbuf *b, const void *p, size_t n)
{
    if (vec_reserve(&b->data, &b->cap, b->len + n + 1, 1, 64) < 0) return -ENOMEM;
    if (n) memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = 0;
    return 0;
}

static inline int strbuf_adds(strbuf *b, const char *s)
{
    return strbuf_add(b, s, strlen(s));
}

#endif
