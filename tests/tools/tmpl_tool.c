/*
 * tmpl_tool — renders a chat template file with a JSON context, for the crosscheck against
 * Python jinja2.
 *
 *   tmpl_tool [--date YYYY-MM-DD] TEMPLATE CONTEXT.json
 *       prints the rendered text exactly (no newline added); exit 0.  A parse error is printed
 *       as "parse error: ..." (exit 2), a render error as "render error: ..." (exit 1).
 *   tmpl_tool --batch [--date YYYY-MM-DD] TEMPLATE CONTEXTS.json
 *       CONTEXTS.json is an array of contexts; prints one JSON line per context,
 *       {"text": "..."} or {"error": "..."}, so one process serves a whole template.
 *   tmpl_tool --pairs [--date YYYY-MM-DD] PAIRS.json
 *       PAIRS.json is an array of {"template": "...", "context": {...}}; prints one JSON line per
 *       pair as --batch does, {"parse_error": "..."} when the template is refused.
 *   tmpl_tool --builtin NAME     prints the source of a built-in template (exit 1: no such name)
 *   tmpl_tool --builtin-names    prints the list of built-in names
 */
#include "template/template.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "tmpl_tool: %s: %s\n", path, strerror(errno));
        return NULL;
    }
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap + 1);
    for (;;) {
        if (!buf) break;
        size_t k = fread(buf + n, 1, cap - n, f);
        n += k;
        if (n < cap) break;
        cap *= 2;
        char *nb = realloc(buf, cap + 1);
        if (!nb) {
            free(buf);
            buf = NULL;
        }
        buf = nb;
    }
    int failed = ferror(f);
    fclose(f);
    if (!buf || failed) {
        fprintf(stderr, "tmpl_tool: cannot read %s\n", path);
        free(buf);
        return NULL;
    }
    buf[n] = 0;
    *len = n;
    return buf;
}

static int render_one(const chat_template *t, const cJSON *ctx,
                      const chat_template_render_opts *opts, bool batch)
{
    char err[1024], *text = NULL;
    size_t len = 0;
    int rc = chat_template_render(t, ctx, opts, &text, &len, err, sizeof err);
    if (!batch) {
        if (rc) {
            fprintf(stderr, "render error: %s\n", err);
            return 1;
        }
        fwrite(text, 1, len, stdout);
        free(text);
        return 0;
    }
    cJSON *line = cJSON_CreateObject();
    if (!line || !cJSON_AddStringToObject(line, rc ? "error" : "text", rc ? err : text)) {
        fprintf(stderr, "tmpl_tool: out of memory\n");
        cJSON_Delete(line);
        free(text);
        return 1;
    }
    free(text);
    char *s = cJSON_PrintUnformatted(line);
    cJSON_Delete(line);
    if (!s) return 1;
    printf("%s\n", s);
    free(s);
    return 0;
}

static int run_pairs(const char *path, const chat_template_render_opts *opts)
{
    size_t len;
    char *text = read_file(path, &len);
    if (!text) return 64;
    cJSON *all = cJSON_ParseWithLength(text, len);
    free(text);
    if (!cJSON_IsArray(all)) {
        fprintf(stderr, "tmpl_tool: %s is not a JSON array\n", path);
        cJSON_Delete(all);
        return 64;
    }
    int status = 0;
    const cJSON *pair;
    cJSON_ArrayForEach(pair, all)
    {
        const cJSON *src = cJSON_GetObjectItemCaseSensitive(pair, "template");
        const cJSON *ctx = cJSON_GetObjectItemCaseSensitive(pair, "context");
        if (!cJSON_IsString(src)) {
            fprintf(stderr, "tmpl_tool: a pair without a template\n");
            status = 64;
            break;
        }
        char err[1024];
        chat_template *t = NULL;
        if (chat_template_create(&t, src->valuestring, strlen(src->valuestring), err, sizeof err)) {
            cJSON *line = cJSON_CreateObject();
            char *s = line && cJSON_AddStringToObject(line, "parse_error", err)
                          ? cJSON_PrintUnformatted(line)
                          : NULL;
            cJSON_Delete(line);
            if (!s) {
                status = 1;
                break;
            }
            printf("%s\n", s);
            free(s);
            continue;
        }
        status |= render_one(t, ctx, opts, true);
        chat_template_destroy(&t);
    }
    cJSON_Delete(all);
    return fflush(stdout) ? 1 : status;
}

int main(int argc, char **argv)
{
    if (argc == 3 && !strcmp(argv[1], "--builtin")) {
        const char *src = chat_template_builtin(argv[2]);
        if (!src) return 1;
        fputs(src, stdout);
        return fflush(stdout) ? 1 : 0;
    }
    if (argc == 2 && !strcmp(argv[1], "--builtin-names")) {
        puts(chat_template_builtin_names());
        return fflush(stdout) ? 1 : 0;
    }
    bool batch = false, pairs = false;
    chat_template_render_opts opts = {0};
    int i = 1;
    for (; i < argc && argv[i][0] == '-'; i++) {
        if (!strcmp(argv[i], "--pairs")) {
            pairs = true;
        } else if (!strcmp(argv[i], "--batch")) {
            batch = true;
        } else if (!strcmp(argv[i], "--date") && i + 1 < argc) {
            opts.date_string = argv[++i];
        } else {
            break;
        }
    }
    if (pairs) {
        if (argc - i != 1) {
            fprintf(stderr, "usage: tmpl_tool --pairs [--date YYYY-MM-DD] PAIRS.json\n");
            return 64;
        }
        return run_pairs(argv[i], &opts);
    }
    if (argc - i != 2) {
        fprintf(stderr, "usage: tmpl_tool [--batch] [--date YYYY-MM-DD] TEMPLATE CONTEXT.json\n");
        return 64;
    }
    size_t src_len, ctx_len;
    char *src = read_file(argv[i], &src_len);
    char *ctx_text = src ? read_file(argv[i + 1], &ctx_len) : NULL;
    if (!ctx_text) {
        free(src);
        return 64;
    }
    cJSON *ctx = cJSON_ParseWithLength(ctx_text, ctx_len);
    free(ctx_text);
    if (!ctx || (batch ? !cJSON_IsArray(ctx) : !cJSON_IsObject(ctx))) {
        fprintf(stderr, "tmpl_tool: %s is not a JSON %s\n", argv[i + 1],
                batch ? "array" : "object");
        cJSON_Delete(ctx);
        free(src);
        return 64;
    }
    char err[1024];
    chat_template *t = NULL;
    int rc = chat_template_create(&t, src, src_len, err, sizeof err);
    free(src);
    if (rc) {
        fprintf(stderr, "parse error: %s\n", err);
        cJSON_Delete(ctx);
        return 2;
    }
    int status = 0;
    if (batch) {
        const cJSON *c;
        cJSON_ArrayForEach(c, ctx) status |= render_one(t, c, &opts, true);
    } else {
        status = render_one(t, ctx, &opts, false);
    }
    chat_template_destroy(&t);
    cJSON_Delete(ctx);
    if (fflush(stdout) != 0) return 1;
    return status;
}
