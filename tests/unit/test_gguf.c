/*
 * test_gguf.c — unit tests for the GGUF reader and writer.
 *
 * Valid files come from the writer and are read back; malformed files are built byte by byte
 * with a small builder so each test breaks exactly one thing and knows the offset the reader
 * must name.  All files live in one mkdtemp() directory made by main() before the suite runs
 * (each test only reads its path) and removed afterwards.
 */
#include "gguf/gguf.h"

#include <check.h>
#include <errno.h>
#include <ftw.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

static char scratch_dir[256]; /* set once in main() before any test runs */

static void tmp_path(char *out, size_t size, const char *name)
{
    snprintf(out, size, "%s/%s", scratch_dir, name);
}

/* ---- byte builder ---------------------------------------------------------------------- */

typedef struct bytes {
    uint8_t *data;
    size_t len, cap;
} bytes;

static void bb_put(bytes *b, const void *data, size_t len)
{
    if (b->len + len > b->cap) {
        b->cap = (b->len + len) * 2 + 64;
        b->data = realloc(b->data, b->cap);
        ck_assert_ptr_nonnull(b->data);
    }
    if (len) memcpy(b->data + b->len, data, len);
    b->len += len;
}

static void bb_le(bytes *b, uint64_t v, int n)
{
    uint8_t tmp[8];
    for (int i = 0; i < n; i++)
        tmp[i] = (uint8_t)(v >> (8 * i));
    bb_put(b, tmp, (size_t)n);
}

static void bb_u8(bytes *b, uint8_t v)
{
    bb_le(b, v, 1);
}
static void bb_u32(bytes *b, uint32_t v)
{
    bb_le(b, v, 4);
}
static void bb_u64(bytes *b, uint64_t v)
{
    bb_le(b, v, 8);
}

static void bb_str(bytes *b, const char *s)
{
    bb_u64(b, strlen(s));
    bb_put(b, s, strlen(s));
}

static void bb_header(bytes *b, uint32_t version, uint64_t n_tensors, uint64_t n_kv)
{
    bb_put(b, "GGUF", 4);
    bb_u32(b, version);
    bb_u64(b, n_tensors);
    bb_u64(b, n_kv);
}

static void bb_kv_u32(bytes *b, const char *key, uint32_t value)
{
    bb_str(b, key);
    bb_u32(b, GGUF_VT_UINT32);
    bb_u32(b, value);
}

static void bb_tensor(bytes *b, const char *name, uint32_t n_dims, const int64_t *ne, uint32_t type,
                      uint64_t offset)
{
    bb_str(b, name);
    bb_u32(b, n_dims);
    for (uint32_t d = 0; d < n_dims; d++)
        bb_u64(b, (uint64_t)ne[d]);
    bb_u32(b, type);
    bb_u64(b, offset);
}

static void bb_pad(bytes *b, size_t align)
{
    while (b->len % align)
        bb_u8(b, 0);
}

static void write_bytes(const char *path, const void *data, size_t len)
{
    FILE *fp = fopen(path, "wb");
    ck_assert_ptr_nonnull(fp);
    if (len) ck_assert_uint_eq(fwrite(data, 1, len, fp), len);
    ck_assert_int_eq(fclose(fp), 0);
}

static bytes read_bytes(const char *path)
{
    bytes b = {0};
    FILE *fp = fopen(path, "rb");
    ck_assert_ptr_nonnull(fp);
    uint8_t buf[4096];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, fp)) > 0)
        bb_put(&b, buf, n);
    fclose(fp);
    return b;
}

/* Writes `b`, opens it, and checks the code and that the message names path, offset, word. */
static void expect_fail(bytes *b, const char *name, int code, uint64_t offset, const char *word)
{
    char path[512], err[512], want[64];
    gguf_file *f = (gguf_file *)&f;
    tmp_path(path, sizeof path, name);
    write_bytes(path, b->data, b->len);
    int rc = gguf_open(&f, path, err, sizeof err);
    ck_assert_msg(rc == code, "%s: rc %d, want %d (%s)", name, rc, code, err);
    ck_assert_ptr_null(f);
    snprintf(want, sizeof want, ": offset %" PRIu64 ": ", offset);
    ck_assert_msg(strstr(err, path) != NULL, "message lacks path: %s", err);
    ck_assert_msg(strstr(err, want) != NULL, "message lacks '%s': %s", want, err);
    ck_assert_msg(strstr(err, word) != NULL, "message lacks '%s': %s", word, err);
    free(b->data);
    unlink(path);
}

static gguf_file *open_ok(const char *path)
{
    char err[512] = "";
    gguf_file *f = NULL;
    int rc = gguf_open(&f, path, err, sizeof err);
    ck_assert_msg(rc == 0, "open %s: %d %s", path, rc, err);
    ck_assert_ptr_nonnull(f);
    return f;
}

static void write_ok(gguf_writer *w, const char *path)
{
    char err[512] = "";
    int rc = gguf_writer_write(w, path, err, sizeof err);
    ck_assert_msg(rc == 0, "write %s: %d %s", path, rc, err);
}

/* ---- round trips ----------------------------------------------------------------------- */

