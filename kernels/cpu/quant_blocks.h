/*
 * Block layouts of the quantised types, byte for byte as GGUF stores them (ggml-common.h),
 * and the activation-side types the integer dot products consume (Q8_0, Q8_1, Q8_K).
 * Internal to kernels/: the rest of the program sees blocks only as bytes and the geometry in
 * the type table.
 */
#ifndef MOE_KERNELS_QUANT_BLOCKS_H
#define MOE_KERNELS_QUANT_BLOCKS_H

#include <stdint.h>

#define QK4_0 32
#define QK4_1 32
#define QK5_0 32
#define QK5_1 32
#define QK8_0 32
#define QK8_1 32
#define QK4_NL 32
#define QK_MXFP4 32
#define QK_K 256
#define K_SCALE_SIZE 12

typedef uint16_t kern_half; /* IEEE binary16 bits */

typedef struct block_q4_0 {
    kern_half d;
    uint8_t qs[QK4_0 / 2]; /* element j in the low nibble of qs[j], j+16 in the high one */
} block_q4_0;

typedef struct block_q4_1 {
    kern_half d, m;
    uint8_t qs[QK4_1 / 2];
} block_q4_1;

typedef struct block_q5_0 {
    kern_half d;
    uint8_t qh[4]; /* fifth bits, bit j for element j (little-endian u32) */
    uint8_t qs[QK5_0 / 2];
} block_q5_0;

typedef struct block_q5_1 {
    kern_half d, m;
    uint8_t qh[4];
    uint8_t qs[QK5_1 / 2];
} block_q5_1;

typedef struct block_q8_0 {
    kern_half d;
    int8_t qs[QK8_0];
} block_q8_0;

typedef struct block_q8_1 {
    kern_half d; /* scale */
    kern_half s; /* d * sum(qs): lets Q4_1 / Q5_1 apply their offset m once per block */
    int8_t qs[QK8_1];
} block_q8_1;

typedef struct block_q4_K {
    kern_half d, dmin;
    uint8_t scales[K_SCALE_SIZE]; /* 8 six-bit scales and 8 six-bit mins, packed */
    uint8_t qs[QK_K / 2];
} block_q4_K;

typedef struct block_q5_K {
    kern_half d, dmin;
    uint8_t scales[K_SCALE_SIZE];
    uint8_t qh[QK_K / 8];
    uint8_t qs[QK_K / 2];
} block_q5_K;

typedef struct block_q6_K {
    uint8_t ql[QK_K / 2];
    uint8_t qh[QK_K / 4];
    int8_t scales[QK_K / 16];
    kern_half d; /* last, unlike the other types */
} block_q6_K;

/* The 2- and 3-bit K-quants: 16 sub-blocks of 16.  Q2_K stores a 4-bit scale and a 4-bit min
 * per sub-block; Q3_K 6-bit signed scales (packed as Q4_K's are, but offset by 32), two low
 * bits per weight in qs and the third, inverted (a set bit means "no -4"), in hmask. */
typedef struct block_q2_K {
    uint8_t scales[QK_K / 16]; /* low nibble scale, high nibble min */
    uint8_t qs[QK_K / 4];
    kern_half d, dmin;
} block_q2_K;

typedef struct block_q3_K {
    uint8_t hmask[QK_K / 8];
    uint8_t qs[QK_K / 4];
    uint8_t scales[K_SCALE_SIZE];
    kern_half d;
} block_q3_K;

/* IQ4_NL: Q4_0's layout, but the nibble indexes a non-linear table (kern__kvalues_iq4nl)
 * fitted to the bell shape of trained weights, instead of being the value itself. */
typedef struct block_iq4_nl {
    kern_half d;
    uint8_t qs[QK4_NL / 2];
} block_iq4_nl;

/* IQ4_XS: IQ4_NL's table over 256-element super-blocks, with one 6-bit scale per 32 elements
 * (low nibbles in scales_l, high 2 bits in scales_h), offset by 32. */
typedef struct block_iq4_xs {
    kern_half d;
    uint16_t scales_h;
    uint8_t scales_l[QK_K / 64];
    uint8_t qs[QK_K / 2];
} block_iq4_xs;

