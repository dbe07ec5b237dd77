/*
 * Template strings: Python's str methods and the case mapping, stripping, splitting and
 * formatting they need, on UTF-8 by code point; the dict and list methods the sandbox allows
 * (items, keys, values, get; count, index).
 */
#include "template/template_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- arguments ---------------------------------------------------------------------------- */

tpl_value tpl__str_arg(tpl_render *r, const tpl_args *a, size_t i, const char *name,
                       const char *what)
{
    tpl_value v = tpl__arg(a, i, name, mk_undef(NULL));
    if (v.kind != TV_STR)
        tpl__fail(r, -EINVAL, "%s: expected a string argument, got %s", what, tpl__type_name(v));
    return v;
}

/* ---- strings ------------------------------------------------------------------------------ */

static bool char_in(const char *c, size_t k, tpl_value chars)
{
    for (size_t i = 0; i < chars.u.str.n;) {
        size_t m = utf8_span(chars.u.str.s + i, chars.u.str.n - i);
        if (m == k && memcmp(chars.u.str.s + i, c, k) == 0) return true;
        i += m;
    }
    return false;
}

/* str.strip / lstrip / rstrip; chars NONE: whitespace. */
tpl_value tpl__strip(tpl_render *r, tpl_value s, tpl_value chars, bool left, bool right)
{
    (void)r;
    const char *p = s.u.str.s;
    size_t n = s.u.str.n, k;
    bool ws = chars.kind == TV_NONE || chars.kind == TV_UNDEF;
    if (left)
        while (n > 0) {
            k = ws ? tpl__space_at(p, n) : utf8_span(p, n);
            if (k == 0 || (!ws && !char_in(p, k, chars))) break;
            p += k;
            n -= k;
        }
    if (right)
        while (n > 0) {
            k = ws ? tpl__space_before(p, n) : utf8_span_back(p, n);
            if (k == 0 || (!ws && !char_in(p + n - k, k, chars))) break;
            n -= k;
        }
    return (tpl_value){.kind = TV_STR, .u.str = {p, n}};
}

/* Case mapping for the scripts chat text mostly uses: ASCII, Latin-1, Latin Extended-A, Greek
 * and basic Cyrillic, as Python's str.upper()/lower() map them.  Other characters are left
 * alone (and count as uncased for title()). */
uint32_t tpl__cp_upper(uint32_t c)
{
    if (c >= 'a' && c <= 'z') return c - 32;
    if (c < 0xb5) return c;
    if (c == 0xb5) return 0x39c;
    if (c >= 0xe0 && c <= 0xfe && c != 0xf7) return c - 32;
    if (c == 0xff) return 0x178;
    if (c == 0x131) return 'I';
    if (c == 0x17f) return 'S';
    if ((c >= 0x100 && c <= 0x137) || (c >= 0x14a && c <= 0x177)) return c & 1 ? c - 1 : c;
    if ((c >= 0x139 && c <= 0x148) || (c >= 0x179 && c <= 0x17e)) return c & 1 ? c : c - 1;
    if (c >= 0x3b1 && c <= 0x3c9) return c == 0x3c2 ? 0x3a3 : c - 32;
    if (c == 0x3ac) return 0x386;
    if (c >= 0x3ad && c <= 0x3af) return c - 37;
    if (c == 0x3cc) return 0x38c;
    if (c == 0x3cd || c == 0x3ce) return c - 63;
    if (c >= 0x430 && c <= 0x44f) return c - 32;
    if (c >= 0x450 && c <= 0x45f) return c - 80;
    return c;
}

uint32_t tpl__cp_lower(uint32_t c)
{
    if (c >= 'A' && c <= 'Z') return c + 32;
    if (c < 0xc0) return c;
    if (c <= 0xde && c != 0xd7) return c + 32;
    if (c == 0x178) return 0xff;
    if ((c >= 0x100 && c <= 0x137 && c != 0x130) || (c >= 0x14a && c <= 0x177))
        return c & 1 ? c : c + 1;
    if ((c >= 0x139 && c <= 0x148) || (c >= 0x179 && c <= 0x17e)) return c & 1 ? c + 1 : c;
    if (c >= 0x391 && c <= 0x3a9 && c != 0x3a2) return c + 32;
    if (c == 0x386) return 0x3ac;
    if (c >= 0x388 && c <= 0x38a) return c + 37;
    if (c == 0x38c) return 0x3cc;
    if (c == 0x38e || c == 0x38f) return c + 63;
    if (c >= 0x410 && c <= 0x42f) return c + 32;
    if (c >= 0x400 && c <= 0x40f) return c + 80;
    return c;
}