START_TEST(test_scalars_roundtrip)
{
    char path[512];
    gguf_writer *w;
    tmp_path(path, sizeof path, "scalars.gguf");
    ck_assert_int_eq(gguf_writer_create(&w, 32), 0);
    const gguf_value vals[] = {
        {.type = GGUF_VT_UINT8, .v.u64 = 200},
        {.type = GGUF_VT_INT8, .v.i64 = -100},
        {.type = GGUF_VT_UINT16, .v.u64 = 65000},
        {.type = GGUF_VT_INT16, .v.i64 = -32000},
        {.type = GGUF_VT_UINT32, .v.u64 = 4000000000u},
        {.type = GGUF_VT_INT32, .v.i64 = -2000000000},
        {.type = GGUF_VT_FLOAT32, .v.f64 = 1.5},
        {.type = GGUF_VT_BOOL, .v.b = true},
        {.type = GGUF_VT_STRING, .v.str = {"h\0llo \xc3\xa9", 9}},
        {.type = GGUF_VT_UINT64, .v.u64 = UINT64_MAX},
        {.type = GGUF_VT_INT64, .v.i64 = INT64_MIN},
        {.type = GGUF_VT_FLOAT64, .v.f64 = -1e300},
    };
    const size_t n_vals = sizeof vals / sizeof vals[0];
    for (size_t i = 0; i < n_vals; i++) {
        char key[32];
        snprintf(key, sizeof key, "v.%zu", i);
        ck_assert_int_eq(gguf_writer_add_value(w, key, &vals[i]), 0);
    }
    ck_assert_int_eq(gguf_writer_add_u32(w, "t.u32", 7), 0);
    ck_assert_int_eq(gguf_writer_add_i32(w, "t.i32", -7), 0);
    ck_assert_int_eq(gguf_writer_add_u64(w, "t.u64", 1ull << 40), 0);
    ck_assert_int_eq(gguf_writer_add_f32(w, "t.f32", 0.25f), 0);
    ck_assert_int_eq(gguf_writer_add_bool(w, "t.bool", false), 0);
    ck_assert_int_eq(gguf_writer_add_str(w, "t.str", ""), 0);
    ck_assert_int_eq(gguf_writer_add_u32(w, "t.u32", 8), -EINVAL); /* duplicate */
    write_ok(w, path);
    gguf_writer_destroy(&w);
    ck_assert_ptr_null(w);

    gguf_file *f = open_ok(path);
    ck_assert_uint_eq(gguf_version(f), 3);
    ck_assert_uint_eq(gguf_alignment(f), 32);
    ck_assert_uint_eq(gguf_n_kv(f), n_vals + 6);
    ck_assert_uint_eq(gguf_n_tensors(f), 0);
    for (size_t i = 0; i < n_vals; i++) {
        const gguf_kv *kv = gguf_kv_at(f, i);
        char key[32];
        snprintf(key, sizeof key, "v.%zu", i);
        ck_assert(gguf_str_eq(kv->key, key));
        ck_assert_ptr_eq(gguf_find(f, key), &kv->value);
        ck_assert_int_eq(kv->value.type, vals[i].type);
        if (vals[i].type == GGUF_VT_STRING) {
            ck_assert_uint_eq(kv->value.v.str.len, 9);
            ck_assert_mem_eq(kv->value.v.str.data, vals[i].v.str.data, 9);
        } else if (vals[i].type == GGUF_VT_BOOL) {
            ck_assert(kv->value.v.b);
        } else if (vals[i].type == GGUF_VT_FLOAT32 || vals[i].type == GGUF_VT_FLOAT64) {
            ck_assert(kv->value.v.f64 == vals[i].v.f64);
        } else {
            ck_assert_uint_eq(kv->value.v.u64, vals[i].v.u64);
        }
    }
    uint32_t u32;
    uint64_t u64;
    int64_t i64;
    float f32;
    bool b;
    gguf_str s;
    ck_assert_int_eq(gguf_get_u32(f, "t.u32", &u32), 0);
    ck_assert_uint_eq(u32, 7);
    ck_assert_int_eq(gguf_get_i64(f, "t.i32", &i64), 0);
    ck_assert_int_eq(i64, -7);
    ck_assert_int_eq(gguf_get_u64(f, "t.u64", &u64), 0);
    ck_assert_uint_eq(u64, 1ull << 40);
    ck_assert_int_eq(gguf_get_u32(f, "t.u64", &u32), -EINVAL); /* does not fit */
    ck_assert_int_eq(gguf_get_u32(f, "t.i32", &u32), -EINVAL); /* negative */
    ck_assert_int_eq(gguf_get_i64(f, "v.9", &i64), -EINVAL);   /* UINT64_MAX */
    ck_assert_int_eq(gguf_get_u32(f, "v.0", &u32), 0);         /* u8 widens */
    ck_assert_uint_eq(u32, 200);
    ck_assert_int_eq(gguf_get_f32(f, "t.f32", &f32), 0);
    ck_assert(f32 == 0.25f);
    ck_assert_int_eq(gguf_get_bool(f, "t.bool", &b), 0);
    ck_assert(!b);
    ck_assert_int_eq(gguf_get_bool(f, "t.u32", &b), -EINVAL);
    ck_assert_int_eq(gguf_get_str(f, "t.str", &s), 0);
    ck_assert_uint_eq(s.len, 0);
    ck_assert_int_eq(gguf_get_str(f, "t.u32", &s), -EINVAL);
    ck_assert_int_eq(gguf_get_u32(f, "missing", &u32), -ENOENT);
    ck_assert_ptr_null(gguf_find(f, "missing"));
    ck_assert_ptr_null(gguf_kv_at(f, gguf_n_kv(f)));
    gguf_close(&f);
    ck_assert_ptr_null(f);
    gguf_close(&f); /* NULL is fine */
    unlink(path);
}
END_TEST

