/*
 * The CPU backend's half of the type table: for each storage type, its dot products and
 * activation quantisers at every instruction-set level.  Kept apart from kernels/types.c so
 * that the backend-neutral table knows nothing about x86 levels.
 */
#include "kernels/cpu/cpu.h"
#include "kernels/cpu/cpu_internal.h"
#include "kernels/cpu/quant_blocks.h"

/* A quantised weight type: scalar reference, AVX2 and AVX-512 VNNI kernels (quant_avx512.c).
 * The plain AVX-512 level has none: a CPU with AVX-512 but without VNNI runs AVX2, since the
 * integer kernels gain little from AVX-512 without vpdpbusd. */
#define QUANT_ROW(TYPE, lower)                                                                     \
    [KERN_T_##TYPE] = {                                                                            \
        .dot = {kern__dot_##lower##_scalar, kern__dot_##lower##_avx2, NULL,                        \
                kern__dot_##lower##_vnni},                                                         \
        .dot_multi = {kern__dot_multi_##lower##_scalar, kern__dot_multi_##lower##_avx2, NULL,      \
                      kern__dot_multi_##lower##_vnni},                                             \
    }

/* Quantised weight types without VNNI kernels (yet): cpu.c runs the best level at or below the
 * CPU's that has a kernel, here AVX2. */
#define AVX2_ROW(TYPE, lower)                                                                      \
    [KERN_T_##TYPE] = {                                                                            \
        .dot = {kern__dot_##lower##_scalar, kern__dot_##lower##_avx2, NULL, NULL},                 \
        .dot_multi = {kern__dot_multi_##lower##_scalar, kern__dot_multi_##lower##_avx2, NULL,      \
                      NULL},                                                                       \
    }

/* The float types have no VNNI-specific kernels: their AVX-512 kernels fill both levels. */
static const kern_cpu_type type_table[KERN_T_COUNT] = {
    QUANT_ROW(Q4_0, q4_0),
    QUANT_ROW(Q4_1, q4_1),
    QUANT_ROW(Q5_0, q5_0),
    QUANT_ROW(Q5_1, q5_1),
    QUANT_ROW(Q4_K, q4_K),
    QUANT_ROW(Q5_K, q5_K),
    QUANT_ROW(Q6_K, q6_K),
    AVX2_ROW(Q2_K, q2_K),
    AVX2_ROW(Q3_K, q3_K),
    QUANT_ROW(IQ4_NL, iq4_nl),
    QUANT_ROW(IQ4_XS, iq4_xs),
    QUANT_ROW(MXFP4, mxfp4),
    [KERN_T_Q8_0] =
        {
            .dot = {kern__dot_q8_0_scalar, kern__dot_q8_0_avx2, NULL, kern__dot_q8_0_vnni},
            .dot_multi = {kern__dot_multi_q8_0_scalar, kern__dot_multi_q8_0_avx2, NULL,
                          kern__dot_multi_q8_0_vnni},
            .from_f32 = {kern__quantize_q8_0_scalar, kern__quantize_q8_0_avx2, NULL},
        },
    [KERN_T_Q8_1] =
        {
            .from_f32 = {kern__quantize_q8_1_scalar, kern__quantize_q8_1_avx2, NULL},
        },
    [KERN_T_Q8_K] =
        {
            .from_f32 = {kern__quantize_q8_K_scalar, kern__quantize_q8_K_avx2, NULL},
        },
    [KERN_T_F32] =
        {
            .dot = {kern__dot_f32_scalar, kern__dot_f32_avx2, kern__dot_f32_avx512,
                    kern__dot_f32_avx512},
            .dot_multi = {kern__dot_multi_f32_scalar, kern__dot_multi_f32_avx2,
                          kern__dot_multi_f32_avx512, kern__dot_multi_f32_avx512},
        },
    [KERN_T_F16] =
        {
            .dot = {kern__dot_f16_scalar, kern__dot_f16_avx2, kern__dot_f16_avx512,
                    kern__dot_f16_avx512},
            .dot_multi = {kern__dot_multi_f16_scalar, kern__dot_multi_f16_avx2,
                          kern__dot_multi_f16_avx512, kern__dot_multi_f16_avx512},
        },
    [KERN_T_BF16] =
        {
            .dot = {kern__dot_bf16_scalar, kern__dot_bf16_avx2, kern__dot_bf16_avx512,
                    kern__dot_bf16_avx512},
            .dot_multi = {kern__dot_multi_bf16_scalar, kern__dot_multi_bf16_avx2,
                          kern__dot_multi_bf16_avx512, kern__dot_multi_bf16_avx512},
        },
};

const kern_cpu_type *kern_cpu_type_kernels(uint32_t type)
{
    if (type >= KERN_T_COUNT || !kern_type_info(type)) return NULL;
    return &type_table[type];
}
