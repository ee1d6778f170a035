/* cli/cli_cmd_stats.c - `stats` (GET /stats for people: human units, rates, replication lag) and
 * `watch-stats` (the same view refreshed in place until Ctrl-C, with rates measured between two
 * refreshes).
 *
 * The field names are those node/node_stats.c and node/node_repl.c write; a field the server does
 * not send shows as 0 or "?", never as an error, so an older or newer server still gets a view.
 * --json passes the server's JSON through unchanged (watch-stats: one such line per refresh).
 * Threads: main thread only; SIGINT only sets a flag that watch-stats polls. */
#include "cli/cli_int.h"
#include "common/kv_time.h"

#include <errno.h>
#include <signal.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define WATCH_INTERVAL_S_MIN 0.1
#define WATCH_INTERVAL_S_MAX 3600.0
#define WATCH_COUNT_MAX      1000000000u

/* Per-second rates of the counters, over some window. */
struct rates {
    bool have;
    const char *label; /* over which window; when !have, why there are none */
    double gets, sets, deletes, requests;
};

/* The counters rates are computed from, and when they were read. */
struct sample {
    uint64_t gets, sets, deletes, requests;
    uint64_t at_ns;
};

static uint64_t num(const json_t *o, const char *name)
{
    const json_t *v = json_object_get(o, name);
    if (json_is_integer(v) && json_integer_value(v) > 0)
        return (uint64_t)json_integer_value(v);
    if (json_is_real(v) && json_real_value(v) > 0)
        return (uint64_t)json_real_value(v);
    return 0;
}

static double real(const json_t *o, const char *name)
{
    const json_t *v = json_object_get(o, name);
    return json_is_number(v) ? json_number_value(v) : 0.0;
}

static const char *str(const json_t *o, const char *name)
{
    const char *s = json_string_value(json_object_get(o, name));
    return s != NULL ? s : "?";
}

static struct sample sample_of(const json_t *st)
{
    struct sample s = {num(st, "gets"), num(st, "sets"), num(st, "deletes"), 0, kv_now_ns()};
    const char *k;
    json_t *req = json_object_get(st, "requests"), *v;
    json_object_foreach(req, k, v) s.requests +=
        json_is_integer(v) && json_integer_value(v) > 0 ? (uint64_t)json_integer_value(v) : 0;
    return s;
}

static double per_s(uint64_t now, uint64_t before, double seconds)
{
    return seconds > 0 && now >= before ? (double)(now - before) / seconds : 0.0;
}

static void render_ops(struct kv_buf *b, const json_t *st, const struct rates *rt)
{
    char n1[32], n2[32], n3[32], n4[40];
    kv_buf_printf(
        b, "operations    gets %s  sets %s  deletes %s\n", cli_fmt_count(n1, sizeof n1, num(st, "gets")),
        cli_fmt_count(n2, sizeof n2, num(st, "sets")), cli_fmt_count(n3, sizeof n3, num(st, "deletes")));
    if (rt->have) {
        char r1[40], r2[40], r3[40];
        kv_buf_printf(b, "rates         gets %s  sets %s  deletes %s  requests %s  (%s)\n",
                      cli_fmt_rate(r1, sizeof r1, rt->gets), cli_fmt_rate(r2, sizeof r2, rt->sets),
                      cli_fmt_rate(r3, sizeof r3, rt->deletes), cli_fmt_rate(n4, sizeof n4, rt->requests),
                      rt->label);
    } else {
        kv_buf_printf(b, "rates         %s\n", rt->label);
    }
    uint64_t hits = num(st, "hits"), misses = num(st, "misses");
    kv_buf_printf(b, "point reads   hits %s  misses %s  (%.1f%% found)\n", cli_fmt_count(n1, sizeof n1, hits),
                  cli_fmt_count(n2, sizeof n2, misses),
                  hits + misses ? 100.0 * (double)hits / (double)(hits + misses) : 0.0);
    kv_buf_printf(b, "requests      %s\n", cli_fmt_count(n1, sizeof n1, sample_of(st).requests));
}

