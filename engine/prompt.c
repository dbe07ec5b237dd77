/*
 * Prompts: choosing and rendering the chat template, and tokenizing the result.  Kept apart
 * from the tokenizer and the template engine because the rules here (where BOS comes from,
 * which template wins) are serving policy, not format facts.
 */
#include "engine/prompt.h"

#include "base/vec.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int read_text_file(const char *path, char **out, size_t *len, char *err, size_t err_size)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        int e = errno;
        snprintf(err, err_size,
                 "chat template '%s' is neither a built-in (%s) nor a readable file: %s", path,
                 chat_template_builtin_names(), strerror(e));
        return -e;
    }
    char *buf = NULL;
    size_t n = 0, cap = 0;
    for (;;) {
        if (vec_reserve(&buf, &cap, n + 4096 + 1, 1, 8192) < 0) {
            free(buf);
            fclose(f);
            snprintf(err, err_size, "out of memory reading %s", path);
            return -ENOMEM;
        }
        size_t got = fread(buf + n, 1, cap - n - 1, f);
        n += got;
        if (got == 0) break;
    }
    int bad = ferror(f);
    fclose(f);
    if (bad) {
        free(buf);
        snprintf(err, err_size, "cannot read chat template file %s", path);
        return -EIO;
    }
    buf[n] = 0;
    *out = buf;
    *len = n;
    return 0;
}

int prompt_template_create(chat_template **out, const gguf_file *file, const char *override,
                           char *err, size_t err_size)
{
    *out = NULL;
    char msg[400];
    const char *src = NULL, *origin = NULL;
    char *owned = NULL;
    size_t len = 0;
    if (override && *override) {
        src = chat_template_builtin(override);
        if (src) {
            len = strlen(src);
            origin = override;
        } else {
            int rc = read_text_file(override, &owned, &len, err, err_size);
            if (rc) return rc;
            src = owned;
            origin = override;
        }
    } else {
        gguf_str s;
        if (gguf_get_str(file, "tokenizer.chat_template", &s)) return 0;
        src = s.data;
        len = (size_t)s.len;
        origin = "tokenizer.chat_template";
    }
    int rc = chat_template_create(out, src, len, msg, sizeof msg);
    if (rc)
        snprintf(err, err_size, "chat template (%s): %s; name a built-in template instead (%s)",
                 origin, msg, chat_template_builtin_names());
    free(owned);
    return rc;
}

int prompt_render_chat(const chat_template *tmpl, const tokenizer *tok, const cJSON *messages,
                       const cJSON *tools, char **text, size_t *len, char *err, size_t err_size)
{
    *text = NULL;
    if (!tmpl) {
        snprintf(err, err_size,
                 "this model has no chat template: use the completions API or "
                 "configure a built-in template");
        return -ENOTSUP;
    }
    cJSON *ctx = cJSON_CreateObject();
    /* The template reads the messages; a reference avoids copying them. */
    cJSON *ref = ctx ? cJSON_CreateArrayReference(messages ? messages->child : NULL) : NULL;
    if (!ctx || !ref || !cJSON_AddItemToObject(ctx, "messages", ref) ||
        !cJSON_AddBoolToObject(ctx, "add_generation_prompt", 1) ||
        !cJSON_AddStringToObject(ctx, "bos_token", tokenizer_bos_text(tok)) ||
        !cJSON_AddStringToObject(ctx, "eos_token", tokenizer_eos_text(tok)) ||
        (tools && !cJSON_AddItemToObject(ctx, "tools", cJSON_CreateArrayReference(tools->child)))) {
        if (ref && !cJSON_GetObjectItem(ctx, "messages")) cJSON_Delete(ref);
        cJSON_Delete(ctx);
        snprintf(err, err_size, "out of memory");
        return -ENOMEM;
    }
    int rc = chat_template_render(tmpl, ctx, NULL, text, len, err, err_size);
    cJSON_Delete(ctx);
    return rc;
}

int prompt_tokenize(const tokenizer *tok, const char *text, size_t len, int32_t **ids,
                    size_t *n_ids, char *err, size_t err_size)
{
    unsigned flags = TOKENIZER_PARSE_SPECIAL;
    const char *bos = tokenizer_bos_text(tok);
    size_t bos_len = strlen(bos);
    bool has_bos = bos_len && len >= bos_len && memcmp(text, bos, bos_len) == 0;
    if (!has_bos) flags |= TOKENIZER_ADD_SPECIAL;
    return tokenizer_encode(tok, text, len, flags, ids, n_ids, err, err_size);
}
