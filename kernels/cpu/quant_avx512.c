/*
 * AVX-512 VNNI kernels for the quantised types (compiled with AVX-512 F/BW/VL/DQ/VNNI + F16C;
 * the type table offers them at KERN_ISA_AVX512_VNNI only, so a CPU without VNNI never runs
 * them).
 *
 * Why: the AVX2 integer kernels spend most of their instructions on maddubs + madd + the sign
 * trick, and are compute-bound below the memory stream.  VNNI gives vpdpbusd (four u8 x s8
 * products summed into an int32 lane) and vpdpwssd (two int16 products added to an int32 lane),
 * and AVX-512 BW/VL gives byte masks (the sign trick in one masked subtract) and ternary logic.
 *
 * Width: every kernel uses 256-bit vectors (the EVEX forms, AVX-512 VL).  On Zen 4, the CPU
 * these were tuned on, a 512-bit operation costs two 256-bit ones, and the 512-bit versions
 * (written first) were slower: pairing blocks or sub-blocks in one register needs broadcasts or
 * inserts that 256 bits do not.  What limits the K-quant loops is the two vector multiply pipes,
 * so the kernels minimise multiplies: per 64 weights, two vpdpbusd, a lossless vpackssdw of their
 * sums to int16 and one vpdpwssd applying the sub-block scales (AVX2: two vpmaddubsw, two
 * vpmaddwd and adds).
 *
 * Exactness: every integer sum is exact (the int16 ranges that vpackssdw and vpdpwssd rely on are
 * stated where they are used); per-block scale products are the same float products as in the
 * scalar reference.  Only the order in which float lanes are summed differs from the reference.
 *
 * Batch invariance: each kernel is written once as an always-inlined function over nt tokens
 * (nt = 1 for dot, 4 for dot_multi).  The weight block is unpacked once and then, per token,
 * the same instruction sequence runs on that token's activations into that token's own
 * accumulators, so dot_multi is bit-identical per token to dot (the tests check it).
 *
 * Measured on this machine (AMD EPYC, Zen 4; tools/bench_kernels.c: one thread, in L2, 4096
 * columns, best of 50, GB/s of weights, AVX2 -> this file): Q8_0 32 -> 38, Q4_0 12.7 -> 16.9,
 * Q4_1 11.7 -> 17.6, Q5_0 11.9 -> 18.9, Q5_1 11.2 -> 18.2, Q4_K 21.5 -> 28.8,
 * Q5_K 20.2 -> 28.5, Q6_K 24.7 -> 37; four tokens at once (dot_multi) 1.5-2.8x the AVX2 rate.
 * Later, on a 2-core AVX-512 VNNI VM (shared with other work, so a lower bound): IQ4_NL 16 ->
 * 19.8, MXFP4 16 -> 17, IQ4_XS 21 -> 19 (one token; 8 tokens: IQ4_NL 16 -> 33, MXFP4 16 -> 30,
 * IQ4_XS 21 -> 39).
 */
#include "kernels/cpu/avx2_util.h"
#include "kernels/cpu/cpu_internal.h"
#include "kernels/cpu/quant_blocks.h"
#include "kernels/kernels.h"

#include <immintrin.h>
#include <stdbool.h>
#include <string.h>

#define PREFETCH_BYTES 2048 /* 1024 streamed Q4_K from DRAM ~7% slower here */
#define NT 4 /* tokens per pass over a row (8 measured slower for Q4_K: the accumulators spill) */
#define ALWAYS_INLINE static inline __attribute__((always_inline))

static inline float h2f(kern_half h)
{
    return _cvtsh_ss(h);
}

static inline __m256i load256(const void *p)
{
    return _mm256_loadu_si256((const __m256i *)p);
}

static inline const void *token_x(const void *x, size_t stride, int t)
{
    return (const uint8_t *)x + (size_t)t * stride;
}

/* Hardware prefetchers stop at page boundaries; rows are often a page or two long.  The
 * builtin, not _mm_prefetch: GCC 12 silently drops _mm_prefetch in these deeply inlined loops
 * (its hint argument stops being a constant expression). */
static inline void prefetch_ahead(const void *p, size_t bytes)
{
    for (size_t off = 0; off < bytes; off += 64)
        __builtin_prefetch((const char *)p + PREFETCH_BYTES + off, 0, 3);
}

/* ---- 32-element blocks: Q8_0, Q4_0 and Q5_0 against Q8_0 activations
 * --------------------------------
 *
 * Four blocks per step (their f16 scales converted together), one block per vector.
 * Signed weights use the sign trick once per weight block: |w| as the unsigned operand, and
 * each token's activations negated where w < 0 (one masked subtract).  Q8_0 activations are in
 * [-127, 127], so the negation never overflows; |w| = 128 (w = -128) reads correctly as an
 * unsigned byte.
 */

typedef struct quad_w {
    __m256i ax[4];    /* |w| of each block */
    __mmask32 neg[4]; /* where w < 0 */
    __m128 d;         /* the four weight scales (0 for blocks past the row's end) */
} quad_w;

