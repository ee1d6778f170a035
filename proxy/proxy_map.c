/* proxy/proxy_map.c - the shard map: which shard owns which keys, and the backends behind each.
 *
 * The map is a JSON array of shards, each {"name", "start", "end", "main", "replicas"}. Bounds are
 * percent-encoded bytes (as keys are in URLs: "%ff" is the byte 0xff, "%25" a '%'); "start" is
 * inclusive, "end" exclusive, and null or absent for the last shard. Sorted by start, the shards
 * must cover the whole key space: the first starts at "", each ends where the next starts, the
 * last has no end. Anything else (a gap, an overlap, an empty range, a duplicate name or backend)
 * is refused at start-up with a message naming the shards involved.
 *
 * Lookups are a binary search over the starts; the map never changes after start-up. */
#include "proxy/proxy_int.h"
#include "common/kv_assert.h"
#include "common/kv_codec.h"

#include <arpa/inet.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int fail(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int fail(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    return -1;
}

void proxy_bound_text(const struct kv_buf *b, bool present, char *out, size_t cap)
{
    if (!present) {
        snprintf(out, cap, "the end of the key space");
        return;
    }
    size_t n = 0;
    out[n++] = '"';
    for (size_t i = 0; i < b->len && n + 6 < cap; i++) {
        uint8_t c = b->ptr[i];
        if (c >= 0x20 && c < 0x7f && c != '%' && c != '"')
            out[n++] = (char)c;
        else
            n += (size_t)snprintf(out + n, cap - n, "%%%02x", c);
    }
    if (n + 2 > cap)
        n = cap - 2;
    out[n++] = '"';
    out[n] = 0;
}

static int bound_cmp(const struct kv_buf *a, const struct kv_buf *b)
{
    return kv_slice_cmp(kv_slice_make(a->ptr, a->len), kv_slice_make(b->ptr, b->len));
}

static bool name_ok(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n >= PROXY_SHARD_NAME_MAX)
        return false;
    for (const char *p = s; *p; p++) {
        char c = *p;
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
              c == '_' || c == '.'))
            return false;
    }
    return true;
}

/* A backend from its URL: http://host[:port] with no path. */
static int backend_make(struct proxy_map *m, struct proxy_shard *s, enum proxy_role role, const char *url,
                        char *err, size_t errlen)
{
    h2o_url_t u;
    size_t len = strlen(url);
    while (len > 0 && url[len - 1] == '/')
        len--;
    char clean[PROXY_URL_MAX];
    if (len == 0 || len >= sizeof clean)
        return fail(err, errlen, "config: shard '%s': backend URL \"%s\" is empty or too long", s->name, url);
    memcpy(clean, url, len);
    clean[len] = 0;
    if (!kv_cfg_http_url_ok(clean) || h2o_url_parse(clean, len, &u) != 0 ||
        u.scheme != &H2O_URL_SCHEME_HTTP ||
        !(u.path.len == 0 || (u.path.len == 1 && u.path.base[0] == '/')) || u.host.len == 0)
        return fail(err, errlen, "config: shard '%s': backend URL \"%s\" must be http://host:port (no path)",
                    s->name, url);
    for (size_t i = 0; i < m->nbackends; i++) {
        if (strcmp(m->backends[i]->url, clean) == 0)
            return fail(err, errlen, "config: backend %s is listed twice (shard '%s' and shard '%s')", clean,
                        m->backends[i]->shard->name, s->name);
    }
    if (m->nbackends == PROXY_BACKENDS_MAX)
        return fail(err, errlen, "config: more than %d backends", PROXY_BACKENDS_MAX);
    struct proxy_backend *b = kv_calloc(1, sizeof *b);
    snprintf(b->url, sizeof b->url, "%s", clean);
    snprintf(b->authority, sizeof b->authority, "%.*s", (int)u.authority.len, u.authority.base);
    h2o_iovec_t host = u.host;
    if (host.len >= 2 && host.base[0] == '[' && host.base[host.len - 1] == ']')
        host = h2o_iovec_init(host.base + 1, host.len - 2);
    snprintf(b->host, sizeof b->host, "%.*s", (int)host.len, host.base);
    snprintf(b->port, sizeof b->port, "%u", (unsigned)h2o_url_get_port(&u));
    struct sockaddr_in *a4 = (struct sockaddr_in *)&b->addr;
    struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)&b->addr;
    if (inet_pton(AF_INET, b->host, &a4->sin_addr) == 1) { /* numeric: no resolving at connect time */
        a4->sin_family = AF_INET;
        a4->sin_port = htons(h2o_url_get_port(&u));
        b->addr_len = sizeof *a4;
    } else if (inet_pton(AF_INET6, b->host, &a6->sin6_addr) == 1) {
        a6->sin6_family = AF_INET6;
        a6->sin6_port = htons(h2o_url_get_port(&u));
        b->addr_len = sizeof *a6;
    }
    b->idx = m->nbackends;
    b->shard = s;
    b->role = role;
    pthread_mutex_init(&b->mu, NULL);
    atomic_init(&b->up, true); /* until the first check says otherwise */
    m->backends[m->nbackends++] = b;
    if (role == PROXY_MAIN)
        s->main = b;
    else
        s->replicas[s->nreplicas++] = b;
    return 0;
}

