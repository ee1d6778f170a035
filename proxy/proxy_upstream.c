/* proxy/proxy_upstream.c - exchanges with backends over keep-alive HTTP/1.1 connections that each
 * loop thread keeps for itself, in the event loop of the request they serve.
 *
 * Connections: a loop keeps its idle connections to each backend in a list (most recently used
 * first, at most PROXY_IDLE_PER_BACKEND). An idle connection stays registered for reading, so a
 * node that closes it (or sends anything) is noticed at once and the connection dropped; one idle
 * for PROXY_POOL_IDLE_MS, well under a node's own keep-alive timeout, is closed. A connection never
 * leaves its loop, so taking and returning one costs no system call: this is why the proxy does
 * not use h2o's shared socket pool, which moves sockets between loops (an epoll_ctl pair, two
 * fcntl and a recv per request, measured: 7 of the 11 system calls a proxied GET made).
 *
 * An exchange carries one request through its attempts: order[at] is the backend being asked. An
 * attempt fails when the backend cannot be reached, breaks the connection or stays silent for
 * upstream_timeout_ms before answering, or (for a retried read) answers 503; a retried exchange
 * then moves on to order[at + 1]. A backend that could not be reached at all is marked down on the
 * spot (the health checks mark it up again); one that answered is marked up.
 *
 * Answers are read with a small strict parser of the status line and headers. A node always sends
 * Content-Length (or no body: HEAD, 204, 304); anything else from a backend is a 502, and bytes past
 * the body end keep-alive. Two ways to use an answer:
 *   forward  status, headers and body go to the client as they arrive, through h2o's double buffer
 *            as h2o's own reverse proxy does it; while more than PROXY_STREAM_BUFFER_MAX bytes wait
 *            for a slow client, reading stops (and resumes as the client takes them), so a large
 *            value never sits whole in the proxy. The node's clock (upstream_timeout_ms) stops
 *            meanwhile: a slow client is waited for, as a node waits for it.
 *   fetch    the body is collected (at most max_body bytes, else the exchange fails) and handed to
 *            the caller's callback, which builds the answer (bulk splits, range pages, stats).
 * Memory: an exchange lives in its request's pool; when h2o disposes of the request (answered, or
 * the client went away), the dispose hook closes a connection still in use, so no callback ever
 * runs for a request that is gone. */
#include "proxy/proxy_int.h"
#include "common/kv_assert.h"
#include "common/kv_log.h"
#include "common/kv_time.h"

#include <errno.h>
#include <netdb.h>
#include <sys/socket.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define HEAD_MAX    (64u << 10) /* a node's status line and headers */
#define HEADERS_MAX 100

/* ---- connections -------------------------------------------------------------------------------- */

struct upconn {
    h2o_socket_t *sock;
    struct proxy_backend *b;
    struct proxy_thread *th;
    h2o_linklist_t idle_link;       /* in th->idle[b->idx] while idle */
    h2o_timeout_entry_t idle_timer; /* on th->idle_timeout while idle */
    struct upstream *u;             /* the exchange using it */
    h2o_hostinfo_getaddr_req_t *getaddr;
    bool reused;
};

enum up_mode { UP_FORWARD, UP_FETCH };
enum up_phase { PH_CONNECT, PH_HEAD, PH_BODY, PH_DONE };

struct upstream {
    h2o_generator_t super; /* forward: the client's response generator */
    enum up_mode mode;
    enum up_phase phase;
    struct proxy_req *r;
    struct proxy_call call;
    struct proxy_backend *order[1 + PROXY_REPLICAS_MAX];
    size_t n, at;
    bool retry;
    struct upconn *conn;          /* the attempt's connection, or NULL */
    h2o_timeout_entry_t io_timer; /* on th->io_timeout while the backend owes bytes */
    h2o_iovec_t reqbufs[2];
    uint64_t attempt_ns;
    bool sent;        /* the request went out: a failure may have applied it */
    char errors[320]; /* "url: why; ..." over the attempts, for the final error */
    size_t body_left;
    bool keepalive;
    /* forward */
    h2o_buffer_t *last_content; /* what was left when the answer was complete */
    h2o_doublebuffer_t sending;
    bool buffers_ready;
    bool paused;
    bool body_error;
    /* fetch */
    struct proxy_fetch fetch;
    size_t max_body;
    proxy_fetch_cb cb;
};

