/* replication/repl_send.c - the main's senders: one thread per replica.
 *
 * Design notes
 *   A sender runs this state machine, forever until stopped:
 *     CONNECTING  GET /replication/state: the replica's applied seq (A) and whether it is in the
 *                 middle of a resync. 403: REFUSED (the replica is of another cluster or wants
 *                 another token): logged, retried slowly. Other failures: BACKOFF.
 *     decide      the replica needs a SNAPSHOT when it is resyncing, when A is past the main's seq
 *                 or its batch A has another epoch than the main's batch A (it holds writes the
 *                 main lost: its data must go; see triekv_epoch_at), or when the commit log no
 *                 longer holds A + 1. Else STREAMING from A + 1.
 *     SNAPSHOT    S = the main's seq; the log is held from S + 1 on; begin, chunks of items with
 *                 their versions (a scan in key order, paged by a cursor, so the main's writes go
 *                 on meanwhile), end(S); then STREAMING from S + 1. The snapshot may contain
 *                 writes newer than S; the replica's version guard makes replaying them harmless.
 *     STREAMING   read committed records from the log (up to batch_bytes; one record however
 *                 large), POST them, take the replica's applied seq from the answer. With nothing
 *                 new, wait for the next commit (up to 200 ms) and send an empty heartbeat now and
 *                 then so the replica knows the main's seq. A 409 (gap) goes back to CONNECTING
 *                 at once; a second gap with no batch accepted since goes through BACKOFF.
 *     BACKOFF     any failure: wait backoff (doubling from backoff_min_ms to backoff_max_ms),
 *                 then CONNECTING. Nothing is skipped: streaming always resumes from what the
 *                 replica says it has.
 *   Invariants
 *     1. Records go out in seq order and the sender's acked seq only moves forward to what the
 *        replica reported.
 *     2. The log is held for each replica from the first batch it still needs (acked + 1, or
 *        S + 1 during a snapshot; from the start until the first contact), within the engine's
 *        retention cap. A replica left behind the cap is resynced, never stalled on.
 *     3. A sender never blocks the main's writes: it only reads the log and the store. */
#include "replication/repl.h"
#include "common/kv_assert.h"
#include "common/kv_crc.h"
#include "common/kv_log.h"
#include "common/kv_time.h"

#include <curl/curl.h>
#include <inttypes.h>
#include <jansson.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define REPL_COMPONENT     "repl"
#define RESPONSE_MAX       (64u << 10) /* replication answers are small JSON */
#define HEARTBEAT_MS       1000        /* an idle stream still tells the replica the main's seq */
#define SNAPSHOT_ITEMS_MAX 10000       /* items per snapshot chunk */

struct sender {
    struct repl_sender *owner;
    int idx;
    char url[256];
    pthread_t tid;
    CURL *curl;
    struct kv_buf resp;
    pthread_mutex_t mu; /* guards the fields below for stats */
    const char *state;
    bool connected;
    uint64_t retries, snapshots, batches, bytes;
    uint64_t lag_since_ms; /* when the replica last went from caught up to behind */
    uint64_t pending_bytes;
    char last_error[160];
    bool refused_logged;
    _Atomic uint64_t acked;
    _Atomic uint64_t hold; /* the first batch this replica still needs */
    uint64_t last_post_ms;
};

struct repl_sender {
    struct triekv *db;
    struct repl_config cfg;
    char *cluster_id, *token, *main_url;
    struct sender *s;
    size_t n;
    _Atomic bool stop;
    void (*on_ack)(void *arg);
    void *on_ack_arg;
};

/* ---- HTTP ------------------------------------------------------------------------------------ */

static size_t on_body(char *p, size_t size, size_t n, void *arg)
{
    struct sender *x = arg;
    size_t len = size * n;
    if (x->resp.len + len > RESPONSE_MAX)
        return 0; /* refuse an answer that large: the transfer fails */
    kv_buf_append(&x->resp, p, len);
    return len;
}

static int on_progress(void *arg, curl_off_t a, curl_off_t b, curl_off_t c, curl_off_t d)
{
    (void)a, (void)b, (void)c, (void)d;
    struct sender *x = arg;
    return atomic_load(&x->owner->stop) ? 1 : 0; /* stop cuts a request in flight */
}

