/*
 * Attention's inner loops with AVX-512 F (cpu.c's attention_items drives them over chunks of
 * up to 16 positions of one KV block).
 *
 * Scores: one 16-lane accumulator per position runs along the head dimension, then the 16
 * accumulators are reduced together into one vector of 16 scores (45 shuffles and adds for 16
 * positions, where a reduction per position costs 8 or more each).  Values: a head's output
 * row stays in registers across the chunk's positions.  exp: Cephes' polynomial, with
 * vscalefps doing 2^n (underflow to zero included).  Each head's arithmetic is its own: how
 * many heads share a call changes nothing (batch invariance, cpu_internal.h).
 */
#include "kernels/cpu/cpu_internal.h"

#include <immintrin.h>
#include <math.h>

/* Lane j of the result = the sum of v[j]'s 16 lanes. */
static inline __m512 reduce16(const __m512 v[16])
{
    __m512 w[4];
    for (int g = 0; g < 4; g++) {
        const __m512 *a = v + 4 * g;
        /* per 128-bit lane: [a0+a2, b0+b2, a1+a3, b1+b3], then the pairs of pairs */
        __m512 ab = _mm512_add_ps(_mm512_unpacklo_ps(a[0], a[1]), _mm512_unpackhi_ps(a[0], a[1]));
        __m512 cd = _mm512_add_ps(_mm512_unpacklo_ps(a[2], a[3]), _mm512_unpackhi_ps(a[2], a[3]));
        __m512d lo = _mm512_unpacklo_pd(_mm512_castps_pd(ab), _mm512_castps_pd(cd));
        __m512d hi = _mm512_unpackhi_pd(_mm512_castps_pd(ab), _mm512_castps_pd(cd));
        /* 128-bit lane L: [sum_L a, sum_L b, sum_L c, sum_L d] */
        w[g] = _mm512_add_ps(_mm512_castpd_ps(lo), _mm512_castpd_ps(hi));
    }
    __m512 z01 = _mm512_add_ps(_mm512_shuffle_f32x4(w[0], w[1], _MM_SHUFFLE(2, 0, 2, 0)),
                               _mm512_shuffle_f32x4(w[0], w[1], _MM_SHUFFLE(3, 1, 3, 1)));
    __m512 z23 = _mm512_add_ps(_mm512_shuffle_f32x4(w[2], w[3], _MM_SHUFFLE(2, 0, 2, 0)),
                               _mm512_shuffle_f32x4(w[2], w[3], _MM_SHUFFLE(3, 1, 3, 1)));
    return _mm512_add_ps(_mm512_shuffle_f32x4(z01, z23, _MM_SHUFFLE(2, 0, 2, 0)),
                         _mm512_shuffle_f32x4(z01, z23, _MM_SHUFFLE(3, 1, 3, 1)));
}

void kern__attn_scores_avx512(const float *q, int hs, int hd, const float *k, size_t k_stride,
                              int nb, float scale, float *s, size_t s_stride)
{
    /* lanes past nb compute row 0 again (always readable) and are not stored */
    __mmask16 keep = (__mmask16)((1u << nb) - 1u);
    const __m512 vscale = _mm512_set1_ps(scale);
    const float *kr[16];
    for (int j = 0; j < 16; j++)
        kr[j] = k + (size_t)(j < nb ? j : 0) * k_stride;
    for (int h = 0; h < hs; h++) {
        const float *qh = q + (size_t)h * (size_t)hd;
        __m512 acc[16];
        for (int j = 0; j < 16; j++)
            acc[j] = _mm512_setzero_ps();
        for (int d = 0; d < hd; d += 16) {
            __m512 qv = _mm512_loadu_ps(qh + d);
            for (int j = 0; j < 16; j++)
                acc[j] = _mm512_fmadd_ps(qv, _mm512_loadu_ps(kr[j] + d), acc[j]);
        }
        _mm512_mask_storeu_ps(s + (size_t)h * s_stride, keep, _mm512_mul_ps(reduce16(acc), vscale));
    }
}

