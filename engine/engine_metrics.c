/*
 * The engine's Prometheus families (expert tiers, routing, predictor, scheduler, prefix cache,
 * constrained decoding) and the expert map behind /v1/experts/stats.  Loop thread; everything
 * read here is an atomic counter or taken under its owner's lock.
 */
#include "engine/engine_internal.h"

#include "server/metrics.h"

#include <stdio.h>
#include <string.h>

/* ---- metrics (loop thread) ------------------------------------------------------------------ */

/* A family with one sample. */
static void single(srv_mx_buf *b, const char *name, const char *type, const char *help,
                   const char *labels, double value)
{
    srv_mx_family(b, name, type, help);
    srv_mx_sample(b, name, labels, value);
}

/* The expert tiers: one sample per tier (tier="host", and tier="device" on a device backend) of
 * the per-tier families; storage reads from the host tier; stalls and prefetches from the tier
 * the engine asks (the nearest one). */
static void write_cache(srv_mx_buf *b, const cache *host, const cache *nearest,
                        uint64_t cpu_experts)
{
    cache_stats tiers[2];
    const char *labels[2] = {"{tier=\"host\"}", "{tier=\"device\"}"};
    int n_tiers = nearest != host ? 2 : 1;
    cache_get_stats(host, &tiers[0]);
    if (n_tiers == 2) cache_get_stats(nearest, &tiers[1]);
    const cache_stats *st = &tiers[0], *near = &tiers[n_tiers - 1];
    static const struct {
        const char *name, *type, *help;
    } per_tier[] = {
        {"moeserve_expert_cache_hits_total", "counter",
         "Requested experts that were resident in the tier or already being loaded"},
        {"moeserve_expert_cache_misses_total", "counter",
         "Requested experts that had to be loaded into the tier"},
        {"moeserve_expert_cache_evictions_total", "counter", "Experts evicted to make room"},
        {"moeserve_expert_cache_resident_experts", "gauge", "Experts held complete in the tier"},
        {"moeserve_expert_cache_resident_bytes", "gauge",
         "Bytes of slots holding a complete expert"},
        {"moeserve_expert_cache_capacity_experts", "gauge", "Slots in the tier"},
        {"moeserve_expert_cache_capacity_bytes", "gauge", "Bytes of the tier's arena"},
    };
    for (size_t i = 0; i < sizeof per_tier / sizeof per_tier[0]; i++) {
        srv_mx_family(b, per_tier[i].name, per_tier[i].type, per_tier[i].help);
        for (int t = 0; t < n_tiers; t++) {
            const cache_stats *c = &tiers[t];
            double v[] = {(double)c->hits,
                          (double)c->misses,
                          (double)c->evictions,
                          (double)c->resident,
                          (double)c->resident * (double)c->slot_bytes,
                          (double)c->n_slots,
                          (double)c->n_slots * (double)c->slot_bytes};
            srv_mx_sample(b, per_tier[i].name, labels[t], v[i]);
        }
    }
    const struct {
        const char *name, *type, *help;
        double value;
    } rows[] = {
        {"moeserve_expert_storage_read_bytes_total", "counter",
         "Bytes read from the model file into the host tier (with alignment padding)",
         (double)st->bytes_read},
        {"moeserve_expert_storage_reads_total", "counter",
         "Read operations completed against the model file", (double)st->reads},
        {"moeserve_expert_storage_read_errors_total", "counter",
         "Reads that failed (the request that needed them failed with a clear error)",
         (double)st->read_errors},
        {"moeserve_expert_device_copy_bytes_total", "counter",
         "Bytes copied from the host tier into the device tier (0 without a device tier)",
         n_tiers == 2 ? (double)near->bytes_read : 0.0},
        {"moeserve_expert_cpu_computed_total", "counter",
         "Experts a device backend computed on the CPU from the host tier instead of copying them",
         (double)cpu_experts},
        {"moeserve_engine_expert_stall_seconds_total", "counter",
         "Time the engine waited for experts to be read or copied", (double)near->stall_ns * 1e-9},
        {"moeserve_expert_prefetches_total", "counter",
         "Experts loaded ahead for the predictor's guesses", (double)near->prefetch_issued},
        {"moeserve_expert_prefetches_used_total", "counter",
         "Prefetched experts that a later request asked for", (double)near->prefetch_used},
        {"moeserve_expert_prefetches_wasted_total", "counter",
         "Prefetched experts evicted before any request asked for them",
         (double)near->prefetch_wasted},
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++)
        single(b, rows[i].name, rows[i].type, rows[i].help, "", rows[i].value);
    srv_mx_family(b, "moeserve_expert_load_seconds", "histogram",
                  "Time from submitting an expert's reads to the expert being resident in the host "
                  "tier");
    srv_mx_histogram_write_counts(b, "moeserve_expert_load_seconds", cache_read_bounds,
                                  CACHE_READ_BUCKETS - 1, st->read_hist,
                                  (double)st->read_ns_sum * 1e-9);
}

