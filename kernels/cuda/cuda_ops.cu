/*
 * The small operations: rmsnorm, rope, the element-wise ones, gather, the router, the MoE
 * combine and the shared expert's gate.
 *
 * They are cheap next to the matmuls, so each is the plainest correct kernel: one thread per
 * output element with a grid-stride loop, or one block (rmsnorm, gate_add) / one warp
 * (router) per row where a row needs a reduction.  Reductions run in a fixed tree in double
 * where kernels.h asks for it, and float arithmetic uses explicitly rounded operations, so
 * no contraction into fused multiply-adds moves a result away from the CPU reference's
 * operation order.  Each row is computed on its own: results do not depend on the batch.
 */
#include "kernels/cuda/cuda_internal.h"

#include <errno.h>
#include <math.h>

namespace
{

enum { BLOCK = 256 };

#define GRID_STRIDE(i, n)                                                                          \
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < (n);                      \
         i += (int64_t)gridDim.x * blockDim.x)

/* Sum of one double per thread of a BLOCK-thread block, in a fixed tree; every thread gets
 * the result.  `sh` is BLOCK doubles of shared memory. */
__device__ double block_sum_double(double v, double *sh)
{
    sh[threadIdx.x] = v;
    __syncthreads();
    for (int s = BLOCK / 2; s > 0; s >>= 1) {
        if (threadIdx.x < s) sh[threadIdx.x] += sh[threadIdx.x + s];
        __syncthreads();
    }
    const double total = sh[0];
    __syncthreads(); /* sh may be reused right after */
    return total;
}

/* ---- rmsnorm ---------------------------------------------------------------------------- */

__global__ void __launch_bounds__(BLOCK)
    rmsnorm_kernel(const float *x, const float *weight, float *out, int64_t n, int64_t n_rows,
                   int64_t stride, float eps)
{
    __shared__ double sh[BLOCK];
    for (int64_t r = blockIdx.x; r < n_rows; r += gridDim.x) {
        const float *xr = x + r * stride;
        float *o = out + r * stride;
        double ss = 0.0;
        for (int64_t i = threadIdx.x; i < n; i += BLOCK)
            ss += (double)xr[i] * xr[i];
        /* Every read of the row happens before the barriers in the sum: out may be x. */
        ss = block_sum_double(ss, sh);
        const float scale = (float)(1.0 / sqrt(ss / (double)n + (double)eps));
        for (int64_t i = threadIdx.x; i < n; i += BLOCK) {
            const float v = __fmul_rn(xr[i], scale);
            o[i] = weight ? __fmul_rn(v, weight[i]) : v;
        }
    }
}

/* ---- rope ------------------------------------------------------------------------------- */

/* YaRN (kern_rope_yarn) as the kernel needs it: the ramp's ends, computed once on the host
 * as the CPU computes them. */
struct rope_yarn_args {
    bool on;
    double low, high, factor, mscale;
};

/* One block per token: the n_rot/2 angles in double (positions reach 1e5, where a float
 * angle has lost its fraction), then every head's pairs rotated in float. */
