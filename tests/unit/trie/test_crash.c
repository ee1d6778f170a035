/* tests/unit/trie/test_crash.c - crash and I/O error tests through the fault-injecting I/O layer.
 *
 * Power loss: a deterministic workload of puts, deletes and multi-key batches, on 4 KiB pages (so
 * splits and compactions happen) with checkpoints along the way, is cut off at its Nth durability
 * point (every fdatasync, directory fsync and rename), before or after that point takes effect,
 * for every N the workload reaches. After reopening on plain POSIX I/O the store must hold:
 *   - under fsync=strict: exactly the acknowledged batches, plus possibly the one in flight;
 *   - under fsync=default: the batches of some prefix of the acknowledged ones (plus possibly the
 *     one in flight): nothing partly applied, nothing duplicated, no deleted key back.
 * Then it must take more writes and reopen again to the same state.
 *
 * I/O errors: EIO and ENOSPC injected into the Nth write or the Nth fdatasync, for every N. The
 * failing call gets a clear error, reads keep working, and a reopen recovers exactly the
 * acknowledged batches (plus possibly the failed one: never part of it). */
#include "tests/unit/harness.h"
#include "tests/unit/trie/model.h"
#include "trie/trie_io.h"
#include "trie/trie_io_fault.h"
#include "trie/triekv.h"
#include "common/kv_log.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- the workload ----------------------------------------------------------------------------- */

#define WL_BATCHES 120
#define WL_OPS_MAX 6

struct wl_op {
    bool put;
    uint8_t key[24];
    size_t klen;
    uint8_t val[200];
    size_t vlen;
};

struct wl_batch {
    struct wl_op ops[WL_OPS_MAX];
    int n;
    bool checkpoint_after;
};

static struct wl_batch workload[WL_BATCHES];

static uint64_t wl_rng;
static uint64_t wl_rand(void)
{
    wl_rng ^= wl_rng >> 12;
    wl_rng ^= wl_rng << 25;
    wl_rng ^= wl_rng >> 27;
    return wl_rng * 0x2545F4914F6CDD1Dull;
}

static void make_workload(uint64_t seed)
{
    /* "hot" keys are few and overwritten often, so their partition compacts */
    static const char *const pre[] = {"a/", "a/b", "user:", "k", "\xff\x00", "hot", "hot"};
    wl_rng = seed | 1;
    for (int b = 0; b < WL_BATCHES; b++) {
        struct wl_batch *wb = &workload[b];
        wb->n = 1 + (int)(wl_rand() % (wl_rand() % 4 == 0 ? WL_OPS_MAX : 2));
        wb->checkpoint_after = b % 15 == 14;
        for (int i = 0; i < wb->n; i++) {
            struct wl_op *op = &wb->ops[i];
            const char *p = pre[wl_rand() % 7];
            size_t pl = p[0] == '\xff' ? 2 : strlen(p);
            memcpy(op->key, p, pl);
            op->klen = pl + 1 + (p[0] == 'h' ? 0 : wl_rand() % 3);
            for (size_t j = pl; j < op->klen; j++)
                op->key[j] = (uint8_t)('0' + wl_rand() % 10);
            op->put = wl_rand() % 4 != 0;
            op->vlen = op->put ? wl_rand() % 200 : 0;
            for (size_t j = 0; j < op->vlen; j++)
                op->val[j] = (uint8_t)wl_rand();
        }
    }
}

static struct triekv_batch *wl_make_batch(const struct wl_batch *wb)
{
    struct triekv_batch *b = triekv_batch_create();
    for (int i = 0; i < wb->n; i++) {
        const struct wl_op *op = &wb->ops[i];
        struct kv_slice k = kv_slice_make(op->key, op->klen);
        int rc = op->put ? triekv_batch_put(b, k, kv_slice_make(op->val, op->vlen), TRIEKV_IF_ANY, 0)
                         : triekv_batch_del(b, k, TRIEKV_IF_ANY, 0);
        KV_ASSERT(rc == KV_OK);
    }
    return b;
}

static void wl_apply(struct model *m, const struct wl_batch *wb)
{
    for (int i = 0; i < wb->n; i++) {
        const struct wl_op *op = &wb->ops[i];
        if (op->put)
            model_put(m, op->key, op->klen, op->val, op->vlen);
        else
            model_del(m, op->key, op->klen);
    }
}

