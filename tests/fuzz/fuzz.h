/*
 * fuzz — the entry point every target in tests/fuzz/ defines, and what the targets share.
 *
 * Each fuzz_<name>.c defines LLVMFuzzerTestOneInput(): one input in, every byte of it allowed,
 * and the code under test must neither crash, nor leak, nor trip a sanitizer, whatever it is.
 * Built with -Dfuzz=true (clang) the target links libFuzzer's main and is guided by coverage;
 * in every other build it links replay.c, a main() that runs the committed corpus and
 * regression inputs once, so that each crash ever found stays a test in the gcc builds too.
 * Targets keep state that is costly to build (a server, a vocabulary) in statics made on the
 * first input: an input must leave that state as it found it.
 */
#ifndef MOE_TESTS_FUZZ_H
#define MOE_TESTS_FUZZ_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* A path that opens to a file holding data followed by pad_bytes zero bytes (a hole: costs no
 * memory while nobody reads it).  One in-memory file (memfd) per process, rewritten by each
 * call; the path stays the same.  NULL when the file cannot be written. */
const char *fuzz_file(const uint8_t *data, size_t size, uint64_t pad_bytes);

/* An invariant of the code under test is broken: report it and abort, which libFuzzer (and the
 * replay driver's caller) reports as a crash with the input that caused it. */
#define FUZZ_CHECK(cond)                                                                           \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: fuzz check failed: %s\n", __FILE__, __LINE__, #cond);          \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

#endif
