/*
 * Template evaluator: runs the syntax tree against a context and writes the text.
 *
 * Scoping is jinja2's as observed, not Python's: each for-loop iteration runs in a fresh scope
 * (a `set` inside a loop is gone at the next iteration and after the loop, which is why
 * templates use namespace()), `if` makes no scope, a macro body sees its arguments over the
 * template's top level at call time.  Names resolve through the scopes, then the context's
 * members, then the built-in globals.
 *
 * Values are plain structs; lists, dicts and strings live in the render's arena.  Any error
 * — raise_exception, a type error, an undefined value used as an object — longjmps to
 * chat_template_render(), which frees the arena: nothing here cleans up after itself.
 */
#include "template/template_internal.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TPL_MAX_DEPTH 200

struct tpl_scope {
    tpl_scope *parent;
    tpl_dict *vars;
};

typedef enum flow { FLOW_NORMAL, FLOW_BREAK, FLOW_CONTINUE } flow;

/* ---- errors and memory ------------------------------------------------------------------- */

_Noreturn void tpl__fail(tpl_render *r, int rc, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    if (rc == -EINVAL && r->line > 0 && fmt[0] != 0) {
        int k = snprintf(r->err, r->err_size, "line %d: ", r->line);
        if (k >= 0 && (size_t)k < r->err_size)
            vsnprintf(r->err + k, r->err_size - (size_t)k, fmt, ap);
    } else {
        vsnprintf(r->err, r->err_size, fmt, ap);
    }
    va_end(ap);
    r->rc = rc;
    longjmp(r->fail, 1);
}

void *tpl__ralloc(tpl_render *r, size_t size)
{
    void *p = arena_alloc(&r->arena, size);
    if (!p) tpl__fail(r, -ENOMEM, "out of memory");
    return p;
}

void tpl__put(tpl_render *r, tpl_sbuf *b, const char *s, size_t n)
{
    if (n == 0) return;
    if (b->cap - b->n < n) {
        size_t cap = b->cap ? b->cap : 64;
        while (cap - b->n < n)
            cap *= 2;
        char *p = tpl__ralloc(r, cap);
        if (b->n) memcpy(p, b->p, b->n);
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
}

tpl_value tpl__sbuf_value(tpl_render *r, const tpl_sbuf *b)
{
    (void)r;
    return (tpl_value){.kind = TV_STR, .u.str = {b->p ? b->p : "", b->n}};
}

tpl_value tpl__strv(tpl_render *r, const char *s, size_t n)
{
    char *p = tpl__ralloc(r, n + 1);
    if (n) memcpy(p, s, n);
    return (tpl_value){.kind = TV_STR, .u.str = {p, n}};
}

tpl_list *tpl__list_new(tpl_render *r, size_t cap)
{
    tpl_list *l = tpl__ralloc(r, sizeof *l);
    if (cap) {
        l->items = tpl__ralloc(r, cap * sizeof *l->items);
        l->cap = cap;
    }
    return l;
}

void tpl__list_push(tpl_render *r, tpl_list *l, tpl_value v)
{
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 8;
        tpl_value *items = tpl__ralloc(r, cap * sizeof *items);
        if (l->n) memcpy(items, l->items, l->n * sizeof *items);
        l->items = items;
        l->cap = cap;
    }
    l->items[l->n++] = v;
}

tpl_dict *tpl__dict_new(tpl_render *r, size_t cap)
{
    tpl_dict *d = tpl__ralloc(r, sizeof *d);
    if (cap) {
        d->keys = tpl__ralloc(r, cap * sizeof *d->keys);
        d->vals = tpl__ralloc(r, cap * sizeof *d->vals);
        d->cap = cap;
    }
    return d;
}

static ssize_t dict_find(const tpl_dict *d, tpl_value key)
{
    for (size_t i = 0; i < d->n; i++)
        if (tpl__equal(d->keys[i], key)) return (ssize_t)i;
    return -1;
}

void tpl__dict_set(tpl_render *r, tpl_dict *d, tpl_value key, tpl_value v)
{
    ssize_t i = dict_find(d, key);
    if (i >= 0) {
        d->vals[i] = v;
        return;
    }
    if (d->n == d->cap) {
        size_t cap = d->cap ? d->cap * 2 : 8;
        tpl_value *keys = tpl__ralloc(r, cap * sizeof *keys),
                  *vals = tpl__ralloc(r, cap * sizeof *vals);
        if (d->n) {
            memcpy(keys, d->keys, d->n * sizeof *keys);
            memcpy(vals, d->vals, d->n * sizeof *vals);
        }
        d->keys = keys;
        d->vals = vals;
        d->cap = cap;
    }
    d->keys[d->n] = key;
    d->vals[d->n++] = v;
}

bool tpl__dict_get(const tpl_dict *d, tpl_value key, tpl_value *out)
{
    ssize_t i = dict_find(d, key);
    if (i < 0) return false;
    *out = d->vals[i];
    return true;
}

