/*
 * The schema as a tree of nodes, and a guide that keeps a stack of frames (one per value being
 * written).  Every fixed piece of text — an object's keys with their colons, an enum's
 * alternatives — is a literal the guide matches byte by byte; strings and numbers are lexed as
 * JSON defines them.  A number, or an enum whose alternative may still grow, ends only at the
 * byte after it, which is then read again by the frame below.
 */
#include "sampling/json_schema.h"
#include "sampling/json_lex.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef enum {
    K_OBJECT,
    K_ARRAY,
    K_STRING,
    K_NUMBER,
    K_INTEGER,
    K_ENUM, /* boolean, null, enum and const: a choice of literal texts */
} kind;

typedef struct node {
    kind k;
    int n;       /* properties, or alternatives */
    char **lits; /* object: `"key":` per property; enum: each alternative's JSON text */
    size_t *lens;
    struct node **kids; /* object: each property's value; array: kids[0], the items */
} node;

struct schema {
    node *root;
    node **all; /* every node, for freeing */
    int n_all, cap_all;
};

/* ---- compiling ----------------------------------------------------------------------------- */

static node *new_node(schema *s, kind k)
{
    if (s->n_all == s->cap_all) {
        int cap = s->cap_all ? 2 * s->cap_all : 16;
        node **grown = realloc(s->all, (size_t)cap * sizeof *grown);
        if (!grown) return NULL;
        s->all = grown;
        s->cap_all = cap;
    }
    node *n = calloc(1, sizeof *n);
    if (n) {
        n->k = k;
        s->all[s->n_all++] = n;
    }
    return n;
}

static int add_lit(node *n, char *text)
{
    char **lits = realloc(n->lits, (size_t)(n->n + 1) * sizeof *lits);
    if (lits) n->lits = lits;
    size_t *lens = lits ? realloc(n->lens, (size_t)(n->n + 1) * sizeof *lens) : NULL;
    if (lens) n->lens = lens;
    if (!lits || !lens || !text) {
        free(text);
        return -ENOMEM;
    }
    n->lits[n->n] = text;
    n->lens[n->n] = strlen(text);
    n->n++;
    return 0;
}

static char *dup_str(const char *s)
{
    size_t len = strlen(s);
    char *d = malloc(len + 1);
    if (d) memcpy(d, s, len + 1);
    return d;
}

static int fail(char *err, size_t err_size, const char *path, const char *what)
{
    snprintf(err, err_size, "json_schema %s: %s", *path ? path : "(root)", what);
    return -EINVAL;
}

static int compile_node(schema *s, const cJSON *j, const char *path, int depth, node **out,
                        char *err, size_t err_size);

static int compile_enum(schema *s, const cJSON *values, const char *path, node **out, char *err,
                        size_t err_size)
{
    node *n = new_node(s, K_ENUM);
    if (!n) return -ENOMEM;
    const cJSON *v;
    cJSON_ArrayForEach(v, values)
    {
        if (cJSON_IsObject(v) || cJSON_IsArray(v))
            return fail(err, err_size, path,
                        "enum/const values must be strings, numbers, "
                        "booleans or null");
        if (n->n == SCHEMA_MAX_ALTS) return fail(err, err_size, path, "more than 64 enum values");
        if (add_lit(n, cJSON_PrintUnformatted(v))) return -ENOMEM;
    }
    if (n->n == 0) return fail(err, err_size, path, "an empty enum accepts nothing");
    *out = n;
    return 0;
}

static const char *const ignored_keywords[] = {"title",    "description", "$schema",  "default",
                                               "examples", "strict",      "$comment", NULL};

