/* trie/trie_int.h - private to trie/: on-disk formats, in-memory structures, and the functions
 * the engine's files share. Nothing outside trie/ (and its unit tests) includes this.
 *
 * Locks, in the order they may nest (never take an earlier one while holding a later one):
 *   db->q_mu          the writer queue and leader hand-off
 *   db->maint_mu      one structural actor at a time: the commit leader for the duration of a
 *                     group, or the checkpointer while it flushes, splits or compacts
 *   db->view_lock     rwlock; held for writing while a group is applied or a split/compaction
 *                     is published, for reading by scans (atomic view of batches)
 *   page->lock        rwlock on one page's contents
 *   cache (its mutex) via cache_* calls
 *   node->mu          leaf: page pointer, page references, load generation
 *   db->dirty_mu, db->wal.mu, db->ckpt_mu: leaves
 * The cache's evict callback takes node->mu while the cache mutex is held; node->mu holders never
 * call into the cache, which keeps that order acyclic. */
#ifndef TRIE_INT_H
#define TRIE_INT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/uio.h>

#include "cache/cache.h"
#include "common/kv_buf.h"
#include "common/kv_err.h"
#include "trie/trie_io.h"
#include "trie/triekv.h"

#define TRIE_COMPONENT "trie" /* log component name */

/* ---- record format (partition logs) ----------------------------------------------------------
 * Partition log record, little-endian, encoded field by field (never by writing a struct):
 *   off size field
 *   0   4    magic      TRIE_REC_MAGIC; lets a reader tell a torn tail from data
 *   4   4    crc32c     over bytes [8, 24 + key_len + value_len)
 *   8   8    seq        commit sequence number of the write (the key's version)
 *   16  2    key_len    1..max_key_size (0 for a summary record)
 *   18  1    type       TRIE_REC_PUT, TRIE_REC_DEL or TRIE_REC_SUMMARY
 *   19  1    reserved   0
 *   20  4    value_len  0..max_value_size (0 for deletes, TRIE_SUMMARY_LEN for summaries)
 *   24  ...  key bytes, then value bytes
 * A summary record ends every flush and every rewrite; its value is
 *   0 8 live_keys   8 8 live_value_bytes   16 8 live_rec_bytes   24 32 children bitmap
 * describing the log up to that point, so open can count keys without reading whole logs. */
#define TRIE_REC_MAGIC   0x52564b54u /* "TKVR" */
#define TRIE_REC_HDR     24u
#define TRIE_SUMMARY_LEN 56u
enum trie_rec_type { TRIE_REC_PUT = 1, TRIE_REC_DEL = 2, TRIE_REC_SUMMARY = 3 };

/* Partition log file header, at offset 0:
 *   0  4  magic      TRIE_PART_MAGIC
 *   4  4  crc32c     over bytes [8, 16 + prefix_len)
 *   8  2  version    TRIE_FORMAT_VERSION
 *   10 2  prefix_len
 *   12 4  reserved   0
 *   16 .. prefix bytes (checked against the prefix decoded from the file name) */
#define TRIE_PART_MAGIC     0x50564b54u /* "TKVP" */
#define TRIE_PART_HDR       16u
#define TRIE_FORMAT_VERSION 1u

/* Commit log (WAL) record: one committed batch.
 *   0  4  magic        TRIE_WAL_MAGIC
 *   4  4  hdr_crc      crc32c over bytes [8, 32)
 *   8  8  seq
 *   16 4  payload_len
 *   20 4  payload_crc  crc32c over the payload
 *   24 4  op_count
 *   28 4  epoch        the run of the main that committed it (trie_epoch.c; 0 in old logs)
 *   32 .. payload: op_count operations, each
 *         0 1 type (TRIE_REC_PUT/DEL)  1 1 reserved  2 2 key_len  4 4 value_len  8 .. key, value
 * The payload checksum is computed by the writer before it queues (outside every lock); the
 * leader stamps seq and the header checksum. */
#define TRIE_WAL_MAGIC 0x57564b54u /* "TKVW" */
#define TRIE_WAL_HDR   32u
#define TRIE_OP_HDR    8u

/* The checkpoint record, file CHECKPOINT, replaced atomically (tmp, fsync, rename, dir fsync):
 *   0 4 magic TRIE_CKPT_MAGIC   4 4 crc32c over [8, 24)   8 4 version   12 4 reserved
 *   16 8 seq: every batch <= seq is in the partition logs and durable */
