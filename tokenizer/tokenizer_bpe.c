/*
 * tokenizer_bpe.c — byte-level BPE (tokenizer.ggml.model = gpt2): the pre-tokenizer that splits
 * text into words, then merges by rank inside each word.
 *
 * The pre-tokenizers (the split into words) are tokenizer_pre.c's.
 *
 * Merging keeps the word as a linked list of symbols and a binary heap of candidate pairs ordered
 * by (rank, position), so a word of n bytes costs O(n log n) however it is shaped — a long run of
 * one character must not be quadratic on a server.  Stale heap entries are recognised on pop.
 */
#include "tokenizer/tokenizer_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- loading ---------------------------------------------------------------------------- */

static void map_free(tok_map64 *m)
{
    free(m->keys);
    free(m->vals);
    m->keys = m->vals = NULL;
}

static uint64_t mix64(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    return x;
}

bool tok__map64_get(const tok_map64 *m, uint64_t key, uint64_t *val)
{
    if (!m->keys) return false;
    for (size_t i = (size_t)mix64(key) & m->mask;; i = (i + 1) & m->mask) {
        if (m->keys[i] == key) {
            *val = m->vals[i];
            return true;
        }
        if (m->keys[i] == UINT64_MAX) return false;
    }
}

/* First insertion wins: a merge listed twice keeps its better (lower) rank. */
static void map_put(tok_map64 *m, uint64_t key, uint64_t val)
{
    for (size_t i = (size_t)mix64(key) & m->mask;; i = (i + 1) & m->mask) {
        if (m->keys[i] == key) return;
        if (m->keys[i] == UINT64_MAX) {
            m->keys[i] = key;
            m->vals[i] = val;
            return;
        }
    }
}

/* GPT-2's byte <-> character map: printable bytes stand for themselves, the others are moved to
 * U+0100 and up in byte order. */
static uint32_t byte_to_cp(int b)
{
    if ((b >= '!' && b <= '~') || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff))
        return (uint32_t)b;
    int n = 0;
    for (int x = 0; x < b; x++)
        if (!((x >= '!' && x <= '~') || (x >= 0xa1 && x <= 0xac) || (x >= 0xae && x <= 0xff))) n++;
    return 256u + (uint32_t)n;
}

static int decode_tables(tokenizer *t, char *err, size_t err_size)
{
    int cp_to_byte[324];
    for (int i = 0; i < 324; i++)
        cp_to_byte[i] = -1;
    for (int b = 0; b < 256; b++) {
        uint32_t cp = byte_to_cp(b);
        char u[4];
        size_t n = utf8_put(u, cp);
        cp_to_byte[cp] = b;
        /* some vocabularies (GPT-NeoX's) lack a few bytes that never occur in UTF-8; such a
         * byte is dropped when encoding, as HF's BPE without an unk token does */
        t->byte_token[b] = tokenizer_find(t, u, n);
        /* DeepSeek adds the characters of such bytes as user-defined tokens: those stand for
         * the character (HF splits them out of the text), not for the byte */
        if (t->byte_token[b] >= 0 && t->tokens[t->byte_token[b]].type != TOKENIZER_TT_NORMAL)
            t->byte_token[b] = -1;
    }
    size_t total = 0;
    for (int32_t i = 0; i < t->n_vocab; i++)
        total += t->tokens[i].len;
    t->dec = malloc(total + 1);
    if (!t->dec) {
        snprintf(err, err_size, "tokenizer: out of memory");
        return -ENOMEM;
    }
    size_t off = 0;
    for (int32_t i = 0; i < t->n_vocab; i++) {
        tok_token *tk = &t->tokens[i];
        const char *s = t->text + tk->off;
        tk->dec_off = (uint32_t)off;
        if (tk->type == TOKENIZER_TT_NORMAL || tk->type == TOKENIZER_TT_UNUSED ||
            tk->type == TOKENIZER_TT_UNDEFINED || tk->type == TOKENIZER_TT_BYTE) {
            /* characters outside the byte map are kept as they are, as HF's decoder does */
            for (size_t k = 0; k < tk->len;) {
                size_t n;
                uint32_t cp = utf8_next(s + k, tk->len - k, &n);
                if (cp < 324 && cp_to_byte[cp] >= 0)
                    t->dec[off++] = (char)cp_to_byte[cp];
                else {
                    memcpy(t->dec + off, s + k, n);
                    off += n;
                }
                k += n;
            }
        } else {
            memcpy(t->dec + off, s, tk->len);
            off += tk->len;
        }
        tk->dec_len = (uint32_t)(off - tk->dec_off);
    }
    return 0;
}

