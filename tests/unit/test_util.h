/*
 * Helpers shared by the kernel tests: a seeded xorshift generator (so every run draws the same
 * data and a failure reproduces) and opening a CPU backend with a given thread count.
 */
#ifndef MOE_TEST_UTIL_H
#define MOE_TEST_UTIL_H

#include "kernels/cpu/cpu.h"
#include "kernels/cpu/quant_blocks.h"

#include <check.h>
#include <stdint.h>
#include <stdlib.h>

static uint64_t test_rng_state = 0x9e3779b97f4a7c15ull;

static inline uint64_t rng_next(void)
{
    test_rng_state ^= test_rng_state << 13;
    test_rng_state ^= test_rng_state >> 7;
    test_rng_state ^= test_rng_state << 17;
    return test_rng_state;
}

static inline float rng_uniform(void) /* [-1, 1) */
{
    return (float)((double)(rng_next() >> 11) / 9007199254740992.0 * 2.0 - 1.0);
}

static inline kern_backend *open_cpu_isa(int n_threads, kern_isa max_isa)
{
    char err[256];
    kern_backend *b = NULL;
    kern_cpu_opts o = {.n_threads = n_threads, .max_isa = max_isa};
    ck_assert_msg(kern_cpu_open(&b, &o, err, sizeof err) == 0, "%s", err);
    return b;
}

/* Random quantised weights for kernel tests: random payload bytes, and scales in ranges that
 * keep the float work ordinary (no infinities, no NaNs). */
static inline kern_half test_rand_scale(float lo, float hi)
{
    float u = (rng_uniform() + 1.0f) * 0.5f;
    return kern_f32_to_f16(lo + (hi - lo) * u);
}

/* n_blocks blocks of `type` with random payload bytes and sane random scales. */
static inline void *test_random_blocks(uint32_t type, int64_t n_blocks)
{
    const kern_type_traits *t = kern_type_info(type);
    uint8_t *p = malloc((size_t)n_blocks * t->block_bytes);
    ck_assert_ptr_nonnull(p);
    for (size_t i = 0; i < (size_t)n_blocks * t->block_bytes; i++)
        p[i] = (uint8_t)rng_next();
    for (int64_t i = 0; i < n_blocks; i++) {
        uint8_t *b = p + (size_t)i * t->block_bytes;
        switch (type) {
        case KERN_T_Q8_0:
            ((block_q8_0 *)b)->d = test_rand_scale(0.001f, 0.02f);
            break;
        case KERN_T_Q4_0:
            ((block_q4_0 *)b)->d = test_rand_scale(-0.05f, 0.05f);
            break;
        case KERN_T_Q5_0:
            ((block_q5_0 *)b)->d = test_rand_scale(-0.05f, 0.05f);
            break;
        case KERN_T_Q4_1:
            ((block_q4_1 *)b)->d = test_rand_scale(0.001f, 0.02f);
            ((block_q4_1 *)b)->m = test_rand_scale(-0.2f, 0.0f);
            break;
        case KERN_T_Q5_1:
            ((block_q5_1 *)b)->d = test_rand_scale(0.001f, 0.02f);
            ((block_q5_1 *)b)->m = test_rand_scale(-0.2f, 0.0f);
            break;
        case KERN_T_Q4_K:
            ((block_q4_K *)b)->d = test_rand_scale(0.0001f, 0.002f);
            ((block_q4_K *)b)->dmin = test_rand_scale(0.0001f, 0.002f);
            break;
        case KERN_T_Q5_K:
            ((block_q5_K *)b)->d = test_rand_scale(0.0001f, 0.002f);
            ((block_q5_K *)b)->dmin = test_rand_scale(0.0001f, 0.002f);
            break;
        case KERN_T_Q6_K:
            ((block_q6_K *)b)->d = test_rand_scale(-0.002f, 0.002f);
            break;
        case KERN_T_Q2_K:
            ((block_q2_K *)b)->d = test_rand_scale(0.0001f, 0.002f);
            ((block_q2_K *)b)->dmin = test_rand_scale(0.0001f, 0.002f);
            break;
        case KERN_T_Q3_K:
            ((block_q3_K *)b)->d = test_rand_scale(-0.002f, 0.002f);
            break;
        case KERN_T_IQ4_NL:
            ((block_iq4_nl *)b)->d = test_rand_scale(-0.0005f, 0.0005f);
            break;
        case KERN_T_IQ4_XS:
            ((block_iq4_xs *)b)->d = test_rand_scale(-0.0001f, 0.0001f);
            break;
        case KERN_T_MXFP4: /* half-scales 2^-11 .. 2^-4, gpt-oss's range */
            ((block_mxfp4 *)b)->e = (uint8_t)(117 + rng_next() % 8);
            break;
        default:
            ck_abort_msg("no scale rule for type %u", type);
        }
    }
    return p;
}

#endif
