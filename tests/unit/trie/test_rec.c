/* tests/unit/trie/test_rec.c - the on-disk codecs of trie/trie_int.h (trie/trie_rec.c) and the
 * in-memory record:
 *   - partition records: trie_rec_encode_hdr + trie_rec_decode round trips for PUT (1- and
 *     65535-byte keys, empty and large values), DEL and SUMMARY (trie_summary_encode/decode);
 *     every single-bit flip of a small record is KV_E_CORRUPT, as is every truncation, a bad
 *     type or magic, a non-zero reserved byte, a DEL with a value, an empty key, a key past
 *     max_klen and a summary of the wrong shape;
 *   - partition file headers: round trip, wrong prefix (KV_E_CORRUPT), unknown version
 *     (KV_E_VERSION), bit flips and truncation;
 *   - commit log record headers: round trip, bit flips, reserved field;
 *   - trie_op_next over hand-built payloads, well-formed and malformed;
 *   - struct triekv_value: trie_val_create, references, and the triekv_value_* accessors. */
#include "tests/unit/harness.h"
#include "common/kv_buf.h"
#include "common/kv_crc.h"
#include "trie/trie_int.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void fill_random(uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        p[i] = (uint8_t)harness_rand();
}

/* Appends a whole partition record (header, key, value) to out; returns its offset. */
static size_t put_rec(struct kv_buf *out, uint8_t type, uint64_t seq, const void *key, uint32_t klen,
                      const void *val, uint32_t vlen)
{
    size_t at = out->len;
    kv_buf_reserve(out, TRIE_REC_HDR + (size_t)klen + vlen);
    trie_rec_encode_hdr(out->ptr + at, type, seq, key, klen, val, vlen);
    out->len += TRIE_REC_HDR;
    kv_buf_append(out, key, klen);
    kv_buf_append(out, val, vlen);
    return at;
}

/* Recomputes the checksum of the record at p after a test changed a field on purpose, so that
 * only that field is wrong. */
static void rec_rechecksum(uint8_t *p)
{
    uint64_t body = (uint64_t)kv_get_u16(p + 16) + kv_get_u32(p + 20);
    kv_put_u32(p + 4, kv_crc32c(0, p + 8, TRIE_REC_HDR - 8 + body));
}

static bool view_is(const struct trie_rec_view *v, const uint8_t *rec, uint8_t type, uint64_t seq,
                    const void *key, uint32_t klen, const void *val, uint32_t vlen)
{
    return v->type == type && v->seq == seq && v->klen == klen && v->vlen == vlen &&
           v->key == rec + TRIE_REC_HDR && v->val == rec + TRIE_REC_HDR + klen &&
           v->size == trie_rec_size(klen, vlen) && memcmp(v->key, key, klen) == 0 &&
           (vlen == 0 || memcmp(v->val, val, vlen) == 0);
}

/* ---- partition records ------------------------------------------------------------------------ */