START_TEST(test_arrays_roundtrip)
{
    char path[512];
    gguf_writer *w;
    tmp_path(path, sizeof path, "arrays.gguf");
    ck_assert_int_eq(gguf_writer_create(&w, 32), 0);
    const uint8_t a_u8[] = {0, 1, 255};
    const int8_t a_i8[] = {-128, 0, 127};
    const uint16_t a_u16[] = {0, 65535};
    const int16_t a_i16[] = {-32768, 32767};
    const uint32_t a_u32[] = {1, 0xffffffffu};
    const int32_t a_i32[] = {INT32_MIN, -1, INT32_MAX};
    const float a_f32[] = {1.0f, -2.5f, 3e38f};
    const bool a_bool[] = {true, false, true};
    const uint64_t a_u64[] = {UINT64_MAX, 0};
    const int64_t a_i64[] = {INT64_MIN, INT64_MAX};
    const double a_f64[] = {1e-300, -0.5};
    ck_assert_int_eq(gguf_writer_add_arr(w, "a.u8", GGUF_VT_UINT8, a_u8, 3), 0);
    ck_assert_int_eq(gguf_writer_add_arr(w, "a.i8", GGUF_VT_INT8, a_i8, 3), 0);
    ck_assert_int_eq(gguf_writer_add_arr(w, "a.u16", GGUF_VT_UINT16, a_u16, 2), 0);
    ck_assert_int_eq(gguf_writer_add_arr(w, "a.i16", GGUF_VT_INT16, a_i16, 2), 0);
    ck_assert_int_eq(gguf_writer_add_arr(w, "a.u32", GGUF_VT_UINT32, a_u32, 2), 0);
    ck_assert_int_eq(gguf_writer_add_arr(w, "a.i32", GGUF_VT_INT32, a_i32, 3), 0);
    ck_assert_int_eq(gguf_writer_add_arr(w, "a.f32", GGUF_VT_FLOAT32, a_f32, 3), 0);
    ck_assert_int_eq(gguf_writer_add_arr(w, "a.bool", GGUF_VT_BOOL, a_bool, 3), 0);
    ck_assert_int_eq(gguf_writer_add_arr(w, "a.u64", GGUF_VT_UINT64, a_u64, 2), 0);
    ck_assert_int_eq(gguf_writer_add_arr(w, "a.i64", GGUF_VT_INT64, a_i64, 2), 0);
    ck_assert_int_eq(gguf_writer_add_arr(w, "a.f64", GGUF_VT_FLOAT64, a_f64, 2), 0);
    ck_assert_int_eq(gguf_writer_add_arr(w, "a.empty", GGUF_VT_INT32, NULL, 0), 0);
    ck_assert_int_eq(gguf_writer_add_arr(w, "a.bad", GGUF_VT_STRING, a_u8, 1), -EINVAL);
    const char *strs[] = {"hello", "", "\xe4\xb8\xad\xe6\x96\x87", "tab\t\"q\""};
    ck_assert_int_eq(gguf_writer_add_arr_str(w, "a.str", strs, 4), 0);
    ck_assert_int_eq(gguf_writer_add_arr_str(w, "a.str_empty", NULL, 0), 0);
    write_ok(w, path);
    gguf_writer_destroy(&w);

    gguf_file *f = open_ok(path);
    gguf_arr a;
    ck_assert_int_eq(gguf_get_arr(f, "a.u8", &a), 0);
    ck_assert_int_eq(a.elem_type, GGUF_VT_UINT8);
    ck_assert_uint_eq(a.n, 3);
    ck_assert_ptr_null(a.items);
    for (int i = 0; i < 3; i++)
        ck_assert_uint_eq(gguf_arr_u64(&a, i), a_u8[i]);
    ck_assert_int_eq(gguf_get_arr(f, "a.i8", &a), 0);
    for (int i = 0; i < 3; i++)
        ck_assert_int_eq(gguf_arr_i64(&a, i), a_i8[i]);
    ck_assert_int_eq(gguf_get_arr(f, "a.u16", &a), 0);
    for (int i = 0; i < 2; i++)
        ck_assert_uint_eq(gguf_arr_u64(&a, i), a_u16[i]);
    ck_assert_int_eq(gguf_get_arr(f, "a.i16", &a), 0);
    for (int i = 0; i < 2; i++)
        ck_assert_int_eq(gguf_arr_i64(&a, i), a_i16[i]);
    ck_assert_int_eq(gguf_get_arr(f, "a.u32", &a), 0);
    for (int i = 0; i < 2; i++)
        ck_assert_uint_eq(gguf_arr_u64(&a, i), a_u32[i]);
    ck_assert_int_eq(gguf_get_arr(f, "a.i32", &a), 0);
    ck_assert_int_eq(a.elem_type, GGUF_VT_INT32);
    for (int i = 0; i < 3; i++)
        ck_assert_int_eq(gguf_arr_i64(&a, i), a_i32[i]);
    ck_assert_int_eq(gguf_get_arr(f, "a.f32", &a), 0);
    for (int i = 0; i < 3; i++)
        ck_assert(gguf_arr_f64(&a, i) == (double)a_f32[i]);
    ck_assert_int_eq(gguf_get_arr(f, "a.bool", &a), 0);
    for (int i = 0; i < 3; i++)
        ck_assert_uint_eq(gguf_arr_u64(&a, i), a_bool[i]);
    ck_assert_int_eq(gguf_get_arr(f, "a.u64", &a), 0);
    for (int i = 0; i < 2; i++)
        ck_assert_uint_eq(gguf_arr_u64(&a, i), a_u64[i]);
    ck_assert_int_eq(gguf_get_arr(f, "a.i64", &a), 0);
    for (int i = 0; i < 2; i++)
        ck_assert_int_eq(gguf_arr_i64(&a, i), a_i64[i]);
    ck_assert_int_eq(gguf_get_arr(f, "a.f64", &a), 0);
    for (int i = 0; i < 2; i++)
        ck_assert(gguf_arr_f64(&a, i) == a_f64[i]);
    ck_assert_int_eq(gguf_get_arr(f, "a.empty", &a), 0);
    ck_assert_uint_eq(a.n, 0);
    ck_assert_int_eq(gguf_get_arr(f, "a.str", &a), 0);
    ck_assert_int_eq(a.elem_type, GGUF_VT_STRING);
    ck_assert_uint_eq(a.n, 4);
    ck_assert_ptr_null(a.raw);
    for (int i = 0; i < 4; i++) {
        ck_assert_int_eq(a.items[i].type, GGUF_VT_STRING);
        ck_assert(gguf_str_eq(a.items[i].v.str, strs[i]));
    }
    ck_assert_int_eq(gguf_get_arr(f, "a.str_empty", &a), 0);
    ck_assert_uint_eq(a.n, 0);
    ck_assert_int_eq(gguf_get_arr(f, "a.missing", &a), -ENOENT);
    gguf_close(&f);
    unlink(path);
}
END_TEST

/* Arrays of arrays: int32 rows (one empty), strings three levels deep, and the depth limit. */
START_TEST(test_nested_roundtrip)
{
    char path[512];
    gguf_writer *w;
    tmp_path(path, sizeof path, "nested.gguf");
    ck_assert_int_eq(gguf_writer_create(&w, 32), 0);
    const int32_t row0[] = {1, 2, 3}, row1[] = {-4};
    uint8_t raw0[12], raw1[4];
    for (int i = 0; i < 3; i++)
        for (int b = 0; b < 4; b++)
            raw0[4 * i + b] = (uint8_t)((uint32_t)row0[i] >> (8 * b));
    for (int b = 0; b < 4; b++)
        raw1[b] = (uint8_t)((uint32_t)row1[0] >> (8 * b));
    gguf_value rows[3] = {
        {.type = GGUF_VT_ARRAY, .v.arr = {.elem_type = GGUF_VT_INT32, .n = 3, .raw = raw0}},
        {.type = GGUF_VT_ARRAY, .v.arr = {.elem_type = GGUF_VT_INT32, .n = 1, .raw = raw1}},
        {.type = GGUF_VT_ARRAY, .v.arr = {.elem_type = GGUF_VT_INT32, .n = 0, .raw = NULL}},
    };
    gguf_value outer = {.type = GGUF_VT_ARRAY,
                        .v.arr = {.elem_type = GGUF_VT_ARRAY, .n = 3, .items = rows}};
    ck_assert_int_eq(gguf_writer_add_value(w, "n.i32", &outer), 0);
    gguf_value strs[2] = {{.type = GGUF_VT_STRING, .v.str = {"a", 1}},
                          {.type = GGUF_VT_STRING, .v.str = {"", 0}}};
    gguf_value inner = {.type = GGUF_VT_ARRAY,
                        .v.arr = {.elem_type = GGUF_VT_STRING, .n = 2, .items = strs}};
    gguf_value mid = {.type = GGUF_VT_ARRAY,
                      .v.arr = {.elem_type = GGUF_VT_ARRAY, .n = 1, .items = &inner}};
    gguf_value top = {.type = GGUF_VT_ARRAY,
                      .v.arr = {.elem_type = GGUF_VT_ARRAY, .n = 1, .items = &mid}};
    ck_assert_int_eq(gguf_writer_add_value(w, "n.str3", &top), 0);
    /* A chain deeper than the limit is refused by the writer too. */
    gguf_value chain[GGUF_MAX_ARRAY_DEPTH + 1];
    chain[0] = (gguf_value){.type = GGUF_VT_ARRAY, .v.arr = {.elem_type = GGUF_VT_INT32}};
    for (int i = 1; i <= GGUF_MAX_ARRAY_DEPTH; i++)
        chain[i] =
            (gguf_value){.type = GGUF_VT_ARRAY,
                         .v.arr = {.elem_type = GGUF_VT_ARRAY, .n = 1, .items = &chain[i - 1]}};
    ck_assert_int_eq(gguf_writer_add_value(w, "n.deep_ok", &chain[GGUF_MAX_ARRAY_DEPTH - 1]), 0);
    ck_assert_int_eq(gguf_writer_add_value(w, "n.too_deep", &chain[GGUF_MAX_ARRAY_DEPTH]), -EINVAL);
    write_ok(w, path);
    gguf_writer_destroy(&w);

    gguf_file *f = open_ok(path);
    gguf_arr a;
    ck_assert_int_eq(gguf_get_arr(f, "n.i32", &a), 0);
    ck_assert_int_eq(a.elem_type, GGUF_VT_ARRAY);
    ck_assert_uint_eq(a.n, 3);
    ck_assert_uint_eq(a.items[0].v.arr.n, 3);
    for (int i = 0; i < 3; i++)
        ck_assert_int_eq(gguf_arr_i64(&a.items[0].v.arr, i), row0[i]);
    ck_assert_int_eq(gguf_arr_i64(&a.items[1].v.arr, 0), -4);
    ck_assert_uint_eq(a.items[2].v.arr.n, 0);
    ck_assert_int_eq(gguf_get_arr(f, "n.str3", &a), 0);
    const gguf_arr *in = &a.items[0].v.arr.items[0].v.arr;
    ck_assert_int_eq(in->elem_type, GGUF_VT_STRING);
    ck_assert(gguf_str_eq(in->items[0].v.str, "a") && gguf_str_eq(in->items[1].v.str, ""));
    ck_assert_int_eq(gguf_get_arr(f, "n.deep_ok", &a), 0);
    ck_assert_ptr_null(gguf_find(f, "n.too_deep"));
    gguf_close(&f);
    unlink(path);
}
END_TEST

