/*
 * From JSON and from --set text to struct cfg: type checks, parsing, range checks and the
 * messages a person reads when something is wrong.
 *
 * Every message has the same shape, "<key path>: <value as written> <problem>: expected <what
 * the key takes>", so that an operator can fix a file without opening the docs.  An unknown key
 * is answered with the nearest known one (edit distance on the whole path and on the last
 * part, so "server.threads" finds "compute.threads" and "sever" finds "server").
 */
#include "config/config_int.h"

#include "base/utf8.h"

#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_EXACT_JSON_INTEGER 9007199254740992.0 /* 2^53: larger doubles skip integers */

/* --- messages ------------------------------------------------------------------------------ */

void cfg__quote(const char *s, char *out, size_t out_size)
{
    size_t o = 0;
    if (out_size < 8) {
        if (out_size) out[0] = '\0';
        return;
    }
    out[o++] = '"';
    /* room kept for the longest escape (6), the closing quote and the NUL */
    for (const unsigned char *p = (const unsigned char *)s; *p && o + 8 <= out_size; p++) {
        if (*p == '"' || *p == '\\') {
            out[o++] = '\\';
            out[o++] = (char)*p;
        } else if (*p < 0x20 || *p == 0x7f) {
            o += (size_t)snprintf(out + o, out_size - o, "\\u%04x", *p);
            if (o >= out_size) o = out_size - 1;
        } else {
            out[o++] = (char)*p;
        }
        if (p[1] && o + 8 > out_size) { /* no room for the rest: say it was cut */
            o = o > out_size - 5 ? out_size - 5 : o;
            out[o++] = '.';
            out[o++] = '.';
            out[o++] = '.';
            break;
        }
    }
    if (o > out_size - 2) o = out_size - 2;
    out[o++] = '"';
    out[o] = '\0';
}

static void json_shown(const cJSON *v, char *out, size_t out_size)
{
    if (cJSON_IsString(v)) {
        cfg__quote(v->valuestring, out, out_size);
        return;
    }
    if (cJSON_IsNumber(v) && !isfinite(v->valuedouble)) { /* cJSON would print null */
        snprintf(out, out_size, "%s",
                 v->valuedouble > 0 ? "a number beyond 1e308" : "a number below -1e308");
        return;
    }
    char *text = cJSON_PrintUnformatted(v);
    if (!text) {
        snprintf(out, out_size, "(value)");
        return;
    }
    if (strlen(text) >= out_size && out_size > 4)
        snprintf(out, out_size, "%.*s...", (int)(out_size - 4), text);
    else
        snprintf(out, out_size, "%s", text);
    free(text);
}

static const char *json_type(const cJSON *v)
{
    if (cJSON_IsString(v)) return "a string";
    if (cJSON_IsNumber(v)) return "a number";
    if (cJSON_IsBool(v)) return "a boolean";
    if (cJSON_IsNull(v)) return "null";
    if (cJSON_IsArray(v)) return "an array";
    if (cJSON_IsObject(v)) return "an object";
    return "an unknown JSON value";
}

static void expectation(const cfg__key *k, char *out, size_t out_size)
{
    char lo[32], hi[32];
    switch (k->type) {
    case CFG__INT:
        snprintf(out, out_size, "an integer from %" PRId64 " to %" PRId64, k->min, k->max);
        return;
    case CFG__SIZE:
        cfg_format_size((uint64_t)k->min, lo, sizeof lo);
        cfg_format_size((uint64_t)k->max, hi, sizeof hi);
        snprintf(out, out_size,
                 "a size from %s to %s: bytes, or a string like \"16KiB\" or \"512MB\"", lo, hi);
        return;
    case CFG__DURATION:
        cfg_format_duration_ms((uint64_t)k->min, lo, sizeof lo);
        cfg_format_duration_ms((uint64_t)k->max, hi, sizeof hi);
        snprintf(out, out_size,
                 "a duration from %s to %s: milliseconds, or a string like \"30s\" or \"500ms\"",
                 lo, hi);
        return;
    case CFG__BUDGET:
        cfg_format_size((uint64_t)k->min, lo, sizeof lo);
        snprintf(out, out_size,
                 "\"auto\", a percentage like \"50%%\", or a size of at least %s like \"8GiB\"",
                 lo);
        return;
    case CFG__ENUM: {
        size_t o = (size_t)snprintf(out, out_size, "one of");
        for (int i = 0; k->names[i] && o < out_size; i++)
            o += (size_t)snprintf(out + o, out_size - o, "%s \"%s\"", i ? "," : "", k->names[i]);
        return;
    }
    case CFG__TRISTATE:
        snprintf(out, out_size, "\"auto\", true or false");
        return;
    case CFG__NULLABLE:
        snprintf(out, out_size, "%s, or null", k->what);
        return;
    case CFG__STRING:
    case CFG__STRINGS:
        snprintf(out, out_size, "%s", k->what);
        return;
    }
}