/* nblk (1..4) f16 scales at p, p + stride, ... as floats; 0 for the rest.  (Gathering them
 * with vector loads and a word permute measured slower here than this scalar assembly, which
 * runs on the integer ALUs beside the vector work.) */
ALWAYS_INLINE __m128 load_scales4(const uint8_t *p, size_t stride, int nblk)
{
    uint64_t pk = 0;
    for (int b = 0; b < nblk; b++) {
        uint16_t h;
        memcpy(&h, p + (size_t)b * stride, sizeof h);
        pk |= (uint64_t)h << (16 * b);
    }
    return _mm_cvtph_ps(_mm_cvtsi64_si128((long long)pk));
}

ALWAYS_INLINE void quad_w_q8_0(const block_q8_0 *w, int nblk, quad_w *q)
{
    for (int b = 0; b < nblk; b++) {
        __m256i v = load256(w[b].qs);
        q->ax[b] = _mm256_abs_epi8(v);
        q->neg[b] = _mm256_movepi8_mask(v);
    }
    q->d = load_scales4((const uint8_t *)&w[0].d, sizeof *w, nblk);
}

ALWAYS_INLINE void quad_w_q4_0(const block_q4_0 *w, int nblk, quad_w *q)
{
    const __m256i absdiff = _mm256_setr_epi8(8, 7, 6, 5, 4, 3, 2, 1, 0, 1, 2, 3, 4, 5, 6, 7, 8, 7,
                                             6, 5, 4, 3, 2, 1, 0, 1, 2, 3, 4, 5, 6, 7);
    for (int b = 0; b < nblk; b++) {
        /* low nibbles (elements 0-15) then high nibbles (16-31): the activations' order */
        __m128i raw = _mm_loadu_si128((const __m128i *)w[b].qs);
        __m256i nib = _mm256_and_si256(
            _mm256_inserti128_si256(_mm256_castsi128_si256(raw), _mm_srli_epi16(raw, 4), 1),
            _mm256_set1_epi8(0x0F));
        q->ax[b] = _mm256_shuffle_epi8(absdiff, nib);                 /* |nib - 8| */
        q->neg[b] = _mm256_testn_epi8_mask(nib, _mm256_set1_epi8(8)); /* nib < 8 */
    }
    q->d = load_scales4((const uint8_t *)&w[0].d, sizeof *w, nblk);
}

ALWAYS_INLINE void quad_w_q5_0(const block_q5_0 *w, int nblk, quad_w *q)
{
    for (int b = 0; b < nblk; b++) {
        __m128i raw = _mm_loadu_si128((const __m128i *)w[b].qs);
        __m256i nib = _mm256_and_si256(
            _mm256_inserti128_si256(_mm256_castsi128_si256(raw), _mm_srli_epi16(raw, 4), 1),
            _mm256_set1_epi8(0x0F));
        /* bit j of qh is the fifth bit of element j: w = nib + 16 * bit - 16, so |w| is nib
         * where the bit is set and 16 - nib where it is clear (and then w < 0) */
        uint32_t qh;
        memcpy(&qh, w[b].qh, sizeof qh);
        __mmask32 high = _cvtu32_mask32(qh);
        q->ax[b] = _mm256_mask_mov_epi8(_mm256_sub_epi8(_mm256_set1_epi8(16), nib), high, nib);
        q->neg[b] = _knot_mask32(high);
    }
    q->d = load_scales4((const uint8_t *)&w[0].d, sizeof *w, nblk);
}

/* IQ4_NL and MXFP4: the nibbles index a table of int8 (one byte shuffle), whose values are
 * all in [-127, 127]. */
ALWAYS_INLINE void quad_w_table(const uint8_t *qs, size_t stride, const int8_t table16[16],
                                int nblk, quad_w *q)
{
    __m128i t128 = _mm_loadu_si128((const __m128i *)table16);
    __m256i table = _mm256_inserti128_si256(_mm256_castsi128_si256(t128), t128, 1);
    for (int b = 0; b < nblk; b++) {
        __m128i raw = _mm_loadu_si128((const __m128i *)(qs + (size_t)b * stride));
        __m256i nib = _mm256_and_si256(
            _mm256_inserti128_si256(_mm256_castsi128_si256(raw), _mm_srli_epi16(raw, 4), 1),
            _mm256_set1_epi8(0x0F));
        __m256i v = _mm256_shuffle_epi8(table, nib);
        q->ax[b] = _mm256_abs_epi8(v);
        q->neg[b] = _mm256_movepi8_mask(v);
    }
}

ALWAYS_INLINE void quad_w_iq4_nl(const block_iq4_nl *w, int nblk, quad_w *q)
{
    quad_w_table(w[0].qs, sizeof *w, kern__kvalues_iq4nl, nblk, q);
    q->d = load_scales4((const uint8_t *)&w[0].d, sizeof *w, nblk);
}

