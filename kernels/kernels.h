/*
 * kernels — the compute backend interface and the weight-type table.
 *
 * Contract
 * - A backend (kern_backend) is a table of operations on activations in float32, row-major
 *   [n_tokens][dim], and on weights in any supported storage type (kern_weight).  The forward
 *   pass calls only these operations, so a new backend (CUDA) or a new weight type (Q4_K)
 *   plugs in without touching the model code.  Pointers handed to operations are backend
 *   memory: host memory for the CPU backend (kern_alloc / kern_free give such memory for
 *   every backend).
 * - Every operation computes each token's row independently, in an order that does not depend
 *   on how many other tokens share the call: a sequence gets bit-identical results alone or
 *   inside any batch.  Tests rely on this.
 * - Weight types are a table (kern_type_traits): one row per storage type with its block
 *   geometry, a scalar dequantiser (the reference) and a dot product per instruction-set
 *   level.  Adding a type is adding a row.
 * - A backend is driven by one thread at a time (the engine thread); the CPU backend fans each
 *   operation out to its own worker threads and returns when the result is complete.
 * - kern_cpu_open / kern_backend_close own the backend and its threads.  Errors are negative
 *   errno values with a message in the caller's buffer.
 */
#ifndef MOE_KERNELS_H
#define MOE_KERNELS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* Storage types, numbered as ggml / GGUF number them so that a GGUF type id maps directly. */
typedef enum kern_type {
    KERN_T_F32 = 0,
    KERN_T_F16 = 1,
    KERN_T_Q4_0 = 2,
    KERN_T_Q4_1 = 3,
    KERN_T_Q5_0 = 6,
    KERN_T_Q5_1 = 7,
    KERN_T_Q8_0 = 8,
    KERN_T_Q8_1 = 9, /* activations only */
    KERN_T_Q4_K = 12,
    KERN_T_Q5_K = 13,
    KERN_T_Q6_K = 14,
    KERN_T_Q8_K = 15, /* activations only */
    KERN_T_BF16 = 30,
    KERN_T_COUNT = 40
} kern_type;

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

typedef struct kern_type_traits {
    const char *name;
    uint32_t block_elems; /* elements per block (1 for plain float types) */
    uint32_t block_bytes; /* bytes per block */
    void (*to_f32)(const void *src, float *dst, int64_t n); /* reference dequantiser */
    /* What the dot products take as activations: F32 for the float types, an 8-bit block
     * type (Q8_0, Q8_1, Q8_K) that the matmul quantises x into, once per call, otherwise. */
    uint32_t act_type;
    kern_dot_fn dot[KERN_ISA_COUNT]; /* NULL where not provided: a lower level is used */
    kern_dot_multi_fn dot_multi[KERN_ISA_COUNT];
    kern_quantize_fn from_f32[KERN_ISA_COUNT]; /* activation types only */
    bool activation_only;                      /* never a weight type (Q8_1, Q8_K) */
} kern_type_traits;

/* NULL for a type this build does not know. */
const kern_type_traits *kern_type_info(uint32_t type);
/* True for a type that weights may be stored in and this build can compute with. */
bool kern_type_supported(uint32_t type);
/* Bytes of one row of n_cols elements; 0 when n_cols is not a multiple of the block. */
size_t kern_row_bytes(uint32_t type, int64_t n_cols);

/* The best level this CPU supports, and a name for logs. */
kern_isa kern_cpu_isa(void);
const char *kern_isa_name(kern_isa isa);

/* A weight matrix: n_rows rows of n_cols elements, each row row_bytes apart. y = W x is
 * "dot every row with x"; this is a GGUF 2-D tensor with ne = {n_cols, n_rows}. */
typedef struct kern_weight {
    const void *data;
    uint32_t type;
    int64_t n_rows;
    int64_t n_cols;
    size_t row_bytes;
} kern_weight;

/* Rotary embedding layouts: NORM rotates adjacent pairs (x[2i], x[2i+1]); NEOX rotates
 * (x[i], x[i + n_rot/2]). */
typedef enum kern_rope_mode { KERN_ROPE_NORM = 0, KERN_ROPE_NEOX = 2 } kern_rope_mode;

/* What attention needs to know about one query token: where its sequence's cached keys and
 * values start and how many positions (0 .. n_kv-1) it may attend to. */
