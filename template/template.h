/*
 * template — chat templates: the Jinja subset that real models' `tokenizer.chat_template`s use,
 * rendered byte for byte as Hugging Face's apply_chat_template renders them with Python jinja2
 * (ImmutableSandboxedEnvironment, trim_blocks and lstrip_blocks on, `raise_exception`,
 * `strftime_now` and HF's own `tojson` — ensure_ascii off, keys in insertion order).
 *
 * Contract
 * - chat_template_create() lexes and parses the whole source once.  Anything outside the subset
 *   (include, extends, call blocks, unknown tags or filters, ...) is refused here, with -ENOTSUP
 *   and a message naming the construct and its line; a syntax error gives -EINVAL and its line.
 *   A template that parses renders or fails only for reasons that depend on the context (a
 *   raise_exception, a type error, undefined attribute access) — as jinja2 would.
 * - A parsed chat_template is immutable: any number of threads may render it at once.  Each
 *   render owns its own memory (one arena, freed before the call returns).
 * - chat_template_render() takes the template's globals as a cJSON object (messages,
 *   add_generation_prompt, bos_token, eos_token, tools, ...) and writes a malloc'd,
 *   NUL-terminated string to *text (the caller frees it) and its length to *len (len may be
 *   NULL; opts may be NULL).  On failure
 *   *text is NULL and err holds the message; for raise_exception(msg) the message is msg itself.
 *   Errors: -EINVAL (the template failed on this context), -ENOMEM, -ELOOP (nesting too deep).
 * - Value semantics follow Python and jinja2: `True`/`False`/`None`, float repr, list, tuple
 *   and dict repr for `|string`, code-point lengths and slices, jinja2's scoping (a `set` in a
 *   loop iteration stays there; macros are closures), generators from select/map (always true,
 *   no length, consumed by iterating), Markup from `|safe` (`+` escapes the other side).
 *   Known limits: cJSON cannot tell 1.0 from 1, so an integral JSON number becomes an int;
 *   case mapping covers Latin, Greek and Cyrillic; str.format without format specs; `%`
 *   formatting with %s %r %d %i only.
 * - chat_template_builtin() returns the source of a built-in template by name (static storage)
 *   or NULL; chat_template_builtin_names() lists the names for messages.
 */
#ifndef MOE_TEMPLATE_H
#define MOE_TEMPLATE_H

#include <cjson/cJSON.h>
#include <stddef.h>

typedef struct chat_template chat_template;

typedef struct chat_template_render_opts {
    /* What strftime_now(fmt) formats: "YYYY-MM-DD" or "YYYY-MM-DDTHH:MM:SS" (also with a
     * space); NULL: the current local time. */
    const char *date_string;
} chat_template_render_opts;

int chat_template_create(chat_template **out, const char *src, size_t len, char *err,
                         size_t err_size);

int chat_template_render(const chat_template *t, const cJSON *context,
                         const chat_template_render_opts *opts, char **text, size_t *len, char *err,
                         size_t err_size);

void chat_template_destroy(chat_template **t);
/* The template's Jinja source as given to create (NUL-terminated; NULL for a NULL template). */
const char *chat_template_source(const chat_template *t);

const char *chat_template_builtin(const char *name);
const char *chat_template_builtin_names(void);

#endif
