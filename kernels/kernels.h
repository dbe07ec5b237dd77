/*
 * kernels — the compute backend interface and the weight-type table.
 *
 * Contract
 * - A backend (kern_backend) owns device memory, two streams of work, events between them, and
 *   a table of operations.  Three backends implement it: `cpu` (kernels/cpu/cpu.h: the device is
 *   the host, every call completes before it returns), `sim` (kernels/sim/sim.h: the CPU kernels
 *   behind a separate "device" arena that every operation checks, and copies that complete on a
 *   thread after a modelled link delay) and `cuda` (kernels/cuda/cuda.h).  The forward pass is
 *   written against this header only.
 * - Memory.  kern_alloc gives memory of a kind: KERN_MEM_DEVICE (what operations read and
 *   write), KERN_MEM_HOST_PINNED (host memory the copy engine reads at full speed) or
 *   KERN_MEM_HOST.  kern_register makes existing host memory (the host expert tier's arena) as
 *   fast to copy from as pinned memory.  Operations take DEVICE pointers only, and never
 *   dereference host memory; the host never dereferences device memory.  On the CPU backend the
 *   two are the same memory; sim and cuda enforce the difference.
 * - Streams and events.  Every operation and every copy is queued on a stream: operations on
 *   KERN_STREAM_COMPUTE, copies on either.  Work on one stream runs in the order queued; work on
 *   different streams is ordered only through events (kern_event_record on one stream,
 *   kern_stream_wait on the other, or kern_event_wait on the host).  A host buffer handed to a
 *   copy must stay untouched until the copy is known complete (an event, or kern_sync).
 * - Errors.  Queued work cannot return an error; the first one is kept (sticky) and returned,
 *   with its message, by the next kern_sync, which waits for both streams.  Calls that return
 *   int report argument and resource errors at once as negative errno values.
 * - Weights are placed once at load: kern_place gives a device copy of host bytes (the CPU
 *   backend returns the host pointer itself and copies nothing), kern_unplace returns it.
 * - The KV cache is a backend object (kern_kv, below): paged blocks in device memory, a block
 *   table per sequence, F16 or F32 storage.
 * - Every operation computes each token's row independently, in an order that does not depend
 *   on how many other tokens share the call: a sequence gets bit-identical results alone or
 *   inside any batch.  Tests rely on this.
 * - Weight types are a table (kern_type_traits): one row per storage type with its block
 *   geometry and the scalar reference dequantiser.  How a backend computes with a type is the
 *   backend's (the CPU's dot products per instruction-set level are in kernels/cpu/cpu.h).
 * - A backend is driven by one thread at a time (the engine thread), except that
 *   kern_event_wait may also be called from one other thread while it drives (the model's CPU
 *   lane waits there for its inputs).  kern_close frees the backend; memory from kern_alloc and
 *   kern_place must be returned before.
 */
#ifndef MOE_KERNELS_H
#define MOE_KERNELS_H

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* Small helpers both the host and the CUDA kernels run (nvcc compiles this header too). */
#ifdef __CUDACC__
#define KERN_HOST_DEVICE __host__ __device__
#else
#define KERN_HOST_DEVICE
#endif

/* ---- weight types ------------------------------------------------------------------------- */

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
    KERN_T_Q2_K = 10,
    KERN_T_Q3_K = 11,
    KERN_T_Q4_K = 12,
    KERN_T_Q5_K = 13,
    KERN_T_Q6_K = 14,
    KERN_T_Q8_K = 15, /* activations only */
    KERN_T_IQ4_NL = 20,
    KERN_T_IQ4_XS = 23,
    KERN_T_BF16 = 30,
    KERN_T_MXFP4 = 39,
    KERN_T_COUNT = 40
} kern_type;

typedef struct kern_type_traits {
    const char *name;
    uint32_t block_elems; /* elements per block (1 for plain float types) */
    uint32_t block_bytes; /* bytes per block */
    void (*to_f32)(const void *src, float *dst, int64_t n); /* reference dequantiser */
    /* What the CPU's dot products take as activations: F32 for the float types, an 8-bit
     * block type (Q8_0, Q8_1, Q8_K) that the matmul quantises x into, once per call. */
    uint32_t act_type;
    /* Reference quantiser (activation types only): n f32 values into n / block_elems blocks. */
    void (*from_f32)(const float *src, void *dst, int64_t n);
    bool activation_only; /* never a weight type (Q8_1, Q8_K) */
} kern_type_traits;

/* NULL for a type this build does not know. */
const kern_type_traits *kern_type_info(uint32_t type);
/* True for a type that weights may be stored in and this build can compute with. */
bool kern_type_supported(uint32_t type);
/* Bytes of one row of n_cols elements; 0 when n_cols is not a multiple of the block. */
size_t kern_row_bytes(uint32_t type, int64_t n_cols);

/* A weight matrix: n_rows rows of n_cols elements, each row row_bytes apart. y = W x is
 * "dot every row with x"; this is a GGUF 2-D tensor with ne = {n_cols, n_rows}.  `data` is
 * device memory when the weight is handed to an operation. */
