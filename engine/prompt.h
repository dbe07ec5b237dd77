/*
 * prompt — from what a user sends (chat messages or plain text) to the prompt's token ids.
 *
 * Contract
 * - prompt_template_create() picks the chat template a model is served with: the one named by
 *   the caller (a built-in name such as "chatml", or a file holding Jinja source), else the
 *   file's tokenizer.chat_template.  A template outside the supported Jinja subset is refused
 *   here, at load, with a message naming the construct and the built-in names to use instead.
 *   A file without a template and no override gets *out = NULL and 0: chat requests are then
 *   refused, plain completions still work.  The template is the caller's, freed with
 *   chat_template_destroy().
 * - prompt_render_chat() renders a JSON array of {"role", "content"} messages the way Hugging
 *   Face's apply_chat_template does (bos_token / eos_token from the vocabulary, the
 *   generation prompt appended).
 * - prompt_tokenize() turns rendered chat text or a completion prompt into ids: special tokens
 *   written in the text are parsed as themselves (templates write <|im_start|> and the like),
 *   and BOS is added when the vocabulary asks for it unless the text already starts with it.
 * - Strings and arrays handed back are malloc'd and belong to the caller.  Errors are negative
 *   errno values with a message in the caller's buffer.  All functions are thread-safe on
 *   immutable templates and tokenizers.
 */
#ifndef MOE_PROMPT_H
#define MOE_PROMPT_H

#include "gguf/gguf.h"
#include "template/template.h"
#include "tokenizer/tokenizer.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

int prompt_template_create(chat_template **out, const gguf_file *file, const char *override,
                           char *err, size_t err_size);

int prompt_render_chat(const chat_template *tmpl, const tokenizer *tok, const cJSON *messages,
                       const cJSON *tools, char **text, size_t *len, char *err, size_t err_size);

int prompt_tokenize(const tokenizer *tok, const char *text, size_t len, int32_t **ids,
                    size_t *n_ids, char *err, size_t err_size);

#endif
