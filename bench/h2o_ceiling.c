/*
 * h2o_ceiling - the HTTP ceiling of this machine, measured with Debian's h2o 2.2.5 (evloop build).
 *
 * Role: a benchmark baseline, not part of the store. Every request, whatever its method or path, is
 * answered "200 OK" with the same 100-byte body (Content-Type: application/octet-stream, with a
 * Content-Length, keep-alive kept). Beyond h2o's own request parsing nothing is parsed, looked up
 * or copied, so wrk's requests/s against this server is the most our HTTP front end, built on the
 * same library, can hope to reach on the same machine: the benchmark sets our server against it.
 *
 *   h2o_ceiling [--port N] [--threads N] [--accept shared|reuseport]
 *
 * Listens on 127.0.0.1 only: --port defaults to 3099, --threads to the number of online cores.
 *
 * Thread model: the main thread creates the listening socket(s), starts --threads workers and then
 * only waits for SIGINT/SIGTERM (blocked in every thread, taken with sigwait()). Each worker owns
 * one h2o event loop and one h2o_context_t; a connection lives and dies on the worker that accepted
 * it, so h2o objects are never shared between threads and no lock is taken per request. The one
 * shared object is the read-only h2o_globalconf_t, set up before the workers start.
 *
 * Accepting: by default (--accept shared) there is one listening socket, which every worker polls
 * (each has its own h2o socket on a dup of the fd), as the h2o 2.2.5 standalone server does. The
 * alternative (--accept reuseport) gives every worker its own socket on the same port with
 * SO_REUSEPORT, and the kernel hashes new connections evenly over them. Shared is the default because
 * it measured faster on the 2-core machine this was written on, with wrk on the same cores. Medians
 * of quiet runs of wrk -t1 -c32 -d10s: shared 101k req/s (16 runs, 84k to 116k), reuseport 89k
 * (11 runs), and --threads 1 114k (11 runs). wrk keeps its 32 connections open, so accept() costs
 * nothing either way; the difference is where the connections land. With reuseport they split
 * evenly and both server threads compete with wrk for the two cores. With a shared socket, whichever
 * worker wakes first takes up to ACCEPTS_PER_WAKE at once, so the split is uneven (from 4:3 to
 * everything on one thread), and the more skewed it is the closer the box gets to --threads 1.
 * When the load generator runs on other cores, reuseport's even split is the better choice.
 *
 * Shutdown: on SIGINT/SIGTERM the main thread raises a flag and wakes every worker through h2o's
 * inter-thread queue (h2o_evloop_run() otherwise sleeps in epoll_wait() indefinitely). A worker
 * then closes its listener, asks h2o to end keep-alive (h2o_context_request_shutdown: later
 * responses carry "Connection: close"), and cuts its HTTP/1 request timeout to zero, which closes
 * the connections that are idle or still sending a request at the next loop turn; a request being
 * answered has no timer and is not affected. It runs its loop until its connections are gone
 * (at most DRAIN_TIMEOUT_MS), then disposes of its context and loop. Should a connection outlive
 * the drain, both are left to the process exit: h2o_context_dispose() asserts that no connection
 * timer is still pending.
 */

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <h2o.h>

#define DEFAULT_PORT     3099
#define BODY_SIZE        100
#define ACCEPTS_PER_WAKE 16   /* accept() calls per listener wake-up, at most */
#define DRAIN_TIMEOUT_MS 1000 /* how long a worker waits for its connections at shutdown */

enum accept_mode {
    ACCEPT_SHARED,    /* one listening socket, polled by every worker (default) */
    ACCEPT_REUSEPORT, /* one listening socket per worker, SO_REUSEPORT */
};

/* Everything a worker owns. Once it runs, the main thread only touches `wakeup` and `tid`. */
struct worker {
    pthread_t tid;
    int listen_fd; /* handed over to h2o, which closes it */
    h2o_evloop_t *loop;
    h2o_context_t ctx; /* one context per thread, never shared */
    h2o_accept_ctx_t accept_ctx;
    h2o_socket_t *listener;
    h2o_multithread_receiver_t wakeup; /* the main thread pokes this to end h2o_evloop_run() */
    size_t num_conns;                  /* open client connections on this worker */
};