#define TRIE_CKPT_MAGIC 0x43564b54u /* "TKVC" */
#define TRIE_CKPT_LEN   24u

#define TRIE_WAL_DIR     "wal"
#define TRIE_CKPT_FILE   "CHECKPOINT"
#define TRIE_EPOCHS_FILE "EPOCHS"
#define TRIE_LOCK_FILE   "LOCK"
#define TRIE_PART_EXT    ".dat"
#define TRIE_TMP_EXT     ".tmp"

/* ---- in-memory records ---------------------------------------------------------------------- */

/* One version of one key: immutable after creation, reference-counted. Pages, dirty logs and
 * readers each hold references; this is the public struct triekv_value. */
struct triekv_value {
    _Atomic uint32_t refs;
    uint8_t type;    /* TRIE_REC_PUT or TRIE_REC_DEL (tombstones live only in dirty logs) */
    uint8_t pending; /* in a page's dirty log or in a flush in progress (guarded by page->lock) */
    uint32_t klen;
    uint32_t vlen;
    uint64_t seq;
    uint8_t bytes[]; /* key, then value */
};

struct triekv_value *trie_val_create(uint8_t type, uint64_t seq, const uint8_t *key, uint32_t klen,
                                     const uint8_t *val, uint32_t vlen);
static inline struct kv_slice trie_val_key(const struct triekv_value *v)
{
    return kv_slice_make(v->bytes, v->klen);
}
static inline struct kv_slice trie_val_value(const struct triekv_value *v)
{
    return kv_slice_make(v->bytes + v->klen, v->vlen);
}
void trie_val_ref(struct triekv_value *v);
size_t trie_val_mem(const struct triekv_value *v); /* bytes malloc really holds for v */

/* ---- record codec (trie_rec.c) ------------------------------------------------------------- */

static inline uint64_t trie_rec_size(uint32_t klen, uint32_t vlen)
{
    return TRIE_REC_HDR + (uint64_t)klen + vlen;
}
/* Writes the 24-byte header of a partition record (checksum over key and value included). */
void trie_rec_encode_hdr(uint8_t *hdr, uint8_t type, uint64_t seq, const uint8_t *key, uint32_t klen,
                         const uint8_t *val, uint32_t vlen);

struct trie_rec_view {
    uint8_t type;
    uint64_t seq;
    const uint8_t *key;
    uint32_t klen;
    const uint8_t *val;
    uint32_t vlen;
    uint64_t size; /* bytes the record occupies */
};
/* Decodes the record at p (avail bytes readable). KV_E_CORRUPT when it is not a whole valid
 * record (bad magic, checksum, type or lengths, or cut short). */
int trie_rec_decode(const uint8_t *p, uint64_t avail, uint32_t max_klen, struct trie_rec_view *out);

struct trie_summary {
    uint64_t live_keys;
    uint64_t live_value_bytes;
    uint64_t live_rec_bytes;
    uint8_t children[32]; /* bit b set: a child partition for next byte b existed */
};
void trie_summary_encode(uint8_t *val, const struct trie_summary *s);
void trie_summary_decode(const uint8_t *val, struct trie_summary *s);

void trie_part_hdr_encode(struct kv_buf *out, const uint8_t *prefix, uint32_t plen);
/* Checks the header at p against the expected prefix; *hdr_len gets its size. */
int trie_part_hdr_decode(const uint8_t *p, uint64_t avail, const uint8_t *prefix, uint32_t plen,
                         uint64_t *hdr_len);

struct trie_wal_hdr {
    uint64_t seq;
    uint32_t payload_len;
    uint32_t payload_crc;
    uint32_t op_count;
    uint32_t epoch;
};
void trie_wal_hdr_encode(uint8_t *p, const struct trie_wal_hdr *h);
/* KV_E_CORRUPT for a bad magic or header checksum. */
int trie_wal_hdr_decode(const uint8_t *p, struct trie_wal_hdr *h);

/* One operation of a WAL payload, decoded in place. */
struct trie_op_view {
    uint8_t type;
    const uint8_t *key;
    uint32_t klen;
    const uint8_t *val;
    uint32_t vlen;
};
/* Walks a payload: *off is advanced past the op. KV_E_CORRUPT when malformed. */
int trie_op_next(const uint8_t *payload, uint32_t len, uint32_t *off, struct trie_op_view *op);

/* ---- pages (trie_page.c) ------------------------------------------------------------------- */

