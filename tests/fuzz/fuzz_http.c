/*
 * fuzz_http — arbitrary bytes as what a client sends on one connection, through the real
 * server: libuv accepts it, llhttp parses it with the server's callbacks (limits, header
 * checks, routing, keep-alive and pipelining), the OpenAI validator reads each body, a fake
 * engine answers the generation requests (plain and streamed, n > 1, logprobs, engine errors),
 * and every response is written back.  The point: no input crashes, leaks, or leaves a
 * connection or a call behind.
 *
 * Why a socket and not an in-memory connection: the server reads and writes through a uv_tcp_t
 * it accepts itself, and the code between the bytes and the handlers (partial reads, pipelined
 * input kept while a response is pending, back-pressure, lingering close) is part of what must
 * hold.  The loop runs on this thread, one non-blocking step at a time, between the client's
 * writes and reads, so no thread or timer decides the order: an input replays the same way.
 * The client resets the connection at the end (SO_LINGER 0) so that no TIME_WAIT socket is left
 * per input, which would exhaust the loopback ports.
 *
 * Input: a first byte 0x01 sends the rest to a server that requires "Authorization: Bearer k",
 * 0x02 to one whose engine is still loading; anything else goes, whole, to a plain server.
 * The limits are small (2 KiB of headers, 8 KiB of body, 512 bytes of write high water) so that
 * short inputs reach them.  The fake engine echoes the source text (the last message, or the
 * prompt) back one character per step, at most 8; a source starting with !reject, !busy or
 * !fail is refused at submit (400, 503, 500), one starting with !crash fails after one token.
 */
#include "base/utf8.h"
#include "fuzz.h"
#include "server/server_internal.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAX_TOKENS_PER_JOB 8
#define MAX_ROUNDS 2000
#define QUIET_ROUNDS 3

/* ---- the fake engine (loop thread only) ------------------------------------------------------ */

typedef struct fake_job {
    srv_job_t *job;
    const char *src;
    size_t src_len, pos;
    int64_t n_generated;
    bool admitted, cancelled, crash;
} fake_job;

typedef struct fake_engine {
    fake_job *jobs;
    size_t n_jobs, cap_jobs;
    bool loading;
} fake_engine;

static bool starts(const char *s, size_t n, const char *cmd)
{
    size_t k = strlen(cmd);
    return n >= k && !memcmp(s, cmd, k);
}

static int fake_submit(void *ctx, srv_job_t *job, int *status, char *err, size_t err_size)
{
    fake_engine *e = ctx;
    const srv_gen_request_t *r = srv_job_request(job);
    const char *src = r->kind == SRV_KIND_CHAT ? r->messages[r->n_messages - 1].content : r->prompt;
    size_t len = strlen(src);
    if (starts(src, len, "!reject") || starts(src, len, "!busy") || starts(src, len, "!fail")) {
        *status = src[1] == 'r' ? 400 : src[1] == 'b' ? 503 : 500;
        snprintf(err, err_size, "refused: %s", src);
        return -1;
    }
    if (e->n_jobs == e->cap_jobs) {
        size_t cap = e->cap_jobs ? 2 * e->cap_jobs : 16;
        fake_job *grown = realloc(e->jobs, cap * sizeof *grown);
        if (!grown) {
            *status = 500;
            snprintf(err, err_size, "out of memory");
            return -1;
        }
        e->jobs = grown;
        e->cap_jobs = cap;
    }
    e->jobs[e->n_jobs++] =
        (fake_job){.job = job, .src = src, .src_len = len, .crash = starts(src, len, "!crash")};
    return 0;
}

static void fake_cancel(void *ctx, srv_job_t *job)
{
    fake_engine *e = ctx;
    for (size_t i = 0; i < e->n_jobs; i++)
        if (e->jobs[i].job == job) e->jobs[i].cancelled = true;
}

static bool fake_ready(void *ctx)
{
    return !((fake_engine *)ctx)->loading;
}

