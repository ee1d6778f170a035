/* trie/trie_ckpt.c - checkpoints, splits and compactions: everything that changes partition
 * files. Runs on the checkpointer thread (or the caller of triekv_checkpoint / close), one at a
 * time under ckpt_run_mu.
 *
 * A checkpoint
 *   1. reads S, the last applied batch; every batch <= S sits in some page's dirty log or log file;
 *   2. swaps the dirty log out of every dirty page (writers keep going into fresh logs);
 *   3. syncs the commit log: every swapped record is in it, so no partition log ever holds a
 *      record the commit log could lose;
 *   4. appends each swapped log plus a summary to its partition file and fdatasyncs them all in one
 *      batch (new partition files are written whole and published by rename + directory fsync);
 *   5. splits or compacts partitions whose log passed max_page_size;
 *   6. writes EPOCHS when the epoch history changed, then CHECKPOINT = S (each a temporary file,
 *      fdatasync, rename, directory fsync);
 *   7. drops commit-log segments that hold only batches <= S and that no log reader holds.
 * A crash anywhere leaves CHECKPOINT at an older S' <= S: the next open replays every batch after
 * S' and skips the operations a partition already has (seq <= the key's version).
 *
 * A split of partition P (maint_mu held, so no batch is applied meanwhile; P flushed first):
 *   LIVE: P's log holds all its keys.
 *   CHILDREN_WRITTEN (write_children): each group of keys sharing the next byte b is written to
 *     "<P+b>.dat.tmp" and fdatasynced. Crash: the .tmp files are deleted at open; P is unchanged.
 *   RENAMED (publish_children): every .tmp is renamed to "<P+b>.dat", then one directory fsync.
 *     Crash: the children exist and hold full copies; P still holds the same records, which are
 *     now shadowed (a key is read from the deepest existing partition), and P's last summary
 *     lists fewer children than exist, so open rewrites P without them (compaction).
 *   PARENT_RETIRED (retire_parent): P is rewritten with only the key equal to P, if any, and a
 *     summary listing its children; renamed over P, directory fsync.
 *   Then the children are published in memory (under view_lock) and P's page loses the moved
 *   records. Any failure after the first rename turns the store read-only: the disk is ahead of
 *   memory and only a reopen reconciles them.
 * A compaction rewrites P's live records (sorted) into a .tmp file and renames it over P. It drops
 * tombstones: no other file can serve an older value of a key in P (children hold other keys;
 * stale copies in an unretired parent are shadowed by P and are removed at open before any
 * compaction can run). */
#include "trie/trie_int.h"
#include "common/kv_assert.h"
#include "common/kv_crc.h"
#include "common/kv_log.h"
#include "common/kv_time.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- the CHECKPOINT file ----------------------------------------------------------------------- */

int trie_file_replace(struct triekv *db, const char *name, const void *buf, size_t len)
{
    char tmp[64];
    KV_ASSERT(strlen(name) + sizeof TRIE_TMP_EXT <= sizeof tmp);
    snprintf(tmp, sizeof tmp, "%s%s", name, TRIE_TMP_EXT);
    int fd;
    int rc = db->io->openat(db->io->ctx, db->dirfd, tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644, &fd);
    if (rc != 0)
        return rc;
    struct iovec iov = {(void *)buf, len};
    rc = db->io->pwritev(db->io->ctx, fd, &iov, 1, 0, 1);
    int rc2 = db->io->close(db->io->ctx, fd);
    if (rc == 0)
        rc = rc2;
    if (rc == 0)
        rc = db->io->renameat(db->io->ctx, db->dirfd, tmp, name);
    if (rc == 0)
        rc = db->io->fsync_dir(db->io->ctx, db->dirfd);
    return rc;
}

