/*
 * tokenizer_pre.c — the pre-tokenizers of byte-level BPE: the text split into words before
 * merging, as the regular expressions of Hugging Face's tokenizer.json files split it.
 *
 * We have no regex engine; each expression is written out by hand as a matcher that, at a
 * position, returns where the leftmost-first alternative that a backtracking engine would pick
 * ends.  The comments above each matcher give the expression it implements.  A "split" applies
 * one matcher to a piece of text and isolates its matches (the text between matches becomes
 * pieces too), which is what HF's Split(behavior = Isolated) does; a pre-tokenizer is a row of
 * pre_table, the splits it applies in turn (deepseek-llm's tokenizer.json chains six,
 * deepseek-v3's three, most have one).  Matchers read category flags from the generated table
 * (unicode_data.c), one lookup per code point, done once for the whole text.
 *
 * The trade-off: no regex engine to trust, ship or bound in time, and each matcher is small, but
 * each is hand-written against its regex; tests/integration/tokenizer_crosscheck.py holds every
 * one to HF tokenizers running the regex itself.
 */
#include "tokenizer/tokenizer_internal.h"

#include <assert.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define IS_L(c, i) ((c)->fl[i] & TOK_UC_L)
#define IS_N(c, i) ((c)->fl[i] & TOK_UC_N)
#define IS_S(c, i) ((c)->fl[i] & TOK_UC_SPACE)
#define IS_O(c, i) (!((c)->fl[i] & (TOK_UC_L | TOK_UC_N | TOK_UC_SPACE))) /* [^\s\p{L}\p{N}] */

/* A matcher returns the end of the match at i (within [i, end)), or i when none starts there;
 * *next may be moved past i to say that no match starts before it. */
typedef size_t (*matcher)(const tok_cps *c, size_t i, size_t end, size_t *next);

static size_t run_of(const tok_cps *c, size_t i, size_t end, uint16_t flag)
{
    while (i < end && (c->fl[i] & flag))
        i++;
    return i;
}

static size_t run_other(const tok_cps *c, size_t i, size_t end)
{
    while (i < end && IS_O(c, i))
        i++;
    return i;
}

/* The case folding that (?i:) applies, for the letters of the contractions: A-Z, and U+017F
 * (long s), whose simple case folding is 's' (CaseFolding.txt: no other character folds to one
 * of s, t, r, e, v, m, l, d).  HF's Oniguruma and tiktoken's regex fold it; llama.cpp, which
 * writes the contractions out as '[sS], does not. */
static uint32_t fold_case(uint32_t cp)
{
    if (cp == 0x17f) return 's';
    return cp >= 'A' && cp <= 'Z' ? cp + 32 : cp;
}

/* 's|'t|'re|'ve|'m|'ll|'d, case-sensitive or (?i:) */
static size_t contraction(const tok_cps *c, size_t i, size_t end, bool fold)
{
    if (c->cp[i] != '\'' || i + 1 >= end) return i;
    uint32_t a = fold ? fold_case(c->cp[i + 1]) : c->cp[i + 1];
    uint32_t b = i + 2 < end ? (fold ? fold_case(c->cp[i + 2]) : c->cp[i + 2]) : 0;
    if (a == 's' || a == 't' || a == 'm' || a == 'd') return i + 2;
    if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) return i + 3;
    return i;
}

/* \p{N}{1,max_digits} */
static size_t digit_run(const tok_cps *c, size_t i, size_t end, size_t max_digits)
{
    size_t e = i;
    while (e < end && e - i < max_digits && IS_N(c, e))
        e++;
    return e;
}

/* \s+(?!\S)|\s+ at a white-space position: the run, less its last character when a
 * non-space follows and the run is longer than one. */
static size_t space_run(const tok_cps *c, size_t i, size_t end)
{
    size_t j = run_of(c, i, end, TOK_UC_SPACE);
    if (j < end && j - i >= 2) return j - 1;
    return j;
}

/* \s*[\r\n]+|\s+(?!\S)|\s+ at a white-space position: a run with line breaks ends after its
 * last one. */
static size_t space_or_breaks(const tok_cps *c, size_t i, size_t end)
{
    size_t j = run_of(c, i, end, TOK_UC_SPACE);
    for (size_t k = j; k > i; k--)
        if (c->cp[k - 1] == '\r' || c->cp[k - 1] == '\n') return k;
    return space_run(c, i, end);
}

