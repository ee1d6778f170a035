/* common/kv_log.c - formatting and writing log records; see kv_log.h. */
#include "common/kv_log.h"
#include "common/kv_err.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define KV_LOG_LINE_MAX 2048 /* longer messages are cut, marked with "..." */

static _Atomic int kv_log_level = KV_LOG_INFO;

static const char *const kv_log_names[] = {"error", "warn", "info", "debug"};

void kv_log_set_level(enum kv_log_level level)
{
    atomic_store(&kv_log_level, (int)level);
}

enum kv_log_level kv_log_get_level(void)
{
    return (enum kv_log_level)atomic_load(&kv_log_level);
}

int kv_log_parse_level(const char *name, enum kv_log_level *out)
{
    for (int i = 0; i < 4; i++) {
        if (strcmp(name, kv_log_names[i]) == 0) {
            *out = (enum kv_log_level)i;
            return KV_OK;
        }
    }
    return KV_E_INVALID;
}

void kv_log(enum kv_log_level level, const char *component, const char *fmt, ...)
{
    if ((int)level > atomic_load_explicit(&kv_log_level, memory_order_relaxed))
        return;
    char line[KV_LOG_LINE_MAX];
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    size_t n = strftime(line, sizeof line, "%Y-%m-%dT%H:%M:%S", &tm);
    n += (size_t)snprintf(line + n, sizeof line - n, ".%03ldZ %-5s %s: ", ts.tv_nsec / 1000000,
                          kv_log_names[level], component);
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(line + n, sizeof line - n, fmt, ap);
    va_end(ap);
    if (m < 0)
        m = 0;
    if ((size_t)m >= sizeof line - n - 1) { /* cut: leave room for "...\n" */
        n = sizeof line - 5;
        memcpy(line + n, "...", 3);
        n += 3;
    } else {
        n += (size_t)m;
    }
    line[n++] = '\n';
    /* one write per record keeps lines whole; a failed log write has nowhere to be reported */
    ssize_t w = write(STDERR_FILENO, line, n);
    (void)w;
}
