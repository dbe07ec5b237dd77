/*
 * The simulated device.  Why it exists: the forward pass, the KV cache and the expert tiers are
 * written for a GPU whose memory the host cannot touch and whose copies finish later; on a CI
 * machine without one, the CPU backend would hide every missing copy (its device is the host)
 * and every missing wait (its copies finish at once).  This backend makes both visible:
 * device memory is a separate arena that every operation checks pointer by pointer, and copies
 * finish on another thread after the time a PCIe link would take, with their destination
 * poisoned until then.
 *
 * The arithmetic is the CPU backend's, called after the checks, so results are bit-identical
 * to it: parity tests can demand equality, not a tolerance.
 *
 * Allocation: a first-fit list of segments over one reserved range (MAP_NORESERVE, so a large
 * simulated device costs nothing until used).  The list is short (hundreds of entries: weights,
 * tiers, KV chunks, scratch), so lookups by binary search are cheap next to any operation.
 */
#include "kernels/sim/sim.h"

#include "kernels/backend_internal.h"
#include "kernels/cpu/cpu.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

enum { SIM_ALIGN = 256 };

typedef struct segment {
    size_t off, bytes;
    bool used;
} segment;

typedef struct host_range {
    const uint8_t *p;
    size_t bytes;
} host_range;

typedef struct copy_item {
    void *dst;
    const void *src;
    size_t bytes;
    uint64_t link_ns; /* time the link is busy with it */
} copy_item;

typedef struct sim_backend {
    kern_backend base;
    kern_backend *cpu; /* the arithmetic */
    kern__error error;
    uint8_t *arena;
    size_t arena_bytes;
    segment *seg;
    size_t n_seg, cap_seg;
    size_t in_use, peak;
    host_range *pinned; /* pinned allocations and registered ranges: copied at link speed */
    size_t n_pinned, cap_pinned;
    double link_bps, pageable_bps;
    uint64_t latency_ns;

    /* the copy stream */
    pthread_t thread;
    bool thread_started;
    pthread_mutex_t mu;
    pthread_cond_t cv;   /* work queued, or stop */
    pthread_cond_t done; /* an item completed */
    copy_item *queue;
    size_t q_head, q_len, q_cap;
    uint64_t submitted, completed;
    bool stop;

    atomic_uint_least64_t copies, to_device, to_host, link_ns, host_waits;
    int64_t fail_in; /* operations until an injected failure; -1: none */
    int fail_code;

    /* graphs: the calls recorded while capturing (the ops table is then the recording one) */
    struct kern_graph *capture;
    int capture_rc; /* why the capture fails, 0 while it holds */
    char capture_msg[200];
    uint64_t graph_gen; /* kern_sim_stale_graphs: graphs of an older generation are stale */
} sim_backend;

struct kern_event {
    uint64_t target; /* copy-stream items that must complete; 0: complete */
};

static sim_backend *as_sim(const kern_backend *b)
{
    return (sim_backend *)b;
}

kern_backend *kern__sim_cpu(const kern_backend *b)
{
    return as_sim(b)->cpu;
}

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void sleep_until(uint64_t t_ns)
{
    struct timespec ts = {.tv_sec = (time_t)(t_ns / 1000000000ull),
                          .tv_nsec = (long)(t_ns % 1000000000ull)};
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR) {
    }
}

/* ---- device memory -------------------------------------------------------------------------- */

/* Index of the segment containing offset off (segments are sorted and cover the arena). */
static size_t find_segment(const sim_backend *sim, size_t off)
{
    size_t lo = 0, hi = sim->n_seg;
    while (hi - lo > 1) {
        size_t mid = (lo + hi) / 2;
        if (sim->seg[mid].off <= off)
            lo = mid;
        else
            hi = mid;
    }
    return lo;
}

/* True when [p, p + bytes) lies inside one live device allocation. */
static bool in_device(const sim_backend *sim, const void *p, size_t bytes)
{
    const uint8_t *u = p;
    if (!u || u < sim->arena || u >= sim->arena + sim->arena_bytes) return false;
    const segment *s = &sim->seg[find_segment(sim, (size_t)(u - sim->arena))];
    return s->used && (size_t)(u - sim->arena) + bytes <= s->off + s->bytes;
}

static bool in_arena(const sim_backend *sim, const void *p)
{
    const uint8_t *u = p;
    return u >= sim->arena && u < sim->arena + sim->arena_bytes;
}

static int insert_segment(sim_backend *sim, size_t at, segment s)
{
    if (sim->n_seg == sim->cap_seg) {
        size_t cap = sim->cap_seg ? 2 * sim->cap_seg : 64;
        segment *grown = realloc(sim->seg, cap * sizeof *grown);
        if (!grown) return -ENOMEM;
        sim->seg = grown;
        sim->cap_seg = cap;
    }
    memmove(&sim->seg[at + 1], &sim->seg[at], (sim->n_seg - at) * sizeof *sim->seg);
    sim->seg[at] = s;
    sim->n_seg++;
    return 0;
}

static int device_alloc(sim_backend *sim, size_t bytes, void **out)
{
    size_t want = (bytes + SIM_ALIGN - 1) / SIM_ALIGN * SIM_ALIGN;
    if (want == 0) want = SIM_ALIGN;
    for (size_t i = 0; i < sim->n_seg; i++) {
        segment *s = &sim->seg[i];
        if (s->used || s->bytes < want) continue;
        if (s->bytes > want) {
            segment rest = {.off = s->off + want, .bytes = s->bytes - want};
            if (insert_segment(sim, i + 1, rest)) return -ENOMEM;
            s = &sim->seg[i];
            s->bytes = want;
        }
        s->used = true;
        sim->in_use += want;
        if (sim->in_use > sim->peak) sim->peak = sim->in_use;
        *out = sim->arena + s->off;
        return 0;
    }
    return -ENOMEM;
}

static void remove_segment(sim_backend *sim, size_t at)
{
    memmove(&sim->seg[at], &sim->seg[at + 1], (sim->n_seg - at - 1) * sizeof *sim->seg);
    sim->n_seg--;
}

static void device_free(sim_backend *sim, void *p)
{
    if (!in_arena(sim, p)) {
        kern__error_set(&sim->error, -EFAULT, "sim: free of %p, which is not device memory", p);
        return;
    }
    size_t i = find_segment(sim, (size_t)((uint8_t *)p - sim->arena));
    segment *s = &sim->seg[i];
    if (!s->used || sim->arena + s->off != p) {
        kern__error_set(&sim->error, -EFAULT, "sim: free of %p, which is not an allocation", p);
        return;
    }
    s->used = false;
    sim->in_use -= s->bytes;
    /* Return the pages, so that a freed tier or KV chunk costs no memory, then merge. */
    (void)madvise(sim->arena + s->off, s->bytes, MADV_DONTNEED);
    if (i + 1 < sim->n_seg && !sim->seg[i + 1].used) {
        s->bytes += sim->seg[i + 1].bytes;
        remove_segment(sim, i + 1);
    }
    if (i > 0 && !sim->seg[i - 1].used) {
        sim->seg[i - 1].bytes += sim->seg[i].bytes;
        remove_segment(sim, i);
    }
}

