/*
 * The guide over a compiled schema (json_schema_compile.c): a few stacks of frames (one frame per
 * value being written, one stack per alternative still alive).  Every fixed piece of text — an
 * object's keys with their colons, an enum's alternatives — is a literal the guide matches byte
 * by byte against the alternatives still possible; strings and numbers are lexed as JSON defines
 * them.  A number, or an enum whose alternative may still grow, ends only at the byte after it,
 * which is then read again by the frame below.
 *
 * anyOf is resolved lazily: its frame stays a CHOICE until the next byte, which forks the stack
 * into the alternatives that can begin with that byte.  Stacks that meet again (the alternatives
 * ended alike) are merged, so an array of anyOf items does not double its stacks per item.
 */
#include "sampling/json_lex.h"
#include "sampling/json_schema_internal.h"

#include <assert.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
