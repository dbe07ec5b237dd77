/*
 * The schema as a graph of nodes, and a guide that keeps a few stacks of frames (one frame per
 * value being written, one stack per alternative still alive).  Every fixed piece of text — an
 * object's keys with their colons, an enum's alternatives — is a literal the guide matches byte
 * by byte against the alternatives still possible; strings and numbers are lexed as JSON defines
 * them.  A number, or an enum whose alternative may still grow, ends only at the byte after it,
 * which is then read again by the frame below.
 *
 * A $ref is compiled once per target, so a recursive schema is a cyclic graph; what keeps the
 * guide finite is the depth limit.  Each node knows, for every number of frames b, the length of
 * its shortest value that fits in b frames (len[b]); a value is begun only where it fits, so from
 * any state the closing text exists, and it is written from the same table.
 *
 * anyOf is resolved lazily: its frame stays a CHOICE until the next byte, which forks the stack
 * into the alternatives that can begin with that byte.  Stacks that meet again (the alternatives
 * ended alike) are merged, so an array of anyOf items does not double its stacks per item.
 */
#include "sampling/json_schema.h"
#include "sampling/json_lex.h"

#include <assert.h>
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
    K_ANY,  /* anyOf, oneOf, a list of types */
    K_REF,  /* a $ref until compiling ends; the guide never sees one */
} kind;

#define NO_LEN UINT32_MAX /* no value fits */
#define NO_MAX UINT32_MAX
/* how deep the schema's own JSON (through $refs) may nest: the compiler recurses on it */
enum { COMPILE_MAX_NESTING = 64 };

typedef struct node {
    kind k;
    int n;       /* object: properties; enum: alternatives; anyOf: alternatives as written */
    char **lits; /* object: `"key":` per property; enum: each alternative's JSON text */
    size_t *lens;
    struct node **kids;            /* object: property values; array: kids[0], the items; anyOf: the
                                      alternatives; $ref: kids[0], the target */
    char *path;                    /* for messages */
    uint64_t required;             /* object: a bit per required property */
    uint32_t min_count, max_count; /* string: code points; array: items */
    bool one_of;
    uint8_t visiting; /* flatten's walk: 1 on the way, 2 done */
    int n_leaves;     /* anyOf: the alternatives, nested anyOfs flattened */
    struct node *leaves[SCHEMA_MAX_STACKS];
    uint64_t first[4];                   /* the bytes a value can begin with */
    uint32_t len[SCHEMA_MAX_DEPTH + 1];  /* shortest value within b frames */
    uint64_t fits[SCHEMA_MAX_DEPTH + 1]; /* object: properties whose value fits in b frames */
} node;

struct schema {
    node *root;
    node **all; /* every node, for freeing */
    int n_all, cap_all;
};

/* ---- compiling ----------------------------------------------------------------------------- */

typedef struct compiler {
    schema *s;
    const cJSON *doc; /* what "#" refers to */
    char *err;
    size_t err_size;
    struct memo {
        char *ref;
        node *shell;
    } * refs;
    int n_refs, cap_refs;
} compiler;

static char *dup_str(const char *s)
{
    size_t len = strlen(s);
    char *d = malloc(len + 1);
    if (d) memcpy(d, s, len + 1);
    return d;
}