static void set_error(struct sender *x, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void set_error(struct sender *x, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    pthread_mutex_lock(&x->mu);
    vsnprintf(x->last_error, sizeof x->last_error, fmt, ap);
    x->connected = false;
    pthread_mutex_unlock(&x->mu);
    va_end(ap);
}

static void set_state(struct sender *x, const char *state)
{
    pthread_mutex_lock(&x->mu);
    x->state = state;
    pthread_mutex_unlock(&x->mu);
}

/* One request. Returns 0 with *status set, or -1 after recording the transport error. */
static int request(struct sender *x, const char *method, const char *path, const uint8_t *body, size_t len,
                   long *status)
{
    struct repl_sender *o = x->owner;
    char url[512], h[4][320];
    snprintf(url, sizeof url, "%s%s", x->url, path);
    snprintf(h[0], sizeof h[0], "X-Triekv-Cluster: %s", o->cluster_id);
    snprintf(h[1], sizeof h[1], "X-Triekv-Token: %s", o->token);
    snprintf(h[2], sizeof h[2], "X-Triekv-Main: %s", o->main_url);
    struct triekv_stats st;
    triekv_stats(o->db, &st);
    snprintf(h[3], sizeof h[3], "X-Triekv-Main-Seq: %" PRIu64, st.seq);
    struct curl_slist *hdr = NULL;
    for (int i = 0; i < 4; i++) {
        if (i == 1 && o->token[0] == 0)
            continue;
        hdr = curl_slist_append(hdr, h[i]);
    }
    hdr = curl_slist_append(hdr, "Content-Type: application/octet-stream");
    hdr = curl_slist_append(hdr, "Expect:"); /* no 100-continue round trip for large bodies */
    CURL *c = x->curl;
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdr);
    if (strcmp(method, "POST") == 0) {
        curl_easy_setopt(c, CURLOPT_POST, 1L);
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body ? (const char *)body : "");
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
    } else {
        curl_easy_setopt(c, CURLOPT_HTTPGET, 1L);
    }
    x->resp.len = 0;
    CURLcode rc = curl_easy_perform(c);
    curl_slist_free_all(hdr);
    x->last_post_ms = kv_now_ms();
    if (rc != CURLE_OK) {
        set_error(x, "%s %s: %s", method, path, curl_easy_strerror(rc));
        return -1;
    }
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, status);
    return 0;
}

/* What a replica says about itself. */
struct replica_state {
    uint64_t applied; /* its last batch */
    bool epoch_known; /* whether it could name that batch's epoch */
    uint32_t epoch;
    bool resyncing; /* a snapshot load was cut short */
};

/* {"applied_seq": N, ...} from the last answer. */
static int state_from(struct sender *x, struct replica_state *rs)
{
    json_error_t je;
    json_t *j = json_loadb((const char *)x->resp.ptr, x->resp.len, 0, &je);
    json_t *a = j ? json_object_get(j, "applied_seq") : NULL;
    json_t *e = j ? json_object_get(j, "applied_epoch") : NULL;
    int rc = -1;
    if (a && json_is_integer(a) && json_integer_value(a) >= 0) {
        rs->applied = (uint64_t)json_integer_value(a);
        rs->resyncing = json_is_true(json_object_get(j, "resyncing"));
        rs->epoch_known = e && json_is_integer(e) && json_integer_value(e) >= 0 &&
                          json_integer_value(e) <= (json_int_t)UINT32_MAX;
        rs->epoch = rs->epoch_known ? (uint32_t)json_integer_value(e) : 0;
        rc = 0;
    } else {
        set_error(x, "the replica's answer has no applied_seq");
    }
    json_decref(j);
    return rc;
}

/* A request that must answer 200 (with the replica's state when rs is set). -2: refused (403),
 * -3: gap (409). */
static int call(struct sender *x, const char *method, const char *path, const uint8_t *body, size_t len,
                struct replica_state *rs)
{
    long status = 0;
    if (request(x, method, path, body, len, &status) != 0)
        return -1;
    if (status == 200)
        return rs ? state_from(x, rs) : 0;
    int n = (int)(x->resp.len > 120 ? 120 : x->resp.len);
    set_error(x, "%s %s: HTTP %ld %.*s", method, path, status, n, (const char *)x->resp.ptr);
    return status == 403 ? -2 : status == 409 ? -3 : -1;
}

