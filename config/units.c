/*
 * Sizes, durations and budgets as text: the forms people write in config files ("8GiB",
 * "512MB", "30s", "auto", "25%") and the shortest exact forms `config show` prints back.
 *
 * Numbers are parsed by hand in integer arithmetic rather than with strtod: "1.1GB" must be
 * exactly 1100000000 bytes, and an overflow must be an error, not a rounded or saturated value.
 * A fraction is allowed only when the result is whole (bytes, milliseconds): a value that
 * would have to be rounded is refused, so what the file says is what the server uses.
 */
#include "config/config.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define MAX_FRACTION_DIGITS 9

typedef struct unit {
    const char *name;
    uint64_t mult;
} unit;

static const unit size_units[] = {
    {"B", 1},
    {"KB", 1000ull},
    {"MB", 1000000ull},
    {"GB", 1000000000ull},
    {"TB", 1000000000000ull},
    {"PB", 1000000000000000ull},
    {"KiB", 1ull << 10},
    {"MiB", 1ull << 20},
    {"GiB", 1ull << 30},
    {"TiB", 1ull << 40},
    {"PiB", 1ull << 50},
};

static const unit duration_units[] = {
    {"ms", 1},
    {"s", 1000},
    {"m", 60 * 1000},
    {"h", 60 * 60 * 1000},
};

#define N_SIZE_UNITS (sizeof size_units / sizeof size_units[0])
#define N_DURATION_UNITS (sizeof duration_units / sizeof duration_units[0])

/* A decimal "123" or "1.25" at *p: integer part, fraction digits as an integer and their count. */
typedef struct decimal {
    uint64_t whole;
    uint64_t frac;
    int frac_digits;
} decimal;

static int parse_decimal(const char **p, decimal *d, char *err, size_t err_size)
{
    const char *s = *p;
    *d = (decimal){0};
    if (*s == '-') {
        snprintf(err, err_size, "is negative");
        return -EINVAL;
    }
    if (*s < '0' || *s > '9') {
        snprintf(err, err_size, "does not start with a number");
        return -EINVAL;
    }
    for (; *s >= '0' && *s <= '9'; s++) {
        if (__builtin_mul_overflow(d->whole, 10, &d->whole) ||
            __builtin_add_overflow(d->whole, (uint64_t)(*s - '0'), &d->whole)) {
            snprintf(err, err_size, "is too large");
            return -ERANGE;
        }
    }
    if (*s == '.') {
        s++;
        if (*s < '0' || *s > '9') {
            snprintf(err, err_size, "has no digits after the decimal point");
            return -EINVAL;
        }
        for (; *s >= '0' && *s <= '9'; s++) {
            if (d->frac_digits == MAX_FRACTION_DIGITS) {
                snprintf(err, err_size, "has more than %d digits after the decimal point",
                         MAX_FRACTION_DIGITS);
                return -EINVAL;
            }
            d->frac = d->frac * 10 + (uint64_t)(*s - '0');
            d->frac_digits++;
        }
    }
    *p = s;
    return 0;
}

/* whole * mult + frac * mult / 10^digits, refusing overflow and results that are not whole. */
static int scale(const decimal *d, uint64_t mult, const char *whole_what, uint64_t *out, char *err,
                 size_t err_size)
{
    uint64_t v;
    if (__builtin_mul_overflow(d->whole, mult, &v)) {
        snprintf(err, err_size, "is too large");
        return -ERANGE;
    }
    if (d->frac_digits) {
        unsigned __int128 pow10 = 1;
        for (int i = 0; i < d->frac_digits; i++)
            pow10 *= 10;
        unsigned __int128 f = (unsigned __int128)d->frac * mult;
        if (f % pow10) {
            snprintf(err, err_size, "is not a whole number of %s", whole_what);
            return -EINVAL;
        }
        if (__builtin_add_overflow(v, (uint64_t)(f / pow10), &v)) {
            snprintf(err, err_size, "is too large");
            return -ERANGE;
        }
    }
    *out = v;
    return 0;
}

static const unit *find_unit(const unit *units, size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (!strcasecmp(units[i].name, name)) return &units[i];
    return NULL;
}

/* A decimal number, optional spaces, then one of `units` (none: the base unit), scaled to an
 * integer count of the base unit.  `unknown` explains a unit that is not in the table. */
static int parse_quantity(const char *text, const unit *units, size_t n_units,
                          void (*unknown)(const char *u, char *err, size_t err_size),
                          const char *base_name, uint64_t *out, char *err, size_t err_size)
{
    if (!text || !*text) {
        snprintf(err, err_size, "is empty");
        return -EINVAL;
    }
    const char *p = text;
    decimal d;
    int rc = parse_decimal(&p, &d, err, err_size);
    if (rc) return rc;
    while (*p == ' ')
        p++;
    uint64_t mult = 1;
    if (*p) {
        const unit *u = find_unit(units, n_units, p);
        if (!u) {
            unknown(p, err, err_size);
            return -EINVAL;
        }
        mult = u->mult;
    } else if (p > text && p[-1] == ' ') {
        snprintf(err, err_size, "ends in a space");
        return -EINVAL;
    }
    return scale(&d, mult, base_name, out, err, err_size);
}

