/*
 * AVX2 kernels for the quantised types (compiled with AVX2 + FMA + F16C): the activation
 * quantisers and the integer dot products, after ggml's x86 kernels.
 *
 * Weights are unpacked to bytes in registers and multiplied with the 8-bit activations by
 * _mm256_maddubs_epi16 (unsigned x signed bytes, pairwise sums to 16 bits); signed weights go
 * through the sign trick (|w| as unsigned, sign moved onto the activation).  Each block's
 * integer sum is scaled in float once.  The result differs from the scalar reference only by
 * float rounding of the block scales' products and sums.
 *
 * dot_multi runs dot per activation vector, so that a token's result never depends on its
 * neighbours; the weight row stays in L1 between them.
 */
#include "kernels/cpu/avx2_util.h"
#include "kernels/cpu/cpu_internal.h"
#include "kernels/cpu/quant_blocks.h"
#include "kernels/kernels.h"

#include <immintrin.h>
#include <math.h>
#include <string.h>

#define PREFETCH_BYTES 1024

static inline float h2f(kern_half h)
{
    return _cvtsh_ss(h);
}

/* 32 nibbles of 16 bytes: low nibbles in the first 16 bytes, high nibbles in the last 16. */
static inline __m256i bytes_from_nibbles_32(const uint8_t *p)
{
    __m128i tmp = _mm_loadu_si128((const __m128i *)p);
    __m256i bytes = _mm256_insertf128_si256(_mm256_castsi128_si256(tmp), _mm_srli_epi16(tmp, 4), 1);
    return _mm256_and_si256(bytes, _mm256_set1_epi8(0x0F));
}

/* 32 bits to 32 bytes: 0xFF where the bit is set. */
static inline __m256i bytes_from_bits_32(const uint8_t *p)
{
    uint32_t x;
    memcpy(&x, p, 4);
    const __m256i shuf = _mm256_setr_epi64x(0x0000000000000000, 0x0101010101010101,
                                            0x0202020202020202, 0x0303030303030303);
    __m256i bytes = _mm256_shuffle_epi8(_mm256_set1_epi32((int)x), shuf);
    const __m256i bit_mask = _mm256_set1_epi64x((long long)0x7fbfdfeff7fbfdfe);
    bytes = _mm256_or_si256(bytes, bit_mask);
    return _mm256_cmpeq_epi8(bytes, _mm256_set1_epi64x(-1));
}

/* sum of unsigned x signed byte products, as 8 floats */
static inline __m256 mul_sum_us8_pairs_float(__m256i ax, __m256i sy)
{
    __m256i dot = _mm256_maddubs_epi16(ax, sy);
    return _mm256_cvtepi32_ps(_mm256_madd_epi16(dot, _mm256_set1_epi16(1)));
}

/* sum of signed x signed byte products */
static inline __m256 mul_sum_i8_pairs_float(__m256i x, __m256i y)
{
    __m256i ax = _mm256_sign_epi8(x, x);
    __m256i sy = _mm256_sign_epi8(y, x);
    return mul_sum_us8_pairs_float(ax, sy);
}

/* ---- activation quantisers --------------------------------------------------------------- */

