/* trie/trie_io_fault.c - the fault-injecting trie_io; see trie_io_fault.h for the model.
 *
 * Everything runs under one mutex: tests care about determinism, not speed. Directories are
 * known by the path of their fd (/proc/self/fd), first seen lazily: at first sight every regular
 * file in one counts as durable with its current content and name. */
#include "trie/trie_io_fault.h"
#include "common/kv_assert.h"
#include "common/kv_buf.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

enum { OP_WRITE, OP_TRUNC };

struct fop {
    int kind;
    uint64_t off; /* write offset, or new length */
    uint8_t *data;
    size_t len;
};

struct finode {
    struct kv_buf durable; /* content at the last fdatasync */
    struct fop *ops;       /* since then, in order */
    size_t nops, cap;
    struct finode *next; /* all inodes, for freeing */
};

struct fname {
    char *name;
    struct finode *ino;
};

struct fmap {
    struct fname *v;
    size_t n, cap;
};

struct fdir {
    char *path;
    struct fmap cur; /* names now */
    struct fmap dur; /* names at the last directory fsync */
    struct fdir *next;
};

struct ffd {
    int fd;
    struct finode *ino;
};

struct fault_io {
    struct trie_io table;
    const struct trie_io *base;
    pthread_mutex_t mu;
    struct fdir *dirs;
    struct finode *inodes;
    struct ffd *fds;
    size_t nfds, capfds;
    uint64_t rng;
    /* fail-Nth */
    unsigned fail_kinds;
    uint64_t fail_nth, fail_count;
    int fail_err;
    bool fail_sticky, fired;
    /* power loss */
    bool crash_armed, crash_after, crashed;
    uint64_t crash_nth, points, points_base;
    uint64_t kind_points[3]; /* fdatasync, directory fsync, rename */
};

static uint64_t frand(struct fault_io *f)
{
    f->rng ^= f->rng >> 12;
    f->rng ^= f->rng << 25;
    f->rng ^= f->rng >> 27;
    return f->rng * 0x2545F4914F6CDD1Dull;
}

/* ---- names and inodes ---------------------------------------------------------------------- */

static struct fname *map_find(struct fmap *m, const char *name)
{
    for (size_t i = 0; i < m->n; i++) {
        if (strcmp(m->v[i].name, name) == 0)
            return &m->v[i];
    }
    return NULL;
}

static void map_set(struct fmap *m, const char *name, struct finode *ino)
{
    struct fname *e = map_find(m, name);
    if (e) {
        e->ino = ino;
        return;
    }
    if (m->n == m->cap) {
        m->cap = m->cap ? m->cap * 2 : 16;
        m->v = kv_realloc(m->v, m->cap * sizeof *m->v);
    }
    m->v[m->n].name = kv_strdup(name);
    m->v[m->n].ino = ino;
    m->n++;
}

static void map_del(struct fmap *m, const char *name)
{
    struct fname *e = map_find(m, name);
    if (e == NULL)
        return;
    free(e->name);
    *e = m->v[--m->n];
}

static void map_free(struct fmap *m)
{
    for (size_t i = 0; i < m->n; i++)
        free(m->v[i].name);
    free(m->v);
    memset(m, 0, sizeof *m);
}

static void map_copy(struct fmap *dst, const struct fmap *src)
{
    map_free(dst);
    for (size_t i = 0; i < src->n; i++)
        map_set(dst, src->v[i].name, src->v[i].ino);
}

static struct finode *inode_new(struct fault_io *f)
{
    struct finode *ino = kv_calloc(1, sizeof *ino);
    ino->next = f->inodes;
    f->inodes = ino;
    return ino;
}

static void inode_op(struct finode *ino, int kind, uint64_t off, const void *data, size_t len)
{
    if (ino->nops == ino->cap) {
        ino->cap = ino->cap ? ino->cap * 2 : 8;
        ino->ops = kv_realloc(ino->ops, ino->cap * sizeof *ino->ops);
    }
    struct fop *op = &ino->ops[ino->nops++];
    op->kind = kind;
    op->off = off;
    op->len = len;
    op->data = len ? kv_memdup(data, len) : NULL;
}