int tok__bpe_load(tokenizer *t, const gguf_file *f, char *err, size_t err_size)
{
    gguf_arr merges;
    int rc = gguf_get_arr(f, "tokenizer.ggml.merges", &merges);
    if (rc == -ENOENT) {
        snprintf(err, err_size,
                 "tokenizer: tokenizer.ggml.merges is missing (needed by a gpt2 vocabulary)");
        return -EINVAL;
    }
    if (rc < 0 || merges.elem_type != GGUF_VT_STRING) {
        snprintf(err, err_size, "tokenizer: tokenizer.ggml.merges is not an array of strings");
        return -EINVAL;
    }
    if ((rc = decode_tables(t, err, err_size)) < 0) return rc;
    size_t cap = 16;
    while (cap < merges.n * 2)
        cap <<= 1;
    t->merges.keys = malloc(cap * sizeof *t->merges.keys);
    t->merges.vals = malloc(cap * sizeof *t->merges.vals);
    if (!t->merges.keys || !t->merges.vals) {
        map_free(&t->merges);
        snprintf(err, err_size, "tokenizer: out of memory");
        return -ENOMEM;
    }
    memset(t->merges.keys, 0xff, cap * sizeof *t->merges.keys);
    t->merges.mask = cap - 1;
    char *buf = NULL;
    size_t buf_cap = 0;
    for (uint64_t r = 0; r < merges.n; r++) {
        gguf_str s = merges.items[r].v.str;
        /* "left right": the separator is the first space after the first byte, as llama.cpp
         * reads it (byte-level tokens never contain a plain space) */
        const char *sp = s.len > 1 ? memchr(s.data + 1, ' ', s.len - 1) : NULL;
        if (!sp) {
            snprintf(err, err_size,
                     "tokenizer: tokenizer.ggml.merges[%llu] '%.*s' is not two tokens separated by "
                     "a space",
                     (unsigned long long)r, (int)(s.len > 64 ? 64 : s.len), s.data);
            rc = -EINVAL;
            break;
        }
        size_t ll = (size_t)(sp - s.data), rl = s.len - ll - 1;
        int32_t left = tokenizer_find(t, s.data, ll);
        int32_t right = tokenizer_find(t, sp + 1, rl);
        if (vec_reserve(&buf, &buf_cap, ll + rl, 1, 64) < 0) {
            rc = -ENOMEM;
            snprintf(err, err_size, "tokenizer: out of memory");
            break;
        }
        memcpy(buf, s.data, ll);
        memcpy(buf + ll, sp + 1, rl);
        int32_t merged = left >= 0 && right >= 0 ? tokenizer_find(t, buf, ll + rl) : -1;
        if (merged < 0) {
            snprintf(err, err_size,
                     "tokenizer: tokenizer.ggml.merges[%llu] '%.*s' names a token that is not in "
                     "tokenizer.ggml.tokens",
                     (unsigned long long)r, (int)(s.len > 64 ? 64 : s.len), s.data);
            rc = -EINVAL;
            break;
        }
        map_put(&t->merges, ((uint64_t)(uint32_t)left << 32) | (uint32_t)right,
                (r << 32) | (uint32_t)merged);
    }
    free(buf);
    return rc;
}

typedef struct sym {
    int32_t id;
    int32_t prev, next; /* -1 at the ends */
} sym;

typedef struct cand {
    uint32_t rank;
    int32_t left, right;
    int32_t lid, rid, merged;
} cand;

static bool cand_before(const cand *x, const cand *y)
{
    return x->rank != y->rank ? x->rank < y->rank : x->left < y->left;
}

typedef struct bpe_work {
    sym *syms;
    cand *heap;
    size_t n_heap, cap;
    char *buf; /* byte-level text of the word, for the ignore_merges lookup */
} bpe_work;

static void heap_push(bpe_work *w, cand c)
{
    size_t i = w->n_heap++;
    w->heap[i] = c;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!cand_before(&w->heap[i], &w->heap[p])) break;
        cand tmp = w->heap[p];
        w->heap[p] = w->heap[i];
        w->heap[i] = tmp;
        i = p;
    }
}

