/* proxy/proxy_bulk.c - multi-key requests across shards: POST /bulk, POST /bulk/delete and
 * POST /bulk/get.
 *
 * The body is read and checked whole first (JSON shape, strings, base64, empty or long keys,
 * duplicates for /bulk, item count), so a batch is refused before any shard sees a part of it.
 * Then each key is given to its shard:
 *   - a batch inside one shard goes to that shard's main as the client sent it (atomic);
 *   - a batch across shards is refused with 409 naming the shards, since no shard can make another
 *     one's part atomic with its own; with ?atomic=false each shard's part is sent to its main as
 *     its own atomic batch, at the same time, and the answer reports every part's outcome (200
 *     when all were applied, 207 otherwise);
 *   - /bulk/get inside one shard is forwarded to it; across shards, each part goes to a replica of
 *     its shard (the mains when the client asks for read-your-writes) and the answers are merged
 *     back into the request's order. */
#include "proxy/proxy_int.h"
#include "common/kv_assert.h"
#include "common/kv_codec.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PART_ANSWER_MAX (64u << 10) /* a write part's answer is a line of JSON */

/* One key of the request: its JSON text as sent, and its shard. */
struct item {
    const char *key; /* the JSON string, as the client wrote it (base64 or text) */
    size_t key_len;
    json_t *value; /* /bulk: the value member */
    size_t shard;  /* index in the map */
};

/* The request, checked, with its items grouped by shard. */
struct bulk {
    struct proxy_req *r;
    json_t *root;
    struct item *items;
    size_t n;
    bool b64, is_delete, is_get;
    size_t *shard_keys;         /* per shard of the map: how many items */
    size_t nparts;              /* shards with items */
    size_t pending;             /* parts not answered yet */
    struct proxy_fetch **parts; /* per shard of the map, NULL when it has no items */
};

static void bulk_dispose(void *p)
{
    struct bulk *b = p;
    json_decref(b->root);
    free(b->items);
    free(b->shard_keys);
    free(b->parts);
}

/* ---- reading and checking the body ------------------------------------------------------------- */

static int check_key(struct bulk *b, const char *s, size_t len, size_t i, struct kv_buf *tmp)
{
    struct kv_http_req *h = &b->r->h;
    tmp->len = 0;
    if (b->b64 && kv_base64_decode(s, len, tmp) != KV_OK) {
        kv_http_error(h, 400, "bad_base64", "key %zu is not valid base64", i);
        return -1;
    }
    if (!b->b64)
        kv_buf_append(tmp, s, len);
    if (tmp->len == 0) {
        kv_http_error(h, 400, "key_empty", "key %zu is empty", i);
        return -1;
    }
    if (tmp->len > (size_t)b->r->px->cfg.max_key_size) {
        kv_http_error(h, 400, "key_too_long", "key %zu has %zu bytes; the limit is %lld", i, tmp->len,
                      (long long)b->r->px->cfg.max_key_size);
        return -1;
    }
    return 0;
}

