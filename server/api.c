/*
 * The OpenAI request shapes: parsing and validation of a chat or completions body into a
 * srv_gen_request_t, OpenAI-shaped errors, and the growable byte buffer the other server files
 * share.  response.c builds what goes back.
 *
 * Validation follows OpenAI's documented ranges and answers 400 with the offending `param`.
 * Fields that OpenAI defines and that change nothing here (store, metadata, service_tier,
 * modalities ["text"], prompt_cache_key, safety_identifier, reasoning_effort, stream_options
 * without include_usage, echo false, best_of 1, suffix null/"", response_format
 * {"type":"text"}) are accepted and ignored, as are fields OpenAI does not define (clients send
 * vendor extensions); fields whose meaning we cannot honour (functions / function_call, audio,
 * echo, best_of > 1, token-id or batched prompts) are refused with 400 rather than silently
 * dropped.  tools, tool_choice and parallel_tool_calls are validated here (function names as
 * OpenAI allows them, no duplicates, a named choice among the tools) and carried to the engine,
 * as are assistant messages' tool_calls and tool messages' tool_call_id.  response_format
 * json_object and json_schema set the request's json_object / json_schema (the engine's guides; a
 * schema it cannot enforce is refused there, with a 400 naming the keyword). Extensions accepted as
 * in vLLM: top_k, min_p, repetition_penalty.
 *
 * Every string taken from the request lives in the call's cJSON tree or its arena, both freed
 * with the call, so a job's request stays valid as long as the job.
 */
#include "server/server_internal.h"

#include "base/utf8.h"
#include "base/vec.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- buffers --------------------------------------------------------------------------------- */

int srv__buf_append(srv_buf *b, const void *p, size_t n)
{
    if (n > SIZE_MAX - b->len - 1 || vec_reserve(&b->data, &b->cap, b->len + n + 1, 1, 256) < 0)
        return -ENOMEM;
    if (n) memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = 0;
    return 0;
}

void srv__buf_free(srv_buf *b)
{
    free(b->data);
    *b = (srv_buf){0};
}

/* ---- errors -----------------------------------------------------------------------------------
 */

void srv__err_set(srv_api_err *e, int status, const char *param, const char *fmt, ...)
{
    e->status = status;
    e->type = status >= 500 ? "server_error" : "invalid_request_error";
    e->code = NULL;
    snprintf(e->param, sizeof e->param, "%s", param ? param : "");
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->message, sizeof e->message, fmt, ap);
    va_end(ap);
}

char *srv__err_json(const srv_api_err *e, size_t *len)
{
    cJSON *root = cJSON_CreateObject();
    cJSON *o = root ? cJSON_AddObjectToObject(root, "error") : NULL;
    size_t mlen = 0;
    char *msg = srv__utf8_clean(e->message, strlen(e->message), &mlen);
    char *out = NULL;
    if (o && msg && cJSON_AddStringToObject(o, "message", msg) &&
        cJSON_AddStringToObject(o, "type", e->type ? e->type : "invalid_request_error") &&
        (e->param[0] ? cJSON_AddStringToObject(o, "param", e->param) != NULL
                     : cJSON_AddNullToObject(o, "param") != NULL) &&
        (e->code ? cJSON_AddStringToObject(o, "code", e->code) != NULL
                 : cJSON_AddNullToObject(o, "code") != NULL))
        out = cJSON_PrintUnformatted(root);
    free(msg);
    cJSON_Delete(root);
    if (out) *len = strlen(out);
    return out;
}

/* ---- UTF-8 ------------------------------------------------------------------------------------
 */

char *srv__utf8_clean(const char *s, size_t len, size_t *out_len)
{
    /* Each byte that starts no valid character becomes U+FFFD (3 bytes), one per byte rather
     * than per maximal invalid subpart; a NUL would end a cJSON string, so it goes too. */
    char *out = malloc(len * 3 + 1);
    if (!out) return NULL;
    size_t o = 0;
    for (size_t i = 0; i < len;) {
        bool incomplete;
        size_t bad_at;
        size_t k = s[i] ? utf8_check(s + i, len - i, &incomplete, &bad_at) : 0;
        if (k) {
            memcpy(out + o, s + i, k);
            o += k;
            i += k;
        } else {
            memcpy(out + o, UTF8_REPLACEMENT, 3);
            o += 3;
            i++;
        }
    }
    out[o] = 0;
    *out_len = o;
    return out;
}

