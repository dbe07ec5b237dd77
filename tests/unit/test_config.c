/*
 * config: every key from a file and from --set, every error message (key path, value and what
 * is expected), sizes and durations at their edges, the example deployments, and `config show`
 * reading back to the same config.
 *
 * Expected values are written here from the documented meaning (docs/configuration.md): "1.5GiB"
 * is 3 << 29 bytes, "2m" is 120000 ms.  The struct fields are reached through this file's own
 * offsetof table, not the module's key table, so a key wired to the wrong field fails here.
 */
#include "config/config.h"

#include <check.h>
#include <cjson/cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define ERR_SIZE 8192

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint64_t rng_next(void) /* xorshift64: the same values every run */
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

static char err[ERR_SIZE];

static void defaults(cfg *c)
{
    ck_assert_msg(cfg_defaults(c, err, sizeof err) == 0, "%s", err);
}

static int load(cfg *c, const char *json)
{
    return cfg_load_string(c, json, strlen(json), "t.json", err, sizeof err);
}

static void assert_has(const char *text, const char *part)
{
    ck_assert_msg(strstr(text, part) != NULL, "expected \"%s\" in:\n%s", part, text);
}

static void assert_all(const char *text, const char *const *parts)
{
    for (; *parts; parts++)
        assert_has(text, *parts);
}

static char *source_path(const char *rel)
{
    const char *root = getenv("MOE_SOURCE_ROOT");
    char *p = NULL;
    ck_assert(asprintf(&p, "%s/%s", root ? root : ".", rel) > 0);
    return p;
}

/* --- defaults ------------------------------------------------------------------------------ */

START_TEST(defaults_are_documented_values)
{
    cfg c;
    defaults(&c);
    ck_assert_ptr_null(c.model.path);
    ck_assert_ptr_null(c.model.name);
    ck_assert_ptr_null(c.model.chat_template);
    ck_assert_str_eq(c.server.host, "127.0.0.1");
    ck_assert_int_eq(c.server.port, 8080);
    ck_assert_uint_eq(c.server.api_keys.count, 0);
    ck_assert_uint_eq(c.server.max_header_bytes, 16 * 1024);
    ck_assert_uint_eq(c.server.max_body_bytes, 8 * 1024 * 1024);
    ck_assert_int_eq(c.server.max_connections, 1024);
    ck_assert_uint_eq(c.server.header_timeout_ms, 10000);
    ck_assert_uint_eq(c.server.idle_timeout_ms, 60000);
    ck_assert_int_eq(c.server.queue_depth, 64);
    ck_assert_int_eq(c.batching.max_running, 8);
    ck_assert_int_eq(c.batching.max_tokens_per_step, 512);
    ck_assert_int_eq(c.batching.prefill_chunk, 256);
    ck_assert_int_eq(c.kv.context_length, 0);
    ck_assert_int_eq(c.kv.budget_bytes.kind, CFG_BUDGET_AUTO);
    ck_assert_int_eq(c.cache.host_bytes.kind, CFG_BUDGET_AUTO);
    ck_assert_int_eq(c.cache.device_bytes.kind, CFG_BUDGET_AUTO);
    ck_assert_int_eq(c.cache.policy, CFG_CACHE_LRU);
    ck_assert_int_eq(c.predictor.kind, CFG_PREDICTOR_AUTO);
    ck_assert_int_eq(c.predictor.lookahead, 1);
    ck_assert_int_eq(c.io.queue_depth, 64);
    ck_assert_int_eq(c.io.direct, CFG_AUTO);
    ck_assert_int_eq(c.compute.threads, 0);
    ck_assert_int_eq(c.gpu.enabled, CFG_AUTO);
    ck_assert_int_eq(c.gpu.device, 0);
    ck_assert_int_eq(c.log.level, CFG_LOG_INFO);
    ck_assert_int_eq(c.log.format, CFG_LOG_TEXT);
    /* only model.path is missing */
    ck_assert_int_eq(cfg_validate(&c, err, sizeof err), -EINVAL);
    ck_assert_str_eq(err, "model.path: missing: expected the path of a GGUF model file (it has no "
                          "default)");
    ck_assert_int_eq(cfg_set(&c, "model.path=/models/OLMoE-1B.gguf", err, sizeof err), 0);
    ck_assert_msg(cfg_validate(&c, err, sizeof err) == 0, "%s", err);
    ck_assert_str_eq(c.model.name, "OLMoE-1B");
    cfg_free(&c);
    cfg_free(&c); /* freeing twice is harmless */
}
END_TEST

/* --- every key, from a file and from --set ---------------------------------------------------- */

typedef enum vtype { V_I32, V_U64, V_STR, V_BUDGET, V_ENUM, V_STRS } vtype;

typedef struct key_case {
    const char *path;
    const char *json; /* value as a file writes it */
    const char *text; /* value as --set writes it */
    vtype type;
    size_t off;
    int64_t i;
    uint64_t u;
    const char *s;
    cfg_budget_kind bkind;
    double pct;
} key_case;

#define F(field) offsetof(cfg, field)

