/*
 * fake_serve — the HTTP server (server/server.h) in front of a fake engine, so that the HTTP
 * layer can be tested without a model (tests/integration/test_http.py).
 *
 * The fake engine "generates" the prompt back, one Unicode character per token, from its own
 * thread, one token per job per step with --delay-ms between steps (all running jobs advance
 * together, like continuous batching).  For a chat the source is the last message's content;
 * prompt tokens are the characters of the prompt (chat: of all message contents).  It finishes
 * with "stop" when the text is used up, "length" at max_tokens.  Prompts starting with a
 * command change that:
 *   !loop TEXT    repeat TEXT until max_tokens (or 10000)
 *   !seed TEXT    generate the decimal seed, then TEXT
 *   !slow TEXT    one token every 10 steps
 *   !reject ...   submit refuses: 400    !busy ...  submit refuses: 503
 *   !submit500    submit refuses: 500 with an internal message that must not reach the client
 *   !crash ...    after two tokens the job ends with error 500 (internal message)
 * Logprobs: the chosen token has logprob -0.25 * (1 + i % 3) for token i; top_logprobs has the
 * chosen token first, then "alt1", "alt2", ... each 1 lower.
 * Usage: fake_serve [--port N] [--model NAME] [--delay-ms N] [--loading-ms N] [--api-key K]...
 *   [--max-body N] [--max-header N] [--header-timeout-ms N] [--idle-timeout-ms N]
 *   [--max-connections N] [--max-queue N] [--high-water BYTES] [--send-buffer BYTES]
 *   [--drain-ms N] [--replica NAME]
 * Prints "listening on HOST:PORT" on stdout once bound.
 */
#include "base/utf8.h"
#include "server/server.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

typedef struct fake_job {
    struct fake_job *next;
    srv_job_t *job;
    char *text;
    size_t len, pos;
    bool loop, slow, crash, admitted;
    int64_t n_prompt, n_generated, max_tokens;
    bool logprobs;
    int top_logprobs;
} fake_job;

typedef struct fake_engine {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    fake_job *jobs;
    int n_jobs, max_queue;
    bool quit;
    pthread_t thread;
    int delay_ms;
    uint64_t ready_at_ns;
    atomic_ullong submitted, cancels;
} fake_engine;

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* Prompt tokens: the characters a stream of step_job() tokens would have. */
static int64_t count_chars(const char *s)
{
    return (int64_t)utf8_count(s, strlen(s));
}

static bool take(const char **s, const char *cmd)
{
    size_t n = strlen(cmd);
    if (strncmp(*s, cmd, n) != 0) return false;
    *s += n;
    if (**s == ' ') (*s)++;
    return true;
}

static void fake_job_free(fake_job *fj)
{
    free(fj->text);
    free(fj);
}

static int fake_submit(void *ctx, srv_job_t *job, int *status, char *err, size_t err_size)
{
    fake_engine *fe = ctx;
    const srv_gen_request_t *req = srv_job_request(job);
    *status = 503;
    if (now_ns() < fe->ready_at_ns) {
        snprintf(err, err_size, "the model is still loading");
        return -EAGAIN;
    }
    const char *src =
        req->kind == SRV_KIND_COMPLETION ? req->prompt : req->messages[req->n_messages - 1].content;
    int64_t n_prompt = 0;
    if (req->kind == SRV_KIND_COMPLETION)
        n_prompt = count_chars(req->prompt);
    else
        for (size_t i = 0; i < req->n_messages; i++)
            n_prompt += count_chars(req->messages[i].content);
    if (take(&src, "!reject")) {
        *status = 400;
        snprintf(err, err_size, "the fake engine refuses this prompt");
        return -EINVAL;
    }
    if (take(&src, "!busy")) {
        snprintf(err, err_size, "the queue is full");
        return -EAGAIN;
    }
    if (take(&src, "!submit500")) {
        *status = 500;
        snprintf(err, err_size, "secret-submit-detail /var/lib/moeserve");
        return -EIO;
    }
    fake_job *fj = calloc(1, sizeof *fj);
    if (!fj) {
        *status = 500;
        snprintf(err, err_size, "out of memory");
        return -ENOMEM;
    }
    fj->loop = take(&src, "!loop");
    fj->slow = take(&src, "!slow");
    fj->crash = take(&src, "!crash");
    char seed[32] = "";
    if (take(&src, "!seed") && req->has_seed)
        snprintf(seed, sizeof seed, "%llu", (unsigned long long)req->seed);
    size_t n = strlen(seed) + strlen(src);
    fj->text = malloc(n + 1);
    if (!fj->text) {
        free(fj);
        *status = 500;
        snprintf(err, err_size, "out of memory");
        return -ENOMEM;
    }
    snprintf(fj->text, n + 1, "%s%s", seed, src);
    fj->len = n;
    fj->job = job;
    fj->n_prompt = n_prompt;
    fj->max_tokens = req->max_tokens >= 0 ? req->max_tokens : fj->loop ? 10000 : INT64_MAX;
    fj->logprobs = req->logprobs;
    fj->top_logprobs = req->top_logprobs;
    pthread_mutex_lock(&fe->mu);
    if (fe->max_queue > 0 && fe->n_jobs >= fe->max_queue) {
        pthread_mutex_unlock(&fe->mu);
        fake_job_free(fj);
        snprintf(err, err_size, "the queue is full (%d requests)", fe->max_queue);
        return -EAGAIN;
    }
    fj->next = fe->jobs;
    fe->jobs = fj;
    fe->n_jobs++;
    pthread_cond_signal(&fe->cv);
    pthread_mutex_unlock(&fe->mu);
    atomic_fetch_add(&fe->submitted, 1);
    return 0;
}

