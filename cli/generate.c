/*
 * `moeserve generate`: greedy generation from token ids, the one-shot job that shows a model
 * runs end to end and how fast.  Text prompts, sampling and chat templates arrive with the
 * tokenizer; until then a prompt is a list of token ids and output pieces are decoded with
 * the vocabulary's own byte conventions (GPT-2 byte-level or SentencePiece) for display only.
 */
#include "cli/cli.h"
#include "model/gguf.h"
#include "model/model.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Inverse of GPT-2's bytes_to_unicode: printable bytes map to themselves, the rest to
 * U+0100 + their rank among the non-printable ones. */
static int gpt2_byte(uint32_t cp)
{
    static int table[324];
    static int ready;
    if (!ready) {
        for (int i = 0; i < 324; i++) table[i] = -1;
        int n = 0;
        for (int b = 0; b < 256; b++) {
            int printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174);
            table[printable ? b : 256 + n++] = b;
        }
        ready = 1;
    }
    return cp < 324 ? table[cp] : -1;
}

static uint32_t next_codepoint(const unsigned char **p, const unsigned char *end)
{
    const unsigned char *s = *p;
    uint32_t cp = *s++;
    int extra = cp >= 0xf0 ? 3 : cp >= 0xe0 ? 2 : cp >= 0xc0 ? 1 : 0;
    if (extra) cp &= 0x3f >> extra;
    while (extra-- > 0 && s < end) cp = (cp << 6) | (*s++ & 0x3f);
    *p = s;
    return cp;
}

static void print_piece(const gguf_file *f, int32_t id, int spm)
{
    gguf_arr tokens;
    if (gguf_get_arr(f, "tokenizer.ggml.tokens", &tokens) || tokens.elem_type != GGUF_VT_STRING ||
        (uint64_t)id >= tokens.n) {
        printf("[%d]", id);
        return;
    }
    gguf_str s = tokens.items[id].v.str;
    const unsigned char *p = (const unsigned char *)s.data, *end = p + s.len;
    if (spm) {
        unsigned byte;
        if (s.len == 6 && sscanf(s.data, "<0x%02X>", &byte) == 1) {
            putchar((int)byte);
            return;
        }
        while (p < end) {
            if (end - p >= 3 && p[0] == 0xe2 && p[1] == 0x96 && p[2] == 0x81) { /* U+2581 */
                putchar(' ');
                p += 3;
            } else {
                putchar(*p++);
            }
        }
        return;
    }
    while (p < end) {
        int b = gpt2_byte(next_codepoint(&p, end));
        if (b >= 0) putchar(b);
    }
}

