/*
 * tokenizer.c — loading a vocabulary from GGUF metadata and splitting special tokens out of the
 * text.  The encoders live in tokenizer_bpe.c (with tokenizer_pre.c, tokenizer_nfc.c) and
 * tokenizer_spm.c, decoding and streaming in tokenizer_decode.c.
 *
 * Why it is built this way: every token's text and its decoded bytes are copied into two
 * blobs at load, so that decoding is a table lookup and the tokenizer does not depend on the
 * GGUF mapping staying open.  Text -> id is one open-addressing hash table over the stored
 * texts.  Special tokens are split out of the text the way llama.cpp does it (each special
 * token in turn, longest first, over the fragments that are still text) because that is the
 * behaviour GGUF users already get from every other runtime.
 */
#include "tokenizer/tokenizer_internal.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int tok__fail(char *err, size_t err_size, int rc, const char *fmt, ...)
{
    if (err && err_size) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, err_size, fmt, ap);
        va_end(ap);
    }
    return rc;
}

/* ---- small shared helpers -------------------------------------------------------------- */

uint64_t tok__hash(const char *s, size_t len)
{
    uint64_t h = 0xcbf29ce484222325ull; /* FNV-1a */
    for (size_t i = 0; i < len; i++) {
        h ^= (unsigned char)s[i];
        h *= 0x100000001b3ull;
    }
    return h ^ (h >> 29);
}

int tok__ids_push(tok_ids *ids, int32_t id)
{
    if (vec_reserve(&ids->v, &ids->cap, ids->n + 1, sizeof *ids->v, 64) < 0) return -ENOMEM;
    ids->v[ids->n++] = id;
    return 0;
}

/* ---- lookups ---------------------------------------------------------------------------- */

int32_t tokenizer_find(const tokenizer *t, const char *text, size_t len)
{
    size_t i = (size_t)tok__hash(text, len) & t->index_mask;
    for (;; i = (i + 1) & t->index_mask) {
        int32_t id = t->index[i];
        if (id < 0) return -1;
        const tok_token *tk = &t->tokens[id];
        if (tk->len == len && memcmp(t->text + tk->off, text, len) == 0) return id;
    }
}

int32_t tokenizer_n_vocab(const tokenizer *t)
{
    return t->n_vocab;
}
int32_t tokenizer_bos(const tokenizer *t)
{
    return t->bos;
}
int32_t tokenizer_eos(const tokenizer *t)
{
    return t->eos;
}
bool tokenizer_add_bos(const tokenizer *t)
{
    return t->add_bos;
}
bool tokenizer_add_eos(const tokenizer *t)
{
    return t->add_eos;
}

const char *tokenizer_bos_text(const tokenizer *t)
{
    return t->bos >= 0 ? t->text + t->tokens[t->bos].off : "";
}

const char *tokenizer_eos_text(const tokenizer *t)
{
    return t->eos >= 0 ? t->text + t->tokens[t->eos].off : "";
}

bool tokenizer_is_eog(const tokenizer *t, int32_t id)
{
    return id >= 0 && id < t->n_vocab && t->eog[id];
}

const char *tokenizer_token_text(const tokenizer *t, int32_t id, size_t *len)
{
    if (id < 0 || id >= t->n_vocab) return NULL;
    if (len) *len = t->tokens[id].len;
    return t->text + t->tokens[id].off;
}

tokenizer_token_type tokenizer_token_type_of(const tokenizer *t, int32_t id)
{
    if (id < 0 || id >= t->n_vocab) return TOKENIZER_TT_UNDEFINED;
    return (tokenizer_token_type)t->tokens[id].type;
}

/* ---- loading ---------------------------------------------------------------------------- */

