/*
 * kernels/sim — a simulated device: what CI has instead of a GPU.
 *
 * Contract
 * - The operations are the CPU backend's (bit-identical results), but "device" memory is a
 *   separate arena reserved at open, and every operation first checks that each pointer it is
 *   given, over the whole extent it will touch, lies in a live device allocation.  A host
 *   pointer handed to an operation, or device memory handed to a copy as its host side, is an
 *   error kept for the next kern_sync (or returned at once by kern_copy), never a silent success.
 * - Copies on KERN_STREAM_COPY complete on a thread of their own after the time a link of the
 *   configured bandwidth and latency would take (pinned or registered host memory at
 *   sim_link_gbps, pageable at sim_pageable_gbps), one after another as on one copy engine.
 *   Their destination is filled with NaN bytes when they are queued, so work that reads it
 *   before waiting for the copy's event sees garbage, as it would on a GPU.  Operations and
 *   compute-stream copies run on the calling thread, in order, with the same delay for copies.
 * - Graphs: a capture records each operation and compute-stream copy (with copies of the host
 *   structs it was given) instead of running it, and a launch runs the recording in order with
 *   every check, so a replayed step is bit for bit the step run plainly when its inputs were
 *   where the recording says.  A kern_sync or kern_event_wait while capturing fails the
 *   capture, as it would on CUDA.
 * - Events recorded on the copy stream complete when the copies queued before them have;
 *   those recorded on the compute stream are complete at once.  kern_stream_wait of the
 *   compute stream on a copy event blocks the caller until the copy is done.
 */
#ifndef MOE_KERNELS_SIM_H
#define MOE_KERNELS_SIM_H

#include "kernels/kernels.h"

int kern_sim_open(kern_backend **out, const kern_open_opts *opts, char *err, size_t err_size);

/* Bytes copied and the simulated link time spent, since open (tests and benchmarks). */
typedef struct kern_sim_stats {
    uint64_t copies;
    uint64_t bytes_to_device;
    uint64_t bytes_to_host;
    uint64_t link_ns;
    uint64_t device_bytes_in_use;
    uint64_t device_bytes_peak;
    uint64_t host_waits; /* kern_sync and kern_event_wait calls: where the host waited on it */
} kern_sim_stats;

int kern_sim_get_stats(const kern_backend *b, kern_sim_stats *out);

/* Fault injection for tests: the operation `after_ops` operations from now (0: the next one)
 * fails with `code` (a negative errno) instead of running, as a kernel launch that fails on a
 * GPU would: the error is kept for the next kern_sync.  A negative after_ops cancels an
 * injection not yet reached (code ignored).  -EINVAL for another backend. */
int kern_sim_inject_failure(kern_backend *b, int64_t after_ops, int code);

/* Makes every graph captured so far stale (graph_launch gives -ESTALE), as a CUDA backend's
 * scratch moving would: tests of the caller's recapture.  -EINVAL for another backend. */
int kern_sim_stale_graphs(kern_backend *b);

#endif
