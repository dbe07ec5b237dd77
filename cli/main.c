/*
 * moeserve's entry point: picks the subcommand and nothing else.
 */
#include "cli/cli.h"
#include "kernels/cpu/cpu.h"
#include "kernels/cuda/cuda.h"
#include "moe_config.h"

#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static void usage(FILE *out)
{
    fprintf(
        out,
        "usage: moeserve <command> [options]\n"
        "\n"
        "commands:\n"
        "  inspect FILE         architecture, hyper-parameters, tensors and memory needs of a GGUF "
        "model\n"
        "  generate [options]   greedy generation from token ids, printing tokens/s\n"
        "  bench [options]      prefill and decode throughput against the memory-bandwidth floor\n"
        "  cache-replay TRACE   hit rates of the expert-cache policies on a recorded routing "
        "trace\n"
        "  serve [options]      the OpenAI-compatible HTTP server (--config FILE or --model FILE)\n"
        "  config check FILE    validate a deployment config (`config show FILE` prints it in "
        "full)\n"
        "\n"
        "`moeserve <command> --help` describes each command's options.\n");
}

/* Log settings: one process, one log; set once by `serve` from the config before any thread
 * starts, read-only afterwards. */
static int log_level = CLI_LOG_INFO;
static bool log_json;

void cli_log_setup(int level, bool json)
{
    log_level = level;
    log_json = json;
}

static void json_escape_to(FILE *out, const char *s)
{
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\')
            fprintf(out, "\\%c", ch);
        else if (ch < 0x20)
            fprintf(out, "\\u%04x", ch);
        else
            fputc(ch, out);
    }
}

void cli_logl(int level, const char *fmt, ...)
{
    if (level > log_level) return;
    static const char *const names[] = {"error", "warn", "info", "debug"};
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    char stamp[32], msg[2048];
    strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%S", &tm);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    /* Threads log concurrently (loop, loader, engine): one locked write per line keeps lines
     * whole. */
    flockfile(stderr);
    if (log_json) {
        /* One object per line, for log shippers. */
        fprintf(stderr, "{\"time\":\"%s.%03ldZ\",\"level\":\"%s\",\"msg\":\"", stamp,
                ts.tv_nsec / 1000000,
                names[level < 0   ? 0
                      : level > 3 ? 3
                                  : level]);
        json_escape_to(stderr, msg);
        fputs("\"}\n", stderr);
    } else {
        fprintf(stderr, "%s.%03ldZ moeserve: %s\n", stamp, ts.tv_nsec / 1000000, msg);
    }
    funlockfile(stderr);
}

void cli_log(const char *fmt, ...)
{
    if (log_level < CLI_LOG_INFO) return;
    char msg[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    cli_logl(CLI_LOG_INFO, "%s", msg);
}

int cli_parse_int(const char *opt, const char *text, long min, long max, long *out)
{
    char *end = NULL;
    errno = 0;
    long v = text ? strtol(text, &end, 10) : 0;
    if (!text || !*text || *end || errno || v < min || v > max) {
        fprintf(stderr, "moeserve: %s expects an integer in [%ld, %ld], got '%s'\n", opt, min, max,
                text ? text : "");
        return -EINVAL;
    }
    *out = v;
    return 0;
}

int cli_open_backend(kern_backend **out, int n_threads, kern_backend_kind kind, bool want_auto,
                     int device, bool no_tensor_cores)
{
    char msg[256];
    kern_open_opts o = kern_open_opts_default();
    o.kind = kind;
    o.n_threads = n_threads;
    o.device = device;
    o.no_tensor_cores = no_tensor_cores;
    if (want_auto) {
        if (kern_cuda_probe(msg, sizeof msg) > 0 && MOE_HAVE_CUDA) {
            cli_log("%s", msg);
            o.kind = KERN_BACKEND_CUDA;
        } else {
            cli_log("%s: running on the CPU backend", msg);
            o.kind = KERN_BACKEND_CPU;
        }
    }
    int rc = kern_open(out, &o, msg, sizeof msg);
    if (rc) {
        fprintf(stderr, "moeserve: %s\n", msg);
        return rc;
    }
    size_t free_b = 0, total_b = 0;
    switch ((*out)->kind) {
    case KERN_BACKEND_CPU:
        cli_log("cpu backend: %d threads, %s kernels", kern_cpu_n_threads(*out),
                kern_isa_name(kern_cpu_backend_isa(*out)));
        break;
    case KERN_BACKEND_SIM:
        (void)kern_mem_info(*out, &free_b, &total_b);
        cli_log(
            "sim backend: a simulated device of %.1f GiB behind a modelled PCIe link, computing "
            "with %d CPU threads (%s kernels)",
            (double)total_b / (1 << 30), kern_cpu_n_threads(*out),
            kern_isa_name(kern_cpu_backend_isa(*out)));
        break;
    default:
        (void)kern_mem_info(*out, &free_b, &total_b);
        cli_log("%s backend: %.1f of %.1f GiB of device memory free; %s", (*out)->name,
                (double)free_b / (1 << 30), (double)total_b / (1 << 30),
                kern_cuda_matmul_note(*out) ? kern_cuda_matmul_note(*out) : "");
        break;
    }
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    const char *cmd = argv[1];
    if (!strcmp(cmd, "inspect")) return cli_inspect(argc - 1, argv + 1);
    if (!strcmp(cmd, "generate")) return cli_generate(argc - 1, argv + 1);
    if (!strcmp(cmd, "bench")) return cli_bench(argc - 1, argv + 1);
    if (!strcmp(cmd, "cache-replay")) return cli_cache_replay(argc - 1, argv + 1);
    if (!strcmp(cmd, "config")) return cli_config(argc - 1, argv + 1);
    if (!strcmp(cmd, "serve")) return cli_serve(argc - 1, argv + 1);
    if (!strcmp(cmd, "--help") || !strcmp(cmd, "-h") || !strcmp(cmd, "help")) {
        usage(stdout);
        return 0;
    }
    if (!strcmp(cmd, "--version")) {
        printf("moeserve %s (CUDA backend %s)\n", MOE_VERSION,
               MOE_HAVE_CUDA ? "built" : "not built");
        return 0;
    }
    fprintf(stderr, "moeserve: unknown command '%s'\n", cmd);
    usage(stderr);
    return 2;
}