ALWAYS_INLINE void quad_w_mxfp4(const block_mxfp4 *w, int nblk, quad_w *q)
{
    quad_w_table(w[0].qs, sizeof *w, kern__kvalues_mxfp4, nblk, q);
    /* kern__e8m0_to_f32_half on four lanes (a scalar loop through memory measured half the
     * speed); blocks past the row's end get e = 0 and a zero scale */
    uint32_t pk = 0;
    for (int b = 0; b < nblk; b++)
        pk |= (uint32_t)w[b].e << (8 * b);
    __m128i e = _mm_cvtepu8_epi32(_mm_cvtsi32_si128((int)pk));
    __m128i normal = _mm_slli_epi32(_mm_sub_epi32(e, _mm_set1_epi32(1)), 23);
    __m128i subnormal = _mm_sllv_epi32(_mm_set1_epi32(0x00200000), e);
    __mmask8 small = _mm_cmplt_epu32_mask(e, _mm_set1_epi32(2));
    __m128i bits = _mm_mask_mov_epi32(normal, small, subnormal);
    q->d = _mm_maskz_mov_ps((__mmask8)((1u << nblk) - 1), _mm_castsi128_ps(bits));
}

/* One block per 256-bit vector (cheaper than pairing blocks in 512 bits on Zen 4, where a
 * 512-bit operation costs two 256-bit ones and the pairing needs inserts); blocks alternate
 * between two accumulators so that the loop does not wait on the FMA latency. */
ALWAYS_INLINE void quad_token(const quad_w *q, const block_q8_0 *y, int nblk, __m256 *acc0,
                              __m256 *acc1)
{
    /* per block: d_w * d_x, as the scalar reference forms it */
    __m256 d = _mm256_castps128_ps256(
        _mm_mul_ps(q->d, load_scales4((const uint8_t *)&y[0].d, sizeof *y, nblk)));
    for (int b = 0; b < nblk; b++) {
        __m256i yv = load256(y[b].qs);
        __m256i sy = _mm256_mask_sub_epi8(yv, q->neg[b], _mm256_setzero_si256(), yv);
        __m256i p = _mm256_dpbusd_epi32(_mm256_setzero_si256(), q->ax[b], sy);
        __m256 db = _mm256_permutevar8x32_ps(d, _mm256_set1_epi32(b));
        __m256 *acc = b & 1 ? acc1 : acc0;
        *acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), db, *acc);
    }
}

ALWAYS_INLINE void quad_step(uint32_t type, const uint8_t *w, int64_t i, int nblk,
                             const block_q8_0 *const *y, int nt, __m256 *acc0, __m256 *acc1)
{
    quad_w q;
    if (type == KERN_T_Q8_0) {
        const block_q8_0 *b = (const block_q8_0 *)w + i;
        prefetch_ahead(b, 4 * sizeof *b);
        quad_w_q8_0(b, nblk, &q);
    } else if (type == KERN_T_Q4_0) {
        const block_q4_0 *b = (const block_q4_0 *)w + i;
        prefetch_ahead(b, 4 * sizeof *b);
        quad_w_q4_0(b, nblk, &q);
    } else if (type == KERN_T_Q5_0) {
        const block_q5_0 *b = (const block_q5_0 *)w + i;
        prefetch_ahead(b, 4 * sizeof *b);
        quad_w_q5_0(b, nblk, &q);
    } else if (type == KERN_T_IQ4_NL) {
        const block_iq4_nl *b = (const block_iq4_nl *)w + i;
        prefetch_ahead(b, 4 * sizeof *b);
        quad_w_iq4_nl(b, nblk, &q);
    } else {
        const block_mxfp4 *b = (const block_mxfp4 *)w + i;
        prefetch_ahead(b, 4 * sizeof *b);
        quad_w_mxfp4(b, nblk, &q);
    }
#pragma GCC unroll 4
    for (int t = 0; t < nt; t++)
        quad_token(&q, y[t] + i, nblk, &acc0[t], &acc1[t]);
}

ALWAYS_INLINE void rows_s32(uint32_t type, const void *row, const void *x, size_t stride, int nt,
                            int64_t n, float *out)
{
    const block_q8_0 *y[NT];
    __m256 acc0[NT], acc1[NT];
    for (int t = 0; t < nt; t++) {
        y[t] = token_x(x, stride, t);
        acc0[t] = acc1[t] = _mm256_setzero_ps();
    }
    int64_t nb = n / 32, i = 0;
    for (; i + 4 <= nb; i += 4)
        quad_step(type, row, i, 4, y, nt, acc0, acc1);
    if (i < nb) quad_step(type, row, i, (int)(nb - i), y, nt, acc0, acc1);
    for (int t = 0; t < nt; t++)
        out[t] = hsum8(_mm256_add_ps(acc0[t], acc1[t]));
}

ALWAYS_INLINE void rows_q8_0(const void *row, const void *x, size_t stride, int nt, int64_t n,
                             float *out)
{
    rows_s32(KERN_T_Q8_0, row, x, stride, nt, n, out);
}

ALWAYS_INLINE void rows_q4_0(const void *row, const void *x, size_t stride, int nt, int64_t n,
                             float *out)
{
    rows_s32(KERN_T_Q4_0, row, x, stride, nt, n, out);
}

ALWAYS_INLINE void rows_q5_0(const void *row, const void *x, size_t stride, int nt, int64_t n,
                             float *out)
{
    rows_s32(KERN_T_Q5_0, row, x, stride, nt, n, out);
}

