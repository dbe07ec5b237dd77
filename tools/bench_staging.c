/*
 * bench_staging — how fast experts reach the device from a pageable host tier through the
 * pinned staging ring (cache/stage.c, cache/device.c), against the physical limits, as a
 * markdown table.
 *
 *   bench_staging [--backend sim|cuda] [--mib M] [--chunk-mib C] [--threads 1,2,4]
 *
 * The limits, measured in the same run: the copy link from pinned memory (kern_copy_seconds,
 * what a registered host tier gets) and one thread's memcpy from the pageable source into the
 * ring.  Each row stages M MiB (default 1024) from a pageable buffer into a 256 MiB ring, C MiB
 * (default 8) at a time by T threads, each chunk's copy to the device queued as soon as it is
 * staged, as the device tier does; the time runs until the last copy has landed.  Best of three.
 */
#include "cache/cache_internal.h"
#include "kernels/kernels.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Seconds to stage and copy `total` bytes once, best of `reps`; < 0 on a backend error. */
static double staged_seconds(kern_backend *b, cache__stager *st, const uint8_t *src, size_t total,
                             uint8_t *ring, size_t ring_bytes, uint8_t *dev, size_t chunk, int reps)
{
    double best = -1.0;
    char err[256];
    for (int r = 0; r < reps; r++) {
        double t0 = now_s();
        size_t head = 0;
        for (size_t off = 0; off < total; off += chunk) {
            size_t n = total - off < chunk ? total - off : chunk;
            if (head + n > ring_bytes) {
                /* the ring wraps: the copies still reading its start must have landed */
                if (kern_sync(b, err, sizeof err)) return -1.0;
                head = 0;
            }
            cache__stage(st, ring + head, src + off, n);
            if (kern_copy(b, KERN_STREAM_COPY, dev + head, ring + head, n, KERN_COPY_TO_DEVICE))
                return -1.0;
            head += n;
        }
        if (kern_sync(b, err, sizeof err)) return -1.0;
        double t = now_s() - t0;
        if (best < 0 || t < best) best = t;
    }
    return best;
}

int main(int argc, char **argv)
{
    size_t mib = 1024, chunk_mib = 8, ring_bytes = (size_t)256 << 20;
    char threads_list[64] = "1,2,4";
    kern_backend_kind kind = KERN_BACKEND_SIM;
    for (int i = 1; i < argc; i++) {
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(argv[i], "--mib") && v)
            mib = strtoul(argv[++i], NULL, 10);
        else if (!strcmp(argv[i], "--chunk-mib") && v)
            chunk_mib = strtoul(argv[++i], NULL, 10);
        else if (!strcmp(argv[i], "--threads") && v)
            snprintf(threads_list, sizeof threads_list, "%s", argv[++i]);
        else if (!strcmp(argv[i], "--backend") && v) {
            if (kern_backend_kind_parse(argv[++i], &kind) || kind == KERN_BACKEND_CPU) {
                fprintf(stderr, "bench_staging: --backend sim|cuda\n");
                return 2;
            }
        } else {
            fprintf(stderr, "usage: bench_staging [--backend sim|cuda] [--mib M] [--chunk-mib C] "
                            "[--threads 1,2,4]\n");
            return 2;
        }
    }
    if (mib == 0 || chunk_mib == 0 || chunk_mib * 2 > ring_bytes >> 20) {
        fprintf(stderr, "bench_staging: --mib must be positive and --chunk-mib at most 128\n");
        return 2;
    }
    size_t total = mib << 20, chunk = chunk_mib << 20;
    kern_open_opts o = kern_open_opts_default();
    o.kind = kind;
    kern_backend *b = NULL;
    char err[256];
    if (kern_open(&b, &o, err, sizeof err)) {
        fprintf(stderr, "bench_staging: %s\n", err);
        return 1;
    }
    uint8_t *src = malloc(total), *ring = NULL, *dev = NULL;
    int rc = src ? 0 : -ENOMEM;
    if (!rc) rc = kern_alloc(b, KERN_MEM_HOST_PINNED, ring_bytes, (void **)&ring);
    if (!rc) rc = kern_alloc(b, KERN_MEM_DEVICE, ring_bytes, (void **)&dev);
    if (rc) {
        fprintf(stderr, "bench_staging: out of memory for %zu MiB\n", mib);
        goto out;
    }
    memset(src, 1, total); /* every page touched: no first-touch faults in the timings */

    double link = kern_copy_seconds(b, KERN_COPY_TO_DEVICE, chunk, 5);
    double link_gbs = link > 0 ? (double)chunk / link / 1e9 : 0.0;
    double t_mem = -1.0;
    for (int r = 0; r < 3; r++) {
        double t0 = now_s();
        for (size_t off = 0; off < total; off += chunk) {
            size_t n = total - off < chunk ? total - off : chunk;
            memcpy(ring + off % ring_bytes, src + off, n);
        }
        double t = now_s() - t0;
        if (t_mem < 0 || t < t_mem) t_mem = t;
    }
    double mem_gbs = (double)total / t_mem / 1e9;
    printf("backend %s; pinned copy link %.1f GB/s (%zu MiB copies); one thread's memcpy from "
           "pageable memory %.1f GB/s\n\n",
           b->name, link_gbs, chunk_mib, mem_gbs);
    printf("| threads | chunk | staged + copied | of the link | of one memcpy |\n");
    printf("|---|---|---|---|---|\n");
    for (char *tok = strtok(threads_list, ","); tok; tok = strtok(NULL, ",")) {
        int t = atoi(tok);
        cache__stager *st = NULL;
        if (t < 1 || (t > 1 && cache__stager_open(&st, t))) {
            fprintf(stderr, "bench_staging: cannot start %s threads\n", tok);
            rc = 1;
            break;
        }
        double s = staged_seconds(b, st, src, total, ring, ring_bytes, dev, chunk, 3);
        cache__stager_close(st);
        if (s < 0) {
            char msg[256];
            (void)kern_sync(b, msg, sizeof msg);
            fprintf(stderr, "bench_staging: the backend failed: %s\n", msg);
            rc = 1;
            break;
        }
        double gbs = (double)total / s / 1e9;
        printf("| %d | %zu MiB | %.1f GB/s | %.0f%% | %.2fx |\n", t, chunk_mib, gbs,
               link_gbs > 0 ? 100.0 * gbs / link_gbs : 0.0, gbs / mem_gbs);
    }
out:
    kern_free(b, KERN_MEM_DEVICE, dev);
    kern_free(b, KERN_MEM_HOST_PINNED, ring);
    free(src);
    kern_close(&b);
    return rc ? 1 : 0;
}
