/*
 * utf8 — the one UTF-8 decoder, validator and encoder every module uses.
 *
 * Contract
 * - Two readings of bytes, because the modules need both:
 *   strict (utf8_check, utf8_next, utf8_valid_prefix): well-formed UTF-8 as Unicode's
 *     chapter 3 defines it — no overlong forms, no surrogates, nothing above U+10FFFF.  For
 *     text that must be valid (stop strings, JSON output, the tokenizer's input, streams).
 *   lax (utf8_is_cont, utf8_count, utf8_span, utf8_span_back, utf8_next_lax): a character is a
 *     byte that is not a continuation byte (10xxxxxx) and the continuation bytes after it,
 *     nothing is validated.  For code that counts and slices text the way Python counts a str
 *     without refusing what it cannot decode (the chat templates).
 * - utf8_check() covers streaming and replacement: it tells a sequence cut short by the end of
 *   the input (*incomplete: keep the bytes and wait for more) from one that can never become a
 *   character, and gives the length of the maximal invalid subpart, the unit that Python's
 *   decode(errors="replace") turns into one U+FFFD.
 * - Pure functions over caller memory: no allocation, no state, any thread.  Lengths are in
 *   bytes; nothing needs a NUL terminator.
 */
#ifndef MOE_BASE_UTF8_H
#define MOE_BASE_UTF8_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* What utf8_next() returns for a byte that starts no valid character. */
#define UTF8_INVALID 0xffffffffu
/* U+FFFD REPLACEMENT CHARACTER, 3 bytes. */
#define UTF8_REPLACEMENT "\xef\xbf\xbd"

/* ---- strict ----------------------------------------------------------------------------- */

/* Length (1..4) of the valid character at s[0..len), len > 0, or 0 when the bytes are not one.
 * On 0, *incomplete says the bytes are a valid prefix that the input ends inside, and *bad_at
 * is the length of the maximal invalid subpart (1 when the first byte can start nothing). */
size_t utf8_check(const char *s, size_t len, bool *incomplete, size_t *bad_at);

/* Decodes the character at s[0..len), len > 0, and sets *n to its length; a byte that starts
 * no valid character gives UTF8_INVALID with *n = 1. */
uint32_t utf8_next(const char *s, size_t len, size_t *n);

/* Bytes before the first invalid (or cut-short) sequence: len when s[0..len) is valid. */
size_t utf8_valid_prefix(const char *s, size_t len);

/* ---- lax -------------------------------------------------------------------------------- */

static inline bool utf8_is_cont(char c)
{
    return ((unsigned char)c & 0xc0) == 0x80;
}

/* Characters in s[0..n): the bytes that are not continuation bytes. */
size_t utf8_count(const char *s, size_t n);

/* Length of the character at s: 1 + the continuation bytes after s[0], within n (n > 0). */
size_t utf8_span(const char *s, size_t n);

/* Length of the character that ends s[0..n) (n > 0): the continuation bytes at the end and
 * the byte before them, within n. */
size_t utf8_span_back(const char *s, size_t n);

/* The code point of the character at s (utf8_span's length, into *n) computed from its lead
 * byte and continuation bits without validation: the value a valid character has. */
uint32_t utf8_next_lax(const char *s, size_t n, size_t *len);

/* ---- encoding --------------------------------------------------------------------------- */

/* Writes code point cp (< 0x110000: the caller's contract) into out, which has room for 4
 * bytes; returns how many it wrote.  Inline: it sits in inner loops of the tokenizer. */
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
