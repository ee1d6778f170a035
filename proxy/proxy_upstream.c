/* proxy/proxy_upstream.c - exchanges with backends over pooled keep-alive HTTP/1.1 connections
 * (h2o's http1client and socket pools), in the event loop of the request they serve.
 *
 * One struct upstream carries a request through its attempts: order[at] is the backend being
 * asked. An attempt fails when the backend cannot be reached, breaks the connection or times out
 * before answering, or (for a retried read) answers 503; a retried exchange then moves on to
 * order[at + 1]. A backend that could not be reached at all is marked down on the spot (the health
 * checks mark it up again); one that answered is marked up.
 *
 * Two ways to use the answer:
 *   forward  the status, headers and body go to the client as they arrive. The body passes
 *            through h2o's double buffer as h2o's own reverse proxy does it; while more than
 *            PROXY_STREAM_BUFFER_MAX bytes wait for a slow client, the upstream socket stops
 *            reading (and resumes as the client takes them), so a large value never sits whole in
 *            the proxy. A client that stays slower than upstream_timeout_ms fails the exchange.
 *   fetch    the body is collected (at most max_body bytes, else the exchange fails) and handed to
 *            the caller's callback, which builds the answer (bulk splits, range pages, stats).
 * Memory: an upstream lives in its request's pool; when h2o disposes of the request (answered, or
 * the client went away), the dispose hook cancels any attempt still in flight, so no callback ever
 * runs for a request that is gone. */
#include "proxy/proxy_int.h"
#include "common/kv_assert.h"
#include "common/kv_log.h"
#include "common/kv_time.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum up_mode { UP_FORWARD, UP_FETCH };

struct upstream {
    h2o_generator_t super; /* forward: the client's response generator */
    enum up_mode mode;
    struct proxy_req *r;
    struct proxy_call call;
    struct proxy_backend *order[1 + PROXY_REPLICAS_MAX];
    size_t n, at;
    bool retry;
    h2o_http1client_t *client; /* the attempt in flight, or NULL */
    h2o_iovec_t reqbufs[2];
    uint64_t attempt_ns;
    bool connected; /* the current attempt's request went out: a failure may have applied it */
    char errors[320]; /* "url: why; ..." over the attempts, for the final error */
    /* forward */
    h2o_buffer_t *last_content; /* what was left when the upstream finished */
    h2o_doublebuffer_t sending;
    bool buffers_ready;
    bool paused;              /* reading stopped for a slow client */
    h2o_socket_cb saved_read; /* the client's reader, to resume with */
    bool body_error;
    /* fetch */
    struct proxy_fetch fetch;
    size_t max_body;
    proxy_fetch_cb cb;
};

static void start_attempt(struct upstream *u);

/* ---- backends' figures -------------------------------------------------------------------------- */

void proxy_backend_failed(struct proxy_backend *b, const char *why, bool unreachable)
{
    atomic_fetch_add_explicit(&b->failures, 1, memory_order_relaxed);
    pthread_mutex_lock(&b->mu);
    snprintf(b->last_error, sizeof b->last_error, "%s", why);
    pthread_mutex_unlock(&b->mu);
    if (unreachable && atomic_exchange(&b->up, false))
        kv_log_warn(PROXY_COMPONENT, "%s (%s of shard '%s') is down: %s", b->url,
                    b->role == PROXY_MAIN ? "main" : "replica", b->shard->name, why);
}

void proxy_backend_answered(struct proxy_backend *b, int status, uint64_t latency_us)
{
    int cls = status / 100;
    if (cls < 1 || cls > 5)
        cls = 5;
    atomic_fetch_add_explicit(&b->requests, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&b->status[cls], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&b->latency_sum_us, latency_us, memory_order_relaxed);
}

void proxy_backend_last_error(struct proxy_backend *b, char *out, size_t cap)
{
    pthread_mutex_lock(&b->mu);
    snprintf(out, cap, "%s", b->last_error);
    pthread_mutex_unlock(&b->mu);
}

/* ---- the request line and headers ----------------------------------------------------------------- */

