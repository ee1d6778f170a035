/* node/node_http.c - triekv-server's HTTP plumbing on h2o 2.2.5: start-up, the event-loop threads,
 * accepting (with a connection cap), routing, query strings, asynchronous writes, shutdown.
 *
 * Start-up: load the config, open the store (its recovery runs here), bind the listening socket,
 * then start `threads` loops that all poll that one socket (a dup each). Any failure before
 * serving is one line on stderr and exit status 1.
 *
 * Shutdown (SIGTERM/SIGINT, caught by sigwait in the main thread): every loop closes its listener,
 * turns keep-alive off (h2o_context_request_shutdown) and drops idle connections (request timeout
 * 0), then keeps running until its connections are gone and the writes it handed to the engine
 * have been answered, for at most NODE_DRAIN_MS. Then the store is closed, which checkpoints.
 *
 * Writes: the loop thread builds a batch and first offers it to triekv_write_nowait, which commits
 * on this thread when that needs no waiting (no fsync, an idle pipeline) and answers at once.
 * Otherwise the batch goes to triekv_write_async; the engine's completion callback (an engine
 * thread) posts the job back to the loop's receiver, which answers. A guard in the request's pool
 * tells the job when h2o has disposed of the request, so a job never answers a request that is
 * gone. */
#include "node/node_int.h"
#include "common/kv_assert.h"
#include "common/kv_codec.h"
#include "common/kv_log.h"
#include "common/kv_time.h"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define ACCEPTS_PER_WAKEUP 16 /* bounded work per listener wake-up; level-triggered polling wakes us again */

/* ---- query strings ------------------------------------------------------------------------------- */

int node_query_parse(struct node_req *r, struct node_query *q)
{
    h2o_req_t *req = r->req;
    q->n = 0;
    if (req->query_at == SIZE_MAX)
        return 0;
    const char *s = req->path.base + req->query_at + 1;
    const char *end = req->path.base + req->path.len;
    while (s < end) {
        const char *amp = memchr(s, '&', (size_t)(end - s));
        const char *stop = amp ? amp : end;
        if (stop == s) { /* empty piece: "a=1&&b=2" */
            s = stop + 1;
            continue;
        }
        if (q->n == NODE_QUERY_PARAMS_MAX) {
            node_reply_error(r, 400, "bad_request", "too many query parameters (at most %d)", NODE_QUERY_PARAMS_MAX);
            return -1;
        }
        const char *eq = memchr(s, '=', (size_t)(stop - s));
        const char *name_end = eq ? eq : stop;
        struct kv_buf name = {0}, value = {0};
        bool ok = kv_percent_decode(s, (size_t)(name_end - s), true, &name) == KV_OK &&
                  (eq == NULL || kv_percent_decode(eq + 1, (size_t)(stop - eq - 1), true, &value) == KV_OK);
        if (!ok || name.len == 0 || memchr(name.ptr, 0, name.len)) {
            kv_buf_free(&name);
            kv_buf_free(&value);
            node_reply_error(r, 400, "bad_request", "malformed query string (bad %%-escape or empty name)");
            return -1;
        }
        struct node_param *p = &q->v[q->n];
        p->name = h2o_mem_alloc_pool(&req->pool, name.len + 1);
        memcpy((char *)p->name, name.ptr, name.len);
        ((char *)p->name)[name.len] = 0;
        uint8_t *v = h2o_mem_alloc_pool(&req->pool, value.len ? value.len : 1);
        if (value.len)
            memcpy(v, value.ptr, value.len);
        p->value = kv_slice_make(v, value.len);
        p->used = false;
        kv_buf_free(&name);
        kv_buf_free(&value);
        for (int i = 0; i < q->n; i++) {
            if (strcmp(q->v[i].name, p->name) == 0) {
                node_reply_error(r, 400, "bad_request", "query parameter '%s' given twice", p->name);
                return -1;
            }
        }
        q->n++;
        s = stop + 1;
    }
    return 0;
}

const struct node_param *node_query_get(struct node_query *q, const char *name)
{
    for (int i = 0; i < q->n; i++) {
        if (strcmp(q->v[i].name, name) == 0) {
            q->v[i].used = true;
            return &q->v[i];
        }
    }
    return NULL;
}

