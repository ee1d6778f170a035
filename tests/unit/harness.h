/* tests/unit/harness.h - a tiny test harness (Redis's testhelp.h in spirit).
 *
 * A test is a void function; CHECK* record failures and let the test go on, so one run reports
 * every broken expectation. main() calls RUN() for each test and returns harness_finish(), which
 * prints the closing line "N passed, N failed" the suite runner (tests/run.py) reads.
 * TEST_SEED in the environment fixes the seed of harness_rand() for reproducing a failure;
 * TEST_ONLY=name runs a single test. */
#ifndef HARNESS_H
#define HARNESS_H

#include <stdbool.h>
#include <stdint.h>
#include <stddef.h>

#include "common/kv_err.h"

void harness_check(bool ok, const char *expr, const char *file, int line);
void harness_check_rc(int rc, int want, const char *expr, const char *file, int line);
void harness_run(const char *name, void (*fn)(void));
int harness_finish(void);
bool harness_failed(void); /* the current test has failed a check */

#define CHECK(x)           harness_check((x), #x, __FILE__, __LINE__)
#define CHECK_RC(rc, want) harness_check_rc((rc), (want), #rc, __FILE__, __LINE__)
#define CHECK_OK(rc)       CHECK_RC(rc, KV_OK)
#define RUN(fn)            harness_run(#fn, fn)

/* A fresh empty directory under $TMPDIR (or /tmp), removed by harness_rmdir. Returns a static
 * buffer per call slot (0..3). */
const char *harness_tmpdir(int slot);
void harness_rmdir(const char *path);

/* Deterministic pseudo-random numbers (xorshift64*), seeded from TEST_SEED or the clock. */
uint64_t harness_rand(void);
uint64_t harness_seed(void);
static inline uint64_t harness_below(uint64_t n)
{
    return n ? harness_rand() % n : 0;
}

/* Resident set size of this process in bytes (from /proc/self/statm). */
uint64_t harness_rss_bytes(void);

#endif
