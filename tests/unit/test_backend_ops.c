/*
 * The cross-backend operation suite (after ggml's test-backend-ops): every operation of
 * kernels.h, every weight type and odd shapes, on every backend this machine has — the CPU at
 * each instruction-set level it supports, `sim`, and CUDA when a device is present — against
 * references written here in double precision.  One table of cases serves every backend.
 *
 * Inputs go to the device and results come back through the backend's own copies, so a
 * backend is tested as the forward pass uses it.  Bounds:
 *   - CPU and sim: the reference within float rounding (quantised matmuls: within the 8-bit
 *     activation rounding); sim bit-identical to the CPU backend at the same level; every
 *     operation batch-invariant bit for bit (a token alone equals the token in a batch).
 *   - CUDA: the reference within the bounds printed per case; batch invariance within the same
 *     bound (its kernels change with the batch size).
 * MOE_TEST_BACKENDS=cpu,sim,cuda (a comma list of kinds) restricts the backends.  The worst
 * error of each (operation, backend) is printed as a table at the end.
 */
#include "kernels/cpu/cpu.h"
#include "kernels/cpu/quant_blocks.h"
#include "kernels/cuda/cuda.h"
#include "kernels/kernels.h"
#include "kernels/sim/sim.h"
#include "tests/unit/test_util.h"

#include "moe_config.h"
#include <check.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- backends -------------------------------------------------------------------------------- */

typedef struct backend_entry {
    char name[32];
    kern_backend *b;
    kern_backend *exact_twin; /* sim: the CPU backend whose bits it must equal */
    bool approx;              /* cuda: bounds instead of bits */
} backend_entry;

enum { MAX_BACKENDS = 8 };
static backend_entry backends[MAX_BACKENDS];
static int n_backends;

static bool kind_wanted(const char *kind)
{
    const char *want = getenv("MOE_TEST_BACKENDS");
    if (!want || !*want) return true;
    size_t n = strlen(kind);
    for (const char *p = want; (p = strstr(p, kind)) != NULL; p += n)
        if ((p == want || p[-1] == ',') && (p[n] == 0 || p[n] == ',')) return true;
    return false;
}

static kern_backend *open_or_die(const kern_open_opts *o, kern_isa max_isa)
{
    char err[256];
    kern_backend *b = NULL;
    int rc;
    if (o->kind == KERN_BACKEND_CPU) {
        kern_cpu_opts c = {.n_threads = o->n_threads, .max_isa = max_isa};
        rc = kern_cpu_open(&b, &c, err, sizeof err);
    } else {
        rc = kern_open(&b, o, err, sizeof err);
    }
    if (rc) {
        fprintf(stderr, "cannot open the %s backend: %s\n", kern_backend_kind_name(o->kind), err);
        exit(EXIT_FAILURE);
    }
    return b;
}

static void open_backends(void)
{
    char err[256];
    kern_isa best = kern_cpu_isa();
    kern_backend *best_cpu = NULL;
    if (kind_wanted("cpu") || kind_wanted("sim")) {
        for (int level = 0; level <= (int)best; level++) {
            if (level == KERN_ISA_AVX512 && best == KERN_ISA_AVX512_VNNI)
                continue; /* same kernels */
            backend_entry *e = &backends[n_backends];
            kern_open_opts co = kern_open_opts_default();
            co.n_threads = 2;
            e->b = open_or_die(&co, (kern_isa)level);
            snprintf(e->name, sizeof e->name, "cpu-%s", kern_isa_name((kern_isa)level));
            best_cpu = e->b;
            if (kind_wanted("cpu")) n_backends++;
        }
    }
    if (kind_wanted("sim")) {
        backend_entry *e = &backends[n_backends++];
        kern_open_opts o = kern_open_opts_default();
        o.kind = KERN_BACKEND_SIM;
        o.n_threads = 2;
        o.sim_device_bytes = (uint64_t)4 << 30;
        e->b = open_or_die(&o, KERN_ISA_COUNT);
        snprintf(e->name, sizeof e->name, "sim");
        e->exact_twin = best_cpu;
    }
    char msg[256];
    if (kind_wanted("cuda")) {
        if (kern_cuda_probe(msg, sizeof msg) > 0) {
            backend_entry *e = &backends[n_backends];
            kern_open_opts o = kern_open_opts_default();
            o.kind = KERN_BACKEND_CUDA;
            if (kern_open(&e->b, &o, err, sizeof err) == 0) {
                snprintf(e->name, sizeof e->name, "cuda");
                e->approx = true;
                n_backends++;
            } else {
                printf("cuda: cannot open (%s)\n", err);
            }
        } else {
            printf("SKIP cuda: %s\n", msg);
        }
    }
    printf("backends:");
    for (int i = 0; i < n_backends; i++)
        printf(" %s", backends[i].name);
    printf("\n");
}

/* ---- worst errors, for the summary table --------------------------------------------------- */

enum { MAX_OPS = 18 };
static const char *op_names[MAX_OPS] = {"matmul",         "rmsnorm",          "rope",
                                        "attention",      "silu_mul",         "add",
                                        "add_bias",       "get_rows",         "gather",
                                        "router",         "moe_combine",      "gate_add",
                                        "experts",        "batch_invariance", "swiglu_oai",
                                        "matmul_batched", "moe_align",        "experts_routed"};
static double worst[MAX_OPS][MAX_BACKENDS];
static long checked[MAX_OPS][MAX_BACKENDS];

static int op_index(const char *op)
{
    for (int i = 0; i < MAX_OPS && op_names[i]; i++)
        if (!strcmp(op_names[i], op)) return i;
    ck_abort_msg("unknown op %s", op);
    return 0;
}

/* |got - want| <= tol * scale (scale: the magnitude the error is measured against). */
static void expect_close(int be, const char *op, const char *what, double got, double want,
                         double scale, double tol)
{
    int o = op_index(op);
    double err = fabs(got - want) / (scale > 0 ? scale : 1.0);
    if (isnan(got) != isnan(want) || err > worst[o][be]) worst[o][be] = isnan(got) ? INFINITY : err;
    checked[o][be]++;
    ck_assert_msg(!isnan(got) && err <= tol,
                  "%s %s %s: %.9g, reference %.9g (error %.3g of %.3g > %.3g)", backends[be].name,
                  op, what, got, want, err * scale, scale, tol);
}

/* ---- device memory helpers ------------------------------------------------------------------ */

static void *to_device(kern_backend *b, const void *host, size_t bytes)
{
    void *d = NULL;
    ck_assert_int_eq(kern_alloc(b, KERN_MEM_DEVICE, bytes ? bytes : 1, &d), 0);
    if (bytes)
        ck_assert_int_eq(kern_copy(b, KERN_STREAM_COMPUTE, d, host, bytes, KERN_COPY_TO_DEVICE), 0);
    return d;
}

static void *dev_zeros(kern_backend *b, size_t bytes)
{
    void *z = calloc(1, bytes ? bytes : 1);
    void *d = to_device(b, z, bytes);
    free(z);
    return d;
}

static void from_device(kern_backend *b, void *host, const void *dev, size_t bytes)
{
    char err[256];
    ck_assert_int_eq(kern_copy(b, KERN_STREAM_COMPUTE, host, dev, bytes, KERN_COPY_TO_HOST), 0);
    int rc = kern_sync(b, err, sizeof err);
    ck_assert_msg(rc == 0, "%s", err);
}

static void dev_free(kern_backend *b, void *d)
{
    kern_free(b, KERN_MEM_DEVICE, d);
}

static float *random_floats(int64_t n, float scale)
{
    float *x = malloc((size_t)(n > 0 ? n : 1) * sizeof *x);
    ck_assert_ptr_nonnull(x);
    for (int64_t i = 0; i < n; i++)
        x[i] = rng_uniform() * scale;
    return x;
}

/* ---- weights --------------------------------------------------------------------------------- */

static const uint32_t all_types[] = {KERN_T_F32,  KERN_T_F16,    KERN_T_BF16,   KERN_T_Q8_0,
                                     KERN_T_Q4_0, KERN_T_Q4_1,   KERN_T_Q5_0,   KERN_T_Q5_1,
                                     KERN_T_Q4_K, KERN_T_Q5_K,   KERN_T_Q6_K,   KERN_T_Q2_K,
                                     KERN_T_Q3_K, KERN_T_IQ4_NL, KERN_T_IQ4_XS, KERN_T_MXFP4};
enum { N_ALL_TYPES = sizeof all_types / sizeof all_types[0] };

/* n_rows x n_cols of `type` with random payload and sane scales; *ref gets the dequantised
 * values (the reference dequantisers are bit-exact with gguf-py, test_quant.c). */
static void *random_weight(uint32_t type, int64_t n_rows, int64_t n_cols, float **ref)
{
    const kern_type_traits *t = kern_type_info(type);
    size_t bytes = kern_row_bytes(type, n_cols) * (size_t)n_rows;
    int64_t n = n_rows * n_cols;
    if (t->block_elems > 1) {
        uint8_t *q = test_random_blocks(type, n / (int64_t)t->block_elems);
        *ref = malloc((size_t)n * sizeof **ref);
        t->to_f32(q, *ref, n);
        return q;
    }
    uint8_t *p = malloc(bytes);
    ck_assert_ptr_nonnull(p);
    for (int64_t i = 0; i < n; i++) {
        float v = rng_uniform();
        if (type == KERN_T_F32)
            memcpy(p + 4 * i, &v, 4);
        else {
            uint16_t h = type == KERN_T_F16 ? kern_f32_to_f16(v) : kern_f32_to_bf16(v);
            memcpy(p + 2 * i, &h, 2);
        }
    }
    *ref = malloc((size_t)n * sizeof **ref);
    t->to_f32(p, *ref, n);
    return p;
}

/* ---- matmul -----------------------------------------------------------------------------------
 */

/* Activations are rounded to 8 bits per block for the quantised types (CPU: Q8_0/Q8_1/Q8_K;
 * CUDA: its own 8-bit blocks), which bounds the error by about half a step of the largest
 * activation per block times the weights' magnitude; 1e-2 of sum |w x| holds with margin. */
static double matmul_tol(uint32_t type, bool approx)
{
    if (kern_type_info(type)->block_elems > 1) return 1e-2;
    if (!approx) return 2e-6;
    return type == KERN_T_F32 ? 1e-5 : 2e-3; /* cuda may round activations to f16 for GEMMs */
}

static void matmul_case(int be, uint32_t type, int64_t rows, int64_t cols, int64_t n_tok)
{
    kern_backend *b = backends[be].b;
    float *wf = NULL;
    void *w = random_weight(type, rows, cols, &wf);
    float *x = random_floats(n_tok * cols, 1.0f);
    size_t wbytes = kern_row_bytes(type, cols) * (size_t)rows;
    kern_weight kw = {.data = to_device(b, w, wbytes),
                      .type = type,
                      .n_rows = rows,
                      .n_cols = cols,
                      .row_bytes = kern_row_bytes(type, cols)};
    float *dx = to_device(b, x, (size_t)(n_tok * cols) * sizeof *x);
    float *dy = dev_zeros(b, (size_t)(n_tok * rows) * sizeof(float));
    float *y = malloc((size_t)(n_tok * rows) * sizeof *y),
          *one = malloc((size_t)rows * sizeof *one);
    kern_matmul(b, &kw, dx, dy, n_tok);
    from_device(b, y, dy, (size_t)(n_tok * rows) * sizeof *y);
    double tol = matmul_tol(type, backends[be].approx);
    char what[160];
    for (int64_t t = 0; t < n_tok; t++) {
        for (int64_t r = 0; r < rows; r++) {
            double ref = 0.0, mag = 0.0;
            for (int64_t c = 0; c < cols; c++) {
                ref += (double)wf[r * cols + c] * x[t * cols + c];
                mag += fabs((double)wf[r * cols + c] * x[t * cols + c]);
            }
            snprintf(what, sizeof what, "%s %lldx%lld n=%lld t=%lld r=%lld",
                     kern_type_info(type)->name, (long long)rows, (long long)cols, (long long)n_tok,
                     (long long)t, (long long)r);
            expect_close(be, "matmul", what, y[t * rows + r], ref, mag, tol);
        }
    }
    /* batch invariance: each token alone */
    if (n_tok > 1) {
        for (int64_t t = 0; t<n_tok; t += n_tok> 4 ? 3 : 1) {
            kern_matmul(b, &kw, dx + t * cols, dy, 1);
            from_device(b, one, dy, (size_t)rows * sizeof *one);
            for (int64_t r = 0; r < rows; r++) {
                if (!backends[be].approx) {
                    ck_assert_msg(
                        memcmp(&one[r], &y[t * rows + r], 4) == 0,
                        "%s matmul %s: token %lld alone differs from inside a batch of %lld",
                        backends[be].name, kern_type_info(type)->name, (long long)t,
                        (long long)n_tok);
                    checked[op_index("batch_invariance")][be]++;
                } else {
                    double mag = 0.0;
                    for (int64_t c = 0; c < cols; c++)
                        mag += fabs((double)wf[r * cols + c] * x[t * cols + c]);
                    expect_close(be, "batch_invariance", "matmul", one[r], y[t * rows + r], mag,
                                 tol);
                }
            }
        }
    }
    /* sim must give the CPU's bits */
    if (backends[be].exact_twin) {
        kern_backend *c = backends[be].exact_twin;
        kern_weight hw = kw;
        hw.data = w;
        float *yc = malloc((size_t)(n_tok * rows) * sizeof *yc);
        kern_matmul(c, &hw, x, yc, n_tok);
        ck_assert_msg(memcmp(yc, y, (size_t)(n_tok * rows) * sizeof *y) == 0,
                      "sim matmul %s differs from the CPU backend", kern_type_info(type)->name);
        free(yc);
    }
    dev_free(b, (void *)kw.data);
    dev_free(b, dx);
    dev_free(b, dy);
    free(w);
    free(wf);
    free(x);
    free(y);
    free(one);
}