int trie_file_read_all(struct triekv *db, int dirfd, const char *name, uint8_t **buf, uint64_t *size)
{
    int fd;
    int rc = db->io->openat(db->io->ctx, dirfd, name, O_RDONLY, 0, &fd);
    if (rc != 0)
        return rc;
    uint64_t len;
    rc = db->io->fsize(db->io->ctx, fd, &len);
    uint8_t *b = NULL;
    size_t got = 0;
    if (rc == 0) {
        b = kv_malloc(len ? len : 1);
        rc = db->io->pread(db->io->ctx, fd, b, len, 0, &got);
    }
    db->io->close(db->io->ctx, fd);
    if (rc != 0) {
        free(b);
        return rc;
    }
    *buf = b;
    *size = got;
    return KV_OK;
}

int trie_file_truncate(struct triekv *db, int dirfd, const char *name, uint64_t at)
{
    int fd;
    int rc = db->io->openat(db->io->ctx, dirfd, name, O_WRONLY, 0, &fd);
    if (rc != 0)
        return rc;
    rc = db->io->ftruncate(db->io->ctx, fd, at);
    if (rc == 0)
        rc = db->io->fdatasync(db->io->ctx, fd);
    int rc2 = db->io->close(db->io->ctx, fd);
    return rc ? rc : rc2;
}

int trie_ckpt_record(struct triekv *db, uint64_t seq)
{
    uint8_t rec[TRIE_CKPT_LEN];
    kv_put_u32(rec, TRIE_CKPT_MAGIC);
    kv_put_u32(rec + 8, TRIE_FORMAT_VERSION);
    kv_put_u32(rec + 12, 0);
    kv_put_u64(rec + 16, seq);
    kv_put_u32(rec + 4, kv_crc32c(0, rec + 8, TRIE_CKPT_LEN - 8));
    return trie_file_replace(db, TRIE_CKPT_FILE, rec, sizeof rec);
}

int trie_ckpt_read(struct triekv *db, uint64_t *seq)
{
    int fd;
    int rc = db->io->openat(db->io->ctx, db->dirfd, TRIE_CKPT_FILE, O_RDONLY, 0, &fd);
    if (rc == ENOENT) {
        *seq = 0;
        return KV_OK;
    }
    if (rc != 0)
        return rc;
    uint8_t rec[TRIE_CKPT_LEN];
    size_t got = 0;
    rc = db->io->pread(db->io->ctx, fd, rec, sizeof rec, 0, &got);
    db->io->close(db->io->ctx, fd);
    if (rc != 0)
        return rc;
    if (got != sizeof rec || kv_get_u32(rec) != TRIE_CKPT_MAGIC ||
        kv_get_u32(rec + 4) != kv_crc32c(0, rec + 8, TRIE_CKPT_LEN - 8)) {
        trie_log(db, KV_LOG_ERROR, "checkpoint record is damaged");
        return KV_E_CORRUPT;
    }
    if (kv_get_u32(rec + 8) != TRIE_FORMAT_VERSION)
        return KV_E_VERSION;
    *seq = kv_get_u64(rec + 16);
    return KV_OK;
}

/* ---- flushing ------------------------------------------------------------------------------- */

/* Flushes the dirty logs of pages[0..n) (all dirty-pinned). With maint_held the caller already
 * holds maint_mu (needed to sync the commit log). When over is not NULL, the nodes whose log
 * passed max_page_size are appended to it (read while the page is still held: once unpinned, a
 * page may be evicted at any moment). */
struct node_vec {
    struct trie_node **v;
    size_t n, cap;
};

static void node_vec_push(struct node_vec *nv, struct trie_node *n)
{
    if (nv->n == nv->cap) {
        nv->cap = nv->cap ? nv->cap * 2 : 16;
        nv->v = kv_realloc(nv->v, nv->cap * sizeof *nv->v);
    }
    nv->v[nv->n++] = n;
}

/* Decides, under p's write lock, whether p's dirty pin can go: it has nothing left to flush and is
 * not on the dirty list (membership keeps the pin, so a listed page is never evicted and freed
 * under the list). The caller unpins after unlocking. */
