/* node/node_stats.c - GET /stats (JSON), GET /metrics (Prometheus text format), GET /health, and
 * the per-thread request counters behind them.
 *
 * Each loop thread counts its own requests (by endpoint and status class) and latencies in a
 * histogram; only that thread writes its counters, so they are relaxed atomics without contention,
 * summed over threads when scraped. Engine figures come from triekv_stats(). */
#include "node/node_int.h"
#include "common/kv_codec.h"
#include "common/kv_time.h"

#include <stdio.h>
#include <string.h>

static const char *const ep_names[EP_COUNT] = {
    "kv_get", "kv_head", "kv_put", "kv_delete", "bulk", "bulk_range", "bulk_get", "bulk_delete",
    "stats",  "metrics", "health", "other",
};

/* Upper bounds of the latency buckets, in microseconds (the last bucket is +Inf). */
static const uint64_t bucket_us[NODE_HIST_BUCKETS] = {50,    100,   250,    500,    1000,   2500,    5000,    10000,
                                                      25000, 50000, 100000, 250000, 500000, 1000000, 2500000, 10000000};

const char *node_ep_name(enum node_ep ep)
{
    return ep_names[ep];
}

void node_metrics_record(struct node_metrics *m, enum node_ep ep, int status, uint64_t elapsed_ns)
{
    int cls = status / 100;
    if (cls < 1 || cls > 5)
        cls = 5;
    uint64_t us = elapsed_ns / 1000;
    int b = 0;
    while (b < NODE_HIST_BUCKETS && us > bucket_us[b])
        b++;
    atomic_fetch_add_explicit(&m->requests[ep][cls], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&m->latency[ep][b], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&m->latency_sum_us[ep], us, memory_order_relaxed);
}

/* All threads' counters added up, once per scrape. */
struct metrics_total {
    uint64_t requests[EP_COUNT][6];
    uint64_t latency[EP_COUNT][NODE_HIST_BUCKETS + 1];
    uint64_t latency_sum_us[EP_COUNT];
    uint64_t ep_requests[EP_COUNT];
    uint64_t connections_accepted, connections_refused;
};

static uint64_t ld(const _Atomic uint64_t *a)
{
    return atomic_load_explicit(a, memory_order_relaxed);
}

static void metrics_total(const struct node *n, struct metrics_total *t)
{
    memset(t, 0, sizeof *t);
    for (int i = 0; i < n->nthreads; i++) {
        const struct node_metrics *m = &n->threads[i].metrics;
        for (int e = 0; e < EP_COUNT; e++) {
            for (int c = 1; c <= 5; c++) {
                t->requests[e][c] += ld(&m->requests[e][c]);
                t->ep_requests[e] += ld(&m->requests[e][c]);
            }
            for (int k = 0; k <= NODE_HIST_BUCKETS; k++)
                t->latency[e][k] += ld(&m->latency[e][k]);
            t->latency_sum_us[e] += ld(&m->latency_sum_us[e]);
        }
        t->connections_accepted += ld(&m->connections_accepted);
        t->connections_refused += ld(&m->connections_refused);
    }
}