bool tpl__dict_get_str(const tpl_dict *d, const char *key, tpl_value *out)
{
    tpl_value k = {.kind = TV_STR, .u.str = {key, strlen(key)}};
    return tpl__dict_get(d, k, out);
}

/* ---- context ------------------------------------------------------------------------------ */

static tpl_value from_json(tpl_render *r, const cJSON *j, int depth)
{
    if (depth > 512) tpl__fail(r, -ELOOP, "context nested more than 512 levels deep");
    if (cJSON_IsString(j)) return tpl__strv(r, j->valuestring, strlen(j->valuestring));
    if (cJSON_IsTrue(j)) return (tpl_value){.kind = TV_BOOL, .u.b = true};
    if (cJSON_IsFalse(j)) return (tpl_value){.kind = TV_BOOL, .u.b = false};
    if (cJSON_IsNumber(j)) {
        /* cJSON keeps only a double: an integral value is taken for a JSON integer. */
        double v = j->valuedouble;
        if (v == floor(v) && fabs(v) < 9007199254740992.0)
            return (tpl_value){.kind = TV_INT, .u.i = (int64_t)v};
        return (tpl_value){.kind = TV_FLOAT, .u.f = v};
    }
    if (cJSON_IsArray(j)) {
        tpl_list *l = tpl__list_new(r, 0);
        for (const cJSON *c = j->child; c; c = c->next)
            tpl__list_push(r, l, from_json(r, c, depth + 1));
        return (tpl_value){.kind = TV_LIST, .u.list = l};
    }
    if (cJSON_IsObject(j)) {
        tpl_dict *d = tpl__dict_new(r, 0);
        for (const cJSON *c = j->child; c; c = c->next)
            tpl__dict_set(r, d, tpl__strv(r, c->string, strlen(c->string)),
                          from_json(r, c, depth + 1));
        return (tpl_value){.kind = TV_DICT, .u.dict = d};
    }
    return (tpl_value){.kind = TV_NONE};
}

static tpl_value builtin_func(tpl_render *r, tpl_fkind kind)
{
    tpl_func *f = tpl__ralloc(r, sizeof *f);
    f->kind = kind;
    return (tpl_value){.kind = TV_FUNC, .u.func = f};
}

/* ---- names -------------------------------------------------------------------------------- */

static tpl_value undefined(const char *name)
{
    return (tpl_value){.kind = TV_UNDEF, .u.str = {name, name ? strlen(name) : 0}};
}

static tpl_value lookup(tpl_scope *s, const char *name)
{
    tpl_value v;
    for (; s; s = s->parent)
        if (tpl__dict_get_str(s->vars, name, &v)) return v;
    return undefined(name);
}

static void assign(tpl_render *r, tpl_scope *s, const char *name, tpl_value v)
{
    tpl__dict_set(r, s->vars, tpl__strv(r, name, strlen(name)), v);
}

static tpl_scope *scope_new(tpl_render *r, tpl_scope *parent)
{
    tpl_scope *s = tpl__ralloc(r, sizeof *s);
    s->parent = parent;
    s->vars = tpl__dict_new(r, 4);
    return s;
}

/* ---- expressions -------------------------------------------------------------------------- */

static tpl_value eval(tpl_render *r, tpl_scope *s, const tpl_expr *e);

static _Noreturn void fail_undefined(tpl_render *r, tpl_value v)
{
    if (v.u.str.s) tpl__fail(r, -EINVAL, "'%.*s' is undefined", (int)v.u.str.n, v.u.str.s);
    tpl__fail(r, -EINVAL, "undefined value used");
}

static bool is_number(tpl_value v)
{
    return v.kind == TV_INT || v.kind == TV_FLOAT || v.kind == TV_BOOL;
}

static double num(tpl_value v)
{
    return v.kind == TV_FLOAT ? v.u.f : v.kind == TV_INT ? (double)v.u.i : (double)v.u.b;
}

static int64_t inum(tpl_value v) /* ints and bools; 0 for anything else */
{
    return v.kind == TV_INT ? v.u.i : v.kind == TV_BOOL ? (int64_t)v.u.b : 0;
}

static _Noreturn void type_error(tpl_render *r, const char *op, tpl_value a, tpl_value b)
{
    if (a.kind == TV_UNDEF) fail_undefined(r, a);
    if (b.kind == TV_UNDEF) fail_undefined(r, b);
    tpl__fail(r, -EINVAL, "unsupported operand types for %s: '%s' and '%s'", op, tpl__type_name(a),
              tpl__type_name(b));
}

