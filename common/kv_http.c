/* common/kv_http.c - the HTTP server plumbing of kv_http.h: listening, loop threads with a
 * connection cap, graceful drain, replies, h2o's own errors rewritten as JSON, query strings and
 * request metrics. triekv-server and triekv-proxy build on it; neither knows h2o's threading. */
#include "common/kv_http.h"
#include "common/kv_assert.h"
#include "common/kv_codec.h"
#include "common/kv_log.h"
#include "common/kv_time.h"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define ACCEPTS_PER_WAKEUP                                                                                   \
    16 /* bounded work per listener wake-up; level-triggered polling wakes us again                          \
        */

/* Upper bounds of the latency buckets, in microseconds (the last bucket is +Inf). */
static const uint64_t bucket_us[KV_HTTP_HIST_BUCKETS] = {50,     100,     250,     500,     1000,   2500,
                                                         5000,   10000,   25000,   50000,   100000, 250000,
                                                         500000, 1000000, 2500000, 10000000};

struct kv_http_thread *kv_http_thread_at(struct kv_http_server *s, int i)
{
    KV_ASSERT(i >= 0 && i < s->nthreads);
    return (struct kv_http_thread *)((char *)s->threads + (size_t)i * s->cfg.thread_size);
}

/* ---- replies ------------------------------------------------------------------------------------ */

const char *kv_http_reason(int status)
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
    case 502:
        return "Bad Gateway";
    case 503:
        return "Service Unavailable";
    case 504:
        return "Gateway Timeout";
    default:
        return "Status";
    }
}

bool kv_http_is_head(const h2o_req_t *req)
{
    return h2o_memis(req->input.method.base, req->input.method.len, H2O_STRLIT("HEAD"));
}

h2o_iovec_t kv_http_path(const h2o_req_t *req)
{
    h2o_iovec_t path =
        h2o_iovec_init(req->path.base, req->query_at == SIZE_MAX ? req->path.len : req->query_at);
    if (path.len > 7 && memcmp(path.base, "http://", 7) == 0) { /* absolute form: GET http://host/kv/x */
        const char *slash = memchr(path.base + 7, '/', path.len - 7);
        size_t skip = slash ? (size_t)(slash - path.base) : path.len;
        path = h2o_iovec_init(path.base + skip, path.len - skip);
    }
    return path;
}

static void metrics_record(struct kv_http_metrics *m, int ep, int status, uint64_t elapsed_ns)
{
    int cls = status / 100;
    if (cls < 1 || cls > 5)
        cls = 5;
    uint64_t us = elapsed_ns / 1000;
    int b = 0;
    while (b < KV_HTTP_HIST_BUCKETS && us > bucket_us[b])
        b++;
    atomic_fetch_add_explicit(&m->requests[ep][cls], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&m->latency[ep][b], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&m->latency_sum_us[ep], us, memory_order_relaxed);
}

void kv_http_count(struct kv_http_req *r, int status)
{
    KV_ASSERT(r->ep >= 0 && r->ep < r->th->srv->cfg.ep_count);
    metrics_record(&r->th->metrics, r->ep, status, kv_now_ns() - r->start_ns);
}

void kv_http_add_header(struct kv_http_req *r, const char *name, const char *value, size_t len)
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

void kv_http_reply(struct kv_http_req *r, int status, const char *ctype, struct kv_buf *body)
{
    static h2o_generator_t gen = {NULL, NULL}; /* one final send: nothing to proceed or stop */
    h2o_req_t *req = r->req;
    struct pooled_buf *pb = h2o_mem_alloc_shared(&req->pool, sizeof *pb, pooled_buf_dispose);
    size_t len;
    pb->ptr = kv_buf_detach(body, &len);
    req->res.status = status;
    req->res.reason = kv_http_reason(status);
    req->res.content_length = len;
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL, ctype, strlen(ctype));
    kv_http_count(r, status);
    h2o_start_response(req, &gen);
    bool head = kv_http_is_head(req);
    h2o_iovec_t b = h2o_iovec_init(pb->ptr, head ? 0 : len);
    h2o_send(req, &b, head || len == 0 ? 0 : 1, H2O_SEND_STATE_FINAL);
}

