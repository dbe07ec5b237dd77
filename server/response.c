/*
 * The JSON the server sends: whole responses (chat.completion, text_completion), stream chunks,
 * the usage chunk, logprobs in both of OpenAI's shapes, and the models list.
 *
 * Engine text is sent through srv__utf8_clean() although the engine promises whole UTF-8
 * characters: cJSON copies bytes as they are, and one stray byte would make the whole response
 * unreadable to a strict JSON parser.  Logprob tokens need it for real (a token may be part of
 * a character); their exact bytes travel in the "bytes" arrays.
 */
#include "server/server_internal.h"

#include "moe_config.h"

#include <stdlib.h>
#include <string.h>

/* ---- responses ----------------------------------------------------------------------------------
 */

const char *srv__finish_name(const srv_choice *ch)
{
    if (ch->why == SRV_FINISH_LENGTH) return "length";
    return ch->n_calls ? "tool_calls" : "stop";
}

static bool add_clean_string(cJSON *o, const char *key, const char *s, size_t len)
{
    size_t n = 0;
    char *clean = srv__utf8_clean(s, len, &n);
    bool ok = clean && cJSON_AddStringToObject(o, key, clean);
    free(clean);
    return ok;
}

static cJSON *token_json(const srv_token_logprob_t *t)
{
    cJSON *o = cJSON_CreateObject();
    cJSON *bytes = o ? cJSON_CreateArray() : NULL;
    if (!bytes || !add_clean_string(o, "token", t->text, t->len) ||
        !cJSON_AddNumberToObject(o, "logprob", t->logprob) ||
        !cJSON_AddItemToObject(o, "bytes", bytes)) {
        cJSON_Delete(bytes);
        cJSON_Delete(o);
        return NULL;
    }
    for (size_t i = 0; i < t->len; i++)
        if (!cJSON_AddItemToArray(bytes, cJSON_CreateNumber((unsigned char)t->text[i]))) {
            cJSON_Delete(o);
            return NULL;
        }
    return o;
}

cJSON *srv__lp_entry(const srv_ev *ev)
{
    cJSON *o = token_json(&ev->chosen);
    cJSON *top = o ? cJSON_AddArrayToObject(o, "top_logprobs") : NULL;
    if (!top) {
        cJSON_Delete(o);
        return NULL;
    }
    for (size_t i = 0; i < ev->n_top; i++)
        if (!cJSON_AddItemToArray(top, token_json(&ev->top[i]))) {
            cJSON_Delete(o);
            return NULL;
        }
    return o;
}

/* Chat: {"content": [entries], "refusal": null}.  Completions, the legacy shape: tokens,
 * token_logprobs, top_logprobs [{token: logprob}], text_offset. */
static cJSON *logprobs_json(srv_kind_t kind, cJSON *entries, size_t offset)
{
    cJSON *o = cJSON_CreateObject();
    if (!o) return NULL;
    if (kind == SRV_KIND_CHAT) {
        cJSON *copy = cJSON_Duplicate(entries, true);
        if (!copy || !cJSON_AddItemToObject(o, "content", copy) ||
            !cJSON_AddNullToObject(o, "refusal")) {
            cJSON_Delete(copy);
            cJSON_Delete(o);
            return NULL;
        }
        return o;
    }
    cJSON *tokens = cJSON_AddArrayToObject(o, "tokens");
    cJSON *lps = cJSON_AddArrayToObject(o, "token_logprobs");
    cJSON *tops = cJSON_AddArrayToObject(o, "top_logprobs");
    cJSON *offsets = cJSON_AddArrayToObject(o, "text_offset");
    if (!offsets) goto fail;
    const cJSON *en;
    cJSON_ArrayForEach(en, entries)
    {
        const cJSON *tok = cJSON_GetObjectItemCaseSensitive(en, "token");
        const cJSON *bytes = cJSON_GetObjectItemCaseSensitive(en, "bytes");
        cJSON *top = cJSON_CreateObject();
        if (!cJSON_AddItemToArray(tokens, cJSON_CreateString(tok->valuestring)) ||
            !cJSON_AddItemToArray(
                lps,
                cJSON_CreateNumber(cJSON_GetObjectItemCaseSensitive(en, "logprob")->valuedouble)) ||
            !cJSON_AddItemToArray(tops, top) ||
            !cJSON_AddItemToArray(offsets, cJSON_CreateNumber((double)offset)))
            goto fail;
        offset += (size_t)cJSON_GetArraySize(bytes);
        const cJSON *alt;
        cJSON_ArrayForEach(alt, cJSON_GetObjectItemCaseSensitive(en, "top_logprobs"))
        {
            const cJSON *t = cJSON_GetObjectItemCaseSensitive(alt, "token");
            if (!cJSON_GetObjectItemCaseSensitive(top, t->valuestring) &&
                !cJSON_AddNumberToObject(
                    top, t->valuestring,
                    cJSON_GetObjectItemCaseSensitive(alt, "logprob")->valuedouble))
                goto fail;
        }
    }
    return o;
fail:
    cJSON_Delete(o);
    return NULL;
}

