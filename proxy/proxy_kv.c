/* proxy/proxy_kv.c - single-key requests: /kv/{key} goes, unchanged, to the shard that owns the key.
 *
 * Reads (GET, HEAD) go to the shard's healthy replicas in turn, then its main (proxy_read_order);
 * a replica that cannot answer passes the read on, and X-Triekv-Min-Seq travels to replicas only
 * (a main has every write of its shard, so it never needs to wait). Writes (PUT, POST, DELETE) go
 * to the main alone, with the client's headers (If-Match, If-None-Match) and body; when the health
 * checks say the main is down, the write is refused with 503 at once rather than left to time
 * out. Status, headers (ETag, X-Triekv-Seq) and body come back as the node sent them. */
#include "proxy/proxy_int.h"
#include "common/kv_codec.h"

#include <string.h>

void proxy_handle_kv(struct kv_http_req *h, h2o_iovec_t path)
{
    struct proxy_req *r = (struct proxy_req *)h;
    h2o_req_t *req = h->req;
    int ep = h->ep;
    struct kv_buf key = {0};
    if (kv_percent_decode(path.base + 4, path.len - 4, false, &key) != KV_OK) {
        kv_buf_free(&key); /* what was decoded before the bad escape */
        kv_http_error(&r->h, 400, "bad_request", "the key in the path has a malformed %%-escape");
        return;
    }
    if (key.len > (size_t)r->px->cfg.max_key_size) {
        kv_http_error(&r->h, 400, "key_too_long", "the key has %zu bytes; the limit is %lld", key.len,
                      (long long)r->px->cfg.max_key_size);
        kv_buf_free(&key);
        return;
    }
    struct proxy_shard *s = proxy_map_find(&r->px->map, key.ptr, key.len);
    kv_buf_free(&key);
    /* the request target as the client sent it from the path on (an absolute-form host dropped) */
    h2o_iovec_t target = h2o_iovec_init(path.base, (size_t)(req->path.base + req->path.len - path.base));
    struct proxy_call call = {
        .method = req->method,
        .path = target,
        .body = req->entity,
        .client_headers = true,
        .keep_min_seq = true,
    };
    if (ep == KV_EP_KV_GET || ep == KV_EP_KV_HEAD) {
        struct proxy_backend *order[1 + PROXY_REPLICAS_MAX];
        size_t n = proxy_read_order(s, order);
        proxy_forward(r, &call, order, n, true);
        return;
    }
    if (!atomic_load(&s->main->up)) {
        proxy_reply_main_down(r, s);
        return;
    }
    proxy_forward(r, &call, &s->main, 1, false);
}