void kv_http_reply_json(struct kv_http_req *r, int status, struct kv_buf *body)
{
    kv_buf_append_byte(body, '\n');
    kv_http_reply(r, status, "application/json", body);
}

void kv_http_error(struct kv_http_req *r, int status, const char *code, const char *fmt, ...)
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
    kv_http_reply_json(r, status, &b);
}

void kv_http_method_not_allowed(struct kv_http_req *r, const char *allow)
{
    kv_http_add_header(r, "allow", allow, strlen(allow));
    kv_http_error(r, 405, "method_not_allowed", "method %.*s is not allowed here; allowed: %s",
                  (int)(r->req->method.len > 16 ? 16 : r->req->method.len), r->req->method.base, allow);
}

bool kv_http_method_check(struct kv_http_req *r, const char *allow)
{
    h2o_iovec_t m = r->req->method;
    /* allow is "GET, HEAD" or "POST": match whole words */
    for (const char *p = allow; m.len > 0 && *p;) {
        size_t wl = strcspn(p, ", ");
        if (wl == m.len && memcmp(p, m.base, wl) == 0)
            return true;
        p += wl;
        p += strspn(p, ", ");
    }
    kv_http_method_not_allowed(r, allow);
    return false;
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
    h2o_ostream_send_next(&o->super, req, &b, o->sent || kv_http_is_head(req) ? 0 : 1, state);
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
        struct json_error_ostream *o = (struct json_error_ostream *)h2o_add_ostream(req, sizeof *o, slot);
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

static void json_errors_register(h2o_pathconf_t *path)
{
    h2o_filter_t *f = h2o_create_filter(path, sizeof *f);
    f->on_setup_ostream = json_error_setup;
}

/* ---- the REST API's routes -------------------------------------------------------------------------- */

const char *const kv_api_ep_names[KV_EP_COUNT] = {
    "kv_get",   "kv_head",     "kv_put", "kv_delete", "bulk",   "bulk_range",
    "bulk_get", "bulk_delete", "stats",  "metrics",   "health", "other",
};

enum kv_api_ep kv_api_kv_ep(h2o_iovec_t m)
{
    if (h2o_memis(m.base, m.len, H2O_STRLIT("GET")))
        return KV_EP_KV_GET;
    if (h2o_memis(m.base, m.len, H2O_STRLIT("HEAD")))
        return KV_EP_KV_HEAD;
    if (h2o_memis(m.base, m.len, H2O_STRLIT("PUT")) || h2o_memis(m.base, m.len, H2O_STRLIT("POST")))
        return KV_EP_KV_PUT;
    if (h2o_memis(m.base, m.len, H2O_STRLIT("DELETE")))
        return KV_EP_KV_DELETE;
    return KV_EP_OTHER;
}

bool kv_api_is_read(const h2o_req_t *req)
{
    h2o_iovec_t m = req->method, path = kv_http_path(req);
    return h2o_memis(m.base, m.len, H2O_STRLIT("GET")) || h2o_memis(m.base, m.len, H2O_STRLIT("HEAD")) ||
           h2o_memis(path.base, path.len, H2O_STRLIT("/bulk/get"));
}

int kv_api_min_seq(const h2o_req_t *req, uint64_t *seq)
{
    *seq = 0;
    ssize_t h = h2o_find_header_by_str(&req->headers, H2O_STRLIT("x-triekv-min-seq"), -1);
    if (h < 0)
        return 0;
    h2o_iovec_t v = req->headers.entries[h].value;
    uint64_t want = 0;
    bool ok = v.len > 0 && v.len <= 20;
    for (size_t i = 0; ok && i < v.len; i++) {
        unsigned d = (unsigned)(v.base[i] - '0');
        ok = d <= 9 && want <= (UINT64_MAX - d) / 10;
        want = want * 10 + d;
    }
    if (!ok)
        return -1;
    *seq = want;
    return 0;
}

void kv_api_route(struct kv_http_req *r, const struct kv_api_handlers *h)
{
    const struct {
        const char *path;
        enum kv_api_ep ep;
        const char *allow;
        kv_api_fn fn;
    } fixed[] = {
        {"/bulk", KV_EP_BULK, "POST", h->bulk},
        {"/bulk/delete", KV_EP_BULK_DELETE, "POST", h->bulk_delete},
        {"/bulk/get", KV_EP_BULK_GET, "POST", h->bulk_get},
        {"/bulk/range", KV_EP_BULK_RANGE, "GET, HEAD", h->range},
        {"/stats", KV_EP_STATS, "GET, HEAD", h->stats},
        {"/metrics", KV_EP_METRICS, "GET, HEAD", h->metrics},
        {"/health", KV_EP_HEALTH, "GET, HEAD", h->health},
    };
    h2o_iovec_t path = kv_http_path(r->req);
    if (path.len > 4 && memcmp(path.base, "/kv/", 4) == 0) {
        enum kv_api_ep ep = kv_api_kv_ep(r->req->method);
        r->ep = ep == KV_EP_OTHER ? KV_EP_KV_GET : ep;
        if (ep == KV_EP_OTHER)
            kv_http_method_not_allowed(r, "GET, HEAD, PUT, POST, DELETE");
        else
            h->kv(r, path);
        return;
    }
    if (h2o_memis(path.base, path.len, H2O_STRLIT("/kv/")) ||
        h2o_memis(path.base, path.len, H2O_STRLIT("/kv"))) {
        r->ep = KV_EP_KV_GET;
        kv_http_error(r, 400, "key_empty", "the key is empty: use /kv/{key} with a percent-encoded key");
        return;
    }
    for (size_t i = 0; i < sizeof fixed / sizeof fixed[0]; i++) {
        if (h2o_memis(path.base, path.len, fixed[i].path, strlen(fixed[i].path))) {
            r->ep = fixed[i].ep;
            if (kv_http_method_check(r, fixed[i].allow))
                fixed[i].fn(r);
            return;
        }
    }
    r->ep = KV_EP_OTHER;
    kv_http_error(r, 404, "not_found", "no such endpoint: %.*s", (int)(path.len > 200 ? 200 : path.len),
                  path.base);
}

/* ---- query strings ------------------------------------------------------------------------------- */

int kv_http_query_parse(struct kv_http_req *r, struct kv_http_query *q)
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
        if (q->n == KV_HTTP_QUERY_PARAMS_MAX) {
            kv_http_error(r, 400, "bad_request", "too many query parameters (at most %d)",
                          KV_HTTP_QUERY_PARAMS_MAX);
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
            kv_http_error(r, 400, "bad_request", "malformed query string (bad %%-escape or empty name)");
            return -1;
        }
        struct kv_http_param *p = &q->v[q->n];
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
                kv_http_error(r, 400, "bad_request", "query parameter '%s' given twice", p->name);
                return -1;
            }
        }
        q->n++;
        s = stop + 1;
    }
    return 0;
}

