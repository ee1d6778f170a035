/* trie/trie_wal.c - the commit log: segment files in <dir>/wal/, named by the sequence number of
 * their first batch ("%016llx.log"), each a run of WAL records (trie_int.h).
 *
 * Design notes
 *   1. Only the commit leader (which holds maint_mu) and, at open and close, the opening thread
 *      write or sync the current segment; the checkpointer and the interval syncer take maint_mu
 *      to sync it. So the segment fd needs no lock of its own. wal.mu guards only the segment
 *      list, which the checkpointer trims and log readers walk.
 *   2. Sequence numbers are contiguous across segments: a gap or a repeat is corruption.
 *   3. At open, an invalid record in the last segment with no valid record after it is a torn
 *      tail (a write the crash cut short): it is cut off and logged. Anything else invalid is
 *      KV_E_CORRUPT and the store refuses to open: dropping it would silently lose batches that
 *      may have been acknowledged.
 *   4. A failed append is cut back off the segment. If that cut fails, or the append included an
 *      fdatasync (whose failure leaves the on-disk state unknown), the store turns read-only.
 *   5. A new segment is fsynced into its directory before any batch in it is acknowledged. */
#include "trie/trie_int.h"
#include "common/kv_assert.h"
#include "common/kv_crc.h"
#include "common/kv_log.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define WAL_NAME_LEN 20 /* 16 hex digits + ".log" */

static void seg_name(uint64_t first_seq, char out[WAL_NAME_LEN + 1])
{
    snprintf(out, WAL_NAME_LEN + 1, "%016" PRIx64 ".log", first_seq);
}

static bool seg_parse(const char *name, uint64_t *first_seq)
{
    if (strlen(name) != WAL_NAME_LEN || strcmp(name + 16, ".log") != 0)
        return false;
    uint64_t v = 0;
    for (int i = 0; i < 16; i++) {
        char c = name[i];
        int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
        if (d < 0)
            return false;
        v = v << 4 | (uint64_t)d;
    }
    *first_seq = v;
    return true;
}

static void segs_push(struct trie_wal *w, uint64_t first_seq, uint64_t bytes)
{
    if (w->nsegs == w->cap_segs) {
        w->cap_segs = w->cap_segs ? w->cap_segs * 2 : 8;
        w->segs = kv_realloc(w->segs, (size_t)w->cap_segs * sizeof *w->segs);
    }
    w->segs[w->nsegs].first_seq = first_seq;
    w->segs[w->nsegs].bytes = bytes;
    w->nsegs++;
}

static int seg_cmp(const void *a, const void *b)
{
    uint64_t x = ((const struct trie_wal_seg *)a)->first_seq, y = ((const struct trie_wal_seg *)b)->first_seq;
    return (x > y) - (x < y);
}

/* Lists the segment files; the list is sorted by first sequence number. */
static int list_segments(struct triekv *db)
{
    int fd = dup(db->waldirfd);
    if (fd < 0)
        return errno;
    DIR *d = fdopendir(fd);
    if (d == NULL) {
        int e = errno;
        close(fd);
        return e;
    }
    rewinddir(d);
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        uint64_t first;
        if (seg_parse(de->d_name, &first))
            segs_push(&db->wal, first, 0);
    }
    closedir(d);
    if (db->wal.nsegs > 1)
        qsort(db->wal.segs, db->wal.nsegs, sizeof *db->wal.segs, seg_cmp);
    return KV_OK;
}

/* A whole, valid record at p: header, bounds and payload checksum. */
static bool record_valid(const uint8_t *p, uint64_t avail, struct trie_wal_hdr *h)
{
    if (avail < TRIE_WAL_HDR || trie_wal_hdr_decode(p, h) != KV_OK)
        return false;
    if (h->payload_len > avail - TRIE_WAL_HDR)
        return false;
    return kv_crc32c(0, p + TRIE_WAL_HDR, h->payload_len) == h->payload_crc;
}

static bool valid_record_after(const uint8_t *buf, uint64_t from, uint64_t size)
{
    for (uint64_t off = from; off + TRIE_WAL_HDR <= size; off++) {
        const uint8_t *hit = memchr(buf + off, (int)(TRIE_WAL_MAGIC & 0xff), size - off);
        if (hit == NULL)
            return false;
        off = (uint64_t)(hit - buf);
        struct trie_wal_hdr h;
        if (record_valid(buf + off, size - off, &h))
            return true;
    }
    return false;
}

/* State of a replay across segments. */
struct replay {
    uint64_t from_seq; /* batches <= this are already in the partition logs */
    uint64_t prev;     /* last sequence number seen, 0 before the first */
    uint64_t applied;
    trie_replay_fn apply;
};

