/*
 * AVX2 dot products for the table types IQ4_NL, MXFP4 (against Q8_0) and IQ4_XS (against Q8_K),
 * and for Q2_K / Q3_K (against Q8_K) (compiled with AVX2 + FMA + F16C).
 *
 * A 16-entry table of int8 fits one 128-bit register, so _mm256_shuffle_epi8 turns 32 nibbles
 * into 32 signed weights in one instruction; from there a block is Q8_0's: maddubs with the
 * sign trick (every table value is in [-127, 127], so |w| and the negated activations fit in a
 * byte) and one float scale per block.  IQ4_XS applies its 6-bit sub-block scales in integers
 * (vpmaddwd against the pairwise sums) and converts to float once per 256 weights.
 *
 * Accumulation: IQ4_NL and MXFP4 keep even and odd blocks in two accumulators (one would wait on
 * the FMA latency every 17-18 bytes), as Q4_0 does; IQ4_XS has 256 weights of integer work
 * between FMAs and needs one.  dot_multi runs dot per vector: bit-identical by construction.
 */
#include "kernels/cpu/avx2_util.h"
#include "kernels/cpu/cpu_internal.h"
#include "kernels/cpu/quant_blocks.h"
#include "kernels/kernels.h"

#include <immintrin.h>

#define PREFETCH_BYTES 1024

static inline float h2f(kern_half h)
{
    return _cvtsh_ss(h);
}

/* The table in both 128-bit lanes, for _mm256_shuffle_epi8. */
static inline __m256i table_both_lanes(const int8_t table[16])
{
    __m128i t = _mm_loadu_si128((const __m128i *)table);
    return _mm256_set_m128i(t, t);
}

/* 32 table values: low nibbles of qs[0..15] are elements 0-15, high nibbles 16-31. */
static inline __m256i lookup32(__m256i table, const uint8_t *qs)
{
    __m128i raw = _mm_loadu_si128((const __m128i *)qs);
    __m256i nib =
        _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(raw, 4), raw), _mm256_set1_epi8(0x0F));
    return _mm256_shuffle_epi8(table, nib);
}

/* Pairwise sums of w * y as 16 int16 (|w|, |y| <= 127: each pair at most 2 * 127 * 127). */
static inline __m256i mul_pairs_i8(__m256i w, __m256i y)
{
    return _mm256_maddubs_epi16(_mm256_sign_epi8(w, w), _mm256_sign_epi8(y, w));
}

static inline __m256 block32(__m256i table, const uint8_t *qs, const int8_t *yq)
{
    __m256i p = mul_pairs_i8(lookup32(table, qs), _mm256_loadu_si256((const __m256i *)yq));
    return _mm256_cvtepi32_ps(_mm256_madd_epi16(p, _mm256_set1_epi16(1)));
}

float kern__dot_iq4_nl_avx2(const void *row, const void *xq, int64_t n)
{
    const block_iq4_nl *w = row;
    const block_q8_0 *y = xq;
    const __m256i table = table_both_lanes(kern__kvalues_iq4nl);
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
    int64_t nb = n / QK4_NL, i = 0;
    for (; i + 2 <= nb; i += 2) {
        _mm_prefetch((const char *)&w[i] + PREFETCH_BYTES, _MM_HINT_T0);
        __m256 d0 = _mm256_set1_ps(h2f(w[i].d) * h2f(y[i].d));
        __m256 d1 = _mm256_set1_ps(h2f(w[i + 1].d) * h2f(y[i + 1].d));
        acc0 = _mm256_fmadd_ps(d0, block32(table, w[i].qs, y[i].qs), acc0);
        acc1 = _mm256_fmadd_ps(d1, block32(table, w[i + 1].qs, y[i + 1].qs), acc1);
    }
    if (i < nb)
        acc0 = _mm256_fmadd_ps(_mm256_set1_ps(h2f(w[i].d) * h2f(y[i].d)),
                               block32(table, w[i].qs, y[i].qs), acc0);
    return hsum8(_mm256_add_ps(acc0, acc1));
}

