/*
 * Quantised weight types: dequantisation bit-exact with gguf-py (vectors in tests/data/quant,
 * made by tools/quant_vectors.py), activation quantisers, and every dot product level against
 * the scalar reference and against a double-precision dot of the dequantised operands, at odd
 * sizes; then the matmul of each type against a float reference, thread- and batch-invariant.
 */
#include "kernels/cpu/quant_blocks.h"
#include "kernels/kernels.h"
#include "tests/unit/test_util.h"

#include <check.h>
#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const uint32_t quant_types[] = {
    KERN_T_Q8_0, KERN_T_Q4_0, KERN_T_Q4_1, KERN_T_Q5_0,   KERN_T_Q5_1,   KERN_T_Q4_K, KERN_T_Q5_K,
    KERN_T_Q6_K, KERN_T_Q2_K, KERN_T_Q3_K, KERN_T_IQ4_NL, KERN_T_IQ4_XS, KERN_T_MXFP4};
enum { N_TYPES = sizeof quant_types / sizeof quant_types[0] };

/* ---- dequantisation against gguf-py ---------------------------------------------------------- */

static uint32_t rd32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

START_TEST(dequantize_matches_gguf_py)
{
    uint32_t type = quant_types[_i];
    const kern_type_traits *t = kern_type_info(type);
    char lower[16], path[1024];
    for (size_t i = 0; i <= strlen(t->name); i++)
        lower[i] = (char)(t->name[i] >= 'A' && t->name[i] <= 'Z' ? t->name[i] + 32 : t->name[i]);
    const char *root = getenv("MOE_SOURCE_ROOT");
    snprintf(path, sizeof path, "%s/tests/data/quant/%s.bin", root ? root : ".", lower);
    FILE *f = fopen(path, "rb");
    ck_assert_msg(f != NULL, "%s: %s (regenerate with tools/quant_vectors.py)", path,
                  strerror(errno));
    uint8_t hdr[20];
    ck_assert_uint_eq(fread(hdr, 1, sizeof hdr, f), sizeof hdr);
    ck_assert(memcmp(hdr, "MQV1", 4) == 0);
    ck_assert_uint_eq(rd32(hdr + 4), type);
    uint32_t n_blocks = rd32(hdr + 8);
    ck_assert_uint_eq(rd32(hdr + 12), t->block_bytes);
    ck_assert_uint_eq(rd32(hdr + 16), t->block_elems);
    size_t n = (size_t)n_blocks * t->block_elems;
    uint8_t *blocks = malloc((size_t)n_blocks * t->block_bytes);
    float *want = malloc(n * sizeof *want), *got = malloc(n * sizeof *got);
    ck_assert_uint_eq(fread(blocks, 1, (size_t)n_blocks * t->block_bytes, f),
                      (size_t)n_blocks * t->block_bytes);
    ck_assert_uint_eq(fread(want, sizeof *want, n, f), n);
    fclose(f);
    t->to_f32(blocks, got, (int64_t)n);
    for (size_t i = 0; i < n; i++) {
        uint32_t a, b;
        memcpy(&a, &got[i], 4);
        memcpy(&b, &want[i], 4);
        ck_assert_msg(a == b || (isnan(got[i]) && isnan(want[i])),
                      "%s element %zu (block %zu): %a, gguf-py %a", t->name, i, i / t->block_elems,
                      got[i], want[i]);
    }
    printf("%s: %u blocks dequantise bit-exactly as gguf-py\n", t->name, n_blocks);
    free(blocks);
    free(want);
    free(got);
}
END_TEST

/* ---- activation quantisers ------------------------------------------------------------------- */

