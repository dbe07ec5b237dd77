/*
 * `moeserve inspect FILE`: what a user needs to size the caches before serving a model.
 * The GGUF-level facts (header, metadata, tensors) print even when the model itself cannot
 * be served, so the same command explains why a file is refused.
 */
#include "cli/cli.h"
#include "gguf/gguf.h"
#include "kernels/cpu/cpu.h"
#include "model/model.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

static void human(uint64_t bytes, char *buf, size_t size)
{
    static const char *units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    double v = (double)bytes;
    int u = 0;
    while (v >= 1024.0 && u < 4) {
        v /= 1024.0;
        u++;
    }
    snprintf(buf, size, u ? "%.2f %s" : "%.0f %s", v, units[u]);
}

static void print_str_key(const gguf_file *f, const char *label, const char *key)
{
    gguf_str s;
    if (gguf_get_str(f, key, &s) == 0)
        printf("  %-22s %.*s\n", label, (int)(s.len > 200 ? 200 : s.len), s.data);
}

static void print_tokenizer(const gguf_file *f)
{
    gguf_str model_name;
    if (gguf_get_str(f, "tokenizer.ggml.model", &model_name) != 0) {
        printf("tokenizer: none in the file\n");
        return;
    }
    printf("tokenizer:\n");
    print_str_key(f, "model", "tokenizer.ggml.model");
    print_str_key(f, "pre-tokenizer", "tokenizer.ggml.pre");
    gguf_arr arr;
    if (gguf_get_arr(f, "tokenizer.ggml.tokens", &arr) == 0)
        printf("  %-22s %" PRIu64 "\n", "tokens", arr.n);
    if (gguf_get_arr(f, "tokenizer.ggml.merges", &arr) == 0)
        printf("  %-22s %" PRIu64 "\n", "merges", arr.n);
    static const char *ids[] = {"bos_token_id", "eos_token_id", "unknown_token_id",
                                "padding_token_id"};
    for (size_t i = 0; i < sizeof ids / sizeof ids[0]; i++) {
        char key[64];
        uint32_t v;
        snprintf(key, sizeof key, "tokenizer.ggml.%s", ids[i]);
        if (gguf_get_u32(f, key, &v) == 0) printf("  %-22s %u\n", ids[i], v);
    }
    gguf_str tmpl;
    if (gguf_get_str(f, "tokenizer.chat_template", &tmpl) == 0)
        printf("  %-22s %" PRIu64 " bytes\n", "chat template", tmpl.len);
}

static void print_tensors(const gguf_file *f)
{
    printf("tensors: %" PRIu64 "\n", gguf_n_tensors(f));
    printf("  %-36s %-6s %-28s %12s\n", "name", "type", "shape (ne)", "bytes");
    for (uint64_t i = 0; i < gguf_n_tensors(f); i++) {
        const gguf_tensor *t = gguf_tensor_at(f, i);
        char shape[64] = "";
        size_t used = 0;
        for (uint32_t d = 0; d < t->n_dims && used < sizeof shape; d++)
            used += (size_t)snprintf(shape + used, sizeof shape - used, d ? " x %lld" : "%lld",
                                     (long long)t->ne[d]);
        printf("  %-36.*s %-6s %-28s %12" PRIu64 "\n", (int)t->name.len, t->name.data,
               gguf_type_name(t->type), shape, t->n_bytes);
    }
}

static void print_type_mix(const gguf_file *f)
{
    uint64_t bytes[GGUF_T_COUNT] = {0}, count[GGUF_T_COUNT] = {0};
    for (uint64_t i = 0; i < gguf_n_tensors(f); i++) {
        const gguf_tensor *t = gguf_tensor_at(f, i);
        bytes[t->type] += t->n_bytes;
        count[t->type]++;
    }
    printf("type mix:\n");
    for (int ty = 0; ty < GGUF_T_COUNT; ty++) {
        if (!count[ty]) continue;
        char h[32];
        human(bytes[ty], h, sizeof h);
        printf("  %-6s %5" PRIu64 " tensors %12s\n", gguf_type_name((gguf_ttype)ty), count[ty], h);
    }
}

/* The tensor's role: its name without "blk.N." and without a per-expert index, so that
 * "blk.3.ffn_down.7.weight" and "blk.0.ffn_down.2.weight" are the same role. */
static void role_of(const gguf_tensor *t, char *role, size_t size)
{
    const char *p = t->name.data, *end = p + t->name.len;
    if (t->name.len > 4 && !memcmp(p, "blk.", 4)) {
        const char *q = p + 4;
        while (q < end && *q >= '0' && *q <= '9')
            q++;
        if (q < end && *q == '.') p = q + 1;
    }
    size_t n = 0;
    while (p < end && n + 1 < size) {
        if (*p == '.' && p + 1 < end && p[1] >= '0' && p[1] <= '9') { /* ".7." per-expert index */
            const char *q = p + 1;
            while (q < end && *q >= '0' && *q <= '9')
                q++;
            if (q < end && *q == '.') {
                p = q;
                continue;
            }
        }
        role[n++] = *p++;
    }
    role[n] = 0;
}