/* ---- request parsing ----------------------------------------------------------------------------
 */

static bool absent(const cJSON *item)
{
    return !item || cJSON_IsNull(item);
}

static int get_number(const cJSON *root, const char *key, double lo, double hi, double *out,
                      srv_api_err *e)
{
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(root, key);
    if (absent(item)) return 0;
    if (!cJSON_IsNumber(item)) {
        srv__err_set(e, 400, key, "'%s' must be a number", key);
        return -EINVAL;
    }
    double v = item->valuedouble;
    if (!(v >= lo && v <= hi)) {
        srv__err_set(e, 400, key, "'%s' must be between %g and %g (got %g)", key, lo, hi, v);
        return -EINVAL;
    }
    *out = v;
    return 0;
}

static int get_int(const cJSON *root, const char *key, double lo, double hi, int64_t *out,
                   bool *present, srv_api_err *e)
{
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(root, key);
    if (absent(item)) return 0;
    if (!cJSON_IsNumber(item) || item->valuedouble != floor(item->valuedouble)) {
        srv__err_set(e, 400, key, "'%s' must be an integer", key);
        return -EINVAL;
    }
    double v = item->valuedouble;
    if (!(v >= lo && v <= hi)) {
        srv__err_set(e, 400, key, "'%s' must be between %.0f and %.0f (got %.0f)", key, lo, hi, v);
        return -EINVAL;
    }
    /* A seed may be any 64-bit integer, signed or not: above INT64_MAX it goes through uint64_t
     * (a direct cast is undefined there) and reads back as the same bits in (uint64_t)*out. */
    *out = v >= 0x1p63 ? (int64_t)(uint64_t)v : (int64_t)v;
    if (present) *present = true;
    return 0;
}

static int get_bool(const cJSON *root, const char *key, bool *out, srv_api_err *e)
{
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(root, key);
    if (absent(item)) return 0;
    if (!cJSON_IsBool(item)) {
        srv__err_set(e, 400, key, "'%s' must be a boolean", key);
        return -EINVAL;
    }
    *out = cJSON_IsTrue(item);
    return 0;
}

static int get_string(const cJSON *root, const char *key, const char **out, srv_api_err *e)
{
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(root, key);
    if (absent(item)) return 0;
    if (!cJSON_IsString(item)) {
        srv__err_set(e, 400, key, "'%s' must be a string", key);
        return -EINVAL;
    }
    *out = item->valuestring;
    return 0;
}

static int oom(srv_api_err *e)
{
    srv__err_set(e, 500, NULL, "out of memory");
    return -ENOMEM;
}

static int parse_role(const char *s, srv_role_t *role)
{
    static const struct {
        const char *name;
        srv_role_t role;
    } roles[] = {
        {"system", SRV_ROLE_SYSTEM},       {"user", SRV_ROLE_USER},
        {"assistant", SRV_ROLE_ASSISTANT}, {"developer", SRV_ROLE_DEVELOPER},
        {"tool", SRV_ROLE_TOOL},
    };
    for (size_t i = 0; i < sizeof roles / sizeof roles[0]; i++)
        if (!strcmp(s, roles[i].name)) {
            *role = roles[i].role;
            return 0;
        }
    return -EINVAL;
}

