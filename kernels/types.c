/*
 * The weight-type table and the scalar conversions every backend shares.
 *
 * Types are rows of one table (as in ggml's type traits) so that the model, the loader and
 * the tests ask one place for block geometry, the reference dequantiser and the dot product
 * at each SIMD level.  The scalar entries are the reference: SIMD kernels are tested against
 * them, never the other way round.
 */
#include "kernels/cpu/cpu_internal.h"
#include "kernels/cpu/quant_blocks.h"
#include "kernels/kernels.h"

#include <string.h>

float kern_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f;
    uint32_t mant = h & 0x3ff;
    uint32_t bits;
    if (exp == 0x1f) {
        bits = sign | 0x7f800000u | (mant << 13); /* inf / nan keep their payload */
    } else if (exp != 0) {
        bits = sign | ((exp + 112) << 23) | (mant << 13);
    } else if (mant == 0) {
        bits = sign;
    } else {
        /* subnormal: normalise the mantissa into an f32 normal */
        int shift = 0;
        while (!(mant & 0x400)) {
            mant <<= 1;
            shift++;
        }
        mant &= 0x3ff;
        bits = sign | ((uint32_t)(113 - shift) << 23) | (mant << 13);
    }
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

uint16_t kern_f32_to_f16(float f)
{
    uint32_t x;
    memcpy(&x, &f, sizeof x);
    uint32_t sign = (x >> 16) & 0x8000;
    uint32_t absx = x & 0x7fffffffu;
    if (absx > 0x7f800000u) return (uint16_t)(sign | 0x7e00 | ((absx >> 13) & 0x3ff)); /* nan */
    if (absx >= 0x477ff000u) return (uint16_t)(sign | 0x7c00); /* overflow rounds to inf */
    if (absx < 0x38800000u) {
        /* result is subnormal or zero: shift the implicit-one mantissa into place and round
         * half to even on the bits shifted out */
        if (absx < 0x33000000u) return (uint16_t)sign;
        uint32_t e = absx >> 23;
        uint32_t m = (absx & 0x7fffff) | 0x800000;
        uint32_t shift = 126 - e; /* 14 .. 24 */
        uint32_t half = m >> shift;
        uint32_t rem = m & ((1u << shift) - 1);
        uint32_t mid = 1u << (shift - 1);
        if (rem > mid || (rem == mid && (half & 1))) half++;
        return (uint16_t)(sign | half);
    }
    uint32_t r = absx + 0xfff + ((absx >> 13) & 1) - (112u << 23);
    return (uint16_t)(sign | (r >> 13));
}