/* A bound from its JSON: a percent-encoded string. */
static int bound_of(json_t *v, const char *shard, const char *what, size_t max_key, struct kv_buf *out,
                    char *err, size_t errlen)
{
    if (!json_is_string(v))
        return fail(err, errlen, "config: shard '%s': '%s' must be a string (percent-encoded bytes)", shard,
                    what);
    if (kv_percent_decode(json_string_value(v), json_string_length(v), false, out) != KV_OK)
        return fail(err, errlen, "config: shard '%s': '%s' has a malformed %%-escape", shard, what);
    if (out->len > max_key)
        return fail(err, errlen,
                    "config: shard '%s': '%s' has %zu bytes, longer than any key (max_key_size %zu)", shard,
                    what, out->len, max_key);
    return 0;
}

static int shard_of(struct proxy_map *m, struct proxy_shard *s, json_t *o, size_t idx, size_t max_key,
                    char *err, size_t errlen)
{
    if (!json_is_object(o))
        return fail(err, errlen, "config: 'shards' item %zu must be an object", idx);
    const char *key;
    json_t *v;
    json_object_foreach(o, key, v)
    {
        if (strcmp(key, "name") && strcmp(key, "start") && strcmp(key, "end") && strcmp(key, "main") &&
            strcmp(key, "replicas"))
            return fail(err, errlen,
                        "config: 'shards' item %zu: unknown key '%s' (name, start, end, main, replicas)", idx,
                        key);
    }
    json_t *name = json_object_get(o, "name");
    if (!json_is_string(name) || !name_ok(json_string_value(name)))
        return fail(err, errlen,
                    "config: 'shards' item %zu: 'name' must be 1 to %d letters, digits, '-', '_' or '.'", idx,
                    PROXY_SHARD_NAME_MAX - 1);
    snprintf(s->name, sizeof s->name, "%s", json_string_value(name));
    json_t *start = json_object_get(o, "start");
    if (start == NULL)
        return fail(err, errlen, "config: shard '%s': 'start' is missing (\"\" for the first shard)",
                    s->name);
    if (bound_of(start, s->name, "start", max_key, &s->start, err, errlen) != 0)
        return -1;
    json_t *end = json_object_get(o, "end");
    s->has_end = end != NULL && !json_is_null(end);
    if (s->has_end && bound_of(end, s->name, "end", max_key, &s->end, err, errlen) != 0)
        return -1;
    if (s->has_end && bound_cmp(&s->start, &s->end) >= 0) {
        char a[128], b[128];
        proxy_bound_text(&s->start, true, a, sizeof a);
        proxy_bound_text(&s->end, true, b, sizeof b);
        return fail(err, errlen, "config: shard '%s' is empty: its start %s is not below its end %s", s->name,
                    a, b);
    }
    json_t *main = json_object_get(o, "main");
    if (!json_is_string(main))
        return fail(err, errlen, "config: shard '%s': 'main' must be the main's URL", s->name);
    if (backend_make(m, s, PROXY_MAIN, json_string_value(main), err, errlen) != 0)
        return -1;
    json_t *reps = json_object_get(o, "replicas");
    if (reps != NULL && !json_is_array(reps))
        return fail(err, errlen, "config: shard '%s': 'replicas' must be a list of URLs", s->name);
    if (reps && json_array_size(reps) > PROXY_REPLICAS_MAX)
        return fail(err, errlen, "config: shard '%s': at most %d replicas", s->name, PROXY_REPLICAS_MAX);
    size_t i;
    json_t *r;
    json_array_foreach(reps, i, r)
    {
        if (!json_is_string(r))
            return fail(err, errlen, "config: shard '%s': 'replicas' item %zu must be a URL", s->name, i);
        if (backend_make(m, s, PROXY_REPLICA, json_string_value(r), err, errlen) != 0)
            return -1;
    }
    return 0;
}