struct trie_slot {
    uint32_t hash;
    uint32_t idx1; /* index into recs + 1; 0 = empty slot */
};

/* A loaded partition: its live records indexed by hash, an ordered view built on demand, and
 * the dirty log of records applied since the last flush. Guarded by lock unless noted. */
struct trie_page {
    struct cache_entry ce; /* first: the cache hands these back */
    struct trie_node *node;
    pthread_rwlock_t lock;
    struct triekv_value **recs; /* live records, unordered; each holds one reference */
    uint32_t nrecs, cap_recs;
    struct trie_slot *slots; /* open addressing, linear probing, backward-shift deletion */
    uint32_t nslots;         /* power of two, load <= 3/4 */
    uint32_t *order;         /* recs indexes in key order; valid while order_valid */
    bool order_valid;
    pthread_mutex_t order_mu;    /* builds the order under a read lock */
    struct triekv_value **dirty; /* records (tombstones included) not yet in the log, seq order */
    uint32_t ndirty, cap_dirty;
    uint64_t dirty_bytes;         /* their encoded size */
    bool dirty_pinned;            /* one cache pin while dirty records exist, are flushing, or the
                                     page is on the dirty list */
    _Atomic bool on_dirty_list;   /* changed under db->dirty_mu; read without it as a hint */
    struct trie_page *dirty_next; /* guarded by db->dirty_mu */
    uint64_t live_value_bytes;
    uint64_t live_rec_bytes; /* encoded size of the live records: what a compaction would keep */
    uint64_t file_bytes;     /* valid bytes of the partition log (maintained by the checkpointer) */
    uint32_t shadowed;       /* records skipped at load because a child owns their key */
    size_t mem_bytes;        /* charged to the cache */
};

struct trie_page *trie_page_create(struct trie_node *node);
void trie_page_destroy(struct trie_page *p);
/* Lookup under the caller's lock; returns a borrowed pointer or NULL. */
struct triekv_value *trie_page_find(struct trie_page *p, struct kv_slice key);
/* Inserts or replaces (the page takes rec's reference; the replaced one is dropped).
 * Returns the change in mem_bytes. Caller holds the write lock. */
int64_t trie_page_set(struct trie_page *p, struct triekv_value *rec, struct triekv_value **old_out);
/* Removes key; *old_out gets the removed record's reference (caller drops it). */
int64_t trie_page_remove(struct trie_page *p, struct kv_slice key, struct triekv_value **old_out);
/* Appends to the dirty log (takes a reference). Returns the change in mem_bytes. */
int64_t trie_page_dirty_push(struct trie_page *p, struct triekv_value *rec);
/* Makes p->order valid (call with at least the read lock held). */
void trie_page_sort(struct trie_page *p);
/* First position in order whose key is > key (strict) or >= key. */
uint32_t trie_page_lower_bound(struct trie_page *p, struct kv_slice key, bool strict);
size_t trie_page_base_mem(const struct trie_page *p);

/* ---- the trie of partitions (trie_node.c) --------------------------------------------------- */

struct trie_kids {
    _Atomic(struct trie_node *) at[256];
};

struct trie_node {
    struct trie_node *parent;
    _Atomic(struct trie_kids *) kids; /* allocated with the first child, never freed before close */
    uint8_t *prefix;
    uint32_t plen;
    uint8_t byte; /* prefix[plen - 1]: the edge from parent */
    pthread_mutex_t mu;
    struct trie_page *page; /* guarded by mu */
    uint32_t page_refs;     /* guarded by mu: holders of page; eviction waits for 0 */
    uint64_t gen;           /* guarded by mu: bumped at every page install and eviction */
    bool has_file;          /* the partition log exists (changed under maint_mu) */
    _Atomic int damaged;    /* 0, or the error that makes this partition unreadable */
    uint64_t keys;          /* live keys and value bytes, kept current under maint_mu (apply) */
    uint64_t value_bytes;
};

struct triekv;

/* The deepest existing partition on key's path (lock-free; nodes are never freed while open). */
struct trie_node *trie_route(struct triekv *db, struct kv_slice key);
/* Returns the child of n for byte b, or NULL. */
struct trie_node *trie_kid(const struct trie_node *n, uint8_t b);
/* Creates child b of n (maint_mu held) without publishing it; trie_node_publish makes it visible. */
struct trie_node *trie_node_new(struct trie_node *parent, uint8_t b);
void trie_node_publish(struct trie_node *child);
void trie_node_free_tree(struct trie_node *root);