static int get_opt_id(const gguf_file *f, const char *key, int32_t n_vocab, int32_t *out, char *err,
                      size_t err_size)
{
    uint32_t v;
    int rc = gguf_get_u32(f, key, &v);
    if (rc == -ENOENT) return 0;
    if (rc < 0) return tok__fail(err, err_size, -EINVAL, "tokenizer: %s has the wrong type", key);
    if (v >= (uint32_t)n_vocab)
        return tok__fail(err, err_size, -EINVAL,
                         "tokenizer: %s = %u is outside the vocabulary (%d tokens)", key, v,
                         n_vocab);
    *out = (int32_t)v;
    return 0;
}

static int get_opt_bool(const gguf_file *f, const char *key, bool *out, char *err, size_t err_size)
{
    int rc = gguf_get_bool(f, key, out);
    if (rc == -ENOENT) return 0;
    if (rc < 0) return tok__fail(err, err_size, -EINVAL, "tokenizer: %s is not a bool", key);
    return 0;
}

static int load_model_name(tokenizer *t, const gguf_file *f, char *err, size_t err_size)
{
    gguf_str s;
    int rc = gguf_get_str(f, "tokenizer.ggml.model", &s);
    if (rc == -ENOENT)
        return tok__fail(err, err_size, -EINVAL, "tokenizer: tokenizer.ggml.model is missing");
    if (rc < 0)
        return tok__fail(err, err_size, -EINVAL, "tokenizer: tokenizer.ggml.model is not a string");
    if (gguf_str_eq(s, "llama"))
        t->model = TOK_MODEL_SPM;
    else if (gguf_str_eq(s, "gpt2"))
        t->model = TOK_MODEL_BPE;
    else
        return tok__fail(err, err_size, -ENOTSUP,
                         "tokenizer: tokenizer.ggml.model '%.*s' is not supported "
                         "(supported: llama, gpt2)",
                         (int)(s.len > 64 ? 64 : s.len), s.data);
    return 0;
}

static int load_pre(tokenizer *t, const gguf_file *f, char *err, size_t err_size)
{
    static const struct {
        const char *name;
        tok_pre pre;
        bool ignore_merges;
        bool nfc;
    } known[] = {
        {"gpt-2", TOK_PRE_GPT2, false, false},
        {"olmo", TOK_PRE_GPT2, false, false},
        {"mpt", TOK_PRE_GPT2, false, false},
        {"phi-2", TOK_PRE_GPT2, false, false},
        {"llama-bpe", TOK_PRE_LLAMA3, true, false},
        {"llama3", TOK_PRE_LLAMA3, true, false},
        {"llama-v3", TOK_PRE_LLAMA3, true, false},
        {"dbrx", TOK_PRE_LLAMA3, false, false},
        {"smaug-bpe", TOK_PRE_LLAMA3, false, false},
        {"qwen2", TOK_PRE_QWEN2, false, true},
        {"deepseek-r1-qwen", TOK_PRE_QWEN2, false, true},
        {"qwen35", TOK_PRE_QWEN35, false, false},
        {"deepseek-llm", TOK_PRE_DEEPSEEK, false, false},
        {"gpt-4o", TOK_PRE_GPT4O, false, false},
        /* DeepSeek-V3 / R1: its tokenizer.json has an empty normalizer, merges not ignored */
        {"deepseek-v3", TOK_PRE_DEEPSEEK3, false, false},
        /* Kimi-K2: tiktoken's vocabulary, converted to merges; llama.cpp does not ignore them */
        {"kimi-k2", TOK_PRE_KIMI_K2, false, false},
        /* GLM-4.5's files: llama.cpp's CHATGLM4 regex is Llama 3's, without ignore_merges */
        {"glm4", TOK_PRE_LLAMA3, false, false},
    };
    gguf_str s;
    int rc = gguf_get_str(f, "tokenizer.ggml.pre", &s);
    if (rc == -ENOENT || (rc == 0 && gguf_str_eq(s, "default"))) {
        fprintf(stderr, "tokenizer: tokenizer.ggml.pre is %s: using GPT-2's pre-tokenizer\n",
                rc == -ENOENT ? "missing" : "'default'");
        t->pre = TOK_PRE_GPT2;
        return 0;
    }
    if (rc < 0)
        return tok__fail(err, err_size, -EINVAL, "tokenizer: tokenizer.ggml.pre is not a string");
    for (size_t i = 0; i < sizeof known / sizeof known[0]; i++) {
        if (gguf_str_eq(s, known[i].name)) {
            t->pre = known[i].pre;
            t->ignore_merges = known[i].ignore_merges;
            t->nfc = known[i].nfc;
            return 0;
        }
    }
    return tok__fail(err, err_size, -ENOTSUP,
                     "tokenizer: tokenizer.ggml.pre '%.*s' is not supported",
                     (int)(s.len > 64 ? 64 : s.len), s.data);
}

