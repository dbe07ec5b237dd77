/*
 * engine — the model behind the HTTP front end: turns validated OpenAI requests into prompt
 * ids, runs them through the continuous-batching scheduler, samples, decodes and posts text
 * back to the loop thread.
 *
 * Contract
 * - engine_open() makes an engine that is not ready yet: engine_ops()
 *   gives the srv_engine_t to hand to srv_open() at once, so that the server listens while the
 *   model loads (/health answers 503, requests get 503 with Retry-After).
 *   engine_start() — from any thread, once — takes the loaded model, tokenizer and
 *   optional chat template (none of them owned), starts the scheduler and makes the engine
 *   ready.
 * - submit() runs on the loop thread: template rendering, tokenization, sampler set-up and the
 *   context-length check happen there, so a bad request is answered at once (400) and never
 *   reaches the engine thread.  Everything after that happens on the engine thread, which posts
 *   text and exactly one terminal event per accepted job.
 * - engine_close() stops the scheduler (in-flight jobs end with a final event), joins the
 *   engine thread and frees the engine; call it after srv_run() returned and before
 *   srv_close().  The model, tokenizer and template stay the caller's; free them after.
 */
#ifndef MOE_ENGINE_ENGINE_H
#define MOE_ENGINE_ENGINE_H

#include "engine/scheduler.h"
#include "model/model.h"
#include "server/metrics.h"
#include "server/server.h"
#include "template/template.h"
#include "tokenizer/tokenizer.h"

typedef struct engine engine;

int engine_open(engine **out, char *err, size_t err_size);
int engine_start(engine *e, model *m, const tokenizer *tok, const chat_template *tmpl,
                 const scheduler_opts *sched_opts, char *err, size_t err_size);
void engine_close(engine **e);

srv_engine_t engine_ops(engine *e);
/* The engine's metric families (scheduler, KV, expert cache, routing, predictor), for
 * srv_opts_t.write_metrics with the engine as user.  Loop thread; reads counters only. */
void engine_write_metrics(void *user, srv_mx_buf *b);
/* The expert map's JSON (GET /v1/experts/stats): per layer and expert the tokens routed, what
 * each tier holds, the tiers' counters, the predictor's per-layer precision and recall and the
 * engine's step counters.  Reads only atomics: safe on the server's thread while steps run. */
void engine_write_expert_stats(void *user, srv_mx_buf *b);
/* NULL until started. */
scheduler *engine_scheduler(engine *e);

#endif
