/* tests/unit/trie/model.h - the reference the engine is checked against: a sorted array of
 * (key, value) pairs with the obvious semantics. Slow (O(n) inserts) and obviously right. */
#ifndef TEST_MODEL_H
#define TEST_MODEL_H

#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/kv_assert.h"
#include "common/kv_err.h"

struct model_item {
    uint8_t *key;
    size_t klen;
    uint8_t *val;
    size_t vlen;
};

struct model {
    struct model_item *v;
    size_t n, cap;
};

static inline int model_cmp(const uint8_t *a, size_t an, const uint8_t *b, size_t bn)
{
    return kv_slice_cmp(kv_slice_make(a, an), kv_slice_make(b, bn));
}

/* Index of key, or where it would go (*found says which). */
static inline size_t model_find(const struct model *m, const uint8_t *k, size_t kn, bool *found)
{
    size_t lo = 0, hi = m->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = model_cmp(m->v[mid].key, m->v[mid].klen, k, kn);
        if (c == 0) {
            *found = true;
            return mid;
        }
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    *found = false;
    return lo;
}

static inline void model_put(struct model *m, const void *k, size_t kn, const void *v, size_t vn)
{
    bool found;
    size_t i = model_find(m, k, kn, &found);
    if (found) {
        free(m->v[i].val);
    } else {
        if (m->n == m->cap) {
            m->cap = m->cap ? m->cap * 2 : 64;
            m->v = kv_realloc(m->v, m->cap * sizeof *m->v);
        }
        memmove(&m->v[i + 1], &m->v[i], (m->n - i) * sizeof *m->v);
        m->n++;
        m->v[i].key = kv_memdup(k, kn);
        m->v[i].klen = kn;
    }
    m->v[i].val = kv_memdup(v, vn);
    m->v[i].vlen = vn;
}

static inline bool model_del(struct model *m, const void *k, size_t kn)
{
    bool found;
    size_t i = model_find(m, k, kn, &found);
    if (!found)
        return false;
    free(m->v[i].key);
    free(m->v[i].val);
    memmove(&m->v[i], &m->v[i + 1], (m->n - i - 1) * sizeof *m->v);
    m->n--;
    return true;
}

static inline const struct model_item *model_get(const struct model *m, const void *k, size_t kn)
{
    bool found;
    size_t i = model_find(m, k, kn, &found);
    return found ? &m->v[i] : NULL;
}

static inline void model_free(struct model *m)
{
    for (size_t i = 0; i < m->n; i++) {
        free(m->v[i].key);
        free(m->v[i].val);
    }
    free(m->v);
    memset(m, 0, sizeof *m);
}

static inline void model_copy(struct model *dst, const struct model *src)
{
    model_free(dst);
    for (size_t i = 0; i < src->n; i++)
        model_put(dst, src->v[i].key, src->v[i].klen, src->v[i].val, src->v[i].vlen);
}

#endif
