/*
 * fuzz_gguf_header — arbitrary bytes as the header of a GGUF file (magic, counts, metadata,
 * tensor infos), followed by a data section of zeros that the target supplies, then what the
 * server builds from that metadata: the tokenizer (tokenizer.ggml.*) and the chat template
 * (tokenizer.chat_template).
 *
 * Why a second GGUF target: mutations of a whole file almost never keep the tensors' data
 * extents consistent with the file's length, so the tensor-info checks past the extents and
 * the metadata consumers are rarely reached.  Here the input only has to be a plausible header:
 * a hole of zeros after it (no memory is used while nobody reads it) gives tensor offsets room
 * to be valid, and the vocabulary and template code run on every file that opens.  12 MiB fits
 * the tensors of tools/gen_model.py's tiny models; a bigger hole would let counts checked
 * against the bytes left claim millions of entries, and inputs that allocate for them crawl.
 */
#include "fuzz.h"
#include "gguf/gguf.h"
#include "template/template.h"
#include "tokenizer/tokenizer.h"

#include <string.h>

#define DATA_HOLE_BYTES (12ull << 20)

static uint64_t sink;

static void use_tokenizer(const tokenizer *t)
{
    static const char text[] = "Hello world, <|im_end|> caf\xc3\xa9 123 \xe2\x96\x81x\n\t";
    int32_t *ids = NULL;
    size_t n_ids = 0;
    char err[256];
    int rc =
        tokenizer_encode(t, text, sizeof text - 1, TOKENIZER_ADD_SPECIAL | TOKENIZER_PARSE_SPECIAL,
                         &ids, &n_ids, err, sizeof err);
    if (rc == 0) {
        int32_t n_vocab = tokenizer_n_vocab(t);
        for (size_t i = 0; i < n_ids; i++)
            FUZZ_CHECK(ids[i] >= 0 && ids[i] < n_vocab);
        char *out = NULL;
        size_t len = 0;
        if (tokenizer_decode(t, ids, n_ids, false, &out, &len, err, sizeof err) == 0)
            FUZZ_CHECK(out && strlen(out) <= len);
        free(out);
    }
    free(ids);
    sink += (uint64_t)tokenizer_bos(t) + (uint64_t)tokenizer_eos(t) + tokenizer_is_eog(t, 0);
}

static void use_template(const gguf_file *f, const tokenizer *t)
{
    gguf_str src;
    if (gguf_get_str(f, "tokenizer.chat_template", &src) != 0) return;
    chat_template *tpl = NULL;
    char err[256];
    if (chat_template_create(&tpl, src.data, src.len, err, sizeof err) != 0) return;
    cJSON *ctx = cJSON_Parse("{\"messages\":[{\"role\":\"system\",\"content\":\"Be brief.\"},"
                             "{\"role\":\"user\",\"content\":\"Hi\"},"
                             "{\"role\":\"assistant\",\"content\":\"Hello\"},"
                             "{\"role\":\"user\",\"content\":\"Bye\"}],"
                             "\"add_generation_prompt\":true}");
    if (ctx) {
        cJSON_AddStringToObject(ctx, "bos_token", t ? tokenizer_bos_text(t) : "<s>");
        cJSON_AddStringToObject(ctx, "eos_token", t ? tokenizer_eos_text(t) : "</s>");
        chat_template_render_opts opts = {.date_string = "2024-05-06"};
        char *text = NULL;
        size_t len = 0;
        if (chat_template_render(tpl, ctx, &opts, &text, &len, err, sizeof err) == 0)
            FUZZ_CHECK(text && strlen(text) <= len);
        free(text);
        cJSON_Delete(ctx);
    }
    chat_template_destroy(&tpl);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *path = fuzz_file(data, size, DATA_HOLE_BYTES);
    if (!path) return 0;
    gguf_file *f = NULL;
    char err[512];
    if (gguf_open(&f, path, err, sizeof err) != 0) return 0;
    for (uint64_t i = 0; i < gguf_n_tensors(f); i++) {
        const gguf_tensor *t = gguf_tensor_at(f, i);
        FUZZ_CHECK(gguf_data_offset(f) + t->offset + t->n_bytes <= gguf_file_size(f));
        sink += t->name.len;
    }
    tokenizer *tok = NULL;
    if (tokenizer_create(&tok, f, err, sizeof err) == 0) use_tokenizer(tok);
    use_template(f, tok);
    tokenizer_destroy(&tok);
    gguf_close(&f);
    return 0;
}