static double ratio(uint64_t num, uint64_t den)
{
    return den ? (double)num / (double)den : 0.0;
}

static void write_routing(srv_mx_buf *b, const model *m)
{
    const model_hparams *hp = model_params(m);
    char labels[96];
    srv_mx_family(b, "moeserve_expert_activations_total", "counter",
                  "Tokens routed to each expert of each layer");
    for (int il = 0; il < hp->n_layer; il++) {
        for (int e = 0; e < hp->n_expert; e++) {
            snprintf(labels, sizeof labels, "{layer=\"%d\",expert=\"%d\"}", il, e);
            srv_mx_sample_u64(b, "moeserve_expert_activations_total", labels,
                              model_expert_tokens(m, il, e));
        }
    }
    const pred *p = model_predictor(m);
    static const struct {
        const char *name, *type, *help;
    } fam[] = {
        {"moeserve_predictor_guessed_experts_total", "counter",
         "Experts the predictor guessed for the layer"},
        {"moeserve_predictor_correct_experts_total", "counter",
         "Guessed experts the layer then used"},
        {"moeserve_predictor_used_experts_total", "counter",
         "Experts the layer used in steps with a guess"},
        {"moeserve_predictor_precision_ratio", "gauge", "Correct / guessed, since start"},
        {"moeserve_predictor_recall_ratio", "gauge", "Correct / used, since start"},
    };
    /* With the predictor off the families stay, at zero under predictor="none", so that
     * dashboards and alerts keep their series. */
    for (int f = 0; f < 5; f++) {
        srv_mx_family(b, fam[f].name, fam[f].type, fam[f].help);
        for (int il = 1; il < hp->n_layer; il++) {
            pred_layer_stats ls = {0};
            if (p) pred_get_stats(p, il, &ls);
            snprintf(labels, sizeof labels, "{predictor=\"%s\",layer=\"%d\"}",
                     p ? pred_kind_name(pred_get_kind(p)) : "none", il);
            const double values[5] = {(double)ls.guessed, (double)ls.correct, (double)ls.used,
                                      ratio(ls.correct, ls.guessed), ratio(ls.correct, ls.used)};
            srv_mx_sample(b, fam[f].name, labels, values[f]);
        }
    }
}

/* ---- the expert map (/v1/experts/stats) ---------------------------------------------------- */

static void json_tier(srv_mx_buf *b, const char *name, const cache *c, bool comma)
{
    cache_stats st;
    cache_get_stats(c, &st);
    srv_mx_printf(b,
                  "%s\"%s\":{\"hits\":%llu,\"misses\":%llu,\"evictions\":%llu,"
                  "\"hit_rate\":%.6f,\"resident_experts\":%u,\"capacity_experts\":%u,"
                  "\"slot_bytes\":%llu,\"bytes_read\":%llu,\"stall_seconds\":%.6f,"
                  "\"prefetches\":%llu,\"prefetches_used\":%llu}",
                  comma ? "," : "", name, (unsigned long long)st.hits,
                  (unsigned long long)st.misses, (unsigned long long)st.evictions,
                  ratio(st.hits, st.hits + st.misses), st.resident, st.n_slots,
                  (unsigned long long)st.slot_bytes, (unsigned long long)st.bytes_read,
                  (double)st.stall_ns * 1e-9, (unsigned long long)st.prefetch_issued,
                  (unsigned long long)st.prefetch_used);
}

