/*
 * The paged KV cache on the device: kv_store and attention (flash-decoding).
 *
 * Attention is an online softmax per (token, head), split along the token's KV positions so
 * that one decoding token with thousands of positions still spreads over the whole GPU: the
 * first kernel computes, per split, the running max m, the sum l of exp(score - m) and the
 * unnormalised sum of exp(score - m) * V; the second combines the splits.  A split is one
 * block of four warps; warp w takes the 32-position tiles w, w + 4, ... of the split and the
 * block merges the warps in order.
 *
 * The split of a token's positions is a function of its own position count only (never of
 * the batch or of how many blocks the grid has), every merge runs in a fixed order, and a
 * token with a single split writes acc / l directly, which is what the combine would
 * compute.  So a token's output has the same bits alone or in any batch (kernels.h).  The
 * grid's second dimension only says how many blocks share a token's splits.
 *
 * A sliding window moves the first position a token sees (the splits cover only the window);
 * a sink logit (gpt-oss) joins the softmax's denominator when a head's output is normalised;
 * with v_is_k (deepseek2's latent cache) a layer has one plane and the values are read from
 * the key rows.
 *
 * Inside a warp each lane owns head dims lane, lane + 32, ... (head_dim up to 576).  A tile's
 * 32 scores are reduced with a transposing butterfly: 31 shuffles leave lane j holding the
 * score of position j, instead of 32 separate reductions.
 *
 * The split kernel's partials live in backend scratch; tokens are processed in groups small
 * enough that the scratch for the worst case (every split used) stays under PARTIAL_CAP.
 * Prefill uses the same kernels: every query token is independent.
 */
#include "kernels/cuda/cuda_internal.h"

#include <cuda_fp16.h>
#include <errno.h>
#include <math.h>

namespace
{

enum {
    ATTN_WARPS = 4,
    ATTN_THREADS = 32 * ATTN_WARPS,
    MAX_HEAD_DIM = 576, /* deepseek2's latent and rotary key: 512 + 64 */
    MAX_SPLITS = 32,    /* per token */
    SPLIT_MIN = 256,    /* positions below which a token is not split further */
};
const size_t PARTIAL_CAP = (size_t)128 << 20; /* bytes of split partials per launch */

struct kv_view {
    void *const *table;
    int32_t n_seq, max_blocks, block_tokens, kv_dim;
    int64_t layer_offset; /* elements from a block's start to this layer's K plane */
    int64_t v_offset;     /* elements from a K row to its V row: one plane on, or 0 (v_is_k) */
};

/* The positions of a token: false when (seq, pos) does not name a cache slot. */
__device__ __forceinline__ bool token_kv(const kv_view &kv, const int32_t *seq, const int32_t *pos,
                                         int64_t t, int32_t *s, int32_t *n_kv)
{
    *s = seq[t];
    const int32_t p = pos[t];
    if (*s < 0 || *s >= kv.n_seq || p < 0 || (int64_t)p >= (int64_t)kv.max_blocks * kv.block_tokens)
        return false;
    *n_kv = p + 1;
    return true;
}

/* The first position a token with n_kv positions sees: all of them, or its sliding window's. */
__device__ __forceinline__ int32_t window_start(int32_t n_kv, int32_t window)
{
    return window > 0 && n_kv > window ? n_kv - window : 0;
}

/* The token's splits of its n_kv (visible) positions: chunk positions each (a multiple of 32,
 * so tiles never straddle two splits), a function of n_kv alone. */
__host__ __device__ __forceinline__ int split_count(int32_t n_kv, int32_t *chunk)
{
    int32_t n = (n_kv + SPLIT_MIN - 1) / SPLIT_MIN;
    if (n > MAX_SPLITS) n = MAX_SPLITS;
    if (n < 1) n = 1;
    int32_t c = (n_kv + n - 1) / n;
    c = (c + 31) & ~31;
    *chunk = c;
    return (n_kv + c - 1) / c;
}

template <typename T> __device__ __forceinline__ float to_float(T v);
template <> __device__ __forceinline__ float to_float<float>(float v)
{
    return v;
}
template <> __device__ __forceinline__ float to_float<__half>(__half v)
{
    return __half2float(v);
}

template <typename T> __device__ __forceinline__ T from_float(float v);
template <> __device__ __forceinline__ float from_float<float>(float v)
{
    return v;
}
template <> __device__ __forceinline__ __half from_float<__half>(float v)
{
    return __float2half_rn(v); /* round to nearest even, as kern_f32_to_f16 */
}

/* ---- kv_store ------------------------------------------------------------------------- */

template <typename T>
__global__ void kv_store_kernel(kv_view kv, const float *k, const float *v, const int32_t *seq,
                                const int32_t *pos, int64_t n_tokens, unsigned *fault)
{
    const int64_t n = n_tokens * kv.kv_dim;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x) {
        const int64_t t = i / kv.kv_dim, d = i % kv.kv_dim;
        int32_t s, n_kv;
        if (!token_kv(kv, seq, pos, t, &s, &n_kv)) {
            if (d == 0) cuda__raise(fault, CUDA__FAULT_KV_POS);
            continue;
        }
        const int32_t p = n_kv - 1;
        T *block = (T *)kv.table[(int64_t)s * kv.max_blocks + p / kv.block_tokens];
        if (!block) {
            if (d == 0) cuda__raise(fault, CUDA__FAULT_KV_BLOCK);
            continue;
        }
        T *krow = block + kv.layer_offset + (int64_t)(p % kv.block_tokens) * kv.kv_dim;
        krow[d] = from_float<T>(k[i]);
        if (kv.v_offset) krow[kv.v_offset + d] = from_float<T>(v[i]); /* the V plane */
    }
}