START_TEST(activation_quantisers)
{
    static const uint32_t act_types[] = {KERN_T_Q8_0, KERN_T_Q8_1, KERN_T_Q8_K};
    kern_isa best = kern_cpu_isa();
    for (size_t a = 0; a < 3; a++) {
        const kern_type_traits *t = kern_type_info(act_types[a]);
        const kern_cpu_type *tk = kern_cpu_type_kernels(act_types[a]);
        int64_t n = 8 * 256;
        float *x = malloc((size_t)n * sizeof *x), *back = malloc((size_t)n * sizeof *back);
        for (int64_t i = 0; i < n; i++)
            x[i] = rng_uniform() * (i % 300 == 0 ? 40.0f : 3.0f);
        for (int64_t i = 0; i < t->block_elems; i++)
            x[i] = 0.0f; /* an all-zero block */
        size_t bytes = kern_row_bytes(act_types[a], n);
        uint8_t *ref = malloc(bytes), *simd = malloc(bytes);
        t->from_f32(x, ref, n);
        t->to_f32(ref, back, n);
        for (int64_t blk = 0; blk < n / t->block_elems; blk++) {
            float amax = 0.0f;
            for (int j = 0; j < (int)t->block_elems; j++)
                amax = fmaxf(amax, fabsf(x[blk * t->block_elems + j]));
            for (int j = 0; j < (int)t->block_elems; j++) {
                int64_t i = blk * t->block_elems + j;
                /* half a step of d = amax/127, plus the f16 rounding of d */
                ck_assert_msg(fabsf(back[i] - x[i]) <= amax / 127.0f * 0.5f + amax * 2e-3f,
                              "%s element %lld: %g -> %g", t->name, (long long)i, x[i], back[i]);
            }
        }
        if (act_types[a] == KERN_T_Q8_1) { /* s = d * sum(q) */
            const block_q8_1 *b = (const block_q8_1 *)ref;
            for (int64_t blk = 0; blk < n / 32; blk++) {
                int sum = 0;
                for (int j = 0; j < 32; j++)
                    sum += b[blk].qs[j];
                ck_assert(
                    kern_f16_to_f32(b[blk].s) ==
                        kern_f16_to_f32(kern_f32_to_f16((float)sum * kern_f16_to_f32(b[blk].d))) ||
                    fabsf(kern_f16_to_f32(b[blk].s) - sum * kern_f16_to_f32(b[blk].d)) <=
                        1e-3f * fabsf(sum * kern_f16_to_f32(b[blk].d)));
            }
        }
        if (act_types[a] == KERN_T_Q8_K) { /* bsums are the sums of 16 */
            const block_q8_K *b = (const block_q8_K *)ref;
            for (int64_t blk = 0; blk < n / 256; blk++)
                for (int g = 0; g < 16; g++) {
                    int sum = 0;
                    for (int j = 0; j < 16; j++)
                        sum += b[blk].qs[16 * g + j];
                    ck_assert_int_eq(sum, b[blk].bsums[g]);
                }
        }
        for (int level = 1; level < KERN_ISA_COUNT && level <= (int)best; level++) {
            if (!tk->from_f32[level]) continue;
            tk->from_f32[level](x, simd, n);
            /* same scales; codes may differ by one only where x*id lands on a rounding edge */
            float *back2 = malloc((size_t)n * sizeof *back2);
            t->to_f32(simd, back2, n);
            int diffs = 0;
            for (int64_t i = 0; i < n; i++) {
                if (back2[i] != back[i]) diffs++;
                ck_assert(fabsf(back2[i] - back[i]) <= fabsf(back[i]) * 0.02f + 0.1f);
            }
            ck_assert_msg(diffs <= n / 1000, "%s %s: %d codes differ from scalar", t->name,
                          kern_isa_name(level), diffs);
            free(back2);
        }
        free(x);
        free(back);
        free(ref);
        free(simd);
    }
}
END_TEST

/* ---- dot products ---------------------------------------------------------------------------- */

