/*
 * Scalar reference code for the quantised types: dequantisers (bit-exact with gguf-py's
 * `dequantize`, which follows ggml's float32 operation order), the activation quantisers
 * (Q8_0, Q8_1, Q8_K) and the integer dot products.  These are the definitions the SIMD
 * kernels are tested against; they favour the plainest reading of each format.
 *
 * Dot products follow ggml's scheme: activations are quantised once per matmul to 8-bit
 * blocks of the same length as the weight blocks, each block pair is summed in integers, and
 * only the per-block scales are floating point.  This is what makes decode a pure memory
 * stream: a 4.5-bit weight costs one byte operation, not a float conversion.
 */
#include "kernels/cpu/cpu_internal.h"
#include "kernels/cpu/quant_blocks.h"
#include "kernels/kernels.h"

#include <math.h>
#include <string.h>

static inline float h2f(kern_half h)
{
    return kern_f16_to_f32(h);
}

static inline uint32_t load_u32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* ---- dequantisers ------------------------------------------------------------------------- */

void kern__to_f32_q8_0(const void *src, float *dst, int64_t n)
{
    const block_q8_0 *b = src;
    for (int64_t i = 0; i < n / QK8_0; i++) {
        float d = h2f(b[i].d);
        for (int j = 0; j < QK8_0; j++) dst[i * QK8_0 + j] = (float)b[i].qs[j] * d;
    }
}

void kern__to_f32_q4_0(const void *src, float *dst, int64_t n)
{
    const block_q4_0 *b = src;
    for (int64_t i = 0; i < n / QK4_0; i++) {
        float d = h2f(b[i].d);
        for (int j = 0; j < QK4_0 / 2; j++) {
            dst[i * QK4_0 + j] = d * (float)((b[i].qs[j] & 0xF) - 8);
            dst[i * QK4_0 + j + 16] = d * (float)((b[i].qs[j] >> 4) - 8);
        }
    }
}

void kern__to_f32_q4_1(const void *src, float *dst, int64_t n)
{
    const block_q4_1 *b = src;
    for (int64_t i = 0; i < n / QK4_1; i++) {
        float d = h2f(b[i].d), m = h2f(b[i].m);
        for (int j = 0; j < QK4_1 / 2; j++) {
            dst[i * QK4_1 + j] = d * (float)(b[i].qs[j] & 0xF) + m;
            dst[i * QK4_1 + j + 16] = d * (float)(b[i].qs[j] >> 4) + m;
        }
    }
}

void kern__to_f32_q5_0(const void *src, float *dst, int64_t n)
{
    const block_q5_0 *b = src;
    for (int64_t i = 0; i < n / QK5_0; i++) {
        float d = h2f(b[i].d);
        uint32_t qh = load_u32(b[i].qh);
        for (int j = 0; j < QK5_0 / 2; j++) {
            int lo = (b[i].qs[j] & 0xF) | (int)(((qh >> j) & 1) << 4);
            int hi = (b[i].qs[j] >> 4) | (int)(((qh >> (j + 16)) & 1) << 4);
            dst[i * QK5_0 + j] = d * (float)(lo - 16);
            dst[i * QK5_0 + j + 16] = d * (float)(hi - 16);
        }
    }
}

void kern__to_f32_q5_1(const void *src, float *dst, int64_t n)
{
    const block_q5_1 *b = src;
    for (int64_t i = 0; i < n / QK5_1; i++) {
        float d = h2f(b[i].d), m = h2f(b[i].m);
        uint32_t qh = load_u32(b[i].qh);
        for (int j = 0; j < QK5_1 / 2; j++) {
            int lo = (b[i].qs[j] & 0xF) | (int)(((qh >> j) & 1) << 4);
            int hi = (b[i].qs[j] >> 4) | (int)(((qh >> (j + 16)) & 1) << 4);
            dst[i * QK5_1 + j] = d * (float)lo + m;
            dst[i * QK5_1 + j + 16] = d * (float)hi + m;
        }
    }
}

