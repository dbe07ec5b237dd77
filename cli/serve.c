/*
 * `moeserve serve`: the OpenAI-compatible server.
 *
 * The socket is bound before the model loads, so that an orchestrator sees the port open and
 * /health answering 503 while a large model is read; a loader thread opens the model, its
 * tokenizer and chat template and then makes the engine ready.  A model that fails to load
 * stops the server with exit status 1 and the reason in the log.
 */
#include "cli/cli.h"
#include "config/config.h"
#include "engine/engine.h"
#include "engine/prompt.h"
#include "model/model.h"
#include "moe_config.h"
#include "server/server.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct serve_state {
    const cfg *c;
    kern_backend *backend;
    kern_backend *miss_cpu; /* a device backend's CPU for its tier's misses */
    model *m;
    tokenizer *tok;
    chat_template *tmpl;
    engine *engine;
    srv_server_t *srv;
    cache_opts cache;
    cache_device_opts device;
    atomic_int load_failed;
} serve_state;

static void usage(FILE *out)
{
    fprintf(out,
            "usage: moeserve serve (--config FILE | --model FILE) [--set KEY=VALUE ...]\n"
            "  --config FILE      deployment config (JSON; docs/configuration.md)\n"
            "  --model FILE       GGUF model (same as --set model.path=FILE)\n"
            "  --host ADDR        same as --set server.host=ADDR\n"
            "  --port N           same as --set server.port=N\n"
            "  --set KEY=VALUE    override one config key, e.g. --set cache.host_bytes=4GiB\n");
}

/* Bytes one position of one sequence takes in the KV cache's storage type. */
static uint64_t kv_bytes_per_position(const model_hparams *hp, cfg_kv_type type)
{
    return model_kv_bytes_per_position(hp, type == CFG_KV_F32 ? 4u : 2u);
}

static uint64_t mem_available_bytes(void)
{
    FILE *f = fopen("/proc/meminfo", "r");
    if (!f) return 0;
    char line[256];
    unsigned long long kib = 0;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "MemAvailable: %llu kB", &kib) == 1) break;
    fclose(f);
    return (uint64_t)kib * 1024;
}

static void server_log(void *user, int level, const char *msg)
{
    (void)user;
    cli_logl(level, "%s", msg);
}

static void cache_log(void *user, const char *msg)
{
    (void)user;
    cli_log("%s", msg);
}

/* The expert cache's options from the config.  "auto" holds every expert when they fit in
 * what the machine has available (less a margin for the KV cache and everything else), else
 * as many as fit; a size or a percentage is taken as given. */
/* Test-only fault injection (tools/soak.py): MOESERVE_TEST_READ_FAULTS=N fails every Nth expert
 * read with EIO, so that a soak shows that retried steps keep every answer complete and right. */
static atomic_uint_fast64_t fault_reads;
static uint64_t fault_every;

static int read_fault(void *user, uint64_t offset, uint32_t len)
{
    return atomic_fetch_add(&fault_reads, 1) % fault_every == fault_every - 1 ? -EIO : 0;
}

static void cache_options(const cfg *c, const model_sizes *sz, cache_opts *co)
{
    *co = cache_opts_default();
    static const cache_policy policies[] = {CACHE_POLICY_LRU, CACHE_POLICY_LFU,
                                            CACHE_POLICY_LRU_PROTECT, CACHE_POLICY_LFU_HISTORY,
                                            CACHE_POLICY_LRU_PREDICT};
    co->policy = policies[c->cache.policy];
    co->queue_depth = (uint32_t)c->io.queue_depth;
    co->direct = c->io.direct == CFG_AUTO ? CACHE_DIRECT_AUTO
                 : c->io.direct == CFG_ON ? CACHE_DIRECT_ON
                                          : CACHE_DIRECT_OFF;
    co->log = cache_log;
    uint64_t avail = mem_available_bytes(), dense = sz->dense_bytes;
    /* 0: the machine's memory is unknown, no limit; else 80% of what the dense part leaves. */
    uint64_t room = avail == 0 ? 0 : avail > dense ? (avail - dense) / 10 * 8 : 1;
    cli_cache_budget(co, &c->cache.host_bytes, sz->expert_bytes, room);
    const char *faults = getenv("MOESERVE_TEST_READ_FAULTS");
    if (faults && strtoull(faults, NULL, 10) > 0) {
        fault_every = strtoull(faults, NULL, 10);
        co->fault = read_fault;
        cli_log("MOESERVE_TEST_READ_FAULTS: every %llu-th expert read fails (a test setting)",
                (unsigned long long)fault_every);
    }
}

