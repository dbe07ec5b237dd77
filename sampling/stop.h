/*
 * stop — stop strings over streamed text.
 *
 * Contract
 * - Text arrives in pieces (token by token, each piece whole UTF-8 characters).  A stop string
 *   may straddle any number of pieces.  The matcher releases text as soon as it can no longer
 *   be the beginning of a stop string and holds back the rest: the held-back text is always
 *   the longest suffix of what came in that is a proper prefix of some stop string.
 * - Where the stream stops: at the first byte where some stop string is complete, i.e. the
 *   match with the earliest END in the concatenated text (this is what generating the text
 *   one character at a time would hit first, and it does not depend on how the text was cut
 *   into pieces).  Among stop strings ending at that byte, the one that starts earliest (the
 *   longest) wins.  The output ends right before the start of that match; the stop string and
 *   everything after it are never released, and once stopped every later feed releases
 *   nothing and reports stopped.
 * - Stop strings: 1..STOP_MAX_STOPS of them (OpenAI allows 4), each 1..STOP_MAX_LEN bytes of
 *   valid UTF-8 (then released text never ends inside a character, since a match or a
 *   held-back prefix can only begin on a character boundary of valid text).  Zero stop
 *   strings is a pass-through.  The matcher copies them.
 * - Cost: finding complete stops is O(n_stops x (piece + longest stop)) per piece; finding the
 *   held-back suffix tries each byte of the stream once as its start, against each stop
 *   string (a memcmp that usually ends at the first byte).  No allocation once the internal
 *   buffer has grown to the longest stop string plus the longest piece.
 * - stop_output.text points into the matcher (with zero stop strings: the piece itself) and
 *   stays valid until the next call on the matcher.
 *   A matcher belongs to one sequence and is used by one thread at a time.
 * - Errors are negative errno values with a message in the caller's buffer.
 */
#ifndef MOE_STOP_H
#define MOE_STOP_H

#include <stdbool.h>
#include <stddef.h>

enum { STOP_MAX_STOPS = 16, STOP_MAX_LEN = 1024 };

typedef struct stop_matcher stop_matcher;

typedef struct stop_output {
    const char *text; /* released text; valid until the next call on the matcher */
    size_t len;
    bool stopped; /* a stop string matched: text is the last output, nothing follows */
} stop_output;

/* lens NULL: the stops are NUL-terminated.  -EINVAL for an empty, too long or invalid UTF-8
 * stop string or too many of them, -ENOMEM. */
int stop_matcher_create(stop_matcher **out, const char *const *stops, const size_t *lens,
                        size_t n_stops, char *err, size_t err_size);

/* Feeds the next piece; out receives what can be released now.  -ENOMEM when the buffer
 * cannot grow (out is then empty and the matcher unchanged). */
int stop_matcher_feed(stop_matcher *m, const char *text, size_t len, stop_output *out);

/* At the end of the stream (no stop matched): releases the held-back text.  After a stop it
 * releases nothing.  The matcher is done afterwards: later feeds release nothing. */
void stop_matcher_flush(stop_matcher *m, stop_output *out);

/* Frees the matcher and sets *m to NULL; NULL and *m == NULL are fine. */
void stop_matcher_destroy(stop_matcher **m);

#endif
