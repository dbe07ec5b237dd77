/*
 * HTTP/1.1 connections: llhttp parsing, limits, timeouts, routing and response writing.
 *
 * One request is answered at a time per connection.  When llhttp completes a message it is
 * paused (on_message_complete returns HPE_PAUSED); bytes that follow — pipelined requests — are
 * kept in pending_in and parsed once the current response has been queued, so responses go out
 * in request order and a pipelining client can make us hold at most one request's body plus a
 * bounded amount of unparsed input (reading stops beyond it).  Reading goes on while a request
 * is answered so that a client that vanishes (EOF, reset) is noticed at once and its jobs are
 * cancelled.
 *
 * Smuggling defences are llhttp's strict mode (no lenient flags): Content-Length together with
 * Transfer-Encoding, duplicate or invalid Content-Length, chunked not last, bad chunk sizes and
 * bare LF are parse errors, answered 400 and closed.  Any response to a request we could not
 * parse to its end closes the connection, as does 413 / 431 / 408.
 *
 * Closing after a response is a "lingering close": FIN after the last byte, then input is read
 * and discarded until the peer closes or a short timer fires, so that a client still sending an
 * oversized body gets our 413 instead of a reset.
 */
#include "server/server_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define LINGER_MS 2000
#define PENDING_SLACK (64u * 1024u)

static void conn_linger(srv_conn *c);
static void conn_input(srv_conn *c, const char *data, size_t len);
void srv__conn_close(srv_conn *c);

/* ---- writing
 * ------------------------------------------------------------------------------------- */

typedef struct srv_write {
    uv_write_t req;
    srv_conn *c;
    size_t len;
    char data[];
} srv_write;

static void next_request(srv_conn *c);

static void on_write(uv_write_t *req, int status)
{
    srv_write *w = SRV_CONTAINER_OF(req, srv_write, req);
    srv_conn *c = w->c;
    c->write_bytes -= w->len;
    free(w);
    if (c->closing) return;
    if (status < 0) {
        srv__conn_close(c); /* the peer went away */
        return;
    }
    if (c->close_after) {
        if (c->write_bytes == 0 && c->state != SRV_CONN_LINGER) conn_linger(c);
    } else if (c->want_next) {
        if (c->write_bytes <= c->srv->opts.write_high_water_bytes) {
            c->want_next = false;
            srv__request_done(c); /* again: the server may have begun to stop meanwhile */
        }
    } else if (c->call && c->call->headers_sent && !c->call->ended &&
               c->write_bytes < c->srv->opts.write_high_water_bytes) {
        srv__stream_pump(c->call, false);
    }
}

void srv__conn_write(srv_conn *c, const void *data, size_t len)
{
    if (c->closing || !len) return;
    srv_write *w = malloc(sizeof *w + len);
    if (!w) {
        srv__conn_close(c);
        return;
    }
    memcpy(w->data, data, len);
    w->c = c;
    w->len = len;
    uv_buf_t buf = uv_buf_init(w->data, (unsigned)len);
    if (uv_write(&w->req, (uv_stream_t *)&c->tcp, &buf, 1, on_write) < 0) {
        free(w);
        srv__conn_close(c);
        return;
    }
    c->write_bytes += len;
}

static const char *reason(int status)
{
    switch (status) {
    case 200:
        return "OK";
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 408:
        return "Request Timeout";
    case 413:
        return "Content Too Large";
    case 429:
        return "Too Many Requests";
    case 431:
        return "Request Header Fields Too Large";
    case 500:
        return "Internal Server Error";
    case 503:
        return "Service Unavailable";
    case 505:
        return "HTTP Version Not Supported";
    default:
        return status < 400 ? "OK" : status < 500 ? "Bad Request" : "Internal Server Error";
    }
}