typedef struct kern_attn_token {
    const float *k; /* [n_kv][n_head_kv * head_dim] */
    const float *v; /* [n_kv][n_head_kv * head_dim] */
    int32_t n_kv;
} kern_attn_token;

typedef struct kern_backend kern_backend;

typedef struct kern_ops {
    /* y[t][r] = dot(W row r, x[t]) for t < n_tokens. x is [n_tokens][W.n_cols].  For a
     * quantised W, x is first quantised per token to the type's activation blocks. */
    void (*matmul)(kern_backend *b, const kern_weight *w, const float *x, float *y,
                   int64_t n_tokens);
    /* out[t] = x[t] / sqrt(mean(x[t]^2) + eps) * weight (weight may be NULL: no scaling);
     * the rows have n elements and are `stride` apart; out may equal x. */
    void (*rmsnorm)(kern_backend *b, const float *x, const float *weight, float *out, int64_t n,
                    int64_t n_rows, int64_t stride, float eps);
    /* In place on x [n_tokens][n_heads * head_dim]: rotate the first n_rot dims of each head. */
    void (*rope)(kern_backend *b, float *x, int64_t n_tokens, int n_heads, int head_dim, int n_rot,
                 const int32_t *pos, float freq_base, kern_rope_mode mode);
    /* out[t] (n_head * head_dim) = softmax(q[t]·K^T * scale) V, per head, grouped-query:
     * query head h reads KV head h / (n_head / n_head_kv).  Returns 0 or -ENOMEM. */
    int (*attention)(kern_backend *b, const float *q, const kern_attn_token *tokens, float *out,
                      int64_t n_tokens, int n_head, int n_head_kv, int head_dim, float scale);
    /* out[i] = silu(gate[i]) * up[i] */
    void (*silu_mul)(kern_backend *b, const float *gate, const float *up, float *out, int64_t n);
    /* y[i] += x[i] */
    void (*add)(kern_backend *b, float *y, const float *x, int64_t n);
    /* out[t] = W row ids[t] as f32 (embedding lookup). */
    void (*get_rows)(kern_backend *b, const kern_weight *w, const int32_t *ids, float *out,
                     int64_t n_ids);
    void (*destroy)(kern_backend *b);
    /* The first error an operation hit since the last call (0 if none), then cleared.  An
     * operation that fails (out of memory for its scratch) leaves its output zeroed and
     * records the error here, so that a whole step is checked once. */
    int (*take_error)(kern_backend *b);
} kern_ops;

struct kern_backend {
    const char *name;
    const kern_ops *ops;
};

typedef struct kern_cpu_opts {
    int n_threads;     /* 0: one per online CPU */
    kern_isa max_isa;  /* cap the SIMD level (tests compare levels); KERN_ISA_COUNT = best */
} kern_cpu_opts;

kern_cpu_opts kern_cpu_opts_default(void);
int kern_cpu_open(kern_backend **out, const kern_cpu_opts *opts, char *err, size_t err_size);
int kern_cpu_n_threads(const kern_backend *b);
kern_isa kern_cpu_backend_isa(const kern_backend *b);
void kern_backend_close(kern_backend **b);

/* Reads `bytes` of `buf` once with all of the backend's threads and returns the achieved rate
 * in bytes per second: the memory-bandwidth floor the benchmarks compare against. */
double kern_cpu_read_bandwidth(kern_backend *b, const void *buf, size_t bytes);

/* Probe for a CUDA device.  Returns the device count (0 when the build has no CUDA, there is
 * no driver or no device) and writes a one-line reason or description into msg. */
int kern_cuda_probe(char *msg, size_t msg_size);

/* Convenience wrappers so call sites read like the math. */
static inline void kern_matmul(kern_backend *b, const kern_weight *w, const float *x, float *y,
                               int64_t n_tokens)
{
    b->ops->matmul(b, w, x, y, n_tokens);
}

/* Scalar conversions shared by every backend and the tests. */
float kern_f16_to_f32(uint16_t h);
uint16_t kern_f32_to_f16(float f);
static inline float kern_bf16_to_f32(uint16_t h)
{
    uint32_t bits = (uint32_t)h << 16;
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}
uint16_t kern_f32_to_bf16(float f); /* round to nearest even, NaN stays NaN */

#endif