static int parse_body(struct bulk *b)
{
    struct kv_http_req *h = &b->r->h;
    h2o_iovec_t body = h->req->entity;
    if (body.base == NULL || body.len == 0) {
        kv_http_error(h, 400, "bad_request", "the request needs a JSON body");
        return -1;
    }
    json_error_t je;
    b->root = json_loadb(body.base, body.len, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &je);
    if (b->root == NULL) {
        if (strstr(je.text, "NUL byte in object key"))
            kv_http_error(h, 400, "bad_json",
                          "a key holds a NUL byte, which JSON object keys cannot carry here: "
                          "send keys and values base64-encoded with ?encoding=base64");
        else if (strstr(je.text, "duplicate object key"))
            kv_http_error(h, 400, "bad_json", "a key is given twice: %s", je.text);
        else
            kv_http_error(h, 400, "bad_json", "invalid JSON at line %d column %d: %s", je.line, je.column,
                          je.text);
        return -1;
    }
    json_t *arr = NULL;
    if (b->is_delete || b->is_get) {
        arr = json_is_object(b->root) ? json_object_get(b->root, "keys") : NULL;
        if (arr == NULL || !json_is_array(arr) || json_object_size(b->root) != 1) {
            kv_http_error(h, 400, "bad_request", "the body must be {\"keys\": [\"key\", ...]}");
            return -1;
        }
        b->n = json_array_size(arr);
    } else {
        if (!json_is_object(b->root)) {
            kv_http_error(h, 400, "bad_request", "the body must be a JSON object {\"key\": \"value\", ...}");
            return -1;
        }
        b->n = json_object_size(b->root);
    }
    if (b->n > (size_t)b->r->px->cfg.max_bulk_items) {
        kv_http_error(h, 413, "too_many_items", "%zu items; the limit is %lld", b->n,
                      (long long)b->r->px->cfg.max_bulk_items);
        return -1;
    }
    b->items = kv_calloc(b->n ? b->n : 1, sizeof *b->items);
    /* item by item, in the node's order (a value's type, its key, then the value), so the first
     * fault named is the one a node would name */
    struct kv_buf tmp = {0};
    int rc = 0;
    size_t i = 0;
    if (arr) {
        json_t *v;
        json_array_foreach(arr, i, v)
        {
            if (!json_is_string(v)) {
                kv_http_error(h, 400, "bad_request", "key %zu must be a string", i);
                rc = -1;
                break;
            }
            b->items[i].key = json_string_value(v);
            b->items[i].key_len = json_string_length(v);
            if ((rc = check_key(b, b->items[i].key, b->items[i].key_len, i, &tmp)) != 0)
                break;
            b->items[i].shard =
                (size_t)(proxy_map_find(&b->r->px->map, tmp.ptr, tmp.len) - b->r->px->map.shards);
        }
    } else {
        const char *k;
        size_t klen;
        json_t *v;
        json_object_keylen_foreach(b->root, k, klen, v)
        {
            if (!json_is_string(v)) {
                kv_http_error(h, 400, "bad_request", "value %zu must be a string", i);
                rc = -1;
                break;
            }
            if ((rc = check_key(b, k, klen, i, &tmp)) != 0)
                break;
            b->items[i].key = k;
            b->items[i].key_len = klen;
            b->items[i].value = v;
            b->items[i].shard =
                (size_t)(proxy_map_find(&b->r->px->map, tmp.ptr, tmp.len) - b->r->px->map.shards);
            if (b->b64 && kv_base64_decode(json_string_value(v), json_string_length(v), &tmp) != KV_OK) {
                kv_http_error(h, 400, "bad_base64", "value %zu is not valid base64", i);
                rc = -1;
                break;
            }
            i++;
        }
    }
    kv_buf_free(&tmp);
    return rc;
}

/* The query: encoding, and (for writes) atomic. -1 after answering. */
static int parse_query(struct bulk *b, bool *atomic)
{
    struct kv_http_query q;
    struct kv_http_req *h = &b->r->h;
    *atomic = true;
    if (kv_http_query_parse(h, &q) != 0 || kv_http_query_encoding(h, &q, &b->b64) != 0)
        return -1;
    if (!b->is_get) {
        const struct kv_http_param *a = kv_http_query_get(&q, "atomic");
        bool non_atomic = false;
        if (a && (kv_slice_eq(a->value, kv_slice_make("false", 5)) ||
                  kv_slice_eq(a->value, kv_slice_make("0", 1))))
            non_atomic = true;
        else if (a && !kv_slice_eq(a->value, kv_slice_make("true", 4)) &&
                 !kv_slice_eq(a->value, kv_slice_make("1", 1))) {
            kv_http_error(h, 400, "bad_request", "atomic must be true or false");
            return -1;
        }
        *atomic = !non_atomic;
    }
    return kv_http_query_check_unused(h, &q);
}

