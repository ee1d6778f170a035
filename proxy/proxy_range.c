/* proxy/proxy_range.c - GET /bulk/range across shards: one page, in key order, from the shards that
 * overlap the range, with the node's paging contract.
 *
 * The range [lo, hi) comes from start_key/end_key, or from a prefix (hi is the first key past every
 * key with the prefix). A page starts at lo, asking the shard that owns lo, or right after the
 * cursor's last key, asking the shard that owns that key with a node cursor of its own (a key one
 * byte longer than the longest key could not be a start_key); each request asks for at most the
 * items still wanted, within the shard's bounds. When the shard's part of the range is done and
 * the page has room, the next shard is asked, from its start; shards are disjoint and in order, so
 * concatenating their pages keeps key order. A page ends when it is full, when a node ended its
 * own page early (its byte limit), when the answer passed max_response_bytes, or at the range's
 * end. A page that fills up at the end of a shard's part asks the later shards for one key each
 * until one has a key of the range, so that the last page's next is null, as a node's is. Its cursor is the
 * node's format (kv_cursor: the range and the last key), so nothing is repeated or skipped whichever backends
 * serve the next page.
 *
 * Nodes are asked with ?encoding=base64, so any bytes cross; the page is written in the client's
 * encoding (text that is not UTF-8 is refused with 400 not_utf8, as a node does). Each shard page is
 * one consistent view on its node; a page spanning shards is not one view across them. */
#include "proxy/proxy_int.h"
#include "common/kv_assert.h"
#include "common/kv_codec.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct page {
    struct proxy_req *r;
    struct kv_http_range hr;
    struct kv_buf raw; /* the cursor's bytes: hr's slices may point here */
    bool b64, own_writes;
    struct kv_buf lo, hi; /* the range */
    bool has_hi;
    struct kv_buf pos; /* where the next shard request starts (inclusive) */
    bool from_cursor;  /* the first request continues after hr.range.after instead */
    bool probing;      /* the page is full: later shards are only asked whether they hold a key */
    size_t shard;      /* the shard asked now */
    struct kv_buf out; /* the items so far, as JSON */
    size_t count;
    struct kv_buf last; /* the last key on the page */
};

static void page_dispose(void *p)
{
    struct page *g = p;
    kv_buf_free(&g->raw);
    kv_buf_free(&g->lo);
    kv_buf_free(&g->hi);
    kv_buf_free(&g->pos);
    kv_buf_free(&g->out);
    kv_buf_free(&g->last);
}

static struct kv_slice sl(const struct kv_buf *b)
{
    return kv_slice_make(b->ptr, b->len);
}

static void set_buf(struct kv_buf *b, struct kv_slice s)
{
    b->len = 0;
    kv_buf_append(b, s.ptr, s.len);
}

static void step(struct page *g);

static void finish(struct page *g, bool more)
{
    struct kv_buf j = {0};
    kv_buf_append_str(&j, "{\"items\":[");
    kv_buf_append(&j, g->out.ptr, g->out.len);
    kv_buf_append_str(&j, "],\"next\":");
    if (more && g->count > 0) {
        struct kv_cursor next = g->hr.range;
        next.after = sl(&g->last);
        kv_buf_append_byte(&j, '"');
        kv_cursor_encode(&next, &j);
        kv_buf_append_byte(&j, '"');
    } else {
        kv_buf_append_str(&j, "null");
    }
    kv_buf_append_byte(&j, '}');
    kv_http_reply_json(&g->r->h, 200, &j);
}

/* Appends a base64 string from a node in the client's encoding. -1 when it is not UTF-8 text. */
static int out_field(struct page *g, json_t *v, struct kv_buf *tmp)
{
    if (g->b64) {
        kv_json_append_string(&g->out, (const uint8_t *)json_string_value(v), json_string_length(v));
        return 0;
    }
    if (!kv_utf8_valid(tmp->ptr, tmp->len))
        return -1;
    kv_json_append_string(&g->out, tmp->ptr, tmp->len);
    return 0;
}

