/*
 * What every backend shares: opening one by kind, placing weights, and the sticky error.
 *
 * Placing is written once here on top of alloc + copy + sync, so a backend only has to say
 * what its memory is; the CPU backend's device is the host, and placing there is free.
 */
#include "kernels/backend_internal.h"
#include "kernels/cpu/cpu.h"
#include "kernels/cuda/cuda.h"
#include "kernels/sim/sim.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

void kern__error_set(kern__error *e, int code, const char *fmt, ...)
{
    if (e->code) return;
    e->code = code;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->msg, sizeof e->msg, fmt, ap);
    va_end(ap);
}

int kern__error_take(kern__error *e, char *err, size_t err_size)
{
    int rc = e->code;
    if (rc && err && err_size) snprintf(err, err_size, "%s", e->msg);
    e->code = 0;
    e->msg[0] = 0;
    return rc;
}

static const char *const op_names[KERN_OP_COUNT] = {
    "matmul",      "rmsnorm",  "rope",     "kv_store",   "attention", "silu_mul",
    "add",         "add_bias", "get_rows", "gather",     "router",    "experts",
    "moe_combine", "gate_add", "copy",     "swiglu_oai", "moe_align", "experts_routed"};

const char *kern_op_name(kern_op op)
{
    return (unsigned)op < KERN_OP_COUNT ? op_names[op] : "?";
}

static const char *const kind_names[KERN_BACKEND_COUNT] = {"cpu", "sim", "cuda"};

const char *kern_backend_kind_name(kern_backend_kind kind)
{
    return kind < KERN_BACKEND_COUNT ? kind_names[kind] : "unknown";
}

int kern_backend_kind_parse(const char *name, kern_backend_kind *out)
{
    for (int k = 0; k < KERN_BACKEND_COUNT; k++) {
        if (!strcmp(name, kind_names[k])) {
            *out = (kern_backend_kind)k;
            return 0;
        }
    }
    return -EINVAL;
}

kern_open_opts kern_open_opts_default(void)
{
    return (kern_open_opts){.kind = KERN_BACKEND_CPU};
}

int kern_open(kern_backend **out, const kern_open_opts *opts, char *err, size_t err_size)
{
    *out = NULL;
    kern_open_opts o = opts ? *opts : kern_open_opts_default();
    switch (o.kind) {
    case KERN_BACKEND_CPU: {
        kern_cpu_opts c = kern_cpu_opts_default();
        c.n_threads = o.n_threads;
        return kern_cpu_open(out, &c, err, err_size);
    }
    case KERN_BACKEND_SIM:
        return kern_sim_open(out, &o, err, err_size);
    case KERN_BACKEND_CUDA:
        return kern_cuda_open(out, &o, err, err_size);
    case KERN_BACKEND_COUNT:
        break;
    }
    snprintf(err, err_size, "unknown backend kind %d", (int)o.kind);
    return -EINVAL;
}

void kern_close(kern_backend **bp)
{
    if (!*bp) return;
    (*bp)->ops->destroy(*bp);
    *bp = NULL;
}

int kern_place(kern_backend *b, const void *host, size_t bytes, const void **out, char *err,
               size_t err_size)
{
    *out = NULL;
    if (b->kind == KERN_BACKEND_CPU) {
        *out = host;
        return 0;
    }
    void *dev = NULL;
    int rc = kern_alloc(b, KERN_MEM_DEVICE, bytes, &dev);
    if (rc) {
        snprintf(err, err_size, "%s backend: %zu bytes of device memory for weights: %s", b->name,
                 bytes, strerror(-rc));
        return rc;
    }
    rc = kern_copy(b, KERN_STREAM_COMPUTE, dev, host, bytes, KERN_COPY_TO_DEVICE);
    if (rc == 0)
        rc = kern_sync(b, err, err_size);
    else
        snprintf(err, err_size, "%s backend: copying %zu bytes of weights: %s", b->name, bytes,
                 strerror(-rc));
    if (rc) {
        kern_free(b, KERN_MEM_DEVICE, dev);
        return rc;
    }
    *out = dev;
    return 0;
}