static struct bulk *bulk_new(struct proxy_req *r, bool is_delete, bool is_get)
{
    struct bulk *b = h2o_mem_alloc_shared(&r->h.req->pool, sizeof *b, bulk_dispose);
    memset(b, 0, sizeof *b);
    b->r = r;
    b->is_delete = is_delete;
    b->is_get = is_get;
    size_t nshards = r->px->map.n;
    b->shard_keys = kv_calloc(nshards, sizeof *b->shard_keys);
    b->parts = kv_calloc(nshards, sizeof *b->parts);
    return b;
}

static void group(struct bulk *b)
{
    for (size_t i = 0; i < b->n; i++) {
        if (b->shard_keys[b->items[i].shard]++ == 0)
            b->nparts++;
    }
}

/* One shard's part of the body, as JSON. */
static char *part_body(struct bulk *b, size_t shard, size_t *len)
{
    json_t *o = (b->is_delete || b->is_get) ? json_array() : json_object();
    for (size_t i = 0; i < b->n; i++) {
        const struct item *it = &b->items[i];
        if (it->shard != shard)
            continue;
        if (b->is_delete || b->is_get)
            json_array_append_new(o, json_stringn(it->key, it->key_len));
        else
            json_object_setn(o, it->key, it->key_len, it->value);
    }
    if (b->is_delete || b->is_get) {
        json_t *w = json_object();
        json_object_set_new(w, "keys", o);
        o = w;
    }
    char *text = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    KV_ASSERT(text != NULL);
    *len = strlen(text);
    return text;
}

/* A part's body, kept in the request pool for the exchange. */
static h2o_iovec_t pooled_part(struct bulk *b, size_t shard)
{
    size_t len;
    char *text = part_body(b, shard, &len);
    char *p = h2o_mem_alloc_pool(&b->r->h.req->pool, len);
    memcpy(p, text, len);
    free(text);
    return h2o_iovec_init(p, len);
}

/* ---- writes ---------------------------------------------------------------------------------------- */

static void refuse_cross_shard(struct bulk *b)
{
    struct kv_buf j = {0}, names = {0};
    const struct proxy_map *m = &b->r->px->map;
    size_t listed = 0;
    kv_buf_append_str(&j, "{\"error\":\"cross_shard\",\"message\":");
    for (size_t s = 0; s < m->n; s++) {
        if (b->shard_keys[s] == 0)
            continue;
        kv_buf_printf(&names, "%s'%s' (%zu key%s)", listed++ ? ", " : "", m->shards[s].name, b->shard_keys[s],
                      b->shard_keys[s] == 1 ? "" : "s");
    }
    kv_buf_append_byte(&names, 0);
    char msg[1024];
    snprintf(msg, sizeof msg,
             "the batch spans %zu shards: %s. A batch is atomic only within one shard: split it by shard, or "
             "send ?atomic=false to apply each shard's part as its own atomic batch",
             b->nparts, (const char *)names.ptr);
    kv_json_append_string(&j, (const uint8_t *)msg, strlen(msg));
    kv_buf_append_str(&j, ",\"shards\":[");
    listed = 0;
    for (size_t s = 0; s < m->n; s++) {
        if (b->shard_keys[s] == 0)
            continue;
        kv_buf_append_str(&j, listed++ ? ",{\"shard\":" : "{\"shard\":");
        kv_json_append_string(&j, (const uint8_t *)m->shards[s].name, strlen(m->shards[s].name));
        kv_buf_printf(&j, ",\"keys\":%zu}", b->shard_keys[s]);
    }
    kv_buf_append_str(&j, "]}");
    kv_buf_free(&names);
    kv_http_reply_json(&b->r->h, 409, &j);
}

