/*
 * The CPU backend: every kern_ops operation as a data-parallel loop over the worker pool.
 *
 * Matmul splits the weight's rows across threads (each thread streams its own contiguous
 * slice of the matrix once per call, whatever the number of tokens) and uses the type
 * table's dot products at the SIMD level picked at open.  Attention splits (token, head)
 * pairs.  Norms, rope and element-wise operations are cheap next to the matmuls and are split
 * by rows.  Scratch memory (attention scores) is per thread and grows on demand on the engine
 * thread, before a job starts, so workers never allocate.
 */
#include "kernels/cpu/cpu_internal.h"
#include "kernels/kernels.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

typedef struct cpu_backend {
    kern_backend base; /* first: a kern_backend * is a cpu_backend * */
    kern__pool *pool;
    kern_isa isa;
    float **scratch; /* one per thread */
    int64_t scratch_floats;
    uint8_t *act;     /* activations quantised for the current matmul */
    size_t act_bytes;
    int error;        /* first failure since take_error */
} cpu_backend;

static cpu_backend *as_cpu(kern_backend *b)
{
    return (cpu_backend *)b;
}

kern_isa kern_cpu_isa(void)
{
#if defined(__x86_64__)
    __builtin_cpu_init();
    bool avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                  __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("f16c") &&
                  __builtin_cpu_supports("fma");
    if (avx512 && __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vnni"))
        return KERN_ISA_AVX512_VNNI;
    if (avx512) return KERN_ISA_AVX512;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
        __builtin_cpu_supports("f16c"))
        return KERN_ISA_AVX2;
#endif
    return KERN_ISA_SCALAR;
}

const char *kern_isa_name(kern_isa isa)
{
    switch (isa) {
    case KERN_ISA_SCALAR: return "scalar";
    case KERN_ISA_AVX2: return "avx2";
    case KERN_ISA_AVX512: return "avx512";
    case KERN_ISA_AVX512_VNNI: return "avx512vnni";
    default: return "unknown";
    }
}

/* ---- matmul ----------------------------------------------------------------------------- */

/* Tokens handed to one dot_multi call: enough to reuse each converted weight vector, few
 * enough that the activations stay in L1/L2 next to the row. */
enum { TOKEN_BLOCK = 8 };

typedef struct matmul_job {
    const kern_weight *w;
    const uint8_t *x; /* activations in the weight type's act_type */
    size_t x_stride;  /* bytes between tokens' activations */
    float *y;
    int64_t n_tokens;
    kern_dot_fn dot;
    kern_dot_multi_fn dot_multi;
} matmul_job;

static void matmul_rows(void *ctx, int64_t r0, int64_t r1, int thread_index)
{
    const matmul_job *job = ctx;
    const kern_weight *w = job->w;
    const uint8_t *base = w->data;
    int64_t n_cols = w->n_cols, n_rows = w->n_rows;
    if (job->n_tokens == 1) {
        for (int64_t r = r0; r < r1; r++)
            job->y[r] = job->dot(base + (size_t)r * w->row_bytes, job->x, n_cols);
        return;
    }
    float out[TOKEN_BLOCK];
    for (int64_t r = r0; r < r1; r++) {
        const uint8_t *row = base + (size_t)r * w->row_bytes;
        for (int64_t t0 = 0; t0 < job->n_tokens; t0 += TOKEN_BLOCK) {
            int nt = (int)(job->n_tokens - t0 < TOKEN_BLOCK ? job->n_tokens - t0 : TOKEN_BLOCK);
            job->dot_multi(row, job->x + (size_t)t0 * job->x_stride, job->x_stride, nt, n_cols, out);
            for (int j = 0; j < nt; j++) job->y[(t0 + j) * n_rows + r] = out[j];
        }
    }
}

typedef struct quantize_job {
    kern_quantize_fn quantize;
    const float *x;
    uint8_t *dst;
    int64_t n_cols;
    size_t row_bytes;
} quantize_job;