ALWAYS_INLINE void rows_iq4_nl(const void *row, const void *x, size_t stride, int nt, int64_t n,
                               float *out)
{
    rows_s32(KERN_T_IQ4_NL, row, x, stride, nt, n, out);
}

ALWAYS_INLINE void rows_mxfp4(const void *row, const void *x, size_t stride, int nt, int64_t n,
                              float *out)
{
    rows_s32(KERN_T_MXFP4, row, x, stride, nt, n, out);
}

/* ---- Q4_1 and Q5_1 against Q8_1 activations
 * ------------------------------------------------------
 *
 * Unsigned weights q (0..15 or 0..31) need no sign trick: per block d_w d_x sum(q y) + m_w s_x,
 * where Q8_1's s = d_x sum(y) carries the offset term (as in the scalar reference).
 */

typedef struct quad_u {
    __m256i q[4];
    __m128 d, m; /* the four blocks' scales and offsets (0 past the row's end) */
} quad_u;

ALWAYS_INLINE void quad_u_load(bool q5, const uint8_t *w, int nblk, quad_u *q)
{
    const size_t bytes = q5 ? sizeof(block_q5_1) : sizeof(block_q4_1);
    for (int b = 0; b < nblk; b++) {
        const uint8_t *blk = w + (size_t)b * bytes;
        __m128i raw = _mm_loadu_si128(
            (const __m128i *)(q5 ? ((const block_q5_1 *)blk)->qs : ((const block_q4_1 *)blk)->qs));
        __m256i nib = _mm256_and_si256(
            _mm256_inserti128_si256(_mm256_castsi128_si256(raw), _mm_srli_epi16(raw, 4), 1),
            _mm256_set1_epi8(0x0F));
        if (q5) { /* bit j of qh is the fifth bit of element j */
            uint32_t qh;
            memcpy(&qh, ((const block_q5_1 *)blk)->qh, sizeof qh);
            nib = _mm256_mask_add_epi8(nib, _cvtu32_mask32(qh), nib, _mm256_set1_epi8(16));
        }
        q->q[b] = nib;
    }
    q->d = load_scales4(w, bytes, nblk);
    q->m = load_scales4(w + 2, bytes, nblk);
}

ALWAYS_INLINE void quad_u_token(const quad_u *q, const block_q8_1 *y, int nblk, __m256 *acc0,
                                __m256 *acc1, __m128 *offs)
{
    const uint8_t *yb = (const uint8_t *)y;
    __m256 d = _mm256_castps128_ps256(_mm_mul_ps(q->d, load_scales4(yb, sizeof *y, nblk)));
    *offs = _mm_add_ps(*offs, _mm_mul_ps(q->m, load_scales4(yb + 2, sizeof *y, nblk)));
    for (int b = 0; b < nblk; b++) {
        __m256i p = _mm256_dpbusd_epi32(_mm256_setzero_si256(), q->q[b], load256(y[b].qs));
        __m256 db = _mm256_permutevar8x32_ps(d, _mm256_set1_epi32(b));
        __m256 *acc = b & 1 ? acc1 : acc0;
        *acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), db, *acc);
    }
}

ALWAYS_INLINE void quad_u_step(bool q5, const uint8_t *row, int64_t i, int nblk,
                               const block_q8_1 *const *y, int nt, __m256 *acc0, __m256 *acc1,
                               __m128 *offs)
{
    const size_t bytes = q5 ? sizeof(block_q5_1) : sizeof(block_q4_1);
    const uint8_t *w = row + (size_t)i * bytes;
    prefetch_ahead(w, 4 * bytes);
    quad_u q;
    quad_u_load(q5, w, nblk, &q);
#pragma GCC unroll 4
    for (int t = 0; t < nt; t++)
        quad_u_token(&q, y[t] + i, nblk, &acc0[t], &acc1[t], &offs[t]);
}

ALWAYS_INLINE void rows_u32(bool q5, const void *row, const void *x, size_t stride, int nt,
                            int64_t n, float *out)
{
    const block_q8_1 *y[NT];
    __m256 acc0[NT], acc1[NT];
    __m128 offs[NT];
    for (int t = 0; t < nt; t++) {
        y[t] = token_x(x, stride, t);
        acc0[t] = acc1[t] = _mm256_setzero_ps();
        offs[t] = _mm_setzero_ps();
    }
    int64_t nb = n / 32, i = 0;
    for (; i + 4 <= nb; i += 4)
        quad_u_step(q5, row, i, 4, y, nt, acc0, acc1, offs);
    if (i < nb) quad_u_step(q5, row, i, (int)(nb - i), y, nt, acc0, acc1, offs);
    for (int t = 0; t < nt; t++) {
        __m128 o = _mm_add_ps(offs[t], _mm_movehl_ps(offs[t], offs[t]));
        o = _mm_add_ss(o, _mm_movehdup_ps(o));
        out[t] = hsum8(_mm256_add_ps(acc0[t], acc1[t])) + _mm_cvtss_f32(o);
    }
}

