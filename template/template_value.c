/*
 * Template values: what they mean and how they print (Python's truthiness, equality, str() and
 * repr(), float repr, HF's tojson) and attribute and item access as jinja2's sandbox does it.
 *
 * The reference for each is the Python behaviour under Hugging Face's environment: `tojson` is
 * HF's override (json.dumps with ensure_ascii=False, insertion order, ", "/": " separators),
 * attribute access on anything but an undefined value never fails (it yields undefined), and
 * jinja2's default Undefined prints as "" but fails when used as an object or operand.
 */
#include "template/template_internal.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ---- meaning ------------------------------------------------------------------------------ */

bool tpl__truthy(tpl_value v)
{
    switch (v.kind) {
    case TV_UNDEF:
    case TV_NONE:
        return false;
    case TV_BOOL:
        return v.u.b;
    case TV_INT:
        return v.u.i != 0;
    case TV_FLOAT:
        return v.u.f != 0;
    case TV_STR:
        return v.u.str.n > 0;
    case TV_LIST:
        return v.u.list->is_generator || v.u.list->n > 0;
    case TV_DICT:
        return v.u.dict->is_namespace || v.u.dict->is_loop || v.u.dict->n > 0;
    case TV_FUNC:
        return true;
    }
    return false;
}

bool tpl__equal(tpl_value a, tpl_value b)
{
    bool an = a.kind == TV_INT || a.kind == TV_FLOAT || a.kind == TV_BOOL;
    bool bn = b.kind == TV_INT || b.kind == TV_FLOAT || b.kind == TV_BOOL;
    if (an && bn) {
        if (a.kind != TV_FLOAT && b.kind != TV_FLOAT) {
            int64_t x = a.kind == TV_INT ? a.u.i : a.u.b, y = b.kind == TV_INT ? b.u.i : b.u.b;
            return x == y;
        }
        double x = a.kind == TV_FLOAT ? a.u.f : a.kind == TV_INT ? (double)a.u.i : a.u.b;
        double y = b.kind == TV_FLOAT ? b.u.f : b.kind == TV_INT ? (double)b.u.i : b.u.b;
        return x == y;
    }
    if (a.kind != b.kind) return false;
    switch (a.kind) {
    case TV_UNDEF:
    case TV_NONE:
        return true;
    case TV_STR:
        return a.u.str.n == b.u.str.n &&
               (a.u.str.n == 0 || memcmp(a.u.str.s, b.u.str.s, a.u.str.n) == 0);
    case TV_LIST:
        if (a.u.list->is_generator || b.u.list->is_generator) return a.u.list == b.u.list;
        if (a.u.list->n != b.u.list->n || a.u.list->is_tuple != b.u.list->is_tuple) return false;
        for (size_t i = 0; i < a.u.list->n; i++)
            if (!tpl__equal(a.u.list->items[i], b.u.list->items[i])) return false;
        return true;
    case TV_DICT:
        if (a.u.dict->is_namespace || b.u.dict->is_namespace || a.u.dict->is_loop ||
            b.u.dict->is_loop)
            return a.u.dict == b.u.dict;
        if (a.u.dict->n != b.u.dict->n) return false;
        for (size_t i = 0; i < a.u.dict->n; i++) {
            tpl_value v;
            if (!tpl__dict_get(b.u.dict, a.u.dict->keys[i], &v) ||
                !tpl__equal(a.u.dict->vals[i], v))
                return false;
        }
        return true;
    case TV_FUNC:
        return a.u.func == b.u.func;
    default:
        return false;
    }
}

const char *tpl__type_name(tpl_value v)
{
    static const char *const names[] = {"Undefined", "NoneType", "bool", "int",     "float",
                                        "str",       "list",     "dict", "function"};
    if (v.kind == TV_DICT && v.u.dict->is_namespace) return "Namespace";
    if (v.kind == TV_LIST && v.u.list->is_generator) return "generator";
    if (v.kind == TV_LIST && v.u.list->is_tuple) return "tuple";
    return names[v.kind];
}