/* Takes one shard's page into ours. -1 after answering. */
static int take_items(struct page *g, json_t *items)
{
    struct kv_buf key = {0}, val = {0};
    size_t i;
    json_t *it;
    int rc = 0;
    json_array_foreach(items, i, it)
    {
        json_t *k = json_object_get(it, "key"), *v = json_object_get(it, "value");
        if (!json_is_string(k) ||
            kv_base64_decode(json_string_value(k), json_string_length(k), &key) != KV_OK ||
            (!g->hr.keys_only &&
             (!json_is_string(v) ||
              kv_base64_decode(json_string_value(v), json_string_length(v), &val) != KV_OK))) {
            kv_http_error(&g->r->h, 502, "bad_gateway", "shard '%s' answered a range with a malformed item",
                          g->r->px->map.shards[g->shard].name);
            rc = -1;
            break;
        }
        kv_buf_append_str(&g->out, g->count++ ? ",{\"key\":" : "{\"key\":");
        bool ok = out_field(g, k, &key) == 0;
        if (ok && !g->hr.keys_only) {
            kv_buf_append_str(&g->out, ",\"value\":");
            ok = out_field(g, v, &val) == 0;
        }
        if (!ok) {
            kv_http_error(&g->r->h, 400, "not_utf8",
                          "a key or value in this range is not valid UTF-8; ask with ?encoding=base64");
            rc = -1;
            break;
        }
        kv_buf_append_byte(&g->out, '}');
        set_buf(&g->last, sl(&key));
        key.len = val.len = 0;
    }
    kv_buf_free(&key);
    kv_buf_free(&val);
    return rc;
}

/* Whether keys of the range lie past the current shard. */
static bool shards_after(const struct page *g)
{
    const struct proxy_shard *s = &g->r->px->map.shards[g->shard];
    return s->has_end && (!g->has_hi || kv_slice_cmp(sl(&s->end), sl(&g->hi)) < 0);
}

/* The next shard's part of the range, from its start. */
static void next_shard(struct page *g)
{
    const struct proxy_shard *s = &g->r->px->map.shards[g->shard];
    set_buf(&g->pos, sl(&s->end));
    g->from_cursor = false;
    g->shard++;
    step(g);
}

static void on_shard_page(struct proxy_fetch *f)
{
    struct page *g = f->arg;
    const struct proxy_shard *s = &g->r->px->map.shards[g->shard];
    if (f->status == 0 && f->too_large) {
        kv_http_error(
            &g->r->h, 413, "response_too_large",
            "shard '%s' answered a range page of more than the proxy's max_response_bytes (%lld); read "
            "its largest values with GET /kv/{key}",
            s->name, (long long)g->r->px->cfg.max_response_bytes);
        return;
    }
    if (f->status == 0) {
        kv_http_error(&g->r->h, 503, "shard_unavailable", "shard '%s': no backend answered (%s)", s->name,
                      f->errstr);
        return;
    }
    if (f->status != 200) { /* the node's refusal (a limit past its own, ...) is the answer */
        struct kv_buf body = {0};
        kv_buf_append(&body, f->body.ptr, f->body.len);
        kv_http_reply(&g->r->h, f->status, "application/json", &body);
        return;
    }
    json_error_t je;
    json_t *j = json_loadb((const char *)f->body.ptr, f->body.len, 0, &je);
    json_t *items = json_object_get(j, "items"), *next = json_object_get(j, "next");
    if (!json_is_array(items) || next == NULL) {
        json_decref(j);
        kv_http_error(&g->r->h, 502, "bad_gateway", "shard '%s' answered a range with something else",
                      s->name);
        return;
    }
    bool node_more = !json_is_null(next);
    if (g->probing) { /* the page is already full: does the range go on in this shard? */
        bool any = json_array_size(items) > 0;
        json_decref(j);
        if (any || node_more)
            finish(g, true);
        else if (shards_after(g))
            next_shard(g);
        else
            finish(g, false);
        return;
    }
    int rc = take_items(g, items);
    json_decref(j);
    if (rc != 0)
        return;
    if (g->count >= g->hr.limit && !node_more && shards_after(g)) {
        /* full at the end of this shard's part: a later shard may hold no key of the range, and the
         * last page must say so (next null), as a node's does */
        g->probing = true;
        next_shard(g);
        return;
    }
    if (g->count >= g->hr.limit) {
        finish(g, node_more);
        return;
    }
    if (node_more || g->out.len > (size_t)g->r->px->cfg.max_response_bytes) {
        finish(g, true); /* a node ended its page early on bytes, or ours is large enough */
        return;
    }
    if (!shards_after(g)) {
        finish(g, false);
        return;
    }
    next_shard(g);
}

