/*
 * `moeserve bench`: prefill and decode throughput of a model on this machine, next to the
 * physical limit.  Decoding an MoE model streams the dense weights and the selected experts
 * once per step, so the floor for a step is (bytes it must read) / (memory read bandwidth);
 * the benchmark measures that bandwidth itself with the same threads, counts the bytes each
 * step really read (dense + distinct selected experts), and prints achieved time against the
 * floor.  Weights are touched once before timing so that page faults of the mapping are not
 * counted as compute.
 */
#include "cli/cli.h"
#include "gguf/gguf.h"
#include "kernels/cpu/cpu.h"
#include "kernels/cuda/cuda.h"
#include "model/model.h"
#include "tokenizer/tokenizer.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* A device's memory bandwidth: device-to-device copies read and write every byte. */
static double device_bandwidth(kern_backend *be, size_t bytes)
{
    double t = kern_copy_seconds(be, KERN_COPY_ON_DEVICE, bytes, 10);
    return t > 0 ? 2.0 * (double)bytes / t : 0.0;
}

/* Host-to-device copies from pinned memory: the link the device tier is filled through. */
static double link_bandwidth(kern_backend *be, size_t bytes)
{
    double t = kern_copy_seconds(be, KERN_COPY_TO_DEVICE, bytes, 5);
    return t > 0 ? (double)bytes / t : 0.0;
}

static double measure_bandwidth(kern_backend *be, size_t bytes)
{
    /* the CPU's read bandwidth on cpu and sim (which computes with the CPU) */
    if (be->kind == KERN_BACKEND_CUDA) return device_bandwidth(be, bytes);
    return kern_cpu_best_read_bandwidth(be, bytes, 10);
}

/* Routed experts: stacked `blk.L.ffn_X_exps.weight` or legacy `blk.L.ffn_X.E.weight`. */
static bool is_expert_tensor(const char *name, size_t len)
{
    if (memmem(name, len, "_exps.", 6)) return true;
    static const char *const parts[] = {"ffn_gate.", "ffn_up.", "ffn_down."};
    for (int p = 0; p < 3; p++) {
        const char *at = memmem(name, len, parts[p], strlen(parts[p]));
        size_t rest = at ? len - (size_t)(at - name) - strlen(parts[p]) : 0;
        if (at && rest > 0 && at[strlen(parts[p])] >= '0' && at[strlen(parts[p])] <= '9')
            return true;
    }
    return false;
}

/* Fault in the mapping once (the benchmark measures compute on resident weights); with the
 * expert cache only the dense tensors, since the experts come through the cache's own reads. */
static void touch_file(const gguf_file *f, bool dense_only)
{
    volatile uint8_t sink = 0;
    for (uint64_t i = 0; i < gguf_n_tensors(f); i++) {
        const gguf_tensor *t = gguf_tensor_at(f, i);
        if (dense_only && is_expert_tensor(t->name.data, (size_t)t->name.len)) continue;
        const uint8_t *p = t->data;
        for (uint64_t off = 0; off < t->n_bytes; off += 4096)
            sink ^= p[off];
    }
    (void)sink;
}

typedef struct bench_opts {
    const char *path;
    long n_threads;
    long batch;
    long n_prompt;
    long n_gen;
    int header;
    int random_tokens;
    const char *text_path; /* --text FILE: prompts and decode tokens cut from this text */
    int profile;
    int host_routing;    /* --host-routing: the host round trip per layer even where not needed */
    int no_graphs;       /* --no-graphs: every step queued, none replayed */
    int no_tensor_cores; /* --no-tensor-cores: CUDA batches on the dp4a kernel */
    cli_cache_args cache;
} bench_opts;

