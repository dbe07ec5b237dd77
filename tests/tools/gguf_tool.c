/*
 * gguf_tool — a test companion for the GGUF reader and writer.
 *
 *   gguf_tool write-all-types OUT.gguf   one KV of every type, arrays of every element type,
 *                                        strings, a nested array and a few small tensors
 *   gguf_tool dump FILE                  everything the reader sees, as JSON on stdout
 *
 * It exists so that tests/integration/gguf_crosscheck.py can hold our reader and writer
 * against gguf-py in both directions.  The JSON is written by hand (libc only); tensor
 * payloads are summarised by a 64-bit FNV-1a hash that the script recomputes.  The values
 * written by write-all-types are mirrored in the script: change both together.
 */
#include "gguf/gguf.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- write-all-types ------------------------------------------------------------------- */

static int add_scalars(gguf_writer *w)
{
    const gguf_value v[] = {
        {.type = GGUF_VT_UINT8, .v.u64 = 200},
        {.type = GGUF_VT_INT8, .v.i64 = -100},
        {.type = GGUF_VT_UINT16, .v.u64 = 60000},
        {.type = GGUF_VT_INT16, .v.i64 = -30000},
        {.type = GGUF_VT_UINT32, .v.u64 = 4000000000u},
        {.type = GGUF_VT_INT32, .v.i64 = -2000000000},
        {.type = GGUF_VT_FLOAT32, .v.f64 = 1.5},
        {.type = GGUF_VT_BOOL, .v.b = true},
        {.type = GGUF_VT_STRING, .v.str = {"hello, w\xc3\xb6rld", 13}},
        {.type = GGUF_VT_UINT64, .v.u64 = (UINT64_C(1) << 63) + 5},
        {.type = GGUF_VT_INT64, .v.i64 = -(INT64_C(1) << 62)},
        {.type = GGUF_VT_FLOAT64, .v.f64 = 3.141592653589793},
    };
    const char *keys[] = {"scalar.u8",  "scalar.i8",  "scalar.u16", "scalar.i16",
                          "scalar.u32", "scalar.i32", "scalar.f32", "scalar.bool",
                          "scalar.str", "scalar.u64", "scalar.i64", "scalar.f64"};
    int rc = gguf_writer_add_str(w, "general.architecture", "test");
    for (size_t i = 0; i < sizeof v / sizeof v[0] && rc == 0; i++)
        rc = gguf_writer_add_value(w, keys[i], &v[i]);
    return rc;
}

static int add_arrays(gguf_writer *w)
{
    static const uint8_t a_u8[] = {0, 1, 255};
    static const int8_t a_i8[] = {-128, 0, 127};
    static const uint16_t a_u16[] = {0, 1, 65535};
    static const int16_t a_i16[] = {-32768, 0, 32767};
    static const uint32_t a_u32[] = {0, 1, 4294967295u};
    static const int32_t a_i32[] = {INT32_MIN, -1, INT32_MAX};
    static const float a_f32[] = {0.5f, -1.25f, 1e30f};
    static const bool a_bool[] = {true, false, true, true};
    static const uint64_t a_u64[] = {0, UINT64_MAX};
    static const int64_t a_i64[] = {INT64_MIN, INT64_MAX};
    static const double a_f64[] = {1e-300, -2.5};
    static const char *const a_str[] = {"alpha", "", "\xc3\xbcn\xc3\xaf \xe4\xb8\xad\xe6\x96\x87",
                                        "quote\" back\\slash\nnewline\ttab"};
    int rc = 0;
    rc = rc ? rc : gguf_writer_add_arr(w, "array.u8", GGUF_VT_UINT8, a_u8, 3);
    rc = rc ? rc : gguf_writer_add_arr(w, "array.i8", GGUF_VT_INT8, a_i8, 3);
    rc = rc ? rc : gguf_writer_add_arr(w, "array.u16", GGUF_VT_UINT16, a_u16, 3);
    rc = rc ? rc : gguf_writer_add_arr(w, "array.i16", GGUF_VT_INT16, a_i16, 3);
    rc = rc ? rc : gguf_writer_add_arr(w, "array.u32", GGUF_VT_UINT32, a_u32, 3);
    rc = rc ? rc : gguf_writer_add_arr(w, "array.i32", GGUF_VT_INT32, a_i32, 3);
    rc = rc ? rc : gguf_writer_add_arr(w, "array.f32", GGUF_VT_FLOAT32, a_f32, 3);
    rc = rc ? rc : gguf_writer_add_arr(w, "array.bool", GGUF_VT_BOOL, a_bool, 4);
    rc = rc ? rc : gguf_writer_add_arr(w, "array.u64", GGUF_VT_UINT64, a_u64, 2);
    rc = rc ? rc : gguf_writer_add_arr(w, "array.i64", GGUF_VT_INT64, a_i64, 2);
    rc = rc ? rc : gguf_writer_add_arr(w, "array.f64", GGUF_VT_FLOAT64, a_f64, 2);
    rc = rc ? rc : gguf_writer_add_arr_str(w, "array.str", a_str, 4);
    if (rc) return rc;

    /* [[1, 2, 3], [4], [-5, 6]]: int32 rows in file layout (little-endian). */
    static const uint8_t r0[] = {1, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0};
    static const uint8_t r1[] = {4, 0, 0, 0};
    static const uint8_t r2[] = {0xfb, 0xff, 0xff, 0xff, 6, 0, 0, 0};
    const gguf_value rows[] = {
        {.type = GGUF_VT_ARRAY, .v.arr = {.elem_type = GGUF_VT_INT32, .n = 3, .raw = r0}},
        {.type = GGUF_VT_ARRAY, .v.arr = {.elem_type = GGUF_VT_INT32, .n = 1, .raw = r1}},
        {.type = GGUF_VT_ARRAY, .v.arr = {.elem_type = GGUF_VT_INT32, .n = 2, .raw = r2}},
    };
    const gguf_value nested = {.type = GGUF_VT_ARRAY,
                               .v.arr = {.elem_type = GGUF_VT_ARRAY, .n = 3, .items = rows}};
    return gguf_writer_add_value(w, "array.nested", &nested);
}