/* Replays one segment; cuts its torn tail when it is the last one. */
static int replay_segment(struct triekv *db, uint32_t idx, struct replay *r)
{
    struct trie_wal_seg *seg = &db->wal.segs[idx];
    bool last = idx + 1 == db->wal.nsegs;
    char name[WAL_NAME_LEN + 1];
    seg_name(seg->first_seq, name);
    uint8_t *buf;
    uint64_t size, off = 0;
    int rc = trie_file_read_all(db, db->waldirfd, name, &buf, &size);
    if (rc != 0)
        return rc;
    while (off < size) {
        struct trie_wal_hdr h;
        if (!record_valid(buf + off, size - off, &h)) {
            if (!last || valid_record_after(buf, off + 1, size)) {
                trie_log(db, KV_LOG_ERROR,
                         "commit log %s: invalid record at offset %" PRIu64 " of %" PRIu64
                         "; refusing to drop what follows it",
                         name, off, size);
                rc = KV_E_CORRUPT;
                break;
            }
            rc = trie_file_truncate(db, db->waldirfd, name, off);
            if (rc == 0)
                trie_log(db, KV_LOG_WARN,
                         "cut torn tail of commit log %s: %" PRIu64 " of %" PRIu64 " bytes dropped", name,
                         size - off, size);
            size = off;
            break;
        }
        bool seq_ok = r->prev == 0 ? h.seq <= r->from_seq + 1 : h.seq == r->prev + 1;
        if (!seq_ok || (off == 0 && h.seq != seg->first_seq)) {
            trie_log(db, KV_LOG_ERROR, "commit log %s: batch %" PRIu64 " out of sequence (after %" PRIu64 ")",
                     name, h.seq, r->prev ? r->prev : r->from_seq);
            rc = KV_E_CORRUPT;
            break;
        }
        trie_epoch_note(db, h.seq, h.epoch);
        if (h.seq > r->from_seq) {
            rc = r->apply(db, h.seq, buf + off + TRIE_WAL_HDR, h.payload_len, h.op_count);
            if (rc != KV_OK)
                break;
            r->applied++;
        }
        r->prev = h.seq;
        off += TRIE_WAL_HDR + (uint64_t)h.payload_len;
    }
    free(buf);
    if (rc == KV_OK && size == 0 && !last) {
        trie_log(db, KV_LOG_ERROR, "commit log %s: empty segment before the last one", name);
        rc = KV_E_CORRUPT;
    }
    seg->bytes = size;
    return rc;
}