static void usage(FILE *out)
{
    fprintf(
        out,
        "usage: moeserve bench --model FILE [--threads N] [--batch B] [--prompt P] [--gen G] "
        "[--no-header]\n"
        "  --threads N   CPU threads (default: all)\n"
        "  --batch B     sequences decoded together (default 1)\n"
        "  --prompt P    prompt tokens prefilled per sequence (default 64)\n"
        "  --gen G       decode steps timed (default 32)\n"
        "  --expert-cache SIZE|N%%|all|min|off   experts through the cache with this budget\n"
        "                (default off: experts read through the file's mapping)\n"
        "  --direct auto|on|off  O_DIRECT reads  --policy "
        "lru|lfu|lru-protect|lfu-history|lru-predict  "
        "--io-depth N\n"
        "  --trace FILE  record the routing trace (replay: moeserve cache-replay)\n"
        "  --predictor none|pregate|affinity|hybrid  guess (and prefetch) the coming layers' "
        "experts\n"
        "  --lookahead N layers guessed ahead (default 1)  --width N  guesses per token (default "
        "top-k)\n"
        "  --min-prob P  least probability prefetched (default auto: 0.1 rising to 0.5 as steps "
        "wait on reads)\n"
        "  --backend auto|cpu|sim|cuda  compute backend (default auto)\n"
        "  --device-cache SIZE|N%%|all|min  device tier budget (device backends; default all)\n"
        "  --kv-type f16|f32  KV cache storage (default f16)\n"
        "  --host-pinning auto|tier|ring  copies to the device from the registered host tier or "
        "via a pinned ring\n"
        "  --staging-threads N  threads that fill the pinned ring (default 0: a quarter of the "
        "cores, 1 to 4)\n"
        "  --miss-policy auto|copy|cpu  a device tier's misses: copied in or computed on the CPU\n"
        "  --profile     time each operation of the prefill and of the decode steps (a table\n"
        "                each; on a device its own time, and graphs are off while timing)\n"
        "  --host-routing  route every layer through the host even with every expert on the\n"
        "                device (what routing on the device saves)\n"
        "  --no-graphs   queue every step (no graph replays; what graphs save)\n"
        "  --no-tensor-cores  run CUDA batches (prefill) on the dp4a kernel, not the int8\n"
        "                tensor cores (the same bits; what the tensor cores save)\n"
        "  --random-tokens  decode random tokens instead of the greedy ones (routing that\n"
        "                varies like text's on random-weight models)\n"
        "  --text FILE   prompts and decoded tokens are the file's text, tokenized by the model\n"
        "                (sequence s reads the window after s's; decode is teacher-forced): the\n"
        "                routing of real text, for the predictor and the cache on trained "
        "models\n");
}

/* The predictor's counters at a moment, to count the decode steps apart from the prefill. */
typedef struct pred_snapshot {
    pred_layer_stats *layer; /* [n_layer] */
    pred_layer_stats depth[PRED_MAX_LOOKAHEAD];
} pred_snapshot;

static int snapshot_predictor(const pred *p, int n_layer, pred_snapshot *out)
{
    if (!out->layer && !(out->layer = calloc((size_t)n_layer, sizeof *out->layer))) {
        fprintf(stderr, "moeserve bench: out of memory\n");
        return -1;
    }
    for (int il = 0; il < n_layer; il++)
        pred_get_stats(p, il, &out->layer[il]);
    for (int d = 1; d <= PRED_MAX_LOOKAHEAD; d++)
        pred_get_depth_stats(p, d, &out->depth[d - 1]);
    return 0;
}

static pred_layer_stats since(const pred_layer_stats *now, const pred_layer_stats *then)
{
    return (pred_layer_stats){.steps = now->steps - then->steps,
                              .guessed = now->guessed - then->guessed,
                              .used = now->used - then->used,
                              .correct = now->correct - then->correct};
}

static double pct(uint64_t part, uint64_t whole)
{
    return whole ? 100.0 * (double)part / (double)whole : 0.0;
}

