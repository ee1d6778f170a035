/* trie/trie_commit.c - batches, the writer queue and group commit.
 *
 * Design notes
 *   Writers queue (q_mu). One thread at a time is the leader: it takes a group from the front of
 *   the queue, and with maint_mu held
 *     1. pins the page of every key in the group (loading them), so that applying can no longer
 *        fail once the group is in the commit log;
 *     2. checks each batch's preconditions in queue order, against the committed state plus the
 *        effects of the batches before it in the group (an overlay map), so concurrent
 *        compare-and-set writers are serialised exactly as if committed one by one;
 *     3. gives every batch that writes something the next sequence number, stamps its header and
 *        writes the whole group to the commit log in one call (plus one fdatasync when the fsync
 *        mode asks for it);
 *     4. applies the group to the pages under view_lock (so a scan sees a batch whole or not at
 *        all) and publishes db->seq: only now can readers see the writes, so no reader ever sees
 *        a write that a crash could take back (in strict mode).
 *   Then it completes the group and hands leadership on: to the next queued synchronous writer,
 *   or to the committer thread when the next writer is asynchronous. A synchronous writer that
 *   finds no leader leads itself, so a single thread writing in a loop never pays a thread
 *   hand-off.
 *
 * Invariants
 *   1. Sequence numbers are assigned in commit-log order and are contiguous.
 *   2. A batch is visible to readers only after its commit-log write (and sync, when the mode
 *      requires one) succeeded; a batch whose write failed is never applied.
 *   3. Every page a group touches is pinned before its commit-log write.
 *   4. Within a batch, operations apply in order; a later operation on the same key wins. */
#include "trie/trie_int.h"
#include "common/kv_assert.h"
#include "common/kv_crc.h"
#include "common/kv_log.h"
#include "common/kv_time.h"

#include <stdlib.h>
#include <string.h>

#define GROUP_BATCHES_MAX 1024        /* batches per group */
#define GROUP_BYTES_MAX   (32u << 20) /* payload bytes per group (a larger batch goes alone) */
#define DIRTY_WAIT_MS     50          /* backpressure poll while the checkpointer catches up */

/* ---- batches -------------------------------------------------------------------------------- */

struct triekv_batch *triekv_batch_create(void)
{
    return kv_calloc(1, sizeof(struct triekv_batch));
}

void triekv_batch_destroy(struct triekv_batch *b)
{
    if (b == NULL)
        return;
    free(b->ops);
    kv_buf_free(&b->payload);
    free(b);
}

size_t triekv_batch_count(const struct triekv_batch *b)
{
    return b->nops;
}

static int batch_add(struct triekv_batch *b, uint8_t type, struct kv_slice key, struct kv_slice val,
                     enum triekv_cond cond, uint64_t version)
{
    if (key.len == 0)
        return KV_E_KEY_EMPTY;
    if (key.len > TRIEKV_KEY_LEN_MAX)
        return KV_E_KEY_TOO_LONG;
    if (val.len > TRIEKV_VALUE_LEN_MAX)
        return KV_E_VALUE_TOO_LARGE;
    if ((unsigned)cond > TRIEKV_IF_VERSION)
        return KV_E_INVALID;
    uint64_t add = TRIE_OP_HDR + (uint64_t)key.len + val.len;
    if (b->nops >= TRIEKV_BATCH_OPS_MAX || b->payload.len + add > TRIEKV_BATCH_BYTES_MAX - TRIE_WAL_HDR)
        return KV_E_BATCH_TOO_LARGE;
    if (b->nops == b->cap_ops) {
        b->cap_ops = b->cap_ops ? b->cap_ops * 2 : 4;
        b->ops = kv_realloc(b->ops, (size_t)b->cap_ops * sizeof *b->ops);
    }
    struct trie_op *op = &b->ops[b->nops++];
    op->type = type;
    op->cond = (uint8_t)cond;
    op->version = version;
    op->off = (uint32_t)b->payload.len;
    op->klen = (uint32_t)key.len;
    op->vlen = (uint32_t)val.len;
    uint8_t hdr[TRIE_OP_HDR];
    hdr[0] = type;
    hdr[1] = 0;
    kv_put_u16(hdr + 2, (uint16_t)key.len);
    kv_put_u32(hdr + 4, (uint32_t)val.len);
    kv_buf_reserve(&b->payload, (size_t)add);
    kv_buf_append(&b->payload, hdr, sizeof hdr);
    kv_buf_append(&b->payload, key.ptr, key.len);
    kv_buf_append(&b->payload, val.ptr, val.len);
    return KV_OK;
}