ALWAYS_INLINE void rows_q4_1(const void *row, const void *x, size_t stride, int nt, int64_t n,
                             float *out)
{
    rows_u32(false, row, x, stride, nt, n, out);
}

ALWAYS_INLINE void rows_q5_1(const void *row, const void *x, size_t stride, int nt, int64_t n,
                             float *out)
{
    rows_u32(true, row, x, stride, nt, n, out);
}

/* ---- Q4_K and Q5_K against Q8_K activations ----------------------------------------------------
 *
 * Chunk c is 32 bytes of qs: low nibbles are sub-block 2c, high nibbles 2c+1 (32 weights each,
 * in the activations' order; Q5_K adds bit 2c / 2c+1 of qh as 16).  One 512-bit vector holds a
 * chunk's 64 weights, sub-block 2c in the low half and 2c+1 in the high half, against 64
 * consecutive activations: vpdpbusd leaves four-product sums (at most 4 * 31 * 127 < 2^15), so
 * two chunks' sums pack into one int16 vector and one vpdpwssd applies the four sub-blocks'
 * scales and adds them to the block's int32 accumulator — per token and block four vpdpbusd and
 * two vpdpwssd on full-width vectors, half the instructions of the 256-bit form.  Mins go
 * through Q8_K's sums of 16.
 */

typedef struct k4_w {
    __m512i q[4];  /* chunk c: sub-block 2c's 32 weights, then 2c+1's, as bytes */
    __m512i sv[2]; /* chunks 2p, 2p+1 packed: the scale of each int16 lane (see k4_prepare) */
    __m256i mins;  /* min j as int16 at positions 2j and 2j+1, against Q8_K's sums of 16 */
    float d, dmin;
} k4_w;

/* The 12 packed bytes as 8 scales (bytes 0-7) then 8 mins (8-15), see k4_mins_and_scales in
 * quant_avx2.c.  Reads 16 bytes: the block's quants follow its scales. */
static inline __m128i k4_scales_mins(const uint8_t *scales)
{
    const __m128i v = _mm_loadu_si128((const __m128i *)scales);
    const __m128i a =
        _mm_shuffle_epi8(v, _mm_setr_epi8(0, 1, 2, 3, 8, 9, 10, 11, 4, 5, 6, 7, 8, 9, 10, 11));
    const __m128i top =
        _mm_shuffle_epi8(v, _mm_setr_epi8(-1, -1, -1, -1, 0, 1, 2, 3, -1, -1, -1, -1, 4, 5, 6, 7));
    __m128i low =
        _mm_and_si128(a, _mm_setr_epi8(63, 63, 63, 63, 15, 15, 15, 15, 63, 63, 63, 63, 0, 0, 0, 0));
    __m128i high_nibble = _mm_and_si128(
        _mm_srli_epi16(a, 4), _mm_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 15, 15, 15, 15));
    __m128i top_bits =
        _mm_and_si128(_mm_srli_epi16(top, 2),
                      _mm_setr_epi8(0, 0, 0, 0, 48, 48, 48, 48, 0, 0, 0, 0, 48, 48, 48, 48));
    return _mm_or_si128(_mm_or_si128(low, high_nibble), top_bits);
}

/* vpackssdw of chunks 2p and 2p+1 leaves, in each 128-bit lane L, four sums of chunk 2p's lane
 * L then four of chunk 2p+1's: lanes 0-1 of a chunk are its first sub-block, lanes 2-3 its
 * second.  So int16 lane i of 128-bit lane L belongs to sub-block 4p + (L >= 2) + 2 (i >= 4).
 * The shuffle indices pick those scale bytes (zero-extended: 0x80 gives a zero byte). */
static const int8_t k4_scale_index[2][64] = {
#define K4_LANE(a, b) a, -128, a, -128, a, -128, a, -128, b, -128, b, -128, b, -128, b, -128
    {K4_LANE(0, 2), K4_LANE(0, 2), K4_LANE(1, 3), K4_LANE(1, 3)},
    {K4_LANE(4, 6), K4_LANE(4, 6), K4_LANE(5, 7), K4_LANE(5, 7)},
#undef K4_LANE
};

