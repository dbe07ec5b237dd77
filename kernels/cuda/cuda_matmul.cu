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
 *   inside a unit cannot matter), then adds the unit's term (unit_term: its dots times the
 *   unit's float scales, plus its min times the activations' sum) scaled by the activation
 *   scale into a float accumulator with explicitly rounded operations.  A fixed xor-butterfly
 *   across the lanes finishes each output.  Every output therefore sees the same operations
 *   in the same order whatever R, T and the batch are.
 * - Decode (n_tokens <= 8): one row per warp, T = 1, 2, 4 or 8, so the weight bytes are read
 *   once for all tokens.  Larger batches of quantised weights: the tensor-core kernel
 *   (matmul_quant_mma), which keeps these very operations and their order.  Without it (a
 *   device before sm_80, or its check at open failed): R = 4 rows and T = 8 tokens per warp,
 *   four warps of a block on consecutive token tiles of the same rows.
 * - F32 / F16 / BF16 weights skip the quantisation: lane l takes elements l, l + 32, ... and
 *   accumulates w * x in f32 with fma, the same butterfly at the end.
 *
 * A weight unit is 32 elements that pair with one activation block: the whole block for the
 * 32-element types, sub-block j of a 256-element super-block for the K types.  Per unit a
 * type yields 8 ints of signed bytes (4 weights each, offsets such as Q4_0's -8 already
 * applied), integer multipliers for its two halves (Q6_K has a scale per 16; the others use
 * one), a float scale da, and for types with a min the float db and integer multiplier of the
 * activation sum: unit = dx * (da * (sc_lo*dot_lo + sc_hi*dot_hi) + db * (bmul * sum_x)),
 * computed as dx * (s_lo*dot_lo + s_hi*dot_hi + m*sum_x) with the float factors s = da*sc and
 * m = db*bmul made once per (row, unit) (unit_factors), and dot_lo + dot_hi as one integer
 * where the halves share a scale.
 *
 * Blocks are 2-byte aligned at best (Q4_0 is 18 bytes), so weights are read 16 bits at a
 * time; the offsets come from the project's own block structs (quant_blocks.h).
 */
#include "kernels/cuda/cuda_internal.h"

#include "kernels/cuda/cuda.h"
#include "kernels/cuda/cuda_blocks.cuh"

#include <errno.h>
#include <math.h>
#include <new>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

namespace
{

using namespace cuda_blocks;

enum { WARPS = 4, THREADS = 32 * WARPS, DECODE_MAX_TOKENS = 8, BATCH_ROWS = 4, BATCH_TOKENS = 8 };

__device__ __forceinline__ float bf16_to_f32(uint32_t h)
{
    return __uint_as_float(h << 16);
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
    const float *bias; /* added to each output as add_bias adds it, or NULL */
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
                a.y[(tok0 + t) * a.n_rows + row0 + r] = a.bias ? __fadd_rn(s, a.bias[row0 + r]) : s;
        }
}

CUDA__HD float fma_rn(float a, float b, float c)
{
#ifdef __CUDA_ARCH__
    return __fmaf_rn(a, b, c);
#else
    return fmaf(a, b, c);
#endif
}

CUDA__HD int dp4a_hd(int a, int b, int c)
{
#ifdef __CUDA_ARCH__
    return __dp4a(a, b, c);
#else
    for (int i = 0; i < 4; i++)
        c += (int8_t)((uint32_t)a >> (8 * i)) * (int8_t)((uint32_t)b >> (8 * i));
    return c;
#endif
}

/* Whether a type's unit has a min (an activation-sum term), and whether its two halves have
 * their own scales (the dots over elements 0..15 and 16..31 are then kept apart). */
__host__ __device__ constexpr bool has_min(int type)
{
    return type == KERN_T_Q4_1 || type == KERN_T_Q5_1 || type == KERN_T_Q4_K ||
           type == KERN_T_Q5_K || type == KERN_T_Q2_K;
}

__host__ __device__ constexpr bool two_scales(int type)
{
    return type == KERN_T_Q6_K || type == KERN_T_Q3_K || type == KERN_T_Q2_K;
}

/* A unit's float factors, made once per (row, unit): the scales of its dots (da * sc per half)
 * and of the activations' sums (db * bmul per half).  Every kernel weighs a unit through these,
 * so that per (row, token, unit) only a few float operations remain. */
struct __align__(16) unit_f
{
    float s_lo, s_hi, m_lo, m_hi;
};

CUDA__HD unit_f unit_factors(const unit &q)
{
    return unit_f{mul_rn(q.da, (float)q.sc_lo), mul_rn(q.da, (float)q.sc_hi),
                  mul_rn(q.db, (float)q.bmul), mul_rn(q.db, (float)q.bmul_hi)};
}

/* A unit's term for one token before the activation scale, rounded as every kernel rounds it:
 * lo and hi are the integer dots over the unit's halves (for the one-scale types only lo + hi
 * counts), x_sum the activations' integer sum (exact in a float), x_lo its first half's. */
template <int TYPE> CUDA__HD float unit_term(const unit_f &f, int lo, int hi, float x_sum, int x_lo)
{
    float m = 0.0f;
    if constexpr (split_mins(TYPE))
        m = fma_rn(f.m_lo, (float)x_lo, mul_rn(f.m_hi, sub_rn(x_sum, (float)x_lo)));
    else if constexpr (has_min(TYPE))
        m = mul_rn(f.m_lo, x_sum);
    if constexpr (two_scales(TYPE))
        return fma_rn(f.s_lo, (float)lo, fma_rn(f.s_hi, (float)hi, m));
    else
        return fma_rn(f.s_lo, (float)(lo + hi), m);
}

template <int TYPE, int R, int T, bool BATCH>
__device__ __forceinline__ void matmul_quant(const mm_args &a)
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
        unit_f f[R];
#pragma unroll
        for (int r = 0; r < R; r++)
            if (r < nr) {
                load_unit<TYPE>(a.w + (size_t)(row0 + r) * a.row_bytes, (int)u, q[r]);
                f[r] = unit_factors(q[r]);
            }