int triekv_batch_put(struct triekv_batch *b, struct kv_slice key, struct kv_slice value,
                     enum triekv_cond cond, uint64_t version)
{
    return batch_add(b, TRIE_REC_PUT, key, value, cond, version);
}

int triekv_batch_del(struct triekv_batch *b, struct kv_slice key, enum triekv_cond cond, uint64_t version)
{
    return batch_add(b, TRIE_REC_DEL, key, kv_slice_make(NULL, 0), cond, version);
}

static struct kv_slice op_key(const struct triekv_batch *b, const struct trie_op *op)
{
    return kv_slice_make(b->payload.ptr + op->off + TRIE_OP_HDR, op->klen);
}

/* ---- the overlay: pending effects of earlier batches in a group ------------------------------- */

struct overlay_ent {
    struct kv_slice key; /* borrowed from a batch payload; len 0 = empty slot */
    uint32_t hash;
    bool present;
    uint64_t version;
};

struct overlay_undo {
    uint32_t slot;
    struct overlay_ent prev;
};

struct overlay {
    struct overlay_ent *ents;
    uint32_t mask;
    struct overlay_undo *undo;
    uint32_t nundo, cap_undo;
};

static void overlay_init(struct overlay *o, uint32_t keys)
{
    uint32_t n = 16;
    while (n < keys * 2)
        n *= 2;
    o->ents = kv_calloc(n, sizeof *o->ents);
    o->mask = n - 1;
    o->undo = NULL;
    o->nundo = o->cap_undo = 0;
}

static void overlay_free(struct overlay *o)
{
    free(o->ents);
    free(o->undo);
}

static uint32_t overlay_slot(const struct overlay *o, struct kv_slice key, uint32_t h)
{
    for (uint32_t i = h & o->mask;; i = (i + 1) & o->mask) {
        const struct overlay_ent *e = &o->ents[i];
        if (e->key.len == 0 || (e->hash == h && kv_slice_eq(e->key, key)))
            return i;
    }
}

static void overlay_set(struct overlay *o, struct kv_slice key, uint32_t h, bool present, uint64_t version)
{
    uint32_t i = overlay_slot(o, key, h);
    if (o->nundo == o->cap_undo) {
        o->cap_undo = o->cap_undo ? o->cap_undo * 2 : 16;
        o->undo = kv_realloc(o->undo, o->cap_undo * sizeof *o->undo);
    }
    o->undo[o->nundo].slot = i;
    o->undo[o->nundo].prev = o->ents[i];
    o->nundo++;
    o->ents[i] = (struct overlay_ent){.key = key, .hash = h, .present = present, .version = version};
}

static void overlay_rollback(struct overlay *o, uint32_t mark)
{
    while (o->nundo > mark) {
        o->nundo--;
        o->ents[o->undo[o->nundo].slot] = o->undo[o->nundo].prev;
    }
}

/* ---- one group ------------------------------------------------------------------------------- */

struct group {
    struct trie_writer **w;
    uint32_t n;
    struct trie_node **pins; /* one per pinned page */
    uint32_t npins, cap_pins;
    bool needs_state; /* some batch has a precondition or a delete */
    uint32_t total_ops;
};

static void group_pin(struct group *g, struct trie_node *n)
{
    if (g->npins == g->cap_pins) {
        g->cap_pins = g->cap_pins ? g->cap_pins * 2 : 64;
        g->pins = kv_realloc(g->pins, g->cap_pins * sizeof *g->pins);
    }
    g->pins[g->npins++] = n;
}