/* ---- acknowledgements and retention -------------------------------------------------------------- */

static void acked(struct sender *x, uint64_t seq)
{
    struct repl_sender *o = x->owner;
    uint64_t prev = atomic_load(&x->acked);
    if (seq > prev)
        atomic_store(&x->acked, seq);
    atomic_store(&x->hold, seq + 1);
    struct triekv_stats st;
    triekv_stats(o->db, &st);
    pthread_mutex_lock(&x->mu);
    x->connected = true;
    if (seq >= st.seq)
        x->lag_since_ms = 0;
    pthread_mutex_unlock(&x->mu);
    if (seq > prev && o->on_ack)
        o->on_ack(o->on_ack_arg);
}

static uint64_t retention(void *arg)
{
    struct repl_sender *o = arg;
    uint64_t min = UINT64_MAX;
    for (size_t i = 0; i < o->n; i++) {
        uint64_t h = atomic_load(&o->s[i].hold);
        if (h < min)
            min = h;
    }
    return min;
}

/* ---- snapshot --------------------------------------------------------------------------------- */

struct chunk {
    struct kv_buf body;
    struct kv_buf last;
    size_t items;
};

static int chunk_visit(void *arg, struct kv_slice key, struct kv_slice value, uint64_t seq)
{
    struct chunk *c = arg;
    repl_frame_item(&c->body, key, value, seq);
    c->last.len = 0;
    kv_buf_append(&c->last, key.ptr, key.len);
    c->items++;
    return 0;
}

static int snapshot(struct sender *x, uint64_t *applied)
{
    struct repl_sender *o = x->owner;
    set_state(x, "snapshot");
    struct triekv_stats st;
    triekv_stats(o->db, &st);
    uint64_t s = st.seq;
    atomic_store(&x->hold, s + 1); /* the tail after the snapshot stays in the log */
    kv_log_info(REPL_COMPONENT, "%s: resyncing with a snapshot at seq %" PRIu64 " (%" PRIu64 " keys)", x->url,
                s, st.keys);
    int rc = call(x, "POST", "/replication/snapshot/begin", NULL, 0, NULL);
    struct chunk c = {0};
    struct kv_buf after = {0}; /* the last key sent: the next page starts after it */
    struct triekv_scan_result res = {.more = true};
    uint64_t items = 0;
    for (bool first = true; rc == 0 && res.more && !atomic_load(&o->stop); first = false) {
        struct triekv_range r = {.limit = SNAPSHOT_ITEMS_MAX, .bytes_limit = o->cfg.batch_bytes};
        if (!first) {
            after.len = 0;
            kv_buf_append(&after, c.last.ptr, c.last.len);
            r.after = kv_slice_make(after.ptr, after.len);
            r.has_after = true;
        }
        c.body.len = 0;
        c.items = 0;
        int src = triekv_scan(o->db, &r, chunk_visit, &c, &res);
        if (src != KV_OK) {
            set_error(x, "snapshot scan: %s", kv_strerror(src));
            rc = -1;
            break;
        }
        if (c.items == 0)
            break;
        kv_buf_put_u32(&c.body, kv_crc32c(0, c.body.ptr, c.body.len));
        rc = call(x, "POST", "/replication/snapshot/chunk", c.body.ptr, c.body.len, NULL);
        items += c.items;
        pthread_mutex_lock(&x->mu);
        x->bytes += c.body.len;
        pthread_mutex_unlock(&x->mu);
    }
    kv_buf_free(&after);
    kv_buf_free(&c.body);
    kv_buf_free(&c.last);
    if (rc == 0 && atomic_load(&o->stop))
        rc = -1;
    if (rc == 0) {
        uint32_t epoch = 0; /* 0: the main cannot name it (a store older than its epoch history) */
        triekv_epoch_at(o->db, s, &epoch);
        char path[96];
        snprintf(path, sizeof path, "/replication/snapshot/end?seq=%" PRIu64 "&epoch=%" PRIu32, s, epoch);
        struct replica_state rs;
        rc = call(x, "POST", path, NULL, 0, &rs);
        if (rc == 0)
            *applied = rs.applied;
    }
    if (rc == 0) {
        pthread_mutex_lock(&x->mu);
        x->snapshots++;
        pthread_mutex_unlock(&x->mu);
        acked(x, *applied);
        kv_log_info(REPL_COMPONENT, "%s: snapshot done: %" PRIu64 " items at seq %" PRIu64, x->url, items, s);
    }
    return rc;
}