static void log_request(srv_conn *c, int status)
{
    if (!c->srv->opts.log_requests) return;
    double ms = (double)(srv__now_ns() - c->t_request_ns) / 1e6;
    srv__log(c->srv, 3, "%s %.*s -> %d (%.1f ms)", llhttp_method_name(c->method),
             (int)(c->url.len > 200 ? 200 : c->url.len), c->url.data ? c->url.data : "", status,
             ms);
}

static void write_head(srv_conn *c, int status, const char *content_type, const char *length_or_te,
                       const char *extra_headers)
{
    char head[1024];
    const char *conn_header = !c->keep_alive || c->srv->stopping ? "Connection: close\r\n"
                              : c->http10                        ? "Connection: keep-alive\r\n"
                                                                 : "";
    int n = snprintf(head, sizeof head, "HTTP/1.1 %d %s\r\nContent-Type: %s\r\n%s%s%s\r\n", status,
                     reason(status), content_type, length_or_te, conn_header,
                     extra_headers ? extra_headers : "");
    if (n > 0 && (size_t)n < sizeof head) srv__conn_write(c, head, (size_t)n);
    srv__count_request(c->srv, c->endpoint, status);
    log_request(c, status);
}

void srv__respond(srv_conn *c, int status, const char *content_type, const char *body, size_t len,
                  const char *extra_headers)
{
    char length[64];
    snprintf(length, sizeof length, "Content-Length: %zu\r\n", len);
    /* A request we could not read to its end leaves the stream in an unknown state. */
    if (status == 400 && c->state != SRV_CONN_HANDLING) c->keep_alive = false;
    if (status == 408 || status == 413 || status == 431) c->keep_alive = false;
    write_head(c, status, content_type, length, extra_headers);
    if (!c->head_only) srv__conn_write(c, body, len);
}

static void respond_error_with(srv_conn *c, const srv_api_err *e, const char *extra)
{
    char headers[256];
    snprintf(headers, sizeof headers, "%s%s%s", extra ? extra : "",
             e->status == 503 || e->status == 429 ? "Retry-After: 1\r\n" : "",
             e->status == 401 ? "WWW-Authenticate: Bearer\r\n" : "");
    size_t len = 0;
    char *body = srv__err_json(e, &len);
    if (body)
        srv__respond(c, e->status, "application/json", body, len, headers);
    else
        srv__respond(c, 500, "application/json", "{}", 2, NULL);
    free(body);
}

void srv__respond_error(srv_conn *c, const srv_api_err *e)
{
    respond_error_with(c, e, NULL);
}

void srv__respond_stream_start(srv_conn *c)
{
    /* HTTP/1.0 has no chunked encoding: the stream ends when the connection does. */
    c->chunked_response = !c->http10;
    if (c->http10) c->keep_alive = false;
    write_head(c, 200, "text/event-stream",
               c->chunked_response ? "Transfer-Encoding: chunked\r\n" : "",
               "Cache-Control: no-cache\r\nX-Accel-Buffering: no\r\n");
}

void srv__stream_write(srv_conn *c, const char *data, size_t len)
{
    if (!c->chunked_response) {
        srv__conn_write(c, data, len);
        return;
    }
    srv_buf b = {0};
    char size[32];
    int n = snprintf(size, sizeof size, "%zx\r\n", len);
    if (srv__buf_append(&b, size, (size_t)n) == 0 && srv__buf_append(&b, data, len) == 0 &&
        srv__buf_append(&b, "\r\n", 2) == 0)
        srv__conn_write(c, b.data, b.len);
    else
        srv__conn_close(c);
    srv__buf_free(&b);
}

void srv__stream_end(srv_conn *c)
{
    if (c->chunked_response) srv__conn_write(c, "0\r\n\r\n", 5);
}

/* ---- connection life ----------------------------------------------------------------------------
 */