float kern__dot_mxfp4_avx2(const void *row, const void *xq, int64_t n)
{
    const block_mxfp4 *w = row;
    const block_q8_0 *y = xq;
    const __m256i table = table_both_lanes(kern__kvalues_mxfp4);
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
    int64_t nb = n / QK_MXFP4, i = 0;
    for (; i + 2 <= nb; i += 2) {
        _mm_prefetch((const char *)&w[i] + PREFETCH_BYTES, _MM_HINT_T0);
        __m256 d0 = _mm256_set1_ps(kern__e8m0_to_f32_half(w[i].e) * h2f(y[i].d));
        __m256 d1 = _mm256_set1_ps(kern__e8m0_to_f32_half(w[i + 1].e) * h2f(y[i + 1].d));
        acc0 = _mm256_fmadd_ps(d0, block32(table, w[i].qs, y[i].qs), acc0);
        acc1 = _mm256_fmadd_ps(d1, block32(table, w[i + 1].qs, y[i + 1].qs), acc1);
    }
    if (i < nb)
        acc0 = _mm256_fmadd_ps(_mm256_set1_ps(kern__e8m0_to_f32_half(w[i].e) * h2f(y[i].d)),
                               block32(table, w[i].qs, y[i].qs), acc0);
    return hsum8(_mm256_add_ps(acc0, acc1));
}

/* Per super-block: sum over sub-blocks s of (ls_s - 32) * (w . y)_s in int32 lanes (at most
 * 8 sub-blocks * 32 * 4 * 127 * 127 < 2^31), then one float scale d_w * d_y. */
float kern__dot_iq4_xs_avx2(const void *row, const void *xq, int64_t n)
{
    const block_iq4_xs *w = row;
    const block_q8_K *y = xq;
    const __m256i table = table_both_lanes(kern__kvalues_iq4nl);
    __m256 acc = _mm256_setzero_ps();
    for (int64_t i = 0; i < n / QK_K; i++) {
        _mm_prefetch((const char *)&w[i] + PREFETCH_BYTES, _MM_HINT_T0);
        __m256i sumi = _mm256_setzero_si256();
        for (int s = 0; s < QK_K / 32; s++) {
            __m256i q = lookup32(table, w[i].qs + 16 * s);
            __m256i p = mul_pairs_i8(q, _mm256_loadu_si256((const __m256i *)(y[i].qs + 32 * s)));
            __m256i sc = _mm256_set1_epi16((short)(kern__scale_iq4_xs(s, &w[i]) - 32));
            sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(p, sc));
        }
        __m256 d = _mm256_set1_ps(h2f(w[i].d) * y[i].d);
        acc = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(sumi), acc);
    }
    return hsum8(acc);
}

/* ---- Q2_K and Q3_K against Q8_K ------------------------------------------------------------
 *
 * Plane j of chunk c (bits 2j..2j+1 of qs[32c .. 32c+31]) is 32 consecutive weights, 128c + 32j
 * onwards, against 32 consecutive activations: one vpmaddubsw (the 2-bit codes are unsigned)
 * and one vpmaddwd with the two sub-blocks' scales, one per 128-bit lane.  Q3_K's third bit
 * subtracts 4 where it is clear: a second vpmaddubsw of those 4s, subtracted (each int16 sum at
 * most 2 * 4 * 127).  Q2_K's mins go through Q8_K's sums of 16, as in the scalar reference. */

/* Scale s in the low 128-bit lane's int16s, scale s + 1 in the high lane's. */
static inline __m256i scale_pair(const int16_t *scales, int s)
{
    return _mm256_set_m128i(_mm_set1_epi16(scales[s + 1]), _mm_set1_epi16(scales[s]));
}

/* Bits 2j..2j+1 of every byte (a 16-bit shift is exact here: the mask keeps each byte's own). */
static inline __m256i plane2(__m256i q, int j)
{
    return _mm256_and_si256(_mm256_srl_epi16(q, _mm_cvtsi32_si128(2 * j)), _mm256_set1_epi8(3));
}

