/*
 * The expert-cache options that `generate` and `bench` share, so that a budget means the same
 * thing on every command and in the config file: a size ("4GiB", "512MB", bytes), a share of
 * all experts ("25%"), "all"/"auto", plus for these tools "min" (one token's experts of one
 * layer: the worst case) and "off" (experts read through the file's mapping, their default).
 */
#include "cli/cli.h"
#include "kernels/cpu/cpu.h"
#include "model/model.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

void cli_cache_budget(cache_opts *co, const cfg_budget *b, uint64_t expert_bytes, uint64_t room)
{
    co->budget_bytes = 0; /* 0: every expert */
    co->budget_fraction = 0;
    switch (b->kind) {
    case CFG_BUDGET_PERCENT:
        co->budget_fraction = b->percent / 100.0;
        break;
    case CFG_BUDGET_BYTES:
        co->budget_bytes = b->bytes;
        break;
    case CFG_BUDGET_AUTO:
        if (room && room < expert_bytes) co->budget_bytes = room;
        break;
    }
}

/* The config's budget syntax (sizes, "auto"/"all", "N%"), plus "min" and "off". */
static int parse_budget(const char *opt, const char *v, bool *enabled, cache_opts *co)
{
    if (!strcmp(v, "off")) {
        *enabled = false;
        return 0;
    }
    *enabled = true;
    if (!strcmp(v, "min")) {
        co->budget_min = true;
        return 0;
    }
    cfg_budget b;
    char err[256];
    if (cfg_parse_budget(v, &b, err, sizeof err)) {
        fprintf(stderr, "%s '%s': %s\n", opt, v, err);
        return -EINVAL;
    }
    cli_cache_budget(co, &b, 0, 0);
    return 0;
}

void cli_cache_args_init(cli_cache_args *a)
{
    memset(a, 0, sizeof *a);
    a->opts = cache_opts_default();
    a->device = cache_device_opts_default();
    a->backend = KERN_BACKEND_CPU;
    a->backend_auto = true;
    a->kv_type = KERN_KV_F16;
}

int cli_cache_arg(cli_cache_args *a, const char *opt, const char *v)
{
    if (!strcmp(opt, "--expert-cache")) {
        if (parse_budget(opt, v, &a->enabled, &a->opts)) return -EINVAL; /* it said why */
        return 1;
    }
    if (!strcmp(opt, "--device-cache")) {
        cache_opts d = cache_opts_default();
        if (!strcmp(v, "off")) {
            fprintf(stderr, "--device-cache: a device backend always has a device tier; give a "
                            "budget (SIZE, N%%, all or min)\n");
            return -EINVAL;
        }
        if (parse_budget(opt, v, &a->device_enabled, &d)) return -EINVAL;
        a->device.budget_bytes = d.budget_bytes;
        a->device.budget_fraction = d.budget_fraction;
        a->device.budget_min = d.budget_min;
        return 1;
    }
    if (!strcmp(opt, "--backend")) {
        a->backend_auto = !strcmp(v, "auto");
        if (!a->backend_auto && kern_backend_kind_parse(v, &a->backend)) {
            fprintf(stderr, "--backend expects auto, cpu, sim or cuda; got '%s'\n", v);
            return -EINVAL;
        }
        return 1;
    }
    if (!strcmp(opt, "--host-pinning")) {
        if (!strcmp(v, "auto"))
            a->device.pinning = CACHE_PIN_AUTO;
        else if (!strcmp(v, "tier"))
            a->device.pinning = CACHE_PIN_TIER;
        else if (!strcmp(v, "ring"))
            a->device.pinning = CACHE_PIN_RING;
        else {
            fprintf(stderr, "--host-pinning expects auto, tier or ring; got '%s'\n", v);
            return -EINVAL;
        }
        a->device_enabled = true; /* the device tier's options travel; its budget stays auto */
        return 1;
    }
    if (!strcmp(opt, "--staging-threads")) {
        char *end;
        long n = strtol(v, &end, 10);
        if (*v == '\0' || *end || n < 0 || n > 64) {
            fprintf(stderr, "--staging-threads expects 0 (auto) to 64; got '%s'\n", v);
            return -EINVAL;
        }
        a->device.stage_threads = (int)n;
        a->device_enabled = true;
        return 1;
    }
    if (!strcmp(opt, "--miss-policy")) {
        model_miss_policy p;
        if (model_miss_policy_parse(v, &p)) {
            fprintf(stderr, "--miss-policy expects auto, copy or cpu; got '%s'\n", v);
            return -EINVAL;
        }
        a->miss_policy = (int)p;
        return 1;
    }
    if (!strcmp(opt, "--kv-type")) {
        if (!strcmp(v, "f16"))
            a->kv_type = KERN_KV_F16;
        else if (!strcmp(v, "f32"))
            a->kv_type = KERN_KV_F32;
        else {
            fprintf(stderr, "--kv-type expects f16 or f32; got '%s'\n", v);
            return -EINVAL;
        }
        return 1;
    }
    if (!strcmp(opt, "--direct")) {
        if (!strcmp(v, "auto"))
            a->opts.direct = CACHE_DIRECT_AUTO;
        else if (!strcmp(v, "on"))
            a->opts.direct = CACHE_DIRECT_ON;
        else if (!strcmp(v, "off"))
            a->opts.direct = CACHE_DIRECT_OFF;
        else {
            fprintf(stderr, "--direct expects auto, on or off; got '%s'\n", v);
            return -EINVAL;
        }
        return 1;
    }
    if (!strcmp(opt, "--policy")) {
        if (cache_policy_parse(v, &a->opts.policy)) {
            fprintf(
                stderr,
                "--policy expects lru, lfu, lru-protect, lfu-history or lru-predict; got '%s'\n",
                v);
            return -EINVAL;
        }
        return 1;
    }
    if (!strcmp(opt, "--io-depth")) {
        long n;
        if (cli_parse_int(opt, v, 1, 4096, &n)) return -EINVAL;
        a->opts.queue_depth = (uint32_t)n;
        return 1;
    }
    if (!strcmp(opt, "--predictor")) {
        if (pred_kind_parse(v, &a->predictor)) {
            fprintf(stderr, "--predictor expects none, pregate, affinity or hybrid; got '%s'\n", v);
            return -EINVAL;
        }
        return 1;
    }
    if (!strcmp(opt, "--lookahead")) {
        long n;
        if (cli_parse_int(opt, v, 1, 8, &n)) return -EINVAL;
        a->lookahead = (int32_t)n;
        return 1;
    }
    if (!strcmp(opt, "--width")) {
        long n;
        if (cli_parse_int(opt, v, 1, PRED_MAX_WIDTH, &n)) return -EINVAL;
        a->width = (int32_t)n;
        return 1;
    }
    if (!strcmp(opt, "--min-prob")) {
        char *end;
        float p = strtof(v, &end);
        if (end == v || *end || !(p > 0.0f && p <= 1.0f)) {
            fprintf(stderr, "--min-prob expects a probability in (0, 1]; got '%s'\n", v);
            return -EINVAL;
        }
        a->min_prob = p;
        return 1;
    }
    if (!strcmp(opt, "--trace")) {
        a->trace_path = v;
        return 1;
    }
    return 0;
}