/* Headers that describe one hop, never forwarded either way. */
static bool hop_by_hop(const h2o_iovec_t *name)
{
    if (h2o_iovec_is_token(name)) {
        const h2o_token_t *t = H2O_STRUCT_FROM_MEMBER(h2o_token_t, buf, name);
        return t->proxy_should_drop_for_req || t == H2O_TOKEN_HOST || t == H2O_TOKEN_CONTENT_LENGTH ||
               t == H2O_TOKEN_TRANSFER_ENCODING || t == H2O_TOKEN_TE || t == H2O_TOKEN_UPGRADE ||
               t == H2O_TOKEN_KEEP_ALIVE || t == H2O_TOKEN_EXPECT || t == H2O_TOKEN_CONNECTION;
    }
    return h2o_lcstris(name->base, name->len, H2O_STRLIT("proxy-connection"));
}

static bool is_min_seq(const h2o_iovec_t *name)
{
    return h2o_lcstris(name->base, name->len, H2O_STRLIT("x-triekv-min-seq"));
}

static void build_request(struct upstream *u, struct proxy_backend *b)
{
    h2o_req_t *req = u->r->h.req;
    const struct proxy_call *c = &u->call;
    struct kv_buf h = {0};
    kv_buf_append(&h, c->method.base, c->method.len);
    kv_buf_append_byte(&h, ' ');
    kv_buf_append(&h, c->path.base, c->path.len);
    kv_buf_printf(&h, " HTTP/1.1\r\nhost: %s\r\nconnection: keep-alive\r\n", b->authority);
    bool is_post_or_put = h2o_memis(c->method.base, c->method.len, H2O_STRLIT("POST")) ||
                          h2o_memis(c->method.base, c->method.len, H2O_STRLIT("PUT"));
    if (c->body.base != NULL || is_post_or_put)
        kv_buf_printf(&h, "content-length: %zu\r\n", c->body.base ? c->body.len : 0);
    if (c->content_type)
        kv_buf_printf(&h, "content-type: %s\r\n", c->content_type);
    for (size_t i = 0; i < req->headers.size; i++) {
        const h2o_header_t *x = &req->headers.entries[i];
        bool min_seq = is_min_seq(x->name);
        if (hop_by_hop(x->name) || (min_seq && !(c->keep_min_seq && b->role == PROXY_REPLICA)))
            continue;
        if (!c->client_headers && !min_seq)
            continue;
        if (c->content_type && x->name == &H2O_TOKEN_CONTENT_TYPE->buf)
            continue;
        kv_buf_append(&h, x->orig_name ? x->orig_name : x->name->base, x->name->len);
        kv_buf_append_str(&h, ": ");
        kv_buf_append(&h, x->value.base, x->value.len);
        kv_buf_append_str(&h, "\r\n");
    }
    kv_buf_append_str(&h, "\r\n");
    char *p = h2o_mem_alloc_pool(&req->pool, h.len);
    memcpy(p, h.ptr, h.len);
    u->reqbufs[0] = h2o_iovec_init(p, h.len);
    u->reqbufs[1] = c->body;
    kv_buf_free(&h);
}

/* ---- attempts -------------------------------------------------------------------------------------- */

static bool is_head(const struct upstream *u)
{
    return h2o_memis(u->call.method.base, u->call.method.len, H2O_STRLIT("HEAD"));
}

/* The final error, when no backend answered. */
static void give_up(struct upstream *u)
{
    struct proxy_backend *last = u->order[u->n ? u->n - 1 : 0];
    if (u->mode == UP_FETCH) {
        u->fetch.status = 0;
        u->fetch.backend = u->order[u->at < u->n ? u->at : u->n - 1];
        snprintf(u->fetch.errstr, sizeof u->fetch.errstr, "%s", u->errors);
        u->cb(&u->fetch);
        return;
    }
    struct kv_http_req *h = &u->r->h;
    struct proxy_shard *s = last->shard;
    if (!u->retry && u->connected)
        kv_http_error(h, 502, "main_failed",
                      "shard '%s': the main %s broke off before answering (%s); the write may or may not have "
                      "been applied: read the key to see",
                      s->name, u->order[0]->url, u->errors);
    else if (!u->retry)
        kv_http_error(h, 503, "main_unavailable",
                      "shard '%s': its main cannot be reached (%s); nothing was written. Reads of its keys still "
                      "go to its replicas; retry the write when the main is back",
                      s->name, u->errors);
    else
        kv_http_error(h, 503, "shard_unavailable", "shard '%s': no backend answered (%s)", s->name, u->errors);
}