static void on_close(uv_handle_t *h)
{
    srv_conn *c = h->data;
    if (--c->open_handles > 0) return;
    srv__buf_free(&c->url);
    srv__buf_free(&c->field);
    srv__buf_free(&c->value);
    srv__buf_free(&c->auth);
    srv__buf_free(&c->body);
    srv__buf_free(&c->pending_in);
    free(c);
}

void srv__maybe_finish_stop(srv_server_t *s);

void srv__conn_close(srv_conn *c)
{
    if (c->closing) return;
    c->closing = true;
    srv_server_t *s = c->srv;
    if (c->call) srv__call_detach(c->call);
    uv_timer_stop(&c->timer);
    uv_close((uv_handle_t *)&c->timer, on_close);
    uv_close((uv_handle_t *)&c->tcp, on_close);
    if (c->prev)
        c->prev->next = c->next;
    else
        s->conns = c->next;
    if (c->next) c->next->prev = c->prev;
    s->stats.connections--;
    if (s->stopping) srv__maybe_finish_stop(s);
}

static void on_linger_timeout(uv_timer_t *t)
{
    srv__conn_close(t->data);
}

static void on_shutdown(uv_shutdown_t *req, int status)
{
    srv_conn *c = SRV_CONTAINER_OF(req, srv_conn, shutdown_req);
    c->fin_sent = status == 0;
    if (c->closing) return;
    if (status < 0 || c->srv->stopping) srv__conn_close(c);
}

static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf);
static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf);

static void start_reading(srv_conn *c)
{
    if (c->reading || c->closing) return;
    if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) == 0) c->reading = true;
}

static void conn_linger(srv_conn *c)
{
    if (c->state == SRV_CONN_LINGER || c->closing) return;
    c->state = SRV_CONN_LINGER;
    start_reading(c);
    if (uv_shutdown(&c->shutdown_req, (uv_stream_t *)&c->tcp, on_shutdown) < 0) {
        srv__conn_close(c);
        return;
    }
    uv_timer_start(&c->timer, on_linger_timeout, LINGER_MS, 0);
}

static void on_timeout(uv_timer_t *t)
{
    srv_conn *c = t->data;
    if (c->state == SRV_CONN_HEADERS || c->state == SRV_CONN_BODY) {
        srv_api_err e;
        srv__err_set(&e, 408, NULL,
                     c->state == SRV_CONN_HEADERS ? "the request headers did not arrive in time"
                                                  : "the request body stalled");
        c->state = SRV_CONN_HANDLING;
        c->keep_alive = false;
        srv__respond_error(c, &e);
        srv__request_done(c);
    } else if (c->state == SRV_CONN_IDLE) {
        srv__conn_close(c);
    }
}

void srv__request_done(srv_conn *c)
{
    if (c->closing) return;
    if (!c->keep_alive || c->srv->stopping) {
        c->close_after = true;
        if (c->write_bytes == 0) conn_linger(c);
        return;
    }
    if (c->write_bytes > c->srv->opts.write_high_water_bytes) {
        c->want_next = true; /* a pipelining client that does not read waits for its answers */
        return;
    }
    next_request(c);
}

static void next_request(srv_conn *c)
{
    c->state = SRV_CONN_IDLE;
    c->chunked_response = false;
    c->body.len = 0;
    uv_timer_start(&c->timer, on_timeout, c->srv->opts.idle_timeout_ms, 0);
    llhttp_resume(&c->parser);
    start_reading(c);
    if (c->feeding)
        c->resume = true; /* conn_input's loop parses pending_in */
    else if (c->pending_in.len)
        conn_input(c, NULL, 0);
}

/* ---- parsing
 * ------------------------------------------------------------------------------------- */

static int fail(srv_conn *c, int status)
{
    c->fail_status = status;
    return -1;
}

static int count_header_bytes(srv_conn *c, size_t len)
{
    c->header_bytes += len;
    return c->header_bytes > c->srv->opts.max_header_bytes ? fail(c, 431) : 0;
}

