/*
 * Continuous batching.
 *
 * One engine thread owns the model context and loops: retire what was cancelled, admit waiting
 * requests into free KV slots, build one batch (a decode token per generating sequence, then
 * prompt chunks in admission order while the step has room), run the forward pass, and hand
 * each sequence that got logits to its sample/emit callbacks.  Decode tokens go first because
 * they are what users are waiting on between tokens; prompt chunks fill the rest of the step, so
 * a 4 000-token prompt costs running streams a slower step or two instead of a frozen second.
 *
 * The lock protects the waiting queue, the cancel flags and the statistics; the running table
 * is written only by the engine thread (under the lock, so that cancel can find a request
 * wherever it is).  Callbacks run with the lock released.
 */
#include "engine/scheduler.h"

#include <assert.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum { STEP_RETRIES = 3 };

typedef struct sched_req {
    struct sched_req *next; /* waiting queue link */
    uint64_t id;
    int32_t *prompt;
    int32_t n_prompt;
    int32_t max_tokens;
    const scheduler_seq_ops *ops;
    void *user;
    bool cancelled;
    /* engine-thread state once admitted */
    bool admission_told; /* ops->admitted was called */
    int32_t slot;
    int32_t n_past; /* positions filled in the KV slot */
    int32_t n_generated;
    int32_t last_token; /* the token to feed next once the prompt is consumed */
    int32_t batch_row;  /* logits row of this step, -1 when none */
    /* prefix reuse: the token at every position fed so far, the blocks published (or attached)
     * and the chained key of the last of them */
    int32_t *hist;
    int32_t n_published;
    int32_t n_cached; /* prompt tokens attached from cached blocks */
    uint64_t key;
} sched_req;

struct scheduler {
    model *m;
    model_ctx *ctx;
    scheduler_opts opts;
    int32_t n_vocab;

    pthread_mutex_t lock;
    pthread_cond_t wake;
    pthread_t thread;
    bool thread_started;
    bool stopping;
    /* the model file changed under the server: every request fails with this (under lock) */
    char broken[320];

    sched_req *wait_head, *wait_tail;
    int32_t n_waiting;
    sched_req **running; /* [max_running], admission order, NULL-free prefix of n_running */
    int32_t n_running;
    uint64_t next_id;
    scheduler_stats stats;

    /* batch scratch, engine thread only */
    uint64_t *keys; /* a prompt's block keys, n_ctx / block_tokens + 1 */
    int32_t block_tokens;
    int32_t *b_token, *b_pos, *b_seq;
    uint8_t *b_want;
    float *logits;
    char err[512];
};

scheduler_opts scheduler_opts_default(void)
{
    return (scheduler_opts){
        .max_running = 8,
        .max_tokens_per_step = 512,
        .prefill_chunk = 256,
        .max_waiting = 64,
        .n_ctx = 0,
        .prefix_cache = true,
    };
}

static void req_free(sched_req *r)
{
    if (!r) return;
    free(r->prompt);
    free(r->hist);
    free(r);
}

static void *engine_main(void *arg);