static void put_cp(tpl_render *r, tpl_sbuf *b, uint32_t cp)
{
    char out[4];
    tpl__put(r, b, out, utf8_put(out, cp));
}

/* mode 0: lower, 1: upper, 2: str.title(), 3: capitalize, 4: jinja2's title filter (a word
 * starts after a run of whitespace, '-', '(', '{', '[' or '<'; its first character is upper
 * cased, the rest lower cased). */
tpl_value tpl__change_case(tpl_render *r, tpl_value s, int mode)
{
    tpl_sbuf b = {0};
    bool prev_cased = false, word_start = true;
    for (size_t i = 0; i < s.u.str.n;) {
        size_t k;
        uint32_t c = utf8_next_lax(s.u.str.s + i, s.u.str.n - i, &k);
        uint32_t up = tpl__cp_upper(c), low = tpl__cp_lower(c);
        bool sep = mode == 4 && (tpl__space_at(s.u.str.s + i, s.u.str.n - i) > 0 || c == '-' ||
                                 c == '(' || c == '{' || c == '[' || c == '<');
        bool make_upper = mode == 1 || (mode == 2 && !prev_cased) || (mode == 3 && i == 0) ||
                          (mode == 4 && word_start);
        if (sep) {
            tpl__put(r, &b, s.u.str.s + i, k);
            word_start = true;
            i += k;
            continue;
        }
        word_start = false;
        if (c == 0xdf && make_upper) {
            /* Python: 'ß'.upper() == 'SS', its title case 'Ss' */
            tpl__put(r, &b, mode == 1 || mode == 4 ? "SS" : "Ss", 2);
        } else if (c == 0x130 && !make_upper) {
            tpl__put(r, &b, "i\xcc\x87", 3); /* 'İ'.lower() == 'i' + COMBINING DOT ABOVE */
        } else {
            uint32_t to = make_upper ? up : low;
            if (to == c)
                tpl__put(r, &b, s.u.str.s + i, k);
            else
                put_cp(r, &b, to);
        }
        prev_cased = up != c || low != c || c == 0xdf;
        i += k;
    }
    return tpl__sbuf_value(r, &b);
}

tpl_value tpl__replace(tpl_render *r, tpl_value s, tpl_value old, tpl_value rep, int64_t count)
{
    tpl_sbuf b = {0};
    const char *p = s.u.str.s, *end = p + s.u.str.n;
    if (old.u.str.n == 0) {
        /* Python inserts the replacement between every character and at both ends. */
        int64_t done = 0;
        for (size_t i = 0; i <= s.u.str.n;) {
            if (count < 0 || done < count) {
                tpl__put(r, &b, rep.u.str.s, rep.u.str.n);
                done++;
            }
            if (i == s.u.str.n) break;
            size_t k = utf8_span(p + i, s.u.str.n - i);
            tpl__put(r, &b, p + i, k);
            i += k;
        }
        return tpl__sbuf_value(r, &b);
    }
    int64_t done = 0;
    while (p < end && (count < 0 || done < count)) {
        const char *hit = memmem(p, (size_t)(end - p), old.u.str.s, old.u.str.n);
        if (!hit) break;
        tpl__put(r, &b, p, (size_t)(hit - p));
        tpl__put(r, &b, rep.u.str.s, rep.u.str.n);
        p = hit + old.u.str.n;
        done++;
    }
    tpl__put(r, &b, p, (size_t)(end - p));
    return tpl__sbuf_value(r, &b);
}

