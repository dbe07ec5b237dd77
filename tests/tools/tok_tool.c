/*
 * tok_tool — a test companion for the tokenizer: loads the tokenizer of a GGUF file and answers
 * requests read as JSON lines on stdin with one JSON line each on stdout.
 *
 *   tok_tool FILE.gguf < requests.jsonl
 *     {"op":"info"}
 *         -> {"n_vocab":..,"bos":..,"eos":..,"add_bos":..,"eog":[..]}
 *     {"op":"encode","hex":"48656c6c6f","flags":3}
 *         -> {"ids":[...]}                  (flags: 1 add special, 2 parse special)
 *     {"op":"decode","ids":[...],"skip":true}
 *         -> {"hex":"..."}                  (raw bytes)
 *     {"op":"stream","ids":[...],"skip":true}
 *         -> {"hex":"...","chunks":N}       (the stream's output, concatenated)
 *   Errors: {"error":"..."} for that line (the tool goes on with the next).
 *
 * Text travels as hex so that invalid UTF-8 reaches the tokenizer unchanged.  It exists so that
 * tests/integration/tokenizer_crosscheck.py can compare us with Hugging Face tokenizers and
 * sentencepiece on thousands of strings in one process start per vocabulary.
 */
#include "gguf/gguf.h"
#include "tokenizer/tokenizer.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void print_hex(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        printf("%02x", (unsigned char)s[i]);
}

static int hex_digit(char c)
{
    return c >= '0' && c <= '9'   ? c - '0'
           : c >= 'a' && c <= 'f' ? c - 'a' + 10
           : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                  : -1;
}

static int from_hex(const char *hex, char **out, size_t *len)
{
    size_t n = strlen(hex);
    if (n % 2) return -1;
    char *b = malloc(n / 2 + 1);
    if (!b) return -1;
    for (size_t i = 0; i < n / 2; i++) {
        int hi = hex_digit(hex[2 * i]), lo = hex_digit(hex[2 * i + 1]);
        if (hi < 0 || lo < 0) {
            free(b);
            return -1;
        }
        b[i] = (char)(hi * 16 + lo);
    }
    *out = b;
    *len = n / 2;
    return 0;
}

static int32_t *read_ids(const cJSON *req, size_t *n)
{
    const cJSON *arr = cJSON_GetObjectItemCaseSensitive(req, "ids");
    *n = cJSON_IsArray(arr) ? (size_t)cJSON_GetArraySize(arr) : 0;
    int32_t *ids = malloc((*n + 1) * sizeof *ids);
    if (!ids) return NULL;
    size_t i = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, arr) ids[i++] = (int32_t)e->valuedouble;
    return ids;
}

static void do_info(const tokenizer *t)
{
    printf("{\"n_vocab\":%d,\"bos\":%d,\"eos\":%d,\"add_bos\":%s,\"add_eos\":%s,\"eog\":[",
           tokenizer_n_vocab(t), tokenizer_bos(t), tokenizer_eos(t),
           tokenizer_add_bos(t) ? "true" : "false", tokenizer_add_eos(t) ? "true" : "false");
    bool first = true;
    for (int32_t i = 0; i < tokenizer_n_vocab(t); i++)
        if (tokenizer_is_eog(t, i)) {
            printf(first ? "%d" : ",%d", i);
            first = false;
        }
    printf("]}\n");
}

static void do_encode(const tokenizer *t, const cJSON *req)
{
    const cJSON *hex = cJSON_GetObjectItemCaseSensitive(req, "hex");
    const cJSON *flags = cJSON_GetObjectItemCaseSensitive(req, "flags");
    char *text;
    size_t len;
    if (!cJSON_IsString(hex) || from_hex(hex->valuestring, &text, &len) < 0) {
        printf("{\"error\":\"bad hex\"}\n");
        return;
    }
    int32_t *ids;
    size_t n;
    char err[256];
    if (tokenizer_encode(t, text, len, cJSON_IsNumber(flags) ? (unsigned)flags->valuedouble : 0,
                         &ids, &n, err, sizeof err) < 0) {
        printf("{\"error\":\"encode failed\"}\n");
        free(text);
        return;
    }
    printf("{\"ids\":[");
    for (size_t i = 0; i < n; i++)
        printf(i ? ",%d" : "%d", ids[i]);
    printf("]}\n");
    free(ids);
    free(text);
}

static void do_decode(const tokenizer *t, const cJSON *req, bool stream)
{
    size_t n;
    int32_t *ids = read_ids(req, &n);
    bool skip = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(req, "skip"));
    if (!ids) {
        printf("{\"error\":\"out of memory\"}\n");
        return;
    }
    if (!stream) {
        char *text;
        size_t len;
        char err[256];
        if (tokenizer_decode(t, ids, n, skip, &text, &len, err, sizeof err) < 0)
            printf("{\"error\":\"decode failed\"}\n");
        else {
            printf("{\"hex\":\"");
            print_hex(text, len);
            printf("\"}\n");
            free(text);
        }
        free(ids);
        return;
    }
    tokenizer_stream s;
    tokenizer_stream_init(&s, t, skip);
    printf("{\"hex\":\"");
    int chunks = 0, rc = 0;
    for (size_t i = 0; i <= n && rc == 0; i++) {
        const char *piece;
        size_t len;
        rc = i < n ? tokenizer_stream_feed(&s, ids[i], &piece, &len)
                   : tokenizer_stream_flush(&s, &piece, &len);
        if (rc == 0) {
            print_hex(piece, len);
            chunks += len > 0;
        }
    }
    printf("\",\"chunks\":%d%s}\n", chunks, rc ? ",\"error\":\"stream failed\"" : "");
    tokenizer_stream_release(&s);
    free(ids);
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s FILE.gguf < requests.jsonl\n", argv[0]);
        return 2;
    }
    char err[512];
    gguf_file *f = NULL;
    tokenizer *t = NULL;
    if (gguf_open(&f, argv[1], err, sizeof err) < 0 ||
        tokenizer_create(&t, f, err, sizeof err) < 0) {
        printf("{\"error\":\"load\",\"message\":\"");
        for (const char *p = err; *p; p++)
            printf(*p == '"' || *p == '\\' ? "\\%c" : "%c", *p);
        printf("\"}\n");
        fprintf(stderr, "tok_tool: %s\n", err);
        gguf_close(&f);
        return 1;
    }
    gguf_close(&f); /* the tokenizer must not need the file any more */
    size_t cap = 0;
    char *line = NULL;
    ssize_t got;
    while ((got = getline(&line, &cap, stdin)) > 0) {
        cJSON *req = cJSON_Parse(line);
        const cJSON *op = cJSON_GetObjectItemCaseSensitive(req, "op");
        if (!cJSON_IsString(op))
            printf("{\"error\":\"bad request\"}\n");
        else if (!strcmp(op->valuestring, "info"))
            do_info(t);
        else if (!strcmp(op->valuestring, "encode"))
            do_encode(t, req);
        else if (!strcmp(op->valuestring, "decode"))
            do_decode(t, req, false);
        else if (!strcmp(op->valuestring, "stream"))
            do_decode(t, req, true);
        else
            printf("{\"error\":\"unknown op\"}\n");
        cJSON_Delete(req);
        fflush(stdout);
    }
    free(line);
    tokenizer_destroy(&t);
    return 0;
}