static const key_case key_cases[] = {
    {"model.path", "\"/m/a b.gguf\"", "/m/a b.gguf", V_STR, F(model.path), .s = "/m/a b.gguf"},
    {"model.name", "\"team/model-7b\"", "team/model-7b", V_STR, F(model.name),
     .s = "team/model-7b"},
    {"model.chat_template", "\"chatml\"", "chatml", V_STR, F(model.chat_template), .s = "chatml"},
    {"server.host", "\"::1\"", "0.0.0.0", V_STR, F(server.host), .s = NULL},
    {"server.port", "9000", "9000", V_I32, F(server.port), .i = 9000},
    {"server.api_keys", "[\"k-1\", \"k-2\"]", "k-1, k-2", V_STRS, F(server.api_keys),
     .s = "k-1|k-2"},
    {"server.max_header_bytes", "\"32KiB\"", "32768", V_U64, F(server.max_header_bytes),
     .u = 32768},
    {"server.max_body_bytes", "1000000", "1MB", V_U64, F(server.max_body_bytes), .u = 1000000},
    {"server.max_connections", "10", "10", V_I32, F(server.max_connections), .i = 10},
    {"server.header_timeout_ms", "\"1.5s\"", "1500", V_U64, F(server.header_timeout_ms), .u = 1500},
    {"server.idle_timeout_ms", "120000", "2m", V_U64, F(server.idle_timeout_ms), .u = 120000},
    {"server.drain_timeout_ms", "\"2m\"", "120000", V_U64, F(server.drain_timeout_ms), .u = 120000},
    {"server.replica", "\"r-1\"", "r-1", V_STR, F(server.replica), .s = "r-1"},
    {"server.queue_depth", "0", "0", V_I32, F(server.queue_depth), .i = 0},
    {"batching.max_running", "4", "4", V_I32, F(batching.max_running), .i = 4},
    {"batching.max_tokens_per_step", "64", "64", V_I32, F(batching.max_tokens_per_step), .i = 64},
    {"batching.prefill_chunk", "32", "32", V_I32, F(batching.prefill_chunk), .i = 32},
    {"kv.context_length", "2048", "2048", V_I32, F(kv.context_length), .i = 2048},
    {"kv.budget_bytes", "\"2GiB\"", "2147483648", V_BUDGET, F(kv.budget_bytes), .u = 1ull << 31,
     .bkind = CFG_BUDGET_BYTES},
    {"kv.prefix_cache_bytes", "\"25%\"", "25%", V_BUDGET, F(kv.prefix_cache_bytes),
     .bkind = CFG_BUDGET_PERCENT, .pct = 25},
    {"cache.host_bytes", "\"12.5%\"", "12.5%", V_BUDGET, F(cache.host_bytes),
     .bkind = CFG_BUDGET_PERCENT, .pct = 12.5},
    {"cache.device_bytes", "0", "0B", V_BUDGET, F(cache.device_bytes), .u = 0,
     .bkind = CFG_BUDGET_BYTES},
    {"cache.policy", "\"lfu\"", "lru-protect", V_ENUM, F(cache.policy), .i = -1},
    {"kv.type", "\"f32\"", "f32", V_ENUM, F(kv.type), .i = CFG_KV_F32},
    {"kv.prefix_cache", "false", "false", V_ENUM, F(kv.prefix_cache), .i = CFG_OFF},
    {"cache.miss_policy", "\"cpu\"", "cpu", V_ENUM, F(cache.miss_policy), .i = 2},
    {"cache.host_pinning", "\"ring\"", "ring", V_ENUM, F(cache.host_pinning), .i = 2},
    {"cache.staging_bytes", "\"64MiB\"", "64MiB", V_U64, F(cache.staging_bytes), .u = 64ull << 20},
    {"cache.staging_threads", "3", "3", V_I32, F(cache.staging_threads), .i = 3},
    {"predictor.kind", "\"affinity\"", "affinity", V_ENUM, F(predictor.kind),
     .i = CFG_PREDICTOR_AFFINITY},
    {"predictor.lookahead", "3", "3", V_I32, F(predictor.lookahead), .i = 3},
    {"predictor.width", "16", "16", V_I32, F(predictor.width), .i = 16},
    {"predictor.prefetch_threshold", "40", "40", V_I32, F(predictor.prefetch_threshold), .i = 40},
    {"io.queue_depth", "8", "8", V_I32, F(io.queue_depth), .i = 8},
    {"io.direct", "false", "false", V_ENUM, F(io.direct), .i = CFG_OFF},
    {"compute.threads", "3", "3", V_I32, F(compute.threads), .i = 3},
    {"compute.graphs", "false", "false", V_ENUM, F(compute.graphs), .i = CFG_OFF},
    {"compute.backend", "\"sim\"", "sim", V_ENUM, F(compute.backend), .i = CFG_BACKEND_SIM},
    {"gpu.enabled", "true", "true", V_ENUM, F(gpu.enabled), .i = CFG_ON},
    {"gpu.device", "1", "1", V_I32, F(gpu.device), .i = 1},
    {"log.level", "\"debug\"", "debug", V_ENUM, F(log.level), .i = CFG_LOG_DEBUG},
    {"log.format", "\"json\"", "json", V_ENUM, F(log.format), .i = CFG_LOG_JSON},
};

#define N_KEY_CASES (sizeof key_cases / sizeof key_cases[0])

static void check_value(const cfg *c, const key_case *k, bool from_file)
{
    const char *field = (const char *)c + k->off;
    switch (k->type) {
    case V_I32:
        ck_assert_int_eq(*(const int32_t *)field, k->i);
        break;
    case V_U64:
        ck_assert_uint_eq(*(const uint64_t *)field, k->u);
        break;
    case V_STR: {
        const char *want = k->s ? k->s : from_file ? "::1" : "0.0.0.0";
        ck_assert_str_eq(*(char *const *)field, want);
        break;
    }
    case V_STRS: {
        const cfg_strings *s = (const cfg_strings *)field;
        ck_assert_uint_eq(s->count, 2);
        ck_assert_str_eq(s->items[0], "k-1");
        ck_assert_str_eq(s->items[1], "k-2");
        break;
    }
    case V_BUDGET: {
        const cfg_budget *b = (const cfg_budget *)field;
        ck_assert_int_eq(b->kind, k->bkind);
        if (b->kind == CFG_BUDGET_BYTES) ck_assert_uint_eq(b->bytes, k->u);
        if (b->kind == CFG_BUDGET_PERCENT) ck_assert_double_eq(b->percent, k->pct);
        break;
    }
    case V_ENUM: {
        int v;
        memcpy(&v, field, sizeof v);
        int want = (int)k->i;
        if (want == -1) want = from_file ? CFG_CACHE_LFU : CFG_CACHE_LRU_PROTECT;
        ck_assert_int_eq(v, want);
        break;
    }
    }
}

START_TEST(every_key_from_file_and_set)
{
    const key_case *k = &key_cases[_i];
    const char *dot = strchr(k->path, '.');
    char doc[512], assign[256];
    snprintf(doc, sizeof doc, "{\"%.*s\": {\"%s\": %s}}", (int)(dot - k->path), k->path, dot + 1,
             k->json);
    cfg c;
    defaults(&c);
    ck_assert_msg(load(&c, doc) == 0, "%s: %s", doc, err);
    check_value(&c, k, true);
    cfg_free(&c);

    defaults(&c);
    snprintf(assign, sizeof assign, "%s=%s", k->path, k->text);
    ck_assert_msg(cfg_set(&c, assign, err, sizeof err) == 0, "%s: %s", assign, err);
    check_value(&c, k, false);
    cfg_free(&c);
}
END_TEST

/* `config show` lists exactly the keys this file tests, so a new key cannot go untested. */
START_TEST(key_cases_cover_every_key)
{
    cfg c;
    defaults(&c);
    char *text = cfg_to_json(&c);
    ck_assert_ptr_nonnull(text);
    cJSON *root = cJSON_Parse(text);
    ck_assert_ptr_nonnull(root);
    size_t n = 0;
    for (cJSON *s = root->child; s; s = s->next)
        for (cJSON *k = s->child; k; k = k->next, n++) {
            char path[128];
            snprintf(path, sizeof path, "%s.%s", s->string, k->string);
            bool found = false;
            for (size_t i = 0; i < N_KEY_CASES; i++)
                found |= !strcmp(key_cases[i].path, path);
            ck_assert_msg(found, "key %s has no test case", path);
        }
    ck_assert_uint_eq(n, N_KEY_CASES);
    cJSON_Delete(root);
    free(text);
    cfg_free(&c);
}
END_TEST

/* --- errors ------------------------------------------------------------------------------------
 */

typedef struct error_case {
    const char *doc;    /* a JSON document, or NULL */
    const char *assign; /* a --set assignment, or NULL */
    const char *want[5];
} error_case;

