/*
 * Chat prompts: the request's messages as the model's template reads them, with its tools.
 *
 * Templates that render tools get them as transformers passes them (the tools array; calls in
 * the history with parsed arguments).  GENERIC templates (toolcall.h) never heard of tools: the
 * tools are described in a system message, calls in the history are written in the Hermes form
 * the model is asked to answer in, and tool results become user turns.
 */
#include "engine/engine_internal.h"
#include "engine/prompt.h"

#include "base/strbuf.h"

#include <cjson/cJSON.h>
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *role_name(srv_role_t role)
{
    switch (role) {
    case SRV_ROLE_SYSTEM:
        return "system";
    case SRV_ROLE_USER:
        return "user";
    case SRV_ROLE_ASSISTANT:
        return "assistant";
    /* OpenAI's developer messages replace system messages; templates only know the latter. */
    case SRV_ROLE_DEVELOPER:
        return "system";
    case SRV_ROLE_TOOL:
        return "tool";
    }
    return "user";
}

/* A call's arguments as templates expect them: the parsed object (Llama 3's and Mistral's
 * templates write it with tojson, as transformers users pass dicts), the string when it is not
 * JSON. */
static cJSON *call_arguments(const char *args)
{
    cJSON *v = cJSON_Parse(args);
    if (v) return v;
    return cJSON_CreateString(args);
}

/* Mistral's templates accept only 9-character alphanumeric call ids (its own tools make them):
 * any other id is mapped to one, the same for a call and the result that answers it. */
static const char *template_call_id(tool_format f, const char *id, char out[10])
{
    size_t n = strlen(id), alnum = 0;
    for (size_t i = 0; i < n; i++)
        alnum += isalnum((unsigned char)id[i]) != 0;
    if (f != TOOL_FORMAT_MISTRAL || (n == 9 && alnum == 9)) return id;
    uint64_t h = 0xcbf29ce484222325ull; /* FNV-1a */
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)id[i]) * 0x100000001b3ull;
    static const char digits[] = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
    for (int i = 0; i < 9; i++, h /= 62)
        out[i] = digits[h % 62];
    out[9] = 0;
    return out;
}

/* An assistant message's tool_calls for the template: {id, type, function {name, arguments}}. */
static cJSON *template_tool_calls(tool_format fmt, const cJSON *calls)
{
    cJSON *out = cJSON_CreateArray();
    const cJSON *c;
    cJSON_ArrayForEach(c, calls)
    {
        const cJSON *fn = cJSON_GetObjectItemCaseSensitive(c, "function");
        const cJSON *id = cJSON_GetObjectItemCaseSensitive(c, "id");
        cJSON *o = cJSON_CreateObject();
        cJSON *f = o ? cJSON_CreateObject() : NULL;
        cJSON *args =
            f ? call_arguments(cJSON_GetObjectItemCaseSensitive(fn, "arguments")->valuestring)
              : NULL;
        char id9[10];
        if (!out || !args || !cJSON_AddItemToArray(out, o) ||
            (cJSON_IsString(id) &&
             !cJSON_AddStringToObject(o, "id", template_call_id(fmt, id->valuestring, id9))) ||
            !cJSON_AddStringToObject(o, "type", "function") ||
            !cJSON_AddItemToObject(o, "function", f) ||
            !cJSON_AddStringToObject(f, "name",
                                     cJSON_GetObjectItemCaseSensitive(fn, "name")->valuestring) ||
            !cJSON_AddItemToObject(f, "arguments", args)) {
            if (!cJSON_GetObjectItemCaseSensitive(f, "arguments")) cJSON_Delete(args);
            if (!cJSON_GetObjectItemCaseSensitive(o, "function")) cJSON_Delete(f);
            if (cJSON_GetArrayItem(out, cJSON_GetArraySize(out) - 1) != o) cJSON_Delete(o);
            cJSON_Delete(out);
            return NULL;
        }
    }
    return out;
}

/* A message as a GENERIC template sees it: calls written out in the Hermes form after the
 * content, tool results as a user turn in <tool_response> (the template may know no other
 * roles). */