/* content: a string, null (assistant turns with tool calls), or an array of text parts. */
static int parse_content(srv_call *call, const cJSON *content, size_t index, const char **out,
                         srv_api_err *e)
{
    char param[64];
    snprintf(param, sizeof param, "messages[%zu].content", index);
    if (absent(content)) {
        *out = "";
        return 0;
    }
    if (cJSON_IsString(content)) {
        *out = content->valuestring;
        return 0;
    }
    if (!cJSON_IsArray(content)) {
        srv__err_set(e, 400, param, "'%s' must be a string or an array of content parts", param);
        return -EINVAL;
    }
    size_t total = 0;
    const cJSON *part;
    cJSON_ArrayForEach(part, content)
    {
        const cJSON *type = cJSON_GetObjectItemCaseSensitive(part, "type");
        const cJSON *text = cJSON_GetObjectItemCaseSensitive(part, "text");
        if (!cJSON_IsObject(part) || !cJSON_IsString(type)) {
            srv__err_set(e, 400, param, "each part of '%s' must be an object with a 'type'", param);
            return -EINVAL;
        }
        if (strcmp(type->valuestring, "text") != 0) {
            srv__err_set(e, 400, param,
                         "content parts of type '%s' are not supported; only 'text' parts are",
                         type->valuestring);
            return -EINVAL;
        }
        if (!cJSON_IsString(text)) {
            srv__err_set(e, 400, param, "a text part of '%s' needs a string 'text'", param);
            return -EINVAL;
        }
        total += strlen(text->valuestring);
    }
    char *joined = arena_alloc(&call->arena, total + 1);
    if (!joined) return oom(e);
    size_t at = 0;
    cJSON_ArrayForEach(part, content)
    {
        const char *t = cJSON_GetObjectItemCaseSensitive(part, "text")->valuestring;
        size_t n = strlen(t);
        memcpy(joined + at, t, n);
        at += n;
    }
    *out = joined;
    return 0;
}

/* A function name as OpenAI allows it: 1-64 of a-z, A-Z, 0-9, '_' and '-'. */
static bool function_name_ok(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 64) return false;
    for (size_t i = 0; i < n; i++)
        if (!(isalnum((unsigned char)s[i]) || s[i] == '_' || s[i] == '-')) return false;
    return true;
}

/* An assistant's tool_calls and a tool message's tool_call_id. */
static int parse_message_tools(const cJSON *m, size_t index, srv_message_t *out, srv_api_err *e)
{
    char param[96];
    const cJSON *calls = cJSON_GetObjectItemCaseSensitive(m, "tool_calls");
    if (!absent(calls)) {
        snprintf(param, sizeof param, "messages[%zu].tool_calls", index);
        if (out->role != SRV_ROLE_ASSISTANT || !cJSON_IsArray(calls)) {
            srv__err_set(e, 400, param, "'%s' must be an array, on assistant messages only", param);
            return -EINVAL;
        }
        size_t j = 0;
        const cJSON *c;
        cJSON_ArrayForEach(c, calls)
        {
            snprintf(param, sizeof param, "messages[%zu].tool_calls[%zu]", index, j++);
            const cJSON *fn = cJSON_GetObjectItemCaseSensitive(c, "function");
            const cJSON *type = cJSON_GetObjectItemCaseSensitive(c, "type");
            const cJSON *id = cJSON_GetObjectItemCaseSensitive(c, "id");
            const cJSON *name = cJSON_GetObjectItemCaseSensitive(fn, "name");
            const cJSON *args = cJSON_GetObjectItemCaseSensitive(fn, "arguments");
            if (!cJSON_IsObject(c) || !cJSON_IsObject(fn) ||
                !(absent(type) ||
                  (cJSON_IsString(type) && !strcmp(type->valuestring, "function"))) ||
                !(absent(id) || cJSON_IsString(id)) || !cJSON_IsString(name) ||
                !cJSON_IsString(args)) {
                srv__err_set(e, 400, param,
                             "'%s' must be {\"id\", \"type\": \"function\", \"function\": "
                             "{\"name\", \"arguments\": a string}}",
                             param);
                return -EINVAL;
            }
        }
        if (cJSON_GetArraySize(calls) > 0) out->tool_calls = calls;
    }
    const cJSON *tcid = cJSON_GetObjectItemCaseSensitive(m, "tool_call_id");
    if (!absent(tcid)) {
        snprintf(param, sizeof param, "messages[%zu].tool_call_id", index);
        if (!cJSON_IsString(tcid)) {
            srv__err_set(e, 400, param, "'%s' must be a string", param);
            return -EINVAL;
        }
        out->tool_call_id = tcid->valuestring;
    }
    return 0;
}