static void start_attempt(struct upstream *u);
static void on_read(h2o_socket_t *sock, const char *err);

static void conn_close(struct upconn *c)
{
    if (h2o_linklist_is_linked(&c->idle_link)) {
        h2o_linklist_unlink(&c->idle_link);
        c->th->idle_count[c->b->idx]--;
    }
    if (h2o_timeout_is_linked(&c->idle_timer))
        h2o_timeout_unlink(&c->idle_timer);
    if (c->getaddr)
        h2o_hostinfo_getaddr_cancel(c->getaddr);
    if (c->sock)
        h2o_socket_close(c->sock);
    free(c);
}

static void on_idle_event(h2o_socket_t *sock, const char *err)
{
    (void)err; /* EOF, or bytes nobody asked for: either way the connection is done */
    conn_close(sock->data);
}

static void on_idle_timeout(h2o_timeout_entry_t *entry)
{
    conn_close(H2O_STRUCT_FROM_MEMBER(struct upconn, idle_timer, entry));
}

/* Gives c back to its loop's idle list (or closes it). */
static void conn_release(struct upconn *c, bool reusable)
{
    struct proxy_thread *th = c->th;
    c->u = NULL;
    if (!reusable || c->sock == NULL || c->sock->input->size != 0 ||
        th->idle_count[c->b->idx] >= PROXY_IDLE_PER_BACKEND || kv_http_stopping(&th->px->http)) {
        conn_close(c);
        return;
    }
    h2o_socket_read_start(c->sock, on_idle_event);
    h2o_linklist_insert(th->idle[c->b->idx].next, &c->idle_link); /* most recent first */
    th->idle_count[c->b->idx]++;
    h2o_timeout_link(th->http.loop, &th->idle_timeout, &c->idle_timer);
}

static struct upconn *conn_take(struct proxy_thread *th, struct proxy_backend *b)
{
    h2o_linklist_t *list = &th->idle[b->idx];
    if (h2o_linklist_is_empty(list))
        return NULL;
    struct upconn *c = H2O_STRUCT_FROM_MEMBER(struct upconn, idle_link, list->next);
    h2o_linklist_unlink(&c->idle_link);
    th->idle_count[b->idx]--;
    h2o_timeout_unlink(&c->idle_timer);
    c->reused = true;
    return c;
}

void proxy_upstream_thread_init(struct proxy_thread *th)
{
    size_t n = th->px->map.nbackends;
    th->idle = kv_calloc(n, sizeof *th->idle);
    th->idle_count = kv_calloc(n, sizeof *th->idle_count);
    for (size_t i = 0; i < n; i++)
        h2o_linklist_init_anchor(&th->idle[i]);
    h2o_timeout_init(th->http.loop, &th->idle_timeout, PROXY_POOL_IDLE_MS);
    h2o_timeout_init(th->http.loop, &th->io_timeout, (uint64_t)th->px->cfg.upstream_timeout_ms);
}

void proxy_upstream_thread_dispose(struct proxy_thread *th)
{
    for (size_t i = 0; i < th->px->map.nbackends; i++) {
        while (!h2o_linklist_is_empty(&th->idle[i]))
            conn_close(H2O_STRUCT_FROM_MEMBER(struct upconn, idle_link, th->idle[i].next));
    }
    h2o_evloop_run(th->http.loop, 0); /* the closed sockets are disposed of */
    h2o_timeout_dispose(th->http.loop, &th->idle_timeout);
    h2o_timeout_dispose(th->http.loop, &th->io_timeout);
    free(th->idle);
    free(th->idle_count);
}

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

/* ---- the request --------------------------------------------------------------------------------- */

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

static bool method_is(const struct upstream *u, const char *m)
{
    return h2o_memis(u->call.method.base, u->call.method.len, m, strlen(m));
}

