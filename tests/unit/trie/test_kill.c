/* tests/unit/trie/test_kill.c - a real process killed with SIGKILL.
 *
 * A child process writes in fsync=strict mode from four threads (disjoint keys, so each thread's
 * history is its own), with small pages and a small commit-log threshold so splits, compactions
 * and background checkpoints run all the time. After each acknowledged batch it reports
 * (thread, op number) to the parent through a pipe. The parent kills it with SIGKILL at a random
 * moment, reopens the store and checks, per thread, that the store holds exactly the effect of
 * the acknowledged operations, or of those plus the one in flight. Twenty rounds, each resuming
 * where the last one ended. */
#include "tests/unit/harness.h"
#include "tests/unit/trie/model.h"
#include "trie/triekv.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define THREADS  4
#define ROUNDS   20
#define KEYSPACE 2000

struct ack {
    uint32_t thread;
    uint32_t op;
};

/* ---- the deterministic history of one thread --------------------------------------------------- */

static int key_of(int t, int k, char *buf)
{
    return snprintf(buf, 32, "t%d/%05d", t, k);
}

static int val_of(int t, int i, char *buf)
{
    int n = snprintf(buf, 160, "v%d-%d-", t, i);
    int pad = i % 97;
    memset(buf + n, 'a' + i % 26, (size_t)pad);
    return n + pad;
}

/* Operation i of thread t as a batch, and its effect on a model. */
static void op_do(int t, int i, struct triekv_batch *b, struct model *m)
{
    char k[32], v[160];
    int kind = i % 10;
    int vn = val_of(t, i, v);
    int keys[2] = {i % KEYSPACE, (i + KEYSPACE / 2) % KEYSPACE};
    int nput = kind <= 6 ? 1 : kind == 7 ? 0 : 2;
    for (int j = 0; j < nput; j++) {
        int kn = key_of(t, keys[j], k);
        if (b)
            triekv_batch_put(b, kv_slice_make(k, (size_t)kn), kv_slice_make(v, (size_t)vn), TRIEKV_IF_ANY, 0);
        if (m)
            model_put(m, k, (size_t)kn, v, (size_t)vn);
    }
    if (kind >= 7) {
        int kn = key_of(t, (i * 13) % KEYSPACE, k);
        if (b)
            triekv_batch_del(b, kv_slice_make(k, (size_t)kn), TRIEKV_IF_ANY, 0);
        if (m)
            model_del(m, k, (size_t)kn);
    }
}

/* ---- the child ------------------------------------------------------------------------------ */

struct child_thread {
    struct triekv *db;
    int t;
    int start;
    int fd;
};

static void *child_writer(void *arg)
{
    struct child_thread *c = arg;
    for (int i = c->start;; i++) {
        struct triekv_batch *b = triekv_batch_create();
        op_do(c->t, i, b, NULL);
        int rc = triekv_write(c->db, b, NULL);
        triekv_batch_destroy(b);
        if (rc != KV_OK)
            _exit(10);
        struct ack a = {(uint32_t)c->t, (uint32_t)i};
        if (write(c->fd, &a, sizeof a) != (ssize_t)sizeof a) /* < PIPE_BUF: atomic */
            _exit(11);
    }
    return NULL;
}

static struct triekv_options kill_options(void)
{
    struct triekv_options o;
    triekv_options_init(&o);
    o.fsync = TRIEKV_FSYNC_STRICT;
    o.max_page_size = 16 * 1024;
    o.checkpoint_wal_bytes = 128 * 1024;
    o.wal_segment_bytes = 64 * 1024;
    o.cache_bytes = 1u << 20;
    return o;
}

static _Noreturn void child_main(const char *dir, const int *start, int fd)
{
    struct triekv_options o = kill_options();
    struct triekv *db;
    if (triekv_open(dir, &o, &db) != KV_OK)
        _exit(12);
    struct child_thread c[THREADS];
    pthread_t th[THREADS];
    for (int t = 0; t < THREADS; t++) {
        c[t] = (struct child_thread){db, t, start[t], fd};
        pthread_create(&th[t], NULL, child_writer, &c[t]);
    }
    for (;;)
        pause();
}

/* ---- the parent ----------------------------------------------------------------------------- */

static int visit_into(void *arg, struct kv_slice key, struct kv_slice value, uint64_t seq)
{
    (void)seq;
    model_put(arg, key.ptr, key.len, value.ptr, value.len);
    return 0;
}