static void apply_op(struct kv_buf *b, const struct fop *op, size_t len)
{
    if (op->kind == OP_TRUNC) {
        if (op->off > b->len) {
            kv_buf_reserve(b, op->off - b->len);
            memset(b->ptr + b->len, 0, op->off - b->len);
        }
        b->len = op->off;
        return;
    }
    uint64_t end = op->off + len;
    if (end > b->len) {
        kv_buf_reserve(b, end - b->len);
        memset(b->ptr + b->len, 0, end - b->len);
        b->len = end;
    }
    if (len)
        memcpy(b->ptr + op->off, op->data, len);
}

static void inode_settle(struct finode *ino)
{
    for (size_t i = 0; i < ino->nops; i++) {
        apply_op(&ino->durable, &ino->ops[i], ino->ops[i].len);
        free(ino->ops[i].data);
    }
    ino->nops = 0;
}

static int read_whole(const char *path, struct kv_buf *out)
{
    FILE *fp = fopen(path, "rb");
    if (fp == NULL)
        return errno;
    char chunk[65536];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, fp)) > 0)
        kv_buf_append(out, chunk, n);
    fclose(fp);
    return 0;
}

static struct fdir *dir_of(struct fault_io *f, int dirfd)
{
    char link[64], path[PATH_MAX];
    snprintf(link, sizeof link, "/proc/self/fd/%d", dirfd);
    ssize_t n = readlink(link, path, sizeof path - 1);
    KV_ASSERT(n > 0);
    path[n] = 0;
    for (struct fdir *d = f->dirs; d; d = d->next) {
        if (strcmp(d->path, path) == 0)
            return d;
    }
    struct fdir *d = kv_calloc(1, sizeof *d);
    d->path = kv_strdup(path);
    d->next = f->dirs;
    f->dirs = d;
    DIR *dp = opendir(path);
    KV_ASSERT(dp != NULL);
    struct dirent *de;
    while ((de = readdir(dp)) != NULL) {
        char full[PATH_MAX + NAME_MAX + 2];
        struct stat st;
        snprintf(full, sizeof full, "%s/%s", path, de->d_name);
        if (lstat(full, &st) != 0 || !S_ISREG(st.st_mode))
            continue;
        struct finode *ino = inode_new(f);
        KV_ASSERT(read_whole(full, &ino->durable) == 0);
        map_set(&d->cur, de->d_name, ino);
        map_set(&d->dur, de->d_name, ino);
    }
    closedir(dp);
    return d;
}

static struct ffd *fd_find(struct fault_io *f, int fd)
{
    for (size_t i = 0; i < f->nfds; i++) {
        if (f->fds[i].fd == fd)
            return &f->fds[i];
    }
    return NULL;
}

/* ---- the power cut --------------------------------------------------------------------------- */

static void write_file(const char *path, const struct kv_buf *b)
{
    FILE *fp = fopen(path, "wb");
    KV_ASSERT(fp != NULL);
    KV_ASSERT(b->len == 0 || fwrite(b->ptr, 1, b->len, fp) == b->len);
    KV_ASSERT(fclose(fp) == 0);
}

/* Resets every known directory to what survives the cut. */
static void cut_power(struct fault_io *f)
{
    for (struct fdir *d = f->dirs; d; d = d->next) {
        /* what each durable name will hold */
        struct kv_buf *content = kv_calloc(d->dur.n ? d->dur.n : 1, sizeof *content);
        for (size_t i = 0; i < d->dur.n; i++) {
            struct finode *ino = d->dur.v[i].ino;
            kv_buf_append(&content[i], ino->durable.ptr, ino->durable.len);
            size_t k = (size_t)(frand(f) % (ino->nops + 1));
            for (size_t j = 0; j < k; j++)
                apply_op(&content[i], &ino->ops[j], ino->ops[j].len);
            if (k < ino->nops && ino->ops[k].kind == OP_WRITE && frand(f) % 2)
                apply_op(&content[i], &ino->ops[k], (size_t)(frand(f) % (ino->ops[k].len + 1)));
        }
        DIR *dp = opendir(d->path);
        KV_ASSERT(dp != NULL);
        struct dirent *de;
        while ((de = readdir(dp)) != NULL) {
            char full[PATH_MAX + NAME_MAX + 2];
            struct stat st;
            snprintf(full, sizeof full, "%s/%s", d->path, de->d_name);
            if (lstat(full, &st) == 0 && S_ISREG(st.st_mode))
                KV_ASSERT(unlink(full) == 0);
        }
        closedir(dp);
        for (size_t i = 0; i < d->dur.n; i++) {
            char full[PATH_MAX + NAME_MAX + 2];
            snprintf(full, sizeof full, "%s/%s", d->path, d->dur.v[i].name);
            write_file(full, &content[i]);
            kv_buf_free(&content[i]);
        }
        free(content);
    }
    f->crashed = true;
}

