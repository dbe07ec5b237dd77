/*
 * Kernel tests: every SIMD level against the scalar reference, every backend operation
 * against a naive double-precision implementation written here, and the batch-invariance
 * rule (a token's result does not depend on the tokens next to it or on the thread count).
 * Levels this CPU lacks are skipped with a printed reason.
 */
#include "kernels/cpu/cpu_internal.h"
#include "kernels/kernels.h"
#include "tests/unit/test_util.h"

#include <check.h>
#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

/* ---- helpers ------------------------------------------------------------------------------ */

static void fill_random(float *x, int64_t n, float scale)
{
    for (int64_t i = 0; i < n; i++) x[i] = rng_uniform() * scale;
}

/* A weight matrix in `type` holding (the nearest representable) values of `ref`; `ref` is
 * overwritten with the values actually stored so that references see the same weights. */
static void *make_weight(uint32_t type, float *ref, int64_t n_rows, int64_t n_cols,
                         kern_weight *w)
{
    size_t row_bytes = kern_row_bytes(type, n_cols);
    uint8_t *data = malloc(row_bytes * (size_t)n_rows + 64);
    ck_assert_ptr_nonnull(data);
    for (int64_t i = 0; i < n_rows * n_cols; i++) {
        if (type == KERN_T_F32) {
            memcpy(data + 4 * i, &ref[i], 4);
        } else if (type == KERN_T_F16) {
            uint16_t h = kern_f32_to_f16(ref[i]);
            memcpy(data + 2 * i, &h, 2);
            ref[i] = kern_f16_to_f32(h);
        } else {
            uint16_t h = kern_f32_to_bf16(ref[i]);
            memcpy(data + 2 * i, &h, 2);
            ref[i] = kern_bf16_to_f32(h);
        }
    }
    *w = (kern_weight){.data = data, .type = type, .n_rows = n_rows, .n_cols = n_cols,
                       .row_bytes = row_bytes};
    return data;
}


static const uint32_t types[] = {KERN_T_F32, KERN_T_F16, KERN_T_BF16};
static const int64_t odd_sizes[] = {1, 3, 7, 8, 9, 15, 16, 17, 31, 32, 33, 63, 64, 65,
                                    127, 255, 256, 257, 1000, 4099};

/* ---- conversions ------------------------------------------------------------------------- */

START_TEST(f16_roundtrip_all_values)
{
    for (uint32_t h = 0; h < 65536; h++) {
        float f = kern_f16_to_f32((uint16_t)h);
        uint16_t back = kern_f32_to_f16(f);
        if (isnan(f))
            ck_assert_msg((back & 0x7c00) == 0x7c00 && (back & 0x3ff), "nan 0x%04x -> 0x%04x", h, back);
        else
            ck_assert_msg(back == h, "0x%04x -> %g -> 0x%04x", h, f, back);
    }
}
END_TEST

#if defined(__x86_64__)
__attribute__((target("f16c"))) static uint16_t hw_f32_to_f16(float f)
{
    return (uint16_t)_cvtss_sh(f, _MM_FROUND_TO_NEAREST_INT);
}

__attribute__((target("f16c"))) static float hw_f16_to_f32(uint16_t h)
{
    return _cvtsh_ss(h);
}
#endif

START_TEST(f16_matches_hardware)
{
#if defined(__x86_64__)
    if (!__builtin_cpu_supports("f16c")) {
        printf("SKIP f16_matches_hardware: this CPU has no F16C\n");
        return;
    }
    for (uint32_t h = 0; h < 65536; h++) {
        float a = kern_f16_to_f32((uint16_t)h), b = hw_f16_to_f32((uint16_t)h);
        ck_assert(memcmp(&a, &b, 4) == 0 || (isnan(a) && isnan(b)));
    }
    /* every f32 exponent, random mantissas, both signs: covers rounding, subnormals, overflow */
    for (int i = 0; i < 2000000; i++) {
        uint32_t bits = (uint32_t)rng_next();
        float f;
        memcpy(&f, &bits, 4);
        if (isnan(f)) continue;
        ck_assert_msg(kern_f32_to_f16(f) == hw_f32_to_f16(f), "%a: 0x%04x vs 0x%04x", f,
                      kern_f32_to_f16(f), hw_f32_to_f16(f));
    }
#else
    printf("SKIP f16_matches_hardware: not an x86-64 build\n");
#endif
}
END_TEST