__global__ void rope_kernel(float *x, int64_t n_tokens, int n_heads, int head_dim, int n_rot,
                            const int32_t *pos, float freq_base, int neox, rope_yarn_args y)
{
    extern __shared__ float cs[]; /* cos at [i], sin at [half + i] */
    const int half = n_rot / 2;
    for (int64_t t = blockIdx.x; t < n_tokens; t += gridDim.x) {
        const double p = pos[t];
        for (int i = threadIdx.x; i < half; i += blockDim.x) {
            double inv = pow((double)freq_base, -2.0 * i / n_rot);
            if (y.on) { /* blend the interpolated frequency in along the ramp */
                double ramp = ((double)i - y.low) / (y.high - y.low);
                ramp = ramp < 0.0 ? 0.0 : ramp > 1.0 ? 1.0 : ramp;
                const double keep = 1.0 - ramp;
                inv = inv / y.factor * (1.0 - keep) + inv * keep;
            }
            const double theta = p * inv;
            /* mscale is 1 without YaRN, which leaves cos and sin exact */
            cs[i] = (float)(cos(theta) * y.mscale);
            cs[half + i] = (float)(sin(theta) * y.mscale);
        }
        __syncthreads();
        for (int64_t j = threadIdx.x; j < (int64_t)n_heads * half; j += blockDim.x) {
            const int h = (int)(j / half), i = (int)(j % half);
            float *v = x + (t * n_heads + h) * head_dim;
            const int i0 = neox ? i : 2 * i, i1 = neox ? i + half : 2 * i + 1;
            const float a = v[i0], b = v[i1], c = cs[i], s = cs[half + i];
            v[i0] = __fsub_rn(__fmul_rn(a, c), __fmul_rn(b, s));
            v[i1] = __fadd_rn(__fmul_rn(a, s), __fmul_rn(b, c));
        }
        __syncthreads(); /* the angles are rewritten for the next token */
    }
}

/* ---- element-wise ------------------------------------------------------------------------ */

__global__ void glu_kernel(kern_glu kind, const float *gate, const float *up, float *out, int64_t n)
{
    GRID_STRIDE(i, n) out[i] = cuda__glu(kind, gate[i], up[i]);
}

__global__ void add_kernel(float *y, const float *x, int64_t n)
{
    GRID_STRIDE(i, n) y[i] = __fadd_rn(y[i], x[i]);
}

__global__ void add_bias_kernel(float *x, const float *bias, int64_t n_rows, int64_t dim)
{
    GRID_STRIDE(i, n_rows * dim) x[i] = __fadd_rn(x[i], bias[i % dim]);
}

__global__ void gather_kernel(const float *src, const int32_t *rows, float *dst, int64_t n_rows,
                              int64_t dim, unsigned *fault)
{
    GRID_STRIDE(i, n_rows * dim)
    {
        const int32_t r = rows[i / dim];
        if (r < 0) {
            dst[i] = 0.0f;
            cuda__raise(fault, CUDA__FAULT_ROW_INDEX);
            continue;
        }
        dst[i] = src[(int64_t)r * dim + i % dim];
    }
}

/* out[t] = sum over j in order of weights[t][j] * src[rows[t][j]], from 0. */
__global__ void moe_combine_kernel(const float *src, const int32_t *rows, const float *weights,
                                   float *out, int64_t n_tokens, int k, int64_t dim,
                                   unsigned *fault)
{
    GRID_STRIDE(i, n_tokens * dim)
    {
        const int64_t t = i / dim, d = i % dim;
        float acc = 0.0f;
        for (int j = 0; j < k; j++) {
            const int32_t r = rows[t * k + j];
            if (r < 0) {
                cuda__raise(fault, CUDA__FAULT_ROW_INDEX);
                continue;
            }
            acc = __fadd_rn(acc, __fmul_rn(weights[t * k + j], src[(int64_t)r * dim + d]));
        }
        out[i] = acc;
    }
}

/* out[t] += sigmoid(dot(gate, h[t])) * x[t]; one block per token, the dot in double. */
__global__ void __launch_bounds__(BLOCK)
    gate_add_kernel(const float *h, const float *gate, const float *x, float *out, int64_t n_tokens,
                    int64_t dim)
{
    __shared__ double sh[BLOCK];
    for (int64_t t = blockIdx.x; t < n_tokens; t += gridDim.x) {
        double dot = 0.0;
        for (int64_t i = threadIdx.x; i < dim; i += BLOCK)
            dot += (double)gate[i] * h[t * dim + i];
        /* All of h[t] is read before anyone writes: out may be h. */
        dot = block_sum_double(dot, sh);
        const float g = (float)(1.0 / (1.0 + exp(-dot)));
        for (int64_t i = threadIdx.x; i < dim; i += BLOCK)
            out[t * dim + i] = __fadd_rn(out[t * dim + i], __fmul_rn(g, x[t * dim + i]));
    }
}

/* ---- router ------------------------------------------------------------------------------ */

