/*
 * Compiling a JSON Schema into the graph of nodes the guide follows (json_schema.c).
 *
 * A $ref is compiled once per target, so a recursive schema is a cyclic graph; what keeps the
 * guide finite is the depth limit.  Each node knows, for every number of frames b, the length of
 * its shortest value that fits in b frames (len[b]); a value is begun only where it fits, so from
 * any state the closing text exists, and it is written from the same table.
 */
#include "sampling/json_schema_internal.h"

#include <assert.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