int node_query_check_unused(struct node_req *r, struct node_query *q)
{
    for (int i = 0; i < q->n; i++) {
        if (!q->v[i].used) {
            node_reply_error(r, 400, "bad_request", "unknown query parameter '%s'", q->v[i].name);
            return -1;
        }
    }
    return 0;
}

int node_query_encoding(struct node_req *r, struct node_query *q, bool *b64)
{
    const struct node_param *p = node_query_get(q, "encoding");
    *b64 = false;
    if (p == NULL)
        return 0;
    if (kv_slice_eq(p->value, kv_slice_make("base64", 6))) {
        *b64 = true;
        return 0;
    }
    if (kv_slice_eq(p->value, kv_slice_make("utf8", 4)))
        return 0;
    node_reply_error(r, 400, "bad_request", "encoding must be base64 or utf8");
    return -1;
}

/* ---- asynchronous writes ------------------------------------------------------------------------- */

struct node_guard;

struct node_write_job {
    h2o_multithread_message_t msg;
    struct node_req *r;   /* NULL once the request is gone */
    struct node_guard *guard;
    struct node_thread *th;
    node_write_reply_fn reply;
    int rc;
    struct triekv_write_result res;
    size_t arg_len;
    uint8_t arg[];
};

struct node_guard {
    struct node_write_job *job;
};

static void guard_dispose(void *p)
{
    struct node_guard *g = p;
    if (g->job)
        g->job->r = NULL; /* h2o is done with the request: the job must not touch it */
}

/* Engine thread: hand the result to the loop that owns the request. */
static void write_done(void *arg, int rc, const struct triekv_write_result *res)
{
    struct node_write_job *j = arg;
    j->rc = rc;
    j->res = *res;
    h2o_multithread_send_message(&j->th->done_rx, &j->msg);
}

/* Loop thread: answer every completed write. */
static void on_write_done(h2o_multithread_receiver_t *rx, h2o_linklist_t *messages)
{
    (void)rx;
    while (!h2o_linklist_is_empty(messages)) {
        struct node_write_job *j = H2O_STRUCT_FROM_MEMBER(struct node_write_job, msg.link, messages->next);
        h2o_linklist_unlink(&j->msg.link);
        j->th->writes_in_flight--;
        if (j->r != NULL) {
            j->guard->job = NULL;
            j->reply(j->r, j->rc, &j->res, j->arg);
        }
        free(j);
    }
}

void node_write(struct node_req *r, struct triekv_batch *b, node_write_reply_fn reply, const void *arg,
                size_t arg_len)
{
    /* Most commits need no fsync and find the pipeline idle: commit here and answer at once, with
     * no hand-off to the committer thread and back. Anything that would wait goes async. */
    struct triekv_write_result res;
    int rc = triekv_write_nowait(r->node->db, b, &res);
    if (rc != KV_E_BUSY) {
        triekv_batch_destroy(b);
        reply(r, rc, &res, arg);
        return;
    }
    struct node_write_job *j = kv_calloc(1, sizeof *j + arg_len);
    j->r = r;
    j->th = r->th;
    j->reply = reply;
    j->arg_len = arg_len;
    if (arg_len)
        memcpy(j->arg, arg, arg_len);
    j->guard = h2o_mem_alloc_shared(&r->req->pool, sizeof *j->guard, guard_dispose);
    j->guard->job = j;
    r->th->writes_in_flight++;
    triekv_write_async(r->node->db, b, write_done, j);
}

/* ---- routing ------------------------------------------------------------------------------------- */

struct node_handler_ref {
    h2o_handler_t super;
    struct node *node;
};

static bool path_is(h2o_iovec_t path, const char *p)
{
    return h2o_memis(path.base, path.len, p, strlen(p));
}

/* A fixed endpoint: the allowed methods and the handler. */
static void route_fixed(struct node_req *r, enum node_ep ep, const char *allow, void (*fn)(struct node_req *))
{
    r->ep = ep;
    char m[16];
    snprintf(m, sizeof m, "%.*s", (int)(r->req->method.len < 15 ? r->req->method.len : 15), r->req->method.base);
    /* allow is "GET, HEAD" or "POST": match whole words */
    const char *hit = strstr(allow, m);
    size_t ml = strlen(m);
    if (ml == 0 || hit == NULL || (hit != allow && hit[-1] != ' ') || (hit[ml] != 0 && hit[ml] != ',')) {
        node_reply_method(r, allow);
        return;
    }
    fn(r);
}

