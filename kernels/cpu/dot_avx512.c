/*
 * AVX-512 dot products: the AVX2 kernels widened to 16 lanes (compiled with AVX-512 F/BW/VL
 * and F16C; called only when the CPU has them).  Same structure and the same batch
 * invariance rule: dot_multi uses the lanes of dot in the same order.
 */
#include "kernels/cpu/cpu_internal.h"
#include "kernels/kernels.h"

#include <immintrin.h>
#include <string.h>

static inline __m512 load16_f32(const void *p, int64_t i)
{
    return _mm512_loadu_ps((const float *)p + i);
}

static inline __m512 load16_f16(const void *p, int64_t i)
{
    return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)((const uint16_t *)p + i)));
}

static inline __m512 load16_bf16(const void *p, int64_t i)
{
    __m512i w = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)((const uint16_t *)p + i)));
    return _mm512_castsi512_ps(_mm512_slli_epi32(w, 16));
}

/* Software prefetch a fixed distance ahead (see dot_avx2.c: hardware prefetchers stop at
 * page boundaries, and rows are often one page long). */
#define PREFETCH_BYTES 1024
static inline void prefetch(const void *row, int64_t i, size_t elem_size)
{
    _mm_prefetch((const char *)row + (size_t)i * elem_size + PREFETCH_BYTES, _MM_HINT_T0);
    _mm_prefetch((const char *)row + (size_t)i * elem_size + PREFETCH_BYTES + 64, _MM_HINT_T0);
}

typedef float elem_f32;
typedef uint16_t elem_f16;
typedef uint16_t elem_bf16;

static inline float scalar_f32(const void *p, int64_t i)
{
    return ((const float *)p)[i];
}

static inline float scalar_f16(const void *p, int64_t i)
{
    uint16_t h;
    memcpy(&h, (const uint16_t *)p + i, 2);
    return kern_f16_to_f32(h);
}

static inline float scalar_bf16(const void *p, int64_t i)
{
    uint16_t h;
    memcpy(&h, (const uint16_t *)p + i, 2);
    return kern_bf16_to_f32(h);
}

#define DEFINE_DOTS(type)                                                                        \
    float kern__dot_##type##_avx512(const void *row, const void *xv, int64_t n)                 \
    {                                                                                            \
        const float *x = xv;                                       \
        __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;                              \
        int64_t i = 0;                                                                           \
        for (; i + 64 <= n; i += 64) {                                                           \
            prefetch(row, i, sizeof(elem_##type));                                               \
            a0 = _mm512_fmadd_ps(load16_##type(row, i), _mm512_loadu_ps(x + i), a0);            \
            a1 = _mm512_fmadd_ps(load16_##type(row, i + 16), _mm512_loadu_ps(x + i + 16), a1);  \
            a2 = _mm512_fmadd_ps(load16_##type(row, i + 32), _mm512_loadu_ps(x + i + 32), a2);  \
            a3 = _mm512_fmadd_ps(load16_##type(row, i + 48), _mm512_loadu_ps(x + i + 48), a3);  \
        }                                                                                        \
        for (; i + 16 <= n; i += 16)                                                             \
            a0 = _mm512_fmadd_ps(load16_##type(row, i), _mm512_loadu_ps(x + i), a0);             \
        float sum = _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3))); \
        for (; i < n; i++) sum += scalar_##type(row, i) * x[i];                                  \
        return sum;                                                                              \
    }                                                                                            \
                                                                                                 \
    static void dot2_##type(const void *row, const float *x, const float *y, int64_t n,         \
                            float *out)                                                          \
    {                                                                                            \
        __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;                              \
        __m512 b0 = a0, b1 = a0, b2 = a0, b3 = a0;                                               \
        int64_t i = 0;                                                                           \
        for (; i + 64 <= n; i += 64) {                                                           \
            prefetch(row, i, sizeof(elem_##type));                                               \
            __m512 w0 = load16_##type(row, i), w1 = load16_##type(row, i + 16);                  \
            a0 = _mm512_fmadd_ps(w0, _mm512_loadu_ps(x + i), a0);                                \
            b0 = _mm512_fmadd_ps(w0, _mm512_loadu_ps(y + i), b0);                                \
            a1 = _mm512_fmadd_ps(w1, _mm512_loadu_ps(x + i + 16), a1);                           \
            b1 = _mm512_fmadd_ps(w1, _mm512_loadu_ps(y + i + 16), b1);                           \
            __m512 w2 = load16_##type(row, i + 32), w3 = load16_##type(row, i + 48);             \
            a2 = _mm512_fmadd_ps(w2, _mm512_loadu_ps(x + i + 32), a2);                           \
            b2 = _mm512_fmadd_ps(w2, _mm512_loadu_ps(y + i + 32), b2);                           \
            a3 = _mm512_fmadd_ps(w3, _mm512_loadu_ps(x + i + 48), a3);                           \
            b3 = _mm512_fmadd_ps(w3, _mm512_loadu_ps(y + i + 48), b3);                           \
        }                                                                                        \
        for (; i + 16 <= n; i += 16) {                                                           \
            __m512 w0 = load16_##type(row, i);                                                   \
            a0 = _mm512_fmadd_ps(w0, _mm512_loadu_ps(x + i), a0);                                \
            b0 = _mm512_fmadd_ps(w0, _mm512_loadu_ps(y + i), b0);                                \
        }                                                                                        \
        float sa = _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3))); \
        float sb = _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(b0, b1), _mm512_add_ps(b2, b3))); \
        for (; i < n; i++) {                                                                     \
            float w = scalar_##type(row, i);                                                     \
            sa += w * x[i];                                                                      \
            sb += w * y[i];                                                                      \
        }                                                                                        \
        out[0] = sa;                                                                             \
        out[1] = sb;                                                                             \
    }                                                                                            \
                                                                                                 \
    void kern__dot_multi_##type##_avx512(const void *row, const void *xv, size_t x_stride,     \
                                         int n_x, int64_t n, float *out)                        \
    {                                                                                            \
        int j = 0;                                                                               \
        const uint8_t *x = xv;                                                                   \
        for (; j + 2 <= n_x; j += 2)                                                             \
            dot2_##type(row, (const float *)(x + j * x_stride),                                  \
                        (const float *)(x + (j + 1) * x_stride), n, out + j);                    \
        if (j < n_x) out[j] = kern__dot_##type##_avx512(row, x + j * x_stride, n);               \
    }

DEFINE_DOTS(f32)
DEFINE_DOTS(f16)
DEFINE_DOTS(bf16)
