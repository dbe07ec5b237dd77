/*
 * Test models: generated once per build tree by tools/gen_model.py (seeded, so every run and
 * every test program gets the same bytes) and cached in $MOE_BUILD_ROOT/test-models.  Test
 * programs running in parallel each write a temporary file and rename it into place.
 */
#ifndef MOE_TEST_MODELS_H
#define MOE_TEST_MODELS_H

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static inline const char *test_env_or(const char *name, const char *fallback)
{
    const char *v = getenv(name);
    return v && *v ? v : fallback;
}

/* `gen_args` are gen_model.py's arguments (shell words); `name` the cache file's stem. */
static inline void test_model_file(const char *name, const char *gen_args, char *path,
                                   size_t path_size)
{
    char dir[512];
    snprintf(dir, sizeof dir, "%s/test-models", test_env_or("MOE_BUILD_ROOT", "."));
    mkdir(dir, 0755);
    snprintf(path, path_size, "%.511s/%.200s.gguf", dir, name);
    struct stat st;
    if (stat(path, &st) == 0) return;
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "'%s' '%s/tools/gen_model.py' %s -o '%s.%d' >/dev/null && mv '%s.%d' '%s'",
             test_env_or("MOE_PYTHON", "python3"), test_env_or("MOE_SOURCE_ROOT", "."), gen_args,
             path, (int)getpid(), path, (int)getpid(), path);
    int rc = system(cmd);
    ck_assert_msg(rc != -1 && WIFEXITED(rc) && WEXITSTATUS(rc) == 0, "model generation failed: %s",
                  cmd);
}

#endif