typedef struct kern_weight {
    const void *data;
    uint32_t type;
    int64_t n_rows;
    int64_t n_cols;
    size_t row_bytes;
} kern_weight;

/* ---- backends ------------------------------------------------------------------------------- */

typedef enum kern_backend_kind {
    KERN_BACKEND_CPU = 0,
    KERN_BACKEND_SIM,
    KERN_BACKEND_CUDA,
    KERN_BACKEND_COUNT
} kern_backend_kind;

typedef enum kern_mem {
    KERN_MEM_DEVICE = 0,
    KERN_MEM_HOST_PINNED,
    KERN_MEM_HOST,
} kern_mem;

typedef enum kern_stream {
    KERN_STREAM_COMPUTE = 0,
    KERN_STREAM_COPY,
    KERN_STREAM_COUNT
} kern_stream;

typedef enum kern_copy_dir {
    KERN_COPY_TO_DEVICE = 0, /* host -> device */
    KERN_COPY_TO_HOST,       /* device -> host */
    KERN_COPY_ON_DEVICE,     /* device -> device */
} kern_copy_dir;

/* Rotary embedding layouts: NORM rotates adjacent pairs (x[2i], x[2i+1]); NEOX rotates
 * (x[i], x[i + n_rot/2]). */
typedef enum kern_rope_mode { KERN_ROPE_NORM = 0, KERN_ROPE_NEOX = 2 } kern_rope_mode;

/* YaRN context extension (gpt-oss), as transformers' _compute_yarn_parameters computes it:
 * pair i's frequency blends the interpolated base^(-2i/n_rot) / factor and the extrapolated
 * base^(-2i/n_rot) by a ramp that is 0 below the correction dimension `low` and 1 above `high`
 * (low, high: the dimensions where a pair turns beta_fast and beta_slow times over orig_ctx
 * positions; floored and ceiled with truncate, as llama.cpp always does); cos and sin are then
 * multiplied by attn_factor. */
typedef struct kern_rope_yarn {
    float factor;
    float orig_ctx;
    float beta_fast, beta_slow;
    float attn_factor;
    bool truncate;
} kern_rope_yarn;

/* The ramp's ends, low and high, for a rope of n_rot dimensions (each backend's YaRN uses
 * these, so that they agree on which pairs are interpolated). */
void kern_rope_yarn_ramp(const kern_rope_yarn *y, int n_rot, float freq_base, double *low,
                         double *high);

typedef enum kern_kv_type { KERN_KV_F16 = 0, KERN_KV_F32 } kern_kv_type;

/* Where one layer's keys and values of every sequence are, as the operations see it (device
 * side).  Position p of sequence s lives in block table[s * max_blocks + p / block_tokens],
 * which points at a block laid out as [n_layer][2 (K, V)][block_tokens][kv_dim] elements of
 * `type` — or, with head_major, [n_layer][2][kv_dim / head_dim][block_tokens][head_dim], so that
 * one KV head's rows of a block are contiguous.  The layout is the backend's: the CPU's
 * attention reads a head's rows one after the other (head_major, set for cpu and sim), CUDA's
 * reads a position's row across a warp. */
typedef struct kern_kv_layout {
    void *const *table; /* device memory: [n_seq][max_blocks] block pointers */
    int32_t n_seq;
    int32_t max_blocks;
    int32_t block_tokens;
    int32_t n_layer;
    int32_t kv_dim;   /* n_head_kv * head_dim */
    int32_t head_dim; /* with head_major: the width of one head's rows */
    bool head_major;
    /* The values are the keys' rows (deepseek2's latent attention reads its latent as both): a
     * block holds one plane per layer, [n_layer][1][...], and kv_store's v is not read. */
    bool v_is_k;
    kern_kv_type type;
} kern_kv_layout;

typedef enum kern_gating {
    KERN_GATING_SOFTMAX = 0,  /* softmax over all experts, then top-k */
    KERN_GATING_SIGMOID,      /* per-expert sigmoid, then top-k */
    KERN_GATING_TOPK_SOFTMAX, /* top-k of the logits, then a softmax over the k chosen (gpt-oss) */
} kern_gating;

/* How router logits become k (expert, weight) pairs per token: p = gating(logits); the k
 * largest p (the lower index first among equals) in descending order; then, with norm, divided
 * by their sum (clamped below at 6.103515625e-5, the smallest normal f16, as llama.cpp does);
 * then multiplied by scale.  TOPK_SOFTMAX picks the k largest logits the same way and turns
 * only those into weights.
 * DeepSeek-V3 / GLM-4.5 choose differently from how they weight: with sel_bias, the experts are
 * chosen by p + sel_bias but weighted by p; with n_group > 1, the experts form n_group equal
 * groups, each scored by the sum of its two largest p + sel_bias, and only the n_group_used
 * best groups' experts can be chosen (transformers' Glm4MoeTopkRouter.get_topk_indices). */
#define KERN_ROUTER_MAX_GROUPS 64 /* DeepSeek-V3 has 8 */