static cJSON *envelope(const srv_call *call, const char *model_id, const char *object)
{
    cJSON *o = cJSON_CreateObject();
    if (!o || !cJSON_AddStringToObject(o, "id", call->id) ||
        !cJSON_AddStringToObject(o, "object", object) ||
        !cJSON_AddNumberToObject(o, "created", (double)call->created) ||
        !cJSON_AddStringToObject(o, "model", model_id) ||
        !cJSON_AddStringToObject(o, "system_fingerprint", "moeserve-" MOE_VERSION)) {
        cJSON_Delete(o);
        return NULL;
    }
    return o;
}

static bool add_usage(cJSON *o, const srv_call *call)
{
    cJSON *u = cJSON_AddObjectToObject(o, "usage");
    cJSON *d = u ? cJSON_AddObjectToObject(u, "prompt_tokens_details") : NULL;
    return d && cJSON_AddNumberToObject(u, "prompt_tokens", (double)call->n_prompt) &&
           cJSON_AddNumberToObject(u, "completion_tokens", (double)call->n_generated) &&
           cJSON_AddNumberToObject(u, "total_tokens",
                                   (double)(call->n_prompt + call->n_generated)) &&
           cJSON_AddNumberToObject(d, "cached_tokens", (double)call->n_cached);
}

static char *print(cJSON *o, size_t *len)
{
    char *out = o ? cJSON_PrintUnformatted(o) : NULL;
    cJSON_Delete(o);
    if (out) *len = strlen(out);
    return out;
}

/* The current call's arguments into its entry of ch->calls (the text so far; a fragment when
 * streaming). */
static cJSON *call_args_string(const srv_choice *ch)
{
    size_t n = 0;
    char *clean = srv__utf8_clean(ch->args.data ? ch->args.data : "", ch->args.len, &n);
    cJSON *s = clean ? cJSON_CreateString(clean) : NULL;
    free(clean);
    return s;
}

/* Non-stream: the message's tool_calls, the last call's arguments completed from ch->args. */
static cJSON *tool_calls_json(const srv_choice *ch)
{
    cJSON *calls = cJSON_Duplicate(ch->calls, true);
    cJSON *last = calls ? cJSON_GetArrayItem(calls, ch->n_calls - 1) : NULL;
    cJSON *fn = cJSON_GetObjectItemCaseSensitive(last, "function");
    cJSON *args = fn ? call_args_string(ch) : NULL;
    if (!args || !cJSON_ReplaceItemInObjectCaseSensitive(fn, "arguments", args)) {
        cJSON_Delete(args);
        cJSON_Delete(calls);
        return NULL;
    }
    return calls;
}

/* One choice's body: chat {"index","message"|"delta",...}, completions {"index","text",...}. */
static cJSON *choice_json(const srv_call *call, int index, bool stream, bool role, const char *text,
                          size_t text_len, cJSON *lp, size_t lp_offset, int finish)
{
    const srv_choice *ch = &call->choices[index];
    cJSON *c = cJSON_CreateObject();
    if (!c || !cJSON_AddNumberToObject(c, "index", index)) goto fail;
    if (call->req.kind == SRV_KIND_CHAT) {
        cJSON *m = cJSON_AddObjectToObject(c, stream ? "delta" : "message");
        if (!m) goto fail;
        if ((role || !stream) && !cJSON_AddStringToObject(m, "role", "assistant")) goto fail;
        if (!stream && ch->n_calls && !text_len) {
            /* as OpenAI answers a call without text */
            if (!cJSON_AddNullToObject(m, "content")) goto fail;
        } else if ((text_len || role || !stream) &&
                   !add_clean_string(m, "content", text ? text : "", text_len)) {
            goto fail;
        }
        if (!stream && ch->n_calls) {
            cJSON *calls = tool_calls_json(ch);
            if (!calls || !cJSON_AddItemToObject(m, "tool_calls", calls)) {
                cJSON_Delete(calls);
                goto fail;
            }
        }
        if (!stream && !cJSON_AddNullToObject(m, "refusal")) goto fail;
    } else if (!add_clean_string(c, "text", text ? text : "", text_len)) {
        goto fail;
    }
    if (call->req.logprobs && lp && cJSON_GetArraySize(lp) > 0) {
        cJSON *l = logprobs_json(call->req.kind, lp, lp_offset);
        if (!l || !cJSON_AddItemToObject(c, "logprobs", l)) {
            cJSON_Delete(l);
            goto fail;
        }
    } else if (!cJSON_AddNullToObject(c, "logprobs")) {
        goto fail;
    }
    if (finish >= 0 ? !cJSON_AddStringToObject(c, "finish_reason", srv__finish_name(ch))
                    : !cJSON_AddNullToObject(c, "finish_reason"))
        goto fail;
    return c;
fail:
    cJSON_Delete(c);
    return NULL;
}

