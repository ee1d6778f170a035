/* trie/triekv.h - the public, embeddable API of the triekv storage engine.
 *
 * A store is a directory. Keys (1..max_key_size bytes, any byte values) live in a trie of
 * partitions: each partition owns the keys with its prefix that no deeper partition owns, and
 * keeps them in one append-only log file (the root's is "_root.dat"). When a log passes
 * max_page_size it is compacted if most of it is dead, else split into child partitions by the
 * next key byte. Every write batch is first appended to a commit log (the WAL) and gets the next
 * 64-bit sequence number; that number is the version of every key the batch sets. Partition logs
 * are written behind the commit log and made durable at checkpoints, after which old commit log
 * segments are dropped. Loaded partitions are pages in an LRU cache with a byte budget.
 *
 * Thread safety: a struct triekv may be used from any number of threads at once. Reads never
 * wait for an fsync or for another read; writers are queued and committed in groups, so many
 * concurrent writers share one commit-log write and one fdatasync. A multi-key read (triekv_scan)
 * sees every batch entirely or not at all.
 *
 * Errors: every function returns 0 (KV_OK), a positive errno from a failed system call, or a
 * negative KV_E_* code (common/kv_err.h); kv_strerror() renders both. After a failed fdatasync
 * or a failed update of on-disk metadata the store turns read-only (KV_E_READONLY for every
 * later write): the kernel may have dropped the unsynced pages, so the only safe continuation is
 * to close and reopen, which replays the commit log. Reads keep working. */
#ifndef TRIEKV_H
#define TRIEKV_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/kv_buf.h"
#include "common/kv_err.h"

/* Hard caps; configured limits must stay within them (checked by triekv_open). */
#define TRIEKV_KEY_LEN_MAX     65535u       /* 16-bit length field on disk */
#define TRIEKV_VALUE_LEN_MAX   (1u << 30)   /* 1 GiB; max_value_size defaults to 64 MiB */
#define TRIEKV_PAGE_SIZE_MIN   4096u        /* smallest max_page_size (tests split a lot) */
#define TRIEKV_PAGE_SIZE_MAX   (1ull << 32) /* largest max_page_size */
#define TRIEKV_DEPTH_MAX       64u          /* deepest partition prefix; keeps file names < 255 bytes */
#define TRIEKV_BATCH_OPS_MAX   1000000u     /* operations in one atomic batch */
#define TRIEKV_BATCH_BYTES_MAX (2ull << 30) /* encoded bytes of one atomic batch */

enum triekv_fsync {
    TRIEKV_FSYNC_DEFAULT = 0, /* the OS decides when commit log pages reach the disk */
    TRIEKV_FSYNC_STRICT,      /* durable before success is returned; concurrent writers share a sync */
    TRIEKV_FSYNC_BATCH,       /* fdatasync after every fsync_batch_writes committed batches */
    TRIEKV_FSYNC_INTERVAL,    /* fdatasync every fsync_interval_ms while there are unsynced writes */
};

enum triekv_io_backend {
    TRIEKV_IO_AUTO = 0, /* io_uring, or POSIX where io_uring_setup is refused */
    TRIEKV_IO_URING,    /* io_uring or fail to open */
    TRIEKV_IO_POSIX,
};

struct trie_io; /* trie/trie_io.h: the file-system seam (tests inject faults through it) */

struct triekv_options {
    enum triekv_fsync fsync;
    uint32_t fsync_batch_writes;     /* for TRIEKV_FSYNC_BATCH; default 100 */
    uint32_t fsync_interval_ms;      /* for TRIEKV_FSYNC_INTERVAL; default 1000 */
    uint64_t cache_bytes;            /* page cache budget; default 500 MiB */
    uint64_t max_page_size;          /* partition log size that triggers compaction or a split; 4 MiB */
    uint32_t max_key_size;           /* default 1024 */
    uint64_t max_value_size;         /* default 64 MiB */
    uint64_t wal_segment_bytes;      /* commit log segment size; default 64 MiB */
    uint64_t checkpoint_wal_bytes;   /* checkpoint after this much commit log; default 256 MiB */
    uint32_t checkpoint_interval_ms; /* checkpoint at least this often while dirty; default 60000 */
    bool manual_checkpoints;         /* no background checkpoints: only triekv_checkpoint and close
                                        run them (and nothing throttles writers meanwhile) */
    uint64_t retention_bytes_max;    /* commit log kept for triekv_set_retention; default 1 GiB */
    enum triekv_io_backend io_backend;
    const struct trie_io *io; /* overrides io_backend when set; borrowed, must outlive the store */
    /* Log sink for the engine's own events (backend chosen, recovery, corruption found, turned
     * read-only). level is a kv_log_level; msg is valid during the call. NULL: common/kv_log. */
    void (*log)(void *arg, int level, const char *msg);
    void *log_arg;
};