static int shard_cmp(const void *a, const void *b)
{
    const struct proxy_shard *x = a, *y = b;
    return bound_cmp(&x->start, &y->start);
}

/* The shards, sorted, must tile the key space. */
static int check_cover(const struct proxy_map *m, char *err, size_t errlen)
{
    char a[128], b[128];
    if (m->shards[0].start.len != 0) {
        proxy_bound_text(&m->shards[0].start, true, a, sizeof a);
        return fail(err, errlen,
                    "config: keys below %s belong to no shard: the first shard ('%s') must start at \"\"", a,
                    m->shards[0].name);
    }
    for (size_t i = 0; i < m->n; i++) {
        const struct proxy_shard *s = &m->shards[i];
        for (size_t j = 0; j < i; j++) {
            if (strcmp(m->shards[j].name, s->name) == 0)
                return fail(err, errlen, "config: two shards are named '%s'", s->name);
        }
        if (i + 1 == m->n) {
            if (s->has_end) {
                proxy_bound_text(&s->end, true, a, sizeof a);
                return fail(err, errlen,
                            "config: keys from %s on belong to no shard: the last shard ('%s') must "
                            "have no end (null)",
                            a, s->name);
            }
            break;
        }
        const struct proxy_shard *next = &m->shards[i + 1];
        proxy_bound_text(&next->start, true, b, sizeof b);
        if (!s->has_end)
            return fail(err, errlen,
                        "config: shards '%s' and '%s' overlap: '%s' has no end, and '%s' starts at %s",
                        s->name, next->name, s->name, next->name, b);
        int c = bound_cmp(&s->end, &next->start);
        proxy_bound_text(&s->end, true, a, sizeof a);
        if (c < 0)
            return fail(err, errlen,
                        "config: keys from %s to %s belong to no shard (a gap between '%s' and '%s')", a, b,
                        s->name, next->name);
        if (c > 0)
            return fail(err, errlen,
                        "config: shards '%s' and '%s' overlap: '%s' ends at %s, after '%s' starts at %s",
                        s->name, next->name, s->name, a, next->name, b);
    }
    return 0;
}