START_TEST(test_tensors_roundtrip)
{
    const uint32_t alignment = _i == 0 ? 32 : 64;
    char path[512];
    gguf_writer *w;
    snprintf(path, sizeof path, "%s/tensors%u.gguf", scratch_dir, alignment);
    ck_assert_int_eq(gguf_writer_create(&w, alignment), 0);
    if (alignment != 32)
        ck_assert_int_eq(gguf_writer_add_u32(w, "general.alignment", alignment), 0);
    static const struct {
        const char *name;
        gguf_ttype type;
        uint32_t n_dims;
        int64_t ne[4];
        uint64_t n_bytes;
    } specs[] = {
        {"t.f32", GGUF_T_F32, 2, {3, 5, 1, 1}, 60},
        {"t.f16", GGUF_T_F16, 1, {7, 1, 1, 1}, 14},
        {"t.q8_0", GGUF_T_Q8_0, 3, {64, 2, 3, 1}, 2 * 34 * 6},
        {"t.q4_k", GGUF_T_Q4_K, 2, {256, 2, 1, 1}, 288},
        {"t.bf16", GGUF_T_BF16, 4, {2, 1, 2, 3}, 24},
        {"t.q6_k", GGUF_T_Q6_K, 1, {512, 1, 1, 1}, 420},
    };
    const size_t n_specs = sizeof specs / sizeof specs[0];
    uint8_t *payload[6];
    for (size_t i = 0; i < n_specs; i++) {
        payload[i] = malloc(specs[i].n_bytes);
        for (uint64_t j = 0; j < specs[i].n_bytes; j++)
            payload[i][j] = (uint8_t)(j * 7 + i);
        ck_assert_int_eq(gguf_writer_add_tensor(w, specs[i].name, specs[i].n_dims, specs[i].ne,
                                                specs[i].type, payload[i]),
                         0);
    }
    write_ok(w, path);
    gguf_writer_destroy(&w);

    gguf_file *f = open_ok(path);
    ck_assert_uint_eq(gguf_alignment(f), alignment);
    ck_assert_uint_eq(gguf_data_offset(f) % alignment, 0);
    ck_assert_uint_eq(gguf_n_tensors(f), n_specs);
    ck_assert_int_ge(gguf_fd(f), 0);
    uint64_t expect_offset = 0;
    for (size_t i = 0; i < n_specs; i++) {
        const gguf_tensor *t = gguf_tensor_at(f, i);
        ck_assert_ptr_eq(gguf_find_tensor(f, specs[i].name), t);
        ck_assert(gguf_str_eq(t->name, specs[i].name));
        ck_assert_int_eq(t->type, specs[i].type);
        ck_assert_uint_eq(t->n_dims, specs[i].n_dims);
        for (int d = 0; d < 4; d++)
            ck_assert_int_eq(t->ne[d], specs[i].ne[d]);
        ck_assert_uint_eq(t->n_bytes, specs[i].n_bytes);
        ck_assert_uint_eq(t->offset, expect_offset);
        ck_assert_uint_eq(t->offset % alignment, 0);
        ck_assert_mem_eq(t->data, payload[i], t->n_bytes);
        expect_offset += (t->n_bytes + alignment - 1) / alignment * alignment;
        free(payload[i]);
    }
    ck_assert_uint_eq(gguf_file_size(f), gguf_data_offset(f) + expect_offset);
    ck_assert_ptr_null(gguf_find_tensor(f, "t.missing"));
    ck_assert_ptr_null(gguf_tensor_at(f, n_specs));
    gguf_close(&f);
    unlink(path);
}
END_TEST

START_TEST(test_many_lookups)
{
    char path[512], name[64];
    gguf_writer *w;
    tmp_path(path, sizeof path, "many.gguf");
    ck_assert_int_eq(gguf_writer_create(&w, 32), 0);
    static const float one = 1.0f;
    for (int i = 0; i < 50; i++) {
        snprintf(name, sizeof name, "key.%d", i);
        ck_assert_int_eq(gguf_writer_add_u32(w, name, (uint32_t)i), 0);
    }
    const int64_t ne[1] = {1};
    for (int i = 0; i < 1000; i++) {
        snprintf(name, sizeof name, "blk.%d.weight", i);
        ck_assert_int_eq(gguf_writer_add_tensor(w, name, 1, ne, GGUF_T_F32, &one), 0);
    }
    ck_assert_int_eq(gguf_writer_add_tensor(w, "blk.0.weight", 1, ne, GGUF_T_F32, &one), -EINVAL);
    write_ok(w, path);
    gguf_writer_destroy(&w);

    gguf_file *f = open_ok(path);
    for (int i = 0; i < 50; i++) {
        uint32_t v;
        snprintf(name, sizeof name, "key.%d", i);
        ck_assert_int_eq(gguf_get_u32(f, name, &v), 0);
        ck_assert_uint_eq(v, (uint32_t)i);
    }
    for (int i = 0; i < 1000; i++) {
        snprintf(name, sizeof name, "blk.%d.weight", i);
        const gguf_tensor *t = gguf_find_tensor(f, name);
        ck_assert_ptr_eq(t, gguf_tensor_at(f, (uint64_t)i));
        ck_assert(*(const float *)t->data == 1.0f);
    }
    ck_assert_ptr_null(gguf_find_tensor(f, "blk.1000.weight"));
    gguf_close(&f);
    unlink(path);
}
END_TEST