tpl_value tpl__split(tpl_render *r, tpl_value s, tpl_value sep, int64_t maxsplit)
{
    tpl_list *l = tpl__list_new(r, 0);
    const char *p = s.u.str.s;
    size_t n = s.u.str.n;
    if (sep.kind == TV_NONE || sep.kind == TV_UNDEF) {
        size_t i = 0, k;
        int64_t done = 0;
        for (;;) {
            while (i < n && (k = tpl__space_at(p + i, n - i)) > 0)
                i += k;
            if (i >= n) break;
            if (maxsplit >= 0 && done >= maxsplit) {
                size_t e = n;
                while (e > i && (k = tpl__space_before(p, e)) > 0)
                    e -= k;
                tpl__list_push(r, l, (tpl_value){.kind = TV_STR, .u.str = {p + i, e - i}});
                break;
            }
            size_t start = i;
            while (i < n && tpl__space_at(p + i, n - i) == 0)
                i += utf8_span(p + i, n - i);
            tpl__list_push(r, l, (tpl_value){.kind = TV_STR, .u.str = {p + start, i - start}});
            done++;
        }
        return mk_list(l);
    }
    if (sep.kind != TV_STR)
        tpl__fail(r, -EINVAL, "split: must be str or None, not %s", tpl__type_name(sep));
    if (sep.u.str.n == 0) tpl__fail(r, -EINVAL, "empty separator");
    const char *end = p + n;
    int64_t done = 0;
    for (;;) {
        const char *hit = maxsplit < 0 || done < maxsplit
                              ? memmem(p, (size_t)(end - p), sep.u.str.s, sep.u.str.n)
                              : NULL;
        if (!hit) {
            tpl__list_push(r, l, (tpl_value){.kind = TV_STR, .u.str = {p, (size_t)(end - p)}});
            break;
        }
        tpl__list_push(r, l, (tpl_value){.kind = TV_STR, .u.str = {p, (size_t)(hit - p)}});
        p = hit + sep.u.str.n;
        done++;
    }
    return mk_list(l);
}

static bool affix(tpl_render *r, tpl_value s, tpl_value what, bool at_start)
{
    if (what.kind == TV_LIST) {
        for (size_t i = 0; i < what.u.list->n; i++)
            if (affix(r, s, what.u.list->items[i], at_start)) return true;
        return false;
    }
    if (what.kind != TV_STR)
        tpl__fail(r, -EINVAL, "%s first arg must be str or a tuple of str, not %s",
                  at_start ? "startswith" : "endswith", tpl__type_name(what));
    if (what.u.str.n > s.u.str.n) return false;
    const char *p = at_start ? s.u.str.s : s.u.str.s + s.u.str.n - what.u.str.n;
    return what.u.str.n == 0 || memcmp(p, what.u.str.s, what.u.str.n) == 0;
}

tpl_value tpl__join(tpl_render *r, tpl_value seq, tpl_value sep, tpl_value attribute)
{
    tpl_list *items = tpl__iterate(r, seq);
    tpl_sbuf b = {0};
    for (size_t i = 0; i < items->n; i++) {
        if (i) tpl__put(r, &b, sep.u.str.s, sep.u.str.n);
        tpl_value v = items->items[i];
        if (attribute.kind == TV_STR) v = tpl__getitem(r, v, attribute);
        tpl__str(r, &b, v);
    }
    return tpl__sbuf_value(r, &b);
}

/* str.format with {}, {0} and {name} fields and {{ }} escapes; format specs and conversions
 * are refused. */
static tpl_value format(tpl_render *r, tpl_value self, const tpl_args *a)
{
    tpl_sbuf b = {0};
    const char *p = self.u.str.s, *end = p + self.u.str.n;
    size_t auto_index = 0;
    while (p < end) {
        if ((*p == '{' || *p == '}') && p + 1 < end && p[1] == *p) {
            tpl__put(r, &b, p, 1);
            p += 2;
            continue;
        }
        if (*p == '}') tpl__fail(r, -EINVAL, "Single '}' encountered in format string");
        if (*p != '{') {
            tpl__put(r, &b, p++, 1);
            continue;
        }
        const char *close = memchr(p, '}', (size_t)(end - p));
        if (!close) tpl__fail(r, -EINVAL, "Single '{' encountered in format string");
        const char *field = p + 1;
        size_t n = (size_t)(close - field);
        if (memchr(field, ':', n) || memchr(field, '!', n) || memchr(field, '[', n) ||
            memchr(field, '.', n))
            tpl__fail(r, -EINVAL, "str.format: format specs are not supported");
        tpl_value v = mk_undef(NULL);
        if (n == 0) {
            if (auto_index >= a->n)
                tpl__fail(r, -EINVAL, "Replacement index %zu out of range", auto_index);
            v = a->pos[auto_index++];
        } else if (field[0] >= '0' && field[0] <= '9') {
            size_t i = (size_t)strtoul(field, NULL, 10);
            if (i >= a->n) tpl__fail(r, -EINVAL, "Replacement index %zu out of range", i);
            v = a->pos[i];
        } else {
            bool found = false;
            for (size_t k = 0; k < a->n_kw && !found; k++)
                if (strlen(a->kw_names[k]) == n && !memcmp(a->kw_names[k], field, n)) {
                    v = a->kw_vals[k];
                    found = true;
                }
            if (!found) tpl__fail(r, -EINVAL, "str.format: no argument '%.*s'", (int)n, field);
        }
        tpl__str(r, &b, v);
        p = close + 1;
    }
    return tpl__sbuf_value(r, &b);
}

