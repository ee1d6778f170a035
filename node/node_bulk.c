/* node/node_bulk.c - multi-key requests: POST /bulk (atomic batch of puts), POST /bulk/get,
 * POST /bulk/delete (atomic), and GET /bulk/range (ordered pages with a cursor).
 *
 * JSON bodies are parsed by jansson with duplicate keys refused; any invalid member rejects the
 * whole request (400) before anything is written. Keys and values are JSON strings, or base64
 * strings with ?encoding=base64; without it, output that is not valid UTF-8 is a 400 that says to
 * use base64, never mangled text.
 *
 * A range cursor is self-contained (kv_cursor in common/kv_codec.h), so ?cursor= alone continues a
 * range; start/end/prefix given with it must be the cursor's own. */
#include "node/node_int.h"
#include "common/kv_codec.h"
#include "common/kv_crc.h"
#include "common/kv_log.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- JSON input --------------------------------------------------------------------------------- */

/* Parses the request body as JSON; -1 after replying. */
static int body_json(struct node_req *r, json_t **out)
{
    h2o_iovec_t body = r->h.req->entity;
    if (body.base == NULL || body.len == 0) {
        kv_http_error(&r->h, 400, "bad_request", "the request needs a JSON body");
        return -1;
    }
    if (body.len > (size_t)r->node->cfg.max_bulk_bytes) {
        kv_http_error(&r->h, 413, "payload_too_large", "the body has %zu bytes; the limit is %lld", body.len,
                      (long long)r->node->cfg.max_bulk_bytes);
        return -1;
    }
    json_error_t je;
    *out = json_loadb(body.base, body.len, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &je);
    if (*out == NULL) {
        if (strstr(je.text, "NUL byte in object key"))
            kv_http_error(&r->h, 400, "bad_json",
                          "a key holds a NUL byte, which JSON object keys cannot carry "
                          "here: send keys and values base64-encoded with ?encoding=base64");
        else
            kv_http_error(&r->h, 400, "bad_json", "invalid JSON at line %d column %d: %s", je.line, je.column,
                          je.text);
        return -1;
    }
    return 0;
}

/* A key or value from a JSON string, decoded from base64 when asked. what names it in errors. */
static int json_bytes(struct node_req *r, const char *s, size_t len, bool b64, struct kv_buf *out,
                      const char *what, size_t index)
{
    out->len = 0;
    if (!b64) {
        kv_buf_append(out, s, len);
        return 0;
    }
    if (kv_base64_decode(s, len, out) != KV_OK) {
        kv_http_error(&r->h, 400, "bad_base64", "%s %zu is not valid base64", what, index);
        return -1;
    }
    return 0;
}

static int check_key(struct node_req *r, const struct kv_buf *k, size_t index)
{
    if (k->len == 0) {
        kv_http_error(&r->h, 400, "key_empty", "key %zu is empty", index);
        return -1;
    }
    if (k->len > (size_t)r->node->cfg.max_key_size) {
        kv_http_error(&r->h, 400, "key_too_long", "key %zu has %zu bytes; the limit is %lld", index, k->len,
                      (long long)r->node->cfg.max_key_size);
        return -1;
    }
    return 0;
}

/* The "keys" array of {"keys": [...]}, each decoded; -1 after replying. */
static int keys_body(struct node_req *r, json_t **root, json_t **arr)
{
    if (body_json(r, root) != 0)
        return -1;
    *arr = json_is_object(*root) ? json_object_get(*root, "keys") : NULL;
    if (*arr == NULL || !json_is_array(*arr) || json_object_size(*root) != 1) {
        json_decref(*root);
        kv_http_error(&r->h, 400, "bad_request", "the body must be {\"keys\": [\"key\", ...]}");
        return -1;
    }
    if (json_array_size(*arr) > (size_t)r->node->cfg.max_bulk_items) {
        json_decref(*root);
        kv_http_error(&r->h, 413, "too_many_items", "%zu keys; the limit is %lld", json_array_size(*arr),
                      (long long)r->node->cfg.max_bulk_items);
        return -1;
    }
    return 0;
}

/* The start of POST /bulk and /bulk/delete: the query (only ?encoding=) and the role. Non-zero:
 * answered already. */
