/* trie/trie_repl.c - what replication needs from the engine: reading the commit log from a
 * sequence number, applying shipped records with their own numbers, and a full resync.
 *
 * Reading: a reader holds an open descriptor on one segment and an offset in it, and reads
 * records only up to db->seq (batches published as committed; a record past it may still be cut
 * back after a failed write). Segments are found by name under wal.mu; a reader whose segment is
 * dropped by a checkpoint keeps reading it through its open descriptor, and finds out it fell
 * behind only when the next segment is gone too (KV_E_LOG_TRUNCATED).
 *
 * Applying: each record becomes a batch whose sequence number is given, committed through the
 * normal pipeline (so it is in the replica's own commit log, durable per its fsync mode), with
 * the version guard on: an operation older than the key's current version (a snapshot item loaded
 * later than the batch) is skipped.
 *
 * Resync, as a state machine on disk:
 *   STORE  -- begin: write RESYNC (tmp, fdatasync, rename, dir fsync), then delete the partition
 *             logs, the checkpoint and the commit log --> LOADING
 *   LOADING -- put: items go into pages, pinned dirty, with their versions
 *   LOADING -- end(seq, epoch): the store's number becomes seq and its epoch history starts at
 *             (epoch, seq); a checkpoint writes every partition log, EPOCHS and CHECKPOINT=seq,
 *             then RESYNC is deleted (dir fsync) --> STORE
 * Open with RESYNC present (a crash while LOADING): everything but the marker is deleted first,
 * then the marker, so the store comes up empty at seq 0 and its main resyncs it again. */
#include "trie/trie_int.h"
#include "common/kv_assert.h"
#include "common/kv_crc.h"
#include "common/kv_log.h"
#include "common/kv_time.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define READ_CHUNK (1u << 20) /* bytes read from a segment at a time */

/* ---- waiting for a sequence number ----------------------------------------------------------- */

int triekv_wait_seq(struct triekv *db, uint64_t seq, uint32_t timeout_ms)
{
    if (atomic_load_explicit(&db->seq, memory_order_acquire) >= seq)
        return KV_OK;
    struct timespec dl = kv_deadline_after_ms(timeout_ms);
    int rc = KV_OK;
    pthread_mutex_lock(&db->seq_mu);
    atomic_fetch_add(&db->seq_waiters, 1);
    while (atomic_load_explicit(&db->seq, memory_order_acquire) < seq) {
        if (pthread_cond_timedwait(&db->seq_cv, &db->seq_mu, &dl) == ETIMEDOUT) {
            rc = atomic_load(&db->seq) >= seq ? KV_OK : KV_E_TIMEOUT;
            break;
        }
    }
    atomic_fetch_sub(&db->seq_waiters, 1);
    pthread_mutex_unlock(&db->seq_mu);
    return rc;
}

uint64_t triekv_log_first(struct triekv *db)
{
    pthread_mutex_lock(&db->wal.mu);
    uint64_t first = db->wal.nsegs ? db->wal.segs[0].first_seq : atomic_load(&db->seq) + 1;
    pthread_mutex_unlock(&db->wal.mu);
    return first;
}

/* ---- the reader -------------------------------------------------------------------------------- */

struct triekv_log_reader {
    struct triekv *db;
    uint64_t next;      /* the next batch to return */
    uint64_t seg_first; /* the open segment's name */
    int fd;
    uint64_t off;      /* offset of the next record in the segment */
    struct kv_buf buf; /* bytes of the segment from buf_off on */
    uint64_t buf_off;
};

static void seg_name(uint64_t first, char *out, size_t n)
{
    snprintf(out, n, "%016" PRIx64 ".log", first);
}

