/* replication/repl.h - streaming every committed write from a main to its replicas.
 *
 * Main side (repl_send.c): one sender thread per replica URL tails the main's commit log from the
 * replica's applied sequence number and POSTs framed batches of records to the replica's
 * replication port over a keep-alive libcurl connection. It resyncs a replica with a full snapshot
 * when the log no longer holds what the replica needs, or when the replica holds batches the main
 * does not have (it is ahead of the main, or its last batch belongs to another epoch: the main
 * lost writes and reused their numbers). Failures are retried with capped exponential
 * backoff; nothing is skipped or reordered.
 *
 * Replica side (repl_recv.c): the protocol operations behind the replica's replication port, which
 * the node serves over HTTP: checking that a stream comes from a main of the same cluster, and
 * applying records and snapshots to the engine.
 *
 * Wire protocol (all requests carry X-Triekv-Cluster, X-Triekv-Token when one is configured,
 * X-Triekv-Main with the main's public URL and X-Triekv-Main-Seq with its last committed seq):
 *   GET  /replication/state                 -> {"applied_seq": N, "applied_epoch": E or null,
 *                                              "resyncing": bool, "cluster_id": C}
 *   POST /replication/apply                 body: commit-log records as triekv_log_read gives them
 *                                           (an empty body is a heartbeat) -> {"applied_seq": N}
 *   POST /replication/snapshot/begin        -> {}
 *   POST /replication/snapshot/chunk        body: items (see repl_frame_item), then crc32c(4)
 *   POST /replication/snapshot/end?seq=S&epoch=E -> {"applied_seq": S}
 * Epochs (triekv_epoch_at) tell the main whether the replica's last batch is the main's own: a
 * replica whose history diverged (it holds batches the main lost and then numbered anew) is
 * resynced, like one that is ahead of the main.
 * A refused stream (other cluster, bad token) is 403; a gap is 409 (resend from applied_seq). */
#ifndef REPL_H
#define REPL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/kv_buf.h"
#include "trie/triekv.h"

#define REPL_MAX_REPLICAS 16

enum repl_mode { REPL_ASYNC = 0, REPL_SYNC };

struct repl_config {
    const char *cluster_id;
    const char *token;     /* "" or NULL: none */
    const char *main_url;  /* the main's public URL, told to replicas for their refusals */
    char *const *replicas; /* base URLs of the replicas' replication ports */
    size_t nreplicas;
    uint64_t batch_bytes;     /* records per POST, about (a larger record goes alone) */
    uint64_t retention_bytes; /* commit log held for lagging replicas, at most */
    uint32_t backoff_min_ms, backoff_max_ms;
    uint32_t timeout_ms; /* a request that moves no byte for this long fails */
};

/* ---- main side ------------------------------------------------------------------------------ */

struct repl_sender;

/* Starts one sender thread per replica; registers the engine's log retention hook. */
int repl_sender_start(struct triekv *db, const struct repl_config *cfg, struct repl_sender **out);
/* Stops and joins the senders (a request in flight is cut). NULL is a no-op. */
void repl_sender_stop(struct repl_sender *s);

/* Called on a sender thread every time a replica's acknowledged seq advances. */
void repl_sender_on_ack(struct repl_sender *s, void (*fn)(void *arg), void *arg);
/* The highest seq that at least n replicas have applied (0 when fewer than n have any). */
uint64_t repl_acked_by(struct repl_sender *s, int n);

struct repl_replica_stats {
    char url[256];
    const char *state; /* "connecting", "streaming", "snapshot", "backoff", "refused" */
    bool connected;    /* the last request succeeded */
    uint64_t acked_seq;
    uint64_t lag_records;
    uint64_t lag_bytes;
    double lag_seconds; /* since the oldest batch it has not acknowledged was committed, about */
    uint64_t retries;
    uint64_t snapshots;
    uint64_t batches_sent, bytes_sent;
    char last_error[160];
};
/* Fills up to max entries; returns how many replicas there are. */
size_t repl_sender_stats(struct repl_sender *s, struct repl_replica_stats *out, size_t max);

/* ---- replica side ------------------------------------------------------------------------------- */

struct repl_receiver;

int repl_receiver_create(struct triekv *db, const char *cluster_id, const char *token,
                         struct repl_receiver **out);
void repl_receiver_destroy(struct repl_receiver *r);

/* Whether a request with these header values may speak for the main (0, or KV_E_FORBIDDEN with a
 * reason in why). NULL means the header was absent. */
int repl_receiver_check(struct repl_receiver *r, const char *cluster, size_t cluster_len, const char *token,
                        size_t token_len, char *why, size_t why_len);
/* Notes what the main said about itself (its public URL, its seq). */
void repl_receiver_heard(struct repl_receiver *r, const char *main_url, size_t url_len, uint64_t main_seq);
/* The main's public URL as last heard, or "" (copied into out). */
void repl_receiver_main_url(struct repl_receiver *r, char *out, size_t cap);

int repl_receiver_apply(struct repl_receiver *r, const uint8_t *records, size_t len, uint64_t *applied);
int repl_receiver_snapshot_begin(struct repl_receiver *r);
int repl_receiver_snapshot_chunk(struct repl_receiver *r, const uint8_t *body, size_t len, uint32_t *items);
int repl_receiver_snapshot_end(struct repl_receiver *r, uint64_t seq, uint32_t epoch);

struct repl_receiver_stats {
    uint64_t applied_seq;
    uint64_t main_seq;            /* as last heard */
    double since_contact_seconds; /* since the main last spoke (-1: never) */
    double staleness_seconds;     /* since the replica last had everything the main had (0: now) */
    bool resyncing;
    uint64_t batches, records, snapshots, refused;
};
void repl_receiver_stats(struct repl_receiver *r, struct repl_receiver_stats *out);

/* ---- framing (shared by both sides) ---------------------------------------------------------------- */

/* A snapshot item: klen(2) vlen(4) version(8) key value, little-endian. */
void repl_frame_item(struct kv_buf *out, struct kv_slice key, struct kv_slice value, uint64_t version);

#endif
