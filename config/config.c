/*
 * The deployment config: one table of keys drives defaults, JSON loading, --set overrides,
 * range checks and `config show`.
 *
 * Every key is a row (path, type, where it lives in struct cfg, range, default written as the
 * text --set would take).  cfg_defaults() applies each default through the same parser as
 * --set, so a default can never be a value the parser would refuse, and the docs can be checked
 * against `config show` of an empty file.  A JSON value is first checked for its JSON type
 * (a port given as "8080" is an error: a typo must not pass), then goes through the same
 * setters as --set text, so both paths give the same errors.
 *
 * Loading works on a copy that replaces the caller's cfg only when the whole document is good:
 * a bad file never leaves a half-applied config behind.
 */
#include "config/config.h"

#include <cjson/cJSON.h>
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "config/config_int.h"

#define MAX_FILE_BYTES (1 << 20) /* a deployment file is a page of JSON; more is a mistake */

/* --- the keys ------------------------------------------------------------------------------- */

static const char *const policy_names[] = {"lru",         "lfu",         "lru-protect",
                                           "lfu-history", "lru-predict", NULL};
static const char *const predictor_names[] = {"none",   "pregate", "affinity",
                                              "hybrid", "auto",    NULL};
static const char *const backend_names[] = {"auto", "cpu", "sim", "cuda", NULL};
static const char *const kv_type_names[] = {"f16", "f32", NULL};
static const char *const miss_names[] = {"auto", "copy", "cpu", NULL};
static const char *const pinning_names[] = {"auto", "tier", "ring", NULL};
static const char *const level_names[] = {"error", "warn", "info", "debug", NULL};
static const char *const format_names[] = {"text", "json", NULL};

#define OFF(field) offsetof(cfg, field)
#define KIB 1024ll
#define MIB (1024ll * 1024)
#define GIB (1024ll * 1024 * 1024)
#define SECOND 1000ll
#define HOUR (3600ll * 1000)