/* Optional per-token array of numbers; n must match the token list. */
static int get_token_arr(const gguf_file *f, const char *key, uint64_t n, bool want_float,
                         gguf_arr *out, bool *present, char *err, size_t err_size)
{
    int rc = gguf_get_arr(f, key, out);
    *present = false;
    if (rc == -ENOENT) return 0;
    if (rc < 0) return tok__fail(err, err_size, -EINVAL, "tokenizer: %s is not an array", key);
    bool ok = want_float ? (out->elem_type == GGUF_VT_FLOAT32 ||
                            out->elem_type == GGUF_VT_FLOAT64 || out->elem_type == GGUF_VT_INT32)
                         : (out->elem_type == GGUF_VT_INT32 || out->elem_type == GGUF_VT_UINT32 ||
                            out->elem_type == GGUF_VT_INT8 || out->elem_type == GGUF_VT_UINT8 ||
                            out->elem_type == GGUF_VT_INT16 || out->elem_type == GGUF_VT_UINT16);
    if (!ok)
        return tok__fail(err, err_size, -EINVAL, "tokenizer: %s has elements of type %s", key,
                         gguf_vtype_name(out->elem_type));
    if (out->n != n)
        return tok__fail(err, err_size, -EINVAL, "tokenizer: %s has %llu entries for %llu tokens",
                         key, (unsigned long long)out->n, (unsigned long long)n);
    *present = true;
    return 0;
}

static int load_tokens(tokenizer *t, const gguf_file *f, char *err, size_t err_size)
{
    gguf_arr toks, scores, types;
    bool have_scores, have_types;
    int rc = gguf_get_arr(f, "tokenizer.ggml.tokens", &toks);
    if (rc == -ENOENT)
        return tok__fail(err, err_size, -EINVAL, "tokenizer: tokenizer.ggml.tokens is missing");
    if (rc < 0 || toks.elem_type != GGUF_VT_STRING)
        return tok__fail(err, err_size, -EINVAL,
                         "tokenizer: tokenizer.ggml.tokens is not an array of strings");
    if (toks.n == 0 || toks.n > INT32_MAX / 4)
        return tok__fail(err, err_size, -EINVAL,
                         "tokenizer: tokenizer.ggml.tokens has %llu entries",
                         (unsigned long long)toks.n);
    if ((rc = get_token_arr(f, "tokenizer.ggml.scores", toks.n, true, &scores, &have_scores, err,
                            err_size)) < 0 ||
        (rc = get_token_arr(f, "tokenizer.ggml.token_type", toks.n, false, &types, &have_types, err,
                            err_size)) < 0)
        return rc;

    t->n_vocab = (int32_t)toks.n;
    t->tokens = calloc(toks.n, sizeof *t->tokens);
    t->eog = calloc(toks.n, 1);
    size_t total = 0;
    for (uint64_t i = 0; i < toks.n; i++)
        total += toks.items[i].v.str.len + 1;
    if (total > UINT32_MAX)
        return tok__fail(err, err_size, -EINVAL, "tokenizer: tokenizer.ggml.tokens is too large");
    t->text = malloc(total);
    if (!t->tokens || !t->eog || !t->text)
        return tok__fail(err, err_size, -ENOMEM, "tokenizer: out of memory");
    size_t off = 0;
    for (uint64_t i = 0; i < toks.n; i++) {
        gguf_str s = toks.items[i].v.str;
        tok_token *tk = &t->tokens[i];
        memcpy(t->text + off, s.data, s.len);
        t->text[off + s.len] = '\0';
        tk->off = (uint32_t)off;
        tk->len = (uint32_t)s.len;
        off += s.len + 1;
        tk->score = have_scores ? (float)(scores.elem_type == GGUF_VT_INT32
                                              ? (double)gguf_arr_i64(&scores, i)
                                              : gguf_arr_f64(&scores, i))
                                : 0.0f;
        int64_t ty = have_types ? gguf_arr_i64(&types, i) : TOKENIZER_TT_NORMAL;
        if (ty < 0 || ty > TOKENIZER_TT_BYTE)
            return tok__fail(
                err, err_size, -EINVAL,
                "tokenizer: tokenizer.ggml.token_type[%llu] = %lld is not a token type",
                (unsigned long long)i, (long long)ty);
        tk->type = (uint8_t)ty;
    }
    return 0;
}