/* Fills opt with the defaults above. */
void triekv_options_init(struct triekv_options *opt);

struct triekv;

/* Opens or creates the store in dir (created if missing, parent must exist), takes an exclusive
 * lock on it, replays the commit log and finishes any half-done split, compaction or checkpoint.
 * opt may be NULL for the defaults; it is read during the call only (opt->io excepted).
 * On success *out is yours: release it with triekv_close().
 * Errors: KV_E_INVALID (an option out of range), KV_E_LOCKED, KV_E_VERSION, KV_E_CORRUPT (the
 * commit log is damaged before its last record, so acknowledged writes would be lost), errno. */
int triekv_open(const char *dir, const struct triekv_options *opt, struct triekv **out);

/* Waits for queued writes, runs a final checkpoint, stops the background threads and frees db.
 * Returns the checkpoint's error, if any (the data is still safe in the commit log). NULL: 0. */
int triekv_close(struct triekv *db);

/* ---- reads ---------------------------------------------------------------------------------- */

/* One version of a value: immutable and reference-counted, so it stays valid while writers
 * replace the key. Every triekv_value a function hands out must be released exactly once. */
struct triekv_value;
const uint8_t *triekv_value_data(const struct triekv_value *v);
size_t triekv_value_len(const struct triekv_value *v);
uint64_t triekv_value_seq(const struct triekv_value *v); /* the key's version */
void triekv_value_release(struct triekv_value *v);       /* NULL is a no-op */

/* Looks key up. On success *out is a value you release with triekv_value_release().
 * Errors: KV_E_NOT_FOUND, KV_E_KEY_EMPTY, KV_E_KEY_TOO_LONG, KV_E_CORRUPT (the key's partition
 * log is damaged: the key cannot be answered), errno from loading the partition. */
int triekv_get(struct triekv *db, struct kv_slice key, struct triekv_value **out);

/* ---- writes --------------------------------------------------------------------------------- */

/* Preconditions, checked at commit time against the latest committed state, in commit order. */
enum triekv_cond {
    TRIEKV_IF_ANY = 0, /* unconditional */
    TRIEKV_IF_ABSENT,  /* the key must not exist (create-only; HTTP If-None-Match: *) */
    TRIEKV_IF_PRESENT, /* the key must exist (DELETE that answers 404 when absent) */
    TRIEKV_IF_VERSION, /* the key must exist with exactly this version (HTTP If-Match) */
};

/* An atomic batch of puts and deletes, built by the caller and then committed whole: every
 * operation is applied, or (any precondition failing, any error) none is. Keys and values are
 * copied into the batch, so the slices are borrowed for the call only. */
struct triekv_batch;
struct triekv_batch *triekv_batch_create(void);
void triekv_batch_destroy(struct triekv_batch *b); /* NULL is a no-op */
/* Errors: KV_E_KEY_EMPTY, KV_E_KEY_TOO_LONG (past TRIEKV_KEY_LEN_MAX; the configured limit is
 * checked at commit), KV_E_BATCH_TOO_LARGE. On error the batch is unchanged. */
int triekv_batch_put(struct triekv_batch *b, struct kv_slice key, struct kv_slice value,
                     enum triekv_cond cond, uint64_t version);
int triekv_batch_del(struct triekv_batch *b, struct kv_slice key, enum triekv_cond cond, uint64_t version);
size_t triekv_batch_count(const struct triekv_batch *b);

struct triekv_write_result {
    uint64_t seq;      /* the batch's sequence number; the latest committed one if it wrote nothing */
    uint32_t deleted;  /* delete operations that found their key */
    int32_t failed_op; /* on KV_E_PRECONDITION: index of the first failing operation, else -1 */
};

/* Commits b (borrowed; reusable afterwards) and waits until it is committed: written to the commit
 * log, durable too under TRIEKV_FSYNC_STRICT (and when it fills a TRIEKV_FSYNC_BATCH group), and
 * visible to readers. A batch whose deletes all find nothing and that has no puts commits nothing
 * and takes no sequence number.
 * Errors: KV_E_PRECONDITION, KV_E_KEY_TOO_LONG, KV_E_VALUE_TOO_LARGE, KV_E_BATCH_TOO_LARGE,
 * KV_E_READONLY, KV_E_CLOSED, KV_E_CORRUPT (a touched partition is damaged), errno. */
int triekv_write(struct triekv *db, struct triekv_batch *b, struct triekv_write_result *res);