static void post_token(fake_job *j)
{
    const srv_gen_request_t *r = srv_job_request(j->job);
    bool incomplete;
    size_t bad_at;
    const char *text = j->src + j->pos;
    size_t len = utf8_check(text, j->src_len - j->pos, &incomplete, &bad_at);
    j->pos += len ? len : 1;
    if (!len) text = UTF8_REPLACEMENT, len = 3; /* the engine only posts whole characters */
    srv_token_logprob_t top[6];
    size_t n_top = r->top_logprobs > 0 ? (size_t)r->top_logprobs : 0;
    if (n_top > 6) n_top = 6;
    for (size_t i = 0; i < n_top; i++)
        top[i] = (srv_token_logprob_t){i ? "alt" : text, i ? 3 : len, -0.25f * (float)(i + 1)};
    srv_logprobs_t lp = {.chosen = {text, len, -0.25f}, .top = top, .n_top = n_top};
    srv_job_post_text(j->job, text, len, r->logprobs ? &lp : NULL);
    j->n_generated++;
}

/* One engine step: every running job advances by one token or ends. */
static void fake_step(fake_engine *e)
{
    for (size_t i = 0; i < e->n_jobs;) {
        fake_job *j = &e->jobs[i];
        const srv_gen_request_t *r = srv_job_request(j->job);
        int64_t max_tokens = r->max_tokens > 0 && r->max_tokens < MAX_TOKENS_PER_JOB
                                 ? r->max_tokens
                                 : MAX_TOKENS_PER_JOB;
        bool end = true;
        if (j->cancelled) {
            srv_job_post_finish(j->job, SRV_FINISH_STOP, (int64_t)j->src_len, j->n_generated);
        } else if (!j->admitted) {
            srv_job_post_admitted(j->job, (int64_t)(j->src_len / 2));
            j->admitted = true;
            end = false;
        } else if (j->crash && j->n_generated == 1) {
            srv_job_post_error(j->job, 500, "the fake engine crashed, as asked");
        } else if (j->pos >= j->src_len) {
            srv_job_post_finish(j->job, SRV_FINISH_STOP, (int64_t)j->src_len, j->n_generated);
        } else if (j->n_generated >= max_tokens) {
            srv_job_post_finish(j->job, SRV_FINISH_LENGTH, (int64_t)j->src_len, j->n_generated);
        } else {
            post_token(j);
            end = false;
        }
        if (end)
            e->jobs[i] = e->jobs[--e->n_jobs]; /* the job must not be touched after its end */
        else
            i++;
    }
}

/* ---- the servers --------------------------------------------------------------------------------
 */

typedef struct fuzz_server {
    srv_server_t *srv;
    fake_engine engine;
} fuzz_server;

enum { PLAIN, KEYED, LOADING, N_SERVERS };
static fuzz_server servers[N_SERVERS];

static void quiet_log(void *user, int level, const char *msg)
{
    (void)user, (void)level, (void)msg;
}

static void write_metrics(void *user, srv_mx_buf *b)
{
    (void)user;
    srv_mx_family(b, "fuzz_engine_steps", "counter", "Steps the fake engine ran.");
    srv_mx_sample_u64(b, "fuzz_engine_steps_total", NULL, 1);
}

static void write_expert_stats(void *user, srv_mx_buf *b)
{
    (void)user;
    srv_mx_printf(b, "{\"layers\":[]}");
}

static void open_servers(void)
{
    static const char *const keys[] = {"k"};
    for (int i = 0; i < N_SERVERS; i++) {
        fuzz_server *fs = &servers[i];
        fs->engine.loading = i == LOADING;
        srv_opts_t o = srv_opts_default();
        o.port = 0;
        o.max_header_bytes = 2048;
        o.max_body_bytes = 8192;
        o.max_n = 4;
        o.write_high_water_bytes = 512;
        o.api_keys = i == KEYED ? keys : NULL;
        o.n_api_keys = i == KEYED ? 1 : 0;
        o.log = quiet_log;
        o.write_metrics = write_metrics;
        o.write_expert_stats = i == PLAIN ? write_expert_stats : NULL;
        srv_engine_t e = {
            .ctx = &fs->engine, .submit = fake_submit, .cancel = fake_cancel, .ready = fake_ready};
        char err[256];
        if (srv_open(&fs->srv, &o, &e, err, sizeof err) != 0) {
            fprintf(stderr, "fuzz_http: %s\n", err);
            abort(); /* no loopback to listen on: a broken setup, not a finding */
        }
    }
}

