/*
 * Template parser: tokens to a syntax tree, following jinja2's grammar (parser.py) operator by
 * operator so that precedence matches: `if/else` < or < and < not < comparisons/in < + - <
 * ~ < * / // % < ** < unary - + < filters and tests (`x | f`, `x is t`) < postfix (. [] ()).
 *
 * Everything the evaluator could not run is refused here, naming the construct and its line:
 * an unknown tag or filter or test, include/import/extends, call and filter blocks, recursive
 * loops, *args.  A server learns at model load that a template is unusable, not at the first
 * request.
 */
#include "template/template_internal.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

typedef struct parser {
    arena *arena;
    const tpl_tok *t;
    size_t n, pos;
    int loop_depth;
    int depth; /* nesting of expressions and blocks: bounded, the source may be hostile */
    char *err;
    size_t err_size;
    jmp_buf fail;
    int rc;
} parser;

static _Noreturn void pfail(parser *p, int rc, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int k =
        snprintf(p->err, p->err_size, "line %d: ", p->t[p->pos < p->n ? p->pos : p->n - 1].line);
    if (k >= 0 && (size_t)k < p->err_size) vsnprintf(p->err + k, p->err_size - (size_t)k, fmt, ap);
    va_end(ap);
    p->rc = rc;
    longjmp(p->fail, 1);
}

static void *palloc(parser *p, size_t size)
{
    void *m = arena_alloc(p->arena, size);
    if (!m) pfail(p, -ENOMEM, "out of memory");
    return m;
}

static const tpl_tok *cur(const parser *p)
{
    return &p->t[p->pos];
}

static bool tok_op(const tpl_tok *t, const char *op)
{
    return t->kind == TK_OP && t->n == strlen(op) && memcmp(t->s, op, t->n) == 0;
}

static bool tok_name(const tpl_tok *t, const char *name)
{
    return t->kind == TK_NAME && strcmp(t->s, name) == 0;
}

static bool skip_op(parser *p, const char *op)
{
    if (!tok_op(cur(p), op)) return false;
    p->pos++;
    return true;
}

static bool skip_name(parser *p, const char *name)
{
    if (!tok_name(cur(p), name)) return false;
    p->pos++;
    return true;
}

static const char *describe(const tpl_tok *t)
{
    switch (t->kind) {
    case TK_EOF:
        return "end of template";
    case TK_TEXT:
        return "text";
    case TK_VAR_BEGIN:
        return "'{{'";
    case TK_VAR_END:
        return "'}}'";
    case TK_BLOCK_BEGIN:
        return "'{%'";
    case TK_BLOCK_END:
        return "'%}'";
    case TK_NAME:
        return t->s;
    case TK_STRING:
        return "a string";
    case TK_INT:
    case TK_FLOAT:
        return "a number";
    case TK_OP:
        return t->s;
    }
    return "?";
}

static void expect_op(parser *p, const char *op)
{
    if (!skip_op(p, op)) pfail(p, -EINVAL, "expected '%s', found '%s'", op, describe(cur(p)));
}

static const char *expect_name(parser *p)
{
    if (cur(p)->kind != TK_NAME) pfail(p, -EINVAL, "expected a name, found '%s'", describe(cur(p)));
    return p->t[p->pos++].s;
}

static void expect_block_end(parser *p)
{
    if (cur(p)->kind != TK_BLOCK_END)
        pfail(p, -EINVAL, "expected '%%}', found '%s'", describe(cur(p)));
    p->pos++;
}

static tpl_expr *node(parser *p, tpl_xkind kind)
{
    tpl_expr *e = palloc(p, sizeof *e);
    e->kind = kind;
    e->line = cur(p)->line;
    return e;
}

/* A growable array of pointers in the arena (old copies are left behind: parse-time only). */
typedef struct ptrvec {
    void **v;
    size_t n, cap;
} ptrvec;

static void vpush(parser *p, ptrvec *vec, void *x)
{
    if (vec->n == vec->cap) {
        size_t cap = vec->cap ? vec->cap * 2 : 4;
        void **v = palloc(p, cap * sizeof *v);
        if (vec->n) memcpy(v, vec->v, vec->n * sizeof *v);
        vec->v = v;
        vec->cap = cap;
    }
    vec->v[vec->n++] = x;
}

