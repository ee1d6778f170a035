/* cli/cli_http.c - the HTTP side of triekv-cli: one libcurl easy handle per thread, reused for every
 * request so the connection is kept alive, and the one table that turns an answer (or a transport
 * failure) into an exit status and a line that says what to do.
 *
 * Owns: the easy handle, its header list and a reusable URL buffer. Timeouts: connecting takes at
 * most CLI_CONNECT_MS_MAX (less when --timeout is shorter), a whole request at most --timeout.
 * Threads: a struct cli_http belongs to one thread at a time; cli_http_global_init() must run before
 * any thread creates one. Nothing here prints except cli_call(). */
#include "cli/cli_int.h"
#include "common/kv_assert.h"

#include <curl/curl.h>
#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#define CLI_RESP_BYTES_MAX ((size_t)3 << 30) /* a larger answer is refused: no triekv answer is */

struct cli_http {
    CURL *curl;
    struct curl_slist *json_headers; /* POST: Content-Type: application/json; no Expect: 100-continue */
    struct curl_slist *raw_headers;  /* PUT: Content-Type: application/octet-stream; no Expect */
    char base[CLI_URL_MAX];
    long timeout_ms;
    char errbuf[CURL_ERROR_SIZE];
    struct kv_buf url; /* base + path, NUL-terminated for libcurl */
    /* the transfer under way */
    struct cli_resp *resp;
    FILE *sink;
    int sink_errno; /* a failed write to the sink */
    bool too_large;
};

int cli_http_global_init(void)
{
    CURLcode rc = curl_global_init(CURL_GLOBAL_DEFAULT);
    if (rc != CURLE_OK)
        return cli_fail(CLI_SERVER, "cannot start libcurl: %s", curl_easy_strerror(rc));
    return CLI_OK;
}

void cli_http_global_cleanup(void)
{
    curl_global_cleanup();
}

void cli_resp_free(struct cli_resp *r)
{
    kv_buf_free(&r->body);
}

static size_t on_data(char *p, size_t size, size_t n, void *arg)
{
    struct cli_http *h = arg;
    size_t len = size * n;
    long status = 0;
    if (h->sink != NULL && curl_easy_getinfo(h->curl, CURLINFO_RESPONSE_CODE, &status) == CURLE_OK &&
        status >= 200 && status < 300) {
        if (fwrite(p, 1, len, h->sink) != len) {
            h->sink_errno = errno ? errno : EIO;
            return 0; /* libcurl stops with CURLE_WRITE_ERROR */
        }
        return len;
    }
    if (len > CLI_RESP_BYTES_MAX - h->resp->body.len) {
        h->too_large = true;
        return 0;
    }
    kv_buf_append(&h->resp->body, p, len);
    return len;
}

/* Options that stay for the life of the handle. */
static CURLcode setup(struct cli_http *h)
{
    long connect_ms = h->timeout_ms < CLI_CONNECT_MS_MAX ? h->timeout_ms : CLI_CONNECT_MS_MAX;
    CURLcode rc = curl_easy_setopt(h->curl, CURLOPT_NOSIGNAL, 1L); /* threads; SIGPIPE stays default */
    if (rc == CURLE_OK)
        rc = curl_easy_setopt(h->curl, CURLOPT_CONNECTTIMEOUT_MS, connect_ms);
    if (rc == CURLE_OK)
        rc = curl_easy_setopt(h->curl, CURLOPT_TIMEOUT_MS, h->timeout_ms);
    if (rc == CURLE_OK)
        rc = curl_easy_setopt(h->curl, CURLOPT_ERRORBUFFER, h->errbuf);
    if (rc == CURLE_OK)
        rc = curl_easy_setopt(h->curl, CURLOPT_WRITEFUNCTION, on_data);
    if (rc == CURLE_OK)
        rc = curl_easy_setopt(h->curl, CURLOPT_WRITEDATA, h);
    if (rc == CURLE_OK)
        rc = curl_easy_setopt(h->curl, CURLOPT_USERAGENT, CLI_NAME "/" CLI_VERSION);
    if (rc == CURLE_OK)
        rc = curl_easy_setopt(h->curl, CURLOPT_TCP_NODELAY, 1L);
    return rc;
}

/* The headers of a request with a body: its type, and no "Expect: 100-continue" round trip. */
static struct curl_slist *header_list(const char *content_type)
{
    struct curl_slist *l = curl_slist_append(NULL, content_type), *l2 = NULL;
    if (l != NULL)
        l2 = curl_slist_append(l, "Expect:");
    if (l2 == NULL)
        curl_slist_free_all(l);
    return l2;
}