static void test_rec_round_trip(void)
{
    struct kv_buf b = {0};
    struct trie_rec_view v;
    /* PUT, 1-byte key, empty value */
    put_rec(&b, TRIE_REC_PUT, 1, "k", 1, NULL, 0);
    CHECK(b.len == 25);
    CHECK(kv_get_u32(b.ptr) == TRIE_REC_MAGIC);
    CHECK(b.ptr[18] == TRIE_REC_PUT && b.ptr[19] == 0);
    CHECK_OK(trie_rec_decode(b.ptr, b.len, TRIEKV_KEY_LEN_MAX, &v));
    CHECK(view_is(&v, b.ptr, TRIE_REC_PUT, 1, "k", 1, NULL, 0));
    CHECK_OK(trie_rec_decode(b.ptr, b.len, 1, &v)); /* max_klen is inclusive */

    /* PUT, the longest key, a large value; seq at its extremes */
    uint32_t klen = TRIEKV_KEY_LEN_MAX, vlen = 3u << 20;
    uint8_t *key = malloc(klen), *val = malloc(vlen);
    fill_random(key, klen);
    fill_random(val, vlen);
    b.len = 0;
    put_rec(&b, TRIE_REC_PUT, UINT64_MAX, key, klen, val, vlen);
    CHECK(b.len == trie_rec_size(klen, vlen));
    CHECK_OK(trie_rec_decode(b.ptr, b.len, TRIEKV_KEY_LEN_MAX, &v));
    CHECK(view_is(&v, b.ptr, TRIE_REC_PUT, UINT64_MAX, key, klen, val, vlen));
    CHECK_RC(trie_rec_decode(b.ptr, b.len, TRIEKV_KEY_LEN_MAX - 1, &v), KV_E_CORRUPT);
    CHECK_RC(trie_rec_decode(b.ptr, b.len - 1, TRIEKV_KEY_LEN_MAX, &v), KV_E_CORRUPT);
    b.ptr[b.len - 1] ^= 1; /* last value byte */
    CHECK_RC(trie_rec_decode(b.ptr, b.len, TRIEKV_KEY_LEN_MAX, &v), KV_E_CORRUPT);
    b.ptr[b.len - 1] ^= 1;
    b.ptr[TRIE_REC_HDR + klen / 2] ^= 0x80; /* a key byte in the middle */
    CHECK_RC(trie_rec_decode(b.ptr, b.len, TRIEKV_KEY_LEN_MAX, &v), KV_E_CORRUPT);
    b.ptr[TRIE_REC_HDR + klen / 2] ^= 0x80;
    CHECK_OK(trie_rec_decode(b.ptr, b.len, TRIEKV_KEY_LEN_MAX, &v));

    /* a sequence of records of every kind, walked by size, with the seq 0 and random ones */
    b.len = 0;
    struct {
        uint8_t type;
        uint64_t seq;
        uint32_t klen, vlen;
    } recs[40];
    for (int i = 0; i < 40; i++) {
        recs[i].type = i % 3 == 1 ? TRIE_REC_DEL : TRIE_REC_PUT;
        recs[i].seq = i == 0 ? 0 : harness_rand();
        recs[i].klen = 1 + (uint32_t)harness_below(i % 5 == 0 ? 2000 : 20);
        recs[i].vlen = recs[i].type == TRIE_REC_DEL ? 0 : (uint32_t)harness_below(i % 7 == 0 ? 70000 : 30);
        put_rec(&b, recs[i].type, recs[i].seq, key, recs[i].klen, val, recs[i].vlen);
    }
    uint64_t off = 0;
    int n = 0;
    while (off < b.len && n < 40) {
        int rc = trie_rec_decode(b.ptr + off, b.len - off, 2000, &v);
        CHECK_OK(rc);
        if (rc != KV_OK)
            break;
        CHECK(view_is(&v, b.ptr + off, recs[n].type, recs[n].seq, key, recs[n].klen, val, recs[n].vlen));
        off += v.size;
        n++;
    }
    CHECK(n == 40 && off == b.len);
    free(key);
    free(val);
    kv_buf_free(&b);
}

static void test_rec_del_and_summary(void)
{
    struct kv_buf b = {0};
    struct trie_rec_view v;
    put_rec(&b, TRIE_REC_DEL, 77, "gone", 4, NULL, 0);
    CHECK_OK(trie_rec_decode(b.ptr, b.len, 1024, &v));
    CHECK(view_is(&v, b.ptr, TRIE_REC_DEL, 77, "gone", 4, NULL, 0));

    struct trie_summary s = {
        .live_keys = 0x0102030405060708ull, .live_value_bytes = UINT64_MAX, .live_rec_bytes = 12345};
    for (int i = 0; i < 32; i++)
        s.children[i] = (uint8_t)(i * 37 + 1);
    uint8_t sv[TRIE_SUMMARY_LEN];
    trie_summary_encode(sv, &s);
    CHECK(kv_get_u64(sv) == s.live_keys); /* little-endian, field by field */
    CHECK(kv_get_u64(sv + 8) == s.live_value_bytes);
    CHECK(kv_get_u64(sv + 16) == s.live_rec_bytes);
    CHECK(memcmp(sv + 24, s.children, 32) == 0);
    b.len = 0;
    put_rec(&b, TRIE_REC_SUMMARY, 99, "", 0, sv, TRIE_SUMMARY_LEN);
    CHECK(b.len == TRIE_REC_HDR + TRIE_SUMMARY_LEN);
    CHECK_OK(trie_rec_decode(b.ptr, b.len, 1024, &v));
    CHECK(v.type == TRIE_REC_SUMMARY && v.seq == 99 && v.klen == 0 && v.vlen == TRIE_SUMMARY_LEN);
    CHECK(v.size == TRIE_REC_HDR + TRIE_SUMMARY_LEN);
    struct trie_summary back;
    memset(&back, 0xee, sizeof back);
    trie_summary_decode(v.val, &back);
    CHECK(back.live_keys == s.live_keys && back.live_value_bytes == s.live_value_bytes &&
          back.live_rec_bytes == s.live_rec_bytes && memcmp(back.children, s.children, 32) == 0);

    /* summaries of the wrong shape */
    uint8_t big[TRIE_SUMMARY_LEN + 1] = {0};
    b.len = 0;
    put_rec(&b, TRIE_REC_SUMMARY, 1, "", 0, big, TRIE_SUMMARY_LEN - 1);
    CHECK_RC(trie_rec_decode(b.ptr, b.len, 1024, &v), KV_E_CORRUPT);
    b.len = 0;
    put_rec(&b, TRIE_REC_SUMMARY, 1, "", 0, big, TRIE_SUMMARY_LEN + 1);
    CHECK_RC(trie_rec_decode(b.ptr, b.len, 1024, &v), KV_E_CORRUPT);
    b.len = 0;
    put_rec(&b, TRIE_REC_SUMMARY, 1, "k", 1, big, TRIE_SUMMARY_LEN);
    CHECK_RC(trie_rec_decode(b.ptr, b.len, 1024, &v), KV_E_CORRUPT);
    kv_buf_free(&b);
}

