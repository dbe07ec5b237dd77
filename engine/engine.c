/*
 * The model engine behind the HTTP front end.
 *
 * A job's life: submit() on the loop thread turns the request into prompt ids and a sampler
 * and queues it in the scheduler; from then on only the engine thread touches the job's state
 * (sample → emit → ... → done), posting text and one terminal event through the server's
 * thread-safe job calls.  The job's engine data holds just the scheduler id, not a pointer to
 * the state: a cancel from the loop thread may race with the sequence ending on the engine
 * thread, and a stale id is harmless where a stale pointer is not.
 */
#include "engine/engine.h"

#include "engine/prompt.h"
#include "engine/toolcall.h"

#include "base/vec.h"
#include "sampling/json_guide.h"
#include "sampling/json_schema.h"
#include "sampling/sampler.h"
#include "sampling/stop.h"
#include "server/metrics.h"

#include <cjson/cJSON.h>
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct engine {
    atomic_bool ready;
    model *m;
    const tokenizer *tok;
    const chat_template *tmpl;
    tool_format tool_fmt; /* how the template's model writes tool calls */
    scheduler *sched;
    int32_t n_vocab;
    /* constrained decoding: masks built and the time they took (engine thread writes, the
     * metrics reader on the loop thread reads) */
    atomic_uint_fast64_t masks, mask_ns;
};

typedef struct job_state {
    engine *e;
    srv_job_t *job;
    sampler *smp;
    stop_matcher *stops;
    bool stopped; /* a stop string matched: nothing more is posted */
    tokenizer_stream stream;
    sampler_result res;
    bool want_logprobs;
    bool all_banned;
    int64_t n_prompt;
    int64_t n_generated;
    /* response_format json_object (guide) or json_schema (sch, sguide): the guide over the text
     * so far, the step's masked logits */
    bool json;
    json_guide guide;
    schema *sch;
    schema_guide *sguide;
    float *masked;
    int64_t max_tokens;
    /* tools: the parser that splits the output into content and calls; with tool_choice
     * required or a named function, the guide (tguide, tried on tscratch) that forces calls */
    tool_parser *tparser;
    tool_spec *tspec;
    tool_guide *tguide, *tscratch;
    int tool_min_call; /* bytes of the shortest call: another one needs at least that many tokens */
} job_state;

int engine_open(engine **out, char *err, size_t err_size)
{
    *out = calloc(1, sizeof **out);
    if (!*out) {
        snprintf(err, err_size, "out of memory");
        return -ENOMEM;
    }
    atomic_init(&(*out)->ready, false);
    atomic_init(&(*out)->masks, 0);
    atomic_init(&(*out)->mask_ns, 0);
    return 0;
}

int engine_start(engine *e, model *m, const tokenizer *tok, const chat_template *tmpl,
                 const scheduler_opts *sched_opts, char *err, size_t err_size)
{
    if (tokenizer_n_vocab(tok) > model_params(m)->n_vocab) {
        snprintf(err, err_size, "the tokenizer has %d tokens but the model only %d logits",
                 tokenizer_n_vocab(tok), model_params(m)->n_vocab);
        return -EINVAL;
    }
    int rc = scheduler_open(&e->sched, m, sched_opts, err, err_size);
    if (rc) return rc;
    e->m = m;
    e->tok = tok;
    e->tmpl = tmpl;
    e->tool_fmt = tool_format_detect(chat_template_source(tmpl));
    e->n_vocab = model_params(m)->n_vocab;
    atomic_store(&e->ready, true);
    return 0;
}

void engine_close(engine **ep)
{
    engine *e = *ep;
    if (!e) return;
    *ep = NULL;
    scheduler_close(&e->sched);
    free(e);
}

scheduler *engine_scheduler(engine *e)
{
    return atomic_load(&e->ready) ? e->sched : NULL;
}

static void job_state_free(job_state *st)
{
    if (!st) return;
    sampler_destroy(&st->smp);
    stop_matcher_destroy(&st->stops);
    tokenizer_stream_release(&st->stream);
    free(st->masked);
    free(st->sguide);
    schema_free(&st->sch);
    tool_parser_destroy(&st->tparser);
    free(st->tguide);
    free(st->tscratch);
    tool_spec_destroy(&st->tspec);
    free(st);
}

/* ---- engine thread ------------------------------------------------------------------------ */

static bool guide_done(const job_state *st)
{
    if (st->tguide) return tool_guide_done(st->tguide);
    return st->sch ? schema_guide_done(st->sguide) : json_guide_done(&st->guide);
}

/* Whether bytes would keep the text acceptable (on a copy of the guide). */
/* Whether bytes would keep the text acceptable (on a copy of the guide), and, when budget >= 0,
 * leave a completion of at most budget bytes. */
static bool guide_accepts(const job_state *st, const char *bytes, size_t len, int budget)
{
    char closing[4096];
    int n = 0;
    if (st->tguide) {
        tool_guide_copy(st->tscratch, st->tguide);
        if (!tool_guide_feed(st->tscratch, bytes, len)) return false;
        if (budget >= 0) n = tool_guide_closing(st->tscratch, closing, sizeof closing);
    } else if (st->sch) {
        schema_guide g;
        schema_guide_copy(&g, st->sguide);
        if (!schema_guide_feed(&g, bytes, len)) return false;
        if (budget >= 0) n = schema_guide_closing(&g, closing, sizeof closing);
    } else {
        json_guide g = st->guide;
        if (!json_guide_feed(&g, bytes, len)) return false;
        if (budget >= 0) n = json_guide_closing(&g, closing, sizeof closing);
    }
    return budget < 0 || (n >= 0 && n <= budget);
}

/* Whether token may come next under response_format json_object / json_schema: its bytes keep
 * the text a prefix of an accepted value (the end of generation only once it is complete), and
 * when max_tokens is about to run out, they are the start of the value's shortest completion. */