static int compile_node(schema *s, const cJSON *j, const char *path, int depth, node **out,
                        char *err, size_t err_size)
{
    if (!cJSON_IsObject(j)) return fail(err, err_size, path, "a schema must be an object");
    if (depth >= SCHEMA_MAX_DEPTH) return fail(err, err_size, path, "nested too deep");
    const cJSON *type = NULL, *props = NULL, *required = NULL, *items = NULL, *en = NULL,
                *cn = NULL, *kw;
    cJSON_ArrayForEach(kw, j)
    {
        const char *k = kw->string;
        bool known = true;
        if (!strcmp(k, "type"))
            type = kw;
        else if (!strcmp(k, "properties"))
            props = kw;
        else if (!strcmp(k, "required"))
            required = kw;
        else if (!strcmp(k, "items"))
            items = kw;
        else if (!strcmp(k, "enum"))
            en = kw;
        else if (!strcmp(k, "const"))
            cn = kw;
        else if (!strcmp(k, "additionalProperties"))
            known = cJSON_IsFalse(kw);
        else {
            known = false;
            for (int i = 0; ignored_keywords[i]; i++)
                known |= !strcmp(k, ignored_keywords[i]);
        }
        if (!known) {
            char what[160];
            snprintf(what, sizeof what, "the keyword '%.60s' is not supported%s", k,
                     !strcmp(k, "additionalProperties") ? " (only false)" : "");
            return fail(err, err_size, path, what);
        }
    }
    if (cn) {
        cJSON *one = cJSON_CreateArray();
        cJSON *copy = one ? cJSON_Duplicate(cn, true) : NULL;
        if (!copy || !cJSON_AddItemToArray(one, copy)) {
            cJSON_Delete(copy);
            cJSON_Delete(one);
            return -ENOMEM;
        }
        int rc = compile_enum(s, one, path, out, err, err_size);
        cJSON_Delete(one);
        return rc;
    }
    if (en) {
        if (!cJSON_IsArray(en)) return fail(err, err_size, path, "enum must be an array");
        return compile_enum(s, en, path, out, err, err_size);
    }
    if (!cJSON_IsString(type))
        return fail(err, err_size, path, "needs a \"type\" (one of them), an enum or a const");
    const char *t = type->valuestring;
    node *n = NULL;
    if (!strcmp(t, "string")) {
        n = new_node(s, K_STRING);
    } else if (!strcmp(t, "number")) {
        n = new_node(s, K_NUMBER);
    } else if (!strcmp(t, "integer")) {
        n = new_node(s, K_INTEGER);
    } else if (!strcmp(t, "boolean") || !strcmp(t, "null")) {
        if (!(n = new_node(s, K_ENUM))) return -ENOMEM;
        int rc = add_lit(n, dup_str(!strcmp(t, "null") ? "null" : "true"));
        if (rc == 0 && !strcmp(t, "boolean")) rc = add_lit(n, dup_str("false"));
        if (rc) return rc;
    } else if (!strcmp(t, "array")) {
        if (!(n = new_node(s, K_ARRAY))) return -ENOMEM;
        if (!items) return fail(err, err_size, path, "an array needs \"items\"");
        n->kids = calloc(1, sizeof *n->kids);
        if (!n->kids) return -ENOMEM;
        char sub[256];
        snprintf(sub, sizeof sub, "%s/items", path);
        int rc = compile_node(s, items, sub, depth + 1, &n->kids[0], err, err_size);
        if (rc) return rc;
    } else if (!strcmp(t, "object")) {
        if (!(n = new_node(s, K_OBJECT))) return -ENOMEM;
        if (props && !cJSON_IsObject(props))
            return fail(err, err_size, path, "properties must be an object");
        int count = cJSON_GetArraySize(props);
        n->kids = calloc((size_t)(count ? count : 1), sizeof *n->kids);
        if (!n->kids) return -ENOMEM;
        const cJSON *p;
        cJSON_ArrayForEach(p, props)
        {
            cJSON *key = cJSON_CreateString(p->string);
            char *key_json = key ? cJSON_PrintUnformatted(key) : NULL;
            cJSON_Delete(key);
            char *lit = key_json ? malloc(strlen(key_json) + 2) : NULL;
            if (lit) sprintf(lit, "%s:", key_json);
            free(key_json);
            int i = n->n;
            if (add_lit(n, lit)) return -ENOMEM;
            char sub[256];
            snprintf(sub, sizeof sub, "%s/properties/%.80s", path, p->string);
            int rc = compile_node(s, p, sub, depth + 1, &n->kids[i], err, err_size);
            if (rc) return rc;
        }
        /* Strict mode: every property is written, so "required" may name only properties. */
        const cJSON *r;
        if (required && !cJSON_IsArray(required))
            return fail(err, err_size, path, "required must be an array");
        cJSON_ArrayForEach(r, required)
        {
            if (!cJSON_IsString(r) || !cJSON_GetObjectItemCaseSensitive(props, r->valuestring))
                return fail(err, err_size, path, "required names a property it does not declare");
        }
    } else {
        char what[120];
        snprintf(what, sizeof what,
                 "type '%.40s' is not one of object, array, string, number, "
                 "integer, boolean, null",
                 t);
        return fail(err, err_size, path, what);
    }
    if (!n) return -ENOMEM;
    *out = n;
    return 0;
}