/* The current attempt failed; the next backend gets the request, or the exchange gives up. */
static void attempt_failed(struct upstream *u, const char *why, bool unreachable)
{
    struct proxy_backend *b = u->order[u->at];
    u->client = NULL;
    proxy_backend_failed(b, why, unreachable);
    size_t len = strlen(u->errors);
    snprintf(u->errors + len, sizeof u->errors - len, "%s%s: %s", len ? "; " : "", b->url, why);
    if (u->retry && u->at + 1 < u->n) {
        u->at++;
        start_attempt(u);
        return;
    }
    give_up(u);
}

static void copy_headers(h2o_req_t *req, const h2o_header_t *headers, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        const h2o_iovec_t *name = headers[i].name;
        h2o_iovec_t value = h2o_strdup(&req->pool, headers[i].value.base, headers[i].value.len);
        if (h2o_iovec_is_token(name)) {
            const h2o_token_t *t = H2O_STRUCT_FROM_MEMBER(h2o_token_t, buf, name);
            if (t->proxy_should_drop_for_res || t == H2O_TOKEN_CONTENT_LENGTH || t == H2O_TOKEN_DATE ||
                t == H2O_TOKEN_SERVER || t == H2O_TOKEN_TRANSFER_ENCODING || t == H2O_TOKEN_CONNECTION)
                continue;
            h2o_add_header(&req->pool, &req->res.headers, t, NULL, value.base, value.len);
        } else {
            h2o_iovec_t nm = h2o_strdup(&req->pool, name->base, name->len);
            h2o_add_header_by_str(&req->pool, &req->res.headers, nm.base, nm.len, 0, NULL, value.base, value.len);
        }
    }
}

/* ---- forward: streaming the answer to the client ----------------------------------------------------- */

static void do_send(struct upstream *u)
{
    h2o_req_t *req = u->r->h.req;
    KV_ASSERT(u->sending.bytes_inflight == 0);
    h2o_buffer_t **from = u->client != NULL ? &u->client->sock->input : &u->last_content;
    h2o_iovec_t v = h2o_doublebuffer_prepare(&u->sending, from, req->preferred_chunk_size);
    h2o_send_state_t state;
    size_t cnt = 1;
    if (u->client == NULL && v.len == u->sending.buf->size && u->last_content->size == 0) {
        cnt = v.len != 0 ? 1 : 0;
        state = u->body_error ? H2O_SEND_STATE_ERROR : H2O_SEND_STATE_FINAL;
    } else {
        if (v.len == 0)
            return;
        state = H2O_SEND_STATE_IN_PROGRESS;
    }
    h2o_send(req, &v, cnt, state);
}

static void pause_reading(struct upstream *u)
{
    if (u->paused || u->client == NULL || u->client->sock->input->size <= PROXY_STREAM_BUFFER_MAX)
        return;
    u->saved_read = u->client->sock->_cb.read; /* http1client's body reader: private, so saved here */
    h2o_socket_read_stop(u->client->sock);
    u->paused = true;
}

static void resume_reading(struct upstream *u)
{
    if (!u->paused || u->client == NULL || u->client->sock->input->size > PROXY_STREAM_BUFFER_MAX / 2)
        return;
    u->paused = false;
    h2o_socket_read_start(u->client->sock, u->saved_read);
}

static void on_proceed(h2o_generator_t *g, h2o_req_t *req)
{
    struct upstream *u = (struct upstream *)g;
    (void)req;
    h2o_doublebuffer_consume(&u->sending);
    resume_reading(u);
    do_send(u);
}