static bool json_allows(const job_state *st, int32_t token, const char *closing, int n_closing,
                        bool closing_mode, int budget)
{
    const tokenizer *tok = st->e->tok;
    if (tokenizer_is_eog(tok, token)) return guide_done(st);
    if (guide_done(st) && !(st->tguide && tool_guide_may_continue(st->tguide))) return false;
    tokenizer_token_type type = tokenizer_token_type_of(tok, token);
    size_t len = 0;
    const char *piece = tokenizer_piece(tok, token, &len);
    if (!piece || len == 0) return false;
    /* what the output's decoding skips (control, unknown) would not reach the text the guide
     * follows, but for the markers of the tool-call format, which the parser reads */
    if ((type == TOKENIZER_TT_CONTROL &&
         !(st->tguide && tool_marker_token(st->e->tool_fmt, piece, len))) ||
        type == TOKENIZER_TT_UNKNOWN || type == TOKENIZER_TT_UNUSED)
        return false;
    if (closing_mode) return len <= (size_t)n_closing && !memcmp(piece, closing, len);
    return guide_accepts(st, piece, len, budget);
}

/* The logits with every token the JSON guide refuses at -inf (into st->masked). */
static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static const float *build_mask(job_state *st, const float *logits);

/* The masked logits, timed: the mask is work the decode step waits for. */
static const float *json_mask(job_state *st, const float *logits)
{
    uint64_t t0 = now_ns();
    const float *out = build_mask(st, logits);
    atomic_fetch_add(&st->e->mask_ns, now_ns() - t0);
    atomic_fetch_add(&st->e->masks, 1);
    return out;
}

static const float *build_mask(job_state *st, const float *logits)
{
    int32_t n = st->e->n_vocab;
    /* forced calls: another one only while max_tokens leaves room to finish it (a token per
     * byte at worst) */
    if (st->tguide && st->max_tokens - st->n_generated <= (int64_t)st->tool_min_call + 1)
        tool_guide_last_call(st->tguide);
    char closing[4096];
    int n_closing = st->tguide ? tool_guide_closing(st->tguide, closing, sizeof closing)
                    : st->sch  ? schema_guide_closing(st->sguide, closing, sizeof closing)
                               : json_guide_closing(&st->guide, closing, sizeof closing);
    /* one token per byte of the completion at worst, and one for the end */
    int64_t left = st->max_tokens - st->n_generated;
    bool closing_mode = n_closing >= 0 && left <= n_closing + 1;
    /* Close to the end, a token may not leave more to close than the tokens after it can write
     * (one byte each at worst, and one for the end): a token that opens a string, a container
     * or a multi-byte character adds to what must follow. */
    int budget = n_closing >= 0 && left <= n_closing + 16 ? (int)(left - 2) : -1;
    bool any = false;
    int32_t longest = -1;
    size_t longest_len = 0;
    for (int32_t t = 0; t < n; t++) {
        bool ok = json_allows(st, t, closing, n_closing, closing_mode, budget);
        st->masked[t] = ok ? logits[t] : -INFINITY;
        any |= ok;
        size_t len = 0;
        if (ok && closing_mode && !tokenizer_is_eog(st->e->tok, t) &&
            tokenizer_piece(st->e->tok, t, &len) && len > longest_len) {
            longest = t;
            longest_len = len;
        }
    }
    /* Running out of tokens: the completion in as few tokens as the vocabulary allows. */
    if (longest >= 0)
        for (int32_t t = 0; t < n; t++)
            if (t != longest) st->masked[t] = -INFINITY;
    if (!any) /* no token continues the object: end here rather than write nonsense */
        for (int32_t t = 0; t < n; t++)
            if (tokenizer_is_eog(st->e->tok, t)) st->masked[t] = logits[t];
    return st->masked;
}

static int32_t engine_sample(void *user, const float *logits)
{
    job_state *st = user;
    if (st->json) logits = json_mask(st, logits);
    int32_t token = sampler_sample(st->smp, logits, st->want_logprobs ? &st->res : NULL);
    if (token < 0) { /* every token banned by logit_bias */
        st->all_banned = true;
        return 0;
    }
    return token;
}

/* One token's bytes for the logprobs arrays (may be part of a character); the piece as the
 * token stands in text, leading space included (decode would drop a SentencePiece token's). */
static char *token_bytes(const tokenizer *tok, int32_t id, size_t *len)
{
    const char *piece = tokenizer_piece(tok, id, len);
    char *text = piece ? malloc(*len + 1) : NULL;
    if (!text) {
        *len = 0;
        return NULL;
    }
    memcpy(text, piece, *len);
    text[*len] = 0;
    return text;
}

static void post_with_logprobs(job_state *st, int32_t token, const char *text, size_t len)
{
    const tokenizer *tok = st->e->tok;
    srv_token_logprob_t top[SAMPLER_MAX_TOP_LOGPROBS];
    char *owned[SAMPLER_MAX_TOP_LOGPROBS + 1] = {0};
    size_t chosen_len = 0;
    owned[0] = token_bytes(tok, token, &chosen_len);
    int n_top = st->res.n_top;
    for (int i = 0; i < n_top; i++) {
        size_t l = 0;
        owned[i + 1] = token_bytes(tok, st->res.top[i].token, &l);
        top[i] = (srv_token_logprob_t){owned[i + 1] ? owned[i + 1] : "", l, st->res.top[i].logprob};
    }
    srv_logprobs_t lp = {
        .chosen = {owned[0] ? owned[0] : "", chosen_len, st->res.logprob},
        .top = top,
        .n_top = (size_t)n_top,
    };
    srv_job_post_text(st->job, text, len, &lp);
    for (int i = 0; i <= n_top; i++)
        free(owned[i]);
}

/* Tool-call parser output: content as text, calls as the server's tool-call events. */
static void tool_content(void *user, const char *text, size_t len)
{
    job_state *st = user;
    srv_job_post_text(st->job, text, len, NULL);
}

static void tool_begin(void *user, int index, const char *name)
{
    job_state *st = user;
    srv_job_post_tool_call(st->job, name, NULL, 0);
}

static void tool_args(void *user, int index, const char *text, size_t len)
{
    job_state *st = user;
    srv_job_post_tool_call(st->job, NULL, text, len);
}