#pragma unroll
        for (int t = 0; t < T; t++) {
            if (t >= nt) break;
            const int64_t xi = (tok0 + t) * a.n_units + u;
            const int4 x0 = a.xq[2 * xi], x1 = a.xq[2 * xi + 1];
            const float2 xd = a.xd[xi];
            const int xs[8] = {x0.x, x0.y, x0.z, x0.w, x1.x, x1.y, x1.z, x1.w};
            /* Q2_K's halves have their own mins: the first half's sum, exactly */
            int x_lo = 0;
            if constexpr (split_mins(TYPE))
#pragma unroll
                for (int k = 0; k < 4; k++)
                    x_lo = __dp4a(xs[k], 0x01010101, x_lo);
#pragma unroll
            for (int r = 0; r < R; r++) {
                if (r >= nr) break;
                int lo = 0, hi = 0;
#pragma unroll
                for (int k = 0; k < 4; k++) {
                    lo = __dp4a(q[r].w[k], xs[k], lo);
                    hi = __dp4a(q[r].w[k + 4], xs[k + 4], hi);
                }
                const float v = unit_term<TYPE>(f[r], lo, hi, xd.y, x_lo);
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
__device__ __forceinline__ void matmul_float(const mm_args &a)
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

/* ---- the tensor-core kernel for batches ------------------------------------------------ */

/* Batches of quantised weights run matmul_quant's arithmetic on the tensor cores, and keep its
 * bits.  Its per-unit integer dots are exact, so int8 mma.sync (one m16n8k32 per unit, or an
 * m16n8k16 per half where the halves have their own scales) gives the same integers, and each
 * (row, token, unit) then takes the same unit_term and fma.  What remains is the order of the
 * sums: matmul_quant's lane j adds units j, j + 32, j + 64, ... in turn ("slot" j), and the
 * butterfly then adds the 32 slots as a tree whose first level pairs slot j with j + 16, the
 * next j with j + 8, and so on.  So here a warp walks the slots in pairs (j, j + 16), each
 * pair's units in order, and adds each finished pair into a stack that builds the tree in the
 * order its leaves come (j = bit-reversed 2s for pair s): the same additions, the running sums
 * in registers.
 *
 * A warp owns 16 rows x 16 tokens (two m16n8 tiles); per chunk, units u and u + 16 of a pair,
 * its lanes decode the weight units (one each, with their factors) and load the activation
 * blocks into the warp's stage in shared memory, then build their fragments from it.  Every
 * step is a function of the lane (CUDA__HD), so kern_cuda_matmul_on_host runs this very code on
 * the host, lane by lane, with the PTX ISA's fragment layout emulated. */
enum { MMA_ROWS = 16, MMA_TOKENS = 16, MMA_WARPS = 4, MMA_STRIDE = 12 };

struct mma_stage {
    /* a unit's or block's 8 ints; the padding spreads a fragment load's lanes over the banks */
    int w[2][MMA_ROWS][MMA_STRIDE];
    unit_f f[2][MMA_ROWS];
    int x[2][MMA_TOKENS][MMA_STRIDE];
    float2 xd[2][MMA_TOKENS];
    int x_lo[2][MMA_TOKENS]; /* the first half's sum (Q2_K's split mins) */
};

/* A lane's sums: per pair member, n8 tile and C element, the running slot; per tree level above
 * the pairs, the node waiting for its right sibling. */
struct mma_lane {
    float acc[2][2][4];
    float stack[4][2][4];
};

struct mma_tile {
    int64_t row0, tok0;
    int nr, nt; /* the tile's rows and tokens that exist */
};

/* Warp `warp` of block `block`: a block's warps take consecutive row tiles, and the blocks of
 * one row group its token tiles in turn (a.n_tiles_per_group of them), so the blocks running
 * at once share their rows' weights through L2. */
CUDA__HD bool mma_tile_of(const mm_args &a, int64_t block, int warp, mma_tile &t)
{
    t.row0 = (block / a.n_tiles_per_group * MMA_WARPS + warp) * MMA_ROWS;
    t.tok0 = block % a.n_tiles_per_group * MMA_TOKENS;
    if (t.row0 >= a.n_rows || t.tok0 >= a.n_tokens) return false;
    const int64_t rows = a.n_rows - t.row0, tokens = a.n_tokens - t.tok0;
    t.nr = (int)(rows < (int64_t)MMA_ROWS ? rows : (int64_t)MMA_ROWS);
    t.nt = (int)(tokens < (int64_t)MMA_TOKENS ? tokens : (int64_t)MMA_TOKENS);
    return true;
}

/* The slot of pair s's first member: the tree's leaves come in bit-reversed order. */
CUDA__HD int mma_pair_slot(int s)
{
    const int i = 2 * s;
    return (i & 1) << 4 | (i & 2) << 2 | (i & 4) | (i & 8) >> 2 | (i & 16) >> 4;
}

/* Lane `lane`'s share of loading units u (c = 0) and u + 16 (c = 1): weight unit lane / 16 of
 * row lane % 16, and halves of two activation blocks.  What lies past the tile's rows, tokens
 * or units is zero. */
template <int TYPE>
CUDA__HD void mma_stage_chunk(const mm_args &a, const mma_tile &t, int64_t u, int lane,
                              mma_stage &st)
{
    const int c = lane / MMA_ROWS, r = lane % MMA_ROWS;
    unit q = {};
    if (r < t.nr && u + 16 * c < a.n_units)
        load_unit<TYPE>(a.w + (size_t)(t.row0 + r) * a.row_bytes, (int)(u + 16 * c), q);
    CUDA__UNROLL
    for (int k = 0; k < 8; k++)
        st.w[c][r][k] = q.w[k];
    st.f[c][r] = unit_factors(q);
    CUDA__UNROLL
    for (int h = 0; h < 2; h++) {
        const int i = lane + 32 * h, tok = i >> 2, cx = i >> 1 & 1, half = i & 1;
        int4 v = make_int4(0, 0, 0, 0);
        float2 d = make_float2(0.0f, 0.0f);
        if (tok < t.nt && u + 16 * cx < a.n_units) {
            const int64_t xi = (t.tok0 + tok) * a.n_units + u + 16 * cx;
            v = a.xq[2 * xi + half];
            d = a.xd[xi];
        }
        int *x = &st.x[cx][tok][4 * half];
        x[0] = v.x, x[1] = v.y, x[2] = v.z, x[3] = v.w;
        if (half == 0) {
            st.xd[cx][tok] = d;
            int lo = 0;
            CUDA__UNROLL
            for (int k = 0; k < 4; k++)
                lo = dp4a_hd(x[k], 0x01010101, lo);
            st.x_lo[cx][tok] = lo;
        }
    }
}

/* The PTX ISA's fragments of mma.m16n8k32 with .s8 operands, for lane (g = lane / 4,
 * k = lane % 4): of A (16 x 32, row-major) a0 and a1 are rows g and g + 8 at bytes 4k .. 4k + 3,
 * a2 and a3 the same rows at bytes 16 + 4k ..; of B (32 x 8, column-major) b0 is column g at
 * rows 4k .., b1 at rows 16 + 4k ..; of C, c0 and c1 are row g at columns 2k and 2k + 1, c2 and
 * c3 row g + 8.  m16n8k16 takes (a0, a1, b0) for bytes 0..15 and (a2, a3, b1) for 16..31.
 * A's rows are weight rows, B's columns tokens (8 of the tile's 16: n8 tile nt). */
CUDA__HD void mma_frags_a(const mma_stage &st, int c, int lane, int (&fa)[4])
{
    const int g = lane >> 2, k = lane & 3;
    fa[0] = st.w[c][g][k];
    fa[1] = st.w[c][g + 8][k];
    fa[2] = st.w[c][g][4 + k];
    fa[3] = st.w[c][g + 8][4 + k];
}

CUDA__HD void mma_frags_b(const mma_stage &st, int c, int nt, int lane, int (&fb)[2])
{
    const int g = lane >> 2, k = lane & 3;
    fb[0] = st.x[c][8 * nt + g][k];
    fb[1] = st.x[c][8 * nt + g][4 + k];
}

/* C's element i of the lane: row g + 8 (i / 2), token 2k + i % 2 of its n8 tile. */
CUDA__HD int mma_row(int lane, int i)
{
    return (lane >> 2) + 8 * (i >> 1);
}

CUDA__HD int mma_token(int lane, int i)
{
    return 2 * (lane & 3) + (i & 1);
}

/* matmul_quant's float work on unit c of the chunk for the lane's four outputs in n8 tile nt,
 * from their dots (lo + hi for the one-scale types). */
template <int TYPE>
CUDA__HD void mma_accumulate(const mma_stage &st, int c, int nt, int lane, const int (&lo)[4],
                             const int (&hi)[4], float (&acc)[2][2][4])
{
    CUDA__UNROLL
    for (int i = 0; i < 4; i++) {
        const int tok = 8 * nt + mma_token(lane, i);
        const float2 xd = st.xd[c][tok];
        const float v =
            unit_term<TYPE>(st.f[c][mma_row(lane, i)], lo[i], hi[i], xd.y, st.x_lo[c][tok]);
        acc[c][nt][i] = fma_rn(xd.x, v, acc[c][nt][i]);
    }
}

/* Pair s's slots are done: their sum is the tree's node s of the level above the slots; it
 * joins the nodes waiting on the stack as a binary counter carries, and the last one (s = 15)
 * is the output, the bias added as write_outputs adds it. */
CUDA__HD void mma_pair_done(const mm_args &a, const mma_tile &t, int s, int lane,
                            float (&acc)[2][2][4], float (&stack)[4][2][4])
{
    CUDA__UNROLL
    for (int nt = 0; nt < 2; nt++) {
        CUDA__UNROLL
        for (int i = 0; i < 4; i++) {
            float v = add_rn(acc[0][nt][i], acc[1][nt][i]);
            acc[0][nt][i] = acc[1][nt][i] = 0.0f;
            int level = 0;
            for (; (s >> level) & 1; level++)
                v = add_rn(stack[level][nt][i], v);
            if (level < 4) {
                stack[level][nt][i] = v;
                continue;
            }
            const int r = mma_row(lane, i), tok = 8 * nt + mma_token(lane, i);
            if (r >= t.nr || tok >= t.nt) continue;
            const int64_t row = t.row0 + r;
            a.y[(t.tok0 + tok) * a.n_rows + row] = a.bias ? add_rn(v, a.bias[row]) : v;
        }
    }
}

__device__ __forceinline__ void mma_s8_k16(int a0, int a1, int b, int (&d)[4])
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    asm("mma.sync.aligned.m16n8k16.row.col.s32.s8.s8.s32 {%0, %1, %2, %3}, {%4, %5}, {%6}, "
        "{%7, %8, %9, %10};"
        : "=r"(d[0]), "=r"(d[1]), "=r"(d[2]), "=r"(d[3])
        : "r"(a0), "r"(a1), "r"(b), "r"(0), "r"(0), "r"(0), "r"(0));
#else
    (void)a0, (void)a1, (void)b, (void)d;
    __trap(); /* the build's architectures are sm_80 and later */
#endif
}

__device__ __forceinline__ void mma_s8_k32(const int (&a)[4], const int (&b)[2], int (&d)[4])
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    asm("mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
        "{%8, %9}, {%10, %11, %12, %13};"
        : "=r"(d[0]), "=r"(d[1]), "=r"(d[2]), "=r"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "r"(0), "r"(0), "r"(0),
          "r"(0));
#else
    (void)a, (void)b, (void)d;
    __trap();
#endif
}

