/*
 * stop.c — the stop-string matcher of stop.h.
 *
 * The matcher keeps one buffer: the text held back (a proper prefix of some stop string) with
 * the new piece appended.  A feed looks for a complete stop that ENDS inside the new piece
 * (none can end in the held part, or it would have matched on an earlier feed), then finds
 * where the held-back suffix starts and releases everything before it.  The released bytes
 * stay at the front of the buffer, so the caller can read them in place, and are dropped at
 * the start of the next call.
 *
 * Plain memmem / memcmp rather than Aho-Corasick: at most 16 stop strings of at most 1 KiB,
 * and the start of the held-back suffix only moves forward through the text, so each byte is
 * tried as a suffix start once per stop string over the whole stream.
 */
#include "sampling/stop.h"

#include "base/utf8.h"
#include "base/vec.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct stop_matcher {
    size_t n_stops;
    const char *stop[STOP_MAX_STOPS]; /* point into stop_bytes */
    size_t stop_len[STOP_MAX_STOPS];
    size_t max_len;
    char *stop_bytes;

    char *buf;
    size_t len, cap;
    size_t released; /* buf[0..released) went out on the last call; dropped on the next */
    bool stopped;
    bool done; /* flushed */
};

int stop_matcher_create(stop_matcher **out, const char *const *stops, const size_t *lens,
                        size_t n_stops, char *err, size_t err_size)
{
    *out = NULL;
    if (n_stops > STOP_MAX_STOPS) {
        snprintf(err, err_size, "%zu stop strings: allowed at most %d", n_stops, STOP_MAX_STOPS);
        return -EINVAL;
    }
    size_t total = 0;
    for (size_t i = 0; i < n_stops; i++) {
        size_t len = lens ? lens[i] : strlen(stops[i]);
        if (len == 0 || len > STOP_MAX_LEN) {
            snprintf(err, err_size, "stop string %zu is %zu bytes long: allowed 1 to %d", i, len,
                     STOP_MAX_LEN);
            return -EINVAL;
        }
        size_t bad = utf8_valid_prefix(stops[i], len);
        if (bad != len) {
            snprintf(err, err_size, "stop string %zu is not valid UTF-8 (at byte %zu)", i, bad);
            return -EINVAL;
        }
        total += len;
    }

    stop_matcher *m = calloc(1, sizeof *m);
    if (!m) goto oom;
    m->stop_bytes = malloc(total ? total : 1);
    if (!m->stop_bytes) goto oom;
    size_t at = 0;
    for (size_t i = 0; i < n_stops; i++) {
        size_t len = lens ? lens[i] : strlen(stops[i]);
        memcpy(m->stop_bytes + at, stops[i], len);
        m->stop[i] = m->stop_bytes + at;
        m->stop_len[i] = len;
        if (len > m->max_len) m->max_len = len;
        at += len;
    }
    m->n_stops = n_stops;
    *out = m;
    return 0;

oom:
    snprintf(err, err_size, "out of memory for a stop matcher");
    stop_matcher_destroy(&m);
    return -ENOMEM;
}

void stop_matcher_destroy(stop_matcher **mp)
{
    if (!mp || !*mp) return;
    free((*mp)->stop_bytes);
    free((*mp)->buf);
    free(*mp);
    *mp = NULL;
}

static void drop_released(stop_matcher *m)
{
    if (m->released == 0) return;
    memmove(m->buf, m->buf + m->released, m->len - m->released);
    m->len -= m->released;
    m->released = 0;
}

static void emit(stop_matcher *m, size_t len, stop_output *out)
{
    out->text = len ? m->buf : "";
    out->len = len;
    out->stopped = m->stopped;
    m->released = len;
}

/* Start of the earliest-ending complete stop that ends after byte `old_len`, or SIZE_MAX. */
static size_t find_stop(const stop_matcher *m, size_t old_len)
{
    size_t best_start = SIZE_MAX, best_end = SIZE_MAX;
    for (size_t i = 0; i < m->n_stops; i++) {
        size_t len = m->stop_len[i];
        if (len > m->len) continue;
        size_t from = old_len + 1 > len ? old_len + 1 - len : 0;
        const char *hit = memmem(m->buf + from, m->len - from, m->stop[i], len);
        if (!hit) continue;
        size_t start = (size_t)(hit - m->buf), end = start + len;
        if (end < best_end || (end == best_end && start < best_start)) {
            best_start = start;
            best_end = end;
        }
    }
    return best_start;
}

/* Where the longest suffix of buf that is a proper prefix of some stop begins (m->len when
 * there is none): everything before it can never be part of a match. */
static size_t held_start(const stop_matcher *m)
{
    size_t j = m->len > m->max_len - 1 ? m->len - (m->max_len - 1) : 0;
    for (; j < m->len; j++) {
        size_t tail = m->len - j;
        for (size_t i = 0; i < m->n_stops; i++)
            if (tail < m->stop_len[i] && memcmp(m->buf + j, m->stop[i], tail) == 0) return j;
    }
    return m->len;
}

int stop_matcher_feed(stop_matcher *m, const char *text, size_t len, stop_output *out)
{
    drop_released(m);
    if (m->stopped || m->done) {
        emit(m, 0, out);
        return 0;
    }
    if (m->n_stops == 0) { /* pass-through: nothing is ever held */
        out->text = len ? text : "";
        out->len = len;
        out->stopped = false;
        return 0;
    }
    if (len > SIZE_MAX - m->len) goto oom;
    if (vec_reserve(&m->buf, &m->cap, m->len + len, 1, 64) < 0) goto oom;
    size_t old_len = m->len;
    if (len) memcpy(m->buf + m->len, text, len);
    m->len += len;

    size_t match = find_stop(m, old_len);
    if (match != SIZE_MAX) {
        m->stopped = true;
        m->len = match; /* the stop and what follows are gone for good */
        emit(m, match, out);
        return 0;
    }
    emit(m, held_start(m), out);
    return 0;

oom:
    emit(m, 0, out);
    return -ENOMEM;
}

void stop_matcher_flush(stop_matcher *m, stop_output *out)
{
    drop_released(m);
    if (m->stopped || m->done) {
        emit(m, 0, out);
        return;
    }
    m->done = true;
    emit(m, m->len, out);
}