/* Which storage types each role uses (a Q4_K_M file puts some ffn_down layers in Q6_K). */
static void print_roles(const gguf_file *f)
{
    enum { MAX_ROLES = 64 };
    char roles[MAX_ROLES][64];
    uint64_t types[MAX_ROLES] = {0}, bytes[MAX_ROLES] = {0};
    int n_roles = 0;
    for (uint64_t i = 0; i < gguf_n_tensors(f); i++) {
        const gguf_tensor *t = gguf_tensor_at(f, i);
        char role[64];
        role_of(t, role, sizeof role);
        int r = 0;
        while (r < n_roles && strcmp(roles[r], role))
            r++;
        if (r == n_roles) {
            if (n_roles == MAX_ROLES) continue;
            snprintf(roles[n_roles++], sizeof roles[0], "%s", role);
        }
        types[r] |= 1ull << (t->type % 64);
        bytes[r] += t->n_bytes;
    }
    printf("weights by role:\n");
    for (int r = 0; r < n_roles; r++) {
        char h[32], list[128] = "";
        size_t used = 0;
        human(bytes[r], h, sizeof h);
        for (int ty = 0; ty < 64 && used < sizeof list; ty++)
            if (types[r] >> ty & 1)
                used += (size_t)snprintf(list + used, sizeof list - used, used ? "+%s" : "%s",
                                         gguf_type_name((gguf_ttype)ty));
        printf("  %-28s %-16s %12s\n", roles[r], list, h);
    }
}

static void print_model(const model *m)
{
    const model_hparams *hp = model_params(m);
    printf("model:\n");
    printf("  %-22s %s\n", "architecture", hp->arch_name);
    print_str_key(model_file(m), "name", "general.name");
    printf("  %-22s %d\n", "vocabulary", hp->n_vocab);
    printf("  %-22s %d\n", "embedding", hp->n_embd);
    printf("  %-22s %d\n", "layers", hp->n_layer);
    if (hp->mla)
        printf("  %-22s %d, latent (MLA): KV rank %d, Q %s %d, per head %d + %d rope key, %d "
               "value\n",
               "attention heads", hp->n_head, hp->n_lora_kv, hp->n_lora_q ? "rank" : "full",
               hp->n_lora_q ? hp->n_lora_q : hp->n_head * hp->mla_k, hp->mla_k - hp->n_rot,
               hp->n_rot, hp->mla_v);
    else
        printf("  %-22s %d (%d KV heads, head size %d, rope dims %d)\n", "attention heads",
               hp->n_head, hp->n_head_kv, hp->head_dim, hp->n_rot);
    printf("  %-22s %d, top-%d, expert FFN %d, routing weights %s\n", "experts", hp->n_expert,
           hp->n_expert_used, hp->n_ff_exp,
           hp->gating == KERN_GATING_TOPK_SOFTMAX               ? "a softmax of the top-k logits"
           : hp->gating == KERN_GATING_SIGMOID && hp->norm_topk ? "sigmoid, renormalised"
           : hp->gating == KERN_GATING_SIGMOID                  ? "sigmoid"
           : hp->norm_topk                                      ? "renormalised"
                                                                : "as softmax");
    if (hp->expert_weights_scale != 1.0f || hp->n_group > 1)
        printf("  %-22s weights x %g; %d of %d expert groups\n", "routing",
               hp->expert_weights_scale, hp->n_group_used, hp->n_group);
    if (hp->n_layer_dense || hp->n_nextn)
        printf("  %-22s %d leading dense (FFN %d); %d MTP layers not run\n", "dense layers",
               hp->n_layer_dense, hp->n_ff_dense, hp->n_nextn);
    if (hp->has_expert_bias || hp->glu == KERN_GLU_SWIGLU_OAI)
        printf("  %-22s %s%s\n", "expert FFN", hp->has_expert_bias ? "biases, " : "",
               hp->glu == KERN_GLU_SWIGLU_OAI ? "clamped SwiGLU (gpt-oss)" : "SwiGLU");
    if (hp->has_sinks || hp->swa_pattern)
        printf("  %-22s %s; a sliding window of %d positions on %d of every %d layers\n",
               "attention", hp->has_sinks ? "sinks" : "no sinks", hp->n_swa, hp->swa_pattern - 1,
               hp->swa_pattern);
    if (hp->has_shared_expert)
        printf("  %-22s FFN %d, %s\n", "shared expert", hp->n_ff_shexp,
               hp->arch == MODEL_ARCH_QWEN2MOE ? "sigmoid gate" : "ungated");
    printf("  %-22s %s\n", "expert layout",
           hp->experts_split ? "one tensor per expert (legacy)" : "stacked");
    printf("  %-22s %s, base %g\n", "rope", hp->rope_mode == KERN_ROPE_NEOX ? "neox" : "normal",
           hp->rope_freq_base);
    if (hp->rope_yarn)
        printf("  %-22s factor %g over %g positions, betas %g / %g, attention factor %g\n",
               "rope scaling (YaRN)", hp->yarn.factor, hp->yarn.orig_ctx, hp->yarn.beta_fast,
               hp->yarn.beta_slow, hp->yarn.attn_factor);
    printf("  %-22s %s\n", "q/k norm",
           hp->qk_norm == MODEL_QK_NORM_PER_HEAD ? "per head"
           : hp->qk_norm == MODEL_QK_NORM_FULL   ? "whole vector"
                                                 : "none");
    printf("  %-22s %g\n  %-22s %d\n", "rms eps", hp->rms_eps, "training context", hp->n_ctx_train);

    model_sizes sz;
    model_get_sizes(m, &sz);
    char dense[32], experts[32], per[32], layer[32], kv[32], tok[32];
    human(sz.dense_bytes, dense, sizeof dense);
    human(sz.expert_bytes, experts, sizeof experts);
    human(sz.bytes_per_expert, per, sizeof per);
    human(sz.bytes_per_expert * (uint64_t)hp->n_expert, layer, sizeof layer);
    uint64_t kv_per_token = model_kv_bytes_per_position(hp, sizeof(uint16_t));
    human(kv_per_token * 1024, kv, sizeof kv);
    human(sz.dense_bytes +
              sz.bytes_per_expert * (uint64_t)hp->n_layer * (uint64_t)hp->n_expert_used,
          tok, sizeof tok);
    printf("memory:\n");
    printf("  %-22s %s (resident: embeddings, attention, routers, norms, output)\n",
           "dense weights", dense);
    printf("  %-22s %s (%" PRIu64 " experts x %s; %s per layer)\n", "routed experts", experts,
           sz.n_experts_total, per, layer);
    /* What a cache budget buys: the cache's slots hold one expert each (plus O_DIRECT
     * alignment), and one token needs top-k of them per layer at the least. */
    printf("  %-22s %" PRIu64 " bytes per expert; the smallest cache holds %d (%" PRIu64
           " bytes)\n",
           "expert cache", sz.bytes_per_expert, hp->n_expert_used,
           sz.bytes_per_expert * (uint64_t)hp->n_expert_used);
    printf("  %-22s %s per 1024 tokens of context per sequence (f16)", "KV cache", kv);
    if (hp->mla) { /* what the same attention would cache as full K and V per head */
        char full[32];
        human(sizeof(uint16_t) * (uint64_t)hp->n_layer * (uint64_t)hp->n_head *
                  (uint64_t)(hp->mla_k + hp->mla_v) * 1024,
              full, sizeof full);
        printf("; full K/V would take %s", full);
    }
    printf("\n");
    printf("  %-22s %s (dense + top-%d experts of every layer)\n", "read per token, at most", tok,
           hp->n_expert_used);
}