enum { MAX_EXPERTS = 512, MAX_K = 16, PER_LANE = MAX_EXPERTS / 32 }; /* Kimi-K2 has 384 */

/* (v, i) ranks above (bv, bi): larger p first, the lower expert among equals. */
__device__ __forceinline__ bool ranks_above(float v, int i, float bv, int bi)
{
    return v > bv || (v == bv && i < bi);
}

enum { ROUTER_WARPS = 4 };

/* Group-limited choice (DeepSeek-V3, GLM-4.5), as the CPU's limit_groups: each group scored by
 * the sum of its two best choice scores, the n_used best groups kept (the lower group among
 * equals), the other groups' experts masked to -inf.  c[i] is expert lane + 32 i; sh is this
 * warp's MAX_EXPERTS + KERN_ROUTER_MAX_GROUPS floats of shared memory. */
__device__ void limit_groups(float (&c)[PER_LANE], const kern_router_opts &o, float *sh)
{
    const int lane = threadIdx.x & 31, per = o.n_expert / o.n_group;
    float *score = sh + MAX_EXPERTS;
#pragma unroll
    for (int i = 0; i < PER_LANE; i++)
        if (lane + 32 * i < o.n_expert) sh[lane + 32 * i] = c[i];
    __syncwarp();
    for (int g = lane; g < o.n_group; g += 32) {
        float best = -INFINITY, second = -INFINITY;
        for (int e = g * per; e < (g + 1) * per; e++) {
            if (sh[e] > best) {
                second = best;
                best = sh[e];
            } else if (sh[e] > second) {
                second = sh[e];
            }
        }
        score[g] = per > 1 ? __fadd_rn(best, second) : best;
    }
    __syncwarp();
    unsigned long long kept = 0;
    if (lane == 0)
        for (int j = 0; j < o.n_group_used; j++) {
            int top = -1;
            for (int g = 0; g < o.n_group; g++)
                if (!(kept >> g & 1) && (top < 0 || score[g] > score[top])) top = g;
            kept |= 1ull << top;
        }
    const unsigned lo = __shfl_sync(CUDA__FULL_MASK, (unsigned)kept, 0);
    const unsigned hi = __shfl_sync(CUDA__FULL_MASK, (unsigned)(kept >> 32), 0);
    kept = (unsigned long long)hi << 32 | lo;
#pragma unroll
    for (int i = 0; i < PER_LANE; i++) {
        const int e = lane + 32 * i;
        if (e < o.n_expert && !(kept >> (e / per) & 1)) c[i] = -INFINITY;
    }
    __syncwarp(); /* sh is rewritten by the warp's next token */
}

/* One warp per token: gating, the choice scores, then k rounds of "largest untaken choice"
 * over the warp; the winner's p is its weight.  The CPU's route_tokens in every step. */