static int on_message_begin(llhttp_t *p)
{
    srv_conn *c = p->data;
    c->url.len = c->field.len = c->value.len = c->auth.len = c->body.len = 0;
    c->in_value = c->has_auth = c->expect_continue = c->header_error = false;
    c->header_bytes = 0;
    c->fail_status = 0;
    c->head_only = false;
    c->endpoint = SRV_EP_OTHER;
    c->state = SRV_CONN_HEADERS;
    c->t_request_ns = srv__now_ns();
    uv_timer_start(&c->timer, on_timeout, c->srv->opts.header_timeout_ms, 0);
    return 0;
}

static int on_url(llhttp_t *p, const char *at, size_t len)
{
    srv_conn *c = p->data;
    if (count_header_bytes(c, len)) return -1;
    return srv__buf_append(&c->url, at, len) ? fail(c, 500) : 0;
}

static void finish_header(srv_conn *c)
{
    const char *name = c->field.data ? c->field.data : "";
    const char *value = c->value.data ? c->value.data : "";
    if (!strcasecmp(name, "authorization")) {
        if (c->has_auth) c->header_error = true; /* which one would count? */
        c->has_auth = true;
        c->auth.len = 0;
        if (srv__buf_append(&c->auth, value, c->value.len)) c->header_error = true;
    } else if (!strcasecmp(name, "expect")) {
        c->expect_continue = !strcasecmp(value, "100-continue");
    }
    c->field.len = c->value.len = 0;
    c->in_value = false;
}

/* RFC 9110 token characters.  llhttp is built without LLHTTP_STRICT_MODE, which lets a space
 * or other separators into a field name ("Content Length"); a proxy in front of us might read
 * such a header differently, so it is refused here. */
static bool is_tchar(unsigned char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
           (ch && strchr("!#$%&'*+-.^_`|~", ch));
}

static int on_header_field(llhttp_t *p, const char *at, size_t len)
{
    srv_conn *c = p->data;
    if (c->in_value) finish_header(c);
    for (size_t i = 0; i < len; i++)
        if (!is_tchar((unsigned char)at[i])) {
            c->header_error = true;
            return fail(c, 400);
        }
    if (count_header_bytes(c, len + 4)) return -1; /* ": " and CRLF count too */
    return srv__buf_append(&c->field, at, len) ? fail(c, 500) : 0;
}

static int on_header_value(llhttp_t *p, const char *at, size_t len)
{
    srv_conn *c = p->data;
    c->in_value = true;
    if (count_header_bytes(c, len)) return -1;
    return srv__buf_append(&c->value, at, len) ? fail(c, 500) : 0;
}

static int on_headers_complete(llhttp_t *p)
{
    srv_conn *c = p->data;
    if (c->in_value || c->field.len) finish_header(c);
    if (c->header_error) return fail(c, 400);
    if (p->http_major != 1) return fail(c, 505);
    if ((p->flags & F_CONTENT_LENGTH) && p->content_length > c->srv->opts.max_body_bytes)
        return fail(c, 413);
    c->method = p->method;
    c->http10 = p->http_major == 1 && p->http_minor == 0;
    c->keep_alive = llhttp_should_keep_alive(p) && !p->upgrade;
    if (c->expect_continue && !c->http10) {
        static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
        srv__conn_write(c, cont, sizeof cont - 1);
    }
    c->state = SRV_CONN_BODY;
    uv_timer_start(&c->timer, on_timeout, c->srv->opts.idle_timeout_ms, 0);
    return 0;
}

static int on_body(llhttp_t *p, const char *at, size_t len)
{
    srv_conn *c = p->data;
    if (c->body.len + len > c->srv->opts.max_body_bytes) return fail(c, 413);
    return srv__buf_append(&c->body, at, len) ? fail(c, 500) : 0;
}

static int on_message_complete(llhttp_t *p)
{
    srv_conn *c = p->data;
    c->state = SRV_CONN_HANDLING;
    uv_timer_stop(&c->timer);
    return HPE_PAUSED;
}