static void dispatch(struct node_req *r)
{
    h2o_req_t *req = r->req;
    h2o_iovec_t path = h2o_iovec_init(req->path.base, req->query_at == SIZE_MAX ? req->path.len : req->query_at);
    if (path.len > 7 && memcmp(path.base, "http://", 7) == 0) { /* absolute form: GET http://host/kv/x */
        const char *slash = memchr(path.base + 7, '/', path.len - 7);
        size_t skip = slash ? (size_t)(slash - path.base) : path.len;
        path = h2o_iovec_init(path.base + skip, path.len - skip);
    }

    if (path.len > 4 && memcmp(path.base, "/kv/", 4) == 0) {
        struct kv_buf key = {0};
        if (kv_percent_decode(path.base + 4, path.len - 4, false, &key) != KV_OK) {
            r->ep = EP_KV_GET;
            node_reply_error(r, 400, "bad_request", "the key in the path has a malformed %%-escape");
        } else {
            uint8_t *k = h2o_mem_alloc_pool(&req->pool, key.len ? key.len : 1);
            memcpy(k, key.ptr, key.len);
            node_handle_kv(r, kv_slice_make(k, key.len));
        }
        kv_buf_free(&key);
    } else if (path_is(path, "/kv/") || path_is(path, "/kv")) {
        r->ep = EP_KV_GET;
        node_reply_error(r, 400, "key_empty", "the key is empty: use /kv/{key} with a percent-encoded key");
    } else if (path_is(path, "/bulk")) {
        route_fixed(r, EP_BULK, "POST", node_handle_bulk);
    } else if (path_is(path, "/bulk/range")) {
        route_fixed(r, EP_BULK_RANGE, "GET, HEAD", node_handle_range);
    } else if (path_is(path, "/bulk/get")) {
        route_fixed(r, EP_BULK_GET, "POST", node_handle_bulk_get);
    } else if (path_is(path, "/bulk/delete")) {
        route_fixed(r, EP_BULK_DELETE, "POST", node_handle_bulk_delete);
    } else if (path_is(path, "/stats")) {
        route_fixed(r, EP_STATS, "GET, HEAD", node_handle_stats);
    } else if (path_is(path, "/metrics")) {
        route_fixed(r, EP_METRICS, "GET, HEAD", node_handle_metrics);
    } else if (path_is(path, "/health")) {
        route_fixed(r, EP_HEALTH, "GET, HEAD", node_handle_health);
    } else {
        node_reply_error(r, 404, "not_found", "no such endpoint: %.*s", (int)(path.len > 200 ? 200 : path.len),
                         path.base);
    }
}

/* Read-your-writes: a read that names a seq this node has not reached waits for it (bounded). */
static void min_seq_ready(struct node_req *r, bool timed_out, uint64_t seq, const void *arg)
{
    (void)arg;
    if (!timed_out) {
        dispatch(r);
        return;
    }
    struct triekv_stats st;
    triekv_stats(r->node->db, &st);
    node_reply_error(r, 503, "stale_replica",
                     "this node has seq %llu, behind the %llu asked for, after waiting %lld ms; retry, or read "
                     "from the main",
                     (unsigned long long)st.seq, (unsigned long long)seq,
                     (long long)r->node->cfg.replication_read_wait_ms);
}

static bool is_read(h2o_req_t *req)
{
    return h2o_memis(req->method.base, req->method.len, H2O_STRLIT("GET")) ||
           h2o_memis(req->method.base, req->method.len, H2O_STRLIT("HEAD")) ||
           (req->path.len >= 9 && memcmp(req->path.base, "/bulk/get", 9) == 0);
}

