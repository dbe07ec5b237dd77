/*
 * Scalar reference code for the types the largest MoE models ship their experts in: the 2- and
 * 3-bit K-quants (Q2_K, Q3_K), the non-linear 4-bit IQ4_NL / IQ4_XS and gpt-oss's MXFP4.  Kept
 * apart from quant_ref.c only for length; the contract is the same: dequantisers bit-exact with
 * gguf-py (ggml's float32 operation order), and integer dot products against 8-bit activation
 * blocks of the weight block's length (Q8_0 for the 32-element types, Q8_K for the 256-element
 * ones), with the block scales the only floating point.
 *
 * IQ4_NL, IQ4_XS and MXFP4 look their codes up in a 16-entry table of small integers, so the
 * table values (not the codes) are what the integer sums multiply: a table lookup costs what
 * Q4_0's "- 8" costs, and SIMD does it with one byte shuffle.
 */
#include "kernels/cpu/cpu_internal.h"
#include "kernels/cpu/quant_blocks.h"
#include "kernels/kernels.h"

static inline float h2f(kern_half h)
{
    return kern_f16_to_f32(h);
}

/* ---- dequantisers ------------------------------------------------------------------------- */

void kern__to_f32_q2_K(const void *src, float *dst, int64_t n)
{
    const block_q2_K *b = src;
    for (int64_t i = 0; i < n / QK_K; i++) {
        float d = h2f(b[i].d), dmin = h2f(b[i].dmin);
        float *y = dst + i * QK_K;
        /* Output 128c + 32j + 16h + l is bits 2j..2j+1 of qs[32c + 16h + l], sub-block
         * 8c + 2j + h: each 32 bytes of qs hold four 2-bit planes of 128 outputs. */
        for (int c = 0; c < 2; c++)
            for (int j = 0; j < 4; j++)
                for (int h = 0; h < 2; h++) {
                    uint8_t sc = b[i].scales[8 * c + 2 * j + h];
                    float dl = d * (float)(sc & 0xF), ml = dmin * (float)(sc >> 4);
                    const uint8_t *q = b[i].qs + 32 * c + 16 * h;
                    for (int l = 0; l < 16; l++)
                        y[128 * c + 32 * j + 16 * h + l] = dl * (float)((q[l] >> (2 * j)) & 3) - ml;
                }
    }
}

void kern__to_f32_q3_K(const void *src, float *dst, int64_t n)
{
    const block_q3_K *b = src;
    for (int64_t i = 0; i < n / QK_K; i++) {
        float d = h2f(b[i].d);
        float *y = dst + i * QK_K;
        /* Q2_K's plane layout; the third bit of output 128c + 32j + 16h + l is bit 4c + j of
         * hmask[16h + l]. */
        for (int c = 0; c < 2; c++)
            for (int j = 0; j < 4; j++)
                for (int h = 0; h < 2; h++) {
                    float dl = d * (float)(kern__scale_q3_K(8 * c + 2 * j + h, b[i].scales) - 32);
                    const uint8_t *q = b[i].qs + 32 * c + 16 * h, *hm = b[i].hmask + 16 * h;
                    for (int l = 0; l < 16; l++) {
                        int v = ((q[l] >> (2 * j)) & 3) - ((hm[l] >> (4 * c + j)) & 1 ? 0 : 4);
                        y[128 * c + 32 * j + 16 * h + l] = dl * (float)v;
                    }
                }
    }
}

void kern__to_f32_iq4_nl(const void *src, float *dst, int64_t n)
{
    const block_iq4_nl *b = src;
    for (int64_t i = 0; i < n / QK4_NL; i++) {
        float d = h2f(b[i].d);
        for (int j = 0; j < QK4_NL / 2; j++) {
            dst[i * QK4_NL + j] = d * (float)kern__kvalues_iq4nl[b[i].qs[j] & 0xF];
            dst[i * QK4_NL + j + 16] = d * (float)kern__kvalues_iq4nl[b[i].qs[j] >> 4];
        }
    }
}

void kern__to_f32_iq4_xs(const void *src, float *dst, int64_t n)
{
    const block_iq4_xs *b = src;
    for (int64_t i = 0; i < n / QK_K; i++) {
        float d = h2f(b[i].d);
        for (int s = 0; s < QK_K / 32; s++) {
            float dl = d * (float)(kern__scale_iq4_xs(s, &b[i]) - 32);
            const uint8_t *q = b[i].qs + 16 * s;
            float *y = dst + i * QK_K + 32 * s;
            for (int j = 0; j < 16; j++) {
                y[j] = dl * (float)kern__kvalues_iq4nl[q[j] & 0xF];
                y[j + 16] = dl * (float)kern__kvalues_iq4nl[q[j] >> 4];
            }
        }
    }
}

void kern__to_f32_mxfp4(const void *src, float *dst, int64_t n)
{
    const block_mxfp4 *b = src;
    for (int64_t i = 0; i < n / QK_MXFP4; i++) {
        float d = kern__e8m0_to_f32_half(b[i].e);
        for (int j = 0; j < QK_MXFP4 / 2; j++) {
            dst[i * QK_MXFP4 + j] = (float)kern__kvalues_mxfp4[b[i].qs[j] & 0xF] * d;
            dst[i * QK_MXFP4 + j + 16] = (float)kern__kvalues_mxfp4[b[i].qs[j] >> 4] * d;
        }
    }
}