const struct kv_http_param *kv_http_query_get(struct kv_http_query *q, const char *name)
{
    for (int i = 0; i < q->n; i++) {
        if (strcmp(q->v[i].name, name) == 0) {
            q->v[i].used = true;
            return &q->v[i];
        }
    }
    return NULL;
}

int kv_http_query_check_unused(struct kv_http_req *r, struct kv_http_query *q)
{
    for (int i = 0; i < q->n; i++) {
        if (!q->v[i].used) {
            kv_http_error(r, 400, "bad_request", "unknown query parameter '%s'", q->v[i].name);
            return -1;
        }
    }
    return 0;
}

int kv_http_query_encoding(struct kv_http_req *r, struct kv_http_query *q, bool *b64)
{
    const struct kv_http_param *p = kv_http_query_get(q, "encoding");
    *b64 = false;
    if (p == NULL)
        return 0;
    if (kv_slice_eq(p->value, kv_slice_make("base64", 6))) {
        *b64 = true;
        return 0;
    }
    if (kv_slice_eq(p->value, kv_slice_make("utf8", 4)))
        return 0;
    kv_http_error(r, 400, "bad_request", "encoding must be base64 or utf8");
    return -1;
}

int kv_http_param_bool(struct kv_http_req *r, const struct kv_http_param *p, bool *out)
{
    *out = false;
    if (p == NULL)
        return 0;
    if (kv_slice_eq(p->value, kv_slice_make("true", 4)) || kv_slice_eq(p->value, kv_slice_make("1", 1)))
        *out = true;
    else if (!kv_slice_eq(p->value, kv_slice_make("false", 5)) &&
             !kv_slice_eq(p->value, kv_slice_make("0", 1))) {
        kv_http_error(r, 400, "bad_request", "%s must be true or false", p->name);
        return -1;
    }
    return 0;
}