int proxy_map_build(struct proxy_map *m, const char *text, size_t max_key, char *err, size_t errlen)
{
    memset(m, 0, sizeof *m);
    json_error_t je;
    json_t *arr = json_loads(text, JSON_REJECT_DUPLICATES, &je);
    int rc = 0;
    if (arr == NULL)
        return fail(err, errlen, "config: 'shards' is not valid JSON: %s", je.text);
    size_t n = json_is_array(arr) ? json_array_size(arr) : 0;
    if (n == 0 || n > PROXY_SHARDS_MAX) {
        rc = fail(err, errlen, "config: 'shards' must be a list of 1 to %d shards", PROXY_SHARDS_MAX);
        goto out;
    }
    m->shards = kv_calloc(n, sizeof *m->shards);
    m->backends = kv_calloc(PROXY_BACKENDS_MAX, sizeof *m->backends);
    for (size_t i = 0; i < n && rc == 0; i++) {
        rc = shard_of(m, &m->shards[i], json_array_get(arr, i), i, max_key, err, errlen);
        m->n = i + 1;
    }
    if (rc != 0)
        goto out;
    /* sorting moves the shards: the backends' back pointers follow */
    qsort(m->shards, m->n, sizeof *m->shards, shard_cmp);
    for (size_t i = 0; i < m->n; i++) {
        m->shards[i].main->shard = &m->shards[i];
        for (size_t k = 0; k < m->shards[i].nreplicas; k++)
            m->shards[i].replicas[k]->shard = &m->shards[i];
    }
    rc = check_cover(m, err, errlen);
out:
    json_decref(arr);
    if (rc != 0)
        proxy_map_free(m);
    return rc;
}

void proxy_map_free(struct proxy_map *m)
{
    for (size_t i = 0; i < m->nbackends; i++) {
        pthread_mutex_destroy(&m->backends[i]->mu);
        free(m->backends[i]);
    }
    for (size_t i = 0; i < m->n; i++) {
        kv_buf_free(&m->shards[i].start);
        kv_buf_free(&m->shards[i].end);
    }
    free(m->backends);
    free(m->shards);
    memset(m, 0, sizeof *m);
}

struct proxy_shard *proxy_map_find(const struct proxy_map *m, const uint8_t *key, size_t len)
{
    size_t lo = 1, hi = m->n; /* the last shard whose start is <= key; shard 0 starts at "" */
    struct kv_slice k = kv_slice_make(key, len);
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        const struct proxy_shard *s = &m->shards[mid];
        if (kv_slice_cmp(kv_slice_make(s->start.ptr, s->start.len), k) <= 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return &m->shards[lo - 1];
}

bool proxy_shard_overlaps(const struct proxy_shard *s, const uint8_t *lo, size_t lo_len, const uint8_t *hi,
                          size_t hi_len, bool has_hi)
{
    struct kv_slice start = kv_slice_make(s->start.ptr, s->start.len),
                    end = kv_slice_make(s->end.ptr, s->end.len);
    struct kv_slice l = kv_slice_make(lo, lo_len), h = kv_slice_make(hi, hi_len);
    if (has_hi && kv_slice_cmp(start, h) >= 0)
        return false; /* the shard starts at or past the range's end */
    if (s->has_end && kv_slice_cmp(l, end) >= 0)
        return false; /* the range starts at or past the shard's end */
    return !has_hi || kv_slice_cmp(l, h) < 0;
}

size_t proxy_read_order(struct proxy_shard *s, struct proxy_backend **out)
{
    size_t n = 0;
    uint32_t first = s->nreplicas ? atomic_fetch_add_explicit(&s->next_replica, 1, memory_order_relaxed) : 0;
    for (size_t i = 0; i < s->nreplicas; i++) {
        struct proxy_backend *b = s->replicas[(first + i) % s->nreplicas];
        if (atomic_load_explicit(&b->up, memory_order_relaxed))
            out[n++] = b;
    }
    out[n++] = s->main;
    for (size_t i = 0; i < s->nreplicas; i++) {
        struct proxy_backend *b = s->replicas[(first + i) % s->nreplicas];
        if (!atomic_load_explicit(&b->up, memory_order_relaxed))
            out[n++] = b;
    }
    return n;
}