/* tools, tool_choice and parallel_tool_calls (chat). */
static int parse_tools(srv_gen_request_t *r, const cJSON *root, srv_kind_t kind, srv_api_err *e)
{
    char param[64];
    const cJSON *tools = cJSON_GetObjectItemCaseSensitive(root, "tools");
    const cJSON *choice = cJSON_GetObjectItemCaseSensitive(root, "tool_choice");
    r->parallel_tool_calls = true;
    if (get_bool(root, "parallel_tool_calls", &r->parallel_tool_calls, e)) return -EINVAL;
    if (!absent(tools)) {
        if (kind != SRV_KIND_CHAT) {
            srv__err_set(e, 400, "tools", "tools are a chat completions parameter");
            return -EINVAL;
        }
        if (!cJSON_IsArray(tools)) {
            srv__err_set(e, 400, "tools", "'tools' must be an array");
            return -EINVAL;
        }
        size_t i = 0;
        const cJSON *t;
        cJSON_ArrayForEach(t, tools)
        {
            snprintf(param, sizeof param, "tools[%zu]", i);
            const cJSON *type = cJSON_GetObjectItemCaseSensitive(t, "type");
            const cJSON *fn = cJSON_GetObjectItemCaseSensitive(t, "function");
            const cJSON *name = cJSON_GetObjectItemCaseSensitive(fn, "name");
            const cJSON *params = cJSON_GetObjectItemCaseSensitive(fn, "parameters");
            const cJSON *desc = cJSON_GetObjectItemCaseSensitive(fn, "description");
            if (!cJSON_IsObject(t) || !cJSON_IsString(type) ||
                strcmp(type->valuestring, "function") || !cJSON_IsObject(fn)) {
                srv__err_set(e, 400, param,
                             "'%s' must be {\"type\": \"function\", \"function\": {...}}", param);
                return -EINVAL;
            }
            if (!cJSON_IsString(name) || !function_name_ok(name->valuestring)) {
                snprintf(param, sizeof param, "tools[%zu].function.name", i);
                srv__err_set(e, 400, param,
                             "'%s' must be 1 to 64 letters, digits, underscores or dashes", param);
                return -EINVAL;
            }
            if ((!absent(params) && !cJSON_IsObject(params)) ||
                (!absent(desc) && !cJSON_IsString(desc))) {
                snprintf(param, sizeof param, "tools[%zu].function", i);
                srv__err_set(e, 400, param,
                             "'%s': parameters must be a JSON Schema object and description a "
                             "string",
                             param);
                return -EINVAL;
            }
            const cJSON *u;
            cJSON_ArrayForEach(u, tools)
            {
                if (u == t) break;
                const cJSON *un = cJSON_GetObjectItemCaseSensitive(
                    cJSON_GetObjectItemCaseSensitive(u, "function"), "name");
                if (!strcmp(un->valuestring, name->valuestring)) {
                    snprintf(param, sizeof param, "tools[%zu].function.name", i);
                    srv__err_set(e, 400, param, "two tools are named '%s'", name->valuestring);
                    return -EINVAL;
                }
            }
            i++;
        }
        if (i) r->tools = tools;
    }
    r->tool_choice = r->tools ? SRV_TOOL_CHOICE_AUTO : SRV_TOOL_CHOICE_NONE;
    if (absent(choice)) return 0;
    if (cJSON_IsString(choice) &&
        (!strcmp(choice->valuestring, "none") || !strcmp(choice->valuestring, "auto"))) {
        if (!strcmp(choice->valuestring, "none")) r->tool_choice = SRV_TOOL_CHOICE_NONE;
        return 0;
    }
    const cJSON *fn = cJSON_GetObjectItemCaseSensitive(choice, "function");
    const cJSON *name = cJSON_GetObjectItemCaseSensitive(fn, "name");
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(choice, "type");
    if (cJSON_IsString(choice) && !strcmp(choice->valuestring, "required")) {
        r->tool_choice = SRV_TOOL_CHOICE_REQUIRED;
    } else if (cJSON_IsObject(choice) && cJSON_IsString(type) &&
               !strcmp(type->valuestring, "function") && cJSON_IsString(name)) {
        r->tool_choice = SRV_TOOL_CHOICE_NAMED;
        r->tool_choice_name = name->valuestring;
    } else {
        srv__err_set(e, 400, "tool_choice",
                     "'tool_choice' must be \"none\", \"auto\", \"required\" or "
                     "{\"type\": \"function\", \"function\": {\"name\": ...}}");
        return -EINVAL;
    }
    if (!r->tools) {
        srv__err_set(e, 400, "tool_choice", "'tool_choice' %s needs 'tools'",
                     r->tool_choice_name ? "naming a function" : "\"required\"");
        return -EINVAL;
    }
    if (r->tool_choice_name) {
        const cJSON *t;
        cJSON_ArrayForEach(t, r->tools)
        {
            const cJSON *n = cJSON_GetObjectItemCaseSensitive(
                cJSON_GetObjectItemCaseSensitive(t, "function"), "name");
            if (!strcmp(n->valuestring, r->tool_choice_name)) return 0;
        }
        srv__err_set(e, 400, "tool_choice", "'tool_choice' names '%s', which is not in 'tools'",
                     r->tool_choice_name);
        return -EINVAL;
    }
    return 0;
}