static int compare(tpl_render *r, const char *op, tpl_value a, tpl_value b)
{
    if (is_number(a) && is_number(b)) {
        if (a.kind != TV_FLOAT && b.kind != TV_FLOAT)
            return inum(a) < inum(b) ? -1 : inum(a) > inum(b);
        double x = num(a), y = num(b);
        return x < y ? -1 : x > y;
    }
    if (a.kind == TV_STR && b.kind == TV_STR) {
        /* UTF-8 byte order is code point order, which is Python's string order. */
        size_t n = a.u.str.n < b.u.str.n ? a.u.str.n : b.u.str.n;
        int c = n ? memcmp(a.u.str.s, b.u.str.s, n) : 0;
        if (c) return c < 0 ? -1 : 1;
        return a.u.str.n < b.u.str.n ? -1 : a.u.str.n > b.u.str.n;
    }
    if (a.kind == TV_LIST && b.kind == TV_LIST && a.u.list->is_tuple == b.u.list->is_tuple &&
        !a.u.list->is_generator && !b.u.list->is_generator) {
        for (size_t i = 0; i < a.u.list->n && i < b.u.list->n; i++)
            if (!tpl__equal(a.u.list->items[i], b.u.list->items[i]))
                return compare(r, op, a.u.list->items[i], b.u.list->items[i]);
        return a.u.list->n < b.u.list->n ? -1 : a.u.list->n > b.u.list->n;
    }
    tpl__fail(r, -EINVAL, "'%s' not supported between instances of '%s' and '%s'", op,
              tpl__type_name(a), tpl__type_name(b));
}

bool tpl__contains(tpl_render *r, tpl_value item, tpl_value container)
{
    switch (container.kind) {
    case TV_STR:
        if (item.kind != TV_STR)
            tpl__fail(r, -EINVAL, "'in <string>' requires string as left operand, not %s",
                      tpl__type_name(item));
        if (item.u.str.n == 0) return true;
        return memmem(container.u.str.s, container.u.str.n, item.u.str.s, item.u.str.n) != NULL;
    case TV_LIST: {
        tpl_list *l = container.u.list;
        if (l->is_generator) tpl__force(r, l);
        for (size_t i = l->is_generator ? l->consumed : 0; i < l->n; i++)
            if (tpl__equal(l->items[i], item)) {
                /* `in` consumes a generator up to the hit */
                if (l->is_generator) l->consumed = i + 1;
                return true;
            }
        if (l->is_generator) l->consumed = l->n;
        return false;
    }
    case TV_DICT: {
        tpl_value v;
        if (tpl__unhashable(item))
            tpl__fail(r, -EINVAL, "unhashable type: '%s'", tpl__type_name(item));
        return tpl__dict_get(container.u.dict, item, &v);
    }
    case TV_UNDEF:
        return false; /* jinja2's Undefined iterates as empty */
    default:
        tpl__fail(r, -EINVAL, "argument of type '%s' is not iterable", tpl__type_name(container));
    }
}

static tpl_value int_or_float(double v, bool as_float, int64_t iv)
{
    if (as_float) return (tpl_value){.kind = TV_FLOAT, .u.f = v};
    return (tpl_value){.kind = TV_INT, .u.i = iv};
}