/* The --text file, tokenized by the model's tokenizer: at least `need` tokens. */
static int read_text_tokens(const bench_opts *o, const model *m, size_t need, int32_t **ids)
{
    char err[512];
    FILE *f = fopen(o->text_path, "rb");
    if (!f) {
        fprintf(stderr, "moeserve bench: cannot open %s: %s\n", o->text_path, strerror(errno));
        return -1;
    }
    char *text = NULL;
    size_t len = 0, cap = 0;
    for (;;) {
        if (len + 65536 > cap) {
            char *grown = realloc(text, cap = 2 * cap + 65536);
            if (!grown) {
                free(text);
                fclose(f);
                fprintf(stderr, "moeserve bench: out of memory reading %s\n", o->text_path);
                return -1;
            }
            text = grown;
        }
        size_t got = fread(text + len, 1, cap - len, f);
        len += got;
        if (got == 0) break;
    }
    int failed = ferror(f);
    fclose(f);
    tokenizer *tok = NULL;
    size_t n = 0;
    int rc = failed ? -EIO : tokenizer_create(&tok, model_file(m), err, sizeof err);
    if (rc == 0) rc = tokenizer_encode(tok, text, len, 0, ids, &n, err, sizeof err);
    tokenizer_destroy(&tok);
    free(text);
    if (rc) {
        fprintf(stderr, "moeserve bench: %s: %s\n", o->text_path, failed ? "read error" : err);
        return -1;
    }
    if (n < need) {
        fprintf(stderr,
                "moeserve bench: %s has %zu tokens; --batch x (--prompt + --gen) needs %zu\n",
                o->text_path, n, need);
        free(*ids);
        *ids = NULL;
        return -1;
    }
    return 0;
}

/* What one phase (the prefill, or the decode steps) asked of a device tier: the tier's counters
 * before and after, and the misses the CPU computed. */
typedef struct tier_phase {
    cache_stats before, after;
    uint64_t cpu_experts, cpu_bytes, cpu_ns, cpu_wait_ns;
    int32_t steps;
    double seconds;
} tier_phase;

static void phase_add(tier_phase *ph, const model_step_stats *st)
{
    ph->cpu_experts += st->cpu_experts;
    ph->cpu_bytes += st->cpu_bytes;
    ph->cpu_ns += st->cpu_ns;
    ph->cpu_wait_ns += st->cpu_wait_ns;
}

/* The misses' two ways run at the same time, so the floor of a phase's misses is the longer of
 * the link's share (copied bytes at the link's rate) and the CPU's (its bytes at its read
 * bandwidth); the best split's floor moves bytes from the slower way to the faster until both
 * take as long: every missed byte at the two rates together (no split does better, and one
 * within a miss of it exists).  Each phase's step is also at least `floor_s`, every byte it
 * reads at the device's memory bandwidth. */
static void print_device_tier(const char *phase, const tier_phase *ph, double link, double cpu_bw,
                              double floor_s)
{
    double n = ph->steps > 0 ? ph->steps : 1;
    double copied = (double)(ph->after.bytes_read - ph->before.bytes_read) / n;
    double on_cpu = (double)ph->cpu_bytes / n;
    double link_floor = copied / link, cpu_floor = cpu_bw > 0 ? on_cpu / cpu_bw : 0;
    double chosen = link_floor > cpu_floor ? link_floor : cpu_floor;
    double best = (copied + on_cpu) / (link + cpu_bw);
    if (best < floor_s) best = floor_s;
    double achieved = ph->seconds / n;
    printf("| device tier, %s | %.1f MiB copied/step | link floor %.2f ms/step | %.1f "
           "experts/step computed on the CPU (%.1f MiB, %.2f ms/step; floor %.2f at %.1f GB/s), "
           "waited for %.2f ms/step | misses' floor %.2f ms/step | best split's floor %.2f "
           "ms/step, achieved %.2f (%.0f%%) |\n",
           phase, copied / (1 << 20), link_floor * 1e3, (double)ph->cpu_experts / n,
           on_cpu / (1 << 20), (double)ph->cpu_ns / n / 1e6, cpu_floor * 1e3, cpu_bw / 1e9,
           (double)ph->cpu_wait_ns / n / 1e6, chosen * 1e3, best * 1e3, achieved * 1e3,
           achieved > 0 ? 100.0 * best / achieved : 0.0);
}

/* Where a decode step's time goes: each operation, and what is outside them.  On the CPU that
 * is routing and bucketing on the host, the expert cache and the step's bookkeeping; on a
 * device the operations' times are the device's, and the gap row is the device's idle time
 * between them (launches, host round trips), the rest of the step's wall time being the
 * host's own. */