/* ---- comparing a store with a model ---------------------------------------------------------- */

static int visit_into(void *arg, struct kv_slice key, struct kv_slice value, uint64_t seq)
{
    (void)seq;
    model_put(arg, key.ptr, key.len, value.ptr, value.len);
    return 0;
}

static bool same(const struct model *a, const struct model *b)
{
    if (a->n != b->n)
        return false;
    for (size_t i = 0; i < a->n; i++) {
        if (model_cmp(a->v[i].key, a->v[i].klen, b->v[i].key, b->v[i].klen) != 0 ||
            a->v[i].vlen != b->v[i].vlen ||
            (a->v[i].vlen && memcmp(a->v[i].val, b->v[i].val, a->v[i].vlen) != 0))
            return false;
    }
    return true;
}

/* The store's content, read both by a scan and by point reads (which must agree). */
static bool store_content(struct triekv *db, struct model *out)
{
    if (triekv_scan(db, &(struct triekv_range){0}, visit_into, out, NULL) != KV_OK)
        return false;
    for (size_t i = 0; i < out->n; i++) {
        struct triekv_value *v = NULL;
        if (triekv_get(db, kv_slice_make(out->v[i].key, out->v[i].klen), &v) != KV_OK)
            return false;
        bool eq = triekv_value_len(v) == out->v[i].vlen &&
                  (out->v[i].vlen == 0 || memcmp(triekv_value_data(v), out->v[i].val, out->v[i].vlen) == 0);
        triekv_value_release(v);
        if (!eq)
            return false;
    }
    struct triekv_stats st;
    triekv_stats(db, &st);
    return st.keys == out->n;
}

static void print_key(const char *what, const uint8_t *k, size_t n, size_t vlen)
{
    printf("      %s key ", what);
    for (size_t i = 0; i < n; i++)
        printf(k[i] >= 0x20 && k[i] < 0x7f ? "%c" : "\\x%02x", k[i]);
    printf(" (%zu value bytes)\n", vlen);
}

/* Prints how content differs from the state after batches [0, k) (at most a few lines). */
static void print_diff(const struct model *content, int k)
{
    struct model m = {0};
    for (int i = 0; i < k; i++)
        wl_apply(&m, &workload[i]);
    int shown = 0;
    for (size_t i = 0; i < m.n && shown < 6; i++) {
        const struct model_item *c = model_get(content, m.v[i].key, m.v[i].klen);
        if (c == NULL)
            print_key("missing", m.v[i].key, m.v[i].klen, m.v[i].vlen), shown++;
        else if (c->vlen != m.v[i].vlen || memcmp(c->val, m.v[i].val, c->vlen) != 0)
            print_key("different", m.v[i].key, m.v[i].klen, c->vlen), shown++;
    }
    for (size_t i = 0; i < content->n && shown < 6; i++) {
        if (model_get(&m, content->v[i].key, content->v[i].klen) == NULL)
            print_key("extra", content->v[i].key, content->v[i].klen, content->v[i].vlen), shown++;
    }
    model_free(&m);
}

/* Whether content equals the state after batches [0, k) for some k in [lo, hi]. */
static bool matches_prefix(const struct model *content, int lo, int hi)
{
    struct model m = {0};
    bool ok = false;
    for (int k = 0; k <= hi && !ok; k++) {
        if (k >= lo && same(content, &m))
            ok = true;
        if (k < hi)
            wl_apply(&m, &workload[k]);
    }
    model_free(&m);
    return ok;
}

/* ---- power loss --------------------------------------------------------------------------------- */

/* POSIX I/O without the real syncs: the fault layer models durability itself, and skipping the
 * disk flushes keeps thousands of cases fast. */
