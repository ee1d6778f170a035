/* proxy/proxy_http.c - triekv-proxy's start-up, routing and shutdown. The listener, loop threads,
 * connection cap and drain are common/kv_http.c's; each loop also owns its upstream connections
 * (proxy_upstream.c).
 *
 * Start-up: load the config and the shard map (every mistake is one line and exit status 1; a
 * command-line mistake is status 2), bind the port, check every backend once (so the first
 * requests already know which are down), start the health-check thread, then the loops.
 * Shutdown (SIGTERM/SIGINT): the loops drain (requests in flight finish, upstream exchanges
 * included) and close their idle upstream connections, then the health checks stop. */
#include "proxy/proxy_int.h"
#include "common/kv_assert.h"
#include "common/kv_codec.h"
#include "common/kv_log.h"
#include "common/kv_time.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- routing ------------------------------------------------------------------------------------- */

static const struct kv_api_handlers proxy_api = {
    .kv = proxy_handle_kv,
    .bulk = proxy_handle_bulk,
    .bulk_delete = proxy_handle_bulk_delete,
    .bulk_get = proxy_handle_bulk_get,
    .range = proxy_handle_range,
    .stats = proxy_handle_stats,
    .metrics = proxy_handle_metrics,
    .health = proxy_handle_health,
};

static void on_req(struct kv_http_thread *kth, h2o_req_t *req)
{
    struct proxy_thread *th = (struct proxy_thread *)kth;
    struct proxy_req *r = h2o_mem_alloc_pool(&req->pool, sizeof *r);
    *r = (struct proxy_req){
        .h = {.req = req, .th = kth, .ep = KV_EP_OTHER, .start_ns = kv_now_ns()}, .th = th, .px = th->px};
    if (req->headers.size > PROXY_CLIENT_HEADERS_MAX) { /* the proxy adds its own: keep under a node's 100 */
        kv_http_error(&r->h, 400, "bad_request", "at most %d header lines through the proxy, got %zu",
                      PROXY_CLIENT_HEADERS_MAX, req->headers.size);
        return;
    }
    uint64_t seq;
    if (kv_api_is_read(req) && kv_api_min_seq(req, &seq) != 0) { /* checked here: mains never see it */
        kv_http_error(&r->h, 400, "bad_request", "X-Triekv-Min-Seq must be a sequence number");
        return;
    }
    kv_api_route(&r->h, &proxy_api);
}

/* ---- helpers the handlers share --------------------------------------------------------------------- */

void proxy_reply_main_down(struct proxy_req *r, struct proxy_shard *s)
{
    char err[160], lo[128], hi[128];
    proxy_backend_last_error(s->main, err, sizeof err);
    proxy_bound_text(&s->start, true, lo, sizeof lo);
    proxy_bound_text(&s->end, s->has_end, hi, sizeof hi);
    kv_http_error(
        &r->h, 503, "main_unavailable",
        "shard '%s' (keys from %s to %s): its main %s is down (%s); writes to these keys are refused "
        "until it is back, reads still go to its replicas",
        s->name, lo, hi, s->main->url, err[0] ? err : "no answer");
}

h2o_iovec_t proxy_query_without(struct proxy_req *r, const char *name)
{
    h2o_req_t *req = r->h.req;
    if (req->query_at == SIZE_MAX)
        return h2o_iovec_init("", 0);
    const char *s = req->path.base + req->query_at + 1, *end = req->path.base + req->path.len;
    size_t nl = strlen(name);
    char *out = h2o_mem_alloc_pool(&req->pool, (size_t)(end - s) + 2);
    size_t n = 0;
    while (s < end) {
        const char *amp = memchr(s, '&', (size_t)(end - s));
        const char *stop = amp ? amp : end;
        bool skip = stop == s || ((size_t)(stop - s) >= nl && memcmp(s, name, nl) == 0 &&
                                  ((size_t)(stop - s) == nl || s[nl] == '='));
        if (!skip) {
            out[n] = n == 0 ? '?' : '&';
            n++;
            memcpy(out + n, s, (size_t)(stop - s));
            n += (size_t)(stop - s);
        }
        s = stop + 1;
    }
    return h2o_iovec_init(out, n);
}

/* ---- loop threads ------------------------------------------------------------------------------------- */

static void thread_start(struct kv_http_thread *kth)
{
    struct proxy_thread *th = (struct proxy_thread *)kth;
    th->px = kth->srv->cfg.app;
    proxy_upstream_thread_init(th);
}

