/*
 * The split of a layer's misses between the CPU and the link, and the CPU's lane.
 *
 * Why a prefix of the ratio order: with both resources busy at once, the best fractional
 * assignment gives the CPU the misses it is relatively best at (lowest t_cpu / t_copy) until
 * the two sums meet, splitting at most the one miss where they cross; rounding that miss
 * either way costs at most its own time on that side, and the best of all prefixes is no worse
 * than either rounding.
 *
 * Why a thread of its own: the engine thread must stay free to queue the device's work and to
 * hand each copied expert to it as its copy lands (the device tier's protocol runs on that
 * thread), while the CPU computes; the CPU backend's pool needs one caller to drive it.
 */
#include "model/cpu_lane.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <time.h>

static int by_ratio(const void *pa, const void *pb)
{
    const model_miss *a = pa, *b = pb;
    /* t_cpu / t_copy compared without dividing (both positive) */
    double l = a->t_cpu * b->t_copy, r = b->t_cpu * a->t_copy;
    if (l != r) return l < r ? -1 : 1;
    return (a->expert > b->expert) - (a->expert < b->expert);
}

double model_split_misses(model_miss *miss, int32_t n)
{
    if (n <= 0) return 0.0;
    qsort(miss, (size_t)n, sizeof *miss, by_ratio);
    double copy_all = 0.0;
    for (int32_t i = 0; i < n; i++)
        copy_all += miss[i].t_copy;
    /* prefix k to the CPU: cpu = sum of t_cpu below k, copy = sum of t_copy from k */
    double cpu = 0.0, copy = copy_all, best = copy_all, best_sum = copy_all;
    int32_t best_k = 0;
    for (int32_t k = 1; k <= n; k++) {
        cpu += miss[k - 1].t_cpu;
        copy -= miss[k - 1].t_copy;
        if (copy < 0) copy = 0; /* rounding of the running sum */
        double span = cpu > copy ? cpu : copy;
        /* among equal spans, the least total work leaves the most of both for the rest */
        if (span < best || (span == best && cpu + copy < best_sum)) {
            best = span;
            best_sum = cpu + copy;
            best_k = k;
        }
    }
    for (int32_t i = 0; i < n; i++)
        miss[i].to_cpu = i < best_k;
    return best;
}

struct model_cpu_lane {
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    model_cpu_job job;
    bool posted, done, stop;
    int rc;
    double seconds;
};

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static void *lane_main(void *arg)
{
    model_cpu_lane *l = arg;
    pthread_mutex_lock(&l->mu);
    for (;;) {
        while (!l->posted && !l->stop)
            pthread_cond_wait(&l->cv, &l->mu);
        if (l->stop) break;
        model_cpu_job job = l->job;
        l->posted = false;
        pthread_mutex_unlock(&l->mu);

        int rc = job.dev ? kern_event_wait(job.dev, job.inputs) : 0;
        double t0 = now_s();
        if (rc == 0)
            kern_experts(job.cpu, job.experts, job.n_experts, job.x, job.out, job.g, job.u);
        double s = now_s() - t0;

        pthread_mutex_lock(&l->mu);
        l->rc = rc;
        l->seconds = s;
        l->done = true;
        pthread_cond_broadcast(&l->cv);
    }
    pthread_mutex_unlock(&l->mu);
    return NULL;
}

int model_cpu_lane_open(model_cpu_lane **out)
{
    *out = NULL;
    model_cpu_lane *l = calloc(1, sizeof *l);
    if (!l) return -ENOMEM;
    l->done = true; /* nothing posted: a join returns at once */
    int rc = pthread_mutex_init(&l->mu, NULL);
    if (rc) {
        free(l);
        return -rc;
    }
    if ((rc = pthread_cond_init(&l->cv, NULL))) {
        pthread_mutex_destroy(&l->mu);
        free(l);
        return -rc;
    }
    if ((rc = pthread_create(&l->thread, NULL, lane_main, l))) {
        pthread_cond_destroy(&l->cv);
        pthread_mutex_destroy(&l->mu);
        free(l);
        return -rc;
    }
    *out = l;
    return 0;
}

void model_cpu_lane_post(model_cpu_lane *l, const model_cpu_job *job)
{
    pthread_mutex_lock(&l->mu);
    l->job = *job;
    l->posted = true;
    l->done = false;
    pthread_cond_broadcast(&l->cv);
    pthread_mutex_unlock(&l->mu);
}

int model_cpu_lane_join(model_cpu_lane *l, double *seconds)
{
    pthread_mutex_lock(&l->mu);
    while (!l->done)
        pthread_cond_wait(&l->cv, &l->mu);
    int rc = l->rc;
    if (seconds) *seconds = l->seconds;
    pthread_mutex_unlock(&l->mu);
    return rc;
}

void model_cpu_lane_close(model_cpu_lane **lp)
{
    model_cpu_lane *l = *lp;
    if (!l) return;
    pthread_mutex_lock(&l->mu);
    l->stop = true;
    pthread_cond_broadcast(&l->cv);
    pthread_mutex_unlock(&l->mu);
    pthread_join(l->thread, NULL);
    pthread_cond_destroy(&l->cv);
    pthread_mutex_destroy(&l->mu);
    free(l);
    *lp = NULL;
}