/* 32 floats to 32 int8 with scale d = amax / 127; returns amax. */
static inline float quantize_block32(const float *x, int8_t *qs, float *d_out)
{
    __m256 v0 = _mm256_loadu_ps(x), v1 = _mm256_loadu_ps(x + 8);
    __m256 v2 = _mm256_loadu_ps(x + 16), v3 = _mm256_loadu_ps(x + 24);
    const __m256 sign = _mm256_set1_ps(-0.0f);
    __m256 m = _mm256_andnot_ps(sign, v0);
    m = _mm256_max_ps(m, _mm256_andnot_ps(sign, v1));
    m = _mm256_max_ps(m, _mm256_andnot_ps(sign, v2));
    m = _mm256_max_ps(m, _mm256_andnot_ps(sign, v3));
    __m128 m4 = _mm_max_ps(_mm256_extractf128_ps(m, 1), _mm256_castps256_ps128(m));
    m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
    m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
    float amax = _mm_cvtss_f32(m4);
    float d = amax / 127.0f, id = d != 0.0f ? 1.0f / d : 0.0f; /* as the scalar code does */
    __m256 mul = _mm256_set1_ps(id);
    /* round half away from zero, as roundf does in the scalar reference */
    const int mode = _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC;
    const __m256 half = _mm256_set1_ps(0.5f);
#define ROUND_AWAY(v)                                                                              \
    _mm256_round_ps(                                                                               \
        _mm256_add_ps(_mm256_mul_ps(v, mul), _mm256_or_ps(half, _mm256_and_ps(sign, v))), mode)
    __m256i i0 = _mm256_cvtps_epi32(ROUND_AWAY(v0)), i1 = _mm256_cvtps_epi32(ROUND_AWAY(v1));
    __m256i i2 = _mm256_cvtps_epi32(ROUND_AWAY(v2)), i3 = _mm256_cvtps_epi32(ROUND_AWAY(v3));
#undef ROUND_AWAY
    i0 = _mm256_packs_epi32(i0, i1);
    i2 = _mm256_packs_epi32(i2, i3);
    i0 = _mm256_packs_epi16(i0, i2);
    /* packs interleaves 128-bit lanes; put the 32-bit groups back in order */
    i0 = _mm256_permutevar8x32_epi32(i0, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
    _mm256_storeu_si256((__m256i *)qs, i0);
    *d_out = d;
    return amax;
}

void kern__quantize_q8_0_avx2(const float *x, void *dst, int64_t n)
{
    block_q8_0 *b = dst;
    for (int64_t i = 0; i < n / QK8_0; i++) {
        float d;
        quantize_block32(x + i * QK8_0, b[i].qs, &d);
        b[i].d = kern_f32_to_f16(d);
    }
}

void kern__quantize_q8_1_avx2(const float *x, void *dst, int64_t n)
{
    block_q8_1 *b = dst;
    for (int64_t i = 0; i < n / QK8_1; i++) {
        float d;
        quantize_block32(x + i * QK8_1, b[i].qs, &d);
        __m256i q = _mm256_loadu_si256((const __m256i *)b[i].qs);
        __m256i s16 = _mm256_maddubs_epi16(_mm256_set1_epi8(1), q);
        int sum = hsum_i32_8(_mm256_madd_epi16(s16, _mm256_set1_epi16(1)));
        b[i].d = kern_f32_to_f16(d);
        b[i].s = kern_f32_to_f16((float)sum * d);
    }
}

void kern__quantize_q8_K_avx2(const float *x, void *dst, int64_t n)
{
    block_q8_K *b = dst;
    const __m256i perm = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    for (int64_t i = 0; i < n / QK_K; i++) {
        const float *v = x + i * QK_K;
        /* the element of largest magnitude, with its sign: the scalar code maps it to -127 */
        __m256 vmax = _mm256_loadu_ps(v), vmin = vmax;
        for (int j = 8; j < QK_K; j += 8) {
            __m256 t = _mm256_loadu_ps(v + j);
            vmax = _mm256_max_ps(vmax, t);
            vmin = _mm256_min_ps(vmin, t);
        }
        float lanes_max[8], lanes_min[8];
        _mm256_storeu_ps(lanes_max, vmax);
        _mm256_storeu_ps(lanes_min, vmin);
        float hi = lanes_max[0], lo = lanes_min[0];
        for (int j = 1; j < 8; j++) {
            hi = fmaxf(hi, lanes_max[j]);
            lo = fminf(lo, lanes_min[j]);
        }
        /* On a tie between +a and -a the scalar code takes whichever comes first; either sign
         * gives the same d * q, since both d and every q change sign together. */
        float max = hi >= -lo ? hi : lo;
        if (max == 0.0f) {
            memset(&b[i], 0, sizeof b[i]);
            continue;
        }
        float iscale = -127.0f / max;
        __m256 mul = _mm256_set1_ps(iscale);
        for (int j = 0; j < QK_K; j += 32) {
            /* cvtps rounds to nearest even, as lrintf does */
            __m256i i0 = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(v + j), mul));
            __m256i i1 = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(v + j + 8), mul));
            __m256i i2 = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(v + j + 16), mul));
            __m256i i3 = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(v + j + 24), mul));
            __m256i q = _mm256_packs_epi16(_mm256_packs_epi32(i0, i1), _mm256_packs_epi32(i2, i3));
            q = _mm256_permutevar8x32_epi32(q, perm);
            q = _mm256_min_epi8(q, _mm256_set1_epi8(127));
            _mm256_storeu_si256((__m256i *)(b[i].qs + j), q);
            /* sums of each 16: pairwise to 16 bits, then madd with ones to 32 bits */
            __m256i s16 = _mm256_maddubs_epi16(_mm256_set1_epi8(1), q);
            __m256i s32 = _mm256_madd_epi16(s16, _mm256_set1_epi16(1)); /* 8 sums of 4 */
            int32_t quad[8];
            _mm256_storeu_si256((__m256i *)quad, s32);
            b[i].bsums[j / 16] = (int16_t)(quad[0] + quad[1] + quad[2] + quad[3]);
            b[i].bsums[j / 16 + 1] = (int16_t)(quad[4] + quad[5] + quad[6] + quad[7]);
        }
        b[i].d = 1.0f / iscale;
    }
}

/* ---- 32-element block types ------------------------------------------------------------------ */

static inline __m256 q8_0_block(const block_q8_0 *w, const block_q8_0 *y)
{
    return mul_sum_i8_pairs_float(_mm256_loadu_si256((const __m256i *)w->qs),
                                  _mm256_loadu_si256((const __m256i *)y->qs));
}

/* Two accumulators, even and odd blocks: with one, the loop would wait on the FMA latency
 * (4 cycles) every 34 bytes.  dot4_q8_0 keeps the same pairing per token. */