/* ---- printing ----------------------------------------------------------------------------- */

/* Python's repr(float): the shortest digits that read back exactly, fixed notation for
 * decimal exponents in (-4, 16], scientific (two-digit exponent at least) otherwise. */
static void float_repr(tpl_render *r, tpl_sbuf *b, double v, bool json)
{
    if (isnan(v)) {
        tpl__put(r, b, json ? "NaN" : "nan", 3);
        return;
    }
    if (isinf(v)) {
        const char *s = json ? (v < 0 ? "-Infinity" : "Infinity") : (v < 0 ? "-inf" : "inf");
        tpl__put(r, b, s, strlen(s));
        return;
    }
    char tmp[64];
    int p;
    for (p = 1; p <= 17; p++) {
        snprintf(tmp, sizeof tmp, "%.*e", p - 1, v);
        if (strtod(tmp, NULL) == v) break;
    }
    /* tmp: [-]d[.ddd]e[+-]XX */
    char digits[32];
    size_t nd = 0;
    const char *q = tmp;
    bool neg = *q == '-';
    if (neg) q++;
    for (; *q && *q != 'e'; q++)
        if (*q != '.') digits[nd++] = *q;
    int exp10 = atoi(q + 1);
    while (nd > 1 && digits[nd - 1] == '0')
        nd--;
    int decpt = exp10 + 1;
    char out[64];
    size_t o = 0;
    if (neg) out[o++] = '-';
    if (decpt > -4 && decpt <= 16) {
        if (decpt <= 0) {
            out[o++] = '0';
            out[o++] = '.';
            for (int i = 0; i < -decpt; i++)
                out[o++] = '0';
            for (size_t i = 0; i < nd; i++)
                out[o++] = digits[i];
        } else if ((size_t)decpt >= nd) {
            for (size_t i = 0; i < nd; i++)
                out[o++] = digits[i];
            for (size_t i = nd; i < (size_t)decpt; i++)
                out[o++] = '0';
            out[o++] = '.';
            out[o++] = '0';
        } else {
            for (size_t i = 0; i < nd; i++) {
                if (i == (size_t)decpt) out[o++] = '.';
                out[o++] = digits[i];
            }
        }
    } else {
        out[o++] = digits[0];
        if (nd > 1) {
            out[o++] = '.';
            for (size_t i = 1; i < nd; i++)
                out[o++] = digits[i];
        }
        o +=
            (size_t)snprintf(out + o, sizeof out - o, "e%c%02d", exp10 < 0 ? '-' : '+', abs(exp10));
    }
    tpl__put(r, b, out, o);
}

static void int_str(tpl_render *r, tpl_sbuf *b, int64_t i)
{
    char tmp[32];
    int n = snprintf(tmp, sizeof tmp, "%lld", (long long)i);
    tpl__put(r, b, tmp, (size_t)n);
}

/* Python's repr(str): single quotes unless the text has ' and no ". */
static void str_repr(tpl_render *r, tpl_sbuf *b, const char *s, size_t n)
{
    bool has_single = memchr(s, '\'', n) != NULL, has_double = memchr(s, '"', n) != NULL;
    char quote = has_single && !has_double ? '"' : '\'';
    tpl__put(r, b, &quote, 1);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        char tmp[8];
        if (c == '\\' || c == (unsigned char)quote) {
            tmp[0] = '\\';
            tmp[1] = (char)c;
            tpl__put(r, b, tmp, 2);
        } else if (c == '\n')
            tpl__put(r, b, "\\n", 2);
        else if (c == '\r')
            tpl__put(r, b, "\\r", 2);
        else if (c == '\t')
            tpl__put(r, b, "\\t", 2);
        else if (c < 0x20 || c == 0x7f) {
            snprintf(tmp, sizeof tmp, "\\x%02x", c);
            tpl__put(r, b, tmp, 4);
        } else if (c == 0xc2 && i + 1 < n && (unsigned char)s[i + 1] >= 0x80 &&
                   (unsigned char)s[i + 1] <= 0xa0) {
            /* C1 controls and NBSP are not printable for Python */
            snprintf(tmp, sizeof tmp, "\\x%02x", (unsigned char)s[i + 1]);
            tpl__put(r, b, tmp, 4);
            i++;
        } else
            tpl__put(r, b, s + i, 1);
    }
    tpl__put(r, b, &quote, 1);
}