/* 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+ */
static size_t match_gpt2(const tok_cps *c, size_t i, size_t end, size_t *next)
{
    (void)next;
    size_t e = contraction(c, i, end, false);
    if (e > i) return e;
    size_t s = i;
    if (c->cp[i] == ' ' && i + 1 < end) s = i + 1;
    if (IS_L(c, s)) return run_of(c, s, end, TOK_UC_L);
    if (IS_N(c, s)) return run_of(c, s, end, TOK_UC_N);
    if (IS_O(c, s)) return run_other(c, s, end);
    /* a single space followed by another space, or any other white space */
    return space_run(c, i, end);
}

/* (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,max_digits}|
 *  ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
 * With marks (Qwen3.5), \p{L} becomes [\p{L}\p{M}] in the letter run and in the class of
 * the fourth alternative, but not in the optional prefix of the second: a mark there is the
 * prefix or the run's first character, the same match either way. */
static size_t match_llama3_like(const tok_cps *c, size_t i, size_t end, size_t max_digits,
                                bool marks)
{
    uint16_t letter = marks ? (uint16_t)(TOK_UC_L | TOK_UC_M) : (uint16_t)TOK_UC_L;
    uint16_t not_other = letter | TOK_UC_N | TOK_UC_SPACE;
    size_t e = contraction(c, i, end, true);
    if (e > i) return e;
    uint32_t cp = c->cp[i];
    bool nl = cp == '\r' || cp == '\n';
    if (c->fl[i] & letter) return run_of(c, i, end, letter);
    if (!nl && !IS_N(c, i) && i + 1 < end && (c->fl[i + 1] & letter))
        return run_of(c, i + 1, end, letter);
    if (IS_N(c, i)) return digit_run(c, i, end, max_digits);
    size_t s = (cp == ' ' && i + 1 < end && !(c->fl[i + 1] & not_other)) ? i + 1 : i;
    if (!(c->fl[s] & not_other)) {
        e = s;
        while (e < end && !(c->fl[e] & not_other))
            e++;
        while (e < end && (c->cp[e] == '\r' || c->cp[e] == '\n'))
            e++;
        return e;
    }
    return space_or_breaks(c, i, end);
}

static size_t match_llama3(const tok_cps *c, size_t i, size_t end, size_t *next)
{
    (void)next;
    return match_llama3_like(c, i, end, 3, false);
}

static size_t match_qwen2(const tok_cps *c, size_t i, size_t end, size_t *next)
{
    (void)next;
    return match_llama3_like(c, i, end, 1, false);
}

static size_t match_qwen35(const tok_cps *c, size_t i, size_t end, size_t *next)
{
    (void)next;
    return match_llama3_like(c, i, end, 1, true);
}

/* o200k's letter classes: [\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}] and [\p{Ll}\p{Lm}\p{Lo}\p{M}], less the
 * characters with a flag in `exclude` (Kimi-K2 takes the Han script out of both: "&&[^\p{Han}]") */
static bool is_upper_class(const tok_cps *c, size_t i, uint16_t exclude)
{
    if (c->fl[i] & exclude) return false;
    return (IS_L(c, i) && !(c->fl[i] & TOK_UC_LL)) || (c->fl[i] & TOK_UC_M);
}

static bool is_lower_class(const tok_cps *c, size_t i, uint16_t exclude)
{
    if (c->fl[i] & exclude) return false;
    return (IS_L(c, i) && !(c->fl[i] & TOK_UC_LU)) || (c->fl[i] & TOK_UC_M);
}

/* At j: [UPPER]*[LOWER]+ (lower_run) or [UPPER]+[LOWER]*, as a backtracking engine matches them
 * (the classes overlap: Lm, Lo and marks are in both), then the optional (?i:) contraction.
 * Returns j when there is no match. */
static size_t cased_word(const tok_cps *c, size_t j, size_t end, bool lower_run, uint16_t exclude)
{
    size_t u = j, e = j;
    while (u < end && is_upper_class(c, u, exclude))
        u++;
    if (!lower_run) {
        if (u == j) return j;
        for (e = u; e < end && is_lower_class(c, e, exclude);)
            e++;
    } else if (u < end && is_lower_class(c, u, exclude)) {
        for (e = u; e < end && is_lower_class(c, e, exclude);)
            e++;
    } else {
        /* [UPPER]* gives back characters until one of them can start [LOWER]+: the last such
         * one in the run, which the [LOWER]+ ends right after (the next is upper only) */
        for (size_t k = u; k > j && e == j; k--)
            if (is_lower_class(c, k - 1, exclude)) e = k;
        if (e == j) return j;
    }
    return e < end ? contraction(c, e, end, true) : e;
}

