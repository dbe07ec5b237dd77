/*
 * test_tokenizer.c — unit tests for the tokenizer.
 *
 * Two kinds of vocabulary: the synthetic ones of the test models (tools/gen_model.py, what the
 * server tests run on) and tiny hand-made GGUFs whose right answers are worked out by hand in
 * the comments (merge order, score order, byte fallback).  Agreement with Hugging Face and
 * sentencepiece on real vocabularies is tests/integration/tokenizer_crosscheck.py's job.
 */
#include "gguf/gguf.h"
#include "test_models.h"
#include "tokenizer/tokenizer.h"

#include <check.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char scratch_dir[256];

/* ---- helpers ------------------------------------------------------------------------------ */

static tokenizer *load_path(const char *path)
{
    char err[512];
    gguf_file *f = NULL;
    tokenizer *t = NULL;
    ck_assert_msg(gguf_open(&f, path, err, sizeof err) == 0, "%s", err);
    ck_assert_msg(tokenizer_create(&t, f, err, sizeof err) == 0, "%s", err);
    gguf_close(&f); /* the tokenizer must not need the file afterwards */
    return t;
}

static tokenizer *load_model(const char *arch)
{
    char path[1024], name[128], args[256];
    snprintf(name, sizeof name, "%s-tiny-f32", arch);
    snprintf(args, sizeof args, "--arch %s --preset tiny --type f32 --seed 1", arch);
    test_model_file(name, args, path, sizeof path);
    return load_path(path);
}

static size_t encode(const tokenizer *t, const char *text, unsigned flags, int32_t **ids)
{
    char err[256];
    size_t n = 0;
    ck_assert_msg(tokenizer_encode(t, text, strlen(text), flags, ids, &n, err, sizeof err) == 0,
                  "%s", err);
    return n;
}

static char *decode(const tokenizer *t, const int32_t *ids, size_t n, bool skip, size_t *len)
{
    char err[256], *s = NULL;
    ck_assert_msg(tokenizer_decode(t, ids, n, skip, &s, len, err, sizeof err) == 0, "%s", err);
    return s;
}

static int32_t id_of(const tokenizer *t, const char *text)
{
    int32_t id = tokenizer_find(t, text, strlen(text));
    ck_assert_msg(id >= 0, "token '%s' not in the vocabulary", text);
    return id;
}

static void check_round_trip(const tokenizer *t, const char *text)
{
    int32_t *ids;
    size_t n = encode(t, text, 0, &ids), len;
    char *back = decode(t, ids, n, true, &len);
    ck_assert_msg(len == strlen(text) && memcmp(back, text, len) == 0,
                  "round trip of '%s' gave '%s'", text, back);
    free(back);
    free(ids);
}

static const char *const ROUND_TRIP[] = {
    "Hello world",
    "The quick brown fox jumps over the lazy dog.",
    "  leading and trailing  ",
    "tabs\tand\nnewlines\n\n",
    "int main(void) { return 0; }",
    "3.14159 and 1,000,000",
    "caf\xc3\xa9 na\xc3\xafve",
    "\xe4\xbd\xa0\xe5\xa5\xbd\xef\xbc\x8c\xe4\xb8\x96\xe7\x95\x8c",
    "emoji \xf0\x9f\x98\x80\xf0\x9f\x91\x8d",
    "e\xcc\x81 combining",
    "",
    " ",
    "<|im_start",
    "<s >",
};

/* ---- the test models' vocabularies --------------------------------------------------------- */

