/*
 * Shared between the tokenizer's files (tokenizer.c: loading, special tokens; tokenizer_bpe.c:
 * byte-level BPE; tokenizer_pre.c: its pre-tokenizers; tokenizer_spm.c: SentencePiece BPE;
 * tokenizer_nfc.c: NFC; tokenizer_decode.c: decoding and streams; unicode_data.c: generated
 * tables).  Not part of the public interface.
 */
#ifndef MOE_TOKENIZER_INTERNAL_H
#define MOE_TOKENIZER_INTERNAL_H

#include "base/utf8.h"
#include "base/vec.h"
#include "tokenizer/tokenizer.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Category flags of a code point (tools/gen_unicode.py writes the table). */
#define TOK_UC_L 0x01u     /* letter, \p{L} */
#define TOK_UC_N 0x02u     /* number, \p{N} */
#define TOK_UC_SPACE 0x04u /* White_Space, what \s matches */
#define TOK_UC_P 0x08u
#define TOK_UC_S 0x10u
#define TOK_UC_M 0x20u
#define TOK_UC_C 0x40u
#define TOK_UC_LU 0x80u   /* upper- or title-case letter (Lu, Lt) */
#define TOK_UC_LL 0x100u  /* lower-case letter (Ll) */
#define TOK_UC_HAN 0x200u /* the Han script, \p{Han} (a script, not a category) */
uint16_t tok__uc_flags(uint32_t cp);
uint8_t tok__uc_ccc(uint32_t cp); /* canonical combining class */
/* canonical decomposition: 0, 1 or 2 code points */
int tok__uc_decomp(uint32_t cp, uint32_t out[2]);
uint32_t tok__uc_compose(uint32_t a, uint32_t b); /* primary composite of a pair, 0 if none */
/* Unicode normalisation form C of UTF-8 text; bytes that are not UTF-8 pass through unchanged.
 * *out is NULL when the text is already NFC (the common case, found without allocating),
 * else malloc'd. */
int tok__nfc(const char *text, size_t len, char **out, size_t *out_len);

typedef enum tok_model { TOK_MODEL_SPM, TOK_MODEL_BPE } tok_model;

typedef enum tok_pre {
    TOK_PRE_GPT2,      /* GPT-2's regex: gpt-2, olmo, mpt, default */
    TOK_PRE_LLAMA3,    /* Llama 3's regex, digits in groups of up to three */
    TOK_PRE_QWEN2,     /* Llama 3's regex with single digits */
    TOK_PRE_QWEN35,    /* Qwen2's, with combining marks counted with letters */
    TOK_PRE_DEEPSEEK,  /* deepseek-llm: a sequence of isolating splits */
    TOK_PRE_GPT4O,     /* o200k (gpt-4o, gpt-oss): words split by letter case */
    TOK_PRE_DEEPSEEK3, /* deepseek-v3: digits, then CJK, then words, each isolated in turn */
    TOK_PRE_KIMI_K2,   /* kimi-k2: o200k's words with Han runs taken out first */
} tok_pre;

typedef struct tok_token {
    uint32_t off, len;         /* stored text in tokenizer.text */
    uint32_t dec_off, dec_len; /* decoded bytes in tokenizer.dec */
    float score;
    uint8_t type; /* tokenizer_token_type */
} tok_token;

/* Open-addressing map from a 64-bit key to a 64-bit value (merge pairs). */
typedef struct tok_map64 {
    uint64_t *keys; /* UINT64_MAX = empty */
    uint64_t *vals;
    size_t mask;
} tok_map64;

struct tokenizer {
    tok_model model;
    tok_pre pre;
    bool ignore_merges;    /* a whole pre-token that is in the vocabulary wins (Llama 3) */
    bool nfc;              /* text is NFC-normalised first (Qwen2's tokenizer.json says so) */
    bool add_space_prefix; /* SPM dummy prefix */
    bool add_bos, add_eos;
    int32_t n_vocab;
    int32_t bos, eos, unk;
    tok_token *tokens;
    char *text;     /* all token texts, each NUL-terminated */
    char *dec;      /* all decoded texts */
    int32_t *index; /* text -> id, open addressing, -1 = empty */
    size_t index_mask;
    tok_map64 merges;        /* (left << 32 | right) -> (rank << 32 | merged id) */
    int32_t byte_token[256]; /* BPE: token of each byte's character; SPM: <0xNN>, -1 if none */
    int32_t *specials;       /* tokens split out of the text first, longest text first */
    size_t n_specials;
    uint8_t *eog; /* n_vocab flags */
};

uint64_t tok__hash(const char *s, size_t len);
/* Writes the message into err (when given) and returns rc. */
int tok__fail(char *err, size_t err_size, int rc, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Growable id vector. */
typedef struct tok_ids {
    int32_t *v;
    size_t n, cap;
} tok_ids;
int tok__ids_push(tok_ids *ids, int32_t id);

/* ---- pre-tokenizers (tokenizer_pre.c) ---- */

/* A piece of text as code points: cp[i] starts at byte off[i]; off[n] is the end; fl[i] its
 * TOK_UC_* flags.  Bytes that are not UTF-8 become UTF8_INVALID (0xFFFFFFFF) with no flags
 * (they match [^\s\p{L}\p{N}]). */
typedef struct tok_cps {
    uint32_t *cp;
    uint16_t *fl;
    size_t *off;
    size_t n;
} tok_cps;
/* tok__cps_release frees what tok__cps_from_utf8 allocated, after a failure too. */
int tok__cps_from_utf8(const char *text, size_t len, tok_cps *c);
void tok__cps_release(tok_cps *c);

typedef struct tok_span {
    size_t a, b; /* code point indices, [a, b) */
} tok_span;
typedef struct tok_spans {
    tok_span *v;
    size_t n, cap;
} tok_spans;
/* The words of c as pre-tokenizer `pre` splits it, in order, covering c: words->v is malloc'd
 * (the caller frees it, after a failure too). */
int tok__pre_tokenize(const tok_cps *c, tok_pre pre, tok_spans *words);

/* Encode one fragment of plain text (no special tokens inside) and append to ids. */
int tok__bpe_encode(const tokenizer *t, const char *text, size_t len, tok_ids *ids);
int tok__spm_encode(const tokenizer *t, const char *text, size_t len, bool add_prefix,
                    tok_ids *ids);
/* Builds the BPE merges map and byte-level decode strings; err names the key on failure. */
int tok__bpe_load(tokenizer *t, const gguf_file *f, char *err, size_t err_size);
bool tok__map64_get(const tok_map64 *m, uint64_t key, uint64_t *val);

#endif