static const error_case error_cases[] = {
    /* JSON types */
    {"{\"server\": {\"port\": \"8080\"}}",
     NULL,
     {"t.json: server.port: \"8080\" is a string: expected an integer from 0 to 65535"}},
    {"{\"server\": {\"host\": 5}}",
     NULL,
     {"server.host: 5 is a number: expected an IPv4 or IPv6 address such as 0.0.0.0 or ::"}},
    {"{\"server\": {\"api_keys\": \"abc\"}}",
     NULL,
     {"server.api_keys: \"abc\" is a string: expected a list"}},
    {"{\"server\": {\"api_keys\": [\"ok\", 1]}}",
     NULL,
     {"server.api_keys[1]: 1 is a number: expected a string"}},
    {"{\"model\": {\"path\": null}}",
     NULL,
     {"model.path: null is null: expected the path of a GGUF"}},
    {"{\"model\": {\"chat_template\": 1}}",
     NULL,
     {"model.chat_template: 1 is a number: expected a built-in template name", "or null"}},
    {"{\"cache\": {\"policy\": 3}}",
     NULL,
     {"cache.policy: 3 is a number: expected one of \"lru\", \"lfu\", \"lru-protect\", "
      "\"lfu-history\", \"lru-predict\""}},
    {"{\"io\": {\"direct\": 1}}",
     NULL,
     {"io.direct: 1 is a number: expected \"auto\", true or false"}},
    {"{\"kv\": {\"budget_bytes\": true}}",
     NULL,
     {"kv.budget_bytes: true is a boolean: expected \"auto\", a percentage like \"50%\", or a size "
      "of "
      "at least 1MiB"}},
    {"{\"server\": {\"idle_timeout_ms\": [1]}}",
     NULL,
     {"server.idle_timeout_ms: [1] is an array: expected a duration from 1ms to 24h"}},
    {"{\"server\": {\"max_body_bytes\": {}}}", NULL, {"server.max_body_bytes: {} is an object"}},
    /* values */
    {"{\"server\": {\"port\": 70000}}",
     NULL,
     {"server.port: 70000 is out of range: expected an integer from 0 to 65535"}},
    {NULL,
     "server.port=-1",
     {"server.port: \"-1\" is out of range: expected an integer from 0 to 65535"}},
    {NULL, "server.port=80a", {"server.port: \"80a\" is not an integer"}},
    {NULL, "server.port=", {"server.port: \"\" is not an integer"}},
    {NULL,
     "server.port=99999999999999999999",
     {"server.port: \"99999999999999999999\" is out of range"}},
    {"{\"server\": {\"port\": 80.5}}", NULL, {"server.port: 80.5 is not an integer"}},
    {"{\"server\": {\"port\": 1e999}}",
     NULL,
     {"server.port: a number beyond 1e308 is not an integer"}},
    {"{\"server\": {\"host\": \"300.1.2.3\"}}",
     NULL,
     {"server.host: \"300.1.2.3\" is not an IP address: expected an IPv4"}},
    {NULL, "server.host=bad_host!", {"server.host: \"bad_host!\" is not an IP address"}},
    {NULL, "server.host=", {"server.host: \"\" is not an IP address"}},
    {NULL, "server.host=localhost", {"server.host: \"localhost\" is not an IP address"}},
    {"{\"model\": {\"path\": \"\"}}",
     NULL,
     {"model.path: \"\" is empty: expected the path of a GGUF model file"}},
    {"{\"model\": {\"name\": \"my model\"}}",
     NULL,
     {"model.name: \"my model\" contains a space or control character: expected a model id"}},
    {NULL,
     "server.api_keys=a b",
     {"server.api_keys[0]: \"a b\" contains a character other than printable ASCII"}},
    {NULL, "server.api_keys=a,,b", {"server.api_keys: \"a,,b\" has an empty item"}},
    {NULL, "server.api_keys=[\"a\", 2]", {"server.api_keys[1]: 2 is a number: expected a string"}},
    {NULL, "server.api_keys=[\"a\"", {"server.api_keys: \"[\\\"a\\\"\" is not a JSON array"}},
    {"{\"server\": {\"max_body_bytes\": -1}}",
     NULL,
     {"server.max_body_bytes: -1 is negative: expected a size from 1KiB to 1GiB: bytes, or a "
      "string "
      "like \"16KiB\" or \"512MB\""}},
    {"{\"server\": {\"max_body_bytes\": 1.5}}",
     NULL,
     {"server.max_body_bytes: 1.5 is not an integer"}},
    {"{\"server\": {\"max_body_bytes\": 1e300}}",
     NULL,
     {"server.max_body_bytes: 1e+300 is too large for an exact JSON number"}},
    {"{\"server\": {\"max_body_bytes\": \"8GiBx\"}}",
     NULL,
     {"server.max_body_bytes: \"8GiBx\" has an unknown unit 'GiBx'",
      "expected a size from 1KiB to 1GiB"}},
    {NULL,
     "server.max_body_bytes=1.5G",
     {"server.max_body_bytes: \"1.5G\" has the ambiguous unit 'G': write GB for powers of 1000 or "
      "GiB "
      "for powers of 1024"}},
    {NULL,
     "server.max_header_bytes=2MiB",
     {"server.max_header_bytes: \"2MiB\" is out of range: expected a size from 1KiB to 1MiB"}},
    {NULL, "server.max_header_bytes=1023", {"server.max_header_bytes: \"1023\" is out of range"}},
    {NULL, "server.max_body_bytes=-5MiB", {"server.max_body_bytes: \"-5MiB\" is negative"}},
    {NULL,
     "server.max_body_bytes=99999999999999999999",
     {"server.max_body_bytes: \"99999999999999999999\" is too large"}},
    {NULL,
     "server.max_body_bytes=1.3B",
     {"server.max_body_bytes: \"1.3B\" is not a whole number of bytes"}},
    {NULL,
     "server.header_timeout_ms=0",
     {"server.header_timeout_ms: \"0\" is out of range: expected a duration from 1ms to 1h"}},
    {NULL,
     "server.header_timeout_ms=2d",
     {"server.header_timeout_ms: \"2d\" has an unknown unit 'd' (units: ms, s, m, h)"}},
    {NULL,
     "server.idle_timeout_ms=25h",
     {"server.idle_timeout_ms: \"25h\" is out of range: expected a duration from 1ms to 24h"}},
    {NULL,
     "server.idle_timeout_ms=1.5ms",
     {"server.idle_timeout_ms: \"1.5ms\" is not a whole number of milliseconds"}},
    {"{\"server\": {\"idle_timeout_ms\": -5}}", NULL, {"server.idle_timeout_ms: -5 is negative"}},
    {NULL,
     "kv.budget_bytes=1000",
     {"kv.budget_bytes: \"1000\" is out of range: expected \"auto\", a percentage like \"50%\", or "
      "a size of at least 1MiB"}},
    {NULL,
     "cache.host_bytes=0%",
     {"cache.host_bytes: \"0%\" is not a percentage above 0 and at most 100"}},
    {NULL,
     "cache.host_bytes=100.5%",
     {"cache.host_bytes: \"100.5%\" is not a percentage above 0 and at most 100"}},
    {NULL, "cache.host_bytes=-5%", {"cache.host_bytes: \"-5%\" is negative"}},
    {NULL,
     "cache.host_bytes=5.5.5%",
     {"cache.host_bytes: \"5.5.5%\" is not a percentage like \"25%\""}},
    {NULL, "cache.host_bytes=Auto", {"cache.host_bytes: \"Auto\" does not start with a number"}},
    {NULL,
     "cache.policy=LRU",
     {"cache.policy: \"LRU\" is not a known value: expected one of \"lru\", \"lfu\", "
      "\"lru-protect\", \"lfu-history\", \"lru-predict\""}},
    {NULL,
     "predictor.kind=oracle",
     {"predictor.kind: \"oracle\" is not a known value: expected one of \"none\", \"pregate\", "
      "\"affinity\", \"hybrid\", \"auto\""}},
    {NULL,
     "predictor.prefetch_threshold=101",
     {"predictor.prefetch_threshold: \"101\" is out of range: expected an integer from 0 to 100"}},
    {NULL,
     "predictor.lookahead=0",
     {"predictor.lookahead: \"0\" is out of range: expected an integer from 1 to 8"}},
    {NULL,
     "io.direct=yes",
     {"io.direct: \"yes\" is not a known value: expected \"auto\", true or false"}},
    {"{\"io\": {\"direct\": \"true\"}}", NULL, {"io.direct: \"true\" is not a known value"}},
    {NULL,
     "io.queue_depth=0",
     {"io.queue_depth: \"0\" is out of range: expected an integer from 1 to 4096"}},
    {NULL,
     "gpu.device=-2",
     {"gpu.device: \"-2\" is out of range: expected an integer from -1 to 63"}},
    {NULL, "gpu.enabled=1", {"gpu.enabled: \"1\" is not a known value"}},
    {NULL,
     "log.level=verbose",
     {"log.level: \"verbose\" is not a known value: expected one of \"error\", \"warn\", \"info\", "
      "\"debug\""}},
    {NULL,
     "log.format=xml",
     {"log.format: \"xml\" is not a known value: expected one of \"text\", \"json\""}},
    {NULL,
     "compute.threads=-1",
     {"compute.threads: \"-1\" is out of range: expected an integer from 0 to 1024"}},
    {NULL,
     "batching.max_running=0",
     {"batching.max_running: \"0\" is out of range: expected an integer from 1 to 4096"}},
    {NULL, "kv.context_length=-1", {"kv.context_length: \"-1\" is out of range"}},
    /* unknown keys */
    {"{\"server\": {\"prot\": 1}}",
     NULL,
     {"t.json: \"server.prot\": unknown key; did you mean server.port?"}},
    {"{\"sever\": {\"port\": 1}}", NULL, {"\"sever\": unknown section; did you mean server?"}},
    {"{\"Server\": {}}", NULL, {"\"Server\": unknown section; did you mean server?"}},
    {"{\"port\": 1}", NULL, {"\"port\": unknown section; did you mean server.port?"}},
    {"{\"server\": {\"threads\": 1}}",
     NULL,
     {"\"server.threads\": unknown key; did you mean compute.threads?"}},
    {"{\"cache\": {\"hostbytes\": 1}}",
     NULL,
     {"\"cache.hostbytes\": unknown key; did you mean cache.host_bytes?"}},
    {"{\"server\": {\"zzzzzzzzzzzz\": 1}}",
     NULL,
     {"\"server.zzzzzzzzzzzz\": unknown key: expected one of server.host, server.port,",
      "server.queue_depth"}},
    {"{\"zzzzzzzzzzzz\": 1}",
     NULL,
     {"\"zzzzzzzzzzzz\": unknown section: expected one of model, server, batching, kv, cache, "
      "predictor, io, compute, gpu, log"}},
    {"{\"server.port\": 1}",
     NULL,
     {"\"server.port\": unknown section: keys are nested by section: expected {\"server\": "
      "{\"port\": ...}}"}},
    {NULL, "compute.thread=2", {"\"compute.thread\": unknown key; did you mean compute.threads?"}},
    {NULL, "server=1", {"server: is a section, not a key: expected one of its keys: host, port,"}},
    {NULL, "port", {"\"port\": expected KEY=VALUE, e.g. server.port=8080"}},
    {NULL, "=5", {"\"=5\": expected KEY=VALUE"}},
    {"{\"server\": {\"po\\nrt\": 1}}",
     NULL,
     {"\"server.po\\u000art\": unknown key; did you mean server.port?"}},
    /* document shape */
    {"{\"server\": {\"port\": 1, \"port\": 2}}",
     NULL,
     {"server.port: given twice: expected each key once"}},
    {"{\"kv\": {}, \"kv\": {}}", NULL, {"kv: given twice: expected each section once"}},
    {"{\"server\": 5}",
     NULL,
     {"server: 5 is a number: expected an object with the keys host, port, api_keys"}},
    {"[1, 2]", NULL, {"(top level): [1,2] is an array: expected an object of sections"}},
    /* syntax: positions as Python's json module reports them, counted by hand here */
    {"{\n  \"server\": {\n    \"port\": 80,\n    \"host\": \"x\" \"y\"\n  }\n}",
     NULL,
     {"t.json: line 4, column 17: JSON syntax error: expected ',' or '}', at \"\\\"y\\\"\""}},
    {"{\"a\": 1,}",
     NULL,
     {"line 1, column 9: JSON syntax error: expected a property name in double quotes"}},
    {"{\"a\": [1,]}", NULL, {"line 1, column 10: JSON syntax error: expected a value, at \"]}\""}},
    {"",
     NULL,
     {"line 1, column 1: JSON syntax error: expected a value, at the end of the document"}},
    {"{\"a\": 01}", NULL, {"line 1, column 8: JSON syntax error: expected ',' or '}'"}},
    {"{\"a\": \"x\\qy\"}",
     NULL,
     {"line 1, column 9: JSON syntax error: invalid escape in a string"}},
    {"{\"a\": \"abc",
     NULL,
     {"line 1, column 7: JSON syntax error: unterminated string starting here"}},
    {"{\"\xc3\xa9\": 1 x}", NULL, {"line 1, column 9: JSON syntax error: expected ',' or '}'"}},
    {"{} x", NULL, {"line 1, column 4: JSON syntax error: extra data after the JSON value"}},
    {"{\"a\": tru}", NULL, {"line 1, column 7: JSON syntax error: expected a value"}},
    {"\n\n  [1,\n  2 3]", NULL, {"line 4, column 5: JSON syntax error: expected ',' or ']'"}},
};

