/*
 * Tool calls (toolcall.h): format detection, the generic format's texts and the streaming
 * parser; the forced-call guide is in toolcall_guide.c.
 *
 * The parser reads one call object at a time with a byte-level scanner that knows only what it
 * must: where the top-level keys "name" and "arguments" (Llama 3: "parameters") are and where
 * their values end.  That is enough to announce a call as soon as its name is complete and to
 * pass the arguments' bytes on as they are generated, which is what lets a client show a call
 * being written; the scanner never rewrites the arguments' text (a client parses it).
 */
#include "engine/toolcall.h"

#include "base/strbuf.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char hermes_open[] = "<tool_call>";
static const char hermes_close[] = "</tool_call>";
static const char mistral_open[] = "[TOOL_CALLS]";
static const char mistral_args[] = "[ARGS]";
static const char llama_tag[] = "<|python_tag|>";

tool_format tool_format_detect(const char *src)
{
    if (!src) return TOOL_FORMAT_GENERIC;
    /* Templates with a format of their own that also name <tool_call> (Qwen3-Coder's XML
     * parameters, GLM's arg_key) must not be read as Hermes JSON. */
    if (strstr(src, "<function=") || strstr(src, "<arg_key>")) return TOOL_FORMAT_UNSUPPORTED;
    if (strstr(src, hermes_open)) return TOOL_FORMAT_HERMES;
    if (strstr(src, mistral_open)) return TOOL_FORMAT_MISTRAL;
    if (strstr(src, llama_tag)) return TOOL_FORMAT_LLAMA3;
    if (strstr(src, "tools") || strstr(src, "tool_calls")) return TOOL_FORMAT_UNSUPPORTED;
    return TOOL_FORMAT_GENERIC;
}

const char *tool_format_name(tool_format f)
{
    switch (f) {
    case TOOL_FORMAT_GENERIC:
        return "generic (Hermes form, tools in the system message)";
    case TOOL_FORMAT_HERMES:
        return "Hermes / Qwen <tool_call>";
    case TOOL_FORMAT_MISTRAL:
        return "Mistral [TOOL_CALLS]";
    case TOOL_FORMAT_LLAMA3:
        return "Llama 3 JSON";
    case TOOL_FORMAT_UNSUPPORTED:
        break;
    }
    return "unsupported";
}

bool tool_marker_token(tool_format f, const char *text, size_t len)
{
    static const char *const hermes[] = {hermes_open, hermes_close, NULL};
    static const char *const mistral[] = {mistral_open, mistral_args, NULL};
    static const char *const llama[] = {llama_tag, NULL};
    const char *const *m = f == TOOL_FORMAT_MISTRAL       ? mistral
                           : f == TOOL_FORMAT_LLAMA3      ? llama
                           : f == TOOL_FORMAT_UNSUPPORTED ? NULL
                                                          : hermes;
    for (; m && *m; m++)
        if (strlen(*m) == len && !memcmp(*m, text, len)) return true;
    return false;
}

char *tool_generic_system(const cJSON *tools)
{
    strbuf t = {0};
    int rc =
        strbuf_adds(&t, "# Tools\n\nYou may call one or more functions to assist with the user "
                        "query.\n\nYou are provided with function signatures within "
                        "<tools></tools> XML tags:\n<tools>");
    const cJSON *tool;
    cJSON_ArrayForEach(tool, tools)
    {
        char *j = cJSON_PrintUnformatted(tool);
        rc |= j ? strbuf_adds(&t, "\n") | strbuf_adds(&t, j) : -ENOMEM;
        free(j);
    }
    rc |=
        strbuf_adds(&t, "\n</tools>\n\nFor each function call, return a json object with function "
                        "name and arguments within <tool_call></tool_call> XML tags:\n"
                        "<tool_call>\n{\"name\": <function-name>, \"arguments\": "
                        "<args-json-object>}\n</tool_call>");
    if (rc) {
        free(t.data);
        return NULL;
    }
    return t.data;
}