float kern__dot_q8_0_avx2(const void *row, const void *xq, int64_t n)
{
    const block_q8_0 *w = row, *y = xq;
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
    int64_t nb = n / QK8_0, i = 0;
    for (; i + 2 <= nb; i += 2) {
        _mm_prefetch((const char *)&w[i] + PREFETCH_BYTES, _MM_HINT_T0);
        _mm_prefetch((const char *)&w[i] + PREFETCH_BYTES + 64, _MM_HINT_T0);
        acc0 = _mm256_fmadd_ps(_mm256_set1_ps(h2f(w[i].d) * h2f(y[i].d)), q8_0_block(&w[i], &y[i]),
                               acc0);
        acc1 = _mm256_fmadd_ps(_mm256_set1_ps(h2f(w[i + 1].d) * h2f(y[i + 1].d)),
                               q8_0_block(&w[i + 1], &y[i + 1]), acc1);
    }
    if (i < nb)
        acc0 = _mm256_fmadd_ps(_mm256_set1_ps(h2f(w[i].d) * h2f(y[i].d)), q8_0_block(&w[i], &y[i]),
                               acc0);
    return hsum8(_mm256_add_ps(acc0, acc1));
}

static inline __m256 q4_0_block(const block_q4_0 *w, const block_q8_0 *y)
{
    __m256i qx = _mm256_sub_epi8(bytes_from_nibbles_32(w->qs), _mm256_set1_epi8(8));
    return mul_sum_i8_pairs_float(qx, _mm256_loadu_si256((const __m256i *)y->qs));
}

/* Even and odd blocks in two accumulators, as for Q8_0; dot4_q4_0 pairs them the same way. */
float kern__dot_q4_0_avx2(const void *row, const void *xq, int64_t n)
{
    const block_q4_0 *w = row;
    const block_q8_0 *y = xq;
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
    int64_t nb = n / QK4_0, i = 0;
    for (; i + 2 <= nb; i += 2) {
        _mm_prefetch((const char *)&w[i] + PREFETCH_BYTES, _MM_HINT_T0);
        acc0 = _mm256_fmadd_ps(_mm256_set1_ps(h2f(w[i].d) * h2f(y[i].d)), q4_0_block(&w[i], &y[i]),
                               acc0);
        acc1 = _mm256_fmadd_ps(_mm256_set1_ps(h2f(w[i + 1].d) * h2f(y[i + 1].d)),
                               q4_0_block(&w[i + 1], &y[i + 1]), acc1);
    }
    if (i < nb)
        acc0 = _mm256_fmadd_ps(_mm256_set1_ps(h2f(w[i].d) * h2f(y[i].d)), q4_0_block(&w[i], &y[i]),
                               acc0);
    return hsum8(_mm256_add_ps(acc0, acc1));
}

float kern__dot_q4_1_avx2(const void *row, const void *xq, int64_t n)
{
    const block_q4_1 *w = row;
    const block_q8_1 *y = xq;
    __m256 acc = _mm256_setzero_ps();
    float summs = 0.0f;
    for (int64_t i = 0; i < n / QK4_1; i++) {
        _mm_prefetch((const char *)&w[i] + PREFETCH_BYTES, _MM_HINT_T0);
        summs += h2f(w[i].m) * h2f(y[i].s);
        __m256 d = _mm256_set1_ps(h2f(w[i].d) * h2f(y[i].d));
        __m256i qx = bytes_from_nibbles_32(w[i].qs);
        __m256i qy = _mm256_loadu_si256((const __m256i *)y[i].qs);
        acc = _mm256_fmadd_ps(d, mul_sum_us8_pairs_float(qx, qy), acc);
    }
    return hsum8(acc) + summs;
}

float kern__dot_q5_0_avx2(const void *row, const void *xq, int64_t n)
{
    const block_q5_0 *w = row;
    const block_q8_0 *y = xq;
    __m256 acc = _mm256_setzero_ps();
    for (int64_t i = 0; i < n / QK5_0; i++) {
        _mm_prefetch((const char *)&w[i] + PREFETCH_BYTES, _MM_HINT_T0);
        __m256 d = _mm256_set1_ps(h2f(w[i].d) * h2f(y[i].d));
        __m256i qx = bytes_from_nibbles_32(w[i].qs);
        /* where the fifth bit is clear, OR in 0xF0: the byte then reads as nibble - 16 */
        __m256i hi = _mm256_andnot_si256(bytes_from_bits_32(w[i].qh), _mm256_set1_epi8((char)0xF0));
        qx = _mm256_or_si256(qx, hi);
        __m256i qy = _mm256_loadu_si256((const __m256i *)y[i].qs);
        acc = _mm256_fmadd_ps(d, mul_sum_i8_pairs_float(qx, qy), acc);
    }
    return hsum8(acc);
}

float kern__dot_q5_1_avx2(const void *row, const void *xq, int64_t n)
{
    const block_q5_1 *w = row;
    const block_q8_1 *y = xq;
    __m256 acc = _mm256_setzero_ps();
    float summs = 0.0f;
    for (int64_t i = 0; i < n / QK5_1; i++) {
        _mm_prefetch((const char *)&w[i] + PREFETCH_BYTES, _MM_HINT_T0);
        summs += h2f(w[i].m) * h2f(y[i].s);
        __m256 d = _mm256_set1_ps(h2f(w[i].d) * h2f(y[i].d));
        __m256i qx = bytes_from_nibbles_32(w[i].qs);
        __m256i hi = _mm256_and_si256(bytes_from_bits_32(w[i].qh), _mm256_set1_epi8(0x10));
        qx = _mm256_or_si256(qx, hi);
        __m256i qy = _mm256_loadu_si256((const __m256i *)y[i].qs);
        acc = _mm256_fmadd_ps(d, mul_sum_us8_pairs_float(qx, qy), acc);
    }
    return hsum8(acc) + summs;
}

