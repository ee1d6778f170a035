/* cli/cli_args.c - the command line of triekv-cli: an option iterator shared by every command (the
 * global options --server, --json and --timeout are accepted anywhere), number and URL parsing,
 * key lists, and the two ways a command reports a mistake.
 *
 * Owns nothing beyond the key lists it hands out. Threads: main thread only. Every loop is bounded
 * by the length of its input (argc, or the bytes of one argument). */
#include "cli/cli_int.h"
#include "common/kv_assert.h"
#include "common/kv_codec.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

enum { G_SERVER = 1000, G_JSON, G_TIMEOUT };

static const struct cli_opt global_opts[] = {
    {"--server", 1, G_SERVER},
    {"--json", 0, G_JSON},
    {"--timeout", 1, G_TIMEOUT},
    {NULL, 0, 0},
};

#define CLI_TIMEOUT_S_MIN 0.1
#define CLI_TIMEOUT_S_MAX 3600.0

static void vfail(const char *fmt, va_list ap, const char *tail)
{
    char msg[CLI_MSG_MAX];
    vsnprintf(msg, sizeof msg, fmt, ap);
    fprintf(stderr, "%s: %s%s\n", CLI_NAME, msg, tail);
}

int cli_fail(int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vfail(fmt, ap, "");
    va_end(ap);
    return code;
}

int cli_usage(const struct cli *c, const char *fmt, ...)
{
    char tail[96];
    if (c->cmd != NULL)
        snprintf(tail, sizeof tail, " (see %s %s --help)", CLI_NAME, c->cmd->name);
    else
        snprintf(tail, sizeof tail, " (see %s --help)", CLI_NAME);
    va_list ap;
    va_start(ap, fmt);
    vfail(fmt, ap, tail);
    va_end(ap);
    return CLI_USAGE;
}

/* ---- options ------------------------------------------------------------------------------------ */

static const struct cli_opt *find_opt(const struct cli_opt *opts, const char *w, size_t len)
{
    for (size_t i = 0; opts != NULL && opts[i].name != NULL; i++)
        if (strlen(opts[i].name) == len && memcmp(opts[i].name, w, len) == 0)
            return &opts[i];
    return NULL;
}

static int apply_global(struct cli *c, int id, const char *v)
{
    char why[CLI_MSG_MAX / 2];
    switch (id) {
    case G_SERVER:
        if (cli_url_normalize(v, c->url, sizeof c->url, why, sizeof why) != 0)
            return cli_usage(c, "--server %s: %s", v, why);
        return CLI_OK;
    case G_JSON:
        c->json = true;
        return CLI_OK;
    default:
        KV_ASSERT(id == G_TIMEOUT);
        return cli_parse_seconds(c, "--timeout", v, CLI_TIMEOUT_S_MIN, CLI_TIMEOUT_S_MAX, &c->timeout_s);
    }
}

int cli_args_next(struct cli *c, struct cli_args *a, const struct cli_opt *opts, const char *val[2])
{
    while (a->i < a->argc) {
        const char *w = a->argv[a->i++];
        val[0] = val[1] = NULL;
        if (a->only_positional || w[0] != '-' || w[1] == 0) {
            val[0] = w;
            return CLI_ARG_POS;
        }
        if (strcmp(w, "--") == 0) {
            a->only_positional = true;
            continue;
        }
        if (strcmp(w, "--help") == 0 || strcmp(w, "-h") == 0)
            return CLI_ARG_HELP;
        const char *eq = strncmp(w, "--", 2) == 0 ? strchr(w, '=') : NULL;
        size_t nlen = eq != NULL ? (size_t)(eq - w) : strlen(w);
        bool global = false;
        const struct cli_opt *o = find_opt(opts, w, nlen);
        if (o == NULL) {
            o = find_opt(global_opts, w, nlen);
            global = true;
        }
        if (o == NULL) {
            cli_usage(c, "unknown option %.*s", (int)nlen, w);
            return CLI_ARG_ERR;
        }
        if (eq != NULL && o->nargs != 1) {
            cli_usage(c, "%s takes %s, not %s", o->name, o->nargs ? "two values" : "no value", w);
            return CLI_ARG_ERR;
        }
        if (eq != NULL)
            val[0] = eq + 1;
        for (int k = 0; eq == NULL && k < o->nargs; k++) {
            if (a->i >= a->argc) {
                cli_usage(c, "%s needs %s", o->name, o->nargs == 1 ? "a value" : "two values");
                return CLI_ARG_ERR;
            }
            val[k] = a->argv[a->i++];
        }
        if (!global)
            return o->id;
        if (apply_global(c, o->id, val[0]) != CLI_OK)
            return CLI_ARG_ERR;
    }
    return CLI_ARG_END;
}

int cli_args_collect(struct cli *c, int argc, char **argv, const struct cli_opt *opts, int flag_id,
                     bool *flag, const char *none_msg, struct cli_word **words, size_t *n)
{
    struct cli_args a = {.argc = argc, .argv = argv};
    struct cli_word w;
    *words = kv_calloc((size_t)argc + 1, sizeof **words); /* an argument gives at most one word */
    *n = 0;
    while ((w.id = cli_args_next(c, &a, opts, w.val)) != CLI_ARG_END) {
        if (w.id == CLI_ARG_HELP || w.id == CLI_ARG_ERR)
            return w.id == CLI_ARG_HELP ? CLI_HELP : CLI_USAGE;
        if (w.id == flag_id)
            *flag = true;
        else
            (*words)[(*n)++] = w;
    }
    return *n > 0 ? CLI_OK : cli_usage(c, "%s", none_msg);
}