static tpl_value arith(tpl_render *r, tpl_binop op, tpl_value a, tpl_value b)
{
    static const char *const names[] = {"+", "-", "*", "/", "//", "%", "**"};
    const char *name = names[op];
    if (op == TB_ADD) {
        if ((a.safe && b.kind != TV_STR) || (b.safe && a.kind != TV_STR)) type_error(r, name, a, b);
        if (a.kind == TV_STR && b.kind == TV_STR) {
            tpl_sbuf buf = {0};
            /* Markup + str escapes the str, and the sum is Markup (markupsafe) */
            bool safe = a.safe || b.safe;
            if (safe && !a.safe)
                tpl__html_escape(r, &buf, a);
            else
                tpl__put(r, &buf, a.u.str.s, a.u.str.n);
            if (safe && !b.safe)
                tpl__html_escape(r, &buf, b);
            else
                tpl__put(r, &buf, b.u.str.s, b.u.str.n);
            tpl_value v = tpl__sbuf_value(r, &buf);
            v.safe = safe;
            return v;
        }
        if (a.kind == TV_LIST && b.kind == TV_LIST && a.u.list->is_tuple == b.u.list->is_tuple &&
            !a.u.list->is_generator && !b.u.list->is_generator && !a.u.list->view &&
            !b.u.list->view) {
            tpl_list *l = tpl__list_new(r, a.u.list->n + b.u.list->n);
            l->is_tuple = a.u.list->is_tuple;
            for (size_t i = 0; i < a.u.list->n; i++)
                tpl__list_push(r, l, a.u.list->items[i]);
            for (size_t i = 0; i < b.u.list->n; i++)
                tpl__list_push(r, l, b.u.list->items[i]);
            return (tpl_value){.kind = TV_LIST, .u.list = l};
        }
    }
    if (op == TB_MUL && ((a.kind == TV_STR && (b.kind == TV_INT || b.kind == TV_BOOL)) ||
                         (b.kind == TV_STR && (a.kind == TV_INT || a.kind == TV_BOOL)))) {
        tpl_value s = a.kind == TV_STR ? a : b;
        int64_t k = inum(a.kind == TV_STR ? b : a);
        if (k > 0 && s.u.str.n * (uint64_t)k > (64u << 20))
            tpl__fail(r, -EINVAL, "string repetition too large");
        tpl_sbuf buf = {0};
        for (int64_t i = 0; i < k; i++)
            tpl__put(r, &buf, s.u.str.s, s.u.str.n);
        return tpl__sbuf_value(r, &buf);
    }
    if (op == TB_MUL && ((a.kind == TV_LIST && (b.kind == TV_INT || b.kind == TV_BOOL)) ||
                         (b.kind == TV_LIST && (a.kind == TV_INT || a.kind == TV_BOOL)))) {
        tpl_list *src = a.kind == TV_LIST ? a.u.list : b.u.list;
        int64_t k = inum(a.kind == TV_LIST ? b : a);
        if (src->is_generator || src->view) type_error(r, name, a, b);
        if (k > 0 && src->n * (uint64_t)k > (1u << 20))
            tpl__fail(r, -EINVAL, "list repetition too large");
        tpl_list *l = tpl__list_new(r, 0);
        l->is_tuple = src->is_tuple;
        for (int64_t i = 0; i < k; i++)
            for (size_t j = 0; j < src->n; j++)
                tpl__list_push(r, l, src->items[j]);
        return (tpl_value){.kind = TV_LIST, .u.list = l};
    }
    if (op == TB_MOD && a.kind == TV_STR) return tpl__percent_format(r, a, b);
    if (!is_number(a) || !is_number(b)) type_error(r, name, a, b);
    bool fl = a.kind == TV_FLOAT || b.kind == TV_FLOAT;
    double x = num(a), y = num(b);
    int64_t i = inum(a), j = inum(b);
    switch (op) {
    case TB_ADD:
        return int_or_float(x + y, fl, fl ? 0 : (int64_t)((uint64_t)i + (uint64_t)j));
    case TB_SUB:
        return int_or_float(x - y, fl, fl ? 0 : (int64_t)((uint64_t)i - (uint64_t)j));
    case TB_MUL:
        return int_or_float(x * y, fl, fl ? 0 : (int64_t)((uint64_t)i * (uint64_t)j));
    case TB_DIV:
        if (y == 0) tpl__fail(r, -EINVAL, "division by zero");
        return (tpl_value){.kind = TV_FLOAT, .u.f = x / y};
    case TB_FLOORDIV:
    case TB_MOD:
        if (y == 0)
            tpl__fail(r, -EINVAL, "%s by zero", op == TB_MOD ? "modulo" : "integer division");
        if (!fl) {
            if (j == -1) /* INT64_MIN / -1 overflows in C; Python would grow the int */
                return (tpl_value){.kind = TV_INT,
                                   .u.i = op == TB_MOD ? 0 : (int64_t)(0 - (uint64_t)i)};
            int64_t q = i / j, m = i % j;
            if (m != 0 && ((m < 0) != (j < 0))) {
                q--;
                m += j;
            }
            return (tpl_value){.kind = TV_INT, .u.i = op == TB_MOD ? m : q};
        } else {
            /* CPython's float_divmod, signs of zero included */
            double m = fmod(x, y), div = (x - m) / y, q;
            if (m != 0) {
                if ((y < 0) != (m < 0)) {
                    m += y;
                    div -= 1.0;
                }
            } else {
                m = copysign(0.0, y);
            }
            if (div != 0) {
                q = floor(div);
                if (div - q > 0.5) q += 1.0;
            } else {
                q = copysign(0.0, x / y);
            }
            return (tpl_value){.kind = TV_FLOAT, .u.f = op == TB_MOD ? m : q};
        }
    case TB_POW:
        if (!fl && j >= 0) {
            int64_t acc = 1;
            for (int64_t k = 0; k < j; k++)
                acc = (int64_t)((uint64_t)acc * (uint64_t)i);
            return (tpl_value){.kind = TV_INT, .u.i = acc};
        }
        return (tpl_value){.kind = TV_FLOAT, .u.f = pow(x, y)};
    default:
        break;
    }
    type_error(r, name, a, b);
}

static tpl_value apply_bin(tpl_render *r, tpl_binop op, tpl_value a, tpl_value b);

static tpl_value bin(tpl_render *r, tpl_scope *s, const tpl_expr *e)
{
    tpl_value a = eval(r, s, e->a), b = eval(r, s, e->b);
    return apply_bin(r, e->op, a, b);
}

static tpl_value compare_chain(tpl_render *r, tpl_scope *s, const tpl_expr *e)
{
    tpl_value left = eval(r, s, e->args[0]), result = {.kind = TV_BOOL, .u.b = true};
    for (size_t i = 1; i < e->n_args; i++) {
        tpl_value right = eval(r, s, e->args[i]);
        result = apply_bin(r, e->ops[i - 1], left, right);
        if (!tpl__truthy(result)) return result; /* later operands are not evaluated */
        left = right;
    }
    return result;
}

