/*
 * json_schema — keeps generated text a prefix of one JSON value that a JSON Schema accepts, for
 * OpenAI's response_format {"type": "json_schema", ...} (its structured outputs).
 *
 * Contract
 * - schema_compile reads the part of JSON Schema that a left-to-right generator can honour
 *   exactly, byte by byte, and refuses the rest with -EINVAL and a message naming the keyword and
 *   where it is, because a constraint silently not enforced would let through answers the caller
 *   relies on never seeing.  Read: "type" (one or a list), "properties", "required", "items",
 *   "enum" and "const" (of scalar values), "minLength"/"maxLength" (code points),
 *   "minItems"/"maxItems", "anyOf", "oneOf" when its alternatives cannot begin alike (then at
 *   most one matches), "$ref" to "#", "#/$defs/NAME" or "#/definitions/NAME" (recursion
 *   included), and the annotations that change nothing ("title", "description",
 *   "additionalProperties": false, "$schema", "default", ...).  The top level must be an object.
 * - Text is compact (no whitespace outside strings) and an object's properties come in the order
 *   declared, each at most once: a generator cannot go back to add a property it skipped, so the
 *   declared order is the one order it can always finish.  Properties not in "required" may be
 *   left out (OpenAI's strict mode lists them all, so there every one is written).
 * - Values nest at most SCHEMA_MAX_DEPTH deep.  A recursive schema is cut there: near the limit
 *   only values whose shortest completion still fits are allowed, so the closing text always
 *   exists.  A schema whose required values cannot fit is refused.
 * - A schema_guide follows one value: schema_guide_init, then schema_guide_feed over bytes
 *   (false at the first byte no accepted text could continue with; the guide is then unusable —
 *   test candidates on a copy made with schema_guide_copy, which copies only what is in use).
 *   Where alternatives (anyOf, a list of types) cannot be told apart yet, the guide follows each
 *   on its own stack of frames, up to SCHEMA_MAX_STACKS at once; a text that would need more is
 *   refused (feed returns false).  The guide allocates nothing, so a copy per vocabulary token is
 *   a memcpy of the frames in use.
 * - schema_guide_done: the value is complete.  schema_guide_closing writes the shortest text that
 *   completes it from the current state.
 * - A schema is read-only once compiled: guides on several threads may share it.
 */
#ifndef MOE_SAMPLING_JSON_SCHEMA_H
#define MOE_SAMPLING_JSON_SCHEMA_H

#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum { SCHEMA_MAX_DEPTH = 32, SCHEMA_MAX_ALTS = 64, SCHEMA_MAX_STACKS = 8 };

typedef struct schema schema;

int schema_compile(schema **out, const cJSON *json, char *err, size_t err_size);
void schema_free(schema **s);

/* 24 bytes and no padding: stacks are compared with memcmp to merge the ones that met again. */
typedef struct schema_frame {
    const void *node; /* the schema node this frame writes */
    uint64_t alts;    /* enum or object keys: alternatives still matching */
    uint32_t count;   /* object: next property; array: items written; string: code points */
    uint16_t pos;     /* literal: bytes matched; string: surrogate flags */
    uint8_t stage;    /* where in the node's text */
    uint8_t sub;      /* lexer state of a number or string */
} schema_frame;

typedef struct schema_guide {
    const schema *s;
    bool started;
    bool overflow; /* the last byte needed more than SCHEMA_MAX_STACKS stacks */
    bool popped;   /* a value ended since stacks were last merged */
    uint8_t n_stacks;
    uint8_t depth[SCHEMA_MAX_STACKS]; /* frames in use per stack; 0: that value is complete */
    schema_frame f[SCHEMA_MAX_STACKS][SCHEMA_MAX_DEPTH];
} schema_guide;

void schema_guide_init(schema_guide *g, const schema *s);
void schema_guide_copy(schema_guide *dst, const schema_guide *src);
bool schema_guide_feed(schema_guide *g, const char *bytes, size_t n);
bool schema_guide_done(const schema_guide *g);
/* NUL-terminated completion; its length, or -1 when it does not fit in size - 1 bytes. */
int schema_guide_closing(const schema_guide *g, char *out, size_t size);

#endif
