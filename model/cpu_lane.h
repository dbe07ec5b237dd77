/*
 * cpu_lane — a device tier's misses split between the CPU and the copy link, and the thread
 * that computes the CPU's share while the engine thread drives the device.
 *
 * Contract
 * - model_split_misses() is the choice for one layer: each miss either computed on the CPU
 *   from the host tier (t_cpu) or copied into the device tier and computed there (t_copy).  The
 *   two run at the same time, so the step waits for the later of them: the split minimises
 *   max(sum of t_cpu over the CPU's share, sum of t_copy over the rest).  The misses are sorted
 *   by t_cpu / t_copy and a prefix goes to the CPU — the order in which the fractional optimum
 *   fills the CPU — and the best prefix is taken, so the result is within the smaller of one
 *   miss's two times of the optimum (tests/unit/test_cache.c checks it against every subset).
 *   It reorders miss[] and returns that makespan.
 * - A lane is one thread with one job at a time: model_cpu_lane_post() hands it the job and
 *   returns at once; the job waits for its inputs (an event of the device backend, which a
 *   second thread may wait on) and runs kern_experts() on the CPU backend; the caller goes on
 *   with the device's work and collects the job with model_cpu_lane_join().  The job's buffers
 *   and the CPU backend belong to the lane from post to join: the caller touches none of them
 *   in between, and joins before it frees or reuses them (on its error paths too).
 * - Errors are negative errno values: open reports the thread's creation, join the event
 *   wait's failure (the experts did not run).
 */
#ifndef MOE_MODEL_CPU_LANE_H
#define MOE_MODEL_CPU_LANE_H

#include "kernels/kernels.h"

#include <stdbool.h>
#include <stdint.h>

typedef struct model_miss {
    int32_t expert;
    double t_cpu;  /* seconds to compute it on the CPU: its bytes from RAM, its tokens' work */
    double t_copy; /* seconds to copy it over the link (the device's work on it is small) */
    bool to_cpu;   /* the choice */
} model_miss;

double model_split_misses(model_miss *miss, int32_t n);

typedef struct model_cpu_job {
    kern_backend *dev; /* whose event says the inputs are on the host; NULL: they are */
    kern_event *inputs;
    kern_backend *cpu;              /* computes ... */
    const kern_ffn_expert *experts; /* ... these, as kern_experts() does */
    int n_experts;
    const float *x;
    float *out, *g, *u;
} model_cpu_job;

typedef struct model_cpu_lane model_cpu_lane;

int model_cpu_lane_open(model_cpu_lane **out);
void model_cpu_lane_post(model_cpu_lane *lane, const model_cpu_job *job);
/* seconds: how long kern_experts() took (the wait for the inputs not counted). */
int model_cpu_lane_join(model_cpu_lane *lane, double *seconds);
void model_cpu_lane_close(model_cpu_lane **lane);

#endif
