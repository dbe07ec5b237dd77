/*
 * The JSON guide: every compact JSON object is accepted byte by byte and ends done; texts that
 * are not a prefix of one are refused at the first wrong byte; from every prefix of a valid
 * object the closing text completes an object that cJSON parses; nesting is bounded.
 * The schema guide: the same for the values a schema accepts, each completion checked against the
 * schema by an independent walk over cJSON's parse; keywords it cannot enforce are refused.
 */
#include "sampling/json_guide.h"
#include "sampling/json_schema.h"

#include <check.h>
#include <cjson/cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const valid[] = {
    "{}",
    "{\"a\":1}",
    "{\"a\":[1,2.5e-3,-0,0.5,1E+9,true,false,null,\"x\\n\\u00e9\\\"\"],\"b\":{\"c\":{}}}",
    "{\"\":\"\",\"k\":[],\"l\":[[]],\"m\":[{}]}",
    "{\"n\":-12.75e2,\"o\":\"caf\xc3\xa9 \\/ \\\\ \\t\"}",
    "{\"deep\":{\"a\":{\"b\":[{\"c\":[0]}]}}}",
    "{\"u\":\"\xf0\x9f\x98\x80 \xe2\x82\xac \xc3\xa9 \xed\x9f\xbf \xf4\x8f\xbf\xbf\"}",
};

/* with the byte at which the guide must refuse */
static const struct {
    const char *text;
    size_t bad_at;
} invalid[] = {
    {" {}", 0},
    {"[]", 0},
    {"{\"a\" :1}", 4},
    {"{\"a\":01}", 6},
    {"{\"a\":1.}", 7},
    {"{\"a\":tru}", 8},
    {"{\"a\":\"\x01\"}", 6},
    /* strings hold valid UTF-8 only: what the client would see as U+FFFD is refused */
    {"{\"a\":\"\x80\"}", 6},
    {"{\"a\":\"\xc3\x28\"}", 7},
    {"{\"a\":\"\xc0\xaf\"}", 6},
    {"{\"a\":\"\xe0\x80\x80\"}", 7},
    {"{\"a\":\"\xed\xa0\x80\"}", 7},
    {"{\"a\":\"\xf4\x90\x80\x80\"}", 7},
    {"{\"a\":\"\xf5\"}", 6},
    {"{}x", 2},
    {"{\"a\":1,}", 7},
    {"{,}", 1},
    {"{\"a\":1]", 6},
    {"{\"a\":[1}", 7},
    {"{\"a\":\"\\x\"}", 7},
    {"{\"a\":\"\\u12g4\"}", 10},
    {"{\"a\":-}", 6},
    {"{\"a\":1e}", 7},
    {"{1:2}", 1},
    {"{\"a\":}", 5},
};

START_TEST(accepts_json_objects)
{
    for (size_t i = 0; i < sizeof valid / sizeof valid[0]; i++) {
        json_guide g;
        json_guide_init(&g);
        const char *t = valid[i];
        for (size_t k = 0; t[k]; k++) {
            ck_assert_msg(!json_guide_done(&g), "%s: done before byte %zu", t, k);
            ck_assert_msg(json_guide_feed(&g, t + k, 1), "%s: byte %zu refused", t, k);
        }
        ck_assert_msg(json_guide_done(&g), "%s: not done at its end", t);
        /* and whole, in one call */
        json_guide_init(&g);
        ck_assert(json_guide_feed(&g, t, strlen(t)) && json_guide_done(&g));
        cJSON *o = cJSON_Parse(t);
        ck_assert_msg(o != NULL, "the sample %s is JSON", t);
        cJSON_Delete(o);
    }
}
END_TEST

START_TEST(refuses_at_the_first_wrong_byte)
{
    for (size_t i = 0; i < sizeof invalid / sizeof invalid[0]; i++) {
        json_guide g;
        json_guide_init(&g);
        const char *t = invalid[i].text;
        size_t k = 0;
        while (t[k] && json_guide_feed(&g, t + k, 1))
            k++;
        ck_assert_msg(k == invalid[i].bad_at, "%s: refused at byte %zu, expected %zu", t, k,
                      invalid[i].bad_at);
    }
}
END_TEST

START_TEST(closing_completes_every_prefix)
{
    char closing[128], text[512];
    for (size_t i = 0; i < sizeof valid / sizeof valid[0]; i++) {
        const char *t = valid[i];
        for (size_t k = 0; k <= strlen(t); k++) {
            json_guide g;
            json_guide_init(&g);
            ck_assert(json_guide_feed(&g, t, k));
            int n = json_guide_closing(&g, closing, sizeof closing);
            ck_assert_int_ge(n, 0);
            json_guide c = g;
            ck_assert_msg(json_guide_feed(&c, closing, (size_t)n) && json_guide_done(&c),
                          "%.*s + %s: the guide does not end done", (int)k, t, closing);
            snprintf(text, sizeof text, "%.*s%s", (int)k, t, closing);
            cJSON *o = cJSON_Parse(text);
            ck_assert_msg(o && cJSON_IsObject(o), "%s is not a JSON object", text);
            cJSON_Delete(o);
        }
    }
}
END_TEST