static tpl_value apply_bin(tpl_render *r, tpl_binop op, tpl_value a, tpl_value b)
{
    switch (op) {
    case TB_CONCAT: {
        tpl_sbuf buf = {0};
        tpl__str(r, &buf, a);
        tpl__str(r, &buf, b);
        return tpl__sbuf_value(r, &buf);
    }
    case TB_EQ:
        return (tpl_value){.kind = TV_BOOL, .u.b = tpl__equal(a, b)};
    case TB_NE:
        return (tpl_value){.kind = TV_BOOL, .u.b = !tpl__equal(a, b)};
    case TB_LT:
        return (tpl_value){.kind = TV_BOOL, .u.b = compare(r, "<", a, b) < 0};
    case TB_LE:
        return (tpl_value){.kind = TV_BOOL, .u.b = compare(r, "<=", a, b) <= 0};
    case TB_GT:
        return (tpl_value){.kind = TV_BOOL, .u.b = compare(r, ">", a, b) > 0};
    case TB_GE:
        return (tpl_value){.kind = TV_BOOL, .u.b = compare(r, ">=", a, b) >= 0};
    case TB_IN:
        return (tpl_value){.kind = TV_BOOL, .u.b = tpl__contains(r, a, b)};
    case TB_NOTIN:
        return (tpl_value){.kind = TV_BOOL, .u.b = !tpl__contains(r, a, b)};
    default:
        return arith(r, op, a, b);
    }
}

/* Python's slice semantics on a sequence of n elements. */
static void slice_indices(tpl_render *r, tpl_value start, tpl_value stop, tpl_value step, int64_t n,
                          int64_t *i0, int64_t *i1, int64_t *di)
{
    int64_t st = 1;
    if (step.kind != TV_NONE && step.kind != TV_UNDEF) {
        if (step.kind != TV_INT && step.kind != TV_BOOL)
            tpl__fail(r, -EINVAL, "slice indices must be integers or None");
        st = inum(step);
        if (st == 0) tpl__fail(r, -EINVAL, "slice step cannot be zero");
    }
    int64_t lo = st < 0 ? -1 : 0, hi = st < 0 ? n - 1 : n;
    int64_t a = st < 0 ? hi : lo, b = st < 0 ? lo : hi;
    tpl_value bounds[2] = {start, stop};
    int64_t *outs[2] = {&a, &b};
    for (int k = 0; k < 2; k++) {
        tpl_value v = bounds[k];
        if (v.kind == TV_NONE || v.kind == TV_UNDEF) continue;
        if (v.kind != TV_INT && v.kind != TV_BOOL)
            tpl__fail(r, -EINVAL, "slice indices must be integers or None");
        int64_t x = inum(v);
        if (x < 0) {
            x += n;
            if (x < lo) x = lo;
        } else if (x > hi) {
            x = hi;
        }
        *outs[k] = x;
    }
    *i0 = a;
    *i1 = b;
    *di = st;
}

static tpl_value slice(tpl_render *r, tpl_value obj, tpl_value start, tpl_value stop,
                       tpl_value step)
{
    int64_t a, b, st;
    if (obj.kind == TV_LIST && !obj.u.list->is_generator) {
        slice_indices(r, start, stop, step, (int64_t)obj.u.list->n, &a, &b, &st);
        tpl_list *l = tpl__list_new(r, 0);
        for (int64_t i = a; st > 0 ? i < b : i > b; i += st)
            tpl__list_push(r, l, obj.u.list->items[i]);
        return (tpl_value){.kind = TV_LIST, .u.list = l};
    }
    if (obj.kind == TV_STR) {
        /* Code points, not bytes: offsets of each character first. */
        size_t n = utf8_count(obj.u.str.s, obj.u.str.n);
        size_t *off = tpl__ralloc(r, (n + 1) * sizeof *off);
        size_t k = 0;
        for (size_t i = 0; i < obj.u.str.n; i++)
            if (!utf8_is_cont(obj.u.str.s[i])) off[k++] = i;
        off[n] = obj.u.str.n;
        slice_indices(r, start, stop, step, (int64_t)n, &a, &b, &st);
        tpl_sbuf buf = {0};
        for (int64_t i = a; st > 0 ? i < b : i > b; i += st)
            tpl__put(r, &buf, obj.u.str.s + off[i], off[i + 1] - off[i]);
        return tpl__sbuf_value(r, &buf);
    }
    if (obj.kind == TV_UNDEF) fail_undefined(r, obj);
    /* jinja2 compiles a slice to a plain Python subscript: the TypeError reaches the caller */
    tpl__fail(r, -EINVAL, "'%s' object is not subscriptable", tpl__type_name(obj));
}

static void eval_args(tpl_render *r, tpl_scope *s, const tpl_expr *e, tpl_args *out)
{
    out->n = e->n_args;
    out->pos = e->n_args ? tpl__ralloc(r, e->n_args * sizeof *out->pos) : NULL;
    for (size_t i = 0; i < e->n_args; i++)
        out->pos[i] = eval(r, s, e->args[i]);
    out->n_kw = e->n_kw;
    out->kw_names = e->kw_names;
    out->kw_vals = e->n_kw ? tpl__ralloc(r, e->n_kw * sizeof *out->kw_vals) : NULL;
    for (size_t i = 0; i < e->n_kw; i++)
        out->kw_vals[i] = eval(r, s, e->kw_vals[i]);
}

