/*
 * The CUDA backend (kernels.h's contract, on one NVIDIA device).
 *
 * kern_cuda_open opens device opts->device (0 when opts is NULL) with two non-blocking
 * streams, compute and copy.  Operations run on the compute stream; copies on either; events
 * order the two.  A failure inside queued work is kept and returned by the next kern_sync.
 * Graphs (kern_capture_begin) are stream captures of the compute stream in relaxed mode,
 * instantiated once; a scratch buffer that grows afterwards makes them stale.
 * Close it with kern_close, after every allocation and placement is returned.
 *
 * Returns 0, or -ENODEV with a one-line reason in err when there is no driver, no such
 * device, or the device cannot run this build's kernels (they are built for sm_80, sm_89,
 * sm_90 and PTX for later chips); -ENOMEM / -EIO when setting up the streams fails.
 * Builds without CUDA link kernels/cuda/none.c, whose kern_cuda_open always gives -ENODEV.
 */
#ifndef MOE_KERNELS_CUDA_H
#define MOE_KERNELS_CUDA_H

#ifdef __cplusplus
extern "C" {
#endif

#include "kernels/kernels.h"

int kern_cuda_open(kern_backend **out, const kern_open_opts *opts, char *err, size_t err_size);

/* The CUDA kernels' own reading of weight blocks, run on the host (kernels/cuda/cuda_blocks.cuh
 * is compiled for both), so that machines without a GPU test it against the reference
 * dequantisers.  Unit u of `row` (its elements 32u .. 32u + 31) of a quantised `type`:
 * kern_cuda_unit_values as the matmul's integer form weighs them (da * scale * q + db * min,
 * in double), kern_cuda_dequant_values as get_rows writes them.  False for a type the CUDA
 * kernels do not read as blocks (the float types), and always in builds without CUDA. */
bool kern_cuda_unit_values(uint32_t type, const void *row, int64_t u, float out[32]);
bool kern_cuda_dequant_values(uint32_t type, const void *row, int64_t u, float out[32]);

/* Which kernel runs a CUDA backend's batches of quantised weights, and why: the int8 tensor
 * cores, or the dp4a kernel (turned off by kern_open_opts.no_tensor_cores, or a tensor-core
 * kernel that failed its check at open against the dp4a one).  NULL for other backends. */
const char *kern_cuda_matmul_note(const kern_backend *b);

/* The matmul's batch kernels run on the host, lane by lane over the very steps the device runs
 * (cuda_blocks.cuh's and the kernels' CUDA__HD functions), the tensor-core fragments laid out as
 * the PTX ISA defines mma.m16n8k16: y [n_tokens][n_rows] = w x (+ bias), x quantised as the
 * device quantises it, in the dp4a kernel's order (tensor_cores false) or the tensor-core
 * kernel's.  Both must give the same bits.  False for the float types, and always in builds
 * without CUDA. */
bool kern_cuda_matmul_on_host(uint32_t type, const void *w, size_t row_bytes, int64_t n_rows,
                              int64_t n_cols, const float *x, int64_t n_tokens, const float *bias,
                              bool tensor_cores, float *y);

#ifdef __cplusplus
}
#endif

#endif
