/*
 * utf8.c — the strict and lax readings of utf8.h.
 *
 * The strict check walks the table of well-formed byte sequences in Unicode's chapter 3
 * (Table 3-7): the second byte's range depends on the lead byte (E0: A0..BF, ED: 80..9F,
 * F0: 90..BF, F4: 80..8F), which is what rules out overlong forms, surrogates and code points
 * above U+10FFFF without decoding first.  Stopping at the first byte outside the range is also
 * what gives the maximal invalid subpart.
 */
#include "base/utf8.h"

size_t utf8_check(const char *str, size_t len, bool *incomplete, size_t *bad_at)
{
    const unsigned char *s = (const unsigned char *)str;
    unsigned char b = s[0];
    size_t need;
    unsigned char lo = 0x80, hi = 0xbf;
    *incomplete = false;
    *bad_at = 1;
    if (b < 0x80) return 1;
    if (b >= 0xc2 && b <= 0xdf)
        need = 2;
    else if (b >= 0xe0 && b <= 0xef) {
        need = 3;
        if (b == 0xe0) lo = 0xa0;
        if (b == 0xed) hi = 0x9f;
    } else if (b >= 0xf0 && b <= 0xf4) {
        need = 4;
        if (b == 0xf0) lo = 0x90;
        if (b == 0xf4) hi = 0x8f;
    } else
        return 0;
    for (size_t k = 1; k < need; k++) {
        if (k >= len) {
            *incomplete = true;
            *bad_at = k;
            return 0;
        }
        unsigned char c = s[k];
        if (c < lo || c > hi) {
            *bad_at = k;
            return 0;
        }
        lo = 0x80;
        hi = 0xbf;
    }
    return need;
}

uint32_t utf8_next(const char *s, size_t len, size_t *n)
{
    const unsigned char *u = (const unsigned char *)s;
    bool incomplete;
    size_t bad_at;
    size_t k = utf8_check(s, len, &incomplete, &bad_at);
    if (k == 0) {
        *n = 1;
        return UTF8_INVALID;
    }
    *n = k;
    switch (k) {
    case 1:
        return u[0];
    case 2:
        return ((uint32_t)(u[0] & 0x1f) << 6) | (u[1] & 0x3f);
    case 3:
        return ((uint32_t)(u[0] & 0x0f) << 12) | ((uint32_t)(u[1] & 0x3f) << 6) | (u[2] & 0x3f);
    default:
        return ((uint32_t)(u[0] & 0x07) << 18) | ((uint32_t)(u[1] & 0x3f) << 12) |
               ((uint32_t)(u[2] & 0x3f) << 6) | (u[3] & 0x3f);
    }
}

size_t utf8_valid_prefix(const char *s, size_t len)
{
    size_t i = 0;
    while (i < len) {
        bool incomplete;
        size_t bad_at;
        size_t k = utf8_check(s + i, len - i, &incomplete, &bad_at);
        if (k == 0) return i;
        i += k;
    }
    return len;
}

size_t utf8_count(const char *s, size_t n)
{
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        k += !utf8_is_cont(s[i]);
    return k;
}

size_t utf8_span(const char *s, size_t n)
{
    size_t k = 1;
    while (k < n && utf8_is_cont(s[k]))
        k++;
    return k;
}

size_t utf8_span_back(const char *s, size_t n)
{
    size_t k = 1;
    while (k < n && utf8_is_cont(s[n - k]))
        k++;
    return k;
}

uint32_t utf8_next_lax(const char *s, size_t n, size_t *len)
{
    size_t k = utf8_span(s, n);
    *len = k;
    unsigned char c = (unsigned char)s[0];
    if (k == 1) return c;
    uint32_t cp = k == 2 ? (c & 0x1f) : k == 3 ? (c & 0x0f) : (c & 0x07);
    for (size_t j = 1; j < k; j++)
        cp = (cp << 6) | ((unsigned char)s[j] & 0x3f);
    return cp;
}