template <int TYPE> __device__ __forceinline__ void matmul_quant_mma(const mm_args &a)
{
    __shared__ mma_stage stages[MMA_WARPS];
    const int lane = threadIdx.x & 31, warp = threadIdx.x / 32;
    mma_tile t;
    if (!mma_tile_of(a, blockIdx.x, warp, t)) return; /* whole warp */
    mma_stage &st = stages[warp];
    /* apart, so that the sums stay in registers while the stack (indexed by level) need not */
    float acc[2][2][4] = {}, stack[4][2][4];
    for (int s = 0; s < 16; s++) {
        for (int64_t u = mma_pair_slot(s); u < a.n_units; u += 32) {
            __syncwarp(); /* the last chunk's fragments are read */
            mma_stage_chunk<TYPE>(a, t, u, lane, st);
            __syncwarp();
#pragma unroll
            for (int c = 0; c < 2; c++) {
                if (u + 16 * c >= a.n_units) break;
                int fa[4];
                mma_frags_a(st, c, lane, fa);
#pragma unroll
                for (int nt = 0; nt < 2; nt++) {
                    int fb[2], lo[4], hi[4] = {0, 0, 0, 0};
                    mma_frags_b(st, c, nt, lane, fb);
                    if constexpr (two_scales(TYPE)) {
                        mma_s8_k16(fa[0], fa[1], fb[0], lo);
                        mma_s8_k16(fa[2], fa[3], fb[1], hi);
                    } else {
                        mma_s8_k32(fa, fb, lo); /* lo + hi */
                    }
                    mma_accumulate<TYPE>(st, c, nt, lane, lo, hi, acc);
                }
            }
        }
        mma_pair_done(a, t, s, lane, acc, stack);
    }
}

/* The tile shapes: R == MMA_ROWS is the tensor-core kernel (quantised types only). */
template <int TYPE, int R, int T, bool BATCH>
__device__ __forceinline__ void matmul_any(const mm_args &a)
{
    if constexpr (is_float_type(TYPE))
        matmul_float<TYPE, R, T, BATCH>(a);
    else if constexpr (R == MMA_ROWS)
        matmul_quant_mma<TYPE>(a);
    else
        matmul_quant<TYPE, R, T, BATCH>(a);
}

template <int TYPE, int R, int T, bool BATCH>
__global__ void __launch_bounds__(THREADS) matmul_kernel(mm_args a)
{
    matmul_any<TYPE, R, T, BATCH>(a);
}

/* ---- the grouped matmul: several products of one type and shape in one launch ------------- */

/* One product of a group: its weight, its rows of the activations (as the group's shared
 * quantisation holds them) and its output.  blockIdx.y picks the entry, so every entry runs the
 * single matmul's warps, tiles and operation order: a grouped product has the bits of the same
 * product computed alone. */
struct group_entry {
    const uint8_t *w;
    const float *bias;
    float *y;
    int64_t tok0; /* the entry's first activation row */
    int64_t n_tokens;
};

/* Kernel parameters stay far below the 4 KiB every architecture takes. */
enum { GROUP_MAX = 48 };

struct group_args {
    mm_args a; /* shared: shape, row stride, the activations; w, y, bias, n_tokens per entry */
    group_entry e[GROUP_MAX];
};

/* Rows [row0, row_end) of the shared activations through one product (w, bias; y is its output
 * for row row0), in passes of the grid's shared.n_tokens rows (bucket_pass): each pass runs the
 * same tiles over the next rows, and a token's bits do not depend on its tile. */
template <int TYPE, int R, int T, bool BATCH>
__device__ __forceinline__ void matmul_passes(const mm_args &shared, const uint8_t *w,
                                              const float *bias, float *y, int64_t row0,
                                              int64_t row_end)
{
    for (int64_t t0 = row0; t0 < row_end; t0 += shared.n_tokens) {
        mm_args a = shared;
        a.w = w;
        a.bias = bias;
        a.y = y + (t0 - row0) * a.n_rows;
        a.n_tokens = min(shared.n_tokens, row_end - t0);
        if constexpr (is_float_type(TYPE)) {
            a.x += t0 * a.n_cols;
        } else {
            a.xq += t0 * a.n_units * 2; /* two int4 (32 bytes) per block */
            a.xd += t0 * a.n_units;
        }
        matmul_any<TYPE, R, T, BATCH>(a);
    }
}

template <int TYPE, int R, int T, bool BATCH>
__global__ void __launch_bounds__(THREADS) matmul_group_kernel(const __grid_constant__ group_args g)
{
    const group_entry &e = g.e[blockIdx.y];
    matmul_passes<TYPE, R, T, BATCH>(g.a, e.w, e.bias, e.y, e.tok0, e.tok0 + e.n_tokens);
}

/* The grouped matmul with its entries found on the device (experts_routed): blockIdx.y picks
 * a part (gate or up) and a slot of the plan's list of used experts; the expert's weight comes
 * from the device table and its bucket from the plan, so neither the launch nor a captured
 * graph of it holds an expert's address or a bucket's size. */
struct routed_args {
    mm_args a; /* shared: shape, row stride, the activations of every plan row */
    const int32_t *used, *bucket_start;
    const void *const *parts; /* [n_expert][3] */
    int part0;                /* the table column of part 0: 0 (gate) or 2 (down) */
    int n_slots;              /* blockIdx.y / n_slots is the part */
    float *y[2];              /* per part: the output of plan row 0 */
    const float *bias[2];     /* per part: [n_expert][n_rows], or NULL */
};