/* Appends the members of a node's JSON answer to out, or error/message when it is not JSON. */
static void part_outcome(struct kv_buf *out, const struct proxy_fetch *f, bool *ok, uint64_t *count,
                         uint64_t *deleted)
{
    *ok = false;
    if (f->status == 0) {
        char msg[512];
        if (f->sent) {
            kv_buf_append_str(out, ",\"status\":502,\"error\":\"main_failed\",\"message\":");
            snprintf(msg, sizeof msg,
                     "no answer from the main (%s); this part may or may not have been applied", f->errstr);
        } else {
            kv_buf_append_str(out, ",\"status\":503,\"error\":\"main_unavailable\",\"message\":");
            snprintf(msg, sizeof msg, "the main cannot be reached (%s); this part was not applied",
                     f->errstr);
        }
        kv_json_append_string(out, (const uint8_t *)msg, strlen(msg));
        return;
    }
    kv_buf_printf(out, ",\"status\":%d", f->status);
    json_error_t je;
    json_t *j = json_loadb((const char *)f->body.ptr, f->body.len, JSON_ALLOW_NUL, &je);
    if (!json_is_object(j)) {
        kv_buf_append_str(out, ",\"error\":\"bad_gateway\",\"message\":\"the main's answer is not JSON\"");
        json_decref(j);
        return;
    }
    const char *k;
    json_t *v;
    json_object_foreach(j, k, v)
    {
        char *text = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
        kv_buf_append_byte(out, ',');
        kv_json_append_string(out, (const uint8_t *)k, strlen(k));
        kv_buf_append_byte(out, ':');
        kv_buf_append_str(out, text ? text : "null");
        free(text);
    }
    *ok = f->status == 200;
    if (*ok) {
        *count += (uint64_t)json_integer_value(json_object_get(j, "count"));
        *deleted += (uint64_t)json_integer_value(json_object_get(j, "deleted"));
    }
    json_decref(j);
}

static void reply_parts(struct bulk *b)
{
    const struct proxy_map *m = &b->r->px->map;
    struct kv_buf j = {0}, parts = {0};
    uint64_t count = 0, deleted = 0;
    size_t failed = 0, listed = 0;
    for (size_t s = 0; s < m->n; s++) {
        if (b->shard_keys[s] == 0)
            continue;
        kv_buf_append_str(&parts, listed++ ? ",{\"shard\":" : "{\"shard\":");
        kv_json_append_string(&parts, (const uint8_t *)m->shards[s].name, strlen(m->shards[s].name));
        kv_buf_printf(&parts, ",\"keys\":%zu", b->shard_keys[s]);
        bool ok = false;
        if (b->parts[s] == NULL) { /* its main was down: not sent */
            char msg[512];
            snprintf(msg, sizeof msg, "shard '%s': its main %s is down; this part was not applied",
                     m->shards[s].name, m->shards[s].main->url);
            kv_buf_append_str(&parts, ",\"status\":503,\"error\":\"main_unavailable\",\"message\":");
            kv_json_append_string(&parts, (const uint8_t *)msg, strlen(msg));
        } else {
            part_outcome(&parts, b->parts[s], &ok, &count, &deleted);
        }
        failed += ok ? 0 : 1;
        kv_buf_append_byte(&parts, '}');
    }
    kv_buf_printf(&j, "{\"atomic\":false,\"count\":%llu,", (unsigned long long)count);
    if (b->is_delete)
        kv_buf_printf(&j, "\"deleted\":%llu,", (unsigned long long)deleted);
    kv_buf_printf(&j, "\"parts_failed\":%zu,\"parts\":[", failed);
    kv_buf_append(&j, parts.ptr, parts.len);
    kv_buf_append_str(&j, "]}");
    kv_buf_free(&parts);
    kv_http_reply_json(&b->r->h, failed == 0 ? 200 : 207, &j);
}

static void on_part_written(struct proxy_fetch *f)
{
    struct bulk *b = f->arg;
    if (--b->pending == 0)
        reply_parts(b);
}