START_TEST(nesting_is_bounded)
{
    json_guide g;
    json_guide_init(&g);
    ck_assert(json_guide_feed(&g, "{\"a\":", 5));
    int k = 1;
    while (json_guide_feed(&g, "[", 1))
        k++;
    ck_assert_int_eq(k, JSON_GUIDE_MAX_DEPTH);
    char closing[128];
    json_guide_init(&g);
    ck_assert(json_guide_feed(&g, "{\"a\":", 5));
    for (int d = 1; d < JSON_GUIDE_MAX_DEPTH; d++)
        ck_assert(json_guide_feed(&g, "[", 1));
    ck_assert_int_eq(json_guide_closing(&g, closing, sizeof closing), JSON_GUIDE_MAX_DEPTH);
}
END_TEST

/* ---- the schema guide ---------------------------------------------------------------------- */

/* OpenAI's strict mode: every property required, so every one is written. */
static const char *const person_schema =
    "{\"type\":\"object\",\"additionalProperties\":false,\"properties\":{"
    "\"name\":{\"type\":\"string\",\"description\":\"who\"},"
    "\"age\":{\"type\":\"integer\"},"
    "\"tags\":{\"type\":\"array\",\"items\":{\"enum\":[\"a\",\"bb\",1,12]}},"
    "\"ok\":{\"type\":\"boolean\"},"
    "\"score\":{\"type\":\"number\"},"
    "\"kind\":{\"const\":\"x\"},"
    "\"nested\":{\"type\":\"object\",\"properties\":{\"n\":{\"type\":\"null\"},"
    "\"l\":{\"type\":\"array\",\"items\":{\"type\":\"number\"}}},\"required\":[\"n\",\"l\"]}},"
    "\"required\":[\"name\",\"age\",\"tags\",\"ok\",\"score\",\"kind\",\"nested\"]}";

static const char *const people[] = {
    "{\"name\":\"Ann \\\"A\\\" \\u00e9\",\"age\":-3,\"tags\":[\"a\",12,\"bb\",1],\"ok\":true,"
    "\"score\":1.5e3,\"kind\":\"x\",\"nested\":{\"n\":null,\"l\":[0,-0.5,2E-2]}}",
    "{\"name\":\"\",\"age\":0,\"tags\":[],\"ok\":false,\"score\":-0,\"kind\":\"x\","
    "\"nested\":{\"n\":null,\"l\":[]}}",
    NULL,
};

typedef struct bad_text {
    const char *text;
    size_t bad_at; /* the byte the guide must refuse */
} bad_text;

static const bad_text not_people[] = {
    {"{\"age\":1", 2},                                 /* the properties in their order */
    {"{\"name\":\"A\"}", 11},                          /* every (required) property */
    {"{\"name\":\"A\",\"age\":1.5", 19},               /* an integer */
    {"{\"name\":\"A\",\"age\":1,\"tags\":[\"c\"", 29}, /* the enum */
    {"{\"name\": \"A\"", 8},                           /* compact */
    {"{\"name\":1", 8},                                /* a string */
    {NULL, 0},
};

/* The person schema, checked on cJSON's tree without the guide. */
static bool is_person(const cJSON *o)
{
    static const char *const keys[] = {"name", "age", "tags", "ok", "score", "kind", "nested"};
    if (!cJSON_IsObject(o) || cJSON_GetArraySize(o) != 7) return false;
    int i = 0;
    for (const cJSON *c = o->child; c; c = c->next, i++)
        if (strcmp(c->string, keys[i])) return false;
    const cJSON *age = cJSON_GetObjectItem(o, "age"), *tags = cJSON_GetObjectItem(o, "tags"),
                *nested = cJSON_GetObjectItem(o, "nested"), *t;
    if (!cJSON_IsString(cJSON_GetObjectItem(o, "name")) || !cJSON_IsNumber(age) ||
        age->valuedouble != (double)(long long)age->valuedouble || !cJSON_IsArray(tags) ||
        !cJSON_IsBool(cJSON_GetObjectItem(o, "ok")) ||
        !cJSON_IsNumber(cJSON_GetObjectItem(o, "score")) ||
        strcmp(cJSON_GetStringValue(cJSON_GetObjectItem(o, "kind")) ?: "", "x") ||
        !cJSON_IsObject(nested) || cJSON_GetArraySize(nested) != 2 ||
        !cJSON_IsNull(cJSON_GetObjectItem(nested, "n")) ||
        !cJSON_IsArray(cJSON_GetObjectItem(nested, "l")))
        return false;
    cJSON_ArrayForEach(t, tags)
    {
        bool ok = (cJSON_IsString(t) &&
                   (!strcmp(t->valuestring, "a") || !strcmp(t->valuestring, "bb"))) ||
                  (cJSON_IsNumber(t) && (t->valuedouble == 1 || t->valuedouble == 12));
        if (!ok) return false;
    }
    cJSON_ArrayForEach(t, cJSON_GetObjectItem(nested, "l")) if (!cJSON_IsNumber(t)) return false;
    return true;
}

static schema *compile_text(const char *text, char *err, size_t err_size, int *rc)
{
    cJSON *j = cJSON_Parse(text);
    ck_assert_ptr_nonnull(j);
    schema *s = NULL;
    *rc = schema_compile(&s, j, err, err_size);
    cJSON_Delete(j);
    return s;
}

