/*
 * bench_kernels — single-thread, in-cache throughput of the quantised dot products at every
 * instruction-set level this CPU has, as a markdown table.
 *
 *   bench_kernels [--reps N] [--kib K] [--cols N] [--tokens T] [--type NAME]
 *
 * For each type a matrix of about K KiB (default 256: inside L2, so the kernel, not memory,
 * is measured) is dotted row by row with one quantised activation vector (decode: GB/s of
 * weight bytes) and with T (default 8, the matmul's token block; dot_multi, prefill: GB/s of
 * weight bytes x T tokens, i.e. the rate of weight-activation products in bytes).  Best of N
 * repetitions, because other processes share the machine.  Weights are random bytes with sane block
 * scales.
 */
#include "kernels/cpu/cpu.h"
#include "kernels/cpu/quant_blocks.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;

static uint32_t rng_next(void)
{
    rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
    return (uint32_t)(rng_state >> 33);
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Overwrites the f16 scales of every block with small positive values, so that the float work
 * is ordinary (no infinities or NaNs from random bits). */
static void sane_scales(uint32_t type, uint8_t *p, int64_t n_blocks, size_t block_bytes)
{
    kern_half s = kern_f32_to_f16(0.01f);
    for (int64_t i = 0; i < n_blocks; i++) {
        uint8_t *b = p + (size_t)i * block_bytes;
        switch (type) {
        case KERN_T_Q6_K:
            memcpy(b + offsetof(block_q6_K, d), &s, 2);
            break;
        case KERN_T_Q2_K:
            memcpy(b + offsetof(block_q2_K, d), &s, 2);
            memcpy(b + offsetof(block_q2_K, dmin), &s, 2);
            break;
        case KERN_T_Q3_K:
            memcpy(b + offsetof(block_q3_K, d), &s, 2);
            break;
        case KERN_T_MXFP4:
            b[0] = 120; /* an E8M0 exponent: half-scale 2^-8 */
            break;
        case KERN_T_Q4_1:
        case KERN_T_Q5_1:
        case KERN_T_Q4_K:
        case KERN_T_Q5_K:
            memcpy(b + 2, &s, 2); /* d, dmin / m */
            /* fall through */
        default:
            memcpy(b, &s, 2);
            break;
        }
    }
}

int main(int argc, char **argv)
{
    int reps = 20;
    int64_t kib = 256, cols = 4096;
    int nt = 8;
    const char *only = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--reps") && i + 1 < argc)
            reps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--kib") && i + 1 < argc)
            kib = atoll(argv[++i]);
        else if (!strcmp(argv[i], "--cols") && i + 1 < argc)
            cols = atoll(argv[++i]);
        else if (!strcmp(argv[i], "--tokens") && i + 1 < argc)
            nt = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--type") && i + 1 < argc)
            only = argv[++i];
        else {
            fprintf(stderr,
                    "usage: %s [--reps N] [--kib K] [--cols N] [--tokens T] [--type NAME]\n",
                    argv[0]);
            return 2;
        }
    }
    if (reps < 1 || kib < 1 || cols < 256 || cols % 256 || nt < 1 || nt > 64) {
        fprintf(stderr, "bench_kernels: need reps >= 1, kib >= 1, cols a multiple of 256, "
                        "1 <= tokens <= 64\n");
        return 2;
    }
    static const uint32_t types[] = {KERN_T_Q8_0, KERN_T_Q4_0, KERN_T_Q4_1,   KERN_T_Q5_0,
                                     KERN_T_Q5_1, KERN_T_Q4_K, KERN_T_Q5_K,   KERN_T_Q6_K,
                                     KERN_T_Q2_K, KERN_T_Q3_K, KERN_T_IQ4_NL, KERN_T_IQ4_XS,
                                     KERN_T_MXFP4};
    kern_isa best = kern_cpu_isa();
    printf("CPU level: %s; %lld KiB per matrix, %lld columns, best of %d\n\n", kern_isa_name(best),
           (long long)kib, (long long)cols, reps);
    printf("| type | level | dot GB/s | dot_multi x%d GB/s |\n|---|---|---|---|\n", nt);
    for (size_t ti = 0; ti < sizeof types / sizeof types[0]; ti++) {
        const kern_type_traits *t = kern_type_info(types[ti]);
        if (only && strcasecmp(only, t->name)) continue;
        const kern_type_traits *at = kern_type_info(t->act_type);
        const kern_cpu_type *k = kern_cpu_type_kernels(types[ti]);
        size_t row_bytes = kern_row_bytes(types[ti], cols);
        int64_t rows = kib * 1024 / (int64_t)row_bytes;
        if (rows < 1) rows = 1;
        size_t w_bytes = row_bytes * (size_t)rows;
        size_t x_row = kern_row_bytes(t->act_type, cols);
        uint8_t *w = malloc(w_bytes), *xq = malloc(x_row * (size_t)nt);
        float *x = malloc((size_t)cols * (size_t)nt * sizeof *x), out[64];
        if (!w || !xq || !x) {
            fprintf(stderr, "bench_kernels: %s\n", strerror(ENOMEM));
            return 1;
        }
        for (size_t i = 0; i < w_bytes; i++)
            w[i] = (uint8_t)rng_next();
        sane_scales(types[ti], w, (int64_t)(w_bytes / t->block_bytes), t->block_bytes);
        for (int64_t i = 0; i < cols * nt; i++)
            x[i] = (float)((int)(rng_next() % 2001) - 1000) / 1000.0f;
        for (int j = 0; j < nt; j++)
            at->from_f32(x + j * cols, xq + j * x_row, cols);
        volatile float sink = 0.0f;
        for (int level = 0; level < KERN_ISA_COUNT && level <= (int)best; level++) {
            if (!k->dot[level]) continue;
            double best_1 = 1e30, best_4 = 1e30;
            for (int r = 0; r < reps; r++) {
                double t0 = now_s();
                float s = 0.0f;
                for (int64_t i = 0; i < rows; i++)
                    s += k->dot[level](w + (size_t)i * row_bytes, xq, cols);
                double t1 = now_s();
                for (int64_t i = 0; i < rows; i++) {
                    k->dot_multi[level](w + (size_t)i * row_bytes, xq, x_row, nt, cols, out);
                    s += out[0];
                }
                double t2 = now_s();
                sink += s;
                if (t1 - t0 < best_1) best_1 = t1 - t0;
                if (t2 - t1 < best_4) best_4 = t2 - t1;
            }
            printf("| %s | %s | %.1f | %.1f |\n", t->name, kern_isa_name(level),
                   (double)w_bytes / best_1 * 1e-9, nt * (double)w_bytes / best_4 * 1e-9);
        }
        (void)sink;
        free(w);
        free(xq);
        free(x);
    }
    return 0;
}
