/* common/kv_config.c - see kv_config.h. JSON is parsed by jansson, strictly: duplicate keys are
 * refused, and the whole file must be one object. */
#include "common/kv_config.h"
#include "common/kv_assert.h"

#include <ctype.h>
#include <errno.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FIELD(cfg, k, type) ((type *)((char *)(cfg) + (k)->offset))

static int fail(char *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int fail(char *err, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, KV_CFG_ERR_MAX, fmt, ap);
    va_end(ap);
    return -1;
}

static bool name_eq(const char *a, const char *b)
{
    for (; *a && *b; a++, b++) {
        char x = *a == '-' ? '_' : *a, y = *b == '-' ? '_' : *b;
        if (x != y)
            return false;
    }
    return *a == *b;
}

const struct kv_cfg_key *kv_cfg_find(const struct kv_cfg_key *keys, const char *name)
{
    for (const struct kv_cfg_key *k = keys; k->name; k++) {
        if (name_eq(k->name, name))
            return k;
    }
    return NULL;
}

void kv_cfg_set_string(char **field, const char *value)
{
    free(*field);
    *field = value ? kv_strdup(value) : NULL;
}

static void strlist_free(struct kv_strlist *l)
{
    for (size_t i = 0; i < l->n; i++)
        free(l->v[i]);
    free(l->v);
    l->v = NULL;
    l->n = 0;
}

static void strlist_push(struct kv_strlist *l, const char *s)
{
    l->v = kv_realloc(l->v, (l->n + 1) * sizeof *l->v);
    l->v[l->n++] = kv_strdup(s);
}

static const char *type_word(const struct kv_cfg_key *k)
{
    switch (k->type) {
    case KV_CFG_INT:
        return "an integer";
    case KV_CFG_BOOL:
        return "true or false";
    case KV_CFG_STRING:
        return "a string";
    case KV_CFG_ENUM:
        return "one of the listed words";
    case KV_CFG_STRLIST:
        return "a list of strings";
    case KV_CFG_JSON:
        return "JSON";
    }
    return "?";
}

static int range_check(const struct kv_cfg_key *k, int64_t v, const char *source, char *err)
{
    if (v < k->min || v > k->max)
        return fail(err, "config: %s must be from %lld to %lld, got %lld", source, (long long)k->min,
                    (long long)k->max, (long long)v);
    return 0;
}

static int enum_check(const struct kv_cfg_key *k, const char *v, const char *source, char *err)
{
    char list[256] = "";
    for (const char *const *c = k->choices; *c; c++) {
        if (strcmp(*c, v) == 0)
            return 0;
        size_t n = strlen(list);
        snprintf(list + n, sizeof list - n, "%s%s", n ? ", " : "", *c);
    }
    return fail(err, "config: %s must be one of %s, got \"%s\"", source, list, v);
}

/* Applies one JSON value to key k. */
static int set_json(const struct kv_cfg_key *k, void *cfg, json_t *v, const char *source, char *err)
{
    switch (k->type) {
    case KV_CFG_INT: {
        /* the file is parsed with integers as doubles, so an integer too large for int64 still
         * reaches this check and its message names the key */
        double d = json_is_real(v)      ? json_real_value(v)
                   : json_is_integer(v) ? (double)json_integer_value(v)
                                        : 0.5;
        if (!json_is_number(v) || d != (double)(int64_t)d || d < -9.2e18 || d > 9.2e18) {
            if (json_is_number(v) && d == d && (d < (double)k->min || d > (double)k->max))
                return fail(err, "config: %s must be from %lld to %lld, got %.17g", source, (long long)k->min,
                            (long long)k->max, d);
            return fail(err, "config: %s must be %s", source, type_word(k));
        }
        if (range_check(k, (int64_t)d, source, err))
            return -1;
        *FIELD(cfg, k, int64_t) = (int64_t)d;
        return 0;
    }
    case KV_CFG_BOOL:
        if (!json_is_boolean(v))
            return fail(err, "config: %s must be true or false", source);
        *FIELD(cfg, k, bool) = json_is_true(v);
        return 0;
    case KV_CFG_STRING:
    case KV_CFG_ENUM:
        if (!json_is_string(v))
            return fail(err, "config: %s must be a string", source);
        if (k->type == KV_CFG_ENUM && enum_check(k, json_string_value(v), source, err))
            return -1;
        kv_cfg_set_string(FIELD(cfg, k, char *), json_string_value(v));
        return 0;
    case KV_CFG_STRLIST: {
        if (!json_is_array(v))
            return fail(err, "config: %s must be a list of strings", source);
        struct kv_strlist l = {0};
        size_t i;
        json_t *item;
        json_array_foreach(v, i, item)
        {
            if (!json_is_string(item)) {
                strlist_free(&l);
                return fail(err, "config: %s item %zu must be a string", source, i);
            }
            strlist_push(&l, json_string_value(item));
        }
        strlist_free(FIELD(cfg, k, struct kv_strlist));
        *FIELD(cfg, k, struct kv_strlist) = l;
        return 0;
    }
    case KV_CFG_JSON: {
        char *text = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
        KV_ASSERT(text != NULL);
        kv_cfg_set_string(FIELD(cfg, k, char *), text);
        free(text);
        return 0;
    }
    }
    return -1;
}