static int on_req(h2o_handler_t *self, h2o_req_t *req)
{
    struct node *n = ((struct node_handler_ref *)self)->node;
    struct node_thread *th = h2o_context_get_handler_context(req->conn->ctx, self);
    struct node_req *r = h2o_mem_alloc_pool(&req->pool, sizeof *r);
    *r = (struct node_req){.req = req, .th = th, .node = n, .ep = EP_OTHER, .start_ns = kv_now_ns()};
    ssize_t h = h2o_find_header_by_str(&req->headers, H2O_STRLIT("x-triekv-min-seq"), -1);
    if (h >= 0 && is_read(req)) {
        h2o_iovec_t v = req->headers.entries[h].value;
        uint64_t want = 0;
        bool ok = v.len > 0 && v.len <= 20;
        for (size_t i = 0; ok && i < v.len; i++) {
            ok = v.base[i] >= '0' && v.base[i] <= '9' && want <= (UINT64_MAX - 9) / 10;
            want = want * 10 + (uint64_t)(v.base[i] - '0');
        }
        if (!ok) {
            node_reply_error(r, 400, "bad_request", "X-Triekv-Min-Seq must be a sequence number");
            return 0;
        }
        struct triekv_stats st;
        triekv_stats(n->db, &st);
        if (st.seq < want) {
            if (n->cfg.replication_read_wait_ms == 0)
                min_seq_ready(r, true, want, NULL);
            else
                node_seq_wait(r, want, min_seq_ready, NULL, 0);
            return 0;
        }
    }
    if (n->receiver && triekv_snapshot_active(n->db) && is_read(req) &&
        !(req->path.len >= 7 && (memcmp(req->path.base, "/health", 7) == 0 || memcmp(req->path.base, "/stats", 6) == 0 ||
                                 memcmp(req->path.base, "/metrics", 8) == 0))) {
        node_reply_error(r, 503, "resyncing", "this replica is loading a snapshot from its main; retry shortly");
        return 0;
    }
    dispatch(r);
    return 0;
}

/* ---- threads, accepting ------------------------------------------------------------------------- */

/* One client connection, tracked so shutdown can tell idle ones from ones mid-request. */
struct node_conn {
    h2o_linklist_t link;
    h2o_socket_t *sock;
    struct node_thread *th;
};

static void on_conn_close(void *data)
{
    struct node_conn *c = data;
    h2o_linklist_unlink(&c->link);
    c->th->connections--;
    atomic_fetch_sub(&c->th->node->connections, 1);
    free(c);
}

/* Shutdown: a connection with nothing of a request received is idle; half-closing it makes h2o
 * read EOF and close it through its normal path. One that has part of a request keeps the grace. */
static void close_idle(struct node_thread *th)
{
    for (h2o_linklist_t *l = th->conns.next; l != &th->conns; l = l->next) {
        struct node_conn *c = H2O_STRUCT_FROM_MEMBER(struct node_conn, link, l);
        if (c->sock->input == NULL || c->sock->input->size == 0)
            shutdown(h2o_socket_get_fd(c->sock), SHUT_RD);
    }
}

static void on_accept(h2o_socket_t *listener, const char *err)
{
    struct node_thread *th = listener->data;
    if (err != NULL)
        return;
    for (int i = 0; i < ACCEPTS_PER_WAKEUP; i++) {
        h2o_socket_t *sock = h2o_evloop_socket_accept(listener);
        if (sock == NULL)
            return;
        if (atomic_load(&th->node->connections) >= th->node->cfg.max_connections) {
            atomic_fetch_add_explicit(&th->metrics.connections_refused, 1, memory_order_relaxed);
            h2o_socket_close(sock); /* over the cap: refuse rather than queue without bound */
            continue;
        }
        atomic_fetch_add(&th->node->connections, 1);
        atomic_fetch_add_explicit(&th->metrics.connections_accepted, 1, memory_order_relaxed);
        th->connections++;
        struct node_conn *c = kv_calloc(1, sizeof *c);
        c->sock = sock;
        c->th = th;
        h2o_linklist_insert(&th->conns, &c->link);
        sock->on_close.cb = on_conn_close;
        sock->on_close.data = c;
        h2o_accept(&th->accept_ctx, sock);
    }
}

static void on_wake(h2o_multithread_receiver_t *rx, h2o_linklist_t *messages)
{
    (void)rx;
    (void)messages; /* NULL messages only wake the loop; nothing is queued */
}

static void on_context_init(h2o_handler_t *self, h2o_context_t *ctx)
{
    struct node_thread *th = H2O_STRUCT_FROM_MEMBER(struct node_thread, ctx, ctx);
    h2o_context_set_handler_context(ctx, self, th);
}