static int parse_messages(srv_call *call, const cJSON *root, srv_api_err *e)
{
    const cJSON *msgs = cJSON_GetObjectItemCaseSensitive(root, "messages");
    if (absent(msgs)) {
        srv__err_set(e, 400, "messages", "'messages' is required");
        return -EINVAL;
    }
    if (!cJSON_IsArray(msgs) || cJSON_GetArraySize(msgs) == 0) {
        srv__err_set(e, 400, "messages", "'messages' must be a non-empty array");
        return -EINVAL;
    }
    size_t n = (size_t)cJSON_GetArraySize(msgs), i = 0;
    srv_message_t *out = arena_alloc(&call->arena, n * sizeof *out);
    if (!out) return oom(e);
    const cJSON *m;
    cJSON_ArrayForEach(m, msgs)
    {
        char param[64];
        snprintf(param, sizeof param, "messages[%zu]", i);
        if (!cJSON_IsObject(m)) {
            srv__err_set(e, 400, param, "'%s' must be an object", param);
            return -EINVAL;
        }
        const cJSON *role = cJSON_GetObjectItemCaseSensitive(m, "role");
        snprintf(param, sizeof param, "messages[%zu].role", i);
        if (!cJSON_IsString(role) || parse_role(role->valuestring, &out[i].role)) {
            srv__err_set(e, 400, param,
                         "'%s' must be one of 'system', 'developer', 'user', 'assistant', 'tool'",
                         param);
            return -EINVAL;
        }
        int rc = parse_content(call, cJSON_GetObjectItemCaseSensitive(m, "content"), i,
                               &out[i].content, e);
        if (rc) return rc;
        const cJSON *name = cJSON_GetObjectItemCaseSensitive(m, "name");
        if (!absent(name)) {
            if (!cJSON_IsString(name)) {
                snprintf(param, sizeof param, "messages[%zu].name", i);
                srv__err_set(e, 400, param, "'%s' must be a string", param);
                return -EINVAL;
            }
            out[i].name = name->valuestring;
        }
        if ((rc = parse_message_tools(m, i, &out[i], e))) return rc;
        i++;
    }
    call->req.messages = out;
    call->req.n_messages = n;
    return 0;
}