#define N_ERROR_CASES (sizeof error_cases / sizeof error_cases[0])

START_TEST(error_messages)
{
    const error_case *ec = &error_cases[_i];
    cfg c;
    defaults(&c);
    ck_assert_int_eq(cfg_set(&c, "server.port=1234", err, sizeof err), 0);
    char *before = cfg_to_json(&c);
    int rc = ec->doc ? load(&c, ec->doc) : cfg_set(&c, ec->assign, err, sizeof err);
    ck_assert_msg(rc == -EINVAL, "%s: rc %d", ec->doc ? ec->doc : ec->assign, rc);
    assert_all(err, ec->want);
    ck_assert_msg(!strchr(err, '\n'), "one error, one line: %s", err);
    /* nothing was applied */
    char *after = cfg_to_json(&c);
    ck_assert_str_eq(before, after);
    free(before);
    free(after);
    cfg_free(&c);
}
END_TEST

START_TEST(load_reports_every_error_and_applies_none)
{
    cfg c;
    defaults(&c);
    const char *doc = "{\"server\": {\"port\": 9000, \"host\": 1, \"prot\": 2},"
                      " \"cache\": {\"policy\": \"mru\"}, \"kv\": {\"budget_bytes\": \"1G\"}}";
    ck_assert_int_eq(load(&c, doc), -EINVAL);
    assert_has(err, "t.json: server.host: 1 is a number");
    assert_has(err, "\nt.json: \"server.prot\": unknown key; did you mean server.port?");
    assert_has(err, "\nt.json: cache.policy: \"mru\" is not a known value");
    assert_has(err, "\nt.json: kv.budget_bytes: \"1G\" has the ambiguous unit 'G'");
    ck_assert_int_eq(c.server.port, 8080); /* the good key was not applied either */

    /* a full buffer says how many errors it left out */
    char small[200];
    ck_assert_int_eq(cfg_load_string(&c, doc, strlen(doc), "t.json", small, sizeof small), -EINVAL);
    assert_has(small, "more errors)");
    ck_assert_uint_lt(strlen(small), sizeof small);
    cfg_free(&c);
}
END_TEST