/* The model file is mapped: if it is truncated under the server, touching a lost page raises
 * SIGBUS.  The engine checks the file's size before every step and fails requests cleanly, but
 * a truncation racing a step can still hit a page; then the process says what happened and
 * exits (EX_IOERR) instead of dumping core with no word. */
static const char *mapped_at;
static size_t mapped_size;

static void on_sigbus(int sig, siginfo_t *si, void *uc)
{
    (void)uc;
    const char *a = si->si_addr;
    if (mapped_at && a >= mapped_at && a < mapped_at + mapped_size) {
        static const char msg[] = "moeserve: a page of the model file could not be read (the "
                                  "file was truncated while serving?): exiting\n";
        ssize_t w = write(STDERR_FILENO, msg, sizeof msg - 1);
        (void)w;
        _exit(74);
    }
    signal(sig, SIG_DFL); /* not ours: the default action, as if no handler were installed */
    raise(sig);
}

static void watch_mapping(const gguf_file *f)
{
    mapped_at = gguf_mapping(f, &mapped_size);
    struct sigaction sa = {0};
    sa.sa_sigaction = on_sigbus;
    sa.sa_flags = SA_SIGINFO;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGBUS, &sa, NULL) != 0) cli_log("cannot watch SIGBUS: %s", strerror(errno));
}