void cfg__key_error(cfg__errs *e, const cfg__key *k, const char *path, const char *shown,
                    const char *problem)
{
    char want[320];
    expectation(k, want, sizeof want);
    cfg__errs_add(e, "%s: %s %s: expected %s", path, shown, problem, want);
}

/* Levenshtein distance, for "did you mean". */
static size_t edit_distance(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    if (la > 64 || lb > 64) return SIZE_MAX;
    size_t row[65];
    for (size_t j = 0; j <= lb; j++)
        row[j] = j;
    for (size_t i = 1; i <= la; i++) {
        size_t diag = row[0];
        row[0] = i;
        for (size_t j = 1; j <= lb; j++) {
            size_t up = row[j];
            size_t best = diag + (a[i - 1] != b[j - 1]);
            if (up + 1 < best) best = up + 1;
            if (row[j - 1] + 1 < best) best = row[j - 1] + 1;
            row[j] = best;
            diag = up;
        }
    }
    return row[lb];
}

static const char *leaf(const char *path)
{
    const char *dot = strrchr(path, '.');
    return dot ? dot + 1 : path;
}

static bool is_section(const char *name);
static void section_keys(const char *section, char *out, size_t out_size);

void cfg__unknown_key(const char *path, cfg__errs *e)
{
    size_t n;
    const cfg__key *keys = cfg__keys(&n);
    if (is_section(path)) { /* --set server=... */
        char list[512];
        section_keys(path, list, sizeof list);
        cfg__errs_add(e, "%s: is a section, not a key: expected one of its keys: %s", path, list);
        return;
    }
    char best[64] = "";
    size_t best_d = SIZE_MAX;
    for (size_t i = 0; i < n; i++) {
        /* the key itself, the same name in another section, and the key's section */
        size_t d = edit_distance(path, keys[i].path);
        size_t dl = edit_distance(leaf(path), leaf(keys[i].path));
        if (dl != SIZE_MAX && dl + 1 < d) d = dl + 1;
        if (d < best_d) {
            best_d = d;
            snprintf(best, sizeof best, "%s", keys[i].path);
        }
        char section[32];
        snprintf(section, sizeof section, "%.*s", (int)(strchr(keys[i].path, '.') - keys[i].path),
                 keys[i].path);
        d = edit_distance(path, section);
        if (d < best_d) {
            best_d = d;
            snprintf(best, sizeof best, "%s", section);
        }
    }
    const bool is_section = !strchr(path, '.');
    size_t limit = strlen(path) / 3 > 2 ? strlen(path) / 3 : 2;
    char shown[96];
    cfg__quote(path, shown, sizeof shown);
    if (best_d <= limit) {
        cfg__errs_add(e, "%s: unknown %s; did you mean %s?", shown, is_section ? "section" : "key",
                      best);
        return;
    }
    /* Nothing close: list what the section (or the file) takes. */
    char list[512];
    size_t o = 0;
    list[0] = '\0';
    const char *dot = strchr(path, '.');
    size_t sec_len = dot ? (size_t)(dot - path) : 0;
    for (size_t i = 0; i < n && o < sizeof list; i++) {
        size_t klen = (size_t)(strchr(keys[i].path, '.') - keys[i].path);
        if (dot) {
            if (klen != sec_len || strncmp(keys[i].path, path, sec_len)) continue;
            o += (size_t)snprintf(list + o, sizeof list - o, "%s%s", o ? ", " : "", keys[i].path);
        } else if (!i || strncmp(keys[i - 1].path, keys[i].path, klen + 1)) {
            o += (size_t)snprintf(list + o, sizeof list - o, "%s%.*s", o ? ", " : "", (int)klen,
                                  keys[i].path);
        }
    }
    if (!o) /* a dotted name in an unknown section: list the sections */
        for (size_t i = 0; i < n && o < sizeof list; i++) {
            size_t klen = (size_t)(strchr(keys[i].path, '.') - keys[i].path);
            if (!i || strncmp(keys[i - 1].path, keys[i].path, klen + 1))
                o += (size_t)snprintf(list + o, sizeof list - o, "%s%.*s", o ? ", " : "", (int)klen,
                                      keys[i].path);
        }
    cfg__errs_add(e, "%s: unknown %s: expected one of %s", shown, is_section ? "section" : "key",
                  list);
}

