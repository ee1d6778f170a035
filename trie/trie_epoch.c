/* trie/trie_epoch.c - the store's epoch history: which run of a main committed which batches.
 *
 * Why: sequence numbers alone cannot tell two histories apart. A main that loses its newest
 * batches (unsynced writes under fsync default and a crash, or a restore from a backup) numbers
 * its next writes with the seqs it lost, and a replica that had received the lost batches holds
 * the same numbers with other contents. So every open of a store picks a random 32-bit epoch that
 * stamps each batch this process commits (in the commit log record's header); a replicated batch
 * keeps its main's epoch, and a replica's log is its main's, record for record. The history lists
 * where each epoch began, (epoch, first_seq) with first_seq increasing. Two stores hold the same
 * batch S when they agree on the epoch of S: a divergence always begins in a run that started
 * after the loss, so the diverged batches carry an epoch the other store does not have there.
 *
 * Invariants
 *   1. Entries are in increasing first_seq; neighbours have different epochs.
 *   2. Every committed batch in (first entry's first_seq, seq] is covered: its epoch is that of the
 *      last entry at or before it. Batches before the first entry have no known epoch (a store
 *      opened before this history existed, a trimmed history, a replica loaded from a snapshot).
 *   3. The EPOCHS file holds every entry a checkpoint lets go of the commit log for: it is written
 *      (tmp, fdatasync, rename, dir fsync) before the CHECKPOINT record. Entries after the
 *      checkpoint are rebuilt by recovery from the commit log records themselves.
 *
 * File EPOCHS: magic(4) crc32c(4, over [8, end)) version(4) count(4), then count entries of
 * epoch(4) reserved(4) first_seq(8), little-endian.
 *
 * Threads: the committer appends (maint_mu held); replication senders and the checkpointer read;
 * epoch_mu guards the array. */
#include "trie/trie_int.h"
#include "common/kv_assert.h"
#include "common/kv_crc.h"
#include "common/kv_log.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#define EPOCHS_MAGIC 0x45564b54u /* "TKVE" */
#define EPOCHS_HDR   16u
#define EPOCH_ENTRY  16u

uint32_t trie_epoch_new(uint32_t avoid)
{
    uint32_t e = 0;
    while (e == 0 || e == avoid) {
        if (getrandom(&e, sizeof e, 0) != (ssize_t)sizeof e) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            e = (uint32_t)ts.tv_nsec ^ (uint32_t)ts.tv_sec ^ (uint32_t)getpid() << 16;
        }
    }
    return e;
}

/* Appends (epoch, seq) under epoch_mu, dropping the oldest entry when full. */
static void push_locked(struct trie_epochs *h, uint32_t epoch, uint64_t seq)
{
    if (h->n == TRIE_EPOCHS_MAX) {
        memmove(h->v, h->v + 1, (TRIE_EPOCHS_MAX - 1) * sizeof *h->v);
        h->n--;
    }
    h->v[h->n].epoch = epoch;
    h->v[h->n].first_seq = seq;
    h->n++;
    h->dirty = true;
}

void trie_epoch_note(struct triekv *db, uint64_t seq, uint32_t epoch)
{
    struct trie_epochs *h = &db->epochs;
    pthread_mutex_lock(&h->mu);
    /* A replay from an older checkpoint revisits batches the history already covers. */
    if (h->n == 0 || (seq > h->v[h->n - 1].first_seq && epoch != h->v[h->n - 1].epoch))
        push_locked(h, epoch, seq);
    pthread_mutex_unlock(&h->mu);
}

void trie_epoch_reset(struct triekv *db, uint64_t seq, uint32_t epoch)
{
    struct trie_epochs *h = &db->epochs;
    pthread_mutex_lock(&h->mu);
    h->n = 0;
    h->dirty = true;
    if (seq > 0)
        push_locked(h, epoch, seq);
    pthread_mutex_unlock(&h->mu);
}

void trie_epoch_trim(struct triekv *db, uint64_t seq)
{
    struct trie_epochs *h = &db->epochs;
    pthread_mutex_lock(&h->mu);
    while (h->n > 0 && h->v[h->n - 1].first_seq > seq) {
        h->n--;
        h->dirty = true;
    }
    pthread_mutex_unlock(&h->mu);
}