static void quantize_tokens(void *ctx, int64_t t0, int64_t t1, int thread_index)
{
    const quantize_job *job = ctx;
    for (int64_t t = t0; t < t1; t++)
        job->quantize(job->x + t * job->n_cols, job->dst + (size_t)t * job->row_bytes, job->n_cols);
}

static void record_error(cpu_backend *cpu, int rc)
{
    if (!cpu->error) cpu->error = rc;
}

static void cpu_matmul(kern_backend *b, const kern_weight *w, const float *x, float *y,
                       int64_t n_tokens)
{
    cpu_backend *cpu = as_cpu(b);
    const kern_type_traits *t = kern_type_info(w->type);
    matmul_job job = {.w = w, .y = y, .n_tokens = n_tokens};
    /* Levels without a kernel for this type fall back to the best level below. */
    for (int level = cpu->isa; level >= 0 && !job.dot; level--) {
        job.dot = t->dot[level];
        job.dot_multi = t->dot_multi[level];
    }
    if (t->act_type == KERN_T_F32) {
        job.x = (const uint8_t *)x;
        job.x_stride = (size_t)w->n_cols * sizeof(float);
    } else {
        const kern_type_traits *at = kern_type_info(t->act_type);
        size_t row_bytes = kern_row_bytes(t->act_type, w->n_cols);
        size_t need = row_bytes * (size_t)n_tokens;
        if (need > cpu->act_bytes) {
            uint8_t *grown = realloc(cpu->act, need);
            if (!grown) {
                memset(y, 0, (size_t)(n_tokens * w->n_rows) * sizeof *y);
                record_error(cpu, -ENOMEM);
                return;
            }
            cpu->act = grown;
            cpu->act_bytes = need;
        }
        quantize_job qj = {.x = x, .dst = cpu->act, .n_cols = w->n_cols, .row_bytes = row_bytes};
        for (int level = cpu->isa; level >= 0 && !qj.quantize; level--) qj.quantize = at->from_f32[level];
        kern__pool_run(cpu->pool, quantize_tokens, &qj, n_tokens, 4);
        job.x = cpu->act;
        job.x_stride = row_bytes;
    }
    /* Grain of 16 rows keeps each thread's slice on whole cache lines of y. */
    kern__pool_run(cpu->pool, matmul_rows, &job, w->n_rows, 16);
}

static int cpu_take_error(kern_backend *b)
{
    cpu_backend *cpu = as_cpu(b);
    int rc = cpu->error;
    cpu->error = 0;
    return rc;
}

/* ---- rmsnorm ----------------------------------------------------------------------------- */

typedef struct rmsnorm_job {
    const float *x, *weight;
    float *out;
    int64_t n, stride;
    float eps;
} rmsnorm_job;

static void rmsnorm_rows(void *ctx, int64_t r0, int64_t r1, int thread_index)
{
    const rmsnorm_job *job = ctx;
    for (int64_t r = r0; r < r1; r++) {
        const float *x = job->x + r * job->stride;
        float *out = job->out + r * job->stride;
        double ss = 0.0;
        for (int64_t i = 0; i < job->n; i++) ss += (double)x[i] * x[i];
        float scale = (float)(1.0 / sqrt(ss / (double)job->n + job->eps));
        if (job->weight)
            for (int64_t i = 0; i < job->n; i++) out[i] = x[i] * scale * job->weight[i];
        else
            for (int64_t i = 0; i < job->n; i++) out[i] = x[i] * scale;
    }
}

static void cpu_rmsnorm(kern_backend *b, const float *x, const float *weight, float *out,
                        int64_t n, int64_t n_rows, int64_t stride, float eps)
{
    rmsnorm_job job = {.x = x, .weight = weight, .out = out, .n = n, .stride = stride, .eps = eps};
    kern__pool_run(as_cpu(b)->pool, rmsnorm_rows, &job, n_rows, n_rows >= 64 ? 8 : n_rows);
}

