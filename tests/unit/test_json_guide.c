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

static const char *const person_schema =
    "{\"type\":\"object\",\"additionalProperties\":false,\"properties\":{"
    "\"name\":{\"type\":\"string\",\"description\":\"who\"},"
    "\"age\":{\"type\":\"integer\"},"
    "\"tags\":{\"type\":\"array\",\"items\":{\"enum\":[\"a\",\"bb\",1,12]}},"
    "\"ok\":{\"type\":\"boolean\"},"
    "\"score\":{\"type\":\"number\"},"
    "\"kind\":{\"const\":\"x\"},"
    "\"nested\":{\"type\":\"object\",\"properties\":{\"n\":{\"type\":\"null\"},"
    "\"l\":{\"type\":\"array\",\"items\":{\"type\":\"number\"}}},\"required\":[\"n\"]}},"
    "\"required\":[\"name\",\"age\"]}";

static const char *const people[] = {
    "{\"name\":\"Ann \\\"A\\\" \\u00e9\",\"age\":-3,\"tags\":[\"a\",12,\"bb\",1],\"ok\":true,"
    "\"score\":1.5e3,\"kind\":\"x\",\"nested\":{\"n\":null,\"l\":[0,-0.5,2E-2]}}",
    "{\"name\":\"\",\"age\":0,\"tags\":[],\"ok\":false,\"score\":-0,\"kind\":\"x\","
    "\"nested\":{\"n\":null,\"l\":[]}}",
};

static const struct {
    const char *text;
    size_t bad_at;
} not_people[] = {
    {"{\"age\":1", 2},                                 /* the properties in their order */
    {"{\"name\":\"A\"}", 11},                          /* every property */
    {"{\"name\":\"A\",\"age\":1.5", 19},               /* an integer */
    {"{\"name\":\"A\",\"age\":1,\"tags\":[\"c\"", 29}, /* the enum */
    {"{\"name\": \"A\"", 8},                           /* compact */
    {"{\"name\":1", 8},                                /* a string */
};

/* The schema above, checked on cJSON's tree without the guide. */
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
    for (size_t i = 0; i < sizeof people / sizeof people[0]; i++) {
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
    for (size_t i = 0; i < sizeof not_people / sizeof not_people[0]; i++) {
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

START_TEST(schema_refuses_what_it_cannot_enforce)
{
    static const struct {
        const char *schema, *says;
    } bad[] = {
        {"{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"string\",\"pattern\":\"x\"}}}",
         "/properties/a: the keyword 'pattern'"},
        {"{\"type\":\"object\",\"properties\":{\"a\":{\"anyOf\":[]}}}", "'anyOf'"},
        {"{\"type\":\"array\",\"items\":{\"type\":\"string\"}}", "top level must be an object"},
        {"{\"type\":\"object\",\"additionalProperties\":true}", "only false"},
        {"{\"type\":\"object\",\"properties\":{\"a\":{}}}", "needs a \"type\""},
        {"{\"type\":[\"string\",\"null\"]}", "needs a \"type\""},
        {"{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"integer\"}},\"required\":[\"b\"]}",
         "does not declare"},
        {"{\"type\":\"object\",\"properties\":{\"a\":{\"enum\":[]}}}", "empty enum"},
    };
    char err[256];
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int rc;
        schema *s = compile_text(bad[i].schema, err, sizeof err, &rc);
        ck_assert_msg(rc == -EINVAL && !s, "%s: compiled", bad[i].schema);
        ck_assert_msg(strstr(err, bad[i].says), "%s: '%s' does not say '%s'", bad[i].schema, err,
                      bad[i].says);
    }
}
END_TEST

int main(void)
{
    Suite *s = suite_create("json-guide");
    TCase *tc = tcase_create("guide");
    tcase_add_test(tc, accepts_json_objects);
    tcase_add_test(tc, refuses_at_the_first_wrong_byte);
    tcase_add_test(tc, closing_completes_every_prefix);
    tcase_add_test(tc, nesting_is_bounded);
    tcase_add_test(tc, schema_accepts_its_values_and_completes_every_prefix);
    tcase_add_test(tc, schema_refuses_what_it_cannot_enforce);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
