/* cache/cache.h - an LRU cache with a byte-accurate budget, pinning and statistics.
 *
 * The cache holds no data of its own: callers embed a struct cache_entry in their objects (a
 * loaded trie partition, for the engine) and tell the cache how many bytes each one really
 * occupies. When the total passes the budget, unpinned entries are evicted from the least recently
 * used end through two callbacks:
 *
 *   evict(arg, e)    called with the cache's lock held; the owner detaches e from its own
 *                    structures and returns true, or returns false when e is busy (a reader holds
 *                    it) and must stay. Must be quick and must not call back into the cache.
 *   release(arg, e)  called after the lock is dropped, once per entry evict() accepted; the owner
 *                    frees e here. e is no longer in the cache.
 *
 * Pinned entries (the engine pins partitions with unflushed writes) are never offered to evict(),
 * so the total can exceed the budget while many are pinned; cache_stats() shows by how much.
 *
 * Thread safety: every function may be called from any thread. The lock order is: the owner's
 * locks that are held while calling cache_pin/unpin/insert/resize come before the cache's lock,
 * and evict() may only take locks that are never held while calling into the cache. */
#ifndef CACHE_H
#define CACHE_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define CACHE_TOUCH_INTERVAL_MS 20 /* an entry touched this recently keeps its place: no lock taken */

struct cache;

/* Embedded in the owner's object; zero it before cache_insert(). Fields are the cache's. */
struct cache_entry {
    struct cache_entry *prev, *next;
    size_t bytes;
    uint32_t pins;
    bool in_cache;
    _Atomic uint64_t touched_ms;
};

typedef bool (*cache_evict_fn)(void *arg, struct cache_entry *e);
typedef void (*cache_release_fn)(void *arg, struct cache_entry *e);

struct cache_stats {
    uint64_t budget_bytes;
    uint64_t bytes; /* all entries, pinned ones included */
    uint64_t pinned_bytes;
    uint64_t entries;
    uint64_t pinned_entries;
    uint64_t hits;
    uint64_t misses;
    uint64_t inserts;
    uint64_t evictions;
    uint64_t evicted_bytes;
};

/* Creates a cache; *out is yours, release it with cache_destroy(). budget_bytes may be 0: then
 * every unpinned entry of non-zero size is evicted as soon as it is unpinned or inserted. */
int cache_create(size_t budget_bytes, cache_evict_fn evict, cache_release_fn release, void *arg,
                 struct cache **out);
/* Frees the cache only: entries still inside are not released (the owner frees its objects). */
void cache_destroy(struct cache *c);

/* Adds e (not in the cache, zeroed) as most recently used, with bytes and pins already set, then
 * evicts down to the budget. */
void cache_insert(struct cache *c, struct cache_entry *e, size_t bytes, uint32_t pins);
/* Takes e out without calling the callbacks (the owner is discarding it itself). */
void cache_remove(struct cache *c, struct cache_entry *e);
/* Changes e's size by delta bytes (may be negative), then evicts down to the budget. */
void cache_resize(struct cache *c, struct cache_entry *e, int64_t delta);
void cache_pin(struct cache *c, struct cache_entry *e);
/* Drops one pin; an entry whose last pin goes becomes most recently used and evictable. */
void cache_unpin(struct cache *c, struct cache_entry *e);
/* Marks e recently used. Lock-free when e moved within CACHE_TOUCH_INTERVAL_MS. */
void cache_touch(struct cache *c, struct cache_entry *e);
/* Evicts down to the budget (for owners whose entries shrank to busy-free state). */
void cache_trim(struct cache *c);

/* Lookup accounting, kept by the owner's lookups: relaxed atomic counters, no lock. */
void cache_count_hit(struct cache *c);
void cache_count_miss(struct cache *c);

void cache_stats(struct cache *c, struct cache_stats *out);

/* Bytes of pinned entries and all evicted bytes so far, read without the lock (for pressure
 * checks on hot paths; may lag by a concurrent update). */
size_t cache_pinned_bytes(const struct cache *c);
uint64_t cache_evicted_bytes(const struct cache *c);
size_t cache_budget(const struct cache *c);

#endif
