/* common/kv_assert.h - assertions that stay on in release builds, and allocation that never
 * returns NULL.
 *
 * KV_ASSERT is for cheap invariants on storage and replication paths: a failure is a bug in our
 * code, so it prints the expression and where, then aborts. Bad input, a full disk or a dead peer
 * is an error code, never an assertion. KV_DEBUG_ASSERT is for O(n) checks, compiled in only when
 * KV_DEBUG is defined (the asan and test builds). */
#ifndef KV_ASSERT_H
#define KV_ASSERT_H

#include <stddef.h>

_Noreturn void kv_assert_fail(const char *expr, const char *file, int line, const char *func);

#define KV_ASSERT(x) ((x) ? (void)0 : kv_assert_fail(#x, __FILE__, __LINE__, __func__))
#ifdef KV_DEBUG
#define KV_DEBUG_ASSERT(x) KV_ASSERT(x)
#else
#define KV_DEBUG_ASSERT(x) ((void)0)
#endif

/* Allocation wrappers: they abort with a message on out-of-memory instead of returning NULL, as
 * h2o's do. Every budget in triekv is enforced before allocating, so running out here means the
 * machine is too small for the configured budgets. */
void *kv_malloc(size_t n);
void *kv_calloc(size_t n, size_t size);
void *kv_realloc(void *p, size_t n);
char *kv_strdup(const char *s);
void *kv_memdup(const void *p, size_t n);

#endif