static int add_pinned(sim_backend *sim, const void *p, size_t bytes)
{
    if (sim->n_pinned == sim->cap_pinned) {
        size_t cap = sim->cap_pinned ? 2 * sim->cap_pinned : 16;
        host_range *grown = realloc(sim->pinned, cap * sizeof *grown);
        if (!grown) return -ENOMEM;
        sim->pinned = grown;
        sim->cap_pinned = cap;
    }
    sim->pinned[sim->n_pinned++] = (host_range){.p = p, .bytes = bytes};
    return 0;
}

static void remove_pinned(sim_backend *sim, const void *p)
{
    for (size_t i = 0; i < sim->n_pinned; i++) {
        if (sim->pinned[i].p == p) {
            sim->pinned[i] = sim->pinned[--sim->n_pinned];
            return;
        }
    }
}

static bool is_pinned(const sim_backend *sim, const void *p, size_t bytes)
{
    const uint8_t *u = p;
    for (size_t i = 0; i < sim->n_pinned; i++)
        if (u >= sim->pinned[i].p && u + bytes <= sim->pinned[i].p + sim->pinned[i].bytes)
            return true;
    return false;
}

static int sim_alloc(kern_backend *b, kern_mem kind, size_t bytes, void **out)
{
    sim_backend *sim = as_sim(b);
    *out = NULL;
    if (kind == KERN_MEM_DEVICE) return device_alloc(sim, bytes, out);
    if (posix_memalign(out, 64, bytes ? bytes : 1) != 0) return -ENOMEM;
    if (kind == KERN_MEM_HOST_PINNED && add_pinned(sim, *out, bytes)) {
        free(*out);
        *out = NULL;
        return -ENOMEM;
    }
    return 0;
}

static void sim_free(kern_backend *b, kern_mem kind, void *p)
{
    sim_backend *sim = as_sim(b);
    if (kind == KERN_MEM_DEVICE) {
        device_free(sim, p);
        return;
    }
    if (in_arena(sim, p)) {
        kern__error_set(&sim->error, -EFAULT, "sim: device memory %p freed as host memory", p);
        return;
    }
    if (kind == KERN_MEM_HOST_PINNED) remove_pinned(sim, p);
    free(p);
}

static int sim_register(kern_backend *b, void *p, size_t bytes)
{
    sim_backend *sim = as_sim(b);
    if (in_arena(sim, p)) return -EINVAL;
    return add_pinned(sim, p, bytes);
}

static void sim_unregister(kern_backend *b, void *p)
{
    remove_pinned(as_sim(b), p);
}

static int sim_mem_info(kern_backend *b, size_t *free_bytes, size_t *total_bytes)
{
    sim_backend *sim = as_sim(b);
    *total_bytes = sim->arena_bytes;
    *free_bytes = sim->arena_bytes - sim->in_use;
    return 0;
}

/* ---- copies and events ------------------------------------------------------------------------
 */

static uint64_t link_time(const sim_backend *sim, size_t bytes, bool pinned)
{
    double bps = pinned ? sim->link_bps : sim->pageable_bps;
    return sim->latency_ns + (uint64_t)((double)bytes / bps * 1e9);
}

static void *copy_thread(void *arg)
{
    sim_backend *sim = arg;
    uint64_t link_free = 0; /* one copy engine: copies run back to back */
    pthread_mutex_lock(&sim->mu);
    for (;;) {
        while (!sim->q_len && !sim->stop)
            pthread_cond_wait(&sim->cv, &sim->mu);
        if (!sim->q_len) break;
        copy_item it = sim->queue[sim->q_head];
        pthread_mutex_unlock(&sim->mu);
        uint64_t start = now_ns();
        if (link_free > start) start = link_free;
        link_free = start + it.link_ns;
        sleep_until(link_free);
        memmove(it.dst, it.src, it.bytes);
        pthread_mutex_lock(&sim->mu);
        sim->q_head = (sim->q_head + 1) % sim->q_cap;
        sim->q_len--;
        sim->completed++;
        pthread_cond_broadcast(&sim->done);
    }
    pthread_mutex_unlock(&sim->mu);
    return NULL;
}

static int enqueue(sim_backend *sim, copy_item it)
{
    pthread_mutex_lock(&sim->mu);
    if (sim->q_len == sim->q_cap) {
        size_t cap = sim->q_cap ? 2 * sim->q_cap : 64;
        copy_item *grown = malloc(cap * sizeof *grown);
        if (!grown) {
            pthread_mutex_unlock(&sim->mu);
            return -ENOMEM;
        }
        for (size_t i = 0; i < sim->q_len; i++)
            grown[i] = sim->queue[(sim->q_head + i) % sim->q_cap];
        free(sim->queue);
        sim->queue = grown;
        sim->q_head = 0;
        sim->q_cap = cap;
    }
    sim->queue[(sim->q_head + sim->q_len) % sim->q_cap] = it;
    sim->q_len++;
    sim->submitted++;
    pthread_cond_signal(&sim->cv);
    pthread_mutex_unlock(&sim->mu);
    return 0;
}

static void wait_completed(sim_backend *sim, uint64_t target)
{
    pthread_mutex_lock(&sim->mu);
    while (sim->completed < target)
        pthread_cond_wait(&sim->done, &sim->mu);
    pthread_mutex_unlock(&sim->mu);
}

static const char *dir_name(kern_copy_dir dir)
{
    return dir == KERN_COPY_TO_DEVICE ? "to device"
           : dir == KERN_COPY_TO_HOST ? "to host"
                                      : "on device";
}

static int sim_copy(kern_backend *b, kern_stream s, void *dst, const void *src, size_t bytes,
                    kern_copy_dir dir)
{
    sim_backend *sim = as_sim(b);
    if (bytes == 0) return 0;
    bool dst_dev = dir != KERN_COPY_TO_HOST, src_dev = dir != KERN_COPY_TO_DEVICE;
    bool dst_ok = dst_dev ? in_device(sim, dst, bytes) : !in_arena(sim, dst);
    bool src_ok = src_dev ? in_device(sim, src, bytes) : !in_arena(sim, src);
    if (!dst_ok || !src_ok) {
        char msg[200];
        snprintf(msg, sizeof msg, "sim: copy %s of %zu bytes: %s %p is not %s memory",
                 dir_name(dir), bytes, !dst_ok ? "destination" : "source",
                 !dst_ok ? dst : (void *)src, (!dst_ok ? dst_dev : src_dev) ? "device" : "host");
        kern__error_set(&sim->error, -EFAULT, "%s", msg);
        fprintf(stderr, "%s\n", msg);
        return -EFAULT;
    }
    const void *host = dir == KERN_COPY_TO_DEVICE ? src : dst;
    bool pinned = dir == KERN_COPY_ON_DEVICE || is_pinned(sim, host, bytes);
    /* On-device copies run at memory speed: model only the latency. */
    uint64_t t = dir == KERN_COPY_ON_DEVICE ? sim->latency_ns : link_time(sim, bytes, pinned);
    atomic_fetch_add(&sim->copies, 1);
    atomic_fetch_add(dir == KERN_COPY_TO_HOST ? &sim->to_host : &sim->to_device, bytes);
    atomic_fetch_add(&sim->link_ns, t);
    if (s == KERN_STREAM_COMPUTE) {
        sleep_until(now_ns() + t);
        memmove(dst, src, bytes);
        return 0;
    }
    memset(dst, 0xff, bytes); /* NaN until the copy lands */
    return enqueue(sim, (copy_item){.dst = dst, .src = src, .bytes = bytes, .link_ns = t});
}

