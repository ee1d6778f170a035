/* node/node_repl.c - a node's part in replication: starting the senders on a main, serving the
 * replication port on a replica, and the replication figures of /stats and /metrics.
 *
 * The replication port has its own h2o configuration, loop and thread: its endpoints are never
 * reachable on the public port, its body limit fits the largest record, and its one thread
 * applies batches strictly in arrival order. Every request must come from a main of this
 * replica's cluster (replication/repl_recv.c decides); refusals are logged, at most one line per
 * reason every 10 s. */
#include "node/node_int.h"
#include "common/kv_assert.h"
#include "common/kv_codec.h"
#include "common/kv_log.h"
#include "common/kv_time.h"
#include "replication/repl.h"

#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define REFUSAL_LOG_MS 10000 /* at most one refusal line per this long */

struct node_repl_server {
    struct node *node;
    h2o_globalconf_t conf;
    h2o_evloop_t *loop;
    h2o_context_t ctx;
    h2o_accept_ctx_t accept_ctx;
    h2o_socket_t *listener;
    h2o_multithread_receiver_t wake_rx;
    int fd;
    pthread_t tid;
    uint64_t connections;
    uint64_t refusal_logged_ms;
};

struct repl_handler {
    h2o_handler_t super;
    struct node_repl_server *srv;
};

/* ---- replies ----------------------------------------------------------------------------------- */

static void send_json(h2o_req_t *req, int status, const char *reason, const char *body)
{
    req->res.status = status;
    req->res.reason = reason;
    req->res.content_length = strlen(body);
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL, H2O_STRLIT("application/json"));
    h2o_send_inline(req, body, strlen(body));
}

static void send_error(h2o_req_t *req, int status, const char *code, const char *msg)
{
    struct kv_buf b = {0};
    kv_buf_printf(&b, "{\"error\":\"%s\",\"message\":", code);
    kv_json_append_string(&b, (const uint8_t *)msg, strlen(msg));
    kv_buf_append_str(&b, "}\n");
    kv_buf_append_byte(&b, 0);
    const char *reason = status == 403 ? "Forbidden" : status == 409 ? "Conflict" : status == 404 ? "Not Found"
                         : status >= 500                                          ? "Internal Server Error"
                                                                                  : "Bad Request";
    send_json(req, status, reason, (const char *)b.ptr);
    kv_buf_free(&b);
}

static void send_applied(h2o_req_t *req, uint64_t applied)
{
    char body[64];
    snprintf(body, sizeof body, "{\"applied_seq\":%" PRIu64 "}\n", applied);
    send_json(req, 200, "OK", body);
}

/* ---- requests ------------------------------------------------------------------------------------ */

static const char *header(h2o_req_t *req, const char *lname, size_t *len)
{
    ssize_t i = h2o_find_header_by_str(&req->headers, lname, strlen(lname), -1);
    if (i < 0)
        return NULL;
    *len = req->headers.entries[i].value.len;
    return req->headers.entries[i].value.base;
}

static uint64_t parse_u64(const char *p, size_t n, bool *ok)
{
    uint64_t v = 0;
    *ok = n > 0 && n <= 20;
    for (size_t i = 0; *ok && i < n; i++) {
        *ok = p[i] >= '0' && p[i] <= '9' && v <= (UINT64_MAX - 9) / 10;
        v = v * 10 + (uint64_t)(p[i] - '0');
    }
    return v;
}