/* Output text: through the tool-call parser when the request has tools. */
static void out_text(job_state *st, const char *text, size_t len)
{
    if (!len) return;
    if (!st->tparser) {
        srv_job_post_text(st->job, text, len, NULL);
        return;
    }
    tool_sink sink = {st, tool_content, tool_begin, tool_args};
    (void)tool_parser_feed(st->tparser, text, len, &sink); /* -ENOMEM: that text is lost */
}

static bool engine_emit(void *user, int32_t token)
{
    job_state *st = user;
    if (st->all_banned) return true;
    st->n_generated++;
    sampler_accept(st->smp, token);
    if (tokenizer_is_eog(st->e->tok, token)) return true;
    size_t plen = 0;
    const char *piece = tokenizer_piece(st->e->tok, token, &plen);
    if (st->json && piece) { /* the mask let it through */
        if (st->tguide)
            (void)tool_guide_feed(st->tguide, piece, plen);
        else if (st->sch)
            (void)schema_guide_feed(st->sguide, piece, plen);
        else
            (void)json_guide_feed(&st->guide, piece, plen);
    }
    const char *text = NULL;
    size_t len = 0;
    if (st->tparser && piece &&
        tokenizer_token_type_of(st->e->tok, token) == TOKENIZER_TT_CONTROL &&
        tool_marker_token(st->e->tool_fmt, piece, plen)) {
        /* a special token of the call format: decoding would skip it, the parser needs it */
        text = piece;
        len = plen;
    } else if (tokenizer_stream_feed(&st->stream, token, &text, &len)) {
        len = 0;
    }
    /* Stop strings see the text as it is decoded; what they hold back (a possible start of a
     * stop string) is released with a later token or at the end. */
    stop_output so = {text, len, false};
    if (stop_matcher_feed(st->stops, text, len, &so)) so = (stop_output){text, len, false};
    if (st->tparser) {
        out_text(st, so.text, so.len);
        if (st->want_logprobs) post_with_logprobs(st, token, "", 0);
    } else if (st->want_logprobs) {
        post_with_logprobs(st, token, so.text, so.len);
    } else if (so.len) {
        srv_job_post_text(st->job, so.text, so.len, NULL);
    }
    if (so.stopped) st->stopped = true;
    /* a closed JSON object (or the last forced call) is the whole answer: end as the
     * end-of-generation token would */
    bool complete =
        st->json && guide_done(st) && !(st->tguide && tool_guide_may_continue(st->tguide));
    return so.stopped || complete || srv_job_cancelled(st->job);
}

static void engine_done(void *user, scheduler_end why, const char *message)
{
    job_state *st = user;
    const char *text = NULL;
    size_t len = 0;
    stop_output so;
    if (!st->stopped && tokenizer_stream_flush(&st->stream, &text, &len) == 0 && len &&
        stop_matcher_feed(st->stops, text, len, &so) == 0) {
        out_text(st, so.text, so.len);
        st->stopped = so.stopped;
    }
    if (!st->stopped) {
        stop_matcher_flush(st->stops, &so);
        out_text(st, so.text, so.len);
    }
    if (st->tparser && why != SCHEDULER_ERROR) {
        tool_sink sink = {st, tool_content, tool_begin, tool_args};
        (void)tool_parser_finish(st->tparser, &sink);
    }
    if (st->all_banned)
        srv_job_post_error(st->job, 400, "logit_bias bans every token of the vocabulary");
    else if (why == SCHEDULER_ERROR)
        srv_job_post_error(st->job, 500, message);
    else
        srv_job_post_finish(st->job, why == SCHEDULER_LENGTH ? SRV_FINISH_LENGTH : SRV_FINISH_STOP,
                            st->n_prompt, st->n_generated);
    job_state_free(st);
}

static void engine_admitted(void *user, int32_t n_cached)
{
    job_state *st = user;
    srv_job_post_admitted(st->job, n_cached);
}

static const scheduler_seq_ops engine_seq_ops = {engine_sample, engine_emit, engine_done,
                                                 engine_admitted};

/* ---- loop thread ---------------------------------------------------------------------------- */

typedef struct text_buf {
    char *data;
    size_t len, cap;
} text_buf;

static int tb_adds(text_buf *t, const char *str)
{
    size_t n = strlen(str);
    if (vec_reserve(&t->data, &t->cap, t->len + n + 1, 1, 256) < 0) return -ENOMEM;
    memcpy(t->data + t->len, str, n + 1);
    t->len += n;
    return 0;
}

static const char *role_name(srv_role_t role)
{
    switch (role) {
    case SRV_ROLE_SYSTEM:
        return "system";
    case SRV_ROLE_USER:
        return "user";
    case SRV_ROLE_ASSISTANT:
        return "assistant";
    /* OpenAI's developer messages replace system messages; templates only know the latter. */
    case SRV_ROLE_DEVELOPER:
        return "system";
    case SRV_ROLE_TOOL:
        return "tool";
    }
    return "user";
}

/* A call's arguments as templates expect them: the parsed object (Llama 3's and Mistral's
 * templates write it with tojson, as transformers users pass dicts), the string when it is not
 * JSON. */
static cJSON *call_arguments(const char *args)
{
    cJSON *v = cJSON_Parse(args);
    if (v) return v;
    return cJSON_CreateString(args);
}

/* Mistral's templates accept only 9-character alphanumeric call ids (its own tools make them):
 * any other id is mapped to one, the same for a call and the result that answers it. */
static const char *template_call_id(tool_format f, const char *id, char out[10])
{
    size_t n = strlen(id), alnum = 0;
    for (size_t i = 0; i < n; i++)
        alnum += isalnum((unsigned char)id[i]) != 0;
    if (f != TOOL_FORMAT_MISTRAL || (n == 9 && alnum == 9)) return id;
    uint64_t h = 0xcbf29ce484222325ull; /* FNV-1a */
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)id[i]) * 0x100000001b3ull;
    static const char digits[] = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
    for (int i = 0; i < 9; i++, h /= 62)
        out[i] = digits[h % 62];
    out[9] = 0;
    return out;
}