/* --- string rules ------------------------------------------------------------------------------
 */

int cfg__check_path(const char *s, char *why, size_t why_size)
{
    if (!*s) return snprintf(why, why_size, "is empty"), 1;
    if (strlen(s) >= 4096) return snprintf(why, why_size, "is longer than 4095 bytes"), 1;
    return 0;
}

int cfg__check_name(const char *s, char *why, size_t why_size)
{
    if (!*s) return snprintf(why, why_size, "is empty"), 1;
    if (strlen(s) > 256) return snprintf(why, why_size, "is longer than 256 bytes"), 1;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++)
        if (*p <= 0x20 || *p == 0x7f)
            return snprintf(why, why_size, "contains a space or control character"), 1;
    return 0;
}

int cfg__check_api_key(const char *s, char *why, size_t why_size)
{
    if (!*s) return snprintf(why, why_size, "is empty"), 1;
    if (strlen(s) > 512) return snprintf(why, why_size, "is longer than 512 bytes"), 1;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++)
        if (*p <= 0x20 || *p >= 0x7f)
            return snprintf(why, why_size, "contains a character other than printable ASCII"), 1;
    return 0;
}

/* An IP address, as the server binds it (no name lookup: a name could resolve to an address
 * the operator did not mean). */
int cfg__check_host(const char *s, char *why, size_t why_size)
{
    unsigned char addr[16];
    if (inet_pton(AF_INET, s, addr) == 1 || inet_pton(AF_INET6, s, addr) == 1) return 0;
    snprintf(why, why_size, "is not an IP address");
    return 1;
}

/* --- setters: the only writers of cfg fields ------------------------------------------------ */

static void *field_of(cfg *c, const cfg__key *k)
{
    return (char *)c + k->offset;
}

static void set_int(cfg *c, const cfg__key *k, int64_t v, const char *shown, cfg__errs *e)
{
    if (v < k->min || v > k->max) {
        cfg__key_error(e, k, k->path, shown, "is out of range");
        return;
    }
    *(int32_t *)field_of(c, k) = (int32_t)v;
}

static void set_u64(cfg *c, const cfg__key *k, uint64_t v, const char *shown, cfg__errs *e)
{
    if (v < (uint64_t)k->min || v > (uint64_t)k->max) {
        cfg__key_error(e, k, k->path, shown, "is out of range");
        return;
    }
    *(uint64_t *)field_of(c, k) = v;
}

static void set_budget(cfg *c, const cfg__key *k, const cfg_budget *b, const char *shown,
                       cfg__errs *e)
{
    if (b->kind == CFG_BUDGET_BYTES &&
        (b->bytes < (uint64_t)k->min || b->bytes > (uint64_t)k->max)) {
        cfg__key_error(e, k, k->path, shown, "is out of range");
        return;
    }
    *(cfg_budget *)field_of(c, k) = *b;
}

static void set_enum_int(cfg *c, const cfg__key *k, int v)
{
    memcpy(field_of(c, k), &v, sizeof v);
}

