/*
 * The server's life: open (bind and listen at once), run the loop, stop gracefully, close.
 *
 * Stopping is a drain, not a cut: the listener closes (a load balancer's next connection goes
 * to another replica, and a refused connection is one it may always retry), idle keep-alive
 * connections close, and every request already on the way — being read or being answered — is
 * answered to the end, each connection closing after its answer.  Only when the drain deadline
 * (opts.drain_timeout_ms; a second SIGTERM / SIGINT ends it at once) passes with requests still
 * running are their jobs cancelled; the engine ends each one with a terminal event, so that
 * streams get their final chunk and `data: [DONE]` and non-streamed requests their answer.
 * Connections close as their last bytes are written; a grace timer closes whatever is left.
 * When no connection remains the server's own handles close and uv_run() returns.
 */
#include "server/server_internal.h"

#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

void srv__conn_close(srv_conn *c);
void srv__http_settings(llhttp_settings_t *s);
void srv__on_connection(uv_stream_t *listener, int status);
void srv__maybe_finish_stop(srv_server_t *s);

srv_opts_t srv_opts_default(void)
{
    return (srv_opts_t){
        .host = "127.0.0.1",
        .port = 8080,
        .model_id = "default",
        .max_header_bytes = 16 * 1024,
        .max_body_bytes = 8 * 1024 * 1024,
        .max_connections = 1024,
        .header_timeout_ms = 10000,
        .idle_timeout_ms = 60000,
        .shutdown_grace_ms = 5000,
        .drain_timeout_ms = 30000,
        .max_n = 16,
        .write_high_water_bytes = 256 * 1024,
    };
}

void srv__log(const srv_server_t *s, int level, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (s && s->opts.log)
        s->opts.log(s->opts.log_user, level, msg);
    else
        fprintf(stderr, "moeserve: %s\n", msg);
}

int srv_port(const srv_server_t *s)
{
    return s->port;
}

static void close_if_open(uv_handle_t *h)
{
    if (h->loop && !uv_is_closing(h)) uv_close(h, NULL);
}

/* No connection left: close the server's own handles so that uv_run() returns. */
void srv__maybe_finish_stop(srv_server_t *s)
{
    if (!s->stopping || s->stop_done || s->conns) return;
    s->stop_done = true;
    close_if_open((uv_handle_t *)&s->grace);
    close_if_open((uv_handle_t *)&s->sigterm);
    close_if_open((uv_handle_t *)&s->sigint);
    close_if_open((uv_handle_t *)&s->listener);
    pthread_mutex_lock(&s->lock);
    s->wake_closed = true;
    pthread_mutex_unlock(&s->lock);
    close_if_open((uv_handle_t *)&s->wake);
}

static void on_grace_timeout(uv_timer_t *t)
{
    srv_server_t *s = SRV_CONTAINER_OF(t, srv_server_t, grace);
    while (s->conns)
        srv__conn_close(s->conns);
}

/* The drain is over: what still runs is cut (cleanly: every answer still ends properly). */
static void cut_running(srv_server_t *s)
{
    if (s->draining_done) return;
    s->draining_done = true;
    for (srv_conn *c = s->conns; c; c = c->next)
        if (c->state == SRV_CONN_HANDLING && c->call) srv__call_cancel_jobs(c->call);
    uv_timer_start(&s->grace, on_grace_timeout, s->opts.shutdown_grace_ms, 0);
}

static void on_drain_timeout(uv_timer_t *t)
{
    srv_server_t *s = SRV_CONTAINER_OF(t, srv_server_t, grace);
    srv__log(s, 1, "drain deadline passed: cancelling the requests still running");
    cut_running(s);
}