static const cfg__key keys[] = {
    {"model.path", CFG__STRING, OFF(model.path), 0, 0, NULL, NULL, cfg__check_path,
     "the path of a GGUF model file"},
    {"model.name", CFG__NULLABLE, OFF(model.name), 0, 0, NULL, NULL, cfg__check_name,
     "a model id without spaces or control characters"},
    {"model.chat_template", CFG__NULLABLE, OFF(model.chat_template), 0, 0, NULL, NULL,
     cfg__check_path, "a built-in template name or the path of a Jinja template file"},
    {"server.host", CFG__STRING, OFF(server.host), 0, 0, NULL, "127.0.0.1", cfg__check_host,
     "an IPv4 or IPv6 address such as 0.0.0.0 or ::"},
    {"server.port", CFG__INT, OFF(server.port), 0, 65535, NULL, "8080", NULL, NULL},
    {"server.api_keys", CFG__STRINGS, OFF(server.api_keys), 0, 0, NULL, "[]", cfg__check_api_key,
     "a list of API keys (printable characters, no spaces)"},
    {"server.max_header_bytes", CFG__SIZE, OFF(server.max_header_bytes), KIB, 1 * MIB, NULL,
     "16KiB", NULL, NULL},
    {"server.max_body_bytes", CFG__SIZE, OFF(server.max_body_bytes), KIB, 1 * GIB, NULL, "8MiB",
     NULL, NULL},
    {"server.max_connections", CFG__INT, OFF(server.max_connections), 1, 65536, NULL, "1024", NULL,
     NULL},
    {"server.header_timeout_ms", CFG__DURATION, OFF(server.header_timeout_ms), 1, HOUR, NULL, "10s",
     NULL, NULL},
    {"server.idle_timeout_ms", CFG__DURATION, OFF(server.idle_timeout_ms), 1, 24 * HOUR, NULL,
     "60s", NULL, NULL},
    {"server.drain_timeout_ms", CFG__DURATION, OFF(server.drain_timeout_ms), 0, HOUR, NULL, "30s",
     NULL, NULL},
    {"server.replica", CFG__NULLABLE, OFF(server.replica), 0, 0, NULL, NULL, cfg__check_name,
     "a replica name without spaces or control characters"},
    {"server.queue_depth", CFG__INT, OFF(server.queue_depth), 0, 1000000, NULL, "64", NULL, NULL},
    {"batching.max_running", CFG__INT, OFF(batching.max_running), 1, 4096, NULL, "8", NULL, NULL},
    {"batching.max_tokens_per_step", CFG__INT, OFF(batching.max_tokens_per_step), 1, 1 << 20, NULL,
     "512", NULL, NULL},
    {"batching.prefill_chunk", CFG__INT, OFF(batching.prefill_chunk), 1, 1 << 20, NULL, "256", NULL,
     NULL},
    {"kv.context_length", CFG__INT, OFF(kv.context_length), 0, 1 << 24, NULL, "0", NULL, NULL},
    {"kv.budget_bytes", CFG__BUDGET, OFF(kv.budget_bytes), 1 * MIB, INT64_MAX, NULL, "auto", NULL,
     NULL},
    {"kv.type", CFG__ENUM, OFF(kv.type), 0, 0, kv_type_names, "f16", NULL, NULL},
    {"kv.prefix_cache", CFG__TRISTATE, OFF(kv.prefix_cache), 0, 0, NULL, "auto", NULL, NULL},
    {"kv.prefix_cache_bytes", CFG__BUDGET, OFF(kv.prefix_cache_bytes), KIB, INT64_MAX, NULL, "auto",
     NULL, NULL},
    {"cache.host_bytes", CFG__BUDGET, OFF(cache.host_bytes), 1 * MIB, INT64_MAX, NULL, "auto", NULL,
     NULL},
    {"cache.device_bytes", CFG__BUDGET, OFF(cache.device_bytes), 0, INT64_MAX, NULL, "auto", NULL,
     NULL},
    {"cache.miss_policy", CFG__ENUM, OFF(cache.miss_policy), 0, 0, miss_names, "auto", NULL, NULL},
    {"cache.host_pinning", CFG__ENUM, OFF(cache.host_pinning), 0, 0, pinning_names, "auto", NULL,
     NULL},
    {"cache.staging_bytes", CFG__SIZE, OFF(cache.staging_bytes), 1 * MIB, 64 * GIB, NULL, "256MiB",
     NULL, NULL},
    {"cache.staging_threads", CFG__INT, OFF(cache.staging_threads), 0, 64, NULL, "0", NULL, NULL},
    {"cache.policy", CFG__ENUM, OFF(cache.policy), 0, 0, policy_names, "lru", NULL, NULL},
    {"predictor.kind", CFG__ENUM, OFF(predictor.kind), 0, 0, predictor_names, "auto", NULL, NULL},
    {"predictor.lookahead", CFG__INT, OFF(predictor.lookahead), 1, 8, NULL, "1", NULL, NULL},
    {"predictor.width", CFG__INT, OFF(predictor.width), 0, 64, NULL, "0", NULL, NULL},
    {"predictor.prefetch_threshold", CFG__INT, OFF(predictor.prefetch_threshold), 0, 100, NULL, "0",
     NULL, NULL},
    {"io.queue_depth", CFG__INT, OFF(io.queue_depth), 1, 4096, NULL, "64", NULL, NULL},
    {"io.direct", CFG__TRISTATE, OFF(io.direct), 0, 0, NULL, "auto", NULL, NULL},
    {"compute.threads", CFG__INT, OFF(compute.threads), 0, 1024, NULL, "0", NULL, NULL},
    {"compute.backend", CFG__ENUM, OFF(compute.backend), 0, 0, backend_names, "auto", NULL, NULL},
    {"compute.graphs", CFG__TRISTATE, OFF(compute.graphs), 0, 0, NULL, "auto", NULL, NULL},
    {"gpu.enabled", CFG__TRISTATE, OFF(gpu.enabled), 0, 0, NULL, "auto", NULL, NULL},
    {"gpu.device", CFG__INT, OFF(gpu.device), -1, 63, NULL, "0", NULL, NULL},
    {"log.level", CFG__ENUM, OFF(log.level), 0, 0, level_names, "info", NULL, NULL},
    {"log.format", CFG__ENUM, OFF(log.format), 0, 0, format_names, "text", NULL, NULL},
};

#define N_KEYS (sizeof keys / sizeof keys[0])

const cfg__key *cfg__keys(size_t *n)
{
    *n = N_KEYS;
    return keys;
}

