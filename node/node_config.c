/* node/node_config.c - triekv-server's configuration: the key table, loading order (defaults,
 * --config file, TRIEKV_* variables, flags) and the checks that span several keys.
 *
 * Units are part of each key's contract: cache_size is MiB (the reference's unit), every other
 * size is bytes, every duration milliseconds. */
#include "node/node_int.h"
#include "common/kv_assert.h"
#include "replication/repl.h"
#include "common/kv_log.h"

#include <arpa/inet.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define K(field) offsetof(struct node_config, field)

static const char *const fsync_modes[] = {"default", "strict", "batch", "interval", NULL};
static const char *const log_levels[] = {"error", "warn", "info", "debug", NULL};
static const char *const io_backends[] = {"auto", "io_uring", "posix", NULL};
static const char *const repl_modes[] = {"async", "sync", NULL};

const struct kv_cfg_key node_config_keys[] = {
    {"port", KV_CFG_INT, K(port), 1, 65535, false, NULL, "TCP port of the REST API"},
    {"replication_port", KV_CFG_INT, K(replication_port), 1, 65535, false, NULL,
     "TCP port a replica takes the replication stream on"},
    {"bind", KV_CFG_STRING, K(bind), 0, 0, false, NULL, "address to listen on (IPv4 or IPv6)"},
    {"data_dir", KV_CFG_STRING, K(data_dir), 0, 0, false, NULL,
     "directory of the store (created if missing)"},
    {"is_replica", KV_CFG_BOOL, K(is_replica), 0, 0, false, NULL,
     "serve reads only; writes come from the main"},
    {"replicas", KV_CFG_STRLIST, K(replicas), 0, 0, false, NULL,
     "base URLs of the replicas' replication ports (main only)"},
    {"cluster_id", KV_CFG_STRING, K(cluster_id), 0, 0, false, NULL, "name shared by a main and its replicas"},
    {"main_url", KV_CFG_STRING, K(main_url), 0, 0, false, NULL,
     "the main's public URL, named in a replica's refusals of writes"},
    {"fsync", KV_CFG_ENUM, K(fsync), 0, 0, false, fsync_modes, "when commits reach the disk"},
    {"fsync_batch_writes", KV_CFG_INT, K(fsync_batch_writes), 1, 1000000, false, NULL,
     "fsync=batch: commits per fdatasync"},
    {"fsync_interval_ms", KV_CFG_INT, K(fsync_interval_ms), 1, 3600000, false, NULL,
     "fsync=interval: milliseconds between fdatasyncs"},
    {"cache_size", KV_CFG_INT, K(cache_size), 1, 1 << 20, false, NULL, "page cache budget in MiB"},
    {"max_page_size", KV_CFG_INT, K(max_page_size), TRIEKV_PAGE_SIZE_MIN, (int64_t)TRIEKV_PAGE_SIZE_MAX, true,
     NULL, "partition log bytes that trigger a split or compaction"},
    {"max_key_size", KV_CFG_INT, K(max_key_size), 1, TRIEKV_KEY_LEN_MAX, true, NULL, "longest key in bytes"},
    {"max_value_size", KV_CFG_INT, K(max_value_size), 0, TRIEKV_VALUE_LEN_MAX, true, NULL,
     "largest value in bytes"},
    {"max_range_response", KV_CFG_INT, K(max_range_response), 1, NODE_RANGE_ITEMS_HARD_MAX, false, NULL,
     "most items in one range page"},
    {"max_range_bytes", KV_CFG_INT, K(max_range_bytes), 1024, 1 << 30, true, NULL,
     "most value bytes in one range page"},
    {"max_bulk_items", KV_CFG_INT, K(max_bulk_items), 1, NODE_BULK_ITEMS_HARD_MAX, false, NULL,
     "most keys in one bulk request"},
    {"max_bulk_bytes", KV_CFG_INT, K(max_bulk_bytes), 1024, 1 << 30, true, NULL,
     "largest bulk request body in bytes"},
    {"max_connections", KV_CFG_INT, K(max_connections), 1, 1000000, false, NULL,
     "open client connections; more are refused"},
    {"request_timeout_ms", KV_CFG_INT, K(request_timeout_ms), 100, 3600000, false, NULL,
     "time a client has to send a whole request (idle keep-alive included)"},
    {"threads", KV_CFG_INT, K(threads), 0, KV_HTTP_THREADS_MAX, false, NULL,
     "event loop threads (0: one per core)"},
    {"log_level", KV_CFG_ENUM, K(log_level), 0, 0, false, log_levels, "least severe log level written"},
    {"io_backend", KV_CFG_ENUM, K(io_backend), 0, 0, false, io_backends,
     "file I/O: io_uring where the kernel allows it, else POSIX"},
    {"replication_mode", KV_CFG_ENUM, K(replication_mode), 0, 0, false, repl_modes,
     "async: OK after the local commit; sync: OK after min_replica_acks replicas applied it"},
    {"min_replica_acks", KV_CFG_INT, K(min_replica_acks), 1, REPL_MAX_REPLICAS, false, NULL,
     "replication_mode=sync: replicas that must apply a write before its OK"},
    {"replication_timeout_ms", KV_CFG_INT, K(replication_timeout_ms), 10, 600000, false, NULL,
     "how long a sync write waits for replicas, and a replication request may stall"},
    {"replication_token", KV_CFG_STRING, K(replication_token), 0, 0, false, NULL,
     "shared secret a replica requires of its main (empty: none)"},
    {"replication_retention_mb", KV_CFG_INT, K(replication_retention_mb), 1, 1 << 20, false, NULL,
     "commit log kept for lagging replicas, MiB; past it they get a snapshot"},
    {"replication_batch_bytes", KV_CFG_INT, K(replication_batch_bytes), 4096, 1 << 30, true, NULL,
     "bytes of records per replication request (one larger record goes alone)"},
    {"replication_read_wait_ms", KV_CFG_INT, K(replication_read_wait_ms), 0, 60000, false, NULL,
     "how long a read with X-Triekv-Min-Seq waits for a replica to catch up"},
    {"advertise_url", KV_CFG_STRING, K(advertise_url), 0, 0, false, NULL,
     "this main's public URL, which replicas name in their refusals (default http://HOSTNAME:PORT)"},
    {"wal_segment_bytes", KV_CFG_INT, K(wal_segment_bytes), TRIEKV_PAGE_SIZE_MIN, 4ll << 30, true, NULL,
     "commit log segment size in bytes"},
    {"checkpoint_wal_bytes", KV_CFG_INT, K(checkpoint_wal_bytes), 64 * 1024, 64ll << 30, true, NULL,
     "commit log bytes that trigger a checkpoint"},
    {"checkpoint_interval_ms", KV_CFG_INT, K(checkpoint_interval_ms), 10, 86400000, false, NULL,
     "longest time between checkpoints while there are unflushed writes"},
    {NULL, 0, 0, 0, 0, false, NULL, NULL},
};

