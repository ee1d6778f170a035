/* proxy/proxy_stats.c - the proxy's GET /stats, GET /stats?cluster=true, GET /metrics and
 * GET /health.
 *
 * The proxy's own figures are its request counters (kv_http: by endpoint, status class and latency)
 * and, per backend, its health (up, checks, the last error, the role it reports) and its traffic
 * as the proxy saw it (answers by status class, failures to answer, mean latency to the answer's
 * head). With ?cluster=true the proxy also asks every node for its /stats, at once, and adds them
 * up: keys and value bytes over the mains (replicas hold copies), operations over every node. */
#include "proxy/proxy_int.h"
#include "common/kv_codec.h"
#include "common/kv_time.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NODE_STATS_MAX (1u << 20) /* a node's /stats answer */

static uint64_t ld(const _Atomic uint64_t *a)
{
    return atomic_load_explicit(a, memory_order_relaxed);
}

static const char *role_name(enum proxy_role r)
{
    return r == PROXY_MAIN ? "main" : "replica";
}

static void json_str(struct kv_buf *b, const char *s)
{
    kv_json_append_string(b, (const uint8_t *)s, strlen(s));
}

static void backend_json(struct kv_buf *b, struct proxy_backend *x, uint64_t now)
{
    char err[160], role[16];
    pthread_mutex_lock(&x->mu);
    snprintf(err, sizeof err, "%s", x->last_error);
    snprintf(role, sizeof role, "%s", x->reported_role);
    pthread_mutex_unlock(&x->mu);
    uint64_t requests = ld(&x->requests), last_check = ld(&x->last_check_ms), last_ok = ld(&x->last_ok_ms);
    kv_buf_append_str(b, "{\"url\":");
    json_str(b, x->url);
    kv_buf_printf(b, ",\"role\":\"%s\",\"up\":%s,\"reported_role\":", role_name(x->role),
                  atomic_load(&x->up) ? "true" : "false");
    if (role[0])
        json_str(b, role);
    else
        kv_buf_append_str(b, "null");
    kv_buf_printf(b, ",\"checks\":%llu,\"checks_failed\":%llu,\"last_check_ms_ago\":",
                  (unsigned long long)ld(&x->checks), (unsigned long long)ld(&x->checks_failed));
    if (last_check)
        kv_buf_printf(b, "%llu", (unsigned long long)(now - last_check));
    else
        kv_buf_append_str(b, "null");
    kv_buf_append_str(b, ",\"last_ok_ms_ago\":");
    if (last_ok)
        kv_buf_printf(b, "%llu", (unsigned long long)(now - last_ok));
    else
        kv_buf_append_str(b, "null");
    kv_buf_append_str(b, ",\"last_error\":");
    json_str(b, err);
    kv_buf_printf(b,
                  ",\"requests\":%llu,\"responses\":{\"2xx\":%llu,\"3xx\":%llu,\"4xx\":%llu,\"5xx\":%llu},"
                  "\"failures\":%llu,\"latency_avg_ms\":%.3f}",
                  (unsigned long long)requests, (unsigned long long)ld(&x->status[2]),
                  (unsigned long long)ld(&x->status[3]), (unsigned long long)ld(&x->status[4]),
                  (unsigned long long)ld(&x->status[5]), (unsigned long long)ld(&x->failures),
                  requests ? (double)ld(&x->latency_sum_us) / (double)requests / 1000.0 : 0.0);
}

static void bound_json(struct kv_buf *b, const struct kv_buf *bound, bool present)
{
    if (!present) {
        kv_buf_append_str(b, "null");
        return;
    }
    struct kv_buf pct = {0};
    kv_percent_encode(bound->ptr, bound->len, &pct);
    kv_json_append_string(b, pct.ptr, pct.len);
    kv_buf_free(&pct);
}

/* The proxy's own figures, as JSON members (no braces). */
static void own_stats(struct proxy *px, struct kv_buf *b)
{
    uint64_t now = kv_now_ms();
    kv_buf_printf(
        b,
        "\"role\":\"proxy\",\"version\":\"%s\",\"uptime_seconds\":%llu,\"health_rounds\":%llu,\"shards\":[",
        PROXY_VERSION, (unsigned long long)((now - px->started_ms) / 1000),
        (unsigned long long)atomic_load(&px->health_rounds));
    for (size_t i = 0; i < px->map.n; i++) {
        struct proxy_shard *s = &px->map.shards[i];
        kv_buf_append_str(b, i ? ",{\"name\":" : "{\"name\":");
        json_str(b, s->name);
        kv_buf_append_str(b, ",\"start\":");
        bound_json(b, &s->start, true);
        kv_buf_append_str(b, ",\"end\":");
        bound_json(b, &s->end, s->has_end);
        kv_buf_append_str(b, ",\"main\":");
        backend_json(b, s->main, now);
        kv_buf_append_str(b, ",\"replicas\":[");
        for (size_t k = 0; k < s->nreplicas; k++) {
            if (k)
                kv_buf_append_byte(b, ',');
            backend_json(b, s->replicas[k], now);
        }
        kv_buf_append_str(b, "]}");
    }
    kv_buf_append_str(b, "],");
    kv_http_stats_json(&px->http, b);
}

