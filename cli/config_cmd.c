/*
 * `moeserve config check|show FILE [--set KEY=VALUE ...]`: what `serve --config` would run
 * with, without starting anything.  check prints "ok" or every error (exit 2); show prints the
 * effective config, every default filled in, as JSON that loads back to the same config.
 */
#include "cli/cli.h"
#include "config/config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void usage(FILE *out)
{
    fprintf(out, "usage: moeserve config check FILE [--set KEY=VALUE ...]\n"
                 "       moeserve config show FILE [--set KEY=VALUE ...]\n"
                 "  check              load and validate FILE: prints \"ok\" (exit 0) or the "
                 "errors (exit 2)\n"
                 "  show               print the effective config as JSON, defaults filled in\n"
                 "  --set KEY=VALUE    override one key, e.g. --set cache.host_bytes=4GiB\n"
                 "Keys, types and defaults: docs/configuration.md.\n");
}

int cli_config(int argc, char **argv)
{
    if (argc >= 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
        usage(stdout);
        return 0;
    }
    if (argc < 3 || (strcmp(argv[1], "check") && strcmp(argv[1], "show"))) {
        usage(stderr);
        return 2;
    }
    const bool show = !strcmp(argv[1], "show");
    const char *path = argv[2];
    char err[8192];
    cfg c;
    if (cfg_defaults(&c, err, sizeof err)) {
        fprintf(stderr, "moeserve config: %s\n", err);
        return 1;
    }
    int status = 2;
    if (cfg_load_file(&c, path, err, sizeof err)) {
        fprintf(stderr, "%s\n", err);
        goto done;
    }
    for (int i = 3; i < argc; i++) {
        if (strcmp(argv[i], "--set") || i + 1 >= argc) {
            fprintf(stderr, "moeserve config: unknown or incomplete option '%s'\n", argv[i]);
            usage(stderr);
            goto done;
        }
        if (cfg_set(&c, argv[++i], err, sizeof err)) {
            fprintf(stderr, "--set %s\n", err);
            goto done;
        }
    }
    if (cfg_validate(&c, err, sizeof err)) {
        fprintf(stderr, "%s\n", err);
        goto done;
    }
    if (show) {
        char *text = cfg_to_json(&c);
        if (!text) {
            fprintf(stderr, "moeserve config: out of memory\n");
            status = 1;
            goto done;
        }
        printf("%s\n", text);
        free(text);
    } else {
        printf("ok\n");
    }
    status = fflush(stdout) ? 1 : 0;
done:
    cfg_free(&c);
    return status;
}