int cli_http_create(const char *base_url, double timeout_s, struct cli_http **out)
{
    struct cli_http *h = kv_calloc(1, sizeof *h);
    snprintf(h->base, sizeof h->base, "%s", base_url);
    h->timeout_ms = (long)(timeout_s * 1000.0 + 0.5);
    h->curl = curl_easy_init();
    if (h->curl == NULL) {
        free(h);
        return cli_fail(CLI_SERVER, "cannot create a libcurl handle");
    }
    h->json_headers = header_list("Content-Type: application/json");
    h->raw_headers = header_list("Content-Type: application/octet-stream");
    if (h->json_headers == NULL || h->raw_headers == NULL) {
        cli_fail(CLI_SERVER, "cannot set up libcurl: out of memory");
        goto out_destroy;
    }
    CURLcode rc = setup(h);
    if (rc != CURLE_OK) {
        cli_fail(CLI_SERVER, "cannot set up libcurl: %s", curl_easy_strerror(rc));
        goto out_destroy;
    }
    *out = h;
    return CLI_OK;

out_destroy:
    cli_http_destroy(h);
    return CLI_SERVER;
}

void cli_http_destroy(struct cli_http *h)
{
    if (h == NULL)
        return;
    curl_easy_cleanup(h->curl);
    curl_slist_free_all(h->json_headers);
    curl_slist_free_all(h->raw_headers);
    kv_buf_free(&h->url);
    free(h);
}

static void set_msg(struct cli_resp *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void set_msg(struct cli_resp *r, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->msg, sizeof r->msg, fmt, ap);
    va_end(ap);
}