static h2o_globalconf_t globalconf; /* read-only once the workers run */
static atomic_bool stop_requested;
static pthread_barrier_t started; /* workers + main: every wake-up receiver is registered */

/* The response body: static and never modified, so h2o can write it straight from here. */
static const char body[] = "0123456789012345678901234567890123456789012345678901234567890123456789"
                           "01234567890123456789012345678\n";
_Static_assert(sizeof(body) - 1 == BODY_SIZE, "the body must be BODY_SIZE bytes");

/*
 * The only handler. It answers synchronously, so it always returns 0 ("I took the request").
 * The body is sent zero-copy with h2o_start_response() + h2o_send(): h2o keeps a pointer to
 * `body` until the write completes, which is fine for static memory (h2o_send_inline() would copy
 * it into the request pool and would not set Content-Length). With no proceed/stop callbacks the
 * generator can be a static: the whole body goes in one final h2o_send().
 */
static int on_req(h2o_handler_t *self, h2o_req_t *req)
{
    static h2o_generator_t generator = {NULL, NULL};
    h2o_iovec_t buf = h2o_iovec_init(body, BODY_SIZE);
    int is_head = h2o_memis(req->method.base, req->method.len, H2O_STRLIT("HEAD"));

    (void)self;
    req->res.status = 200;
    req->res.reason = "OK";
    /* A known length keeps h2o from switching to chunked encoding. */
    req->res.content_length = BODY_SIZE;
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL,
                   H2O_STRLIT("application/octet-stream"));
    h2o_start_response(req, &generator);
    /* h2o only drops a HEAD body in h2o_send_inline(); a generator has to do it itself. */
    h2o_send(req, is_head ? NULL : &buf, is_head ? 0 : 1, H2O_SEND_STATE_FINAL);
    return 0;
}

/* Called by h2o when an accepted client socket is closed (sock->on_close). */
static void on_conn_close(void *data)
{
    struct worker *w = data;

    w->num_conns--;
}

/* The listener is readable: take up to ACCEPTS_PER_WAKE connections and give them to h2o. */
static void on_accept(h2o_socket_t *listener, const char *err)
{
    struct worker *w = listener->data;
    int i;

    if (err != NULL)
        return;
    for (i = 0; i < ACCEPTS_PER_WAKE; i++) {
        /* accept4(), non-blocking, close-on-exec, TCP_NODELAY set by h2o. NULL: queue empty. */
        h2o_socket_t *sock = h2o_evloop_socket_accept(listener);

        if (sock == NULL)
            return;
        w->num_conns++;
        sock->on_close.cb = on_conn_close;
        sock->on_close.data = w;
        h2o_accept(&w->accept_ctx, sock); /* plain TCP: starts HTTP/1 on it */
    }
}

/*
 * Receiver callback for the wake-up queue. The main thread only ever sends NULL messages, which
 * wake the loop without queueing anything, so this is never called with a message; it is here
 * because a receiver must have a callback, and it frees anything sent all the same.
 */
static void on_wakeup(h2o_multithread_receiver_t *receiver, h2o_linklist_t *messages)
{
    (void)receiver;
    while (!h2o_linklist_is_empty(messages)) {
        h2o_multithread_message_t *msg =
            H2O_STRUCT_FROM_MEMBER(h2o_multithread_message_t, link, messages->next);

        h2o_linklist_unlink(&msg->link);
        free(msg);
    }
}

