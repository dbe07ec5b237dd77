/*
 * gguf.c — the GGUF reader.
 *
 * The whole file is mapped read-only and parsed once, front to back, by a cursor that knows
 * how many bytes are left: every length, count and offset is compared with what remains
 * before it is used, with overflow-checked arithmetic, so a file that opens can be walked by
 * the accessors without further checks.  Values keep pointing into the mapping (strings,
 * fixed-size array payloads) instead of being copied, which keeps open cheap for vocabularies
 * of 150k tokens; only arrays of strings or arrays get a parsed item list.  Multi-byte fields
 * are decoded byte by byte as little-endian, so the reader does not depend on host order or
 * alignment.  Keys and tensor names are indexed in open-addressing hash tables built at open,
 * which also catches duplicates.
 */
#include "gguf/gguf.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/* Smallest possible encodings, used to bound counts before allocating for them. */
#define MIN_KV_BYTES 13 /* key length (8) + value type (4) + 1-byte value */
/* name length (8) + n_dims (4) + one dim (8) + type (4) + offset (8) */
#define MIN_TENSOR_BYTES 32
#define MIN_STRING_BYTES 8
#define MIN_ARRAY_BYTES 12 /* element type (4) + count (8) */

typedef struct name_slot {
    gguf_str name;
    uint64_t index_plus1; /* 0 marks an empty slot */
} name_slot;

typedef struct name_index {
    name_slot *slots;
    uint64_t mask;
} name_index;

struct gguf_file {
    char *path;
    int fd;
    const uint8_t *map;
    uint64_t size;
    uint32_t version;
    uint32_t alignment;
    uint64_t data_offset;
    uint64_t n_kv;
    gguf_kv *kvs;
    uint64_t n_tensors;
    gguf_tensor *tensors;
    name_index kv_index;
    name_index tensor_index;
};

/* Parse state for one gguf_open call. */
typedef struct parse_ctx {
    const uint8_t *base;
    uint64_t size;
    uint64_t pos;
    const char *path;
    char *err;
    size_t err_size;
} parse_ctx;

/* ---- little-endian decoding ------------------------------------------------------------ */

static uint32_t le32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t le64(const uint8_t *p)
{
    return (uint64_t)le32(p) | (uint64_t)le32(p + 4) << 32;
}