/* Sets the per-request options for method. */
static CURLcode set_method(struct cli_http *h, const char *method, const void *body, size_t len)
{
    CURLcode rc = curl_easy_setopt(h->curl, CURLOPT_URL, (const char *)h->url.ptr);
    if (rc != CURLE_OK)
        return rc;
    bool put = strcmp(method, "PUT") == 0;
    if (put || strcmp(method, "POST") == 0) {
        rc = curl_easy_setopt(h->curl, CURLOPT_POST, 1L);
        if (rc == CURLE_OK)
            rc = curl_easy_setopt(h->curl, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
        if (rc == CURLE_OK)
            rc = curl_easy_setopt(h->curl, CURLOPT_POSTFIELDS, body != NULL ? body : "");
        if (rc == CURLE_OK)
            rc = curl_easy_setopt(h->curl, CURLOPT_HTTPHEADER, put ? h->raw_headers : h->json_headers);
        if (rc == CURLE_OK)
            rc = curl_easy_setopt(h->curl, CURLOPT_CUSTOMREQUEST, put ? "PUT" : NULL);
        return rc;
    }
    KV_ASSERT(body == NULL);
    rc = curl_easy_setopt(h->curl, CURLOPT_HTTPGET, 1L);
    if (rc == CURLE_OK)
        rc = curl_easy_setopt(h->curl, CURLOPT_HTTPHEADER, NULL);
    if (rc == CURLE_OK)
        rc = curl_easy_setopt(h->curl, CURLOPT_CUSTOMREQUEST, strcmp(method, "GET") == 0 ? NULL : method);
    return rc;
}

/* A failed transfer: what happened and what to do. */
static int transport_failure(struct cli_http *h, CURLcode rc, struct cli_resp *r)
{
    const char *why = h->errbuf[0] ? h->errbuf : curl_easy_strerror(rc);
    curl_off_t connect_us = 0;
    bool connected =
        curl_easy_getinfo(h->curl, CURLINFO_CONNECT_TIME_T, &connect_us) == CURLE_OK && connect_us > 0;
    if (rc == CURLE_WRITE_ERROR && h->sink_errno != 0)
        set_msg(r, "cannot write the output: %s", strerror(h->sink_errno));
    else if (rc == CURLE_WRITE_ERROR && h->too_large)
        set_msg(r, "the answer from %s is larger than %zu bytes; refusing it", h->base, CLI_RESP_BYTES_MAX);
    else if (rc == CURLE_OPERATION_TIMEDOUT && connected)
        set_msg(r,
                "the server at %s did not answer within %.1f s (raise --timeout, or check the server's load)",
                h->base, (double)h->timeout_ms / 1000.0);
    else if (connected)
        set_msg(r, "the connection to the server at %s failed: %s (is it still running?)", h->base, why);
    else
        set_msg(r, "cannot reach the server at %s: %s (is it running? set --server or TRIEKV_URL)", h->base,
                why);
    return CLI_SERVER;
}

/* The error code and message of a JSON error body, or of whatever else came. */
static void error_body(const struct cli_resp *r, char *code, size_t codelen, char *msg, size_t msglen)
{
    code[0] = 0;
    snprintf(msg, msglen, "the answer carries no triekv error (is it a triekv server?)");
    json_t *root = json_loadb((const char *)r->body.ptr, r->body.len, 0, NULL);
    const char *e = json_string_value(json_object_get(root, "error"));
    const char *m = json_string_value(json_object_get(root, "message"));
    if (e != NULL && m != NULL) {
        snprintf(code, codelen, "%s", e);
        snprintf(msg, msglen, "%s", m);
    }
    json_decref(root);
}

/* "this node is a read-only replica; send writes to the main at URL": the URL, or "" */
static void main_of(const char *msg, char *out, size_t outlen)
{
    static const char marker[] = "send writes to the main at ";
    const char *p = strstr(msg, marker);
    out[0] = 0;
    if (p == NULL)
        return;
    p += strlen(marker);
    size_t n = strcspn(p, " \t\r\n");
    while (n > 0 && (p[n - 1] == '.' || p[n - 1] == ';' || p[n - 1] == ','))
        n--;
    snprintf(out, outlen, "%.*s", (int)n, p);
}

/* The one table: an answer that is not 2xx → exit status and message. */
static int status_failure(struct cli_http *h, unsigned flags, struct cli_resp *r)
{
    char code[64], msg[CLI_MSG_MAX / 2], main_url[CLI_URL_MAX];
    error_body(r, code, sizeof code, msg, sizeof msg);
    long s = r->status;
    if (s == 404 && (flags & CLI_F_404_OK)) {
        set_msg(r, "not found");
        return CLI_NOT_FOUND;
    }
    if (s == 412) {
        set_msg(r, "precondition failed: %s", msg);
        return CLI_NOT_FOUND;
    }
    if (s == 400 || s == 413) {
        set_msg(r, "the server refused the request, nothing was changed: %s (%s)", msg,
                code[0] ? code : "HTTP");
        return CLI_USAGE;
    }
    if (s == 403 && strcmp(code, "read_only_replica") == 0) {
        main_of(msg, main_url, sizeof main_url);
        if (main_url[0])
            set_msg(r, "%s is a read-only replica; send writes to the main at %s (--server %s)", h->base,
                    main_url, main_url);
        else
            set_msg(r,
                    "%s is a read-only replica and does not know its main; send writes to the main "
                    "(--server URL), or set main_url on the replica",
                    h->base);
        return CLI_SERVER;
    }
    if (s == 503 && strcmp(code, "read_only") == 0) {
        set_msg(r, "the server at %s stopped taking writes after an I/O failure: %s (restart the node)",
                h->base, msg);
        return CLI_SERVER;
    }
    if (s >= 500) {
        set_msg(r, "the server at %s failed (HTTP %ld %s): %s", h->base, s, code[0] ? code : "-", msg);
        return CLI_SERVER;
    }
    set_msg(r, "unexpected answer from %s: HTTP %ld %s: %s", h->base, s, code[0] ? code : "-", msg);
    return CLI_SERVER;
}

int cli_http_call(struct cli_http *h, const char *method, const char *path, const void *body, size_t len,
                  FILE *sink, unsigned flags, struct cli_resp *resp)
{
    KV_ASSERT(path[0] == '/');
    resp->status = 0;
    resp->body.len = 0;
    resp->msg[0] = 0;
    h->resp = resp;
    h->sink = sink;
    h->sink_errno = 0;
    h->too_large = false;
    h->errbuf[0] = 0;
    h->url.len = 0;
    kv_buf_append_str(&h->url, h->base);
    kv_buf_append_str(&h->url, path);
    kv_buf_append_byte(&h->url, 0);
    CURLcode rc = set_method(h, method, body, len);
    if (rc != CURLE_OK) {
        set_msg(resp, "cannot set up the request: %s", curl_easy_strerror(rc));
        return CLI_SERVER;
    }
    rc = curl_easy_perform(h->curl);
    if (rc != CURLE_OK)
        return transport_failure(h, rc, resp);
    rc = curl_easy_getinfo(h->curl, CURLINFO_RESPONSE_CODE, &resp->status);
    if (rc != CURLE_OK) {
        set_msg(resp, "cannot read the answer's status: %s", curl_easy_strerror(rc));
        return CLI_SERVER;
    }
    if (resp->status >= 200 && resp->status < 300)
        return CLI_OK;
    return status_failure(h, flags, resp);
}

int cli_connect(struct cli *c)
{
    if (c->http != NULL)
        return CLI_OK;
    if (c->url[0] == 0)
        return cli_fail(CLI_USAGE, "%s", c->url_error);
    return cli_http_create(c->url, c->timeout_s, &c->http);
}

int cli_call(struct cli *c, const char *method, const char *path, const struct kv_buf *body, FILE *sink,
             unsigned flags, struct cli_resp *resp)
{
    int rc = cli_connect(c);
    if (rc != CLI_OK)
        return rc;
    rc = cli_http_call(c->http, method, path, body ? body->ptr : NULL, body ? body->len : 0, sink, flags,
                       resp);
    bool quiet = (rc == CLI_NOT_FOUND && (flags & CLI_F_404_OK) && resp->status == 404) ||
                 (rc != CLI_OK && (flags & CLI_F_413_QUIET) && resp->status == 413);
    if (rc != CLI_OK && !quiet)
        cli_fail(rc, "%s", resp->msg);
    return rc;
}

int cli_resp_json(const struct cli *c, const struct cli_resp *r, json_t **out)
{
    json_error_t je;
    *out = json_loadb((const char *)r->body.ptr, r->body.len, 0, &je);
    if (*out != NULL && json_is_object(*out))
        return CLI_OK;
    json_decref(*out);
    *out = NULL;
    return cli_fail(CLI_SERVER, "unexpected answer from %s: not a JSON object (%s); is it a triekv server?",
                    c->url, je.text[0] ? je.text : "wrong type");
}