START_TEST(test_model_vocab_qwen3moe)
{
    tokenizer *t = load_model("qwen3moe");
    ck_assert_int_eq(tokenizer_n_vocab(t), 512);
    int32_t eot = id_of(t, "<|endoftext|>"), im_end = id_of(t, "<|im_end|>"),
            im_start = id_of(t, "<|im_start|>");
    ck_assert_int_eq(tokenizer_bos(t), eot);
    ck_assert_int_eq(tokenizer_eos(t), im_end);
    ck_assert_str_eq(tokenizer_eos_text(t), "<|im_end|>");
    ck_assert(tokenizer_is_eog(t, im_end) && tokenizer_is_eog(t, eot) &&
              !tokenizer_is_eog(t, im_start));
    ck_assert(!tokenizer_add_bos(t));
    for (size_t i = 0; i < sizeof ROUND_TRIP / sizeof ROUND_TRIP[0]; i++)
        if (!strstr(ROUND_TRIP[i], "\xcc\x81")) check_round_trip(t, ROUND_TRIP[i]);

    /* pre "qwen2" normalises to NFC first, as Qwen2's tokenizer.json does: "e" + U+0301 is
     * U+00E9, jamo L + V is the syllable U+AC00, U+212B (angstrom) is U+00C5 */
    static const char *const nfc[][2] = {
        {"e\xcc\x81", "\xc3\xa9"},
        {"\xe1\x84\x80\xe1\x85\xa1", "\xea\xb0\x80"},
        {"\xe2\x84\xab", "\xc3\x85"},
        /* dot below (220) sorts before dot above (230) */
        {"a\xcc\x87\xcc\xa3", "\xe1\xba\xa1\xcc\x87"},
    };
    for (size_t k = 0; k < sizeof nfc / sizeof nfc[0]; k++) {
        int32_t *a, *b;
        size_t na = encode(t, nfc[k][0], 0, &a), nb = encode(t, nfc[k][1], 0, &b), len;
        ck_assert_uint_eq(na, nb);
        ck_assert_mem_eq(a, b, na * sizeof *a);
        char *s = decode(t, a, na, true, &len);
        ck_assert_str_eq(s, nfc[k][1]);
        free(s);
        free(a);
        free(b);
    }

    /* special tokens: parsed only when asked; ADD_SPECIAL adds nothing (add_bos is false) */
    const char *chat = "<|im_start|>user\nHello<|im_end|>\n";
    int32_t *ids;
    size_t n = encode(t, chat, TOKENIZER_ADD_SPECIAL | TOKENIZER_PARSE_SPECIAL, &ids);
    ck_assert_uint_ge(n, 4);
    ck_assert_int_eq(ids[0], im_start);
    int n_end = 0;
    for (size_t i = 0; i < n; i++)
        n_end += ids[i] == im_end;
    ck_assert_int_eq(n_end, 1);
    size_t len;
    char *s = decode(t, ids, n, false, &len);
    ck_assert_str_eq(s, chat);
    free(s);
    s = decode(t, ids, n, true, &len);
    ck_assert_str_eq(s, "user\nHello\n");
    free(s);
    free(ids);
    n = encode(t, chat, 0, &ids);
    for (size_t i = 0; i < n; i++)
        ck_assert_msg(ids[i] != im_start && ids[i] != im_end,
                      "special token parsed without PARSE_SPECIAL");
    s = decode(t, ids, n, true, &len);
    ck_assert_str_eq(s, chat);
    free(s);
    free(ids);
    tokenizer_destroy(&t);
    ck_assert_ptr_null(t);
}
END_TEST

START_TEST(test_model_vocab_olmoe)
{
    tokenizer *t = load_model("olmoe");
    int32_t eot = id_of(t, "<|endoftext|>");
    ck_assert_int_eq(tokenizer_eos(t), eot);
    ck_assert(tokenizer_is_eog(t, eot) && tokenizer_is_eog(t, id_of(t, "<|im_end|>")));
    ck_assert(!tokenizer_is_eog(t, id_of(t, "<|padding|>")));
    for (size_t i = 0; i < sizeof ROUND_TRIP / sizeof ROUND_TRIP[0]; i++)
        check_round_trip(t, ROUND_TRIP[i]);
    /* GPT-2's pre-tokenizer keeps the space with the word that follows it */
    int32_t *ids;
    size_t n = encode(t, " the", 0, &ids);
    ck_assert_msg(n == 1, "' the' is one token of the trained vocabulary (got %zu)", n);
    free(ids);
    tokenizer_destroy(&t);
}
END_TEST