void srv__http_settings(llhttp_settings_t *s);
void srv__http_settings(llhttp_settings_t *s)
{
    llhttp_settings_init(s);
    s->on_message_begin = on_message_begin;
    s->on_url = on_url;
    s->on_header_field = on_header_field;
    s->on_header_value = on_header_value;
    s->on_headers_complete = on_headers_complete;
    s->on_body = on_body;
    s->on_message_complete = on_message_complete;
}

/* ---- routing
 * ------------------------------------------------------------------------------------- */

static bool authorized(const srv_conn *c)
{
    const srv_server_t *s = c->srv;
    if (!s->opts.n_api_keys) return true;
    if (!c->has_auth) return false;
    const char *v = c->auth.data;
    size_t n = c->auth.len;
    while (n && (*v == ' ' || *v == '\t'))
        v++, n--;
    if (n < 7 || strncasecmp(v, "bearer ", 7) != 0) return false;
    v += 7, n -= 7;
    while (n && (*v == ' ' || *v == '\t'))
        v++, n--;
    while (n && (v[n - 1] == ' ' || v[n - 1] == '\t'))
        n--;
    /* Constant time in the given key: every configured key is compared over its full length. */
    unsigned match = 0;
    for (size_t k = 0; k < s->opts.n_api_keys; k++) {
        const char *key = s->api_keys[k];
        size_t klen = strlen(key);
        unsigned diff = klen != n;
        for (size_t i = 0; i < klen; i++)
            diff |= (unsigned char)key[i] ^ (i < n ? (unsigned char)v[i] : 0u);
        match |= diff == 0;
    }
    return match != 0;
}

static srv_endpoint classify(const char *path, size_t len)
{
#define IS(lit) (len == sizeof(lit) - 1 && !memcmp(path, lit, len))
    if (IS("/v1/chat/completions")) return SRV_EP_CHAT;
    if (IS("/v1/completions")) return SRV_EP_COMPLETIONS;
    if (IS("/v1/models") || (len > 11 && !memcmp(path, "/v1/models/", 11))) return SRV_EP_MODELS;
    if (IS("/health")) return SRV_EP_HEALTH;
    if (IS("/metrics")) return SRV_EP_METRICS;
    if (IS("/v1/experts/stats")) return SRV_EP_EXPERTS;
    if (IS("/dashboard") || IS("/dashboard/")) return SRV_EP_DASHBOARD;
#undef IS
    return SRV_EP_OTHER;
}

static void respond_json(srv_conn *c, int status, char *body, size_t len, const char *extra)
{
    if (body)
        srv__respond(c, status, "application/json", body, len, extra);
    else
        srv__respond(c, 500, "application/json", "{}", 2, NULL);
    free(body);
}

static void not_allowed(srv_conn *c, const char *allow)
{
    srv_api_err e;
    char headers[64];
    srv__err_set(&e, 405, NULL, "Method %s is not allowed here; use %s",
                 llhttp_method_name(c->method), allow);
    snprintf(headers, sizeof headers, "Allow: %s\r\n", allow);
    respond_error_with(c, &e, headers);
}

static void serve_metrics(srv_conn *c)
{
    srv_server_t *s = c->srv;
    srv_mx_buf b = {0};
    srv__write_metrics(s, &b);
    if (s->opts.write_metrics) s->opts.write_metrics(s->opts.metrics_user, &b);
    if (s->replica && !b.failed) {
        srv_mx_buf labelled = {0};
        if (srv_mx_with_label(&b, "replica", s->replica, &labelled)) labelled.failed = true;
        srv_mx_buf_release(&b);
        b = labelled;
    }
    if (b.failed) {
        srv_api_err e;
        srv__err_set(&e, 500, NULL, "out of memory");
        srv__respond_error(c, &e);
    } else {
        srv__respond(c, 200, "text/plain; version=0.0.4; charset=utf-8", b.data ? b.data : "",
                     b.len, NULL);
    }
    srv_mx_buf_release(&b);
}

