/* common/kv_buf.h - a growable byte buffer (git's strbuf shape).
 *
 * A zeroed struct kv_buf is an empty buffer; kv_buf_free() releases it and leaves it empty and
 * reusable. Growth aborts on out-of-memory (kv_assert.h), so appends cannot fail. The data is not
 * NUL-terminated unless the caller appends one. */
#ifndef KV_BUF_H
#define KV_BUF_H

#include <stddef.h>
#include <stdint.h>

struct kv_buf {
    uint8_t *ptr; /* owned; NULL while cap == 0 */
    size_t len;
    size_t cap;
};

void kv_buf_free(struct kv_buf *b);
void kv_buf_reserve(struct kv_buf *b, size_t extra); /* room for extra more bytes */
void kv_buf_append(struct kv_buf *b, const void *p, size_t n);
void kv_buf_append_str(struct kv_buf *b, const char *s);
void kv_buf_append_byte(struct kv_buf *b, uint8_t c);
void kv_buf_printf(struct kv_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void kv_buf_put_u16(struct kv_buf *b, uint16_t v); /* little-endian */
void kv_buf_put_u32(struct kv_buf *b, uint32_t v);
void kv_buf_put_u64(struct kv_buf *b, uint64_t v);
/* Hands the bytes to the caller (free() them) and leaves b empty. */
uint8_t *kv_buf_detach(struct kv_buf *b, size_t *len);

/* Little-endian field access for on-disk and on-wire formats: formats are always encoded field by
 * field through these, never by writing a struct. */
static inline void kv_put_u16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}
static inline void kv_put_u32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}
static inline void kv_put_u64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}
static inline uint16_t kv_get_u16(const uint8_t *p)
{
    return (uint16_t)(p[0] | (p[1] << 8));
}
static inline uint32_t kv_get_u32(const uint8_t *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}
static inline uint64_t kv_get_u64(const uint8_t *p)
{
    return (uint64_t)kv_get_u32(p) | ((uint64_t)kv_get_u32(p + 4) << 32);
}

#endif