/* ---- K-quants ------------------------------------------------------------------------------- */

/* Shuffle that broadcasts the 16-bit scale i of a 128-bit vector to all 16 lanes. */
static inline __m256i scale_shuffle_k4(int i)
{
    return _mm256_set1_epi16((short)((2 * i) | ((2 * i + 1) << 8)));
}

/* Unpacks the 12-byte scales into 8 scales (bytes 0..7) and 8 mins (bytes 8..15), widened to
 * 16 bits, with byte shuffles instead of scalar bit twiddling (this runs once per 256 weights,
 * on the decode hot path).  `scales` is followed by the block's quants, so reading 16 bytes
 * from it stays inside the block. */
static inline __m256i k4_mins_and_scales(const uint8_t *scales)
{
    const __m128i v = _mm_loadu_si128((const __m128i *)scales);
    /* lanes: sc0-3 from b0-3, sc4-7 low nibbles of b8-11, m0-3 from b4-7, m4-7 high nibbles */
    const __m128i a =
        _mm_shuffle_epi8(v, _mm_setr_epi8(0, 1, 2, 3, 8, 9, 10, 11, 4, 5, 6, 7, 8, 9, 10, 11));
    /* the top two bits of b0-3 (b4-7) become bits 4-5 of sc4-7 (m4-7) */
    const __m128i top =
        _mm_shuffle_epi8(v, _mm_setr_epi8(-1, -1, -1, -1, 0, 1, 2, 3, -1, -1, -1, -1, 4, 5, 6, 7));
    __m128i low =
        _mm_and_si128(a, _mm_setr_epi8(63, 63, 63, 63, 15, 15, 15, 15, 63, 63, 63, 63, 0, 0, 0, 0));
    __m128i high_nibble = _mm_and_si128(
        _mm_srli_epi16(a, 4), _mm_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 15, 15, 15, 15));
    __m128i top_bits =
        _mm_and_si128(_mm_srli_epi16(top, 2),
                      _mm_setr_epi8(0, 0, 0, 0, 48, 48, 48, 48, 0, 0, 0, 0, 48, 48, 48, 48));
    return _mm256_cvtepu8_epi16(_mm_or_si128(_mm_or_si128(low, high_nibble), top_bits));
}

/* sum_j mins_j * (sum of activations over sub-block j), from Q8_K's 16-element sums */
static inline __m128i k4_min_products(__m256i mins_and_scales, const int16_t *bsums)
{
    __m256i q8sums = _mm256_loadu_si256((const __m256i *)bsums);
    __m128i q8s =
        _mm_hadd_epi16(_mm256_extracti128_si256(q8sums, 0), _mm256_extracti128_si256(q8sums, 1));
    return _mm_madd_epi16(_mm256_extracti128_si256(mins_and_scales, 1), q8s);
}

static inline float hsum4(__m128 v)
{
    __m128 sh = _mm_movehdup_ps(v);
    __m128 s = _mm_add_ps(v, sh);
    sh = _mm_movehl_ps(sh, s);
    return _mm_cvtss_f32(_mm_add_ss(s, sh));
}

/* The 4- or 5-bit values of sub-blocks 2j (lo) and 2j+1 (hi) of a Q4_K / Q5_K super-block, as
 * bytes.  For Q5_K (qh != NULL) bit 2j of qh[l] is the fifth bit of the low nibble and bit 2j+1
 * that of the high one, moved to bit 4.  Shared by the one- and four-token kernels so that both
 * do exactly the same operations. */
static inline void k4_unpack(const uint8_t *qs, const uint8_t *qh, __m256i hbits, int j,
                             __m256i *lo, __m256i *hi)
{
    const __m256i m4 = _mm256_set1_epi8(0xF);
    __m256i bits = _mm256_loadu_si256((const __m256i *)(qs + 32 * j));
    *lo = _mm256_and_si256(bits, m4);
    *hi = _mm256_and_si256(_mm256_srli_epi16(bits, 4), m4);
    if (qh) {
        __m256i h0 = _mm256_and_si256(_mm256_srl_epi16(hbits, _mm_cvtsi32_si128(2 * j)),
                                      _mm256_set1_epi8(1));
        __m256i h1 = _mm256_and_si256(_mm256_srl_epi16(hbits, _mm_cvtsi32_si128(2 * j + 1)),
                                      _mm256_set1_epi8(1));
        *lo = _mm256_or_si256(*lo, _mm256_slli_epi16(h0, 4));
        *hi = _mm256_or_si256(*hi, _mm256_slli_epi16(h1, 4));
    }
}

