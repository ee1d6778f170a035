/* node/node_repl.c - a node's part in replication: starting the senders on a main, serving the
 * replication port on a replica, and the replication figures of /stats and /metrics.
 *
 * The replication port is a kv_http server of its own with one loop thread: its endpoints are
 * never reachable on the public port, its body limit fits the largest record, and its one thread
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

#define REFUSAL_LOG_MS       10000 /* at most one refusal line per this long */
#define REPL_CONNECTIONS_MAX 64    /* a main per cluster: a handful of connections at most */

/* The replication port: a kv_http server of its own, with one loop thread. */
struct node_repl_server {
    struct kv_http_server http;
    struct node *node;
    uint64_t refusal_logged_ms; /* the loop thread's */
};

static const char *const repl_ep_names[] = {"replication"};

/* ---- replies ----------------------------------------------------------------------------------- */

static void send_applied(struct kv_http_req *r, uint64_t applied)
{
    struct kv_buf b = {0};
    kv_buf_printf(&b, "{\"applied_seq\":%" PRIu64 "}", applied);
    kv_http_reply_json(r, 200, &b);
}

static void send_rc(struct kv_http_req *r, int status, int rc)
{
    kv_http_error(r, status, kv_errname(rc), "%s", kv_strerror(rc));
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

static bool authorized(struct node_repl_server *srv, struct kv_http_req *r)
{
    h2o_req_t *req = r->req;
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
    kv_http_error(r, 403, "forbidden", "%s", why);
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

static void on_repl_req(struct kv_http_thread *th, h2o_req_t *req)
{
    struct node_repl_server *srv = th->srv->cfg.app;
    struct node *n = srv->node;
    struct kv_http_req *r = h2o_mem_alloc_pool(&req->pool, sizeof *r);
    *r = (struct kv_http_req){.req = req, .th = th, .ep = 0, .start_ns = kv_now_ns()};
    h2o_iovec_t path = kv_http_path(req);
    bool post = h2o_memis(req->method.base, req->method.len, H2O_STRLIT("POST"));
    bool get = h2o_memis(req->method.base, req->method.len, H2O_STRLIT("GET"));
    if (!authorized(srv, r))
        return;
    note_main(srv, req);
    uint64_t applied;
    int rc;
    if (get && h2o_memis(path.base, path.len, H2O_STRLIT("/replication/state"))) {
        struct triekv_stats st;
        triekv_stats(n->db, &st);
        struct kv_buf b = {0};
        uint32_t epoch;
        char epoch_json[16] = "null"; /* unknown: the replica cannot vouch for its last batch */
        if (triekv_epoch_at(n->db, st.seq, &epoch) == KV_OK)
            snprintf(epoch_json, sizeof epoch_json, "%" PRIu32, epoch);
        kv_buf_printf(
            &b, "{\"applied_seq\":%" PRIu64 ",\"applied_epoch\":%s,\"resyncing\":%s,\"cluster_id\":", st.seq,
            epoch_json, triekv_snapshot_active(n->db) ? "true" : "false");
        kv_json_append_string(&b, (const uint8_t *)n->cfg.cluster_id, strlen(n->cfg.cluster_id));
        kv_buf_append_byte(&b, '}');
        kv_http_reply_json(r, 200, &b);
        return;
    }
    if (!post) {
        kv_http_error(r, 405, "method_not_allowed",
                      "replication requests are GET /replication/state or POST");
        return;
    }
    const uint8_t *body = (const uint8_t *)req->entity.base;
    size_t len = req->entity.base ? req->entity.len : 0;
    if (h2o_memis(path.base, path.len, H2O_STRLIT("/replication/apply"))) {
        rc = repl_receiver_apply(n->receiver, body, len, &applied);
        node_seq_advance(n, applied);
        if (rc == KV_OK)
            send_applied(r, applied);
        else if (rc == KV_E_INVALID)
            kv_http_error(r, 409, "gap", "records out of sequence: resend from applied_seq");
        else
            send_rc(r, node_status_of(rc), rc);
        if (rc != KV_OK && rc != KV_E_INVALID)
            kv_log_warn(NODE_COMPONENT, "applying replicated records failed: %s", kv_strerror(rc));
        return;
    }
    if (h2o_memis(path.base, path.len, H2O_STRLIT("/replication/snapshot/begin"))) {
        rc = repl_receiver_snapshot_begin(n->receiver);
        if (rc == KV_OK)
            kv_http_reply_json(r, 200, &(struct kv_buf){0});
        else
            send_rc(r, 500, rc);
        return;
    }
    if (h2o_memis(path.base, path.len, H2O_STRLIT("/replication/snapshot/chunk"))) {
        uint32_t items;
        rc = repl_receiver_snapshot_chunk(n->receiver, body, len, &items);
        if (rc == KV_OK)
            kv_http_reply_json(r, 200, &(struct kv_buf){0});
        else
            send_rc(r, rc == KV_E_CORRUPT || rc == KV_E_INVALID ? 400 : 500, rc);
        return;
    }
    if (h2o_memis(path.base, path.len, H2O_STRLIT("/replication/snapshot/end"))) {
        const char *q = req->query_at == SIZE_MAX ? NULL : req->path.base + req->query_at + 1;
        size_t ql = q ? req->path.len - req->query_at - 1 : 0;
        const char *amp = q ? memchr(q, '&', ql) : NULL;
        bool ok = amp && amp - q > 4 && memcmp(q, "seq=", 4) == 0 && (size_t)(q + ql - amp) > 7 &&
                  memcmp(amp, "&epoch=", 7) == 0;
        uint64_t seq = ok ? parse_u64(q + 4, (size_t)(amp - q - 4), &ok) : 0;
        uint64_t epoch = ok ? parse_u64(amp + 7, (size_t)(q + ql - amp - 7), &ok) : 0;
        if (!ok || epoch > UINT32_MAX) {
            kv_http_error(r, 400, "bad_request", "snapshot/end needs ?seq=N&epoch=E");
            return;
        }
        rc = repl_receiver_snapshot_end(n->receiver, seq, (uint32_t)epoch);
        node_seq_advance(n, seq);
        if (rc == KV_OK)
            send_applied(r, seq);
        else
            send_rc(r, 500, rc);
        return;
    }
    kv_http_error(r, 404, "not_found", "no such replication endpoint");
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
    /* one record of the largest value, or a batch of records, with room for framing */
    uint64_t batch = (uint64_t)n->cfg.replication_batch_bytes;
    uint64_t rec = (uint64_t)n->cfg.max_value_size + (uint64_t)n->cfg.max_key_size + 4096;
    struct kv_http_config hc = {
        .name = NODE_COMPONENT,
        .server_header = "triekv-replica/" TRIEKV_VERSION,
        .bind = n->cfg.bind,
        .port = (int)n->cfg.replication_port,
        .threads = 1, /* batches are applied strictly in arrival order */
        .max_connections = REPL_CONNECTIONS_MAX,
        .request_timeout_ms = n->cfg.replication_timeout_ms > 60000 ? n->cfg.replication_timeout_ms : 60000,
        .max_request_body = (size_t)((batch > rec ? batch : rec) + (1u << 20)),
        .drain_ms = NODE_DRAIN_MS,
        .ep_names = repl_ep_names,
        .ep_count = 1,
        .thread_size = sizeof(struct kv_http_thread),
        .on_req = on_repl_req,
        .app = srv,
    };
    char why[200];
    if (kv_http_listen(&srv->http, &hc, why, sizeof why) != 0) {
        snprintf(err, errlen, "replication port: %s", why);
        kv_http_dispose(&srv->http);
        free(srv);
        return -1;
    }
    kv_http_start(&srv->http);
    n->rsrv = srv;
    return 0;
}

void node_repl_stop(struct node *n)
{
    if (n->sender) {
        repl_sender_stop(n->sender);
        n->sender = NULL;
    }
    if (n->rsrv) {
        kv_http_stop(&n->rsrv->http);
        kv_http_dispose(&n->rsrv->http);
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
                          ",\"state\":\"%s\",\"connected\":%s,\"acked_seq\":%" PRIu64
                          ",\"lag_records\":%" PRIu64 ",\"lag_bytes\":%" PRIu64
                          ",\"lag_seconds\":%.3f,\"retries\":%" PRIu64 ",\"snapshots\":%" PRIu64
                          ",\"batches_sent\":%" PRIu64 ",\"bytes_sent\":%" PRIu64 ",\"last_error\":",
                          rs[i].state, rs[i].connected ? "true" : "false", rs[i].acked_seq, rs[i].lag_records,
                          rs[i].lag_bytes, rs[i].lag_seconds, rs[i].retries, rs[i].snapshots,
                          rs[i].batches_sent, rs[i].bytes_sent);
            if (rs[i].last_error[0] &&
                kv_utf8_valid((const uint8_t *)rs[i].last_error, strlen(rs[i].last_error)))
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
        if (main[0] == 0 && n->cfg.main_url) /* not heard from yet: the configured one */
            snprintf(main, sizeof main, "%s", n->cfg.main_url);
        kv_buf_printf(
            b,
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
            {"triekv_replica_lag_seconds", "Age of the oldest batch the replica has not acknowledged.",
             "gauge"},
            {"triekv_replica_retries_total", "Failed replication attempts.", "counter"},
            {"triekv_replica_snapshots_total", "Full resyncs sent.", "counter"},
        };
        for (size_t k = 0; k < 7; k++) {
            gauge(b, names[k][0], names[k][1], names[k][2]);
            for (size_t i = 0; i < cnt; i++) {
                double v = k == 0   ? rs[i].connected
                           : k == 1 ? (double)rs[i].acked_seq
                           : k == 2 ? (double)rs[i].lag_records
                           : k == 3 ? (double)rs[i].lag_bytes
                           : k == 4 ? rs[i].lag_seconds
                           : k == 5 ? (double)rs[i].retries
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
        gauge(b, "triekv_replication_staleness_seconds", "Since this replica last had all the main had.",
              "gauge");
        kv_buf_printf(b, "triekv_replication_staleness_seconds %.3f\n", rs.staleness_seconds);
        gauge(b, "triekv_replication_since_contact_seconds", "Since the main last spoke (-1: never).",
              "gauge");
        kv_buf_printf(b, "triekv_replication_since_contact_seconds %.3f\n", rs.since_contact_seconds);
        gauge(b, "triekv_replication_refused_total", "Replication requests refused (cluster or token).",
              "counter");
        kv_buf_printf(b, "triekv_replication_refused_total %" PRIu64 "\n", rs.refused);
        gauge(b, "triekv_replication_snapshots_total", "Full resyncs received.", "counter");
        kv_buf_printf(b, "triekv_replication_snapshots_total %" PRIu64 "\n", rs.snapshots);
    }
}
