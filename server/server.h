/*
 * server — the OpenAI-compatible HTTP front end: a libuv loop, llhttp per connection, JSON
 * requests and responses (cJSON), server-sent events, limits, API keys and /metrics.
 *
 * Contract
 * - srv_open() binds and listens at once (port 0 picks a free one, srv_port() tells which),
 *   so that the port answers while a model is still loading.  srv_run() runs the event loop on
 *   the calling thread — the loop thread — until srv_stop() (any thread) or SIGTERM / SIGINT.
 *   On stop it closes the listener and drains: requests already on the way run to their end
 *   (each connection closes after its answer) for at most opts.drain_timeout_ms (a second
 *   stop or signal ends the drain at once); then it cancels every job still running
 *   (engine->cancel) and waits (at most opts.shutdown_grace_ms) for their terminal events, so
 *   that every in-flight response ends properly (a stream with its final chunk and
 *   `data: [DONE]`), flushes and closes the connections, then returns 0.  srv_close() frees the
 * server; call it after the engine has stopped posting (the engine's own shutdown joins its
 * thread), since jobs whose terminal event never arrived are freed there.
 * - The process ignores SIGPIPE once srv_open() succeeded (a peer that vanished must not kill
 *   the server; writes report EPIPE instead).
 * - The engine (srv_engine_t) does the generation.  submit() runs on the loop thread and either
 *   accepts a job (returns 0) or refuses it with an HTTP status (400, 503, 500) in *status and
 *   a message; a 503 is sent with Retry-After and a 500's message is logged, never sent.  For
 *   an accepted job the engine posts, from any thread, text (srv_job_post_text, complete UTF-8
 *   only) and exactly one terminal event (srv_job_post_error or srv_job_post_finish), after
 *   which it must not touch the job.  The job's memory stays valid until its terminal event is
 *   processed on the loop thread, even when the client has gone: then the loop has called
 *   engine->cancel() once (from the loop thread), srv_job_cancelled() is true, and posted text
 *   is dropped.  srv_job_request() and everything it points to live as long as the job.
 * - ready() tells whether requests can be served now: GET /health answers 503 and generation
 *   requests 503 + Retry-After while it is false.
 * - n > 1 becomes n jobs, one per choice (index i, seed + i when a seed is given), each with
 *   its own srv_gen_request_t whose n is 1.
 * - opts.write_metrics, when set, is called on the loop thread for GET /metrics after the
 *   server's own families (requests, tokens, latencies, running and waiting) and appends the
 *   engine's families (server/metrics.h writers).
 * - Thread safety: srv_stop() and the srv_job_post_* / srv_job_cancelled calls may be made
 *   from any thread; everything else from the thread that opened the server or runs its loop.
 *
 * HTTP behaviour (server/http.c, api.c): POST /v1/chat/completions, POST /v1/completions,
 * GET /v1/models[/{id}], GET /health (never needs a key), GET /metrics (Prometheus text 0.0.4).
 * Keep-alive and pipelining (answers in request order); 400 + close for malformed or ambiguous
 * framing (CL+TE, duplicate CL, bad header names), 431 / 413 / 408 + close for the limits, 505
 * for HTTP/2 request lines, 404, 405 with Allow, 401 with WWW-Authenticate.  Errors are
 * {"error":{"message","type","param","code"}}; an unknown "model" is 400 model_not_found.
 * Streams are SSE over chunked encoding: chat sends a role chunk first, each choice ends with
 * a finish_reason chunk ("tool_calls" when the choice made calls), then the usage chunk
 * (stream_options.include_usage) and `data: [DONE]`; a job that fails mid-stream sends `data:
 * {"error":...}` then [DONE].
 */
#ifndef MOE_SERVER_SERVER_H
#define MOE_SERVER_SERVER_H

#include "server/metrics.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct srv_server srv_server_t;
typedef struct srv_job srv_job_t;

/* ---- a validated generation request ------------------------------------------------------------
 */

typedef enum srv_kind { SRV_KIND_CHAT = 0, SRV_KIND_COMPLETION } srv_kind_t;

typedef enum srv_role {
    SRV_ROLE_SYSTEM = 0,
    SRV_ROLE_USER,
    SRV_ROLE_ASSISTANT,
    SRV_ROLE_DEVELOPER,
    SRV_ROLE_TOOL,
} srv_role_t;

