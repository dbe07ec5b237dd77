/*
 * Template lexer: source text to tokens, with jinja2's whitespace rules applied here so that the
 * parser sees text exactly as jinja2 would emit it.
 *
 * jinja2's lexer (lexer.py, tokeniter) is the reference for every rule below: newlines are
 * normalised to "\n" and one trailing newline dropped (keep_trailing_newline off); `{%-`/`{{-`/
 * `{#-` strip all whitespace before the tag, `-%}`/`-}}`/`-#}` all whitespace after;
 * trim_blocks eats the one newline after `%}` and `#}`; lstrip_blocks removes spaces and tabs
 * between a line start and `{%`/`{#` (not `{{`), unless the tag says `+`.  "Line start" is
 * jinja2's: the text holds a newline, or the previous tag's end consumed one.
 */
#include "base/vec.h"
#include "template/template_internal.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- Python's notion of whitespace on UTF-8 ----------------------------------------------- */

/* Length of the whitespace character (str.isspace) starting at s, or 0. */
size_t tpl__space_at(const char *s, size_t n)
{
    unsigned char c = (unsigned char)s[0];
    if (n == 0) return 0;
    if (c == ' ' || (c >= 0x09 && c <= 0x0d) || (c >= 0x1c && c <= 0x1f)) return 1;
    if (c == 0xc2 && n >= 2 && ((unsigned char)s[1] == 0x85 || (unsigned char)s[1] == 0xa0))
        return 2;
    if (n >= 3) {
        unsigned c1 = (unsigned char)s[1], c2 = (unsigned char)s[2];
        if (c == 0xe1 && c1 == 0x9a && c2 == 0x80) return 3; /* U+1680 */
        if (c == 0xe2 && c1 == 0x80 && (c2 <= 0x8a || c2 == 0xa8 || c2 == 0xa9 || c2 == 0xaf))
            return 3;
        if (c == 0xe2 && c1 == 0x81 && c2 == 0x9f) return 3; /* U+205F */
        if (c == 0xe3 && c1 == 0x80 && c2 == 0x80) return 3; /* U+3000 */
    }
    return 0;
}

/* Length of the whitespace character that ends s[0..n), or 0. */
size_t tpl__space_before(const char *s, size_t n)
{
    for (size_t k = 1; k <= 3 && k <= n; k++)
        if (tpl__space_at(s + n - k, k) == k) return k;
    return 0;
}

/* ---- lexer -------------------------------------------------------------------------------- */

typedef struct lexer {
    arena *arena;
    const char *src;
    size_t len, pos;
    int line;
    tpl_tok *toks;
    size_t n, cap;
    char *err;
    size_t err_size;
    jmp_buf fail;
    int rc;
} lexer;

static _Noreturn void lex_fail(lexer *lx, int rc, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int k = snprintf(lx->err, lx->err_size, "line %d: ", lx->line);
    if (k >= 0 && (size_t)k < lx->err_size)
        vsnprintf(lx->err + k, lx->err_size - (size_t)k, fmt, ap);
    va_end(ap);
    lx->rc = rc;
    longjmp(lx->fail, 1);
}

static void *lex_alloc(lexer *lx, size_t size)
{
    void *p = arena_alloc(lx->arena, size);
    if (!p) lex_fail(lx, -ENOMEM, "out of memory");
    return p;
}

static tpl_tok *emit(lexer *lx, tpl_tok_kind kind, const char *s, size_t n)
{
    if (vec_reserve(&lx->toks, &lx->cap, lx->n + 1, sizeof *lx->toks, 256) < 0)
        lex_fail(lx, -ENOMEM, "out of memory");
    tpl_tok *t = &lx->toks[lx->n++];
    memset(t, 0, sizeof *t);
    t->kind = kind;
    t->line = lx->line;
    t->s = s;
    t->n = n;
    return t;
}

static void count_lines(lexer *lx, size_t from, size_t to)
{
    for (size_t i = from; i < to; i++)
        if (lx->src[i] == '\n') lx->line++;
}