static int write_all_types(const char *path)
{
    /* Payloads: F32 {4, 3} = i/2 - 1; F16 {8} = bits 0x3c00 + 0x100*i (1.0, 1.25, ... 3.5);
     * Q8_0 {64, 2} = four blocks of d = 1.0 (0x3c00) and qs[j] = j - 16 + block. */
    float f32[12];
    uint8_t f16[16], q8[4 * 34];
    for (int i = 0; i < 12; i++)
        f32[i] = (float)i / 2.0f - 1.0f;
    for (int i = 0; i < 8; i++) {
        f16[2 * i] = 0x00;
        f16[2 * i + 1] = (uint8_t)(0x3c + i);
    }
    for (int b = 0; b < 4; b++) {
        q8[34 * b] = 0x00;
        q8[34 * b + 1] = 0x3c;
        for (int j = 0; j < 32; j++)
            q8[34 * b + 2 + j] = (uint8_t)(int8_t)(j - 16 + b);
    }
    const int64_t ne_f32[2] = {4, 3}, ne_f16[1] = {8}, ne_q8[2] = {64, 2};
    char err[512] = "";
    gguf_writer *w = NULL;
    int rc = gguf_writer_create(&w, GGUF_DEFAULT_ALIGNMENT);
    if (rc) goto fail;
    if ((rc = add_scalars(w)) || (rc = add_arrays(w))) goto fail;
    if ((rc = gguf_writer_add_tensor(w, "tensor.f32", 2, ne_f32, GGUF_T_F32, f32))) goto fail;
    if ((rc = gguf_writer_add_tensor(w, "tensor.f16", 1, ne_f16, GGUF_T_F16, f16))) goto fail;
    if ((rc = gguf_writer_add_tensor(w, "tensor.q8_0", 2, ne_q8, GGUF_T_Q8_0, q8))) goto fail;
    if ((rc = gguf_writer_write(w, path, err, sizeof err))) goto fail;
    gguf_writer_destroy(&w);
    return 0;
fail:
    fprintf(stderr, "gguf_tool: write-all-types failed (%d): %s\n", rc, err);
    gguf_writer_destroy(&w);
    return 1;
}

/* ---- dump ------------------------------------------------------------------------------ */

static void json_str(const char *data, uint64_t len)
{
    putchar('"');
    for (uint64_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)data[i];
        if (c == '"' || c == '\\')
            printf("\\%c", c);
        else if (c == '\n')
            fputs("\\n", stdout);
        else if (c == '\t')
            fputs("\\t", stdout);
        else if (c < 0x20 || c == 0x7f)
            printf("\\u%04x", c);
        else
            putchar(c); /* UTF-8 passes through */
    }
    putchar('"');
}

static void json_double(double d, int digits)
{
    if (isnan(d))
        fputs("\"nan\"", stdout);
    else if (isinf(d))
        fputs(d > 0 ? "\"inf\"" : "\"-inf\"", stdout);
    else
        printf("%.*g", digits, d);
}

static bool is_float(gguf_vtype t)
{
    return t == GGUF_VT_FLOAT32 || t == GGUF_VT_FLOAT64;
}

