/*
 * gguf_write.c — the GGUF writer (version 3).
 *
 * The writer collects keys and tensor descriptions in memory and emits the file in one
 * sequential pass: header, KVs, tensor infos, padding, then each payload padded to the
 * alignment (the last one too, as ggml and gguf-py do).  Values are deep-copied into the
 * same gguf_value shape the reader hands out, so a value read from one file can be written
 * to another unchanged; tensor payloads are only referenced, since they can be large and the
 * callers (tests, tools) keep them alive anyway.  All output goes through a small buffer with
 * a write loop that survives short writes and EINTR; any failure removes the partial file.
 * Duplicate checks are linear scans: the writer never runs on a serving path.
 */
#include "gguf/gguf.h"

#include "base/vec.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct writer_kv {
    char *key;
    gguf_value value; /* owns its strings, raw payloads and item lists */
} writer_kv;

typedef struct writer_tensor {
    char *name;
    uint32_t n_dims;
    int64_t ne[GGUF_MAX_DIMS];
    gguf_ttype type;
    uint64_t n_bytes;
    const void *data; /* the caller's */
} writer_tensor;

struct gguf_writer {
    uint32_t alignment;
    writer_kv *kvs;
    size_t n_kv, cap_kv;
    writer_tensor *tensors;
    size_t n_tensors, cap_tensors;
};

/* Buffered output; the first error sticks and later calls do nothing. */
typedef struct out_file {
    int fd;
    int err;      /* negative errno, 0 while fine */
    uint64_t pos; /* bytes handed to the file so far, buffered or not */
    size_t used;
    uint8_t buf[1 << 16];
} out_file;

/* ---- owned values ---------------------------------------------------------------------- */

static void owned_free(gguf_value *value)
{
    if (value->type == GGUF_VT_STRING) {
        free((void *)value->v.str.data);
    } else if (value->type == GGUF_VT_ARRAY) {
        gguf_value *items = (gguf_value *)value->v.arr.items;
        if (items)
            for (uint64_t i = 0; i < value->v.arr.n; i++)
                owned_free(&items[i]);
        free(items);
        free((void *)value->v.arr.raw);
    }
    memset(value, 0, sizeof(*value));
}

static int owned_copy(gguf_value *dst, const gguf_value *src, int depth);

static int copy_array(gguf_arr *dst, const gguf_arr *src, int depth)
{
    if (depth > GGUF_MAX_ARRAY_DEPTH || (unsigned)src->elem_type >= GGUF_VT_COUNT) return -EINVAL;
    *dst = (gguf_arr){.elem_type = src->elem_type, .n = src->n};
    uint32_t elem_size = gguf_vtype_size(src->elem_type);
    if (elem_size != 0) {
        uint64_t n_bytes;
        if (__builtin_mul_overflow(src->n, (uint64_t)elem_size, &n_bytes) || n_bytes > SIZE_MAX)
            return -EINVAL;
        if (n_bytes && !src->raw) return -EINVAL;
        uint8_t *raw = malloc(n_bytes ? n_bytes : 1);
        if (!raw) return -ENOMEM;
        if (n_bytes) memcpy(raw, src->raw, n_bytes);
        if (src->elem_type == GGUF_VT_BOOL)
            for (uint64_t i = 0; i < src->n; i++)
                raw[i] = raw[i] != 0;
        dst->raw = raw;
        return 0;
    }
    if (src->n && !src->items) return -EINVAL;
    if (src->n > SIZE_MAX / sizeof(gguf_value)) return -ENOMEM;
    gguf_value *items = calloc(src->n ? src->n : 1, sizeof(gguf_value));
    if (!items) return -ENOMEM;
    dst->items = items;
    for (uint64_t i = 0; i < src->n; i++) {
        if (src->items[i].type != src->elem_type) return -EINVAL; /* caller frees dst */
        int rc = owned_copy(&items[i], &src->items[i], depth);
        if (rc) return rc;
    }
    return 0;
}