static int nosync(void *ctx, int fd)
{
    (void)ctx;
    (void)fd;
    return 0;
}
static int nosync_submit(void *ctx, struct trie_io_op *ops, size_t n)
{
    int first = 0;
    for (size_t i = 0; i < n; i++) {
        ops[i].res = ops[i].iov
                         ? trie_io_posix()->pwritev(ctx, ops[i].fd, ops[i].iov, ops[i].iovcnt, ops[i].off, 0)
                         : 0;
        if (ops[i].res && !first)
            first = ops[i].res;
    }
    return first;
}
static int nosync_pwritev(void *ctx, int fd, const struct iovec *iov, int n, uint64_t off, int sync)
{
    (void)sync;
    return trie_io_posix()->pwritev(ctx, fd, iov, n, off, 0);
}
static struct trie_io nosync_io;

static void crash_options(struct triekv_options *o, enum triekv_fsync mode)
{
    triekv_options_init(o);
    o->fsync = mode;
    o->max_page_size = 4096;
    o->wal_segment_bytes = 8 * 1024; /* segment rotation and drops happen too */
    o->cache_bytes = 256 * 1024;     /* evictions too */
    o->manual_checkpoints = true;
}

struct case_result {
    uint64_t points; /* durability points the run passed */
    uint64_t syncs, dirsyncs, renames;
    struct triekv_stats st;
    bool ok;
};

/* Runs the workload and cuts power at point nth (0: at the very end). */
static struct case_result run_case(enum triekv_fsync mode, uint64_t nth, bool after, uint64_t seed)
{
    struct case_result cr = {.ok = true};
    const char *dir = harness_tmpdir(1);
    struct fault_io *f = fault_io_create(&nosync_io, seed);
    struct triekv_options o;
    crash_options(&o, mode);
    o.io = fault_io_table(f);
    struct triekv *db = NULL;
    int rc = triekv_open(dir, &o, &db);
    if (rc != KV_OK) {
        printf("    open failed: %s\n", kv_strerror(rc));
        cr.ok = false;
        fault_io_destroy(f);
        return cr;
    }
    if (nth)
        fault_io_crash_at(f, nth, after);
    uint64_t p0 = fault_io_points(f);
    int acked = 0;
    bool inflight = false;
    for (int b = 0; b < WL_BATCHES; b++) {
        struct triekv_batch *tb = wl_make_batch(&workload[b]);
        rc = triekv_write(db, tb, NULL);
        triekv_batch_destroy(tb);
        if (rc != KV_OK) {
            inflight = true;
            break;
        }
        acked = b + 1;
        if (fault_io_crashed(f))
            break;
        if (workload[b].checkpoint_after && triekv_checkpoint(db) != KV_OK)
            break;
    }
    cr.points = fault_io_points(f) - p0;
    fault_io_point_kinds(f, &cr.syncs, &cr.dirsyncs, &cr.renames);
    triekv_stats(db, &cr.st);
    if (!fault_io_crashed(f))
        fault_io_crash_now(f);
    triekv_close(db); /* fails: the disk is gone */
    fault_io_destroy(f);

    struct triekv_options ro;
    crash_options(&ro, mode);
    db = NULL;
    rc = triekv_open(dir, &ro, &db);
    struct model content = {0};
    if (rc != KV_OK || !store_content(db, &content)) {
        printf("    reopen after cut at %llu%s: %s\n", (unsigned long long)nth, after ? "+" : "",
               kv_strerror(rc));
        cr.ok = false;
    } else {
        int hi = inflight ? acked + 1 : acked;
        int lo = mode == TRIEKV_FSYNC_STRICT ? acked : 0;
        if (!matches_prefix(&content, lo, hi)) {
            printf("    cut at %llu%s: content (%zu keys) is not the state after batches %d..%d\n",
                   (unsigned long long)nth, after ? "+" : "", content.n, lo, hi);
            print_diff(&content, acked);
            cr.ok = false;
        }
    }
    /* the recovered store takes writes and reopens to the same state */
    if (cr.ok) {
        struct triekv_batch *tb = wl_make_batch(&workload[0]);
        cr.ok = triekv_write(db, tb, NULL) == KV_OK && triekv_checkpoint(db) == KV_OK;
        triekv_batch_destroy(tb);
        wl_apply(&content, &workload[0]);
        cr.ok = triekv_close(db) == KV_OK && cr.ok;
        db = NULL;
        struct model again = {0};
        cr.ok = cr.ok && triekv_open(dir, &ro, &db) == KV_OK && store_content(db, &again) &&
                same(&again, &content);
        if (!cr.ok)
            printf("    cut at %llu%s: recovered store misbehaves afterwards\n", (unsigned long long)nth,
                   after ? "+" : "");
        model_free(&again);
    }
    triekv_close(db);
    model_free(&content);
    harness_rmdir(dir);
    return cr;
}

