/*
 * metrics — the Prometheus text exposition format (version 0.0.4) and histograms.
 *
 * Contract
 * - srv_mx_buf is a growable text buffer; every writer appends to it and a failed allocation
 *   sets `failed` (later writes do nothing) instead of returning an error at each call, so
 *   that a scrape handler can write everything and check once.  srv_mx_buf_release() releases it.
 * - srv_mx_family() writes a family's # HELP and # TYPE lines; the caller then writes its
 *   samples.  Names follow Prometheus' rules (the caller's duty: counters end in _total,
 *   base units such as _seconds and _bytes); HELP text and label values are escaped here
 *   (backslash, newline and, in label values, the double quote).
 * - srv_mx_labels() formats a label set `{a="x",b="y"}` from name/value pairs.
 * - srv_mx_histogram keeps per-bucket counts for fixed upper bounds; writing it gives the
 *   cumulative _bucket{le=...} series ending with le="+Inf", then _sum and _count.  A
 *   histogram belongs to one thread (observe and write from the same thread, or under the
 *   owner's lock).
 */
#ifndef MOE_SERVER_METRICS_H
#define MOE_SERVER_METRICS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct srv_mx_buf {
    char *data; /* NUL-terminated while !failed */
    size_t len;
    size_t cap;
    bool failed;
} srv_mx_buf;

void srv_mx_buf_release(srv_mx_buf *b);
void srv_mx_printf(srv_mx_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* type: "counter", "gauge", "histogram". */
void srv_mx_family(srv_mx_buf *b, const char *name, const char *type, const char *help);

/* Formats n label pairs (names[i] = values[i]) into out; "" when n is 0.  Returns the length,
 * or -1 when it did not fit. */
int srv_mx_labels(char *out, size_t size, size_t n, const char *const *names,
                  const char *const *values);

/* One sample line: name, preformatted labels ("" or "{...}"), value. */
void srv_mx_sample(srv_mx_buf *b, const char *name, const char *labels, double value);
/* The exposition in `in` with name="value" added first to every sample's labels, into `out`
 * (appended): one Prometheus tells the servers apart.  0, -ENOMEM or -EINVAL (a bad name). */
int srv_mx_with_label(const srv_mx_buf *in, const char *name, const char *value, srv_mx_buf *out);
void srv_mx_sample_u64(srv_mx_buf *b, const char *name, const char *labels, uint64_t value);

typedef struct srv_mx_histogram {
    const double *bounds; /* ascending upper bounds, not owned; +Inf is implicit */
    size_t n_bounds;
    uint64_t *counts; /* n_bounds + 1 per-bucket (not cumulative) counts */
    double sum;
    uint64_t count;
} srv_mx_histogram;

int srv_mx_histogram_init(srv_mx_histogram *h, const double *bounds, size_t n_bounds);
void srv_mx_histogram_release(srv_mx_histogram *h);
void srv_mx_histogram_observe(srv_mx_histogram *h, double value);
/* Writes name_bucket / name_sum / name_count; labels is "" or a preformatted "{...}" set that
 * the le label is added to. */
void srv_mx_histogram_write(srv_mx_buf *b, const char *name, const char *labels,
                            const srv_mx_histogram *h);

/* The same exposition from counters kept elsewhere (atomics of another module): counts[i] is
 * the number of observations in bucket i (not cumulative), n_bounds + 1 of them. */
void srv_mx_histogram_write_counts(srv_mx_buf *b, const char *name, const double *bounds,
                                   size_t n_bounds, const uint64_t *counts, double sum);

#endif