template <int TYPE, int R, int T, bool BATCH>
__global__ void __launch_bounds__(THREADS)
    matmul_routed_kernel(const __grid_constant__ routed_args r)
{
    const int part = (int)blockIdx.y / r.n_slots, slot = (int)blockIdx.y % r.n_slots;
    if (slot >= r.used[0]) return;
    const int64_t e = r.used[1 + slot];
    const uint8_t *w = (const uint8_t *)r.parts[3 * e + r.part0 + part];
    if (!w || !r.parts[3 * e]) return; /* not on the device: the caller computes it */
    const int64_t bucket0 = r.bucket_start[e];
    matmul_passes<TYPE, R, T, BATCH>(r.a, w, r.bias[part] ? r.bias[part] + e * r.a.n_rows : nullptr,
                                     r.y[part] + bucket0 * r.a.n_rows, bucket0,
                                     r.bucket_start[e + 1]);
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

/* Which kernel a launch runs: the single one (g and r NULL, a.n_tokens tokens), the grouped
 * one (g->a is a; n_entries entries of at most a.n_tokens tokens each) or the routed one (r->a
 * is a; n_entries = parts x slots, buckets of at most a.n_tokens tokens). */
struct launch_kind {
    group_args *g;
    routed_args *r;
    int n_entries;
    bool tensor_cores; /* batches of quantised weights on matmul_quant_mma */
};

template <int TYPE, int R, int T, bool BATCH>
void launch_tile(unsigned blocks, const mm_args &a, const launch_kind &k, cudaStream_t stream)
{
    const unsigned threads = R == MMA_ROWS ? 32 * MMA_WARPS : THREADS;
    if (k.r) {
        k.r->a = a;
        matmul_routed_kernel<TYPE, R, T, BATCH>
            <<<dim3(blocks, (unsigned)k.n_entries), threads, 0, stream>>>(*k.r);
    } else if (k.g) {
        k.g->a = a;
        matmul_group_kernel<TYPE, R, T, BATCH>
            <<<dim3(blocks, (unsigned)k.n_entries), threads, 0, stream>>>(*k.g);
    } else {
        matmul_kernel<TYPE, R, T, BATCH><<<blocks, threads, 0, stream>>>(a);
    }
}

/* The tile shape for a.n_tokens tokens (the most any entry has, for a group). */
template <int TYPE> void launch_matmul(const mm_args &a, const launch_kind &g, cudaStream_t stream)
{
    if (a.n_tokens <= DECODE_MAX_TOKENS) {
        const unsigned blocks = (unsigned)((a.n_rows + WARPS - 1) / WARPS);
        if (a.n_tokens == 1)
            launch_tile<TYPE, 1, 1, false>(blocks, a, g, stream);
        else if (a.n_tokens == 2)
            launch_tile<TYPE, 1, 2, false>(blocks, a, g, stream);
        else if (a.n_tokens <= 4)
            launch_tile<TYPE, 1, 4, false>(blocks, a, g, stream);
        else
            launch_tile<TYPE, 1, 8, false>(blocks, a, g, stream);
        return;
    }
    mm_args b = a;
    if constexpr (!is_float_type(TYPE)) {
        if (g.tensor_cores) {
            b.n_tiles_per_group = (a.n_tokens + MMA_TOKENS - 1) / MMA_TOKENS;
            const int64_t groups = (a.n_rows + MMA_ROWS * MMA_WARPS - 1) / (MMA_ROWS * MMA_WARPS);
            launch_tile<TYPE, MMA_ROWS, MMA_TOKENS, true>((unsigned)(groups * b.n_tiles_per_group),
                                                          b, g, stream);
            return;
        }
    }
    const int64_t n_tiles = (a.n_tokens + BATCH_TOKENS - 1) / BATCH_TOKENS;
    b.n_tiles_per_group = (n_tiles + WARPS - 1) / WARPS;
    const int64_t blocks = (a.n_rows + BATCH_ROWS - 1) / BATCH_ROWS * b.n_tiles_per_group;
    launch_tile<TYPE, BATCH_ROWS, BATCH_TOKENS, true>((unsigned)blocks, b, g, stream);
}

void launch_any(uint32_t type, const mm_args &a, const launch_kind &k, cudaStream_t stream);

/* ---- get_rows: dequantise in the reference's float operation order --------------------- */

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
    case KERN_T_Q2_K:
        *block_elems = QK_K, *block_bytes = sizeof(block_q2_K);
        return true;
    case KERN_T_Q3_K:
        *block_elems = QK_K, *block_bytes = sizeof(block_q3_K);
        return true;
    case KERN_T_IQ4_NL:
        *block_elems = QK4_NL, *block_bytes = sizeof(block_iq4_nl);
        return true;
    case KERN_T_IQ4_XS:
        *block_elems = QK_K, *block_bytes = sizeof(block_iq4_xs);
        return true;
    case KERN_T_MXFP4:
        *block_elems = QK_MXFP4, *block_bytes = sizeof(block_mxfp4);
        return true;
    default:
        return false;
    }
}

/* Blocks are read 16 bits at a time (F32 32 bits, MXFP4's 17-byte blocks a byte at a time):
 * the rows must be aligned to that. */
size_t weight_align(uint32_t type)
{
    return type == KERN_T_F32 ? 4 : type == KERN_T_MXFP4 ? 1 : 2;
}

/* Checks a weight handed to matmul / get_rows (or, without need_data, the shape an expert
 * table's entries share); false with the error recorded. */
bool weight_ok(cuda_backend *cb, const kern_weight *w, const char *op, bool need_data = true)
{
    int64_t block_elems;
    size_t block_bytes;
    if (!type_geometry(w->type, &block_elems, &block_bytes)) {
        cuda__fail(cb, -EINVAL, "cuda %s: weight type %u has no CUDA kernel", op, w->type);
        return false;
    }
    if (w->n_rows < 0 || w->n_cols < 0 || w->n_cols % block_elems != 0 ||
        w->row_bytes < (size_t)(w->n_cols / block_elems) * block_bytes || (need_data && !w->data)) {
        cuda__fail(cb, -EINVAL,
                   "cuda %s: weight %lld x %lld of type %u (row %zu bytes) is malformed", op,
                   (long long)w->n_rows, (long long)w->n_cols, w->type, w->row_bytes);
        return false;
    }
    const size_t align = weight_align(w->type);
    if (((uintptr_t)w->data | w->row_bytes) % align != 0) {
        cuda__fail(cb, -EINVAL, "cuda %s: weight data or row stride not %zu-byte aligned", op,
                   align);
        return false;
    }
    return true;
}

} // namespace

/* (clang-format reflows this list differently on every run) */
// clang-format off
#define FOR_EACH_TYPE(X)                                                                           \
    X(F32) X(F16) X(BF16) X(Q8_0) X(Q4_0) X(Q4_1) X(Q5_0) X(Q5_1) X(Q4_K) X(Q5_K) X(Q6_K)         \
    X(Q2_K) X(Q3_K) X(IQ4_NL) X(IQ4_XS) X(MXFP4)
// clang-format on

namespace
{

void launch_any(uint32_t type, const mm_args &a, const launch_kind &k, cudaStream_t stream)
{
    switch (type) {
#define CASE(T)                                                                                    \
    case KERN_T_##T:                                                                               \
        launch_matmul<KERN_T_##T>(a, k, stream);                                                   \
        break;
        FOR_EACH_TYPE(CASE)
#undef CASE
    default:
        break;
    }
}

/* Activations [n_tokens][n_cols] as the quantised kernels read them: 8-bit blocks in `act`
 * (which must hold act_bytes(n_tokens, n_cols)); a.xq and a.xd set.  False on a failed launch. */
size_t act_bytes(int64_t n_tokens, int64_t n_cols)
{
    const size_t n_blocks = (size_t)(n_tokens * (n_cols / 32));
    return n_blocks * 32 + n_blocks * sizeof(float2);
}

bool quantize_into(cuda_backend *cb, const float *x, int64_t n_tokens, int64_t n_cols, void *act,
                   mm_args &a, const char *op)
{
    a.n_units = n_cols / 32;
    const size_t n_blocks = (size_t)(n_tokens * a.n_units), q_bytes = n_blocks * 32;
    a.xq = (const int4 *)act;
    a.xd = (const float2 *)((uint8_t *)act + q_bytes); /* q_bytes is a multiple of 32: aligned */
    quantize_kernel<<<cuda__grid((int64_t)n_blocks, 8), 256, 0, cuda__compute(cb)>>>(
        x, n_tokens, a.n_units, (int8_t *)act, (float2 *)((uint8_t *)act + q_bytes));
    return cuda__launched(cb, op);
}

/* Whether every expert's weights share the first one's type and shape (so that one launch per
 * product can run them all), with the activation between the products the same too. */
bool experts_uniform(const kern_ffn_expert *ex, int n_experts)
{
    const kern_ffn_expert *f = &ex[0];
    if (f->gate.type != f->up.type || f->gate.n_rows != f->up.n_rows ||
        f->gate.n_cols != f->up.n_cols || f->gate.row_bytes != f->up.row_bytes ||
        f->down.n_cols != f->gate.n_rows)
        return false;
    for (int i = 0; i < n_experts; i++) {
        const kern_ffn_expert *e = &ex[i];
        const kern_weight *w[3] = {&e->gate, &e->up, &e->down},
                          *v[3] = {&f->gate, &f->up, &f->down};
        for (int j = 0; j < 3; j++)
            if (w[j]->type != v[j]->type || w[j]->n_rows != v[j]->n_rows ||
                w[j]->n_cols != v[j]->n_cols || w[j]->row_bytes != v[j]->row_bytes || !w[j]->data ||
                (uintptr_t)w[j]->data % weight_align(w[j]->type) != 0)
                return false;
        if (e->glu != f->glu) return false;
    }
    return true;
}

/* Element-wise glu over rows [0, n_rows) of g (in place) and u. */
__global__ void experts_glu_kernel(kern_glu kind, float *g, const float *u, int64_t n)
{
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x)
        g[i] = cuda__glu(kind, g[i], u[i]);
}

