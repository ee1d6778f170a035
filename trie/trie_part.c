/* trie/trie_part.c - partition log files: naming, loading into pages, and writing.
 *
 * A partition log is a header (trie_int.h) followed by records appended in commit order, each
 * flush ending with a summary record. Three things write one:
 *   - a flush appends the dirty log and a summary at the end of the existing file (trie_ckpt.c);
 *   - a flush of a partition that has no file yet, and every split and compaction, write a whole
 *     new log as "<name>.dat.tmp", fdatasync it, then publish it by rename (and a directory
 *     fsync), so such files are either complete or absent;
 *   - recovery cuts a torn tail off a log.
 *
 * Invariants:
 *   1. A record is served only after its checksum was verified (at load).
 *   2. An invalid record with a valid record somewhere after it is corruption (KV_E_CORRUPT), not
 *      a torn tail: the partition is marked damaged and its keys answer KV_E_CORRUPT.
 *   3. A torn tail is cut only during recovery. Only a flush since the last checkpoint can leave
 *      one, and every record it held is in the commit log after the checkpoint, so replay loads
 *      that partition (cutting the tail) and re-applies them. Outside recovery it is corruption.
 *   4. Records whose key belongs to an existing child are stale copies left by a split that
 *      stopped before its parent was rewritten; they are skipped, never served. */
#include "trie/trie_int.h"
#include "common/kv_assert.h"
#include "common/kv_codec.h"
#include "common/kv_log.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>

#define PART_BIG_VALUE   (64u * 1024) /* values at least this large are written from the record, uncopied */
#define PART_FILE_MODE   0644
#define PART_FLUSH_FILES 64 /* partition logs open at once during a flush: bounds file descriptors */

void trie_part_name(const uint8_t *prefix, uint32_t plen, bool tmp, struct kv_buf *out)
{
    kv_name_escape(prefix, plen, out);
    kv_buf_append_str(out, TRIE_PART_EXT);
    if (tmp)
        kv_buf_append_str(out, TRIE_TMP_EXT);
    kv_buf_append_byte(out, 0);
}

void trie_summary_of_page(const struct trie_page *p, struct trie_summary *s)
{
    memset(s, 0, sizeof *s);
    s->live_keys = p->nrecs;
    s->live_value_bytes = p->live_value_bytes;
    s->live_rec_bytes = p->live_rec_bytes;
    for (int b = 0; b < 256; b++) {
        if (trie_kid(p->node, (uint8_t)b))
            s->children[b / 8] |= (uint8_t)(1u << (b % 8));
    }
}

/* ---- loading ---------------------------------------------------------------------------------- */

/* Whether a valid record starts anywhere in buf[from, size). */
static bool valid_record_after(const uint8_t *buf, uint64_t from, uint64_t size)
{
    for (uint64_t off = from; off + TRIE_REC_HDR <= size; off++) {
        const uint8_t *hit = memchr(buf + off, (int)(TRIE_REC_MAGIC & 0xff), size - off);
        if (hit == NULL)
            return false;
        off = (uint64_t)(hit - buf);
        struct trie_rec_view rv;
        if (trie_rec_decode(buf + off, size - off, TRIEKV_KEY_LEN_MAX, &rv) == KV_OK)
            return true;
    }
    return false;
}

static bool key_in_partition(const struct trie_node *n, const uint8_t *key, uint32_t klen)
{
    return klen >= n->plen && memcmp(key, n->prefix, n->plen) == 0;
}

static bool key_shadowed(const struct trie_node *n, const uint8_t *key, uint32_t klen)
{
    return klen > n->plen && trie_kid(n, key[n->plen]) != NULL;
}

/* Applies one decoded record to the page being built. */
static void load_record(struct trie_page *p, const struct trie_rec_view *rv)
{
    struct triekv_value *old = NULL;
    if (rv->type == TRIE_REC_PUT) {
        struct triekv_value *v = trie_val_create(TRIE_REC_PUT, rv->seq, rv->key, rv->klen, rv->val, rv->vlen);
        trie_page_set(p, v, &old);
    } else {
        trie_page_remove(p, kv_slice_make(rv->key, rv->klen), &old);
    }
    triekv_value_release(old);
}