static int generic_message(cJSON *o, const srv_message_t *msg)
{
    strbuf t = {0};
    int rc = 0;
    if (msg->role == SRV_ROLE_TOOL) {
        rc |= strbuf_adds(&t, "<tool_response>\n");
        rc |= strbuf_adds(&t, msg->content ? msg->content : "");
        rc |= strbuf_adds(&t, "\n</tool_response>");
    } else {
        rc |= strbuf_adds(&t, msg->content ? msg->content : "");
        const cJSON *c;
        cJSON_ArrayForEach(c, msg->tool_calls)
        {
            const cJSON *fn = cJSON_GetObjectItemCaseSensitive(c, "function");
            cJSON *args =
                call_arguments(cJSON_GetObjectItemCaseSensitive(fn, "arguments")->valuestring);
            char *call = args ? tool_generic_call_text(
                                    cJSON_GetObjectItemCaseSensitive(fn, "name")->valuestring, args)
                              : NULL;
            cJSON_Delete(args);
            if (t.len) rc |= strbuf_adds(&t, "\n");
            rc |= call ? strbuf_adds(&t, call) : -ENOMEM;
            free(call);
        }
    }
    const char *role = msg->role == SRV_ROLE_TOOL ? "user" : role_name(msg->role);
    rc = rc || !cJSON_AddStringToObject(o, "role", role) ||
                 !cJSON_AddStringToObject(o, "content", t.data ? t.data : "")
             ? -ENOMEM
             : 0;
    free(t.data);
    return rc;
}

/* The messages as the template reads them: with tool_calls and tool_call_id when the request
 * shows the model its tools (GENERIC templates get them written into the text instead). */
static cJSON *messages_json(const engine *e, const srv_gen_request_t *req, bool with_tools)
{
    bool generic = with_tools && e->tool_fmt == TOOL_FORMAT_GENERIC;
    cJSON *arr = cJSON_CreateArray();
    size_t i = 0;
    if (arr && generic) {
        /* the tools described in the system message, ahead of the caller's own */
        char *sys = tool_generic_system(req->tools);
        bool merge = req->n_messages && (req->messages[0].role == SRV_ROLE_SYSTEM ||
                                         req->messages[0].role == SRV_ROLE_DEVELOPER);
        strbuf t = {0};
        int rc = sys ? 0 : -ENOMEM;
        if (merge) rc |= strbuf_adds(&t, req->messages[0].content) | strbuf_adds(&t, "\n\n");
        rc |= sys ? strbuf_adds(&t, sys) : 0;
        free(sys);
        cJSON *o = rc ? NULL : cJSON_CreateObject();
        if (!o || !cJSON_AddItemToArray(arr, o) || !cJSON_AddStringToObject(o, "role", "system") ||
            !cJSON_AddStringToObject(o, "content", t.data)) {
            if (o && cJSON_GetArraySize(arr) == 0) cJSON_Delete(o);
            free(t.data);
            cJSON_Delete(arr);
            return NULL;
        }
        free(t.data);
        i = merge ? 1 : 0;
    }
    for (; arr && i < req->n_messages; i++) {
        const srv_message_t *msg = &req->messages[i];
        cJSON *o = cJSON_CreateObject();
        bool ok = o && cJSON_AddItemToArray(arr, o);
        if (ok && generic) {
            ok = generic_message(o, msg) == 0;
        } else if (ok) {
            ok = cJSON_AddStringToObject(o, "role", role_name(msg->role)) &&
                 cJSON_AddStringToObject(o, "content", msg->content ? msg->content : "");
            if (ok && with_tools && msg->tool_calls) {
                cJSON *calls = template_tool_calls(e->tool_fmt, msg->tool_calls);
                ok = calls && cJSON_AddItemToObject(o, "tool_calls", calls);
                if (!ok) cJSON_Delete(calls);
            }
            char id9[10];
            if (ok && msg->tool_call_id)
                ok = cJSON_AddStringToObject(o, "tool_call_id",
                                             template_call_id(e->tool_fmt, msg->tool_call_id, id9));
        }
        if (ok && msg->name) ok = cJSON_AddStringToObject(o, "name", msg->name);
        if (!ok) {
            if (o && cJSON_GetArrayItem(arr, cJSON_GetArraySize(arr) - 1) != o) cJSON_Delete(o);
            cJSON_Delete(arr);
            return NULL;
        }
    }
    return arr;
}

