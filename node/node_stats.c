/* node/node_stats.c - GET /stats (JSON), GET /metrics (Prometheus text format) and GET /health.
 *
 * Engine figures come from triekv_stats(); request and connection counters from kv_http (each
 * loop thread counts its own, summed when scraped); replication figures from node_repl.c. */
#include "node/node_int.h"
#include "common/kv_codec.h"
#include "common/kv_time.h"

#include <stdio.h>
#include <string.h>

void node_handle_stats(struct kv_http_req *h)
{
    struct node_req *r = (struct node_req *)h;
    struct node *n = r->node;
    struct kv_http_query q;
    if (kv_http_query_parse(&r->h, &q) != 0 || kv_http_query_check_unused(&r->h, &q) != 0)
        return;
    struct triekv_stats st;
    triekv_stats(n->db, &st);
    double hit_ratio = st.cache_hits + st.cache_misses
                           ? (double)st.cache_hits / (double)(st.cache_hits + st.cache_misses)
                           : 0;
    struct kv_buf b = {0};
    kv_buf_printf(&b,
                  "{\"role\":\"%s\",\"version\":\"%s\",\"uptime_seconds\":%llu,"
                  "\"keys\":%llu,\"value_bytes\":%llu,\"gets\":%llu,\"sets\":%llu,\"deletes\":%llu,"
                  "\"hits\":%llu,\"misses\":%llu,\"partitions\":%llu,\"seq\":%llu,\"fsync\":\"%s\",",
                  n->cfg.is_replica ? "replica" : "main", TRIEKV_VERSION,
                  (unsigned long long)((kv_now_ms() - n->started_ms) / 1000), (unsigned long long)st.keys,
                  (unsigned long long)st.value_bytes, (unsigned long long)st.gets,
                  (unsigned long long)st.puts, (unsigned long long)st.deletes,
                  (unsigned long long)st.get_hits, (unsigned long long)st.get_misses,
                  (unsigned long long)st.partitions, (unsigned long long)st.seq, triekv_fsync_name(st.fsync));
    kv_buf_printf(
        &b,
        "\"cache\":{\"budget_bytes\":%llu,\"bytes\":%llu,\"pinned_bytes\":%llu,\"pages\":%llu,"
        "\"hits\":%llu,\"misses\":%llu,\"hit_ratio\":%.4f,\"evictions\":%llu,\"evicted_bytes\":%llu},",
        (unsigned long long)st.cache_budget_bytes, (unsigned long long)st.cache_bytes,
        (unsigned long long)st.cache_pinned_bytes, (unsigned long long)st.cache_pages,
        (unsigned long long)st.cache_hits, (unsigned long long)st.cache_misses, hit_ratio,
        (unsigned long long)st.cache_evictions, (unsigned long long)st.cache_evicted_bytes);
    kv_buf_printf(
        &b,
        "\"storage\":{\"io_backend\":\"%s\",\"durable_seq\":%llu,\"checkpoint_seq\":%llu,"
        "\"batches\":%llu,\"group_commits\":%llu,\"precondition_failures\":%llu,\"partition_depth_max\":%llu,"
        "\"splits\":%llu,\"compactions\":%llu,\"checkpoints\":%llu,\"wal_bytes\":%llu,\"wal_segments\":%llu,"
        "\"wal_syncs\":%llu,\"corrupt_partitions\":%llu,\"read_only\":%s,\"read_only_reason\":",
        st.io_backend, (unsigned long long)st.durable_seq, (unsigned long long)st.checkpoint_seq,
        (unsigned long long)st.batches, (unsigned long long)st.group_commits,
        (unsigned long long)st.precondition_failures, (unsigned long long)st.partition_depth_max,
        (unsigned long long)st.splits, (unsigned long long)st.compactions, (unsigned long long)st.checkpoints,
        (unsigned long long)st.wal_bytes, (unsigned long long)st.wal_segments,
        (unsigned long long)st.wal_syncs, (unsigned long long)st.corrupt_partitions,
        st.read_only ? "true" : "false");
    if (st.read_only) {
        const char *why = kv_strerror(st.read_only_reason);
        kv_json_append_string(&b, (const uint8_t *)why, strlen(why));
    } else {
        kv_buf_append_str(&b, "null");
    }
    kv_buf_append_str(&b, "},");
    kv_http_stats_json(&n->http, &b);
    kv_buf_append_byte(&b, ',');
    node_repl_stats_json(n, &b);
    kv_buf_append_byte(&b, '}');
    kv_http_reply_json(&r->h, 200, &b);
}

