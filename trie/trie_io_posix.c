/* trie/trie_io_posix.c - the POSIX backend of struct trie_io: one system call per operation,
 * EINTR retried and short transfers continued here and nowhere else. Stateless and thread-safe. */
#include "trie/trie_io.h"
#include "common/kv_assert.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#define POSIX_IOV_MAX 64 /* iovecs handled per pwritev call; longer lists are written in slices */

static int posix_openat(void *ctx, int dirfd, const char *name, int flags, mode_t mode, int *fd)
{
    (void)ctx;
    for (;;) {
        int r = openat(dirfd, name, flags | O_CLOEXEC, mode);
        if (r >= 0) {
            *fd = r;
            return 0;
        }
        if (errno != EINTR)
            return errno;
    }
}

static int posix_close(void *ctx, int fd)
{
    (void)ctx;
    /* Linux releases the descriptor even when close reports EINTR: never retry. */
    if (close(fd) != 0 && errno != EINTR)
        return errno;
    return 0;
}

static int posix_pread(void *ctx, int fd, void *buf, size_t len, uint64_t off, size_t *nread)
{
    (void)ctx;
    size_t done = 0;
    while (done < len) {
        ssize_t r = pread(fd, (char *)buf + done, len - done, (off_t)(off + done));
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return errno;
        }
        if (r == 0)
            break;
        done += (size_t)r;
    }
    *nread = done;
    return 0;
}

static int posix_fdatasync(void *ctx, int fd)
{
    (void)ctx;
    /* Never retried after a failure other than EINTR: the kernel may have dropped the dirty pages
     * already, so a second call could report success for data that is gone. */
    for (;;) {
        if (fdatasync(fd) == 0)
            return 0;
        if (errno != EINTR)
            return errno;
    }
}

/* Writes iov[0..iovcnt) at off completely, advancing through short writes. */
static int posix_write_all(int fd, const struct iovec *iov, int iovcnt, uint64_t off)
{
    struct iovec local[POSIX_IOV_MAX];
    int i = 0;
    size_t skip = 0; /* bytes of iov[i] already written */
    while (i < iovcnt) {
        int n = 0;
        for (int j = i; j < iovcnt && n < POSIX_IOV_MAX; j++, n++) {
            local[n] = iov[j];
            if (j == i) {
                local[n].iov_base = (char *)local[n].iov_base + skip;
                local[n].iov_len -= skip;
            }
        }
        ssize_t w = pwritev(fd, local, n, (off_t)off);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return errno;
        }
        if (w == 0)
            return EIO; /* a regular file never accepts zero bytes without an error */
        off += (uint64_t)w;
        size_t left = (size_t)w;
        while (i < iovcnt && left >= iov[i].iov_len - skip) {
            left -= iov[i].iov_len - skip;
            skip = 0;
            i++;
        }
        skip += left;
    }
    return 0;
}

static int posix_pwritev(void *ctx, int fd, const struct iovec *iov, int iovcnt, uint64_t off, int sync)
{
    int rc = posix_write_all(fd, iov, iovcnt, off);
    if (rc == 0 && sync)
        rc = posix_fdatasync(ctx, fd);
    return rc;
}

static int posix_ftruncate(void *ctx, int fd, uint64_t len)
{
    (void)ctx;
    for (;;) {
        if (ftruncate(fd, (off_t)len) == 0)
            return 0;
        if (errno != EINTR)
            return errno;
    }
}

static int posix_fsize(void *ctx, int fd, uint64_t *size)
{
    (void)ctx;
    struct stat st;
    if (fstat(fd, &st) != 0)
        return errno;
    *size = (uint64_t)st.st_size;
    return 0;
}

static int posix_renameat(void *ctx, int dirfd, const char *from, const char *to)
{
    (void)ctx;
    return renameat(dirfd, from, dirfd, to) == 0 ? 0 : errno;
}

static int posix_unlinkat(void *ctx, int dirfd, const char *name)
{
    (void)ctx;
    return unlinkat(dirfd, name, 0) == 0 ? 0 : errno;
}

static int posix_fsync_dir(void *ctx, int dirfd)
{
    (void)ctx;
    for (;;) {
        if (fsync(dirfd) == 0)
            return 0;
        if (errno != EINTR)
            return errno;
    }
}

static int posix_submit(void *ctx, struct trie_io_op *ops, size_t n)
{
    int first = 0;
    for (size_t i = 0; i < n; i++) {
        struct trie_io_op *op = &ops[i];
        op->res = op->iov ? posix_pwritev(ctx, op->fd, op->iov, op->iovcnt, op->off, op->sync)
                          : posix_fdatasync(ctx, op->fd);
        if (op->res != 0 && first == 0)
            first = op->res;
    }
    return first;
}

static void posix_destroy(void *ctx)
{
    (void)ctx;
}

static const struct trie_io trie_io_posix_table = {
    .name = "posix",
    .ctx = NULL,
    .openat = posix_openat,
    .close = posix_close,
    .pread = posix_pread,
    .pwritev = posix_pwritev,
    .fdatasync = posix_fdatasync,
    .ftruncate = posix_ftruncate,
    .fsize = posix_fsize,
    .renameat = posix_renameat,
    .unlinkat = posix_unlinkat,
    .fsync_dir = posix_fsync_dir,
    .submit = posix_submit,
    .destroy = posix_destroy,
};

const struct trie_io *trie_io_posix(void)
{
    return &trie_io_posix_table;
}