/* ---- dot products -------------------------------------------------------------------------- */

/* Q2_K: sum_s d*sc_s*(q.y)_s - dmin * sum_s m_s*(sum of y over sub-block s); Q8_K's bsums are
 * exactly the per-16 sums the mins need. */
float kern__dot_q2_K_scalar(const void *row, const void *xq, int64_t n)
{
    const block_q2_K *w = row;
    const block_q8_K *y = xq;
    float sum = 0.0f;
    for (int64_t i = 0; i < n / QK_K; i++) {
        int sumi = 0, summ = 0;
        for (int c = 0; c < 2; c++)
            for (int j = 0; j < 4; j++)
                for (int h = 0; h < 2; h++) {
                    int s = 8 * c + 2 * j + h;
                    const uint8_t *q = w[i].qs + 32 * c + 16 * h;
                    const int8_t *yq = y[i].qs + 128 * c + 32 * j + 16 * h;
                    int dot = 0;
                    for (int l = 0; l < 16; l++)
                        dot += ((q[l] >> (2 * j)) & 3) * yq[l];
                    sumi += (w[i].scales[s] & 0xF) * dot;
                    summ += (w[i].scales[s] >> 4) * y[i].bsums[s];
                }
        sum += h2f(w[i].d) * y[i].d * (float)sumi - h2f(w[i].dmin) * y[i].d * (float)summ;
    }
    return sum;
}

float kern__dot_q3_K_scalar(const void *row, const void *xq, int64_t n)
{
    const block_q3_K *w = row;
    const block_q8_K *y = xq;
    float sum = 0.0f;
    for (int64_t i = 0; i < n / QK_K; i++) {
        int sumi = 0;
        for (int c = 0; c < 2; c++)
            for (int j = 0; j < 4; j++)
                for (int h = 0; h < 2; h++) {
                    int s = 8 * c + 2 * j + h;
                    const uint8_t *q = w[i].qs + 32 * c + 16 * h, *hm = w[i].hmask + 16 * h;
                    const int8_t *yq = y[i].qs + 128 * c + 32 * j + 16 * h;
                    int dot = 0;
                    for (int l = 0; l < 16; l++) {
                        int v = ((q[l] >> (2 * j)) & 3) - ((hm[l] >> (4 * c + j)) & 1 ? 0 : 4);
                        dot += v * yq[l];
                    }
                    sumi += (kern__scale_q3_K(s, w[i].scales) - 32) * dot;
                }
        sum += h2f(w[i].d) * y[i].d * (float)sumi;
    }
    return sum;
}

/* The 32-element table types against Q8_0: the block's integer sum over table values. */
static inline int dot_table32(const int8_t table[16], const uint8_t *qs, const int8_t *yq)
{
    int sumi = 0;
    for (int j = 0; j < 16; j++)
        sumi += table[qs[j] & 0xF] * yq[j] + table[qs[j] >> 4] * yq[j + 16];
    return sumi;
}

float kern__dot_iq4_nl_scalar(const void *row, const void *xq, int64_t n)
{
    const block_iq4_nl *w = row;
    const block_q8_0 *y = xq;
    float sum = 0.0f;
    for (int64_t i = 0; i < n / QK4_NL; i++) {
        int sumi = dot_table32(kern__kvalues_iq4nl, w[i].qs, y[i].qs);
        sum += (float)sumi * (h2f(w[i].d) * h2f(y[i].d));
    }
    return sum;
}

float kern__dot_mxfp4_scalar(const void *row, const void *xq, int64_t n)
{
    const block_mxfp4 *w = row;
    const block_q8_0 *y = xq;
    float sum = 0.0f;
    for (int64_t i = 0; i < n / QK_MXFP4; i++) {
        int sumi = dot_table32(kern__kvalues_mxfp4, w[i].qs, y[i].qs);
        sum += (float)sumi * (kern__e8m0_to_f32_half(w[i].e) * h2f(y[i].d));
    }
    return sum;
}

float kern__dot_iq4_xs_scalar(const void *row, const void *xq, int64_t n)
{
    const block_iq4_xs *w = row;
    const block_q8_K *y = xq;
    float sum = 0.0f;
    for (int64_t i = 0; i < n / QK_K; i++) {
        int sumi = 0;
        for (int s = 0; s < QK_K / 32; s++) {
            int dot = dot_table32(kern__kvalues_iq4nl, w[i].qs + 16 * s, y[i].qs + 32 * s);
            sumi += (kern__scale_iq4_xs(s, &w[i]) - 32) * dot;
        }
        sum += h2f(w[i].d) * y[i].d * (float)sumi;
    }
    return sum;
}

KERN__MULTI_FROM_SINGLE(q2_K, scalar)
KERN__MULTI_FROM_SINGLE(q3_K, scalar)
KERN__MULTI_FROM_SINGLE(iq4_nl, scalar)
KERN__MULTI_FROM_SINGLE(iq4_xs, scalar)
KERN__MULTI_FROM_SINGLE(mxfp4, scalar)