START_TEST(schema_accepts_its_values_and_completes_every_prefix)
{
    char err[256], closing[1024], text[2048];
    int rc;
    schema *s = compile_text(person_schema, err, sizeof err, &rc);
    ck_assert_msg(rc == 0, "%s", err);
    for (size_t i = 0; people[i]; i++) {
        const char *t = people[i];
        cJSON *o = cJSON_Parse(t);
        ck_assert_msg(is_person(o), "sample %zu fits the schema", i);
        cJSON_Delete(o);
        for (size_t k = 0; k <= strlen(t); k++) {
            schema_guide g;
            schema_guide_init(&g, s);
            ck_assert_msg(schema_guide_feed(&g, t, k), "%s: byte %zu refused", t, k);
            ck_assert(schema_guide_done(&g) == (k == strlen(t)));
            int n = schema_guide_closing(&g, closing, sizeof closing);
            ck_assert_int_ge(n, 0);
            schema_guide c;
            schema_guide_copy(&c, &g);
            ck_assert_msg(schema_guide_feed(&c, closing, (size_t)n) && schema_guide_done(&c),
                          "%.*s + %s: not done", (int)k, t, closing);
            snprintf(text, sizeof text, "%.*s%s", (int)k, t, closing);
            o = cJSON_Parse(text);
            ck_assert_msg(is_person(o), "%s does not fit the schema", text);
            cJSON_Delete(o);
        }
    }
    for (size_t i = 0; not_people[i].text; i++) {
        schema_guide g;
        schema_guide_init(&g, s);
        const char *t = not_people[i].text;
        size_t k = 0;
        while (t[k] && schema_guide_feed(&g, t + k, 1))
            k++;
        ck_assert_msg(k == not_people[i].bad_at, "%s: refused at %zu, expected %zu", t, k,
                      not_people[i].bad_at);
    }
    schema_free(&s);
}
END_TEST

/* ---- an independent checker: a walk over cJSON's tree against the schema's ---------------- */

/* Stricter than JSON Schema in one way, as the guide is: an object's keys come in the order
 * the schema declares them. */

static const cJSON *item(const cJSON *o, const char *key)
{
    return cJSON_GetObjectItemCaseSensitive(o, key);
}

static const cJSON *ref_target(const cJSON *root, const char *ref)
{
    if (!strcmp(ref, "#")) return root;
    if (!strncmp(ref, "#/$defs/", 8)) return item(item(root, "$defs"), ref + 8);
    if (!strncmp(ref, "#/definitions/", 14)) return item(item(root, "definitions"), ref + 14);
    return NULL;
}

static bool is_whole(double v)
{
    return v >= 9007199254740992.0 || v <= -9007199254740992.0 || v == (double)(long long)v;
}

static bool of_type(const cJSON *v, const char *t)
{
    if (!strcmp(t, "object")) return cJSON_IsObject(v);
    if (!strcmp(t, "array")) return cJSON_IsArray(v);
    if (!strcmp(t, "string")) return cJSON_IsString(v);
    if (!strcmp(t, "number")) return cJSON_IsNumber(v);
    if (!strcmp(t, "integer")) return cJSON_IsNumber(v) && is_whole(v->valuedouble);
    if (!strcmp(t, "boolean")) return cJSON_IsBool(v);
    if (!strcmp(t, "null")) return cJSON_IsNull(v);
    return false;
}

static bool in_range(double count, const cJSON *sch, const char *lo, const char *hi)
{
    const cJSON *min = item(sch, lo), *max = item(sch, hi);
    return (!min || count >= min->valuedouble) && (!max || count <= max->valuedouble);
}

static bool conforms(const cJSON *v, const cJSON *sch, const cJSON *root);

static bool object_conforms(const cJSON *v, const cJSON *sch, const cJSON *root)
{
    const cJSON *props = item(sch, "properties"), *r;
    int last = -1;
    for (const cJSON *c = v->child; c; c = c->next) {
        int at = 0;
        const cJSON *p = props ? props->child : NULL;
        for (; p && strcmp(p->string, c->string); p = p->next)
            at++;
        if (!p || at <= last || !conforms(c, p, root)) return false;
        last = at;
    }
    cJSON_ArrayForEach(r, item(sch, "required")) if (!item(v, r->valuestring)) return false;
    return true;
}

static bool typed_conforms(const cJSON *v, const cJSON *sch, const cJSON *root, const char *t)
{
    if (!of_type(v, t)) return false;
    if (cJSON_IsString(v)) {
        size_t code_points = 0;
        for (const unsigned char *p = (const unsigned char *)v->valuestring; *p; p++)
            code_points += (*p & 0xC0) != 0x80;
        return in_range((double)code_points, sch, "minLength", "maxLength");
    }
    if (cJSON_IsArray(v)) {
        const cJSON *e;
        cJSON_ArrayForEach(e, v) if (!conforms(e, item(sch, "items"), root)) return false;
        return in_range(cJSON_GetArraySize(v), sch, "minItems", "maxItems");
    }
    if (cJSON_IsObject(v)) return object_conforms(v, sch, root);
    return true;
}

