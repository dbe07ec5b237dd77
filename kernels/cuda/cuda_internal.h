/*
 * Shared between the CUDA backend's files (the `cuda__` level of visibility): the backend
 * struct, its sticky error, scratch that grows on demand, and the entry points that
 * cuda_backend.cu puts in the ops table.
 *
 * Every operation is a void call queued on the compute stream.  Its failures (arguments the
 * kernels cannot take, a launch CUDA refuses, scratch that cannot grow) are recorded with
 * cuda__fail as the backend's first error and come back from the next kern_sync.  Kernels
 * that meet bad input they can only see on the device (an expert row id past the end, a KV
 * position outside the cache) skip that row and raise a bit in `fault`, host memory the
 * device writes directly, which kern_sync turns into an error once the streams are idle.
 *
 * State is owned by the one thread driving the backend (kernels.h); nothing here is global.
 */
#ifndef MOE_KERNELS_CUDA_INTERNAL_H
#define MOE_KERNELS_CUDA_INTERNAL_H

#include <cuda_runtime.h>
#include <stddef.h>
#include <stdint.h>

extern "C" {
#include "kernels/kernels.h"
}

/* Device-side faults, one bit per kind; kern_sync names the highest one set (a later bit can
 * cause an earlier one: keep causes last). */
enum {
    CUDA__FAULT_KV_POS = 1u << 0,    /* kv_store / attention: (seq, pos) outside the cache */
    CUDA__FAULT_KV_BLOCK = 1u << 1,  /* kv_store / attention: block not reserved (NULL) */
    CUDA__FAULT_ROW_ID = 1u << 2,    /* get_rows: id outside the weight */
    CUDA__FAULT_ROW_INDEX = 1u << 3, /* gather / moe_combine: negative row index */
    CUDA__FAULT_EXPERT_ID = 1u << 4, /* moe_align: an id outside the experts */
    CUDA__FAULT_COUNT = 5,
};

/* Device memory that only grows; `bytes` is what `ptr` holds. */
typedef struct cuda__scratch {
    void *ptr;
    size_t bytes;
} cuda__scratch;

typedef struct cuda_backend {
    kern_backend base; /* first: a kern_backend * is a cuda_backend * */
    int device;
    int sm_count;
    cudaStream_t streams[KERN_STREAM_COUNT];
    int error;              /* first failure since the last sync (negative errno), 0 if none */
    char message[256];      /* its description */
    unsigned *fault;        /* mapped pinned host word the kernels set CUDA__FAULT_* bits in */
    unsigned *fault_device; /* the same word as the device addresses it */
    cuda__scratch act;      /* matmul: activations quantised to 8 bits */
    cuda__scratch partial;  /* attention: per-split partial results */
    cuda__scratch moe_up;   /* experts: every bucket's up products at once */
    uint64_t scratch_gen;   /* bumped when a scratch moves: graphs of older ones are stale */
    /* The activations the last operation, a matmul, left quantised in `act`: the next matmul of
     * the same x (Q, K and V of one normed row) reuses them.  Every other operation and every
     * copy may write x or act, so cuda__enter and the copies forget them. */
    struct {
        const float *x;
        int64_t n_tokens, n_cols;
        const void *act;
    } act_of;
    bool capturing; /* the compute stream is being recorded into a graph */
    /* Batches of quantised weights run on the int8 tensor-core kernel: the device has them, the
     * opener did not turn them off, and their check at open gave the dp4a kernel's bits. */
    bool tensor_cores;
    char matmul_note[256]; /* which kernel runs batches, and why (kern_cuda_matmul_note) */
    /* Per-operation timing (cuda_profile.cu): while on, base.ops is `ops`, the plain table
     * with each operation between two events on the compute stream; sync reads them. */
    struct {
        cudaEvent_t *ev; /* 2 per call: its start and its end */
        uint8_t *op;     /* the kern_op of each call recorded since the last sync */
        bool *gap_ok;    /* nothing untimed ran between that call and the one before */
        size_t n, cap;   /* calls recorded, and room for them */
        int depth;       /* timed calls in progress (one inside another: the outer is timed) */
        bool broken;     /* untimed work since the last timed call */
        kern_profile sums;
        kern_ops ops;
    } prof;
} cuda_backend;