const char *cfg_cache_policy_name(cfg_cache_policy p)
{
    return (unsigned)p < sizeof policy_names / sizeof policy_names[0] - 1 ? policy_names[p] : "?";
}
const char *cfg_predictor_kind_name(cfg_predictor_kind k)
{
    return (unsigned)k < sizeof predictor_names / sizeof predictor_names[0] - 1 ? predictor_names[k]
                                                                                : "?";
}
const char *cfg_backend_name(cfg_backend b)
{
    return (unsigned)b < 4 ? backend_names[b] : "?";
}
const char *cfg_log_level_name(cfg_log_level l)
{
    return (unsigned)l < 4 ? level_names[l] : "?";
}
const char *cfg_log_format_name(cfg_log_format f)
{
    return (unsigned)f < 2 ? format_names[f] : "?";
}

/* --- ownership ------------------------------------------------------------------------------- */

static void strings_free(cfg_strings *s)
{
    for (size_t i = 0; i < s->count; i++)
        free(s->items[i]);
    free(s->items);
    *s = (cfg_strings){0};
}

void cfg_free(cfg *c)
{
    if (!c) return;
    for (size_t i = 0; i < N_KEYS; i++) {
        void *field = (char *)c + keys[i].offset;
        if (keys[i].type == CFG__STRING || keys[i].type == CFG__NULLABLE)
            free(*(char **)field);
        else if (keys[i].type == CFG__STRINGS)
            strings_free(field);
    }
    memset(c, 0, sizeof *c);
}

int cfg__strings_dup(cfg_strings *dst, char *const *items, size_t count)
{
    *dst = (cfg_strings){0};
    if (!count) return 0;
    dst->items = calloc(count, sizeof *dst->items);
    if (!dst->items) return -ENOMEM;
    for (; dst->count < count; dst->count++) {
        dst->items[dst->count] = strdup(items[dst->count]);
        if (!dst->items[dst->count]) {
            strings_free(dst);
            return -ENOMEM;
        }
    }
    return 0;
}

int cfg_copy(cfg *dst, const cfg *src)
{
    *dst = *src;
    for (size_t i = 0; i < N_KEYS; i++) { /* nothing shared until each pointer is replaced */
        void *field = (char *)dst + keys[i].offset;
        if (keys[i].type == CFG__STRING || keys[i].type == CFG__NULLABLE)
            *(char **)field = NULL;
        else if (keys[i].type == CFG__STRINGS)
            *(cfg_strings *)field = (cfg_strings){0};
    }
    for (size_t i = 0; i < N_KEYS; i++) {
        const void *from = (const char *)src + keys[i].offset;
        void *to = (char *)dst + keys[i].offset;
        if (keys[i].type == CFG__STRING || keys[i].type == CFG__NULLABLE) {
            const char *s = *(char *const *)from;
            if (s && !(*(char **)to = strdup(s))) goto fail;
        } else if (keys[i].type == CFG__STRINGS) {
            const cfg_strings *s = from;
            if (cfg__strings_dup(to, s->items, s->count)) goto fail;
        }
    }
    return 0;
fail:
    cfg_free(dst);
    return -ENOMEM;
}

/* --- error lists ------------------------------------------------------------------------------ */

void cfg__errs_add(cfg__errs *e, const char *fmt, ...)
{
    e->n++;
    if (!e->buf || !e->size) return;
    /* Keep room for the "(and N more errors)" line, so a full buffer still says it is full. */
    size_t reserve = 40, avail = e->size > e->len + reserve ? e->size - e->len - reserve : 0;
    char line[1024];
    int off = e->prefix ? snprintf(line, sizeof line, "%s: ", e->prefix) : 0;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line + off, sizeof line - (size_t)off, fmt, ap);
    va_end(ap);
    size_t need = strlen(line) + (e->len ? 1 : 0);
    if (need + 1 > avail) {
        e->dropped++;
        return;
    }
    snprintf(e->buf + e->len, e->size - e->len, "%s%s", e->len ? "\n" : "", line);
    e->len += need;
}

int cfg__errs_finish(cfg__errs *e)
{
    if (e->dropped && e->buf && e->size > e->len)
        snprintf(e->buf + e->len, e->size - e->len, "%s(and %d more errors)", e->len ? "\n" : "",
                 e->dropped);
    if (e->oom) return -ENOMEM;
    return e->n ? -EINVAL : 0;
}

