/*
 * fuzz_json_schema — arbitrary bytes as a response_format schema and as the text a model
 * writes under it: schema_compile, then the guide fed one byte at a time (the way the engine
 * tests each candidate token on a copy).  An empty schema (the input starts with a NUL) runs
 * the json_object guide instead.
 *
 * Input: the schema's JSON, a NUL, then the text.  Checked at every byte the guide accepts:
 * the closing text it offers from there is accepted and completes the value (the engine forces
 * exactly that when max_tokens runs out, so a closing the guide itself refuses would end a
 * response with broken JSON); and a value the guide calls complete is JSON that cJSON parses
 * (an object for json_object), unless it holds a \u escape: the guide accepts lone surrogates,
 * as RFC 8259's grammar does, and cJSON refuses them.
 */
#include "fuzz.h"
#include "sampling/json_guide.h"
#include "sampling/json_schema.h"

#include <string.h>

#define CLOSING_BYTES 8192

typedef struct guide {
    const schema *s; /* NULL: the json_object guide */
    schema_guide sg;
    json_guide jg;
} guide;

static bool feed(guide *g, const char *p, size_t n)
{
    return g->s ? schema_guide_feed(&g->sg, p, n) : json_guide_feed(&g->jg, p, n);
}

static bool done(const guide *g)
{
    return g->s ? schema_guide_done(&g->sg) : json_guide_done(&g->jg);
}

static void copy(guide *dst, const guide *src)
{
    dst->s = src->s;
    if (src->s)
        schema_guide_copy(&dst->sg, &src->sg);
    else
        dst->jg = src->jg;
}

static void check_closing(const guide *g)
{
    static char closing[CLOSING_BYTES];
    int n = g->s ? schema_guide_closing(&g->sg, closing, sizeof closing)
                 : json_guide_closing(&g->jg, closing, sizeof closing);
    if (n < 0) return; /* does not fit: the engine then ends the text as it is */
    FUZZ_CHECK((size_t)n < sizeof closing && closing[n] == 0);
    guide c;
    copy(&c, g);
    FUZZ_CHECK(feed(&c, closing, (size_t)n));
    FUZZ_CHECK(done(&c));
}

static void run(guide *g, const char *text, size_t len)
{
    size_t i = 0;
    for (; i < len; i++) {
        check_closing(g);
        if (done(g)) break;
        if (!feed(g, text + i, 1)) return;
    }
    if (!done(g) || memmem(text, i, "\\u", 2)) return;
    cJSON *v = cJSON_ParseWithLength(text, i);
    FUZZ_CHECK(v != NULL);
    if (!g->s) FUZZ_CHECK(cJSON_IsObject(v));
    cJSON_Delete(v);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const uint8_t *nul = memchr(data, 0, size);
    size_t schema_len = nul ? (size_t)(nul - data) : size;
    const char *text = nul ? (const char *)nul + 1 : "";
    size_t text_len = nul ? size - schema_len - 1 : 0;

    guide g = {0};
    schema *s = NULL;
    if (schema_len) {
        cJSON *json = cJSON_ParseWithLength((const char *)data, schema_len);
        if (!json) return 0;
        char err[256];
        int rc = schema_compile(&s, json, err, sizeof err);
        cJSON_Delete(json); /* the compiled schema must not point into the JSON */
        if (rc != 0) {
            FUZZ_CHECK(rc < 0 && s == NULL);
            return 0;
        }
        g.s = s;
        schema_guide_init(&g.sg, s);
    } else {
        json_guide_init(&g.jg);
    }
    run(&g, text, text_len);
    schema_free(&s);
    return 0;
}