static bool pin_can_go(struct triekv *db, struct trie_page *p)
{
    if (!p->dirty_pinned || p->ndirty > 0)
        return false;
    pthread_mutex_lock(&db->dirty_mu);
    bool listed = p->on_dirty_list;
    pthread_mutex_unlock(&db->dirty_mu);
    if (listed)
        return false;
    p->dirty_pinned = false;
    return true;
}

static int flush_pages(struct triekv *db, struct trie_page **pages, size_t n, bool maint_held,
                       struct node_vec *over)
{
    struct trie_flush *f = kv_calloc(n ? n : 1, sizeof *f);
    size_t nf = 0;
    for (size_t i = 0; i < n; i++) {
        struct trie_page *p = pages[i];
        pthread_rwlock_wrlock(&p->lock);
        if (p->ndirty > 0) {
            struct trie_flush *x = &f[nf++];
            x->page = p;
            x->recs = p->dirty;
            x->nrecs = p->ndirty;
            trie_summary_of_page(p, &x->summary);
            x->off = p->file_bytes;
            x->new_file = !p->node->has_file;
            int64_t delta = -(int64_t)p->cap_dirty * (int64_t)sizeof *p->dirty;
            atomic_fetch_sub(&db->dirty_bytes, p->dirty_bytes);
            p->dirty = NULL;
            p->ndirty = p->cap_dirty = 0;
            p->dirty_bytes = 0;
            trie_page_charge(db, p, delta);
            pthread_rwlock_unlock(&p->lock);
            continue;
        }
        bool unpin = pin_can_go(db, p); /* flushed already, e.g. by a maintenance pass */
        pthread_rwlock_unlock(&p->lock);
        if (unpin)
            cache_unpin(db->cache, &p->ce);
    }
    int rc = KV_OK;
    if (nf > 0) {
        if (!maint_held)
            pthread_mutex_lock(&db->maint_mu);
        rc = trie_wal_sync(db);
        if (!maint_held)
            pthread_mutex_unlock(&db->maint_mu);
        if (rc == KV_OK)
            rc = trie_part_flush(db, f, nf);
        if (rc != KV_OK)
            trie_set_read_only(db, rc, "cannot flush partition logs");
    }
    for (size_t i = 0; i < nf; i++) {
        struct trie_page *p = f[i].page;
        bool unpin = false;
        pthread_rwlock_wrlock(&p->lock);
        int64_t delta = 0;
        for (uint32_t k = 0; k < f[i].nrecs; k++) {
            struct triekv_value *v = f[i].recs[k];
            v->pending = 0;
            if (trie_page_find(p, trie_val_key(v)) != v)
                delta -= (int64_t)trie_val_mem(v);
        }
        if (rc == KV_OK) {
            p->file_bytes = f[i].new_file ? trie_flush_bytes(&f[i]) : p->file_bytes + trie_flush_bytes(&f[i]);
            p->node->has_file = true;
            if (over && p->file_bytes > db->opt.max_page_size)
                node_vec_push(over, p->node);
            unpin = pin_can_go(db, p);
        }
        trie_page_charge(db, p, delta);
        pthread_rwlock_unlock(&p->lock);
        if (unpin)
            cache_unpin(db->cache, &p->ce);
        for (uint32_t k = 0; k < f[i].nrecs; k++)
            triekv_value_release(f[i].recs[k]);
        free(f[i].recs);
        trie_flush_free(&f[i]);
    }
    free(f);
    return rc;
}

/* ---- split and compaction ------------------------------------------------------------------- */

/* The live records of p in key order, each with a reference the caller drops. */
static struct triekv_value **sorted_recs(struct trie_page *p, uint32_t *n)
{
    pthread_rwlock_rdlock(&p->lock);
    trie_page_sort(p);
    struct triekv_value **v = kv_malloc((p->nrecs ? p->nrecs : 1) * sizeof *v);
    for (uint32_t i = 0; i < p->nrecs; i++) {
        v[i] = p->recs[p->order[i]];
        trie_val_ref(v[i]);
    }
    *n = p->nrecs;
    pthread_rwlock_unlock(&p->lock);
    return v;
}

