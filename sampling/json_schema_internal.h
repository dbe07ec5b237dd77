/*
 * json_schema internals shared by its two halves: the compiled schema (json_schema_compile.c
 * builds it) and the guide that follows it byte by byte (json_schema.c).  Internal to sampling/.
 */
#ifndef MOE_SAMPLING_JSON_SCHEMA_INTERNAL_H
#define MOE_SAMPLING_JSON_SCHEMA_INTERNAL_H

#include "sampling/json_schema.h"

#include <stdbool.h>
#include <stdint.h>

typedef enum {
    K_OBJECT,
    K_ARRAY,
    K_STRING,
    K_NUMBER,
    K_INTEGER,
    K_ENUM, /* boolean, null, enum and const: a choice of literal texts */
    K_ANY,  /* anyOf, oneOf, a list of types */
    K_REF,  /* a $ref until compiling ends; the guide never sees one */
} kind;

#define NO_LEN UINT32_MAX /* no value fits */
#define NO_MAX UINT32_MAX
/* how deep the schema's own JSON (through $refs) may nest: the compiler recurses on it */
enum { COMPILE_MAX_NESTING = 64 };

typedef struct node {
    kind k;
    int n;       /* object: properties; enum: alternatives; anyOf: alternatives as written */
    char **lits; /* object: `"key":` per property; enum: each alternative's JSON text */
    size_t *lens;
    struct node **kids;            /* object: property values; array: kids[0], the items; anyOf: the
                                      alternatives; $ref: kids[0], the target */
    char *path;                    /* for messages */
    uint64_t required;             /* object: a bit per required property */
    uint32_t min_count, max_count; /* string: code points; array: items */
    bool one_of;
    uint8_t visiting; /* flatten's walk: 1 on the way, 2 done */
    int n_leaves;     /* anyOf: the alternatives, nested anyOfs flattened */
    struct node *leaves[SCHEMA_MAX_STACKS];
    uint64_t first[4];                   /* the bytes a value can begin with */
    uint32_t len[SCHEMA_MAX_DEPTH + 1];  /* shortest value within b frames */
    uint64_t fits[SCHEMA_MAX_DEPTH + 1]; /* object: properties whose value fits in b frames */
} node;

struct schema {
    node *root;
    node **all; /* every node, for freeing */
    int n_all, cap_all;
};

/* Whether a value of n can begin with byte b. */
static inline bool has_first(const node *n, unsigned char b)
{
    return (n->first[b >> 6] >> (b & 63)) & 1u;
}

#endif