START_TEST(test_model_vocab_llama)
{
    tokenizer *t = load_model("llama");
    ck_assert_int_eq(tokenizer_bos(t), 1);
    ck_assert_int_eq(tokenizer_eos(t), 2);
    ck_assert_str_eq(tokenizer_bos_text(t), "<s>");
    ck_assert(tokenizer_add_bos(t));
    ck_assert(tokenizer_is_eog(t, 2) && !tokenizer_is_eog(t, 1));
    for (size_t i = 0; i < sizeof ROUND_TRIP / sizeof ROUND_TRIP[0]; i++)
        check_round_trip(t, ROUND_TRIP[i]);

    int32_t *ids;
    size_t n = encode(t, "Hello", TOKENIZER_ADD_SPECIAL, &ids);
    ck_assert_int_eq(ids[0], 1);
    ck_assert_uint_ge(n, 2);
    size_t len;
    char *s = decode(t, ids, n, true, &len);
    ck_assert_str_eq(s, "Hello"); /* the dummy-prefix space is dropped, as sentencepiece does */
    free(s);
    s = decode(t, ids, n, false, &len);
    ck_assert_str_eq(s, "<s>Hello");
    free(s);
    free(ids);

    /* one token's bytes keep the space that decode drops at the start of a text */
    size_t plen;
    const char *p = tokenizer_piece(t, id_of(t, "\xe2\x96\x81the"), &plen);
    ck_assert_uint_eq(plen, 4);
    ck_assert_mem_eq(p, " the", 4);
    p = tokenizer_piece(t, id_of(t, "<0xF0>"), &plen);
    ck_assert_uint_eq(plen, 1);
    ck_assert_int_eq((unsigned char)p[0], 0xf0);
    ck_assert_ptr_null(tokenizer_piece(t, -1, &plen));

    /* byte fallback: the vocabulary has no emoji, so U+1F600 is its four UTF-8 bytes */
    n = encode(t, "\xf0\x9f\x98\x80", 0, &ids);
    ck_assert_uint_eq(n, 5);
    ck_assert_int_eq(ids[0], id_of(t, "\xe2\x96\x81")); /* the dummy prefix */
    ck_assert_int_eq(ids[1], id_of(t, "<0xF0>"));
    ck_assert_int_eq(ids[2], id_of(t, "<0x9F>"));
    ck_assert_int_eq(ids[3], id_of(t, "<0x98>"));
    ck_assert_int_eq(ids[4], id_of(t, "<0x80>"));

    /* streaming: the character appears only with its last byte */
    tokenizer_stream st;
    tokenizer_stream_init(&st, t, true);
    const char *piece;
    ck_assert_int_eq(tokenizer_stream_feed(&st, ids[0], &piece, &len), 0);
    ck_assert_uint_eq(len, 1); /* the stream keeps the space: it continues a prompt */
    ck_assert_str_eq(piece, " ");
    for (int k = 1; k < 4; k++) {
        ck_assert_int_eq(tokenizer_stream_feed(&st, ids[k], &piece, &len), 0);
        ck_assert_uint_eq(len, 0);
    }
    ck_assert_int_eq(tokenizer_stream_feed(&st, ids[4], &piece, &len), 0);
    ck_assert_str_eq(piece, "\xf0\x9f\x98\x80");
    ck_assert_int_eq(tokenizer_stream_flush(&st, &piece, &len), 0);
    ck_assert_uint_eq(len, 0);
    free(ids);

    /* bytes that cannot form a character: U+FFFD as soon as that is certain */
    ck_assert_int_eq(tokenizer_stream_feed(&st, id_of(t, "<0xFF>"), &piece, &len), 0);
    ck_assert_str_eq(piece, "\xef\xbf\xbd");
    ck_assert_int_eq(tokenizer_stream_feed(&st, id_of(t, "<0xF0>"), &piece, &len), 0);
    ck_assert_uint_eq(len, 0);
    ck_assert_int_eq(tokenizer_stream_feed(&st, id_of(t, "<0x9F>"), &piece, &len), 0);
    ck_assert_uint_eq(len, 0);
    ck_assert_int_eq(tokenizer_stream_feed(&st, id_of(t, "<0x41>"), &piece, &len), 0);
    /* clang-format off */
    ck_assert_str_eq(piece, "\xef\xbf\xbd" "A"); /* F0 9F was a maximal subpart: one U+FFFD */
    /* clang-format on */
    ck_assert_int_eq(tokenizer_stream_feed(&st, id_of(t, "<0xE2>"), &piece, &len), 0);
    ck_assert_uint_eq(len, 0);
    ck_assert_int_eq(tokenizer_stream_flush(&st, &piece, &len), 0);
    ck_assert_str_eq(piece, "\xef\xbf\xbd"); /* held bytes at the end */
    /* control tokens: skipped, or written when the stream does not skip them */
    ck_assert_int_eq(tokenizer_stream_feed(&st, 2, &piece, &len), 0);
    ck_assert_uint_eq(len, 0);
    ck_assert_int_eq(tokenizer_stream_feed(&st, 99999, &piece, &len), -EINVAL);
    tokenizer_stream_release(&st);
    tokenizer_stream_init(&st, t, false);
    ck_assert_int_eq(tokenizer_stream_feed(&st, 2, &piece, &len), 0);
    ck_assert_str_eq(piece, "</s>");
    tokenizer_stream_release(&st);

    /* after a parsed special token SentencePiece starts a new dummy-prefixed fragment */
    n = encode(t, "</s>Hello", TOKENIZER_PARSE_SPECIAL, &ids);
    int32_t *ids2;
    size_t n2 = encode(t, "Hello", 0, &ids2);
    ck_assert_uint_eq(n, n2 + 1);
    ck_assert_int_eq(ids[0], 2);
    ck_assert_mem_eq(ids + 1, ids2, n2 * sizeof *ids2);
    free(ids);
    free(ids2);

    int32_t bad = tokenizer_n_vocab(t);
    char err[256], *out = NULL;
    ck_assert_int_eq(tokenizer_decode(t, &bad, 1, true, &out, &len, err, sizeof err), -EINVAL);
    ck_assert_ptr_null(out);
    tokenizer_destroy(&t);
}
END_TEST