typedef struct kern_router_opts {
    int32_t n_expert;
    int32_t k;
    kern_gating gating;
    bool norm;
    float scale;
    const float *sel_bias; /* device memory, [n_expert], or NULL */
    int32_t n_group;       /* 0 or 1: no groups; at most KERN_ROUTER_MAX_GROUPS */
    int32_t n_group_used;
} kern_router_opts;

typedef struct kern_backend kern_backend;
typedef struct kern_event kern_event;
typedef struct kern_graph kern_graph;

/* The operations, for per-operation timing (the bench's --profile). */
typedef enum kern_op {
    KERN_OP_MATMUL = 0, /* matmul and matmul_batched */
    KERN_OP_RMSNORM,
    KERN_OP_ROPE,
    KERN_OP_KV_STORE,
    KERN_OP_ATTENTION,
    KERN_OP_SILU_MUL,
    KERN_OP_ADD,
    KERN_OP_ADD_BIAS,
    KERN_OP_GET_ROWS,
    KERN_OP_GATHER,
    KERN_OP_ROUTER,
    KERN_OP_EXPERTS,
    KERN_OP_MOE_COMBINE,
    KERN_OP_GATE_ADD,
    KERN_OP_COPY, /* copies on the compute stream */
    KERN_OP_SWIGLU_OAI,
    KERN_OP_MOE_ALIGN,
    KERN_OP_EXPERTS_ROUTED,
    KERN_OP_COUNT
} kern_op;

/* What the operations took since profiling was turned on, each call counted once (an
 * operation that runs others is timed as one).  On the CPU (and sim, whose arithmetic is the
 * CPU's) an operation's time is its call's wall time: the call does the work.  On a device
 * (device_time) it is the device's time from the operation's first kernel to its last, read
 * from events around it on the compute stream once a sync has seen them run; gap_ns is the
 * compute stream's idle time between one timed operation's end and the next one's start
 * (nothing untimed between them, the same sync after both): where it waited for the host to
 * queue work, or for a copy it was told to wait for. */
typedef struct kern_profile {
    uint64_t calls[KERN_OP_COUNT];
    uint64_t ns[KERN_OP_COUNT];
    bool device_time;
    uint64_t gap_ns;
    /* calls not timed: queued while a graph was recorded, replayed inside one, or past what
     * the backend can hold between two syncs */
    uint64_t untimed;
} kern_profile;

const char *kern_op_name(kern_op op);

/* The gated activation between an FFN's gate and up products and its down product. */
typedef enum kern_glu {
    KERN_GLU_SILU = 0, /* silu(g) * u */
    /* gpt-oss's clamped SwiGLU: g = min(g, 7), u = clamp(u, -7, 7), g * sigmoid(1.702 g) * (u + 1)
     * (alpha 1.702 and limit 7 are fixed by the model: transformers' GptOssExperts, llama.cpp's
     * swiglu_oai) */
    KERN_GLU_SWIGLU_OAI,
} kern_glu;

/* One routed expert of a grouped FFN (the experts op): its three weights and its bucket, rows
 * [row0, row0 + n_rows) of the op's x and out; optional biases (device memory, NULL: none)
 * added after each product, and the activation between them. */
typedef struct kern_ffn_expert {
    kern_weight gate, up, down;
    int64_t row0, n_rows;
    const float *gate_bias, *up_bias, *down_bias;
    kern_glu glu;
} kern_ffn_expert;

/* Where a layer's tokens go, worked out on the device from the router's choices (the
 * moe_align op) so that the experts can run without the host seeing the ids: the tokens
 * bucketed by expert (a stable counting sort: token order inside a bucket), and each token's
 * bucket rows in ascending expert order for moe_combine.  All device memory. */
typedef struct kern_moe_plan {
    int32_t *bucket_start; /* [n_expert + 1]: bucket e is rows [start[e], start[e + 1]) */
    int32_t *used;         /* [n_expert + 1]: how many buckets are not empty, then those experts,
                            * ascending */
    int32_t *bucket;       /* [n_tokens * k]: the token of each bucket row */
    int32_t *comb_rows;    /* [n_tokens][k]: the token's bucket rows, ascending */
    float *comb_w;         /* [n_tokens][k]: the router's weight of each */
} kern_moe_plan;

/* A layer's routed experts as the device reaches them (the experts_routed op): one type and
 * shape per part for all of them (GGUF stacks them), and a device table of where each
 * expert's three parts are, which a cache may rewrite between steps without the queued or
 * captured work changing. */
typedef struct kern_expert_table {
    kern_weight gate, up, down; /* the shared type and shape; `data` is not read */
    const void *const *parts;   /* device memory, [n_expert][3]: gate, up, down data; a NULL
                                 * gate: the expert is not on the device (its rows are left
                                 * for the caller to fill) */
    /* device memory or NULL: [n_expert][gate.n_rows], [n_expert][up.n_rows],
     * [n_expert][down.n_rows] */
    const float *gate_bias, *up_bias, *down_bias;
    int32_t n_expert;
    kern_glu glu;
} kern_expert_table;