/* Like triekv_write but returns at once; ownership of b passes to the engine. done runs exactly
 * once, on an engine thread (never inside this call), with the outcome; it must be quick and must
 * not call triekv_write. */
typedef void (*triekv_done_fn)(void *arg, int rc, const struct triekv_write_result *res);
void triekv_write_async(struct triekv *db, struct triekv_batch *b, triekv_done_fn done, void *arg);

/* Commits b on the calling thread if that needs no waiting at all: no fdatasync in this commit
 * (fsync default or interval, or batch below its threshold), no other writer queued or leading, no
 * checkpoint step in progress, no write throttling. Otherwise returns KV_E_BUSY at once and nothing
 * is done (use triekv_write_async). Event loops use it to answer most writes without a thread
 * hand-off. Other errors and results as triekv_write; b is borrowed. */
int triekv_write_nowait(struct triekv *db, struct triekv_batch *b, struct triekv_write_result *res);

/* Conveniences over a one-operation batch. */
int triekv_put(struct triekv *db, struct kv_slice key, struct kv_slice value, uint64_t *seq);
int triekv_delete(struct triekv *db, struct kv_slice key, uint64_t *seq); /* KV_E_NOT_FOUND if absent */

/* ---- ordered iteration ---------------------------------------------------------------------- */

/* Keys k with start <= k < end in byte order (memcmp, shorter first on a common prefix).
 * With prefix set, start/end are ignored and the range is every key beginning with prefix.
 * after, when set, resumes a previous scan: only keys > after are visited (a cursor). */
struct triekv_range {
    struct kv_slice start; /* len 0: from the first key */
    struct kv_slice end;   /* used when has_end */
    bool has_end;
    struct kv_slice prefix; /* used when has_prefix */
    bool has_prefix;
    struct kv_slice after; /* used when has_after */
    bool has_after;
    size_t limit;       /* most items visited; 0 = no limit */
    size_t bytes_limit; /* stop before value bytes would pass this (0 = none); the first item is
                           always visited, so a value larger than the limit comes alone */
    bool keys_only;     /* visit with empty values (no value bytes counted) */
};

/* Called once per item in key order. key and value are valid during the call only. Return 0 to
 * go on, 1 to stop here (the scan returns 0), or an error code to stop with that error. */
typedef int (*triekv_visit_fn)(void *arg, struct kv_slice key, struct kv_slice value, uint64_t seq);

struct triekv_scan_result {
    size_t count; /* items visited */
    bool more;    /* another item lies in the range after the last one visited */
};

/* Visits the items of r in order under a consistent view: a batch committed during the scan is
 * seen entirely or not at all. Errors: KV_E_INVALID (start > end), KV_E_CORRUPT (a partition in
 * the range is damaged; items before it were visited), errno, or the visitor's own error. */
int triekv_scan(struct triekv *db, const struct triekv_range *r, triekv_visit_fn visit, void *arg,
                struct triekv_scan_result *res);

/* ---- maintenance and statistics --------------------------------------------------------------- */

/* Flushes every partition log, makes it durable, records the checkpoint and drops commit log
 * segments no longer needed. Runs in the background by itself; call it to force one. */
int triekv_checkpoint(struct triekv *db);

/* Holds commit log segments for readers of the log (replication): fn returns the lowest sequence
 * number still needed (UINT64_MAX: none). Segments are kept for it until they pass
 * retention_bytes_max in total; then the oldest go and such a reader gets KV_E_LOG_TRUNCATED. */
void triekv_set_retention(struct triekv *db, uint64_t (*fn)(void *arg), void *arg);

/* ---- replication: reading the commit log, applying it elsewhere ------------------------------------
 * A main ships its commit log to replicas record by record. A record is exactly what the commit
 * log holds for one batch (a 32-byte header with its sequence number and checksums, then the
 * operations), so a replica can check it and append it to its own commit log unchanged: a
 * replica's store numbers its batches exactly like its main's. */

struct triekv_log_reader;

/* Opens a reader at batch from_seq (the first batch it returns). Errors: KV_E_LOG_TRUNCATED when
 * the commit log no longer holds from_seq (a reader that far behind needs a snapshot). A from_seq
 * past the last batch is fine: the reader waits there. *out is released with triekv_log_close. */
int triekv_log_open(struct triekv *db, uint64_t from_seq, struct triekv_log_reader **out);
void triekv_log_close(struct triekv_log_reader *r);
/* Appends whole committed records, in order, to out until about max_bytes (at least one record,
 * however large). *count gets how many (0: nothing committed after the reader yet); the next
 * call continues after them. Errors: KV_E_LOG_TRUNCATED (the segment was dropped under a slow
 * reader), KV_E_CORRUPT, errno. */