/* ---- attention -------------------------------------------------------------------------- */

struct attn_args {
    kv_view kv;
    const float *q;
    const int32_t *seq, *pos;
    float *out;
    float2 *part_ml;  /* [token in group][head][MAX_SPLITS] (m, l) */
    float *part_acc;  /* [token in group][head][MAX_SPLITS][head_dim] */
    int64_t tok0;     /* first token of this group */
    int64_t n_tokens; /* in this group */
    int n_head, group, head_dim;
    float scale;
    int32_t window;     /* > 0: a sliding window of that many positions */
    const float *sinks; /* [n_head] extra logits whose share is dropped, or NULL */
    unsigned *fault;
};

/* out = acc / l, or with head h's sink logit in the softmax: its exp joins the denominator
 * (at the common max) and its value, none, leaves the numerator alone. */
__device__ __forceinline__ float normalise(const attn_args &a, int h, float acc, float m, float l)
{
    if (a.sinks) {
        const float sink = a.sinks[h], top = fmaxf(m, sink);
        const float keep = m == -INFINITY ? 0.0f : expf(m - top);
        acc = __fmul_rn(acc, keep);
        l = __fmaf_rn(l, keep, expf(sink - top));
    }
    return l > 0.0f ? __fdiv_rn(acc, l) : 0.0f;
}

/* The running state of one warp's (or block's) online softmax. */
template <int NI> struct softmax_state {
    float m, l, acc[NI];
};

/* One step of the transposing butterfly: afterwards each lane keeps H partial sums, for the
 * positions whose bits at H and above match its own lane's; after the step of width 1, v[0]
 * is the full sum for position `lane`. */
template <int H> __device__ __forceinline__ void transpose_step(float (&v)[32], int lane)
{
    const bool upper = lane & H;
#pragma unroll
    for (int i = 0; i < H; i++) {
        const float send = upper ? v[i] : v[i + H];
        const float keep = upper ? v[i + H] : v[i];
        v[i] = __fadd_rn(keep, __shfl_xor_sync(CUDA__FULL_MASK, send, H));
    }
}

