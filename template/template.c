/*
 * Chat templates: the public entry points (create, destroy) and the built-in templates a
 * configuration may name instead of the model's own.  The work is done by the lexer
 * (template_lex.c), the parser (template_parse.c), the evaluator (template_eval.c) and the
 * library of values, filters and methods (template_lib.c).
 *
 * The built-ins are the formats of the model families moeserve serves, written as their
 * published templates are, so that a model whose own template is refused still gets the
 * prompt format it was trained with.
 */
#include "template/template_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int chat_template_create(chat_template **out, const char *src, size_t len, char *err,
                         size_t err_size)
{
    *out = NULL;
    chat_template *t = calloc(1, sizeof *t);
    tpl_tok *toks = NULL;
    size_t n_toks = 0;
    if (!t) {
        snprintf(err, err_size, "out of memory");
        return -ENOMEM;
    }
    arena_init(&t->arena, TPL_ARENA_BLOCK);
    int rc = tpl__lex(&t->arena, src, len, &toks, &n_toks, err, err_size);
    if (rc == 0) rc = tpl__parse(&t->arena, toks, n_toks, &t->root, err, err_size);
    if (rc == 0 && !(t->source = arena_strndup(&t->arena, src, len))) {
        snprintf(err, err_size, "out of memory");
        rc = -ENOMEM;
    }
    free(toks);
    if (rc < 0) {
        arena_release(&t->arena);
        free(t);
        return rc;
    }
    *out = t;
    return 0;
}

const char *chat_template_source(const chat_template *t)
{
    return t ? t->source : NULL;
}

void chat_template_destroy(chat_template **t)
{
    if (!t || !*t) return;
    arena_release(&(*t)->arena);
    free(*t);
    *t = NULL;
}

/* ---- built-in templates --------------------------------------------------------------------- */

/* clang-format off */
static const struct builtin {
    const char *name;
    const char *source;
} builtins[] = {
    {"chatml", /* OpenHermes / Qwen-style ChatML, as the generator's test models carry it */
     "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + "
     "'\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"},
    {"mistral", /* Mixtral-8x7B-Instruct-v0.1 */
     "{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
     "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
     "{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}"
     "{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token}}"
     "{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %}"},
    {"mistral-v7", /* Mistral-Large-Instruct-2411: system prompts allowed */
     "{{ bos_token }}{% for message in messages %}{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + "
     "'[/INST]' }}{% elif message['role'] == 'system' %}{{ '[SYSTEM_PROMPT] ' + message['content'] + '[/SYSTEM_PROMPT]' "
     "}}{% elif message['role'] == 'assistant' %}{{ ' ' + message['content'] + eos_token }}{% else %}"
     "{{ raise_exception('Only user, system and assistant roles are supported!') }}{% endif %}{% endfor %}"},
    {"llama2",
     "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}{% set system_message = "
     "messages[0]['content'] %}{% else %}{% set loop_messages = messages %}{% set system_message = false %}{% endif %}"
     "{% for message in loop_messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
     "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
     "{% if loop.index0 == 0 and system_message != false %}{% set content = '<<SYS>>\\n' + system_message + "
     "'\\n<</SYS>>\\n\\n' + message['content'] %}{% else %}{% set content = message['content'] %}{% endif %}"
     "{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}"
     "{% elif message['role'] == 'assistant' %}{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %}"},
    {"llama3",
     "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + "
     "message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}"
     "{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}"
     "{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}"},
    {"qwen3", /* Qwen3 without tools: <think> blocks of earlier turns dropped, enable_thinking honoured */
     "{%- if messages[0].role == 'system' %}{{- '<|im_start|>system\\n' + messages[0].content + '<|im_end|>\\n' }}"
     "{%- endif %}{%- set ns = namespace(multi_step_tool=true, last_query_index=messages|length - 1) %}"
     "{%- for message in messages[::-1] %}{%- set index = (messages|length - 1) - loop.index0 %}"
     "{%- if ns.multi_step_tool and message.role == 'user' %}{%- set ns.multi_step_tool = false %}"
     "{%- set ns.last_query_index = index %}{%- endif %}{%- endfor %}{%- for message in messages %}"
     "{%- if (message.role == 'user') or (message.role == 'system' and not loop.first) %}"
     "{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}"
     "{%- elif message.role == 'assistant' %}{%- set content = message.content %}{%- set reasoning_content = '' %}"
     "{%- if '</think>' in message.content %}{%- set content = message.content.split('</think>')[-1].lstrip('\\n') %}"
     "{%- set reasoning_content = message.content.split('</think>')[0].rstrip('\\n').split('<think>')[-1].lstrip('\\n') %}"
     "{%- endif %}{%- if loop.index0 > ns.last_query_index and (loop.last or reasoning_content) %}"
     "{{- '<|im_start|>' + message.role + '\\n<think>\\n' + reasoning_content.strip('\\n') + '\\n</think>\\n\\n' + "
     "content.lstrip('\\n') }}{%- else %}{{- '<|im_start|>' + message.role + '\\n' + content }}{%- endif %}"
     "{{- '<|im_end|>\\n' }}{%- endif %}{%- endfor %}{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}"
     "{%- if enable_thinking is defined and enable_thinking is false %}{{- '<think>\\n\\n</think>\\n\\n' }}{%- endif %}"
     "{%- endif %}"},
    {"deepseek3", /* DeepSeek-V3 without tools */
     "{% set ns = namespace(system_prompt='', is_first_sp=true) %}{%- for message in messages %}"
     "{%- if message['role'] == 'system' %}{%- if ns.is_first_sp %}{% set ns.system_prompt = ns.system_prompt + "
     "message['content'] %}{% set ns.is_first_sp = false %}{%- else %}{% set ns.system_prompt = ns.system_prompt + "
     "'\\n\\n' + message['content'] %}{%- endif %}{%- endif %}{%- endfor %}{{ bos_token }}{{ ns.system_prompt }}"
     "{%- for message in messages %}{%- if message['role'] == 'user' %}{{'<｜User｜>' + "
     "message['content']}}{%- elif message['role'] == 'assistant' %}{{'<｜Assistant｜>' + "
     "message['content'] + '<｜end▁of▁sentence｜>'}}{%- endif %}"
     "{%- endfor -%}{% if add_generation_prompt %}{{'<｜Assistant｜>'}}{% endif %}"},
    {"olmoe", /* Tulu-style, as OLMoE-Instruct */
     "{{ bos_token }}{% for message in messages %}{% if message['role'] == 'system' %}{{ '<|system|>\\n' + "
     "message['content'] + '\\n' }}{% elif message['role'] == 'user' %}{{ '<|user|>\\n' + message['content'] + '\\n' }}"
     "{% elif message['role'] == 'assistant' %}{% if not loop.last %}{{ '<|assistant|>\\n'  + message['content'] + "
     "eos_token + '\\n' }}{% else %}{{ '<|assistant|>\\n'  + message['content'] + eos_token }}{% endif %}{% endif %}"
     "{% if loop.last and add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}{% endfor %}"},
};
/* clang-format on */

const char *chat_template_builtin(const char *name)
{
    for (size_t i = 0; name && i < sizeof builtins / sizeof builtins[0]; i++)
        if (!strcmp(builtins[i].name, name)) return builtins[i].source;
    return NULL;
}

const char *chat_template_builtin_names(void)
{
    return "chatml, mistral, mistral-v7, llama2, llama3, qwen3, deepseek3, olmoe";
}
