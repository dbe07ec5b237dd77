/*
 * Scalar reference dot products.  They accumulate in double so that they are the most
 * accurate member of each family: SIMD kernels are measured against them.
 */
#include "kernels/cpu/cpu_internal.h"
#include "kernels/kernels.h"

#include <string.h>

static inline uint16_t load_u16(const void *p, int64_t i)
{
    uint16_t h;
    memcpy(&h, (const uint8_t *)p + 2 * i, 2);
    return h;
}

float kern__dot_f32_scalar(const void *row, const void *xv, int64_t n)
{
    const float *w = row, *x = xv;
    double acc = 0.0;
    for (int64_t i = 0; i < n; i++)
        acc += (double)w[i] * x[i];
    return (float)acc;
}

float kern__dot_f16_scalar(const void *row, const void *xv, int64_t n)
{
    const float *x = xv;
    double acc = 0.0;
    for (int64_t i = 0; i < n; i++)
        acc += (double)kern_f16_to_f32(load_u16(row, i)) * x[i];
    return (float)acc;
}

float kern__dot_bf16_scalar(const void *row, const void *xv, int64_t n)
{
    const float *x = xv;
    double acc = 0.0;
    for (int64_t i = 0; i < n; i++)
        acc += (double)kern_bf16_to_f32(load_u16(row, i)) * x[i];
    return (float)acc;
}

KERN__MULTI_FROM_SINGLE(f32, scalar)
KERN__MULTI_FROM_SINGLE(f16, scalar)
KERN__MULTI_FROM_SINGLE(bf16, scalar)

void kern__f16_to_f32_scalar(const void *src, float *dst, int64_t n)
{
    const uint8_t *p = src;
    for (int64_t i = 0; i < n; i++) {
        uint16_t h;
        memcpy(&h, p + 2 * i, 2);
        dst[i] = kern_f16_to_f32(h);
    }
}

void kern__axpy_f32_scalar(float *y, float a, const float *x, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        y[i] += a * x[i];
}

void kern__axpy_f16_scalar(float *y, float a, const void *x, int64_t n)
{
    const uint8_t *p = x;
    for (int64_t i = 0; i < n; i++) {
        uint16_t h;
        memcpy(&h, p + 2 * i, 2);
        y[i] += a * kern_f16_to_f32(h);
    }
}
