/* common/kv_http.h - the HTTP server plumbing triekv-server and triekv-proxy share, on h2o 2.2.5
 * (Debian's libh2o-evloop): the listening socket, the event-loop threads, the connection cap,
 * graceful shutdown, replies with JSON errors, query strings and per-endpoint request metrics.
 *
 * Threads: `threads` h2o event loops share one listening socket (a dup each). Each loop owns its
 * connections and every request on them; nothing here is shared between loops but the server's
 * atomics. A program hangs its own per-thread state on kv_http_thread (it gives the size of its
 * struct, which embeds struct kv_http_thread first) and its per-request state on kv_http_req.
 *
 * Shutdown (kv_http_stop): every loop closes its listener, turns keep-alive off, drops idle
 * connections and gives a request still arriving a short grace, then runs until its connections
 * are gone and the work it owes answers for (kv_http_thread.busy) is done, for at most drain_ms.
 *
 * Memory: response bodies built in a kv_buf are handed to the request's pool and freed when h2o
 * disposes of the request; header values are copied into the pool (h2o keeps pointers). */
#ifndef KV_HTTP_H
#define KV_HTTP_H

#define H2O_USE_LIBUV 0
#include <h2o.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "common/kv_buf.h"
#include "common/kv_codec.h"
#include "common/kv_err.h"

#define KV_HTTP_THREADS_MAX       256
#define KV_HTTP_EP_MAX            16   /* endpoints a program may count requests for */
#define KV_HTTP_HIST_BUCKETS      16   /* latency histogram upper bounds (kv_http.c), plus +Inf */
#define KV_HTTP_QUERY_PARAMS_MAX  16   /* a query string with more is refused */
#define KV_HTTP_SHUTDOWN_GRACE_MS 2000 /* shutdown: a request still arriving may take this long */

/* One thread's request counters: written by that thread only, read by any (relaxed atomics). */
struct kv_http_metrics {
    _Atomic uint64_t requests[KV_HTTP_EP_MAX][6]; /* by status class: 1xx..5xx, [0] unused */
    _Atomic uint64_t latency[KV_HTTP_EP_MAX][KV_HTTP_HIST_BUCKETS + 1];
    _Atomic uint64_t latency_sum_us[KV_HTTP_EP_MAX];
    _Atomic uint64_t connections_accepted;
    _Atomic uint64_t connections_refused; /* over max_connections */
};

struct kv_http_server;

/* One event-loop thread. A program's own thread struct embeds this as its first member. */
struct kv_http_thread {
    struct kv_http_server *srv;
    int idx;
    pthread_t tid;
    h2o_evloop_t *loop;
    h2o_context_t ctx;
    h2o_socket_t *listener;
    h2o_accept_ctx_t accept_ctx;
    h2o_multithread_receiver_t wake_rx; /* shutdown wake-up */
    h2o_linklist_t conns;               /* every open connection of this thread */
    uint64_t connections;               /* open on this thread */
    uint64_t busy;                      /* answers the program still owes (shutdown waits for them) */
    struct kv_http_metrics metrics;
};

/* A request being answered. A program's own request struct embeds this as its first member. */
struct kv_http_req {
    h2o_req_t *req;
    struct kv_http_thread *th;
    int ep;            /* the endpoint it is counted under (an index into ep_names) */
    uint64_t start_ns; /* kv_now_ns() when it arrived */
};

struct kv_http_config {
    const char *name;          /* the program, for messages: "triekv-server" */
    const char *server_header; /* the Server header: "triekv/0.1.0" */
    const char *bind;          /* numeric IPv4 or IPv6 address */
    int port;
    int threads;             /* 0: one per core */
    int64_t max_connections; /* over it, new connections are closed at once */
    int64_t request_timeout_ms;
    size_t max_request_body;     /* h2o answers 413 to a larger Content-Length before reading it */
    uint64_t drain_ms;           /* shutdown: time given to requests in flight */
    const char *const *ep_names; /* ep_count names, for /stats and /metrics */
    int ep_count;
    size_t thread_size; /* sizeof the program's thread struct (>= sizeof struct kv_http_thread) */
    /* On the loop thread, before it serves / after it drained (may be NULL). */
    void (*thread_start)(struct kv_http_thread *th);
    void (*thread_stop)(struct kv_http_thread *th);
    /* Every request: answer it now or later (h2o's on_req contract). */
    void (*on_req)(struct kv_http_thread *th, h2o_req_t *req);
    void *app; /* borrowed: the program's state, for its callbacks */
};

