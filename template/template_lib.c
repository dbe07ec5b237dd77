/*
 * Template library: the filters, tests, string and dict methods and globals (raise_exception,
 * strftime_now, namespace, range, dict) that real chat templates call, each as jinja2 and
 * Python define it.  A filter or test missing here is refused when the template is parsed.
 */
#include "template/template_internal.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ---- globals ------------------------------------------------------------------------------ */

static tpl_value strftime_now(tpl_render *r, const tpl_args *a)
{
    tpl_value fmt = tpl__str_arg(r, a, 0, NULL, "strftime_now");
    struct tm tm;
    memset(&tm, 0, sizeof tm);
    const char *ds = r->opts ? r->opts->date_string : NULL;
    if (ds) {
        int y, mo, d, h = 0, mi = 0, s = 0;
        int k = sscanf(ds, "%d-%d-%d%*[T ]%d:%d:%d", &y, &mo, &d, &h, &mi, &s);
        if (k < 3) tpl__fail(r, -EINVAL, "date_string '%s' is not YYYY-MM-DD[THH:MM:SS]", ds);
        tm.tm_year = y - 1900;
        tm.tm_mon = mo - 1;
        tm.tm_mday = d;
        tm.tm_hour = h;
        tm.tm_min = mi;
        tm.tm_sec = s;
        time_t t = timegm(&tm); /* fills in the weekday and day of the year */
        gmtime_r(&t, &tm);
    } else {
        time_t t = time(NULL);
        localtime_r(&t, &tm);
    }
    char fmtz[256], out[512];
    if (fmt.u.str.n >= sizeof fmtz) tpl__fail(r, -EINVAL, "strftime_now: format too long");
    memcpy(fmtz, fmt.u.str.s, fmt.u.str.n);
    fmtz[fmt.u.str.n] = 0;
    size_t n = strftime(out, sizeof out, fmtz, &tm);
    return tpl__strv(r, out, n);
}

tpl_value tpl__call(tpl_render *r, tpl_value fn, const tpl_args *a)
{
    if (fn.kind == TV_UNDEF) tpl__fail_undef(r, fn);
    if (fn.kind != TV_FUNC)
        tpl__fail(r, -EINVAL, "'%s' object is not callable", tpl__type_name(fn));
    const tpl_func *f = fn.u.func;
    switch (f->kind) {
    case TF_RAISE: {
        /* The template's own message, nothing added: that is what the caller shows. */
        tpl_value msg = tpl__to_str(r, tpl__arg(a, 0, NULL, mk_undef(NULL)));
        snprintf(r->err, r->err_size, "%.*s", (int)msg.u.str.n, msg.u.str.s);
        r->rc = -EINVAL;
        longjmp(r->fail, 1);
    }
    case TF_STRFTIME:
        return strftime_now(r, a);
    case TF_NAMESPACE:
    case TF_DICT: {
        tpl_dict *d = tpl__dict_new(r, 4);
        d->is_namespace = f->kind == TF_NAMESPACE;
        for (size_t i = 0; i < a->n; i++) {
            if (a->pos[i].kind != TV_DICT)
                tpl__fail(r, -EINVAL, "%s() takes a mapping",
                          f->kind == TF_DICT ? "dict" : "namespace");
            for (size_t k = 0; k < a->pos[i].u.dict->n; k++)
                tpl__dict_set(r, d, a->pos[i].u.dict->keys[k], a->pos[i].u.dict->vals[k]);
        }
        for (size_t k = 0; k < a->n_kw; k++)
            tpl__dict_set(r, d, tpl__strv(r, a->kw_names[k], strlen(a->kw_names[k])),
                          a->kw_vals[k]);
        return (tpl_value){.kind = TV_DICT, .u.dict = d};
    }
    case TF_RANGE: {
        int64_t v[3] = {0, 0, 1};
        if (a->n < 1 || a->n > 3)
            tpl__fail(r, -EINVAL, "range expected 1 to 3 arguments, got %zu", a->n);
        for (size_t i = 0; i < a->n; i++) {
            if (a->pos[i].kind != TV_INT && a->pos[i].kind != TV_BOOL)
                tpl__fail(r, -EINVAL, "'%s' object cannot be interpreted as an integer",
                          tpl__type_name(a->pos[i]));
            v[a->n == 1 ? 1 : i] = a->pos[i].kind == TV_INT ? a->pos[i].u.i : a->pos[i].u.b;
        }
        if (v[2] == 0) tpl__fail(r, -EINVAL, "range() arg 3 must not be zero");
        tpl_list *l = tpl__list_new(r, 0);
        for (int64_t i = v[0]; v[2] > 0 ? i < v[1] : i > v[1]; i += v[2]) {
            if (l->n >= 1000000) tpl__fail(r, -EINVAL, "range too big");
            tpl__list_push(r, l, mk_int(i));
        }
        return mk_list(l);
    }
    case TF_MACRO:
        return tpl__call_macro(r, f, a);
    case TF_METHOD:
        return tpl__call_method(r, f, a);
    }
    tpl__fail(r, -EINVAL, "not callable");
}

/* ---- tests -------------------------------------------------------------------------------- */