static tpl_value eval(tpl_render *r, tpl_scope *s, const tpl_expr *e)
{
    int saved_line = r->line;
    r->line = e->line;
    /* Left-deep chains (a + b + c ...) are built without recursion by the parser but
     * evaluated recursively: a hostile template must not exhaust the stack. */
    if (++r->expr_depth > 2000) tpl__fail(r, -ELOOP, "expression nested too deep");
    tpl_value v;
    switch (e->kind) {
    case TX_CONST:
        v = e->cval;
        break;
    case TX_NAME:
        v = lookup(s, e->name);
        break;
    case TX_ATTR:
        v = tpl__getattr(r, eval(r, s, e->a), e->name, strlen(e->name));
        break;
    case TX_ITEM: {
        tpl_value obj = eval(r, s, e->a);
        v = tpl__getitem(r, obj, eval(r, s, e->b));
        break;
    }
    case TX_SLICE: {
        tpl_value obj = eval(r, s, e->a);
        tpl_value none = {.kind = TV_NONE};
        v = slice(r, obj, e->b ? eval(r, s, e->b) : none, e->c ? eval(r, s, e->c) : none,
                  e->d ? eval(r, s, e->d) : none);
        break;
    }
    case TX_CALL: {
        tpl_value fn = eval(r, s, e->a);
        tpl_args args;
        eval_args(r, s, e, &args);
        v = tpl__call(r, fn, &args);
        break;
    }
    case TX_FILTER: {
        tpl_value x = eval(r, s, e->a);
        tpl_args args;
        eval_args(r, s, e, &args);
        v = tpl__filter(r, e->name, x, &args);
        break;
    }
    case TX_TEST: {
        tpl_value x = eval(r, s, e->a);
        tpl_args args;
        eval_args(r, s, e, &args);
        v = (tpl_value){.kind = TV_BOOL, .u.b = tpl__test(r, e->name, x, &args) != e->negate};
        break;
    }
    case TX_NOT:
        v = (tpl_value){.kind = TV_BOOL, .u.b = !tpl__truthy(eval(r, s, e->a))};
        break;
    case TX_NEG:
    case TX_POS: {
        tpl_value x = eval(r, s, e->a);
        if (x.kind == TV_UNDEF) fail_undefined(r, x);
        if (!is_number(x))
            tpl__fail(r, -EINVAL, "bad operand type for unary %c: '%s'",
                      e->kind == TX_NEG ? '-' : '+', tpl__type_name(x));
        if (x.kind == TV_FLOAT)
            v = (tpl_value){.kind = TV_FLOAT, .u.f = e->kind == TX_NEG ? -x.u.f : x.u.f};
        else
            v = (tpl_value){.kind = TV_INT, .u.i = e->kind == TX_NEG ? -inum(x) : inum(x)};
        break;
    }
    case TX_BIN:
        v = bin(r, s, e);
        break;
    case TX_COMPARE:
        v = compare_chain(r, s, e);
        break;
    case TX_AND: { /* Python's `and`/`or` return an operand, not a bool */
        tpl_value a = eval(r, s, e->a);
        v = tpl__truthy(a) ? eval(r, s, e->b) : a;
        break;
    }
    case TX_OR: {
        tpl_value a = eval(r, s, e->a);
        v = tpl__truthy(a) ? a : eval(r, s, e->b);
        break;
    }
    case TX_COND:
        if (tpl__truthy(eval(r, s, e->a)))
            v = eval(r, s, e->b);
        else
            v = e->c ? eval(r, s, e->c) : undefined(NULL);
        break;
    case TX_LIST: {
        tpl_list *l = tpl__list_new(r, e->n_args);
        l->is_tuple = e->negate;
        for (size_t i = 0; i < e->n_args; i++)
            tpl__list_push(r, l, eval(r, s, e->args[i]));
        v = (tpl_value){.kind = TV_LIST, .u.list = l};
        break;
    }
    case TX_DICT: {
        tpl_dict *d = tpl__dict_new(r, e->n_args);
        for (size_t i = 0; i < e->n_args; i++) {
            tpl_value key = eval(r, s, e->args[i]);
            if (tpl__unhashable(key))
                tpl__fail(r, -EINVAL, "unhashable type: '%s'", tpl__type_name(key));
            tpl__dict_set(r, d, key, eval(r, s, e->kw_vals[i]));
        }
        v = (tpl_value){.kind = TV_DICT, .u.dict = d};
        break;
    }
    default:
        tpl__fail(r, -EINVAL, "internal error: expression kind %d", (int)e->kind);
    }
    r->line = saved_line;
    r->expr_depth--;
    return v;
}

/* ---- statements --------------------------------------------------------------------------- */

