/* trie/trie.c - the public entry points of triekv.h that are not writes or scans: options, open
 * (with recovery), close, point reads and statistics, and the engine's error reporting.
 *
 * Open, in order:
 *   1. lock the directory (flock on LOCK), pick the I/O backend;
 *   2. read CHECKPOINT (S: every batch <= S is in the partition logs);
 *   3. delete leftover .tmp files (half-written splits, compactions, new logs: never published);
 *   4. build the trie from the *.dat names and count keys from each log's trailing summary; a log
 *      without a valid summary (a flush cut short) is loaded whole, which cuts its torn tail;
 *   5. read the epoch history, replay the commit log after S into the pages (idempotent per key
 *      version; every record's epoch extends the history), and pick this run's epoch;
 *   6. finish splits that published children but did not rewrite their parent;
 *   7. start the committer and checkpointer threads. */
#include "trie/trie_int.h"
#include "common/kv_assert.h"
#include "common/kv_codec.h"
#include "common/kv_log.h"
#include "common/kv_time.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#define MiB (1024ull * 1024)

void triekv_options_init(struct triekv_options *o)
{
    memset(o, 0, sizeof *o);
    o->fsync = TRIEKV_FSYNC_DEFAULT;
    o->fsync_batch_writes = 100;
    o->fsync_interval_ms = 1000;
    o->cache_bytes = 500 * MiB;
    o->max_page_size = 4 * MiB;
    o->max_key_size = 1024;
    o->max_value_size = 64 * MiB;
    o->wal_segment_bytes = 64 * MiB;
    o->checkpoint_wal_bytes = 256 * MiB;
    o->checkpoint_interval_ms = 60000;
    o->retention_bytes_max = 1024 * MiB;
    o->io_backend = TRIEKV_IO_AUTO;
}

static int options_check(const struct triekv_options *o)
{
    if ((unsigned)o->fsync > TRIEKV_FSYNC_INTERVAL || (unsigned)o->io_backend > TRIEKV_IO_POSIX)
        return KV_E_INVALID;
    if (o->fsync_batch_writes < 1 || o->fsync_batch_writes > 1000000)
        return KV_E_INVALID;
    if (o->fsync_interval_ms < 1 || o->fsync_interval_ms > 3600000)
        return KV_E_INVALID;
    if (o->max_page_size < TRIEKV_PAGE_SIZE_MIN || o->max_page_size > TRIEKV_PAGE_SIZE_MAX)
        return KV_E_INVALID;
    if (o->max_key_size < 1 || o->max_key_size > TRIEKV_KEY_LEN_MAX)
        return KV_E_INVALID;
    if (o->max_value_size > TRIEKV_VALUE_LEN_MAX)
        return KV_E_INVALID;
    if (o->wal_segment_bytes < TRIEKV_PAGE_SIZE_MIN || o->wal_segment_bytes > (4ull << 30))
        return KV_E_INVALID;
    if (o->checkpoint_wal_bytes < 64 * 1024 || o->checkpoint_interval_ms < 10)
        return KV_E_INVALID;
    return KV_OK;
}

int triekv_fsync_parse(const char *name, enum triekv_fsync *out)
{
    static const char *const names[] = {"default", "strict", "batch", "interval"};
    for (int i = 0; i < 4; i++) {
        if (strcmp(name, names[i]) == 0) {
            *out = (enum triekv_fsync)i;
            return KV_OK;
        }
    }
    return KV_E_INVALID;
}

const char *triekv_fsync_name(enum triekv_fsync f)
{
    switch (f) {
    case TRIEKV_FSYNC_DEFAULT:
        return "default";
    case TRIEKV_FSYNC_STRICT:
        return "strict";
    case TRIEKV_FSYNC_BATCH:
        return "batch";
    case TRIEKV_FSYNC_INTERVAL:
        return "interval";
    }
    return "unknown";
}

/* ---- reporting -------------------------------------------------------------------------------- */

void trie_log(struct triekv *db, int level, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (db->opt.log)
        db->opt.log(db->opt.log_arg, level, msg);
    else
        kv_log((enum kv_log_level)level, TRIE_COMPONENT, "%s", msg);
}

