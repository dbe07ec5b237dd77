/*
 * The staging copier: a memcpy split over a few threads.
 *
 * Copies to the device from a pageable host tier first go through the pinned ring, and one
 * thread's memcpy reads DRAM at 10-15 GB/s, below a PCIe 4 link and a third of PCIe 5's 50 GB/s.
 * The caller takes one piece itself and hands the others to the workers; it returns when all
 * are done, so the copy is as synchronous as a plain memcpy and the device tier's state machine
 * stays single-threaded.  Workers sleep on a condition variable between copies.
 */
#include "cache/cache_internal.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

enum { MIN_PIECE = 4096 }; /* below this a thread's wake-up costs more than its copy */

typedef struct worker {
    cache__stager *s;
    int index;
    pthread_t thread;
} worker;

struct cache__stager {
    pthread_mutex_t mu;
    pthread_cond_t go, done;
    worker *workers;
    int n_workers; /* started */
    /* the current copy: piece i of n_pieces, piece 0 the caller's */
    uint8_t *dst;
    const uint8_t *src;
    size_t len;
    int n_pieces;
    uint64_t gen;  /* bumped per copy: a worker runs each generation once */
    int remaining; /* workers' pieces not yet copied */
    bool stop;
};

/* Piece i of len split into n: 64-byte aligned boundaries (whole cache lines per thread). */
static void piece(size_t len, int n, int i, size_t *off, size_t *size)
{
    size_t per = ((len + (size_t)n - 1) / (size_t)n + 63) & ~(size_t)63;
    size_t a = per * (size_t)i, b = per * (size_t)(i + 1);
    a = a < len ? a : len;
    b = b < len ? b : len;
    *off = a;
    *size = b - a;
}

static void *worker_main(void *arg)
{
    worker *w = arg;
    cache__stager *s = w->s;
    uint64_t seen = 0;
    pthread_mutex_lock(&s->mu);
    for (;;) {
        while (!s->stop && (s->gen == seen || w->index + 1 >= s->n_pieces)) {
            seen = s->gen; /* a copy too small to need this worker */
            pthread_cond_wait(&s->go, &s->mu);
        }
        if (s->stop) break;
        seen = s->gen;
        size_t off, size;
        piece(s->len, s->n_pieces, w->index + 1, &off, &size);
        uint8_t *dst = s->dst;
        const uint8_t *src = s->src;
        pthread_mutex_unlock(&s->mu);
        memcpy(dst + off, src + off, size);
        pthread_mutex_lock(&s->mu);
        if (--s->remaining == 0) pthread_cond_signal(&s->done);
    }
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

int cache__stager_open(cache__stager **out, int n_threads)
{
    *out = NULL;
    if (n_threads < 1) return -EINVAL;
    cache__stager *s = calloc(1, sizeof *s);
    if (!s) return -ENOMEM;
    int rc = pthread_mutex_init(&s->mu, NULL);
    if (rc) {
        free(s);
        return -rc;
    }
    if ((rc = pthread_cond_init(&s->go, NULL))) {
        pthread_mutex_destroy(&s->mu);
        free(s);
        return -rc;
    }
    if ((rc = pthread_cond_init(&s->done, NULL))) {
        pthread_cond_destroy(&s->go);
        pthread_mutex_destroy(&s->mu);
        free(s);
        return -rc;
    }
    int n_workers = n_threads - 1; /* the caller copies a piece too */
    s->workers = calloc((size_t)(n_workers > 0 ? n_workers : 1), sizeof *s->workers);
    if (!s->workers) {
        cache__stager_close(s);
        return -ENOMEM;
    }
    for (int i = 0; i < n_workers; i++) {
        s->workers[i] = (worker){.s = s, .index = i};
        if ((rc = pthread_create(&s->workers[i].thread, NULL, worker_main, &s->workers[i]))) {
            cache__stager_close(s);
            return -rc;
        }
        s->n_workers++;
    }
    *out = s;
    return 0;
}

int cache__stager_threads(const cache__stager *s)
{
    return s ? s->n_workers + 1 : 1;
}

void cache__stage(cache__stager *s, void *dst, const void *src, size_t len)
{
    int n = s ? s->n_workers + 1 : 1;
    if ((size_t)n > len / MIN_PIECE) n = (int)(len / MIN_PIECE);
    if (n <= 1) {
        memcpy(dst, src, len);
        return;
    }
    pthread_mutex_lock(&s->mu);
    s->dst = dst;
    s->src = src;
    s->len = len;
    s->n_pieces = n;
    s->remaining = n - 1;
    s->gen++;
    pthread_cond_broadcast(&s->go);
    pthread_mutex_unlock(&s->mu);
    size_t off, size;
    piece(len, n, 0, &off, &size);
    memcpy(dst, src, size);
    pthread_mutex_lock(&s->mu);
    while (s->remaining > 0)
        pthread_cond_wait(&s->done, &s->mu);
    pthread_mutex_unlock(&s->mu);
}

void cache__stager_close(cache__stager *s)
{
    if (!s) return;
    pthread_mutex_lock(&s->mu);
    s->stop = true;
    pthread_cond_broadcast(&s->go);
    pthread_mutex_unlock(&s->mu);
    for (int i = 0; i < s->n_workers; i++)
        pthread_join(s->workers[i].thread, NULL);
    free(s->workers);
    pthread_cond_destroy(&s->done);
    pthread_cond_destroy(&s->go);
    pthread_mutex_destroy(&s->mu);
    free(s);
}