void kern__attn_values_avx512(const float *p, size_t p_stride, int hs, int hd, const float *v,
                              size_t v_stride, int nb, float *out)
{
    for (int h = 0; h < hs; h++) {
        const float *ph = p + (size_t)h * p_stride;
        float *oh = out + (size_t)h * (size_t)hd;
        for (int d0 = 0; d0 < hd; d0 += 256) { /* 16 registers of output at a time */
            int nc = (hd - d0 < 256 ? hd - d0 : 256) / 16;
            __m512 acc[16];
            for (int c = 0; c < nc; c++)
                acc[c] = _mm512_loadu_ps(oh + d0 + 16 * c);
            for (int j = 0; j < nb; j++) {
                __m512 w = _mm512_set1_ps(ph[j]);
                const float *vj = v + (size_t)j * v_stride + d0;
                for (int c = 0; c < nc; c++)
                    acc[c] = _mm512_fmadd_ps(w, _mm512_loadu_ps(vj + 16 * c), acc[c]);
            }
            for (int c = 0; c < nc; c++)
                _mm512_storeu_ps(oh + d0 + 16 * c, acc[c]);
        }
    }
}

/* exp(x) for x <= 0 (scores minus their maximum): x = n ln2 + r, |r| <= ln2 / 2, exp(r) by
 * Cephes' degree-6 polynomial (about 1 ulp), times 2^n. */
static inline __m512 exp_neg(__m512 x)
{
    const __m512 log2e = _mm512_set1_ps(1.44269504088896341f);
    const __m512 c1 = _mm512_set1_ps(0.693359375f), c2 = _mm512_set1_ps(-2.12194440e-4f);
    x = _mm512_max_ps(x, _mm512_set1_ps(-104.0f)); /* below, exp is 0 in f32 */
    __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, log2e), _MM_FROUND_TO_NEAREST_INT);
    __m512 r = _mm512_fnmadd_ps(n, c1, x);
    r = _mm512_fnmadd_ps(n, c2, r);
    __m512 y = _mm512_set1_ps(1.9875691500e-4f);
    y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(1.3981999507e-3f));
    y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(8.3334519073e-3f));
    y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(4.1665795894e-2f));
    y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(1.6666665459e-1f));
    y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(5.0000001201e-1f));
    __m512 r2 = _mm512_mul_ps(r, r);
    y = _mm512_fmadd_ps(y, r2, _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
    return _mm512_scalef_ps(y, n);
}

double kern__exp_sum_avx512(float *s, int64_t n, float max)
{
    const __m512 vmax = _mm512_set1_ps(max);
    __m512d sum_lo = _mm512_setzero_pd(), sum_hi = _mm512_setzero_pd();
    int64_t j = 0;
    for (; j < n; j += 16) {
        __mmask16 m = n - j >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (n - j)) - 1u);
        __m512 e = exp_neg(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, s + j), vmax));
        e = _mm512_maskz_mov_ps(m, e);
        _mm512_mask_storeu_ps(s + j, m, e);
        sum_lo = _mm512_add_pd(sum_lo, _mm512_cvtps_pd(_mm512_castps512_ps256(e)));
        sum_hi = _mm512_add_pd(sum_hi, _mm512_cvtps_pd(_mm256_castpd_ps(
                                           _mm512_extractf64x4_pd(_mm512_castps_pd(e), 1))));
    }
    return _mm512_reduce_add_pd(_mm512_add_pd(sum_lo, sum_hi));
}

void kern__scale_avx512(float *s, int64_t n, float a)
{
    const __m512 va = _mm512_set1_ps(a);
    int64_t j = 0;
    for (; j + 16 <= n; j += 16)
        _mm512_storeu_ps(s + j, _mm512_mul_ps(_mm512_loadu_ps(s + j), va));
    for (; j < n; j++)
        s[j] *= a;
}

float kern__max_avx512(const float *s, int64_t n)
{
    __m512 m = _mm512_set1_ps(-INFINITY);
    int64_t j = 0;
    for (; j + 16 <= n; j += 16)
        m = _mm512_max_ps(m, _mm512_loadu_ps(s + j));
    float r = _mm512_reduce_max_ps(m);
    for (; j < n; j++)
        r = s[j] > r ? s[j] : r;
    return r;
}

void kern__f16_rows_to_f32_avx512(const void *src, size_t src_stride, int rows, int n, float *dst)
{
    for (int j = 0; j < rows; j++) {
        const uint16_t *r = (const uint16_t *)((const uint8_t *)src + (size_t)j * src_stride);
        float *o = dst + (size_t)j * (size_t)n;
        int d = 0;
        for (; d + 16 <= n; d += 16)
            _mm512_storeu_ps(o + d, _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(r + d))));
        for (; d < n; d++)
            o[d] = _cvtsh_ss(r[d]);
    }
}