static void repr_items(tpl_render *r, tpl_sbuf *b, tpl_value v)
{
    /* A template can nest lists in a loop ({% set ns.x = [ns.x] %}): bound the recursion. */
    if (++r->depth > 1000) tpl__fail(r, -ELOOP, "value nested too deep to print");
    if (v.kind == TV_LIST) {
        bool tuple = v.u.list->is_tuple;
        tpl__put(r, b, tuple ? "(" : "[", 1);
        for (size_t i = 0; i < v.u.list->n; i++) {
            if (i) tpl__put(r, b, ", ", 2);
            tpl__repr(r, b, v.u.list->items[i]);
        }
        if (tuple && v.u.list->n == 1) tpl__put(r, b, ",", 1);
        tpl__put(r, b, tuple ? ")" : "]", 1);
        r->depth--;
        return;
    }
    tpl__put(r, b, "{", 1);
    for (size_t i = 0; i < v.u.dict->n; i++) {
        if (i) tpl__put(r, b, ", ", 2);
        tpl__repr(r, b, v.u.dict->keys[i]);
        tpl__put(r, b, ": ", 2);
        tpl__repr(r, b, v.u.dict->vals[i]);
    }
    tpl__put(r, b, "}", 1);
    r->depth--;
}

void tpl__str(tpl_render *r, tpl_sbuf *b, tpl_value v)
{
    switch (v.kind) {
    case TV_UNDEF:
        return;
    case TV_NONE:
        tpl__put(r, b, "None", 4);
        return;
    case TV_BOOL:
        tpl__put(r, b, v.u.b ? "True" : "False", v.u.b ? 4 : 5);
        return;
    case TV_INT:
        int_str(r, b, v.u.i);
        return;
    case TV_FLOAT:
        float_repr(r, b, v.u.f, false);
        return;
    case TV_STR:
        tpl__put(r, b, v.u.str.s, v.u.str.n);
        return;
    case TV_LIST:
        if (v.u.list->is_generator) {
            /* jinja2 prints the generator function and an address; the address cannot match */
            const char *name = v.u.list->gen_name ? v.u.list->gen_name : "generator";
            tpl__put(r, b, "<generator object ", 18);
            tpl__put(r, b, name, strlen(name));
            tpl__put(r, b, " at 0x0>", 8);
        } else if (v.u.list->view) {
            tpl__put(r, b, v.u.list->view, strlen(v.u.list->view));
            tpl__put(r, b, "(", 1);
            repr_items(r, b, v);
            tpl__put(r, b, ")", 1);
        } else {
            repr_items(r, b, v);
        }
        return;
    case TV_DICT:
        if (v.u.dict->is_loop) {
            tpl_value i, n;
            tpl__dict_get_str(v.u.dict, "index", &i);
            tpl__dict_get_str(v.u.dict, "length", &n);
            char tmp[80];
            int k = snprintf(tmp, sizeof tmp, "<LoopContext %lld/%lld>", (long long)i.u.i,
                             (long long)n.u.i);
            tpl__put(r, b, tmp, (size_t)k);
            return;
        }
        if (v.u.dict->is_namespace) {
            tpl__put(r, b, "<Namespace ", 11);
            repr_items(r, b, v);
            tpl__put(r, b, ">", 1);
            return;
        }
        repr_items(r, b, v);
        return;
    case TV_FUNC:
        tpl__put(r, b, "<function>", 10);
        return;
    }
}