static bool conforms(const cJSON *v, const cJSON *sch, const cJSON *root)
{
    const cJSON *k, *e;
    if ((k = item(sch, "$ref"))) return conforms(v, ref_target(root, k->valuestring), root);
    if ((k = item(sch, "anyOf"))) {
        cJSON_ArrayForEach(e, k) if (conforms(v, e, root)) return true;
        return false;
    }
    if ((k = item(sch, "oneOf"))) {
        int matches = 0;
        cJSON_ArrayForEach(e, k) matches += conforms(v, e, root);
        return matches == 1;
    }
    if ((k = item(sch, "const"))) return cJSON_Compare(v, k, true);
    if ((k = item(sch, "enum"))) {
        cJSON_ArrayForEach(e, k) if (cJSON_Compare(v, e, true)) return true;
        return false;
    }
    k = item(sch, "type");
    if (cJSON_IsString(k)) return typed_conforms(v, sch, root, k->valuestring);
    cJSON_ArrayForEach(e, k) if (typed_conforms(v, sch, root, e->valuestring)) return true;
    return false;
}

static bool text_conforms(const char *text, const cJSON *sch)
{
    cJSON *v = cJSON_Parse(text);
    bool ok = v && cJSON_IsObject(v) && conforms(v, sch, sch);
    cJSON_Delete(v);
    return ok;
}

/* ---- the corpus ------------------------------------------------------------------------- */

typedef struct corpus {
    const char *name, *schema;
    const char *const *valid; /* NULL-terminated */
    const bad_text *invalid;  /* ends with a NULL text */
} corpus;

#define TEXTS(...) ((const char *const[]){__VA_ARGS__, NULL})
#define BAD(...) ((const bad_text[]){__VA_ARGS__, {NULL, 0}})