struct kv_http_server {
    struct kv_http_config cfg;
    h2o_globalconf_t globalconf;
    void *threads; /* nthreads structs of cfg.thread_size bytes */
    int nthreads;
    int listen_fd;
    _Atomic bool stopping;
    _Atomic int64_t connections; /* all threads: for max_connections */
    pthread_barrier_t ready;
};

/* Binds the listening socket (a port in use fails here, before a program opens anything else).
 * cfg is copied (its strings are borrowed for the server's life). 0, or -1 with a message. */
int kv_http_listen(struct kv_http_server *s, const struct kv_http_config *cfg, char *err, size_t errlen);
/* Starts the loops; returns once every one is serving. */
void kv_http_start(struct kv_http_server *s);
/* Stops accepting, drains (see the top) and joins the loops. */
void kv_http_stop(struct kv_http_server *s);
/* Frees what kv_http_listen and kv_http_start made. */
void kv_http_dispose(struct kv_http_server *s);
/* Thread i (0 <= i < nthreads). */
struct kv_http_thread *kv_http_thread_at(struct kv_http_server *s, int i);
static inline bool kv_http_stopping(struct kv_http_server *s)
{
    return atomic_load(&s->stopping);
}

/* Ignores SIGPIPE (h2o writes with writev) and blocks SIGINT and SIGTERM in the calling thread and
 * every thread it starts afterwards, so that kv_http_wait_stop, on the main thread, takes them. */
void kv_http_signals_init(void);
/* Waits for SIGINT or SIGTERM; returns its name. */
const char *kv_http_wait_stop(void);

/* --probe URL: 0 when URL answers 200 within timeout_ms, else 1 with a line on stderr naming
 * prog (container health checks, without a curl binary in the image). */
int kv_http_probe(const char *prog, const char *url, long timeout_ms);

/* ---- replies ------------------------------------------------------------------------------------ */

/* Sends body (taken over, freed when the request ends) with a status and content type. HEAD gets
 * the headers only. Every reply is counted in the thread's metrics under r->ep. */