/* Flips every bit of the record at rec (size bytes, followed by tail more readable bytes) and
 * requires KV_E_CORRUPT each time. Returns the number of flips that were accepted. */
static int flips_accepted(uint8_t *rec, size_t size, size_t tail, uint32_t max_klen)
{
    int accepted = 0;
    struct trie_rec_view v;
    for (size_t bit = 0; bit < size * 8; bit++) {
        rec[bit / 8] ^= (uint8_t)(1u << (bit % 8));
        int rc = trie_rec_decode(rec, size + tail, max_klen, &v);
        if (rc != KV_E_CORRUPT && accepted++ < 5)
            printf("    flip of bit %zu (byte %zu) gave %d\n", bit % 8, bit / 8, rc);
        rec[bit / 8] ^= (uint8_t)(1u << (bit % 8));
    }
    return accepted;
}

static void test_rec_bit_flips(void)
{
    struct kv_buf b = {0};
    struct trie_rec_view v;
    uint8_t sv[TRIE_SUMMARY_LEN];
    struct trie_summary s = {3, 1000, 2000, {0}};
    s.children[5] = 0x21;
    trie_summary_encode(sv, &s);
    struct {
        uint8_t type;
        const char *key;
        const void *val;
        uint32_t vlen;
    } cases[] = {
        {TRIE_REC_PUT, "k1", "hello", 5},
        {TRIE_REC_PUT, "x", "", 0},
        {TRIE_REC_PUT, "\x01\x02", "\x00\xff\x00", 3},
        {TRIE_REC_DEL, "key", NULL, 0},
        {TRIE_REC_SUMMARY, "", sv, TRIE_SUMMARY_LEN},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        uint32_t klen = (uint32_t)strlen(cases[i].key);
        b.len = 0;
        put_rec(&b, cases[i].type, 0x1122334455667788ull, cases[i].key, klen, cases[i].val, cases[i].vlen);
        size_t size = b.len;
        /* followed by another valid record: a flipped length must not reach into it */
        put_rec(&b, TRIE_REC_PUT, 5, "next", 4, "value", 5);
        CHECK_OK(trie_rec_decode(b.ptr, size, 64, &v));
        CHECK(v.size == size);
        CHECK(flips_accepted(b.ptr, size, 0, 64) == 0);
        CHECK(flips_accepted(b.ptr, size, b.len - size, 64) == 0);
        /* followed by random bytes */
        b.len = size;
        uint8_t junk[200];
        fill_random(junk, sizeof junk);
        kv_buf_append(&b, junk, sizeof junk);
        CHECK(flips_accepted(b.ptr, size, sizeof junk, 64) == 0);
        CHECK(flips_accepted(b.ptr, size, sizeof junk, TRIEKV_KEY_LEN_MAX) == 0);
        CHECK_OK(trie_rec_decode(b.ptr, b.len, 64, &v)); /* unchanged after the flips */
        CHECK(v.size == size);
    }
    kv_buf_free(&b);
}

static void test_rec_truncation(void)
{
    struct kv_buf b = {0};
    struct trie_rec_view v;
    put_rec(&b, TRIE_REC_PUT, 9, "some key", 8, "some value", 10);
    for (size_t n = 0; n < b.len; n++)
        CHECK_RC(trie_rec_decode(b.ptr, n, 1024, &v), KV_E_CORRUPT);
    CHECK_OK(trie_rec_decode(b.ptr, b.len, 1024, &v));
    b.len = 0;
    put_rec(&b, TRIE_REC_DEL, 9, "some key", 8, NULL, 0);
    for (size_t n = 0; n < b.len; n++)
        CHECK_RC(trie_rec_decode(b.ptr, n, 1024, &v), KV_E_CORRUPT);
    CHECK_OK(trie_rec_decode(b.ptr, b.len, 1024, &v));
    /* a large record cut short anywhere, at a few points */
    uint8_t *val = calloc(1, 100000);
    b.len = 0;
    put_rec(&b, TRIE_REC_PUT, 9, "k", 1, val, 100000);
    size_t cuts[] = {0, 1, 23, 24, 25, 26, 1000, 99999, b.len - 1};
    for (size_t i = 0; i < sizeof cuts / sizeof cuts[0]; i++)
        CHECK_RC(trie_rec_decode(b.ptr, cuts[i], 1024, &v), KV_E_CORRUPT);
    CHECK_OK(trie_rec_decode(b.ptr, b.len, 1024, &v));
    free(val);
    kv_buf_free(&b);
}