/* ---- rope --------------------------------------------------------------------------------- */

typedef struct rope_job {
    float *x;
    int n_heads, head_dim, n_rot;
    const int32_t *pos;
    float freq_base;
    kern_rope_mode mode;
} rope_job;

static void rope_tokens(void *ctx, int64_t t0, int64_t t1, int thread_index)
{
    const rope_job *job = ctx;
    int half = job->n_rot / 2;
    for (int64_t t = t0; t < t1; t++) {
        double p = job->pos[t];
        for (int i = 0; i < half; i++) {
            /* theta_i = p * base^(-2i/n_rot), computed in double: positions reach 10^5 */
            double theta = p * pow((double)job->freq_base, -2.0 * i / job->n_rot);
            float c = (float)cos(theta), s = (float)sin(theta);
            for (int h = 0; h < job->n_heads; h++) {
                float *v = job->x + (t * job->n_heads + h) * job->head_dim;
                int i0 = job->mode == KERN_ROPE_NEOX ? i : 2 * i;
                int i1 = job->mode == KERN_ROPE_NEOX ? i + half : 2 * i + 1;
                float a = v[i0], bb = v[i1];
                v[i0] = a * c - bb * s;
                v[i1] = a * s + bb * c;
            }
        }
    }
}

static void cpu_rope(kern_backend *b, float *x, int64_t n_tokens, int n_heads, int head_dim,
                     int n_rot, const int32_t *pos, float freq_base, kern_rope_mode mode)
{
    rope_job job = {.x = x, .n_heads = n_heads, .head_dim = head_dim, .n_rot = n_rot,
                    .pos = pos, .freq_base = freq_base, .mode = mode};
    kern__pool_run(as_cpu(b)->pool, rope_tokens, &job, n_tokens, 1);
}

/* ---- attention ----------------------------------------------------------------------------- */

typedef struct attn_job {
    cpu_backend *cpu;
    const float *q;
    const kern_attn_token *tokens;
    float *out;
    int n_head, n_head_kv, head_dim;
    float scale;
    kern_dot_fn dot;
} attn_job;

static void attention_pairs(void *ctx, int64_t p0, int64_t p1, int thread_index)
{
    const attn_job *job = ctx;
    float *scores = job->cpu->scratch[thread_index];
    int hd = job->head_dim, group = job->n_head / job->n_head_kv;
    int64_t kv_stride = (int64_t)job->n_head_kv * hd;
    for (int64_t p = p0; p < p1; p++) {
        int64_t t = p / job->n_head;
        int h = (int)(p % job->n_head);
        const kern_attn_token *tok = &job->tokens[t];
        const float *q = job->q + (t * job->n_head + h) * hd;
        const float *k = tok->k + (int64_t)(h / group) * hd;
        const float *v = tok->v + (int64_t)(h / group) * hd;
        float max = -INFINITY;
        for (int32_t j = 0; j < tok->n_kv; j++) {
            scores[j] = job->dot(k + j * kv_stride, q, hd) * job->scale;
            if (scores[j] > max) max = scores[j];
        }
        double sum = 0.0;
        for (int32_t j = 0; j < tok->n_kv; j++) {
            scores[j] = expf(scores[j] - max);
            sum += scores[j];
        }
        float inv = (float)(1.0 / sum);
        float *out = job->out + (t * job->n_head + h) * hd;
        memset(out, 0, (size_t)hd * sizeof(float));
        for (int32_t j = 0; j < tok->n_kv; j++) {
            float pj = scores[j] * inv;
            const float *vj = v + j * kv_stride;
            for (int i = 0; i < hd; i++) out[i] += pj * vj[i];
        }
    }
}