/* ---- hand-made vocabularies -------------------------------------------------------------- */

/* GPT-2's byte -> character map, written out independently of the tokenizer's */
static int gpt2_char(int b, char *out)
{
    int cp;
    if ((b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff))
        cp = b;
    else if (b <= 0x20)
        cp = 0x100 + b; /* 0x00..0x20 come first */
    else if (b <= 0xa0)
        cp = 0x100 + 0x21 + (b - 0x7f); /* 0x7f..0xa0 */
    else
        cp = 0x100 + 0x21 + 0x22; /* 0xad */
    if (cp < 0x80) {
        out[0] = (char)cp;
        out[1] = 0;
    } else {
        out[0] = (char)(0xc0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3f));
        out[2] = 0;
    }
    return cp;
}

typedef struct vocab_spec {
    const char *model, *pre;
    const char *const *extra; /* tokens after the 256 byte tokens (BPE) or as given (SPM) */
    size_t n_extra;
    const float *scores;  /* SPM */
    const int32_t *types; /* SPM */
    const char *const *merges;
    size_t n_merges;
    int32_t bos;
    bool skip_tokens; /* leave tokenizer.ggml.tokens out */
    bool tokens_not_strings;
    bool short_scores;
} vocab_spec;

static void write_vocab(const char *name, const vocab_spec *v, char *path, size_t path_size)
{
    snprintf(path, path_size, "%s/%s.gguf", scratch_dir, name);
    gguf_writer *w = NULL;
    ck_assert_int_eq(gguf_writer_create(&w, 32), 0);
    ck_assert_int_eq(gguf_writer_add_str(w, "general.architecture", "llama"), 0);
    ck_assert_int_eq(gguf_writer_add_str(w, "tokenizer.ggml.model", v->model), 0);
    if (v->pre) ck_assert_int_eq(gguf_writer_add_str(w, "tokenizer.ggml.pre", v->pre), 0);
    bool bpe = !strcmp(v->model, "gpt2");
    size_t n = (bpe ? 256 : 0) + v->n_extra;
    char **toks = calloc(n, sizeof *toks);
    int32_t *types = calloc(n, sizeof *types);
    for (size_t i = 0; i < n; i++) {
        toks[i] = calloc(8, 1);
        if (bpe && i < 256)
            gpt2_char((int)i, toks[i]);
        else {
            free(toks[i]);
            toks[i] = strdup(v->extra[i - (bpe ? 256 : 0)]);
        }
        types[i] = v->types ? v->types[i] : 1;
    }
    if (v->tokens_not_strings) {
        ck_assert_int_eq(gguf_writer_add_arr(w, "tokenizer.ggml.tokens", GGUF_VT_INT32, types, n),
                         0);
    } else if (!v->skip_tokens) {
        ck_assert_int_eq(
            gguf_writer_add_arr_str(w, "tokenizer.ggml.tokens", (const char *const *)toks, n), 0);
    }
    ck_assert_int_eq(gguf_writer_add_arr(w, "tokenizer.ggml.token_type", GGUF_VT_INT32, types, n),
                     0);
    if (v->scores)
        ck_assert_int_eq(gguf_writer_add_arr(w, "tokenizer.ggml.scores", GGUF_VT_FLOAT32, v->scores,
                                             v->short_scores ? n - 1 : n),
                         0);
    if (v->merges)
        ck_assert_int_eq(
            gguf_writer_add_arr_str(w, "tokenizer.ggml.merges", v->merges, v->n_merges), 0);
    if (v->bos >= 0)
        ck_assert_int_eq(gguf_writer_add_u32(w, "tokenizer.ggml.bos_token_id", (uint32_t)v->bos),
                         0);
    char err[256];
    ck_assert_msg(gguf_writer_write(w, path, err, sizeof err) == 0, "%s", err);
    gguf_writer_destroy(&w);
    for (size_t i = 0; i < n; i++)
        free(toks[i]);
    free(toks);
    free(types);
}