/* One row per layer of 0/1: which experts the tier holds complete. */
static void json_residency(srv_mx_buf *b, const char *name, const cache *c, int n_layer,
                           int n_expert, bool comma)
{
    srv_mx_printf(b, "%s\"%s\":[", comma ? "," : "", name);
    for (int il = 0; il < n_layer; il++) {
        srv_mx_printf(b, "%s\"", il ? "," : "");
        for (int e = 0; e < n_expert; e++)
            srv_mx_printf(b, "%c", cache_resident(c, il, e) ? '1' : '0');
        srv_mx_printf(b, "\"");
    }
    srv_mx_printf(b, "]");
}

void engine_write_expert_stats(void *user, srv_mx_buf *b)
{
    engine *e = user;
    if (!atomic_load(&e->ready)) {
        srv_mx_printf(b, "{\"ready\":false}");
        return;
    }
    const model_hparams *hp = model_params(e->m);
    scheduler_stats st;
    scheduler_get_stats(e->sched, &st);
    srv_mx_printf(b,
                  "{\"ready\":true,\"arch\":\"%s\",\"n_layer\":%d,\"n_expert\":%d,"
                  "\"n_expert_used\":%d,\"engine\":{\"steps\":%llu,\"tokens\":%llu,"
                  "\"prompt_tokens\":%llu,\"decode_tokens\":%llu,\"step_seconds\":%.6f,"
                  "\"running\":%u,\"waiting\":%u},\"activations\":[",
                  model_arch_name(hp->arch), hp->n_layer, hp->n_expert, hp->n_expert_used,
                  (unsigned long long)st.steps, (unsigned long long)st.tokens,
                  (unsigned long long)st.prompt_tokens, (unsigned long long)st.decode_tokens,
                  (double)st.step_ns * 1e-9, st.running, st.waiting);
    for (int il = 0; il < hp->n_layer; il++) {
        srv_mx_printf(b, "%s[", il ? "," : "");
        for (int x = 0; x < hp->n_expert; x++)
            srv_mx_printf(b, "%s%llu", x ? "," : "",
                          (unsigned long long)model_expert_tokens(e->m, il, x));
        srv_mx_printf(b, "]");
    }
    srv_mx_printf(b, "]");
    /* Tiers nearest the file first; without a cache every expert is read through the mapping. */
    const cache *host = model_host_cache(e->m), *nearest = model_expert_cache(e->m);
    srv_mx_printf(b, ",\"tiers\":{");
    if (host) json_tier(b, "host", host, false);
    if (nearest && nearest != host) json_tier(b, "device", nearest, host != NULL);
    srv_mx_printf(b, "},\"resident\":{");
    if (host) json_residency(b, "host", host, hp->n_layer, hp->n_expert, false);
    if (nearest && nearest != host)
        json_residency(b, "device", nearest, hp->n_layer, hp->n_expert, host != NULL);
    const pred *p = model_predictor(e->m);
    srv_mx_printf(b, "},\"predictor\":{\"kind\":\"%s\",\"layers\":[",
                  p ? pred_kind_name(pred_get_kind(p)) : "none");
    for (int il = 1; p && il < hp->n_layer; il++) {
        pred_layer_stats ls;
        pred_get_stats(p, il, &ls);
        srv_mx_printf(b,
                      "%s{\"layer\":%d,\"guessed\":%llu,\"correct\":%llu,\"used\":%llu,"
                      "\"precision\":%.6f,\"recall\":%.6f}",
                      il > 1 ? "," : "", il, (unsigned long long)ls.guessed,
                      (unsigned long long)ls.correct, (unsigned long long)ls.used,
                      ratio(ls.correct, ls.guessed), ratio(ls.correct, ls.used));
    }
    srv_mx_printf(b, "]}}");
}

