/*
 * A byte-at-a-time JSON recogniser: a state, a one-bit-per-level stack of open containers, and
 * the little a number, a literal or an escape needs to remember.  Numbers end only at the byte
 * after them, which is then read again in the state after a value.
 */
#include "sampling/json_guide.h"
#include "sampling/json_lex.h"

#include <string.h>

enum {
    S_START,     /* before the top-level '{' */
    S_OBJ_FIRST, /* after '{': a key or '}' */
    S_OBJ_KEY,   /* after ',' in an object: a key */
    S_COLON,     /* after a key */
    S_VALUE,     /* a value is due */
    S_ARR_FIRST, /* after '[': a value or ']' */
    S_AFTER,     /* after a value: ',' or the container's closer */
    S_STR,       /* aux: the string's lexer state (json_lex.h) */
    S_NUM,       /* aux: the number's */
    S_LIT,
    S_DONE,
};

static const char *const literals[3] = {"true", "false", "null"};

void json_guide_init(json_guide *g)
{
    memset(g, 0, sizeof *g);
    g->state = S_START;
}

bool json_guide_done(const json_guide *g)
{
    return g->state == S_DONE;
}

static bool top_is_object(const json_guide *g)
{
    return (g->objects >> (g->depth - 1)) & 1u;
}

static bool push(json_guide *g, bool object)
{
    if (g->depth >= JSON_GUIDE_MAX_DEPTH) return false;
    if (object)
        g->objects |= 1ull << g->depth;
    else
        g->objects &= ~(1ull << g->depth);
    g->depth++;
    g->state = object ? S_OBJ_FIRST : S_ARR_FIRST;
    return true;
}

static void pop(json_guide *g)
{
    g->depth--;
    g->state = g->depth ? S_AFTER : S_DONE;
}

/* The first byte of a value. */
static bool start_value(json_guide *g, unsigned char c)
{
    switch (c) {
    case '"':
        g->state = S_STR;
        g->aux = JLEX_IN;
        g->key = false;
        return true;
    case '{':
        return push(g, true);
    case '[':
        return push(g, false);
    case '-':
        g->state = S_NUM;
        g->aux = JLEX_MINUS;
        return true;
    case 't':
    case 'f':
    case 'n':
        g->state = S_LIT;
        g->lit = c == 't' ? 0 : c == 'f' ? 1 : 2;
        g->aux = 1;
        return true;
    default:
        if (!jlex_digit(c)) return false;
        g->state = S_NUM;
        g->aux = c == '0' ? JLEX_ZERO : JLEX_INT;
        return true;
    }
}

static bool after_value(json_guide *g, unsigned char c)
{
    if (c == ',') {
        g->state = top_is_object(g) ? S_OBJ_KEY : S_VALUE;
        return true;
    }
    if (c == (top_is_object(g) ? '}' : ']')) {
        pop(g);
        return true;
    }
    return false;
}

static bool number(json_guide *g, unsigned char c)
{
    jlex_result r = jlex_number(&g->aux, c, false);
    if (r != JLEX_ENDED) return r == JLEX_ACCEPT;
    g->state = S_AFTER; /* the number ended before c: c belongs to what follows a value */
    return after_value(g, c);
}

static bool step(json_guide *g, unsigned char c)
{
    switch (g->state) {
    case S_START:
        return c == '{' && push(g, true);
    case S_OBJ_FIRST:
        if (c == '}') {
            pop(g);
            return true;
        }
        __attribute__((fallthrough));
    case S_OBJ_KEY:
        if (c != '"') return false;
        g->state = S_STR;
        g->aux = JLEX_IN;
        g->key = true;
        return true;
    case S_COLON:
        if (c != ':') return false;
        g->state = S_VALUE;
        return true;
    case S_ARR_FIRST:
        if (c == ']') {
            pop(g);
            return true;
        }
        __attribute__((fallthrough));
    case S_VALUE:
        return start_value(g, c);
    case S_AFTER:
        return after_value(g, c);
    case S_STR:
        switch (jlex_string(&g->aux, c)) {
        case JLEX_ENDED:
            g->state = g->key ? S_COLON : S_AFTER;
            return true;
        case JLEX_ACCEPT:
            return true;
        default:
            return false;
        }
    case S_NUM:
        return number(g, c);
    case S_LIT:
        if ((unsigned char)literals[g->lit][g->aux] != c) return false;
        if (literals[g->lit][++g->aux] == 0) g->state = S_AFTER;
        return true;
    default: /* S_DONE */
        return false;
    }
}

bool json_guide_feed(json_guide *g, const char *bytes, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!step(g, (unsigned char)bytes[i])) return false;
    return true;
}

int json_guide_closing(const json_guide *g, char *out, size_t size)
{
    char buf[16 + JSON_GUIDE_MAX_DEPTH];
    size_t n = 0;
    switch (g->state) {
    case S_START:
        memcpy(buf, "{}", 2);
        n = 2;
        break;
    case S_STR: {
        const char *close = jlex_string_close(g->aux);
        n = strlen(close);
        memcpy(buf, close, n);
        if (g->key) {
            memcpy(buf + n, ":0", 2);
            n += 2;
        }
        break;
    }
    case S_NUM:
        if (jlex_number_open(g->aux)) buf[n++] = '0';
        break;
    case S_LIT:
        for (const char *p = literals[g->lit] + g->aux; *p; p++)
            buf[n++] = *p;
        break;
    case S_COLON:
        memcpy(buf, ":0", 2);
        n = 2;
        break;
    case S_VALUE:
        buf[n++] = '0';
        break;
    case S_OBJ_KEY:
        memcpy(buf, "\"\":0", 4);
        n = 4;
        break;
    default: /* S_OBJ_FIRST, S_ARR_FIRST, S_AFTER: only closers; S_DONE: nothing */
        break;
    }
    if (g->state != S_START)
        for (int d = g->depth - 1; d >= 0; d--)
            buf[n++] = (g->objects >> d) & 1u ? '}' : ']';
    if (n + 1 > size) return -1;
    memcpy(out, buf, n);
    out[n] = 0;
    return (int)n;
}