/* The tokens of a bucket (an expert's rows) one pass of a grouped or routed launch's grid
 * covers: twice the mean bucket of its n entries (total rows in all), in whole tile groups (32
 * tokens), at most the largest; the blocks take a larger bucket in passes.  A grid for the
 * largest bucket left most blocks of a prefill empty: a routed launch's bound is every token of
 * the step (qwen3moe's 512 against buckets of about 32), and buckets are uneven. */
int64_t bucket_pass(int64_t largest, int64_t total, int n)
{
    const int64_t mean = (total + n - 1) / n, pass = (2 * mean + 31) / 32 * 32;
    return pass < largest ? pass : largest;
}

/* Queues the products of `n` entries with weights of w's type and shape, GROUP_MAX per launch;
 * a (the shared activations) is completed per launch with the tokens one pass covers. */
bool launch_groups(cuda_backend *cb, const kern_weight *w, mm_args a, const group_entry *e, int n,
                   const char *op)
{
    group_args g;
    a.row_bytes = w->row_bytes;
    a.n_rows = w->n_rows;
    a.n_cols = w->n_cols;
    for (int i0 = 0; i0 < n; i0 += GROUP_MAX) {
        const int m = n - i0 < GROUP_MAX ? n - i0 : GROUP_MAX;
        int64_t most = 0, total = 0;
        for (int i = 0; i < m; i++) {
            g.e[i] = e[i0 + i];
            most = e[i0 + i].n_tokens > most ? e[i0 + i].n_tokens : most;
            total += e[i0 + i].n_tokens;
        }
        a.n_tokens = bucket_pass(most, total, m);
        launch_any(w->type, a, launch_kind{&g, nullptr, m, cb->tensor_cores}, cuda__compute(cb));
        if (!cuda__launched(cb, op)) return false;
    }
    return true;
}

} // namespace

/* n_batch row blocks of one weight over their own activations (deepseek2's per-head absorbed
 * K and V: 128 products per layer on DeepSeek-V3) as one quantisation and one grouped launch
 * per GROUP_MAX blocks; each block runs the single matmul's tiles, so the bits are its own. */
void cuda__matmul_batched(kern_backend *b, const kern_weight *w, int64_t n_batch, const float *x,
                          float *y, int64_t n_tokens)
{
    cuda_backend *cb = cuda__of(b);
    if (n_tokens <= 0 || n_batch <= 0 || w->n_rows <= 0) return;
    if (!cuda__enter(cb, "matmul_batched") || !weight_ok(cb, w, "matmul_batched")) return;
    if (w->n_rows % n_batch != 0) {
        cuda__fail(cb, -EINVAL, "cuda matmul_batched: %lld rows in %lld equal blocks",
                   (long long)w->n_rows, (long long)n_batch);
        return;
    }
    kern_weight blk = kern_weight_block(w, n_batch, 0);
    /* a block's rows must start where the kernels can read them */
    if (w->n_cols == 0 || n_batch > INT32_MAX ||
        (blk.n_rows * w->row_bytes) % weight_align(w->type) != 0) {
        kern_matmul_batched_one_by_one(b, w, n_batch, x, y, n_tokens);
        return;
    }
    const int64_t rows = n_batch * n_tokens;
    mm_args a = {};
    if (!is_float_type((int)w->type)) {
        void *act = cuda__scratch_get(cb, &cb->act, act_bytes(rows, w->n_cols), "matmul_batched");
        if (!act || !quantize_into(cb, x, rows, w->n_cols, act, a, "matmul_batched (quantise x)"))
            return;
    } else {
        a.x = x;
    }
    group_entry *e = (group_entry *)malloc((size_t)n_batch * sizeof *e);
    if (!e) {
        cuda__fail(cb, -ENOMEM, "cuda matmul_batched: out of memory for %lld blocks",
                   (long long)n_batch);
        return;
    }
    for (int64_t i = 0; i < n_batch; i++)
        e[i] = {(const uint8_t *)kern_weight_block(w, n_batch, i).data, nullptr,
                y + i * n_tokens * blk.n_rows, i * n_tokens, n_tokens};
    launch_groups(cb, &blk, a, e, (int)n_batch, "matmul_batched");
    free(e);
}

/* The experts op in five launches whatever the number of experts: the shared rows of x
 * quantised once, every gate and up product in one grouped launch, the activation over all
 * rows, their quantisation, and every down product in another grouped launch.  Each product
 * is the single matmul's (same tiles, same order; the biases added as add_bias adds them), so
 * the result is kern_experts_one_by_one's bit for bit.  Experts of mixed types or shapes go
 * one by one. */
void cuda__experts(kern_backend *b, const kern_ffn_expert *ex, int n_experts, const float *x,
                   float *out, float *g, float *u)
{
    cuda_backend *cb = cuda__of(b);
    if (n_experts <= 0) return;
    if (!experts_uniform(ex, n_experts)) {
        kern_experts_one_by_one(b, ex, n_experts, x, out, g, u);
        return;
    }
    if (!cuda__enter(cb, "experts") || !weight_ok(cb, &ex[0].gate, "experts") ||
        !weight_ok(cb, &ex[0].down, "experts"))
        return;
    const kern_weight *gate = &ex[0].gate, *down = &ex[0].down;
    const int64_t ff = gate->n_rows, n_embd = gate->n_cols, dim = down->n_rows;
    int64_t lo = INT64_MAX, hi = 0, covered = 0;
    for (int i = 0; i < n_experts; i++) {
        if (ex[i].n_rows <= 0) continue;
        lo = ex[i].row0 < lo ? ex[i].row0 : lo;
        hi = ex[i].row0 + ex[i].n_rows > hi ? ex[i].row0 + ex[i].n_rows : hi;
        covered += ex[i].n_rows;
    }
    if (covered == 0 || dim <= 0) return;
    if (n_embd == 0 || ff <= 0) { /* empty dots: the one-by-one path's memsets */
        kern_experts_one_by_one(b, ex, n_experts, x, out, g, u);
        return;
    }
    const int64_t rows = hi - lo;
    const bool gate_q = !is_float_type((int)gate->type), down_q = !is_float_type((int)down->type);
    /* Both scratches before the first launch: growing one later would wait for the stream. */
    size_t act_need = 0;
    if (gate_q) act_need = act_bytes(rows, n_embd);
    if (down_q && act_bytes(rows, ff) > act_need) act_need = act_bytes(rows, ff);
    void *act = act_need ? cuda__scratch_get(cb, &cb->act, act_need, "experts") : nullptr;
    float *up =
        (float *)cuda__scratch_get(cb, &cb->moe_up, (size_t)(rows * ff) * sizeof(float), "experts");
    if ((act_need && !act) || !up) return;

    group_entry *e = (group_entry *)malloc((size_t)(2 * n_experts) * sizeof *e);
    if (!e) {
        cuda__fail(cb, -ENOMEM, "cuda experts: out of memory for %d experts", n_experts);
        return;
    }
    int n = 0;
    for (int i = 0; i < n_experts; i++)
        if (ex[i].n_rows > 0)
            e[n++] = {(const uint8_t *)ex[i].gate.data, ex[i].gate_bias, g + ex[i].row0 * ff,
                      ex[i].row0 - lo, ex[i].n_rows};
    for (int i = 0; i < n_experts; i++)
        if (ex[i].n_rows > 0)
            e[n++] = {(const uint8_t *)ex[i].up.data, ex[i].up_bias, up + (ex[i].row0 - lo) * ff,
                      ex[i].row0 - lo, ex[i].n_rows};

    mm_args a = {};
    bool ok = true;
    if (gate_q)
        ok = quantize_into(cb, x + lo * n_embd, rows, n_embd, act, a, "experts (quantise x)");
    else
        a.x = x + lo * n_embd;
    /* gate and up share type and shape: one set of launches runs both */
    ok = ok && launch_groups(cb, gate, a, e, n, "experts (gate and up)");
    if (ok) {
        experts_glu_kernel<<<cuda__grid(rows * ff, 256), 256, 0, cuda__compute(cb)>>>(
            ex[0].glu, g + lo * ff, up, rows * ff);
        ok = cuda__launched(cb, "experts (activation)");
    }
    n = 0;
    for (int i = 0; i < n_experts; i++)
        if (ex[i].n_rows > 0)
            e[n++] = {(const uint8_t *)ex[i].down.data, ex[i].down_bias, out + ex[i].row0 * dim,
                      ex[i].row0 - lo, ex[i].n_rows};
    a = {};
    if (ok && down_q)
        ok = quantize_into(cb, g + lo * ff, rows, ff, act, a, "experts (quantise h)");
    else
        a.x = g + lo * ff;
    ok = ok && launch_groups(cb, down, a, e, n, "experts (down)");
    free(e);
}