static const corpus corpora[] = {
    {"person", person_schema, people, not_people},
    {"optional",
     "{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"integer\"},\"b\":{\"type\":"
     "\"string\"},\"c\":{\"type\":\"boolean\"},\"d\":{\"type\":\"null\"}},\"required\":[\"c\"]}",
     TEXTS("{\"c\":true}", "{\"a\":1,\"c\":false}", "{\"b\":\"x\",\"c\":true,\"d\":null}",
           "{\"a\":1,\"b\":\"\",\"c\":true}", "{\"c\":true,\"d\":null}"),
     BAD({"{}", 1},                         /* c is required */
         {"{\"d\":null", 2},                /* nothing after c before it */
         {"{\"c\":true,\"a\"", 11},         /* nor before it after it */
         {"{\"b\":\"x\",\"a\"", 10},        /* declared order */
         {"{\"a\":1,\"a\"", 8},             /* once */
         {"{\"c\":true,\"d\":null,", 18})}, /* no more after the last */
    {"all optional",
     "{\"type\":\"object\",\"properties\":{\"x\":{\"type\":\"number\"},\"y\":{\"type\":\"object\","
     "\"properties\":{\"z\":{\"type\":\"string\"}}}}}",
     TEXTS("{}", "{\"x\":1}", "{\"y\":{}}", "{\"x\":-1.5,\"y\":{\"z\":\"\"}}"),
     BAD({"{\"y\":{},\"x\"", 7}, {"{\"x\":1,}", 7}, {"{\"y\":{\"z\":\"\",", 12})},
    {"lengths",
     "{\"type\":\"object\",\"properties\":{\"s\":{\"type\":\"string\",\"minLength\":2,"
     "\"maxLength\":3},\"t\":{\"type\":\"string\",\"maxLength\":1},\"l\":{\"type\":\"array\","
     "\"items\":{\"type\":\"integer\"},\"minItems\":1,\"maxItems\":3},\"e\":{\"type\":\"array\","
     "\"items\":{\"type\":\"string\"},\"maxItems\":0}},\"required\":[\"s\",\"t\",\"l\",\"e\"]}",
     TEXTS("{\"s\":\"ab\",\"t\":\"\",\"l\":[1],\"e\":[]}",
           "{\"s\":\"\\u00e9\\n\",\"t\":\"\\ud83d\\ude00\",\"l\":[1,2,3],\"e\":[]}",
           "{\"s\":\"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\",\"t\":\"\\\\\",\"l\":[-7,0],\"e\":[]}",
           "{\"s\":\"abc\",\"t\":\"\\uD83D\\uDE00\",\"l\":[1],\"e\":[]}"),
     BAD({"{\"s\":\"a\"", 7},                            /* minLength */
         {"{\"s\":\"abcd", 9},                           /* maxLength */
         {"{\"s\":\"\\n\\t\\\"\\\\", 12},                /* four escapes are four code points */
         {"{\"s\":\"ab\",\"t\":\"xy", 16},               /* maxLength 1 */
         {"{\"s\":\"\\udc00", 9},                        /* a low surrogate alone */
         {"{\"s\":\"\\ud83dx", 12},                      /* a high one alone */
         {"{\"s\":\"\\ud83d\\u0041", 14},                /* followed by no low one */
         {"{\"s\":\"ab\",\"t\":\"\\ud83d\\ude00x", 27},  /* a pair is one code point */
         {"{\"s\":\"ab\",\"t\":\"\",\"l\":[]", 22},      /* minItems */
         {"{\"s\":\"ab\",\"t\":\"\",\"l\":[1,2,3,", 27}, /* maxItems */
         {"{\"s\":\"ab\",\"t\":\"\",\"l\":[1],\"e\":[\"", 30})}, /* maxItems 0 */
    {"anyOf",
     "{\"type\":\"object\",\"properties\":{\"v\":{\"anyOf\":[{\"type\":\"integer\"},{\"type\":"
     "\"string\",\"maxLength\":2},{\"type\":\"object\",\"properties\":{\"k\":{\"type\":"
     "\"null\"}},\"required\":[\"k\"]},{\"type\":\"object\",\"properties\":{\"k\":{\"type\":"
     "\"integer\"},\"m\":{\"type\":\"string\"}}}]},\"w\":{\"type\":[\"number\",\"null\","
     "\"boolean\"]},\"z\":{\"type\":\"array\",\"items\":{\"anyOf\":[{\"type\":\"integer\"},"
     "{\"type\":\"number\"},{\"enum\":[\"a\",\"ab\"]},{\"type\":\"string\",\"minLength\":3}]}}},"
     "\"required\":[\"v\",\"w\",\"z\"]}",
     TEXTS("{\"v\":1,\"w\":null,\"z\":[]}", "{\"v\":\"ab\",\"w\":1.5,\"z\":[1,2.5,\"a\",\"ab\",3]}",
           "{\"v\":{\"k\":null},\"w\":true,\"z\":[1e5,\"abc\"]}",
           "{\"v\":{\"k\":1,\"m\":\"\"},\"w\":false,\"z\":[\"ab\",-0]}",
           "{\"v\":{},\"w\":0,\"z\":[]}"),
     BAD({"{\"v\":1.5", 6},                       /* an integer */
         {"{\"v\":\"abc", 8},                     /* a string of up to 2 */
         {"{\"v\":t", 5},                         /* none begins so */
         {"{\"v\":{\"k\":null,", 14},             /* the first object ends there */
         {"{\"v\":{\"m\":\"\",", 12},             /* the second one's k and m, in order */
         {"{\"v\":{\"k\":2,\"m\":1", 16},         /* m is a string */
         {"{\"v\":1,\"w\":\"x", 11},              /* number, null or boolean */
         {"{\"v\":1,\"w\":1,\"z\":[\"b\"", 20})}, /* "b": not in the enum, too short */
    {"oneOf",
     "{\"type\":\"object\",\"properties\":{\"o\":{\"oneOf\":[{\"type\":\"string\"},{\"type\":"
     "\"null\"},{\"type\":\"array\",\"items\":{\"type\":\"integer\"}}]}},\"required\":[\"o\"]}",
     TEXTS("{\"o\":\"x\"}", "{\"o\":null}", "{\"o\":[1,2]}"), BAD({"{\"o\":1", 5})},
    {"tree",
     "{\"$defs\":{\"node\":{\"type\":\"object\",\"properties\":{\"v\":{\"type\":\"integer\"},"
     "\"kids\":{\"type\":\"array\",\"items\":{\"$ref\":\"#/$defs/node\"}}},\"required\":[\"v\"]}"
     "},\"$ref\":\"#/$defs/node\"}",
     TEXTS("{\"v\":1}", "{\"v\":1,\"kids\":[]}",
           "{\"v\":1,\"kids\":[{\"v\":2},{\"v\":3,\"kids\":[{\"v\":4,\"kids\":[]}]}]}"),
     BAD({"{\"v\":1,\"kids\":[{\"kids\"", 17}, {"{\"v\":1,\"kids\":[1", 15})},
    {"linked list",
     "{\"title\":\"l\",\"type\":\"object\",\"properties\":{\"name\":{\"type\":\"string\"},"
     "\"next\":{\"anyOf\":[{\"$ref\":\"#\"},{\"$ref\":\"#/definitions/end\"}]}},\"required\":"
     "[\"name\",\"next\"],\"definitions\":{\"end\":{\"type\":\"null\"}}}",
     TEXTS("{\"name\":\"a\",\"next\":null}",
           "{\"name\":\"a\",\"next\":{\"name\":\"b\",\"next\":{\"name\":\"\",\"next\":null}}}"),
     BAD({"{\"name\":\"a\",\"next\":{}", 20}, {"{\"name\":\"a\",\"next\":[", 19})},
    /* an optional recursion on every level: near the limit "c" is no longer offered */
    {"deep",
     "{\"$defs\":{\"n\":{\"type\":\"object\",\"properties\":{\"c\":{\"$ref\":\"#/$defs/n\"},"
     "\"v\":{\"type\":\"integer\"}},\"required\":[\"v\"]}},\"$ref\":\"#/$defs/n\"}",
     TEXTS("{\"v\":1}", "{\"c\":{\"c\":{\"v\":2},\"v\":1},\"v\":0}"), BAD({"{\"c\":{}", 6})},
    /* items that need three levels: near the limit an array stays empty */
    {"deep items",
     "{\"$defs\":{\"n\":{\"type\":\"object\",\"properties\":{\"l\":{\"type\":\"array\","
     "\"items\":{\"$ref\":\"#/$defs/n\"}},\"v\":{\"type\":\"object\",\"properties\":{\"x\":{"
     "\"type\":\"null\"}},\"required\":[\"x\"]}},\"required\":[\"v\"]}},\"$ref\":\"#/$defs/n\"}",
     TEXTS("{\"v\":{\"x\":null}}", "{\"l\":[{\"v\":{\"x\":null}}],\"v\":{\"x\":null}}"),
     BAD({"{\"v\":{}", 6})},
};

