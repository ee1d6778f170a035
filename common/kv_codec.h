/* common/kv_codec.h - the byte encodings triekv speaks at its edges: partition file names, URL
 * percent-encoding, base64, UTF-8 validation, JSON string output and range cursors.
 *
 * The name and base64 decoders are strict: input that our encoder would never produce is rejected
 * with KV_E_INVALID rather than guessed at, so those encodings are bijections. Percent-decoding is
 * the exception, as URLs require: any byte may be escaped or not, in either hex case; only a
 * malformed escape is rejected. */
#ifndef KV_CODEC_H
#define KV_CODEC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/kv_buf.h"
#include "common/kv_err.h"

/* Partition file names. The root prefix (empty) is "_root". Other prefixes keep the bytes a-z and
 * 0-9 and write every other byte as '_' plus two lowercase hex digits, so a name is safe for any
 * byte, two prefixes differing only in letter case get different names on case-insensitive file
 * systems, and "_root" can never be produced by a non-empty prefix ('r' is not a hex digit).
 * The escaped form of a prefix of n bytes is at most 3n bytes long. */
#define KV_NAME_ROOT "_root"
void kv_name_escape(const uint8_t *prefix, size_t len, struct kv_buf *out);
/* Inverse of kv_name_escape; appends the prefix bytes to out. KV_E_INVALID for a name that
 * kv_name_escape would not produce (uppercase hex, an escaped byte that needs none, ...). */
int kv_name_unescape(const char *name, size_t len, struct kv_buf *out);

/* Percent-decoding. With plus_is_space, '+' decodes to ' ' (query strings, as HTML forms and
 * Python's urlencode send them); without it '+' is itself (paths). A '%' not followed by two hex
 * digits is KV_E_INVALID. Appends to out. */
int kv_percent_decode(const char *s, size_t len, bool plus_is_space, struct kv_buf *out);
/* Encodes every byte outside the URL unreserved set (A-Z a-z 0-9 - . _ ~) as %XX. */
void kv_percent_encode(const uint8_t *p, size_t len, struct kv_buf *out);

/* Standard base64 (RFC 4648 section 4) with '=' padding. The decoder takes only canonical input:
 * correct padding, no whitespace, zero unused bits. */
void kv_base64_encode(const uint8_t *p, size_t len, struct kv_buf *out);
int kv_base64_decode(const char *s, size_t len, struct kv_buf *out);
size_t kv_base64_encoded_len(size_t len);

/* True when p[0..len) is well-formed UTF-8 (no overlong forms, surrogates or code points past
 * U+10FFFF). */
bool kv_utf8_valid(const uint8_t *p, size_t len);

/* Appends a JSON string literal ("..." with escapes) of p, which must be valid UTF-8. */
void kv_json_append_string(struct kv_buf *out, const uint8_t *p, size_t len);

/* A range cursor is self-contained: the range it pages through and the last key it returned, so
 * a node and the proxy can continue it alone, and each can continue the other's. Text form: "1"
 * followed by the lowercase hex of
 *   flags(1: bit0 has_end, bit1 has_prefix) | len(2) start-or-prefix | len(2) end | len(2) after
 *   | crc32c(4) of everything before it. */
struct kv_cursor {
    bool has_end, has_prefix;
    struct kv_slice start; /* the prefix when has_prefix */
    struct kv_slice end;   /* when has_end */
    struct kv_slice after; /* continue after this key */
};
#define KV_CURSOR_KEY_MAX 65535 /* each field has a 16-bit length */
/* Appends the text form of c (whose fields are at most KV_CURSOR_KEY_MAX bytes) to out. */
void kv_cursor_encode(const struct kv_cursor *c, struct kv_buf *out);
/* Parses text into c, whose slices point into raw (the caller frees raw). KV_E_INVALID when the
 * text is malformed or its checksum is wrong. */
int kv_cursor_decode(struct kv_slice text, struct kv_buf *raw, struct kv_cursor *c);

#endif