static const char *const test_names[] = {
    "defined",  "undefined",   "none",   "boolean", "false",    "true",        "integer",
    "float",    "number",      "string", "mapping", "iterable", "sequence",    "callable",
    "sameas",   "equalto",     "eq",     "==",      "ne",       "!=",          "lt",
    "<",        "le",          "<=",     "gt",      ">",        "ge",          ">=",
    "lessthan", "greaterthan", "in",     "odd",     "even",     "divisibleby", "lower",
    "upper",    NULL};

bool tpl__test_known(const char *name)
{
    return tpl__in_set(test_names, name, strlen(name));
}

/* Tests that take an argument besides the value; the others take none. */
static const char *const tests_with_arg[] = {
    "sameas", "equalto", "eq", "==", "ne",       "!=",          "lt", "<",           "le", "<=",
    "gt",     ">",       "ge", ">=", "lessthan", "greaterthan", "in", "divisibleby", NULL};

bool tpl__test(tpl_render *r, const char *t, tpl_value v, const tpl_args *a)
{
    size_t want = tpl__in_set(tests_with_arg, t, strlen(t)) ? 1 : 0;
    if (a->n + a->n_kw != want)
        tpl__fail(r, -EINVAL, "test '%s' takes %zu argument(s) besides the value, %zu given", t,
                  want, a->n + a->n_kw);
    tpl_value x = tpl__arg(a, 0, NULL, mk_undef(NULL));
    if (!strcmp(t, "defined")) return v.kind != TV_UNDEF;
    if (!strcmp(t, "undefined")) return v.kind == TV_UNDEF;
    if (!strcmp(t, "none")) return v.kind == TV_NONE;
    if (!strcmp(t, "boolean")) return v.kind == TV_BOOL;
    if (!strcmp(t, "false")) return v.kind == TV_BOOL && !v.u.b;
    if (!strcmp(t, "true")) return v.kind == TV_BOOL && v.u.b;
    if (!strcmp(t, "integer")) return v.kind == TV_INT;
    if (!strcmp(t, "float")) return v.kind == TV_FLOAT;
    if (!strcmp(t, "number")) return v.kind == TV_INT || v.kind == TV_FLOAT || v.kind == TV_BOOL;
    if (!strcmp(t, "string")) return v.kind == TV_STR;
    if (!strcmp(t, "mapping"))
        return v.kind == TV_DICT && !v.u.dict->is_namespace && !v.u.dict->is_loop;
    if (!strcmp(t, "iterable"))
        return v.kind == TV_UNDEF || v.kind == TV_STR || v.kind == TV_LIST ||
               (v.kind == TV_DICT && !v.u.dict->is_namespace && !v.u.dict->is_loop);
    if (!strcmp(t, "sequence"))
        return v.kind == TV_UNDEF || v.kind == TV_STR ||
               (v.kind == TV_LIST && !v.u.list->is_generator && !v.u.list->view) ||
               (v.kind == TV_DICT && !v.u.dict->is_namespace && !v.u.dict->is_loop);
    if (!strcmp(t, "callable")) return v.kind == TV_FUNC;
    if (!strcmp(t, "sameas")) {
        if (v.kind != x.kind) return false;
        if (v.kind == TV_NONE || v.kind == TV_UNDEF) return true;
        if (v.kind == TV_BOOL) return v.u.b == x.u.b;
        if (v.kind == TV_LIST) return v.u.list == x.u.list;
        if (v.kind == TV_DICT) return v.u.dict == x.u.dict;
        return tpl__equal(v, x);
    }
    if (!strcmp(t, "equalto") || !strcmp(t, "eq") || !strcmp(t, "==")) return tpl__equal(v, x);
    if (!strcmp(t, "ne") || !strcmp(t, "!=")) return !tpl__equal(v, x);
    if (!strcmp(t, "in")) return tpl__contains(r, v, x);
    if (!strcmp(t, "lower") || !strcmp(t, "upper")) {
        /* str.islower()/isupper(): some cased character, and none of the other case */
        tpl_value str = tpl__to_str(r, v);
        bool cased = false;
        for (size_t i = 0; i < str.u.str.n;) {
            size_t k;
            uint32_t c = utf8_next_lax(str.u.str.s + i, str.u.str.n - i, &k);
            bool is_upper = tpl__cp_lower(c) != c, is_lower = tpl__cp_upper(c) != c || c == 0xdf;
            if (t[0] == 'l' ? is_upper : is_lower) return false;
            cased |= t[0] == 'l' ? is_lower : is_upper;
            i += k;
        }
        return cased;
    }
    /* ordering and arithmetic tests */
    bool vn = v.kind == TV_INT || v.kind == TV_FLOAT || v.kind == TV_BOOL;
    if (!strcmp(t, "odd") || !strcmp(t, "even") || !strcmp(t, "divisibleby")) {
        /* value % 2 == 1 / == 0, value % num == 0: Python's modulo, floats included */
        tpl_value mod = t[0] == 'd' ? x : mk_int(2);
        bool vnum = v.kind == TV_INT || v.kind == TV_BOOL || v.kind == TV_FLOAT;
        bool mnum = mod.kind == TV_INT || mod.kind == TV_BOOL || mod.kind == TV_FLOAT;
        if (v.kind == TV_UNDEF) tpl__fail_undef(r, v);
        if (!vnum || !mnum)
            tpl__fail(r, -EINVAL, "unsupported operand types for %%: '%s' and '%s'",
                      tpl__type_name(v), tpl__type_name(mod));
        double p = v.kind == TV_FLOAT ? v.u.f : v.kind == TV_INT ? (double)v.u.i : v.u.b;
        double q = mod.kind == TV_FLOAT ? mod.u.f : mod.kind == TV_INT ? (double)mod.u.i : mod.u.b;
        if (q == 0) tpl__fail(r, -EINVAL, "modulo by zero");
        double m;
        if (v.kind != TV_FLOAT && mod.kind != TV_FLOAT) {
            int64_t i = v.kind == TV_INT ? v.u.i : v.u.b,
                    j = mod.kind == TV_INT ? mod.u.i : mod.u.b;
            int64_t im = j == -1 ? 0 : i % j;
            if (im != 0 && ((im < 0) != (j < 0))) im += j;
            m = (double)im;
        } else {
            m = fmod(p, q);
            if (m != 0 && ((q < 0) != (m < 0))) m += q;
        }
        return t[0] == 'o' ? m == 1 : m == 0;
    }
    bool xn = x.kind == TV_INT || x.kind == TV_FLOAT || x.kind == TV_BOOL;
    int c;
    if (vn && xn) {
        double p = v.kind == TV_FLOAT ? v.u.f : v.kind == TV_INT ? (double)v.u.i : v.u.b;
        double q = x.kind == TV_FLOAT ? x.u.f : x.kind == TV_INT ? (double)x.u.i : x.u.b;
        c = p < q ? -1 : p > q;
    } else if (v.kind == TV_STR && x.kind == TV_STR) {
        c = tpl__cmp_str(&v, &x);
    } else {
        tpl__fail(r, -EINVAL, "test '%s' cannot compare '%s' and '%s'", t, tpl__type_name(v),
                  tpl__type_name(x));
    }
    if (!strcmp(t, "lt") || !strcmp(t, "<") || !strcmp(t, "lessthan")) return c < 0;
    if (!strcmp(t, "le") || !strcmp(t, "<=")) return c <= 0;
    if (!strcmp(t, "gt") || !strcmp(t, ">") || !strcmp(t, "greaterthan")) return c > 0;
    if (!strcmp(t, "ge") || !strcmp(t, ">=")) return c >= 0;
    tpl__fail(r, -EINVAL, "unknown test '%s'", t);
}