void kern__to_f32_q4_K(const void *src, float *dst, int64_t n)
{
    const block_q4_K *b = src;
    for (int64_t i = 0; i < n / QK_K; i++) {
        float d = h2f(b[i].d), dmin = h2f(b[i].dmin);
        const uint8_t *q = b[i].qs;
        float *y = dst + i * QK_K;
        for (int c = 0; c < 4; c++) { /* 64 outputs per chunk: two sub-blocks */
            uint8_t sc, m;
            kern__scale_min_k4(2 * c, b[i].scales, &sc, &m);
            float d1 = d * (float)sc, m1 = dmin * (float)m;
            kern__scale_min_k4(2 * c + 1, b[i].scales, &sc, &m);
            float d2 = d * (float)sc, m2 = dmin * (float)m;
            for (int l = 0; l < 32; l++) y[64 * c + l] = d1 * (float)(q[32 * c + l] & 0xF) - m1;
            for (int l = 0; l < 32; l++) y[64 * c + 32 + l] = d2 * (float)(q[32 * c + l] >> 4) - m2;
        }
    }
}

void kern__to_f32_q5_K(const void *src, float *dst, int64_t n)
{
    const block_q5_K *b = src;
    for (int64_t i = 0; i < n / QK_K; i++) {
        float d = h2f(b[i].d), dmin = h2f(b[i].dmin);
        const uint8_t *q = b[i].qs, *qh = b[i].qh;
        float *y = dst + i * QK_K;
        for (int c = 0; c < 4; c++) {
            uint8_t sc, m;
            kern__scale_min_k4(2 * c, b[i].scales, &sc, &m);
            float d1 = d * (float)sc, m1 = dmin * (float)m;
            kern__scale_min_k4(2 * c + 1, b[i].scales, &sc, &m);
            float d2 = d * (float)sc, m2 = dmin * (float)m;
            for (int l = 0; l < 32; l++) {
                int lo = (q[32 * c + l] & 0xF) + ((qh[l] >> (2 * c)) & 1) * 16;
                int hi = (q[32 * c + l] >> 4) + ((qh[l] >> (2 * c + 1)) & 1) * 16;
                y[64 * c + l] = d1 * (float)lo - m1;
                y[64 * c + 32 + l] = d2 * (float)hi - m2;
            }
        }
    }
}

void kern__to_f32_q6_K(const void *src, float *dst, int64_t n)
{
    const block_q6_K *b = src;
    for (int64_t i = 0; i < n / QK_K; i++) {
        float d = h2f(b[i].d);
        for (int h = 0; h < 2; h++) {
            const uint8_t *ql = b[i].ql + 64 * h, *qh = b[i].qh + 32 * h;
            const int8_t *sc = b[i].scales + 8 * h;
            float *y = dst + i * QK_K + 128 * h;
            for (int l = 0; l < 32; l++) {
                int s = l / 16;
                int qa = ((ql[l] & 0xF) | ((qh[l] >> 0) & 3) << 4) - 32;
                int qb = ((ql[l + 32] & 0xF) | ((qh[l] >> 2) & 3) << 4) - 32;
                int qc = ((ql[l] >> 4) | ((qh[l] >> 4) & 3) << 4) - 32;
                int qd = ((ql[l + 32] >> 4) | ((qh[l] >> 6) & 3) << 4) - 32;
                y[l] = (d * (float)sc[s + 0]) * (float)qa;
                y[l + 32] = (d * (float)sc[s + 2]) * (float)qb;
                y[l + 64] = (d * (float)sc[s + 4]) * (float)qc;
                y[l + 96] = (d * (float)sc[s + 6]) * (float)qd;
            }
        }
    }
}

/* ---- activation quantisers --------------------------------------------------------------- */

void kern__quantize_q8_0_scalar(const float *x, void *dst, int64_t n)
{
    block_q8_0 *b = dst;
    for (int64_t i = 0; i < n / QK8_0; i++) {
        const float *v = x + i * QK8_0;
        float amax = 0.0f;
        for (int j = 0; j < QK8_0; j++) amax = fmaxf(amax, fabsf(v[j]));
        float d = amax / 127.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
        b[i].d = kern_f32_to_f16(d);
        for (int j = 0; j < QK8_0; j++) b[i].qs[j] = (int8_t)roundf(v[j] * id);
    }
}

void kern__quantize_q8_1_scalar(const float *x, void *dst, int64_t n)
{
    block_q8_1 *b = dst;
    for (int64_t i = 0; i < n / QK8_1; i++) {
        const float *v = x + i * QK8_1;
        float amax = 0.0f;
        for (int j = 0; j < QK8_1; j++) amax = fmaxf(amax, fabsf(v[j]));
        float d = amax / 127.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
        int sum = 0;
        for (int j = 0; j < QK8_1; j++) {
            b[i].qs[j] = (int8_t)roundf(v[j] * id);
            sum += b[i].qs[j];
        }
        b[i].d = kern_f32_to_f16(d);
        b[i].s = kern_f32_to_f16((float)sum * d);
    }
}

