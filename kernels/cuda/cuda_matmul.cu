/*
 * Matmul and get_rows for every weight type, reading GGUF blocks as they are stored.
 *
 * One kernel shape serves every batch size, because kernels.h promises that a token's result
 * does not depend on how many tokens share the call: a second path for large batches
 * (dequantise + cuBLAS, or any GEMM that tiles the reduction by batch shape) would give a
 * prompt token different bits than the same token decoded alone.  Instead:
 *
 * - Activations are quantised once per call, per token, to blocks of 32 int8 with a float
 *   scale and the block's integer sum (Q8_1's content, at full float precision).
 * - A warp owns R weight rows and T tokens.  Lane l takes the row's 32-element units
 *   l, l + 32, l + 64, ... in order; per unit it builds the weights as signed bytes once and,
 *   for each of its tokens, sums products with __dp4a (integers: exact, so the grouping
 *   inside a unit cannot matter), then adds da*A + db*B scaled by the activation scale into
 *   a float accumulator with explicitly rounded operations.  A fixed xor-butterfly across the
 *   lanes finishes each output.  Every output therefore sees the same operations in the same
 *   order whatever R, T and the batch are.
 * - Decode (n_tokens <= 8): one row per warp, T = 1, 2, 4 or 8, so the weight bytes are read
 *   once for all tokens.  Larger batches: R = 4 rows and T = 8 tokens per warp, four warps of
 *   a block on consecutive token tiles of the same rows, so each weight byte is fetched from
 *   memory once per 32 tokens and re-read from L1 (activations, reused across the R rows,
 *   come from L2).  That is far from a tensor-core GEMM for long prompts, the price of the
 *   batch-invariance contract with this simple a kernel.
 * - F32 / F16 / BF16 weights skip the quantisation: lane l takes elements l, l + 32, ... and
 *   accumulates w * x in f32 with fma, the same butterfly at the end.
 *
 * A weight unit is 32 elements that pair with one activation block: the whole block for the
 * 32-element types, sub-block j of a 256-element super-block for the K types.  Per unit a
 * type yields 8 ints of signed bytes (4 weights each, offsets such as Q4_0's -8 already
 * applied), integer multipliers for its two halves (Q6_K has a scale per 16; the others use
 * one), a float scale da, and for types with a min the float db and integer multiplier of the
 * activation sum: unit = dx * (da * (sc_lo*dot_lo + sc_hi*dot_hi) + db * (bmul * sum_x)).
 *
 * Blocks are 2-byte aligned at best (Q4_0 is 18 bytes), so weights are read 16 bits at a
 * time; the offsets come from the project's own block structs (quant_blocks.h).
 */
#include "kernels/cuda/cuda_internal.h"

#include <cuda_fp16.h>
#include <errno.h>

/* quant_blocks.h is C11; its layout asserts mean the same to C++'s static_assert. */
#define _Static_assert static_assert
extern "C" {
#include "kernels/cpu/quant_blocks.h"
}
#undef _Static_assert

