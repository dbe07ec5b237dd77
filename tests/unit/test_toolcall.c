/*
 * Tool calls: the parser splits each format's answers into the same content and calls whether the
 * text arrives whole or one byte at a time (arguments checked by parsing them with cJSON and
 * comparing to the expected value); what only looks like a call comes back as content, byte for
 * byte.  The forced-call guide accepts the answers its spec allows and refuses the others at the
 * first wrong byte, and from every prefix of an accepted answer its closing text makes an answer
 * that the parser reads as well-formed calls of the allowed functions.
 */
#include "engine/toolcall.h"

#include <check.h>
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct got {
    char content[4096];
    size_t content_len;
    int n_calls;
    char names[8][64];
    char args[8][1024];
    int begun_before_args; /* arguments never arrive before their call's name */
} got;

static void on_content(void *u, const char *t, size_t n)
{
    got *g = u;
    ck_assert_uint_lt(g->content_len + n, sizeof g->content);
    memcpy(g->content + g->content_len, t, n);
    g->content_len += n;
    g->content[g->content_len] = 0;
}

static void on_begin(void *u, int index, const char *name)
{
    got *g = u;
    ck_assert_int_eq(index, g->n_calls);
    ck_assert_int_lt(index, 8);
    snprintf(g->names[index], sizeof g->names[index], "%s", name);
    g->n_calls++;
}

static void on_args(void *u, int index, const char *t, size_t n)
{
    got *g = u;
    ck_assert_int_eq(index, g->n_calls - 1);
    size_t l = strlen(g->args[index]);
    ck_assert_uint_lt(l + n, sizeof g->args[index]);
    memcpy(g->args[index] + l, t, n);
    g->args[index][l + n] = 0;
}

static void parse(tool_format f, const char *text, size_t chunk, got *g)
{
    memset(g, 0, sizeof *g);
    tool_parser *p = NULL;
    ck_assert_int_eq(tool_parser_create(&p, f), 0);
    tool_sink k = {g, on_content, on_begin, on_args};
    size_t n = strlen(text);
    for (size_t i = 0; i < n; i += chunk)
        ck_assert_int_eq(tool_parser_feed(p, text + i, n - i < chunk ? n - i : chunk, &k), 0);
    ck_assert_int_eq(tool_parser_finish(p, &k), 0);
    ck_assert_int_eq(tool_parser_calls(p), g->n_calls);
    tool_parser_destroy(&p);
}

static void assert_json_eq(const char *got_text, const char *want_text)
{
    cJSON *a = cJSON_Parse(got_text), *b = cJSON_Parse(want_text);
    ck_assert_msg(a != NULL, "arguments '%s' are not JSON", got_text);
    ck_assert_ptr_nonnull(b);
    ck_assert_msg(cJSON_Compare(a, b, true), "arguments '%s', want %s", got_text, want_text);
    cJSON_Delete(a);
    cJSON_Delete(b);
}

