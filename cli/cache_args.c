/*
 * The expert-cache options that `generate` and `bench` share, so that a budget means the same
 * thing on every command: a size ("4GiB", "512MB", bytes), a share of all experts ("25%"),
 * "all", "min" (one token's experts of one layer: the worst case), or "off" (experts read through the file's mapping, the default for these tools).
 */
#include "cli/cli.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int parse_budget(const char *v, cli_cache_args *a)
{
    char *end;
    if (!strcmp(v, "off")) {
        a->enabled = false;
        return 0;
    }
    a->enabled = true;
    if (!strcmp(v, "all")) {
        a->opts.budget_bytes = 0;
        return 0;
    }
    if (!strcmp(v, "min")) {
        a->opts.budget_min = true;
        return 0;
    }
    errno = 0;
    double x = strtod(v, &end);
    if (end == v || errno || x <= 0) return -EINVAL;
    if (!strcmp(end, "%")) {
        if (x > 100) return -EINVAL;
        a->opts.budget_fraction = x / 100.0;
        return 0;
    }
    static const struct {
        const char *suffix;
        double mult;
    } units[] = {{"", 1},       {"B", 1},         {"KB", 1e3},       {"MB", 1e6},
                 {"GB", 1e9},   {"TB", 1e12},     {"KiB", 1024.0},   {"MiB", 1048576.0},
                 {"GiB", 1073741824.0}, {"TiB", 1099511627776.0}};
    for (size_t i = 0; i < sizeof units / sizeof units[0]; i++) {
        if (!strcmp(end, units[i].suffix)) {
            double b = x * units[i].mult;
            if (b >= 1.8e19) return -EINVAL;
            a->opts.budget_bytes = (uint64_t)b;
            return 0;
        }
    }
    return -EINVAL;
}

void cli_cache_args_init(cli_cache_args *a)
{
    memset(a, 0, sizeof *a);
    a->opts = cache_opts_default();
}

int cli_cache_arg(cli_cache_args *a, const char *opt, const char *v)
{
    if (!strcmp(opt, "--expert-cache")) {
        if (parse_budget(v, a)) {
            fprintf(stderr, "--expert-cache expects a size (4GiB, 512MB, bytes), a share of all "
                            "experts (25%%), 'all', 'min' or 'off'; got '%s'\n", v);
            return -EINVAL;
        }
        return 1;
    }
    if (!strcmp(opt, "--direct")) {
        if (!strcmp(v, "auto")) a->opts.direct = CACHE_DIRECT_AUTO;
        else if (!strcmp(v, "on")) a->opts.direct = CACHE_DIRECT_ON;
        else if (!strcmp(v, "off")) a->opts.direct = CACHE_DIRECT_OFF;
        else {
            fprintf(stderr, "--direct expects auto, on or off; got '%s'\n", v);
            return -EINVAL;
        }
        return 1;
    }
    if (!strcmp(opt, "--policy")) {
        if (cache_policy_parse(v, &a->opts.policy)) {
            fprintf(stderr, "--policy expects lru, lfu, lru-protect or lfu-history; got '%s'\n", v);
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
            fprintf(stderr, "--predictor expects none, pregate or affinity; got '%s'\n", v);
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

int cli_cache_args_open(cli_cache_args *a, const cache_opts **out)
{
    *out = NULL;
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
