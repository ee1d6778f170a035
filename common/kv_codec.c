/* common/kv_codec.c - strict encoders and decoders; see kv_codec.h. */
#include "common/kv_codec.h"
#include "common/kv_assert.h"
#include "common/kv_crc.h"
#include "common/kv_err.h"

#include <string.h>

static const char kv_hex_lower[] = "0123456789abcdef";
static const char kv_hex_upper[] = "0123456789ABCDEF";

static int hex_value(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

static bool name_plain(uint8_t c)
{
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
}

void kv_name_escape(const uint8_t *prefix, size_t len, struct kv_buf *out)
{
    if (len == 0) {
        kv_buf_append_str(out, KV_NAME_ROOT);
        return;
    }
    kv_buf_reserve(out, 3 * len);
    for (size_t i = 0; i < len; i++) {
        uint8_t c = prefix[i];
        if (name_plain(c)) {
            out->ptr[out->len++] = c;
        } else {
            out->ptr[out->len++] = '_';
            out->ptr[out->len++] = (uint8_t)kv_hex_lower[c >> 4];
            out->ptr[out->len++] = (uint8_t)kv_hex_lower[c & 15];
        }
    }
}

static bool hex_lower_digit(char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
}

int kv_name_unescape(const char *name, size_t len, struct kv_buf *out)
{
    if (len == strlen(KV_NAME_ROOT) && memcmp(name, KV_NAME_ROOT, len) == 0)
        return KV_OK;
    if (len == 0)
        return KV_E_INVALID;
    size_t start = out->len;
    for (size_t i = 0; i < len; i++) {
        uint8_t c = (uint8_t)name[i];
        if (name_plain(c)) {
            kv_buf_append_byte(out, c);
            continue;
        }
        if (c != '_' || i + 2 >= len || !hex_lower_digit(name[i + 1]) || !hex_lower_digit(name[i + 2]))
            goto fail;
        uint8_t b = (uint8_t)(hex_value(name[i + 1]) << 4 | hex_value(name[i + 2]));
        if (name_plain(b)) /* canonical form writes it plain */
            goto fail;
        kv_buf_append_byte(out, b);
        i += 2;
    }
    return KV_OK;
fail:
    out->len = start;
    return KV_E_INVALID;
}

int kv_percent_decode(const char *s, size_t len, bool plus_is_space, struct kv_buf *out)
{
    size_t start = out->len;
    kv_buf_reserve(out, len);
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        if (c == '%') {
            int hi = i + 2 < len ? hex_value(s[i + 1]) : -1;
            int lo = i + 2 < len ? hex_value(s[i + 2]) : -1;
            if (hi < 0 || lo < 0) {
                out->len = start;
                return KV_E_INVALID;
            }
            out->ptr[out->len++] = (uint8_t)(hi << 4 | lo);
            i += 2;
        } else if (c == '+' && plus_is_space) {
            out->ptr[out->len++] = ' ';
        } else {
            out->ptr[out->len++] = (uint8_t)c;
        }
    }
    return KV_OK;
}

static bool url_unreserved(uint8_t c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '.' || c == '_' || c == '~';
}

void kv_percent_encode(const uint8_t *p, size_t len, struct kv_buf *out)
{
    kv_buf_reserve(out, 3 * len);
    for (size_t i = 0; i < len; i++) {
        if (url_unreserved(p[i])) {
            out->ptr[out->len++] = p[i];
        } else {
            out->ptr[out->len++] = '%';
            out->ptr[out->len++] = (uint8_t)kv_hex_upper[p[i] >> 4];
            out->ptr[out->len++] = (uint8_t)kv_hex_upper[p[i] & 15];
        }
    }
}

static const char kv_b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

size_t kv_base64_encoded_len(size_t len)
{
    return (len + 2) / 3 * 4;
}

void kv_base64_encode(const uint8_t *p, size_t len, struct kv_buf *out)
{
    kv_buf_reserve(out, kv_base64_encoded_len(len));
    uint8_t *o = out->ptr + out->len;
    size_t i = 0;
    for (; i + 3 <= len; i += 3) {
        uint32_t v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8 | p[i + 2];
        *o++ = (uint8_t)kv_b64[v >> 18];
        *o++ = (uint8_t)kv_b64[(v >> 12) & 63];
        *o++ = (uint8_t)kv_b64[(v >> 6) & 63];
        *o++ = (uint8_t)kv_b64[v & 63];
    }
    if (len - i == 1) {
        uint32_t v = (uint32_t)p[i] << 16;
        *o++ = (uint8_t)kv_b64[v >> 18];
        *o++ = (uint8_t)kv_b64[(v >> 12) & 63];
        *o++ = '=';
        *o++ = '=';
    } else if (len - i == 2) {
        uint32_t v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8;
        *o++ = (uint8_t)kv_b64[v >> 18];
        *o++ = (uint8_t)kv_b64[(v >> 12) & 63];
        *o++ = (uint8_t)kv_b64[(v >> 6) & 63];
        *o++ = '=';
    }
    out->len = (size_t)(o - out->ptr);
}

static int b64_value(char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+')
        return 62;
    if (c == '/')
        return 63;
    return -1;
}