/* Counts a durability point of a kind; true when power must be cut before it. */
static bool point_before(struct fault_io *f, int kind)
{
    f->points++;
    f->kind_points[kind]++;
    if (f->crash_armed && !f->crash_after && f->points - f->points_base == f->crash_nth) {
        cut_power(f);
        return true;
    }
    return false;
}

static void point_after(struct fault_io *f)
{
    if (f->crash_armed && f->crash_after && f->points - f->points_base == f->crash_nth)
        cut_power(f);
}

static int fail_check(struct fault_io *f, unsigned kind)
{
    if (!(f->fail_kinds & kind))
        return 0;
    f->fail_count++;
    if (f->fail_count == f->fail_nth || (f->fail_sticky && f->fail_count > f->fail_nth)) {
        f->fired = true;
        return f->fail_err;
    }
    return 0;
}

/* ---- the table ------------------------------------------------------------------------------- */

#define F(ctx)  ((struct fault_io *)(ctx))
#define BASE(f) (f)->base

static int f_openat(void *ctx, int dirfd, const char *name, int flags, mode_t mode, int *fd)
{
    struct fault_io *f = F(ctx);
    pthread_mutex_lock(&f->mu);
    int rc = f->crashed ? EIO : 0;
    if (rc == 0 && (flags & O_CREAT))
        rc = fail_check(f, FAULT_CREATE);
    struct fdir *d = rc == 0 ? dir_of(f, dirfd) : NULL;
    if (rc == 0)
        rc = BASE(f)->openat(BASE(f)->ctx, dirfd, name, flags, mode, fd);
    if (rc == 0) {
        struct fname *e = map_find(&d->cur, name);
        struct finode *ino = e ? e->ino : NULL;
        if (ino == NULL) {
            ino = inode_new(f);
            map_set(&d->cur, name, ino);
        } else if (flags & O_TRUNC) {
            inode_op(ino, OP_TRUNC, 0, NULL, 0);
        }
        if (f->nfds == f->capfds) {
            f->capfds = f->capfds ? f->capfds * 2 : 16;
            f->fds = kv_realloc(f->fds, f->capfds * sizeof *f->fds);
        }
        f->fds[f->nfds++] = (struct ffd){*fd, ino};
    }
    pthread_mutex_unlock(&f->mu);
    return rc;
}

static int f_close(void *ctx, int fd)
{
    struct fault_io *f = F(ctx);
    pthread_mutex_lock(&f->mu);
    struct ffd *e = fd_find(f, fd);
    if (e)
        *e = f->fds[--f->nfds];
    int rc = BASE(f)->close(BASE(f)->ctx, fd);
    pthread_mutex_unlock(&f->mu);
    return rc;
}

static int f_pread(void *ctx, int fd, void *buf, size_t len, uint64_t off, size_t *nread)
{
    struct fault_io *f = F(ctx);
    pthread_mutex_lock(&f->mu);
    int rc = f->crashed ? EIO : BASE(f)->pread(BASE(f)->ctx, fd, buf, len, off, nread);
    pthread_mutex_unlock(&f->mu);
    return rc;
}

static int sync_locked(struct fault_io *f, int fd)
{
    if (point_before(f, 0))
        return EIO;
    int rc = fail_check(f, FAULT_SYNC);
    if (rc == 0)
        rc = BASE(f)->fdatasync(BASE(f)->ctx, fd);
    if (rc == 0) {
        struct ffd *e = fd_find(f, fd);
        KV_ASSERT(e != NULL);
        inode_settle(e->ino);
    }
    point_after(f);
    return rc;
}