__global__ void __launch_bounds__(32 * ROUTER_WARPS)
    router_kernel(const float *logits, int64_t n_tokens, kern_router_opts o, int32_t *ids,
                  float *weights)
{
    __shared__ float shared[ROUTER_WARPS][MAX_EXPERTS + KERN_ROUTER_MAX_GROUPS];
    float *sh = shared[threadIdx.x / 32];
    const int lane = threadIdx.x & 31;
    const int64_t warps = (int64_t)gridDim.x * (blockDim.x / 32);
    for (int64_t t = (int64_t)blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32; t < n_tokens;
         t += warps) {
        const float *l = logits + t * o.n_expert;
        float p[PER_LANE], c[PER_LANE];
#pragma unroll
        for (int i = 0; i < PER_LANE; i++) {
            const int e = lane + 32 * i;
            p[i] = e < o.n_expert ? l[e] : -INFINITY;
        }
        if (o.gating == KERN_GATING_SOFTMAX) {
            float mx = -INFINITY;
#pragma unroll
            for (int i = 0; i < PER_LANE; i++)
                mx = fmaxf(mx, p[i]);
            mx = cuda__warp_max(mx);
            double sum = 0.0;
#pragma unroll
            for (int i = 0; i < PER_LANE; i++) {
                p[i] = lane + 32 * i < o.n_expert ? expf(__fsub_rn(p[i], mx)) : 0.0f;
                sum += p[i];
            }
            sum = cuda__warp_sum_double(sum);
#pragma unroll
            for (int i = 0; i < PER_LANE; i++)
                p[i] = (float)((double)p[i] / sum);
        } else if (o.gating == KERN_GATING_SIGMOID) {
#pragma unroll
            for (int i = 0; i < PER_LANE; i++)
                p[i] = __fdiv_rn(1.0f, __fadd_rn(1.0f, expf(-p[i])));
        } /* TOPK_SOFTMAX: chosen by logit, weighted below */
#pragma unroll
        for (int i = 0; i < PER_LANE; i++) {
            const int e = lane + 32 * i;
            c[i] = o.sel_bias && e < o.n_expert ? __fadd_rn(p[i], o.sel_bias[e]) : p[i];
        }
        if (o.n_group > 1) limit_groups(c, o, sh);

        unsigned taken = 0; /* bit i: expert lane + 32 i already chosen */
        float my_w = 0.0f;  /* lane j keeps choice j */
        int my_id = 0;
        for (int j = 0; j < o.k; j++) {
            float bv = -INFINITY, bp = 0.0f;
            int bi = 0x7fffffff;
#pragma unroll
            for (int i = 0; i < PER_LANE; i++) {
                const int e = lane + 32 * i;
                /* NaN ranks as -inf, so that every round still picks a real expert. */
                const float v = isnan(c[i]) ? -INFINITY : c[i];
                if (e < o.n_expert && !(taken & (1u << i)) && ranks_above(v, e, bv, bi)) {
                    bv = v;
                    bi = e;
                    bp = p[i];
                }
            }
#pragma unroll
            for (int off = 16; off > 0; off >>= 1) {
                const float ov = __shfl_xor_sync(CUDA__FULL_MASK, bv, off);
                const int oi = __shfl_xor_sync(CUDA__FULL_MASK, bi, off);
                const float op = __shfl_xor_sync(CUDA__FULL_MASK, bp, off);
                if (ranks_above(ov, oi, bv, bi)) {
                    bv = ov;
                    bi = oi;
                    bp = op;
                }
            }
            if ((bi & 31) == lane) taken |= 1u << (bi / 32);
            if (lane == j) {
                my_w = bp;
                my_id = bi;
            }
        }
        if (o.gating == KERN_GATING_TOPK_SOFTMAX) { /* choice 0 holds the largest logit */
            const float top = __shfl_sync(CUDA__FULL_MASK, my_w, 0);
            my_w = lane < o.k ? expf(__fsub_rn(my_w, top)) : 0.0f;
            double sum = 0.0;
            for (int j = 0; j < o.k; j++)
                sum += __shfl_sync(CUDA__FULL_MASK, my_w, j);
            my_w = (float)((double)my_w / sum);
        }
        if (o.norm) {
            double sum = 0.0; /* in choice order, as the CPU adds them */
            for (int j = 0; j < o.k; j++)
                sum += __shfl_sync(CUDA__FULL_MASK, my_w, j);
            my_w = (float)((double)my_w / fmax(sum, 6.103515625e-5));
        }
        my_w = __fmul_rn(my_w, o.scale);
        if (lane < o.k) {
            ids[t * o.k + lane] = my_id;
            weights[t * o.k + lane] = my_w;
        }
    }
}

/* ---- moe_align: the plan of a layer, on the device ---------------------------------------- */

enum { ALIGN_THREADS = MAX_EXPERTS, ALIGN_CHUNK = 2048 };

/* One block does it all: a decode step has k items, a prefill a few thousand, and the plan must
 * be kern_moe_align_host's exactly.  Counts by shared-memory atomics (order-free: integers),
 * one thread scans them, then thread e walks the ids in order and numbers its expert's items
 * (the stable counting sort), and each token sorts its k rows (which grow with the expert). */