static int reader_open_seg(struct triekv_log_reader *r, uint64_t first)
{
    if (r->fd >= 0)
        r->db->io->close(r->db->io->ctx, r->fd);
    r->fd = -1;
    char name[32];
    seg_name(first, name, sizeof name);
    int rc = r->db->io->openat(r->db->io->ctx, r->db->waldirfd, name, O_RDONLY, 0, &r->fd);
    if (rc == ENOENT)
        return KV_E_LOG_TRUNCATED; /* dropped by a checkpoint under a slow reader */
    if (rc != 0)
        return rc;
    r->seg_first = first;
    r->off = 0;
    r->buf.len = 0;
    r->buf_off = 0;
    return KV_OK;
}

/* Makes [off, off + n) of the segment available in r->buf; *got is how much of it exists. */
static int reader_fill(struct triekv_log_reader *r, uint64_t off, size_t n, size_t *got)
{
    if (off >= r->buf_off && off + n <= r->buf_off + r->buf.len) {
        *got = n;
        return KV_OK;
    }
    size_t want = n > READ_CHUNK ? n : READ_CHUNK;
    r->buf.len = 0;
    kv_buf_reserve(&r->buf, want);
    size_t nread;
    int rc = r->db->io->pread(r->db->io->ctx, r->fd, r->buf.ptr, want, off, &nread);
    if (rc != 0)
        return rc;
    r->buf.len = nread;
    r->buf_off = off;
    *got = nread < n ? nread : n;
    return KV_OK;
}

/* The segment holding batch seq: the last one named <= seq. KV_E_LOG_TRUNCATED when before all. */
static int find_segment(struct triekv *db, uint64_t seq, uint64_t *first)
{
    int rc = KV_E_LOG_TRUNCATED;
    pthread_mutex_lock(&db->wal.mu);
    for (uint32_t i = db->wal.nsegs; i-- > 0;) {
        if (db->wal.segs[i].first_seq <= seq) {
            *first = db->wal.segs[i].first_seq;
            rc = KV_OK;
            break;
        }
    }
    pthread_mutex_unlock(&db->wal.mu);
    return rc;
}

/* Whether a segment named seq exists (the reader's batch starts a new segment). */
static bool segment_named(struct triekv *db, uint64_t seq)
{
    bool found = false;
    pthread_mutex_lock(&db->wal.mu);
    for (uint32_t i = 0; i < db->wal.nsegs && !found; i++)
        found = db->wal.segs[i].first_seq == seq;
    pthread_mutex_unlock(&db->wal.mu);
    return found;
}

/* Reads the header of the record at r->off into h; 1 when the segment ends there. */
static int reader_header(struct triekv_log_reader *r, struct trie_wal_hdr *h)
{
    size_t got;
    int rc = reader_fill(r, r->off, TRIE_WAL_HDR, &got);
    if (rc != KV_OK)
        return rc;
    if (got < TRIE_WAL_HDR)
        return 1;
    if (trie_wal_hdr_decode(r->buf.ptr + (r->off - r->buf_off), h) != KV_OK)
        return KV_E_CORRUPT;
    return KV_OK;
}

/* Opens the segment holding batch seq and positions the reader on that batch. */
static int reader_seek(struct triekv_log_reader *r, uint64_t seq)
{
    uint64_t first;
    int rc = find_segment(r->db, seq, &first);
    if (rc == KV_OK)
        rc = reader_open_seg(r, first);
    for (uint64_t s = first; rc == KV_OK && s < seq; s++) {
        struct trie_wal_hdr h;
        int hr = reader_header(r, &h);
        if (hr == 1)
            rc = KV_E_LOG_TRUNCATED; /* shorter than its successor's name says */
        else if (hr != KV_OK)
            rc = hr;
        else if (h.seq != s)
            rc = KV_E_CORRUPT;
        else
            r->off += TRIE_WAL_HDR + (uint64_t)h.payload_len;
    }
    return rc;
}

int triekv_log_open(struct triekv *db, uint64_t from_seq, struct triekv_log_reader **out)
{
    uint64_t committed = atomic_load_explicit(&db->seq, memory_order_acquire);
    if (from_seq < triekv_log_first(db) && from_seq <= committed)
        return KV_E_LOG_TRUNCATED;
    struct triekv_log_reader *r = kv_calloc(1, sizeof *r);
    r->db = db;
    r->fd = -1;
    r->next = from_seq;
    int rc = from_seq <= committed ? reader_seek(r, from_seq) : KV_OK; /* else: open at first read */
    if (rc != KV_OK) {
        triekv_log_close(r);
        return rc;
    }
    *out = r;
    return KV_OK;
}

