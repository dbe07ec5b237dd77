/*
 * The CUDA backend (kernels.h's contract, on one NVIDIA device).
 *
 * kern_cuda_open opens device opts->device (0 when opts is NULL) with two non-blocking
 * streams, compute and copy.  Operations run on the compute stream; copies on either; events
 * order the two.  A failure inside queued work is kept and returned by the next kern_sync.
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

#ifdef __cplusplus
}
#endif

#endif
