/*
 * The JSON lexemes both guides read byte by byte (json_guide.c, json_schema.c): numbers and the
 * inside of strings, as RFC 8259 defines them.  Internal to sampling/.
 */
#ifndef MOE_SAMPLING_JSON_LEX_H
#define MOE_SAMPLING_JSON_LEX_H

#include <stdbool.h>
#include <stdint.h>
#include <string.h>

/* Number states; a number may end (the next byte belongs to what follows) in ZERO, INT, FRAC
 * and EXP.  START is before the first byte. */
enum {
    JLEX_START,
    JLEX_MINUS,
    JLEX_ZERO,
    JLEX_INT,
    JLEX_DOT,
    JLEX_FRAC,
    JLEX_E,
    JLEX_ESIGN,
    JLEX_EXP
};

typedef enum {
    JLEX_REJECT = 0,
    JLEX_ACCEPT = 1,
    JLEX_ENDED = 2 /* the lexeme ended before c */
} jlex_result;

static inline bool jlex_digit(unsigned char c)
{
    return c >= '0' && c <= '9';
}

/* One byte of a number in state *st (integer: no fraction, no exponent). */
static inline jlex_result jlex_number(uint8_t *st, unsigned char c, bool integer)
{
    switch (*st) {
    case JLEX_START:
        if (c == '-') {
            *st = JLEX_MINUS;
            return JLEX_ACCEPT;
        }
        __attribute__((fallthrough));
    case JLEX_MINUS:
        if (!jlex_digit(c)) return JLEX_REJECT;
        *st = c == '0' ? JLEX_ZERO : JLEX_INT;
        return JLEX_ACCEPT;
    case JLEX_INT:
        if (jlex_digit(c)) return JLEX_ACCEPT;
        __attribute__((fallthrough));
    case JLEX_ZERO:
    case JLEX_FRAC:
        if (*st == JLEX_FRAC && jlex_digit(c)) return JLEX_ACCEPT;
        if (!integer && c == '.' && *st != JLEX_FRAC) {
            *st = JLEX_DOT;
            return JLEX_ACCEPT;
        }
        if (!integer && (c == 'e' || c == 'E')) {
            *st = JLEX_E;
            return JLEX_ACCEPT;
        }
        return JLEX_ENDED;
    case JLEX_DOT:
        if (!jlex_digit(c)) return JLEX_REJECT;
        *st = JLEX_FRAC;
        return JLEX_ACCEPT;
    case JLEX_E:
        if (c == '+' || c == '-') {
            *st = JLEX_ESIGN;
            return JLEX_ACCEPT;
        }
        __attribute__((fallthrough));
    case JLEX_ESIGN:
        if (!jlex_digit(c)) return JLEX_REJECT;
        *st = JLEX_EXP;
        return JLEX_ACCEPT;
    default: /* JLEX_EXP */
        return jlex_digit(c) ? JLEX_ACCEPT : JLEX_ENDED;
    }
}

/* Whether a number in state st needs one more digit to be complete. */
static inline bool jlex_number_open(uint8_t st)
{
    return st == JLEX_START || st == JLEX_MINUS || st == JLEX_DOT || st == JLEX_E ||
           st == JLEX_ESIGN;
}

/* String states after the opening quote: IN, after a backslash ESC, in \u's hex digits HEX1..4
 * (the digits still due). */
enum { JLEX_IN = 0, JLEX_ESC = 5, JLEX_HEX1 = 1 };

/* One byte inside a string; JLEX_ENDED for the closing quote (consumed). */
static inline jlex_result jlex_string(uint8_t *st, unsigned char c)
{
    if (*st == JLEX_IN) {
        if (c == '"') return JLEX_ENDED;
        if (c == '\\') *st = JLEX_ESC;
        return c >= 0x20 ? JLEX_ACCEPT : JLEX_REJECT;
    }
    if (*st == JLEX_ESC) {
        if (c == 'u') {
            *st = 4;
            return JLEX_ACCEPT;
        }
        if (!c || !strchr("\"\\/bfnrt", c)) return JLEX_REJECT;
        *st = JLEX_IN;
        return JLEX_ACCEPT;
    }
    if (!jlex_digit(c) && !((c | 0x20) >= 'a' && (c | 0x20) <= 'f')) return JLEX_REJECT;
    (*st)--; /* HEX4 .. HEX1, then IN */
    return JLEX_ACCEPT;
}

/* The shortest text that closes a string in state st, with its quote. */
static inline const char *jlex_string_close(uint8_t st)
{
    static const char *const closers[6] = {"\"", "0\"", "00\"", "000\"", "0000\"", "n\""};
    return closers[st];
}

#endif