void node_config_defaults(struct node_config *c)
{
    memset(c, 0, sizeof *c);
    c->port = 3030;
    c->replication_port = 3040;
    c->bind = kv_strdup("0.0.0.0");
    c->data_dir = kv_strdup("./data");
    c->cluster_id = kv_strdup("triekv");
    c->fsync = kv_strdup("default");
    c->fsync_batch_writes = 100;
    c->fsync_interval_ms = 1000;
    c->cache_size = 500;
    c->max_page_size = 4 << 20;
    c->max_key_size = 1024;
    c->max_value_size = 64 << 20;
    c->max_range_response = 1000;
    c->max_range_bytes = 4 << 20;
    c->max_bulk_items = 10000;
    c->max_bulk_bytes = 64 << 20;
    c->max_connections = 4096;
    c->request_timeout_ms = 60000;
    c->threads = 0;
    c->log_level = kv_strdup("info");
    c->io_backend = kv_strdup("auto");
    c->replication_mode = kv_strdup("async");
    c->min_replica_acks = 1;
    c->replication_timeout_ms = 5000;
    c->replication_token = kv_strdup("");
    c->replication_retention_mb = 1024;
    c->replication_batch_bytes = 4 << 20;
    c->replication_read_wait_ms = 2000;
    c->advertise_url = kv_strdup("");
    c->wal_segment_bytes = 64 << 20;
    c->checkpoint_wal_bytes = 256 << 20;
    c->checkpoint_interval_ms = 60000;
}

void node_config_free(struct node_config *c)
{
    kv_cfg_free(node_config_keys, c);
}

static void usage(void)
{
    struct node_config d;
    node_config_defaults(&d);
    printf("usage: triekv-server [--config FILE] [--KEY VALUE]...\n\n"
           "Runs a triekv node. Settings come from the defaults, then the JSON object in FILE, then\n"
           "TRIEKV_<KEY> environment variables (TRIEKV_PORT=3031), then flags; a flag may spell the key\n"
           "with '-' or '_' (--data-dir or --data_dir). Sizes take k, m, g suffixes on the command line.\n\n"
           "  --config FILE              JSON configuration file\n"
           "  --check                    validate the configuration, print it is valid, and exit\n"
           "  --probe URL                exit 0 if URL answers 200 (for container health checks)\n"
           "  --help, --version\n");
    kv_cfg_print_help(node_config_keys, &d);
    node_config_free(&d);
}