/* ---- sorting: sort, dictsort, min, max, sum ---------------------------------------------- */

/* Python's ordering for sorted(): numbers with numbers, strings with strings, lists element by
 * element; anything else is a TypeError. */
static int order(tpl_render *r, tpl_value a, tpl_value b)
{
    bool an = a.kind == TV_INT || a.kind == TV_FLOAT || a.kind == TV_BOOL;
    bool bn = b.kind == TV_INT || b.kind == TV_FLOAT || b.kind == TV_BOOL;
    if (an && bn) {
        double x = a.kind == TV_FLOAT ? a.u.f : a.kind == TV_INT ? (double)a.u.i : a.u.b;
        double y = b.kind == TV_FLOAT ? b.u.f : b.kind == TV_INT ? (double)b.u.i : b.u.b;
        if (a.kind == TV_INT && b.kind == TV_INT) return (a.u.i > b.u.i) - (a.u.i < b.u.i);
        return (x > y) - (x < y);
    }
    if (a.kind == TV_STR && b.kind == TV_STR) return tpl__cmp_str(&a, &b);
    if (a.kind == TV_LIST && b.kind == TV_LIST) {
        for (size_t i = 0; i < a.u.list->n && i < b.u.list->n; i++) {
            int c = order(r, a.u.list->items[i], b.u.list->items[i]);
            if (c) return c;
        }
        return (a.u.list->n > b.u.list->n) - (a.u.list->n < b.u.list->n);
    }
    tpl__fail(r, -EINVAL, "'<' not supported between instances of '%s' and '%s'", tpl__type_name(a),
              tpl__type_name(b));
}

static tpl_value attr_path(tpl_render *r, tpl_value v, tpl_value attr)
{
    if (attr.kind == TV_NONE) return v;
    if (attr.kind == TV_INT) return tpl__getitem(r, v, attr);
    tpl_value s = tpl__to_str(r, attr);
    const char *p = s.u.str.s, *end = p + s.u.str.n;
    for (;;) {
        const char *dot = memchr(p, '.', (size_t)(end - p));
        size_t n = dot ? (size_t)(dot - p) : (size_t)(end - p);
        v = tpl__getitem(r, v, (tpl_value){.kind = TV_STR, .u.str = {p, n}});
        if (!dot) return v;
        p = dot + 1;
    }
}

/* jinja2's ignore_case, once per key (not per comparison: a sort of n strings would otherwise
 * lower-case n log n copies): a string key compares lower-cased, anything else, lists too, as
 * it is. */