static void print_profile(kern_backend *be, const char *phase, int32_t G, double t_decode)
{
    kern_profile pr;
    kern_get_profile(be, &pr);
    kern_set_profiling(be, false);
    uint64_t in_ops = 0;
    printf("| operation (%s) | calls/step | us/step | share of the step |\n|---|---|---|---|\n",
           phase);
    for (int op = 0; op < KERN_OP_COUNT; op++) {
        if (!pr.calls[op]) continue;
        in_ops += pr.ns[op];
        printf("| %s | %.1f | %.1f | %.1f%% |\n", kern_op_name((kern_op)op),
               (double)pr.calls[op] / G, (double)pr.ns[op] / G / 1e3,
               100.0 * (double)pr.ns[op] * 1e-9 / t_decode);
    }
    if (pr.device_time) {
        printf("| %s idle between them | | %.1f | %.1f%% |\n", be->name,
               (double)pr.gap_ns / G / 1e3, 100.0 * (double)pr.gap_ns * 1e-9 / t_decode);
        in_ops += pr.gap_ns;
    }
    printf("| outside the operations | | %.1f | %.1f%% |\n",
           (t_decode * 1e9 - (double)in_ops) / G / 1e3,
           100.0 * (1.0 - (double)in_ops * 1e-9 / t_decode));
    if (pr.untimed)
        printf("| untimed calls | %.1f | | (graph launches, or more calls between syncs than "
               "the backend holds) |\n",
               (double)pr.untimed / G);
}

