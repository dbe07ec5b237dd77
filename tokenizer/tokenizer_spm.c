/*
 * tokenizer_spm.c — SentencePiece BPE (tokenizer.ggml.model = llama).
 *
 * The text gets a dummy space in front when asked, every space becomes U+2581, and the
 * characters are merged pairwise: always the adjacent pair whose concatenation is the vocabulary
 * piece with the highest score (leftmost on ties), as sentencepiece's bpe_model.cc does.  Only
 * NORMAL and USER_DEFINED pieces take part (sentencepiece keeps control and byte pieces apart).
 * A symbol left over that is not a piece is written as its bytes' <0xNN> tokens (byte
 * fallback), or <unk> when the vocabulary has no byte tokens.  Candidates sit in a binary heap;
 * an entry whose two sides have changed since it was pushed is recognised by its length.
 */
#include "tokenizer/tokenizer_internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

typedef struct spm_sym {
    size_t off, len; /* bytes in the escaped text; len 0 = merged away */
    int32_t prev, next;
} spm_sym;

typedef struct spm_cand {
    float score;
    int32_t left, right;
    size_t len;
} spm_cand;

static bool cand_before(const spm_cand *x, const spm_cand *y)
{
    return x->score != y->score ? x->score > y->score : x->left < y->left;
}

typedef struct spm_heap {
    spm_cand *v;
    size_t n;
} spm_heap;

static void heap_push(spm_heap *h, spm_cand c)
{
    size_t i = h->n++;
    h->v[i] = c;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!cand_before(&h->v[i], &h->v[p])) break;
        spm_cand tmp = h->v[p];
        h->v[p] = h->v[i];
        h->v[i] = tmp;
        i = p;
    }
}

static spm_cand heap_pop(spm_heap *h)
{
    spm_cand top = h->v[0];
    h->v[0] = h->v[--h->n];
    size_t i = 0;
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < h->n && cand_before(&h->v[l], &h->v[m])) m = l;
        if (r < h->n && cand_before(&h->v[r], &h->v[m])) m = r;
        if (m == i) break;
        spm_cand tmp = h->v[m];
        h->v[m] = h->v[i];
        h->v[i] = tmp;
        i = m;
    }
    return top;
}

/* A vocabulary piece that merging may produce or a final symbol may be written as. */
static int32_t find_piece(const tokenizer *t, const char *s, size_t len)
{
    int32_t id = tokenizer_find(t, s, len);
    if (id < 0) return -1;
    uint8_t ty = t->tokens[id].type;
    return ty == TOKENIZER_TT_NORMAL || ty == TOKENIZER_TT_USER_DEFINED ? id : -1;
}

static void try_pair(const tokenizer *t, const char *buf, const spm_sym *syms, spm_heap *h,
                     int32_t l, int32_t r)
{
    if (l < 0 || r < 0) return;
    size_t len = syms[l].len + syms[r].len;
    int32_t id = find_piece(t, buf + syms[l].off, len);
    if (id >= 0) heap_push(h, (spm_cand){t->tokens[id].score, l, r, len});
}

static int emit_symbol(const tokenizer *t, const char *s, size_t len, tok_ids *ids)
{
    int32_t id = find_piece(t, s, len);
    if (id >= 0) return tok__ids_push(ids, id);
    for (size_t k = 0; k < len; k++) {
        int32_t b = t->byte_token[(unsigned char)s[k]];
        int rc;
        if (b >= 0)
            rc = tok__ids_push(ids, b);
        else if (t->unk >= 0) {
            /* one <unk> for the whole character, as sentencepiece writes it */
            rc = tok__ids_push(ids, t->unk);
            k = len;
        } else
            return -EINVAL;
        if (rc < 0) return rc;
    }
    return 0;
}

int tok__spm_encode(const tokenizer *t, const char *text, size_t len, bool add_prefix, tok_ids *ids)
{
    /* escaped text: at most 3 bytes per input byte, plus the prefix */
    char *buf = malloc(len * 3 + 4);
    spm_sym *syms = malloc((len + 1) * sizeof *syms);
    spm_heap h = {malloc((len * 3 + 4) * sizeof *h.v), 0};
    int rc = 0;
    if (!buf || !syms || !h.v) {
        rc = -ENOMEM;
        goto out;
    }
    size_t n = 0;
    if (add_prefix) {
        memcpy(buf, "\xe2\x96\x81", 3);
        n = 3;
    }
    for (size_t i = 0; i < len; i++) {
        if (text[i] == ' ') {
            memcpy(buf + n, "\xe2\x96\x81", 3);
            n += 3;
        } else
            buf[n++] = text[i];
    }
    int32_t n_syms = 0;
    for (size_t i = 0; i < n;) {
        size_t k;
        (void)utf8_next(buf + i, n - i, &k);
        syms[n_syms] = (spm_sym){i, k, n_syms - 1, -1};
        if (n_syms > 0) syms[n_syms - 1].next = n_syms;
        n_syms++;
        i += k;
    }
    for (int32_t k = 0; k + 1 < n_syms; k++)
        try_pair(t, buf, syms, &h, k, k + 1);
    while (h.n > 0) {
        spm_cand c = heap_pop(&h);
        spm_sym *L = &syms[c.left], *R = &syms[c.right];
        if (L->len == 0 || R->len == 0 || L->next != c.right || L->len + R->len != c.len)
            continue; /* stale */
        L->len += R->len;
        L->next = R->next;
        if (R->next >= 0) syms[R->next].prev = c.left;
        R->len = 0;
        try_pair(t, buf, syms, &h, L->prev, c.left);
        try_pair(t, buf, syms, &h, c.left, L->next);
    }
    for (int32_t k = n_syms > 0 ? 0 : -1; k >= 0 && rc == 0; k = syms[k].next)
        rc = emit_symbol(t, buf + syms[k].off, syms[k].len, ids);
out:
    free(buf);
    free(syms);
    free(h.v);
    return rc;
}
