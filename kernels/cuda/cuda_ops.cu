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

/* One block per token: the n_rot/2 angles in double (positions reach 1e5, where a float
 * angle has lost its fraction), then every head's pairs rotated in float. */
__global__ void rope_kernel(float *x, int64_t n_tokens, int n_heads, int head_dim, int n_rot,
                            const int32_t *pos, float freq_base, int neox)
{
    extern __shared__ float cs[]; /* cos at [i], sin at [half + i] */
    const int half = n_rot / 2;
    for (int64_t t = blockIdx.x; t < n_tokens; t += gridDim.x) {
        const double p = pos[t];
        for (int i = threadIdx.x; i < half; i += blockDim.x) {
            const double theta = p * pow((double)freq_base, -2.0 * i / n_rot);
            cs[i] = (float)cos(theta);
            cs[half + i] = (float)sin(theta);
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

__global__ void silu_mul_kernel(const float *gate, const float *up, float *out, int64_t n)
{
    GRID_STRIDE(i, n)
    {
        const float g = gate[i];
        out[i] = __fmul_rn(__fdiv_rn(g, __fadd_rn(1.0f, expf(-g))), up[i]);
    }
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

enum { MAX_EXPERTS = 256, MAX_K = 16, PER_LANE = MAX_EXPERTS / 32 };

/* (v, i) ranks above (bv, bi): larger p first, the lower expert among equals. */
__device__ __forceinline__ bool ranks_above(float v, int i, float bv, int bi)
{
    return v > bv || (v == bv && i < bi);
}

/* One warp per token: gating, then k rounds of "largest untaken p" over the warp. */
__global__ void router_kernel(const float *logits, int64_t n_tokens, kern_router_opts o,
                              int32_t *ids, float *weights)
{
    const int lane = threadIdx.x & 31;
    const int64_t warps = (int64_t)gridDim.x * (blockDim.x / 32);
    for (int64_t t = (int64_t)blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32; t < n_tokens;
         t += warps) {
        const float *l = logits + t * o.n_expert;
        float p[PER_LANE];
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
        } else {
#pragma unroll
            for (int i = 0; i < PER_LANE; i++)
                p[i] = __fdiv_rn(1.0f, __fadd_rn(1.0f, expf(-p[i])));
        }

        unsigned taken = 0; /* bit i: expert lane + 32 i already chosen */
        float my_w = 0.0f;  /* lane j keeps choice j */
        int my_id = 0;
        double sum = 0.0;
        for (int j = 0; j < o.k; j++) {
            float bv = -INFINITY;
            int bi = 0x7fffffff;
#pragma unroll
            for (int i = 0; i < PER_LANE; i++) {
                const int e = lane + 32 * i;
                /* NaN ranks as -inf, so that every round still picks a real expert. */
                const float v = isnan(p[i]) ? -INFINITY : p[i];
                if (e < o.n_expert && !(taken & (1u << i)) && ranks_above(v, e, bv, bi)) {
                    bv = v;
                    bi = e;
                }
            }
#pragma unroll
            for (int off = 16; off > 0; off >>= 1) {
                const float ov = __shfl_xor_sync(CUDA__FULL_MASK, bv, off);
                const int oi = __shfl_xor_sync(CUDA__FULL_MASK, bi, off);
                if (ranks_above(ov, oi, bv, bi)) {
                    bv = ov;
                    bi = oi;
                }
            }
            if ((bi & 31) == lane) taken |= 1u << (bi / 32);
            if (lane == j) {
                my_w = bv;
                my_id = bi;
            }
            sum += bv;
        }
        if (o.norm) {
            const float s = fmaxf((float)sum, 6.103515625e-5f);
            my_w = __fdiv_rn(my_w, s);
        }
        my_w = __fmul_rn(my_w, o.scale);
        if (lane < o.k) {
            ids[t * o.k + lane] = my_id;
            weights[t * o.k + lane] = my_w;
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
        (mode != KERN_ROPE_NORM && mode != KERN_ROPE_NEOX) || yarn) {
        cuda__fail(cb, -EINVAL, "cuda rope: n_rot %d of head_dim %d, mode %d%s not supported",
                   n_rot, head_dim, (int)mode, yarn ? ", YaRN" : "");
        return;
    }
    rope_kernel<<<cuda__grid(n_tokens, 1), 128, (size_t)n_rot * sizeof(float), cuda__compute(cb)>>>(
        x, n_tokens, n_heads, head_dim, n_rot, pos, freq_base, mode == KERN_ROPE_NEOX);
    cuda__launched(cb, "rope");
}

void cuda__silu_mul(kern_backend *b, const float *gate, const float *up, float *out, int64_t n)
{
    cuda_backend *cb = cuda__of(b);
    if (n <= 0 || !cuda__enter(cb, "silu_mul")) return;
    silu_mul_kernel<<<cuda__grid(n, BLOCK), BLOCK, 0, cuda__compute(cb)>>>(gate, up, out, n);
    cuda__launched(cb, "silu_mul");
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
    if (o->n_expert < 1 || o->n_expert > MAX_EXPERTS || o->k < 1 || o->k > MAX_K ||
        o->k > o->n_expert ||
        (o->gating != KERN_GATING_SOFTMAX && o->gating != KERN_GATING_SIGMOID) ||
        o->sel_bias || o->n_group > 1) {
        cuda__fail(cb, -EINVAL,
                   "cuda router: %d experts, top %d, gating %d not supported (at most %d "
                   "experts, k at most %d; no selection bias, no groups)",
                   o->n_expert, o->k, (int)o->gating, MAX_EXPERTS, MAX_K);
        return;
    }
    const int warps_per_block = 4;
    router_kernel<<<cuda__grid(n_tokens, warps_per_block), 32 * warps_per_block, 0,
                    cuda__compute(cb)>>>(logits, n_tokens, *o, ids, weights);
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
