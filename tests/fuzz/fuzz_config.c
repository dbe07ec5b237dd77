/*
 * fuzz_config — arbitrary bytes as a deployment file and the --set overrides after it:
 * cfg_load_string on the defaults, then each later line as cfg_set, then cfg_validate, and for a
 * cfg that validates, the round trip `moeserve config show` relies on: cfg_to_json loads back
 * into a cfg that prints the same.
 *
 * Input: the JSON document, then optionally a NUL and newline-separated "section.key=value"
 * assignments.  Also checked: a load or a set that fails leaves the cfg as it was (the
 * all-or-nothing contract), seen through cfg_to_json.
 */
#include "config/config.h"
#include "fuzz.h"

#include <string.h>

static void check_unchanged_by_failure(const cfg *before_json_of, const char *before)
{
    char *after = cfg_to_json(before_json_of);
    if (after && before) FUZZ_CHECK(strcmp(after, before) == 0);
    free(after);
}

static void apply_sets(cfg *c, const char *p, size_t n)
{
    char err[1024];
    while (n > 0) {
        const char *nl = memchr(p, '\n', n);
        size_t len = nl ? (size_t)(nl - p) : n;
        char *line = strndup(p, len);
        if (line) {
            char *before = cfg_to_json(c);
            if (cfg_set(c, line, err, sizeof err) != 0) check_unchanged_by_failure(c, before);
            free(before);
            free(line);
        }
        if (!nl) break;
        p = nl + 1;
        n -= len + 1;
    }
}

static void check_round_trip(const cfg *c)
{
    char *json = cfg_to_json(c);
    if (!json) return;
    cfg back;
    char err[2048];
    if (cfg_defaults(&back, err, sizeof err) != 0) {
        free(json);
        return;
    }
    FUZZ_CHECK(cfg_load_string(&back, json, strlen(json), "(cfg_to_json)", err, sizeof err) == 0);
    FUZZ_CHECK(cfg_validate(&back, err, sizeof err) == 0);
    char *again = cfg_to_json(&back);
    if (again) FUZZ_CHECK(strcmp(json, again) == 0);
    free(again);
    free(json);
    cfg_free(&back);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const uint8_t *nul = memchr(data, 0, size);
    size_t doc_len = nul ? (size_t)(nul - data) : size;
    cfg c;
    char err[2048];
    if (cfg_defaults(&c, err, sizeof err) != 0) return 0;
    char *before = cfg_to_json(&c);
    if (cfg_load_string(&c, (const char *)data, doc_len, "fuzz.json", err, sizeof err) != 0) {
        FUZZ_CHECK(err[0] != 0);
        check_unchanged_by_failure(&c, before);
    }
    free(before);
    if (nul) apply_sets(&c, (const char *)nul + 1, size - doc_len - 1);
    if (cfg_validate(&c, err, sizeof err) == 0) {
        check_round_trip(&c);
        cfg copy;
        if (cfg_copy(&copy, &c) == 0) cfg_free(&copy);
    }
    cfg_free(&c);
    return 0;
}