int triekv_log_read(struct triekv_log_reader *r, struct kv_buf *out, size_t max_bytes, uint32_t *count);
/* The sequence number the next triekv_log_read starts at. */
uint64_t triekv_log_next(const struct triekv_log_reader *r);
/* Bytes of commit log from the reader's position to the end (what it has yet to read). */
uint64_t triekv_log_pending_bytes(const struct triekv_log_reader *r);
/* Waits until batch seq is committed or timeout_ms passes. Returns 0 or KV_E_TIMEOUT. */
int triekv_wait_seq(struct triekv *db, uint64_t seq, uint32_t timeout_ms);
/* The oldest batch the commit log still holds (checkpoint_seq + 1 when it holds none). */
uint64_t triekv_log_first(struct triekv *db);

/* Epochs tell histories apart where sequence numbers cannot. Every open of a store picks a random
 * epoch that stamps each batch it commits; a replicated batch keeps its main's. A main that lost
 * its newest batches (a crash under fsync default, a restore from a backup) reuses their numbers
 * in a new epoch, so a replica holding the lost batches disagrees with it on the epoch of its
 * last one. *epoch gets the epoch of batch seq. Errors: KV_E_NOT_FOUND when seq is 0, past the
 * last batch, or older than the history the store keeps (then nothing can be proven about it). */
int triekv_epoch_at(struct triekv *db, uint64_t seq, uint32_t *epoch);

/* Replica: applies records (as triekv_log_read produced them) with their own sequence numbers,
 * through the commit log like any write, in order. A record at or below the store's sequence
 * number is skipped (a resent batch changes nothing); a gap is KV_E_INVALID. *applied gets the
 * store's sequence number afterwards. Errors: KV_E_CORRUPT (a bad checksum), KV_E_INVALID,
 * KV_E_READONLY, errno; records before the failing one stay applied. */
int triekv_apply_log(struct triekv *db, const uint8_t *records, size_t len, uint64_t *applied);

/* Replica full resync. begin wipes the store (every key, the commit log, the checkpoint) and
 * leaves a marker: a store opened with the marker present comes up empty, so a crash in the
 * middle can never leave a mix of old and new data. put loads items with their versions; end sets
 * the store's sequence number to seq (the snapshot is consistent with the main's log from seq
 * on) and the epoch of batch seq to the main's (triekv_epoch_at on the main), checkpoints, and
 * removes the marker. Nothing else may write to the store meanwhile. */
int triekv_snapshot_begin(struct triekv *db);
int triekv_snapshot_put(struct triekv *db, struct kv_slice key, struct kv_slice value, uint64_t version);
int triekv_snapshot_end(struct triekv *db, uint64_t seq, uint32_t epoch);
bool triekv_snapshot_active(struct triekv *db);

struct triekv_stats {
    uint64_t keys;                 /* live keys */
    uint64_t value_bytes;          /* sum of live value lengths */
    uint64_t seq;                  /* last committed sequence number */
    uint64_t durable_seq;          /* last sequence number known to be on disk */
    uint64_t checkpoint_seq;       /* last checkpoint */
    uint64_t gets, puts, deletes;  /* operations since open (a batch counts each of its ops; a scan
                                      counts each item it visits as a get) */
    uint64_t get_hits, get_misses; /* point reads that found their key, and that did not */
    uint64_t batches;              /* committed write batches since open */
    uint64_t precondition_failures;
    uint64_t partitions; /* partitions in the trie (nodes with a log or with children) */
    uint64_t partition_depth_max;
    uint64_t splits, compactions, checkpoints;
    uint64_t wal_bytes; /* commit log bytes on disk */
    uint64_t wal_segments;
    uint64_t wal_syncs;     /* fdatasyncs of the commit log since open */
    uint64_t group_commits; /* commit-log writes since open; batches / group_commits = group size */
    uint64_t cache_budget_bytes, cache_bytes, cache_pinned_bytes, cache_pages;
    uint64_t cache_hits, cache_misses, cache_evictions, cache_evicted_bytes;
    uint64_t corrupt_partitions;
    bool read_only;
    int read_only_reason; /* the error that turned the store read-only, else 0 */
    enum triekv_fsync fsync;
    const char *io_backend; /* "io_uring" or "posix" (static string) */
};
void triekv_stats(struct triekv *db, struct triekv_stats *out);

/* Parses "default", "strict", "batch", "interval". KV_E_INVALID otherwise. */
int triekv_fsync_parse(const char *name, enum triekv_fsync *out);
const char *triekv_fsync_name(enum triekv_fsync f);

#endif
