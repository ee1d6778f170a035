/* cli/cli_cmd_bench.c - `bench`: a small, bounded load generator. C client threads share --ops
 * operations (GET, PUT and DELETE on /kv/{key}, picked by --mix), each on its own keep-alive
 * connection; the keys are drawn from a fixed key space by a seeded generator, so a run is
 * repeatable. When the mix reads or deletes, the key space is written first (POST /bulk).
 *
 * Latencies go into log-linear histograms (64 steps per power of two: under 1.6% error) per worker
 * and op, so memory is fixed whatever --ops is; percentiles are read from the merged histograms and
 * capped at the exact maximum, which keeps p50 <= p90 <= p99 <= max. The first failure stops every
 * worker: a benchmark with errors in it measures nothing.
 * Threads: main (preload, progress bar, summary) and one worker per client; workers share only
 * the atomics of struct bench, and print nothing but a failure to create their libcurl handle. */
#include "cli/cli_int.h"
#include "common/kv_assert.h"
#include "common/kv_codec.h"
#include "common/kv_time.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define BENCH_OPS_MAX     1000000000u
#define BENCH_CLIENTS_MAX 256u
#define BENCH_KEYS_MAX    10000000u
#define BENCH_VALUE_MAX   (64u << 20) /* the server's default max_value_size */
#define BENCH_WEIGHT_MAX  1000000u
#define PRELOAD_ITEMS     1000       /* items per /bulk request */
#define PRELOAD_BYTES     (4u << 20) /* body bytes per /bulk request (one larger item goes alone) */
#define PROGRESS_MS       100

/* Histogram: values below 64 ns exact, above in 64 steps per power of two, up to 2^HIST_EXP_MAX ns. */
#define HIST_SUB     64
#define HIST_EXP_MAX 43 /* 2^43 ns is 2.4 hours, beyond any --timeout */
#define HIST_BUCKETS (HIST_SUB + (HIST_EXP_MAX - 6 + 1) * HIST_SUB)

enum op { OP_GET, OP_SET, OP_DELETE, OP_COUNT };
static const char *const op_names[OP_COUNT] = {"get", "set", "delete"};

struct hist {
    uint64_t n[HIST_BUCKETS];
    uint64_t count, sum_ns, max_ns;
};

struct bench;

struct worker {
    struct bench *b;
    int idx;
    pthread_t tid;
    uint64_t ops; /* this worker's share */
    uint64_t rng;
    struct hist hist[OP_COUNT];
    uint64_t not_found[OP_COUNT];
    int rc;                /* CLI_OK, or the exit status of the failure that stopped it */
    char msg[CLI_MSG_MAX]; /* that failure */
};

struct bench {
    /* settings, read-only once workers run */
    const struct cli *c;
    uint64_t ops, keys, value_size, seed, clients;
    uint32_t weight[OP_COUNT], weight_total;
    /* shared */
    _Atomic uint64_t done;
    _Atomic bool stop;
    _Atomic int running;
    struct worker *w;
};

static uint64_t splitmix(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15u);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
    return z ^ (z >> 31);
}

static void hist_add(struct hist *h, uint64_t ns)
{
    size_t b;
    if (ns < HIST_SUB) {
        b = (size_t)ns;
    } else {
        int e = 63 - __builtin_clzll(ns);
        if (e > HIST_EXP_MAX) { /* clamp into the last bucket */
            e = HIST_EXP_MAX;
            ns = (1ull << (HIST_EXP_MAX + 1)) - 1;
        }
        b = HIST_SUB + (size_t)(e - 6) * HIST_SUB + (size_t)((ns >> (e - 6)) - HIST_SUB);
    }
    KV_ASSERT(b < HIST_BUCKETS);
    h->n[b]++;
    h->count++;
    h->sum_ns += ns;
    h->max_ns = ns > h->max_ns ? ns : h->max_ns;
}

