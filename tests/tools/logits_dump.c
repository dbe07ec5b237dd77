/*
 * logits_dump: the logits of every position of one token sequence, on the CPU backend, for
 * tests/integration/test_llamacpp_agreement.py to hold against llama.cpp's on the same file.
 *
 *   logits_dump --model F --tokens 1,2,3 --out FILE [--kv f16|f32] [--threads N] [--step]
 *               [--routing FILE]
 *
 * The sequence runs as one prefill batch (every token wants its logits), or with --step one
 * token per model_forward call, as decoding does (the two give the same bits).  FILE gets
 * n_tokens rows of n_vocab little-endian f32, in position order; stdout one line
 * "n_vocab N n_tokens N".  The KV cache is F16 unless --kv f32 says otherwise, as in the
 * server.  --routing (implies --step) writes the experts each position chose, one line per
 * position: "layer:e,e,..." per layer, ascending ids, from the model's per-expert token counts
 * (so that a comparison can tell a router decision that rounding flipped from a small drift).
 */
#include "kernels/kernels.h"
#include "model/model.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { MAX_TOKENS = 256 };

static int parse_tokens(const char *text, int32_t *tokens, int *n_tokens)
{
    *n_tokens = 0;
    while (*text) {
        char *end = NULL;
        long id = strtol(text, &end, 10);
        if (end == text || id < 0 || id > INT32_MAX || *n_tokens == MAX_TOKENS) return -EINVAL;
        tokens[(*n_tokens)++] = (int32_t)id;
        text = *end == ',' ? end + 1 : end;
        if (*end && *end != ',') return -EINVAL;
    }
    return *n_tokens ? 0 : -EINVAL;
}

/* Writes to `routing` the experts the last step's token went to: those whose token count grew
 * since `counts` (zero at open, updated here). */
static void write_routing(const model *m, uint64_t *counts, FILE *routing)
{
    const model_hparams *hp = model_params(m);
    for (int layer = 0; layer < hp->n_layer; layer++) {
        fprintf(routing, "%s%d:", layer ? " " : "", layer);
        const char *sep = "";
        for (int e = 0; e < hp->n_expert; e++) {
            uint64_t *count = &counts[(size_t)layer * (size_t)hp->n_expert + (size_t)e];
            uint64_t now = model_expert_tokens(m, layer, e);
            if (now != *count) {
                fprintf(routing, "%s%d", sep, e);
                sep = ",";
            }
            *count = now;
        }
    }
    fputc('\n', routing);
}

/* Runs the sequence and writes its logits rows into `logits` ([n_tokens][n_vocab]); with
 * `routing`, one token per step and each one's experts into it. */
static int run(model *m, const int32_t *tokens, int n_tokens, kern_kv_type kv_type, bool step,
               FILE *routing, float *logits, char *err, size_t err_size)
{
    model_ctx *ctx = NULL;
    model_ctx_opts cx = {.n_seq = 1, .n_ctx = n_tokens, .kv_type = kv_type};
    int rc = model_ctx_create(&ctx, m, &cx, err, err_size);
    if (rc) return rc;
    int32_t pos[MAX_TOKENS], seq[MAX_TOKENS] = {0};
    uint8_t want[MAX_TOKENS];
    for (int i = 0; i < n_tokens; i++) {
        pos[i] = i;
        want[i] = 1;
    }
    const model_hparams *hp = model_params(m);
    size_t row = (size_t)hp->n_vocab;
    if (step || routing) {
        uint64_t *counts = calloc((size_t)hp->n_layer * (size_t)hp->n_expert, sizeof *counts);
        if (!counts) {
            snprintf(err, err_size, "out of memory");
            rc = -ENOMEM;
        }
        for (int i = 0; i < n_tokens && rc == 0; i++) {
            model_batch b = {.n_tokens = 1,
                             .token = tokens + i,
                             .pos = pos + i,
                             .seq = seq,
                             .want_logits = want};
            rc = model_forward(ctx, &b, logits + (size_t)i * row, err, err_size);
            if (rc == 0 && routing) write_routing(m, counts, routing);
        }
        free(counts);
    } else {
        model_batch b = {
            .n_tokens = n_tokens, .token = tokens, .pos = pos, .seq = seq, .want_logits = want};
        rc = model_forward(ctx, &b, logits, err, err_size);
    }
    model_ctx_destroy(&ctx);
    return rc;
}