START_TEST(matmul_every_type)
{
    uint32_t type = all_types[_i];
    int64_t blk = kern_type_info(type)->block_elems;
    /* rows: 1, odd, a multiple of warps and not; columns: one block, several, a remainder of
     * the SIMD and CUDA strides; tokens: decode (1), small batches (2, 8), just past the
     * small-batch paths (9) and a prefill-like 33 */
    static const int64_t shapes[][2] = {{1, 1}, {7, 2}, {33, 3}, {64, 4}, {130, 8}};
    static const int64_t toks[] = {1, 2, 8, 9, 33};
    for (int be = 0; be < n_backends; be++)
        for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
            int64_t cols = shapes[s][1] * (blk > 1 ? blk : 32) + (blk == 1 && s == 2 ? 1 : 0);
            for (size_t k = 0; k < sizeof toks / sizeof toks[0]; k++)
                matmul_case(be, type, shapes[s][0], cols, toks[k]);
        }
    if (blk == 1) /* float rows of any length */
        for (int be = 0; be < n_backends; be++)
            matmul_case(be, type, 5, 1000, 3);
    /* a prefill long enough for the CPU's token tiles (half an L2 of activations: 112 tokens of
     * 4096 as Q8_K, 32 as f32) to end inside the batch */
    for (int be = 0; be < n_backends; be++)
        matmul_case(be, type, 20, 4096, 150);
}
END_TEST

/* ---- rmsnorm, rope, element-wise ---------------------------------------------------------------
 */

/* matmul_batched: n_batch row blocks of one weight, each over its own activations, must be
 * the reference's products and the same bits as each block's matmul alone (deepseek2's heads). */
static void matmul_batched_case(int be, uint32_t type, int64_t n_batch, int64_t rows_per,
                                int64_t cols, int64_t n_tok)
{
    kern_backend *b = backends[be].b;
    int64_t rows = n_batch * rows_per;
    float *wf = NULL;
    void *w = random_weight(type, rows, cols, &wf);
    float *x = random_floats(n_batch * n_tok * cols, 1.0f);
    size_t rb = kern_row_bytes(type, cols), ny = (size_t)(n_tok * rows);
    kern_weight kw = {.data = to_device(b, w, rb * (size_t)rows),
                      .type = type,
                      .n_rows = rows,
                      .n_cols = cols,
                      .row_bytes = rb};
    float *dx = to_device(b, x, (size_t)(n_batch * n_tok * cols) * sizeof *x);
    float *dy = dev_zeros(b, ny * sizeof(float)), *dy1 = dev_zeros(b, ny * sizeof(float));
    float *y = malloc(ny * sizeof *y), *y1 = malloc(ny * sizeof *y1);
    kern_matmul_batched(b, &kw, n_batch, dx, dy, n_tok);
    kern_matmul_batched_one_by_one(b, &kw, n_batch, dx, dy1, n_tok);
    from_device(b, y, dy, ny * sizeof *y);
    from_device(b, y1, dy1, ny * sizeof *y1);
    double tol = matmul_tol(type, backends[be].approx);
    char what[160];
    for (int64_t i = 0; i < n_batch; i++)
        for (int64_t t = 0; t < n_tok; t++)
            for (int64_t r = 0; r < rows_per; r++) {
                const float *wr = wf + (i * rows_per + r) * cols, *xt = x + (i * n_tok + t) * cols;
                double ref = 0.0, mag = 0.0;
                for (int64_t c = 0; c < cols; c++) {
                    ref += (double)wr[c] * xt[c];
                    mag += fabs((double)wr[c] * xt[c]);
                }
                size_t at = (size_t)((i * n_tok + t) * rows_per + r);
                snprintf(what, sizeof what,
                         "%s %lld blocks of %lldx%lld n=%lld: block %lld t=%lld r=%lld",
                         kern_type_info(type)->name, (long long)n_batch, (long long)rows_per,
                         (long long)cols, (long long)n_tok, (long long)i, (long long)t,
                         (long long)r);
                expect_close(be, "matmul_batched", what, y[at], ref, mag, tol);
                ck_assert_msg(memcmp(&y[at], &y1[at], sizeof *y) == 0,
                              "%s matmul_batched: %s is %.9g, its block's own matmul %.9g",
                              backends[be].name, what, y[at], y1[at]);
            }
    dev_free(b, (void *)kw.data);
    dev_free(b, dx);
    dev_free(b, dy);
    dev_free(b, dy1);
    free(w);
    free(wf);
    free(x);
    free(y);
    free(y1);
}

START_TEST(matmul_batched_blocks)
{
    uint32_t type = all_types[_i];
    int64_t blk = kern_type_info(type)->block_elems;
    int64_t cols = blk > 1 ? 2 * blk : 48;
    for (int be = 0; be < n_backends; be++) {
        matmul_batched_case(be, type, 4, 3, cols, 1);
        matmul_batched_case(be, type, 7, 16, cols, 3);
        matmul_batched_case(be, type, 2, 33, cols, 9); /* the batch tiles of 8 tokens */
        matmul_batched_case(be, type, 1, 5, cols, 2);
    }
}
END_TEST

START_TEST(rmsnorm_shapes)
{
    static const int64_t ns[] = {1, 7, 128, 300, 4099};
    for (int be = 0; be < n_backends; be++) {
        kern_backend *b = backends[be].b;
        for (size_t k = 0; k < sizeof ns / sizeof ns[0]; k++) {
            int64_t n = ns[k], rows = k == 4 ? 3 : 37, stride = n + (k % 2 ? 5 : 0);
            int64_t total = (rows - 1) * stride + n;
            float *x = random_floats(total, 3.0f), *w = random_floats(n, 1.0f);
            float *out = malloc((size_t)total * sizeof *out);
            float *dx = to_device(b, x, (size_t)total * sizeof *x),
                  *dw = to_device(b, w, (size_t)n * sizeof *w);
            float *dout = dev_zeros(b, (size_t)total * sizeof *out);
            for (int in_place = 0; in_place < 2; in_place++) {
                const float *weight = in_place ? NULL : dw;
                float *dst = in_place ? dx : dout;
                kern_rmsnorm(b, dx, weight, dst, n, rows, stride, 1e-5f);
                from_device(b, out, dst, (size_t)total * sizeof *out);
                for (int64_t r = 0; r < rows; r++) {
                    double ss = 0.0;
                    for (int64_t i = 0; i < n; i++)
                        ss += (double)x[r * stride + i] * x[r * stride + i];
                    double scale = 1.0 / sqrt(ss / (double)n + 1e-5);
                    for (int64_t i = 0; i < n; i++) {
                        double ref = x[r * stride + i] * scale * (in_place ? 1.0 : w[i]);
                        expect_close(be, "rmsnorm", in_place ? "in place" : "weighted",
                                     out[r * stride + i], ref, 1.0 + fabs(ref),
                                     backends[be].approx ? 2e-5 : 2e-6);
                    }
                }
            }
            dev_free(b, dx);
            dev_free(b, dw);
            dev_free(b, dout);
            free(x);
            free(w);
            free(out);
        }
    }
}
END_TEST

START_TEST(rope_modes_and_positions)
{
    static const struct {
        int heads, hd, n_rot;
    } shapes[] = {{3, 16, 12}, {8, 64, 64}, {4, 128, 128}, {2, 80, 32}};
    int32_t pos[6] = {0, 1, 7, 100, 4095, 131071};
    int n_tok = 6;
    for (int be = 0; be < n_backends; be++) {
        kern_backend *b = backends[be].b;
        int32_t *dpos = to_device(b, pos, sizeof pos);
        for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
            int heads = shapes[s].heads, hd = shapes[s].hd, n_rot = shapes[s].n_rot;
            for (int mode = 0; mode < 2; mode++) {
                kern_rope_mode m = mode ? KERN_ROPE_NEOX : KERN_ROPE_NORM;
                float base = mode ? 1000000.0f : 10000.0f;
                int64_t n = (int64_t)n_tok * heads * hd;
                float *x = random_floats(n, 1.0f), *r = malloc((size_t)n * sizeof *r);
                float *dx = to_device(b, x, (size_t)n * sizeof *x);
                kern_rope(b, dx, n_tok, heads, hd, n_rot, dpos, base, m, NULL);
                from_device(b, r, dx, (size_t)n * sizeof *r);
                for (int t = 0; t < n_tok; t++)
                    for (int h = 0; h < heads; h++) {
                        const float *o = x + (t * heads + h) * hd, *got = r + (t * heads + h) * hd;
                        for (int i = 0; i < n_rot / 2; i++) {
                            double th = pos[t] * pow(base, -2.0 * i / n_rot);
                            int i0 = m == KERN_ROPE_NEOX ? i : 2 * i;
                            int i1 = m == KERN_ROPE_NEOX ? i + n_rot / 2 : 2 * i + 1;
                            expect_close(be, "rope", "rotated", got[i0],
                                         o[i0] * cos(th) - o[i1] * sin(th), 1.0, 2e-5);
                            expect_close(be, "rope", "rotated", got[i1],
                                         o[i0] * sin(th) + o[i1] * cos(th), 1.0, 2e-5);
                        }
                        for (int i = n_rot; i < hd; i++)
                            expect_close(be, "rope", "tail", got[i], o[i], 1.0, 0.0);
                    }
                dev_free(b, dx);
                free(x);
                free(r);
            }
        }
        dev_free(b, dpos);
    }
}
END_TEST

/* YaRN, written out from transformers' _compute_yarn_parameters: each pair's frequency blends
 * base^(-2i/d) / factor and base^(-2i/d) by a linear ramp between the correction dimensions,
 * and cos and sin are scaled by the attention factor. */
static double ref_yarn_inv_freq(const kern_rope_yarn *y, double base, int dim, int i)
{
    double lo = dim * log(y->orig_ctx / (y->beta_fast * 2 * M_PI)) / (2 * log(base));
    double hi = dim * log(y->orig_ctx / (y->beta_slow * 2 * M_PI)) / (2 * log(base));
    if (y->truncate) {
        lo = floor(lo);
        hi = ceil(hi);
    }
    lo = fmax(lo, 0.0);
    hi = fmin(hi, dim - 1.0);
    if (lo == hi) hi += 0.001;
    double ramp = fmin(fmax((i - lo) / (hi - lo), 0.0), 1.0);
    double pos_freq = pow(base, 2.0 * i / dim);
    return 1.0 / (y->factor * pos_freq) * ramp + 1.0 / pos_freq * (1.0 - ramp);
}

START_TEST(rope_yarn)
{
    /* gpt-oss-20b's scaling, untruncated as its config says, and truncated as llama.cpp does */
    int32_t pos[5] = {0, 3, 100, 4095, 131071};
    int n_tok = 5, heads = 4, hd = 64;
    for (int be = 0; be < n_backends; be++) {
        kern_backend *b = backends[be].b;
        int32_t *dpos = to_device(b, pos, sizeof pos);
        for (int trunc = 0; trunc < 2; trunc++) {
            kern_rope_yarn y = {.factor = 32.0f,
                                .orig_ctx = 4096.0f,
                                .beta_fast = 32.0f,
                                .beta_slow = 1.0f,
                                .attn_factor = 0.1f * logf(32.0f) + 1.0f,
                                .truncate = trunc};
            for (int mode = 0; mode < 2; mode++) {
                kern_rope_mode m = mode ? KERN_ROPE_NEOX : KERN_ROPE_NORM;
                double base = 150000.0;
                int64_t n = (int64_t)n_tok * heads * hd;
                float *x = random_floats(n, 1.0f), *r = malloc((size_t)n * sizeof *r);
                float *dx = to_device(b, x, (size_t)n * sizeof *x);
                kern_rope(b, dx, n_tok, heads, hd, hd, dpos, (float)base, m, &y);
                from_device(b, r, dx, (size_t)n * sizeof *r);
                for (int t = 0; t < n_tok; t++)
                    for (int h = 0; h < heads; h++) {
                        const float *o = x + (t * heads + h) * hd, *got = r + (t * heads + h) * hd;
                        for (int i = 0; i < hd / 2; i++) {
                            double th = pos[t] * ref_yarn_inv_freq(&y, base, hd, i);
                            double c = cos(th) * y.attn_factor, sn = sin(th) * y.attn_factor;
                            int i0 = m == KERN_ROPE_NEOX ? i : 2 * i;
                            int i1 = m == KERN_ROPE_NEOX ? i + hd / 2 : 2 * i + 1;
                            expect_close(be, "rope", "yarn", got[i0], o[i0] * c - o[i1] * sn, 1.0,
                                         4e-5);
                            expect_close(be, "rope", "yarn", got[i1], o[i0] * sn + o[i1] * c, 1.0,
                                         4e-5);
                        }
                    }
                dev_free(b, dx);
                free(x);
                free(r);
            }
        }
        dev_free(b, dpos);
    }
}
END_TEST