#define TPL_MAX_NESTING 256

static void enter(parser *p)
{
    if (++p->depth > TPL_MAX_NESTING)
        pfail(p, -EINVAL, "nested more than %d levels deep", TPL_MAX_NESTING);
}

static tpl_expr *parse_expr(parser *p, bool with_cond);
static tpl_expr *parse_or(parser *p);
static tpl_expr *parse_unary(parser *p, bool with_filter);

/* Call arguments after '(' up to ')': positional, then name=value. */
static void parse_args(parser *p, tpl_expr *e)
{
    ptrvec args = {0}, kwn = {0}, kwv = {0};
    while (!skip_op(p, ")")) {
        if (args.n + kwn.n > 0) {
            expect_op(p, ",");
            if (skip_op(p, ")")) break;
        }
        if (tok_op(cur(p), "*") || tok_op(cur(p), "**"))
            pfail(p, -ENOTSUP, "unsupported construct: *args / **kwargs in a call");
        if (cur(p)->kind == TK_NAME && tok_op(&p->t[p->pos + 1], "=")) {
            vpush(p, &kwn, (void *)p->t[p->pos].s);
            p->pos += 2;
            vpush(p, &kwv, parse_expr(p, true));
        } else {
            if (kwn.n) pfail(p, -EINVAL, "positional argument after a keyword argument");
            vpush(p, &args, parse_expr(p, true));
        }
    }
    e->args = (tpl_expr **)args.v;
    e->n_args = args.n;
    e->kw_names = (const char **)kwn.v;
    e->kw_vals = (tpl_expr **)kwv.v;
    e->n_kw = kwn.n;
}

static tpl_expr *parse_primary(parser *p)
{
    const tpl_tok *t = cur(p);
    tpl_expr *e;
    switch (t->kind) {
    case TK_NAME:
        e = node(p, TX_CONST);
        p->pos++;
        if (!strcmp(t->s, "true") || !strcmp(t->s, "True")) {
            e->cval = (tpl_value){.kind = TV_BOOL, .u.b = true};
        } else if (!strcmp(t->s, "false") || !strcmp(t->s, "False")) {
            e->cval = (tpl_value){.kind = TV_BOOL, .u.b = false};
        } else if (!strcmp(t->s, "none") || !strcmp(t->s, "None")) {
            e->cval = (tpl_value){.kind = TV_NONE};
        } else {
            e->kind = TX_NAME;
            e->name = t->s;
        }
        return e;
    case TK_STRING: {
        /* Adjacent literals concatenate, as in Python. */
        size_t total = 0, k = p->pos;
        while (p->t[k].kind == TK_STRING)
            total += p->t[k++].n;
        e = node(p, TX_CONST);
        char *s = palloc(p, total + 1);
        size_t o = 0;
        for (; p->pos < k; p->pos++) {
            memcpy(s + o, p->t[p->pos].s, p->t[p->pos].n);
            o += p->t[p->pos].n;
        }
        e->cval = (tpl_value){.kind = TV_STR, .u.str = {s, total}};
        return e;
    }
    case TK_INT:
        e = node(p, TX_CONST);
        e->cval = (tpl_value){.kind = TV_INT, .u.i = t->i};
        p->pos++;
        return e;
    case TK_FLOAT:
        e = node(p, TX_CONST);
        e->cval = (tpl_value){.kind = TV_FLOAT, .u.f = t->f};
        p->pos++;
        return e;
    case TK_OP:
        if (skip_op(p, "(")) {
            /* A parenthesised expression or a tuple (a list here: templates only iterate them). */
            if (skip_op(p, ")")) {
                e = node(p, TX_LIST);
                e->negate = true;
                return e;
            }
            tpl_expr *first = parse_expr(p, true);
            if (skip_op(p, ")")) return first;
            ptrvec items = {0};
            vpush(p, &items, first);
            while (skip_op(p, ",")) {
                if (tok_op(cur(p), ")")) break;
                vpush(p, &items, parse_expr(p, true));
            }
            expect_op(p, ")");
            e = node(p, TX_LIST);
            e->negate = true;
            e->args = (tpl_expr **)items.v;
            e->n_args = items.n;
            return e;
        }
        if (skip_op(p, "[")) {
            ptrvec items = {0};
            e = node(p, TX_LIST);
            while (!skip_op(p, "]")) {
                if (items.n) {
                    expect_op(p, ",");
                    if (skip_op(p, "]")) break;
                }
                vpush(p, &items, parse_expr(p, true));
            }
            e->args = (tpl_expr **)items.v;
            e->n_args = items.n;
            return e;
        }
        if (skip_op(p, "{")) {
            ptrvec keys = {0}, vals = {0};
            e = node(p, TX_DICT);
            while (!skip_op(p, "}")) {
                if (keys.n) {
                    expect_op(p, ",");
                    if (skip_op(p, "}")) break;
                }
                vpush(p, &keys, parse_expr(p, true));
                expect_op(p, ":");
                vpush(p, &vals, parse_expr(p, true));
            }
            e->args = (tpl_expr **)keys.v;
            e->kw_vals = (tpl_expr **)vals.v;
            e->n_args = keys.n;
            return e;
        }
        break;
    default:
        break;
    }
    pfail(p, -EINVAL, "unexpected '%s' in an expression", describe(t));
}