void trie_set_read_only(struct triekv *db, int err, const char *what)
{
    int expected = 0;
    if (atomic_compare_exchange_strong(&db->read_only, &expected, err))
        trie_log(db, KV_LOG_ERROR, "%s: %s; writes are refused until the store is reopened", what,
                 kv_strerror(err));
}

void trie_set_damaged(struct triekv *db, struct trie_node *n, int err, const char *what)
{
    int expected = 0;
    if (!atomic_compare_exchange_strong(&n->damaged, &expected, err))
        return;
    atomic_fetch_add(&db->st_damaged, 1);
    struct kv_buf name = {0};
    trie_part_name(n->prefix, n->plen, false, &name);
    trie_log(db, KV_LOG_ERROR, "%s %s: %s; its keys answer with this error", what, (const char *)name.ptr,
             kv_strerror(err));
    kv_buf_free(&name);
}

/* ---- open ------------------------------------------------------------------------------------- */

static int pick_io(struct triekv *db)
{
    if (db->opt.io) {
        db->io = db->opt.io;
        return KV_OK;
    }
    if (db->opt.io_backend != TRIEKV_IO_POSIX) {
        int rc = trie_io_uring_create(&db->io_owned);
        if (rc == 0) {
            db->io = db->io_owned;
            return KV_OK;
        }
        if (db->opt.io_backend == TRIEKV_IO_URING)
            return rc;
        trie_log(db, KV_LOG_WARN, "io_uring unavailable (io_uring_setup: %s): using posix i/o", strerror(rc));
    }
    db->io = trie_io_posix();
    return KV_OK;
}

/* Creates the nodes on the path to prefix; the last one has a log file. */
static void add_partition(struct triekv *db, const uint8_t *prefix, uint32_t plen)
{
    struct trie_node *n = db->root;
    for (uint32_t d = 0; d < plen; d++) {
        struct trie_node *c = trie_kid(n, prefix[d]);
        if (c == NULL) {
            c = trie_node_new(n, prefix[d]);
            trie_node_publish(c);
            atomic_fetch_add(&db->st_partitions, 1);
            if (d + 1 > atomic_load(&db->st_depth_max))
                atomic_store(&db->st_depth_max, d + 1);
        }
        n = c;
    }
    n->has_file = true;
}

static bool has_suffix(const char *s, size_t len, const char *suffix)
{
    size_t n = strlen(suffix);
    return len >= n && memcmp(s + len - n, suffix, n) == 0;
}

/* Steps 3 and 4a: deletes .tmp files, creates a node for every partition log. */
static int scan_dir(struct triekv *db)
{
    int fd = dup(db->dirfd);
    DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
    if (d == NULL) {
        int e = errno;
        if (fd >= 0)
            close(fd);
        return e;
    }
    rewinddir(d); /* a dup shares the directory's position with every other dup */
    int rc = KV_OK;
    bool removed = false;
    struct dirent *de;
    struct kv_buf prefix = {0};
    while (rc == KV_OK && (de = readdir(d)) != NULL) {
        size_t len = strlen(de->d_name);
        if (has_suffix(de->d_name, len, TRIE_TMP_EXT)) {
            rc = db->io->unlinkat(db->io->ctx, db->dirfd, de->d_name);
            removed = true;
            continue;
        }
        if (!has_suffix(de->d_name, len, TRIE_PART_EXT))
            continue;
        prefix.len = 0;
        size_t stem = len - strlen(TRIE_PART_EXT);
        if (kv_name_unescape(de->d_name, stem, &prefix) != KV_OK || prefix.len > TRIEKV_DEPTH_MAX) {
            trie_log(db, KV_LOG_WARN, "ignoring %s: not a partition log name", de->d_name);
            continue;
        }
        add_partition(db, prefix.ptr, (uint32_t)prefix.len);
    }
    kv_buf_free(&prefix);
    closedir(d);
    if (rc == KV_OK && removed)
        rc = db->io->fsync_dir(db->io->ctx, db->dirfd);
    return rc;
}

struct node_list {
    struct trie_node **v;
    size_t n, cap;
};

static void node_list_push(struct node_list *l, struct trie_node *n)
{
    if (l->n == l->cap) {
        l->cap = l->cap ? l->cap * 2 : 16;
        l->v = kv_realloc(l->v, l->cap * sizeof *l->v);
    }
    l->v[l->n++] = n;
}