/* On failure dst holds whatever was copied so far; owned_free() releases it. */
static int owned_copy(gguf_value *dst, const gguf_value *src, int depth)
{
    memset(dst, 0, sizeof(*dst));
    if ((unsigned)src->type >= GGUF_VT_COUNT) return -EINVAL;
    dst->type = src->type;
    if (src->type == GGUF_VT_STRING) {
        if (src->v.str.len && !src->v.str.data) return -EINVAL;
        if (src->v.str.len >= SIZE_MAX) return -ENOMEM;
        char *data = malloc(src->v.str.len + 1);
        if (!data) return -ENOMEM;
        if (src->v.str.len) memcpy(data, src->v.str.data, src->v.str.len);
        dst->v.str = (gguf_str){data, src->v.str.len};
        return 0;
    }
    if (src->type == GGUF_VT_ARRAY) return copy_array(&dst->v.arr, &src->v.arr, depth + 1);
    dst->v = src->v;
    return 0;
}

/* ---- building -------------------------------------------------------------------------- */

int gguf_writer_create(gguf_writer **out, uint32_t alignment)
{
    *out = NULL;
    if (alignment == 0 || (alignment & (alignment - 1)) != 0) return -EINVAL;
    gguf_writer *w = calloc(1, sizeof(*w));
    if (!w) return -ENOMEM;
    w->alignment = alignment;
    *out = w;
    return 0;
}

void gguf_writer_destroy(gguf_writer **writer)
{
    if (!writer || !*writer) return;
    gguf_writer *w = *writer;
    for (size_t i = 0; i < w->n_kv; i++) {
        free(w->kvs[i].key);
        owned_free(&w->kvs[i].value);
    }
    for (size_t i = 0; i < w->n_tensors; i++)
        free(w->tensors[i].name);
    free(w->kvs);
    free(w->tensors);
    free(w);
    *writer = NULL;
}

static bool has_key(const gguf_writer *w, const char *key)
{
    for (size_t i = 0; i < w->n_kv; i++)
        if (strcmp(w->kvs[i].key, key) == 0) return true;
    return false;
}

/* Takes ownership of `value` whatever happens. */
static int add_owned(gguf_writer *w, const char *key, gguf_value *value)
{
    int rc = -EINVAL;
    char *key_copy = NULL;
    if (!w || !key || has_key(w, key)) goto fail;
    rc = -ENOMEM;
    if (vec_reserve(&w->kvs, &w->cap_kv, w->n_kv + 1, sizeof *w->kvs, 16) < 0) goto fail;
    if (!(key_copy = strdup(key))) goto fail;
    w->kvs[w->n_kv++] = (writer_kv){key_copy, *value};
    return 0;
fail:
    owned_free(value);
    return rc;
}

int gguf_writer_add_value(gguf_writer *w, const char *key, const gguf_value *value)
{
    gguf_value copy;
    if (!value) return -EINVAL;
    int rc = owned_copy(&copy, value, 0);
    if (rc) {
        owned_free(&copy);
        return rc;
    }
    return add_owned(w, key, &copy);
}

int gguf_writer_add_u32(gguf_writer *w, const char *key, uint32_t value)
{
    gguf_value v = {.type = GGUF_VT_UINT32, .v.u64 = value};
    return add_owned(w, key, &v);
}

int gguf_writer_add_i32(gguf_writer *w, const char *key, int32_t value)
{
    gguf_value v = {.type = GGUF_VT_INT32, .v.i64 = value};
    return add_owned(w, key, &v);
}

int gguf_writer_add_u64(gguf_writer *w, const char *key, uint64_t value)
{
    gguf_value v = {.type = GGUF_VT_UINT64, .v.u64 = value};
    return add_owned(w, key, &v);
}

int gguf_writer_add_f32(gguf_writer *w, const char *key, float value)
{
    gguf_value v = {.type = GGUF_VT_FLOAT32, .v.f64 = value};
    return add_owned(w, key, &v);
}