static flow exec_body(tpl_render *r, tpl_scope *s, const tpl_body *body, tpl_sbuf *out);

static tpl_dict *loop_object(tpl_render *r, const tpl_list *items, size_t i)
{
    tpl_dict *d = tpl__dict_new(r, 10);
    int64_t n = (int64_t)items->n, k = (int64_t)i;
    d->is_loop = true;
#define SETI(name, val)                                                                            \
    tpl__dict_set(r, d, (tpl_value){.kind = TV_STR, .u.str = {name, sizeof name - 1}}, val)
    SETI("index", ((tpl_value){.kind = TV_INT, .u.i = k + 1}));
    SETI("index0", ((tpl_value){.kind = TV_INT, .u.i = k}));
    SETI("revindex", ((tpl_value){.kind = TV_INT, .u.i = n - k}));
    SETI("revindex0", ((tpl_value){.kind = TV_INT, .u.i = n - k - 1}));
    SETI("first", ((tpl_value){.kind = TV_BOOL, .u.b = k == 0}));
    SETI("last", ((tpl_value){.kind = TV_BOOL, .u.b = k == n - 1}));
    SETI("length", ((tpl_value){.kind = TV_INT, .u.i = n}));
    SETI("depth", ((tpl_value){.kind = TV_INT, .u.i = 1}));
    SETI("depth0", ((tpl_value){.kind = TV_INT, .u.i = 0}));
    if (k > 0) SETI("previtem", items->items[k - 1]);
    if (k + 1 < n) SETI("nextitem", items->items[k + 1]);
#undef SETI
    return d;
}

static void bind_targets(tpl_render *r, tpl_scope *s, const char *const *names, size_t n_names,
                         tpl_value v)
{
    if (n_names == 1) {
        assign(r, s, names[0], v);
        return;
    }
    tpl_list *parts = tpl__iterate(r, v);
    if (parts->n != n_names)
        tpl__fail(r, -EINVAL, "%s values to unpack (expected %zu, got %zu)",
                  parts->n > n_names ? "too many" : "not enough", n_names, parts->n);
    for (size_t i = 0; i < n_names; i++)
        assign(r, s, names[i], parts->items[i]);
}

/* Returns the flow of the else block: a break or continue there belongs to the enclosing
 * loop, as in the Python jinja2 compiles to. */
static flow exec_for(tpl_render *r, tpl_scope *s, const tpl_stmt *st, tpl_sbuf *out)
{
    tpl_list *all = tpl__iterate(r, eval(r, s, st->expr));
    tpl_list *items = all;
    if (st->filter) {
        /* `for x in xs if cond`: filtered first, so loop.length and loop.last see the result. */
        items = tpl__list_new(r, all->n);
        for (size_t i = 0; i < all->n; i++) {
            tpl_scope *fs = scope_new(r, s);
            assign(r, fs, "loop", undefined("loop")); /* the filter sees no loop object */
            bind_targets(r, fs, st->names, st->n_names, all->items[i]);
            if (tpl__truthy(eval(r, fs, st->filter))) tpl__list_push(r, items, all->items[i]);
        }
    }
    if (++r->depth > TPL_MAX_DEPTH) tpl__fail(r, -ELOOP, "loops and macro calls nested too deep");
    /* jinja2 clears its "no iteration" flag at the end of an iteration's body, so the else
     * block also runs when every iteration ended in break or continue. */
    bool completed = false;
    for (size_t i = 0; i < items->n; i++) {
        tpl_scope *is = scope_new(r, s);
        assign(r, is, "loop", (tpl_value){.kind = TV_DICT, .u.dict = loop_object(r, items, i)});
        bind_targets(r, is, st->names, st->n_names, items->items[i]);
        flow f = exec_body(r, is, &st->body, out);
        if (f == FLOW_BREAK) break;
        completed |= f == FLOW_NORMAL;
    }
    r->depth--;
    /* its sets stay inside */
    if (!completed) return exec_body(r, scope_new(r, s), &st->else_body, out);
    return FLOW_NORMAL;
}

