/* node/node_http.c - triekv-server's start-up, routing, asynchronous writes and shutdown. The
 * listener, loop threads, connection cap and drain are common/kv_http.c's.
 *
 * Start-up: load the config, bind the listening socket (a port in use fails before the store is
 * touched), open the store (its recovery runs here; connections wait in the listen backlog), then
 * start the loops. Any failure before serving is one line on stderr and exit status 1.
 *
 * Shutdown (SIGTERM/SIGINT, caught by sigwait in the main thread): kv_http_stop drains the loops
 * (the writes a loop handed to the engine, and its waiters, count as busy: they are answered
 * first), then replication stops and the store is closed, which checkpoints.
 *
 * Writes: the loop thread builds a batch and first offers it to triekv_write_nowait, which commits
 * on this thread when that needs no waiting (no fsync, an idle pipeline) and answers at once.
 * Otherwise the batch goes to triekv_write_async; the engine's completion callback (an engine
 * thread) posts the job back to the loop's receiver, which answers. A guard in the request's pool
 * tells the job when h2o has disposed of the request, so a job never answers a request that is
 * gone. */
#include "node/node_int.h"
#include "common/kv_assert.h"
#include "common/kv_codec.h"
#include "common/kv_log.h"
#include "common/kv_time.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- asynchronous writes ------------------------------------------------------------------------- */

struct node_guard;

struct node_write_job {
    h2o_multithread_message_t msg;
    struct node_req *r; /* NULL once the request is gone */
    struct node_guard *guard;
    struct node_thread *th;
    node_write_reply_fn reply;
    int rc;
    struct triekv_write_result res;
    size_t arg_len;
    uint8_t arg[];
};

struct node_guard {
    struct node_write_job *job;
};

static void guard_dispose(void *p)
{
    struct node_guard *g = p;
    if (g->job)
        g->job->r = NULL; /* h2o is done with the request: the job must not touch it */
}

/* Engine thread: hand the result to the loop that owns the request. */
static void write_done(void *arg, int rc, const struct triekv_write_result *res)
{
    struct node_write_job *j = arg;
    j->rc = rc;
    j->res = *res;
    h2o_multithread_send_message(&j->th->done_rx, &j->msg);
}

/* Loop thread: answer every completed write. */
static void on_write_done(h2o_multithread_receiver_t *rx, h2o_linklist_t *messages)
{
    (void)rx;
    while (!h2o_linklist_is_empty(messages)) {
        struct node_write_job *j = H2O_STRUCT_FROM_MEMBER(struct node_write_job, msg.link, messages->next);
        h2o_linklist_unlink(&j->msg.link);
        j->th->http.busy--;
        if (j->r != NULL) {
            j->guard->job = NULL;
            j->reply(j->r, j->rc, &j->res, j->arg);
        }
        free(j);
    }
}

void node_write(struct node_req *r, struct triekv_batch *b, node_write_reply_fn reply, const void *arg,
                size_t arg_len)
{
    /* Most commits need no fsync and find the pipeline idle: commit here and answer at once, with
     * no hand-off to the committer thread and back. Anything that would wait goes async. */
    struct triekv_write_result res;
    int rc = triekv_write_nowait(r->node->db, b, &res);
    if (rc != KV_E_BUSY) {
        triekv_batch_destroy(b);
        reply(r, rc, &res, arg);
        return;
    }
    struct node_write_job *j = kv_calloc(1, sizeof *j + arg_len);
    j->r = r;
    j->th = r->th;
    j->reply = reply;
    j->arg_len = arg_len;
    if (arg_len)
        memcpy(j->arg, arg, arg_len);
    j->guard = h2o_mem_alloc_shared(&r->h.req->pool, sizeof *j->guard, guard_dispose);
    j->guard->job = j;
    r->th->http.busy++;
    triekv_write_async(r->node->db, b, write_done, j);
}

/* ---- routing ------------------------------------------------------------------------------------- */

static const struct kv_api_handlers node_api = {
    .kv = node_handle_kv,
    .bulk = node_handle_bulk,
    .bulk_delete = node_handle_bulk_delete,
    .bulk_get = node_handle_bulk_get,
    .range = node_handle_range,
    .stats = node_handle_stats,
    .metrics = node_handle_metrics,
    .health = node_handle_health,
};

static void dispatch(struct node_req *r)
{
    kv_api_route(&r->h, &node_api);
}