float kern__dot_q2_K_avx2(const void *row, const void *xq, int64_t n)
{
    const block_q2_K *w = row;
    const block_q8_K *y = xq;
    __m256 acc = _mm256_setzero_ps();
    float mins = 0.0f;
    for (int64_t i = 0; i < n / QK_K; i++) {
        _mm_prefetch((const char *)&w[i] + PREFETCH_BYTES, _MM_HINT_T0);
        __m128i sc8 = _mm_loadu_si128((const __m128i *)w[i].scales);
        int16_t scales[16];
        _mm256_storeu_si256((__m256i *)scales,
                            _mm256_cvtepu8_epi16(_mm_and_si128(sc8, _mm_set1_epi8(0xF))));
        __m256i m16 =
            _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16(sc8, 4), _mm_set1_epi8(0xF)));
        __m256i summ = _mm256_madd_epi16(m16, _mm256_loadu_si256((const __m256i *)y[i].bsums));
        __m256i sumi = _mm256_setzero_si256();
        for (int c = 0; c < 2; c++) {
            __m256i q = _mm256_loadu_si256((const __m256i *)(w[i].qs + 32 * c));
            for (int j = 0; j < 4; j++) {
                __m256i yv = _mm256_loadu_si256((const __m256i *)(y[i].qs + 128 * c + 32 * j));
                __m256i p = _mm256_maddubs_epi16(plane2(q, j), yv);
                sumi =
                    _mm256_add_epi32(sumi, _mm256_madd_epi16(p, scale_pair(scales, 8 * c + 2 * j)));
            }
        }
        float yd = y[i].d;
        acc = _mm256_fmadd_ps(_mm256_set1_ps(h2f(w[i].d) * yd), _mm256_cvtepi32_ps(sumi), acc);
        mins += h2f(w[i].dmin) * yd * (float)hsum_i32_8(summ);
    }
    return hsum8(acc) - mins;
}

float kern__dot_q3_K_avx2(const void *row, const void *xq, int64_t n)
{
    const block_q3_K *w = row;
    const block_q8_K *y = xq;
    __m256 acc = _mm256_setzero_ps();
    for (int64_t i = 0; i < n / QK_K; i++) {
        _mm_prefetch((const char *)&w[i] + PREFETCH_BYTES, _MM_HINT_T0);
        int16_t scales[16];
        for (int s = 0; s < 16; s++)
            scales[s] = (int16_t)(kern__scale_q3_K(s, w[i].scales) - 32);
        __m256i hm = _mm256_loadu_si256((const __m256i *)w[i].hmask);
        __m256i sumi = _mm256_setzero_si256();
        for (int c = 0; c < 2; c++) {
            __m256i q = _mm256_loadu_si256((const __m256i *)(w[i].qs + 32 * c));
            for (int j = 0; j < 4; j++) {
                __m256i yv = _mm256_loadu_si256((const __m256i *)(y[i].qs + 128 * c + 32 * j));
                /* 4 where bit 4c + j of hmask is clear, else 0 */
                __m256i hb = _mm256_srl_epi16(hm, _mm_cvtsi32_si128(4 * c + j));
                __m256i four = _mm256_andnot_si256(_mm256_slli_epi16(hb, 2), _mm256_set1_epi8(4));
                __m256i p = _mm256_sub_epi16(_mm256_maddubs_epi16(plane2(q, j), yv),
                                             _mm256_maddubs_epi16(four, yv));
                sumi =
                    _mm256_add_epi32(sumi, _mm256_madd_epi16(p, scale_pair(scales, 8 * c + 2 * j)));
            }
        }
        acc = _mm256_fmadd_ps(_mm256_set1_ps(h2f(w[i].d) * y[i].d), _mm256_cvtepi32_ps(sumi), acc);
    }
    return hsum8(acc);
}

KERN__MULTI_FROM_SINGLE(q2_K, avx2)
KERN__MULTI_FROM_SINGLE(q3_K, avx2)
KERN__MULTI_FROM_SINGLE(iq4_nl, avx2)
KERN__MULTI_FROM_SINGLE(mxfp4, avx2)
KERN__MULTI_FROM_SINGLE(iq4_xs, avx2)
