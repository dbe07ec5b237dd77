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

#endif