static int load_model(serve_state *st, char *err, size_t err_size)
{
    const cfg *c = st->c;
    /* auto starts as none: whether guessing pays is known once the cache is open */
    static const pred_kind kinds[] = {PRED_NONE, PRED_PREGATE, PRED_AFFINITY, PRED_HYBRID,
                                      PRED_NONE};
    model_opts mo = {.backend = st->backend,
                     .cpu_backend = st->miss_cpu,
                     .miss_policy = (model_miss_policy)c->cache.miss_policy,
                     .predictor = kinds[c->predictor.kind],
                     .lookahead = c->predictor.lookahead,
                     .width = c->predictor.width,
                     .min_prob = (float)c->predictor.prefetch_threshold / 100.0f};
    int rc = model_open(&st->m, c->model.path, &mo, err, err_size);
    if (rc == 0) watch_mapping(model_file(st->m));
    if (rc) return rc;
    /* The cache comes second: its budget is resolved against the model's sizes. */
    model_sizes sz;
    model_get_sizes(st->m, &sz);
    cache_options(c, &sz, &st->cache);
    cli_log("memory: dense weights %.1f MiB (mapped), experts %.1f MiB in the file, expert cache "
            "budget %s",
            (double)sz.dense_bytes / (1 << 20), (double)sz.expert_bytes / (1 << 20),
            st->cache.budget_bytes || st->cache.budget_fraction > 0 ? "set" : "all experts");
    st->device = cache_device_opts_default();
    st->device.policy = st->cache.policy;
    st->device.pinning = (cache_pinning)c->cache.host_pinning;
    st->device.ring_bytes = c->cache.staging_bytes;
    st->device.stage_threads = c->cache.staging_threads;
    st->device.log = cache_log;
    cache_opts dev_budget = cache_opts_default();
    cli_cache_budget(&dev_budget, &c->cache.device_bytes, sz.expert_bytes, 0);
    st->device.budget_bytes = dev_budget.budget_bytes;
    st->device.budget_fraction = dev_budget.budget_fraction;
    {
        /* auto: what the device has free after the dense weights, less the KV cache's most and
         * a margin for scratch */
        const model_hparams *h = model_params(st->m);
        int32_t n_ctx = c->kv.context_length > 0 ? c->kv.context_length : h->n_ctx_train;
        uint64_t kv_max = kv_bytes_per_position(h, c->kv.type) * (uint64_t)n_ctx *
                          (uint64_t)c->batching.max_running;
        uint64_t kv = cfg_budget_resolve(&c->kv.budget_bytes, kv_max, kv_max);
        st->device.reserve_bytes = (kv < kv_max ? kv : kv_max) + ((uint64_t)1 << 30);
    }
    rc = model_open_expert_cache(st->m, &st->cache, &st->device, err, err_size);
    if (rc) return rc;
    cache_stats near;
    cache_get_stats(model_expert_cache(st->m), &near);
    bool device_tier = model_expert_cache(st->m) != model_host_cache(st->m);
    if (c->predictor.kind == CFG_PREDICTOR_AUTO && device_tier && !near.all_resident) {
        /* Copies to hide: pre-gating halves the device tier's stall at a quarter of the experts
         * resident, where on the host tier (disk reads of this VM) it was measured not to pay
         * (docs/benchmarks.md, "The routing predictor on a trained model"). */
        mo.predictor = PRED_PREGATE;
        if ((rc = model_start_predictor(st->m, &mo, err, err_size))) return rc;
    }
    cache_stats cs;
    cache_get_stats(model_host_cache(st->m), &cs);
    cli_log("expert cache, host tier: %u of %llu experts (%.1f MiB, %s, %s), policy %s, "
            "predictor %s",
            cs.n_slots, (unsigned long long)sz.n_experts_total, (double)cs.arena_bytes / (1 << 20),
            cs.direct ? "O_DIRECT" : "buffered", cs.uring ? "io_uring" : "pread",
            cache_policy_name(st->cache.policy), pred_kind_name(mo.predictor));
    if (c->predictor.kind == CFG_PREDICTOR_AUTO)
        cli_log("predictor auto: %s", mo.predictor == PRED_NONE
                                          ? "none (no device tier short of experts)"
                                          : "pregate (the device tier holds part of the experts)");
    if (model_expert_cache(st->m) != model_host_cache(st->m)) {
        cache_get_stats(model_expert_cache(st->m), &cs);
        cli_log("expert cache, device tier: %u of %llu experts (%.1f MiB of %s device memory)",
                cs.n_slots, (unsigned long long)sz.n_experts_total,
                (double)cs.arena_bytes / (1 << 20), st->backend->name);
        /* model_forward's rule (docs/architecture.md, "Routing on the device") */
        if (!cs.all_resident)
            cli_log("routing: through the host each layer (the device tier holds part of the "
                    "experts: the host decides each miss)");
        else
            cli_log("routing: on the device (every expert there)%s%s",
                    c->compute.graphs == CFG_OFF
                        ? "; graphs off"
                        : "; each step shape is replayed as a graph once it has run",
                    mo.predictor != PRED_NONE ? "; the predictor idles (nothing to prefetch)" : "");
    }
    const model_hparams *hp = model_params(st->m);
    rc = tokenizer_create(&st->tok, model_file(st->m), err, err_size);
    if (rc) return rc;
    rc =
        prompt_template_create(&st->tmpl, model_file(st->m), c->model.chat_template, err, err_size);
    if (rc) return rc;
    if (!st->tmpl)
        cli_log("the model has no chat template: /v1/chat/completions is refused; set "
                "model.chat_template to a built-in name to serve chat");

    scheduler_opts so = scheduler_opts_default();
    so.max_running = c->batching.max_running;
    so.max_tokens_per_step = c->batching.max_tokens_per_step;
    so.prefill_chunk = c->batching.prefill_chunk;
    so.max_waiting = c->server.queue_depth;
    so.n_ctx = c->kv.context_length > 0 ? c->kv.context_length : hp->n_ctx_train;
    uint64_t per_pos = kv_bytes_per_position(hp, c->kv.type);
    so.kv_type = c->kv.type == CFG_KV_F32 ? KERN_KV_F32 : KERN_KV_F16;
    so.prefix_cache = c->kv.prefix_cache != CFG_OFF;
    so.no_graphs = c->compute.graphs == CFG_OFF;
    uint64_t want = per_pos * (uint64_t)so.n_ctx * (uint64_t)so.max_running;
    uint64_t budget = cfg_budget_resolve(&c->kv.budget_bytes, want, want);
    if (want > budget) {
        /* Shrink the context to the budget rather than failing: what matters is saying so. */
        int64_t fit = (int64_t)(budget / (per_pos * (uint64_t)so.max_running));
        if (fit < 16) {
            snprintf(err, err_size,
                     "kv.budget_bytes (%llu) cannot hold %d sequences of even 16 positions "
                     "(%llu bytes per position per sequence)",
                     (unsigned long long)budget, so.max_running, (unsigned long long)per_pos);
            return -EINVAL;
        }
        cli_log("kv budget %llu bytes: context length %d -> %lld positions per sequence",
                (unsigned long long)budget, so.n_ctx, (long long)fit);
        so.n_ctx = (int32_t)fit;
    }
    if (so.prefix_cache && c->kv.prefix_cache_bytes.kind != CFG_BUDGET_AUTO) {
        uint64_t kv_total = per_pos * (uint64_t)so.n_ctx * (uint64_t)so.max_running;
        uint64_t bytes = cfg_budget_resolve(&c->kv.prefix_cache_bytes, kv_total, kv_total);
        uint64_t blocks = bytes / (per_pos * 16); /* the KV cache's blocks of 16 positions */
        so.prefix_cache_blocks = blocks < 1 ? 1 : blocks > INT32_MAX ? INT32_MAX : (int32_t)blocks;
        cli_log("prefix cache: at most %d unheld blocks (%.1f MiB) kept for reuse",
                so.prefix_cache_blocks,
                (double)((uint64_t)so.prefix_cache_blocks * per_pos * 16) / (1 << 20));
    }
    cli_log("kv cache (%s, paged: memory grows with the positions held): at most %d sequences x "
            "%d positions = %.1f MiB",
            c->kv.type == CFG_KV_F32 ? "f32" : "f16", so.max_running, so.n_ctx,
            (double)(per_pos * (uint64_t)so.n_ctx * (uint64_t)so.max_running) / (1 << 20));
    return engine_start(st->engine, st->m, st->tok, st->tmpl, &so, err, err_size);
}