/* Joins b's content after a's (a blank line between) into a. */
static bool join_content(cJSON *a, const cJSON *b)
{
    const char *x = cJSON_GetObjectItemCaseSensitive(a, "content")->valuestring;
    const char *y = cJSON_GetObjectItemCaseSensitive(b, "content")->valuestring;
    strbuf t = {0};
    bool ok = strbuf_adds(&t, x) == 0 && strbuf_adds(&t, "\n\n") == 0 && strbuf_adds(&t, y) == 0;
    cJSON *joined = ok ? cJSON_CreateString(t.data) : NULL;
    free(t.data);
    if (!joined || !cJSON_ReplaceItemInObjectCaseSensitive(a, "content", joined)) {
        cJSON_Delete(joined);
        return false;
    }
    return true;
}

/* GENERIC templates often insist that user and assistant alternate (Mixtral's does): a tool
 * result, written as a user turn, joins the user turns next to it. */
static bool merge_runs(cJSON *arr)
{
    for (cJSON *m = arr->child; m && m->next;) {
        const char *r1 = cJSON_GetObjectItemCaseSensitive(m, "role")->valuestring;
        const char *r2 = cJSON_GetObjectItemCaseSensitive(m->next, "role")->valuestring;
        if (strcmp(r1, "user") || strcmp(r2, "user")) {
            m = m->next;
            continue;
        }
        if (!join_content(m, m->next)) return false;
        cJSON_Delete(cJSON_DetachItemViaPointer(arr, m->next));
    }
    return true;
}

/* For templates without a system role (they raise on one): the system text opens the first
 * user turn instead, as their model cards advise. */
static bool fold_system(cJSON *arr)
{
    cJSON *sys = arr->child, *user = sys ? sys->next : NULL;
    if (!user || strcmp(cJSON_GetObjectItemCaseSensitive(sys, "role")->valuestring, "system") ||
        strcmp(cJSON_GetObjectItemCaseSensitive(user, "role")->valuestring, "user"))
        return false;
    if (!join_content(sys, user)) return false;
    cJSON *content = cJSON_DetachItemFromObjectCaseSensitive(sys, "content");
    if (!cJSON_ReplaceItemInObjectCaseSensitive(user, "content", content)) {
        cJSON_Delete(content);
        return false;
    }
    cJSON_Delete(cJSON_DetachItemViaPointer(arr, sys));
    return true;
}

bool engine__uses_tools(const srv_gen_request_t *req)
{
    return req->kind == SRV_KIND_CHAT && req->tools && req->tool_choice != SRV_TOOL_CHOICE_NONE;
}

int engine__prompt_ids(const engine *e, const srv_gen_request_t *req, int32_t **ids, size_t *n_ids,
                       char *err, size_t err_size)
{
    if (req->kind == SRV_KIND_COMPLETION)
        return prompt_tokenize(e->tok, req->prompt, req->prompt_len, ids, n_ids, err, err_size);
    bool tools = engine__uses_tools(req);
    cJSON *messages = messages_json(e, req, tools);
    if (!messages) {
        snprintf(err, err_size, "out of memory");
        return -ENOMEM;
    }
    bool generic = tools && e->tool_fmt == TOOL_FORMAT_GENERIC;
    if (generic && !merge_runs(messages)) {
        cJSON_Delete(messages);
        snprintf(err, err_size, "out of memory");
        return -ENOMEM;
    }
    char *text = NULL;
    size_t len = 0;
    int rc = prompt_render_chat(e->tmpl, e->tok, messages, tools && !generic ? req->tools : NULL,
                                &text, &len, err, err_size);
    if (rc == -EINVAL && generic && fold_system(messages))
        rc = prompt_render_chat(e->tmpl, e->tok, messages, NULL, &text, &len, err, err_size);
    cJSON_Delete(messages);
    if (rc == 0) rc = prompt_tokenize(e->tok, text, len, ids, n_ids, err, err_size);
    free(text);
    return rc;
}
