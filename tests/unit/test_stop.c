/*
 * test_stop.c — the stop-string matcher against a reference that sees the whole text at once.
 *
 * The reference concatenates the pieces and scans end positions from the left: the stream
 * stops at the first byte where some stop string is complete, and the output is the text
 * before the longest stop ending there (stop.h explains why the earliest END and not the
 * earliest start: it is what token-by-token generation hits first, whatever the cut).  After
 * every piece the released text must also equal "everything except the longest suffix that
 * is a proper prefix of a stop", computed by brute force: released as soon as possible and
 * never past a stop.  Hand-written cases, all splittings of short texts, and random texts with
 * multibyte characters cut at random character boundaries.
 */
#include "sampling/stop.h"

#include <check.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Check's ck_assert reports every passing check to the parent process (a write per call):
 * the loops that run hundreds of thousands of streams only report failures. */
#define REQUIRE(cond)                                                                              \
    do {                                                                                           \
        if (!(cond)) ck_abort_msg("%s:%d: %s", __FILE__, __LINE__, #cond);                         \
    } while (0)
#define REQUIRE_MSG(cond, ...)                                                                     \
    do {                                                                                           \
        if (!(cond)) ck_abort_msg(__VA_ARGS__);                                                    \
    } while (0)

/* ---- the reference ------------------------------------------------------------------------ */

typedef struct stop_set {
    const char *s[STOP_MAX_STOPS];
    size_t len[STOP_MAX_STOPS];
    size_t n;
} stop_set;

/* Start of the stop that completes first in text[0..n) (ties at the same end: the earliest
 * start), or -1. */
static long ref_stop(const stop_set *st, const char *text, size_t n)
{
    for (size_t end = 1; end <= n; end++) {
        long best = -1;
        for (size_t i = 0; i < st->n; i++) {
            size_t l = st->len[i];
            if (l <= end && memcmp(text + end - l, st->s[i], l) == 0 &&
                (best < 0 || (long)(end - l) < best))
                best = (long)(end - l);
        }
        if (best >= 0) return best;
    }
    return -1;
}

/* Length of the longest suffix of text[0..n) that is a proper prefix of some stop. */
static size_t ref_held(const stop_set *st, const char *text, size_t n)
{
    size_t best = 0;
    for (size_t i = 0; i < st->n; i++)
        for (size_t h = 1; h < st->len[i] && h <= n; h++)
            if (memcmp(text + n - h, st->s[i], h) == 0 && h > best) best = h;
    return best;
}

static bool valid_utf8(const char *p, size_t n)
{
    const unsigned char *s = (const unsigned char *)p;
    for (size_t i = 0; i < n;) {
        size_t k = s[i] < 0x80             ? 1
                   : (s[i] & 0xe0) == 0xc0 ? 2
                   : (s[i] & 0xf0) == 0xe0 ? 3
                   : (s[i] & 0xf8) == 0xf0 ? 4
                                           : 0;
        if (k == 0 || i + k > n) return false;
        for (size_t j = 1; j < k; j++)
            if ((s[i + j] & 0xc0) != 0x80) return false;
        i += k;
    }
    return true;
}

static stop_matcher *make(const stop_set *st)
{
    char err[256] = "";
    stop_matcher *m = NULL;
    int rc = stop_matcher_create(&m, st->s, st->len, st->n, err, sizeof err);
    ck_assert_msg(rc == 0, "stop_matcher_create: %d %s", rc, err);
    return m;
}

static stop_set stops_of(const char *const *strs, size_t n)
{
    stop_set st = {.n = n};
    for (size_t i = 0; i < n; i++) {
        st.s[i] = strs[i];
        st.len[i] = strlen(strs[i]);
    }
    return st;
}

/* Streams text cut at cuts[0..n_cuts) (ascending, repeats give empty pieces) and checks the
 * output after every piece and at the end against the reference; returns the output length. */
static size_t check_stream(const stop_set *st, const char *text, size_t n, const size_t *cuts,
                           size_t n_cuts, bool utf8)
{
    stop_matcher *m = NULL;
    char err[256] = "";
    REQUIRE_MSG(stop_matcher_create(&m, st->s, st->len, st->n, err, sizeof err) == 0, "%s", err);
    char *out = malloc(n + 1);
    REQUIRE(out != NULL);
    size_t out_len = 0, pos = 0;
    bool stopped = false;
    long want_stop = ref_stop(st, text, n);
    for (size_t c = 0; c <= n_cuts; c++) {
        size_t next = c < n_cuts ? cuts[c] : n;
        REQUIRE(next >= pos && next <= n);
        stop_output o;
        REQUIRE(stop_matcher_feed(m, text + pos, next - pos, &o) == 0);
        pos = next;
        if (stopped) {
            REQUIRE(o.stopped && o.len == 0);
            continue;
        }
        REQUIRE(out_len + o.len <= n);
        memcpy(out + out_len, o.text, o.len);
        if (utf8) REQUIRE_MSG(valid_utf8(o.text, o.len), "released a partial character");
        out_len += o.len;
        long at = ref_stop(st, text, pos);
        if (at >= 0) {
            REQUIRE_MSG(o.stopped, "not stopped at \"%.*s\"", (int)pos, text);
            REQUIRE(at == want_stop);
            REQUIRE(out_len == (size_t)at);
            stopped = true;
        } else {
            REQUIRE(!o.stopped);
            REQUIRE_MSG(out_len == pos - ref_held(st, text, pos),
                        "after \"%.*s\": released %zu, want %zu", (int)pos, text, out_len,
                        pos - ref_held(st, text, pos));
        }
        REQUIRE(memcmp(out, text, out_len) == 0);
    }
    stop_output o;
    stop_matcher_flush(m, &o);
    REQUIRE(o.stopped == stopped);
    if (stopped) {
        REQUIRE(o.len == 0);
    } else {
        REQUIRE(want_stop < 0);
        memcpy(out + out_len, o.text, o.len);
        out_len += o.len;
        REQUIRE(out_len == n);
        REQUIRE(memcmp(out, text, n) == 0);
    }
    /* nothing more after the end */
    REQUIRE(stop_matcher_feed(m, "x", 1, &o) == 0);
    REQUIRE(o.len == 0);
    stop_matcher_flush(m, &o);
    REQUIRE(o.len == 0);
    stop_matcher_destroy(&m);
    REQUIRE(m == NULL);
    free(out);
    return out_len;
}

/* Feeds NUL-terminated pieces, returns the whole output (static buffer) and whether it stopped. */
static const char *stream(const char *const *stops, size_t n_stops, const char *const *pieces,
                          bool *stopped)
{
    static char out[1024];
    stop_set st = stops_of(stops, n_stops);
    stop_matcher *m = make(&st);
    size_t len = 0;
    *stopped = false;
    stop_output o;
    for (size_t i = 0; pieces[i]; i++) {
        ck_assert_int_eq(stop_matcher_feed(m, pieces[i], strlen(pieces[i]), &o), 0);
        ck_assert(len + o.len < sizeof out);
        memcpy(out + len, o.text, o.len);
        len += o.len;
        *stopped = o.stopped;
    }
    stop_matcher_flush(m, &o);
    memcpy(out + len, o.text, o.len);
    len += o.len;
    out[len] = '\0';
    stop_matcher_destroy(&m);
    return out;
}

#define PIECES(...) ((const char *const[]){__VA_ARGS__, NULL})
#define STOPS(...)                                                                                 \
    ((const char *const[]){__VA_ARGS__}),                                                          \
        (sizeof((const char *const[]){__VA_ARGS__}) / sizeof(const char *))

/* ---- hand-written cases -------------------------------------------------------------------- */

START_TEST(straddling_pieces)
{
    bool stopped;
    const char *got;
    got = stream(STOPS("STOP"), PIECES("Hello ST", "O", "P world"), &stopped);
    ck_assert_str_eq(got, "Hello ");
    ck_assert(stopped);
    got = stream(STOPS("<|im_end|>"), PIECES("Hi!<|im_", "end", "|>\nmore"), &stopped);
    ck_assert_str_eq(got, "Hi!");
    ck_assert(stopped);
    /* a prefix that turns out not to be one is released */
    got = stream(STOPS("STOP"), PIECES("a ST", "ONE", " b"), &stopped);
    ck_assert_str_eq(got, "a STONE b");
    ck_assert(!stopped);

    /* what is released when: "ST" and then "STO" are held */
    stop_set st = stops_of((const char *const[]){"STOP"}, 1);
    stop_matcher *m = make(&st);
    stop_output o;
    ck_assert_int_eq(stop_matcher_feed(m, "Hello ST", 8, &o), 0);
    ck_assert_uint_eq(o.len, 6);
    ck_assert(memcmp(o.text, "Hello ", 6) == 0 && !o.stopped);
    ck_assert_int_eq(stop_matcher_feed(m, "O", 1, &o), 0);
    ck_assert_uint_eq(o.len, 0);
    ck_assert_int_eq(stop_matcher_feed(m, "P world", 7, &o), 0);
    ck_assert_uint_eq(o.len, 0);
    ck_assert(o.stopped);
    ck_assert_int_eq(stop_matcher_feed(m, "more", 4, &o), 0); /* never past a stop */
    ck_assert(o.len == 0 && o.stopped);
    stop_matcher_flush(m, &o);
    ck_assert(o.len == 0 && o.stopped);
    stop_matcher_destroy(&m);
}
END_TEST

START_TEST(earliest_stop_wins)
{
    bool stopped;
    const char *got;
    got = stream(STOPS("world", "lo"), PIECES("hello world"), &stopped);
    ck_assert_str_eq(got, "hel");
    got = stream(STOPS("lo", "world"), PIECES("hel", "lo wor", "ld"), &stopped);
    ck_assert_str_eq(got, "hel");
    /* earliest end: "bc" completes before "abcd" could, in one piece or several */
    got = stream(STOPS("abcd", "bc"), PIECES("xabcd"), &stopped);
    ck_assert_str_eq(got, "xa");
    got = stream(STOPS("abcd", "bc"), PIECES("xab", "cd"), &stopped);
    ck_assert_str_eq(got, "xa");
    /* same end: the longer (earlier) stop */
    got = stream(STOPS("bc", "abc"), PIECES("xabc"), &stopped);
    ck_assert_str_eq(got, "x");
    ck_assert(stopped);
}
END_TEST

START_TEST(overlapping_prefixes)
{
    bool stopped;
    const char *got;
    got = stream(STOPS("aab"), PIECES("aaab"), &stopped);
    ck_assert_str_eq(got, "a");
    got = stream(STOPS("aab"), PIECES("a", "a", "a", "b"), &stopped);
    ck_assert_str_eq(got, "a");
    got = stream(STOPS("abab"), PIECES("aba", "bab"), &stopped);
    ck_assert_str_eq(got, "");
    got = stream(STOPS("abac"), PIECES("aba", "bac!"), &stopped);
    ck_assert_str_eq(got, "ab");
    /* every split of aaab and aaaab */
    stop_set st = stops_of((const char *const[]){"aab"}, 1);
    const char *texts[] = {"aaab", "aaaab", "aabaab", "aaaaaa"};
    for (size_t t = 0; t < 4; t++) {
        size_t n = strlen(texts[t]);
        for (unsigned mask = 0; mask < 1u << (n - 1); mask++) {
            size_t cuts[8], k = 0;
            for (size_t b = 0; b + 1 < n; b++)
                if (mask & (1u << b)) cuts[k++] = b + 1;
            check_stream(&st, texts[t], n, cuts, k, true);
        }
    }
}
END_TEST

START_TEST(stop_at_start)
{
    bool stopped;
    const char *got;
    got = stream(STOPS("STOP"), PIECES("STOP and more"), &stopped);
    ck_assert_str_eq(got, "");
    ck_assert(stopped);
    stop_set st = stops_of((const char *const[]){"\n\n"}, 1);
    stop_matcher *m = make(&st);
    stop_output o;
    ck_assert_int_eq(stop_matcher_feed(m, "\n", 1, &o), 0);
    ck_assert(o.len == 0 && !o.stopped);
    ck_assert_int_eq(stop_matcher_feed(m, "\nx", 2, &o), 0);
    ck_assert(o.len == 0 && o.stopped);
    stop_matcher_destroy(&m);
}
END_TEST

START_TEST(multibyte_text)
{
    bool stopped;
    const char *got;
    got = stream(STOPS("世界"), PIECES("你好", "世", "界!"), &stopped);
    ck_assert_str_eq(got, "你好");
    ck_assert(stopped);
    got = stream(STOPS("é!"), PIECES("caf", "é", " ok"), &stopped);
    ck_assert_str_eq(got, "café ok");
    ck_assert(!stopped);
    got = stream(STOPS("😀"), PIECES("a", "😀", "b"), &stopped);
    ck_assert_str_eq(got, "a");
    /* a stop that shares a lead byte with the text: é (c3 a9) vs è (c3 a8) */
    got = stream(STOPS("è"), PIECES("é", "é", "è"), &stopped);
    ck_assert_str_eq(got, "éé");
    stop_set st = stops_of((const char *const[]){"世界"}, 1);
    stop_matcher *m = make(&st);
    stop_output o;
    ck_assert_int_eq(stop_matcher_feed(m, "你好世", strlen("你好世"), &o), 0);
    ck_assert_uint_eq(o.len, strlen("你好")); /* whole characters only */
    stop_matcher_destroy(&m);
}
END_TEST

START_TEST(flush_releases_held)
{
    stop_set st = stops_of((const char *const[]){"STOP", "</s>"}, 2);
    stop_matcher *m = make(&st);
    stop_output o;
    ck_assert_int_eq(stop_matcher_feed(m, "abc ST", 6, &o), 0);
    ck_assert(o.len == 4 && memcmp(o.text, "abc ", 4) == 0);
    ck_assert_int_eq(stop_matcher_feed(m, "", 0, &o), 0);
    ck_assert_uint_eq(o.len, 0);
    ck_assert_int_eq(stop_matcher_feed(m, "O", 1, &o), 0);
    ck_assert_uint_eq(o.len, 0);
    stop_matcher_flush(m, &o);
    ck_assert(o.len == 3 && memcmp(o.text, "STO", 3) == 0 && !o.stopped);
    stop_matcher_flush(m, &o);
    ck_assert_uint_eq(o.len, 0);
    stop_matcher_destroy(&m);

    /* no stops: a pass-through that holds nothing */
    ck_assert_int_eq(stop_matcher_create(&m, NULL, NULL, 0, NULL, 0), 0);
    ck_assert_int_eq(stop_matcher_feed(m, "abc", 3, &o), 0);
    ck_assert(o.len == 3 && memcmp(o.text, "abc", 3) == 0 && !o.stopped);
    stop_matcher_flush(m, &o);
    ck_assert_uint_eq(o.len, 0);
    stop_matcher_destroy(&m);
    stop_matcher_destroy(&m);
    stop_matcher_destroy(NULL);
}
END_TEST

START_TEST(long_stream)
{
    /* a long text streamed in small pieces: output as it goes, held text bounded */
    stop_set st = stops_of((const char *const[]){"<|endoftext|>", "\nUser:"}, 2);
    stop_matcher *m = make(&st);
    size_t released = 0, fed = 0;
    stop_output o;
    for (int i = 0; i < 20000; i++) {
        const char *piece = (i % 7 == 0) ? "<|end" : (i % 5 == 0) ? "\nUse" : "token ";
        size_t len = strlen(piece);
        REQUIRE(stop_matcher_feed(m, piece, len, &o) == 0);
        fed += len;
        released += o.len;
        REQUIRE(!o.stopped);
        REQUIRE(fed - released < 13);
    }
    ck_assert_int_eq(stop_matcher_feed(m, "\nUser:", 6, &o), 0);
    ck_assert(o.stopped);
    stop_matcher_destroy(&m);
}
END_TEST

START_TEST(invalid_stops)
{
    char err[256];
    stop_matcher *m = (stop_matcher *)err;
    char big[STOP_MAX_LEN + 2];
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    const char *many[STOP_MAX_STOPS + 1];
    for (int i = 0; i <= STOP_MAX_STOPS; i++)
        many[i] = "x";
    struct {
        const char *const *stops;
        size_t n;
        const char *want;
    } cases[] = {
        {(const char *const[]){"ok", ""}, 2, "stop string 1 is 0 bytes"},
        {(const char *const[]){big}, 1, "1025 bytes long: allowed 1 to 1024"},
        {many, STOP_MAX_STOPS + 1, "17 stop strings: allowed at most 16"},
        {(const char *const[]){"a\xff"}, 1, "not valid UTF-8 (at byte 1)"},
        {(const char *const[]){"\x80"}, 1, "not valid UTF-8"},
        {(const char *const[]){"\xc0\xaf"}, 1, "not valid UTF-8"},               /* overlong '/' */
        {(const char *const[]){"\xed\xa0\x80"}, 1, "not valid UTF-8"},           /* a surrogate */
        {(const char *const[]){"\xf4\x90\x80\x80"}, 1, "not valid UTF-8"},       /* > U+10FFFF */
        {(const char *const[]){"ab\xe4\xb8"}, 1, "not valid UTF-8 (at byte 2)"}, /* cut short */
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        err[0] = '\0';
        m = (stop_matcher *)err;
        ck_assert_int_eq(stop_matcher_create(&m, cases[i].stops, NULL, cases[i].n, err, sizeof err),
                         -EINVAL);
        ck_assert_ptr_null(m);
        ck_assert_msg(strstr(err, cases[i].want), "case %zu: \"%s\"", i, err);
    }
    /* explicit lengths: bytes after the length do not count; STOP_MAX_LEN is fine */
    big[STOP_MAX_LEN] = '\0';
    const char *with_len[] = {"abXX", big};
    size_t lens[] = {2, STOP_MAX_LEN};
    ck_assert_int_eq(stop_matcher_create(&m, with_len, lens, 2, err, sizeof err), 0);
    stop_output o;
    ck_assert_int_eq(stop_matcher_feed(m, "xxabX", 5, &o), 0);
    ck_assert(o.stopped && o.len == 2);
    stop_matcher_destroy(&m);
}
END_TEST

/* ---- exhaustive and random ------------------------------------------------------------------ */

START_TEST(exhaustive_binary)
{
    /* every text over {a, b} up to 8 bytes, every splitting, against several stop sets */
    const char *const sets[][3] = {{"aab", NULL},
                                   {"ab", "ba"},
                                   {"aba", "bab", "b"},
                                   {"abba", "bb", NULL},
                                   {"aaaa", "aab", NULL}};
    long runs = 0;
    for (size_t si = 0; si < sizeof sets / sizeof *sets; si++) {
        stop_set st = {0};
        for (size_t i = 0; i < 3 && sets[si][i]; i++) {
            st.s[st.n] = sets[si][i];
            st.len[st.n++] = strlen(sets[si][i]);
        }
        for (size_t n = 0; n <= 8; n++)
            for (unsigned bits = 0; bits < 1u << n; bits++) {
                char text[8];
                for (size_t i = 0; i < n; i++)
                    text[i] = (bits >> i) & 1 ? 'b' : 'a';
                unsigned n_masks = n ? 1u << (n - 1) : 1;
                for (unsigned mask = 0; mask < n_masks; mask++) {
                    size_t cuts[8], k = 0;
                    for (size_t b = 0; b + 1 < n; b++)
                        if (mask & (1u << b)) cuts[k++] = b + 1;
                    check_stream(&st, text, n, cuts, k, false);
                    runs++;
                }
            }
    }
    ck_assert_int_eq(runs,
                     5 * 43691); /* 5 sets x sum over n <= 8 of 2^n texts x 2^(n-1) splittings */
}
END_TEST

static uint64_t rng_state = 0x853c49e6748fea9bull;

static uint32_t rnd(uint32_t bound)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint32_t)((rng_state >> 11) % bound);
}