int trie_part_load(struct triekv *db, struct trie_node *n, struct trie_page **out)
{
    struct trie_page *p = trie_page_create(n);
    if (!n->has_file) {
        *out = p;
        return KV_OK;
    }
    struct kv_buf name = {0};
    trie_part_name(n->prefix, n->plen, false, &name);
    uint8_t *buf = NULL;
    uint64_t size = 0, off = 0;
    int rc = trie_file_read_all(db, db->dirfd, (const char *)name.ptr, &buf, &size);
    if (rc == ENOENT)
        rc = KV_E_CORRUPT; /* the trie says the log exists */
    if (rc == KV_OK)
        rc = trie_part_hdr_decode(buf, size, n->prefix, n->plen, &off);
    while (rc == KV_OK && off < size) {
        struct trie_rec_view rv;
        if (trie_rec_decode(buf + off, size - off, TRIEKV_KEY_LEN_MAX, &rv) != KV_OK) {
            if (!db->recovering || valid_record_after(buf, off + 1, size)) {
                trie_log(db, KV_LOG_ERROR, "partition log %s: invalid record at offset %llu of %llu",
                         (const char *)name.ptr, (unsigned long long)off, (unsigned long long)size);
                rc = KV_E_CORRUPT;
                break;
            }
            rc = trie_file_truncate(db, db->dirfd, (const char *)name.ptr, off);
            if (rc == 0)
                trie_log(db, KV_LOG_WARN, "cut torn tail of partition log %s: %llu of %llu bytes dropped",
                         (const char *)name.ptr, (unsigned long long)(size - off), (unsigned long long)size);
            size = off;
            break;
        }
        off += rv.size;
        if (rv.type == TRIE_REC_SUMMARY)
            continue;
        if (!key_in_partition(n, rv.key, rv.klen)) {
            trie_log(db, KV_LOG_ERROR, "partition log %s: record for a foreign key at offset %llu",
                     (const char *)name.ptr, (unsigned long long)(off - rv.size));
            rc = KV_E_CORRUPT;
            break;
        }
        if (key_shadowed(n, rv.key, rv.klen))
            p->shadowed++;
        else
            load_record(p, &rv);
    }
    free(buf);
    kv_buf_free(&name);
    if (rc != KV_OK) {
        trie_page_destroy(p);
        return rc;
    }
    p->file_bytes = size;
    size_t mem = trie_page_base_mem(p);
    for (uint32_t i = 0; i < p->nrecs; i++)
        mem += trie_val_mem(p->recs[i]);
    p->mem_bytes = mem;
    *out = p;
    return KV_OK;
}

int trie_part_read_summary(struct triekv *db, struct trie_node *n, uint64_t *file_bytes,
                           struct trie_summary *s)
{
    struct kv_buf name = {0};
    trie_part_name(n->prefix, n->plen, false, &name);
    int fd;
    int rc = db->io->openat(db->io->ctx, db->dirfd, (const char *)name.ptr, O_RDONLY, 0, &fd);
    kv_buf_free(&name);
    if (rc != 0)
        return rc;
    uint64_t size;
    rc = db->io->fsize(db->io->ctx, fd, &size);
    uint8_t tail[TRIE_REC_HDR + TRIE_SUMMARY_LEN];
    const uint64_t tail_len = sizeof tail;
    if (rc == 0 && size < TRIE_PART_HDR + tail_len)
        rc = KV_E_NOT_FOUND;
    size_t got = 0;
    if (rc == 0)
        rc = db->io->pread(db->io->ctx, fd, tail, tail_len, size - tail_len, &got);
    db->io->close(db->io->ctx, fd);
    if (rc != 0)
        return rc;
    struct trie_rec_view rv;
    if (got != tail_len || trie_rec_decode(tail, tail_len, 0, &rv) != KV_OK || rv.type != TRIE_REC_SUMMARY)
        return KV_E_NOT_FOUND;
    trie_summary_decode(rv.val, s);
    *file_bytes = size;
    return KV_OK;
}

/* ---- writing ---------------------------------------------------------------------------------- */