static int build_index(tokenizer *t, char *err, size_t err_size)
{
    size_t cap = 16;
    while (cap < (size_t)t->n_vocab * 2)
        cap <<= 1;
    t->index = malloc(cap * sizeof *t->index);
    if (!t->index) return tok__fail(err, err_size, -ENOMEM, "tokenizer: out of memory");
    memset(t->index, 0xff, cap * sizeof *t->index);
    t->index_mask = cap - 1;
    for (int32_t id = 0; id < t->n_vocab; id++) {
        const tok_token *tk = &t->tokens[id];
        const char *s = t->text + tk->off;
        size_t i = (size_t)tok__hash(s, tk->len) & t->index_mask;
        /* a text seen twice maps to its last id, as llama.cpp's and HF's maps do */
        for (;; i = (i + 1) & t->index_mask) {
            int32_t o = t->index[i];
            if (o < 0 || (t->tokens[o].len == tk->len &&
                          memcmp(t->text + t->tokens[o].off, s, tk->len) == 0)) {
                t->index[i] = id;
                break;
            }
        }
    }
    return 0;
}

/* "<0x41>" -> 0x41, -1 when the text is not of that form. */
static int parse_byte_token(const char *s, size_t len)
{
    if (len != 6 || s[0] != '<' || s[1] != '0' || s[2] != 'x' || s[5] != '>') return -1;
    int v = 0;
    for (int k = 3; k < 5; k++) {
        char c = s[k];
        int d = c >= '0' && c <= '9'   ? c - '0'
                : c >= 'A' && c <= 'F' ? c - 'A' + 10
                : c >= 'a' && c <= 'f' ? c - 'a' + 10
                                       : -1;
        if (d < 0) return -1;
        v = v * 16 + d;
    }
    return v;
}