START_TEST(test_type_table)
{
    uint32_t elems, bytes_per;
    ck_assert(gguf_type_size(GGUF_T_Q4_K, &elems, &bytes_per));
    ck_assert_uint_eq(elems, 256);
    ck_assert_uint_eq(bytes_per, 144);
    ck_assert(gguf_type_size(GGUF_T_MXFP4, &elems, &bytes_per) && elems == 32 && bytes_per == 17);
    ck_assert(gguf_type_size(GGUF_T_Q8_K, &elems, &bytes_per) && bytes_per == 292);
    ck_assert_str_eq(gguf_type_name(GGUF_T_IQ2_XXS), "IQ2_XXS");
    const int removed[] = {4, 5, 31, 32, 33, 36, 37, 38, 40, -1, 1000};
    for (size_t i = 0; i < sizeof removed / sizeof removed[0]; i++) {
        ck_assert(!gguf_type_size((gguf_ttype)removed[i], &elems, &bytes_per));
        ck_assert_str_eq(gguf_type_name((gguf_ttype)removed[i]), "unknown");
    }
    int defined = 0;
    for (int t = 0; t < GGUF_T_COUNT; t++)
        defined += gguf_type_size((gguf_ttype)t, NULL, NULL);
    ck_assert_int_eq(defined, 32);
    ck_assert_str_eq(gguf_vtype_name(GGUF_VT_FLOAT64), "FLOAT64");
    ck_assert_str_eq(gguf_vtype_name(GGUF_VT_COUNT), "unknown");
    ck_assert_uint_eq(gguf_vtype_size(GGUF_VT_STRING), 0);
    ck_assert_uint_eq(gguf_vtype_size(GGUF_VT_INT64), 8);

    uint64_t n_bytes;
    const int64_t ok[2] = {64, 3}, odd[1] = {33}, big[2] = {INT64_C(1) << 32, INT64_C(1) << 32};
    ck_assert_int_eq(gguf_tensor_nbytes(GGUF_T_Q8_0, 2, ok, &n_bytes), 0);
    ck_assert_uint_eq(n_bytes, 2 * 34 * 3);
    ck_assert_int_eq(gguf_tensor_nbytes(GGUF_T_Q8_0, 1, odd, &n_bytes), -EINVAL);
    ck_assert_int_eq(gguf_tensor_nbytes(GGUF_T_F32, 2, big, &n_bytes), -EOVERFLOW);
    ck_assert_int_eq(gguf_tensor_nbytes(GGUF_T_F32, 0, ok, &n_bytes), -EINVAL);
    ck_assert_int_eq(gguf_tensor_nbytes((gguf_ttype)4, 1, ok, &n_bytes), -ENOTSUP);
}
END_TEST

START_TEST(test_writer_errors)
{
    char path[512], err[512];
    gguf_writer *w = NULL;
    ck_assert_int_eq(gguf_writer_create(&w, 0), -EINVAL);
    ck_assert_int_eq(gguf_writer_create(&w, 48), -EINVAL);
    ck_assert_ptr_null(w);
    ck_assert_int_eq(gguf_writer_create(&w, 32), 0);
    static const float data[64];
    const int64_t bad_dim[2] = {4, 0}, odd[1] = {33}, ok[1] = {4};
    ck_assert_int_eq(gguf_writer_add_tensor(w, "a", 2, bad_dim, GGUF_T_F32, data), -EINVAL);
    ck_assert_int_eq(gguf_writer_add_tensor(w, "a", 1, odd, GGUF_T_Q8_0, data), -EINVAL);
    ck_assert_int_eq(gguf_writer_add_tensor(w, "a", 5, ok, GGUF_T_F32, data), -EINVAL);
    ck_assert_int_eq(gguf_writer_add_tensor(w, "a", 1, ok, (gguf_ttype)4, data), -ENOTSUP);
    ck_assert_int_eq(gguf_writer_add_tensor(w, "a", 1, ok, GGUF_T_F32, data), 0);

    /* A directory that does not exist: the write fails and leaves nothing behind. */
    snprintf(path, sizeof path, "%s/no/such/dir.gguf", scratch_dir);
    ck_assert_int_eq(gguf_writer_write(w, path, err, sizeof err), -ENOENT);
    ck_assert_ptr_nonnull(strstr(err, path));
    ck_assert_int_ne(access(path, F_OK), 0);

    /* An alignment key that disagrees with the layout would make an unreadable file. */
    ck_assert_int_eq(gguf_writer_add_u32(w, "general.alignment", 64), 0);
    tmp_path(path, sizeof path, "mismatch.gguf");
    ck_assert_int_eq(gguf_writer_write(w, path, err, sizeof err), -EINVAL);
    ck_assert_ptr_nonnull(strstr(err, "general.alignment"));
    ck_assert_int_ne(access(path, F_OK), 0);
    gguf_writer_destroy(&w);

    /* A file-size limit makes write() come back short, then fail with EFBIG: the writer
     * must report it and remove the partial file.  The limit also applies to Check's own
     * message file, so no assertion runs under it. */
    struct rlimit old_limit, limit;
    ck_assert_int_eq(gguf_writer_create(&w, 32), 0);
    static uint8_t big[4096];
    const int64_t ne_big[1] = {sizeof big};
    ck_assert_int_eq(gguf_writer_add_tensor(w, "big", 1, ne_big, GGUF_T_I8, big), 0);
    tmp_path(path, sizeof path, "limited.gguf");
    ck_assert_int_eq(getrlimit(RLIMIT_FSIZE, &old_limit), 0);
    limit = old_limit;
    limit.rlim_cur = 1000;
    void (*old_handler)(int) = signal(SIGXFSZ, SIG_IGN);
    int rc = setrlimit(RLIMIT_FSIZE, &limit);
    if (rc == 0) rc = gguf_writer_write(w, path, err, sizeof err);
    setrlimit(RLIMIT_FSIZE, &old_limit);
    signal(SIGXFSZ, old_handler);
    ck_assert_int_eq(rc, -EFBIG);
    ck_assert_ptr_nonnull(strstr(err, "write failed"));
    ck_assert_int_ne(access(path, F_OK), 0);
    gguf_writer_destroy(&w);
}
END_TEST

START_TEST(test_open_os_errors)
{
    char path[512], err[512];
    gguf_file *f = NULL;
    tmp_path(path, sizeof path, "does-not-exist.gguf");
    ck_assert_int_eq(gguf_open(&f, path, err, sizeof err), -ENOENT);
    ck_assert_ptr_nonnull(strstr(err, path));
    ck_assert_int_eq(gguf_open(&f, scratch_dir, err, sizeof err), -EINVAL);
    ck_assert_ptr_nonnull(strstr(err, "regular"));
    ck_assert_int_eq(gguf_open(&f, path, NULL, 0), -ENOENT); /* no buffer is fine */
    ck_assert_ptr_null(f);
}
END_TEST