/* The table a backend fills in.  Callers use the kern_* wrappers below. */
typedef struct kern_ops {
    /* -- memory, copies, events (return 0 or a negative errno) -- */
    int (*alloc)(kern_backend *b, kern_mem kind, size_t bytes, void **out);
    void (*free)(kern_backend *b, kern_mem kind, void *p);
    int (*register_host)(kern_backend *b, void *p, size_t bytes);
    void (*unregister_host)(kern_backend *b, void *p);
    int (*mem_info)(kern_backend *b, size_t *free_bytes, size_t *total_bytes);
    int (*copy)(kern_backend *b, kern_stream s, void *dst, const void *src, size_t bytes,
                kern_copy_dir dir);
    int (*event_create)(kern_backend *b, kern_event **out);
    void (*event_destroy)(kern_backend *b, kern_event *e);
    int (*event_record)(kern_backend *b, kern_event *e, kern_stream s);
    int (*event_query)(kern_backend *b, kern_event *e); /* 1 done, 0 pending */
    int (*event_wait)(kern_backend *b, kern_event *e);  /* the host blocks */
    int (*stream_wait)(kern_backend *b, kern_stream s, kern_event *e);
    int (*sync)(kern_backend *b, char *err, size_t err_size);

    /* -- operations, queued on the compute stream; all pointers are device memory -- */

    /* y[t][r] = dot(W row r, x[t]) for t < n_tokens. x is [n_tokens][W.n_cols]. */
    void (*matmul)(kern_backend *b, const kern_weight *w, const float *x, float *y,
                   int64_t n_tokens);
    /* n_batch matmuls at once: W's rows are n_batch equal blocks (W.n_rows / n_batch rows
     * each; deepseek2's per-head absorbed K and V), x is [n_batch][n_tokens][W.n_cols], y is
     * [n_batch][n_tokens][W.n_rows / n_batch], and y[i] = x[i] times block i, bit for bit what
     * matmul gives for that block alone.  NULL in a backend's table: kern_matmul_batched runs
     * the blocks one by one. */
    void (*matmul_batched)(kern_backend *b, const kern_weight *w, int64_t n_batch, const float *x,
                           float *y, int64_t n_tokens);
    /* out[r] = x[r] / sqrt(mean(x[r]^2) + eps) * weight (weight may be NULL: no scaling);
     * n_rows rows of n elements, `stride` elements apart; out may equal x. */
    void (*rmsnorm)(kern_backend *b, const float *x, const float *weight, float *out, int64_t n,
                    int64_t n_rows, int64_t stride, float eps);
    /* In place on x [n_tokens][n_heads * head_dim]: rotate the first n_rot dims of each head by
     * the angles of pos[t] (theta_i = pos * freq_base^(-2i/n_rot)), or YaRN's (yarn not NULL;
     * host memory, read during the call).  Nothing past the first n_rot of a head is touched, so
     * x may point into a wider row (deepseek2 rotates the tail of each head or latent row): it
     * must hold (n_tokens * n_heads - 1) * head_dim + n_rot floats. */
    void (*rope)(kern_backend *b, float *x, int64_t n_tokens, int n_heads, int head_dim, int n_rot,
                 const int32_t *pos, float freq_base, kern_rope_mode mode,
                 const kern_rope_yarn *yarn);
    /* Stores token t's k and v rows (kv_dim each) at (seq[t], pos[t]) of `layer`; the blocks
     * must have been reserved (kern_kv_reserve). */
    void (*kv_store)(kern_backend *b, const kern_kv_layout *kv, int layer, const float *k,
                     const float *v, const int32_t *seq, const int32_t *pos, int64_t n_tokens);
    /* out[t] (n_head * head_dim) = softmax(q[t]·K^T * scale) V per head over positions
     * 0 .. pos[t] of sequence seq[t] in `layer`, grouped-query: query head h reads KV head
     * h / (n_head / n_head_kv).  window > 0: only positions above pos[t] - window (a sliding
     * window).  sinks (device memory, [n_head], or NULL): head h's softmax gets one more logit,
     * sinks[h], whose share of the probability is dropped (gpt-oss's attention sinks). */
    void (*attention)(kern_backend *b, const kern_kv_layout *kv, int layer, const float *q,
                      const int32_t *seq, const int32_t *pos, float *out, int64_t n_tokens,
                      int n_head, int n_head_kv, int head_dim, float scale, int32_t window,
                      const float *sinks);
    /* out[i] = silu(gate[i]) * up[i] */
    void (*silu_mul)(kern_backend *b, const float *gate, const float *up, float *out, int64_t n);
    /* out[i] = KERN_GLU_SWIGLU_OAI of gate[i] and up[i].  NULL in a backend's table: the
     * backend cannot run gpt-oss (the model refuses it at open). */
    void (*swiglu_oai)(kern_backend *b, const float *gate, const float *up, float *out, int64_t n);
    /* y[i] += x[i] */
    void (*add)(kern_backend *b, float *y, const float *x, int64_t n);
    /* x[r][i] += bias[i] for n_rows rows of dim */
    void (*add_bias)(kern_backend *b, float *x, const float *bias, int64_t n_rows, int64_t dim);
    /* out[i] = W row ids[i] as f32 (embedding lookup). */
    void (*get_rows)(kern_backend *b, const kern_weight *w, const int32_t *ids, float *out,
                     int64_t n_ids);
    /* dst[i] = src[rows[i]] for i < n_rows, rows of dim floats. */
    void (*gather)(kern_backend *b, const float *src, const int32_t *rows, float *dst,
                   int64_t n_rows, int64_t dim);
    /* ids[t][j], weights[t][j] for j < k: token t's routing (kern_router_opts). */
    void (*router)(kern_backend *b, const float *logits, int64_t n_tokens,
                   const kern_router_opts *o, int32_t *ids, float *weights);
    /* For each of the n_experts experts: rows [row0, row0 + n_rows) of out (n_embd wide) =
     * down(glu(gate x, up x)) over the same rows of x (with the expert's biases); buckets do not
     * overlap.  Each row is computed as matmul, add_bias, silu_mul (or swiglu_oai), matmul and
     * add_bias compute it, bit for bit.  g: scratch of n_ff
     * floats for every row of x the buckets cover; u: n_ff floats for each row of the largest
     * bucket.  NULL in a backend's table: kern_experts runs the experts one by one. */
    void (*experts)(kern_backend *b, const kern_ffn_expert *ex, int n_experts, const float *x,
                    float *out, float *g, float *u);
    /* out[t] = sum over j < k, in j order, of weights[t][j] * src[rows[t][j]]: the experts'
     * outputs scattered back to their tokens.  The caller orders each token's j by ascending
     * expert, so the sum's order never depends on the batch. */
    void (*moe_combine)(kern_backend *b, const float *src, const int32_t *rows,
                        const float *weights, float *out, int64_t n_tokens, int k, int64_t dim);
    /* out[t] += sigmoid(dot(gate, h[t])) * x[t] for n_tokens rows of dim: the shared expert's
     * scalar gate (the dot accumulated in double). */
    void (*gate_add)(kern_backend *b, const float *h, const float *gate, const float *x, float *out,
                     int64_t n_tokens, int64_t dim);
    /* The plan of a layer from ids and weights ([n_tokens][k], the router's output): bit for
     * bit what kern_moe_align_host computes.  An id outside [0, n_expert) is an error (the
     * token gets no row for it; a backend that goes on past it leaves the plan safe to use:
     * the rows nobody got are -1: gather writes zeros for them, moe_combine leaves them
     * out). */
    void (*moe_align)(kern_backend *b, const int32_t *ids, const float *weights, int64_t n_tokens,
                      int k, int32_t n_expert, const kern_moe_plan *plan);
    /* The experts op over a plan: for every used expert whose table entry is on the device,
     * rows [start[e], start[e + 1]) of out = its FFN over the same rows of x, bit for bit what
     * the experts op gives for that bucket.  n_tokens bounds every bucket (a token picks an
     * expert at most once); g and u are as the experts op's for n_tokens * k rows. */
    void (*experts_routed)(kern_backend *b, const kern_expert_table *t, const kern_moe_plan *plan,
                           int64_t n_tokens, int k, const float *x, float *out, float *g, float *u);

    /* -- graphs: a step queued once and replayed (NULL in a backend's table: none) --
     * Between capture_begin and capture_end the operations and the compute stream's copies are
     * recorded instead of run; graph_launch queues the recording on the compute stream again.
     * A replay reads and writes the same addresses, with whatever they hold by then, and takes
     * every other argument as it was at capture (host structs are copied), so the caller keeps
     * the inputs of a replayed step at fixed addresses.  A host wait (sync, event_wait) between
     * begin and end fails the capture.  capture_begin returns a pending sticky error instead of
     * starting.  capture_end returns 0 with the graph, or a negative errno with the reason in
     * err: nothing recorded ran, and an operation's failure while recording is the capture's
     * (the sticky error is left clear).  graph_launch returns -ESTALE, queuing nothing, when
     * the backend's own scratch moved since the capture: capture again. */
    int (*capture_begin)(kern_backend *b);
    int (*capture_end)(kern_backend *b, kern_graph **out, char *err, size_t err_size);
    int (*graph_launch)(kern_backend *b, kern_graph *g);
    void (*graph_destroy)(kern_backend *b, kern_graph *g);

    /* -- per-operation timing (kern_profile; NULL in a backend's table: none) -- */
    int (*set_profiling)(kern_backend *b, bool on);
    void (*get_profile)(const kern_backend *b, kern_profile *out);

    void (*destroy)(kern_backend *b);
} kern_ops;

