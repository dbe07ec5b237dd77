/* Stand-in for builds without CUDA (-Dcuda=disabled or no nvcc): there is never a device. */
#include "kernels/cuda/cuda.h"
#include "kernels/kernels.h"

#include <errno.h>
#include <stdio.h>

int kern_cuda_probe(char *msg, size_t msg_size)
{
    snprintf(msg, msg_size, "no CUDA device (this build has no CUDA backend)");
    return 0;
}

int kern_cuda_open(kern_backend **out, const kern_open_opts *opts, char *err, size_t err_size)
{
    (void)opts;
    *out = NULL;
    if (err && err_size) snprintf(err, err_size, "this build has no CUDA backend");
    return -ENODEV;
}

bool kern_cuda_unit_values(uint32_t type, const void *row, int64_t u, float out[32])
{
    (void)type, (void)row, (void)u, (void)out;
    return false;
}

bool kern_cuda_dequant_values(uint32_t type, const void *row, int64_t u, float out[32])
{
    (void)type, (void)row, (void)u, (void)out;
    return false;
}

const char *kern_cuda_matmul_note(const kern_backend *b)
{
    (void)b;
    return NULL;
}

bool kern_cuda_matmul_on_host(uint32_t type, const void *w, size_t row_bytes, int64_t n_rows,
                              int64_t n_cols, const float *x, int64_t n_tokens, const float *bias,
                              bool tensor_cores, float *y)
{
    (void)type, (void)w, (void)row_bytes, (void)n_rows, (void)n_cols, (void)x, (void)n_tokens;
    (void)bias, (void)tensor_cores, (void)y;
    return false;
}
