/* trie/trie_page.c - the in-memory form of a loaded partition.
 *
 * A page keeps its live records in a dense array (recs) indexed by an open-addressing hash table
 * (linear probing with backward-shift deletion, so no tombstone slots build up), and builds a
 * key-ordered view (order) only when a scan asks for one after keys were added or removed.
 * Overwriting a key keeps its index, so the order survives overwrites.
 *
 * The dirty log lists every record applied since the last flush, in commit order, tombstones
 * included: the checkpointer appends exactly these to the partition log.
 *
 * Memory accounting: mem_bytes is what the page really holds, counting each record once: the
 * live records, plus records that are only in the dirty log (tombstones, overwritten values) or in
 * a flush in progress; those carry the pending flag until the flush that wrote them completes.
 * Callers charge the returned deltas to the cache.
 *
 * Locking: the caller holds p->lock (write for mutations, read at least for lookups and sorting;
 * order_mu serialises concurrent sorters). */
#include "trie/trie_int.h"
#include "common/kv_assert.h"
#include "common/kv_crc.h"

#include <stdlib.h>
#include <string.h>

#define PAGE_SLOTS_MIN 16u

static uint32_t key_hash(const uint8_t *k, uint32_t n)
{
    return kv_crc32c(0, k, n);
}

struct trie_page *trie_page_create(struct trie_node *node)
{
    struct trie_page *p = kv_calloc(1, sizeof *p);
    p->node = node;
    pthread_rwlock_init(&p->lock, NULL);
    pthread_mutex_init(&p->order_mu, NULL);
    p->nslots = PAGE_SLOTS_MIN;
    p->slots = kv_calloc(p->nslots, sizeof *p->slots);
    p->order_valid = true;
    p->mem_bytes = trie_page_base_mem(p);
    return p;
}

void trie_page_destroy(struct trie_page *p)
{
    if (p == NULL)
        return;
    for (uint32_t i = 0; i < p->nrecs; i++)
        triekv_value_release(p->recs[i]);
    for (uint32_t i = 0; i < p->ndirty; i++)
        triekv_value_release(p->dirty[i]);
    free(p->recs);
    free(p->slots);
    free(p->order);
    free(p->dirty);
    pthread_rwlock_destroy(&p->lock);
    pthread_mutex_destroy(&p->order_mu);
    free(p);
}

size_t trie_page_base_mem(const struct trie_page *p)
{
    return sizeof *p + (size_t)p->cap_recs * sizeof *p->recs * 2 /* recs + order */ +
           (size_t)p->nslots * sizeof *p->slots + (size_t)p->cap_dirty * sizeof *p->dirty;
}

static bool key_eq(const struct triekv_value *v, const uint8_t *k, uint32_t n)
{
    return v->klen == n && memcmp(v->bytes, k, n) == 0;
}

/* Slot holding key, or the empty slot where it would go. */
static uint32_t slot_find(const struct trie_page *p, uint32_t h, const uint8_t *k, uint32_t n)
{
    uint32_t mask = p->nslots - 1;
    for (uint32_t i = h & mask;; i = (i + 1) & mask) {
        const struct trie_slot *s = &p->slots[i];
        if (s->idx1 == 0)
            return i;
        if (s->hash == h && key_eq(p->recs[s->idx1 - 1], k, n))
            return i;
    }
}

struct triekv_value *trie_page_find(struct trie_page *p, struct kv_slice key)
{
    uint32_t h = key_hash(key.ptr, (uint32_t)key.len);
    uint32_t i = slot_find(p, h, key.ptr, (uint32_t)key.len);
    return p->slots[i].idx1 ? p->recs[p->slots[i].idx1 - 1] : NULL;
}

/* Doubles the table; returns the change in base memory. */
static int64_t slots_grow(struct trie_page *p)
{
    uint32_t old_n = p->nslots;
    struct trie_slot *old = p->slots;
    p->nslots = old_n * 2;
    p->slots = kv_calloc(p->nslots, sizeof *p->slots);
    uint32_t mask = p->nslots - 1;
    for (uint32_t i = 0; i < old_n; i++) {
        if (old[i].idx1 == 0)
            continue;
        uint32_t j = old[i].hash & mask;
        while (p->slots[j].idx1)
            j = (j + 1) & mask;
        p->slots[j] = old[i];
    }
    free(old);
    return (int64_t)old_n * (int64_t)sizeof *p->slots;
}

static int64_t recs_grow(struct trie_page *p)
{
    uint32_t old = p->cap_recs;
    p->cap_recs = old ? old * 2 : 16;
    p->recs = kv_realloc(p->recs, (size_t)p->cap_recs * sizeof *p->recs);
    free(p->order); /* rebuilt at the new size on demand */
    p->order = NULL;
    p->order_valid = false;
    return (int64_t)(p->cap_recs - old) * (int64_t)sizeof *p->recs * 2;
}

/* Whether the page still holds old after it stops being live: only while it sits in the dirty
 * log or in a flush in progress. */
static bool held_unflushed(const struct triekv_value *old)
{
    return old->pending != 0;
}