namespace
{

/* One routed launch of n_parts parts of the table (from column part0) over every plan row of
 * the activations in `a` (the quantised ones, or x for the float types). */
bool launch_routed(cuda_backend *cb, const kern_weight *w, mm_args a, routed_args &r, int part0,
                   int n_parts, int64_t n_tokens, int64_t rows, int n_slots, const char *op)
{
    a.row_bytes = w->row_bytes;
    a.n_rows = w->n_rows;
    a.n_cols = w->n_cols;
    a.n_tokens = bucket_pass(n_tokens, rows, n_slots); /* the tile shape for one pass */
    r.part0 = part0;
    r.n_slots = n_slots;
    launch_any(w->type, a, launch_kind{nullptr, &r, n_parts * n_slots, cb->tensor_cores},
               cuda__compute(cb));
    return cuda__launched(cb, op);
}

} // namespace

/* The experts op with the experts and their buckets found on the device: the same five
 * launches as cuda__experts (a grid row per used-expert slot, min(n_expert, rows) of them,
 * those past the plan's count returning at once), so no host round trip sits between the
 * router and the experts and a graph of the step stays valid when the table changes. */
void cuda__experts_routed(kern_backend *b, const kern_expert_table *t, const kern_moe_plan *plan,
                          int64_t n_tokens, int k, const float *x, float *out, float *g, float *u)
{
    (void)u; /* every bucket's up products go to moe_up at once */
    cuda_backend *cb = cuda__of(b);
    if (n_tokens <= 0 || k <= 0 || t->n_expert <= 0) return;
    if (!cuda__enter(cb, "experts_routed") || !weight_ok(cb, &t->gate, "experts_routed", false) ||
        !weight_ok(cb, &t->up, "experts_routed", false) ||
        !weight_ok(cb, &t->down, "experts_routed", false))
        return;
    const int64_t ff = t->gate.n_rows, n_embd = t->gate.n_cols, dim = t->down.n_rows;
    if (t->up.n_rows != ff || t->up.n_cols != n_embd || t->down.n_cols != ff || ff <= 0 ||
        n_embd <= 0 || dim <= 0) {
        cuda__fail(cb, -EINVAL,
                   "cuda experts_routed: gate %lld x %lld, up %lld x %lld, down %lld x %lld do "
                   "not make an FFN",
                   (long long)t->gate.n_rows, (long long)t->gate.n_cols, (long long)t->up.n_rows,
                   (long long)t->up.n_cols, (long long)t->down.n_rows, (long long)t->down.n_cols);
        return;
    }
    const int64_t rows = n_tokens * k;
    const int n_slots = (int)(rows < t->n_expert ? rows : t->n_expert);
    const bool in_q = !is_float_type((int)t->gate.type) || !is_float_type((int)t->up.type),
               down_q = !is_float_type((int)t->down.type);
    size_t act_need = 0;
    if (in_q) act_need = act_bytes(rows, n_embd);
    if (down_q && act_bytes(rows, ff) > act_need) act_need = act_bytes(rows, ff);
    void *act = act_need ? cuda__scratch_get(cb, &cb->act, act_need, "experts_routed") : nullptr;
    float *up = (float *)cuda__scratch_get(cb, &cb->moe_up, (size_t)(rows * ff) * sizeof(float),
                                           "experts_routed");
    if ((act_need && !act) || !up) return;

    routed_args r = {};
    r.used = plan->used;
    r.bucket_start = plan->bucket_start;
    r.parts = t->parts;
    mm_args a = {};
    a.x = x;
    if (in_q && !quantize_into(cb, x, rows, n_embd, act, a, "experts_routed (quantise x)")) return;
    const bool fused = t->gate.type == t->up.type && t->gate.row_bytes == t->up.row_bytes;
    r.y[0] = g, r.y[1] = up;
    r.bias[0] = t->gate_bias, r.bias[1] = t->up_bias;
    if (fused) {
        if (!launch_routed(cb, &t->gate, a, r, 0, 2, n_tokens, rows, n_slots,
                           "experts_routed (gate and up)"))
            return;
    } else {
        if (!launch_routed(cb, &t->gate, a, r, 0, 1, n_tokens, rows, n_slots,
                           "experts_routed (gate)"))
            return;
        r.y[0] = up, r.bias[0] = t->up_bias;
        if (!launch_routed(cb, &t->up, a, r, 1, 1, n_tokens, rows, n_slots, "experts_routed (up)"))
            return;
    }
    experts_glu_kernel<<<cuda__grid(rows * ff, 256), 256, 0, cuda__compute(cb)>>>(t->glu, g, up,
                                                                                  rows * ff);
    if (!cuda__launched(cb, "experts_routed (activation)")) return;
    a = {};
    a.x = g;
    if (down_q && !quantize_into(cb, g, rows, ff, act, a, "experts_routed (quantise h)")) return;
    r.y[0] = out, r.bias[0] = t->down_bias;
    r.y[1] = nullptr, r.bias[1] = nullptr;
    launch_routed(cb, &t->down, a, r, 2, 1, n_tokens, rows, n_slots, "experts_routed (down)");
}

void cuda__matmul(kern_backend *b, const kern_weight *w, const float *x, float *y, int64_t n_tokens)
{
    cuda_backend *cb = cuda__of(b);
    if (n_tokens <= 0 || w->n_rows <= 0) return;
    const auto left = cb->act_of; /* cuda__enter forgets it */
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
        /* the previous matmul quantised this very x (nothing ran between): the same bytes */
        if (left.x != x || left.n_tokens != n_tokens || left.n_cols != w->n_cols ||
            left.act != act) {
            quantize_kernel<<<cuda__grid((int64_t)n_blocks, 8), 256, 0, stream>>>(
                x, n_tokens, a.n_units, (int8_t *)act, (float2 *)(act + q_bytes));
            if (!cuda__launched(cb, "matmul (quantise activations)")) return;
        }
        /* kept unless the product writes over x */
        const uint8_t *x0 = (const uint8_t *)x, *y0 = (const uint8_t *)y;
        const size_t x_len = (size_t)(n_tokens * w->n_cols) * sizeof *x,
                     y_len = (size_t)(n_tokens * w->n_rows) * sizeof *y;
        if (y0 + y_len <= x0 || x0 + x_len <= y0) cb->act_of = {x, n_tokens, w->n_cols, act};
    }
    launch_any(w->type, a, launch_kind{nullptr, nullptr, 0, cb->tensor_cores}, stream);
    if (!cuda__launched(cb, "matmul")) cb->act_of.x = nullptr;
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

/* ---- the block readers on the host (cuda.h) ---------------------------------------------- */

namespace
{

/* Unit u of a row as the matmul weighs it (integer_form: da * scale * q + db * min, in
 * double) or as get_rows writes it; false for the float types. */
template <int TYPE> bool unit_on_host(const uint8_t *row, int64_t u, bool integer_form, float *out)
{
    if constexpr (is_float_type(TYPE)) {
        return false;
    } else {
        if (!integer_form) {
            for (int e = 0; e < 32; e++)
                out[e] = dequant<TYPE>(row, u, e);
            return true;
        }
        unit q;
        load_unit<TYPE>(row, (int)u, q);
        for (int e = 0; e < 32; e++) {
            const int w = (int8_t)((uint32_t)q.w[e / 4] >> (8 * (e % 4)));
            const int sc = e < 16 ? q.sc_lo : q.sc_hi, bm = e < 16 ? q.bmul : q.bmul_hi;
            out[e] = (float)((double)q.da * sc * w + (double)q.db * bm);
        }
        return true;
    }
}

bool unit_on_host_any(uint32_t type, const void *row, int64_t u, bool integer_form, float *out)
{
    switch (type) {
#define CASE(T)                                                                                    \
    case KERN_T_##T:                                                                               \
        return unit_on_host<KERN_T_##T>((const uint8_t *)row, u, integer_form, out);
        FOR_EACH_TYPE(CASE)
#undef CASE
    default:
        return false;
    }
}

} // namespace

