/* node/node_reply.c - everything that sends a response: the one table mapping engine results to
 * HTTP statuses, JSON bodies (errors included), raw values without copying them, and the metrics
 * every response is counted in.
 *
 * Memory: response bodies built in a kv_buf are handed to the request's pool and freed when h2o
 * disposes of the request, never copied; a value is sent straight from the engine's reference-
 * counted record, released at the same moment. Header values are copied into the pool (h2o keeps
 * pointers). */
#include "node/node_int.h"
#include "common/kv_assert.h"
#include "common/kv_codec.h"
#include "common/kv_log.h"
#include "common/kv_time.h"
#include "replication/repl.h"

#include <stdarg.h>
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

static const char *reason_of(int status)
{
    switch (status) {
    case 200:
        return "OK";
    case 304:
        return "Not Modified";
    case 400:
        return "Bad Request";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 409:
        return "Conflict";
    case 412:
        return "Precondition Failed";
    case 413:
        return "Payload Too Large";
    case 500:
        return "Internal Server Error";
    case 503:
        return "Service Unavailable";
    default:
        return "Status";
    }
}

void node_count(struct node_req *r, int status)
{
    node_metrics_record(&r->th->metrics, r->ep, status, kv_now_ns() - r->start_ns);
}

void node_add_header(struct node_req *r, const char *name, const char *value, size_t len)
{
    char *v = h2o_mem_alloc_pool(&r->req->pool, len ? len : 1);
    memcpy(v, value, len);
    h2o_add_header_by_str(&r->req->pool, &r->req->res.headers, name, strlen(name), 0, NULL, v, len);
}

/* A buffer the pool frees when the request is disposed. */
struct pooled_buf {
    uint8_t *ptr;
};

static void pooled_buf_dispose(void *p)
{
    free(((struct pooled_buf *)p)->ptr);
}

static void send_owned(struct node_req *r, int status, const char *ctype, struct kv_buf *buf)
{
    static h2o_generator_t gen = {NULL, NULL}; /* one final send: nothing to proceed or stop */
    h2o_req_t *req = r->req;
    struct pooled_buf *pb = h2o_mem_alloc_shared(&req->pool, sizeof *pb, pooled_buf_dispose);
    size_t len;
    pb->ptr = kv_buf_detach(buf, &len);
    req->res.status = status;
    req->res.reason = reason_of(status);
    req->res.content_length = len;
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL, ctype, strlen(ctype));
    node_count(r, status);
    h2o_start_response(req, &gen);
    bool head = h2o_memis(req->input.method.base, req->input.method.len, H2O_STRLIT("HEAD"));
    h2o_iovec_t body = h2o_iovec_init(pb->ptr, head ? 0 : len);
    h2o_send(req, &body, head || len == 0 ? 0 : 1, H2O_SEND_STATE_FINAL);
}

void node_reply_text(struct node_req *r, int status, const char *ctype, struct kv_buf *buf)
{
    send_owned(r, status, ctype, buf);
}

void node_reply_json(struct node_req *r, int status, struct kv_buf *buf)
{
    kv_buf_append_byte(buf, '\n');
    send_owned(r, status, "application/json", buf);
}

void node_reply_error(struct node_req *r, int status, const char *code, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    struct kv_buf b = {0};
    kv_buf_append_str(&b, "{\"error\":");
    kv_json_append_string(&b, (const uint8_t *)code, strlen(code));
    kv_buf_append_str(&b, ",\"message\":");
    /* messages may quote client input: only valid UTF-8 goes into JSON */
    if (!kv_utf8_valid((const uint8_t *)msg, strlen(msg)))
        snprintf(msg, sizeof msg, "%s", "invalid request (details not printable)");
    kv_json_append_string(&b, (const uint8_t *)msg, strlen(msg));
    kv_buf_append_byte(&b, '}');
    node_reply_json(r, status, &b);
}

void node_reply_rc(struct node_req *r, int rc, const char *what)
{
    int status = node_status_of(rc);
    if (status >= 500) /* client mistakes are answered, not logged */
        kv_log_warn(NODE_COMPONENT, "%s failed: %s", what, kv_strerror(rc));
    node_reply_error(r, status, kv_errname(rc), "%s: %s", what, kv_strerror(rc));
}

void node_reply_method(struct node_req *r, const char *allow)
{
    node_add_header(r, "allow", allow, strlen(allow));
    node_reply_error(r, 405, "method_not_allowed", "method %.*s is not allowed here; allowed: %s",
                     (int)(r->req->method.len > 16 ? 16 : r->req->method.len), r->req->method.base, allow);
}

static void value_dispose(void *p)
{
    triekv_value_release(*(struct triekv_value **)p);
}

