/*
 * A strict JSON (RFC 8259) syntax check that says where the first error is.
 *
 * cJSON reports a parse failure at a position that is sometimes one token late and accepts a
 * few things JSON does not ("01", "1."), so a config file is checked here first: the error
 * points at the first character that cannot continue a JSON text, the way Python's json module
 * counts (a number ends where its grammar ends, so "1." fails at the "." in the container that
 * expected ',' after the number).  Only when this passes does cJSON build the tree.
 */
#include "config/config_int.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#define MAX_DEPTH 64

typedef struct scan {
    const char *s;
    size_t len, pos;
    char *msg;
    size_t msg_size;
} scan;

static int fail(scan *sc, size_t pos, const char *msg)
{
    sc->pos = pos;
    snprintf(sc->msg, sc->msg_size, "%s", msg);
    return -EINVAL;
}

static int peek(const scan *sc)
{
    return sc->pos < sc->len ? (unsigned char)sc->s[sc->pos] : -1;
}

static void skip_ws(scan *sc)
{
    while (sc->pos < sc->len && strchr(" \t\n\r", sc->s[sc->pos]) && sc->s[sc->pos])
        sc->pos++;
}

static bool is_digit(int ch)
{
    return ch >= '0' && ch <= '9';
}

static bool is_hex(int ch)
{
    return is_digit(ch) || (ch >= 'a' && ch <= 'f') || (ch >= 'A' && ch <= 'F');
}

static int scan_string(scan *sc)
{
    const size_t start = sc->pos++; /* the opening quote */
    for (;;) {
        int ch = peek(sc);
        if (ch < 0) return fail(sc, start, "unterminated string starting here");
        if (ch == '"') {
            sc->pos++;
            return 0;
        }
        if (ch < 0x20)
            return fail(sc, sc->pos, "control character in a string (write \\n, \\t, ...)");
        if (ch != '\\') {
            sc->pos++;
            continue;
        }
        const size_t backslash = sc->pos++;
        ch = peek(sc);
        if (ch >= 0 && strchr("\"\\/bfnrt", ch) && ch) {
            sc->pos++;
        } else if (ch == 'u') {
            sc->pos++;
            for (int i = 0; i < 4; i++, sc->pos++)
                if (!is_hex(peek(sc))) /* at the 'u', as Python's json says it */
                    return fail(sc, backslash + 1, "invalid \\uXXXX escape");
        } else {
            return fail(sc, backslash, "invalid escape in a string");
        }
    }
}

/* -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][-+]?[0-9]+)?, ending where the grammar ends. */
static int scan_number(scan *sc)
{
    const size_t start = sc->pos;
    if (peek(sc) == '-') sc->pos++;
    if (peek(sc) == '0')
        sc->pos++;
    else if (is_digit(peek(sc)))
        while (is_digit(peek(sc)))
            sc->pos++;
    else
        return fail(sc, start, "expected a value");
    if (peek(sc) == '.' && sc->pos + 1 < sc->len && is_digit((unsigned char)sc->s[sc->pos + 1])) {
        sc->pos++;
        while (is_digit(peek(sc)))
            sc->pos++;
    }
    if (peek(sc) == 'e' || peek(sc) == 'E') {
        size_t p = sc->pos + 1;
        if (p < sc->len && (sc->s[p] == '+' || sc->s[p] == '-')) p++;
        if (p < sc->len && is_digit((unsigned char)sc->s[p])) {
            sc->pos = p;
            while (is_digit(peek(sc)))
                sc->pos++;
        }
    }
    return 0;
}

static int scan_value(scan *sc, int depth);

static int scan_container(scan *sc, int depth, bool object)
{
    if (depth >= MAX_DEPTH) return fail(sc, sc->pos, "nested too deeply");
    const char close = object ? '}' : ']';
    sc->pos++;
    skip_ws(sc);
    if (peek(sc) == close) {
        sc->pos++;
        return 0;
    }
    for (;;) {
        if (object) {
            if (peek(sc) != '"')
                return fail(sc, sc->pos, "expected a property name in double quotes");
            if (scan_string(sc)) return -EINVAL;
            skip_ws(sc);
            if (peek(sc) != ':') return fail(sc, sc->pos, "expected ':'");
            sc->pos++;
        }
        if (scan_value(sc, depth + 1)) return -EINVAL;
        skip_ws(sc);
        if (peek(sc) == close) {
            sc->pos++;
            return 0;
        }
        if (peek(sc) != ',')
            return fail(sc, sc->pos, object ? "expected ',' or '}'" : "expected ',' or ']'");
        sc->pos++;
        skip_ws(sc);
    }
}

static int scan_value(scan *sc, int depth)
{
    skip_ws(sc);
    int ch = peek(sc);
    if (ch == '{' || ch == '[') return scan_container(sc, depth, ch == '{');
    if (ch == '"') return scan_string(sc);
    if (ch == '-' || is_digit(ch)) return scan_number(sc);
    static const char *const literals[] = {"true", "false", "null"};
    for (int i = 0; i < 3; i++) {
        size_t n = strlen(literals[i]);
        if (sc->len - sc->pos >= n && !memcmp(sc->s + sc->pos, literals[i], n)) {
            sc->pos += n;
            return 0;
        }
    }
    return fail(sc, sc->pos, "expected a value");
}

int cfg__json_check(const char *text, size_t len, size_t *pos, char *msg, size_t msg_size)
{
    scan sc = {.s = text, .len = len, .msg = msg, .msg_size = msg_size};
    int rc = scan_value(&sc, 0);
    if (!rc) {
        skip_ws(&sc);
        if (sc.pos < len) rc = fail(&sc, sc.pos, "extra data after the JSON value");
    }
    *pos = sc.pos;
    return rc;
}