static const struct {
    tool_format f;
    const char *text;
    const char *content;
    int n_calls;
    const char *names[3];
    const char *args[3];
} cases[] = {
    {TOOL_FORMAT_HERMES,
     "plain answer < not a tag <tool",
     "plain answer < not a tag <tool",
     0,
     {0},
     {0}},
    {TOOL_FORMAT_HERMES,
     "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Z\\u00fcrich\", "
     "\"days\": [1, 2]}}\n</tool_call>",
     "",
     1,
     {"get_weather"},
     {"{\"city\": \"Zürich\", \"days\": [1, 2]}"}},
    {TOOL_FORMAT_HERMES,
     "Let me check.\n<tool_call>\n{\"name\": \"a\", \"arguments\": {}}\n</tool_call>\n"
     "<tool_call>\n{\"arguments\": {\"x\": \"}{\\\"\"}, \"name\": \"b\"}\n</tool_call>",
     "Let me check.\n",
     2,
     {"a", "b"},
     {"{}", "{\"x\": \"}{\\\"\"}"}},
    /* arguments as a JSON string, and a call without arguments */
    {TOOL_FORMAT_HERMES,
     "<tool_call>{\"name\":\"s\",\"arguments\":\"{\\\"q\\\": 1}\"}</tool_call><tool_call>{\"name\":"
     "\"t\"}</tool_call>",
     "",
     2,
     {"s", "t"},
     {"{\"q\": 1}", "{}"}},
    /* not a call: given back as it was */
    {TOOL_FORMAT_HERMES,
     "<tool_call>\n{\"nom\": 1}\n</tool_call> done",
     "<tool_call>\n{\"nom\": 1}\n</tool_call> done",
     0,
     {0},
     {0}},
    {TOOL_FORMAT_HERMES, "x <tool_call> oops", "x <tool_call> oops", 0, {0}, {0}},
    {TOOL_FORMAT_GENERIC,
     "<tool_call>\n{\"name\": \"f\", \"arguments\": {\"n\": -1.5e3, \"b\": true}}\n</tool_call>",
     "",
     1,
     {"f"},
     {"{\"n\": -1.5e3, \"b\": true}"}},
    {TOOL_FORMAT_MISTRAL,
     "[TOOL_CALLS][{\"name\": \"a\", \"arguments\": {\"k\": [1]}}, {\"name\": \"b\", "
     "\"arguments\": {\"k\": null}}]",
     "",
     2,
     {"a", "b"},
     {"{\"k\": [1]}", "{\"k\": null}"}},
    {TOOL_FORMAT_MISTRAL,
     "[TOOL_CALLS]get_weather[ARGS]{\"city\": \"Paris\"}",
     "",
     1,
     {"get_weather"},
     {"{\"city\": \"Paris\"}"}},
    {TOOL_FORMAT_MISTRAL,
     "[TOOL_CALL] is not [TOOL_CALLS",
     "[TOOL_CALL] is not [TOOL_CALLS",
     0,
     {0},
     {0}},
    {TOOL_FORMAT_LLAMA3,
     "{\"name\": \"f\", \"parameters\": {\"a\": \"b\"}}",
     "",
     1,
     {"f"},
     {"{\"a\": \"b\"}"}},
    {TOOL_FORMAT_LLAMA3,
     "<|python_tag|>{\"type\": \"function\", \"name\": \"g\", \"parameters\": {}}",
     "",
     1,
     {"g"},
     {"{}"}},
    {TOOL_FORMAT_LLAMA3, "The answer is {\"name\": 1}", "The answer is {\"name\": 1}", 0, {0}, {0}},
    {TOOL_FORMAT_LLAMA3, " {\"a\": 1}", " {\"a\": 1}", 0, {0}, {0}},
};

START_TEST(parser_splits_content_and_calls)
{
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        size_t chunks[] = {1, 2, 3, 7, 1000};
        for (size_t j = 0; j < sizeof chunks / sizeof chunks[0]; j++) {
            got g;
            parse(cases[c].f, cases[c].text, chunks[j], &g);
            ck_assert_msg(!strcmp(g.content, cases[c].content),
                          "case %zu chunk %zu: content '%s', want '%s'", c, chunks[j], g.content,
                          cases[c].content);
            ck_assert_int_eq(g.n_calls, cases[c].n_calls);
            for (int i = 0; i < g.n_calls; i++) {
                ck_assert_str_eq(g.names[i], cases[c].names[i]);
                assert_json_eq(g.args[i], cases[c].args[i]);
            }
        }
    }
}
END_TEST

START_TEST(detects_formats_from_templates)
{
    ck_assert_int_eq(tool_format_detect("{{ messages }}"), TOOL_FORMAT_GENERIC);
    ck_assert_int_eq(tool_format_detect(NULL), TOOL_FORMAT_GENERIC);
    ck_assert_int_eq(tool_format_detect("{% if tools %}<tool_call>{% endif %}"),
                     TOOL_FORMAT_HERMES);
    ck_assert_int_eq(tool_format_detect("{{ '[TOOL_CALLS]' }}"), TOOL_FORMAT_MISTRAL);
    ck_assert_int_eq(tool_format_detect("<|python_tag|>{{ tools }}"), TOOL_FORMAT_LLAMA3);
    ck_assert_int_eq(tool_format_detect("{% for t in tools %}<｜tool▁calls▁begin｜>{% endfor %}"),
                     TOOL_FORMAT_UNSUPPORTED);
    ck_assert_int_eq(tool_format_detect("<tool_call>\n<function={{ name }}>"),
                     TOOL_FORMAT_UNSUPPORTED);
}
END_TEST

static cJSON *tools_json(void)
{
    return cJSON_Parse(
        "[{\"type\":\"function\",\"function\":{\"name\":\"get_weather\",\"parameters\":{"
        "\"type\":\"object\",\"properties\":{\"city\":{\"type\":\"string\"},\"unit\":{\"enum\":["
        "\"c\",\"f\"]}},\"required\":[\"city\",\"unit\"]}}},"
        "{\"type\":\"function\",\"function\":{\"name\":\"get_time\",\"parameters\":{\"type\":"
        "\"object\",\"properties\":{\"zone\":{\"type\":\"integer\"}}}}},"
        "{\"type\":\"function\",\"function\":{\"name\":\"ping\"}}]");
}

