/*
 * fuzz_gguf — arbitrary bytes as a whole GGUF file through gguf_open, then every accessor over
 * whatever opened.  The reader's contract is that a file that opens can be walked without
 * further checks, so the walk reads every value, array element and tensor byte range it hands
 * out (ASan catches any that lie outside the mapping) and checks that the lookups and sizes
 * agree with what the walk found.
 */
#include "fuzz.h"
#include "gguf/gguf.h"

#include <string.h>

/* Bounds the work per input: arrays can hold millions of one-byte elements. */
#define MAX_ELEMS_WALKED 4096

static uint64_t sink; /* keeps the reads from being optimised away */

static void touch(const void *p, uint64_t n)
{
    const uint8_t *b = p;
    if (n) sink += b[0] + b[n - 1];
}

static void walk_value(const gguf_value *v, int depth)
{
    FUZZ_CHECK(depth <= GGUF_MAX_ARRAY_DEPTH + 1);
    switch (v->type) {
    case GGUF_VT_STRING:
        touch(v->v.str.data, v->v.str.len);
        break;
    case GGUF_VT_ARRAY: {
        const gguf_arr *a = &v->v.arr;
        uint64_t n = a->n < MAX_ELEMS_WALKED ? a->n : MAX_ELEMS_WALKED;
        if (a->items) {
            for (uint64_t i = 0; i < n; i++)
                walk_value(&a->items[i], depth + 1);
        } else if (a->n) {
            uint32_t esize = gguf_vtype_size(a->elem_type);
            FUZZ_CHECK(esize > 0 && a->raw);
            touch(a->raw, a->n * esize);
            for (uint64_t i = 0; i < n; i++)
                sink += (uint64_t)gguf_arr_i64(a, i) + gguf_arr_u64(a, i) +
                        (uint64_t)(gguf_arr_f64(a, i) != 0);
        }
        break;
    }
    default:
        FUZZ_CHECK(v->type < GGUF_VT_COUNT);
        sink += v->v.u64;
        break;
    }
}

/* The key as a C string, when it is one (keys may hold NULs; gguf_find cannot name those). */
static bool key_cstr(gguf_str key, char *out, size_t size)
{
    if (key.len >= size || memchr(key.data, 0, key.len)) return false;
    memcpy(out, key.data, key.len);
    out[key.len] = 0;
    return true;
}

static void walk_kvs(const gguf_file *f)
{
    uint64_t n = gguf_n_kv(f);
    for (uint64_t i = 0; i < n; i++) {
        const gguf_kv *kv = gguf_kv_at(f, i);
        touch(kv->key.data, kv->key.len);
        walk_value(&kv->value, 0);
        char key[256];
        if (!key_cstr(kv->key, key, sizeof key)) continue;
        FUZZ_CHECK(gguf_find(f, key) == &kv->value);
        uint32_t u32;
        uint64_t u64;
        int64_t i64;
        float f32;
        bool b;
        gguf_str s;
        gguf_arr a;
        sink += (uint64_t)(gguf_get_u32(f, key, &u32) + gguf_get_u64(f, key, &u64) +
                           gguf_get_i64(f, key, &i64) + gguf_get_f32(f, key, &f32) +
                           gguf_get_bool(f, key, &b) + gguf_get_str(f, key, &s) +
                           gguf_get_arr(f, key, &a));
    }
    FUZZ_CHECK(gguf_find(f, "no such key, surely") == NULL);
}

static void walk_tensors(const gguf_file *f)
{
    uint64_t n = gguf_n_tensors(f);
    uint64_t data_offset = gguf_data_offset(f), size = gguf_file_size(f);
    /* Without tensors the padding up to the data section may be missing from the file. */
    if (n) FUZZ_CHECK(data_offset <= size);
    for (uint64_t i = 0; i < n; i++) {
        const gguf_tensor *t = gguf_tensor_at(f, i);
        uint64_t n_bytes = 0;
        FUZZ_CHECK(gguf_tensor_nbytes(t->type, t->n_dims, t->ne, &n_bytes) == 0);
        FUZZ_CHECK(n_bytes == t->n_bytes);
        FUZZ_CHECK(t->offset % gguf_alignment(f) == 0);
        FUZZ_CHECK(t->offset <= size - data_offset && t->n_bytes <= size - data_offset - t->offset);
        touch(t->name.data, t->name.len);
        touch(t->data, t->n_bytes);
        sink += (uintptr_t)gguf_type_name(t->type)[0];
        char name[256];
        if (key_cstr(t->name, name, sizeof name)) FUZZ_CHECK(gguf_find_tensor(f, name) == t);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *path = fuzz_file(data, size, 0);
    if (!path) return 0;
    gguf_file *f = NULL;
    char err[512];
    int rc = gguf_open(&f, path, err, sizeof err);
    if (rc != 0) {
        FUZZ_CHECK(rc < 0 && f == NULL && err[0] != 0);
        return 0;
    }
    FUZZ_CHECK(gguf_version(f) == 2 || gguf_version(f) == 3);
    FUZZ_CHECK(gguf_file_size(f) == size);
    walk_kvs(f);
    walk_tensors(f);
    gguf_close(&f);
    FUZZ_CHECK(f == NULL);
    return 0;
}