static void sweep(enum triekv_fsync mode, uint64_t seed, int *cases)
{
    make_workload(seed);
    struct case_result full = run_case(mode, 0, false, seed);
    CHECK(full.ok);
    printf("    %s: %llu durability points per run (%llu fdatasync, %llu directory fsync, %llu rename; %llu "
           "splits, "
           "%llu compactions, %llu checkpoints, %llu log segments at the end)\n",
           triekv_fsync_name(mode), (unsigned long long)full.points, (unsigned long long)full.syncs,
           (unsigned long long)full.dirsyncs, (unsigned long long)full.renames,
           (unsigned long long)full.st.splits, (unsigned long long)full.st.compactions,
           (unsigned long long)full.st.checkpoints, (unsigned long long)full.st.wal_segments);
    CHECK(full.st.splits > 0 && full.st.compactions > 0 && full.st.checkpoints > 3);
    int failures = 0;
    for (uint64_t n = 1; n <= full.points && failures < 5; n++) {
        for (int after = 0; after < 2; after++) {
            struct case_result cr = run_case(mode, n, after, seed * 1000003 + n * 2 + (uint64_t)after);
            (*cases)++;
            if (!cr.ok)
                failures++;
        }
    }
    CHECK(failures == 0);
}

static void test_power_loss_strict(void)
{
    int cases = 0;
    for (int s = 0; s < 3; s++)
        sweep(TRIEKV_FSYNC_STRICT, harness_rand(), &cases);
    printf("    %d cases\n", cases);
}

static void test_power_loss_default(void)
{
    int cases = 0;
    for (int s = 0; s < 3; s++)
        sweep(TRIEKV_FSYNC_DEFAULT, harness_rand(), &cases);
    printf("    %d cases\n", cases);
}

/* ---- I/O errors -------------------------------------------------------------------------------- */

struct ioerr_stats {
    int cases, readonly, recovered_failed_batch;
};

static bool ioerr_case(unsigned kinds, int err, uint64_t nth, struct ioerr_stats *st, bool *fired)
{
    const char *dir = harness_tmpdir(1);
    struct fault_io *f = fault_io_create(trie_io_posix(), nth);
    struct triekv_options o;
    crash_options(&o, TRIEKV_FSYNC_STRICT);
    o.io = fault_io_table(f);
    struct triekv *db = NULL;
    bool ok = triekv_open(dir, &o, &db) == KV_OK;
    /* a first batch lands before the fault is armed, so reads have something to find */
    struct triekv_batch *tb = wl_make_batch(&workload[0]);
    ok = ok && triekv_write(db, tb, NULL) == KV_OK;
    triekv_batch_destroy(tb);
    fault_io_fail_nth(f, nth, kinds, err, false);
    int acked = 1, failed = -1;
    for (int b = 1; ok && b < 40; b++) {
        tb = wl_make_batch(&workload[b]);
        int rc = triekv_write(db, tb, NULL);
        triekv_batch_destroy(tb);
        if (rc == KV_OK) {
            if (failed < 0)
                acked = b + 1;
            else
                ok = false, printf("    call %llu: write %d succeeded on a read-only store\n",
                                   (unsigned long long)nth, b);
        } else if (failed < 0) {
            failed = b;
            ok = rc == err || rc == KV_E_READONLY;
            if (!ok)
                printf("    write %d failed with %s, want %s\n", b, kv_strerror(rc), kv_strerror(err));
            struct model m = {0};
            if (ok && !store_content(db, &m)) { /* reads keep working */
                printf("    call %llu: reads fail after the write error\n", (unsigned long long)nth);
                ok = false;
            }
            model_free(&m);
            struct triekv_stats s;
            triekv_stats(db, &s);
            if (s.read_only)
                st->readonly++;
            if (!s.read_only) { /* still writable: the failed batch was cut back; the client retries it */
                failed = -1;
                b--;
                continue;
            }
        } else if (rc != KV_E_READONLY) {
            printf("    call %llu: write %d after the failure: %s\n", (unsigned long long)nth, b,
                   kv_strerror(rc));
            ok = false;
        }
        if (ok && workload[b].checkpoint_after && failed < 0) {
            int crc = triekv_checkpoint(db);
            struct triekv_stats s;
            triekv_stats(db, &s);
            if (crc != KV_OK && s.read_only)
                failed = b + 1; /* a failed checkpoint loses nothing acknowledged */
        }
    }
    *fired = fault_io_fired(f);
    triekv_close(db);
    fault_io_destroy(f);
    /* reopen: everything acknowledged, maybe the failed batch, nothing partial */
    struct triekv_options ro;
    crash_options(&ro, TRIEKV_FSYNC_STRICT);
    db = NULL;
    struct model content = {0};
    bool reopened = triekv_open(dir, &ro, &db) == KV_OK && store_content(db, &content);
    if (!reopened || !matches_prefix(&content, acked, acked + (failed >= 0 ? 1 : 0))) {
        printf("    %s on call %llu: reopened content is not the acknowledged state (%d batches)\n",
               kv_strerror(err), (unsigned long long)nth, acked);
        ok = false;
    } else if (failed >= 0 && !matches_prefix(&content, acked, acked)) {
        st->recovered_failed_batch++;
    }
    st->cases++;
    triekv_close(db);
    model_free(&content);
    harness_rmdir(dir);
    return ok;
}