static void render_engine(struct kv_buf *b, const json_t *st)
{
    char n1[32], n2[32], n3[32], n4[32];
    const json_t *ca = json_object_get(st, "cache"), *sg = json_object_get(st, "storage");
    const json_t *cn = json_object_get(st, "connections");
    uint64_t budget = num(ca, "budget_bytes"), bytes = num(ca, "bytes");
    kv_buf_printf(b, "commits       seq %s  durable %s  checkpoint %s  fsync %s\n",
                  cli_fmt_count(n1, sizeof n1, num(st, "seq")),
                  cli_fmt_count(n2, sizeof n2, num(sg, "durable_seq")),
                  cli_fmt_count(n3, sizeof n3, num(sg, "checkpoint_seq")), str(st, "fsync"));
    kv_buf_printf(b, "cache         %s of %s (%.1f%%), %s pages, hit ratio %.1f%%, %s evictions\n",
                  cli_fmt_bytes(n1, sizeof n1, bytes), cli_fmt_bytes(n2, sizeof n2, budget),
                  budget ? 100.0 * (double)bytes / (double)budget : 0.0,
                  cli_fmt_count(n3, sizeof n3, num(ca, "pages")), 100.0 * real(ca, "hit_ratio"),
                  cli_fmt_count(n4, sizeof n4, num(ca, "evictions")));
    kv_buf_printf(
        b, "storage       %s, %s partitions, commit log %s in %s segments, %s splits, %s compactions\n",
        str(sg, "io_backend"), cli_fmt_count(n1, sizeof n1, num(st, "partitions")),
        cli_fmt_bytes(n2, sizeof n2, num(sg, "wal_bytes")),
        cli_fmt_count(n3, sizeof n3, num(sg, "wal_segments")),
        cli_fmt_count(n4, sizeof n4, num(sg, "splits")),
        cli_fmt_count(n4, sizeof n4, num(sg, "compactions")));
    if (json_is_true(json_object_get(sg, "read_only")))
        kv_buf_printf(b, "              READ-ONLY: %s (restart the node)\n", str(sg, "read_only_reason"));
    if (num(sg, "corrupt_partitions") > 0)
        kv_buf_printf(b, "              %s CORRUPT PARTITIONS\n",
                      cli_fmt_count(n1, sizeof n1, num(sg, "corrupt_partitions")));
    kv_buf_printf(
        b, "connections   %s open, %s accepted, %s refused\n", cli_fmt_count(n1, sizeof n1, num(cn, "open")),
        cli_fmt_count(n2, sizeof n2, num(cn, "accepted")), cli_fmt_count(n3, sizeof n3, num(cn, "refused")));
}

static void render_replication(struct kv_buf *b, const json_t *st)
{
    char n1[32], n2[32], n3[32];
    const json_t *rp = json_object_get(st, "replication"), *list = json_object_get(rp, "replicas"), *r;
    const char *role = str(rp, "role");
    size_t i;
    if (strcmp(role, "main") == 0) {
        kv_buf_printf(b, "replication   main, %s, %zu replica%s\n", str(rp, "mode"), json_array_size(list),
                      json_array_size(list) == 1 ? "" : "s");
        json_array_foreach(list, i, r)
        {
            kv_buf_printf(b, "  %s  %s  %s  acked seq %s  lag %s records, %s, %.3f s", str(r, "url"),
                          str(r, "state"),
                          json_is_true(json_object_get(r, "connected")) ? "connected" : "DISCONNECTED",
                          cli_fmt_count(n1, sizeof n1, num(r, "acked_seq")),
                          cli_fmt_count(n2, sizeof n2, num(r, "lag_records")),
                          cli_fmt_bytes(n3, sizeof n3, num(r, "lag_bytes")), real(r, "lag_seconds"));
            const char *err = json_string_value(json_object_get(r, "last_error"));
            if (err != NULL)
                kv_buf_printf(b, "  last error: %s", err);
            kv_buf_append_byte(b, '\n');
        }
    } else if (strcmp(role, "replica") == 0) {
        const char *main_url = str(rp, "main_url");
        double contact = real(rp, "since_contact_seconds");
        char ago[48] = "never heard from the main";
        if (contact >= 0)
            snprintf(ago, sizeof ago, "last contact %.3f s ago", contact);
        kv_buf_printf(b, "replication   replica of %s%s\n",
                      main_url[0] ? main_url : "a main not heard from yet",
                      json_is_true(json_object_get(rp, "resyncing")) ? " (RESYNCING)" : "");
        kv_buf_printf(b, "  applied seq %s  main seq %s  lag %s records  stale %.3f s  %s\n",
                      cli_fmt_count(n1, sizeof n1, num(rp, "applied_seq")),
                      cli_fmt_count(n2, sizeof n2, num(rp, "main_seq")),
                      cli_fmt_count(n3, sizeof n3, num(rp, "lag_records")), real(rp, "staleness_seconds"),
                      ago);
    } else {
        kv_buf_printf(b, "replication   %s\n", role);
    }
}