int scheduler_open(scheduler **out, model *m, const scheduler_opts *opts, char *err,
                   size_t err_size)
{
    *out = NULL;
    scheduler_opts o = opts ? *opts : scheduler_opts_default();
    if (o.max_running < 1 || o.max_tokens_per_step < o.max_running || o.prefill_chunk < 1 ||
        o.max_waiting < 0 || o.n_ctx < 0) {
        snprintf(err, err_size,
                 "scheduler: need max_running >= 1, max_tokens_per_step >= max_running (%d), "
                 "prefill_chunk >= 1, max_waiting >= 0 (got %d, %d, %d, %d)",
                 o.max_running, o.max_running, o.max_tokens_per_step, o.prefill_chunk,
                 o.max_waiting);
        return -EINVAL;
    }
    scheduler *s = calloc(1, sizeof *s);
    if (!s) goto oom;
    s->m = m;
    s->opts = o;
    s->n_vocab = model_params(m)->n_vocab;
    s->next_id = 1;
    model_ctx_opts co = {.n_seq = o.max_running,
                         .n_ctx = o.n_ctx,
                         .kv_type = o.kv_type,
                         .kv_max_cached_blocks = o.prefix_cache_blocks,
                         .no_graphs = o.no_graphs};
    int rc = model_ctx_create(&s->ctx, m, &co, err, err_size);
    if (rc) {
        free(s);
        return rc;
    }
    s->opts.n_ctx = model_ctx_n_ctx(s->ctx);
    s->block_tokens = model_ctx_block_tokens(s->ctx);
    s->keys = malloc(((size_t)s->opts.n_ctx / (size_t)s->block_tokens + 1) * sizeof *s->keys);
    size_t nt = (size_t)o.max_tokens_per_step;
    s->running = calloc((size_t)o.max_running, sizeof *s->running);
    s->b_token = malloc(nt * sizeof *s->b_token);
    s->b_pos = malloc(nt * sizeof *s->b_pos);
    s->b_seq = malloc(nt * sizeof *s->b_seq);
    s->b_want = malloc(nt);
    s->logits = malloc((size_t)o.max_running * (size_t)s->n_vocab * sizeof *s->logits);
    if (!s->running || !s->keys || !s->b_token || !s->b_pos || !s->b_seq || !s->b_want ||
        !s->logits)
        goto fail_oom;
    if (pthread_mutex_init(&s->lock, NULL)) goto fail_oom;
    if (pthread_cond_init(&s->wake, NULL)) {
        pthread_mutex_destroy(&s->lock);
        goto fail_oom;
    }
    rc = pthread_create(&s->thread, NULL, engine_main, s);
    if (rc) {
        snprintf(err, err_size, "scheduler: cannot start the engine thread: %s", strerror(rc));
        pthread_cond_destroy(&s->wake);
        pthread_mutex_destroy(&s->lock);
        s->thread_started = false;
        scheduler_close(&s);
        return -rc;
    }
    s->thread_started = true;
    *out = s;
    return 0;

fail_oom:
    model_ctx_destroy(&s->ctx);
    free(s->running);
    free(s->keys);
    free(s->b_token);
    free(s->b_pos);
    free(s->b_seq);
    free(s->b_want);
    free(s->logits);
    free(s);
oom:
    snprintf(err, err_size, "scheduler: out of memory");
    return -ENOMEM;
}

void scheduler_close(scheduler **sp)
{
    scheduler *s = *sp;
    if (!s) return;
    *sp = NULL;
    if (s->thread_started) {
        pthread_mutex_lock(&s->lock);
        s->stopping = true;
        pthread_cond_signal(&s->wake);
        pthread_mutex_unlock(&s->lock);
        pthread_join(s->thread, NULL);
        pthread_cond_destroy(&s->wake);
        pthread_mutex_destroy(&s->lock);
    }
    model_ctx_destroy(&s->ctx);
    free(s->running);
    free(s->keys);
    free(s->b_token);
    free(s->b_pos);
    free(s->b_seq);
    free(s->b_want);
    free(s->logits);
    free(s);
}