/* An assistant message's tool_calls for the template: {id, type, function {name, arguments}}. */
static cJSON *template_tool_calls(tool_format fmt, const cJSON *calls)
{
    cJSON *out = cJSON_CreateArray();
    const cJSON *c;
    cJSON_ArrayForEach(c, calls)
    {
        const cJSON *fn = cJSON_GetObjectItemCaseSensitive(c, "function");
        const cJSON *id = cJSON_GetObjectItemCaseSensitive(c, "id");
        cJSON *o = cJSON_CreateObject();
        cJSON *f = o ? cJSON_CreateObject() : NULL;
        cJSON *args =
            f ? call_arguments(cJSON_GetObjectItemCaseSensitive(fn, "arguments")->valuestring)
              : NULL;
        char id9[10];
        if (!out || !args || !cJSON_AddItemToArray(out, o) ||
            (cJSON_IsString(id) &&
             !cJSON_AddStringToObject(o, "id", template_call_id(fmt, id->valuestring, id9))) ||
            !cJSON_AddStringToObject(o, "type", "function") ||
            !cJSON_AddItemToObject(o, "function", f) ||
            !cJSON_AddStringToObject(f, "name",
                                     cJSON_GetObjectItemCaseSensitive(fn, "name")->valuestring) ||
            !cJSON_AddItemToObject(f, "arguments", args)) {
            if (!cJSON_GetObjectItemCaseSensitive(f, "arguments")) cJSON_Delete(args);
            if (!cJSON_GetObjectItemCaseSensitive(o, "function")) cJSON_Delete(f);
            if (cJSON_GetArrayItem(out, cJSON_GetArraySize(out) - 1) != o) cJSON_Delete(o);
            cJSON_Delete(out);
            return NULL;
        }
    }
    return out;
}

/* A message as a GENERIC template sees it: calls written out in the Hermes form after the
 * content, tool results as a user turn in <tool_response> (the template may know no other
 * roles). */
static int generic_message(cJSON *o, const srv_message_t *msg)
{
    text_buf t = {0};
    int rc = 0;
    if (msg->role == SRV_ROLE_TOOL) {
        rc |= tb_adds(&t, "<tool_response>\n");
        rc |= tb_adds(&t, msg->content ? msg->content : "");
        rc |= tb_adds(&t, "\n</tool_response>");
    } else {
        rc |= tb_adds(&t, msg->content ? msg->content : "");
        const cJSON *c;
        cJSON_ArrayForEach(c, msg->tool_calls)
        {
            const cJSON *fn = cJSON_GetObjectItemCaseSensitive(c, "function");
            cJSON *args =
                call_arguments(cJSON_GetObjectItemCaseSensitive(fn, "arguments")->valuestring);
            char *call = args ? tool_generic_call_text(
                                    cJSON_GetObjectItemCaseSensitive(fn, "name")->valuestring, args)
                              : NULL;
            cJSON_Delete(args);
            if (t.len) rc |= tb_adds(&t, "\n");
            rc |= call ? tb_adds(&t, call) : -ENOMEM;
            free(call);
        }
    }
    const char *role = msg->role == SRV_ROLE_TOOL ? "user" : role_name(msg->role);
    rc = rc || !cJSON_AddStringToObject(o, "role", role) ||
                 !cJSON_AddStringToObject(o, "content", t.data ? t.data : "")
             ? -ENOMEM
             : 0;
    free(t.data);
    return rc;
}

/* The messages as the template reads them: with tool_calls and tool_call_id when the request
 * shows the model its tools (GENERIC templates get them written into the text instead). */
static cJSON *messages_json(const engine *e, const srv_gen_request_t *req, bool with_tools)
{
    bool generic = with_tools && e->tool_fmt == TOOL_FORMAT_GENERIC;
    cJSON *arr = cJSON_CreateArray();
    size_t i = 0;
    if (arr && generic) {
        /* the tools described in the system message, ahead of the caller's own */
        char *sys = tool_generic_system(req->tools);
        bool merge = req->n_messages && (req->messages[0].role == SRV_ROLE_SYSTEM ||
                                         req->messages[0].role == SRV_ROLE_DEVELOPER);
        text_buf t = {0};
        int rc = sys ? 0 : -ENOMEM;
        if (merge) rc |= tb_adds(&t, req->messages[0].content) | tb_adds(&t, "\n\n");
        rc |= sys ? tb_adds(&t, sys) : 0;
        free(sys);
        cJSON *o = rc ? NULL : cJSON_CreateObject();
        if (!o || !cJSON_AddItemToArray(arr, o) || !cJSON_AddStringToObject(o, "role", "system") ||
            !cJSON_AddStringToObject(o, "content", t.data)) {
            if (o && cJSON_GetArraySize(arr) == 0) cJSON_Delete(o);
            free(t.data);
            cJSON_Delete(arr);
            return NULL;
        }
        free(t.data);
        i = merge ? 1 : 0;
    }
    for (; arr && i < req->n_messages; i++) {
        const srv_message_t *msg = &req->messages[i];
        cJSON *o = cJSON_CreateObject();
        bool ok = o && cJSON_AddItemToArray(arr, o);
        if (ok && generic) {
            ok = generic_message(o, msg) == 0;
        } else if (ok) {
            ok = cJSON_AddStringToObject(o, "role", role_name(msg->role)) &&
                 cJSON_AddStringToObject(o, "content", msg->content ? msg->content : "");
            if (ok && with_tools && msg->tool_calls) {
                cJSON *calls = template_tool_calls(e->tool_fmt, msg->tool_calls);
                ok = calls && cJSON_AddItemToObject(o, "tool_calls", calls);
                if (!ok) cJSON_Delete(calls);
            }
            char id9[10];
            if (ok && msg->tool_call_id)
                ok = cJSON_AddStringToObject(o, "tool_call_id",
                                             template_call_id(e->tool_fmt, msg->tool_call_id, id9));
        }
        if (ok && msg->name) ok = cJSON_AddStringToObject(o, "name", msg->name);
        if (!ok) {
            if (o && cJSON_GetArrayItem(arr, cJSON_GetArraySize(arr) - 1) != o) cJSON_Delete(o);
            cJSON_Delete(arr);
            return NULL;
        }
    }
    return arr;
}