static void render(const struct cli *c, const json_t *st, const struct rates *rt, struct kv_buf *b)
{
    char n1[32], n2[32], n3[32];
    uint64_t vb = num(st, "value_bytes");
    kv_buf_printf(b, "triekv %s at %s  (version %s, up %s)\n", str(st, "role"), c->url, str(st, "version"),
                  cli_fmt_duration(n1, sizeof n1, (double)num(st, "uptime_seconds")));
    kv_buf_printf(b, "keys          %s  value bytes %s (%s B)\n",
                  cli_fmt_count(n1, sizeof n1, num(st, "keys")), cli_fmt_bytes(n2, sizeof n2, vb),
                  cli_fmt_count(n3, sizeof n3, vb));
    render_ops(b, st, rt);
    render_engine(b, st);
    render_replication(b, st);
}

/* Fetches /stats. CLI_OK with *root (json_decref it), or an exit status with r->msg set. */
static int fetch(struct cli *c, struct cli_resp *r, json_t **root)
{
    *root = NULL;
    int rc = cli_connect(c);
    if (rc != CLI_OK) {
        snprintf(r->msg, sizeof r->msg, "%s", c->url_error);
        return rc;
    }
    rc = cli_http_call(c->http, "GET", "/stats", NULL, 0, NULL, 0, r);
    if (rc != CLI_OK)
        return rc;
    *root = json_loadb((const char *)r->body.ptr, r->body.len, 0, NULL);
    if (json_is_object(*root))
        return CLI_OK;
    json_decref(*root);
    *root = NULL;
    snprintf(r->msg, sizeof r->msg, "unexpected answer from %s: /stats is not a JSON object", c->url);
    return CLI_SERVER;
}

/* ---- stats ---------------------------------------------------------------------------------------- */

static int no_positional(struct cli *c, int argc, char **argv)
{
    struct cli_args a = {.argc = argc, .argv = argv};
    const char *val[2];
    int id = cli_args_next(c, &a, NULL, val);
    if (id == CLI_ARG_POS)
        return cli_usage(c, "%s takes no arguments, not '%s'", c->cmd->name, val[0]);
    return id == CLI_ARG_HELP ? CLI_HELP : id == CLI_ARG_ERR ? CLI_USAGE : CLI_OK;
}

