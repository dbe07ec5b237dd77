/*
 * How the CUDA kernels read GGUF weight blocks, as code that compiles for the device and the
 * host alike, so that a machine without a GPU tests the very functions the kernels run
 * (kern_cuda_unit_values / kern_cuda_dequant_values, cuda.h) against the reference
 * dequantisers.
 *
 * A weight unit is 32 elements that pair with one 8-bit activation block: the whole block for
 * the 32-element types, sub-block j of a 256-element super-block for the K types and IQ4_XS.
 * Per unit a type yields 8 ints of signed bytes (4 weights each, offsets such as Q4_0's -8
 * already applied, table types already looked up), integer multipliers for its two halves
 * (Q6_K, Q3_K and Q2_K scale each 16 elements; the others use one), a float scale da, and for
 * types with a min the float db and integer multipliers of the activations' sums:
 *   unit = dx * (da * (sc_lo*dot_lo + sc_hi*dot_hi) + db * (bmul*sum_lo + bmul_hi*sum_hi))
 * where every type but Q2_K has one min for the unit (bmul_hi == bmul, so the term is
 * bmul * sum_x).
 *
 * dequant() gives element e of unit u in the reference dequantiser's float operation order
 * (explicitly rounded, so no fused multiply-add moves a bit): get_rows is bit-exact.
 *
 * Blocks are 2-byte aligned at best (Q4_0 is 18 bytes, MXFP4 17 and read byte by byte), so
 * weights are read 16 bits at a time; the offsets come from the project's block structs.
 */
#ifndef MOE_KERNELS_CUDA_BLOCKS_CUH
#define MOE_KERNELS_CUDA_BLOCKS_CUH

#include <cuda_fp16.h>
#include <stddef.h>
#include <stdint.h>

/* quant_blocks.h is C11; its layout asserts mean the same to C++'s static_assert. */
#define _Static_assert static_assert
extern "C" {
#include "kernels/cpu/quant_blocks.h"
#include "kernels/kernels.h"
}
#undef _Static_assert

#define CUDA__HD __host__ __device__ __forceinline__
/* The host compiler does not know the pragma (and warns); the device pass wants it. */
#ifdef __CUDA_ARCH__
#define CUDA__UNROLL _Pragma("unroll")
#else
#define CUDA__UNROLL
#endif