static void check_ids(const tokenizer *t, const char *text, const char *const *want, size_t n_want)
{
    int32_t *ids;
    size_t n = encode(t, text, 0, &ids);
    ck_assert_msg(n == n_want, "'%s': %zu tokens, want %zu", text, n, n_want);
    for (size_t i = 0; i < n; i++) {
        size_t len;
        const char *got = tokenizer_token_text(t, ids[i], &len);
        ck_assert_msg(strlen(want[i]) == len && !memcmp(got, want[i], len),
                      "'%s' token %zu is '%.*s', want '%s'", text, i, (int)len, got, want[i]);
    }
    free(ids);
}

START_TEST(test_bpe_merge_order)
{
    /* "abc" with merges [a b, b c, ab c]: (a,b) has the best rank, then (ab,c): one token.
     * With [b c, a b, ab c]: (b,c) merges first, and (a,bc) is no merge: "a" "bc". */
    static const char *const extra[] = {"ab", "bc", "abc"};
    static const char *const m1[] = {"a b", "b c", "ab c"};
    static const char *const m2[] = {"b c", "a b", "ab c"};
    char path[512];
    vocab_spec v = {.model = "gpt2",
                    .pre = "gpt-2",
                    .extra = extra,
                    .n_extra = 3,
                    .merges = m1,
                    .n_merges = 3,
                    .bos = -1};
    write_vocab("merge1", &v, path, sizeof path);
    tokenizer *t = load_path(path);
    check_ids(t, "abc", (const char *const[]){"abc"}, 1);
    /* the pre-tokenizer makes "abc" and " abc" (U+0120 stands for the space): Ġ has no merge
     * with "a", so the second word is "Ġ" "abc" */
    check_ids(t, "abc abc", (const char *const[]){"abc", "\xc4\xa0", "abc"}, 3);
    tokenizer_destroy(&t);
    v.merges = m2;
    write_vocab("merge2", &v, path, sizeof path);
    t = load_path(path);
    check_ids(t, "abc", (const char *const[]){"a", "bc"}, 2);
    /* equal ranks cannot happen; the leftmost of two equal pairs goes first: "aaa" with [a a]
     * gives "aa" "a" */
    tokenizer_destroy(&t);
    static const char *const extra3[] = {"aa"};
    static const char *const m3[] = {"a a"};
    vocab_spec v3 = {.model = "gpt2",
                     .pre = "qwen2",
                     .extra = extra3,
                     .n_extra = 1,
                     .merges = m3,
                     .n_merges = 1,
                     .bos = -1};
    write_vocab("merge3", &v3, path, sizeof path);
    t = load_path(path);
    check_ids(t, "aaa", (const char *const[]){"aa", "a"}, 2);
    /* Qwen2's pre-tokenizer separates letters from digits */
    check_ids(t, "a1", (const char *const[]){"a", "1"}, 2);
    tokenizer_destroy(&t);
}
END_TEST