int64_t trie_page_set(struct trie_page *p, struct triekv_value *rec, struct triekv_value **old_out)
{
    KV_ASSERT(rec->type == TRIE_REC_PUT);
    int64_t delta = 0;
    uint32_t h = key_hash(rec->bytes, rec->klen);
    uint32_t i = slot_find(p, h, rec->bytes, rec->klen);
    if (p->slots[i].idx1) {
        uint32_t idx = p->slots[i].idx1 - 1;
        struct triekv_value *old = p->recs[idx];
        p->recs[idx] = rec;
        p->live_value_bytes += rec->vlen;
        p->live_value_bytes -= old->vlen;
        p->live_rec_bytes += rec->vlen;
        p->live_rec_bytes -= old->vlen;
        delta += (int64_t)trie_val_mem(rec);
        if (!held_unflushed(old))
            delta -= (int64_t)trie_val_mem(old);
        *old_out = old;
        return delta;
    }
    *old_out = NULL;
    if (p->nrecs == p->cap_recs)
        delta += recs_grow(p);
    if ((uint64_t)(p->nrecs + 1) * 4 > (uint64_t)p->nslots * 3) {
        delta += slots_grow(p);
        i = slot_find(p, h, rec->bytes, rec->klen);
    }
    p->slots[i].hash = h;
    p->slots[i].idx1 = p->nrecs + 1;
    p->recs[p->nrecs++] = rec;
    p->order_valid = false;
    p->live_value_bytes += rec->vlen;
    p->live_rec_bytes += trie_rec_size(rec->klen, rec->vlen);
    return delta + (int64_t)trie_val_mem(rec);
}

/* Backward-shift deletion of slot i (Knuth 6.4, algorithm R). */
static void slot_delete(struct trie_page *p, uint32_t i)
{
    uint32_t mask = p->nslots - 1;
    uint32_t j = i;
    for (;;) {
        j = (j + 1) & mask;
        if (p->slots[j].idx1 == 0)
            break;
        uint32_t home = p->slots[j].hash & mask;
        /* move j into the hole at i unless its home lies cyclically in (i, j] */
        bool stays = i <= j ? (i < home && home <= j) : (i < home || home <= j);
        if (stays)
            continue;
        p->slots[i] = p->slots[j];
        i = j;
    }
    p->slots[i].idx1 = 0;
}

int64_t trie_page_remove(struct trie_page *p, struct kv_slice key, struct triekv_value **old_out)
{
    uint32_t h = key_hash(key.ptr, (uint32_t)key.len);
    uint32_t i = slot_find(p, h, key.ptr, (uint32_t)key.len);
    if (p->slots[i].idx1 == 0) {
        *old_out = NULL;
        return 0;
    }
    uint32_t idx = p->slots[i].idx1 - 1;
    struct triekv_value *old = p->recs[idx];
    slot_delete(p, i);
    uint32_t last = p->nrecs - 1;
    if (idx != last) { /* move the last record into the gap and repoint its slot */
        struct triekv_value *moved = p->recs[last];
        uint32_t s = slot_find(p, key_hash(moved->bytes, moved->klen), moved->bytes, moved->klen);
        KV_ASSERT(p->slots[s].idx1 == last + 1);
        p->slots[s].idx1 = idx + 1;
        p->recs[idx] = moved;
    }
    p->nrecs--;
    p->order_valid = false;
    p->live_value_bytes -= old->vlen;
    p->live_rec_bytes -= trie_rec_size(old->klen, old->vlen);
    *old_out = old;
    return held_unflushed(old) ? 0 : -(int64_t)trie_val_mem(old);
}

int64_t trie_page_dirty_push(struct trie_page *p, struct triekv_value *rec)
{
    int64_t delta = 0;
    if (p->ndirty == p->cap_dirty) {
        uint32_t old = p->cap_dirty;
        p->cap_dirty = old ? old * 2 : 8;
        p->dirty = kv_realloc(p->dirty, (size_t)p->cap_dirty * sizeof *p->dirty);
        delta += (int64_t)(p->cap_dirty - old) * (int64_t)sizeof *p->dirty;
    }
    trie_val_ref(rec);
    rec->pending = 1;
    p->dirty[p->ndirty++] = rec;
    p->dirty_bytes += trie_rec_size(rec->klen, rec->vlen);
    if (rec->type == TRIE_REC_DEL) /* tombstones are held only by the dirty log */
        delta += (int64_t)trie_val_mem(rec);
    return delta;
}

static int order_cmp(const void *a, const void *b, void *arg)
{
    struct triekv_value **recs = arg;
    const struct triekv_value *x = recs[*(const uint32_t *)a];
    const struct triekv_value *y = recs[*(const uint32_t *)b];
    return kv_slice_cmp(trie_val_key(x), trie_val_key(y));
}

void trie_page_sort(struct trie_page *p)
{
    if (__atomic_load_n(&p->order_valid, __ATOMIC_ACQUIRE))
        return;
    pthread_mutex_lock(&p->order_mu);
    if (!p->order_valid) {
        if (p->order == NULL && p->cap_recs)
            p->order = kv_malloc((size_t)p->cap_recs * sizeof *p->order);
        for (uint32_t i = 0; i < p->nrecs; i++)
            p->order[i] = i;
        qsort_r(p->order, p->nrecs, sizeof *p->order, order_cmp, p->recs);
        __atomic_store_n(&p->order_valid, true, __ATOMIC_RELEASE);
    }
    pthread_mutex_unlock(&p->order_mu);
}

uint32_t trie_page_lower_bound(struct trie_page *p, struct kv_slice key, bool strict)
{
    KV_ASSERT(p->order_valid);
    uint32_t lo = 0, hi = p->nrecs;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        int c = kv_slice_cmp(trie_val_key(p->recs[p->order[mid]]), key);
        if (c < 0 || (strict && c == 0))
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}