void node_reply_value(struct node_req *r, struct triekv_value *v)
{
    static h2o_generator_t gen = {NULL, NULL};
    h2o_req_t *req = r->req;
    struct triekv_value **hold = h2o_mem_alloc_shared(&req->pool, sizeof *hold, value_dispose);
    *hold = v;
    char etag[32];
    int n = snprintf(etag, sizeof etag, "\"%llu\"", (unsigned long long)triekv_value_seq(v));
    node_add_header(r, "etag", etag, (size_t)n);
    req->res.status = 200;
    req->res.reason = "OK";
    req->res.content_length = triekv_value_len(v);
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL,
                   H2O_STRLIT("application/octet-stream"));
    node_count(r, 200);
    h2o_start_response(req, &gen);
    if (r->ep == EP_KV_HEAD || triekv_value_len(v) == 0) {
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
    node_add_header(r, "x-triekv-seq", s, (size_t)n);
    struct kv_buf b = {0};
    kv_buf_printf(&b, "{\"seq\":%llu%s%s}", (unsigned long long)seq, extra_json && extra_json[0] ? "," : "",
                  extra_json ? extra_json : "");
    node_reply_json(r, 200, &b);
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
    node_add_header(r, "x-triekv-seq", s, (size_t)n);
    node_reply_error(r, 503, "replication_timeout",
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
        node_reply_error(r, 403, "read_only_replica",
                         "this node is a read-only replica; send writes to the main at %s", main);
    else
        node_reply_error(r, 403, "read_only_replica", "this node is a read-only replica; send writes to its main");
}

/* ---- h2o's own errors as JSON ------------------------------------------------------------------
 * h2o answers some requests before they reach on_req (a body over max_request_entity_size gets
 * 413, a bad Transfer-Encoding or Content-Length 400, an unexpected Expect 417). It sends them
 * through the output filters of the fallback path, so this filter rewrites any error whose body
 * is h2o's plain text into our {"error", "message"} shape. Our own replies are JSON already and
 * pass untouched. (A request line that is not HTTP at all, or headers over 400 KB, get h2o's
 * hard-wired plain-text 400 and a closed connection: no filter sees those.) */

struct json_error_ostream {
    h2o_ostream_t super;
    h2o_iovec_t body;
    bool sent;
};

static void json_error_send(h2o_ostream_t *self, h2o_req_t *req, h2o_iovec_t *bufs, size_t bufcnt,
                            h2o_send_state_t state)
{
    struct json_error_ostream *o = (struct json_error_ostream *)self;
    (void)bufs;
    (void)bufcnt;
    h2o_iovec_t b = o->body;
    bool head = h2o_memis(req->input.method.base, req->input.method.len, H2O_STRLIT("HEAD"));
    h2o_ostream_send_next(&o->super, req, &b, o->sent || head ? 0 : 1, state);
    o->sent = true;
}

static const char *error_code_of(int status)
{
    switch (status) {
    case 413:
        return "payload_too_large";
    case 417:
        return "expectation_failed";
    case 404:
        return "not_found";
    default:
        return status >= 500 ? "internal" : "bad_request";
    }
}

static void json_error_setup(h2o_filter_t *self, h2o_req_t *req, h2o_ostream_t **slot)
{
    (void)self;
    ssize_t ct = h2o_find_header(&req->res.headers, H2O_TOKEN_CONTENT_TYPE, -1);
    if (req->res.status >= 400 && ct >= 0 &&
        h2o_memis(req->res.headers.entries[ct].value.base, req->res.headers.entries[ct].value.len,
                  H2O_STRLIT("text/plain; charset=utf-8"))) {
        struct kv_buf b = {0};
        const char *reason = req->res.reason ? req->res.reason : "error";
        kv_buf_append_str(&b, "{\"error\":\"");
        kv_buf_append_str(&b, error_code_of(req->res.status));
        kv_buf_append_str(&b, "\",\"message\":");
        kv_json_append_string(&b, (const uint8_t *)reason, strlen(reason));
        if (req->res.status == 413)
            kv_buf_append_str(&b, ",\"detail\":\"the body is larger than any endpoint accepts\"");
        kv_buf_append_str(&b, "}\n");
        char *body = h2o_mem_alloc_pool(&req->pool, b.len);
        memcpy(body, b.ptr, b.len);
        struct json_error_ostream *o =
            (struct json_error_ostream *)h2o_add_ostream(req, sizeof *o, slot);
        o->super.do_send = json_error_send;
        o->body = h2o_iovec_init(body, b.len);
        o->sent = false;
        req->res.content_length = b.len;
        req->res.headers.entries[ct].value = h2o_iovec_init(H2O_STRLIT("application/json"));
        kv_buf_free(&b);
        slot = &o->super.next;
    }
    h2o_setup_next_ostream(req, slot);
}

void node_json_errors_register(h2o_pathconf_t *path)
{
    h2o_filter_t *f = h2o_create_filter(path, sizeof *f);
    f->on_setup_ostream = json_error_setup;
}
