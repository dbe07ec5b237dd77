/*
 * utf8 — the one UTF-8 encoder the model folder's text modules share (tokenizer, templates).
 * Header-only: a few instructions that sit in inner loops of both.
 *
 * utf8_put() writes code point cp (< 0x110000; the caller's contract) into out, which has room
 * for 4 bytes, and returns how many it wrote.
 */
#ifndef MOE_UTF8_H
#define MOE_UTF8_H

#include <stddef.h>
#include <stdint.h>

static inline size_t utf8_put(char *out, uint32_t cp)
{
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xc0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3f));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xe0 | (cp >> 12));
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
        out[2] = (char)(0x80 | (cp & 0x3f));
        return 3;
    }
    out[0] = (char)(0xf0 | (cp >> 18));
    out[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
    out[3] = (char)(0x80 | (cp & 0x3f));
    return 4;
}

#endif