static double f32_bits(uint32_t bits)
{
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

static double f64_bits(uint64_t bits)
{
    double d;
    memcpy(&d, &bits, sizeof d);
    return d;
}

static bool is_unsigned(gguf_vtype t)
{
    return t == GGUF_VT_UINT8 || t == GGUF_VT_UINT16 || t == GGUF_VT_UINT32 || t == GGUF_VT_UINT64;
}

static bool is_signed(gguf_vtype t)
{
    return t == GGUF_VT_INT8 || t == GGUF_VT_INT16 || t == GGUF_VT_INT32 || t == GGUF_VT_INT64;
}

/* Every fixed-size value takes one path: gather the little-endian bits, then interpret. */
static void decode_scalar(gguf_vtype type, const uint8_t *p, gguf_value *out)
{
    uint32_t size = gguf_vtype_size(type);
    uint64_t bits = 0;
    for (uint32_t i = 0; i < size; i++)
        bits |= (uint64_t)p[i] << (8 * i);
    out->type = type;
    out->v.u64 = bits;
    if (type == GGUF_VT_FLOAT32)
        out->v.f64 = f32_bits((uint32_t)bits);
    else if (type == GGUF_VT_FLOAT64)
        out->v.f64 = f64_bits(bits);
    else if (type == GGUF_VT_BOOL)
        out->v.b = bits != 0;
    else if (is_signed(type) && size < 8 && (bits >> (8 * size - 1)) != 0)
        out->v.u64 = bits | ~UINT64_C(0) << (8 * size); /* sign-extend; read back as i64 */
}

/* ---- cursor ---------------------------------------------------------------------------- */

__attribute__((format(printf, 4, 5))) static int fail(parse_ctx *pc, uint64_t offset, int code,
                                                      const char *fmt, ...)
{
    if (!pc->err || pc->err_size == 0) return code;
    int n = snprintf(pc->err, pc->err_size, "%s: offset %" PRIu64 ": ", pc->path, offset);
    if (n < 0 || (size_t)n >= pc->err_size) return code;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(pc->err + n, pc->err_size - (size_t)n, fmt, ap);
    va_end(ap);
    return code;
}

static uint64_t bytes_left(const parse_ctx *pc)
{
    return pc->size - pc->pos;
}

/* Makes sure n more bytes exist; `what` names the field for the message. */
static int need(parse_ctx *pc, uint64_t n, const char *what)
{
    if (bytes_left(pc) >= n) return 0;
    return fail(pc, pc->pos, -EINVAL,
                "truncated: %s needs %" PRIu64 " bytes, only %" PRIu64 " left (file size %" PRIu64
                ")",
                what, n, bytes_left(pc), pc->size);
}

static int take_u32(parse_ctx *pc, const char *what, uint32_t *out)
{
    int rc = need(pc, 4, what);
    if (rc) return rc;
    *out = le32(pc->base + pc->pos);
    pc->pos += 4;
    return 0;
}

static int take_u64(parse_ctx *pc, const char *what, uint64_t *out)
{
    int rc = need(pc, 8, what);
    if (rc) return rc;
    *out = le64(pc->base + pc->pos);
    pc->pos += 8;
    return 0;
}

static int take_str(parse_ctx *pc, const char *what, gguf_str *out)
{
    uint64_t start = pc->pos;
    uint64_t len;
    int rc = take_u64(pc, what, &len);
    if (rc) return rc;
    if (len > bytes_left(pc))
        return fail(pc, start, -EINVAL,
                    "truncated: %s length %" PRIu64 " exceeds the %" PRIu64
                    " bytes left (file size %" PRIu64 ")",
                    what, len, bytes_left(pc), pc->size);
    out->data = (const char *)pc->base + pc->pos;
    out->len = len;
    pc->pos += len;
    return 0;
}

/* ---- name index ------------------------------------------------------------------------ */

static uint64_t hash_bytes(const char *data, uint64_t len)
{
    uint64_t h = 0xcbf29ce484222325ull; /* FNV-1a */
    for (uint64_t i = 0; i < len; i++)
        h = (h ^ (uint8_t)data[i]) * 0x100000001b3ull;
    return h;
}

static int name_index_init(name_index *ix, uint64_t n)
{
    uint64_t cap = 8;
    while (cap < n * 2) { /* load factor <= 1/2; n is bounded by the file size */
        if (cap > (UINT64_MAX >> 2) / sizeof(name_slot)) return -ENOMEM;
        cap <<= 1;
    }
    ix->slots = calloc(cap, sizeof(name_slot));
    if (!ix->slots) return -ENOMEM;
    ix->mask = cap - 1;
    return 0;
}

/* Returns the index of a slot holding `name`, or of the empty slot where it belongs. */
static uint64_t name_index_probe(const name_index *ix, const char *data, uint64_t len)
{
    uint64_t at = hash_bytes(data, len) & ix->mask;
    for (;;) {
        const name_slot *slot = &ix->slots[at];
        if (slot->index_plus1 == 0) return at;
        if (slot->name.len == len && memcmp(slot->name.data, data, len) == 0) return at;
        at = (at + 1) & ix->mask;
    }
}

/* Adds name -> index; if the name is present already, returns false and its index. */
static bool name_index_add(name_index *ix, gguf_str name, uint64_t index, uint64_t *existing)
{
    name_slot *slot = &ix->slots[name_index_probe(ix, name.data, name.len)];
    if (slot->index_plus1 != 0) {
        *existing = slot->index_plus1 - 1;
        return false;
    }
    slot->name = name;
    slot->index_plus1 = index + 1;
    return true;
}

static bool name_index_find(const name_index *ix, const char *cstr, uint64_t *index)
{
    if (!ix->slots || !cstr) return false;
    size_t len = strlen(cstr);
    const name_slot *slot = &ix->slots[name_index_probe(ix, cstr, len)];
    if (slot->index_plus1 == 0) return false;
    *index = slot->index_plus1 - 1;
    return true;
}

/* ---- values ---------------------------------------------------------------------------- */

static void value_free(gguf_value *value)
{
    if (value->type != GGUF_VT_ARRAY || !value->v.arr.items) return;
    gguf_value *items = (gguf_value *)value->v.arr.items;
    for (uint64_t i = 0; i < value->v.arr.n; i++)
        value_free(&items[i]);
    free(items);
    value->v.arr.items = NULL;
}

static int parse_value(parse_ctx *pc, uint32_t type, int depth, gguf_value *out);

static int check_bools(parse_ctx *pc, const uint8_t *raw, uint64_t n)
{
    for (uint64_t i = 0; i < n; i++)
        if (raw[i] > 1)
            return fail(pc, (uint64_t)(raw + i - pc->base), -EINVAL,
                        "invalid bool byte 0x%02x in array element %" PRIu64 " (must be 0 or 1)",
                        raw[i], i);
    return 0;
}

static int parse_array(parse_ctx *pc, int depth, gguf_arr *out)
{
    uint64_t start = pc->pos;
    if (depth > GGUF_MAX_ARRAY_DEPTH)
        return fail(pc, start, -EINVAL, "arrays nested deeper than %d levels",
                    GGUF_MAX_ARRAY_DEPTH);
    uint32_t elem_type;
    uint64_t n;
    int rc = take_u32(pc, "array element type", &elem_type);
    if (!rc) rc = take_u64(pc, "array length", &n);
    if (rc) return rc;
    if (elem_type >= GGUF_VT_COUNT)
        return fail(pc, start, -EINVAL, "unknown array element type %" PRIu32, elem_type);

    uint32_t elem_size = gguf_vtype_size((gguf_vtype)elem_type);
    if (elem_size != 0) {
        uint64_t n_bytes;
        if (__builtin_mul_overflow(n, (uint64_t)elem_size, &n_bytes) || n_bytes > bytes_left(pc))
            return fail(pc, start, -EINVAL,
                        "truncated: array of %" PRIu64 " %s elements exceeds the %" PRIu64
                        " bytes left (file size %" PRIu64 ")",
                        n, gguf_vtype_name((gguf_vtype)elem_type), bytes_left(pc), pc->size);
        const uint8_t *raw = pc->base + pc->pos;
        if (elem_type == GGUF_VT_BOOL && (rc = check_bools(pc, raw, n))) return rc;
        *out = (gguf_arr){.elem_type = elem_type, .n = n, .raw = raw};
        pc->pos += n_bytes;
        return 0;
    }

    uint64_t min_bytes = elem_type == GGUF_VT_STRING ? MIN_STRING_BYTES : MIN_ARRAY_BYTES;
    if (n > bytes_left(pc) / min_bytes)
        return fail(pc, start, -EINVAL,
                    "truncated: array of %" PRIu64 " %s elements cannot fit in the %" PRIu64
                    " bytes left (file size %" PRIu64 ")",
                    n, gguf_vtype_name((gguf_vtype)elem_type), bytes_left(pc), pc->size);
    gguf_value *items = calloc(n ? n : 1, sizeof(gguf_value));
    if (!items) return fail(pc, start, -ENOMEM, "out of memory for %" PRIu64 " array items", n);
    uint64_t done = 0;
    for (; done < n; done++) {
        rc = parse_value(pc, elem_type, depth, &items[done]);
        if (rc) goto fail;
    }
    *out = (gguf_arr){.elem_type = elem_type, .n = n, .items = items};
    return 0;
fail:
    for (uint64_t i = 0; i < done; i++)
        value_free(&items[i]);
    free(items);
    return rc;
}

/* `depth` counts the arrays enclosing this value. */
static int parse_value(parse_ctx *pc, uint32_t type, int depth, gguf_value *out)
{
    uint64_t start = pc->pos;
    if (type >= GGUF_VT_COUNT) return fail(pc, start, -EINVAL, "unknown value type %" PRIu32, type);
    out->type = type;
    if (type == GGUF_VT_STRING) return take_str(pc, "string value", &out->v.str);
    if (type == GGUF_VT_ARRAY) return parse_array(pc, depth + 1, &out->v.arr);

    uint32_t size = gguf_vtype_size((gguf_vtype)type);
    int rc = need(pc, size, gguf_vtype_name((gguf_vtype)type));
    if (rc) return rc;
    const uint8_t *p = pc->base + pc->pos;
    pc->pos += size;
    if (type == GGUF_VT_BOOL && p[0] > 1)
        return fail(pc, start, -EINVAL, "invalid bool byte 0x%02x (must be 0 or 1)", p[0]);
    decode_scalar(type, p, out);
    return 0;
}

/* ---- sections -------------------------------------------------------------------------- */

static int parse_header(parse_ctx *pc, gguf_file *f, uint64_t *n_tensors)
{
    uint32_t magic, version;
    int rc = take_u32(pc, "magic", &magic);
    if (rc) return rc;
    if (magic != GGUF_MAGIC)
        return fail(pc, 0, -EINVAL, "bad magic 0x%08" PRIx32 " (expected 0x%08x, \"GGUF\")", magic,
                    GGUF_MAGIC);
    if ((rc = take_u32(pc, "version", &version))) return rc;
    if (version == 1)
        return fail(pc, 4, -ENOTSUP,
                    "unsupported GGUF version 1 (32-bit counts); convert the file to v3");
    if (version == 0x02000000u || version == 0x03000000u)
        return fail(pc, 4, -ENOTSUP, "unsupported big-endian GGUF file (version bytes swapped)");
    if (version != 2 && version != 3)
        return fail(pc, 4, -ENOTSUP, "unsupported GGUF version %" PRIu32 " (want 2 or 3)", version);
    f->version = version;
    if ((rc = take_u64(pc, "tensor count", n_tensors))) return rc;
    if ((rc = take_u64(pc, "metadata count", &f->n_kv))) return rc;
    if (f->n_kv > bytes_left(pc) / MIN_KV_BYTES)
        return fail(pc, 16, -EINVAL,
                    "truncated: metadata count %" PRIu64 " cannot fit in the %" PRIu64
                    " bytes left (file size %" PRIu64 ")",
                    f->n_kv, bytes_left(pc), pc->size);
    return 0;
}

static int parse_kvs(parse_ctx *pc, gguf_file *f)
{
    int rc = name_index_init(&f->kv_index, f->n_kv);
    f->kvs = calloc(f->n_kv ? f->n_kv : 1, sizeof(gguf_kv));
    if (rc || !f->kvs)
        return fail(pc, pc->pos, -ENOMEM, "out of memory for %" PRIu64 " keys", f->n_kv);
    for (uint64_t i = 0; i < f->n_kv; i++) {
        gguf_kv *kv = &f->kvs[i];
        uint32_t type;
        kv->file_offset = pc->pos;
        if ((rc = take_str(pc, "key", &kv->key))) return rc;
        if ((rc = take_u32(pc, "value type", &type))) return rc;
        kv->value.type = GGUF_VT_UINT8; /* nothing to free until parse_value succeeds */
        if ((rc = parse_value(pc, type, 0, &kv->value))) {
            kv->value.type = GGUF_VT_UINT8;
            return rc;
        }
        uint64_t first;
        if (!name_index_add(&f->kv_index, kv->key, i, &first))
            return fail(pc, kv->file_offset, -EINVAL,
                        "duplicate key '%.*s' (first at offset %" PRIu64 ")", (int)kv->key.len,
                        kv->key.data, f->kvs[first].file_offset);
    }
    return 0;
}

static int parse_alignment(parse_ctx *pc, gguf_file *f)
{
    uint64_t index;
    f->alignment = GGUF_DEFAULT_ALIGNMENT;
    if (!name_index_find(&f->kv_index, "general.alignment", &index)) return 0;
    const gguf_kv *kv = &f->kvs[index];
    if (kv->value.type != GGUF_VT_UINT32)
        return fail(pc, kv->file_offset, -EINVAL, "general.alignment has type %s, must be UINT32",
                    gguf_vtype_name(kv->value.type));
    uint64_t a = kv->value.v.u64;
    if (a == 0 || (a & (a - 1)) != 0)
        return fail(pc, kv->file_offset, -EINVAL,
                    "general.alignment %" PRIu64 " is not a non-zero power of 2", a);
    f->alignment = (uint32_t)a;
    return 0;
}

static int parse_tensor_info(parse_ctx *pc, gguf_tensor *t)
{
    uint64_t start = pc->pos;
    uint32_t type;
    int rc = take_str(pc, "tensor name", &t->name);
    if (!rc) rc = take_u32(pc, "tensor n_dims", &t->n_dims);
    if (rc) return rc;
    const int nlen = (int)(t->name.len > 200 ? 200 : t->name.len);
    if (t->n_dims < 1 || t->n_dims > GGUF_MAX_DIMS)
        return fail(pc, pc->pos - 4, -EINVAL,
                    "tensor '%.*s' has n_dims %" PRIu32 " (must be 1..%d)", nlen, t->name.data,
                    t->n_dims, GGUF_MAX_DIMS);
    for (uint32_t d = 0; d < GGUF_MAX_DIMS; d++)
        t->ne[d] = 1;
    for (uint32_t d = 0; d < t->n_dims; d++) {
        uint64_t dim;
        if ((rc = take_u64(pc, "tensor dimension", &dim))) return rc;
        t->ne[d] = (int64_t)dim;
        if (t->ne[d] < 1)
            return fail(pc, pc->pos - 8, -EINVAL,
                        "tensor '%.*s' has dimension ne[%" PRIu32 "] = %" PRId64
                        " (must be positive)",
                        nlen, t->name.data, d, t->ne[d]);
    }
    if ((rc = take_u32(pc, "tensor type", &type))) return rc;
    uint32_t block_elems;
    if (!gguf_type_size(type, &block_elems, NULL))
        return fail(pc, pc->pos - 4, -ENOTSUP, "tensor '%.*s' has unknown tensor type %" PRIu32,
                    nlen, t->name.data, type);
    t->type = type;
    if ((rc = take_u64(pc, "tensor offset", &t->offset))) return rc;

    rc = gguf_tensor_nbytes(t->type, t->n_dims, t->ne, &t->n_bytes);
    if (rc == -EINVAL)
        return fail(pc, start, -EINVAL,
                    "tensor '%.*s': ne[0] = %" PRId64
                    " is not a multiple of the %s block size %" PRIu32,
                    nlen, t->name.data, t->ne[0], gguf_type_name(t->type), block_elems);
    if (rc)
        return fail(pc, start, -EINVAL,
                    "tensor '%.*s': shape [%" PRId64 ", %" PRId64 ", %" PRId64 ", %" PRId64
                    "] overflows the element count or byte size",
                    nlen, t->name.data, t->ne[0], t->ne[1], t->ne[2], t->ne[3]);
    return 0;
}

typedef struct extent {
    uint64_t begin, end, index;
} extent;

static int extent_cmp(const void *a, const void *b)
{
    const extent *x = a, *y = b;
    return x->begin < y->begin ? -1 : x->begin > y->begin;
}

/* Alignment, bounds and overlap of every payload; `info_at` holds each record's offset. */
static int check_extents(parse_ctx *pc, gguf_file *f, const uint64_t *info_at)
{
    extent *ext = calloc(f->n_tensors ? f->n_tensors : 1, sizeof(extent));
    if (!ext) return fail(pc, 0, -ENOMEM, "out of memory checking tensor extents");
    int rc = 0;
    for (uint64_t i = 0; i < f->n_tensors; i++) {
        gguf_tensor *t = &f->tensors[i];
        const int nlen = (int)(t->name.len > 200 ? 200 : t->name.len);
        if (t->offset % f->alignment != 0) {
            rc =
                fail(pc, info_at[i], -EINVAL,
                     "tensor '%.*s' offset %" PRIu64 " is not a multiple of the alignment %" PRIu32,
                     nlen, t->name.data, t->offset, f->alignment);
            goto out;
        }
        uint64_t begin, end;
        if (__builtin_add_overflow(f->data_offset, t->offset, &begin) ||
            __builtin_add_overflow(begin, t->n_bytes, &end)) {
            rc = fail(pc, info_at[i], -EINVAL,
                      "tensor '%.*s' offset %" PRIu64 " + %" PRIu64
                      " bytes extends past end of file (size %" PRIu64 ")",
                      nlen, t->name.data, t->offset, t->n_bytes, f->size);
            goto out;
        }
        if (end > f->size) {
            rc = fail(pc, info_at[i], -EINVAL,
                      "tensor '%.*s' data [%" PRIu64 ", %" PRIu64
                      ") extends past end of file (size %" PRIu64 ")",
                      nlen, t->name.data, begin, end, f->size);
            goto out;
        }
        t->data = f->map + begin;
        ext[i] = (extent){begin, end, i};
    }
    qsort(ext, f->n_tensors, sizeof(extent), extent_cmp);
    for (uint64_t i = 1; i < f->n_tensors; i++) {
        if (ext[i].begin >= ext[i - 1].end) continue;
        const gguf_tensor *a = &f->tensors[ext[i - 1].index], *b = &f->tensors[ext[i].index];
        rc = fail(pc, info_at[ext[i].index], -EINVAL,
                  "tensor '%.*s' data [%" PRIu64 ", %" PRIu64
                  ") overlaps tensor '%.*s' data [%" PRIu64 ", %" PRIu64 ")",
                  (int)(b->name.len > 200 ? 200 : b->name.len), b->name.data, ext[i].begin,
                  ext[i].end, (int)(a->name.len > 200 ? 200 : a->name.len), a->name.data,
                  ext[i - 1].begin, ext[i - 1].end);
        goto out;
    }
out:
    free(ext);
    return rc;
}

static int parse_tensors(parse_ctx *pc, gguf_file *f, uint64_t n_tensors)
{
    if (n_tensors > bytes_left(pc) / MIN_TENSOR_BYTES)
        return fail(pc, 8, -EINVAL,
                    "truncated: tensor count %" PRIu64 " cannot fit in the %" PRIu64
                    " bytes left after the metadata (file size %" PRIu64 ")",
                    n_tensors, bytes_left(pc), pc->size);
    int rc = name_index_init(&f->tensor_index, n_tensors);
    f->tensors = calloc(n_tensors ? n_tensors : 1, sizeof(gguf_tensor));
    uint64_t *info_at = calloc(n_tensors ? n_tensors : 1, sizeof(uint64_t));
    if (rc || !f->tensors || !info_at) {
        rc = fail(pc, pc->pos, -ENOMEM, "out of memory for %" PRIu64 " tensors", n_tensors);
        goto out;
    }
    f->n_tensors = n_tensors;
    for (uint64_t i = 0; i < n_tensors; i++) {
        info_at[i] = pc->pos;
        if ((rc = parse_tensor_info(pc, &f->tensors[i]))) goto out;
        uint64_t first;
        gguf_str name = f->tensors[i].name;
        if (!name_index_add(&f->tensor_index, name, i, &first)) {
            rc = fail(pc, info_at[i], -EINVAL,
                      "duplicate tensor name '%.*s' (first at offset %" PRIu64 ")",
                      (int)(name.len > 200 ? 200 : name.len), name.data, info_at[first]);
            goto out;
        }
    }
    uint64_t pad = (f->alignment - pc->pos % f->alignment) % f->alignment;
    if (__builtin_add_overflow(pc->pos, pad, &f->data_offset)) {
        rc = fail(pc, pc->pos, -EINVAL, "data section offset overflows");
        goto out;
    }
    rc = check_extents(pc, f, info_at);
out:
    free(info_at);
    return rc;
}

/* ---- open / close ---------------------------------------------------------------------- */

static int map_file(parse_ctx *pc, gguf_file *f)
{
    struct stat st;
    f->fd = open(pc->path, O_RDONLY | O_CLOEXEC);
    if (f->fd < 0) {
        int code = -errno;
        return fail(pc, 0, code, "cannot open: %s", strerror(-code));
    }
    if (fstat(f->fd, &st) != 0) {
        int code = -errno;
        return fail(pc, 0, code, "cannot stat: %s", strerror(-code));
    }
    if (!S_ISREG(st.st_mode)) return fail(pc, 0, -EINVAL, "not a regular file");
    f->size = (uint64_t)st.st_size;
    pc->size = f->size;
    if (f->size == 0) return 0; /* mmap refuses length 0; the header check reports it */
    void *map = mmap(NULL, (size_t)f->size, PROT_READ, MAP_PRIVATE, f->fd, 0);
    if (map == MAP_FAILED) {
        int code = -errno;
        return fail(pc, 0, code, "cannot map %" PRIu64 " bytes: %s", f->size, strerror(-code));
    }
    f->map = map;
    pc->base = map;
    return 0;
}

int gguf_open(gguf_file **out, const char *path, char *err, size_t err_size)
{
    parse_ctx pc = {.path = path ? path : "(null)", .err = err, .err_size = err_size};
    uint64_t n_tensors = 0;
    int rc;
    if (err && err_size) err[0] = '\0';
    *out = NULL;
    if (!path) return fail(&pc, 0, -EINVAL, "no path given");

    gguf_file *f = calloc(1, sizeof(*f));
    if (!f || !(f->path = strdup(path))) {
        free(f);
        return fail(&pc, 0, -ENOMEM, "out of memory");
    }
    f->fd = -1;
    if ((rc = map_file(&pc, f))) goto fail;
    if ((rc = parse_header(&pc, f, &n_tensors))) goto fail;
    if ((rc = parse_kvs(&pc, f))) goto fail;
    if ((rc = parse_alignment(&pc, f))) goto fail;
    if ((rc = parse_tensors(&pc, f, n_tensors))) goto fail;
    *out = f;
    return 0;
fail:
    gguf_close(&f);
    return rc;
}

int gguf_check_unchanged(const gguf_file *f, char *err, size_t err_size)
{
    struct stat st;
    if (fstat(f->fd, &st) != 0) {
        snprintf(err, err_size, "model file %s: fstat: %s", f->path, strerror(errno));
        return -EIO;
    }
    if ((uint64_t)st.st_size < f->size) {
        snprintf(
            err, err_size,
            "the model file %s was truncated while serving (%llu bytes now, %llu when loaded): "
            "restart the server with an intact file",
            f->path, (unsigned long long)st.st_size, (unsigned long long)f->size);
        return -EIO;
    }
    return 0;
}

const void *gguf_mapping(const gguf_file *f, size_t *size)
{
    *size = (size_t)f->size;
    return f->map;
}

void gguf_close(gguf_file **file)
{
    if (!file || !*file) return;
    gguf_file *f = *file;
    if (f->kvs)
        for (uint64_t i = 0; i < f->n_kv; i++)
            value_free(&f->kvs[i].value);
    free(f->kvs);
    free(f->tensors);
    free(f->kv_index.slots);
    free(f->tensor_index.slots);
    if (f->map) munmap((void *)f->map, (size_t)f->size);
    if (f->fd >= 0) close(f->fd);
    free(f->path);
    free(f);
    *file = NULL;
}

/* ---- accessors ------------------------------------------------------------------------- */

const char *gguf_path(const gguf_file *file)
{
    return file->path;
}
uint32_t gguf_version(const gguf_file *file)
{
    return file->version;
}
uint32_t gguf_alignment(const gguf_file *file)
{
    return file->alignment;
}
uint64_t gguf_file_size(const gguf_file *file)
{
    return file->size;
}
uint64_t gguf_data_offset(const gguf_file *file)
{
    return file->data_offset;
}
int gguf_fd(const gguf_file *file)
{
    return file->fd;
}
uint64_t gguf_n_kv(const gguf_file *file)
{
    return file->n_kv;
}
uint64_t gguf_n_tensors(const gguf_file *file)
{
    return file->n_tensors;
}

const gguf_kv *gguf_kv_at(const gguf_file *file, uint64_t index)
{
    return index < file->n_kv ? &file->kvs[index] : NULL;
}

const gguf_tensor *gguf_tensor_at(const gguf_file *file, uint64_t index)
{
    return index < file->n_tensors ? &file->tensors[index] : NULL;
}

const gguf_value *gguf_find(const gguf_file *file, const char *key)
{
    uint64_t index;
    return name_index_find(&file->kv_index, key, &index) ? &file->kvs[index].value : NULL;
}

const gguf_tensor *gguf_find_tensor(const gguf_file *file, const char *name)
{
    uint64_t index;
    return name_index_find(&file->tensor_index, name, &index) ? &file->tensors[index] : NULL;
}

bool gguf_str_eq(gguf_str s, const char *cstr)
{
    size_t len = strlen(cstr);
    return s.len == len && (len == 0 || memcmp(s.data, cstr, len) == 0);
}

/* ---- typed getters --------------------------------------------------------------------- */

/* Any integer value as u64, if it is non-negative. */
static int value_as_u64(const gguf_value *v, uint64_t *out)
{
    if (is_unsigned(v->type))
        *out = v->v.u64;
    else if (is_signed(v->type) && v->v.i64 >= 0)
        *out = (uint64_t)v->v.i64;
    else
        return -EINVAL;
    return 0;
}

int gguf_get_u64(const gguf_file *file, const char *key, uint64_t *out)
{
    const gguf_value *v = gguf_find(file, key);
    return v ? value_as_u64(v, out) : -ENOENT;
}

int gguf_get_u32(const gguf_file *file, const char *key, uint32_t *out)
{
    uint64_t value;
    int rc = gguf_get_u64(file, key, &value);
    if (rc) return rc;
    if (value > UINT32_MAX) return -EINVAL;
    *out = (uint32_t)value;
    return 0;
}

int gguf_get_i64(const gguf_file *file, const char *key, int64_t *out)
{
    const gguf_value *v = gguf_find(file, key);
    if (!v) return -ENOENT;
    if (is_signed(v->type))
        *out = v->v.i64;
    else if (is_unsigned(v->type) && v->v.u64 <= (uint64_t)INT64_MAX)
        *out = (int64_t)v->v.u64;
    else
        return -EINVAL;
    return 0;
}

int gguf_get_f32(const gguf_file *file, const char *key, float *out)
{
    const gguf_value *v = gguf_find(file, key);
    if (!v) return -ENOENT;
    if (v->type == GGUF_VT_FLOAT32 || v->type == GGUF_VT_FLOAT64)
        *out = (float)v->v.f64;
    else if (is_signed(v->type))
        *out = (float)v->v.i64;
    else if (is_unsigned(v->type))
        *out = (float)v->v.u64;
    else
        return -EINVAL;
    return 0;
}

int gguf_get_bool(const gguf_file *file, const char *key, bool *out)
{
    const gguf_value *v = gguf_find(file, key);
    if (!v) return -ENOENT;
    if (v->type != GGUF_VT_BOOL) return -EINVAL;
    *out = v->v.b;
    return 0;
}

int gguf_get_str(const gguf_file *file, const char *key, gguf_str *out)
{
    const gguf_value *v = gguf_find(file, key);
    if (!v) return -ENOENT;
    if (v->type != GGUF_VT_STRING) return -EINVAL;
    *out = v->v.str;
    return 0;
}

int gguf_get_arr(const gguf_file *file, const char *key, gguf_arr *out)
{
    const gguf_value *v = gguf_find(file, key);
    if (!v) return -ENOENT;
    if (v->type != GGUF_VT_ARRAY) return -EINVAL;
    *out = v->v.arr;
    return 0;
}

/* ---- array elements -------------------------------------------------------------------- */

/* Fixed-size arrays stay raw in the mapping; an element is decoded only when asked for. */
static gguf_value arr_elem(const gguf_arr *arr, uint64_t index)
{
    gguf_value v;
    decode_scalar(arr->elem_type, arr->raw + index * gguf_vtype_size(arr->elem_type), &v);
    return v;
}

/* A float outside the integer type's range (or NaN) cannot be cast: C leaves that undefined,
 * and such values come straight from the file.  They saturate; NaN reads as 0. */
static int64_t f64_to_i64(double x)
{
    if (x != x) return 0;
    if (x <= -9223372036854775808.0) return INT64_MIN;
    if (x >= 9223372036854775808.0) return INT64_MAX;
    return (int64_t)x;
}

static uint64_t f64_to_u64(double x)
{
    if (!(x > 0)) return 0; /* NaN too */
    if (x >= 18446744073709551616.0) return UINT64_MAX;
    return (uint64_t)x;
}

int64_t gguf_arr_i64(const gguf_arr *arr, uint64_t index)
{
    gguf_value v = arr_elem(arr, index);
    if (v.type == GGUF_VT_FLOAT32 || v.type == GGUF_VT_FLOAT64) return f64_to_i64(v.v.f64);
    if (v.type == GGUF_VT_BOOL) return v.v.b;
    return v.v.i64; /* unsigned values wrap, as a cast would */
}

uint64_t gguf_arr_u64(const gguf_arr *arr, uint64_t index)
{
    gguf_value v = arr_elem(arr, index);
    if (v.type == GGUF_VT_FLOAT32 || v.type == GGUF_VT_FLOAT64) return f64_to_u64(v.v.f64);
    if (v.type == GGUF_VT_BOOL) return v.v.b;
    return v.v.u64;
}

double gguf_arr_f64(const gguf_arr *arr, uint64_t index)
{
    gguf_value v = arr_elem(arr, index);
    if (v.type == GGUF_VT_FLOAT32 || v.type == GGUF_VT_FLOAT64) return v.v.f64;
    if (v.type == GGUF_VT_BOOL) return v.v.b;
    return is_signed(v.type) ? (double)v.v.i64 : (double)v.v.u64;
}