static void begin_stop(srv_server_t *s)
{
    if (s->stopping) {
        cut_running(s); /* asked again: stop waiting */
        return;
    }
    s->stopping = true;
    close_if_open((uv_handle_t *)&s->listener);
    int in_flight = 0;
    for (srv_conn *c = s->conns, *next; c; c = next) {
        next = c->next;
        if (c->state == SRV_CONN_HANDLING || c->state == SRV_CONN_HEADERS ||
            c->state == SRV_CONN_BODY) {
            c->keep_alive = false; /* close once this answer is out */
            in_flight++;
        } else if (c->state != SRV_CONN_LINGER || c->fin_sent) {
            srv__conn_close(c); /* idle, or answered and flushed */
        }
    }
    if (in_flight && s->opts.drain_timeout_ms) {
        srv__log(s, 2, "draining: %d request(s) in flight, at most %u ms", in_flight,
                 s->opts.drain_timeout_ms);
        uv_timer_start(&s->grace, on_drain_timeout, s->opts.drain_timeout_ms, 0);
    } else {
        cut_running(s);
    }
    srv__maybe_finish_stop(s);
}

static void on_wake(uv_async_t *a)
{
    srv_server_t *s = SRV_CONTAINER_OF(a, srv_server_t, wake);
    srv__drain_events(s);
    if (atomic_load(&s->stop_requested)) begin_stop(s);
}

static void on_signal(uv_signal_t *h, int signum)
{
    srv_server_t *s = h->data;
    (void)signum;
    begin_stop(s);
}

void srv_stop(srv_server_t *s)
{
    if (!s) return;
    atomic_store(&s->stop_requested, true);
    pthread_mutex_lock(&s->lock);
    if (!s->wake_closed) uv_async_send(&s->wake);
    pthread_mutex_unlock(&s->lock);
}

static char *dup_str(const char *s)
{
    return s ? strdup(s) : NULL;
}

static int resolve(const char *host, int port, struct sockaddr_storage *addr)
{
    if (!host || !*host) host = "0.0.0.0";
    if (!strcmp(host, "localhost")) host = "127.0.0.1";
    if (uv_ip4_addr(host, port, (struct sockaddr_in *)addr) == 0) return 0;
    if (uv_ip6_addr(host, port, (struct sockaddr_in6 *)addr) == 0) return 0;
    return -EINVAL;
}

