/* cache/cache.c - LRU with a byte budget; see cache.h for the contract.
 *
 * Two intrusive doubly linked lists with sentinels: lru (unpinned, most recent at head) and
 * pinned (order irrelevant). An entry is on exactly one list while in_cache. One mutex guards both
 * lists and the byte totals; hit/miss counters are atomics so lookups never take the lock.
 *
 * Invariants (checked by cache_check under KV_DEBUG):
 *   1. bytes == sum of e->bytes over both lists; pinned_bytes == the sum over the pinned list.
 *   2. e->pins > 0 exactly when e is on the pinned list.
 *   3. After any call that may evict returns, bytes <= budget or every unpinned entry was refused
 *      by evict() during that call. */
#include "cache/cache.h"
#include "common/kv_assert.h"
#include "common/kv_err.h"
#include "common/kv_time.h"

#include <pthread.h>
#include <stdlib.h>

#define CACHE_EVICT_BATCH_MAX 64 /* victims released per lock hold; bounds time under the lock */

struct cache {
    pthread_mutex_t mu;
    struct cache_entry lru;    /* sentinel; lru.next is the most recently used */
    struct cache_entry pinned; /* sentinel */
    size_t budget;
    size_t bytes;
    _Atomic size_t pinned_bytes; /* written under mu; read lock-free by cache_pinned_bytes */
    uint64_t entries;
    uint64_t pinned_entries;
    uint64_t inserts;
    uint64_t evictions;
    _Atomic uint64_t evicted_bytes;
    _Atomic uint64_t hits;
    _Atomic uint64_t misses;
    cache_evict_fn evict;
    cache_release_fn release;
    void *arg;
};

static void list_init(struct cache_entry *s)
{
    s->prev = s;
    s->next = s;
}

static void list_unlink(struct cache_entry *e)
{
    e->prev->next = e->next;
    e->next->prev = e->prev;
    e->prev = e->next = NULL;
}

static void list_push_head(struct cache_entry *s, struct cache_entry *e)
{
    e->next = s->next;
    e->prev = s;
    s->next->prev = e;
    s->next = e;
}

#ifdef KV_DEBUG
static void cache_check(struct cache *c)
{
    size_t all = 0, pinned = 0;
    for (struct cache_entry *e = c->lru.next; e != &c->lru; e = e->next) {
        KV_ASSERT(e->pins == 0);
        all += e->bytes;
    }
    for (struct cache_entry *e = c->pinned.next; e != &c->pinned; e = e->next) {
        KV_ASSERT(e->pins > 0);
        pinned += e->bytes;
    }
    KV_ASSERT(pinned == c->pinned_bytes);
    KV_ASSERT(all + pinned == c->bytes);
}
#else
#define cache_check(c) ((void)0)
#endif

int cache_create(size_t budget_bytes, cache_evict_fn evict, cache_release_fn release, void *arg,
                 struct cache **out)
{
    if (evict == NULL || release == NULL)
        return KV_E_INVALID;
    struct cache *c = kv_calloc(1, sizeof *c);
    pthread_mutex_init(&c->mu, NULL);
    list_init(&c->lru);
    list_init(&c->pinned);
    c->budget = budget_bytes;
    c->evict = evict;
    c->release = release;
    c->arg = arg;
    *out = c;
    return KV_OK;
}

void cache_destroy(struct cache *c)
{
    if (c == NULL)
        return;
    pthread_mutex_destroy(&c->mu);
    free(c);
}

static void take_out(struct cache *c, struct cache_entry *e)
{
    list_unlink(e);
    c->bytes -= e->bytes;
    c->entries--;
    if (e->pins > 0) {
        c->pinned_bytes -= e->bytes;
        c->pinned_entries--;
    }
    e->in_cache = false;
}

/* Walks from the LRU tail, offering entries to evict() until within budget; collects accepted
 * ones in victims[] (at most CACHE_EVICT_BATCH_MAX). Refused entries move to the head, so one pass
 * offers each entry at most once; a caller making several passes (evict_and_unlock) may offer a
 * busy entry again, at most once per pass. Called with the lock held; returns how many were
 * collected. */
static size_t collect_victims(struct cache *c, struct cache_entry **victims)
{
    size_t n = 0;
    size_t offered = 0, unpinned = c->entries - c->pinned_entries;
    while (c->bytes > c->budget && n < CACHE_EVICT_BATCH_MAX && offered < unpinned) {
        struct cache_entry *e = c->lru.prev;
        KV_ASSERT(e != &c->lru);
        offered++;
        if (!c->evict(c->arg, e)) {
            list_unlink(e);
            list_push_head(&c->lru, e);
            continue;
        }
        take_out(c, e);
        c->evictions++;
        c->evicted_bytes += e->bytes;
        victims[n++] = e;
    }
    return n;
}