void schema_free(schema **sp)
{
    schema *s = *sp;
    if (!s) return;
    for (int i = 0; i < s->n_all; i++) {
        node *n = s->all[i];
        for (int k = 0; k < n->n; k++)
            free(n->lits[k]);
        free(n->lits);
        free(n->lens);
        free(n->kids);
        free(n);
    }
    free(s->all);
    free(s);
    *sp = NULL;
}

int schema_compile(schema **out, const cJSON *json, char *err, size_t err_size)
{
    *out = NULL;
    schema *s = calloc(1, sizeof *s);
    if (!s) {
        snprintf(err, err_size, "out of memory");
        return -ENOMEM;
    }
    int rc = compile_node(s, json, "", 0, &s->root, err, err_size);
    if (rc == 0 && s->root->k != K_OBJECT)
        rc = fail(err, err_size, "", "the top level must be an object (as OpenAI requires)");
    if (rc) {
        if (rc == -ENOMEM) snprintf(err, err_size, "out of memory");
        schema_free(&s);
        return rc;
    }
    *out = s;
    return 0;
}

/* ---- the guide ----------------------------------------------------------------------------- */

/* frame stages; strings and numbers keep their lexer state (json_lex.h) in `sub` */
enum { OPEN, SEP, KEY, VALUE, CLOSE, FIRST, AFTER, IN, NUM, LIT };

typedef enum { REJECT, ACCEPT, AGAIN } outcome;

static const node *node_of(const schema_frame *f)
{
    return f->node;
}

static bool push(schema_guide *g, const node *n)
{
    if (g->depth >= SCHEMA_MAX_DEPTH) return false;
    schema_frame *f = &g->f[g->depth++];
    memset(f, 0, sizeof *f);
    f->node = n;
    switch (n->k) {
    case K_OBJECT:
    case K_ARRAY:
    case K_STRING:
        f->stage = OPEN;
        break;
    case K_NUMBER:
    case K_INTEGER:
        f->stage = NUM;
        f->sub = JLEX_START;
        break;
    case K_ENUM:
        f->stage = LIT;
        f->alts = n->n == 64 ? ~0ull : (1ull << n->n) - 1;
        break;
    }
    return true;
}

/* The value on top is complete: pop it and move its parent on. */
static void finish(schema_guide *g)
{
    g->depth--;
    if (g->depth == 0) return;
    schema_frame *p = &g->f[g->depth - 1];
    const node *pn = node_of(p);
    if (pn->k == K_OBJECT) {
        p->index++;
        p->stage = p->index == pn->n ? CLOSE : SEP;
    } else {
        p->stage = AFTER;
    }
}