START_TEST(dot_levels_match_reference)
{
    uint32_t type = quant_types[_i];
    const kern_type_traits *t = kern_type_info(type), *at = kern_type_info(t->act_type);
    const kern_cpu_type *tk = kern_cpu_type_kernels(type);
    kern_isa best = kern_cpu_isa();
    /* 33: many blocks, with a remainder after the 4-block steps of the AVX-512 kernels */
    static const int block_counts[] = {1, 2, 3, 7, 16, 33};
    /* worst |error| / sum |w x| of the scalar dot vs double, and of each level vs scalar */
    double worst[KERN_ISA_COUNT] = {0};
    for (size_t bc = 0; bc < sizeof block_counts / sizeof block_counts[0]; bc++) {
        int64_t n = block_counts[bc] * (int64_t)t->block_elems;
        void *w = test_random_blocks(type, block_counts[bc]);
        float *wf = malloc((size_t)n * sizeof *wf), *x = malloc((size_t)n * 9 * sizeof *x);
        float *xf = malloc((size_t)n * sizeof *xf);
        t->to_f32(w, wf, n);
        for (int64_t i = 0; i < n * 9; i++)
            x[i] = rng_uniform();
        size_t xrow = kern_row_bytes(t->act_type, n);
        uint8_t *xq = malloc(xrow * 9);
        for (int j = 0; j < 9; j++)
            at->from_f32(x + j * n, xq + j * xrow, n);
        at->to_f32(xq, xf, n);
        double ref = 0.0, mag = 0.0;
        for (int64_t i = 0; i < n; i++) {
            ref += (double)wf[i] * xf[i];
            mag += fabs((double)wf[i] * xf[i]);
        }
        /* Q8_1 carries s = d * sum(q) as f16, which Q4_1 / Q5_1 multiply by their offset m */
        double s_rounding = 0.0;
        if (t->act_type == KERN_T_Q8_1) {
            const block_q8_1 *yb = (const block_q8_1 *)xq;
            for (int blk = 0; blk < block_counts[bc]; blk++) {
                kern_half m_half;
                memcpy(&m_half, (const uint8_t *)w + (size_t)blk * t->block_bytes + 2, 2);
                s_rounding += fabs(kern_f16_to_f32(m_half) * kern_f16_to_f32(yb[blk].s)) / 1024.0;
            }
        }
        float scalar = tk->dot[KERN_ISA_SCALAR](w, xq, n);
        /* integer sums are exact; only the block scale products round */
        ck_assert_msg(fabs(scalar - ref) <= 1e-5 * mag + s_rounding + 1e-6,
                      "%s n=%lld scalar %.9g vs %.9g", t->name, (long long)n, scalar, ref);
        worst[KERN_ISA_SCALAR] = fmax(worst[KERN_ISA_SCALAR], fabs(scalar - ref) / mag);
        for (int level = 1; level < KERN_ISA_COUNT; level++) {
            if (!tk->dot[level]) continue;
            if (level > (int)best) {
                printf("SKIP %s %s: this CPU lacks it\n", t->name, kern_isa_name(level));
                continue;
            }
            float got = tk->dot[level](w, xq, n);
            ck_assert_msg(fabs(got - scalar) <= 1e-5 * mag + 1e-6,
                          "%s %s n=%lld: %.9g vs scalar %.9g", t->name, kern_isa_name(level),
                          (long long)n, got, scalar);
            worst[level] = fmax(worst[level], fabs(got - scalar) / mag);
            for (int n_x = 1; n_x <= 9; n_x++) {
                float out[9];
                tk->dot_multi[level](w, xq, xrow, n_x, n, out);
                for (int j = 0; j < n_x; j++) {
                    float single = tk->dot[level](w, xq + j * xrow, n);
                    ck_assert(memcmp(&single, &out[j], 4) == 0);
                }
            }
        }
        free(w);
        free(wf);
        free(x);
        free(xf);
        free(xq);
    }
    printf("%s dot, worst |error| / sum|w x|: scalar vs double %.1e", t->name,
           worst[KERN_ISA_SCALAR]);
    for (int level = 1; level < KERN_ISA_COUNT && level <= (int)best; level++)
        if (tk->dot[level]) printf(", %s vs scalar %.1e", kern_isa_name(level), worst[level]);
    printf("\n");
}
END_TEST

/* Extreme block scales: zero, negative zero, subnormal, the smallest normal and the largest
 * finite f16, of both signs, in random combination per block (the second scale too: Q4_1 / Q5_1
 * m, Q4_K / Q5_K / Q2_K dmin; MXFP4: extreme E8M0 exponents), against activations of very different
 * magnitudes per block.  Every level must stay within float rounding of the scalar reference, and
 * dot_multi must stay bit-identical to dot.  (Activations stay below ~1e3: Q8_1 stores d * sum(q)
 * as f16, which overflows beyond that, in ggml's format as in ours.) */
static const uint16_t extreme_halves[] = {0x0000, 0x8000, 0x0001, 0x83FF, 0x0400,
                                          0x7BFF, 0xFBFF, 0x3C00, 0xBC00};

/* MXFP4's E8M0 exponents: f32-subnormal half-scales, 1/2, and large ones whose products with
 * the activations above still fit in a float (12 * 2^(230-128) * 8 * 48768 < FLT_MAX). */
static const uint8_t extreme_e8m0[] = {0, 1, 2, 127, 140, 200, 230};