/* limit=N: 1..max (absent: max). -1 after answering. */
static int param_limit(struct kv_http_req *r, const struct kv_http_param *p, size_t max, size_t *out)
{
    *out = max;
    if (p == NULL)
        return 0;
    uint64_t n = 0;
    bool ok = p->value.len > 0 && p->value.len <= 10;
    for (size_t i = 0; ok && i < p->value.len; i++) {
        ok = p->value.ptr[i] >= '0' && p->value.ptr[i] <= '9';
        n = n * 10 + (uint64_t)(p->value.ptr[i] - '0');
    }
    if (!ok || n < 1 || n > max) {
        kv_http_error(r, 400, "bad_limit", "limit must be a whole number from 1 to %zu", max);
        return -1;
    }
    *out = (size_t)n;
    return 0;
}

int kv_http_range_parse(struct kv_http_req *r, struct kv_http_query *q, size_t max_key, size_t max_limit,
                        struct kv_buf *raw, struct kv_http_range *out)
{
    memset(out, 0, sizeof *out);
    if (param_limit(r, kv_http_query_get(q, "limit"), max_limit, &out->limit) != 0 ||
        kv_http_param_bool(r, kv_http_query_get(q, "keys_only"), &out->keys_only) != 0)
        return -1;
    const struct kv_http_param *start = kv_http_query_get(q, "start_key");
    const struct kv_http_param *end = kv_http_query_get(q, "end_key");
    const struct kv_http_param *prefix = kv_http_query_get(q, "prefix");
    const struct kv_http_param *cur = kv_http_query_get(q, "cursor");
    if (prefix && (start || end)) {
        kv_http_error(r, 400, "bad_request", "give prefix, or start_key/end_key, not both");
        return -1;
    }
    if (max_key > KV_CURSOR_KEY_MAX)
        max_key = KV_CURSOR_KEY_MAX;
    const struct kv_http_param *keys[3] = {start, end, prefix};
    for (int i = 0; i < 3; i++) {
        if (keys[i] && keys[i]->value.len > max_key) {
            kv_http_error(r, 400, "key_too_long", "%s has %zu bytes; the limit is %zu", keys[i]->name,
                          keys[i]->value.len, max_key);
            return -1;
        }
    }
    struct kv_cursor *rg = &out->range;
    rg->has_prefix = prefix != NULL;
    rg->start = prefix ? prefix->value : start ? start->value : kv_slice_make(NULL, 0);
    rg->has_end = end != NULL;
    rg->end = end ? end->value : kv_slice_make(NULL, 0);
    if (cur == NULL)
        return 0;
    struct kv_cursor c;
    if (kv_cursor_decode(cur->value, raw, &c) != KV_OK) {
        kv_http_error(r, 400, "bad_cursor", "the cursor is malformed or damaged; pass back 'next' as it was");
        return -1;
    }
    bool same = (prefix == NULL && start == NULL && end == NULL) ||
                (c.has_prefix == rg->has_prefix && kv_slice_eq(c.start, rg->start) &&
                 c.has_end == rg->has_end && (!rg->has_end || kv_slice_eq(c.end, rg->end)));
    if (!same) {
        kv_http_error(r, 400, "bad_cursor", "the cursor belongs to another range");
        return -1;
    }
    *rg = c;
    out->has_after = true;
    return 0;
}