static void fold_keys(tpl_render *r, tpl_value *keys, size_t n, bool case_sensitive)
{
    if (case_sensitive) return;
    for (size_t i = 0; i < n; i++)
        if (keys[i].kind == TV_STR) keys[i] = tpl__change_case(r, keys[i], 0);
}

/* Stable merge sort of items by key(item), as Python's sorted() orders them (equal keys keep
 * their order, reverse too); returns a new list.  O(n log n): a template can sort thousands of
 * items (the characters of a string). */
static tpl_list *sorted(tpl_render *r, const tpl_list *src, const tpl_value *keys, bool reverse)
{
    size_t n = src->n;
    size_t *idx = tpl__ralloc(r, (n ? n : 1) * sizeof *idx);
    size_t *tmp = tpl__ralloc(r, (n ? n : 1) * sizeof *tmp);
    for (size_t i = 0; i < n; i++)
        idx[i] = i;
    for (size_t w = 1; w < n; w *= 2) {
        for (size_t lo = 0; lo < n; lo += 2 * w) {
            size_t mid = lo + w < n ? lo + w : n, hi = lo + 2 * w < n ? lo + 2 * w : n;
            size_t a = lo, b = mid, k = lo;
            while (a < mid && b < hi) {
                /* the right run's item goes first only when it strictly precedes */
                int c = order(r, keys[idx[b]], keys[idx[a]]);
                tmp[k++] = (reverse ? c > 0 : c < 0) ? idx[b++] : idx[a++];
            }
            while (a < mid)
                tmp[k++] = idx[a++];
            while (b < hi)
                tmp[k++] = idx[b++];
        }
        size_t *t = idx;
        idx = tmp;
        tmp = t;
    }
    tpl_list *out = tpl__list_new(r, n);
    for (size_t i = 0; i < n; i++)
        tpl__list_push(r, out, src->items[idx[i]]);
    return out;
}

static tpl_value sort_filter(tpl_render *r, const char *f, tpl_value v, const tpl_args *a)
{
    tpl_list *items = tpl__iterate(r, v);
    if (!strcmp(f, "dictsort")) {
        if (v.kind != TV_DICT)
            tpl__fail(r, -EINVAL, "dictsort: expected a mapping, got %s", tpl__type_name(v));
        bool cs = tpl__truthy(tpl__arg(a, 0, "case_sensitive", mk_bool(false)));
        tpl_value by = tpl__arg(a, 1, "by", (tpl_value){.kind = TV_STR, .u.str = {"key", 3}});
        bool reverse = tpl__truthy(tpl__arg(a, 2, "reverse", mk_bool(false)));
        bool by_value = by.kind == TV_STR && by.u.str.n == 5 && !memcmp(by.u.str.s, "value", 5);
        if (!by_value && !(by.kind == TV_STR && by.u.str.n == 3 && !memcmp(by.u.str.s, "key", 3)))
            tpl__fail(r, -EINVAL, "You can only sort by either \"key\" or \"value\"");
        tpl_func fn = {.kind = TF_METHOD, .method = "items", .self = v};
        tpl_args none = {0};
        tpl_list *pairs = tpl__call_method(r, &fn, &none).u.list;
        tpl_value *keys = tpl__ralloc(r, (pairs->n ? pairs->n : 1) * sizeof *keys);
        for (size_t i = 0; i < pairs->n; i++)
            keys[i] = pairs->items[i].u.list->items[by_value ? 1 : 0];
        fold_keys(r, keys, pairs->n, cs);
        return mk_list(sorted(r, pairs, keys, reverse));
    }
    if (!strcmp(f, "sum")) {
        tpl_value attr = tpl__arg(a, 0, "attribute", TPL_NONE);
        tpl_value acc = tpl__arg(a, 1, "start", mk_int(0));
        for (size_t i = 0; i < items->n; i++) {
            tpl_value x = attr_path(r, items->items[i], attr);
            bool xn = x.kind == TV_INT || x.kind == TV_BOOL || x.kind == TV_FLOAT;
            if (!xn || !(acc.kind == TV_INT || acc.kind == TV_BOOL || acc.kind == TV_FLOAT))
                tpl__fail(r, -EINVAL, "unsupported operand types for +: '%s' and '%s'",
                          tpl__type_name(acc), tpl__type_name(x));
            if (acc.kind == TV_FLOAT || x.kind == TV_FLOAT) {
                double p = acc.kind == TV_FLOAT ? acc.u.f
                           : acc.kind == TV_INT ? (double)acc.u.i
                                                : acc.u.b;
                double q = x.kind == TV_FLOAT ? x.u.f : x.kind == TV_INT ? (double)x.u.i : x.u.b;
                acc = (tpl_value){.kind = TV_FLOAT, .u.f = p + q};
            } else {
                acc = mk_int((acc.kind == TV_INT ? acc.u.i : acc.u.b) +
                             (x.kind == TV_INT ? x.u.i : x.u.b));
            }
        }
        return acc;
    }
    bool is_sort = !strcmp(f, "sort");
    bool reverse = is_sort && tpl__truthy(tpl__arg(a, 0, "reverse", mk_bool(false)));
    bool cs = tpl__truthy(tpl__arg(a, is_sort ? 1 : 0, "case_sensitive", mk_bool(false)));
    tpl_value attr = tpl__arg(a, is_sort ? 2 : 1, "attribute", TPL_NONE);
    tpl_value *keys = tpl__ralloc(r, (items->n ? items->n : 1) * sizeof *keys);
    for (size_t i = 0; i < items->n; i++)
        keys[i] = attr_path(r, items->items[i], attr);
    fold_keys(r, keys, items->n, cs);
    if (is_sort) return mk_list(sorted(r, items, keys, reverse));
    /* min / max: the first of the extremes, undefined for an empty sequence */
    if (items->n == 0) return mk_undef(NULL);
    size_t best = 0;
    for (size_t i = 1; i < items->n; i++) {
        int c = order(r, keys[i], keys[best]);
        if (f[1] == 'i' ? c < 0 : c > 0) best = i;
    }
    return items->items[best];
}