/* Current state of key: overlay first, then the pinned page. */
static void key_state(struct overlay *o, struct trie_page *p, struct kv_slice key, uint32_t h, bool *present,
                      uint64_t *version)
{
    if (o) {
        const struct overlay_ent *e = &o->ents[overlay_slot(o, key, h)];
        if (e->key.len) {
            *present = e->present;
            *version = e->version;
            return;
        }
    }
    pthread_rwlock_rdlock(&p->lock);
    const struct triekv_value *v = trie_page_find(p, key);
    *present = v != NULL;
    *version = v ? v->seq : 0;
    pthread_rwlock_unlock(&p->lock);
}

static bool cond_holds(const struct trie_op *op, bool present, uint64_t version)
{
    switch ((enum triekv_cond)op->cond) {
    case TRIEKV_IF_ANY:
        return true;
    case TRIEKV_IF_ABSENT:
        return !present;
    case TRIEKV_IF_PRESENT:
        return present;
    case TRIEKV_IF_VERSION:
        return present && version == op->version;
    }
    return false;
}

/* Pins pages and checks preconditions of writer w, whose seq would be seq. */
static void evaluate(struct triekv *db, struct group *g, struct overlay *o, struct trie_writer *w,
                     uint64_t seq)
{
    struct triekv_batch *b = w->batch;
    uint32_t mark = o ? o->nundo : 0;
    w->effective = false;
    for (uint32_t i = 0; i < b->nops; i++) {
        const struct trie_op *op = &b->ops[i];
        struct kv_slice key = op_key(b, op);
        struct trie_node *n = trie_route(db, key);
        struct trie_page *p;
        int rc = trie_page_get(db, n, &p);
        if (rc != KV_OK) {
            w->rc = rc;
            break;
        }
        group_pin(g, n);
        if (!g->needs_state) {
            w->effective = true; /* unconditional puts only */
            continue;
        }
        uint32_t h = kv_crc32c(0, key.ptr, key.len);
        bool present;
        uint64_t version;
        key_state(o, p, key, h, &present, &version);
        if (!cond_holds(op, present, version)) {
            w->rc = KV_E_PRECONDITION;
            w->res.failed_op = (int32_t)i;
            break;
        }
        if (op->type == TRIE_REC_PUT) {
            w->effective = true;
            overlay_set(o, key, h, true, seq);
        } else if (present) {
            w->effective = true;
            w->res.deleted++;
            overlay_set(o, key, h, false, 0);
        }
    }
    if (w->rc != KV_OK) {
        if (o)
            overlay_rollback(o, mark);
        w->effective = false;
        w->res.deleted = 0;
    } else if (w->given_seq != 0) {
        /* A replicated batch is the main's record: it takes its number even when it changes
         * nothing here (its deletes found keys a snapshot already had without them). */
        w->effective = true;
    }
}

static bool sync_needed(struct triekv *db, uint32_t batches)
{
    switch (db->opt.fsync) {
    case TRIEKV_FSYNC_STRICT:
        return true;
    case TRIEKV_FSYNC_BATCH:
        return db->wal.unsynced_batches + batches >= db->opt.fsync_batch_writes;
    default:
        return false;
    }
}

