/*
 * The CPU backend: every kern_ops operation as a data-parallel loop over the worker pool.
 *
 * The device is the host: memory of every kind is plain host memory, copies are memcpy and
 * events are complete when recorded, so the forward pass written for a GPU runs here
 * unchanged and without cost beyond a few small copies per step.
 *
 * Matmul splits the weight's rows across threads (each thread streams its own contiguous
 * slice of the matrix once per call, whatever the number of tokens) and uses the type
 * table's dot products at the SIMD level picked at open.  Attention splits (token, head)
 * pairs.  Norms, rope and element-wise operations are cheap next to the matmuls and are split
 * by rows.  Scratch memory (attention scores) is per thread and grows on demand on the engine
 * thread, before a job starts, so workers never allocate.
 */
#include "kernels/cpu/cpu.h"
#include "kernels/backend_internal.h"
#include "kernels/cpu/cpu_internal.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

enum { HUGE_PAGE = 2 << 20, HUGE_ALLOC = 8 << 20 };

typedef struct cpu_backend {
    kern_backend base; /* first: a kern_backend * is a cpu_backend * */
    kern__pool *pool;
    kern_isa isa;
    float **scratch; /* one per thread */
    int64_t scratch_floats;
    uint8_t *act; /* activations quantised for the current matmul */
    size_t act_bytes;
    int64_t *first; /* experts op: each expert's first work item */
    int first_cap;
    kern__error error; /* first failure since the last sync */
    kern_profile profile;
    int profile_depth; /* profiled calls in progress */
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
    case KERN_ISA_SCALAR:
        return "scalar";
    case KERN_ISA_AVX2:
        return "avx2";
    case KERN_ISA_AVX512:
        return "avx512";
    case KERN_ISA_AVX512_VNNI:
        return "avx512vnni";
    default:
        return "unknown";
    }
}

/* ---- matmul ----------------------------------------------------------------------------- */

/* Tokens handed to one dot_multi call: enough to reuse each converted weight vector, few
 * enough that the activations stay in L1/L2 next to the row. */
enum { TOKEN_BLOCK = 8 };
#define TILE_BYTES ((size_t)512 << 10) /* activations a token tile may hold (dot_rows) */

typedef struct matmul_job {
    const kern_weight *w;
    const uint8_t *x; /* activations in the weight type's act_type */
    size_t x_stride;  /* bytes between tokens' activations */
    float *y;
    int64_t n_tokens;
    kern_dot_fn dot;
    kern_dot_multi_fn dot_multi;
} matmul_job;

/* y[t][r - r0] (rows y_stride floats apart) for rows [r0, r1) of w and n_tokens activations. */
static void dot_rows(const kern_weight *w, kern_dot_fn dot, kern_dot_multi_fn dot_multi, int64_t r0,
                     int64_t r1, const uint8_t *x, size_t x_stride, int64_t n_tokens, float *y,
                     int64_t y_stride)
{
    const uint8_t *base = w->data;
    int64_t n_cols = w->n_cols;
    if (n_tokens == 1) {
        for (int64_t r = r0; r < r1; r++)
            y[r - r0] = dot(base + (size_t)r * w->row_bytes, x, n_cols);
        return;
    }
    float out[TOKEN_BLOCK];
    /* Tokens in tiles that stay in L2 while every row of the range passes over them: a prefill
     * batch's activations (512 tokens of a 7168-wide row: 4 MB as Q8_K) would otherwise stream
     * from L3 once per weight row.  A tile is about half a Zen 4 / Sapphire Rapids L2 of
     * activations, in whole 8-token groups, so the results are the same bits.  Measured on a
     * 7168 x 7168 Q4_K matmul of 512 tokens, 2 threads: 326 -> 405 GFLOP/s; 18432 wide, 338 ->
     * 377 (docs/benchmarks.md). */
    int64_t tt = (int64_t)(TILE_BYTES / x_stride) / TOKEN_BLOCK * TOKEN_BLOCK;
    if (tt < TOKEN_BLOCK) tt = TOKEN_BLOCK;
    for (int64_t tile = 0; tile < n_tokens; tile += tt) {
        int64_t tile_end = n_tokens - tile < tt ? n_tokens : tile + tt;
        for (int64_t r = r0; r < r1; r++) {
            const uint8_t *row = base + (size_t)r * w->row_bytes;
            for (int64_t t0 = tile; t0 < tile_end; t0 += TOKEN_BLOCK) {
                int nt = (int)(tile_end - t0 < TOKEN_BLOCK ? tile_end - t0 : TOKEN_BLOCK);
                dot_multi(row, x + (size_t)t0 * x_stride, x_stride, nt, n_cols, out);
                for (int j = 0; j < nt; j++)
                    y[(t0 + j) * y_stride + r - r0] = out[j];
            }
        }
    }
}

