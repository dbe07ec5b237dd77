/*
 * Generation calls and their jobs: submitting to the engine, the engine-to-loop event queue,
 * turning events into a response or a stream of server-sent events, and the serving metrics.
 *
 * The engine thread only ever appends to one mutex-guarded list and wakes the loop with
 * uv_async_send (under the same lock, so that it never races with the handle's close at
 * shutdown); everything else happens on the loop thread.  A call is reference counted (its
 * connection + each job still owing a terminal event), which is what lets a client vanish at
 * any moment: the connection lets go, the jobs are cancelled, and the call is freed when the
 * engine's last terminal event for it has been processed.
 *
 * Streaming back-pressure: text is appended to a per-choice buffer and sent as a chunk only
 * while the connection's unsent output stays under opts.write_high_water_bytes; a slow reader
 * gets bigger, fewer chunks rather than an unbounded write queue (the buffered text is bounded
 * by max_tokens, as it is for a non-streamed answer).
 */
#include "server/server_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

uint64_t srv__now_ns(void)
{
    return uv_hrtime();
}

static double seconds(uint64_t from, uint64_t to)
{
    return to > from ? (double)(to - from) / 1e9 : 0;
}

/* ---- posting (any thread) ---------------------------------------------------------------------
 */

static void post(srv_job_t *job, srv_ev *ev)
{
    srv_server_t *s = job->call->srv;
    ev->job = job;
    ev->next = NULL;
    ev->t_ns = srv__now_ns();
    pthread_mutex_lock(&s->lock);
    if (s->ev_tail)
        s->ev_tail->next = ev;
    else
        s->ev_head = ev;
    s->ev_tail = ev;
    if (!s->wake_closed) uv_async_send(&s->wake);
    pthread_mutex_unlock(&s->lock);
}

const srv_gen_request_t *srv_job_request(const srv_job_t *job)
{
    return &job->req;
}

void srv_job_set_engine_data(srv_job_t *job, void *data)
{
    job->engine_data = data;
}

void *srv_job_engine_data(const srv_job_t *job)
{
    return job->engine_data;
}

bool srv_job_cancelled(const srv_job_t *job)
{
    return atomic_load(&((srv_job_t *)job)->cancelled);
}

void srv_job_post_text(srv_job_t *job, const char *text, size_t len, const srv_logprobs_t *lp)
{
    if (atomic_load(&job->cancelled)) return; /* nobody will read it */
    size_t extra = len + 1;
    if (lp) {
        extra += lp->chosen.len + 1 + lp->n_top * sizeof(srv_token_logprob_t);
        for (size_t i = 0; i < lp->n_top; i++)
            extra += lp->top[i].len + 1;
    }
    srv_ev *ev = calloc(1, sizeof *ev + extra);
    if (!ev) return; /* the text is lost; the terminal event still arrives */
    ev->kind = SRV_EV_TEXT;
    /* Layout after the event: top entries (aligned first), then the strings. */
    char *at = (char *)(ev + 1);
    if (lp) {
        ev->has_lp = true;
        ev->top = (srv_token_logprob_t *)at;
        ev->n_top = lp->n_top;
        at += lp->n_top * sizeof(srv_token_logprob_t);
    }
    ev->text = at;
    memcpy(at, text ? text : "", len);
    ev->len = len;
    at += len + 1;
    if (lp) {
        memcpy(at, lp->chosen.text ? lp->chosen.text : "", lp->chosen.len);
        ev->chosen = (srv_token_logprob_t){at, lp->chosen.len, lp->chosen.logprob};
        at += lp->chosen.len + 1;
        for (size_t i = 0; i < lp->n_top; i++) {
            memcpy(at, lp->top[i].text ? lp->top[i].text : "", lp->top[i].len);
            ev->top[i] = (srv_token_logprob_t){at, lp->top[i].len, lp->top[i].logprob};
            at += lp->top[i].len + 1;
        }
    }
    post(job, ev);
}

void srv_job_post_tool_call(srv_job_t *job, const char *name, const char *args, size_t len)
{
    if (atomic_load(&job->cancelled)) return;
    srv_ev *ev = calloc(1, sizeof *ev + len + 1);
    if (!ev) return; /* like text: lost, and the terminal event still arrives */
    ev->kind = SRV_EV_TOOL;
    ev->tool_begin = name != NULL;
    if (name) snprintf(ev->message, sizeof ev->message, "%s", name);
    ev->text = (char *)(ev + 1);
    if (len) memcpy(ev->text, args, len);
    ev->len = len;
    post(job, ev);
}

