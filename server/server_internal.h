/*
 * Shared between the server/ sources (prefix srv__): the connection, the generation call and its
 * jobs, the engine-to-loop event queue, the per-request arena and the JSON builders.
 *
 * Ownership, all on the loop thread unless marked:
 * - srv_server owns the connections (a list) and the live calls (a list).
 * - A connection owns at most one current call; a call is reference counted: one reference
 *   from its connection while attached, one per accepted job whose terminal event has not been
 *   processed.  When a client goes, the connection detaches (call->conn = NULL), cancels the
 *   jobs, and the call lives on until its last terminal event.
 * - Events are allocated on the posting thread and freed on the loop thread; a job's terminal
 *   event is embedded in the job, so posting it cannot fail.
 */
#ifndef MOE_SERVER_SERVER_INTERNAL_H
#define MOE_SERVER_SERVER_INTERNAL_H

#include "base/arena.h"
#include "server/metrics.h"
#include "server/server.h"

#include <cjson/cJSON.h>
#include <llhttp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <uv.h>

#define SRV_CONTAINER_OF(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))

/* ---- growable bytes -------------------------------------------------------------------------- */

typedef struct srv_buf {
    char *data;
    size_t len, cap;
} srv_buf;

int srv__buf_append(srv_buf *b, const void *p, size_t n); /* keeps data NUL-terminated */
void srv__buf_free(srv_buf *b);

/* ---- API errors ------------------------------------------------------------------------------ */

typedef struct srv_api_err {
    int status;
    const char *type; /* "invalid_request_error", "server_error", ... */
    const char *code; /* NULL or a code such as "model_not_found" */
    char param[64];   /* "" when none */
    char message[512];
} srv_api_err;

