/* tests/unit/trie/test_repl.c - the engine's replication API: reading the commit log across
 * segments and checkpoints, applying it on a second store (idempotent, in order, checked), and
 * the full resync (wipe, load, finish; a crash in the middle leaves an empty store), and the epoch
 * history that tells a replica whose main lost writes and reused their numbers. */
#include "tests/unit/harness.h"
#include "tests/unit/trie/model.h"
#include "trie/trie_int.h"
#include "trie/triekv.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static struct kv_slice S(const char *s) {
    return kv_slice_make(s, strlen(s));
}

/* manual: no background checkpoint drops the log a test is about to read */
static struct triekv *
open_dir(const char *dir, uint64_t segment, bool manual)
{
    struct triekv_options o;
    triekv_options_init(&o);
    o.manual_checkpoints = manual;
    o.max_page_size = 8192;
    o.wal_segment_bytes = segment;
    o.cache_bytes = 8u << 20;
    struct triekv *db = NULL;
    int rc = triekv_open(dir, &o, &db);
    CHECK_OK(rc);
    if (rc != KV_OK)
        abort();
    return db;
}

/* A workload of puts, overwrites, deletes and batches, mirrored in a model. */
static void workload(struct triekv *db, struct model *m, int from, int n)
{
    char k[32], v[64];
    for (int i = from; i < from + n; i++) {
        int kn = snprintf(k, sizeof k, "key%04d", (i * 7) % 500);
        int vn = snprintf(v, sizeof v, "value-%d-%s", i, i % 3 ? "x" : "yyyyyyyyyyyyyyyyyyyy");
        if (i % 5 == 4) {
            triekv_delete(db, kv_slice_make(k, (size_t)kn), NULL);
            model_del(m, k, (size_t)kn);
        } else if (i % 7 == 6) {
            struct triekv_batch *b = triekv_batch_create();
            triekv_batch_put(b, kv_slice_make(k, (size_t)kn), kv_slice_make(v, (size_t)vn), TRIEKV_IF_ANY, 0);
            triekv_batch_put(b, S("batch-key"), kv_slice_make(v, (size_t)vn), TRIEKV_IF_ANY, 0);
            CHECK_OK(triekv_write(db, b, NULL));
            triekv_batch_destroy(b);
            model_put(m, k, (size_t)kn, v, (size_t)vn);
            model_put(m, "batch-key", 9, v, (size_t)vn);
        } else {
            CHECK_OK(triekv_put(db, kv_slice_make(k, (size_t)kn), kv_slice_make(v, (size_t)vn), NULL));
            model_put(m, k, (size_t)kn, v, (size_t)vn);
        }
    }
}

static int visit_into(void *arg, struct kv_slice key, struct kv_slice value, uint64_t seq)
{
    (void)seq;
    model_put(arg, key.ptr, key.len, value.ptr, value.len);
    return 0;
}

static bool matches(struct triekv *db, const struct model *m)
{
    struct model got = {0};
    bool ok = triekv_scan(db, &(struct triekv_range){0}, visit_into, &got, NULL) == KV_OK && got.n == m->n;
    for (size_t i = 0; ok && i < m->n; i++)
        ok = got.v[i].klen == m->v[i].klen && memcmp(got.v[i].key, m->v[i].key, m->v[i].klen) == 0 &&
             got.v[i].vlen == m->v[i].vlen && memcmp(got.v[i].val, m->v[i].val, m->v[i].vlen) == 0;
    struct triekv_stats st;
    triekv_stats(db, &st);
    ok = ok && st.keys == m->n;
    model_free(&got);
    return ok;
}

/* Every record from `from` on, read in pieces of about max bytes. */
static int read_all(struct triekv *db, uint64_t from, size_t max, struct kv_buf *out, uint64_t *records)
{
    struct triekv_log_reader *r;
    int rc = triekv_log_open(db, from, &r);
    if (rc != KV_OK)
        return rc;
    *records = 0;
    for (;;) {
        uint32_t n;
        rc = triekv_log_read(r, out, max, &n);
        if (rc != KV_OK || n == 0)
            break;
        *records += n;
    }
    triekv_log_close(r);
    return rc;
}

