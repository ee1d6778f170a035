/* proxy/proxy.h - triekv-proxy: one address in front of several triekv clusters.
 *
 * The key space is split into half-open ranges [start, end), each owned by a shard: a main and its
 * replicas. The proxy sends a key's writes to its shard's main and its reads to the shard's
 * healthy replicas in turn (the main when none answers), keeps multi-key batches atomic within a
 * shard, pages ranges across shards in key order, and health-checks every backend. It speaks only
 * HTTP to the nodes (the node's REST API, docs/API.md); see docs/PROXY.md. The program's main()
 * calls proxy_main(). */
#ifndef PROXY_H
#define PROXY_H

/* Runs the proxy until SIGTERM or SIGINT. Returns the process exit status: 0 after a clean
 * shutdown, 1 when start-up failed (a one-line message on stderr), 2 for a usage error. */
int proxy_main(int argc, char **argv);

#endif