static void release_recs(struct triekv_value **v, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++)
        triekv_value_release(v[i]);
    free(v);
}

static void kids_bitmap(const struct trie_node *n, uint8_t out[32])
{
    memset(out, 0, 32);
    for (int b = 0; b < 256; b++) {
        if (trie_kid(n, (uint8_t)b))
            out[b / 8] |= (uint8_t)(1u << (b % 8));
    }
}

static int compact(struct triekv *db, struct trie_node *n, struct trie_page *p)
{
    uint32_t nrecs;
    struct triekv_value **recs = sorted_recs(p, &nrecs);
    uint8_t kids[32];
    kids_bitmap(n, kids);
    uint64_t bytes;
    int rc = trie_part_write_tmp(db, n->prefix, n->plen, recs, nrecs, kids, &bytes);
    if (rc == KV_OK) {
        rc = trie_part_publish(db, n->prefix, n->plen);
        if (rc == KV_OK)
            rc = db->io->fsync_dir(db->io->ctx, db->dirfd);
        if (rc != KV_OK)
            trie_set_read_only(db, rc, "cannot publish a compacted partition log");
    }
    if (rc == KV_OK) {
        pthread_rwlock_wrlock(&p->lock);
        uint64_t before = p->file_bytes;
        p->file_bytes = bytes;
        pthread_rwlock_unlock(&p->lock);
        n->has_file = true;
        atomic_fetch_add(&db->st_compactions, 1);
        if (kv_log_get_level() >= KV_LOG_DEBUG) {
            struct kv_buf name = {0};
            trie_part_name(n->prefix, n->plen, false, &name);
            trie_log(db, KV_LOG_DEBUG, "compacted %s: %" PRIu64 " -> %" PRIu64 " bytes, %u keys",
                     (char *)name.ptr, before, bytes, nrecs);
            kv_buf_free(&name);
        }
    }
    release_recs(recs, nrecs);
    return rc;
}

struct split_group {
    uint8_t byte;
    uint32_t start, end; /* range of the sorted records */
    uint64_t bytes;      /* size of the child's log */
    struct trie_node *node;
};

/* Creates the child node and its page from the records already written to its log. */
static struct trie_node *make_child(struct trie_node *n, struct split_group *sg, struct triekv_value **recs)
{
    struct trie_node *c = trie_node_new(n, sg->byte);
    struct trie_page *cp = trie_page_create(c);
    size_t mem = 0;
    for (uint32_t i = sg->start; i < sg->end; i++) {
        struct triekv_value *old;
        trie_val_ref(recs[i]);
        trie_page_set(cp, recs[i], &old);
        KV_ASSERT(old == NULL);
        mem += trie_val_mem(recs[i]);
        c->keys++;
        c->value_bytes += recs[i]->vlen;
    }
    cp->file_bytes = sg->bytes;
    cp->mem_bytes = trie_page_base_mem(cp) + mem;
    c->has_file = true;
    c->page = cp;
    c->gen = 1;
    return c;
}