static void unknown_size_unit(const char *p, char *err, size_t err_size)
{
    if (!strcasecmp(p, "K") || !strcasecmp(p, "M") || !strcasecmp(p, "G") || !strcasecmp(p, "T") ||
        !strcasecmp(p, "P"))
        snprintf(err, err_size,
                 "has the ambiguous unit '%s': write %cB for powers of 1000 or %ciB for powers "
                 "of 1024",
                 p, (char)(*p & ~0x20), (char)(*p & ~0x20));
    else
        snprintf(err, err_size,
                 "has an unknown unit '%.32s' (units: B, KB, MB, GB, TB, PB, KiB, MiB, GiB, TiB, "
                 "PiB)",
                 p);
}

static void unknown_duration_unit(const char *p, char *err, size_t err_size)
{
    snprintf(err, err_size, "has an unknown unit '%.32s' (units: ms, s, m, h)", p);
}

int cfg_parse_size(const char *text, uint64_t *bytes, char *err, size_t err_size)
{
    return parse_quantity(text, size_units, N_SIZE_UNITS, unknown_size_unit, "bytes", bytes, err,
                          err_size);
}

int cfg_parse_duration_ms(const char *text, uint64_t *ms, char *err, size_t err_size)
{
    return parse_quantity(text, duration_units, N_DURATION_UNITS, unknown_duration_unit,
                          "milliseconds", ms, err, err_size);
}

int cfg_parse_budget(const char *text, cfg_budget *b, char *err, size_t err_size)
{
    if (text && (!strcmp(text, "auto") || !strcmp(text, "all"))) {
        *b = (cfg_budget){.kind = CFG_BUDGET_AUTO};
        return 0;
    }
    size_t len = text ? strlen(text) : 0;
    if (len && text[len - 1] == '%') {
        const char *p = text;
        decimal d;
        int rc = parse_decimal(&p, &d, err, err_size);
        if (rc) return rc;
        if (p != text + len - 1) {
            snprintf(err, err_size, "is not a percentage like \"25%%\"");
            return -EINVAL;
        }
        /* strtod for the double: correctly rounded, so the 9 decimals printed back read equal */
        double pct = strtod(text, NULL);
        if (!(pct > 0.0 && pct <= 100.0)) {
            snprintf(err, err_size, "is not a percentage above 0 and at most 100");
            return -ERANGE;
        }
        *b = (cfg_budget){.kind = CFG_BUDGET_PERCENT, .percent = pct};
        return 0;
    }
    uint64_t bytes;
    int rc = cfg_parse_size(text, &bytes, err, err_size);
    if (rc) return rc;
    *b = (cfg_budget){.kind = CFG_BUDGET_BYTES, .bytes = bytes};
    return 0;
}

/* The largest unit that divides v exactly, preferring binary units for sizes. */
static void format_exact(uint64_t v, const unit *units, size_t n, const char *zero, char *out,
                         size_t out_size)
{
    if (v == 0) {
        snprintf(out, out_size, "%s", zero);
        return;
    }
    const unit *best = &units[0];
    for (size_t i = 0; i < n; i++)
        if (v % units[i].mult == 0 && units[i].mult > best->mult) best = &units[i];
    snprintf(out, out_size, "%" PRIu64 "%s", v / best->mult, best->name);
}

void cfg_format_size(uint64_t bytes, char *out, size_t out_size)
{
    format_exact(bytes, size_units, N_SIZE_UNITS, "0B", out, out_size);
}

void cfg_format_duration_ms(uint64_t ms, char *out, size_t out_size)
{
    format_exact(ms, duration_units, N_DURATION_UNITS, "0ms", out, out_size);
}

void cfg_format_budget(const cfg_budget *b, char *out, size_t out_size)
{
    switch (b->kind) {
    case CFG_BUDGET_AUTO:
        snprintf(out, out_size, "auto");
        return;
    case CFG_BUDGET_PERCENT: {
        /* fixed notation with the parser's 9 decimals, trailing zeros dropped: "12.5%" */
        char num[48];
        snprintf(num, sizeof num, "%.9f", b->percent);
        size_t len = strlen(num);
        while (len && num[len - 1] == '0')
            len--;
        if (len && num[len - 1] == '.') len--;
        snprintf(out, out_size, "%.*s%%", (int)len, num);
        return;
    }
    case CFG_BUDGET_BYTES:
        break;
    }
    cfg_format_size(b->bytes, out, out_size);
}

uint64_t cfg_budget_resolve(const cfg_budget *b, uint64_t want, uint64_t total)
{
    switch (b->kind) {
    case CFG_BUDGET_AUTO:
        return want < total ? want : total;
    case CFG_BUDGET_PERCENT: {
        /* rounded to the nearest byte: "33.3%" is stored as 33.29999..., not to lose a byte */
        long double share = (long double)want * (long double)b->percent / 100.0L + 0.5L;
        return share >= (long double)want ? want : (uint64_t)share;
    }
    case CFG_BUDGET_BYTES:
        break;
    }
    return b->bytes;
}