/* Pins the page of n, loading it when absent. *out stays valid until trie_page_put. Errors:
 * n->damaged, errno from reading. */
int trie_page_get(struct triekv *db, struct trie_node *n, struct trie_page **out);
void trie_page_put(struct triekv *db, struct trie_node *n);
/* The cache callbacks (trie_node.c). */
bool trie_cache_evict(void *arg, struct cache_entry *e);
void trie_cache_release(void *arg, struct cache_entry *e);
/* Recharges the cache after the page's mem_bytes changed by delta. */
void trie_page_charge(struct triekv *db, struct trie_page *p, int64_t delta);
/* Marks p dirty-pinned and queues it for the checkpointer (called after a dirty push). */
void trie_page_mark_dirty(struct triekv *db, struct trie_page *p);

/* ---- partition logs (trie_part.c) ------------------------------------------------------------ */

/* File name of prefix ("_root.dat", "ab_2f.dat", ...) into out (NUL-terminated). */
void trie_part_name(const uint8_t *prefix, uint32_t plen, bool tmp, struct kv_buf *out);
/* Reads n's log into a new page. In recovery a torn tail is cut off the file; elsewhere it is
 * KV_E_CORRUPT. Records shadowed by an existing child (a split that stopped before retiring its
 * parent) are skipped. */
int trie_part_load(struct triekv *db, struct trie_node *n, struct trie_page **out);
/* Reads only the trailing summary record: KV_E_NOT_FOUND when the log does not end with one. */
int trie_part_read_summary(struct triekv *db, struct trie_node *n, uint64_t *file_bytes,
                           struct trie_summary *s);
/* Writes a whole new log for prefix from recs[0..n) (sorted by key) plus a summary, as a .tmp
 * file, fsynced; *bytes gets its size. Publish it with trie_part_publish. */
int trie_part_write_tmp(struct triekv *db, const uint8_t *prefix, uint32_t plen,
                        struct triekv_value *const *recs, uint32_t n, const uint8_t children[32],
                        uint64_t *bytes);
int trie_part_publish(struct triekv *db, const uint8_t *prefix, uint32_t plen);
void trie_summary_of_page(const struct trie_page *p, struct trie_summary *s);

/* Bytes to write, gathered without copying large values: pieces are either a range of buf or a
 * borrowed pointer (a value inside a record the caller keeps referenced until the write ends). */
struct trie_part_out {
    struct kv_buf buf;
    struct {
        const uint8_t *ptr; /* NULL: the range [off, off + len) of buf */
        size_t off, len;
    } * pieces;
    int npieces, cap;
    size_t buf_mark; /* start of the buf range not yet turned into a piece */
    uint64_t bytes;
};

/* One page's share of a flush. */
struct trie_flush {
    struct trie_page *page;
    struct triekv_value **recs; /* the swapped-out dirty log; references held */
    uint32_t nrecs;
    struct trie_summary summary;
    uint64_t off;  /* where the records go: the end of the log */
    bool new_file; /* no log yet: written whole and published by rename */
    struct trie_part_out out;
    struct iovec *iov;
    int iovcnt;
    int fd;
};

/* Writes every share: appends to existing logs in one batch (each write followed by its fdatasync),
 * new logs as temporary files published by rename, then one directory fsync. */
int trie_part_flush(struct triekv *db, struct trie_flush *f, size_t n);
uint64_t trie_flush_bytes(const struct trie_flush *f); /* bytes the share wrote */
void trie_flush_free(struct trie_flush *f);

/* ---- commit log (trie_wal.c) --------------------------------------------------------------- */

struct trie_wal_seg {
    uint64_t first_seq; /* the segment's name; first batch it may hold */
    uint64_t bytes;
};

struct trie_wal {
    pthread_mutex_t mu; /* guards segs, nsegs (rotation by the leader, drops by the checkpointer) */
    struct trie_wal_seg *segs;
    uint32_t nsegs, cap_segs;
    int fd;                    /* the last segment, open for appending; leader only (and close) */
    uint64_t end;              /* its length; leader only */
    uint64_t unsynced_batches; /* batches written since the last fdatasync (leader) */
    _Atomic uint64_t synced_seq;
    _Atomic uint64_t bytes_since_ckpt;
    _Atomic uint64_t syncs;
    _Atomic uint64_t total_bytes;
    bool dirty;           /* written since the last sync; maint_mu */
    uint64_t written_seq; /* last batch written; maint_mu */
};