void srv_job_post_admitted(srv_job_t *job, int64_t n_cached)
{
    srv_ev *ev = calloc(1, sizeof *ev);
    if (!ev) return;
    ev->kind = SRV_EV_ADMITTED;
    ev->n_cached = n_cached;
    post(job, ev);
}

void srv_job_post_error(srv_job_t *job, int status, const char *message)
{
    srv_ev *ev = &job->final_ev;
    ev->kind = SRV_EV_ERROR;
    ev->status = status >= 400 && status < 600 ? status : 500;
    snprintf(ev->message, sizeof ev->message, "%s", message ? message : "internal error");
    post(job, ev);
}

void srv_job_post_finish(srv_job_t *job, srv_finish_t why, int64_t n_prompt, int64_t n_generated)
{
    srv_ev *ev = &job->final_ev;
    ev->kind = SRV_EV_FINISH;
    ev->why = why;
    ev->n_prompt = n_prompt;
    ev->n_generated = n_generated;
    post(job, ev);
}

/* ---- calls --------------------------------------------------------------------------------------
 */

static void call_free(srv_call *call)
{
    srv_server_t *s = call->srv;
    if (call->prev)
        call->prev->next = call->next;
    else if (s->calls == call)
        s->calls = call->next;
    if (call->next) call->next->prev = call->prev;
    for (int i = 0; call->choices && i < call->n; i++) {
        srv__buf_free(&call->choices[i].text);
        cJSON_Delete(call->choices[i].lp);
        srv__buf_free(&call->choices[i].args);
        cJSON_Delete(call->choices[i].calls);
    }
    free(call->choices);
    free(call->jobs);
    cJSON_Delete(call->root);
    arena_release(&call->arena);
    free(call);
}

void srv__call_release(srv_call *call)
{
    if (--call->refs == 0) call_free(call);
}

void srv__free_all_calls(srv_server_t *s)
{
    while (s->calls)
        call_free(s->calls);
}

void srv__call_cancel_jobs(srv_call *call)
{
    srv_server_t *s = call->srv;
    for (int i = 0; i < call->n; i++) {
        srv_job_t *job = &call->jobs[i];
        if (!job->accepted || job->done || job->cancel_sent) continue;
        atomic_store(&job->cancelled, true);
        job->cancel_sent = true;
        s->stats.jobs_cancelled++;
        if (s->engine.cancel) s->engine.cancel(s->engine.ctx, job);
    }
}

void srv__call_detach(srv_call *call)
{
    srv__call_cancel_jobs(call);
    if (call->conn) call->conn->call = NULL;
    call->conn = NULL;
    call->ended = true;
    srv__call_release(call);
}

/* The response is complete: the connection moves on to its next request. */
static void call_end(srv_call *call)
{
    srv_conn *c = call->conn;
    call->ended = true;
    if (!c) return; /* a write failed on the way and the connection has let go already */
    srv__call_detach(call);
    srv__request_done(c);
}

static void send_event(srv_conn *c, char *json, size_t len)
{
    if (!json) return;
    srv_buf ev = {0};
    if (srv__buf_append(&ev, "data: ", 6) == 0 && srv__buf_append(&ev, json, len) == 0 &&
        srv__buf_append(&ev, "\n\n", 2) == 0)
        srv__stream_write(c, ev.data, ev.len);
    srv__buf_free(&ev);
    free(json);
}

static size_t lp_bytes(const cJSON *entries)
{
    size_t n = 0;
    const cJSON *en;
    cJSON_ArrayForEach(en, entries) n +=
        (size_t)cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(en, "bytes"));
    return n;
}

/* A choice's unsent text (and logprobs) as one chunk. */
static void send_text(srv_call *call, int i)
{
    srv_choice *ch = &call->choices[i];
    if (!ch->text.len && !(ch->lp && cJSON_GetArraySize(ch->lp))) return;
    size_t len = 0;
    char *json = srv__chunk_json(call, call->srv->model_id, i, false, ch->text.data, ch->text.len,
                                 ch->lp, ch->lp_offset, -1, &len);
    send_event(call->conn, json, len);
    ch->text.len = 0;
    if (ch->lp) {
        ch->lp_offset += lp_bytes(ch->lp);
        cJSON_Delete(ch->lp);
        ch->lp = NULL;
    }
}

