/* trie/trie_rec.c - encoding and decoding of every on-disk format of trie_int.h (partition
 * records and headers, summaries, commit log records and their operations) and the in-memory
 * record (struct triekv_value). Pure functions: no I/O, no locks.
 *
 * Decoders trust nothing: every length is checked against what is readable before it is used, and
 * a record whose checksum fails is KV_E_CORRUPT whatever its header claims. */
#include "trie/trie_int.h"
#include "common/kv_assert.h"
#include "common/kv_crc.h"

#include <malloc.h>
#include <stdlib.h>
#include <string.h>

_Static_assert(TRIEKV_KEY_LEN_MAX <= UINT16_MAX, "key_len is a 16-bit field");
_Static_assert(TRIEKV_VALUE_LEN_MAX <= UINT32_MAX, "value_len is a 32-bit field");
_Static_assert(TRIE_SUMMARY_LEN == 3 * 8 + 32, "summary layout");

/* ---- struct triekv_value ---------------------------------------------------------------------- */

struct triekv_value *trie_val_create(uint8_t type, uint64_t seq, const uint8_t *key, uint32_t klen,
                                     const uint8_t *val, uint32_t vlen)
{
    struct triekv_value *v = kv_malloc(sizeof *v + (size_t)klen + vlen);
    atomic_init(&v->refs, 1);
    v->type = type;
    v->pending = 0;
    v->klen = klen;
    v->vlen = vlen;
    v->seq = seq;
    if (klen)
        memcpy(v->bytes, key, klen);
    if (vlen)
        memcpy(v->bytes + klen, val, vlen);
    return v;
}

void trie_val_ref(struct triekv_value *v)
{
    atomic_fetch_add_explicit(&v->refs, 1, memory_order_relaxed);
}

size_t trie_val_mem(const struct triekv_value *v)
{
    return malloc_usable_size((void *)v);
}

void triekv_value_release(struct triekv_value *v)
{
    if (v == NULL)
        return;
    uint32_t old = atomic_fetch_sub_explicit(&v->refs, 1, memory_order_acq_rel);
    KV_ASSERT(old > 0);
    if (old == 1)
        free(v);
}

const uint8_t *triekv_value_data(const struct triekv_value *v)
{
    return v->bytes + v->klen;
}

size_t triekv_value_len(const struct triekv_value *v)
{
    return v->vlen;
}

uint64_t triekv_value_seq(const struct triekv_value *v)
{
    return v->seq;
}

/* ---- partition records -------------------------------------------------------------------------- */

static uint32_t rec_crc(const uint8_t *hdr, const uint8_t *key, uint32_t klen, const uint8_t *val,
                        uint32_t vlen)
{
    uint32_t c = kv_crc32c(0, hdr + 8, TRIE_REC_HDR - 8);
    c = kv_crc32c(c, key, klen);
    return kv_crc32c(c, val, vlen);
}

void trie_rec_encode_hdr(uint8_t *hdr, uint8_t type, uint64_t seq, const uint8_t *key, uint32_t klen,
                         const uint8_t *val, uint32_t vlen)
{
    KV_ASSERT(klen <= TRIEKV_KEY_LEN_MAX);
    KV_ASSERT(type == TRIE_REC_PUT || type == TRIE_REC_DEL || type == TRIE_REC_SUMMARY);
    kv_put_u32(hdr, TRIE_REC_MAGIC);
    kv_put_u64(hdr + 8, seq);
    kv_put_u16(hdr + 16, (uint16_t)klen);
    hdr[18] = type;
    hdr[19] = 0;
    kv_put_u32(hdr + 20, vlen);
    kv_put_u32(hdr + 4, rec_crc(hdr, key, klen, val, vlen));
}

int trie_rec_decode(const uint8_t *p, uint64_t avail, uint32_t max_klen, struct trie_rec_view *out)
{
    if (avail < TRIE_REC_HDR || kv_get_u32(p) != TRIE_REC_MAGIC)
        return KV_E_CORRUPT;
    uint8_t type = p[18];
    uint32_t klen = kv_get_u16(p + 16);
    uint32_t vlen = kv_get_u32(p + 20);
    if (p[19] != 0 || vlen > TRIEKV_VALUE_LEN_MAX)
        return KV_E_CORRUPT;
    switch (type) {
    case TRIE_REC_PUT:
        if (klen == 0 || klen > max_klen)
            return KV_E_CORRUPT;
        break;
    case TRIE_REC_DEL:
        if (klen == 0 || klen > max_klen || vlen != 0)
            return KV_E_CORRUPT;
        break;
    case TRIE_REC_SUMMARY:
        if (klen != 0 || vlen != TRIE_SUMMARY_LEN)
            return KV_E_CORRUPT;
        break;
    default:
        return KV_E_CORRUPT;
    }
    uint64_t size = trie_rec_size(klen, vlen);
    if (size > avail)
        return KV_E_CORRUPT;
    const uint8_t *key = p + TRIE_REC_HDR;
    const uint8_t *val = key + klen;
    if (kv_get_u32(p + 4) != rec_crc(p, key, klen, val, vlen))
        return KV_E_CORRUPT;
    out->type = type;
    out->seq = kv_get_u64(p + 8);
    out->key = key;
    out->klen = klen;
    out->val = val;
    out->vlen = vlen;
    out->size = size;
    return KV_OK;
}