typedef struct srv_message {
    srv_role_t role;
    const char *content; /* never NULL; text parts joined with no separator */
    const char *name;    /* NULL when absent */
    /* assistant: its tool_calls ([{id, type "function", function {name, arguments}}], validated,
     * in the call's tree), NULL when none; tool: the tool_call_id it answers, NULL when absent */
    const struct cJSON *tool_calls;
    const char *tool_call_id;
} srv_message_t;

typedef enum srv_tool_choice {
    SRV_TOOL_CHOICE_AUTO = 0, /* the model decides (the default with tools) */
    SRV_TOOL_CHOICE_NONE,     /* no calls: the tools are not shown to the model */
    SRV_TOOL_CHOICE_REQUIRED, /* one or more calls, nothing else */
    SRV_TOOL_CHOICE_NAMED,    /* a call of tool_choice_name */
} srv_tool_choice_t;

typedef struct srv_logit_bias {
    int32_t token_id;
    double bias; /* -100 .. 100 */
} srv_logit_bias_t;

typedef struct srv_gen_request {
    srv_kind_t kind;
    const srv_message_t *messages; /* chat: at least one */
    size_t n_messages;
    const char *prompt; /* completions: the prompt text (NUL-terminated too) */
    size_t prompt_len;
    int64_t max_tokens;        /* -1 when absent (max_completion_tokens wins over max_tokens) */
    double temperature;        /* 0 .. 2, default 1 */
    double top_p;              /* 0 .. 1, default 1 */
    int32_t top_k;             /* extension; 0 (default) = off */
    double min_p;              /* extension; 0 .. 1, default 0 */
    double repetition_penalty; /* extension; > 0, default 1 */
    double presence_penalty;   /* -2 .. 2, default 0 */
    double frequency_penalty;  /* -2 .. 2, default 0 */
    uint64_t seed;
    bool has_seed;
    bool logprobs;        /* chat: logprobs; completions: logprobs given (0 .. 5) */
    int32_t top_logprobs; /* chat: top_logprobs; completions: the logprobs integer */
    const srv_logit_bias_t *logit_bias;
    size_t n_logit_bias;
    const char *const *stop; /* up to 4 non-empty strings */
    size_t n_stop;
    int32_t n; /* always 1 in a job's request; the HTTP request's n is the job count */
    bool stream;
    bool include_usage; /* stream_options.include_usage */
    bool json_object;   /* response_format {"type": "json_object"}: the output is one JSON object */
    /* response_format {"type": "json_schema"}: its json_schema.schema (in the call's tree) */
    const struct cJSON *json_schema;
    const char *user; /* NULL when absent */
    /* chat: the tools array (validated, in the call's tree), NULL when absent or empty */
    const struct cJSON *tools;
    srv_tool_choice_t tool_choice;
    const char *tool_choice_name; /* SRV_TOOL_CHOICE_NAMED: the function */
    bool parallel_tool_calls;     /* default true */
} srv_gen_request_t;

/* ---- what the engine posts back
 * ------------------------------------------------------------------ */

typedef struct srv_token_logprob {
    const char *text; /* the token's bytes (may be part of a UTF-8 character) */
    size_t len;
    float logprob;
} srv_token_logprob_t;

typedef struct srv_logprobs {
    srv_token_logprob_t chosen;
    const srv_token_logprob_t *top; /* most probable first */
    size_t n_top;
} srv_logprobs_t;

typedef enum srv_finish { SRV_FINISH_STOP = 0, SRV_FINISH_LENGTH } srv_finish_t;

typedef struct srv_engine {
    void *ctx;
    /* Loop thread.  0: accepted (then exactly one terminal event follows).  Otherwise *status
     * (400, 503 or 500) and a message in err. */
    int (*submit)(void *ctx, srv_job_t *job, int *status, char *err, size_t err_size);
    /* Loop thread, at most once per accepted job, when its client has gone or on shutdown.
     * The engine still posts the terminal event (text after it is dropped). */
    void (*cancel)(void *ctx, srv_job_t *job);
    /* Any thread; NULL means always ready. */
    bool (*ready)(void *ctx);
    /* Any thread, optional: NULL while the engine can serve, else why it cannot any more (the
     * model file changed under it); GET /health then answers 503 with that message. */
    const char *(*unavailable)(void *ctx);
} srv_engine_t;