int kv_base64_decode(const char *s, size_t len, struct kv_buf *out)
{
    if (len % 4 != 0)
        return KV_E_INVALID;
    size_t start = out->len;
    kv_buf_reserve(out, len / 4 * 3);
    for (size_t i = 0; i < len; i += 4) {
        bool last = i + 4 == len;
        int v[4];
        int pad = 0;
        for (int j = 0; j < 4; j++) {
            char c = s[i + j];
            if (c == '=' && last && j >= 2) {
                v[j] = 0;
                pad++;
                continue;
            }
            v[j] = b64_value(c);
            if (v[j] < 0 || pad > 0) /* a data character after '=' */
                goto fail;
        }
        uint32_t w = (uint32_t)v[0] << 18 | (uint32_t)v[1] << 12 | (uint32_t)v[2] << 6 | (uint32_t)v[3];
        if ((pad == 1 && (w & 0xff) != 0) || (pad == 2 && (w & 0xffff) != 0))
            goto fail; /* non-zero unused bits: not canonical */
        out->ptr[out->len++] = (uint8_t)(w >> 16);
        if (pad < 2)
            out->ptr[out->len++] = (uint8_t)(w >> 8);
        if (pad < 1)
            out->ptr[out->len++] = (uint8_t)w;
    }
    return KV_OK;
fail:
    out->len = start;
    return KV_E_INVALID;
}

bool kv_utf8_valid(const uint8_t *p, size_t len)
{
    size_t i = 0;
    while (i < len) {
        uint8_t c = p[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t n;
        uint32_t cp, min;
        if ((c & 0xe0) == 0xc0) {
            n = 2, cp = c & 0x1f, min = 0x80;
        } else if ((c & 0xf0) == 0xe0) {
            n = 3, cp = c & 0x0f, min = 0x800;
        } else if ((c & 0xf8) == 0xf0) {
            n = 4, cp = c & 0x07, min = 0x10000;
        } else {
            return false;
        }
        if (len - i < n)
            return false;
        for (size_t j = 1; j < n; j++) {
            if ((p[i + j] & 0xc0) != 0x80)
                return false;
            cp = cp << 6 | (p[i + j] & 0x3f);
        }
        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
            return false;
        i += n;
    }
    return true;
}

void kv_json_append_string(struct kv_buf *out, const uint8_t *p, size_t len)
{
    kv_buf_reserve(out, len + 2);
    out->ptr[out->len++] = '"';
    size_t run = 0; /* bytes copied in one memcpy when nothing needs escaping */
    for (size_t i = 0; i < len; i++) {
        uint8_t c = p[i];
        if (c >= 0x20 && c != '"' && c != '\\')
            continue;
        kv_buf_append(out, p + run, i - run);
        run = i + 1;
        switch (c) {
        case '"':
            kv_buf_append(out, "\\\"", 2);
            break;
        case '\\':
            kv_buf_append(out, "\\\\", 2);
            break;
        case '\n':
            kv_buf_append(out, "\\n", 2);
            break;
        case '\r':
            kv_buf_append(out, "\\r", 2);
            break;
        case '\t':
            kv_buf_append(out, "\\t", 2);
            break;
        default:
            kv_buf_printf(out, "\\u%04x", c);
        }
    }
    kv_buf_append(out, p + run, len - run);
    kv_buf_append_byte(out, '"');
}

/* ---- range cursors --------------------------------------------------------------------------------- */

void kv_cursor_encode(const struct kv_cursor *c, struct kv_buf *out)
{
    KV_ASSERT(c->start.len <= KV_CURSOR_KEY_MAX && c->end.len <= KV_CURSOR_KEY_MAX);
    KV_ASSERT(c->after.len <= KV_CURSOR_KEY_MAX);
    struct kv_buf raw = {0};
    kv_buf_append_byte(&raw, (uint8_t)((c->has_end ? 1 : 0) | (c->has_prefix ? 2 : 0)));
    const struct kv_slice *fields[3] = {&c->start, &c->end, &c->after};
    for (int f = 0; f < 3; f++) {
        size_t n = f == 1 && !c->has_end ? 0 : fields[f]->len;
        kv_buf_put_u16(&raw, (uint16_t)n);
        kv_buf_append(&raw, fields[f]->ptr, n);
    }
    kv_buf_put_u32(&raw, kv_crc32c(0, raw.ptr, raw.len));
    static const char hex[] = "0123456789abcdef";
    kv_buf_append_byte(out, '1');
    for (size_t i = 0; i < raw.len; i++) {
        kv_buf_append_byte(out, (uint8_t)hex[raw.ptr[i] >> 4]);
        kv_buf_append_byte(out, (uint8_t)hex[raw.ptr[i] & 15]);
    }
    kv_buf_free(&raw);
}

static int hexval(uint8_t c)
{
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

int kv_cursor_decode(struct kv_slice text, struct kv_buf *raw, struct kv_cursor *c)
{
    if (text.len < 1 + 2 * 11 || text.ptr[0] != '1' || (text.len - 1) % 2 != 0)
        return KV_E_INVALID;
    for (size_t i = 1; i < text.len; i += 2) {
        int hi = hexval(text.ptr[i]), lo = hexval(text.ptr[i + 1]);
        if (hi < 0 || lo < 0)
            return KV_E_INVALID;
        kv_buf_append_byte(raw, (uint8_t)(hi << 4 | lo));
    }
    const uint8_t *p = raw->ptr, *end = raw->ptr + raw->len - 4;
    if (kv_get_u32(end) != kv_crc32c(0, raw->ptr, raw->len - 4) || p[0] > 3)
        return KV_E_INVALID;
    c->has_end = p[0] & 1;
    c->has_prefix = (p[0] & 2) != 0;
    p++;
    struct kv_slice *fields[3] = {&c->start, &c->end, &c->after};
    for (int f = 0; f < 3; f++) {
        if (end - p < 2)
            return KV_E_INVALID;
        size_t n = kv_get_u16(p);
        p += 2;
        if ((size_t)(end - p) < n)
            return KV_E_INVALID;
        *fields[f] = kv_slice_make(p, n);
        p += n;
    }
    return p == end ? KV_OK : KV_E_INVALID;
}