static void bulk_write(struct proxy_req *r, bool is_delete)
{
    struct bulk *b = bulk_new(r, is_delete, false);
    bool atomic;
    if (parse_query(b, &atomic) != 0 || parse_body(b) != 0)
        return;
    group(b);
    const struct proxy_map *m = &r->px->map;
    h2o_iovec_t path = h2o_iovec_init(is_delete ? "/bulk/delete" : "/bulk", is_delete ? 12 : 5);
    h2o_iovec_t query = proxy_query_without(r, "atomic");
    struct proxy_call call = {
        .method = h2o_iovec_init(H2O_STRLIT("POST")),
        .path = h2o_concat(&r->h.req->pool, path, query),
        .body = r->h.req->entity,
        .content_type = "application/json",
    };
    if (b->nparts <= 1) { /* one shard (or an empty batch, which the first shard answers) */
        struct proxy_shard *s = &m->shards[b->n ? b->items[0].shard : 0];
        if (!atomic_load(&s->main->up)) {
            proxy_reply_main_down(r, s);
            return;
        }
        proxy_forward(r, &call, &s->main, 1, false);
        return;
    }
    if (atomic) {
        refuse_cross_shard(b);
        return;
    }
    b->pending = b->nparts;
    size_t sent = 0;
    for (size_t s = 0; s < m->n; s++) {
        if (b->shard_keys[s] == 0)
            continue;
        if (!atomic_load(&m->shards[s].main->up)) {
            b->pending--;
            continue;
        }
        call.body = pooled_part(b, s);
        b->parts[s] =
            proxy_fetch_start(r, &call, &m->shards[s].main, 1, false, PART_ANSWER_MAX, on_part_written, b);
        sent++;
    }
    if (sent == 0)
        reply_parts(b);
}

void proxy_handle_bulk(struct kv_http_req *h)
{
    bulk_write((struct proxy_req *)h, false);
}

void proxy_handle_bulk_delete(struct kv_http_req *h)
{
    bulk_write((struct proxy_req *)h, true);
}

/* ---- reads ----------------------------------------------------------------------------------------- */

/* The answer of one shard: its items and missing keys, as JSON arrays, walked in order. */
struct part_view {
    json_t *root, *items, *missing;
    size_t next_item, next_missing;
};

static bool json_str_is(json_t *v, const char *s, size_t len)
{
    return json_is_string(v) && json_string_length(v) == len && memcmp(json_string_value(v), s, len) == 0;
}

/* Merges the parts into the request's order: each part lists its keys' items and missing keys in
 * the order they were asked, so walking them side by side places every key. */
static void reply_merged(struct bulk *b)
{
    const struct proxy_map *m = &b->r->px->map;
    struct kv_http_req *h = &b->r->h;
    struct part_view *pv = kv_calloc(m->n, sizeof *pv);
    int rc = 0;
    for (size_t s = 0; s < m->n && rc == 0; s++) {
        struct proxy_fetch *f = b->parts[s];
        if (f == NULL)
            continue;
        if (f->status == 0 && f->too_large) {
            kv_http_error(h, 413, "response_too_large",
                          "shard '%s' answered more than the proxy's max_response_bytes "
                          "(%lld); ask for fewer keys at a time",
                          m->shards[s].name, (long long)b->r->px->cfg.max_response_bytes);
            rc = -1;
            break;
        }
        if (f->status == 0) {
            kv_http_error(h, 503, "shard_unavailable", "shard '%s': no backend answered (%s)",
                          m->shards[s].name, f->errstr);
            rc = -1;
            break;
        }
        if (f->status != 200) { /* the node's own refusal (413, 400 not_utf8, ...) is the answer */
            struct kv_buf body = {0};
            kv_buf_append(&body, f->body.ptr, f->body.len);
            kv_http_reply(h, f->status, "application/json", &body);
            rc = -1;
            break;
        }
        json_error_t je;
        pv[s].root = json_loadb((const char *)f->body.ptr, f->body.len, JSON_ALLOW_NUL, &je);
        pv[s].items = json_object_get(pv[s].root, "items");
        pv[s].missing = json_object_get(pv[s].root, "missing");
        if (!json_is_array(pv[s].items) || !json_is_array(pv[s].missing)) {
            kv_http_error(h, 502, "bad_gateway", "shard '%s' answered /bulk/get with something else",
                          m->shards[s].name);
            rc = -1;
        }
    }
    struct kv_buf out = {0}, missing = {0};
    size_t nitems = 0, nmissing = 0;
    kv_buf_append_str(&out, "{\"items\":[");
    for (size_t i = 0; rc == 0 && i < b->n; i++) {
        const struct item *it = &b->items[i];
        struct part_view *p = &pv[it->shard];
        json_t *item = json_array_get(p->items, p->next_item);
        if (item && json_str_is(json_object_get(item, "key"), it->key, it->key_len)) {
            p->next_item++;
            char *text = json_dumps(item, JSON_COMPACT);
            kv_buf_append_str(&out, nitems++ ? "," : "");
            kv_buf_append_str(&out, text);
            free(text);
        } else if (json_str_is(json_array_get(p->missing, p->next_missing), it->key, it->key_len)) {
            p->next_missing++;
            kv_buf_append_str(&missing, nmissing++ ? "," : "");
            kv_json_append_string(&missing, (const uint8_t *)it->key, it->key_len);
        } else {
            kv_http_error(h, 502, "bad_gateway", "shard '%s' answered /bulk/get out of order",
                          m->shards[it->shard].name);
            rc = -1;
        }
        if (rc == 0 && out.len > (size_t)b->r->px->cfg.max_response_bytes) {
            kv_http_error(h, 413, "response_too_large",
                          "the values would pass %lld bytes; ask for fewer keys at a time",
                          (long long)b->r->px->cfg.max_response_bytes);
            rc = -1;
        }
    }
    if (rc == 0) {
        kv_buf_append_str(&out, "],\"missing\":[");
        kv_buf_append(&out, missing.ptr, missing.len);
        kv_buf_append_str(&out, "]}");
        kv_http_reply_json(h, 200, &out);
    }
    kv_buf_free(&out);
    kv_buf_free(&missing);
    for (size_t s = 0; s < m->n; s++)
        json_decref(pv[s].root);
    free(pv);
}