/* Whether the model is shown the request's tools (and its output read for calls). */
static bool uses_tools(const srv_gen_request_t *req)
{
    return req->kind == SRV_KIND_CHAT && req->tools && req->tool_choice != SRV_TOOL_CHOICE_NONE;
}

static int prompt_ids(engine *e, const srv_gen_request_t *req, int32_t **ids, size_t *n_ids,
                      char *err, size_t err_size)
{
    if (req->kind == SRV_KIND_COMPLETION)
        return prompt_tokenize(e->tok, req->prompt, req->prompt_len, ids, n_ids, err, err_size);
    bool tools = uses_tools(req);
    cJSON *messages = messages_json(e, req, tools);
    if (!messages) {
        snprintf(err, err_size, "out of memory");
        return -ENOMEM;
    }
    char *text = NULL;
    size_t len = 0;
    int rc = prompt_render_chat(e->tmpl, e->tok, messages,
                                tools && e->tool_fmt != TOOL_FORMAT_GENERIC ? req->tools : NULL,
                                &text, &len, err, err_size);
    cJSON_Delete(messages);
    if (rc == 0) rc = prompt_tokenize(e->tok, text, len, ids, n_ids, err, err_size);
    free(text);
    return rc;
}

static int sampler_for(const engine *e, const srv_gen_request_t *req, sampler **out, char *err,
                       size_t err_size)
{
    sampler_params p = sampler_params_default();
    p.temperature = (float)req->temperature;
    p.top_p = (float)req->top_p;
    p.top_k = req->top_k;
    p.min_p = (float)req->min_p;
    p.repetition_penalty = (float)req->repetition_penalty;
    p.presence_penalty = (float)req->presence_penalty;
    p.frequency_penalty = (float)req->frequency_penalty;
    p.seed = req->seed;
    p.has_seed = req->has_seed;
    p.logprobs = req->logprobs;
    p.top_logprobs = req->top_logprobs;
    sampler_bias *bias = NULL;
    if (req->n_logit_bias) {
        bias = malloc(req->n_logit_bias * sizeof *bias);
        if (!bias) {
            snprintf(err, err_size, "out of memory");
            return -ENOMEM;
        }
        for (size_t i = 0; i < req->n_logit_bias; i++)
            bias[i] = (sampler_bias){req->logit_bias[i].token_id, (float)req->logit_bias[i].bias};
    }
    p.logit_bias = bias;
    p.n_logit_bias = req->n_logit_bias;
    int rc = sampler_create(out, e->n_vocab, &p, err, err_size);
    free(bias);
    return rc;
}

/* The tool-call parser, and the guide when calls are forced (tool_choice required or named). */
static int tool_setup(const engine *e, const srv_gen_request_t *req, job_state *st, int *status,
                      char *err, size_t err_size)
{
    *status = 400;
    if (e->tool_fmt == TOOL_FORMAT_UNSUPPORTED) {
        snprintf(err, err_size,
                 "this model's chat template writes tool calls in a format moeserve does not "
                 "read (it reads Hermes/Qwen <tool_call>, Mistral [TOOL_CALLS] and Llama 3 "
                 "JSON); configure model.chat_template, or send the request without tools");
        return -EINVAL;
    }
    bool forced =
        req->tool_choice == SRV_TOOL_CHOICE_REQUIRED || req->tool_choice == SRV_TOOL_CHOICE_NAMED;
    if (forced && st->json) {
        snprintf(err, err_size,
                 "tool_choice \"required\" or a named function cannot be combined "
                 "with a JSON response_format");
        return -EINVAL;
    }
    int rc = tool_parser_create(&st->tparser, e->tool_fmt);
    if (rc == 0 && forced) {
        rc = tool_spec_create(&st->tspec, e->tool_fmt, req->tools, req->tool_choice_name,
                              req->parallel_tool_calls, err, err_size);
        if (rc == 0 && (!(st->tguide = malloc(sizeof *st->tguide)) ||
                        !(st->tscratch = malloc(sizeof *st->tscratch))))
            rc = -ENOMEM;
        if (rc == 0) {
            tool_guide_init(st->tguide, st->tspec);
            st->json = true; /* the logits are masked as for a JSON guide */
            char closing[4096];
            int n = tool_guide_closing(st->tguide, closing, sizeof closing);
            st->tool_min_call = n < 0 ? (int)sizeof closing : n;
        }
    }
    if (rc == -ENOMEM) {
        *status = 500;
        snprintf(err, err_size, "out of memory");
    }
    return rc;
}