START_TEST(bf16_rounding)
{
    ck_assert_uint_eq(kern_f32_to_bf16(1.0f), 0x3f80);
    ck_assert_uint_eq(kern_f32_to_bf16(-2.0f), 0xc000);
    /* 1 + 2^-8 is exactly halfway between two bf16 values: ties to even (down) */
    ck_assert_uint_eq(kern_f32_to_bf16(1.00390625f), 0x3f80);
    /* 1 + 3*2^-8 is halfway, odd below: rounds up */
    ck_assert_uint_eq(kern_f32_to_bf16(1.01171875f), 0x3f82);
    ck_assert_uint_eq(kern_f32_to_bf16(INFINITY), 0x7f80);
    ck_assert(isnan(kern_bf16_to_f32(kern_f32_to_bf16(NAN))));
    for (uint32_t h = 0; h < 65536; h++) {
        float f = kern_bf16_to_f32((uint16_t)h);
        if (!isnan(f)) ck_assert_uint_eq(kern_f32_to_bf16(f), h);
    }
}
END_TEST

/* ---- dot products -------------------------------------------------------------------------- */

START_TEST(dot_levels_match_scalar)
{
    kern_isa best = kern_cpu_isa();
    for (size_t ti = 0; ti < sizeof types / sizeof types[0]; ti++) {
        const kern_type_traits *t = kern_type_info(types[ti]);
        for (int level = 1; level < KERN_ISA_COUNT; level++) {
            if (level > (int)best) {
                printf("SKIP dot %s %s: this CPU lacks %s\n", t->name, kern_isa_name(level),
                       kern_isa_name(level));
                continue;
            }
            for (size_t si = 0; si < sizeof odd_sizes / sizeof odd_sizes[0]; si++) {
                int64_t n = odd_sizes[si];
                float *w = malloc((size_t)n * sizeof *w), *x = malloc((size_t)n * 9 * sizeof *x);
                fill_random(w, n, 2.0f);
                fill_random(x, n * 9, 1.0f);
                kern_weight kw;
                void *data = make_weight(types[ti], w, 1, n, &kw);
                double mag = 0.0;
                for (int64_t i = 0; i < n; i++) mag += fabs((double)w[i] * x[i]);
                float ref = t->dot[KERN_ISA_SCALAR](data, x, n);
                float got = t->dot[level](data, x, n);
                ck_assert_msg(fabs((double)got - ref) <= 2e-6 * mag + 1e-30,
                              "%s %s n=%lld: %.9g vs scalar %.9g", t->name, kern_isa_name(level),
                              (long long)n, got, ref);
                /* dot_multi must be bit-identical to dot, vector by vector */
                for (int n_x = 1; n_x <= 9; n_x++) {
                    float out[9];
                    t->dot_multi[level](data, x, (size_t)n * sizeof(float), n_x, n, out);
                    for (int j = 0; j < n_x; j++) {
                        float single = t->dot[level](data, x + j * n, n);
                        ck_assert_msg(memcmp(&single, &out[j], 4) == 0,
                                      "%s %s n=%lld n_x=%d j=%d: multi %.9g vs single %.9g",
                                      t->name, kern_isa_name(level), (long long)n, n_x, j, out[j],
                                      single);
                    }
                }
                free(data);
                free(w);
                free(x);
            }
        }
    }
}
END_TEST

/* ---- matmul ---------------------------------------------------------------------------------- */