void tpl__html_escape(tpl_render *r, tpl_sbuf *b, tpl_value s)
{
    size_t run = 0;
    for (size_t i = 0; i < s.u.str.n; i++) {
        const char *esc = NULL;
        switch (s.u.str.s[i]) {
        case '&':
            esc = "&amp;";
            break;
        case '<':
            esc = "&lt;";
            break;
        case '>':
            esc = "&gt;";
            break;
        case '\'':
            esc = "&#39;";
            break;
        case '"':
            esc = "&#34;";
            break;
        default:
            run++;
            continue;
        }
        tpl__put(r, b, s.u.str.s + i - run, run);
        run = 0;
        tpl__put(r, b, esc, strlen(esc));
    }
    tpl__put(r, b, s.u.str.s + s.u.str.n - run, run);
}

void tpl__repr(tpl_render *r, tpl_sbuf *b, tpl_value v)
{
    if (v.kind == TV_STR)
        str_repr(r, b, v.u.str.s, v.u.str.n);
    else if (v.kind == TV_UNDEF)
        tpl__put(r, b, "Undefined", 9);
    else
        tpl__str(r, b, v);
}

tpl_value tpl__to_str(tpl_render *r, tpl_value v)
{
    if (v.kind == TV_STR) return v;
    tpl_sbuf b = {0};
    tpl__str(r, &b, v);
    return tpl__sbuf_value(r, &b);
}

/* ---- tojson (Hugging Face's: json.dumps, ensure_ascii off, insertion order) --------------- */

typedef struct json_opts {
    const char *indent; /* NULL: single line */
    size_t indent_n;
    const char *item_sep, *key_sep;
    bool ensure_ascii, sort_keys;
} json_opts;

static void json_string(tpl_render *r, tpl_sbuf *b, const char *s, size_t n, bool ensure_ascii)
{
    tpl__put(r, b, "\"", 1);
    size_t run = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        const char *esc = NULL;
        char tmp[16];
        switch (c) {
        case '"':
            esc = "\\\"";
            break;
        case '\\':
            esc = "\\\\";
            break;
        case '\n':
            esc = "\\n";
            break;
        case '\r':
            esc = "\\r";
            break;
        case '\t':
            esc = "\\t";
            break;
        case '\b':
            esc = "\\b";
            break;
        case '\f':
            esc = "\\f";
            break;
        default:
            if (c < 0x20) {
                snprintf(tmp, sizeof tmp, "\\u%04x", c);
                esc = tmp;
            } else if (c >= 0x80 && ensure_ascii) {
                size_t k = utf8_span(s + i, n - i);
                uint32_t cp = k == 2 ? (c & 0x1f) : k == 3 ? (c & 0x0f) : (c & 0x07);
                for (size_t j = 1; j < k; j++)
                    cp = (cp << 6) | ((unsigned char)s[i + j] & 0x3f);
                if (cp >= 0x10000) {
                    cp -= 0x10000;
                    snprintf(tmp, sizeof tmp, "\\u%04x\\u%04x", 0xd800 + (cp >> 10),
                             0xdc00 + (cp & 0x3ff));
                } else {
                    snprintf(tmp, sizeof tmp, "\\u%04x", cp);
                }
                tpl__put(r, b, s + i - run, run);
                run = 0;
                tpl__put(r, b, tmp, strlen(tmp));
                i += k - 1;
                continue;
            }
        }
        if (esc) {
            tpl__put(r, b, s + i - run, run);
            run = 0;
            tpl__put(r, b, esc, strlen(esc));
        } else {
            run++;
        }
    }
    tpl__put(r, b, s + n - run, run);
    tpl__put(r, b, "\"", 1);
}

static void json_newline(tpl_render *r, tpl_sbuf *b, const json_opts *o, int level)
{
    tpl__put(r, b, "\n", 1);
    for (int i = 0; i < level; i++)
        tpl__put(r, b, o->indent, o->indent_n);
}