static void test_io_errors(void)
{
    make_workload(harness_rand());
    static const struct {
        unsigned kinds;
        int err;
        const char *what;
    } plans[] = {
        {FAULT_WRITE, EIO, "EIO on write"},
        {FAULT_WRITE, ENOSPC, "ENOSPC on write"},
        {FAULT_SYNC, EIO, "EIO on fdatasync"},
        {FAULT_SYNC, ENOSPC, "ENOSPC on fdatasync"},
        {FAULT_RENAME | FAULT_DIRSYNC | FAULT_CREATE, EIO, "EIO on create, rename and directory fsync"},
    };
    for (size_t p = 0; p < sizeof plans / sizeof plans[0]; p++) {
        struct ioerr_stats st = {0};
        int failures = 0;
        bool fired = true;
        for (uint64_t n = 1; fired && n < 2000 && failures < 3; n++) {
            if (!ioerr_case(plans[p].kinds, plans[p].err, n, &st, &fired))
                failures++;
        }
        CHECK(failures == 0);
        CHECK(st.cases > 10);
        printf("    %s: %d cases, %d left the store read-only\n", plans[p].what, st.cases, st.readonly);
    }
}

int main(void)
{
    if (getenv("TEST_DEBUG"))
        kv_log_set_level(KV_LOG_DEBUG);
    const char *one = getenv("TEST_CUT"); /* "N" or "N+": run just that case of the strict sweep */
    if (one) {
        nosync_io = *trie_io_posix();
        nosync_io.fdatasync = nosync;
        nosync_io.fsync_dir = nosync;
        nosync_io.pwritev = nosync_pwritev;
        nosync_io.submit = nosync_submit;
        uint64_t seed = harness_rand(); /* the strict sweep's seed for the same TEST_SEED */
        make_workload(seed);
        uint64_t n = strtoull(one, NULL, 10);
        bool after = strchr(one, '+') != NULL;
        struct case_result cr =
            run_case(TRIEKV_FSYNC_STRICT, n, after, seed * 1000003 + n * 2 + (uint64_t)after);
        printf("case %s: %s\n", one, cr.ok ? "ok" : "FAILED");
        return cr.ok ? 0 : 1;
    }
    nosync_io = *trie_io_posix();
    nosync_io.name = "posix-nosync";
    nosync_io.fdatasync = nosync;
    nosync_io.fsync_dir = nosync;
    nosync_io.pwritev = nosync_pwritev;
    nosync_io.submit = nosync_submit;
    printf("seed %llu\n", (unsigned long long)harness_seed());
    RUN(test_power_loss_strict);
    RUN(test_power_loss_default);
    RUN(test_io_errors);
    return harness_finish();
}