void kern_unplace(kern_backend *b, const void *host, const void *placed)
{
    if (placed && placed != host) kern_free(b, KERN_MEM_DEVICE, (void *)placed);
}

double kern_copy_seconds(kern_backend *b, kern_copy_dir dir, size_t bytes, int reps)
{
    kern_mem src_kind = dir == KERN_COPY_TO_DEVICE ? KERN_MEM_HOST_PINNED : KERN_MEM_DEVICE;
    kern_mem dst_kind = dir == KERN_COPY_TO_HOST ? KERN_MEM_HOST_PINNED : KERN_MEM_DEVICE;
    kern_stream s = dir == KERN_COPY_ON_DEVICE ? KERN_STREAM_COMPUTE : KERN_STREAM_COPY;
    void *src = NULL, *dst = NULL;
    char err[128];
    double best = 0.0;
    if (kern_alloc(b, src_kind, bytes, &src) == 0 && kern_alloc(b, dst_kind, bytes, &dst) == 0) {
        if (src_kind != KERN_MEM_DEVICE) memset(src, 1, bytes);
        for (int r = 0; r < reps; r++) {
            struct timespec t0, t1;
            clock_gettime(CLOCK_MONOTONIC, &t0);
            if (kern_copy(b, s, dst, src, bytes, dir) || kern_sync(b, err, sizeof err)) break;
            clock_gettime(CLOCK_MONOTONIC, &t1);
            double t = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) * 1e-9;
            if (best == 0.0 || t < best) best = t;
        }
    }
    kern_free(b, dst_kind, dst);
    kern_free(b, src_kind, src);
    return best;
}

void kern_rope_yarn_ramp(const kern_rope_yarn *y, int n_rot, float freq_base, double *low,
                         double *high)
{
    const double two_pi = 6.283185307179586;
    double base = freq_base, dim = n_rot;
    /* the dimension where a pair turns `beta` times over the original context */
    double lo = dim * log(y->orig_ctx / (y->beta_fast * two_pi)) / (2.0 * log(base));
    double hi = dim * log(y->orig_ctx / (y->beta_slow * two_pi)) / (2.0 * log(base));
    if (y->truncate) {
        lo = floor(lo);
        hi = ceil(hi);
    }
    lo = lo > 0.0 ? lo : 0.0;
    hi = hi < dim - 1 ? hi : dim - 1;
    if (lo == hi) hi += 0.001; /* transformers' guard against a zero-width ramp */
    *low = lo;
    *high = hi;
}

kern_weight kern_weight_block(const kern_weight *w, int64_t n_batch, int64_t i)
{
    kern_weight blk = *w;
    blk.n_rows = w->n_rows / n_batch;
    blk.data = (const uint8_t *)w->data + (size_t)(i * blk.n_rows) * w->row_bytes;
    return blk;
}

void kern_matmul_batched_one_by_one(kern_backend *b, const kern_weight *w, int64_t n_batch,
                                    const float *x, float *y, int64_t n_tokens)
{
    for (int64_t i = 0; i < n_batch; i++) {
        kern_weight blk = kern_weight_block(w, n_batch, i);
        b->ops->matmul(b, &blk, x + i * n_tokens * w->n_cols, y + i * n_tokens * blk.n_rows,
                       n_tokens);
    }
}

