/*
 * The expert reader: io_uring over the model file, O_DIRECT where the file system allows it.
 *
 * Why this shape: an MoE decode step misses a handful of experts of a few MiB each, all known
 * at once when the router has run, so what matters is having every read of a layer in flight
 * together (queue depth) and not copying through the page cache (O_DIRECT), which would also
 * make the process' memory use unbounded in practice.  O_DIRECT is refused by some file
 * systems (tmpfs, some FUSE), at open or at the first read: either way we reopen buffered and
 * say so once.  Where io_uring cannot be set up (old kernels, seccomp in containers) reads
 * are synchronous preads, also said once; results are the same, only the overlap is lost.
 *
 * Short reads are resumed from where they stopped (buffered, so that an offset that is no
 * longer block-aligned is still legal); EINTR/EAGAIN are resubmitted.
 */
#include "cache/cache_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <liburing.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

enum { DIRECT_ALIGN = 4096, MAX_ATTEMPTS = 16, MAX_REG = 64 };
#define REG_PIECE ((size_t)1 << 30) /* the kernel's limit for one registered buffer */

typedef struct io_op {
    uint64_t tag;
    uint64_t offset;
    uint8_t *dst;
    uint32_t len;
    uint32_t need;
    uint32_t done;    /* bytes already read */
    uint32_t attempts;
    bool in_use;
    bool used_direct; /* the last submission went through the O_DIRECT descriptor */
} io_op;

struct cache__io {
    int fd_direct;   /* -1 when O_DIRECT was refused or not asked for */
    int fd_buffered; /* for resumed short reads and after O_DIRECT was refused */
    bool direct;     /* reads go through fd_direct */
    bool uring;
    uint64_t file_size;
    struct io_uring ring;
    uint32_t depth;
    uint32_t in_flight;
    uint32_t queued; /* prepared but not yet submitted */
    io_op *ops;
    /* pread fallback: completed reads waiting for reap() */
    uint32_t n_sync_done;
    uint64_t *sync_tag;
    int *sync_res;
    cache__log log;
    void *log_user;
    int (*fault)(void *user, uint64_t offset, uint32_t len);
    void *fault_user;
    const char *path;
    uint8_t *reg_base; /* registered buffers: REG_PIECE-sized pieces from reg_base */
    size_t reg_bytes;
};

static void say(cache__io *io, const char *fmt, const char *detail)
{
    char msg[512];
    snprintf(msg, sizeof msg, fmt, io->path, detail);
    if (io->log)
        io->log(io->log_user, msg);
    else
        fprintf(stderr, "%s\n", msg);
}

int cache__io_open(cache__io **out, const cache_opts *opts, char *err, size_t err_size)
{
    const char *path = opts->path;
    cache_direct direct = opts->direct;
    *out = NULL;
    cache__io *io = calloc(1, sizeof *io);
    if (!io) {
        snprintf(err, err_size, "out of memory");
        return -ENOMEM;
    }
    io->fd_direct = io->fd_buffered = -1;
    io->log = opts->log;
    io->log_user = opts->log_user;
    io->fault = opts->fault;
    io->fault_user = opts->fault_user;
    io->path = path;
    io->depth = opts->queue_depth ? opts->queue_depth : 32;
    int rc = 0;
    io->fd_buffered = open(path, O_RDONLY | O_CLOEXEC);
    if (io->fd_buffered < 0) {
        rc = -errno;
        snprintf(err, err_size, "cannot open %s: %s", path, strerror(errno));
        goto fail;
    }
    struct stat st;
    if (fstat(io->fd_buffered, &st) != 0) {
        rc = -errno;
        snprintf(err, err_size, "cannot stat %s: %s", path, strerror(errno));
        goto fail;
    }
    io->file_size = (uint64_t)st.st_size;
    if (direct != CACHE_DIRECT_OFF) {
        io->fd_direct = open(path, O_RDONLY | O_CLOEXEC | O_DIRECT);
        if (io->fd_direct >= 0) {
            io->direct = true;
        } else if (direct == CACHE_DIRECT_ON) {
            rc = -errno;
            snprintf(err, err_size, "O_DIRECT refused for %s (io.direct is true): %s", path,
                     strerror(errno));
            goto fail;
        } else {
            say(io, "%s: O_DIRECT refused (%s): reading experts through the page cache",
                strerror(errno));
        }
    }

    io->ops = calloc(io->depth, sizeof *io->ops);
    io->sync_tag = calloc(io->depth, sizeof *io->sync_tag);
    io->sync_res = calloc(io->depth, sizeof *io->sync_res);
    if (!io->ops || !io->sync_tag || !io->sync_res) {
        rc = -ENOMEM;
        snprintf(err, err_size, "out of memory");
        goto fail;
    }
    int urc = io_uring_queue_init(io->depth, &io->ring, 0);
    if (urc == 0) {
        io->uring = true;
    } else {
        say(io, "%s: io_uring unavailable (%s): reading experts with pread", strerror(-urc));
    }
    *out = io;
    return 0;
fail:
    cache__io_close(&io);
    return rc;
}

