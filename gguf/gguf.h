/*
 * gguf — reader and writer for GGUF files (versions 2 and 3).
 *
 * Contract
 * - gguf_open() maps the whole file read-only and validates everything it will later hand out:
 *   every count, string length, array extent, tensor shape, byte size and data offset is checked
 *   against the file size before use, with overflow-safe arithmetic.  A file that passes open
 *   can be walked with the accessors below without further checks; no accessor reads outside
 *   the mapping.
 * - Failures return a negative errno-style code (-EINVAL malformed, -ENOTSUP unsupported
 *   version or tensor type, -ENOENT/-EACCES/... from the OS, -ENOMEM) and write a message into
 *   the caller's buffer naming the file, the byte offset and what is wrong.
 * - Strings handed out (gguf_str) point into the mapping: not NUL-terminated, valid until
 *   gguf_close().  Everything a gguf_file owns is freed by gguf_close().
 * - A gguf_file is immutable after open: any thread may read it concurrently.
 * - The writer builds a file in memory order (KVs, tensor infos, aligned data) and writes it
 *   in one pass; it is used by the tests and tools, never on a serving path.
 */
#ifndef MOE_GGUF_H
#define MOE_GGUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define GGUF_MAGIC 0x46554747u /* "GGUF" read as a little-endian u32 */
#define GGUF_DEFAULT_ALIGNMENT 32
#define GGUF_MAX_DIMS 4
#define GGUF_MAX_ARRAY_DEPTH 8 /* arrays of arrays nested deeper than this are refused */

/* Metadata value types, numbered as stored in the file. */
typedef enum gguf_vtype {
    GGUF_VT_UINT8 = 0,
    GGUF_VT_INT8 = 1,
    GGUF_VT_UINT16 = 2,
    GGUF_VT_INT16 = 3,
    GGUF_VT_UINT32 = 4,
    GGUF_VT_INT32 = 5,
    GGUF_VT_FLOAT32 = 6,
    GGUF_VT_BOOL = 7,
    GGUF_VT_STRING = 8,
    GGUF_VT_ARRAY = 9,
    GGUF_VT_UINT64 = 10,
    GGUF_VT_INT64 = 11,
    GGUF_VT_FLOAT64 = 12,
    GGUF_VT_COUNT
} gguf_vtype;

/* Tensor element types, numbered as ggml numbers them (ggml.h). */
typedef enum gguf_ttype {
    GGUF_T_F32 = 0,
    GGUF_T_F16 = 1,
    GGUF_T_Q4_0 = 2,
    GGUF_T_Q4_1 = 3,
    GGUF_T_Q5_0 = 6,
    GGUF_T_Q5_1 = 7,
    GGUF_T_Q8_0 = 8,
    GGUF_T_Q8_1 = 9,
    GGUF_T_Q2_K = 10,
    GGUF_T_Q3_K = 11,
    GGUF_T_Q4_K = 12,
    GGUF_T_Q5_K = 13,
    GGUF_T_Q6_K = 14,
    GGUF_T_Q8_K = 15,
    GGUF_T_IQ2_XXS = 16,
    GGUF_T_IQ2_XS = 17,
    GGUF_T_IQ3_XXS = 18,
    GGUF_T_IQ1_S = 19,
    GGUF_T_IQ4_NL = 20,
    GGUF_T_IQ3_S = 21,
    GGUF_T_IQ2_S = 22,
    GGUF_T_IQ4_XS = 23,
    GGUF_T_I8 = 24,
    GGUF_T_I16 = 25,
    GGUF_T_I32 = 26,
    GGUF_T_I64 = 27,
    GGUF_T_F64 = 28,
    GGUF_T_IQ1_M = 29,
    GGUF_T_BF16 = 30,
    GGUF_T_TQ1_0 = 34,
    GGUF_T_TQ2_0 = 35,
    GGUF_T_MXFP4 = 39,
    GGUF_T_COUNT = 40
} gguf_ttype;

/* A string inside the mapping (or, for the writer, inside caller memory). */
typedef struct gguf_str {
    const char *data;
    uint64_t len;
} gguf_str;

typedef struct gguf_value gguf_value;

/* An array value.  Fixed-size elements stay in the file (raw, little-endian, possibly
 * unaligned: read them with gguf_arr_*); string and array elements are parsed into items. */
typedef struct gguf_arr {
    gguf_vtype elem_type;
    uint64_t n;
    const uint8_t *raw;      /* fixed-size elements; NULL for STRING / ARRAY elements */
    const gguf_value *items; /* STRING / ARRAY elements, n of them; NULL otherwise */
} gguf_arr;

struct gguf_value {
    gguf_vtype type;
    union {
        uint64_t u64; /* UINT8/16/32/64 */
        int64_t i64;  /* INT8/16/32/64 */
        double f64;   /* FLOAT32/64 */
        bool b;       /* BOOL */
        gguf_str str; /* STRING */
        gguf_arr arr; /* ARRAY */
    } v;
};

typedef struct gguf_kv {
    gguf_str key;
    gguf_value value;
    uint64_t file_offset; /* where the key starts, for messages */
} gguf_kv;

typedef struct gguf_tensor {
    gguf_str name;
    uint32_t n_dims;
    int64_t ne[GGUF_MAX_DIMS]; /* ne[0] fastest-varying; unused dims are 1 */
    gguf_ttype type;
    uint64_t offset;  /* relative to the data section */
    uint64_t n_bytes; /* exact size of the payload (without padding) */
    const void *data; /* inside the mapping */
} gguf_tensor;

typedef struct gguf_file gguf_file;

