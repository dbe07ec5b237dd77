/*
 * CPU kernel tests: every SIMD level's dot products against the scalar reference, the f16 and
 * bf16 conversions, the type table and the worker pool.  Levels this CPU lacks are skipped
 * with a printed reason.  The backend operations themselves are tested on every backend by
 * test_backend_ops.c.
 */
#include "kernels/cpu/cpu.h"
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
    for (int64_t i = 0; i < n; i++)
        x[i] = rng_uniform() * scale;
}

/* A weight matrix in `type` holding (the nearest representable) values of `ref`; `ref` is
 * overwritten with the values actually stored so that references see the same weights. */
static void *make_weight(uint32_t type, float *ref, int64_t n_rows, int64_t n_cols, kern_weight *w)
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
    *w = (kern_weight){
        .data = data, .type = type, .n_rows = n_rows, .n_cols = n_cols, .row_bytes = row_bytes};
    return data;
}

static const uint32_t types[] = {KERN_T_F32, KERN_T_F16, KERN_T_BF16};
static const int64_t odd_sizes[] = {1,  3,  7,  8,  9,   15,  16,  17,  31,   32,
                                    33, 63, 64, 65, 127, 255, 256, 257, 1000, 4099};

/* ---- conversions ------------------------------------------------------------------------- */

START_TEST(f16_roundtrip_all_values)
{
    for (uint32_t h = 0; h < 65536; h++) {
        float f = kern_f16_to_f32((uint16_t)h);
        uint16_t back = kern_f32_to_f16(f);
        if (isnan(f))
            ck_assert_msg((back & 0x7c00) == 0x7c00 && (back & 0x3ff), "nan 0x%04x -> 0x%04x", h,
                          back);
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
        const kern_cpu_type *tk = kern_cpu_type_kernels(types[ti]);
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
                for (int64_t i = 0; i < n; i++)
                    mag += fabs((double)w[i] * x[i]);
                float ref = tk->dot[KERN_ISA_SCALAR](data, x, n);
                float got = tk->dot[level](data, x, n);
                ck_assert_msg(fabs((double)got - ref) <= 2e-6 * mag + 1e-30,
                              "%s %s n=%lld: %.9g vs scalar %.9g", t->name, kern_isa_name(level),
                              (long long)n, got, ref);
                /* dot_multi must be bit-identical to dot, vector by vector */
                for (int n_x = 1; n_x <= 9; n_x++) {
                    float out[9];
                    tk->dot_multi[level](data, x, (size_t)n * sizeof(float), n_x, n, out);
                    for (int j = 0; j < n_x; j++) {
                        float single = tk->dot[level](data, x + j * n, n);
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
        if (i >= p->n)
            atomic_fetch_add(p->wrong, 1);
        else
            atomic_fetch_add(&p->hits[i], 1);
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
                ck_assert_msg(atomic_load(&hits[i]) == 1,
                              "job %d (%d items, %d threads): item %d ran %d times", job, n,
                              threads, i, atomic_load(&hits[i]));
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
    tcase_add_test(tc, type_table_geometry);
    tcase_add_test(tc, pool_runs_every_item_once_across_changing_jobs);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
