/* trie/trie_io.h - the engine's file-system seam.
 *
 * Every file-system call the engine makes goes through one struct trie_io: io_uring (liburing;
 * writes and fsyncs are submitted in batches and run in the kernel, linked so a write and its
 * fdatasync cost one submission), plain POSIX, or the fault-injecting table the crash tests wrap
 * around POSIX. The engine picks io_uring at open and falls back to POSIX by itself when
 * io_uring_setup is refused (containers under Docker 25+'s seccomp profile, hardened hosts,
 * kernel.io_uring_disabled).
 *
 * Conventions: every function returns 0 or a positive errno (never -1 with errno); EINTR is
 * retried inside, short reads and writes are continued inside, so a caller sees either the whole
 * transfer or an error. Names are relative to a directory fd, so the data directory is resolved
 * once at open. Reads are not batched: a partition load is one large pread of a file that is
 * usually in the page cache, which a plain system call serves best. */
#ifndef TRIE_IO_H
#define TRIE_IO_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/uio.h>

/* One operation of a batch (trie_io.submit): a full write of iov at off, an fdatasync, or both
 * in order (write then sync). res is set per operation. */
struct trie_io_op {
    int fd;
    const struct iovec *iov; /* NULL for a sync-only operation; borrowed until submit returns */
    int iovcnt;
    uint64_t off;
    int sync; /* fdatasync after the write (or alone when iov is NULL) */
    int res;  /* out: 0 or errno */
};

struct trie_io {
    const char *name; /* "io_uring", "posix", "fault(posix)" */
    void *ctx;
    int (*openat)(void *ctx, int dirfd, const char *name, int flags, mode_t mode, int *fd);
    int (*close)(void *ctx, int fd);
    /* Reads up to len bytes at off; *nread < len only at end of file. */
    int (*pread)(void *ctx, int fd, void *buf, size_t len, uint64_t off, size_t *nread);
    /* Writes all iovcnt buffers contiguously at off, then fdatasyncs when sync is set. */
    int (*pwritev)(void *ctx, int fd, const struct iovec *iov, int iovcnt, uint64_t off, int sync);
    int (*fdatasync)(void *ctx, int fd);
    int (*ftruncate)(void *ctx, int fd, uint64_t len);
    int (*fsize)(void *ctx, int fd, uint64_t *size);
    int (*renameat)(void *ctx, int dirfd, const char *from, const char *to);
    int (*unlinkat)(void *ctx, int dirfd, const char *name);
    /* fsync of the directory itself: makes creations, renames and unlinks in it durable. */
    int (*fsync_dir)(void *ctx, int dirfd);
    /* Runs n independent operations (io_uring: one submission) and waits for all. Returns the
     * first error among them, 0 when all succeeded; each op's own result is in op->res. */
    int (*submit)(void *ctx, struct trie_io_op *ops, size_t n);
    void (*destroy)(void *ctx);
};

/* The POSIX backend; a static table, never destroyed. */
const struct trie_io *trie_io_posix(void);

/* Creates an io_uring backend. Returns 0, or the errno io_uring_setup gave (ENOSYS, EPERM, ...)
 * so the caller can fall back and say why. Release with io->destroy(io->ctx), then free(io). */
int trie_io_uring_create(struct trie_io **out);

#endif