static int write_locked(struct fault_io *f, int fd, const struct iovec *iov, int iovcnt, uint64_t off,
                        int sync)
{
    if (f->crashed)
        return EIO;
    struct kv_buf all = {0};
    for (int i = 0; i < iovcnt; i++)
        kv_buf_append(&all, iov[i].iov_base, iov[i].iov_len);
    struct ffd *e = fd_find(f, fd);
    KV_ASSERT(e != NULL);
    int rc = fail_check(f, FAULT_WRITE);
    size_t len = rc ? all.len / 2 : all.len; /* a failing write lands halfway, as ENOSPC can */
    struct iovec one = {all.ptr, len};
    int wrc = len ? BASE(f)->pwritev(BASE(f)->ctx, fd, &one, 1, off, 0) : 0;
    if (wrc == 0 && len)
        inode_op(e->ino, OP_WRITE, off, all.ptr, len);
    kv_buf_free(&all);
    if (rc == 0)
        rc = wrc;
    if (rc == 0 && sync)
        rc = sync_locked(f, fd);
    return rc;
}

static int f_pwritev(void *ctx, int fd, const struct iovec *iov, int iovcnt, uint64_t off, int sync)
{
    struct fault_io *f = F(ctx);
    pthread_mutex_lock(&f->mu);
    int rc = write_locked(f, fd, iov, iovcnt, off, sync);
    pthread_mutex_unlock(&f->mu);
    return rc;
}

static int f_fdatasync(void *ctx, int fd)
{
    struct fault_io *f = F(ctx);
    pthread_mutex_lock(&f->mu);
    int rc = f->crashed ? EIO : sync_locked(f, fd);
    pthread_mutex_unlock(&f->mu);
    return rc;
}

static int f_ftruncate(void *ctx, int fd, uint64_t len)
{
    struct fault_io *f = F(ctx);
    pthread_mutex_lock(&f->mu);
    int rc = f->crashed ? EIO : fail_check(f, FAULT_TRUNC);
    if (rc == 0)
        rc = BASE(f)->ftruncate(BASE(f)->ctx, fd, len);
    if (rc == 0) {
        struct ffd *e = fd_find(f, fd);
        KV_ASSERT(e != NULL);
        inode_op(e->ino, OP_TRUNC, len, NULL, 0);
    }
    pthread_mutex_unlock(&f->mu);
    return rc;
}

static int f_fsize(void *ctx, int fd, uint64_t *size)
{
    struct fault_io *f = F(ctx);
    pthread_mutex_lock(&f->mu);
    int rc = f->crashed ? EIO : BASE(f)->fsize(BASE(f)->ctx, fd, size);
    pthread_mutex_unlock(&f->mu);
    return rc;
}

static int f_renameat(void *ctx, int dirfd, const char *from, const char *to)
{
    struct fault_io *f = F(ctx);
    pthread_mutex_lock(&f->mu);
    int rc = f->crashed || point_before(f, 2) ? EIO : 0;
    if (rc == 0)
        rc = fail_check(f, FAULT_RENAME);
    if (rc == 0) {
        struct fdir *d = dir_of(f, dirfd);
        rc = BASE(f)->renameat(BASE(f)->ctx, dirfd, from, to);
        if (rc == 0) {
            struct fname *e = map_find(&d->cur, from);
            KV_ASSERT(e != NULL);
            struct finode *ino = e->ino;
            map_del(&d->cur, from);
            map_set(&d->cur, to, ino);
        }
        point_after(f);
    }
    pthread_mutex_unlock(&f->mu);
    return rc;
}

static int f_unlinkat(void *ctx, int dirfd, const char *name)
{
    struct fault_io *f = F(ctx);
    pthread_mutex_lock(&f->mu);
    int rc = f->crashed ? EIO : fail_check(f, FAULT_UNLINK);
    if (rc == 0) {
        struct fdir *d = dir_of(f, dirfd);
        rc = BASE(f)->unlinkat(BASE(f)->ctx, dirfd, name);
        if (rc == 0)
            map_del(&d->cur, name);
    }
    pthread_mutex_unlock(&f->mu);
    return rc;
}

static int f_fsync_dir(void *ctx, int dirfd)
{
    struct fault_io *f = F(ctx);
    pthread_mutex_lock(&f->mu);
    int rc = f->crashed || point_before(f, 1) ? EIO : 0;
    if (rc == 0)
        rc = fail_check(f, FAULT_DIRSYNC);
    if (rc == 0) {
        struct fdir *d = dir_of(f, dirfd);
        rc = BASE(f)->fsync_dir(BASE(f)->ctx, dirfd);
        if (rc == 0)
            map_copy(&d->dur, &d->cur);
        point_after(f);
    }
    pthread_mutex_unlock(&f->mu);
    return rc;
}