static void serve_expert_stats(srv_conn *c)
{
    srv_server_t *s = c->srv;
    srv_mx_buf b = {0};
    s->opts.write_expert_stats(s->opts.metrics_user, &b);
    if (b.failed) {
        srv_api_err e;
        srv__err_set(&e, 500, NULL, "out of memory");
        srv__respond_error(c, &e);
    } else {
        srv__respond(c, 200, "application/json", b.data ? b.data : "{}", b.data ? b.len : 2,
                     "Cache-Control: no-store\r\n");
    }
    srv_mx_buf_release(&b);
}

static void dispatch(srv_conn *c)
{
    srv_server_t *s = c->srv;
    const char *url = c->url.data ? c->url.data : "";
    size_t url_len = c->url.len;
    /* The absolute form (RFC 9112 3.2.2) that servers must accept: http://host/path. */
    static const char *const schemes[] = {"http://", "https://"};
    for (size_t k = 0; k < 2; k++) {
        size_t n = strlen(schemes[k]);
        if (url_len >= n && !strncasecmp(url, schemes[k], n)) {
            const char *slash = memchr(url + n, '/', url_len - n);
            size_t skip = slash ? (size_t)(slash - url) : url_len;
            url += skip;
            url_len -= skip;
            break;
        }
    }
    const char *q = memchr(url, '?', url_len);
    size_t path_len = q ? (size_t)(q - url) : url_len;
    c->endpoint = classify(url, path_len);
    bool get = c->method == HTTP_GET || c->method == HTTP_HEAD;
    c->head_only = c->method == HTTP_HEAD;
    srv_api_err e;
    /* The page holds no data (it asks /v1/experts/stats, with the key the user gives it), so a
     * browser can open it without an Authorization header. */
    if (c->endpoint != SRV_EP_HEALTH && c->endpoint != SRV_EP_DASHBOARD && !authorized(c)) {
        srv__err_set(&e, 401, NULL,
                     "Incorrect or missing API key: send 'Authorization: Bearer KEY'");
        e.code = "invalid_api_key";
        srv__respond_error(c, &e);
    } else if (c->endpoint == SRV_EP_HEALTH) {
        if (!get) {
            not_allowed(c, "GET, HEAD");
        } else if (s->engine.unavailable && s->engine.unavailable(s->engine.ctx)) {
            cJSON *o = cJSON_CreateObject();
            char *body =
                o && cJSON_AddStringToObject(o, "status", "unavailable") &&
                        cJSON_AddStringToObject(o, "message", s->engine.unavailable(s->engine.ctx))
                    ? cJSON_PrintUnformatted(o)
                    : NULL;
            cJSON_Delete(o);
            srv__respond(c, 503, "application/json", body ? body : "{\"status\":\"unavailable\"}",
                         body ? strlen(body) : 24, NULL);
            free(body);
        } else if (s->stopping) { /* a balancer should send nothing more here */
            srv__respond(c, 503, "application/json", "{\"status\":\"draining\"}", 21, NULL);
        } else if (!s->engine.ready || s->engine.ready(s->engine.ctx)) {
            srv__respond(c, 200, "application/json", "{\"status\":\"ok\"}", 15, NULL);
        } else {
            srv__respond(c, 503, "application/json", "{\"status\":\"loading\"}", 20,
                         "Retry-After: 1\r\n");
        }
    } else if (c->endpoint == SRV_EP_METRICS) {
        if (get)
            serve_metrics(c);
        else
            not_allowed(c, "GET, HEAD");
    } else if (c->endpoint == SRV_EP_EXPERTS && s->opts.write_expert_stats) {
        if (get)
            serve_expert_stats(c);
        else
            not_allowed(c, "GET, HEAD");
    } else if (c->endpoint == SRV_EP_DASHBOARD && s->opts.write_expert_stats) {
        if (get)
            srv__respond(c, 200, "text/html; charset=utf-8", srv__dashboard_html,
                         srv__dashboard_html_len, "Cache-Control: no-cache\r\n");
        else
            not_allowed(c, "GET, HEAD");
    } else if (c->endpoint == SRV_EP_MODELS) {
        size_t len = 0;
        if (!get) {
            not_allowed(c, "GET, HEAD");
        } else if (path_len == 10) {
            char *body = srv__models_json(s->model_id, s->created, false, &len);
            respond_json(c, 200, body, len, NULL);
        } else if (path_len - 11 == strlen(s->model_id) &&
                   !memcmp(url + 11, s->model_id, path_len - 11)) {
            char *body = srv__models_json(s->model_id, s->created, true, &len);
            respond_json(c, 200, body, len, NULL);
        } else {
            srv__err_set(&e, 404, "model", "The model '%.*s' does not exist",
                         (int)(path_len - 11 > 200 ? 200 : path_len - 11), url + 11);
            e.code = "model_not_found";
            srv__respond_error(c, &e);
        }
    } else if (c->endpoint == SRV_EP_CHAT || c->endpoint == SRV_EP_COMPLETIONS) {
        if (c->method != HTTP_POST) {
            not_allowed(c, "POST");
        } else if (s->stopping) {
            srv__err_set(&e, 503, NULL, "the server is shutting down");
            srv__respond_error(c, &e);
        } else {
            srv__start_call(c, c->endpoint == SRV_EP_CHAT ? SRV_KIND_CHAT : SRV_KIND_COMPLETION);
            return; /* it calls srv__request_done when its response is complete */
        }
    } else {
        srv__err_set(&e, 404, NULL, "Unknown request URL: %s %.*s", llhttp_method_name(c->method),
                     (int)(path_len > 200 ? 200 : path_len), url);
        e.code = "unknown_url";
        srv__respond_error(c, &e);
    }
    srv__request_done(c);
}