int gguf_writer_add_bool(gguf_writer *w, const char *key, bool value)
{
    gguf_value v = {.type = GGUF_VT_BOOL, .v.b = value};
    return add_owned(w, key, &v);
}

int gguf_writer_add_str(gguf_writer *w, const char *key, const char *value)
{
    if (!value) return -EINVAL;
    gguf_value v = {.type = GGUF_VT_STRING, .v.str = {value, strlen(value)}};
    return gguf_writer_add_value(w, key, &v);
}

/* Host-layout elements to file layout (little-endian). */
static void to_le(uint8_t *dst, const void *src, uint32_t elem_size, uint64_t n)
{
    const uint8_t *s = src;
    for (uint64_t i = 0; i < n; i++) {
        uint64_t bits = 0;
        if (elem_size == 1)
            bits = s[i];
        else if (elem_size == 2) {
            uint16_t x;
            memcpy(&x, s + 2 * i, 2);
            bits = x;
        } else if (elem_size == 4) {
            uint32_t x;
            memcpy(&x, s + 4 * i, 4);
            bits = x;
        } else
            memcpy(&bits, s + 8 * i, 8);
        for (uint32_t b = 0; b < elem_size; b++)
            dst[i * elem_size + b] = (uint8_t)(bits >> (8 * b));
    }
}

int gguf_writer_add_arr(gguf_writer *w, const char *key, gguf_vtype elem_type, const void *data,
                        uint64_t n)
{
    uint32_t elem_size = gguf_vtype_size(elem_type);
    uint64_t n_bytes;
    if (elem_size == 0 || (n && !data)) return -EINVAL;
    if (__builtin_mul_overflow(n, (uint64_t)elem_size, &n_bytes) || n_bytes > SIZE_MAX)
        return -EINVAL;
    uint8_t *raw = malloc(n_bytes ? n_bytes : 1);
    if (!raw) return -ENOMEM;
    to_le(raw, data, elem_size, n);
    if (elem_type == GGUF_VT_BOOL)
        for (uint64_t i = 0; i < n; i++)
            raw[i] = raw[i] != 0;
    gguf_value v = {.type = GGUF_VT_ARRAY, .v.arr = {.elem_type = elem_type, .n = n, .raw = raw}};
    return add_owned(w, key, &v);
}

int gguf_writer_add_arr_str(gguf_writer *w, const char *key, const char *const *values, uint64_t n)
{
    if ((n && !values) || n > SIZE_MAX / sizeof(gguf_value)) return -EINVAL;
    gguf_value *items = calloc(n ? n : 1, sizeof(gguf_value));
    if (!items) return -ENOMEM;
    int rc = 0;
    for (uint64_t i = 0; i < n && rc == 0; i++) {
        if (!values[i])
            rc = -EINVAL;
        else
            items[i] =
                (gguf_value){.type = GGUF_VT_STRING, .v.str = {values[i], strlen(values[i])}};
    }
    if (rc == 0) {
        gguf_value v = {.type = GGUF_VT_ARRAY,
                        .v.arr = {.elem_type = GGUF_VT_STRING, .n = n, .items = items}};
        rc = gguf_writer_add_value(w, key, &v);
    }
    free(items); /* the strings stay the caller's; add_value copied them */
    return rc;
}

int gguf_writer_add_tensor(gguf_writer *w, const char *name, uint32_t n_dims, const int64_t *ne,
                           gguf_ttype type, const void *data)
{
    uint64_t n_bytes;
    if (!w || !name || !ne || !data || n_dims < 1 || n_dims > GGUF_MAX_DIMS) return -EINVAL;
    int rc = gguf_tensor_nbytes(type, n_dims, ne, &n_bytes);
    if (rc) return rc == -ENOTSUP ? rc : -EINVAL;
    for (size_t i = 0; i < w->n_tensors; i++)
        if (strcmp(w->tensors[i].name, name) == 0) return -EINVAL;
    if (vec_reserve(&w->tensors, &w->cap_tensors, w->n_tensors + 1, sizeof *w->tensors, 16) < 0)
        return -ENOMEM;
    writer_tensor *t = &w->tensors[w->n_tensors];
    *t = (writer_tensor){.n_dims = n_dims, .type = type, .n_bytes = n_bytes, .data = data};
    for (uint32_t d = 0; d < GGUF_MAX_DIMS; d++)
        t->ne[d] = d < n_dims ? ne[d] : 1;
    if (!(t->name = strdup(name))) return -ENOMEM;
    w->n_tensors++;
    return 0;
}

