/*
 * Prometheus text exposition.  The format is line based and small enough to write by hand;
 * what needs care is escaping (label values may hold model names and paths chosen by users)
 * and number formatting (Go's ParseFloat on the other side accepts "+Inf", "NaN" and the
 * shortest round-tripping decimal).
 */
#include "server/metrics.h"

#include "base/vec.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void srv_mx_buf_release(srv_mx_buf *b)
{
    free(b->data);
    *b = (srv_mx_buf){0};
}

static bool reserve(srv_mx_buf *b, size_t extra)
{
    if (b->failed) return false;
    if (extra > SIZE_MAX - b->len - 1 ||
        vec_reserve(&b->data, &b->cap, b->len + extra + 1, 1, 4096) < 0) {
        b->failed = true;
        return false;
    }
    return true;
}

void srv_mx_printf(srv_mx_buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    va_list copy;
    va_copy(copy, ap);
    int n = vsnprintf(NULL, 0, fmt, copy);
    va_end(copy);
    if (n >= 0 && reserve(b, (size_t)n)) {
        vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
        b->len += (size_t)n;
    }
    va_end(ap);
}

static void append_escaped(srv_mx_buf *b, const char *s, bool quote)
{
    for (; *s; s++) {
        if (*s == '\\')
            srv_mx_printf(b, "\\\\");
        else if (*s == '\n')
            srv_mx_printf(b, "\\n");
        else if (quote && *s == '"')
            srv_mx_printf(b, "\\\"");
        else
            srv_mx_printf(b, "%c", *s);
    }
}

void srv_mx_family(srv_mx_buf *b, const char *name, const char *type, const char *help)
{
    srv_mx_printf(b, "# HELP %s ", name);
    append_escaped(b, help, false);
    srv_mx_printf(b, "\n# TYPE %s %s\n", name, type);
}

int srv_mx_labels(char *out, size_t size, size_t n, const char *const *names,
                  const char *const *values)
{
    srv_mx_buf b = {0};
    if (n) {
        srv_mx_printf(&b, "{");
        for (size_t i = 0; i < n; i++) {
            srv_mx_printf(&b, "%s%s=\"", i ? "," : "", names[i]);
            append_escaped(&b, values[i], true);
            srv_mx_printf(&b, "\"");
        }
        srv_mx_printf(&b, "}");
    }
    int rc = -1;
    if (!b.failed && b.len < size) {
        if (b.len) memcpy(out, b.data, b.len);
        out[b.len] = 0;
        rc = (int)b.len;
    }
    srv_mx_buf_release(&b);
    return rc;
}

static void format_value(char *out, size_t size, double v)
{
    if (isnan(v))
        snprintf(out, size, "NaN");
    else if (isinf(v))
        snprintf(out, size, v > 0 ? "+Inf" : "-Inf");
    else if (v == (double)(int64_t)v && fabs(v) < 9.007199254740992e15)
        snprintf(out, size, "%lld", (long long)v);
    else {
        /* The shortest text that reads back as the same double: 0.005, not 0.005000000000000001. */
        for (int precision = 1; precision <= 17; precision++) {
            snprintf(out, size, "%.*g", precision, v);
            if (strtod(out, NULL) == v) break;
        }
    }
}

void srv_mx_sample(srv_mx_buf *b, const char *name, const char *labels, double value)
{
    char v[64];
    format_value(v, sizeof v, value);
    srv_mx_printf(b, "%s%s %s\n", name, labels ? labels : "", v);
}

void srv_mx_sample_u64(srv_mx_buf *b, const char *name, const char *labels, uint64_t value)
{
    srv_mx_printf(b, "%s%s %llu\n", name, labels ? labels : "", (unsigned long long)value);
}

int srv_mx_histogram_init(srv_mx_histogram *h, const double *bounds, size_t n_bounds)
{
    *h = (srv_mx_histogram){.bounds = bounds, .n_bounds = n_bounds};
    h->counts = calloc(n_bounds + 1, sizeof *h->counts);
    return h->counts ? 0 : -ENOMEM;
}