static void test_rec_bad_fields(void)
{
    struct kv_buf b = {0};
    struct trie_rec_view v;
    put_rec(&b, TRIE_REC_PUT, 3, "key", 3, "val", 3);
    CHECK_OK(trie_rec_decode(b.ptr, b.len, 1024, &v));

    /* each field made wrong alone, the checksum made right again */
    static const uint8_t bad_types[] = {0, 4, 5, 0x81, 0xff};
    for (size_t i = 0; i < sizeof bad_types; i++) {
        b.ptr[18] = bad_types[i];
        rec_rechecksum(b.ptr);
        CHECK_RC(trie_rec_decode(b.ptr, b.len, 1024, &v), KV_E_CORRUPT);
    }
    b.ptr[18] = TRIE_REC_PUT;
    rec_rechecksum(b.ptr);
    CHECK_OK(trie_rec_decode(b.ptr, b.len, 1024, &v)); /* the helper really re-checksums */
    for (int bit = 0; bit < 8; bit++) {
        b.ptr[19] = (uint8_t)(1u << bit);
        rec_rechecksum(b.ptr);
        CHECK_RC(trie_rec_decode(b.ptr, b.len, 1024, &v), KV_E_CORRUPT);
    }
    b.ptr[19] = 0;
    rec_rechecksum(b.ptr);
    kv_put_u32(b.ptr, TRIE_PART_MAGIC); /* another format's magic */
    CHECK_RC(trie_rec_decode(b.ptr, b.len, 1024, &v), KV_E_CORRUPT);
    kv_put_u32(b.ptr, TRIE_REC_MAGIC);
    CHECK_OK(trie_rec_decode(b.ptr, b.len, 1024, &v));
    /* PUT turned into DEL (with its value still there) */
    b.ptr[18] = TRIE_REC_DEL;
    rec_rechecksum(b.ptr);
    CHECK_RC(trie_rec_decode(b.ptr, b.len, 1024, &v), KV_E_CORRUPT);
    /* a value length past TRIEKV_VALUE_LEN_MAX (and past the buffer: no checksum to fix) */
    b.ptr[18] = TRIE_REC_PUT;
    kv_put_u32(b.ptr + 20, TRIEKV_VALUE_LEN_MAX + 1u);
    CHECK_RC(trie_rec_decode(b.ptr, b.len, 1024, &v), KV_E_CORRUPT);

    /* DEL with a value, as the encoder writes it */
    b.len = 0;
    put_rec(&b, TRIE_REC_DEL, 3, "key", 3, "v", 1);
    CHECK_RC(trie_rec_decode(b.ptr, b.len, 1024, &v), KV_E_CORRUPT);
    /* empty keys */
    b.len = 0;
    put_rec(&b, TRIE_REC_PUT, 3, "", 0, "v", 1);
    CHECK_RC(trie_rec_decode(b.ptr, b.len, 1024, &v), KV_E_CORRUPT);
    b.len = 0;
    put_rec(&b, TRIE_REC_DEL, 3, "", 0, NULL, 0);
    CHECK_RC(trie_rec_decode(b.ptr, b.len, 1024, &v), KV_E_CORRUPT);
    /* keys past max_klen */
    b.len = 0;
    put_rec(&b, TRIE_REC_PUT, 3, "0123456789", 10, "v", 1);
    CHECK_RC(trie_rec_decode(b.ptr, b.len, 9, &v), KV_E_CORRUPT);
    CHECK_RC(trie_rec_decode(b.ptr, b.len, 1, &v), KV_E_CORRUPT);
    CHECK_OK(trie_rec_decode(b.ptr, b.len, 10, &v));
    b.len = 0;
    put_rec(&b, TRIE_REC_DEL, 3, "0123456789", 10, NULL, 0);
    CHECK_RC(trie_rec_decode(b.ptr, b.len, 9, &v), KV_E_CORRUPT);
    CHECK_OK(trie_rec_decode(b.ptr, b.len, 10, &v));
    kv_buf_free(&b);
}

/* ---- partition file header -------------------------------------------------------------------- */

static void part_rechecksum(uint8_t *p)
{
    uint32_t plen = kv_get_u16(p + 10);
    kv_put_u32(p + 4, kv_crc32c(0, p + 8, TRIE_PART_HDR - 8 + plen));
}

