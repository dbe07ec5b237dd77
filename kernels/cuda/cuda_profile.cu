/*
 * Per-operation timing on the device (kern_set_profiling): what a step's kernels take on the
 * GPU, and how long the GPU sat idle between them waiting for the host — the two numbers that
 * say whether a step is bound by its kernels or by launching and synchronising them.
 *
 * While timing is on, the backend's table is a copy of cuda__ops whose operations record an
 * event on the compute stream before and after the real call.  Events are read only at the
 * next sync (both streams idle, so every one has happened): reading one earlier would wait for
 * it and change what is being measured.  A fixed pool holds the calls between two syncs; a
 * step that queues more, a recording graph (an event there would become part of the graph)
 * and a replayed graph's calls are counted as untimed instead, so the table says what it left
 * out, and the idle time is only taken between two timed calls with nothing untimed between
 * them.  The events themselves cost a few microseconds of host time per operation: the figures
 * are for finding where a step's time goes, not for quoting a step's speed.
 */
#include "kernels/cuda/cuda_internal.h"

extern "C" {
#include "kernels/backend_internal.h"
}

#include <errno.h>
#include <stdlib.h>
#include <string.h>

enum { PROFILE_CALLS = 8192 }; /* calls between two syncs: a prefill step of a deep model */

/* Device work queued without events around it: the next timed call's gap would include it. */
static void untimed(cuda_backend *cb)
{
    cb->prof.sums.untimed++;
    cb->prof.broken = true;
}

/* True when the call's start was recorded; its end must then be recorded by prof_end, which
 * every call pairs with this one.  An operation that runs others through the table (the
 * one-by-one fallbacks) is timed as one: the calls inside it are part of its time. */
static bool prof_start(cuda_backend *cb)
{
    auto *p = &cb->prof;
    if (p->depth++ > 0) return false;
    if (cb->capturing || p->n >= p->cap) {
        untimed(cb);
        return false;
    }
    cudaError_t rc = cudaSetDevice(cb->device);
    if (rc == cudaSuccess) rc = cudaEventRecord(p->ev[2 * p->n], cuda__compute(cb));
    if (rc != cudaSuccess) {
        (void)cudaGetLastError(); /* the timing's failure, not the operation's */
        untimed(cb);
        return false;
    }
    return true;
}

static void prof_end(cuda_backend *cb, kern_op op, bool started)
{
    auto *p = &cb->prof;
    p->depth--;
    if (!started) return;
    if (cudaEventRecord(p->ev[2 * p->n + 1], cuda__compute(cb)) != cudaSuccess) {
        (void)cudaGetLastError();
        untimed(cb);
        return;
    }
    p->op[p->n] = (uint8_t)op;
    p->gap_ok[p->n] = !p->broken;
    p->broken = false;
    p->n++;
}

#define TIMED(name, OP, params, args)                                                              \
    static void prof_##name params                                                                 \
    {                                                                                              \
        cuda_backend *cb = cuda__of(b);                                                            \
        const bool started = prof_start(cb);                                                       \
        cuda__ops.name args;                                                                       \
        prof_end(cb, OP, started);                                                                 \
    }

KERN__TIMED_OPS(TIMED)

/* Copies on the compute stream are part of the step's sequence; the copy stream's run beside
 * it and are not timed. */
static int prof_copy(kern_backend *b, kern_stream s, void *dst, const void *src, size_t bytes,
                     kern_copy_dir dir)
{
    if (s != KERN_STREAM_COMPUTE) return cuda__ops.copy(b, s, dst, src, bytes, dir);
    cuda_backend *cb = cuda__of(b);
    const bool started = prof_start(cb);
    int rc = cuda__ops.copy(b, s, dst, src, bytes, dir);
    prof_end(cb, KERN_OP_COPY, started);
    return rc;
}

static int prof_graph_launch(kern_backend *b, kern_graph *g)
{
    int rc = cuda__ops.graph_launch(b, g);
    if (rc == 0) untimed(cuda__of(b));
    return rc;
}