static void log_line(void *user, const char *msg)
{
    (void)user;
    cli_log("%s", msg);
}

int cli_cache_args_open(cli_cache_args *a, const cache_opts **out, const cache_device_opts **device)
{
    *out = NULL;
    *device = NULL;
    if (a->device_enabled) {
        a->device.policy = a->opts.policy;
        a->device.log = log_line;
        *device = &a->device;
    }
    if (!a->enabled) return 0;
    if (a->trace_path) {
        a->trace = fopen(a->trace_path, "w");
        if (!a->trace) {
            fprintf(stderr, "cannot write the routing trace %s: %s\n", a->trace_path,
                    strerror(errno));
            return -errno;
        }
        a->opts.trace = a->trace;
    }
    a->opts.log = log_line;
    *out = &a->opts;
    return 0;
}

void cli_cache_args_close(cli_cache_args *a)
{
    if (a->trace) fclose(a->trace);
    a->trace = NULL;
}

void cli_log_expert_tiers(const model *m)
{
    const cache *host = model_host_cache(m), *near = model_expert_cache(m);
    if (!host) return;
    cache_stats cs;
    cache_get_stats(host, &cs);
    model_sizes sz;
    model_get_sizes(m, &sz);
    uint64_t total = sz.n_experts_total; /* a leading dense layer has none */
    cli_log("expert cache, host tier: %u of %llu experts (%.1f MiB, %s, %s)", cs.n_slots,
            (unsigned long long)total, (double)cs.arena_bytes / (1 << 20),
            cs.direct ? "O_DIRECT" : "buffered", cs.uring ? "io_uring" : "pread");
    if (near == host) return;
    cache_get_stats(near, &cs);
    cli_log("expert cache, device tier: %u of %llu experts (%.1f MiB of device memory)", cs.n_slots,
            (unsigned long long)total, (double)cs.arena_bytes / (1 << 20));
}

int cli_open_miss_backend(const kern_backend *be, int n_threads, int miss_policy,
                          kern_backend **out)
{
    *out = NULL;
    if (be->kind == KERN_BACKEND_CPU || miss_policy == MODEL_MISS_COPY) return 0;
    /* One core fewer than asked: while the CPU lane computes, the engine thread keeps feeding
     * the device and waiting on its copies (a CUDA wait spins), and a pool thread sharing its
     * core would hold up every job it takes a chunk of. */
    if (n_threads <= 0) n_threads = (int)sysconf(_SC_NPROCESSORS_ONLN);
    kern_open_opts o = kern_open_opts_default();
    o.n_threads = n_threads > 1 ? n_threads - 1 : 1;
    char err[256];
    int rc = kern_open(out, &o, err, sizeof err);
    if (rc) {
        fprintf(stderr, "moeserve: the CPU backend for the device tier's misses: %s\n", err);
        return rc;
    }
    if (miss_policy == MODEL_MISS_CPU)
        cli_log("device tier misses: policy cpu, computed on the CPU with %d threads",
                kern_cpu_n_threads(*out));
    else
        cli_log("device tier misses: policy %s, split between copies and the CPU (%d threads), "
                "which run at the same time",
                model_miss_policy_name((model_miss_policy)miss_policy), kern_cpu_n_threads(*out));
    return 0;
}
