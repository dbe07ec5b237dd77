/*
 * The moeserve command line: one function per subcommand, each taking its own argv (after
 * the subcommand name) and returning the process exit status.  Only main() exits.
 */
#ifndef MOE_CLI_H
#define MOE_CLI_H

#include "cache/cache.h"
#include "config/config.h"
#include "kernels/kernels.h"
#include "predictor/predictor.h"

#include <stdbool.h>
#include <stdio.h>

int cli_inspect(int argc, char **argv);
int cli_generate(int argc, char **argv);
int cli_bench(int argc, char **argv);
int cli_cache_replay(int argc, char **argv);
int cli_config(int argc, char **argv);
int cli_serve(int argc, char **argv);

/* Opens the compute backend: `kind` (cpu, sim, cuda), or with want_auto the CUDA backend
 * when a device is usable and the CPU otherwise.  Logs which one runs and why: a CUDA build
 * on a machine without a device says so in one line; an explicit cuda without one fails.
 * no_tensor_cores keeps CUDA batches on the dp4a kernel (bench's --no-tensor-cores). */
int cli_open_backend(kern_backend **out, int n_threads, kern_backend_kind kind, bool want_auto,
                     int device, bool no_tensor_cores);

/* Strict number parsing for options: the whole string must be a number within [min, max]. */
int cli_parse_int(const char *opt, const char *text, long min, long max, long *out);

/* --expert-cache SIZE|N%|all|min|off, --direct auto|on|off, --policy
 * lru|lfu|lru-protect|lfu-history, --io-depth N,
 * --trace FILE, --predictor none|pregate|affinity|hybrid, --lookahead, --width, --min-prob: the
 * expert cache and routing predictor
 * as `generate` and `bench` take them (cache_args.c). */
typedef struct cli_cache_args {
    bool enabled;
    cache_opts opts;
    /* --backend auto|cpu|sim|cuda, --device-cache SIZE|N%|all|min (the device tier in front of
     * the host tier; on a device backend without it, the device tier holds every expert),
     * --kv-type f16|f32, --host-pinning auto|tier|ring */
    kern_backend_kind backend;
    bool backend_auto;
    bool device_enabled;
    cache_device_opts device;
    kern_kv_type kv_type;
    int miss_policy; /* --miss-policy auto|copy|cpu (model_miss_policy) */
    const char *trace_path;
    FILE *trace;
    pred_kind predictor; /* --predictor none|pregate|affinity|hybrid */
    int32_t lookahead;   /* --lookahead N */
    int32_t width;       /* --width N: guesses per token (0: top-k) */
    float min_prob;      /* --min-prob P: least probability prefetched (0: auto) */
} cli_cache_args;
void cli_cache_args_init(cli_cache_args *a);
/* A budget as the cache takes it: a percentage is a share of all experts, bytes are bytes,
 * auto is every expert unless room (bytes the tier may use; 0: no limit) is smaller. */
void cli_cache_budget(cache_opts *co, const cfg_budget *b, uint64_t expert_bytes, uint64_t room);
/* 1 when opt was one of these (its value consumed), 0 when not, negative after a message. */
int cli_cache_arg(cli_cache_args *a, const char *opt, const char *value);
/* *out: the options to put in model_opts.expert_cache (NULL when off); *device: those for
 * model_opts.device_cache (NULL when not given). */
int cli_cache_args_open(cli_cache_args *a, const cache_opts **out,
                        const cache_device_opts **device);
void cli_cache_args_close(cli_cache_args *a);
/* One log line per expert tier of an opened model (slots, bytes, I/O mode), nothing without a
 * cache. */
struct model;
void cli_log_expert_tiers(const struct model *m);
/* A device backend computes its tier's misses on the CPU (policy auto or cpu): opens that CPU
 * backend (*out NULL for the CPU backend itself, or policy copy). */
int cli_open_miss_backend(const kern_backend *be, int n_threads, int miss_policy,
                          kern_backend **out);

/* Logs go to stderr, one line each: text ("<time> moeserve: message") or JSON objects
 * ({"time","level","msg"}); messages above the level are dropped.  cli_log is level info. */
enum { CLI_LOG_ERROR = 0, CLI_LOG_WARN, CLI_LOG_INFO, CLI_LOG_DEBUG };
void cli_log_setup(int level, bool json);
void cli_logl(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void cli_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