struct kern_backend {
    const char *name; /* "cpu", "sim", "cuda" */
    kern_backend_kind kind;
    const kern_ops *ops;
};

typedef struct kern_open_opts {
    kern_backend_kind kind;
    int n_threads; /* CPU threads (cpu, sim, and the CPU side of cuda); 0: one per core */
    int device;    /* cuda: the device index */
    /* cuda: run batches of quantised weights on the dp4a kernel, not the int8 tensor cores
     * (the same bits, slower: for measuring the two) */
    bool no_tensor_cores;
    /* sim: the device's memory and its link.  0 picks the defaults: 16 GiB, the PCIe Gen5 x16
     * figures measured on the H200 machine (50 GB/s from pinned memory, 6 GB/s from pageable,
     * 2.8 us per copy). */
    uint64_t sim_device_bytes;
    double sim_link_gbps;
    double sim_pageable_gbps;
    double sim_latency_us;
} kern_open_opts;

kern_open_opts kern_open_opts_default(void);
/* Opens the backend of opts->kind.  -ENODEV (with the reason) for cuda without a usable device
 * or without CUDA in this build. */
int kern_open(kern_backend **out, const kern_open_opts *opts, char *err, size_t err_size);
void kern_close(kern_backend **b);
/* "cpu", "sim", "cuda"; parse gives -EINVAL for anything else. */
const char *kern_backend_kind_name(kern_backend_kind kind);
int kern_backend_kind_parse(const char *name, kern_backend_kind *out);