static int bulk_write_start(struct node_req *r, bool *b64)
{
    struct kv_http_query q;
    if (kv_http_query_parse(&r->h, &q) != 0 || kv_http_query_encoding(&r->h, &q, b64) != 0 ||
        kv_http_query_check_unused(&r->h, &q) != 0)
        return -1;
    if (r->node->cfg.is_replica) {
        node_reply_replica_write(r);
        return -1;
    }
    return 0;
}

/* ---- POST /bulk ------------------------------------------------------------------------------- */

static void bulk_done(struct node_req *r, int rc, const struct triekv_write_result *res, const void *arg)
{
    size_t count = *(const size_t *)arg;
    if (rc != KV_OK) {
        node_reply_rc(r, rc, "bulk write");
        return;
    }
    char extra[48];
    snprintf(extra, sizeof extra, "\"count\":%zu", count);
    node_reply_seq(r, res->seq, extra);
}

void node_handle_bulk(struct kv_http_req *h)
{
    struct node_req *r = (struct node_req *)h;
    bool b64;
    if (bulk_write_start(r, &b64) != 0)
        return;
    json_t *root;
    if (body_json(r, &root) != 0)
        return;
    if (!json_is_object(root)) {
        json_decref(root);
        kv_http_error(&r->h, 400, "bad_request", "the body must be a JSON object {\"key\": \"value\", ...}");
        return;
    }
    size_t n = json_object_size(root);
    if (n > (size_t)r->node->cfg.max_bulk_items) {
        json_decref(root);
        kv_http_error(&r->h, 413, "too_many_items", "%zu items; the limit is %lld", n,
                      (long long)r->node->cfg.max_bulk_items);
        return;
    }
    struct triekv_batch *b = triekv_batch_create();
    struct kv_buf k = {0}, v = {0};
    const char *key;
    size_t klen, i = 0;
    json_t *val;
    int bad = 0;
    json_object_keylen_foreach(root, key, klen, val)
    {
        if (!json_is_string(val)) {
            kv_http_error(&r->h, 400, "bad_request", "value %zu must be a string", i);
            bad = 1;
            break;
        }
        if (json_bytes(r, key, klen, b64, &k, "key", i) != 0 || check_key(r, &k, i) != 0 ||
            json_bytes(r, json_string_value(val), json_string_length(val), b64, &v, "value", i) != 0) {
            bad = 1;
            break;
        }
        if (v.len > (size_t)r->node->cfg.max_value_size) {
            kv_http_error(&r->h, 413, "value_too_large", "value %zu has %zu bytes; the limit is %lld", i,
                          v.len, (long long)r->node->cfg.max_value_size);
            bad = 1;
            break;
        }
        int rc =
            triekv_batch_put(b, kv_slice_make(k.ptr, k.len), kv_slice_make(v.ptr, v.len), TRIEKV_IF_ANY, 0);
        if (rc != KV_OK) {
            node_reply_rc(r, rc, "bulk write");
            bad = 1;
            break;
        }
        i++;
    }
    kv_buf_free(&k);
    kv_buf_free(&v);
    json_decref(root);
    if (bad) {
        triekv_batch_destroy(b);
        return;
    }
    node_write(r, b, bulk_done, &n, sizeof n);
}

/* ---- POST /bulk/delete ---------------------------------------------------------------------------- */

static void bulk_delete_done(struct node_req *r, int rc, const struct triekv_write_result *res,
                             const void *arg)
{
    size_t count = *(const size_t *)arg;
    if (rc != KV_OK) {
        node_reply_rc(r, rc, "bulk delete");
        return;
    }
    char extra[64];
    snprintf(extra, sizeof extra, "\"deleted\":%u,\"count\":%zu", res->deleted, count);
    node_reply_seq(r, res->seq, extra);
}

