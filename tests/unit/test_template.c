/*
 * test_template.c — unit tests for the chat template engine: what is refused at parse time and
 * how (code, construct, line), render errors (raise_exception's own message, undefined values,
 * nesting limits), the public API's edges (NULL options, dates, cJSON array references as the
 * prompt code passes them, concurrent renders of one template) and the built-in templates.
 *
 * Rendered text is checked against jinja2 by tests/integration/template_crosscheck.py; the few
 * expected texts here are jinja2 facts stated in the comments (True/False/None spelling,
 * trailing newline dropped, per-iteration loop scope), not copies of our own output.
 */
#include "template/template.h"

#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static int parse(const char *src, chat_template **t, char *err, size_t err_size)
{
    return chat_template_create(t, src, strlen(src), err, err_size);
}

/* Parses and renders src with a JSON context; returns the render's code, *out the text. */
static int render_json(const char *src, const char *ctx_json, const chat_template_render_opts *opts,
                       char **out, char *err, size_t err_size)
{
    chat_template *t = NULL;
    int rc = parse(src, &t, err, err_size);
    ck_assert_msg(rc == 0, "parse failed: %s", err);
    cJSON *ctx = ctx_json ? cJSON_Parse(ctx_json) : NULL;
    ck_assert(ctx_json == NULL || ctx != NULL);
    size_t len = 0;
    *out = NULL;
    rc = chat_template_render(t, ctx, opts, out, &len, err, err_size);
    if (rc == 0)
        ck_assert_uint_eq(len, strlen(*out));
    else
        ck_assert_ptr_null(*out);
    cJSON_Delete(ctx);
    chat_template_destroy(&t);
    ck_assert_ptr_null(t);
    return rc;
}

static void expect_text(const char *src, const char *ctx_json, const char *want)
{
    char err[512], *out;
    int rc = render_json(src, ctx_json, NULL, &out, err, sizeof err);
    ck_assert_msg(rc == 0, "render of %s failed: %s", src, err);
    ck_assert_str_eq(out, want);
    free(out);
}

static void expect_render_error(const char *src, const char *ctx_json, int want_rc,
                                const char *want_in_msg)
{
    char err[512], *out;
    int rc = render_json(src, ctx_json, NULL, &out, err, sizeof err);
    ck_assert_msg(rc == want_rc, "%s: rc %d, want %d (%s)", src, rc, want_rc, rc ? err : out);
    ck_assert_msg(strstr(err, want_in_msg) != NULL, "%s: message '%s' lacks '%s'", src, err,
                  want_in_msg);
}

/* ---- refused at parse time ------------------------------------------------------------------- */

static const struct {
    const char *src;
    int rc;
    const char *msg; /* must appear in the message, with the line */
} refusals[] = {
    {"a\n{% include 'other.jinja' %}", -ENOTSUP, "line 2: unsupported construct: {% include %}"},
    {"{% extends 'base' %}", -ENOTSUP, "line 1: unsupported construct: {% extends %}"},
    {"\n\n{% import 'm' as m %}", -ENOTSUP, "line 3: unsupported construct: {% import %}"},
    {"{% from 'm' import x %}", -ENOTSUP, "{% from %}"},
    {"{% call foo() %}x{% endcall %}", -ENOTSUP, "{% call %}"},
    {"{% filter upper %}x{% endfilter %}", -ENOTSUP, "{% filter %}"},
    {"{% block b %}x{% endblock %}", -ENOTSUP, "{% block %}"},
    {"{% with a = 1 %}{% endwith %}", -ENOTSUP, "{% with %}"},
    {"{% do x.append(1) %}", -ENOTSUP, "{% do %}"},
    {"{% frobnicate %}", -ENOTSUP, "unknown tag {% frobnicate %}"},
    {"{% if x %}\n{% frobnicate %}{% endif %}", -ENOTSUP,
     "line 2: unsupported construct: unknown tag {% frobnicate %}"},
    {"{{ messages|frobnicate }}", -ENOTSUP, "line 1: unsupported construct: filter 'frobnicate'"},
    {"x\n{{ 1 if x is frobnicated }}", -ENOTSUP,
     "line 2: unsupported construct: test 'frobnicated'"},
    {"{% for x in y recursive %}{% endfor %}", -ENOTSUP, "recursive for loop"},
    {"{{ f(*args) }}", -ENOTSUP, "*args"},
    {"{{ '\\N{BULLET}' }}", -ENOTSUP, "\\N{...}"},
    /* syntax errors: -EINVAL, also with their line */
    {"{% if x %}\nno end", -EINVAL, "missing {% endif %}"},
    {"{% for x in y %}", -EINVAL, "missing {% endfor %}"},
    {"{{ 1 + }}", -EINVAL, "line 1:"},
    {"\n{{ 'unterminated }}", -EINVAL, "line 2: unterminated string"},
    {"{# never closed", -EINVAL, "unterminated comment"},
    {"{% endfor %}", -EINVAL, "line 1: unexpected {% endfor %}"},
    {"{% break %}", -EINVAL, "'break' outside a for loop"},
    {"{{ x ) }}", -EINVAL, "unexpected ')'"},
    {"{{ x", -EINVAL, "unexpected end of template"},
    {"{% if x %}{% else %}{% elif y %}{% endif %}", -EINVAL, "unexpected {% elif %}"},
    {"{% macro m(a=1, b) %}{% endmacro %}", -EINVAL, "non-default argument"},
};

