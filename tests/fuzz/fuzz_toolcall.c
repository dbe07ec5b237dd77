/*
 * fuzz_toolcall — arbitrary bytes as a model's answer to a request with tools: the streaming
 * tool-call parser of every format, fed in chunks of every size the first byte picks, and the
 * forced-call guide of every format fed the same bytes.
 *
 * Input: a byte (format = b % 4, chunk = 1 + b / 4), then the answer.  Checked: calls are
 * announced in order, arguments only for the call announced last; an answer with none of the
 * bytes a call can start with comes back as content unchanged; the parser gives the same
 * content and calls whatever the chunking; at every byte the guide accepts, the closing it
 * offers completes an answer the guide calls done, which the parser reads as calls and nothing
 * else.
 */
#include "engine/toolcall.h"
#include "fuzz.h"

#include <string.h>

typedef struct out {
    char content[1 << 16];
    size_t content_len;
    int calls;
    bool overflow;
} out;

static void on_content(void *u, const char *t, size_t n)
{
    out *o = u;
    if (o->content_len + n > sizeof o->content) {
        o->overflow = true;
        return;
    }
    memcpy(o->content + o->content_len, t, n);
    o->content_len += n;
}

static void on_begin(void *u, int index, const char *name)
{
    out *o = u;
    FUZZ_CHECK(index == o->calls && name != NULL);
    o->calls++;
}

static void on_args(void *u, int index, const char *t, size_t n)
{
    out *o = u;
    FUZZ_CHECK(index == o->calls - 1 && n > 0 && t != NULL);
}

static void parse(tool_format f, const char *text, size_t len, size_t chunk, out *o)
{
    memset(o, 0, sizeof *o);
    tool_parser *p = NULL;
    if (tool_parser_create(&p, f)) return;
    tool_sink k = {o, on_content, on_begin, on_args};
    for (size_t i = 0; i < len; i += chunk)
        (void)tool_parser_feed(p, text + i, len - i < chunk ? len - i : chunk, &k);
    (void)tool_parser_finish(p, &k);
    FUZZ_CHECK(tool_parser_calls(p) == o->calls);
    tool_parser_destroy(&p);
}

static const char tools_json[] =
    "[{\"type\":\"function\",\"function\":{\"name\":\"get\",\"parameters\":{\"type\":\"object\","
    "\"required\":[\"q\"],\"properties\":{\"q\":{\"type\":\"string\",\"maxLength\":5},\"n\":{"
    "\"anyOf\":[{\"type\":\"integer\"},{\"type\":\"null\"}]}}}}},"
    "{\"type\":\"function\",\"function\":{\"name\":\"go\"}}]";

static void guide_run(tool_format f, const tool_spec *s, const char *text, size_t len)
{
    static char closing[8192], full[16384];
    tool_guide *g = malloc(tool_guide_size(s)), *c = malloc(tool_guide_size(s));
    if (!g || !c) {
        free(g);
        free(c);
        return;
    }
    tool_guide_init(g, s);
    for (size_t i = 0; i <= len; i++) {
        int n = tool_guide_closing(g, closing, sizeof closing);
        if (n >= 0 && i + (size_t)n < sizeof full) {
            tool_guide_copy(c, g);
            FUZZ_CHECK(tool_guide_feed(c, closing, (size_t)n));
            FUZZ_CHECK(tool_guide_done(c));
            memcpy(full, text, i);
            memcpy(full + i, closing, (size_t)n);
            static out o;
            parse(f, full, i + (size_t)n, 7, &o);
            /* a forced answer is calls and nothing else (the text holds valid UTF-8 only) */
            FUZZ_CHECK(o.calls >= 1 && o.content_len == 0);
        }
        if (i == len || !tool_guide_feed(g, text + i, 1)) break;
    }
    free(g);
    free(c);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || size > 4096) return 0;
    tool_format f = (tool_format)(data[0] % 4);
    size_t chunk = 1 + data[0] / 4;
    const char *text = (const char *)data + 1;
    size_t len = size - 1;

    static out a, b;
    parse(f, text, len, chunk, &a);
    parse(f, text, len, 1000000, &b);
    if (!a.overflow && !b.overflow) {
        FUZZ_CHECK(a.calls == b.calls);
        FUZZ_CHECK(a.content_len == b.content_len && !memcmp(a.content, b.content, a.content_len));
        bool can_start = memchr(text, '<', len) || memchr(text, '[', len) ||
                         (f == TOOL_FORMAT_LLAMA3 && memchr(text, '{', len));
        if (!can_start)
            FUZZ_CHECK(a.calls == 0 && a.content_len == len && !memcmp(a.content, text, len));
    }

    static tool_spec *spec[4][2];
    static bool made;
    if (!made) {
        made = true;
        cJSON *tools = cJSON_Parse(tools_json);
        char err[256];
        for (int i = 0; i < 4; i++)
            for (int par = 0; par < 2; par++)
                FUZZ_CHECK(tool_spec_create(&spec[i][par], (tool_format)i, tools, NULL, par, err,
                                            sizeof err) == 0);
        cJSON_Delete(tools);
    }
    guide_run(f, spec[f][data[0] & 1], text, len);
    return 0;
}