/* A choice's unsent tool-call delta (the call's head, arguments so far) as one chunk. */
static void send_tool(srv_call *call, int i)
{
    srv_choice *ch = &call->choices[i];
    if (!ch->n_calls || (!ch->head_pending && !ch->args.len)) return;
    size_t len = 0;
    char *json = srv__tool_chunk_json(call, call->srv->model_id, i, &len);
    send_event(call->conn, json, len);
    ch->head_pending = false;
    ch->args.len = 0;
}

void srv__stream_pump(srv_call *call, bool final)
{
    srv_conn *c = call->conn;
    if (!c || !call->headers_sent) return;
    for (int i = 0; i < call->n; i++) {
        srv_choice *ch = &call->choices[i];
        bool text = ch->text.len || (ch->lp && cJSON_GetArraySize(ch->lp));
        bool tool = ch->n_calls && (ch->head_pending || ch->args.len);
        if (!text && !tool) continue;
        if (!final && c->write_bytes >= call->srv->opts.write_high_water_bytes) return;
        /* only one of the two is pending: each flushes the other before it arrives */
        send_text(call, i);
        send_tool(call, i);
    }
}

static void stream_finish(srv_call *call)
{
    srv_conn *c = call->conn;
    const char *model = call->srv->model_id;
    srv__stream_pump(call, true);
    for (int i = 0; i < call->n; i++) {
        size_t len = 0;
        char *json =
            srv__chunk_json(call, model, i, false, "", 0, NULL, 0, (int)call->choices[i].why, &len);
        send_event(c, json, len);
    }
    if (call->req.include_usage) {
        size_t len = 0;
        char *json = srv__usage_chunk_json(call, model, &len);
        send_event(c, json, len);
    }
    srv__stream_write(c, "data: [DONE]\n\n", 14);
    srv__stream_end(c);
}

/* A refused or failed call: an error response, or an error event when the stream has begun. */
static void call_fail(srv_call *call)
{
    srv_conn *c = call->conn;
    srv__call_cancel_jobs(call);
    if (!c) return;
    if (call->headers_sent) {
        size_t len = 0;
        char *json = srv__err_json(&call->err, &len);
        send_event(c, json, len);
        srv__stream_write(c, "data: [DONE]\n\n", 14);
        srv__stream_end(c);
    } else {
        srv__respond_error(c, &call->err);
    }
    call_end(call);
}

static void set_engine_error(srv_call *call, int status, const char *message)
{
    call->failed = true;
    if (status >= 500 && status != 503) {
        /* The engine's words may name files or internals: log them, send a generic message. */
        srv__log(call->srv, 0, "request %s failed: %s", call->id, message);
        srv__err_set(&call->err, 500, NULL, "internal error while generating (see the server log)");
    } else {
        srv__err_set(&call->err, status, NULL, "%s", message);
    }
}