ALWAYS_INLINE void k4_prepare(const uint8_t *qs, const uint8_t *qh, kern_half d, kern_half dmin,
                              const uint8_t *scales, k4_w *k)
{
    __m128i sm = k4_scales_mins(scales);
    __m512i smz = _mm512_broadcast_i32x4(sm);
    k->mins = _mm256_cvtepu8_epi16(_mm_shuffle_epi8(
        sm, _mm_setr_epi8(8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13, 14, 14, 15, 15)));
    const __m512i m4 = _mm512_set1_epi8(0x0F);
    __m512i hb = qh ? _mm512_broadcast_i64x4(load256(qh)) : _mm512_setzero_si512();
    for (int c = 0; c < 4; c++) {
        __m512i raw = _mm512_broadcast_i64x4(load256(qs + 32 * c));
        /* low nibbles in the low half, high nibbles in the high half */
        __m512i q = _mm512_and_si512(_mm512_mask_srli_epi16(raw, 0xFFFF0000u, raw, 4), m4);
        if (qh) { /* Q5_K: bit 2c (low half) or 2c+1 (high half) of qh[l] is the fifth bit */
            __m512i bit = _mm512_inserti64x4(_mm512_set1_epi8((char)(1 << (2 * c))),
                                             _mm256_set1_epi8((char)(1 << (2 * c + 1))), 1);
            q = _mm512_mask_add_epi8(q, _mm512_test_epi8_mask(hb, bit), q, _mm512_set1_epi8(16));
        }
        k->q[c] = q;
    }
    for (int p = 0; p < 2; p++)
        k->sv[p] = _mm512_shuffle_epi8(smz, _mm512_loadu_si512(k4_scale_index[p]));
    /* d and dmin are adjacent: one conversion */
    uint32_t dd = (uint32_t)d | (uint32_t)dmin << 16;
    __m128 df = _mm_cvtph_ps(_mm_cvtsi32_si128((int)dd));
    k->d = _mm_cvtss_f32(df);
    k->dmin = _mm_cvtss_f32(_mm_movehdup_ps(df));
}

ALWAYS_INLINE void k4_token(const k4_w *k, const block_q8_K *y, __m512 *acc, __m256 *summs)
{
    __m512i sumi = _mm512_setzero_si512();
    for (int p = 0; p < 2; p++) {
        __m512i pa = _mm512_dpbusd_epi32(_mm512_setzero_si512(), k->q[2 * p],
                                         _mm512_loadu_si512(y->qs + 128 * p));
        __m512i pb = _mm512_dpbusd_epi32(_mm512_setzero_si512(), k->q[2 * p + 1],
                                         _mm512_loadu_si512(y->qs + 128 * p + 64));
        sumi = _mm512_dpwssd_epi32(sumi, _mm512_packs_epi32(pa, pb), k->sv[p]);
    }
    /* sum_j m_j * (sum of activations over sub-block j) */
    __m256i mp = _mm256_madd_epi16(k->mins, load256(y->bsums));
    *summs = _mm256_fmadd_ps(_mm256_set1_ps(y->d * k->dmin), _mm256_cvtepi32_ps(mp), *summs);
    *acc = _mm512_fmadd_ps(_mm512_set1_ps(y->d * k->d), _mm512_cvtepi32_ps(sumi), *acc);
}

ALWAYS_INLINE void rows_k4(bool q5, const void *row, const void *x, size_t stride, int nt,
                           int64_t n, float *out)
{
    const block_q8_K *y[NT];
    __m512 acc[NT];
    __m256 summs[NT];
    for (int t = 0; t < nt; t++) {
        y[t] = token_x(x, stride, t);
        acc[t] = _mm512_setzero_ps();
        summs[t] = _mm256_setzero_ps();
    }
    for (int64_t i = 0; i < n / QK_K; i++) {
        k4_w k;
        if (q5) {
            const block_q5_K *w = (const block_q5_K *)row + i;
            prefetch_ahead(w, sizeof *w);
            k4_prepare(w->qs, w->qh, w->d, w->dmin, w->scales, &k);
        } else {
            const block_q4_K *w = (const block_q4_K *)row + i;
            prefetch_ahead(w, sizeof *w);
            k4_prepare(w->qs, NULL, w->d, w->dmin, w->scales, &k);
        }
#pragma GCC unroll 4
        for (int t = 0; t < nt; t++)
            k4_token(&k, &y[t][i], &acc[t], &summs[t]);
    }
    for (int t = 0; t < nt; t++)
        out[t] = _mm512_reduce_add_ps(acc[t]) - hsum8(summs[t]);
}

ALWAYS_INLINE void rows_q4_K(const void *row, const void *x, size_t stride, int nt, int64_t n,
                             float *out)
{
    rows_k4(false, row, x, stride, nt, n, out);
}

ALWAYS_INLINE void rows_q5_K(const void *row, const void *x, size_t stride, int nt, int64_t n,
                             float *out)
{
    rows_k4(true, row, x, stride, nt, n, out);
}

/* ---- Q6_K against Q8_K activations -------------------------------------------------------------
 *
 * Part p (0..3) of each 128-element half is 32 weights: the low (parts 0, 1) or high (2, 3)
 * nibbles of ql[0..31] (parts 0, 2) or ql[32..63] (1, 3), completed by bits 2p..2p+1 of qh
 * moved to bits 4-5.  Weights are used as unsigned q in 0..63; the -32 offset is applied once
 * per block through Q8_K's sums of 16: sum_g sc_g (q.y)_g - 32 sum_g sc_g bsum_g.  vpdpbusd
 * sums of four reach 4 * 63 * 127 < 2^15, so two parts pack into int16 and vpdpwssd applies
 * the per-16 scales, as for Q4_K; two parts share each 512-bit vector.
 */

typedef struct q6_w {
    __m512i q[4];  /* parts 2j and 2j+1 (of the block's eight): 64 weights in activation order */
    __m512i sv[2]; /* vpackssdw of q[2r] and q[2r+1]'s sums: the scale of each int16 lane */
    __m256i sc16;  /* the 16 scales as int16 */
    float d;
} q6_w;