static int engine_submit(void *ctx, srv_job_t *job, int *status, char *err, size_t err_size)
{
    engine *e = ctx;
    *status = 503;
    if (!atomic_load(&e->ready)) {
        snprintf(err, err_size, "the model is still loading");
        return -EAGAIN;
    }
    const srv_gen_request_t *req = srv_job_request(job);
    *status = 400;
    int32_t *ids = NULL;
    size_t n_ids = 0;
    int rc = prompt_ids(e, req, &ids, &n_ids, err, err_size);
    if (rc) {
        if (rc == -ENOMEM) *status = 500;
        return rc;
    }
    int32_t n_ctx = scheduler_n_ctx(e->sched);
    if (n_ids == 0) {
        free(ids);
        snprintf(err, err_size, "the prompt is empty");
        return -EINVAL;
    }
    if ((int64_t)n_ids >= n_ctx) {
        free(ids);
        snprintf(err, err_size,
                 "This model's maximum context length is %d tokens; the prompt has %zu tokens",
                 n_ctx, n_ids);
        return -E2BIG;
    }
    int64_t max_tokens = req->max_tokens >= 0 ? req->max_tokens : n_ctx - (int64_t)n_ids;
    if ((int64_t)n_ids + max_tokens > n_ctx) {
        free(ids);
        snprintf(err, err_size,
                 "This model's maximum context length is %d tokens. However, you requested %lld "
                 "tokens (%zu in the prompt, %lld for the completion)",
                 n_ctx, (long long)((int64_t)n_ids + max_tokens), n_ids, (long long)max_tokens);
        return -E2BIG;
    }
    job_state *st = calloc(1, sizeof *st);
    if (!st) {
        free(ids);
        *status = 500;
        snprintf(err, err_size, "out of memory");
        return -ENOMEM;
    }
    st->e = e;
    st->job = job;
    st->n_prompt = (int64_t)n_ids;
    st->want_logprobs = req->logprobs;
    tokenizer_stream_init(&st->stream, e->tok, true);
    st->json = req->json_object || req->json_schema;
    st->max_tokens = max_tokens;
    json_guide_init(&st->guide);
    if (req->json_schema) {
        rc = schema_compile(&st->sch, req->json_schema, err, err_size);
        if (rc) {
            *status = rc == -ENOMEM ? 500 : 400;
            free(ids);
            job_state_free(st);
            return rc;
        }
        if (!(st->sguide = malloc(sizeof *st->sguide))) rc = -ENOMEM;
        if (st->sguide) schema_guide_init(st->sguide, st->sch);
    }
    if (rc == 0 && uses_tools(req)) {
        rc = tool_setup(e, req, st, status, err, err_size);
        if (rc) {
            free(ids);
            job_state_free(st);
            return rc;
        }
    }
    if (rc == 0 && st->json && !(st->masked = malloc((size_t)e->n_vocab * sizeof *st->masked)))
        rc = -ENOMEM;
    if (rc) {
        free(ids);
        job_state_free(st);
        *status = 500;
        snprintf(err, err_size, "out of memory");
        return rc;
    }
    rc = stop_matcher_create(&st->stops, req->stop, NULL, req->n_stop, err, err_size);
    if (rc == 0) rc = sampler_for(e, req, &st->smp, err, err_size);
    if (rc == 0) rc = sampler_accept_prompt(st->smp, ids, n_ids);
    if (rc) {
        free(ids);
        job_state_free(st);
        return rc;
    }
    if (max_tokens == 0) {
        /* Nothing to generate: answer at once, as OpenAI does for max_tokens 0 with echo. */
        free(ids);
        job_state_free(st);
        snprintf(err, err_size, "max_tokens must be at least 1");
        return -EINVAL;
    }
    uint64_t id = 0;
    rc = scheduler_submit(e->sched, ids, (int32_t)n_ids, (int32_t)max_tokens, &engine_seq_ops, st,
                          &id, err, err_size);
    free(ids);
    if (rc) {
        *status = rc == -EAGAIN || rc == -ESHUTDOWN || rc == -EIO ? 503 : rc == -ENOMEM ? 500 : 400;
        job_state_free(st);
        return rc;
    }
    srv_job_set_engine_data(job, (void *)(uintptr_t)id);
    return 0;
}

static void engine_cancel(void *ctx, srv_job_t *job)
{
    engine *e = ctx;
    if (atomic_load(&e->ready))
        scheduler_cancel(e->sched, (uint64_t)(uintptr_t)srv_job_engine_data(job));
}

static bool engine_ready(void *ctx)
{
    engine *e = ctx;
    return atomic_load(&e->ready);
}

static const char *engine_unavailable(void *ctx)
{
    engine *e = ctx;
    return atomic_load(&e->ready) ? scheduler_unavailable(e->sched) : NULL;
}

srv_engine_t engine_ops(engine *e)
{
    return (srv_engine_t){.ctx = e,
                          .submit = engine_submit,
                          .cancel = engine_cancel,
                          .ready = engine_ready,
                          .unavailable = engine_unavailable};
}

/* ---- metrics (loop thread) ------------------------------------------------------------------ */

/* A family with one sample. */
static void single(srv_mx_buf *b, const char *name, const char *type, const char *help,
                   const char *labels, double value)
{
    srv_mx_family(b, name, type, help);
    srv_mx_sample(b, name, labels, value);
}

/* The expert tiers: one sample per tier (tier="host", and tier="device" on a device backend) of
 * the per-tier families; storage reads from the host tier; stalls and prefetches from the tier
 * the engine asks (the nearest one). */
static void write_cache(srv_mx_buf *b, const cache *host, const cache *nearest,
                        uint64_t cpu_experts)
{
    cache_stats tiers[2];
    const char *labels[2] = {"{tier=\"host\"}", "{tier=\"device\"}"};
    int n_tiers = nearest != host ? 2 : 1;
    cache_get_stats(host, &tiers[0]);
    if (n_tiers == 2) cache_get_stats(nearest, &tiers[1]);
    const cache_stats *st = &tiers[0], *near = &tiers[n_tiers - 1];
    static const struct {
        const char *name, *type, *help;
    } per_tier[] = {
        {"moeserve_expert_cache_hits_total", "counter",
         "Requested experts that were resident in the tier or already being loaded"},
        {"moeserve_expert_cache_misses_total", "counter",
         "Requested experts that had to be loaded into the tier"},
        {"moeserve_expert_cache_evictions_total", "counter", "Experts evicted to make room"},
        {"moeserve_expert_cache_resident_experts", "gauge", "Experts held complete in the tier"},
        {"moeserve_expert_cache_resident_bytes", "gauge",
         "Bytes of slots holding a complete expert"},
        {"moeserve_expert_cache_capacity_experts", "gauge", "Slots in the tier"},
        {"moeserve_expert_cache_capacity_bytes", "gauge", "Bytes of the tier's arena"},
    };
    for (size_t i = 0; i < sizeof per_tier / sizeof per_tier[0]; i++) {
        srv_mx_family(b, per_tier[i].name, per_tier[i].type, per_tier[i].help);
        for (int t = 0; t < n_tiers; t++) {
            const cache_stats *c = &tiers[t];
            double v[] = {(double)c->hits,
                          (double)c->misses,
                          (double)c->evictions,
                          (double)c->resident,
                          (double)c->resident * (double)c->slot_bytes,
                          (double)c->n_slots,
                          (double)c->n_slots * (double)c->slot_bytes};
            srv_mx_sample(b, per_tier[i].name, labels[t], v[i]);
        }
    }
    const struct {
        const char *name, *type, *help;
        double value;
    } rows[] = {
        {"moeserve_expert_storage_read_bytes_total", "counter",
         "Bytes read from the model file into the host tier (with alignment padding)",
         (double)st->bytes_read},
        {"moeserve_expert_storage_reads_total", "counter",
         "Read operations completed against the model file", (double)st->reads},
        {"moeserve_expert_storage_read_errors_total", "counter",
         "Reads that failed (the request that needed them failed with a clear error)",
         (double)st->read_errors},
        {"moeserve_expert_device_copy_bytes_total", "counter",
         "Bytes copied from the host tier into the device tier (0 without a device tier)",
         n_tiers == 2 ? (double)near->bytes_read : 0.0},
        {"moeserve_expert_cpu_computed_total", "counter",
         "Experts a device backend computed on the CPU from the host tier instead of copying them",
         (double)cpu_experts},
        {"moeserve_engine_expert_stall_seconds_total", "counter",
         "Time the engine waited for experts to be read or copied", (double)near->stall_ns * 1e-9},
        {"moeserve_expert_prefetches_total", "counter",
         "Experts loaded ahead for the predictor's guesses", (double)near->prefetch_issued},
        {"moeserve_expert_prefetches_used_total", "counter",
         "Prefetched experts that a later request asked for", (double)near->prefetch_used},
        {"moeserve_expert_prefetches_wasted_total", "counter",
         "Prefetched experts evicted before any request asked for them",
         (double)near->prefetch_wasted},
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++)
        single(b, rows[i].name, rows[i].type, rows[i].help, "", rows[i].value);
    srv_mx_family(b, "moeserve_expert_load_seconds", "histogram",
                  "Time from submitting an expert's reads to the expert being resident in the host "
                  "tier");
    srv_mx_histogram_write_counts(b, "moeserve_expert_load_seconds", cache_read_bounds,
                                  CACHE_READ_BUCKETS - 1, st->read_hist,
                                  (double)st->read_ns_sum * 1e-9);
}

