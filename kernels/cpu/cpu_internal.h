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

#include <stddef.h>
#include <stdint.h>

#define KERN__DECLARE_DOTS(type, level)                                                            \
    float kern__dot_##type##_##level(const void *row, const void *x, int64_t n);                   \
    void kern__dot_multi_##type##_##level(const void *row, const void *x, size_t x_stride,         \
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

/* A dot_multi that runs the level's single-vector dot per vector: bit-identical by
 * construction, for types and levels without a kernel that shares work between vectors. */
#define KERN__MULTI_FROM_SINGLE(type, level)                                                       \
    void kern__dot_multi_##type##_##level(const void *row, const void *x, size_t x_stride,         \
                                          int n_x, int64_t n, float *out)                          \
    {                                                                                              \
        for (int j = 0; j < n_x; j++)                                                              \
            out[j] =                                                                               \
                kern__dot_##type##_##level(row, (const uint8_t *)x + (size_t)j * x_stride, n);     \
    }

/* quantised weight types: scalar reference and AVX2 */
#define KERN__DECLARE_QUANT(type)                                                                  \
    KERN__DECLARE_DOTS(type, scalar)                                                               \
    KERN__DECLARE_DOTS(type, avx2)                                                                 \
    void kern__to_f32_##type(const void *src, float *dst, int64_t n);

KERN__DECLARE_QUANT(q8_0)
KERN__DECLARE_QUANT(q4_0)
KERN__DECLARE_QUANT(q4_1)
KERN__DECLARE_QUANT(q5_0)
KERN__DECLARE_QUANT(q5_1)
KERN__DECLARE_QUANT(q4_K)
KERN__DECLARE_QUANT(q5_K)
KERN__DECLARE_QUANT(q6_K)
KERN__DECLARE_QUANT(q2_K)
KERN__DECLARE_QUANT(q3_K)
KERN__DECLARE_QUANT(iq4_nl)
KERN__DECLARE_QUANT(iq4_xs)
KERN__DECLARE_QUANT(mxfp4)

/* AVX-512 VNNI kernels (quant_avx512.c), level KERN_ISA_AVX512_VNNI */
KERN__DECLARE_DOTS(q8_0, vnni)
KERN__DECLARE_DOTS(q4_0, vnni)
KERN__DECLARE_DOTS(q5_0, vnni)
KERN__DECLARE_DOTS(q4_1, vnni)
KERN__DECLARE_DOTS(q5_1, vnni)
KERN__DECLARE_DOTS(q4_K, vnni)
KERN__DECLARE_DOTS(q5_K, vnni)
KERN__DECLARE_DOTS(q6_K, vnni)
KERN__DECLARE_DOTS(iq4_nl, vnni)
KERN__DECLARE_DOTS(mxfp4, vnni)
KERN__DECLARE_DOTS(iq4_xs, vnni)

/* activation quantisers */
void kern__quantize_q8_0_scalar(const float *x, void *dst, int64_t n);
void kern__quantize_q8_1_scalar(const float *x, void *dst, int64_t n);
void kern__quantize_q8_K_scalar(const float *x, void *dst, int64_t n);
void kern__quantize_q8_0_avx2(const float *x, void *dst, int64_t n);
void kern__quantize_q8_1_avx2(const float *x, void *dst, int64_t n);
void kern__quantize_q8_K_avx2(const float *x, void *dst, int64_t n);

/* Attention's row helpers (levels agree bit for bit): an F16 row to f32, and y += a * x. */
void kern__f16_to_f32_scalar(const void *src, float *dst, int64_t n);
void kern__f16_to_f32_avx2(const void *src, float *dst, int64_t n);
void kern__axpy_f32_scalar(float *y, float a, const float *x, int64_t n);
void kern__axpy_f32_avx2(float *y, float a, const float *x, int64_t n);
/* y += a * x with x an F16 row converted in registers (a row no other head reads) */
void kern__axpy_f16_scalar(float *y, float a, const void *x, int64_t n);
void kern__axpy_f16_avx2(float *y, float a, const void *x, int64_t n);

/* Attention over a chunk of up to 16 positions (attn_avx512.c; head_dim a multiple of 16):
 * s[h][j] = scale * q_h . k_j for j < nb, rows k_stride floats apart;
 * out_h += sum_j p[h][j] * v_j; s[j] = exp(s[j] - max) returning the sum; s[j] *= a; the max;
 * rows of F16 to f32. */
void kern__attn_scores_avx512(const float *q, int hs, int hd, const float *k, size_t k_stride,
                              int nb, float scale, float *s, size_t s_stride);
void kern__attn_values_avx512(const float *p, size_t p_stride, int hs, int hd, const float *v,
                              size_t v_stride, int nb, float *out);
void kern__scale_avx512(float *s, int64_t n, float a);
double kern__exp_sum_avx512(float *s, int64_t n, float max);
float kern__max_avx512(const float *s, int64_t n);
void kern__f16_rows_to_f32_avx512(const void *src, size_t src_stride, int rows, int n, float *dst);

/* ---- worker pool ---------------------------------------------------------------------- */

typedef struct kern__pool kern__pool;

/* Runs items [begin, end) on worker `thread_index` (0 is the calling thread). */
typedef void (*kern__pool_fn)(void *ctx, int64_t begin, int64_t end, int thread_index);

int kern__pool_create(kern__pool **out, int n_threads);
void kern__pool_destroy(kern__pool **pool);
int kern__pool_size(const kern__pool *pool);
/* Splits [0, n_items) into one contiguous range per thread, each a multiple of `grain`
 * items (but the last), runs them and returns when all are done.  Caller: one thread only. */
void kern__pool_run(kern__pool *pool, kern__pool_fn fn, void *ctx, int64_t n_items, int64_t grain);
/* The same with chunks_per_thread chunks per thread (kern__pool_run: 4).  Long jobs whose items
 * differ in cost (a prefill's matmuls, its experts' unequal buckets) want more, smaller chunks:
 * a thread that finishes early then waits for at most a small chunk. */
void kern__pool_run_chunks(kern__pool *pool, kern__pool_fn fn, void *ctx, int64_t n_items,
                           int64_t grain, int chunks_per_thread);

#endif