static int bad(char *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int bad(char *err, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, KV_CFG_ERR_MAX, fmt, ap);
    va_end(ap);
    return -1;
}

/* Checks that span keys or need more than a type and a range. */
static int check(const struct node_config *c, char *err)
{
    struct in6_addr a6;
    struct in_addr a4;
    if (inet_pton(AF_INET, c->bind, &a4) != 1 && inet_pton(AF_INET6, c->bind, &a6) != 1)
        return bad(err, "config: 'bind' must be an IPv4 or IPv6 address, got \"%s\"", c->bind);
    if (c->data_dir[0] == 0)
        return bad(err, "config: 'data_dir' must not be empty");
    if (c->port == c->replication_port && c->is_replica)
        return bad(err, "config: 'port' and 'replication_port' must differ");
    for (size_t i = 0; i < c->replicas.n; i++) {
        if (!kv_cfg_http_url_ok(c->replicas.v[i]))
            return bad(err,
                       "config: 'replicas' item %zu must be an http:// URL (http://host:port), got \"%s\"", i,
                       c->replicas.v[i]);
    }
    if (c->is_replica && c->replicas.n > 0)
        return bad(err, "config: a replica ('is_replica': true) cannot have 'replicas'");
    if (c->main_url && c->main_url[0] && !kv_cfg_http_url_ok(c->main_url))
        return bad(err, "config: 'main_url' must be an http:// URL, got \"%s\"", c->main_url);
    if (c->cluster_id[0] == 0 || strlen(c->cluster_id) > 128)
        return bad(err, "config: 'cluster_id' must be 1 to 128 characters");
    if (c->max_bulk_bytes < c->max_key_size)
        return bad(err, "config: 'max_bulk_bytes' must be at least 'max_key_size'");
    if (c->replicas.n > REPL_MAX_REPLICAS)
        return bad(err, "config: 'replicas' may list at most %d replicas", REPL_MAX_REPLICAS);
    if (strcmp(c->replication_mode, "sync") == 0 && !c->is_replica &&
        (int64_t)c->replicas.n < c->min_replica_acks)
        return bad(err,
                   "config: 'min_replica_acks' is %lld but 'replicas' lists %zu: sync writes could never "
                   "be acknowledged",
                   (long long)c->min_replica_acks, c->replicas.n);
    if (c->advertise_url[0] && !kv_cfg_http_url_ok(c->advertise_url))
        return bad(err, "config: 'advertise_url' must be an http:// URL, got \"%s\"", c->advertise_url);
    if (strlen(c->replication_token) > 256)
        return bad(err, "config: 'replication_token' must be at most 256 characters");
    return 0;
}

int node_config_load(struct node_config *c, int argc, char **argv, char *err)
{
    static const struct kv_cfg_program prog = {"triekv-server", TRIEKV_VERSION, "TRIEKV_", usage};
    node_config_defaults(c);
    int rc = kv_cfg_load_args(node_config_keys, c, &prog, argc, argv, &c->check_only, err);
    return rc != 0 ? rc : check(c, err);
}

void node_config_engine(const struct node_config *c, struct triekv_options *o)
{
    triekv_options_init(o);
    triekv_fsync_parse(c->fsync, &o->fsync);
    o->fsync_batch_writes = (uint32_t)c->fsync_batch_writes;
    o->fsync_interval_ms = (uint32_t)c->fsync_interval_ms;
    o->cache_bytes = (uint64_t)c->cache_size << 20;
    o->max_page_size = (uint64_t)c->max_page_size;
    o->max_key_size = (uint32_t)c->max_key_size;
    o->max_value_size = (uint64_t)c->max_value_size;
    o->retention_bytes_max = (uint64_t)c->replication_retention_mb << 20;
    o->wal_segment_bytes = (uint64_t)c->wal_segment_bytes;
    o->checkpoint_wal_bytes = (uint64_t)c->checkpoint_wal_bytes;
    o->checkpoint_interval_ms = (uint32_t)c->checkpoint_interval_ms;
    o->io_backend = strcmp(c->io_backend, "posix") == 0      ? TRIEKV_IO_POSIX
                    : strcmp(c->io_backend, "io_uring") == 0 ? TRIEKV_IO_URING
                                                             : TRIEKV_IO_AUTO;
}