static int split(struct triekv *db, struct trie_node *n, struct trie_page *p)
{
    uint32_t nrecs;
    struct triekv_value **recs = sorted_recs(p, &nrecs);
    struct split_group groups[256];
    uint32_t ngroups = 0, stays = 0;
    while (stays < nrecs && recs[stays]->klen == n->plen) /* the key equal to the prefix sorts first */
        stays++;
    for (uint32_t i = stays; i < nrecs; i++) {
        uint8_t b = recs[i]->bytes[n->plen];
        if (ngroups == 0 || groups[ngroups - 1].byte != b)
            groups[ngroups++] = (struct split_group){.byte = b, .start = i};
        groups[ngroups - 1].end = i + 1;
    }
    KV_ASSERT(ngroups > 0);
    uint8_t none[32] = {0}, kids[32];
    uint8_t cprefix[TRIEKV_DEPTH_MAX];
    memcpy(cprefix, n->prefix, n->plen);
    int rc = KV_OK;
    /* LIVE -> CHILDREN_WRITTEN */
    for (uint32_t g = 0; g < ngroups && rc == KV_OK; g++) {
        cprefix[n->plen] = groups[g].byte;
        rc = trie_part_write_tmp(db, cprefix, n->plen + 1, recs + groups[g].start,
                                 groups[g].end - groups[g].start, none, &groups[g].bytes);
    }
    if (rc != KV_OK)
        goto out; /* nothing published: the .tmp files go at the next open or attempt */
    /* CHILDREN_WRITTEN -> RENAMED */
    for (uint32_t g = 0; g < ngroups && rc == KV_OK; g++) {
        cprefix[n->plen] = groups[g].byte;
        rc = trie_part_publish(db, cprefix, n->plen + 1);
    }
    if (rc == KV_OK)
        rc = db->io->fsync_dir(db->io->ctx, db->dirfd);
    /* RENAMED -> PARENT_RETIRED */
    kids_bitmap(n, kids);
    for (uint32_t g = 0; g < ngroups; g++)
        kids[groups[g].byte / 8] |= (uint8_t)(1u << (groups[g].byte % 8));
    uint64_t pbytes = 0;
    if (rc == KV_OK)
        rc = trie_part_write_tmp(db, n->prefix, n->plen, recs, stays, kids, &pbytes);
    if (rc == KV_OK)
        rc = trie_part_publish(db, n->prefix, n->plen);
    if (rc == KV_OK)
        rc = db->io->fsync_dir(db->io->ctx, db->dirfd);
    if (rc != KV_OK) {
        trie_set_read_only(db, rc, "split stopped after publishing child partitions");
        goto out;
    }
    /* in memory: children first, then the parent loses the moved records */
    for (uint32_t g = 0; g < ngroups; g++)
        groups[g].node = make_child(n, &groups[g], recs);
    pthread_rwlock_wrlock(&db->view_lock);
    for (uint32_t g = 0; g < ngroups; g++)
        trie_node_publish(groups[g].node);
    pthread_rwlock_wrlock(&p->lock);
    int64_t delta = 0;
    for (uint32_t i = stays; i < nrecs; i++) {
        struct triekv_value *old;
        delta += trie_page_remove(p, trie_val_key(recs[i]), &old);
        KV_ASSERT(old == recs[i]);
        triekv_value_release(old);
    }
    p->file_bytes = pbytes;
    n->has_file = true;
    for (uint32_t g = 0; g < ngroups; g++) {
        n->keys -= groups[g].node->keys;
        n->value_bytes -= groups[g].node->value_bytes;
    }
    trie_page_charge(db, p, delta);
    pthread_rwlock_unlock(&p->lock);
    pthread_rwlock_unlock(&db->view_lock);
    for (uint32_t g = 0; g < ngroups; g++)
        cache_insert(db->cache, &groups[g].node->page->ce, groups[g].node->page->mem_bytes, 0);
    atomic_fetch_add(&db->st_splits, 1);
    if (kv_log_get_level() >= KV_LOG_DEBUG) {
        struct kv_buf name = {0};
        trie_part_name(n->prefix, n->plen, false, &name);
        trie_log(db, KV_LOG_DEBUG, "split %s into %u children (%u keys moved, %u stay)", (char *)name.ptr,
                 ngroups, nrecs - stays, stays);
        kv_buf_free(&name);
    }
    atomic_fetch_add(&db->st_partitions, ngroups);
    uint64_t depth = n->plen + 1;
    uint64_t cur = atomic_load(&db->st_depth_max);
    while (depth > cur && !atomic_compare_exchange_weak(&db->st_depth_max, &cur, depth))
        ;
out:
    release_recs(recs, nrecs);
    return rc;
}

/* What an oversize partition needs; decided under its read lock. */
enum maint_action { MAINT_NONE, MAINT_COMPACT, MAINT_SPLIT };

