/*
 * tokenizer_nfc.c — Unicode normalisation form C, for the vocabularies whose Hugging Face
 * tokenizer normalises its input (Qwen2's tokenizer.json has an NFC normalizer; llama.cpp
 * leaves it out, so it and HF disagree on text such as "e" + U+0301).
 *
 * The textbook algorithm of UAX #15: full canonical decomposition (Hangul syllables by
 * arithmetic), canonical ordering of combining marks by class, then canonical composition
 * with the generated pair table (which already leaves out the composition exclusions).  Text
 * made only of code points below U+0300 is NFC by construction; that check costs one pass and
 * no allocation, and is what almost every prompt takes.
 */
#include "tokenizer/tokenizer_internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define RAW_BYTE 0x80000000u /* a byte that is not UTF-8, carried through unchanged */

enum {
    S_BASE = 0xac00,
    L_BASE = 0x1100,
    V_BASE = 0x1161,
    T_BASE = 0x11a7,
    L_COUNT = 19,
    V_COUNT = 21,
    T_COUNT = 28,
    N_COUNT = V_COUNT * T_COUNT,
    S_COUNT = L_COUNT * N_COUNT
};

static uint8_t ccc_of(uint32_t cp)
{
    return (cp & RAW_BYTE) ? 0 : tok__uc_ccc(cp);
}

/* Appends the full canonical decomposition of cp; out has room (4 per input code point). */
static size_t decompose(uint32_t cp, uint32_t *out, int depth)
{
    if (cp & RAW_BYTE) return out[0] = cp, 1;
    if (cp >= S_BASE && cp < S_BASE + S_COUNT) {
        uint32_t s = cp - S_BASE, t = s % T_COUNT;
        out[0] = L_BASE + s / N_COUNT;
        out[1] = V_BASE + (s % N_COUNT) / T_COUNT;
        if (t == 0) return 2;
        out[2] = T_BASE + t;
        return 3;
    }
    uint32_t d[2];
    int n = depth < 8 ? tok__uc_decomp(cp, d) : 0;
    if (n == 0) return out[0] = cp, 1;
    size_t k = decompose(d[0], out, depth + 1);
    if (n == 2) k += decompose(d[1], out + k, depth + 1);
    return k;
}

static uint32_t compose(uint32_t a, uint32_t b)
{
    if ((a | b) & RAW_BYTE) return 0;
    if (a >= L_BASE && a < L_BASE + L_COUNT && b >= V_BASE && b < V_BASE + V_COUNT)
        return S_BASE + ((a - L_BASE) * V_COUNT + (b - V_BASE)) * T_COUNT;
    if (a >= S_BASE && a < S_BASE + S_COUNT && (a - S_BASE) % T_COUNT == 0 && b > T_BASE &&
        b < T_BASE + T_COUNT)
        return a + (b - T_BASE);
    return tok__uc_compose(a, b);
}

/* A raw byte (invalid input kept as it was) or a code point. */
static size_t put_utf8(char *out, uint32_t cp)
{
    if (cp & RAW_BYTE) return out[0] = (char)(cp & 0xff), 1;
    return utf8_put(out, cp);
}

int tok__nfc(const char *text, size_t len, char **out, size_t *out_len)
{
    *out = NULL;
    *out_len = 0;
    size_t i = 0;
    while (i < len && (unsigned char)text[i] < 0xcc) /* lead bytes below 0xCC: U+0000..U+02FF */
        i++;
    if (i == len) return 0;
    uint32_t *cps = malloc((len * 4 + 4) * sizeof *cps);
    if (!cps) return -ENOMEM;
    size_t n = 0;
    for (i = 0; i < len;) {
        size_t k;
        uint32_t cp = utf8_next(text + i, len - i, &k);
        if (cp == UTF8_INVALID) cp = RAW_BYTE | (unsigned char)text[i];
        n += decompose(cp, cps + n, 0);
        i += k;
    }
    /* canonical ordering: a stable sort of each run of non-starters by combining class */
    for (size_t a = 0; a < n;) {
        if (ccc_of(cps[a]) == 0) {
            a++;
            continue;
        }
        size_t b = a;
        while (b < n && ccc_of(cps[b]) != 0)
            b++;
        for (size_t x = a + 1; x < b; x++) {
            uint32_t c = cps[x];
            uint8_t cc = ccc_of(c);
            size_t y = x;
            while (y > a && ccc_of(cps[y - 1]) > cc) {
                cps[y] = cps[y - 1];
                y--;
            }
            cps[y] = c;
        }
        a = b;
    }
    /* canonical composition (UAX #15's reference algorithm) */
    size_t m = 0;
    if (n > 0) {
        size_t starter = 0;
        uint32_t starter_cp = cps[0];
        int last_class = ccc_of(starter_cp) ? 256 : 0;
        m = 1;
        for (size_t x = 1; x < n; x++) {
            uint32_t c = cps[x];
            int cls = ccc_of(c);
            uint32_t comp = compose(starter_cp, c);
            if (comp && (last_class < cls || last_class == 0)) {
                cps[starter] = comp;
                starter_cp = comp;
                continue;
            }
            if (cls == 0) {
                starter = m;
                starter_cp = c;
            }
            last_class = cls;
            cps[m++] = c;
        }
    }
    char *o = malloc(m * 4 + 1);
    if (!o) {
        free(cps);
        return -ENOMEM;
    }
    size_t ol = 0;
    for (size_t x = 0; x < m; x++)
        ol += put_utf8(o + ol, cps[x]);
    o[ol] = '\0';
    free(cps);
    *out = o;
    *out_len = ol;
    return 0;
}