/* ---- filters ------------------------------------------------------------------------------ */

static const char *const filter_names[] = {
    "trim",       "length",     "count",   "tojson", "string", "lower",   "upper",     "title",
    "capitalize", "replace",    "first",   "last",   "join",   "default", "d",         "items",
    "selectattr", "rejectattr", "select",  "reject", "map",    "safe",    "int",       "float",
    "list",       "abs",        "reverse", "unique", "indent", "round",   "wordcount", "sort",
    "dictsort",   "min",        "max",     "sum",    NULL};

bool tpl__filter_known(const char *name)
{
    return tpl__in_set(filter_names, name, strlen(name));
}

/* Items that pass (or, with reject, fail) a test: select/reject/selectattr/rejectattr. */
static tpl_value select_items(tpl_render *r, tpl_value seq, const tpl_args *a, bool by_attr,
                              bool keep)
{
    /* jinja2 skips a false sequence (`if seq:`), so none|selectattr(...) is empty */
    tpl_list *items = tpl__truthy(seq) ? tpl__iterate(r, seq) : tpl__list_new(r, 0);
    size_t first_test_arg = by_attr ? 1 : 0;
    tpl_value attr = by_attr ? tpl__str_arg(r, a, 0, NULL, "selectattr") : TPL_NONE;
    tpl_value test = tpl__arg(a, first_test_arg, NULL, TPL_NONE);
    tpl_args targs = {0};
    if (a->n > first_test_arg + 1) {
        targs.pos = a->pos + first_test_arg + 1;
        targs.n = a->n - first_test_arg - 1;
    }
    tpl_list *out = tpl__list_new(r, items->n);
    for (size_t i = 0; i < items->n; i++) {
        tpl_value v = items->items[i];
        if (by_attr) {
            /* dotted attributes ("function.name") are looked up part by part */
            const char *p = attr.u.str.s, *end = p + attr.u.str.n;
            while (p <= end) {
                const char *dot = memchr(p, '.', (size_t)(end - p));
                size_t n = dot ? (size_t)(dot - p) : (size_t)(end - p);
                v = tpl__getitem(r, v, (tpl_value){.kind = TV_STR, .u.str = {p, n}});
                if (!dot) break;
                p = dot + 1;
            }
        }
        bool pass;
        if (test.kind == TV_NONE)
            pass = tpl__truthy(v);
        else {
            if (test.kind != TV_STR) tpl__fail(r, -EINVAL, "test name must be a string");
            char name[32];
            snprintf(name, sizeof name, "%.*s", (int)test.u.str.n, test.u.str.s);
            if (!tpl__test_known(name)) tpl__fail(r, -EINVAL, "no test named '%s'", name);
            pass = tpl__test(r, name, v, &targs);
        }
        if (pass == keep) tpl__list_push(r, out, items->items[i]);
    }
    return mk_list(out);
}

static tpl_value length(tpl_render *r, tpl_value v)
{
    switch (v.kind) {
    case TV_UNDEF:
        return mk_int(0);
    case TV_STR:
        return mk_int((int64_t)utf8_count(v.u.str.s, v.u.str.n));
    case TV_LIST:
        if (v.u.list->is_generator) break;
        return mk_int((int64_t)v.u.list->n);
    case TV_DICT:
        return mk_int((int64_t)v.u.dict->n);
    default:
        break;
    }
    tpl__fail(r, -EINVAL, "object of type '%s' has no len()", tpl__type_name(v));
}

static tpl_value to_int(tpl_render *r, tpl_value v, tpl_value def)
{
    switch (v.kind) {
    case TV_INT:
        return v;
    case TV_BOOL:
        return mk_int(v.u.b);
    case TV_FLOAT:
        if (isnan(v.u.f) || isinf(v.u.f)) return def;
        return mk_int((int64_t)v.u.f);
    case TV_STR: {
        char buf[64];
        tpl_value s = tpl__strip(r, v, TPL_NONE, true, true);
        if (s.u.str.n == 0 || s.u.str.n >= sizeof buf) return def;
        memcpy(buf, s.u.str.s, s.u.str.n);
        buf[s.u.str.n] = 0;
        char *end;
        errno = 0;
        long long i = strtoll(buf, &end, 10);
        if (!*end && !errno) return mk_int(i);
        double d = strtod(buf, &end);
        if (!*end && !isnan(d) && !isinf(d)) return mk_int((int64_t)d);
        return def;
    }
    default:
        return def;
    }
}

