/* trie/trie_node.c - the trie of partitions and the life of its pages.
 *
 * Routing is lock-free: a node's children live in a 256-slot array of atomic pointers that is
 * allocated with the first child and, like the nodes themselves, never freed before close. A child
 * is published (release store) only after its page and file exist, so a reader that sees it can
 * use it at once. Splits only ever add nodes; nothing is removed while the store is open.
 *
 * Page life: a node's page pointer, its reference count (holders that are reading or writing the
 * page) and a generation number live under node->mu, a leaf lock. Loading happens with no lock
 * held; the loader installs its page only if the generation did not move meanwhile (another
 * thread installed or evicted a page, whose content may be newer than what was read), else it
 * discards its copy and looks again. Eviction, driven by the cache, detaches a page only when
 * nobody holds it; dirty pages carry a cache pin and are never offered for eviction. */
#include "trie/trie_int.h"
#include "common/kv_assert.h"
#include "common/kv_log.h"

#include <stdlib.h>
#include <string.h>

struct trie_node *trie_kid(const struct trie_node *n, uint8_t b)
{
    struct trie_kids *k = atomic_load_explicit(&((struct trie_node *)n)->kids, memory_order_acquire);
    return k ? atomic_load_explicit(&k->at[b], memory_order_acquire) : NULL;
}

struct trie_node *trie_route(struct triekv *db, struct kv_slice key)
{
    struct trie_node *n = db->root;
    for (size_t d = 0; d < key.len; d++) {
        struct trie_node *c = trie_kid(n, key.ptr[d]);
        if (c == NULL)
            break;
        n = c;
    }
    return n;
}

static struct trie_node *node_alloc(struct trie_node *parent, const uint8_t *prefix, uint32_t plen)
{
    struct trie_node *n = kv_calloc(1, sizeof *n);
    n->parent = parent;
    n->plen = plen;
    n->prefix = kv_malloc(plen ? plen : 1);
    if (plen)
        memcpy(n->prefix, prefix, plen);
    n->byte = plen ? prefix[plen - 1] : 0;
    pthread_mutex_init(&n->mu, NULL);
    return n;
}

struct trie_node *trie_node_new(struct trie_node *parent, uint8_t b)
{
    if (parent == NULL)
        return node_alloc(NULL, NULL, 0);
    KV_ASSERT(parent->plen < TRIEKV_DEPTH_MAX);
    KV_ASSERT(trie_kid(parent, b) == NULL);
    uint8_t buf[TRIEKV_DEPTH_MAX];
    memcpy(buf, parent->prefix, parent->plen);
    buf[parent->plen] = b;
    return node_alloc(parent, buf, parent->plen + 1);
}

void trie_node_publish(struct trie_node *child)
{
    struct trie_node *parent = child->parent;
    struct trie_kids *k = atomic_load_explicit(&parent->kids, memory_order_acquire);
    if (k == NULL) {
        k = kv_calloc(1, sizeof *k);
        atomic_store_explicit(&parent->kids, k, memory_order_release);
    }
    KV_ASSERT(atomic_load_explicit(&k->at[child->byte], memory_order_relaxed) == NULL);
    atomic_store_explicit(&k->at[child->byte], child, memory_order_release);
}

void trie_node_free_tree(struct trie_node *root)
{
    if (root == NULL)
        return;
    struct trie_kids *k = atomic_load_explicit(&root->kids, memory_order_relaxed);
    if (k) {
        for (int b = 0; b < 256; b++)
            trie_node_free_tree(atomic_load_explicit(&k->at[b], memory_order_relaxed));
        free(k);
    }
    trie_page_destroy(root->page);
    pthread_mutex_destroy(&root->mu);
    free(root->prefix);
    free(root);
}

int trie_page_get(struct triekv *db, struct trie_node *n, struct trie_page **out)
{
    pthread_mutex_lock(&n->mu);
    for (;;) {
        struct trie_page *p = n->page;
        if (p != NULL) {
            n->page_refs++;
            pthread_mutex_unlock(&n->mu);
            cache_count_hit(db->cache);
            cache_touch(db->cache, &p->ce);
            *out = p;
            return KV_OK;
        }
        int damaged = atomic_load(&n->damaged);
        if (damaged != 0) {
            pthread_mutex_unlock(&n->mu);
            return damaged;
        }
        uint64_t gen = n->gen;
        pthread_mutex_unlock(&n->mu);

        cache_count_miss(db->cache);
        int rc = trie_part_load(db, n, &p);
        pthread_mutex_lock(&n->mu);
        if (rc != KV_OK) {
            if (n->gen != gen) /* the file changed under the read: look again */
                continue;
            pthread_mutex_unlock(&n->mu);
            if (rc == KV_E_CORRUPT || rc == KV_E_VERSION)
                trie_set_damaged(db, n, rc, "cannot load partition");
            return rc;
        }
        if (n->page != NULL || n->gen != gen) {
            trie_page_destroy(p);
            continue;
        }
        n->page = p;
        n->page_refs = 1;
        n->gen++;
        pthread_mutex_unlock(&n->mu);
        cache_insert(db->cache, &p->ce, p->mem_bytes, 0);
        *out = p;
        return KV_OK;
    }
}

void trie_page_put(struct triekv *db, struct trie_node *n)
{
    (void)db;
    pthread_mutex_lock(&n->mu);
    KV_ASSERT(n->page_refs > 0);
    n->page_refs--;
    pthread_mutex_unlock(&n->mu);
}

bool trie_cache_evict(void *arg, struct cache_entry *e)
{
    (void)arg;
    struct trie_page *p = (struct trie_page *)e;
    struct trie_node *n = p->node;
    pthread_mutex_lock(&n->mu);
    bool ok = n->page == p && n->page_refs == 0;
    if (ok) {
        n->page = NULL;
        n->gen++;
    }
    pthread_mutex_unlock(&n->mu);
    return ok;
}

void trie_cache_release(void *arg, struct cache_entry *e)
{
    (void)arg;
    trie_page_destroy((struct trie_page *)e);
}

void trie_page_charge(struct triekv *db, struct trie_page *p, int64_t delta)
{
    if (delta == 0)
        return;
    KV_ASSERT(delta >= 0 || (size_t)-delta <= p->mem_bytes);
    p->mem_bytes = (size_t)((int64_t)p->mem_bytes + delta);
    cache_resize(db->cache, &p->ce, delta);
}

void trie_page_mark_dirty(struct triekv *db, struct trie_page *p)
{
    if (!p->dirty_pinned) {
        p->dirty_pinned = true;
        cache_pin(db->cache, &p->ce);
    }
    if (atomic_load_explicit(&p->on_dirty_list, memory_order_acquire))
        return; /* listed already: no need for the global lock (it is only cleared under it) */
    pthread_mutex_lock(&db->dirty_mu);
    if (!atomic_load_explicit(&p->on_dirty_list, memory_order_relaxed)) {
        atomic_store_explicit(&p->on_dirty_list, true, memory_order_release);
        p->dirty_next = db->dirty_head;
        db->dirty_head = p;
    }
    pthread_mutex_unlock(&db->dirty_mu);
}