static void matmul_rows(void *ctx, int64_t r0, int64_t r1, int thread_index)
{
    const matmul_job *job = ctx;
    dot_rows(job->w, job->dot, job->dot_multi, r0, r1, job->x, job->x_stride, job->n_tokens,
             job->y + r0, job->w->n_rows);
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

/* Chunks per thread of a matmul-like job over n_tokens tokens: decode's short jobs read weights
 * from memory and want few, long chunks; prefill's are compute-bound and balance better in many
 * small ones (measured on olmoe-slice: +4% prefill with 16, -10% decode). */
static int chunks_per_thread(int64_t n_tokens)
{
    return n_tokens >= 16 ? 16 : 4;
}

/* The dot products of w's type at the backend's level (or the best level below it). */
static void pick_dots(const cpu_backend *cpu, uint32_t type, kern_dot_fn *dot,
                      kern_dot_multi_fn *dot_multi)
{
    const kern_cpu_type *k = kern_cpu_type_kernels(type);
    *dot = NULL;
    *dot_multi = NULL;
    for (int level = cpu->isa; level >= 0 && !*dot; level--) {
        *dot = k->dot[level];
        *dot_multi = k->dot_multi[level];
    }
}

static kern_quantize_fn pick_quantize(const cpu_backend *cpu, uint32_t act_type)
{
    const kern_cpu_type *ak = kern_cpu_type_kernels(act_type);
    kern_quantize_fn q = NULL;
    for (int level = cpu->isa; level >= 0 && !q; level--)
        q = ak->from_f32[level];
    return q;
}

static int ensure_act(cpu_backend *cpu, size_t need)
{
    if (need <= cpu->act_bytes) return 0;
    uint8_t *grown = realloc(cpu->act, need);
    if (!grown) {
        kern__error_set(&cpu->error, -ENOMEM, "%zu bytes of quantised activations: out of memory",
                        need);
        return -ENOMEM;
    }
    cpu->act = grown;
    cpu->act_bytes = need;
    return 0;
}

/* job's dots for w and its activations: x itself for the float types, else the n_rows rows of
 * x quantised once into the backend's buffer.  False (y zeroed) when that buffer cannot grow. */
static bool matmul_inputs(cpu_backend *cpu, const kern_weight *w, const float *x, int64_t n_rows,
                          float *y, int64_t n_out, matmul_job *job)
{
    const kern_type_traits *t = kern_type_info(w->type);
    pick_dots(cpu, w->type, &job->dot, &job->dot_multi);
    if (t->act_type == KERN_T_F32) {
        job->x = (const uint8_t *)x;
        job->x_stride = (size_t)w->n_cols * sizeof(float);
        return true;
    }
    size_t row_bytes = kern_row_bytes(t->act_type, w->n_cols);
    if (ensure_act(cpu, row_bytes * (size_t)n_rows)) {
        memset(y, 0, (size_t)n_out * sizeof *y);
        return false;
    }
    quantize_job qj = {.quantize = pick_quantize(cpu, t->act_type),
                       .x = x,
                       .dst = cpu->act,
                       .n_cols = w->n_cols,
                       .row_bytes = row_bytes};
    kern__pool_run(cpu->pool, quantize_tokens, &qj, n_rows, 4);
    job->x = cpu->act;
    job->x_stride = row_bytes;
    return true;
}

static void cpu_matmul(kern_backend *b, const kern_weight *w, const float *x, float *y,
                       int64_t n_tokens)
{
    cpu_backend *cpu = as_cpu(b);
    if (n_tokens <= 0) return;
    matmul_job job = {.w = w, .y = y, .n_tokens = n_tokens};
    if (!matmul_inputs(cpu, w, x, n_tokens, y, n_tokens * w->n_rows, &job)) return;
    /* Grain of 16 rows keeps each thread's slice on whole cache lines of y. */
    kern__pool_run_chunks(cpu->pool, matmul_rows, &job, w->n_rows, 16, chunks_per_thread(n_tokens));
}

/* ---- matmul_batched: n_batch row blocks of one weight over their own activations ----------
 *
 * deepseek2's absorbed attention multiplies each head's slice of attn_k_b / attn_v_b with that
 * head's rows: 128 small matmuls per product per layer on DeepSeek-V3, each a pool hand-off and
 * a quantisation.  One job over (block, 16 rows) items with all the activations quantised at
 * once does the same dots (dot_rows, the same token tiles) in one hand-off. */

typedef struct batched_job {
    matmul_job m;
    int64_t n_batch, rows_per, blocks_per; /* blocks_per: BATCHED_ROW_BLOCK-row items per block */
} batched_job;

enum { BATCHED_ROW_BLOCK = 16 };

static void batched_rows(void *ctx, int64_t i0, int64_t i1, int thread_index)
{
    const batched_job *job = ctx;
    const matmul_job *m = &job->m;
    for (int64_t i = i0; i < i1; i++) {
        int64_t b = i / job->blocks_per, r0 = (i % job->blocks_per) * BATCHED_ROW_BLOCK;
        int64_t r1 =
            r0 + BATCHED_ROW_BLOCK < job->rows_per ? r0 + BATCHED_ROW_BLOCK : job->rows_per;
        kern_weight blk = kern_weight_block(m->w, job->n_batch, b);
        dot_rows(&blk, m->dot, m->dot_multi, r0, r1, m->x + (size_t)(b * m->n_tokens) * m->x_stride,
                 m->x_stride, m->n_tokens, m->y + (b * m->n_tokens) * job->rows_per + r0,
                 job->rows_per);
    }
}

static void cpu_matmul_batched(kern_backend *b, const kern_weight *w, int64_t n_batch,
                               const float *x, float *y, int64_t n_tokens)
{
    cpu_backend *cpu = as_cpu(b);
    if (n_tokens <= 0 || n_batch <= 0 || w->n_rows <= 0) return;
    if (w->n_rows % n_batch != 0) {
        kern__error_set(&cpu->error, -EINVAL, "matmul_batched: %lld rows in %lld equal blocks",
                        (long long)w->n_rows, (long long)n_batch);
        return;
    }
    batched_job job = {.m = {.w = w, .y = y, .n_tokens = n_tokens},
                       .n_batch = n_batch,
                       .rows_per = w->n_rows / n_batch};
    job.blocks_per = (job.rows_per + BATCHED_ROW_BLOCK - 1) / BATCHED_ROW_BLOCK;
    if (!matmul_inputs(cpu, w, x, n_batch * n_tokens, y, n_tokens * w->n_rows, &job.m)) return;
    kern__pool_run_chunks(cpu->pool, batched_rows, &job, n_batch * job.blocks_per, 1,
                          chunks_per_thread(n_tokens));
}

/* ---- experts: a layer's routed experts in two jobs ------------------------------------------
 *
 * One job runs every expert's gate and up (silu applied as each row pair is done), one runs
 * every down, each over (expert, block of rows) items, so a decode step's eight or so small
 * experts cost two hand-offs instead of six each and every thread streams weights without a
 * barrier between experts.  Each bucket's activations are quantised once for gate and up
 * together.  The arithmetic per row is the matmul's, so results do not change. */

enum { EXPERT_ROW_BLOCK = 16 };

static inline float silu_times(float g, float u)
{
    return g / (1.0f + expf(-g)) * u;
}

/* gpt-oss's clamped SwiGLU (kernels.h, KERN_GLU_SWIGLU_OAI), in the order transformers'
 * GptOssExperts computes it: glu = g * sigmoid(alpha g), then (u + 1) * glu. */
static inline float swiglu_oai(float g, float u)
{
    const float alpha = 1.702f, limit = 7.0f;
    g = g < limit ? g : limit;
    u = u < -limit ? -limit : u > limit ? limit : u;
    float glu = g / (1.0f + expf(-alpha * g));
    return (u + 1.0f) * glu;
}

static inline float glu_of(kern_glu kind, float g, float u)
{
    return kind == KERN_GLU_SWIGLU_OAI ? swiglu_oai(g, u) : silu_times(g, u);
}

typedef struct experts_job {
    const cpu_backend *cpu;
    const kern_ffn_expert *ex;
    const int64_t *first; /* n_experts + 1: each expert's first item */
    int n_experts;
    int which;          /* 0: gate and up into g; 1: down into out */
    const float *x;     /* f32 input rows (x or g) */
    const uint8_t *act; /* the same rows quantised (NULL: the weights read f32) */
    size_t act_stride;  /* bytes per row of act (or of x) */
    int64_t n_cols;
    kern_quantize_fn quantize;
    float *g, *out;
} experts_job;

/* The expert holding item `it`: the last i with first[i] <= it. */
static int expert_of(const experts_job *job, int64_t it)
{
    int lo = 0, hi = job->n_experts - 1;
    while (lo < hi) {
        int mid = (lo + hi + 1) / 2;
        if (job->first[mid] <= it)
            lo = mid;
        else
            hi = mid - 1;
    }
    return lo;
}

/* Items are bucket rows: quantise them for the next job. */
static void experts_quantize(void *ctx, int64_t i0, int64_t i1, int thread_index)
{
    const experts_job *job = ctx;
    for (int64_t it = i0; it < i1;) {
        int e = expert_of(job, it);
        int64_t end = job->first[e + 1] < i1 ? job->first[e + 1] : i1;
        for (int64_t r = job->ex[e].row0 + (it - job->first[e]); it < end; it++, r++)
            job->quantize(job->x + r * job->n_cols,
                          (uint8_t *)job->act + (size_t)r * job->act_stride, job->n_cols);
    }
}

static void experts_rows(void *ctx, int64_t i0, int64_t i1, int thread_index)
{
    const experts_job *job = ctx;
    float gbuf[EXPERT_ROW_BLOCK * TOKEN_BLOCK], ubuf[EXPERT_ROW_BLOCK * TOKEN_BLOCK];
    for (int64_t it = i0; it < i1; it++) {
        int e = expert_of(job, it);
        const kern_ffn_expert *x = &job->ex[e];
        const uint8_t *in = job->act ? job->act + (size_t)x->row0 * job->act_stride
                                     : (const uint8_t *)(job->x + x->row0 * job->n_cols);
        int64_t r0 = (it - job->first[e]) * EXPERT_ROW_BLOCK;
        kern_dot_fn dot;
        kern_dot_multi_fn dot_multi;
        if (job->which == 1) {
            int64_t r1 =
                r0 + EXPERT_ROW_BLOCK < x->down.n_rows ? r0 + EXPERT_ROW_BLOCK : x->down.n_rows;
            pick_dots(job->cpu, x->down.type, &dot, &dot_multi);
            float *o = job->out + x->row0 * x->down.n_rows;
            dot_rows(&x->down, dot, dot_multi, r0, r1, in, job->act_stride, x->n_rows, o + r0,
                     x->down.n_rows);
            if (x->down_bias) /* as add_bias adds it after the matmul */
                for (int64_t t = 0; t < x->n_rows; t++)
                    for (int64_t r = r0; r < r1; r++)
                        o[t * x->down.n_rows + r] += x->down_bias[r];
            continue;
        }
        int64_t ff = x->gate.n_rows;
        int64_t r1 = r0 + EXPERT_ROW_BLOCK < ff ? r0 + EXPERT_ROW_BLOCK : ff;
        kern_dot_fn udot;
        kern_dot_multi_fn udot_multi;
        pick_dots(job->cpu, x->gate.type, &dot, &dot_multi);
        pick_dots(job->cpu, x->up.type, &udot, &udot_multi);
        /* tokens in blocks, so that the gate and up results of a block stay in registers' reach */
        for (int64_t t0 = 0; t0 < x->n_rows; t0 += TOKEN_BLOCK) {
            int64_t nt = x->n_rows - t0 < TOKEN_BLOCK ? x->n_rows - t0 : TOKEN_BLOCK;
            const uint8_t *xt = in + (size_t)t0 * job->act_stride;
            dot_rows(&x->gate, dot, dot_multi, r0, r1, xt, job->act_stride, nt, gbuf,
                     EXPERT_ROW_BLOCK);
            dot_rows(&x->up, udot, udot_multi, r0, r1, xt, job->act_stride, nt, ubuf,
                     EXPERT_ROW_BLOCK);
            for (int64_t t = 0; t < nt; t++) {
                float *gr = job->g + (x->row0 + t0 + t) * ff;
                for (int64_t r = r0; r < r1; r++) {
                    float gv = gbuf[t * EXPERT_ROW_BLOCK + r - r0],
                          uv = ubuf[t * EXPERT_ROW_BLOCK + r - r0];
                    if (x->gate_bias) gv += x->gate_bias[r];
                    if (x->up_bias) uv += x->up_bias[r];
                    gr[r] = glu_of(x->glu, gv, uv);
                }
            }
        }
    }
}

/* Whether the experts can share the two jobs: gate and up read one activation type and width,
 * and so do the downs.  (GGUF stores a layer's experts as one tensor per part, so they do.) */
static bool experts_uniform(const kern_ffn_expert *ex, int n)
{
    uint32_t a0 = kern_type_info(ex[0].gate.type)->act_type;
    uint32_t a1 = kern_type_info(ex[0].down.type)->act_type;
    for (int i = 0; i < n; i++)
        if (kern_type_info(ex[i].gate.type)->act_type != a0 ||
            kern_type_info(ex[i].up.type)->act_type != a0 ||
            kern_type_info(ex[i].down.type)->act_type != a1 ||
            ex[i].gate.n_cols != ex[0].gate.n_cols || ex[i].up.n_cols != ex[0].gate.n_cols ||
            ex[i].up.n_rows != ex[i].gate.n_rows || ex[i].down.n_cols != ex[i].gate.n_rows ||
            ex[i].down.n_cols != ex[0].down.n_cols)
            return false;
    return true;
}

/* Runs one phase (which: 0 gate and up, 1 down) of the experts over `in` (x or g). */
static int experts_phase(cpu_backend *cpu, experts_job *job, int which, const float *in)
{
    const kern_ffn_expert *ex = job->ex;
    const kern_weight *w0 = which == 0 ? &ex[0].gate : &ex[0].down;
    uint32_t act_type = kern_type_info(w0->type)->act_type;
    int64_t n_cols = w0->n_cols, rows_end = 0, n_rows = 0;
    for (int i = 0; i < job->n_experts; i++) {
        if (ex[i].row0 + ex[i].n_rows > rows_end) rows_end = ex[i].row0 + ex[i].n_rows;
        n_rows += ex[i].n_rows;
    }
    job->which = which;
    job->x = in;
    job->n_cols = n_cols;
    job->act = NULL;
    job->act_stride = (size_t)n_cols * sizeof(float);
    int64_t *first = cpu->first;
    if (act_type != KERN_T_F32) {
        job->act_stride = kern_row_bytes(act_type, n_cols);
        if (ensure_act(cpu, job->act_stride * (size_t)rows_end)) return -ENOMEM;
        job->act = cpu->act;
        job->quantize = pick_quantize(cpu, act_type);
        first[0] = 0;
        for (int i = 0; i < job->n_experts; i++)
            first[i + 1] = first[i] + ex[i].n_rows;
        kern__pool_run(cpu->pool, experts_quantize, job, n_rows, 1);
    }
    first[0] = 0;
    for (int i = 0; i < job->n_experts; i++) {
        int64_t out_rows = which == 0 ? ex[i].gate.n_rows : ex[i].down.n_rows;
        first[i + 1] = first[i] + (out_rows + EXPERT_ROW_BLOCK - 1) / EXPERT_ROW_BLOCK;
    }
    kern__pool_run_chunks(cpu->pool, experts_rows, job, first[job->n_experts], 1,
                          chunks_per_thread(n_rows));
    return 0;
}

static void cpu_experts(kern_backend *b, const kern_ffn_expert *ex, int n_experts, const float *x,
                        float *out, float *g, float *u)
{
    cpu_backend *cpu = as_cpu(b);
    if (n_experts <= 0) return;
    if (n_experts + 1 > cpu->first_cap) {
        int64_t *grown = realloc(cpu->first, (size_t)(n_experts + 1) * sizeof *grown);
        if (!grown) {
            kern__error_set(&cpu->error, -ENOMEM, "experts: out of memory");
            return;
        }
        cpu->first = grown;
        cpu->first_cap = n_experts + 1;
    }
    if (experts_uniform(ex, n_experts)) {
        experts_job job = {
            .cpu = cpu, .ex = ex, .first = cpu->first, .n_experts = n_experts, .g = g, .out = out};
        if (experts_phase(cpu, &job, 0, x) == 0) experts_phase(cpu, &job, 1, g);
        return;
    }
    kern_experts_one_by_one(b, ex, n_experts, x, out, g, u); /* mixed activation types */
}

/* The host computes the plan and reads the table directly: the CPU's device is the host. */
static void cpu_moe_align(kern_backend *b, const int32_t *ids, const float *weights,
                          int64_t n_tokens, int k, int32_t n_expert, const kern_moe_plan *plan)
{
    if (kern_moe_align_host(ids, weights, n_tokens, k, n_expert, plan))
        kern__error_set(&as_cpu(b)->error, -EINVAL,
                        "moe_align: an expert id outside the router's %d experts", n_expert);
}

static void cpu_experts_routed(kern_backend *b, const kern_expert_table *t,
                               const kern_moe_plan *plan, int64_t n_tokens, int k, const float *x,
                               float *out, float *g, float *u)
{
    (void)n_tokens, (void)k;
    if (kern_experts_routed_host(b, t, plan, x, out, g, u))
        kern__error_set(&as_cpu(b)->error, -ENOMEM, "experts_routed: out of memory");
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
        for (int64_t i = 0; i < job->n; i++)
            ss += (double)x[i] * x[i];
        float scale = (float)(1.0 / sqrt(ss / (double)job->n + job->eps));
        if (job->weight)
            for (int64_t i = 0; i < job->n; i++)
                out[i] = x[i] * scale * job->weight[i];
        else
            for (int64_t i = 0; i < job->n; i++)
                out[i] = x[i] * scale;
    }
}

