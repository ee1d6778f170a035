/* common/kv_log.h - one-line log records on stderr.
 *
 * A record is "<UTC time> <level> <component>: <message>" written with a single write(2), so lines
 * from concurrent threads never interleave. Messages follow git's style: lowercase, no final
 * period, what failed first ("cannot open wal segment 12: No space left on device"). Errors are
 * logged once, where they are handled, never at every layer they pass through. */
#ifndef KV_LOG_H
#define KV_LOG_H

enum kv_log_level { KV_LOG_ERROR = 0, KV_LOG_WARN = 1, KV_LOG_INFO = 2, KV_LOG_DEBUG = 3 };

/* Records above this level are dropped. Default KV_LOG_INFO. Safe to change at any time. */
void kv_log_set_level(enum kv_log_level level);
enum kv_log_level kv_log_get_level(void);

/* Parses "error", "warn", "info" or "debug". Returns 0, or KV_E_INVALID for anything else. */
int kv_log_parse_level(const char *name, enum kv_log_level *out);

void kv_log(enum kv_log_level level, const char *component, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define kv_log_error(comp, ...) kv_log(KV_LOG_ERROR, comp, __VA_ARGS__)
#define kv_log_warn(comp, ...)  kv_log(KV_LOG_WARN, comp, __VA_ARGS__)
#define kv_log_info(comp, ...)  kv_log(KV_LOG_INFO, comp, __VA_ARGS__)
#define kv_log_debug(comp, ...) kv_log(KV_LOG_DEBUG, comp, __VA_ARGS__)

#endif