static void on_stop(h2o_generator_t *g, h2o_req_t *req)
{
    struct upstream *u = (struct upstream *)g;
    (void)req;
    if (u->client != NULL) {
        h2o_http1client_cancel(u->client);
        u->client = NULL;
    }
}

static int on_body_forward(h2o_http1client_t *client, const char *errstr)
{
    struct upstream *u = client->data;
    if (errstr != NULL) {
        /* the upstream is done (or failed): keep what it left, for do_send */
        h2o_buffer_t *t = u->last_content;
        u->last_content = client->sock->input;
        client->sock->input = t;
        u->client = NULL;
        if (errstr != h2o_http1client_error_is_eos) {
            u->body_error = true;
            proxy_backend_failed(u->order[u->at], errstr, false);
            kv_log_warn(PROXY_COMPONENT, "%s broke off an answer: %s", u->order[u->at]->url, errstr);
        }
    } else {
        pause_reading(u);
    }
    if (u->sending.bytes_inflight == 0)
        do_send(u);
    return 0;
}

/* ---- fetch: collecting the answer ------------------------------------------------------------------------ */

static int on_body_fetch(h2o_http1client_t *client, const char *errstr)
{
    struct upstream *u = client->data;
    h2o_buffer_t *in = client->sock->input;
    if (u->fetch.body.len + in->size > u->max_body) {
        u->client = NULL;
        u->fetch.status = 0;
        u->fetch.backend = u->order[u->at];
        snprintf(u->fetch.errstr, sizeof u->fetch.errstr, "%s answered more than %zu bytes", u->order[u->at]->url,
                 u->max_body);
        u->cb(&u->fetch);
        return -1; /* closes the connection */
    }
    kv_buf_append(&u->fetch.body, in->bytes, in->size);
    h2o_buffer_consume(&client->sock->input, in->size);
    if (errstr == NULL)
        return 0;
    u->client = NULL;
    if (errstr != h2o_http1client_error_is_eos) {
        attempt_failed(u, errstr, false);
        return 0;
    }
    u->cb(&u->fetch);
    return 0;
}

/* ---- the attempt's callbacks ---------------------------------------------------------------------------- */

static h2o_http1client_body_cb on_head(h2o_http1client_t *client, const char *errstr, int minor_version, int status,
                                       h2o_iovec_t msg, h2o_header_t *headers, size_t num_headers, int rlen)
{
    struct upstream *u = client->data;
    struct proxy_backend *b = u->order[u->at];
    (void)minor_version;
    (void)rlen;
    if (errstr != NULL && errstr != h2o_http1client_error_is_eos) {
        attempt_failed(u, errstr, false);
        return NULL;
    }
    uint64_t us = (kv_now_ns() - u->attempt_ns) / 1000;
    proxy_backend_answered(b, status, us);
    if (!atomic_load_explicit(&b->up, memory_order_relaxed) && status != 503)
        atomic_store(&b->up, true); /* it answers: the next health check agrees */
    if (u->retry && status == 503 && u->at + 1 < u->n) {
        /* a replica loading a snapshot, or behind the seq asked for: the next backend may serve */
        char why[64];
        snprintf(why, sizeof why, "answered 503");
        u->client = NULL;
        size_t len = strlen(u->errors);
        snprintf(u->errors + len, sizeof u->errors - len, "%s%s: %s", len ? "; " : "", b->url, why);
        u->at++;
        start_attempt(u);
        return NULL;
    }
    bool eos = errstr == h2o_http1client_error_is_eos;
    if (u->mode == UP_FETCH) {
        u->fetch.status = status;
        u->fetch.backend = b;
        for (size_t i = 0; i < num_headers; i++) {
            if (h2o_lcstris(headers[i].name->base, headers[i].name->len, H2O_STRLIT("x-triekv-seq")))
                snprintf(u->fetch.seq, sizeof u->fetch.seq, "%.*s", (int)headers[i].value.len,
                         headers[i].value.base);
        }
        if (eos) {
            u->client = NULL;
            u->cb(&u->fetch);
            return NULL;
        }
        return on_body_fetch;
    }
    h2o_req_t *req = u->r->h.req;
    req->res.status = status;
    req->res.reason = h2o_strdup(&req->pool, msg.base, msg.len).base;
    for (size_t i = 0; i < num_headers; i++) {
        if (headers[i].name == &H2O_TOKEN_CONTENT_LENGTH->buf)
            req->res.content_length = h2o_strtosize(headers[i].value.base, headers[i].value.len);
    }
    copy_headers(req, headers, num_headers);
    h2o_add_header_by_str(&req->pool, &req->res.headers, H2O_STRLIT("x-triekv-backend"), 0, NULL, b->url,
                          strlen(b->url));
    kv_http_count(&u->r->h, status);
    h2o_doublebuffer_init(&u->sending, &h2o_socket_buffer_prototype);
    h2o_buffer_init(&u->last_content, &h2o_socket_buffer_prototype);
    u->buffers_ready = true;
    u->super.proceed = on_proceed;
    u->super.stop = on_stop;
    h2o_start_response(req, &u->super);
    if (eos) {
        u->client = NULL;
        h2o_send(req, NULL, 0, H2O_SEND_STATE_FINAL);
        return NULL;
    }
    return on_body_forward;
}