/* Read-your-writes: a read that names a seq this node has not reached waits for it (bounded). */
static void min_seq_ready(struct node_req *r, bool timed_out, uint64_t seq, const void *arg)
{
    (void)arg;
    if (!timed_out) {
        dispatch(r);
        return;
    }
    struct triekv_stats st;
    triekv_stats(r->node->db, &st);
    kv_http_error(&r->h, 503, "stale_replica",
                  "this node has seq %llu, behind the %llu asked for, after waiting %lld ms; retry, or read "
                  "from the main",
                  (unsigned long long)st.seq, (unsigned long long)seq,
                  (long long)r->node->cfg.replication_read_wait_ms);
}

static bool path_is(h2o_iovec_t path, const char *p)
{
    return h2o_memis(path.base, path.len, p, strlen(p));
}

/* /health, /stats and /metrics answer while a replica loads a snapshot: they report it. */
static bool is_observability(h2o_req_t *req)
{
    h2o_iovec_t path = kv_http_path(req);
    return path_is(path, "/health") || path_is(path, "/stats") || path_is(path, "/metrics");
}

static void on_req(struct kv_http_thread *kth, h2o_req_t *req)
{
    struct node_thread *th = (struct node_thread *)kth;
    struct node *n = th->node;
    struct node_req *r = h2o_mem_alloc_pool(&req->pool, sizeof *r);
    *r = (struct node_req){
        .h = {.req = req, .th = kth, .ep = KV_EP_OTHER, .start_ns = kv_now_ns()}, .th = th, .node = n};
    uint64_t want = 0;
    if (kv_api_is_read(req) && kv_api_min_seq(req, &want) != 0) {
        kv_http_error(&r->h, 400, "bad_request", "X-Triekv-Min-Seq must be a sequence number");
        return;
    }
    if (want > 0) {
        struct triekv_stats st;
        triekv_stats(n->db, &st);
        if (st.seq < want) {
            if (n->cfg.replication_read_wait_ms == 0)
                min_seq_ready(r, true, want, NULL);
            else
                node_seq_wait(r, want, min_seq_ready, NULL, 0);
            return;
        }
    }
    if (n->receiver && triekv_snapshot_active(n->db) && kv_api_is_read(req) && !is_observability(req)) {
        kv_http_error(&r->h, 503, "resyncing",
                      "this replica is loading a snapshot from its main; retry shortly");
        return;
    }
    dispatch(r);
}

/* ---- loop threads -------------------------------------------------------------------------------- */

static void thread_start(struct kv_http_thread *kth)
{
    struct node_thread *th = (struct node_thread *)kth;
    struct node *n = kth->srv->cfg.app;
    th->node = n;
    h2o_multithread_register_receiver(kth->ctx.queue, &th->done_rx, on_write_done);
    h2o_multithread_register_receiver(kth->ctx.queue, &th->seq_rx, node_seq_on_ready);
    h2o_timeout_init(
        kth->loop, &th->wait_timeout,
        (uint64_t)(n->cfg.is_replica ? n->cfg.replication_read_wait_ms : n->cfg.replication_timeout_ms));
}

static void thread_stop(struct kv_http_thread *kth)
{
    struct node_thread *th = (struct node_thread *)kth;
    h2o_multithread_unregister_receiver(kth->ctx.queue, &th->done_rx);
    h2o_multithread_unregister_receiver(kth->ctx.queue, &th->seq_rx);
    h2o_timeout_dispose(kth->loop, &th->wait_timeout);
}

/* ---- start-up ------------------------------------------------------------------------------------ */

/* Binds first (a port in use fails fast, before the store is touched), then opens the store. */
static int start(struct node *n, char *err, size_t errlen)
{
    /* The largest body any endpoint accepts; h2o answers 413 before reading a larger one. */
    int64_t body_max =
        n->cfg.max_value_size > n->cfg.max_bulk_bytes ? n->cfg.max_value_size : n->cfg.max_bulk_bytes;
    struct kv_http_config hc = {
        .name = NODE_COMPONENT,
        .server_header = "triekv/" TRIEKV_VERSION,
        .bind = n->cfg.bind,
        .port = (int)n->cfg.port,
        .threads = (int)n->cfg.threads,
        .max_connections = n->cfg.max_connections,
        .request_timeout_ms = n->cfg.request_timeout_ms,
        .max_request_body = (size_t)body_max + 1,
        .drain_ms = NODE_DRAIN_MS,
        .ep_names = kv_api_ep_names,
        .ep_count = KV_EP_COUNT,
        .thread_size = sizeof(struct node_thread),
        .thread_start = thread_start,
        .thread_stop = thread_stop,
        .on_req = on_req,
        .app = n,
    };
    if (kv_http_listen(&n->http, &hc, err, errlen) != 0)
        return -1;
    struct triekv_options o;
    node_config_engine(&n->cfg, &o);
    int rc = triekv_open(n->cfg.data_dir, &o, &n->db);
    if (rc != KV_OK) {
        snprintf(err, errlen, "cannot open the store in %s: %s", n->cfg.data_dir, kv_strerror(rc));
        return -1;
    }
    return 0;
}

