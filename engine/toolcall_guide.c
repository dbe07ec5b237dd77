/*
 * Forced tool calls (toolcall.h): the calls a tool_choice of "required" or a named function
 * allows, as one schema guide per function over {"name": its name, "arguments": its
 * parameters}, between the literal texts the format writes around calls.  The guides of all
 * allowed functions run side by side until the name tells them apart.
 */
#include "engine/toolcall.h"

#include "base/strbuf.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct tool_spec {
    const char *open, *end, *next; /* next NULL: one call only */
    int n;
    schema *sch[TOOL_GUIDE_MAX_FUNCS];
};

/* Whether a schema anywhere holds {"$ref": "#"}. */
static bool refs_root(const cJSON *j)
{
    const cJSON *ref = cJSON_IsObject(j) ? cJSON_GetObjectItemCaseSensitive(j, "$ref") : NULL;
    if (cJSON_IsString(ref) && !strcmp(ref->valuestring, "#")) return true;
    const cJSON *kid;
    cJSON_ArrayForEach(kid, j)
    {
        if (refs_root(kid)) return true;
    }
    return false;
}

int tool_spec_create(tool_spec **out, tool_format f, const cJSON *tools, const char *only,
                     bool parallel, char *err, size_t err_size)
{
    *out = NULL;
    if (f == TOOL_FORMAT_UNSUPPORTED) {
        snprintf(err, err_size,
                 "this model's chat template has a tool-call format moeserve "
                 "does not read");
        return -EINVAL;
    }
    tool_spec *s = calloc(1, sizeof *s);
    if (!s) return -ENOMEM;
    switch (f) {
    case TOOL_FORMAT_MISTRAL:
        *s = (tool_spec){.open = "[TOOL_CALLS][", .end = "]", .next = ", "};
        break;
    case TOOL_FORMAT_LLAMA3:
        *s = (tool_spec){.open = "", .end = "", .next = NULL};
        parallel = false; /* the answer is one JSON object */
        break;
    default:
        *s = (tool_spec){.open = "<tool_call>\n",
                         .end = "\n</tool_call>",
                         .next = "\n</tool_call>\n<tool_call>\n"};
        break;
    }
    if (!parallel) s->next = NULL;
    const char *args_key = f == TOOL_FORMAT_LLAMA3 ? "parameters" : "arguments";
    int rc = 0;
    const cJSON *tool;
    cJSON_ArrayForEach(tool, tools)
    {
        const cJSON *fn = cJSON_GetObjectItemCaseSensitive(tool, "function");
        const cJSON *name = cJSON_GetObjectItemCaseSensitive(fn, "name");
        if (!cJSON_IsString(name) || (only && strcmp(only, name->valuestring))) continue;
        if (s->n == TOOL_GUIDE_MAX_FUNCS) {
            snprintf(err, err_size, "more than %d tools cannot be forced at once",
                     TOOL_GUIDE_MAX_FUNCS);
            rc = -EINVAL;
            break;
        }
        /* {"name": const, "arguments": the parameters}: the call as the format writes it */
        const cJSON *params = cJSON_GetObjectItemCaseSensitive(fn, "parameters");
        cJSON *w = cJSON_CreateObject();
        cJSON *props = w ? cJSON_AddObjectToObject(w, "properties") : NULL;
        cJSON *nm = props ? cJSON_AddObjectToObject(props, "name") : NULL;
        cJSON *pc = params ? cJSON_Duplicate(params, true)
                           : cJSON_Parse("{\"type\":\"object\",\"properties\":{}}");
        cJSON *req = cJSON_CreateArray();
        if (!nm || !pc || !req || !cJSON_AddStringToObject(w, "type", "object") ||
            !cJSON_AddStringToObject(nm, "const", name->valuestring) ||
            !cJSON_AddItemToObject(props, args_key, pc) ||
            !cJSON_AddItemToObject(w, "required", req) ||
            !cJSON_AddItemToArray(req, cJSON_CreateString("name")) ||
            !cJSON_AddItemToArray(req, cJSON_CreateString(args_key)) ||
            !cJSON_AddFalseToObject(w, "additionalProperties")) {
            if (!cJSON_GetObjectItemCaseSensitive(props, args_key)) cJSON_Delete(pc);
            if (!cJSON_GetObjectItemCaseSensitive(w, "required")) cJSON_Delete(req);
            cJSON_Delete(w);
            rc = -ENOMEM;
            break;
        }
        /* The parameters' definitions move to the root, where their "#/$defs/…" references
         * now point; a reference to the parameters' own root cannot follow them there. */
        static const char *const defs[] = {"$defs", "definitions"};
        for (int d = 0; d < 2; d++) {
            cJSON *dj = cJSON_DetachItemFromObjectCaseSensitive(pc, defs[d]);
            if (dj) cJSON_AddItemToObject(w, defs[d], dj);
        }
        char msg[300];
        if (refs_root(pc)) {
            snprintf(err, err_size,
                     "tool '%.64s' cannot be forced: its parameters refer to their own root "
                     "(\"$ref\": \"#\")",
                     name->valuestring);
            cJSON_Delete(w);
            rc = -EINVAL;
            break;
        }
        rc = schema_compile(&s->sch[s->n], w, msg, sizeof msg);
        cJSON_Delete(w);
        if (rc) {
            snprintf(err, err_size, "tool '%.64s' cannot be forced: its parameters %s",
                     name->valuestring, msg);
            break;
        }
        s->n++;
    }
    if (rc == 0 && s->n == 0) {
        snprintf(err, err_size, "no tool named '%.64s'", only ? only : "");
        rc = -EINVAL;
    }
    if (rc) {
        if (rc == -ENOMEM) snprintf(err, err_size, "out of memory");
        tool_spec_destroy(&s);
        return rc;
    }
    *out = s;
    return 0;
}