/* Evicts down to the budget. Entered with the lock held; returns with it released. */
static void evict_and_unlock(struct cache *c)
{
    struct cache_entry *victims[CACHE_EVICT_BATCH_MAX];
    for (;;) {
        size_t n = collect_victims(c, victims);
        bool more = n == CACHE_EVICT_BATCH_MAX && c->bytes > c->budget;
        cache_check(c);
        pthread_mutex_unlock(&c->mu);
        for (size_t i = 0; i < n; i++)
            c->release(c->arg, victims[i]);
        if (!more)
            return;
        pthread_mutex_lock(&c->mu);
    }
}

void cache_insert(struct cache *c, struct cache_entry *e, size_t bytes, uint32_t pins)
{
    KV_ASSERT(!e->in_cache);
    e->bytes = bytes;
    e->pins = pins;
    atomic_store_explicit(&e->touched_ms, kv_coarse_ms(), memory_order_relaxed);
    pthread_mutex_lock(&c->mu);
    e->in_cache = true;
    list_push_head(pins > 0 ? &c->pinned : &c->lru, e);
    c->bytes += bytes;
    c->entries++;
    c->inserts++;
    if (pins > 0) {
        c->pinned_bytes += bytes;
        c->pinned_entries++;
    }
    evict_and_unlock(c);
}

void cache_remove(struct cache *c, struct cache_entry *e)
{
    pthread_mutex_lock(&c->mu);
    if (e->in_cache)
        take_out(c, e);
    cache_check(c);
    pthread_mutex_unlock(&c->mu);
}

void cache_resize(struct cache *c, struct cache_entry *e, int64_t delta)
{
    pthread_mutex_lock(&c->mu);
    KV_ASSERT(e->in_cache);
    KV_ASSERT(delta >= 0 || (size_t)-delta <= e->bytes);
    e->bytes = (size_t)((int64_t)e->bytes + delta);
    c->bytes = (size_t)((int64_t)c->bytes + delta);
    if (e->pins > 0)
        c->pinned_bytes = (size_t)((int64_t)c->pinned_bytes + delta);
    if (delta > 0) {
        evict_and_unlock(c);
        return;
    }
    cache_check(c);
    pthread_mutex_unlock(&c->mu);
}

void cache_pin(struct cache *c, struct cache_entry *e)
{
    pthread_mutex_lock(&c->mu);
    KV_ASSERT(e->in_cache);
    if (e->pins++ == 0) {
        list_unlink(e);
        list_push_head(&c->pinned, e);
        c->pinned_bytes += e->bytes;
        c->pinned_entries++;
    }
    pthread_mutex_unlock(&c->mu);
}

void cache_unpin(struct cache *c, struct cache_entry *e)
{
    pthread_mutex_lock(&c->mu);
    KV_ASSERT(e->in_cache);
    KV_ASSERT(e->pins > 0);
    if (--e->pins > 0) {
        pthread_mutex_unlock(&c->mu);
        return;
    }
    list_unlink(e);
    list_push_head(&c->lru, e);
    c->pinned_bytes -= e->bytes;
    c->pinned_entries--;
    atomic_store_explicit(&e->touched_ms, kv_coarse_ms(), memory_order_relaxed);
    evict_and_unlock(c);
}

void cache_touch(struct cache *c, struct cache_entry *e)
{
    uint64_t now = kv_coarse_ms();
    if (now - atomic_load_explicit(&e->touched_ms, memory_order_relaxed) < CACHE_TOUCH_INTERVAL_MS)
        return;
    atomic_store_explicit(&e->touched_ms, now, memory_order_relaxed);
    pthread_mutex_lock(&c->mu);
    if (e->in_cache && e->pins == 0) {
        list_unlink(e);
        list_push_head(&c->lru, e);
    }
    pthread_mutex_unlock(&c->mu);
}

void cache_trim(struct cache *c)
{
    pthread_mutex_lock(&c->mu);
    evict_and_unlock(c);
}

void cache_count_hit(struct cache *c)
{
    atomic_fetch_add_explicit(&c->hits, 1, memory_order_relaxed);
}

void cache_count_miss(struct cache *c)
{
    atomic_fetch_add_explicit(&c->misses, 1, memory_order_relaxed);
}

void cache_stats(struct cache *c, struct cache_stats *out)
{
    pthread_mutex_lock(&c->mu);
    out->budget_bytes = c->budget;
    out->bytes = c->bytes;
    out->pinned_bytes = c->pinned_bytes;
    out->entries = c->entries;
    out->pinned_entries = c->pinned_entries;
    out->inserts = c->inserts;
    out->evictions = c->evictions;
    out->evicted_bytes = c->evicted_bytes;
    pthread_mutex_unlock(&c->mu);
    out->hits = atomic_load_explicit(&c->hits, memory_order_relaxed);
    out->misses = atomic_load_explicit(&c->misses, memory_order_relaxed);
}

size_t cache_pinned_bytes(const struct cache *c)
{
    return atomic_load_explicit(&c->pinned_bytes, memory_order_relaxed);
}

uint64_t cache_evicted_bytes(const struct cache *c)
{
    return atomic_load_explicit(&c->evicted_bytes, memory_order_relaxed);
}

size_t cache_budget(const struct cache *c)
{
    return c->budget;
}