static void test_log_reader(void)
{
    const char *dir = harness_tmpdir(0);
    struct triekv_options o;
    triekv_options_init(&o);
    o.wal_segment_bytes = 4096; /* many segments */
    o.manual_checkpoints = true;
    struct triekv *db = NULL;
    CHECK_OK(triekv_open(dir, &o, &db));
    struct model m = {0};
    workload(db, &m, 0, 400);
    struct triekv_stats st;
    triekv_stats(db, &st);
    CHECK(st.wal_segments > 5);
    /* from every 37th seq, the records come contiguous and end at the last batch */
    for (uint64_t from = 1; from <= st.seq; from += 37) {
        struct kv_buf out = {0};
        uint64_t n;
        CHECK_OK(read_all(db, from, 1000, &out, &n));
        CHECK(n == st.seq - from + 1);
        uint64_t want = from;
        for (size_t off = 0; off < out.len;) {
            struct trie_wal_hdr h;
            CHECK_OK(trie_wal_hdr_decode(out.ptr + off, &h));
            CHECK(h.seq == want);
            want++;
            off += TRIE_WAL_HDR + h.payload_len;
        }
        kv_buf_free(&out);
    }
    /* a reader at the end waits for the next batch */
    struct triekv_log_reader *r;
    CHECK_OK(triekv_log_open(db, st.seq + 1, &r));
    struct kv_buf out = {0};
    uint32_t n;
    CHECK_OK(triekv_log_read(r, &out, 1000, &n));
    CHECK(n == 0);
    CHECK_RC(triekv_wait_seq(db, st.seq + 1, 20), KV_E_TIMEOUT);
    CHECK_OK(triekv_put(db, S("late"), S("comer"), NULL));
    CHECK_OK(triekv_wait_seq(db, st.seq + 1, 20));
    CHECK_OK(triekv_log_read(r, &out, 1000, &n));
    CHECK(n == 1 && triekv_log_next(r) == st.seq + 2);
    kv_buf_free(&out);
    /* a checkpoint drops the segments: old positions are gone, the open reader goes on */
    CHECK_OK(triekv_checkpoint(db));
    CHECK(triekv_log_first(db) > 1);
    struct triekv_log_reader *old;
    CHECK_RC(triekv_log_open(db, 1, &old), KV_E_LOG_TRUNCATED);
    CHECK_OK(triekv_put(db, S("after"), S("checkpoint"), NULL));
    CHECK_OK(triekv_log_read(r, &out, 1000, &n));
    CHECK(n == 1);
    kv_buf_free(&out);
    triekv_log_close(r);
    CHECK_OK(triekv_close(db));
    model_free(&m);
    harness_rmdir(dir);
}

