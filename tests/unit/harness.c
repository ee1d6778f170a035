/* tests/unit/harness.c - see harness.h. */
#include "tests/unit/harness.h"

#include <errno.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static int passed, failed;
static int current_failures;
static uint64_t rng_state, rng_seed;

bool harness_failed(void)
{
    return current_failures > 0;
}

void harness_check(bool ok, const char *expr, const char *file, int line)
{
    if (ok)
        return;
    if (current_failures++ < 10)
        printf("    check failed: %s (%s:%d)\n", expr, file, line);
}

void harness_check_rc(int rc, int want, const char *expr, const char *file, int line)
{
    if (rc == want)
        return;
    if (current_failures++ < 10)
        printf("    check failed: %s returned %d (%s), want %d (%s) (%s:%d)\n", expr, rc, kv_strerror(rc),
               want, kv_strerror(want), file, line);
}

void harness_run(const char *name, void (*fn)(void))
{
    const char *only = getenv("TEST_ONLY"); /* run just this test (comma-free name) */
    if (only && only[0] && strcmp(only, name) != 0)
        return;
    struct timespec a, b;
    current_failures = 0;
    clock_gettime(CLOCK_MONOTONIC, &a);
    fn();
    clock_gettime(CLOCK_MONOTONIC, &b);
    double ms = (double)(b.tv_sec - a.tv_sec) * 1e3 + (double)(b.tv_nsec - a.tv_nsec) / 1e6;
    if (current_failures == 0) {
        passed++;
        printf("ok   %s (%.0f ms)\n", name, ms);
    } else {
        failed++;
        printf("FAIL %s (%d failed checks, seed %llu)\n", name, current_failures,
               (unsigned long long)rng_seed);
    }
    fflush(stdout);
}

int harness_finish(void)
{
    printf("%d passed, %d failed\n", passed, failed);
    fflush(stdout);
    return failed ? 1 : 0;
}

const char *harness_tmpdir(int slot)
{
    static char paths[4][256];
    const char *base = getenv("TMPDIR");
    if (base == NULL || base[0] == 0)
        base = "/tmp";
    snprintf(paths[slot & 3], sizeof paths[0], "%s/triekv-test-XXXXXX", base);
    if (mkdtemp(paths[slot & 3]) == NULL) {
        perror("mkdtemp");
        abort();
    }
    return paths[slot & 3];
}

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

void harness_rmdir(const char *path)
{
    nftw(path, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

static void rng_init(void)
{
    if (rng_state)
        return;
    const char *s = getenv("TEST_SEED");
    rng_seed = s ? strtoull(s, NULL, 10) : (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32);
    if (rng_seed == 0)
        rng_seed = 1;
    rng_state = rng_seed;
}

uint64_t harness_seed(void)
{
    rng_init();
    return rng_seed;
}

uint64_t harness_rand(void)
{
    rng_init();
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 0x2545F4914F6CDD1Dull;
}

uint64_t harness_rss_bytes(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    unsigned long long size = 0, rss = 0;
    if (f) {
        if (fscanf(f, "%llu %llu", &size, &rss) != 2)
            rss = 0;
        fclose(f);
    }
    return rss * (uint64_t)sysconf(_SC_PAGESIZE);
}