void srv__err_set(srv_api_err *e, int status, const char *param, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* {"error":{...}}; NULL on OOM.  *len gets the length. */
char *srv__err_json(const srv_api_err *e, size_t *len);

/* ---- events from the engine -------------------------------------------------------------------
 */

typedef enum srv_ev_kind {
    SRV_EV_TEXT,
    SRV_EV_TOOL, /* a tool call's start (message holds the name) or an arguments fragment */
    SRV_EV_ADMITTED,
    SRV_EV_ERROR,
    SRV_EV_FINISH
} srv_ev_kind;

typedef struct srv_ev {
    struct srv_ev *next;
    srv_job_t *job;
    srv_ev_kind kind;
    uint64_t t_ns;
    /* text */
    char *text;
    size_t len;
    bool has_lp;
    bool tool_begin; /* SRV_EV_TOOL: a new call named in message */
    srv_token_logprob_t chosen;
    srv_token_logprob_t *top;
    size_t n_top;
    /* terminal */
    int status;
    char message[512];
    srv_finish_t why;
    int64_t n_prompt, n_generated;
    int64_t n_cached; /* admitted: prompt tokens from the prefix cache */
} srv_ev;

typedef struct srv_call srv_call;

struct srv_job {
    srv_call *call;
    int index;
    srv_gen_request_t req;
    void *engine_data;
    atomic_bool cancelled;
    bool accepted, cancel_sent, done, admitted, got_text;
    uint64_t t_submit_ns, t_last_text_ns;
    srv_ev final_ev; /* the terminal event, preallocated */
};

/* ---- one chat / completions call
 * ----------------------------------------------------------------- */

typedef struct srv_choice {
    srv_buf text;     /* non-stream: all of it; stream: not yet sent */
    cJSON *lp;        /* chat-shaped logprobs.content entries (not yet sent, when streaming) */
    size_t lp_offset; /* completions' text_offset of the next entry */
    bool finished;
    srv_finish_t why;
    /* tool calls: calls holds {id, type, function {name, arguments}} of each call made (the
     * current call's arguments are in args until the next call starts or the answer ends);
     * when streaming, args holds the fragment not yet sent and head_pending says whether the
     * current call's id and name are still to be sent */
    cJSON *calls;
    srv_buf args;
    int n_calls;
    bool head_pending;
} srv_choice;

struct srv_call {
    srv_server_t *srv;
    struct srv_conn *conn; /* NULL once detached */
    srv_call *prev, *next; /* the server's live calls */
    int refs;
    arena arena; /* the request's strings and arrays (base/arena.h), released with the call */
    cJSON *root;
    srv_gen_request_t req; /* as parsed; n is the number of jobs */
    int n;
    srv_job_t *jobs;
    srv_choice *choices;
    int n_active; /* accepted jobs whose terminal event is still to come */
    char id[48];
    int64_t created;
    bool headers_sent, ended, failed;
    srv_api_err err;
    int64_t n_prompt, n_generated;
    int64_t n_cached; /* prompt tokens the prefix cache supplied (the most of any choice) */
};

/* ---- connections ---------------------------------------------------------------------------- */

typedef enum srv_endpoint {
    SRV_EP_CHAT = 0,
    SRV_EP_COMPLETIONS,
    SRV_EP_MODELS,
    SRV_EP_HEALTH,
    SRV_EP_METRICS,
    SRV_EP_EXPERTS,
    SRV_EP_DASHBOARD,
    SRV_EP_OTHER,
    SRV_EP_COUNT
} srv_endpoint;

typedef enum srv_conn_state {
    SRV_CONN_IDLE = 0, /* between requests */
    SRV_CONN_HEADERS,  /* reading a request line and headers */
    SRV_CONN_BODY,     /* reading a body */
    SRV_CONN_HANDLING, /* a request is being answered; the parser is paused */
    SRV_CONN_LINGER,   /* response sent, FIN sent, discarding input before closing */
} srv_conn_state;

typedef struct srv_conn {
    uv_tcp_t tcp;
    uv_timer_t timer;
    srv_server_t *srv;
    struct srv_conn *prev, *next;
    int open_handles;
    llhttp_t parser;
    srv_conn_state state;
    /* the request being read */
    srv_buf url, field, value, auth, body;
    bool in_value, has_auth, expect_continue, header_error;
    size_t header_bytes;
    int fail_status; /* set by a callback that refuses the request (413, 431) */
    /* the request being answered */
    int method;
    bool keep_alive, http10, head_only;
    srv_endpoint endpoint;
    uint64_t t_request_ns;
    srv_call *call;
    bool chunked_response; /* the current response uses chunked encoding */
    /* input that arrived while a request was being answered */
    srv_buf pending_in;
    bool reading;
    /* output */
    size_t write_bytes; /* queued in uv_write, not completed */
    bool closing, close_after, want_next, fin_sent;
    bool feeding, resume; /* inside the input loop; more input to parse once it returns */
    uv_shutdown_t shutdown_req;
} srv_conn;

/* ---- the server -------------------------------------------------------------------------------
 */

#define SRV_N_STATUS 600

typedef struct srv_stats {
    uint64_t requests[SRV_EP_COUNT][SRV_N_STATUS];
    uint64_t prompt_tokens, generated_tokens;
    uint64_t jobs_cancelled;
    int64_t running, waiting, connections;
    srv_mx_histogram ttft, itl, e2e, queue;
} srv_stats;

struct srv_server {
    srv_opts_t opts;
    char *host, *model_id, *replica;
    char **api_keys;
    srv_engine_t engine;
    uv_loop_t loop;
    bool loop_init;
    uv_tcp_t listener;
    uv_async_t wake;
    uv_signal_t sigterm, sigint;
    uv_timer_t grace;
    int port;
    srv_conn *conns;
    srv_call *calls;
    bool stopping, stop_done;
    bool draining_done; /* the drain ended: what still ran was cancelled */
    llhttp_settings_t settings;
    uint64_t id_state;
    int64_t created;          /* the models' "created" time */
    char read_buf[64 * 1024]; /* every connection reads into it (loop thread) */
    atomic_bool stop_requested;
    /* engine → loop */
    pthread_mutex_t lock;
    srv_ev *ev_head, *ev_tail;
    bool wake_closed; /* under lock: no uv_async_send after the handle closed */
    srv_stats stats;
};

/* api.c: request parsing and errors; response.c: the JSON sent back */
int srv__parse_request(srv_call *call, const char *body, size_t len, srv_kind_t kind,
                       const char *model_id, int max_n, srv_api_err *e);
cJSON *srv__lp_entry(const srv_ev *ev);
char *srv__response_json(const srv_call *call, const char *model_id, size_t *len);
/* A stream chunk with the choice's pending tool-call delta (head and/or arguments fragment). */
char *srv__tool_chunk_json(const srv_call *call, const char *model_id, int index, size_t *len);
char *srv__chunk_json(const srv_call *call, const char *model_id, int index, bool role,
                      const char *text, size_t text_len, cJSON *lp, size_t lp_offset, int finish,
                      size_t *len);
char *srv__usage_chunk_json(const srv_call *call, const char *model_id, size_t *len);
char *srv__models_json(const char *model_id, int64_t created, bool one, size_t *len);
const char *srv__finish_name(const srv_choice *ch);
/* Replaces invalid UTF-8 with U+FFFD so that JSON output stays valid. */
char *srv__utf8_clean(const char *s, size_t len, size_t *out_len);

/* jobs.c: calls, jobs, the event queue, metrics */
void srv__call_release(srv_call *call);
void srv__call_detach(srv_call *call); /* the client went: cancel the jobs */
void srv__call_cancel_jobs(srv_call *call);
void srv__start_call(srv_conn *c, srv_kind_t kind);
void srv__drain_events(srv_server_t *s);
void srv__stream_pump(srv_call *call, bool final);
void srv__write_metrics(srv_server_t *s, srv_mx_buf *b);
int srv__stats_init(srv_stats *st);
void srv__stats_free(srv_stats *st);
void srv__free_all_calls(srv_server_t *s);

/* http.c: responses on a connection */
void srv__conn_write(srv_conn *c, const void *data, size_t len);
void srv__respond(srv_conn *c, int status, const char *content_type, const char *body, size_t len,
                  const char *extra_headers);
void srv__respond_error(srv_conn *c, const srv_api_err *e);
void srv__respond_stream_start(srv_conn *c);
void srv__stream_write(srv_conn *c, const char *data, size_t len); /* one chunk */
void srv__stream_end(srv_conn *c);
void srv__request_done(srv_conn *c);
void srv__count_request(srv_server_t *s, srv_endpoint ep, int status);
uint64_t srv__now_ns(void);

/* A log line through opts.log (or stderr). */
void srv__log(const srv_server_t *s, int level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* The expert map page (server/dashboard.html, embedded at build time by tools/embed_file.py). */
extern const char srv__dashboard_html[];
extern const size_t srv__dashboard_html_len;

#endif
