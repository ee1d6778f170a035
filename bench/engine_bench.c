/* bench/engine_bench.c - the storage engine's benchmark, no HTTP.
 *
 *   engine_bench --dir DIR [--num N] [--value-size B] [--seconds S] [--io auto|posix]
 *                [--page-size BYTES] [--tag SUFFIX] TEST...
 *
 * Keys are 16 bytes (8 random-looking bytes, then the big-endian index, so every key is unique),
 * values --value-size bytes. Tests, run in the order given against the same directory:
 *   fill_default fill_batch fill_interval   N puts in random order on a fresh store, one thread
 *   fill_strict                             puts in strict mode, one thread (time-bounded)
 *   fill_strict32                           the same with 32 writer threads
 *   get_cached                              N random gets, every partition loaded beforehand
 *   get_smallcache                          random gets with a cache a tenth of the data
 *   scan_full                               one scan over every key
 *   scan_pages                              random range pages of 100 items
 * Each prints one tab-separated line: name, ops/s, us/op, p50 us, p99 us, ops done. Time-bounded
 * tests stop after --seconds (default 10) of measured work. */
#include "trie/triekv.h"
#include "common/kv_buf.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define KEY_LEN 16

struct bench {
    const char *dir;
    uint64_t num;
    size_t value_size;
    double seconds;
    enum triekv_io_backend io;
    uint64_t page_size; /* 0: the engine's default */
    uint8_t *value;
};

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static uint64_t mix64(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ull;
    return x ^ (x >> 33);
}

static void make_key(uint64_t i, uint8_t *k)
{
    kv_put_u64(k, __builtin_bswap64(mix64(i)));
    kv_put_u64(k + 8, __builtin_bswap64(i));
}

/* The i-th index of a fixed pseudo-random permutation of [0, n). */
static uint64_t permute(uint64_t i, uint64_t n, uint64_t salt)
{
    static const uint64_t primes[] = {999983, 1000003, 7919, 104729};
    uint64_t p = primes[salt % 4];
    while (n % p == 0)
        p += 2;
    return (i * p + salt * 12345) % n;
}

struct lat {
    uint64_t *ns;
    uint64_t n, cap;
};

static void lat_add(struct lat *l, uint64_t ns)
{
    if (l->n == l->cap) {
        l->cap = l->cap ? l->cap * 2 : 1 << 16;
        l->ns = realloc(l->ns, l->cap * sizeof *l->ns);
    }
    l->ns[l->n++] = ns;
}