/* Stop accepting, end keep-alive, close idle connections, and let the others finish. */
static void drain(struct worker *w)
{
    uint64_t deadline;

    h2o_socket_read_stop(w->listener);
    h2o_socket_close(w->listener); /* closes listen_fd (a reuseport socket drops its queue) */
    w->listener = NULL;
    h2o_context_request_shutdown(&w->ctx);
    /*
     * HTTP/1 connections waiting for (the rest of) a request sit on ctx.http1.req_timeout, whose
     * deadline h2o computes from this field at every loop turn: zero expires them all at once.
     */
    w->ctx.http1.req_timeout.timeout = 0;

    deadline = h2o_now(w->loop) + DRAIN_TIMEOUT_MS;
    while (w->num_conns != 0 && h2o_now(w->loop) < deadline) {
        if (h2o_evloop_run(w->loop, 10) != 0 && errno != EINTR)
            break;
    }
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;

    w->loop = h2o_evloop_create();
    h2o_context_init(&w->ctx, w->loop, &globalconf);
    h2o_multithread_register_receiver(w->ctx.queue, &w->wakeup, on_wakeup);

    w->accept_ctx.ctx = &w->ctx;
    w->accept_ctx.hosts = globalconf.hosts;
    /* DONT_READ: h2o only reports readiness, and on_accept() calls accept() itself. */
    w->listener = h2o_evloop_socket_create(w->loop, w->listen_fd, H2O_SOCKET_FLAG_DONT_READ);
    w->listener->data = w;
    h2o_socket_read_start(w->listener, on_accept);

    pthread_barrier_wait(&started);

    /*
     * h2o_evloop_run() polls once (waiting at most until the next h2o timer), runs the callbacks
     * and returns 0; it returns -1 when epoll_wait() fails, EINTR included (signals are blocked
     * here, but a debugger can still cause one).
     */
    while (!atomic_load(&stop_requested)) {
        if (h2o_evloop_run(w->loop, INT32_MAX) != 0 && errno != EINTR) {
            perror("h2o_evloop_run");
            break;
        }
    }

    drain(w);
    if (w->num_conns == 0) {
        h2o_multithread_unregister_receiver(w->ctx.queue, &w->wakeup);
        h2o_context_dispose(&w->ctx);
        h2o_evloop_destroy(w->loop);
    }
    return NULL;
}

/* A TCP socket listening on 127.0.0.1:port, or -1 (with a message). */
static int open_listener(int port, int reuseport)
{
    struct sockaddr_in addr;
    int on = 1;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

    if (fd < 0) {
        perror("socket");
        return -1;
    }
    memset(&addr, 0, sizeof(addr));
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = htons((uint16_t)port);
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on)) != 0 ||
        (reuseport && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &on, sizeof(on)) != 0)) {
        perror("setsockopt");
        close(fd);
        return -1;
    }
    if (bind(fd, (struct sockaddr *)&addr, sizeof(addr)) != 0 || listen(fd, H2O_SOMAXCONN) != 0) {
        fprintf(stderr, "h2o_ceiling: cannot listen on 127.0.0.1:%d: %s\n", port, strerror(errno));
        close(fd);
        return -1;
    }
    return fd;
}

/* One h2o host with a handler on "/", which h2o matches for every path. */
static void setup_globalconf(void)
{
    h2o_hostconf_t *hostconf;
    h2o_pathconf_t *pathconf;
    h2o_handler_t *handler;

    h2o_config_init(&globalconf);
    /* HTTP/1.1 only: no h2c upgrade, no "PRI *" prior-knowledge HTTP/2 on plain TCP. */
    globalconf.http1.upgrade_to_http2 = 0;
    /*
     * With HTTP/2 off its shutdown hook only does harm: h2o_context_request_shutdown() would arm a
     * 1-second GOAWAY timer, and h2o_context_dispose() asserts if that timer is still pending.
     */
    globalconf.http2.callbacks.request_shutdown = NULL;
    hostconf = h2o_config_register_host(&globalconf, h2o_iovec_init(H2O_STRLIT("default")), 65535);
    pathconf = h2o_config_register_path(hostconf, "/", 0);
    handler = h2o_create_handler(pathconf, sizeof(*handler));
    handler->on_req = on_req;
}

static int parse_int(const char *s, int min, int max, int *out)
{
    char *end;
    long v;

    errno = 0;
    v = strtol(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || v < min || v > max)
        return -1;
    *out = (int)v;
    return 0;
}

static void usage(void)
{
    fprintf(stderr, "usage: h2o_ceiling [--port N] [--threads N] [--accept shared|reuseport]\n");
}

