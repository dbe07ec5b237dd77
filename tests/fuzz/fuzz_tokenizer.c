/*
 * fuzz_tokenizer — arbitrary bytes as text: encode, check the ids, decode them back, and decode
 * them again through the streaming API one token at a time.
 *
 * The first byte picks the vocabulary (its low four bits) and the flags; the rest is the text.
 * The vocabularies are the ones tools/gen_model.py makes for its tiny models (SentencePiece for
 * llama, byte-level BPE with the qwen2, olmo and gpt-4o pre-tokenizers), cut down to their
 * tokenizer metadata, and two byte-level BPEs learnt on the tokenizer cross-check's corpus for
 * the deepseek-v3 and kimi-k2 pre-tokenizers (tests/data/tokenizer/synth_vocab.py), all
 * committed in tests/fuzz/data/ (tools/fuzz_seeds.py writes them), so that every run and every
 * build sees the same ones.  Checked: ids are in range; the stream gives valid UTF-8 only; for
 * every byte-level vocabulary but qwen2, valid UTF-8 text without special tokens decodes back to
 * itself, as byte-level BPE must (qwen2 normalises to NFC first, SentencePiece may add a space).
 */
#include "base/utf8.h"
#include "fuzz.h"
#include "tokenizer/tokenizer.h"

#include <errno.h>
#include <string.h>

#ifndef MOE_FUZZ_DATA
#error "MOE_FUZZ_DATA must name tests/fuzz/data (tests/fuzz/meson.build sets it)"
#endif

enum { VOCAB_SPM, VOCAB_QWEN2, VOCAB_OLMO, VOCAB_GPT4O, VOCAB_DEEPSEEK3, VOCAB_KIMI_K2, N_VOCABS };
static const char *const vocab_files[N_VOCABS] = {"vocab-spm.gguf",         "vocab-qwen2.gguf",
                                                  "vocab-olmo.gguf",        "vocab-gpt-4o.gguf",
                                                  "vocab-deepseek-v3.gguf", "vocab-kimi-k2.gguf"};
static tokenizer *vocabs[N_VOCABS];

static tokenizer *load(const char *name)
{
    char path[1024], err[512];
    snprintf(path, sizeof path, "%s/%s", MOE_FUZZ_DATA, name);
    gguf_file *f = NULL;
    tokenizer *t = NULL;
    if (gguf_open(&f, path, err, sizeof err) != 0 ||
        tokenizer_create(&t, f, err, sizeof err) != 0) {
        fprintf(stderr, "fuzz_tokenizer: %s\n", err);
        abort(); /* the committed vocabularies must load: a broken setup, not a finding */
    }
    gguf_close(&f);
    return t;
}

static void check_stream(const tokenizer *t, const int32_t *ids, size_t n, bool skip_special)
{
    tokenizer_stream s;
    tokenizer_stream_init(&s, t, skip_special);
    const char *text;
    size_t len;
    for (size_t i = 0; i < n; i++) {
        FUZZ_CHECK(tokenizer_stream_feed(&s, ids[i], &text, &len) == 0);
        FUZZ_CHECK(utf8_valid_prefix(text, len) == len);
    }
    FUZZ_CHECK(tokenizer_stream_flush(&s, &text, &len) == 0);
    FUZZ_CHECK(utf8_valid_prefix(text, len) == len);
    /* An id out of range is refused, not read. */
    FUZZ_CHECK(tokenizer_stream_feed(&s, tokenizer_n_vocab(t), &text, &len) == -EINVAL);
    tokenizer_stream_release(&s);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!vocabs[0])
        for (int i = 0; i < N_VOCABS; i++)
            vocabs[i] = load(vocab_files[i]);
    if (size < 1) return 0;
    int which = (data[0] & 0x0f) % N_VOCABS; /* the flag bits above must not move it */
    unsigned flags = (data[0] & 0x10 ? TOKENIZER_ADD_SPECIAL : 0) |
                     (data[0] & 0x20 ? TOKENIZER_PARSE_SPECIAL : 0);
    bool skip_special = data[0] & 0x40;
    const char *text = (const char *)data + 1;
    size_t len = size - 1;
    const tokenizer *t = vocabs[which];

    int32_t *ids = NULL;
    size_t n_ids = 0;
    char err[256];
    int rc = tokenizer_encode(t, text, len, flags, &ids, &n_ids, err, sizeof err);
    if (rc != 0) {
        FUZZ_CHECK(rc < 0);
        free(ids);
        return 0;
    }
    int32_t n_vocab = tokenizer_n_vocab(t);
    for (size_t i = 0; i < n_ids; i++) {
        FUZZ_CHECK(ids[i] >= 0 && ids[i] < n_vocab);
        size_t piece_len;
        FUZZ_CHECK(tokenizer_piece(t, ids[i], &piece_len) != NULL);
    }
    char *out = NULL;
    size_t out_len = 0;
    FUZZ_CHECK(tokenizer_decode(t, ids, n_ids, skip_special, &out, &out_len, err, sizeof err) == 0);
    FUZZ_CHECK(out && out[out_len] == 0);
    if (which != VOCAB_SPM && which != VOCAB_QWEN2 && flags == 0 &&
        utf8_valid_prefix(text, len) == len && !memchr(text, 0, len))
        FUZZ_CHECK(out_len == len && memcmp(out, text, len) == 0);
    free(out);
    check_stream(t, ids, n_ids, skip_special);
    free(ids);
    return 0;
}