void triekv_log_close(struct triekv_log_reader *r)
{
    if (r == NULL)
        return;
    if (r->fd >= 0)
        r->db->io->close(r->db->io->ctx, r->fd);
    kv_buf_free(&r->buf);
    free(r);
}

uint64_t triekv_log_next(const struct triekv_log_reader *r)
{
    return r->next;
}

uint64_t triekv_log_pending_bytes(const struct triekv_log_reader *r)
{
    struct trie_wal *w = &r->db->wal;
    uint64_t bytes = 0;
    pthread_mutex_lock(&w->mu);
    for (uint32_t i = 0; i < w->nsegs; i++) {
        if (r->fd < 0 || w->segs[i].first_seq > r->seg_first)
            bytes += w->segs[i].bytes;
        else if (w->segs[i].first_seq == r->seg_first && w->segs[i].bytes > r->off)
            bytes += w->segs[i].bytes - r->off;
    }
    pthread_mutex_unlock(&w->mu);
    return bytes;
}

int triekv_log_read(struct triekv_log_reader *r, struct kv_buf *out, size_t max_bytes, uint32_t *count)
{
    uint64_t committed = atomic_load_explicit(&r->db->seq, memory_order_acquire);
    size_t start = out->len;
    *count = 0;
    /* Bytes read past the last committed record in an earlier call may have been cut back and
     * rewritten since (a failed append): start from the file every call. */
    r->buf.len = 0;
    while (r->next <= committed && (*count == 0 || out->len - start < max_bytes)) {
        if (r->fd < 0) {
            int rc = reader_seek(r, r->next);
            if (rc != KV_OK)
                return rc;
        }
        struct trie_wal_hdr h;
        int rc = reader_header(r, &h);
        if (rc == 1) { /* the end of this segment: the batch starts the next one */
            if (!segment_named(r->db, r->next))
                return *count ? KV_OK : KV_E_CORRUPT; /* committed yet nowhere: damaged */
            rc = reader_open_seg(r, r->next);
            if (rc != KV_OK)
                return rc;
            continue;
        }
        if (rc != KV_OK)
            return rc;
        if (h.seq != r->next)
            return KV_E_CORRUPT;
        size_t size = TRIE_WAL_HDR + (size_t)h.payload_len, got;
        rc = reader_fill(r, r->off, size, &got);
        if (rc != KV_OK)
            return rc;
        if (got < size)
            return KV_E_CORRUPT;
        const uint8_t *rec = r->buf.ptr + (r->off - r->buf_off);
        if (kv_crc32c(0, rec + TRIE_WAL_HDR, h.payload_len) != h.payload_crc)
            return KV_E_CORRUPT;
        kv_buf_append(out, rec, size);
        r->off += size;
        r->next++;
        (*count)++;
    }
    return KV_OK;
}

/* ---- applying on a replica ----------------------------------------------------------------------- */

/* A record's batch, with the ops table the pipeline needs; payload copied. */
static int batch_of_record(const uint8_t *rec, const struct trie_wal_hdr *h, struct triekv_batch *b)
{
    const uint8_t *payload = rec + TRIE_WAL_HDR;
    uint32_t off = 0;
    for (uint32_t i = 0; i < h->op_count; i++) {
        uint32_t at = off;
        struct trie_op_view op;
        if (trie_op_next(payload, h->payload_len, &off, &op) != KV_OK)
            return KV_E_CORRUPT;
        if (b->nops == b->cap_ops) {
            b->cap_ops = b->cap_ops ? b->cap_ops * 2 : 4;
            b->ops = kv_realloc(b->ops, (size_t)b->cap_ops * sizeof *b->ops);
        }
        b->ops[b->nops++] = (struct trie_op){
            .type = op.type, .cond = TRIEKV_IF_ANY, .off = at, .klen = op.klen, .vlen = op.vlen};
    }
    if (off != h->payload_len)
        return KV_E_CORRUPT;
    kv_buf_append(&b->payload, payload, h->payload_len);
    return KV_OK;
}