static tpl_expr *parse_postfix(parser *p, tpl_expr *e)
{
    for (;;) {
        if (skip_op(p, ".")) {
            if (cur(p)->kind == TK_INT) {
                tpl_expr *x = node(p, TX_ITEM);
                x->a = e;
                x->b = node(p, TX_CONST);
                x->b->cval = (tpl_value){.kind = TV_INT, .u.i = cur(p)->i};
                p->pos++;
                e = x;
                continue;
            }
            tpl_expr *x = node(p, TX_ATTR);
            x->a = e;
            x->name = expect_name(p);
            e = x;
        } else if (skip_op(p, "[")) {
            tpl_expr *parts[3] = {NULL, NULL, NULL};
            int n_colons = 0;
            for (;;) {
                if (tok_op(cur(p), "]")) break;
                if (skip_op(p, ":")) {
                    if (++n_colons > 2) pfail(p, -EINVAL, "too many ':' in a slice");
                    continue;
                }
                if (parts[n_colons]) pfail(p, -EINVAL, "expected ':' or ']' in a subscript");
                parts[n_colons] = parse_expr(p, true);
                if (tok_op(cur(p), ","))
                    pfail(p, -ENOTSUP, "unsupported construct: tuple subscript");
            }
            expect_op(p, "]");
            tpl_expr *x;
            if (n_colons == 0) {
                if (!parts[0]) pfail(p, -EINVAL, "empty subscript");
                x = node(p, TX_ITEM);
                x->b = parts[0];
            } else {
                x = node(p, TX_SLICE);
                x->b = parts[0];
                x->c = parts[1];
                x->d = parts[2];
            }
            x->a = e;
            e = x;
        } else if (skip_op(p, "(")) {
            tpl_expr *x = node(p, TX_CALL);
            x->a = e;
            parse_args(p, x);
            e = x;
        } else {
            return e;
        }
    }
}