int scheduler_submit(scheduler *s, const int32_t *prompt, int32_t n_prompt, int32_t max_tokens,
                     const scheduler_seq_ops *ops, void *user, uint64_t *id, char *err,
                     size_t err_size)
{
    if (!prompt || n_prompt < 1 || max_tokens < 1 || !ops || !ops->sample || !ops->emit ||
        !ops->done) {
        snprintf(err, err_size,
                 "scheduler: a request needs a non-empty prompt, max_tokens >= 1 "
                 "and all three callbacks");
        return -EINVAL;
    }
    for (int32_t i = 0; i < n_prompt; i++) {
        if (prompt[i] < 0 || prompt[i] >= s->n_vocab) {
            snprintf(err, err_size, "prompt token %d at index %d is outside the vocabulary (%d)",
                     prompt[i], i, s->n_vocab);
            return -EINVAL;
        }
    }
    if ((int64_t)n_prompt + max_tokens > s->opts.n_ctx) {
        snprintf(err, err_size,
                 "the prompt (%d tokens) plus max_tokens (%d) exceed the context length (%d)",
                 n_prompt, max_tokens, s->opts.n_ctx);
        return -E2BIG;
    }
    sched_req *r = calloc(1, sizeof *r);
    if (r) r->prompt = malloc((size_t)n_prompt * sizeof *r->prompt);
    if (r) r->hist = malloc(((size_t)n_prompt + (size_t)max_tokens) * sizeof *r->hist);
    if (!r || !r->prompt || !r->hist) {
        req_free(r);
        snprintf(err, err_size, "scheduler: out of memory");
        return -ENOMEM;
    }
    memcpy(r->prompt, prompt, (size_t)n_prompt * sizeof *prompt);
    memcpy(r->hist, prompt, (size_t)n_prompt * sizeof *prompt);
    r->n_prompt = n_prompt;
    r->max_tokens = max_tokens;
    r->ops = ops;
    r->user = user;
    r->slot = -1;
    r->batch_row = -1;

    pthread_mutex_lock(&s->lock);
    int rc = 0;
    if (s->stopping) {
        snprintf(err, err_size, "the server is shutting down");
        rc = -ESHUTDOWN;
    } else if (s->broken[0]) {
        snprintf(err, err_size, "%s", s->broken);
        rc = -EIO;
    } else if (s->n_waiting >= s->opts.max_waiting && s->n_running >= s->opts.max_running) {
        snprintf(err, err_size, "the request queue is full (%d waiting)", s->n_waiting);
        rc = -EAGAIN;
    } else {
        r->id = s->next_id++;
        if (s->wait_tail)
            s->wait_tail->next = r;
        else
            s->wait_head = r;
        s->wait_tail = r;
        s->n_waiting++;
        s->stats.waiting = (uint32_t)s->n_waiting;
        if (id) *id = r->id;
        pthread_cond_signal(&s->wake);
    }
    pthread_mutex_unlock(&s->lock);
    if (rc) req_free(r);
    return rc;
}

void scheduler_cancel(scheduler *s, uint64_t id)
{
    pthread_mutex_lock(&s->lock);
    for (sched_req *r = s->wait_head; r; r = r->next)
        if (r->id == id) r->cancelled = true;
    for (int32_t i = 0; i < s->n_running; i++)
        if (s->running[i]->id == id) s->running[i]->cancelled = true;
    pthread_cond_signal(&s->wake);
    pthread_mutex_unlock(&s->lock);
}

const char *scheduler_unavailable(scheduler *s)
{
    pthread_mutex_lock(&s->lock);
    bool broken = s->broken[0] != 0;
    pthread_mutex_unlock(&s->lock);
    return broken ? s->broken : NULL; /* set once, never changed after */
}

int32_t scheduler_n_ctx(const scheduler *s)
{
    return s->opts.n_ctx;
}

const double scheduler_batch_bounds[SCHEDULER_BATCH_BUCKETS - 1] = {1,  2,   4,   8,   16,  32,
                                                                    64, 128, 256, 512, 1024};

int32_t scheduler_max_running(const scheduler *s)
{
    return s->opts.max_running;
}

size_t scheduler_kv_bytes(const scheduler *s)
{
    return model_ctx_kv_bytes(s->ctx);
}

size_t scheduler_kv_used_bytes(const scheduler *s)
{
    return model_ctx_kv_used_bytes(s->ctx);
}

void scheduler_get_stats(scheduler *s, scheduler_stats *out)
{
    pthread_mutex_lock(&s->lock);
    *out = s->stats;
    pthread_mutex_unlock(&s->lock);
}

/* ---- engine thread ------------------------------------------------------------------------ */

/* Removes running[i] (keeping admission order), frees its slot and reports its end.  Called
 * with the lock held; the callback runs after the lock is dropped and retaken. */
static void finish_running(scheduler *s, int32_t i, scheduler_end why, const char *message)
{
    assert(i >= 0 && i < s->n_running);
    size_t after = (size_t)(s->n_running - 1 - i); /* entries behind i; the assert keeps it >= 0 */
    sched_req *r = s->running[i];
    memmove(&s->running[i], &s->running[i + 1], after * sizeof *s->running);
    s->n_running--;
    s->running[s->n_running] = NULL;
    s->stats.running = (uint32_t)s->n_running;
    model_ctx_clear_seq(s->ctx, r->slot);
    pthread_mutex_unlock(&s->lock);
    r->ops->done(r->user, why, message);
    req_free(r);
    pthread_mutex_lock(&s->lock);
}