static int ensure_scratch(cpu_backend *cpu, int64_t n_floats)
{
    if (n_floats <= cpu->scratch_floats) return 0;
    int n = kern__pool_size(cpu->pool);
    for (int i = 0; i < n; i++) {
        float *p = realloc(cpu->scratch[i], (size_t)n_floats * sizeof(float));
        if (!p) return -ENOMEM;
        cpu->scratch[i] = p;
    }
    cpu->scratch_floats = n_floats;
    return 0;
}

static int cpu_attention(kern_backend *b, const float *q, const kern_attn_token *tokens,
                          float *out, int64_t n_tokens, int n_head, int n_head_kv, int head_dim,
                          float scale)
{
    cpu_backend *cpu = as_cpu(b);
    int64_t max_kv = 1;
    for (int64_t t = 0; t < n_tokens; t++)
        if (tokens[t].n_kv > max_kv) max_kv = tokens[t].n_kv;
    if (ensure_scratch(cpu, max_kv) != 0) return -ENOMEM;
    const kern_type_traits *f32 = kern_type_info(KERN_T_F32);
    attn_job job = {.cpu = cpu, .q = q, .tokens = tokens, .out = out, .n_head = n_head,
                    .n_head_kv = n_head_kv, .head_dim = head_dim, .scale = scale,
                    .dot = f32->dot[cpu->isa]};
    kern__pool_run(cpu->pool, attention_pairs, &job, n_tokens * n_head, 1);
    return 0;
}

/* ---- element-wise -------------------------------------------------------------------------- */

typedef struct elementwise_job {
    const float *a, *b;
    float *out;
} elementwise_job;

static void silu_mul_range(void *ctx, int64_t i0, int64_t i1, int thread_index)
{
    const elementwise_job *job = ctx;
    for (int64_t i = i0; i < i1; i++) {
        float g = job->a[i];
        job->out[i] = g / (1.0f + expf(-g)) * job->b[i];
    }
}

static void cpu_silu_mul(kern_backend *b, const float *gate, const float *up, float *out,
                         int64_t n)
{
    elementwise_job job = {.a = gate, .b = up, .out = out};
    kern__pool_run(as_cpu(b)->pool, silu_mul_range, &job, n, 4096);
}

static void add_range(void *ctx, int64_t i0, int64_t i1, int thread_index)
{
    const elementwise_job *job = ctx;
    for (int64_t i = i0; i < i1; i++) job->out[i] += job->a[i];
}

static void cpu_add(kern_backend *b, float *y, const float *x, int64_t n)
{
    elementwise_job job = {.a = x, .out = y};
    kern__pool_run(as_cpu(b)->pool, add_range, &job, n, 16384);
}

static void cpu_get_rows(kern_backend *b, const kern_weight *w, const int32_t *ids, float *out,
                         int64_t n_ids)
{
    const kern_type_traits *t = kern_type_info(w->type);
    for (int64_t i = 0; i < n_ids; i++)
        t->to_f32((const uint8_t *)w->data + (size_t)ids[i] * w->row_bytes, out + i * w->n_cols,
                  w->n_cols);
}

static void cpu_destroy(kern_backend *b);

static const kern_ops cpu_ops = {
    .matmul = cpu_matmul,
    .rmsnorm = cpu_rmsnorm,
    .rope = cpu_rope,
    .attention = cpu_attention,
    .silu_mul = cpu_silu_mul,
    .add = cpu_add,
    .get_rows = cpu_get_rows,
    .destroy = cpu_destroy,
    .take_error = cpu_take_error,
};

/* ---- open / close ---------------------------------------------------------------------------- */

kern_cpu_opts kern_cpu_opts_default(void)
{
    return (kern_cpu_opts){.n_threads = 0, .max_isa = KERN_ISA_COUNT};
}