/* One super-block of Q4_K (qh == NULL) or Q5_K against one token's Q8_K block. */
static inline void k4_block(const uint8_t *qs, const uint8_t *qh, kern_half wd, kern_half wdmin,
                            const uint8_t *scales_packed, const block_q8_K *y, __m256 *acc,
                            __m128 *summs)
{
    float d = y->d * h2f(wd), dmin = y->d * h2f(wdmin);
    __m256i mins_and_scales = k4_mins_and_scales(scales_packed);
    *summs = _mm_fmadd_ps(_mm_set1_ps(dmin),
                          _mm_cvtepi32_ps(k4_min_products(mins_and_scales, y->bsums)), *summs);
    __m128i sc128 = _mm256_extracti128_si256(mins_and_scales, 0);
    __m256i scales = _mm256_set_m128i(sc128, sc128);
    __m256i hbits = qh ? _mm256_loadu_si256((const __m256i *)qh) : _mm256_setzero_si256();
    __m256i sumi = _mm256_setzero_si256();
    for (int j = 0; j < QK_K / 64; j++) {
        __m256i scale_l = _mm256_shuffle_epi8(scales, scale_shuffle_k4(2 * j + 0));
        __m256i scale_h = _mm256_shuffle_epi8(scales, scale_shuffle_k4(2 * j + 1));
        __m256i ql, qhi;
        k4_unpack(qs, qh, hbits, j, &ql, &qhi);
        const int8_t *q8 = y->qs + 64 * j;
        __m256i p16l = _mm256_madd_epi16(
            scale_l, _mm256_maddubs_epi16(ql, _mm256_loadu_si256((const __m256i *)q8)));
        __m256i p16h = _mm256_madd_epi16(
            scale_h, _mm256_maddubs_epi16(qhi, _mm256_loadu_si256((const __m256i *)(q8 + 32))));
        sumi = _mm256_add_epi32(sumi, _mm256_add_epi32(p16l, p16h));
    }
    *acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), *acc);
}

static inline void prefetch_block(const void *block)
{
    _mm_prefetch((const char *)block + PREFETCH_BYTES, _MM_HINT_T0);
    _mm_prefetch((const char *)block + PREFETCH_BYTES + 64, _MM_HINT_T0);
    _mm_prefetch((const char *)block + PREFETCH_BYTES + 128, _MM_HINT_T0);
}

float kern__dot_q4_K_avx2(const void *row, const void *xq, int64_t n)
{
    const block_q4_K *w = row;
    const block_q8_K *y = xq;
    __m256 acc = _mm256_setzero_ps();
    __m128 summs = _mm_setzero_ps();
    for (int64_t i = 0; i < n / QK_K; i++) {
        prefetch_block(&w[i]);
        k4_block(w[i].qs, NULL, w[i].d, w[i].dmin, w[i].scales, &y[i], &acc, &summs);
    }
    return hsum8(acc) - hsum4(summs);
}

float kern__dot_q5_K_avx2(const void *row, const void *xq, int64_t n)
{
    const block_q5_K *w = row;
    const block_q8_K *y = xq;
    __m256 acc = _mm256_setzero_ps();
    __m128 summs = _mm_setzero_ps();
    for (int64_t i = 0; i < n / QK_K; i++) {
        prefetch_block(&w[i]);
        k4_block(w[i].qs, w[i].qh, w[i].d, w[i].dmin, w[i].scales, &y[i], &acc, &summs);
    }
    return hsum8(acc) - hsum4(summs);
}

/* Shuffle giving 8 copies of scale byte 2i then 8 copies of 2i+1 (two 16-element groups). */
static inline __m128i scale_shuffle_q6(int i)
{
    return _mm_set_epi8((char)(2 * i + 1), (char)(2 * i + 1), (char)(2 * i + 1), (char)(2 * i + 1),
                        (char)(2 * i + 1), (char)(2 * i + 1), (char)(2 * i + 1), (char)(2 * i + 1),
                        (char)(2 * i), (char)(2 * i), (char)(2 * i), (char)(2 * i), (char)(2 * i),
                        (char)(2 * i), (char)(2 * i), (char)(2 * i));
}