/* Probe for a CUDA device.  Returns the device count (0 when the build has no CUDA, there is
 * no driver or no device) and writes a one-line reason or description into msg. */
int kern_cuda_probe(char *msg, size_t msg_size);

/* ---- memory, copies, events ------------------------------------------------------------- */

static inline int kern_alloc(kern_backend *b, kern_mem kind, size_t bytes, void **out)
{
    return b->ops->alloc(b, kind, bytes, out);
}
static inline void kern_free(kern_backend *b, kern_mem kind, void *p)
{
    if (p) b->ops->free(b, kind, p);
}
static inline int kern_register(kern_backend *b, void *p, size_t bytes)
{
    return b->ops->register_host(b, p, bytes);
}
static inline void kern_unregister(kern_backend *b, void *p)
{
    if (p) b->ops->unregister_host(b, p);
}
static inline int kern_mem_info(kern_backend *b, size_t *free_bytes, size_t *total_bytes)
{
    return b->ops->mem_info(b, free_bytes, total_bytes);
}
static inline int kern_copy(kern_backend *b, kern_stream s, void *dst, const void *src,
                            size_t bytes, kern_copy_dir dir)
{
    return b->ops->copy(b, s, dst, src, bytes, dir);
}
static inline int kern_event_create(kern_backend *b, kern_event **out)
{
    return b->ops->event_create(b, out);
}
static inline void kern_event_destroy(kern_backend *b, kern_event **e)
{
    if (*e) b->ops->event_destroy(b, *e);
    *e = NULL;
}
static inline int kern_event_record(kern_backend *b, kern_event *e, kern_stream s)
{
    return b->ops->event_record(b, e, s);
}
static inline int kern_event_query(kern_backend *b, kern_event *e)
{
    return b->ops->event_query(b, e);
}
static inline int kern_event_wait(kern_backend *b, kern_event *e)
{
    return b->ops->event_wait(b, e);
}
static inline int kern_stream_wait(kern_backend *b, kern_stream s, kern_event *e)
{
    return b->ops->stream_wait(b, s, e);
}
/* Waits for both streams; returns the first error since the last sync (0 if none) with its
 * message in err, and clears it. */
static inline int kern_sync(kern_backend *b, char *err, size_t err_size)
{
    return b->ops->sync(b, err, err_size);
}

/* Graphs (kern_ops.capture_begin): whether the backend has them, and the calls. */
static inline bool kern_has_graphs(const kern_backend *b)
{
    return b->ops->capture_begin != NULL;
}
static inline int kern_capture_begin(kern_backend *b)
{
    return b->ops->capture_begin(b);
}
static inline int kern_capture_end(kern_backend *b, kern_graph **out, char *err, size_t err_size)
{
    return b->ops->capture_end(b, out, err, err_size);
}
static inline int kern_graph_launch(kern_backend *b, kern_graph *g)
{
    return b->ops->graph_launch(b, g);
}
static inline void kern_graph_destroy(kern_backend *b, kern_graph **g)
{
    if (*g) b->ops->graph_destroy(b, *g);
    *g = NULL;
}

/* Per-operation timing: turning it on clears the sums; -ENOTSUP where the backend has none.
 * Timing costs a little per operation (two clock reads on the CPU, two events on a device) and
 * is meant for measuring, not serving. */
static inline int kern_set_profiling(kern_backend *b, bool on)
{
    return b->ops->set_profiling ? b->ops->set_profiling(b, on) : -ENOTSUP;
}
static inline void kern_get_profile(const kern_backend *b, kern_profile *out)
{
    memset(out, 0, sizeof *out);
    if (b->ops->get_profile) b->ops->get_profile(b, out);
}

/* The best time, in seconds, of `reps` copies of `bytes` in direction `dir` (host memory pinned,
 * device-to-host and host-to-device on the copy stream): what benchmarks and the miss policy's
 * cost model measure the link and the device's memory with.  0 when the memory cannot be had. */
double kern_copy_seconds(kern_backend *b, kern_copy_dir dir, size_t bytes, int reps);

/* A device copy of `bytes` host bytes, made once (weights at load); on the CPU backend the host
 * pointer itself.  Return it with kern_unplace. */