static uint64_t next_id(srv_server_t *s)
{
    /* splitmix64 over a counter seeded from the clock: unique, not guessable from the count. */
    if (!s->id_state)
        s->id_state = srv__now_ns() ^ ((uint64_t)time(NULL) << 20) ^ (uint64_t)getpid();
    uint64_t z = (s->id_state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

void srv__start_call(srv_conn *c, srv_kind_t kind)
{
    srv_server_t *s = c->srv;
    srv_api_err e = {0};
    if (s->engine.ready && !s->engine.ready(s->engine.ctx)) {
        srv__err_set(&e, 503, NULL, "the model is still loading; retry shortly");
        srv__respond_error(c, &e);
        srv__request_done(c);
        return;
    }
    srv_call *call = calloc(1, sizeof *call);
    if (!call) goto oom;
    call->srv = s;
    call->refs = 1;
    call->next = s->calls;
    if (s->calls) s->calls->prev = call;
    s->calls = call;
    snprintf(call->id, sizeof call->id, "%s-%016llx", kind == SRV_KIND_CHAT ? "chatcmpl" : "cmpl",
             (unsigned long long)next_id(s));
    call->created = (int64_t)time(NULL);
    if (srv__parse_request(call, c->body.data ? c->body.data : "", c->body.len, kind, s->model_id,
                           s->opts.max_n, &e)) {
        srv__respond_error(c, &e);
        srv__call_release(call);
        srv__request_done(c);
        return;
    }
    call->n = call->req.n;
    call->jobs = calloc((size_t)call->n, sizeof *call->jobs);
    call->choices = calloc((size_t)call->n, sizeof *call->choices);
    if (!call->jobs || !call->choices) {
        srv__call_release(call);
        goto oom;
    }
    call->conn = c;
    c->call = call;
    for (int i = 0; i < call->n; i++) {
        srv_job_t *job = &call->jobs[i];
        job->call = call;
        job->index = i;
        job->req = call->req;
        job->req.n = 1;
        if (job->req.has_seed) job->req.seed += (uint64_t)i;
        atomic_init(&job->cancelled, false);
        job->t_submit_ns = srv__now_ns();
        int status = 500;
        char msg[512] = "the engine refused the request";
        if (s->engine.submit(s->engine.ctx, job, &status, msg, sizeof msg)) {
            set_engine_error(call, status, msg);
            if (status == 503) call->err.code = "overloaded";
            call_fail(call);
            return;
        }
        job->accepted = true;
        call->refs++;
        call->n_active++;
        s->stats.waiting++;
    }
    if (call->req.stream) {
        srv__respond_stream_start(c);
        call->headers_sent = true;
        if (kind == SRV_KIND_CHAT)
            for (int i = 0; i < call->n; i++) {
                size_t len = 0;
                char *json = srv__chunk_json(call, s->model_id, i, true, "", 0, NULL, 0, -1, &len);
                send_event(c, json, len);
            }
    }
    return;
oom:
    srv__err_set(&e, 500, NULL, "out of memory");
    srv__respond_error(c, &e);
    srv__request_done(c);
}

/* ---- events (loop thread)
 * ------------------------------------------------------------------------ */

static void mark_admitted(srv_job_t *job, uint64_t t_ns)
{
    if (job->admitted) return;
    srv_stats *st = &job->call->srv->stats;
    job->admitted = true;
    st->waiting--;
    st->running++;
    srv_mx_histogram_observe(&st->queue, seconds(job->t_submit_ns, t_ns));
}

static void on_text(srv_job_t *job, srv_ev *ev)
{
    srv_call *call = job->call;
    srv_stats *st = &call->srv->stats;
    mark_admitted(job, ev->t_ns);
    if (!job->got_text)
        srv_mx_histogram_observe(&st->ttft, seconds(job->t_submit_ns, ev->t_ns));
    else
        srv_mx_histogram_observe(&st->itl, seconds(job->t_last_text_ns, ev->t_ns));
    job->got_text = true;
    job->t_last_text_ns = ev->t_ns;
    if (!call->conn || call->ended || call->failed) return;
    srv_choice *ch = &call->choices[job->index];
    if (call->req.stream && call->conn) send_tool(call, job->index); /* keep the order */
    bool ok = srv__buf_append(&ch->text, ev->text, ev->len) == 0;
    if (ok && ev->has_lp) {
        if (!ch->lp) ch->lp = cJSON_CreateArray();
        ok = ch->lp && cJSON_AddItemToArray(ch->lp, srv__lp_entry(ev));
    }
    if (!ok) {
        set_engine_error(call, 500, "out of memory while collecting the output");
        call_fail(call);
        return;
    }
    if (call->req.stream) srv__stream_pump(call, false);
}

/* The current call's arguments into its entry (non-stream: before the next call starts). */
static bool store_args(srv_choice *ch)
{
    cJSON *fn = cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(ch->calls, ch->n_calls - 1),
                                                 "function");
    size_t n = 0;
    char *clean = srv__utf8_clean(ch->args.data ? ch->args.data : "", ch->args.len, &n);
    cJSON *a = clean ? cJSON_CreateString(clean) : NULL;
    free(clean);
    if (!a || !cJSON_ReplaceItemInObjectCaseSensitive(fn, "arguments", a)) {
        cJSON_Delete(a);
        return false;
    }
    ch->args.len = 0;
    return true;
}

static void on_tool(srv_job_t *job, srv_ev *ev)
{
    srv_call *call = job->call;
    srv_stats *st = &call->srv->stats;
    mark_admitted(job, ev->t_ns);
    if (!job->got_text) srv_mx_histogram_observe(&st->ttft, seconds(job->t_submit_ns, ev->t_ns));
    job->got_text = true;
    job->t_last_text_ns = ev->t_ns;
    if (!call->conn || call->ended || call->failed) return;
    srv_choice *ch = &call->choices[job->index];
    bool ok = true;
    if (call->req.stream) send_text(call, job->index); /* keep the order */
    if (ev->tool_begin) {
        if (call->req.stream)
            send_tool(call, job->index);
        else if (ch->n_calls)
            ok = store_args(ch);
        char id[40];
        snprintf(id, sizeof id, "call_%016llx", (unsigned long long)next_id(call->srv));
        cJSON *c = ok ? cJSON_CreateObject() : NULL;
        cJSON *fn = c && cJSON_AddStringToObject(c, "id", id) &&
                            cJSON_AddStringToObject(c, "type", "function")
                        ? cJSON_AddObjectToObject(c, "function")
                        : NULL;
        if (!ch->calls) ch->calls = cJSON_CreateArray();
        ok = fn && ch->calls && cJSON_AddStringToObject(fn, "name", ev->message) &&
             cJSON_AddStringToObject(fn, "arguments", "") && cJSON_AddItemToArray(ch->calls, c);
        if (!ok) {
            cJSON_Delete(c);
        } else {
            ch->n_calls++;
            ch->head_pending = true;
            ch->args.len = 0;
        }
    }
    if (ok && ch->n_calls) ok = srv__buf_append(&ch->args, ev->text, ev->len) == 0;
    if (!ok) {
        set_engine_error(call, 500, "out of memory while collecting the output");
        call_fail(call);
        return;
    }
    if (call->req.stream) srv__stream_pump(call, false);
}

static void on_terminal(srv_job_t *job, srv_ev *ev)
{
    srv_call *call = job->call;
    srv_stats *st = &call->srv->stats;
    mark_admitted(job, ev->t_ns);
    job->done = true;
    call->n_active--;
    st->running--;
    srv_mx_histogram_observe(&st->e2e, seconds(job->t_submit_ns, ev->t_ns));
    if (ev->kind == SRV_EV_FINISH) {
        st->prompt_tokens += (uint64_t)(ev->n_prompt > 0 ? ev->n_prompt : 0);
        st->generated_tokens += (uint64_t)(ev->n_generated > 0 ? ev->n_generated : 0);
        /* n choices share one prompt: usage counts it once, as OpenAI's does. */
        if (ev->n_prompt > call->n_prompt) call->n_prompt = ev->n_prompt;
        call->n_generated += ev->n_generated;
        call->choices[job->index].finished = true;
        call->choices[job->index].why = ev->why;
    } else if (!call->failed && !call->ended) {
        set_engine_error(call, ev->status, ev->message);
    }
    if (call->conn && !call->ended) {
        if (call->failed)
            call_fail(call);
        else if (call->n_active == 0) {
            if (call->req.stream) {
                stream_finish(call);
            } else {
                size_t len = 0;
                char *body = srv__response_json(call, call->srv->model_id, &len);
                if (body) {
                    srv__respond(call->conn, 200, "application/json", body, len, NULL);
                } else {
                    srv_api_err e;
                    srv__err_set(&e, 500, NULL, "out of memory");
                    srv__respond_error(call->conn, &e);
                }
                free(body);
            }
            call_end(call);
        }
    }
    srv__call_release(call); /* the job's reference */
}

void srv__drain_events(srv_server_t *s)
{
    pthread_mutex_lock(&s->lock);
    srv_ev *ev = s->ev_head;
    s->ev_head = s->ev_tail = NULL;
    pthread_mutex_unlock(&s->lock);
    while (ev) {
        srv_ev *next = ev->next;
        srv_job_t *job = ev->job;
        switch (ev->kind) {
        case SRV_EV_TEXT:
            on_text(job, ev);
            free(ev);
            break;
        case SRV_EV_TOOL:
            on_tool(job, ev);
            free(ev);
            break;
        case SRV_EV_ADMITTED:
            mark_admitted(job, ev->t_ns);
            if (ev->n_cached > job->call->n_cached) job->call->n_cached = ev->n_cached;
            free(ev);
            break;
        case SRV_EV_ERROR:
        case SRV_EV_FINISH:
            on_terminal(job, ev); /* embedded in the job, which may be freed now */
            break;
        }
        ev = next;
    }
}

/* ---- metrics ------------------------------------------------------------------------------------
 */

static const double ttft_bounds[] = {0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25,
                                     0.5,   1,     2.5,  5,    10,   30,  60};
static const double itl_bounds[] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                    0.1,   0.25,   0.5,   1,    2.5,   5};
static const double e2e_bounds[] = {0.01, 0.05, 0.1, 0.25, 0.5, 1,   2.5,
                                    5,    10,   30,  60,   120, 300, 600};
