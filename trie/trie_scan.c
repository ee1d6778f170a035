/* trie/trie_scan.c - ordered iteration over a key range.
 *
 * The trie is walked in order: within a partition P, the key equal to P comes first; then for each
 * next byte b from 0 to 255, either the subtree of child P+b or, when that child does not exist,
 * P's own keys whose next byte is b (a page never holds keys of an existing child). So a walk
 * merges P's sorted keys with its children by next byte, and the result is in memcmp order.
 *
 * The whole scan holds view_lock for reading, so a batch is seen entirely or not at all and no
 * split moves records under it. A partition's page is held (referenced and read-locked) while its
 * subtree is walked; the depth is at most TRIEKV_DEPTH_MAX. */
#include "trie/trie_int.h"
#include "common/kv_assert.h"

#include <string.h>

struct scan {
    struct triekv *db;
    const struct triekv_range *r;
    struct kv_slice lo; /* lower bound */
    bool lo_strict;     /* lo itself excluded (a resume cursor) */
    struct kv_slice hi; /* upper bound, exclusive, when has_hi */
    bool has_hi;
    triekv_visit_fn visit;
    void *arg;
    size_t count;
    uint64_t bytes;
    bool more;
    int rc;
};

enum { SCAN_GO = 0, SCAN_STOP = 1 };

static bool is_prefix_of(const uint8_t *p, uint32_t plen, struct kv_slice key)
{
    return plen == 0 || (key.len >= plen && memcmp(key.ptr, p, plen) == 0);
}

/* Offers one item in range order; SCAN_STOP ends the whole scan. */
static int emit(struct scan *s, const struct triekv_value *v)
{
    struct kv_slice key = trie_val_key(v);
    if (s->has_hi && kv_slice_cmp(key, s->hi) >= 0)
        return SCAN_STOP;
    int c = kv_slice_cmp(key, s->lo);
    if (c < 0 || (c == 0 && s->lo_strict))
        return SCAN_GO; /* before the range (only possible in the first partition walked) */
    uint64_t vlen = s->r->keys_only ? 0 : v->vlen;
    if ((s->r->limit && s->count >= s->r->limit) ||
        (s->r->bytes_limit && s->count > 0 && s->bytes + vlen > s->r->bytes_limit)) {
        s->more = true;
        return SCAN_STOP;
    }
    struct kv_slice val = s->r->keys_only ? kv_slice_make(NULL, 0) : trie_val_value(v);
    int rc = s->visit(s->arg, key, val, v->seq);
    s->count++;
    s->bytes += vlen;
    if (rc == 0)
        return SCAN_GO;
    if (rc == 1)
        s->more = true;
    else
        s->rc = rc;
    return SCAN_STOP;
}

static int walk(struct scan *s, struct trie_node *n)
{
    struct kv_slice prefix = kv_slice_make(n->prefix, n->plen);
    if (s->has_hi && kv_slice_cmp(prefix, s->hi) >= 0)
        return SCAN_STOP; /* every key here is >= prefix >= hi */
    if (kv_slice_cmp(prefix, s->lo) < 0 && !is_prefix_of(n->prefix, n->plen, s->lo))
        return SCAN_GO; /* every key here is < lo */
    struct trie_page *p;
    int rc = trie_page_get(s->db, n, &p);
    if (rc != KV_OK) {
        s->rc = rc;
        return SCAN_STOP;
    }
    pthread_rwlock_rdlock(&p->lock);
    trie_page_sort(p);
    uint32_t i = 0;
    int b = 0; /* next child byte to consider */
    if (is_prefix_of(n->prefix, n->plen, s->lo)) {
        i = trie_page_lower_bound(p, s->lo, s->lo_strict);
        if (s->lo.len > n->plen)
            b = s->lo.ptr[n->plen]; /* children before lo's next byte hold only smaller keys */
    }
    int res = SCAN_GO;
    while (res == SCAN_GO) {
        const struct triekv_value *v = i < p->nrecs ? p->recs[p->order[i]] : NULL;
        int vb = v == NULL ? 256 : v->klen == n->plen ? -1 : v->bytes[n->plen];
        int cb = b;
        struct trie_node *child = NULL;
        for (; cb < 256 && cb < vb; cb++) {
            if ((child = trie_kid(n, (uint8_t)cb)) != NULL)
                break;
        }
        if (child != NULL && cb < vb) {
            res = walk(s, child);
            b = cb + 1;
        } else if (v != NULL) {
            res = emit(s, v);
            i++;
            if (vb >= 0)
                b = vb;
        } else {
            break;
        }
    }
    pthread_rwlock_unlock(&p->lock);
    trie_page_put(s->db, n);
    return res;
}

/* The smallest key greater than every key with prefix p: p without its trailing 0xff bytes, last
 * byte plus one. False when p is all 0xff (no such key: the range is open-ended). */
static bool prefix_successor(struct kv_slice p, uint8_t *buf, struct kv_slice *out)
{
    size_t n = p.len;
    while (n > 0 && p.ptr[n - 1] == 0xff)
        n--;
    if (n == 0)
        return false;
    memcpy(buf, p.ptr, n);
    buf[n - 1]++;
    *out = kv_slice_make(buf, n);
    return true;
}

int triekv_scan(struct triekv *db, const struct triekv_range *r, triekv_visit_fn visit, void *arg,
                struct triekv_scan_result *res)
{
    struct scan s = {.db = db, .r = r, .visit = visit, .arg = arg};
    if (res)
        *res = (struct triekv_scan_result){0};
    uint8_t succ[TRIEKV_KEY_LEN_MAX];
    if (r->has_prefix) {
        if (r->prefix.len > TRIEKV_KEY_LEN_MAX)
            return KV_E_KEY_TOO_LONG;
        s.lo = r->prefix;
        s.has_hi = prefix_successor(r->prefix, succ, &s.hi);
    } else {
        if (r->start.len > TRIEKV_KEY_LEN_MAX || (r->has_end && r->end.len > TRIEKV_KEY_LEN_MAX))
            return KV_E_KEY_TOO_LONG;
        if (r->has_end && kv_slice_cmp(r->start, r->end) > 0)
            return KV_E_INVALID;
        s.lo = r->start;
        s.hi = r->end;
        s.has_hi = r->has_end;
    }
    if (r->has_after && kv_slice_cmp(r->after, s.lo) >= 0) {
        s.lo = r->after;
        s.lo_strict = true;
    }
    if (s.has_hi && kv_slice_cmp(s.lo, s.hi) >= 0)
        return KV_OK; /* empty range */
    pthread_rwlock_rdlock(&db->view_lock);
    walk(&s, db->root);
    pthread_rwlock_unlock(&db->view_lock);
    atomic_fetch_add_explicit(&db->st_gets, s.count, memory_order_relaxed);
    if (res) {
        res->count = s.count;
        res->more = s.more;
    }
    return s.rc;
}
