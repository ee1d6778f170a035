/* trie/trie_io_fault.h - a fault-injecting struct trie_io for tests, wrapping another backend.
 *
 * Two kinds of fault:
 *   - fail-Nth: the Nth call of the chosen kinds returns an error (a write fails halfway through,
 *     as ENOSPC does), once or from then on;
 *   - power loss: at the Nth durability point (an fdatasync, a directory fsync or a rename) the
 *     disk is reset to what a power cut would leave, and every later call fails with EIO.
 *
 * The power-loss model (SQLite's crash VFS, test6.c, is the ancestor): the layer remembers, per
 * file, the content at its last fdatasync and the writes and truncations since, and per
 * directory, the names that existed at its last fsync. At the cut, each file keeps its synced
 * content plus a random prefix of its later writes in order, the last of which may be torn
 * (applied partly); each directory keeps exactly its synced names (a file created or renamed
 * since the directory's last fsync disappears or keeps its old name). This is the contract the
 * engine relies on: data is durable after fdatasync, a name after the directory's fsync. */
#ifndef TRIE_IO_FAULT_H
#define TRIE_IO_FAULT_H

#include <stdbool.h>
#include <stdint.h>

#include "trie/trie_io.h"

struct fault_io;

enum fault_kind {
    FAULT_WRITE = 1 << 0, /* pwritev, and the writes of submit */
    FAULT_SYNC = 1 << 1,  /* fdatasync (also the one pwritev(sync) implies) */
    FAULT_TRUNC = 1 << 2, /* ftruncate */
    FAULT_RENAME = 1 << 3,
    FAULT_UNLINK = 1 << 4,
    FAULT_CREATE = 1 << 5, /* openat with O_CREAT */
    FAULT_DIRSYNC = 1 << 6,
    FAULT_ALL = 0x7f,
};

/* base is borrowed and must outlive the layer. seed drives the torn-write choices. */
struct fault_io *fault_io_create(const struct trie_io *base, uint64_t seed);
void fault_io_destroy(struct fault_io *f);
/* The table to pass in triekv_options.io; valid while f lives. */
const struct trie_io *fault_io_table(struct fault_io *f);

/* The nth call (1-based, counted from now) of the given kinds fails with err; with sticky, every
 * later call of those kinds fails too. A failing write first writes about half its bytes. */
void fault_io_fail_nth(struct fault_io *f, uint64_t nth, unsigned kinds, int err, bool sticky);
void fault_io_disarm(struct fault_io *f);
bool fault_io_fired(const struct fault_io *f);

/* Power cut at the nth durability point from now, before or after it takes effect. */
void fault_io_crash_at(struct fault_io *f, uint64_t nth, bool after);
/* Power cut now (e.g. right after a write was acknowledged). */
void fault_io_crash_now(struct fault_io *f);
bool fault_io_crashed(const struct fault_io *f);
/* Durability points passed so far (to size a sweep of crash_at). */
uint64_t fault_io_points(const struct fault_io *f);
/* The same, by kind: fdatasyncs, directory fsyncs, renames. */
void fault_io_point_kinds(const struct fault_io *f, uint64_t *syncs, uint64_t *dirsyncs, uint64_t *renames);

#endif