/* --- defaults, set, validate --------------------------------------------------------------- */

int cfg_defaults(cfg *c, char *err, size_t err_size)
{
    memset(c, 0, sizeof *c);
    cfg__errs e = {.buf = err, .size = err_size};
    if (err_size) err[0] = '\0';
    for (size_t i = 0; i < N_KEYS; i++)
        if (keys[i].def) cfg__set_text(c, &keys[i], keys[i].def, &e);
    int rc = cfg__errs_finish(&e);
    if (rc) cfg_free(c);
    return rc;
}

static const cfg__key *find_key(const char *path, size_t len)
{
    for (size_t i = 0; i < N_KEYS; i++)
        if (strlen(keys[i].path) == len && !strncmp(keys[i].path, path, len)) return &keys[i];
    return NULL;
}

const cfg__key *cfg__find_key(const char *path)
{
    return find_key(path, strlen(path));
}

int cfg_set(cfg *c, const char *assignment, char *err, size_t err_size)
{
    cfg__errs e = {.buf = err, .size = err_size};
    if (err_size) err[0] = '\0';
    const char *eq = strchr(assignment, '=');
    if (!eq || eq == assignment) {
        cfg__errs_add(&e, "\"%.200s\": expected KEY=VALUE, e.g. server.port=8080", assignment);
        return cfg__errs_finish(&e);
    }
    char path[256];
    snprintf(path, sizeof path, "%.*s", (int)(eq - assignment), assignment);
    const cfg__key *k = find_key(assignment, (size_t)(eq - assignment));
    if (!k)
        cfg__unknown_key(path, &e);
    else
        cfg__set_text(c, k, eq + 1, &e);
    return cfg__errs_finish(&e);
}

/* model.name from model.path: the file name without its .gguf extension. */
static char *derive_name(const char *path)
{
    const char *slash = strrchr(path, '/');
    const char *base = slash ? slash + 1 : path;
    size_t len = strlen(base);
    if (len > 5 && !strcasecmp(base + len - 5, ".gguf")) len -= 5;
    return strndup(base, len);
}

static void check_ranges(const cfg *c, cfg__errs *e)
{
    for (size_t i = 0; i < N_KEYS; i++) {
        const cfg__key *k = &keys[i];
        const void *field = (const char *)c + k->offset;
        char shown[64], why[256];
        switch (k->type) {
        case CFG__INT: {
            int32_t v = *(const int32_t *)field;
            if (v < k->min || v > k->max) {
                snprintf(shown, sizeof shown, "%" PRId32, v);
                cfg__key_error(e, k, k->path, shown, "is out of range");
            }
            break;
        }
        case CFG__SIZE:
        case CFG__DURATION: {
            uint64_t v = *(const uint64_t *)field;
            if (v < (uint64_t)k->min || v > (uint64_t)k->max) {
                snprintf(shown, sizeof shown, "%" PRIu64, v);
                cfg__key_error(e, k, k->path, shown, "is out of range");
            }
            break;
        }
        case CFG__BUDGET: {
            const cfg_budget *b = field;
            bool bad =
                b->kind == CFG_BUDGET_BYTES
                    ? b->bytes < (uint64_t)k->min || b->bytes > (uint64_t)k->max
                    : b->kind == CFG_BUDGET_PERCENT && !(b->percent > 0 && b->percent <= 100);
            if (bad || (unsigned)b->kind > CFG_BUDGET_PERCENT) {
                cfg_format_budget(b, shown, sizeof shown);
                cfg__key_error(e, k, k->path, shown, "is out of range");
            }
            break;
        }
        case CFG__ENUM:
        case CFG__TRISTATE: {
            int v;
            memcpy(&v, field, sizeof v);
            int lo = k->type == CFG__TRISTATE ? -1 : 0, hi = 1;
            if (k->type == CFG__ENUM)
                for (hi = 0; k->names[hi + 1]; hi++) {
                }
            if (v < lo || v > hi) {
                snprintf(shown, sizeof shown, "%d", v);
                cfg__key_error(e, k, k->path, shown, "is not a known value");
            }
            break;
        }
        case CFG__STRING:
        case CFG__NULLABLE: {
            const char *s = *(char *const *)field;
            if (s && k->check && k->check(s, why, sizeof why)) {
                cfg__quote(s, shown, sizeof shown);
                cfg__key_error(e, k, k->path, shown, why);
            }
            break;
        }
        case CFG__STRINGS: {
            const cfg_strings *s = field;
            for (size_t j = 0; j < s->count; j++)
                if (k->check && k->check(s->items[j], why, sizeof why)) {
                    char p[96];
                    snprintf(p, sizeof p, "%s[%zu]", k->path, j);
                    cfg__quote(s->items[j], shown, sizeof shown);
                    cfg__key_error(e, k, p, shown, why);
                }
            break;
        }
        }
    }
}