START_TEST(test_v2_opens)
{
    bytes b = {0};
    char path[512];
    bb_header(&b, 2, 1, 1);
    bb_kv_u32(&b, "k", 5);
    const int64_t ne[1] = {2};
    bb_tensor(&b, "t", 1, ne, GGUF_T_F32, 0);
    bb_pad(&b, 32);
    bb_u64(&b, 0x3f8000003f800000ull);
    tmp_path(path, sizeof path, "v2.gguf");
    write_bytes(path, b.data, b.len);
    free(b.data);
    gguf_file *f = open_ok(path);
    ck_assert_uint_eq(gguf_version(f), 2);
    ck_assert(((const float *)gguf_find_tensor(f, "t")->data)[1] == 1.0f);
    gguf_close(&f);
    unlink(path);
}
END_TEST

/* Every proper prefix of a valid file must be refused, cleanly. */
START_TEST(test_truncate_every_length)
{
    char path[512], cut_path[512], err[512];
    gguf_writer *w;
    tmp_path(path, sizeof path, "full.gguf");
    tmp_path(cut_path, sizeof cut_path, "cut.gguf");
    ck_assert_int_eq(gguf_writer_create(&w, 32), 0);
    const char *strs[] = {"a", "", "bc"};
    const int32_t ints[] = {1, 2, 3};
    uint8_t raw[8] = {1, 0, 0, 0, 2, 0, 0, 0};
    gguf_value row = {.type = GGUF_VT_ARRAY,
                      .v.arr = {.elem_type = GGUF_VT_INT32, .n = 2, .raw = raw}};
    gguf_value nested = {.type = GGUF_VT_ARRAY,
                         .v.arr = {.elem_type = GGUF_VT_ARRAY, .n = 1, .items = &row}};
    ck_assert_int_eq(gguf_writer_add_str(w, "general.name", "tiny"), 0);
    ck_assert_int_eq(gguf_writer_add_arr_str(w, "tok", strs, 3), 0);
    ck_assert_int_eq(gguf_writer_add_arr(w, "ints", GGUF_VT_INT32, ints, 3), 0);
    ck_assert_int_eq(gguf_writer_add_value(w, "nested", &nested), 0);
    ck_assert_int_eq(gguf_writer_add_bool(w, "flag", true), 0);
    static const uint8_t payload[256];
    const int64_t ne_a[1] = {8}, ne_b[2] = {32, 2}, ne_c[1] = {16};
    ck_assert_int_eq(gguf_writer_add_tensor(w, "a", 1, ne_a, GGUF_T_F32, payload), 0);
    ck_assert_int_eq(gguf_writer_add_tensor(w, "b", 2, ne_b, GGUF_T_Q8_0, payload), 0);
    /* The last payload fills its padding, so no prefix is a complete file. */
    ck_assert_int_eq(gguf_writer_add_tensor(w, "c", 1, ne_c, GGUF_T_F16, payload), 0);
    write_ok(w, path);
    gguf_writer_destroy(&w);

    bytes full = read_bytes(path);
    gguf_file *f = open_ok(path);
    ck_assert_uint_eq(gguf_file_size(f), full.len);
    gguf_close(&f);
    for (size_t len = 0; len < full.len; len++) {
        write_bytes(cut_path, full.data, len);
        err[0] = '\0';
        int rc = gguf_open(&f, cut_path, err, sizeof err);
        ck_assert_msg(rc == -EINVAL, "length %zu: rc %d (%s)", len, rc, err);
        ck_assert_ptr_null(f);
        ck_assert_msg(strstr(err, ": offset ") &&
                          (strstr(err, "truncated") || strstr(err, "past end")),
                      "length %zu: %s", len, err);
    }
    free(full.data);
    unlink(cut_path);
    unlink(path);
}
END_TEST

/* ---- malformed files, one defect each -------------------------------------------------- */

START_TEST(test_bad_magic)
{
    bytes b = {0};
    bb_put(&b, "GGUG", 4);
    bb_u32(&b, 3);
    bb_u64(&b, 0);
    bb_u64(&b, 0);
    expect_fail(&b, "magic.gguf", -EINVAL, 0, "magic");
}
END_TEST

START_TEST(test_bad_version)
{
    const uint32_t versions[] = {1, 4, 0, 0x03000000u};
    const char *words[] = {"version 1", "version 4", "version 0", "big-endian"};
    for (int i = 0; i < 4; i++) {
        bytes b = {0};
        bb_header(&b, versions[i], 0, 0);
        expect_fail(&b, "version.gguf", -ENOTSUP, 4, words[i]);
    }
}
END_TEST

START_TEST(test_truncated_header)
{
    bytes b = {0};
    bb_put(&b, "GGUF", 4);
    bb_u32(&b, 3);
    bb_u32(&b, 0);
    expect_fail(&b, "header.gguf", -EINVAL, 8, "truncated");
    b = (bytes){0};
    expect_fail(&b, "empty.gguf", -EINVAL, 0, "truncated");
}
END_TEST

START_TEST(test_truncated_key)
{
    bytes b = {0};
    bb_header(&b, 3, 0, 1);
    bb_u64(&b, 20); /* key length, then only 5 bytes + value type */
    bb_put(&b, "abcde", 5);
    bb_u32(&b, GGUF_VT_UINT8);
    expect_fail(&b, "key.gguf", -EINVAL, 24, "key length 20");
}
END_TEST

START_TEST(test_truncated_value)
{
    bytes b = {0};
    bb_header(&b, 3, 0, 1);
    bb_str(&b, "k");
    bb_u32(&b, GGUF_VT_UINT64);
    size_t at = b.len;
    bb_u32(&b, 0); /* half of a u64 */
    expect_fail(&b, "value.gguf", -EINVAL, at, "truncated: UINT64");
}
END_TEST

START_TEST(test_truncated_array)
{
    bytes b = {0};
    bb_header(&b, 3, 0, 1);
    bb_str(&b, "k");
    bb_u32(&b, GGUF_VT_ARRAY);
    size_t at = b.len;
    bb_u32(&b, GGUF_VT_INT32);
    bb_u64(&b, 4);
    bb_u32(&b, 1);
    bb_u32(&b, 2);
    bb_u32(&b, 3); /* the fourth element is missing */
    expect_fail(&b, "array.gguf", -EINVAL, at, "truncated: array of 4 INT32");
}
END_TEST

START_TEST(test_truncated_tensor_info)
{
    bytes b = {0};
    bb_header(&b, 3, 1, 0);
    bb_str(&b, "tensor.name"); /* long enough that the count check passes */
    bb_u32(&b, 2);
    bb_u64(&b, 4);
    size_t at = b.len;
    bb_u32(&b, 4); /* half of the second dimension */
    expect_fail(&b, "tinfo.gguf", -EINVAL, at, "truncated: tensor dimension");
}
END_TEST