static uint64_t bucket_high(size_t b)
{
    if (b < HIST_SUB)
        return b;
    size_t e = (b - HIST_SUB) / HIST_SUB + 6, sub = (b - HIST_SUB) % HIST_SUB;
    return ((uint64_t)(HIST_SUB + sub + 1) << (e - 6)) - 1;
}

static void hist_merge(struct hist *into, const struct hist *h)
{
    for (size_t i = 0; i < HIST_BUCKETS; i++)
        into->n[i] += h->n[i];
    into->count += h->count;
    into->sum_ns += h->sum_ns;
    into->max_ns = h->max_ns > into->max_ns ? h->max_ns : into->max_ns;
}

/* The value at quantile q (0..1]: the upper end of its bucket, never above the maximum. */
static uint64_t hist_quantile(const struct hist *h, double q)
{
    uint64_t rank = (uint64_t)(q * (double)h->count + 0.999999), seen = 0;
    for (size_t i = 0; i < HIST_BUCKETS && h->count > 0; i++) {
        seen += h->n[i];
        if (seen >= rank && seen > 0)
            return bucket_high(i) < h->max_ns ? bucket_high(i) : h->max_ns;
    }
    return h->max_ns;
}

/* ---- the workers ---------------------------------------------------------------------------------- */

static void key_path(uint64_t k, struct kv_buf *path)
{
    char key[32];
    int n = snprintf(key, sizeof key, "bench:%08" PRIu64, k);
    path->len = 0;
    kv_buf_append_str(path, "/kv/");
    kv_percent_encode((const uint8_t *)key, (size_t)n, path);
    kv_buf_append_byte(path, 0);
}

static enum op pick_op(const struct bench *b, uint64_t roll)
{
    uint64_t r = roll % b->weight_total;
    for (int op = 0; op < OP_COUNT; op++) {
        if (r < b->weight[op])
            return (enum op)op;
        r -= b->weight[op];
    }
    return OP_GET; /* not reached: the weights add up to weight_total */
}

static void fill_value(struct kv_buf *v, uint64_t size, uint64_t *rng)
{
    kv_buf_reserve(v, (size_t)size);
    for (v->len = 0; v->len < size; v->len++)
        v->ptr[v->len] = (uint8_t)('a' + splitmix(rng) % 26);
}

/* Runs ops until its share is done or another worker failed. */
static int worker_loop(struct worker *w, struct cli_http *h)
{
    struct bench *b = w->b;
    struct cli_resp r = {0};
    struct kv_buf path = {0}, value = {0};
    fill_value(&value, b->value_size, &w->rng);
    int rc = CLI_OK;
    for (uint64_t i = 0; i < w->ops && !atomic_load_explicit(&b->stop, memory_order_relaxed); i++) {
        enum op op = pick_op(b, splitmix(&w->rng));
        key_path(splitmix(&w->rng) % b->keys, &path);
        static const char *const methods[OP_COUNT] = {"GET", "PUT", "DELETE"};
        uint64_t t0 = kv_now_ns();
        rc = cli_http_call(h, methods[op], (const char *)path.ptr, op == OP_SET ? value.ptr : NULL,
                           op == OP_SET ? value.len : 0, NULL, CLI_F_404_OK, &r);
        uint64_t t = kv_now_ns() - t0;
        if (rc == CLI_NOT_FOUND && r.status == 404 && op != OP_SET) {
            w->not_found[op]++;
            rc = CLI_OK;
        }
        if (rc != CLI_OK) {
            snprintf(w->msg, sizeof w->msg, "%s", r.msg);
            break;
        }
        hist_add(&w->hist[op], t);
        atomic_fetch_add_explicit(&b->done, 1, memory_order_relaxed);
    }
    kv_buf_free(&path);
    kv_buf_free(&value);
    cli_resp_free(&r);
    return rc;
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    struct cli_http *h = NULL;
    w->rc = cli_http_create(w->b->c->url, w->b->c->timeout_s, &h);
    if (w->rc == CLI_OK)
        w->rc = worker_loop(w, h);
    else
        snprintf(w->msg, sizeof w->msg, "cannot create an HTTP client");
    if (w->rc != CLI_OK)
        atomic_store(&w->b->stop, true);
    cli_http_destroy(h);
    atomic_fetch_sub(&w->b->running, 1);
    return NULL;
}

