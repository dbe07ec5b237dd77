/*
 * The moeserve command line: one function per subcommand, each taking its own argv (after
 * the subcommand name) and returning the process exit status.  Only main() exits.
 */
#ifndef MOE_CLI_H
#define MOE_CLI_H

#include "kernels/kernels.h"

int cli_inspect(int argc, char **argv);
int cli_generate(int argc, char **argv);
int cli_bench(int argc, char **argv);

/* Opens the compute backend named by the options (CPU for now) and logs which one runs and
 * why: a CUDA build on a machine without a device says so in one line. */
int cli_open_backend(kern_backend **out, int n_threads);

/* Strict number parsing for options: the whole string must be a number within [min, max]. */
int cli_parse_int(const char *opt, const char *text, long min, long max, long *out);

void cli_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