char *tool_generic_call_text(const char *name, const cJSON *arguments)
{
    cJSON *n = cJSON_CreateString(name);
    char *nj = n ? cJSON_PrintUnformatted(n) : NULL;
    char *aj = arguments ? cJSON_PrintUnformatted(arguments) : NULL;
    strbuf t = {0};
    int rc = nj ? 0 : -ENOMEM;
    rc |= strbuf_adds(&t, "<tool_call>\n{\"name\": ");
    rc |= nj ? strbuf_adds(&t, nj) : 0;
    rc |= strbuf_adds(&t, ", \"arguments\": ");
    rc |= strbuf_adds(&t, aj ? aj : "{}");
    rc |= strbuf_adds(&t, "}\n</tool_call>");
    cJSON_Delete(n);
    free(nj);
    free(aj);
    if (rc) {
        free(t.data);
        return NULL;
    }
    return t.data;
}

/* ---- one call object ----------------------------------------------------------------------------
 */

enum { K_WANT_OPEN, K_WANT_KEY, K_IN_KEY, K_WANT_COLON, K_WANT_VALUE, K_IN_VALUE, K_AFTER_VALUE };
enum { V_OTHER, V_NAME, V_ARGS };
enum { SCAN_MORE, SCAN_DONE, SCAN_FAIL };

typedef struct obj_scan {
    int k, vkind, depth; /* depth inside the value being read */
    bool in_str, esc, value_is_str, begun, have_args;
    strbuf key, name, args; /* args: held until the name is known (or when a string) */
} obj_scan;

static void scan_reset(obj_scan *s)
{
    strbuf key = s->key, name = s->name, args = s->args;
    key.len = name.len = args.len = 0;
    *s = (obj_scan){.key = key, .name = name, .args = args};
}

static void scan_free(obj_scan *s)
{
    free(s->key.data);
    free(s->name.data);
    free(s->args.data);
}

