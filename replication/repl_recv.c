/* replication/repl_recv.c - the replica's end of the stream: who may send, and applying what they
 * send. The node serves these over HTTP on the replication port, one request at a time (a single
 * thread), so applying never races another apply or a snapshot.
 *
 * A stream is accepted only with this replica's cluster id and, when one is configured, its
 * token (compared in constant time). Everything else is refused and counted; the node logs it. */
#include "replication/repl.h"
#include "common/kv_assert.h"
#include "common/kv_crc.h"
#include "common/kv_time.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct repl_receiver {
    struct triekv *db;
    char *cluster_id;
    char *token;
    pthread_mutex_t mu; /* the fields below; apply and snapshot calls come from one thread */
    char main_url[256];
    uint64_t main_seq;
    uint64_t last_contact_ms; /* 0: never */
    uint64_t caught_up_ms;    /* last time applied >= main_seq */
    uint64_t batches, records, snapshots, refused;
};

int repl_receiver_create(struct triekv *db, const char *cluster_id, const char *token,
                         struct repl_receiver **out)
{
    struct repl_receiver *r = kv_calloc(1, sizeof *r);
    r->db = db;
    r->cluster_id = kv_strdup(cluster_id ? cluster_id : "");
    r->token = kv_strdup(token ? token : "");
    pthread_mutex_init(&r->mu, NULL);
    r->caught_up_ms = kv_now_ms();
    *out = r;
    return KV_OK;
}

void repl_receiver_destroy(struct repl_receiver *r)
{
    if (r == NULL)
        return;
    pthread_mutex_destroy(&r->mu);
    free(r->cluster_id);
    free(r->token);
    free(r);
}

/* Equal strings, in time independent of where they differ. */
static bool same_secret(const char *a, size_t alen, const char *b, size_t blen)
{
    unsigned diff = (unsigned)(alen ^ blen);
    for (size_t i = 0; i < alen && i < blen; i++)
        diff |= (unsigned char)(a[i] ^ b[i]);
    return diff == 0;
}

int repl_receiver_check(struct repl_receiver *r, const char *cluster, size_t cluster_len, const char *token,
                        size_t token_len, char *why, size_t why_len)
{
    const char *problem = NULL;
    if (cluster == NULL)
        problem = "no X-Triekv-Cluster header";
    else if (cluster_len != strlen(r->cluster_id) || memcmp(cluster, r->cluster_id, cluster_len) != 0)
        problem = "another cluster_id";
    else if (r->token[0] && (token == NULL || !same_secret(token, token_len, r->token, strlen(r->token))))
        problem = "a missing or wrong replication_token";
    if (problem == NULL)
        return KV_OK;
    pthread_mutex_lock(&r->mu);
    r->refused++;
    pthread_mutex_unlock(&r->mu);
    snprintf(why, why_len, "stream refused: %s (this replica is in cluster '%s')", problem, r->cluster_id);
    return KV_E_FORBIDDEN;
}

static void note_caught_up(struct repl_receiver *r)
{
    struct triekv_stats st;
    triekv_stats(r->db, &st);
    if (st.seq >= r->main_seq)
        r->caught_up_ms = kv_now_ms();
}

void repl_receiver_heard(struct repl_receiver *r, const char *main_url, size_t url_len, uint64_t main_seq)
{
    pthread_mutex_lock(&r->mu);
    if (main_url && url_len && url_len < sizeof r->main_url) {
        memcpy(r->main_url, main_url, url_len);
        r->main_url[url_len] = 0;
    }
    r->main_seq = main_seq;
    r->last_contact_ms = kv_now_ms();
    note_caught_up(r);
    pthread_mutex_unlock(&r->mu);
}

void repl_receiver_main_url(struct repl_receiver *r, char *out, size_t cap)
{
    pthread_mutex_lock(&r->mu);
    snprintf(out, cap, "%s", r->main_url);
    pthread_mutex_unlock(&r->mu);
}

int repl_receiver_apply(struct repl_receiver *r, const uint8_t *records, size_t len, uint64_t *applied)
{
    uint64_t before = 0;
    struct triekv_stats st;
    triekv_stats(r->db, &st);
    before = st.seq;
    int rc = KV_OK;
    *applied = st.seq;
    if (len > 0) /* an empty body is the main's heartbeat */
        rc = triekv_apply_log(r->db, records, len, applied);
    pthread_mutex_lock(&r->mu);
    if (*applied > before) {
        r->batches++;
        r->records += *applied - before;
    }
    note_caught_up(r);
    pthread_mutex_unlock(&r->mu);
    return rc;
}

int repl_receiver_snapshot_begin(struct repl_receiver *r)
{
    return triekv_snapshot_begin(r->db);
}

int repl_receiver_snapshot_chunk(struct repl_receiver *r, const uint8_t *body, size_t len, uint32_t *items)
{
    *items = 0;
    if (len < 4 || kv_get_u32(body + len - 4) != kv_crc32c(0, body, len - 4))
        return KV_E_CORRUPT;
    size_t end = len - 4, off = 0;
    while (off < end) {
        if (end - off < 14)
            return KV_E_CORRUPT;
        uint32_t klen = kv_get_u16(body + off), vlen = kv_get_u32(body + off + 2);
        uint64_t version = kv_get_u64(body + off + 6);
        off += 14;
        if ((uint64_t)klen + vlen > end - off)
            return KV_E_CORRUPT;
        int rc = triekv_snapshot_put(r->db, kv_slice_make(body + off, klen),
                                     kv_slice_make(body + off + klen, vlen), version);
        if (rc != KV_OK)
            return rc;
        off += (size_t)klen + vlen;
        (*items)++;
    }
    return KV_OK;
}

int repl_receiver_snapshot_end(struct repl_receiver *r, uint64_t seq, uint32_t epoch)
{
    int rc = triekv_snapshot_end(r->db, seq, epoch);
    if (rc == KV_OK) {
        pthread_mutex_lock(&r->mu);
        r->snapshots++;
        note_caught_up(r);
        pthread_mutex_unlock(&r->mu);
    }
    return rc;
}

void repl_receiver_stats(struct repl_receiver *r, struct repl_receiver_stats *out)
{
    struct triekv_stats st;
    triekv_stats(r->db, &st);
    uint64_t now = kv_now_ms();
    pthread_mutex_lock(&r->mu);
    out->applied_seq = st.seq;
    out->main_seq = r->main_seq;
    out->since_contact_seconds = r->last_contact_ms ? (double)(now - r->last_contact_ms) / 1000.0 : -1;
    out->staleness_seconds = st.seq >= r->main_seq ? 0 : (double)(now - r->caught_up_ms) / 1000.0;
    out->resyncing = triekv_snapshot_active(r->db);
    out->batches = r->batches;
    out->records = r->records;
    out->snapshots = r->snapshots;
    out->refused = r->refused;
    pthread_mutex_unlock(&r->mu);
}

void repl_frame_item(struct kv_buf *out, struct kv_slice key, struct kv_slice value, uint64_t version)
{
    kv_buf_put_u16(out, (uint16_t)key.len);
    kv_buf_put_u32(out, (uint32_t)value.len);
    kv_buf_put_u64(out, version);
    kv_buf_append(out, key.ptr, key.len);
    kv_buf_append(out, value.ptr, value.len);
}