static bool guide_accepts(const tool_spec *s, const char *text, size_t *bad_at, bool *done)
{
    tool_guide *g = malloc(tool_guide_size(s));
    ck_assert_ptr_nonnull(g);
    tool_guide_init(g, s);
    size_t n = strlen(text);
    bool ok = true;
    for (size_t i = 0; i < n; i++) {
        if (!tool_guide_feed(g, text + i, 1)) {
            *bad_at = i;
            ok = false;
            break;
        }
    }
    *done = ok && tool_guide_done(g);
    free(g);
    return ok;
}

/* From every prefix of text the closing text completes calls the parser reads, all to the
 * functions in names, with arguments that are JSON objects. */
static void check_closings(tool_format f, const tool_spec *s, const char *text,
                           const char *const *names, size_t n_names)
{
    tool_guide *g = malloc(tool_guide_size(s));
    ck_assert_ptr_nonnull(g);
    tool_guide_init(g, s);
    size_t n = strlen(text);
    for (size_t i = 0; i <= n; i++) {
        char closing[4096], full[8192];
        int cl = tool_guide_closing(g, closing, sizeof closing);
        ck_assert_int_ge(cl, 0);
        snprintf(full, sizeof full, "%.*s%s", (int)i, text, closing);
        tool_guide *h = malloc(tool_guide_size(s));
        ck_assert_ptr_nonnull(h);
        tool_guide_copy(h, g);
        ck_assert_msg(tool_guide_feed(h, closing, (size_t)cl) && tool_guide_done(h),
                      "closing '%s' after '%.*s' not accepted", closing, (int)i, text);
        free(h);
        got gt;
        parse(f, full, 1, &gt);
        ck_assert_msg(gt.n_calls >= 1 && gt.content_len == 0, "'%s' parsed to %d calls + '%s'",
                      full, gt.n_calls, gt.content);
        for (int c = 0; c < gt.n_calls; c++) {
            bool known = false;
            for (size_t j = 0; j < n_names; j++)
                known |= !strcmp(gt.names[c], names[j]);
            ck_assert_msg(known, "call to '%s'", gt.names[c]);
            cJSON *a = cJSON_Parse(gt.args[c]);
            ck_assert_msg(cJSON_IsObject(a), "arguments '%s'", gt.args[c]);
            cJSON_Delete(a);
        }
        if (i < n) ck_assert(tool_guide_feed(g, text + i, 1));
    }
    free(g);
}