static double ratio(uint64_t num, uint64_t den)
{
    return den ? (double)num / (double)den : 0.0;
}

static void write_routing(srv_mx_buf *b, const model *m)
{
    const model_hparams *hp = model_params(m);
    char labels[96];
    srv_mx_family(b, "moeserve_expert_activations_total", "counter",
                  "Tokens routed to each expert of each layer");
    for (int il = 0; il < hp->n_layer; il++) {
        for (int e = 0; e < hp->n_expert; e++) {
            snprintf(labels, sizeof labels, "{layer=\"%d\",expert=\"%d\"}", il, e);
            srv_mx_sample_u64(b, "moeserve_expert_activations_total", labels,
                              model_expert_tokens(m, il, e));
        }
    }
    const pred *p = model_predictor(m);
    static const struct {
        const char *name, *type, *help;
    } fam[] = {
        {"moeserve_predictor_guessed_experts_total", "counter",
         "Experts the predictor guessed for the layer"},
        {"moeserve_predictor_correct_experts_total", "counter",
         "Guessed experts the layer then used"},
        {"moeserve_predictor_used_experts_total", "counter",
         "Experts the layer used in steps with a guess"},
        {"moeserve_predictor_precision_ratio", "gauge", "Correct / guessed, since start"},
        {"moeserve_predictor_recall_ratio", "gauge", "Correct / used, since start"},
    };
    /* With the predictor off the families stay, at zero under predictor="none", so that
     * dashboards and alerts keep their series. */
    for (int f = 0; f < 5; f++) {
        srv_mx_family(b, fam[f].name, fam[f].type, fam[f].help);
        for (int il = 1; il < hp->n_layer; il++) {
            pred_layer_stats ls = {0};
            if (p) pred_get_stats(p, il, &ls);
            snprintf(labels, sizeof labels, "{predictor=\"%s\",layer=\"%d\"}",
                     p ? pred_kind_name(pred_get_kind(p)) : "none", il);
            const double values[5] = {(double)ls.guessed, (double)ls.correct, (double)ls.used,
                                      ratio(ls.correct, ls.guessed), ratio(ls.correct, ls.used)};
            srv_mx_sample(b, fam[f].name, labels, values[f]);
        }
    }
}

/* ---- the expert map (/v1/experts/stats) ---------------------------------------------------- */

static void json_tier(srv_mx_buf *b, const char *name, const cache *c, bool comma)
{
    cache_stats st;
    cache_get_stats(c, &st);
    srv_mx_printf(b,
                  "%s\"%s\":{\"hits\":%llu,\"misses\":%llu,\"evictions\":%llu,"
                  "\"hit_rate\":%.6f,\"resident_experts\":%u,\"capacity_experts\":%u,"
                  "\"slot_bytes\":%llu,\"bytes_read\":%llu,\"stall_seconds\":%.6f,"
                  "\"prefetches\":%llu,\"prefetches_used\":%llu}",
                  comma ? "," : "", name, (unsigned long long)st.hits,
                  (unsigned long long)st.misses, (unsigned long long)st.evictions,
                  ratio(st.hits, st.hits + st.misses), st.resident, st.n_slots,
                  (unsigned long long)st.slot_bytes, (unsigned long long)st.bytes_read,
                  (double)st.stall_ns * 1e-9, (unsigned long long)st.prefetch_issued,
                  (unsigned long long)st.prefetch_used);
}

/* One row per layer of 0/1: which experts the tier holds complete. */
static void json_residency(srv_mx_buf *b, const char *name, const cache *c, int n_layer,
                           int n_expert, bool comma)
{
    srv_mx_printf(b, "%s\"%s\":[", comma ? "," : "", name);
    for (int il = 0; il < n_layer; il++) {
        srv_mx_printf(b, "%s\"", il ? "," : "");
        for (int e = 0; e < n_expert; e++)
            srv_mx_printf(b, "%c", cache_resident(c, il, e) ? '1' : '0');
        srv_mx_printf(b, "\"");
    }
    srv_mx_printf(b, "]");
}