/* ---- setup ------------------------------------------------------------------------------------------ */

/* --mix get:95,set:5[,delete:N] */
static int parse_mix(const struct cli *c, const char *text, struct bench *b)
{
    bool seen[OP_COUNT] = {false};
    memset(b->weight, 0, sizeof b->weight);
    const char *p = text;
    for (;;) {
        size_t n = strcspn(p, ","), name = strcspn(p, ":");
        int op = OP_COUNT;
        for (int i = 0; i < OP_COUNT && name < n; i++)
            if (strlen(op_names[i]) == name && memcmp(p, op_names[i], name) == 0)
                op = i;
        char *end = NULL;
        unsigned long v = op < OP_COUNT ? strtoul(p + name + 1, &end, 10) : 0;
        if (op == OP_COUNT || end == p + name + 1 || end != p + n || v > BENCH_WEIGHT_MAX || seen[op])
            return cli_usage(c,
                             "--mix '%s': expected OP:WEIGHT[,OP:WEIGHT...] with OP get, set or delete, each "
                             "once, and whole weights",
                             text);
        seen[op] = true;
        b->weight[op] = (uint32_t)v;
        if (p[n] == 0)
            break;
        p += n + 1;
    }
    b->weight_total = b->weight[OP_GET] + b->weight[OP_SET] + b->weight[OP_DELETE];
    if (b->weight_total == 0)
        return cli_usage(c, "--mix '%s' has no weight above 0", text);
    return CLI_OK;
}

enum { OPT_OPS, OPT_CLIENTS, OPT_VALUE_SIZE, OPT_KEYS, OPT_MIX, OPT_SEED };

static int parse_bench(struct cli *c, int argc, char **argv, struct bench *b)
{
    static const struct cli_opt opts[] = {
        {"--ops", 1, OPT_OPS},
        {"--clients", 1, OPT_CLIENTS},
        {"--value-size", 1, OPT_VALUE_SIZE},
        {"--keys", 1, OPT_KEYS},
        {"--mix", 1, OPT_MIX},
        {"--seed", 1, OPT_SEED},
        {NULL, 0, 0},
    };
    struct cli_args a = {.argc = argc, .argv = argv};
    const char *val[2];
    int id, rc = CLI_OK;
    while (rc == CLI_OK && (id = cli_args_next(c, &a, opts, val)) != CLI_ARG_END) {
        switch (id) {
        case CLI_ARG_HELP:
            return CLI_HELP;
        case CLI_ARG_ERR:
            return CLI_USAGE;
        case CLI_ARG_POS:
            return cli_usage(c, "bench takes options only, not '%s'", val[0]);
        case OPT_OPS:
            rc = cli_parse_u64(c, "--ops", val[0], 1, BENCH_OPS_MAX, &b->ops);
            break;
        case OPT_CLIENTS:
            rc = cli_parse_u64(c, "--clients", val[0], 1, BENCH_CLIENTS_MAX, &b->clients);
            break;
        case OPT_VALUE_SIZE:
            rc = cli_parse_u64(c, "--value-size", val[0], 0, BENCH_VALUE_MAX, &b->value_size);
            break;
        case OPT_KEYS:
            rc = cli_parse_u64(c, "--keys", val[0], 1, BENCH_KEYS_MAX, &b->keys);
            break;
        case OPT_MIX:
            rc = parse_mix(c, val[0], b);
            break;
        default:
            rc = cli_parse_u64(c, "--seed", val[0], 0, UINT64_MAX, &b->seed);
        }
    }
    return rc;
}