/* [^\r\n\p{L}\p{N}]?[UPPER]*[LOWER]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?|
 * [^\r\n\p{L}\p{N}]?[UPPER]+[LOWER]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?|\p{N}{1,3}|
 *  ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+
 * with UPPER and LOWER above less `exclude`, and the '/' only when `slash`. */
static size_t match_o200k_like(const tok_cps *c, size_t i, size_t end, uint16_t exclude, bool slash)
{
    uint32_t cp = c->cp[i];
    bool prefix = !IS_L(c, i) && !IS_N(c, i) && cp != '\r' && cp != '\n';
    for (int alt = 0; alt < 2; alt++) { /* each with the optional prefix first, then without */
        size_t e;
        if (prefix && (e = cased_word(c, i + 1, end, alt == 0, exclude)) > i + 1) return e;
        if ((e = cased_word(c, i, end, alt == 0, exclude)) > i) return e;
    }
    if (IS_N(c, i)) return digit_run(c, i, end, 3);
    size_t s = (cp == ' ' && i + 1 < end && IS_O(c, i + 1)) ? i + 1 : i;
    if (IS_O(c, s)) {
        size_t e = run_other(c, s, end);
        while (e < end && (c->cp[e] == '\r' || c->cp[e] == '\n' || (slash && c->cp[e] == '/')))
            e++;
        return e;
    }
    return space_or_breaks(c, i, end);
}

/* o200k_base / o200k_harmony (tokenizer.ggml.pre "gpt-4o") */
static size_t match_gpt4o(const tok_cps *c, size_t i, size_t end, size_t *next)
{
    (void)next;
    return match_o200k_like(c, i, end, 0, true);
}

/* [\p{Han}]+|<o200k's words, Han taken out of both letter classes>|\p{N}{1,3}|
 *  ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
 * (Kimi-K2's tokenization_kimi.py, which llama.cpp's unicode.cpp quotes; tokenizer.ggml.pre
 * "kimi-k2").  A Han character that starts a match always starts a Han run: the first
 * alternative is tried first, so Han is never the prefix of a word, although radicals (So) and
 * Hangzhou numerals (Nl) are in its class. */
static size_t match_kimi_k2(const tok_cps *c, size_t i, size_t end, size_t *next)
{
    (void)next;
    if (c->fl[i] & TOK_UC_HAN) return run_of(c, i, end, TOK_UC_HAN);
    return match_o200k_like(c, i, end, TOK_UC_HAN, false);
}

/* deepseek-llm's splits.  The character classes are copied from its tokenizer.json (through
 * llama.cpp's llama-vocab.cpp) as UTF-8 text and read as ranges "a-b" and single characters. */
