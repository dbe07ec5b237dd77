/*
 * engine — the model behind the HTTP front end: turns validated OpenAI requests into prompt
 * ids, runs them through the continuous-batching scheduler, samples, decodes and posts text
 * back to the loop thread.
 *
 * Contract
 * - srv_model_engine_create() makes an engine that is not ready yet: srv_model_engine_ops()
 *   gives the srv_engine_t to hand to srv_open() at once, so that the server listens while the
 *   model loads (/health answers 503, requests get 503 with Retry-After).
 *   srv_model_engine_start() — from any thread, once — takes the loaded model, tokenizer and
 *   optional chat template (none of them owned), starts the scheduler and makes the engine
 *   ready.
 * - submit() runs on the loop thread: template rendering, tokenization, sampler set-up and the
 *   context-length check happen there, so a bad request is answered at once (400) and never
 *   reaches the engine thread.  Everything after that happens on the engine thread, which posts
 *   text and exactly one terminal event per accepted job.
 * - srv_model_engine_destroy() stops the scheduler (in-flight jobs end with a final event);
 *   call it after srv_run() returned and before srv_close().
 */
#ifndef MOE_ENGINE_ENGINE_H
#define MOE_ENGINE_ENGINE_H

#include "model/model.h"
#include "template/template.h"
#include "tokenizer/tokenizer.h"
#include "engine/scheduler.h"
#include "server/metrics.h"
#include "server/server.h"

typedef struct srv_model_engine srv_model_engine;

int srv_model_engine_create(srv_model_engine **out, char *err, size_t err_size);
int srv_model_engine_start(srv_model_engine *e, model *m, const tokenizer *tok,
                           const chat_template *tmpl, const srv_sched_opts *sched_opts,
                           char *err, size_t err_size);
void srv_model_engine_destroy(srv_model_engine **e);

srv_engine_t srv_model_engine_ops(srv_model_engine *e);
/* The engine's metric families (scheduler, KV, expert cache, routing, predictor), for
 * srv_opts_t.write_metrics with the engine as user.  Loop thread; reads counters only. */
void srv_model_engine_write_metrics(void *engine, srv_mx_buf *b);
/* NULL until started. */
srv_sched *srv_model_engine_sched(srv_model_engine *e);

#endif
