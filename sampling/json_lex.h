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
 * (the digits still due), and inside a multi-byte UTF-8 character (U1 .. U3F4: the continuation
 * bytes still due, with the narrower range the second byte has after E0, ED, F0 and F4).  Only
 * valid UTF-8 (RFC 3629: no overlongs, no surrogates, nothing above U+10FFFF) is accepted:
 * invalid bytes would reach the client as U+FFFD, a different text from the one the guide
 * followed. */
enum {
    JLEX_IN = 0,
    JLEX_HEX1 = 1,
    JLEX_ESC = 5,
    JLEX_U1 = 6, /* one continuation byte due */
    JLEX_U2,     /* two */
    JLEX_U2E0,   /* after E0: A0..BF, then one more */
    JLEX_U2ED,   /* after ED: 80..9F, then one more */
    JLEX_U3,     /* three */
    JLEX_U3F0,   /* after F0: 90..BF, then two more */
    JLEX_U3F4,   /* after F4: 80..8F, then two more */
};

/* The state after a UTF-8 lead byte c (>= 0x80), or JLEX_IN when c cannot start a character. */
static inline uint8_t jlex_utf8_lead(unsigned char c)
{
    if (c >= 0xC2 && c <= 0xDF) return JLEX_U1;
    if (c == 0xE0) return JLEX_U2E0;
    if (c == 0xED) return JLEX_U2ED;
    if (c >= 0xE1 && c <= 0xEF) return JLEX_U2;
    if (c == 0xF0) return JLEX_U3F0;
    if (c >= 0xF1 && c <= 0xF3) return JLEX_U3;
    if (c == 0xF4) return JLEX_U3F4;
    return JLEX_IN;
}

/* A continuation byte in UTF-8 state st (U1 .. U3F4): false when c is not one the state allows. */
static inline bool jlex_utf8_cont(uint8_t *st, unsigned char c)
{
    unsigned char lo = 0x80, hi = 0xBF;
    if (*st == JLEX_U2E0) lo = 0xA0;
    if (*st == JLEX_U2ED) hi = 0x9F;
    if (*st == JLEX_U3F0) lo = 0x90;
    if (*st == JLEX_U3F4) hi = 0x8F;
    if (c < lo || c > hi) return false;
    static const uint8_t next[] = {
        [JLEX_U1] = JLEX_IN, [JLEX_U2] = JLEX_U1,   [JLEX_U2E0] = JLEX_U1, [JLEX_U2ED] = JLEX_U1,
        [JLEX_U3] = JLEX_U2, [JLEX_U3F0] = JLEX_U2, [JLEX_U3F4] = JLEX_U2};
    *st = next[*st];
    return true;
}

/* One byte inside a string; JLEX_ENDED for the closing quote (consumed). */
static inline jlex_result jlex_string(uint8_t *st, unsigned char c)
{
    if (*st == JLEX_IN) {
        if (c == '"') return JLEX_ENDED;
        if (c == '\\') *st = JLEX_ESC;
        if (c >= 0x80) {
            *st = jlex_utf8_lead(c);
            return *st != JLEX_IN ? JLEX_ACCEPT : JLEX_REJECT;
        }
        return c >= 0x20 ? JLEX_ACCEPT : JLEX_REJECT;
    }
    if (*st >= JLEX_U1) return jlex_utf8_cont(st, c) ? JLEX_ACCEPT : JLEX_REJECT;
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
    static const char *const closers[] = {"\"",
                                          "0\"",
                                          "00\"",
                                          "000\"",
                                          "0000\"",
                                          "n\"",
                                          "\x80\"",
                                          "\x80\x80\"",
                                          "\xa0\x80\"",
                                          "\x80\x80\"",
                                          "\x80\x80\x80\"",
                                          "\x90\x80\x80\"",
                                          "\x80\x80\x80\""};
    return closers[st];
}

#endif