static void set_enum(cfg *c, const cfg__key *k, const char *name, const char *shown, cfg__errs *e)
{
    for (int i = 0; k->names[i]; i++)
        if (!strcmp(k->names[i], name)) {
            set_enum_int(c, k, i);
            return;
        }
    cfg__key_error(e, k, k->path, shown, "is not a known value");
}

static void set_string(cfg *c, const cfg__key *k, const char *s, const char *shown, cfg__errs *e)
{
    char why[256];
    if (!s && k->type != CFG__NULLABLE) {
        cfg__key_error(e, k, k->path, shown, "is null");
        return;
    }
    if (s && k->check && k->check(s, why, sizeof why)) {
        cfg__key_error(e, k, k->path, shown, why);
        return;
    }
    char *copy = NULL;
    if (s && !(copy = strdup(s))) {
        e->oom = true;
        cfg__errs_add(e, "%s: out of memory", k->path);
        return;
    }
    char **field = field_of(c, k);
    free(*field);
    *field = copy;
    if (!strcmp(k->path, "model.name")) c->model_name_derived_ = false;
}

static void set_strings(cfg *c, const cfg__key *k, char *const *items, size_t count, cfg__errs *e)
{
    int bad = 0;
    char why[256], path[96], shown[96];
    for (size_t i = 0; i < count; i++)
        if (k->check && k->check(items[i], why, sizeof why)) {
            snprintf(path, sizeof path, "%s[%zu]", k->path, i);
            cfg__quote(items[i], shown, sizeof shown);
            cfg__key_error(e, k, path, shown, why);
            bad++;
        }
    if (bad) return;
    cfg_strings copy;
    if (cfg__strings_dup(&copy, items, count)) {
        e->oom = true;
        cfg__errs_add(e, "%s: out of memory", k->path);
        return;
    }
    cfg_strings *field = field_of(c, k);
    for (size_t i = 0; i < field->count; i++)
        free(field->items[i]);
    free(field->items);
    *field = copy;
}

static void set_tristate_text(cfg *c, const cfg__key *k, const char *text, const char *shown,
                              cfg__errs *e)
{
    if (!strcmp(text, "auto"))
        set_enum_int(c, k, CFG_AUTO);
    else if (!strcmp(text, "true"))
        set_enum_int(c, k, CFG_ON);
    else if (!strcmp(text, "false"))
        set_enum_int(c, k, CFG_OFF);
    else
        cfg__key_error(e, k, k->path, shown, "is not a known value");
}

/* "a, b,c" -> items; an empty text is an empty list. */
static void set_comma_list(cfg *c, const cfg__key *k, const char *text, const char *shown,
                           cfg__errs *e)
{
    size_t cap = 1;
    for (const char *p = text; *p; p++)
        cap += *p == ',';
    char **items = calloc(cap, sizeof *items);
    char *work = strdup(text);
    size_t count = 0;
    if (!items || !work) {
        e->oom = true;
        cfg__errs_add(e, "%s: out of memory", k->path);
        goto done;
    }
    char *p = work;
    while (*p == ' ')
        p++;
    if (*p) {
        for (char *tok = p;; tok++) {
            char *end = strchr(tok, ',');
            if (end) *end = '\0';
            while (*tok == ' ')
                tok++;
            size_t len = strlen(tok);
            while (len && tok[len - 1] == ' ')
                tok[--len] = '\0';
            if (!len) {
                cfg__key_error(e, k, k->path, shown, "has an empty item");
                goto done;
            }
            items[count++] = tok;
            if (!end) break;
            tok = end;
        }
    }
    set_strings(c, k, items, count, e);
done:
    free(items);
    free(work);
}

static int parse_int64(const char *text, int64_t *out)
{
    char *end = NULL;
    errno = 0;
    long long v = strtoll(text, &end, 10);
    if (!*text || *end || text[0] == ' ' || text[0] == '+') return -EINVAL;
    if (errno) return -ERANGE;
    *out = v;
    return 0;
}

