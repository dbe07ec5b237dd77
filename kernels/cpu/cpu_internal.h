/*
 * Helpers shared between the CPU backend's files (the `kern__` level of visibility): the
 * per-type dot products at each instruction-set level and the worker pool.
 *
 * Summation order is part of each kernel's contract: kern__dot_X_L and kern__dot_multi_X_L
 * accumulate in the same lanes in the same order, so a token's result does not depend on how
 * many tokens share a call.  Levels differ from each other (and from the scalar reference) by
 * rounding only; the tests bound that difference.
 */
#ifndef MOE_KERNELS_CPU_INTERNAL_H
#define MOE_KERNELS_CPU_INTERNAL_H

#include <stdint.h>

#define KERN__DECLARE_DOTS(type, level)                                                          \
    float kern__dot_##type##_##level(const void *row, const float *x, int64_t n);               \
    void kern__dot_multi_##type##_##level(const void *row, const float *x, int64_t x_stride,    \
                                          int n_x, int64_t n, float *out);

KERN__DECLARE_DOTS(f32, scalar)
KERN__DECLARE_DOTS(f16, scalar)
KERN__DECLARE_DOTS(bf16, scalar)
KERN__DECLARE_DOTS(f32, avx2)
KERN__DECLARE_DOTS(f16, avx2)
KERN__DECLARE_DOTS(bf16, avx2)
KERN__DECLARE_DOTS(f32, avx512)
KERN__DECLARE_DOTS(f16, avx512)
KERN__DECLARE_DOTS(bf16, avx512)

/* ---- worker pool ---------------------------------------------------------------------- */

typedef struct kern__pool kern__pool;

/* Runs items [begin, end) on worker `thread_index` (0 is the calling thread). */
typedef void (*kern__pool_fn)(void *ctx, int64_t begin, int64_t end, int thread_index);

int kern__pool_create(kern__pool **out, int n_threads);
void kern__pool_destroy(kern__pool **pool);
int kern__pool_size(const kern__pool *pool);
/* Splits [0, n_items) into one contiguous range per thread, each a multiple of `grain`
 * items (but the last), runs them and returns when all are done.  Caller: one thread only. */
void kern__pool_run(kern__pool *pool, kern__pool_fn fn, void *ctx, int64_t n_items,
                    int64_t grain);

#endif