START_TEST(matmul_matches_reference_and_is_batch_invariant)
{
    static const int64_t shapes[][2] = {{1, 1}, {5, 33}, {17, 64}, {64, 257}, {129, 1000}};
    kern_backend *b1 = open_cpu_isa(1, KERN_ISA_COUNT), *b3 = open_cpu_isa(3, KERN_ISA_COUNT);
    for (size_t ti = 0; ti < sizeof types / sizeof types[0]; ti++) {
        for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
            int64_t rows = shapes[s][0], cols = shapes[s][1], n_tok = 9;
            float *w = malloc((size_t)(rows * cols) * sizeof *w);
            float *x = malloc((size_t)(n_tok * cols) * sizeof *x);
            float *y1 = malloc((size_t)(n_tok * rows) * sizeof *y1);
            float *y3 = malloc((size_t)(n_tok * rows) * sizeof *y3);
            float *one = malloc((size_t)rows * sizeof *one);
            fill_random(w, rows * cols, 1.0f);
            fill_random(x, n_tok * cols, 1.0f);
            kern_weight kw;
            void *data = make_weight(types[ti], w, rows, cols, &kw);
            kern_matmul(b1, &kw, x, y1, n_tok);
            kern_matmul(b3, &kw, x, y3, n_tok);
            ck_assert_msg(memcmp(y1, y3, (size_t)(n_tok * rows) * sizeof *y1) == 0,
                          "thread count changed the result");
            for (int64_t t = 0; t < n_tok; t++) {
                kern_matmul(b3, &kw, x + t * cols, one, 1);
                ck_assert_msg(memcmp(one, y1 + t * rows, (size_t)rows * sizeof *one) == 0,
                              "token %lld alone differs from inside the batch", (long long)t);
                for (int64_t r = 0; r < rows; r++) {
                    double ref = 0.0, mag = 0.0;
                    for (int64_t c = 0; c < cols; c++) {
                        ref += (double)w[r * cols + c] * x[t * cols + c];
                        mag += fabs((double)w[r * cols + c] * x[t * cols + c]);
                    }
                    ck_assert_msg(fabs(y1[t * rows + r] - ref) <= 2e-6 * mag + 1e-30,
                                  "type %u %lldx%lld t=%lld r=%lld: %.9g vs %.9g", types[ti],
                                  (long long)rows, (long long)cols, (long long)t, (long long)r,
                                  y1[t * rows + r], ref);
                }
            }
            free(data);
            free(w);
            free(x);
            free(y1);
            free(y3);
            free(one);
        }
    }
    kern_backend_close(&b1);
    kern_backend_close(&b3);
    ck_assert_ptr_null(b1);
}
END_TEST

/* ---- the other operations ---------------------------------------------------------------------- */

START_TEST(rmsnorm_matches_reference)
{
    kern_backend *b = open_cpu_isa(2, KERN_ISA_COUNT);
    int64_t n = 300, rows = 70, stride = 310;
    float *x = malloc((size_t)(rows * stride) * sizeof *x), *w = malloc((size_t)n * sizeof *w);
    float *out = malloc((size_t)(rows * stride) * sizeof *out);
    fill_random(x, rows * stride, 3.0f);
    fill_random(w, n, 1.0f);
    b->ops->rmsnorm(b, x, w, out, n, rows, stride, 1e-5f);
    for (int64_t r = 0; r < rows; r++) {
        double ss = 0.0;
        for (int64_t i = 0; i < n; i++) ss += (double)x[r * stride + i] * x[r * stride + i];
        double scale = 1.0 / sqrt(ss / n + 1e-5);
        for (int64_t i = 0; i < n; i++)
            ck_assert(fabs(out[r * stride + i] - x[r * stride + i] * scale * w[i]) < 1e-5);
    }
    /* in place, no weight */
    b->ops->rmsnorm(b, x, NULL, x, n, 1, stride, 1e-5f);
    double ss = 0.0;
    for (int64_t i = 0; i < n; i++) ss += (double)x[i] * x[i];
    ck_assert(fabs(ss / n - 1.0) < 1e-3);
    free(x);
    free(w);
    free(out);
    kern_backend_close(&b);
}
END_TEST

START_TEST(rope_modes_match_reference)
{
    kern_backend *b = open_cpu_isa(2, KERN_ISA_COUNT);
    int n_tok = 5, heads = 3, hd = 16, n_rot = 12;
    int32_t pos[5] = {0, 1, 7, 100, 4095};
    float base = 10000.0f;
    for (int mode = 0; mode < 2; mode++) {
        kern_rope_mode m = mode ? KERN_ROPE_NEOX : KERN_ROPE_NORM;
        float x[5 * 3 * 16], orig[5 * 3 * 16];
        fill_random(x, n_tok * heads * hd, 1.0f);
        memcpy(orig, x, sizeof x);
        b->ops->rope(b, x, n_tok, heads, hd, n_rot, pos, base, m);
        for (int t = 0; t < n_tok; t++) {
            for (int h = 0; h < heads; h++) {
                const float *o = orig + (t * heads + h) * hd;
                const float *r = x + (t * heads + h) * hd;
                for (int i = 0; i < n_rot / 2; i++) {
                    double th = pos[t] * pow(base, -2.0 * i / n_rot);
                    int i0 = m == KERN_ROPE_NEOX ? i : 2 * i;
                    int i1 = m == KERN_ROPE_NEOX ? i + n_rot / 2 : 2 * i + 1;
                    ck_assert(fabs(r[i0] - (o[i0] * cos(th) - o[i1] * sin(th))) < 1e-5);
                    ck_assert(fabs(r[i1] - (o[i0] * sin(th) + o[i1] * cos(th))) < 1e-5);
                }
                for (int i = n_rot; i < hd; i++) ck_assert(r[i] == o[i]); /* unrotated tail */
            }
        }
    }
    kern_backend_close(&b);
}
END_TEST