float kern__dot_q6_K_avx2(const void *row, const void *xq, int64_t n)
{
    const block_q6_K *w = row;
    const block_q8_K *y = xq;
    const __m256i m4 = _mm256_set1_epi8(0xF), m2 = _mm256_set1_epi8(3), m32s = _mm256_set1_epi8(32);
    __m256 acc = _mm256_setzero_ps();
    for (int64_t i = 0; i < n / QK_K; i++) {
        _mm_prefetch((const char *)&w[i] + PREFETCH_BYTES, _MM_HINT_T0);
        _mm_prefetch((const char *)&w[i] + PREFETCH_BYTES + 64, _MM_HINT_T0);
        _mm_prefetch((const char *)&w[i] + PREFETCH_BYTES + 128, _MM_HINT_T0);
        _mm_prefetch((const char *)&w[i] + PREFETCH_BYTES + 192, _MM_HINT_T0);
        float d = y[i].d * h2f(w[i].d);
        const uint8_t *q4 = w[i].ql, *qh = w[i].qh;
        const int8_t *q8 = y[i].qs;
        __m128i scales = _mm_loadu_si128((const __m128i *)w[i].scales);
        __m256i sumi = _mm256_setzero_si256();
        for (int j = 0, is = 0; j < QK_K / 128; j++, is += 4) {
            __m256i q4bits1 = _mm256_loadu_si256((const __m256i *)q4);
            __m256i q4bits2 = _mm256_loadu_si256((const __m256i *)(q4 + 32));
            __m256i q4bitsH = _mm256_loadu_si256((const __m256i *)qh);
            q4 += 64;
            qh += 32;
            __m256i q4h_0 = _mm256_slli_epi16(_mm256_and_si256(q4bitsH, m2), 4);
            __m256i q4h_1 =
                _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(q4bitsH, 2), m2), 4);
            __m256i q4h_2 =
                _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(q4bitsH, 4), m2), 4);
            __m256i q4h_3 =
                _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(q4bitsH, 6), m2), 4);
            __m256i q4_0 = _mm256_or_si256(_mm256_and_si256(q4bits1, m4), q4h_0);
            __m256i q4_1 = _mm256_or_si256(_mm256_and_si256(q4bits2, m4), q4h_1);
            __m256i q4_2 =
                _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(q4bits1, 4), m4), q4h_2);
            __m256i q4_3 =
                _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(q4bits2, 4), m4), q4h_3);
            __m256i q8_0 = _mm256_loadu_si256((const __m256i *)q8);
            __m256i q8_1 = _mm256_loadu_si256((const __m256i *)(q8 + 32));
            __m256i q8_2 = _mm256_loadu_si256((const __m256i *)(q8 + 64));
            __m256i q8_3 = _mm256_loadu_si256((const __m256i *)(q8 + 96));
            q8 += 128;
            /* (q - 32) * y = q * y - 32 * y, both as unsigned x signed byte products */
            __m256i p16_0 = _mm256_sub_epi16(_mm256_maddubs_epi16(q4_0, q8_0),
                                             _mm256_maddubs_epi16(m32s, q8_0));
            __m256i p16_1 = _mm256_sub_epi16(_mm256_maddubs_epi16(q4_1, q8_1),
                                             _mm256_maddubs_epi16(m32s, q8_1));
            __m256i p16_2 = _mm256_sub_epi16(_mm256_maddubs_epi16(q4_2, q8_2),
                                             _mm256_maddubs_epi16(m32s, q8_2));
            __m256i p16_3 = _mm256_sub_epi16(_mm256_maddubs_epi16(q4_3, q8_3),
                                             _mm256_maddubs_epi16(m32s, q8_3));
            p16_0 = _mm256_madd_epi16(
                _mm256_cvtepi8_epi16(_mm_shuffle_epi8(scales, scale_shuffle_q6(is + 0))), p16_0);
            p16_1 = _mm256_madd_epi16(
                _mm256_cvtepi8_epi16(_mm_shuffle_epi8(scales, scale_shuffle_q6(is + 1))), p16_1);
            p16_2 = _mm256_madd_epi16(
                _mm256_cvtepi8_epi16(_mm_shuffle_epi8(scales, scale_shuffle_q6(is + 2))), p16_2);
            p16_3 = _mm256_madd_epi16(
                _mm256_cvtepi8_epi16(_mm_shuffle_epi8(scales, scale_shuffle_q6(is + 3))), p16_3);
            sumi = _mm256_add_epi32(sumi, _mm256_add_epi32(p16_0, p16_1));
            sumi = _mm256_add_epi32(sumi, _mm256_add_epi32(p16_2, p16_3));
        }
        acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
    }
    return hsum8(acc);
}

/* ---- several tokens per weight row ---------------------------------------------------------
 *
 * Prefill runs the same weight row against many tokens.  These kernels decode each weight
 * block once for four tokens and then repeat, per token, exactly the operations of the
 * single-token kernel above in the same order, so each token's result is bit-identical to
 * kern__dot_*_avx2 on it alone (the tests check this).  Fewer than four tokens left over go
 * through the single-token kernel.
 */
#define NT 4

static inline const void *token_x(const void *x, size_t stride, int t)
{
    return (const uint8_t *)x + (size_t)t * stride;
}

/* Q8_0 and Q4_0 differ only in how a block's 32 signed weights are unpacked; both start
 * with the f16 scale. */
typedef __m256i (*signed32_fn)(const uint8_t *block);

static inline __m256i signed32_q8_0(const uint8_t *block)
{
    return _mm256_loadu_si256((const __m256i *)((const block_q8_0 *)block)->qs);
}

static inline __m256i signed32_q4_0(const uint8_t *block)
{
    return _mm256_sub_epi8(bytes_from_nibbles_32(((const block_q4_0 *)block)->qs),
                           _mm256_set1_epi8(8));
}

