/* node/node_kv.c - single-key requests: GET, HEAD, PUT, POST and DELETE on /kv/{key}.
 *
 * The key is the whole rest of the path after /kv/, percent-decoded (any byte; %2F and a raw '/'
 * both mean '/'). Versions are ETags: the sequence number of the batch that last wrote the key,
 * as a quoted decimal ("42"). Preconditions:
 *   If-Match: "42"     write or delete only if the key exists with exactly that version (412)
 *   If-Match: *        only if the key exists (412)
 *   If-None-Match: *   write only if the key does not exist (412); on GET/HEAD, 304 when it does
 *   If-None-Match: "42" on GET/HEAD: 304 when the version is 42
 * Writes reply {"seq": N} with an X-Triekv-Seq header. */
#include "node/node_int.h"
#include "common/kv_log.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum etag_kind { ETAG_NONE, ETAG_ANY, ETAG_VERSION };

struct etag {
    enum etag_kind kind;
    uint64_t version;
};

/* Parses a header holding "*", "N" or N. -1 when present and malformed. */
static int etag_header(h2o_req_t *req, const h2o_token_t *token, struct etag *out)
{
    out->kind = ETAG_NONE;
    ssize_t i = h2o_find_header(&req->headers, token, -1);
    if (i < 0)
        return 0;
    if (h2o_find_header(&req->headers, token, i) >= 0)
        return -1; /* given twice */
    h2o_iovec_t v = req->headers.entries[i].value;
    const char *p = v.base, *end = v.base + v.len;
    while (p < end && (*p == ' ' || *p == '\t'))
        p++;
    while (end > p && (end[-1] == ' ' || end[-1] == '\t'))
        end--;
    if (end - p == 1 && *p == '*') {
        out->kind = ETAG_ANY;
        return 0;
    }
    if (end - p >= 2 && *p == '"' && end[-1] == '"') {
        p++;
        end--;
    }
    if (p == end || end - p > 20)
        return -1;
    uint64_t n = 0;
    for (; p < end; p++) {
        if (*p < '0' || *p > '9' || n > (UINT64_MAX - 9) / 10)
            return -1;
        n = n * 10 + (uint64_t)(*p - '0');
    }
    out->kind = ETAG_VERSION;
    out->version = n;
    return 0;
}

static void reply_get(struct node_req *r, struct kv_slice key)
{
    struct etag none;
    if (etag_header(r->h.req, H2O_TOKEN_IF_NONE_MATCH, &none) != 0) {
        kv_http_error(&r->h, 400, "bad_request", "If-None-Match must be * or one ETag (\"42\")");
        return;
    }
    struct triekv_value *v = NULL;
    int rc = triekv_get(r->node->db, key, &v);
    if (rc == KV_E_NOT_FOUND) {
        kv_http_error(&r->h, 404, "not_found", "key not found");
        return;
    }
    if (rc != KV_OK) {
        node_reply_rc(r, rc, "read");
        return;
    }
    if (none.kind == ETAG_ANY || (none.kind == ETAG_VERSION && none.version == triekv_value_seq(v))) {
        char etag[32];
        int n = snprintf(etag, sizeof etag, "\"%llu\"", (unsigned long long)triekv_value_seq(v));
        triekv_value_release(v);
        kv_http_add_header(&r->h, "etag", etag, (size_t)n);
        r->h.req->res.status = 304;
        r->h.req->res.reason = "Not Modified";
        r->h.req->res.content_length = 0;
        kv_http_count(&r->h, 304);
        h2o_send_inline(r->h.req, "", 0);
        return;
    }
    node_reply_value(r, v);
}

static void put_done(struct node_req *r, int rc, const struct triekv_write_result *res, const void *arg)
{
    (void)arg;
    if (rc == KV_OK)
        node_reply_seq(r, res->seq, NULL);
    else if (rc == KV_E_PRECONDITION)
        kv_http_error(&r->h, 412, "precondition_failed",
                      "the key's current version does not match the precondition");
    else
        node_reply_rc(r, rc, "write");
}

static void delete_done(struct node_req *r, int rc, const struct triekv_write_result *res, const void *arg)
{
    bool conditional = *(const bool *)arg;
    if (rc == KV_OK && res->deleted == 0) /* If-None-Match: * held, and there was nothing to delete */
        kv_http_error(&r->h, 404, "not_found", "key not found");
    else if (rc == KV_OK)
        node_reply_seq(r, res->seq, "\"deleted\":true");
    else if (rc == KV_E_PRECONDITION && !conditional)
        kv_http_error(&r->h, 404, "not_found", "key not found");
    else if (rc == KV_E_PRECONDITION)
        kv_http_error(&r->h, 412, "precondition_failed", "the key's current version does not match If-Match");
    else
        node_reply_rc(r, rc, "delete");
}