static int stats_run(struct cli *c, int argc, char **argv)
{
    struct cli_resp r = {0};
    json_t *st = NULL;
    int rc = no_positional(c, argc, argv);
    if (rc != CLI_OK)
        return rc;
    rc = fetch(c, &r, &st);
    if (rc != CLI_OK) {
        cli_fail(rc, "%s", r.msg);
    } else if (c->json) {
        cli_out(r.body.ptr, r.body.len);
    } else {
        double up = (double)num(st, "uptime_seconds");
        struct sample s = sample_of(st);
        struct rates rt = {up >= 1.0,
                           up >= 1.0 ? "average since start" : "none yet: the server just started",
                           (double)s.gets / up,
                           (double)s.sets / up,
                           (double)s.deletes / up,
                           (double)s.requests / up};
        struct kv_buf b = {0};
        render(c, st, &rt, &b);
        cli_out(b.ptr, b.len);
        kv_buf_free(&b);
    }
    if (rc == CLI_OK)
        rc = cli_out_finish();
    json_decref(st);
    cli_resp_free(&r);
    return rc;
}

const struct cli_command cli_cmd_stats = {
    "stats",
    "the server's figures for people: keys, bytes, operations, cache, replication",
    "usage: triekv-cli stats [--json]\n"
    "\n"
    "Shows the server's /stats for people: keys and value bytes, get/set/delete counts with their\n"
    "average rates since the server started, point-read hits, commits, the page cache, storage,\n"
    "connections and replication (a main: each replica's state and lag in records, bytes and\n"
    "seconds; a replica: applied and main seq and staleness). Sizes are in KiB/MiB/GiB (1024).\n"
    "--json prints the server's JSON unchanged.\n"
    "\n"
    "examples:\n"
    "  triekv-cli stats\n"
    "  triekv-cli --server http://10.0.0.5:3030 stats --json | jq .keys\n",
    stats_run,
};

/* ---- watch-stats --------------------------------------------------------------------------------- */

static volatile sig_atomic_t interrupted;

static void on_sigint(int sig)
{
    (void)sig;
    interrupted = 1;
}