int triekv_epoch_at(struct triekv *db, uint64_t seq, uint32_t *epoch)
{
    struct trie_epochs *h = &db->epochs;
    int rc = KV_E_NOT_FOUND;
    if (seq == 0 || seq > atomic_load(&db->seq))
        return rc;
    pthread_mutex_lock(&h->mu);
    size_t lo = 0, hi = h->n; /* the last entry with first_seq <= seq */
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (h->v[mid].first_seq <= seq)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo > 0) {
        *epoch = h->v[lo - 1].epoch;
        rc = KV_OK;
    }
    pthread_mutex_unlock(&h->mu);
    return rc;
}

int trie_epoch_save(struct triekv *db)
{
    struct trie_epochs *h = &db->epochs;
    pthread_mutex_lock(&h->mu);
    if (!h->dirty) {
        pthread_mutex_unlock(&h->mu);
        return KV_OK;
    }
    size_t len = EPOCHS_HDR + h->n * EPOCH_ENTRY;
    uint8_t *buf = kv_malloc(len);
    kv_put_u32(buf, EPOCHS_MAGIC);
    kv_put_u32(buf + 8, TRIE_FORMAT_VERSION);
    kv_put_u32(buf + 12, (uint32_t)h->n);
    for (size_t i = 0; i < h->n; i++) {
        uint8_t *e = buf + EPOCHS_HDR + i * EPOCH_ENTRY;
        kv_put_u32(e, h->v[i].epoch);
        kv_put_u32(e + 4, 0);
        kv_put_u64(e + 8, h->v[i].first_seq);
    }
    h->dirty = false; /* set again by any change while the file is written */
    pthread_mutex_unlock(&h->mu);
    kv_put_u32(buf + 4, kv_crc32c(0, buf + 8, len - 8));

    int rc = trie_file_replace(db, TRIE_EPOCHS_FILE, buf, len);
    free(buf);
    if (rc != 0) {
        pthread_mutex_lock(&h->mu);
        h->dirty = true;
        pthread_mutex_unlock(&h->mu);
    }
    return rc;
}

int trie_epoch_load(struct triekv *db)
{
    struct trie_epochs *h = &db->epochs;
    h->n = 0;
    h->dirty = false;
    int fd;
    int rc = db->io->openat(db->io->ctx, db->dirfd, TRIE_EPOCHS_FILE, O_RDONLY, 0, &fd);
    if (rc == ENOENT)
        return KV_OK; /* a new store, or one from before epochs: batches before the log's are unknown */
    if (rc != 0)
        return rc;
    uint64_t size = 0;
    rc = db->io->fsize(db->io->ctx, fd, &size);
    uint8_t *buf = NULL;
    size_t got = 0;
    if (rc == 0 && size <= EPOCHS_HDR + (uint64_t)TRIE_EPOCHS_MAX * EPOCH_ENTRY) {
        buf = kv_malloc(size ? size : 1);
        rc = db->io->pread(db->io->ctx, fd, buf, size, 0, &got);
    }
    db->io->close(db->io->ctx, fd);
    if (rc != 0) {
        free(buf);
        return rc;
    }
    bool ok = buf != NULL && got == size && size >= EPOCHS_HDR && kv_get_u32(buf) == EPOCHS_MAGIC &&
              kv_get_u32(buf + 4) == kv_crc32c(0, buf + 8, size - 8) &&
              size == EPOCHS_HDR + (uint64_t)kv_get_u32(buf + 12) * EPOCH_ENTRY;
    if (!ok) {
        free(buf);
        trie_log(db, KV_LOG_ERROR, "the epoch history (%s) is damaged", TRIE_EPOCHS_FILE);
        return KV_E_CORRUPT;
    }
    if (kv_get_u32(buf + 8) != TRIE_FORMAT_VERSION) {
        free(buf);
        return KV_E_VERSION;
    }
    uint32_t n = kv_get_u32(buf + 12);
    for (uint32_t i = 0; i < n; i++) {
        const uint8_t *e = buf + EPOCHS_HDR + (size_t)i * EPOCH_ENTRY;
        uint64_t first = kv_get_u64(e + 8);
        if (i > 0 && first <= h->v[i - 1].first_seq) {
            free(buf);
            trie_log(db, KV_LOG_ERROR, "the epoch history (%s) is out of order", TRIE_EPOCHS_FILE);
            return KV_E_CORRUPT;
        }
        h->v[i].epoch = kv_get_u32(e);
        h->v[i].first_seq = first;
    }
    h->n = n;
    free(buf);
    return KV_OK;
}