/* Writes the effective batches of g to the commit log and applies them. */
static int commit_effective(struct triekv *db, struct group *g, uint32_t neff)
{
    struct iovec *iov = kv_malloc(2 * neff * sizeof *iov);
    int iovcnt = 0;
    uint64_t first = db->next_seq;
    for (uint32_t i = 0; i < g->n; i++) {
        struct trie_writer *w = g->w[i];
        if (!w->effective)
            continue;
        struct trie_wal_hdr h = {.seq = w->res.seq,
                                 .payload_len = (uint32_t)w->batch->payload.len,
                                 .payload_crc = w->batch->payload_crc,
                                 .op_count = w->batch->nops,
                                 .epoch = w->given_seq != 0 ? w->given_epoch : db->epoch};
        trie_wal_hdr_encode(w->wal_hdr, &h);
        iov[iovcnt++] = (struct iovec){w->wal_hdr, TRIE_WAL_HDR};
        iov[iovcnt++] = (struct iovec){w->batch->payload.ptr, w->batch->payload.len};
    }
    uint64_t last = first + neff - 1;
    int rc = trie_wal_append(db, iov, iovcnt, first, last, sync_needed(db, neff));
    free(iov);
    if (rc != KV_OK)
        return rc;
    db->next_seq = last + 1;
    uint32_t prev_epoch = 0;
    for (uint32_t i = 0; i < g->n; i++) {
        struct trie_writer *w = g->w[i];
        uint32_t e = w->given_seq != 0 ? w->given_epoch : db->epoch;
        if (w->effective && e != prev_epoch) { /* one look per group, unless replicas mix runs */
            trie_epoch_note(db, w->res.seq, e);
            prev_epoch = e;
        }
    }
    pthread_rwlock_wrlock(&db->view_lock);
    for (uint32_t i = 0; i < g->n; i++) {
        struct trie_writer *w = g->w[i];
        if (!w->effective)
            continue;
        int arc = trie_apply_payload(db, w->res.seq, w->batch->payload.ptr, (uint32_t)w->batch->payload.len,
                                     w->batch->nops, w->given_seq != 0);
        KV_ASSERT(arc == KV_OK); /* pages are pinned and the payload was checked */
    }
    trie_publish_seq(db, last);
    pthread_rwlock_unlock(&db->view_lock);
    atomic_fetch_add(&db->st_batches, neff);
    atomic_fetch_add(&db->st_groups, 1);
    return KV_OK;
}

static void process_group(struct triekv *db, struct group *g, bool maint_held)
{
    if (!maint_held)
        pthread_mutex_lock(&db->maint_mu);
    int ro = atomic_load(&db->read_only);
    struct overlay ov, *o = NULL;
    if (g->needs_state && ro == 0) {
        overlay_init(&ov, g->total_ops);
        o = &ov;
    }
    uint32_t neff = 0;
    for (uint32_t i = 0; i < g->n; i++) {
        struct trie_writer *w = g->w[i];
        w->res.failed_op = -1;
        if (w->rc != KV_OK)
            continue; /* failed its own checks before queueing */
        if (ro != 0) {
            w->rc = KV_E_READONLY;
            continue;
        }
        uint64_t seq = db->next_seq + neff;
        if (w->given_seq != 0 && w->given_seq != seq) {
            w->rc = KV_E_INVALID; /* a replicated batch out of sequence */
            continue;
        }
        evaluate(db, g, o, w, seq);
        if (w->effective) {
            w->res.seq = seq;
            neff++;
        }
    }
    if (neff > 0) {
        int rc = commit_effective(db, g, neff);
        for (uint32_t i = 0; rc != KV_OK && i < g->n; i++) {
            if (g->w[i]->effective)
                g->w[i]->rc = rc;
        }
    }
    if (o)
        overlay_free(o);
    uint64_t seq = atomic_load(&db->seq);
    for (uint32_t i = 0; i < g->n; i++) {
        struct trie_writer *w = g->w[i];
        if (w->rc == KV_OK && !w->effective)
            w->res.seq = seq;
        if (w->rc == KV_E_PRECONDITION)
            atomic_fetch_add(&db->st_prec_fail, 1);
    }
    for (uint32_t i = 0; i < g->npins; i++)
        trie_page_put(db, g->pins[i]);
    pthread_mutex_unlock(&db->maint_mu);
}

/* ---- the queue and leadership ---------------------------------------------------------------- */

/* Whether pages pinned by unflushed writes fill the whole cache budget (the floor of a few pages
 * keeps tiny budgets writable). */
static bool over_pinned(struct triekv *db)
{
    uint64_t floor = 8 * db->opt.max_page_size;
    uint64_t hard = db->opt.cache_bytes > floor ? db->opt.cache_bytes : floor;
    return cache_pinned_bytes(db->cache) > hard && atomic_load(&db->read_only) == 0;
}