void node_handle_bulk_delete(struct kv_http_req *h)
{
    struct node_req *r = (struct node_req *)h;
    bool b64;
    if (bulk_write_start(r, &b64) != 0)
        return;
    json_t *root, *arr;
    if (keys_body(r, &root, &arr) != 0)
        return;
    struct triekv_batch *b = triekv_batch_create();
    struct kv_buf k = {0};
    size_t i, n = json_array_size(arr);
    json_t *item;
    int bad = 0;
    json_array_foreach(arr, i, item)
    {
        if (!json_is_string(item)) {
            kv_http_error(&r->h, 400, "bad_request", "key %zu must be a string", i);
            bad = 1;
            break;
        }
        if (json_bytes(r, json_string_value(item), json_string_length(item), b64, &k, "key", i) != 0 ||
            check_key(r, &k, i) != 0) {
            bad = 1;
            break;
        }
        triekv_batch_del(b, kv_slice_make(k.ptr, k.len), TRIEKV_IF_ANY, 0);
    }
    kv_buf_free(&k);
    json_decref(root);
    if (bad) {
        triekv_batch_destroy(b);
        return;
    }
    node_write(r, b, bulk_delete_done, &n, sizeof n);
}

/* ---- JSON output ---------------------------------------------------------------------------------- */

/* Appends bytes as a JSON string: base64 when asked, else as text if valid UTF-8 (-1 if not). */
static int out_bytes(struct kv_buf *out, struct kv_slice s, bool b64)
{
    if (b64) {
        kv_buf_append_byte(out, '"');
        kv_base64_encode(s.ptr, s.len, out);
        kv_buf_append_byte(out, '"');
        return 0;
    }
    if (!kv_utf8_valid(s.ptr, s.len))
        return -1;
    kv_json_append_string(out, s.ptr, s.len);
    return 0;
}

/* ---- POST /bulk/get ------------------------------------------------------------------------------ */

void node_handle_bulk_get(struct kv_http_req *h)
{
    struct node_req *r = (struct node_req *)h;
    struct kv_http_query q;
    bool b64;
    if (kv_http_query_parse(&r->h, &q) != 0 || kv_http_query_encoding(&r->h, &q, &b64) != 0 ||
        kv_http_query_check_unused(&r->h, &q) != 0)
        return;
    json_t *root, *arr;
    if (keys_body(r, &root, &arr) != 0)
        return;
    struct kv_buf out = {0}, missing = {0}, k = {0};
    kv_buf_append_str(&out, "{\"items\":[");
    kv_buf_append_str(&missing, "\"missing\":[");
    size_t i, found = 0, nmissing = 0;
    uint64_t bytes = 0;
    json_t *item;
    int bad = 0;
    json_array_foreach(arr, i, item)
    {
        if (!json_is_string(item)) {
            kv_http_error(&r->h, 400, "bad_request", "key %zu must be a string", i);
            bad = 1;
            break;
        }
        if (json_bytes(r, json_string_value(item), json_string_length(item), b64, &k, "key", i) != 0 ||
            check_key(r, &k, i) != 0) {
            bad = 1;
            break;
        }
        struct triekv_value *v = NULL;
        int rc = triekv_get(r->node->db, kv_slice_make(k.ptr, k.len), &v);
        struct kv_slice ks = kv_slice_make(k.ptr, k.len);
        if (rc == KV_E_NOT_FOUND) {
            if (nmissing++)
                kv_buf_append_byte(&missing, ',');
            if (out_bytes(&missing, ks, b64) != 0)
                bad = 2;
        } else if (rc != KV_OK) {
            node_reply_rc(r, rc, "read");
            bad = 1;
        } else {
            bytes += triekv_value_len(v);
            if (bytes > (uint64_t)r->node->cfg.max_bulk_bytes) {
                triekv_value_release(v);
                kv_http_error(&r->h, 413, "response_too_large",
                              "the values would pass %lld bytes; ask for fewer keys at a time",
                              (long long)r->node->cfg.max_bulk_bytes);
                bad = 1;
                break;
            }
            kv_buf_append_str(&out, found++ ? ",{\"key\":" : "{\"key\":");
            if (out_bytes(&out, ks, b64) != 0)
                bad = 2;
            kv_buf_append_str(&out, ",\"value\":");
            if (out_bytes(&out, kv_slice_make(triekv_value_data(v), triekv_value_len(v)), b64) != 0)
                bad = 2;
            kv_buf_append_byte(&out, '}');
            triekv_value_release(v);
        }
        if (bad)
            break;
    }
    if (bad == 2)
        kv_http_error(&r->h, 400, "not_utf8", "a key or value is not valid UTF-8; ask with ?encoding=base64");
    if (!bad) {
        kv_buf_append_str(&out, "],");
        kv_buf_append(&out, missing.ptr, missing.len);
        kv_buf_append_str(&out, "]}");
        kv_http_reply_json(&r->h, 200, &out);
    }
    kv_buf_free(&out);
    kv_buf_free(&missing);
    kv_buf_free(&k);
    json_decref(root);
}