START_TEST(nul_byte_and_files)
{
    cfg c;
    defaults(&c);
    ck_assert_int_eq(cfg_load_string(&c, "{}\0{}", 5, "t.json", err, sizeof err), -EINVAL);
    ck_assert_str_eq(err, "t.json: byte 2 is a NUL: expected JSON text");
    ck_assert_int_eq(cfg_load_file(&c, "/nonexistent/x.json", err, sizeof err), -ENOENT);
    ck_assert_str_eq(err, "/nonexistent/x.json: cannot open: No such file or directory");
    ck_assert_int_eq(cfg_load_file(&c, "/", err, sizeof err), -EISDIR);
    assert_has(err, "/: is a directory");

    char path[] = "/tmp/test_config_XXXXXX";
    int fd = mkstemp(path);
    ck_assert_int_ge(fd, 0);
    FILE *f = fdopen(fd, "w");
    ck_assert_ptr_nonnull(f);
    fputs("{\"server\": {\"port\": 4321}}", f);
    ck_assert_int_eq(fclose(f), 0);
    ck_assert_msg(cfg_load_file(&c, path, err, sizeof err) == 0, "%s", err);
    ck_assert_int_eq(c.server.port, 4321);
    /* a file over 1 MiB is refused before parsing */
    f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    for (int i = 0; i < (1 << 20) + 1; i++)
        fputc(' ', f);
    ck_assert_int_eq(fclose(f), 0);
    ck_assert_int_eq(cfg_load_file(&c, path, err, sizeof err), -EFBIG);
    assert_has(err, "larger than 1048576 bytes");
    ck_assert_int_eq(unlink(path), 0);
    ck_assert_int_eq(c.server.port, 4321);
    cfg_free(&c);
}
END_TEST

START_TEST(validate_cross_key_rules)
{
    cfg c;
    defaults(&c);
    const char *sets[] = {"batching.max_running=16",  "batching.max_tokens_per_step=8",
                          "batching.prefill_chunk=9", "kv.context_length=8",
                          "gpu.enabled=true",         "gpu.device=-1"};
    for (size_t i = 0; i < sizeof sets / sizeof sets[0]; i++)
        ck_assert_msg(cfg_set(&c, sets[i], err, sizeof err) == 0, "%s", err);
    ck_assert_int_eq(cfg_validate(&c, err, sizeof err), -EINVAL);
    const char *want[] = {
        "model.path: missing",
        "\nbatching.max_tokens_per_step: 8 is less than batching.max_running (16): expected at "
        "least",
        "\nbatching.prefill_chunk: 9 is more than batching.max_tokens_per_step (8): expected at "
        "most",
        "\nkv.context_length: 8 is too short: expected 0 (the model's training context) or at "
        "least 16",
        "\ngpu.enabled: true while gpu.device is -1 (no GPU): expected a device index",
        NULL};
    assert_all(err, want);
    /* fields written by code, not by the parser, are range-checked too */
    ck_assert_int_eq(cfg_set(&c, "model.path=m.gguf", err, sizeof err), 0);
    ck_assert_int_eq(cfg_set(&c, "batching.max_tokens_per_step=16", err, sizeof err), 0);
    ck_assert_int_eq(cfg_set(&c, "kv.context_length=16", err, sizeof err), 0);
    ck_assert_int_eq(cfg_set(&c, "gpu.enabled=auto", err, sizeof err), 0);
    c.server.port = 70000;
    c.cache.host_bytes = (cfg_budget){.kind = CFG_BUDGET_PERCENT, .percent = 150};
    ck_assert_int_eq(cfg_validate(&c, err, sizeof err), -EINVAL);
    assert_has(err, "server.port: 70000 is out of range: expected an integer from 0 to 65535");
    assert_has(err, "cache.host_bytes: 150% is out of range");
    c.server.port = 65535;
    c.cache.host_bytes.percent = 100;
    ck_assert_msg(cfg_validate(&c, err, sizeof err) == 0, "%s", err);
    cfg_free(&c);
}
END_TEST