static void test_apply_log(void)
{
    const char *dir_a = harness_tmpdir(0), *dir_b = harness_tmpdir(1);
    struct triekv *a = open_dir(dir_a, 8192, true), *b = open_dir(dir_b, 8192, false);
    struct model m = {0};
    workload(a, &m, 0, 600);
    struct kv_buf log = {0};
    uint64_t n, applied;
    CHECK_OK(read_all(a, 1, 4096, &log, &n));
    CHECK_OK(triekv_apply_log(b, log.ptr, log.len, &applied));
    struct triekv_stats sa, sb;
    triekv_stats(a, &sa);
    CHECK(applied == sa.seq);
    CHECK(matches(b, &m));
    /* resending changes nothing */
    CHECK_OK(triekv_apply_log(b, log.ptr, log.len, &applied));
    CHECK(applied == sa.seq && matches(b, &m));
    triekv_stats(b, &sb);
    CHECK(sb.seq == sa.seq && sb.batches == sa.batches);
    kv_buf_free(&log);
    /* more writes on a, shipped in two halves; a gap is refused; a damaged record too */
    workload(a, &m, 600, 300);
    CHECK_OK(read_all(a, sa.seq + 1, 1 << 20, &log, &n));
    CHECK(n > 100);
    if (n <= 100) {
        printf("    read %llu records from %llu\n", (unsigned long long)n, (unsigned long long)sa.seq + 1);
        return;
    }
    size_t half = 0;
    for (uint64_t i = 0; i < n / 2; i++) {
        struct trie_wal_hdr h;
        trie_wal_hdr_decode(log.ptr + half, &h);
        half += TRIE_WAL_HDR + h.payload_len;
    }
    CHECK_RC(triekv_apply_log(b, log.ptr + half, log.len - half, &applied), KV_E_INVALID); /* gap */
    CHECK(applied == sa.seq);
    struct kv_buf bad = {0};
    kv_buf_append(&bad, log.ptr, half);
    bad.ptr[TRIE_WAL_HDR + 3] ^= 1; /* a payload byte */
    CHECK_RC(triekv_apply_log(b, bad.ptr, bad.len, &applied), KV_E_CORRUPT);
    CHECK(applied == sa.seq);
    kv_buf_free(&bad);
    CHECK_OK(triekv_apply_log(b, log.ptr, half, &applied));
    CHECK_OK(triekv_close(b)); /* a restarted replica resumes from its own applied seq */
    b = open_dir(dir_b, 8192, false);
    triekv_stats(b, &sb);
    CHECK(sb.seq == applied);
    CHECK_OK(triekv_apply_log(b, log.ptr, log.len, &applied)); /* the first half again, then the rest */
    triekv_stats(a, &sa);
    CHECK(applied == sa.seq);
    CHECK(matches(b, &m));
    kv_buf_free(&log);
    CHECK_OK(triekv_close(a));
    CHECK_OK(triekv_close(b));
    /* the replica's own commit log holds the applied batches, readable and valid */
    struct triekv_options ro;
    triekv_options_init(&ro);
    ro.manual_checkpoints = true;
    CHECK_OK(triekv_open(dir_b, &ro, &b));
    CHECK(matches(b, &m));
    CHECK_OK(triekv_put(b, S("own"), S("write"), NULL));
    triekv_stats(b, &sb);
    uint64_t first = triekv_log_first(b);
    CHECK_OK(read_all(b, first, 1 << 20, &log, &n));
    CHECK(n == sb.seq - first + 1);
    kv_buf_free(&log);
    CHECK_OK(triekv_close(b));
    model_free(&m);
    harness_rmdir(dir_a);
    harness_rmdir(dir_b);
}

struct snap_copy {
    struct triekv *dst;
    int rc;
};

static int snap_visit(void *arg, struct kv_slice key, struct kv_slice value, uint64_t seq)
{
    struct snap_copy *c = arg;
    int rc = triekv_snapshot_put(c->dst, key, value, seq);
    if (rc != KV_OK)
        c->rc = rc;
    return rc == KV_OK ? 0 : rc;
}