enum { N_CORPORA = sizeof corpora / sizeof corpora[0] };

static schema *compile_corpus(const corpus *c, cJSON **json)
{
    char err[256];
    *json = cJSON_Parse(c->schema);
    ck_assert_msg(*json, "%s: the schema is JSON", c->name);
    schema *s = NULL;
    int rc = schema_compile(&s, *json, err, sizeof err);
    ck_assert_msg(rc == 0, "%s: %s", c->name, err);
    return s;
}

/* From text's first k bytes, the closing completes a value the checker accepts. */
static void check_closing(const schema_guide *g, const char *text, size_t k, const cJSON *json,
                          const char *name)
{
    char closing[4096], whole[8192];
    int n = schema_guide_closing(g, closing, sizeof closing);
    ck_assert_msg(n >= 0, "%s: %.*s: no closing", name, (int)k, text);
    schema_guide c;
    schema_guide_copy(&c, g);
    ck_assert_msg(schema_guide_feed(&c, closing, (size_t)n) && schema_guide_done(&c),
                  "%s: %.*s + %s: the guide does not end done", name, (int)k, text, closing);
    snprintf(whole, sizeof whole, "%.*s%s", (int)k, text, closing);
    ck_assert_msg(text_conforms(whole, json), "%s: %s does not fit the schema", name, whole);
}

START_TEST(schema_corpus_valid_texts)
{
    const corpus *c = &corpora[_i];
    cJSON *json;
    schema *s = compile_corpus(c, &json);
    for (size_t i = 0; c->valid[i]; i++) {
        const char *t = c->valid[i];
        ck_assert_msg(text_conforms(t, json), "%s: the sample %s fits the schema", c->name, t);
        schema_guide g;
        schema_guide_init(&g, s);
        for (size_t k = 0; t[k]; k++) {
            ck_assert_msg(!schema_guide_done(&g), "%s: %s done before byte %zu", c->name, t, k);
            check_closing(&g, t, k, json, c->name);
            ck_assert_msg(schema_guide_feed(&g, t + k, 1), "%s: %s: byte %zu refused", c->name, t,
                          k);
        }
        ck_assert_msg(schema_guide_done(&g), "%s: %s not done at its end", c->name, t);
        check_closing(&g, t, strlen(t), json, c->name);
    }
    schema_free(&s);
    cJSON_Delete(json);
}
END_TEST

START_TEST(schema_corpus_invalid_texts)
{
    const corpus *c = &corpora[_i];
    cJSON *json;
    schema *s = compile_corpus(c, &json);
    for (size_t i = 0; c->invalid[i].text; i++) {
        schema_guide g;
        schema_guide_init(&g, s);
        const char *t = c->invalid[i].text;
        size_t k = 0;
        while (t[k] && schema_guide_feed(&g, t + k, 1))
            k++;
        ck_assert_msg(k == c->invalid[i].bad_at, "%s: %s: refused at %zu, expected %zu", c->name, t,
                      k, c->invalid[i].bad_at);
    }
    schema_free(&s);
    cJSON_Delete(json);
}
END_TEST

static uint64_t next_random(uint64_t *state)
{
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    return *state;
}

/* Half the picks prefer bytes that make structure, or walks would stay inside strings. */
static bool structural(int b)
{
    return b && strchr("{}[],:\"-0.eEtfnuld8c\\", b);
}

/* Random walks over the bytes the guide accepts: never stuck before the value is done, and
 * from wherever a walk stops (and on the way), the closing completes a value the checker
 * accepts.  A byte that would end the value is taken only now and then, so walks go deep. */
START_TEST(schema_corpus_random_walks)
{
    enum { WALKS = 300, STEPS = 600 };
    const corpus *c = &corpora[_i];
    cJSON *json;
    schema *s = compile_corpus(c, &json);
    uint64_t seed = 0x9e3779b97f4a7c15ull + (uint64_t)_i;
    char text[STEPS + 1];
    for (int w = 0; w < WALKS; w++) {
        schema_guide g;
        schema_guide_init(&g, s);
        bool deep = w % 4 == 0;
        int steps = 1 + (int)(next_random(&seed) % (deep ? STEPS : STEPS / 3)), k = 0;
        for (; k < steps; k++) {
            int ok[256], n_ok = 0, n_struct = 0, structs[256], n_ending = 0;
            for (int b = 0; b < 256; b++) {
                /* \u0000 is valid, but would cut cJSON's string short of what the guide counted */
                if (b == '0' && k >= 5 && !memcmp(text + k - 5, "\\u000", 5)) continue;
                schema_guide t;
                schema_guide_copy(&t, &g);
                char byte = (char)b;
                if (!schema_guide_feed(&t, &byte, 1)) continue;
                if (schema_guide_done(&t) && next_random(&seed) % 8) {
                    n_ending++;
                    continue;
                }
                ok[n_ok++] = b;
                if (structural(b)) structs[n_struct++] = b;
            }
            if (n_ok == 0 && n_ending) break; /* only the end is left */
            ck_assert_msg(n_ok > 0 || schema_guide_done(&g), "%s: stuck after %.*s", c->name, k,
                          text);
            if (n_ok == 0) break;
            uint64_t r = next_random(&seed);
            int b = n_struct && (r & 1) ? structs[(r >> 1) % (uint64_t)n_struct]
                                        : ok[(r >> 1) % (uint64_t)n_ok];
            for (int o = 0; deep && o < n_ok; o++) /* deep walks open what they can */
                if ((ok[o] == '{' || ok[o] == '[') && r % 16) b = ok[o];
            text[k] = (char)b;
            ck_assert(schema_guide_feed(&g, text + k, 1));
            if (k % 16 == 0) check_closing(&g, text, (size_t)k + 1, json, c->name);
        }
        check_closing(&g, text, (size_t)k, json, c->name);
    }
    schema_free(&s);
    cJSON_Delete(json);
}
END_TEST

