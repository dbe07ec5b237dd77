/*
 * Routing traces: what the engine asked the cache for, one line per (step, layer) request —
 * "LAYER E1 E2 ..." after a "moeserve-trace 1 N_LAYER N_EXPERT" header — and what the
 * predictor expected before it, "p LAYER E1/P1 E2/P2 ..." (experts ranked, with their
 * probabilities), replayed offline through a simulated cache so that policies, budgets and
 * prefetch thresholds are compared on the same trace.
 */
#include "cache/cache.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int cache_trace_replay(FILE *trace, cache_policy policy, uint32_t n_slots, float min_prob,
                       cache_stats *out, char *err, size_t err_size)
{
    int n_layer = 0, n_expert = 0, version = 0;
    char *line = NULL;
    size_t cap = 0;
    int rc = 0;
    cache *c = NULL;
    cache_extent *ext = NULL;
    int32_t *ids = NULL;
    float *probs = NULL;
    if (getline(&line, &cap, trace) < 0 ||
        sscanf(line, "moeserve-trace %d %d %d", &version, &n_layer, &n_expert) != 3 ||
        version != 1 || n_layer <= 0 || n_expert <= 0 || n_layer > 1 << 16 || n_expert > 1 << 16) {
        snprintf(err, err_size, "trace line 1: expected 'moeserve-trace 1 N_LAYER N_EXPERT'");
        rc = -EINVAL;
        goto done;
    }
    size_t n_keys = (size_t)n_layer * (size_t)n_expert;
    ext = calloc(n_keys * CACHE_PARTS, sizeof *ext);
    ids = malloc((size_t)n_expert * sizeof *ids);
    probs = malloc((size_t)n_expert * sizeof *probs);
    if (!ext || !ids || !probs) {
        snprintf(err, err_size, "out of memory");
        rc = -ENOMEM;
        goto done;
    }
    for (size_t i = 0; i < n_keys * CACHE_PARTS; i++)
        ext[i] = (cache_extent){i * 4096, 4096};
    cache_opts o = cache_opts_default();
    o.n_layer = n_layer;
    o.n_expert = n_expert;
    o.extents = ext;
    o.simulate = true;
    o.policy = policy;
    o.budget_bytes = (uint64_t)n_slots * cache_slot_bytes(ext, n_keys);
    if ((rc = cache_open(&c, &o, err, err_size))) goto done;
    long lineno = 1;
    while (getline(&line, &cap, trace) >= 0) {
        lineno++;
        char *p = line, *end;
        bool predicted = p[0] == 'p' && p[1] == ' ';
        if (predicted) p += 2;
        long layer = strtol(p, &end, 10);
        if (end == p || layer < 0 || layer >= n_layer) goto bad;
        int32_t n = 0;
        for (p = end;;) {
            while (*p == ' ')
                p++;
            if (*p == '\n' || *p == 0) break;
            long e = strtol(p, &end, 10);
            if (end == p || e < 0 || e >= n_expert || n == n_expert) goto bad;
            p = end;
            probs[n] = 1.0f;
            if (predicted && *p == '/') {
                probs[n] = strtof(p + 1, &end);
                if (end == p + 1 || !(probs[n] >= 0.0f && probs[n] <= 1.0f)) goto bad;
                p = end;
            }
            ids[n++] = (int32_t)e;
        }
        if (predicted) {
            if (min_prob >= 0.0f &&
                (rc = cache_predict(c, (int32_t)layer, ids, probs, n, min_prob, err, err_size)) < 0)
                goto done;
            rc = 0;
            continue;
        }
        if ((rc = cache_request(c, (int32_t)layer, ids, n, err, err_size))) goto done;
        cache_ref ref;
        while ((rc = cache_next(c, &ref, err, err_size)) == 0)
            cache_release(c, &ref);
        if (rc < 0) goto done;
        rc = 0;
        continue;
    bad:
        snprintf(err, err_size,
                 "trace line %ld: expected 'LAYER EXPERT...' or 'p LAYER EXPERT/PROB...' with "
                 "layer < %d, experts < %d and probabilities in [0, 1]",
                 lineno, n_layer, n_expert);
        rc = -EINVAL;
        goto done;
    }
    cache_get_stats(c, out);
done:
    cache_close(&c);
    free(ext);
    free(ids);
    free(probs);
    free(line);
    return rc;
}