static void test_resync(void)
{
    const char *dir_a = harness_tmpdir(0), *dir_b = harness_tmpdir(1);
    struct triekv *a = open_dir(dir_a, 8192, true), *b = open_dir(dir_b, 8192, false);
    struct model m = {0}, junk = {0};
    workload(a, &m, 0, 500);
    workload(b, &junk, 1000, 300); /* b holds other data that must vanish */
    model_free(&junk);
    struct triekv_stats st;
    triekv_stats(a, &st);
    uint64_t s0 = st.seq;
    CHECK_OK(triekv_snapshot_begin(b));
    CHECK(triekv_snapshot_active(b));
    struct triekv_stats sb;
    triekv_stats(b, &sb);
    CHECK(sb.keys == 0 && sb.seq == 0);
    /* a fuzzy snapshot: writes land on a while it is read */
    struct snap_copy c = {b, KV_OK};
    struct triekv_range r = {.limit = 100};
    struct triekv_scan_result res;
    uint8_t last[64];
    size_t last_len = 0;
    int page = 0;
    do {
        struct model pagem = {0};
        if (page > 0) {
            r.after = kv_slice_make(last, last_len);
            r.has_after = true;
        }
        CHECK_OK(triekv_scan(a, &r, visit_into, &pagem, &res));
        for (size_t i = 0; i < pagem.n; i++)
            CHECK_OK(triekv_snapshot_put(b, kv_slice_make(pagem.v[i].key, pagem.v[i].klen),
                                         kv_slice_make(pagem.v[i].val, pagem.v[i].vlen), 0));
        if (pagem.n) {
            memcpy(last, pagem.v[pagem.n - 1].key, pagem.v[pagem.n - 1].klen);
            last_len = pagem.v[pagem.n - 1].klen;
        }
        model_free(&pagem);
        workload(a, &m, 500 + page * 20, 20);
        page++;
    } while (res.more);
    (void)c;
    (void)snap_visit;
    CHECK_OK(triekv_snapshot_end(b, s0, 0));
    CHECK(!triekv_snapshot_active(b));
    /* the tail from s0 + 1 brings b to a's state */
    struct kv_buf log = {0};
    uint64_t n, applied;
    CHECK_OK(read_all(a, s0 + 1, 1 << 20, &log, &n));
    CHECK_OK(triekv_apply_log(b, log.ptr, log.len, &applied));
    kv_buf_free(&log);
    triekv_stats(a, &st);
    CHECK(applied == st.seq);
    CHECK(matches(b, &m));
    CHECK_OK(triekv_close(b));
    b = open_dir(dir_b, 8192, false);
    CHECK(matches(b, &m));
    /* a crash in the middle of a resync leaves an empty store, never a mix */
    CHECK_OK(triekv_snapshot_begin(b));
    CHECK_OK(triekv_snapshot_put(b, S("partial"), S("item"), 7));
    CHECK_OK(triekv_close(b)); /* no snapshot_end: as if the process died */
    b = open_dir(dir_b, 8192, false);
    triekv_stats(b, &sb);
    CHECK(sb.keys == 0 && sb.seq == 0);
    CHECK(!triekv_snapshot_active(b));
    CHECK_OK(triekv_close(b));
    CHECK_OK(triekv_close(a));
    model_free(&m);
    harness_rmdir(dir_a);
    harness_rmdir(dir_b);
}

static uint32_t epoch_of(struct triekv *db, uint64_t seq)
{
    uint32_t e = 0;
    CHECK_OK(triekv_epoch_at(db, seq, &e));
    return e;
}

static void puts_n(struct triekv *db, const char *tag, int n)
{
    char k[32];
    for (int i = 0; i < n; i++) {
        int kn = snprintf(k, sizeof k, "%s-%d", tag, i);
        CHECK_OK(triekv_put(db, kv_slice_make(k, (size_t)kn), S(tag), NULL));
    }
}

/* Applies a's log from `from` on to b. */
static void ship(struct triekv *a, struct triekv *b, uint64_t from)
{
    struct kv_buf log = {0};
    uint64_t n, applied;
    CHECK_OK(read_all(a, from, 1 << 20, &log, &n));
    CHECK_OK(triekv_apply_log(b, log.ptr, log.len, &applied));
    kv_buf_free(&log);
}