static void *loader_main(void *arg)
{
    serve_state *st = arg;
    char err[1024];
    if (load_model(st, err, sizeof err)) {
        cli_log("cannot load the model: %s", err);
        atomic_store(&st->load_failed, 1);
        srv_stop(st->srv);
        return NULL;
    }
    cli_log("model %s ready: serving as \"%s\"", st->c->model.path, st->c->model.name);
    return NULL;
}

static int parse_args(cfg *c, int argc, char **argv)
{
    char err[2048], assign[4096];
    const char *config_path = NULL;
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--config") && i + 1 < argc) config_path = argv[++i];
    if (config_path && cfg_load_file(c, config_path, err, sizeof err)) {
        fprintf(stderr, "moeserve serve: %s\n", err);
        return 2;
    }
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        const char *key = NULL;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            return -1;
        } else if (!strcmp(a, "--config") && v) {
            i++;
            continue;
        } else if (!strcmp(a, "--set") && v) {
            snprintf(assign, sizeof assign, "%s", v);
        } else if (!strcmp(a, "--model") && v) {
            key = "model.path";
        } else if (!strcmp(a, "--host") && v) {
            key = "server.host";
        } else if (!strcmp(a, "--port") && v) {
            key = "server.port";
        } else {
            fprintf(stderr, "moeserve serve: unknown or incomplete option '%s'\n", a);
            usage(stderr);
            return 2;
        }
        if (key) snprintf(assign, sizeof assign, "%s=%s", key, v);
        i++;
        if (cfg_set(c, assign, err, sizeof err)) {
            fprintf(stderr, "moeserve serve: %s\n", err);
            return 2;
        }
    }
    if (cfg_validate(c, err, sizeof err)) {
        fprintf(stderr, "moeserve serve: %s\n", err);
        return 2;
    }
    return 0;
}