namespace cuda_blocks
{

/* ---- the device intrinsics, and what they compute on the host ------------------------ */

CUDA__HD float mul_rn(float a, float b)
{
#ifdef __CUDA_ARCH__
    return __fmul_rn(a, b);
#else
    return a * b;
#endif
}

CUDA__HD float add_rn(float a, float b)
{
#ifdef __CUDA_ARCH__
    return __fadd_rn(a, b);
#else
    return a + b;
#endif
}

CUDA__HD float sub_rn(float a, float b)
{
#ifdef __CUDA_ARCH__
    return __fsub_rn(a, b);
#else
    return a - b;
#endif
}

/* Byte-wise a - b, modulo 256 per byte. */
CUDA__HD int vsub4(int a, int b)
{
#ifdef __CUDA_ARCH__
    return __vsub4(a, b);
#else
    uint32_t r = 0;
    for (int i = 0; i < 4; i++) {
        const uint8_t x = (uint8_t)((uint32_t)a >> (8 * i)), y = (uint8_t)((uint32_t)b >> (8 * i));
        r |= (uint32_t)(uint8_t)(x - y) << (8 * i);
    }
    return (int)r;
#endif
}

/* PRMT: byte n of the result is byte ((s >> 4n) & 7) of the eight bytes y:x. */
CUDA__HD uint32_t byte_perm(uint32_t x, uint32_t y, uint32_t s)
{
#ifdef __CUDA_ARCH__
    return __byte_perm(x, y, s);
#else
    const uint64_t bytes = (uint64_t)y << 32 | x;
    uint32_t r = 0;
    for (int n = 0; n < 4; n++)
        r |= (uint32_t)((bytes >> (8 * ((s >> (4 * n)) & 7))) & 0xFF) << (8 * n);
    return r;
#endif
}

/* ---- loads ------------------------------------------------------------------------------ */

CUDA__HD uint32_t ld_u16(const uint8_t *p)
{
    return *(const uint16_t *)p;
}

/* Four bytes from a 2-byte aligned address, little-endian. */
CUDA__HD int ld_i32(const uint8_t *p)
{
    return (int)(ld_u16(p) | ld_u16(p + 2) << 16);
}

/* Four bytes from any address (MXFP4's 17-byte blocks). */
CUDA__HD int ld_i32_bytes(const uint8_t *p)
{
    return (int)((uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
                 (uint32_t)p[3] << 24);
}

CUDA__HD float f16_bits_to_f32(uint32_t h)
{
#ifdef __CUDA_ARCH__
    return __half2float(__ushort_as_half((unsigned short)h));
#else
    return kern_f16_to_f32((uint16_t)h);
#endif
}

CUDA__HD float ld_f16(const uint8_t *p)
{
    return f16_bits_to_f32(ld_u16(p));
}

/* Bits 0..3 of `bits` to bit 4 of bytes 0..3: the fifth bit of four Q5 weights. */
CUDA__HD int spread_bit4(uint32_t bits)
{
    return (int)(((bits & 1u) << 4) | ((bits & 2u) << 11) | ((bits & 4u) << 18) |
                 ((bits & 8u) << 25));
}

/* The 6-bit scale and min of sub-block j of a Q4_K / Q5_K super-block (kern__scale_min_k4). */
CUDA__HD void scale_min_k4(int j, const uint8_t *q, int *sc, int *m)
{
    if (j < 4) {
        *sc = q[j] & 63;
        *m = q[j + 4] & 63;
    } else {
        *sc = (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4);
        *m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
    }
}

/* Q3_K's 6-bit scale (0..63, before the -32) of sub-block j (0..15): kern__scale_q3_K. */
CUDA__HD int scale_q3_K(int j, const uint8_t *s)
{
    const int lo = j < 8 ? s[j] & 0xF : s[j - 8] >> 4;
    const int hi = (s[8 + j % 4] >> (2 * (j / 4))) & 3;
    return lo | hi << 4;
}

/* IQ4_XS's 6-bit scale (0..63, before the -32) of sub-block j (0..7): kern__scale_iq4_xs. */
CUDA__HD int scale_iq4_xs(int j, const uint8_t *b)
{
    const uint8_t *scales_l = b + offsetof(block_iq4_xs, scales_l);
    const uint32_t scales_h = ld_u16(b + offsetof(block_iq4_xs, scales_h));
    return ((scales_l[j / 2] >> (4 * (j % 2))) & 0xF) | (int)((scales_h >> (2 * j)) & 3) << 4;
}

/* E8M0 exponent e as 2^(e-127) / 2 (kern__e8m0_to_f32_half). */
CUDA__HD float e8m0_half(uint32_t e)
{
    const uint32_t bits = e < 2 ? 0x00200000u << e : (e - 1) << 23;
#ifdef __CUDA_ARCH__
    return __uint_as_float(bits);
#else
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
#endif
}

/* ---- 16-entry tables (IQ4_NL, IQ4_XS, MXFP4) ---------------------------------------- */

/* A table of 16 signed bytes as four little-endian words. */
struct table16 {
    uint32_t w[4];
};

#define CUDA__TABLE16(a, b, c, d, e, f, g, h, i, j, k, l, m, n, o, p)                              \
    {                                                                                              \
        {                                                                                          \
            (uint8_t)(a) | (uint32_t)(uint8_t)(b) << 8 | (uint32_t)(uint8_t)(c) << 16 |            \
                (uint32_t)(uint8_t)(d) << 24,                                                      \
                (uint8_t)(e) | (uint32_t)(uint8_t)(f) << 8 | (uint32_t)(uint8_t)(g) << 16 |        \
                    (uint32_t)(uint8_t)(h) << 24,                                                  \
                (uint8_t)(i) | (uint32_t)(uint8_t)(j) << 8 | (uint32_t)(uint8_t)(k) << 16 |        \
                    (uint32_t)(uint8_t)(l) << 24,                                                  \
                (uint8_t)(m) | (uint32_t)(uint8_t)(n) << 8 | (uint32_t)(uint8_t)(o) << 16 |        \
                    (uint32_t)(uint8_t)(p) << 24                                                   \
        }                                                                                          \
    }

/* kern__kvalues_iq4nl and kern__kvalues_mxfp4 (quant_blocks.h), packed. */
CUDA__HD table16 iq4nl_table()
{
    return CUDA__TABLE16(-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113);
}

CUDA__HD table16 mxfp4_table()
{
    return CUDA__TABLE16(0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12);
}

/* Entry i (0..15) of a table. */
CUDA__HD int table_at(const table16 &t, int i)
{
    return (int8_t)(t.w[i / 4] >> (8 * (i % 4)));
}

/* Four table entries at once: byte n of the result is t[byte n of idx] (each 0..15).  The
 * byte indices become a 16-bit nibble selector; two PRMTs read entries 0-7 and 8-15, a third
 * picks per byte by the index's bit 3. */
CUDA__HD int lookup4(const table16 &t, uint32_t idx)
{
    const uint32_t x = idx | idx >> 4; /* nibbles 0,1 in byte 0; 2,3 in byte 2 */
    const uint32_t sel = byte_perm(x, 0, 0x0020) & 0xFFFF; /* nibble n: index n */
    const uint32_t lo = byte_perm(t.w[0], t.w[1], sel);
    const uint32_t hi = byte_perm(t.w[2], t.w[3], sel);
    return (int)byte_perm(lo, hi, 0x3210 | ((sel & 0x8888) >> 1));
}

/* ---- one weight unit as signed bytes ------------------------------------------------- */

struct unit {
    int w[8];          /* 32 weights as signed bytes, in element order */
    int sc_lo, sc_hi;  /* integer multipliers of the dot over elements 0..15 and 16..31 */
    int bmul, bmul_hi; /* integer multipliers of the activations' sums (see the top) */
    float da, db;      /* float scales of the two integer terms */
};

/* Whether a type's min differs between the halves of a unit (the matmul then needs the
 * activations' half sums). */
__host__ __device__ constexpr bool split_mins(int type)
{
    return type == KERN_T_Q2_K;
}

__host__ __device__ constexpr bool is_float_type(int type)
{
    return type == KERN_T_F32 || type == KERN_T_F16 || type == KERN_T_BF16;
}

/* Q4_0 and Q4_1 share the nibble order: element j low nibble of qs[j], j+16 the high one. */
CUDA__HD void nibbles_32(const uint8_t *qs, int offset, int *w)
{
    CUDA__UNROLL
    for (int k = 0; k < 4; k++) {
        int v = ld_i32(qs + 4 * k);
        w[k] = vsub4(v & 0x0F0F0F0F, offset);
        w[k + 4] = vsub4((v >> 4) & 0x0F0F0F0F, offset);
    }
}

CUDA__HD void fives_32(const uint8_t *qs, uint32_t qh, int offset, int *w)
{
    CUDA__UNROLL
    for (int k = 0; k < 4; k++) {
        int v = ld_i32(qs + 4 * k);
        w[k] = vsub4((v & 0x0F0F0F0F) | spread_bit4(qh >> (4 * k)), offset);
        w[k + 4] = vsub4(((v >> 4) & 0x0F0F0F0F) | spread_bit4(qh >> (16 + 4 * k)), offset);
    }
}

/* Table types: element j is t[low nibble of qs[j]], element j + 16 t[its high nibble]. */
template <bool ALIGNED> CUDA__HD void table_32(const uint8_t *qs, const table16 &t, int *w)
{
    CUDA__UNROLL
    for (int k = 0; k < 4; k++) {
        const uint32_t v = (uint32_t)(ALIGNED ? ld_i32(qs + 4 * k) : ld_i32_bytes(qs + 4 * k));
        w[k] = lookup4(t, v & 0x0F0F0F0F);
        w[k + 4] = lookup4(t, (v >> 4) & 0x0F0F0F0F);
    }
}

template <int TYPE> CUDA__HD void load_unit(const uint8_t *row, int u, unit &q)
{
    q.sc_lo = q.sc_hi = 1;
    q.bmul = q.bmul_hi = 0;
    q.db = 0.0f;
    if constexpr (TYPE == KERN_T_Q8_0) {
        const uint8_t *b = row + (size_t)u * sizeof(block_q8_0);
        q.da = ld_f16(b + offsetof(block_q8_0, d));
        CUDA__UNROLL
        for (int k = 0; k < 8; k++)
            q.w[k] = ld_i32(b + offsetof(block_q8_0, qs) + 4 * k);
    } else if constexpr (TYPE == KERN_T_Q4_0) {
        const uint8_t *b = row + (size_t)u * sizeof(block_q4_0);
        q.da = ld_f16(b + offsetof(block_q4_0, d));
        nibbles_32(b + offsetof(block_q4_0, qs), 0x08080808, q.w);
    } else if constexpr (TYPE == KERN_T_Q4_1) {
        const uint8_t *b = row + (size_t)u * sizeof(block_q4_1);
        q.da = ld_f16(b + offsetof(block_q4_1, d));
        q.db = ld_f16(b + offsetof(block_q4_1, m));
        q.bmul = q.bmul_hi = 1;
        nibbles_32(b + offsetof(block_q4_1, qs), 0, q.w);
    } else if constexpr (TYPE == KERN_T_Q5_0) {
        const uint8_t *b = row + (size_t)u * sizeof(block_q5_0);
        q.da = ld_f16(b + offsetof(block_q5_0, d));
        fives_32(b + offsetof(block_q5_0, qs), (uint32_t)ld_i32(b + offsetof(block_q5_0, qh)),
                 0x10101010, q.w);
    } else if constexpr (TYPE == KERN_T_Q5_1) {
        const uint8_t *b = row + (size_t)u * sizeof(block_q5_1);
        q.da = ld_f16(b + offsetof(block_q5_1, d));
        q.db = ld_f16(b + offsetof(block_q5_1, m));
        q.bmul = q.bmul_hi = 1;
        fives_32(b + offsetof(block_q5_1, qs), (uint32_t)ld_i32(b + offsetof(block_q5_1, qh)), 0,
                 q.w);
    } else if constexpr (TYPE == KERN_T_Q4_K || TYPE == KERN_T_Q5_K) {
        /* Sub-block j: bytes qs[32*(j/2) ..] hold it in their low (j even) or high nibbles;
         * Q5_K's fifth bit is bit j of qh[l]. */
        const bool five = TYPE == KERN_T_Q5_K;
        const size_t bytes = five ? sizeof(block_q5_K) : sizeof(block_q4_K);
        const uint8_t *b = row + (size_t)(u / 8) * bytes;
        const int j = u % 8;
        const size_t qs_at = five ? offsetof(block_q5_K, qs) : offsetof(block_q4_K, qs);
        const uint8_t *qs = b + qs_at + 32 * (j / 2);
        int sc, mn;
        scale_min_k4(j, b + (five ? offsetof(block_q5_K, scales) : offsetof(block_q4_K, scales)),
                     &sc, &mn);
        q.da = ld_f16(b + (five ? offsetof(block_q5_K, d) : offsetof(block_q4_K, d)));
        q.db = -ld_f16(b + (five ? offsetof(block_q5_K, dmin) : offsetof(block_q4_K, dmin)));
        q.sc_lo = q.sc_hi = sc;
        q.bmul = q.bmul_hi = mn;
        CUDA__UNROLL
        for (int k = 0; k < 8; k++) {
            int v = (ld_i32(qs + 4 * k) >> (4 * (j & 1))) & 0x0F0F0F0F;
            if (five) {
                int h = ld_i32(b + offsetof(block_q5_K, qh) + 4 * k);
                v |= ((h >> j) & 0x01010101) << 4;
            }
            q.w[k] = v;
        }
    } else if constexpr (TYPE == KERN_T_Q6_K) {
        /* Sub-block j = 4*half + part: low 4 bits from ql[64*half + 32*(part&1) + l] (low
         * nibble for parts 0-1, high for 2-3), high 2 bits at 2*part of qh[32*half + l];
         * scales[8*half + 2*part + l/16]. */
        const uint8_t *b = row + (size_t)(u / 8) * sizeof(block_q6_K);
        const int j = u % 8, half = j / 4, part = j % 4;
        const uint8_t *ql = b + offsetof(block_q6_K, ql) + 64 * half + 32 * (part & 1);
        const uint8_t *qh = b + offsetof(block_q6_K, qh) + 32 * half;
        const int8_t *scales = (const int8_t *)(b + offsetof(block_q6_K, scales)) + 8 * half;
        q.da = ld_f16(b + offsetof(block_q6_K, d));
        q.sc_lo = scales[2 * part];
        q.sc_hi = scales[2 * part + 1];
        CUDA__UNROLL
        for (int k = 0; k < 8; k++) {
            int lo = (ld_i32(ql + 4 * k) >> (part >= 2 ? 4 : 0)) & 0x0F0F0F0F;
            int hi = ((ld_i32(qh + 4 * k) >> (2 * part)) & 0x03030303) << 4;
            q.w[k] = vsub4(lo | hi, 0x20202020);
        }
    } else if constexpr (TYPE == KERN_T_Q2_K || TYPE == KERN_T_Q3_K) {
        /* Unit j = 4c + p of a super-block: element 16h + l is bits 2p..2p+1 of
         * qs[32c + 16h + l], in sub-block 8c + 2p + h.  Q2_K: a 4-bit scale and min per
         * sub-block; Q3_K: a 6-bit scale less 32, and "- 4" unless bit j of hmask[16h + l]. */
        const bool three = TYPE == KERN_T_Q3_K;
        const uint8_t *b =
            row + (size_t)(u / 8) * (three ? sizeof(block_q3_K) : sizeof(block_q2_K));
        const int j = u % 8, c = j / 4, p = j % 4;
        const uint8_t *qs =
            b + (three ? offsetof(block_q3_K, qs) : offsetof(block_q2_K, qs)) + 32 * c;
        if (three) {
            const uint8_t *scales = b + offsetof(block_q3_K, scales);
            q.da = ld_f16(b + offsetof(block_q3_K, d));
            q.sc_lo = scale_q3_K(8 * c + 2 * p, scales) - 32;
            q.sc_hi = scale_q3_K(8 * c + 2 * p + 1, scales) - 32;
        } else {
            const uint8_t s_lo = b[offsetof(block_q2_K, scales) + 8 * c + 2 * p];
            const uint8_t s_hi = b[offsetof(block_q2_K, scales) + 8 * c + 2 * p + 1];
            q.da = ld_f16(b + offsetof(block_q2_K, d));
            q.db = -ld_f16(b + offsetof(block_q2_K, dmin));
            q.sc_lo = s_lo & 0xF;
            q.sc_hi = s_hi & 0xF;
            q.bmul = s_lo >> 4;
            q.bmul_hi = s_hi >> 4;
        }
        CUDA__UNROLL
        for (int k = 0; k < 8; k++) {
            const int off = 16 * (k / 4) + 4 * (k % 4); /* elements 4k.. of the unit */
            int v = (ld_i32(qs + off) >> (2 * p)) & 0x03030303;
            if (three) {
                const int h = (ld_i32(b + offsetof(block_q3_K, hmask) + off) >> j) & 0x01010101;
                v = vsub4(v | h << 2, 0x04040404);
            }
            q.w[k] = v;
        }
    } else if constexpr (TYPE == KERN_T_IQ4_NL) {
        const uint8_t *b = row + (size_t)u * sizeof(block_iq4_nl);
        q.da = ld_f16(b + offsetof(block_iq4_nl, d));
        table_32<true>(b + offsetof(block_iq4_nl, qs), iq4nl_table(), q.w);
    } else if constexpr (TYPE == KERN_T_IQ4_XS) {
        const uint8_t *b = row + (size_t)(u / 8) * sizeof(block_iq4_xs);
        const int j = u % 8;
        q.da = ld_f16(b + offsetof(block_iq4_xs, d));
        q.sc_lo = q.sc_hi = scale_iq4_xs(j, b) - 32;
        table_32<true>(b + offsetof(block_iq4_xs, qs) + 16 * j, iq4nl_table(), q.w);
    } else if constexpr (TYPE == KERN_T_MXFP4) {
        const uint8_t *b = row + (size_t)u * sizeof(block_mxfp4);
        q.da = e8m0_half(b[offsetof(block_mxfp4, e)]);
        table_32<false>(b + offsetof(block_mxfp4, qs), mxfp4_table(), q.w);
    }
}

static_assert(offsetof(block_q4_K, d) == offsetof(block_q5_K, d) &&
                  offsetof(block_q4_K, dmin) == offsetof(block_q5_K, dmin),
              "Q4_K and Q5_K open with the same scales");

/* Element e (0..31) of unit u of a row, bit-exact with the reference to_f32 (quant_ref.c,
 * quant_ref_lowbit.c). */
template <int TYPE> CUDA__HD float dequant(const uint8_t *row, int64_t u, int e)
{
    if constexpr (TYPE == KERN_T_Q8_0) {
        const uint8_t *b = row + (size_t)u * sizeof(block_q8_0);
        return mul_rn((float)(int8_t)b[offsetof(block_q8_0, qs) + e],
                      ld_f16(b + offsetof(block_q8_0, d)));
    } else if constexpr (TYPE == KERN_T_Q4_0 || TYPE == KERN_T_Q4_1) {
        const bool one = TYPE == KERN_T_Q4_1;
        const uint8_t *b = row + (size_t)u * (one ? sizeof(block_q4_1) : sizeof(block_q4_0));
        const uint8_t byte =
            b[(one ? offsetof(block_q4_1, qs) : offsetof(block_q4_0, qs)) + e % 16];
        const int q = e < 16 ? byte & 0xF : byte >> 4;
        const float d = ld_f16(b); /* d is first in both */
        if (!one) return mul_rn(d, (float)(q - 8));
        return add_rn(mul_rn(d, (float)q), ld_f16(b + offsetof(block_q4_1, m)));
    } else if constexpr (TYPE == KERN_T_Q5_0 || TYPE == KERN_T_Q5_1) {
        const bool one = TYPE == KERN_T_Q5_1;
        const uint8_t *b = row + (size_t)u * (one ? sizeof(block_q5_1) : sizeof(block_q5_0));
        const uint8_t byte =
            b[(one ? offsetof(block_q5_1, qs) : offsetof(block_q5_0, qs)) + e % 16];
        const uint32_t qh =
            (uint32_t)ld_i32(b + (one ? offsetof(block_q5_1, qh) : offsetof(block_q5_0, qh)));
        const int q = (e < 16 ? byte & 0xF : byte >> 4) | (int)(((qh >> e) & 1) << 4);
        const float d = ld_f16(b);
        if (!one) return mul_rn(d, (float)(q - 16));
        return add_rn(mul_rn(d, (float)q), ld_f16(b + offsetof(block_q5_1, m)));
    } else if constexpr (TYPE == KERN_T_Q4_K || TYPE == KERN_T_Q5_K) {
        const bool five = TYPE == KERN_T_Q5_K;
        const uint8_t *b = row + (size_t)(u / 8) * (five ? sizeof(block_q5_K) : sizeof(block_q4_K));
        const int j = (int)(u % 8);
        int sc, mn;
        scale_min_k4(j, b + (five ? offsetof(block_q5_K, scales) : offsetof(block_q4_K, scales)),
                     &sc, &mn);
        const float d1 = mul_rn(ld_f16(b + offsetof(block_q4_K, d)), (float)sc);
        const float m1 = mul_rn(ld_f16(b + offsetof(block_q4_K, dmin)), (float)mn);
        const uint8_t byte =
            b[(five ? offsetof(block_q5_K, qs) : offsetof(block_q4_K, qs)) + 32 * (j / 2) + e];
        int q = (byte >> (4 * (j & 1))) & 0xF;
        if (five) q += ((b[offsetof(block_q5_K, qh) + e] >> j) & 1) * 16;
        return sub_rn(mul_rn(d1, (float)q), m1);
    } else if constexpr (TYPE == KERN_T_Q6_K) {
        const uint8_t *b = row + (size_t)(u / 8) * sizeof(block_q6_K);
        const int j = (int)(u % 8), half = j / 4, part = j % 4;
        const uint8_t lo = b[offsetof(block_q6_K, ql) + 64 * half + 32 * (part & 1) + e];
        const uint8_t hi = b[offsetof(block_q6_K, qh) + 32 * half + e];
        const int q = (((part >= 2 ? lo >> 4 : lo) & 0xF) | ((hi >> (2 * part)) & 3) << 4) - 32;
        const int8_t sc = (int8_t)b[offsetof(block_q6_K, scales) + 8 * half + 2 * part + e / 16];
        return mul_rn(mul_rn(ld_f16(b + offsetof(block_q6_K, d)), (float)sc), (float)q);
    } else if constexpr (TYPE == KERN_T_Q2_K || TYPE == KERN_T_Q3_K) {
        const bool three = TYPE == KERN_T_Q3_K;
        const uint8_t *b =
            row + (size_t)(u / 8) * (three ? sizeof(block_q3_K) : sizeof(block_q2_K));
        const int j = (int)(u % 8), c = j / 4, p = j % 4, h = e / 16, l = e % 16;
        const uint8_t byte =
            b[(three ? offsetof(block_q3_K, qs) : offsetof(block_q2_K, qs)) + 32 * c + 16 * h + l];
        int q = (byte >> (2 * p)) & 3;
        if (three) {
            if (!((b[offsetof(block_q3_K, hmask) + 16 * h + l] >> j) & 1)) q -= 4;
            const int sc = scale_q3_K(8 * c + 2 * p + h, b + offsetof(block_q3_K, scales)) - 32;
            return mul_rn(mul_rn(ld_f16(b + offsetof(block_q3_K, d)), (float)sc), (float)q);
        }
        const uint8_t sc = b[offsetof(block_q2_K, scales) + 8 * c + 2 * p + h];
        const float dl = mul_rn(ld_f16(b + offsetof(block_q2_K, d)), (float)(sc & 0xF));
        const float ml = mul_rn(ld_f16(b + offsetof(block_q2_K, dmin)), (float)(sc >> 4));
        return sub_rn(mul_rn(dl, (float)q), ml);
    } else if constexpr (TYPE == KERN_T_IQ4_NL) {
        const uint8_t *b = row + (size_t)u * sizeof(block_iq4_nl);
        const uint8_t byte = b[offsetof(block_iq4_nl, qs) + e % 16];
        const int v = table_at(iq4nl_table(), e < 16 ? byte & 0xF : byte >> 4);
        return mul_rn(ld_f16(b + offsetof(block_iq4_nl, d)), (float)v);
    } else if constexpr (TYPE == KERN_T_IQ4_XS) {
        const uint8_t *b = row + (size_t)(u / 8) * sizeof(block_iq4_xs);
        const int j = (int)(u % 8);
        const float dl =
            mul_rn(ld_f16(b + offsetof(block_iq4_xs, d)), (float)(scale_iq4_xs(j, b) - 32));
        const uint8_t byte = b[offsetof(block_iq4_xs, qs) + 16 * j + e % 16];
        return mul_rn(dl, (float)table_at(iq4nl_table(), e < 16 ? byte & 0xF : byte >> 4));
    } else { /* MXFP4 */
        const uint8_t *b = row + (size_t)u * sizeof(block_mxfp4);
        const uint8_t byte = b[offsetof(block_mxfp4, qs) + e % 16];
        return mul_rn((float)table_at(mxfp4_table(), e < 16 ? byte & 0xF : byte >> 4),
                      e8m0_half(b[offsetof(block_mxfp4, e)]));
    }
}

} // namespace cuda_blocks

#endif