static void thread_stop(struct kv_http_thread *kth)
{
    proxy_upstream_thread_dispose((struct proxy_thread *)kth);
}

/* ---- start-up and shutdown ------------------------------------------------------------------------------
 */

static int listen_port(struct proxy *px, char *err, size_t errlen)
{
    struct kv_http_config hc = {
        .name = PROXY_COMPONENT,
        .server_header = "triekv-proxy/" PROXY_VERSION,
        .bind = px->cfg.bind,
        .port = (int)px->cfg.port,
        .threads = (int)px->cfg.threads,
        .max_connections = px->cfg.max_connections,
        .request_timeout_ms = px->cfg.request_timeout_ms,
        .max_request_body = (size_t)px->cfg.max_body_bytes,
        .drain_ms = PROXY_DRAIN_MS,
        .ep_names = kv_api_ep_names,
        .ep_count = KV_EP_COUNT,
        .thread_size = sizeof(struct proxy_thread),
        .thread_start = thread_start,
        .thread_stop = thread_stop,
        .on_req = on_req,
        .app = px,
    };
    return kv_http_listen(&px->http, &hc, err, errlen);
}

static void log_started(struct proxy *px)
{
    size_t up = 0;
    for (size_t i = 0; i < px->map.nbackends; i++)
        up += atomic_load(&px->map.backends[i]->up) ? 1 : 0;
    kv_log_info(PROXY_COMPONENT, "serving: port %lld on %s, %zu shards, %zu backends (%zu up), %d threads",
                (long long)px->cfg.port, px->cfg.bind, px->map.n, px->map.nbackends, up, px->http.nthreads);
    for (size_t i = 0; i < px->map.n; i++) {
        const struct proxy_shard *s = &px->map.shards[i];
        char lo[128], hi[128];
        proxy_bound_text(&s->start, true, lo, sizeof lo);
        proxy_bound_text(&s->end, s->has_end, hi, sizeof hi);
        kv_log_info(PROXY_COMPONENT, "shard '%s': keys from %s to %s, main %s, %zu replica(s)", s->name, lo,
                    hi, s->main->url, s->nreplicas);
    }
}

static void proxy_free(struct proxy *px)
{
    kv_http_dispose(&px->http);
    proxy_map_free(&px->map);
    proxy_config_free(&px->cfg);
    free(px);
}

int proxy_main(int argc, char **argv)
{
    if (argc == 3 && strcmp(argv[1], "--probe") == 0)
        return kv_http_probe("triekv-proxy", argv[2], 2000);
    struct proxy *px = kv_calloc(1, sizeof *px);
    px->http.listen_fd = -1;
    char err[KV_CFG_ERR_MAX];
    int rc = proxy_config_load(&px->cfg, argc, argv, err);
    if (rc == 0)
        rc = proxy_map_build(&px->map, px->cfg.shards, (size_t)px->cfg.max_key_size, err, sizeof err);
    if (rc != 0) {
        if (rc < 0)
            fprintf(stderr, "triekv-proxy: %s\n", err);
        int status = rc > 0 ? 0 : strncmp(err, "usage:", 6) == 0 ? 2 : 1;
        proxy_free(px);
        return status;
    }
    if (px->cfg.check_only) {
        printf("triekv-proxy: the configuration is valid (%zu shards, %zu backends, port %lld)\n", px->map.n,
               px->map.nbackends, (long long)px->cfg.port);
        proxy_free(px);
        return 0;
    }
    enum kv_log_level lvl;
    kv_log_parse_level(px->cfg.log_level, &lvl);
    kv_log_set_level(lvl);
    px->started_ms = kv_now_ms();

    kv_http_signals_init(); /* before any thread starts: they all inherit the mask */

    if (listen_port(px, err, sizeof err) != 0 || proxy_health_start(px, err, sizeof err) != 0) {
        fprintf(stderr, "triekv-proxy: %s\n", err);
        proxy_free(px);
        return 1;
    }
    kv_http_start(&px->http);
    log_started(px);

    const char *sig = kv_http_wait_stop();
    kv_log_info(PROXY_COMPONENT, "%s: stopping (finishing requests in flight)", sig);
    kv_http_stop(&px->http);
    proxy_health_stop(px);
    kv_log_info(PROXY_COMPONENT, "stopped");
    proxy_free(px);
    return 0;
}