/* ---- GET /bulk/range ------------------------------------------------------------------------------ */

struct range_out {
    struct kv_buf json;
    bool b64, keys_only;
    bool bad_utf8;
    size_t count;
    struct kv_buf last; /* the last key visited */
};

static int range_visit(void *arg, struct kv_slice key, struct kv_slice value, uint64_t seq)
{
    struct range_out *o = arg;
    (void)seq;
    kv_buf_append_str(&o->json, o->count++ ? ",{\"key\":" : "{\"key\":");
    if (out_bytes(&o->json, key, o->b64) != 0) {
        o->bad_utf8 = true;
        return KV_E_INVALID;
    }
    if (!o->keys_only) {
        kv_buf_append_str(&o->json, ",\"value\":");
        if (out_bytes(&o->json, value, o->b64) != 0) {
            o->bad_utf8 = true;
            return KV_E_INVALID;
        }
    }
    kv_buf_append_byte(&o->json, '}');
    o->last.len = 0;
    kv_buf_append(&o->last, key.ptr, key.len);
    return 0;
}

void node_handle_range(struct kv_http_req *h)
{
    struct node_req *r = (struct node_req *)h;
    struct kv_http_query q;
    bool b64;
    struct kv_http_range hr;
    struct kv_buf raw = {0};
    if (kv_http_query_parse(&r->h, &q) != 0 || kv_http_query_encoding(&r->h, &q, &b64) != 0 ||
        kv_http_range_parse(&r->h, &q, (size_t)r->node->cfg.max_key_size,
                            (size_t)r->node->cfg.max_range_response, &raw, &hr) != 0 ||
        kv_http_query_check_unused(&r->h, &q) != 0) {
        kv_buf_free(&raw);
        return;
    }
    struct triekv_range rg = {
        .has_prefix = hr.range.has_prefix,
        .has_end = hr.range.has_end,
        .end = hr.range.end,
        .after = hr.range.after,
        .has_after = hr.has_after,
        .limit = hr.limit,
        .bytes_limit = (size_t)r->node->cfg.max_range_bytes,
        .keys_only = hr.keys_only,
    };
    if (rg.has_prefix)
        rg.prefix = hr.range.start;
    else
        rg.start = hr.range.start;
    struct range_out o = {.b64 = b64, .keys_only = hr.keys_only};
    kv_buf_append_str(&o.json, "{\"items\":[");
    struct triekv_scan_result res;
    int rc = triekv_scan(r->node->db, &rg, range_visit, &o, &res);
    if (rc == KV_E_INVALID && o.bad_utf8) {
        kv_http_error(&r->h, 400, "not_utf8",
                      "a key or value in this range is not valid UTF-8; ask with "
                      "?encoding=base64");
    } else if (rc == KV_E_INVALID) {
        kv_http_error(&r->h, 400, "bad_range", "start_key must not be greater than end_key");
    } else if (rc != KV_OK) {
        node_reply_rc(r, rc, "range");
    } else {
        kv_buf_append_str(&o.json, "],\"next\":");
        if (res.more && o.count > 0) {
            struct kv_cursor next = hr.range;
            next.after = kv_slice_make(o.last.ptr, o.last.len);
            kv_buf_append_byte(&o.json, '"');
            kv_cursor_encode(&next, &o.json);
            kv_buf_append_byte(&o.json, '"');
        } else {
            kv_buf_append_str(&o.json, "null");
        }
        kv_buf_append_byte(&o.json, '}');
        kv_http_reply_json(&r->h, 200, &o.json);
    }
    kv_buf_free(&o.json);
    kv_buf_free(&o.last);
    kv_buf_free(&raw);
}
