/* node/node_reply.c - the node's own kinds of response: the one table mapping engine results to
 * HTTP statuses, raw values sent without copying them, write acknowledgements (which wait for the
 * replicas in sync mode) and a replica's refusal of writes. Generic replies (JSON, errors) are
 * kv_http_reply and friends (common/kv_http.h).
 *
 * Memory: a value is sent straight from the engine's reference-counted record, released when h2o
 * disposes of the request. */
#include "node/node_int.h"
#include "common/kv_assert.h"
#include "common/kv_log.h"
#include "replication/repl.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The one place an engine result becomes an HTTP status. */
int node_status_of(int rc)
{
    switch (rc) {
    case KV_OK:
        return 200;
    case KV_E_NOT_FOUND:
        return 404;
    case KV_E_KEY_EMPTY:
    case KV_E_KEY_TOO_LONG:
    case KV_E_INVALID:
        return 400;
    case KV_E_FORBIDDEN:
        return 403;
    case KV_E_PRECONDITION:
        return 412;
    case KV_E_VALUE_TOO_LARGE:
    case KV_E_BATCH_TOO_LARGE:
        return 413;
    case KV_E_READONLY:
    case KV_E_CLOSED:
    case KV_E_UNAVAILABLE:
    case KV_E_TIMEOUT:
        return 503;
    default: /* corruption, a locked or unknown-version store, errno */
        return 500;
    }
}

void node_reply_rc(struct node_req *r, int rc, const char *what)
{
    int status = node_status_of(rc);
    if (status >= 500) /* client mistakes are answered, not logged */
        kv_log_warn(NODE_COMPONENT, "%s failed: %s", what, kv_strerror(rc));
    kv_http_error(&r->h, status, kv_errname(rc), "%s: %s", what, kv_strerror(rc));
}

static void value_dispose(void *p)
{
    triekv_value_release(*(struct triekv_value **)p);
}

void node_reply_value(struct node_req *r, struct triekv_value *v)
{
    static h2o_generator_t gen = {NULL, NULL};
    h2o_req_t *req = r->h.req;
    struct triekv_value **hold = h2o_mem_alloc_shared(&req->pool, sizeof *hold, value_dispose);
    *hold = v;
    char etag[32];
    int n = snprintf(etag, sizeof etag, "\"%llu\"", (unsigned long long)triekv_value_seq(v));
    kv_http_add_header(&r->h, "etag", etag, (size_t)n);
    req->res.status = 200;
    req->res.reason = "OK";
    req->res.content_length = triekv_value_len(v);
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL,
                   H2O_STRLIT("application/octet-stream"));
    kv_http_count(&r->h, 200);
    h2o_start_response(req, &gen);
    if (r->h.ep == KV_EP_KV_HEAD || triekv_value_len(v) == 0) {
        h2o_send(req, NULL, 0, H2O_SEND_STATE_FINAL); /* HEAD: h2o would send a generator's body */
        return;
    }
    h2o_iovec_t body = h2o_iovec_init(triekv_value_data(v), triekv_value_len(v));
    h2o_send(req, &body, 1, H2O_SEND_STATE_FINAL);
}

static void send_seq(struct node_req *r, uint64_t seq, const char *extra_json)
{
    char s[24];
    int n = snprintf(s, sizeof s, "%llu", (unsigned long long)seq);
    kv_http_add_header(&r->h, "x-triekv-seq", s, (size_t)n);
    struct kv_buf b = {0};
    kv_buf_printf(&b, "{\"seq\":%llu%s%s}", (unsigned long long)seq, extra_json && extra_json[0] ? "," : "",
                  extra_json ? extra_json : "");
    kv_http_reply_json(&r->h, 200, &b);
}

/* Sync mode: the write is committed; its OK waits for the replicas. */
static void sync_acked(struct node_req *r, bool timed_out, uint64_t seq, const void *arg)
{
    const char *extra = arg;
    if (!timed_out) {
        send_seq(r, seq, extra);
        return;
    }
    char s[24];
    int n = snprintf(s, sizeof s, "%llu", (unsigned long long)seq);
    kv_http_add_header(&r->h, "x-triekv-seq", s, (size_t)n);
    kv_http_error(&r->h, 503, "replication_timeout",
                  "the write is committed on the main as seq %llu, but fewer than %lld replicas confirmed it "
                  "within %lld ms; it stays committed and reaches the replicas when they catch up",
                  (unsigned long long)seq, (long long)r->node->cfg.min_replica_acks,
                  (long long)r->node->cfg.replication_timeout_ms);
}

void node_reply_seq(struct node_req *r, uint64_t seq, const char *extra_json)
{
    struct node *n = r->node;
    if (n->sync_mode && node_seq_current(n) < seq) {
        const char *extra = extra_json ? extra_json : "";
        node_seq_wait(r, seq, sync_acked, extra, strlen(extra) + 1);
        return;
    }
    send_seq(r, seq, extra_json);
}

void node_reply_replica_write(struct node_req *r)
{
    char learned[256] = "";
    if (r->node->receiver)
        repl_receiver_main_url(r->node->receiver, learned, sizeof learned);
    const char *main = r->node->cfg.main_url && r->node->cfg.main_url[0] ? r->node->cfg.main_url : learned;
    if (main && main[0])
        kv_http_error(&r->h, 403, "read_only_replica",
                      "this node is a read-only replica; send writes to the main at %s", main);
    else
        kv_http_error(&r->h, 403, "read_only_replica",
                      "this node is a read-only replica; send writes to its main");
}
