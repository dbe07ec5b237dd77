/*
 * A fixed pool of worker threads for data-parallel kernels.
 *
 * The engine issues hundreds of small operations per token (each expert's three matmuls,
 * attention, norms), so the cost of handing out work matters more than anything else here,
 * and the machine may be shared (two test processes on two cores, a server next to a
 * benchmark).  Two rules follow:
 * - Work is claimed, not assigned: a job is cut into a few contiguous chunks per thread and
 *   every thread, the caller included, takes chunks from one atomic counter.  A worker that
 *   the OS has not scheduled yet simply finds nothing left; the caller never waits for a
 *   thread that has not started, only for chunks already in progress.
 * - Waiting spins briefly (the next job is usually microseconds away), then yields, then
 *   sleeps on a condition variable, so an idle pool costs nothing and an overloaded machine
 *   does not lose whole time slices to spinning threads.
 *
 * The claim word carries the job's generation in its high half and the job's chunk count
 * next to the next chunk, so a worker's bound check and its claim read one atomic value: a
 * worker still finishing an old job can never compare against the chunk count of the job the
 * caller is preparing (whose fields are written before its generation is published), nor claim
 * a chunk of a job with the parameters of another.
 */
#include "kernels/cpu/cpu_internal.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define cpu_relax() _mm_pause()
#else
#define cpu_relax() ((void)0)
#endif

enum {
    SPIN_ITERATIONS = 2048, /* ~50 us of pause before a worker starts yielding */
    YIELD_ITERATIONS = 64,  /* then sched_yield() this many times before sleeping */
    CHUNKS_PER_THREAD = 4,
};

typedef struct worker {
    kern__pool *pool;
    int index;
    pthread_t thread;
} worker;

struct kern__pool {
    int n_threads;
    worker *workers; /* n_threads - 1 of them: thread 0 is the caller */
    int n_started;

    /* The job of the current generation; written by the caller before it publishes the
     * generation, stable until every chunk of that generation is done. */
    kern__pool_fn fn;
    void *ctx;
    int64_t n_items;
    int64_t chunk_items;
    uint32_t n_chunks;

    /* The two words every thread writes, each on a cache line of its own: a claim must not
     * wait for the line that finishing threads are bumping, nor for the job fields above. */
    _Alignas(64) atomic_uint_fast64_t claim; /* generation << 32 | n_chunks << 16 | next chunk */
    _Alignas(64) atomic_uint done;           /* chunks finished in the current generation */
    _Alignas(64) atomic_bool stop;

    pthread_mutex_t mutex;
    pthread_cond_t wake;
    atomic_int sleepers;
};

/* Runs chunks of generation `gen` until none is left. */
static void work(kern__pool *pool, uint32_t gen, int thread_index)
{
    uint_fast64_t cur = atomic_load_explicit(&pool->claim, memory_order_acquire);
    for (;;) {
        if ((uint32_t)(cur >> 32) != gen) return;
        uint32_t chunk = (uint32_t)(cur & 0xffff), n_chunks = (uint32_t)((cur >> 16) & 0xffff);
        if (chunk >= n_chunks) return;
        if (!atomic_compare_exchange_weak_explicit(&pool->claim, &cur, cur + 1,
                                                   memory_order_acq_rel, memory_order_acquire))
            continue;
        int64_t begin = (int64_t)chunk * pool->chunk_items;
        int64_t end = begin + pool->chunk_items;
        if (end > pool->n_items) end = pool->n_items;
        pool->fn(pool->ctx, begin, end, thread_index);
        atomic_fetch_add_explicit(&pool->done, 1, memory_order_release);
        cur = atomic_load_explicit(&pool->claim, memory_order_acquire);
    }
}

static uint32_t current_gen(kern__pool *pool)
{
    return (uint32_t)(atomic_load_explicit(&pool->claim, memory_order_acquire) >> 32);
}

static void *worker_main(void *arg)
{
    worker *self = arg;
    kern__pool *pool = self->pool;
    uint32_t seen = 0;
    for (;;) {
        uint32_t gen = current_gen(pool);
        for (int i = 0; gen == seen && i < SPIN_ITERATIONS + YIELD_ITERATIONS; i++) {
            if (i < SPIN_ITERATIONS)
                cpu_relax();
            else
                sched_yield();
            gen = current_gen(pool);
        }
        if (gen == seen) {
            pthread_mutex_lock(&pool->mutex);
            atomic_fetch_add(&pool->sleepers, 1);
            /* seq_cst pairs with the caller's store of the claim word and its load of
             * `sleepers`: one of the two sides always sees the other. */
            while ((gen = (uint32_t)(atomic_load(&pool->claim) >> 32)) == seen &&
                   !atomic_load(&pool->stop))
                pthread_cond_wait(&pool->wake, &pool->mutex);
            atomic_fetch_sub(&pool->sleepers, 1);
            pthread_mutex_unlock(&pool->mutex);
        }
        if (atomic_load(&pool->stop)) break;
        seen = gen;
        work(pool, gen, self->index);
    }
    return NULL;
}