/* MXFP4 (OCP microscaling): 32 FP4 (E2M1) codes sharing one E8M0 exponent.  The codes are kept
 * as doubled integers (kern__kvalues_mxfp4) so that a dot product stays in integers; the scale
 * is halved to match (kern__e8m0_to_f32_half). */
typedef struct block_mxfp4 {
    uint8_t e;
    uint8_t qs[QK_MXFP4 / 2];
} block_mxfp4;

typedef struct block_q8_K {
    float d;
    int8_t qs[QK_K];
    int16_t bsums[QK_K / 16]; /* sums of each 16 qs: the K-quants' mins need only these */
} block_q8_K;

_Static_assert(sizeof(block_q4_0) == 18, "q4_0 layout");
_Static_assert(sizeof(block_q4_1) == 20, "q4_1 layout");
_Static_assert(sizeof(block_q5_0) == 22, "q5_0 layout");
_Static_assert(sizeof(block_q5_1) == 24, "q5_1 layout");
_Static_assert(sizeof(block_q8_0) == 34, "q8_0 layout");
_Static_assert(sizeof(block_q8_1) == 36, "q8_1 layout");
_Static_assert(sizeof(block_q4_K) == 144, "q4_K layout");
_Static_assert(sizeof(block_q5_K) == 176, "q5_K layout");
_Static_assert(sizeof(block_q6_K) == 210, "q6_K layout");
_Static_assert(sizeof(block_q8_K) == 292, "q8_K layout");
_Static_assert(sizeof(block_q2_K) == 84, "q2_K layout");
_Static_assert(sizeof(block_q3_K) == 110, "q3_K layout");
_Static_assert(sizeof(block_iq4_nl) == 18, "iq4_nl layout");
_Static_assert(sizeof(block_iq4_xs) == 136, "iq4_xs layout");
_Static_assert(sizeof(block_mxfp4) == 17, "mxfp4 layout");

/* ggml's kvalues_iq4nl and kvalues_mxfp4 (the E2M1 values 0, 0.5, 1, 1.5, 2, 3, 4, 6 doubled). */
static const int8_t kern__kvalues_iq4nl[16] = {-127, -104, -83, -65, -49, -35, -22, -10,
                                               1,    13,   25,  38,  53,  69,  89,  113};
static const int8_t kern__kvalues_mxfp4[16] = {0, 1,  2,  3,  4,  6,  8,  12,
                                               0, -1, -2, -3, -4, -6, -8, -12};

/* Half the value of an E8M0 exponent (2^(e-127) / 2), as ggml's GGML_E8M0_TO_FP32_HALF: e = 0
 * and 1 give f32 subnormals; e = 255 (NaN in OCP's spec) is read as 2^127 like ggml does. */
static inline float kern__e8m0_to_f32_half(uint8_t e)
{
    union {
        uint32_t u;
        float f;
    } bits = {.u = e < 2 ? 0x00200000u << e : (uint32_t)(e - 1) << 23};
    return bits.f;
}

/* The 6-bit scale (0..63, before the -32) of Q3_K's sub-block j (0..15): low nibbles in bytes
 * 0-7 (j and j+8 share a byte), high 2-bit pairs in bytes 8-11. */
static inline int kern__scale_q3_K(int j, const uint8_t *s)
{
    int lo = j < 8 ? s[j] & 0xF : s[j - 8] >> 4;
    int hi = (s[8 + j % 4] >> (2 * (j / 4))) & 3;
    return lo | hi << 4;
}

/* The 6-bit scale (0..63, before the -32) of IQ4_XS's sub-block j (0..7). */
static inline int kern__scale_iq4_xs(int j, const block_iq4_xs *b)
{
    return ((b->scales_l[j / 2] >> (4 * (j % 2))) & 0xF) | ((b->scales_h >> (2 * j)) & 3) << 4;
}

/* The 6-bit scale and min of sub-block j (0..7) of a Q4_K / Q5_K super-block. */
static inline void kern__scale_min_k4(int j, const uint8_t *q, uint8_t *sc, uint8_t *m)
{
    if (j < 4) {
        *sc = q[j] & 63;
        *m = q[j + 4] & 63;
    } else {
        *sc = (uint8_t)((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4));
        *m = (uint8_t)((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
    }
}

#endif