static int u64_cmp(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

static const char *name_tag = "";

static void report(const char *name, uint64_t ops, uint64_t elapsed_ns, struct lat *l)
{
    double p50 = 0, p99 = 0;
    if (l && l->n) {
        qsort(l->ns, l->n, sizeof *l->ns, u64_cmp);
        p50 = (double)l->ns[l->n / 2] / 1e3;
        p99 = (double)l->ns[l->n * 99 / 100] / 1e3;
    }
    double secs = (double)elapsed_ns / 1e9;
    printf("%s%s\t%.0f\t%.3f\t%.2f\t%.2f\t%llu\n", name, name_tag, (double)ops / secs,
           secs * 1e6 / (double)ops, p50, p99, (unsigned long long)ops);
    fflush(stdout);
    if (l)
        free(l->ns);
}

static struct triekv *open_store(const struct bench *b, enum triekv_fsync mode, uint64_t cache_bytes,
                                 bool fresh)
{
    if (fresh) {
        char cmd[1200];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", b->dir);
        if (system(cmd) != 0)
            exit(1);
    }
    struct triekv_options o;
    triekv_options_init(&o);
    o.fsync = mode;
    o.io_backend = b->io;
    if (b->page_size)
        o.max_page_size = b->page_size;
    if (cache_bytes)
        o.cache_bytes = cache_bytes;
    struct triekv *db;
    int rc = triekv_open(b->dir, &o, &db);
    if (rc != KV_OK) {
        fprintf(stderr, "engine_bench: cannot open %s: %s\n", b->dir, kv_strerror(rc));
        exit(1);
    }
    return db;
}

static void put_one(struct triekv *db, const struct bench *b, uint64_t idx)
{
    uint8_t k[KEY_LEN];
    make_key(idx, k);
    memcpy(b->value, &idx, sizeof idx); /* values differ */
    int rc = triekv_put(db, kv_slice_make(k, KEY_LEN), kv_slice_make(b->value, b->value_size), NULL);
    if (rc != KV_OK) {
        fprintf(stderr, "engine_bench: put: %s\n", kv_strerror(rc));
        exit(1);
    }
}

/* N puts in random order; time-bounded when bounded is set. */
static void fill(const struct bench *b, const char *name, enum triekv_fsync mode, bool bounded)
{
    struct triekv *db = open_store(b, mode, 0, true);
    struct lat l = {0};
    uint64_t t0 = now_ns(), ops = 0;
    uint64_t limit = bounded ? (uint64_t)(b->seconds * 1e9) : UINT64_MAX;
    for (uint64_t i = 0; i < b->num; i++) {
        uint64_t s = now_ns();
        put_one(db, b, permute(i, b->num, 1));
        uint64_t e = now_ns();
        lat_add(&l, e - s);
        ops++;
        if (e - t0 > limit)
            break;
    }
    report(name, ops, now_ns() - t0, &l);
    triekv_close(db);
}

struct strict_thread {
    const struct bench *b;
    struct triekv *db;
    int id, threads;
    uint64_t deadline, ops;
    struct lat l;
    uint8_t value[4096];
};

static void *strict_main(void *arg)
{
    struct strict_thread *t = arg;
    for (uint64_t i = (uint64_t)t->id;; i += (uint64_t)t->threads) {
        uint8_t k[KEY_LEN];
        make_key(permute(i % t->b->num, t->b->num, 2), k);
        uint64_t s = now_ns();
        int rc =
            triekv_put(t->db, kv_slice_make(k, KEY_LEN), kv_slice_make(t->value, t->b->value_size), NULL);
        uint64_t e = now_ns();
        if (rc != KV_OK)
            exit(1);
        lat_add(&t->l, e - s);
        t->ops++;
        if (e > t->deadline)
            break;
    }
    return NULL;
}

static void fill_strict_threads(const struct bench *b, const char *name, int nthreads)
{
    struct triekv *db = open_store(b, TRIEKV_FSYNC_STRICT, 0, true);
    struct strict_thread *t = calloc((size_t)nthreads, sizeof *t);
    pthread_t *th = calloc((size_t)nthreads, sizeof *th);
    uint64_t t0 = now_ns();
    for (int i = 0; i < nthreads; i++) {
        t[i] = (struct strict_thread){.b = b, .db = db, .id = i, .threads = nthreads};
        t[i].deadline = t0 + (uint64_t)(b->seconds * 1e9);
        pthread_create(&th[i], NULL, strict_main, &t[i]);
    }
    struct lat all = {0};
    uint64_t ops = 0;
    for (int i = 0; i < nthreads; i++) {
        pthread_join(th[i], NULL);
        ops += t[i].ops;
        for (uint64_t j = 0; j < t[i].l.n; j++)
            lat_add(&all, t[i].l.ns[j]);
        free(t[i].l.ns);
    }
    report(name, ops, now_ns() - t0, &all);
    triekv_close(db);
    free(t);
    free(th);
}

static int count_visit(void *arg, struct kv_slice key, struct kv_slice value, uint64_t seq)
{
    (void)key;
    (void)seq;
    *(uint64_t *)arg += value.len;
    return 0;
}

static void gets(const struct bench *b, const char *name, uint64_t cache_bytes, bool bounded)
{
    struct triekv *db = open_store(b, TRIEKV_FSYNC_DEFAULT, cache_bytes, false);
    uint64_t sink = 0;
    if (!bounded) /* load every partition first: "all cached" */
        triekv_scan(db, &(struct triekv_range){0}, count_visit, &sink, NULL);
    struct lat l = {0};
    uint64_t t0 = now_ns(), ops = 0, misses = 0;
    uint64_t limit = bounded ? (uint64_t)(b->seconds * 1e9) : UINT64_MAX;
    for (uint64_t i = 0; i < b->num; i++) {
        uint8_t k[KEY_LEN];
        make_key(permute(i, b->num, 3), k);
        struct triekv_value *v;
        uint64_t s = now_ns();
        int rc = triekv_get(db, kv_slice_make(k, KEY_LEN), &v);
        uint64_t e = now_ns();
        if (rc == KV_OK) {
            sink += triekv_value_len(v);
            triekv_value_release(v);
        } else {
            misses++;
        }
        lat_add(&l, e - s);
        ops++;
        if (e - t0 > limit)
            break;
    }
    uint64_t el = now_ns() - t0;
    if (misses)
        fprintf(stderr, "engine_bench: %s: %llu keys not found\n", name, (unsigned long long)misses);
    report(name, ops, el, &l);
    triekv_close(db);
}

static void scans(const struct bench *b)
{
    struct triekv *db = open_store(b, TRIEKV_FSYNC_DEFAULT, 0, false);
    uint64_t sink = 0;
    triekv_scan(db, &(struct triekv_range){0}, count_visit, &sink, NULL); /* warm */
    struct triekv_scan_result res;
    uint64_t t0 = now_ns();
    triekv_scan(db, &(struct triekv_range){0}, count_visit, &sink, &res);
    report("scan_full", res.count, now_ns() - t0, NULL);
    struct lat l = {0};
    uint64_t ops = 0;
    t0 = now_ns();
    while (now_ns() - t0 < (uint64_t)(b->seconds * 1e9 / 2)) {
        uint8_t k[KEY_LEN];
        make_key(permute(ops % b->num, b->num, 4), k);
        struct triekv_range r = {.start = kv_slice_make(k, KEY_LEN), .limit = 100};
        uint64_t s = now_ns();
        triekv_scan(db, &r, count_visit, &sink, NULL);
        lat_add(&l, now_ns() - s);
        ops++;
    }
    report("scan_pages100", ops, now_ns() - t0, &l);
    triekv_close(db);
}

int main(int argc, char **argv)
{
    struct bench b = {.num = 1000000, .value_size = 100, .seconds = 10};
    int i = 1;
    for (; i < argc && strncmp(argv[i], "--", 2) == 0; i += 2) {
        if (i + 1 >= argc)
            goto usage;
        if (strcmp(argv[i], "--dir") == 0)
            b.dir = argv[i + 1];
        else if (strcmp(argv[i], "--num") == 0)
            b.num = strtoull(argv[i + 1], NULL, 10);
        else if (strcmp(argv[i], "--value-size") == 0)
            b.value_size = strtoull(argv[i + 1], NULL, 10);
        else if (strcmp(argv[i], "--seconds") == 0)
            b.seconds = strtod(argv[i + 1], NULL);
        else if (strcmp(argv[i], "--page-size") == 0)
            b.page_size = strtoull(argv[i + 1], NULL, 10);
        else if (strcmp(argv[i], "--tag") == 0)
            name_tag = argv[i + 1];
        else if (strcmp(argv[i], "--io") == 0)
            b.io = strcmp(argv[i + 1], "posix") == 0 ? TRIEKV_IO_POSIX : TRIEKV_IO_AUTO;
        else
            goto usage;
    }
    if (b.dir == NULL || i == argc || b.num == 0 || b.value_size < 8 || b.value_size > 4096)
        goto usage;
    b.value = malloc(b.value_size);
    for (size_t j = 0; j < b.value_size; j++)
        b.value[j] = (uint8_t)mix64(j);
    uint64_t data = b.num * (KEY_LEN + b.value_size);
    for (; i < argc; i++) {
        const char *t = argv[i];
        if (strcmp(t, "fill_default") == 0)
            fill(&b, t, TRIEKV_FSYNC_DEFAULT, false);
        else if (strcmp(t, "fill_batch") == 0)
            fill(&b, t, TRIEKV_FSYNC_BATCH, false);
        else if (strcmp(t, "fill_interval") == 0)
            fill(&b, t, TRIEKV_FSYNC_INTERVAL, false);
        else if (strcmp(t, "fill_strict") == 0)
            fill(&b, t, TRIEKV_FSYNC_STRICT, true);
        else if (strcmp(t, "fill_strict32") == 0)
            fill_strict_threads(&b, t, 32);
        else if (strcmp(t, "get_cached") == 0)
            gets(&b, t, 2 * data + (256u << 20), false);
        else if (strcmp(t, "get_smallcache") == 0)
            gets(&b, t, data / 10, true);
        else if (strcmp(t, "scans") == 0)
            scans(&b);
        else
            goto usage;
    }
    free(b.value);
    return 0;
usage:
    fprintf(stderr,
            "usage: engine_bench --dir DIR [--num N] [--value-size B] [--seconds S] [--io auto|posix] "
            "[--page-size BYTES] [--tag SUFFIX] TEST...\n"
            "tests: fill_default fill_batch fill_interval fill_strict fill_strict32 get_cached "
            "get_smallcache scans\n");
    return 2;
}
