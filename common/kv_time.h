/* common/kv_time.h - clocks. Durations use CLOCK_MONOTONIC; wall time only appears in logs. */
#ifndef KV_TIME_H
#define KV_TIME_H

#include <stdint.h>
#include <time.h>

static inline uint64_t kv_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static inline uint64_t kv_now_ms(void)
{
    return kv_now_ns() / 1000000u;
}

/* Cheap, about 4 ms coarse: for LRU touches and rate limits, not for measuring. */
static inline uint64_t kv_coarse_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* Condition variables in triekv wait on CLOCK_MONOTONIC, so a wall-clock jump never stretches or
 * cuts a timeout. kv_cond_init sets that clock; kv_deadline_after_ms gives the absolute deadline
 * pthread_cond_timedwait wants for such a variable. */
#include <pthread.h>
void kv_cond_init(pthread_cond_t *cv);
struct timespec kv_deadline_after_ms(uint64_t timeout_ms);

#endif