static void *thread_main(void *arg)
{
    struct node_thread *th = arg;
    struct node *n = th->node;
    th->loop = h2o_evloop_create();
    h2o_linklist_init_anchor(&th->conns);
    h2o_context_init(&th->ctx, th->loop, &n->globalconf);
    th->accept_ctx.ctx = &th->ctx;
    th->accept_ctx.hosts = n->globalconf.hosts;
    h2o_multithread_register_receiver(th->ctx.queue, &th->done_rx, on_write_done);
    h2o_multithread_register_receiver(th->ctx.queue, &th->wake_rx, on_wake);
    h2o_multithread_register_receiver(th->ctx.queue, &th->seq_rx, node_seq_on_ready);
    h2o_timeout_init(th->loop, &th->wait_timeout,
                     (uint64_t)(n->cfg.is_replica ? n->cfg.replication_read_wait_ms : n->cfg.replication_timeout_ms));
    int fd = dup(n->listen_fd);
    KV_ASSERT(fd >= 0);
    th->listener = h2o_evloop_socket_create(th->loop, fd, H2O_SOCKET_FLAG_DONT_READ);
    th->listener->data = th;
    h2o_socket_read_start(th->listener, on_accept);
    pthread_barrier_wait(&n->ready);

    while (!atomic_load(&n->stopping))
        h2o_evloop_run(th->loop, INT32_MAX); /* -1 on EINTR: just go round */

    /* drain */
    h2o_socket_read_stop(th->listener);
    h2o_socket_close(th->listener);
    h2o_context_request_shutdown(&th->ctx);
    /* Idle keep-alive connections close now; a request still arriving gets a short grace to
     * finish (h2o's request timeout counts from when the connection started waiting for it). */
    th->ctx.http1.req_timeout.timeout = (uint64_t)(n->cfg.request_timeout_ms < NODE_SHUTDOWN_GRACE_MS
                                                       ? n->cfg.request_timeout_ms
                                                       : NODE_SHUTDOWN_GRACE_MS);
    close_idle(th);
    uint64_t deadline = kv_now_ms() + NODE_DRAIN_MS;
    while ((th->connections > 0 || th->writes_in_flight > 0) && kv_now_ms() < deadline)
        h2o_evloop_run(th->loop, 10);
    if (th->connections > 0 || th->writes_in_flight > 0) {
        kv_log_warn(NODE_COMPONENT, "thread %d: %llu connections still open after %d ms; leaving them", th->idx,
                    (unsigned long long)th->connections, NODE_DRAIN_MS);
        return NULL; /* h2o asserts on disposing a context with live connections: skip it */
    }
    h2o_multithread_unregister_receiver(th->ctx.queue, &th->done_rx);
    h2o_multithread_unregister_receiver(th->ctx.queue, &th->wake_rx);
    h2o_multithread_unregister_receiver(th->ctx.queue, &th->seq_rx);
    h2o_timeout_dispose(th->loop, &th->wait_timeout);
    h2o_context_dispose(&th->ctx);
    h2o_evloop_destroy(th->loop);
    return NULL;
}

/* ---- start-up ------------------------------------------------------------------------------------ */

static int listen_on(const char *bind_addr, int port, char *err, size_t errlen)
{
    struct sockaddr_storage ss = {0};
    socklen_t len;
    struct sockaddr_in *a4 = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)&ss;
    if (inet_pton(AF_INET, bind_addr, &a4->sin_addr) == 1) {
        a4->sin_family = AF_INET;
        a4->sin_port = htons((uint16_t)port);
        len = sizeof *a4;
    } else if (inet_pton(AF_INET6, bind_addr, &a6->sin6_addr) == 1) {
        a6->sin6_family = AF_INET6;
        a6->sin6_port = htons((uint16_t)port);
        len = sizeof *a6;
    } else {
        snprintf(err, errlen, "bad bind address %s", bind_addr);
        return -1;
    }
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
        bind(fd, (struct sockaddr *)&ss, len) != 0 || listen(fd, SOMAXCONN) != 0) {
        snprintf(err, errlen, "cannot listen on %s port %d: %s", bind_addr, port, strerror(errno));
        if (fd >= 0)
            close(fd);
        return -1;
    }
    return fd;
}

