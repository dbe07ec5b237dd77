/*
 * Forward-pass tests against Hugging Face transformers.
 *
 * tests/data/golden/<arch>-tiny-<type>.json hold logits and greedy tokens that transformers
 * computed on the weights of a model that tools/gen_model.py makes from a seed (the JSON
 * records the generator's arguments and the file's sha256; tests/data/golden/README.md has
 * the command that regenerates them); trained-moe.json is the trained model committed at
 * tests/data/trained-moe.gguf (tools/train_moe.py).  Each test generates that model (once per build
 * tree), checks it is byte-for-byte the model the goldens were made from, and compares:
 *   - last-position logits of each prompt: max |delta| <= 1e-3 * max |logit|;
 *   - 32 greedy tokens: identical;
 *   - batching: the prompts run as separate sequences of one batch, and decoded in lockstep,
 *     give bit-identical logits to each sequence run alone;
 *   - the legacy one-tensor-per-expert layout gives bit-identical logits to the stacked one.
 */
#include "kernels/sim/sim.h"
#include "model/model.h"
#include "tests/unit/test_util.h"

#include <check.h>
#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Float goldens must agree to 1e-3 of the largest logit (the bound; we reach ~1e-6).
 * Quantised goldens are transformers on the dequantised weights, while moeserve, like
 * llama.cpp, also quantises the activations to 8 bits for the integer dot products, so they
 * get a wider bound: the measured worst case with margin (see the printed ratios). */
typedef struct golden_case {
    const char *name;
    double logit_tol; /* max |delta| / max |logit| */
} golden_case;

#define FLOAT_CASES(arch)                                                                          \
    {arch "-tiny-f32", 1e-3}, {arch "-tiny-f16", 1e-3},                                            \
    {                                                                                              \
        arch "-tiny-bf16", 1e-3                                                                    \
    }
#define QUANT_CASES(arch)                                                                          \
    {arch "-tiny-q8_0", QUANT_TOL}, {arch "-tiny-q4_0", QUANT_TOL},                                \
        {arch "-tiny-q4_k_m", QUANT_TOL}, {arch "-tiny-q5_k_m", QUANT_TOL},                        \
    {                                                                                              \
        arch "-tiny-q6_k", QUANT_TOL                                                               \
    }
#define QUANT_TOL 3e-2
/* gpt-oss's down projections read (u + 1) * glu of gate and up values that reach the clamp at
 * 7: a wider range than the other families' SwiGLU, which their 8-bit activations round more
 * coarsely (measured 3.2e-2 on the Q8_0 and MXFP4 goldens; dequantised_weights_match_transformers
 * shows the weights themselves exact to 2e-6). */
#define GPT_OSS_QUANT_TOL 4.5e-2
/* deepseek2's latent attention quantises each head's absorbed query and latent output once more
 * (8-bit activations into attn_k_b and attn_v_b): llama.cpp's own run of the Q8_0 and Q4_K_M
 * goldens' files is 2.5e-2 and 3.3e-2 from transformers, as far as moeserve is */
#define DEEPSEEK2_QUANT_TOL 4.5e-2

/* Float cases first (N_FLOAT_GOLDEN of them), then the quantised ones. gpt-oss's quantised
 * goldens are the types its files come in: Q8_0 (its dense tensors) and MXFP4 experts; glm4moe's
 * and deepseek2's Q8_0 and the Q4_K_M mix their files are most often shared in (deepseek2's
 * tiny-lite is DeepSeek-V2-Lite's shape: one Q projection, softmax routing). */
static const golden_case goldens[] = {
    FLOAT_CASES("llama"),
    FLOAT_CASES("qwen2moe"),
    FLOAT_CASES("qwen3moe"),
    FLOAT_CASES("olmoe"),
    FLOAT_CASES("gpt-oss"),
    FLOAT_CASES("glm4moe"),
    FLOAT_CASES("deepseek2"),
    {"deepseek2-tiny-lite-f32", 1e-3},
    QUANT_CASES("llama"),
    QUANT_CASES("qwen2moe"),
    QUANT_CASES("qwen3moe"),
    QUANT_CASES("olmoe"),
    {"glm4moe-tiny-q8_0", QUANT_TOL},
    {"glm4moe-tiny-q4_k_m", QUANT_TOL},
    {"gpt-oss-tiny-q8_0", GPT_OSS_QUANT_TOL},
    {"gpt-oss-tiny-mxfp4", GPT_OSS_QUANT_TOL},
    {"deepseek2-tiny-q8_0", DEEPSEEK2_QUANT_TOL},
    {"deepseek2-tiny-q4_k_m", DEEPSEEK2_QUANT_TOL},
    {"deepseek2-tiny-lite-q8_0", DEEPSEEK2_QUANT_TOL},
    /* tools/train_moe.py's model (tests/data/trained-moe.gguf): real text, routing that is not
     * random, prompts cut from its held-out text */
    {"trained-moe", QUANT_TOL},
};
enum { N_GOLDEN = sizeof goldens / sizeof goldens[0], N_FLOAT_GOLDEN = 22 };

static const char *env_or(const char *name, const char *fallback)
{
    const char *v = getenv(name);
    return v && *v ? v : fallback;
}

static char *read_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    ck_assert_msg(f != NULL, "cannot open %s: %s", path, strerror(errno));
    ck_assert_int_eq(fseek(f, 0, SEEK_END), 0);
    long n = ftell(f);
    ck_assert_int_ge(n, 0);
    rewind(f);
    char *buf = malloc((size_t)n + 1);
    ck_assert_ptr_nonnull(buf);
    ck_assert_uint_eq(fread(buf, 1, (size_t)n, f), (size_t)n);
    buf[n] = 0;
    fclose(f);
    return buf;
}

static cJSON *load_golden(const char *name)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/tests/data/golden/%s.json", env_or("MOE_SOURCE_ROOT", "."),
             name);
    char *text = read_file(path);
    cJSON *j = cJSON_Parse(text);
    free(text);
    ck_assert_msg(j != NULL, "%s: invalid JSON", path);
    return j;
}