int tpl__cmp_str(const tpl_value *a, const tpl_value *b)
{
    size_t n = a->u.str.n < b->u.str.n ? a->u.str.n : b->u.str.n;
    int c = n ? memcmp(a->u.str.s, b->u.str.s, n) : 0;
    return c ? c : (a->u.str.n > b->u.str.n) - (a->u.str.n < b->u.str.n);
}

static void json_value(tpl_render *r, tpl_sbuf *b, tpl_value v, const json_opts *o, int level)
{
    if (level > 512) tpl__fail(r, -ELOOP, "value nested too deep for tojson");
    switch (v.kind) {
    case TV_NONE:
        tpl__put(r, b, "null", 4);
        return;
    case TV_BOOL:
        tpl__put(r, b, v.u.b ? "true" : "false", v.u.b ? 4 : 5);
        return;
    case TV_INT:
        int_str(r, b, v.u.i);
        return;
    case TV_FLOAT:
        float_repr(r, b, v.u.f, true);
        return;
    case TV_STR:
        json_string(r, b, v.u.str.s, v.u.str.n, o->ensure_ascii);
        return;
    case TV_LIST: {
        tpl_list *l = v.u.list;
        if (l->is_generator || l->view) break;
        if (l->n == 0) {
            tpl__put(r, b, "[]", 2);
            return;
        }
        tpl__put(r, b, "[", 1);
        for (size_t i = 0; i < l->n; i++) {
            if (i) tpl__put(r, b, o->item_sep, strlen(o->item_sep));
            if (o->indent) json_newline(r, b, o, level + 1);
            json_value(r, b, l->items[i], o, level + 1);
        }
        if (o->indent) json_newline(r, b, o, level);
        tpl__put(r, b, "]", 1);
        return;
    }
    case TV_DICT: {
        tpl_dict *d = v.u.dict;
        if (d->is_namespace || d->is_loop) break;
        if (d->n == 0) {
            tpl__put(r, b, "{}", 2);
            return;
        }
        size_t *order = tpl__ralloc(r, d->n * sizeof *order);
        for (size_t i = 0; i < d->n; i++)
            order[i] = i;
        if (o->sort_keys) /* insertion sort: stable, and dicts here are small */
            for (size_t i = 1; i < d->n; i++) {
                size_t k = order[i], j = i;
                if (d->keys[k].kind != TV_STR)
                    tpl__fail(r, -EINVAL, "tojson: sort_keys needs string keys");
                while (j > 0 && tpl__cmp_str(&d->keys[order[j - 1]], &d->keys[k]) > 0) {
                    order[j] = order[j - 1];
                    j--;
                }
                order[j] = k;
            }
        tpl__put(r, b, "{", 1);
        for (size_t i = 0; i < d->n; i++) {
            tpl_value key = d->keys[order[i]];
            if (i) tpl__put(r, b, o->item_sep, strlen(o->item_sep));
            if (o->indent) json_newline(r, b, o, level + 1);
            if (key.kind == TV_STR) {
                json_string(r, b, key.u.str.s, key.u.str.n, o->ensure_ascii);
            } else if (key.kind == TV_INT || key.kind == TV_FLOAT || key.kind == TV_BOOL ||
                       key.kind == TV_NONE) {
                tpl_sbuf kb = {0};
                json_value(r, &kb, key, o, level + 1);
                json_string(r, b, kb.p, kb.n, o->ensure_ascii);
            } else {
                tpl__fail(r, -EINVAL, "keys must be str, int, float, bool or None, not %s",
                          tpl__type_name(key));
            }
            tpl__put(r, b, o->key_sep, strlen(o->key_sep));
            json_value(r, b, d->vals[order[i]], o, level + 1);
        }
        if (o->indent) json_newline(r, b, o, level);
        tpl__put(r, b, "}", 1);
        return;
    }
    default:
        break;
    }
    tpl__fail(r, -EINVAL, "Object of type %s is not JSON serializable", tpl__type_name(v));
}

/* ---- access ------------------------------------------------------------------------------- */