namespace
{

enum { WARPS = 4, THREADS = 32 * WARPS, DECODE_MAX_TOKENS = 8, BATCH_ROWS = 4, BATCH_TOKENS = 8 };

/* ---- loads ------------------------------------------------------------------------------ */

__device__ __forceinline__ uint32_t ld_u16(const uint8_t *p)
{
    return *(const uint16_t *)p;
}

/* Four bytes from a 2-byte aligned address, little-endian. */
__device__ __forceinline__ int ld_i32(const uint8_t *p)
{
    return (int)(ld_u16(p) | ld_u16(p + 2) << 16);
}

__device__ __forceinline__ float ld_f16(const uint8_t *p)
{
    return __half2float(__ushort_as_half((unsigned short)ld_u16(p)));
}

__device__ __forceinline__ float bf16_to_f32(uint32_t h)
{
    return __uint_as_float(h << 16);
}

/* Bits 0..3 of `bits` to bit 4 of bytes 0..3: the fifth bit of four Q5 weights. */
__device__ __forceinline__ int spread_bit4(uint32_t bits)
{
    return (int)(((bits & 1u) << 4) | ((bits & 2u) << 11) | ((bits & 4u) << 18) |
                 ((bits & 8u) << 25));
}

/* The 6-bit scale and min of sub-block j of a Q4_K / Q5_K super-block (kern__scale_min_k4). */
__device__ __forceinline__ void scale_min_k4(int j, const uint8_t *q, int *sc, int *m)
{
    if (j < 4) {
        *sc = q[j] & 63;
        *m = q[j + 4] & 63;
    } else {
        *sc = (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4);
        *m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
    }
}

/* ---- one weight unit as signed bytes -------------------------------------------------- */

struct unit {
    int w[8];         /* 32 weights as signed bytes, in element order */
    int sc_lo, sc_hi; /* integer multipliers of the dot over elements 0..15 and 16..31 */
    int bmul;         /* integer multiplier of the activation block's sum */
    float da, db;     /* float scales of the two integer terms */
};

/* Q4_0 and Q4_1 share the nibble order: element j low nibble of qs[j], j+16 the high one. */
__device__ __forceinline__ void nibbles_32(const uint8_t *qs, int offset, int *w)
{
#pragma unroll
    for (int k = 0; k < 4; k++) {
        int v = ld_i32(qs + 4 * k);
        w[k] = __vsub4(v & 0x0F0F0F0F, offset);
        w[k + 4] = __vsub4((v >> 4) & 0x0F0F0F0F, offset);
    }
}

__device__ __forceinline__ void fives_32(const uint8_t *qs, uint32_t qh, int offset, int *w)
{
#pragma unroll
    for (int k = 0; k < 4; k++) {
        int v = ld_i32(qs + 4 * k);
        w[k] = __vsub4((v & 0x0F0F0F0F) | spread_bit4(qh >> (4 * k)), offset);
        w[k + 4] = __vsub4(((v >> 4) & 0x0F0F0F0F) | spread_bit4(qh >> (16 + 4 * k)), offset);
    }
}

template <int TYPE> __device__ __forceinline__ void load_unit(const uint8_t *row, int u, unit &q)
{
    q.sc_lo = q.sc_hi = 1;
    q.bmul = 0;
    q.db = 0.0f;
    if constexpr (TYPE == KERN_T_Q8_0) {
        const uint8_t *b = row + (size_t)u * sizeof(block_q8_0);
        q.da = ld_f16(b + offsetof(block_q8_0, d));
#pragma unroll
        for (int k = 0; k < 8; k++)
            q.w[k] = ld_i32(b + offsetof(block_q8_0, qs) + 4 * k);
    } else if constexpr (TYPE == KERN_T_Q4_0) {
        const uint8_t *b = row + (size_t)u * sizeof(block_q4_0);
        q.da = ld_f16(b + offsetof(block_q4_0, d));
        nibbles_32(b + offsetof(block_q4_0, qs), 0x08080808, q.w);
    } else if constexpr (TYPE == KERN_T_Q4_1) {
        const uint8_t *b = row + (size_t)u * sizeof(block_q4_1);
        q.da = ld_f16(b + offsetof(block_q4_1, d));
        q.db = ld_f16(b + offsetof(block_q4_1, m));
        q.bmul = 1;
        nibbles_32(b + offsetof(block_q4_1, qs), 0, q.w);
    } else if constexpr (TYPE == KERN_T_Q5_0) {
        const uint8_t *b = row + (size_t)u * sizeof(block_q5_0);
        q.da = ld_f16(b + offsetof(block_q5_0, d));
        fives_32(b + offsetof(block_q5_0, qs), (uint32_t)ld_i32(b + offsetof(block_q5_0, qh)),
                 0x10101010, q.w);
    } else if constexpr (TYPE == KERN_T_Q5_1) {
        const uint8_t *b = row + (size_t)u * sizeof(block_q5_1);
        q.da = ld_f16(b + offsetof(block_q5_1, d));
        q.db = ld_f16(b + offsetof(block_q5_1, m));
        q.bmul = 1;
        fives_32(b + offsetof(block_q5_1, qs), (uint32_t)ld_i32(b + offsetof(block_q5_1, qh)), 0,
                 q.w);
    } else if constexpr (TYPE == KERN_T_Q4_K || TYPE == KERN_T_Q5_K) {
        /* Sub-block j: bytes qs[32*(j/2) ..] hold it in their low (j even) or high nibbles;
         * Q5_K's fifth bit is bit j of qh[l]. */
        const bool five = TYPE == KERN_T_Q5_K;
        const size_t bytes = five ? sizeof(block_q5_K) : sizeof(block_q4_K);
        const uint8_t *b = row + (size_t)(u / 8) * bytes;
        const int j = u % 8;
        const size_t qs_at = five ? offsetof(block_q5_K, qs) : offsetof(block_q4_K, qs);
        const uint8_t *qs = b + qs_at + 32 * (j / 2);
        int sc, mn;
        scale_min_k4(j, b + (five ? offsetof(block_q5_K, scales) : offsetof(block_q4_K, scales)),
                     &sc, &mn);
        q.da = ld_f16(b + (five ? offsetof(block_q5_K, d) : offsetof(block_q4_K, d)));
        q.db = -ld_f16(b + (five ? offsetof(block_q5_K, dmin) : offsetof(block_q4_K, dmin)));
        q.sc_lo = q.sc_hi = sc;
        q.bmul = mn;
#pragma unroll
        for (int k = 0; k < 8; k++) {
            int v = (ld_i32(qs + 4 * k) >> (4 * (j & 1))) & 0x0F0F0F0F;
            if (five) {
                int h = ld_i32(b + offsetof(block_q5_K, qh) + 4 * k);
                v |= ((h >> j) & 0x01010101) << 4;
            }
            q.w[k] = v;
        }
    } else if constexpr (TYPE == KERN_T_Q6_K) {
        /* Sub-block j = 4*half + part: low 4 bits from ql[64*half + 32*(part&1) + l] (low
         * nibble for parts 0-1, high for 2-3), high 2 bits at 2*part of qh[32*half + l];
         * scales[8*half + 2*part + l/16]. */
        const uint8_t *b = row + (size_t)(u / 8) * sizeof(block_q6_K);
        const int j = u % 8, half = j / 4, part = j % 4;
        const uint8_t *ql = b + offsetof(block_q6_K, ql) + 64 * half + 32 * (part & 1);
        const uint8_t *qh = b + offsetof(block_q6_K, qh) + 32 * half;
        const int8_t *scales = (const int8_t *)(b + offsetof(block_q6_K, scales)) + 8 * half;
        q.da = ld_f16(b + offsetof(block_q6_K, d));
        q.sc_lo = scales[2 * part];
        q.sc_hi = scales[2 * part + 1];
#pragma unroll
        for (int k = 0; k < 8; k++) {
            int lo = (ld_i32(ql + 4 * k) >> (part >= 2 ? 4 : 0)) & 0x0F0F0F0F;
            int hi = ((ld_i32(qh + 4 * k) >> (2 * part)) & 0x03030303) << 4;
            q.w[k] = __vsub4(lo | hi, 0x20202020);
        }
    }
}

/* ---- the matrix-vector kernel --------------------------------------------------------- */

struct mm_args {
    const uint8_t *w;
    size_t row_bytes;
    int64_t n_rows;
    int64_t n_cols;
    int64_t n_units;  /* n_cols / 32 (quantised types) */
    const int4 *xq;   /* [n_tokens][n_units][32 int8] */
    const float2 *xd; /* [n_tokens][n_units] (scale, integer sum) */
    const float *x;   /* float types: the activations themselves */
    float *y;
    int64_t n_tokens;
    int64_t n_tiles_per_group; /* batch mapping: token-tile groups of WARPS tiles */
};

/* Which rows and tokens warp `warp` of block `block` owns.  Decode: each warp its own rows,
 * tokens 0..T-1.  Batch: the warps share rows and take consecutive token tiles. */
template <int R, int T, bool BATCH>
__device__ __forceinline__ void warp_tile(const mm_args &a, int64_t *row0, int64_t *tok0)
{
    const int64_t block = blockIdx.x, warp = threadIdx.x / 32;
    if (!BATCH) {
        *row0 = (block * WARPS + warp) * R;
        *tok0 = 0;
    } else {
        *row0 = block / a.n_tiles_per_group * R;
        *tok0 = ((block % a.n_tiles_per_group) * WARPS + warp) * T;
    }
}

template <int R, int T>
__device__ __forceinline__ void write_outputs(const mm_args &a, float (&acc)[R][T], int64_t row0,
                                              int64_t tok0, int nr, int nt)
{
#pragma unroll
    for (int r = 0; r < R; r++)
#pragma unroll
        for (int t = 0; t < T; t++) {
            float s = cuda__warp_sum(acc[r][t]);
            if (r < nr && t < nt && (threadIdx.x & 31) == 0)
                a.y[(tok0 + t) * a.n_rows + row0 + r] = s;
        }
}

template <int TYPE, int R, int T, bool BATCH>
__global__ void __launch_bounds__(THREADS) matmul_quant_kernel(mm_args a)
{
    int64_t row0, tok0;
    warp_tile<R, T, BATCH>(a, &row0, &tok0);
    if (row0 >= a.n_rows || tok0 >= a.n_tokens) return; /* whole warp */
    const int nr = (int)min((int64_t)R, a.n_rows - row0);
    const int nt = (int)min((int64_t)T, a.n_tokens - tok0);
    float acc[R][T];
#pragma unroll
    for (int r = 0; r < R; r++)
#pragma unroll
        for (int t = 0; t < T; t++)
            acc[r][t] = 0.0f;

    for (int64_t u = threadIdx.x & 31; u < a.n_units; u += 32) {
        unit q[R];
#pragma unroll
        for (int r = 0; r < R; r++)
            if (r < nr) load_unit<TYPE>(a.w + (size_t)(row0 + r) * a.row_bytes, (int)u, q[r]);
#pragma unroll
        for (int t = 0; t < T; t++) {
            if (t >= nt) break;
            const int64_t xi = (tok0 + t) * a.n_units + u;
            const int4 x0 = a.xq[2 * xi], x1 = a.xq[2 * xi + 1];
            const float2 xd = a.xd[xi];
            const int xs[8] = {x0.x, x0.y, x0.z, x0.w, x1.x, x1.y, x1.z, x1.w};
            const int x_sum = (int)xd.y;
#pragma unroll
            for (int r = 0; r < R; r++) {
                if (r >= nr) break;
                int lo = 0, hi = 0;
#pragma unroll
                for (int k = 0; k < 4; k++) {
                    lo = __dp4a(q[r].w[k], xs[k], lo);
                    hi = __dp4a(q[r].w[k + 4], xs[k + 4], hi);
                }
                const int A = q[r].sc_lo * lo + q[r].sc_hi * hi;
                const int B = q[r].bmul * x_sum;
                const float v = __fmaf_rn(q[r].db, (float)B, __fmul_rn(q[r].da, (float)A));
                acc[r][t] = __fmaf_rn(xd.x, v, acc[r][t]);
            }
        }
    }
    write_outputs<R, T>(a, acc, row0, tok0, nr, nt);
}

template <int TYPE>
__device__ __forceinline__ float load_float_weight(const uint8_t *row, int64_t e)
{
    if constexpr (TYPE == KERN_T_F32) return ((const float *)row)[e];
    const uint32_t h = ((const uint16_t *)row)[e];
    if constexpr (TYPE == KERN_T_F16) return __half2float(__ushort_as_half((unsigned short)h));
    return bf16_to_f32(h);
}

template <int TYPE, int R, int T, bool BATCH>
__global__ void __launch_bounds__(THREADS) matmul_float_kernel(mm_args a)
{
    int64_t row0, tok0;
    warp_tile<R, T, BATCH>(a, &row0, &tok0);
    if (row0 >= a.n_rows || tok0 >= a.n_tokens) return;
    const int nr = (int)min((int64_t)R, a.n_rows - row0);
    const int nt = (int)min((int64_t)T, a.n_tokens - tok0);
    float acc[R][T];
#pragma unroll
    for (int r = 0; r < R; r++)
#pragma unroll
        for (int t = 0; t < T; t++)
            acc[r][t] = 0.0f;

    for (int64_t e = threadIdx.x & 31; e < a.n_cols; e += 32) {
        float wv[R];
#pragma unroll
        for (int r = 0; r < R; r++)
            wv[r] =
                r < nr ? load_float_weight<TYPE>(a.w + (size_t)(row0 + r) * a.row_bytes, e) : 0.0f;
#pragma unroll
        for (int t = 0; t < T; t++) {
            if (t >= nt) break;
            const float xv = a.x[(tok0 + t) * a.n_cols + e];
#pragma unroll
            for (int r = 0; r < R; r++)
                acc[r][t] = __fmaf_rn(wv[r], xv, acc[r][t]);
        }
    }
    write_outputs<R, T>(a, acc, row0, tok0, nr, nt);
}

/* One warp per (token, 32-element block): scale = max|x| / 127, q = round(x / scale). */
__global__ void quantize_kernel(const float *x, int64_t n_tokens, int64_t n_units, int8_t *xq,
                                float2 *xd)
{
    const int lane = threadIdx.x & 31;
    const int64_t n_blocks = n_tokens * n_units;
    for (int64_t i = (int64_t)blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32; i < n_blocks;
         i += (int64_t)gridDim.x * (blockDim.x / 32)) {
        const float v = x[i * 32 + lane]; /* token t's block u starts at element (t*n_units+u)*32 */
        const float amax = cuda__warp_max(fabsf(v));
        const float d = amax / 127.0f;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        int q = (int)roundf(v * id);
        q = max(-127, min(127, q));
        xq[i * 32 + lane] = (int8_t)q;
        const int sum = cuda__warp_sum_int(q);
        if (lane == 0) xd[i] = make_float2(d, (float)sum);
    }
}

/* ---- launching ------------------------------------------------------------------------- */

__host__ __device__ constexpr bool is_float_type(int type)
{
    return type == KERN_T_F32 || type == KERN_T_F16 || type == KERN_T_BF16;
}

template <int TYPE, int R, int T, bool BATCH>
void launch_tile(unsigned blocks, const mm_args &a, cudaStream_t stream)
{
    if constexpr (is_float_type(TYPE))
        matmul_float_kernel<TYPE, R, T, BATCH><<<blocks, THREADS, 0, stream>>>(a);
    else
        matmul_quant_kernel<TYPE, R, T, BATCH><<<blocks, THREADS, 0, stream>>>(a);
}

template <int TYPE> void launch_matmul(const mm_args &a, cudaStream_t stream)
{
    if (a.n_tokens <= DECODE_MAX_TOKENS) {
        const unsigned blocks = (unsigned)((a.n_rows + WARPS - 1) / WARPS);
        if (a.n_tokens == 1)
            launch_tile<TYPE, 1, 1, false>(blocks, a, stream);
        else if (a.n_tokens == 2)
            launch_tile<TYPE, 1, 2, false>(blocks, a, stream);
        else if (a.n_tokens <= 4)
            launch_tile<TYPE, 1, 4, false>(blocks, a, stream);
        else
            launch_tile<TYPE, 1, 8, false>(blocks, a, stream);
        return;
    }
    mm_args b = a;
    const int64_t n_tiles = (a.n_tokens + BATCH_TOKENS - 1) / BATCH_TOKENS;
    b.n_tiles_per_group = (n_tiles + WARPS - 1) / WARPS;
    const int64_t blocks = (a.n_rows + BATCH_ROWS - 1) / BATCH_ROWS * b.n_tiles_per_group;
    launch_tile<TYPE, BATCH_ROWS, BATCH_TOKENS, true>((unsigned)blocks, b, stream);
}

/* ---- get_rows: dequantise in the reference's float operation order --------------------- */

static_assert(offsetof(block_q4_K, d) == offsetof(block_q5_K, d) &&
                  offsetof(block_q4_K, dmin) == offsetof(block_q5_K, dmin),
              "Q4_K and Q5_K open with the same scales");

/* Element e (0..31) of unit u of a row, bit-exact with quant_ref.c's to_f32 (explicitly
 * rounded operations, so no fused multiply-add changes a bit). */
template <int TYPE> __device__ __forceinline__ float dequant(const uint8_t *row, int64_t u, int e)
{
    if constexpr (TYPE == KERN_T_Q8_0) {
        const uint8_t *b = row + (size_t)u * sizeof(block_q8_0);
        return __fmul_rn((float)(int8_t)b[offsetof(block_q8_0, qs) + e],
                         ld_f16(b + offsetof(block_q8_0, d)));
    }
    if constexpr (TYPE == KERN_T_Q4_0 || TYPE == KERN_T_Q4_1) {
        const bool one = TYPE == KERN_T_Q4_1;
        const uint8_t *b = row + (size_t)u * (one ? sizeof(block_q4_1) : sizeof(block_q4_0));
        const uint8_t byte =
            b[(one ? offsetof(block_q4_1, qs) : offsetof(block_q4_0, qs)) + e % 16];
        const int q = e < 16 ? byte & 0xF : byte >> 4;
        const float d = ld_f16(b); /* d is first in both */
        if (!one) return __fmul_rn(d, (float)(q - 8));
        return __fadd_rn(__fmul_rn(d, (float)q), ld_f16(b + offsetof(block_q4_1, m)));
    }
    if constexpr (TYPE == KERN_T_Q5_0 || TYPE == KERN_T_Q5_1) {
        const bool one = TYPE == KERN_T_Q5_1;
        const uint8_t *b = row + (size_t)u * (one ? sizeof(block_q5_1) : sizeof(block_q5_0));
        const uint8_t byte =
            b[(one ? offsetof(block_q5_1, qs) : offsetof(block_q5_0, qs)) + e % 16];
        const uint32_t qh =
            (uint32_t)ld_i32(b + (one ? offsetof(block_q5_1, qh) : offsetof(block_q5_0, qh)));
        const int q = (e < 16 ? byte & 0xF : byte >> 4) | (int)(((qh >> e) & 1) << 4);
        const float d = ld_f16(b);
        if (!one) return __fmul_rn(d, (float)(q - 16));
        return __fadd_rn(__fmul_rn(d, (float)q), ld_f16(b + offsetof(block_q5_1, m)));
    }
    if constexpr (TYPE == KERN_T_Q4_K || TYPE == KERN_T_Q5_K) {
        const bool five = TYPE == KERN_T_Q5_K;
        const uint8_t *b = row + (size_t)(u / 8) * (five ? sizeof(block_q5_K) : sizeof(block_q4_K));
        const int j = (int)(u % 8);
        int sc, mn;
        scale_min_k4(j, b + (five ? offsetof(block_q5_K, scales) : offsetof(block_q4_K, scales)),
                     &sc, &mn);
        const float d1 = __fmul_rn(ld_f16(b + offsetof(block_q4_K, d)), (float)sc);
        const float m1 = __fmul_rn(ld_f16(b + offsetof(block_q4_K, dmin)), (float)mn);
        const uint8_t byte =
            b[(five ? offsetof(block_q5_K, qs) : offsetof(block_q4_K, qs)) + 32 * (j / 2) + e];
        int q = (byte >> (4 * (j & 1))) & 0xF;
        if (five) q += ((b[offsetof(block_q5_K, qh) + e] >> j) & 1) * 16;
        return __fsub_rn(__fmul_rn(d1, (float)q), m1);
    }
    /* Q6_K */
    const uint8_t *b = row + (size_t)(u / 8) * sizeof(block_q6_K);
    const int j = (int)(u % 8), half = j / 4, part = j % 4;
    const uint8_t lo = b[offsetof(block_q6_K, ql) + 64 * half + 32 * (part & 1) + e];
    const uint8_t hi = b[offsetof(block_q6_K, qh) + 32 * half + e];
    const int q = (((part >= 2 ? lo >> 4 : lo) & 0xF) | ((hi >> (2 * part)) & 3) << 4) - 32;
    const int8_t sc = (int8_t)b[offsetof(block_q6_K, scales) + 8 * half + 2 * part + e / 16];
    return __fmul_rn(__fmul_rn(ld_f16(b + offsetof(block_q6_K, d)), (float)sc), (float)q);
}

template <int TYPE>
__global__ void get_rows_kernel(const uint8_t *w, size_t row_bytes, int64_t n_rows, int64_t n_cols,
                                const int32_t *ids, float *out, int64_t n_ids, unsigned *fault)
{
    const int64_t n = n_ids * n_cols;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x) {
        const int64_t r = i / n_cols, c = i % n_cols;
        const int32_t id = ids[r];
        if (id < 0 || id >= n_rows) {
            out[i] = 0.0f;
            cuda__raise(fault, CUDA__FAULT_ROW_ID);
            continue;
        }
        const uint8_t *row = w + (size_t)id * row_bytes;
        if constexpr (is_float_type(TYPE))
            out[i] = load_float_weight<TYPE>(row, c);
        else
            out[i] = dequant<TYPE>(row, c / 32, (int)(c % 32));
    }
}