int kv_cfg_load_file(const struct kv_cfg_key *keys, void *cfg, const char *path, char *err)
{
    json_error_t je;
    json_t *root = json_load_file(path, JSON_REJECT_DUPLICATES | JSON_DECODE_INT_AS_REAL, &je);
    if (root == NULL) {
        if (je.line <= 0)
            return fail(err, "config: cannot read %s: %s", path, je.text);
        return fail(err, "config: %s line %d column %d: %s", path, je.line, je.column, je.text);
    }
    int rc = 0;
    if (!json_is_object(root)) {
        rc = fail(err, "config: %s must hold a JSON object", path);
        goto out;
    }
    const char *name;
    json_t *v;
    char source[300];
    json_object_foreach(root, name, v)
    {
        const struct kv_cfg_key *k = kv_cfg_find(keys, name);
        if (k == NULL || strcmp(k->name, name) != 0) {
            rc = fail(err, "config: unknown key '%s' in %s", name, path);
            goto out;
        }
        snprintf(source, sizeof source, "'%s' in %s", k->name, path);
        if (set_json(k, cfg, v, source, err) != 0) {
            rc = -1;
            goto out;
        }
    }
out:
    json_decref(root);
    return rc;
}

static int parse_int(const struct kv_cfg_key *k, const char *s, int64_t *out)
{
    if (*s == 0)
        return -1;
    errno = 0;
    char *end;
    long long v = strtoll(s, &end, 10);
    if (errno != 0 || end == s)
        return -1;
    int64_t mul = 1;
    if (*end && k->size_suffix && end[1] == 0) {
        switch (tolower((unsigned char)*end)) {
        case 'k':
            mul = 1024;
            break;
        case 'm':
            mul = 1024 * 1024;
            break;
        case 'g':
            mul = 1024 * 1024 * 1024;
            break;
        default:
            return -1;
        }
        end++;
    }
    if (*end != 0 || (v > 0 && v > INT64_MAX / mul) || (v < 0 && v < INT64_MIN / mul))
        return -1;
    *out = (int64_t)v * mul;
    return 0;
}