static void setup_h2o(struct node *n, struct node_handler_ref **handler)
{
    h2o_config_init(&n->globalconf);
    n->globalconf.server_name = h2o_iovec_init(H2O_STRLIT("triekv/" TRIEKV_VERSION));
    n->globalconf.http1.upgrade_to_http2 = 0;     /* plaintext HTTP/1 only: see decision 0005 */
    n->globalconf.http2.callbacks.request_shutdown = NULL; /* no HTTP/2: no GOAWAY timer at shutdown */
    n->globalconf.http1.req_timeout = (uint64_t)n->cfg.request_timeout_ms;
    /* The largest body any endpoint accepts; h2o answers 413 before reading a larger one. */
    int64_t body_max = n->cfg.max_value_size > n->cfg.max_bulk_bytes ? n->cfg.max_value_size : n->cfg.max_bulk_bytes;
    n->globalconf.max_request_entity_size = (size_t)body_max + 1;
    h2o_hostconf_t *host = h2o_config_register_host(&n->globalconf, h2o_iovec_init(H2O_STRLIT("default")), 65535);
    h2o_pathconf_t *path = h2o_config_register_path(host, "/", 0);
    node_json_errors_register(path);
    node_json_errors_register(&host->fallback_path); /* where h2o's early errors are bound */
    *handler = (struct node_handler_ref *)h2o_create_handler(path, sizeof **handler);
    (*handler)->super.on_req = on_req;
    (*handler)->super.on_context_init = on_context_init;
    (*handler)->node = n;
}

/* Binds first (a port in use fails fast, before the store is touched), then opens the store;
 * connections wait in the listen backlog while recovery runs. */
static int start(struct node *n, char *err, size_t errlen)
{
    n->listen_fd = listen_on(n->cfg.bind, (int)n->cfg.port, err, errlen);
    if (n->listen_fd < 0)
        return -1;
    struct triekv_options o;
    node_config_engine(&n->cfg, &o);
    int rc = triekv_open(n->cfg.data_dir, &o, &n->db);
    if (rc != KV_OK) {
        snprintf(err, errlen, "cannot open the store in %s: %s", n->cfg.data_dir, kv_strerror(rc));
        return -1;
    }
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    n->nthreads = n->cfg.threads > 0 ? (int)n->cfg.threads : (int)(cores > 0 ? cores : 1);
    return 0;
}

static void log_started(struct node *n)
{
    struct triekv_stats st;
    triekv_stats(n->db, &st);
    if (n->cfg.replicas.n)
        kv_log_info(NODE_COMPONENT, "replicating to %zu replica(s), %s mode%s, cluster %s", n->cfg.replicas.n,
                    n->cfg.replication_mode, n->sync_mode ? " (writes wait for replicas)" : "", n->cfg.cluster_id);
    char repl[96] = "";
    if (n->cfg.is_replica)
        snprintf(repl, sizeof repl, " (reads only), replication port %lld", (long long)n->cfg.replication_port);
    kv_log_info(NODE_COMPONENT,
                "serving: role %s, port %lld on %s%s, data dir %s, fsync %s, i/o %s, cache %lld MiB, %d threads, "
                "%llu keys",
                n->cfg.is_replica ? "replica" : "main", (long long)n->cfg.port, n->cfg.bind, repl, n->cfg.data_dir,
                n->cfg.fsync, st.io_backend, (long long)n->cfg.cache_size, n->nthreads, (unsigned long long)st.keys);
}

static size_t probe_sink(char *p, size_t size, size_t n, void *arg)
{
    (void)p;
    (void)arg;
    return size * n;
}

/* triekv-server --probe URL: exit 0 when URL answers 200 within 2 s (container health checks,
 * without a curl binary in the image). */
static int probe(const char *url)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
    CURL *c = curl_easy_init();
    long status = 0;
    CURLcode rc = CURLE_FAILED_INIT;
    if (c) {
        curl_easy_setopt(c, CURLOPT_URL, url);
        curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 2000L);
        curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, probe_sink);
        rc = curl_easy_perform(c);
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
        curl_easy_cleanup(c);
    }
    curl_global_cleanup();
    if (rc != CURLE_OK)
        fprintf(stderr, "triekv-server: probe %s: %s\n", url, curl_easy_strerror(rc));
    else if (status != 200)
        fprintf(stderr, "triekv-server: probe %s: HTTP %ld\n", url, status);
    return rc == CURLE_OK && status == 200 ? 0 : 1;
}