START_TEST(elementwise_ops)
{
    static const int64_t ns[] = {1, 31, 1000, 100003};
    for (int be = 0; be < n_backends; be++) {
        kern_backend *b = backends[be].b;
        for (size_t k = 0; k < sizeof ns / sizeof ns[0]; k++) {
            int64_t n = ns[k];
            float *g = random_floats(n, 8.0f), *u = random_floats(n, 1.0f),
                  *o = malloc((size_t)n * sizeof *o);
            float *dg = to_device(b, g, (size_t)n * 4), *du = to_device(b, u, (size_t)n * 4);
            float *dout = dev_zeros(b, (size_t)n * 4);
            kern_silu_mul(b, dg, du, dout, n);
            from_device(b, o, dout, (size_t)n * 4);
            for (int64_t i = 0; i < n; i++) {
                double ref = g[i] / (1.0 + exp(-(double)g[i])) * u[i];
                expect_close(be, "silu_mul", "", o[i], ref, 1.0 + fabs(ref), 1e-6);
            }
            {
                /* gate past the clamp at 7 (the scale of 8), up on both sides of it */
                float *u8 = random_floats(n, 9.0f), *du8 = to_device(b, u8, (size_t)n * 4);
                kern_swiglu_oai(b, dg, du8, dout, n);
                from_device(b, o, dout, (size_t)n * 4);
                for (int64_t i = 0; i < n; i++) {
                    double gc = fmin(g[i], 7.0), uc = fmin(fmax(u8[i], -7.0), 7.0);
                    double ref = (uc + 1.0) * gc / (1.0 + exp(-1.702 * gc));
                    expect_close(be, "swiglu_oai", "", o[i], ref, 1.0 + fabs(ref), 1e-6);
                }
                dev_free(b, du8);
                free(u8);
            }
            kern_add(b, du, dg, n);
            from_device(b, o, du, (size_t)n * 4);
            for (int64_t i = 0; i < n; i++)
                expect_close(be, "add", "", o[i], (double)(u[i] + g[i]), 1.0, 0.0);
            /* add_bias: rows of an odd width */
            int64_t dim = k == 0 ? 1 : 37, rows = n / dim;
            float *bias = random_floats(dim, 2.0f);
            float *dbias = to_device(b, bias, (size_t)dim * 4);
            float *dx = to_device(b, g, (size_t)(rows * dim) * 4);
            kern_add_bias(b, dx, dbias, rows, dim);
            from_device(b, o, dx, (size_t)(rows * dim) * 4);
            for (int64_t r = 0; r < rows; r++)
                for (int64_t i = 0; i < dim; i++)
                    expect_close(be, "add_bias", "", o[r * dim + i],
                                 (double)(g[r * dim + i] + bias[i]), 1.0, 0.0);
            dev_free(b, dg);
            dev_free(b, du);
            dev_free(b, dout);
            dev_free(b, dbias);
            dev_free(b, dx);
            free(g);
            free(u);
            free(o);
            free(bias);
        }
    }
}
END_TEST

START_TEST(get_rows_and_gather)
{
    for (int be = 0; be < n_backends; be++) {
        kern_backend *b = backends[be].b;
        for (size_t ti = 0; ti < N_ALL_TYPES; ti++) {
            uint32_t type = all_types[ti];
            int64_t blk = kern_type_info(type)->block_elems, cols = blk > 1 ? 2 * blk : 40,
                    rows = 11;
            float *ref = NULL;
            void *w = random_weight(type, rows, cols, &ref);
            size_t wbytes = kern_row_bytes(type, cols) * (size_t)rows;
            kern_weight kw = {.data = to_device(b, w, wbytes),
                              .type = type,
                              .n_rows = rows,
                              .n_cols = cols,
                              .row_bytes = kern_row_bytes(type, cols)};
            int32_t ids[5] = {10, 0, 4, 4, 7};
            int32_t *dids = to_device(b, ids, sizeof ids);
            float *dout = dev_zeros(b, (size_t)(5 * cols) * 4),
                  *out = malloc((size_t)(5 * cols) * 4);
            kern_get_rows(b, &kw, dids, dout, 5);
            from_device(b, out, dout, (size_t)(5 * cols) * 4);
            for (int j = 0; j < 5; j++)
                for (int64_t c = 0; c < cols; c++)
                    expect_close(be, "get_rows", kern_type_info(type)->name, out[j * cols + c],
                                 ref[ids[j] * cols + c], 1.0 + fabs(ref[ids[j] * cols + c]),
                                 backends[be].approx ? 1e-6 : 0.0);
            dev_free(b, (void *)kw.data);
            dev_free(b, dids);
            dev_free(b, dout);
            free(w);
            free(ref);
            free(out);
        }
        /* gather: rows of floats in any order, repeats allowed */
        int64_t dim = 257, n_src = 9, n = 20;
        float *src = random_floats(n_src * dim, 4.0f), *out = malloc((size_t)(n * dim) * 4);
        int32_t rows[20];
        for (int i = 0; i < n; i++)
            rows[i] = (int32_t)((i * 7 + 3) % n_src);
        float *dsrc = to_device(b, src, (size_t)(n_src * dim) * 4),
              *ddst = dev_zeros(b, (size_t)(n * dim) * 4);
        int32_t *drows = to_device(b, rows, sizeof rows);
        kern_gather(b, dsrc, drows, ddst, n, dim);
        from_device(b, out, ddst, (size_t)(n * dim) * 4);
        for (int i = 0; i < n; i++)
            for (int64_t c = 0; c < dim; c++)
                expect_close(be, "gather", "", out[i * dim + c], src[rows[i] * dim + c], 1.0, 0.0);
        dev_free(b, dsrc);
        dev_free(b, ddst);
        dev_free(b, drows);
        free(src);
        free(out);
    }
}
END_TEST

/* ---- routing and the experts' combine ------------------------------------------------------- */

/* DeepSeek-V3 / GLM-4.5's choice (kern_router_opts): c = p + bias, only the experts of the
 * n_group_used groups with the largest sums of their two best c can be chosen. */
static void ref_choice(const double *p, const kern_router_opts *o, const float *bias, double *c)
{
    int E = o->n_expert, G = o->n_group > 1 ? o->n_group : 1, per = E / G;
    double score[KERN_ROUTER_MAX_GROUPS];
    bool kept[KERN_ROUTER_MAX_GROUPS] = {false};
    for (int e = 0; e < E; e++)
        c[e] = p[e] + (bias ? bias[e] : 0.0);
    for (int g = 0; g < G; g++) {
        double a = -INFINITY, b = -INFINITY;
        for (int e = g * per; e < (g + 1) * per; e++) {
            if (c[e] > a) {
                b = a;
                a = c[e];
            } else if (c[e] > b) {
                b = c[e];
            }
        }
        score[g] = per > 1 ? a + b : a;
    }
    for (int j = 0; j < (G > 1 ? o->n_group_used : 1); j++) {
        int top = -1;
        for (int g = 0; g < G; g++)
            if (!kept[g] && (top < 0 || score[g] > score[top])) top = g;
        kept[top] = true;
    }
    for (int g = 0; g < G; g++)
        if (!kept[g])
            for (int e = g * per; e < (g + 1) * per; e++)
                c[e] = -INFINITY;
}

/* The reference router: gating in double, top-k by value (lowest index first among equals),
 * chosen by ref_choice when a selection bias (host copy) or groups are given. */
static void ref_route(const float *logits, const kern_router_opts *o, const float *bias,
                      int32_t *ids, double *w)
{
    int E = o->n_expert;
    double *p = malloc((size_t)E * sizeof *p), *c = malloc((size_t)E * sizeof *c);
    double max = -INFINITY, sum = 0.0;
    for (int e = 0; e < E; e++)
        max = fmax(max, logits[e]);
    for (int e = 0; e < E; e++) {
        p[e] = o->gating == KERN_GATING_SIGMOID        ? 1.0 / (1.0 + exp(-(double)logits[e]))
               : o->gating == KERN_GATING_TOPK_SOFTMAX ? logits[e] /* chosen by logit */
                                                       : exp(logits[e] - max);
        sum += p[e];
    }
    if (o->gating == KERN_GATING_SOFTMAX)
        for (int e = 0; e < E; e++)
            p[e] /= sum;
    ref_choice(p, o, bias, c);
    double top = 0.0;
    for (int j = 0; j < o->k; j++) {
        int best = -1;
        for (int e = 0; e < E; e++) {
            bool taken = false;
            for (int i = 0; i < j; i++)
                taken |= ids[i] == e;
            if (!taken && (best < 0 || c[e] > c[best])) best = e;
        }
        ids[j] = best;
        w[j] = p[best];
        top += p[best];
    }
    if (o->gating == KERN_GATING_TOPK_SOFTMAX) { /* a softmax over the k chosen logits */
        top = 0.0;
        for (int j = 0; j < o->k; j++)
            top += (w[j] = exp(w[j] - p[ids[0]]));
        for (int j = 0; j < o->k; j++)
            w[j] /= top;
    }
    for (int j = 0; j < o->k; j++) {
        if (o->norm) w[j] /= fmax(top, 6.103515625e-5);
        w[j] *= o->scale;
    }
    free(p);
    free(c);
}

START_TEST(router_gatings_and_ties)
{
    static const struct {
        int E, k;
        kern_gating g;
        bool norm;
        float scale;
        int bias; /* 0 none; 1: small, mixing with p; 2: large, deciding alone */
        int n_group, n_group_used;
    } cases[] = {{8, 2, KERN_GATING_SOFTMAX, true, 1.0f, 0, 0, 0},
                 {60, 4, KERN_GATING_SOFTMAX, false, 1.0f, 0, 0, 0},
                 {128, 8, KERN_GATING_SOFTMAX, true, 1.0f, 0, 0, 0},
                 {64, 8, KERN_GATING_SOFTMAX, false, 1.0f, 0, 0, 0},
                 {256, 8, KERN_GATING_SIGMOID, true, 2.5f, 0, 0, 0},
                 {16, 1, KERN_GATING_SOFTMAX, true, 1.0f, 0, 0, 0},
                 {8, 8, KERN_GATING_SOFTMAX, false, 0.5f, 0, 0, 0},
                 {32, 4, KERN_GATING_TOPK_SOFTMAX, false, 1.0f, 0, 0, 0},
                 {128, 4, KERN_GATING_TOPK_SOFTMAX, false, 1.0f, 0, 0, 0},
                 /* glm4moe: sigmoid chosen with its selection bias, weighted without it */
                 {128, 8, KERN_GATING_SIGMOID, true, 1.0f, 1, 1, 1},
                 {16, 4, KERN_GATING_SIGMOID, true, 2.5f, 2, 0, 0},
                 /* DeepSeek-V3's groups: with large biases the 2 of 4 groups kept are known */
                 {16, 4, KERN_GATING_SIGMOID, true, 2.5f, 2, 4, 2},
                 {64, 6, KERN_GATING_SIGMOID, false, 1.0f, 1, 8, 3},
                 /* Kimi-K2's 384 experts, one group */
                 {384, 8, KERN_GATING_SIGMOID, true, 2.827f, 1, 1, 1}};
    int n_tok = 13;
    for (int be = 0; be < n_backends; be++) {
        kern_backend *b = backends[be].b;
        for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
            kern_router_opts o = {.n_expert = cases[c].E,
                                  .k = cases[c].k,
                                  .gating = cases[c].g,
                                  .norm = cases[c].norm,
                                  .scale = cases[c].scale,
                                  .n_group = cases[c].n_group,
                                  .n_group_used = cases[c].n_group_used};
            int E = o.n_expert, K = o.k;
            /* large biases 4 apart order the experts alone (p < 1 cannot change it, nor the
             * groups' sums of two); small ones 0.01 apart mix with p's 3e-3 or more */
            float *bias = NULL;
            if (cases[c].bias) {
                bias = malloc((size_t)E * sizeof *bias);
                for (int e = 0; e < E; e++)
                    bias[e] = cases[c].bias == 2 ? 4.0f * (float)((e * 7) % E)
                                                 : 0.01f * (float)((e * 37) % E);
                o.sel_bias = to_device(b, bias, (size_t)E * sizeof *bias);
            }
            /* well separated values (so that every backend agrees on the order), and one token
             * of exact ties: the lowest index must win */
            float *logits = malloc((size_t)(n_tok * E) * sizeof *logits);
            for (int t = 0; t < n_tok; t++)
                for (int e = 0; e < E; e++)
                    logits[t * E + e] =
                        t == 0 ? 0.25f : (float)((e * 37 + t * 11) % E) * (4.0f / (float)E) - 2.0f;
            float *dl = to_device(b, logits, (size_t)(n_tok * E) * 4);
            int32_t *did = dev_zeros(b, (size_t)(n_tok * K) * 4),
                    *ids = malloc((size_t)(n_tok * K) * 4);
            float *dw = dev_zeros(b, (size_t)(n_tok * K) * 4), *w = malloc((size_t)(n_tok * K) * 4);
            kern_router(b, dl, n_tok, &o, did, dw);
            from_device(b, ids, did, (size_t)(n_tok * K) * 4);
            from_device(b, w, dw, (size_t)(n_tok * K) * 4);
            int32_t rid[16];
            double rw[16];
            for (int t = 0; t < n_tok; t++) {
                ref_route(logits + t * E, &o, bias, rid, rw);
                for (int j = 0; j < K; j++) {
                    ck_assert_msg(ids[t * K + j] == rid[j],
                                  "%s router E=%d k=%d token %d: slot %d is expert %d, want %d",
                                  backends[be].name, E, K, t, j, ids[t * K + j], rid[j]);
                    expect_close(be, "router", "weight", w[t * K + j], rw[j], 1.0, 2e-6);
                }
            }
            dev_free(b, dl);
            dev_free(b, did);
            dev_free(b, dw);
            if (bias) dev_free(b, (void *)o.sel_bias);
            free(bias);
            free(logits);
            free(ids);
            free(w);
        }
    }
}
END_TEST