/* SentencePiece: decoded text of every token (U+2581 -> space, <0xNN> -> the byte). */
static int spm_prepare(tokenizer *t, char *err, size_t err_size)
{
    size_t total = 0;
    for (int32_t i = 0; i < t->n_vocab; i++)
        total += t->tokens[i].len;
    t->dec = malloc(total + 1);
    if (!t->dec) return tok__fail(err, err_size, -ENOMEM, "tokenizer: out of memory");
    for (int b = 0; b < 256; b++)
        t->byte_token[b] = -1;
    size_t off = 0;
    for (int32_t i = 0; i < t->n_vocab; i++) {
        tok_token *tk = &t->tokens[i];
        const char *s = t->text + tk->off;
        tk->dec_off = (uint32_t)off;
        if (tk->type == TOKENIZER_TT_BYTE) {
            int b = parse_byte_token(s, tk->len);
            if (b < 0)
                return tok__fail(
                    err, err_size, -EINVAL,
                    "tokenizer: tokenizer.ggml.tokens[%d] '%s' has type BYTE but is not <0xNN>", i,
                    s);
            t->dec[off++] = (char)b;
            t->byte_token[b] = i;
        } else if (tk->type == TOKENIZER_TT_NORMAL || tk->type == TOKENIZER_TT_UNUSED ||
                   tk->type == TOKENIZER_TT_UNDEFINED) {
            for (size_t k = 0; k < tk->len; k++) {
                if (k + 2 < tk->len && memcmp(s + k, "\xe2\x96\x81", 3) == 0) {
                    t->dec[off++] = ' ';
                    k += 2;
                } else
                    t->dec[off++] = s[k];
            }
        } else {
            memcpy(t->dec + off, s, tk->len);
            off += tk->len;
        }
        tk->dec_len = (uint32_t)(off - tk->dec_off);
    }
    if (t->unk < 0)
        for (int32_t i = 0; i < t->n_vocab && t->unk < 0; i++)
            if (t->tokens[i].type == TOKENIZER_TT_UNKNOWN) t->unk = i;
    return 0;
}

static int cmp_special(const void *a, const void *b, void *ctx)
{
    const tokenizer *t = ctx;
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    if (t->tokens[x].len != t->tokens[y].len) return t->tokens[x].len > t->tokens[y].len ? -1 : 1;
    return x < y ? -1 : x > y;
}

static int build_specials(tokenizer *t, char *err, size_t err_size)
{
    t->specials = malloc((size_t)t->n_vocab * sizeof *t->specials);
    if (!t->specials) return tok__fail(err, err_size, -ENOMEM, "tokenizer: out of memory");
    for (int32_t i = 0; i < t->n_vocab; i++) {
        uint8_t ty = t->tokens[i].type;
        if ((ty == TOKENIZER_TT_CONTROL || ty == TOKENIZER_TT_USER_DEFINED ||
             ty == TOKENIZER_TT_UNKNOWN) &&
            t->tokens[i].len > 0)
            t->specials[t->n_specials++] = i;
    }
    qsort_r(t->specials, t->n_specials, sizeof *t->specials, cmp_special, t);
    return 0;
}

/* The end-of-generation set: EOS, the EOT/EOM ids when the file names them, and control tokens
 * whose text is one of the turn/text terminators models use (the list llama.cpp keeps). */
static int build_eog(tokenizer *t, const gguf_file *f, char *err, size_t err_size)
{
    /* clang-format off */
    static const char *const names[] = {
        "<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>", "<|eom_id|>",
        "<EOT>", "_<EOT>", "<|end_of_text|>", ("<\xef\xbd\x9c" "end\xe2\x96\x81of\xe2\x96\x81sentence\xef\xbd\x9c>"),
        "<|return|>", "<|call|>",
    };
    /* clang-format on */
    int32_t id = -1;
    int rc;
    if (t->eos >= 0) t->eog[t->eos] = 1;
    if ((rc = get_opt_id(f, "tokenizer.ggml.eot_token_id", t->n_vocab, &id, err, err_size)) < 0)
        return rc;
    if (id >= 0) t->eog[id] = 1;
    id = -1;
    if ((rc = get_opt_id(f, "tokenizer.ggml.eom_token_id", t->n_vocab, &id, err, err_size)) < 0)
        return rc;
    if (id >= 0) t->eog[id] = 1;
    for (size_t k = 0; k < sizeof names / sizeof names[0]; k++) {
        int32_t i = tokenizer_find(t, names[k], strlen(names[k]));
        if (i >= 0 && (t->tokens[i].type == TOKENIZER_TT_CONTROL ||
                       t->tokens[i].type == TOKENIZER_TT_USER_DEFINED))
            t->eog[i] = 1;
    }
    return 0;
}