void cfg__set_text(cfg *c, const cfg__key *k, const char *text, cfg__errs *e)
{
    char shown[96], why[256];
    cfg__quote(text, shown, sizeof shown);
    int64_t i64;
    uint64_t u64;
    cfg_budget b;
    int rc;
    switch (k->type) {
    case CFG__STRING:
    case CFG__NULLABLE:
        set_string(c, k, *text || k->type == CFG__STRING ? text : NULL, shown, e);
        return;
    case CFG__STRINGS: {
        const char *p = text;
        while (*p == ' ')
            p++;
        if (*p != '[') {
            set_comma_list(c, k, text, shown, e);
            return;
        }
        cJSON *arr = cJSON_ParseWithOpts(p, NULL, 1);
        if (!arr) {
            cfg__key_error(e, k, k->path, shown, "is not a JSON array");
            return;
        }
        cfg__set_json(c, k, arr, e);
        cJSON_Delete(arr);
        return;
    }
    case CFG__INT:
        rc = parse_int64(text, &i64);
        if (rc)
            cfg__key_error(e, k, k->path, shown,
                           rc == -ERANGE ? "is out of range" : "is not an integer");
        else
            set_int(c, k, i64, shown, e);
        return;
    case CFG__SIZE:
    case CFG__DURATION:
        rc = k->type == CFG__SIZE ? cfg_parse_size(text, &u64, why, sizeof why)
                                  : cfg_parse_duration_ms(text, &u64, why, sizeof why);
        if (rc)
            cfg__key_error(e, k, k->path, shown, why);
        else
            set_u64(c, k, u64, shown, e);
        return;
    case CFG__BUDGET:
        if (cfg_parse_budget(text, &b, why, sizeof why))
            cfg__key_error(e, k, k->path, shown, why);
        else
            set_budget(c, k, &b, shown, e);
        return;
    case CFG__ENUM:
        set_enum(c, k, text, shown, e);
        return;
    case CFG__TRISTATE:
        set_tristate_text(c, k, text, shown, e);
        return;
    }
}

/* A JSON number that is a whole number, exactly representable. */
static int json_integer(const cJSON *v, int64_t *out, const char **problem)
{
    double d = v->valuedouble;
    if (!isfinite(d) || d != floor(d)) {
        *problem = "is not an integer";
        return -EINVAL;
    }
    if (fabs(d) > MAX_EXACT_JSON_INTEGER) {
        *problem = "is too large for an exact JSON number (write a string such as \"8PiB\")";
        return -ERANGE;
    }
    *out = (int64_t)d;
    return 0;
}

