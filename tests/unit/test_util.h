/*
 * Helpers shared by the kernel tests: a seeded xorshift generator (so every run draws the same
 * data and a failure reproduces) and opening a CPU backend with a given thread count.
 */
#ifndef MOE_TEST_UTIL_H
#define MOE_TEST_UTIL_H

#include "kernels/cpu/cpu.h"

#include <check.h>
#include <stdint.h>

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

#endif
