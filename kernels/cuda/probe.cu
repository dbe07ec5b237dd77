/*
 * CUDA device probe.  The engine asks once at start-up whether a device is usable; every
 * failure mode (no driver, no device, a driver older than the runtime) means "run on the
 * CPU", so each is turned into a count of 0 and a reason for the log line.
 */
#include <cstdio>
#include <cuda_runtime.h>

extern "C" {
#include "kernels/kernels.h"
}

extern "C" int kern_cuda_probe(char *msg, size_t msg_size)
{
    int count = 0;
    cudaError_t rc = cudaGetDeviceCount(&count);
    if (rc != cudaSuccess) {
        snprintf(msg, msg_size, "no CUDA device (%s: %s)", cudaGetErrorName(rc),
                 cudaGetErrorString(rc));
        (void)cudaGetLastError(); /* clear the sticky error so later calls start clean */
        return 0;
    }
    if (count == 0) {
        snprintf(msg, msg_size, "no CUDA device (the driver reports none)");
        return 0;
    }
    cudaDeviceProp prop;
    rc = cudaGetDeviceProperties(&prop, 0);
    if (rc != cudaSuccess) {
        snprintf(msg, msg_size, "CUDA device 0 unusable (%s)", cudaGetErrorString(rc));
        return 0;
    }
    snprintf(msg, msg_size, "%d CUDA device(s); device 0: %s, %.1f GiB, compute %d.%d", count,
             prop.name, (double)prop.totalGlobalMem / (1024.0 * 1024.0 * 1024.0), prop.major,
             prop.minor);
    return count;
}