/* ---- metrics ------------------------------------------------------------------------------------- */

/* All threads' counters added up, once per scrape. */
struct metrics_total {
    uint64_t requests[KV_HTTP_EP_MAX][6];
    uint64_t latency[KV_HTTP_EP_MAX][KV_HTTP_HIST_BUCKETS + 1];
    uint64_t latency_sum_us[KV_HTTP_EP_MAX];
    uint64_t ep_requests[KV_HTTP_EP_MAX];
    uint64_t connections_accepted, connections_refused;
};

static uint64_t ld(const _Atomic uint64_t *a)
{
    return atomic_load_explicit(a, memory_order_relaxed);
}

static void metrics_total(struct kv_http_server *s, struct metrics_total *t)
{
    memset(t, 0, sizeof *t);
    for (int i = 0; i < s->nthreads; i++) {
        const struct kv_http_metrics *m = &kv_http_thread_at(s, i)->metrics;
        for (int e = 0; e < s->cfg.ep_count; e++) {
            for (int c = 1; c <= 5; c++) {
                t->requests[e][c] += ld(&m->requests[e][c]);
                t->ep_requests[e] += ld(&m->requests[e][c]);
            }
            for (int k = 0; k <= KV_HTTP_HIST_BUCKETS; k++)
                t->latency[e][k] += ld(&m->latency[e][k]);
            t->latency_sum_us[e] += ld(&m->latency_sum_us[e]);
        }
        t->connections_accepted += ld(&m->connections_accepted);
        t->connections_refused += ld(&m->connections_refused);
    }
}

void kv_http_stats_json(struct kv_http_server *s, struct kv_buf *b)
{
    struct metrics_total t;
    metrics_total(s, &t);
    kv_buf_printf(b, "\"connections\":{\"open\":%lld,\"accepted\":%llu,\"refused\":%llu},\"requests\":{",
                  (long long)atomic_load(&s->connections), (unsigned long long)t.connections_accepted,
                  (unsigned long long)t.connections_refused);
    for (int e = 0; e < s->cfg.ep_count; e++)
        kv_buf_printf(b, "%s\"%s\":%llu", e ? "," : "", s->cfg.ep_names[e],
                      (unsigned long long)t.ep_requests[e]);
    kv_buf_append_byte(b, '}');
}

void kv_http_metric(struct kv_buf *b, const char *name, const char *type, const char *help, double value)
{
    kv_buf_printf(b, "# HELP %s %s\n# TYPE %s %s\n%s %.17g\n", name, help, name, type, name, value);
}