char *srv__response_json(const srv_call *call, const char *model_id, size_t *len)
{
    bool chat = call->req.kind == SRV_KIND_CHAT;
    cJSON *o = envelope(call, model_id, chat ? "chat.completion" : "text_completion");
    cJSON *choices = o ? cJSON_AddArrayToObject(o, "choices") : NULL;
    if (!choices) goto fail;
    for (int i = 0; i < call->n; i++) {
        const srv_choice *ch = &call->choices[i];
        cJSON *c =
            choice_json(call, i, false, true, ch->text.data, ch->text.len, ch->lp, 0, (int)ch->why);
        if (!cJSON_AddItemToArray(choices, c)) goto fail;
    }
    if (!add_usage(o, call)) goto fail;
    return print(o, len);
fail:
    cJSON_Delete(o);
    return NULL;
}

/* A stream chunk holding one choice (taken over; NULL: out of memory), printed. */
static char *chunk_with(const srv_call *call, const char *model_id, cJSON *choice, size_t *len)
{
    bool chat = call->req.kind == SRV_KIND_CHAT;
    cJSON *o = envelope(call, model_id, chat ? "chat.completion.chunk" : "text_completion");
    cJSON *choices = o ? cJSON_AddArrayToObject(o, "choices") : NULL;
    if (!choices || !cJSON_AddItemToArray(choices, choice) ||
        (call->req.include_usage && !cJSON_AddNullToObject(o, "usage"))) {
        if (!cJSON_GetArraySize(choices)) cJSON_Delete(choice);
        cJSON_Delete(o);
        return NULL;
    }
    return print(o, len);
}

char *srv__chunk_json(const srv_call *call, const char *model_id, int index, bool role,
                      const char *text, size_t text_len, cJSON *lp, size_t lp_offset, int finish,
                      size_t *len)
{
    return chunk_with(call, model_id,
                      choice_json(call, index, true, role, text, text_len, lp, lp_offset, finish),
                      len);
}

char *srv__tool_chunk_json(const srv_call *call, const char *model_id, int index, size_t *len)
{
    const srv_choice *ch = &call->choices[index];
    const cJSON *cur = cJSON_GetArrayItem(ch->calls, ch->n_calls - 1);
    const cJSON *cur_fn = cJSON_GetObjectItemCaseSensitive(cur, "function");
    cJSON *c = cJSON_CreateObject();
    cJSON *delta = c && cJSON_AddNumberToObject(c, "index", index)
                       ? cJSON_AddObjectToObject(c, "delta")
                       : NULL;
    cJSON *calls = delta ? cJSON_AddArrayToObject(delta, "tool_calls") : NULL;
    cJSON *tc = calls ? cJSON_CreateObject() : NULL;
    cJSON *fn =
        cJSON_AddItemToArray(calls, tc) && cJSON_AddNumberToObject(tc, "index", ch->n_calls - 1)
            ? cJSON_AddObjectToObject(tc, "function")
            : NULL;
    /* the call's id, type and name once, with its first fragment */
    bool ok =
        fn && (!ch->head_pending ||
               (cJSON_AddStringToObject(tc, "id",
                                        cJSON_GetObjectItemCaseSensitive(cur, "id")->valuestring) &&
                cJSON_AddStringToObject(tc, "type", "function") &&
                cJSON_AddStringToObject(
                    fn, "name", cJSON_GetObjectItemCaseSensitive(cur_fn, "name")->valuestring)));
    cJSON *args = ok ? call_args_string(ch) : NULL;
    if (!cJSON_AddItemToObject(fn, "arguments", args) || !cJSON_AddNullToObject(c, "logprobs") ||
        !cJSON_AddNullToObject(c, "finish_reason")) {
        if (!cJSON_GetObjectItemCaseSensitive(fn, "arguments")) cJSON_Delete(args);
        cJSON_Delete(c);
        return NULL;
    }
    return chunk_with(call, model_id, c, len);
}

char *srv__usage_chunk_json(const srv_call *call, const char *model_id, size_t *len)
{
    bool chat = call->req.kind == SRV_KIND_CHAT;
    cJSON *o = envelope(call, model_id, chat ? "chat.completion.chunk" : "text_completion");
    if (!o || !cJSON_AddArrayToObject(o, "choices") || !add_usage(o, call)) {
        cJSON_Delete(o);
        return NULL;
    }
    return print(o, len);
}

static cJSON *model_json(const char *model_id, int64_t created)
{
    cJSON *m = cJSON_CreateObject();
    if (!m || !cJSON_AddStringToObject(m, "id", model_id) ||
        !cJSON_AddStringToObject(m, "object", "model") ||
        !cJSON_AddNumberToObject(m, "created", (double)created) ||
        !cJSON_AddStringToObject(m, "owned_by", "moeserve")) {
        cJSON_Delete(m);
        return NULL;
    }
    return m;
}

char *srv__models_json(const char *model_id, int64_t created, bool one, size_t *len)
{
    if (one) return print(model_json(model_id, created), len);
    cJSON *o = cJSON_CreateObject();
    cJSON *data = o && cJSON_AddStringToObject(o, "object", "list")
                      ? cJSON_AddArrayToObject(o, "data")
                      : NULL;
    if (!data || !cJSON_AddItemToArray(data, model_json(model_id, created))) {
        cJSON_Delete(o);
        return NULL;
    }
    return print(o, len);
}