static bool authorized(struct node_repl_server *srv, h2o_req_t *req)
{
    size_t cl = 0, tl = 0;
    const char *cluster = header(req, "x-triekv-cluster", &cl);
    const char *token = header(req, "x-triekv-token", &tl);
    char why[300];
    if (repl_receiver_check(srv->node->receiver, cluster, cl, token, tl, why, sizeof why) == KV_OK)
        return true;
    uint64_t now = kv_now_ms();
    if (now - srv->refusal_logged_ms > REFUSAL_LOG_MS) {
        srv->refusal_logged_ms = now;
        struct sockaddr_storage ss;
        char peer[64] = "?";
        socklen_t sl = req->conn->callbacks->get_peername(req->conn, (struct sockaddr *)&ss);
        if (sl && ss.ss_family == AF_INET)
            inet_ntop(AF_INET, &((struct sockaddr_in *)&ss)->sin_addr, peer, sizeof peer);
        else if (sl && ss.ss_family == AF_INET6)
            inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&ss)->sin6_addr, peer, sizeof peer);
        kv_log_warn(NODE_COMPONENT, "replication request from %s refused: %s", peer, why);
    }
    send_error(req, 403, "forbidden", why);
    return false;
}

static void note_main(struct node_repl_server *srv, h2o_req_t *req)
{
    size_t ul = 0, sl = 0;
    const char *url = header(req, "x-triekv-main", &ul);
    const char *seq = header(req, "x-triekv-main-seq", &sl);
    bool ok = false;
    uint64_t s = seq ? parse_u64(seq, sl, &ok) : 0;
    repl_receiver_heard(srv->node->receiver, url, url ? ul : 0, ok ? s : 0);
}

static int on_repl_req(h2o_handler_t *self, h2o_req_t *req)
{
    struct node_repl_server *srv = ((struct repl_handler *)self)->srv;
    struct node *n = srv->node;
    size_t plen = req->query_at == SIZE_MAX ? req->path.len : req->query_at;
    h2o_iovec_t path = h2o_iovec_init(req->path.base, plen);
    bool post = h2o_memis(req->method.base, req->method.len, H2O_STRLIT("POST"));
    bool get = h2o_memis(req->method.base, req->method.len, H2O_STRLIT("GET"));
    if (!authorized(srv, req))
        return 0;
    note_main(srv, req);
    uint64_t applied;
    int rc;
    if (get && h2o_memis(path.base, path.len, H2O_STRLIT("/replication/state"))) {
        struct triekv_stats st;
        triekv_stats(n->db, &st);
        struct kv_buf b = {0};
        kv_buf_printf(&b, "{\"applied_seq\":%" PRIu64 ",\"resyncing\":%s,\"cluster_id\":", st.seq,
                      triekv_snapshot_active(n->db) ? "true" : "false");
        kv_json_append_string(&b, (const uint8_t *)n->cfg.cluster_id, strlen(n->cfg.cluster_id));
        kv_buf_append_str(&b, "}\n");
        kv_buf_append_byte(&b, 0);
        send_json(req, 200, "OK", (const char *)b.ptr);
        kv_buf_free(&b);
        return 0;
    }
    if (!post) {
        send_error(req, 405, "method_not_allowed", "replication requests are GET /replication/state or POST");
        return 0;
    }
    const uint8_t *body = (const uint8_t *)req->entity.base;
    size_t len = req->entity.base ? req->entity.len : 0;
    if (h2o_memis(path.base, path.len, H2O_STRLIT("/replication/apply"))) {
        rc = repl_receiver_apply(n->receiver, body, len, &applied);
        node_seq_advance(n, applied);
        if (rc == KV_OK)
            send_applied(req, applied);
        else if (rc == KV_E_INVALID)
            send_error(req, 409, "gap", "records out of sequence: resend from applied_seq");
        else
            send_error(req, node_status_of(rc), kv_errname(rc), kv_strerror(rc));
        if (rc != KV_OK && rc != KV_E_INVALID)
            kv_log_warn(NODE_COMPONENT, "applying replicated records failed: %s", kv_strerror(rc));
        return 0;
    }
    if (h2o_memis(path.base, path.len, H2O_STRLIT("/replication/snapshot/begin"))) {
        rc = repl_receiver_snapshot_begin(n->receiver);
        if (rc == KV_OK)
            send_json(req, 200, "OK", "{}\n");
        else
            send_error(req, 500, kv_errname(rc), kv_strerror(rc));
        return 0;
    }
    if (h2o_memis(path.base, path.len, H2O_STRLIT("/replication/snapshot/chunk"))) {
        uint32_t items;
        rc = repl_receiver_snapshot_chunk(n->receiver, body, len, &items);
        if (rc == KV_OK)
            send_json(req, 200, "OK", "{}\n");
        else
            send_error(req, rc == KV_E_CORRUPT || rc == KV_E_INVALID ? 400 : 500, kv_errname(rc), kv_strerror(rc));
        return 0;
    }
    if (h2o_memis(path.base, path.len, H2O_STRLIT("/replication/snapshot/end"))) {
        const char *q = req->query_at == SIZE_MAX ? NULL : req->path.base + req->query_at + 1;
        size_t ql = q ? req->path.len - req->query_at - 1 : 0;
        bool ok = q && ql > 4 && memcmp(q, "seq=", 4) == 0;
        uint64_t seq = ok ? parse_u64(q + 4, ql - 4, &ok) : 0;
        if (!ok) {
            send_error(req, 400, "bad_request", "snapshot/end needs ?seq=N");
            return 0;
        }
        rc = repl_receiver_snapshot_end(n->receiver, seq);
        node_seq_advance(n, seq);
        if (rc == KV_OK)
            send_applied(req, seq);
        else
            send_error(req, 500, kv_errname(rc), kv_strerror(rc));
        return 0;
    }
    send_error(req, 404, "not_found", "no such replication endpoint");
    return 0;
}