void cfg__set_json(cfg *c, const cfg__key *k, const cJSON *v, cfg__errs *e)
{
    char shown[96], problem[64];
    json_shown(v, shown, sizeof shown);
    snprintf(problem, sizeof problem, "is %s", json_type(v));
    const char *why = NULL;
    int64_t i64;
    switch (k->type) {
    case CFG__STRING:
    case CFG__NULLABLE:
        if (cJSON_IsNull(v) && k->type == CFG__NULLABLE)
            set_string(c, k, NULL, shown, e);
        else if (cJSON_IsString(v))
            set_string(c, k, v->valuestring, shown, e);
        else
            break;
        return;
    case CFG__STRINGS: {
        if (!cJSON_IsArray(v)) break;
        int n = cJSON_GetArraySize(v), bad = 0;
        char **items = calloc((size_t)n + 1, sizeof *items);
        if (!items) {
            e->oom = true;
            cfg__errs_add(e, "%s: out of memory", k->path);
            return;
        }
        int i = 0;
        for (const cJSON *it = v->child; it; it = it->next, i++) {
            if (!cJSON_IsString(it)) {
                char path[96], item_shown[96], item_problem[32];
                snprintf(path, sizeof path, "%s[%d]", k->path, i);
                json_shown(it, item_shown, sizeof item_shown);
                snprintf(item_problem, sizeof item_problem, "is %s", json_type(it));
                cfg__errs_add(e, "%s: %s %s: expected a string", path, item_shown, item_problem);
                bad++;
                continue;
            }
            items[i] = it->valuestring;
        }
        if (!bad) set_strings(c, k, items, (size_t)n, e);
        free(items);
        return;
    }
    case CFG__INT:
        if (!cJSON_IsNumber(v)) break;
        if (json_integer(v, &i64, &why))
            cfg__key_error(e, k, k->path, shown, why);
        else
            set_int(c, k, i64, shown, e);
        return;
    case CFG__SIZE:
    case CFG__DURATION:
    case CFG__BUDGET:
        if (cJSON_IsString(v)) {
            /* the text path, but the value shown as the file wrote it */
            char reason[256];
            uint64_t u64;
            cfg_budget b;
            int rc = k->type == CFG__SIZE
                         ? cfg_parse_size(v->valuestring, &u64, reason, sizeof reason)
                     : k->type == CFG__DURATION
                         ? cfg_parse_duration_ms(v->valuestring, &u64, reason, sizeof reason)
                         : cfg_parse_budget(v->valuestring, &b, reason, sizeof reason);
            if (rc)
                cfg__key_error(e, k, k->path, shown, reason);
            else if (k->type == CFG__BUDGET)
                set_budget(c, k, &b, shown, e);
            else
                set_u64(c, k, u64, shown, e);
            return;
        }
        if (!cJSON_IsNumber(v)) break;
        if (json_integer(v, &i64, &why)) {
            cfg__key_error(e, k, k->path, shown, why);
        } else if (i64 < 0) {
            cfg__key_error(e, k, k->path, shown, "is negative");
        } else if (k->type == CFG__BUDGET) {
            cfg_budget b = {.kind = CFG_BUDGET_BYTES, .bytes = (uint64_t)i64};
            set_budget(c, k, &b, shown, e);
        } else {
            set_u64(c, k, (uint64_t)i64, shown, e);
        }
        return;
    case CFG__ENUM:
        if (!cJSON_IsString(v)) break;
        set_enum(c, k, v->valuestring, shown, e);
        return;
    case CFG__TRISTATE:
        if (cJSON_IsBool(v))
            set_enum_int(c, k, cJSON_IsTrue(v) ? CFG_ON : CFG_OFF);
        else if (cJSON_IsString(v) && !strcmp(v->valuestring, "auto"))
            set_enum_int(c, k, CFG_AUTO);
        else if (cJSON_IsString(v))
            cfg__key_error(e, k, k->path, shown, "is not a known value");
        else
            break;
        return;
    }
    cfg__key_error(e, k, k->path, shown, problem);
}

/* --- documents ------------------------------------------------------------------------------- */

static bool given_before(const cJSON *parent, const cJSON *item)
{
    for (const cJSON *p = parent->child; p && p != item; p = p->next)
        if (p->string && item->string && !strcmp(p->string, item->string)) return true;
    return false;
}

static bool is_section(const char *name)
{
    size_t n, len = strlen(name);
    const cfg__key *keys = cfg__keys(&n);
    for (size_t i = 0; i < n; i++)
        if (!strncmp(keys[i].path, name, len) && keys[i].path[len] == '.') return true;
    return false;
}

static void section_keys(const char *section, char *out, size_t out_size)
{
    size_t n, len = strlen(section), o = 0;
    const cfg__key *keys = cfg__keys(&n);
    out[0] = '\0';
    for (size_t i = 0; i < n && o < out_size; i++)
        if (!strncmp(keys[i].path, section, len) && keys[i].path[len] == '.')
            o += (size_t)snprintf(out + o, out_size - o, "%s%s", o ? ", " : "",
                                  keys[i].path + len + 1);
}