START_TEST(attention_matches_reference)
{
    kern_backend *b = open_cpu_isa(2, KERN_ISA_COUNT);
    int n_head = 8, n_kv_head = 2, hd = 32, n_tok = 4;
    int kv_dim = n_kv_head * hd;
    int32_t lens[4] = {1, 5, 37, 200};
    float *kv_k[4], *kv_v[4];
    kern_attn_token toks[4];
    float *q = malloc((size_t)(n_tok * n_head * hd) * sizeof *q);
    float *out = malloc((size_t)(n_tok * n_head * hd) * sizeof *out);
    fill_random(q, n_tok * n_head * hd, 1.0f);
    for (int t = 0; t < n_tok; t++) {
        kv_k[t] = malloc((size_t)(lens[t] * kv_dim) * sizeof(float));
        kv_v[t] = malloc((size_t)(lens[t] * kv_dim) * sizeof(float));
        fill_random(kv_k[t], lens[t] * kv_dim, 2.0f);
        fill_random(kv_v[t], lens[t] * kv_dim, 1.0f);
        toks[t] = (kern_attn_token){.k = kv_k[t], .v = kv_v[t], .n_kv = lens[t]};
    }
    float scale = 1.0f / sqrtf((float)hd);
    ck_assert_int_eq(b->ops->attention(b, q, toks, out, n_tok, n_head, n_kv_head, hd, scale), 0);
    for (int t = 0; t < n_tok; t++) {
        for (int h = 0; h < n_head; h++) {
            int kh = h / (n_head / n_kv_head);
            const float *qq = q + (t * n_head + h) * hd;
            double s[200], max = -INFINITY, sum = 0.0;
            for (int j = 0; j < lens[t]; j++) {
                double d = 0.0;
                for (int i = 0; i < hd; i++) d += (double)qq[i] * kv_k[t][j * kv_dim + kh * hd + i];
                s[j] = d * scale;
                if (s[j] > max) max = s[j];
            }
            for (int j = 0; j < lens[t]; j++) sum += (s[j] = exp(s[j] - max));
            for (int i = 0; i < hd; i++) {
                double ref = 0.0;
                for (int j = 0; j < lens[t]; j++) ref += s[j] / sum * kv_v[t][j * kv_dim + kh * hd + i];
                ck_assert_msg(fabs(out[(t * n_head + h) * hd + i] - ref) < 1e-5,
                              "t=%d h=%d i=%d: %g vs %g", t, h, i, out[(t * n_head + h) * hd + i], ref);
            }
        }
    }
    for (int t = 0; t < n_tok; t++) {
        free(kv_k[t]);
        free(kv_v[t]);
    }
    free(q);
    free(out);
    kern_backend_close(&b);
}
END_TEST

START_TEST(elementwise_and_get_rows)
{
    kern_backend *b = open_cpu_isa(2, KERN_ISA_COUNT);
    int64_t n = 10000;
    float *g = malloc((size_t)n * sizeof *g), *u = malloc((size_t)n * sizeof *u);
    float *o = malloc((size_t)n * sizeof *o), *y = malloc((size_t)n * sizeof *y);
    fill_random(g, n, 8.0f);
    fill_random(u, n, 1.0f);
    b->ops->silu_mul(b, g, u, o, n);
    for (int64_t i = 0; i < n; i++) {
        double ref = g[i] / (1.0 + exp(-(double)g[i])) * u[i];
        ck_assert(fabs(o[i] - ref) < 1e-6 * (1 + fabs(ref)));
    }
    memcpy(y, u, (size_t)n * sizeof *y);
    b->ops->add(b, y, g, n);
    for (int64_t i = 0; i < n; i++) ck_assert(y[i] == u[i] + g[i]);

    for (size_t ti = 0; ti < sizeof types / sizeof types[0]; ti++) {
        int64_t rows = 11, cols = 40;
        float w[11 * 40], rows_out[3 * 40];
        fill_random(w, rows * cols, 1.0f);
        kern_weight kw;
        void *data = make_weight(types[ti], w, rows, cols, &kw);
        int32_t ids[3] = {10, 0, 4};
        b->ops->get_rows(b, &kw, ids, rows_out, 3);
        for (int j = 0; j < 3; j++)
            ck_assert(memcmp(rows_out + j * cols, w + ids[j] * cols, (size_t)cols * 4) == 0);
        free(data);
    }
    free(g);
    free(u);
    free(o);
    free(y);
    kern_backend_close(&b);
}
END_TEST