void cache__io_close(cache__io **iop)
{
    cache__io *io = *iop;
    if (!io) return;
    *iop = NULL;
    if (io->uring) {
        /* Reads still in flight write into memory the caller is about to free: wait for them. */
        while (io->in_flight > 0) {
            struct io_uring_cqe *cqe;
            if (io->queued) {
                (void)io_uring_submit(&io->ring);
                io->queued = 0;
            }
            if (io_uring_wait_cqe(&io->ring, &cqe) != 0) break;
            io_uring_cqe_seen(&io->ring, cqe);
            io->in_flight--;
        }
        io_uring_queue_exit(&io->ring);
    }
    if (io->fd_direct >= 0) close(io->fd_direct);
    if (io->fd_buffered >= 0) close(io->fd_buffered);
    free(io->ops);
    free(io->sync_tag);
    free(io->sync_res);
    free(io);
}

void cache__io_register(cache__io *io, void *base, size_t bytes)
{
    if (!io->uring || !bytes) return;
    struct iovec iov[MAX_REG];
    size_t n = (bytes + REG_PIECE - 1) / REG_PIECE;
    if (n > MAX_REG) return;
    for (size_t i = 0; i < n; i++) {
        size_t off = i * REG_PIECE;
        iov[i] = (struct iovec){(uint8_t *)base + off, bytes - off < REG_PIECE ? bytes - off : REG_PIECE};
    }
    int rc = io_uring_register_buffers(&io->ring, iov, (unsigned)n);
    if (rc) {
        say(io, "%s: cannot register the expert arena with io_uring (%s): unregistered reads",
            strerror(-rc));
        return;
    }
    io->reg_base = base;
    io->reg_bytes = bytes;
}

uint32_t cache__io_align(const cache__io *io)
{
    return io->direct ? DIRECT_ALIGN : 1;
}
bool cache__io_direct(const cache__io *io)
{
    return io->direct;
}
bool cache__io_uring(const cache__io *io)
{
    return io->uring;
}
uint64_t cache__io_file_size(const cache__io *io)
{
    return io->file_size;
}
bool cache__io_has_room(const cache__io *io)
{
    return io->in_flight < io->depth && io->n_sync_done < io->depth;
}
uint32_t cache__io_in_flight(const cache__io *io)
{
    return io->in_flight + io->n_sync_done;
}

/* Synchronous read of the rest of an op with the buffered descriptor. */
static int read_rest(cache__io *io, io_op *op)
{
    while (op->done < op->need) {
        int fd = io->direct && op->done == 0 ? io->fd_direct : io->fd_buffered;
        ssize_t got = pread(fd, op->dst + op->done, op->len - op->done,
                            (off_t)(op->offset + op->done));
        if (got < 0) {
            if (errno == EINTR || errno == EAGAIN) continue;
            if (errno == EINVAL && fd == io->fd_direct) {
                say(io, "%s: O_DIRECT reads refused (%s): reading experts through the page cache",
                    strerror(EINVAL));
                io->direct = false;
                continue;
            }
            return -errno;
        }
        if (got == 0) return -ENODATA;
        op->done += (uint32_t)got;
    }
    return 0;
}