static int sim_event_create(kern_backend *b, kern_event **out)
{
    *out = calloc(1, sizeof **out);
    return *out ? 0 : -ENOMEM;
}

static void sim_event_destroy(kern_backend *b, kern_event *e)
{
    free(e);
}

static int sim_event_record(kern_backend *b, kern_event *e, kern_stream s)
{
    sim_backend *sim = as_sim(b);
    if (s == KERN_STREAM_COMPUTE) {
        e->target = 0;
        return 0;
    }
    pthread_mutex_lock(&sim->mu);
    e->target = sim->submitted;
    pthread_mutex_unlock(&sim->mu);
    return 0;
}

static int sim_event_query(kern_backend *b, kern_event *e)
{
    sim_backend *sim = as_sim(b);
    pthread_mutex_lock(&sim->mu);
    bool done = sim->completed >= e->target;
    pthread_mutex_unlock(&sim->mu);
    return done;
}

static int sim_event_wait(kern_backend *b, kern_event *e)
{
    atomic_fetch_add(&as_sim(b)->host_waits, 1);
    wait_completed(as_sim(b), e->target);
    return 0;
}

static int sim_stream_wait(kern_backend *b, kern_stream s, kern_event *e)
{
    /* The copy stream waiting on anything is already ordered: compute work completes when
     * queued, and copy work runs in order.  The compute stream runs on the caller. */
    if (s == KERN_STREAM_COMPUTE) wait_completed(as_sim(b), e->target);
    return 0;
}

static int sim_sync(kern_backend *b, char *err, size_t err_size)
{
    sim_backend *sim = as_sim(b);
    atomic_fetch_add(&sim->host_waits, 1);
    pthread_mutex_lock(&sim->mu);
    uint64_t target = sim->submitted;
    pthread_mutex_unlock(&sim->mu);
    wait_completed(sim, target);
    int rc = kern__error_take(&sim->error, err, err_size);
    int cpu_rc = kern_sync(sim->cpu, rc ? NULL : err, rc ? 0 : err_size);
    return rc ? rc : cpu_rc;
}

/* ---- operations: check every pointer, then compute on the CPU -------------------------------- */

/* False (with the step's error recorded) when [p, p + bytes) is not device memory. */
static bool check(sim_backend *sim, const char *op, const char *arg, const void *p, size_t bytes)
{
    if (in_device(sim, p, bytes)) return true;
    char msg[220];
    snprintf(msg, sizeof msg, "sim: %s: %s (%p, %zu bytes) is not device memory%s", op, arg, p,
             bytes, in_arena(sim, p) ? " (it runs past its allocation)" : "");
    kern__error_set(&sim->error, -EFAULT, "%s", msg);
    fprintf(stderr, "%s\n", msg);
    return false;
}

/* An injected failure takes the place of this operation. */
static bool injected(sim_backend *sim, const char *op)
{
    if (sim->fail_in < 0 || sim->fail_in-- > 0) return false;
    kern__error_set(&sim->error, sim->fail_code, "sim: %s failed (injected: %s)", op,
                    strerror(-sim->fail_code));
    return true;
}