START_TEST(combine_and_shared_gate)
{
    int64_t n_tok = 11, K = 4, dim = 301, n_rows = n_tok * K;
    for (int be = 0; be < n_backends; be++) {
        kern_backend *b = backends[be].b;
        float *src = random_floats(n_rows * dim, 3.0f), *wts = random_floats(n_rows, 1.0f);
        int32_t *rows = malloc((size_t)n_rows * sizeof *rows);
        for (int64_t i = 0; i < n_rows; i++)
            rows[i] = (int32_t)((i * 13 + 5) % n_rows);
        float *out = malloc((size_t)(n_tok * dim) * 4);
        float *dsrc = to_device(b, src, (size_t)(n_rows * dim) * 4),
              *dw = to_device(b, wts, (size_t)n_rows * 4);
        int32_t *drows = to_device(b, rows, (size_t)n_rows * 4);
        float *dout = dev_zeros(b, (size_t)(n_tok * dim) * 4);
        kern_moe_combine(b, dsrc, drows, dw, dout, n_tok, (int)K, dim);
        from_device(b, out, dout, (size_t)(n_tok * dim) * 4);
        for (int64_t t = 0; t < n_tok; t++)
            for (int64_t i = 0; i < dim; i++) {
                double ref = 0.0, mag = 0.0;
                for (int64_t j = 0; j < K; j++) {
                    ref += (double)wts[t * K + j] * src[rows[t * K + j] * dim + i];
                    mag += fabs((double)wts[t * K + j] * src[rows[t * K + j] * dim + i]);
                }
                expect_close(be, "moe_combine", "", out[t * dim + i], ref, mag + 1e-30, 1e-6);
            }
        /* gate_add: out += sigmoid(gate . h) * x */
        float *h = random_floats(n_tok * dim, 1.0f), *gate = random_floats(dim, 0.2f),
              *x = random_floats(n_tok * dim, 2.0f);
        float *dh = to_device(b, h, (size_t)(n_tok * dim) * 4),
              *dg = to_device(b, gate, (size_t)dim * 4);
        float *dx = to_device(b, x, (size_t)(n_tok * dim) * 4);
        float *before = malloc((size_t)(n_tok * dim) * 4);
        memcpy(before, out, (size_t)(n_tok * dim) * 4);
        kern_gate_add(b, dh, dg, dx, dout, n_tok, dim);
        from_device(b, out, dout, (size_t)(n_tok * dim) * 4);
        for (int64_t t = 0; t < n_tok; t++) {
            double z = 0.0;
            for (int64_t i = 0; i < dim; i++)
                z += (double)gate[i] * h[t * dim + i];
            double g = 1.0 / (1.0 + exp(-z));
            for (int64_t i = 0; i < dim; i++) {
                double ref = before[t * dim + i] + g * x[t * dim + i];
                expect_close(be, "gate_add", "", out[t * dim + i], ref, 1.0 + fabs(ref), 2e-6);
            }
        }
        dev_free(b, dsrc);
        dev_free(b, dw);
        dev_free(b, drows);
        dev_free(b, dout);
        dev_free(b, dh);
        dev_free(b, dg);
        dev_free(b, dx);
        free(src);
        free(wts);
        free(rows);
        free(out);
        free(h);
        free(gate);
        free(x);
        free(before);
    }
}
END_TEST

/* ---- experts: a layer's routed SwiGLU experts over their buckets -------------------------------
 */

typedef struct ffn_case_expert {
    void *w[3];   /* gate, up, down on the host */
    float *wf[3]; /* dequantised */
    float *bias[3];
    kern_ffn_expert e;
} ffn_case_expert;

/* The activation of one row, in double: SwiGLU, or gpt-oss's clamped one. */
static double ref_glu(bool oai, double g, double u)
{
    if (!oai) return g / (1.0 + exp(-g)) * u;
    g = fmin(g, 7.0);
    u = fmin(fmax(u, -7.0), 7.0);
    return (u + 1.0) * g / (1.0 + exp(-1.702 * g));
}

/* Experts of types (gu for gate and up, dn for down; per expert when mixed) over buckets with
 * gaps between them, against a double-precision SwiGLU of the dequantised weights, and bit for
 * bit against matmul, silu_mul and matmul run one expert at a time on the same backend.  With
 * oai: gpt-oss's experts, biases after every product and the clamped SwiGLU. */
static void experts_case(int be, const uint32_t *gu, const uint32_t *dn, int n_ex, bool oai)
{
    kern_backend *b = backends[be].b;
    enum { MAXE = 4 };
    static const int64_t counts[MAXE] = {1, 9, 3, 17};
    /* widths that are whole blocks of every type in the case: float rows end inside the CPU's
     * 16-row work items */
    uint32_t blk = 1;
    for (int i = 0; i < n_ex; i++) {
        if (kern_type_info(gu[i])->block_elems > blk) blk = kern_type_info(gu[i])->block_elems;
        if (kern_type_info(dn[i])->block_elems > blk) blk = kern_type_info(dn[i])->block_elems;
    }
    int64_t cols_d = blk == 1 ? 72 : 2 * (int64_t)blk, ff = blk == 1 ? 40 : 3 * (int64_t)blk;
    ffn_case_expert ex[MAXE];
    memset(ex, 0, sizeof ex);
    kern_ffn_expert host_ex[MAXE];
    int64_t rows = 0;
    for (int i = 0; i < n_ex; i++) {
        ffn_case_expert *c = &ex[i];
        uint32_t types[3] = {gu[i], gu[i], dn[i]};
        int64_t shape[3][2] = {{ff, cols_d}, {ff, cols_d}, {cols_d, ff}};
        kern_weight *kw[3] = {&c->e.gate, &c->e.up, &c->e.down};
        for (int p = 0; p < 3; p++) {
            c->w[p] = random_weight(types[p], shape[p][0], shape[p][1], &c->wf[p]);
            size_t rb = kern_row_bytes(types[p], shape[p][1]);
            *kw[p] = (kern_weight){.data = to_device(b, c->w[p], rb * (size_t)shape[p][0]),
                                   .type = types[p],
                                   .n_rows = shape[p][0],
                                   .n_cols = shape[p][1],
                                   .row_bytes = rb};
            c->bias[p] = NULL;
            if (oai) c->bias[p] = random_floats(shape[p][0], 1.0f);
        }
        if (oai) {
            c->e.glu = KERN_GLU_SWIGLU_OAI;
            c->e.gate_bias = to_device(b, c->bias[0], (size_t)ff * 4);
            c->e.up_bias = to_device(b, c->bias[1], (size_t)ff * 4);
            c->e.down_bias = to_device(b, c->bias[2], (size_t)cols_d * 4);
        }
        c->e.row0 = rows + 2; /* a gap: rows between buckets are not the op's */
        c->e.n_rows = counts[i];
        rows = c->e.row0 + c->e.n_rows;
        host_ex[i] = c->e;
    }
    float *x = random_floats(rows * cols_d, 1.0f);
    float *dx = to_device(b, x, (size_t)(rows * cols_d) * 4);
    float *dout = dev_zeros(b, (size_t)(rows * cols_d) * 4),
          *dg = dev_zeros(b, (size_t)(rows * ff) * 4);
    float *du = dev_zeros(b, (size_t)(rows * ff) * 4);
    float *out = malloc((size_t)(rows * cols_d) * 4), *seq = malloc((size_t)(rows * cols_d) * 4);
    kern_experts(b, host_ex, n_ex, dx, dout, dg, du);
    from_device(b, out, dout, (size_t)(rows * cols_d) * 4);
    double tol = blk > 1 ? 1e-2 : (backends[be].approx ? 2e-3 : 1e-5);
    double *h = malloc((size_t)ff * sizeof *h), *hm = malloc((size_t)ff * sizeof *hm);
    char what[160];
    for (int i = 0; i < n_ex; i++) {
        ffn_case_expert *c = &ex[i];
        for (int64_t t = c->e.row0; t < c->e.row0 + c->e.n_rows; t++) {
            for (int64_t f = 0; f < ff; f++) {
                double g = 0, u = 0, gm = 0, um = 0;
                for (int64_t k = 0; k < cols_d; k++) {
                    g += (double)c->wf[0][f * cols_d + k] * x[t * cols_d + k];
                    u += (double)c->wf[1][f * cols_d + k] * x[t * cols_d + k];
                    gm += fabs((double)c->wf[0][f * cols_d + k] * x[t * cols_d + k]);
                    um += fabs((double)c->wf[1][f * cols_d + k] * x[t * cols_d + k]);
                }
                if (oai) {
                    g += c->bias[0][f];
                    u += c->bias[1][f];
                }
                h[f] = ref_glu(oai, g, u);
                /* the scale of h's rounding error: gate's and up's errors are relative to
                 * sum |w x| (see matmul_tol), carried through silu (slope <= 1.1) and the product
                 */
                hm[f] = fabs(h[f]) + 1.1 * fabs(u) * gm + fabs(g) * um;
            }
            for (int64_t r = 0; r < cols_d; r++) {
                double ref = oai ? c->bias[2][r] : 0.0, mag = fabs(ref);
                for (int64_t f = 0; f < ff; f++) {
                    ref += (double)c->wf[2][r * ff + f] * h[f];
                    mag += fabs((double)c->wf[2][r * ff + f]) * hm[f];
                }
                snprintf(what, sizeof what, "%s/%s expert %d row %lld out %lld",
                         kern_type_info(gu[i])->name, kern_type_info(dn[i])->name, i, (long long)t,
                         (long long)r);
                expect_close(be, "experts", what, out[t * cols_d + r], ref, mag + 1e-30, tol);
            }
        }
    }
    /* the same bits as the operations, one expert at a time */
    for (int i = 0; i < n_ex; i++) {
        kern_ffn_expert *e = &ex[i].e;
        float *g = dg + e->row0 * ff, *o = dout + e->row0 * cols_d;
        kern_matmul(b, &e->gate, dx + e->row0 * cols_d, g, e->n_rows);
        kern_matmul(b, &e->up, dx + e->row0 * cols_d, du, e->n_rows);
        if (oai) {
            kern_add_bias(b, g, e->gate_bias, e->n_rows, ff);
            kern_add_bias(b, du, e->up_bias, e->n_rows, ff);
            kern_swiglu_oai(b, g, du, g, e->n_rows * ff);
        } else {
            kern_silu_mul(b, g, du, g, e->n_rows * ff);
        }
        kern_matmul(b, &e->down, g, o, e->n_rows);
        if (oai) kern_add_bias(b, o, e->down_bias, e->n_rows, cols_d);
    }
    from_device(b, seq, dout, (size_t)(rows * cols_d) * 4);
    for (int i = 0; i < n_ex; i++) {
        size_t off = (size_t)(ex[i].e.row0 * cols_d), n = (size_t)(ex[i].e.n_rows * cols_d);
        ck_assert_msg(memcmp(out + off, seq + off, n * 4) == 0,
                      "%s experts (%s/%s): expert %d differs from matmul, silu_mul, matmul",
                      backends[be].name, kern_type_info(gu[i])->name, kern_type_info(dn[i])->name,
                      i);
    }
    for (int i = 0; i < n_ex; i++)
        for (int p = 0; p < 3; p++) {
            kern_weight *kw[3] = {&ex[i].e.gate, &ex[i].e.up, &ex[i].e.down};
            dev_free(b, (void *)kw[p]->data);
            free(ex[i].w[p]);
            free(ex[i].wf[p]);
            free(ex[i].bias[p]);
        }
    for (int i = 0; i < n_ex && oai; i++) {
        dev_free(b, (void *)ex[i].e.gate_bias);
        dev_free(b, (void *)ex[i].e.up_bias);
        dev_free(b, (void *)ex[i].e.down_bias);
    }
    dev_free(b, dx);
    dev_free(b, dout);
    dev_free(b, dg);
    dev_free(b, du);
    free(x);
    free(out);
    free(seq);
    free(h);
    free(hm);
}

START_TEST(experts_grouped)
{
    uint32_t t = all_types[_i], same[4] = {t, t, t, t};
    for (int be = 0; be < n_backends; be++) {
        experts_case(be, same, same, 4, false);
        experts_case(be, same, same, 1, false);
    }
}
END_TEST