static enum maint_action decide(struct triekv *db, struct trie_node *n, struct trie_page *p)
{
    pthread_rwlock_rdlock(&p->lock);
    uint64_t file = p->file_bytes;
    uint64_t live = TRIE_PART_HDR + n->plen + p->live_rec_bytes + TRIE_REC_HDR + TRIE_SUMMARY_LEN;
    bool longer = false; /* a key longer than the prefix exists: a split moves something */
    for (uint32_t i = 0; i < p->nrecs && !longer; i++)
        longer = p->recs[i]->klen > n->plen;
    pthread_rwlock_unlock(&p->lock);
    if (file <= db->opt.max_page_size)
        return MAINT_NONE;
    uint64_t dead = file > live ? file - live : 0;
    if (dead * 2 > file)
        return MAINT_COMPACT;
    if (longer && n->plen < TRIEKV_DEPTH_MAX)
        return MAINT_SPLIT;
    return MAINT_NONE; /* one big key, or at the depth cap: it grows until half of it is dead */
}

/* Flushes, then compacts or splits n when its log is over max_page_size. */
static int maintain(struct triekv *db, struct trie_node *n)
{
    pthread_mutex_lock(&db->maint_mu);
    struct trie_page *p;
    int rc = trie_page_get(db, n, &p);
    if (rc != KV_OK) {
        pthread_mutex_unlock(&db->maint_mu);
        return rc;
    }
    for (int round = 0; round < 2 && rc == KV_OK && atomic_load(&db->read_only) == 0; round++) {
        rc = flush_pages(db, &p, 1, true, NULL);
        if (rc != KV_OK)
            break;
        enum maint_action a = decide(db, n, p);
        if (a == MAINT_COMPACT)
            rc = compact(db, n, p); /* a second round may still split what the compaction kept */
        else if (a == MAINT_SPLIT)
            rc = split(db, n, p);
        if (a != MAINT_COMPACT)
            break;
    }
    trie_page_put(db, n);
    pthread_mutex_unlock(&db->maint_mu);
    return rc;
}

/* ---- the checkpoint ------------------------------------------------------------------------- */

/* The first batch the commit log must keep after a checkpoint at seq: seq + 1, or earlier for a
 * log reader (replication) that still needs older batches, as long as the log kept stays within
 * retention_bytes_max; past that the oldest segments go and the reader must resync. */
static uint64_t retention_keep_from(struct triekv *db, uint64_t seq)
{
    uint64_t keep = seq + 1;
    uint64_t hold = db->retention_fn ? db->retention_fn(db->retention_arg) : UINT64_MAX;
    if (hold >= keep)
        return keep;
    struct trie_wal *w = &db->wal;
    pthread_mutex_lock(&w->mu);
    uint64_t bytes = 0;
    uint32_t i = w->nsegs;
    while (i > 0 && (i == w->nsegs || w->segs[i].first_seq > keep)) { /* segments the checkpoint needs */
        i--;
        bytes += w->segs[i].bytes;
    }
    uint64_t from = i < w->nsegs ? w->segs[i].first_seq : keep;
    /* segments i-1, i-2, ... end before keep; keep them back to hold within the cap */
    while (i > 0 && w->segs[i].first_seq > hold &&
           bytes + w->segs[i - 1].bytes <= db->opt.retention_bytes_max) {
        i--;
        bytes += w->segs[i].bytes;
        from = w->segs[i].first_seq;
    }
    pthread_mutex_unlock(&w->mu);
    return from < keep ? from : keep;
}