/* The tree nests as deep as the guide allows: an object and its kids array per level. */
START_TEST(schema_depth_is_bounded_with_a_closing)
{
    cJSON *json;
    schema *s = compile_corpus(&corpora[6], &json);
    ck_assert_str_eq(corpora[6].name, "tree");
    schema_guide g;
    schema_guide_init(&g, s);
    static const char level[] = "{\"v\":0,\"kids\":[";
    char text[1024] = "";
    int levels = 0;
    for (;;) {
        schema_guide t;
        schema_guide_copy(&t, &g);
        if (!schema_guide_feed(&t, level, 1)) break;
        ck_assert(schema_guide_feed(&g, level, strlen(level)));
        strcat(text, level);
        levels++;
        check_closing(&g, text, strlen(text), json, "tree");
    }
    ck_assert_int_eq(levels, SCHEMA_MAX_DEPTH / 2);
    /* at the deepest object, "kids" is still allowed: an empty array fits */
    schema_guide_init(&g, s);
    for (int i = 0; i < SCHEMA_MAX_DEPTH / 2 - 1; i++)
        ck_assert(schema_guide_feed(&g, level, strlen(level)));
    ck_assert(schema_guide_feed(&g, "{\"v\":0,\"kids\":[]}", 17));
    schema_free(&s);
    cJSON_Delete(json);

    /* an optional recursion: at the deepest object that still fits, its key is not offered */
    s = compile_corpus(&corpora[8], &json);
    ck_assert_str_eq(corpora[8].name, "deep");
    schema_guide_init(&g, s);
    for (int i = 0; i < SCHEMA_MAX_DEPTH - 2; i++)
        ck_assert(schema_guide_feed(&g, "{\"c\":", 5));
    ck_assert(schema_guide_feed(&g, "{\"", 2));
    schema_guide probe;
    schema_guide_copy(&probe, &g);
    ck_assert(!schema_guide_feed(&probe, "c", 1));
    ck_assert(schema_guide_feed(&g, "v\":0}", 5));
    schema_free(&s);
    cJSON_Delete(json);

    /* the linked list's next must be written: near the limit only null is */
    s = compile_corpus(&corpora[7], &json);
    schema_guide_init(&g, s);
    static const char node[] = "{\"name\":\"\",\"next\":";
    text[0] = 0;
    levels = 0;
    for (;;) {
        schema_guide t;
        schema_guide_copy(&t, &g);
        if (!schema_guide_feed(&t, node, 1)) break;
        ck_assert(schema_guide_feed(&g, node, strlen(node)));
        strcat(text, node);
        levels++;
    }
    ck_assert_int_eq(levels, SCHEMA_MAX_DEPTH - 1); /* the last next is null */
    ck_assert(schema_guide_feed(&g, "n", 1));
    strcat(text, "n");
    check_closing(&g, text, strlen(text), json, "linked list");
    char closing[64];
    ck_assert_int_eq(schema_guide_closing(&g, closing, sizeof closing), 3 + levels);
    schema_free(&s);
    cJSON_Delete(json);
}
END_TEST

/* Alternatives that stay alive together need a stack each; more than the guide holds is
 * refused at the byte that would need them, never followed wrongly. */
START_TEST(schema_stacks_are_bounded)
{
    char err[256];
    int rc;
    /* 2 objects x 5 strings alive inside "s" */
    static const char *const text =
        "{\"type\":\"object\",\"properties\":{\"o\":{\"anyOf\":["
        "{\"type\":\"object\",\"properties\":{\"s\":{\"$ref\":\"#/$defs/"
        "str\"}},\"required\":[\"s\"]},"
        "{\"type\":\"object\",\"properties\":{\"s\":{\"$ref\":\"#/$defs/str\"},\"t\":{\"type\":"
        "\"null\"}},\"required\":[\"s\"]}]}},\"required\":[\"o\"],\"$defs\":{\"str\":{\"anyOf\":["
        "{\"type\":\"string\",\"maxLength\":1},{\"type\":\"string\",\"maxLength\":2},"
        "{\"type\":\"string\",\"maxLength\":3},{\"type\":\"string\",\"maxLength\":4},"
        "{\"type\":\"string\",\"maxLength\":5}]}}}";
    schema *s = compile_text(text, err, sizeof err, &rc);
    ck_assert_msg(rc == 0, "%s", err);
    schema_guide g;
    schema_guide_init(&g, s);
    ck_assert(schema_guide_feed(&g, "{\"o\":{\"s\":", 10));
    ck_assert(!schema_guide_feed(&g, "\"", 1));
    schema_free(&s);
}
END_TEST

