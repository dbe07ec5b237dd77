/*
 * kernels/cpu — the CPU backend: every kern_ops operation as a data-parallel loop over a pool
 * of worker threads, with the dot products of each weight type at the best instruction-set
 * level the CPU has.
 *
 * Contract
 * - On this backend the device is the host: kern_alloc of any kind is host memory, copies are
 *   memcpy and complete before kern_copy returns, events are complete when recorded, and
 *   kern_place returns the host pointer.  Operations return when their result is complete.
 * - The per-type kernel table (kern_cpu_type_kernels) holds a dot product, a multi-vector dot
 *   product and an activation quantiser per instruction-set level; the scalar level is the
 *   reference that the SIMD levels are tested against.
 * - The calls below that take a backend accept the CPU backend and `sim` (which runs these
 *   kernels behind its device checks) and refuse others: kern_cpu_n_threads returns 0 and
 *   kern_cpu_read_bandwidth returns 0 for them.
 */
#ifndef MOE_KERNELS_CPU_H
#define MOE_KERNELS_CPU_H

#include "kernels/kernels.h"

/* Instruction-set levels, in increasing order; a kernel for level L may use everything below. */
typedef enum kern_isa {
    KERN_ISA_SCALAR = 0,
    KERN_ISA_AVX2 = 1,   /* AVX2 + FMA + F16C */
    KERN_ISA_AVX512 = 2, /* AVX-512 F/BW/VL (+ F16C) */
    /* + AVX-512 DQ and VNNI (vpdpbusd): the quantised types' integer dot products.  A level of
     * its own so that a CPU with AVX-512 but no VNNI (Skylake-X) keeps the float kernels of
     * KERN_ISA_AVX512 and never runs VNNI code. */
    KERN_ISA_AVX512_VNNI = 3,
    KERN_ISA_COUNT
} kern_isa;

/* dot(row of n weights in the row's storage type, x: n activations in the type's act_type) */
typedef float (*kern_dot_fn)(const void *row, const void *x, int64_t n);
/* The same row against n_x vectors at once (vector j at x + j * x_stride bytes), results in
 * out[j].  Each result must be bit-identical to kern_dot_fn on that vector alone. */
typedef void (*kern_dot_multi_fn)(const void *row, const void *x, size_t x_stride, int n_x,
                                  int64_t n, float *out);
/* n f32 values into n / block_elems blocks of an activation type. */
typedef void (*kern_quantize_fn)(const float *src, void *dst, int64_t n);

typedef struct kern_cpu_type {
    kern_dot_fn dot[KERN_ISA_COUNT]; /* NULL where not provided: a lower level is used */
    kern_dot_multi_fn dot_multi[KERN_ISA_COUNT];
    kern_quantize_fn from_f32[KERN_ISA_COUNT]; /* activation types only */
} kern_cpu_type;

/* The CPU kernels of a type; NULL for a type this build does not know. */
const kern_cpu_type *kern_cpu_type_kernels(uint32_t type);

/* The best level this CPU supports, and a name for logs. */
kern_isa kern_cpu_isa(void);
const char *kern_isa_name(kern_isa isa);

typedef struct kern_cpu_opts {
    int n_threads;    /* 0: one per online CPU */
    kern_isa max_isa; /* cap the SIMD level (tests compare levels); KERN_ISA_COUNT = best */
} kern_cpu_opts;

kern_cpu_opts kern_cpu_opts_default(void);
int kern_cpu_open(kern_backend **out, const kern_cpu_opts *opts, char *err, size_t err_size);
int kern_cpu_n_threads(const kern_backend *b);
kern_isa kern_cpu_backend_isa(const kern_backend *b);

/* Reads `bytes` of `buf` once with all of the backend's threads and returns the achieved rate
 * in bytes per second: the memory-bandwidth floor the benchmarks compare against. */
double kern_cpu_read_bandwidth(kern_backend *b, const void *buf, size_t bytes);
/* The best of `reps` such passes over a buffer of `bytes` it allocates (every page faulted in
 * first); 0 when the memory cannot be had or the backend runs no CPU kernels. */
double kern_cpu_best_read_bandwidth(kern_backend *b, size_t bytes, int reps);

#endif