START_TEST(guide_forces_well_formed_calls)
{
    cJSON *tools = tools_json();
    char err[256];
    tool_spec *any = NULL, *named = NULL, *par = NULL, *llama = NULL, *mis = NULL;
    ck_assert_int_eq(
        tool_spec_create(&any, TOOL_FORMAT_HERMES, tools, NULL, false, err, sizeof err), 0);
    ck_assert_int_eq(
        tool_spec_create(&named, TOOL_FORMAT_HERMES, tools, "get_time", false, err, sizeof err), 0);
    ck_assert_int_eq(tool_spec_create(&par, TOOL_FORMAT_HERMES, tools, NULL, true, err, sizeof err),
                     0);
    ck_assert_int_eq(
        tool_spec_create(&llama, TOOL_FORMAT_LLAMA3, tools, NULL, true, err, sizeof err), 0);
    ck_assert_int_eq(
        tool_spec_create(&mis, TOOL_FORMAT_MISTRAL, tools, NULL, true, err, sizeof err), 0);

    const char *w = "<tool_call>\n{\"name\":\"get_weather\",\"arguments\":{\"city\":\"Bern\","
                    "\"unit\":\"c\"}}\n</tool_call>";
    const char *t =
        "<tool_call>\n{\"name\":\"get_time\",\"arguments\":{\"zone\":-5}}\n</tool_call>";
    const char *two =
        "<tool_call>\n{\"name\":\"ping\",\"arguments\":{}}\n</tool_call>\n"
        "<tool_call>\n{\"name\":\"get_time\",\"arguments\":{\"zone\":1}}\n</tool_call>";
    size_t bad = 0;
    bool done = false;
    ck_assert(guide_accepts(any, w, &bad, &done) && done);
    ck_assert(guide_accepts(any, t, &bad, &done) && done);
    ck_assert(!guide_accepts(named, w, &bad, &done));
    ck_assert_uint_eq(bad, strlen("<tool_call>\n{\"name\":\"get_"));
    ck_assert(guide_accepts(named, t, &bad, &done) && done);
    ck_assert(!guide_accepts(any, two, &bad, &done)); /* one call only */
    ck_assert(guide_accepts(par, two, &bad, &done) && done);
    ck_assert(!guide_accepts(any, "<tool_call>\n{\"name\":\"nope\"", &bad, &done));
    ck_assert(!guide_accepts(any, "Sure! <tool_call>", &bad, &done));
    ck_assert_uint_eq(bad, 0);
    ck_assert(!guide_accepts(
        any, "<tool_call>\n{\"name\":\"get_weather\",\"arguments\":{\"city\":3", &bad, &done));
    ck_assert(guide_accepts(llama, "{\"name\":\"ping\",\"parameters\":{}}", &bad, &done) && done);
    ck_assert(guide_accepts(mis,
                            "[TOOL_CALLS][{\"name\":\"ping\",\"arguments\":{}}, {\"name\":\"get_"
                            "time\",\"arguments\":{\"zone\":2}}]",
                            &bad, &done) &&
              done);

    const char *all[] = {"get_weather", "get_time", "ping"};
    check_closings(TOOL_FORMAT_HERMES, any, w, all, 3);
    check_closings(TOOL_FORMAT_HERMES, par, two, all, 3);
    check_closings(TOOL_FORMAT_LLAMA3, llama,
                   "{\"name\":\"get_weather\",\"parameters\":{\"city\":\"x\",\"unit\":\"f\"}}", all,
                   3);
    check_closings(TOOL_FORMAT_MISTRAL, mis,
                   "[TOOL_CALLS][{\"name\":\"get_time\",\"arguments\":{\"zone\":7}}, "
                   "{\"name\":\"ping\",\"arguments\":{}}]",
                   all, 3);

    /* what cannot be enforced is refused, naming the tool */
    cJSON *bad_tools = cJSON_Parse("[{\"type\":\"function\",\"function\":{\"name\":\"f\","
                                   "\"parameters\":{\"type\":\"object\",\"properties\":{\"a\":{"
                                   "\"type\":\"string\",\"pattern\":\"x+\"}}}}}]");
    tool_spec *s = NULL;
    ck_assert_int_ne(
        tool_spec_create(&s, TOOL_FORMAT_HERMES, bad_tools, NULL, false, err, sizeof err), 0);
    ck_assert_ptr_nonnull(strstr(err, "'f'"));
    ck_assert_ptr_nonnull(strstr(err, "pattern"));
    ck_assert_int_ne(
        tool_spec_create(&s, TOOL_FORMAT_HERMES, tools, "missing", false, err, sizeof err), 0);
    ck_assert_ptr_null(s);
    cJSON_Delete(bad_tools);

    tool_spec_destroy(&any);
    tool_spec_destroy(&named);
    tool_spec_destroy(&par);
    tool_spec_destroy(&llama);
    tool_spec_destroy(&mis);
    cJSON_Delete(tools);
}
END_TEST

START_TEST(generic_texts)
{
    cJSON *tools = tools_json();
    char *sys = tool_generic_system(tools);
    ck_assert_ptr_nonnull(sys);
    ck_assert_ptr_nonnull(strstr(sys, "<tools>\n{\"type\":\"function\""));
    ck_assert_ptr_nonnull(strstr(sys, "\"name\":\"ping\""));
    free(sys);
    cJSON *args = cJSON_Parse("{\"city\":\"Bern\"}");
    char *call = tool_generic_call_text("get_weather", args);
    got g;
    parse(TOOL_FORMAT_GENERIC, call, 1, &g);
    ck_assert_int_eq(g.n_calls, 1);
    ck_assert_str_eq(g.names[0], "get_weather");
    assert_json_eq(g.args[0], "{\"city\":\"Bern\"}");
    free(call);
    cJSON_Delete(args);
    cJSON_Delete(tools);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("toolcall");
    TCase *tc = tcase_create("toolcall");
    tcase_add_test(tc, parser_splits_content_and_calls);
    tcase_add_test(tc, detects_formats_from_templates);
    tcase_add_test(tc, guide_forces_well_formed_calls);
    tcase_add_test(tc, generic_texts);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
