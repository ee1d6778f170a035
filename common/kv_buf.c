/* common/kv_buf.c - growable byte buffer; see kv_buf.h. */
#include "common/kv_buf.h"
#include "common/kv_assert.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void kv_buf_free(struct kv_buf *b)
{
    free(b->ptr);
    b->ptr = NULL;
    b->len = 0;
    b->cap = 0;
}

void kv_buf_reserve(struct kv_buf *b, size_t extra)
{
    KV_ASSERT(extra <= SIZE_MAX - b->len);
    size_t need = b->len + extra;
    if (need <= b->cap)
        return;
    size_t cap = b->cap ? b->cap : 64;
    while (cap < need)
        cap = cap > SIZE_MAX / 2 ? need : cap * 2;
    b->ptr = kv_realloc(b->ptr, cap);
    b->cap = cap;
}

void kv_buf_append(struct kv_buf *b, const void *p, size_t n)
{
    if (n == 0)
        return;
    kv_buf_reserve(b, n);
    memcpy(b->ptr + b->len, p, n);
    b->len += n;
}

void kv_buf_append_str(struct kv_buf *b, const char *s)
{
    kv_buf_append(b, s, strlen(s));
}

void kv_buf_append_byte(struct kv_buf *b, uint8_t c)
{
    kv_buf_reserve(b, 1);
    b->ptr[b->len++] = c;
}

void kv_buf_printf(struct kv_buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    KV_ASSERT(n >= 0);
    kv_buf_reserve(b, (size_t)n + 1);
    va_start(ap, fmt);
    vsnprintf((char *)b->ptr + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

void kv_buf_put_u16(struct kv_buf *b, uint16_t v)
{
    kv_buf_reserve(b, 2);
    kv_put_u16(b->ptr + b->len, v);
    b->len += 2;
}

void kv_buf_put_u32(struct kv_buf *b, uint32_t v)
{
    kv_buf_reserve(b, 4);
    kv_put_u32(b->ptr + b->len, v);
    b->len += 4;
}

void kv_buf_put_u64(struct kv_buf *b, uint64_t v)
{
    kv_buf_reserve(b, 8);
    kv_put_u64(b->ptr + b->len, v);
    b->len += 8;
}

uint8_t *kv_buf_detach(struct kv_buf *b, size_t *len)
{
    uint8_t *p = b->ptr;
    *len = b->len;
    b->ptr = NULL;
    b->len = 0;
    b->cap = 0;
    return p;
}