void engine_write_metrics(void *user, srv_mx_buf *b)
{
    engine *e = user;
    if (!atomic_load(&e->ready)) return;
    scheduler_stats st;
    scheduler_get_stats(e->sched, &st);
    srv_mx_family(b, "moeserve_engine_steps_total", "counter", "Engine steps (forward passes)");
    srv_mx_sample_u64(b, "moeserve_engine_steps_total", "", st.steps);
    srv_mx_family(b, "moeserve_engine_step_seconds_total", "counter",
                  "Time spent in forward passes");
    srv_mx_sample(b, "moeserve_engine_step_seconds_total", "", (double)st.step_ns * 1e-9);
    srv_mx_family(b, "moeserve_engine_batch_tokens", "histogram",
                  "Tokens per engine step (decode tokens plus prompt chunks)");
    srv_mx_histogram_write_counts(b, "moeserve_engine_batch_tokens", scheduler_batch_bounds,
                                  SCHEDULER_BATCH_BUCKETS - 1, st.batch_hist, (double)st.tokens);
    /* The KV cache is paged: allocated memory grows with the positions held; used is the
     * blocks live sequences hold. */
    uint64_t kv = scheduler_kv_bytes(e->sched), used = scheduler_kv_used_bytes(e->sched);
    srv_mx_family(b, "moeserve_kv_cache_bytes", "gauge",
                  "KV cache memory allocated, by state: blocks held by sequences are used");
    srv_mx_sample_u64(b, "moeserve_kv_cache_bytes", "{state=\"used\"}", used);
    srv_mx_sample_u64(b, "moeserve_kv_cache_bytes", "{state=\"free\"}", kv - used);
    const struct {
        const char *name, *type, *help;
        double value;
    } rows[] = {
        {"moeserve_prefix_cache_queries_total", "counter",
         "Admitted requests whose prompt was looked up in the prefix cache",
         (double)st.prefix_queries},
        {"moeserve_prefix_cache_hit_tokens_total", "counter",
         "Prompt tokens taken from cached KV blocks instead of being prefilled",
         (double)st.prefix_hit_tokens},
        {"moeserve_prefix_cache_evictions_total", "counter",
         "Cached KV blocks given up because the KV memory was needed", (double)st.prefix_evictions},
        {"moeserve_prefix_cache_blocks", "gauge", "KV blocks no request holds, kept for reuse",
         (double)st.prefix_cached_blocks},
        {"moeserve_engine_step_retries_total", "counter",
         "Steps run again because an expert could not be read (the requests went on)",
         (double)st.step_retries},
        {"moeserve_engine_steps_routed_on_device_total", "counter",
         "Steps whose experts were chosen and grouped on the device (no host round trip per "
         "layer: every expert there)",
         (double)st.steps_routed_on_device},
        {"moeserve_engine_graph_replays_total", "counter",
         "Steps launched as a graph that an earlier step of the same shape recorded",
         (double)st.graph_replays},
        {"moeserve_expert_cpu_seconds_total", "counter",
         "Time the CPU spent computing the device tier's misses (beside the device's work)",
         (double)st.cpu_expert_ns * 1e-9},
        {"moeserve_engine_cpu_expert_wait_seconds_total", "counter",
         "Time the engine waited for the CPU's experts once the device's were queued and fed "
         "(the CPU's share was the longer)",
         (double)st.cpu_expert_wait_ns * 1e-9},
        {"moeserve_constrained_masks_total", "counter",
         "Token masks built for constrained decoding (response_format, forced tool calls)",
         (double)atomic_load(&e->masks)},
        {"moeserve_constrained_mask_seconds_total", "counter",
         "Time spent building those masks (the sampling of their sequences waits for it)",
         (double)atomic_load(&e->mask_ns) * 1e-9},
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++)
        single(b, rows[i].name, rows[i].type, rows[i].help, "", rows[i].value);
    if (model_expert_cache(e->m))
        write_cache(b, model_host_cache(e->m), model_expert_cache(e->m), model_cpu_experts(e->m));
    write_routing(b, e->m);
}