int cli_serve(int argc, char **argv)
{
    char err[1024];
    cfg c;
    if (cfg_defaults(&c, err, sizeof err)) {
        fprintf(stderr, "moeserve serve: %s\n", err);
        return 1;
    }
    int rc = parse_args(&c, argc, argv);
    if (rc) {
        cfg_free(&c);
        return rc < 0 ? 0 : rc;
    }

    cli_log_setup((int)c.log.level, c.log.format == CFG_LOG_JSON);
    /* compute.backend auto follows gpu.enabled; saying yes to a GPU that cannot be used must
     * not quietly run on the CPU, so gpu.enabled true asks for CUDA outright. */
    static const kern_backend_kind kinds[] = {KERN_BACKEND_CPU, KERN_BACKEND_CPU, KERN_BACKEND_SIM,
                                              KERN_BACKEND_CUDA};
    kern_backend_kind kind = kinds[c.compute.backend];
    bool want_auto = false;
    if (c.compute.backend == CFG_BACKEND_AUTO) {
        if (c.gpu.enabled == CFG_ON)
            kind = KERN_BACKEND_CUDA;
        else
            want_auto = c.gpu.enabled == CFG_AUTO && c.gpu.device >= 0;
    }
    if (kind == KERN_BACKEND_CUDA && !want_auto) {
        char why[256];
        int n_dev = kern_cuda_probe(why, sizeof why);
        if (n_dev <= c.gpu.device || !MOE_HAVE_CUDA) {
            fprintf(stderr,
                    "moeserve serve: %s asks for the CUDA backend, but it cannot run: %s%s\n",
                    c.compute.backend == CFG_BACKEND_CUDA ? "compute.backend \"cuda\""
                                                          : "gpu.enabled true",
                    MOE_HAVE_CUDA ? why : "this build has no CUDA backend",
                    MOE_HAVE_CUDA && n_dev > 0 ? " (gpu.device is out of range)" : "");
            cfg_free(&c);
            return 2;
        }
    }

    int status = 1;
    serve_state st = {.c = &c};
    atomic_init(&st.load_failed, 0);
    pthread_t loader;
    bool loader_started = false;
    if (cli_open_backend(&st.backend, c.compute.threads, kind, want_auto,
                         c.gpu.device < 0 ? 0 : c.gpu.device, false))
        goto done;
    if (cli_open_miss_backend(st.backend, c.compute.threads, c.cache.miss_policy, &st.miss_cpu))
        goto done;
    if (st.backend->kind == KERN_BACKEND_CPU && c.cache.device_bytes.kind != CFG_BUDGET_AUTO)
        cli_logl(CLI_LOG_WARN, "cache.device_bytes is ignored: the CPU backend has no device tier");
    if (engine_open(&st.engine, err, sizeof err)) goto fail_msg;

    srv_opts_t so = srv_opts_default();
    so.host = c.server.host;
    so.port = c.server.port;
    so.model_id = c.model.name;
    so.max_header_bytes = (size_t)c.server.max_header_bytes;
    so.max_body_bytes = (size_t)c.server.max_body_bytes;
    so.max_connections = c.server.max_connections;
    so.header_timeout_ms = (uint32_t)c.server.header_timeout_ms;
    so.idle_timeout_ms = (uint32_t)c.server.idle_timeout_ms;
    so.drain_timeout_ms = (uint32_t)c.server.drain_timeout_ms;
    so.replica = c.server.replica;
    so.api_keys = (const char *const *)c.server.api_keys.items;
    so.n_api_keys = c.server.api_keys.count;
    so.log_requests = c.log.level >= CFG_LOG_DEBUG;
    so.log = server_log;
    so.write_metrics = engine_write_metrics;
    so.write_expert_stats = engine_write_expert_stats;
    so.metrics_user = st.engine;
    srv_engine_t ops = engine_ops(st.engine);
    if (srv_open(&st.srv, &so, &ops, err, sizeof err)) goto fail_msg;
    cli_log("listening on http://%s:%d (model loading)", c.server.host, srv_port(st.srv));
    /* Scripts and tests that asked for port 0 learn the real one from stdout. */
    printf("listening on %s:%d\n", c.server.host, srv_port(st.srv));
    fflush(stdout);

    rc = pthread_create(&loader, NULL, loader_main, &st);
    if (rc) {
        snprintf(err, sizeof err, "cannot start the loader thread: %s", strerror(rc));
        goto fail_msg;
    }
    loader_started = true;
    srv_run(st.srv);
    pthread_join(loader, NULL);
    loader_started = false;
    status = atomic_load(&st.load_failed) ? 1 : 0;
    cli_log("shut down");
    goto done;

fail_msg:
    fprintf(stderr, "moeserve serve: %s\n", err);
done:
    if (loader_started) {
        srv_stop(st.srv);
        pthread_join(loader, NULL);
    }
    engine_close(&st.engine);
    srv_close(&st.srv);
    chat_template_destroy(&st.tmpl);
    tokenizer_destroy(&st.tok);
    model_close(&st.m);
    kern_close(&st.miss_cpu);
    kern_close(&st.backend);
    cfg_free(&c);
    return status;
}