/* A vocabulary whose merges join everything across the places a pre-tokenizer splits, so that
 * the tokens show the splits: "1 2" ... "123 4" would make "1234" one token, "a 1" would join
 * a letter and a digit, "Ġ ." a space and a full stop (Ġ is U+0120, Ċ U+010A: the byte-level
 * characters of ' ' and '\n'; HAN is U+6F22 written the same way: bytes e6 bc a2 as "æ¼¢").
 * Each merge's result is a token of its own. */
#define SP "\xc4\xa0"
#define NL "\xc4\x8a"
#define HAN "\xc3\xa6\xc2\xbc\xc2\xa2"
static tokenizer *split_vocab(const char *name, const char *pre)
{
    static const char *const merges[] = {
        "1 2",
        "12 3",
        "123 4",
        "a 1",
        "1 a",
        ". N",
        ".N E",
        ".NE T",
        SP " .",
        SP ". .",
        SP " a",
        SP "a b",
        "a b",
        ". .",
        "! " NL,
        "H e",
        "He l",
        "Hel l",
        "Hell o",
        "W o",
        "Wo r",
        "Wor l",
        "Worl d",
        "Hello World",
        NL " a",
        NL " " NL,
        "\xc3\xa6 \xc2\xbc",
        "\xc3\xa6\xc2\xbc \xc2\xa2",
        HAN " a",
        "a " HAN,
        "' s",
        "ab 's",
    };
    enum { N_MERGES = sizeof merges / sizeof merges[0] };
    char joined[N_MERGES][24];
    const char *extra[N_MERGES];
    for (size_t i = 0; i < N_MERGES; i++) {
        const char *sp = strchr(merges[i] + 1, ' ');
        snprintf(joined[i], sizeof joined[i], "%.*s%s", (int)(sp - merges[i]), merges[i], sp + 1);
        extra[i] = joined[i];
    }
    char path[512];
    vocab_spec v = {.model = "gpt2",
                    .pre = pre,
                    .extra = extra,
                    .n_extra = N_MERGES,
                    .merges = merges,
                    .n_merges = N_MERGES,
                    .bos = -1};
    write_vocab(name, &v, path, sizeof path);
    return load_path(path);
}

START_TEST(test_pre_deepseek3)
{
    tokenizer *t = split_vocab("ds3", "deepseek-v3");
    /* \p{N}{1,3} first: digits in threes, never joined to letters */
    check_ids(t, "1234", (const char *const[]){"123", "4"}, 2);
    check_ids(t, "a1a", (const char *const[]){"a", "1", "a"}, 3);
    /* an ASCII punctuation character takes the ASCII letters after it */
    check_ids(t, ".NET", (const char *const[]){".NET"}, 1);
    /* a space goes with the punctuation run after it, and line breaks with the run */
    check_ids(t, "ab ..", (const char *const[]){"ab", SP ".."}, 2);
    check_ids(t, "!\n\na", (const char *const[]){"!" NL, NL, "a"}, 3);
    /* a space before letters is their prefix; a line break never is */
    check_ids(t, "ab ab\na", (const char *const[]){"ab", SP "ab", NL, "a"}, 4);
    /* no case split: "HelloWorld" is one letter run */
    check_ids(t, "HelloWorld", (const char *const[]){"HelloWorld"}, 1);
    /* U+6F22 is in [一-龥]: split off before the words see it */
    check_ids(t, "a\xe6\xbc\xa2", (const char *const[]){"a", HAN}, 2);
    check_ids(t, "ab's", (const char *const[]){"ab", "'s"}, 2);
    tokenizer_destroy(&t);
}
END_TEST

START_TEST(test_pre_kimi_k2)
{
    tokenizer *t = split_vocab("kimi", "kimi-k2");
    /* o200k's words: split where lower case turns upper, contractions kept with the word */
    check_ids(t, "HelloWorld", (const char *const[]){"Hello", "World"}, 2);
    check_ids(t, "ab's", (const char *const[]){"ab's"}, 1);
    check_ids(t, "1234", (const char *const[]){"123", "4"}, 2);
    /* Han runs first, and Han is in neither letter class: "漢a" and "a漢" are two words each */
    check_ids(t,
              "\xe6\xbc\xa2"
              "a",
              (const char *const[]){HAN, "a"}, 2);
    check_ids(t, "a\xe6\xbc\xa2", (const char *const[]){"a", HAN}, 2);
    /* a space goes with the punctuation run after it, and line breaks with the run ('/' not) */
    check_ids(t, "ab ..", (const char *const[]){"ab", SP ".."}, 2);
    check_ids(t, "!\n\na", (const char *const[]){"!" NL, NL, "a"}, 3);
    check_ids(t, "ab ab\na", (const char *const[]){"ab", SP "ab", NL, "a"}, 4);
    tokenizer_destroy(&t);
}
END_TEST

