/* common/kv_assert.c - assertion failure and checked allocation. */
#include "common/kv_assert.h"

#include <execinfo.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

_Noreturn void kv_assert_fail(const char *expr, const char *file, int line, const char *func)
{
    fprintf(stderr, "triekv: assertion failed: %s (%s:%d in %s)\n", expr, file, line, func);
    void *frames[32];
    int n = backtrace(frames, 32);
    backtrace_symbols_fd(frames, n, 2);
    fflush(stderr);
    abort();
}

static _Noreturn void kv_oom(size_t n)
{
    fprintf(stderr, "triekv: out of memory allocating %zu bytes\n", n);
    fflush(stderr);
    abort();
}

void *kv_malloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (p == NULL)
        kv_oom(n);
    return p;
}

void *kv_calloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (p == NULL)
        kv_oom(n * size);
    return p;
}

void *kv_realloc(void *p, size_t n)
{
    void *q = realloc(p, n ? n : 1);
    if (q == NULL)
        kv_oom(n);
    return q;
}

char *kv_strdup(const char *s)
{
    return kv_memdup(s, strlen(s) + 1);
}

void *kv_memdup(const void *p, size_t n)
{
    void *q = kv_malloc(n);
    if (n)
        memcpy(q, p, n);
    return q;
}