START_TEST(test_refusals)
{
    for (size_t i = 0; i < sizeof refusals / sizeof refusals[0]; i++) {
        char err[512] = "";
        chat_template *t = (chat_template *)1;
        int rc = parse(refusals[i].src, &t, err, sizeof err);
        ck_assert_msg(rc == refusals[i].rc, "%s: rc %d, want %d (%s)", refusals[i].src, rc,
                      refusals[i].rc, err);
        ck_assert_msg(t == NULL, "%s: *out not cleared", refusals[i].src);
        ck_assert_msg(strstr(err, refusals[i].msg) != NULL, "%s: message '%s' lacks '%s'",
                      refusals[i].src, err, refusals[i].msg);
    }
}
END_TEST

START_TEST(test_small_error_buffer)
{
    /* A message longer than the buffer is cut, never overflowed (ASan watches). */
    char err[8];
    chat_template *t = NULL;
    ck_assert_int_eq(parse("{% include 'a-long-name-that-does-not-fit' %}", &t, err, sizeof err),
                     -ENOTSUP);
    ck_assert_uint_lt(strlen(err), sizeof err);
    char *out;
    ck_assert_int_eq(render_json("{{ raise_exception('a much longer message') }}", "{}", NULL, &out,
                                 err, sizeof err),
                     -EINVAL);
    ck_assert_str_eq(err, "a much ");
}
END_TEST

/* ---- render errors --------------------------------------------------------------------------- */

START_TEST(test_raise_exception_message)
{
    /* The template's message itself: the server shows it to the client. */
    expect_render_error(
        "{% if messages|length > 1 %}{{ raise_exception('Only ' ~ 'one message!') }}{% endif %}ok",
        "{\"messages\": [1, 2]}", -EINVAL, "Only one message!");
    char err[256], *out;
    ck_assert_int_eq(
        render_json("\n\n{{ raise_exception('exact') }}", "{}", NULL, &out, err, sizeof err),
        -EINVAL);
    ck_assert_str_eq(err, "exact");
    /* The mistral template refuses a broken alternation (jinja2 does the same). */
    ck_assert_int_eq(render_json(chat_template_builtin("mistral"),
                                 "{\"messages\": [{\"role\": \"user\", \"content\": \"a\"},"
                                 " {\"role\": \"user\", \"content\": \"b\"}], \"bos_token\": "
                                 "\"<s>\", \"eos_token\": \"</s>\"}",
                                 NULL, &out, err, sizeof err),
                     -EINVAL);
    ck_assert_str_eq(err, "Conversation roles must alternate user/assistant/user/assistant/...");
}
END_TEST