static void out_piece(struct trie_part_out *o, const uint8_t *ptr, size_t off, size_t len)
{
    if (len == 0)
        return;
    if (o->npieces == o->cap) {
        o->cap = o->cap ? o->cap * 2 : 16;
        o->pieces = kv_realloc(o->pieces, (size_t)o->cap * sizeof *o->pieces);
    }
    o->pieces[o->npieces].ptr = ptr;
    o->pieces[o->npieces].off = off;
    o->pieces[o->npieces].len = len;
    o->npieces++;
}

static void out_close_buf(struct trie_part_out *o)
{
    out_piece(o, NULL, o->buf_mark, o->buf.len - o->buf_mark);
    o->buf_mark = o->buf.len;
}

static void out_record(struct trie_part_out *o, uint8_t type, uint64_t seq, const uint8_t *key, uint32_t klen,
                       const uint8_t *val, uint32_t vlen)
{
    uint8_t hdr[TRIE_REC_HDR];
    trie_rec_encode_hdr(hdr, type, seq, key, klen, val, vlen);
    kv_buf_append(&o->buf, hdr, sizeof hdr);
    kv_buf_append(&o->buf, key, klen);
    if (vlen >= PART_BIG_VALUE) {
        out_close_buf(o);
        out_piece(o, val, 0, vlen);
    } else {
        kv_buf_append(&o->buf, val, vlen);
    }
    o->bytes += trie_rec_size(klen, vlen);
}

static void out_value(struct trie_part_out *o, const struct triekv_value *v)
{
    out_record(o, v->type, v->seq, v->bytes, v->klen, v->bytes + v->klen, v->vlen);
}

static void out_summary(struct trie_part_out *o, uint64_t seq, const struct trie_summary *s)
{
    uint8_t val[TRIE_SUMMARY_LEN];
    trie_summary_encode(val, s);
    out_record(o, TRIE_REC_SUMMARY, seq, NULL, 0, val, sizeof val);
}

/* The iovec list for what was gathered; free() it. */
static struct iovec *out_iov(struct trie_part_out *o, int *n)
{
    out_close_buf(o);
    struct iovec *iov = kv_malloc((size_t)(o->npieces ? o->npieces : 1) * sizeof *iov);
    for (int i = 0; i < o->npieces; i++) {
        const uint8_t *base = o->pieces[i].ptr ? o->pieces[i].ptr : o->buf.ptr + o->pieces[i].off;
        iov[i].iov_base = (void *)base;
        iov[i].iov_len = o->pieces[i].len;
    }
    *n = o->npieces;
    return iov;
}

static void out_free(struct trie_part_out *o)
{
    kv_buf_free(&o->buf);
    free(o->pieces);
    memset(o, 0, sizeof *o);
}

/* Gathers records[0..n) then a summary; with prefix != NULL a header comes first (new file). */
static void out_log(struct trie_part_out *o, const uint8_t *prefix, uint32_t plen, bool header,
                    struct triekv_value *const *recs, uint32_t n, const struct trie_summary *s)
{
    uint64_t max_seq = 0;
    if (header) {
        trie_part_hdr_encode(&o->buf, prefix, plen);
        o->bytes += TRIE_PART_HDR + plen;
    }
    for (uint32_t i = 0; i < n; i++) {
        out_value(o, recs[i]);
        if (recs[i]->seq > max_seq)
            max_seq = recs[i]->seq;
    }
    out_summary(o, max_seq, s);
}

static int write_new_file(struct triekv *db, const char *name, struct trie_part_out *o)
{
    int fd;
    int rc = db->io->openat(db->io->ctx, db->dirfd, name, O_WRONLY | O_CREAT | O_TRUNC, PART_FILE_MODE, &fd);
    if (rc != 0)
        return rc;
    int n;
    struct iovec *iov = out_iov(o, &n);
    rc = db->io->pwritev(db->io->ctx, fd, iov, n, 0, 1);
    free(iov);
    int rc2 = db->io->close(db->io->ctx, fd);
    return rc ? rc : rc2;
}