static tpl_expr *parse_filter_expr(parser *p, tpl_expr *e)
{
    for (;;) {
        if (skip_op(p, "|")) {
            tpl_expr *x = node(p, TX_FILTER);
            x->a = e;
            x->name = expect_name(p);
            if (!tpl__filter_known(x->name))
                pfail(p, -ENOTSUP, "unsupported construct: filter '%s'", x->name);
            if (skip_op(p, "(")) parse_args(p, x);
            e = x;
        } else if (skip_name(p, "is")) {
            tpl_expr *x = node(p, TX_TEST);
            x->a = e;
            x->negate = skip_name(p, "not");
            x->name = expect_name(p);
            if (!tpl__test_known(x->name))
                pfail(p, -ENOTSUP, "unsupported construct: test '%s'", x->name);
            const tpl_tok *t = cur(p);
            if (skip_op(p, "(")) {
                parse_args(p, x);
            } else if ((t->kind == TK_NAME || t->kind == TK_STRING || t->kind == TK_INT ||
                        t->kind == TK_FLOAT || tok_op(t, "(") || tok_op(t, "[") ||
                        tok_op(t, "{")) &&
                       !tok_name(t, "else") && !tok_name(t, "or") && !tok_name(t, "and")) {
                /* `x is a is b`: jinja2 refuses to read the second `is` as a's argument */
                if (tok_name(t, "is")) pfail(p, -EINVAL, "You cannot chain multiple tests with is");
                tpl_expr *arg = parse_postfix(p, parse_primary(p));
                x->args = palloc(p, sizeof *x->args);
                x->args[0] = arg;
                x->n_args = 1;
            }
            e = x;
        } else {
            return e;
        }
    }
}

static tpl_expr *parse_unary(parser *p, bool with_filter)
{
    tpl_expr *e;
    enter(p);
    if (skip_op(p, "-")) {
        e = node(p, TX_NEG);
        e->a = parse_unary(p, false);
    } else if (skip_op(p, "+")) {
        e = node(p, TX_POS);
        e->a = parse_unary(p, false);
    } else {
        e = parse_postfix(p, parse_primary(p));
    }
    p->depth--;
    return with_filter ? parse_filter_expr(p, e) : e;
}

static tpl_expr *binary(parser *p, tpl_binop op, tpl_expr *a, tpl_expr *b)
{
    tpl_expr *e = node(p, TX_BIN);
    e->op = op;
    e->a = a;
    e->b = b;
    return e;
}

static tpl_expr *parse_pow(parser *p)
{
    tpl_expr *e = parse_unary(p, true);
    while (skip_op(p, "**"))
        e = binary(p, TB_POW, e, parse_unary(p, true));
    return e;
}

static tpl_expr *parse_math2(parser *p)
{
    tpl_expr *e = parse_pow(p);
    for (;;) {
        if (skip_op(p, "*"))
            e = binary(p, TB_MUL, e, parse_pow(p));
        else if (skip_op(p, "/"))
            e = binary(p, TB_DIV, e, parse_pow(p));
        else if (skip_op(p, "//"))
            e = binary(p, TB_FLOORDIV, e, parse_pow(p));
        else if (skip_op(p, "%"))
            e = binary(p, TB_MOD, e, parse_pow(p));
        else
            return e;
    }
}

static tpl_expr *parse_concat(parser *p)
{
    tpl_expr *e = parse_math2(p);
    while (skip_op(p, "~"))
        e = binary(p, TB_CONCAT, e, parse_math2(p));
    return e;
}

static tpl_expr *parse_math1(parser *p)
{
    tpl_expr *e = parse_concat(p);
    for (;;) {
        if (skip_op(p, "+"))
            e = binary(p, TB_ADD, e, parse_concat(p));
        else if (skip_op(p, "-"))
            e = binary(p, TB_SUB, e, parse_concat(p));
        else
            return e;
    }
}

static bool compare_op(parser *p, tpl_binop *op)
{
    static const struct {
        const char *s;
        tpl_binop op;
    } ops[] = {{"==", TB_EQ}, {"!=", TB_NE}, {"<", TB_LT},
               {"<=", TB_LE}, {">", TB_GT},  {">=", TB_GE}};
    for (size_t i = 0; i < sizeof ops / sizeof ops[0]; i++)
        if (skip_op(p, ops[i].s)) {
            *op = ops[i].op;
            return true;
        }
    if (skip_name(p, "in")) {
        *op = TB_IN;
        return true;
    }
    if (tok_name(cur(p), "not") && tok_name(&p->t[p->pos + 1], "in")) {
        p->pos += 2;
        *op = TB_NOTIN;
        return true;
    }
    return false;
}