static int run(bench_opts *o)
{
    int status = 1;
    char err[512];
    kern_backend *be = NULL, *cpu = NULL;
    model *m = NULL;
    model_ctx *ctx = NULL;
    int32_t *tok = NULL, *pos = NULL, *seq = NULL, *text_ids = NULL;
    float *logits = NULL;
    pred_snapshot pred0 = {0}, pred1 = {0};
    if (cli_open_backend(&be, (int)o->n_threads, o->cache.backend, o->cache.backend_auto, 0,
                         o->no_tensor_cores))
        goto done;
    if (cli_open_miss_backend(be, (int)o->n_threads, o->cache.miss_policy, &cpu)) goto done;
    model_opts mo = {.backend = be,
                     .predictor = o->cache.predictor,
                     .lookahead = o->cache.lookahead,
                     .width = o->cache.width,
                     .min_prob = o->cache.min_prob,
                     .cpu_backend = cpu,
                     .miss_policy = (model_miss_policy)o->cache.miss_policy};
    if (cli_cache_args_open(&o->cache, &mo.expert_cache, &mo.device_cache)) goto done;
    if (model_open(&m, o->path, &mo, err, sizeof err)) {
        fprintf(stderr, "moeserve bench: %s\n", err);
        goto done;
    }
    cli_log_expert_tiers(m);
    const model_hparams *hp = model_params(m);
    int32_t B = (int32_t)o->batch, P = (int32_t)o->n_prompt, G = (int32_t)o->n_gen;
    model_ctx_opts co = {.n_seq = B,
                         .n_ctx = P + G + 1,
                         .kv_type = o->cache.kv_type,
                         .host_routing = o->host_routing,
                         /* a replayed graph cannot be timed operation by operation */
                         .no_graphs = o->no_graphs || (o->profile && be->kind != KERN_BACKEND_CPU)};
    if (model_ctx_create(&ctx, m, &co, err, sizeof err)) {
        fprintf(stderr, "moeserve bench: %s\n", err);
        goto done;
    }
    size_t n_max = (size_t)(P > B ? P : B);
    tok = malloc(n_max * sizeof *tok);
    pos = malloc(n_max * sizeof *pos);
    seq = malloc(n_max * sizeof *seq);
    logits = malloc((size_t)B * (size_t)hp->n_vocab * sizeof *logits);
    if (!tok || !pos || !seq || !logits) {
        fprintf(stderr, "moeserve bench: out of memory\n");
        goto done;
    }

    if (o->text_path && read_text_tokens(o, m, (size_t)B * (size_t)(P + G), &text_ids)) goto done;
    touch_file(model_file(m), o->cache.enabled);
    double bw = measure_bandwidth(be, (size_t)1 << 30);

    int prof_rc = o->profile ? kern_set_profiling(be, true) : 0;
    if (prof_rc)
        fprintf(stderr,
                "moeserve bench: --profile: the %s backend cannot time its operations: %s\n",
                be->name, strerror(-prof_rc));

    /* Prefill: each sequence's prompt in one step; token ids from a fixed LCG. */
    uint32_t lcg = 12345;
    double t_prefill = 0.0;
    uint64_t prefill_macs = 0, pre_bytes = 0;
    tier_phase pre = {.steps = B}, dec = {.steps = G};
    if (model_expert_cache(m)) cache_get_stats(model_expert_cache(m), &pre.before);
    int32_t *next = malloc((size_t)B * sizeof *next);
    if (!next) goto done;
    for (int32_t s = 0; s < B; s++) {
        for (int32_t i = 0; i < P; i++) {
            lcg = lcg * 1664525u + 1013904223u;
            tok[i] = text_ids ? text_ids[(size_t)s * (size_t)(P + G) + (size_t)i]
                              : (int32_t)((lcg >> 8) % (uint32_t)hp->n_vocab);
            pos[i] = i;
            seq[i] = s;
        }
        model_batch b = {.n_tokens = P, .token = tok, .pos = pos, .seq = seq};
        double t0 = now_s();
        int rc = model_forward(ctx, &b, logits, err, sizeof err);
        t_prefill += now_s() - t0;
        const model_step_stats *st = model_ctx_last_stats(ctx);
        prefill_macs += st->matmul_macs;
        pre_bytes += st->dense_bytes + st->expert_bytes;
        phase_add(&pre, st);
        if (rc) {
            fprintf(stderr, "moeserve bench: %s\n", err);
            free(next);
            goto done;
        }
        next[s] = model_argmax(logits, hp->n_vocab);
    }

    pre.seconds = t_prefill;

    /* Decode: G steps, each advancing every sequence by one greedy token. */
    cache_stats c0 = {0}, c1 = {0};
    if (model_expert_cache(m)) cache_get_stats(model_expert_cache(m), &c0);
    pre.after = dec.before = c0;
    if (model_predictor(m) && snapshot_predictor(model_predictor(m), hp->n_layer, &pred0)) {
        free(next);
        goto done;
    }
    double t_decode = 0.0;
    uint64_t bytes = 0, experts = 0;
    int routed = 0, replayed = 0;
    if (o->profile && !prof_rc) {
        print_profile(be, "prefill", B, t_prefill);
        prof_rc = kern_set_profiling(be, true);
    }
    uint8_t *want = malloc((size_t)B);
    if (!want) {
        free(next);
        goto done;
    }
    memset(want, 1, (size_t)B);
    for (int32_t g = 0; g < G; g++) {
        for (int32_t s = 0; s < B; s++) {
            /* Greedy decoding of a random-weight model soon repeats one token, and with it one
             * routing: random tokens route like text does, so the tiers see real misses. */
            lcg = lcg * 1664525u + 1013904223u;
            tok[s] = text_ids           ? text_ids[(size_t)s * (size_t)(P + G) + (size_t)(P + g)]
                     : o->random_tokens ? (int32_t)((lcg >> 8) % (uint32_t)hp->n_vocab)
                                        : next[s];
            pos[s] = P + g;
            seq[s] = s;
        }
        model_batch b = {.n_tokens = B, .token = tok, .pos = pos, .seq = seq, .want_logits = want};
        double t0 = now_s();
        int rc = model_forward(ctx, &b, logits, err, sizeof err);
        t_decode += now_s() - t0;
        if (rc) {
            fprintf(stderr, "moeserve bench: %s\n", err);
            free(want);
            free(next);
            goto done;
        }
        const model_step_stats *st = model_ctx_last_stats(ctx);
        bytes += st->dense_bytes + st->expert_bytes;
        experts += st->experts_used;
        phase_add(&dec, st);
        routed += st->routed_on_device;
        replayed += st->graph_replayed;
        for (int32_t s = 0; s < B; s++)
            next[s] = model_argmax(logits + (size_t)s * hp->n_vocab, hp->n_vocab);
    }
    free(want);
    free(next);
    if (model_expert_cache(m)) cache_get_stats(model_expert_cache(m), &c1);
    dec.after = c1;
    dec.seconds = t_decode;

    double step_s = t_decode / G;
    if (o->profile && !prof_rc) print_profile(be, "decode", G, t_decode);
    double step_bytes = (double)bytes / G;
    double floor_s = step_bytes / bw;
    const char *base = strrchr(o->path, '/');
    base = base ? base + 1 : o->path;
    if (o->header) {
        printf(
            "| model | threads | batch | prompt | prefill tok/s | prefill GFLOP/s | decode tok/s "
            "| prefill/decode | MiB read/step | experts/step | bandwidth GB/s | floor ms/step "
            "| achieved ms/step | floor/achieved |\n");
        printf("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
    }
    double prefill_tps = (double)P * B / t_prefill, decode_tps = B / step_s;
    printf("| %s | %d | %d | %d | %.1f | %.1f | %.2f | %.1fx | %.1f | %.1f | %.1f | %.2f | %.2f | "
           "%.0f%% |\n",
           base, kern_cpu_n_threads(be), B, P, prefill_tps,
           2.0 * (double)prefill_macs / t_prefill / 1e9, decode_tps, prefill_tps / decode_tps,
           step_bytes / (1024.0 * 1024.0), (double)experts / G, bw / 1e9, floor_s * 1e3,
           step_s * 1e3, 100.0 * floor_s / step_s);
    if (be->kind != KERN_BACKEND_CPU) {
        double link = link_bandwidth(be, (size_t)256 << 20);
        printf("| %s backend | memory %.1f GB/s (%s) | pinned host-to-device copies %.1f GB/s | "
               "experts routed on the device in %d of %d decode steps, %d replayed as a graph%s%s "
               "|\n",
               be->name, bw / 1e9,
               be->kind == KERN_BACKEND_CUDA ? "device copy, read + write" : "CPU read", link / 1e9,
               routed, G, replayed, model_ctx_graph_error(ctx) ? ": " : "",
               model_ctx_graph_error(ctx) ? model_ctx_graph_error(ctx) : "");
        if (kern_cuda_matmul_note(be)) printf("| cuda matmul | %s |\n", kern_cuda_matmul_note(be));
        if (model_expert_cache(m) != model_host_cache(m) && link > 0) {
            double cpu_bw = cpu ? kern_cpu_best_read_bandwidth(cpu, (size_t)256 << 20, 3) : 0;
            print_device_tier("prefill", &pre, link, cpu_bw, (double)pre_bytes / B / bw);
            print_device_tier("decode", &dec, link, cpu_bw, floor_s);
        }
    }
    if (model_expert_cache(m)) {
        uint64_t req = (c1.hits - c0.hits) + (c1.misses - c0.misses);
        double read = (double)(c1.bytes_read - c0.bytes_read);
        printf("| expert cache | %u of %llu experts (%.0f MiB, %s, %s) | decode hit rate %.1f%% | "
               "read %.1f MiB/step | stall %.2f ms/step | read %.0f MB/s over decode | "
               "prefetched %llu, used %llu, wasted %llu |\n",
               c1.n_slots, (unsigned long long)hp->n_layer * (unsigned long long)hp->n_expert,
               (double)c1.arena_bytes / (1 << 20), c1.direct ? "O_DIRECT" : "buffered",
               c1.uring ? "io_uring" : "pread",
               req ? 100.0 * (double)(c1.hits - c0.hits) / (double)req : 0.0, read / G / (1 << 20),
               (double)(c1.stall_ns - c0.stall_ns) / G / 1e6, read / t_decode / 1e6,
               (unsigned long long)(c1.prefetch_issued - c0.prefetch_issued),
               (unsigned long long)(c1.prefetch_used - c0.prefetch_used),
               (unsigned long long)(c1.prefetch_wasted - c0.prefetch_wasted));
    }
    if (model_predictor(m) && routed == G) {
        printf("| predictor | %s | idle: every expert on the device, nothing to prefetch |\n",
               pred_kind_name(pred_get_kind(model_predictor(m))));
    } else if (model_predictor(m)) { /* the decode steps' guesses (prefill guesses a batch) */
        const pred *pr = model_predictor(m);
        if (snapshot_predictor(pr, hp->n_layer, &pred1)) goto done;
        pred_layer_stats sum = {0};
        for (int il = 0; il < hp->n_layer; il++) {
            pred_layer_stats ls = since(&pred1.layer[il], &pred0.layer[il]);
            sum.guessed += ls.guessed;
            sum.used += ls.used;
            sum.correct += ls.correct;
        }
        printf("| predictor | %s, width %d per token | precision %.1f%% | recall %.1f%% | (decode "
               "steps, layers 1..%d, one layer ahead) |\n",
               pred_kind_name(pred_get_kind(pr)), pred_width(pr), pct(sum.correct, sum.guessed),
               pct(sum.correct, sum.used), hp->n_layer - 1);
        for (int d = 2; d <= pred_lookahead(pr); d++) {
            pred_layer_stats ds = since(&pred1.depth[d - 1], &pred0.depth[d - 1]);
            if (ds.steps == 0) continue;
            printf("| predictor %d layers ahead | %s, width %d | precision %.1f%% | recall %.1f%% "
                   "| |\n",
                   d, pred_kind_name(pred_get_kind(pr)), pred_width(pr),
                   pct(ds.correct, ds.guessed), pct(ds.correct, ds.used));
        }
        printf("| predictor per layer | precision / recall |");
        for (int il = 1; il < hp->n_layer; il++) {
            pred_layer_stats ls = since(&pred1.layer[il], &pred0.layer[il]);
            printf(" L%d %.1f%% / %.1f%% |", il, pct(ls.correct, ls.guessed),
                   pct(ls.correct, ls.used));
        }
        printf("\n");
    }
    fflush(stdout);
    status = 0;
done:
    free(tok);
    free(pos);
    free(seq);
    free(logits);
    free(text_ids);
    free(pred0.layer);
    free(pred1.layer);
    model_ctx_destroy(&ctx);
    model_close(&m);
    kern_close(&cpu);
    kern_close(&be);
    cli_cache_args_close(&o->cache);
    return status;
}

int cli_bench(int argc, char **argv)
{
    bench_opts o = {.batch = 1, .n_prompt = 64, .n_gen = 32, .header = 1};
    cli_cache_args_init(&o.cache);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        int used = v ? cli_cache_arg(&o.cache, a, v) : 0;
        if (used < 0) return 2;
        if (used) {
            i++;
            continue;
        }
        long *target = NULL;
        long lo = 1, hi = 1 << 20;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(a, "--no-header")) {
            o.header = 0;
            continue;
        } else if (!strcmp(a, "--random-tokens")) {
            o.random_tokens = 1;
            continue;
        } else if (!strcmp(a, "--profile")) {
            o.profile = 1;
            continue;
        } else if (!strcmp(a, "--host-routing")) {
            o.host_routing = 1;
            continue;
        } else if (!strcmp(a, "--no-graphs")) {
            o.no_graphs = 1;
            continue;
        } else if (!strcmp(a, "--no-tensor-cores")) {
            o.no_tensor_cores = 1;
            continue;
        } else if (!strcmp(a, "--model") && v) {
            o.path = v, i++;
            continue;
        } else if (!strcmp(a, "--text") && v) {
            o.text_path = v, i++;
            continue;
        } else if (!strcmp(a, "--threads")) {
            target = &o.n_threads, lo = 0, hi = 1024;
        } else if (!strcmp(a, "--batch")) {
            target = &o.batch, hi = 4096;
        } else if (!strcmp(a, "--prompt")) {
            target = &o.n_prompt;
        } else if (!strcmp(a, "--gen")) {
            target = &o.n_gen;
        }
        if (!target || !v) {
            fprintf(stderr, "moeserve bench: unknown or incomplete option '%s'\n", a);
            usage(stderr);
            return 2;
        }
        if (cli_parse_int(a, v, lo, hi, target)) return 2;
        i++;
    }
    if (!o.path) {
        usage(stderr);
        return 2;
    }
    return run(&o);
}