int trie_ckpt_run(struct triekv *db)
{
    pthread_mutex_lock(&db->ckpt_run_mu);
    int rc = atomic_load(&db->read_only);
    if (rc != 0) {
        pthread_mutex_unlock(&db->ckpt_run_mu);
        return KV_E_READONLY;
    }
    uint64_t seq = atomic_load_explicit(&db->seq, memory_order_acquire);
    atomic_store(&db->wal.bytes_since_ckpt, 0);

    pthread_mutex_lock(&db->dirty_mu);
    size_t n = 0, cap = 64;
    struct trie_page **pages = kv_malloc(cap * sizeof *pages);
    for (struct trie_page *p = db->dirty_head; p; p = p->dirty_next) {
        if (n == cap)
            pages = kv_realloc(pages, (cap *= 2) * sizeof *pages);
        pages[n++] = p;
        p->on_dirty_list = false;
    }
    db->dirty_head = NULL;
    pthread_mutex_unlock(&db->dirty_mu);

    struct node_vec over = {0}; /* nodes outlive pages: maintain() pins the page again */
    rc = flush_pages(db, pages, n, false, &over);
    free(pages);
    for (size_t i = 0; rc == KV_OK && i < over.n; i++)
        rc = maintain(db, over.v[i]);
    free(over.v);
    over.v = NULL;
    if (rc == KV_OK) {
        rc = trie_epoch_save(db); /* before the record: the segments it releases hold epochs */
        if (rc == KV_OK)
            rc = trie_ckpt_record(db, seq);
        if (rc != KV_OK)
            trie_set_read_only(db, rc, "cannot write the checkpoint record");
    }
    if (rc == KV_OK) {
        atomic_store(&db->checkpoint_seq, seq);
        trie_log(db, KV_LOG_DEBUG,
                 "checkpoint at seq %" PRIu64 ": %zu dirty partitions flushed, %zu maintained", seq, n,
                 over.n);
        rc = trie_wal_drop_before(db, retention_keep_from(db, seq));
        if (rc != KV_OK)
            trie_log(db, KV_LOG_WARN, "cannot drop old commit log segments: %s", kv_strerror(rc));
        rc = KV_OK; /* old segments that stay are harmless */
        atomic_fetch_add(&db->st_checkpoints, 1);
    }
    pthread_mutex_unlock(&db->ckpt_run_mu);
    pthread_mutex_lock(&db->ckpt_mu);
    db->ckpt_last_rc = rc;
    pthread_cond_broadcast(&db->ckpt_cv);
    pthread_mutex_unlock(&db->ckpt_mu);
    return rc;
}

/* Finishes a split that stopped before its parent was rewritten: n's log holds records now
 * shadowed by children, so it is compacted (at open, before anything else can run). */
int trie_ckpt_retire(struct triekv *db, struct trie_node *n)
{
    pthread_mutex_lock(&db->maint_mu);
    struct trie_page *p;
    int rc = trie_page_get(db, n, &p);
    if (rc == KV_OK) {
        rc = compact(db, n, p);
        trie_page_put(db, n);
    }
    pthread_mutex_unlock(&db->maint_mu);
    return rc;
}

int triekv_checkpoint(struct triekv *db)
{
    return trie_ckpt_run(db);
}

void triekv_set_retention(struct triekv *db, uint64_t (*fn)(void *arg), void *arg)
{
    pthread_mutex_lock(&db->ckpt_run_mu);
    db->retention_fn = fn;
    db->retention_arg = arg;
    pthread_mutex_unlock(&db->ckpt_run_mu);
}

/* ---- background threads ---------------------------------------------------------------------- */

/* Write pressure that calls for a checkpoint: unflushed records past a quarter of the cache
 * budget, or pinned pages (a page with one unflushed record is pinned whole) past half of it. */
bool trie_ckpt_pressure(struct triekv *db)
{
    uint64_t budget = db->opt.cache_bytes;
    uint64_t dirty_max = budget / 4 > (1u << 20) ? budget / 4 : (1u << 20);
    return atomic_load_explicit(&db->dirty_bytes, memory_order_relaxed) >= dirty_max ||
           cache_pinned_bytes(db->cache) >= budget / 2;
}

void trie_ckpt_poke(struct triekv *db, bool force)
{
    if (!force &&
        atomic_load_explicit(&db->wal.bytes_since_ckpt, memory_order_relaxed) <
            db->opt.checkpoint_wal_bytes &&
        !trie_ckpt_pressure(db))
        return;
    pthread_mutex_lock(&db->ckpt_mu);
    if (!db->ckpt_wanted) {
        db->ckpt_wanted = true;
        pthread_cond_broadcast(&db->ckpt_cv);
    }
    pthread_mutex_unlock(&db->ckpt_mu);
}

