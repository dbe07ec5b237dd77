/*
 * tokenizer — text to token ids and back, from the vocabulary a GGUF file carries.
 *
 * Contract
 * - tokenizer_create() reads `tokenizer.ggml.*` from an open gguf_file and copies what it needs:
 *   the tokenizer does not reference the file afterwards and may outlive it.  Two models:
 *     `llama`: SentencePiece BPE (pieces with scores, U+2581 for spaces, a dummy space prefix
 *              when `tokenizer.ggml.add_space_prefix` says so (default true), byte fallback to
 *              the <0xNN> tokens, <unk> otherwise);
 *     `gpt2`:  byte-level BPE with `tokenizer.ggml.merges`, after the pre-tokenizer that
 *              `tokenizer.ggml.pre` names: "gpt-2", "olmo", "mpt", "phi-2" (GPT-2's regex),
 *              "llama-bpe", "llama3", "llama-v3", "dbrx", "smaug-bpe", "glm4" (Llama 3's),
 *              "qwen2", "deepseek-r1-qwen" (Qwen2's), "qwen35" (Qwen3.5's), "deepseek-llm",
 *              "gpt-4o" (o200k's), "deepseek-v3" (DeepSeek-V3 / R1's), "kimi-k2" (Kimi-K2's);
 *              tokenizer/README.md lists them with their flags and checks.  A missing `pre`
 *              or "default" uses GPT-2's regex, as Hugging Face's ByteLevel pre-tokenizer does
 *              (llama.cpp has an odd fallback there; we do not copy it), and says so on
 *              stderr.  Any other `pre` is refused.
 *   Malformed metadata (missing or mistyped keys, lengths that disagree, merges naming unknown
 *   tokens, unknown model names) is refused with -EINVAL / -ENOTSUP and a message naming the key.
 * - Encoding follows llama.cpp's llama_tokenize, which was itself matched to Hugging Face
 *   `tokenizers` and `sentencepiece`: user-defined tokens are always split out of the text first,
 *   CONTROL tokens too with TOKENIZER_PARSE_SPECIAL (longest token first), then every remaining
 *   fragment is encoded on its own.  For pre "qwen2" each fragment is first put in Unicode NFC,
 *   as Qwen2's tokenizer.json asks (Qwen3.5's does not; llama.cpp skips that step, so it
 *   differs from Hugging Face on decomposed text such as "e" + U+0301); no other normalisation
 *   is applied.
 * - Decoding is the inverse: byte-level tokens map back to their bytes, <0xNN> to one byte,
 *   U+2581 to a space, and for `llama` vocabularies the dummy-prefix space of the first text
 *   piece is dropped as sentencepiece does.  Control and unknown tokens are left out when
 *   skip_special, written as their text otherwise.  tokenizer_decode returns raw bytes (a token
 *   sequence may end inside a UTF-8 character); the stream API returns only valid UTF-8.
 * - A tokenizer is immutable after load: any number of threads may encode and decode at once.
 *   A tokenizer_stream belongs to one thread (one request).
 * - Errors are negative errno values with a message in the caller's buffer.
 */
#ifndef MOE_TOKENIZER_H
#define MOE_TOKENIZER_H

#include "gguf/gguf.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct tokenizer tokenizer;

enum {
    /* add BOS/EOS as the vocabulary's add_bos/add_eos flags say */
    TOKENIZER_ADD_SPECIAL = 1u << 0,
    /* control tokens written in the text are parsed as themselves */
    TOKENIZER_PARSE_SPECIAL = 1u << 1
};

/* Token types as GGUF stores them (tokenizer.ggml.token_type). */
typedef enum tokenizer_token_type {
    TOKENIZER_TT_UNDEFINED = 0,
    TOKENIZER_TT_NORMAL = 1,
    TOKENIZER_TT_UNKNOWN = 2,
    TOKENIZER_TT_CONTROL = 3,
    TOKENIZER_TT_USER_DEFINED = 4,
    TOKENIZER_TT_UNUSED = 5,
    TOKENIZER_TT_BYTE = 6,
} tokenizer_token_type;

int tokenizer_create(tokenizer **out, const gguf_file *f, char *err, size_t err_size);
void tokenizer_destroy(tokenizer **t); /* sets *t to NULL; NULL is fine */

int32_t tokenizer_n_vocab(const tokenizer *t);
int32_t tokenizer_bos(const tokenizer *t);          /* -1 when none */
int32_t tokenizer_eos(const tokenizer *t);          /* -1 when none */
const char *tokenizer_bos_text(const tokenizer *t); /* "" when none */
const char *tokenizer_eos_text(const tokenizer *t);
bool tokenizer_add_bos(const tokenizer *t); /* what TOKENIZER_ADD_SPECIAL does */
bool tokenizer_add_eos(const tokenizer *t);
/* End-of-generation set, as llama.cpp builds it: EOS, EOT, EOM and the tokens named
 * <|im_end|>, <|endoftext|>, <|eot_id|>, <|eom_id|>, <|end|>, <end_of_turn>, ... */
bool tokenizer_is_eog(const tokenizer *t, int32_t id);
/* The stored text of a token (not decoded: byte-level or U+2581 form); NULL when out of range. */
const char *tokenizer_token_text(const tokenizer *t, int32_t id, size_t *len);
tokenizer_token_type tokenizer_token_type_of(const tokenizer *t, int32_t id);
/* The id of a token written exactly as stored, -1 when absent. */
int32_t tokenizer_find(const tokenizer *t, const char *text, size_t len);

/* The bytes one token stands for, as a stream or llama.cpp's token_to_piece gives them: the
 * leading space of a SentencePiece piece is kept (tokenizer_decode drops it at the start of a
 * text), control tokens give their text.  Points into the tokenizer, valid while it lives, NOT
 * NUL-terminated (byte tokens may be a part of a character); NULL when id is out of range.
 * For logprobs' per-token bytes. */
const char *tokenizer_piece(const tokenizer *t, int32_t id, size_t *len);

/* *ids is malloc'd (the caller frees it, also when *n_ids is 0). */
int tokenizer_encode(const tokenizer *t, const char *text, size_t len, unsigned flags,
                     int32_t **ids, size_t *n_ids, char *err, size_t err_size);
/* *text is malloc'd and NUL-terminated (the NUL is not counted in *len). */
int tokenizer_decode(const tokenizer *t, const int32_t *ids, size_t n, bool skip_special,
                     char **text, size_t *len, char *err, size_t err_size);

/* Streaming decode for servers: feed tokens one by one, get back only complete UTF-8 characters
 * (a character split across tokens is held until complete; bytes that can never form a valid
 * character come out as U+FFFD, one per maximal invalid subpart as Python's
 * decode(errors="replace") does).  Unlike tokenizer_decode, the stream keeps a leading space:
 * it continues a prompt. */
typedef struct tokenizer_stream {
    const tokenizer *tok;
    bool skip_special;
    char pending[4]; /* bytes of a character not yet complete */
    size_t n_pending;
    char *out; /* returned text, owned by the stream */
    size_t out_cap;
} tokenizer_stream;

void tokenizer_stream_init(tokenizer_stream *s, const tokenizer *t, bool skip_special);
/* 0 or -ENOMEM / -EINVAL (id out of range); *text may be empty. */
int tokenizer_stream_feed(tokenizer_stream *s, int32_t id, const char **text, size_t *len);
/* Whatever is still held comes out as U+FFFD. */
int tokenizer_stream_flush(tokenizer_stream *s, const char **text, size_t *len);
void tokenizer_stream_release(tokenizer_stream *s);

#endif