/* The precondition of a write from its headers; -1 after replying 400. */
static int write_cond(struct node_req *r, bool is_delete, enum triekv_cond *cond, uint64_t *version)
{
    struct etag match, none;
    if (etag_header(r->h.req, H2O_TOKEN_IF_MATCH, &match) != 0) {
        kv_http_error(&r->h, 400, "bad_request", "If-Match must be * or one ETag (\"42\")");
        return -1;
    }
    if (etag_header(r->h.req, H2O_TOKEN_IF_NONE_MATCH, &none) != 0 || none.kind == ETAG_VERSION) {
        kv_http_error(&r->h, 400, "bad_request", "If-None-Match on a write must be *");
        return -1;
    }
    if (match.kind != ETAG_NONE && none.kind != ETAG_NONE) {
        kv_http_error(&r->h, 400, "bad_request", "give If-Match or If-None-Match, not both");
        return -1;
    }
    *version = 0;
    if (match.kind == ETAG_VERSION) {
        *cond = TRIEKV_IF_VERSION;
        *version = match.version;
    } else if (match.kind == ETAG_ANY) {
        *cond = TRIEKV_IF_PRESENT;
    } else if (none.kind == ETAG_ANY) {
        *cond = TRIEKV_IF_ABSENT; /* on DELETE: 412 when the key exists, else nothing to delete (404) */
    } else {
        *cond = is_delete ? TRIEKV_IF_PRESENT : TRIEKV_IF_ANY;
    }
    return 0;
}

static void do_write(struct node_req *r, struct kv_slice key, bool is_delete)
{
    if (r->node->cfg.is_replica) {
        node_reply_replica_write(r);
        return;
    }
    enum triekv_cond cond;
    uint64_t version;
    if (write_cond(r, is_delete, &cond, &version) != 0)
        return;
    struct triekv_batch *b = triekv_batch_create();
    int rc;
    if (is_delete) {
        rc = triekv_batch_del(b, key, cond, version);
    } else {
        h2o_iovec_t body = r->h.req->entity;
        if (body.len > (size_t)r->node->cfg.max_value_size) {
            triekv_batch_destroy(b);
            kv_http_error(&r->h, 413, "value_too_large", "the value has %zu bytes; the limit is %lld",
                          body.len, (long long)r->node->cfg.max_value_size);
            return;
        }
        rc = triekv_batch_put(b, key, kv_slice_make(body.base, body.base ? body.len : 0), cond, version);
    }
    if (rc != KV_OK) {
        triekv_batch_destroy(b);
        node_reply_rc(r, rc, "write");
        return;
    }
    /* a DELETE's failed precondition is a 404, unless the client asked for one with a header */
    bool conditional = h2o_find_header(&r->h.req->headers, H2O_TOKEN_IF_MATCH, -1) >= 0 ||
                       h2o_find_header(&r->h.req->headers, H2O_TOKEN_IF_NONE_MATCH, -1) >= 0;
    node_write(r, b, is_delete ? delete_done : put_done, &conditional, sizeof conditional);
}

void node_handle_kv(struct kv_http_req *h, h2o_iovec_t path)
{
    struct node_req *r = (struct node_req *)h;
    struct kv_buf kb = {0};
    if (kv_percent_decode(path.base + 4, path.len - 4, false, &kb) != KV_OK) {
        kv_buf_free(&kb); /* what was decoded before the bad escape */
        kv_http_error(h, 400, "bad_request", "the key in the path has a malformed %%-escape");
        return;
    }
    uint8_t *k = h2o_mem_alloc_pool(&h->req->pool, kb.len ? kb.len : 1);
    memcpy(k, kb.ptr, kb.len);
    struct kv_slice key = kv_slice_make(k, kb.len);
    kv_buf_free(&kb);
    struct kv_http_query q;
    if (kv_http_query_parse(h, &q) != 0 || kv_http_query_check_unused(h, &q) != 0)
        return;
    if (key.len > (size_t)r->node->cfg.max_key_size) {
        kv_http_error(h, 400, "key_too_long", "the key has %zu bytes; the limit is %lld", key.len,
                      (long long)r->node->cfg.max_key_size);
        return;
    }
    if (h->ep == KV_EP_KV_GET || h->ep == KV_EP_KV_HEAD)
        reply_get(r, key);
    else
        do_write(r, key, h->ep == KV_EP_KV_DELETE);
}
