/*
 * `moeserve generate`: one prompt in, text streamed to the terminal, then a line of timings.
 *
 * It runs the same pieces a server request runs — chat template, tokenizer, sampler, streaming
 * decoder, stop strings — on one sequence without the scheduler, so that a model can be tried
 * (and its speed seen) without an HTTP client.  Generated text goes to stdout as it is
 * produced, never split inside a UTF-8 character; logs and the timing line go to stderr.
 */
#include "base/vec.h"
#include "cli/cli.h"
#include "engine/prompt.h"
#include "model/model.h"
#include "sampling/sampler.h"
#include "sampling/stop.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum { MAX_STOPS = 16 };

typedef struct gen_args {
    const char *path;
    const char *prompt;
    const char *prompt_ids;
    const char *system;
    const char *chat_template;
    const char *stops[MAX_STOPS];
    size_t n_stops;
    bool chat;
    bool ignore_eos;
    long n_gen;
    long n_threads;
    sampler_params sp;
    cli_cache_args cache;
} gen_args;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void usage(FILE *out)
{
    fprintf(
        out,
        "usage: moeserve generate --model FILE (--prompt TEXT | --prompt-ids IDS) [options]\n"
        "  --model FILE            GGUF model\n"
        "  --prompt TEXT           prompt text (BOS added as the vocabulary asks)\n"
        "  --chat                  render --prompt as a user message with the chat template\n"
        "  --system TEXT           system message (with --chat)\n"
        "  --chat-template NAME    built-in template or a Jinja file instead of the model's\n"
        "  --prompt-ids IDS        prompt as comma-separated token ids\n"
        "  -n TOKENS               tokens to generate at most (default 64)\n"
        "  --temperature T         0 = greedy (default 0)\n"
        "  --top-k K  --top-p P  --min-p P\n"
        "  --repeat-penalty R      --repeat-last-n N\n"
        "  --presence-penalty X    --frequency-penalty X\n"
        "  --seed N                makes sampling reproducible\n"
        "  --stop TEXT             stop string (repeatable)\n"
        "  --ignore-eos            keep going past end-of-generation tokens\n"
        "  --threads N             CPU threads (default: all)\n"
        "  --expert-cache SIZE|N%%|all|min|off   experts through the cache (default off)\n"
        "  --direct auto|on|off  --policy lru|lfu|lru-protect|lfu-history|lru-predict  --io-depth "
        "N  "
        "--trace FILE\n"
        "  --predictor none|pregate|affinity|hybrid  --lookahead N  --width N  --min-prob P\n"
        "  --backend auto|cpu|sim|cuda   compute backend (default auto: CUDA when a device is "
        "usable)\n"
        "  --device-cache SIZE|N%%|all|min   device tier budget (device backends; default all)\n"
        "  --kv-type f16|f32       KV cache storage (default f16)\n"
        "  --host-pinning auto|tier|ring  copies to the device from the registered host tier or "
        "via a pinned ring\n"
        "  --staging-threads N  threads that fill the pinned ring (default 0: a quarter of the "
        "cores, 1 to 4)\n"
        "  --miss-policy auto|copy|cpu   a device tier's misses: copied in, or computed on the "
        "CPU\n"
        "                          (default auto: per expert, whichever the measured rates "
        "favour)\n");
}

static int parse_float(const char *opt, const char *text, float *out)
{
    char *end;
    errno = 0;
    double v = strtod(text, &end);
    if (end == text || *end || errno) {
        fprintf(stderr, "moeserve generate: %s expects a number, got '%s'\n", opt, text);
        return -EINVAL;
    }
    *out = (float)v;
    return 0;
}