/* Asks the current shard for its part of the range from pos on (or after the cursor's key). */
static void step(struct page *g)
{
    struct proxy_req *r = g->r;
    struct proxy_shard *s = &r->px->map.shards[g->shard];
    bool hi_here = g->has_hi && (!s->has_end || kv_slice_cmp(sl(&g->hi), sl(&s->end)) < 0);
    const struct kv_buf *end = hi_here ? &g->hi : s->has_end ? &s->end : NULL;
    struct kv_buf q = {0};
    kv_buf_printf(&q, "/bulk/range?encoding=base64&limit=%zu", g->probing ? 1 : g->hr.limit - g->count);
    if (g->from_cursor) {
        struct kv_cursor c = {.start = sl(&g->pos), .has_end = end != NULL, .after = g->hr.range.after};
        if (end)
            c.end = sl(end);
        kv_buf_append_str(&q, "&cursor=");
        kv_cursor_encode(&c, &q);
    } else {
        kv_buf_append_str(&q, "&start_key=");
        kv_percent_encode(g->pos.ptr, g->pos.len, &q);
        if (end) {
            kv_buf_append_str(&q, "&end_key=");
            kv_percent_encode(end->ptr, end->len, &q);
        }
    }
    if (g->hr.keys_only || g->probing)
        kv_buf_append_str(&q, "&keys_only=true");
    char *path = h2o_mem_alloc_pool(&r->h.req->pool, q.len);
    memcpy(path, q.ptr, q.len);
    struct proxy_call call = {
        .method = h2o_iovec_init(H2O_STRLIT("GET")),
        .path = h2o_iovec_init(path, q.len),
        .keep_min_seq = !g->own_writes,
    };
    kv_buf_free(&q);
    struct proxy_backend *order[1 + PROXY_REPLICAS_MAX];
    size_t n = 1;
    if (g->own_writes)
        order[0] = s->main; /* read-your-writes: a main has every write of its shard */
    else
        n = proxy_read_order(s, order);
    /* a node sends a value larger than its page limit alone on a page: room for the largest value
     * the proxy passes on, in base64 */
    size_t max = (size_t)r->px->cfg.max_response_bytes / 2 * 3 + (1u << 20);
    proxy_fetch_start(r, &call, order, n, true, max, on_shard_page, g);
}

void proxy_handle_range(struct kv_http_req *h)
{
    struct proxy_req *r = (struct proxy_req *)h;
    struct page *g = h2o_mem_alloc_shared(&r->h.req->pool, sizeof *g, page_dispose);
    memset(g, 0, sizeof *g);
    g->r = r;
    struct kv_http_query q;
    if (kv_http_query_parse(&r->h, &q) != 0 || kv_http_query_encoding(&r->h, &q, &g->b64) != 0 ||
        kv_http_range_parse(&r->h, &q, (size_t)r->px->cfg.max_key_size, (size_t)r->px->cfg.max_range_response,
                            &g->raw, &g->hr) != 0 ||
        kv_http_query_check_unused(&r->h, &q) != 0)
        return;
    const struct kv_cursor *rg = &g->hr.range;
    set_buf(&g->lo, rg->start);
    if (rg->has_prefix) { /* [prefix, the first key past every key with it) */
        set_buf(&g->hi, rg->start);
        while (g->hi.len > 0 && g->hi.ptr[g->hi.len - 1] == 0xff)
            g->hi.len--;
        g->has_hi = g->hi.len > 0;
        if (g->has_hi)
            g->hi.ptr[g->hi.len - 1]++;
    } else if (rg->has_end) {
        set_buf(&g->hi, rg->end);
        g->has_hi = true;
    }
    if (g->has_hi && kv_slice_cmp(sl(&g->lo), sl(&g->hi)) > 0) {
        kv_http_error(&r->h, 400, "bad_range", "start_key must not be greater than end_key");
        return;
    }
    set_buf(&g->pos, sl(&g->lo));
    struct kv_slice first = sl(&g->lo);
    if (g->hr.has_after && kv_slice_cmp(rg->after, first) >= 0) {
        g->from_cursor = true; /* the range goes on after the cursor's key */
        first = rg->after;
        if (g->has_hi && kv_slice_cmp(first, sl(&g->hi)) >= 0) {
            finish(g, false);
            return;
        }
    } else if (g->has_hi && kv_slice_cmp(first, sl(&g->hi)) >= 0) {
        finish(g, false);
        return;
    }
    g->own_writes = h2o_find_header_by_str(&r->h.req->headers, H2O_STRLIT("x-triekv-min-seq"), -1) >= 0;
    g->shard = (size_t)(proxy_map_find(&r->px->map, first.ptr, first.len) - r->px->map.shards);
    if (g->from_cursor) /* the shard's own part starts at its start, or at lo within it */
        set_buf(&g->pos, kv_slice_cmp(sl(&r->px->map.shards[g->shard].start), sl(&g->lo)) > 0
                             ? sl(&r->px->map.shards[g->shard].start)
                             : sl(&g->lo));
    step(g);
}
