/* proxy/proxy_config.c - triekv-proxy's configuration: the key table, defaults and loading order
 * (defaults, --config FILE, TRIEKV_PROXY_* variables, flags), with the node's strictness: an
 * unknown key, a wrong type or a value out of range stops start-up with one line naming the key.
 * The shard map itself is checked by proxy_map.c. Sizes are bytes, durations milliseconds. */
#include "proxy/proxy_int.h"
#include "common/kv_assert.h"
#include "common/kv_log.h"

#include <arpa/inet.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define K(field) offsetof(struct proxy_config, field)

static const char *const log_levels[] = {"error", "warn", "info", "debug", NULL};

const struct kv_cfg_key proxy_config_keys[] = {
    {"port", KV_CFG_INT, K(port), 1, 65535, false, NULL, "TCP port clients connect to"},
    {"bind", KV_CFG_STRING, K(bind), 0, 0, false, NULL, "address to listen on (IPv4 or IPv6)"},
    {"threads", KV_CFG_INT, K(threads), 0, KV_HTTP_THREADS_MAX, false, NULL,
     "event loop threads (0: one per core)"},
    {"max_connections", KV_CFG_INT, K(max_connections), 1, 1000000, false, NULL,
     "open client connections; more are refused"},
    {"request_timeout_ms", KV_CFG_INT, K(request_timeout_ms), 100, 3600000, false, NULL,
     "time a client has to send a whole request (idle keep-alive included)"},
    {"upstream_timeout_ms", KV_CFG_INT, K(upstream_timeout_ms), 100, 3600000, false, NULL,
     "a backend that sends nothing for this long fails the request"},
    {"health_check_interval_ms", KV_CFG_INT, K(health_check_interval_ms), 50, 3600000, false, NULL,
     "time between health checks of every backend"},
    {"health_check_timeout_ms", KV_CFG_INT, K(health_check_timeout_ms), 50, 60000, false, NULL,
     "a health check not answered 200 in this long marks the backend down"},
    {"max_body_bytes", KV_CFG_INT, K(max_body_bytes), 1024, 1ll << 31, true, NULL,
     "largest request body (a value, or a bulk request)"},
    {"max_response_bytes", KV_CFG_INT, K(max_response_bytes), 1024, 1ll << 31, true, NULL,
     "largest answer the proxy assembles from several shards"},
    {"max_range_response", KV_CFG_INT, K(max_range_response), 1, 100000, false, NULL,
     "most items in one range page"},
    {"max_bulk_items", KV_CFG_INT, K(max_bulk_items), 1, 1000000, false, NULL,
     "most keys in one bulk request"},
    {"max_key_size", KV_CFG_INT, K(max_key_size), 1, 65535, true, NULL, "longest key in bytes"},
    {"log_level", KV_CFG_ENUM, K(log_level), 0, 0, false, log_levels, "least severe log lines written"},
    {"shards", KV_CFG_JSON, K(shards), 0, 0, false, NULL,
     "the shard map: [{\"name\", \"start\", \"end\", \"main\", \"replicas\"}, ...] (docs/PROXY.md)"},
    {NULL, 0, 0, 0, 0, false, NULL, NULL},
};

void proxy_config_defaults(struct proxy_config *c)
{
    memset(c, 0, sizeof *c);
    c->port = 3000;
    c->bind = kv_strdup("0.0.0.0");
    c->threads = 0;
    c->max_connections = 4096;
    c->request_timeout_ms = 60000;
    c->upstream_timeout_ms = 10000;
    c->health_check_interval_ms = 1000;
    c->health_check_timeout_ms = 1000;
    c->max_body_bytes = (64ll << 20) + (64 << 10); /* a 64 MiB value, or a bulk body of as much */
    c->max_response_bytes = 64ll << 20;
    c->max_range_response = 1000;
    c->max_bulk_items = 10000;
    c->max_key_size = 1024;
    c->log_level = kv_strdup("info");
    c->shards = NULL;
}

void proxy_config_free(struct proxy_config *c)
{
    kv_cfg_free(proxy_config_keys, c);
}

static void usage(void)
{
    struct proxy_config d;
    proxy_config_defaults(&d);
    printf("usage: triekv-proxy [--config FILE] [--KEY VALUE]...\n\n"
           "Routes the triekv REST API to shards of triekv clusters by key range. Settings come from the\n"
           "defaults, then the JSON object in FILE (proxy.json), then TRIEKV_PROXY_<KEY> environment\n"
           "variables, then flags. The shard map (\"shards\") is required; see docs/PROXY.md.\n\n"
           "  --config FILE              JSON configuration file\n"
           "  --check                    validate the configuration (shard map included) and exit\n"
           "  --probe URL                exit 0 if URL answers 200 (for container health checks)\n"
           "  --help, --version\n");
    kv_cfg_print_help(proxy_config_keys, &d);
    proxy_config_free(&d);
}

int proxy_config_load(struct proxy_config *c, int argc, char **argv, char *err)
{
    static const struct kv_cfg_program prog = {"triekv-proxy", PROXY_VERSION, "TRIEKV_PROXY_", usage};
    proxy_config_defaults(c);
    int rc = kv_cfg_load_args(proxy_config_keys, c, &prog, argc, argv, &c->check_only, err);
    if (rc != 0)
        return rc;
    struct in6_addr a6;
    struct in_addr a4;
    if (inet_pton(AF_INET, c->bind, &a4) != 1 && inet_pton(AF_INET6, c->bind, &a6) != 1) {
        snprintf(err, KV_CFG_ERR_MAX, "config: 'bind' must be an IPv4 or IPv6 address, got \"%s\"", c->bind);
        return -1;
    }
    if (c->shards == NULL) {
        snprintf(err, KV_CFG_ERR_MAX,
                 "config: 'shards' is missing: the proxy needs a shard map (see --help)");
        return -1;
    }
    if (c->health_check_timeout_ms > c->health_check_interval_ms) {
        snprintf(err, KV_CFG_ERR_MAX,
                 "config: 'health_check_timeout_ms' (%lld) must not pass "
                 "'health_check_interval_ms' (%lld)",
                 (long long)c->health_check_timeout_ms, (long long)c->health_check_interval_ms);
        return -1;
    }
    return 0;
}