int cfg_validate(cfg *c, char *err, size_t err_size)
{
    cfg__errs e = {.buf = err, .size = err_size};
    if (err_size) err[0] = '\0';
    if (!c->model.path)
        cfg__errs_add(&e, "model.path: missing: expected the path of a GGUF model file (it has "
                          "no default)");
    check_ranges(c, &e);

    const int32_t running = c->batching.max_running, step = c->batching.max_tokens_per_step;
    if (step < running)
        cfg__errs_add(&e,
                      "batching.max_tokens_per_step: %" PRId32 " is less than "
                      "batching.max_running (%" PRId32 "): expected at least max_running, since "
                      "every running sequence decodes one token per step",
                      step, running);
    if (c->batching.prefill_chunk > step)
        cfg__errs_add(&e,
                      "batching.prefill_chunk: %" PRId32 " is more than "
                      "batching.max_tokens_per_step (%" PRId32 "): expected at most the tokens "
                      "of one step",
                      c->batching.prefill_chunk, step);
    if (c->kv.context_length > 0 && c->kv.context_length < 16)
        cfg__errs_add(&e,
                      "kv.context_length: %" PRId32 " is too short: expected 0 (the model's "
                      "training context) or at least 16 positions",
                      c->kv.context_length);
    if (c->compute.backend == CFG_BACKEND_CUDA && (c->gpu.enabled == CFG_OFF || c->gpu.device < 0))
        cfg__errs_add(&e,
                      "compute.backend: \"cuda\" while gpu.enabled is false or gpu.device is -1: "
                      "expected compute.backend \"auto\", \"cpu\" or \"sim\", or a GPU enabled");
    if (c->gpu.enabled == CFG_ON && c->gpu.device < 0)
        cfg__errs_add(&e, "gpu.enabled: true while gpu.device is -1 (no GPU): expected a device "
                          "index from 0 in gpu.device, or gpu.enabled false or \"auto\"");

    if (c->model.path && (c->model_name_derived_ || !c->model.name) && !e.n) {
        char *name = derive_name(c->model.path);
        if (!name) {
            e.oom = true;
        } else if (!*name || cfg__check_name(name, (char[8]){0}, 8)) {
            char shown[64];
            cfg__quote(c->model.path, shown, sizeof shown);
            cfg__errs_add(&e,
                          "model.name: cannot be derived from model.path %s: expected model.name "
                          "to be set",
                          shown);
            free(name);
        } else {
            free(c->model.name);
            c->model.name = name;
            c->model_name_derived_ = true;
        }
    }
    return cfg__errs_finish(&e);
}

/* --- show -------------------------------------------------------------------------------- */

static cJSON *value_json(const cfg *c, const cfg__key *k)
{
    const void *field = (const char *)c + k->offset;
    char text[64];
    switch (k->type) {
    case CFG__STRING:
    case CFG__NULLABLE: {
        const char *s = *(char *const *)field;
        return s ? cJSON_CreateString(s) : cJSON_CreateNull();
    }
    case CFG__STRINGS: {
        /* not cJSON_CreateStringArray: it refuses an empty list */
        const cfg_strings *s = field;
        cJSON *arr = cJSON_CreateArray();
        for (size_t i = 0; arr && i < s->count; i++) {
            cJSON *item = cJSON_CreateString(s->items[i]);
            if (!item) {
                cJSON_Delete(arr);
                return NULL;
            }
            cJSON_AddItemToArray(arr, item);
        }
        return arr;
    }
    case CFG__INT:
        return cJSON_CreateNumber(*(const int32_t *)field);
    case CFG__SIZE:
        cfg_format_size(*(const uint64_t *)field, text, sizeof text);
        return cJSON_CreateString(text);
    case CFG__DURATION:
        cfg_format_duration_ms(*(const uint64_t *)field, text, sizeof text);
        return cJSON_CreateString(text);
    case CFG__BUDGET:
        cfg_format_budget(field, text, sizeof text);
        return cJSON_CreateString(text);
    case CFG__ENUM: {
        int v;
        memcpy(&v, field, sizeof v);
        return cJSON_CreateString(k->names[v]);
    }
    case CFG__TRISTATE: {
        int v;
        memcpy(&v, field, sizeof v);
        return v == CFG_AUTO ? cJSON_CreateString("auto") : cJSON_CreateBool(v == CFG_ON);
    }
    }
    return NULL;
}