/* Writes every key of the key space, so reads find values. */
static int preload(struct cli *c, const struct bench *b)
{
    struct kv_buf body = {0}, value = {0};
    struct cli_resp r = {0};
    uint64_t rng = b->seed;
    char key[32];
    int rc = CLI_OK;
    fill_value(&value, b->value_size, &rng);
    if (isatty(STDERR_FILENO))
        fprintf(stderr, "bench: writing %" PRIu64 " keys first\n", b->keys);
    size_t batch = PRELOAD_ITEMS;
    for (uint64_t k = 0; k < b->keys && rc == CLI_OK;) { /* each pass moves on or halves batch */
        uint64_t first = k;
        body.len = 0;
        kv_buf_append_byte(&body, '{');
        for (size_t n = 0; k < b->keys && n < batch && (n == 0 || body.len < PRELOAD_BYTES); n++, k++) {
            int len = snprintf(key, sizeof key, "bench:%08" PRIu64, k);
            kv_buf_append_str(&body, n ? ",\"" : "\"");
            cli_b64(&body, (const uint8_t *)key, (size_t)len);
            kv_buf_append_str(&body, "\":\"");
            cli_b64(&body, value.ptr, value.len);
            kv_buf_append_byte(&body, '"');
        }
        kv_buf_append_byte(&body, '}');
        rc = cli_call(c, "POST", "/bulk?encoding=base64", &body, NULL, CLI_F_413_QUIET, &r);
        if (rc != CLI_OK && r.status == 413 && k - first > 1) {
            batch = (size_t)(k - first) / 2; /* the server's bulk limits are lower: smaller batches */
            k = first;
            rc = CLI_OK;
        } else if (rc != CLI_OK && r.status == 413) {
            cli_fail(rc, "%s", r.msg);
        }
    }
    kv_buf_free(&body);
    kv_buf_free(&value);
    cli_resp_free(&r);
    return rc;
}

/* ---- progress and summary --------------------------------------------------------------------------- */

static void progress(const struct bench *b, uint64_t start_ns, bool final)
{
    uint64_t done = atomic_load(&b->done);
    double secs = (double)(kv_now_ns() - start_ns) / 1e9;
    int width = 30, fill = (int)((double)width * (double)done / (double)b->ops);
    char bar[64], rate[40];
    memset(bar, '#', (size_t)fill);
    memset(bar + fill, '.', (size_t)(width - fill));
    bar[width] = 0;
    fprintf(stderr, "\r[%s] %3d%% %" PRIu64 "/%" PRIu64 " ops  %s ", bar, (int)(100 * done / b->ops), done,
            b->ops, cli_fmt_rate(rate, sizeof rate, secs > 0 ? (double)done / secs : 0));
    if (final)
        fputs("\r\033[K", stderr); /* clear the line: the summary follows */
    fflush(stderr);
}

static void latency_json(struct kv_buf *o, const struct hist *h)
{
    kv_buf_printf(o, "{\"p50\":%.1f,\"p90\":%.1f,\"p99\":%.1f,\"max\":%.1f,\"mean\":%.1f}",
                  (double)hist_quantile(h, 0.50) / 1e3, (double)hist_quantile(h, 0.90) / 1e3,
                  (double)hist_quantile(h, 0.99) / 1e3, (double)h->max_ns / 1e3,
                  h->count ? (double)h->sum_ns / (double)h->count / 1e3 : 0.0);
}

static void latency_row(struct kv_buf *o, const char *name, const struct hist *h, const char *not_found)
{
    char n1[32];
    kv_buf_printf(o, "%-8s %12s %10s %10.3f %10.3f %10.3f %10.3f %10.3f\n", name,
                  cli_fmt_count(n1, sizeof n1, h->count), not_found, (double)hist_quantile(h, 0.50) / 1e6,
                  (double)hist_quantile(h, 0.90) / 1e6, (double)hist_quantile(h, 0.99) / 1e6,
                  (double)h->max_ns / 1e6, h->count ? (double)h->sum_ns / (double)h->count / 1e6 : 0.0);
}