START_TEST(test_undefined)
{
    /* jinja2's default Undefined: prints empty, is falsy, but fails as an object or operand. */
    expect_text("[{{ nope }}]{{ 'y' if nope else 'n' }}{{ nope is defined }}{{ nope|length }}",
                "{}", "[]nFalse0");
    expect_render_error("line one\n{{ nope.attr }}", "{}", -EINVAL, "line 2: 'nope' is undefined");
    expect_render_error("{{ messages[0].content }}", "{\"messages\": []}", -EINVAL, "undefined");
    expect_render_error("{{ 1 + nope }}", "{}", -EINVAL, "'nope' is undefined");
    /* A filter given a type it does not take: jinja2 raises TypeError for both, in these words. */
    expect_render_error("{{ 'x'|abs }}", "{}", -EINVAL, "bad operand type for abs()");
    expect_render_error("{{ 3|first }}", "{}", -EINVAL, "'int' object is not iterable");
    expect_render_error("{{ nope() }}", "{}", -EINVAL, "'nope' is undefined");
    /* attribute access on a defined value never fails: it yields undefined */
    expect_text("{{ none.x is defined }}{{ (5).x is defined }}{{ 'abc'.nope is defined }}", "{}",
                "FalseFalseFalse");
}
END_TEST

START_TEST(test_type_errors)
{
    expect_render_error("{{ 'a' + 1 }}", "{}", -EINVAL,
                        "unsupported operand types for +: 'str' and 'int'");
    expect_render_error("{{ 1 / 0 }}", "{}", -EINVAL, "division by zero");
    expect_render_error("{{ 'a' < 1 }}", "{}", -EINVAL, "not supported between");
    expect_render_error("{% for x in 5 %}{% endfor %}", "{}", -EINVAL, "not iterable");
    expect_render_error("{{ [1]|tojson }}{{ nope|tojson }}", "{}", -EINVAL,
                        "not JSON serializable");
    expect_render_error("{% set x = 1 %}{% set x.a = 2 %}", "{}", -EINVAL, "non-namespace");
    expect_render_error("{{ [].append(1) }}", "{}", -EINVAL, "not supported");
}
END_TEST

START_TEST(test_nesting_limits)
{
    char err[256], *out;
    /* Hostile sources (a GGUF file is input) fail cleanly instead of exhausting the stack. */
    size_t n_deep = 100000;
    char *src = malloc(n_deep * 4 + 16);
    ck_assert_ptr_nonnull(src);
    size_t k = 0;
    k += (size_t)sprintf(src + k, "{{ ");
    for (size_t i = 0; i < n_deep; i++)
        src[k++] = '(';
    src[k++] = '1';
    for (size_t i = 0; i < n_deep; i++)
        src[k++] = ')';
    strcpy(src + k, " }}");
    chat_template *t = NULL;
    ck_assert_int_eq(parse(src, &t, err, sizeof err), -EINVAL);
    ck_assert_ptr_nonnull(strstr(err, "nested more than"));
    k = 0;
    for (size_t i = 0; i < 2000; i++)
        k += (size_t)sprintf(src + k, "{%% if 1 %%}");
    src[k] = 0;
    ck_assert_int_eq(parse(src, &t, err, sizeof err), -EINVAL);
    ck_assert_ptr_nonnull(strstr(err, "nested more than"));
    k = (size_t)sprintf(src, "{{ 1");
    for (size_t i = 0; i < n_deep; i++)
        k += (size_t)sprintf(src + k, "+1");
    strcpy(src + k, " }}");
    ck_assert_int_eq(render_json(src, "{}", NULL, &out, err, sizeof err), -ELOOP);
    free(src);
    ck_assert_int_eq(
        render_json(
            "{% set ns = namespace(x=[]) %}{% for i in range(5000) %}{% set ns.x = [ns.x] %}"
            "{% endfor %}{{ ns.x }}",
            "{}", NULL, &out, err, sizeof err),
        -ELOOP);
    ck_assert_int_eq(render_json("{% macro m(n) %}{{ m(n + 1) }}{% endmacro %}{{ m(0) }}", "{}",
                                 NULL, &out, err, sizeof err),
                     -ELOOP);
    ck_assert_ptr_null(strstr(err, "line")); /* not a template message: a limit */
    /* A context nested deeper than the engine accepts is refused, not overflowed. */
    size_t depth = 600;
    char *deep = malloc(depth * 2 + 16);
    ck_assert_ptr_nonnull(deep);
    strcpy(deep, "{\"x\": ");
    size_t n = strlen(deep);
    for (size_t i = 0; i < depth; i++)
        deep[n++] = '[';
    for (size_t i = 0; i < depth; i++)
        deep[n++] = ']';
    strcpy(deep + n, "}");
    cJSON *ctx = cJSON_Parse(deep);
    free(deep);
    if (ctx) { /* cJSON's own nesting limit may refuse it first */
        ck_assert_int_eq(parse("{{ x|length }}", &t, err, sizeof err), 0);
        size_t len;
        ck_assert_int_eq(chat_template_render(t, ctx, NULL, &out, &len, err, sizeof err), -ELOOP);
        chat_template_destroy(&t);
        cJSON_Delete(ctx);
    }
}
END_TEST