int kern_place(kern_backend *b, const void *host, size_t bytes, const void **out, char *err,
               size_t err_size);
void kern_unplace(kern_backend *b, const void *host, const void *placed);

/* ---- the paged KV cache ------------------------------------------------------------------- */

/* Memory grows with the positions actually held: blocks of block_tokens positions are taken
 * from a free list as sequences grow (storage itself is allocated in chunks of blocks from the
 * backend, up to what n_seq x n_ctx could need) and go back when a sequence is cleared.  Each
 * block has a reference count so that sequences may share a prefix's blocks later. */
typedef struct kern_kv_opts {
    int32_t n_layer;
    int32_t kv_dim;
    int32_t head_dim; /* 0: kv_dim (one head) */
    int32_t n_seq;
    int32_t n_ctx;        /* positions per sequence */
    int32_t block_tokens; /* 0: 16 */
    kern_kv_type type;
    bool v_is_k; /* see kern_kv_layout */
    /* Published blocks no sequence holds are kept for reuse up to this many (least recently
     * released out first); 0: as many as the memory holds. */
    int32_t max_cached_blocks;
} kern_kv_opts;

typedef struct kern_kv kern_kv;

int kern_kv_open(kern_kv **out, kern_backend *b, const kern_kv_opts *opts, char *err,
                 size_t err_size);
void kern_kv_close(kern_kv **kv);
/* Makes positions 0 .. n_pos - 1 of seq storable (queues the block-table update on the compute
 * stream).  -ENOMEM with a message when the backend has no memory for another chunk. */
int kern_kv_reserve(kern_kv *kv, int32_t seq, int32_t n_pos, char *err, size_t err_size);
/* Gives seq's blocks back; its next token may start again at position 0. */
void kern_kv_clear(kern_kv *kv, int32_t seq);
const kern_kv_layout *kern_kv_get_layout(const kern_kv *kv);
/* Prefix reuse.  A sequence's full block may be published under a key that names its tokens and
 * every token before them (the caller's chained hash; 0 is no key); a sequence with no blocks
 * attaches the longest run of published blocks matching keys[0..n_keys) in order and returns
 * how many (its next position is that many blocks in), or a negative error.  Published blocks
 * that no sequence holds are kept, least recently released first out, until a reserve finds
 * neither a free block nor room for a new chunk. */
int32_t kern_kv_attach_prefix(kern_kv *kv, int32_t seq, const uint64_t *keys, int32_t n_keys,
                              char *err, size_t err_size);
void kern_kv_publish(kern_kv *kv, int32_t seq, int32_t block, uint64_t key);
typedef struct kern_kv_prefix_stats {
    int32_t cached_blocks; /* published blocks no sequence holds, kept for reuse */
    uint64_t evictions;    /* such blocks given up for memory */
} kern_kv_prefix_stats;
void kern_kv_get_prefix_stats(const kern_kv *kv, kern_kv_prefix_stats *out);
/* Bytes of storage allocated now, bytes per block, and bytes per 1024 positions held. */
size_t kern_kv_allocated_bytes(const kern_kv *kv);
size_t kern_kv_block_bytes(const kern_kv *kv);
int32_t kern_kv_blocks_used(const kern_kv *kv);
const char *kern_kv_type_name(kern_kv_type t);

/* ---- operations: wrappers so that call sites read like the math ------------------------------ */

static inline void kern_matmul(kern_backend *b, const kern_weight *w, const float *x, float *y,
                               int64_t n_tokens)
{
    b->ops->matmul(b, w, x, y, n_tokens);
}
static inline void kern_rmsnorm(kern_backend *b, const float *x, const float *weight, float *out,
                                int64_t n, int64_t n_rows, int64_t stride, float eps)
{
    b->ops->rmsnorm(b, x, weight, out, n, n_rows, stride, eps);
}
static inline void kern_rope(kern_backend *b, float *x, int64_t n_tokens, int n_heads, int head_dim,
                             int n_rot, const int32_t *pos, float freq_base, kern_rope_mode mode,
                             const kern_rope_yarn *yarn)
{
    b->ops->rope(b, x, n_tokens, n_heads, head_dim, n_rot, pos, freq_base, mode, yarn);
}
static inline void kern_kv_store(kern_backend *b, const kern_kv_layout *kv, int layer,
                                 const float *k, const float *v, const int32_t *seq,
                                 const int32_t *pos, int64_t n_tokens)
{
    b->ops->kv_store(b, kv, layer, k, v, seq, pos, n_tokens);
}
static inline void kern_attention(kern_backend *b, const kern_kv_layout *kv, int layer,
                                  const float *q, const int32_t *seq, const int32_t *pos,
                                  float *out, int64_t n_tokens, int n_head, int n_head_kv,
                                  int head_dim, float scale, int32_t window, const float *sinks)
{
    b->ops->attention(b, kv, layer, q, seq, pos, out, n_tokens, n_head, n_head_kv, head_dim, scale,
                      window, sinks);
}
static inline void kern_silu_mul(kern_backend *b, const float *gate, const float *up, float *out,
                                 int64_t n)
{
    b->ops->silu_mul(b, gate, up, out, n);
}
static inline void kern_swiglu_oai(kern_backend *b, const float *gate, const float *up, float *out,
                                   int64_t n)
{
    b->ops->swiglu_oai(b, gate, up, out, n);
}
static inline void kern_add(kern_backend *b, float *y, const float *x, int64_t n)
{
    b->ops->add(b, y, x, n);
}
static inline void kern_add_bias(kern_backend *b, float *x, const float *bias, int64_t n_rows,
                                 int64_t dim)
{
    b->ops->add_bias(b, x, bias, n_rows, dim);
}
static inline void kern_get_rows(kern_backend *b, const kern_weight *w, const int32_t *ids,
                                 float *out, int64_t n_ids)
{
    b->ops->get_rows(b, w, ids, out, n_ids);
}
static inline void kern_gather(kern_backend *b, const float *src, const int32_t *rows, float *dst,
                               int64_t n_rows, int64_t dim)
{
    b->ops->gather(b, src, rows, dst, n_rows, dim);
}
static inline void kern_router(kern_backend *b, const float *logits, int64_t n_tokens,
                               const kern_router_opts *o, int32_t *ids, float *weights)
{
    b->ops->router(b, logits, n_tokens, o, ids, weights);
}
/* The experts op as matmul, add_bias, silu_mul (or swiglu_oai), matmul and add_bias per expert:
 * backends without a grouped kernel, and the CPU's for experts whose types cannot share one. */