#define APPLY_GROUP_MAX 256 /* records committed per pipeline round */

int triekv_apply_log(struct triekv *db, const uint8_t *records, size_t len, uint64_t *applied)
{
    int rc = KV_OK;
    size_t off = 0;
    struct trie_writer *w = kv_calloc(APPLY_GROUP_MAX, sizeof *w);
    struct trie_writer *wp[APPLY_GROUP_MAX];
    while (off < len && rc == KV_OK) {
        uint32_t n = 0;
        uint64_t expect = atomic_load(&db->seq) + 1;
        while (off < len && n < APPLY_GROUP_MAX) {
            struct trie_wal_hdr h;
            if (len - off < TRIE_WAL_HDR || trie_wal_hdr_decode(records + off, &h) != KV_OK ||
                h.payload_len > len - off - TRIE_WAL_HDR ||
                kv_crc32c(0, records + off + TRIE_WAL_HDR, h.payload_len) != h.payload_crc) {
                rc = KV_E_CORRUPT;
                break;
            }
            size_t size = TRIE_WAL_HDR + (size_t)h.payload_len;
            if (h.seq < expect) { /* resent: already here */
                off += size;
                continue;
            }
            if (h.seq != expect) {
                rc = KV_E_INVALID; /* a gap: the sender must resend from our applied seq */
                break;
            }
            struct triekv_batch *b = kv_calloc(1, sizeof *b);
            rc = batch_of_record(records + off, &h, b);
            if (rc != KV_OK) {
                triekv_batch_destroy(b);
                break;
            }
            w[n] = (struct trie_writer){.batch = b, .given_seq = h.seq, .given_epoch = h.epoch};
            wp[n] = &w[n];
            n++;
            expect++;
            off += size;
        }
        if (n > 0) {
            int crc = trie_commit_given(db, wp, n);
            if (rc == KV_OK)
                rc = crc;
        }
        for (uint32_t i = 0; i < n; i++)
            triekv_batch_destroy(w[i].batch);
    }
    free(w);
    *applied = atomic_load(&db->seq);
    return rc;
}

/* ---- resync ------------------------------------------------------------------------------------ */

static int write_marker(struct triekv *db)
{
    static const char text[] = "a replica resync is loading a snapshot; this store is incomplete\n";
    return trie_file_replace(db, TRIE_RESYNC_FILE, text, sizeof text - 1);
}

/* Deletes every partition log, the checkpoint and every commit-log segment. */
static int wipe_files(struct triekv *db)
{
    int rc = KV_OK;
    int fds[2] = {db->dirfd, db->waldirfd};
    for (int k = 0; k < 2 && rc == KV_OK; k++) {
        if (fds[k] < 0)
            continue;
        int fd = dup(fds[k]);
        DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
        if (d == NULL) {
            if (fd >= 0)
                close(fd);
            return errno;
        }
        rewinddir(d); /* a dup shares the position an earlier listing left at the end */
        struct dirent *de;
        while (rc == KV_OK && (de = readdir(d)) != NULL) {
            size_t n = strlen(de->d_name);
            bool part = n > 4 && strcmp(de->d_name + n - 4, TRIE_PART_EXT) == 0;
            bool wal = k == 1 && n > 4 && strcmp(de->d_name + n - 4, ".log") == 0;
            bool ckpt = k == 0 && (strcmp(de->d_name, TRIE_CKPT_FILE) == 0 ||
                                   strcmp(de->d_name, TRIE_EPOCHS_FILE) == 0);
            bool tmp = n > 4 && strcmp(de->d_name + n - 4, TRIE_TMP_EXT) == 0;
            if (part || wal || ckpt || tmp) {
                int e = db->io->unlinkat(db->io->ctx, fds[k], de->d_name);
                if (e != 0 && e != ENOENT)
                    rc = e;
            }
        }
        closedir(d);
        if (rc == KV_OK)
            rc = db->io->fsync_dir(db->io->ctx, fds[k]);
    }
    return rc;
}