/* Opens the log directory, validates every segment and calls apply for each batch after
 * from_seq, in order. Cuts a torn tail off the last segment. *last_seq gets the last batch. */
typedef int (*trie_replay_fn)(struct triekv *db, uint64_t seq, const uint8_t *payload, uint32_t len,
                              uint32_t op_count);
int trie_wal_recover(struct triekv *db, uint64_t from_seq, trie_replay_fn apply, uint64_t *last_seq);
/* Appends iov (whole records for seqs first..last); syncs when sync. Rotates segments. */
int trie_wal_append(struct triekv *db, struct iovec *iov, int iovcnt, uint64_t first, uint64_t last,
                    bool sync);
/* fdatasync of the current segment when anything is unsynced. */
int trie_wal_sync(struct triekv *db);
/* Deletes whole segments holding only batches < keep_from. */
int trie_wal_drop_before(struct triekv *db, uint64_t keep_from);
void trie_wal_close(struct triekv *db);

/* ---- the engine ------------------------------------------------------------------------------ */

struct trie_op {
    uint8_t type;
    uint8_t cond;
    uint64_t version;
    uint32_t off; /* of the op header within payload */
    uint32_t klen;
    uint32_t vlen;
};

struct triekv_batch {
    struct trie_op *ops;
    uint32_t nops, cap_ops;
    struct kv_buf payload; /* the WAL payload: op headers, keys, values */
    uint32_t payload_crc;  /* set when queued */
};

struct trie_writer {
    struct triekv_batch *batch;
    uint64_t given_seq;   /* a replicated batch keeps its main's number (0: take the next) */
    uint32_t given_epoch; /* and its main's epoch */
    bool owns_batch;
    triekv_done_fn done; /* NULL: a thread waits on cv */
    void *arg;
    pthread_cond_t cv;
    bool finished;
    int rc;
    struct triekv_write_result res;
    uint8_t wal_hdr[TRIE_WAL_HDR];
    bool effective; /* writes something: takes a seq and goes to the WAL */
    struct trie_writer *next;
};

/* The epoch history (trie_epoch.c). */
#define TRIE_EPOCHS_MAX 4096 /* entries kept (one per run of a main); the oldest go first */
struct trie_epochs {
    pthread_mutex_t mu;
    struct {
        uint32_t epoch;
        uint64_t first_seq;
    } v[TRIE_EPOCHS_MAX];
    size_t n;
    bool dirty; /* changed since EPOCHS was last written */
};

struct triekv {
    struct triekv_options opt;
    char *dir;
    int dirfd, waldirfd, lockfd;
    const struct trie_io *io;
    struct trie_io *io_owned;
    struct trie_node *root;
    struct cache *cache;

    pthread_mutex_t q_mu;
    pthread_cond_t committer_cv;
    struct trie_writer *q_head, *q_tail;
    bool leader_active;
    bool stopping; /* q_mu: no new writers; the committer exits when the queue is empty */
    pthread_t committer;

    pthread_mutex_t maint_mu;
    pthread_rwlock_t view_lock;
    _Atomic uint64_t seq;   /* last committed and visible batch */
    pthread_mutex_t seq_mu; /* with seq_cv: triekv_wait_seq sleeps here */
    pthread_cond_t seq_cv;
    _Atomic int seq_waiters;
    struct trie_node *graveyard; /* tries replaced by a resync: nodes stay until close (readers) */
    _Atomic bool resyncing;      /* between triekv_snapshot_begin and _end */
    uint64_t next_seq;           /* leader (maint_mu) */
    uint32_t epoch;              /* stamps the batches this process commits (trie_epoch.c) */
    struct trie_epochs epochs;
    struct trie_wal wal;
    _Atomic int read_only; /* 0, or the error that stopped writes */
    bool recovering;       /* during open's replay */

    pthread_mutex_t ckpt_run_mu; /* one checkpoint at a time */
    pthread_mutex_t ckpt_mu;
    pthread_cond_t ckpt_cv;
    bool ckpt_wanted, ckpt_stop;
    uint64_t ckpt_requests, ckpt_done; /* ckpt_mu: triekv_checkpoint waits for its request */
    int ckpt_last_rc;
    pthread_t ckpt_thread;
    _Atomic uint64_t checkpoint_seq;
    bool ckpt_thread_running;
    pthread_t sync_thread;
    bool sync_thread_running;

