/*
 * fuzz_template — arbitrary bytes as a chat template and the conversation it renders.
 *
 * Input: the template source, then optionally a NUL and the context.  A context that starts
 * with '{' and parses as a JSON object is the render's globals as they are (tools, nested
 * values, odd types: whatever a model file's template may meet); otherwise it is a message list,
 * messages separated by 0x1e, each message's first byte choosing its role and the rest its
 * content, with add_generation_prompt set and the usual bos/eos tokens.  Without a NUL a fixed
 * three-message conversation is used, so that plain template files are good seeds.
 * The date is fixed so that strftime_now renders the same on every run.
 */
#include "fuzz.h"
#include "template/template.h"

#include <string.h>

static cJSON *messages_context(const char *p, size_t n)
{
    static const char *const roles[] = {"system", "user", "assistant", "tool", "developer"};
    cJSON *ctx = cJSON_CreateObject();
    cJSON *msgs = cJSON_AddArrayToObject(ctx, "messages");
    if (!msgs) return ctx;
    while (n > 0) {
        const char *end = memchr(p, 0x1e, n);
        size_t len = end ? (size_t)(end - p) : n;
        cJSON *m = cJSON_CreateObject();
        cJSON_AddItemToArray(msgs, m);
        cJSON_AddStringToObject(m, "role", roles[(unsigned char)p[0] % 5]);
        /* cJSON strings end at a NUL; the content is what precedes it. */
        char *content = strndup(p + 1, len ? len - 1 : 0);
        if (content) cJSON_AddStringToObject(m, "content", content);
        free(content);
        if (!end) break;
        p = end + 1;
        n -= len + 1;
    }
    cJSON_AddBoolToObject(ctx, "add_generation_prompt", true);
    cJSON_AddStringToObject(ctx, "bos_token", "<s>");
    cJSON_AddStringToObject(ctx, "eos_token", "</s>");
    return ctx;
}

static cJSON *make_context(const char *p, size_t n)
{
    if (n && p[0] == '{') {
        cJSON *ctx = cJSON_ParseWithLength(p, n);
        if (cJSON_IsObject(ctx)) return ctx;
        cJSON_Delete(ctx);
    }
    return messages_context(p, n);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char default_conv[] = "\x00You are helpful.\x1e\x01Hi there\x1e\x02Hello!\x1e"
                                       "\x01What is 2+2?";
    const char *src = (const char *)data;
    const uint8_t *nul = memchr(data, 0, size);
    size_t src_len = nul ? (size_t)(nul - data) : size;
    const char *conv = nul ? (const char *)nul + 1 : default_conv;
    size_t conv_len = nul ? size - src_len - 1 : sizeof default_conv - 1;

    chat_template *t = NULL;
    char err[512];
    int rc = chat_template_create(&t, src, src_len, err, sizeof err);
    if (rc != 0) {
        FUZZ_CHECK(rc < 0 && t == NULL);
        return 0;
    }
    cJSON *ctx = make_context(conv, conv_len);
    if (ctx) {
        chat_template_render_opts opts = {.date_string = "2024-05-06"};
        char *text = NULL;
        size_t len = 0;
        rc = chat_template_render(t, ctx, &opts, &text, &len, err, sizeof err);
        if (rc == 0)
            FUZZ_CHECK(text && text[len] == 0);
        else
            FUZZ_CHECK(rc < 0 && text == NULL);
        free(text);
        cJSON_Delete(ctx);
    }
    chat_template_destroy(&t);
    return 0;
}