void kern_experts_one_by_one(kern_backend *b, const kern_ffn_expert *ex, int n_experts,
                             const float *x, float *out, float *g, float *u)
{
    for (int i = 0; i < n_experts; i++) {
        const kern_ffn_expert *e = &ex[i];
        int64_t ff = e->gate.n_rows, dim = e->down.n_rows;
        float *gi = g + e->row0 * ff;
        float *oi = out + e->row0 * dim;
        b->ops->matmul(b, &e->gate, x + e->row0 * e->gate.n_cols, gi, e->n_rows);
        if (e->gate_bias) b->ops->add_bias(b, gi, e->gate_bias, e->n_rows, ff);
        b->ops->matmul(b, &e->up, x + e->row0 * e->up.n_cols, u, e->n_rows);
        if (e->up_bias) b->ops->add_bias(b, u, e->up_bias, e->n_rows, ff);
        if (e->glu == KERN_GLU_SWIGLU_OAI)
            b->ops->swiglu_oai(b, gi, u, gi, e->n_rows * ff);
        else
            b->ops->silu_mul(b, gi, u, gi, e->n_rows * ff);
        b->ops->matmul(b, &e->down, gi, oi, e->n_rows);
        if (e->down_bias) b->ops->add_bias(b, oi, e->down_bias, e->n_rows, dim);
    }
}

int kern_moe_align_host(const int32_t *ids, const float *weights, int64_t n_tokens, int k,
                        int32_t n_expert, const kern_moe_plan *plan)
{
    const int64_t nk = n_tokens * k;
    for (int64_t i = 0; i < nk; i++)
        if (ids[i] < 0 || ids[i] >= n_expert) return -EINVAL;
    int32_t *start = plan->bucket_start;
    memset(start, 0, (size_t)(n_expert + 1) * sizeof *start);
    for (int64_t i = 0; i < nk; i++)
        start[ids[i] + 1]++;
    for (int32_t e = 0; e < n_expert; e++)
        start[e + 1] += start[e];
    /* the bucket cursors live where the used list goes: it is written after the last of them */
    int32_t *fill = plan->used + 1;
    memcpy(fill, start, (size_t)n_expert * sizeof *fill);
    for (int64_t t = 0; t < n_tokens; t++) {
        int32_t *rows = plan->comb_rows + t * k;
        float *w = plan->comb_w + t * k;
        for (int j = 0; j < k; j++) {
            int32_t row = fill[ids[t * k + j]]++;
            plan->bucket[row] = (int32_t)t;
            kern_moe_insert_row(rows, w, j, row, weights[t * k + j]);
        }
    }
    int32_t n_used = 0;
    for (int32_t e = 0; e < n_expert; e++)
        if (start[e + 1] > start[e]) plan->used[1 + n_used++] = e;
    plan->used[0] = n_used;
    return 0;
}

int kern_experts_routed_host(kern_backend *b, const kern_expert_table *t, const kern_moe_plan *plan,
                             const float *x, float *out, float *g, float *u)
{
    enum { ON_STACK = 64 };
    kern_ffn_expert stack[ON_STACK];
    int32_t n_used = plan->used[0];
    kern_ffn_expert *ex = stack;
    if (n_used > ON_STACK && !(ex = malloc((size_t)n_used * sizeof *ex))) return -ENOMEM;
    int n = 0;
    for (int32_t i = 0; i < n_used; i++) {
        int32_t e = plan->used[1 + i];
        const void *const *parts = t->parts + (size_t)e * 3;
        if (!parts[0]) continue;
        kern_ffn_expert *f = &ex[n++];
        *f = (kern_ffn_expert){.gate = t->gate,
                               .up = t->up,
                               .down = t->down,
                               .row0 = plan->bucket_start[e],
                               .n_rows = plan->bucket_start[e + 1] - plan->bucket_start[e],
                               .glu = t->glu};
        f->gate.data = parts[0];
        f->up.data = parts[1];
        f->down.data = parts[2];
        if (t->gate_bias) f->gate_bias = t->gate_bias + (int64_t)e * t->gate.n_rows;
        if (t->up_bias) f->up_bias = t->up_bias + (int64_t)e * t->up.n_rows;
        if (t->down_bias) f->down_bias = t->down_bias + (int64_t)e * t->down.n_rows;
    }
    if (n) kern_experts(b, ex, n, x, out, g, u);
    if (ex != stack) free(ex);
    return 0;
}