static int32_t free_slot(const scheduler *s)
{
    for (int32_t slot = 0; slot < s->opts.max_running; slot++) {
        bool used = false;
        for (int32_t i = 0; i < s->n_running; i++)
            used |= s->running[i]->slot == slot;
        if (!used) return slot;
    }
    return -1;
}

static void note_prefix_stats(scheduler *s);
static void attach_prefix(scheduler *s, sched_req *r);

/* Drops cancelled requests wherever they are and fills free slots from the queue.  Lock held. */
static void retire_and_admit(scheduler *s)
{
    for (int32_t i = 0; i < s->n_running;) {
        if (s->running[i]->cancelled)
            finish_running(s, i, SCHEDULER_CANCELLED, NULL);
        else
            i++;
    }
    sched_req **link = &s->wait_head, *prev = NULL;
    while (*link) {
        sched_req *r = *link;
        if (!r->cancelled) {
            prev = r;
            link = &r->next;
            continue;
        }
        *link = r->next;
        if (s->wait_tail == r) s->wait_tail = prev;
        s->n_waiting--;
        s->stats.waiting = (uint32_t)s->n_waiting;
        pthread_mutex_unlock(&s->lock);
        r->ops->done(r->user, SCHEDULER_CANCELLED, NULL);
        req_free(r);
        pthread_mutex_lock(&s->lock);
        link = &s->wait_head; /* the list may have grown meanwhile: walk again */
        prev = NULL;
    }
    while (s->wait_head && s->n_running < s->opts.max_running) {
        sched_req *r = s->wait_head;
        s->wait_head = r->next;
        if (!s->wait_head) s->wait_tail = NULL;
        s->n_waiting--;
        r->next = NULL;
        r->slot = free_slot(s);
        model_ctx_clear_seq(s->ctx, r->slot);
        if (s->opts.prefix_cache) attach_prefix(s, r);
        s->running[s->n_running++] = r;
    }
    s->stats.waiting = (uint32_t)s->n_waiting;
    s->stats.running = (uint32_t)s->n_running;
    note_prefix_stats(s);
}

/* Lock held: the KV cache's prefix counters into the statistics other threads read. */
static void note_prefix_stats(scheduler *s)
{
    kern_kv_prefix_stats ps;
    model_ctx_prefix_stats(s->ctx, &ps);
    s->stats.prefix_cached_blocks = (uint32_t)ps.cached_blocks;
    s->stats.prefix_evictions = ps.evictions;
}

/* The key of a block: its tokens chained onto the key of everything before it (splitmix64
 * rounds; never 0, which means "no key"). */
static uint64_t block_key(uint64_t prev, const int32_t *tokens, int32_t n)
{
    uint64_t h = prev ^ 0x9E3779B97F4A7C15ull;
    for (int32_t i = 0; i < n; i++) {
        h ^= (uint64_t)(uint32_t)tokens[i] + 0x632BE59BD9B4E019ull;
        h ^= h >> 30;
        h *= 0xBF58476D1CE4E5B9ull;
        h ^= h >> 27;
        h *= 0x94D049BB133111EBull;
        h ^= h >> 31;
    }
    return h ? h : 1;
}

/* Lock held; the model context is the engine thread's, as here. */
static void attach_prefix(scheduler *s, sched_req *r)
{
    int32_t bt = s->block_tokens, n_keys = (r->n_prompt - 1) / bt; /* the last token is computed */
    uint64_t key = 0;
    for (int32_t b = 0; b < n_keys; b++)
        s->keys[b] = key = block_key(key, r->prompt + (size_t)b * (size_t)bt, bt);
    s->stats.prefix_queries++;
    if (n_keys == 0) return;
    char err[160];
    int32_t got = model_ctx_attach_prefix(s->ctx, r->slot, s->keys, n_keys, err, sizeof err);
    if (got <= 0) return; /* a failed table copy leaves the sequence empty: it prefills */
    r->n_past = r->n_cached = got * bt;
    r->n_published = got;
    r->key = s->keys[got - 1];
    s->stats.prefix_hit_tokens += (uint64_t)r->n_cached;
}