int tokenizer_create(tokenizer **out, const gguf_file *f, char *err, size_t err_size)
{
    *out = NULL;
    tokenizer *t = calloc(1, sizeof *t);
    if (!t) return tok__fail(err, err_size, -ENOMEM, "tokenizer: out of memory");
    t->bos = t->eos = t->unk = -1;
    int rc;
    if ((rc = load_model_name(t, f, err, err_size)) < 0) goto fail;
    if (t->model == TOK_MODEL_BPE && (rc = load_pre(t, f, err, err_size)) < 0) goto fail;
    if ((rc = load_tokens(t, f, err, err_size)) < 0 || (rc = build_index(t, err, err_size)) < 0)
        goto fail;
    t->add_bos = t->model == TOK_MODEL_SPM;
    t->add_space_prefix = t->model == TOK_MODEL_SPM;
    if ((rc = get_opt_id(f, "tokenizer.ggml.bos_token_id", t->n_vocab, &t->bos, err, err_size)) <
            0 ||
        (rc = get_opt_id(f, "tokenizer.ggml.eos_token_id", t->n_vocab, &t->eos, err, err_size)) <
            0 ||
        (rc = get_opt_id(f, "tokenizer.ggml.unknown_token_id", t->n_vocab, &t->unk, err,
                         err_size)) < 0 ||
        (rc = get_opt_bool(f, "tokenizer.ggml.add_bos_token", &t->add_bos, err, err_size)) < 0 ||
        (rc = get_opt_bool(f, "tokenizer.ggml.add_eos_token", &t->add_eos, err, err_size)) < 0 ||
        (rc = get_opt_bool(f, "tokenizer.ggml.add_space_prefix", &t->add_space_prefix, err,
                           err_size)) < 0)
        goto fail;
    if (t->model == TOK_MODEL_BPE) t->add_space_prefix = false;
    if (t->add_bos && t->bos < 0) {
        rc = tok__fail(err, err_size, -EINVAL,
                       "tokenizer: tokenizer.ggml.add_bos_token is set but "
                       "tokenizer.ggml.bos_token_id is missing");
        goto fail;
    }
    if (t->add_eos && t->eos < 0) {
        rc = tok__fail(err, err_size, -EINVAL,
                       "tokenizer: tokenizer.ggml.add_eos_token is set but "
                       "tokenizer.ggml.eos_token_id is missing");
        goto fail;
    }
    rc = t->model == TOK_MODEL_SPM ? spm_prepare(t, err, err_size)
                                   : tok__bpe_load(t, f, err, err_size);
    if (rc < 0 || (rc = build_specials(t, err, err_size)) < 0 ||
        (rc = build_eog(t, f, err, err_size)) < 0)
        goto fail;
    *out = t;
    return 0;
fail:
    tokenizer_destroy(&t);
    return rc;
}

void tokenizer_destroy(tokenizer **tp)
{
    tokenizer *t = tp ? *tp : NULL;
    if (!t) return;
    free(t->tokens);
    free(t->text);
    free(t->dec);
    free(t->index);
    free(t->merges.keys);
    free(t->merges.vals);
    free(t->specials);
    free(t->eog);
    free(t);
    *tp = NULL;
}

/* ---- encoding --------------------------------------------------------------------------- */

typedef struct fragment {
    size_t off, len;
    int32_t id; /* -1: text still to encode */
} fragment;

typedef struct frag_list {
    fragment *v;
    size_t n, cap;
} frag_list;

static int frag_push(frag_list *l, size_t off, size_t len, int32_t id)
{
    if (vec_reserve(&l->v, &l->cap, l->n + 1, sizeof *l->v, 16) < 0) return -ENOMEM;
    l->v[l->n++] = (fragment){off, len, id};
    return 0;
}

