/*
 * toolcall — OpenAI tool calls over a model's own chat template: which output format the
 * template teaches the model, a streaming parser that splits generated text into content and
 * calls, and a guide that keeps the output well-formed calls (tool_choice "required" or a named
 * function).
 *
 * Contract
 * - tool_format_detect() reads a chat template's source.  "<tool_call>" → TOOL_FORMAT_HERMES
 *   (Qwen2.5, Qwen3, Hermes: <tool_call>\n{"name": …, "arguments": {…}}\n</tool_call>),
 *   "[TOOL_CALLS]" → TOOL_FORMAT_MISTRAL ([TOOL_CALLS][{"name": …, "arguments": {…}}, …], or the
 *   newer [TOOL_CALLS]name[ARGS]{…}), "<|python_tag|>" → TOOL_FORMAT_LLAMA3 (the whole answer
 *   one {"name": …, "parameters": {…}}).  A template that never mentions tools → GENERIC: the
 *   caller describes the tools in a system message (tool_generic_system) and the model answers
 *   in the Hermes form.  Any other template that renders tools → UNSUPPORTED: its answers are in
 *   a form this parser does not read, and requests with tools are refused.
 * - tool_parser: feed() text as it is decoded; the sink receives content (never a byte of a
 *   marker or of a call), the start of each call (its index from 0 and the function's name) and
 *   fragments of its arguments whose concatenation is the arguments' JSON text.  What could still
 *   be the start of a marker is held back until it is decided.  finish() at the end of the
 *   output: held text is released as content, and a call that never became one (no name) is
 *   given back as the content it was.
 * - tool_spec / tool_guide: the set of calls a forced answer may contain (every tool, or the
 *   named one; one call or, with parallel_tool_calls, several), each call's arguments held to the
 *   function's parameters by the JSON-schema guide (sampling/json_schema.h; a keyword it cannot
 *   enforce refuses the request with -EINVAL and a message).  The guide works on bytes like the
 *   schema guide: feed() false at the first byte no accepted answer continues with; done() when
 *   the answer may end; closing() the shortest text that ends it.  A guide is a value of
 *   tool_guide_size(spec) bytes (one schema guide per allowed function; tool_guide_copy for
 *   tentative feeds) tied to its spec, which must outlive it.
 * - Memory: create/destroy pairs; every function is safe on NULL where it destroys.
 */
#ifndef MOE_ENGINE_TOOLCALL_H
#define MOE_ENGINE_TOOLCALL_H

#include "sampling/json_schema.h"

#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stddef.h>

typedef enum tool_format {
    TOOL_FORMAT_GENERIC = 0,
    TOOL_FORMAT_HERMES,
    TOOL_FORMAT_MISTRAL,
    TOOL_FORMAT_LLAMA3,
    TOOL_FORMAT_UNSUPPORTED,
} tool_format;

tool_format tool_format_detect(const char *template_source);
const char *tool_format_name(tool_format f);

/* The system text that teaches a GENERIC model the tools (OpenAI's tools array) and the Hermes
 * answer form; malloc'd, NULL when out of memory. */
char *tool_generic_system(const cJSON *tools);
/* One call as a GENERIC model's history shows it: <tool_call>\n{"name": …, "arguments": …}\n
 * </tool_call>; malloc'd. */
char *tool_generic_call_text(const char *name, const cJSON *arguments);

/* Whether a special (control) token with this text belongs to the format's answers: it is
 * then decoded into the text the parser reads, and a forced answer may use it. */
bool tool_marker_token(tool_format f, const char *text, size_t len);

/* ---- parsing ----------------------------------------------------------------------------------
 */

typedef struct tool_sink {
    void *user;
    void (*content)(void *user, const char *text, size_t len);
    void (*call_begin)(void *user, int index, const char *name);
    void (*call_args)(void *user, int index, const char *text, size_t len);
} tool_sink;

typedef struct tool_parser tool_parser;

int tool_parser_create(tool_parser **out, tool_format f);
void tool_parser_destroy(tool_parser **p);
/* -ENOMEM when a buffer could not grow (what was fed is then lost). */
int tool_parser_feed(tool_parser *p, const char *text, size_t len, const tool_sink *sink);
int tool_parser_finish(tool_parser *p, const tool_sink *sink);
int tool_parser_calls(const tool_parser *p);

/* ---- forced calls -----------------------------------------------------------------------------
 */

typedef struct tool_spec tool_spec;

/* tools: OpenAI's tools array (validated by the caller); only: the one function allowed, or NULL
 * for any of them; parallel: more than one call allowed. */
int tool_spec_create(tool_spec **out, tool_format f, const cJSON *tools, const char *only,
                     bool parallel, char *err, size_t err_size);
void tool_spec_destroy(tool_spec **s);

enum { TOOL_GUIDE_MAX_FUNCS = 64 };

typedef struct tool_guide {
    const tool_spec *spec;
    int stage;
    size_t pos;
    bool last; /* no call after the current one */
    bool end_alive, next_alive;
    int n_alive;
    int alive[TOOL_GUIDE_MAX_FUNCS]; /* indices of the functions whose guides still match */
    schema_guide g[];                /* one per function of the spec */
} tool_guide;

/* Bytes of a guide for spec s (allocate that much; a copy needs as much as its source). */
size_t tool_guide_size(const tool_spec *s);
void tool_guide_init(tool_guide *g, const tool_spec *s);
void tool_guide_copy(tool_guide *dst, const tool_guide *src);
bool tool_guide_feed(tool_guide *g, const char *bytes, size_t n);
bool tool_guide_done(const tool_guide *g);
/* More text may follow done() (another call); false when the answer must end there. */
bool tool_guide_may_continue(const tool_guide *g);
/* No further call may start (max_tokens is running out): the answer ends after this one. */
void tool_guide_last_call(tool_guide *g);
int tool_guide_closing(const tool_guide *g, char *out, size_t size);

#endif