void node_handle_stats(struct node_req *r)
{
    struct node *n = r->node;
    struct node_query q;
    if (node_query_parse(r, &q) != 0 || node_query_check_unused(r, &q) != 0)
        return;
    struct triekv_stats st;
    triekv_stats(n->db, &st);
    struct metrics_total t;
    metrics_total(n, &t);
    double hit_ratio = st.cache_hits + st.cache_misses ? (double)st.cache_hits / (double)(st.cache_hits + st.cache_misses)
                                                       : 0;
    struct kv_buf b = {0};
    kv_buf_printf(&b,
                  "{\"role\":\"%s\",\"version\":\"%s\",\"uptime_seconds\":%llu,"
                  "\"keys\":%llu,\"value_bytes\":%llu,\"gets\":%llu,\"sets\":%llu,\"deletes\":%llu,"
                  "\"hits\":%llu,\"misses\":%llu,\"partitions\":%llu,\"seq\":%llu,\"fsync\":\"%s\",",
                  n->cfg.is_replica ? "replica" : "main", TRIEKV_VERSION,
                  (unsigned long long)((kv_now_ms() - n->started_ms) / 1000), (unsigned long long)st.keys,
                  (unsigned long long)st.value_bytes, (unsigned long long)st.gets, (unsigned long long)st.puts,
                  (unsigned long long)st.deletes, (unsigned long long)st.get_hits,
                  (unsigned long long)st.get_misses, (unsigned long long)st.partitions,
                  (unsigned long long)st.seq, triekv_fsync_name(st.fsync));
    kv_buf_printf(&b,
                  "\"cache\":{\"budget_bytes\":%llu,\"bytes\":%llu,\"pinned_bytes\":%llu,\"pages\":%llu,"
                  "\"hits\":%llu,\"misses\":%llu,\"hit_ratio\":%.4f,\"evictions\":%llu,\"evicted_bytes\":%llu},",
                  (unsigned long long)st.cache_budget_bytes, (unsigned long long)st.cache_bytes,
                  (unsigned long long)st.cache_pinned_bytes, (unsigned long long)st.cache_pages,
                  (unsigned long long)st.cache_hits, (unsigned long long)st.cache_misses, hit_ratio,
                  (unsigned long long)st.cache_evictions, (unsigned long long)st.cache_evicted_bytes);
    kv_buf_printf(&b,
                  "\"storage\":{\"io_backend\":\"%s\",\"durable_seq\":%llu,\"checkpoint_seq\":%llu,"
                  "\"batches\":%llu,\"group_commits\":%llu,\"precondition_failures\":%llu,\"partition_depth_max\":%llu,"
                  "\"splits\":%llu,\"compactions\":%llu,\"checkpoints\":%llu,\"wal_bytes\":%llu,\"wal_segments\":%llu,"
                  "\"wal_syncs\":%llu,\"corrupt_partitions\":%llu,\"read_only\":%s,\"read_only_reason\":",
                  st.io_backend, (unsigned long long)st.durable_seq, (unsigned long long)st.checkpoint_seq,
                  (unsigned long long)st.batches, (unsigned long long)st.group_commits,
                  (unsigned long long)st.precondition_failures, (unsigned long long)st.partition_depth_max,
                  (unsigned long long)st.splits, (unsigned long long)st.compactions,
                  (unsigned long long)st.checkpoints, (unsigned long long)st.wal_bytes,
                  (unsigned long long)st.wal_segments, (unsigned long long)st.wal_syncs,
                  (unsigned long long)st.corrupt_partitions, st.read_only ? "true" : "false");
    if (st.read_only) {
        const char *why = kv_strerror(st.read_only_reason);
        kv_json_append_string(&b, (const uint8_t *)why, strlen(why));
    } else {
        kv_buf_append_str(&b, "null");
    }
    kv_buf_printf(&b, "},\"connections\":{\"open\":%lld,\"accepted\":%llu,\"refused\":%llu},\"requests\":{",
                  (long long)atomic_load(&n->connections), (unsigned long long)t.connections_accepted,
                  (unsigned long long)t.connections_refused);
    for (int e = 0; e < EP_COUNT; e++)
        kv_buf_printf(&b, "%s\"%s\":%llu", e ? "," : "", ep_names[e], (unsigned long long)t.ep_requests[e]);
    kv_buf_append_str(&b, "},");
    node_repl_stats_json(n, &b);
    kv_buf_append_byte(&b, '}');
    node_reply_json(r, 200, &b);
}

static void metric(struct kv_buf *b, const char *name, const char *type, const char *help, double value)
{
    kv_buf_printf(b, "# HELP %s %s\n# TYPE %s %s\n%s %.17g\n", name, help, name, type, name, value);
}