/* Returns 0 to run, -1 after --help, 2 on a usage error. */
static int parse_args(gen_args *a, int argc, char **argv)
{
    memset(a, 0, sizeof *a);
    cli_cache_args_init(&a->cache);
    a->n_gen = 64;
    a->sp = sampler_params_default();
    a->sp.temperature = 0;
    for (int i = 1; i < argc; i++) {
        const char *o = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        long n;
        int bad = 0, unknown = 0;
        int used = v ? cli_cache_arg(&a->cache, o, v) : 0;
        if (used < 0) return 2;
        if (used) {
            i++;
            continue;
        }
        if (!strcmp(o, "--help") || !strcmp(o, "-h")) {
            usage(stdout);
            return -1;
        } else if (!strcmp(o, "--chat")) {
            a->chat = true;
            continue;
        } else if (!strcmp(o, "--ignore-eos")) {
            a->ignore_eos = true;
            continue;
        } else if (!v) {
            bad = unknown = 1;
        } else if (!strcmp(o, "--model")) {
            a->path = v;
        } else if (!strcmp(o, "--prompt")) {
            a->prompt = v;
        } else if (!strcmp(o, "--prompt-ids")) {
            a->prompt_ids = v;
        } else if (!strcmp(o, "--system")) {
            a->system = v;
        } else if (!strcmp(o, "--chat-template")) {
            a->chat_template = v;
        } else if (!strcmp(o, "--stop")) {
            if (a->n_stops == MAX_STOPS) {
                fprintf(stderr, "moeserve generate: at most %d --stop strings\n", MAX_STOPS);
                return 2;
            }
            a->stops[a->n_stops++] = v;
        } else if (!strcmp(o, "-n")) {
            bad = cli_parse_int(o, v, 1, 1 << 20, &a->n_gen);
        } else if (!strcmp(o, "--threads")) {
            bad = cli_parse_int(o, v, 0, 1024, &a->n_threads);
        } else if (!strcmp(o, "--top-k")) {
            bad = cli_parse_int(o, v, 0, 1 << 24, &n);
            a->sp.top_k = (int32_t)n;
        } else if (!strcmp(o, "--repeat-last-n")) {
            bad = cli_parse_int(o, v, 0, SAMPLER_MAX_REPETITION_LAST_N, &n);
            a->sp.repetition_last_n = (int32_t)n;
        } else if (!strcmp(o, "--seed")) {
            char *end;
            errno = 0;
            unsigned long long s = strtoull(v, &end, 10);
            bad = end == v || *end || errno || *v == '-';
            if (bad) fprintf(stderr, "moeserve generate: --seed expects an integer, got '%s'\n", v);
            a->sp.seed = s;
            a->sp.has_seed = true;
        } else if (!strcmp(o, "--temperature")) {
            bad = parse_float(o, v, &a->sp.temperature);
        } else if (!strcmp(o, "--top-p")) {
            bad = parse_float(o, v, &a->sp.top_p);
        } else if (!strcmp(o, "--min-p")) {
            bad = parse_float(o, v, &a->sp.min_p);
        } else if (!strcmp(o, "--repeat-penalty")) {
            bad = parse_float(o, v, &a->sp.repetition_penalty);
        } else if (!strcmp(o, "--presence-penalty")) {
            bad = parse_float(o, v, &a->sp.presence_penalty);
        } else if (!strcmp(o, "--frequency-penalty")) {
            bad = parse_float(o, v, &a->sp.frequency_penalty);
        } else {
            bad = unknown = 1;
        }
        if (bad) {
            if (unknown)
                fprintf(stderr, "moeserve generate: unknown or incomplete option '%s'\n", o);
            usage(stderr);
            return 2;
        }
        i++;
    }
    if (!a->path || (!a->prompt == !a->prompt_ids)) {
        fprintf(stderr, "moeserve generate: give --model and one of --prompt / --prompt-ids\n");
        usage(stderr);
        return 2;
    }
    if (a->chat && !a->prompt) {
        fprintf(stderr, "moeserve generate: --chat needs --prompt\n");
        return 2;
    }
    return 0;
}

static int parse_ids(const char *text, int32_t **out, size_t *n_out)
{
    size_t cap = 16, n = 0;
    int32_t *ids = malloc(cap * sizeof *ids);
    if (!ids) return -ENOMEM;
    const char *p = text;
    while (*p) {
        char *end;
        errno = 0;
        long v = strtol(p, &end, 10);
        if (end == p || errno || v < 0 || v > INT32_MAX || (*end && *end != ',')) {
            free(ids);
            fprintf(stderr,
                    "moeserve generate: --prompt-ids expects comma-separated token ids, got '%s'\n",
                    text);
            return -EINVAL;
        }
        if (vec_reserve(&ids, &cap, n + 1, sizeof *ids, 16) < 0) {
            free(ids);
            return -ENOMEM;
        }
        ids[n++] = (int32_t)v;
        p = *end ? end + 1 : end;
    }
    if (n == 0) {
        free(ids);
        fprintf(stderr, "moeserve generate: --prompt-ids is empty\n");
        return -EINVAL;
    }
    *out = ids;
    *n_out = n;
    return 0;
}