/* Sleeps until the monotonic deadline or Ctrl-C. */
static void sleep_until(uint64_t deadline_ns)
{
    struct timespec ts = {(time_t)(deadline_ns / 1000000000u), (long)(deadline_ns % 1000000000u)};
    while (!interrupted && clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
        ;
}

enum { OPT_INTERVAL, OPT_COUNT };

static int parse_watch(struct cli *c, int argc, char **argv, double *interval, uint64_t *count)
{
    static const struct cli_opt opts[] = {
        {"--interval", 1, OPT_INTERVAL}, {"--count", 1, OPT_COUNT}, {NULL, 0, 0}};
    struct cli_args a = {.argc = argc, .argv = argv};
    const char *val[2];
    int id;
    while ((id = cli_args_next(c, &a, opts, val)) != CLI_ARG_END) {
        if (id == CLI_ARG_HELP || id == CLI_ARG_ERR)
            return id == CLI_ARG_HELP ? CLI_HELP : CLI_USAGE;
        if (id == CLI_ARG_POS)
            return cli_usage(c, "watch-stats takes options only, not '%s'", val[0]);
        int rc = id == OPT_INTERVAL ? cli_parse_seconds(c, "--interval", val[0], WATCH_INTERVAL_S_MIN,
                                                        WATCH_INTERVAL_S_MAX, interval)
                                    : cli_parse_u64(c, "--count", val[0], 1, WATCH_COUNT_MAX, count);
        if (rc != CLI_OK)
            return rc;
    }
    return CLI_OK;
}

/* One refresh: fetch, then draw into b. A failure at the first refresh (or with --json) is printed
 * and returned without drawing: the caller stops. A later one is drawn and retried. */
static int refresh(struct cli *c, uint64_t n, double interval, struct sample *prev, struct kv_buf *b)
{
    struct cli_resp r = {0};
    json_t *st = NULL;
    int rc = fetch(c, &r, &st);
    if (rc != CLI_OK && (n == 1 || c->json)) {
        cli_fail(rc, "%s", r.msg);
    } else if (c->json) {
        kv_buf_append(b, r.body.ptr, r.body.len);
    } else {
        char when[32];
        time_t now = time(NULL);
        struct tm tm;
        strftime(when, sizeof when, "%H:%M:%S", localtime_r(&now, &tm));
        kv_buf_printf(b, "triekv-cli watch-stats  %s  refresh %llu, every %g s, %s  (Ctrl-C to quit)\n",
                      c->url, (unsigned long long)n, interval, when);
    }
    if (rc == CLI_OK && !c->json) {
        struct sample s = sample_of(st);
        double dt = (double)(s.at_ns - prev->at_ns) / 1e9;
        char window[48];
        snprintf(window, sizeof window, "over the last %.1f s", dt);
        struct rates rt = {prev->at_ns != 0,
                           prev->at_ns != 0 ? window : "measured from the next refresh",
                           per_s(s.gets, prev->gets, dt),
                           per_s(s.sets, prev->sets, dt),
                           per_s(s.deletes, prev->deletes, dt),
                           per_s(s.requests, prev->requests, dt)};
        render(c, st, &rt, b);
        *prev = s;
    } else if (rc != CLI_OK && n > 1 && !c->json) {
        kv_buf_printf(b, "%s: %s (retrying)\n", CLI_NAME, r.msg);
    }
    json_decref(st);
    cli_resp_free(&r);
    return rc;
}

static int watch_run(struct cli *c, int argc, char **argv)
{
    double interval = 1.0;
    uint64_t count = 0; /* 0: until Ctrl-C */
    int rc = parse_watch(c, argc, argv, &interval, &count);
    if (rc != CLI_OK)
        return rc;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_sigint;
    sa.sa_flags = SA_RESETHAND; /* a second Ctrl-C ends it the hard way */
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGINT, &sa, NULL) != 0)
        return cli_fail(CLI_SERVER, "cannot catch SIGINT: %s", strerror(errno));
    bool tty = isatty(STDOUT_FILENO) && !c->json;
    struct sample prev = {0};
    struct kv_buf b = {0};
    uint64_t start = kv_now_ns();
    for (uint64_t n = 1; !interrupted && (count == 0 || n <= count) && n <= WATCH_COUNT_MAX; n++) {
        if (n > 1)
            sleep_until(start + (uint64_t)((double)(n - 1) * interval * 1e9));
        if (interrupted)
            break;
        b.len = 0;
        if (tty)
            kv_buf_append_str(&b, "\033[H\033[2J"); /* home, clear screen */
        else if (n > 1 && !c->json)
            kv_buf_append_byte(&b, '\n'); /* a blank line between blocks */
        rc = refresh(c, n, interval, &prev, &b);
        if (rc != CLI_OK && (n == 1 || c->json))
            break; /* down from the start, or a script reading JSON: said so, stop */
        cli_out(b.ptr, b.len);
        cli_out_flush();
    }
    kv_buf_free(&b);
    int out_rc = cli_out_finish();
    return rc != CLI_OK ? rc : out_rc;
}

const struct cli_command cli_cmd_watch_stats = {
    "watch-stats",
    "the stats view refreshed in place (like top) until Ctrl-C",
    "usage: triekv-cli watch-stats [--interval SECONDS] [--count N] [--json]\n"
    "\n"
    "Shows the stats view and refreshes it every interval, with the rates of gets, sets, deletes\n"
    "and requests measured between two refreshes, until Ctrl-C (exit status 0). On a terminal the\n"
    "screen is redrawn in place; otherwise each refresh is printed as one more block. If the server\n"
    "cannot be reached at the first refresh the command stops (status 3); later it says so and\n"
    "keeps retrying, and exits with 3 if the last refresh failed.\n"
    "--json prints the server's /stats JSON once per refresh, one line each, and stops at the\n"
    "first failure.\n"
    "\n"
    "options:\n"
    "  --interval SECONDS  time between refreshes, fractions allowed, at least 0.1 (default 1)\n"
    "  --count N           stop after N refreshes\n"
    "\n"
    "examples:\n"
    "  triekv-cli watch-stats\n"
    "  triekv-cli watch-stats --interval 0.5 --count 20 > stats.log\n",
    watch_run,
};