void engine_write_expert_stats(void *user, srv_mx_buf *b)
{
    engine *e = user;
    if (!atomic_load(&e->ready)) {
        srv_mx_printf(b, "{\"ready\":false}");
        return;
    }
    const model_hparams *hp = model_params(e->m);
    scheduler_stats st;
    scheduler_get_stats(e->sched, &st);
    srv_mx_printf(b,
                  "{\"ready\":true,\"arch\":\"%s\",\"n_layer\":%d,\"n_expert\":%d,"
                  "\"n_expert_used\":%d,\"engine\":{\"steps\":%llu,\"tokens\":%llu,"
                  "\"prompt_tokens\":%llu,\"decode_tokens\":%llu,\"step_seconds\":%.6f,"
                  "\"running\":%u,\"waiting\":%u},\"activations\":[",
                  model_arch_name(hp->arch), hp->n_layer, hp->n_expert, hp->n_expert_used,
                  (unsigned long long)st.steps, (unsigned long long)st.tokens,
                  (unsigned long long)st.prompt_tokens, (unsigned long long)st.decode_tokens,
                  (double)st.step_ns * 1e-9, st.running, st.waiting);
    for (int il = 0; il < hp->n_layer; il++) {
        srv_mx_printf(b, "%s[", il ? "," : "");
        for (int x = 0; x < hp->n_expert; x++)
            srv_mx_printf(b, "%s%llu", x ? "," : "",
                          (unsigned long long)model_expert_tokens(e->m, il, x));
        srv_mx_printf(b, "]");
    }
    srv_mx_printf(b, "]");
    /* Tiers nearest the file first; without a cache every expert is read through the mapping. */
    const cache *host = model_host_cache(e->m), *nearest = model_expert_cache(e->m);
    srv_mx_printf(b, ",\"tiers\":{");
    if (host) json_tier(b, "host", host, false);
    if (nearest && nearest != host) json_tier(b, "device", nearest, host != NULL);
    srv_mx_printf(b, "},\"resident\":{");
    if (host) json_residency(b, "host", host, hp->n_layer, hp->n_expert, false);
    if (nearest && nearest != host)
        json_residency(b, "device", nearest, hp->n_layer, hp->n_expert, host != NULL);
    const pred *p = model_predictor(e->m);
    srv_mx_printf(b, "},\"predictor\":{\"kind\":\"%s\",\"layers\":[",
                  p ? pred_kind_name(pred_get_kind(p)) : "none");
    for (int il = 1; p && il < hp->n_layer; il++) {
        pred_layer_stats ls;
        pred_get_stats(p, il, &ls);
        srv_mx_printf(b,
                      "%s{\"layer\":%d,\"guessed\":%llu,\"correct\":%llu,\"used\":%llu,"
                      "\"precision\":%.6f,\"recall\":%.6f}",
                      il > 1 ? "," : "", il, (unsigned long long)ls.guessed,
                      (unsigned long long)ls.correct, (unsigned long long)ls.used,
                      ratio(ls.correct, ls.guessed), ratio(ls.correct, ls.used));
    }
    srv_mx_printf(b, "]}}");
}

void engine_write_metrics(void *user, srv_mx_buf *b)
{
    engine *e = user;
    if (!atomic_load(&e->ready)) return;
    scheduler_stats st;
    scheduler_get_stats(e->sched, &st);
    srv_mx_family(b, "moeserve_engine_steps_total", "counter", "Engine steps (forward passes)");
    srv_mx_sample_u64(b, "moeserve_engine_steps_total", "", st.steps);
    srv_mx_family(b, "moeserve_engine_step_seconds_total", "counter",
                  "Time spent in forward passes");
    srv_mx_sample(b, "moeserve_engine_step_seconds_total", "", (double)st.step_ns * 1e-9);
    srv_mx_family(b, "moeserve_engine_batch_tokens", "histogram",
                  "Tokens per engine step (decode tokens plus prompt chunks)");
    srv_mx_histogram_write_counts(b, "moeserve_engine_batch_tokens", scheduler_batch_bounds,
                                  SCHEDULER_BATCH_BUCKETS - 1, st.batch_hist, (double)st.tokens);
    /* The KV cache is paged: allocated memory grows with the positions held; used is the
     * blocks live sequences hold. */
    uint64_t kv = scheduler_kv_bytes(e->sched), used = scheduler_kv_used_bytes(e->sched);
    srv_mx_family(b, "moeserve_kv_cache_bytes", "gauge",
                  "KV cache memory allocated, by state: blocks held by sequences are used");
    srv_mx_sample_u64(b, "moeserve_kv_cache_bytes", "{state=\"used\"}", used);
    srv_mx_sample_u64(b, "moeserve_kv_cache_bytes", "{state=\"free\"}", kv - used);
    const struct {
        const char *name, *type, *help;
        double value;
    } rows[] = {
        {"moeserve_prefix_cache_queries_total", "counter",
         "Admitted requests whose prompt was looked up in the prefix cache",
         (double)st.prefix_queries},
        {"moeserve_prefix_cache_hit_tokens_total", "counter",
         "Prompt tokens taken from cached KV blocks instead of being prefilled",
         (double)st.prefix_hit_tokens},
        {"moeserve_prefix_cache_evictions_total", "counter",
         "Cached KV blocks given up because the KV memory was needed", (double)st.prefix_evictions},
        {"moeserve_prefix_cache_blocks", "gauge", "KV blocks no request holds, kept for reuse",
         (double)st.prefix_cached_blocks},
        {"moeserve_engine_step_retries_total", "counter",
         "Steps run again because an expert could not be read (the requests went on)",
         (double)st.step_retries},
        {"moeserve_constrained_masks_total", "counter",
         "Token masks built for constrained decoding (response_format, forced tool calls)",
         (double)atomic_load(&e->masks)},
        {"moeserve_constrained_mask_seconds_total", "counter",
         "Time spent building those masks (the sampling of their sequences waits for it)",
         (double)atomic_load(&e->mask_ns) * 1e-9},
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++)
        single(b, rows[i].name, rows[i].type, rows[i].help, "", rows[i].value);
    if (model_expert_cache(e->m))
        write_cache(b, model_host_cache(e->m), model_expert_cache(e->m), model_cpu_experts(e->m));
    write_routing(b, e->m);
}
