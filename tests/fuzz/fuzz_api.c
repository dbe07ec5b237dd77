/*
 * fuzz_api — arbitrary bytes as the JSON body of POST /v1/chat/completions (first byte even)
 * or POST /v1/completions (odd), through srv__parse_request, the validator the server runs on
 * every generation request, and then what the server and the engine do next with its result:
 * an error becomes an OpenAI error body, an accepted json_schema is compiled (engine.c does so
 * at submit).
 *
 * Checked on the way: a refused request names a 4xx status and its error body is valid JSON in
 * valid UTF-8; an accepted one satisfies what srv_gen_request_t documents (ranges, at least one
 * message, every string present, at most 4 non-empty stop strings).
 */
#include "base/utf8.h"
#include "fuzz.h"
#include "sampling/json_schema.h"
#include "server/server_internal.h"

#include <string.h>

#define MAX_N 4

static void check_error(const srv_api_err *e)
{
    FUZZ_CHECK(e->status >= 400 && e->status < 500);
    size_t len = 0;
    char *body = srv__err_json(e, &len);
    if (!body) return; /* out of memory */
    FUZZ_CHECK(utf8_valid_prefix(body, len) == len);
    cJSON *back = cJSON_ParseWithLength(body, len);
    FUZZ_CHECK(cJSON_IsObject(cJSON_GetObjectItemCaseSensitive(back, "error")));
    cJSON_Delete(back);
    free(body);
}

static void check_request(const srv_gen_request_t *r, srv_kind_t kind)
{
    FUZZ_CHECK(r->kind == kind);
    if (kind == SRV_KIND_CHAT) {
        FUZZ_CHECK(r->n_messages >= 1 && r->messages);
        for (size_t i = 0; i < r->n_messages; i++) {
            FUZZ_CHECK(r->messages[i].content != NULL);
            FUZZ_CHECK(r->messages[i].role <= SRV_ROLE_TOOL);
        }
    } else {
        FUZZ_CHECK(r->prompt && strlen(r->prompt) <= r->prompt_len);
    }
    FUZZ_CHECK(r->n >= 1 && r->n <= MAX_N);
    FUZZ_CHECK(r->max_tokens == -1 || r->max_tokens >= 1);
    FUZZ_CHECK(r->temperature >= 0 && r->temperature <= 2);
    FUZZ_CHECK(r->top_p >= 0 && r->top_p <= 1);
    FUZZ_CHECK(r->min_p >= 0 && r->min_p <= 1);
    FUZZ_CHECK(r->repetition_penalty > 0);
    FUZZ_CHECK(r->presence_penalty >= -2 && r->presence_penalty <= 2);
    FUZZ_CHECK(r->frequency_penalty >= -2 && r->frequency_penalty <= 2);
    FUZZ_CHECK(r->n_stop <= 4);
    for (size_t i = 0; i < r->n_stop; i++)
        FUZZ_CHECK(r->stop[i] && r->stop[i][0]);
    for (size_t i = 0; i < r->n_logit_bias; i++)
        FUZZ_CHECK(r->logit_bias[i].bias >= -100 && r->logit_bias[i].bias <= 100);
}

static void compile_schema(const cJSON *json)
{
    schema *s = NULL;
    char err[256];
    if (schema_compile(&s, json, err, sizeof err) != 0) {
        FUZZ_CHECK(s == NULL);
        return;
    }
    schema_guide g;
    schema_guide_init(&g, s);
    char closing[4096];
    int n = schema_guide_closing(&g, closing, sizeof closing);
    if (n >= 0) {
        FUZZ_CHECK(schema_guide_feed(&g, closing, (size_t)n));
        FUZZ_CHECK(schema_guide_done(&g));
    }
    schema_free(&s);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    srv_kind_t kind = data[0] & 1 ? SRV_KIND_COMPLETION : SRV_KIND_CHAT;
    srv_call *call = calloc(1, sizeof *call);
    if (!call) return 0;
    srv_api_err e = {0};
    int rc = srv__parse_request(call, (const char *)data + 1, size - 1, kind, "default", MAX_N, &e);
    if (rc != 0) {
        FUZZ_CHECK(rc < 0);
        check_error(&e);
    } else {
        check_request(&call->req, kind);
        if (call->req.json_schema) compile_schema(call->req.json_schema);
    }
    cJSON_Delete(call->root);
    arena_release(&call->arena);
    free(call);
    return 0;
}