__global__ void __launch_bounds__(ALIGN_THREADS)
    moe_align_kernel(const int32_t *ids, const float *weights, int64_t n_tokens, int k,
                     int32_t n_expert, kern_moe_plan plan, unsigned *fault)
{
    __shared__ int32_t count[MAX_EXPERTS + 1];
    __shared__ int32_t chunk[ALIGN_CHUNK];
    const int64_t nk = n_tokens * k;
    for (int e = threadIdx.x; e <= n_expert; e += blockDim.x)
        count[e] = 0;
    __syncthreads();
    for (int64_t i = threadIdx.x; i < nk; i += blockDim.x) {
        const int32_t e = ids[i];
        if (e < 0 || e >= n_expert)
            cuda__raise(fault, CUDA__FAULT_EXPERT_ID);
        else
            atomicAdd(&count[e + 1], 1);
    }
    __syncthreads();
    if (threadIdx.x == 0) {
        int32_t n_used = 0;
        count[0] = 0;
        for (int e = 0; e < n_expert; e++) {
            if (count[e + 1] > 0) plan.used[1 + n_used++] = e;
            count[e + 1] += count[e];
        }
        plan.used[0] = n_used;
    }
    __syncthreads();
    for (int e = threadIdx.x; e <= n_expert; e += blockDim.x)
        plan.bucket_start[e] = count[e];
    /* Items with a bad id get no row, so the rows past the valid ones would keep whatever the
     * buffer held; the gather behind reads them as token indices.  -1 makes it write zeros
     * (and raise its own fault) instead of reading past its source. */
    for (int64_t r = count[n_expert] + threadIdx.x; r < nk; r += blockDim.x)
        plan.bucket[r] = -1;
    int32_t cursor = threadIdx.x < n_expert ? count[threadIdx.x] : 0;
    for (int64_t base = 0; base < nk; base += ALIGN_CHUNK) {
        const int m = (int)min((int64_t)ALIGN_CHUNK, nk - base);
        __syncthreads(); /* the previous chunk is done with */
        for (int i = threadIdx.x; i < m; i += blockDim.x)
            chunk[i] = ids[base + i];
        __syncthreads();
        if (threadIdx.x < n_expert)
            for (int i = 0; i < m; i++)
                if (chunk[i] == (int32_t)threadIdx.x) {
                    const int64_t item = base + i;
                    plan.bucket[cursor] = (int32_t)(item / k);
                    plan.comb_rows[item] = cursor++;
                }
    }
    __syncthreads(); /* every row is numbered (global writes of this block are visible) */
    for (int64_t t = threadIdx.x; t < n_tokens; t += blockDim.x) {
        int32_t rows[MAX_K];
        float w[MAX_K];
        for (int j = 0; j < k; j++) {
            const int32_t e = ids[t * k + j];
            kern_moe_insert_row(rows, w, j, e < 0 || e >= n_expert ? -1 : plan.comb_rows[t * k + j],
                                weights[t * k + j]);
        }
        for (int j = 0; j < k; j++) {
            plan.comb_rows[t * k + j] = rows[j];
            plan.comb_w[t * k + j] = w[j];
        }
    }
}

} // namespace

/* ---- entry points ------------------------------------------------------------------------ */

void cuda__rmsnorm(kern_backend *b, const float *x, const float *weight, float *out, int64_t n,
                   int64_t n_rows, int64_t stride, float eps)
{
    cuda_backend *cb = cuda__of(b);
    if (n_rows <= 0 || n <= 0) return;
    if (!cuda__enter(cb, "rmsnorm")) return;
    if (stride < n) {
        cuda__fail(cb, -EINVAL, "cuda rmsnorm: stride %lld below the row length %lld",
                   (long long)stride, (long long)n);
        return;
    }
    rmsnorm_kernel<<<cuda__grid(n_rows, 1), BLOCK, 0, cuda__compute(cb)>>>(x, weight, out, n,
                                                                           n_rows, stride, eps);
    cuda__launched(cb, "rmsnorm");
}