int kern__pool_create(kern__pool **out, int n_threads)
{
    *out = NULL;
    if (n_threads < 1) return -EINVAL;
    kern__pool *pool = aligned_alloc(_Alignof(kern__pool), sizeof *pool); /* its cache lines */
    if (!pool) return -ENOMEM;
    memset(pool, 0, sizeof *pool);
    pool->n_threads = n_threads;
    atomic_init(&pool->claim, 0);
    atomic_init(&pool->done, 0);
    atomic_init(&pool->stop, false);
    atomic_init(&pool->sleepers, 0);
    int rc = pthread_mutex_init(&pool->mutex, NULL);
    if (rc) {
        free(pool);
        return -rc;
    }
    rc = pthread_cond_init(&pool->wake, NULL);
    if (rc) {
        pthread_mutex_destroy(&pool->mutex);
        free(pool);
        return -rc;
    }
    if (n_threads > 1) {
        pool->workers = calloc((size_t)n_threads - 1, sizeof *pool->workers);
        if (!pool->workers) {
            kern__pool_destroy(&pool);
            return -ENOMEM;
        }
    }
    for (int i = 1; i < n_threads; i++) {
        worker *w = &pool->workers[i - 1];
        w->pool = pool;
        w->index = i;
        rc = pthread_create(&w->thread, NULL, worker_main, w);
        if (rc) {
            kern__pool_destroy(&pool);
            return -rc;
        }
        pool->n_started++;
    }
    *out = pool;
    return 0;
}

void kern__pool_destroy(kern__pool **poolp)
{
    kern__pool *pool = *poolp;
    if (!pool) return;
    pthread_mutex_lock(&pool->mutex);
    atomic_store(&pool->stop, true);
    pthread_cond_broadcast(&pool->wake);
    pthread_mutex_unlock(&pool->mutex);
    for (int i = 0; i < pool->n_started; i++)
        pthread_join(pool->workers[i].thread, NULL);
    pthread_cond_destroy(&pool->wake);
    pthread_mutex_destroy(&pool->mutex);
    free(pool->workers);
    free(pool);
    *poolp = NULL;
}

int kern__pool_size(const kern__pool *pool)
{
    return pool->n_threads;
}

void kern__pool_run(kern__pool *pool, kern__pool_fn fn, void *ctx, int64_t n_items, int64_t grain)
{
    kern__pool_run_chunks(pool, fn, ctx, n_items, grain, CHUNKS_PER_THREAD);
}

void kern__pool_run_chunks(kern__pool *pool, kern__pool_fn fn, void *ctx, int64_t n_items,
                           int64_t grain, int chunks_per_thread)
{
    if (n_items <= 0) return;
    if (grain < 1) grain = 1;
    int64_t n_groups = (n_items + grain - 1) / grain;
    /* Small jobs are not worth a hand-off: run them here. */
    if (pool->n_threads == 1 || n_groups < 2) {
        fn(ctx, 0, n_items, 0);
        return;
    }
    int64_t want = (int64_t)pool->n_threads * (chunks_per_thread > 0 ? chunks_per_thread : 1);
    if (want > n_groups) want = n_groups;
    if (want > 0xffff) want = 0xffff; /* the claim word's chunk fields are 16 bits */
    int64_t groups_per_chunk = (n_groups + want - 1) / want;
    pool->fn = fn;
    pool->ctx = ctx;
    pool->n_items = n_items;
    pool->chunk_items = groups_per_chunk * grain;
    pool->n_chunks = (uint32_t)((n_items + pool->chunk_items - 1) / pool->chunk_items);
    atomic_store_explicit(&pool->done, 0, memory_order_relaxed);
    uint32_t gen = current_gen(pool) + 1;
    atomic_store(&pool->claim, (uint_fast64_t)gen << 32 | (uint_fast64_t)pool->n_chunks << 16);
    if (atomic_load(&pool->sleepers) > 0) {
        pthread_mutex_lock(&pool->mutex);
        pthread_cond_broadcast(&pool->wake);
        pthread_mutex_unlock(&pool->mutex);
    }
    work(pool, gen, 0);
    for (int i = 0; atomic_load_explicit(&pool->done, memory_order_acquire) < pool->n_chunks; i++) {
        if (i < SPIN_ITERATIONS)
            cpu_relax();
        else
            sched_yield();
    }
}
