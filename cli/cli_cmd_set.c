/* cli/cli_cmd_set.c - `set`: write keys in one atomic batch (POST /bulk?encoding=base64), all or none.
 *
 * Items come from KEY=VALUE[,KEY=VALUE...] words and from --kv KEY VALUE (taken whole, so either may
 * hold ',' or '='). A value written @PATH is the bytes of that file and - is the bytes of stdin (read
 * once). With --base64 the keys and inline values are base64 text, decoded here; file and stdin
 * values are always raw bytes. Keys and values always travel base64 on the wire, so any bytes work.
 * The client checks what it can know (a missing '=', an empty key, a key given twice, unreadable
 * files) before sending; the server checks the rest (key and value limits) and refuses the whole
 * batch when one item is bad. Threads: main thread only. */
#include "cli/cli_int.h"
#include "common/kv_assert.h"
#include "common/kv_codec.h"
#include "common/kv_err.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define READ_CHUNK 65536 /* bytes per read(2) of a file or stdin */

enum { OPT_KV, OPT_BASE64 };

static const struct cli_opt set_opts[] = {
    {"--kv", 2, OPT_KV},
    {"--base64", 0, OPT_BASE64},
    {NULL, 0, 0},
};

struct batch {
    struct cli_keys keys, values; /* item i is keys.v[i] = values.v[i] */
    bool b64;
    bool stdin_used;
};