/* clang-format off */
static const char DS_LETTERS[] =
    "A-Za-z\xc2\xb5\xc3\x80-\xc3\x96\xc3\x98-\xc3\xb6\xc3\xb8-\xc6\xba\xc6\xbc-\xc6\xbf\xc7\x84-\xca\x93"
    "\xca\x95-\xca\xaf\xcd\xb0-\xcd\xb3\xcd\xb6\xcd\xb7\xcd\xbb-\xcd\xbd\xcd\xbf\xce\x86\xce\x88-\xce\x8a"
    "\xce\x8c\xce\x8e-\xce\xa1\xce\xa3-\xcf\xb5\xcf\xb7-\xd2\x81\xd2\x8a-\xd4\xaf\xd4\xb1-\xd5\x96"
    "\xe1\x82\xa0-\xe1\x83\x85\xe1\x8e\xa0-\xe1\x8f\xb5\xe1\x8f\xb8-\xe1\x8f\xbd\xe1\xb2\x90-\xe1\xb2\xba"
    "\xe1\xb2\xbd-\xe1\xb2\xbf\xe1\xb4\x80-\xe1\xb4\xab\xe1\xb5\xab-\xe1\xb5\xb7\xe1\xb5\xb9-\xe1\xb6\x9a"
    "\xe1\xb8\x80-\xe1\xbc\x95\xe1\xbc\x98-\xe1\xbc\x9d\xe1\xbc\xa0-\xe1\xbd\x85\xe1\xbd\x88-\xe1\xbd\x8d"
    "\xe1\xbd\x90-\xe1\xbd\x97\xe1\xbd\x99\xe1\xbd\x9b\xe1\xbd\x9d\xe1\xbd\x9f-\xe1\xbd\xbd"
    "\xe1\xbe\x80-\xe1\xbe\xb4\xe1\xbe\xb6-\xe1\xbe\xbc\xe1\xbe\xbe\xe1\xbf\x82-\xe1\xbf\x84"
    "\xe1\xbf\x86-\xe1\xbf\x8c\xe1\xbf\x90-\xe1\xbf\x93\xe1\xbf\x96-\xe1\xbf\x9b\xe1\xbf\xa0-\xe1\xbf\xac"
    "\xe1\xbf\xb2-\xe1\xbf\xb4\xe1\xbf\xb6-\xe1\xbf\xbc\xe2\x84\x82\xe2\x84\x87\xe2\x84\x8a-\xe2\x84\x93"
    "\xe2\x84\x95\xe2\x84\x99-\xe2\x84\x9d\xe2\x84\xa4\xe2\x84\xa6\xe2\x84\xa8\xe2\x84\xaa-\xe2\x84\xad"
    "\xe2\x84\xaf-\xe2\x84\xb4\xe2\x84\xb9\xe2\x84\xbc-\xe2\x84\xbf\xe2\x85\x85-\xe2\x85\x89\xe2\x85\x8e"
    "\xe2\x86\x83\xe2\x86\x84\xe2\xb0\x80-\xe2\xb1\xbb\xe2\xb1\xbe-\xe2\xb3\xa4\xe2\xb3\xab-\xe2\xb3\xae"
    "\xe2\xb3\xb2\xe2\xb3\xb3\xea\x99\x80-\xea\x99\xad\xea\x9a\x80-\xea\x9a\x9b\xea\x9c\xa2-\xea\x9d\xaf"
    "\xea\x9d\xb1-\xea\x9e\x87\xea\x9e\x8b-\xea\x9e\x8e\xea\xad\xb0-\xea\xae\xbf\xef\xac\x80-\xef\xac\x86"
    "\xef\xac\x93-\xef\xac\x97\xef\xbc\xa1-\xef\xbc\xba\xef\xbd\x81-\xef\xbd\x9a\xf0\x90\x90\x80-\xf0\x90\x91\x8f"
    "\xf0\x90\x92\xb0-\xf0\x90\x93\x93\xf0\x90\x93\x98-\xf0\x90\x93\xbb\xf0\x90\xb2\x80-\xf0\x90\xb2\xb2"
    "\xf0\x90\xb3\x80-\xf0\x90\xb3\xb2\xf0\x91\xa2\xa0-\xf0\x91\xa3\x9f\xf0\x9e\xa4\x80-\xf0\x9e\xa5\x83";
static const char DS_PUNCT[] =
    "!-/:-~\xef\xbc\x81-\xef\xbc\x8f\xef\xbc\x9a-\xef\xbd\x9e\xe2\x80\x98-\xe2\x80\x9f\xe3\x80\x80-\xe3\x80\x82";
static const char DS_CJK[] = "\xe4\xb8\x80-\xe9\xbe\xa5\xe0\xa0\x80-\xe4\xb8\x80\xea\xb0\x80-\xed\x9f\xbf";
/* clang-format on */

static bool in_class(const char *cls, uint32_t cp)
{
    size_t len = strlen(cls), i = 0, n;
    while (i < len) {
        uint32_t lo = utf8_next(cls + i, len - i, &n), hi = lo;
        i += n;
        if (i + 1 < len && cls[i] == '-') {
            hi = utf8_next(cls + i + 1, len - i - 1, &n);
            i += 1 + n;
        }
        if (cp >= lo && cp <= hi) return true;
    }
    return false;
}

static size_t class_run(const tok_cps *c, size_t i, size_t end, const char *cls)
{
    while (i < end && in_class(cls, c->cp[i]))
        i++;
    return i;
}

/* \s?[cls]+ */
static size_t space_opt_class(const tok_cps *c, size_t i, size_t end, const char *cls)
{
    if (IS_S(c, i) && i + 1 < end && in_class(cls, c->cp[i + 1]))
        return class_run(c, i + 1, end, cls);
    return class_run(c, i, end, cls);
}

static size_t ds_newline(const tok_cps *c, size_t i, size_t end, size_t *next)
{
    (void)end;
    (void)next;
    return (c->cp[i] == '\r' || c->cp[i] == '\n') ? i + 1 : i;
}