/* int16 lane i of 128-bit lane L of vpackssdw(sums of q[2r], sums of q[2r+1]): part 4r + 2
 * (i >= 4) + (L >= 2), elements 16 (L & 1) .. +15 of it, whose scale is group 8r + L + 4 (i >= 4).
 */
static const int16_t q6_scale_index[2][32] = {
#define Q6_LANE(a, b) a, a, a, a, b, b, b, b
    {Q6_LANE(0, 4), Q6_LANE(1, 5), Q6_LANE(2, 6), Q6_LANE(3, 7)},
    {Q6_LANE(8, 12), Q6_LANE(9, 13), Q6_LANE(10, 14), Q6_LANE(11, 15)},
#undef Q6_LANE
};

ALWAYS_INLINE void q6_prepare(const block_q6_K *w, q6_w *k)
{
    __m128i sc8 = _mm_loadu_si128((const __m128i *)w->scales);
    k->sc16 = _mm256_cvtepi8_epi16(sc8);
    __m512i sc = _mm512_castsi256_si512(k->sc16); /* vpermw reads only the low 16 lanes */
    for (int r = 0; r < 2; r++)
        k->sv[r] = _mm512_permutexvar_epi16(_mm512_loadu_si512(q6_scale_index[r]), sc);
    const __m256i m0F = _mm256_set1_epi8(0x0F), m30 = _mm256_set1_epi8(0x30);
    for (int h = 0; h < 2; h++) {
        __m256i ql0 = load256(w->ql + 64 * h), ql1 = load256(w->ql + 64 * h + 32);
        __m256i qh = load256(w->qh + 32 * h);
        /* part p of half h: ternary logic 0xEC is (a & c) | b */
        __m256i p0 = _mm256_ternarylogic_epi32(ql0, _mm256_and_si256(_mm256_slli_epi16(qh, 4), m30),
                                               m0F, 0xEC);
        __m256i p1 = _mm256_ternarylogic_epi32(ql1, _mm256_and_si256(_mm256_slli_epi16(qh, 2), m30),
                                               m0F, 0xEC);
        __m256i p2 = _mm256_ternarylogic_epi32(_mm256_srli_epi16(ql0, 4), _mm256_and_si256(qh, m30),
                                               m0F, 0xEC);
        __m256i p3 = _mm256_ternarylogic_epi32(
            _mm256_srli_epi16(ql1, 4), _mm256_and_si256(_mm256_srli_epi16(qh, 2), m30), m0F, 0xEC);
        k->q[2 * h] = _mm512_inserti64x4(_mm512_castsi256_si512(p0), p1, 1);
        k->q[2 * h + 1] = _mm512_inserti64x4(_mm512_castsi256_si512(p2), p3, 1);
    }
    k->d = h2f(w->d);
}

ALWAYS_INLINE void q6_token(const q6_w *k, const block_q8_K *y, __m512 *acc)
{
    __m256i corr = _mm256_madd_epi16(k->sc16, load256(y->bsums));
    __m512i sumi = _mm512_zextsi256_si512(
        _mm256_sub_epi32(_mm256_setzero_si256(), _mm256_slli_epi32(corr, 5)));
    for (int r = 0; r < 2; r++) {
        __m512i pa = _mm512_dpbusd_epi32(_mm512_setzero_si512(), k->q[2 * r],
                                         _mm512_loadu_si512(y->qs + 128 * r));
        __m512i pb = _mm512_dpbusd_epi32(_mm512_setzero_si512(), k->q[2 * r + 1],
                                         _mm512_loadu_si512(y->qs + 128 * r + 64));
        sumi = _mm512_dpwssd_epi32(sumi, _mm512_packs_epi32(pa, pb), k->sv[r]);
    }
    *acc = _mm512_fmadd_ps(_mm512_set1_ps(y->d * k->d), _mm512_cvtepi32_ps(sumi), *acc);
}

ALWAYS_INLINE void rows_q6(const void *row, const void *x, size_t stride, int nt, int64_t n,
                           float *out)
{
    const block_q6_K *w = row;
    const block_q8_K *y[NT];
    __m512 acc[NT];
    for (int t = 0; t < nt; t++) {
        y[t] = token_x(x, stride, t);
        acc[t] = _mm512_setzero_ps();
    }
    for (int64_t i = 0; i < n / QK_K; i++) {
        prefetch_ahead(&w[i], sizeof w[i]);
        q6_w k;
        q6_prepare(&w[i], &k);
#pragma GCC unroll 4
        for (int t = 0; t < nt; t++)
            q6_token(&k, &y[t][i], &acc[t]);
    }
    for (int t = 0; t < nt; t++)
        out[t] = _mm512_reduce_add_ps(acc[t]);
}

ALWAYS_INLINE void rows_q6_K(const void *row, const void *x, size_t stride, int nt, int64_t n,
                             float *out)
{
    rows_q6(row, x, stride, nt, n, out);
}