/* Reads fd to its end into out. 0, an errno value, or KV_E_VALUE_TOO_LARGE past the input cap. */
static int read_all(int fd, struct kv_buf *out)
{
    while (out->len <= CLI_INPUT_BYTES_MAX) { /* bounded: each pass adds >= 1 byte or returns */
        kv_buf_reserve(out, READ_CHUNK);
        ssize_t n = read(fd, out->ptr + out->len, out->cap - out->len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return errno;
        if (n == 0)
            return 0;
        out->len += (size_t)n;
    }
    return KV_E_VALUE_TOO_LARGE;
}

static int read_input(const struct cli *c, const char *path, struct kv_buf *out)
{
    int fd = path != NULL ? open(path, O_RDONLY | O_CLOEXEC) : STDIN_FILENO;
    const char *name = path != NULL ? path : "stdin";
    if (fd < 0)
        return cli_usage(c, "cannot read %s: %s", name, strerror(errno));
    int err = read_all(fd, out);
    if (path != NULL)
        close(fd);
    if (err == KV_E_VALUE_TOO_LARGE)
        return cli_usage(c, "%s holds more than %u bytes, more than any value may", name,
                         CLI_INPUT_BYTES_MAX);
    if (err != 0)
        return cli_usage(c, "cannot read %s: %s", name, strerror(err));
    return CLI_OK;
}

/* The value written as text[0..len): @PATH, - (stdin), base64 or literal. Appends to out. */
static int value_of(const struct cli *c, struct batch *b, const char *text, size_t len, struct kv_buf *out)
{
    if (len >= 1 && text[0] == '@') {
        char *path = kv_malloc(len);
        memcpy(path, text + 1, len - 1);
        path[len - 1] = 0;
        int rc = len == 1 ? cli_usage(c, "'@' needs a file name (KEY=@PATH)") : read_input(c, path, out);
        free(path);
        return rc;
    }
    if (len == 1 && text[0] == '-') {
        if (b->stdin_used)
            return cli_usage(c, "only one value can come from stdin ('-')");
        b->stdin_used = true;
        return read_input(c, NULL, out);
    }
    if (b->b64 && kv_base64_decode(text, len, out) != 0)
        return cli_usage(c, "value '%.*s' is not valid base64 (--base64)", (int)len, text);
    if (!b->b64)
        kv_buf_append(out, text, len);
    return CLI_OK;
}

static int add_item(const struct cli *c, struct batch *b, const char *key, size_t klen, const char *val,
                    size_t vlen, bool literal)
{
    struct kv_buf k = {0}, v = {0};
    int rc = CLI_OK;
    if (b->keys.n >= CLI_KEYS_MAX)
        rc = cli_usage(c, "more than %d items in one batch", CLI_KEYS_MAX);
    else if (b->b64 && (kv_base64_decode(key, klen, &k) != 0))
        rc = cli_usage(c, "key '%.*s' is not valid base64 (--base64)", (int)klen, key);
    if (rc == CLI_OK && !b->b64)
        kv_buf_append(&k, key, klen);
    if (rc == CLI_OK && k.len == 0)
        rc = cli_usage(c, "an item has an empty key (keys are 1 byte or longer); nothing was written");
    if (rc == CLI_OK && literal && b->b64 && kv_base64_decode(val, vlen, &v) != 0)
        rc = cli_usage(c, "value '%.*s' is not valid base64 (--base64)", (int)vlen, val);
    else if (rc == CLI_OK && literal && !b->b64)
        kv_buf_append(&v, val, vlen);
    else if (rc == CLI_OK && !literal)
        rc = value_of(c, b, val, vlen, &v);
    if (rc == CLI_OK) {
        cli_keys_push(&b->keys, k.ptr, k.len);
        cli_keys_push(&b->values, v.ptr, v.len);
    }
    kv_buf_free(&k);
    kv_buf_free(&v);
    return rc;
}

/* Where KEY ends in KEY=VALUE: at the first '=', or with --base64 at the last '=' of the first run
 * (the key's padding comes first; a base64 value never starts with '='). */
static size_t key_end(const char *piece, size_t len, bool b64)
{
    const char *eq = memchr(piece, '=', len);
    if (eq == NULL)
        return len;
    size_t i = (size_t)(eq - piece);
    while (b64 && i + 1 < len && piece[i + 1] == '=')
        i++;
    return i;
}

/* KEY=VALUE[,KEY=VALUE...] */
static int add_list(const struct cli *c, struct batch *b, const char *list)
{
    const char *p = list;
    for (;;) {
        size_t n = strcspn(p, ",");
        size_t k = key_end(p, n, b->b64);
        if (k == n)
            return cli_usage(c, "'%.*s' has no '=' (write KEY=VALUE, KEY=@FILE or KEY=-)", (int)n, p);
        int rc = add_item(c, b, p, k, p + k + 1, n - k - 1, false);
        if (rc != CLI_OK)
            return rc;
        if (p[n] == 0)
            return CLI_OK;
        p += n + 1;
    }
}

static int cmp_buf_ptr(const void *a, const void *b)
{
    const struct kv_buf *x = *(const struct kv_buf *const *)a, *y = *(const struct kv_buf *const *)b;
    return kv_slice_cmp(kv_slice_make(x->ptr, x->len), kv_slice_make(y->ptr, y->len));
}

/* A key given twice is a mistake: which value was meant? */
static int check_duplicates(const struct cli *c, const struct cli_keys *keys)
{
    const struct kv_buf **sorted = kv_calloc(keys->n, sizeof *sorted);
    int rc = CLI_OK;
    for (size_t i = 0; i < keys->n; i++)
        sorted[i] = &keys->v[i];
    qsort(sorted, keys->n, sizeof *sorted, cmp_buf_ptr);
    for (size_t i = 1; i < keys->n && rc == CLI_OK; i++) {
        if (cmp_buf_ptr(&sorted[i - 1], &sorted[i]) == 0) {
            struct kv_buf shown = {0};
            cli_escape(&shown, sorted[i]->ptr, sorted[i]->len);
            kv_buf_append_byte(&shown, 0);
            rc = cli_usage(c, "key '%s' is given twice; nothing was written", (const char *)shown.ptr);
            kv_buf_free(&shown);
        }
    }
    free(sorted);
    return rc;
}

/* Collects the words first: --base64 may come after them. */
static int parse_set(struct cli *c, int argc, char **argv, struct batch *b)
{
    struct cli_word *words;
    size_t n;
    int rc = cli_args_collect(c, argc, argv, set_opts, OPT_BASE64, &b->b64, "nothing to set", &words, &n);
    for (size_t i = 0; i < n && rc == CLI_OK; i++) {
        const char *w = words[i].val[0], *v = words[i].val[1];
        rc = words[i].id == OPT_KV ? add_item(c, b, w, strlen(w), v, strlen(v), true) : add_list(c, b, w);
    }
    if (rc == CLI_OK)
        rc = check_duplicates(c, &b->keys);
    free(words);
    return rc;
}

static int set_run(struct cli *c, int argc, char **argv)
{
    struct batch b = {0};
    struct kv_buf body = {0};
    struct cli_resp r = {0};
    json_t *root = NULL;
    int rc = parse_set(c, argc, argv, &b);
    if (rc != CLI_OK)
        goto out_free;
    kv_buf_append_byte(&body, '{');
    for (size_t i = 0; i < b.keys.n; i++) {
        kv_buf_append_str(&body, i ? ",\"" : "\"");
        cli_b64(&body, b.keys.v[i].ptr, b.keys.v[i].len);
        kv_buf_append_str(&body, "\":\"");
        cli_b64(&body, b.values.v[i].ptr, b.values.v[i].len);
        kv_buf_append_byte(&body, '"');
    }
    kv_buf_append_byte(&body, '}');
    rc = cli_call(c, "POST", "/bulk?encoding=base64", &body, NULL, 0, &r);
    if (rc == CLI_OK)
        rc = cli_resp_json(c, &r, &root);
    if (rc != CLI_OK)
        goto out_free;
    const json_t *seq = json_object_get(root, "seq");
    if (!json_is_integer(seq)) {
        rc = cli_fail(CLI_SERVER, "unexpected answer from %s: no seq in %.*s", c->url, (int)r.body.len,
                      r.body.ptr);
        goto out_free;
    }
    if (c->json)
        cli_outf("{\"seq\":%lld,\"count\":%zu}\n", (long long)json_integer_value(seq), b.keys.n);
    else
        cli_outf("seq %lld\n", (long long)json_integer_value(seq));
    rc = cli_out_finish();

out_free:
    json_decref(root);
    cli_keys_free(&b.keys);
    cli_keys_free(&b.values);
    kv_buf_free(&body);
    cli_resp_free(&r);
    return rc;
}

const struct cli_command cli_cmd_set = {
    "set",
    "write keys in one atomic batch (all or none); prints the commit seq",
    "usage: triekv-cli set KEY=VALUE[,KEY=VALUE...] [--kv KEY VALUE]... [--base64] [--json]\n"
    "\n"
    "Writes every item in one atomic batch: all are written or, when one is refused, none.\n"
    "Prints 'seq N', the sequence number of the commit (--json: {\"seq\": N, \"count\": M}).\n"
    "\n"
    "values:\n"
    "  KEY=text     the text itself (an empty value is allowed: KEY=)\n"
    "  KEY=@PATH    the bytes of a file, any bytes (PATH cannot contain ',')\n"
    "  KEY=-        the bytes of stdin (one item at most)\n"
    "\n"
    "options:\n"
    "  --kv KEY VALUE  one item taken whole: KEY and VALUE may contain ',' and '=' and VALUE is\n"
    "                  literal (no @ or -); repeatable, and mixes with KEY=VALUE words\n"
    "  --base64        keys and inline values are base64 (RFC 4648, padded), for bytes a shell\n"
    "                  cannot pass; @PATH and - values stay raw bytes\n"
    "\n"
    "A key given twice or an empty key is a usage error and nothing is sent. A batch the server\n"
    "refuses (a key or value over its limits) writes nothing and exits with status 2.\n"
    "\n"
    "examples:\n"
    "  triekv-cli set name=ada,lang=c\n"
    "  triekv-cli set photo=@./photo.jpg\n"
    "  gzip -c notes.txt | triekv-cli set notes.gz=-\n"
    "  triekv-cli set --kv 'a,b' 'x=y' --kv plain value\n"
    "  triekv-cli set --base64 AAE==/w==\n",
    set_run,
};