static void fake_cancel(void *ctx, srv_job_t *job)
{
    /* The engine thread polls srv_job_cancelled(); the job stays valid until its terminal event. */
    fake_engine *fe = ctx;
    (void)job;
    atomic_fetch_add(&fe->cancels, 1);
}

static bool fake_ready(void *ctx)
{
    fake_engine *fe = ctx;
    return now_ns() >= fe->ready_at_ns;
}

/* Advances one job by a token; returns true when the job has ended. */
static bool step_job(fake_job *fj, uint64_t step)
{
    if (srv_job_cancelled(fj->job)) {
        srv_job_post_finish(fj->job, SRV_FINISH_STOP, fj->n_prompt, fj->n_generated);
        return true;
    }
    if (!fj->admitted) {
        fj->admitted = true;
        srv_job_post_admitted(fj->job, 0);
    }
    if (fj->slow && step % 10) return false;
    if (fj->pos >= fj->len && (!fj->loop || fj->len == 0)) {
        srv_job_post_finish(fj->job, SRV_FINISH_STOP, fj->n_prompt, fj->n_generated);
        return true;
    }
    if (fj->pos >= fj->len) fj->pos = 0;
    size_t n = utf8_span(fj->text + fj->pos, fj->len - fj->pos);
    const char *tok = fj->text + fj->pos;
    fj->pos += n;
    if (fj->logprobs) {
        float lp = -0.25f * (float)(1 + fj->n_generated % 3);
        srv_token_logprob_t top[8];
        char alt[8][24];
        size_t n_top = fj->top_logprobs > 8 ? 8 : (size_t)fj->top_logprobs;
        for (size_t i = 0; i < n_top; i++) {
            snprintf(alt[i], sizeof alt[i], "alt%zu", i);
            top[i] = i == 0 ? (srv_token_logprob_t){tok, n, lp}
                            : (srv_token_logprob_t){alt[i], strlen(alt[i]), lp - (float)i};
        }
        srv_logprobs_t l = {.chosen = {tok, n, lp}, .top = top, .n_top = n_top};
        srv_job_post_text(fj->job, tok, n, &l);
    } else {
        srv_job_post_text(fj->job, tok, n, NULL);
    }
    fj->n_generated++;
    if (fj->crash && fj->n_generated == 2) {
        srv_job_post_error(fj->job, 500, "secret-crash-detail: CUDA error at kernels/x.cu:12");
        return true;
    }
    if (fj->n_generated >= fj->max_tokens) {
        srv_job_post_finish(fj->job, SRV_FINISH_LENGTH, fj->n_prompt, fj->n_generated);
        return true;
    }
    if (!fj->loop && fj->pos >= fj->len) {
        srv_job_post_finish(fj->job, SRV_FINISH_STOP, fj->n_prompt, fj->n_generated);
        return true;
    }
    return false;
}

static void *engine_main(void *arg)
{
    fake_engine *fe = arg;
    uint64_t step = 0;
    pthread_mutex_lock(&fe->mu);
    for (;;) {
        while (!fe->quit && !fe->jobs)
            pthread_cond_wait(&fe->cv, &fe->mu);
        if (fe->quit) break;
        step++;
        for (fake_job **p = &fe->jobs; *p;) {
            fake_job *fj = *p;
            if (step_job(fj, step)) {
                *p = fj->next;
                fe->n_jobs--;
                fake_job_free(fj);
            } else {
                p = &fj->next;
            }
        }
        pthread_mutex_unlock(&fe->mu);
        if (fe->delay_ms) usleep((useconds_t)fe->delay_ms * 1000);
        pthread_mutex_lock(&fe->mu);
    }
    /* Shutdown: every job still here ends with a terminal event. */
    while (fe->jobs) {
        fake_job *fj = fe->jobs;
        fe->jobs = fj->next;
        srv_job_post_finish(fj->job, SRV_FINISH_STOP, fj->n_prompt, fj->n_generated);
        fake_job_free(fj);
    }
    pthread_mutex_unlock(&fe->mu);
    return NULL;
}

