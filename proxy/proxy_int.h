/* proxy/proxy_int.h - private to proxy/: the configuration, the shard map and its backends, the
 * loop threads, and the upstream exchanges the handlers are built from.
 *
 * Threads: `threads` h2o event loops (common/kv_http.h) own the client connections and every
 * upstream exchange made for them, so a request is handled on one thread from start to end. One
 * health thread checks every backend. Backends are shared: their health is written by the health
 * thread (atomics, and a mutex for the text of the last error), their traffic counters by the
 * loops (relaxed atomics).
 *
 * Upstream connections belong to the loop that opened them: each loop keeps its own idle keep-alive
 * connections per backend (proxy_upstream.c), closed after PROXY_POOL_IDLE_MS, well under a
 * node's own keep-alive timeout. */
#ifndef PROXY_INT_H
#define PROXY_INT_H

#define H2O_USE_LIBUV 0
#include <h2o.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "common/kv_buf.h"
#include "common/kv_config.h"
#include "common/kv_http.h"
#include "proxy/proxy.h"

#define PROXY_VERSION            "0.1.0"
#define PROXY_COMPONENT          "proxy"
#define PROXY_SHARDS_MAX         256
#define PROXY_REPLICAS_MAX       16
#define PROXY_BACKENDS_MAX       (PROXY_SHARDS_MAX * (1 + PROXY_REPLICAS_MAX))
#define PROXY_URL_MAX            256
#define PROXY_SHARD_NAME_MAX     64
#define PROXY_DRAIN_MS           10000
#define PROXY_POOL_IDLE_MS       2000         /* idle upstream connections close after this */
#define PROXY_IDLE_PER_BACKEND   64           /* idle connections a loop keeps per backend */
#define PROXY_CLIENT_HEADERS_MAX 90           /* header lines a client may send (a node takes 100) */
#define PROXY_STREAM_BUFFER_MAX  (256u << 10) /* answer bytes held for a slow client */

/* ---- configuration (proxy_config.c) ------------------------------------------------------------ */

struct proxy_config {
    int64_t port;
    char *bind;
    int64_t threads;
    int64_t max_connections;
    int64_t request_timeout_ms;
    int64_t upstream_timeout_ms;
    int64_t health_check_interval_ms;
    int64_t health_check_timeout_ms;
    int64_t max_body_bytes;
    int64_t max_response_bytes;
    int64_t max_range_response;
    int64_t max_bulk_items;
    int64_t max_key_size;
    char *log_level;
    char *shards; /* the shard map, as JSON text */
    bool check_only;
};

extern const struct kv_cfg_key proxy_config_keys[];
void proxy_config_defaults(struct proxy_config *c);
/* Loads defaults, --config FILE, TRIEKV_PROXY_* variables and flags, and checks them (the shard
 * map is checked by proxy_map_build). 0; 1 after --help or --version; -1 with a message in err. */
int proxy_config_load(struct proxy_config *c, int argc, char **argv, char *err);
void proxy_config_free(struct proxy_config *c);

/* ---- the shard map (proxy_map.c) ----------------------------------------------------------------- */

enum proxy_role { PROXY_MAIN, PROXY_REPLICA };

struct proxy_shard;

struct proxy_backend {
    char url[PROXY_URL_MAX];       /* http://host:port, as configured, without a trailing '/' */
    char authority[PROXY_URL_MAX]; /* host:port, for the Host header */
    char host[PROXY_URL_MAX];      /* the name to resolve (brackets of an IPv6 literal removed) */
    char port[8];
    struct sockaddr_storage addr; /* when host is a numeric address: connect here, no resolving */
    socklen_t addr_len;           /* 0: resolve host at each new connection */
    size_t idx;                   /* in proxy_map.backends */
    struct proxy_shard *shard;
    enum proxy_role role;
    /* health: written by the health thread (and by loops, on a failed connect or an answer) */
    _Atomic bool up;
    _Atomic uint64_t checks, checks_failed, last_ok_ms, last_check_ms, check_seq;
    pthread_mutex_t mu; /* guards the two strings */
    char last_error[160];
    char reported_role[16]; /* what its /health said */
    /* traffic: written by the loops */
    _Atomic uint64_t requests;       /* answers received, by any status */
    _Atomic uint64_t status[6];      /* by class 1xx..5xx */
    _Atomic uint64_t failures;       /* no answer: refused, reset, timed out */
    _Atomic uint64_t latency_sum_us; /* of answered requests, to their head */
};