static int f_submit(void *ctx, struct trie_io_op *ops, size_t n)
{
    struct fault_io *f = F(ctx);
    int first = 0;
    pthread_mutex_lock(&f->mu);
    for (size_t i = 0; i < n; i++) {
        ops[i].res = ops[i].iov
                         ? write_locked(f, ops[i].fd, ops[i].iov, ops[i].iovcnt, ops[i].off, ops[i].sync)
                         : (f->crashed ? EIO : sync_locked(f, ops[i].fd));
        if (ops[i].res && first == 0)
            first = ops[i].res;
    }
    pthread_mutex_unlock(&f->mu);
    return first;
}

static void f_destroy(void *ctx)
{
    (void)ctx; /* fault_io_destroy frees the layer */
}

struct fault_io *fault_io_create(const struct trie_io *base, uint64_t seed)
{
    struct fault_io *f = kv_calloc(1, sizeof *f);
    f->base = base;
    f->rng = seed ? seed : 1;
    pthread_mutex_init(&f->mu, NULL);
    f->table = (struct trie_io){
        .name = "fault(posix)",
        .ctx = f,
        .openat = f_openat,
        .close = f_close,
        .pread = f_pread,
        .pwritev = f_pwritev,
        .fdatasync = f_fdatasync,
        .ftruncate = f_ftruncate,
        .fsize = f_fsize,
        .renameat = f_renameat,
        .unlinkat = f_unlinkat,
        .fsync_dir = f_fsync_dir,
        .submit = f_submit,
        .destroy = f_destroy,
    };
    return f;
}

void fault_io_destroy(struct fault_io *f)
{
    if (f == NULL)
        return;
    while (f->dirs) {
        struct fdir *d = f->dirs;
        f->dirs = d->next;
        map_free(&d->cur);
        map_free(&d->dur);
        free(d->path);
        free(d);
    }
    while (f->inodes) {
        struct finode *ino = f->inodes;
        f->inodes = ino->next;
        for (size_t i = 0; i < ino->nops; i++)
            free(ino->ops[i].data);
        free(ino->ops);
        kv_buf_free(&ino->durable);
        free(ino);
    }
    free(f->fds);
    pthread_mutex_destroy(&f->mu);
    free(f);
}

const struct trie_io *fault_io_table(struct fault_io *f)
{
    return &f->table;
}

void fault_io_fail_nth(struct fault_io *f, uint64_t nth, unsigned kinds, int err, bool sticky)
{
    pthread_mutex_lock(&f->mu);
    f->fail_kinds = kinds;
    f->fail_nth = nth;
    f->fail_count = 0;
    f->fail_err = err;
    f->fail_sticky = sticky;
    f->fired = false;
    pthread_mutex_unlock(&f->mu);
}

void fault_io_disarm(struct fault_io *f)
{
    pthread_mutex_lock(&f->mu);
    f->fail_kinds = 0;
    f->crash_armed = false;
    pthread_mutex_unlock(&f->mu);
}

bool fault_io_fired(const struct fault_io *f)
{
    return f->fired;
}

void fault_io_crash_at(struct fault_io *f, uint64_t nth, bool after)
{
    pthread_mutex_lock(&f->mu);
    f->crash_armed = true;
    f->crash_nth = nth;
    f->crash_after = after;
    f->points_base = f->points;
    pthread_mutex_unlock(&f->mu);
}

void fault_io_crash_now(struct fault_io *f)
{
    pthread_mutex_lock(&f->mu);
    if (!f->crashed)
        cut_power(f);
    pthread_mutex_unlock(&f->mu);
}

bool fault_io_crashed(const struct fault_io *f)
{
    return f->crashed;
}

uint64_t fault_io_points(const struct fault_io *f)
{
    return f->points;
}

void fault_io_point_kinds(const struct fault_io *f, uint64_t *syncs, uint64_t *dirsyncs, uint64_t *renames)
{
    *syncs = f->kind_points[0];
    *dirsyncs = f->kind_points[1];
    *renames = f->kind_points[2];
}