/* ---- the server thread ----------------------------------------------------------------------------- */

static void on_conn_close(void *data)
{
    ((struct node_repl_server *)data)->connections--;
}

static void on_accept(h2o_socket_t *listener, const char *err)
{
    struct node_repl_server *srv = listener->data;
    if (err != NULL)
        return;
    for (int i = 0; i < 16; i++) {
        h2o_socket_t *sock = h2o_evloop_socket_accept(listener);
        if (sock == NULL)
            return;
        if (srv->connections >= 64) { /* a main per cluster: a handful of connections at most */
            h2o_socket_close(sock);
            continue;
        }
        srv->connections++;
        sock->on_close.cb = on_conn_close;
        sock->on_close.data = srv;
        h2o_accept(&srv->accept_ctx, sock);
    }
}

static void on_wake(h2o_multithread_receiver_t *rx, h2o_linklist_t *messages)
{
    (void)rx;
    (void)messages;
}

static void *repl_thread(void *arg)
{
    struct node_repl_server *srv = arg;
    while (!atomic_load(&srv->node->stopping))
        h2o_evloop_run(srv->loop, INT32_MAX);
    h2o_socket_read_stop(srv->listener);
    h2o_socket_close(srv->listener);
    h2o_context_request_shutdown(&srv->ctx);
    srv->ctx.http1.req_timeout.timeout = 0;
    uint64_t deadline = kv_now_ms() + NODE_DRAIN_MS;
    while (srv->connections > 0 && kv_now_ms() < deadline)
        h2o_evloop_run(srv->loop, 10);
    if (srv->connections > 0)
        return NULL; /* h2o asserts on disposing a context with live connections */
    h2o_multithread_unregister_receiver(srv->ctx.queue, &srv->wake_rx);
    h2o_context_dispose(&srv->ctx);
    h2o_evloop_destroy(srv->loop);
    return NULL;
}