/* After a step that stored its tokens: every newly full block of each sequence is published. */
static void publish_blocks(scheduler *s)
{
    int32_t bt = s->block_tokens;
    for (int32_t i = 0; i < s->n_running; i++) {
        sched_req *r = s->running[i];
        for (int32_t b = r->n_published; b < r->n_past / bt; b++) {
            r->key = block_key(r->key, r->hist + (size_t)b * (size_t)bt, bt);
            model_ctx_publish_block(s->ctx, r->slot, b, r->key);
        }
        if (r->n_past / bt > r->n_published) r->n_published = r->n_past / bt;
    }
}

static void add_token(scheduler *s, int32_t *n, sched_req *r, int32_t token, bool want)
{
    r->hist[r->n_past] = token;
    s->b_token[*n] = token;
    s->b_pos[*n] = r->n_past++;
    s->b_seq[*n] = r->slot;
    s->b_want[*n] = want;
    (*n)++;
}

/* Fills the batch; returns its size.  Engine thread, lock not needed for the running table
 * (only this thread changes it). */
static int32_t build_batch(scheduler *s, int32_t *n_rows, int32_t *n_prompt_tokens)
{
    int32_t n = 0, rows = 0, budget = s->opts.max_tokens_per_step;
    *n_prompt_tokens = 0;
    for (int32_t i = 0; i < s->n_running; i++) {
        sched_req *r = s->running[i];
        r->batch_row = -1;
        if (r->n_past < r->n_prompt) continue;
        r->batch_row = rows++;
        add_token(s, &n, r, r->last_token, true);
    }
    for (int32_t i = 0; i < s->n_running && n < budget; i++) {
        sched_req *r = s->running[i];
        if (r->n_past >= r->n_prompt) continue;
        int32_t chunk = r->n_prompt - r->n_past;
        if (chunk > s->opts.prefill_chunk) chunk = s->opts.prefill_chunk;
        if (chunk > budget - n) chunk = budget - n;
        for (int32_t k = 0; k < chunk; k++) {
            bool last = r->n_past + 1 == r->n_prompt;
            add_token(s, &n, r, r->prompt[r->n_past], last);
            if (last) r->batch_row = rows++;
        }
        *n_prompt_tokens += chunk;
    }
    *n_rows = rows;
    return n;
}

/* Hands each sequence its logits row, then ends the ones that are complete.  Lock held. */
static void after_step(scheduler *s)
{
    for (int32_t i = 0; i < s->n_running;) {
        sched_req *r = s->running[i];
        if (r->batch_row < 0 || r->cancelled) {
            i++;
            continue;
        }
        const float *row = s->logits + (size_t)r->batch_row * (size_t)s->n_vocab;
        pthread_mutex_unlock(&s->lock);
        int32_t token = r->ops->sample(r->user, row);
        bool stop = r->ops->emit(r->user, token);
        pthread_mutex_lock(&s->lock);
        r->last_token = token;
        r->n_generated++;
        if (stop)
            finish_running(s, i, SCHEDULER_STOP, NULL);
        else if (r->n_generated >= r->max_tokens)
            finish_running(s, i, SCHEDULER_LENGTH, NULL);
        else
            i++;
    }
}