void srv_mx_histogram_release(srv_mx_histogram *h)
{
    free(h->counts);
    *h = (srv_mx_histogram){0};
}

void srv_mx_histogram_observe(srv_mx_histogram *h, double value)
{
    size_t i = 0;
    while (i < h->n_bounds && value > h->bounds[i])
        i++;
    h->counts[i]++;
    h->sum += value;
    h->count++;
}

void srv_mx_histogram_write(srv_mx_buf *b, const char *name, const char *labels,
                            const srv_mx_histogram *h)
{
    /* The le label joins the caller's set: {a="x"} becomes {a="x",le="0.5"}. */
    size_t base_len = labels && *labels ? strlen(labels) - 1 : 0; /* without the closing brace */
    uint64_t cumulative = 0;
    for (size_t i = 0; i <= h->n_bounds; i++) {
        cumulative += h->counts[i];
        char le[64];
        if (i < h->n_bounds)
            format_value(le, sizeof le, h->bounds[i]);
        else
            snprintf(le, sizeof le, "+Inf");
        if (base_len)
            srv_mx_printf(b, "%s_bucket%.*s,le=\"%s\"} %llu\n", name, (int)base_len, labels, le,
                          (unsigned long long)cumulative);
        else
            srv_mx_printf(b, "%s_bucket{le=\"%s\"} %llu\n", name, le,
                          (unsigned long long)cumulative);
    }
    char sum_name[256], count_name[256];
    snprintf(sum_name, sizeof sum_name, "%s_sum", name);
    snprintf(count_name, sizeof count_name, "%s_count", name);
    srv_mx_sample(b, sum_name, labels, h->sum);
    srv_mx_sample_u64(b, count_name, labels, h->count);
}

void srv_mx_histogram_write_counts(srv_mx_buf *b, const char *name, const double *bounds,
                                   size_t n_bounds, const uint64_t *counts, double sum)
{
    uint64_t count = 0;
    for (size_t i = 0; i <= n_bounds; i++)
        count += counts[i];
    /* A read-only view: the writer does not modify the counts. */
    srv_mx_histogram view = {.bounds = bounds,
                             .n_bounds = n_bounds,
                             .counts = (uint64_t *)counts,
                             .sum = sum,
                             .count = count};
    srv_mx_histogram_write(b, name, "", &view);
}

int srv_mx_with_label(const srv_mx_buf *in, const char *name, const char *value, srv_mx_buf *out)
{
    char set[512];
    const char *names[] = {name}, *values[] = {value};
    int n = srv_mx_labels(set, sizeof set, 1, names, values);
    if (n < 2) return -EINVAL;
    const char *p = in->data ? in->data : "", *end = p + in->len;
    while (p < end) {
        const char *eol = memchr(p, '\n', (size_t)(end - p));
        size_t len = eol ? (size_t)(eol - p) + 1 : (size_t)(end - p);
        size_t name_len = strcspn(p, "{ \n");
        if (*p == '#' || *p == '\n' || name_len >= len) {
            srv_mx_printf(out, "%.*s", (int)len, p);
        } else if (p[name_len] == '{') { /* name{a="x"} v → name{replica="r",a="x"} v */
            bool empty = name_len + 1 < len && p[name_len + 1] == '}';
            srv_mx_printf(out, "%.*s%.*s%s%.*s", (int)name_len, p, n - 1, set, empty ? "" : ",",
                          (int)(len - name_len - 1), p + name_len + 1);
        } else { /* name v → name{replica="r"} v */
            srv_mx_printf(out, "%.*s%s%.*s", (int)name_len, p, set, (int)(len - name_len),
                          p + name_len);
        }
        p += len;
    }
    return out->failed ? -ENOMEM : 0;
}