/* ---- IQ4_XS against Q8_K activations ----------------------------------------------------------
 *
 * Eight sub-blocks of 32 table values, each with a 6-bit scale (minus 32).  Per sub-block one
 * vpmaddubsw (|w| against the sign-adjusted activations, as for Q4_0) gives int16 sums of two
 * products (at most 2 * 127 * 127 < 2^15, no saturation) and one vpdpwssd multiplies them by the
 * scale into the int32 accumulator (vpdpbusd then an int32 multiply by the scale measured
 * slower): a lane of the super-block stays exact (at most 8 * 2 * 32258 * 32 < 2^31) and is
 * scaled in float once.
 */

typedef struct xs_w {
    __m256i ax[8];
    __mmask32 neg[8];
    __m256i sc[8]; /* the scale minus 32, in every int16 lane */
    float d;
} xs_w;

ALWAYS_INLINE void xs_prepare(const block_iq4_xs *w, xs_w *q)
{
    __m128i t128 = _mm_loadu_si128((const __m128i *)kern__kvalues_iq4nl);
    __m256i table = _mm256_inserti128_si256(_mm256_castsi128_si256(t128), t128, 1);
    for (int s = 0; s < 8; s++) {
        __m128i raw = _mm_loadu_si128((const __m128i *)(w->qs + 16 * s));
        __m256i nib = _mm256_and_si256(
            _mm256_inserti128_si256(_mm256_castsi128_si256(raw), _mm_srli_epi16(raw, 4), 1),
            _mm256_set1_epi8(0x0F));
        __m256i v = _mm256_shuffle_epi8(table, nib);
        q->ax[s] = _mm256_abs_epi8(v);
        q->neg[s] = _mm256_movepi8_mask(v);
        q->sc[s] = _mm256_set1_epi16((short)(kern__scale_iq4_xs(s, w) - 32));
    }
    q->d = h2f(w->d);
}

ALWAYS_INLINE void rows_iq4_xs(const void *row, const void *x, size_t stride, int nt, int64_t n,
                               float *out)
{
    const block_iq4_xs *w = row;
    const block_q8_K *y[NT];
    __m256 acc[NT];
    for (int t = 0; t < nt; t++) {
        y[t] = token_x(x, stride, t);
        acc[t] = _mm256_setzero_ps();
    }
    for (int64_t i = 0; i < n / QK_K; i++) {
        prefetch_ahead(&w[i], sizeof w[i]);
        xs_w q;
        xs_prepare(&w[i], &q);
#pragma GCC unroll 4
        for (int t = 0; t < nt; t++) {
            /* four independent chains: one would wait on vpdpwssd's latency per sub-block */
            __m256i sumi[4] = {_mm256_setzero_si256(), _mm256_setzero_si256(),
                               _mm256_setzero_si256(), _mm256_setzero_si256()};
#pragma GCC unroll 8
            for (int s = 0; s < 8; s++) {
                __m256i yv = load256(y[t][i].qs + 32 * s);
                __m256i sy = _mm256_mask_sub_epi8(yv, q.neg[s], _mm256_setzero_si256(), yv);
                __m256i p = _mm256_maddubs_epi16(q.ax[s], sy);
                sumi[s & 3] = _mm256_dpwssd_epi32(sumi[s & 3], p, q.sc[s]);
            }
            __m256i total = _mm256_add_epi32(_mm256_add_epi32(sumi[0], sumi[1]),
                                             _mm256_add_epi32(sumi[2], sumi[3]));
            acc[t] =
                _mm256_fmadd_ps(_mm256_set1_ps(q.d * y[t][i].d), _mm256_cvtepi32_ps(total), acc[t]);
        }
    }
    for (int t = 0; t < nt; t++)
        out[t] = hsum8(acc[t]);
}

/* ---- entry points ------------------------------------------------------------------------------
 */

#define VNNI_ENTRIES(type)                                                                         \
    float kern__dot_##type##_vnni(const void *row, const void *x, int64_t n)                       \
    {                                                                                              \
        float out;                                                                                 \
        rows_##type(row, x, 0, 1, n, &out);                                                        \
        return out;                                                                                \
    }                                                                                              \
    void kern__dot_multi_##type##_vnni(const void *row, const void *x, size_t x_stride, int n_x,   \
                                       int64_t n, float *out)                                      \
    {                                                                                              \
        int j = 0;                                                                                 \
        for (; j + NT <= n_x; j += NT)                                                             \
            rows_##type(row, token_x(x, x_stride, j), x_stride, NT, n, out + j);                   \
        /* the rest share one pass too: a token's arithmetic does not depend on nt */              \
        if (j < n_x) rows_##type(row, token_x(x, x_stride, j), x_stride, n_x - j, n, out + j);     \
    }

VNNI_ENTRIES(q8_0)
VNNI_ENTRIES(q4_0)
VNNI_ENTRIES(q5_0)
VNNI_ENTRIES(q4_1)
VNNI_ENTRIES(q5_1)
VNNI_ENTRIES(q4_K)
VNNI_ENTRIES(q5_K)
VNNI_ENTRIES(q6_K)
VNNI_ENTRIES(iq4_nl)
VNNI_ENTRIES(mxfp4)
VNNI_ENTRIES(iq4_xs)