START_TEST(experts_mixed_types)
{
    /* Q4_K_M's layout (Q6_K downs); float gate/up with quantised downs; and experts whose types
     * differ (not a GGUF layout, but the op must still compute it) */
    const uint32_t q4[4] = {KERN_T_Q4_K, KERN_T_Q4_K, KERN_T_Q4_K, KERN_T_Q4_K},
                   q6[4] = {KERN_T_Q6_K, KERN_T_Q6_K, KERN_T_Q6_K, KERN_T_Q6_K},
                   f16[4] = {KERN_T_F16, KERN_T_F16, KERN_T_F16, KERN_T_F16},
                   q8[4] = {KERN_T_Q8_0, KERN_T_Q8_0, KERN_T_Q8_0, KERN_T_Q8_0},
                   mix[4] = {KERN_T_Q8_0, KERN_T_F32, KERN_T_Q4_0, KERN_T_BF16};
    for (int be = 0; be < n_backends; be++) {
        experts_case(be, q4, q6, 4, false);
        experts_case(be, f16, q8, 3, false);
        experts_case(be, mix, mix, 4, false);
    }
}
END_TEST

START_TEST(experts_gpt_oss)
{
    /* gpt-oss's files: MXFP4 experts; and F32 ones (bounds without the 8-bit activations) */
    const uint32_t mx[4] = {KERN_T_MXFP4, KERN_T_MXFP4, KERN_T_MXFP4, KERN_T_MXFP4},
                   f32[4] = {KERN_T_F32, KERN_T_F32, KERN_T_F32, KERN_T_F32};
    for (int be = 0; be < n_backends; be++) {
        experts_case(be, mx, mx, 4, true);
        experts_case(be, f32, f32, 4, true);
        experts_case(be, f32, f32, 1, true);
    }
}
END_TEST

/* A matmul right after another of the same x may reuse its quantised activations (CUDA does,
 * for Q, K and V): only while nothing wrote x in between, by an operation or by a copy.  Each
 * product must equal the same product of a fresh copy of x, bit for bit. */
START_TEST(matmul_reuses_only_unchanged_activations)
{
    enum { ROWS = 40, COLS = 256, N = 3 };
    for (int be = 0; be < n_backends; be++) {
        kern_backend *b = backends[be].b;
        float *ref[2];
        void *wq[2];
        kern_weight w[2];
        for (int i = 0; i < 2; i++) {
            wq[i] = random_weight(KERN_T_Q8_0, ROWS, COLS, &ref[i]);
            size_t rb = kern_row_bytes(KERN_T_Q8_0, COLS);
            w[i] = (kern_weight){.data = to_device(b, wq[i], rb * ROWS),
                                 .type = KERN_T_Q8_0,
                                 .n_rows = ROWS,
                                 .n_cols = COLS,
                                 .row_bytes = rb};
        }
        float *x = random_floats(N * COLS, 1.0f), *other = random_floats(N * COLS, 3.0f);
        float *dx = to_device(b, x, sizeof(float) * N * COLS), *dy = dev_zeros(b, 4 * ROWS * N);
        float got[N * ROWS], want[N * ROWS], now[N * COLS];
        for (int round = 0; round < 3; round++) {
            kern_matmul(b, &w[0], dx, dy, N);
            if (round == 1) kern_add(b, dx, dx, N * COLS); /* an operation writes x */
            if (round == 2)                                /* a copy writes x */
                ck_assert_int_eq(
                    kern_copy(b, KERN_STREAM_COMPUTE, dx, other, sizeof now, KERN_COPY_TO_DEVICE),
                    0);
            kern_matmul(b, &w[1], dx, dy, N);
            from_device(b, got, dy, sizeof got);
            from_device(b, now, dx, sizeof now);
            float *fresh = to_device(b, now, sizeof now);
            kern_matmul(b, &w[1], fresh, dy, N);
            from_device(b, want, dy, sizeof want);
            ck_assert_msg(memcmp(got, want, sizeof got) == 0,
                          "%s: a matmul after %s differs from the same product of a fresh x",
                          backends[be].name,
                          round == 0   ? "a matmul of the same x"
                          : round == 1 ? "an add into x"
                                       : "a copy into x");
            dev_free(b, fresh);
        }
        for (int i = 0; i < 2; i++) {
            dev_free(b, (void *)w[i].data);
            free(wq[i]);
            free(ref[i]);
        }
        dev_free(b, dx);
        dev_free(b, dy);
        free(x);
        free(other);
    }
}
END_TEST

/* ---- routing on the device: the plan, and the experts through a table ---------------------- */

/* n tokens' choices of k distinct experts of E (random, some experts unchosen) with weights. */
static void random_routes(int64_t n, int k, int32_t E, int32_t *ids, float *w)
{
    for (int64_t t = 0; t < n; t++)
        for (int j = 0; j < k; j++) {
            int32_t e;
            bool dup;
            do { /* the first half of the experts twice as often: buckets of unequal sizes */
                e = (int32_t)(rng_next() % (uint64_t)(E + E / 2));
                if (e >= E) e -= E;
                dup = false;
                for (int i = 0; i < j; i++)
                    dup |= ids[t * k + i] == e;
            } while (dup);
            ids[t * k + j] = e;
            w[t * k + j] = (rng_uniform() + 1.0f) * 0.5f;
        }
}

/* A plan on the device and its host arrays. */
typedef struct plan_pair {
    kern_moe_plan dev, host;
} plan_pair;

static void plan_alloc(kern_backend *b, plan_pair *p, int64_t nk, int32_t E)
{
    size_t ends = (size_t)(E + 1) * 4, items = (size_t)nk * 4;
    p->dev = (kern_moe_plan){dev_zeros(b, ends), dev_zeros(b, ends), dev_zeros(b, items),
                             dev_zeros(b, items), dev_zeros(b, items)};
    p->host =
        (kern_moe_plan){malloc(ends), malloc(ends), malloc(items), malloc(items), malloc(items)};
}

static void plan_free(kern_backend *b, plan_pair *p)
{
    void *d[5] = {p->dev.bucket_start, p->dev.used, p->dev.bucket, p->dev.comb_rows, p->dev.comb_w};
    void *h[5] = {p->host.bucket_start, p->host.used, p->host.bucket, p->host.comb_rows,
                  p->host.comb_w};
    for (int i = 0; i < 5; i++) {
        dev_free(b, d[i]);
        free(h[i]);
    }
}

/* The device's plan equals kern_moe_align_host's, array by array. */
static void check_plan(int be, const plan_pair *p, int64_t nk, int32_t E, const char *label)
{
    kern_backend *b = backends[be].b;
    size_t ends = (size_t)(E + 1) * 4, items = (size_t)nk * 4;
    void *got = malloc(ends > items ? ends : items);
    const void *dev[5] = {p->dev.bucket_start, p->dev.used, p->dev.bucket, p->dev.comb_rows,
                          p->dev.comb_w};
    const void *host[5] = {p->host.bucket_start, p->host.used, p->host.bucket, p->host.comb_rows,
                           p->host.comb_w};
    static const char *const names[5] = {"bucket_start", "used", "bucket", "comb_rows", "comb_w"};
    for (int i = 0; i < 5; i++) {
        size_t bytes = i < 2 ? ends : items;
        from_device(b, got, dev[i], bytes);
        /* the used list is only defined up to its count */
        if (i == 1) bytes = (size_t)(1 + ((const int32_t *)host[1])[0]) * 4;
        ck_assert_msg(memcmp(got, host[i], bytes) == 0, "%s moe_align (%s): %s differs",
                      backends[be].name, label, names[i]);
        checked[op_index("moe_align")][be] += (long)(bytes / 4);
    }
    free(got);
}

/* moe_align on the device against kern_moe_align_host; then experts_routed over the plan,
 * with the experts stacked per part as GGUF stores them and one of them (absent) marked as
 * not on the device, against the experts op given the same buckets: the same bits, and the
 * absent expert's rows untouched. */
static void routed_case(int be, const uint32_t types[3], int32_t E, int k, int64_t n, bool oai,
                        int32_t absent)
{
    kern_backend *b = backends[be].b;
    char label[96];
    snprintf(label, sizeof label, "%s/%s/%s, %d experts, top %d, %lld tokens",
             kern_type_info(types[0])->name, kern_type_info(types[1])->name,
             kern_type_info(types[2])->name, E, k, (long long)n);
    int64_t nk = n * k;
    int32_t *ids = malloc((size_t)nk * 4);
    float *w = malloc((size_t)nk * 4);
    random_routes(n, k, E, ids, w);
    plan_pair p;
    plan_alloc(b, &p, nk, E);
    int32_t *d_ids = to_device(b, ids, (size_t)nk * 4);
    float *d_w = to_device(b, w, (size_t)nk * 4);
    kern_moe_align(b, d_ids, d_w, n, k, E, &p.dev);
    ck_assert_int_eq(kern_moe_align_host(ids, w, n, k, E, &p.host), 0);
    check_plan(be, &p, nk, E, label);

    uint32_t blk = 1;
    for (int i = 0; i < 3; i++)
        if (kern_type_info(types[i])->block_elems > blk)
            blk = kern_type_info(types[i])->block_elems;
    int64_t cols = blk == 1 ? 72 : 2 * (int64_t)blk, ff = blk == 1 ? 40 : 3 * (int64_t)blk;
    int64_t shape[3][2] = {{ff, cols}, {ff, cols}, {cols, ff}};
    kern_weight part[3];
    void *stacked[3], *d_stacked[3];
    const void **parts = calloc((size_t)E * 3, sizeof *parts);
    for (int q = 0; q < 3; q++) {
        float *ref = NULL;
        size_t rb = kern_row_bytes(types[q], shape[q][1]), slab = rb * (size_t)shape[q][0];
        stacked[q] = random_weight(types[q], shape[q][0] * E, shape[q][1], &ref);
        free(ref);
        d_stacked[q] = to_device(b, stacked[q], slab * (size_t)E);
        part[q] = (kern_weight){
            .type = types[q], .n_rows = shape[q][0], .n_cols = shape[q][1], .row_bytes = rb};
        for (int32_t e = 0; e < E; e++)
            parts[e * 3 + q] = e == absent && q == 0 ? NULL : (uint8_t *)d_stacked[q] + slab * e;
    }
    float *bias[3] = {NULL, NULL, NULL}, *d_bias[3] = {NULL, NULL, NULL};
    for (int q = 0; q < 3 && oai; q++) {
        bias[q] = random_floats(E * shape[q][0], 1.0f);
        d_bias[q] = to_device(b, bias[q], (size_t)(E * shape[q][0]) * 4);
    }
    void *d_parts = to_device(b, parts, (size_t)E * 3 * sizeof *parts);
    kern_expert_table t = {.gate = part[0],
                           .up = part[1],
                           .down = part[2],
                           .parts = d_parts,
                           .gate_bias = d_bias[0],
                           .up_bias = d_bias[1],
                           .down_bias = d_bias[2],
                           .n_expert = E,
                           .glu = oai ? KERN_GLU_SWIGLU_OAI : KERN_GLU_SILU};

    float *x = random_floats(nk * cols, 1.0f), *sentinel = malloc((size_t)(nk * cols) * 4);
    for (int64_t i = 0; i < nk * cols; i++)
        sentinel[i] = 7.0f;
    float *dx = to_device(b, x, (size_t)(nk * cols) * 4);
    float *d_out = to_device(b, sentinel, (size_t)(nk * cols) * 4),
          *d_ref = to_device(b, sentinel, (size_t)(nk * cols) * 4);
    float *dg = dev_zeros(b, (size_t)(nk * ff) * 4), *du = dev_zeros(b, (size_t)(nk * ff) * 4);
    kern_experts_routed(b, &t, &p.dev, n, k, dx, d_out, dg, du);

    kern_ffn_expert *ex = calloc((size_t)E, sizeof *ex);
    int n_ex = 0;
    for (int32_t i = 0; i < p.host.used[0]; i++) {
        int32_t e = p.host.used[1 + i];
        if (e == absent) continue;
        kern_ffn_expert *f = &ex[n_ex++];
        *f = (kern_ffn_expert){.gate = part[0],
                               .up = part[1],
                               .down = part[2],
                               .row0 = p.host.bucket_start[e],
                               .n_rows = p.host.bucket_start[e + 1] - p.host.bucket_start[e],
                               .glu = t.glu};
        f->gate.data = parts[e * 3 + 0];
        f->up.data = parts[e * 3 + 1];
        f->down.data = parts[e * 3 + 2];
        if (oai) {
            f->gate_bias = d_bias[0] + e * ff;
            f->up_bias = d_bias[1] + e * ff;
            f->down_bias = d_bias[2] + e * cols;
        }
    }
    kern_experts(b, ex, n_ex, dx, d_ref, dg, du);
    float *out = malloc((size_t)(nk * cols) * 4), *ref = malloc((size_t)(nk * cols) * 4);
    from_device(b, out, d_out, (size_t)(nk * cols) * 4);
    from_device(b, ref, d_ref, (size_t)(nk * cols) * 4);
    ck_assert_msg(memcmp(out, ref, (size_t)(nk * cols) * 4) == 0,
                  "%s experts_routed (%s): differs from the experts op over the same buckets",
                  backends[be].name, label);
    /* not vacuous: the present experts' rows were written, the absent one's were not */
    int64_t written = 0, kept = 0;
    for (int32_t e = 0; e < E; e++)
        for (int32_t r = p.host.bucket_start[e]; r < p.host.bucket_start[e + 1]; r++) {
            bool untouched = out[r * cols] == 7.0f && out[r * cols + cols - 1] == 7.0f;
            if (e == absent)
                kept += untouched;
            else
                written += !untouched;
        }
    int32_t absent_rows =
        absent >= 0 ? p.host.bucket_start[absent + 1] - p.host.bucket_start[absent] : 0;
    ck_assert_msg(written == nk - absent_rows && kept == absent_rows,
                  "%s experts_routed (%s): %lld of %lld rows written, %lld of %d absent rows kept",
                  backends[be].name, label, (long long)written, (long long)(nk - absent_rows),
                  (long long)kept, absent_rows);
    checked[op_index("experts_routed")][be] += (long)(nk * cols);

    free(ex);
    free(out);
    free(ref);
    free(x);
    free(sentinel);
    dev_free(b, dx);
    dev_free(b, d_out);
    dev_free(b, d_ref);
    dev_free(b, dg);
    dev_free(b, du);
    dev_free(b, d_parts);
    for (int q = 0; q < 3; q++) {
        dev_free(b, d_stacked[q]);
        free(stacked[q]);
        dev_free(b, d_bias[q]);
        free(bias[q]);
    }
    free(parts);
    dev_free(b, d_ids);
    dev_free(b, d_w);
    plan_free(b, &p);
    free(ids);
    free(w);
}

