/*
 * json_guide — keeps generated text a prefix of one JSON object, for OpenAI's
 * response_format {"type": "json_object"}: before each token the engine asks which tokens'
 * bytes the guide accepts and samples among those only, so even a model that knows nothing of
 * JSON produces a well-formed object.
 *
 * Contract
 * - A guide is a small value, copied by assignment: json_guide_init starts it before the first
 *   byte; json_guide_feed advances it over bytes and returns false at the first byte that no JSON
 *   object text could continue with (the guide is then unusable — to test a candidate, feed a
 *   copy).
 * - The text accepted is RFC 8259 JSON whose top level is an object, written compactly: no
 *   whitespace outside strings (a model cannot pad forever), nesting at most
 *   JSON_GUIDE_MAX_DEPTH deep.  Strings may hold any byte from 0x20 up (UTF-8 is the
 *   tokenizer's business) and the escapes JSON allows.
 * - json_guide_done: the object is closed; nothing may follow but the end of generation.
 * - json_guide_closing writes the shortest text that completes the object from the current
 *   state (what the engine forces when max_tokens is about to run out).
 */
#ifndef MOE_SAMPLING_JSON_GUIDE_H
#define MOE_SAMPLING_JSON_GUIDE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum { JSON_GUIDE_MAX_DEPTH = 64 };

typedef struct json_guide {
    uint64_t objects; /* bit d: the container at depth d is an object (else an array) */
    uint8_t depth;    /* containers open */
    uint8_t state;
    uint8_t aux; /* number sub-state, literal position, hex digits still due */
    uint8_t lit; /* which literal: true, false, null */
    bool key;    /* the string being read is an object's key */
} json_guide;

void json_guide_init(json_guide *g);
bool json_guide_feed(json_guide *g, const char *bytes, size_t n);
bool json_guide_done(const json_guide *g);
/* Writes the completion (NUL-terminated, at most size - 1 bytes); returns its length, or -1
 * when it does not fit. */
int json_guide_closing(const json_guide *g, char *out, size_t size);

#endif