struct proxy_shard {
    char name[PROXY_SHARD_NAME_MAX];
    struct kv_buf start; /* inclusive; empty for the first shard */
    struct kv_buf end;   /* exclusive, when has_end (every shard but the last) */
    bool has_end;
    struct proxy_backend *main;
    struct proxy_backend *replicas[PROXY_REPLICAS_MAX];
    size_t nreplicas;
    _Atomic uint32_t next_replica; /* round robin */
};

struct proxy_map {
    struct proxy_shard *shards; /* in key order: shards[i].end == shards[i + 1].start */
    size_t n;
    struct proxy_backend **backends; /* every backend, mains and replicas */
    size_t nbackends;
};

/* Builds the map from the shard list's JSON text, checking that the ranges cover the whole key
 * space without gap or overlap, that bounds are at most max_key bytes, that names are unique and
 * URLs valid. 0, or -1 with a one-line message in err naming the shard and what is wrong. */
int proxy_map_build(struct proxy_map *m, const char *json, size_t max_key, char *err, size_t errlen);
void proxy_map_free(struct proxy_map *m);
/* The shard owning key. */
struct proxy_shard *proxy_map_find(const struct proxy_map *m, const uint8_t *key, size_t len);
/* Whether shard s has keys in [lo, hi) (hi: has_hi false means no upper bound). */
bool proxy_shard_overlaps(const struct proxy_shard *s, const uint8_t *lo, size_t lo_len, const uint8_t *hi,
                          size_t hi_len, bool has_hi);
/* The backends a read tries, in order: healthy replicas from the next in turn, the main, then the
 * replicas marked down (a health mark may be stale). Returns how many (at most 1 + nreplicas). */
size_t proxy_read_order(struct proxy_shard *s, struct proxy_backend **out);
/* Prints a bound ("" , "m", or bytes outside printable ASCII as %XX) for messages. */
void proxy_bound_text(const struct kv_buf *b, bool present, char *out, size_t cap);

/* ---- the process ----------------------------------------------------------------------------------- */

struct proxy {
    struct proxy_config cfg;
    struct proxy_map map;
    struct kv_http_server http;
    uint64_t started_ms;
    /* health checks (proxy_health.c) */
    pthread_t hk_thread;
    pthread_mutex_t hk_mu;
    pthread_cond_t hk_cv;
    bool hk_stop; /* hk_mu */
    _Atomic uint64_t health_rounds;
};

struct proxy_thread {
    struct kv_http_thread http; /* first: kv_http allocates proxy_threads */
    struct proxy *px;
    h2o_linklist_t *idle; /* per backend: idle upstream connections (proxy_upstream.c) */
    size_t *idle_count;
    h2o_timeout_t idle_timeout; /* PROXY_POOL_IDLE_MS */
    h2o_timeout_t io_timeout;   /* upstream_timeout_ms */
};

/* Per-request context, from the request's pool. */
struct proxy_req {
    struct kv_http_req h;
    struct proxy_thread *th;
    struct proxy *px;
};

/* ---- upstream exchanges (proxy_upstream.c) --------------------------------------------------------- */

/* A request for a backend. Everything is borrowed for the exchange's life (the request pool's). */
struct proxy_call {
    h2o_iovec_t method;
    h2o_iovec_t path;         /* with its query string */
    h2o_iovec_t body;         /* base NULL: none */
    const char *content_type; /* for a body the proxy built (NULL: the client's headers say) */
    bool client_headers;      /* forward the client's end-to-end headers (If-Match, ...) */
    bool keep_min_seq;        /* forward X-Triekv-Min-Seq (to replicas only: a main has every write) */
};