void node_handle_metrics(struct kv_http_req *h)
{
    struct node_req *r = (struct node_req *)h;
    struct node *n = r->node;
    struct kv_http_query q;
    if (kv_http_query_parse(&r->h, &q) != 0 || kv_http_query_check_unused(&r->h, &q) != 0)
        return;
    struct triekv_stats st;
    triekv_stats(n->db, &st);
    struct kv_buf b = {0};
    kv_buf_printf(&b,
                  "# HELP triekv_info The node's role and settings.\n# TYPE triekv_info gauge\n"
                  "triekv_info{version=\"%s\",role=\"%s\",fsync=\"%s\",io_backend=\"%s\"} 1\n",
                  TRIEKV_VERSION, n->cfg.is_replica ? "replica" : "main", triekv_fsync_name(st.fsync),
                  st.io_backend);
    kv_http_metric(&b, "triekv_uptime_seconds", "gauge", "Seconds since the node started.",
                   (double)(kv_now_ms() - n->started_ms) / 1000.0);
    kv_http_metric(&b, "triekv_keys", "gauge", "Live keys.", (double)st.keys);
    kv_http_metric(&b, "triekv_value_bytes", "gauge", "Sum of the live values' lengths.",
                   (double)st.value_bytes);
    kv_http_metric(&b, "triekv_seq", "gauge", "Last committed sequence number.", (double)st.seq);
    kv_http_metric(&b, "triekv_durable_seq", "gauge", "Last sequence number known to be on disk.",
                   (double)st.durable_seq);
    kv_http_metric(&b, "triekv_checkpoint_seq", "gauge", "Sequence number of the last checkpoint.",
                   (double)st.checkpoint_seq);
    kv_buf_printf(&b,
                  "# HELP triekv_operations_total Key operations since start.\n"
                  "# TYPE triekv_operations_total counter\n"
                  "triekv_operations_total{op=\"get\"} %llu\ntriekv_operations_total{op=\"set\"} %llu\n"
                  "triekv_operations_total{op=\"delete\"} %llu\n",
                  (unsigned long long)st.gets, (unsigned long long)st.puts, (unsigned long long)st.deletes);
    kv_buf_printf(
        &b,
        "# HELP triekv_key_lookups_total Point reads by whether the key was found.\n"
        "# TYPE triekv_key_lookups_total counter\n"
        "triekv_key_lookups_total{result=\"hit\"} %llu\ntriekv_key_lookups_total{result=\"miss\"} %llu\n",
        (unsigned long long)st.get_hits, (unsigned long long)st.get_misses);
    kv_http_metric(&b, "triekv_batches_total", "counter", "Committed write batches.", (double)st.batches);
    kv_http_metric(&b, "triekv_group_commits_total", "counter", "Commit-log writes (batches share them).",
                   (double)st.group_commits);
    kv_http_metric(&b, "triekv_precondition_failures_total", "counter", "Writes refused by a precondition.",
                   (double)st.precondition_failures);
    kv_http_metric(&b, "triekv_cache_hits_total", "counter", "Page cache hits.", (double)st.cache_hits);
    kv_http_metric(&b, "triekv_cache_misses_total", "counter", "Page cache misses (partition loads).",
                   (double)st.cache_misses);
    kv_http_metric(&b, "triekv_cache_evictions_total", "counter", "Pages evicted.",
                   (double)st.cache_evictions);
    kv_http_metric(&b, "triekv_cache_bytes", "gauge", "Bytes held by cached pages.", (double)st.cache_bytes);
    kv_http_metric(&b, "triekv_cache_pinned_bytes", "gauge", "Bytes of pages pinned by unflushed writes.",
                   (double)st.cache_pinned_bytes);
    kv_http_metric(&b, "triekv_cache_budget_bytes", "gauge", "The cache budget (cache_size).",
                   (double)st.cache_budget_bytes);
    kv_http_metric(&b, "triekv_partitions", "gauge", "Partitions in the trie.", (double)st.partitions);
    kv_http_metric(&b, "triekv_splits_total", "counter", "Partition splits.", (double)st.splits);
    kv_http_metric(&b, "triekv_compactions_total", "counter", "Partition compactions.",
                   (double)st.compactions);
    kv_http_metric(&b, "triekv_checkpoints_total", "counter", "Checkpoints.", (double)st.checkpoints);
    kv_http_metric(&b, "triekv_wal_bytes", "gauge", "Commit log bytes on disk.", (double)st.wal_bytes);
    kv_http_metric(&b, "triekv_wal_syncs_total", "counter", "Commit log fdatasyncs.", (double)st.wal_syncs);
    kv_http_metric(&b, "triekv_corrupt_partitions", "gauge",
                   "Partitions found damaged (their keys answer errors).", (double)st.corrupt_partitions);
    kv_http_metric(&b, "triekv_read_only", "gauge", "1 when writes are stopped after an I/O failure.",
                   st.read_only ? 1 : 0);
    kv_http_metrics_text(&n->http, "triekv", &b);
    node_repl_metrics(n, &b);
    kv_http_reply(&r->h, 200, "text/plain; version=0.0.4; charset=utf-8", &b);
}

void node_handle_health(struct kv_http_req *h)
{
    struct node_req *r = (struct node_req *)h;
    struct kv_http_query q;
    if (kv_http_query_parse(&r->h, &q) != 0 || kv_http_query_check_unused(&r->h, &q) != 0)
        return;
    struct triekv_stats st;
    triekv_stats(r->node->db, &st);
    struct kv_buf b = {0};
    if (kv_http_stopping(&r->node->http)) {
        kv_buf_append_str(&b, "{\"status\":\"stopping\"}");
        kv_http_reply_json(&r->h, 503, &b);
    } else if (st.read_only && !r->node->cfg.is_replica) {
        kv_buf_append_str(
            &b, "{\"status\":\"read_only\",\"message\":\"writes stopped after an i/o error; restart "
                "the node\"}");
        kv_http_reply_json(&r->h, 503, &b);
    } else {
        kv_buf_printf(&b, "{\"status\":\"ok\",\"role\":\"%s\",\"seq\":%llu}",
                      r->node->cfg.is_replica ? "replica" : "main", (unsigned long long)st.seq);
        kv_http_reply_json(&r->h, 200, &b);
    }
}
