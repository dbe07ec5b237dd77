/*
 * Internals shared by the template module's files: the arena, tokens, the syntax tree and the
 * values of the evaluator.  Not a public header.
 *
 * Memory: a parsed template lives in one arena (its syntax tree and decoded literals); a render
 * lives in another, freed as a whole when the render returns.  Values never own memory of their
 * own, so nothing is freed piecemeal and an error can leave from any depth (longjmp) without
 * leaking: both the parser and the evaluator report errors that way.
 */
#ifndef MOE_TEMPLATE_INTERNAL_H
#define MOE_TEMPLATE_INTERNAL_H

#include "base/arena.h"
#include "base/utf8.h"
#include "template/template.h"

#include <errno.h>
#include <setjmp.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* ---- arena ----------------------------------------------------------------------------- */
/* Block size of the template's and the render's arenas (base/arena.h). */
enum { TPL_ARENA_BLOCK = 32768 };

/* ---- tokens ---------------------------------------------------------------------------- */
typedef enum tpl_tok_kind {
    TK_EOF,
    TK_TEXT,
    TK_VAR_BEGIN,
    TK_VAR_END,
    TK_BLOCK_BEGIN,
    TK_BLOCK_END,
    TK_NAME,
    TK_STRING,
    TK_INT,
    TK_FLOAT,
    TK_OP,
} tpl_tok_kind;

typedef struct tpl_tok {
    tpl_tok_kind kind;
    int line;
    const char *s; /* text, name, operator or decoded string literal (in the template arena) */
    size_t n;
    int64_t i;
    double f;
} tpl_tok;

/* Splits src into tokens with jinja2's whitespace rules (trim_blocks, lstrip_blocks, '-' and
 * '+' markers, one trailing newline dropped).  Comments vanish; `{% raw %}` becomes text.
 * Returns 0 or -EINVAL/-ENOMEM with a message. *toks is malloc'd. */
int tpl__lex(arena *a, const char *src, size_t len, tpl_tok **toks, size_t *n_toks, char *err,
             size_t err_size);

/* ---- values ---------------------------------------------------------------------------- */
typedef enum tpl_vkind {
    TV_UNDEF,
    TV_NONE,
    TV_BOOL,
    TV_INT,
    TV_FLOAT,
    TV_STR,
    TV_LIST,
    TV_DICT,
    TV_FUNC,
} tpl_vkind;

typedef struct tpl_list tpl_list;
typedef struct tpl_args tpl_args;
typedef struct tpl_dict tpl_dict;
typedef struct tpl_func tpl_func;

typedef struct tpl_value {
    tpl_vkind kind;
    bool safe; /* TV_STR marked by |safe (markupsafe.Markup): `+` escapes the other operand */
    union {
        bool b;
        int64_t i;
        double f;
        struct {
            const char *s; /* not NUL-terminated; for TV_UNDEF: what was looked up (may be NULL) */
            size_t n;
        } str;
        tpl_list *list;
        tpl_dict *dict;
        tpl_func *func;
    } u;
} tpl_value;

struct tpl_list {
    tpl_value *items;
    size_t n, cap;
    bool is_tuple;     /* prints as (a, b) and never equals a list, as in Python */
    bool is_generator; /* what select/map return in jinja2: iterable once, always true, no len() */
    size_t consumed;   /* generator: items already taken by an earlier iteration */
    /* A generator not run yet (jinja2's filters are lazy: their errors wait for the first
     * iteration): the filter, its input and arguments.  tpl__force() runs it. */
    const char *lazy_filter;
    const char *gen_name; /* the Python generator function, for printing */
    tpl_value lazy_seq;
    const struct tpl_args *lazy_args;
    const char *view; /* "dict_items", "dict_keys", "dict_values": how a dict view prints */
};

struct tpl_dict {
    tpl_value *keys, *vals;
    size_t n, cap;
    bool is_namespace; /* namespace(): the one object `set x.attr = ...` may change */
    bool is_loop;      /* the loop object: printed as <LoopContext>, not as a dict */
};

/* ---- syntax tree ----------------------------------------------------------------------- */
typedef enum tpl_xkind {
    TX_CONST,
    TX_NAME,
    TX_ATTR,
    TX_ITEM,
    TX_SLICE,
    TX_CALL,
    TX_FILTER,
    TX_TEST,
    TX_NOT,
    TX_NEG,
    TX_POS,
    TX_BIN,
    TX_COMPARE, /* a chain: args[0] ops[0] args[1] ops[1] args[2] ..., as Python chains them */
    TX_AND,
    TX_OR,
    TX_COND,
    TX_LIST,
    TX_DICT,
} tpl_xkind;

typedef enum tpl_binop {
    TB_ADD,
    TB_SUB,
    TB_MUL,
    TB_DIV,
    TB_FLOORDIV,
    TB_MOD,
    TB_POW,
    TB_CONCAT,
    TB_EQ,
    TB_NE,
    TB_LT,
    TB_LE,
    TB_GT,
    TB_GE,
    TB_IN,
    TB_NOTIN,
} tpl_binop;