#define CHECK(arg, bytes)                                                                          \
    do {                                                                                           \
        if (!check(sim, __func__ + 4, #arg, (arg), (bytes))) return;                               \
    } while (0)

static size_t floats(int64_t n)
{
    return (size_t)n * sizeof(float);
}

static size_t weight_bytes(const kern_weight *w)
{
    return w->row_bytes * (size_t)w->n_rows;
}

/* Rows that a list of row indices reaches: max + 1 (and the list itself is device memory). */
static int64_t rows_reached(const int32_t *rows, int64_t n)
{
    int64_t max = -1;
    for (int64_t i = 0; i < n; i++)
        if (rows[i] > max) max = rows[i];
    return max + 1;
}

static void sim_matmul(kern_backend *b, const kern_weight *w, const float *x, float *y,
                       int64_t n_tokens)
{
    sim_backend *sim = as_sim(b);
    if (n_tokens <= 0) return;
    const void *data = w->data;
    CHECK(data, weight_bytes(w));
    CHECK(x, floats(n_tokens * w->n_cols));
    CHECK(y, floats(n_tokens * w->n_rows));
    if (injected(sim, "matmul")) return;
    kern_matmul(sim->cpu, w, x, y, n_tokens);
}

static void sim_matmul_batched(kern_backend *b, const kern_weight *w, int64_t n_batch,
                               const float *x, float *y, int64_t n_tokens)
{
    sim_backend *sim = as_sim(b);
    if (n_tokens <= 0 || n_batch <= 0) return;
    const void *data = w->data;
    CHECK(data, weight_bytes(w));
    CHECK(x, floats(n_batch * n_tokens * w->n_cols));
    CHECK(y, floats(n_tokens * w->n_rows));
    if (injected(sim, "matmul_batched")) return;
    kern_matmul_batched(sim->cpu, w, n_batch, x, y, n_tokens);
}

static void sim_experts(kern_backend *b, const kern_ffn_expert *ex, int n_experts, const float *x,
                        float *out, float *g, float *u)
{
    sim_backend *sim = as_sim(b);
    for (int i = 0; i < n_experts; i++) {
        const kern_ffn_expert *e = &ex[i];
        if (e->n_rows <= 0) continue;
        const void *gd = e->gate.data, *ud = e->up.data, *dd = e->down.data;
        CHECK(gd, weight_bytes(&e->gate));
        CHECK(ud, weight_bytes(&e->up));
        CHECK(dd, weight_bytes(&e->down));
        const float *xi = x + e->row0 * e->gate.n_cols;
        float *gi = g + e->row0 * e->gate.n_rows, *oi = out + e->row0 * e->down.n_rows;
        CHECK(xi, floats(e->n_rows * e->gate.n_cols));
        CHECK(gi, floats(e->n_rows * e->gate.n_rows));
        CHECK(u, floats(e->n_rows * e->up.n_rows));
        CHECK(oi, floats(e->n_rows * e->down.n_rows));
        if (e->gate_bias) CHECK(e->gate_bias, floats(e->gate.n_rows));
        if (e->up_bias) CHECK(e->up_bias, floats(e->up.n_rows));
        if (e->down_bias) CHECK(e->down_bias, floats(e->down.n_rows));
    }
    if (injected(sim, "experts")) return;
    kern_experts(sim->cpu, ex, n_experts, x, out, g, u);
}

static void sim_moe_align(kern_backend *b, const int32_t *ids, const float *weights,
                          int64_t n_tokens, int k, int32_t n_expert, const kern_moe_plan *plan)
{
    sim_backend *sim = as_sim(b);
    size_t nk = (size_t)(n_tokens > 0 ? n_tokens * k : 0), ends = (size_t)n_expert + 1;
    if (nk) {
        CHECK(ids, nk * sizeof *ids);
        CHECK(weights, floats((int64_t)nk));
        CHECK(plan->bucket, nk * sizeof *plan->bucket);
        CHECK(plan->comb_rows, nk * sizeof *plan->comb_rows);
        CHECK(plan->comb_w, floats((int64_t)nk));
    }
    CHECK(plan->bucket_start, ends * sizeof *plan->bucket_start);
    CHECK(plan->used, ends * sizeof *plan->used);
    if (injected(sim, "moe_align")) return;
    kern_moe_align(sim->cpu, ids, weights, n_tokens, k, n_expert, plan);
}

/* The table and the plan are device memory the sim's host can read, so the experts become an
 * experts op on this backend, which checks each expert's weights where the table points. */
static void sim_experts_routed(kern_backend *b, const kern_expert_table *t,
                               const kern_moe_plan *plan, int64_t n_tokens, int k, const float *x,
                               float *out, float *g, float *u)
{
    sim_backend *sim = as_sim(b);
    size_t ends = (size_t)t->n_expert + 1;
    CHECK(t->parts, (size_t)t->n_expert * 3 * sizeof *t->parts);
    CHECK(plan->bucket_start, ends * sizeof *plan->bucket_start);
    CHECK(plan->used, ends * sizeof *plan->used);
    if (t->gate_bias) CHECK(t->gate_bias, floats(t->n_expert * t->gate.n_rows));
    if (t->up_bias) CHECK(t->up_bias, floats(t->n_expert * t->up.n_rows));
    if (t->down_bias) CHECK(t->down_bias, floats(t->n_expert * t->down.n_rows));
    const int32_t *start = plan->bucket_start, *used = plan->used;
    bool ok = used[0] >= 0 && used[0] <= t->n_expert && start[0] == 0 &&
              start[t->n_expert] <= n_tokens * k;
    for (int32_t i = 0; ok && i < used[0]; i++)
        ok = used[1 + i] >= 0 && used[1 + i] < t->n_expert &&
             start[used[1 + i] + 1] - start[used[1 + i]] <= n_tokens;
    if (!ok) {
        kern__error_set(&sim->error, -EINVAL,
                        "sim: experts_routed: the plan is not one of %lld "
                        "tokens over %d experts",
                        (long long)n_tokens, t->n_expert);
        return;
    }
    if (injected(sim, "experts_routed")) return;
    if (kern_experts_routed_host(b, t, plan, x, out, g, u))
        kern__error_set(&sim->error, -ENOMEM, "sim: experts_routed: out of memory");
}

static void sim_rmsnorm(kern_backend *b, const float *x, const float *weight, float *out, int64_t n,
                        int64_t n_rows, int64_t stride, float eps)
{
    sim_backend *sim = as_sim(b);
    if (n_rows <= 0) return;
    size_t extent = floats((n_rows - 1) * stride + n);
    CHECK(x, extent);
    CHECK(out, extent);
    if (weight) CHECK(weight, floats(n));
    if (injected(sim, "rmsnorm")) return;
    kern_rmsnorm(sim->cpu, x, weight, out, n, n_rows, stride, eps);
}

static void sim_rope(kern_backend *b, float *x, int64_t n_tokens, int n_heads, int head_dim,
                     int n_rot, const int32_t *pos, float freq_base, kern_rope_mode mode,
                     const kern_rope_yarn *yarn)
{
    sim_backend *sim = as_sim(b);
    if (n_tokens <= 0) return;
    /* what the op touches: up to the last head's rotated part (kernels.h) */
    CHECK(x, floats((n_tokens * n_heads - 1) * head_dim + n_rot));
    CHECK(pos, (size_t)n_tokens * sizeof *pos);
    if (injected(sim, "rope")) return;
    kern_rope(sim->cpu, x, n_tokens, n_heads, head_dim, n_rot, pos, freq_base, mode, yarn);
}

/* The block table and every block the tokens reach must be device memory too. */
static bool check_kv(sim_backend *sim, const char *op, const kern_kv_layout *kv, const int32_t *seq,
                     const int32_t *pos, int64_t n_tokens, bool whole_prefix)
{
    if (!check(sim, op, "kv->table", kv->table,
               (size_t)kv->n_seq * (size_t)kv->max_blocks * sizeof(void *)) ||
        !check(sim, op, "seq", seq, (size_t)n_tokens * sizeof *seq) ||
        !check(sim, op, "pos", pos, (size_t)n_tokens * sizeof *pos))
        return false;
    size_t block_bytes = (size_t)kv->n_layer * (kv->v_is_k ? 1 : 2) * (size_t)kv->block_tokens *
                         (size_t)kv->kv_dim * (kv->type == KERN_KV_F16 ? 2 : 4);
    for (int64_t t = 0; t < n_tokens; t++) {
        if (seq[t] < 0 || seq[t] >= kv->n_seq || pos[t] < 0 ||
            pos[t] / kv->block_tokens >= kv->max_blocks) {
            kern__error_set(&sim->error, -EINVAL,
                            "sim: %s: token %lld at (%d, %d) is outside the KV cache", op,
                            (long long)t, seq[t], pos[t]);
            return false;
        }
        int32_t first = whole_prefix ? 0 : pos[t] / kv->block_tokens;
        for (int32_t blk = first; blk <= pos[t] / kv->block_tokens; blk++) {
            void *p = kv->table[(size_t)seq[t] * (size_t)kv->max_blocks + (size_t)blk];
            if (!check(sim, op, "KV block", p, block_bytes)) return false;
        }
    }
    return true;
}

static void sim_kv_store(kern_backend *b, const kern_kv_layout *kv, int layer, const float *k,
                         const float *v, const int32_t *seq, const int32_t *pos, int64_t n_tokens)
{
    sim_backend *sim = as_sim(b);
    if (n_tokens <= 0) return;
    CHECK(k, floats(n_tokens * kv->kv_dim));
    if (!kv->v_is_k) CHECK(v, floats(n_tokens * kv->kv_dim));
    if (!check_kv(sim, "kv_store", kv, seq, pos, n_tokens, false)) return;
    if (injected(sim, "kv_store")) return;
    kern_kv_store(sim->cpu, kv, layer, k, v, seq, pos, n_tokens);
}

static void sim_attention(kern_backend *b, const kern_kv_layout *kv, int layer, const float *q,
                          const int32_t *seq, const int32_t *pos, float *out, int64_t n_tokens,
                          int n_head, int n_head_kv, int head_dim, float scale, int32_t window,
                          const float *sinks)
{
    sim_backend *sim = as_sim(b);
    if (n_tokens <= 0) return;
    CHECK(q, floats(n_tokens * n_head * head_dim));
    CHECK(out, floats(n_tokens * n_head * head_dim));
    if (sinks) CHECK(sinks, floats(n_head));
    if (!check_kv(sim, "attention", kv, seq, pos, n_tokens, true)) return;
    if (injected(sim, "attention")) return;
    kern_attention(sim->cpu, kv, layer, q, seq, pos, out, n_tokens, n_head, n_head_kv, head_dim,
                   scale, window, sinks);
}

static void sim_silu_mul(kern_backend *b, const float *gate, const float *up, float *out, int64_t n)
{
    sim_backend *sim = as_sim(b);
    if (n <= 0) return;
    CHECK(gate, floats(n));
    CHECK(up, floats(n));
    CHECK(out, floats(n));
    if (injected(sim, "silu_mul")) return;
    kern_silu_mul(sim->cpu, gate, up, out, n);
}

static void sim_swiglu_oai(kern_backend *b, const float *gate, const float *up, float *out,
                           int64_t n)
{
    sim_backend *sim = as_sim(b);
    if (n <= 0) return;
    CHECK(gate, floats(n));
    CHECK(up, floats(n));
    CHECK(out, floats(n));
    if (injected(sim, "swiglu_oai")) return;
    kern_swiglu_oai(sim->cpu, gate, up, out, n);
}

static void sim_add(kern_backend *b, float *y, const float *x, int64_t n)
{
    sim_backend *sim = as_sim(b);
    if (n <= 0) return;
    CHECK(y, floats(n));
    CHECK(x, floats(n));
    if (injected(sim, "add")) return;
    kern_add(sim->cpu, y, x, n);
}

static void sim_add_bias(kern_backend *b, float *x, const float *bias, int64_t n_rows, int64_t dim)
{
    sim_backend *sim = as_sim(b);
    if (n_rows <= 0) return;
    CHECK(x, floats(n_rows * dim));
    CHECK(bias, floats(dim));
    if (injected(sim, "add_bias")) return;
    kern_add_bias(sim->cpu, x, bias, n_rows, dim);
}

static void sim_get_rows(kern_backend *b, const kern_weight *w, const int32_t *ids, float *out,
                         int64_t n_ids)
{
    sim_backend *sim = as_sim(b);
    if (n_ids <= 0) return;
    const void *data = w->data;
    CHECK(ids, (size_t)n_ids * sizeof *ids);
    CHECK(out, floats(n_ids * w->n_cols));
    CHECK(data, weight_bytes(w));
    if (injected(sim, "get_rows")) return;
    kern_get_rows(sim->cpu, w, ids, out, n_ids);
}

static void sim_gather(kern_backend *b, const float *src, const int32_t *rows, float *dst,
                       int64_t n_rows, int64_t dim)
{
    sim_backend *sim = as_sim(b);
    if (n_rows <= 0) return;
    CHECK(rows, (size_t)n_rows * sizeof *rows);
    CHECK(dst, floats(n_rows * dim));
    CHECK(src, floats(rows_reached(rows, n_rows) * dim));
    if (injected(sim, "gather")) return;
    kern_gather(sim->cpu, src, rows, dst, n_rows, dim);
}

static void sim_router(kern_backend *b, const float *logits, int64_t n_tokens,
                       const kern_router_opts *o, int32_t *ids, float *weights)
{
    sim_backend *sim = as_sim(b);
    if (n_tokens <= 0) return;
    CHECK(logits, floats(n_tokens * o->n_expert));
    CHECK(ids, (size_t)(n_tokens * o->k) * sizeof *ids);
    CHECK(weights, floats(n_tokens * o->k));
    if (o->sel_bias) CHECK(o->sel_bias, floats(o->n_expert));
    if (injected(sim, "router")) return;
    kern_router(sim->cpu, logits, n_tokens, o, ids, weights);
}

static void sim_moe_combine(kern_backend *b, const float *src, const int32_t *rows,
                            const float *weights, float *out, int64_t n_tokens, int k, int64_t dim)
{
    sim_backend *sim = as_sim(b);
    if (n_tokens <= 0) return;
    CHECK(rows, (size_t)(n_tokens * k) * sizeof *rows);
    CHECK(weights, floats(n_tokens * k));
    CHECK(out, floats(n_tokens * dim));
    CHECK(src, floats(rows_reached(rows, n_tokens * k) * dim));
    if (injected(sim, "moe_combine")) return;
    kern_moe_combine(sim->cpu, src, rows, weights, out, n_tokens, k, dim);
}

static void sim_gate_add(kern_backend *b, const float *h, const float *gate, const float *x,
                         float *out, int64_t n_tokens, int64_t dim)
{
    sim_backend *sim = as_sim(b);
    if (n_tokens <= 0) return;
    CHECK(h, floats(n_tokens * dim));
    CHECK(gate, floats(dim));
    CHECK(x, floats(n_tokens * dim));
    CHECK(out, floats(n_tokens * dim));
    if (injected(sim, "gate_add")) return;
    kern_gate_add(sim->cpu, h, gate, x, out, n_tokens, dim);
}

/* ---- open / close ---------------------------------------------------------------------------- */

static void sim_graph_destroy(kern_backend *b, kern_graph *g);

/* The arithmetic is the CPU backend's, so its timing is too. */
static int sim_set_profiling(kern_backend *b, bool on)
{
    return kern_set_profiling(as_sim(b)->cpu, on);
}

static void sim_get_profile(const kern_backend *b, kern_profile *out)
{
    kern_get_profile(as_sim(b)->cpu, out);
}

static void sim_destroy(kern_backend *b)
{
    sim_backend *sim = as_sim(b);
    if (sim->thread_started) {
        pthread_mutex_lock(&sim->mu);
        sim->stop = true;
        pthread_cond_signal(&sim->cv);
        pthread_mutex_unlock(&sim->mu);
        pthread_join(sim->thread, NULL); /* drains what is queued first */
    }
    pthread_mutex_destroy(&sim->mu);
    pthread_cond_destroy(&sim->cv);
    pthread_cond_destroy(&sim->done);
    if (sim->capture) sim_graph_destroy(b, sim->capture);
    kern_close(&sim->cpu);
    if (sim->arena) munmap(sim->arena, sim->arena_bytes);
    free(sim->seg);
    free(sim->pinned);
    free(sim->queue);
    free(sim);
}

static const kern_ops sim_ops;

/* ---- graphs: the calls recorded while capturing, replayed in order --------------------------- */

/* Why sim has graphs: the forward pass replays a captured step on CUDA without running the
 * code that queued it, so whatever that code leaves out of device memory at fixed addresses
 * (a pointer that moved, a count it kept on the host) would be silently stale.  Replaying
 * recorded calls here makes that visible on CI: a replayed step must give the plain step's
 * bits. */
typedef enum sim_op {
    OP_MATMUL,
    OP_MATMUL_BATCHED,
    OP_RMSNORM,
    OP_ROPE,
    OP_KV_STORE,
    OP_ATTENTION,
    OP_SILU_MUL,
    OP_SWIGLU_OAI,
    OP_ADD,
    OP_ADD_BIAS,
    OP_GET_ROWS,
    OP_GATHER,
    OP_ROUTER,
    OP_EXPERTS,
    OP_MOE_ALIGN,
    OP_EXPERTS_ROUTED,
    OP_MOE_COMBINE,
    OP_GATE_ADD,
    OP_COPY,
} sim_op;

/* One recorded call: its pointers, integers and floats in the order of its signature, and
 * copies of the host structs it was given. */
typedef struct sim_call {
    sim_op op;
    const void *p[6];
    int64_t i[6];
    float f[2];
    kern_weight w;
    kern_kv_layout kv;
    kern_rope_yarn yarn;
    bool has_yarn;
    kern_router_opts ro;
    kern_expert_table table;
    kern_moe_plan plan;
    kern_ffn_expert *ex; /* experts: the list, owned */
} sim_call;

struct kern_graph {
    sim_call *calls;
    size_t n;
    uint64_t gen; /* sim->graph_gen at capture */
};

static sim_call *record(kern_backend *b, sim_op op)
{
    sim_backend *sim = as_sim(b);
    kern_graph *g = sim->capture;
    if (sim->capture_rc) return NULL;
    if (g->n % 64 == 0) {
        sim_call *grown = realloc(g->calls, (g->n + 64) * sizeof *grown);
        if (!grown) {
            sim->capture_rc = -ENOMEM;
            snprintf(sim->capture_msg, sizeof sim->capture_msg, "sim: capture: out of memory");
            return NULL;
        }
        g->calls = grown;
    }
    sim_call *c = &g->calls[g->n++];
    memset(c, 0, sizeof *c);
    c->op = op;
    return c;
}

#define REC(op)                                                                                    \
    sim_call *c = record(b, op);                                                                   \
    if (!c) return

static void rec_matmul(kern_backend *b, const kern_weight *w, const float *x, float *y,
                       int64_t n_tokens)
{
    REC(OP_MATMUL);
    c->w = *w, c->p[0] = x, c->p[1] = y, c->i[0] = n_tokens;
}

static void rec_matmul_batched(kern_backend *b, const kern_weight *w, int64_t n_batch,
                               const float *x, float *y, int64_t n_tokens)
{
    REC(OP_MATMUL_BATCHED);
    c->w = *w, c->i[0] = n_batch, c->p[0] = x, c->p[1] = y, c->i[1] = n_tokens;
}

static void rec_rmsnorm(kern_backend *b, const float *x, const float *weight, float *out, int64_t n,
                        int64_t n_rows, int64_t stride, float eps)
{
    REC(OP_RMSNORM);
    c->p[0] = x, c->p[1] = weight, c->p[2] = out, c->i[0] = n, c->i[1] = n_rows, c->i[2] = stride,
    c->f[0] = eps;
}

static void rec_rope(kern_backend *b, float *x, int64_t n_tokens, int n_heads, int head_dim,
                     int n_rot, const int32_t *pos, float freq_base, kern_rope_mode mode,
                     const kern_rope_yarn *yarn)
{
    REC(OP_ROPE);
    c->p[0] = x, c->i[0] = n_tokens, c->i[1] = n_heads, c->i[2] = head_dim, c->i[3] = n_rot,
    c->p[1] = pos, c->f[0] = freq_base, c->i[4] = mode;
    if (yarn) c->yarn = *yarn, c->has_yarn = true;
}

static void rec_kv_store(kern_backend *b, const kern_kv_layout *kv, int layer, const float *k,
                         const float *v, const int32_t *seq, const int32_t *pos, int64_t n_tokens)
{
    REC(OP_KV_STORE);
    c->kv = *kv, c->i[0] = layer, c->p[0] = k, c->p[1] = v, c->p[2] = seq, c->p[3] = pos,
    c->i[1] = n_tokens;
}

static void rec_attention(kern_backend *b, const kern_kv_layout *kv, int layer, const float *q,
                          const int32_t *seq, const int32_t *pos, float *out, int64_t n_tokens,
                          int n_head, int n_head_kv, int head_dim, float scale, int32_t window,
                          const float *sinks)
{
    REC(OP_ATTENTION);
    c->kv = *kv, c->i[0] = layer, c->p[0] = q, c->p[1] = seq, c->p[2] = pos, c->p[3] = out,
    c->i[1] = n_tokens, c->i[2] = n_head, c->i[3] = n_head_kv, c->i[4] = head_dim, c->f[0] = scale,
    c->i[5] = window, c->p[4] = sinks;
}

static void rec_silu_mul(kern_backend *b, const float *gate, const float *up, float *out, int64_t n)
{
    REC(OP_SILU_MUL);
    c->p[0] = gate, c->p[1] = up, c->p[2] = out, c->i[0] = n;
}

static void rec_swiglu_oai(kern_backend *b, const float *gate, const float *up, float *out,
                           int64_t n)
{
    REC(OP_SWIGLU_OAI);
    c->p[0] = gate, c->p[1] = up, c->p[2] = out, c->i[0] = n;
}

static void rec_add(kern_backend *b, float *y, const float *x, int64_t n)
{
    REC(OP_ADD);
    c->p[0] = y, c->p[1] = x, c->i[0] = n;
}

static void rec_add_bias(kern_backend *b, float *x, const float *bias, int64_t n_rows, int64_t dim)
{
    REC(OP_ADD_BIAS);
    c->p[0] = x, c->p[1] = bias, c->i[0] = n_rows, c->i[1] = dim;
}

static void rec_get_rows(kern_backend *b, const kern_weight *w, const int32_t *ids, float *out,
                         int64_t n_ids)
{
    REC(OP_GET_ROWS);
    c->w = *w, c->p[0] = ids, c->p[1] = out, c->i[0] = n_ids;
}

static void rec_gather(kern_backend *b, const float *src, const int32_t *rows, float *dst,
                       int64_t n_rows, int64_t dim)
{
    REC(OP_GATHER);
    c->p[0] = src, c->p[1] = rows, c->p[2] = dst, c->i[0] = n_rows, c->i[1] = dim;
}

static void rec_router(kern_backend *b, const float *logits, int64_t n_tokens,
                       const kern_router_opts *o, int32_t *ids, float *weights)
{
    REC(OP_ROUTER);
    c->p[0] = logits, c->i[0] = n_tokens, c->ro = *o, c->p[1] = ids, c->p[2] = weights;
}

static void rec_experts(kern_backend *b, const kern_ffn_expert *ex, int n_experts, const float *x,
                        float *out, float *g, float *u)
{
    REC(OP_EXPERTS);
    c->ex = malloc((size_t)(n_experts > 0 ? n_experts : 1) * sizeof *ex);
    if (!c->ex) {
        as_sim(b)->capture_rc = -ENOMEM;
        return;
    }
    memcpy(c->ex, ex, (size_t)(n_experts > 0 ? n_experts : 0) * sizeof *ex);
    c->i[0] = n_experts, c->p[0] = x, c->p[1] = out, c->p[2] = g, c->p[3] = u;
}

static void rec_moe_align(kern_backend *b, const int32_t *ids, const float *weights,
                          int64_t n_tokens, int k, int32_t n_expert, const kern_moe_plan *plan)
{
    REC(OP_MOE_ALIGN);
    c->p[0] = ids, c->p[1] = weights, c->i[0] = n_tokens, c->i[1] = k, c->i[2] = n_expert,
    c->plan = *plan;
}

static void rec_experts_routed(kern_backend *b, const kern_expert_table *t,
                               const kern_moe_plan *plan, int64_t n_tokens, int k, const float *x,
                               float *out, float *g, float *u)
{
    REC(OP_EXPERTS_ROUTED);
    c->table = *t, c->plan = *plan, c->i[0] = n_tokens, c->i[1] = k, c->p[0] = x, c->p[1] = out,
    c->p[2] = g, c->p[3] = u;
}

static void rec_moe_combine(kern_backend *b, const float *src, const int32_t *rows,
                            const float *weights, float *out, int64_t n_tokens, int k, int64_t dim)
{
    REC(OP_MOE_COMBINE);
    c->p[0] = src, c->p[1] = rows, c->p[2] = weights, c->p[3] = out, c->i[0] = n_tokens,
    c->i[1] = k, c->i[2] = dim;
}

static void rec_gate_add(kern_backend *b, const float *h, const float *gate, const float *x,
                         float *out, int64_t n_tokens, int64_t dim)
{
    REC(OP_GATE_ADD);
    c->p[0] = h, c->p[1] = gate, c->p[2] = x, c->p[3] = out, c->i[0] = n_tokens, c->i[1] = dim;
}

/* Compute-stream copies are part of the step; the copy stream's are not captured (they run). */
static int rec_copy(kern_backend *b, kern_stream s, void *dst, const void *src, size_t bytes,
                    kern_copy_dir dir)
{
    if (s != KERN_STREAM_COMPUTE) return sim_copy(b, s, dst, src, bytes, dir);
    sim_call *c = record(b, OP_COPY);
    if (!c) return as_sim(b)->capture_rc;
    c->p[0] = dst, c->p[1] = src, c->i[0] = (int64_t)bytes, c->i[1] = dir;
    return 0;
}

static int capture_broken(kern_backend *b, const char *what)
{
    sim_backend *sim = as_sim(b);
    if (!sim->capture_rc) {
        sim->capture_rc = -EBUSY;
        snprintf(sim->capture_msg, sizeof sim->capture_msg,
                 "sim: %s while a graph is captured (the host cannot wait on recorded work)", what);
    }
    return -EBUSY;
}

static int rec_event_wait(kern_backend *b, kern_event *e)
{
    (void)e;
    return capture_broken(b, "kern_event_wait");
}

static int rec_sync(kern_backend *b, char *err, size_t err_size)
{
    capture_broken(b, "kern_sync");
    if (err && err_size) snprintf(err, err_size, "%s", as_sim(b)->capture_msg);
    return -EBUSY;
}

static int sim_capture_begin(kern_backend *b);
static int sim_capture_end(kern_backend *b, kern_graph **out, char *err, size_t err_size);
static int sim_graph_launch(kern_backend *b, kern_graph *g);
static void sim_graph_destroy(kern_backend *b, kern_graph *g);

static const kern_ops sim_capture_ops = {
    .alloc = sim_alloc,
    .free = sim_free,
    .register_host = sim_register,
    .unregister_host = sim_unregister,
    .mem_info = sim_mem_info,
    .copy = rec_copy,
    .event_create = sim_event_create,
    .event_destroy = sim_event_destroy,
    .event_record = sim_event_record,
    .event_query = sim_event_query,
    .event_wait = rec_event_wait,
    .stream_wait = sim_stream_wait,
    .sync = rec_sync,
    .matmul = rec_matmul,
    .matmul_batched = rec_matmul_batched,
    .rmsnorm = rec_rmsnorm,
    .rope = rec_rope,
    .kv_store = rec_kv_store,
    .attention = rec_attention,
    .silu_mul = rec_silu_mul,
    .swiglu_oai = rec_swiglu_oai,
    .add = rec_add,
    .add_bias = rec_add_bias,
    .get_rows = rec_get_rows,
    .gather = rec_gather,
    .router = rec_router,
    .experts = rec_experts,
    .moe_combine = rec_moe_combine,
    .gate_add = rec_gate_add,
    .moe_align = rec_moe_align,
    .experts_routed = rec_experts_routed,
    .capture_begin = sim_capture_begin,
    .capture_end = sim_capture_end,
    .graph_launch = sim_graph_launch,
    .graph_destroy = sim_graph_destroy,
    .set_profiling = sim_set_profiling,
    .get_profile = sim_get_profile,
    .destroy = sim_destroy,
};

static void sim_graph_destroy(kern_backend *b, kern_graph *g)
{
    (void)b;
    for (size_t i = 0; i < g->n; i++)
        free(g->calls[i].ex);
    free(g->calls);
    free(g);
}

static int sim_capture_begin(kern_backend *b)
{
    sim_backend *sim = as_sim(b);
    if (sim->capture) return -EBUSY;
    if (sim->error.code) return sim->error.code; /* a failure to report first */
    if (!(sim->capture = calloc(1, sizeof *sim->capture))) return -ENOMEM;
    sim->capture_rc = 0;
    sim->capture_msg[0] = 0;
    sim->base.ops = &sim_capture_ops;
    return 0;
}

static int sim_capture_end(kern_backend *b, kern_graph **out, char *err, size_t err_size)
{
    sim_backend *sim = as_sim(b);
    *out = NULL;
    if (!sim->capture) {
        snprintf(err, err_size, "sim: capture_end without capture_begin");
        return -EINVAL;
    }
    kern_graph *g = sim->capture;
    sim->capture = NULL;
    sim->base.ops = &sim_ops;
    if (sim->capture_rc) {
        snprintf(err, err_size, "%s", sim->capture_msg);
        sim_graph_destroy(b, g);
        return sim->capture_rc;
    }
    g->gen = sim->graph_gen;
    *out = g;
    return 0;
}

static int sim_graph_launch(kern_backend *b, kern_graph *g)
{
    sim_backend *sim = as_sim(b);
    if (g->gen != sim->graph_gen) return -ESTALE;
    for (size_t i = 0; i < g->n; i++) {
        const sim_call *c = &g->calls[i];
        const void *const *p = c->p;
        const int64_t *n = c->i;
        switch (c->op) {
        case OP_MATMUL:
            sim_matmul(b, &c->w, p[0], (float *)p[1], n[0]);
            break;
        case OP_MATMUL_BATCHED:
            sim_matmul_batched(b, &c->w, n[0], p[0], (float *)p[1], n[1]);
            break;
        case OP_RMSNORM:
            sim_rmsnorm(b, p[0], p[1], (float *)p[2], n[0], n[1], n[2], c->f[0]);
            break;
        case OP_ROPE:
            sim_rope(b, (float *)p[0], n[0], (int)n[1], (int)n[2], (int)n[3], p[1], c->f[0],
                     (kern_rope_mode)n[4], c->has_yarn ? &c->yarn : NULL);
            break;
        case OP_KV_STORE:
            sim_kv_store(b, &c->kv, (int)n[0], p[0], p[1], p[2], p[3], n[1]);
            break;
        case OP_ATTENTION:
            sim_attention(b, &c->kv, (int)n[0], p[0], p[1], p[2], (float *)p[3], n[1], (int)n[2],
                          (int)n[3], (int)n[4], c->f[0], (int32_t)n[5], p[4]);
            break;
        case OP_SILU_MUL:
            sim_silu_mul(b, p[0], p[1], (float *)p[2], n[0]);
            break;
        case OP_SWIGLU_OAI:
            sim_swiglu_oai(b, p[0], p[1], (float *)p[2], n[0]);
            break;
        case OP_ADD:
            sim_add(b, (float *)p[0], p[1], n[0]);
            break;
        case OP_ADD_BIAS:
            sim_add_bias(b, (float *)p[0], p[1], n[0], n[1]);
            break;
        case OP_GET_ROWS:
            sim_get_rows(b, &c->w, p[0], (float *)p[1], n[0]);
            break;
        case OP_GATHER:
            sim_gather(b, p[0], p[1], (float *)p[2], n[0], n[1]);
            break;
        case OP_ROUTER:
            sim_router(b, p[0], n[0], &c->ro, (int32_t *)p[1], (float *)p[2]);
            break;
        case OP_EXPERTS:
            sim_experts(b, c->ex, (int)n[0], p[0], (float *)p[1], (float *)p[2], (float *)p[3]);
            break;
        case OP_MOE_ALIGN:
            sim_moe_align(b, p[0], p[1], n[0], (int)n[1], (int32_t)n[2], &c->plan);
            break;
        case OP_EXPERTS_ROUTED:
            sim_experts_routed(b, &c->table, &c->plan, n[0], (int)n[1], p[0], (float *)p[1],
                               (float *)p[2], (float *)p[3]);
            break;
        case OP_MOE_COMBINE:
            sim_moe_combine(b, p[0], p[1], p[2], (float *)p[3], n[0], (int)n[1], n[2]);
            break;
        case OP_GATE_ADD:
            sim_gate_add(b, p[0], p[1], p[2], (float *)p[3], n[0], n[1]);
            break;
        case OP_COPY: {
            int rc = sim_copy(b, KERN_STREAM_COMPUTE, (void *)p[0], p[1], (size_t)n[0],
                              (kern_copy_dir)n[1]);
            if (rc)
                kern__error_set(&sim->error, rc, "sim: a replayed copy failed: %s", strerror(-rc));
            break;
        }
        }
    }
    return 0;
}

static const kern_ops sim_ops = {
    .alloc = sim_alloc,
    .free = sim_free,
    .register_host = sim_register,
    .unregister_host = sim_unregister,
    .mem_info = sim_mem_info,
    .copy = sim_copy,
    .event_create = sim_event_create,
    .event_destroy = sim_event_destroy,
    .event_record = sim_event_record,
    .event_query = sim_event_query,
    .event_wait = sim_event_wait,
    .stream_wait = sim_stream_wait,
    .sync = sim_sync,
    .matmul = sim_matmul,
    .rmsnorm = sim_rmsnorm,
    .rope = sim_rope,
    .kv_store = sim_kv_store,
    .attention = sim_attention,
    .silu_mul = sim_silu_mul,
    .swiglu_oai = sim_swiglu_oai,
    .add = sim_add,
    .add_bias = sim_add_bias,
    .get_rows = sim_get_rows,
    .gather = sim_gather,
    .router = sim_router,
    .experts = sim_experts,
    .moe_align = sim_moe_align,
    .experts_routed = sim_experts_routed,
    .matmul_batched = sim_matmul_batched,
    .moe_combine = sim_moe_combine,
    .gate_add = sim_gate_add,
    .capture_begin = sim_capture_begin,
    .capture_end = sim_capture_end,
    .graph_launch = sim_graph_launch,
    .graph_destroy = sim_graph_destroy,
    .set_profiling = sim_set_profiling,
    .get_profile = sim_get_profile,
    .destroy = sim_destroy,
};

int kern_sim_open(kern_backend **out, const kern_open_opts *opts, char *err, size_t err_size)
{
    *out = NULL;
    kern_open_opts o = opts ? *opts : kern_open_opts_default();
    sim_backend *sim = calloc(1, sizeof *sim);
    if (!sim) {
        snprintf(err, err_size, "sim backend: out of memory");
        return -ENOMEM;
    }
    sim->base.name = "sim";
    sim->base.kind = KERN_BACKEND_SIM;
    sim->base.ops = &sim_ops;
    sim->fail_in = -1;
    pthread_mutex_init(&sim->mu, NULL);
    pthread_cond_init(&sim->cv, NULL);
    pthread_cond_init(&sim->done, NULL);
    sim->link_bps = (o.sim_link_gbps > 0 ? o.sim_link_gbps : 50.0) * 1e9;
    sim->pageable_bps = (o.sim_pageable_gbps > 0 ? o.sim_pageable_gbps : 6.0) * 1e9;
    sim->latency_ns = (uint64_t)((o.sim_latency_us > 0 ? o.sim_latency_us : 2.8) * 1e3);
    sim->arena_bytes = o.sim_device_bytes ? (size_t)o.sim_device_bytes : (size_t)16 << 30;
    sim->arena_bytes = (sim->arena_bytes + 4095) / 4096 * 4096;
    int rc;
    void *mem = mmap(NULL, sim->arena_bytes, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (mem == MAP_FAILED) {
        rc = -errno;
        snprintf(err, err_size, "sim backend: cannot reserve %zu bytes of device memory: %s",
                 sim->arena_bytes, strerror(errno));
        sim->arena = NULL;
        goto fail;
    }
    sim->arena = mem;
    if ((rc = insert_segment(sim, 0, (segment){.off = 0, .bytes = sim->arena_bytes}))) {
        snprintf(err, err_size, "sim backend: out of memory");
        goto fail;
    }
    kern_cpu_opts co = kern_cpu_opts_default();
    co.n_threads = o.n_threads;
    if ((rc = kern_cpu_open(&sim->cpu, &co, err, err_size))) goto fail;
    if ((rc = -pthread_create(&sim->thread, NULL, copy_thread, sim))) {
        snprintf(err, err_size, "sim backend: cannot start its copy thread: %s", strerror(-rc));
        goto fail;
    }
    sim->thread_started = true;
    *out = &sim->base;
    return 0;
fail:
    sim_destroy(&sim->base);
    return rc;
}

int kern_sim_inject_failure(kern_backend *b, int64_t after_ops, int code)
{
    if (b->kind != KERN_BACKEND_SIM || (after_ops >= 0 && code >= 0)) return -EINVAL;
    as_sim(b)->fail_in = after_ops < 0 ? -1 : after_ops;
    as_sim(b)->fail_code = code;
    return 0;
}

int kern_sim_get_stats(const kern_backend *b, kern_sim_stats *out)
{
    if (b->kind != KERN_BACKEND_SIM) return -EINVAL;
    sim_backend *sim = as_sim(b);
    *out = (kern_sim_stats){
        .copies = atomic_load(&sim->copies),
        .bytes_to_device = atomic_load(&sim->to_device),
        .bytes_to_host = atomic_load(&sim->to_host),
        .link_ns = atomic_load(&sim->link_ns),
        .device_bytes_in_use = sim->in_use,
        .device_bytes_peak = sim->peak,
        .host_waits = atomic_load(&sim->host_waits),
    };
    return 0;
}

int kern_sim_stale_graphs(kern_backend *b)
{
    if (b->kind != KERN_BACKEND_SIM) return -EINVAL;
    as_sim(b)->graph_gen++;
    return 0;
}
