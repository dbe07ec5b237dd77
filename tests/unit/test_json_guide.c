/*
 * The JSON guide: every compact JSON object is accepted byte by byte and ends done; texts that
 * are not a prefix of one are refused at the first wrong byte; from every prefix of a valid
 * object the closing text completes an object that cJSON parses; nesting is bounded.
 */
#include "sampling/json_guide.h"

#include <check.h>
#include <cjson/cJSON.h>
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

int main(void)
{
    Suite *s = suite_create("json-guide");
    TCase *tc = tcase_create("guide");
    tcase_add_test(tc, accepts_json_objects);
    tcase_add_test(tc, refuses_at_the_first_wrong_byte);
    tcase_add_test(tc, closing_completes_every_prefix);
    tcase_add_test(tc, nesting_is_bounded);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