/* ---- streaming ---------------------------------------------------------------------------------- */

/* Streams from `from` until a failure or stop. Returns the call's code (-1, -2, -3), or 1 when the
 * log no longer holds `from` (the replica needs a snapshot). */
static int stream(struct sender *x, uint64_t from)
{
    struct repl_sender *o = x->owner;
    struct triekv_log_reader *r;
    int rc = triekv_log_open(o->db, from, &r);
    if (rc == KV_E_LOG_TRUNCATED)
        return 1;
    if (rc != KV_OK) {
        set_error(x, "cannot read the commit log at %" PRIu64 ": %s", from, kv_strerror(rc));
        return -1;
    }
    set_state(x, "streaming");
    struct kv_buf batch = {0};
    int out = -1;
    while (!atomic_load(&o->stop)) {
        batch.len = 0;
        uint32_t n = 0;
        rc = triekv_log_read(r, &batch, o->cfg.batch_bytes, &n);
        if (rc != KV_OK) {
            if (rc == KV_E_LOG_TRUNCATED) {
                out = 1;
                break;
            }
            set_error(x, "cannot read the commit log: %s", kv_strerror(rc));
            break;
        }
        uint64_t pending = triekv_log_pending_bytes(r);
        pthread_mutex_lock(&x->mu);
        x->pending_bytes = pending + batch.len;
        if (n > 0 && x->lag_since_ms == 0)
            x->lag_since_ms = kv_now_ms();
        pthread_mutex_unlock(&x->mu);
        if (n == 0 && kv_now_ms() - x->last_post_ms < HEARTBEAT_MS) {
            triekv_wait_seq(o->db, triekv_log_next(r), 200);
            continue;
        }
        struct replica_state rs;
        int c = call(x, "POST", "/replication/apply", batch.ptr, batch.len, &rs);
        uint64_t applied = rs.applied;
        if (c != 0) {
            out = c;
            break;
        }
        if (applied + 1 < triekv_log_next(r) && n > 0) { /* the replica has less than we sent */
            set_error(x, "the replica applied %" PRIu64 " of %" PRIu64 "; resending", applied,
                      triekv_log_next(r) - 1);
            out = -3;
            break;
        }
        pthread_mutex_lock(&x->mu);
        x->batches += n ? 1 : 0;
        x->bytes += batch.len;
        pthread_mutex_unlock(&x->mu);
        acked(x, applied);
    }
    kv_buf_free(&batch);
    triekv_log_close(r);
    return out;
}

/* ---- the thread --------------------------------------------------------------------------------- */

static void sleep_ms(struct repl_sender *o, uint32_t ms)
{
    for (uint32_t t = 0; t < ms && !atomic_load(&o->stop); t += 20) {
        struct timespec ts = {0, 20 * 1000000L};
        nanosleep(&ts, NULL);
    }
}

/* Whether the replica holds batches the main does not: more of them (the main lost its newest
 * writes), or a last batch of another epoch (the main lost writes and numbered new ones the same).
 * Either way its data must go. Logs why. */
static bool needs_snapshot(struct sender *x, const struct replica_state *rs, uint64_t main_seq)
{
    if (rs->applied > main_seq) {
        kv_log_warn(REPL_COMPONENT,
                    "%s: the replica is ahead of the main (%" PRIu64 " > %" PRIu64 "): the main "
                    "lost writes; resyncing the replica",
                    x->url, rs->applied, main_seq);
        return true;
    }
    if (rs->applied == 0)
        return false; /* nothing to disagree about */
    uint32_t mine;
    bool known = triekv_epoch_at(x->owner->db, rs->applied, &mine) == KV_OK;
    /* Where the main cannot name the epoch (its history does not reach back that far), a replica
     * that can has a history the main cannot vouch for; one that cannot either is taken at its
     * word, or it would be resynced on every reconnection. */
    bool diverged = known ? !rs->epoch_known || rs->epoch != mine : rs->epoch_known;
    if (diverged)
        kv_log_warn(REPL_COMPONENT,
                    "%s: the replica's batch %" PRIu64 " is not the main's (epoch %" PRIu32
                    " there, the main's %s%" PRIu32 "): the main lost writes and reused their numbers; "
                    "resyncing the replica",
                    x->url, rs->applied, rs->epoch, known ? "" : "unknown ", known ? mine : 0);
    return diverged;
}