extern "C" bool kern_cuda_unit_values(uint32_t type, const void *row, int64_t u, float out[32])
{
    return unit_on_host_any(type, row, u, true, out);
}

extern "C" bool kern_cuda_dequant_values(uint32_t type, const void *row, int64_t u, float out[32])
{
    return unit_on_host_any(type, row, u, false, out);
}

/* ---- the batch kernels on the host, and their check at open --------------------------------- */

namespace
{

/* x as quantize_kernel writes it: per block of 32, scale max|x| / 127 and the integer sum. */
void quantize_on_host(const float *x, int64_t n_blocks, int8_t *xq, float2 *xd)
{
    for (int64_t i = 0; i < n_blocks; i++) {
        const float *v = x + i * 32;
        float amax = 0.0f;
        for (int l = 0; l < 32; l++)
            amax = fmaxf(amax, fabsf(v[l]));
        const float d = amax / 127.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
        int sum = 0;
        for (int l = 0; l < 32; l++) {
            int q = (int)roundf(v[l] * id);
            q = q < -127 ? -127 : q > 127 ? 127 : q;
            xq[i * 32 + l] = (int8_t)q;
            sum += q;
        }
        xd[i] = make_float2(d, (float)sum);
    }
}

/* 32 partial sums added as cuda__warp_sum adds 32 lanes' values (as lane 0 sees it); s is
 * overwritten. */
float butterfly_sum(float (&s)[32])
{
    for (int w = 16; w > 0; w >>= 1) {
        for (int j = 0; j < w; j++)
            s[j] = add_rn(s[j], s[j + w]);
    }
    return s[0];
}

/* matmul_quant's arithmetic, output by output: lane l's units l, l + 32, ... in order, then
 * the lanes' butterfly. */
template <int TYPE> void matmul_quant_on_host(const mm_args &a)
{
    for (int64_t t = 0; t < a.n_tokens; t++)
        for (int64_t r = 0; r < a.n_rows; r++) {
            float s[32];
            for (int l = 0; l < 32; l++) {
                float acc = 0.0f;
                for (int64_t u = l; u < a.n_units; u += 32) {
                    unit q;
                    load_unit<TYPE>(a.w + (size_t)r * a.row_bytes, (int)u, q);
                    const int64_t xi = t * a.n_units + u;
                    const int4 x0 = a.xq[2 * xi], x1 = a.xq[2 * xi + 1];
                    const int xs[8] = {x0.x, x0.y, x0.z, x0.w, x1.x, x1.y, x1.z, x1.w};
                    int lo = 0, hi = 0, x_lo = 0;
                    for (int k = 0; k < 4; k++) {
                        lo = dp4a_hd(q.w[k], xs[k], lo);
                        hi = dp4a_hd(q.w[k + 4], xs[k + 4], hi);
                        x_lo = dp4a_hd(xs[k], 0x01010101, x_lo);
                    }
                    const float2 xd = a.xd[xi];
                    acc = fma_rn(xd.x, unit_term<TYPE>(unit_factors(q), lo, hi, xd.y, x_lo), acc);
                }
                s[l] = acc;
            }
            const float sum = butterfly_sum(s);
            a.y[t * a.n_rows + r] = a.bias ? add_rn(sum, a.bias[r]) : sum;
        }
}

/* mma.m16n8k16 (K = 16) or m16n8k32 (K = 32) with .s8 operands over one warp's fragments, as
 * the PTX ISA lays them out (mma_frags_a's comment): D = A B, A 16 x K, B K x 8.  The k16 form
 * takes registers a0, a1 and b0. */
template <int K> void mma_on_host(const int (&fa)[32][4], const int (&fb)[32][2], int (&d)[32][4])
{
    int A[16][K], B[K][8];
    for (int lane = 0; lane < 32; lane++) {
        const int g = lane >> 2, k = lane & 3;
        for (int half = 0; half < K / 16; half++)
            for (int e = 0; e < 4; e++) {
                const int col = 16 * half + 4 * k + e;
                A[g][col] = (int8_t)((uint32_t)fa[lane][2 * half] >> (8 * e));
                A[g + 8][col] = (int8_t)((uint32_t)fa[lane][2 * half + 1] >> (8 * e));
                B[col][g] = (int8_t)((uint32_t)fb[lane][half] >> (8 * e));
            }
    }
    for (int lane = 0; lane < 32; lane++)
        for (int i = 0; i < 4; i++) {
            const int row = mma_row(lane, i), col = mma_token(lane, i);
            int sum = 0;
            for (int kk = 0; kk < K; kk++)
                sum += A[row][kk] * B[kk][col];
            d[lane][i] = sum;
        }
}

/* A warp's state on the host: its stage and its 32 lanes' sums. */
struct mma_warp_on_host {
    mma_stage st;
    mma_lane lanes[32];
};

/* matmul_quant_mma, its warps one after another and each step lane by lane. */
template <int TYPE> void matmul_quant_mma_on_host(const mm_args &a, mma_warp_on_host &w)
{
    mm_args b = a;
    b.n_tiles_per_group = (a.n_tokens + MMA_TOKENS - 1) / MMA_TOKENS;
    const int64_t groups = (a.n_rows + MMA_ROWS * MMA_WARPS - 1) / (MMA_ROWS * MMA_WARPS);
    for (int64_t block = 0; block < groups * b.n_tiles_per_group; block++)
        for (int warp = 0; warp < MMA_WARPS; warp++) {
            mma_tile t;
            if (!mma_tile_of(b, block, warp, t)) continue;
            for (int lane = 0; lane < 32; lane++)
                w.lanes[lane] = mma_lane{};
            for (int s = 0; s < 16; s++) {
                for (int64_t u = mma_pair_slot(s); u < b.n_units; u += 32) {
                    for (int lane = 0; lane < 32; lane++)
                        mma_stage_chunk<TYPE>(b, t, u, lane, w.st);
                    for (int c = 0; c < 2 && u + 16 * c < b.n_units; c++)
                        for (int nt = 0; nt < 2; nt++) {
                            int fa[32][4], fb[32][2], lo[32][4], hi[32][4] = {};
                            for (int lane = 0; lane < 32; lane++) {
                                mma_frags_a(w.st, c, lane, fa[lane]);
                                mma_frags_b(w.st, c, nt, lane, fb[lane]);
                            }
                            if (two_scales(TYPE)) {
                                int fa_hi[32][4], fb_hi[32][2];
                                for (int lane = 0; lane < 32; lane++) {
                                    fa_hi[lane][0] = fa[lane][2], fa_hi[lane][1] = fa[lane][3];
                                    fb_hi[lane][0] = fb[lane][1];
                                }
                                mma_on_host<16>(fa, fb, lo);
                                mma_on_host<16>(fa_hi, fb_hi, hi);
                            } else {
                                mma_on_host<32>(fa, fb, lo);
                            }
                            for (int lane = 0; lane < 32; lane++)
                                mma_accumulate<TYPE>(w.st, c, nt, lane, lo[lane], hi[lane],
                                                     w.lanes[lane].acc);
                        }
                }
                for (int lane = 0; lane < 32; lane++)
                    mma_pair_done(b, t, s, lane, w.lanes[lane].acc, w.lanes[lane].stack);
            }
        }
}

template <int TYPE> bool matmul_on_host(const mm_args &a, bool tensor_cores)
{
    if constexpr (is_float_type(TYPE)) {
        return false;
    } else {
        if (!tensor_cores) {
            matmul_quant_on_host<TYPE>(a);
            return true;
        }
        mma_warp_on_host *w = new (std::nothrow) mma_warp_on_host();
        if (!w) return false;
        matmul_quant_mma_on_host<TYPE>(a, *w);
        delete w;
        return true;
    }
}

bool matmul_on_host_any(uint32_t type, const mm_args &a, bool tensor_cores)
{
    switch (type) {
#define CASE(T)                                                                                    \
    case KERN_T_##T:                                                                               \
        return matmul_on_host<KERN_T_##T>(a, tensor_cores);
        FOR_EACH_TYPE(CASE)
#undef CASE
    default:
        return false;
    }
}

uint32_t check_random(uint32_t &s)
{
    s ^= s << 13, s ^= s >> 17, s ^= s << 5;
    return s;
}

/* Random blocks whose half-precision scales are finite, of either sign (random bits would make
 * some of them infinite or NaN, and a NaN row compares no bits). */
void check_blocks(uint32_t type, uint8_t *w, int64_t n_blocks, size_t block_bytes, uint32_t &seed)
{
    for (size_t i = 0; i < (size_t)n_blocks * block_bytes; i++)
        w[i] = (uint8_t)(check_random(seed) >> 24);
    auto half = [&seed]() { return (kern_half)(0x1c00u | (check_random(seed) & 0x83ffu)); };
    for (int64_t b = 0; b < n_blocks; b++) {
        uint8_t *p = w + (size_t)b * block_bytes;
        if (type == KERN_T_Q8_0) {
            ((block_q8_0 *)p)->d = half();
        } else if (type == KERN_T_Q4_K) {
            ((block_q4_K *)p)->d = half(), ((block_q4_K *)p)->dmin = half();
        } else if (type == KERN_T_Q6_K) {
            ((block_q6_K *)p)->d = half();
        } else if (type == KERN_T_Q2_K) {
            ((block_q2_K *)p)->d = half(), ((block_q2_K *)p)->dmin = half();
        }
    }
}

} // namespace