static void build_request(struct upstream *u, struct proxy_backend *b)
{
    h2o_req_t *req = u->r->h.req;
    const struct proxy_call *c = &u->call;
    struct kv_buf h = {0};
    kv_buf_append(&h, c->method.base, c->method.len);
    kv_buf_append_byte(&h, ' ');
    kv_buf_append(&h, c->path.base, c->path.len);
    kv_buf_printf(&h, " HTTP/1.1\r\nhost: %s\r\n", b->authority);
    if (c->body.base != NULL || method_is(u, "POST") || method_is(u, "PUT"))
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

/* ---- the answer's head --------------------------------------------------------------------------- */

struct head {
    int minor, status;
    h2o_iovec_t reason;
    struct {
        h2o_iovec_t name, value; /* the name in lower case (rewritten in place) */
    } h[HEADERS_MAX];
    size_t n;
    size_t content_length; /* SIZE_MAX: none given */
    bool close, keep_alive, chunked;
};

static bool is_tchar(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           strchr("!#$%&'*+-.^_`|~", c);
}

/* Parses "HTTP/1.x SSS reason" CRLF, then "name: value" CRLF lines, then CRLF, from p[0..len).
 * Returns the head's length, 0 while incomplete, -1 when malformed. Names are lowercased in place. */
static ssize_t parse_head(char *p, size_t len, struct head *out)
{
    char *end = memmem(p, len, "\r\n\r\n", 4);
    if (end == NULL)
        return len > HEAD_MAX ? -1 : 0;
    end += 2; /* the last header line's CRLF */
    memset(out, 0, sizeof *out);
    out->content_length = SIZE_MAX;
    char *line_end = memmem(p, (size_t)(end - p), "\r\n", 2);
    if ((size_t)(line_end - p) < 12 || memcmp(p, "HTTP/1.", 7) != 0 || (p[7] != '0' && p[7] != '1') ||
        p[8] != ' ' || p[9] < '1' || p[9] > '5' || p[10] < '0' || p[10] > '9' || p[11] < '0' || p[11] > '9' ||
        (line_end - p > 12 && p[12] != ' '))
        return -1;
    out->minor = p[7] - '0';
    out->status = (p[9] - '0') * 100 + (p[10] - '0') * 10 + (p[11] - '0');
    out->reason =
        line_end - p > 13 ? h2o_iovec_init(p + 13, (size_t)(line_end - p - 13)) : h2o_iovec_init("", 0);
    for (char *l = line_end + 2; l < end;) {
        char *e = memmem(l, (size_t)(end - l), "\r\n", 2);
        char *colon = memchr(l, ':', (size_t)(e - l));
        if (colon == NULL || colon == l || out->n == HEADERS_MAX)
            return -1;
        for (char *c = l; c < colon; c++) {
            if (!is_tchar(*c))
                return -1;
            *c = (char)(*c >= 'A' && *c <= 'Z' ? *c + 32 : *c);
        }
        char *v = colon + 1, *ve = e;
        while (v < ve && (*v == ' ' || *v == '\t'))
            v++;
        while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t'))
            ve--;
        h2o_iovec_t name = h2o_iovec_init(l, (size_t)(colon - l)),
                    value = h2o_iovec_init(v, (size_t)(ve - v));
        if (h2o_memis(name.base, name.len, H2O_STRLIT("content-length"))) {
            size_t cl = h2o_strtosize(value.base, value.len);
            if (cl == SIZE_MAX || (out->content_length != SIZE_MAX && out->content_length != cl))
                return -1;
            out->content_length = cl;
        } else if (h2o_memis(name.base, name.len, H2O_STRLIT("connection"))) {
            out->close |= h2o_contains_token(value.base, value.len, H2O_STRLIT("close"), ',');
            out->keep_alive |= h2o_contains_token(value.base, value.len, H2O_STRLIT("keep-alive"), ',');
        } else if (h2o_memis(name.base, name.len, H2O_STRLIT("transfer-encoding"))) {
            out->chunked = true;
        }
        out->h[out->n].name = name;
        out->h[out->n].value = value;
        out->n++;
        l = e + 2;
    }
    return end + 2 - p;
}

/* ---- attempts ---------------------------------------------------------------------------------------- */

/* The final error, when no backend answered. */
static void give_up(struct upstream *u)
{
    u->phase = PH_DONE;
    if (u->mode == UP_FETCH) {
        u->fetch.status = 0;
        u->fetch.sent = u->sent;
        u->fetch.backend = u->order[u->at < u->n ? u->at : u->n - 1];
        snprintf(u->fetch.errstr, sizeof u->fetch.errstr, "%s", u->errors);
        u->cb(&u->fetch);
        return;
    }
    struct kv_http_req *h = &u->r->h;
    struct proxy_shard *s = u->order[0]->shard;
    if (!u->retry && u->sent)
        kv_http_error(
            h, 502, "main_failed",
            "shard '%s': the main %s broke off before answering (%s); the write may or may not have "
            "been applied: read the key to see",
            s->name, u->order[0]->url, u->errors);
    else if (!u->retry)
        kv_http_error(
            h, 503, "main_unavailable",
            "shard '%s': its main cannot be reached (%s); nothing was written. Reads of its keys still "
            "go to its replicas; retry the write when the main is back",
            s->name, u->errors);
    else
        kv_http_error(h, 503, "shard_unavailable", "shard '%s': no backend answered (%s)", s->name,
                      u->errors);
}

/* Drops the attempt's connection (not reusable) and its timer. */
static void detach(struct upstream *u, bool reusable)
{
    if (h2o_timeout_is_linked(&u->io_timer))
        h2o_timeout_unlink(&u->io_timer);
    if (u->conn != NULL) {
        struct upconn *c = u->conn;
        u->conn = NULL;
        conn_release(c, reusable);
    }
}

static void note_error(struct upstream *u, struct proxy_backend *b, const char *why)
{
    size_t len = strlen(u->errors);
    snprintf(u->errors + len, sizeof u->errors - len, "%s%s: %s", len ? "; " : "", b->url, why);
}

/* The current attempt failed before an answer; the next backend gets the request, or the exchange
 * gives up. */
static void attempt_failed(struct upstream *u, const char *why, bool unreachable)
{
    struct proxy_backend *b = u->order[u->at];
    detach(u, false);
    proxy_backend_failed(b, why, unreachable);
    note_error(u, b, why);
    if (u->retry && u->at + 1 < u->n) {
        u->at++;
        start_attempt(u);
        return;
    }
    give_up(u);
}

static void on_io_timeout(h2o_timeout_entry_t *entry)
{
    struct upstream *u = H2O_STRUCT_FROM_MEMBER(struct upstream, io_timer, entry);
    if (u->phase == PH_CONNECT || u->phase == PH_HEAD) {
        attempt_failed(u, u->phase == PH_CONNECT ? "connection timed out" : "no answer in time",
                       u->phase == PH_CONNECT);
        return;
    }
    /* the body stopped coming, or a slow client kept it waiting too long */
    u->body_error = true;
    proxy_backend_failed(u->order[u->at], "the answer stopped coming", false);
    if (u->mode == UP_FETCH) {
        attempt_failed(u, "the answer stopped coming", false);
        return;
    }
    h2o_buffer_t *t = u->last_content;
    u->last_content = u->conn->sock->input;
    u->conn->sock->input = t;
    detach(u, false);
    if (u->sending.bytes_inflight == 0) {
        h2o_iovec_t none = h2o_iovec_init(NULL, 0);
        h2o_send(u->r->h.req, &none, 0, H2O_SEND_STATE_ERROR);
    }
}

static void touch_timer(struct upstream *u)
{
    struct proxy_thread *th = u->r->th;
    if (h2o_timeout_is_linked(&u->io_timer))
        h2o_timeout_unlink(&u->io_timer);
    h2o_timeout_link(th->http.loop, &th->io_timeout, &u->io_timer);
}

/* ---- forward: streaming the answer to the client ----------------------------------------------------- */

static void do_send(struct upstream *u)
{
    h2o_req_t *req = u->r->h.req;
    KV_ASSERT(u->sending.bytes_inflight == 0);
    h2o_buffer_t **from = u->conn != NULL ? &u->conn->sock->input : &u->last_content;
    h2o_iovec_t v = h2o_doublebuffer_prepare(&u->sending, from, req->preferred_chunk_size);
    h2o_send_state_t state;
    size_t cnt = 1;
    if (u->conn == NULL && v.len == u->sending.buf->size && u->last_content->size == 0) {
        cnt = v.len != 0 ? 1 : 0;
        state = u->body_error ? H2O_SEND_STATE_ERROR : H2O_SEND_STATE_FINAL;
    } else {
        if (v.len == 0)
            return;
        state = H2O_SEND_STATE_IN_PROGRESS;
    }
    h2o_send(req, &v, cnt, state);
}

static void on_proceed(h2o_generator_t *g, h2o_req_t *req)
{
    struct upstream *u = (struct upstream *)g;
    (void)req;
    h2o_doublebuffer_consume(&u->sending);
    if (u->paused && u->conn != NULL && u->conn->sock->input->size <= PROXY_STREAM_BUFFER_MAX / 2) {
        u->paused = false;
        h2o_socket_read_start(u->conn->sock, on_read);
        touch_timer(u); /* the node owes bytes again */
    }
    do_send(u);
}

static void on_stop(h2o_generator_t *g, h2o_req_t *req)
{
    struct upstream *u = (struct upstream *)g;
    (void)req;
    u->phase = PH_DONE;
    detach(u, false); /* the client went away mid-answer */
}

/* The body is complete: the connection goes back to the loop with an empty input buffer. */
static void forward_body_done(struct upstream *u)
{
    h2o_buffer_t *t = u->last_content;
    u->last_content = u->conn->sock->input;
    u->conn->sock->input = t;
    u->phase = PH_DONE;
    detach(u, u->keepalive);
}

static void forward_body(struct upstream *u, size_t fresh)
{
    if (fresh > u->body_left) { /* bytes past the body: cut them, and no keep-alive */
        u->conn->sock->input->size -= fresh - u->body_left;
        fresh = u->body_left;
        u->keepalive = false;
    }
    u->body_left -= fresh;
    if (u->body_left == 0)
        forward_body_done(u);
    else if (u->conn->sock->input->size > PROXY_STREAM_BUFFER_MAX && !u->paused) {
        /* the client is slower than the node: stop reading, and stop the node's clock too (it is
         * the client that keeps the rest waiting, as it would keep a node waiting) */
        u->paused = true;
        h2o_socket_read_stop(u->conn->sock);
        if (h2o_timeout_is_linked(&u->io_timer))
            h2o_timeout_unlink(&u->io_timer);
    }
    if (u->sending.bytes_inflight == 0)
        do_send(u);
}

static void forward_head(struct upstream *u, const struct head *hd)
{
    h2o_req_t *req = u->r->h.req;
    struct proxy_backend *b = u->order[u->at];
    req->res.status = hd->status;
    req->res.reason = h2o_strdup(&req->pool, hd->reason.base, hd->reason.len).base;
    if (hd->content_length != SIZE_MAX)
        req->res.content_length = hd->content_length;
    for (size_t i = 0; i < hd->n; i++) {
        h2o_iovec_t name = hd->h[i].name;
        const h2o_token_t *t = h2o_lookup_token(name.base, name.len);
        if (t && (t->proxy_should_drop_for_res || t == H2O_TOKEN_CONTENT_LENGTH || t == H2O_TOKEN_DATE ||
                  t == H2O_TOKEN_SERVER || t == H2O_TOKEN_TRANSFER_ENCODING || t == H2O_TOKEN_CONNECTION))
            continue;
        h2o_iovec_t value = h2o_strdup(&req->pool, hd->h[i].value.base, hd->h[i].value.len);
        if (t) {
            h2o_add_header(&req->pool, &req->res.headers, t, NULL, value.base, value.len);
        } else {
            h2o_iovec_t nm = h2o_strdup(&req->pool, name.base, name.len);
            h2o_add_header_by_str(&req->pool, &req->res.headers, nm.base, nm.len, 0, NULL, value.base,
                                  value.len);
        }
    }
    h2o_add_header_by_str(&req->pool, &req->res.headers, H2O_STRLIT("x-triekv-backend"), 0, NULL, b->url,
                          strlen(b->url));
    kv_http_count(&u->r->h, hd->status);
    h2o_doublebuffer_init(&u->sending, &h2o_socket_buffer_prototype);
    h2o_buffer_init(&u->last_content, &h2o_socket_buffer_prototype);
    u->buffers_ready = true;
    u->super.proceed = on_proceed;
    u->super.stop = on_stop;
    h2o_start_response(req, &u->super);
}

/* ---- fetch: collecting the answer ---------------------------------------------------------------------- */

static void fetch_body(struct upstream *u)
{
    h2o_buffer_t *in = u->conn->sock->input;
    size_t take = in->size < u->body_left ? in->size : u->body_left;
    if (in->size > take)
        u->keepalive = false; /* bytes past the body */
    kv_buf_append(&u->fetch.body, in->bytes, take);
    h2o_buffer_consume(&u->conn->sock->input, in->size);
    u->body_left -= take;
    if (u->body_left > 0)
        return;
    u->phase = PH_DONE;
    detach(u, u->keepalive);
    u->cb(&u->fetch);
}

/* ---- reading the answer ----------------------------------------------------------------------------------
 */

/* A complete head arrived: decide, then take the body that came with it. */
static void on_head(struct upstream *u, struct head *hd, size_t head_len)
{
    struct proxy_backend *b = u->order[u->at];
    h2o_buffer_consume(&u->conn->sock->input, head_len);
    bool no_body = method_is(u, "HEAD") || hd->status == 204 || hd->status == 304;
    if (hd->chunked || (hd->content_length == SIZE_MAX && !no_body)) {
        attempt_failed(u, "answered without Content-Length", false);
        return;
    }
    proxy_backend_answered(b, hd->status, (kv_now_ns() - u->attempt_ns) / 1000);
    if (!atomic_load_explicit(&b->up, memory_order_relaxed) && hd->status != 503)
        atomic_store(&b->up, true); /* it answers: the next health check agrees */
    u->keepalive = hd->minor == 1 ? !hd->close : hd->keep_alive;
    if (u->retry && hd->status == 503 && u->at + 1 < u->n) {
        /* a replica loading a snapshot, or behind the seq asked for: the next backend may serve */
        note_error(u, b, "answered 503");
        detach(u, false);
        u->at++;
        start_attempt(u);
        return;
    }
    u->body_left = no_body ? 0 : hd->content_length;
    u->phase = PH_BODY;
    if (u->mode == UP_FETCH) {
        u->fetch.status = hd->status;
        u->fetch.backend = b;
        for (size_t i = 0; i < hd->n; i++) {
            if (h2o_memis(hd->h[i].name.base, hd->h[i].name.len, H2O_STRLIT("x-triekv-seq")))
                snprintf(u->fetch.seq, sizeof u->fetch.seq, "%.*s", (int)hd->h[i].value.len,
                         hd->h[i].value.base);
        }
        if (u->body_left > u->max_body) {
            snprintf(u->fetch.errstr, sizeof u->fetch.errstr, "%s answered %zu bytes, more than %zu", b->url,
                     u->body_left, u->max_body);
            u->fetch.status = 0;
            u->fetch.too_large = true;
            u->fetch.sent = true;
            u->phase = PH_DONE;
            detach(u, false);
            u->cb(&u->fetch);
            return;
        }
        fetch_body(u);
        return;
    }
    forward_head(u, hd);
    forward_body(u, u->conn->sock->input->size);
}

static void on_read(h2o_socket_t *sock, const char *err)
{
    struct upconn *c = sock->data;
    struct upstream *u = c->u;
    if (err != NULL) {
        if (u->phase == PH_HEAD) {
            attempt_failed(u, c->reused && sock->input->size == 0 ? "closed the connection" : err, false);
            return;
        }
        /* mid-body */
        proxy_backend_failed(u->order[u->at], err, false);
        if (u->mode == UP_FETCH) {
            attempt_failed(u, err, false);
            return;
        }
        kv_log_warn(PROXY_COMPONENT, "%s broke off an answer: %s", u->order[u->at]->url, err);
        u->body_error = true;
        h2o_buffer_t *t = u->last_content;
        u->last_content = sock->input;
        sock->input = t;
        detach(u, false);
        if (u->sending.bytes_inflight == 0)
            do_send(u);
        return;
    }
    touch_timer(u);
    if (u->phase == PH_BODY) {
        if (u->mode == UP_FETCH)
            fetch_body(u);
        else
            forward_body(u, sock->bytes_read);
        return;
    }
    for (;;) { /* the head, after any 1xx interim answers */
        struct head hd;
        ssize_t n = parse_head(sock->input->bytes, sock->input->size, &hd);
        if (n == 0)
            return;
        if (n < 0) {
            attempt_failed(u, "sent an answer that is not HTTP/1.1", false);
            return;
        }
        if (hd.status >= 200) {
            on_head(u, &hd, (size_t)n);
            return;
        }
        h2o_buffer_consume(&sock->input, (size_t)n);
    }
}

static void on_written(h2o_socket_t *sock, const char *err)
{
    struct upconn *c = sock->data;
    if (err != NULL && c->u != NULL && c->u->phase == PH_HEAD)
        attempt_failed(c->u, c->reused ? "closed the connection" : err, false);
}

/* The connection is ready: the request goes out, and the answer is read as it comes. */
static void send_request(struct upstream *u)
{
    struct upconn *c = u->conn;
    u->phase = PH_HEAD;
    u->sent = true;
    c->sock->data = c;
    h2o_socket_read_start(c->sock, on_read);
    size_t n = u->reqbufs[1].base != NULL && u->reqbufs[1].len > 0 ? 2 : 1;
    h2o_socket_write(c->sock, u->reqbufs, n, on_written);
    touch_timer(u);
}

static void on_connected(h2o_socket_t *sock, const char *err)
{
    struct upconn *c = sock->data;
    if (err != NULL) {
        attempt_failed(c->u, "connection refused or failed", true);
        return;
    }
    send_request(c->u);
}

static void connect_to(struct upstream *u, struct sockaddr *addr, socklen_t len)
{
    struct upconn *c = u->conn;
    c->sock = h2o_socket_connect(u->r->th->http.loop, addr, len, on_connected);
    if (c->sock == NULL) {
        char why[96];
        snprintf(why, sizeof why, "cannot connect: %s", strerror(errno));
        attempt_failed(u, why, true);
        return;
    }
    c->sock->data = c;
    /* The kernel's receive buffer would grow to megabytes on a fast link, and every read drains
     * it: capped, a slow client's answer costs the proxy about PROXY_STREAM_BUFFER_MAX in user
     * space plus this much in the kernel. */
    int rcvbuf = (int)PROXY_STREAM_BUFFER_MAX;
    setsockopt(h2o_socket_get_fd(c->sock), SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
}

static void on_getaddr(h2o_hostinfo_getaddr_req_t *req, const char *errstr, struct addrinfo *res, void *data)
{
    struct upconn *c = data;
    (void)req;
    c->getaddr = NULL;
    if (errstr != NULL) {
        char why[160];
        snprintf(why, sizeof why, "cannot resolve its name: %s", errstr);
        attempt_failed(c->u, why, true);
        return;
    }
    struct addrinfo *a = h2o_hostinfo_select_one(res);
    connect_to(c->u, a->ai_addr, a->ai_addrlen);
}

static void start_attempt(struct upstream *u)
{
    struct proxy_backend *b = u->order[u->at];
    struct proxy_thread *th = u->r->th;
    u->sent = false;
    u->phase = PH_CONNECT;
    u->attempt_ns = kv_now_ns();
    build_request(u, b);
    struct upconn *c = conn_take(th, b);
    if (c != NULL) {
        c->u = u;
        u->conn = c;
        send_request(u);
        return;
    }
    c = kv_calloc(1, sizeof *c);
    c->b = b;
    c->th = th;
    c->u = u;
    c->idle_timer.cb = on_idle_timeout;
    u->conn = c;
    touch_timer(u); /* connecting counts against upstream_timeout_ms too */
    if (b->addr_len > 0) {
        connect_to(u, (struct sockaddr *)&b->addr, b->addr_len);
        return;
    }
    c->getaddr = h2o_hostinfo_getaddr(&th->http.ctx.receivers.hostinfo_getaddr,
                                      h2o_iovec_init(b->host, strlen(b->host)),
                                      h2o_iovec_init(b->port, strlen(b->port)), AF_UNSPEC, SOCK_STREAM,
                                      IPPROTO_TCP, AI_ADDRCONFIG | AI_NUMERICSERV, on_getaddr, c);
}

static void upstream_dispose(void *p)
{
    struct upstream *u = p;
    detach(u, false);
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
    u->io_timer.cb = on_io_timeout;
    return u;
}

void proxy_forward(struct proxy_req *r, const struct proxy_call *call, struct proxy_backend **order, size_t n,
                   bool retry)
{
    start_attempt(upstream_new(r, UP_FORWARD, call, order, n, retry));
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
