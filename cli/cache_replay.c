/*
 * `moeserve cache-replay TRACE`: replays a routing trace (recorded with --trace) through the
 * cache's policies at several budgets and prefetch thresholds, offline, and prints the hit
 * rate and the reads of each — so that a policy is judged on the same requests and the same
 * predictions as its rivals, not on a different run.
 */
#include "cli/cli.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void usage(FILE *out)
{
    fprintf(out,
            "usage: moeserve cache-replay TRACE [--slots N[,N...]] [--policy "
            "lru|lfu|lru-protect|lfu-history|lru-predict|all]\n"
            "                              [--min-prob off|P[,P...]]\n"
            "  TRACE          a routing trace written by `generate`/`bench --trace FILE`\n"
            "  --slots LIST   experts the cache holds (default: 1/8, 1/4, 1/2 of all experts)\n"
            "  --policy P     one policy or all (default all)\n"
            "  --min-prob L   prefetch the trace's predictions at least this likely (0..1), or\n"
            "                 off (default off; a trace recorded with a predictor has them)\n");
}

int cli_cache_replay(int argc, char **argv)
{
    const char *path = NULL, *slots_arg = NULL, *policy_arg = "all", *prob_arg = "off";
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(argv[i], "--slots") && i + 1 < argc) {
            slots_arg = argv[++i];
        } else if (!strcmp(argv[i], "--policy") && i + 1 < argc) {
            policy_arg = argv[++i];
        } else if (!strcmp(argv[i], "--min-prob") && i + 1 < argc) {
            prob_arg = argv[++i];
        } else if (argv[i][0] != '-' && !path) {
            path = argv[i];
        } else {
            fprintf(stderr, "moeserve cache-replay: unknown or incomplete option '%s'\n", argv[i]);
            usage(stderr);
            return 2;
        }
    }
    if (!path) {
        usage(stderr);
        return 2;
    }
    FILE *f = fopen(path, "r");
    if (!f) {
        fprintf(stderr, "moeserve cache-replay: cannot open %s: %s\n", path, strerror(errno));
        return 1;
    }
    int n_layer = 0, n_expert = 0, version = 0;
    if (fscanf(f, "moeserve-trace %d %d %d", &version, &n_layer, &n_expert) != 3 || n_layer <= 0 ||
        n_expert <= 0) {
        fprintf(stderr, "moeserve cache-replay: %s is not a routing trace\n", path);
        fclose(f);
        return 1;
    }
    uint32_t total = (uint32_t)n_layer * (uint32_t)n_expert, slots[16];
    int n_slots = 0;
    if (slots_arg) {
        const char *p = slots_arg;
        while (*p && n_slots < 16) {
            char *end;
            long v = strtol(p, &end, 10);
            if (end == p || v <= 0 || v > (long)total || (*end && *end != ',')) {
                fprintf(stderr,
                        "moeserve cache-replay: --slots expects numbers 1..%u separated "
                        "by commas, got '%s'\n",
                        total, slots_arg);
                fclose(f);
                return 2;
            }
            slots[n_slots++] = (uint32_t)v;
            p = *end ? end + 1 : end;
        }
    } else {
        slots[n_slots++] = total / 8 ? total / 8 : 1;
        slots[n_slots++] = total / 4 ? total / 4 : 1;
        slots[n_slots++] = total / 2 ? total / 2 : 1;
    }
    float probs[16];
    int n_probs = 0;
    {
        const char *p = prob_arg;
        while (*p && n_probs < 16) {
            char *end;
            float v = strtof(p, &end);
            if (!strncmp(p, "off", 3)) { /* no prefetching: the baseline */
                v = -1.0f;
                end = (char *)p + 3;
            } else if (end == p || !(v >= 0.0f && v <= 1.0f)) {
                end = (char *)p; /* refused below */
            }
            if (end == p || (*end && *end != ',') || (*end == ',' && !end[1])) {
                fprintf(stderr,
                        "moeserve cache-replay: --min-prob expects off or probabilities "
                        "0..1 separated by commas, got '%s'\n",
                        prob_arg);
                fclose(f);
                return 2;
            }
            probs[n_probs++] = v;
            p = *end ? end + 1 : end;
        }
    }
    if (n_probs == 0) {
        fprintf(stderr, "moeserve cache-replay: --min-prob expects off or probabilities 0..1\n");
        fclose(f);
        return 2;
    }
    int status = 0;
    printf("| policy | slots | of experts | prefetch | requests | hit rate | reads | prefetches "
           "used / issued | evictions |\n"
           "|---|---|---|---|---|---|---|---|---|\n");
    for (int p = 0; p < CACHE_POLICY_COUNT && !status; p++) {
        if (strcmp(policy_arg, "all") && strcmp(policy_arg, cache_policy_name((cache_policy)p)))
            continue;
        for (int s = 0; s < n_slots && !status; s++) {
            for (int q = 0; q < n_probs; q++) {
                char err[256], pf[32];
                cache_stats st;
                rewind(f);
                int rc = cache_trace_replay(f, (cache_policy)p, slots[s], probs[q], &st, err,
                                            sizeof err);
                if (rc) {
                    fprintf(stderr, "moeserve cache-replay: %s: %s\n", path, err);
                    status = 1;
                    break;
                }
                uint64_t req = st.hits + st.misses;
                if (probs[q] < 0.0f)
                    snprintf(pf, sizeof pf, "off");
                else
                    snprintf(pf, sizeof pf, "p >= %.2f", probs[q]);
                printf("| %s | %u | %.0f%% | %s | %llu | %.1f%% | %llu | %llu / %llu | %llu |\n",
                       cache_policy_name((cache_policy)p), slots[s], 100.0 * slots[s] / total, pf,
                       (unsigned long long)req, req ? 100.0 * (double)st.hits / (double)req : 0.0,
                       (unsigned long long)(st.misses + st.prefetch_issued),
                       (unsigned long long)st.prefetch_used, (unsigned long long)st.prefetch_issued,
                       (unsigned long long)st.evictions);
            }
        }
    }
    if (strcmp(policy_arg, "all") && cache_policy_parse(policy_arg, &(cache_policy){0})) {
        fprintf(stderr,
                "moeserve cache-replay: --policy expects lru, lfu, lru-protect, lfu-history, "
                "lru-predict or all\n");
        status = 2;
    }
    fclose(f);
    return status;
}