/* Size facts of a tensor type; returns false for a number ggml does not define. */
bool gguf_type_size(gguf_ttype type, uint32_t *block_elems, uint32_t *block_bytes);
const char *gguf_type_name(gguf_ttype type); /* "Q4_K", or "unknown" */
const char *gguf_vtype_name(gguf_vtype type);
/* Bytes of one element of a fixed-size value type; 0 for STRING, ARRAY and unknown numbers. */
uint32_t gguf_vtype_size(gguf_vtype type);
/* Payload bytes of a tensor: 0 on success, -ENOTSUP for an unknown type, -EINVAL for n_dims
 * outside 1..GGUF_MAX_DIMS, a dimension < 1 or ne[0] not a multiple of the block size,
 * -EOVERFLOW when the element count or byte size does not fit in 63 bits. */
int gguf_tensor_nbytes(gguf_ttype type, uint32_t n_dims, const int64_t *ne, uint64_t *n_bytes);

int gguf_open(gguf_file **out, const char *path, char *err, size_t err_size);
void gguf_close(gguf_file **file); /* sets *file to NULL; NULL is fine */
/* Whether the file is still as long as when it was opened (one fstat): a file truncated while
 * mapped turns reads of its lost pages into SIGBUS, so a server checks before touching them.
 * 0, or -EIO with a message naming the file and both sizes.  A file deleted or renamed while
 * open is unchanged: the open descriptor and the mapping keep its data. */
int gguf_check_unchanged(const gguf_file *f, char *err, size_t err_size);
/* The file's mapping (for a SIGBUS handler to tell whose pages were lost). */
const void *gguf_mapping(const gguf_file *f, size_t *size);

const char *gguf_path(const gguf_file *file);
uint32_t gguf_version(const gguf_file *file);
uint32_t gguf_alignment(const gguf_file *file);
uint64_t gguf_file_size(const gguf_file *file);
uint64_t gguf_data_offset(const gguf_file *file); /* file offset of the data section */
int gguf_fd(const gguf_file *file);               /* kept open for the expert loader */

uint64_t gguf_n_kv(const gguf_file *file);
const gguf_kv *gguf_kv_at(const gguf_file *file, uint64_t index);
const gguf_value *gguf_find(const gguf_file *file, const char *key); /* NULL if absent */

uint64_t gguf_n_tensors(const gguf_file *file);
const gguf_tensor *gguf_tensor_at(const gguf_file *file, uint64_t index);
const gguf_tensor *gguf_find_tensor(const gguf_file *file, const char *name); /* NULL if absent */

/* Typed getters: 0 on success, -ENOENT when the key is absent, -EINVAL when the stored type
 * cannot represent the requested one (integers are converted when the value fits). */
int gguf_get_u32(const gguf_file *file, const char *key, uint32_t *out);
int gguf_get_u64(const gguf_file *file, const char *key, uint64_t *out);
int gguf_get_i64(const gguf_file *file, const char *key, int64_t *out);
int gguf_get_f32(const gguf_file *file, const char *key, float *out);
int gguf_get_bool(const gguf_file *file, const char *key, bool *out);
int gguf_get_str(const gguf_file *file, const char *key, gguf_str *out);
int gguf_get_arr(const gguf_file *file, const char *key, gguf_arr *out);

/* Element readers for fixed-size arrays (index < arr->n is the caller's contract).  Float
 * elements read as integers are truncated and saturate at the type's limits (NaN reads 0). */
int64_t gguf_arr_i64(const gguf_arr *arr, uint64_t index);
uint64_t gguf_arr_u64(const gguf_arr *arr, uint64_t index);
double gguf_arr_f64(const gguf_arr *arr, uint64_t index);

bool gguf_str_eq(gguf_str s, const char *cstr);

/* ---- writer ---------------------------------------------------------------------------- */

typedef struct gguf_writer gguf_writer;

int gguf_writer_create(gguf_writer **out, uint32_t alignment);
void gguf_writer_destroy(gguf_writer **writer);

/* Keys and string values are copied.  Array payloads are copied. */
int gguf_writer_add_u32(gguf_writer *w, const char *key, uint32_t value);
int gguf_writer_add_i32(gguf_writer *w, const char *key, int32_t value);
int gguf_writer_add_u64(gguf_writer *w, const char *key, uint64_t value);
int gguf_writer_add_f32(gguf_writer *w, const char *key, float value);
int gguf_writer_add_bool(gguf_writer *w, const char *key, bool value);
int gguf_writer_add_str(gguf_writer *w, const char *key, const char *value);
/* elem_type is a fixed-size type; data holds n elements in that type's host layout. */
int gguf_writer_add_arr(gguf_writer *w, const char *key, gguf_vtype elem_type, const void *data,
                        uint64_t n);
int gguf_writer_add_arr_str(gguf_writer *w, const char *key, const char *const *values, uint64_t n);
/* Any value, deep-copied: scalars of every type, strings (may hold NULs), and arrays nested up
 * to GGUF_MAX_ARRAY_DEPTH.  Fixed-size array elements in arr.raw are in file layout
 * (little-endian), exactly as the reader hands them out, so a value read from one file can be
 * written to another. */
int gguf_writer_add_value(gguf_writer *w, const char *key, const gguf_value *value);

/* The payload is referenced, not copied: it must stay valid until gguf_writer_write(). */
int gguf_writer_add_tensor(gguf_writer *w, const char *name, uint32_t n_dims, const int64_t *ne,
                           gguf_ttype type, const void *data);

int gguf_writer_write(gguf_writer *w, const char *path, char *err, size_t err_size);

#endif
