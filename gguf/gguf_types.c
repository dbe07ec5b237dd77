/*
 * gguf_types.c — the size facts of GGUF value types and ggml tensor types.
 *
 * Kept apart from the reader because the writer, the model loader and the tools ask the same
 * questions (how many bytes is a block, what is this type called) without parsing a file.
 */
#include "gguf/gguf.h"

#include <errno.h>
#include <stdint.h>

/* ---- type tables ----------------------------------------------------------------------- */

typedef struct ttype_info {
    const char *name;
    uint32_t block_elems; /* 0: number not defined by ggml */
    uint32_t block_bytes;
} ttype_info;

/* clang-format off */
static const ttype_info ttype_table[GGUF_T_COUNT] = {
    [GGUF_T_F32] = {"F32", 1, 4},           [GGUF_T_F16] = {"F16", 1, 2},
    [GGUF_T_Q4_0] = {"Q4_0", 32, 18},       [GGUF_T_Q4_1] = {"Q4_1", 32, 20},
    [GGUF_T_Q5_0] = {"Q5_0", 32, 22},       [GGUF_T_Q5_1] = {"Q5_1", 32, 24},
    [GGUF_T_Q8_0] = {"Q8_0", 32, 34},       [GGUF_T_Q8_1] = {"Q8_1", 32, 36},
    [GGUF_T_Q2_K] = {"Q2_K", 256, 84},      [GGUF_T_Q3_K] = {"Q3_K", 256, 110},
    [GGUF_T_Q4_K] = {"Q4_K", 256, 144},     [GGUF_T_Q5_K] = {"Q5_K", 256, 176},
    [GGUF_T_Q6_K] = {"Q6_K", 256, 210},     [GGUF_T_Q8_K] = {"Q8_K", 256, 292},
    [GGUF_T_IQ2_XXS] = {"IQ2_XXS", 256, 66}, [GGUF_T_IQ2_XS] = {"IQ2_XS", 256, 74},
    [GGUF_T_IQ3_XXS] = {"IQ3_XXS", 256, 98}, [GGUF_T_IQ1_S] = {"IQ1_S", 256, 50},
    [GGUF_T_IQ4_NL] = {"IQ4_NL", 32, 18},   [GGUF_T_IQ3_S] = {"IQ3_S", 256, 110},
    [GGUF_T_IQ2_S] = {"IQ2_S", 256, 82},    [GGUF_T_IQ4_XS] = {"IQ4_XS", 256, 136},
    [GGUF_T_I8] = {"I8", 1, 1},             [GGUF_T_I16] = {"I16", 1, 2},
    [GGUF_T_I32] = {"I32", 1, 4},           [GGUF_T_I64] = {"I64", 1, 8},
    [GGUF_T_F64] = {"F64", 1, 8},           [GGUF_T_IQ1_M] = {"IQ1_M", 256, 56},
    [GGUF_T_BF16] = {"BF16", 1, 2},         [GGUF_T_TQ1_0] = {"TQ1_0", 256, 54},
    [GGUF_T_TQ2_0] = {"TQ2_0", 256, 66},    [GGUF_T_MXFP4] = {"MXFP4", 32, 17},
};

static const struct {
    const char *name;
    uint32_t size;
} vtype_table[GGUF_VT_COUNT] = {
    [GGUF_VT_UINT8] = {"UINT8", 1},     [GGUF_VT_INT8] = {"INT8", 1},
    [GGUF_VT_UINT16] = {"UINT16", 2},   [GGUF_VT_INT16] = {"INT16", 2},
    [GGUF_VT_UINT32] = {"UINT32", 4},   [GGUF_VT_INT32] = {"INT32", 4},
    [GGUF_VT_FLOAT32] = {"FLOAT32", 4}, [GGUF_VT_BOOL] = {"BOOL", 1},
    [GGUF_VT_STRING] = {"STRING", 0},   [GGUF_VT_ARRAY] = {"ARRAY", 0},
    [GGUF_VT_UINT64] = {"UINT64", 8},   [GGUF_VT_INT64] = {"INT64", 8},
    [GGUF_VT_FLOAT64] = {"FLOAT64", 8},
};
/* clang-format on */

bool gguf_type_size(gguf_ttype type, uint32_t *block_elems, uint32_t *block_bytes)
{
    if ((unsigned)type >= GGUF_T_COUNT || ttype_table[type].block_elems == 0) return false;
    if (block_elems) *block_elems = ttype_table[type].block_elems;
    if (block_bytes) *block_bytes = ttype_table[type].block_bytes;
    return true;
}

const char *gguf_type_name(gguf_ttype type)
{
    if ((unsigned)type >= GGUF_T_COUNT || ttype_table[type].block_elems == 0) return "unknown";
    return ttype_table[type].name;
}

const char *gguf_vtype_name(gguf_vtype type)
{
    if ((unsigned)type >= GGUF_VT_COUNT) return "unknown";
    return vtype_table[type].name;
}

uint32_t gguf_vtype_size(gguf_vtype type)
{
    if ((unsigned)type >= GGUF_VT_COUNT) return 0;
    return vtype_table[type].size;
}

int gguf_tensor_nbytes(gguf_ttype type, uint32_t n_dims, const int64_t *ne, uint64_t *n_bytes)
{
    uint32_t block_elems, block_bytes;
    if (!gguf_type_size(type, &block_elems, &block_bytes)) return -ENOTSUP;
    if (n_dims < 1 || n_dims > GGUF_MAX_DIMS) return -EINVAL;
    for (uint32_t d = 0; d < n_dims; d++)
        if (ne[d] < 1) return -EINVAL;
    if ((uint64_t)ne[0] % block_elems != 0) return -EINVAL;

    /* Both the element count and the byte size must fit in int64, as ggml keeps them. */
    uint64_t n_elems = 1;
    uint64_t bytes;
    if (__builtin_mul_overflow((uint64_t)ne[0] / block_elems, (uint64_t)block_bytes, &bytes))
        return -EOVERFLOW;
    for (uint32_t d = 0; d < n_dims; d++)
        if (__builtin_mul_overflow(n_elems, (uint64_t)ne[d], &n_elems)) return -EOVERFLOW;
    for (uint32_t d = 1; d < n_dims; d++)
        if (__builtin_mul_overflow(bytes, (uint64_t)ne[d], &bytes)) return -EOVERFLOW;
    if (n_elems > (uint64_t)INT64_MAX || bytes > (uint64_t)INT64_MAX) return -EOVERFLOW;
    *n_bytes = bytes;
    return 0;
}