int main(int argc, char **argv)
{
    const char *path = NULL, *out_path = NULL, *token_list = NULL, *routing_path = NULL;
    kern_kv_type kv_type = KERN_KV_F16;
    bool step = false, bad = false;
    int threads = 2;
    for (int i = 1; i < argc && !bad; i++) {
        bool has_value = i + 1 < argc;
        if (!strcmp(argv[i], "--step"))
            step = true;
        else if (!strcmp(argv[i], "--model") && has_value)
            path = argv[++i];
        else if (!strcmp(argv[i], "--tokens") && has_value)
            token_list = argv[++i];
        else if (!strcmp(argv[i], "--out") && has_value)
            out_path = argv[++i];
        else if (!strcmp(argv[i], "--routing") && has_value)
            routing_path = argv[++i];
        else if (!strcmp(argv[i], "--threads") && has_value)
            threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--kv") && has_value) {
            const char *kv = argv[++i];
            if (!strcmp(kv, "f16"))
                kv_type = KERN_KV_F16;
            else if (!strcmp(kv, "f32"))
                kv_type = KERN_KV_F32;
            else
                bad = true;
        } else {
            bad = true;
        }
    }
    int32_t tokens[MAX_TOKENS];
    int n_tokens = 0;
    if (bad || !path || !out_path || !token_list || threads < 1 ||
        parse_tokens(token_list, tokens, &n_tokens)) {
        fprintf(stderr, "usage: logits_dump --model F --tokens ID,ID,... --out FILE "
                        "[--kv f16|f32] [--threads N] [--step] [--routing FILE]\n");
        return 2;
    }
    char err[512];
    kern_backend *cpu = NULL;
    model *m = NULL;
    float *logits = NULL;
    FILE *routing = NULL;
    int status = 1;
    kern_open_opts ko = kern_open_opts_default();
    ko.n_threads = threads;
    if (kern_open(&cpu, &ko, err, sizeof err)) goto fail;
    model_opts mo = {.backend = cpu};
    if (model_open(&m, path, &mo, err, sizeof err)) goto fail;
    int32_t n_vocab = model_params(m)->n_vocab;
    for (int i = 0; i < n_tokens; i++)
        if (tokens[i] >= n_vocab) {
            snprintf(err, sizeof err, "token %d is outside the vocabulary (%d)", tokens[i],
                     n_vocab);
            goto fail;
        }
    size_t n_floats = (size_t)n_tokens * (size_t)n_vocab;
    if (!(logits = malloc(n_floats * sizeof(float)))) {
        snprintf(err, sizeof err, "out of memory");
        goto fail;
    }
    if (routing_path && !(routing = fopen(routing_path, "w"))) {
        snprintf(err, sizeof err, "cannot write %s: %s", routing_path, strerror(errno));
        goto fail;
    }
    if (run(m, tokens, n_tokens, kv_type, step, routing, logits, err, sizeof err)) goto fail;
    if (routing && fclose(routing)) {
        routing = NULL;
        snprintf(err, sizeof err, "cannot write %s: %s", routing_path, strerror(errno));
        goto fail;
    }
    routing = NULL;
    FILE *out = fopen(out_path, "wb");
    bool written = out && fwrite(logits, sizeof(float), n_floats, out) == n_floats;
    if ((out && fclose(out)) || !written) {
        snprintf(err, sizeof err, "cannot write %s: %s", out_path, strerror(errno));
        goto fail;
    }
    printf("n_vocab %d n_tokens %d\n", n_vocab, n_tokens);
    status = 0;
fail:
    if (status) fprintf(stderr, "logits_dump: %s\n", err);
    if (routing) fclose(routing);
    free(logits);
    model_close(&m);
    kern_close(&cpu);
    return status;
}