static void log_started(struct node *n)
{
    struct triekv_stats st;
    triekv_stats(n->db, &st);
    if (n->cfg.replicas.n)
        kv_log_info(NODE_COMPONENT, "replicating to %zu replica(s), %s mode%s, cluster %s", n->cfg.replicas.n,
                    n->cfg.replication_mode, n->sync_mode ? " (writes wait for replicas)" : "",
                    n->cfg.cluster_id);
    char repl[96] = "";
    if (n->cfg.is_replica)
        snprintf(repl, sizeof repl, " (reads only), replication port %lld",
                 (long long)n->cfg.replication_port);
    kv_log_info(
        NODE_COMPONENT,
        "serving: role %s, port %lld on %s%s, data dir %s, fsync %s, i/o %s, cache %lld MiB, %d threads, "
        "%llu keys",
        n->cfg.is_replica ? "replica" : "main", (long long)n->cfg.port, n->cfg.bind, repl, n->cfg.data_dir,
        n->cfg.fsync, st.io_backend, (long long)n->cfg.cache_size, n->http.nthreads,
        (unsigned long long)st.keys);
}

static void node_free(struct node *n)
{
    kv_http_dispose(&n->http);
    node_config_free(&n->cfg);
    free(n);
}

int node_main(int argc, char **argv)
{
    if (argc == 3 && strcmp(argv[1], "--probe") == 0)
        return kv_http_probe("triekv-server", argv[2], 2000);
    struct node *n = kv_calloc(1, sizeof *n);
    char err[KV_CFG_ERR_MAX];
    n->http.listen_fd = -1;
    int rc = node_config_load(&n->cfg, argc, argv, err);
    if (rc != 0) {
        if (rc < 0)
            fprintf(stderr, "triekv-server: %s\n", err);
        node_free(n);
        return rc < 0 ? (strncmp(err, "usage:", 6) == 0 ? 2 : 1) : 0;
    }
    if (n->cfg.check_only) {
        printf("triekv-server: the configuration is valid (role %s, port %lld)\n",
               n->cfg.is_replica ? "replica" : "main", (long long)n->cfg.port);
        node_free(n);
        return 0;
    }
    enum kv_log_level lvl;
    kv_log_parse_level(n->cfg.log_level, &lvl);
    kv_log_set_level(lvl);
    n->started_ms = kv_now_ms();
    pthread_mutex_init(&n->waiters_mu, NULL);
    n->sync_mode =
        !n->cfg.is_replica && n->cfg.replicas.n > 0 && strcmp(n->cfg.replication_mode, "sync") == 0;
    if (n->cfg.advertise_url[0]) {
        snprintf(n->advertise_url, sizeof n->advertise_url, "%s", n->cfg.advertise_url);
    } else {
        char host[200] = "localhost";
        gethostname(host, sizeof host - 1);
        snprintf(n->advertise_url, sizeof n->advertise_url, "http://%s:%lld", host, (long long)n->cfg.port);
    }

    kv_http_signals_init(); /* before any thread starts: they all inherit the mask */

    if (start(n, err, sizeof err) != 0) {
        fprintf(stderr, "triekv-server: %s\n", err);
        if (n->db)
            triekv_close(n->db);
        pthread_mutex_destroy(&n->waiters_mu);
        node_free(n);
        return 1;
    }
    kv_http_start(&n->http);
    if (node_repl_start(n, err, sizeof err) != 0) {
        fprintf(stderr, "triekv-server: %s\n", err);
        kv_http_stop(&n->http);
        triekv_close(n->db);
        return 1;
    }
    log_started(n);

    const char *sig = kv_http_wait_stop();
    kv_log_info(NODE_COMPONENT, "%s: stopping (finishing requests in flight, then a checkpoint)", sig);
    kv_http_stop(&n->http);
    node_repl_stop(n);
    rc = triekv_close(n->db);
    if (rc != KV_OK)
        kv_log_error(NODE_COMPONENT, "final checkpoint failed: %s (the commit log still has every write)",
                     kv_strerror(rc));
    kv_log_info(NODE_COMPONENT, "stopped");
    pthread_mutex_destroy(&n->waiters_mu);
    node_free(n);
    return 0;
}