static const double queue_bounds[] = {0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300};

#define N_OF(a) (sizeof(a) / sizeof((a)[0]))

int srv__stats_init(srv_stats *st)
{
    memset(st, 0, sizeof *st);
    if (srv_mx_histogram_init(&st->ttft, ttft_bounds, N_OF(ttft_bounds)) ||
        srv_mx_histogram_init(&st->itl, itl_bounds, N_OF(itl_bounds)) ||
        srv_mx_histogram_init(&st->e2e, e2e_bounds, N_OF(e2e_bounds)) ||
        srv_mx_histogram_init(&st->queue, queue_bounds, N_OF(queue_bounds))) {
        srv__stats_free(st);
        return -ENOMEM;
    }
    return 0;
}

void srv__stats_free(srv_stats *st)
{
    srv_mx_histogram_release(&st->ttft);
    srv_mx_histogram_release(&st->itl);
    srv_mx_histogram_release(&st->e2e);
    srv_mx_histogram_release(&st->queue);
}

static const char *const endpoint_names[SRV_EP_COUNT] = {
    "/v1/chat/completions", "/v1/completions", "/v1/models", "/health", "/metrics",
    "/v1/experts/stats",    "/dashboard",      "other",
};

void srv__count_request(srv_server_t *s, srv_endpoint ep, int status)
{
    if (status >= 0 && status < SRV_N_STATUS) s->stats.requests[ep][status]++;
}