/* Waits (outside every lock) while over_pinned, so a writer faster than the disk cannot grow
 * memory without bound. Bounded: after DIRTY_WAIT_MS * 1000 the group goes on anyway. */
static void throttle(struct triekv *db)
{
    if (db->opt.manual_checkpoints)
        return; /* the embedder runs checkpoints: waiting for one here could wait forever */
    for (int i = 0; i < 1000 && over_pinned(db); i++) {
        trie_ckpt_poke(db, true);
        struct timespec ts = {0, DIRTY_WAIT_MS * 1000000L};
        nanosleep(&ts, NULL);
    }
}

/* Leads one group. Called with leader_active set by the caller and q_mu not held; with
 * maint_held, the caller holds maint_mu already (and has checked the throttle). */
static void lead(struct triekv *db, bool maint_held)
{
    if (!maint_held)
        throttle(db);
    struct trie_writer *members[GROUP_BATCHES_MAX];
    struct group g = {.w = members};
    uint64_t bytes = 0;
    pthread_mutex_lock(&db->q_mu);
    while (db->q_head && g.n < GROUP_BATCHES_MAX) {
        struct trie_writer *w = db->q_head;
        uint64_t len = w->batch->payload.len;
        if (g.n > 0 && bytes + len > GROUP_BYTES_MAX)
            break;
        bytes += len;
        db->q_head = w->next;
        if (db->q_head == NULL)
            db->q_tail = NULL;
        members[g.n++] = w;
    }
    pthread_mutex_unlock(&db->q_mu);
    for (uint32_t i = 0; i < g.n; i++) {
        const struct triekv_batch *b = members[i]->batch;
        g.total_ops += b->nops;
        for (uint32_t k = 0; k < b->nops && !g.needs_state; k++)
            g.needs_state = b->ops[k].cond != TRIEKV_IF_ANY || b->ops[k].type == TRIE_REC_DEL;
    }
    process_group(db, &g, maint_held);
    free(g.pins);

    /* A synchronous writer's struct lives on its own stack and may be gone the moment it sees
     * finished: sort out the asynchronous ones first and touch no synchronous one afterwards. */
    struct trie_writer *async[GROUP_BATCHES_MAX];
    uint32_t nasync = 0;
    for (uint32_t i = 0; i < g.n; i++) {
        if (members[i]->done != NULL)
            async[nasync++] = members[i];
    }
    pthread_mutex_lock(&db->q_mu);
    for (uint32_t i = 0; i < g.n; i++) {
        bool waiter = members[i]->done == NULL;
        members[i]->finished = true;
        if (waiter)
            pthread_cond_signal(&members[i]->cv);
    }
    db->leader_active = false;
    if (db->q_head != NULL && db->q_head->done != NULL)
        pthread_cond_signal(&db->committer_cv); /* an async writer waits: the committer leads it */
    else if (db->q_head != NULL)
        pthread_cond_signal(&db->q_head->cv); /* a synchronous writer waits: it leads itself */
    else if (db->stopping)
        pthread_cond_signal(&db->committer_cv); /* let the committer see the empty queue and exit */
    pthread_mutex_unlock(&db->q_mu);

    for (uint32_t i = 0; i < nasync; i++) { /* async completions, outside every lock */
        struct trie_writer *w = async[i];
        w->done(w->arg, w->rc, &w->res);
        if (w->owns_batch)
            triekv_batch_destroy(w->batch);
        free(w);
    }
    trie_ckpt_poke(db, false);
}

/* Checks a batch against the configured limits and checksums its payload (outside every lock). */
static int prepare(struct triekv *db, struct trie_writer *w)
{
    struct triekv_batch *b = w->batch;
    for (uint32_t i = 0; i < b->nops; i++) {
        if (b->ops[i].klen > db->opt.max_key_size)
            return KV_E_KEY_TOO_LONG;
        if (b->ops[i].vlen > db->opt.max_value_size)
            return KV_E_VALUE_TOO_LARGE;
    }
    b->payload_crc = kv_crc32c(0, b->payload.ptr, b->payload.len);
    return KV_OK;
}