/* Sends call to order[0], order[1], ... and streams the first answer to r's client, headers and
 * body as they come (reading pauses while PROXY_STREAM_BUFFER_MAX bytes wait for a slow client).
 * With retry (reads), a backend that cannot be reached or answers 503 (a replica resyncing, or
 * behind the X-Triekv-Min-Seq asked for) passes the request on to the next; without, only
 * order[0] is asked. When no backend answers, r gets a JSON 502 or 503 naming what failed. */
void proxy_forward(struct proxy_req *r, const struct proxy_call *call, struct proxy_backend **order, size_t n,
                   bool retry);

/* An exchange whose answer is collected whole (at most max_body bytes) for the proxy to read. */
struct proxy_fetch {
    /* the outcome, when cb runs */
    int status; /* 0: no answer (errstr says why) */
    char errstr[400];
    struct kv_buf body;
    struct proxy_backend *backend; /* the one that answered, or the last one tried */
    char seq[24];                  /* its X-Triekv-Seq header, or "" */
    bool sent;                     /* status 0: the request had gone out (a write may have applied) */
    bool too_large;                /* status 0: the backend answered more than max_body bytes */
    /* for the caller */
    void *arg;
    size_t idx;
};
typedef void (*proxy_fetch_cb)(struct proxy_fetch *f);
/* Starts an exchange like proxy_forward's but collected; cb runs on r's loop thread once, unless
 * r goes away first (then the exchange is cancelled and cb never runs). */
struct proxy_fetch *proxy_fetch_start(struct proxy_req *r, const struct proxy_call *call,
                                      struct proxy_backend **order, size_t n, bool retry, size_t max_body,
                                      proxy_fetch_cb cb, void *arg);

/* A loop's upstream connections: set up on the loop thread before it serves; closed after it
 * drained. */
void proxy_upstream_thread_init(struct proxy_thread *th);
void proxy_upstream_thread_dispose(struct proxy_thread *th);
/* Records a backend's failure to answer; marks it down when it could not be reached at all. */
void proxy_backend_failed(struct proxy_backend *b, const char *why, bool unreachable);
/* Marks a backend up (it answered). */
void proxy_backend_answered(struct proxy_backend *b, int status, uint64_t latency_us);
/* A copy of a backend's last error (empty when none). */
void proxy_backend_last_error(struct proxy_backend *b, char *out, size_t cap);

/* ---- handlers (proxy_kv.c, proxy_bulk.c, proxy_range.c, proxy_stats.c) ------------------------------ */

/* kv_api_route calls these with the struct kv_http_req of a struct proxy_req. */
void proxy_handle_kv(struct kv_http_req *h, h2o_iovec_t path);
void proxy_handle_bulk(struct kv_http_req *h);
void proxy_handle_bulk_delete(struct kv_http_req *h);
void proxy_handle_bulk_get(struct kv_http_req *h);
void proxy_handle_range(struct kv_http_req *h);
void proxy_handle_stats(struct kv_http_req *h);
void proxy_handle_metrics(struct kv_http_req *h);
void proxy_handle_health(struct kv_http_req *h);

/* 503 for a write to a shard whose main is down. */
void proxy_reply_main_down(struct proxy_req *r, struct proxy_shard *s);
/* The request's query string with parameter name left out ("" when nothing is left), in the pool. */
h2o_iovec_t proxy_query_without(struct proxy_req *r, const char *name);

/* ---- health checks (proxy_health.c) ------------------------------------------------------------------ */

/* Runs one round of health checks now (start-up), then starts the thread that runs them. */
int proxy_health_start(struct proxy *px, char *err, size_t errlen);
void proxy_health_stop(struct proxy *px);

#endif