void kv_http_metrics_text(struct kv_http_server *s, const char *prefix, struct kv_buf *b)
{
    struct metrics_total t;
    metrics_total(s, &t);
    const char *const *names = s->cfg.ep_names;
    char name[128];
    snprintf(name, sizeof name, "%s_connections", prefix);
    kv_http_metric(b, name, "gauge", "Open client connections.", (double)atomic_load(&s->connections));
    snprintf(name, sizeof name, "%s_connections_refused_total", prefix);
    kv_http_metric(b, name, "counter", "Connections refused over max_connections.",
                   (double)t.connections_refused);
    kv_buf_printf(b,
                  "# HELP %s_http_requests_total HTTP requests by endpoint and status class.\n"
                  "# TYPE %s_http_requests_total counter\n",
                  prefix, prefix);
    for (int e = 0; e < s->cfg.ep_count; e++) {
        for (int c = 1; c <= 5; c++) {
            uint64_t v = t.requests[e][c];
            if (v)
                kv_buf_printf(b, "%s_http_requests_total{endpoint=\"%s\",code=\"%dxx\"} %llu\n", prefix,
                              names[e], c, (unsigned long long)v);
        }
    }
    kv_buf_printf(b,
                  "# HELP %s_http_request_duration_seconds Time from request to response.\n"
                  "# TYPE %s_http_request_duration_seconds histogram\n",
                  prefix, prefix);
    for (int e = 0; e < s->cfg.ep_count; e++) {
        uint64_t cum = 0;
        if (t.ep_requests[e] == 0)
            continue;
        for (int k = 0; k <= KV_HTTP_HIST_BUCKETS; k++) {
            cum += t.latency[e][k];
            if (k < KV_HTTP_HIST_BUCKETS)
                kv_buf_printf(b, "%s_http_request_duration_seconds_bucket{endpoint=\"%s\",le=\"%g\"} %llu\n",
                              prefix, names[e], (double)bucket_us[k] / 1e6, (unsigned long long)cum);
            else
                kv_buf_printf(b,
                              "%s_http_request_duration_seconds_bucket{endpoint=\"%s\",le=\"+Inf\"} %llu\n",
                              prefix, names[e], (unsigned long long)cum);
        }
        kv_buf_printf(b, "%s_http_request_duration_seconds_sum{endpoint=\"%s\"} %.6f\n", prefix, names[e],
                      (double)t.latency_sum_us[e] / 1e6);
        kv_buf_printf(b, "%s_http_request_duration_seconds_count{endpoint=\"%s\"} %llu\n", prefix, names[e],
                      (unsigned long long)cum);
    }
}

/* ---- threads, accepting ------------------------------------------------------------------------- */

/* One client connection, tracked so shutdown can tell idle ones from ones mid-request. */
struct conn {
    h2o_linklist_t link;
    h2o_socket_t *sock;
    struct kv_http_thread *th;
};

static void on_conn_close(void *data)
{
    struct conn *c = data;
    h2o_linklist_unlink(&c->link);
    c->th->connections--;
    atomic_fetch_sub(&c->th->srv->connections, 1);
    free(c);
}

/* Shutdown: a connection with nothing of a request received is idle; half-closing it makes h2o
 * read EOF and close it through its normal path. One that has part of a request keeps the grace. */
static void close_idle(struct kv_http_thread *th)
{
    for (h2o_linklist_t *l = th->conns.next; l != &th->conns; l = l->next) {
        struct conn *c = H2O_STRUCT_FROM_MEMBER(struct conn, link, l);
        if (c->sock->input == NULL || c->sock->input->size == 0)
            shutdown(h2o_socket_get_fd(c->sock), SHUT_RD);
    }
}