/* ---- one connection
 * ------------------------------------------------------------------------------ */

/* Runs what is ready on the loop, then an engine step. */
static void pump(fuzz_server *fs)
{
    uv_run(&fs->srv->loop, UV_RUN_NOWAIT);
    fake_step(&fs->engine);
}

static bool idle(const fuzz_server *fs)
{
    const srv_server_t *s = fs->srv;
    return fs->engine.n_jobs == 0 && s->ev_head == NULL;
}

/* Reads what the server sent; returns the bytes read, *eof once the server closed its side. */
static size_t drain(int fd, bool *eof)
{
    static char buf[64 * 1024];
    size_t total = 0;
    for (;;) {
        ssize_t n = recv(fd, buf, sizeof buf, 0);
        if (n > 0) {
            total += (size_t)n;
            continue;
        }
        if (n == 0 || (errno != EAGAIN && errno != EINTR)) *eof = true;
        if (n < 0 && errno == EINTR) continue;
        return total;
    }
}

/* Pumps until the server closed the connection or nothing happens for a few rounds. */
static void settle(fuzz_server *fs, int fd, bool *eof)
{
    for (int round = 0, quiet = 0; round < MAX_ROUNDS && quiet < QUIET_ROUNDS && !*eof; round++) {
        pump(fs);
        size_t got = drain(fd, eof);
        quiet = got == 0 && idle(fs) ? quiet + 1 : 0;
    }
}

static int connect_to(const fuzz_server *fs)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) return -1;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)srv_port(fs->srv))};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    /* Non-blocking, then a wait: libFuzzer's timers interrupt a blocking connect (EINTR), and
     * an interrupted connect cannot be restarted.  On loopback the handshake completes without
     * the server's accept(), so this returns at once. */
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0 && errno != EINPROGRESS) {
        close(fd);
        return -1;
    }
    struct pollfd p = {.fd = fd, .events = POLLOUT};
    int ready, error = 0;
    socklen_t len = sizeof error;
    while ((ready = poll(&p, 1, 5000)) < 0 && errno == EINTR)
        ;
    if (ready != 1 || getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &len) != 0 || error) {
        errno = error ? error : ETIMEDOUT;
        close(fd);
        return -1;
    }
    return fd;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!servers[0].srv) open_servers();
    fuzz_server *fs = &servers[PLAIN];
    if (size && (data[0] == 1 || data[0] == 2)) {
        fs = &servers[data[0] == 1 ? KEYED : LOADING];
        data++, size--;
    }
    int fd = connect_to(fs);
    if (fd < 0) {
        perror("fuzz_http: cannot connect to the server");
        abort(); /* the setup, not the input: say so rather than report a finding */
    }
    bool eof = false;
    for (size_t off = 0; off < size && !eof;) {
        ssize_t n = send(fd, data + off, size - off, MSG_NOSIGNAL);
        if (n > 0) {
            off += (size_t)n;
        } else if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
            pump(fs);
            drain(fd, &eof);
        } else {
            break; /* the server closed on us (a 4xx with Connection: close) */
        }
    }
    settle(fs, fd, &eof);
    /* No shutdown(SHUT_WR) first: the side that sends the first FIN keeps the 4-tuple in
     * TIME_WAIT, and after some 100k inputs no port is left to connect from.  The server takes
     * a reset exactly as it takes an end of file (both close the connection). */
    struct linger reset = {.l_onoff = 1, .l_linger = 0};
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &reset, sizeof reset);
    close(fd);
    /* Every connection and call of this input must go away by itself. */
    srv_server_t *s = fs->srv;
    int round = 0;
    for (; round < MAX_ROUNDS && (s->conns || s->calls || !idle(fs)); round++)
        pump(fs);
    FUZZ_CHECK(!s->conns && !s->calls && idle(fs));
    return 0;
}