/* a < b <= c is (a < b) and (b <= c) with b evaluated once, as in Python: one node. */
static tpl_expr *parse_compare(parser *p)
{
    tpl_expr *first = parse_math1(p);
    tpl_binop op;
    if (!compare_op(p, &op)) return first;
    ptrvec operands = {0}, ops = {0};
    vpush(p, &operands, first);
    do {
        tpl_binop *slot = palloc(p, sizeof *slot);
        *slot = op;
        vpush(p, &ops, slot);
        vpush(p, &operands, parse_math1(p));
    } while (compare_op(p, &op));
    if (ops.n == 1) return binary(p, *(tpl_binop *)ops.v[0], operands.v[0], operands.v[1]);
    tpl_expr *e = node(p, TX_COMPARE);
    e->args = (tpl_expr **)operands.v;
    e->n_args = operands.n;
    e->ops = palloc(p, ops.n * sizeof *e->ops);
    for (size_t i = 0; i < ops.n; i++)
        e->ops[i] = *(tpl_binop *)ops.v[i];
    return e;
}

static tpl_expr *parse_not(parser *p)
{
    if (skip_name(p, "not")) {
        tpl_expr *e = node(p, TX_NOT);
        enter(p);
        e->a = parse_not(p);
        p->depth--;
        return e;
    }
    return parse_compare(p);
}

static tpl_expr *parse_and(parser *p)
{
    tpl_expr *e = parse_not(p);
    while (skip_name(p, "and")) {
        tpl_expr *x = node(p, TX_AND);
        x->a = e;
        x->b = parse_not(p);
        e = x;
    }
    return e;
}

static tpl_expr *parse_or(parser *p)
{
    tpl_expr *e = parse_and(p);
    while (skip_name(p, "or")) {
        tpl_expr *x = node(p, TX_OR);
        x->a = e;
        x->b = parse_and(p);
        e = x;
    }
    return e;
}

static tpl_expr *parse_expr(parser *p, bool with_cond)
{
    enter(p);
    tpl_expr *e = parse_or(p);
    while (with_cond && skip_name(p, "if")) {
        tpl_expr *x = node(p, TX_COND);
        x->b = e;           /* value when true */
        x->a = parse_or(p); /* condition */
        if (skip_name(p, "else")) x->c = parse_expr(p, true);
        e = x;
    }
    p->depth--;
    return e;
}

/* ---- statements --------------------------------------------------------------------------- */

static tpl_stmt *stmt(parser *p, tpl_skind kind, int line)
{
    tpl_stmt *s = palloc(p, sizeof *s);
    s->kind = kind;
    s->line = line;
    return s;
}

/* Parses statements until a block tag named in `ends` (NULL-terminated); returns that name,
 * with the parser just after it (its block end not yet consumed). */
static const char *parse_body(parser *p, tpl_body *body, const char *const *ends);

static const char *const end_if[] = {"elif", "else", "endif", NULL};
static const char *const end_endif[] = {"endif", NULL};
static const char *const end_for[] = {"else", "endfor", NULL};
static const char *const end_endfor[] = {"endfor", NULL};

static tpl_stmt *parse_if(parser *p, int line)
{
    tpl_stmt *s = stmt(p, TS_IF, line);
    s->expr = parse_expr(p, true);
    expect_block_end(p);
    const char *end = parse_body(p, &s->body, end_if);
    if (!strcmp(end, "elif")) {
        tpl_stmt *elif = parse_if(p, cur(p)->line);
        s->else_body.items = palloc(p, sizeof *s->else_body.items);
        s->else_body.items[0] = elif;
        s->else_body.n = 1;
        return s; /* the nested if consumed the endif */
    }
    if (!strcmp(end, "else")) {
        expect_block_end(p);
        parse_body(p, &s->else_body, end_endif);
    }
    expect_block_end(p);
    return s;
}

static void parse_targets(parser *p, tpl_stmt *s)
{
    ptrvec names = {0};
    bool paren = skip_op(p, "(");
    do {
        vpush(p, &names, (void *)expect_name(p));
    } while (skip_op(p, ","));
    if (paren) expect_op(p, ")");
    s->names = (const char **)names.v;
    s->n_names = names.n;
}

