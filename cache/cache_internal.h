/*
 * Shared between the cache's files: the file reader (io.c) that cache.c drives.  Not public.
 *
 * The reader owns the file descriptors and the io_uring.  A read is (tag, offset, dst, len,
 * need): `len` bytes are asked for, the first `need` of them must arrive (the rest is alignment
 * padding that may run past the end of the file).  Short reads are resumed and interrupted ones
 * resubmitted inside the reader; the completion callback sees one final result per read: 0, or
 * a negative errno (-ENODATA when the file ended before `need` bytes).
 */
#ifndef MOE_CACHE_INTERNAL_H
#define MOE_CACHE_INTERNAL_H

#include "cache/cache.h"

typedef struct cache__io cache__io;
typedef void (*cache__io_done)(void *user, uint64_t tag, int result);
typedef void (*cache__log)(void *user, const char *msg);

int cache__io_open(cache__io **out, const cache_opts *opts, char *err, size_t err_size);
void cache__io_close(cache__io **io);
/* Registers [base, base + bytes) with the ring so that reads into it skip pinning pages per
 * read; where the kernel refuses (memlock limits), reads stay unregistered, said once. */
void cache__io_register(cache__io *io, void *base, size_t bytes);
/* O_DIRECT needs dst, offset and len aligned to this; 1 when reading buffered. */
uint32_t cache__io_align(const cache__io *io);
bool cache__io_direct(const cache__io *io);
bool cache__io_uring(const cache__io *io);
uint64_t cache__io_file_size(const cache__io *io);
/* Room for more reads: submit only while this is true. */
bool cache__io_has_room(const cache__io *io);
uint32_t cache__io_in_flight(const cache__io *io);
/* Queues a read; cache__io_flush() hands queued reads to the kernel in one system call. */
int cache__io_submit(cache__io *io, uint64_t tag, uint64_t offset, void *dst, uint32_t len,
                     uint32_t need);
int cache__io_flush(cache__io *io);
/* Calls done() for completed reads; with wait, blocks until at least one completes.  Returns
 * the number of reads finished or a negative errno from the ring itself. */
int cache__io_reap(cache__io *io, bool wait, cache__io_done done, void *user);

#endif