/* ---- output ---------------------------------------------------------------------------- */

static void write_all(out_file *o, const void *data, size_t len)
{
    const uint8_t *p = data;
    while (len > 0 && o->err == 0) {
        ssize_t n = write(o->fd, p, len);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0)
            o->err = -errno;
        else if (n == 0)
            o->err = -EIO;
        else {
            p += n;
            len -= (size_t)n;
        }
    }
}

static void flush(out_file *o)
{
    write_all(o, o->buf, o->used);
    o->used = 0;
}

static void put_bytes(out_file *o, const void *data, uint64_t len)
{
    const uint8_t *p = data;
    while (len > 0 && o->err == 0) {
        if (o->used == sizeof(o->buf)) flush(o);
        size_t room = sizeof(o->buf) - o->used;
        size_t n = len < room ? (size_t)len : room;
        memcpy(o->buf + o->used, p, n);
        o->used += n;
        o->pos += n;
        p += n;
        len -= n;
    }
}

static void put_le(out_file *o, uint64_t bits, uint32_t n_bytes)
{
    uint8_t b[8];
    for (uint32_t i = 0; i < n_bytes; i++)
        b[i] = (uint8_t)(bits >> (8 * i));
    put_bytes(o, b, n_bytes);
}

static void put_zeros(out_file *o, uint64_t n)
{
    static const uint8_t zeros[64];
    while (n > 0) {
        uint64_t chunk = n < sizeof(zeros) ? n : sizeof(zeros);
        put_bytes(o, zeros, chunk);
        n -= chunk;
    }
}

static void put_str(out_file *o, gguf_str s)
{
    put_le(o, s.len, 8);
    put_bytes(o, s.data, s.len);
}

static void put_value(out_file *o, const gguf_value *v)
{
    uint32_t size = gguf_vtype_size(v->type);
    switch (v->type) {
    case GGUF_VT_FLOAT32: {
        float f = (float)v->v.f64;
        uint32_t bits;
        memcpy(&bits, &f, 4);
        put_le(o, bits, 4);
        break;
    }
    case GGUF_VT_FLOAT64: {
        uint64_t bits;
        memcpy(&bits, &v->v.f64, 8);
        put_le(o, bits, 8);
        break;
    }
    case GGUF_VT_BOOL:
        put_le(o, v->v.b ? 1 : 0, 1);
        break;
    case GGUF_VT_STRING:
        put_str(o, v->v.str);
        break;
    case GGUF_VT_ARRAY:
        put_le(o, (uint32_t)v->v.arr.elem_type, 4);
        put_le(o, v->v.arr.n, 8);
        if (v->v.arr.raw)
            put_bytes(o, v->v.arr.raw, v->v.arr.n * gguf_vtype_size(v->v.arr.elem_type));
        else
            for (uint64_t i = 0; i < v->v.arr.n; i++)
                put_value(o, &v->v.arr.items[i]);
        break;
    default:
        put_le(o, v->v.u64, size);
        break; /* integers: two's complement bits agree */
    }
}