START_TEST(routing_on_the_device)
{
    const uint32_t q4km[3] = {KERN_T_Q4_K, KERN_T_Q4_K, KERN_T_Q6_K},
                   q8[3] = {KERN_T_Q8_0, KERN_T_Q8_0, KERN_T_Q8_0},
                   f16q8[3] = {KERN_T_F16, KERN_T_F16, KERN_T_Q8_0},
                   apart[3] = {KERN_T_Q8_0, KERN_T_Q5_0, KERN_T_Q4_0}, /* gate and up differ */
        mx[3] = {KERN_T_MXFP4, KERN_T_MXFP4, KERN_T_MXFP4},
                   f32[3] = {KERN_T_F32, KERN_T_F32, KERN_T_F32};
    for (int be = 0; be < n_backends; be++) {
        routed_case(be, q4km, 8, 2, 1, false, -1);  /* Mixtral's decode */
        routed_case(be, q4km, 16, 4, 21, false, 3); /* a batch, one expert elsewhere */
        routed_case(be, q8, 128, 8, 1, false, -1);  /* Qwen3-30B-A3B's decode */
        routed_case(be, q8, 128, 8, 37, false, 0);  /* its prefill: more rows than experts */
        routed_case(be, f16q8, 64, 6, 5, false, -1);
        routed_case(be, apart, 32, 4, 9, false, 1);
        routed_case(be, mx, 32, 4, 7, true, 2); /* gpt-oss: biases, the clamped SwiGLU */
        routed_case(be, f32, 8, 2, 300, true, -1);
    }
}
END_TEST

/* An id the router cannot give fails the step at the next sync, on every backend. */
START_TEST(moe_align_refuses_a_bad_id)
{
    char err[256];
    for (int be = 0; be < n_backends; be++) {
        kern_backend *b = backends[be].b;
        int32_t ids[6] = {0, 3, 2, 8, 1, 0}; /* 8 of 8 experts */
        float w[6] = {1, 1, 1, 1, 1, 1};
        plan_pair p;
        plan_alloc(b, &p, 6, 8);
        int32_t *d_ids = to_device(b, ids, sizeof ids);
        float *d_w = to_device(b, w, sizeof w);
        kern_moe_align(b, d_ids, d_w, 3, 2, 8, &p.dev);
        int rc = kern_sync(b, err, sizeof err);
        ck_assert_msg(rc == -EINVAL && strstr(err, "moe_align"), "%s: rc %d: %s", backends[be].name,
                      rc, err);
        ck_assert_int_eq(kern_moe_align_host(ids, w, 3, 2, 8, &p.host), -EINVAL);
        ck_assert_int_eq(kern_sync(b, err, sizeof err), 0); /* the error was taken */
        if (b->kind == KERN_BACKEND_CUDA) {
            /* The bucket rows the bad item did not get must not send the gather behind past
             * its source (a device fault would end the context): it zeroes them, and the
             * error still names the cause.  (The CPU and sim stop at the bad id first.) */
            int32_t far[6] = {1 << 30, 1 << 30, 1 << 30, 1 << 30, 1 << 30, 1 << 30};
            ck_assert_int_eq(kern_copy(b, KERN_STREAM_COMPUTE, p.dev.bucket, far, sizeof far,
                                       KERN_COPY_TO_DEVICE),
                             0);
            float *src = dev_zeros(b, 3 * 4 * sizeof(float)), got[6 * 4];
            float *dst = dev_zeros(b, sizeof got);
            kern_moe_align(b, d_ids, d_w, 3, 2, 8, &p.dev);
            kern_gather(b, src, p.dev.bucket, dst, 6, 4);
            rc = kern_sync(b, err, sizeof err);
            ck_assert_msg(rc == -EINVAL && strstr(err, "moe_align"), "%s: rc %d: %s",
                          backends[be].name, rc, err);
            from_device(b, got, dst, sizeof got);
            for (int i = 0; i < 6 * 4; i++)
                ck_assert_msg(got[i] == 0.0f, "%s: gathered %g", backends[be].name, got[i]);
            dev_free(b, src);
            dev_free(b, dst);
        }
        dev_free(b, d_ids);
        dev_free(b, d_w);
        plan_free(b, &p);
    }
}
END_TEST

/* ---- graphs --------------------------------------------------------------------------------- */

/* A recording does nothing until launched, and each launch reads its addresses as they are
 * then; a host wait while recording fails the capture and runs nothing. */
START_TEST(graphs_record_then_replay)
{
    char err[256];
    enum { N = 1000 };
    for (int be = 0; be < n_backends; be++) {
        kern_backend *b = backends[be].b;
        if (!kern_has_graphs(b)) continue;
        float ones[N], got[N];
        for (int i = 0; i < N; i++)
            ones[i] = 1.0f;
        float *dx = to_device(b, ones, sizeof ones), *dy = dev_zeros(b, sizeof ones);
        ck_assert_int_eq(kern_capture_begin(b), 0);
        kern_add(b, dy, dx, N);
        kern_add(b, dy, dx, N);
        kern_graph *g = NULL;
        ck_assert_msg(kern_capture_end(b, &g, err, sizeof err) == 0, "%s", err);
        from_device(b, got, dy, sizeof got);
        ck_assert_msg(got[0] == 0.0f && got[N - 1] == 0.0f, "%s: the recording ran",
                      backends[be].name);
        ck_assert_int_eq(kern_graph_launch(b, g), 0);
        ck_assert_int_eq(kern_graph_launch(b, g), 0);
        from_device(b, got, dy, sizeof got);
        ck_assert_msg(got[0] == 4.0f && got[N - 1] == 4.0f, "%s: two launches gave %g",
                      backends[be].name, got[0]);
        for (int i = 0; i < N; i++)
            ones[i] = 5.0f;
        ck_assert_int_eq(
            kern_copy(b, KERN_STREAM_COMPUTE, dx, ones, sizeof ones, KERN_COPY_TO_DEVICE), 0);
        ck_assert_int_eq(kern_graph_launch(b, g), 0);
        from_device(b, got, dy, sizeof got);
        ck_assert_msg(got[0] == 14.0f && got[N - 1] == 14.0f,
                      "%s: a launch after x changed gave %g", backends[be].name, got[0]);
        kern_graph_destroy(b, &g);

        ck_assert_int_eq(kern_capture_begin(b), 0);
        kern_add(b, dy, dx, N);
        (void)kern_sync(b, err, sizeof err);
        int rc = kern_capture_end(b, &g, err, sizeof err);
        ck_assert_msg(rc < 0 && !g && strstr(err, "captur"), "%s: rc %d: %s", backends[be].name, rc,
                      err);
        ck_assert_int_eq(kern_sync(b, err, sizeof err), 0);
        from_device(b, got, dy, sizeof got);
        ck_assert_msg(got[0] == 14.0f, "%s: a failed recording ran", backends[be].name);
        dev_free(b, dx);
        dev_free(b, dy);
    }
}
END_TEST

/* ---- per-operation timing ------------------------------------------------------------------- */

/* Timing counts each call once under its operation, leaves the results' bits alone, measures
 * something for an operation that did work, and stops counting when turned off. */
START_TEST(profiling_counts_each_operation)
{
    char err[256];
    enum { ROWS = 64, COLS = 512, N = 4 };
    for (int be = 0; be < n_backends; be++) {
        kern_backend *b = backends[be].b;
        float *ref;
        void *wq = random_weight(KERN_T_Q8_0, ROWS, COLS, &ref);
        size_t rb = kern_row_bytes(KERN_T_Q8_0, COLS);
        kern_weight w = {.data = to_device(b, wq, rb * ROWS),
                         .type = KERN_T_Q8_0,
                         .n_rows = ROWS,
                         .n_cols = COLS,
                         .row_bytes = rb};
        float *x = random_floats(N * COLS, 1.0f);
        float *dx = to_device(b, x, sizeof(float) * N * COLS), *dy = dev_zeros(b, 4 * ROWS * N);
        float plain[N * ROWS], timed[N * ROWS];
        kern_matmul(b, &w, dx, dy, N);
        from_device(b, plain, dy, sizeof plain);

        ck_assert_int_eq(kern_set_profiling(b, true), 0);
        kern_profile pr;
        kern_get_profile(b, &pr);
        ck_assert_msg(pr.calls[KERN_OP_MATMUL] == 0 && pr.calls[KERN_OP_ADD] == 0,
                      "%s: turning timing on clears the sums", backends[be].name);
        kern_matmul(b, &w, dx, dy, N);
        kern_add(b, dy, dy, N * ROWS);
        kern_add(b, dy, dy, N * ROWS);
        from_device(b, timed, dy, sizeof timed);
        for (int i = 0; i < N * ROWS; i++)
            ck_assert_msg(timed[i] == 4.0f * plain[i], "%s: a timed step changed row %d: %g vs %g",
                          backends[be].name, i, timed[i], 4.0f * plain[i]);
        kern_get_profile(b, &pr);
        ck_assert_msg(
            pr.calls[KERN_OP_MATMUL] == 1 && pr.calls[KERN_OP_ADD] == 2 &&
                pr.calls[KERN_OP_RMSNORM] == 0 && pr.untimed == 0,
            "%s: calls matmul %llu add %llu rmsnorm %llu untimed %llu", backends[be].name,
            (unsigned long long)pr.calls[KERN_OP_MATMUL], (unsigned long long)pr.calls[KERN_OP_ADD],
            (unsigned long long)pr.calls[KERN_OP_RMSNORM], (unsigned long long)pr.untimed);
        ck_assert_msg(pr.ns[KERN_OP_MATMUL] > 0 && pr.ns[KERN_OP_MATMUL] < 1000000000ull,
                      "%s: a matmul of %d x %d over %d tokens took %llu ns", backends[be].name,
                      ROWS, COLS, N, (unsigned long long)pr.ns[KERN_OP_MATMUL]);
        ck_assert_msg(pr.device_time == (b->kind == KERN_BACKEND_CUDA) &&
                          (pr.device_time || pr.gap_ns == 0),
                      "%s: device time %d, gap %llu ns", backends[be].name, pr.device_time,
                      (unsigned long long)pr.gap_ns);
        { /* experts of two types run one by one through the table: one experts call */
            enum { D = 256 };
            const uint32_t types[2] = {KERN_T_Q8_0, KERN_T_Q4_K};
            kern_ffn_expert ex[2];
            void *host[2][3];
            float *refs[2][3];
            for (int e = 0; e < 2; e++) {
                kern_weight *parts[3] = {&ex[e].gate, &ex[e].up, &ex[e].down};
                for (int k = 0; k < 3; k++) {
                    host[e][k] = random_weight(types[e], D, D, &refs[e][k]);
                    size_t erb = kern_row_bytes(types[e], D);
                    *parts[k] = (kern_weight){.data = to_device(b, host[e][k], erb * D),
                                              .type = types[e],
                                              .n_rows = D,
                                              .n_cols = D,
                                              .row_bytes = erb};
                }
                ex[e].row0 = e;
                ex[e].n_rows = 1;
                ex[e].gate_bias = ex[e].up_bias = ex[e].down_bias = NULL;
                ex[e].glu = KERN_GLU_SILU;
            }
            float *ex_x = random_floats(2 * D, 1.0f), ex_out[2 * D];
            float *d_x = to_device(b, ex_x, sizeof ex_out), *d_out = dev_zeros(b, sizeof ex_out),
                  *d_g = dev_zeros(b, sizeof ex_out), *d_u = dev_zeros(b, sizeof ex_out);
            kern_experts(b, ex, 2, d_x, d_out, d_g, d_u);
            from_device(b, ex_out, d_out, sizeof ex_out);
            kern_profile with;
            kern_get_profile(b, &with);
            ck_assert_msg(
                with.calls[KERN_OP_EXPERTS] == pr.calls[KERN_OP_EXPERTS] + 1 &&
                    with.calls[KERN_OP_MATMUL] == pr.calls[KERN_OP_MATMUL] &&
                    with.calls[KERN_OP_SILU_MUL] == pr.calls[KERN_OP_SILU_MUL],
                "%s: experts of mixed types counted as %llu experts, %llu matmuls",
                backends[be].name,
                (unsigned long long)(with.calls[KERN_OP_EXPERTS] - pr.calls[KERN_OP_EXPERTS]),
                (unsigned long long)(with.calls[KERN_OP_MATMUL] - pr.calls[KERN_OP_MATMUL]));
            pr = with;
            for (int e = 0; e < 2; e++) {
                dev_free(b, (void *)ex[e].gate.data);
                dev_free(b, (void *)ex[e].up.data);
                dev_free(b, (void *)ex[e].down.data);
                for (int k = 0; k < 3; k++) {
                    free(host[e][k]);
                    free(refs[e][k]);
                }
            }
            dev_free(b, d_x);
            dev_free(b, d_out);
            dev_free(b, d_g);
            dev_free(b, d_u);
            free(ex_x);
        }
        if (kern_has_graphs(b)) { /* a replayed graph is timed call by call, or said untimed */
            ck_assert_int_eq(kern_capture_begin(b), 0);
            kern_add(b, dy, dy, N * ROWS);
            kern_graph *g = NULL;
            ck_assert_msg(kern_capture_end(b, &g, err, sizeof err) == 0, "%s", err);
            ck_assert_int_eq(kern_graph_launch(b, g), 0);
            from_device(b, timed, dy, sizeof timed);
            kern_graph_destroy(b, &g);
            kern_profile after;
            kern_get_profile(b, &after);
            ck_assert_msg(after.calls[KERN_OP_ADD] == 3 || after.untimed > pr.untimed,
                          "%s: a replayed add neither timed nor said untimed", backends[be].name);
            pr = after;
        }
        ck_assert_int_eq(kern_set_profiling(b, false), 0);
        kern_matmul(b, &w, dx, dy, N);
        from_device(b, timed, dy, sizeof timed);
        ck_assert_msg(memcmp(timed, plain, sizeof plain) == 0, "%s: bits after timing",
                      backends[be].name);
        kern_profile off;
        kern_get_profile(b, &off);
        ck_assert_msg(off.calls[KERN_OP_MATMUL] == pr.calls[KERN_OP_MATMUL],
                      "%s: timing off still counts", backends[be].name);
        dev_free(b, (void *)w.data);
        dev_free(b, dx);
        dev_free(b, dy);
        free(wq);
        free(ref);
        free(x);
    }
}
END_TEST