/* ---- API edges ------------------------------------------------------------------------------- */

START_TEST(test_python_spelling)
{
    /* Python's str(): True/False/None, floats with a point, lists and dicts as repr. */
    expect_text("{{ t }} {{ f }} {{ z }} {{ x }} {{ l }} {{ d }}",
                "{\"t\": true, \"f\": false, \"z\": null, \"x\": 2.5, \"l\": [1, \"a\", null], "
                "\"d\": {\"k\": \"v\"}}",
                "True False None 2.5 [1, 'a', None] {'k': 'v'}");
    /* jinja2 drops one trailing newline of the template (keep_trailing_newline off) */
    expect_text("line\n", "{}", "line");
    expect_text("line\n\n", "{}", "line\n");
    expect_text("", "{}", "");
    /* a set inside a loop is gone at the next iteration: jinja2 scopes each iteration */
    expect_text("{% for i in [1, 2] %}[{{ x }}]{% set x = i %}{% endfor %}[{{ x }}]", "{}",
                "[][][]");
}
END_TEST

START_TEST(test_null_context_and_opts)
{
    char err[256], *out;
    ck_assert_int_eq(render_json("a{{ messages|length }}b", NULL, NULL, &out, err, sizeof err), 0);
    ck_assert_str_eq(out, "a0b");
    free(out);
    ck_assert_int_eq(render_json("x", "[1, 2]", NULL, &out, err, sizeof err), -EINVAL);
    ck_assert_ptr_nonnull(strstr(err, "JSON object"));
}
END_TEST

START_TEST(test_dates)
{
    /* 26 July 2024 was a Friday, the 208th day of a leap year. */
    chat_template_render_opts opts = {.date_string = "2024-07-26"};
    char err[256], *out;
    ck_assert_int_eq(render_json("{{ strftime_now('%d %b %Y|%A|%j|%H:%M') }}", "{}", &opts, &out,
                                 err, sizeof err),
                     0);
    ck_assert_str_eq(out, "26 Jul 2024|Friday|208|00:00");
    free(out);
    opts.date_string = "2023-12-31T23:59:58";
    ck_assert_int_eq(render_json("{{ strftime_now('%Y-%m-%d %H:%M:%S %a') }}", "{}", &opts, &out,
                                 err, sizeof err),
                     0);
    ck_assert_str_eq(out, "2023-12-31 23:59:58 Sun");
    free(out);
    opts.date_string = "yesterday";
    ck_assert_int_eq(render_json("{{ strftime_now('%Y') }}", "{}", &opts, &out, err, sizeof err),
                     -EINVAL);
    ck_assert_ptr_nonnull(strstr(err, "date_string"));
    /* no date given: the current year */
    char year[16];
    time_t now = time(NULL);
    struct tm tm;
    localtime_r(&now, &tm);
    strftime(year, sizeof year, "%Y", &tm);
    ck_assert_int_eq(render_json("{{ strftime_now('%Y') }}", "{}", NULL, &out, err, sizeof err), 0);
    ck_assert_str_eq(out, year);
    free(out);
}
END_TEST