/* glibc keeps freed memory in its arenas; after the cache has turned over more than its budget,
 * hand the free pages back so resident memory follows the budget, not the peak. */
static void trim_after_churn(struct triekv *db)
{
    uint64_t evicted = cache_evicted_bytes(db->cache);
    if (evicted - db->trimmed_at_evicted < db->opt.cache_bytes / 2 + (4u << 20))
        return;
    db->trimmed_at_evicted = evicted;
    malloc_trim(0);
}

static void *ckpt_main(void *arg)
{
    struct triekv *db = arg;
    uint64_t last_run = kv_now_ms();
    pthread_mutex_lock(&db->ckpt_mu);
    while (!db->ckpt_stop) {
        if (!db->ckpt_wanted) {
            /* wake at least every second: memory trimming, and the interval checkpoint when due */
            uint64_t wait = db->opt.checkpoint_interval_ms < 1000 ? db->opt.checkpoint_interval_ms : 1000;
            struct timespec dl = kv_deadline_after_ms(wait);
            pthread_cond_timedwait(&db->ckpt_cv, &db->ckpt_mu, &dl);
        }
        if (db->ckpt_stop)
            break;
        bool due =
            kv_now_ms() - last_run >= db->opt.checkpoint_interval_ms && atomic_load(&db->dirty_bytes) > 0;
        bool run = db->ckpt_wanted || due;
        if (run)
            last_run = kv_now_ms();
        db->ckpt_wanted = false;
        pthread_mutex_unlock(&db->ckpt_mu);
        if (run && atomic_load(&db->read_only) == 0)
            trie_ckpt_run(db);
        trim_after_churn(db);
        pthread_mutex_lock(&db->ckpt_mu);
    }
    pthread_mutex_unlock(&db->ckpt_mu);
    return NULL;
}

static void *sync_main(void *arg)
{
    struct triekv *db = arg;
    pthread_mutex_lock(&db->ckpt_mu);
    while (!db->ckpt_stop) {
        struct timespec dl = kv_deadline_after_ms(db->opt.fsync_interval_ms);
        pthread_cond_timedwait(&db->ckpt_cv, &db->ckpt_mu, &dl);
        if (db->ckpt_stop)
            break;
        pthread_mutex_unlock(&db->ckpt_mu);
        pthread_mutex_lock(&db->maint_mu);
        if (atomic_load(&db->read_only) == 0)
            trie_wal_sync(db);
        pthread_mutex_unlock(&db->maint_mu);
        pthread_mutex_lock(&db->ckpt_mu);
    }
    pthread_mutex_unlock(&db->ckpt_mu);
    return NULL;
}

int trie_ckpt_start(struct triekv *db)
{
    int rc = db->opt.manual_checkpoints ? 0 : pthread_create(&db->ckpt_thread, NULL, ckpt_main, db);
    if (rc != 0)
        return rc;
    db->ckpt_thread_running = !db->opt.manual_checkpoints;
    if (db->opt.fsync == TRIEKV_FSYNC_INTERVAL) {
        rc = pthread_create(&db->sync_thread, NULL, sync_main, db);
        if (rc != 0) {
            trie_ckpt_stop(db);
            return rc;
        }
        db->sync_thread_running = true;
    }
    return KV_OK;
}

void trie_ckpt_stop(struct triekv *db)
{
    pthread_mutex_lock(&db->ckpt_mu);
    db->ckpt_stop = true;
    pthread_cond_broadcast(&db->ckpt_cv);
    pthread_mutex_unlock(&db->ckpt_mu);
    if (db->ckpt_thread_running)
        pthread_join(db->ckpt_thread, NULL);
    db->ckpt_thread_running = false;
    if (db->sync_thread_running)
        pthread_join(db->sync_thread, NULL);
    db->sync_thread_running = false;
}