void kv_http_reply(struct kv_http_req *r, int status, const char *ctype, struct kv_buf *body);
/* The same as application/json (a newline is appended). */
void kv_http_reply_json(struct kv_http_req *r, int status, struct kv_buf *body);
/* {"error": code, "message": ...}; a message that is not valid UTF-8 is replaced. */
void kv_http_error(struct kv_http_req *r, int status, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* 405 with an Allow header. */
void kv_http_method_not_allowed(struct kv_http_req *r, const char *allow);
/* Whether the request's method is one of allow ("GET, HEAD"); if not, answers 405. */
bool kv_http_method_check(struct kv_http_req *r, const char *allow);
/* Adds a header with a copied value. */
void kv_http_add_header(struct kv_http_req *r, const char *name, const char *value, size_t len);
/* Counts a response of status sent some other way. */
void kv_http_count(struct kv_http_req *r, int status);
/* The reason phrase of status. */
const char *kv_http_reason(int status);
/* Whether the request is HEAD. */
bool kv_http_is_head(const h2o_req_t *req);
/* The request's path without the query string, and without "http://host" in absolute form. */
h2o_iovec_t kv_http_path(const h2o_req_t *req);

/* ---- the REST API's routes ---------------------------------------------------------------------
 * triekv-server and triekv-proxy serve the same endpoints (docs/API.md), counted under the same
 * names; each program gives its handlers and kv_api_route picks one by path and method. */

enum kv_api_ep {
    KV_EP_KV_GET,
    KV_EP_KV_HEAD,
    KV_EP_KV_PUT,
    KV_EP_KV_DELETE,
    KV_EP_BULK,
    KV_EP_BULK_RANGE,
    KV_EP_BULK_GET,
    KV_EP_BULK_DELETE,
    KV_EP_STATS,
    KV_EP_METRICS,
    KV_EP_HEALTH,
    KV_EP_OTHER,
    KV_EP_COUNT
};
_Static_assert(KV_EP_COUNT <= KV_HTTP_EP_MAX, "kv_http counts at most KV_HTTP_EP_MAX endpoints");
extern const char *const kv_api_ep_names[KV_EP_COUNT];

/* Handlers get the request struct the program embeds struct kv_http_req in (cast it back). */
typedef void (*kv_api_fn)(struct kv_http_req *r);
struct kv_api_handlers {
    /* /kv/{key}, any method: path is the request's path, "/kv/" and at least one byte */
    void (*kv)(struct kv_http_req *r, h2o_iovec_t path);
    kv_api_fn bulk, bulk_delete, bulk_get, range, stats, metrics, health;
};
/* Counts r under its endpoint and calls its handler; answers 400 for /kv/ without a key, 405 with
 * an Allow header for a method an endpoint does not take, 404 for any other path. */
void kv_api_route(struct kv_http_req *r, const struct kv_api_handlers *h);
/* Whether req reads (GET, HEAD, or POST /bulk/get). */
bool kv_api_is_read(const h2o_req_t *req);
/* Read-your-writes: the X-Triekv-Min-Seq of req in *seq (0 when absent). 0, or -1 when the header
 * is there but is not a sequence number (1 to 20 digits, at most UINT64_MAX). */
int kv_api_min_seq(const h2o_req_t *req, uint64_t *seq);
/* The endpoint of a /kv/ request by its method (KV_EP_OTHER for a method /kv/ does not take). */
enum kv_api_ep kv_api_kv_ep(h2o_iovec_t method);

/* ---- query strings ------------------------------------------------------------------------------ */

/* A parameter, percent-decoded with '+' as a space. */
struct kv_http_param {
    const char *name; /* NUL-terminated, in the request pool */
    struct kv_slice value;
    bool used;
};
struct kv_http_query {
    struct kv_http_param v[KV_HTTP_QUERY_PARAMS_MAX];
    int n;
};
/* Parses r's query string. 0, or -1 after answering 400 (malformed, repeated, too many). */
int kv_http_query_parse(struct kv_http_req *r, struct kv_http_query *q);
/* The parameter called name, or NULL; marks it used. */
const struct kv_http_param *kv_http_query_get(struct kv_http_query *q, const char *name);
/* 0 when every parameter was used, else -1 after answering 400 naming the first unknown one. */
int kv_http_query_check_unused(struct kv_http_req *r, struct kv_http_query *q);
/* encoding=base64|utf8 or absent: sets *b64. -1 after answering 400. */
int kv_http_query_encoding(struct kv_http_req *r, struct kv_http_query *q, bool *b64);

/* A true/false parameter (true, false, 1, 0); absent is false. -1 after answering 400. */
int kv_http_param_bool(struct kv_http_req *r, const struct kv_http_param *p, bool *out);

/* The parameters of a range page (GET /bulk/range): start_key and end_key, or prefix; cursor;
 * limit; keys_only. The range is in range.{has_prefix, start, has_end, end}; with a cursor,
 * has_after is set and range.after is where to continue. */
struct kv_http_range {
    struct kv_cursor range;
    bool has_after;
    size_t limit;
    bool keys_only;
};
/* Parses them from q, checking that keys are at most max_key bytes, limit is 1..max_limit (absent:
 * max_limit), prefix is not mixed with start_key/end_key, and a cursor is intact and belongs to
 * the range given with it (if any). The slices point into the request pool or into raw (the caller
 * frees raw). -1 after answering 400. */
int kv_http_range_parse(struct kv_http_req *r, struct kv_http_query *q, size_t max_key, size_t max_limit,
                        struct kv_buf *raw, struct kv_http_range *out);

/* ---- metrics ------------------------------------------------------------------------------------ */

/* Appends "connections": {...}, "requests": {endpoint: count, ...} (JSON members, no braces). */
void kv_http_stats_json(struct kv_http_server *s, struct kv_buf *b);
/* Appends the Prometheus text of the connection gauges, PREFIX_http_requests_total{endpoint,code}
 * and the latency histogram PREFIX_http_request_duration_seconds{endpoint}. */
void kv_http_metrics_text(struct kv_http_server *s, const char *prefix, struct kv_buf *b);
/* Appends one Prometheus sample with its HELP and TYPE lines. */
void kv_http_metric(struct kv_buf *b, const char *name, const char *type, const char *help, double value);

#endif