/* ---- input
 * --------------------------------------------------------------------------------------- */

static void parse_error(srv_conn *c)
{
    int status = c->fail_status ? c->fail_status : 400;
    srv_api_err e;
    if (status == 431)
        srv__err_set(&e, 431, NULL, "the request line and headers exceed %zu bytes",
                     c->srv->opts.max_header_bytes);
    else if (status == 413)
        srv__err_set(&e, 413, NULL, "the request body exceeds %zu bytes",
                     c->srv->opts.max_body_bytes);
    else if (status == 505)
        srv__err_set(&e, 505, NULL, "only HTTP/1.0 and HTTP/1.1 are served");
    else if (status == 400 && c->header_error)
        srv__err_set(&e, 400, NULL,
                     "malformed request: an invalid header name or a duplicate "
                     "Authorization header");
    else if (status == 400)
        srv__err_set(&e, 400, NULL, "malformed request: %s", llhttp_get_error_reason(&c->parser));
    else
        srv__err_set(&e, status, NULL, "internal error");
    uv_timer_stop(&c->timer);
    c->state = SRV_CONN_HANDLING;
    c->keep_alive = false;
    c->method = c->parser.method;
    srv__respond_error(c, &e);
    srv__request_done(c);
}

/* Parses data (NULL: what waits in pending_in) until a request is complete; the rest waits. */
static void parse(srv_conn *c, const char *data, size_t len)
{
    enum llhttp_errno err = llhttp_execute(&c->parser, data, len);
    if (err == HPE_OK) return;
    if (err == HPE_PAUSED || err == HPE_PAUSED_UPGRADE) {
        const char *pos = llhttp_get_error_pos(&c->parser);
        size_t used = pos && pos >= data && pos <= data + len ? (size_t)(pos - data) : len;
        if (used < len && srv__buf_append(&c->pending_in, data + used, len - used)) {
            srv__conn_close(c);
            return;
        }
        if (err == HPE_PAUSED_UPGRADE) c->keep_alive = false; /* no upgrades: answer, then close */
        dispatch(c);
        return;
    }
    parse_error(c);
}

