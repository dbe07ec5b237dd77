/*
 * AVX2 dot products for the table types IQ4_NL, MXFP4 (against Q8_0) and IQ4_XS (against Q8_K)
 * (compiled with AVX2 + FMA + F16C).
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

KERN__MULTI_FROM_SINGLE(iq4_nl, avx2)
KERN__MULTI_FROM_SINGLE(mxfp4, avx2)
KERN__MULTI_FROM_SINGLE(iq4_xs, avx2)