static size_t ds_letters(const tok_cps *c, size_t i, size_t end, size_t *next)
{
    (void)next;
    return space_opt_class(c, i, end, DS_LETTERS);
}

static size_t ds_punct(const tok_cps *c, size_t i, size_t end, size_t *next)
{
    (void)next;
    return space_opt_class(c, i, end, DS_PUNCT);
}

/* \s+$ : only the white-space run that reaches the end of the piece */
static size_t ds_trailing_space(const tok_cps *c, size_t i, size_t end, size_t *next)
{
    if (!IS_S(c, i)) return i;
    size_t j = run_of(c, i, end, TOK_UC_SPACE);
    if (j == end) return j;
    *next = j;
    return i;
}

static size_t ds_cjk(const tok_cps *c, size_t i, size_t end, size_t *next)
{
    (void)next;
    return class_run(c, i, end, DS_CJK);
}

static size_t ds_digits(const tok_cps *c, size_t i, size_t end, size_t *next)
{
    (void)next;
    return run_of(c, i, end, TOK_UC_N);
}

/* deepseek-v3's splits (DeepSeek-V3 / R1's tokenizer.json, as llama.cpp's llama-vocab.cpp quotes
 * them): \p{N}{1,3}, then [一-龥぀-ゟ゠-ヿ]+, then the words below.  Each is applied to the
 * pieces of the one before, so the words never see a digit or a character of those CJK ranges. */
static size_t ds3_digits(const tok_cps *c, size_t i, size_t end, size_t *next)
{
    (void)next;
    return digit_run(c, i, end, 3);
}

/* [一-龥぀-ゟ゠-ヿ]+: U+4E00..U+9FA5 (the unified ideographs of Unicode 1.1, not the whole
 * block), Hiragana U+3040..U+309F and Katakana U+30A0..U+30FF (punctuation ・ and the prolonged
 * sound mark ー included) */
static bool ds3_is_cjk(uint32_t cp)
{
    return (cp >= 0x4e00 && cp <= 0x9fa5) || (cp >= 0x3040 && cp <= 0x30ff);
}

static size_t ds3_cjk(const tok_cps *c, size_t i, size_t end, size_t *next)
{
    (void)next;
    while (i < end && ds3_is_cjk(c->cp[i]))
        i++;
    return i;
}

static bool is_ascii_letter(uint32_t cp)
{
    return (cp >= 'a' && cp <= 'z') || (cp >= 'A' && cp <= 'Z');
}

/* [!"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~]: every ASCII punctuation character and symbol */
static bool is_ascii_punct(uint32_t cp)
{
    return cp > ' ' && cp < 0x7f && !is_ascii_letter(cp) && !(cp >= '0' && cp <= '9');
}

/* [!"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~][A-Za-z]+|[^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+|
 *  ?[\p{P}\p{S}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
 * The optional prefix of the second is anything but a line break, a letter, punctuation or a
 * symbol: white space, a mark (the run's first character either way), a control or format
 * character.  A character that none of these match (U+200B, a control character not before a
 * letter) is left between matches: Split(Isolated) makes a piece of such a stretch. */
static size_t ds3_words(const tok_cps *c, size_t i, size_t end, size_t *next)
{
    (void)next;
    const uint16_t letter = TOK_UC_L | TOK_UC_M, punct = TOK_UC_P | TOK_UC_S;
    uint32_t cp = c->cp[i];
    if (is_ascii_punct(cp) && i + 1 < end && is_ascii_letter(c->cp[i + 1])) {
        size_t e = i + 1;
        while (e < end && is_ascii_letter(c->cp[e]))
            e++;
        return e;
    }
    if (c->fl[i] & letter) return run_of(c, i, end, letter);
    bool prefix = cp != '\r' && cp != '\n' && !(c->fl[i] & (TOK_UC_L | punct));
    if (prefix && i + 1 < end && (c->fl[i + 1] & letter)) return run_of(c, i + 1, end, letter);
    size_t s = (cp == ' ' && i + 1 < end && (c->fl[i + 1] & punct)) ? i + 1 : i;
    if (c->fl[s] & punct) {
        size_t e = run_of(c, s, end, punct);
        while (e < end && (c->cp[e] == '\r' || c->cp[e] == '\n'))
            e++;
        return e;
    }
    if (IS_S(c, i)) return space_or_breaks(c, i, end);
    return i;
}

/* ---- the table: each pre-tokenizer is a sequence of isolating splits ---------------------- */