/* Step 4b: counts n's keys from its summary, or by loading it. Logs that hold shadowed records
 * (an unfinished split) go to the retire list. */
static void count_partition(struct triekv *db, struct trie_node *n, struct node_list *retire)
{
    struct trie_summary s;
    uint64_t bytes;
    uint8_t kids[32] = {0};
    for (int b = 0; b < 256; b++) {
        if (trie_kid(n, (uint8_t)b))
            kids[b / 8] |= (uint8_t)(1u << (b % 8));
    }
    if (trie_part_read_summary(db, n, &bytes, &s) == KV_OK && memcmp(s.children, kids, 32) == 0) {
        n->keys = s.live_keys;
        n->value_bytes = s.live_value_bytes;
    } else {
        struct trie_page *p;
        if (trie_page_get(db, n, &p) != KV_OK)
            return; /* damaged: reported by trie_page_get; its keys answer with the error */
        n->keys = p->nrecs;
        n->value_bytes = p->live_value_bytes;
        if (p->shadowed > 0)
            node_list_push(retire, n);
        trie_page_put(db, n);
    }
    atomic_fetch_add(&db->st_keys, n->keys);
    atomic_fetch_add(&db->st_value_bytes, n->value_bytes);
}

static void count_tree(struct triekv *db, struct trie_node *n, struct node_list *retire)
{
    if (n->has_file)
        count_partition(db, n, retire);
    for (int b = 0; b < 256; b++) {
        struct trie_node *c = trie_kid(n, (uint8_t)b);
        if (c)
            count_tree(db, c, retire);
    }
}

/* Replay step: a batch the store cannot apply (its partition is damaged) leaves the store
 * read-only rather than unopenable; the commit log keeps the batch, since no checkpoint runs. */
static int replay_apply(struct triekv *db, uint64_t seq, const uint8_t *payload, uint32_t len,
                        uint32_t op_count)
{
    if (atomic_load(&db->read_only) != 0)
        return KV_OK;
    int rc = trie_apply_payload(db, seq, payload, len, op_count, true);
    if (rc == KV_E_CORRUPT || rc == KV_E_VERSION) {
        trie_log(db, KV_LOG_ERROR, "cannot replay batch %" PRIu64 " into a damaged partition", seq);
        trie_set_read_only(db, rc, "commit log replay incomplete");
        return KV_OK;
    }
    return rc;
}

static void db_free(struct triekv *db)
{
    trie_wal_close(db);
    trie_node_free_tree(db->root);
    while (db->graveyard) {
        struct trie_node *g = db->graveyard;
        db->graveyard = g->parent; /* a buried root links to the next through parent */
        g->parent = NULL;
        trie_node_free_tree(g);
    }
    cache_destroy(db->cache);
    if (db->io_owned) {
        db->io_owned->destroy(db->io_owned->ctx);
        free(db->io_owned);
    }
    if (db->lockfd >= 0)
        close(db->lockfd); /* releases the flock */
    if (db->dirfd >= 0)
        close(db->dirfd);
    pthread_mutex_destroy(&db->q_mu);
    pthread_cond_destroy(&db->committer_cv);
    pthread_mutex_destroy(&db->maint_mu);
    pthread_rwlock_destroy(&db->view_lock);
    pthread_mutex_destroy(&db->wal.mu);
    pthread_mutex_destroy(&db->ckpt_run_mu);
    pthread_mutex_destroy(&db->ckpt_mu);
    pthread_cond_destroy(&db->ckpt_cv);
    pthread_mutex_destroy(&db->dirty_mu);
    pthread_mutex_destroy(&db->seq_mu);
    pthread_mutex_destroy(&db->epochs.mu);
    pthread_cond_destroy(&db->seq_cv);
    free(db->dir);
    free(db);
}