START_TEST(test_truncated_data)
{
    bytes b = {0};
    bb_header(&b, 3, 1, 0);
    const int64_t ne[1] = {16};
    bb_tensor(&b, "w", 1, ne, GGUF_T_F32, 0);
    bb_pad(&b, 32);
    size_t data = b.len;
    for (int i = 0; i < 15; i++)
        bb_u32(&b, 0); /* 60 of 64 bytes */
    char word[128];
    snprintf(word, sizeof word, "tensor 'w' data [%zu, %zu) extends past end of file (size %zu)",
             data, data + 64, data + 60);
    expect_fail(&b, "data.gguf", -EINVAL, 24, word);
}
END_TEST

START_TEST(test_huge_counts)
{
    bytes b = {0};
    bb_header(&b, 3, 0, UINT64_MAX / 2);
    expect_fail(&b, "nkv.gguf", -EINVAL, 16, "metadata count");
    b = (bytes){0};
    bb_header(&b, 3, 1000, 1);
    bb_kv_u32(&b, "k", 1);
    bb_put(&b, "0123456789", 10);
    expect_fail(&b, "ntensors.gguf", -EINVAL, 8, "tensor count 1000");
}
END_TEST

START_TEST(test_huge_string)
{
    bytes b = {0};
    bb_header(&b, 3, 0, 1);
    bb_str(&b, "k");
    bb_u32(&b, GGUF_VT_STRING);
    size_t at = b.len;
    bb_u64(&b, UINT64_MAX);
    bb_put(&b, "abc", 3);
    expect_fail(&b, "hugestr.gguf", -EINVAL, at, "string value length 18446744073709551615");
}
END_TEST

START_TEST(test_huge_arrays)
{
    bytes b = {0};
    bb_header(&b, 3, 0, 1);
    bb_str(&b, "k");
    bb_u32(&b, GGUF_VT_ARRAY);
    size_t at = b.len;
    bb_u32(&b, GGUF_VT_UINT64);
    bb_u64(&b, UINT64_C(1) << 61); /* 2^64 bytes: the size overflows */
    bb_u64(&b, 0);
    expect_fail(&b, "hugearr.gguf", -EINVAL, at, "array of 2305843009213693952 UINT64");
    b = (bytes){0};
    bb_header(&b, 3, 0, 1);
    bb_str(&b, "k");
    bb_u32(&b, GGUF_VT_ARRAY);
    bb_u32(&b, GGUF_VT_STRING);
    bb_u64(&b, 1000000);
    bb_str(&b, "one");
    expect_fail(&b, "hugestrs.gguf", -EINVAL, at, "array of 1000000 STRING");
}
END_TEST

/* One tensor info with the given fields, then 64 bytes of data. */
static void one_tensor(bytes *b, uint32_t n_dims, const int64_t *ne, uint32_t type, uint64_t offset)
{
    bb_header(b, 3, 1, 0);
    bb_tensor(b, "bad.weight", n_dims, ne, type, offset);
    bb_pad(b, 32);
    for (int i = 0; i < 16; i++)
        bb_u32(b, 0);
}

START_TEST(test_bad_n_dims)
{
    const int64_t ne[5] = {1, 1, 1, 1, 1};
    bytes b = {0};
    one_tensor(&b, 0, ne, GGUF_T_F32, 0);
    expect_fail(&b, "ndims0.gguf", -EINVAL, 24 + 18, "n_dims 0");
    b = (bytes){0};
    one_tensor(&b, 5, ne, GGUF_T_F32, 0);
    expect_fail(&b, "ndims5.gguf", -EINVAL, 24 + 18, "n_dims 5");
}
END_TEST

START_TEST(test_bad_dims)
{
    const int64_t neg[2] = {4, -3}, zero[2] = {0, 4};
    bytes b = {0};
    one_tensor(&b, 2, neg, GGUF_T_F32, 0);
    expect_fail(&b, "negdim.gguf", -EINVAL, 24 + 22 + 8, "ne[1] = -3");
    b = (bytes){0};
    one_tensor(&b, 2, zero, GGUF_T_F32, 0);
    expect_fail(&b, "zerodim.gguf", -EINVAL, 24 + 22, "ne[0] = 0");
}
END_TEST

START_TEST(test_shape_overflow)
{
    const int64_t elems[3] = {INT64_C(1) << 32, INT64_C(1) << 31, 2};
    const int64_t bytes_only[1] = {INT64_C(1) << 62};
    bytes b = {0};
    one_tensor(&b, 3, elems, GGUF_T_I8, 0);
    expect_fail(&b, "elems.gguf", -EINVAL, 24, "overflows");
    b = (bytes){0};
    one_tensor(&b, 1, bytes_only, GGUF_T_F32, 0);
    expect_fail(&b, "bytes.gguf", -EINVAL, 24, "overflows");
}
END_TEST

START_TEST(test_block_multiple)
{
    const int64_t ne[2] = {33, 1};
    bytes b = {0};
    one_tensor(&b, 2, ne, GGUF_T_Q8_0, 0);
    expect_fail(&b, "block.gguf", -EINVAL, 24, "not a multiple of the Q8_0 block size 32");
}
END_TEST

START_TEST(test_unknown_tensor_type)
{
    const int64_t ne[1] = {4};
    const uint32_t types[] = {4, 31, 40, 0xffffffffu};
    for (int i = 0; i < 4; i++) {
        bytes b = {0};
        one_tensor(&b, 1, ne, types[i], 0);
        expect_fail(&b, "ttype.gguf", -ENOTSUP, 24 + 30, "unknown tensor type");
    }
}
END_TEST

START_TEST(test_misaligned_offset)
{
    const int64_t ne[1] = {4};
    bytes b = {0};
    one_tensor(&b, 1, ne, GGUF_T_F32, 16);
    expect_fail(&b, "misaligned.gguf", -EINVAL, 24,
                "offset 16 is not a multiple of the alignment 32");
}
END_TEST

START_TEST(test_offset_past_end)
{
    const int64_t ne[1] = {4};
    bytes b = {0};
    one_tensor(&b, 1, ne, GGUF_T_F32, UINT64_MAX - 31); /* aligned, but wraps when added */
    expect_fail(&b, "wrap.gguf", -EINVAL, 24, "extends past end of file");
    b = (bytes){0};
    one_tensor(&b, 1, ne, GGUF_T_F32, 64);
    expect_fail(&b, "past.gguf", -EINVAL, 24, "extends past end of file (size 160)");
}
END_TEST

START_TEST(test_overlap)
{
    const int64_t ne[1] = {16};
    bytes b = {0};
    bb_header(&b, 3, 2, 0);
    bb_tensor(&b, "first", 1, ne, GGUF_T_F32, 32);
    size_t second = b.len;
    bb_tensor(&b, "second", 1, ne, GGUF_T_F32, 64); /* [64, 128) vs [32, 96) */
    bb_pad(&b, 32);
    for (int i = 0; i < 64; i++)
        bb_u32(&b, 0);
    expect_fail(&b, "overlap.gguf", -EINVAL, second, "overlaps tensor 'first'");
}
END_TEST