static flow exec_stmt(tpl_render *r, tpl_scope *s, const tpl_stmt *st, tpl_sbuf *out)
{
    r->line = st->line;
    switch (st->kind) {
    case TS_TEXT:
        tpl__put(r, out, st->text, st->text_len);
        break;
    case TS_PRINT:
        tpl__str(r, out, eval(r, s, st->expr));
        break;
    case TS_IF:
        if (tpl__truthy(eval(r, s, st->expr))) return exec_body(r, s, &st->body, out);
        return exec_body(r, s, &st->else_body, out);
    case TS_FOR:
        return exec_for(r, s, st, out);
    case TS_SET:
        bind_targets(r, s, st->names, st->n_names, eval(r, s, st->expr));
        break;
    case TS_SET_ATTR: {
        tpl_value obj = lookup(s, st->names[0]);
        if (obj.kind != TV_DICT || !obj.u.dict->is_namespace)
            tpl__fail(r, -EINVAL, "cannot assign attribute on non-namespace object");
        tpl_value v = eval(r, s, st->expr);
        tpl__dict_set(r, obj.u.dict, tpl__strv(r, st->names[1], strlen(st->names[1])), v);
        break;
    }
    case TS_SET_BLOCK: {
        tpl_sbuf buf = {0};
        exec_body(r, s, &st->body, &buf);
        assign(r, s, st->names[0], tpl__sbuf_value(r, &buf));
        break;
    }
    case TS_MACRO: {
        tpl_func *f = tpl__ralloc(r, sizeof *f);
        f->kind = TF_MACRO;
        f->macro = st;
        f->closure = s;
        assign(r, s, st->text, (tpl_value){.kind = TV_FUNC, .u.func = f});
        break;
    }
    case TS_BREAK:
        return FLOW_BREAK;
    case TS_CONTINUE:
        return FLOW_CONTINUE;
    case TS_BLOCK:
        return exec_body(r, s, &st->body, out);
    }
    return FLOW_NORMAL;
}

static flow exec_body(tpl_render *r, tpl_scope *s, const tpl_body *body, tpl_sbuf *out)
{
    for (size_t i = 0; i < body->n; i++) {
        flow f = exec_stmt(r, s, body->items[i], out);
        if (f != FLOW_NORMAL) return f;
    }
    return FLOW_NORMAL;
}

tpl_value tpl__call_macro(tpl_render *r, const tpl_func *fn, const tpl_args *args)
{
    const tpl_stmt *m = fn->macro;
    if (args->n > m->n_names)
        tpl__fail(r, -EINVAL, "macro '%s' takes not more than %zu argument(s)", m->text,
                  m->n_names);
    if (++r->depth > TPL_MAX_DEPTH) tpl__fail(r, -ELOOP, "loops and macro calls nested too deep");
    tpl_scope *ms = scope_new(r, fn->closure ? fn->closure : r->root);
    for (size_t i = 0; i < m->n_names; i++) {
        tpl_value v = undefined(m->names[i]);
        if (i < args->n)
            v = args->pos[i];
        else if (m->defaults[i])
            v = eval(r, ms, m->defaults[i]);
        for (size_t k = 0; k < args->n_kw; k++)
            if (!strcmp(args->kw_names[k], m->names[i])) v = args->kw_vals[k];
        assign(r, ms, m->names[i], v);
    }
    for (size_t k = 0; k < args->n_kw; k++) {
        bool known = false;
        for (size_t i = 0; i < m->n_names; i++)
            known |= !strcmp(args->kw_names[k], m->names[i]);
        if (!known)
            tpl__fail(r, -EINVAL, "macro '%s' has no argument named '%s'", m->text,
                      args->kw_names[k]);
    }
    tpl_sbuf buf = {0};
    int line = r->line;
    exec_body(r, ms, &m->body, &buf);
    r->line = line;
    r->depth--;
    return tpl__sbuf_value(r, &buf);
}

/* ---- entry -------------------------------------------------------------------------------- */

int chat_template_render(const chat_template *t, const cJSON *context,
                         const chat_template_render_opts *opts, char **text, size_t *len, char *err,
                         size_t err_size)
{
    /* volatile: read after longjmp */
    tpl_render *volatile r = calloc(1, sizeof *r);
    *text = NULL;
    if (len) *len = 0;
    if (!r) {
        snprintf(err, err_size, "out of memory");
        return -ENOMEM;
    }
    arena_init(&r->arena, TPL_ARENA_BLOCK);
    r->err = err;
    r->err_size = err_size;
    r->opts = opts;
    if (setjmp(r->fail)) {
        int rc = r->rc;
        arena_release(&r->arena);
        free(r);
        return rc;
    }
    if (context && !cJSON_IsObject(context))
        tpl__fail(r, -EINVAL, "the context must be a JSON object");
    tpl_scope *globals = scope_new(r, NULL);
    static const struct {
        const char *name;
        tpl_fkind kind;
    } builtins[] = {{"raise_exception", TF_RAISE},
                    {"strftime_now", TF_STRFTIME},
                    {"namespace", TF_NAMESPACE},
                    {"range", TF_RANGE},
                    {"dict", TF_DICT}};
    for (size_t i = 0; i < sizeof builtins / sizeof builtins[0]; i++)
        assign(r, globals, builtins[i].name, builtin_func(r, builtins[i].kind));
    for (const cJSON *c = context ? context->child : NULL; c; c = c->next)
        assign(r, globals, c->string, from_json(r, c, 0));
    r->root = scope_new(r, globals);
    tpl_sbuf out = {0};
    exec_body(r, r->root, &t->root, &out);
    char *result = malloc(out.n + 1);
    if (!result) tpl__fail(r, -ENOMEM, "out of memory");
    if (out.n) memcpy(result, out.p, out.n);
    result[out.n] = 0;
    *text = result;
    if (len) *len = out.n;
    arena_release(&r->arena);
    free(r);
    return 0;
}