template <typename T, int NI>
__device__ void warp_split(const attn_args &a, int32_t s, int kvh, int32_t p_begin, int32_t p_end,
                           const float (&qv)[NI], softmax_state<NI> &st)
{
    const int lane = threadIdx.x & 31, warp = threadIdx.x / 32;
    const kv_view &kv = a.kv;
    for (int32_t p0 = p_begin + 32 * warp; p0 < p_end; p0 += 32 * ATTN_WARPS) {
        const int n_valid = min(32, p_end - p0);
        /* Lane j finds position p0 + j's K row; V is one plane (block_tokens rows) later. */
        const T *krow = nullptr;
        if (lane < n_valid) {
            const int32_t p = p0 + lane;
            const T *block = (const T *)kv.table[(int64_t)s * kv.max_blocks + p / kv.block_tokens];
            if (block)
                krow = block + kv.layer_offset + (int64_t)(p % kv.block_tokens) * kv.kv_dim +
                       (int64_t)kvh * a.head_dim;
            else
                cuda__raise(a.fault, CUDA__FAULT_KV_BLOCK);
        }
        float v[32];
#pragma unroll
        for (int j = 0; j < 32; j++) {
            const T *kj = (const T *)__shfl_sync(CUDA__FULL_MASK, (unsigned long long)krow, j);
            float d = 0.0f;
            if (kj) {
#pragma unroll
                for (int i = 0; i < NI; i++) {
                    const int e = lane + 32 * i;
                    if (e < a.head_dim) d = __fmaf_rn(qv[i], to_float<T>(kj[e]), d);
                }
            }
            v[j] = d;
        }
        transpose_step<16>(v, lane);
        transpose_step<8>(v, lane);
        transpose_step<4>(v, lane);
        transpose_step<2>(v, lane);
        transpose_step<1>(v, lane);
        const float score = krow ? __fmul_rn(v[0], a.scale) : -INFINITY;
        const float tile_max = cuda__warp_max(score);
        if (tile_max == -INFINITY) continue; /* every position of the tile was skipped */
        const float m_new = fmaxf(st.m, tile_max);
        const float corr = expf(st.m - m_new); /* 0 while st.m is still -inf */
        const float pr = krow ? expf(score - m_new) : 0.0f;
        st.l = __fmaf_rn(st.l, corr, cuda__warp_sum(pr));
        st.m = m_new;
#pragma unroll
        for (int i = 0; i < NI; i++)
            st.acc[i] = __fmul_rn(st.acc[i], corr);
        for (int j = 0; j < n_valid; j++) {
            const float pj = __shfl_sync(CUDA__FULL_MASK, pr, j);
            const T *kj = (const T *)__shfl_sync(CUDA__FULL_MASK, (unsigned long long)krow, j);
            if (!kj) continue;
            const T *vj = kj + kv.v_offset;
#pragma unroll
            for (int i = 0; i < NI; i++) {
                const int e = lane + 32 * i;
                if (e < a.head_dim) st.acc[i] = __fmaf_rn(pj, to_float<T>(vj[e]), st.acc[i]);
            }
        }
    }
}

/* Block (token, head) x split slot; each block walks its token's splits slot, slot + gridDim.y,
 * ... (how many blocks share the splits does not change any split's result). */
