/*
 * A byte-at-a-time JSON recogniser: a state, a one-bit-per-level stack of open containers, and
 * the little a number, a literal or an escape needs to remember.  Numbers end only at the byte
 * after them, which is then read again in the state after a value.
 */
#include "sampling/json_guide.h"

#include <string.h>

enum {
    S_START,     /* before the top-level '{' */
    S_OBJ_FIRST, /* after '{': a key or '}' */
    S_OBJ_KEY,   /* after ',' in an object: a key */
    S_COLON,     /* after a key */
    S_VALUE,     /* a value is due */
    S_ARR_FIRST, /* after '[': a value or ']' */
    S_AFTER,     /* after a value: ',' or the container's closer */
    S_STR,
    S_ESC,
    S_HEX,
    S_NUM,
    S_LIT,
    S_DONE,
};

/* number sub-states; the ones marked "end" may stop before any byte */
enum {
    N_MINUS,
    N_ZERO /* end */,
    N_INT /* end */,
    N_DOT,
    N_FRAC /* end */,
    N_E,
    N_ESIGN,
    N_EXP /* end */
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

static bool is_digit(unsigned char c)
{
    return c >= '0' && c <= '9';
}

/* The first byte of a value. */
static bool start_value(json_guide *g, unsigned char c)
{
    switch (c) {
    case '"':
        g->state = S_STR;
        g->key = false;
        return true;
    case '{':
        return push(g, true);
    case '[':
        return push(g, false);
    case '-':
        g->state = S_NUM;
        g->aux = N_MINUS;
        return true;
    case 't':
    case 'f':
    case 'n':
        g->state = S_LIT;
        g->lit = c == 't' ? 0 : c == 'f' ? 1 : 2;
        g->aux = 1;
        return true;
    default:
        if (!is_digit(c)) return false;
        g->state = S_NUM;
        g->aux = c == '0' ? N_ZERO : N_INT;
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
    switch (g->aux) {
    case N_MINUS:
        if (!is_digit(c)) return false;
        g->aux = c == '0' ? N_ZERO : N_INT;
        return true;
    case N_ZERO:
    case N_INT:
        if (g->aux == N_INT && is_digit(c)) return true;
        if (c == '.') {
            g->aux = N_DOT;
            return true;
        }
        if (c == 'e' || c == 'E') {
            g->aux = N_E;
            return true;
        }
        break;
    case N_DOT:
        if (!is_digit(c)) return false;
        g->aux = N_FRAC;
        return true;
    case N_FRAC:
        if (is_digit(c)) return true;
        if (c == 'e' || c == 'E') {
            g->aux = N_E;
            return true;
        }
        break;
    case N_E:
        if (c == '+' || c == '-') {
            g->aux = N_ESIGN;
            return true;
        }
        __attribute__((fallthrough)); /* a digit */
    case N_ESIGN:
        if (!is_digit(c)) return false;
        g->aux = N_EXP;
        return true;
    case N_EXP:
        if (is_digit(c)) return true;
        break;
    }
    /* the number ended before c: c belongs to what follows a value */
    g->state = S_AFTER;
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
        if (c == '"') {
            g->state = g->key ? S_COLON : S_AFTER;
            return true;
        }
        if (c == '\\') {
            g->state = S_ESC;
            return true;
        }
        return c >= 0x20;
    case S_ESC:
        if (c == 'u') {
            g->state = S_HEX;
            g->aux = 4;
            return true;
        }
        if (!strchr("\"\\/bfnrt", c) || !c) return false;
        g->state = S_STR;
        return true;
    case S_HEX:
        if (!is_digit(c) && !((c | 0x20) >= 'a' && (c | 0x20) <= 'f')) return false;
        if (--g->aux == 0) g->state = S_STR;
        return true;
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
    case S_STR:
    case S_ESC:
    case S_HEX:
        if (g->state == S_ESC) buf[n++] = 'n';
        for (int i = 0; g->state == S_HEX && i < g->aux; i++)
            buf[n++] = '0';
        buf[n++] = '"';
        if (g->key) {
            memcpy(buf + n, ":0", 2);
            n += 2;
        }
        break;
    case S_NUM:
        if (g->aux == N_MINUS || g->aux == N_DOT || g->aux == N_E || g->aux == N_ESIGN)
            buf[n++] = '0';
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