int trie_resync_recover(struct triekv *db)
{
    if (faccessat(db->dirfd, TRIE_RESYNC_FILE, F_OK, 0) != 0)
        return KV_OK;
    trie_log(db, KV_LOG_WARN, "a resync was interrupted: the store starts empty and will be resynced");
    int wfd = openat(db->dirfd, TRIE_WAL_DIR, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    db->waldirfd = wfd; /* wipe_files looks here; the commit log reopens it later */
    int rc = wipe_files(db);
    if (wfd >= 0)
        close(wfd);
    db->waldirfd = -1;
    if (rc == KV_OK)
        rc = db->io->unlinkat(db->io->ctx, db->dirfd, TRIE_RESYNC_FILE);
    if (rc == KV_OK)
        rc = db->io->fsync_dir(db->io->ctx, db->dirfd);
    return rc;
}

/* Takes the writer pipeline for ourselves: no leader, nothing queued, then maint_mu. */
static void exclusive_begin(struct triekv *db)
{
    for (;;) {
        pthread_mutex_lock(&db->q_mu);
        if (!db->leader_active && db->q_head == NULL) {
            db->leader_active = true;
            pthread_mutex_unlock(&db->q_mu);
            break;
        }
        pthread_mutex_unlock(&db->q_mu);
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
    pthread_mutex_lock(&db->ckpt_run_mu);
    pthread_mutex_lock(&db->maint_mu);
}

static void exclusive_end(struct triekv *db)
{
    pthread_mutex_unlock(&db->maint_mu);
    pthread_mutex_unlock(&db->ckpt_run_mu);
    pthread_mutex_lock(&db->q_mu);
    db->leader_active = false;
    if (db->q_head != NULL && db->q_head->done != NULL)
        pthread_cond_signal(&db->committer_cv);
    else if (db->q_head != NULL)
        pthread_cond_signal(&db->q_head->cv);
    pthread_mutex_unlock(&db->q_mu);
}

/* Unpins and unlists every dirty page of the trie being replaced: its records are discarded. */
static void drop_dirty(struct triekv *db)
{
    pthread_mutex_lock(&db->dirty_mu);
    struct trie_page *p = db->dirty_head;
    db->dirty_head = NULL;
    for (struct trie_page *q = p; q; q = q->dirty_next)
        atomic_store(&q->on_dirty_list, false);
    pthread_mutex_unlock(&db->dirty_mu);
    for (; p; p = p->dirty_next) {
        pthread_rwlock_wrlock(&p->lock);
        for (uint32_t i = 0; i < p->ndirty; i++) {
            p->dirty[i]->pending = 0;
            triekv_value_release(p->dirty[i]);
        }
        p->ndirty = 0;
        p->dirty_bytes = 0;
        bool unpin = p->dirty_pinned;
        p->dirty_pinned = false;
        pthread_rwlock_unlock(&p->lock);
        if (unpin)
            cache_unpin(db->cache, &p->ce);
    }
    atomic_store(&db->dirty_bytes, 0);
}

int triekv_snapshot_begin(struct triekv *db)
{
    int ro = atomic_load(&db->read_only);
    if (ro != 0)
        return KV_E_READONLY;
    exclusive_begin(db);
    int rc = write_marker(db);
    if (rc == KV_OK) {
        if (db->wal.fd >= 0)
            db->io->close(db->io->ctx, db->wal.fd);
        db->wal.fd = -1;
        db->wal.end = 0;
        db->wal.dirty = false;
        pthread_mutex_lock(&db->wal.mu);
        db->wal.nsegs = 0;
        pthread_mutex_unlock(&db->wal.mu);
        atomic_store(&db->wal.total_bytes, 0);
        rc = wipe_files(db);
    }
    if (rc != KV_OK) {
        trie_set_read_only(db, rc, "cannot start a resync");
        exclusive_end(db);
        return rc;
    }
    pthread_rwlock_wrlock(&db->view_lock);
    drop_dirty(db);
    struct trie_node *old = db->root;
    old->parent = db->graveyard; /* the old trie stays allocated: readers may be walking it */
    db->graveyard = old;
    db->root = trie_node_new(NULL, 0);
    atomic_store(&db->resyncing, true);
    atomic_store(&db->st_keys, 0);
    atomic_store(&db->st_value_bytes, 0);
    atomic_store(&db->st_partitions, 1);
    atomic_store(&db->st_depth_max, 0);
    db->next_seq = 1;
    trie_epoch_reset(db, 0, 0);
    trie_publish_seq(db, 0);
    atomic_store(&db->wal.synced_seq, 0);
    db->wal.written_seq = 0;
    atomic_store(&db->checkpoint_seq, 0);
    pthread_rwlock_unlock(&db->view_lock);
    exclusive_end(db);
    trie_log(db, KV_LOG_INFO, "resync: store wiped, loading a snapshot");
    return KV_OK;
}

int triekv_snapshot_put(struct triekv *db, struct kv_slice key, struct kv_slice value, uint64_t version)
{
    if (!atomic_load(&db->resyncing))
        return KV_E_INVALID;
    if (key.len == 0)
        return KV_E_KEY_EMPTY;
    if (key.len > db->opt.max_key_size)
        return KV_E_KEY_TOO_LONG;
    if (value.len > db->opt.max_value_size)
        return KV_E_VALUE_TOO_LARGE;
    /* an op in WAL payload form, applied with its version (no commit-log record: the checkpoint
     * at the end makes the snapshot durable, and a crash before it empties the store) */
    struct kv_buf op = {0};
    uint8_t hdr[TRIE_OP_HDR] = {TRIE_REC_PUT, 0};
    kv_put_u16(hdr + 2, (uint16_t)key.len);
    kv_put_u32(hdr + 4, (uint32_t)value.len);
    kv_buf_append(&op, hdr, sizeof hdr);
    kv_buf_append(&op, key.ptr, key.len);
    kv_buf_append(&op, value.ptr, value.len);
    pthread_mutex_lock(&db->maint_mu);
    pthread_rwlock_wrlock(&db->view_lock);
    int rc = trie_apply_payload(db, version, op.ptr, (uint32_t)op.len, 1, true);
    pthread_rwlock_unlock(&db->view_lock);
    pthread_mutex_unlock(&db->maint_mu);
    kv_buf_free(&op);
    trie_ckpt_poke(db, false);
    return rc;
}

int triekv_snapshot_end(struct triekv *db, uint64_t seq, uint32_t epoch)
{
    if (!atomic_load(&db->resyncing))
        return KV_E_INVALID;
    exclusive_begin(db);
    db->next_seq = seq + 1;
    trie_epoch_reset(db, seq, epoch); /* what came before seq is the main's business */
    db->wal.written_seq = seq;
    atomic_store(&db->wal.synced_seq, seq);
    trie_publish_seq(db, seq);
    exclusive_end(db);
    int rc = trie_ckpt_run(db); /* every partition log and CHECKPOINT = seq */
    if (rc == KV_OK)
        rc = db->io->unlinkat(db->io->ctx, db->dirfd, TRIE_RESYNC_FILE);
    if (rc == KV_OK)
        rc = db->io->fsync_dir(db->io->ctx, db->dirfd);
    if (rc != KV_OK) {
        trie_set_read_only(db, rc, "cannot finish a resync");
        return rc;
    }
    atomic_store(&db->resyncing, false);
    trie_log(db, KV_LOG_INFO, "resync: snapshot loaded at seq %" PRIu64 " (%" PRIu64 " keys)", seq,
             atomic_load(&db->st_keys));
    return KV_OK;
}

bool triekv_snapshot_active(struct triekv *db)
{
    return atomic_load(&db->resyncing);
}