int trie_part_write_tmp(struct triekv *db, const uint8_t *prefix, uint32_t plen,
                        struct triekv_value *const *recs, uint32_t n, const uint8_t children[32],
                        uint64_t *bytes)
{
    struct trie_summary s = {0};
    for (uint32_t i = 0; i < n; i++) {
        KV_ASSERT(recs[i]->type == TRIE_REC_PUT);
        s.live_keys++;
        s.live_value_bytes += recs[i]->vlen;
        s.live_rec_bytes += trie_rec_size(recs[i]->klen, recs[i]->vlen);
    }
    memcpy(s.children, children, sizeof s.children);
    struct trie_part_out o = {0};
    out_log(&o, prefix, plen, true, recs, n, &s);
    struct kv_buf name = {0};
    trie_part_name(prefix, plen, true, &name);
    int rc = write_new_file(db, (const char *)name.ptr, &o);
    *bytes = o.bytes;
    kv_buf_free(&name);
    out_free(&o);
    return rc;
}

int trie_part_publish(struct triekv *db, const uint8_t *prefix, uint32_t plen)
{
    struct kv_buf tmp = {0}, name = {0};
    trie_part_name(prefix, plen, true, &tmp);
    trie_part_name(prefix, plen, false, &name);
    int rc = db->io->renameat(db->io->ctx, db->dirfd, (const char *)tmp.ptr, (const char *)name.ptr);
    kv_buf_free(&tmp);
    kv_buf_free(&name);
    return rc;
}

/* ---- flushing (called by the checkpointer) ------------------------------------------------------ */

/* Writes every share: appends to existing logs in one batch (each write followed by its
 * fdatasync), new logs as temporary files published by rename, then one directory fsync. */
/* One chunk of a flush: at most PART_FLUSH_FILES open at once. */
static int flush_chunk(struct triekv *db, struct trie_flush *f, size_t n, bool *renamed);

int trie_part_flush(struct triekv *db, struct trie_flush *f, size_t n)
{
    int rc = KV_OK;
    bool renamed = false;
    for (size_t i = 0; i < n && rc == KV_OK; i += PART_FLUSH_FILES)
        rc = flush_chunk(db, f + i, n - i < PART_FLUSH_FILES ? n - i : PART_FLUSH_FILES, &renamed);
    if (renamed) {
        int rc2 = db->io->fsync_dir(db->io->ctx, db->dirfd);
        if (rc == KV_OK)
            rc = rc2;
    }
    return rc;
}

static int flush_chunk(struct triekv *db, struct trie_flush *f, size_t n, bool *renamed)
{
    int rc = KV_OK;
    struct trie_io_op *ops = kv_calloc(n ? n : 1, sizeof *ops);
    size_t nops = 0;
    for (size_t i = 0; i < n; i++)
        f[i].fd = -1;
    for (size_t i = 0; i < n; i++) {
        struct trie_node *node = f[i].page->node;
        out_log(&f[i].out, node->prefix, node->plen, f[i].new_file, f[i].recs, f[i].nrecs, &f[i].summary);
        if (f[i].new_file)
            continue;
        struct kv_buf name = {0};
        trie_part_name(node->prefix, node->plen, false, &name);
        rc = db->io->openat(db->io->ctx, db->dirfd, (const char *)name.ptr, O_WRONLY, 0, &f[i].fd);
        kv_buf_free(&name);
        if (rc != 0)
            goto out;
        f[i].iov = out_iov(&f[i].out, &f[i].iovcnt);
        ops[nops++] = (struct trie_io_op){
            .fd = f[i].fd, .iov = f[i].iov, .iovcnt = f[i].iovcnt, .off = f[i].off, .sync = 1};
    }
    rc = db->io->submit(db->io->ctx, ops, nops);
    for (size_t i = 0; i < n && rc == KV_OK; i++) {
        if (!f[i].new_file)
            continue;
        struct trie_node *node = f[i].page->node;
        struct kv_buf name = {0};
        trie_part_name(node->prefix, node->plen, true, &name);
        rc = write_new_file(db, (const char *)name.ptr, &f[i].out);
        kv_buf_free(&name);
        if (rc == KV_OK)
            rc = trie_part_publish(db, node->prefix, node->plen);
        *renamed = *renamed || rc == KV_OK;
    }
out:
    for (size_t i = 0; i < n; i++) {
        if (f[i].fd >= 0)
            db->io->close(db->io->ctx, f[i].fd);
        free(f[i].iov);
        f[i].iov = NULL;
    }
    free(ops);
    return rc;
}

uint64_t trie_flush_bytes(const struct trie_flush *f)
{
    return f->out.bytes;
}

void trie_flush_free(struct trie_flush *f)
{
    out_free(&f->out);
}