    pthread_mutex_t dirty_mu;
    struct trie_page *dirty_head;
    _Atomic uint64_t dirty_bytes;
    uint64_t trimmed_at_evicted; /* checkpointer thread: cache evictions at the last malloc_trim */

    uint64_t (*retention_fn)(void *arg);
    void *retention_arg;

    /* statistics */
    _Atomic uint64_t st_keys, st_value_bytes, st_gets, st_puts, st_deletes, st_batches, st_prec_fail;
    _Atomic uint64_t st_get_hits, st_get_misses;
    _Atomic uint64_t st_partitions, st_depth_max, st_splits, st_compactions, st_checkpoints, st_groups;
    _Atomic uint64_t st_damaged;
};

/* Engine log line through opt.log (or kv_log). */
void trie_log(struct triekv *db, int level, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* Stops writes for good (fail-stop); logs the reason once. */
void trie_set_read_only(struct triekv *db, int err, const char *what);
/* Marks a partition unreadable and logs it once. */
void trie_set_damaged(struct triekv *db, struct trie_node *n, int err, const char *what);
/* Applies one WAL payload to the pages (maint_mu held). With guard (recovery, replicated batches),
 * ops older than a key's current version are skipped, which makes replay idempotent (same-version
 * ops are re-applied in order: a batch may touch a key more than once). */
int trie_apply_payload(struct triekv *db, uint64_t seq, const uint8_t *payload, uint32_t len,
                       uint32_t op_count, bool guard);
/* Publishes seq as committed and wakes triekv_wait_seq sleepers. */
void trie_publish_seq(struct triekv *db, uint64_t seq);
/* Writes writers[0..n) (batches with given_seq set, contiguous from db->seq + 1) through the
 * commit pipeline. Returns the first failure. */
int trie_commit_given(struct triekv *db, struct trie_writer **w, uint32_t n);
/* Removes the resync marker's leftovers at open: an unfinished resync leaves an empty store. */
int trie_resync_recover(struct triekv *db);
#define TRIE_RESYNC_FILE "RESYNC"
/* Wakes the checkpointer when thresholds are passed (or always, with force). */
void trie_ckpt_poke(struct triekv *db, bool force);
bool trie_ckpt_pressure(struct triekv *db);
int trie_ckpt_start(struct triekv *db);
void trie_ckpt_stop(struct triekv *db);
int trie_ckpt_run(struct triekv *db); /* one checkpoint on the calling thread (close, recovery) */
/* Rewrites n's log without the records its children shadow (finishing an interrupted split). */
int trie_ckpt_retire(struct triekv *db, struct trie_node *n);
int trie_commit_start(struct triekv *db);
void trie_commit_stop(struct triekv *db);
/* ---- the epoch history (trie_epoch.c) ---- */
/* A random nonzero epoch other than avoid. */
uint32_t trie_epoch_new(uint32_t avoid);
/* Batch seq was committed (or replayed) with epoch: extends the history at a change. */
void trie_epoch_note(struct triekv *db, uint64_t seq, uint32_t epoch);
/* Forgets the history; with seq > 0 it starts again at (epoch, seq) (a snapshot's end). */
void trie_epoch_reset(struct triekv *db, uint64_t seq, uint32_t epoch);
/* Drops entries that begin after seq (recovery ended before them). */
void trie_epoch_trim(struct triekv *db, uint64_t seq);
/* Writes EPOCHS when the history changed since the last time (before a CHECKPOINT record). */
int trie_epoch_save(struct triekv *db);
/* Reads EPOCHS at open (absent: an empty history). */
int trie_epoch_load(struct triekv *db);

/* Replaces the small file name in the store's directory whole: a temporary file, written and
 * fdatasynced, renamed over name, then a directory fsync (CHECKPOINT, EPOCHS, RESYNC). */
int trie_file_replace(struct triekv *db, const char *name, const void *buf, size_t len);
/* Reads the whole file name of directory dirfd into a fresh buffer (*buf, freed by the caller;
 * *size is what was read: a file that shrank under us reads short, and its records decide). */
int trie_file_read_all(struct triekv *db, int dirfd, const char *name, uint8_t **buf, uint64_t *size);
/* Cuts the file name of directory dirfd to at bytes and fdatasyncs it (a torn tail at open). */
int trie_file_truncate(struct triekv *db, int dirfd, const char *name, uint64_t at);
/* Writes the CHECKPOINT file atomically. */
int trie_ckpt_record(struct triekv *db, uint64_t seq);
int trie_ckpt_read(struct triekv *db, uint64_t *seq);

#endif