template <typename T, int NI>
__global__ void __launch_bounds__(ATTN_THREADS) attn_split_kernel(attn_args a)
{
    __shared__ float sh_ml[ATTN_WARPS][2];
    __shared__ float sh_acc[ATTN_WARPS][MAX_HEAD_DIM];
    const int lane = threadIdx.x & 31, warp = threadIdx.x / 32;
    const int64_t lt = blockIdx.x / a.n_head; /* token within the group */
    const int h = (int)(blockIdx.x % a.n_head);
    const int64_t t = a.tok0 + lt;
    const int hd = a.head_dim;
    float *out = a.out + (t * a.n_head + h) * hd;

    int32_t s, n_kv;
    if (!token_kv(a.kv, a.seq, a.pos, t, &s, &n_kv)) {
        if (blockIdx.y == 0) {
            for (int e = threadIdx.x; e < hd; e += ATTN_THREADS)
                out[e] = 0.0f;
            if (threadIdx.x == 0) cuda__raise(a.fault, CUDA__FAULT_KV_POS);
        }
        return;
    }
    const int32_t first = window_start(n_kv, a.window);
    int32_t chunk;
    const int n_split = split_count(n_kv - first, &chunk);
    const int kvh = h / a.group;

    float qv[NI];
    const float *q = a.q + (t * a.n_head + h) * hd;
#pragma unroll
    for (int i = 0; i < NI; i++)
        qv[i] = lane + 32 * i < hd ? q[lane + 32 * i] : 0.0f;

    for (int sp = blockIdx.y; sp < n_split; sp += gridDim.y) {
        softmax_state<NI> st;
        st.m = -INFINITY;
        st.l = 0.0f;
#pragma unroll
        for (int i = 0; i < NI; i++)
            st.acc[i] = 0.0f;
        const int32_t p_begin = first + sp * chunk, p_end = min(n_kv, p_begin + chunk);
        warp_split<T, NI>(a, s, kvh, p_begin, p_end, qv, st);

        if (lane == 0) {
            sh_ml[warp][0] = st.m;
            sh_ml[warp][1] = st.l;
        }
#pragma unroll
        for (int i = 0; i < NI; i++)
            if (lane + 32 * i < hd) sh_acc[warp][lane + 32 * i] = st.acc[i];
        __syncthreads();
        /* Merge the warps in order 0..3 against the block's max. */
        float m = -INFINITY;
        for (int w = 0; w < ATTN_WARPS; w++)
            m = fmaxf(m, sh_ml[w][0]);
        float wgt[ATTN_WARPS], l = 0.0f;
        for (int w = 0; w < ATTN_WARPS; w++) {
            wgt[w] = sh_ml[w][0] == -INFINITY ? 0.0f : expf(sh_ml[w][0] - m);
            l = __fmaf_rn(wgt[w], sh_ml[w][1], l);
        }
        const size_t slot = ((size_t)lt * a.n_head + h) * MAX_SPLITS + sp;
        for (int e = threadIdx.x; e < hd; e += ATTN_THREADS) {
            float acc = 0.0f;
            for (int w = 0; w < ATTN_WARPS; w++)
                acc = __fmaf_rn(wgt[w], sh_acc[w][e], acc);
            if (n_split == 1)
                out[e] = normalise(a, h, acc, m, l);
            else
                a.part_acc[slot * hd + e] = acc;
        }
        if (n_split > 1 && threadIdx.x == 0) a.part_ml[slot] = make_float2(m, l);
        __syncthreads(); /* the shared arrays are reused by the next split */
    }
}

/* Combines a token's splits in split order; tokens with one split are already written. */
__global__ void attn_combine_kernel(attn_args a)
{
    const int64_t lt = blockIdx.x / a.n_head;
    const int h = (int)(blockIdx.x % a.n_head);
    const int64_t t = a.tok0 + lt;
    int32_t s, n_kv, chunk;
    if (!token_kv(a.kv, a.seq, a.pos, t, &s, &n_kv)) return;
    const int n_split = split_count(n_kv - window_start(n_kv, a.window), &chunk);
    if (n_split == 1) return;
    const size_t slot0 = ((size_t)lt * a.n_head + h) * MAX_SPLITS;
    float m = -INFINITY;
    for (int sp = 0; sp < n_split; sp++)
        m = fmaxf(m, a.part_ml[slot0 + sp].x);
    float l = 0.0f;
    for (int sp = 0; sp < n_split; sp++) {
        const float2 ml = a.part_ml[slot0 + sp];
        const float wgt = ml.x == -INFINITY ? 0.0f : expf(ml.x - m);
        l = __fmaf_rn(wgt, ml.y, l);
    }
    float *out = a.out + (t * a.n_head + h) * a.head_dim;
    for (int e = threadIdx.x; e < a.head_dim; e += blockDim.x) {
        float acc = 0.0f;
        for (int sp = 0; sp < n_split; sp++) {
            const float2 ml = a.part_ml[slot0 + sp];
            const float wgt = ml.x == -INFINITY ? 0.0f : expf(ml.x - m);
            acc = __fmaf_rn(wgt, a.part_acc[(slot0 + sp) * a.head_dim + e], acc);
        }
        out[e] = normalise(a, h, acc, m, l);
    }
}