static cand heap_pop(bpe_work *w)
{
    cand top = w->heap[0];
    w->heap[0] = w->heap[--w->n_heap];
    size_t i = 0;
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < w->n_heap && cand_before(&w->heap[l], &w->heap[m])) m = l;
        if (r < w->n_heap && cand_before(&w->heap[r], &w->heap[m])) m = r;
        if (m == i) break;
        cand tmp = w->heap[m];
        w->heap[m] = w->heap[i];
        w->heap[i] = tmp;
        i = m;
    }
    return top;
}

static void try_pair(const tokenizer *t, bpe_work *w, int32_t l, int32_t r)
{
    if (l < 0 || r < 0 || w->syms[l].id < 0 || w->syms[r].id < 0) return;
    uint64_t v;
    uint64_t key = ((uint64_t)(uint32_t)w->syms[l].id << 32) | (uint32_t)w->syms[r].id;
    if (!tok__map64_get(&t->merges, key, &v)) return;
    heap_push(
        w, (cand){(uint32_t)(v >> 32), l, r, w->syms[l].id, w->syms[r].id, (int32_t)(uint32_t)v});
}

/* Byte-level BPE of one word (bytes [a, b) of the text). */
static int bpe_word(const tokenizer *t, const char *text, size_t a, size_t b, bpe_work *w,
                    tok_ids *ids)
{
    size_t n = b - a;
    if (t->ignore_merges) {
        size_t o = 0;
        for (size_t k = a; k < b; k++)
            o += utf8_put(w->buf + o, byte_to_cp((unsigned char)text[k]));
        int32_t id = tokenizer_find(t, w->buf, o);
        if (id >= 0) return tok__ids_push(ids, id);
    }
    for (size_t k = 0; k < n; k++)
        w->syms[k] = (sym){t->byte_token[(unsigned char)text[a + k]], (int32_t)k - 1,
                           k + 1 < n ? (int32_t)k + 1 : -1};
    w->n_heap = 0;
    for (size_t k = 0; k + 1 < n; k++)
        try_pair(t, w, (int32_t)k, (int32_t)k + 1);
    while (w->n_heap > 0) {
        cand c = heap_pop(w);
        sym *L = &w->syms[c.left];
        if (L->id != c.lid || L->next != c.right || w->syms[c.right].id != c.rid)
            continue; /* stale: one side has merged since */
        sym *R = &w->syms[c.right];
        L->id = c.merged;
        L->next = R->next;
        if (R->next >= 0) w->syms[R->next].prev = c.left;
        R->id = -1; /* dead */
        R->prev = R->next = -1;
        try_pair(t, w, L->prev, c.left);
        try_pair(t, w, c.left, L->next);
    }
    for (int32_t k = 0; k >= 0; k = w->syms[k].next) {
        if (w->syms[k].id < 0) continue;
        int rc = tok__ids_push(ids, w->syms[k].id);
        if (rc < 0) return rc;
    }
    return 0;
}

int tok__bpe_encode(const tokenizer *t, const char *text, size_t len, tok_ids *ids)
{
    tok_cps c = {0};
    tok_spans words = {0};
    bpe_work w = {0};
    char *normalized = NULL;
    size_t nlen;
    int rc = t->nfc ? tok__nfc(text, len, &normalized, &nlen) : 0;
    if (rc < 0) return rc;
    if (normalized) {
        text = normalized;
        len = nlen;
    }
    rc = tok__cps_from_utf8(text, len, &c);
    if (rc == 0) rc = tok__pre_tokenize(&c, t->pre, &words);
    if (rc == 0 && len > 0) {
        w.syms = malloc(len * sizeof *w.syms);
        w.heap = malloc((3 * len + 1) * sizeof *w.heap);
        w.buf = malloc(len * 2 + 1);
        if (!w.syms || !w.heap || !w.buf) rc = -ENOMEM;
    }
    for (size_t k = 0; k < words.n && rc == 0; k++)
        rc = bpe_word(t, text, c.off[words.v[k].a], c.off[words.v[k].b], &w, ids);
    free(w.syms);
    free(w.heap);
    free(w.buf);
    free(words.v);
    tok__cps_release(&c);
    free(normalized);
    return rc;
}
