/* node/node_seq.c - requests that wait for a sequence number.
 *
 * Two things wait: on a main in replication_mode sync, a write's OK waits until min_replica_acks
 * replicas have applied its seq; on a replica, a read sent with X-Triekv-Min-Seq: N waits until
 * the replica has applied N. Both are bounded: after the role's timeout the request is answered
 * 503 instead.
 *
 * A waiter lives in a registry (node->waiters, under waiters_mu) and on a timer of its request's
 * loop thread. Whoever moves it first out of PENDING owns it: node_seq_advance (any thread, when
 * the awaited number moves) marks it READY and posts it to its loop; the timer (on the loop)
 * marks it TIMEDOUT and answers at once. A READY waiter's message is processed on the loop, which
 * unlinks its timer and answers. A guard in the request's pool tells the waiter when h2o has
 * disposed of the request, so a late answer never touches a request that is gone. */
#include "node/node_int.h"
#include "common/kv_assert.h"

#include <stdlib.h>
#include <string.h>

enum { WAIT_PENDING, WAIT_READY, WAIT_TIMEDOUT };

struct node_waiter {
    h2o_multithread_message_t msg;
    h2o_timeout_entry_t timer;
    struct node_thread *th;
    struct node_req *r; /* NULL once the request is gone */
    struct node_wait_guard *guard;
    uint64_t seq;
    _Atomic int state;
    node_wait_fn fn;
    struct node_waiter *next; /* registry */
    size_t arg_len;
    uint8_t arg[];
};

struct node_wait_guard {
    struct node_waiter *w;
};

static void guard_dispose(void *p)
{
    struct node_wait_guard *g = p;
    if (g->w)
        g->w->r = NULL;
}

static void unregister(struct node *n, struct node_waiter *w)
{
    pthread_mutex_lock(&n->waiters_mu);
    for (struct node_waiter **pp = &n->waiters; *pp; pp = &(*pp)->next) {
        if (*pp == w) {
            *pp = w->next;
            break;
        }
    }
    pthread_mutex_unlock(&n->waiters_mu);
}

static void finish(struct node_waiter *w, bool timed_out)
{
    w->th->http.busy--;
    if (w->r != NULL) {
        w->guard->w = NULL;
        w->fn(w->r, timed_out, w->seq, w->arg);
    }
    free(w);
}

static void on_timeout(h2o_timeout_entry_t *entry)
{
    struct node_waiter *w = H2O_STRUCT_FROM_MEMBER(struct node_waiter, timer, entry);
    int expected = WAIT_PENDING;
    if (!atomic_compare_exchange_strong(&w->state, &expected, WAIT_TIMEDOUT))
        return; /* READY first: its message is on the way */
    unregister(w->th->node, w);
    finish(w, true);
}

void node_seq_on_ready(h2o_multithread_receiver_t *rx, h2o_linklist_t *messages)
{
    (void)rx;
    while (!h2o_linklist_is_empty(messages)) {
        struct node_waiter *w = H2O_STRUCT_FROM_MEMBER(struct node_waiter, msg.link, messages->next);
        h2o_linklist_unlink(&w->msg.link);
        h2o_timeout_unlink(&w->timer);
        finish(w, false);
    }
}

void node_seq_wait(struct node_req *r, uint64_t seq, node_wait_fn fn, const void *arg, size_t arg_len)
{
    struct node *n = r->node;
    struct node_waiter *w = kv_calloc(1, sizeof *w + arg_len);
    w->th = r->th;
    w->r = r;
    w->seq = seq;
    w->fn = fn;
    w->arg_len = arg_len;
    if (arg_len)
        memcpy(w->arg, arg, arg_len);
    atomic_init(&w->state, WAIT_PENDING);
    w->guard = h2o_mem_alloc_shared(&r->h.req->pool, sizeof *w->guard, guard_dispose);
    w->guard->w = w;
    w->timer.cb = on_timeout;
    r->th->http.busy++;
    h2o_timeout_link(r->th->http.loop, &r->th->wait_timeout, &w->timer);
    pthread_mutex_lock(&n->waiters_mu);
    w->next = n->waiters;
    n->waiters = w;
    pthread_mutex_unlock(&n->waiters_mu);
    node_seq_advance(n, node_seq_current(n)); /* it may have moved meanwhile */
}

void node_seq_advance(struct node *n, uint64_t seq)
{
    pthread_mutex_lock(&n->waiters_mu);
    for (struct node_waiter **pp = &n->waiters; *pp;) {
        struct node_waiter *w = *pp;
        int expected = WAIT_PENDING;
        if (w->seq <= seq && atomic_compare_exchange_strong(&w->state, &expected, WAIT_READY)) {
            *pp = w->next;
            h2o_multithread_send_message(&w->th->seq_rx, &w->msg);
            continue;
        }
        pp = &w->next;
    }
    pthread_mutex_unlock(&n->waiters_mu);
}