typedef struct tpl_expr tpl_expr;
struct tpl_expr {
    tpl_xkind kind;
    int line;
    tpl_binop op;
    bool negate;      /* TX_TEST: `is not`; TX_LIST: a tuple */
    tpl_value cval;   /* TX_CONST */
    const char *name; /* TX_NAME, TX_ATTR, TX_FILTER, TX_TEST (NUL-terminated) */
    tpl_expr *a, *b, *c, *d;
    tpl_expr **args; /* call / filter / test arguments, list items, dict keys, compared operands */
    tpl_binop *ops;  /* TX_COMPARE: n_args - 1 comparison operators */
    size_t n_args;
    const char **kw_names; /* keyword arguments */
    tpl_expr **kw_vals;    /* keyword argument values, dict values */
    size_t n_kw;
};

typedef enum tpl_skind {
    TS_TEXT,
    TS_PRINT,
    TS_IF,
    TS_FOR,
    TS_SET,
    TS_SET_ATTR,
    TS_SET_BLOCK,
    TS_MACRO,
    TS_BREAK,
    TS_CONTINUE,
    TS_BLOCK, /* a body rendered as is ({% generation %}) */
} tpl_skind;

typedef struct tpl_stmt tpl_stmt;
typedef struct tpl_body {
    tpl_stmt **items;
    size_t n;
} tpl_body;

struct tpl_stmt {
    tpl_skind kind;
    int line;
    const char *text; /* TS_TEXT */
    size_t text_len;
    tpl_expr *expr;     /* printed value, if condition, for iterable, set value */
    tpl_expr *filter;   /* for ... if filter */
    const char **names; /* for / set targets, macro parameters; TS_SET_ATTR: {object, attribute} */
    size_t n_names;
    tpl_expr **defaults; /* macro parameter defaults (NULL entries: none) */
    tpl_body body, else_body;
};

struct chat_template {
    arena arena;
    tpl_body root;
    const char *source; /* the Jinja text, NUL-terminated (in the arena) */
};

/* Parses tokens into a body in the template's arena.  -ENOTSUP names an unsupported construct. */
int tpl__parse(arena *a, const tpl_tok *toks, size_t n_toks, tpl_body *root, char *err,
               size_t err_size);

/* The names the parser accepts: filters and tests it can evaluate. */
bool tpl__filter_known(const char *name);
bool tpl__test_known(const char *name);

/* Python's str.isspace() on UTF-8: the length of the space character at / before a position. */
size_t tpl__space_at(const char *s, size_t n);
size_t tpl__space_before(const char *s, size_t n);

/* ---- rendering ---------------------------------------------------------------------------- */
typedef struct tpl_sbuf {
    char *p; /* in the render arena */
    size_t n, cap;
} tpl_sbuf;

typedef struct tpl_scope tpl_scope;

typedef enum tpl_fkind {
    TF_RAISE,
    TF_STRFTIME,
    TF_NAMESPACE,
    TF_RANGE,
    TF_DICT,
    TF_MACRO,
    TF_METHOD, /* a method bound to `self`: "startswith", "items", ... */
} tpl_fkind;

struct tpl_func {
    tpl_fkind kind;
    const char *method;
    tpl_value self;
    const tpl_stmt *macro;
    /* TF_MACRO: the scope the macro was defined in (jinja2 macros are closures) */
    tpl_scope *closure;
};

typedef struct tpl_render {
    arena arena;
    jmp_buf fail;
    int rc;
    char *err;
    size_t err_size;
    const chat_template_render_opts *opts;
    tpl_scope *root; /* the template's top-level scope, over the context's globals */
    int depth;       /* macro calls, nested loops and printed values, bounded */
    int expr_depth;  /* recursion of the expression evaluator, bounded */
    int line;        /* of the statement being run, for messages */
} tpl_render;

_Noreturn void tpl__fail(tpl_render *r, int rc, const char *fmt, ...);
void *tpl__ralloc(tpl_render *r, size_t size);
void tpl__put(tpl_render *r, tpl_sbuf *b, const char *s, size_t n);
tpl_value tpl__sbuf_value(tpl_render *r, const tpl_sbuf *b);
tpl_value tpl__strv(tpl_render *r, const char *s, size_t n); /* copies */
tpl_list *tpl__list_new(tpl_render *r, size_t cap);
void tpl__list_push(tpl_render *r, tpl_list *l, tpl_value v);
tpl_dict *tpl__dict_new(tpl_render *r, size_t cap);
void tpl__dict_set(tpl_render *r, tpl_dict *d, tpl_value key, tpl_value v);
bool tpl__dict_get(const tpl_dict *d, tpl_value key, tpl_value *out);
bool tpl__dict_get_str(const tpl_dict *d, const char *key, tpl_value *out);