static node *new_node(compiler *c, kind k, const char *path)
{
    schema *s = c->s;
    if (s->n_all == s->cap_all) {
        int cap = s->cap_all ? 2 * s->cap_all : 16;
        node **grown = realloc(s->all, (size_t)cap * sizeof *grown);
        if (!grown) return NULL;
        s->all = grown;
        s->cap_all = cap;
    }
    node *n = calloc(1, sizeof *n);
    if (!n) return NULL;
    if (!(n->path = dup_str(path))) {
        free(n);
        return NULL;
    }
    n->k = k;
    n->max_count = NO_MAX;
    s->all[s->n_all++] = n;
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

static int fail(compiler *c, const char *path, const char *what)
{
    snprintf(c->err, c->err_size, "json_schema %s: %s", *path ? path : "(root)", what);
    return -EINVAL;
}

static int compile_node(compiler *c, const cJSON *j, const char *path, int depth, node **out);

static int compile_enum(compiler *c, const cJSON *values, const char *path, node **out)
{
    node *n = new_node(c, K_ENUM, path);
    if (!n) return -ENOMEM;
    const cJSON *v;
    cJSON_ArrayForEach(v, values)
    {
        if (cJSON_IsObject(v) || cJSON_IsArray(v))
            return fail(c, path, "enum/const values must be strings, numbers, booleans or null");
        if (n->n == SCHEMA_MAX_ALTS) return fail(c, path, "more than 64 enum values");
        if (add_lit(n, cJSON_PrintUnformatted(v))) return -ENOMEM;
        if (n->lens[n->n - 1] > UINT16_MAX) return fail(c, path, "an enum value over 64 KiB");
    }
    if (n->n == 0) return fail(c, path, "an empty enum accepts nothing");
    *out = n;
    return 0;
}

/* The keywords of one schema object, as read. */
typedef struct keywords {
    const cJSON *type, *props, *required, *items, *en, *cn, *any, *one, *ref;
    const cJSON *min_len, *max_len, *min_items, *max_items;
    int n_constraints; /* keywords other than annotations and $defs */
} keywords;

static const char *const ignored_keywords[] = {"title",    "description", "$schema",  "default",
                                               "examples", "strict",      "$comment", "$id",
                                               "$defs",    "definitions", NULL};

static int read_keywords(compiler *c, const cJSON *j, const char *path, keywords *kw)
{
    memset(kw, 0, sizeof *kw);
    static const struct {
        const char *name;
        size_t offset;
    } table[] = {
        {"type", offsetof(keywords, type)},
        {"properties", offsetof(keywords, props)},
        {"required", offsetof(keywords, required)},
        {"items", offsetof(keywords, items)},
        {"enum", offsetof(keywords, en)},
        {"const", offsetof(keywords, cn)},
        {"anyOf", offsetof(keywords, any)},
        {"oneOf", offsetof(keywords, one)},
        {"$ref", offsetof(keywords, ref)},
        {"minLength", offsetof(keywords, min_len)},
        {"maxLength", offsetof(keywords, max_len)},
        {"minItems", offsetof(keywords, min_items)},
        {"maxItems", offsetof(keywords, max_items)},
    };
    const cJSON *k;
    cJSON_ArrayForEach(k, j)
    {
        const char *name = k->string;
        bool known = false;
        for (size_t i = 0; i < sizeof table / sizeof table[0] && !known; i++) {
            if (strcmp(name, table[i].name)) continue;
            *(const cJSON **)((char *)kw + table[i].offset) = k;
            kw->n_constraints++;
            known = true;
        }
        if (!strcmp(name, "additionalProperties")) {
            known = cJSON_IsFalse(k);
            kw->n_constraints++;
        }
        for (int i = 0; ignored_keywords[i] && !known; i++)
            known = !strcmp(name, ignored_keywords[i]);
        if (!known) {
            char what[160];
            snprintf(what, sizeof what, "the keyword '%.60s' is not supported%s", name,
                     !strcmp(name, "additionalProperties") ? " (only false)" : "");
            return fail(c, path, what);
        }
    }
    return 0;
}

/* A count keyword (minLength, maxItems, ...): a whole number from 0 to 2^32 - 2. */
static int read_count(compiler *c, const cJSON *v, const char *path, uint32_t *out)
{
    if (!v) return 0;
    double d = cJSON_IsNumber(v) ? v->valuedouble : -1;
    if (!(d >= 0 && d < (double)NO_MAX) || d != (double)(uint32_t)d) {
        char what[120];
        snprintf(what, sizeof what, "%.40s must be a whole number from 0 to 4294967294", v->string);
        return fail(c, path, what);
    }
    *out = (uint32_t)d;
    return 0;
}

static int read_counts(compiler *c, const cJSON *lo, const cJSON *hi, const char *path, node *n)
{
    int rc = read_count(c, lo, path, &n->min_count);
    if (rc == 0) rc = read_count(c, hi, path, &n->max_count);
    if (rc == 0 && n->min_count > n->max_count) {
        char what[120];
        snprintf(what, sizeof what, "%s is above %s: nothing fits", lo->string, hi->string);
        rc = fail(c, path, what);
    }
    return rc;
}

static int compile_object(compiler *c, const keywords *kw, const char *path, int depth, node *n)
{
    const cJSON *props = kw->props, *p, *r;
    if (props && !cJSON_IsObject(props)) return fail(c, path, "properties must be an object");
    int count = cJSON_GetArraySize(props);
    if (count > SCHEMA_MAX_ALTS) return fail(c, path, "more than 64 properties");
    n->kids = calloc((size_t)(count ? count : 1), sizeof *n->kids);
    if (!n->kids) return -ENOMEM;
    cJSON_ArrayForEach(p, props)
    {
        for (int i = 0; i < n->n; i++)
            if (!strcmp(cJSON_GetArrayItem(props, i)->string, p->string))
                return fail(c, path, "a property declared twice");
        cJSON *key = cJSON_CreateString(p->string);
        char *key_json = key ? cJSON_PrintUnformatted(key) : NULL;
        cJSON_Delete(key);
        char *lit = key_json ? malloc(strlen(key_json) + 2) : NULL;
        if (lit) sprintf(lit, "%s:", key_json);
        free(key_json);
        int i = n->n;
        if (add_lit(n, lit)) return -ENOMEM;
        if (n->lens[i] > UINT16_MAX) return fail(c, path, "a property name over 64 KiB");
        char sub[256];
        snprintf(sub, sizeof sub, "%s/properties/%.80s", path, p->string);
        int rc = compile_node(c, p, sub, depth + 1, &n->kids[i]);
        if (rc) return rc;
    }
    /* No property but the declared ones is written, so "required" may name only those. */
    if (kw->required && !cJSON_IsArray(kw->required))
        return fail(c, path, "required must be an array");
    cJSON_ArrayForEach(r, kw->required)
    {
        int found = -1;
        for (int i = 0; i < n->n && cJSON_IsString(r) && found < 0; i++)
            if (!strcmp(cJSON_GetArrayItem(props, i)->string, r->valuestring)) found = i;
        if (found < 0) return fail(c, path, "required names a property it does not declare");
        n->required |= 1ull << found;
    }
    return 0;
}

/* One node of type t, from the keywords that apply to it (JSON Schema ignores the others). */
static int compile_typed(compiler *c, const keywords *kw, const char *t, const char *path,
                         int depth, node **out)
{
    static const struct {
        const char *name;
        kind k;
    } types[] = {{"object", K_OBJECT}, {"array", K_ARRAY},     {"string", K_STRING},
                 {"number", K_NUMBER}, {"integer", K_INTEGER}, {"boolean", K_ENUM},
                 {"null", K_ENUM}};
    int ti = -1;
    for (int i = 0; i < (int)(sizeof types / sizeof types[0]) && ti < 0; i++)
        if (!strcmp(t, types[i].name)) ti = i;
    if (ti < 0) {
        char what[120];
        snprintf(what, sizeof what,
                 "type '%.40s' is not one of object, array, string, number, integer, boolean, "
                 "null",
                 t);
        return fail(c, path, what);
    }
    node *n = new_node(c, types[ti].k, path);
    if (!n) return -ENOMEM;
    *out = n;
    int rc = 0;
    switch (n->k) {
    case K_ENUM:
        rc = add_lit(n, dup_str(!strcmp(t, "null") ? "null" : "true"));
        if (rc == 0 && !strcmp(t, "boolean")) rc = add_lit(n, dup_str("false"));
        return rc;
    case K_STRING:
        return read_counts(c, kw->min_len, kw->max_len, path, n);
    case K_ARRAY: {
        if (!kw->items) return fail(c, path, "an array needs \"items\"");
        if ((rc = read_counts(c, kw->min_items, kw->max_items, path, n))) return rc;
        if (!(n->kids = calloc(1, sizeof *n->kids))) return -ENOMEM;
        char sub[256];
        snprintf(sub, sizeof sub, "%s/items", path);
        return compile_node(c, kw->items, sub, depth + 1, &n->kids[0]);
    }
    case K_OBJECT:
        return compile_object(c, kw, path, depth, n);
    default:
        return 0;
    }
}

static node *new_any(compiler *c, const char *path, int count)
{
    node *n = new_node(c, K_ANY, path);
    if (n && !(n->kids = calloc((size_t)(count ? count : 1), sizeof *n->kids))) return NULL;
    if (n) n->n = count;
    return n;
}

static int compile_any(compiler *c, const cJSON *alts, bool one_of, const char *path, int depth,
                       node **out)
{
    const char *word = one_of ? "oneOf" : "anyOf";
    char what[80];
    if (!cJSON_IsArray(alts) || cJSON_GetArraySize(alts) == 0) {
        snprintf(what, sizeof what, "%s must be a non-empty array", word);
        return fail(c, path, what);
    }
    node *n = new_any(c, path, cJSON_GetArraySize(alts));
    if (!n) return -ENOMEM;
    n->one_of = one_of;
    *out = n;
    int i = 0;
    const cJSON *a;
    cJSON_ArrayForEach(a, alts)
    {
        char sub[256];
        snprintf(sub, sizeof sub, "%s/%s/%d", path, word, i);
        int rc = compile_node(c, a, sub, depth + 1, &n->kids[i++]);
        if (rc) return rc;
    }
    return 0;
}

/* "#", "#/$defs/NAME" or "#/definitions/NAME" (NAME with JSON Pointer's ~0 and ~1). */
static const cJSON *resolve_ref(const cJSON *doc, const char *ref)
{
    if (!strcmp(ref, "#")) return doc;
    const char *name = NULL;
    const cJSON *defs = NULL;
    if (!strncmp(ref, "#/$defs/", 8)) {
        name = ref + 8;
        defs = cJSON_GetObjectItemCaseSensitive(doc, "$defs");
    } else if (!strncmp(ref, "#/definitions/", 14)) {
        name = ref + 14;
        defs = cJSON_GetObjectItemCaseSensitive(doc, "definitions");
    }
    if (!name || !cJSON_IsObject(defs) || strchr(name, '/')) return NULL;
    char key[256];
    size_t k = 0;
    for (; *name && k + 1 < sizeof key; name++) {
        if (*name == '~' && (name[1] == '0' || name[1] == '1')) {
            key[k++] = name[1] == '0' ? '~' : '/';
            name++;
        } else {
            key[k++] = *name;
        }
    }
    if (*name) return NULL;
    key[k] = 0;
    return cJSON_GetObjectItemCaseSensitive(defs, key);
}

/* The node a $ref stands for: compiled once per target, so recursion closes on itself. */
static int compile_ref(compiler *c, const char *ref, const char *path, int depth, node **out)
{
    for (int i = 0; i < c->n_refs; i++) {
        if (!strcmp(c->refs[i].ref, ref)) {
            *out = c->refs[i].shell;
            return 0;
        }
    }
    const cJSON *target = resolve_ref(c->doc, ref);
    if (!target) {
        char what[200];
        snprintf(what, sizeof what,
                 "'$ref' '%.80s' is not '#', '#/$defs/NAME' or '#/definitions/NAME' of this "
                 "schema",
                 ref);
        return fail(c, path, what);
    }
    if (c->n_refs == c->cap_refs) {
        int cap = c->cap_refs ? 2 * c->cap_refs : 8;
        struct memo *grown = realloc(c->refs, (size_t)cap * sizeof *grown);
        if (!grown) return -ENOMEM;
        c->refs = grown;
        c->cap_refs = cap;
    }
    node *shell = new_node(c, K_REF, ref + 1);
    char *key = dup_str(ref);
    if (!shell || !key || !(shell->kids = calloc(1, sizeof *shell->kids))) {
        free(key);
        return -ENOMEM;
    }
    c->refs[c->n_refs++] = (struct memo){key, shell};
    *out = shell;
    return compile_node(c, target, ref + 1, depth + 1, &shell->kids[0]);
}

static int compile_node(compiler *c, const cJSON *j, const char *path, int depth, node **out)
{
    if (!cJSON_IsObject(j)) return fail(c, path, "a schema must be an object");
    if (depth >= COMPILE_MAX_NESTING) return fail(c, path, "nested too deep");
    keywords kw;
    int rc = read_keywords(c, j, path, &kw);
    if (rc) return rc;
    if (kw.ref || kw.any || kw.one) {
        const char *word = kw.ref ? "$ref" : kw.any ? "anyOf" : "oneOf";
        if (kw.n_constraints > 1) {
            char what[120];
            snprintf(what, sizeof what, "'%s' beside other keywords is not supported", word);
            return fail(c, path, what);
        }
        if (!kw.ref) return compile_any(c, kw.any ? kw.any : kw.one, !kw.any, path, depth, out);
        if (!cJSON_IsString(kw.ref)) return fail(c, path, "'$ref' must be a string");
        return compile_ref(c, kw.ref->valuestring, path, depth, out);
    }
    if (kw.cn) {
        cJSON *one = cJSON_CreateArray();
        cJSON *copy = one ? cJSON_Duplicate(kw.cn, true) : NULL;
        if (!copy || !cJSON_AddItemToArray(one, copy)) {
            cJSON_Delete(copy);
            cJSON_Delete(one);
            return -ENOMEM;
        }
        rc = compile_enum(c, one, path, out);
        cJSON_Delete(one);
        return rc;
    }
    if (kw.en) {
        if (!cJSON_IsArray(kw.en)) return fail(c, path, "enum must be an array");
        return compile_enum(c, kw.en, path, out);
    }
    if (cJSON_IsString(kw.type))
        return compile_typed(c, &kw, kw.type->valuestring, path, depth, out);
    if (!cJSON_IsArray(kw.type) || cJSON_GetArraySize(kw.type) == 0)
        return fail(c, path,
                    "needs a \"type\" (or a list of them), an enum, a const, anyOf or $ref");
    /* a list of types is anyOf over them */
    node *n = new_any(c, path, cJSON_GetArraySize(kw.type));
    if (!n) return -ENOMEM;
    *out = n;
    int i = 0;
    const cJSON *t;
    cJSON_ArrayForEach(t, kw.type)
    {
        if (!cJSON_IsString(t)) return fail(c, path, "a list of types must hold strings");
        if ((rc = compile_typed(c, &kw, t->valuestring, path, depth, &n->kids[i++]))) return rc;
    }
    return 0;
}

/* ---- after compiling: $refs resolved, anyOfs flattened, first bytes and lengths ----------- */

static node *deref(node *n, int limit)
{
    while (n->k == K_REF && limit-- > 0)
        n = n->kids[0];
    return n->k == K_REF ? NULL : n;
}

static int add_leaf(compiler *c, node *n, node *leaf)
{
    for (int i = 0; i < n->n_leaves; i++)
        if (n->leaves[i] == leaf) return 0;
    if (n->n_leaves == SCHEMA_MAX_STACKS)
        return fail(c, n->path, "more than 8 alternatives in an anyOf (nested ones counted)");
    n->leaves[n->n_leaves++] = leaf;
    return 0;
}

static int flatten(compiler *c, node *n)
{
    if (n->visiting == 2) return 0;
    if (n->visiting == 1)
        return fail(c, n->path, "an anyOf that contains itself with no object or array between");
    n->visiting = 1;
    for (int i = 0; i < n->n; i++) {
        node *kid = n->kids[i];
        int rc = 0;
        if (kid->k != K_ANY) {
            rc = add_leaf(c, n, kid);
        } else if ((rc = flatten(c, kid)) == 0) {
            for (int l = 0; l < kid->n_leaves && rc == 0; l++)
                rc = add_leaf(c, n, kid->leaves[l]);
        }
        if (rc) return rc;
    }
    n->visiting = 2;
    return 0;
}

static void add_first(node *n, unsigned char b)
{
    n->first[b >> 6] |= 1ull << (b & 63);
}

static bool has_first(const node *n, unsigned char b)
{
    return (n->first[b >> 6] >> (b & 63)) & 1u;
}

static void first_bytes(node *n)
{
    switch (n->k) {
    case K_OBJECT:
        add_first(n, '{');
        break;
    case K_ARRAY:
        add_first(n, '[');
        break;
    case K_STRING:
        add_first(n, '"');
        break;
    case K_NUMBER:
    case K_INTEGER:
        add_first(n, '-');
        for (int d = '0'; d <= '9'; d++)
            add_first(n, (unsigned char)d);
        break;
    case K_ENUM:
        for (int a = 0; a < n->n; a++)
            add_first(n, (unsigned char)n->lits[a][0]);
        break;
    case K_ANY:
        for (int l = 0; l < n->n_leaves; l++)
            for (int w = 0; w < 4; w++)
                n->first[w] |= n->leaves[l]->first[w];
        break;
    case K_REF:
        break;
    }
}

/* oneOf is anyOf when no value can match two alternatives: here, when none begin alike. */
static int check_one_of(compiler *c, const node *n)
{
    for (int i = 0; i < n->n; i++)
        for (int k = i + 1; k < n->n; k++)
            for (int w = 0; w < 4; w++)
                if (n->kids[i]->first[w] & n->kids[k]->first[w])
                    return fail(c, n->path,
                                "oneOf whose alternatives can begin alike (a value could match "
                                "two) is not supported; anyOf is");
    return 0;
}

static uint32_t sum_len(uint64_t total)
{
    return total >= NO_LEN ? NO_LEN : (uint32_t)total;
}

/* The shortest value of a node other than anyOf within b >= 1 frames, from the lengths at b - 1. */
static uint32_t value_len(const node *n, int b)
{
    switch (n->k) {
    case K_OBJECT: {
        uint64_t total = 2;
        for (int i = 0; i < n->n; i++) {
            if (!((n->required >> i) & 1u)) continue;
            uint32_t kid = n->kids[i]->len[b - 1];
            if (kid == NO_LEN) return NO_LEN;
            total += (total > 2) + n->lens[i] + kid;
        }
        return sum_len(total);
    }
    case K_ARRAY: {
        if (n->min_count == 0) return 2;
        uint32_t item = n->kids[0]->len[b - 1];
        if (item == NO_LEN) return NO_LEN;
        return sum_len(2 + (uint64_t)n->min_count * (item + 1ull) - 1);
    }
    case K_STRING:
        return sum_len(2ull + n->min_count);
    case K_NUMBER:
    case K_INTEGER:
        return 1;
    case K_ENUM: {
        size_t best = n->lens[0];
        for (int a = 1; a < n->n; a++)
            if (n->lens[a] < best) best = n->lens[a];
        return (uint32_t)best;
    }
    default:
        return NO_LEN;
    }
}

static void lengths(schema *s)
{
    for (int i = 0; i < s->n_all; i++)
        s->all[i]->len[0] = NO_LEN;
    for (int b = 1; b <= SCHEMA_MAX_DEPTH; b++) {
        for (int i = 0; i < s->n_all; i++)
            if (s->all[i]->k != K_ANY) s->all[i]->len[b] = value_len(s->all[i], b);
        for (int i = 0; i < s->n_all; i++) {
            node *n = s->all[i];
            if (n->k != K_ANY) continue;
            n->len[b] = NO_LEN;
            for (int l = 0; l < n->n_leaves; l++)
                if (n->leaves[l]->len[b] < n->len[b]) n->len[b] = n->leaves[l]->len[b];
        }
    }
    for (int i = 0; i < s->n_all; i++) {
        node *n = s->all[i];
        if (n->k != K_OBJECT) continue;
        for (int b = 0; b <= SCHEMA_MAX_DEPTH; b++)
            for (int p = 0; p < n->n; p++)
                if (n->kids[p]->len[b] != NO_LEN) n->fits[b] |= 1ull << p;
    }
}

static bool all_objects(const node *n)
{
    if (n->k != K_ANY) return n->k == K_OBJECT;
    for (int l = 0; l < n->n_leaves; l++)
        if (n->leaves[l]->k != K_OBJECT) return false;
    return true;
}

static int finish_compile(compiler *c)
{
    schema *s = c->s;
    int limit = s->n_all;
    for (int i = 0; i < s->n_all; i++) {
        node *n = s->all[i];
        if (n->k == K_REF) continue;
        int n_kids = n->k == K_OBJECT || n->k == K_ANY ? n->n : n->k == K_ARRAY ? 1 : 0;
        for (int k = 0; k < n_kids; k++)
            if (!(n->kids[k] = deref(n->kids[k], limit)))
                return fail(c, n->path, "a '$ref' that refers only to itself");
    }
    if (!(s->root = deref(s->root, limit)))
        return fail(c, "", "a '$ref' that refers only to itself");
    for (int i = 0; i < s->n_all; i++) {
        int rc = s->all[i]->k == K_ANY ? flatten(c, s->all[i]) : 0;
        if (rc) return rc;
    }
    for (int i = 0; i < s->n_all; i++)
        if (s->all[i]->k != K_ANY) first_bytes(s->all[i]);
    for (int i = 0; i < s->n_all; i++)
        if (s->all[i]->k == K_ANY) first_bytes(s->all[i]);
    for (int i = 0; i < s->n_all; i++) {
        int rc = s->all[i]->one_of ? check_one_of(c, s->all[i]) : 0;
        if (rc) return rc;
    }
    lengths(s);
    if (!all_objects(s->root))
        return fail(c, "", "the top level must be an object (as OpenAI requires)");
    if (s->root->len[SCHEMA_MAX_DEPTH] == NO_LEN)
        return fail(c, "",
                    "no value fits in 32 levels of nesting (a required property or minItems "
                    "recurses)");
    return 0;
}

void schema_free(schema **sp)
{
    schema *s = *sp;
    if (!s) return;
    for (int i = 0; i < s->n_all; i++) {
        node *n = s->all[i];
        for (int k = 0; n->lits && k < n->n; k++)
            free(n->lits[k]);
        free(n->lits);
        free(n->lens);
        free(n->kids);
        free(n->path);
        free(n);
    }
    free(s->all);
    free(s);
    *sp = NULL;
}

int schema_compile(schema **out, const cJSON *json, char *err, size_t err_size)
{
    *out = NULL;
    compiler c = {.s = calloc(1, sizeof(schema)), .doc = json, .err = err, .err_size = err_size};
    int rc = c.s ? compile_ref(&c, "#", "", 0, &c.s->root) : -ENOMEM;
    if (rc == 0) rc = finish_compile(&c);
    for (int i = 0; i < c.n_refs; i++)
        free(c.refs[i].ref);
    free(c.refs);
    if (rc) {
        if (rc == -ENOMEM) snprintf(err, err_size, "out of memory");
        schema_free(&c.s);
        return rc;
    }
    *out = c.s;
    return 0;
}

/* ---- the guide ----------------------------------------------------------------------------- */

/* frame stages; strings and numbers keep their lexer state (json_lex.h) in `sub` */
enum { OPEN, FIRST, KEY, VALUE, AFTER, IN, NUM, LIT, CHOICE };

/* A string's surrogate flags (in `pos`): the \u escape being read began with d (D), and is a
 * high surrogate (HIGH); a high surrogate was written and its low half must follow (LOW_DUE).
 * Lone halves are refused: many parsers (cJSON among them) reject them. */
enum { S_D = 1, S_HIGH = 2, S_LOW_DUE = 4 };

/* PLAIN: accepted, and the frame on top is inside a string with no escape under way, so a run
 * of plain bytes may follow (string_run). */
typedef enum { REJECT, ACCEPT, AGAIN, PLAIN } outcome;

static void init_frame(schema_frame *f, const node *n)
{
    memset(f, 0, sizeof *f);
    f->node = n;
    switch (n->k) {
    case K_NUMBER:
    case K_INTEGER:
        f->stage = NUM;
        f->sub = JLEX_START;
        break;
    case K_ENUM:
        f->stage = LIT;
        f->alts = n->n == 64 ? ~0ull : (1ull << n->n) - 1;
        break;
    case K_ANY:
        f->stage = CHOICE;
        break;
    default:
        f->stage = OPEN;
    }
}

/* A value begins on stack si only where its shortest completion fits in the frames left. */
static bool push(schema_guide *g, int si, const node *n)
{
    int d = g->depth[si];
    if (d >= SCHEMA_MAX_DEPTH || n->len[SCHEMA_MAX_DEPTH - d] == NO_LEN) return false;
    init_frame(&g->f[si][d], n);
    g->depth[si] = (uint8_t)(d + 1);
    return true;
}

/* The value on top is complete: pop it and move its parent on. */
static void finish(schema_guide *g, int si)
{
    int d = --g->depth[si];
    g->popped = true;
    if (d == 0) return;
    schema_frame *p = &g->f[si][d - 1];
    if (((const node *)p->node)->k == K_ARRAY) p->count++;
    p->stage = AFTER;
}

static uint64_t bits_from(int i)
{
    return i >= 64 ? 0 : ~0ull << i;
}

/* The keys that may come next: the remaining properties up to the next required one, of those
 * whose value fits in kid_budget frames. */
static uint64_t key_choices(const node *n, int from, int kid_budget)
{
    uint64_t rest = bits_from(from) & (n->n == 64 ? ~0ull : (1ull << n->n) - 1);
    uint64_t req = n->required & rest;
    uint64_t upto = req ? (req & -req) : 0;
    if (upto) rest &= (upto << 1) - 1;
    return rest & n->fits[kid_budget];
}

static outcome object_byte(schema_guide *g, int si, schema_frame *f, unsigned char c)
{
    const node *n = f->node;
    int kid_budget = SCHEMA_MAX_DEPTH - g->depth[si];
    switch (f->stage) {
    case OPEN:
        if (c != '{') return REJECT;
        f->stage = FIRST;
        return ACCEPT;
    case FIRST:
    case AFTER: {
        if (c == '}') {
            if (n->required & bits_from((int)f->count)) return REJECT;
            finish(g, si);
            return ACCEPT;
        }
        uint64_t keys = key_choices(n, (int)f->count, kid_budget);
        if (!keys || (f->stage == AFTER && c != ',')) return REJECT;
        bool first = f->stage == FIRST;
        f->stage = KEY;
        f->alts = keys;
        f->pos = 0;
        return first ? AGAIN : ACCEPT; /* after `{`, c begins the key */
    }
    case KEY: {
        uint64_t next = 0, done = 0;
        for (uint64_t a = f->alts; a; a &= a - 1) {
            int i = __builtin_ctzll(a);
            if ((unsigned char)n->lits[i][f->pos] != c) continue;
            next |= 1ull << i;
            if (n->lens[i] == f->pos + 1u) done = 1ull << i;
        }
        if (!next) return REJECT;
        f->pos++;
        f->alts = next;
        if (!done) return ACCEPT;
        assert(done == next); /* no key is a prefix of another: each ends in `":` */
        int i = __builtin_ctzll(done);
        f->count = (uint32_t)i + 1;
        f->stage = VALUE;
        f->alts = 0;
        f->pos = 0;
        return push(g, si, n->kids[i]) ? ACCEPT : REJECT;
    }
    default:
        return REJECT;
    }
}

static outcome array_byte(schema_guide *g, int si, schema_frame *f, unsigned char c)
{
    const node *n = f->node;
    switch (f->stage) {
    case OPEN:
        if (c != '[') return REJECT;
        f->stage = FIRST;
        return ACCEPT;
    case FIRST:
    case AFTER:
        if (c == ']') {
            if (f->count < n->min_count) return REJECT;
            finish(g, si);
            return ACCEPT;
        }
        if (f->count >= n->max_count || (f->stage == AFTER && c != ',')) return REJECT;
        bool first = f->stage == FIRST;
        f->stage = VALUE;
        if (!push(g, si, n->kids[0])) return REJECT;
        return first ? AGAIN : ACCEPT; /* after `[`, c begins the first item */
    default:
        return REJECT;
    }
}

static bool hex_digit(unsigned char c)
{
    return jlex_digit(c) || ((c | 0x20) >= 'a' && (c | 0x20) <= 'f');
}

/* One byte inside a string: JSON's lexeme, code points counted (an escape is one, a surrogate
 * pair one), lone surrogate halves refused. */
static outcome string_byte(schema_guide *g, int si, schema_frame *f, unsigned char c)
{
    const node *n = f->node;
    unsigned lc = c | 0x20;
    if (f->sub == JLEX_IN) {
        if (f->pos & S_LOW_DUE) {
            if (c != '\\') return REJECT;
            f->sub = JLEX_ESC;
            return ACCEPT;
        }
        if (c == '"') {
            if (f->count < n->min_count) return REJECT;
            finish(g, si);
            return ACCEPT;
        }
        if (c < 0x20) return REJECT;
        if (c >= 0x80) { /* a multi-byte character begins: valid UTF-8 only */
            uint8_t st = jlex_utf8_lead(c);
            if (st == JLEX_IN || f->count >= n->max_count) return REJECT;
            f->count++;
            f->sub = st;
            return ACCEPT;
        }
        if (f->count >= n->max_count) return REJECT;
        f->count++;
        if (c != '\\') return PLAIN;
        f->sub = JLEX_ESC;
        return ACCEPT;
    }
    if (f->sub >= JLEX_U1) {
        if (!jlex_utf8_cont(&f->sub, c)) return REJECT;
        return f->sub == JLEX_IN ? PLAIN : ACCEPT;
    }
    if (f->sub == JLEX_ESC) {
        if ((f->pos & S_LOW_DUE) && c != 'u') return REJECT;
        return jlex_string(&f->sub, c) == JLEX_ACCEPT ? ACCEPT : REJECT;
    }
    if (!hex_digit(c)) return REJECT;
    if (f->sub == 4) { /* the first of four digits */
        if (lc == 'd')
            f->pos |= S_D;
        else if (f->pos & S_LOW_DUE)
            return REJECT;
    } else if (f->sub == 3 && (f->pos & S_D)) {
        bool high = lc >= '8' && lc <= 'b', low = lc >= 'c' && lc <= 'f';
        if ((f->pos & S_LOW_DUE) ? !low : low) return REJECT;
        if (high) f->pos |= S_HIGH;
    }
    if (--f->sub == JLEX_IN) {
        f->pos = f->pos & S_LOW_DUE ? 0 : f->pos & S_HIGH ? S_LOW_DUE : 0;
    }
    return ACCEPT;
}

static outcome string_value(schema_guide *g, int si, schema_frame *f, unsigned char c)
{
    if (f->stage == IN) return string_byte(g, si, f, c);
    if (c != '"') return REJECT;
    f->stage = IN;
    f->sub = JLEX_IN;
    return PLAIN;
}

static outcome number(schema_guide *g, int si, schema_frame *f, unsigned char c, bool integer)
{
    jlex_result r = jlex_number(&f->sub, c, integer);
    if (r != JLEX_ENDED) return r == JLEX_ACCEPT ? ACCEPT : REJECT;
    finish(g, si); /* c follows the number */
    return AGAIN;
}

static outcome literal(schema_guide *g, int si, schema_frame *f, unsigned char c)
{
    const node *n = f->node;
    uint64_t next = 0;
    bool complete = false; /* an alternative ends before c */
    for (uint64_t alts = f->alts; alts; alts &= alts - 1) {
        int a = __builtin_ctzll(alts);
        if (n->lens[a] == f->pos)
            complete = true;
        else if ((unsigned char)n->lits[a][f->pos] == c)
            next |= 1ull << a;
    }
    if (!next) {
        if (!complete) return REJECT;
        finish(g, si);
        return AGAIN;
    }
    f->alts = next;
    f->pos++;
    bool all_complete = true; /* nothing can grow: the value ends here */
    for (uint64_t alts = next; alts; alts &= alts - 1)
        all_complete &= n->lens[__builtin_ctzll(alts)] == f->pos;
    if (all_complete) finish(g, si);
    return ACCEPT;
}

/* A loop, not memcpy: stacks are a few frames deep, and for short copies of unknown length
 * compilers emit `rep movs`, whose start-up costs more than the copy (this runs once per
 * vocabulary token). */
static void copy_frames(schema_frame *dst, const schema_frame *src, int n)
{
    for (int d = 0; d < n; d++)
        dst[d] = src[d];
}

/* An anyOf meets its first byte: the stack goes on as one alternative that can begin with it,
 * and a copy of it per other such alternative joins the stacks (they read c after this one). */
static outcome choose(schema_guide *g, int si, schema_frame *f, unsigned char c)
{
    const node *n = f->node;
    int d = g->depth[si], budget = SCHEMA_MAX_DEPTH - (d - 1);
    const node *mine = NULL;
    for (int l = 0; l < n->n_leaves; l++) {
        const node *leaf = n->leaves[l];
        if (!has_first(leaf, c) || leaf->len[budget] == NO_LEN) continue;
        if (!mine) {
            mine = leaf;
            continue;
        }
        if (g->n_stacks == SCHEMA_MAX_STACKS) {
            g->overflow = true;
            return REJECT;
        }
        int ni = g->n_stacks++;
        copy_frames(g->f[ni], g->f[si], d);
        g->depth[ni] = (uint8_t)d;
        init_frame(&g->f[ni][d - 1], leaf);
    }
    if (!mine) return REJECT;
    init_frame(f, mine);
    return AGAIN;
}

/* Inlined into both callers: a call per byte costs about what reading the byte does, and this
 * runs for every vocabulary token's bytes. */
static inline __attribute__((always_inline)) outcome step(schema_guide *g, int si, unsigned char c)
{
    if (g->depth[si] == 0) return REJECT;
    schema_frame *f = &g->f[si][g->depth[si] - 1];
    const node *n = f->node;
    switch (n->k) {
    case K_OBJECT:
        return object_byte(g, si, f, c);
    case K_ARRAY:
        return array_byte(g, si, f, c);
    case K_STRING:
        return string_value(g, si, f, c);
    case K_NUMBER:
    case K_INTEGER:
        return number(g, si, f, c, n->k == K_INTEGER);
    case K_ENUM:
        return literal(g, si, f, c);
    case K_ANY:
        return choose(g, si, f, c);
    case K_REF:
        break;
    }
    return REJECT;
}

static void drop(schema_guide *g, int si)
{
    int last = --g->n_stacks;
    if (si == last) return;
    g->depth[si] = g->depth[last];
    copy_frames(g->f[si], g->f[last], g->depth[last]);
}

/* Stacks in the same state have the same future: keep one. */
static void merge(schema_guide *g)
{
    for (int i = 0; i < g->n_stacks; i++)
        for (int k = g->n_stacks - 1; k > i; k--)
            if (g->depth[i] == g->depth[k] &&
                !memcmp(g->f[i], g->f[k], (size_t)g->depth[i] * sizeof g->f[0][0]))
                drop(g, k);
}

/* Stacks from si on read c.  Stacks are kept packed: a dead one takes the last one's place,
 * which (like every stack after the current one, forks included) has not read c yet. */
static bool advance(schema_guide *g, unsigned char c, int si)
{
    while (si < g->n_stacks) {
        outcome o;
        while ((o = step(g, si, c)) == AGAIN) {
        }
        if (o != REJECT)
            si++;
        else
            drop(g, si);
    }
    if (g->overflow) {
        g->overflow = false;
        return false;
    }
    /* stacks part at a CHOICE on different alternatives, so they meet again only by popping */
    if (g->popped) {
        g->popped = false;
        if (g->n_stacks > 1) merge(g);
    }
    return g->n_stacks > 0;
}

void schema_guide_init(schema_guide *g, const schema *s)
{
    g->s = s;
    g->started = false;
    g->overflow = false;
    g->popped = false;
    g->n_stacks = 0;
}

void schema_guide_copy(schema_guide *dst, const schema_guide *src)
{
    dst->s = src->s;
    dst->started = src->started;
    dst->overflow = false;
    dst->popped = false;
    dst->n_stacks = src->n_stacks;
    for (int i = 0; i < src->n_stacks; i++) {
        dst->depth[i] = src->depth[i];
        copy_frames(dst->f[i], src->f[i], src->depth[i]);
    }
}

/* Plain bytes inside a string, the bulk of most answers, read in one loop while a single stack
 * is alive and its top is a string that step() left PLAIN; any other byte is left to step(). */
static size_t string_run(schema_guide *g, const unsigned char *p, size_t n)
{
    schema_frame *f = &g->f[0][g->depth[0] - 1];
    uint32_t count = f->count, max_count = ((const node *)f->node)->max_count;
    size_t i = 0;
    for (; i < n; i++) {
        unsigned char c = p[i];
        /* ASCII only: a multi-byte character goes through string_byte's UTF-8 check */
        if (c < 0x20 || c == '"' || c == '\\' || c >= 0x80 || count == max_count) break;
        count++;
    }
    f->count = count;
    return i;
}

bool schema_guide_feed(schema_guide *g, const char *bytes, size_t n)
{
    const unsigned char *p = (const unsigned char *)bytes;
    for (size_t i = 0; i < n;) {
        if (!g->started) {
            g->started = true;
            g->n_stacks = 1;
            g->depth[0] = 0;
            push(g, 0, g->s->root); /* fits: compiling checked */
        }
        unsigned char c = p[i++];
        int from = 0;
        if (g->n_stacks == 1) { /* the common case, without advance()'s bookkeeping */
            outcome o;
            while ((o = step(g, 0, c)) == AGAIN) {
            }
            if (g->n_stacks == 1) {
                if (o == REJECT) return false;
                if (o == PLAIN) i += string_run(g, p + i, n - i);
                continue;
            }
            /* c forked the stack: the copies still have to read it */
            if (o == REJECT)
                drop(g, 0);
            else
                from = 1;
        }
        if (!advance(g, c, from)) return false;
    }
    return true;
}

bool schema_guide_done(const schema_guide *g)
{
    for (int i = 0; g->started && i < g->n_stacks; i++)
        if (g->depth[i] == 0) return true;
    return false;
}

/* ---- the shortest completion ---------------------------------------------------------------- */

/* The text being written; without p, only measured.  Stops at the first piece that does not fit
 * so that a huge minItems costs no more than the buffer. */
typedef struct text {
    char *p;
    size_t len, cap;
    bool overflow;
} text;

static void put(text *t, const char *s, size_t n)
{
    if (t->overflow || t->len + n + 1 > t->cap) {
        t->overflow = true;
        return;
    }
    if (t->p) memcpy(t->p + t->len, s, n);
    t->len += n;
}

static int shortest_alt(const node *n, uint64_t alts)
{
    int best = -1;
    for (; alts; alts &= alts - 1) {
        int a = __builtin_ctzll(alts);
        if (best < 0 || n->lens[a] < n->lens[best]) best = a;
    }
    return best;
}

static void shortest(text *t, const node *n, int budget);

/* The required properties from `from` on, each `,"key":value`, then `}`. */
static void rest_of_object(text *t, const node *n, int from, int kid_budget, bool comma)
{
    for (int i = from; i < n->n && !t->overflow; i++) {
        if (!((n->required >> i) & 1u)) continue;
        if (comma) put(t, ",", 1);
        comma = true;
        put(t, n->lits[i], n->lens[i]);
        shortest(t, n->kids[i], kid_budget);
    }
    put(t, "}", 1);
}

/* Items from the have-th up to minItems, then `]`. */
static void rest_of_array(text *t, const node *n, uint32_t have, int kid_budget, bool comma)
{
    for (uint32_t k = have; k < n->min_count && !t->overflow; k++) {
        if (comma) put(t, ",", 1);
        comma = true;
        shortest(t, n->kids[0], kid_budget);
    }
    put(t, "]", 1);
}

static void pad_string(text *t, uint32_t count, uint32_t min_count)
{
    for (; count < min_count && !t->overflow; count++)
        put(t, "a", 1);
    put(t, "\"", 1);
}

static void shortest(text *t, const node *n, int budget)
{
    assert(n->len[budget] != NO_LEN);
    switch (n->k) {
    case K_OBJECT:
        put(t, "{", 1);
        rest_of_object(t, n, 0, budget - 1, false);
        break;
    case K_ARRAY:
        put(t, "[", 1);
        rest_of_array(t, n, 0, budget - 1, false);
        break;
    case K_STRING:
        put(t, "\"", 1);
        pad_string(t, 0, n->min_count);
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
    case K_ANY: {
        const node *best = n->leaves[0];
        for (int l = 1; l < n->n_leaves; l++)
            if (n->leaves[l]->len[budget] < best->len[budget]) best = n->leaves[l];
        shortest(t, best, budget);
        break;
    }
    case K_REF:
        break;
    }
}

/* The rest of a string: the escape under way (a \u's digits end in 1, never \u0000, which
 * would cut the string short for C readers; a high surrogate gets its low half), then letters
 * up to minLength, then the quote. */
static void close_string(text *t, const schema_frame *f, const node *n)
{
    static const char zeros[] = "0000";
    unsigned flags = f->pos, due = f->sub;
    if (f->sub >= JLEX_U1) { /* the character under way: its continuation bytes */
        const char *rest = jlex_string_close(f->sub);
        put(t, rest, strlen(rest) - 1);
    } else if (f->sub == JLEX_ESC) {
        put(t, flags & S_LOW_DUE ? "udc00" : "n", flags & S_LOW_DUE ? 5 : 1);
    } else if (f->sub != JLEX_IN) {
        if (flags & S_LOW_DUE) {
            static const char *const low[] = {"", "0", "00", "c00", "dc00"};
            put(t, low[due], due);
        } else if (flags & S_HIGH) {
            put(t, zeros, due);
            put(t, "\\udc00", 6);
        } else {
            put(t, zeros, due - 1);
            put(t, "1", 1);
        }
    } else if (flags & S_LOW_DUE) {
        put(t, "\\udc00", 6);
    }
    pad_string(t, f->count, n->min_count);
}

/* The best key to finish from a partly written one. */
static int best_key(const schema_frame *f, const node *n, int kid_budget)
{
    int best = -1;
    uint64_t best_len = UINT64_MAX;
    for (uint64_t a = f->alts; a; a &= a - 1) {
        int i = __builtin_ctzll(a);
        uint64_t len = n->lens[i] - f->pos + n->kids[i]->len[kid_budget];
        for (int k = i + 1; k < n->n; k++)
            if ((n->required >> k) & 1u) len += 1 + n->lens[k] + n->kids[k]->len[kid_budget];
        if (len < best_len) {
            best = i;
            best_len = len;
        }
    }
    return best;
}

static void close_frame(text *t, const schema_frame *f, int d)
{
    const node *n = f->node;
    int budget = SCHEMA_MAX_DEPTH - d, kid_budget = budget - 1;
    if (f->stage == OPEN || f->stage == CHOICE) {
        shortest(t, n, budget);
        return;
    }
    switch (n->k) {
    case K_OBJECT:
        if (f->stage == KEY) {
            int i = best_key(f, n, kid_budget);
            put(t, n->lits[i] + f->pos, n->lens[i] - f->pos);
            shortest(t, n->kids[i], kid_budget);
            rest_of_object(t, n, i + 1, kid_budget, true);
        } else {
            rest_of_object(t, n, (int)f->count, kid_budget, f->stage != FIRST);
        }
        break;
    case K_ARRAY:
        if (f->stage == VALUE) /* the item above is being completed */
            rest_of_array(t, n, f->count + 1, kid_budget, true);
        else
            rest_of_array(t, n, f->count, kid_budget, f->stage != FIRST);
        break;
    case K_STRING:
        close_string(t, f, n);
        break;
    case K_NUMBER:
    case K_INTEGER:
        if (jlex_number_open(f->sub)) put(t, "0", 1);
        break;
    case K_ENUM: {
        int a = shortest_alt(n, f->alts);
        put(t, n->lits[a] + f->pos, n->lens[a] - f->pos);
        break;
    }
    default:
        break;
    }
}

static void close_stack(text *t, const schema_guide *g, int si)
{
    for (int d = g->depth[si] - 1; d >= 0 && !t->overflow; d--)
        close_frame(t, &g->f[si][d], d);
}

int schema_guide_closing(const schema_guide *g, char *out, size_t size)
{
    text t = {out, 0, size, false};
    if (!g->started) {
        shortest(&t, g->s->root, SCHEMA_MAX_DEPTH);
    } else {
        int best = -1;
        size_t best_len = SIZE_MAX;
        for (int si = 0; si < g->n_stacks; si++) {
            text measure = {NULL, 0, size, false};
            close_stack(&measure, g, si);
            if (!measure.overflow && measure.len < best_len) {
                best = si;
                best_len = measure.len;
            }
        }
        if (best < 0) return -1;
        close_stack(&t, g, best);
    }
    if (t.overflow) return -1;
    out[t.len] = 0;
    return (int)t.len;
}