int main(int argc, char **argv)
{
    int port = DEFAULT_PORT;
    int nthreads = (int)sysconf(_SC_NPROCESSORS_ONLN);
    enum accept_mode mode = ACCEPT_SHARED;
    struct worker *workers;
    sigset_t sigs;
    int sig, shared_fd = -1, i;

    for (i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--port") == 0 && i + 1 < argc) {
            if (parse_int(argv[++i], 1, 65535, &port) != 0) {
                usage();
                return 2;
            }
        } else if (strcmp(argv[i], "--threads") == 0 && i + 1 < argc) {
            if (parse_int(argv[++i], 1, 1024, &nthreads) != 0) {
                usage();
                return 2;
            }
        } else if (strcmp(argv[i], "--accept") == 0 && i + 1 < argc) {
            i++;
            if (strcmp(argv[i], "reuseport") == 0) {
                mode = ACCEPT_REUSEPORT;
            } else if (strcmp(argv[i], "shared") == 0) {
                mode = ACCEPT_SHARED;
            } else {
                usage();
                return 2;
            }
        } else {
            usage();
            return 2;
        }
    }
    if (nthreads < 1)
        nthreads = 1;

    /*
     * h2o writes with writev(): a peer that went away must give EPIPE, not kill us. SIGINT and
     * SIGTERM are blocked before any thread starts, so all threads inherit the mask and only
     * sigwait() below receives them.
     */
    signal(SIGPIPE, SIG_IGN);
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);

    setup_globalconf();

    workers = calloc((size_t)nthreads, sizeof(*workers));
    if (workers == NULL) {
        perror("calloc");
        return 1;
    }
    /*
     * All sockets are bound here, before any worker runs, so a busy port is a clean error. The
     * kernel lets any socket of the same user with SO_REUSEPORT join a port: a second copy of this
     * server would start and silently take half the connections. A plain socket (no
     * SO_REUSEPORT) cannot bind a port that is in use, so one is bound and closed first.
     */
    shared_fd = open_listener(port, 0);
    if (shared_fd < 0)
        return 1;
    if (mode == ACCEPT_REUSEPORT) {
        close(shared_fd);
        shared_fd = -1;
    }
    for (i = 0; i < nthreads; i++) {
        if (mode == ACCEPT_SHARED)
            workers[i].listen_fd = i == 0 ? shared_fd : fcntl(shared_fd, F_DUPFD_CLOEXEC, 0);
        else
            workers[i].listen_fd = open_listener(port, 1);
        if (workers[i].listen_fd < 0)
            return 1;
    }

    pthread_barrier_init(&started, NULL, (unsigned)nthreads + 1);
    for (i = 0; i < nthreads; i++) {
        if (pthread_create(&workers[i].tid, NULL, worker_main, &workers[i]) != 0) {
            fprintf(stderr, "h2o_ceiling: pthread_create failed\n");
            return 1;
        }
    }
    pthread_barrier_wait(&started);
    fprintf(stderr, "h2o_ceiling: listening on 127.0.0.1:%d, %d thread(s), accept=%s\n", port, nthreads,
            mode == ACCEPT_SHARED ? "shared" : "reuseport");

    do {
        if (sigwait(&sigs, &sig) != 0)
            sig = 0;
    } while (sig != SIGINT && sig != SIGTERM);

    /*
     * Raise the flag first, then wake each loop: a NULL message only writes to the worker's wake-up
     * pipe, so a worker that is about to sleep in epoll_wait() returns at once and sees the flag.
     */
    atomic_store(&stop_requested, true);
    for (i = 0; i < nthreads; i++)
        h2o_multithread_send_message(&workers[i].wakeup, NULL);
    for (i = 0; i < nthreads; i++)
        pthread_join(workers[i].tid, NULL);

    pthread_barrier_destroy(&started);
    h2o_config_dispose(&globalconf);
    free(workers);
    fprintf(stderr, "h2o_ceiling: stopped on signal %d\n", sig);
    return 0;
}
