/* Stand-in for builds without CUDA (-Dcuda=disabled or no nvcc): there is never a device. */
#include "kernels/kernels.h"

#include <stdio.h>

int kern_cuda_probe(char *msg, size_t msg_size)
{
    snprintf(msg, msg_size, "no CUDA device (this build has no CUDA backend)");
    return 0;
}