static tpl_stmt *parse_for(parser *p, int line)
{
    tpl_stmt *s = stmt(p, TS_FOR, line);
    parse_targets(p, s);
    if (!skip_name(p, "in")) pfail(p, -EINVAL, "expected 'in' in a for loop");
    s->expr = parse_expr(p, false);
    if (tok_op(cur(p), ",")) pfail(p, -ENOTSUP, "unsupported construct: iterating a bare tuple");
    if (skip_name(p, "if")) s->filter = parse_expr(p, true);
    if (tok_name(cur(p), "recursive"))
        pfail(p, -ENOTSUP, "unsupported construct: recursive for loop");
    expect_block_end(p);
    p->loop_depth++;
    const char *end = parse_body(p, &s->body, end_for);
    p->loop_depth--;
    if (!strcmp(end, "else")) {
        expect_block_end(p);
        parse_body(p, &s->else_body, end_endfor);
    }
    expect_block_end(p);
    return s;
}

static tpl_stmt *parse_set(parser *p, int line)
{
    const char *first = expect_name(p);
    if (skip_op(p, ".")) {
        tpl_stmt *s = stmt(p, TS_SET_ATTR, line);
        s->names = palloc(p, 2 * sizeof *s->names);
        s->names[0] = first;
        s->names[1] = expect_name(p);
        s->n_names = 2;
        expect_op(p, "=");
        s->expr = parse_expr(p, true);
        expect_block_end(p);
        return s;
    }
    tpl_stmt *s = stmt(p, TS_SET, line);
    ptrvec names = {0};
    vpush(p, &names, (void *)first);
    while (skip_op(p, ","))
        vpush(p, &names, (void *)expect_name(p));
    s->names = (const char **)names.v;
    s->n_names = names.n;
    if (cur(p)->kind == TK_BLOCK_END && names.n == 1) {
        static const char *const end_set[] = {"endset", NULL};
        p->pos++;
        s->kind = TS_SET_BLOCK;
        parse_body(p, &s->body, end_set);
        expect_block_end(p);
        return s;
    }
    if (tok_op(cur(p), "|")) pfail(p, -ENOTSUP, "unsupported construct: filtered block set");
    expect_op(p, "=");
    tpl_expr *value = parse_expr(p, true);
    if (tok_op(cur(p), ",")) {
        ptrvec items = {0};
        vpush(p, &items, value);
        while (skip_op(p, ","))
            vpush(p, &items, parse_expr(p, true));
        value = node(p, TX_LIST);
        value->negate = true;
        value->args = (tpl_expr **)items.v;
        value->n_args = items.n;
    }
    s->expr = value;
    expect_block_end(p);
    return s;
}

static tpl_stmt *parse_macro(parser *p, int line)
{
    static const char *const end_macro[] = {"endmacro", NULL};
    tpl_stmt *s = stmt(p, TS_MACRO, line);
    s->text = expect_name(p);
    ptrvec names = {0}, defs = {0};
    expect_op(p, "(");
    while (!skip_op(p, ")")) {
        if (names.n) {
            expect_op(p, ",");
            if (skip_op(p, ")")) break;
        }
        vpush(p, &names, (void *)expect_name(p));
        vpush(p, &defs, skip_op(p, "=") ? parse_expr(p, true) : NULL);
        if (!defs.v[defs.n - 1] && defs.n > 1 && defs.v[defs.n - 2])
            pfail(p, -EINVAL, "non-default argument follows default argument");
    }
    s->names = (const char **)names.v;
    s->defaults = (tpl_expr **)defs.v;
    s->n_names = names.n;
    expect_block_end(p);
    int depth = p->loop_depth;
    p->loop_depth = 0;
    parse_body(p, &s->body, end_macro);
    p->loop_depth = depth;
    expect_block_end(p);
    return s;
}

static const char *const refused_tags[] = {"include", "import",    "from", "extends",    "block",
                                           "call",    "filter",    "with", "autoescape", "do",
                                           "trans",   "pluralize", NULL};