static void summary(const struct cli *c, const struct bench *b, double secs, struct kv_buf *o)
{
    struct hist *per = kv_calloc(OP_COUNT + 1, sizeof *per), *all = &per[OP_COUNT];
    uint64_t nf[OP_COUNT] = {0};
    for (uint64_t i = 0; i < b->clients; i++) {
        for (int op = 0; op < OP_COUNT; op++) {
            hist_merge(&per[op], &b->w[i].hist[op]);
            hist_merge(all, &b->w[i].hist[op]);
            nf[op] += b->w[i].not_found[op];
        }
    }
    double rate = secs > 0 ? (double)all->count / secs : 0;
    if (c->json) {
        kv_buf_printf(o,
                      "{\"ops\":%" PRIu64 ",\"clients\":%" PRIu64 ",\"seconds\":%.6f,\"ops_per_second\":%.1f,"
                      "\"value_size\":%" PRIu64 ",\"keys\":%" PRIu64 ",\"seed\":%" PRIu64 ",\"mix\":{",
                      all->count, b->clients, secs, rate, b->value_size, b->keys, b->seed);
        for (int op = 0; op < OP_COUNT; op++)
            kv_buf_printf(o, "%s\"%s\":%u", op ? "," : "", op_names[op], b->weight[op]);
        kv_buf_append_str(o, "},\"latency_us\":");
        latency_json(o, all);
        kv_buf_append_str(o, ",\"by_op\":{");
        for (int op = 0, n = 0; op < OP_COUNT; op++) {
            if (b->weight[op] == 0)
                continue;
            kv_buf_printf(o, "%s\"%s\":{\"count\":%" PRIu64 ",\"not_found\":%" PRIu64 ",\"latency_us\":",
                          n++ ? "," : "", op_names[op], per[op].count, nf[op]);
            latency_json(o, &per[op]);
            kv_buf_append_byte(o, '}');
        }
        kv_buf_append_str(o, "}}\n");
    } else {
        char n1[32], n2[32], n3[40], n4[32];
        kv_buf_printf(
            o,
            "bench: %s ops in %.2f s with %" PRIu64 " clients: %s (values %s, %s keys, seed %" PRIu64 ")\n",
            cli_fmt_count(n1, sizeof n1, all->count), secs, b->clients, cli_fmt_rate(n3, sizeof n3, rate),
            cli_fmt_bytes(n2, sizeof n2, b->value_size), cli_fmt_count(n4, sizeof n4, b->keys), b->seed);
        kv_buf_printf(o, "%-8s %12s %10s %10s %10s %10s %10s %10s\n", "op", "count", "not found", "p50 ms",
                      "p90 ms", "p99 ms", "max ms", "mean ms");
        for (int op = 0; op < OP_COUNT; op++)
            if (b->weight[op] > 0)
                latency_row(o, op_names[op], &per[op],
                            op == OP_SET ? "-" : cli_fmt_count(n2, sizeof n2, nf[op]));
        latency_row(o, "all", all, "");
    }
    free(per);
}

/* Starts the workers, draws progress until they end, and joins them. */
static int run_workers(struct bench *b, double *secs)
{
    bool tty = isatty(STDERR_FILENO);
    uint64_t start = kv_now_ns();
    uint64_t started = 0;
    atomic_store(&b->running, (int)b->clients);
    for (; started < b->clients; started++) {
        struct worker *w = &b->w[started];
        w->b = b;
        w->idx = (int)started;
        w->ops = b->ops / b->clients + (started < b->ops % b->clients ? 1 : 0);
        w->rng = b->seed ^ (0x9e3779b97f4a7c15u * (started + 1));
        if (pthread_create(&w->tid, NULL, worker_main, w) != 0) {
            atomic_store(&b->stop, true);
            atomic_fetch_sub(&b->running, (int)(b->clients - started));
            break;
        }
    }
    while (atomic_load(&b->running) > 0) { /* ends: every worker's share is bounded */
        struct timespec ts = {0, PROGRESS_MS * 1000000L};
        nanosleep(&ts, NULL);
        if (tty)
            progress(b, start, false);
    }
    for (uint64_t i = 0; i < started; i++)
        pthread_join(b->w[i].tid, NULL);
    *secs = (double)(kv_now_ns() - start) / 1e9;
    if (tty)
        progress(b, start, true);
    if (started < b->clients)
        return cli_fail(CLI_SERVER, "cannot start client thread %" PRIu64, started + 1);
    for (uint64_t i = 0; i < b->clients; i++)
        if (b->w[i].rc != CLI_OK)
            return cli_fail(b->w[i].rc, "bench stopped: %s", b->w[i].msg);
    return CLI_OK;
}