static bool is_signed(gguf_vtype t)
{
    return t == GGUF_VT_INT8 || t == GGUF_VT_INT16 || t == GGUF_VT_INT32 || t == GGUF_VT_INT64;
}

static void dump_array(const gguf_arr *arr);

static void dump_scalar(const gguf_value *v)
{
    if (v->type == GGUF_VT_STRING)
        json_str(v->v.str.data, v->v.str.len);
    else if (v->type == GGUF_VT_BOOL)
        fputs(v->v.b ? "true" : "false", stdout);
    else if (v->type == GGUF_VT_FLOAT32)
        json_double(v->v.f64, 9);
    else if (v->type == GGUF_VT_FLOAT64)
        json_double(v->v.f64, 17);
    else if (is_signed(v->type))
        printf("%" PRId64, v->v.i64);
    else
        printf("%" PRIu64, v->v.u64);
}

/* An array value is {"elem_type": ..., "value": [...]}, recursively for nested arrays. */
static void dump_array(const gguf_arr *arr)
{
    printf("{\"elem_type\": \"%s\", \"value\": [", gguf_vtype_name(arr->elem_type));
    for (uint64_t i = 0; i < arr->n; i++) {
        if (i) fputs(", ", stdout);
        if (arr->items && arr->elem_type == GGUF_VT_ARRAY)
            dump_array(&arr->items[i].v.arr);
        else if (arr->items)
            dump_scalar(&arr->items[i]);
        else if (arr->elem_type == GGUF_VT_BOOL)
            fputs(gguf_arr_u64(arr, i) ? "true" : "false", stdout);
        else if (is_float(arr->elem_type))
            json_double(gguf_arr_f64(arr, i), arr->elem_type == GGUF_VT_FLOAT32 ? 9 : 17);
        else if (is_signed(arr->elem_type))
            printf("%" PRId64, gguf_arr_i64(arr, i));
        else
            printf("%" PRIu64, gguf_arr_u64(arr, i));
    }
    fputs("]}", stdout);
}

static uint64_t fnv1a64(const uint8_t *data, uint64_t len)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (uint64_t i = 0; i < len; i++)
        h = (h ^ data[i]) * 0x100000001b3ull;
    return h;
}

static int dump(const char *path)
{
    char err[512];
    gguf_file *f = NULL;
    int rc = gguf_open(&f, path, err, sizeof err);
    if (rc) {
        fprintf(stderr, "gguf_tool: %s\n", err);
        return 1;
    }
    printf("{\"version\": %" PRIu32 ", \"alignment\": %" PRIu32 ", \"data_offset\": %" PRIu64
           ", \"file_size\": %" PRIu64 ",\n \"kv\": [",
           gguf_version(f), gguf_alignment(f), gguf_data_offset(f), gguf_file_size(f));
    for (uint64_t i = 0; i < gguf_n_kv(f); i++) {
        const gguf_kv *kv = gguf_kv_at(f, i);
        fputs(i ? ",\n  {\"key\": " : "\n  {\"key\": ", stdout);
        json_str(kv->key.data, kv->key.len);
        printf(", \"type\": \"%s\", \"value\": ", gguf_vtype_name(kv->value.type));
        if (kv->value.type == GGUF_VT_ARRAY)
            dump_array(&kv->value.v.arr);
        else
            dump_scalar(&kv->value);
        putchar('}');
    }
    fputs("],\n \"tensors\": [", stdout);
    for (uint64_t i = 0; i < gguf_n_tensors(f); i++) {
        const gguf_tensor *t = gguf_tensor_at(f, i);
        fputs(i ? ",\n  {\"name\": " : "\n  {\"name\": ", stdout);
        json_str(t->name.data, t->name.len);
        printf(", \"type\": \"%s\", \"type_id\": %d, \"ne\": [", gguf_type_name(t->type),
               (int)t->type);
        for (uint32_t d = 0; d < t->n_dims; d++)
            printf(d ? ", %" PRId64 : "%" PRId64, t->ne[d]);
        printf("], \"offset\": %" PRIu64 ", \"n_bytes\": %" PRIu64 ", \"fnv1a64\": \"%016" PRIx64
               "\"}",
               t->offset, t->n_bytes, fnv1a64(t->data, t->n_bytes));
    }
    fputs("]}\n", stdout);
    gguf_close(&f);
    if (fflush(stdout) != 0 || ferror(stdout)) {
        perror("gguf_tool: stdout");
        return 1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    if (argc == 3 && strcmp(argv[1], "write-all-types") == 0) return write_all_types(argv[2]);
    if (argc == 3 && strcmp(argv[1], "dump") == 0) return dump(argv[2]);
    fprintf(stderr, "usage: %s write-all-types OUT.gguf | dump FILE.gguf\n", argv[0]);
    return 2;
}