static tpl_value to_float(tpl_render *r, tpl_value v, tpl_value def)
{
    switch (v.kind) {
    case TV_INT:
        return (tpl_value){.kind = TV_FLOAT, .u.f = (double)v.u.i};
    case TV_BOOL:
        return (tpl_value){.kind = TV_FLOAT, .u.f = v.u.b};
    case TV_FLOAT:
        return v;
    case TV_STR: {
        char buf[64];
        tpl_value s = tpl__strip(r, v, TPL_NONE, true, true);
        if (s.u.str.n == 0 || s.u.str.n >= sizeof buf) return def;
        memcpy(buf, s.u.str.s, s.u.str.n);
        buf[s.u.str.n] = 0;
        char *end;
        double d = strtod(buf, &end);
        return *end ? def : (tpl_value){.kind = TV_FLOAT, .u.f = d};
    }
    default:
        return def;
    }
}

/* jinja2's do_indent: the lines of s (split at "\n"), every line but the first (and, with
 * first=True, the first too) prefixed; empty lines only with blank=True. */
static tpl_value indent_filter(tpl_render *r, tpl_value s, const tpl_args *a)
{
    tpl_value width = tpl__arg(a, 0, "width", mk_int(4));
    bool first = tpl__truthy(tpl__arg(a, 1, "first", mk_bool(false)));
    bool blank = tpl__truthy(tpl__arg(a, 2, "blank", mk_bool(false)));
    tpl_sbuf pad = {0};
    if (width.kind == TV_STR)
        tpl__put(r, &pad, width.u.str.s, width.u.str.n);
    else
        for (int64_t i = 0; i < (width.kind == TV_INT ? width.u.i : 4); i++)
            tpl__put(r, &pad, " ", 1);
    tpl_sbuf b = {0};
    if (first) tpl__put(r, &b, pad.p, pad.n);
    const char *p = s.u.str.s, *end = p + s.u.str.n;
    bool is_first = true;
    for (;;) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t n = nl ? (size_t)(nl - p) : (size_t)(end - p);
        if (!is_first) {
            tpl__put(r, &b, "\n", 1);
            if (n > 0 || blank) tpl__put(r, &b, pad.p, pad.n);
        }
        tpl__put(r, &b, p, n);
        is_first = false;
        if (!nl) break;
        p = nl + 1;
    }
    return tpl__sbuf_value(r, &b);
}

/* The eager part of the generator filters: a plain list of what they yield. */
static tpl_value run_generator(tpl_render *r, const char *f, tpl_value v, const tpl_args *a)
{
    if (!strcmp(f, "items")) {
        if (v.kind == TV_UNDEF) return mk_list(tpl__list_new(r, 0));
        if (v.kind != TV_DICT) tpl__fail(r, -EINVAL, "can only get item pairs from a mapping");
        tpl_func fn = {.kind = TF_METHOD, .method = "items", .self = v};
        tpl_args none = {0};
        tpl_value pairs = tpl__call_method(r, &fn, &none);
        pairs.u.list->view = NULL;
        return pairs;
    }
    if (!strcmp(f, "selectattr")) return select_items(r, v, a, true, true);
    if (!strcmp(f, "rejectattr")) return select_items(r, v, a, true, false);
    if (!strcmp(f, "select")) return select_items(r, v, a, false, true);
    if (!strcmp(f, "reject")) return select_items(r, v, a, false, false);
    /* map */
    tpl_list *items = tpl__truthy(v) ? tpl__iterate(r, v) : tpl__list_new(r, 0),
             *out = tpl__list_new(r, items->n);
    tpl_value attr = tpl__arg(a, SIZE_MAX, "attribute", TPL_NONE);
    if (attr.kind != TV_NONE) {
        tpl_value def = tpl__arg(a, SIZE_MAX, "default", mk_undef(NULL));
        for (size_t i = 0; i < items->n; i++) {
            tpl_value x = tpl__getitem(r, items->items[i], tpl__to_str(r, attr));
            tpl__list_push(r, out, x.kind == TV_UNDEF && def.kind != TV_UNDEF ? def : x);
        }
        return mk_list(out);
    }
    tpl_value name = tpl__str_arg(r, a, 0, NULL, "map");
    char fname[32];
    snprintf(fname, sizeof fname, "%.*s", (int)name.u.str.n, name.u.str.s);
    if (!tpl__filter_known(fname)) tpl__fail(r, -EINVAL, "no filter named '%s'", fname);
    tpl_args rest = {.pos = a->pos + 1,
                     .n = a->n - 1,
                     .kw_names = a->kw_names,
                     .kw_vals = a->kw_vals,
                     .n_kw = a->n_kw};
    for (size_t i = 0; i < items->n; i++)
        tpl__list_push(r, out, tpl__filter(r, fname, items->items[i], &rest));
    return mk_list(out);
}

