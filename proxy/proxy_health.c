/* proxy/proxy_health.c - the health-check thread.
 *
 * Every health_check_interval_ms, GET /health goes to every backend at once (libcurl multi, each
 * backend with its own keep-alive handle), and the round ends when all have answered or
 * health_check_timeout_ms passed. A backend is up when it answered 200; a main is also down when
 * it says it is not a main (its writes would be refused). Each change is logged once. Requests
 * mark a backend down on their own when they cannot reach it, and up when it answers; the checks
 * are what bring a down backend back. Between rounds the thread sleeps on a condition variable, so
 * stopping it is immediate. */
#include "proxy/proxy_int.h"
#include "common/kv_assert.h"
#include "common/kv_log.h"
#include "common/kv_time.h"

#include <curl/curl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define HEALTH_BODY_MAX 4096

struct check {
    struct proxy_backend *b;
    CURL *curl;
    char url[PROXY_URL_MAX + 16];
    char body[HEALTH_BODY_MAX];
    size_t len;
    bool overflow;
};

struct health {
    struct proxy *px;
    CURLM *multi;
    struct check *checks;
    size_t n;
};

static struct health hc; /* the one health-check state of the process */

static size_t on_data(char *p, size_t size, size_t n, void *arg)
{
    struct check *c = arg;
    size_t len = size * n;
    if (c->len + len >= sizeof c->body) {
        c->overflow = true;
        len = sizeof c->body - 1 - c->len;
    }
    memcpy(c->body + c->len, p, len);
    c->len += len;
    c->body[c->len] = 0;
    return size * n;
}

/* The outcome of one check: up, or why not. */
static bool judge(struct check *c, CURLcode rc, char *why, size_t cap, char *role, size_t role_cap)
{
    role[0] = 0;
    if (rc != CURLE_OK) {
        snprintf(why, cap, "health check: %s", curl_easy_strerror(rc));
        return false;
    }
    long status = 0;
    curl_easy_getinfo(c->curl, CURLINFO_RESPONSE_CODE, &status);
    json_error_t je;
    json_t *j = c->overflow ? NULL : json_loadb(c->body, c->len, 0, &je);
    const char *r = json_string_value(json_object_get(j, "role"));
    if (r)
        snprintf(role, role_cap, "%s", r);
    bool up = status == 200;
    if (!up) {
        const char *msg = json_string_value(json_object_get(j, "message"));
        const char *st = json_string_value(json_object_get(j, "status"));
        snprintf(why, cap, "health check: HTTP %ld%s%s", status, msg || st ? ": " : "",
                 msg  ? msg
                 : st ? st
                      : "");
    } else if (c->b->role == PROXY_MAIN && r && strcmp(r, "main") != 0) {
        snprintf(why, cap, "configured as the main, but it says it is a %s: writes would be refused", r);
        up = false;
    }
    json_decref(j);
    return up;
}

static void record(struct check *c, bool up, const char *why, const char *role)
{
    struct proxy_backend *b = c->b;
    uint64_t now = kv_now_ms();
    atomic_fetch_add(&b->checks, 1);
    atomic_store(&b->last_check_ms, now);
    pthread_mutex_lock(&b->mu);
    if (role[0])
        snprintf(b->reported_role, sizeof b->reported_role, "%s", role);
    if (!up)
        snprintf(b->last_error, sizeof b->last_error, "%s", why);
    pthread_mutex_unlock(&b->mu);
    if (up) {
        atomic_store(&b->last_ok_ms, now);
        if (!atomic_exchange(&b->up, true))
            kv_log_info(PROXY_COMPONENT, "%s (%s of shard '%s') is up", b->url,
                        b->role == PROXY_MAIN ? "main" : "replica", b->shard->name);
    } else {
        atomic_fetch_add(&b->checks_failed, 1);
        if (atomic_exchange(&b->up, false) || atomic_load(&b->checks) == 1)
            kv_log_warn(PROXY_COMPONENT, "%s (%s of shard '%s') is down: %s", b->url,
                        b->role == PROXY_MAIN ? "main" : "replica", b->shard->name, why);
    }
}