void cuda__rope(kern_backend *b, float *x, int64_t n_tokens, int n_heads, int head_dim, int n_rot,
                const int32_t *pos, float freq_base, kern_rope_mode mode,
                const kern_rope_yarn *yarn)
{
    cuda_backend *cb = cuda__of(b);
    if (n_tokens <= 0 || n_heads <= 0 || n_rot <= 0) return;
    if (!cuda__enter(cb, "rope")) return;
    if (n_rot % 2 != 0 || n_rot > head_dim || n_rot > 8192 ||
        (mode != KERN_ROPE_NORM && mode != KERN_ROPE_NEOX) ||
        (yarn && (yarn->factor <= 0.0f || yarn->orig_ctx <= 0.0f || yarn->beta_fast <= 0.0f ||
                  yarn->beta_slow <= 0.0f))) {
        cuda__fail(cb, -EINVAL, "cuda rope: n_rot %d of head_dim %d, mode %d%s not supported",
                   n_rot, head_dim, (int)mode, yarn ? ", YaRN" : "");
        return;
    }
    rope_yarn_args y = {false, 0.0, 1.0, 1.0, 1.0};
    if (yarn) {
        double low, high;
        kern_rope_yarn_ramp(yarn, n_rot, freq_base, &low, &high);
        y = {true, low, high, (double)yarn->factor, (double)yarn->attn_factor};
    }
    rope_kernel<<<cuda__grid(n_tokens, 1), 128, (size_t)n_rot * sizeof(float), cuda__compute(cb)>>>(
        x, n_tokens, n_heads, head_dim, n_rot, pos, freq_base, mode == KERN_ROPE_NEOX, y);
    cuda__launched(cb, "rope");
}

static void glu(kern_backend *b, kern_glu kind, const char *op, const float *gate, const float *up,
                float *out, int64_t n)
{
    cuda_backend *cb = cuda__of(b);
    if (n <= 0 || !cuda__enter(cb, op)) return;
    glu_kernel<<<cuda__grid(n, BLOCK), BLOCK, 0, cuda__compute(cb)>>>(kind, gate, up, out, n);
    cuda__launched(cb, op);
}

void cuda__silu_mul(kern_backend *b, const float *gate, const float *up, float *out, int64_t n)
{
    glu(b, KERN_GLU_SILU, "silu_mul", gate, up, out, n);
}

void cuda__swiglu_oai(kern_backend *b, const float *gate, const float *up, float *out, int64_t n)
{
    glu(b, KERN_GLU_SWIGLU_OAI, "swiglu_oai", gate, up, out, n);
}

void cuda__add(kern_backend *b, float *y, const float *x, int64_t n)
{
    cuda_backend *cb = cuda__of(b);
    if (n <= 0 || !cuda__enter(cb, "add")) return;
    add_kernel<<<cuda__grid(n, BLOCK), BLOCK, 0, cuda__compute(cb)>>>(y, x, n);
    cuda__launched(cb, "add");
}

void cuda__add_bias(kern_backend *b, float *x, const float *bias, int64_t n_rows, int64_t dim)
{
    cuda_backend *cb = cuda__of(b);
    if (n_rows <= 0 || dim <= 0 || !cuda__enter(cb, "add_bias")) return;
    add_bias_kernel<<<cuda__grid(n_rows * dim, BLOCK), BLOCK, 0, cuda__compute(cb)>>>(x, bias,
                                                                                      n_rows, dim);
    cuda__launched(cb, "add_bias");
}

void cuda__gather(kern_backend *b, const float *src, const int32_t *rows, float *dst,
                  int64_t n_rows, int64_t dim)
{
    cuda_backend *cb = cuda__of(b);
    if (n_rows <= 0 || dim <= 0 || !cuda__enter(cb, "gather")) return;
    gather_kernel<<<cuda__grid(n_rows * dim, BLOCK), BLOCK, 0, cuda__compute(cb)>>>(
        src, rows, dst, n_rows, dim, cb->fault_device);
    cuda__launched(cb, "gather");
}