static void *engine_main(void *arg)
{
    scheduler *s = arg;
    pthread_mutex_lock(&s->lock);
    for (;;) {
        retire_and_admit(s);
        if (s->stopping) break;
        if (s->n_running == 0) {
            pthread_cond_wait(&s->wake, &s->lock);
            continue;
        }
        pthread_mutex_unlock(&s->lock);
        /* Only this thread changes running[]; other threads only queue or flag requests. */
        for (int32_t i = 0; i < s->n_running; i++) {
            sched_req *r = s->running[i];
            if (!r->admission_told && r->ops->admitted) r->ops->admitted(r->user, r->n_cached);
            r->admission_told = true;
        }

        /* A model file truncated under the server would turn the next read of a lost page into
         * SIGBUS: one fstat per step finds it first, and every request then fails saying so. */
        if (gguf_check_unchanged(model_file(s->m), s->err, sizeof s->err)) {
            pthread_mutex_lock(&s->lock);
            /* the details (a path) go to the log; clients are told what happened */
            if (!s->broken[0]) fprintf(stderr, "moeserve: %s\n", s->err);
            snprintf(s->broken, sizeof s->broken,
                     "the model file was truncated or replaced while serving; the server must be "
                     "restarted with an intact file");
            while (s->n_running)
                finish_running(s, 0, SCHEDULER_ERROR, s->err);
            while (s->wait_head) {
                sched_req *r = s->wait_head;
                s->wait_head = r->next;
                if (!s->wait_head) s->wait_tail = NULL;
                s->n_waiting--;
                pthread_mutex_unlock(&s->lock);
                r->ops->done(r->user, SCHEDULER_ERROR, s->err);
                req_free(r);
                pthread_mutex_lock(&s->lock);
            }
            s->stats.waiting = 0;
            continue;
        }
        int32_t n_rows = 0, n_prompt_tokens = 0;
        int32_t n = build_batch(s, &n_rows, &n_prompt_tokens);
        model_batch b = {.n_tokens = n,
                         .token = s->b_token,
                         .pos = s->b_pos,
                         .seq = s->b_seq,
                         .want_logits = s->b_want};
        struct timespec t0, t1;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        int rc = model_forward(s->ctx, &b, s->logits, s->err, sizeof s->err);
        /* An expert that could not be read fails the step, and the cache reads it again on the
         * next request: the same batch runs again (its positions are simply stored again) a few
         * times before its sequences end with the error. */
        uint32_t retries = 0;
        while (rc && model_ctx_last_stats(s->ctx)->expert_read_failed && retries < STEP_RETRIES) {
            retries++;
            rc = model_forward(s->ctx, &b, s->logits, s->err, sizeof s->err);
        }
        clock_gettime(CLOCK_MONOTONIC, &t1);
        if (rc == 0 && s->opts.prefix_cache) publish_blocks(s);

        pthread_mutex_lock(&s->lock);
        s->stats.step_ns +=
            (uint64_t)((t1.tv_sec - t0.tv_sec) * 1000000000ll + (t1.tv_nsec - t0.tv_nsec));
        int bucket = 0;
        while (bucket < SCHEDULER_BATCH_BUCKETS - 1 && n > scheduler_batch_bounds[bucket])
            bucket++;
        s->stats.batch_hist[bucket]++;
        s->stats.steps++;
        s->stats.tokens += (uint64_t)n;
        s->stats.prompt_tokens += (uint64_t)n_prompt_tokens;
        s->stats.decode_tokens += (uint64_t)(n - n_prompt_tokens);
        s->stats.last_batch = (uint32_t)n;
        s->stats.step_retries += retries;
        if (rc == 0) {
            const model_step_stats *ms = model_ctx_last_stats(s->ctx);
            s->stats.steps_routed_on_device += ms->routed_on_device;
            s->stats.graph_replays += ms->graph_replayed;
            s->stats.cpu_expert_ns += ms->cpu_ns;
            s->stats.cpu_expert_wait_ns += ms->cpu_wait_ns;
        }
        note_prefix_stats(s);
        if (rc) {
            /* The step's sequences cannot go on (their KV is incomplete); the others can. */
            for (int32_t i = 0; i < s->n_running;) {
                bool in_batch = false;
                for (int32_t t = 0; t < n; t++)
                    in_batch |= s->b_seq[t] == s->running[i]->slot;
                if (in_batch)
                    finish_running(s, i, SCHEDULER_ERROR, s->err);
                else
                    i++;
            }
            continue;
        }
        after_step(s);
    }
    /* Shutdown: everything still queued or running ends as cancelled. */
    while (s->n_running)
        finish_running(s, 0, SCHEDULER_CANCELLED, NULL);
    while (s->wait_head) {
        sched_req *r = s->wait_head;
        s->wait_head = r->next;
        s->n_waiting--;
        pthread_mutex_unlock(&s->lock);
        r->ops->done(r->user, SCHEDULER_CANCELLED, NULL);
        req_free(r);
        pthread_mutex_lock(&s->lock);
    }
    s->wait_tail = NULL;
    pthread_mutex_unlock(&s->lock);
    return NULL;
}
