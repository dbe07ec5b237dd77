/*
 * Shared between the backends' files (the `kern__` level of visibility): the sticky error every
 * backend keeps between syncs, and how the CPU code finds the CPU backend a sim backend runs.
 */
#ifndef MOE_KERNELS_BACKEND_INTERNAL_H
#define MOE_KERNELS_BACKEND_INTERNAL_H

#include "kernels/kernels.h"

#include <stddef.h>

/* The first error since the last sync, with its message; later ones are dropped because they
 * usually follow from the first. */
typedef struct kern__error {
    int code;
    char msg[256];
} kern__error;

__attribute__((format(printf, 3, 4))) void kern__error_set(kern__error *e, int code,
                                                           const char *fmt, ...);
/* Returns the kept error (0 if none) with its message in err, and clears it. */
int kern__error_take(kern__error *e, char *err, size_t err_size);

/* The CPU backend a sim backend computes with. */
kern_backend *kern__sim_cpu(const kern_backend *sim);

/* The operations a timing table wraps (kern_set_profiling), as X(name, kern_op, (parameters),
 * (arguments)): the CPU's and CUDA's timed tables are made from this one list, so that both
 * time the same calls under the same names. */
#define KERN__TIMED_OPS(X)                                                                         \
    X(matmul, KERN_OP_MATMUL,                                                                      \
      (kern_backend * b, const kern_weight *w, const float *x, float *y, int64_t n),               \
      (b, w, x, y, n))                                                                             \
    X(matmul_batched, KERN_OP_MATMUL,                                                              \
      (kern_backend * b, const kern_weight *w, int64_t nb, const float *x, float *y, int64_t n),   \
      (b, w, nb, x, y, n))                                                                         \
    X(rmsnorm, KERN_OP_RMSNORM,                                                                    \
      (kern_backend * b, const float *x, const float *w, float *o, int64_t n, int64_t r,           \
       int64_t s, float e),                                                                        \
      (b, x, w, o, n, r, s, e))                                                                    \
    X(rope, KERN_OP_ROPE,                                                                          \
      (kern_backend * b, float *x, int64_t n, int h, int hd, int nr, const int32_t *p, float fb,   \
       kern_rope_mode m, const kern_rope_yarn *y),                                                 \
      (b, x, n, h, hd, nr, p, fb, m, y))                                                           \
    X(kv_store, KERN_OP_KV_STORE,                                                                  \
      (kern_backend * b, const kern_kv_layout *kv, int l, const float *k, const float *v,          \
       const int32_t *s, const int32_t *p, int64_t n),                                             \
      (b, kv, l, k, v, s, p, n))                                                                   \
    X(attention, KERN_OP_ATTENTION,                                                                \
      (kern_backend * b, const kern_kv_layout *kv, int l, const float *q, const int32_t *s,        \
       const int32_t *p, float *o, int64_t n, int h, int hkv, int hd, float sc, int32_t w,         \
       const float *sk),                                                                           \
      (b, kv, l, q, s, p, o, n, h, hkv, hd, sc, w, sk))                                            \
    X(silu_mul, KERN_OP_SILU_MUL,                                                                  \
      (kern_backend * b, const float *g, const float *u, float *o, int64_t n), (b, g, u, o, n))    \
    X(swiglu_oai, KERN_OP_SWIGLU_OAI,                                                              \
      (kern_backend * b, const float *g, const float *u, float *o, int64_t n), (b, g, u, o, n))    \
    X(add, KERN_OP_ADD, (kern_backend * b, float *y, const float *x, int64_t n), (b, y, x, n))     \
    X(add_bias, KERN_OP_ADD_BIAS,                                                                  \
      (kern_backend * b, float *x, const float *bi, int64_t r, int64_t d), (b, x, bi, r, d))       \
    X(get_rows, KERN_OP_GET_ROWS,                                                                  \
      (kern_backend * b, const kern_weight *w, const int32_t *ids, float *o, int64_t n),           \
      (b, w, ids, o, n))                                                                           \
    X(gather, KERN_OP_GATHER,                                                                      \
      (kern_backend * b, const float *s, const int32_t *r, float *d, int64_t n, int64_t dim),      \
      (b, s, r, d, n, dim))                                                                        \
    X(router, KERN_OP_ROUTER,                                                                      \
      (kern_backend * b, const float *l, int64_t n, const kern_router_opts *o, int32_t *ids,       \
       float *w),                                                                                  \
      (b, l, n, o, ids, w))                                                                        \
    X(experts, KERN_OP_EXPERTS,                                                                    \
      (kern_backend * b, const kern_ffn_expert *ex, int n, const float *x, float *o, float *g,     \
       float *u),                                                                                  \
      (b, ex, n, x, o, g, u))                                                                      \
    X(moe_combine, KERN_OP_MOE_COMBINE,                                                            \
      (kern_backend * b, const float *s, const int32_t *r, const float *w, float *o, int64_t n,    \
       int k, int64_t d),                                                                          \
      (b, s, r, w, o, n, k, d))                                                                    \
    X(gate_add, KERN_OP_GATE_ADD,                                                                  \
      (kern_backend * b, const float *h, const float *g, const float *x, float *o, int64_t n,      \
       int64_t d),                                                                                 \
      (b, h, g, x, o, n, d))                                                                       \
    X(moe_align, KERN_OP_MOE_ALIGN,                                                                \
      (kern_backend * b, const int32_t *ids, const float *w, int64_t n, int k, int32_t e,          \
       const kern_moe_plan *p),                                                                    \
      (b, ids, w, n, k, e, p))                                                                     \
    X(experts_routed, KERN_OP_EXPERTS_ROUTED,                                                      \
      (kern_backend * b, const kern_expert_table *t, const kern_moe_plan *p, int64_t n, int k,     \
       const float *x, float *o, float *g, float *u),                                              \
      (b, t, p, n, k, x, o, g, u))

#endif
