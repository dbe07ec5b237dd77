/*
 * AVX2 + FMA + F16C dot products (compiled with those flags; called only when the CPU has
 * them).  Decode is a streaming problem, so the loop keeps four independent accumulators to
 * hide FMA latency and converts each weight vector once; dot_multi converts a weight vector
 * once for two activation vectors.  Both use the same lanes in the same order, which makes a
 * token's result independent of the batch it is in.
 */
#include "kernels/cpu/avx2_util.h"
#include "kernels/cpu/cpu_internal.h"
#include "kernels/kernels.h"

#include <immintrin.h>
#include <string.h>

static inline __m256 load8_f32(const void *p, int64_t i)
{
    return _mm256_loadu_ps((const float *)p + i);
}

static inline __m256 load8_f16(const void *p, int64_t i)
{
    return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)((const uint16_t *)p + i)));
}

static inline __m256 load8_bf16(const void *p, int64_t i)
{
    __m256i w = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)((const uint16_t *)p + i)));
    return _mm256_castsi256_ps(_mm256_slli_epi32(w, 16));
}

/* Software prefetch a fixed distance ahead of the stream.  The hardware prefetchers stop at
 * 4 KiB page boundaries, and a weight row is often exactly a page (2048 F16 values), so
 * without this every row starts with a burst of demand misses.  Prefetching past the end of
 * the row runs into the next row, which is exactly what the matmul reads next. */
#define PREFETCH_BYTES 1024
static inline void prefetch(const void *row, int64_t i, size_t elem_size)
{
    _mm_prefetch((const char *)row + (size_t)i * elem_size + PREFETCH_BYTES, _MM_HINT_T0);
}

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

typedef float elem_f32;
typedef uint16_t elem_f16;
typedef uint16_t elem_bf16;

#define DEFINE_DOTS(type)                                                                          \
    float kern__dot_##type##_avx2(const void *row, const void *xv, int64_t n)                      \
    {                                                                                              \
        const float *x = xv;                                                                       \
        __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;                                \
        int64_t i = 0;                                                                             \
        for (; i + 32 <= n; i += 32) {                                                             \
            prefetch(row, i, sizeof(elem_##type));                                                 \
            a0 = _mm256_fmadd_ps(load8_##type(row, i), _mm256_loadu_ps(x + i), a0);                \
            a1 = _mm256_fmadd_ps(load8_##type(row, i + 8), _mm256_loadu_ps(x + i + 8), a1);        \
            a2 = _mm256_fmadd_ps(load8_##type(row, i + 16), _mm256_loadu_ps(x + i + 16), a2);      \
            a3 = _mm256_fmadd_ps(load8_##type(row, i + 24), _mm256_loadu_ps(x + i + 24), a3);      \
        }                                                                                          \
        for (; i + 8 <= n; i += 8)                                                                 \
            a0 = _mm256_fmadd_ps(load8_##type(row, i), _mm256_loadu_ps(x + i), a0);                \
        float sum = hsum8(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));            \
        for (; i < n; i++)                                                                         \
            sum += scalar_##type(row, i) * x[i];                                                   \
        return sum;                                                                                \
    }                                                                                              \
                                                                                                   \
    static void dot2_##type(const void *row, const float *x, const float *y, int64_t n,            \
                            float *out)                                                            \
    {                                                                                              \
        __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;                                \
        __m256 b0 = a0, b1 = a0, b2 = a0, b3 = a0;                                                 \
        int64_t i = 0;                                                                             \
        for (; i + 32 <= n; i += 32) {                                                             \
            prefetch(row, i, sizeof(elem_##type));                                                 \
            __m256 w0 = load8_##type(row, i), w1 = load8_##type(row, i + 8);                       \
            a0 = _mm256_fmadd_ps(w0, _mm256_loadu_ps(x + i), a0);                                  \
            b0 = _mm256_fmadd_ps(w0, _mm256_loadu_ps(y + i), b0);                                  \
            a1 = _mm256_fmadd_ps(w1, _mm256_loadu_ps(x + i + 8), a1);                              \
            b1 = _mm256_fmadd_ps(w1, _mm256_loadu_ps(y + i + 8), b1);                              \
            __m256 w2 = load8_##type(row, i + 16), w3 = load8_##type(row, i + 24);                 \
            a2 = _mm256_fmadd_ps(w2, _mm256_loadu_ps(x + i + 16), a2);                             \
            b2 = _mm256_fmadd_ps(w2, _mm256_loadu_ps(y + i + 16), b2);                             \
            a3 = _mm256_fmadd_ps(w3, _mm256_loadu_ps(x + i + 24), a3);                             \
            b3 = _mm256_fmadd_ps(w3, _mm256_loadu_ps(y + i + 24), b3);                             \
        }                                                                                          \
        for (; i + 8 <= n; i += 8) {                                                               \
            __m256 w0 = load8_##type(row, i);                                                      \
            a0 = _mm256_fmadd_ps(w0, _mm256_loadu_ps(x + i), a0);                                  \
            b0 = _mm256_fmadd_ps(w0, _mm256_loadu_ps(y + i), b0);                                  \
        }                                                                                          \
        float sa = hsum8(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));             \
        float sb = hsum8(_mm256_add_ps(_mm256_add_ps(b0, b1), _mm256_add_ps(b2, b3)));             \
        for (; i < n; i++) {                                                                       \
            float w = scalar_##type(row, i);                                                       \
            sa += w * x[i];                                                                        \
            sb += w * y[i];                                                                        \
        }                                                                                          \
        out[0] = sa;                                                                               \
        out[1] = sb;                                                                               \
    }                                                                                              \
                                                                                                   \
    void kern__dot_multi_##type##_avx2(const void *row, const void *xv, size_t x_stride, int n_x,  \
                                       int64_t n, float *out)                                      \
    {                                                                                              \
        int j = 0;                                                                                 \
        const uint8_t *x = xv;                                                                     \
        for (; j + 2 <= n_x; j += 2)                                                               \
            dot2_##type(row, (const float *)(x + j * x_stride),                                    \
                        (const float *)(x + (j + 1) * x_stride), n, out + j);                      \
        if (j < n_x) out[j] = kern__dot_##type##_avx2(row, x + j * x_stride, n);                   \
    }

DEFINE_DOTS(f32)
DEFINE_DOTS(f16)
DEFINE_DOTS(bf16)

/* An F16 row (a K or V row of the cache) to f32, once, for every head that reads it. */
void kern__f16_to_f32_avx2(const void *src, float *dst, int64_t n)
{
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(dst + i, load8_f16(src, i));
    for (; i < n; i++)
        dst[i] = scalar_f16(src, i);
}

/* y[i] += a * x[i] in f32 (multiply, then add: the scalar path's rounding). */
void kern__axpy_f32_avx2(float *y, float a, const float *x, int64_t n)
{
    __m256 va = _mm256_set1_ps(a);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(y + i, _mm256_add_ps(_mm256_loadu_ps(y + i),
                                              _mm256_mul_ps(va, _mm256_loadu_ps(x + i))));
    for (; i < n; i++)
        y[i] += a * x[i];
}

/* y[i] += a * f16 x[i], converting in registers: attention over an F16 cache where no other
 * head shares the row (no point converting it to a buffer first). */
void kern__axpy_f16_avx2(float *y, float a, const void *x, int64_t n)
{
    __m256 va = _mm256_set1_ps(a);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(y + i,
                         _mm256_add_ps(_mm256_loadu_ps(y + i), _mm256_mul_ps(va, load8_f16(x, i))));
    for (; i < n; i++)
        y[i] += a * scalar_f16(x, i);
}