static int chat_prompt(const gen_args *a, const model *m, const tokenizer *tok, int32_t **ids,
                       size_t *n_ids, char *err, size_t err_size)
{
    chat_template *tmpl = NULL;
    int rc = prompt_template_create(&tmpl, model_file(m), a->chat_template, err, err_size);
    if (rc) return rc;
    cJSON *messages = cJSON_CreateArray();
    cJSON *sys = a->system ? cJSON_CreateObject() : NULL, *user = cJSON_CreateObject();
    if (sys) {
        cJSON_AddItemToArray(messages, sys);
        cJSON_AddStringToObject(sys, "role", "system");
        cJSON_AddStringToObject(sys, "content", a->system);
    }
    if (user) {
        cJSON_AddItemToArray(messages, user);
        cJSON_AddStringToObject(user, "role", "user");
        cJSON_AddStringToObject(user, "content", a->prompt);
    }
    char *text = NULL;
    size_t len = 0;
    if (!messages || !user || (a->system && !sys)) {
        snprintf(err, err_size, "out of memory");
        rc = -ENOMEM;
    } else {
        rc = prompt_render_chat(tmpl, tok, messages, NULL, &text, &len, err, err_size);
    }
    if (rc == 0) rc = prompt_tokenize(tok, text, len, ids, n_ids, err, err_size);
    free(text);
    cJSON_Delete(messages);
    chat_template_destroy(&tmpl);
    return rc;
}

static void print_text(const char *text, size_t len)
{
    if (len) fwrite(text, 1, len, stdout);
    fflush(stdout);
}