void kern_experts_one_by_one(kern_backend *b, const kern_ffn_expert *ex, int n_experts,
                             const float *x, float *out, float *g, float *u);
/* Block i of the n_batch equal row blocks of w (the matmul_batched op's operand). */
kern_weight kern_weight_block(const kern_weight *w, int64_t n_batch, int64_t i);
void kern_matmul_batched_one_by_one(kern_backend *b, const kern_weight *w, int64_t n_batch,
                                    const float *x, float *y, int64_t n_tokens);
static inline void kern_matmul_batched(kern_backend *b, const kern_weight *w, int64_t n_batch,
                                       const float *x, float *y, int64_t n_tokens)
{
    if (b->ops->matmul_batched)
        b->ops->matmul_batched(b, w, n_batch, x, y, n_tokens);
    else
        kern_matmul_batched_one_by_one(b, w, n_batch, x, y, n_tokens);
}
static inline void kern_experts(kern_backend *b, const kern_ffn_expert *ex, int n_experts,
                                const float *x, float *out, float *g, float *u)
{
    if (b->ops->experts)
        b->ops->experts(b, ex, n_experts, x, out, g, u);
    else
        kern_experts_one_by_one(b, ex, n_experts, x, out, g, u);
}
/* moe_align and experts_routed where the host can read the plan and the table (the CPU's
 * memory, and the sim's arena): the reference.  moe_align_host returns -EINVAL (nothing
 * written) for an id outside [0, n_expert); experts_routed_host -ENOMEM when its list of
 * experts cannot be had, else it queues one experts op on b. */
int kern_moe_align_host(const int32_t *ids, const float *weights, int64_t n_tokens, int k,
                        int32_t n_expert, const kern_moe_plan *plan);
/* A token's j-th (row, weight) into its first j, kept ascending by row (rows grow with the
 * expert id): the order of comb_rows, the same in the host's plan and the device's. */
static inline KERN_HOST_DEVICE void kern_moe_insert_row(int32_t *rows, float *w, int j, int32_t row,
                                                        float weight)
{
    int i = j;
    while (i > 0 && rows[i - 1] > row) {
        rows[i] = rows[i - 1];
        w[i] = w[i - 1];
        i--;
    }
    rows[i] = row;
    w[i] = weight;
}
int kern_experts_routed_host(kern_backend *b, const kern_expert_table *t, const kern_moe_plan *plan,
                             const float *x, float *out, float *g, float *u);
static inline void kern_moe_align(kern_backend *b, const int32_t *ids, const float *weights,
                                  int64_t n_tokens, int k, int32_t n_expert,
                                  const kern_moe_plan *plan)
{
    b->ops->moe_align(b, ids, weights, n_tokens, k, n_expert, plan);
}
static inline void kern_experts_routed(kern_backend *b, const kern_expert_table *t,
                                       const kern_moe_plan *plan, int64_t n_tokens, int k,
                                       const float *x, float *out, float *g, float *u)
{
    b->ops->experts_routed(b, t, plan, n_tokens, k, x, out, g, u);
}
static inline void kern_moe_combine(kern_backend *b, const float *src, const int32_t *rows,
                                    const float *weights, float *out, int64_t n_tokens, int k,
                                    int64_t dim)
{
    b->ops->moe_combine(b, src, rows, weights, out, n_tokens, k, dim);
}
static inline void kern_gate_add(kern_backend *b, const float *h, const float *gate, const float *x,
                                 float *out, int64_t n_tokens, int64_t dim)
{
    b->ops->gate_add(b, h, gate, x, out, n_tokens, dim);
}

/* ---- scalar conversions shared by every backend and the tests ---------------------------- */

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