static void conn_input(srv_conn *c, const char *data, size_t len)
{
    c->feeding = true;
    if (data)
        parse(c, data, len);
    else
        c->resume = true;
    while (c->resume && !c->closing && c->state != SRV_CONN_HANDLING &&
           c->state != SRV_CONN_LINGER) {
        c->resume = false;
        srv_buf in = c->pending_in;
        c->pending_in = (srv_buf){0};
        if (in.len) parse(c, in.data, in.len);
        srv__buf_free(&in);
    }
    c->feeding = false;
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    /* One buffer for all connections: a read is parsed or copied before the next one. */
    srv_conn *c = h->data;
    (void)suggested;
    *buf = uv_buf_init(c->srv->read_buf, sizeof c->srv->read_buf);
}

static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf)
{
    srv_conn *c = SRV_CONTAINER_OF(stream, srv_conn, tcp);
    if (nread == 0 || c->closing) return;
    if (nread < 0) {
        srv__conn_close(c); /* EOF or reset: the client is gone (its jobs are cancelled) */
        return;
    }
    switch (c->state) {
    case SRV_CONN_LINGER:
        return;
    case SRV_CONN_HANDLING: {
        srv_server_t *s = c->srv;
        if (srv__buf_append(&c->pending_in, buf->base, (size_t)nread)) {
            srv__conn_close(c);
            return;
        }
        if (c->pending_in.len > s->opts.max_header_bytes + s->opts.max_body_bytes + PENDING_SLACK) {
            uv_read_stop(stream);
            c->reading = false;
        }
        return;
    }
    case SRV_CONN_BODY:
        uv_timer_start(&c->timer, on_timeout, c->srv->opts.idle_timeout_ms, 0);
        /* fall through */
    default:
        conn_input(c, buf->base, (size_t)nread);
    }
}

/* ---- accepting
 * ----------------------------------------------------------------------------------- */

void srv__on_connection(uv_stream_t *listener, int status);
void srv__on_connection(uv_stream_t *listener, int status)
{
    srv_server_t *s = SRV_CONTAINER_OF(listener, srv_server_t, listener);
    if (status < 0) return;
    srv_conn *c = calloc(1, sizeof *c);
    if (!c) return;
    c->srv = s;
    uv_tcp_init(&s->loop, &c->tcp);
    uv_timer_init(&s->loop, &c->timer);
    c->tcp.data = c->timer.data = c;
    c->open_handles = 2;
    c->next = s->conns;
    if (s->conns) s->conns->prev = c;
    s->conns = c;
    s->stats.connections++;
    if (uv_accept(listener, (uv_stream_t *)&c->tcp) < 0 || s->stopping) {
        srv__conn_close(c);
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    if (s->opts.socket_send_buffer_bytes > 0) {
        int size = s->opts.socket_send_buffer_bytes;
        uv_send_buffer_size((uv_handle_t *)&c->tcp, &size);
    }
    llhttp_init(&c->parser, HTTP_REQUEST, &s->settings);
    c->parser.data = c;
    c->keep_alive = true;
    c->endpoint = SRV_EP_OTHER;
    if (s->stats.connections > s->opts.max_connections) {
        srv_api_err e;
        srv__err_set(&e, 503, NULL, "too many connections (the limit is %d)",
                     s->opts.max_connections);
        c->state = SRV_CONN_HANDLING;
        c->keep_alive = false;
        srv__respond_error(c, &e);
        srv__request_done(c);
        return;
    }
    start_reading(c);
    uv_timer_start(&c->timer, on_timeout, s->opts.header_timeout_ms, 0);
}