/* Layout checks that need the whole writer; writes the reason into err. */
static int check_layout(const gguf_writer *w, uint64_t *offsets, char *err, size_t err_size,
                        const char *path)
{
    for (size_t i = 0; i < w->n_kv; i++) {
        const gguf_value *v = &w->kvs[i].value;
        if (strcmp(w->kvs[i].key, "general.alignment") != 0) continue;
        if (v->type != GGUF_VT_UINT32 || v->v.u64 != w->alignment) {
            snprintf(err, err_size, "%s: general.alignment does not match the writer's %" PRIu32,
                     path, w->alignment);
            return -EINVAL;
        }
    }
    uint64_t at = 0;
    for (size_t i = 0; i < w->n_tensors; i++) {
        uint64_t padded;
        offsets[i] = at;
        if (__builtin_add_overflow(w->tensors[i].n_bytes, (uint64_t)w->alignment - 1, &padded) ||
            __builtin_add_overflow(at, padded & ~((uint64_t)w->alignment - 1), &at)) {
            snprintf(err, err_size, "%s: tensor data size overflows", path);
            return -EOVERFLOW;
        }
    }
    return 0;
}

static void put_file(out_file *o, const gguf_writer *w, const uint64_t *offsets)
{
    put_le(o, GGUF_MAGIC, 4);
    put_le(o, 3, 4);
    put_le(o, w->n_tensors, 8);
    put_le(o, w->n_kv, 8);
    for (size_t i = 0; i < w->n_kv; i++) {
        put_str(o, (gguf_str){w->kvs[i].key, strlen(w->kvs[i].key)});
        put_le(o, (uint32_t)w->kvs[i].value.type, 4);
        put_value(o, &w->kvs[i].value);
    }
    for (size_t i = 0; i < w->n_tensors; i++) {
        const writer_tensor *t = &w->tensors[i];
        put_str(o, (gguf_str){t->name, strlen(t->name)});
        put_le(o, t->n_dims, 4);
        for (uint32_t d = 0; d < t->n_dims; d++)
            put_le(o, (uint64_t)t->ne[d], 8);
        put_le(o, (uint32_t)t->type, 4);
        put_le(o, offsets[i], 8);
    }
    put_zeros(o, (w->alignment - o->pos % w->alignment) % w->alignment);
    for (size_t i = 0; i < w->n_tensors && o->err == 0; i++) {
        const writer_tensor *t = &w->tensors[i];
        flush(o); /* payloads can be large: write them straight from the caller's memory */
        write_all(o, t->data, (size_t)t->n_bytes);
        o->pos += t->n_bytes;
        put_zeros(o, (w->alignment - t->n_bytes % w->alignment) % w->alignment);
    }
    flush(o);
}

int gguf_writer_write(gguf_writer *w, const char *path, char *err, size_t err_size)
{
    char scratch[1];
    if (!err || err_size == 0) {
        err = scratch;
        err_size = sizeof(scratch);
    }
    err[0] = '\0';
    if (!w || !path) return -EINVAL;
    int rc = -ENOMEM;
    out_file *o = NULL;
    uint64_t *offsets = calloc(w->n_tensors ? w->n_tensors : 1, sizeof(uint64_t));
    if (!offsets) {
        snprintf(err, err_size, "%s: out of memory", path);
        goto fail;
    }
    if ((rc = check_layout(w, offsets, err, err_size, path))) goto fail;
    if (!(o = malloc(sizeof(*o)))) {
        rc = -ENOMEM;
        snprintf(err, err_size, "%s: out of memory", path);
        goto fail;
    }
    o->err = 0;
    o->pos = 0;
    o->used = 0;
    o->fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (o->fd < 0) {
        rc = -errno;
        snprintf(err, err_size, "%s: cannot create: %s", path, strerror(-rc));
        goto fail;
    }
    put_file(o, w, offsets);
    if (o->err == 0 && close(o->fd) != 0)
        o->err = -errno;
    else if (o->err != 0)
        close(o->fd);
    if ((rc = o->err)) {
        snprintf(err, err_size, "%s: write failed: %s", path, strerror(-rc));
        unlink(path);
        goto fail;
    }
    free(o);
    free(offsets);
    return 0;
fail:
    free(o);
    free(offsets);
    return rc;
}