START_TEST(model_name_derivation)
{
    static const char *const cases[][2] = {
        {"/srv/models/Qwen3-30B-A3B-Q4_K_M.gguf", "Qwen3-30B-A3B-Q4_K_M"},
        {"relative/olmoe.GGUF", "olmoe"},
        {"no-extension", "no-extension"},
        {"mixtral.gguf.bak", "mixtral.gguf.bak"},
        {"/dir/.gguf", ".gguf"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        cfg c;
        defaults(&c);
        char assign[256];
        snprintf(assign, sizeof assign, "model.path=%s", cases[i][0]);
        ck_assert_int_eq(cfg_set(&c, assign, err, sizeof err), 0);
        ck_assert_msg(cfg_validate(&c, err, sizeof err) == 0, "%s", err);
        ck_assert_str_eq(c.model.name, cases[i][1]);
        cfg_free(&c);
    }
    cfg c;
    defaults(&c);
    ck_assert_int_eq(cfg_set(&c, "model.path=/a/first.gguf", err, sizeof err), 0);
    ck_assert_int_eq(cfg_validate(&c, err, sizeof err), 0);
    ck_assert_str_eq(c.model.name, "first");
    /* a derived name follows the path; an explicit one stays */
    ck_assert_int_eq(cfg_set(&c, "model.path=/a/second.gguf", err, sizeof err), 0);
    ck_assert_int_eq(cfg_validate(&c, err, sizeof err), 0);
    ck_assert_str_eq(c.model.name, "second");
    ck_assert_int_eq(cfg_set(&c, "model.name=served", err, sizeof err), 0);
    ck_assert_int_eq(cfg_set(&c, "model.path=/a/third.gguf", err, sizeof err), 0);
    ck_assert_int_eq(cfg_validate(&c, err, sizeof err), 0);
    ck_assert_str_eq(c.model.name, "served");
    /* an empty --set value clears a nullable key: the name is derived again */
    ck_assert_int_eq(cfg_set(&c, "model.name=", err, sizeof err), 0);
    ck_assert_int_eq(cfg_validate(&c, err, sizeof err), 0);
    ck_assert_str_eq(c.model.name, "third");
    ck_assert_int_eq(cfg_set(&c, "model.chat_template=chatml", err, sizeof err), 0);
    ck_assert_int_eq(load(&c, "{\"model\": {\"chat_template\": null}}"), 0);
    ck_assert_ptr_null(c.model.chat_template);
    /* a path whose file name cannot be a model id asks for model.name */
    ck_assert_int_eq(cfg_set(&c, "model.name=", err, sizeof err), 0);
    ck_assert_int_eq(cfg_set(&c, "model.path=/models/my model.gguf", err, sizeof err), 0);
    ck_assert_int_eq(cfg_validate(&c, err, sizeof err), -EINVAL);
    assert_has(err,
               "model.name: cannot be derived from model.path \"/models/my model.gguf\": expected "
               "model.name to be set");
    cfg_free(&c);
}
END_TEST

START_TEST(api_keys_forms)
{
    cfg c;
    defaults(&c);
    ck_assert_int_eq(cfg_set(&c, "server.api_keys=[\"a\", \"b\", \"c\"]", err, sizeof err), 0);
    ck_assert_uint_eq(c.server.api_keys.count, 3);
    ck_assert_str_eq(c.server.api_keys.items[2], "c");
    ck_assert_int_eq(cfg_set(&c, "server.api_keys=only", err, sizeof err), 0);
    ck_assert_uint_eq(c.server.api_keys.count, 1);
    ck_assert_str_eq(c.server.api_keys.items[0], "only");
    ck_assert_int_eq(cfg_set(&c, "server.api_keys=", err, sizeof err), 0);
    ck_assert_uint_eq(c.server.api_keys.count, 0);
    ck_assert_int_eq(cfg_set(&c, "server.api_keys=[]", err, sizeof err), 0);
    ck_assert_uint_eq(c.server.api_keys.count, 0);
    ck_assert_int_eq(load(&c, "{\"server\": {\"api_keys\": [\"x\"]}}"), 0);
    ck_assert_uint_eq(c.server.api_keys.count, 1);
    /* the value after the first '=' is the value, '=' and all */
    ck_assert_int_eq(cfg_set(&c, "server.api_keys=abc==,d=", err, sizeof err), 0);
    ck_assert_str_eq(c.server.api_keys.items[0], "abc==");
    ck_assert_str_eq(c.server.api_keys.items[1], "d=");
    cfg_free(&c);
}
END_TEST

/* --- sizes, durations, budgets ------------------------------------------------------------------
 */

typedef struct size_case {
    const char *text;
    int rc;
    uint64_t value;
    const char *why;
} size_case;

static const size_case size_cases[] = {
    {"0", 0, 0, NULL},
    {"1", 0, 1, NULL},
    {"1B", 0, 1, NULL},
    {"1KB", 0, 1000, NULL},
    {"1kb", 0, 1000, NULL},
    {"1KiB", 0, 1024, NULL},
    {"512MB", 0, 512000000, NULL},
    {"8GiB", 0, 8ull << 30, NULL},
    {"8 GiB", 0, 8ull << 30, NULL},
    {"1.5GiB", 0, 3ull << 29, NULL},
    {"1.1GB", 0, 1100000000ull, NULL},
    {"0.5KiB", 0, 512, NULL},
    {"0.001KB", 0, 1, NULL},
    {"2TB", 0, 2000000000000ull, NULL},
    {"3TiB", 0, 3ull << 40, NULL},
    {"1PB", 0, 1000000000000000ull, NULL},
    {"15.999999999PiB", -EINVAL, 0, "is not a whole number of bytes"},
    {"16383PiB", 0, 16383ull << 50, NULL},
    {"18446744073709551615", 0, UINT64_MAX, NULL},
    {"18446744073709551615B", 0, UINT64_MAX, NULL},
    {"18446744073709551616", -ERANGE, 0, "is too large"},
    {"16384PiB", -ERANGE, 0, "is too large"},
    {"17179869184GiB", -ERANGE, 0, "is too large"},
    {"16383.999999999PiB", -EINVAL, 0, "is not a whole number of bytes"},
    {"0.0001KB", -EINVAL, 0, "is not a whole number of bytes"},
    {"1.5B", -EINVAL, 0, "is not a whole number of bytes"},
    {"1.0000000001GiB", -EINVAL, 0, "has more than 9 digits after the decimal point"},
    {"1.B", -EINVAL, 0, "has no digits after the decimal point"},
    {".5KiB", -EINVAL, 0, "does not start with a number"},
    {"-1", -EINVAL, 0, "is negative"},
    {"-1GiB", -EINVAL, 0, "is negative"},
    {"+1", -EINVAL, 0, "does not start with a number"},
    {"", -EINVAL, 0, "is empty"},
    {" 8GiB", -EINVAL, 0, "does not start with a number"},
    {"8GiB ", -EINVAL, 0, "has an unknown unit 'GiB '"},
    {"8 ", -EINVAL, 0, "ends in a space"},
    {"1e3", -EINVAL, 0, "has an unknown unit 'e3'"},
    {"8GiBx", -EINVAL, 0, "has an unknown unit 'GiBx'"},
    {"8EiB", -EINVAL, 0, "has an unknown unit 'EiB'"},
    {"8Gi", -EINVAL, 0, "has an unknown unit 'Gi'"},
    {"1G", -EINVAL, 0, "has the ambiguous unit 'G': write GB for powers of 1000 or GiB"},
    {"1k", -EINVAL, 0, "has the ambiguous unit 'k': write KB for powers of 1000 or KiB"},
};

START_TEST(size_parsing)
{
    const size_case *sc = &size_cases[_i];
    uint64_t v = 12345;
    char why[256] = "";
    int rc = cfg_parse_size(sc->text, &v, why, sizeof why);
    ck_assert_msg(rc == sc->rc, "\"%s\": rc %d, want %d (%s)", sc->text, rc, sc->rc, why);
    if (!rc)
        ck_assert_msg(v == sc->value, "\"%s\": %llu, want %llu", sc->text, (unsigned long long)v,
                      (unsigned long long)sc->value);
    else
        assert_has(why, sc->why);
}
END_TEST

static const size_case duration_cases[] = {
    {"0", 0, 0, NULL},
    {"500", 0, 500, NULL},
    {"500ms", 0, 500, NULL},
    {"30s", 0, 30000, NULL},
    {"30 s", 0, 30000, NULL},
    {"1.5s", 0, 1500, NULL},
    {"0.001s", 0, 1, NULL},
    {"2m", 0, 120000, NULL},
    {"1h", 0, 3600000, NULL},
    {"0.5h", 0, 1800000, NULL},
    {"1MS", 0, 1, NULL},
    {"18446744073709551615ms", 0, UINT64_MAX, NULL},
    {"18446744073709552s", -ERANGE, 0, "is too large"},
    {"1.0005s", -EINVAL, 0, "is not a whole number of milliseconds"},
    {"0.5ms", -EINVAL, 0, "is not a whole number of milliseconds"},
    {"1d", -EINVAL, 0, "has an unknown unit 'd' (units: ms, s, m, h)"},
    {"1sec", -EINVAL, 0, "has an unknown unit 'sec'"},
    {"1m30s", -EINVAL, 0, "has an unknown unit 'm30s'"},
    {"-1s", -EINVAL, 0, "is negative"},
    {"s", -EINVAL, 0, "does not start with a number"},
    {"", -EINVAL, 0, "is empty"},
};

START_TEST(duration_parsing)
{
    const size_case *dc = &duration_cases[_i];
    uint64_t v = 12345;
    char why[256] = "";
    int rc = cfg_parse_duration_ms(dc->text, &v, why, sizeof why);
    ck_assert_msg(rc == dc->rc, "\"%s\": rc %d, want %d (%s)", dc->text, rc, dc->rc, why);
    if (!rc)
        ck_assert_uint_eq(v, dc->value);
    else
        assert_has(why, dc->why);
}
END_TEST

START_TEST(budgets)
{
    cfg_budget b;
    char why[256];
    ck_assert_int_eq(cfg_parse_budget("auto", &b, why, sizeof why), 0);
    ck_assert_int_eq(b.kind, CFG_BUDGET_AUTO);
    ck_assert_int_eq(cfg_parse_budget("all", &b, why, sizeof why), 0);
    ck_assert_int_eq(b.kind, CFG_BUDGET_AUTO);
    ck_assert_uint_eq(cfg_budget_resolve(&b, 1000, 600), 600);   /* what fits */
    ck_assert_uint_eq(cfg_budget_resolve(&b, 1000, 5000), 1000); /* what is wanted */
    ck_assert_int_eq(cfg_parse_budget("50%", &b, why, sizeof why), 0);
    ck_assert_int_eq(b.kind, CFG_BUDGET_PERCENT);
    ck_assert_uint_eq(cfg_budget_resolve(&b, 1000, 10), 500); /* a share of what is wanted */
    ck_assert_int_eq(cfg_parse_budget("100%", &b, why, sizeof why), 0);
    ck_assert_uint_eq(cfg_budget_resolve(&b, UINT64_MAX, 0), UINT64_MAX);
    ck_assert_int_eq(cfg_parse_budget("12.5%", &b, why, sizeof why), 0);
    ck_assert_uint_eq(cfg_budget_resolve(&b, 8ull << 30, 0), 1ull << 30);
    ck_assert_int_eq(cfg_parse_budget("33.3%", &b, why, sizeof why), 0);
    ck_assert_uint_eq(cfg_budget_resolve(&b, 1000000, 0), 333000);
    ck_assert_int_eq(cfg_parse_budget("4GiB", &b, why, sizeof why), 0);
    ck_assert_int_eq(b.kind, CFG_BUDGET_BYTES);
    ck_assert_uint_eq(cfg_budget_resolve(&b, 1000, 2000), 4ull << 30); /* asked for, as is */
    ck_assert_int_eq(cfg_parse_budget("0", &b, why, sizeof why), 0);
    ck_assert_uint_eq(cfg_budget_resolve(&b, 1000, 2000), 0);
    ck_assert_int_eq(cfg_parse_budget("0%", &b, why, sizeof why), -ERANGE);
    ck_assert_int_eq(cfg_parse_budget("100.000000001%", &b, why, sizeof why), -ERANGE);
    ck_assert_int_eq(cfg_parse_budget("%", &b, why, sizeof why), -EINVAL);
    ck_assert_int_eq(cfg_parse_budget("1e1%", &b, why, sizeof why), -EINVAL);
    ck_assert_int_eq(cfg_parse_budget("AUTO", &b, why, sizeof why), -EINVAL);
    ck_assert_int_eq(cfg_parse_budget("", &b, why, sizeof why), -EINVAL);
}
END_TEST

START_TEST(formats_are_shortest_and_exact)
{
    static const struct {
        uint64_t v;
        const char *size, *duration;
    } cases[] = {
        {0, "0B", "0ms"},
        {1, "1B", "1ms"},
        {1000, "1KB", "1s"},
        {1024, "1KiB", "1024ms"},
        {1500, "1500B", "1500ms"},
        {16384, "16KiB", "16384ms"},
        {60000, "60KB", "1m"},
        {90000, "90KB", "90s"},
        {3600000, "3600KB", "1h"},
        {3ull << 29, "1536MiB", "1610612736ms"},
        {1024000, "1000KiB", "1024s"},
        {UINT64_MAX, "18446744073709551615B", "18446744073709551615ms"},
    };
    char text[64];
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        cfg_format_size(cases[i].v, text, sizeof text);
        ck_assert_str_eq(text, cases[i].size);
        cfg_format_duration_ms(cases[i].v, text, sizeof text);
        ck_assert_str_eq(text, cases[i].duration);
    }
    /* any value reads back equal */
    char why[256];
    for (int i = 0; i < 20000; i++) {
        uint64_t v = rng_next() >> (rng_next() % 64);
        if (i % 3 == 0) v = (v % 4096) << (10 * (rng_next() % 6));       /* round binary sizes */
        if (i % 3 == 1) v = (v % 1000) * 1000 * (rng_next() % 3600 + 1); /* round durations */
        uint64_t back;
        cfg_format_size(v, text, sizeof text);
        ck_assert_int_eq(cfg_parse_size(text, &back, why, sizeof why), 0);
        ck_assert_uint_eq(back, v);
        cfg_format_duration_ms(v, text, sizeof text);
        ck_assert_int_eq(cfg_parse_duration_ms(text, &back, why, sizeof why), 0);
        ck_assert_uint_eq(back, v);
    }
    for (int i = 0; i < 5000; i++) {
        char pct[32];
        uint64_t whole = rng_next() % 100, frac = rng_next() % 1000000000;
        snprintf(pct, sizeof pct, "%llu.%09llu%%", (unsigned long long)whole,
                 (unsigned long long)frac);
        cfg_budget b, back;
        if (cfg_parse_budget(pct, &b, why, sizeof why)) continue; /* 0.000000000% */
        cfg_format_budget(&b, text, sizeof text);
        ck_assert_int_eq(cfg_parse_budget(text, &back, why, sizeof why), 0);
        ck_assert_int_eq(back.kind, CFG_BUDGET_PERCENT);
        ck_assert_double_eq(back.percent, b.percent);
        ck_assert_double_eq(b.percent, strtod(pct, NULL));
    }
}
END_TEST