int cli_inspect(int argc, char **argv)
{
    const char *path = NULL;
    int show_tensors = 1;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            printf("usage: moeserve inspect [--summary] FILE\n"
                   "  --summary   leave out the tensor table\n");
            return 0;
        } else if (!strcmp(argv[i], "--summary")) {
            show_tensors = 0;
        } else if (argv[i][0] == '-' || path) {
            fprintf(stderr, "moeserve inspect: unexpected argument '%s'\n", argv[i]);
            return 2;
        } else {
            path = argv[i];
        }
    }
    if (!path) {
        fprintf(stderr, "usage: moeserve inspect [--summary] FILE\n");
        return 2;
    }
    char err[512];
    gguf_file *f = NULL;
    if (gguf_open(&f, path, err, sizeof err) != 0) {
        fprintf(stderr, "moeserve inspect: %s\n", err);
        return 1;
    }
    char size[32];
    human(gguf_file_size(f), size, sizeof size);
    printf("file: %s (%s, GGUF v%u, %" PRIu64 " metadata keys, alignment %u)\n", path, size,
           gguf_version(f), gguf_n_kv(f), gguf_alignment(f));
    print_tokenizer(f);
    print_type_mix(f);
    print_roles(f);
    if (show_tensors) print_tensors(f);
    gguf_close(&f);

    kern_backend *be = NULL;
    kern_cpu_opts opts = kern_cpu_opts_default();
    opts.n_threads = 1;
    if (kern_cpu_open(&be, &opts, err, sizeof err) != 0) {
        fprintf(stderr, "moeserve inspect: %s\n", err);
        return 1;
    }
    model *m = NULL;
    model_opts mo = {.backend = be};
    int status = 0;
    if (model_open(&m, path, &mo, err, sizeof err) != 0) {
        printf("model: cannot be served: %s\n", err);
        status = 1;
    } else {
        print_model(m);
    }
    model_close(&m);
    kern_close(&be);
    return status;
}
