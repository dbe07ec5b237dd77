/*
 * config — one JSON file describes a deployment (docs/configuration.md lists every key).
 *
 * Contract
 * - A cfg is a plain struct the caller owns.  cfg_defaults() fills every key with its default
 *   (model.path has none); cfg_load_file() / cfg_load_string() apply the keys a JSON document
 *   names on top of what is there; cfg_set() applies one "section.key=value" override, the
 *   value written as text and parsed as the key's type; cfg_validate() checks every key's
 *   range and the rules between keys, and fills in what derives from other keys (model.name
 *   from model.path's file name when no name was given).  Call it after the last change and
 *   before reading the struct.
 * - Loading is all-or-nothing: a document with any error leaves the cfg as it was.  cfg_set()
 *   likewise changes nothing on error.
 * - Every error names the key path (`server.port`), the bad value and what is expected; an
 *   unknown key is an error that suggests the closest known key; JSON syntax errors give the
 *   line and column.  Load and validate report every error they find, one per line, in the
 *   caller's buffer (truncated with a count when it is full); functions return 0 or a negative
 *   errno value (-EINVAL bad content, -ENOMEM, or the OS's error for an unreadable file).
 * - The cfg owns its strings (malloc'd); cfg_free() frees them all and leaves a zeroed struct.
 *   cfg_free() on a zeroed or already freed cfg is a no-op.
 * - Sizes: an integer number of bytes or a string "<number>[ ]<unit>" with B, KB/MB/GB/TB/PB
 *   (powers of 1000) or KiB/MiB/GiB/TiB/PiB (powers of 1024), case ignored; a fraction is
 *   allowed if the result is a whole number of bytes ("1.5GiB").  Durations: an integer number
 *   of milliseconds or a string with ms, s, m or h ("30s", "1.5s", "2m").
 * - No global state: any thread may use its own cfg; a validated cfg may be read by many.
 */
#ifndef MOE_CONFIG_H
#define MOE_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* A memory budget for one tier: a fixed size, "auto" (everything that is wanted, as far as it
 * fits in what the tier has), or a percentage of everything that is wanted. */
typedef enum cfg_budget_kind {
    CFG_BUDGET_AUTO = 0,
    CFG_BUDGET_BYTES,
    CFG_BUDGET_PERCENT,
} cfg_budget_kind;

typedef struct cfg_budget {
    cfg_budget_kind kind;
    uint64_t bytes; /* CFG_BUDGET_BYTES */
    double percent; /* CFG_BUDGET_PERCENT: in (0, 100] */
} cfg_budget;

/* "auto", true or false. */
typedef enum cfg_tristate {
    CFG_AUTO = -1,
    CFG_OFF = 0,
    CFG_ON = 1,
} cfg_tristate;

typedef enum cfg_cache_policy {
    CFG_CACHE_LRU = 0,
    CFG_CACHE_LFU,
    CFG_CACHE_LRU_PROTECT, /* LRU that passes over experts the predictor has just asked for */
    CFG_CACHE_LFU_HISTORY, /* fewest requests since start; most recent first among equals */
    CFG_CACHE_LRU_PREDICT, /* LRU that passes over what the predictor expects soon */
} cfg_cache_policy;

typedef enum cfg_predictor_kind {
    CFG_PREDICTOR_NONE = 0,
    CFG_PREDICTOR_PREGATE,
    CFG_PREDICTOR_AFFINITY,
    CFG_PREDICTOR_HYBRID,
    CFG_PREDICTOR_AUTO, /* pregate when a device tier does not hold every expert, else none */
} cfg_predictor_kind;

typedef enum cfg_backend {
    CFG_BACKEND_AUTO = 0, /* follows gpu.enabled: CUDA when usable, else the CPU */
    CFG_BACKEND_CPU,
    CFG_BACKEND_SIM, /* the simulated device (tests, CI, trying a GPU layout on a CPU) */
    CFG_BACKEND_CUDA,
} cfg_backend;

typedef enum cfg_kv_type { CFG_KV_F16 = 0, CFG_KV_F32 } cfg_kv_type;

typedef enum cfg_log_level {
    CFG_LOG_ERROR = 0,
    CFG_LOG_WARN,
    CFG_LOG_INFO,
    CFG_LOG_DEBUG,
} cfg_log_level;

typedef enum cfg_log_format {
    CFG_LOG_TEXT = 0,
    CFG_LOG_JSON,
} cfg_log_format;

typedef struct cfg_strings {
    char **items;
    size_t count;
} cfg_strings;

