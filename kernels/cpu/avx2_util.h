/*
 * Small AVX2 helpers shared by the AVX2 kernel files (compiled with AVX2 + FMA + F16C only).
 */
#ifndef MOE_KERNELS_CPU_AVX2_UTIL_H
#define MOE_KERNELS_CPU_AVX2_UTIL_H

#include <immintrin.h>

/* Sum of the 8 lanes, in a fixed order (kernels rely on it being deterministic). */
static inline float hsum8(__m256 v)
{
    __m128 lo = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    __m128 sh = _mm_movehdup_ps(lo);
    __m128 s = _mm_add_ps(lo, sh);
    sh = _mm_movehl_ps(sh, s);
    return _mm_cvtss_f32(_mm_add_ss(s, sh));
}

/* Sum of the 8 int32 lanes. */
static inline int hsum_i32_8(__m256i v)
{
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    s = _mm_add_epi32(s, _mm_unpackhi_epi64(s, s));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x55));
    return _mm_cvtsi128_si32(s);
}

#endif