/* cJSON indents with tabs and writes "key":<tab>value; people read two spaces and ": ".  A tab
 * in cJSON's output is always layout (it escapes tabs inside strings), so each one is replaced:
 * after a colon by one space, elsewhere by two. */
static char *indent_with_spaces(char *text)
{
    size_t tabs = 0, len = strlen(text);
    for (size_t i = 0; i < len; i++)
        tabs += text[i] == '\t';
    char *out = malloc(len + tabs + 1);
    if (out) {
        size_t o = 0;
        for (size_t i = 0; i < len; i++) {
            if (text[i] != '\t') {
                out[o++] = text[i];
            } else if (i && text[i - 1] == ':') {
                out[o++] = ' ';
            } else {
                out[o++] = ' ';
                out[o++] = ' ';
            }
        }
        out[o] = '\0';
    }
    free(text);
    return out;
}

char *cfg_to_json(const cfg *c)
{
    cJSON *root = cJSON_CreateObject();
    if (!root) return NULL;
    cJSON *section = NULL;
    size_t section_len = 0;
    for (size_t i = 0; i < N_KEYS; i++) {
        const char *dot = strchr(keys[i].path, '.');
        size_t len = (size_t)(dot - keys[i].path);
        if (!section || len != section_len || strncmp(keys[i - 1].path, keys[i].path, len)) {
            char name[32];
            snprintf(name, sizeof name, "%.*s", (int)len, keys[i].path);
            section = cJSON_AddObjectToObject(root, name);
            section_len = len;
            if (!section) goto fail;
        }
        cJSON *v = value_json(c, &keys[i]);
        if (!v) goto fail;
        cJSON_AddItemToObject(section, dot + 1, v);
    }
    char *text = cJSON_Print(root);
    cJSON_Delete(root);
    return text ? indent_with_spaces(text) : NULL;
fail:
    cJSON_Delete(root);
    return NULL;
}

/* --- files ---------------------------------------------------------------------------------- */

int cfg_load_file(cfg *c, const char *path, char *err, size_t err_size)
{
    if (err_size) err[0] = '\0';
    FILE *f = fopen(path, "rb");
    if (!f) {
        int rc = -errno;
        snprintf(err, err_size, "%s: cannot open: %s", path, strerror(errno));
        return rc;
    }
    struct stat st;
    if (fstat(fileno(f), &st)) {
        int rc = -errno;
        snprintf(err, err_size, "%s: cannot stat: %s", path, strerror(errno));
        fclose(f);
        return rc;
    }
    if (S_ISDIR(st.st_mode)) {
        snprintf(err, err_size, "%s: is a directory: expected a JSON file", path);
        fclose(f);
        return -EISDIR;
    }
    char *buf = malloc(MAX_FILE_BYTES + 1);
    if (!buf) {
        fclose(f);
        snprintf(err, err_size, "%s: out of memory", path);
        return -ENOMEM;
    }
    size_t len = fread(buf, 1, MAX_FILE_BYTES + 1, f);
    int read_error = ferror(f);
    fclose(f);
    int rc;
    if (read_error) {
        snprintf(err, err_size, "%s: cannot read", path);
        rc = -EIO;
    } else if (len > MAX_FILE_BYTES) {
        snprintf(err, err_size, "%s: larger than %d bytes: expected a deployment config", path,
                 MAX_FILE_BYTES);
        rc = -EFBIG;
    } else {
        rc = cfg_load_string(c, buf, len, path, err, err_size);
    }
    free(buf);
    return rc;
}