static void on_part_read(struct proxy_fetch *f)
{
    struct bulk *b = f->arg;
    if (--b->pending == 0)
        reply_merged(b);
}

/* Read-your-writes across shards: the client's seq belongs to one shard, so every part goes to its
 * shard's main, which has all its own writes, instead of waiting on replicas for a seq of another. */
static bool wants_own_writes(h2o_req_t *req)
{
    return h2o_find_header_by_str(&req->headers, H2O_STRLIT("x-triekv-min-seq"), -1) >= 0;
}

void proxy_handle_bulk_get(struct kv_http_req *h)
{
    struct proxy_req *r = (struct proxy_req *)h;
    struct bulk *b = bulk_new(r, false, true);
    bool atomic;
    if (parse_query(b, &atomic) != 0 || parse_body(b) != 0)
        return;
    group(b);
    const struct proxy_map *m = &r->px->map;
    h2o_req_t *req = r->h.req;
    h2o_iovec_t query = req->query_at == SIZE_MAX
                            ? h2o_iovec_init("", 0)
                            : h2o_iovec_init(req->path.base + req->query_at, req->path.len - req->query_at);
    struct proxy_call call = {
        .method = h2o_iovec_init(H2O_STRLIT("POST")),
        .path = h2o_concat(&r->h.req->pool, h2o_iovec_init(H2O_STRLIT("/bulk/get")), query),
        .body = r->h.req->entity,
        .content_type = "application/json",
        .keep_min_seq = true,
    };
    struct proxy_backend *order[1 + PROXY_REPLICAS_MAX];
    if (b->nparts <= 1) {
        struct proxy_shard *s = &m->shards[b->n ? b->items[0].shard : 0];
        proxy_forward(r, &call, order, proxy_read_order(s, order), true);
        return;
    }
    bool own = wants_own_writes(r->h.req);
    call.keep_min_seq = false;
    b->pending = b->nparts;
    for (size_t s = 0; s < m->n; s++) {
        if (b->shard_keys[s] == 0)
            continue;
        call.body = pooled_part(b, s);
        size_t n = own ? 1 : proxy_read_order(&m->shards[s], order);
        if (own)
            order[0] = m->shards[s].main;
        b->parts[s] = proxy_fetch_start(r, &call, order, n, true, (size_t)r->px->cfg.max_response_bytes,
                                        on_part_read, b);
    }
}