static int listen_repl(struct node *n, char *err, size_t errlen)
{
    struct sockaddr_storage ss = {0};
    socklen_t len;
    struct sockaddr_in *a4 = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)&ss;
    if (inet_pton(AF_INET, n->cfg.bind, &a4->sin_addr) == 1) {
        a4->sin_family = AF_INET;
        a4->sin_port = htons((uint16_t)n->cfg.replication_port);
        len = sizeof *a4;
    } else {
        KV_ASSERT(inet_pton(AF_INET6, n->cfg.bind, &a6->sin6_addr) == 1);
        a6->sin6_family = AF_INET6;
        a6->sin6_port = htons((uint16_t)n->cfg.replication_port);
        len = sizeof *a6;
    }
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
        bind(fd, (struct sockaddr *)&ss, len) != 0 || listen(fd, 64) != 0) {
        snprintf(err, errlen, "cannot listen on %s replication port %lld: %s", n->cfg.bind,
                 (long long)n->cfg.replication_port, strerror(errno));
        if (fd >= 0)
            close(fd);
        return -1;
    }
    return fd;
}

static void on_ack(void *arg)
{
    struct node *n = arg;
    node_seq_advance(n, node_seq_current(n));
}

uint64_t node_seq_current(struct node *n)
{
    if (n->sender && n->sync_mode)
        return repl_acked_by(n->sender, (int)n->cfg.min_replica_acks);
    struct triekv_stats st;
    triekv_stats(n->db, &st);
    return st.seq;
}

int node_repl_start(struct node *n, char *err, size_t errlen)
{
    if (!n->cfg.is_replica) {
        if (n->cfg.replicas.n == 0)
            return 0;
        struct repl_config rc = {
            .cluster_id = n->cfg.cluster_id,
            .token = n->cfg.replication_token,
            .main_url = n->advertise_url,
            .replicas = n->cfg.replicas.v,
            .nreplicas = n->cfg.replicas.n,
            .batch_bytes = (uint64_t)n->cfg.replication_batch_bytes,
            .retention_bytes = (uint64_t)n->cfg.replication_retention_mb << 20,
            .backoff_min_ms = 50,
            .backoff_max_ms = 5000,
            .timeout_ms = (uint32_t)n->cfg.replication_timeout_ms,
        };
        int r = repl_sender_start(n->db, &rc, &n->sender);
        if (r != KV_OK) {
            snprintf(err, errlen, "cannot start replication: %s", kv_strerror(r));
            return -1;
        }
        repl_sender_on_ack(n->sender, on_ack, n);
        return 0;
    }
    repl_receiver_create(n->db, n->cfg.cluster_id, n->cfg.replication_token, &n->receiver);
    struct node_repl_server *srv = kv_calloc(1, sizeof *srv);
    srv->node = n;
    srv->fd = listen_repl(n, err, errlen);
    if (srv->fd < 0) {
        free(srv);
        return -1;
    }
    h2o_config_init(&srv->conf);
    srv->conf.server_name = h2o_iovec_init(H2O_STRLIT("triekv-replica/" TRIEKV_VERSION));
    srv->conf.http1.upgrade_to_http2 = 0;
    srv->conf.http2.callbacks.request_shutdown = NULL;
    srv->conf.http1.req_timeout = (uint64_t)(n->cfg.replication_timeout_ms > 60000 ? n->cfg.replication_timeout_ms
                                                                                     : 60000);
    /* one record of the largest value, or a batch of records, with room for framing */
    uint64_t batch = (uint64_t)n->cfg.replication_batch_bytes;
    uint64_t rec = (uint64_t)n->cfg.max_value_size + (uint64_t)n->cfg.max_key_size + 4096;
    srv->conf.max_request_entity_size = (size_t)((batch > rec ? batch : rec) + (1u << 20));
    h2o_hostconf_t *host = h2o_config_register_host(&srv->conf, h2o_iovec_init(H2O_STRLIT("default")), 65535);
    h2o_pathconf_t *path = h2o_config_register_path(host, "/", 0);
    struct repl_handler *h = (struct repl_handler *)h2o_create_handler(path, sizeof *h);
    h->super.on_req = on_repl_req;
    h->srv = srv;
    srv->loop = h2o_evloop_create();
    h2o_context_init(&srv->ctx, srv->loop, &srv->conf);
    srv->accept_ctx.ctx = &srv->ctx;
    srv->accept_ctx.hosts = srv->conf.hosts;
    h2o_multithread_register_receiver(srv->ctx.queue, &srv->wake_rx, on_wake);
    srv->listener = h2o_evloop_socket_create(srv->loop, srv->fd, H2O_SOCKET_FLAG_DONT_READ);
    srv->listener->data = srv;
    h2o_socket_read_start(srv->listener, on_accept);
    n->rsrv = srv;
    KV_ASSERT(pthread_create(&srv->tid, NULL, repl_thread, srv) == 0);
    return 0;
}