/* --- example deployments and round trips --------------------------------------------------- */

static void load_example(cfg *c, const char *name)
{
    char rel[64];
    snprintf(rel, sizeof rel, "config/%s", name);
    char *path = source_path(rel);
    defaults(c);
    ck_assert_msg(cfg_load_file(c, path, err, sizeof err) == 0, "%s", err);
    ck_assert_msg(cfg_validate(c, err, sizeof err) == 0, "%s: %s", name, err);
    free(path);
}

START_TEST(example_cpu_only)
{
    cfg c;
    load_example(&c, "cpu-only.json");
    ck_assert_str_eq(c.model.name, "olmoe-1b-7b");
    ck_assert_str_eq(c.server.host, "0.0.0.0");
    ck_assert_uint_eq(c.server.api_keys.count, 1);
    ck_assert_uint_eq(c.server.max_body_bytes, 8ull << 20);
    ck_assert_uint_eq(c.server.idle_timeout_ms, 120000);
    ck_assert_int_eq(c.gpu.enabled, CFG_OFF);
    ck_assert_int_eq(c.predictor.kind, CFG_PREDICTOR_NONE);
    ck_assert_int_eq(c.cache.host_bytes.kind, CFG_BUDGET_AUTO);
    cfg_free(&c);
}
END_TEST

START_TEST(example_gpu_tiers)
{
    cfg c;
    load_example(&c, "gpu-tiers.json");
    ck_assert_str_eq(c.model.name, "Qwen3-30B-A3B-Q4_K_M"); /* derived */
    ck_assert_str_eq(c.model.chat_template, "chatml");
    ck_assert_str_eq(c.server.host, "::");
    ck_assert_uint_eq(c.server.api_keys.count, 2);
    ck_assert_int_eq(c.gpu.enabled, CFG_ON);
    ck_assert_int_eq(c.gpu.device, 0);
    ck_assert_int_eq(c.cache.device_bytes.kind, CFG_BUDGET_BYTES);
    ck_assert_uint_eq(c.cache.device_bytes.bytes, 60ull << 30);
    ck_assert_int_eq(c.cache.host_bytes.kind, CFG_BUDGET_PERCENT);
    ck_assert_double_eq(c.cache.host_bytes.percent, 75);
    ck_assert_int_eq(c.cache.policy, CFG_CACHE_LRU_PROTECT);
    ck_assert_int_eq(c.io.direct, CFG_ON);
    ck_assert_uint_eq(c.kv.budget_bytes.bytes, 12ull << 30);
    ck_assert_uint_eq(c.server.idle_timeout_ms, 90000);
    cfg_free(&c);
}
END_TEST

START_TEST(example_small_ram)
{
    cfg c;
    load_example(&c, "small-ram.json");
    ck_assert_uint_eq(c.cache.host_bytes.bytes, 6ull << 30);
    ck_assert_int_eq(c.cache.device_bytes.kind, CFG_BUDGET_BYTES);
    ck_assert_uint_eq(c.cache.device_bytes.bytes, 0);
    ck_assert_int_eq(c.cache.policy, CFG_CACHE_LFU);
    ck_assert_int_eq(c.predictor.kind, CFG_PREDICTOR_AFFINITY);
    ck_assert_int_eq(c.gpu.device, -1);
    ck_assert_int_eq(c.batching.max_running, 2);
    ck_assert_int_eq(c.log.level, CFG_LOG_WARN);
    ck_assert_int_eq(c.log.format, CFG_LOG_JSON);
    cfg_free(&c);
}
END_TEST