static int parse_prompt(srv_call *call, const cJSON *root, srv_api_err *e)
{
    const cJSON *p = cJSON_GetObjectItemCaseSensitive(root, "prompt");
    if (absent(p)) {
        srv__err_set(e, 400, "prompt", "'prompt' is required");
        return -EINVAL;
    }
    if (cJSON_IsArray(p)) {
        const cJSON *first = cJSON_GetArrayItem(p, 0);
        if (cJSON_GetArraySize(p) == 1 && cJSON_IsString(first)) {
            p = first;
        } else if (first && cJSON_IsNumber(first)) {
            srv__err_set(e, 400, "prompt",
                         "prompts given as token ids are not supported; send text");
            return -EINVAL;
        } else {
            srv__err_set(e, 400, "prompt",
                         "only one prompt per request is supported; send one string (use 'n' "
                         "for several completions)");
            return -EINVAL;
        }
    }
    if (!cJSON_IsString(p)) {
        srv__err_set(e, 400, "prompt", "'prompt' must be a string");
        return -EINVAL;
    }
    call->req.prompt = p->valuestring;
    call->req.prompt_len = strlen(p->valuestring);
    return 0;
}

static int parse_stop(srv_call *call, const cJSON *root, srv_api_err *e)
{
    const cJSON *stop = cJSON_GetObjectItemCaseSensitive(root, "stop");
    if (absent(stop)) return 0;
    const char **out = arena_alloc(&call->arena, 4 * sizeof *out);
    if (!out) return oom(e);
    size_t n = 0;
    if (cJSON_IsString(stop)) {
        if (stop->valuestring[0]) out[n++] = stop->valuestring;
    } else if (cJSON_IsArray(stop) && cJSON_GetArraySize(stop) <= 4) {
        const cJSON *s;
        cJSON_ArrayForEach(s, stop)
        {
            if (!cJSON_IsString(s)) {
                srv__err_set(e, 400, "stop", "'stop' must be a string or an array of strings");
                return -EINVAL;
            }
            if (s->valuestring[0]) out[n++] = s->valuestring;
        }
    } else {
        srv__err_set(e, 400, "stop", "'stop' must be a string or an array of at most 4 strings");
        return -EINVAL;
    }
    call->req.stop = out;
    call->req.n_stop = n;
    return 0;
}

static int parse_logit_bias(srv_call *call, const cJSON *root, srv_api_err *e)
{
    const cJSON *lb = cJSON_GetObjectItemCaseSensitive(root, "logit_bias");
    if (absent(lb)) return 0;
    if (!cJSON_IsObject(lb)) {
        srv__err_set(e, 400, "logit_bias", "'logit_bias' must be an object of token id to bias");
        return -EINVAL;
    }
    size_t n = (size_t)cJSON_GetArraySize(lb), i = 0;
    srv_logit_bias_t *out = arena_alloc(&call->arena, (n ? n : 1) * sizeof *out);
    if (!out) return oom(e);
    const cJSON *item;
    cJSON_ArrayForEach(item, lb)
    {
        char *end = NULL;
        errno = 0;
        long id = strtol(item->string, &end, 10);
        if (!item->string[0] || *end || errno || id < 0 || id > INT32_MAX) {
            srv__err_set(e, 400, "logit_bias", "logit_bias key '%s' is not a token id",
                         item->string);
            return -EINVAL;
        }
        if (!cJSON_IsNumber(item) || !(item->valuedouble >= -100 && item->valuedouble <= 100)) {
            srv__err_set(e, 400, "logit_bias",
                         "logit_bias values must be numbers between -100 and 100");
            return -EINVAL;
        }
        out[i++] = (srv_logit_bias_t){(int32_t)id, item->valuedouble};
    }
    call->req.logit_bias = out;
    call->req.n_logit_bias = n;
    return 0;
}