static outcome number(schema_guide *g, schema_frame *f, unsigned char c, bool integer)
{
    jlex_result r = jlex_number(&f->sub, c, integer);
    if (r != JLEX_ENDED) return r == JLEX_ACCEPT ? ACCEPT : REJECT;
    finish(g); /* c follows the number */
    return AGAIN;
}

static outcome literal(schema_guide *g, schema_frame *f, unsigned char c)
{
    const node *n = node_of(f);
    uint64_t next = 0;
    bool complete = false; /* an alternative ends before c */
    for (int a = 0; a < n->n; a++) {
        if (!((f->alts >> a) & 1u)) continue;
        if (n->lens[a] == f->pos)
            complete = true;
        else if ((unsigned char)n->lits[a][f->pos] == c)
            next |= 1ull << a;
    }
    if (!next) {
        if (!complete) return REJECT;
        finish(g);
        return AGAIN;
    }
    f->alts = next;
    f->pos++;
    bool all_complete = true; /* nothing can grow: the value ends here */
    for (int a = 0; a < n->n; a++)
        if ((next >> a) & 1u) all_complete &= n->lens[a] == f->pos;
    if (all_complete) finish(g);
    return ACCEPT;
}

static outcome step(schema_guide *g, unsigned char c)
{
    if (g->depth == 0) return REJECT;
    schema_frame *f = &g->f[g->depth - 1];
    const node *n = node_of(f);
    switch (n->k) {
    case K_OBJECT:
        switch (f->stage) {
        case OPEN:
            if (c != '{') return REJECT;
            f->stage = n->n ? KEY : CLOSE;
            f->pos = 0;
            return ACCEPT;
        case SEP:
            if (c != ',') return REJECT;
            f->stage = KEY;
            f->pos = 0;
            return ACCEPT;
        case KEY:
            if ((unsigned char)n->lits[f->index][f->pos] != c) return REJECT;
            if (++f->pos == n->lens[f->index]) {
                f->stage = VALUE;
                return push(g, n->kids[f->index]) ? ACCEPT : REJECT;
            }
            return ACCEPT;
        case CLOSE:
            if (c != '}') return REJECT;
            finish(g);
            return ACCEPT;
        default:
            return REJECT;
        }
    case K_ARRAY:
        switch (f->stage) {
        case OPEN:
            if (c != '[') return REJECT;
            f->stage = FIRST;
            return ACCEPT;
        case FIRST:
        case AFTER:
            if (c == ']') {
                finish(g);
                return ACCEPT;
            }
            if (f->stage == AFTER) {
                if (c != ',') return REJECT;
                f->stage = VALUE;
                return push(g, n->kids[0]) ? ACCEPT : REJECT;
            }
            f->stage = VALUE;
            return push(g, n->kids[0]) ? AGAIN : REJECT; /* c starts the first item */
        default:
            return REJECT;
        }
    case K_STRING:
        switch (f->stage) {
        case OPEN:
            if (c != '"') return REJECT;
            f->stage = IN;
            f->sub = JLEX_IN;
            return ACCEPT;
        case IN:
            switch (jlex_string(&f->sub, c)) {
            case JLEX_ENDED:
                finish(g);
                return ACCEPT;
            case JLEX_ACCEPT:
                return ACCEPT;
            default:
                return REJECT;
            }
        default:
            return REJECT;
        }
    case K_NUMBER:
    case K_INTEGER:
        return number(g, f, c, n->k == K_INTEGER);
    case K_ENUM:
        return literal(g, f, c);
    }
    return REJECT;
}

void schema_guide_init(schema_guide *g, const schema *s)
{
    g->s = s;
    g->depth = 0;
    g->started = false;
}

void schema_guide_copy(schema_guide *dst, const schema_guide *src)
{
    dst->s = src->s;
    dst->depth = src->depth;
    dst->started = src->started;
    memcpy(dst->f, src->f, (size_t)src->depth * sizeof src->f[0]);
}