static void test_part_hdr(void)
{
    uint8_t deep[TRIEKV_DEPTH_MAX];
    fill_random(deep, sizeof deep);
    struct {
        const void *p;
        uint32_t n;
    } prefixes[] = {{"", 0}, {"a", 1}, {"ab\0\xff", 4}, {deep, TRIEKV_DEPTH_MAX}};
    struct kv_buf b = {0};
    for (size_t i = 0; i < sizeof prefixes / sizeof prefixes[0]; i++) {
        const uint8_t *pre = prefixes[i].p;
        uint32_t plen = prefixes[i].n;
        b.len = 0;
        kv_buf_append_str(&b, "xyz"); /* encode appends */
        trie_part_hdr_encode(&b, pre, plen);
        CHECK(b.len == 3 + TRIE_PART_HDR + plen);
        CHECK(memcmp(b.ptr, "xyz", 3) == 0);
        uint8_t *h = b.ptr + 3;
        size_t size = b.len - 3;
        CHECK(kv_get_u32(h) == TRIE_PART_MAGIC);
        CHECK(kv_get_u16(h + 8) == TRIE_FORMAT_VERSION);
        CHECK(kv_get_u16(h + 10) == plen);
        CHECK(kv_get_u32(h + 12) == 0);
        CHECK(plen == 0 || memcmp(h + TRIE_PART_HDR, pre, plen) == 0);
        uint64_t hl = 0;
        CHECK_OK(trie_part_hdr_decode(h, size, pre, plen, &hl));
        CHECK(hl == TRIE_PART_HDR + plen);
        hl = 0;
        CHECK_OK(trie_part_hdr_decode(h, size + 1, pre, plen, &hl)); /* records may follow */
        CHECK(hl == TRIE_PART_HDR + plen);

        /* the file holds another partition than expected */
        uint8_t other[TRIEKV_DEPTH_MAX + 1];
        memcpy(other, pre, plen);
        other[plen] = 'z';
        CHECK_RC(trie_part_hdr_decode(h, size, other, plen + 1, &hl), KV_E_CORRUPT);
        if (plen > 0) {
            CHECK_RC(trie_part_hdr_decode(h, size, pre, plen - 1, &hl), KV_E_CORRUPT);
            other[plen - 1] ^= 1;
            CHECK_RC(trie_part_hdr_decode(h, size, other, plen, &hl), KV_E_CORRUPT);
            CHECK_RC(trie_part_hdr_decode(h, size, (const uint8_t *)"", 0, &hl), KV_E_CORRUPT);
        }

        /* truncated */
        for (size_t n = 0; n < size; n++)
            CHECK_RC(trie_part_hdr_decode(h, n, pre, plen, &hl), KV_E_CORRUPT);

        /* every single-bit flip */
        int accepted = 0;
        for (size_t bit = 0; bit < size * 8; bit++) {
            h[bit / 8] ^= (uint8_t)(1u << (bit % 8));
            int rc = trie_part_hdr_decode(h, size, pre, plen, &hl);
            if (rc != KV_E_CORRUPT && accepted++ < 5)
                printf("    part header flip of byte %zu bit %zu gave %d\n", bit / 8, bit % 8, rc);
            h[bit / 8] ^= (uint8_t)(1u << (bit % 8));
        }
        CHECK(accepted == 0);

        /* another format version, with a right checksum: KV_E_VERSION, not corruption */
        static const uint16_t versions[] = {0, TRIE_FORMAT_VERSION + 1, 0xffff};
        for (size_t k = 0; k < sizeof versions / sizeof versions[0]; k++) {
            kv_put_u16(h + 8, versions[k]);
            part_rechecksum(h);
            CHECK_RC(trie_part_hdr_decode(h, size, pre, plen, &hl), KV_E_VERSION);
        }
        kv_put_u16(h + 8, TRIE_FORMAT_VERSION);
        part_rechecksum(h);
        CHECK_OK(trie_part_hdr_decode(h, size, pre, plen, &hl));

        /* the reserved field must be zero, even under a right checksum */
        kv_put_u32(h + 12, 1);
        part_rechecksum(h);
        CHECK_RC(trie_part_hdr_decode(h, size, pre, plen, &hl), KV_E_CORRUPT);
        kv_put_u32(h + 12, 0);
        part_rechecksum(h);
        CHECK_OK(trie_part_hdr_decode(h, size, pre, plen, &hl));
    }

    /* a prefix length past TRIEKV_DEPTH_MAX, readable and checksummed */
    uint8_t big[TRIE_PART_HDR + TRIEKV_DEPTH_MAX + 1];
    memset(big, 'a', sizeof big);
    b.len = 0;
    trie_part_hdr_encode(&b, deep, TRIEKV_DEPTH_MAX);
    memcpy(big, b.ptr, b.len);
    kv_put_u16(big + 10, TRIEKV_DEPTH_MAX + 1);
    part_rechecksum(big);
    uint64_t hl;
    uint8_t want[TRIEKV_DEPTH_MAX + 1];
    memcpy(want, big + TRIE_PART_HDR, sizeof want);
    CHECK_RC(trie_part_hdr_decode(big, sizeof big, want, TRIEKV_DEPTH_MAX + 1, &hl), KV_E_CORRUPT);
    kv_buf_free(&b);
}

/* ---- commit log record header ----------------------------------------------------------------- */

