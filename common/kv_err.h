/* common/kv_err.h - the one error space of triekv, and the byte slice every API passes.
 *
 * Every function of ours returns an int: 0 on success, a positive errno for a failed system
 * call, or a negative KV_E_* for our own conditions (LMDB's split). kv_strerror() renders
 * either kind. Nothing returns -1 and leaves errno to be read later. */
#ifndef KV_ERR_H
#define KV_ERR_H

#include <stddef.h>
#include <stdint.h>

enum kv_err {
    KV_OK = 0,
    KV_E_NOT_FOUND = -1000, /* expected outcome; never logged */
    KV_E_KEY_EMPTY,         /* keys are 1..max_key_size bytes */
    KV_E_KEY_TOO_LONG,
    KV_E_VALUE_TOO_LARGE,
    KV_E_BATCH_TOO_LARGE, /* too many operations or bytes in one atomic batch */
    KV_E_PRECONDITION,    /* a conditional write found another version */
    KV_E_INVALID,         /* a malformed argument (a programmer or client mistake) */
    KV_E_CORRUPT,         /* a bad magic or checksum in the middle of a file */
    KV_E_READONLY,        /* writes stopped after an i/o failure; reopen to recover */
    KV_E_LOCKED,          /* the data directory is open in another process */
    KV_E_VERSION,         /* an on-disk format this build does not know */
    KV_E_LOG_TRUNCATED,   /* the commit log no longer holds that sequence number */
    KV_E_TIMEOUT,
    KV_E_CLOSED,      /* the store is shutting down */
    KV_E_FORBIDDEN,   /* the operation is not allowed in this role or state */
    KV_E_UNAVAILABLE, /* a peer could not be reached or did not answer in time */
    KV_E_BUSY,        /* the call would have to wait; nothing was done */
    KV_E_END          /* keep last */
};

/* Renders an error of either kind: a static string, never NULL. */
const char *kv_strerror(int err);

/* Stable short name of an error for machine-readable replies ("not_found", "io_error", ...). */
const char *kv_errname(int err);

/* A borrowed run of bytes, never NUL-terminated. Who owns ptr is said where a slice is passed. */
struct kv_slice {
    const uint8_t *ptr;
    size_t len;
};

static inline struct kv_slice kv_slice_make(const void *ptr, size_t len)
{
    struct kv_slice s = {(const uint8_t *)ptr, len};
    return s;
}

/* Byte-wise comparison, shorter-is-smaller on a common prefix (memcmp order). */
int kv_slice_cmp(struct kv_slice a, struct kv_slice b);

static inline int kv_slice_eq(struct kv_slice a, struct kv_slice b)
{
    return kv_slice_cmp(a, b) == 0;
}

#endif