START_TEST(schema_refuses_what_it_cannot_enforce)
{
    static const struct {
        const char *schema, *says;
    } bad[] = {
        {"{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"string\",\"pattern\":\"x\"}}}",
         "/properties/a: the keyword 'pattern'"},
        {"{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"number\",\"minimum\":0}}}",
         "/properties/a: the keyword 'minimum'"},
        {"{\"type\":\"object\",\"properties\":{\"a\":{\"anyOf\":[]}}}",
         "anyOf must be a non-empty"},
        {"{\"type\":\"array\",\"items\":{\"type\":\"string\"}}", "top level must be an object"},
        {"{\"type\":\"object\",\"additionalProperties\":true}", "only false"},
        {"{\"type\":\"object\",\"properties\":{\"a\":{}}}", "needs a \"type\""},
        {"{\"type\":[\"object\",\"null\"]}", "top level must be an object"},
        {"{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"integer\"}},\"required\":[\"b\"]}",
         "does not declare"},
        {"{\"type\":\"object\",\"properties\":{\"a\":{\"enum\":[]}}}", "empty enum"},
        {"{\"type\":\"object\",\"properties\":{\"a\":{\"const\":{\"b\":1}}}}", "enum/const values"},
        {"{\"type\":\"object\",\"properties\":{\"a\":{\"oneOf\":[{\"type\":\"integer\"},{\"type\":"
         "\"number\"}]}}}",
         "/properties/a: oneOf whose alternatives"},
        {"{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"string\",\"anyOf\":[{\"type\":"
         "\"string\"}]}}}",
         "'anyOf' beside other keywords"},
        {"{\"type\":\"object\",\"properties\":{\"a\":{\"anyOf\":[{\"type\":[\"string\",\"integer\","
         "\"number\",\"boolean\",\"null\",\"object\",\"array\"],\"items\":{\"type\":\"null\"}},"
         "{\"type\":\"string\",\"maxLength\":1},{\"type\":\"string\",\"maxLength\":2}]}}}",
         "/properties/a: more than 8 alternatives"},
        {"{\"type\":\"object\",\"properties\":{\"a\":{\"$ref\":\"#/properties/b\"}}}",
         "'$ref' '#/properties/b' is not"},
        {"{\"type\":\"object\",\"properties\":{\"a\":{\"$ref\":\"#/$defs/a\"}},\"$defs\":{\"a\":{"
         "\"$ref\":\"#/$defs/a\"}}}",
         "refers only to itself"},
        {"{\"type\":\"object\",\"properties\":{\"a\":{\"$ref\":\"#/$defs/a\"}},\"$defs\":{\"a\":{"
         "\"anyOf\":[{\"$ref\":\"#/$defs/a\"},{\"type\":\"null\"}]}}}",
         "/$defs/a: an anyOf that contains itself"},
        {"{\"type\":\"object\",\"properties\":{\"a\":{\"$ref\":\"#\"}},\"required\":[\"a\"]}",
         "no value fits in 32 levels"},
        {"{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"array\",\"items\":{\"$ref\":\"#\"}"
         ","
         "\"minItems\":1}},\"required\":[\"a\"]}",
         "no value fits in 32 levels"},
        {"{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"string\",\"minLength\":3,"
         "\"maxLength\":2}}}",
         "minLength is above maxLength"},
        {"{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"array\",\"items\":{\"type\":"
         "\"null\"},\"minItems\":-1}}}",
         "minItems must be a whole number"},
        {"{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"string\",\"maxLength\":1.5}}}",
         "maxLength must be a whole number"},
    };
    char err[256];
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int rc;
        schema *s = compile_text(bad[i].schema, err, sizeof err, &rc);
        ck_assert_msg(rc == -EINVAL && !s, "%s: compiled", bad[i].schema);
        ck_assert_msg(strstr(err, bad[i].says), "%s: '%s' does not say '%s'", bad[i].schema, err,
                      bad[i].says);
    }
    /* 65 properties are more than the key matcher holds */
    char big[4096] = "{\"type\":\"object\",\"properties\":{";
    for (int p = 0; p < 65; p++)
        snprintf(big + strlen(big), sizeof big - strlen(big), "%s\"p%d\":{\"type\":\"null\"}",
                 p ? "," : "", p);
    strcat(big, "}}");
    int rc;
    schema *s = compile_text(big, err, sizeof err, &rc);
    ck_assert_msg(rc == -EINVAL && strstr(err, "more than 64 properties"), "%s", err);
    ck_assert_ptr_null(s);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("json-guide");
    TCase *tc = tcase_create("guide");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, accepts_json_objects);
    tcase_add_test(tc, refuses_at_the_first_wrong_byte);
    tcase_add_test(tc, closing_completes_every_prefix);
    tcase_add_test(tc, nesting_is_bounded);
    tcase_add_test(tc, schema_accepts_its_values_and_completes_every_prefix);
    tcase_add_loop_test(tc, schema_corpus_valid_texts, 0, N_CORPORA);
    tcase_add_loop_test(tc, schema_corpus_invalid_texts, 0, N_CORPORA);
    tcase_add_loop_test(tc, schema_corpus_random_walks, 0, N_CORPORA);
    tcase_add_test(tc, schema_depth_is_bounded_with_a_closing);
    tcase_add_test(tc, schema_stacks_are_bounded);
    tcase_add_test(tc, schema_refuses_what_it_cannot_enforce);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