static void apply_document(cfg *c, const cJSON *root, cfg__errs *e)
{
    char shown[96], path[160], list[512];
    if (!cJSON_IsObject(root)) {
        json_shown(root, shown, sizeof shown);
        cfg__errs_add(e,
                      "(top level): %s is %s: expected an object of sections such as "
                      "{\"model\": {\"path\": \"...\"}}",
                      shown, json_type(root));
        return;
    }
    for (const cJSON *s = root->child; s; s = s->next) {
        /* unknown names first: they are shown quoted, as they may hold anything */
        const char *name = s->string ? s->string : "";
        if (is_section(name) && given_before(root, s)) {
            cfg__errs_add(e, "%s: given twice: expected each section once", name);
            continue;
        }
        if (!is_section(name)) {
            const cfg__key *k = cfg__find_key(name);
            if (k) {
                const char *dot = strchr(name, '.');
                cfg__errs_add(e,
                              "\"%s\": unknown section: keys are nested by section: expected "
                              "{\"%.*s\": {\"%s\": ...}}",
                              name, (int)(dot - name), name, dot + 1);
            } else {
                cfg__unknown_key(name, e);
            }
            continue;
        }
        if (!cJSON_IsObject(s)) {
            json_shown(s, shown, sizeof shown);
            section_keys(name, list, sizeof list);
            cfg__errs_add(e, "%s: %s is %s: expected an object with the keys %s", name, shown,
                          json_type(s), list);
            continue;
        }
        for (const cJSON *item = s->child; item; item = item->next) {
            snprintf(path, sizeof path, "%s.%.64s", name, item->string ? item->string : "");
            const cfg__key *k = cfg__find_key(path);
            if (!k)
                cfg__unknown_key(path, e);
            else if (given_before(s, item))
                cfg__errs_add(e, "%s: given twice: expected each key once", path);
            else
                cfg__set_json(c, k, item, e);
        }
    }
}

/* Line and column (1-based, in characters as Python's json module counts them) of pos. */
static void line_column(const char *text, const char *pos, int *line, int *column)
{
    *line = 1;
    *column = 1;
    for (const char *p = text; p < pos; p++) {
        if (*p == '\n') {
            (*line)++;
            *column = 1;
        } else if (!utf8_is_cont(*p)) {
            (*column)++;
        }
    }
}

int cfg_load_string(cfg *c, const char *json, size_t len, const char *origin, char *err,
                    size_t err_size)
{
    cfg__errs e = {.buf = err, .size = err_size, .prefix = origin};
    if (err_size) err[0] = '\0';
    const char *nul = memchr(json, '\0', len);
    if (nul) {
        cfg__errs_add(&e, "byte %zu is a NUL: expected JSON text", (size_t)(nul - json));
        return cfg__errs_finish(&e);
    }
    char *text = malloc(len + 1);
    if (!text) {
        e.oom = true;
        cfg__errs_add(&e, "out of memory");
        return cfg__errs_finish(&e);
    }
    memcpy(text, json, len);
    text[len] = '\0';
    size_t pos;
    char msg[96];
    cJSON *root = NULL;
    if (cfg__json_check(text, len, &pos, msg, sizeof msg)) {
        int line, column;
        line_column(text, text + pos, &line, &column);
        const char *at = text + pos;
        size_t n = 0;
        while (at[n] && at[n] != '\n' && at[n] != '\r' && n < 24)
            n++;
        char snippet[32], shown[96];
        snprintf(snippet, sizeof snippet, "%.*s", (int)n, at);
        cfg__quote(snippet, shown, sizeof shown);
        if (n)
            cfg__errs_add(&e, "line %d, column %d: JSON syntax error: %s, at %s", line, column, msg,
                          shown);
        else
            cfg__errs_add(&e, "line %d, column %d: JSON syntax error: %s, at the end of %s", line,
                          column, msg, *at ? "the line" : "the document");
    } else if (!(root = cJSON_ParseWithLength(text, len))) {
        /* the check above passed, so only memory can be missing */
        e.oom = true;
        cfg__errs_add(&e, "out of memory parsing JSON");
    }
    free(text);
    if (!root) return cfg__errs_finish(&e);
    cfg work;
    if (cfg_copy(&work, c)) {
        cJSON_Delete(root);
        e.oom = true;
        cfg__errs_add(&e, "out of memory");
        return cfg__errs_finish(&e);
    }
    apply_document(&work, root, &e);
    cJSON_Delete(root);
    int rc = cfg__errs_finish(&e);
    if (rc) {
        cfg_free(&work);
        return rc;
    }
    cfg_free(c);
    *c = work;
    return 0;
}
