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

#ifdef __cplusplus
}
#endif

#endif