/* ---- the paged KV cache and attention ----------------------------------------------------------
 */

static float kv_round(float v, kern_kv_type t)
{
    return t == KERN_KV_F16 ? kern_f16_to_f32(kern_f32_to_f16(v)) : v;
}

/* Sequences of different lengths stored in one batch of tokens (as a prefill of several
 * prompts), then a decode step, each step's attention against the reference over the values
 * as stored.  window > 0: a sliding window; sinks: a random sink logit per head (gpt-oss). */
static void attention_case_kv(int be, kern_kv_type type, int block_tokens, int n_head,
                              int n_head_kv, int hd, const int *lens, int n_seq, int32_t window,
                              bool sinks, bool v_is_k)
{
    kern_backend *b = backends[be].b;
    char err[256];
    int n_layer = 2, kv_dim = n_head_kv * hd, layer = 1, max_len = 0, total = 0;
    for (int s = 0; s < n_seq; s++) {
        total += lens[s];
        if (lens[s] > max_len) max_len = lens[s];
    }
    kern_kv *kv = NULL;
    kern_kv_opts ko = {.n_layer = n_layer,
                       .kv_dim = kv_dim,
                       .head_dim = hd,
                       .n_seq = n_seq,
                       .n_ctx = max_len + 1,
                       .block_tokens = block_tokens,
                       .type = type,
                       .v_is_k = v_is_k};
    ck_assert_msg(kern_kv_open(&kv, b, &ko, err, sizeof err) == 0, "%s", err);
    /* one plane per layer when the values are the keys */
    ck_assert_uint_eq(kern_kv_block_bytes(kv), (size_t)n_layer * (v_is_k ? 1 : 2) *
                                                   (size_t)block_tokens * (size_t)kv_dim *
                                                   (type == KERN_KV_F16 ? 2 : 4));
    /* the prefill batch: sequences interleaved, each token at its position */
    int32_t *seq = malloc((size_t)total * 4), *pos = malloc((size_t)total * 4);
    int n = 0;
    for (int i = 0; i < max_len; i++)
        for (int s = 0; s < n_seq; s++)
            if (i < lens[s]) {
                seq[n] = s;
                pos[n++] = i;
            }
    for (int s = 0; s < n_seq; s++)
        ck_assert_msg(kern_kv_reserve(kv, s, lens[s], err, sizeof err) == 0, "%s", err);
    float *q = random_floats((int64_t)total * n_head * hd, 1.0f);
    float *k = random_floats((int64_t)total * kv_dim, 2.0f),
          *v = random_floats((int64_t)total * kv_dim, 1.0f);
    const float *vref = v_is_k ? k : v; /* v is passed but must not be read */
    float *dq = to_device(b, q, (size_t)total * n_head * hd * 4);
    float *dk = to_device(b, k, (size_t)total * kv_dim * 4),
          *dv = to_device(b, v, (size_t)total * kv_dim * 4);
    int32_t *dseq = to_device(b, seq, (size_t)total * 4),
            *dpos = to_device(b, pos, (size_t)total * 4);
    float *dout = dev_zeros(b, (size_t)total * n_head * hd * 4),
          *out = malloc((size_t)total * n_head * hd * 4);
    float *sink = sinks ? random_floats(n_head, 3.0f) : NULL;
    float *dsink = sinks ? to_device(b, sink, (size_t)n_head * 4) : NULL;
    const kern_kv_layout *l = kern_kv_get_layout(kv);
    kern_kv_store(b, l, layer, dk, dv, dseq, dpos, total);
    kern_attention(b, l, layer, dq, dseq, dpos, dout, total, n_head, n_head_kv, hd,
                   1.0f / sqrtf((float)hd), window, dsink);
    from_device(b, out, dout, (size_t)total * n_head * hd * 4);
    /* row of (seq s, position p) in the batch */
    int *row_of = malloc((size_t)(n_seq * max_len) * sizeof *row_of);
    for (int i = 0; i < total; i++)
        row_of[seq[i] * max_len + pos[i]] = i;
    double *sc = malloc((size_t)max_len * sizeof *sc);
    char what[200];
    int group = n_head / n_head_kv;
    /* The reference is quadratic in the positions: a long sequence is checked at a sample of
     * its tokens (the last included), short ones everywhere. */
    int stride = total > 64 ? total / 32 : 1;
    for (int i = 0; i < total; i++) {
        if (i % stride && i != total - 1) continue;
        for (int h = 0; h < n_head; h++) {
            int kh = h / group;
            const float *qq = q + ((size_t)i * n_head + h) * hd;
            double max = sinks ? sink[h] : -INFINITY, sum = 0.0;
            int lo = window > 0 && pos[i] + 1 > window ? pos[i] + 1 - window : 0;
            for (int j = lo; j <= pos[i]; j++) {
                int r = row_of[seq[i] * max_len + j];
                double d = 0.0;
                for (int c = 0; c < hd; c++)
                    d += (double)qq[c] * kv_round(k[(size_t)r * kv_dim + kh * hd + c], type);
                sc[j] = d / sqrt((double)hd);
                max = fmax(max, sc[j]);
            }
            for (int j = lo; j <= pos[i]; j++)
                sum += (sc[j] = exp(sc[j] - max));
            if (sinks) sum += exp(sink[h] - max); /* the sink's share is dropped */
            for (int c = 0; c < hd; c++) {
                double ref = 0.0;
                for (int j = lo; j <= pos[i]; j++)
                    ref +=
                        sc[j] / sum *
                        kv_round(vref[(size_t)row_of[seq[i] * max_len + j] * kv_dim + kh * hd + c],
                                 type);
                snprintf(what, sizeof what,
                         "%s blocks of %d, %d/%d heads of %d, window %d%s%s, seq %d pos %d head %d",
                         kern_kv_type_name(type), block_tokens, n_head, n_head_kv, hd, window,
                         sinks ? ", sinks" : "", v_is_k ? ", V = K" : "", seq[i], pos[i], h);
                expect_close(be, "attention", what, out[((size_t)i * n_head + h) * hd + c], ref,
                             1.0, backends[be].approx ? 2e-4 : 1e-5);
            }
        }
    }
    /* a token alone gives its bits from the batch (CPU and sim) */
    if (!backends[be].approx) {
        int i = total - 1;
        float *one = malloc((size_t)n_head * hd * 4);
        kern_attention(b, l, layer, dq + (size_t)i * n_head * hd, dseq + i, dpos + i, dout, 1,
                       n_head, n_head_kv, hd, 1.0f / sqrtf((float)hd), window, dsink);
        from_device(b, one, dout, (size_t)n_head * hd * 4);
        ck_assert_msg(memcmp(one, out + (size_t)i * n_head * hd, (size_t)n_head * hd * 4) == 0,
                      "%s attention: a token alone differs from the batch", backends[be].name);
        checked[op_index("batch_invariance")][be]++;
        free(one);
    }
    /* clearing a sequence returns its blocks; they are reused before new memory is taken */
    size_t allocated = kern_kv_allocated_bytes(kv);
    int32_t used = kern_kv_blocks_used(kv);
    kern_kv_clear(kv, 0);
    ck_assert_int_lt(kern_kv_blocks_used(kv), used);
    ck_assert_msg(kern_kv_reserve(kv, 0, lens[0], err, sizeof err) == 0, "%s", err);
    ck_assert_int_eq(kern_kv_blocks_used(kv), used);
    ck_assert_uint_eq(kern_kv_allocated_bytes(kv), allocated);
    dev_free(b, dq);
    dev_free(b, dk);
    dev_free(b, dv);
    dev_free(b, dseq);
    dev_free(b, dpos);
    dev_free(b, dout);
    dev_free(b, dsink);
    free(sink);
    kern_kv_close(&kv);
    free(seq);
    free(pos);
    free(q);
    free(k);
    free(v);
    free(out);
    free(row_of);
    free(sc);
}

static void attention_case(int be, kern_kv_type type, int block_tokens, int n_head, int n_head_kv,
                           int hd, const int *lens, int n_seq, int32_t window, bool sinks)
{
    attention_case_kv(be, type, block_tokens, n_head, n_head_kv, hd, lens, n_seq, window, sinks,
                      false);
}

START_TEST(attention_paged_kv)
{
    static const int lens[] = {1, 5, 37, 130};
    static const int long_len[] = {1500};
    for (int be = 0; be < n_backends; be++) {
        for (int t = 0; t < 2; t++) {
            kern_kv_type type = t ? KERN_KV_F32 : KERN_KV_F16;
            attention_case(be, type, 16, 8, 2, 32, lens, 4, 0, false);
            attention_case(be, type, 5, 4, 4, 64, lens, 4, 0, false); /* odd blocks, no grouping */
            attention_case(be, type, 16, 32, 4, 128, lens, 3, 0, false);   /* Qwen3-30B-A3B heads */
            attention_case(be, type, 32, 8, 8, 96, long_len, 1, 0, false); /* one long sequence */
            /* deepseek2's latent cache: 16 heads over one KV head of 512 + 64 that is also V */
            attention_case_kv(be, type, 16, 16, 1, 576, lens, 4, 0, false, true);
            attention_case_kv(be, type, 5, 4, 1, 48, lens, 4, 0, false, true);
            /* gpt-oss-20b's heads: sinks on a full layer; sinks in a window of 128 and in an
             * odd window that ends inside blocks */
            attention_case(be, type, 16, 64, 8, 64, lens, 4, 0, true);
            attention_case(be, type, 16, 64, 8, 64, lens, 4, 128, true);
            attention_case(be, type, 5, 8, 2, 32, lens, 4, 7, true);
            attention_case(be, type, 32, 8, 8, 96, long_len, 1, 100, false);
        }
    }
}
END_TEST

/* ---- what sim checks ------------------------------------------------------------------------- */