void tpl__force(tpl_render *r, tpl_list *g)
{
    if (!g->lazy_filter) return;
    const char *f = g->lazy_filter;
    g->lazy_filter = NULL; /* a failure below leaves the render anyway */
    tpl_list *items = run_generator(r, f, g->lazy_seq, g->lazy_args).u.list;
    g->items = items->items;
    g->n = items->n;
    g->cap = items->cap;
}

tpl_value tpl__filter(tpl_render *r, const char *f, tpl_value v, const tpl_args *a)
{
    if (!strcmp(f, "trim")) {
        tpl_value chars = tpl__arg(a, 0, "chars", TPL_NONE);
        return tpl__strip(r, tpl__to_str(r, v), chars, true, true);
    }
    if (!strcmp(f, "length") || !strcmp(f, "count")) return length(r, v);
    if (!strcmp(f, "tojson")) return tpl__tojson(r, v, a);
    if (!strcmp(f, "string")) return tpl__to_str(r, v);
    if (!strcmp(f, "safe")) {
        tpl_value m = tpl__to_str(r, v);
        m.safe = true;
        return m;
    }
    if (!strcmp(f, "lower")) return tpl__change_case(r, tpl__to_str(r, v), 0);
    if (!strcmp(f, "upper")) return tpl__change_case(r, tpl__to_str(r, v), 1);
    if (!strcmp(f, "title")) return tpl__change_case(r, tpl__to_str(r, v), 4);
    if (!strcmp(f, "capitalize"))
        return tpl__change_case(r, tpl__change_case(r, tpl__to_str(r, v), 0), 3);
    if (!strcmp(f, "replace")) {
        tpl_value cnt = tpl__arg(a, 2, "count", TPL_NONE);
        return tpl__replace(r, tpl__to_str(r, v), tpl__to_str(r, tpl__arg(a, 0, "old", TPL_NONE)),
                            tpl__to_str(r, tpl__arg(a, 1, "new", TPL_NONE)),
                            cnt.kind == TV_INT ? cnt.u.i : -1);
    }
    if (!strcmp(f, "first") || !strcmp(f, "last")) {
        if (v.kind == TV_UNDEF) return mk_undef(NULL);
        if (v.kind == TV_LIST && v.u.list->is_generator) {
            tpl_list *g = v.u.list;
            tpl__force(r, g);
            if (f[0] == 'l') tpl__fail(r, -EINVAL, "'generator' object is not reversible");
            /* next(iter(gen)) */
            return g->consumed < g->n ? g->items[g->consumed++] : mk_undef(NULL);
        }
        tpl_list *l = tpl__iterate(r, v);
        if (l->n == 0) return mk_undef(NULL);
        return l->items[f[0] == 'f' ? 0 : l->n - 1];
    }
    if (!strcmp(f, "join"))
        return tpl__join(
            r, v,
            tpl__to_str(r, tpl__arg(a, 0, "d", (tpl_value){.kind = TV_STR, .u.str = {"", 0}})),
            tpl__arg(a, 1, "attribute", TPL_NONE));
    if (!strcmp(f, "default") || !strcmp(f, "d")) {
        tpl_value def =
            tpl__arg(a, 0, "default_value", (tpl_value){.kind = TV_STR, .u.str = {"", 0}});
        bool boolean = tpl__truthy(tpl__arg(a, 1, "boolean", mk_bool(false)));
        if (v.kind == TV_UNDEF || (boolean && !tpl__truthy(v))) return def;
        return v;
    }
    if (!strcmp(f, "items") || !strcmp(f, "selectattr") || !strcmp(f, "rejectattr") ||
        !strcmp(f, "select") || !strcmp(f, "reject") || !strcmp(f, "map")) {
        /* generators: nothing runs until the first iteration */
        tpl_list *g = tpl__list_new(r, 0);
        tpl_args *copy = tpl__ralloc(r, sizeof *copy);
        *copy = *a;
        g->is_generator = true;
        g->lazy_filter = f;
        g->gen_name = !strcmp(f, "map")     ? "sync_do_map"
                      : !strcmp(f, "items") ? "do_items"
                                            : "select_or_reject";
        g->lazy_seq = v;
        g->lazy_args = copy;
        return mk_list(g);
    }
    if ((!strcmp(f, "int") || !strcmp(f, "float")) && v.kind == TV_UNDEF) tpl__fail_undef(r, v);
    if (!strcmp(f, "int")) return to_int(r, v, tpl__arg(a, 0, "default", mk_int(0)));
    if (!strcmp(f, "float"))
        return to_float(r, v, tpl__arg(a, 0, "default", (tpl_value){.kind = TV_FLOAT, .u.f = 0}));
    if (!strcmp(f, "list")) {
        tpl_list *src = tpl__iterate(r, v), *l = tpl__list_new(r, src->n);
        for (size_t i = 0; i < src->n; i++)
            tpl__list_push(r, l, src->items[i]);
        return mk_list(l);
    }
    if (!strcmp(f, "abs")) {
        if (v.kind == TV_INT) return mk_int(v.u.i < 0 ? -v.u.i : v.u.i);
        if (v.kind == TV_BOOL) return mk_int(v.u.b);
        if (v.kind == TV_FLOAT) return (tpl_value){.kind = TV_FLOAT, .u.f = fabs(v.u.f)};
        tpl__fail(r, -EINVAL, "bad operand type for abs(): '%s'", tpl__type_name(v));
    }
    if (!strcmp(f, "round")) {
        /* round(value, precision) for "common" (Python's: ints stay ints, floats rounded
         * correctly, ties to even); math.ceil / math.floor scaled for the other methods. */
        tpl_value prec = tpl__arg(a, 0, "precision", mk_int(0));
        tpl_value method =
            tpl__arg(a, 1, "method", (tpl_value){.kind = TV_STR, .u.str = {"common", 6}});
        if (v.kind != TV_INT && v.kind != TV_FLOAT && v.kind != TV_BOOL)
            tpl__fail(r, -EINVAL, "type %s doesn't define __round__ method", tpl__type_name(v));
        if (prec.kind != TV_INT || prec.u.i < 0 || prec.u.i > 30)
            tpl__fail(r, -EINVAL, "round: unsupported precision");
        const char *how = method.kind == TV_STR ? method.u.str.s : "";
        size_t how_n = method.kind == TV_STR ? method.u.str.n : 0;
        double x = v.kind == TV_FLOAT ? v.u.f : v.kind == TV_INT ? (double)v.u.i : v.u.b;
        if (how_n == 6 && !memcmp(how, "common", 6)) {
            if (v.kind != TV_FLOAT) return mk_int(v.kind == TV_INT ? v.u.i : v.u.b);
            if (isnan(x) || isinf(x)) return v;
            char buf[400];
            /* exact value, correctly rounded */
            snprintf(buf, sizeof buf, "%.*f", (int)prec.u.i, x);
            return (tpl_value){.kind = TV_FLOAT, .u.f = strtod(buf, NULL)};
        }
        double m = pow(10, (double)prec.u.i);
        if (how_n == 4 && !memcmp(how, "ceil", 4))
            return (tpl_value){.kind = TV_FLOAT, .u.f = ceil(x * m) / m};
        if (how_n == 5 && !memcmp(how, "floor", 5))
            return (tpl_value){.kind = TV_FLOAT, .u.f = floor(x * m) / m};
        tpl__fail(r, -EINVAL, "method must be common, ceil or floor");
    }
    if (!strcmp(f, "reverse")) {
        if (v.kind == TV_STR) {
            tpl_sbuf b = {0};
            for (size_t n = v.u.str.n; n > 0;) {
                size_t k = utf8_span_back(v.u.str.s, n);
                tpl__put(r, &b, v.u.str.s + n - k, k);
                n -= k;
            }
            return tpl__sbuf_value(r, &b);
        }
        tpl_list *src = tpl__iterate(r, v), *l = tpl__list_new(r, src->n);
        for (size_t i = src->n; i > 0; i--)
            tpl__list_push(r, l, src->items[i - 1]);
        return mk_list(l);
    }
    if (!strcmp(f, "indent")) return indent_filter(r, tpl__to_str(r, v), a);
    if (!strcmp(f, "unique")) {
        tpl_list *src = tpl__iterate(r, v), *l = tpl__list_new(r, src->n);
        bool cs = tpl__truthy(tpl__arg(a, 0, "case_sensitive", mk_bool(false)));
        tpl_list *seen = tpl__list_new(r, src->n);
        for (size_t i = 0; i < src->n; i++) {
            tpl_value key = src->items[i];
            if (tpl__unhashable(key))
                tpl__fail(r, -EINVAL, "unhashable type: '%s'", tpl__type_name(key));
            if (!cs && key.kind == TV_STR) key = tpl__change_case(r, key, 0);
            bool dup = false;
            for (size_t k = 0; k < seen->n && !dup; k++)
                dup = tpl__equal(seen->items[k], key);
            if (dup) continue;
            tpl__list_push(r, seen, key);
            tpl__list_push(r, l, src->items[i]);
        }
        return mk_list(l);
    }
    if (!strcmp(f, "sort") || !strcmp(f, "dictsort") || !strcmp(f, "min") || !strcmp(f, "max") ||
        !strcmp(f, "sum"))
        return sort_filter(r, f, v, a);
    if (!strcmp(f, "wordcount")) {
        /* len(re.findall(r"\w+", s)): runs of letters, digits and '_' (non-ASCII counted as
         * letters unless it is whitespace) */
        tpl_value str = tpl__to_str(r, v);
        int64_t words = 0;
        bool in_word = false;
        for (size_t i = 0; i < str.u.str.n;) {
            size_t k = utf8_span(str.u.str.s + i, str.u.str.n - i);
            unsigned char c = (unsigned char)str.u.str.s[i];
            bool w = c == '_' || (c >= '0' && c <= '9') || ((c | 32) >= 'a' && (c | 32) <= 'z') ||
                     (c >= 0x80 && tpl__space_at(str.u.str.s + i, str.u.str.n - i) == 0);
            words += w && !in_word;
            in_word = w;
            i += k;
        }
        return mk_int(words);
    }
    /* Every name in filter_names returns above (parsing refuses any other), so this is a broken
     * invariant, not a missing feature; say so rather than render something. */
    tpl__fail(r, -EINVAL, "internal error: filter '%s' has no implementation for type %s", f,
              tpl__type_name(v));
}