static int run_cmd(const char *cmd)
{
    int rc = system(cmd);
    return rc == -1 ? -1 : WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

/* Generates the model described by `args` (gen_model.py arguments) into the build tree, once;
 * concurrent test processes each write a temporary file and rename it into place. */
static void ensure_model(const cJSON *args, const char *extra, const char *name, char *path,
                         size_t path_size)
{
    char dir[512];
    snprintf(dir, sizeof dir, "%s/test-models", env_or("MOE_BUILD_ROOT", "."));
    mkdir(dir, 0755);
    snprintf(path, path_size, "%.511s/%.200s.gguf", dir, name);
    struct stat st;
    if (stat(path, &st) == 0) return;
    char cmd[4096];
    int n = snprintf(cmd, sizeof cmd, "'%s' '%s/tools/gen_model.py'",
                     env_or("MOE_PYTHON", "python3"), env_or("MOE_SOURCE_ROOT", "."));
    const cJSON *a;
    cJSON_ArrayForEach(a, args) n +=
        snprintf(cmd + n, sizeof cmd - (size_t)n, " '%s'", a->valuestring);
    n += snprintf(cmd + n, sizeof cmd - (size_t)n, " %s -o '%s.%d' >/dev/null && mv '%s.%d' '%s'",
                  extra, path, (int)getpid(), path, (int)getpid(), path);
    ck_assert_msg(run_cmd(cmd) == 0, "model generation failed: %s", cmd);
}

static void check_sha256(const char *path, const char *want)
{
    char cmd[2048], got[65] = "";
    snprintf(cmd, sizeof cmd, "sha256sum '%s'", path);
    FILE *p = popen(cmd, "r");
    ck_assert_ptr_nonnull(p);
    ck_assert_int_eq(fscanf(p, "%64s", got), 1);
    pclose(p);
    ck_assert_msg(strcmp(got, want) == 0,
                  "%s is not the model the goldens were made from (sha256 %s, golden says %s): "
                  "the generator or its numpy changed; regenerate the goldens",
                  path, got, want);
}

/* The backend every test runs on: MOE_TEST_BACKEND=cpu (default), sim or cuda.  CI runs this
 * program on cpu and on sim; tools/device-check runs it on cuda. */
static kern_backend_kind test_backend = KERN_BACKEND_CPU;
/* The goldens are compared with an F32 KV cache; F16 has a test of its own. */
static kern_kv_type test_kv_type = KERN_KV_F32;

typedef struct fixture {
    cJSON *golden;
    kern_backend *backend;
    model *m;
    const model_hparams *hp;
    char path[1024];
} fixture;

static void fixture_open(fixture *fx, const char *name, const char *extra_args, int n_threads)
{
    char err[512];
    memset(fx, 0, sizeof *fx);
    fx->golden = load_golden(name);
    const cJSON *args = cJSON_GetObjectItem(fx->golden, "generator_args");
    const cJSON *committed = cJSON_GetObjectItem(fx->golden, "model_path");
    if (cJSON_IsString(committed)) { /* the trained model: a file in the tree, not generated */
        ck_assert(!*extra_args);
        snprintf(fx->path, sizeof fx->path, "%s/%s", env_or("MOE_SOURCE_ROOT", "."),
                 committed->valuestring);
    } else {
        ck_assert(cJSON_IsArray(args));
        char model_name[256];
        snprintf(model_name, sizeof model_name, "%s%s", name, *extra_args ? "-split" : "");
        ensure_model(args, extra_args, model_name, fx->path, sizeof fx->path);
    }
    if (!*extra_args)
        check_sha256(fx->path, cJSON_GetObjectItem(fx->golden, "model_sha256")->valuestring);
    kern_open_opts o = kern_open_opts_default();
    o.kind = test_backend;
    o.n_threads = n_threads;
    ck_assert_msg(kern_open(&fx->backend, &o, err, sizeof err) == 0, "%s", err);
    model_opts mo = {.backend = fx->backend};
    ck_assert_msg(model_open(&fx->m, fx->path, &mo, err, sizeof err) == 0, "%s", err);
    fx->hp = model_params(fx->m);
    ck_assert_int_eq(fx->hp->n_vocab, cJSON_GetObjectItem(fx->golden, "n_vocab")->valueint);
}

static void fixture_close(fixture *fx)
{
    model_close(&fx->m);
    kern_close(&fx->backend);
    cJSON_Delete(fx->golden);
}

static int32_t *json_ints(const cJSON *arr, int *n)
{
    *n = cJSON_GetArraySize(arr);
    int32_t *v = malloc((size_t)(*n > 0 ? *n : 1) * sizeof *v);
    ck_assert_ptr_nonnull(v);
    for (int i = 0; i < *n; i++)
        v[i] = (int32_t)cJSON_GetArrayItem(arr, i)->valuedouble;
    return v;
}

/* Runs one prompt as sequence `seq` of a fresh context, returning last-position logits. */
static void run_prompt(model_ctx *ctx, const int32_t *tokens, int n, int32_t seq, float *logits)
{
    char err[512];
    int32_t *pos = malloc((size_t)n * sizeof *pos), *seqs = malloc((size_t)n * sizeof *seqs);
    for (int i = 0; i < n; i++) {
        pos[i] = i;
        seqs[i] = seq;
    }
    model_batch b = {.n_tokens = n, .token = tokens, .pos = pos, .seq = seqs};
    ck_assert_msg(model_forward(ctx, &b, logits, err, sizeof err) == 0, "%s", err);
    free(pos);
    free(seqs);
}

static model_ctx *new_ctx(model *m, int n_seq, int n_ctx)
{
    char err[512];
    model_ctx *ctx = NULL;
    model_ctx_opts co = {.n_seq = n_seq, .n_ctx = n_ctx, .kv_type = test_kv_type};
    ck_assert_msg(model_ctx_create(&ctx, m, &co, err, sizeof err) == 0, "%s", err);
    return ctx;
}

/* ---- logits and greedy tokens against transformers ---------------------------------------- */

/* Last-position logits of every golden prompt within tol * max|logit|; returns the worst ratio. */
static double check_logits(fixture *fx, const char *label, double tol)
{
    const cJSON *prompts = cJSON_GetObjectItem(fx->golden, "prompts");
    int n_vocab = fx->hp->n_vocab;
    float *logits = malloc((size_t)n_vocab * sizeof *logits);
    double worst = 0.0;
    const cJSON *p;
    cJSON_ArrayForEach(p, prompts)
    {
        int n;
        int32_t *tokens = json_ints(cJSON_GetObjectItem(p, "tokens"), &n);
        const cJSON *want = cJSON_GetObjectItem(p, "logits");
        ck_assert_int_eq(cJSON_GetArraySize(want), n_vocab);
        model_ctx *ctx = new_ctx(fx->m, 1, n + 1);
        run_prompt(ctx, tokens, n, 0, logits);
        double max_abs = 0.0, max_delta = 0.0;
        for (int i = 0; i < n_vocab; i++) {
            double w = cJSON_GetArrayItem(want, i)->valuedouble;
            max_abs = fmax(max_abs, fabs(w));
            max_delta = fmax(max_delta, fabs(logits[i] - w));
        }
        ck_assert_msg(max_abs > 0.5, "golden logits are degenerate (max |logit| %g)", max_abs);
        ck_assert_msg(max_delta <= tol * max_abs,
                      "%s prompt of %d tokens: max |delta| %g > %g * %g", label, n, max_delta, tol,
                      max_abs);
        worst = fmax(worst, max_delta / max_abs);
        model_ctx_destroy(&ctx);
        free(tokens);
    }
    printf("%s: max |delta logit| / max |logit| = %.2e over %d prompts\n", label, worst,
           cJSON_GetArraySize(prompts));
    free(logits);
    return worst;
}

START_TEST(logits_match_transformers)
{
    fixture fx;
    fixture_open(&fx, goldens[_i].name, "", 2);
    check_logits(&fx, goldens[_i].name, goldens[_i].logit_tol);
    fixture_close(&fx);
}
END_TEST

static void check_greedy(fixture *fx, const char *label, double tol)
{
    char err[512];
    const cJSON *greedy = cJSON_GetObjectItem(fx->golden, "greedy");
    int n_prompt, n_want;
    int32_t *prompt = json_ints(cJSON_GetObjectItem(greedy, "prompt"), &n_prompt);
    int32_t *want = json_ints(cJSON_GetObjectItem(greedy, "tokens"), &n_want);
    ck_assert_int_eq(n_want, 32);
    float *logits = malloc((size_t)fx->hp->n_vocab * sizeof *logits);
    model_ctx *ctx = new_ctx(fx->m, 1, n_prompt + n_want);
    run_prompt(ctx, prompt, n_prompt, 0, logits);
    /* Float weights: the same 32 tokens.  Quantised weights: moeserve's 8-bit activations
     * move logits by up to logit_tol * max|logit| (checked above), so near ties may go either
     * way; the sequence is then teacher-forced with transformers' tokens, and transformers'
     * choice must be within twice that bound of our best logit at every step but at most one:
     * a router decision that the activation rounding flips moves a step's logits further
     * (seen once in the 640 quantised steps; dequantised_weights_match_transformers shows the
     * weights themselves are exact). */
    bool exact = tol <= 1e-3;
    int outliers = 0;
    int matched = 0;
    for (int g = 0; g < n_want; g++) {
        int32_t next = model_argmax(logits, fx->hp->n_vocab);
        if (exact) {
            ck_assert_msg(next == want[g], "%s: greedy token %d is %d, transformers gave %d", label,
                          g, next, want[g]);
        } else {
            float max_abs = 0.0f;
            for (int32_t v = 0; v < fx->hp->n_vocab; v++)
                max_abs = fmaxf(max_abs, fabsf(logits[v]));
            float shortfall = logits[next] - logits[want[g]];
            if (shortfall > 2.0 * tol * max_abs) {
                outliers++;
                printf("%s: step %d: transformers' token %d is %g below our best %d\n", label, g,
                       want[g], shortfall, next);
            }
            ck_assert_msg(outliers <= 1, "%s: %d teacher-forced steps outside the bound", label,
                          outliers);
            next = want[g];
        }
        matched += next == model_argmax(logits, fx->hp->n_vocab);
        int32_t pos = n_prompt + g, seq = 0;
        model_batch b = {.n_tokens = 1, .token = &next, .pos = &pos, .seq = &seq};
        if (g + 1 < n_want)
            ck_assert_msg(model_forward(ctx, &b, logits, err, sizeof err) == 0, "%s", err);
    }
    if (!exact)
        printf("%s: our argmax equals transformers' token at %d of %d teacher-forced steps\n",
               label, matched, n_want);
    model_ctx_destroy(&ctx);
    free(logits);
    free(prompt);
    free(want);
}

START_TEST(greedy_tokens_match_transformers)
{
    fixture fx;
    fixture_open(&fx, goldens[_i].name, "", 2);
    check_greedy(&fx, goldens[_i].name, goldens[_i].logit_tol);
    fixture_close(&fx);
}
END_TEST

/* ---- batching ------------------------------------------------------------------------------- */

START_TEST(batch_gives_each_sequence_its_own_logits)
{
    char err[512];
    fixture fx;
    fixture_open(&fx, goldens[_i].name, "", 2);
    const cJSON *prompts = cJSON_GetObjectItem(fx.golden, "prompts");
    int n_seq = cJSON_GetArraySize(prompts), n_vocab = fx.hp->n_vocab, n_dec = 4;
    int32_t *tok[8];
    int len[8], total = 0;
    ck_assert_int_le(n_seq, 8);
    for (int s = 0; s < n_seq; s++) {
        tok[s] = json_ints(cJSON_GetObjectItem(cJSON_GetArrayItem(prompts, s), "tokens"), &len[s]);
        total += len[s];
    }
    int max_len = 0;
    for (int s = 0; s < n_seq; s++)
        max_len = len[s] > max_len ? len[s] : max_len;

    /* Alone: each sequence prefilled, then n_dec greedy steps; keep every step's logits. */
    float *alone = malloc((size_t)(n_seq * (n_dec + 1) * n_vocab) * sizeof *alone);
    for (int s = 0; s < n_seq; s++) {
        model_ctx *ctx = new_ctx(fx.m, 1, max_len + n_dec + 1);
        float *l = alone + (size_t)s * (n_dec + 1) * n_vocab;
        run_prompt(ctx, tok[s], len[s], 0, l);
        for (int d = 0; d < n_dec; d++) {
            int32_t next = model_argmax(l + d * n_vocab, n_vocab), pos = len[s] + d, seq = 0;
            model_batch b = {.n_tokens = 1, .token = &next, .pos = &pos, .seq = &seq};
            ck_assert_msg(model_forward(ctx, &b, l + (d + 1) * n_vocab, err, sizeof err) == 0, "%s",
                          err);
        }
        model_ctx_destroy(&ctx);
    }

    /* Together: all prompts interleaved in one batch (sequence ids reversed so that batch
     * order and sequence order differ), then lockstep decode steps. */
    model_ctx *ctx = new_ctx(fx.m, n_seq, max_len + n_dec + 1);
    int32_t *bt = malloc((size_t)total * sizeof *bt), *bp = malloc((size_t)total * sizeof *bp);
    int32_t *bs = malloc((size_t)total * sizeof *bs);
    uint8_t *want = calloc((size_t)total, 1);
    int k = 0;
    for (int i = 0; i < max_len; i++) {
        for (int s = 0; s < n_seq; s++) {
            if (i >= len[s]) continue;
            bt[k] = tok[s][i];
            bp[k] = i;
            bs[k] = n_seq - 1 - s;
            want[k] = i == len[s] - 1;
            k++;
        }
    }
    ck_assert_int_eq(k, total);
    float *together = malloc((size_t)(n_seq * n_vocab) * sizeof *together);
    model_batch b = {.n_tokens = total, .token = bt, .pos = bp, .seq = bs, .want_logits = want};
    ck_assert_msg(model_forward(ctx, &b, together, err, sizeof err) == 0, "%s", err);
    /* rows come back in batch order: the order in which each sequence's last token appeared */
    int row = 0;
    float *by_seq = malloc((size_t)(n_seq * n_vocab) * sizeof *by_seq);
    for (int i = 0; i < total; i++) {
        if (!want[i]) continue;
        int s = n_seq - 1 - bs[i];
        memcpy(by_seq + s * n_vocab, together + row * n_vocab, (size_t)n_vocab * sizeof(float));
        row++;
    }
    for (int d = 0; d <= n_dec; d++) {
        for (int s = 0; s < n_seq; s++) {
            const float *ref = alone + ((size_t)s * (n_dec + 1) + d) * n_vocab;
            ck_assert_msg(memcmp(by_seq + s * n_vocab, ref, (size_t)n_vocab * sizeof(float)) == 0,
                          "%s: sequence %d step %d differs between batch and alone",
                          goldens[_i].name, s, d);
        }
        if (d == n_dec) break;
        int32_t nt[8], np[8], ns[8];
        uint8_t all[8];
        for (int s = 0; s < n_seq; s++) {
            nt[s] = model_argmax(by_seq + s * n_vocab, n_vocab);
            np[s] = len[s] + d;
            ns[s] = n_seq - 1 - s;
            all[s] = 1;
        }
        model_batch step = {
            .n_tokens = n_seq, .token = nt, .pos = np, .seq = ns, .want_logits = all};
        ck_assert_msg(model_forward(ctx, &step, by_seq, err, sizeof err) == 0, "%s", err);
    }
    model_ctx_destroy(&ctx);
    for (int s = 0; s < n_seq; s++)
        free(tok[s]);
    free(alone);
    free(bt);
    free(bp);
    free(bs);
    free(want);
    free(together);
    free(by_seq);
    fixture_close(&fx);
}
END_TEST

/* Runs golden prompt `prompt` through two opened models and requires identical logits. */
static void assert_same_logits(fixture *x, fixture *y, int prompt)
{
    const cJSON *p = cJSON_GetArrayItem(cJSON_GetObjectItem(x->golden, "prompts"), prompt);
    int n;
    int32_t *tokens = json_ints(cJSON_GetObjectItem(p, "tokens"), &n);
    int n_vocab = x->hp->n_vocab;
    float *a = malloc((size_t)n_vocab * sizeof *a), *b = malloc((size_t)n_vocab * sizeof *b);
    model_ctx *ca = new_ctx(x->m, 1, n), *cb = new_ctx(y->m, 1, n);
    run_prompt(ca, tokens, n, 0, a);
    run_prompt(cb, tokens, n, 0, b);
    ck_assert(memcmp(a, b, (size_t)n_vocab * sizeof *a) == 0);
    model_ctx_destroy(&ca);
    model_ctx_destroy(&cb);
    free(a);
    free(b);
    free(tokens);
}

START_TEST(split_expert_layout_equals_stacked)
{
    fixture stacked, split;
    fixture_open(&stacked, "llama-tiny-f32", "", 1);
    fixture_open(&split, "llama-tiny-f32", "--expert-layout split", 1);
    ck_assert(!stacked.hp->experts_split);
    ck_assert(split.hp->experts_split);
    assert_same_logits(&stacked, &split, 2);
    fixture_close(&stacked);
    fixture_close(&split);
}
END_TEST

START_TEST(thread_count_does_not_change_logits)
{
    fixture one, three;
    fixture_open(&one, goldens[_i].name, "", 1);
    fixture_open(&three, goldens[_i].name, "", 3);
    assert_same_logits(&one, &three, 1);
    fixture_close(&one);
    fixture_close(&three);
}
END_TEST

/* ---- bad batches ------------------------------------------------------------------------------
 */

START_TEST(bad_batches_are_refused)
{
    char err[512];
    fixture fx;
    fixture_open(&fx, "qwen3moe-tiny-f32", "", 1);
    model_ctx *ctx = new_ctx(fx.m, 2, 8);
    float *logits = malloc((size_t)fx.hp->n_vocab * sizeof *logits);
    struct {
        int32_t token, pos, seq;
        const char *word;
    } cases[] = {
        {fx.hp->n_vocab, 0, 0, "vocabulary"},
        {-1, 0, 0, "vocabulary"},
        {1, 8, 0, "context"},
        {1, -1, 0, "context"},
        {1, 0, 2, "sequence"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        model_batch b = {
            .n_tokens = 1, .token = &cases[i].token, .pos = &cases[i].pos, .seq = &cases[i].seq};
        err[0] = 0;
        ck_assert_int_eq(model_forward(ctx, &b, logits, err, sizeof err), -EINVAL);
        ck_assert_msg(strstr(err, cases[i].word) != NULL, "message '%s' lacks '%s'", err,
                      cases[i].word);
    }
    model_batch empty = {.n_tokens = 0};
    ck_assert_int_eq(model_forward(ctx, &empty, logits, err, sizeof err), -EINVAL);
    model_ctx_destroy(&ctx);
    free(logits);
    fixture_close(&fx);
}
END_TEST

/* ---- files the model refuses ------------------------------------------------------------------
 */

typedef struct edit {
    const char *drop_key; /* leave this key out */
    const char *set_key;  /* ... or replace its value with a string / u32 */
    const char *set_str;
    long set_u32;
    const char *drop_tensor;   /* leave this tensor out */
    const char *retype_tensor; /* rewrite this tensor with another type / shape */
    gguf_ttype new_type;
    int64_t new_ne0;
} edit;

/* Copies `src` to `dst` through our writer with one edit applied. */
static void rewrite(const char *src, const char *dst, const edit *e)
{
    char err[512];
    gguf_file *f = NULL;
    ck_assert_msg(gguf_open(&f, src, err, sizeof err) == 0, "%s", err);
    gguf_writer *w = NULL;
    ck_assert_int_eq(gguf_writer_create(&w, gguf_alignment(f)), 0);
    void *scratch = NULL;
    for (uint64_t i = 0; i < gguf_n_kv(f); i++) {
        const gguf_kv *kv = gguf_kv_at(f, i);
        char key[256];
        snprintf(key, sizeof key, "%.*s", (int)kv->key.len, kv->key.data);
        if (e->drop_key && !strcmp(key, e->drop_key)) continue;
        if (e->set_key && !strcmp(key, e->set_key)) {
            if (e->set_str)
                ck_assert_int_eq(gguf_writer_add_str(w, key, e->set_str), 0);
            else
                ck_assert_int_eq(gguf_writer_add_u32(w, key, (uint32_t)e->set_u32), 0);
            continue;
        }
        ck_assert_int_eq(gguf_writer_add_value(w, key, &kv->value), 0);
    }
    for (uint64_t i = 0; i < gguf_n_tensors(f); i++) {
        const gguf_tensor *t = gguf_tensor_at(f, i);
        char name[256];
        snprintf(name, sizeof name, "%.*s", (int)t->name.len, t->name.data);
        if (e->drop_tensor && !strcmp(name, e->drop_tensor)) continue;
        if (e->retype_tensor && !strcmp(name, e->retype_tensor)) {
            int64_t ne[GGUF_MAX_DIMS];
            memcpy(ne, t->ne, sizeof ne);
            if (e->new_ne0) ne[0] = e->new_ne0;
            uint64_t n_bytes = 0;
            ck_assert_int_eq(gguf_tensor_nbytes(e->new_type, t->n_dims, ne, &n_bytes), 0);
            scratch = calloc(1, n_bytes);
            ck_assert_int_eq(gguf_writer_add_tensor(w, name, t->n_dims, ne, e->new_type, scratch),
                             0);
            continue;
        }
        ck_assert_int_eq(gguf_writer_add_tensor(w, name, t->n_dims, t->ne, t->type, t->data), 0);
    }
    ck_assert_msg(gguf_writer_write(w, dst, err, sizeof err) == 0, "%s", err);
    gguf_writer_destroy(&w);
    free(scratch);
    gguf_close(&f);
}

typedef struct refusal {
    edit e;
    int code;
    const char *words; /* the message names them (and the file) */
} refusal;

/* Each edit of the fixture's file makes model_open fail with its code and words. */
static void expect_refusals(fixture *fx, const refusal *cases, size_t n)
{
    char err[512], dst[1100];
    for (size_t i = 0; i < n; i++) {
        snprintf(dst, sizeof dst, "%s.bad%zu.%d", fx->path, i, (int)getpid());
        rewrite(fx->path, dst, &cases[i].e);
        model *m = NULL;
        model_opts mo = {.backend = fx->backend};
        err[0] = 0;
        int rc = model_open(&m, dst, &mo, err, sizeof err);
        unlink(dst);
        ck_assert_msg(rc == cases[i].code, "case %zu: code %d, want %d (%s)", i, rc, cases[i].code,
                      err);
        ck_assert_ptr_null(m);
        ck_assert_msg(strstr(err, cases[i].words) && strstr(err, dst),
                      "case %zu: message '%s' lacks '%s' or the file name", i, err, cases[i].words);
    }
}

START_TEST(unusable_models_are_refused_with_the_reason)
{
    char err[512];
    fixture fx;
    fixture_open(&fx, "qwen3moe-tiny-f32", "", 1);
    static const refusal cases[] = {
        {{.set_key = "general.architecture", .set_str = "gptx"},
         -ENOTSUP,
         "architecture 'gptx' is not supported"},
        {{.drop_key = "general.architecture"}, -EINVAL, "general.architecture"},
        {{.drop_key = "qwen3moe.expert_count"}, -ENOTSUP, "Mixture-of-Experts"},
        {{.drop_key = "qwen3moe.embedding_length"}, -EINVAL, "qwen3moe.embedding_length"},
        {{.set_key = "qwen3moe.attention.head_count_kv", .set_u32 = 3}, -EINVAL, "multiple"},
        {{.set_key = "qwen3moe.expert_used_count", .set_u32 = 9}, -EINVAL, "exceeds"},
        {{.set_key = "qwen3moe.attention.layer_norm_rms_epsilon", .set_str = "x"},
         -EINVAL,
         "rms_epsilon"},
        {{.drop_tensor = "blk.1.attn_k.weight"}, -EINVAL, "'blk.1.attn_k.weight' is missing"},
        {{.drop_tensor = "blk.0.attn_q_norm.weight"},
         -EINVAL,
         "'blk.0.attn_q_norm.weight' is missing"},
        {{.drop_tensor = "blk.1.ffn_down_exps.weight"}, -EINVAL, "ffn_down"},
        {{.retype_tensor = "blk.0.attn_q.weight", .new_type = GGUF_T_F32, .new_ne0 = 128},
         -EINVAL,
         "has shape"},
        {{.retype_tensor = "blk.0.ffn_up_exps.weight", .new_type = GGUF_T_IQ2_XXS},
         -ENOTSUP,
         "IQ2_XXS"},
        /* the IQ2 / IQ3 / IQ1 grid types this build has no kernels for */
        {{.retype_tensor = "blk.1.ffn_gate_exps.weight", .new_type = GGUF_T_IQ3_S},
         -ENOTSUP,
         "has type IQ3_S"},
        {{.retype_tensor = "blk.0.ffn_down_exps.weight", .new_type = GGUF_T_IQ1_M},
         -ENOTSUP,
         "has type IQ1_M"},
        {{.retype_tensor = "blk.0.ffn_norm.weight", .new_type = GGUF_T_I32}, -ENOTSUP, "I32"},
    };
    expect_refusals(&fx, cases, sizeof cases / sizeof cases[0]);
    /* a file that is not there */
    model *m = NULL;
    model_opts mo = {.backend = fx.backend};
    ck_assert_int_eq(model_open(&m, "/nonexistent/model.gguf", &mo, err, sizeof err), -ENOENT);
    ck_assert(strstr(err, "/nonexistent/model.gguf") != NULL);
    fixture_close(&fx);
}
END_TEST

/* What gpt-oss needs beyond the other families: sinks, expert biases, the post-attention norm's
 * name, the sliding window and YaRN's keys. */
START_TEST(unusable_gpt_oss_models_are_refused_with_the_reason)
{
    fixture fx;
    fixture_open(&fx, "gpt-oss-tiny-f32", "", 1);
    static const refusal cases[] = {
        {{.drop_tensor = "blk.0.attn_sinks.weight"},
         -EINVAL,
         "'blk.0.attn_sinks.weight' is missing"},
        {{.drop_tensor = "blk.1.ffn_up_exps.bias"}, -EINVAL, "'blk.1.ffn_up_exps.bias' is missing"},
        {{.retype_tensor = "blk.0.ffn_down_exps.bias", .new_type = GGUF_T_F32, .new_ne0 = 128},
         -EINVAL,
         "has shape"},
        {{.drop_tensor = "blk.1.post_attention_norm.weight"},
         -EINVAL,
         "'blk.1.post_attention_norm.weight' is missing"},
        {{.drop_tensor = "blk.0.attn_k.bias"}, -EINVAL, "some but not all of the Q/K/V biases"},
        {{.drop_key = "gpt-oss.attention.sliding_window"},
         -EINVAL,
         "gpt-oss.attention.sliding_window"},
        {{.set_key = "gpt-oss.attention.sliding_window", .set_u32 = 0}, -EINVAL, "sliding_window"},
        {{.set_key = "gpt-oss.rope.scaling.type", .set_str = "linear"},
         -ENOTSUP,
         "rope scaling 'linear'"},
        {{.drop_key = "gpt-oss.rope.scaling.factor"}, -EINVAL, "gpt-oss.rope.scaling.factor"},
        {{.set_key = "gpt-oss.rope.scaling.original_context_length", .set_u32 = 0},
         -EINVAL,
         "YaRN"},
    };
    expect_refusals(&fx, cases, sizeof cases / sizeof cases[0]);
    fixture_close(&fx);
}
END_TEST

/* What glm4moe reads beyond the other families: the leading dense layers, the MTP layer left
 * out of the layers run, the selection bias, the ungated shared expert, the optional Q/K norms
 * (all layers or none), the gating function and the router groups. */
START_TEST(glm4moe_keys_are_read_and_unusable_files_refused)
{
    fixture fx;
    fixture_open(&fx, "glm4moe-tiny-f32", "", 1);
    const model_hparams *hp = fx.hp;
    ck_assert_int_eq(hp->n_layer, 3); /* block_count 4 less the MTP layer */
    ck_assert_int_eq(hp->n_nextn, 1);
    ck_assert_int_eq(hp->n_layer_dense, 1);
    ck_assert_int_eq(hp->n_ff_dense, 1024);
    ck_assert_int_eq(hp->n_ff_shexp, hp->n_ff_exp);
    ck_assert_int_eq(hp->n_rot, hp->head_dim / 2);
    ck_assert_int_eq(hp->gating, KERN_GATING_SIGMOID);
    ck_assert(hp->norm_topk && hp->has_qkv_bias && hp->has_shared_expert);
    ck_assert_int_eq(hp->qk_norm, MODEL_QK_NORM_PER_HEAD);
    ck_assert_float_eq(hp->expert_weights_scale, 2.5f);
    model_sizes sz;
    model_get_sizes(fx.m, &sz);
    ck_assert_int_eq(sz.n_experts_total, 2 * 8); /* the dense layer has none */
    static const refusal cases[] = {
        {{.drop_tensor = "blk.0.ffn_up.weight"}, -EINVAL, "'blk.0.ffn_up.weight' is missing"},
        {{.drop_tensor = "blk.1.ffn_gate_shexp.weight"},
         -EINVAL,
         "'blk.1.ffn_gate_shexp.weight' is missing"},
        {{.drop_tensor = "blk.2.attn_k_norm.weight"},
         -EINVAL,
         "'blk.2.attn_k_norm.weight' is missing"},
        {{.retype_tensor = "blk.1.exp_probs_b.bias", .new_type = GGUF_T_F32, .new_ne0 = 4},
         -EINVAL,
         "has shape"},
        {{.set_key = "glm4moe.leading_dense_block_count", .set_u32 = 3},
         -EINVAL,
         "leading_dense_block_count 3"},
        {{.set_key = "glm4moe.nextn_predict_layers", .set_u32 = 4},
         -EINVAL,
         "nextn_predict_layers 4"},
        {{.set_key = "glm4moe.expert_gating_func", .set_u32 = 3}, -ENOTSUP, "expert_gating_func 3"},
        {{.set_key = "glm4moe.expert_weights_norm", .set_u32 = 1}, -EINVAL, "must be a boolean"},
        {{.drop_key = "glm4moe.expert_feed_forward_length"},
         -EINVAL,
         "glm4moe.expert_feed_forward_length"},
        {{.drop_key = "glm4moe.feed_forward_length"}, -EINVAL, "feed_forward_length"},
    };
    expect_refusals(&fx, cases, sizeof cases / sizeof cases[0]);
    /* the MTP layer's tensors are never read: a file without them loads the same */
    char err[512], dst[1100];
    snprintf(dst, sizeof dst, "%s.nomtp.%d", fx.path, (int)getpid());
    rewrite(fx.path, dst, &(edit){.drop_tensor = "blk.3.nextn.eh_proj.weight"});
    model *m = NULL;
    model_opts mo = {.backend = fx.backend};
    int rc = model_open(&m, dst, &mo, err, sizeof err);
    unlink(dst);
    ck_assert_msg(rc == 0, "%s", err);
    model_close(&m);
    fixture_close(&fx);
}
END_TEST

/* What deepseek2 reads beyond glm4moe's MoE: the latent attention's ranks and head sizes, the
 * per-head absorptions (3-D tensors), DeepSeek's YaRN logit scale, and a KV cache of one latent
 * row per token and layer; files it cannot run are refused with the key or tensor at fault. */
START_TEST(deepseek2_keys_are_read_and_unusable_files_refused)
{
    fixture fx;
    fixture_open(&fx, "deepseek2-tiny-f32", "", 1);
    const model_hparams *hp = fx.hp;
    ck_assert(hp->mla && hp->has_shared_expert && hp->norm_topk);
    ck_assert_int_eq(hp->n_head_kv, 1);
    ck_assert_int_eq(hp->head_dim, hp->n_lora_kv + hp->n_rot); /* the cached row */
    ck_assert_int_eq(hp->head_dim_v, hp->n_lora_kv);
    ck_assert_int_gt(hp->n_lora_q, 0);
    ck_assert_int_gt(hp->mla_k, hp->n_rot);
    ck_assert_int_ne(hp->mla_v, hp->mla_k - hp->n_rot); /* the preset keeps them apart */
    ck_assert_int_eq(hp->gating, KERN_GATING_SIGMOID);
    ck_assert_int_eq(hp->rope_mode, KERN_ROPE_NORM);
    ck_assert(hp->n_group > 1 && hp->n_group_used < hp->n_group);
    ck_assert_int_eq(hp->n_layer_dense, 1);
    /* 1/sqrt(nope + rope) x (0.1 ln(factor) + 1)^2 (mscale_all_dim 1) */
    ck_assert(hp->rope_yarn && hp->yarn.factor > 1.0f);
    double mscale = 1.0 + 0.1 * log(hp->yarn.factor);
    ck_assert_double_eq_tol(hp->attn_scale, mscale * mscale / sqrt((double)hp->mla_k), 1e-6);
    ck_assert_float_eq(hp->yarn.attn_factor, 1.0f);
    /* one row of the latent and the rotary key per token and layer, its values read from it */
    model_ctx *ctx = new_ctx(fx.m, 1, 64);
    ck_assert_uint_eq(model_ctx_kv_bytes_per_1k(ctx), (size_t)hp->n_layer * (size_t)hp->head_dim *
                                                          (test_kv_type == KERN_KV_F16 ? 2u : 4u) *
                                                          1024);
    model_ctx_destroy(&ctx);
    static const refusal cases[] = {
        {{.drop_key = "deepseek2.attention.key_length_mla"}, -ENOTSUP, "convert the model again"},
        {{.drop_key = "deepseek2.attention.kv_lora_rank"},
         -EINVAL,
         "deepseek2.attention.kv_lora_rank"},
        {{.set_key = "deepseek2.attention.head_count_kv", .set_u32 = 2}, -EINVAL, "latent"},
        {{.set_key = "deepseek2.attention.value_length", .set_u32 = 7}, -EINVAL, "latent"},
        /* kv_lora_rank + rope would overflow a 32-bit sum (UBSan watches the sanitize build) */
        {{.set_key = "deepseek2.attention.kv_lora_rank", .set_u32 = 2147483647}, -EINVAL, "latent"},
        {{.drop_tensor = "blk.1.attn_k_b.weight"}, -EINVAL, "'blk.1.attn_k_b.weight' is missing"},
        {{.drop_tensor = "blk.2.attn_q_a_norm.weight"},
         -EINVAL,
         "'blk.2.attn_q_a_norm.weight' is missing"},
        {{.retype_tensor = "blk.0.attn_v_b.weight", .new_type = GGUF_T_F32, .new_ne0 = 8},
         -EINVAL,
         "has shape"},
        {{.drop_key = "deepseek2.expert_feed_forward_length"},
         -EINVAL,
         "deepseek2.expert_feed_forward_length"},
    };
    expect_refusals(&fx, cases, sizeof cases / sizeof cases[0]);
    /* DeepSeek-V2's files name no gating function: softmax */
    char err[512], dst[1100];
    snprintf(dst, sizeof dst, "%s.nogating.%d", fx.path, (int)getpid());
    rewrite(fx.path, dst, &(edit){.drop_key = "deepseek2.expert_gating_func"});
    model *m = NULL;
    model_opts mo = {.backend = fx.backend};
    int rc = model_open(&m, dst, &mo, err, sizeof err);
    unlink(dst);
    ck_assert_msg(rc == 0, "%s", err);
    ck_assert_int_eq(model_params(m)->gating, KERN_GATING_SOFTMAX);
    model_close(&m);
    fixture_close(&fx);
}
END_TEST

/* Copies `src` to `dst` with every quantised tensor replaced by its F32 dequantisation. */
static void dequantise_copy(const char *src, const char *dst)
{
    char err[512];
    gguf_file *f = NULL;
    ck_assert_msg(gguf_open(&f, src, err, sizeof err) == 0, "%s", err);
    gguf_writer *w = NULL;
    ck_assert_int_eq(gguf_writer_create(&w, gguf_alignment(f)), 0);
    for (uint64_t i = 0; i < gguf_n_kv(f); i++) {
        const gguf_kv *kv = gguf_kv_at(f, i);
        char key[256];
        snprintf(key, sizeof key, "%.*s", (int)kv->key.len, kv->key.data);
        ck_assert_int_eq(gguf_writer_add_value(w, key, &kv->value), 0);
    }
    float **owned = calloc(gguf_n_tensors(f), sizeof *owned);
    for (uint64_t i = 0; i < gguf_n_tensors(f); i++) {
        const gguf_tensor *t = gguf_tensor_at(f, i);
        char name[256];
        snprintf(name, sizeof name, "%.*s", (int)t->name.len, t->name.data);
        const kern_type_traits *tt = kern_type_info(t->type);
        ck_assert_ptr_nonnull(tt);
        if (tt->block_elems == 1) {
            ck_assert_int_eq(gguf_writer_add_tensor(w, name, t->n_dims, t->ne, t->type, t->data),
                             0);
            continue;
        }
        int64_t n = t->ne[0] * t->ne[1] * t->ne[2] * t->ne[3];
        owned[i] = malloc((size_t)n * sizeof(float));
        tt->to_f32(t->data, owned[i], n);
        ck_assert_int_eq(gguf_writer_add_tensor(w, name, t->n_dims, t->ne, GGUF_T_F32, owned[i]),
                         0);
    }
    ck_assert_msg(gguf_writer_write(w, dst, err, sizeof err) == 0, "%s", err);
    gguf_writer_destroy(&w);
    for (uint64_t i = 0; i < gguf_n_tensors(f); i++)
        free(owned[i]);
    free(owned);
    gguf_close(&f);
}

/* The quantised goldens' only difference from moeserve must be the 8-bit activations: with
 * the same weights dequantised to F32 (by our dequantisers, bit-exact with gguf-py) the model
 * meets the float bound and the exact greedy tokens. */
START_TEST(dequantised_weights_match_transformers)
{
    char err[512], dst[1100];
    const golden_case *gc = &goldens[N_FLOAT_GOLDEN + _i];
    fixture fx;
    fixture_open(&fx, gc->name, "", 2);
    snprintf(dst, sizeof dst, "%s.f32.%d", fx.path, (int)getpid());
    dequantise_copy(fx.path, dst);
    model_close(&fx.m);
    model_opts mo = {.backend = fx.backend};
    ck_assert_msg(model_open(&fx.m, dst, &mo, err, sizeof err) == 0, "%s", err);
    unlink(dst);
    fx.hp = model_params(fx.m);
    char label[300];
    snprintf(label, sizeof label, "%s dequantised", gc->name);
    check_logits(&fx, label, 1e-3);
    check_greedy(&fx, label, 1e-3);
    fixture_close(&fx);
}
END_TEST

/* ---- expert types without a golden ----------------------------------------------------------- */

/* The types the large MoE models keep their experts in, which no quantiser of ours writes:
 * random valid blocks stand in for quantised weights. */
static const uint32_t lowbit_expert_types[] = {KERN_T_IQ4_NL, KERN_T_IQ4_XS, KERN_T_MXFP4,
                                               KERN_T_Q3_K, KERN_T_Q2_K};
enum { N_LOWBIT = sizeof lowbit_expert_types / sizeof lowbit_expert_types[0] };

/* Multiplies every block's scale by k (MXFP4: the nearest power of two), so that random blocks
 * get the magnitude of the weights they replace.  Q2_K's dmin is set to 1.5 d, which centres
 * its values on zero (mean code 1.5 times mean scale 7.5 = 1.5 times mean min 7.5): a common
 * offset in every row would give every token the same hidden state and the same experts. */
static void scale_blocks(uint32_t type, uint8_t *blocks, int64_t n_blocks, double k)
{
    size_t bb = kern_type_info(type)->block_bytes;
    for (int64_t i = 0; i < n_blocks; i++) {
        uint8_t *b = blocks + (size_t)i * bb;
        if (type == KERN_T_MXFP4) {
            ((block_mxfp4 *)b)->e = (uint8_t)(((block_mxfp4 *)b)->e + lround(log2(k)));
            continue;
        }
        size_t d_off = type == KERN_T_Q2_K   ? offsetof(block_q2_K, d)
                       : type == KERN_T_Q3_K ? offsetof(block_q3_K, d)
                                             : 0;
        kern_half d;
        memcpy(&d, b + d_off, 2);
        float scaled = (float)(kern_f16_to_f32(d) * k);
        d = kern_f32_to_f16(scaled);
        memcpy(b + d_off, &d, 2);
        if (type == KERN_T_Q2_K) {
            kern_half dmin = kern_f32_to_f16(1.5f * scaled);
            memcpy(b + offsetof(block_q2_K, dmin), &dmin, 2);
        }
    }
}

/* Random blocks of `type` for a tensor of n elements whose values have root mean square rms. */
static uint8_t *lowbit_blocks_like(uint32_t type, int64_t n, double rms)
{
    const kern_type_traits *t = kern_type_info(type);
    int64_t n_blocks = n / t->block_elems;
    uint8_t *blocks = test_random_blocks(type, n_blocks);
    scale_blocks(type, blocks, n_blocks, 1.0); /* Q2_K: centre first */
    float *v = malloc((size_t)n * sizeof *v);
    t->to_f32(blocks, v, n);
    double sum2 = 0.0;
    for (int64_t i = 0; i < n; i++)
        sum2 += (double)v[i] * v[i];
    scale_blocks(type, blocks, n_blocks, rms / sqrt(sum2 / (double)n));
    free(v);
    return blocks;
}

/* Copies the F32 model `src` to `dst` with its routed-expert tensors (ffn_*_exps) in `type`. */
static void expert_type_copy(const char *src, const char *dst, uint32_t type)
{
    char err[512];
    gguf_file *f = NULL;
    ck_assert_msg(gguf_open(&f, src, err, sizeof err) == 0, "%s", err);
    gguf_writer *w = NULL;
    ck_assert_int_eq(gguf_writer_create(&w, gguf_alignment(f)), 0);
    for (uint64_t i = 0; i < gguf_n_kv(f); i++) {
        const gguf_kv *kv = gguf_kv_at(f, i);
        char key[256];
        snprintf(key, sizeof key, "%.*s", (int)kv->key.len, kv->key.data);
        ck_assert_int_eq(gguf_writer_add_value(w, key, &kv->value), 0);
    }
    uint8_t **owned = calloc(gguf_n_tensors(f), sizeof *owned);
    int n_retyped = 0;
    for (uint64_t i = 0; i < gguf_n_tensors(f); i++) {
        const gguf_tensor *t = gguf_tensor_at(f, i);
        char name[256];
        snprintf(name, sizeof name, "%.*s", (int)t->name.len, t->name.data);
        if (!strstr(name, "_exps.weight")) {
            ck_assert_int_eq(gguf_writer_add_tensor(w, name, t->n_dims, t->ne, t->type, t->data),
                             0);
            continue;
        }
        ck_assert_int_eq(t->type, GGUF_T_F32);
        int64_t n = t->ne[0] * t->ne[1] * t->ne[2] * t->ne[3];
        double sum2 = 0.0;
        for (int64_t j = 0; j < n; j++)
            sum2 += (double)((const float *)t->data)[j] * ((const float *)t->data)[j];
        owned[i] = lowbit_blocks_like(type, n, sqrt(sum2 / (double)n));
        ck_assert_int_eq(gguf_writer_add_tensor(w, name, t->n_dims, t->ne, type, owned[i]), 0);
        n_retyped++;
    }
    ck_assert_int_gt(n_retyped, 0);
    ck_assert_msg(gguf_writer_write(w, dst, err, sizeof err) == 0, "%s", err);
    gguf_writer_destroy(&w);
    for (uint64_t i = 0; i < gguf_n_tensors(f); i++)
        free(owned[i]);
    free(owned);
    gguf_close(&f);
}

/* A model whose experts are in one of these types runs end to end, and its logits are those of
 * the same model with the experts dequantised to F32, within the 8-bit activations' bound. */
START_TEST(lowbit_expert_types_match_their_dequantisation)
{
    char err[512], quant_path[1100], f32_path[1200];
    uint32_t type = lowbit_expert_types[_i];
    const char *type_name = kern_type_info(type)->name;
    fixture fx;
    fixture_open(&fx, "llama-tiny-f32", "", 2);
    snprintf(quant_path, sizeof quant_path, "%s.%s.%d", fx.path, type_name, (int)getpid());
    snprintf(f32_path, sizeof f32_path, "%s.f32.%d", quant_path, (int)getpid());
    expert_type_copy(fx.path, quant_path, type);
    dequantise_copy(quant_path, f32_path);
    model *mq = NULL, *mf = NULL;
    model_opts mo = {.backend = fx.backend};
    ck_assert_msg(model_open(&mq, quant_path, &mo, err, sizeof err) == 0, "%s", err);
    ck_assert_msg(model_open(&mf, f32_path, &mo, err, sizeof err) == 0, "%s", err);
    unlink(quant_path);
    unlink(f32_path);
    int n_vocab = fx.hp->n_vocab;
    float *lq = malloc((size_t)n_vocab * sizeof *lq), *lf = malloc((size_t)n_vocab * sizeof *lf);
    double worst = 0.0;
    const cJSON *p;
    cJSON_ArrayForEach(p, cJSON_GetObjectItem(fx.golden, "prompts"))
    {
        int n;
        int32_t *tokens = json_ints(cJSON_GetObjectItem(p, "tokens"), &n);
        model_ctx *cq = new_ctx(mq, 1, n + 1), *cf = new_ctx(mf, 1, n + 1);
        run_prompt(cq, tokens, n, 0, lq);
        run_prompt(cf, tokens, n, 0, lf);
        double max_abs = 0.0, max_delta = 0.0;
        for (int i = 0; i < n_vocab; i++) {
            ck_assert(isfinite(lq[i]));
            max_abs = fmax(max_abs, fabs(lf[i]));
            max_delta = fmax(max_delta, fabs(lq[i] - lf[i]));
        }
        ck_assert_msg(max_abs > 0.5, "%s: degenerate logits (max |logit| %g)", type_name, max_abs);
        ck_assert_msg(max_delta <= QUANT_TOL * max_abs, "%s: max |delta| %g > %g * %g", type_name,
                      max_delta, QUANT_TOL, max_abs);
        worst = fmax(worst, max_delta / max_abs);
        model_ctx_destroy(&cq);
        model_ctx_destroy(&cf);
        free(tokens);
    }
    printf("%s experts vs their F32 dequantisation: max |delta logit| / max |logit| = %.2e\n",
           type_name, worst);
    free(lq);
    free(lf);
    model_close(&mq);
    model_close(&mf);
    fixture_close(&fx);
}
END_TEST

/* ---- a failing backend ----------------------------------------------------------------------- */

/* The failure tests' prompt: the first golden prompt of qwen3moe-tiny-f32, the model on sim,
 * and the prompt's logits from a plain run (ref). */
typedef struct fault_run {
    fixture fx;
    int n;
    int32_t *tokens, *pos, *seqs;
    float *ref, *got;
} fault_run;

static void fault_run_open(fault_run *r)
{
    kern_backend_kind saved = test_backend;
    test_backend = KERN_BACKEND_SIM;
    fixture_open(&r->fx, "qwen3moe-tiny-f32", "", 1);
    test_backend = saved;
    const cJSON *p = cJSON_GetArrayItem(cJSON_GetObjectItem(r->fx.golden, "prompts"), 0);
    r->tokens = json_ints(cJSON_GetObjectItem(p, "tokens"), &r->n);
    r->pos = malloc((size_t)r->n * sizeof *r->pos);
    r->seqs = calloc((size_t)r->n, sizeof *r->seqs);
    for (int i = 0; i < r->n; i++)
        r->pos[i] = i;
    r->ref = malloc((size_t)r->fx.hp->n_vocab * sizeof *r->ref);
    r->got = malloc((size_t)r->fx.hp->n_vocab * sizeof *r->got);
    model_ctx *ctx = new_ctx(r->fx.m, 1, r->n);
    run_prompt(ctx, r->tokens, r->n, 0, r->ref);
    model_ctx_destroy(&ctx);
}

static void fault_run_close(fault_run *r)
{
    free(r->tokens);
    free(r->pos);
    free(r->seqs);
    free(r->ref);
    free(r->got);
    fixture_close(&r->fx);
}

/* The prompt on a fresh context of m with an operation failing `after` operations on: the step
 * fails with the injected error, or succeeds where it has fewer operations (the injection is then
 * cancelled); either way a fresh context then gives the reference logits.  Returns whether the
 * step failed. */
static bool fault_step(fault_run *r, model *m, int64_t after)
{
    char err[512] = "";
    model_ctx *ctx = new_ctx(m, 1, r->n);
    ck_assert_int_eq(kern_sim_inject_failure(r->fx.backend, after, -EIO), 0);
    model_batch b = {.n_tokens = r->n, .token = r->tokens, .pos = r->pos, .seq = r->seqs};
    int rc = model_forward(ctx, &b, r->got, err, sizeof err);
    if (rc) {
        ck_assert_int_eq(rc, -EIO);
        ck_assert_msg(strstr(err, "injected") && strstr(err, "sim"), "%s", err);
    } else {
        ck_assert_int_eq(kern_sim_inject_failure(r->fx.backend, -1, 0), 0);
    }
    model_ctx_destroy(&ctx);
    ctx = new_ctx(m, 1, r->n);
    run_prompt(ctx, r->tokens, r->n, 0, r->got);
    ck_assert(memcmp(r->ref, r->got, (size_t)r->fx.hp->n_vocab * sizeof *r->ref) == 0);
    model_ctx_destroy(&ctx);
    return rc != 0;
}

/* A kernel that fails mid-step (injected on sim) fails the step with a message naming it, and
 * the next step on a fresh context gives the same logits as if nothing had happened. */
START_TEST(a_failed_operation_fails_the_step)
{
    fault_run r;
    fault_run_open(&r);
    for (int64_t after = 0; after < 36; after += 5) /* a step of the tiny model is ~40 ops */
        ck_assert(fault_step(&r, r.fx.m, after));
    fault_run_close(&r);
}
END_TEST

/* The same with a quarter of the experts in a device tier and every miss computed on the CPU
 * lane (policy cpu, the host tier holding every expert): the lane is running whenever the
 * device's work fails, and the step still fails cleanly, joins it and frees what it pinned, and
 * a fresh context gives the logits again — which are the ones with no device tier at all. */
START_TEST(a_failed_operation_beside_the_cpu_lane_fails_the_step)
{
    char err[512];
    fault_run r;
    fault_run_open(&r);
    kern_open_opts co = kern_open_opts_default();
    co.kind = KERN_BACKEND_CPU;
    co.n_threads = 2;
    kern_backend *cpu = NULL;
    ck_assert_msg(kern_open(&cpu, &co, err, sizeof err) == 0, "%s", err);
    cache_opts host = cache_opts_default();
    cache_device_opts dev = cache_device_opts_default();
    dev.backend = r.fx.backend;
    dev.budget_fraction = 0.25;
    model_opts mo = {.backend = r.fx.backend,
                     .expert_cache = &host,
                     .device_cache = &dev,
                     .cpu_backend = cpu,
                     .miss_policy = MODEL_MISS_CPU};
    model *m = NULL;
    ck_assert_msg(model_open(&m, r.fx.path, &mo, err, sizeof err) == 0, "%s", err);
    model_ctx *ctx = new_ctx(m, 1, r.n);
    run_prompt(ctx, r.tokens, r.n, 0, r.got);
    ck_assert(memcmp(r.ref, r.got, (size_t)r.fx.hp->n_vocab * sizeof *r.ref) == 0);
    const model_step_stats *st = model_ctx_last_stats(ctx);
    ck_assert_uint_gt(st->cpu_lane_experts, 0);
    ck_assert_uint_eq(st->cpu_lane_experts, st->cpu_experts);
    model_ctx_destroy(&ctx);
    /* every third operation of the step, until the step has fewer */
    int failed = 0;
    int64_t after = 0;
    while (after < 1000 && fault_step(&r, m, after)) {
        failed++;
        after += 3;
    }
    ck_assert_int_lt(after, 1000);
    ck_assert_int_gt(failed, 5);
    model_close(&m);
    kern_close(&cpu);
    fault_run_close(&r);
}
END_TEST

/* ---- routing on the device ---------------------------------------------------------------- */

/* One prompt then `steps` greedy decode steps on a fresh sim context; per step: the logits, the
 * step's stats and the host's waits on the device during it. */
typedef struct routed_run {
    float *logits; /* [steps + 1][n_vocab] */
    model_step_stats stats[8];
    uint64_t waits[8];
} routed_run;

typedef enum routing_mode { VIA_HOST, ON_DEVICE, ON_DEVICE_GRAPHS } routing_mode;

/* stale_at: before that step, every graph the sim backend recorded is made stale (-1: never) */
static void run_routed(fixture *fx, routing_mode mode, const int32_t *prompt, int n, int steps,
                       int stale_at, routed_run *out)
{
    char err[512];
    int n_vocab = fx->hp->n_vocab;
    model_ctx_opts co = {.n_seq = 1,
                         .n_ctx = n + steps + 1,
                         .kv_type = test_kv_type,
                         .host_routing = mode == VIA_HOST,
                         .no_graphs = mode != ON_DEVICE_GRAPHS};
    model_ctx *ctx = NULL;
    ck_assert_msg(model_ctx_create(&ctx, fx->m, &co, err, sizeof err) == 0, "%s", err);
    int32_t *tok = malloc((size_t)n * sizeof *tok), *pos = malloc((size_t)n * sizeof *pos),
            *seq = calloc((size_t)n, sizeof *seq);
    memcpy(tok, prompt, (size_t)n * sizeof *tok);
    for (int i = 0; i < n; i++)
        pos[i] = i;
    model_batch b = {.n_tokens = n, .token = tok, .pos = pos, .seq = seq};
    for (int step = 0; step <= steps; step++) {
        bool sim = fx->backend->kind == KERN_BACKEND_SIM;
        kern_sim_stats s0 = {0}, s1 = {0};
        if (sim) ck_assert_int_eq(kern_sim_get_stats(fx->backend, &s0), 0);
        if (step == stale_at) ck_assert_int_eq(kern_sim_stale_graphs(fx->backend), 0);
        float *l = out->logits + (size_t)step * (size_t)n_vocab;
        ck_assert_msg(model_forward(ctx, &b, l, err, sizeof err) == 0, "%s", err);
        if (sim) ck_assert_int_eq(kern_sim_get_stats(fx->backend, &s1), 0);
        out->stats[step] = *model_ctx_last_stats(ctx);
        out->waits[step] = s1.host_waits - s0.host_waits;
        tok[0] = model_argmax(l, n_vocab);
        pos[0] = n + step;
        b.n_tokens = 1;
    }
    model_ctx_destroy(&ctx);
    free(tok);
    free(pos);
    free(seq);
}

/* With every expert on the device and no predictor, a sim step chooses and groups the experts
 * on the device: the same bits and the same counts as routing through the host, and the host
 * waits on the device twice a step (the stale-error sync, the logits; once more on the first,
 * for the expert tables) where the host's routing waits once more per MoE layer.  With graphs,
 * the second decode step is recorded and the third replayed (sim replays the recorded calls,
 * so anything the step left at an address that moved would show): the same bits and counts
 * again; a graph made stale (as CUDA's scratch moving makes it) is recorded again at once.  gpt-oss
 * brings expert biases, glm4moe a leading dense layer, deepseek2 the latent attention's reshuffles,
 * Q4_K_M the quantised experts.  On CUDA (MOE_TEST_BACKEND=cuda, tools/device-check) the same, but
 * for the waits (sim counts them) and the stale graphs (sim makes them): there step 2 is recorded
 * and every later step replayed. */
START_TEST(routing_on_the_device_matches_the_host_without_its_round_trips)
{
    static const char *const names[] = {"qwen3moe-tiny-q4_k_m", "gpt-oss-tiny-f32",
                                        "glm4moe-tiny-f32", "deepseek2-tiny-f32"};
    enum { STEPS = 6, STALE_AT = 4 };
    /* with graphs: step 0 the prompt, 1 the first decode step (plain), 2 recorded, 3 replayed,
     * 4 stale (recorded again), 5 and 6 replayed */
    static const bool captured[STEPS + 1] = {0, 0, 1, 0, 1, 0, 0},
                                       replayed[STEPS + 1] = {0, 0, 0, 1, 0, 1, 1},
                                       captured_cuda[STEPS + 1] = {0, 0, 1, 0, 0, 0, 0},
                                       replayed_cuda[STEPS + 1] = {0, 0, 0, 1, 1, 1, 1};
    kern_backend_kind kind =
        test_backend == KERN_BACKEND_CUDA ? KERN_BACKEND_CUDA : KERN_BACKEND_SIM;
    bool sim = kind == KERN_BACKEND_SIM;
    for (size_t c = 0; c < sizeof names / sizeof names[0]; c++) {
        fixture fx;
        kern_backend_kind saved = test_backend;
        test_backend = kind;
        fixture_open(&fx, names[c], "", 1);
        test_backend = saved;
        const cJSON *p = cJSON_GetArrayItem(cJSON_GetObjectItem(fx.golden, "prompts"), 0);
        int n;
        int32_t *prompt = json_ints(cJSON_GetObjectItem(p, "tokens"), &n);
        size_t n_logits = (size_t)(STEPS + 1) * (size_t)fx.hp->n_vocab;
        routed_run host = {.logits = malloc(n_logits * sizeof(float))},
                   runs[2] = {{.logits = malloc(n_logits * sizeof(float))},
                              {.logits = malloc(n_logits * sizeof(float))}};
        run_routed(&fx, VIA_HOST, prompt, n, STEPS, -1, &host);
        run_routed(&fx, ON_DEVICE, prompt, n, STEPS, -1, &runs[0]);
        run_routed(&fx, ON_DEVICE_GRAPHS, prompt, n, STEPS, sim ? STALE_AT : -1, &runs[1]);
        uint64_t moe_layers = (uint64_t)(fx.hp->n_layer - fx.hp->n_layer_dense);
        for (int r = 0; r < 2; r++) {
            const routed_run *dev = &runs[r];
            ck_assert_msg(memcmp(dev->logits, host.logits, n_logits * sizeof(float)) == 0,
                          "%s: routing on the device%s changed the logits", names[c],
                          r ? " with graphs" : "");
            for (int step = 0; step <= STEPS; step++) {
                const model_step_stats *d = &dev->stats[step], *h = &host.stats[step];
                ck_assert_msg(d->routed_on_device && !h->routed_on_device, "%s step %d", names[c],
                              step);
                ck_assert_int_eq(d->experts_used, h->experts_used);
                ck_assert_uint_eq(d->expert_bytes, h->expert_bytes);
                ck_assert_uint_eq(d->matmul_macs, h->matmul_macs);
                ck_assert_uint_eq(d->dense_bytes, h->dense_bytes);
                /* the first step also builds the layers' tables of where the experts are */
                ck_assert_msg(!sim || (dev->waits[step] == (step == 0 ? 3u : 2u) &&
                                       host.waits[step] == 2 + moe_layers),
                              "%s step %d: the host waited %llu times routing on the device, "
                              "%llu through the host (%llu MoE layers)",
                              names[c], step, (unsigned long long)dev->waits[step],
                              (unsigned long long)host.waits[step], (unsigned long long)moe_layers);
                ck_assert_msg(d->graph_captured == (r && (sim ? captured : captured_cuda)[step]) &&
                                  d->graph_replayed ==
                                      (r && (sim ? replayed : replayed_cuda)[step]) &&
                                  !h->graph_captured && !h->graph_replayed,
                              "%s step %d: recorded %d, replayed %d", names[c], step,
                              d->graph_captured, d->graph_replayed);
            }
        }
        for (int r = 0; r < 2; r++)
            free(runs[r].logits);
        free(host.logits);
        free(prompt);
        fixture_close(&fx);
    }
}
END_TEST

/* Steps whose shapes alternate (continuous batching: one sequence decoding, then two) get a
 * graph each once each shape has run plainly, and replay them in turn: the same bits as
 * without graphs. */
START_TEST(graphs_of_alternating_shapes)
{
    char err[512];
    enum { ROUNDS = 4 };
    fixture fx;
    kern_backend_kind saved = test_backend;
    test_backend = test_backend == KERN_BACKEND_CUDA ? KERN_BACKEND_CUDA : KERN_BACKEND_SIM;
    fixture_open(&fx, "qwen3moe-tiny-f32", "", 1);
    test_backend = saved;
    const cJSON *prompts = cJSON_GetObjectItem(fx.golden, "prompts");
    int n_vocab = fx.hp->n_vocab, lens[2];
    int32_t *prompt[2];
    for (int q = 0; q < 2; q++)
        prompt[q] =
            json_ints(cJSON_GetObjectItem(cJSON_GetArrayItem(prompts, q), "tokens"), &lens[q]);
    size_t per_run = (size_t)(2 + 3 * ROUNDS) * (size_t)n_vocab;
    float *runs[2] = {malloc(per_run * sizeof(float)), malloc(per_run * sizeof(float))};
    int captures = 0, replays = 0;
    for (int r = 0; r < 2; r++) {
        model_ctx_opts co = {
            .n_seq = 2, .n_ctx = 64 + 2 * ROUNDS, .kv_type = test_kv_type, .no_graphs = r == 0};
        model_ctx *ctx = NULL;
        ck_assert_msg(model_ctx_create(&ctx, fx.m, &co, err, sizeof err) == 0, "%s", err);
        float *out = runs[r];
        int32_t next[2], pos[2];
        for (int q = 0; q < 2; q++) { /* each prompt a step of its own */
            run_prompt(ctx, prompt[q], lens[q], q, out);
            next[q] = model_argmax(out, n_vocab);
            pos[q] = lens[q];
            out += n_vocab;
        }
        for (int round = 0; round < ROUNDS; round++)
            for (int shape = 1; shape <= 2; shape++) { /* sequence 0 alone, then both */
                int32_t tok[2] = {next[0], next[1]}, seq[2] = {0, 1}, at[2] = {pos[0], pos[1]};
                uint8_t want[2] = {1, 1};
                model_batch b = {
                    .n_tokens = shape, .token = tok, .pos = at, .seq = seq, .want_logits = want};
                ck_assert_msg(model_forward(ctx, &b, out, err, sizeof err) == 0, "%s", err);
                const model_step_stats *st = model_ctx_last_stats(ctx);
                captures += st->graph_captured;
                replays += st->graph_replayed;
                if (r == 1)
                    ck_assert_msg(st->graph_captured == (round == 1) &&
                                      st->graph_replayed == (round >= 2),
                                  "round %d, %d tokens: recorded %d, replayed %d", round, shape,
                                  st->graph_captured, st->graph_replayed);
                for (int q = 0; q < shape; q++) {
                    next[q] = model_argmax(out + (size_t)q * n_vocab, n_vocab);
                    pos[q]++;
                }
                out += (size_t)shape * n_vocab;
            }
        model_ctx_destroy(&ctx);
    }
    ck_assert_int_eq(captures, 2);
    ck_assert_int_eq(replays, 2 * (ROUNDS - 2));
    ck_assert_msg(memcmp(runs[0], runs[1], per_run * sizeof(float)) == 0,
                  "replaying graphs of alternating shapes changed the logits");
    for (int q = 0; q < 2; q++)
        free(prompt[q]);
    free(runs[0]);
    free(runs[1]);
    fixture_close(&fx);
}
END_TEST

/* ---- the F16 KV cache -------------------------------------------------------------------- */

/* F16 keys and values round each stored element by up to 2^-11 of itself; over the tiny models'
 * few layers that moves the logits by a few 1e-4 of the largest (measured: printed below).  The
 * bound stated in docs/benchmarks.md is 2e-3 * max|logit|, and the 32 greedy tokens must not
 * change. */
#define F16_KV_TOL 1e-3

START_TEST(f16_kv_stays_close_to_f32)
{
    fixture fx;
    fixture_open(&fx, goldens[_i].name, "", 2);
    const cJSON *prompts = cJSON_GetObjectItem(fx.golden, "prompts");
    int n_vocab = fx.hp->n_vocab;
    float *a = malloc((size_t)n_vocab * sizeof *a), *b = malloc((size_t)n_vocab * sizeof *b);
    double worst = 0.0;
    const cJSON *p;
    cJSON_ArrayForEach(p, prompts)
    {
        int n;
        int32_t *tokens = json_ints(cJSON_GetObjectItem(p, "tokens"), &n);
        test_kv_type = KERN_KV_F32;
        model_ctx *c32 = new_ctx(fx.m, 1, n);
        test_kv_type = KERN_KV_F16;
        model_ctx *c16 = new_ctx(fx.m, 1, n);
        run_prompt(c32, tokens, n, 0, a);
        run_prompt(c16, tokens, n, 0, b);
        double max_abs = 0.0, max_delta = 0.0;
        for (int i = 0; i < n_vocab; i++) {
            max_abs = fmax(max_abs, fabs(a[i]));
            max_delta = fmax(max_delta, fabs((double)a[i] - b[i]));
        }
        ck_assert_msg(max_delta <= F16_KV_TOL * max_abs, "%s: F16 KV moves logits by %g (max %g)",
                      goldens[_i].name, max_delta, max_abs);
        worst = fmax(worst, max_delta / max_abs);
        model_ctx_destroy(&c32);
        model_ctx_destroy(&c16);
        free(tokens);
    }
    printf("%s: F16 KV vs F32 KV: max |delta logit| / max |logit| = %.2e\n", goldens[_i].name,
           worst);
    /* the goldens' greedy tokens, with the F16 cache */
    test_kv_type = KERN_KV_F16;
    check_greedy(&fx, goldens[_i].name, goldens[_i].logit_tol);
    test_kv_type = KERN_KV_F32;
    free(a);
    free(b);
    fixture_close(&fx);
}
END_TEST

int main(void)
{
    const char *backend = getenv("MOE_TEST_BACKEND");
    if (backend && *backend && kern_backend_kind_parse(backend, &test_backend)) {
        fprintf(stderr, "MOE_TEST_BACKEND: unknown backend '%s'\n", backend);
        return EXIT_FAILURE;
    }
    printf("model tests on the %s backend\n", kern_backend_kind_name(test_backend));
    Suite *s = suite_create("model");
    TCase *tc = tcase_create("golden");
    tcase_set_timeout(tc, 900);
    tcase_add_loop_test(tc, logits_match_transformers, 0, N_GOLDEN);
    tcase_add_loop_test(tc, greedy_tokens_match_transformers, 0, N_GOLDEN);
    tcase_add_loop_test(tc, batch_gives_each_sequence_its_own_logits, 0, N_GOLDEN);
    tcase_add_loop_test(tc, thread_count_does_not_change_logits, 0, N_GOLDEN);
    tcase_add_loop_test(tc, dequantised_weights_match_transformers, 0, N_GOLDEN - N_FLOAT_GOLDEN);
    tcase_add_loop_test(tc, f16_kv_stays_close_to_f32, 0, N_FLOAT_GOLDEN);
    tcase_add_test(tc, a_failed_operation_fails_the_step);
    tcase_add_test(tc, a_failed_operation_beside_the_cpu_lane_fails_the_step);
    tcase_add_test(tc, routing_on_the_device_matches_the_host_without_its_round_trips);
    tcase_add_test(tc, graphs_of_alternating_shapes);
    tcase_add_test(tc, split_expert_layout_equals_stacked);
    tcase_add_test(tc, bad_batches_are_refused);
    tcase_add_test(tc, unusable_models_are_refused_with_the_reason);
    tcase_add_test(tc, unusable_gpt_oss_models_are_refused_with_the_reason);
    tcase_add_test(tc, glm4moe_keys_are_read_and_unusable_files_refused);
    tcase_add_test(tc, deepseek2_keys_are_read_and_unusable_files_refused);
    tcase_add_loop_test(tc, lowbit_expert_types_match_their_dequantisation, 0, N_LOWBIT);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