/* ---- GET /stats?cluster=true ------------------------------------------------------------------------ */

struct cluster {
    struct proxy_req *r;
    struct proxy_fetch **f; /* per backend of the map */
    size_t pending;
};

static void cluster_dispose(void *p)
{
    free(((struct cluster *)p)->f);
}

static uint64_t member_u64(json_t *o, const char *name)
{
    json_t *v = json_object_get(o, name);
    return json_is_integer(v) && json_integer_value(v) > 0 ? (uint64_t)json_integer_value(v) : 0;
}

static void cluster_reply(struct cluster *c)
{
    struct proxy *px = c->r->px;
    struct kv_buf b = {0}, nodes = {0};
    uint64_t keys = 0, value_bytes = 0, gets = 0, sets = 0, deletes = 0;
    size_t answered = 0;
    for (size_t i = 0; i < px->map.nbackends; i++) {
        struct proxy_backend *x = px->map.backends[i];
        struct proxy_fetch *f = c->f[i];
        kv_buf_append_str(&nodes, i ? ",{\"url\":" : "{\"url\":");
        json_str(&nodes, x->url);
        kv_buf_append_str(&nodes, ",\"shard\":");
        json_str(&nodes, x->shard->name);
        kv_buf_printf(&nodes, ",\"role\":\"%s\",", role_name(x->role));
        json_error_t je;
        json_t *j = f->status == 200 ? json_loadb((const char *)f->body.ptr, f->body.len, 0, &je) : NULL;
        if (json_is_object(j)) {
            answered++;
            if (x->role == PROXY_MAIN) {
                keys += member_u64(j, "keys");
                value_bytes += member_u64(j, "value_bytes");
                sets += member_u64(j, "sets");
                deletes += member_u64(j, "deletes");
            }
            gets += member_u64(j, "gets");
            kv_buf_append_str(&nodes, "\"stats\":");
            kv_buf_append(&nodes, f->body.ptr, f->body.len);
            while (nodes.len && (nodes.ptr[nodes.len - 1] == '\n' || nodes.ptr[nodes.len - 1] == ' '))
                nodes.len--;
        } else {
            char why[420];
            if (f->status == 0)
                snprintf(why, sizeof why, "%s", f->errstr);
            else
                snprintf(why, sizeof why, "answered HTTP %d", f->status);
            kv_buf_append_str(&nodes, "\"error\":");
            json_str(&nodes, why);
        }
        json_decref(j);
        kv_buf_append_byte(&nodes, '}');
    }
    kv_buf_append_byte(&b, '{');
    own_stats(px, &b);
    kv_buf_printf(&b,
                  ",\"cluster\":{\"nodes_answered\":%zu,\"nodes\":%zu,\"keys\":%llu,\"value_bytes\":%llu,"
                  "\"gets\":%llu,\"sets\":%llu,\"deletes\":%llu,\"node_stats\":[",
                  answered, px->map.nbackends, (unsigned long long)keys, (unsigned long long)value_bytes,
                  (unsigned long long)gets, (unsigned long long)sets, (unsigned long long)deletes);
    kv_buf_append(&b, nodes.ptr, nodes.len);
    kv_buf_append_str(&b, "]}}");
    kv_buf_free(&nodes);
    kv_http_reply_json(&c->r->h, 200, &b);
}

static void on_node_stats(struct proxy_fetch *f)
{
    struct cluster *c = f->arg;
    if (--c->pending == 0)
        cluster_reply(c);
}

void proxy_handle_stats(struct kv_http_req *h)
{
    struct proxy_req *r = (struct proxy_req *)h;
    struct kv_http_query q;
    bool cluster = false;
    if (kv_http_query_parse(&r->h, &q) != 0 ||
        kv_http_param_bool(&r->h, kv_http_query_get(&q, "cluster"), &cluster) != 0 ||
        kv_http_query_check_unused(&r->h, &q) != 0)
        return;
    struct proxy *px = r->px;
    if (!cluster) {
        struct kv_buf b = {0};
        kv_buf_append_byte(&b, '{');
        own_stats(px, &b);
        kv_buf_append_byte(&b, '}');
        kv_http_reply_json(&r->h, 200, &b);
        return;
    }
    struct cluster *c = h2o_mem_alloc_shared(&r->h.req->pool, sizeof *c, cluster_dispose);
    c->r = r;
    c->f = calloc(px->map.nbackends, sizeof *c->f);
    c->pending = px->map.nbackends;
    struct proxy_call call = {.method = h2o_iovec_init(H2O_STRLIT("GET")),
                              .path = h2o_iovec_init(H2O_STRLIT("/stats"))};
    for (size_t i = 0; i < px->map.nbackends; i++)
        c->f[i] =
            proxy_fetch_start(r, &call, &px->map.backends[i], 1, false, NODE_STATS_MAX, on_node_stats, c);
}

