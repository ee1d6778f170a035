/* node/node_int.h - private to node/: the server's configuration, threads, request context and
 * the helpers its handlers share.
 *
 * Threads: `threads` h2o event loops share one listening socket; each owns its connections and
 * everything about their requests. Reads run on the loop thread (a page load from disk included);
 * writes are handed to the engine asynchronously and their completions come back to the loop that
 * owns the request through an h2o multithread receiver, so a loop never waits for an fsync.
 * Metrics are per thread (written by that thread only) and summed when scraped. */
#ifndef NODE_INT_H
#define NODE_INT_H

#define H2O_USE_LIBUV 0
#include <h2o.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "common/kv_buf.h"
#include "common/kv_config.h"
#include "common/kv_http.h"
#include "node/node.h"
#include "trie/triekv.h"

#define NODE_COMPONENT            "node"
#define NODE_BULK_ITEMS_HARD_MAX  1000000 /* max_bulk_items must stay within */
#define NODE_RANGE_ITEMS_HARD_MAX 100000  /* max_range_response likewise */
#define NODE_DRAIN_MS             10000   /* shutdown: time given to in-flight requests */

/* ---- configuration (node_config.c) -------------------------------------------------------------- */

struct node_config {
    int64_t port;
    int64_t replication_port;
    char *bind;
    char *data_dir;
    bool is_replica;
    struct kv_strlist replicas;
    char *cluster_id;
    char *main_url;
    char *fsync;
    int64_t fsync_batch_writes;
    int64_t fsync_interval_ms;
    int64_t cache_size; /* MiB */
    int64_t max_page_size;
    int64_t max_key_size;
    int64_t max_value_size;
    int64_t max_range_response;
    int64_t max_range_bytes;
    int64_t max_bulk_items;
    int64_t max_bulk_bytes;
    int64_t max_connections;
    int64_t request_timeout_ms;
    int64_t threads;
    char *log_level;
    char *io_backend;
    /* replication */
    char *replication_mode;
    int64_t min_replica_acks;
    int64_t replication_timeout_ms;
    char *replication_token;
    int64_t replication_retention_mb;
    int64_t replication_batch_bytes;
    int64_t replication_read_wait_ms;
    char *advertise_url;
    /* engine tuning */
    int64_t wal_segment_bytes;
    int64_t checkpoint_wal_bytes;
    int64_t checkpoint_interval_ms;
    bool check_only; /* --check: validate the configuration and exit (not a key) */
};

extern const struct kv_cfg_key node_config_keys[];
void node_config_defaults(struct node_config *c);
/* Loads defaults, --config FILE, TRIEKV_* variables and flags, then checks the combination.
 * Returns 0; 1 after printing --help or --version (exit 0); -1 with a one-line message in err. */
int node_config_load(struct node_config *c, int argc, char **argv, char *err);
void node_config_free(struct node_config *c);
/* The engine's options for this configuration. */
void node_config_engine(const struct node_config *c, struct triekv_options *o);

/* ---- endpoints and threads -------------------------------------------------------------------- */

/* One event-loop thread (common/kv_http.h runs them). */
struct node_thread {
    struct kv_http_thread http; /* first: kv_http allocates node_threads */
    struct node *node;
    h2o_multithread_receiver_t done_rx; /* write completions from the engine */
    h2o_multithread_receiver_t seq_rx;  /* waiters whose sequence number arrived (node_seq.c) */
    h2o_timeout_t wait_timeout;         /* their deadlines */
};

struct node {
    struct node_config cfg;
    struct triekv *db;
    struct kv_http_server http;
    uint64_t started_ms;
    /* replication */
    bool sync_mode;                 /* main with replication_mode sync */
    struct repl_sender *sender;     /* main with replicas */
    struct repl_receiver *receiver; /* replica */
    struct node_repl_server *rsrv;  /* replica: the replication port */
    pthread_mutex_t waiters_mu;
    struct node_waiter *waiters; /* node_seq.c */
    char advertise_url[256];
};

/* Per-request context, from the request's pool. */
struct node_req {
    struct kv_http_req h; /* the request, its thread, endpoint and start time */
    struct node_thread *th;
    struct node *node;
};

/* ---- replies (node_reply.c; the generic ones are kv_http_reply and friends) ---------------------- */

/* Maps an engine result to its status and JSON error (the one table of node_reply.c). */
void node_reply_rc(struct node_req *r, int rc, const char *what);
int node_status_of(int rc);
/* Sends raw bytes from a value (zero-copy; the value is released when the request ends).
 * For HEAD only the headers go out. */
void node_reply_value(struct node_req *r, struct triekv_value *v);

/* ---- requests (node_http.c, node_kv.c, node_bulk.c) ------------------------------------------------ */

/* Handlers (kv_api_route calls them with the struct kv_http_req of a struct node_req); each
 * answers the request, now or later. */
void node_handle_kv(struct kv_http_req *h, h2o_iovec_t path);
void node_handle_bulk(struct kv_http_req *h);
void node_handle_bulk_get(struct kv_http_req *h);
void node_handle_bulk_delete(struct kv_http_req *h);
void node_handle_range(struct kv_http_req *h);
void node_handle_stats(struct kv_http_req *h);
void node_handle_metrics(struct kv_http_req *h);
void node_handle_health(struct kv_http_req *h);

/* The 403 a replica gives every write. */
void node_reply_replica_write(struct node_req *r);

/* Asynchronous writes: b goes to the engine; when it is committed, reply(r, rc, res, arg) runs on
 * r's loop thread (never if the request went away meanwhile). arg is copied (arg_len bytes). */
typedef void (*node_write_reply_fn)(struct node_req *r, int rc, const struct triekv_write_result *res,
                                    const void *arg);
void node_write(struct node_req *r, struct triekv_batch *b, node_write_reply_fn reply, const void *arg,
                size_t arg_len);

/* Common write reply: {"seq": N} and the X-Triekv-Seq header, with extra JSON members appended.
 * On a main in replication_mode sync, it first waits for min_replica_acks replicas (or 503). */
void node_reply_seq(struct node_req *r, uint64_t seq, const char *extra_json);

/* ---- waiting for a sequence number (node_seq.c) ------------------------------------------------- */

struct node_waiter;
typedef void (*node_wait_fn)(struct node_req *r, bool timed_out, uint64_t seq, const void *arg);
/* Calls fn on r's loop thread once node_seq_current() reaches seq, or with timed_out after the
 * thread's wait timeout. arg is copied. */
void node_seq_wait(struct node_req *r, uint64_t seq, node_wait_fn fn, const void *arg, size_t arg_len);
/* The number waiters wait for moved to seq (any thread). */
void node_seq_advance(struct node *n, uint64_t seq);
/* What waiters wait for: on a sync main, the seq min_replica_acks replicas have applied; on a
 * replica, its applied seq. */
uint64_t node_seq_current(struct node *n);
void node_seq_on_ready(h2o_multithread_receiver_t *rx, h2o_linklist_t *messages);

/* ---- the replication port (node_repl.c) ----------------------------------------------------------- */

struct node_repl_server;
int node_repl_start(struct node *n, char *err, size_t errlen);
void node_repl_stop(struct node *n);
/* The replication part of /stats and /metrics. */
void node_repl_stats_json(struct node *n, struct kv_buf *b);
void node_repl_metrics(struct node *n, struct kv_buf *b);

#endif