static void test_wal_hdr(void)
{
    uint8_t p[TRIE_WAL_HDR];
    for (int i = 0; i < 200; i++) {
        struct trie_wal_hdr h = {harness_rand(), (uint32_t)harness_rand(), (uint32_t)harness_rand(),
                                 (uint32_t)harness_rand(), (uint32_t)harness_rand()};
        if (i == 0)
            h = (struct trie_wal_hdr){0, 0, 0, 0, 0};
        if (i == 1)
            h = (struct trie_wal_hdr){UINT64_MAX, UINT32_MAX, UINT32_MAX, UINT32_MAX, UINT32_MAX};
        memset(p, 0xcc, sizeof p);
        trie_wal_hdr_encode(p, &h);
        CHECK(kv_get_u32(p) == TRIE_WAL_MAGIC);
        CHECK(kv_get_u64(p + 8) == h.seq && kv_get_u32(p + 16) == h.payload_len);
        CHECK(kv_get_u32(p + 20) == h.payload_crc && kv_get_u32(p + 24) == h.op_count);
        CHECK(kv_get_u32(p + 28) == h.epoch);
        struct trie_wal_hdr got;
        memset(&got, 0x77, sizeof got);
        CHECK_OK(trie_wal_hdr_decode(p, &got));
        CHECK(got.seq == h.seq && got.payload_len == h.payload_len && got.payload_crc == h.payload_crc &&
              got.op_count == h.op_count && got.epoch == h.epoch);
    }
    struct trie_wal_hdr h = {42, 1000, 0xdeadbeef, 7, 0x1234abcd};
    trie_wal_hdr_encode(p, &h);
    int accepted = 0;
    struct trie_wal_hdr got;
    for (size_t bit = 0; bit < sizeof p * 8; bit++) {
        p[bit / 8] ^= (uint8_t)(1u << (bit % 8));
        int rc = trie_wal_hdr_decode(p, &got);
        if (rc != KV_E_CORRUPT && accepted++ < 5)
            printf("    wal header flip of byte %zu bit %zu gave %d\n", bit / 8, bit % 8, rc);
        p[bit / 8] ^= (uint8_t)(1u << (bit % 8));
    }
    CHECK(accepted == 0);
    CHECK_OK(trie_wal_hdr_decode(p, &got));
    CHECK(got.epoch == 0x1234abcd);
    /* another format's magic */
    trie_wal_hdr_encode(p, &h);
    kv_put_u32(p, TRIE_REC_MAGIC);
    CHECK_RC(trie_wal_hdr_decode(p, &got), KV_E_CORRUPT);
}

/* ---- commit log payload operations ------------------------------------------------------------- */

static size_t put_op(struct kv_buf *b, uint8_t type, const void *key, uint32_t klen, const void *val,
                     uint32_t vlen)
{
    size_t at = b->len;
    kv_buf_append_byte(b, type);
    kv_buf_append_byte(b, 0);
    kv_buf_put_u16(b, (uint16_t)klen);
    kv_buf_put_u32(b, vlen);
    kv_buf_append(b, key, klen);
    kv_buf_append(b, val, vlen);
    return at;
}

struct want_op {
    uint8_t type;
    const uint8_t *key;
    uint32_t klen;
    const uint8_t *val;
    uint32_t vlen;
};

static void test_op_next_walk(void)
{
    uint8_t *longkey = malloc(TRIEKV_KEY_LEN_MAX);
    fill_random(longkey, TRIEKV_KEY_LEN_MAX);
    struct want_op want[] = {
        {TRIE_REC_PUT, (const uint8_t *)"a", 1, (const uint8_t *)"1", 1},
        {TRIE_REC_DEL, (const uint8_t *)"bb", 2, NULL, 0},
        {TRIE_REC_PUT, (const uint8_t *)"ccc", 3, (const uint8_t *)"", 0},
        {TRIE_REC_PUT, longkey, TRIEKV_KEY_LEN_MAX, longkey, 1000},
        {TRIE_REC_DEL, longkey, 1, NULL, 0},
        {TRIE_REC_PUT, (const uint8_t *)"\0\xff", 2, (const uint8_t *)"value\0", 6},
    };
    enum { NOPS = sizeof want / sizeof want[0] };
    struct kv_buf b = {0};
    size_t ends[NOPS];
    for (int i = 0; i < NOPS; i++) {
        put_op(&b, want[i].type, want[i].key, want[i].klen, want[i].val, want[i].vlen);
        ends[i] = b.len;
    }
    uint32_t len = (uint32_t)b.len, off = 0;
    struct trie_op_view op;
    for (int i = 0; i < NOPS; i++) {
        int rc = trie_op_next(b.ptr, len, &off, &op);
        CHECK_OK(rc);
        if (rc != KV_OK)
            break;
        CHECK(op.type == want[i].type && op.klen == want[i].klen && op.vlen == want[i].vlen);
        CHECK(memcmp(op.key, want[i].key, want[i].klen) == 0);
        CHECK(want[i].vlen == 0 || memcmp(op.val, want[i].val, want[i].vlen) == 0);
        CHECK(op.key == b.ptr + ends[i] - want[i].vlen - want[i].klen); /* decoded in place */
        CHECK(off == ends[i]);
    }
    CHECK(off == len);
    CHECK_RC(trie_op_next(b.ptr, len, &off, &op), KV_E_CORRUPT); /* nothing past the end */
    CHECK(off == len);

    /* the payload cut at every length: the ops wholly inside decode, the cut one is corrupt */
    int bad = 0;
    for (uint32_t cut = 0; cut <= len; cut++) {
        uint32_t o = 0;
        int k = 0;
        while (k < NOPS && ends[k] <= cut) {
            if (trie_op_next(b.ptr, cut, &o, &op) != KV_OK || o != ends[k])
                bad++;
            k++;
        }
        if (o < cut && trie_op_next(b.ptr, cut, &o, &op) != KV_E_CORRUPT) /* a partial op remains */
            bad++;
    }
    CHECK(bad == 0);
    free(longkey);
    kv_buf_free(&b);
}