static void cpu_rmsnorm(kern_backend *b, const float *x, const float *weight, float *out, int64_t n,
                        int64_t n_rows, int64_t stride, float eps)
{
    rmsnorm_job job = {.x = x, .weight = weight, .out = out, .n = n, .stride = stride, .eps = eps};
    kern__pool_run(as_cpu(b)->pool, rmsnorm_rows, &job, n_rows, n_rows >= 64 ? 8 : n_rows);
}

/* ---- rope --------------------------------------------------------------------------------- */

enum { ROPE_MAX_PAIRS = 4096 };

typedef struct rope_job {
    float *x;
    int n_heads, head_dim, n_rot;
    const int32_t *pos;
    float freq_base;
    kern_rope_mode mode;
    const double *inv_freq; /* YaRN: each pair's frequency; NULL: base^(-2i/n_rot) */
    double mscale;          /* YaRN's attention factor on cos and sin; 1 without */
} rope_job;

/* YaRN's frequency of every pair (kernels.h, kern_rope_yarn), in double. */
static void yarn_inv_freq(const kern_rope_yarn *y, int n_rot, float freq_base, double *inv)
{
    double base = freq_base, dim = n_rot, low, high;
    kern_rope_yarn_ramp(y, n_rot, freq_base, &low, &high);
    for (int i = 0; i < n_rot / 2; i++) {
        double extrapolated = pow(base, -2.0 * i / dim), interpolated = extrapolated / y->factor;
        double ramp = ((double)i - low) / (high - low);
        ramp = ramp < 0.0 ? 0.0 : ramp > 1.0 ? 1.0 : ramp;
        double keep = 1.0 - ramp; /* share of the extrapolated (unscaled) frequency */
        inv[i] = interpolated * (1.0 - keep) + extrapolated * keep;
    }
}