void node_handle_metrics(struct node_req *r)
{
    struct node *n = r->node;
    struct node_query q;
    if (node_query_parse(r, &q) != 0 || node_query_check_unused(r, &q) != 0)
        return;
    struct triekv_stats st;
    triekv_stats(n->db, &st);
    struct metrics_total t;
    metrics_total(n, &t);
    struct kv_buf b = {0};
    kv_buf_printf(&b, "# HELP triekv_info The node's role and settings.\n# TYPE triekv_info gauge\n"
                      "triekv_info{version=\"%s\",role=\"%s\",fsync=\"%s\",io_backend=\"%s\"} 1\n",
                  TRIEKV_VERSION, n->cfg.is_replica ? "replica" : "main", triekv_fsync_name(st.fsync), st.io_backend);
    metric(&b, "triekv_uptime_seconds", "gauge", "Seconds since the node started.",
           (double)(kv_now_ms() - n->started_ms) / 1000.0);
    metric(&b, "triekv_keys", "gauge", "Live keys.", (double)st.keys);
    metric(&b, "triekv_value_bytes", "gauge", "Sum of the live values' lengths.", (double)st.value_bytes);
    metric(&b, "triekv_seq", "gauge", "Last committed sequence number.", (double)st.seq);
    metric(&b, "triekv_durable_seq", "gauge", "Last sequence number known to be on disk.", (double)st.durable_seq);
    metric(&b, "triekv_checkpoint_seq", "gauge", "Sequence number of the last checkpoint.", (double)st.checkpoint_seq);
    kv_buf_printf(&b, "# HELP triekv_operations_total Key operations since start.\n"
                      "# TYPE triekv_operations_total counter\n"
                      "triekv_operations_total{op=\"get\"} %llu\ntriekv_operations_total{op=\"set\"} %llu\n"
                      "triekv_operations_total{op=\"delete\"} %llu\n",
                  (unsigned long long)st.gets, (unsigned long long)st.puts, (unsigned long long)st.deletes);
    kv_buf_printf(&b, "# HELP triekv_key_lookups_total Point reads by whether the key was found.\n"
                      "# TYPE triekv_key_lookups_total counter\n"
                      "triekv_key_lookups_total{result=\"hit\"} %llu\ntriekv_key_lookups_total{result=\"miss\"} %llu\n",
                  (unsigned long long)st.get_hits, (unsigned long long)st.get_misses);
    metric(&b, "triekv_batches_total", "counter", "Committed write batches.", (double)st.batches);
    metric(&b, "triekv_group_commits_total", "counter", "Commit-log writes (batches share them).",
           (double)st.group_commits);
    metric(&b, "triekv_precondition_failures_total", "counter", "Writes refused by a precondition.",
           (double)st.precondition_failures);
    metric(&b, "triekv_cache_hits_total", "counter", "Page cache hits.", (double)st.cache_hits);
    metric(&b, "triekv_cache_misses_total", "counter", "Page cache misses (partition loads).", (double)st.cache_misses);
    metric(&b, "triekv_cache_evictions_total", "counter", "Pages evicted.", (double)st.cache_evictions);
    metric(&b, "triekv_cache_bytes", "gauge", "Bytes held by cached pages.", (double)st.cache_bytes);
    metric(&b, "triekv_cache_pinned_bytes", "gauge", "Bytes of pages pinned by unflushed writes.",
           (double)st.cache_pinned_bytes);
    metric(&b, "triekv_cache_budget_bytes", "gauge", "The cache budget (cache_size).", (double)st.cache_budget_bytes);
    metric(&b, "triekv_partitions", "gauge", "Partitions in the trie.", (double)st.partitions);
    metric(&b, "triekv_splits_total", "counter", "Partition splits.", (double)st.splits);
    metric(&b, "triekv_compactions_total", "counter", "Partition compactions.", (double)st.compactions);
    metric(&b, "triekv_checkpoints_total", "counter", "Checkpoints.", (double)st.checkpoints);
    metric(&b, "triekv_wal_bytes", "gauge", "Commit log bytes on disk.", (double)st.wal_bytes);
    metric(&b, "triekv_wal_syncs_total", "counter", "Commit log fdatasyncs.", (double)st.wal_syncs);
    metric(&b, "triekv_corrupt_partitions", "gauge", "Partitions found damaged (their keys answer errors).",
           (double)st.corrupt_partitions);
    metric(&b, "triekv_read_only", "gauge", "1 when writes are stopped after an I/O failure.", st.read_only ? 1 : 0);
    metric(&b, "triekv_connections", "gauge", "Open client connections.", (double)atomic_load(&n->connections));
    metric(&b, "triekv_connections_refused_total", "counter", "Connections refused over max_connections.",
           (double)t.connections_refused);
    kv_buf_append_str(&b, "# HELP triekv_http_requests_total HTTP requests by endpoint and status class.\n"
                          "# TYPE triekv_http_requests_total counter\n");
    for (int e = 0; e < EP_COUNT; e++) {
        for (int c = 1; c <= 5; c++) {
            uint64_t v = t.requests[e][c];
            if (v)
                kv_buf_printf(&b, "triekv_http_requests_total{endpoint=\"%s\",code=\"%dxx\"} %llu\n", ep_names[e], c,
                              (unsigned long long)v);
        }
    }
    kv_buf_append_str(&b, "# HELP triekv_http_request_duration_seconds Time from request to response.\n"
                          "# TYPE triekv_http_request_duration_seconds histogram\n");
    for (int e = 0; e < EP_COUNT; e++) {
        uint64_t cum = 0;
        if (t.ep_requests[e] == 0)
            continue;
        for (int k = 0; k <= NODE_HIST_BUCKETS; k++) {
            cum += t.latency[e][k];
            if (k < NODE_HIST_BUCKETS)
                kv_buf_printf(&b, "triekv_http_request_duration_seconds_bucket{endpoint=\"%s\",le=\"%g\"} %llu\n",
                              ep_names[e], (double)bucket_us[k] / 1e6, (unsigned long long)cum);
            else
                kv_buf_printf(&b, "triekv_http_request_duration_seconds_bucket{endpoint=\"%s\",le=\"+Inf\"} %llu\n",
                              ep_names[e], (unsigned long long)cum);
        }
        kv_buf_printf(&b, "triekv_http_request_duration_seconds_sum{endpoint=\"%s\"} %.6f\n", ep_names[e],
                      (double)t.latency_sum_us[e] / 1e6);
        kv_buf_printf(&b, "triekv_http_request_duration_seconds_count{endpoint=\"%s\"} %llu\n", ep_names[e],
                      (unsigned long long)cum);
    }
    node_repl_metrics(n, &b);
    node_reply_text(r, 200, "text/plain; version=0.0.4; charset=utf-8", &b);
}

void node_handle_health(struct node_req *r)
{
    struct node_query q;
    if (node_query_parse(r, &q) != 0 || node_query_check_unused(r, &q) != 0)
        return;
    struct triekv_stats st;
    triekv_stats(r->node->db, &st);
    struct kv_buf b = {0};
    if (atomic_load(&r->node->stopping)) {
        kv_buf_append_str(&b, "{\"status\":\"stopping\"}");
        node_reply_json(r, 503, &b);
    } else if (st.read_only && !r->node->cfg.is_replica) {
        kv_buf_append_str(&b, "{\"status\":\"read_only\",\"message\":\"writes stopped after an i/o error; restart "
                              "the node\"}");
        node_reply_json(r, 503, &b);
    } else {
        kv_buf_printf(&b, "{\"status\":\"ok\",\"role\":\"%s\",\"seq\":%llu}", r->node->cfg.is_replica ? "replica" : "main",
                      (unsigned long long)st.seq);
        node_reply_json(r, 200, &b);
    }
}