void cuda__router(kern_backend *b, const float *logits, int64_t n_tokens, const kern_router_opts *o,
                  int32_t *ids, float *weights)
{
    cuda_backend *cb = cuda__of(b);
    if (n_tokens <= 0 || !cuda__enter(cb, "router")) return;
    const bool groups_ok =
        o->n_group <= 1 || (o->n_group <= KERN_ROUTER_MAX_GROUPS && o->n_expert % o->n_group == 0 &&
                            o->n_group_used >= 1 && o->n_group_used <= o->n_group &&
                            o->k <= o->n_group_used * (o->n_expert / o->n_group));
    if (o->n_expert < 1 || o->n_expert > MAX_EXPERTS || o->k < 1 || o->k > MAX_K ||
        o->k > o->n_expert || !groups_ok ||
        (o->gating != KERN_GATING_SOFTMAX && o->gating != KERN_GATING_SIGMOID &&
         o->gating != KERN_GATING_TOPK_SOFTMAX)) {
        cuda__fail(cb, -EINVAL,
                   "cuda router: top %d of %d experts in %d groups (%d used), gating %d not "
                   "supported (at most %d experts, k at most %d)",
                   o->k, o->n_expert, o->n_group, o->n_group_used, (int)o->gating, MAX_EXPERTS,
                   MAX_K);
        return;
    }
    router_kernel<<<cuda__grid(n_tokens, ROUTER_WARPS), 32 * ROUTER_WARPS, 0, cuda__compute(cb)>>>(
        logits, n_tokens, *o, ids, weights);
    cuda__launched(cb, "router");
}

void cuda__moe_combine(kern_backend *b, const float *src, const int32_t *rows, const float *weights,
                       float *out, int64_t n_tokens, int k, int64_t dim)
{
    cuda_backend *cb = cuda__of(b);
    if (n_tokens <= 0 || dim <= 0 || !cuda__enter(cb, "moe_combine")) return;
    if (k < 0) {
        cuda__fail(cb, -EINVAL, "cuda moe_combine: k = %d", k);
        return;
    }
    moe_combine_kernel<<<cuda__grid(n_tokens * dim, BLOCK), BLOCK, 0, cuda__compute(cb)>>>(
        src, rows, weights, out, n_tokens, k, dim, cb->fault_device);
    cuda__launched(cb, "moe_combine");
}

void cuda__gate_add(kern_backend *b, const float *h, const float *gate, const float *x, float *out,
                    int64_t n_tokens, int64_t dim)
{
    cuda_backend *cb = cuda__of(b);
    if (n_tokens <= 0 || dim <= 0 || !cuda__enter(cb, "gate_add")) return;
    gate_add_kernel<<<cuda__grid(n_tokens, 1), BLOCK, 0, cuda__compute(cb)>>>(h, gate, x, out,
                                                                              n_tokens, dim);
    cuda__launched(cb, "gate_add");
}

void cuda__moe_align(kern_backend *b, const int32_t *ids, const float *weights, int64_t n_tokens,
                     int k, int32_t n_expert, const kern_moe_plan *plan)
{
    cuda_backend *cb = cuda__of(b);
    if (n_tokens < 0 || !cuda__enter(cb, "moe_align")) return;
    if (n_expert <= 0 || n_expert > MAX_EXPERTS || k <= 0 || k > MAX_K ||
        n_tokens * k > INT32_MAX) {
        cuda__fail(cb, -EINVAL,
                   "cuda moe_align: %lld tokens, top %d of %d experts (at most %d experts, k at "
                   "most %d)",
                   (long long)n_tokens, k, n_expert, MAX_EXPERTS, MAX_K);
        return;
    }
    moe_align_kernel<<<1, ALIGN_THREADS, 0, cuda__compute(cb)>>>(ids, weights, n_tokens, k,
                                                                 n_expert, *plan, cb->fault_device);
    cuda__launched(cb, "moe_align");
}