/* Fields OpenAI defines whose meaning we cannot honour: refused unless given a harmless value. */
static int refuse_unsupported(const cJSON *root, srv_kind_t kind, srv_api_err *e)
{
    const cJSON *it;
    if (((it = cJSON_GetObjectItemCaseSensitive(root, "functions")) && !absent(it)) ||
        ((it = cJSON_GetObjectItemCaseSensitive(root, "function_call")) && !absent(it))) {
        srv__err_set(e, 400, it->string,
                     "'%s' (deprecated by OpenAI) is not supported: use 'tools' and "
                     "'tool_choice'",
                     it->string);
        return -EINVAL;
    }
    if ((it = cJSON_GetObjectItemCaseSensitive(root, "response_format")) && !absent(it)) {
        const cJSON *type = cJSON_GetObjectItemCaseSensitive(it, "type");
        if (!cJSON_IsObject(it) || !cJSON_IsString(type) ||
            (strcmp(type->valuestring, "text") && strcmp(type->valuestring, "json_object") &&
             strcmp(type->valuestring, "json_schema"))) {
            srv__err_set(e, 400, "response_format",
                         "response_format's type must be \"text\", \"json_object\" or "
                         "\"json_schema\"");
            return -EINVAL;
        }
        const cJSON *js = cJSON_GetObjectItemCaseSensitive(it, "json_schema");
        if (!strcmp(type->valuestring, "json_schema") &&
            !(cJSON_IsObject(js) &&
              cJSON_IsObject(cJSON_GetObjectItemCaseSensitive(js, "schema")))) {
            srv__err_set(e, 400, "response_format",
                         "response_format json_schema needs json_schema.schema, an object");
            return -EINVAL;
        }
    }
    if ((it = cJSON_GetObjectItemCaseSensitive(root, "audio")) && !absent(it)) {
        srv__err_set(e, 400, "audio", "audio output is not supported");
        return -EINVAL;
    }
    if (kind == SRV_KIND_COMPLETION) {
        if ((it = cJSON_GetObjectItemCaseSensitive(root, "echo")) && !absent(it) &&
            !cJSON_IsFalse(it)) {
            srv__err_set(e, 400, "echo", "echo is not supported");
            return -EINVAL;
        }
        if ((it = cJSON_GetObjectItemCaseSensitive(root, "best_of")) && !absent(it) &&
            !(cJSON_IsNumber(it) && it->valuedouble == 1)) {
            srv__err_set(e, 400, "best_of", "best_of other than 1 is not supported");
            return -EINVAL;
        }
        if ((it = cJSON_GetObjectItemCaseSensitive(root, "suffix")) && !absent(it) &&
            !(cJSON_IsString(it) && !it->valuestring[0])) {
            srv__err_set(e, 400, "suffix", "suffix is not supported");
            return -EINVAL;
        }
    }
    return 0;
}

static int parse_logprobs(srv_gen_request_t *r, const cJSON *root, srv_kind_t kind, srv_api_err *e)
{
    int64_t v = 0;
    bool present = false;
    if (kind == SRV_KIND_COMPLETION) {
        /* Legacy shape: logprobs is the number of alternatives (0 .. 5). */
        if (get_int(root, "logprobs", 0, 5, &v, &present, e)) return -EINVAL;
        r->logprobs = present;
        r->top_logprobs = (int32_t)v;
        return 0;
    }
    if (get_bool(root, "logprobs", &r->logprobs, e)) return -EINVAL;
    if (get_int(root, "top_logprobs", 0, 20, &v, &present, e)) return -EINVAL;
    if (present && v > 0 && !r->logprobs) {
        srv__err_set(e, 400, "top_logprobs", "'top_logprobs' needs 'logprobs' set to true");
        return -EINVAL;
    }
    r->top_logprobs = (int32_t)v;
    return 0;
}

static int parse_sampling(srv_gen_request_t *r, const cJSON *root, srv_api_err *e)
{
    int64_t v = 0;
    bool present = false;
    if (get_number(root, "temperature", 0, 2, &r->temperature, e) ||
        get_number(root, "top_p", 0, 1, &r->top_p, e) ||
        get_number(root, "min_p", 0, 1, &r->min_p, e) ||
        get_number(root, "repetition_penalty", 1e-6, 100, &r->repetition_penalty, e) ||
        get_number(root, "presence_penalty", -2, 2, &r->presence_penalty, e) ||
        get_number(root, "frequency_penalty", -2, 2, &r->frequency_penalty, e))
        return -EINVAL;
    if (get_int(root, "top_k", -1, INT32_MAX, &v, NULL, e)) return -EINVAL;
    r->top_k = v < 0 ? 0 : (int32_t)v;
    v = 0;
    if (get_int(root, "seed", -9.2e18, 1.8e19, &v, &present, e)) return -EINVAL;
    r->seed = (uint64_t)v;
    r->has_seed = present;
    return 0;
}

