/*
 * fuzz_file — inputs as files, for the readers that take a path (gguf_open maps a file).
 * A memfd rather than a file on disk: nothing to clean up after a crash, no disk traffic at
 * thousands of inputs a second, and /proc/self/fd/N opens it like any regular file.
 */
#include "fuzz.h"

#include <sys/mman.h>
#include <unistd.h>

const char *fuzz_file(const uint8_t *data, size_t size, uint64_t pad_bytes)
{
    static int fd = -1;
    static char path[64];
    if (fd < 0) {
        fd = memfd_create("moeserve-fuzz", MFD_CLOEXEC);
        if (fd < 0) return NULL;
        snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    }
    if (ftruncate(fd, 0) != 0) return NULL;
    for (size_t done = 0; done < size;) {
        ssize_t n = pwrite(fd, data + done, size - done, (off_t)done);
        if (n <= 0) return NULL;
        done += (size_t)n;
    }
    if (pad_bytes && ftruncate(fd, (off_t)(size + pad_bytes)) != 0) return NULL;
    return path;
}