/* ---- GET /metrics -------------------------------------------------------------------------------------- */

static void labels(struct kv_buf *b, const struct proxy_backend *x)
{
    kv_buf_printf(b, "{shard=\"%s\",role=\"%s\",url=\"%s\"", x->shard->name, role_name(x->role), x->url);
}

void proxy_handle_metrics(struct kv_http_req *h)
{
    struct proxy_req *r = (struct proxy_req *)h;
    struct kv_http_query q;
    if (kv_http_query_parse(&r->h, &q) != 0 || kv_http_query_check_unused(&r->h, &q) != 0)
        return;
    struct proxy *px = r->px;
    const struct proxy_map *m = &px->map;
    struct kv_buf b = {0};
    kv_buf_printf(&b,
                  "# HELP triekv_proxy_info The proxy's version.\n# TYPE triekv_proxy_info gauge\n"
                  "triekv_proxy_info{version=\"%s\"} 1\n",
                  PROXY_VERSION);
    kv_http_metric(&b, "triekv_proxy_uptime_seconds", "gauge", "Seconds since the proxy started.",
                   (double)(kv_now_ms() - px->started_ms) / 1000.0);
    kv_http_metric(&b, "triekv_proxy_shards", "gauge", "Shards in the map.", (double)m->n);
    kv_http_metrics_text(&px->http, "triekv_proxy", &b);
    static const struct {
        const char *name, *type, *help;
    } fam[] = {
        {"triekv_proxy_backend_up", "gauge", "1 while the backend passes its health checks."},
        {"triekv_proxy_backend_responses_total", "counter", "Answers from the backend by status class."},
        {"triekv_proxy_backend_failures_total", "counter", "Requests the backend did not answer."},
        {"triekv_proxy_backend_latency_seconds_sum", "counter", "Time to the answers' heads, summed."},
        {"triekv_proxy_backend_health_checks_total", "counter", "Health checks of the backend."},
        {"triekv_proxy_backend_health_checks_failed_total", "counter", "Health checks the backend failed."},
    };
    for (size_t k = 0; k < sizeof fam / sizeof fam[0]; k++) {
        kv_buf_printf(&b, "# HELP %s %s\n# TYPE %s %s\n", fam[k].name, fam[k].help, fam[k].name, fam[k].type);
        for (size_t i = 0; i < m->nbackends; i++) {
            struct proxy_backend *x = m->backends[i];
            if (k == 1) {
                for (int c = 1; c <= 5; c++) {
                    kv_buf_append_str(&b, fam[k].name);
                    labels(&b, x);
                    kv_buf_printf(&b, ",code=\"%dxx\"} %llu\n", c, (unsigned long long)ld(&x->status[c]));
                }
                continue;
            }
            double v = k == 0   ? (atomic_load(&x->up) ? 1 : 0)
                       : k == 2 ? (double)ld(&x->failures)
                       : k == 3 ? (double)ld(&x->latency_sum_us) / 1e6
                       : k == 4 ? (double)ld(&x->checks)
                                : (double)ld(&x->checks_failed);
            kv_buf_append_str(&b, fam[k].name);
            labels(&b, x);
            kv_buf_printf(&b, "} %.17g\n", v);
        }
    }
    kv_http_reply(&r->h, 200, "text/plain; version=0.0.4; charset=utf-8", &b);
}

/* ---- GET /health -----------------------------------------------------------------------------------------
 */

void proxy_handle_health(struct kv_http_req *h)
{
    struct proxy_req *r = (struct proxy_req *)h;
    struct kv_http_query q;
    if (kv_http_query_parse(&r->h, &q) != 0 || kv_http_query_check_unused(&r->h, &q) != 0)
        return;
    struct proxy *px = r->px;
    size_t up = 0, writable = 0, readable = 0;
    for (size_t i = 0; i < px->map.nbackends; i++)
        up += atomic_load(&px->map.backends[i]->up) ? 1 : 0;
    for (size_t i = 0; i < px->map.n; i++) {
        struct proxy_shard *s = &px->map.shards[i];
        bool w = atomic_load(&s->main->up), rd = w;
        for (size_t k = 0; k < s->nreplicas; k++)
            rd = rd || atomic_load(&s->replicas[k]->up);
        writable += w;
        readable += rd;
    }
    struct kv_buf b = {0};
    bool stopping = kv_http_stopping(&px->http);
    kv_buf_printf(&b,
                  "{\"status\":\"%s\",\"role\":\"proxy\",\"shards\":%zu,\"shards_writable\":%zu,"
                  "\"shards_readable\":%zu,\"backends\":%zu,\"backends_up\":%zu}",
                  stopping ? "stopping" : "ok", px->map.n, writable, readable, px->map.nbackends, up);
    kv_http_reply_json(&r->h, stopping ? 503 : 200, &b);
}