uint16_t kern_f32_to_bf16(float f)
{
    uint32_t x;
    memcpy(&x, &f, sizeof x);
    if ((x & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((x >> 16) | 0x40); /* quiet nan */
    return (uint16_t)((x + 0x7fff + ((x >> 16) & 1)) >> 16);
}

static void f32_to_f32(const void *src, float *dst, int64_t n)
{
    memcpy(dst, src, (size_t)n * sizeof(float));
}

static void f16_to_f32_row(const void *src, float *dst, int64_t n)
{
    const uint8_t *p = src;
    for (int64_t i = 0; i < n; i++) {
        uint16_t h;
        memcpy(&h, p + 2 * i, 2);
        dst[i] = kern_f16_to_f32(h);
    }
}

static void bf16_to_f32_row(const void *src, float *dst, int64_t n)
{
    const uint8_t *p = src;
    for (int64_t i = 0; i < n; i++) {
        uint16_t h;
        memcpy(&h, p + 2 * i, 2);
        dst[i] = kern_bf16_to_f32(h);
    }
}

static void q8_1_to_f32(const void *src, float *dst, int64_t n)
{
    const block_q8_1 *b = src;
    for (int64_t i = 0; i < n / QK8_1; i++)
        for (int j = 0; j < QK8_1; j++)
            dst[i * QK8_1 + j] = (float)b[i].qs[j] * kern_f16_to_f32(b[i].d);
}

static void q8_K_to_f32(const void *src, float *dst, int64_t n)
{
    const block_q8_K *b = src;
    for (int64_t i = 0; i < n / QK_K; i++)
        for (int j = 0; j < QK_K; j++)
            dst[i * QK_K + j] = (float)b[i].qs[j] * b[i].d;
}

/* One row per storage type: geometry and the scalar reference dequantiser.  How a backend
 * computes with the type is in that backend's own table (kernels/cpu/cpu_types.c). */
#define QUANT_ROW(TYPE, lower, elems, act)                                                         \
    [KERN_T_##TYPE] = {.name = #TYPE,                                                              \
                       .block_elems = elems,                                                       \
                       .block_bytes = sizeof(block_##lower),                                       \
                       .to_f32 = kern__to_f32_##lower,                                             \
                       .act_type = KERN_T_##act}

static const kern_type_traits type_table[KERN_T_COUNT] = {
    QUANT_ROW(Q4_0, q4_0, QK4_0, Q8_0),
    QUANT_ROW(Q4_1, q4_1, QK4_1, Q8_1),
    QUANT_ROW(Q5_0, q5_0, QK5_0, Q8_0),
    QUANT_ROW(Q5_1, q5_1, QK5_1, Q8_1),
    QUANT_ROW(Q4_K, q4_K, QK_K, Q8_K),
    QUANT_ROW(Q5_K, q5_K, QK_K, Q8_K),
    QUANT_ROW(Q6_K, q6_K, QK_K, Q8_K),
    QUANT_ROW(Q2_K, q2_K, QK_K, Q8_K),
    QUANT_ROW(Q3_K, q3_K, QK_K, Q8_K),
    QUANT_ROW(IQ4_NL, iq4_nl, QK4_NL, Q8_0),
    QUANT_ROW(IQ4_XS, iq4_xs, QK_K, Q8_K),
    QUANT_ROW(MXFP4, mxfp4, QK_MXFP4, Q8_0),
    [KERN_T_Q8_0] = {.name = "Q8_0",
                     .block_elems = QK8_0,
                     .block_bytes = sizeof(block_q8_0),
                     .to_f32 = kern__to_f32_q8_0,
                     .act_type = KERN_T_Q8_0,
                     .from_f32 = kern__quantize_q8_0_scalar},
    [KERN_T_Q8_1] = {.name = "Q8_1",
                     .block_elems = QK8_1,
                     .block_bytes = sizeof(block_q8_1),
                     .to_f32 = q8_1_to_f32,
                     .act_type = KERN_T_Q8_1,
                     .activation_only = true,
                     .from_f32 = kern__quantize_q8_1_scalar},
    [KERN_T_Q8_K] = {.name = "Q8_K",
                     .block_elems = QK_K,
                     .block_bytes = sizeof(block_q8_K),
                     .to_f32 = q8_K_to_f32,
                     .act_type = KERN_T_Q8_K,
                     .activation_only = true,
                     .from_f32 = kern__quantize_q8_K_scalar},
    [KERN_T_F32] = {.name = "F32", .block_elems = 1, .block_bytes = 4, .to_f32 = f32_to_f32},
    [KERN_T_F16] = {.name = "F16", .block_elems = 1, .block_bytes = 2, .to_f32 = f16_to_f32_row},
    [KERN_T_BF16] = {.name = "BF16", .block_elems = 1, .block_bytes = 2, .to_f32 = bf16_to_f32_row},
};

const kern_type_traits *kern_type_info(uint32_t type)
{
    if (type >= KERN_T_COUNT || !type_table[type].name) return NULL;
    return &type_table[type];
}

bool kern_type_supported(uint32_t type)
{
    const kern_type_traits *t = kern_type_info(type);
    return t && !t->activation_only;
}

size_t kern_row_bytes(uint32_t type, int64_t n_cols)
{
    const kern_type_traits *t = kern_type_info(type);
    if (!t || n_cols <= 0 || n_cols % t->block_elems) return 0;
    return (size_t)(n_cols / t->block_elems) * t->block_bytes;
}
