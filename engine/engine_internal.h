/*
 * engine internals shared by its files: the engine itself (engine.c: jobs on the engine
 * thread, submit on the loop thread), chat prompts with tools (chat.c) and its metrics and
 * expert map (engine_metrics.c).  Internal to engine/.
 */
#ifndef MOE_ENGINE_ENGINE_INTERNAL_H
#define MOE_ENGINE_ENGINE_INTERNAL_H

#include "engine/engine.h"
#include "engine/toolcall.h"

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct engine {
    atomic_bool ready;
    model *m;
    const tokenizer *tok;
    const chat_template *tmpl;
    tool_format tool_fmt; /* how the template's model writes tool calls */
    scheduler *sched;
    int32_t n_vocab;
    /* constrained decoding: masks built and the time they took (engine thread writes, the
     * metrics reader on the loop thread reads) */
    atomic_uint_fast64_t masks, mask_ns;
    float *masked; /* the step's masked logits (engine thread) */
};

/* Whether the model is shown the request's tools (and its output read for calls). */
bool engine__uses_tools(const srv_gen_request_t *req);
/* A request's prompt as token ids: a completion's text, or the chat rendered by the model's
 * template with the request's tools (chat.c).  *ids is malloc'd. */
int engine__prompt_ids(const engine *e, const srv_gen_request_t *req, int32_t **ids, size_t *n_ids,
                       char *err, size_t err_size);

#endif