static void test_epochs(void)
{
    const char *dir_a = harness_tmpdir(0), *dir_b = harness_tmpdir(1), *dir_c = harness_tmpdir(2);
    struct triekv *a = open_dir(dir_a, 8192, true), *b = open_dir(dir_b, 8192, false);
    uint32_t e;
    puts_n(a, "one", 10);
    uint32_t e1 = epoch_of(a, 10);
    CHECK(e1 != 0 && epoch_of(a, 1) == e1);
    CHECK_RC(triekv_epoch_at(a, 0, &e), KV_E_NOT_FOUND);
    CHECK_RC(triekv_epoch_at(a, 11, &e), KV_E_NOT_FOUND);
    ship(a, b, 1); /* a replica's batches keep the main's epoch */
    CHECK(epoch_of(b, 10) == e1);

    /* a backup of a at seq 10; a's next run is another epoch */
    CHECK_OK(triekv_close(a));
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "rm -rf '%s' && cp -a '%s' '%s'", dir_c, dir_a, dir_c);
    CHECK(system(cmd) == 0);
    a = open_dir(dir_a, 8192, true);
    CHECK(epoch_of(a, 10) == e1); /* from the commit log */
    puts_n(a, "two", 10);
    uint32_t e2 = epoch_of(a, 20);
    CHECK(e2 != e1 && epoch_of(a, 11) == e2 && epoch_of(a, 10) == e1);
    ship(a, b, 11);
    CHECK(epoch_of(b, 20) == e2 && epoch_of(b, 5) == e1);

    /* once a checkpoint lets the commit log go, the history comes back from EPOCHS */
    CHECK_OK(triekv_close(a)); /* checkpoints */
    snprintf(cmd, sizeof cmd, "rm -f '%s'/wal/*", dir_a);
    CHECK(system(cmd) == 0);
    a = open_dir(dir_a, 8192, true);
    CHECK(epoch_of(a, 5) == e1 && epoch_of(a, 15) == e2);

    /* the backup restored: the same numbers, another history; only the epochs tell */
    struct triekv *c = open_dir(dir_c, 8192, true);
    puts_n(c, "three", 10);
    struct triekv_stats st;
    triekv_stats(c, &st);
    CHECK(st.seq == 20);
    CHECK(epoch_of(c, 10) == epoch_of(b, 10));
    CHECK(epoch_of(c, 20) != epoch_of(b, 20));

    /* a snapshot starts the replica's history at its seq, with the main's epoch */
    CHECK_OK(triekv_snapshot_begin(b));
    CHECK_RC(triekv_epoch_at(b, 10, &e), KV_E_NOT_FOUND);
    uint32_t e3 = epoch_of(c, 20);
    CHECK_OK(triekv_snapshot_end(b, 20, e3));
    CHECK(epoch_of(b, 20) == e3);
    CHECK_RC(triekv_epoch_at(b, 10, &e), KV_E_NOT_FOUND);
    ship(c, b, 21); /* nothing new: fine */
    CHECK_OK(triekv_close(b));
    b = open_dir(dir_b, 8192, false);
    CHECK(epoch_of(b, 20) == e3);
    CHECK_OK(triekv_close(b));
    CHECK_OK(triekv_close(c));

    /* a damaged history refuses to open rather than vouch for anything */
    CHECK_OK(triekv_close(a));
    snprintf(cmd, sizeof cmd, "printf 'XXXX' | dd of='%s/EPOCHS' bs=1 seek=20 conv=notrunc 2>/dev/null",
             dir_a);
    CHECK(system(cmd) == 0);
    struct triekv_options o;
    triekv_options_init(&o);
    CHECK_RC(triekv_open(dir_a, &o, &a), KV_E_CORRUPT);
    harness_rmdir(dir_a);
    harness_rmdir(dir_b);
    harness_rmdir(dir_c);
}

/* A replicated batch that changes nothing on the replica (its delete hits a key the snapshot no
 * longer had) still takes its number: the next batch is not a gap. */
static void test_apply_noop_batch(void)
{
    const char *dir_a = harness_tmpdir(0), *dir_b = harness_tmpdir(1);
    struct triekv *a = open_dir(dir_a, 8192, true), *b = open_dir(dir_b, 8192, false);
    CHECK_OK(triekv_put(a, S("k"), S("v"), NULL)); /* 1 */
    CHECK_OK(triekv_delete(a, S("k"), NULL));      /* 2 */
    CHECK_OK(triekv_put(a, S("j"), S("w"), NULL)); /* 3 */
    /* a snapshot taken at 1 whose scan already saw the delete: no items */
    CHECK_OK(triekv_snapshot_begin(b));
    CHECK_OK(triekv_snapshot_end(b, 1, epoch_of(a, 1)));
    ship(a, b, 2);
    struct triekv_stats st;
    triekv_stats(b, &st);
    CHECK(st.seq == 3 && st.keys == 1);
    struct triekv_value *v = NULL;
    CHECK_OK(triekv_get(b, S("j"), &v));
    triekv_value_release(v);
    CHECK_OK(triekv_close(b));
    CHECK_OK(triekv_close(a));
    harness_rmdir(dir_a);
    harness_rmdir(dir_b);
}

int main(void)
{
    printf("seed %llu\n", (unsigned long long)harness_seed());
    RUN(test_log_reader);
    RUN(test_apply_log);
    RUN(test_resync);
    RUN(test_epochs);
    RUN(test_apply_noop_batch);
    return harness_finish();
}