void kern__quantize_q8_K_scalar(const float *x, void *dst, int64_t n)
{
    block_q8_K *b = dst;
    for (int64_t i = 0; i < n / QK_K; i++) {
        const float *v = x + i * QK_K;
        float amax = 0.0f, max = 0.0f;
        for (int j = 0; j < QK_K; j++) {
            if (fabsf(v[j]) > amax) {
                amax = fabsf(v[j]);
                max = v[j];
            }
        }
        if (amax == 0.0f) {
            memset(&b[i], 0, sizeof b[i]);
            continue;
        }
        /* The signed extreme maps to -127 exactly, as ggml does; every q stays in [-127, 127]. */
        float iscale = -127.0f / max;
        for (int j = 0; j < QK_K; j++) {
            int q = (int)lrintf(iscale * v[j]);
            b[i].qs[j] = (int8_t)(q > 127 ? 127 : q);
        }
        for (int g = 0; g < QK_K / 16; g++) {
            int sum = 0;
            for (int j = 0; j < 16; j++) sum += b[i].qs[16 * g + j];
            b[i].bsums[g] = (int16_t)sum;
        }
        b[i].d = 1.0f / iscale;
    }
}

/* ---- dot products -------------------------------------------------------------------------- */

float kern__dot_q8_0_scalar(const void *row, const void *xq, int64_t n)
{
    const block_q8_0 *w = row, *y = xq;
    float sum = 0.0f;
    for (int64_t i = 0; i < n / QK8_0; i++) {
        int sumi = 0;
        for (int j = 0; j < QK8_0; j++) sumi += w[i].qs[j] * y[i].qs[j];
        sum += (float)sumi * (h2f(w[i].d) * h2f(y[i].d));
    }
    return sum;
}

float kern__dot_q4_0_scalar(const void *row, const void *xq, int64_t n)
{
    const block_q4_0 *w = row;
    const block_q8_0 *y = xq;
    float sum = 0.0f;
    for (int64_t i = 0; i < n / QK4_0; i++) {
        int sumi = 0;
        for (int j = 0; j < 16; j++)
            sumi += ((w[i].qs[j] & 0xF) - 8) * y[i].qs[j] + ((w[i].qs[j] >> 4) - 8) * y[i].qs[j + 16];
        sum += (float)sumi * (h2f(w[i].d) * h2f(y[i].d));
    }
    return sum;
}

float kern__dot_q4_1_scalar(const void *row, const void *xq, int64_t n)
{
    const block_q4_1 *w = row;
    const block_q8_1 *y = xq;
    float sum = 0.0f;
    for (int64_t i = 0; i < n / QK4_1; i++) {
        int sumi = 0;
        for (int j = 0; j < 16; j++)
            sumi += (w[i].qs[j] & 0xF) * y[i].qs[j] + (w[i].qs[j] >> 4) * y[i].qs[j + 16];
        sum += (float)sumi * (h2f(w[i].d) * h2f(y[i].d)) + h2f(w[i].m) * h2f(y[i].s);
    }
    return sum;
}

float kern__dot_q5_0_scalar(const void *row, const void *xq, int64_t n)
{
    const block_q5_0 *w = row;
    const block_q8_0 *y = xq;
    float sum = 0.0f;
    for (int64_t i = 0; i < n / QK5_0; i++) {
        uint32_t qh = load_u32(w[i].qh);
        int sumi = 0;
        for (int j = 0; j < 16; j++) {
            int lo = ((w[i].qs[j] & 0xF) | (int)(((qh >> j) & 1) << 4)) - 16;
            int hi = ((w[i].qs[j] >> 4) | (int)(((qh >> (j + 16)) & 1) << 4)) - 16;
            sumi += lo * y[i].qs[j] + hi * y[i].qs[j + 16];
        }
        sum += (float)sumi * (h2f(w[i].d) * h2f(y[i].d));
    }
    return sum;
}

float kern__dot_q5_1_scalar(const void *row, const void *xq, int64_t n)
{
    const block_q5_1 *w = row;
    const block_q8_1 *y = xq;
    float sum = 0.0f;
    for (int64_t i = 0; i < n / QK5_1; i++) {
        uint32_t qh = load_u32(w[i].qh);
        int sumi = 0;
        for (int j = 0; j < 16; j++) {
            int lo = (w[i].qs[j] & 0xF) | (int)(((qh >> j) & 1) << 4);
            int hi = (w[i].qs[j] >> 4) | (int)(((qh >> (j + 16)) & 1) << 4);
            sumi += lo * y[i].qs[j] + hi * y[i].qs[j + 16];
        }
        sum += (float)sumi * (h2f(w[i].d) * h2f(y[i].d)) + h2f(w[i].m) * h2f(y[i].s);
    }
    return sum;
}