static void *sender_main(void *arg)
{
    struct sender *x = arg;
    struct repl_sender *o = x->owner;
    uint32_t backoff = o->cfg.backoff_min_ms;
    uint32_t gaps = 0;           /* gaps in a row, with no batch accepted in between */
    bool said_connected = false; /* "connected" is logged once per stretch of contact */
    while (!atomic_load(&o->stop)) {
        set_state(x, "connecting");
        struct replica_state rs = {0};
        int rc = call(x, "GET", "/replication/state", NULL, 0, &rs);
        uint64_t applied = rs.applied;
        if (rc == 0) {
            struct triekv_stats st;
            triekv_stats(o->db, &st);
            if (!said_connected)
                kv_log_info(REPL_COMPONENT,
                            "%s: connected; the replica has seq %" PRIu64 ", the main %" PRIu64, x->url,
                            applied, st.seq);
            said_connected = true;
            x->refused_logged = false;
            if (rs.resyncing || needs_snapshot(x, &rs, st.seq))
                rc = snapshot(x, &applied);
            else
                acked(x, applied);
            if (rc == 0) {
                rc = stream(x, applied + 1);
                if (rc == 1) /* behind the retained log */
                    rc = snapshot(x, &applied);
                if (rc == 0)
                    backoff = o->cfg.backoff_min_ms;
            }
        }
        if (atomic_load(&o->stop))
            break;
        if (rc == -3 && atomic_load(&x->acked) > applied)
            gaps = 0;                /* batches went through before this gap: progress */
        if (rc == -3 && gaps++ == 0) /* a gap: start over at once from what the replica has */
            continue;
        if (rc == 0) {
            gaps = 0;
            continue;
        }
        /* a failure, or gaps again and again (a replica that cannot take what it asks for):
         * back off, doubling up to backoff_max_ms */
        pthread_mutex_lock(&x->mu);
        x->retries++;
        x->state = rc == -2 ? "refused" : "backoff";
        bool log = rc == -2 && !x->refused_logged;
        pthread_mutex_unlock(&x->mu);
        if (log) {
            kv_log_error(REPL_COMPONENT, "%s refused the stream: %s", x->url, x->last_error);
            x->refused_logged = true;
        }
        if (rc != -3)
            said_connected = false;
        sleep_ms(o, rc == -2 ? o->cfg.backoff_max_ms : backoff);
        backoff = backoff * 2 > o->cfg.backoff_max_ms ? o->cfg.backoff_max_ms : backoff * 2;
    }
    return NULL;
}