static int bench_run(struct cli *c, int argc, char **argv)
{
    struct bench *b = kv_calloc(1, sizeof *b);
    struct kv_buf out = {0};
    double secs = 0;
    b->c = c;
    b->ops = 10000;
    b->clients = 4;
    b->value_size = 100;
    b->keys = 10000;
    b->seed = 1;
    b->weight[OP_GET] = 95;
    b->weight[OP_SET] = 5;
    b->weight_total = 100;
    int rc = parse_bench(c, argc, argv, b);
    if (rc == CLI_OK && (b->weight[OP_GET] > 0 || b->weight[OP_DELETE] > 0))
        rc = preload(c, b);
    else if (rc == CLI_OK)
        rc = cli_connect(c); /* a bad TRIEKV_URL is reported once, here */
    if (rc != CLI_OK)
        goto out_free;
    b->w = kv_calloc(b->clients, sizeof *b->w);
    rc = run_workers(b, &secs);
    if (rc != CLI_OK)
        goto out_free;
    summary(c, b, secs, &out);
    cli_out(out.ptr, out.len);
    rc = cli_out_finish();

out_free:
    free(b->w);
    free(b);
    kv_buf_free(&out);
    return rc;
}

const struct cli_command cli_cmd_bench = {
    "bench",
    "a small load generator: throughput and latency percentiles",
    "usage: triekv-cli bench [--ops N] [--clients C] [--value-size B] [--keys K] [--mix get:95,set:5]\n"
    "                        [--seed S] [--json]\n"
    "\n"
    "Runs N operations from C client threads, each on its own keep-alive connection: GET, PUT and\n"
    "DELETE on /kv/bench:NNNNNNNN, keys drawn from a space of K by a generator seeded with S (the\n"
    "same options give the same sequence). When the mix has gets or deletes, the K keys are written\n"
    "first (not counted). A progress bar shows on stderr when it is a terminal. At the end: the\n"
    "throughput and, per operation, count, not-found answers and latency p50/p90/p99/max/mean.\n"
    "The first failure stops the run (status 3, or 2 for a request the server refused).\n"
    "--json prints {\"ops\", \"clients\", \"seconds\", \"ops_per_second\", \"value_size\", \"keys\", "
    "\"seed\",\n"
    "\"mix\": {op: weight}, \"latency_us\": {p50, p90, p99, max, mean}, \"by_op\": {op: {\"count\",\n"
    "\"not_found\", \"latency_us\"}}} with latencies in microseconds.\n"
    "\n"
    "options:\n"
    "  --ops N          operations in all, 1 to 1e9 (default 10000)\n"
    "  --clients C      client threads, 1 to 256 (default 4)\n"
    "  --value-size B   bytes per value written, up to 64 MiB (default 100)\n"
    "  --keys K         size of the key space, 1 to 1e7 (default 10000)\n"
    "  --mix SPEC       weights of get, set and delete (default get:95,set:5)\n"
    "  --seed S         seed of the key and operation choice (default 1)\n"
    "\n"
    "examples:\n"
    "  triekv-cli bench\n"
    "  triekv-cli bench --ops 100000 --clients 16 --mix get:80,set:15,delete:5\n"
    "  triekv-cli bench --ops 2000 --json | jq .latency_us\n",
    bench_run,
};
