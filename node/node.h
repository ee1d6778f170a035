/* node/node.h - the triekv server (triekv-server): configuration, the REST API on h2o, metrics
 * and roles, on top of the engine of trie/triekv.h. The program's main() calls node_main(). */
#ifndef NODE_H
#define NODE_H

#define TRIEKV_VERSION "0.1.0"

/* Runs the server until SIGTERM or SIGINT. Returns the process exit status: 0 after a clean
 * shutdown, 1 when start-up failed (a one-line message on stderr), 2 for a usage error. */
int node_main(int argc, char **argv);

#endif