START_TEST(test_array_reference_context)
{
    /* The prompt code hands the request's messages in without copying them. */
    cJSON *messages = cJSON_Parse("[{\"role\": \"user\", \"content\": \"hi\"}, {\"role\": "
                                  "\"assistant\", \"content\": \"yo\"}]");
    ck_assert_ptr_nonnull(messages);
    cJSON *ctx = cJSON_CreateObject();
    cJSON_AddItemToObject(ctx, "messages", cJSON_CreateArrayReference(messages->child));
    cJSON_AddBoolToObject(ctx, "add_generation_prompt", 1);
    char err[256], *out;
    size_t len;
    chat_template *t = NULL;
    ck_assert_int_eq(parse(chat_template_builtin("chatml"), &t, err, sizeof err), 0);
    ck_assert_int_eq(chat_template_render(t, ctx, NULL, &out, &len, err, sizeof err), 0);
    ck_assert_str_eq(out, "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\nyo<|im_end|>\n<|"
                          "im_start|>assistant\n");
    free(out);
    chat_template_destroy(&t);
    chat_template_destroy(&t); /* freeing twice through the handle is harmless */
    cJSON_Delete(ctx);
    cJSON_Delete(messages);
}
END_TEST

typedef struct render_job {
    const chat_template *t;
    const cJSON *ctx;
    char *first;
    int mismatches;
} render_job;

static void *render_many(void *arg)
{
    render_job *job = arg;
    char err[256];
    for (int i = 0; i < 200; i++) {
        char *out;
        size_t len;
        if (chat_template_render(job->t, job->ctx, NULL, &out, &len, err, sizeof err) != 0) {
            job->mismatches++;
            continue;
        }
        if (!job->first)
            job->first = out;
        else {
            job->mismatches += strcmp(out, job->first) != 0;
            free(out);
        }
    }
    return NULL;
}

START_TEST(test_concurrent_renders)
{
    /* A parsed template is immutable: threads render it at once and all agree. */
    char err[256];
    chat_template *t = NULL;
    ck_assert_int_eq(parse(chat_template_builtin("qwen3"), &t, err, sizeof err), 0);
    cJSON *ctx = cJSON_Parse("{\"messages\": [{\"role\": \"system\", \"content\": \"s\"}, "
                             "{\"role\": \"user\", \"content\": \"q\"},"
                             " {\"role\": \"assistant\", \"content\": \"<think>r</think>a\"}, "
                             "{\"role\": \"user\", \"content\": \"q2\"}],"
                             " \"add_generation_prompt\": true}");
    render_job jobs[4];
    pthread_t th[4];
    for (int i = 0; i < 4; i++) {
        jobs[i] = (render_job){.t = t, .ctx = ctx};
        ck_assert_int_eq(pthread_create(&th[i], NULL, render_many, &jobs[i]), 0);
    }
    for (int i = 0; i < 4; i++)
        ck_assert_int_eq(pthread_join(th[i], NULL), 0);
    for (int i = 0; i < 4; i++) {
        ck_assert_int_eq(jobs[i].mismatches, 0);
        ck_assert_ptr_nonnull(jobs[i].first);
        ck_assert_str_eq(jobs[i].first, jobs[0].first);
    }
    /* old reasoning dropped */
    ck_assert_ptr_nonnull(strstr(jobs[0].first, "<|im_start|>assistant\na<|im_end|>"));
    for (int i = 0; i < 4; i++)
        free(jobs[i].first);
    cJSON_Delete(ctx);
    chat_template_destroy(&t);
}
END_TEST