static inline void signed32_block4(const uint8_t *block, signed32_fn unpack,
                                   const block_q8_0 *const *y, int64_t i, __m256 *acc)
{
    __m256i qx = unpack(block);
    __m256i ax = _mm256_sign_epi8(qx, qx);
    kern_half wd;
    memcpy(&wd, block, sizeof wd);
    float dw = h2f(wd);
#pragma GCC unroll 4
    for (int t = 0; t < NT; t++) {
        __m256 d = _mm256_set1_ps(dw * h2f(y[t][i].d));
        __m256i qy = _mm256_loadu_si256((const __m256i *)y[t][i].qs);
        acc[t] = _mm256_fmadd_ps(d, mul_sum_us8_pairs_float(ax, _mm256_sign_epi8(qy, qx)), acc[t]);
    }
}

/* Even and odd blocks in two accumulators per token, as the one-token kernels pair them. */
static inline void dot4_signed32(const void *row, size_t block_bytes, signed32_fn unpack,
                                 const void *x, size_t stride, int64_t n, float *out)
{
    const uint8_t *w = row;
    const block_q8_0 *y[NT];
    __m256 acc0[NT], acc1[NT];
    for (int t = 0; t < NT; t++) {
        y[t] = token_x(x, stride, t);
        acc0[t] = acc1[t] = _mm256_setzero_ps();
    }
    int64_t nb = n / 32, i = 0;
    for (; i + 2 <= nb; i += 2) {
        signed32_block4(w + (size_t)i * block_bytes, unpack, y, i, acc0);
        signed32_block4(w + (size_t)(i + 1) * block_bytes, unpack, y, i + 1, acc1);
    }
    if (i < nb) signed32_block4(w + (size_t)i * block_bytes, unpack, y, i, acc0);
    for (int t = 0; t < NT; t++)
        out[t] = hsum8(_mm256_add_ps(acc0[t], acc1[t]));
}

static void dot4_q8_0(const void *row, const void *x, size_t stride, int64_t n, float *out)
{
    dot4_signed32(row, sizeof(block_q8_0), signed32_q8_0, x, stride, n, out);
}

static void dot4_q4_0(const void *row, const void *x, size_t stride, int64_t n, float *out)
{
    dot4_signed32(row, sizeof(block_q4_0), signed32_q4_0, x, stride, n, out);
}

/* Q4_K and Q5_K share everything but the unpacking of the 4- or 5-bit values. */
static inline void dot4_k4(const uint8_t *qs, const uint8_t *qh, kern_half wd, kern_half wdmin,
                           const uint8_t *scales_packed, const block_q8_K *const *y, int64_t i,
                           __m256 *acc, __m128 *summs)
{
    __m256i mins_and_scales = k4_mins_and_scales(scales_packed);
    __m128i sc128 = _mm256_extracti128_si256(mins_and_scales, 0);
    __m256i scales = _mm256_set_m128i(sc128, sc128);
    __m256i sumi[NT];
    for (int t = 0; t < NT; t++) {
        float dmin = y[t][i].d * h2f(wdmin);
        summs[t] = _mm_fmadd_ps(_mm_set1_ps(dmin),
                                _mm_cvtepi32_ps(k4_min_products(mins_and_scales, y[t][i].bsums)),
                                summs[t]);
        sumi[t] = _mm256_setzero_si256();
    }
    __m256i hbits = qh ? _mm256_loadu_si256((const __m256i *)qh) : _mm256_setzero_si256();
    for (int j = 0; j < QK_K / 64; j++) {
        __m256i scale_l = _mm256_shuffle_epi8(scales, scale_shuffle_k4(2 * j + 0));
        __m256i scale_h = _mm256_shuffle_epi8(scales, scale_shuffle_k4(2 * j + 1));
        __m256i ql, qhi;
        k4_unpack(qs, qh, hbits, j, &ql, &qhi);
#pragma GCC unroll 4
        for (int t = 0; t < NT; t++) {
            const int8_t *q8 = y[t][i].qs + 64 * j;
            __m256i p16l = _mm256_madd_epi16(
                scale_l, _mm256_maddubs_epi16(ql, _mm256_loadu_si256((const __m256i *)q8)));
            __m256i p16h = _mm256_madd_epi16(
                scale_h, _mm256_maddubs_epi16(qhi, _mm256_loadu_si256((const __m256i *)(q8 + 32))));
            sumi[t] = _mm256_add_epi32(sumi[t], _mm256_add_epi32(p16l, p16h));
        }
    }
    for (int t = 0; t < NT; t++) {
        float d = y[t][i].d * h2f(wd);
        acc[t] = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi[t]), acc[t]);
    }
}

static void dot4_q4_K(const void *row, const void *x, size_t stride, int64_t n, float *out)
{
    const block_q4_K *w = row;
    const block_q8_K *y[NT];
    __m256 acc[NT];
    __m128 summs[NT];
    for (int t = 0; t < NT; t++) {
        y[t] = token_x(x, stride, t);
        acc[t] = _mm256_setzero_ps();
        summs[t] = _mm_setzero_ps();
    }
    for (int64_t i = 0; i < n / QK_K; i++)
        dot4_k4(w[i].qs, NULL, w[i].d, w[i].dmin, w[i].scales, y, i, acc, summs);
    for (int t = 0; t < NT; t++)
        out[t] = hsum8(acc[t]) - hsum4(summs[t]);
}