START_TEST(test_spm_scores)
{
    /* Symbols "\u2581" "a" "b": candidates "\u2581a" (-2) and "ab" (-1); "ab" scores higher and
     * merges first, then "\u2581" + "ab" = "\u2581ab" (-3) when that piece exists. */
    /* clang-format off */
    static const char *const extra[] = {"<unk>", "<s>", "</s>", "\xe2\x96\x81", "a", "b",
                                        "\xe2\x96\x81" "a", "ab", "\xe2\x96\x81" "ab", "<0x41>", "<0xC3>", "<0xA9>"};
    /* clang-format on */
    static const float scores[] = {0, 0, 0, -10, -10, -10, -2, -1, -3, 0, 0, 0};
    static const int32_t types[] = {2, 3, 3, 1, 1, 1, 1, 1, 1, 6, 6, 6};
    char path[512];
    vocab_spec v = {.model = "llama",
                    .extra = extra,
                    .n_extra = 12,
                    .scores = scores,
                    .types = types,
                    .bos = 1};
    write_vocab("spm1", &v, path, sizeof path);
    tokenizer *t = load_path(path);
    /* clang-format off */
    check_ids(t, "ab", (const char *const[]){"\xe2\x96\x81" "ab"}, 1);
    /* clang-format on */
    /* "A" has no piece: byte fallback; "é" too: its two bytes */
    check_ids(t, "A", (const char *const[]){"\xe2\x96\x81", "<0x41>"}, 2);
    check_ids(t, "\xc3\xa9", (const char *const[]){"\xe2\x96\x81", "<0xC3>", "<0xA9>"}, 3);
    /* a byte with no <0xNN> token and no piece: <unk> for the character */
    check_ids(t, "z", (const char *const[]){"\xe2\x96\x81", "<unk>"}, 2);
    /* control pieces are never produced by merging: "<s>" written in the text is characters */
    int32_t *ids;
    size_t n = encode(t, "<s>", 0, &ids);
    for (size_t i = 0; i < n; i++)
        ck_assert_int_ne(ids[i], 1);
    free(ids);
    n = encode(t, "<s>", TOKENIZER_PARSE_SPECIAL, &ids);
    ck_assert_uint_eq(n, 1);
    ck_assert_int_eq(ids[0], 1);
    free(ids);
    tokenizer_destroy(&t);

    /* without "\u2581ab" the merge stops at "\u2581" "ab" */
    static const float scores2[] = {0, 0, 0, -10, -10, -10, -2, -1, -3, 0, 0, 0};
    /* clang-format off */
    static const char *const extra2[] = {"<unk>", "<s>", "</s>", "\xe2\x96\x81", "a", "b",
                                         "\xe2\x96\x81" "a", "ab", "xx", "<0x41>", "<0xC3>", "<0xA9>"};
    /* clang-format on */
    vocab_spec v2 = v;
    v2.extra = extra2;
    v2.scores = scores2;
    write_vocab("spm2", &v2, path, sizeof path);
    t = load_path(path);
    check_ids(t, "ab", (const char *const[]){"\xe2\x96\x81", "ab"}, 2);
    tokenizer_destroy(&t);
}
END_TEST

static void expect_refused(const char *name, const vocab_spec *v, const char *key)
{
    char path[512], err[512] = "";
    write_vocab(name, v, path, sizeof path);
    gguf_file *f = NULL;
    tokenizer *t = NULL;
    ck_assert_msg(gguf_open(&f, path, err, sizeof err) == 0, "%s", err);
    int rc = tokenizer_create(&t, f, err, sizeof err);
    ck_assert_msg(rc == -EINVAL || rc == -ENOTSUP, "%s: loaded (rc %d)", name, rc);
    ck_assert_ptr_null(t);
    ck_assert_msg(strstr(err, key), "%s: message '%s' does not name %s", name, err, key);
    gguf_close(&f);
}