void srv__write_metrics(srv_server_t *s, srv_mx_buf *b)
{
    const srv_stats *st = &s->stats;
    srv_mx_family(b, "moeserve_http_requests_total", "counter",
                  "HTTP requests answered, by endpoint and status code.");
    for (int ep = 0; ep < SRV_EP_COUNT; ep++)
        for (int code = 0; code < SRV_N_STATUS; code++) {
            if (!st->requests[ep][code]) continue;
            char code_s[8], labels[128];
            snprintf(code_s, sizeof code_s, "%d", code);
            const char *names[] = {"endpoint", "code"}, *values[] = {endpoint_names[ep], code_s};
            if (srv_mx_labels(labels, sizeof labels, 2, names, values) < 0) continue;
            srv_mx_sample_u64(b, "moeserve_http_requests_total", labels, st->requests[ep][code]);
        }
    srv_mx_family(b, "moeserve_prompt_tokens_total", "counter",
                  "Prompt tokens of finished generation requests.");
    srv_mx_sample_u64(b, "moeserve_prompt_tokens_total", "", st->prompt_tokens);
    srv_mx_family(b, "moeserve_generation_tokens_total", "counter",
                  "Tokens generated by finished generation requests.");
    srv_mx_sample_u64(b, "moeserve_generation_tokens_total", "", st->generated_tokens);
    srv_mx_family(b, "moeserve_requests_cancelled_total", "counter",
                  "Generation jobs cancelled because the client went away or the server stopped.");
    srv_mx_sample_u64(b, "moeserve_requests_cancelled_total", "", st->jobs_cancelled);
    srv_mx_family(b, "moeserve_requests_running", "gauge",
                  "Generation jobs admitted by the engine and not finished.");
    srv_mx_sample(b, "moeserve_requests_running", "", (double)st->running);
    srv_mx_family(b, "moeserve_requests_waiting", "gauge",
                  "Generation jobs submitted and waiting for the engine to admit them.");
    srv_mx_sample(b, "moeserve_requests_waiting", "", (double)st->waiting);
    srv_mx_family(b, "moeserve_http_connections", "gauge", "Open client connections.");
    srv_mx_sample(b, "moeserve_http_connections", "", (double)st->connections);
    srv_mx_family(b, "moeserve_time_to_first_token_seconds", "histogram",
                  "From submission to the first generated text of a job.");
    srv_mx_histogram_write(b, "moeserve_time_to_first_token_seconds", "", &st->ttft);
    srv_mx_family(b, "moeserve_inter_token_latency_seconds", "histogram",
                  "Between consecutive pieces of generated text of a job.");
    srv_mx_histogram_write(b, "moeserve_inter_token_latency_seconds", "", &st->itl);
    srv_mx_family(b, "moeserve_request_duration_seconds", "histogram",
                  "From submission to the end of a generation job.");
    srv_mx_histogram_write(b, "moeserve_request_duration_seconds", "", &st->e2e);
    srv_mx_family(b, "moeserve_request_queue_time_seconds", "histogram",
                  "From submission until the engine admitted the job.");
    srv_mx_histogram_write(b, "moeserve_request_queue_time_seconds", "", &st->queue);
}