static const char *parse_body(parser *p, tpl_body *body, const char *const *ends)
{
    ptrvec items = {0};
    enter(p);
    for (;;) {
        const tpl_tok *t = cur(p);
        int line = t->line;
        if (t->kind == TK_EOF) {
            if (ends) {
                size_t last = 0;
                while (ends[last + 1])
                    last++;
                pfail(p, -EINVAL, "unexpected end of template: missing {%% %s %%}", ends[last]);
            }
            break;
        }
        if (t->kind == TK_TEXT) {
            tpl_stmt *s = stmt(p, TS_TEXT, line);
            s->text = t->s;
            s->text_len = t->n;
            vpush(p, &items, s);
            p->pos++;
            continue;
        }
        if (t->kind == TK_VAR_BEGIN) {
            p->pos++;
            tpl_stmt *s = stmt(p, TS_PRINT, line);
            s->expr = parse_expr(p, true);
            if (cur(p)->kind != TK_VAR_END)
                pfail(p, -EINVAL, "expected '}}', found '%s'", describe(cur(p)));
            p->pos++;
            vpush(p, &items, s);
            continue;
        }
        if (t->kind != TK_BLOCK_BEGIN) pfail(p, -EINVAL, "unexpected '%s'", describe(t));
        p->pos++;
        t = cur(p);
        if (t->kind != TK_NAME) pfail(p, -EINVAL, "expected a tag name after '{%%'");
        for (size_t i = 0; ends && ends[i]; i++)
            if (!strcmp(t->s, ends[i])) {
                p->pos++;
                body->items = (tpl_stmt **)items.v;
                body->n = items.n;
                p->depth--;
                return ends[i];
            }
        p->pos++;
        tpl_stmt *s = NULL;
        if (!strcmp(t->s, "if")) {
            s = parse_if(p, line);
        } else if (!strcmp(t->s, "for")) {
            s = parse_for(p, line);
        } else if (!strcmp(t->s, "set")) {
            s = parse_set(p, line);
        } else if (!strcmp(t->s, "macro")) {
            s = parse_macro(p, line);
        } else if (!strcmp(t->s, "print")) {
            s = stmt(p, TS_PRINT, line);
            s->expr = parse_expr(p, true);
            expect_block_end(p);
        } else if (!strcmp(t->s, "break") || !strcmp(t->s, "continue")) {
            if (p->loop_depth == 0) pfail(p, -EINVAL, "'%s' outside a for loop", t->s);
            s = stmt(p, t->s[0] == 'b' ? TS_BREAK : TS_CONTINUE, line);
            expect_block_end(p);
        } else if (!strcmp(t->s, "generation")) {
            /* Hugging Face's AssistantTracker tag: marks assistant text, renders its body. */
            static const char *const end_gen[] = {"endgeneration", NULL};
            s = stmt(p, TS_BLOCK, line);
            expect_block_end(p);
            parse_body(p, &s->body, end_gen);
            expect_block_end(p);
        } else {
            for (size_t i = 0; refused_tags[i]; i++)
                if (!strcmp(t->s, refused_tags[i])) {
                    p->pos--;
                    pfail(p, -ENOTSUP, "unsupported construct: {%% %s %%}", t->s);
                }
            p->pos--;
            /* A closing tag out of place is a syntax error; any other unknown tag a construct. */
            if (!strncmp(t->s, "end", 3) || !strcmp(t->s, "elif") || !strcmp(t->s, "else"))
                pfail(p, -EINVAL, "unexpected {%% %s %%}", t->s);
            pfail(p, -ENOTSUP, "unsupported construct: unknown tag {%% %s %%}", t->s);
        }
        vpush(p, &items, s);
    }
    body->items = (tpl_stmt **)items.v;
    body->n = items.n;
    p->depth--;
    return NULL;
}

int tpl__parse(arena *a, const tpl_tok *toks, size_t n_toks, tpl_body *root, char *err,
               size_t err_size)
{
    parser p = {.arena = a, .t = toks, .n = n_toks, .err = err, .err_size = err_size};
    if (setjmp(p.fail)) return p.rc;
    parse_body(&p, root, NULL);
    return 0;
}