/* ---- numbers ------------------------------------------------------------------------------------- */

int cli_parse_u64(const struct cli *c, const char *name, const char *text, uint64_t min, uint64_t max,
                  uint64_t *out)
{
    uint64_t v = 0;
    bool ok = text[0] != 0 && strlen(text) <= 20;
    for (const char *p = text; ok && *p; p++) {
        ok = *p >= '0' && *p <= '9' && v <= (UINT64_MAX - 9) / 10;
        v = v * 10 + (uint64_t)(*p - '0');
    }
    if (!ok || v < min || v > max)
        return cli_usage(c, "%s must be a whole number from %llu to %llu, not '%s'", name,
                         (unsigned long long)min, (unsigned long long)max, text);
    *out = v;
    return CLI_OK;
}

int cli_parse_seconds(const struct cli *c, const char *name, const char *text, double min, double max,
                      double *out)
{
    char *end = NULL;
    errno = 0;
    double v = strtod(text, &end);
    if (text[0] == 0 || isspace((unsigned char)text[0]) || *end != 0 || errno != 0 || !isfinite(v) ||
        v < min || v > max)
        return cli_usage(c, "%s must be a number of seconds from %g to %g, not '%s'", name, min, max, text);
    *out = v;
    return CLI_OK;
}

/* ---- server URL ------------------------------------------------------------------------------------ */

static bool host_char(char ch)
{
    return isalnum((unsigned char)ch) || ch == '.' || ch == '-' || ch == '_';
}

int cli_url_normalize(const char *in, char *out, size_t outlen, char *why, size_t whylen)
{
    const char *rest = in;
    if (strncasecmp(in, "http://", 7) == 0) {
        rest = in + 7;
    } else if (strncasecmp(in, "https://", 8) == 0) {
        snprintf(why, whylen, "triekv speaks plain http, not https");
        return -1;
    } else if (strstr(in, "://") != NULL) {
        snprintf(why, whylen, "expected http://HOST[:PORT]");
        return -1;
    }
    size_t len = strlen(rest);
    if (len > 0 && rest[len - 1] == '/')
        len--;
    size_t h = 0;
    if (len > 0 && rest[0] == '[') { /* [IPv6] */
        while (h < len && rest[h] != ']')
            h++;
        if (h == len || h == 1) {
            snprintf(why, whylen, "an IPv6 address needs its closing ']'");
            return -1;
        }
        h++;
    } else {
        while (h < len && host_char(rest[h]))
            h++;
    }
    if (h == 0) {
        snprintf(why, whylen, "expected http://HOST[:PORT]");
        return -1;
    }
    size_t p = h;
    if (p < len && rest[p] == ':') {
        uint64_t port = 0;
        size_t digits = 0;
        for (p++; p < len && rest[p] >= '0' && rest[p] <= '9' && digits < 6; p++, digits++)
            port = port * 10 + (uint64_t)(rest[p] - '0');
        if (digits == 0 || port < 1 || port > 65535) {
            snprintf(why, whylen, "the port must be a number from 1 to 65535");
            return -1;
        }
    }
    if (p != len) {
        snprintf(why, whylen, "expected http://HOST[:PORT] with no path, query or user name");
        return -1;
    }
    if ((size_t)snprintf(out, outlen, "http://%.*s", (int)len, rest) >= outlen) {
        snprintf(why, whylen, "the URL is too long");
        return -1;
    }
    return 0;
}

/* ---- key lists ------------------------------------------------------------------------------------- */

void cli_keys_free(struct cli_keys *k)
{
    for (size_t i = 0; i < k->n; i++)
        kv_buf_free(&k->v[i]);
    free(k->v);
    memset(k, 0, sizeof *k);
}

void cli_keys_push(struct cli_keys *k, const void *p, size_t len)
{
    if (k->n == k->cap) {
        k->cap = k->cap ? k->cap * 2 : 16;
        k->v = kv_realloc(k->v, k->cap * sizeof *k->v);
    }
    memset(&k->v[k->n], 0, sizeof k->v[k->n]);
    kv_buf_append(&k->v[k->n], p, len);
    k->n++;
}

static int add_key(const struct cli *c, const char *p, size_t len, bool b64, struct cli_keys *k)
{
    if (k->n >= CLI_KEYS_MAX)
        return cli_usage(c, "more than %d keys in one command", CLI_KEYS_MAX);
    if (len == 0)
        return cli_usage(c, "a key is empty (keys are 1 byte or longer)");
    if (!b64) {
        cli_keys_push(k, p, len);
        return CLI_OK;
    }
    struct kv_buf raw = {0};
    if (kv_base64_decode(p, len, &raw) != 0 || raw.len == 0) {
        kv_buf_free(&raw);
        return cli_usage(c, "key '%.*s' is not valid base64 of 1 byte or more (--base64)", (int)len, p);
    }
    cli_keys_push(k, raw.ptr, raw.len);
    kv_buf_free(&raw);
    return CLI_OK;
}

int cli_keys_split(const struct cli *c, const char *list, bool b64, struct cli_keys *k)
{
    const char *p = list;
    for (;;) {
        size_t n = strcspn(p, ",");
        int rc = add_key(c, p, n, b64, k);
        if (rc != CLI_OK)
            return rc;
        if (p[n] == 0)
            return CLI_OK;
        p += n + 1;
    }
}

int cli_keys_add_one(const struct cli *c, const char *key, bool b64, struct cli_keys *k)
{
    return add_key(c, key, strlen(key), b64, k);
}