static const char *const str_methods[] = {
    "startswith", "endswith",   "split",   "rsplit",     "strip",   "lstrip", "rstrip",
    "upper",      "lower",      "title",   "capitalize", "replace", "find",   "count",
    "join",       "splitlines", "isdigit", "isalpha",    "isspace", "format", NULL};
static const char *const dict_methods[] = {"items", "keys",    "values",     "get",
                                           "pop",   "update",  "setdefault", "copy",
                                           "clear", "popitem", "fromkeys",   NULL};
static const char *const list_methods[] = {"append", "extend", "insert", "remove",  "pop",  "clear",
                                           "index",  "count",  "sort",   "reverse", "copy", NULL};

bool tpl__in_set(const char *const *set, const char *name, size_t n)
{
    for (size_t i = 0; set[i]; i++)
        if (strlen(set[i]) == n && memcmp(set[i], name, n) == 0) return true;
    return false;
}

static tpl_value bound(tpl_render *r, tpl_value self, const char *const *set, const char *name,
                       size_t n)
{
    for (size_t i = 0; set[i]; i++)
        if (strlen(set[i]) == n && memcmp(set[i], name, n) == 0) {
            tpl_func *f = tpl__ralloc(r, sizeof *f);
            f->kind = TF_METHOD;
            f->method = set[i];
            f->self = self;
            return (tpl_value){.kind = TV_FUNC, .u.func = f};
        }
    return mk_undef(NULL);
}

tpl_value tpl__getattr(tpl_render *r, tpl_value obj, const char *name, size_t n)
{
    tpl_value v;
    switch (obj.kind) {
    case TV_UNDEF:
        tpl__fail_undef(r, obj);
    case TV_DICT:
        /* Python attributes first (dict methods), then keys — jinja2's getattr order. */
        if (!obj.u.dict->is_namespace && !obj.u.dict->is_loop && tpl__in_set(dict_methods, name, n))
            return bound(r, obj, dict_methods, name, n);
        if (tpl__dict_get(obj.u.dict, (tpl_value){.kind = TV_STR, .u.str = {name, n}}, &v))
            return v;
        break;
    case TV_STR:
        if (tpl__in_set(str_methods, name, n)) return bound(r, obj, str_methods, name, n);
        break;
    case TV_LIST:
        if (obj.u.list->is_generator) break; /* generators have no methods a template can call */
        if (tpl__in_set(list_methods, name, n)) return bound(r, obj, list_methods, name, n);
        break;
    default:
        break;
    }
    return (tpl_value){.kind = TV_UNDEF, .u.str = {name, n}};
}

tpl_value tpl__getitem(tpl_render *r, tpl_value obj, tpl_value key)
{
    tpl_value v;
    if (obj.kind == TV_UNDEF) tpl__fail_undef(r, obj);
    if (obj.kind == TV_DICT && !obj.u.dict->is_loop && !obj.u.dict->is_namespace) {
        if (tpl__dict_get(obj.u.dict, key, &v)) return v;
    } else if (((obj.kind == TV_LIST && !obj.u.list->is_generator && !obj.u.list->view) ||
                obj.kind == TV_STR) &&
               (key.kind == TV_INT || key.kind == TV_BOOL)) {
        int64_t i = key.kind == TV_INT ? key.u.i : key.u.b;
        if (obj.kind == TV_LIST) {
            int64_t n = (int64_t)obj.u.list->n;
            if (i < 0) i += n;
            if (i >= 0 && i < n) return obj.u.list->items[i];
        } else {
            int64_t n = (int64_t)utf8_count(obj.u.str.s, obj.u.str.n);
            if (i < 0) i += n;
            if (i >= 0 && i < n) {
                size_t off = 0;
                for (int64_t k = 0; k < i; k++)
                    off += utf8_span(obj.u.str.s + off, obj.u.str.n - off);
                return tpl__strv(r, obj.u.str.s + off,
                                 utf8_span(obj.u.str.s + off, obj.u.str.n - off));
            }
        }
        return mk_undef(NULL);
    }
    if (key.kind == TV_STR) return tpl__getattr(r, obj, key.u.str.s, key.u.str.n);
    return mk_undef(NULL);
}