/* The types and their block geometry, as the kernels need it. */
bool type_geometry(uint32_t type, int64_t *block_elems, size_t *block_bytes)
{
    switch (type) {
    case KERN_T_F32:
        *block_elems = 1, *block_bytes = 4;
        return true;
    case KERN_T_F16:
    case KERN_T_BF16:
        *block_elems = 1, *block_bytes = 2;
        return true;
    case KERN_T_Q8_0:
        *block_elems = QK8_0, *block_bytes = sizeof(block_q8_0);
        return true;
    case KERN_T_Q4_0:
        *block_elems = QK4_0, *block_bytes = sizeof(block_q4_0);
        return true;
    case KERN_T_Q4_1:
        *block_elems = QK4_1, *block_bytes = sizeof(block_q4_1);
        return true;
    case KERN_T_Q5_0:
        *block_elems = QK5_0, *block_bytes = sizeof(block_q5_0);
        return true;
    case KERN_T_Q5_1:
        *block_elems = QK5_1, *block_bytes = sizeof(block_q5_1);
        return true;
    case KERN_T_Q4_K:
        *block_elems = QK_K, *block_bytes = sizeof(block_q4_K);
        return true;
    case KERN_T_Q5_K:
        *block_elems = QK_K, *block_bytes = sizeof(block_q5_K);
        return true;
    case KERN_T_Q6_K:
        *block_elems = QK_K, *block_bytes = sizeof(block_q6_K);
        return true;
    default:
        return false;
    }
}