/* Splits special tokens out of the text: each special token in turn (longest first) is looked
 * for in every fragment that is still text, leftmost occurrence first, as llama.cpp's
 * tokenizer_st_partition does.  User-defined tokens are always split out; control and unknown
 * tokens only when the caller asks for it. */
static int partition(const tokenizer *t, const char *text, size_t len, bool parse_special,
                     frag_list *cur)
{
    frag_list next = {0};
    int rc = frag_push(cur, 0, len, -1);
    for (size_t k = 0; k < t->n_specials && rc == 0; k++) {
        int32_t sid = t->specials[k];
        const tok_token *tk = &t->tokens[sid];
        if (!parse_special && tk->type != TOKENIZER_TT_USER_DEFINED) continue;
        const char *stext = t->text + tk->off;
        bool found = false;
        for (size_t i = 0; i < cur->n && !found; i++)
            found = cur->v[i].id < 0 && cur->v[i].len >= tk->len &&
                    memmem(text + cur->v[i].off, cur->v[i].len, stext, tk->len) != NULL;
        if (!found) continue;
        next.n = 0;
        for (size_t i = 0; i < cur->n && rc == 0; i++) {
            fragment fr = cur->v[i];
            if (fr.id >= 0) {
                rc = frag_push(&next, fr.off, fr.len, fr.id);
                continue;
            }
            size_t pos = fr.off, end = fr.off + fr.len;
            while (rc == 0 && pos < end) {
                const char *m =
                    end - pos >= tk->len ? memmem(text + pos, end - pos, stext, tk->len) : NULL;
                if (!m) {
                    rc = frag_push(&next, pos, end - pos, -1);
                    break;
                }
                size_t at = (size_t)(m - text);
                if (at > pos) rc = frag_push(&next, pos, at - pos, -1);
                if (rc == 0) rc = frag_push(&next, at, tk->len, sid);
                pos = at + tk->len;
            }
        }
        frag_list tmp = *cur;
        *cur = next;
        next = tmp;
    }
    free(next.v);
    return rc;
}

int tokenizer_encode(const tokenizer *t, const char *text, size_t len, unsigned flags,
                     int32_t **ids_out, size_t *n_out, char *err, size_t err_size)
{
    tok_ids ids = {0};
    frag_list frags = {0};
    bool add_special = flags & TOKENIZER_ADD_SPECIAL;
    int rc = 0;
    *ids_out = NULL;
    *n_out = 0;
    if (len > 0) rc = partition(t, text, len, flags & TOKENIZER_PARSE_SPECIAL, &frags);
    if (rc == 0 && add_special && t->add_bos) rc = tok__ids_push(&ids, t->bos);
    /* SentencePiece adds its dummy space at the start and after every special token, as
     * llama.cpp does (and Hugging Face's legacy Llama tokenizer) */
    bool prev_special = true;
    for (size_t i = 0; i < frags.n && rc == 0; i++) {
        const fragment *fr = &frags.v[i];
        if (fr->id >= 0) {
            rc = tok__ids_push(&ids, fr->id);
            prev_special = true;
        } else if (t->model == TOK_MODEL_SPM) {
            rc = tok__spm_encode(t, text + fr->off, fr->len, t->add_space_prefix && prev_special,
                                 &ids);
            prev_special = false;
        } else {
            rc = tok__bpe_encode(t, text + fr->off, fr->len, &ids);
        }
    }
    if (rc == 0 && add_special && t->add_eos) rc = tok__ids_push(&ids, t->eos);
    if (rc == 0 && !ids.v) rc = (ids.v = malloc(sizeof *ids.v)) ? 0 : -ENOMEM;
    free(frags.v);
    if (rc < 0) {
        free(ids.v);
        return tok__fail(err, err_size, rc, "tokenizer: encode: %s", strerror(-rc));
    }
    *ids_out = ids.v;
    *n_out = ids.n;
    return 0;
}