static struct triekv *db_alloc(const char *dir, const struct triekv_options *o)
{
    struct triekv *db = kv_calloc(1, sizeof *db);
    db->opt = *o;
    db->dir = kv_strdup(dir);
    db->dirfd = db->waldirfd = db->lockfd = -1;
    db->wal.fd = -1;
    pthread_mutex_init(&db->q_mu, NULL);
    kv_cond_init(&db->committer_cv);
    pthread_mutex_init(&db->maint_mu, NULL);
    pthread_rwlockattr_t ra;
    pthread_rwlockattr_init(&ra);
    /* scans hold view_lock for reading; the commit leader must not starve behind a stream of them */
    pthread_rwlockattr_setkind_np(&ra, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
    pthread_rwlock_init(&db->view_lock, &ra);
    pthread_rwlockattr_destroy(&ra);
    pthread_mutex_init(&db->wal.mu, NULL);
    pthread_mutex_init(&db->ckpt_run_mu, NULL);
    pthread_mutex_init(&db->ckpt_mu, NULL);
    kv_cond_init(&db->ckpt_cv);
    pthread_mutex_init(&db->dirty_mu, NULL);
    pthread_mutex_init(&db->seq_mu, NULL);
    pthread_mutex_init(&db->epochs.mu, NULL);
    kv_cond_init(&db->seq_cv);
    return db;
}

static int lock_dir(struct triekv *db)
{
    if (mkdir(db->dir, 0755) != 0 && errno != EEXIST)
        return errno;
    db->dirfd = open(db->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (db->dirfd < 0)
        return errno;
    db->lockfd = openat(db->dirfd, TRIE_LOCK_FILE, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (db->lockfd < 0)
        return errno;
    if (flock(db->lockfd, LOCK_EX | LOCK_NB) != 0)
        return errno == EWOULDBLOCK ? KV_E_LOCKED : errno;
    return KV_OK;
}

int triekv_open(const char *dir, const struct triekv_options *opt, struct triekv **out)
{
    struct triekv_options o;
    if (opt)
        o = *opt;
    else
        triekv_options_init(&o);
    int rc = options_check(&o);
    if (rc != KV_OK)
        return rc;
    struct triekv *db = db_alloc(dir, &o);
    struct node_list retire = {0};
    uint64_t ckpt = 0, last = 0;
    rc = lock_dir(db);
    if (rc == KV_OK)
        rc = pick_io(db);
    if (rc == KV_OK)
        rc = cache_create(o.cache_bytes, trie_cache_evict, trie_cache_release, db, &db->cache);
    if (rc != KV_OK)
        goto fail;
    db->root = trie_node_new(NULL, 0);
    atomic_store(&db->st_partitions, 1);
    db->recovering = true;
    rc = trie_resync_recover(db);
    if (rc == KV_OK)
        rc = trie_ckpt_read(db, &ckpt);
    if (rc == KV_OK)
        rc = trie_epoch_load(db);
    if (rc == KV_OK)
        rc = scan_dir(db);
    if (rc != KV_OK)
        goto fail;
    count_tree(db, db->root, &retire);
    rc = trie_wal_recover(db, ckpt, replay_apply, &last);
    db->recovering = false;
    if (rc != KV_OK)
        goto fail;
    db->next_seq = last + 1;
    trie_publish_seq(db, last);
    atomic_store(&db->checkpoint_seq, ckpt);
    trie_epoch_trim(db, last);
    pthread_mutex_lock(&db->epochs.mu);
    db->epoch = trie_epoch_new(db->epochs.n ? db->epochs.v[db->epochs.n - 1].epoch : 0);
    pthread_mutex_unlock(&db->epochs.mu);
    for (size_t i = 0; i < retire.n && atomic_load(&db->read_only) == 0; i++) {
        rc = trie_ckpt_retire(db, retire.v[i]);
        if (rc != KV_OK)
            goto fail;
    }
    if (retire.n)
        trie_log(db, KV_LOG_INFO, "finished %zu interrupted split(s)", retire.n);
    free(retire.v);
    retire.v = NULL;
    rc = trie_commit_start(db);
    if (rc != KV_OK)
        goto fail;
    rc = trie_ckpt_start(db);
    if (rc != KV_OK) {
        trie_commit_stop(db);
        goto fail;
    }
    if (last > ckpt)
        trie_ckpt_poke(db, true); /* trim the replayed commit log soon */
    trie_log(db, KV_LOG_INFO, "opened %s: %" PRIu64 " keys, seq %" PRIu64 ", %" PRIu64 " partitions, i/o %s",
             dir, atomic_load(&db->st_keys), last, atomic_load(&db->st_partitions), db->io->name);
    *out = db;
    return KV_OK;
fail:
    free(retire.v);
    db_free(db);
    return rc;
}

int triekv_close(struct triekv *db)
{
    if (db == NULL)
        return KV_OK;
    trie_commit_stop(db);
    trie_ckpt_stop(db);
    int rc = atomic_load(&db->read_only) ? KV_OK : trie_ckpt_run(db);
    db_free(db);
    return rc;
}

/* ---- reads ------------------------------------------------------------------------------------ */

static int key_check(const struct triekv *db, struct kv_slice key)
{
    if (key.len == 0)
        return KV_E_KEY_EMPTY;
    if (key.len > db->opt.max_key_size)
        return KV_E_KEY_TOO_LONG;
    return KV_OK;
}

int triekv_get(struct triekv *db, struct kv_slice key, struct triekv_value **out)
{
    int rc = key_check(db, key);
    if (rc != KV_OK)
        return rc;
    atomic_fetch_add_explicit(&db->st_gets, 1, memory_order_relaxed);
    /* A split publishes children before trimming the parent, so a lookup that meets a trimmed
     * parent sees the child and goes round again; each round moves at least one level deeper. */
    for (uint32_t round = 0; round <= TRIEKV_DEPTH_MAX + 1; round++) {
        struct trie_node *n = trie_route(db, key);
        struct trie_page *p;
        rc = trie_page_get(db, n, &p);
        if (rc != KV_OK)
            return rc;
        pthread_rwlock_rdlock(&p->lock);
        bool moved = key.len > n->plen && trie_kid(n, key.ptr[n->plen]) != NULL;
        struct triekv_value *v = moved ? NULL : trie_page_find(p, key);
        if (v)
            trie_val_ref(v);
        pthread_rwlock_unlock(&p->lock);
        trie_page_put(db, n);
        if (moved)
            continue;
        atomic_fetch_add_explicit(v ? &db->st_get_hits : &db->st_get_misses, 1, memory_order_relaxed);
        if (v == NULL)
            return KV_E_NOT_FOUND;
        *out = v;
        return KV_OK;
    }
    KV_ASSERT(!"lookup did not settle");
    return KV_E_NOT_FOUND;
}

/* ---- statistics ------------------------------------------------------------------------------- */

void triekv_stats(struct triekv *db, struct triekv_stats *st)
{
    memset(st, 0, sizeof *st);
#define LOAD(x) atomic_load_explicit(&db->x, memory_order_relaxed)
    st->keys = LOAD(st_keys);
    st->value_bytes = LOAD(st_value_bytes);
    st->seq = LOAD(seq);
    st->durable_seq = LOAD(wal.synced_seq);
    st->checkpoint_seq = LOAD(checkpoint_seq);
    st->gets = LOAD(st_gets);
    st->get_hits = LOAD(st_get_hits);
    st->get_misses = LOAD(st_get_misses);
    st->puts = LOAD(st_puts);
    st->deletes = LOAD(st_deletes);
    st->batches = LOAD(st_batches);
    st->precondition_failures = LOAD(st_prec_fail);
    st->partitions = LOAD(st_partitions);
    st->partition_depth_max = LOAD(st_depth_max);
    st->splits = LOAD(st_splits);
    st->compactions = LOAD(st_compactions);
    st->checkpoints = LOAD(st_checkpoints);
    st->wal_bytes = LOAD(wal.total_bytes);
    st->wal_syncs = LOAD(wal.syncs);
    st->group_commits = LOAD(st_groups);
    st->corrupt_partitions = LOAD(st_damaged);
    st->read_only_reason = LOAD(read_only);
#undef LOAD
    st->read_only = st->read_only_reason != 0;
    pthread_mutex_lock(&db->wal.mu);
    st->wal_segments = db->wal.nsegs;
    pthread_mutex_unlock(&db->wal.mu);
    struct cache_stats cs;
    cache_stats(db->cache, &cs);
    st->cache_budget_bytes = cs.budget_bytes;
    st->cache_bytes = cs.bytes;
    st->cache_pinned_bytes = cs.pinned_bytes;
    st->cache_pages = cs.entries;
    st->cache_hits = cs.hits;
    st->cache_misses = cs.misses;
    st->cache_evictions = cs.evictions;
    st->cache_evicted_bytes = cs.evicted_bytes;
    st->fsync = db->opt.fsync;
    st->io_backend = db->io->name;
}
