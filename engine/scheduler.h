/*
 * scheduler — continuous batching on the engine thread.
 *
 * Contract
 * - scheduler_open() opens a model context with max_running KV slots of n_ctx positions and
 *   starts the engine thread, which owns that context, the running sequences and the forward
 *   pass.  scheduler_close() cancels what is still queued or running (each gets its done
 *   callback with SCHEDULER_CANCELLED), joins the thread and frees everything.
 * - scheduler_submit() may be called from any thread.  It copies the prompt and either accepts
 *   the request (returns 0 and an id) or refuses it at once: -E2BIG when the prompt plus
 *   max_tokens cannot fit in a sequence's context, -EAGAIN when the waiting queue is full,
 *   -EINVAL for an empty prompt or bad arguments, -ESHUTDOWN after destroy began.
 * - An accepted request gets exactly one done() callback, its last; the ops' user pointer is
 *   not touched after it.  All callbacks run on the engine thread, without the scheduler's lock,
 *   and must not block: they hand results to other threads through their own queues.
 * - Each step advances every running sequence: one decode token for each sequence past its
 *   prompt, then prompt chunks of at most prefill_chunk tokens for sequences still prefilling,
 *   in admission order, while the step has room (max_tokens_per_step).  Waiting requests are
 *   admitted in FIFO order whenever a KV slot is free, so a long prompt is prefilled a chunk per
 *   step next to the running decodes instead of freezing them.
 * - scheduler_cancel() may be called from any thread; the sequence ends (done with
 *   SCHEDULER_CANCELLED) and its KV slot is free before the next step's batch is built.
 * - The forward pass is batch-invariant (model/forward.c), so a greedy request yields the same
 *   tokens alone or in any batch and under any chunking.
 */
#ifndef MOE_ENGINE_SCHEDULER_H
#define MOE_ENGINE_SCHEDULER_H

#include "model/model.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum scheduler_end {
    SCHEDULER_STOP = 0,  /* emit() asked to stop: EOS, a stop string */
    SCHEDULER_LENGTH,    /* max_tokens generated */
    SCHEDULER_CANCELLED, /* scheduler_cancel() or shutdown */
    SCHEDULER_ERROR,     /* the forward pass failed; message says why */
} scheduler_end;

typedef struct scheduler_seq_ops {
    /* Picks the next token from one row of n_vocab logits. */
    int32_t (*sample)(void *user, const float *logits);
    /* A generated token; returning true ends the sequence with SCHEDULER_STOP. */
    bool (*emit)(void *user, int32_t token);
    /* The last call for this request; message is NULL unless why is SCHEDULER_ERROR. */
    void (*done)(void *user, scheduler_end why, const char *message);
    /* Optional: the request left the queue and got its KV slot (before its first step). */
    void (*admitted)(void *user, int32_t n_cached); /* n_cached: prompt tokens reused */
} scheduler_seq_ops;

typedef struct scheduler_opts {
    int32_t max_running;         /* sequences advanced together = KV slots */
    int32_t max_tokens_per_step; /* batch size cap; must be >= max_running */
    int32_t prefill_chunk;       /* prompt tokens of one sequence per step */
    int32_t max_waiting;         /* queued requests beyond which submit says -EAGAIN */
    int32_t n_ctx;               /* positions per sequence; 0: the model's training context */
    kern_kv_type kv_type;        /* KV storage: F16 (default) or F32 */
    /* Reuse the KV blocks of earlier sequences that began with the same tokens (on in the
     * defaults): a prompt's full blocks are looked up by a chained hash of their tokens, the
     * longest published run is attached instead of prefilled (always leaving at least the last
     * prompt token to compute), and every sequence publishes its blocks as they fill. */
    bool prefix_cache;
    /* Blocks kept for reuse that no sequence holds, at most (least recently released out
     * first); 0: as many as the KV memory holds, given up only when it is needed. */
    int32_t prefix_cache_blocks;
    /* Never replay a step as a graph (model_ctx_opts.no_graphs). */
    bool no_graphs;
} scheduler_opts;

scheduler_opts scheduler_opts_default(void);

/* Upper bounds of the batch-size histogram's buckets (tokens per step); the last is +Inf. */
enum { SCHEDULER_BATCH_BUCKETS = 12 };
extern const double scheduler_batch_bounds[SCHEDULER_BATCH_BUCKETS - 1];

typedef struct scheduler_stats {
    uint64_t steps;
    uint64_t tokens;        /* batch tokens over all steps (prompt + decode) */
    uint64_t prompt_tokens; /* prefilled prompt tokens */
    uint64_t decode_tokens; /* tokens fed back for decoding */
    uint32_t running;
    uint32_t waiting;
    uint32_t last_batch;                          /* tokens in the last step */
    uint64_t step_ns;                             /* time in model_forward over all steps */
    uint64_t batch_hist[SCHEDULER_BATCH_BUCKETS]; /* steps by tokens, per bucket (not cumulative) */
    uint64_t prefix_queries;                      /* admissions that looked for a cached prefix */
    uint64_t prefix_hit_tokens;    /* prompt tokens taken from cached blocks instead of prefilled */
    uint32_t prefix_cached_blocks; /* blocks kept for reuse that no sequence holds */
    uint64_t prefix_evictions;     /* such blocks given up for memory */
    uint64_t step_retries;         /* steps run again after an expert could not be read */
    uint64_t steps_routed_on_device; /* steps whose experts were chosen and grouped there */
    uint64_t graph_replays;          /* steps launched as a graph an earlier step recorded */
    uint64_t cpu_expert_ns;          /* time the CPU computed a device tier's misses ... */
    uint64_t cpu_expert_wait_ns;     /* ... and the engine waited for it after the device's work */
} scheduler_stats;

typedef struct scheduler scheduler;

int scheduler_open(scheduler **out, model *m, const scheduler_opts *opts, char *err,
                   size_t err_size);
void scheduler_close(scheduler **s);

int scheduler_submit(scheduler *s, const int32_t *prompt, int32_t n_prompt, int32_t max_tokens,
                     const scheduler_seq_ops *ops, void *user, uint64_t *id, char *err,
                     size_t err_size);
/* Unknown or finished ids are ignored. */
void scheduler_cancel(scheduler *s, uint64_t id);

int32_t scheduler_n_ctx(const scheduler *s);
/* NULL while requests can be served; otherwise why not (the model file changed under the
 * server: every request then fails, and submit says -EIO with the same words). */
const char *scheduler_unavailable(scheduler *s);
int32_t scheduler_max_running(const scheduler *s);
/* KV memory allocated (it grows with the positions held) and the part of it in use. */
size_t scheduler_kv_bytes(const scheduler *s);
size_t scheduler_kv_used_bytes(const scheduler *s);
void scheduler_get_stats(scheduler *s, scheduler_stats *out);

#endif