template <typename T, int NI>
void launch_split(const attn_args &a, unsigned slots, cudaStream_t stream)
{
    dim3 grid((unsigned)(a.n_tokens * a.n_head), slots);
    attn_split_kernel<T, NI><<<grid, ATTN_THREADS, 0, stream>>>(a);
}

template <typename T>
void launch_split_dims(const attn_args &a, unsigned slots, cudaStream_t stream)
{
    switch ((a.head_dim + 31) / 32) {
    case 1:
        launch_split<T, 1>(a, slots, stream);
        break;
    case 2:
        launch_split<T, 2>(a, slots, stream);
        break;
    case 3:
        launch_split<T, 3>(a, slots, stream);
        break;
    case 4:
        launch_split<T, 4>(a, slots, stream);
        break;
    case 5:
        launch_split<T, 5>(a, slots, stream);
        break;
    case 6:
        launch_split<T, 6>(a, slots, stream);
        break;
    case 7:
        launch_split<T, 7>(a, slots, stream);
        break;
    case 8:
        launch_split<T, 8>(a, slots, stream);
        break;
    default: /* deepseek2's 576-wide latent rows, and anything between */
        if (a.head_dim <= 384)
            launch_split<T, 12>(a, slots, stream);
        else
            launch_split<T, 18>(a, slots, stream);
        break;
    }
}

bool layout_ok(cuda_backend *cb, const kern_kv_layout *kv, int layer, const char *op)
{
    if (!kv || !kv->table || kv->n_seq <= 0 || kv->max_blocks <= 0 || kv->block_tokens <= 0 ||
        kv->kv_dim <= 0 || layer < 0 || layer >= kv->n_layer ||
        (kv->type != KERN_KV_F16 && kv->type != KERN_KV_F32)) {
        cuda__fail(cb, -EINVAL, "cuda %s: bad KV layout or layer %d", op, layer);
        return false;
    }
    if (kv->head_major) { /* the CPU's layout; this backend keeps rows position-major */
        cuda__fail(cb, -EINVAL, "cuda %s: a head-major KV layout", op);
        return false;
    }
    return true;
}

kv_view make_view(const kern_kv_layout *kv, int layer)
{
    kv_view v;
    v.table = kv->table;
    v.n_seq = kv->n_seq;
    v.max_blocks = kv->max_blocks;
    v.block_tokens = kv->block_tokens;
    v.kv_dim = kv->kv_dim;
    const int64_t plane = (int64_t)kv->block_tokens * kv->kv_dim;
    v.layer_offset = (int64_t)layer * (kv->v_is_k ? 1 : 2) * plane;
    v.v_offset = kv->v_is_k ? 0 : plane;
    return v;
}

} // namespace