bool schema_guide_feed(schema_guide *g, const char *bytes, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (!g->started) {
            g->started = true;
            push(g, g->s->root);
        }
        outcome o;
        while ((o = step(g, (unsigned char)bytes[i])) == AGAIN) {
        }
        if (o == REJECT) return false;
    }
    return true;
}

bool schema_guide_done(const schema_guide *g)
{
    return g->started && g->depth == 0;
}

/* ---- the shortest completion ---------------------------------------------------------------- */

typedef struct text {
    char *p;
    size_t len, cap;
    bool overflow;
} text;

static void put(text *t, const char *s, size_t n)
{
    if (t->len + n + 1 > t->cap) {
        t->overflow = true;
        return;
    }
    memcpy(t->p + t->len, s, n);
    t->len += n;
}

static int shortest_alt(const node *n, uint64_t alts)
{
    int best = -1;
    for (int a = 0; a < n->n; a++)
        if (((alts >> a) & 1u) && (best < 0 || n->lens[a] < n->lens[best])) best = a;
    return best;
}

static void shortest(text *t, const node *n)
{
    switch (n->k) {
    case K_OBJECT:
        put(t, "{", 1);
        for (int i = 0; i < n->n; i++) {
            if (i) put(t, ",", 1);
            put(t, n->lits[i], n->lens[i]);
            shortest(t, n->kids[i]);
        }
        put(t, "}", 1);
        break;
    case K_ARRAY:
        put(t, "[]", 2);
        break;
    case K_STRING:
        put(t, "\"\"", 2);
        break;
    case K_NUMBER:
    case K_INTEGER:
        put(t, "0", 1);
        break;
    case K_ENUM: {
        int a = shortest_alt(n, n->n == 64 ? ~0ull : (1ull << n->n) - 1);
        put(t, n->lits[a], n->lens[a]);
        break;
    }
    }
}

/* The rest of an object after property i's value. */
static void rest_of_object(text *t, const node *n, int from)
{
    for (int i = from; i < n->n; i++) {
        put(t, ",", 1);
        put(t, n->lits[i], n->lens[i]);
        shortest(t, n->kids[i]);
    }
    put(t, "}", 1);
}

int schema_guide_closing(const schema_guide *g, char *out, size_t size)
{
    text t = {out, 0, size, false};
    if (!g->started) shortest(&t, g->s->root);
    for (int d = g->depth - 1; d >= 0; d--) {
        const schema_frame *f = &g->f[d];
        const node *n = node_of(f);
        switch (n->k) {
        case K_OBJECT:
            if (f->stage == OPEN) {
                shortest(&t, n);
            } else if (f->stage == KEY) {
                put(&t, n->lits[f->index] + f->pos, n->lens[f->index] - f->pos);
                shortest(&t, n->kids[f->index]);
                rest_of_object(&t, n, f->index + 1);
            } else if (f->stage == VALUE) { /* the value above is being completed */
                rest_of_object(&t, n, f->index + 1);
            } else if (f->stage == SEP) {
                rest_of_object(&t, n, f->index);
            } else {
                put(&t, "}", 1);
            }
            break;
        case K_ARRAY:
            put(&t, f->stage == OPEN ? "[]" : "]", f->stage == OPEN ? 2 : 1);
            break;
        case K_STRING:
            if (f->stage == OPEN) {
                put(&t, "\"\"", 2);
            } else {
                const char *close = jlex_string_close(f->sub);
                put(&t, close, strlen(close));
            }
            break;
        case K_NUMBER:
        case K_INTEGER:
            if (jlex_number_open(f->sub)) put(&t, "0", 1);
            break;
        case K_ENUM: {
            int a = shortest_alt(n, f->alts);
            put(&t, n->lits[a] + f->pos, n->lens[a] - f->pos);
            break;
        }
        }
    }
    if (t.overflow) return -1;
    out[t.len] = 0;
    return (int)t.len;
}