static void rope_tokens(void *ctx, int64_t t0, int64_t t1, int thread_index)
{
    const rope_job *job = ctx;
    int half = job->n_rot / 2;
    for (int64_t t = t0; t < t1; t++) {
        double p = job->pos[t];
        for (int i = 0; i < half; i++) {
            /* theta_i = p * base^(-2i/n_rot), computed in double: positions reach 10^5 */
            double theta = job->inv_freq ? p * job->inv_freq[i]
                                         : p * pow((double)job->freq_base, -2.0 * i / job->n_rot);
            /* mscale is 1 without YaRN, which leaves cos and sin exact */
            float c = (float)(cos(theta) * job->mscale), s = (float)(sin(theta) * job->mscale);
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
                     int n_rot, const int32_t *pos, float freq_base, kern_rope_mode mode,
                     const kern_rope_yarn *yarn)
{
    double inv_freq[ROPE_MAX_PAIRS];
    rope_job job = {.x = x,
                    .n_heads = n_heads,
                    .head_dim = head_dim,
                    .n_rot = n_rot,
                    .pos = pos,
                    .freq_base = freq_base,
                    .mode = mode,
                    .mscale = 1.0};
    if (yarn) {
        if (n_rot / 2 > ROPE_MAX_PAIRS || yarn->factor <= 0.0f || yarn->orig_ctx <= 0.0f ||
            yarn->beta_fast <= 0.0f || yarn->beta_slow <= 0.0f) {
            kern__error_set(&as_cpu(b)->error, -EINVAL,
                            "rope: YaRN over %d dims with factor %g, context %g, betas %g/%g",
                            n_rot, yarn->factor, yarn->orig_ctx, yarn->beta_fast, yarn->beta_slow);
            return;
        }
        yarn_inv_freq(yarn, n_rot, freq_base, inv_freq);
        job.inv_freq = inv_freq;
        job.mscale = yarn->attn_factor;
    }
    kern__pool_run(as_cpu(b)->pool, rope_tokens, &job, n_tokens, 1);
}

/* ---- KV cache and attention ------------------------------------------------------------------ */

/* KV head g's row (K: which 0, V: 1) at position pos of seq in `layer`, NULL when the position
 * was never reserved; *stride: elements from one position's row to the next inside the block. */
static void *kv_head_row(const kern_kv_layout *kv, int layer, int which, int32_t seq, int32_t pos,
                         int g, size_t *stride)
{
    uint8_t *block =
        kv->table[(size_t)seq * (size_t)kv->max_blocks + (size_t)(pos / kv->block_tokens)];
    if (!block) return NULL;
    size_t elem = kv->type == KERN_KV_F16 ? 2 : 4, bt = (size_t)kv->block_tokens;
    size_t plane = kv->v_is_k ? (size_t)layer * bt * (size_t)kv->kv_dim
                              : ((size_t)layer * 2 + (size_t)which) * bt * (size_t)kv->kv_dim;
    size_t in = (size_t)(pos % kv->block_tokens), hd = (size_t)kv->head_dim;
    size_t off = kv->head_major ? plane + ((size_t)g * bt + in) * hd
                                : plane + in * (size_t)kv->kv_dim + (size_t)g * hd;
    if (stride) *stride = kv->head_major ? hd : (size_t)kv->kv_dim;
    return block + off * elem;
}

typedef struct kv_store_job {
    const kern_kv_layout *kv;
    int layer;
    const float *k, *v;
    const int32_t *seq, *pos;
    _Atomic int missing; /* tokens whose position had no block */
} kv_store_job;

static void store_row(const kern_kv_layout *kv, void *dst, const float *src, int32_t n)
{
    if (kv->type == KERN_KV_F32) {
        memcpy(dst, src, (size_t)n * sizeof(float));
        return;
    }
    uint16_t *h = dst;
    for (int32_t i = 0; i < n; i++)
        h[i] = kern_f32_to_f16(src[i]);
}

static void kv_store_tokens(void *ctx, int64_t t0, int64_t t1, int thread_index)
{
    kv_store_job *job = ctx;
    const kern_kv_layout *kv = job->kv;
    int n_heads = kv->kv_dim / kv->head_dim;
    for (int64_t t = t0; t < t1; t++) {
        for (int g = 0; g < n_heads; g++) {
            void *k = kv_head_row(kv, job->layer, 0, job->seq[t], job->pos[t], g, NULL);
            void *v = kv_head_row(kv, job->layer, 1, job->seq[t], job->pos[t], g, NULL);
            if (!k) {
                job->missing++;
                break;
            }
            size_t off = (size_t)t * (size_t)kv->kv_dim + (size_t)g * (size_t)kv->head_dim;
            store_row(kv, k, job->k + off, kv->head_dim);
            if (!kv->v_is_k) store_row(kv, v, job->v + off, kv->head_dim);
        }
    }
}

static void cpu_kv_store(kern_backend *b, const kern_kv_layout *kv, int layer, const float *k,
                         const float *v, const int32_t *seq, const int32_t *pos, int64_t n_tokens)
{
    cpu_backend *cpu = as_cpu(b);
    kv_store_job job = {.kv = kv, .layer = layer, .k = k, .v = v, .seq = seq, .pos = pos};
    kern__pool_run(cpu->pool, kv_store_tokens, &job, n_tokens, 1);
    if (job.missing)
        kern__error_set(&cpu->error, -EINVAL, "kv_store: %d tokens at positions with no KV block",
                        (int)job.missing);
}

/* Attention runs per (token, KV head, slice of that KV head's query heads): each K and V row is
 * read (and converted from F16) once for every query head of the slice, and the slice's scores
 * come from one multi-vector dot product per position.  The slices exist for parallelism only:
 * decode has one token and a handful of KV heads, fewer work items than a big machine's
 * threads, so a group's query heads are split until there are enough.  Every head's arithmetic
 * is the same whatever the slicing and the batch. */
typedef struct attn_job {
    cpu_backend *cpu;
    const kern_kv_layout *kv;
    int layer;
    const float *q;
    const int32_t *seq, *pos;
    float *out;
    int n_head, n_head_kv, head_dim, slices, slice_heads;
    float scale;
    int32_t window;     /* > 0: positions above pos - window only */
    const float *sinks; /* [n_head] or NULL */
    int64_t max_kv;
    bool avx512;                 /* the AVX-512 chunk kernels (head_dim a multiple of 16) */
    kern_dot_multi_fn dot_multi; /* otherwise: f32 K row against the slice's query heads */
    void (*to_f32)(const void *src, float *dst, int64_t n);
    void (*axpy)(float *y, float a, const float *x, int64_t n);
    _Atomic int missing;
} attn_job;

enum { ATTN_CHUNK = 16 }; /* positions per inner step (at most one KV block's) */

/* scores[h][j] = q_h . k_j * scale for the chunk's nb positions (rows k_stride floats apart) */
static void chunk_scores(const attn_job *job, const float *q, int hs, const float *k,
                         size_t k_stride, int nb, float *s, size_t s_stride)
{
    int hd = job->head_dim;
    if (job->avx512) {
        kern__attn_scores_avx512(q, hs, hd, k, k_stride, nb, job->scale, s, s_stride);
        return;
    }
    float dots[256];
    for (int j = 0; j < nb; j++) {
        job->dot_multi(k + (size_t)j * k_stride, q, (size_t)hd * sizeof(float), hs, hd, dots);
        for (int h = 0; h < hs; h++)
            s[(size_t)h * s_stride + (size_t)j] = dots[h] * job->scale;
    }
}

/* out_h += sum_j p[h][j] * v_j over the chunk (p: the normalised probabilities) */
static void chunk_values(const attn_job *job, const float *p, size_t p_stride, int hs,
                         const float *v, size_t v_stride, int nb, float *out)
{
    int hd = job->head_dim;
    if (job->avx512) {
        kern__attn_values_avx512(p, p_stride, hs, hd, v, v_stride, nb, out);
        return;
    }
    for (int j = 0; j < nb; j++)
        for (int h = 0; h < hs; h++)
            job->axpy(out + (size_t)h * (size_t)hd, p[(size_t)h * p_stride + (size_t)j],
                      v + (size_t)j * v_stride, hd);
}

/* The chunk at position j0 of a sequence's K (which 0) or V (1) rows of KV head g: up to
 * ATTN_CHUNK positions inside one KV block, as f32 rows (*stride floats apart) — the cache's
 * own rows for F32, converted into `tile` for F16.  NULL: a position has no block. */
static const float *chunk_rows(const attn_job *job, int which, int32_t seq, int32_t j0, int nb,
                               int g, float *tile, size_t *stride)
{
    const kern_kv_layout *kv = job->kv;
    int hd = job->head_dim;
    size_t row_stride;
    const uint8_t *src = kv_head_row(kv, job->layer, which, seq, j0, g, &row_stride);
    if (!src) return NULL;
    if (kv->type == KERN_KV_F32) {
        *stride = row_stride;
        return (const float *)src;
    }
    size_t src_stride = row_stride * 2;
    if (job->avx512) {
        kern__f16_rows_to_f32_avx512(src, src_stride, nb, hd, tile);
    } else {
        for (int j = 0; j < nb; j++)
            job->to_f32(src + (size_t)j * src_stride, tile + (size_t)j * (size_t)hd, hd);
    }
    *stride = (size_t)hd;
    return tile;
}

/* Starts loading the chunk at position j (if below n_kv) while the current one computes.  Into
 * L2 only: in the position-major layout a head's rows are kv_dim apart, a power of two that
 * maps them onto a few L1 sets where they would evict each other. */
static void prefetch_chunk(const attn_job *job, int which, int32_t seq, int32_t j, int32_t n_kv,
                           int g)
{
    const kern_kv_layout *kv = job->kv;
    if (j >= n_kv) return;
    size_t row_stride;
    const uint8_t *src = kv_head_row(kv, job->layer, which, seq, j, g, &row_stride);
    if (!src) return;
    size_t elem = kv->type == KERN_KV_F16 ? 2 : 4, row_bytes = (size_t)job->head_dim * elem;
    int nb = n_kv - j < ATTN_CHUNK ? n_kv - j : ATTN_CHUNK;
    int32_t in_block = kv->block_tokens - j % kv->block_tokens;
    if (nb > in_block) nb = in_block;
    for (int r = 0; r < nb; r++)
        for (size_t off = 0; off < row_bytes; off += 64)
            __builtin_prefetch(src + (size_t)r * row_stride * elem + off, 0, 2);
}

/* One item: token t's query heads [h0, h0 + hs) against KV head g over positions 0 .. pos[t]
 * (or the window's last positions), in chunks of up to 16 positions of one KV block: scores,
 * then a softmax per head (with the head's sink logit in its denominator), then the values.
 * Every head's arithmetic depends on its own query and the cache only. */
static void attention_items(void *ctx, int64_t i0, int64_t i1, int thread_index)
{
    attn_job *job = ctx;
    const kern_kv_layout *kv = job->kv;
    int hd = job->head_dim, group = job->n_head / job->n_head_kv, hs = job->slice_heads;
    /* scratch: scores [hs][max_kv rounded up to a chunk], then a chunk of converted rows */
    size_t s_stride = (size_t)((job->max_kv + ATTN_CHUNK - 1) / ATTN_CHUNK * ATTN_CHUNK);
    float *scores = job->cpu->scratch[thread_index];
    float *tile = scores + (size_t)hs * s_stride;
    for (int64_t it = i0; it < i1; it++) {
        int64_t t = it / ((int64_t)job->n_head_kv * job->slices);
        int g = (int)(it / job->slices % job->n_head_kv), sl = (int)(it % job->slices);
        int h0 = g * group + sl * hs;
        int32_t seq = job->seq[t], n_kv = job->pos[t] + 1;
        int32_t first = job->window > 0 && n_kv > job->window ? n_kv - job->window : 0;
        const float *q = job->q + ((size_t)t * (size_t)job->n_head + (size_t)h0) * (size_t)hd;
        float *out = job->out + ((size_t)t * (size_t)job->n_head + (size_t)h0) * (size_t)hd;
        memset(out, 0, (size_t)hs * (size_t)hd * sizeof(float));
        for (int pass = 0; pass < 2; pass++) {
            for (int32_t j0 = first; j0 < n_kv;) {
                int32_t in_block = kv->block_tokens - j0 % kv->block_tokens;
                int nb = n_kv - j0 < ATTN_CHUNK ? n_kv - j0 : ATTN_CHUNK;
                if (nb > in_block) nb = in_block;
                prefetch_chunk(job, pass, seq, j0 + nb, n_kv, g);
                size_t stride;
                const float *rows = chunk_rows(job, pass, seq, j0, nb, g, tile, &stride);
                if (!rows) {
                    job->missing++;
                    return;
                }
                if (pass == 0)
                    chunk_scores(job, q, hs, rows, stride, nb, scores + j0, s_stride);
                else
                    chunk_values(job, scores + j0, s_stride, hs, rows, stride, nb, out);
                j0 += nb;
            }
            if (pass == 1) break;
            int32_t n = n_kv - first;
            for (int h = 0; h < hs; h++) {
                float *s = scores + (size_t)h * s_stride + first;
                /* a sink is one more logit in the softmax whose probability is dropped */
                float sink = job->sinks ? job->sinks[h0 + h] : -INFINITY;
                if (job->avx512) {
                    float max = kern__max_avx512(s, n);
                    if (sink > max) max = sink;
                    double sum = kern__exp_sum_avx512(s, n, max);
                    if (job->sinks) sum += expf(sink - max);
                    kern__scale_avx512(s, n, (float)(1.0 / sum));
                    continue;
                }
                float max = sink;
                for (int32_t j = 0; j < n; j++)
                    if (s[j] > max) max = s[j];
                double sum = job->sinks ? expf(sink - max) : 0.0;
                for (int32_t j = 0; j < n; j++) {
                    s[j] = expf(s[j] - max);
                    sum += s[j];
                }
                float inv = (float)(1.0 / sum);
                for (int32_t j = 0; j < n; j++)
                    s[j] *= inv;
            }
        }
    }
}

/* Per-thread float scratch, grown on the engine thread before a job starts so that workers
 * never allocate. */
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

static void cpu_attention(kern_backend *b, const kern_kv_layout *kv, int layer, const float *q,
                          const int32_t *seq, const int32_t *pos, float *out, int64_t n_tokens,
                          int n_head, int n_head_kv, int head_dim, float scale, int32_t window,
                          const float *sinks)
{
    cpu_backend *cpu = as_cpu(b);
    int64_t max_kv = 1;
    for (int64_t t = 0; t < n_tokens; t++)
        if (pos[t] + 1 > max_kv) max_kv = pos[t] + 1;
    int group = n_head / n_head_kv, slices = 1;
    /* split a group's query heads while there are fewer items than eight per thread: decode has
     * one token and a handful of KV heads, and small items balance across threads */
    int want = 8 * kern__pool_size(cpu->pool);
    while (n_tokens * n_head_kv * slices < want && slices < group && group % (slices * 2) == 0)
        slices *= 2;
    int hs = group / slices;
    int64_t padded = (max_kv + ATTN_CHUNK - 1) / ATTN_CHUNK * ATTN_CHUNK;
    if (kv->head_major && kv->head_dim != head_dim) {
        memset(out, 0, (size_t)(n_tokens * n_head * head_dim) * sizeof *out);
        kern__error_set(&cpu->error, -EINVAL,
                        "attention: heads of %d over a KV cache laid out in heads of %d", head_dim,
                        kv->head_dim);
        return;
    }
    if (hs > 256 || head_dim > 4096 ||
        ensure_scratch(cpu, (int64_t)hs * padded + (int64_t)ATTN_CHUNK * head_dim) != 0) {
        memset(out, 0, (size_t)(n_tokens * n_head * head_dim) * sizeof *out);
        kern__error_set(&cpu->error, hs > 256 ? -EINVAL : -ENOMEM,
                        "attention: %d heads per KV head over %lld positions: %s", hs,
                        (long long)max_kv, hs > 256 ? "too many" : "out of memory");
        return;
    }
    bool avx2 = cpu->isa >= KERN_ISA_AVX2;
    attn_job job = {.cpu = cpu,
                    .kv = kv,
                    .layer = layer,
                    .q = q,
                    .seq = seq,
                    .pos = pos,
                    .out = out,
                    .n_head = n_head,
                    .n_head_kv = n_head_kv,
                    .head_dim = head_dim,
                    .slices = slices,
                    .slice_heads = hs,
                    .scale = scale,
                    .window = window,
                    .sinks = sinks,
                    .max_kv = max_kv,
                    .avx512 = cpu->isa >= KERN_ISA_AVX512 && head_dim % 16 == 0,
                    .dot_multi = kern_cpu_type_kernels(KERN_T_F32)->dot_multi[cpu->isa],
                    .to_f32 = avx2 ? kern__f16_to_f32_avx2 : kern__f16_to_f32_scalar,
                    .axpy = avx2 ? kern__axpy_f32_avx2 : kern__axpy_f32_scalar};
    kern__pool_run(cpu->pool, attention_items, &job, n_tokens * n_head_kv * slices, 1);
    if (job.missing)
        kern__error_set(&cpu->error, -EINVAL, "attention: a position with no KV block");
}

/* ---- element-wise -------------------------------------------------------------------------- */

typedef struct elementwise_job {
    const float *a, *b;
    float *out;
    int64_t dim;
} elementwise_job;

static void silu_mul_range(void *ctx, int64_t i0, int64_t i1, int thread_index)
{
    const elementwise_job *job = ctx;
    for (int64_t i = i0; i < i1; i++) {
        job->out[i] = silu_times(job->a[i], job->b[i]);
    }
}

static void cpu_silu_mul(kern_backend *b, const float *gate, const float *up, float *out, int64_t n)
{
    elementwise_job job = {.a = gate, .b = up, .out = out};
    kern__pool_run(as_cpu(b)->pool, silu_mul_range, &job, n, 4096);
}

static void swiglu_oai_range(void *ctx, int64_t i0, int64_t i1, int thread_index)
{
    const elementwise_job *job = ctx;
    for (int64_t i = i0; i < i1; i++)
        job->out[i] = swiglu_oai(job->a[i], job->b[i]);
}

static void cpu_swiglu_oai(kern_backend *b, const float *gate, const float *up, float *out,
                           int64_t n)
{
    elementwise_job job = {.a = gate, .b = up, .out = out};
    kern__pool_run(as_cpu(b)->pool, swiglu_oai_range, &job, n, 4096);
}

static void add_range(void *ctx, int64_t i0, int64_t i1, int thread_index)
{
    const elementwise_job *job = ctx;
    for (int64_t i = i0; i < i1; i++)
        job->out[i] += job->a[i];
}

static void cpu_add(kern_backend *b, float *y, const float *x, int64_t n)
{
    elementwise_job job = {.a = x, .out = y};
    kern__pool_run(as_cpu(b)->pool, add_range, &job, n, 16384);
}

static void add_bias_rows(void *ctx, int64_t r0, int64_t r1, int thread_index)
{
    const elementwise_job *job = ctx;
    for (int64_t r = r0; r < r1; r++)
        for (int64_t i = 0; i < job->dim; i++)
            job->out[r * job->dim + i] += job->a[i];
}

static void cpu_add_bias(kern_backend *b, float *x, const float *bias, int64_t n_rows, int64_t dim)
{
    elementwise_job job = {.a = bias, .out = x, .dim = dim};
    kern__pool_run(as_cpu(b)->pool, add_bias_rows, &job, n_rows, 4);
}

static void cpu_get_rows(kern_backend *b, const kern_weight *w, const int32_t *ids, float *out,
                         int64_t n_ids)
{
    const kern_type_traits *t = kern_type_info(w->type);
    for (int64_t i = 0; i < n_ids; i++)
        t->to_f32((const uint8_t *)w->data + (size_t)ids[i] * w->row_bytes, out + i * w->n_cols,
                  w->n_cols);
}

typedef struct gather_job {
    const float *src;
    const int32_t *rows;
    float *dst;
    int64_t dim;
} gather_job;

static void gather_rows(void *ctx, int64_t r0, int64_t r1, int thread_index)
{
    const gather_job *job = ctx;
    for (int64_t r = r0; r < r1; r++)
        memcpy(job->dst + r * job->dim, job->src + (int64_t)job->rows[r] * job->dim,
               (size_t)job->dim * sizeof(float));
}

static void cpu_gather(kern_backend *b, const float *src, const int32_t *rows, float *dst,
                       int64_t n_rows, int64_t dim)
{
    gather_job job = {.src = src, .rows = rows, .dst = dst, .dim = dim};
    kern__pool_run(as_cpu(b)->pool, gather_rows, &job, n_rows, 4);
}

/* ---- mixture of experts ------------------------------------------------------------------------
 */

typedef struct router_job {
    cpu_backend *cpu;
    const float *logits;
    const kern_router_opts *o;
    int32_t *ids;
    float *weights;
} router_job;

/* Group-limited choice: each group of experts is scored by the sum of its two best choice
 * scores; the experts outside the n_used best groups can no longer be chosen.  transformers
 * masks them to 0.0, which equals exclusion whenever the chosen scores are positive (sigmoid
 * plus a bias that keeps them so); -inf excludes them always, as llama.cpp does. */
static void limit_groups(float *choice, int n_expert, int n_group, int n_used)
{
    int per = n_expert / n_group;
    float score[KERN_ROUTER_MAX_GROUPS];
    bool kept[KERN_ROUTER_MAX_GROUPS] = {false};
    for (int g = 0; g < n_group; g++) {
        float best = -INFINITY, second = -INFINITY;
        for (int e = g * per; e < (g + 1) * per; e++) {
            if (choice[e] > best) {
                second = best;
                best = choice[e];
            } else if (choice[e] > second) {
                second = choice[e];
            }
        }
        score[g] = per > 1 ? best + second : best;
    }
    for (int j = 0; j < n_used; j++) {
        int top = -1;
        for (int g = 0; g < n_group; g++)
            if (!kept[g] && (top < 0 || score[g] > score[top])) top = g;
        kept[top] = true;
    }
    for (int g = 0; g < n_group; g++)
        if (!kept[g])
            for (int e = g * per; e < (g + 1) * per; e++)
                choice[e] = -INFINITY;
}

/* p = gating(logits); keep the k largest (lowest index first among equals), chosen by p or by
 * p + sel_bias within the allowed groups; then renormalise and scale as the architecture does. */
static void route_tokens(void *ctx, int64_t t0, int64_t t1, int thread_index)
{
    const router_job *job = ctx;
    const kern_router_opts *o = job->o;
    int E = o->n_expert, K = o->k;
    float *p = job->cpu->scratch[thread_index];
    bool separate = o->sel_bias || o->n_group > 1;
    float *choice = separate ? p + E : p;
    for (int64_t t = t0; t < t1; t++) {
        const float *logits = job->logits + t * E;
        int32_t *ids = job->ids + t * K;
        float *weights = job->weights + t * K;
        if (o->gating == KERN_GATING_SIGMOID) {
            for (int e = 0; e < E; e++)
                p[e] = 1.0f / (1.0f + expf(-logits[e]));
        } else if (o->gating == KERN_GATING_TOPK_SOFTMAX) {
            memcpy(p, logits, (size_t)E * sizeof *p); /* chosen by logit, weighted below */
        } else {
            float max = -INFINITY;
            for (int e = 0; e < E; e++)
                max = logits[e] > max ? logits[e] : max;
            double sum = 0.0;
            for (int e = 0; e < E; e++) {
                p[e] = expf(logits[e] - max);
                sum += p[e];
            }
            for (int e = 0; e < E; e++)
                p[e] = (float)(p[e] / sum);
        }
        if (separate) {
            for (int e = 0; e < E; e++)
                choice[e] = p[e] + (o->sel_bias ? o->sel_bias[e] : 0.0f);
            if (o->n_group > 1) limit_groups(choice, E, o->n_group, o->n_group_used);
        }
        for (int j = 0; j < K; j++) {
            int best = -1;
            for (int e = 0; e < E; e++) {
                bool taken = false;
                for (int i = 0; i < j; i++)
                    taken |= ids[i] == e;
                if (!taken && (best < 0 || choice[e] > choice[best])) best = e;
            }
            ids[j] = best;
            weights[j] = p[best];
        }
        if (o->gating == KERN_GATING_TOPK_SOFTMAX) { /* weights[0] is the largest logit */
            double sum = 0.0;
            for (int j = 0; j < K; j++) {
                weights[j] = expf(weights[j] - p[ids[0]]);
                sum += weights[j];
            }
            for (int j = 0; j < K; j++)
                weights[j] = (float)(weights[j] / sum);
        }
        if (o->norm) {
            double topk_sum = 0.0;
            for (int j = 0; j < K; j++)
                topk_sum += weights[j];
            /* llama.cpp clamps the sum to the smallest normal f16 before dividing */
            if (topk_sum < 6.103515625e-5) topk_sum = 6.103515625e-5;
            for (int j = 0; j < K; j++)
                weights[j] = (float)(weights[j] / topk_sum);
        }
        if (o->scale != 1.0f)
            for (int j = 0; j < K; j++)
                weights[j] *= o->scale;
    }
}

static void cpu_router(kern_backend *b, const float *logits, int64_t n_tokens,
                       const kern_router_opts *o, int32_t *ids, float *weights)
{
    cpu_backend *cpu = as_cpu(b);
    bool groups_ok =
        o->n_group <= 1 || (o->n_group <= KERN_ROUTER_MAX_GROUPS && o->n_expert % o->n_group == 0 &&
                            o->n_group_used >= 1 && o->n_group_used <= o->n_group &&
                            o->k <= o->n_group_used * (o->n_expert / o->n_group));
    bool valid = o->k >= 1 && o->k <= o->n_expert && groups_ok;
    if (!valid || ensure_scratch(cpu, 2 * (int64_t)o->n_expert) != 0) {
        kern__error_set(&cpu->error, valid ? -ENOMEM : -EINVAL,
                        "router: top-%d of %d experts in %d groups (%d used)", o->k, o->n_expert,
                        o->n_group, o->n_group_used);
        return;
    }
    router_job job = {.cpu = cpu, .logits = logits, .o = o, .ids = ids, .weights = weights};
    kern__pool_run(cpu->pool, route_tokens, &job, n_tokens, 1);
}

typedef struct combine_job {
    const float *src, *weights, *h, *gate;
    const int32_t *rows;
    float *out;
    int k;
    int64_t dim;
} combine_job;

static void combine_tokens(void *ctx, int64_t t0, int64_t t1, int thread_index)
{
    const combine_job *job = ctx;
    int64_t D = job->dim;
    for (int64_t t = t0; t < t1; t++) {
        float *dst = job->out + t * D;
        memset(dst, 0, (size_t)D * sizeof *dst);
        for (int j = 0; j < job->k; j++) {
            float w = job->weights[t * job->k + j];
            const float *src = job->src + (int64_t)job->rows[t * job->k + j] * D;
            for (int64_t i = 0; i < D; i++)
                dst[i] += w * src[i];
        }
    }
}

static void cpu_moe_combine(kern_backend *b, const float *src, const int32_t *rows,
                            const float *weights, float *out, int64_t n_tokens, int k, int64_t dim)
{
    combine_job job = {
        .src = src, .rows = rows, .weights = weights, .out = out, .k = k, .dim = dim};
    kern__pool_run(as_cpu(b)->pool, combine_tokens, &job, n_tokens, 1);
}

static void gate_add_tokens(void *ctx, int64_t t0, int64_t t1, int thread_index)
{
    const combine_job *job = ctx;
    int64_t D = job->dim;
    for (int64_t t = t0; t < t1; t++) {
        double z = 0.0;
        for (int64_t i = 0; i < D; i++)
            z += (double)job->gate[i] * job->h[t * D + i];
        float g = (float)(1.0 / (1.0 + exp(-z)));
        for (int64_t i = 0; i < D; i++)
            job->out[t * D + i] += g * job->src[t * D + i];
    }
}

static void cpu_gate_add(kern_backend *b, const float *h, const float *gate, const float *x,
                         float *out, int64_t n_tokens, int64_t dim)
{
    combine_job job = {.h = h, .gate = gate, .src = x, .out = out, .dim = dim};
    kern__pool_run(as_cpu(b)->pool, gate_add_tokens, &job, n_tokens, 1);
}

/* ---- memory, copies, events: the device is the host -------------------------------------------
 */

static int cpu_alloc(kern_backend *b, kern_mem kind, size_t bytes, void **out)
{
    /* 64-byte alignment: whole cache lines, and what the SIMD loads prefer */
    *out = NULL;
    if (bytes < HUGE_ALLOC) {
        if (posix_memalign(out, 64, bytes ? bytes : 1) != 0) return -ENOMEM;
        return 0;
    }
    /* Large buffers (KV storage, a batch's scratch) on huge pages where the kernel has them:
     * attention reads a head's rows a KV row apart, each in another 4 KiB page, and misses the
     * TLB on nearly every row otherwise.  The advice may be refused; the memory works anyway. */
    if (posix_memalign(out, HUGE_PAGE, bytes) != 0) return -ENOMEM;
    if (madvise(*out, bytes / HUGE_PAGE * HUGE_PAGE, MADV_HUGEPAGE) != 0) {
        /* no transparent huge pages: 4 KiB pages, slower attention on long contexts */
    }
    return 0;
}

static void cpu_free(kern_backend *b, kern_mem kind, void *p)
{
    free(p);
}

static int cpu_register(kern_backend *b, void *p, size_t bytes)
{
    return 0;
}

static void cpu_unregister(kern_backend *b, void *p) {}

static int cpu_mem_info(kern_backend *b, size_t *free_bytes, size_t *total_bytes)
{
    long page = sysconf(_SC_PAGESIZE), avail = sysconf(_SC_AVPHYS_PAGES),
         all = sysconf(_SC_PHYS_PAGES);
    if (page <= 0 || avail < 0 || all <= 0) return -errno;
    *free_bytes = (size_t)avail * (size_t)page;
    *total_bytes = (size_t)all * (size_t)page;
    return 0;
}

static int cpu_copy(kern_backend *b, kern_stream s, void *dst, const void *src, size_t bytes,
                    kern_copy_dir dir)
{
    if (bytes) memmove(dst, src, bytes);
    return 0;
}

/* Work completes before it is queued, so an event is complete the moment it is recorded. */
struct kern_event {
    int unused;
};

static int cpu_event_create(kern_backend *b, kern_event **out)
{
    *out = calloc(1, sizeof **out);
    return *out ? 0 : -ENOMEM;
}

static void cpu_event_destroy(kern_backend *b, kern_event *e)
{
    free(e);
}

static int cpu_event_record(kern_backend *b, kern_event *e, kern_stream s)
{
    return 0;
}

static int cpu_event_query(kern_backend *b, kern_event *e)
{
    return 1;
}

static int cpu_event_wait(kern_backend *b, kern_event *e)
{
    return 0;
}

static int cpu_stream_wait(kern_backend *b, kern_stream s, kern_event *e)
{
    return 0;
}

static int cpu_sync(kern_backend *b, char *err, size_t err_size)
{
    return kern__error_take(&as_cpu(b)->error, err, err_size);
}

static void cpu_destroy(kern_backend *b);
static int cpu_set_profiling(kern_backend *b, bool on);
static void cpu_get_profile(const kern_backend *b, kern_profile *out);

static const kern_ops cpu_ops = {
    .alloc = cpu_alloc,
    .free = cpu_free,
    .register_host = cpu_register,
    .unregister_host = cpu_unregister,
    .mem_info = cpu_mem_info,
    .copy = cpu_copy,
    .event_create = cpu_event_create,
    .event_destroy = cpu_event_destroy,
    .event_record = cpu_event_record,
    .event_query = cpu_event_query,
    .event_wait = cpu_event_wait,
    .stream_wait = cpu_stream_wait,
    .sync = cpu_sync,
    .matmul = cpu_matmul,
    .matmul_batched = cpu_matmul_batched,
    .rmsnorm = cpu_rmsnorm,
    .rope = cpu_rope,
    .kv_store = cpu_kv_store,
    .attention = cpu_attention,
    .silu_mul = cpu_silu_mul,
    .swiglu_oai = cpu_swiglu_oai,
    .add = cpu_add,
    .add_bias = cpu_add_bias,
    .get_rows = cpu_get_rows,
    .gather = cpu_gather,
    .router = cpu_router,
    .experts = cpu_experts,
    .moe_align = cpu_moe_align,
    .experts_routed = cpu_experts_routed,
    .moe_combine = cpu_moe_combine,
    .gate_add = cpu_gate_add,
    .set_profiling = cpu_set_profiling,
    .get_profile = cpu_get_profile,
    .destroy = cpu_destroy,
};

/* ---- per-operation timing ------------------------------------------------------------------- */

static uint64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* An operation that runs others through the table (experts of mixed types, one by one) is
 * timed as one: only the outermost call counts. */
static uint64_t profile_enter(kern_backend *b)
{
    as_cpu(b)->profile_depth++;
    return mono_ns();
}

static void profiled(kern_backend *b, kern_op op, uint64_t t0)
{
    cpu_backend *cpu = as_cpu(b);
    if (--cpu->profile_depth > 0) return;
    cpu->profile.calls[op]++;
    cpu->profile.ns[op] += mono_ns() - t0;
}

#define PROFILED(op, OP, params, args)                                                             \
    static void prof_##op params                                                                   \
    {                                                                                              \
        uint64_t t0 = profile_enter(b);                                                            \
        cpu_##op args;                                                                             \
        profiled(b, OP, t0);                                                                       \
    }

KERN__TIMED_OPS(PROFILED)

static int prof_copy(kern_backend *b, kern_stream s, void *dst, const void *src, size_t bytes,
                     kern_copy_dir dir)
{
    uint64_t t0 = profile_enter(b);
    int rc = cpu_copy(b, s, dst, src, bytes, dir);
    profiled(b, KERN_OP_COPY, t0);
    return rc;
}

static const kern_ops cpu_ops_profiled = {
    .alloc = cpu_alloc,
    .free = cpu_free,
    .register_host = cpu_register,
    .unregister_host = cpu_unregister,
    .mem_info = cpu_mem_info,
    .copy = prof_copy,
    .event_create = cpu_event_create,
    .event_destroy = cpu_event_destroy,
    .event_record = cpu_event_record,
    .event_query = cpu_event_query,
    .event_wait = cpu_event_wait,
    .stream_wait = cpu_stream_wait,
    .sync = cpu_sync,
    .matmul = prof_matmul,
    .matmul_batched = prof_matmul_batched,
    .rmsnorm = prof_rmsnorm,
    .rope = prof_rope,
    .kv_store = prof_kv_store,
    .attention = prof_attention,
    .silu_mul = prof_silu_mul,
    .swiglu_oai = prof_swiglu_oai,
    .add = prof_add,
    .add_bias = prof_add_bias,
    .get_rows = prof_get_rows,
    .gather = prof_gather,
    .router = prof_router,
    .experts = prof_experts,
    .moe_align = prof_moe_align,
    .experts_routed = prof_experts_routed,
    .moe_combine = prof_moe_combine,
    .gate_add = prof_gate_add,
    .set_profiling = cpu_set_profiling,
    .get_profile = cpu_get_profile,
    .destroy = cpu_destroy,
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
    cpu->base.kind = KERN_BACKEND_CPU;
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

/* The CPU backend behind b: b itself, or the one a sim backend computes with. */
static cpu_backend *cpu_of(const kern_backend *b)
{
    if (b->kind == KERN_BACKEND_CPU) return (cpu_backend *)b;
    if (b->kind == KERN_BACKEND_SIM) return (cpu_backend *)kern__sim_cpu(b);
    return NULL;
}

static int cpu_set_profiling(kern_backend *b, bool on)
{
    cpu_backend *cpu = as_cpu(b);
    if (on) memset(&cpu->profile, 0, sizeof cpu->profile);
    cpu->profile_depth = 0;
    cpu->base.ops = on ? &cpu_ops_profiled : &cpu_ops;
    return 0;
}

static void cpu_get_profile(const kern_backend *b, kern_profile *out)
{
    *out = ((const cpu_backend *)b)->profile;
}

int kern_cpu_n_threads(const kern_backend *b)
{
    cpu_backend *cpu = cpu_of(b);
    return cpu ? kern__pool_size(cpu->pool) : 0;
}

kern_isa kern_cpu_backend_isa(const kern_backend *b)
{
    cpu_backend *cpu = cpu_of(b);
    return cpu ? cpu->isa : KERN_ISA_SCALAR;
}

static void cpu_destroy(kern_backend *b)
{
    cpu_backend *cpu = as_cpu(b);
    int n = cpu->pool ? kern__pool_size(cpu->pool) : 0;
    kern__pool_destroy(&cpu->pool);
    for (int i = 0; i < n; i++)
        free(cpu->scratch[i]);
    free(cpu->scratch);
    free(cpu->act);
    free(cpu->first);
    free(cpu);
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
    cpu_backend *cpu = cpu_of(b);
    if (!cpu) return 0.0;
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

double kern_cpu_best_read_bandwidth(kern_backend *b, size_t bytes, int reps)
{
    uint8_t *buf = malloc(bytes);
    if (!buf) return 0.0;
    memset(buf, 1, bytes); /* faults every page in: page faults are not bandwidth */
    double best = 0.0;
    for (int r = 0; r < reps; r++) {
        double bw = kern_cpu_read_bandwidth(b, buf, bytes);
        if (bw > best) best = bw;
    }
    free(buf);
    return best;
}