int cli_generate(int argc, char **argv)
{
    gen_args a;
    int rc = parse_args(&a, argc, argv);
    if (rc) return rc < 0 ? 0 : rc;

    int status = 1;
    char err[1024];
    kern_backend *be = NULL, *cpu = NULL;
    model *m = NULL;
    model_ctx *ctx = NULL;
    tokenizer *tok = NULL;
    sampler *smp = NULL;
    stop_matcher *stops = NULL;
    tokenizer_stream ts;
    bool stream_open = false;
    int32_t *prompt = NULL, *pos = NULL, *seq = NULL;
    float *logits = NULL;
    size_t n_prompt = 0;
    const char *why = "length";

    if (cli_open_backend(&be, (int)a.n_threads, a.cache.backend, a.cache.backend_auto, 0, false))
        goto done;
    if (cli_open_miss_backend(be, (int)a.n_threads, a.cache.miss_policy, &cpu)) goto done;
    model_opts mo = {.backend = be,
                     .predictor = a.cache.predictor,
                     .lookahead = a.cache.lookahead,
                     .width = a.cache.width,
                     .min_prob = a.cache.min_prob,
                     .cpu_backend = cpu,
                     .miss_policy = (model_miss_policy)a.cache.miss_policy};
    if (cli_cache_args_open(&a.cache, &mo.expert_cache, &mo.device_cache)) goto done;
    if (model_open(&m, a.path, &mo, err, sizeof err)) goto fail_msg;
    cli_log_expert_tiers(m);
    const model_hparams *hp = model_params(m);
    if (tokenizer_create(&tok, model_file(m), err, sizeof err)) goto fail_msg;
    if (a.prompt_ids) {
        if (parse_ids(a.prompt_ids, &prompt, &n_prompt)) goto done;
    } else if (a.chat) {
        if (chat_prompt(&a, m, tok, &prompt, &n_prompt, err, sizeof err)) goto fail_msg;
    } else if (prompt_tokenize(tok, a.prompt, strlen(a.prompt), &prompt, &n_prompt, err,
                               sizeof err)) {
        goto fail_msg;
    }
    if (n_prompt == 0) {
        snprintf(err, sizeof err, "the prompt is empty after tokenization");
        goto fail_msg;
    }
    for (size_t i = 0; i < n_prompt; i++) {
        if (prompt[i] >= hp->n_vocab) {
            snprintf(err, sizeof err, "prompt token %d is outside the vocabulary (%d tokens)",
                     prompt[i], hp->n_vocab);
            goto fail_msg;
        }
    }
    if (sampler_create(&smp, hp->n_vocab, &a.sp, err, sizeof err)) goto fail_msg;
    if (sampler_accept_prompt(smp, prompt, n_prompt)) goto done;
    if (stop_matcher_create(&stops, a.stops, NULL, a.n_stops, err, sizeof err)) goto fail_msg;
    tokenizer_stream_init(&ts, tok, true);
    stream_open = true;

    model_ctx_opts co = {
        .n_seq = 1, .n_ctx = (int32_t)(n_prompt + (size_t)a.n_gen), .kv_type = a.cache.kv_type};
    if (model_ctx_create(&ctx, m, &co, err, sizeof err)) goto fail_msg;
    pos = malloc(n_prompt * sizeof *pos);
    seq = calloc(n_prompt, sizeof *seq);
    logits = malloc((size_t)hp->n_vocab * sizeof *logits);
    if (!pos || !seq || !logits) {
        snprintf(err, sizeof err, "out of memory");
        goto fail_msg;
    }
    for (size_t i = 0; i < n_prompt; i++)
        pos[i] = (int32_t)i;
    cli_log("prompt: %zu tokens%s; sampling: temperature %g, seed %llu", n_prompt,
            a.chat ? " (chat template)" : "", (double)a.sp.temperature,
            (unsigned long long)sampler_seed(smp));

    double t0 = now_s();
    model_batch batch = {.n_tokens = (int32_t)n_prompt, .token = prompt, .pos = pos, .seq = seq};
    if (model_forward(ctx, &batch, logits, err, sizeof err)) goto fail_msg;
    double t_prompt = now_s() - t0, t1 = now_s();
    long n_done = 0;
    stop_output so;
    for (; n_done < a.n_gen; n_done++) {
        int32_t next = sampler_sample(smp, logits, NULL);
        if (next < 0) {
            snprintf(err, sizeof err, "every token is banned");
            goto fail_msg;
        }
        sampler_accept(smp, next);
        if (!a.ignore_eos && tokenizer_is_eog(tok, next)) {
            why = "end of generation token";
            n_done++;
            break;
        }
        const char *text;
        size_t len;
        if (tokenizer_stream_feed(&ts, next, &text, &len) ||
            stop_matcher_feed(stops, text, len, &so)) {
            snprintf(err, sizeof err, "out of memory");
            goto fail_msg;
        }
        print_text(so.text, so.len);
        if (so.stopped) {
            why = "stop string";
            n_done++;
            break;
        }
        if (n_done + 1 == a.n_gen) continue;
        int32_t p = (int32_t)(n_prompt + (size_t)n_done), s0 = 0;
        model_batch one = {.n_tokens = 1, .token = &next, .pos = &p, .seq = &s0};
        if (model_forward(ctx, &one, logits, err, sizeof err)) goto fail_msg;
    }
    const char *text;
    size_t len;
    if (tokenizer_stream_flush(&ts, &text, &len) == 0 && len &&
        stop_matcher_feed(stops, text, len, &so) == 0)
        print_text(so.text, so.len);
    stop_matcher_flush(stops, &so);
    print_text(so.text, so.len);
    double t_gen = now_s() - t1;
    printf("\n");
    fflush(stdout);
    fprintf(stderr,
            "prompt: %zu tokens in %.3f s (%.1f tokens/s); generation: %ld tokens in %.3f s "
            "(%.1f tokens/s); stopped by %s\n",
            n_prompt, t_prompt, (double)n_prompt / t_prompt, n_done, t_gen,
            n_done > 1 ? (double)(n_done - 1) / t_gen : 0.0, why);
    status = 0;
    goto done;

fail_msg:
    fprintf(stderr, "\nmoeserve generate: %s\n", err);
done:
    if (stream_open) tokenizer_stream_release(&ts);
    stop_matcher_destroy(&stops);
    sampler_destroy(&smp);
    tokenizer_destroy(&tok);
    free(prompt);
    free(pos);
    free(seq);
    free(logits);
    model_ctx_destroy(&ctx);
    model_close(&m);
    kern_close(&cpu);
    kern_close(&be);
    cli_cache_args_close(&a.cache);
    return status;
}