typedef struct cfg {
    struct {
        char *path;          /* GGUF file; no default, required */
        char *name;          /* served model id; NULL until validate derives it from path */
        char *chat_template; /* built-in name or file; NULL: the file's own template */
    } model;
    struct {
        char *host;
        int32_t port;         /* 0: the OS picks one */
        cfg_strings api_keys; /* empty: no authentication */
        uint64_t max_header_bytes;
        uint64_t max_body_bytes;
        int32_t max_connections;
        uint64_t header_timeout_ms;
        uint64_t idle_timeout_ms;
        uint64_t drain_timeout_ms; /* on SIGTERM, how long requests in flight may still run */
        char *replica;             /* NULL: no replica label on the metrics */
        int32_t queue_depth;       /* waiting requests beyond which new ones are refused */
    } server;
    struct {
        int32_t max_running;
        int32_t max_tokens_per_step;
        int32_t prefill_chunk;
    } batching;
    struct {
        int32_t context_length; /* 0: the model's training context */
        cfg_budget budget_bytes;
        cfg_kv_type type;
        cfg_tristate prefix_cache; /* reuse cached prompt blocks; auto: on */
        cfg_budget
            prefix_cache_bytes; /* unheld cached blocks at most; auto: what KV memory holds */
    } kv;
    struct {
        cfg_budget host_bytes;
        cfg_budget device_bytes;
        cfg_cache_policy policy;
        int miss_policy;  /* model_miss_policy: auto, copy, cpu */
        int host_pinning; /* cache_pinning: auto, tier, ring */
        uint64_t staging_bytes;
        int staging_threads; /* 0: auto */
    } cache;
    struct {
        cfg_predictor_kind kind;
        int32_t lookahead;          /* layers ahead */
        int32_t width;              /* guesses per token; 0: the model's top-k */
        int32_t prefetch_threshold; /* percent; 0: auto */
    } predictor;
    struct {
        int32_t queue_depth;
        cfg_tristate direct;
    } io;
    struct {
        int32_t threads; /* 0: all online CPUs */
        cfg_backend backend;
        cfg_tristate graphs; /* replay decode steps as captured graphs; auto: on */
    } compute;
    struct {
        cfg_tristate enabled;
        int32_t device; /* CUDA device index; -1: no GPU */
    } gpu;
    struct {
        cfg_log_level level;
        cfg_log_format format;
    } log;
    bool model_name_derived_; /* private: model.name came from model.path, not from the user */
} cfg;

/* Fills *c with the defaults (overwriting it: call on an uninitialised or freed cfg). */
int cfg_defaults(cfg *c, char *err, size_t err_size);

/* Applies a JSON document read from path.  Errors start with the path. */
int cfg_load_file(cfg *c, const char *path, char *err, size_t err_size);

/* Applies a JSON document held in memory; origin names it in errors (a file name or NULL). */
int cfg_load_string(cfg *c, const char *json, size_t len, const char *origin, char *err,
                    size_t err_size);

/* Applies "section.key=value": the value is text parsed as the key's type (strings need no
 * quotes; a list takes "a,b,c" or a JSON array; an empty value clears a nullable string). */
int cfg_set(cfg *c, const char *assignment, char *err, size_t err_size);

/* Checks ranges and cross-key rules; derives model.name.  0 when the cfg is ready to use. */
int cfg_validate(cfg *c, char *err, size_t err_size);

/* The effective config as indented JSON that cfg_load_string() reads back to the same cfg:
 * every key, sizes and durations in their shortest exact unit.  malloc'd; NULL on ENOMEM. */
char *cfg_to_json(const cfg *c);

/* Deep copy of src into *dst (uninitialised).  0 or -ENOMEM (then *dst is zeroed). */
int cfg_copy(cfg *dst, const cfg *src);

void cfg_free(cfg *c);

/* The bytes a budget grants: AUTO gives min(want, total) (everything wanted, as far as the tier
 * holds it), PERCENT gives that share of want, BYTES the bytes asked for, even when more than
 * want or total (the caller decides whether that is an error). */
uint64_t cfg_budget_resolve(const cfg_budget *b, uint64_t want, uint64_t total);

/* Text forms shared with the CLI and tests.  Parsers take the whole string and return 0,
 * -EINVAL (malformed: message says why) or -ERANGE (overflow). */
int cfg_parse_size(const char *text, uint64_t *bytes, char *err, size_t err_size);
int cfg_parse_duration_ms(const char *text, uint64_t *ms, char *err, size_t err_size);
int cfg_parse_budget(const char *text, cfg_budget *b, char *err, size_t err_size);
/* Shortest exact forms ("16KiB", "1500B", "30s", "auto", "25%"); they parse back equal. */
void cfg_format_size(uint64_t bytes, char *out, size_t out_size);
void cfg_format_duration_ms(uint64_t ms, char *out, size_t out_size);
void cfg_format_budget(const cfg_budget *b, char *out, size_t out_size);

const char *cfg_cache_policy_name(cfg_cache_policy p);
const char *cfg_predictor_kind_name(cfg_predictor_kind k);
const char *cfg_backend_name(cfg_backend b);
const char *cfg_log_level_name(cfg_log_level l);
const char *cfg_log_format_name(cfg_log_format f);

#endif