static void fake_metrics(void *user, srv_mx_buf *b)
{
    fake_engine *fe = user;
    srv_mx_family(b, "moeserve_fake_engine_jobs_total", "counter",
                  "Jobs the fake engine accepted.");
    srv_mx_sample_u64(b, "moeserve_fake_engine_jobs_total", "", atomic_load(&fe->submitted));
    srv_mx_family(b, "moeserve_fake_engine_cancels_total", "counter", "Cancel calls received.");
    srv_mx_sample_u64(b, "moeserve_fake_engine_cancels_total", "", atomic_load(&fe->cancels));
}

int main(int argc, char **argv)
{
    srv_opts_t o = srv_opts_default();
    o.port = 0;
    o.model_id = "fake-model";
    o.idle_timeout_ms = 5000;
    o.header_timeout_ms = 2000;
    const char *keys[8];
    size_t n_keys = 0;
    fake_engine fe = {.delay_ms = 1};
    int loading_ms = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v) {
            fprintf(stderr, "fake_serve: '%s' needs a value\n", a);
            return 2;
        }
        i++;
        if (!strcmp(a, "--port"))
            o.port = atoi(v);
        else if (!strcmp(a, "--model"))
            o.model_id = v;
        else if (!strcmp(a, "--delay-ms"))
            fe.delay_ms = atoi(v);
        else if (!strcmp(a, "--loading-ms"))
            loading_ms = atoi(v);
        else if (!strcmp(a, "--api-key") && n_keys < 8)
            keys[n_keys++] = v;
        else if (!strcmp(a, "--max-body"))
            o.max_body_bytes = (size_t)atol(v);
        else if (!strcmp(a, "--max-header"))
            o.max_header_bytes = (size_t)atol(v);
        else if (!strcmp(a, "--header-timeout-ms"))
            o.header_timeout_ms = (uint32_t)atoi(v);
        else if (!strcmp(a, "--idle-timeout-ms"))
            o.idle_timeout_ms = (uint32_t)atoi(v);
        else if (!strcmp(a, "--max-connections"))
            o.max_connections = atoi(v);
        else if (!strcmp(a, "--max-queue"))
            fe.max_queue = atoi(v);
        else if (!strcmp(a, "--high-water"))
            o.write_high_water_bytes = (size_t)atol(v);
        else if (!strcmp(a, "--send-buffer"))
            o.socket_send_buffer_bytes = atoi(v);
        else if (!strcmp(a, "--drain-ms"))
            o.drain_timeout_ms = (uint32_t)atoi(v);
        else if (!strcmp(a, "--replica"))
            o.replica = v;
        else {
            fprintf(stderr, "fake_serve: unknown option '%s'\n", a);
            return 2;
        }
    }
    o.api_keys = keys;
    o.n_api_keys = n_keys;
    o.write_metrics = fake_metrics;
    o.metrics_user = &fe;
    fe.ready_at_ns = now_ns() + (uint64_t)loading_ms * 1000000ull;
    atomic_init(&fe.submitted, 0);
    atomic_init(&fe.cancels, 0);
    pthread_mutex_init(&fe.mu, NULL);
    pthread_cond_init(&fe.cv, NULL);

    srv_engine_t ops = {
        .ctx = &fe, .submit = fake_submit, .cancel = fake_cancel, .ready = fake_ready};
    char err[256];
    srv_server_t *srv = NULL;
    if (srv_open(&srv, &o, &ops, err, sizeof err)) {
        fprintf(stderr, "fake_serve: %s\n", err);
        return 1;
    }
    int rc = pthread_create(&fe.thread, NULL, engine_main, &fe);
    if (rc) {
        fprintf(stderr, "fake_serve: cannot start the engine thread: %s\n", strerror(rc));
        srv_close(&srv);
        return 1;
    }
    printf("listening on %s:%d\n", o.host, srv_port(srv));
    fflush(stdout);
    int run_rc = srv_run(srv);
    pthread_mutex_lock(&fe.mu);
    fe.quit = true;
    pthread_cond_signal(&fe.cv);
    pthread_mutex_unlock(&fe.mu);
    pthread_join(fe.thread, NULL);
    srv_close(&srv);
    pthread_cond_destroy(&fe.cv);
    pthread_mutex_destroy(&fe.mu);
    fprintf(stderr, "fake_serve: stopped\n");
    return run_rc ? 1 : 0;
}