int cuda__tensor_core_check(cuda_backend *cb, char *why, size_t why_size)
{
    static const uint32_t types[] = {KERN_T_Q8_0, KERN_T_Q4_K, KERN_T_Q6_K, KERN_T_Q2_K};
    /* rows and tokens that leave partial tiles; 24 units, so that lanes 24..31 have none, and
     * 40, so that lanes 0..7 carry a second one */
    static const int64_t col_counts[] = {768, 1280};
    const int64_t n_rows = 37, max_cols = 1280, n_tokens = 21;
    const size_t w_max = (size_t)n_rows * (size_t)(max_cols / 32) * sizeof(block_q8_0),
                 x_bytes = (size_t)(n_tokens * max_cols) * sizeof(float),
                 a_bytes = act_bytes(n_tokens, max_cols),
                 y_bytes = (size_t)(n_tokens * n_rows) * sizeof(float);
    uint8_t *host = (uint8_t *)malloc(w_max + x_bytes + 2 * y_bytes);
    uint8_t *dev = nullptr;
    if (!host) {
        snprintf(why, why_size, "out of memory");
        return -ENOMEM;
    }
    cudaStream_t s = cuda__compute(cb);
    cudaError_t rc = cudaMalloc((void **)&dev, w_max + x_bytes + a_bytes + 2 * y_bytes);
    const char *call = "cudaMalloc";
    uint32_t seed = 0x9e3779b9u;
    float *x = (float *)(host + w_max),
          *y[2] = {x + n_tokens * max_cols, x + n_tokens * max_cols + n_tokens * n_rows};
    for (int64_t i = 0; i < n_tokens * max_cols; i++)
        x[i] = (float)((int32_t)check_random(seed)) * 0x1p-31f;
    int result = 0;
    for (size_t ci = 0; ci < sizeof col_counts / sizeof col_counts[0] && !result; ci++) {
        const int64_t n_cols = col_counts[ci], n_units = n_cols / 32;
        if (rc == cudaSuccess) {
            call = "cudaMemcpyAsync";
            rc = cudaMemcpyAsync(dev + w_max, x, (size_t)(n_tokens * n_cols) * sizeof(float),
                                 cudaMemcpyHostToDevice, s);
        }
        for (size_t ti = 0; ti < sizeof types / sizeof types[0] && rc == cudaSuccess && !result;
             ti++) {
            const uint32_t type = types[ti];
            int64_t block_elems;
            size_t block_bytes;
            type_geometry(type, &block_elems, &block_bytes);
            const int64_t blocks_per_row = n_cols / block_elems;
            check_blocks(type, host, n_rows * blocks_per_row, block_bytes, seed);
            call = "cudaMemcpyAsync";
            rc = cudaMemcpyAsync(dev, host, (size_t)(n_rows * blocks_per_row) * block_bytes,
                                 cudaMemcpyHostToDevice, s);
            mm_args a = {};
            a.w = dev;
            a.row_bytes = (size_t)blocks_per_row * block_bytes;
            a.n_rows = n_rows;
            a.n_cols = n_cols;
            a.n_units = n_units;
            a.n_tokens = n_tokens;
            a.xq = (const int4 *)(dev + w_max + x_bytes);
            a.xd = (const float2 *)(dev + w_max + x_bytes + (size_t)(n_tokens * n_units) * 32);
            float *yd = (float *)(dev + w_max + x_bytes + a_bytes);
            if (rc == cudaSuccess) {
                call = "quantize_kernel";
                quantize_kernel<<<cuda__grid(n_tokens * n_units, 8), 256, 0, s>>>(
                    (const float *)(dev + w_max), n_tokens, n_units, (int8_t *)a.xq,
                    (float2 *)a.xd);
                rc = cudaGetLastError();
            }
            for (int k = 0; k < 2 && rc == cudaSuccess; k++) {
                a.y = yd + k * n_tokens * n_rows;
                call = k ? "the tensor-core kernel" : "the dp4a kernel";
                launch_any(type, a, launch_kind{nullptr, nullptr, 0, k == 1}, s);
                rc = cudaGetLastError();
            }
            if (rc == cudaSuccess) {
                call = "cudaMemcpyAsync (results)";
                rc = cudaMemcpyAsync(y[0], yd, 2 * y_bytes, cudaMemcpyDeviceToHost, s);
            }
            if (rc == cudaSuccess) {
                call = "cudaStreamSynchronize";
                rc = cudaStreamSynchronize(s);
            }
            for (int64_t i = 0; rc == cudaSuccess && i < n_tokens * n_rows; i++)
                if (memcmp(&y[0][i], &y[1][i], sizeof(float)) != 0 &&
                    !(isnan(y[0][i]) && isnan(y[1][i]))) {
                    snprintf(why, why_size,
                             "%s, %lld columns, token %lld row %lld: the tensor-core kernel "
                             "gives %.9g, the dp4a kernel %.9g",
                             kern_type_info(type)->name, (long long)n_cols, (long long)(i / n_rows),
                             (long long)(i % n_rows), y[1][i], y[0][i]);
                    result = 1;
                    break;
                }
        }
    }
    if (rc != cudaSuccess) {
        snprintf(why, why_size, "%s: %s", call, cudaGetErrorString(rc));
        result = cuda__errno(rc);
    }
    if (dev) {
        const cudaError_t frc = cudaFree(dev);
        if (frc != cudaSuccess && result >= 0) {
            snprintf(why, why_size, "cudaFree: %s", cudaGetErrorString(frc));
            result = cuda__errno(frc);
        }
    }
    free(host);
    return result;
}

extern "C" bool kern_cuda_matmul_on_host(uint32_t type, const void *w, size_t row_bytes,
                                         int64_t n_rows, int64_t n_cols, const float *x,
                                         int64_t n_tokens, const float *bias, bool tensor_cores,
                                         float *y)
{
    int64_t block_elems;
    size_t block_bytes;
    if (!type_geometry(type, &block_elems, &block_bytes) || is_float_type((int)type) ||
        n_cols % block_elems != 0 || n_rows <= 0 || n_tokens <= 0)
        return false;
    mm_args a = {};
    a.w = (const uint8_t *)w;
    a.row_bytes = row_bytes;
    a.n_rows = n_rows;
    a.n_cols = n_cols;
    a.n_units = n_cols / 32;
    a.n_tokens = n_tokens;
    a.bias = bias;
    a.y = y;
    const int64_t n_blocks = n_tokens * a.n_units;
    int4 *xq = (int4 *)malloc((size_t)n_blocks * 32 + 1);
    float2 *xd = (float2 *)malloc((size_t)n_blocks * sizeof *xd + 1);
    bool ok = xq && xd;
    if (ok) {
        quantize_on_host(x, n_blocks, (int8_t *)xq, xd);
        a.xq = xq;
        a.xd = xd;
        ok = matmul_on_host_any(type, a, tensor_cores);
    }
    free(xq);
    free(xd);
    return ok;
}