int kern_cpu_open(kern_backend **out, const kern_cpu_opts *opts, char *err, size_t err_size)
{
    *out = NULL;
    kern_cpu_opts o = opts ? *opts : kern_cpu_opts_default();
    int n_threads = o.n_threads;
    if (n_threads <= 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        n_threads = n > 0 ? (int)n : 1;
    }
    if (n_threads > 1024) {
        snprintf(err, err_size, "cpu backend: %d threads requested, at most 1024", n_threads);
        return -EINVAL;
    }
    cpu_backend *cpu = calloc(1, sizeof *cpu);
    if (!cpu) goto nomem;
    cpu->base.name = "cpu";
    cpu->base.ops = &cpu_ops;
    cpu->isa = kern_cpu_isa();
    if (o.max_isa < cpu->isa) cpu->isa = o.max_isa;
    cpu->scratch = calloc((size_t)n_threads, sizeof *cpu->scratch);
    if (!cpu->scratch) goto nomem;
    int rc = kern__pool_create(&cpu->pool, n_threads);
    if (rc) {
        snprintf(err, err_size, "cpu backend: cannot start %d worker threads: %s", n_threads,
                 strerror(-rc));
        free(cpu->scratch);
        free(cpu);
        return rc;
    }
    *out = &cpu->base;
    return 0;
nomem:
    if (cpu) free(cpu->scratch);
    free(cpu);
    snprintf(err, err_size, "cpu backend: out of memory");
    return -ENOMEM;
}

int kern_cpu_n_threads(const kern_backend *b)
{
    return kern__pool_size(((const cpu_backend *)b)->pool);
}

kern_isa kern_cpu_backend_isa(const kern_backend *b)
{
    return ((const cpu_backend *)b)->isa;
}

static void cpu_destroy(kern_backend *b)
{
    cpu_backend *cpu = as_cpu(b);
    int n = cpu->pool ? kern__pool_size(cpu->pool) : 0;
    kern__pool_destroy(&cpu->pool);
    for (int i = 0; i < n; i++) free(cpu->scratch[i]);
    free(cpu->scratch);
    free(cpu->act);
    free(cpu);
}

void kern_backend_close(kern_backend **bp)
{
    if (!*bp) return;
    (*bp)->ops->destroy(*bp);
    *bp = NULL;
}

/* ---- memory bandwidth ------------------------------------------------------------------------ */

typedef struct read_job {
    const uint8_t *buf;
    float sink[64]; /* one per thread, so the reads cannot be optimised away */
} read_job;

static void read_range(void *ctx, int64_t c0, int64_t c1, int thread_index)
{
    read_job *job = ctx;
    /* Sum the words directly: any arithmetic beyond an add per word would make this measure
     * compute instead of memory. */
    const uint64_t *p = (const uint64_t *)(job->buf + c0 * 64);
    const uint64_t *end = (const uint64_t *)(job->buf + c1 * 64);
    uint64_t a = 0, b = 0, c = 0, d = 0, e = 0, f = 0, g = 0, h = 0;
    for (; p < end; p += 8) {
        /* the same prefetch distance as the dot kernels, so the floor is the best rate the
         * machine reaches, not one the kernels beat */
        __builtin_prefetch((const uint8_t *)p + 1024);
        a += p[0], b += p[1], c += p[2], d += p[3], e += p[4], f += p[5], g += p[6], h += p[7];
    }
    if (thread_index < 64) job->sink[thread_index] = (float)(a ^ b ^ c ^ d ^ e ^ f ^ g ^ h);
}

double kern_cpu_read_bandwidth(kern_backend *b, const void *buf, size_t bytes)
{
    cpu_backend *cpu = as_cpu(b);
    read_job job = {.buf = buf};
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    /* grain of 4 KiB pages keeps each thread's range page-aligned */
    kern__pool_run(cpu->pool, read_range, &job, (int64_t)(bytes / 64), 64);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double s = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) * 1e-9;
    volatile float keep = job.sink[0];
    (void)keep;
    return s > 0 ? (double)bytes / s : 0.0;
}