void node_repl_stop(struct node *n)
{
    if (n->sender) {
        repl_sender_stop(n->sender);
        n->sender = NULL;
    }
    if (n->rsrv) {
        h2o_multithread_send_message(&n->rsrv->wake_rx, NULL);
        pthread_join(n->rsrv->tid, NULL);
        h2o_config_dispose(&n->rsrv->conf);
        free(n->rsrv);
        n->rsrv = NULL;
    }
    repl_receiver_destroy(n->receiver);
    n->receiver = NULL;
}

/* ---- figures ------------------------------------------------------------------------------------- */

void node_repl_stats_json(struct node *n, struct kv_buf *b)
{
    kv_buf_append_str(b, "\"replication\":{");
    if (n->sender) {
        struct repl_replica_stats rs[REPL_MAX_REPLICAS];
        size_t cnt = repl_sender_stats(n->sender, rs, REPL_MAX_REPLICAS);
        kv_buf_printf(b, "\"role\":\"main\",\"mode\":\"%s\",\"min_replica_acks\":%lld,\"replicas\":[",
                      n->cfg.replication_mode, (long long)n->cfg.min_replica_acks);
        for (size_t i = 0; i < cnt; i++) {
            kv_buf_append_str(b, i ? ",{\"url\":" : "{\"url\":");
            kv_json_append_string(b, (const uint8_t *)rs[i].url, strlen(rs[i].url));
            kv_buf_printf(b,
                          ",\"state\":\"%s\",\"connected\":%s,\"acked_seq\":%" PRIu64 ",\"lag_records\":%" PRIu64
                          ",\"lag_bytes\":%" PRIu64 ",\"lag_seconds\":%.3f,\"retries\":%" PRIu64
                          ",\"snapshots\":%" PRIu64 ",\"batches_sent\":%" PRIu64 ",\"bytes_sent\":%" PRIu64
                          ",\"last_error\":",
                          rs[i].state, rs[i].connected ? "true" : "false", rs[i].acked_seq, rs[i].lag_records,
                          rs[i].lag_bytes, rs[i].lag_seconds, rs[i].retries, rs[i].snapshots, rs[i].batches_sent,
                          rs[i].bytes_sent);
            if (rs[i].last_error[0] && kv_utf8_valid((const uint8_t *)rs[i].last_error, strlen(rs[i].last_error)))
                kv_json_append_string(b, (const uint8_t *)rs[i].last_error, strlen(rs[i].last_error));
            else
                kv_buf_append_str(b, "null");
            kv_buf_append_byte(b, '}');
        }
        kv_buf_append_str(b, "]}");
    } else if (n->receiver) {
        struct repl_receiver_stats rs;
        repl_receiver_stats(n->receiver, &rs);
        char main[256];
        repl_receiver_main_url(n->receiver, main, sizeof main);
        kv_buf_printf(b,
                      "\"role\":\"replica\",\"applied_seq\":%" PRIu64 ",\"main_seq\":%" PRIu64
                      ",\"lag_records\":%" PRIu64 ",\"staleness_seconds\":%.3f,\"since_contact_seconds\":%.3f,"
                      "\"resyncing\":%s,\"batches\":%" PRIu64 ",\"records\":%" PRIu64 ",\"snapshots\":%" PRIu64
                      ",\"refused\":%" PRIu64 ",\"main_url\":",
                      rs.applied_seq, rs.main_seq, rs.main_seq > rs.applied_seq ? rs.main_seq - rs.applied_seq : 0,
                      rs.staleness_seconds, rs.since_contact_seconds, rs.resyncing ? "true" : "false", rs.batches,
                      rs.records, rs.snapshots, rs.refused);
        kv_json_append_string(b, (const uint8_t *)main, strlen(main));
        kv_buf_append_byte(b, '}');
    } else {
        kv_buf_append_str(b, "\"role\":\"standalone\"}");
    }
}