/* Checks a weight handed to matmul / get_rows; false with the error recorded. */
bool weight_ok(cuda_backend *cb, const kern_weight *w, const char *op)
{
    int64_t block_elems;
    size_t block_bytes;
    if (!type_geometry(w->type, &block_elems, &block_bytes)) {
        cuda__fail(cb, -EINVAL, "cuda %s: weight type %u has no CUDA kernel", op, w->type);
        return false;
    }
    if (w->n_rows < 0 || w->n_cols < 0 || w->n_cols % block_elems != 0 ||
        w->row_bytes < (size_t)(w->n_cols / block_elems) * block_bytes || !w->data) {
        cuda__fail(cb, -EINVAL,
                   "cuda %s: weight %lld x %lld of type %u (row %zu bytes) is malformed", op,
                   (long long)w->n_rows, (long long)w->n_cols, w->type, w->row_bytes);
        return false;
    }
    /* Blocks are read 16 bits at a time (F32 32 bits): the rows must be aligned to that. */
    const size_t align = w->type == KERN_T_F32 ? 4 : 2;
    if (((uintptr_t)w->data | w->row_bytes) % align != 0) {
        cuda__fail(cb, -EINVAL, "cuda %s: weight data or row stride not %zu-byte aligned", op,
                   align);
        return false;
    }
    return true;
}

} // namespace