int repl_sender_start(struct triekv *db, const struct repl_config *cfg, struct repl_sender **out)
{
    if (cfg->nreplicas > REPL_MAX_REPLICAS)
        return KV_E_INVALID;
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) /* reference-counted; undone in stop */
        return KV_E_INVALID;
    struct repl_sender *o = kv_calloc(1, sizeof *o);
    o->db = db;
    o->cfg = *cfg;
    o->cluster_id = kv_strdup(cfg->cluster_id ? cfg->cluster_id : "");
    o->token = kv_strdup(cfg->token ? cfg->token : "");
    o->main_url = kv_strdup(cfg->main_url ? cfg->main_url : "");
    o->n = cfg->nreplicas;
    o->s = kv_calloc(o->n ? o->n : 1, sizeof *o->s);
    for (size_t i = 0; i < o->n; i++) {
        struct sender *x = &o->s[i];
        x->owner = o;
        x->idx = (int)i;
        snprintf(x->url, sizeof x->url, "%s", cfg->replicas[i]);
        size_t ul = strlen(x->url);
        while (ul > 0 && x->url[ul - 1] == '/')
            x->url[--ul] = 0;
        pthread_mutex_init(&x->mu, NULL);
        x->state = "connecting";
        atomic_init(&x->hold, 1); /* until first contact: hold everything (within the cap) */
        x->curl = curl_easy_init();
        KV_ASSERT(x->curl != NULL);
        curl_easy_setopt(x->curl, CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(x->curl, CURLOPT_WRITEFUNCTION, on_body);
        curl_easy_setopt(x->curl, CURLOPT_WRITEDATA, x);
        curl_easy_setopt(x->curl, CURLOPT_XFERINFOFUNCTION, on_progress);
        curl_easy_setopt(x->curl, CURLOPT_XFERINFODATA, x);
        curl_easy_setopt(x->curl, CURLOPT_NOPROGRESS, 0L);
        curl_easy_setopt(x->curl, CURLOPT_CONNECTTIMEOUT_MS, (long)cfg->timeout_ms);
        /* a stalled connection (dropped packets, a frozen peer) fails after timeout_ms without a
         * byte moving; a slow but moving large transfer goes on */
        curl_easy_setopt(x->curl, CURLOPT_LOW_SPEED_LIMIT, 1L);
        curl_easy_setopt(x->curl, CURLOPT_LOW_SPEED_TIME, (long)(cfg->timeout_ms + 999) / 1000);
        curl_easy_setopt(x->curl, CURLOPT_TCP_KEEPALIVE, 1L);
        curl_easy_setopt(x->curl, CURLOPT_PROTOCOLS_STR, "http");
    }
    triekv_set_retention(db, retention, o);
    for (size_t i = 0; i < o->n; i++)
        KV_ASSERT(pthread_create(&o->s[i].tid, NULL, sender_main, &o->s[i]) == 0);
    *out = o;
    return KV_OK;
}

void repl_sender_stop(struct repl_sender *o)
{
    if (o == NULL)
        return;
    atomic_store(&o->stop, true);
    for (size_t i = 0; i < o->n; i++)
        pthread_join(o->s[i].tid, NULL);
    triekv_set_retention(o->db, NULL, NULL);
    for (size_t i = 0; i < o->n; i++) {
        curl_easy_cleanup(o->s[i].curl);
        kv_buf_free(&o->s[i].resp);
        pthread_mutex_destroy(&o->s[i].mu);
    }
    free(o->s);
    free(o->cluster_id);
    free(o->token);
    free(o->main_url);
    free(o);
    curl_global_cleanup();
}

void repl_sender_on_ack(struct repl_sender *o, void (*fn)(void *arg), void *arg)
{
    o->on_ack = fn;
    o->on_ack_arg = arg;
}

static int desc(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x < y) - (x > y);
}

uint64_t repl_acked_by(struct repl_sender *o, int n)
{
    if (n <= 0)
        return UINT64_MAX;
    if ((size_t)n > o->n)
        return 0;
    uint64_t a[REPL_MAX_REPLICAS];
    for (size_t i = 0; i < o->n; i++)
        a[i] = atomic_load(&o->s[i].acked);
    qsort(a, o->n, sizeof a[0], desc);
    return a[n - 1];
}

size_t repl_sender_stats(struct repl_sender *o, struct repl_replica_stats *out, size_t max)
{
    struct triekv_stats st;
    triekv_stats(o->db, &st);
    uint64_t now = kv_now_ms();
    for (size_t i = 0; i < o->n && i < max; i++) {
        struct sender *x = &o->s[i];
        struct repl_replica_stats *r = &out[i];
        pthread_mutex_lock(&x->mu);
        snprintf(r->url, sizeof r->url, "%s", x->url);
        r->state = x->state;
        r->connected = x->connected;
        r->acked_seq = atomic_load(&x->acked);
        r->lag_records = st.seq > r->acked_seq ? st.seq - r->acked_seq : 0;
        r->lag_bytes = r->lag_records ? x->pending_bytes : 0;
        r->lag_seconds = r->lag_records && x->lag_since_ms ? (double)(now - x->lag_since_ms) / 1000.0 : 0;
        r->retries = x->retries;
        r->snapshots = x->snapshots;
        r->batches_sent = x->batches;
        r->bytes_sent = x->bytes;
        snprintf(r->last_error, sizeof r->last_error, "%s", x->last_error);
        pthread_mutex_unlock(&x->mu);
    }
    return o->n;
}