START_TEST(type_table_geometry)
{
    ck_assert_uint_eq(kern_row_bytes(KERN_T_F32, 10), 40);
    ck_assert_uint_eq(kern_row_bytes(KERN_T_F16, 10), 20);
    ck_assert_uint_eq(kern_row_bytes(KERN_T_BF16, 3), 6);
    ck_assert_uint_eq(kern_row_bytes(99, 10), 0);
    ck_assert_ptr_null(kern_type_info(KERN_T_COUNT));
    ck_assert(kern_type_supported(KERN_T_Q4_K));
    ck_assert(!kern_type_supported(KERN_T_Q8_K)); /* activations only */
    ck_assert(!kern_type_supported(16));          /* IQ2_XXS: not in this build */
    char msg[256];
    int n = kern_cuda_probe(msg, sizeof msg);
    ck_assert_int_ge(n, 0);
    ck_assert(strlen(msg) > 0);
    printf("cuda probe: %s\n", msg);
}
END_TEST

/* The pool under back-to-back jobs of changing sizes: every item of every job is run exactly
 * once, with that job's function and context.  A worker still leaving an old job while the
 * caller prepares the next one must not claim work with the next job's chunk count (a race
 * that ran chunks with half-written parameters). */
typedef struct pool_probe {
    int job;
    int n;
    _Atomic int *hits;
    _Atomic int *wrong;
} pool_probe;

static void pool_probe_run(void *ctx, int64_t begin, int64_t end, int thread_index)
{
    pool_probe *p = ctx;
    (void)thread_index;
    for (int64_t i = begin; i < end; i++) {
        if (i >= p->n) atomic_fetch_add(p->wrong, 1);
        else atomic_fetch_add(&p->hits[i], 1);
    }
}

START_TEST(pool_runs_every_item_once_across_changing_jobs)
{
    static const int sizes[] = {2, 9, 3, 64, 5, 1000, 17, 4};
    for (int threads = 2; threads <= 3; threads++) {
        kern__pool *pool = NULL;
        ck_assert_int_eq(kern__pool_create(&pool, threads), 0);
        _Atomic int *hits = calloc(1000, sizeof *hits);
        _Atomic int wrong = 0;
        for (int job = 0; job < 20000; job++) {
            int n = sizes[job % 8];
            pool_probe probe = {job, n, hits, &wrong};
            kern__pool_run(pool, pool_probe_run, &probe, n, 1);
            for (int i = 0; i < n; i++) {
                ck_assert_msg(atomic_load(&hits[i]) == 1, "job %d (%d items, %d threads): item %d ran %d times",
                              job, n, threads, i, atomic_load(&hits[i]));
                atomic_store(&hits[i], 0);
            }
        }
        ck_assert_int_eq(atomic_load(&wrong), 0);
        free((void *)hits);
        kern__pool_destroy(&pool);
    }
}
END_TEST

int main(void)
{
    Suite *s = suite_create("kernels");
    TCase *tc = tcase_create("cpu");
    tcase_set_timeout(tc, 600);
    tcase_add_test(tc, f16_roundtrip_all_values);
    tcase_add_test(tc, f16_matches_hardware);
    tcase_add_test(tc, bf16_rounding);
    tcase_add_test(tc, dot_levels_match_scalar);
    tcase_add_test(tc, matmul_matches_reference_and_is_batch_invariant);
    tcase_add_test(tc, rmsnorm_matches_reference);
    tcase_add_test(tc, rope_modes_match_reference);
    tcase_add_test(tc, attention_matches_reference);
    tcase_add_test(tc, elementwise_and_get_rows);
    tcase_add_test(tc, type_table_geometry);
    tcase_add_test(tc, pool_runs_every_item_once_across_changing_jobs);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