static const matcher gpt2_steps[] = {match_gpt2};
static const matcher llama3_steps[] = {match_llama3};
static const matcher qwen2_steps[] = {match_qwen2};
static const matcher qwen35_steps[] = {match_qwen35};
static const matcher gpt4o_steps[] = {match_gpt4o};
static const matcher kimi_k2_steps[] = {match_kimi_k2};
static const matcher deepseek_steps[] = {ds_newline,        ds_letters, ds_punct,
                                         ds_trailing_space, ds_cjk,     ds_digits};
static const matcher deepseek3_steps[] = {ds3_digits, ds3_cjk, ds3_words};

#define N_STEPS(a) (sizeof a / sizeof a[0])
static const struct {
    const matcher *steps;
    size_t n_steps;
} pre_table[] = {
    [TOK_PRE_GPT2] = {gpt2_steps, N_STEPS(gpt2_steps)},
    [TOK_PRE_LLAMA3] = {llama3_steps, N_STEPS(llama3_steps)},
    [TOK_PRE_QWEN2] = {qwen2_steps, N_STEPS(qwen2_steps)},
    [TOK_PRE_QWEN35] = {qwen35_steps, N_STEPS(qwen35_steps)},
    [TOK_PRE_DEEPSEEK] = {deepseek_steps, N_STEPS(deepseek_steps)},
    [TOK_PRE_GPT4O] = {gpt4o_steps, N_STEPS(gpt4o_steps)},
    [TOK_PRE_DEEPSEEK3] = {deepseek3_steps, N_STEPS(deepseek3_steps)},
    [TOK_PRE_KIMI_K2] = {kimi_k2_steps, N_STEPS(kimi_k2_steps)},
};
#undef N_STEPS

/* ---- splitting ---------------------------------------------------------------------------- */

static int span_push(tok_spans *s, size_t a, size_t b)
{
    if (vec_reserve(&s->v, &s->cap, s->n + 1, sizeof *s->v, 64) < 0) return -ENOMEM;
    s->v[s->n++] = (tok_span){a, b};
    return 0;
}

/* Split(behavior = Isolated): matches and the text between them become pieces. */
static int split_isolated(const tok_cps *c, const tok_spans *in, matcher m, tok_spans *out)
{
    out->n = 0;
    int rc = 0;
    for (size_t k = 0; k < in->n && rc == 0; k++) {
        size_t a = in->v[k].a, b = in->v[k].b, last = a, pos = a;
        while (pos < b && rc == 0) {
            size_t next = pos + 1;
            size_t e = m(c, pos, b, &next);
            if (e > pos) {
                if (last < pos) rc = span_push(out, last, pos);
                if (rc == 0) rc = span_push(out, pos, e);
                last = pos = e;
            } else
                pos = next;
        }
        if (rc == 0 && last < b) rc = span_push(out, last, b);
    }
    return rc;
}

int tok__pre_tokenize(const tok_cps *c, tok_pre pre, tok_spans *words)
{
    assert((size_t)pre < sizeof pre_table / sizeof pre_table[0] && pre_table[pre].n_steps > 0);
    tok_spans tmp = {0};
    words->n = 0;
    int rc = c->n > 0 ? span_push(words, 0, c->n) : 0;
    for (size_t k = 0; k < pre_table[pre].n_steps && rc == 0; k++) {
        rc = split_isolated(c, words, pre_table[pre].steps[k], &tmp);
        tok_spans swap = *words;
        *words = tmp;
        tmp = swap;
    }
    free(tmp.v);
    return rc;
}

/* ---- code points -------------------------------------------------------------------------- */

int tok__cps_from_utf8(const char *text, size_t len, tok_cps *c)
{
    *c = (tok_cps){0};
    c->cp = malloc((len + 1) * sizeof *c->cp);
    c->fl = malloc((len + 1) * sizeof *c->fl);
    c->off = malloc((len + 1) * sizeof *c->off);
    if (!c->cp || !c->fl || !c->off) return -ENOMEM;
    size_t n = 0;
    for (size_t i = 0; i < len;) {
        size_t k;
        uint32_t cp = utf8_next(text + i, len - i, &k);
        c->cp[n] = cp;
        c->fl[n] = tok__uc_flags(cp);
        c->off[n++] = i;
        i += k;
    }
    c->off[n] = len;
    c->n = n;
    return 0;
}

void tok__cps_release(tok_cps *c)
{
    free(c->cp);
    free(c->fl);
    free(c->off);
    *c = (tok_cps){0};
}