static void assert_same(const cfg *a, const cfg *b)
{
    for (size_t i = 0; i < N_KEY_CASES; i++) {
        const key_case *k = &key_cases[i];
        const char *fa = (const char *)a + k->off, *fb = (const char *)b + k->off;
        switch (k->type) {
        case V_STR: {
            const char *sa = *(char *const *)fa, *sb = *(char *const *)fb;
            ck_assert_msg((!sa && !sb) || (sa && sb && !strcmp(sa, sb)), "%s differs", k->path);
            break;
        }
        case V_STRS: {
            const cfg_strings *sa = (const cfg_strings *)fa, *sb = (const cfg_strings *)fb;
            ck_assert_uint_eq(sa->count, sb->count);
            for (size_t j = 0; j < sa->count; j++)
                ck_assert_str_eq(sa->items[j], sb->items[j]);
            break;
        }
        case V_BUDGET: {
            const cfg_budget *ba = (const cfg_budget *)fa, *bb = (const cfg_budget *)fb;
            ck_assert_msg(ba->kind == bb->kind && ba->bytes == bb->bytes &&
                              ba->percent == bb->percent,
                          "%s differs", k->path);
            break;
        }
        case V_I32:
        case V_ENUM:
            ck_assert_msg(!memcmp(fa, fb, 4), "%s differs", k->path);
            break;
        case V_U64:
            ck_assert_msg(!memcmp(fa, fb, 8), "%s differs", k->path);
            break;
        }
    }
}

static void round_trip(cfg *c)
{
    ck_assert_msg(cfg_validate(c, err, sizeof err) == 0, "%s", err);
    char *text = cfg_to_json(c);
    ck_assert_ptr_nonnull(text);
    cfg back;
    defaults(&back);
    ck_assert_msg(load(&back, text) == 0, "%s\n%s", err, text);
    ck_assert_msg(cfg_validate(&back, err, sizeof err) == 0, "%s", err);
    assert_same(c, &back);
    char *again = cfg_to_json(&back);
    ck_assert_str_eq(text, again);
    free(text);
    free(again);
    cfg_free(&back);
}

START_TEST(show_round_trips)
{
    static const char *const examples[] = {"cpu-only.json", "gpu-tiers.json", "small-ram.json"};
    for (size_t i = 0; i < 3; i++) {
        cfg c;
        load_example(&c, examples[i]);
        round_trip(&c);
        cfg_free(&c);
    }
    /* every key away from its default, through --set */
    cfg c;
    defaults(&c);
    for (size_t i = 0; i < N_KEY_CASES; i++) {
        char assign[256];
        snprintf(assign, sizeof assign, "%s=%s", key_cases[i].path, key_cases[i].text);
        ck_assert_msg(cfg_set(&c, assign, err, sizeof err) == 0, "%s", err);
    }
    ck_assert_int_eq(cfg_set(&c, "gpu.device=0", err, sizeof err), 0);
    round_trip(&c);
    /* odd values: a path with quotes and non-ASCII, sizes with no round unit, a tiny percentage */
    ck_assert_int_eq(cfg_set(&c, "model.path=/m/\"q\" \xc3\xa9\\.gguf", err, sizeof err), 0);
    ck_assert_int_eq(cfg_set(&c, "server.max_body_bytes=1234567", err, sizeof err), 0);
    ck_assert_int_eq(cfg_set(&c, "server.idle_timeout_ms=86399999", err, sizeof err), 0);
    ck_assert_int_eq(cfg_set(&c, "cache.host_bytes=0.000000001%", err, sizeof err), 0);
    ck_assert_int_eq(cfg_set(&c, "cache.device_bytes=18446744073709551615", err, sizeof err),
                     -EINVAL);
    ck_assert_int_eq(cfg_set(&c, "cache.device_bytes=8EB", err, sizeof err), -EINVAL);
    ck_assert_int_eq(cfg_set(&c, "cache.device_bytes=8191PiB", err, sizeof err), 0);
    round_trip(&c);
    /* and the defaults */
    cfg_free(&c);
    defaults(&c);
    ck_assert_int_eq(cfg_set(&c, "model.path=x.gguf", err, sizeof err), 0);
    round_trip(&c);
    cfg_free(&c);
}
END_TEST

START_TEST(copy_is_deep)
{
    cfg a, b;
    load_example(&a, "gpu-tiers.json");
    ck_assert_int_eq(cfg_copy(&b, &a), 0);
    assert_same(&a, &b);
    ck_assert_ptr_ne(a.model.path, b.model.path);
    ck_assert_ptr_ne(a.server.api_keys.items, b.server.api_keys.items);
    ck_assert_ptr_ne(a.server.api_keys.items[0], b.server.api_keys.items[0]);
    cfg_free(&a);
    ck_assert_str_eq(b.server.api_keys.items[1], "sk-team-b-replace-me");
    cfg_free(&b);
}
END_TEST

START_TEST(enum_names)
{
    ck_assert_str_eq(cfg_cache_policy_name(CFG_CACHE_LRU_PROTECT), "lru-protect");
    ck_assert_str_eq(cfg_cache_policy_name(CFG_CACHE_LFU_HISTORY), "lfu-history");
    ck_assert_str_eq(cfg_cache_policy_name(CFG_CACHE_LRU_PREDICT), "lru-predict");
    ck_assert_str_eq(cfg_predictor_kind_name(CFG_PREDICTOR_HYBRID), "hybrid");
    ck_assert_str_eq(cfg_predictor_kind_name(CFG_PREDICTOR_PREGATE), "pregate");
    ck_assert_str_eq(cfg_log_level_name(CFG_LOG_WARN), "warn");
    ck_assert_str_eq(cfg_log_format_name(CFG_LOG_JSON), "json");
    ck_assert_str_eq(cfg_log_level_name((cfg_log_level)9), "?");
}
END_TEST

int main(void)
{
    Suite *s = suite_create("config");
    TCase *tc = tcase_create("config");
    tcase_add_test(tc, defaults_are_documented_values);
    tcase_add_loop_test(tc, every_key_from_file_and_set, 0, N_KEY_CASES);
    tcase_add_test(tc, key_cases_cover_every_key);
    tcase_add_loop_test(tc, error_messages, 0, N_ERROR_CASES);
    tcase_add_test(tc, load_reports_every_error_and_applies_none);
    tcase_add_test(tc, nul_byte_and_files);
    tcase_add_test(tc, validate_cross_key_rules);
    tcase_add_test(tc, model_name_derivation);
    tcase_add_test(tc, api_keys_forms);
    tcase_add_loop_test(tc, size_parsing, 0, sizeof size_cases / sizeof size_cases[0]);
    tcase_add_loop_test(tc, duration_parsing, 0, sizeof duration_cases / sizeof duration_cases[0]);
    tcase_add_test(tc, budgets);
    tcase_add_test(tc, formats_are_shortest_and_exact);
    tcase_add_test(tc, example_cpu_only);
    tcase_add_test(tc, example_gpu_tiers);
    tcase_add_test(tc, example_small_ram);
    tcase_add_test(tc, show_round_trips);
    tcase_add_test(tc, copy_is_deep);
    tcase_add_test(tc, enum_names);
    suite_add_tcase(s, tc);
    SRunner *r = srunner_create(s);
    srunner_run_all(r, CK_NORMAL);
    int failed = srunner_ntests_failed(r);
    srunner_free(r);
    return failed ? 1 : 0;
}