/* Skips whitespace from the current position; returns whether the last one was a newline. */
static bool skip_ws(lexer *lx)
{
    bool nl = false;
    size_t k;
    while (lx->pos < lx->len && (k = tpl__space_at(lx->src + lx->pos, lx->len - lx->pos)) > 0) {
        nl = lx->src[lx->pos] == '\n';
        if (nl) lx->line++;
        lx->pos += k;
    }
    return nl;
}

static bool at(const lexer *lx, const char *s)
{
    size_t n = strlen(s);
    return lx->len - lx->pos >= n && memcmp(lx->src + lx->pos, s, n) == 0;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* A string literal, decoded as jinja2 does (Python's unicode-escape on the raw text). */
static void lex_string(lexer *lx)
{
    char quote = lx->src[lx->pos];
    size_t start = ++lx->pos;
    while (lx->pos < lx->len && lx->src[lx->pos] != quote) {
        if (lx->src[lx->pos] == '\\' && lx->pos + 1 < lx->len) lx->pos++;
        lx->pos++;
    }
    if (lx->pos >= lx->len) lex_fail(lx, -EINVAL, "unterminated string");
    size_t end = lx->pos++;
    char *out = lex_alloc(lx, end - start + 1);
    size_t o = 0;
    int start_line = lx->line;
    for (size_t i = start; i < end; i++) {
        char c = lx->src[i];
        if (c == '\n') lx->line++;
        if (c != '\\') {
            out[o++] = c;
            continue;
        }
        char e = lx->src[++i];
        uint32_t cp = 0;
        int digits = 0;
        switch (e) {
        case '\n':
            lx->line++;
            continue; /* line continuation */
        case '\\':
            out[o++] = '\\';
            continue;
        case '\'':
            out[o++] = '\'';
            continue;
        case '"':
            out[o++] = '"';
            continue;
        case 'a':
            out[o++] = '\a';
            continue;
        case 'b':
            out[o++] = '\b';
            continue;
        case 'f':
            out[o++] = '\f';
            continue;
        case 'n':
            out[o++] = '\n';
            continue;
        case 'r':
            out[o++] = '\r';
            continue;
        case 't':
            out[o++] = '\t';
            continue;
        case 'v':
            out[o++] = '\v';
            continue;
        case 'x':
            digits = 2;
            break;
        case 'u':
            digits = 4;
            break;
        case 'U':
            digits = 8;
            break;
        case 'N':
            lex_fail(lx, -ENOTSUP, "unsupported construct: \\N{...} escape in a string literal");
        default:
            if (e >= '0' && e <= '7') {
                int k = 0;
                while (k < 3 && i < end && lx->src[i] >= '0' && lx->src[i] <= '7') {
                    cp = cp * 8 + (uint32_t)(lx->src[i] - '0');
                    i++, k++;
                }
                i--;
                o += utf8_put(out + o, cp);
                continue;
            }
            out[o++] = '\\';
            out[o++] = e;
            continue;
        }
        for (int k = 0; k < digits; k++) {
            int h = i + 1 + (size_t)k < end ? hexval(lx->src[i + 1 + (size_t)k]) : -1;
            if (h < 0) lex_fail(lx, -EINVAL, "truncated \\%c escape in a string literal", e);
            cp = cp * 16 + (uint32_t)h;
        }
        if (cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
            lex_fail(lx, -EINVAL, "escape \\%c outside Unicode in a string literal", e);
        i += (size_t)digits;
        o += utf8_put(out + o, cp); /* \x/\u/\U expand to at most their own length */
    }
    out[o] = 0;
    int end_line = lx->line;
    lx->line = start_line;
    emit(lx, TK_STRING, out, o);
    lx->line = end_line;
}

static bool is_digit(char c)
{
    return c >= '0' && c <= '9';
}

/* Digits with single underscores between them ("1_000"); returns the end. */
static size_t scan_digits(const lexer *lx, size_t p)
{
    while (p < lx->len && (is_digit(lx->src[p]) ||
                           (lx->src[p] == '_' && p + 1 < lx->len && is_digit(lx->src[p + 1]))))
        p++;
    return p;
}

static void lex_number(lexer *lx, bool after_dot)
{
    size_t start = lx->pos, p = scan_digits(lx, lx->pos);
    bool is_float = false;
    if (!after_dot) {
        if (p + 1 < lx->len && lx->src[p] == '.' && is_digit(lx->src[p + 1])) {
            p = scan_digits(lx, p + 1);
            is_float = true;
        }
        if (p < lx->len && (lx->src[p] == 'e' || lx->src[p] == 'E')) {
            size_t q = p + 1;
            if (q < lx->len && (lx->src[q] == '+' || lx->src[q] == '-')) q++;
            if (q < lx->len && is_digit(lx->src[q])) {
                p = scan_digits(lx, q);
                is_float = true;
            }
        }
    }
    char buf[128];
    size_t k = 0;
    for (size_t i = start; i < p && k + 1 < sizeof buf; i++)
        if (lx->src[i] != '_') buf[k++] = lx->src[i];
    buf[k] = 0;
    tpl_tok *t = emit(lx, is_float ? TK_FLOAT : TK_INT, lx->src + start, p - start);
    if (is_float) {
        t->f = strtod(buf, NULL);
    } else {
        errno = 0;
        t->i = strtoll(buf, NULL, 10);
        if (errno)
            lex_fail(lx, -ENOTSUP, "unsupported construct: integer literal %s beyond 64 bits", buf);
    }
    lx->pos = p;
}

static const char *const ops[] = {"//", "**", "==", "!=", "<=", ">=", "+", "-", "*",
                                  "/",  "%",  "~",  "<",  ">",  "=",  "(", ")", "[",
                                  "]",  "{",  "}",  ",",  ".",  ":",  "|", ";"};

/* The inside of a {{ }} or {% %} tag, up to and including its end marker.  Returns whether
 * the end consumed a newline (for lstrip_blocks' notion of a line start). */
static bool lex_tag(lexer *lx, bool is_block)
{
    int depth = 0; /* open brackets: their closers cannot end the tag, as in jinja2 */
    for (;;) {
        skip_ws(lx);
        if (lx->pos >= lx->len)
            lex_fail(lx, -EINVAL, "unexpected end of template inside a %s tag",
                     is_block ? "{% %}" : "{{ }}");
        if (depth == 0) {
            const char *end = is_block ? "%}" : "}}";
            if (at(lx, "-") && lx->len - lx->pos >= 3 &&
                memcmp(lx->src + lx->pos + 1, end, 2) == 0) {
                emit(lx, is_block ? TK_BLOCK_END : TK_VAR_END, NULL, 0);
                lx->pos += 3;
                bool nl = skip_ws(lx);
                return nl;
            }
            if (is_block && at(lx, "+%}")) {
                emit(lx, TK_BLOCK_END, NULL, 0);
                lx->pos += 3;
                return false;
            }
            if (at(lx, end)) {
                emit(lx, is_block ? TK_BLOCK_END : TK_VAR_END, NULL, 0);
                lx->pos += 2;
                if (is_block && at(lx, "\n")) { /* trim_blocks */
                    lx->pos++;
                    lx->line++;
                    return true;
                }
                return false;
            }
        }
        char c = lx->src[lx->pos];
        if (c == '\'' || c == '"') {
            lex_string(lx);
        } else if (is_digit(c)) {
            bool after_dot = lx->n > 0 && lx->toks[lx->n - 1].kind == TK_OP &&
                             lx->toks[lx->n - 1].n == 1 && lx->toks[lx->n - 1].s[0] == '.' &&
                             lx->pos > 0 && lx->src[lx->pos - 1] == '.';
            lex_number(lx, after_dot);
        } else if (c == '_' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')) {
            size_t p = lx->pos;
            while (p < lx->len && (lx->src[p] == '_' || is_digit(lx->src[p]) ||
                                   (lx->src[p] >= 'a' && lx->src[p] <= 'z') ||
                                   (lx->src[p] >= 'A' && lx->src[p] <= 'Z')))
                p++;
            char *name = lex_alloc(lx, p - lx->pos + 1);
            memcpy(name, lx->src + lx->pos, p - lx->pos);
            emit(lx, TK_NAME, name, p - lx->pos);
            lx->pos = p;
        } else {
            size_t i;
            for (i = 0; i < sizeof ops / sizeof ops[0]; i++)
                if (at(lx, ops[i])) break;
            if (i == sizeof ops / sizeof ops[0])
                lex_fail(lx, -EINVAL, "unexpected character '%c'", c);
            emit(lx, TK_OP, ops[i], strlen(ops[i]));
            lx->pos += strlen(ops[i]);
            if (ops[i][0] == '(' || ops[i][0] == '[' || ops[i][0] == '{') depth++;
            if (ops[i][0] == ')' || ops[i][0] == ']' || ops[i][0] == '}') {
                if (depth == 0) lex_fail(lx, -EINVAL, "unexpected '%c'", c);
                depth--;
            }
        }
    }
}

/* Emits the text before a tag after the tag's whitespace rules; `sign` is '-', '+' or 0. */
static void emit_text(lexer *lx, size_t start, size_t end, char sign, bool lstrip_applies,
                      bool line_starting)
{
    const char *s = lx->src + start;
    size_t n = end - start;
    size_t keep = n;
    if (sign == '-') {
        size_t k;
        while (keep > 0 && (k = tpl__space_before(s, keep)) > 0)
            keep -= k;
    } else if (sign != '+' && lstrip_applies) {
        size_t l_pos = n;
        while (l_pos > 0 && s[l_pos - 1] != '\n')
            l_pos--;
        if (l_pos > 0 || line_starting) {
            size_t p = l_pos, k;
            while (p < n && (k = tpl__space_at(s + p, n - p)) > 0)
                p += k;
            if (p == n && n > l_pos) keep = l_pos;
        }
    }
    int line = lx->line;
    if (keep > 0) emit(lx, TK_TEXT, s, keep);
    lx->line = line;
    count_lines(lx, start, end);
}

/* {%[-+]?\s*word\s*(-%}|%}) (and +%} where plus_end): jinja2's raw / endraw markers.  Returns
 * the position after the tag, 0 if there is none at p; the marker before its %} is then at
 * end - 3. */
static size_t raw_tag_end(const lexer *lx, size_t p, const char *word, bool plus_end)
{
    size_t k;
    if (lx->len - p < 2 || memcmp(lx->src + p, "{%", 2) != 0) return 0;
    p += 2;
    if (p < lx->len && (lx->src[p] == '-' || lx->src[p] == '+')) p++;
    while (p < lx->len && (k = tpl__space_at(lx->src + p, lx->len - p)) > 0)
        p += k;
    size_t wn = strlen(word);
    if (lx->len - p < wn || memcmp(lx->src + p, word, wn) != 0) return 0;
    p += wn;
    while (p < lx->len && (k = tpl__space_at(lx->src + p, lx->len - p)) > 0)
        p += k;
    if (p < lx->len && (lx->src[p] == '-' || (plus_end && lx->src[p] == '+'))) p++;
    if (lx->len - p < 2 || memcmp(lx->src + p, "%}", 2) != 0) return 0;
    return p + 2;
}

static char end_sign_of(const lexer *lx, size_t end)
{
    char c = lx->src[end - 3];
    return c == '-' || c == '+' ? c : 0;
}

/* The raw block whose opening tag ends at after_raw; returns the new line_starting. */
static bool lex_raw(lexer *lx, size_t after_raw)
{
    count_lines(lx, lx->pos, after_raw);
    lx->pos = after_raw;
    bool line_starting = end_sign_of(lx, after_raw) == '-' ? skip_ws(lx) : false;
    size_t q = lx->pos, end_after = 0;
    while (q < lx->len && (end_after = raw_tag_end(lx, q, "endraw", true)) == 0)
        q++;
    if (q >= lx->len) lex_fail(lx, -EINVAL, "missing {%% endraw %%}");
    /* the endraw tag's own markers apply to the raw text's end */
    char open_sign = lx->src[q + 2] == '-' || lx->src[q + 2] == '+' ? lx->src[q + 2] : 0;
    emit_text(lx, lx->pos, q, open_sign, true, line_starting);
    count_lines(lx, q, end_after);
    lx->pos = end_after;
    char sign = end_sign_of(lx, end_after);
    if (sign == '-') return skip_ws(lx);
    if (sign != '+' && at(lx, "\n")) {
        lx->pos++;
        lx->line++;
        return true;
    }
    return false;
}

static void lex_all(lexer *lx)
{
    bool line_starting = true;
    while (lx->pos < lx->len) {
        size_t p = lx->pos;
        const char *tag = NULL;
        while (p + 1 < lx->len) {
            if (lx->src[p] == '{' &&
                (lx->src[p + 1] == '{' || lx->src[p + 1] == '%' || lx->src[p + 1] == '#')) {
                tag = lx->src + p;
                break;
            }
            p++;
        }
        if (!tag) {
            emit_text(lx, lx->pos, lx->len, 0, false, false);
            lx->pos = lx->len;
            break;
        }
        char kind = tag[1];
        char sign = p + 2 < lx->len && (tag[2] == '-' || tag[2] == '+') ? tag[2] : 0;
        if (kind == '{' && sign == '+') sign = 0; /* `{{+` is not a marker */
        size_t after_raw = kind == '%' ? raw_tag_end(lx, p, "raw", false) : 0;
        emit_text(lx, lx->pos, p, sign, kind != '{', line_starting);
        lx->pos = p + 2 + (sign ? 1 : 0);
        if (after_raw) {
            line_starting = lex_raw(lx, after_raw);
            continue;
        }
        if (kind == '#') {
            size_t q = lx->pos;
            while (q + 1 < lx->len && !(lx->src[q] == '#' && lx->src[q + 1] == '}'))
                q++;
            if (q + 1 >= lx->len) lex_fail(lx, -EINVAL, "unterminated comment");
            char esign = q > lx->pos && (lx->src[q - 1] == '-' || lx->src[q - 1] == '+')
                             ? lx->src[q - 1]
                             : 0;
            count_lines(lx, lx->pos, q + 2);
            lx->pos = q + 2;
            line_starting = false;
            if (esign == '-') {
                line_starting = skip_ws(lx);
            } else if (esign != '+' && at(lx, "\n")) {
                lx->pos++;
                lx->line++;
                line_starting = true;
            }
            continue;
        }
        emit(lx, kind == '%' ? TK_BLOCK_BEGIN : TK_VAR_BEGIN, NULL, 0);
        line_starting = lex_tag(lx, kind == '%');
    }
    emit(lx, TK_EOF, NULL, 0);
}

int tpl__lex(arena *a, const char *src, size_t len, tpl_tok **toks, size_t *n_toks, char *err,
             size_t err_size)
{
    lexer lx = {.arena = a, .line = 1, .err = err, .err_size = err_size};
    *toks = NULL;
    *n_toks = 0;
    if (setjmp(lx.fail)) {
        free(lx.toks);
        return lx.rc;
    }
    /* Newlines normalised and one trailing newline dropped, as jinja2 does before lexing. */
    char *norm = lex_alloc(&lx, len + 1);
    size_t n = 0;
    for (size_t i = 0; i < len; i++) {
        if (src[i] == '\r') {
            norm[n++] = '\n';
            if (i + 1 < len && src[i + 1] == '\n') i++;
        } else {
            norm[n++] = src[i];
        }
    }
    if (n > 0 && norm[n - 1] == '\n') n--;
    lx.src = norm;
    lx.len = n;
    lex_all(&lx);
    *toks = lx.toks;
    *n_toks = lx.n;
    return 0;
}
