/*
 * tokenizer_decode.c — token ids back to text: whole sequences, and streams that hand out only
 * complete UTF-8 characters.
 *
 * Every token's decoded bytes were prepared at load (tokenizer.c, tokenizer_bpe.c), so decoding
 * is concatenation.  The stream keeps the bytes of a character that is not complete yet and
 * turns bytes that can never become one into U+FFFD, one per maximal invalid subpart, the
 * practice of Unicode's chapter 3 that Python's decode(errors="replace") and Rust's
 * from_utf8_lossy (Hugging Face's decode) follow.
 */
#include "tokenizer/tokenizer_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- decoding --------------------------------------------------------------------------- */

const char *tokenizer_piece(const tokenizer *t, int32_t id, size_t *len)
{
    if (id < 0 || id >= t->n_vocab) return NULL;
    *len = t->tokens[id].dec_len;
    return t->dec + t->tokens[id].dec_off;
}

static bool is_special_type(uint8_t ty)
{
    return ty == TOKENIZER_TT_CONTROL || ty == TOKENIZER_TT_UNKNOWN;
}

int tokenizer_decode(const tokenizer *t, const int32_t *ids, size_t n, bool skip_special,
                     char **text_out, size_t *len_out, char *err, size_t err_size)
{
    size_t total = 0;
    *text_out = NULL;
    *len_out = 0;
    for (size_t i = 0; i < n; i++) {
        if (ids[i] < 0 || ids[i] >= t->n_vocab)
            return tok__fail(
                err, err_size, -EINVAL,
                "tokenizer: decode: token id %d at position %zu is outside the vocabulary (%d)",
                ids[i], i, t->n_vocab);
        total += t->tokens[ids[i]].dec_len;
    }
    char *out = malloc(total + 1);
    if (!out) return tok__fail(err, err_size, -ENOMEM, "tokenizer: out of memory");
    size_t len = 0;
    /* sentencepiece drops the space its dummy prefix put before the first piece of text */
    bool strip = t->model == TOK_MODEL_SPM && t->add_space_prefix;
    for (size_t i = 0; i < n; i++) {
        const tok_token *tk = &t->tokens[ids[i]];
        if (is_special_type(tk->type)) {
            if (skip_special) continue;
            memcpy(out + len, t->dec + tk->dec_off, tk->dec_len);
            len += tk->dec_len;
            continue;
        }
        const char *d = t->dec + tk->dec_off;
        size_t dl = tk->dec_len;
        if (strip && tk->type == TOKENIZER_TT_NORMAL && dl > 0 && d[0] == ' ') {
            d++;
            dl--;
        }
        strip = false;
        memcpy(out + len, d, dl);
        len += dl;
    }
    out[len] = '\0';
    *text_out = out;
    *len_out = len;
    return 0;
}

/* ---- streaming -------------------------------------------------------------------------- */

void tokenizer_stream_init(tokenizer_stream *s, const tokenizer *t, bool skip_special)
{
    memset(s, 0, sizeof *s);
    s->tok = t;
    s->skip_special = skip_special;
}

void tokenizer_stream_release(tokenizer_stream *s)
{
    free(s->out);
    s->out = NULL;
    s->out_cap = 0;
    s->n_pending = 0;
}

static int stream_reserve(tokenizer_stream *s, size_t need)
{
    if (need <= s->out_cap) return 0;
    return vec_reserve(&s->out, &s->out_cap, need, 1, 64);
}

/* Moves the valid characters of pending+piece to s->out, U+FFFD for each maximal invalid
 * subpart; an incomplete character at the end is kept pending unless final. */
static int stream_emit(tokenizer_stream *s, const char *piece, size_t plen, bool final,
                       const char **text, size_t *len)
{
    size_t n = s->n_pending + plen;
    /* worst case: every byte becomes a 3-byte U+FFFD */
    int rc = stream_reserve(s, n * 3 + 1 + n);
    if (rc < 0) return rc;
    /* the input is staged at the end of the buffer, past the worst-case output */
    char *in = s->out + n * 3 + 1;
    memcpy(in, s->pending, s->n_pending);
    memcpy(in + s->n_pending, piece, plen);
    size_t o = 0, i = 0;
    s->n_pending = 0;
    while (i < n) {
        bool incomplete;
        size_t bad_at;
        size_t k = utf8_check(in + i, n - i, &incomplete, &bad_at);
        if (k > 0) {
            memmove(s->out + o, in + i, k); /* in lies past out + o + k: no overlap */
            o += k;
            i += k;
        } else if (incomplete && !final) {
            memcpy(s->pending, in + i, n - i);
            s->n_pending = n - i;
            break;
        } else {
            memcpy(s->out + o, UTF8_REPLACEMENT, 3);
            o += 3;
            i += bad_at;
        }
    }
    s->out[o] = '\0';
    *text = s->out;
    *len = o;
    return 0;
}

int tokenizer_stream_feed(tokenizer_stream *s, int32_t id, const char **text, size_t *len)
{
    const tokenizer *t = s->tok;
    *text = "";
    *len = 0;
    if (id < 0 || id >= t->n_vocab) return -EINVAL;
    const tok_token *tk = &t->tokens[id];
    if (s->skip_special && is_special_type(tk->type))
        return stream_emit(s, "", 0, false, text, len);
    return stream_emit(s, t->dec + tk->dec_off, tk->dec_len, false, text, len);
}

int tokenizer_stream_flush(tokenizer_stream *s, const char **text, size_t *len)
{
    return stream_emit(s, "", 0, true, text, len);
}
