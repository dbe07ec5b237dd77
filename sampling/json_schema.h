/*
 * json_schema — keeps generated text a prefix of one JSON value that a JSON Schema accepts, for
 * OpenAI's response_format {"type": "json_schema", ...} (its strict structured outputs).
 *
 * Contract
 * - schema_compile reads the subset of JSON Schema that OpenAI's strict mode allows and that a
 *   left-to-right generator can honour exactly: "type" (object, array, string, number, integer,
 *   boolean, null; or a list of them is refused), "properties" with "required", "items", "enum"
 *   and "const" (of scalar values), and the annotations that change nothing ("title",
 *   "description", "additionalProperties": false, "$schema", "default", "examples", "strict").
 *   Anything else ($ref, anyOf, pattern, minLength, ...) is refused with -EINVAL and a message
 *   naming the keyword and where it is, rather than silently not enforced.  Objects are written
 *   with every declared property, in the order declared (OpenAI's strict mode requires them all),
 *   and nothing else; text is compact (no whitespace outside strings).
 * - A schema_guide follows one value: schema_guide_init, then schema_guide_feed over bytes
 *   (false at the first byte no accepted text could continue with; the guide is then unusable —
 *   test candidates on a copy made with schema_guide_copy, which copies only what is in use).
 * - schema_guide_done: the value is complete.  schema_guide_closing writes the shortest text that
 *   completes it from the current state.
 */
#ifndef MOE_SAMPLING_JSON_SCHEMA_H
#define MOE_SAMPLING_JSON_SCHEMA_H

#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum { SCHEMA_MAX_DEPTH = 32, SCHEMA_MAX_ALTS = 64 };

typedef struct schema schema;

int schema_compile(schema **out, const cJSON *json, char *err, size_t err_size);
void schema_free(schema **s);

typedef struct schema_frame {
    const void *node; /* the schema node this frame writes */
    uint8_t stage;    /* where in the node's text */
    uint8_t sub;      /* number sub-state, hex digits due, literal progress */
    uint16_t index;   /* property or item counter */
    uint64_t alts;    /* enum: alternatives still matching */
    uint16_t pos;     /* enum / literal: bytes matched */
} schema_frame;

typedef struct schema_guide {
    const schema *s;
    int depth; /* frames in use; 0 when the value is complete */
    bool started;
    schema_frame f[SCHEMA_MAX_DEPTH];
} schema_guide;

void schema_guide_init(schema_guide *g, const schema *s);
void schema_guide_copy(schema_guide *dst, const schema_guide *src);
bool schema_guide_feed(schema_guide *g, const char *bytes, size_t n);
bool schema_guide_done(const schema_guide *g);
/* NUL-terminated completion; its length, or -1 when it does not fit in size - 1 bytes. */
int schema_guide_closing(const schema_guide *g, char *out, size_t size);

#endif