void cuda__profile_release(cuda_backend *cb)
{
    auto *p = &cb->prof;
    if (p->ev) {
        (void)cudaSetDevice(cb->device);
        for (size_t i = 0; i < 2 * p->cap; i++)
            if (p->ev[i]) (void)cudaEventDestroy(p->ev[i]);
        (void)cudaGetLastError();
    }
    free(p->ev);
    free(p->op);
    free(p->gap_ok);
    p->ev = NULL;
    p->op = NULL;
    p->gap_ok = NULL;
    p->n = p->cap = 0;
}

static int profile_reserve(cuda_backend *cb)
{
    auto *p = &cb->prof;
    if (p->ev) return 0;
    p->ev = (cudaEvent_t *)calloc(2 * PROFILE_CALLS, sizeof *p->ev);
    p->op = (uint8_t *)calloc(PROFILE_CALLS, sizeof *p->op);
    p->gap_ok = (bool *)calloc(PROFILE_CALLS, sizeof *p->gap_ok);
    if (!p->ev || !p->op || !p->gap_ok) {
        cuda__profile_release(cb);
        return -ENOMEM;
    }
    p->cap = PROFILE_CALLS;
    cudaError_t rc = cudaSetDevice(cb->device);
    for (size_t i = 0; i < 2 * p->cap && rc == cudaSuccess; i++)
        rc = cudaEventCreate(&p->ev[i]); /* with timing, unlike the backend's own events */
    if (rc != cudaSuccess) {
        int code = cuda__errno(rc);
        cuda__profile_release(cb);
        return code;
    }
    return 0;
}

int cuda__set_profiling(kern_backend *b, bool on)
{
    cuda_backend *cb = cuda__of(b);
    if (cb->capturing) return -EBUSY;
    if (!on) {
        cb->base.ops = &cuda__ops;
        cuda__profile_release(cb);
        return 0;
    }
    int rc = profile_reserve(cb);
    if (rc) return rc;
    auto *p = &cb->prof;
    p->n = 0;
    p->depth = 0;
    p->broken = true;
    memset(&p->sums, 0, sizeof p->sums);
    p->sums.device_time = true;
    p->ops = cuda__ops;
    p->ops.copy = prof_copy;
#define TIMED_ENTRY(name, OP, params, args) p->ops.name = prof_##name;
    KERN__TIMED_OPS(TIMED_ENTRY)
#undef TIMED_ENTRY
    p->ops.graph_launch = prof_graph_launch;
    cb->base.ops = &p->ops;
    return 0;
}

void cuda__get_profile(const kern_backend *b, kern_profile *out)
{
    *out = ((const cuda_backend *)b)->prof.sums;
    out->device_time = true;
}

static bool elapsed_ns(cudaEvent_t from, cudaEvent_t to, uint64_t *ns)
{
    float ms = 0.0f;
    if (cudaEventElapsedTime(&ms, from, to) != cudaSuccess) {
        (void)cudaGetLastError();
        return false;
    }
    *ns = ms > 0.0f ? (uint64_t)((double)ms * 1e6) : 0;
    return true;
}

void cuda__profile_collect(cuda_backend *cb)
{
    auto *p = &cb->prof;
    for (size_t i = 0; i < p->n; i++) {
        uint64_t ns = 0, gap = 0;
        if (!elapsed_ns(p->ev[2 * i], p->ev[2 * i + 1], &ns)) {
            p->sums.untimed++;
            continue;
        }
        p->sums.calls[p->op[i]]++;
        p->sums.ns[p->op[i]] += ns;
        /* the device's idle time since the previous timed call, where nothing untimed ran
         * between them (the first call after a sync follows the host's wait) */
        if (i > 0 && p->gap_ok[i] && elapsed_ns(p->ev[2 * i - 1], p->ev[2 * i], &gap))
            p->sums.gap_ns += gap;
    }
    p->n = 0;
    p->broken = true;
}