static bool is_ws(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

struct tool_parser {
    tool_format fmt;
    int state;
    int n_calls;
    bool seen_text;  /* Llama 3: something other than whitespace came first */
    bool after_call; /* nothing but whitespace since the last call */
    strbuf hold;     /* text that may be the start of a marker, or a call being read */
    strbuf out_args; /* arguments bytes of this feed, passed on together (whole characters) */
    size_t matched;  /* bytes of the marker being matched after a call */
    obj_scan sc;
    int rc;
};

enum {
    P_TEXT,      /* content; looking for the opening marker */
    P_CALL,      /* inside a call object */
    P_AFTER,     /* Hermes: after a call object, expecting </tool_call> */
    P_M_START,   /* Mistral: after [TOOL_CALLS], deciding between [ … ] and name[ARGS] */
    P_M_ARRAY,   /* Mistral: between the objects of the array */
    P_M_NAME,    /* Mistral: the name before [ARGS] */
    P_M_ARGS,    /* Mistral: the arguments value after [ARGS] */
    P_L_BETWEEN, /* Llama 3: after a call, before the next one */
};

static void emit_content(tool_parser *p, const tool_sink *k, const char *s, size_t n)
{
    if (n && k->content) k->content(k->user, s, n);
}

static char *decode_json_string(const char *raw, size_t n)
{
    char *q = malloc(n + 3);
    if (!q) return NULL;
    q[0] = '"';
    memcpy(q + 1, raw, n);
    q[n + 1] = '"';
    q[n + 2] = 0;
    cJSON *v = cJSON_Parse(q);
    free(q);
    char *out = cJSON_IsString(v) ? strdup(v->valuestring) : NULL;
    cJSON_Delete(v);
    return out;
}

static void flush_args(tool_parser *p, const tool_sink *k)
{
    if (p->out_args.len && k->call_args)
        k->call_args(k->user, p->n_calls, p->out_args.data, p->out_args.len);
    p->out_args.len = 0;
}

/* Arguments text of the current call: gathered, and passed on at the end of the feed or of the
 * call, so that a fragment never splits a character. */
static void call_args(tool_parser *p, const tool_sink *k, const char *s, size_t n)
{
    if (n && strbuf_add(&p->out_args, s, n)) p->rc = -ENOMEM;
}

/* The name is complete: announce the call and pass on what was held of its arguments. */
static void begin_call(tool_parser *p, const tool_sink *k)
{
    obj_scan *s = &p->sc;
    char *name = decode_json_string(s->name.data ? s->name.data : "", s->name.len);
    if (!name) {
        p->rc = -ENOMEM;
        return;
    }
    if (k->call_begin) k->call_begin(k->user, p->n_calls, name);
    free(name);
    s->begun = true;
    if (!s->value_is_str && s->args.len) {
        call_args(p, k, s->args.data, s->args.len);
        s->args.len = 0;
    }
}

/* A byte of the arguments' value: passed on once the call is announced, held before. */
static void args_byte(tool_parser *p, const tool_sink *k, char c)
{
    obj_scan *s = &p->sc;
    s->have_args = true;
    if (s->begun && !s->value_is_str)
        call_args(p, k, &c, 1);
    else if (strbuf_add(&s->args, &c, 1))
        p->rc = -ENOMEM;
}

static void value_end(tool_parser *p, const tool_sink *k)
{
    obj_scan *s = &p->sc;
    if (s->vkind == V_NAME && !s->begun) begin_call(p, k);
    s->k = K_AFTER_VALUE;
}

static bool key_is(const obj_scan *s, const char *want)
{
    return s->key.len == strlen(want) && !memcmp(s->key.data, want, s->key.len);
}

/* One byte of a call object {"name": …, "arguments": …}. */
static int scan_byte(tool_parser *p, const tool_sink *k, char c)
{
    obj_scan *s = &p->sc;
    switch (s->k) {
    case K_WANT_OPEN:
        if (is_ws(c)) return SCAN_MORE;
        if (c != '{') return SCAN_FAIL;
        s->k = K_WANT_KEY;
        return SCAN_MORE;
    case K_WANT_KEY:
        if (is_ws(c) || c == ',') return SCAN_MORE;
        if (c == '}') return SCAN_DONE;
        if (c != '"') return SCAN_FAIL;
        s->k = K_IN_KEY;
        s->key.len = 0;
        return SCAN_MORE;
    case K_IN_KEY:
        if (s->esc)
            s->esc = false;
        else if (c == '\\')
            s->esc = true;
        else if (c == '"') {
            s->k = K_WANT_COLON;
            return SCAN_MORE;
        }
        if (strbuf_add(&s->key, &c, 1)) p->rc = -ENOMEM;
        return SCAN_MORE;
    case K_WANT_COLON:
        if (is_ws(c)) return SCAN_MORE;
        if (c != ':') return SCAN_FAIL;
        s->k = K_WANT_VALUE;
        return SCAN_MORE;
    case K_WANT_VALUE:
        if (is_ws(c)) return SCAN_MORE;
        s->vkind = key_is(s, "name")                                   ? V_NAME
                   : key_is(s, "arguments") || key_is(s, "parameters") ? V_ARGS
                                                                       : V_OTHER;
        s->k = K_IN_VALUE;
        s->depth = 0;
        s->in_str = s->esc = false;
        if (s->vkind == V_NAME) {
            if (c != '"' || s->begun) return SCAN_FAIL;
            s->in_str = true;
            s->name.len = 0;
            return SCAN_MORE;
        }
        if (s->vkind == V_ARGS) {
            if (s->have_args) return SCAN_FAIL; /* two argument values */
            s->value_is_str = c == '"';
            s->args.len = 0;
        }
        /* the value's first byte */
        __attribute__((fallthrough));
    case K_IN_VALUE:
        if (s->in_str) {
            if (s->esc)
                s->esc = false;
            else if (c == '\\')
                s->esc = true;
            else if (c == '"' && s->depth == 0) {
                s->in_str = false;
                if (s->vkind == V_ARGS) args_byte(p, k, c);
                value_end(p, k);
                return SCAN_MORE;
            } else if (c == '"')
                s->in_str = false;
            if (s->vkind == V_NAME) {
                if (strbuf_add(&s->name, &c, 1)) p->rc = -ENOMEM;
            } else if (s->vkind == V_ARGS)
                args_byte(p, k, c);
            return SCAN_MORE;
        }
        if (s->depth == 0 && (c == ',' || c == '}' || is_ws(c))) {
            /* the end of a scalar value */
            value_end(p, k);
            if (c == '}') return SCAN_DONE;
            if (c == ',') s->k = K_WANT_KEY;
            return SCAN_MORE;
        }
        if (c == '"') s->in_str = true;
        if (c == '{' || c == '[') s->depth++;
        if (c == '}' || c == ']') s->depth--;
        if (s->vkind == V_ARGS) args_byte(p, k, c);
        if (s->depth == 0 && (c == '}' || c == ']')) value_end(p, k);
        return s->depth < 0 ? SCAN_FAIL : SCAN_MORE;
    case K_AFTER_VALUE:
        if (is_ws(c)) return SCAN_MORE;
        if (c == ',') {
            s->k = K_WANT_KEY;
            return SCAN_MORE;
        }
        if (c == '}') return SCAN_DONE;
        return SCAN_FAIL;
    }
    return SCAN_FAIL;
}

/* The object is complete: finish the call, or report that it was not one. */
static bool close_call(tool_parser *p, const tool_sink *k)
{
    obj_scan *s = &p->sc;
    if (!s->begun) return false; /* no name: not a call */
    if (!s->have_args) {
        call_args(p, k, "{}", 2);
    } else if (s->value_is_str) {
        /* arguments written as a JSON string: its text is the arguments */
        char *a = decode_json_string(s->args.data + 1, s->args.len >= 2 ? s->args.len - 2 : 0);
        if (a) call_args(p, k, a, strlen(a));
        if (!a) p->rc = -ENOMEM;
        free(a);
    }
    flush_args(p, k);
    p->n_calls++;
    p->after_call = true;
    return true;
}

int tool_parser_create(tool_parser **out, tool_format f)
{
    *out = calloc(1, sizeof **out);
    if (!*out) return -ENOMEM;
    (*out)->fmt = f;
    return 0;
}

void tool_parser_destroy(tool_parser **pp)
{
    tool_parser *p = *pp;
    if (!p) return;
    *pp = NULL;
    scan_free(&p->sc);
    free(p->hold.data);
    free(p->out_args.data);
    free(p);
}

int tool_parser_calls(const tool_parser *p)
{
    return p->n_calls;
}

static const char *open_marker(const tool_parser *p)
{
    return p->fmt == TOOL_FORMAT_MISTRAL ? mistral_open : hermes_open;
}

/* Longest suffix of s[0..n) that is a proper prefix of m. */
static size_t partial_suffix(const char *s, size_t n, const char *m)
{
    size_t ml = strlen(m);
    for (size_t l = n < ml - 1 ? n : ml - 1; l > 0; l--)
        if (!memcmp(s + n - l, m, l)) return l;
    return 0;
}

static void start_call(tool_parser *p)
{
    scan_reset(&p->sc);
    p->hold.len = 0;
}

/* The call object being read turned out not to be one: give its text back as content. */
static void call_failed(tool_parser *p, const tool_sink *k, const char *prefix)
{
    emit_content(p, k, prefix, strlen(prefix));
    emit_content(p, k, p->hold.data, p->hold.len);
    p->hold.len = 0;
    p->state = P_TEXT;
    p->seen_text = true;
}

static const char *call_prefix(const tool_parser *p)
{
    if (p->fmt == TOOL_FORMAT_LLAMA3) return "";
    if (p->fmt == TOOL_FORMAT_MISTRAL) return p->state == P_M_ARGS ? "" : mistral_open;
    return hermes_open;
}

/* Feeds one byte in a call state; the byte is kept in hold so that a failed call can be given
 * back. */
static void call_byte(tool_parser *p, const tool_sink *k, char c)
{
    if (strbuf_add(&p->hold, &c, 1)) p->rc = -ENOMEM;
    int r = scan_byte(p, k, c);
    if (r == SCAN_MORE) return;
    if (r == SCAN_DONE && close_call(p, k)) {
        p->hold.len = 0;
        p->matched = 0;
        p->state = p->fmt == TOOL_FORMAT_MISTRAL  ? P_M_ARRAY
                   : p->fmt == TOOL_FORMAT_LLAMA3 ? P_L_BETWEEN
                                                  : P_AFTER;
        return;
    }
    if (p->sc.begun) { /* announced already: end the call as it is */
        flush_args(p, k);
        p->n_calls++;
        p->hold.len = 0;
        p->state = P_TEXT;
        return;
    }
    call_failed(p, k, call_prefix(p));
}

static void text_bytes(tool_parser *p, const tool_sink *k, const char *s, size_t n);

static void step(tool_parser *p, const tool_sink *k, const char *s, size_t n)
{
    for (size_t i = 0; i < n && !p->rc; i++) {
        char c = s[i];
        switch (p->state) {
        case P_TEXT:
            text_bytes(p, k, s + i, n - i);
            return;
        case P_CALL:
            call_byte(p, k, c);
            break;
        case P_AFTER: /* whitespace, then </tool_call> */
            if (p->matched == 0 && is_ws(c)) break;
            if (c == hermes_close[p->matched]) {
                if (++p->matched == sizeof hermes_close - 1) {
                    p->state = P_TEXT;
                    p->matched = 0;
                }
                break;
            }
            /* no closing tag: the rest is content again */
            emit_content(p, k, hermes_close, p->matched);
            p->matched = 0;
            p->state = P_TEXT;
            i--;
            break;
        case P_M_START:
            if (is_ws(c)) break;
            if (c == '[') {
                p->state = P_M_ARRAY;
                break;
            }
            p->state = P_M_NAME;
            scan_reset(&p->sc);
            p->hold.len = 0;
            i--;
            break;
        case P_M_ARRAY:
            if (is_ws(c) || c == ',') break;
            if (c == ']') {
                p->state = P_TEXT;
                break;
            }
            start_call(p);
            p->state = P_CALL;
            i--;
            break;
        case P_M_NAME: {
            if (strbuf_add(&p->hold, &c, 1)) p->rc = -ENOMEM;
            size_t al = sizeof mistral_args - 1;
            if (p->hold.len >= al && !memcmp(p->hold.data + p->hold.len - al, mistral_args, al)) {
                obj_scan *sc = &p->sc;
                size_t nl = p->hold.len - al;
                while (nl && is_ws(p->hold.data[nl - 1]))
                    nl--;
                size_t st = 0;
                while (st < nl && is_ws(p->hold.data[st]))
                    st++;
                sc->name.len = 0;
                if (strbuf_add(&sc->name, p->hold.data + st, nl - st)) p->rc = -ENOMEM;
                begin_call(p, k);
                /* the arguments: one JSON value read as the value of an "arguments" key */
                sc->k = K_WANT_VALUE;
                sc->key.len = 0;
                if (strbuf_adds(&sc->key, "arguments")) p->rc = -ENOMEM;
                p->hold.len = 0;
                p->state = P_M_ARGS;
            } else if (c == '{' || c == '\n' || p->hold.len > 256) {
                call_failed(p, k, mistral_open);
            }
            break;
        }
        case P_M_ARGS: {
            if (strbuf_add(&p->hold, &c, 1)) p->rc = -ENOMEM;
            int r = scan_byte(p, k, c);
            if (p->sc.k == K_AFTER_VALUE || r != SCAN_MORE) {
                if (r != SCAN_FAIL) close_call(p, k);
                if (r == SCAN_FAIL) { /* announced already: end it as it is */
                    flush_args(p, k);
                    p->n_calls++;
                }
                p->hold.len = 0;
                p->state = P_TEXT;
            }
            break;
        }
        case P_L_BETWEEN:
            if (is_ws(c) || c == ';') break;
            if (c == '{') {
                start_call(p);
                p->state = P_CALL;
                i--;
                break;
            }
            p->state = P_TEXT;
            p->seen_text = true;
            i--;
            break;
        }
    }
}

/* Content: looks for the marker that opens a call, holding back what may be its start. */
static void text_bytes(tool_parser *p, const tool_sink *k, const char *s, size_t n)
{
    if (p->fmt == TOOL_FORMAT_LLAMA3 && !p->seen_text) {
        /* A Llama 3 call is the whole answer: decide on its first non-space byte. */
        size_t i = 0;
        while (i < n) {
            if (strbuf_add(&p->hold, s + i, 1)) {
                p->rc = -ENOMEM;
                return;
            }
            i++;
            size_t tl = sizeof llama_tag - 1;
            const char *h = p->hold.data;
            size_t hl = p->hold.len, st = 0;
            while (st < hl && is_ws(h[st]))
                st++;
            if (st == hl) continue;
            if (hl - st <= tl && !memcmp(h + st, llama_tag, hl - st)) {
                if (hl - st == tl) p->hold.len = 0; /* the tag itself carries nothing */
                continue;
            }
            if (h[st] == '{') {
                /* the leading space stays in hold: a call that fails gives it back too */
                scan_reset(&p->sc);
                p->hold.len = st;
                p->state = P_CALL;
                call_byte(p, k, '{');
                step(p, k, s + i, n - i);
                return;
            }
            p->seen_text = true;
            emit_content(p, k, h, hl);
            p->hold.len = 0;
            break;
        }
        if (i == n) return;
        s += i;
        n -= i;
    }
    /* whitespace between and after calls is the format's, not content */
    while (p->after_call && n && is_ws(*s)) {
        s++;
        n--;
    }
    if (n) p->after_call = false;
    if (p->fmt == TOOL_FORMAT_LLAMA3) {
        emit_content(p, k, s, n);
        return;
    }
    const char *m = open_marker(p);
    size_t ml = strlen(m);
    /* held bytes first: they and the new text may complete the marker */
    while (n && p->hold.len) {
        size_t hl = p->hold.len;
        size_t take = ml - hl < n ? ml - hl : n;
        if (!memcmp(m + hl, s, take)) {
            if (strbuf_add(&p->hold, s, take)) {
                p->rc = -ENOMEM;
                return;
            }
            s += take;
            n -= take;
            if (p->hold.len == ml) {
                p->hold.len = 0;
                goto found;
            }
            return; /* still a partial marker */
        }
        /* not the marker: the first held byte is content; retry with the rest */
        emit_content(p, k, p->hold.data, 1);
        memmove(p->hold.data, p->hold.data + 1, hl - 1);
        p->hold.len = hl - 1;
        size_t again = partial_suffix(p->hold.data, p->hold.len, m);
        if (again != p->hold.len) {
            emit_content(p, k, p->hold.data, p->hold.len - again);
            memmove(p->hold.data, p->hold.data + p->hold.len - again, again);
            p->hold.len = again;
        }
    }
    {
        const char *at = memmem(s, n, m, ml);
        if (at) {
            emit_content(p, k, s, (size_t)(at - s));
            n -= (size_t)(at - s) + ml;
            s = at + ml;
            goto found;
        }
        size_t keep = partial_suffix(s, n, m);
        emit_content(p, k, s, n - keep);
        if (keep && strbuf_add(&p->hold, s + n - keep, keep)) p->rc = -ENOMEM;
        return;
    }
found:
    if (p->fmt == TOOL_FORMAT_MISTRAL) {
        p->state = P_M_START;
    } else {
        start_call(p);
        p->state = P_CALL;
    }
    step(p, k, s, n);
}

int tool_parser_feed(tool_parser *p, const char *s, size_t n, const tool_sink *k)
{
    if (p->rc) return p->rc;
    if (p->state == P_TEXT)
        text_bytes(p, k, s, n);
    else
        step(p, k, s, n);
    flush_args(p, k);
    return p->rc;
}

int tool_parser_finish(tool_parser *p, const tool_sink *k)
{
    if (p->rc) return p->rc;
    flush_args(p, k);
    switch (p->state) {
    case P_TEXT:
        emit_content(p, k, p->hold.data, p->hold.len);
        break;
    case P_CALL:
    case P_M_NAME:
        if (p->sc.begun)
            p->n_calls++; /* cut short (max_tokens): the client sees how far it got */
        else
            call_failed(p, k, call_prefix(p));
        break;
    case P_M_ARGS:
        p->n_calls++;
        break;
    case P_M_START:
        emit_content(p, k, mistral_open, sizeof mistral_open - 1);
        break;
    default:
        break;
    }
    p->hold.len = 0;
    p->state = P_TEXT;
    return p->rc;
}