static void prep(cache__io *io, io_op *op)
{
    struct io_uring_sqe *sqe = io_uring_get_sqe(&io->ring);
    if (!sqe) { /* the ring is as deep as ops[]: cannot happen; submit and retry */
        (void)io_uring_submit(&io->ring);
        io->queued = 0;
        sqe = io_uring_get_sqe(&io->ring);
    }
    /* A resumed read continues at an offset that may not be block-aligned: buffered. */
    op->used_direct = io->direct && op->done == 0;
    int fd = op->used_direct ? io->fd_direct : io->fd_buffered;
    uint8_t *dst = op->dst + op->done;
    size_t rel = (size_t)(dst - io->reg_base);
    size_t len = op->len - op->done;
    if (io->reg_base && dst >= io->reg_base && rel + len <= io->reg_bytes &&
        rel / REG_PIECE == (rel + len - 1) / REG_PIECE)
        io_uring_prep_read_fixed(sqe, fd, dst, (unsigned)len, op->offset + op->done,
                                 (int)(rel / REG_PIECE));
    else
        io_uring_prep_read(sqe, fd, dst, (unsigned)len, op->offset + op->done);
    io_uring_sqe_set_data(sqe, op);
    io->queued++;
}

int cache__io_submit(cache__io *io, uint64_t tag, uint64_t offset, void *dst, uint32_t len,
                     uint32_t need)
{
    if (!cache__io_has_room(io)) return -EBUSY;
    if (!io->uring) {
        io_op op = {.tag = tag, .offset = offset, .dst = dst, .len = len, .need = need};
        int res = read_rest(io, &op);
        if (io->fault && res == 0) res = io->fault(io->fault_user, offset, len);
        io->sync_tag[io->n_sync_done] = tag;
        io->sync_res[io->n_sync_done] = res;
        io->n_sync_done++;
        return 0;
    }
    io_op *op = NULL;
    for (uint32_t i = 0; i < io->depth && !op; i++)
        if (!io->ops[i].in_use) op = &io->ops[i];
    if (!op) return -EBUSY;
    *op = (io_op){.tag = tag, .offset = offset, .dst = dst, .len = len, .need = need,
                  .in_use = true};
    prep(io, op);
    io->in_flight++;
    return 0;
}

int cache__io_flush(cache__io *io)
{
    if (!io->uring || !io->queued) return 0;
    int rc = io_uring_submit(&io->ring);
    if (rc < 0) return rc;
    io->queued = 0;
    return 0;
}

/* One completion: finished (returns true with *result) or resubmitted (false). */
static bool complete(cache__io *io, io_op *op, int res, int *result)
{
    if (res == -EINTR || res == -EAGAIN) {
        if (++op->attempts < MAX_ATTEMPTS) {
            prep(io, op);
            return false;
        }
        *result = res;
        return true;
    }
    if (res == -EINVAL && op->used_direct) {
        /* Some file systems accept O_DIRECT at open and refuse the read. */
        if (io->direct)
            say(io, "%s: O_DIRECT reads refused (%s): reading experts through the page cache",
                strerror(EINVAL));
        io->direct = false;
        prep(io, op);
        return false;
    }
    if (res >= 0 && io->fault && op->done == 0) {
        int injected = io->fault(io->fault_user, op->offset, op->len);
        if (injected < 0) res = injected;
    }
    if (res < 0) {
        *result = res;
        return true;
    }
    op->done += (uint32_t)res;
    if (op->done >= op->need) {
        *result = 0;
        return true;
    }
    if (res == 0) {
        *result = -ENODATA;
        return true;
    }
    prep(io, op); /* short read: resume */
    return false;
}

int cache__io_reap(cache__io *io, bool wait, cache__io_done done, void *user)
{
    int n = 0;
    if (!io->uring) {
        for (uint32_t i = 0; i < io->n_sync_done; i++) done(user, io->sync_tag[i], io->sync_res[i]);
        n = (int)io->n_sync_done;
        io->n_sync_done = 0;
        return n;
    }
    int rc = cache__io_flush(io);
    if (rc) return rc;
    for (;;) {
        struct io_uring_cqe *cqe = NULL;
        if (wait && n == 0 && io->in_flight > 0) {
            rc = io_uring_wait_cqe(&io->ring, &cqe);
            if (rc == -EINTR) continue;
            if (rc) return rc;
        } else if (io_uring_peek_cqe(&io->ring, &cqe) != 0) {
            break;
        }
        io_op *op = io_uring_cqe_get_data(cqe);
        int res = cqe->res, result = 0;
        io_uring_cqe_seen(&io->ring, cqe);
        if (complete(io, op, res, &result)) {
            op->in_use = false;
            io->in_flight--;
            done(user, op->tag, result);
            n++;
        }
        if ((rc = cache__io_flush(io))) return rc;
    }
    return n;
}