START_TEST(test_builtins)
{
    const char *names = chat_template_builtin_names();
    char list[256];
    snprintf(list, sizeof list, "%s", names);
    int n = 0;
    for (char *save = NULL, *name = strtok_r(list, ", ", &save); name;
         name = strtok_r(NULL, ", ", &save), n++) {
        const char *src = chat_template_builtin(name);
        ck_assert_msg(src != NULL, "builtin '%s' listed but missing", name);
        char err[256];
        chat_template *t = NULL;
        ck_assert_msg(parse(src, &t, err, sizeof err) == 0, "builtin %s: %s", name, err);
        chat_template_destroy(&t);
    }
    ck_assert_int_ge(n, 6);
    ck_assert_ptr_null(chat_template_builtin("no-such-template"));
    ck_assert_ptr_null(chat_template_builtin(NULL));
}
END_TEST

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint64_t rng_next(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

static char *read_all(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    ck_assert_msg(f != NULL, "%s: %s", path, strerror(errno));
    ck_assert_int_eq(fseek(f, 0, SEEK_END), 0);
    long n = ftell(f);
    ck_assert_int_ge(n, 0);
    rewind(f);
    char *buf = malloc((size_t)n + 1);
    ck_assert_ptr_nonnull(buf);
    ck_assert_uint_eq(fread(buf, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    buf[n] = 0;
    *len = (size_t)n;
    return buf;
}

START_TEST(test_mutated_templates)
{
    /* Damaged real templates (a GGUF's metadata is untrusted input): every outcome is a clean
     * parse error, a clean render error or a text, never a crash or a leak (ASan build). */
    const char *root = getenv("MOE_SOURCE_ROOT");
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/tests/data/templates", root ? root : ".");
    DIR *d = opendir(dir);
    ck_assert_msg(d != NULL, "%s: %s", dir, strerror(errno));
    cJSON *ctx = cJSON_Parse(
        "{\"messages\": [{\"role\": \"system\", \"content\": \"s\"}, {\"role\": \"user\", "
        "\"content\": \"q\"},"
        " {\"role\": \"assistant\", \"content\": \"a\"}, {\"role\": \"user\", \"content\": "
        "\"q2\"}],"
        " \"add_generation_prompt\": true, \"bos_token\": \"<s>\", \"eos_token\": \"</s>\"}");
    ck_assert_ptr_nonnull(ctx);
    static const char *const inserts[] = {"{%", "%}", "{{",   "}}", "{#", "(",     "[",
                                          "'",  "|",  " if ", "-",  ".",  "endfor"};
    int n_files = 0, n_rendered = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        size_t nl = strlen(e->d_name);
        if (nl < 6 || strcmp(e->d_name + nl - 6, ".jinja") != 0) continue;
        char path[2048];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        size_t len;
        char *orig = read_all(path, &len);
        n_files++;
        char *buf = malloc(len + 16);
        ck_assert_ptr_nonnull(buf);
        for (int m = 0; m < 400; m++) {
            size_t n = len, at = len ? (size_t)(rng_next() % len) : 0;
            memcpy(buf, orig, len);
            switch (rng_next() % 4) {
            case 0: /* truncate */
                n = at;
                break;
            case 1: /* flip a byte */
                buf[at] = (char)(rng_next() & 0xff);
                break;
            case 2: /* delete (an empty text has no byte to delete: at == len == 0) */
                if (at < len) {
                    memmove(buf + at, buf + at + 1, len - at - 1);
                    n = len - 1;
                }
                break;
            default: { /* insert a token */
                const char *ins = inserts[rng_next() % (sizeof inserts / sizeof inserts[0])];
                size_t k = strlen(ins);
                memmove(buf + at + k, buf + at, len - at);
                memcpy(buf + at, ins, k);
                n = len + k;
            }
            }
            char err[256];
            chat_template *t = NULL;
            int rc = chat_template_create(&t, buf, n, err, sizeof err);
            ck_assert_msg(rc == 0 || rc == -EINVAL || rc == -ENOTSUP, "%s mutation %d: parse rc %d",
                          e->d_name, m, rc);
            if (rc) continue;
            char *out = NULL;
            size_t out_len;
            rc = chat_template_render(t, ctx, NULL, &out, &out_len, err, sizeof err);
            ck_assert_msg(rc == 0 || rc == -EINVAL || rc == -ELOOP, "%s mutation %d: render rc %d",
                          e->d_name, m, rc);
            n_rendered += rc == 0;
            free(out);
            chat_template_destroy(&t);
        }
        free(buf);
        free(orig);
    }
    closedir(d);
    cJSON_Delete(ctx);
    ck_assert_int_ge(n_files, 15);
    ck_assert_int_gt(n_rendered, 0);
}
END_TEST

static Suite *template_suite(void)
{
    Suite *s = suite_create("template");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, test_refusals);
    tcase_add_test(tc, test_small_error_buffer);
    tcase_add_test(tc, test_raise_exception_message);
    tcase_add_test(tc, test_undefined);
    tcase_add_test(tc, test_type_errors);
    tcase_add_test(tc, test_nesting_limits);
    tcase_add_test(tc, test_python_spelling);
    tcase_add_test(tc, test_null_context_and_opts);
    tcase_add_test(tc, test_dates);
    tcase_add_test(tc, test_array_reference_context);
    tcase_add_test(tc, test_concurrent_renders);
    tcase_add_test(tc, test_builtins);
    tcase_add_test(tc, test_mutated_templates);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(template_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