static int op_rc(const struct kv_buf *b)
{
    uint32_t off = 0;
    struct trie_op_view op;
    return trie_op_next(b->ptr, (uint32_t)b->len, &off, &op);
}

static void test_op_next_malformed(void)
{
    struct kv_buf b = {0};
    put_op(&b, TRIE_REC_PUT, "k", 1, "v", 1);
    CHECK_OK(op_rc(&b));

    b.len = 0;
    put_op(&b, TRIE_REC_DEL, "k", 1, "v", 1); /* DEL with a value */
    CHECK_RC(op_rc(&b), KV_E_CORRUPT);
    static const uint8_t types[] = {0, TRIE_REC_SUMMARY, 4, 0x80, 0xff};
    for (size_t i = 0; i < sizeof types; i++) {
        b.len = 0;
        put_op(&b, types[i], "k", 1, "v", 1);
        CHECK_RC(op_rc(&b), KV_E_CORRUPT);
    }
    b.len = 0;
    put_op(&b, TRIE_REC_PUT, "k", 1, "v", 1);
    b.ptr[1] = 1; /* reserved */
    CHECK_RC(op_rc(&b), KV_E_CORRUPT);
    b.len = 0;
    put_op(&b, TRIE_REC_PUT, "", 0, "v", 1); /* empty key */
    CHECK_RC(op_rc(&b), KV_E_CORRUPT);
    b.len = 0;
    put_op(&b, TRIE_REC_DEL, "", 0, NULL, 0);
    CHECK_RC(op_rc(&b), KV_E_CORRUPT);

    /* lengths that reach past the end */
    b.len = 0;
    put_op(&b, TRIE_REC_PUT, "key", 3, "val", 3);
    kv_put_u32(b.ptr + 4, 4);
    CHECK_RC(op_rc(&b), KV_E_CORRUPT);
    kv_put_u32(b.ptr + 4, UINT32_MAX);
    CHECK_RC(op_rc(&b), KV_E_CORRUPT);
    kv_put_u32(b.ptr + 4, UINT32_MAX - 8);
    CHECK_RC(op_rc(&b), KV_E_CORRUPT);
    kv_put_u32(b.ptr + 4, 3);
    kv_put_u16(b.ptr + 2, 4);
    CHECK_RC(op_rc(&b), KV_E_CORRUPT);
    kv_put_u16(b.ptr + 2, UINT16_MAX);
    CHECK_RC(op_rc(&b), KV_E_CORRUPT);
    kv_put_u16(b.ptr + 2, 3);
    CHECK_OK(op_rc(&b));
    /* shorter than an op header, in a buffer of exactly that size (ASan sees any read past it) */
    for (size_t n = 0; n < TRIE_OP_HDR; n++) {
        uint8_t *exact = malloc(n ? n : 1);
        memcpy(exact, b.ptr, n);
        uint32_t off = 0;
        struct trie_op_view op;
        CHECK_RC(trie_op_next(exact, (uint32_t)n, &off, &op), KV_E_CORRUPT);
        free(exact);
    }
    /* a bad op after good ones: the good ones decode, then the walk stops at the bad one */
    b.len = 0;
    put_op(&b, TRIE_REC_PUT, "a", 1, "1", 1);
    put_op(&b, TRIE_REC_DEL, "b", 1, NULL, 0);
    size_t bad_at = put_op(&b, TRIE_REC_DEL, "c", 1, "x", 1);
    uint32_t off = 0;
    struct trie_op_view op;
    CHECK_OK(trie_op_next(b.ptr, (uint32_t)b.len, &off, &op));
    CHECK_OK(trie_op_next(b.ptr, (uint32_t)b.len, &off, &op));
    CHECK(off == bad_at);
    CHECK_RC(trie_op_next(b.ptr, (uint32_t)b.len, &off, &op), KV_E_CORRUPT);
    kv_buf_free(&b);
}

/* ---- struct triekv_value ---------------------------------------------------------------------- */