static bool same(const struct model *a, const struct model *b)
{
    if (a->n != b->n)
        return false;
    for (size_t i = 0; i < a->n; i++) {
        if (model_cmp(a->v[i].key, a->v[i].klen, b->v[i].key, b->v[i].klen) != 0 ||
            a->v[i].vlen != b->v[i].vlen || memcmp(a->v[i].val, b->v[i].val, a->v[i].vlen) != 0)
            return false;
    }
    return true;
}

/* How many of thread t's operations the store holds: acked or acked + 1, else -1. */
static int ops_held(struct triekv *db, int t, int acked)
{
    char pfx[8];
    int pn = snprintf(pfx, sizeof pfx, "t%d/", t);
    struct model got = {0}, want = {0};
    struct triekv_range r = {.prefix = kv_slice_make(pfx, (size_t)pn), .has_prefix = true};
    int held = -1;
    if (triekv_scan(db, &r, visit_into, &got, NULL) == KV_OK) {
        for (int i = 0; i < acked; i++)
            op_do(t, i, NULL, &want);
        if (same(&got, &want))
            held = acked;
        op_do(t, acked, NULL, &want);
        if (held < 0 && same(&got, &want))
            held = acked + 1;
    }
    model_free(&got);
    model_free(&want);
    return held;
}

static void test_sigkill_rounds(void)
{
    const char *dir = harness_tmpdir(0);
    int done[THREADS] = {0}; /* operations each thread has in the store */
    int total_acked = 0, in_flight_kept = 0;
    for (int round = 0; round < ROUNDS; round++) {
        int fds[2];
        CHECK(pipe(fds) == 0);
        fflush(stdout);
        pid_t pid = fork();
        if (pid == 0) {
            close(fds[0]);
            child_main(dir, done, fds[1]);
        }
        close(fds[1]);
        int acked[THREADS];
        memcpy(acked, done, sizeof acked);
        uint64_t ms = 50 + harness_below(300);
        struct timespec t0;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        bool killed = false;
        for (;;) {
            struct timespec now;
            clock_gettime(CLOCK_MONOTONIC, &now);
            int64_t el = (now.tv_sec - t0.tv_sec) * 1000 + (now.tv_nsec - t0.tv_nsec) / 1000000;
            if (!killed && el >= (int64_t)ms) {
                kill(pid, SIGKILL);
                killed = true;
            }
            struct pollfd p = {fds[0], POLLIN, 0};
            if (poll(&p, 1, killed ? 1000 : 5) < 0 && errno != EINTR)
                break;
            if (!(p.revents & (POLLIN | POLLHUP)))
                continue;
            struct ack a;
            ssize_t n = read(fds[0], &a, sizeof a);
            if (n == 0)
                break; /* the child is gone and every ack it sent is read */
            if (n == (ssize_t)sizeof a && a.thread < THREADS && (int)a.op == acked[a.thread])
                acked[a.thread]++;
            else if (n > 0)
                CHECK(!"acknowledgements arrive in order");
        }
        close(fds[0]);
        int status;
        waitpid(pid, &status, 0);
        CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
        struct triekv_options o = kill_options();
        struct triekv *db = NULL;
        int rc = triekv_open(dir, &o, &db);
        CHECK_OK(rc);
        if (rc != KV_OK)
            break;
        for (int t = 0; t < THREADS; t++) {
            total_acked += acked[t] - done[t];
            int held = ops_held(db, t, acked[t]);
            if (held < 0)
                printf("    round %d thread %d: store is not the state after %d acknowledged operations\n",
                       round, t, acked[t]);
            CHECK(held >= 0);
            if (held > acked[t])
                in_flight_kept++;
            done[t] = held >= 0 ? held : acked[t];
        }
        CHECK_OK(triekv_close(db));
        if (harness_failed())
            break;
    }
    printf("    %d rounds, %d acknowledged batches checked, %d in-flight batches found durable\n", ROUNDS,
           total_acked, in_flight_kept);
    CHECK(total_acked > ROUNDS * THREADS); /* the child really wrote between kills */
    harness_rmdir(dir);
}

int main(void)
{
    printf("seed %llu\n", (unsigned long long)harness_seed());
    RUN(test_sigkill_rounds);
    return harness_finish();
}