START_TEST(sim_refuses_host_pointers_and_delays_copies)
{
    char err[256];
    kern_backend *b = NULL;
    kern_open_opts o = kern_open_opts_default();
    o.kind = KERN_BACKEND_SIM;
    o.n_threads = 1;
    o.sim_device_bytes = 64 << 20;
    o.sim_link_gbps = 1.0; /* slow enough to see a copy in flight */
    ck_assert_msg(kern_open(&b, &o, err, sizeof err) == 0, "%s", err);
    float host[256], back[256];
    for (int i = 0; i < 256; i++)
        host[i] = (float)i;
    float *dev = dev_zeros(b, sizeof host);
    /* an operation given host memory fails the step, naming the argument */
    kern_add(b, dev, host, 256);
    int rc = kern_sync(b, err, sizeof err);
    ck_assert_int_eq(rc, -EFAULT);
    ck_assert_msg(strstr(err, "add") && strstr(err, "not device memory"), "%s", err);
    /* ... and running past the end of an allocation too */
    kern_silu_mul(b, dev, dev, dev, 257);
    ck_assert_int_eq(kern_sync(b, err, sizeof err), -EFAULT);
    ck_assert_msg(strstr(err, "past its allocation"), "%s", err);
    /* copies check both sides */
    ck_assert_int_eq(kern_copy(b, KERN_STREAM_COMPUTE, host, host, 16, KERN_COPY_TO_DEVICE),
                     -EFAULT);
    ck_assert_int_eq(kern_copy(b, KERN_STREAM_COMPUTE, dev, dev, 16, KERN_COPY_TO_DEVICE), -EFAULT);
    (void)kern_sync(b, err, sizeof err);
    /* a copy on the copy stream lands later; its destination is NaN until then */
    float *big_host = NULL;
    size_t big = 8 << 20;
    ck_assert_int_eq(kern_alloc(b, KERN_MEM_HOST_PINNED, big, (void **)&big_host), 0);
    memset(big_host, 0, big);
    float *big_dev = dev_zeros(b, big);
    kern_event *ev = NULL;
    ck_assert_int_eq(kern_event_create(b, &ev), 0);
    ck_assert_int_eq(kern_copy(b, KERN_STREAM_COPY, big_dev, big_host, big, KERN_COPY_TO_DEVICE),
                     0);
    ck_assert_int_eq(kern_event_record(b, ev, KERN_STREAM_COPY), 0);
    ck_assert_int_eq(kern_event_query(b, ev), 0); /* 8 MiB at 1 GB/s: milliseconds away */
    float probe = 0.0f;
    memcpy(&probe, (uint8_t *)big_dev + big - 4, 4); /* the host peeks, as a bug would */
    ck_assert(isnan(probe));
    ck_assert_int_eq(kern_stream_wait(b, KERN_STREAM_COMPUTE, ev), 0);
    ck_assert_int_eq(kern_event_query(b, ev), 1);
    from_device(b, back, big_dev, sizeof back);
    ck_assert_float_eq(back[255], 0.0f);
    kern_sim_stats st;
    ck_assert_int_eq(kern_sim_get_stats(b, &st), 0);
    ck_assert_uint_ge(st.bytes_to_device, big);
    ck_assert_uint_ge(st.link_ns, 8000000); /* 8 MiB at 1 GB/s is 8.4 ms */
    /* the allocator: freeing what is not an allocation is an error; mem_info adds up */
    size_t free_b, total_b;
    ck_assert_int_eq(kern_mem_info(b, &free_b, &total_b), 0);
    ck_assert_uint_eq(total_b, 64u << 20);
    ck_assert_uint_le(free_b, total_b - big);
    kern_free(b, KERN_MEM_DEVICE, (uint8_t *)dev + 4);
    ck_assert_int_eq(kern_sync(b, err, sizeof err), -EFAULT);
    void *too_big = NULL;
    ck_assert_int_eq(kern_alloc(b, KERN_MEM_DEVICE, 128u << 20, &too_big), -ENOMEM);
    /* an operation that fails leaves its error for the next sync, once */
    ck_assert_int_eq(kern_sim_inject_failure(b, 1, -EIO), 0);
    kern_add(b, dev, dev, 16); /* runs */
    kern_add(b, dev, dev, 16); /* fails */
    kern_add(b, dev, dev, 16); /* runs again: the failure was one launch */
    ck_assert_int_eq(kern_sync(b, err, sizeof err), -EIO);
    ck_assert_msg(strstr(err, "add failed (injected"), "%s", err);
    ck_assert_int_eq(kern_sync(b, err, sizeof err), 0);
    kern_event_destroy(b, &ev);
    dev_free(b, big_dev);
    dev_free(b, dev);
    kern_free(b, KERN_MEM_HOST_PINNED, big_host);
    ck_assert_int_eq(kern_mem_info(b, &free_b, &total_b), 0);
    ck_assert_uint_eq(free_b, total_b);
    kern_close(&b);
}
END_TEST

/* ---- the summary ------------------------------------------------------------------------------
 */

static void print_summary(void)
{
    printf("\n| operation |");
    for (int be = 0; be < n_backends; be++)
        printf(" %s |", backends[be].name);
    printf("\n|---|");
    for (int be = 0; be < n_backends; be++)
        printf("---|");
    printf("\n");
    for (int o = 0; o < MAX_OPS && op_names[o]; o++) {
        printf("| %s |", op_names[o]);
        for (int be = 0; be < n_backends; be++) {
            if (!checked[o][be])
                printf(" - |");
            else if ((!strcmp(op_names[o], "batch_invariance") && !backends[be].approx) ||
                     !strcmp(op_names[o], "moe_align") || !strcmp(op_names[o], "experts_routed"))
                printf(" bit-exact (%ld) |", checked[o][be]);
            else
                printf(" %.1e (%ld) |", worst[o][be], checked[o][be]);
        }
        printf("\n");
    }
    printf("(worst error relative to the case's scale, and the number of values checked)\n");
}

#if MOE_HAVE_CUDA
/* ---- the CUDA kernels' block readers, on the host ---------------------------------------------
 * kernels/cuda/cuda_blocks.cuh compiles for the host too: every quantised type's units weigh
 * their elements as the reference dequantiser does (the matmul's integer form: scales, mins,
 * table lookups, signs), and get_rows reads them as the reference does, bit for bit.  Without
 * a GPU this is the check that the CUDA side unpacks each type's bits right. */
static const uint32_t block_types[] = {
    KERN_T_Q8_0, KERN_T_Q4_0, KERN_T_Q4_1, KERN_T_Q5_0,   KERN_T_Q5_1,   KERN_T_Q4_K, KERN_T_Q5_K,
    KERN_T_Q6_K, KERN_T_Q2_K, KERN_T_Q3_K, KERN_T_IQ4_NL, KERN_T_IQ4_XS, KERN_T_MXFP4};
enum { N_BLOCK_TYPES = sizeof block_types / sizeof block_types[0] };

START_TEST(cuda_blocks_read_as_the_reference)
{
    uint32_t type = block_types[_i];
    const kern_type_traits *t = kern_type_info(type);
    int64_t n_blocks = 96, n = n_blocks * (int64_t)t->block_elems;
    uint8_t *q = test_random_blocks(type, n_blocks);
    float *ref = malloc((size_t)n * sizeof *ref);
    t->to_f32(q, ref, n);
    double block_mag = 0.0;
    for (int64_t i = 0; i < n; i++)
        block_mag = fmax(block_mag, fabs(ref[i]));
    for (int64_t u = 0; u < n / 32; u++) {
        float unit[32], deq[32];
        const float *r = ref + 32 * u;
        ck_assert_msg(kern_cuda_unit_values(type, q, u, unit), "%s: no CUDA block reader", t->name);
        ck_assert(kern_cuda_dequant_values(type, q, u, deq));
        double mag = 0.0;
        for (int e = 0; e < 32; e++)
            mag = fmax(mag, fabs(r[e]));
        for (int e = 0; e < 32; e++) {
            ck_assert_msg(memcmp(&deq[e], &r[e], sizeof deq[e]) == 0,
                          "%s get_rows: unit %lld element %d is %.9g, the reference %.9g", t->name,
                          (long long)u, e, deq[e], r[e]);
            /* the integer form rounds once (in double) where the reference rounds per step */
            ck_assert_msg(fabs(unit[e] - r[e]) <= 1e-5 * mag + 1e-6 * block_mag,
                          "%s matmul: unit %lld element %d weighs %.9g, the reference %.9g",
                          t->name, (long long)u, e, unit[e], r[e]);
        }
    }
    free(ref);
    free(q);
}
END_TEST

/* The CUDA matmul's batch kernels, run on the host lane by lane (kern_cuda_matmul_on_host): the
 * tensor-core kernel (its warps' steps, mma.m16n8k16 laid out as the PTX ISA defines it) must
 * give the dp4a kernel's bits, or a prompt token's result would depend on its batch; and both
 * must be the product.  Shapes: partial tiles of rows (16 a warp) and tokens (8), units that
 * leave lanes without any (8, 13, 24) or wrap past 32 (45, 48), a bias. */
START_TEST(cuda_tensor_core_kernel_gives_the_dp4a_bits)
{
    uint32_t type = block_types[_i];
    const kern_type_traits *tt = kern_type_info(type);
    static const int64_t cases[][3] = {{1, 8, 9}, {16, 13, 8}, {37, 24, 21}, {33, 45, 17}};
    for (size_t ci = 0; ci < sizeof cases / sizeof cases[0]; ci++) {
        const int64_t rows = cases[ci][0], n_tok = cases[ci][2];
        const int64_t cols =
            (cases[ci][1] * 32 + tt->block_elems - 1) / tt->block_elems * tt->block_elems;
        float *wf = NULL;
        void *w = random_weight(type, rows, cols, &wf);
        float *x = random_floats(n_tok * cols, 1.0f);
        float *bias = ci % 2 ? random_floats(rows, 1.0f) : NULL;
        size_t ny = (size_t)(n_tok * rows);
        float *y0 = malloc(ny * sizeof *y0), *y1 = malloc(ny * sizeof *y1);
        ck_assert(kern_cuda_matmul_on_host(type, w, kern_row_bytes(type, cols), rows, cols, x,
                                           n_tok, bias, false, y0));
        ck_assert(kern_cuda_matmul_on_host(type, w, kern_row_bytes(type, cols), rows, cols, x,
                                           n_tok, bias, true, y1));
        for (int64_t t = 0; t < n_tok; t++)
            for (int64_t r = 0; r < rows; r++) {
                size_t at = (size_t)(t * rows + r);
                ck_assert_msg(memcmp(&y0[at], &y1[at], sizeof *y0) == 0,
                              "%s %lldx%lld, %lld tokens: token %lld row %lld is %.9g on the "
                              "tensor cores, %.9g on dp4a",
                              tt->name, (long long)rows, (long long)cols, (long long)n_tok,
                              (long long)t, (long long)r, y1[at], y0[at]);
                double ref = bias ? bias[r] : 0.0, mag = bias ? fabs(bias[r]) : 0.0;
                for (int64_t c = 0; c < cols; c++) {
                    ref += (double)wf[r * cols + c] * x[t * cols + c];
                    mag += fabs((double)wf[r * cols + c] * x[t * cols + c]);
                }
                ck_assert_msg(fabs(y0[at] - ref) <= 1e-2 * mag + 1e-6,
                              "%s %lldx%lld: token %lld row %lld is %.9g, the product %.9g",
                              tt->name, (long long)rows, (long long)cols, (long long)t,
                              (long long)r, y0[at], ref);
            }
        free(y0);
        free(y1);
        free(bias);
        free(x);
        free(w);
        free(wf);
    }
    /* the float types have no batch kernel of this kind */
    float one = 1.0f, out = 0.0f;
    ck_assert(!kern_cuda_matmul_on_host(KERN_T_F32, &one, 4, 1, 1, &one, 1, NULL, true, &out));
}
END_TEST
#endif

int main(void)
{
    open_backends();
    Suite *s = suite_create("backend-ops");
    TCase *tc = tcase_create("ops");
    tcase_set_timeout(tc, 900);
    tcase_add_loop_test(tc, matmul_every_type, 0, N_ALL_TYPES);
    tcase_add_loop_test(tc, matmul_batched_blocks, 0, N_ALL_TYPES);
    tcase_add_test(tc, rmsnorm_shapes);
    tcase_add_test(tc, rope_modes_and_positions);
    tcase_add_test(tc, elementwise_ops);
    tcase_add_test(tc, get_rows_and_gather);
    tcase_add_test(tc, router_gatings_and_ties);
    tcase_add_test(tc, combine_and_shared_gate);
    tcase_add_loop_test(tc, experts_grouped, 0, N_ALL_TYPES);
    tcase_add_test(tc, experts_mixed_types);
    tcase_add_test(tc, experts_gpt_oss);
    tcase_add_test(tc, matmul_reuses_only_unchanged_activations);
    tcase_add_test(tc, routing_on_the_device);
    tcase_add_test(tc, moe_align_refuses_a_bad_id);
    tcase_add_test(tc, graphs_record_then_replay);
    tcase_add_test(tc, profiling_counts_each_operation);
    tcase_add_test(tc, rope_yarn);
    tcase_add_test(tc, attention_paged_kv);
    if (kind_wanted("sim")) tcase_add_test(tc, sim_refuses_host_pointers_and_delays_copies);
#if MOE_HAVE_CUDA
    tcase_add_loop_test(tc, cuda_blocks_read_as_the_reference, 0, N_BLOCK_TYPES);
    tcase_add_loop_test(tc, cuda_tensor_core_kernel_gives_the_dp4a_bits, 0, N_BLOCK_TYPES);
#endif
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    /* One process: the worst-error table is gathered across tests. */
    srunner_set_fork_status(sr, CK_NOFORK);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    print_summary();
    for (int be = 0; be < n_backends; be++)
        kern_close(&backends[be].b);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