int kv_cfg_set_text(const struct kv_cfg_key *keys, void *cfg, const char *name, const char *value,
                    const char *source, char *err)
{
    const struct kv_cfg_key *k = kv_cfg_find(keys, name);
    if (k == NULL)
        return fail(err, "config: unknown key '%s' (%s)", name, source);
    switch (k->type) {
    case KV_CFG_INT: {
        int64_t v;
        if (parse_int(k, value, &v) != 0)
            return fail(err, "config: %s must be %s%s, got \"%s\"", source, type_word(k),
                        k->size_suffix ? " (k, m, g suffixes allowed)" : "", value);
        if (range_check(k, v, source, err))
            return -1;
        *FIELD(cfg, k, int64_t) = v;
        return 0;
    }
    case KV_CFG_BOOL:
        if (!strcmp(value, "true") || !strcmp(value, "1") || !strcmp(value, "yes"))
            *FIELD(cfg, k, bool) = true;
        else if (!strcmp(value, "false") || !strcmp(value, "0") || !strcmp(value, "no"))
            *FIELD(cfg, k, bool) = false;
        else
            return fail(err, "config: %s must be true or false, got \"%s\"", source, value);
        return 0;
    case KV_CFG_STRING:
    case KV_CFG_ENUM:
        if (k->type == KV_CFG_ENUM && enum_check(k, value, source, err))
            return -1;
        kv_cfg_set_string(FIELD(cfg, k, char *), value);
        return 0;
    case KV_CFG_JSON: {
        json_error_t je;
        json_t *j =
            json_loads(value, JSON_DECODE_ANY | JSON_REJECT_DUPLICATES | JSON_DECODE_INT_AS_REAL, &je);
        if (j == NULL)
            return fail(err, "config: %s must be JSON: %s", source, je.text);
        int rc = set_json(k, cfg, j, source, err);
        json_decref(j);
        return rc;
    }
    case KV_CFG_STRLIST: {
        if (value[0] == '[') { /* a JSON array */
            json_error_t je;
            json_t *j = json_loads(value, 0, &je);
            if (j == NULL)
                return fail(err, "config: %s: %s", source, je.text);
            int rc = set_json(k, cfg, j, source, err);
            json_decref(j);
            return rc;
        }
        struct kv_strlist l = {0};
        char *copy = kv_strdup(value), *save = NULL;
        for (char *t = strtok_r(copy, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
            while (isspace((unsigned char)*t))
                t++;
            size_t n = strlen(t);
            while (n && isspace((unsigned char)t[n - 1]))
                t[--n] = 0;
            if (n)
                strlist_push(&l, t);
        }
        free(copy);
        strlist_free(FIELD(cfg, k, struct kv_strlist));
        *FIELD(cfg, k, struct kv_strlist) = l;
        return 0;
    }
    }
    return -1;
}

int kv_cfg_load_env(const struct kv_cfg_key *keys, void *cfg, const char *prefix, char *err)
{
    for (const struct kv_cfg_key *k = keys; k->name; k++) {
        char var[128];
        size_t n = (size_t)snprintf(var, sizeof var, "%s", prefix);
        for (const char *p = k->name; *p && n + 1 < sizeof var; p++)
            var[n++] = (char)toupper((unsigned char)*p);
        var[n] = 0;
        const char *v = getenv(var);
        if (v && kv_cfg_set_text(keys, cfg, k->name, v, var, err) != 0)
            return -1;
    }
    return 0;
}

void kv_cfg_free(const struct kv_cfg_key *keys, void *cfg)
{
    for (const struct kv_cfg_key *k = keys; k->name; k++) {
        if (k->type == KV_CFG_STRING || k->type == KV_CFG_ENUM || k->type == KV_CFG_JSON)
            kv_cfg_set_string(FIELD(cfg, k, char *), NULL);
        else if (k->type == KV_CFG_STRLIST)
            strlist_free(FIELD(cfg, k, struct kv_strlist));
    }
}

void kv_cfg_print_help(const struct kv_cfg_key *keys, const void *defaults)
{
    for (const struct kv_cfg_key *k = keys; k->name; k++) {
        char flag[64], def[128] = "";
        snprintf(flag, sizeof flag, "--%s", k->name);
        for (char *p = flag; *p; p++)
            if (*p == '_')
                *p = '-';
        const void *d = defaults;
        switch (k->type) {
        case KV_CFG_INT:
            snprintf(def, sizeof def, "%lld", (long long)*FIELD(d, k, const int64_t));
            break;
        case KV_CFG_BOOL:
            snprintf(def, sizeof def, "%s", *FIELD(d, k, const bool) ? "true" : "false");
            break;
        case KV_CFG_STRING:
        case KV_CFG_ENUM: {
            const char *s = *FIELD(d, k, char *const);
            snprintf(def, sizeof def, "%s", s ? s : "");
            break;
        }
        case KV_CFG_STRLIST:
            snprintf(def, sizeof def, "%zu items", FIELD(d, k, const struct kv_strlist)->n);
            break;
        case KV_CFG_JSON: {
            const char *s = *FIELD(d, k, char *const);
            snprintf(def, sizeof def, "%.60s%s", s ? s : "none", s && strlen(s) > 60 ? "..." : "");
            break;
        }
        }
        printf("  %-26s %s (default: %s)\n", flag, k->help, def);
    }
}

int kv_cfg_load_args(const struct kv_cfg_key *keys, void *cfg, const struct kv_cfg_program *p, int argc,
                     char **argv, bool *check_only, char *err)
{
    const char *file = NULL;
    *check_only = false;
    for (int i = 1; i < argc; i++) { /* the file goes first, whatever its place on the line */
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            p->usage();
            return 1;
        }
        if (strcmp(argv[i], "--version") == 0) {
            printf("%s %s\n", p->name, p->version);
            return 1;
        }
        if (strcmp(argv[i], "--config") == 0 && i + 1 < argc)
            file = argv[++i];
        else if (strncmp(argv[i], "--config=", 9) == 0)
            file = argv[i] + 9;
    }
    if (file && kv_cfg_load_file(keys, cfg, file, err) != 0)
        return -1;
    if (kv_cfg_load_env(keys, cfg, p->env_prefix, err) != 0)
        return -1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--config") == 0) {
            if (i + 1 >= argc)
                return fail(err, "usage: --config needs a file (see --help)");
            i++;
            continue;
        }
        if (strcmp(a, "--check") == 0) {
            *check_only = true;
            continue;
        }
        if (strncmp(a, "--config=", 9) == 0)
            continue;
        if (strncmp(a, "--", 2) != 0)
            return fail(err, "usage: unexpected argument \"%s\" (see --help)", a);
        char name[64];
        const char *value;
        const char *eq = strchr(a, '=');
        if (eq) {
            snprintf(name, sizeof name, "%.*s", (int)(eq - a - 2), a + 2);
            value = eq + 1;
        } else {
            if (i + 1 >= argc)
                return fail(err, "usage: %s needs a value (see --help)", a);
            snprintf(name, sizeof name, "%s", a + 2);
            value = argv[++i];
        }
        if (kv_cfg_find(keys, name) == NULL)
            return fail(err, "usage: unknown option --%s (see --help)", name);
        char source[80];
        snprintf(source, sizeof source, "--%s", name);
        if (kv_cfg_set_text(keys, cfg, name, value, source, err) != 0)
            return -1;
    }
    return 0;
}

bool kv_cfg_http_url_ok(const char *u)
{
    size_t n = strlen(u);
    if (strncmp(u, "http://", 7) != 0 || n <= 7 || n > 512)
        return false;
    for (const char *p = u + 7; *p; p++) {
        if (*p <= ' ' || *p == '"' || *p == '\\' || *p == '?' || *p == '#')
            return false;
    }
    return u[7] != '/' && u[7] != ':';
}