static void dot4_q5_K(const void *row, const void *x, size_t stride, int64_t n, float *out)
{
    const block_q5_K *w = row;
    const block_q8_K *y[NT];
    __m256 acc[NT];
    __m128 summs[NT];
    for (int t = 0; t < NT; t++) {
        y[t] = token_x(x, stride, t);
        acc[t] = _mm256_setzero_ps();
        summs[t] = _mm_setzero_ps();
    }
    for (int64_t i = 0; i < n / QK_K; i++)
        dot4_k4(w[i].qs, w[i].qh, w[i].d, w[i].dmin, w[i].scales, y, i, acc, summs);
    for (int t = 0; t < NT; t++)
        out[t] = hsum8(acc[t]) - hsum4(summs[t]);
}

static void dot4_q6_K(const void *row, const void *x, size_t stride, int64_t n, float *out)
{
    const block_q6_K *w = row;
    const block_q8_K *y[NT];
    __m256 acc[NT];
    for (int t = 0; t < NT; t++) {
        y[t] = token_x(x, stride, t);
        acc[t] = _mm256_setzero_ps();
    }
    const __m256i m4 = _mm256_set1_epi8(0xF), m2 = _mm256_set1_epi8(3), m32s = _mm256_set1_epi8(32);
    for (int64_t i = 0; i < n / QK_K; i++) {
        __m128i scales = _mm_loadu_si128((const __m128i *)w[i].scales);
        __m256i sumi[NT];
        for (int t = 0; t < NT; t++)
            sumi[t] = _mm256_setzero_si256();
        for (int j = 0, is = 0; j < QK_K / 128; j++, is += 4) {
            const uint8_t *q4 = w[i].ql + 64 * j, *qh = w[i].qh + 32 * j;
            __m256i q4bits1 = _mm256_loadu_si256((const __m256i *)q4);
            __m256i q4bits2 = _mm256_loadu_si256((const __m256i *)(q4 + 32));
            __m256i q4bitsH = _mm256_loadu_si256((const __m256i *)qh);
            __m256i q[4], sc[4];
            q[0] = _mm256_or_si256(_mm256_and_si256(q4bits1, m4),
                                   _mm256_slli_epi16(_mm256_and_si256(q4bitsH, m2), 4));
            q[1] = _mm256_or_si256(
                _mm256_and_si256(q4bits2, m4),
                _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(q4bitsH, 2), m2), 4));
            q[2] = _mm256_or_si256(
                _mm256_and_si256(_mm256_srli_epi16(q4bits1, 4), m4),
                _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(q4bitsH, 4), m2), 4));
            q[3] = _mm256_or_si256(
                _mm256_and_si256(_mm256_srli_epi16(q4bits2, 4), m4),
                _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(q4bitsH, 6), m2), 4));
            for (int k = 0; k < 4; k++)
                sc[k] = _mm256_cvtepi8_epi16(_mm_shuffle_epi8(scales, scale_shuffle_q6(is + k)));
#pragma GCC unroll 4
            for (int t = 0; t < NT; t++) {
                const int8_t *q8 = y[t][i].qs + 128 * j;
                __m256i p[4];
                for (int k = 0; k < 4; k++) {
                    __m256i q8k = _mm256_loadu_si256((const __m256i *)(q8 + 32 * k));
                    p[k] = _mm256_sub_epi16(_mm256_maddubs_epi16(q[k], q8k),
                                            _mm256_maddubs_epi16(m32s, q8k));
                    p[k] = _mm256_madd_epi16(sc[k], p[k]);
                }
                sumi[t] = _mm256_add_epi32(sumi[t], _mm256_add_epi32(p[0], p[1]));
                sumi[t] = _mm256_add_epi32(sumi[t], _mm256_add_epi32(p[2], p[3]));
            }
        }
        for (int t = 0; t < NT; t++) {
            float d = y[t][i].d * h2f(w[i].d);
            acc[t] = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi[t]), acc[t]);
        }
    }
    for (int t = 0; t < NT; t++)
        out[t] = hsum8(acc[t]);
}

#define MULTI_BY_FOUR(type)                                                                        \
    void kern__dot_multi_##type##_avx2(const void *row, const void *x, size_t x_stride, int n_x,   \
                                       int64_t n, float *out)                                      \
    {                                                                                              \
        int j = 0;                                                                                 \
        for (; j + NT <= n_x; j += NT)                                                             \
            dot4_##type(row, token_x(x, x_stride, j), x_stride, n, out + j);                       \
        for (; j < n_x; j++)                                                                       \
            out[j] = kern__dot_##type##_avx2(row, token_x(x, x_stride, j), n);                     \
    }

MULTI_BY_FOUR(q8_0)
MULTI_BY_FOUR(q4_0)
MULTI_BY_FOUR(q4_K)
MULTI_BY_FOUR(q5_K)
MULTI_BY_FOUR(q6_K)

KERN__MULTI_FROM_SINGLE(q4_1, avx2)
KERN__MULTI_FROM_SINGLE(q5_0, avx2)
KERN__MULTI_FROM_SINGLE(q5_1, avx2)