/* Queues w. Returns false when the store is closing (w is not queued). */
static bool enqueue(struct triekv *db, struct trie_writer *w)
{
    if (db->stopping)
        return false;
    w->next = NULL;
    if (db->q_tail)
        db->q_tail->next = w;
    else
        db->q_head = w;
    db->q_tail = w;
    return true;
}

int triekv_write(struct triekv *db, struct triekv_batch *b, struct triekv_write_result *res)
{
    struct trie_writer w = {.batch = b};
    w.res.failed_op = -1;
    w.rc = prepare(db, &w);
    if (w.rc == KV_OK && b->nops == 0) {
        w.res.seq = atomic_load(&db->seq);
    } else if (w.rc == KV_OK) {
        kv_cond_init(&w.cv);
        pthread_mutex_lock(&db->q_mu);
        if (!enqueue(db, &w)) {
            w.rc = KV_E_CLOSED;
        } else {
            while (!w.finished) {
                if (!db->leader_active && db->q_head == &w) {
                    db->leader_active = true;
                    pthread_mutex_unlock(&db->q_mu);
                    lead(db, false);
                    pthread_mutex_lock(&db->q_mu);
                    continue;
                }
                pthread_cond_wait(&w.cv, &db->q_mu);
            }
        }
        pthread_mutex_unlock(&db->q_mu);
        pthread_cond_destroy(&w.cv);
    }
    if (res)
        *res = w.res;
    return w.rc;
}

int triekv_write_nowait(struct triekv *db, struct triekv_batch *b, struct triekv_write_result *res)
{
    if (db->opt.fsync == TRIEKV_FSYNC_STRICT || over_pinned(db))
        return KV_E_BUSY;
    struct trie_writer w = {.batch = b};
    w.res.failed_op = -1;
    w.rc = prepare(db, &w);
    if (w.rc != KV_OK || b->nops == 0) {
        if (w.rc == KV_OK)
            w.res.seq = atomic_load(&db->seq);
        if (res)
            *res = w.res;
        return w.rc;
    }
    pthread_mutex_lock(&db->q_mu);
    /* Only an idle pipeline: a queued writer would be overtaken, a leader waited for. */
    if (db->leader_active || db->q_head != NULL || db->stopping ||
        pthread_mutex_trylock(&db->maint_mu) != 0) {
        pthread_mutex_unlock(&db->q_mu);
        return KV_E_BUSY;
    }
    if (db->opt.fsync == TRIEKV_FSYNC_BATCH && sync_needed(db, 1)) { /* this one would sync */
        pthread_mutex_unlock(&db->maint_mu);
        pthread_mutex_unlock(&db->q_mu);
        return KV_E_BUSY;
    }
    db->leader_active = true;
    kv_cond_init(&w.cv);
    enqueue(db, &w);
    pthread_mutex_unlock(&db->q_mu);
    lead(db, true); /* our batch is at the head, so it is in this group: finished when lead returns */
    KV_ASSERT(w.finished);
    pthread_cond_destroy(&w.cv);
    if (res)
        *res = w.res;
    return w.rc;
}

void triekv_write_async(struct triekv *db, struct triekv_batch *b, triekv_done_fn done, void *arg)
{
    struct trie_writer *w = kv_calloc(1, sizeof *w);
    w->batch = b;
    w->owns_batch = true;
    w->done = done;
    w->arg = arg;
    w->res.failed_op = -1;
    w->rc = prepare(db, w);
    /* Even a batch that fails its checks or writes nothing goes through the queue, so done()
     * always runs on an engine thread and never inside this call. */
    pthread_mutex_lock(&db->q_mu);
    if (!enqueue(db, w)) {
        pthread_mutex_unlock(&db->q_mu);
        w->rc = KV_E_CLOSED;
        done(arg, w->rc, &w->res); /* the store is closing: there is no engine thread left */
        triekv_batch_destroy(b);
        free(w);
        return;
    }
    if (!db->leader_active)
        pthread_cond_signal(&db->committer_cv);
    pthread_mutex_unlock(&db->q_mu);
}