/* One round: every backend checked at once; returns when all answered or the timeout passed. */
static void round_run(struct health *h)
{
    for (size_t i = 0; i < h->n; i++) {
        h->checks[i].len = 0;
        h->checks[i].overflow = false;
        h->checks[i].body[0] = 0;
        curl_multi_add_handle(h->multi, h->checks[i].curl);
    }
    int running = (int)h->n;
    uint64_t deadline = kv_now_ms() + (uint64_t)h->px->cfg.health_check_timeout_ms + 200;
    while (running > 0 && kv_now_ms() < deadline) {
        if (curl_multi_perform(h->multi, &running) != CURLM_OK)
            break;
        if (running > 0)
            curl_multi_poll(h->multi, NULL, 0, 50, NULL);
    }
    CURLMsg *msg;
    int left;
    bool *done = kv_calloc(h->n, sizeof *done);
    while ((msg = curl_multi_info_read(h->multi, &left)) != NULL) {
        if (msg->msg != CURLMSG_DONE)
            continue;
        for (size_t i = 0; i < h->n; i++) {
            if (h->checks[i].curl != msg->easy_handle)
                continue;
            char why[160], role[16];
            bool up = judge(&h->checks[i], msg->data.result, why, sizeof why, role, sizeof role);
            record(&h->checks[i], up, why, role);
            done[i] = true;
        }
    }
    for (size_t i = 0; i < h->n; i++) {
        if (!done[i]) /* the multi loop itself gave out: count it as a timeout */
            record(&h->checks[i], false, "health check: no answer in time", "");
        curl_multi_remove_handle(h->multi, h->checks[i].curl);
    }
    free(done);
    atomic_fetch_add(&h->px->health_rounds, 1);
}

static void *health_main(void *arg)
{
    struct proxy *px = arg;
    pthread_mutex_lock(&px->hk_mu);
    while (!px->hk_stop) {
        struct timespec dl = kv_deadline_after_ms((uint64_t)px->cfg.health_check_interval_ms);
        while (!px->hk_stop && pthread_cond_timedwait(&px->hk_cv, &px->hk_mu, &dl) == 0) {
        }
        if (px->hk_stop)
            break;
        pthread_mutex_unlock(&px->hk_mu);
        round_run(&hc);
        pthread_mutex_lock(&px->hk_mu);
    }
    pthread_mutex_unlock(&px->hk_mu);
    return NULL;
}

int proxy_health_start(struct proxy *px, char *err, size_t errlen)
{
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        snprintf(err, errlen, "cannot initialise libcurl");
        return -1;
    }
    hc.px = px;
    hc.n = px->map.nbackends;
    hc.multi = curl_multi_init();
    hc.checks = kv_calloc(hc.n, sizeof *hc.checks);
    KV_ASSERT(hc.multi != NULL);
    for (size_t i = 0; i < hc.n; i++) {
        struct check *c = &hc.checks[i];
        c->b = px->map.backends[i];
        snprintf(c->url, sizeof c->url, "%s/health", c->b->url);
        c->curl = curl_easy_init();
        KV_ASSERT(c->curl != NULL);
        curl_easy_setopt(c->curl, CURLOPT_URL, c->url);
        curl_easy_setopt(c->curl, CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(c->curl, CURLOPT_TIMEOUT_MS, (long)px->cfg.health_check_timeout_ms);
        curl_easy_setopt(c->curl, CURLOPT_CONNECTTIMEOUT_MS, (long)px->cfg.health_check_timeout_ms);
        curl_easy_setopt(c->curl, CURLOPT_WRITEFUNCTION, on_data);
        curl_easy_setopt(c->curl, CURLOPT_WRITEDATA, c);
        curl_easy_setopt(c->curl, CURLOPT_USERAGENT, "triekv-proxy/" PROXY_VERSION);
    }
    pthread_mutex_init(&px->hk_mu, NULL);
    kv_cond_init(&px->hk_cv);
    round_run(&hc); /* the first requests know which backends are down */
    if (pthread_create(&px->hk_thread, NULL, health_main, px) != 0) {
        snprintf(err, errlen, "cannot start the health-check thread");
        return -1;
    }
    return 0;
}

void proxy_health_stop(struct proxy *px)
{
    pthread_mutex_lock(&px->hk_mu);
    px->hk_stop = true;
    pthread_cond_signal(&px->hk_cv);
    pthread_mutex_unlock(&px->hk_mu);
    pthread_join(px->hk_thread, NULL);
    pthread_cond_destroy(&px->hk_cv);
    pthread_mutex_destroy(&px->hk_mu);
    for (size_t i = 0; i < hc.n; i++)
        curl_easy_cleanup(hc.checks[i].curl);
    curl_multi_cleanup(hc.multi);
    free(hc.checks);
    memset(&hc, 0, sizeof hc);
    curl_global_cleanup();
}