static void on_accept(h2o_socket_t *listener, const char *err)
{
    struct kv_http_thread *th = listener->data;
    struct kv_http_server *s = th->srv;
    if (err != NULL)
        return;
    for (int i = 0; i < ACCEPTS_PER_WAKEUP; i++) {
        h2o_socket_t *sock = h2o_evloop_socket_accept(listener);
        if (sock == NULL)
            return;
        if (atomic_load(&s->connections) >= s->cfg.max_connections) {
            atomic_fetch_add_explicit(&th->metrics.connections_refused, 1, memory_order_relaxed);
            h2o_socket_close(sock); /* over the cap: refuse rather than queue without bound */
            continue;
        }
        atomic_fetch_add(&s->connections, 1);
        atomic_fetch_add_explicit(&th->metrics.connections_accepted, 1, memory_order_relaxed);
        th->connections++;
        struct conn *c = kv_calloc(1, sizeof *c);
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

struct handler_ref {
    h2o_handler_t super;
    struct kv_http_server *srv;
};

static void on_context_init(h2o_handler_t *self, h2o_context_t *ctx)
{
    struct kv_http_thread *th = H2O_STRUCT_FROM_MEMBER(struct kv_http_thread, ctx, ctx);
    h2o_context_set_handler_context(ctx, self, th);
}

static int on_req(h2o_handler_t *self, h2o_req_t *req)
{
    struct kv_http_server *s = ((struct handler_ref *)self)->srv;
    struct kv_http_thread *th = h2o_context_get_handler_context(req->conn->ctx, self);
    s->cfg.on_req(th, req);
    return 0;
}

static void *thread_main(void *arg)
{
    struct kv_http_thread *th = arg;
    struct kv_http_server *s = th->srv;
    th->loop = h2o_evloop_create();
    h2o_linklist_init_anchor(&th->conns);
    h2o_context_init(&th->ctx, th->loop, &s->globalconf);
    th->accept_ctx.ctx = &th->ctx;
    th->accept_ctx.hosts = s->globalconf.hosts;
    h2o_multithread_register_receiver(th->ctx.queue, &th->wake_rx, on_wake);
    if (s->cfg.thread_start)
        s->cfg.thread_start(th);
    int fd = dup(s->listen_fd);
    KV_ASSERT(fd >= 0);
    th->listener = h2o_evloop_socket_create(th->loop, fd, H2O_SOCKET_FLAG_DONT_READ);
    th->listener->data = th;
    /* every loop's thread_start has run before any loop takes a connection */
    pthread_barrier_wait(&s->ready);
    h2o_socket_read_start(th->listener, on_accept);

    while (!atomic_load(&s->stopping))
        h2o_evloop_run(th->loop, INT32_MAX); /* -1 on EINTR: just go round */

    /* drain */
    h2o_socket_read_stop(th->listener);
    h2o_socket_close(th->listener);
    h2o_context_request_shutdown(&th->ctx);
    /* Idle keep-alive connections close now; a request still arriving gets a short grace to
     * finish (h2o's request timeout counts from when the connection started waiting for it). */
    th->ctx.http1.req_timeout.timeout =
        (uint64_t)(s->cfg.request_timeout_ms < KV_HTTP_SHUTDOWN_GRACE_MS ? s->cfg.request_timeout_ms
                                                                         : KV_HTTP_SHUTDOWN_GRACE_MS);
    close_idle(th);
    uint64_t deadline = kv_now_ms() + s->cfg.drain_ms;
    while ((th->connections > 0 || th->busy > 0) && kv_now_ms() < deadline)
        h2o_evloop_run(th->loop, 10);
    if (th->connections > 0 || th->busy > 0) {
        kv_log_warn(s->cfg.name, "thread %d: %llu connections still open after %llu ms; leaving them",
                    th->idx, (unsigned long long)th->connections, (unsigned long long)s->cfg.drain_ms);
        return NULL; /* h2o asserts on disposing a context with live connections: skip it */
    }
    if (s->cfg.thread_stop)
        s->cfg.thread_stop(th);
    h2o_multithread_unregister_receiver(th->ctx.queue, &th->wake_rx);
    h2o_context_dispose(&th->ctx);
    h2o_evloop_destroy(th->loop);
    return NULL;
}

/* ---- start-up and shutdown ------------------------------------------------------------------------ */

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

int kv_http_listen(struct kv_http_server *s, const struct kv_http_config *cfg, char *err, size_t errlen)
{
    KV_ASSERT(cfg->ep_count > 0 && cfg->ep_count <= KV_HTTP_EP_MAX);
    KV_ASSERT(cfg->thread_size >= sizeof(struct kv_http_thread));
    memset(s, 0, sizeof *s);
    s->cfg = *cfg;
    s->listen_fd = listen_on(cfg->bind, cfg->port, err, errlen);
    if (s->listen_fd < 0)
        return -1;
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    s->nthreads = cfg->threads > 0 ? cfg->threads : (int)(cores > 0 ? cores : 1);
    if (s->nthreads > KV_HTTP_THREADS_MAX)
        s->nthreads = KV_HTTP_THREADS_MAX;
    return 0;
}

static void setup_h2o(struct kv_http_server *s)
{
    h2o_config_init(&s->globalconf);
    s->globalconf.server_name = h2o_iovec_init(s->cfg.server_header, strlen(s->cfg.server_header));
    s->globalconf.http1.upgrade_to_http2 = 0;              /* plaintext HTTP/1 only: see decision 0005 */
    s->globalconf.http2.callbacks.request_shutdown = NULL; /* no HTTP/2: no GOAWAY timer at shutdown */
    s->globalconf.http1.req_timeout = (uint64_t)s->cfg.request_timeout_ms;
    s->globalconf.max_request_entity_size = s->cfg.max_request_body;
    h2o_hostconf_t *host =
        h2o_config_register_host(&s->globalconf, h2o_iovec_init(H2O_STRLIT("default")), 65535);
    h2o_pathconf_t *path = h2o_config_register_path(host, "/", 0);
    json_errors_register(path);
    json_errors_register(&host->fallback_path); /* where h2o's early errors are bound */
    struct handler_ref *h = (struct handler_ref *)h2o_create_handler(path, sizeof *h);
    h->super.on_req = on_req;
    h->super.on_context_init = on_context_init;
    h->srv = s;
}

void kv_http_start(struct kv_http_server *s)
{
    setup_h2o(s);
    s->threads = kv_calloc((size_t)s->nthreads, s->cfg.thread_size);
    pthread_barrier_init(&s->ready, NULL, (unsigned)s->nthreads + 1);
    for (int i = 0; i < s->nthreads; i++) {
        struct kv_http_thread *th = kv_http_thread_at(s, i);
        th->srv = s;
        th->idx = i;
        KV_ASSERT(pthread_create(&th->tid, NULL, thread_main, th) == 0);
    }
    pthread_barrier_wait(&s->ready);
}

void kv_http_stop(struct kv_http_server *s)
{
    if (s->threads == NULL)
        return;
    atomic_store(&s->stopping, true);
    for (int i = 0; i < s->nthreads; i++)
        h2o_multithread_send_message(&kv_http_thread_at(s, i)->wake_rx, NULL);
    /* with every loop's copy closed too (the first thing a loop does when it drains), the port is
     * closed: new connections are refused at once instead of waiting in the backlog */
    if (s->listen_fd >= 0)
        close(s->listen_fd);
    s->listen_fd = -1;
    for (int i = 0; i < s->nthreads; i++)
        pthread_join(kv_http_thread_at(s, i)->tid, NULL);
}

void kv_http_dispose(struct kv_http_server *s)
{
    if (s->listen_fd >= 0)
        close(s->listen_fd);
    s->listen_fd = -1;
    if (s->threads) {
        pthread_barrier_destroy(&s->ready);
        free(s->threads);
        s->threads = NULL;
        h2o_config_dispose(&s->globalconf);
    }
}

/* ---- signals ------------------------------------------------------------------------------------------- */

static sigset_t stop_signals;

void kv_http_signals_init(void)
{
    signal(SIGPIPE, SIG_IGN);
    sigemptyset(&stop_signals);
    sigaddset(&stop_signals, SIGINT);
    sigaddset(&stop_signals, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &stop_signals, NULL);
}

const char *kv_http_wait_stop(void)
{
    int sig = 0;
    while (sigwait(&stop_signals, &sig) != 0) {
    }
    return sig == SIGINT ? "SIGINT" : "SIGTERM";
}

/* ---- --probe --------------------------------------------------------------------------------------- */

static size_t probe_sink(char *p, size_t size, size_t n, void *arg)
{
    (void)p;
    (void)arg;
    return size * n;
}

int kv_http_probe(const char *prog, const char *url, long timeout_ms)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
    CURL *c = curl_easy_init();
    long status = 0;
    CURLcode rc = CURLE_FAILED_INIT;
    if (c) {
        curl_easy_setopt(c, CURLOPT_URL, url);
        curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, timeout_ms);
        curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, probe_sink);
        rc = curl_easy_perform(c);
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
        curl_easy_cleanup(c);
    }
    curl_global_cleanup();
    if (rc != CURLE_OK)
        fprintf(stderr, "%s: probe %s: %s\n", prog, url, curl_easy_strerror(rc));
    else if (status != 200)
        fprintf(stderr, "%s: probe %s: HTTP %ld\n", prog, url, status);
    return rc == CURLE_OK && status == 200 ? 0 : 1;
}