int triekv_put(struct triekv *db, struct kv_slice key, struct kv_slice value, uint64_t *seq)
{
    struct triekv_batch b = {0};
    int rc = triekv_batch_put(&b, key, value, TRIEKV_IF_ANY, 0);
    struct triekv_write_result res;
    if (rc == KV_OK)
        rc = triekv_write(db, &b, &res);
    if (rc == KV_OK && seq)
        *seq = res.seq;
    free(b.ops);
    kv_buf_free(&b.payload);
    return rc;
}

int triekv_delete(struct triekv *db, struct kv_slice key, uint64_t *seq)
{
    struct triekv_batch b = {0};
    int rc = triekv_batch_del(&b, key, TRIEKV_IF_PRESENT, 0);
    struct triekv_write_result res;
    if (rc == KV_OK)
        rc = triekv_write(db, &b, &res);
    if (rc == KV_E_PRECONDITION)
        rc = KV_E_NOT_FOUND;
    if (rc == KV_OK && seq)
        *seq = res.seq;
    free(b.ops);
    kv_buf_free(&b.payload);
    return rc;
}

/* ---- the committer thread -------------------------------------------------------------------- */

static void *committer_main(void *arg)
{
    struct triekv *db = arg;
    pthread_mutex_lock(&db->q_mu);
    for (;;) {
        if (db->q_head && !db->leader_active) {
            db->leader_active = true;
            pthread_mutex_unlock(&db->q_mu);
            lead(db, false);
            pthread_mutex_lock(&db->q_mu);
            continue;
        }
        if (db->stopping && db->q_head == NULL && !db->leader_active)
            break;
        pthread_cond_wait(&db->committer_cv, &db->q_mu);
    }
    pthread_mutex_unlock(&db->q_mu);
    return NULL;
}

int trie_commit_start(struct triekv *db)
{
    return pthread_create(&db->committer, NULL, committer_main, db);
}

void trie_commit_stop(struct triekv *db)
{
    pthread_mutex_lock(&db->q_mu);
    db->stopping = true;
    pthread_cond_signal(&db->committer_cv);
    pthread_mutex_unlock(&db->q_mu);
    pthread_join(db->committer, NULL);
}

/* ---- applying -------------------------------------------------------------------------------- */

static void apply_op(struct triekv *db, uint64_t seq, const struct trie_op_view *op, struct trie_page *p,
                     struct trie_node *n, bool guard)
{
    struct kv_slice key = kv_slice_make(op->key, op->klen);
    struct triekv_value *cur = trie_page_find(p, key), *old = NULL;
    /* Replay is idempotent: an operation older than the key's version is already superseded in the
     * partition log (or, on a replica, by a snapshot item). One of the same version is applied
     * again: a batch may touch a key twice, and re-running its operations in order ends in the
     * same state. */
    if (guard && cur && cur->seq > seq)
        return;
    /* Per key, a dirty log holds versions in increasing order, so a flushed log replays to the
     * newest. Across keys it need not: a snapshot arrives in key order, each key with its version. */
    KV_ASSERT(cur == NULL || cur->seq <= seq);
    int64_t delta = 0;
    if (op->type == TRIE_REC_PUT) {
        struct triekv_value *v = trie_val_create(TRIE_REC_PUT, seq, op->key, op->klen, op->val, op->vlen);
        delta += trie_page_set(p, v, &old);
        delta += trie_page_dirty_push(p, v);
        n->keys += old ? 0 : 1;
        n->value_bytes += op->vlen;
        atomic_fetch_add_explicit(&db->st_keys, old ? 0 : 1, memory_order_relaxed);
        atomic_fetch_add_explicit(&db->st_value_bytes, op->vlen, memory_order_relaxed);
        atomic_fetch_add_explicit(&db->st_puts, 1, memory_order_relaxed);
    } else {
        if (cur == NULL)
            return; /* deleting nothing writes nothing */
        delta += trie_page_remove(p, key, &old);
        struct triekv_value *t = trie_val_create(TRIE_REC_DEL, seq, op->key, op->klen, NULL, 0);
        delta += trie_page_dirty_push(p, t);
        triekv_value_release(t);
        n->keys--;
        atomic_fetch_sub_explicit(&db->st_keys, 1, memory_order_relaxed);
        atomic_fetch_add_explicit(&db->st_deletes, 1, memory_order_relaxed);
    }
    if (old) {
        n->value_bytes -= old->vlen;
        atomic_fetch_sub_explicit(&db->st_value_bytes, old->vlen, memory_order_relaxed);
        triekv_value_release(old);
    }
    atomic_fetch_add_explicit(&db->dirty_bytes, trie_rec_size(op->klen, op->vlen), memory_order_relaxed);
    trie_page_mark_dirty(db, p);
    trie_page_charge(db, p, delta);
}