/* Q4_K / Q5_K: sum_j d*sc_j*(q.y)_j - dmin * sum_j m_j*(sum of y over sub-block j). */
static float dot_k4_common(const block_q8_K *y, float d, float dmin, const uint8_t *scales,
                           const int8_t *q)
{
    int sumi = 0, summ = 0;
    for (int j = 0; j < 8; j++) {
        uint8_t sc, m;
        kern__scale_min_k4(j, scales, &sc, &m);
        int s = 0;
        for (int l = 0; l < 32; l++) s += q[32 * j + l] * y->qs[32 * j + l];
        sumi += sc * s;
        summ += m * (y->bsums[2 * j] + y->bsums[2 * j + 1]);
    }
    return d * y->d * (float)sumi - dmin * y->d * (float)summ;
}

float kern__dot_q4_K_scalar(const void *row, const void *xq, int64_t n)
{
    const block_q4_K *w = row;
    const block_q8_K *y = xq;
    float sum = 0.0f;
    int8_t q[QK_K];
    for (int64_t i = 0; i < n / QK_K; i++) {
        for (int c = 0; c < 4; c++)
            for (int l = 0; l < 32; l++) {
                q[64 * c + l] = (int8_t)(w[i].qs[32 * c + l] & 0xF);
                q[64 * c + 32 + l] = (int8_t)(w[i].qs[32 * c + l] >> 4);
            }
        sum += dot_k4_common(&y[i], h2f(w[i].d), h2f(w[i].dmin), w[i].scales, q);
    }
    return sum;
}

float kern__dot_q5_K_scalar(const void *row, const void *xq, int64_t n)
{
    const block_q5_K *w = row;
    const block_q8_K *y = xq;
    float sum = 0.0f;
    int8_t q[QK_K];
    for (int64_t i = 0; i < n / QK_K; i++) {
        for (int c = 0; c < 4; c++)
            for (int l = 0; l < 32; l++) {
                q[64 * c + l] = (int8_t)((w[i].qs[32 * c + l] & 0xF) + ((w[i].qh[l] >> (2 * c)) & 1) * 16);
                q[64 * c + 32 + l] =
                    (int8_t)((w[i].qs[32 * c + l] >> 4) + ((w[i].qh[l] >> (2 * c + 1)) & 1) * 16);
            }
        sum += dot_k4_common(&y[i], h2f(w[i].d), h2f(w[i].dmin), w[i].scales, q);
    }
    return sum;
}

float kern__dot_q6_K_scalar(const void *row, const void *xq, int64_t n)
{
    const block_q6_K *w = row;
    const block_q8_K *y = xq;
    float sum = 0.0f;
    for (int64_t i = 0; i < n / QK_K; i++) {
        int sumi = 0;
        for (int h = 0; h < 2; h++) {
            const uint8_t *ql = w[i].ql + 64 * h, *qh = w[i].qh + 32 * h;
            const int8_t *sc = w[i].scales + 8 * h, *yq = y[i].qs + 128 * h;
            for (int part = 0; part < 4; part++) {
                for (int half = 0; half < 2; half++) {
                    int s = 0;
                    for (int l = 16 * half; l < 16 * half + 16; l++) {
                        int lo = part & 1 ? ql[l + 32] : ql[l];
                        int q4 = part < 2 ? lo & 0xF : lo >> 4;
                        int q = (q4 | ((qh[l] >> (2 * part)) & 3) << 4) - 32;
                        s += q * yq[32 * part + l];
                    }
                    sumi += sc[2 * part + half] * s;
                }
            }
        }
        sum += h2f(w[i].d) * y[i].d * (float)sumi;
    }
    return sum;
}

KERN__MULTI_FROM_SINGLE(q8_0, scalar)
KERN__MULTI_FROM_SINGLE(q4_0, scalar)
KERN__MULTI_FROM_SINGLE(q4_1, scalar)
KERN__MULTI_FROM_SINGLE(q5_0, scalar)
KERN__MULTI_FROM_SINGLE(q5_1, scalar)
KERN__MULTI_FROM_SINGLE(q4_K, scalar)
KERN__MULTI_FROM_SINGLE(q5_K, scalar)
KERN__MULTI_FROM_SINGLE(q6_K, scalar)