int node_main(int argc, char **argv)
{
    if (argc == 3 && strcmp(argv[1], "--probe") == 0)
        return probe(argv[2]);
    struct node *n = kv_calloc(1, sizeof *n);
    char err[KV_CFG_ERR_MAX];
    n->listen_fd = -1;
    int rc = node_config_load(&n->cfg, argc, argv, err);
    if (rc != 0) {
        if (rc < 0)
            fprintf(stderr, "triekv-server: %s\n", err);
        node_config_free(&n->cfg);
        free(n);
        return rc < 0 ? (strncmp(err, "usage:", 6) == 0 ? 2 : 1) : 0;
    }
    if (n->cfg.check_only) {
        printf("triekv-server: the configuration is valid (role %s, port %lld)\n",
               n->cfg.is_replica ? "replica" : "main", (long long)n->cfg.port);
        node_config_free(&n->cfg);
        free(n);
        return 0;
    }
    enum kv_log_level lvl;
    kv_log_parse_level(n->cfg.log_level, &lvl);
    kv_log_set_level(lvl);
    n->started_ms = kv_now_ms();
    pthread_mutex_init(&n->waiters_mu, NULL);
    n->sync_mode = !n->cfg.is_replica && n->cfg.replicas.n > 0 && strcmp(n->cfg.replication_mode, "sync") == 0;
    if (n->cfg.advertise_url[0]) {
        snprintf(n->advertise_url, sizeof n->advertise_url, "%s", n->cfg.advertise_url);
    } else {
        char host[200] = "localhost";
        gethostname(host, sizeof host - 1);
        snprintf(n->advertise_url, sizeof n->advertise_url, "http://%s:%lld", host, (long long)n->cfg.port);
    }

    /* signals: SIGPIPE ignored (h2o writes with writev); SIGINT/SIGTERM taken by sigwait below */
    signal(SIGPIPE, SIG_IGN);
    sigset_t stop_set;
    sigemptyset(&stop_set);
    sigaddset(&stop_set, SIGINT);
    sigaddset(&stop_set, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &stop_set, NULL);

    if (start(n, err, sizeof err) != 0) {
        fprintf(stderr, "triekv-server: %s\n", err);
        if (n->listen_fd >= 0)
            close(n->listen_fd);
        triekv_close(n->db);
        node_config_free(&n->cfg);
        free(n);
        return 1;
    }
    struct node_handler_ref *handler;
    setup_h2o(n, &handler);
    n->threads = kv_calloc((size_t)n->nthreads, sizeof *n->threads);
    pthread_barrier_init(&n->ready, NULL, (unsigned)n->nthreads + 1);
    for (int i = 0; i < n->nthreads; i++) {
        n->threads[i].node = n;
        n->threads[i].idx = i;
        KV_ASSERT(pthread_create(&n->threads[i].tid, NULL, thread_main, &n->threads[i]) == 0);
    }
    pthread_barrier_wait(&n->ready);
    if (node_repl_start(n, err, sizeof err) != 0) {
        fprintf(stderr, "triekv-server: %s\n", err);
        atomic_store(&n->stopping, true);
        for (int i = 0; i < n->nthreads; i++)
            h2o_multithread_send_message(&n->threads[i].wake_rx, NULL);
        for (int i = 0; i < n->nthreads; i++)
            pthread_join(n->threads[i].tid, NULL);
        triekv_close(n->db);
        return 1;
    }
    log_started(n);

    int sig = 0;
    sigwait(&stop_set, &sig);
    kv_log_info(NODE_COMPONENT, "%s: stopping (finishing requests in flight, then a checkpoint)",
                sig == SIGINT ? "SIGINT" : "SIGTERM");
    atomic_store(&n->stopping, true);
    for (int i = 0; i < n->nthreads; i++)
        h2o_multithread_send_message(&n->threads[i].wake_rx, NULL);
    for (int i = 0; i < n->nthreads; i++)
        pthread_join(n->threads[i].tid, NULL);
    node_repl_stop(n);
    close(n->listen_fd);
    rc = triekv_close(n->db);
    if (rc != KV_OK)
        kv_log_error(NODE_COMPONENT, "final checkpoint failed: %s (the commit log still has every write)",
                     kv_strerror(rc));
    kv_log_info(NODE_COMPONENT, "stopped");
    pthread_barrier_destroy(&n->ready);
    pthread_mutex_destroy(&n->waiters_mu);
    free(n->threads);
    h2o_config_dispose(&n->globalconf);
    node_config_free(&n->cfg);
    free(n);
    return 0;
}