static int parse_ids(const char *text, int32_t **out, int *n_out)
{
    int cap = 16, n = 0;
    int32_t *ids = malloc((size_t)cap * sizeof *ids);
    if (!ids) return -ENOMEM;
    const char *p = text;
    while (*p) {
        char *end;
        errno = 0;
        long v = strtol(p, &end, 10);
        if (end == p || errno || v < 0 || v > INT32_MAX || (*end && *end != ',')) {
            free(ids);
            fprintf(stderr, "moeserve generate: --prompt-ids expects comma-separated token ids, got '%s'\n", text);
            return -EINVAL;
        }
        if (n == cap) {
            int32_t *grown = realloc(ids, (size_t)(cap *= 2) * sizeof *ids);
            if (!grown) {
                free(ids);
                return -ENOMEM;
            }
            ids = grown;
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

static void usage(FILE *out)
{
    fprintf(out, "usage: moeserve generate --model FILE [--prompt-ids 1,2,3] [-n TOKENS] [--threads N]\n"
                 "  --model FILE       GGUF model\n"
                 "  --prompt-ids IDS   prompt as comma-separated token ids (default: the BOS token and a few ids)\n"
                 "  -n TOKENS          tokens to generate (default 32)\n"
                 "  --threads N        CPU threads (default: all)\n");
}

int cli_generate(int argc, char **argv)
{
    const char *path = NULL, *prompt_text = NULL;
    long n_gen = 32, n_threads = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(a, "--model") && v) {
            path = v, i++;
        } else if (!strcmp(a, "--prompt-ids") && v) {
            prompt_text = v, i++;
        } else if (!strcmp(a, "-n") && v) {
            if (cli_parse_int(a, v, 1, 1 << 20, &n_gen)) return 2;
            i++;
        } else if (!strcmp(a, "--threads") && v) {
            if (cli_parse_int(a, v, 0, 1024, &n_threads)) return 2;
            i++;
        } else {
            fprintf(stderr, "moeserve generate: unknown or incomplete option '%s'\n", a);
            usage(stderr);
            return 2;
        }
    }
    if (!path) {
        usage(stderr);
        return 2;
    }

    int status = 1;
    char err[512];
    kern_backend *be = NULL;
    model *m = NULL;
    model_ctx *ctx = NULL;
    int32_t *prompt = NULL, *pos = NULL, *seq = NULL;
    float *logits = NULL;
    int n_prompt = 0;
    if (cli_open_backend(&be, (int)n_threads)) goto done;
    model_opts mo = {.backend = be};
    if (model_open(&m, path, &mo, err, sizeof err)) {
        fprintf(stderr, "moeserve generate: %s\n", err);
        goto done;
    }
    const model_hparams *hp = model_params(m);
    const gguf_file *f = model_file(m);
    if (prompt_text) {
        if (parse_ids(prompt_text, &prompt, &n_prompt)) goto done;
    } else {
        uint32_t bos = 1;
        int has_bos = gguf_get_u32(f, "tokenizer.ggml.bos_token_id", &bos) == 0 &&
                      (int64_t)bos < hp->n_vocab;
        static const int32_t fallback[] = {72, 101, 108, 108, 111, 44, 32, 119, 111, 114, 108, 100};
        n_prompt = (int)(sizeof fallback / sizeof fallback[0]) + has_bos;
        prompt = malloc((size_t)n_prompt * sizeof *prompt);
        if (!prompt) goto done;
        int k = 0;
        if (has_bos) prompt[k++] = (int32_t)bos;
        for (size_t j = 0; j < sizeof fallback / sizeof fallback[0]; j++)
            prompt[k++] = fallback[j] % hp->n_vocab;
    }
    long n_ctx = n_prompt + n_gen;
    model_ctx_opts co = {.n_seq = 1, .n_ctx = (int32_t)n_ctx};
    if (model_ctx_create(&ctx, m, &co, err, sizeof err)) {
        fprintf(stderr, "moeserve generate: %s\n", err);
        goto done;
    }
    pos = malloc((size_t)n_prompt * sizeof *pos);
    seq = calloc((size_t)n_prompt, sizeof *seq);
    logits = malloc((size_t)hp->n_vocab * sizeof *logits);
    if (!pos || !seq || !logits) goto done;
    for (int i = 0; i < n_prompt; i++) pos[i] = i;

    gguf_str tok_model = {0};
    gguf_get_str(f, "tokenizer.ggml.model", &tok_model);
    int spm = gguf_str_eq(tok_model, "llama");

    double t0 = now_s();
    model_batch batch = {.n_tokens = n_prompt, .token = prompt, .pos = pos, .seq = seq};
    if (model_forward(ctx, &batch, logits, err, sizeof err)) {
        fprintf(stderr, "moeserve generate: %s\n", err);
        goto done;
    }
    double t_prompt = now_s() - t0;
    for (int i = 0; i < n_prompt; i++) print_piece(f, prompt[i], spm);
    fflush(stdout);

    double t1 = now_s();
    int32_t next = model_argmax(logits, hp->n_vocab);
    for (long g = 0; g < n_gen; g++) {
        print_piece(f, next, spm);
        fflush(stdout);
        if (g + 1 == n_gen) break;
        int32_t p = (int32_t)(n_prompt + g), s0 = 0;
        model_batch one = {.n_tokens = 1, .token = &next, .pos = &p, .seq = &s0};
        if (model_forward(ctx, &one, logits, err, sizeof err)) {
            fprintf(stderr, "\nmoeserve generate: %s\n", err);
            goto done;
        }
        next = model_argmax(logits, hp->n_vocab);
    }
    double t_gen = now_s() - t1;
    printf("\n");
    printf("prompt: %d tokens in %.3f s (%.1f tokens/s); generation: %ld tokens in %.3f s "
           "(%.1f tokens/s)\n",
           n_prompt, t_prompt, n_prompt / t_prompt, n_gen, t_gen,
           n_gen > 1 ? (double)(n_gen - 1) / t_gen : 0.0);
    status = 0;
done:
    free(prompt);
    free(pos);
    free(seq);
    free(logits);
    model_ctx_destroy(&ctx);
    model_close(&m);
    kern_backend_close(&be);
    return status;
}