const srv_gen_request_t *srv_job_request(const srv_job_t *job);
void srv_job_set_engine_data(srv_job_t *job, void *data);
void *srv_job_engine_data(const srv_job_t *job);

/* Any thread.  text is copied; it must end on a UTF-8 character boundary.  lp (NULL when the
 * request did not ask for logprobs) is copied too.  len 0 with lp still records a token. */
void srv_job_post_text(srv_job_t *job, const char *text, size_t len, const srv_logprobs_t *lp);
/* Any thread: a tool call of the answer (chat with tools).  name non-NULL starts the next call
 * (the server gives it its id); args (len bytes, may be 0) is a fragment of the current call's
 * arguments, which the fragments build up in order. */
void srv_job_post_tool_call(srv_job_t *job, const char *name, const char *args, size_t len);
/* Optional, any thread: the engine admitted the job (its prompt starts being processed), with
 * n_cached of its prompt tokens taken from a prefix cache (usage.prompt_tokens_details).  Queue
 * time is measured up to here; without it, up to the first posted text or terminal event. */
void srv_job_post_admitted(srv_job_t *job, int64_t n_cached);
/* Terminal events: exactly one per accepted job.  Posting never fails (the memory for it was
 * taken at submit). */
void srv_job_post_error(srv_job_t *job, int status, const char *message);
void srv_job_post_finish(srv_job_t *job, srv_finish_t why, int64_t n_prompt, int64_t n_generated);
/* Any thread: true once the client has gone or the server is shutting down. */
bool srv_job_cancelled(const srv_job_t *job);

/* ---- the server
 * ---------------------------------------------------------------------------------- */

typedef struct srv_opts {
    const char *host;           /* IPv4 or IPv6 literal; default "127.0.0.1" */
    int port;                   /* 0: an ephemeral port */
    const char *model_id;       /* the served model's name (/v1/models, the "model" field) */
    size_t max_header_bytes;    /* request line + headers; beyond: 431 */
    size_t max_body_bytes;      /* beyond: 413 */
    int max_connections;        /* beyond: 503 and close */
    uint32_t header_timeout_ms; /* from a request's first byte to the end of its headers: 408 */
    uint32_t idle_timeout_ms;   /* an idle keep-alive connection, or a stalled body: close */
    uint32_t shutdown_grace_ms; /* how long srv_run waits for cancelled jobs on stop */
    /* On stop, how long requests already on the way may run to their end before they are
     * cancelled; 0: cancel them at once.  srv_opts_default(): 30 s. */
    uint32_t drain_timeout_ms;
    /* When set, every /metrics sample carries replica="…" (one Prometheus over many servers). */
    const char *replica;
    int max_n; /* largest accepted n (choices per request) */
    /* Unsent response bytes queued per connection beyond which a stream coalesces its text
     * into fewer, bigger chunks (and a pipelining client's next request waits). */
    size_t write_high_water_bytes;
    int socket_send_buffer_bytes; /* SO_SNDBUF of client sockets; 0: the kernel's default */
    const char *const *api_keys;  /* when n_api_keys > 0: Authorization: Bearer KEY required */
    size_t n_api_keys;
    bool log_requests; /* one line per request on stderr */
    /* Where the server's log lines go (level 0 error, 1 warn, 2 info, 3 debug); NULL: stderr. */
    void (*log)(void *user, int level, const char *msg);
    void *log_user;
    /* GET /metrics: appends the engine's families after the server's own (loop thread). */
    void (*write_metrics)(void *user, srv_mx_buf *b);
    void *metrics_user;
    /* GET /v1/experts/stats: writes the expert map's JSON object (loop thread, metrics_user);
     * NULL: 404.  GET /dashboard serves the page that polls it. */
    void (*write_expert_stats)(void *user, srv_mx_buf *b);
} srv_opts_t;

srv_opts_t srv_opts_default(void);

/* Copies what it needs from o and e.  Returns 0, or a negative errno with a message. */
int srv_open(srv_server_t **out, const srv_opts_t *o, const srv_engine_t *e, char *err,
             size_t err_size);
int srv_port(const srv_server_t *s);
/* Runs until srv_stop() or SIGTERM / SIGINT; returns 0, or a negative errno if the loop
 * failed. */
int srv_run(srv_server_t *s);
/* Any thread, any number of times, also before srv_run(). */
void srv_stop(srv_server_t *s);
void srv_close(srv_server_t **s);

#endif