tpl_value tpl__call_method(tpl_render *r, const tpl_func *f, const tpl_args *a)
{
    tpl_value self = f->self;
    const char *m = f->method;
    if (self.kind == TV_STR) {
        if (!strcmp(m, "startswith") || !strcmp(m, "endswith")) {
            tpl_value s = self;
            tpl_value start = tpl__arg(a, 1, NULL, TPL_NONE);
            if (start.kind == TV_INT)
                s = (tpl_value){.kind = TV_STR, .u.str = {self.u.str.s, self.u.str.n}};
            return mk_bool(affix(r, s, tpl__arg(a, 0, NULL, TPL_NONE), m[0] == 's'));
        }
        if (!strcmp(m, "split")) {
            tpl_value mx = tpl__arg(a, 1, "maxsplit", mk_int(-1));
            return tpl__split(r, self, tpl__arg(a, 0, "sep", TPL_NONE),
                              mx.kind == TV_INT ? mx.u.i : -1);
        }
        if (!strcmp(m, "strip") || !strcmp(m, "lstrip") || !strcmp(m, "rstrip")) {
            tpl_value chars = tpl__arg(a, 0, "chars", TPL_NONE);
            if (chars.kind != TV_NONE && chars.kind != TV_STR)
                tpl__fail(r, -EINVAL, "%s arg must be None or str", m);
            return tpl__strip(r, self, chars, m[0] != 'r', m[0] != 'l');
        }
        if (!strcmp(m, "upper")) return tpl__change_case(r, self, 1);
        if (!strcmp(m, "lower")) return tpl__change_case(r, self, 0);
        if (!strcmp(m, "title")) return tpl__change_case(r, self, 2);
        if (!strcmp(m, "capitalize")) return tpl__change_case(r, self, 3);
        if (!strcmp(m, "replace")) {
            tpl_value cnt = tpl__arg(a, 2, "count", mk_int(-1));
            return tpl__replace(r, self, tpl__str_arg(r, a, 0, NULL, "replace"),
                                tpl__str_arg(r, a, 1, NULL, "replace"),
                                cnt.kind == TV_INT ? cnt.u.i : -1);
        }
        if (!strcmp(m, "find") || !strcmp(m, "count")) {
            tpl_value sub = tpl__str_arg(r, a, 0, NULL, m);
            if (m[0] == 'f') {
                if (sub.u.str.n == 0) return mk_int(0);
                const char *hit = memmem(self.u.str.s, self.u.str.n, sub.u.str.s, sub.u.str.n);
                return mk_int(hit ? (int64_t)utf8_count(self.u.str.s, (size_t)(hit - self.u.str.s))
                                  : -1);
            }
            if (sub.u.str.n == 0)
                return mk_int((int64_t)utf8_count(self.u.str.s, self.u.str.n) + 1);
            int64_t k = 0;
            const char *p = self.u.str.s, *end = p + self.u.str.n, *hit;
            while ((hit = memmem(p, (size_t)(end - p), sub.u.str.s, sub.u.str.n))) {
                k++;
                p = hit + sub.u.str.n;
            }
            return mk_int(k);
        }
        if (!strcmp(m, "join")) return tpl__join(r, tpl__arg(a, 0, NULL, TPL_NONE), self, TPL_NONE);
        if (!strcmp(m, "format")) return format(r, self, a);
        if (!strcmp(m, "isdigit") || !strcmp(m, "isalpha") || !strcmp(m, "isspace")) {
            bool ok = self.u.str.n > 0;
            for (size_t i = 0; i < self.u.str.n && ok; i++) {
                unsigned char c = (unsigned char)self.u.str.s[i];
                ok = m[2] == 'd'   ? (c >= '0' && c <= '9')
                     : m[2] == 'a' ? ((c | 32) >= 'a' && (c | 32) <= 'z')
                                   : tpl__space_at(self.u.str.s + i, self.u.str.n - i) > 0;
            }
            return mk_bool(ok);
        }
    } else if (self.kind == TV_LIST && (!strcmp(m, "count") || !strcmp(m, "index"))) {
        tpl_value x = tpl__arg(a, 0, NULL, mk_undef(NULL));
        int64_t k = 0;
        for (size_t i = 0; i < self.u.list->n; i++)
            if (tpl__equal(self.u.list->items[i], x)) {
                if (m[0] == 'i') return mk_int((int64_t)i);
                k++;
            }
        if (m[0] == 'i') tpl__fail(r, -EINVAL, "list.index(x): x not in list");
        return mk_int(k);
    } else if (self.kind == TV_DICT) {
        tpl_dict *d = self.u.dict;
        if (!strcmp(m, "items")) {
            tpl_list *l = tpl__list_new(r, d->n);
            l->view = "dict_items";
            for (size_t i = 0; i < d->n; i++) {
                tpl_list *pair = tpl__list_new(r, 2);
                pair->is_tuple = true;
                tpl__list_push(r, pair, d->keys[i]);
                tpl__list_push(r, pair, d->vals[i]);
                tpl__list_push(r, l, mk_list(pair));
            }
            return mk_list(l);
        }
        if (!strcmp(m, "keys") || !strcmp(m, "values")) {
            tpl_list *l = tpl__list_new(r, d->n);
            l->view = m[0] == 'k' ? "dict_keys" : "dict_values";
            for (size_t i = 0; i < d->n; i++)
                tpl__list_push(r, l, m[0] == 'k' ? d->keys[i] : d->vals[i]);
            return mk_list(l);
        }
        if (!strcmp(m, "get")) {
            tpl_value v;
            if (tpl__dict_get(d, tpl__arg(a, 0, NULL, TPL_NONE), &v)) return v;
            return tpl__arg(a, 1, NULL, TPL_NONE);
        }
    }
    tpl__fail(r, -EINVAL,
              "method '%s' of %s is not supported (the sandbox forbids changing values)", m,
              tpl__type_name(self));
}