START_TEST(random_splittings)
{
    /* characters of 1 to 4 bytes; 'a' and 'b' often so that stops occur and overlap */
    const char *alphabet[] = {"a", "b", "a", "b", "c", "é", "世", "😀", "\n"};
    const size_t n_alpha = sizeof alphabet / sizeof *alphabet;
    char stop_buf[STOP_MAX_STOPS][32];
    long stopped_runs = 0;
    const int trials = 30000;
    for (int trial = 0; trial < trials; trial++) {
        stop_set st = {.n = 1 + rnd(trial % 10 == 0 ? STOP_MAX_STOPS : 4)};
        for (size_t i = 0; i < st.n; i++) {
            size_t chars = 1 + rnd(4), len = 0;
            for (size_t c = 0; c < chars; c++) {
                const char *ch = alphabet[rnd((uint32_t)n_alpha)];
                memcpy(stop_buf[i] + len, ch, strlen(ch));
                len += strlen(ch);
            }
            st.s[i] = stop_buf[i];
            st.len[i] = len;
        }
        char text[256];
        size_t bounds[64], n_bounds = 0, n = 0, n_chars = rnd(40);
        for (size_t c = 0; c < n_chars; c++) {
            const char *ch = alphabet[rnd((uint32_t)n_alpha)];
            memcpy(text + n, ch, strlen(ch));
            n += strlen(ch);
            bounds[n_bounds++] = n; /* character boundaries */
        }
        size_t cuts[128], k = 0;
        for (size_t b = 0; b < n_bounds; b++) {
            if (rnd(3) == 0) cuts[k++] = bounds[b];
            if (rnd(20) == 0) cuts[k++] = bounds[b]; /* an empty piece */
        }
        check_stream(&st, text, n, cuts, k, true);
        stopped_runs += ref_stop(&st, text, n) >= 0;
    }
    /* the random stops must actually occur often enough for the test to mean something */
    ck_assert_int_gt(stopped_runs, trials / 4);
    ck_assert_int_lt(stopped_runs, trials * 9 / 10);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("stop");
    TCase *tc = tcase_create("stop");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, straddling_pieces);
    tcase_add_test(tc, earliest_stop_wins);
    tcase_add_test(tc, overlapping_prefixes);
    tcase_add_test(tc, stop_at_start);
    tcase_add_test(tc, multibyte_text);
    tcase_add_test(tc, flush_releases_held);
    tcase_add_test(tc, long_stream);
    tcase_add_test(tc, invalid_stops);
    tcase_add_test(tc, exhaustive_binary);
    tcase_add_test(tc, random_splittings);
    suite_add_tcase(s, tc);
    SRunner *r = srunner_create(s);
    srunner_run_all(r, CK_NORMAL);
    int failed = srunner_ntests_failed(r);
    srunner_free(r);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
