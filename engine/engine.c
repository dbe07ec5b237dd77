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
#include "engine/engine_internal.h"
#include "engine/prompt.h"

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
     * so far (the step's masked logits go to the engine's one buffer) */
    bool json;
    json_guide guide;
    schema *sch;
    schema_guide *sguide;
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
    /* masks are built one at a time, on the engine thread: one buffer serves every job (a
     * vocabulary's floats per constrained job would churn the allocator) */
    e->masked = malloc((size_t)model_params(m)->n_vocab * sizeof *e->masked);
    if (!e->masked) {
        snprintf(err, err_size, "out of memory");
        return -ENOMEM;
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
    free(e->masked);
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

/* The logits with every token the JSON guide refuses at -inf (into the engine's buffer). */
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
        st->e->masked[t] = ok ? logits[t] : -INFINITY;
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
            if (t != longest) st->e->masked[t] = -INFINITY;
    if (!any) /* no token continues the object: end here rather than write nonsense */
        for (int32_t t = 0; t < n; t++)
            if (tokenizer_is_eog(st->e->tok, t)) st->e->masked[t] = logits[t];
    return st->e->masked;
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
        if (rc == 0 && (!(st->tguide = malloc(tool_guide_size(st->tspec))) ||
                        !(st->tscratch = malloc(tool_guide_size(st->tspec)))))
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
    int rc = engine__prompt_ids(e, req, &ids, &n_ids, err, err_size);
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
    if (rc == 0 && engine__uses_tools(req)) {
        rc = tool_setup(e, req, st, status, err, err_size);
        if (rc) {
            free(ids);
            job_state_free(st);
            return rc;
        }
    }

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