static inline cuda_backend *cuda__of(kern_backend *b)
{
    return (cuda_backend *)b;
}

static inline cudaStream_t cuda__compute(const cuda_backend *cb)
{
    return cb->streams[KERN_STREAM_COMPUTE];
}

/* Blocks for n items at per_block each, capped: kernels loop with a grid stride. */
static inline unsigned cuda__grid(int64_t n, int per_block)
{
    int64_t blocks = (n + per_block - 1) / per_block;
    const int64_t cap = 1 << 20;
    return (unsigned)(blocks < 1 ? 1 : blocks > cap ? cap : blocks);
}

/* Negative errno for a CUDA error; also clears the runtime's "last error" so that a later
 * launch check does not blame a kernel for an earlier API call's failure. */
int cuda__errno(cudaError_t rc);

/* Records rc (negative errno) and a printf-style message as the first error, unless one is
 * already kept. */
void cuda__fail(cuda_backend *cb, int rc, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* False (and the error recorded, naming op and call) when rc is not cudaSuccess. */
bool cuda__ok(cuda_backend *cb, cudaError_t rc, const char *op, const char *call);

/* Makes the backend's device current for this thread (the engine thread need not be the one
 * that opened the backend), and forgets act_of.  False with the error recorded on failure. */
bool cuda__enter(cuda_backend *cb, const char *op);

/* After a launch: false (error recorded) when CUDA refused it. */
bool cuda__launched(cuda_backend *cb, const char *op);

/* At least `bytes` of device scratch in s, or NULL with the error recorded (growing it waits
 * for the compute stream, which a capture cannot: it then fails the capture). */
void *cuda__scratch_get(cuda_backend *cb, cuda__scratch *s, size_t bytes, const char *op);

/* The backend's table (cuda_backend.cu), which the timed one wraps. */
extern const kern_ops cuda__ops;

/* cuda_profile.cu: kern_ops.set_profiling / get_profile; collect runs in sync, once both
 * streams are idle, and adds what the recorded events measured; release frees the events. */
int cuda__set_profiling(kern_backend *b, bool on);
void cuda__get_profile(const kern_backend *b, kern_profile *out);
void cuda__profile_collect(cuda_backend *cb);
void cuda__profile_release(cuda_backend *cb);

/* ---- operations (the kern_ops signatures) ----------------------------------------------- */

/* cuda_matmul.cu */
void cuda__matmul(kern_backend *b, const kern_weight *w, const float *x, float *y,
                  int64_t n_tokens);
void cuda__matmul_batched(kern_backend *b, const kern_weight *w, int64_t n_batch, const float *x,
                          float *y, int64_t n_tokens);
void cuda__get_rows(kern_backend *b, const kern_weight *w, const int32_t *ids, float *out,
                    int64_t n_ids);
void cuda__experts(kern_backend *b, const kern_ffn_expert *ex, int n_experts, const float *x,
                   float *out, float *g, float *u);
void cuda__experts_routed(kern_backend *b, const kern_expert_table *t, const kern_moe_plan *plan,
                          int64_t n_tokens, int k, const float *x, float *out, float *g, float *u);

/* Runs a few batches of random weights (Q8_0, Q4_K, Q6_K, Q2_K) through both kernels, the
 * dp4a one and the tensor-core one, and compares their bits: 0 when they agree, 1 when they do
 * not (why says where), a negative errno when CUDA failed (why says which call). */
int cuda__tensor_core_check(cuda_backend *cb, char *why, size_t why_size);

/* cuda_attention.cu */
void cuda__kv_store(kern_backend *b, const kern_kv_layout *kv, int layer, const float *k,
                    const float *v, const int32_t *seq, const int32_t *pos, int64_t n_tokens);
void cuda__attention(kern_backend *b, const kern_kv_layout *kv, int layer, const float *q,
                     const int32_t *seq, const int32_t *pos, float *out, int64_t n_tokens,
                     int n_head, int n_head_kv, int head_dim, float scale, int32_t window,
                     const float *sinks);

/* cuda_ops.cu */
void cuda__rmsnorm(kern_backend *b, const float *x, const float *weight, float *out, int64_t n,
                   int64_t n_rows, int64_t stride, float eps);
void cuda__rope(kern_backend *b, float *x, int64_t n_tokens, int n_heads, int head_dim, int n_rot,
                const int32_t *pos, float freq_base, kern_rope_mode mode,
                const kern_rope_yarn *yarn);
void cuda__silu_mul(kern_backend *b, const float *gate, const float *up, float *out, int64_t n);
void cuda__swiglu_oai(kern_backend *b, const float *gate, const float *up, float *out, int64_t n);
void cuda__add(kern_backend *b, float *y, const float *x, int64_t n);
void cuda__add_bias(kern_backend *b, float *x, const float *bias, int64_t n_rows, int64_t dim);
void cuda__gather(kern_backend *b, const float *src, const int32_t *rows, float *dst,
                  int64_t n_rows, int64_t dim);
void cuda__router(kern_backend *b, const float *logits, int64_t n_tokens, const kern_router_opts *o,
                  int32_t *ids, float *weights);
void cuda__moe_combine(kern_backend *b, const float *src, const int32_t *rows, const float *weights,
                       float *out, int64_t n_tokens, int k, int64_t dim);
void cuda__gate_add(kern_backend *b, const float *h, const float *gate, const float *x, float *out,
                    int64_t n_tokens, int64_t dim);
void cuda__moe_align(kern_backend *b, const int32_t *ids, const float *weights, int64_t n_tokens,
                     int k, int32_t n_expert, const kern_moe_plan *plan);

/* ---- device helpers shared by the kernels ------------------------------------------------ */

#define CUDA__FULL_MASK 0xffffffffu

/* Butterfly (xor) reductions: every lane ends with the same bits, and the order of the
 * additions is fixed by the lane numbering alone, never by the data or the batch. */
static __device__ __forceinline__ float cuda__warp_sum(float v)
{
#pragma unroll
    for (int o = 16; o > 0; o >>= 1)
        v = __fadd_rn(v, __shfl_xor_sync(CUDA__FULL_MASK, v, o));
    return v;
}

static __device__ __forceinline__ double cuda__warp_sum_double(double v)
{
#pragma unroll
    for (int o = 16; o > 0; o >>= 1)
        v += __shfl_xor_sync(CUDA__FULL_MASK, v, o);
    return v;
}

static __device__ __forceinline__ float cuda__warp_max(float v)
{
#pragma unroll
    for (int o = 16; o > 0; o >>= 1)
        v = fmaxf(v, __shfl_xor_sync(CUDA__FULL_MASK, v, o));
    return v;
}

static __device__ __forceinline__ int cuda__warp_sum_int(int v)
{
#pragma unroll
    for (int o = 16; o > 0; o >>= 1)
        v += __shfl_xor_sync(CUDA__FULL_MASK, v, o);
    return v;
}

/* The gated activations (kern_glu), shared by the element-wise ops and the grouped experts so
 * that both give the same bits; the operations are the CPU's, each explicitly rounded. */
static __device__ __forceinline__ float cuda__silu_times(float g, float u)
{
    return __fmul_rn(__fdiv_rn(g, __fadd_rn(1.0f, expf(-g))), u);
}

static __device__ __forceinline__ float cuda__swiglu_oai(float g, float u)
{
    const float alpha = 1.702f, limit = 7.0f;
    g = g < limit ? g : limit;
    u = u < -limit ? -limit : u > limit ? limit : u;
    const float glu = __fdiv_rn(g, __fadd_rn(1.0f, expf(-__fmul_rn(alpha, g))));
    return __fmul_rn(__fadd_rn(u, 1.0f), glu);
}

static __device__ __forceinline__ float cuda__glu(kern_glu kind, float g, float u)
{
    return kind == KERN_GLU_SWIGLU_OAI ? cuda__swiglu_oai(g, u) : cuda__silu_times(g, u);
}

/* Raises a fault bit in host memory; racing writers can only lose bits of the same call,
 * and one bit is enough to fail the sync. */
static __device__ __forceinline__ void cuda__raise(unsigned *fault, unsigned bit)
{
    volatile unsigned *f = fault;
    if (!(*f & bit)) {
        *f = *f | bit;
        __threadfence_system();
    }
}

#endif