void trie_publish_seq(struct triekv *db, uint64_t seq)
{
    atomic_store_explicit(&db->seq, seq, memory_order_release);
    if (atomic_load_explicit(&db->seq_waiters, memory_order_acquire) > 0) {
        pthread_mutex_lock(&db->seq_mu);
        pthread_cond_broadcast(&db->seq_cv);
        pthread_mutex_unlock(&db->seq_mu);
    }
}

int trie_commit_given(struct triekv *db, struct trie_writer **w, uint32_t n)
{
    pthread_mutex_lock(&db->q_mu);
    if (db->stopping) {
        pthread_mutex_unlock(&db->q_mu);
        return KV_E_CLOSED;
    }
    for (uint32_t i = 0; i < n; i++) {
        kv_cond_init(&w[i]->cv);
        w[i]->res.failed_op = -1;
        w[i]->rc = prepare(db, w[i]); /* limits, and the payload checksum its WAL header carries */
        enqueue(db, w[i]);
    }
    /* lead (or wait for) the groups until every one of ours is done */
    for (uint32_t i = 0; i < n; i++) {
        while (!w[i]->finished) {
            if (!db->leader_active && db->q_head != NULL && db->q_head->done == NULL) {
                db->leader_active = true;
                pthread_mutex_unlock(&db->q_mu);
                lead(db, false);
                pthread_mutex_lock(&db->q_mu);
                continue;
            }
            pthread_cond_wait(&w[i]->cv, &db->q_mu);
        }
    }
    pthread_mutex_unlock(&db->q_mu);
    int rc = KV_OK;
    for (uint32_t i = 0; i < n; i++) {
        pthread_cond_destroy(&w[i]->cv);
        if (rc == KV_OK)
            rc = w[i]->rc;
    }
    return rc;
}

int trie_apply_payload(struct triekv *db, uint64_t seq, const uint8_t *payload, uint32_t len,
                       uint32_t op_count, bool guard)
{
    uint32_t off = 0;
    for (uint32_t i = 0; i < op_count; i++) {
        struct trie_op_view op;
        if (trie_op_next(payload, len, &off, &op) != KV_OK)
            return KV_E_CORRUPT;
        struct kv_slice key = kv_slice_make(op.key, op.klen);
        struct trie_node *n = trie_route(db, key);
        struct trie_page *p;
        int rc = trie_page_get(db, n, &p);
        if (rc != KV_OK)
            return rc;
        pthread_rwlock_wrlock(&p->lock);
        apply_op(db, seq, &op, p, n, guard || db->recovering);
        bool oversize = p->file_bytes + p->dirty_bytes > db->opt.max_page_size;
        pthread_rwlock_unlock(&p->lock);
        trie_page_put(db, n);
        if (oversize)
            trie_ckpt_poke(db, true);
    }
    return off == len ? KV_OK : KV_E_CORRUPT;
}