static int open_wal_dir(struct triekv *db)
{
    if (mkdirat(db->dirfd, TRIE_WAL_DIR, 0755) == 0) {
        int rc = db->io->fsync_dir(db->io->ctx, db->dirfd);
        if (rc != 0)
            return rc;
    } else if (errno != EEXIST) {
        return errno;
    }
    db->waldirfd = openat(db->dirfd, TRIE_WAL_DIR, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    return db->waldirfd < 0 ? errno : KV_OK;
}

int trie_wal_recover(struct triekv *db, uint64_t from_seq, trie_replay_fn apply, uint64_t *last_seq)
{
    struct trie_wal *w = &db->wal;
    w->fd = -1;
    int rc = open_wal_dir(db);
    if (rc == KV_OK)
        rc = list_segments(db);
    struct replay r = {.from_seq = from_seq, .apply = apply};
    for (uint32_t i = 0; rc == KV_OK && i < w->nsegs; i++)
        rc = replay_segment(db, i, &r);
    if (rc != KV_OK)
        return rc;
    if (r.prev != 0 && r.prev < from_seq)
        trie_log(db, KV_LOG_WARN, "commit log ends at batch %" PRIu64 " before the checkpoint at %" PRIu64,
                 r.prev, from_seq);
    *last_seq = r.prev > from_seq ? r.prev : from_seq;
    w->written_seq = *last_seq;
    atomic_store(&w->synced_seq, *last_seq);
    uint64_t total = 0;
    for (uint32_t i = 0; i < w->nsegs; i++)
        total += w->segs[i].bytes;
    atomic_store(&w->total_bytes, total);
    if (r.applied)
        trie_log(db, KV_LOG_INFO,
                 "replayed %" PRIu64 " batches from the commit log (%" PRIu64 "..%" PRIu64 ")", r.applied,
                 from_seq + 1, *last_seq);
    if (w->nsegs == 0)
        return KV_OK;
    char name[WAL_NAME_LEN + 1];
    seg_name(w->segs[w->nsegs - 1].first_seq, name);
    w->end = w->segs[w->nsegs - 1].bytes;
    return db->io->openat(db->io->ctx, db->waldirfd, name, O_WRONLY, 0, &w->fd);
}

/* Starts segment first_seq after syncing and closing the current one. */
static int rotate(struct triekv *db, uint64_t first_seq)
{
    struct trie_wal *w = &db->wal;
    int rc = trie_wal_sync(db);
    if (rc != 0)
        return rc;
    if (w->fd >= 0) {
        db->io->close(db->io->ctx, w->fd);
        w->fd = -1;
    }
    char name[WAL_NAME_LEN + 1];
    seg_name(first_seq, name);
    int fd;
    rc = db->io->openat(db->io->ctx, db->waldirfd, name, O_WRONLY | O_CREAT | O_EXCL, 0644, &fd);
    if (rc != 0)
        return rc;
    rc = db->io->fsync_dir(db->io->ctx, db->waldirfd);
    if (rc != 0) { /* the segment may or may not survive a crash: stop here */
        db->io->close(db->io->ctx, fd);
        trie_set_read_only(db, rc, "cannot sync the commit log directory");
        return rc;
    }
    pthread_mutex_lock(&w->mu);
    segs_push(w, first_seq, 0);
    pthread_mutex_unlock(&w->mu);
    w->fd = fd;
    w->end = 0;
    return KV_OK;
}

int trie_wal_append(struct triekv *db, struct iovec *iov, int iovcnt, uint64_t first, uint64_t last,
                    bool sync)
{
    struct trie_wal *w = &db->wal;
    uint64_t len = 0;
    for (int i = 0; i < iovcnt; i++)
        len += iov[i].iov_len;
    if (w->fd < 0 || (w->end > 0 && w->end + len > db->opt.wal_segment_bytes)) {
        int rc = rotate(db, first);
        if (rc != 0)
            return rc;
    }
    int rc = db->io->pwritev(db->io->ctx, w->fd, iov, iovcnt, w->end, sync);
    if (rc != 0) {
        int cut = db->io->ftruncate(db->io->ctx, w->fd, w->end);
        if (cut != 0 || sync)
            trie_set_read_only(db, rc,
                               sync ? "commit log write or fdatasync failed"
                                    : "cannot cut back a failed "
                                      "commit log write");
        return rc;
    }
    w->end += len;
    pthread_mutex_lock(&w->mu);
    w->segs[w->nsegs - 1].bytes = w->end;
    pthread_mutex_unlock(&w->mu);
    atomic_fetch_add(&w->total_bytes, len);
    atomic_fetch_add(&w->bytes_since_ckpt, len);
    w->written_seq = last;
    if (sync) {
        atomic_store(&w->synced_seq, last);
        atomic_fetch_add(&w->syncs, 1);
        w->unsynced_batches = 0;
        w->dirty = false;
    } else {
        w->unsynced_batches += last - first + 1;
        w->dirty = true;
    }
    return KV_OK;
}

int trie_wal_sync(struct triekv *db)
{
    struct trie_wal *w = &db->wal;
    if (!w->dirty || w->fd < 0)
        return KV_OK;
    int rc = db->io->fdatasync(db->io->ctx, w->fd);
    if (rc != 0) {
        trie_set_read_only(db, rc, "commit log fdatasync failed");
        return rc;
    }
    atomic_store(&w->synced_seq, w->written_seq);
    atomic_fetch_add(&w->syncs, 1);
    w->unsynced_batches = 0;
    w->dirty = false;
    return KV_OK;
}

int trie_wal_drop_before(struct triekv *db, uint64_t keep_from)
{
    struct trie_wal *w = &db->wal;
    uint64_t *drop = NULL;
    uint32_t ndrop = 0;
    pthread_mutex_lock(&w->mu);
    /* segment i holds batches [first_i, first_{i+1}); the last one is never dropped */
    while (ndrop + 1 < w->nsegs && w->segs[ndrop + 1].first_seq <= keep_from)
        ndrop++;
    if (ndrop) {
        drop = kv_malloc(ndrop * sizeof *drop);
        uint64_t bytes = 0;
        for (uint32_t i = 0; i < ndrop; i++) {
            drop[i] = w->segs[i].first_seq;
            bytes += w->segs[i].bytes;
        }
        memmove(w->segs, w->segs + ndrop, (w->nsegs - ndrop) * sizeof *w->segs);
        w->nsegs -= ndrop;
        atomic_fetch_sub(&w->total_bytes, bytes);
    }
    pthread_mutex_unlock(&w->mu);
    int rc = KV_OK;
    for (uint32_t i = 0; i < ndrop; i++) {
        char name[WAL_NAME_LEN + 1];
        seg_name(drop[i], name);
        int e = db->io->unlinkat(db->io->ctx, db->waldirfd, name);
        if (e != 0 && e != ENOENT && rc == KV_OK)
            rc = e;
    }
    free(drop);
    if (ndrop && rc == KV_OK)
        rc = db->io->fsync_dir(db->io->ctx, db->waldirfd);
    return rc;
}

void trie_wal_close(struct triekv *db)
{
    struct trie_wal *w = &db->wal;
    if (w->fd >= 0)
        db->io->close(db->io->ctx, w->fd);
    w->fd = -1;
    if (db->waldirfd >= 0)
        close(db->waldirfd);
    db->waldirfd = -1;
    free(w->segs);
    w->segs = NULL;
    w->nsegs = w->cap_segs = 0;
}
