/* common/kv_time.c - monotonic condition variables and deadlines; see kv_time.h. */
#include "common/kv_time.h"
#include "common/kv_assert.h"

void kv_cond_init(pthread_cond_t *cv)
{
    pthread_condattr_t attr;
    KV_ASSERT(pthread_condattr_init(&attr) == 0);
    KV_ASSERT(pthread_condattr_setclock(&attr, CLOCK_MONOTONIC) == 0);
    KV_ASSERT(pthread_cond_init(cv, &attr) == 0);
    pthread_condattr_destroy(&attr);
}

struct timespec kv_deadline_after_ms(uint64_t timeout_ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_sec += (time_t)(timeout_ms / 1000);
    ts.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    return ts;
}