tpl_list *tpl__iterate(tpl_render *r, tpl_value v)
{
    switch (v.kind) {
    case TV_UNDEF:
        return tpl__list_new(r, 0);
    case TV_LIST: {
        tpl_list *l = v.u.list;
        if (!l->is_generator) return l;
        tpl__force(r, l);
        /* A generator yields its items once: what is left now, nothing the next time. */
        tpl_list *rest = tpl__list_new(r, l->n - l->consumed);
        for (size_t i = l->consumed; i < l->n; i++)
            tpl__list_push(r, rest, l->items[i]);
        l->consumed = l->n;
        return rest;
    }
    case TV_DICT: {
        if (v.u.dict->is_namespace || v.u.dict->is_loop) break;
        tpl_list *l = tpl__list_new(r, v.u.dict->n);
        for (size_t i = 0; i < v.u.dict->n; i++)
            tpl__list_push(r, l, v.u.dict->keys[i]);
        return l;
    }
    case TV_STR: {
        tpl_list *l = tpl__list_new(r, 0);
        for (size_t i = 0; i < v.u.str.n;) {
            size_t k = utf8_span(v.u.str.s + i, v.u.str.n - i);
            tpl__list_push(r, l, (tpl_value){.kind = TV_STR, .u.str = {v.u.str.s + i, k}});
            i += k;
        }
        return l;
    }
    default:
        break;
    }
    tpl__fail(r, -EINVAL, "'%s' object is not iterable", tpl__type_name(v));
}

/* HF's tojson filter: tojson(indent=None, ensure_ascii=False, separators=None, sort_keys=False). */
tpl_value tpl__tojson(tpl_render *r, tpl_value v, const tpl_args *a)
{
    json_opts o = {.item_sep = ", ", .key_sep = ": "};
    tpl_value indent = tpl__arg(a, 0, "indent", TPL_NONE);
    char *spaces = NULL;
    if (indent.kind == TV_INT) {
        if (indent.u.i < 0 || indent.u.i > 64)
            tpl__fail(r, -EINVAL, "tojson: indent %lld out of range", (long long)indent.u.i);
        spaces = tpl__ralloc(r, (size_t)indent.u.i + 1);
        memset(spaces, ' ', (size_t)indent.u.i);
        o.indent = spaces;
        o.indent_n = (size_t)indent.u.i;
    } else if (indent.kind == TV_STR) {
        o.indent = indent.u.str.s;
        o.indent_n = indent.u.str.n;
    } else if (indent.kind != TV_NONE) {
        tpl__fail(r, -EINVAL, "tojson: indent must be an integer or a string");
    }
    if (o.indent) o.item_sep = ",";
    for (size_t k = 0; k < a->n_kw; k++) {
        const char *name = a->kw_names[k];
        tpl_value x = a->kw_vals[k];
        if (!strcmp(name, "ensure_ascii"))
            o.ensure_ascii = tpl__truthy(x);
        else if (!strcmp(name, "sort_keys"))
            o.sort_keys = tpl__truthy(x);
        else if (!strcmp(name, "separators") && x.kind == TV_LIST && x.u.list->n == 2 &&
                 x.u.list->items[0].kind == TV_STR && x.u.list->items[1].kind == TV_STR) {
            o.item_sep =
                tpl__to_str(r, tpl__strv(r, x.u.list->items[0].u.str.s, x.u.list->items[0].u.str.n))
                    .u.str.s;
            o.key_sep =
                tpl__strv(r, x.u.list->items[1].u.str.s, x.u.list->items[1].u.str.n).u.str.s;
        } else if (strcmp(name, "indent") != 0) {
            tpl__fail(r, -EINVAL, "tojson: unsupported argument '%s'", name);
        }
    }
    tpl_sbuf b = {0};
    json_value(r, &b, v, &o, 0);
    return tpl__sbuf_value(r, &b);
}
