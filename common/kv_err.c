/* common/kv_err.c - messages and names for the error space of kv_err.h. */
#include "common/kv_err.h"

#include <string.h>

static const char *const kv_err_text[] = {
    "key not found",
    "key is empty",
    "key too long",
    "value too large",
    "batch too large",
    "precondition failed",
    "invalid argument",
    "corrupt data",
    "store is read-only after an i/o error",
    "data directory is locked by another process",
    "unknown on-disk format version",
    "commit log no longer holds that sequence number",
    "timed out",
    "store is closing",
    "operation not allowed",
    "peer unavailable",
    "busy: the operation would have to wait",
};

static const char *const kv_err_name[] = {
    "not_found",
    "key_empty",
    "key_too_long",
    "value_too_large",
    "batch_too_large",
    "precondition_failed",
    "invalid",
    "corrupt",
    "read_only",
    "locked",
    "version",
    "log_truncated",
    "timeout",
    "closed",
    "forbidden",
    "unavailable",
    "busy",
};

_Static_assert(sizeof kv_err_text / sizeof kv_err_text[0] == KV_E_END - KV_E_NOT_FOUND,
               "one message per code");
_Static_assert(sizeof kv_err_name / sizeof kv_err_name[0] == KV_E_END - KV_E_NOT_FOUND, "one name per code");

const char *kv_strerror(int err)
{
    if (err > 0)
        return strerror(err);
    if (err >= KV_E_NOT_FOUND && err < KV_E_END)
        return kv_err_text[err - KV_E_NOT_FOUND];
    return err == 0 ? "ok" : "unknown error";
}

const char *kv_errname(int err)
{
    if (err > 0)
        return "io_error";
    if (err >= KV_E_NOT_FOUND && err < KV_E_END)
        return kv_err_name[err - KV_E_NOT_FOUND];
    return err == 0 ? "ok" : "unknown";
}

int kv_slice_cmp(struct kv_slice a, struct kv_slice b)
{
    size_t n = a.len < b.len ? a.len : b.len;
    int c = n ? memcmp(a.ptr, b.ptr, n) : 0;
    if (c != 0)
        return c;
    return (a.len > b.len) - (a.len < b.len);
}