/* Byte offsets of a block's f16 scale (d) and of its second f16 (Q4_1 / Q5_1 m, Q4_K / Q5_K /
 * Q2_K dmin), -1 where there is none (MXFP4's scale is an E8M0 byte, not a half). */
typedef struct half_fields {
    int d_off, m_off;
} half_fields;

static half_fields scale_fields(uint32_t type)
{
    switch (type) {
    case KERN_T_Q4_1:
    case KERN_T_Q5_1:
    case KERN_T_Q4_K:
    case KERN_T_Q5_K:
        return (half_fields){0, 2};
    case KERN_T_Q6_K:
        return (half_fields){offsetof(block_q6_K, d), -1};
    case KERN_T_Q2_K:
        return (half_fields){offsetof(block_q2_K, d), offsetof(block_q2_K, dmin)};
    case KERN_T_Q3_K:
        return (half_fields){offsetof(block_q3_K, d), -1};
    case KERN_T_MXFP4:
        return (half_fields){-1, -1};
    default:
        return (half_fields){0, -1};
    }
}

static void set_extreme_scales(uint32_t type, uint8_t *blocks, int64_t n_blocks, size_t block_bytes)
{
    enum { N_EXT = sizeof extreme_halves / sizeof extreme_halves[0] };
    half_fields f = scale_fields(type);
    for (int64_t i = 0; i < n_blocks; i++) {
        uint8_t *b = blocks + (size_t)i * block_bytes;
        uint16_t d = extreme_halves[rng_next() % N_EXT], m = extreme_halves[rng_next() % N_EXT];
        if (type == KERN_T_MXFP4) b[0] = extreme_e8m0[rng_next() % sizeof extreme_e8m0];
        if (f.d_off >= 0) memcpy(b + f.d_off, &d, 2);
        if (f.m_off >= 0) memcpy(b + f.m_off, &m, 2);
    }
}

START_TEST(dot_levels_extreme_scales)
{
    uint32_t type = quant_types[_i];
    const kern_type_traits *t = kern_type_info(type), *at = kern_type_info(t->act_type);
    const kern_cpu_type *tk = kern_cpu_type_kernels(type);
    kern_isa best = kern_cpu_isa();
    half_fields fields = scale_fields(type);
    bool two_scales = fields.m_off >= 0;
    static const int block_counts[] = {1, 5, 33};
    for (size_t bc = 0; bc < sizeof block_counts / sizeof block_counts[0]; bc++) {
        int64_t nb = block_counts[bc], n = nb * (int64_t)t->block_elems;
        size_t wbytes = (size_t)nb * t->block_bytes;
        uint8_t *w = test_random_blocks(type, nb), *w1 = malloc(wbytes), *w2 = malloc(wbytes);
        set_extreme_scales(type, w, nb, t->block_bytes);
        float *x = malloc((size_t)n * 9 * sizeof *x), *xf = malloc((size_t)n * sizeof *xf);
        float *p1 = malloc((size_t)n * sizeof *p1), *p2 = malloc((size_t)n * sizeof *p2);
        for (int64_t i = 0; i < n * 9; i++) {
            int64_t blk = (i % n) / t->block_elems;
            x[i] = rng_uniform() * (blk % 3 == 0 ? 1e3f : blk % 3 == 1 ? 1e-4f : 1.0f);
        }
        size_t xrow = kern_row_bytes(t->act_type, n);
        uint8_t *xq = malloc(xrow * 9);
        for (int j = 0; j < 9; j++)
            at->from_f32(x + j * n, xq + j * xrow, n);
        at->to_f32(xq, xf, n);
        /* rounding scales with the two scaled parts separately, which may cancel in the sum */
        memcpy(w1, w, wbytes);
        memcpy(w2, w, wbytes);
        for (int64_t b = 0; b < nb && two_scales; b++) {
            memset(w1 + (size_t)b * t->block_bytes + fields.m_off, 0, 2); /* d part only */
            memset(w2 + (size_t)b * t->block_bytes + fields.d_off, 0, 2); /* m / dmin only */
        }
        t->to_f32(w1, p1, n);
        t->to_f32(w2, p2, n);
        double mag = 0.0;
        for (int64_t i = 0; i < n; i++)
            mag += (fabs((double)p1[i]) + (two_scales ? fabs((double)p2[i]) : 0.0)) *
                   fabs((double)xf[i]);
        float scalar = tk->dot[KERN_ISA_SCALAR](w, xq, n);
        ck_assert_msg(isfinite(scalar), "%s n=%lld: scalar %g", t->name, (long long)n, scalar);
        for (int level = 1; level < KERN_ISA_COUNT && level <= (int)best; level++) {
            if (!tk->dot[level]) continue;
            float got = tk->dot[level](w, xq, n);
            ck_assert_msg(fabs((double)got - scalar) <= 2e-5 * mag + 1e-30,
                          "%s %s n=%lld extreme scales: %.9g vs scalar %.9g (mag %.3g)", t->name,
                          kern_isa_name(level), (long long)n, got, scalar, mag);
            for (int n_x = 1; n_x <= 9; n_x += 4) {
                float out[9];
                tk->dot_multi[level](w, xq, xrow, n_x, n, out);
                for (int j = 0; j < n_x; j++) {
                    float single = tk->dot[level](w, xq + j * xrow, n);
                    ck_assert_msg(memcmp(&single, &out[j], 4) == 0,
                                  "%s %s n_x=%d j=%d: %.9g vs %.9g", t->name, kern_isa_name(level),
                                  n_x, j, out[j], single);
                }
            }
        }
        free(w);
        free(w1);
        free(w2);
        free(x);
        free(xf);
        free(p1);
        free(p2);
        free(xq);
    }
}
END_TEST