static h2o_http1client_head_cb on_connect(h2o_http1client_t *client, const char *errstr, h2o_iovec_t **reqbufs,
                                          size_t *reqbufcnt, int *method_is_head)
{
    struct upstream *u = client->data;
    if (errstr != NULL) {
        attempt_failed(u, errstr, true);
        return NULL;
    }
    u->connected = true;
    *reqbufs = u->reqbufs;
    *reqbufcnt = u->reqbufs[1].base != NULL && u->reqbufs[1].len > 0 ? 2 : 1;
    *method_is_head = is_head(u);
    return on_head;
}

static void start_attempt(struct upstream *u)
{
    struct proxy_backend *b = u->order[u->at];
    struct proxy_thread *th = u->r->th;
    u->connected = false;
    u->attempt_ns = kv_now_ns();
    build_request(u, b);
    h2o_http1client_connect_with_pool(&u->client, u, &th->client_ctx, &b->pool, on_connect);
}

static void upstream_dispose(void *p)
{
    struct upstream *u = p;
    if (u->client != NULL) {
        h2o_http1client_cancel(u->client);
        u->client = NULL;
    }
    if (u->buffers_ready) {
        h2o_buffer_dispose(&u->last_content);
        h2o_doublebuffer_dispose(&u->sending);
    }
    kv_buf_free(&u->fetch.body);
}

static struct upstream *upstream_new(struct proxy_req *r, enum up_mode mode, const struct proxy_call *call,
                                     struct proxy_backend **order, size_t n, bool retry)
{
    KV_ASSERT(n >= 1 && n <= 1 + PROXY_REPLICAS_MAX);
    struct upstream *u = h2o_mem_alloc_shared(&r->h.req->pool, sizeof *u, upstream_dispose);
    memset(u, 0, sizeof *u);
    u->mode = mode;
    u->r = r;
    u->call = *call;
    memcpy(u->order, order, n * sizeof *order);
    u->n = n;
    u->retry = retry;
    return u;
}

void proxy_forward(struct proxy_req *r, const struct proxy_call *call, struct proxy_backend **order, size_t n,
                   bool retry)
{
    struct upstream *u = upstream_new(r, UP_FORWARD, call, order, n, retry);
    start_attempt(u);
}

struct proxy_fetch *proxy_fetch_start(struct proxy_req *r, const struct proxy_call *call,
                                      struct proxy_backend **order, size_t n, bool retry, size_t max_body,
                                      proxy_fetch_cb cb, void *arg)
{
    struct upstream *u = upstream_new(r, UP_FETCH, call, order, n, retry);
    u->max_body = max_body;
    u->cb = cb;
    u->fetch.arg = arg;
    start_attempt(u);
    return &u->fetch;
}