START_TEST(test_duplicate_tensor)
{
    const int64_t ne[1] = {4};
    bytes b = {0};
    bb_header(&b, 3, 2, 0);
    bb_tensor(&b, "same", 1, ne, GGUF_T_F32, 0);
    size_t second = b.len;
    bb_tensor(&b, "same", 1, ne, GGUF_T_F32, 32);
    bb_pad(&b, 32);
    for (int i = 0; i < 16; i++)
        bb_u32(&b, 0);
    expect_fail(&b, "duptensor.gguf", -EINVAL, second,
                "duplicate tensor name 'same' (first at offset 24)");
}
END_TEST

START_TEST(test_duplicate_key)
{
    bytes b = {0};
    bb_header(&b, 3, 0, 2);
    bb_kv_u32(&b, "dup", 1);
    size_t second = b.len;
    bb_kv_u32(&b, "dup", 2);
    expect_fail(&b, "dupkey.gguf", -EINVAL, second, "duplicate key 'dup' (first at offset 24)");
}
END_TEST

START_TEST(test_bad_bool)
{
    bytes b = {0};
    bb_header(&b, 3, 0, 1);
    bb_str(&b, "b");
    bb_u32(&b, GGUF_VT_BOOL);
    size_t at = b.len;
    bb_u8(&b, 2);
    expect_fail(&b, "bool.gguf", -EINVAL, at, "invalid bool byte 0x02");
    b = (bytes){0};
    bb_header(&b, 3, 0, 1);
    bb_str(&b, "b");
    bb_u32(&b, GGUF_VT_ARRAY);
    bb_u32(&b, GGUF_VT_BOOL);
    bb_u64(&b, 3);
    at = b.len;
    bb_u8(&b, 1);
    bb_u8(&b, 0);
    bb_u8(&b, 0xff);
    expect_fail(&b, "boolarr.gguf", -EINVAL, at + 2, "invalid bool byte 0xff in array element 2");
}
END_TEST

START_TEST(test_unknown_value_type)
{
    bytes b = {0};
    bb_header(&b, 3, 0, 1);
    bb_str(&b, "k");
    bb_u32(&b, 13);
    size_t at = b.len;
    bb_u32(&b, 0);
    expect_fail(&b, "vtype.gguf", -EINVAL, at, "unknown value type 13");
    b = (bytes){0};
    bb_header(&b, 3, 0, 1);
    bb_str(&b, "k");
    bb_u32(&b, GGUF_VT_ARRAY);
    at = b.len;
    bb_u32(&b, 0xfffffffeu);
    bb_u64(&b, 1);
    bb_u32(&b, 0);
    expect_fail(&b, "elemtype.gguf", -EINVAL, at, "unknown array element type 4294967294");
}
END_TEST

START_TEST(test_bad_alignment)
{
    const uint32_t values[] = {0, 48};
    for (int i = 0; i < 2; i++) {
        bytes b = {0};
        bb_header(&b, 3, 0, 1);
        bb_kv_u32(&b, "general.alignment", values[i]);
        expect_fail(&b, "align.gguf", -EINVAL, 24, "not a non-zero power of 2");
    }
    bytes b = {0};
    bb_header(&b, 3, 0, 1);
    bb_str(&b, "general.alignment");
    bb_u32(&b, GGUF_VT_UINT64);
    bb_u64(&b, 32);
    expect_fail(&b, "aligntype.gguf", -EINVAL, 24, "has type UINT64, must be UINT32");
}
END_TEST

START_TEST(test_nesting_too_deep)
{
    bytes b = {0};
    bb_header(&b, 3, 0, 1);
    bb_str(&b, "deep");
    bb_u32(&b, GGUF_VT_ARRAY);
    size_t at = 0;
    for (int level = 1; level <= GGUF_MAX_ARRAY_DEPTH + 1; level++) {
        at = b.len;
        bb_u32(&b, GGUF_VT_ARRAY);
        bb_u64(&b, 1);
    }
    bb_put(&b, "padding-padding-padding", 23);
    expect_fail(&b, "deep.gguf", -EINVAL, at, "nested deeper than 8");
}
END_TEST

/* ---- driver ---------------------------------------------------------------------------- */

static Suite *gguf_suite(void)
{
    Suite *s = suite_create("gguf");
    TCase *rt = tcase_create("roundtrip");
    tcase_add_test(rt, test_scalars_roundtrip);
    tcase_add_test(rt, test_arrays_roundtrip);
    tcase_add_test(rt, test_nested_roundtrip);
    tcase_add_loop_test(rt, test_tensors_roundtrip, 0, 2);
    tcase_add_test(rt, test_many_lookups);
    tcase_add_test(rt, test_type_table);
    tcase_add_test(rt, test_writer_errors);
    tcase_add_test(rt, test_open_os_errors);
    tcase_add_test(rt, test_v2_opens);
    tcase_add_test(rt, test_truncate_every_length);
    suite_add_tcase(s, rt);

    TCase *bad = tcase_create("malformed");
    tcase_add_test(bad, test_bad_magic);
    tcase_add_test(bad, test_bad_version);
    tcase_add_test(bad, test_truncated_header);
    tcase_add_test(bad, test_truncated_key);
    tcase_add_test(bad, test_truncated_value);
    tcase_add_test(bad, test_truncated_array);
    tcase_add_test(bad, test_truncated_tensor_info);
    tcase_add_test(bad, test_truncated_data);
    tcase_add_test(bad, test_huge_counts);
    tcase_add_test(bad, test_huge_string);
    tcase_add_test(bad, test_huge_arrays);
    tcase_add_test(bad, test_bad_n_dims);
    tcase_add_test(bad, test_bad_dims);
    tcase_add_test(bad, test_shape_overflow);
    tcase_add_test(bad, test_block_multiple);
    tcase_add_test(bad, test_unknown_tensor_type);
    tcase_add_test(bad, test_misaligned_offset);
    tcase_add_test(bad, test_offset_past_end);
    tcase_add_test(bad, test_overlap);
    tcase_add_test(bad, test_duplicate_tensor);
    tcase_add_test(bad, test_duplicate_key);
    tcase_add_test(bad, test_bad_bool);
    tcase_add_test(bad, test_unknown_value_type);
    tcase_add_test(bad, test_bad_alignment);
    tcase_add_test(bad, test_nesting_too_deep);
    suite_add_tcase(s, bad);
    return s;
}

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

int main(void)
{
    const char *base = getenv("TMPDIR");
    snprintf(scratch_dir, sizeof scratch_dir, "%s/test_gguf.XXXXXX", base && *base ? base : "/tmp");
    if (!mkdtemp(scratch_dir)) {
        perror("mkdtemp");
        return 1;
    }
    SRunner *sr = srunner_create(gguf_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    nftw(scratch_dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
    return failed == 0 ? 0 : 1;
}