void tool_spec_destroy(tool_spec **sp)
{
    tool_spec *s = *sp;
    if (!s) return;
    *sp = NULL;
    for (int i = 0; i < s->n; i++)
        schema_free(&s->sch[i]);
    free(s);
}

enum { G_OPEN, G_BODY, G_AFTER };

static void body_start(tool_guide *g)
{
    g->stage = G_BODY;
    g->n_alive = g->spec->n;
    for (int i = 0; i < g->spec->n; i++) {
        g->alive[i] = i;
        schema_guide_init(&g->g[i], g->spec->sch[i]);
    }
}

size_t tool_guide_size(const tool_spec *s)
{
    return sizeof(tool_guide) + (size_t)s->n * sizeof(schema_guide);
}

void tool_guide_init(tool_guide *g, const tool_spec *s)
{
    g->spec = s;
    g->last = g->end_alive = g->next_alive = false;
    g->stage = G_OPEN;
    g->pos = 0;
    g->n_alive = 0;
    if (!s->open[0]) body_start(g);
}

void tool_guide_last_call(tool_guide *g)
{
    g->last = true;
    /* before the next call's opening diverges from the end: only the end remains */
    if (g->stage == G_AFTER && g->end_alive) g->next_alive = false;
}

void tool_guide_copy(tool_guide *dst, const tool_guide *src)
{
    dst->spec = src->spec;
    dst->last = src->last;
    dst->stage = src->stage;
    dst->pos = src->pos;
    dst->end_alive = src->end_alive;
    dst->next_alive = src->next_alive;
    dst->n_alive = src->n_alive;
    for (int j = 0; j < src->n_alive; j++) {
        int i = src->alive[j];
        dst->alive[j] = i;
        schema_guide_copy(&dst->g[i], &src->g[i]);
    }
}

static bool guide_byte(tool_guide *g, char c)
{
    const tool_spec *s = g->spec;
    switch (g->stage) {
    case G_OPEN:
        if (c != s->open[g->pos]) return false;
        if (!s->open[++g->pos]) body_start(g);
        return true;
    case G_BODY: {
        int kept = 0;
        bool done = false;
        for (int j = 0; j < g->n_alive; j++) {
            int i = g->alive[j];
            if (!schema_guide_feed(&g->g[i], &c, 1)) continue;
            g->alive[kept++] = i;
            done |= schema_guide_done(&g->g[i]);
        }
        g->n_alive = kept;
        if (!kept) return false;
        if (done) {
            g->stage = G_AFTER;
            g->pos = 0;
            g->end_alive = true;
            g->next_alive = s->next != NULL && !g->last;
        }
        return true;
    }
    case G_AFTER: {
        size_t el = strlen(s->end);
        g->end_alive = g->end_alive && g->pos < el && s->end[g->pos] == c;
        g->next_alive = g->next_alive && s->next[g->pos] == c;
        if (!g->end_alive && !g->next_alive) return false;
        g->pos++;
        if (g->next_alive && !s->next[g->pos]) body_start(g);
        return true;
    }
    }
    return false;
}

bool tool_guide_feed(tool_guide *g, const char *bytes, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!guide_byte(g, bytes[i])) return false;
    return true;
}

bool tool_guide_done(const tool_guide *g)
{
    return g->stage == G_AFTER && g->end_alive && g->pos == strlen(g->spec->end);
}

bool tool_guide_may_continue(const tool_guide *g)
{
    return g->stage != G_AFTER || g->next_alive;
}

int tool_guide_closing(const tool_guide *g, char *out, size_t size)
{
    const tool_spec *s = g->spec;
    strbuf t = {0};
    int rc = 0;
    char buf[4096];
    if (g->stage == G_OPEN || (g->stage == G_AFTER && !g->end_alive)) {
        /* before a call, or midway into the text that opens the next one: a whole call */
        rc |= strbuf_adds(&t, g->stage == G_OPEN ? s->open + g->pos : s->next + g->pos);
        schema_guide fresh;
        schema_guide_init(&fresh, s->sch[0]);
        int n = schema_guide_closing(&fresh, buf, sizeof buf);
        rc |= n < 0 ? -1 : strbuf_add(&t, buf, (size_t)n);
        rc |= strbuf_adds(&t, s->end);
    } else if (g->stage == G_BODY) {
        int n = schema_guide_closing(&g->g[g->alive[0]], buf, sizeof buf);
        rc |= n < 0 ? -1 : strbuf_add(&t, buf, (size_t)n);
        rc |= strbuf_adds(&t, s->end);
    } else {
        rc |= strbuf_adds(&t, s->end + g->pos);
    }
    int len = -1;
    if (rc == 0 && t.len < size) {
        memcpy(out, t.data ? t.data : "", t.len);
        out[t.len] = 0;
        len = (int)t.len;
    }
    free(t.data);
    return len;
}