static void gauge(struct kv_buf *b, const char *name, const char *help, const char *type)
{
    kv_buf_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

void node_repl_metrics(struct node *n, struct kv_buf *b)
{
    if (n->sender) {
        struct repl_replica_stats rs[REPL_MAX_REPLICAS];
        size_t cnt = repl_sender_stats(n->sender, rs, REPL_MAX_REPLICAS);
        static const char *const names[][3] = {
            {"triekv_replica_connected", "1 when the last request to the replica succeeded.", "gauge"},
            {"triekv_replica_acked_seq", "Last seq the replica acknowledged.", "gauge"},
            {"triekv_replica_lag_records", "Batches the replica has not acknowledged.", "gauge"},
            {"triekv_replica_lag_bytes", "Commit-log bytes the replica has not acknowledged.", "gauge"},
            {"triekv_replica_lag_seconds", "Age of the oldest batch the replica has not acknowledged.", "gauge"},
            {"triekv_replica_retries_total", "Failed replication attempts.", "counter"},
            {"triekv_replica_snapshots_total", "Full resyncs sent.", "counter"},
        };
        for (size_t k = 0; k < 7; k++) {
            gauge(b, names[k][0], names[k][1], names[k][2]);
            for (size_t i = 0; i < cnt; i++) {
                double v = k == 0 ? rs[i].connected : k == 1 ? (double)rs[i].acked_seq : k == 2 ? (double)rs[i].lag_records
                           : k == 3 ? (double)rs[i].lag_bytes : k == 4 ? rs[i].lag_seconds : k == 5 ? (double)rs[i].retries
                                                                                                   : (double)rs[i].snapshots;
                kv_buf_printf(b, "%s{replica=\"%s\"} %.17g\n", names[k][0], rs[i].url, v);
            }
        }
    } else if (n->receiver) {
        struct repl_receiver_stats rs;
        repl_receiver_stats(n->receiver, &rs);
        gauge(b, "triekv_replication_applied_seq", "Last seq this replica applied.", "gauge");
        kv_buf_printf(b, "triekv_replication_applied_seq %" PRIu64 "\n", rs.applied_seq);
        gauge(b, "triekv_replication_main_seq", "The main's seq as last heard.", "gauge");
        kv_buf_printf(b, "triekv_replication_main_seq %" PRIu64 "\n", rs.main_seq);
        gauge(b, "triekv_replication_staleness_seconds", "Since this replica last had all the main had.", "gauge");
        kv_buf_printf(b, "triekv_replication_staleness_seconds %.3f\n", rs.staleness_seconds);
        gauge(b, "triekv_replication_since_contact_seconds", "Since the main last spoke (-1: never).", "gauge");
        kv_buf_printf(b, "triekv_replication_since_contact_seconds %.3f\n", rs.since_contact_seconds);
        gauge(b, "triekv_replication_refused_total", "Replication requests refused (cluster or token).", "counter");
        kv_buf_printf(b, "triekv_replication_refused_total %" PRIu64 "\n", rs.refused);
        gauge(b, "triekv_replication_snapshots_total", "Full resyncs received.", "counter");
        kv_buf_printf(b, "triekv_replication_snapshots_total %" PRIu64 "\n", rs.snapshots);
    }
}