/* Python's printf-style str % args for %s, %r, %d, %i and %%; anything fancier is refused. */
tpl_value tpl__percent_format(tpl_render *r, tpl_value fmt, tpl_value args)
{
    bool tuple = args.kind == TV_LIST && args.u.list->is_tuple;
    size_t n_args = tuple ? args.u.list->n : 1, used = 0;
    tpl_sbuf b = {0};
    const char *p = fmt.u.str.s, *end = p + fmt.u.str.n;
    while (p < end) {
        const char *pct = memchr(p, '%', (size_t)(end - p));
        if (!pct) {
            tpl__put(r, &b, p, (size_t)(end - p));
            break;
        }
        tpl__put(r, &b, p, (size_t)(pct - p));
        if (pct + 1 >= end) tpl__fail(r, -EINVAL, "incomplete format");
        char c = pct[1];
        p = pct + 2;
        if (c == '%') {
            tpl__put(r, &b, "%", 1);
            continue;
        }
        if (c != 's' && c != 'r' && c != 'd' && c != 'i')
            tpl__fail(r, -EINVAL, "unsupported format character '%c'", c);
        if (used >= n_args) tpl__fail(r, -EINVAL, "not enough arguments for format string");
        tpl_value v = tuple ? args.u.list->items[used] : args;
        used++;
        if (c == 's') {
            tpl__str(r, &b, v);
        } else if (c == 'r') {
            tpl__repr(r, &b, v);
        } else {
            if (!(v.kind == TV_INT || v.kind == TV_FLOAT || v.kind == TV_BOOL))
                tpl__fail(r, -EINVAL, "%%%c format: a real number is required, not %s", c,
                          tpl__type_name(v));
            int64_t i =
                v.kind == TV_FLOAT ? (int64_t)v.u.f : (v.kind == TV_INT ? v.u.i : (int64_t)v.u.b);
            char tmp[32];
            int k = snprintf(tmp, sizeof tmp, "%lld", (long long)i);
            tpl__put(r, &b, tmp, (size_t)k);
        }
    }
    /* Leftover arguments are an error, except a lone mapping or sequence, which Python
     * accepts as a (unused) mapping argument. */
    if (used < n_args && (tuple || !((args.kind == TV_LIST && !args.u.list->is_generator) ||
                                     args.kind == TV_DICT || args.kind == TV_UNDEF)))
        tpl__fail(r, -EINVAL, "not all arguments converted during string formatting");
    return tpl__sbuf_value(r, &b);
}