static void test_value(void)
{
    char key[] = "the key", val[] = "the value";
    struct triekv_value *v =
        trie_val_create(TRIE_REC_PUT, 1234, (const uint8_t *)key, 7, (const uint8_t *)val, 9);
    memset(key, 0, sizeof key); /* the record holds copies */
    memset(val, 0, sizeof val);
    CHECK(v->type == TRIE_REC_PUT && v->seq == 1234 && v->klen == 7 && v->vlen == 9 && v->pending == 0);
    CHECK(atomic_load(&v->refs) == 1);
    CHECK(triekv_value_len(v) == 9);
    CHECK(memcmp(triekv_value_data(v), "the value", 9) == 0);
    CHECK(triekv_value_seq(v) == 1234);
    CHECK(kv_slice_eq(trie_val_key(v), kv_slice_make("the key", 7)));
    CHECK(kv_slice_eq(trie_val_value(v), kv_slice_make("the value", 9)));
    CHECK(trie_val_value(v).ptr == triekv_value_data(v));
    CHECK(trie_val_mem(v) >= sizeof *v + 16);
    trie_val_ref(v);
    trie_val_ref(v);
    CHECK(atomic_load(&v->refs) == 3);
    triekv_value_release(v);
    triekv_value_release(v);
    CHECK(atomic_load(&v->refs) == 1); /* still readable with one reference left */
    CHECK(memcmp(triekv_value_data(v), "the value", 9) == 0);
    triekv_value_release(v); /* freed (ASan reports a leak or a double free otherwise) */
    triekv_value_release(NULL);

    /* 1-byte value, empty value, tombstone, large value */
    v = trie_val_create(TRIE_REC_PUT, 2, (const uint8_t *)"k", 1, (const uint8_t *)"z", 1);
    CHECK(triekv_value_len(v) == 1 && triekv_value_data(v)[0] == 'z');
    triekv_value_release(v);
    v = trie_val_create(TRIE_REC_PUT, 1, (const uint8_t *)"k", 1, NULL, 0);
    CHECK(triekv_value_len(v) == 0 && trie_val_key(v).len == 1 && v->bytes[0] == 'k');
    triekv_value_release(v);
    v = trie_val_create(TRIE_REC_DEL, UINT64_MAX, (const uint8_t *)"k", 1, NULL, 0);
    CHECK(v->type == TRIE_REC_DEL && triekv_value_seq(v) == UINT64_MAX && triekv_value_len(v) == 0);
    triekv_value_release(v);
    uint32_t n = 5u << 20;
    uint8_t *big = malloc(n);
    fill_random(big, n);
    uint8_t *kk = malloc(TRIEKV_KEY_LEN_MAX);
    fill_random(kk, TRIEKV_KEY_LEN_MAX);
    v = trie_val_create(TRIE_REC_PUT, 7, kk, TRIEKV_KEY_LEN_MAX, big, n);
    CHECK(triekv_value_len(v) == n && memcmp(triekv_value_data(v), big, n) == 0);
    CHECK(memcmp(trie_val_key(v).ptr, kk, TRIEKV_KEY_LEN_MAX) == 0);
    CHECK(trie_val_mem(v) >= sizeof *v + TRIEKV_KEY_LEN_MAX + (size_t)n);
    triekv_value_release(v);
    free(big);
    free(kk);
}

#define REF_THREADS 4
#define REF_ROUNDS  20000

static void *ref_worker(void *arg)
{
    struct triekv_value *v = arg;
    for (int i = 0; i < REF_ROUNDS; i++) {
        trie_val_ref(v);
        if (triekv_value_len(v) != 5 || memcmp(triekv_value_data(v), "value", 5) != 0)
            return (void *)1;
        triekv_value_release(v);
    }
    triekv_value_release(v); /* the reference the creator handed this thread */
    return NULL;
}

/* References taken and dropped on several threads at once: no early free (ASan), and the last
 * release frees (LeakSanitizer). */
static void test_value_refs_threads(void)
{
    struct triekv_value *v =
        trie_val_create(TRIE_REC_PUT, 5, (const uint8_t *)"key", 3, (const uint8_t *)"value", 5);
    pthread_t th[REF_THREADS];
    for (int t = 0; t < REF_THREADS; t++) {
        trie_val_ref(v);
        CHECK(pthread_create(&th[t], NULL, ref_worker, v) == 0);
    }
    int bad = 0;
    for (int t = 0; t < REF_THREADS; t++) {
        void *r = NULL;
        pthread_join(th[t], &r);
        bad += r != NULL;
    }
    CHECK(bad == 0);
    CHECK(atomic_load(&v->refs) == 1);
    triekv_value_release(v);
}

int main(void)
{
    printf("seed %llu\n", (unsigned long long)harness_seed());
    RUN(test_rec_round_trip);
    RUN(test_rec_del_and_summary);
    RUN(test_rec_bit_flips);
    RUN(test_rec_truncation);
    RUN(test_rec_bad_fields);
    RUN(test_part_hdr);
    RUN(test_wal_hdr);
    RUN(test_op_next_walk);
    RUN(test_op_next_malformed);
    RUN(test_value);
    RUN(test_value_refs_threads);
    return harness_finish();
}