START_TEST(test_refuses_bad_metadata)
{
    static const char *const extra[] = {"ab"};
    static const char *const merges[] = {"a b"};
    static const char *const bad_merge[] = {"a b", "a \xe2\x98\x83"};
    static const char *const no_space[] = {"ab"};
    vocab_spec ok = {.model = "gpt2",
                     .pre = "qwen2",
                     .extra = extra,
                     .n_extra = 1,
                     .merges = merges,
                     .n_merges = 1,
                     .bos = -1};
    char path[512];
    write_vocab("ok", &ok, path, sizeof path);
    tokenizer *t = load_path(path); /* the base case loads */
    tokenizer_destroy(&t);

    vocab_spec v = ok;
    v.skip_tokens = true;
    expect_refused("no_tokens", &v, "tokenizer.ggml.tokens");
    v = ok;
    v.tokens_not_strings = true;
    expect_refused("int_tokens", &v, "tokenizer.ggml.tokens");
    v = ok;
    v.merges = bad_merge;
    v.n_merges = 2;
    expect_refused("bad_merge", &v, "tokenizer.ggml.merges");
    v.merges = no_space;
    v.n_merges = 1;
    expect_refused("merge_no_space", &v, "tokenizer.ggml.merges");
    v = ok;
    v.merges = NULL;
    expect_refused("no_merges", &v, "tokenizer.ggml.merges");
    v = ok;
    v.model = "bert";
    expect_refused("bad_model", &v, "tokenizer.ggml.model");
    v = ok;
    v.pre = "no-such-pre";
    expect_refused("bad_pre", &v, "tokenizer.ggml.pre");
    v = ok;
    v.bos = 100000;
    expect_refused("bad_bos", &v, "tokenizer.ggml.bos_token_id");

    static const char *const spm[] = {"<unk>", "<s>", "</s>", "a"};
    static const float scores[] = {0, 0, 0, -1};
    static const int32_t types[] = {2, 3, 3, 1};
    static const int32_t bad_types[] = {2, 3, 3, 9};
    static const int32_t bad_byte[] = {2, 3, 3, 6};
    vocab_spec s = {
        .model = "llama", .extra = spm, .n_extra = 4, .scores = scores, .types = types, .bos = 1};
    write_vocab("spm_ok", &s, path, sizeof path);
    t = load_path(path);
    tokenizer_destroy(&t);
    vocab_spec s2 = s;
    s2.short_scores = true;
    expect_refused("short_scores", &s2, "tokenizer.ggml.scores");
    s2 = s;
    s2.types = bad_types;
    expect_refused("bad_types", &s2, "tokenizer.ggml.token_type");
    s2.types = bad_byte;
    expect_refused("bad_byte", &s2, "tokenizer.ggml.tokens");
    s2 = s;
    s2.bos = -1; /* add_bos defaults to true for llama vocabularies: a BOS id is needed */
    expect_refused("no_bos", &s2, "tokenizer.ggml.bos_token_id");
}
END_TEST

static Suite *tokenizer_suite(void)
{
    Suite *s = suite_create("tokenizer");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, test_model_vocab_qwen3moe);
    tcase_add_test(tc, test_model_vocab_olmoe);
    tcase_add_test(tc, test_model_vocab_llama);
    tcase_add_test(tc, test_bpe_merge_order);
    tcase_add_test(tc, test_pre_deepseek3);
    tcase_add_test(tc, test_pre_kimi_k2);
    tcase_add_test(tc, test_spm_scores);
    tcase_add_test(tc, test_refuses_bad_metadata);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    const char *base = getenv("TMPDIR");
    snprintf(scratch_dir, sizeof scratch_dir, "%s/test_tokenizer.XXXXXX",
             base && *base ? base : "/tmp");
    if (!mkdtemp(scratch_dir)) {
        perror("mkdtemp");
        return 1;
    }
    SRunner *sr = srunner_create(tokenizer_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", scratch_dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", scratch_dir);
    return failed == 0 ? 0 : 1;
}
