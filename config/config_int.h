/*
 * Shared between config/'s files only: the key table, the error list, and the setters that
 * JSON loading and --set both go through.
 */
#ifndef MOE_CONFIG_INT_H
#define MOE_CONFIG_INT_H

#include "config/config.h"

#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum cfg__type {
    CFG__STRING,   /* char *, never NULL once set */
    CFG__NULLABLE, /* char *, NULL allowed (JSON null, empty --set value) */
    CFG__STRINGS,  /* cfg_strings */
    CFG__INT,      /* int32_t in [min, max] */
    CFG__SIZE,     /* uint64_t bytes in [min, max] */
    CFG__DURATION, /* uint64_t milliseconds in [min, max] */
    CFG__BUDGET,   /* cfg_budget; bytes in [min, max] */
    CFG__ENUM,     /* an int-sized enum, names[] in enum order */
    CFG__TRISTATE, /* cfg_tristate */
} cfg__type;

typedef struct cfg__key {
    const char *path; /* "section.key" */
    cfg__type type;
    size_t offset; /* of the field in struct cfg */
    int64_t min, max;
    const char *const *names; /* CFG__ENUM: NULL-terminated */
    const char *def;          /* the default as --set text; NULL: none */
    /* Extra rule for strings: 0, or nonzero with the problem written into why. */
    int (*check)(const char *s, char *why, size_t why_size);
    const char *what; /* what a string key expects, in words */
} cfg__key;

/* Errors collected one per line; prefix (a file name) starts every line. */
typedef struct cfg__errs {
    char *buf;
    size_t size, len;
    const char *prefix;
    int n, dropped;
    bool oom;
} cfg__errs;

void cfg__errs_add(cfg__errs *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int cfg__errs_finish(cfg__errs *e);

const cfg__key *cfg__keys(size_t *n);
const cfg__key *cfg__find_key(const char *path);
int cfg__strings_dup(cfg_strings *dst, char *const *items, size_t count);

/* "<path>: <shown> <problem>: expected <what the key takes>" */
void cfg__key_error(cfg__errs *e, const cfg__key *k, const char *path, const char *shown,
                    const char *problem);
/* A string as a JSON-quoted, shortened display value. */
void cfg__quote(const char *s, char *out, size_t out_size);
/* "<path>: unknown key; did you mean <closest>?" */
void cfg__unknown_key(const char *path, cfg__errs *e);

/* Sets one key from --set text, or from a JSON value; on error the cfg is unchanged. */
void cfg__set_text(cfg *c, const cfg__key *k, const char *text, cfg__errs *e);
void cfg__set_json(cfg *c, const cfg__key *k, const cJSON *v, cfg__errs *e);

/* Strict JSON syntax check: 0, or -EINVAL with *pos the byte offset of the first error. */
int cfg__json_check(const char *text, size_t len, size_t *pos, char *msg, size_t msg_size);

int cfg__check_path(const char *s, char *why, size_t why_size);
int cfg__check_name(const char *s, char *why, size_t why_size);
int cfg__check_host(const char *s, char *why, size_t why_size);
int cfg__check_api_key(const char *s, char *why, size_t why_size);

#endif