#define FOR_EACH_TYPE(X)                                                                           \
    X(F32) X(F16) X(BF16) X(Q8_0) X(Q4_0) X(Q4_1) X(Q5_0) X(Q5_1) X(Q4_K) X(Q5_K) X(Q6_K)

void cuda__matmul(kern_backend *b, const kern_weight *w, const float *x, float *y, int64_t n_tokens)
{
    cuda_backend *cb = cuda__of(b);
    if (n_tokens <= 0 || w->n_rows <= 0) return;
    if (!cuda__enter(cb, "matmul") || !weight_ok(cb, w, "matmul")) return;
    cudaStream_t stream = cuda__compute(cb);
    if (w->n_cols == 0) { /* an empty dot is 0 */
        cuda__ok(cb, cudaMemsetAsync(y, 0, (size_t)(n_tokens * w->n_rows) * sizeof *y, stream),
                 "matmul", "cudaMemsetAsync");
        return;
    }
    mm_args a = {};
    a.w = (const uint8_t *)w->data;
    a.row_bytes = w->row_bytes;
    a.n_rows = w->n_rows;
    a.n_cols = w->n_cols;
    a.x = x;
    a.y = y;
    a.n_tokens = n_tokens;
    const bool quant = w->type != KERN_T_F32 && w->type != KERN_T_F16 && w->type != KERN_T_BF16;
    if (quant) {
        /* Every quantised type's block is a multiple of 32 elements (weight_ok checked). */
        a.n_units = w->n_cols / 32;
        const size_t n_blocks = (size_t)(n_tokens * a.n_units);
        const size_t q_bytes = n_blocks * 32;
        uint8_t *act = (uint8_t *)cuda__scratch_get(cb, &cb->act,
                                                    q_bytes + n_blocks * sizeof(float2), "matmul");
        if (!act) return;
        a.xq = (const int4 *)act;
        a.xd = (const float2 *)(act + q_bytes); /* q_bytes is a multiple of 32: aligned */
        quantize_kernel<<<cuda__grid((int64_t)n_blocks, 8), 256, 0, stream>>>(
            x, n_tokens, a.n_units, (int8_t *)act, (float2 *)(act + q_bytes));
        if (!cuda__launched(cb, "matmul (quantise activations)")) return;
    }
    switch (w->type) {
#define CASE(T)                                                                                    \
    case KERN_T_##T:                                                                               \
        launch_matmul<KERN_T_##T>(a, stream);                                                      \
        break;
        FOR_EACH_TYPE(CASE)
#undef CASE
    default:
        break;
    }
    cuda__launched(cb, "matmul");
}

void cuda__get_rows(kern_backend *b, const kern_weight *w, const int32_t *ids, float *out,
                    int64_t n_ids)
{
    cuda_backend *cb = cuda__of(b);
    if (n_ids <= 0 || w->n_cols <= 0) return;
    if (!cuda__enter(cb, "get_rows") || !weight_ok(cb, w, "get_rows")) return;
    const unsigned grid = cuda__grid(n_ids * w->n_cols, 256);
    cudaStream_t stream = cuda__compute(cb);
    switch (w->type) {
#define CASE(T)                                                                                    \
    case KERN_T_##T:                                                                               \
        get_rows_kernel<KERN_T_##T><<<grid, 256, 0, stream>>>((const uint8_t *)w->data,            \
                                                              w->row_bytes, w->n_rows, w->n_cols,  \
                                                              ids, out, n_ids, cb->fault_device);  \
        break;
        FOR_EACH_TYPE(CASE)
#undef CASE
    default:
        break;
    }
    cuda__launched(cb, "get_rows");
}