bool tpl__truthy(tpl_value v);
bool tpl__equal(tpl_value a, tpl_value b);
const char *tpl__type_name(tpl_value v);
void tpl__str(tpl_render *r, tpl_sbuf *b, tpl_value v);         /* Python str() */
void tpl__repr(tpl_render *r, tpl_sbuf *b, tpl_value v);        /* Python repr() */
void tpl__html_escape(tpl_render *r, tpl_sbuf *b, tpl_value s); /* markupsafe.escape */
tpl_value tpl__getattr(tpl_render *r, tpl_value obj, const char *name, size_t name_len);
tpl_value tpl__getitem(tpl_render *r, tpl_value obj, tpl_value key);
/* Iterating a value as jinja2's for loop does: lists, dict keys, string characters. */
tpl_list *tpl__iterate(tpl_render *r, tpl_value v);
/* Python's `item in container` */
bool tpl__contains(tpl_render *r, tpl_value item, tpl_value container);

/* Python's hashability: lists, dicts and dict views are not; tuples, generators, namespaces are. */
static inline bool tpl__unhashable(tpl_value v)
{
    if (v.kind == TV_DICT) return !v.u.dict->is_namespace && !v.u.dict->is_loop;
    return v.kind == TV_LIST && !v.u.list->is_generator && (!v.u.list->is_tuple || v.u.list->view);
}

struct tpl_args {
    tpl_value *pos;
    size_t n;
    const char **kw_names;
    tpl_value *kw_vals;
    size_t n_kw;
};

tpl_value tpl__to_str(tpl_render *r, tpl_value v);
int tpl__cmp_str(const tpl_value *a, const tpl_value *b);
bool tpl__in_set(const char *const *set, const char *name, size_t n);

static inline tpl_value mk_bool(bool b)
{
    return (tpl_value){.kind = TV_BOOL, .u.b = b};
}

static inline tpl_value mk_int(int64_t i)
{
    return (tpl_value){.kind = TV_INT, .u.i = i};
}

static inline tpl_value mk_undef(const char *name)
{
    return (tpl_value){.kind = TV_UNDEF, .u.str = {name, name ? strlen(name) : 0}};
}

static inline tpl_value mk_list(tpl_list *l)
{
    return (tpl_value){.kind = TV_LIST, .u.list = l};
}

static inline _Noreturn void tpl__fail_undef(tpl_render *r, tpl_value v)
{
    if (v.u.str.s) tpl__fail(r, -EINVAL, "'%.*s' is undefined", (int)v.u.str.n, v.u.str.s);
    tpl__fail(r, -EINVAL, "undefined value used");
}

#define TPL_NONE ((tpl_value){.kind = TV_NONE})

/* Argument `i` (positional) or `name` (keyword), or `def`. */
static inline tpl_value tpl__arg(const tpl_args *a, size_t i, const char *name, tpl_value def)
{
    if (i < a->n) return a->pos[i];
    for (size_t k = 0; name && k < a->n_kw; k++)
        if (!strcmp(a->kw_names[k], name)) return a->kw_vals[k];
    return def;
}

/* template_str.c: strings and the methods of values */
tpl_value tpl__str_arg(tpl_render *r, const tpl_args *a, size_t i, const char *name,
                       const char *what);
tpl_value tpl__strip(tpl_render *r, tpl_value s, tpl_value chars, bool left, bool right);
uint32_t tpl__cp_upper(uint32_t c);
uint32_t tpl__cp_lower(uint32_t c);
/* mode 0 lower, 1 upper, 2 str.title(), 3 capitalize, 4 jinja2's title filter */
tpl_value tpl__change_case(tpl_render *r, tpl_value s, int mode);
tpl_value tpl__replace(tpl_render *r, tpl_value s, tpl_value old, tpl_value rep, int64_t count);
tpl_value tpl__split(tpl_render *r, tpl_value s, tpl_value sep, int64_t maxsplit);
tpl_value tpl__join(tpl_render *r, tpl_value seq, tpl_value sep, tpl_value attribute);
tpl_value tpl__call_method(tpl_render *r, const tpl_func *f, const tpl_args *a);
tpl_value tpl__percent_format(tpl_render *r, tpl_value fmt, tpl_value args);

tpl_value tpl__tojson(tpl_render *r, tpl_value v, const tpl_args *a);
tpl_value tpl__filter(tpl_render *r, const char *name, tpl_value v, const tpl_args *args);
void tpl__force(tpl_render *r, tpl_list *generator); /* runs a lazy generator's filter, once */
bool tpl__test(tpl_render *r, const char *name, tpl_value v, const tpl_args *args);
tpl_value tpl__call(tpl_render *r, tpl_value fn, const tpl_args *args);
tpl_value tpl__call_macro(tpl_render *r, const tpl_func *fn, const tpl_args *args); /* evaluator */

#endif