/* ---- matmul ---------------------------------------------------------------------------------- */

START_TEST(matmul_matches_float_reference)
{
    uint32_t type = quant_types[_i];
    const kern_type_traits *t = kern_type_info(type);
    kern_backend *b1 = open_cpu_isa(1, KERN_ISA_COUNT), *b2 = open_cpu_isa(2, KERN_ISA_COUNT);
    int64_t rows = 37, cols = 2 * 256, n_tok = 11;
    int64_t blocks_per_row = cols / t->block_elems;
    void *w = test_random_blocks(type, rows * blocks_per_row);
    kern_weight kw = {.data = w,
                      .type = type,
                      .n_rows = rows,
                      .n_cols = cols,
                      .row_bytes = kern_row_bytes(type, cols)};
    float *wf = malloc((size_t)(rows * cols) * sizeof *wf);
    t->to_f32(w, wf, rows * cols);
    float *x = malloc((size_t)(n_tok * cols) * sizeof *x);
    for (int64_t i = 0; i < n_tok * cols; i++)
        x[i] = rng_uniform();
    float *y1 = malloc((size_t)(n_tok * rows) * sizeof *y1),
          *y2 = malloc((size_t)(n_tok * rows) * sizeof *y2);
    float *one = malloc((size_t)rows * sizeof *one);
    kern_matmul(b1, &kw, x, y1, n_tok);
    kern_matmul(b2, &kw, x, y2, n_tok);
    char err[128];
    ck_assert_int_eq(kern_sync(b1, err, sizeof err), 0);
    ck_assert(memcmp(y1, y2, (size_t)(n_tok * rows) * sizeof *y1) == 0);
    for (int64_t tk = 0; tk < n_tok; tk++) {
        kern_matmul(b2, &kw, x + tk * cols, one, 1);
        ck_assert(memcmp(one, y1 + tk * rows, (size_t)rows * sizeof *one) == 0);
        for (int64_t r = 0; r < rows; r++) {
            double ref = 0.0, bound = 0.0;
            for (int64_t c = 0; c < cols; c++) {
                ref += (double)wf[r * cols + c] * x[tk * cols + c];
                /* activation quantisation: at most half a step of amax/127 per element */
                bound +=
                    fabs((double)wf[r * cols + c]) * (0.5 / 127.0 + 1e-3); /* + f16 rounding of d */
            }
            ck_assert_msg(fabs(y1[tk * rows + r] - ref) <= bound + 1e-5,
                          "%s t=%lld r=%lld: %.7g vs %.7g (bound %.3g)", t->name, (long long)tk,
                          (long long)r, y1[tk * rows + r], ref, bound);
        }
    }
    free(w);
    free(wf);
    free(x);
    free(y1);
    free(y2);
    free(one);
    kern_close(&b1);
    kern_close(&b2);
}
END_TEST

/* The integer kernels need VNNI: a CPU with AVX-512 F/BW/VL but without VNNI runs the
 * quantised types at AVX2, so a backend capped at KERN_ISA_AVX512 must give exactly the AVX2
 * backend's results, and no quantised row may have a kernel at that level. */