void cuda__kv_store(kern_backend *b, const kern_kv_layout *kv, int layer, const float *k,
                    const float *v, const int32_t *seq, const int32_t *pos, int64_t n_tokens)
{
    cuda_backend *cb = cuda__of(b);
    if (n_tokens <= 0) return;
    if (!cuda__enter(cb, "kv_store") || !layout_ok(cb, kv, layer, "kv_store")) return;
    const kv_view view = make_view(kv, layer);
    const unsigned grid = cuda__grid(n_tokens * kv->kv_dim, 256);
    if (kv->type == KERN_KV_F16)
        kv_store_kernel<__half>
            <<<grid, 256, 0, cuda__compute(cb)>>>(view, k, v, seq, pos, n_tokens, cb->fault_device);
    else
        kv_store_kernel<float>
            <<<grid, 256, 0, cuda__compute(cb)>>>(view, k, v, seq, pos, n_tokens, cb->fault_device);
    cuda__launched(cb, "kv_store");
}

void cuda__attention(kern_backend *b, const kern_kv_layout *kv, int layer, const float *q,
                     const int32_t *seq, const int32_t *pos, float *out, int64_t n_tokens,
                     int n_head, int n_head_kv, int head_dim, float scale, int32_t window,
                     const float *sinks)
{
    cuda_backend *cb = cuda__of(b);
    if (n_tokens <= 0) return;
    if (!cuda__enter(cb, "attention") || !layout_ok(cb, kv, layer, "attention")) return;
    if (n_head <= 0 || n_head_kv <= 0 || n_head % n_head_kv != 0 || head_dim <= 0 ||
        head_dim > MAX_HEAD_DIM || (int64_t)n_head_kv * head_dim != kv->kv_dim) {
        cuda__fail(cb, -EINVAL,
                   "cuda attention: %d heads, %d KV heads of %d dims do not fit (KV dim %d, "
                   "head_dim at most %d)",
                   n_head, n_head_kv, head_dim, kv->kv_dim, MAX_HEAD_DIM);
        return;
    }
    cudaStream_t stream = cuda__compute(cb);
    const size_t per_token =
        (size_t)n_head * MAX_SPLITS * (sizeof(float2) + head_dim * sizeof(float));
    int64_t group = (int64_t)(PARTIAL_CAP / per_token);
    if (group < 1) group = 1;
    if (group > n_tokens) group = n_tokens;
    /* grid.x holds (token, head) pairs */
    if (group * n_head > 0x7fffffff) group = 0x7fffffff / n_head;
    uint8_t *scratch =
        (uint8_t *)cuda__scratch_get(cb, &cb->partial, per_token * group, "attention");
    if (!scratch) return;

    attn_args a;
    a.kv = make_view(kv, layer);
    a.q = q;
    a.seq = seq;
    a.pos = pos;
    a.out = out;
    a.part_ml = (float2 *)scratch;
    a.part_acc = (float *)(scratch + (size_t)group * n_head * MAX_SPLITS * sizeof(float2));
    a.n_head = n_head;
    a.group = n_head / n_head_kv;
    a.head_dim = head_dim;
    a.scale = scale;
    a.window = window;
    a.sinks = sinks;
    a.fault = cb->fault_device;
    for (int64_t t0 = 0; t0 < n_tokens; t0 += group) {
        a.tok0 = t0;
        a.n_tokens = n_tokens - t0 < group ? n_tokens - t0 : group;
        /* Enough blocks to fill the device a few times over; more slots than a token has
         * splits only cost an early exit. */
        const int64_t pairs = a.n_tokens * n_head;
        int64_t slots = ((int64_t)cb->sm_count * 8 + pairs - 1) / pairs;
        slots = slots < 1 ? 1 : slots > (int64_t)MAX_SPLITS ? (int64_t)MAX_SPLITS : slots;
        if (kv->type == KERN_KV_F16)
            launch_split_dims<__half>(a, (unsigned)slots, stream);
        else
            launch_split_dims<float>(a, (unsigned)slots, stream);
        if (!cuda__launched(cb, "attention (splits)")) return;
        attn_combine_kernel<<<(unsigned)pairs, 128, 0, stream>>>(a);
        if (!cuda__launched(cb, "attention (combine)")) return;
    }
}