int srv_open(srv_server_t **out, const srv_opts_t *o, const srv_engine_t *e, char *err,
             size_t err_size)
{
    *out = NULL;
    if (!e || !e->submit) {
        snprintf(err, err_size, "the server needs an engine with a submit function");
        return -EINVAL;
    }
    srv_server_t *s = calloc(1, sizeof *s);
    if (!s) {
        snprintf(err, err_size, "out of memory");
        return -ENOMEM;
    }
    srv_opts_t d = srv_opts_default();
    s->opts = *o;
    if (!s->opts.max_header_bytes) s->opts.max_header_bytes = d.max_header_bytes;
    if (!s->opts.max_body_bytes) s->opts.max_body_bytes = d.max_body_bytes;
    if (s->opts.max_connections <= 0) s->opts.max_connections = d.max_connections;
    if (!s->opts.header_timeout_ms) s->opts.header_timeout_ms = d.header_timeout_ms;
    if (!s->opts.idle_timeout_ms) s->opts.idle_timeout_ms = d.idle_timeout_ms;
    if (!s->opts.shutdown_grace_ms) s->opts.shutdown_grace_ms = d.shutdown_grace_ms;
    if (s->opts.max_n <= 0) s->opts.max_n = d.max_n;
    if (!s->opts.write_high_water_bytes) s->opts.write_high_water_bytes = d.write_high_water_bytes;
    s->engine = *e;
    atomic_init(&s->stop_requested, false);
    s->created = (int64_t)time(NULL);
    pthread_mutex_init(&s->lock, NULL);
    srv__http_settings(&s->settings);
    int rc = -ENOMEM;
    s->host = dup_str(o->host ? o->host : d.host);
    s->model_id = dup_str(o->model_id ? o->model_id : d.model_id);
    s->api_keys = calloc(o->n_api_keys + 1, sizeof *s->api_keys);
    s->opts.replica = s->replica = o->replica && *o->replica ? dup_str(o->replica) : NULL;
    if (!s->host || !s->model_id || !s->api_keys || (o->replica && *o->replica && !s->replica) ||
        srv__stats_init(&s->stats)) {
        snprintf(err, err_size, "out of memory");
        goto fail;
    }
    for (size_t i = 0; i < o->n_api_keys; i++)
        if (!(s->api_keys[i] = dup_str(o->api_keys[i] ? o->api_keys[i] : ""))) {
            snprintf(err, err_size, "out of memory");
            goto fail;
        }
    s->opts.host = s->host;
    s->opts.model_id = s->model_id;
    s->opts.api_keys = (const char *const *)s->api_keys;
    if ((rc = uv_loop_init(&s->loop)) < 0) {
        snprintf(err, err_size, "cannot create the event loop: %s", uv_strerror(rc));
        goto fail;
    }
    s->loop_init = true;
    uv_tcp_init(&s->loop, &s->listener);
    uv_async_init(&s->loop, &s->wake, on_wake);
    uv_timer_init(&s->loop, &s->grace);
    uv_signal_init(&s->loop, &s->sigterm);
    uv_signal_init(&s->loop, &s->sigint);
    s->sigterm.data = s->sigint.data = s;
    struct sockaddr_storage addr;
    if (resolve(s->host, o->port, &addr)) {
        rc = -EINVAL;
        snprintf(err, err_size, "'%s' is not an IPv4 or IPv6 address", s->host);
        goto fail;
    }
    if ((rc = uv_tcp_bind(&s->listener, (const struct sockaddr *)&addr, 0)) < 0 ||
        (rc = uv_listen((uv_stream_t *)&s->listener, 511, srv__on_connection)) < 0) {
        snprintf(err, err_size, "cannot listen on %s:%d: %s", s->host, o->port, uv_strerror(rc));
        goto fail;
    }
    int len = sizeof addr;
    if ((rc = uv_tcp_getsockname(&s->listener, (struct sockaddr *)&addr, &len)) < 0) {
        snprintf(err, err_size, "cannot read the bound port: %s", uv_strerror(rc));
        goto fail;
    }
    s->port = addr.ss_family == AF_INET6 ? ntohs(((struct sockaddr_in6 *)&addr)->sin6_port)
                                         : ntohs(((struct sockaddr_in *)&addr)->sin_port);
    /* A peer that vanished must not kill the process: writes report EPIPE instead. */
    signal(SIGPIPE, SIG_IGN);
    *out = s;
    return 0;
fail:
    srv_close(&s);
    return rc < 0 ? rc : -EINVAL;
}

int srv_run(srv_server_t *s)
{
    if (s->stop_done) return 0;
    uv_signal_start(&s->sigterm, on_signal, SIGTERM);
    uv_signal_start(&s->sigint, on_signal, SIGINT);
    if (atomic_load(&s->stop_requested)) begin_stop(s);
    int rc = uv_run(&s->loop, UV_RUN_DEFAULT);
    (void)rc; /* non-zero only if handles remain, which the stop sequence rules out */
    return 0;
}

void srv_close(srv_server_t **sp)
{
    srv_server_t *s = *sp;
    if (!s) return;
    *sp = NULL;
    if (s->loop_init) {
        /* srv_run() not called or not finished: cut everything, then let the closes run. */
        s->stopping = true;
        while (s->conns)
            srv__conn_close(s->conns);
        srv__maybe_finish_stop(s);
        uv_run(&s->loop, UV_RUN_DEFAULT);
        if (uv_loop_close(&s->loop) != 0) srv__log(s, 1, "the event loop did not close cleanly");
    }
    /* The engine has stopped (the caller's duty): what it posted last is freed unread. */
    for (srv_ev *ev = s->ev_head, *next; ev; ev = next) {
        next = ev->next;
        if (ev != &ev->job->final_ev) free(ev);
    }
    srv__free_all_calls(s);
    srv__stats_free(&s->stats);
    pthread_mutex_destroy(&s->lock);
    for (size_t i = 0; s->api_keys && s->api_keys[i]; i++)
        free(s->api_keys[i]);
    free(s->api_keys);
    free(s->host);
    free(s->replica);
    free(s->model_id);
    free(s);
}