START_TEST(vnni_kernels_only_at_vnni_level)
{
    kern_isa best = kern_cpu_isa();
    for (size_t i = 0; i < N_TYPES; i++) {
        const kern_type_traits *t = kern_type_info(quant_types[i]);
        const kern_cpu_type *tk = kern_cpu_type_kernels(quant_types[i]);
        ck_assert_msg(tk->dot[KERN_ISA_AVX512] == NULL && tk->dot_multi[KERN_ISA_AVX512] == NULL,
                      "%s has a kernel at the AVX-512 level without VNNI", t->name);
        ck_assert(!tk->dot[KERN_ISA_AVX512_VNNI] == !tk->dot_multi[KERN_ISA_AVX512_VNNI]);
    }
    if (best < KERN_ISA_AVX512) {
        printf("SKIP AVX-512 dispatch check: this CPU lacks AVX-512\n");
        return;
    }
    kern_backend *b_avx2 = open_cpu_isa(1, KERN_ISA_AVX2);
    kern_backend *b_512 = open_cpu_isa(1, KERN_ISA_AVX512);
    for (size_t i = 0; i < N_TYPES; i++) {
        uint32_t type = quant_types[i];
        int64_t rows = 9, cols = 512, n_tok = 5;
        void *w = test_random_blocks(type, rows * (cols / kern_type_info(type)->block_elems));
        kern_weight kw = {.data = w,
                          .type = type,
                          .n_rows = rows,
                          .n_cols = cols,
                          .row_bytes = kern_row_bytes(type, cols)};
        float *x = malloc((size_t)(n_tok * cols) * sizeof *x);
        float *y1 = malloc((size_t)(n_tok * rows) * sizeof *y1);
        float *y2 = malloc((size_t)(n_tok * rows) * sizeof *y2);
        for (int64_t j = 0; j < n_tok * cols; j++)
            x[j] = rng_uniform();
        kern_matmul(b_avx2, &kw, x, y1, n_tok);
        kern_matmul(b_512, &kw, x, y2, n_tok);
        ck_assert_msg(memcmp(y1, y2, (size_t)(n_tok * rows) * sizeof *y1) == 0,
                      "%s: AVX-512 (no VNNI) level differs from AVX2", kern_type_info(type)->name);
        free(w);
        free(x);
        free(y1);
        free(y2);
    }
    kern_close(&b_avx2);
    kern_close(&b_512);
}
END_TEST

START_TEST(table_rows_are_consistent)
{
    for (size_t i = 0; i < N_TYPES; i++) {
        const kern_type_traits *t = kern_type_info(quant_types[i]);
        const kern_cpu_type *tk = kern_cpu_type_kernels(quant_types[i]);
        ck_assert_ptr_nonnull(t);
        ck_assert(kern_type_supported(quant_types[i]));
        const kern_type_traits *at = kern_type_info(t->act_type);
        ck_assert_ptr_nonnull(at);
        ck_assert_uint_eq(at->block_elems, t->block_elems);
        ck_assert_ptr_nonnull(at->from_f32);
        ck_assert_ptr_nonnull(tk->dot[KERN_ISA_SCALAR]);
        ck_assert_uint_eq(kern_row_bytes(quant_types[i], t->block_elems * 3), 3u * t->block_bytes);
        ck_assert_uint_eq(kern_row_bytes(quant_types[i], t->block_elems + 1),
                          0); /* not whole blocks */
    }
    ck_assert(!kern_type_supported(KERN_T_Q8_1));
    ck_assert(!kern_type_supported(KERN_T_Q8_K));
}
END_TEST

int main(void)
{
    Suite *s = suite_create("quant");
    TCase *tc = tcase_create("quant");
    tcase_set_timeout(tc, 600);
    tcase_add_test(tc, table_rows_are_consistent);
    tcase_add_test(tc, vnni_kernels_only_at_vnni_level);
    tcase_add_loop_test(tc, dequantize_matches_gguf_py, 0, N_TYPES);
    tcase_add_test(tc, activation_quantisers);
    tcase_add_loop_test(tc, dot_levels_match_reference, 0, N_TYPES);
    tcase_add_loop_test(tc, dot_levels_extreme_scales, 0, N_TYPES);
    tcase_add_loop_test(tc, matmul_matches_float_reference, 0, N_TYPES);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