void trie_summary_encode(uint8_t *val, const struct trie_summary *s)
{
    kv_put_u64(val, s->live_keys);
    kv_put_u64(val + 8, s->live_value_bytes);
    kv_put_u64(val + 16, s->live_rec_bytes);
    memcpy(val + 24, s->children, 32);
}

void trie_summary_decode(const uint8_t *val, struct trie_summary *s)
{
    s->live_keys = kv_get_u64(val);
    s->live_value_bytes = kv_get_u64(val + 8);
    s->live_rec_bytes = kv_get_u64(val + 16);
    memcpy(s->children, val + 24, 32);
}

/* ---- partition header ------------------------------------------------------------------------- */

void trie_part_hdr_encode(struct kv_buf *out, const uint8_t *prefix, uint32_t plen)
{
    KV_ASSERT(plen <= TRIEKV_DEPTH_MAX);
    size_t at = out->len;
    kv_buf_reserve(out, TRIE_PART_HDR + plen);
    uint8_t *h = out->ptr + at;
    kv_put_u32(h, TRIE_PART_MAGIC);
    kv_put_u16(h + 8, TRIE_FORMAT_VERSION);
    kv_put_u16(h + 10, (uint16_t)plen);
    kv_put_u32(h + 12, 0);
    if (plen)
        memcpy(h + TRIE_PART_HDR, prefix, plen);
    kv_put_u32(h + 4, kv_crc32c(0, h + 8, TRIE_PART_HDR - 8 + plen));
    out->len += TRIE_PART_HDR + plen;
}

int trie_part_hdr_decode(const uint8_t *p, uint64_t avail, const uint8_t *prefix, uint32_t plen,
                         uint64_t *hdr_len)
{
    if (avail < TRIE_PART_HDR || kv_get_u32(p) != TRIE_PART_MAGIC)
        return KV_E_CORRUPT;
    uint32_t got = kv_get_u16(p + 10);
    if (got > TRIEKV_DEPTH_MAX || avail < TRIE_PART_HDR + (uint64_t)got)
        return KV_E_CORRUPT;
    if (kv_get_u32(p + 4) != kv_crc32c(0, p + 8, TRIE_PART_HDR - 8 + got))
        return KV_E_CORRUPT;
    if (kv_get_u32(p + 12) != 0)
        return KV_E_CORRUPT;
    if (kv_get_u16(p + 8) != TRIE_FORMAT_VERSION)
        return KV_E_VERSION;
    if (got != plen || (plen && memcmp(p + TRIE_PART_HDR, prefix, plen) != 0))
        return KV_E_CORRUPT; /* the file holds another partition than its name says */
    *hdr_len = TRIE_PART_HDR + got;
    return KV_OK;
}

/* ---- commit log ------------------------------------------------------------------------------- */

void trie_wal_hdr_encode(uint8_t *p, const struct trie_wal_hdr *h)
{
    kv_put_u32(p, TRIE_WAL_MAGIC);
    kv_put_u64(p + 8, h->seq);
    kv_put_u32(p + 16, h->payload_len);
    kv_put_u32(p + 20, h->payload_crc);
    kv_put_u32(p + 24, h->op_count);
    kv_put_u32(p + 28, h->epoch);
    kv_put_u32(p + 4, kv_crc32c(0, p + 8, TRIE_WAL_HDR - 8));
}

int trie_wal_hdr_decode(const uint8_t *p, struct trie_wal_hdr *h)
{
    if (kv_get_u32(p) != TRIE_WAL_MAGIC)
        return KV_E_CORRUPT;
    if (kv_get_u32(p + 4) != kv_crc32c(0, p + 8, TRIE_WAL_HDR - 8))
        return KV_E_CORRUPT;
    h->seq = kv_get_u64(p + 8);
    h->payload_len = kv_get_u32(p + 16);
    h->payload_crc = kv_get_u32(p + 20);
    h->op_count = kv_get_u32(p + 24);
    h->epoch = kv_get_u32(p + 28);
    return KV_OK;
}

int trie_op_next(const uint8_t *payload, uint32_t len, uint32_t *off, struct trie_op_view *op)
{
    uint32_t o = *off;
    if (o > len || len - o < TRIE_OP_HDR)
        return KV_E_CORRUPT;
    const uint8_t *h = payload + o;
    op->type = h[0];
    op->klen = kv_get_u16(h + 2);
    op->vlen = kv_get_u32(h + 4);
    if ((op->type != TRIE_REC_PUT && op->type != TRIE_REC_DEL) || h[1] != 0 || op->klen == 0)
        return KV_E_CORRUPT;
    if (op->type == TRIE_REC_DEL && op->vlen != 0)
        return KV_E_CORRUPT;
    uint64_t need = (uint64_t)TRIE_OP_HDR + op->klen + op->vlen;
    if (need > len - o)
        return KV_E_CORRUPT;
    op->key = h + TRIE_OP_HDR;
    op->val = op->key + op->klen;
    *off = o + (uint32_t)need;
    return KV_OK;
}