int srv__parse_request(srv_call *call, const char *body, size_t len, srv_kind_t kind,
                       const char *model_id, int max_n, srv_api_err *e)
{
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(body, len, &end, false);
    if (root && end) {
        while (end < body + len && (*end == ' ' || *end == '\t' || *end == '\r' || *end == '\n'))
            end++;
        if (end != body + len) {
            cJSON_Delete(root);
            root = NULL;
        }
    }
    if (!root) {
        srv__err_set(e, 400, NULL, "the request body is not valid JSON");
        return -EINVAL;
    }
    call->root = root;
    if (!cJSON_IsObject(root)) {
        srv__err_set(e, 400, NULL, "the request body must be a JSON object");
        return -EINVAL;
    }
    srv_gen_request_t *r = &call->req;
    *r = (srv_gen_request_t){.kind = kind,
                             .max_tokens = -1,
                             .temperature = 1,
                             .top_p = 1,
                             .repetition_penalty = 1,
                             .n = 1};
    const char *model = NULL;
    if (get_string(root, "model", &model, e)) return -EINVAL;
    if (!model) {
        srv__err_set(e, 400, "model", "'model' is required");
        return -EINVAL;
    }
    if (strcmp(model, model_id) != 0) {
        srv__err_set(e, 400, "model", "The model '%s' does not exist; this server serves '%s'",
                     model, model_id);
        e->code = "model_not_found";
        return -EINVAL;
    }
    int rc = kind == SRV_KIND_CHAT ? parse_messages(call, root, e) : parse_prompt(call, root, e);
    if (rc) return rc;
    int64_t v = 0;
    bool present = false;
    if (get_int(root, "max_tokens", 1, INT32_MAX, &v, &present, e)) return -EINVAL;
    if (present) r->max_tokens = v;
    present = false;
    if (get_int(root, "max_completion_tokens", 1, INT32_MAX, &v, &present, e)) return -EINVAL;
    if (present) r->max_tokens = v;
    v = 1;
    if (get_int(root, "n", 1, max_n, &v, NULL, e)) return -EINVAL;
    r->n = (int32_t)v;
    if (parse_sampling(r, root, e) || parse_logprobs(r, root, kind, e)) return -EINVAL;
    if ((rc = parse_stop(call, root, e)) || (rc = parse_logit_bias(call, root, e))) return rc;
    if (get_bool(root, "stream", &r->stream, e) || get_string(root, "user", &r->user, e))
        return -EINVAL;
    const cJSON *so = cJSON_GetObjectItemCaseSensitive(root, "stream_options");
    if (!absent(so)) {
        if (!cJSON_IsObject(so)) {
            srv__err_set(e, 400, "stream_options", "'stream_options' must be an object");
            return -EINVAL;
        }
        if (get_bool(so, "include_usage", &r->include_usage, e)) {
            snprintf(e->param, sizeof e->param, "stream_options.include_usage");
            return -EINVAL;
        }
    }
    if ((rc = refuse_unsupported(root, kind, e))) return rc;
    if ((rc = parse_tools(r, root, kind, e))) return rc;
    const cJSON *rf = cJSON_GetObjectItemCaseSensitive(root, "response_format");
    const cJSON *rf_type = cJSON_IsObject(rf) ? cJSON_GetObjectItemCaseSensitive(rf, "type") : NULL;
    r->json_object = cJSON_IsString(rf_type) && !strcmp(rf_type->valuestring, "json_object");
    if (cJSON_IsString(rf_type) && !strcmp(rf_type->valuestring, "json_schema"))
        r->json_schema = cJSON_GetObjectItemCaseSensitive(
            cJSON_GetObjectItemCaseSensitive(rf, "json_schema"), "schema");
    return 0;
}
