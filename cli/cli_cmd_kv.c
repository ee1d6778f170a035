/* cli/cli_cmd_kv.c - `get` and `delete`: read one key (raw bytes to stdout), several keys (a table
 * or JSON), and delete several keys in one atomic call.
 *
 * One key:  GET /kv/{key}, the value streamed to stdout as it arrives (binary-safe, nothing added).
 * Several:  POST /bulk/get?encoding=base64 in chunks of GET_CHUNK keys, halved while the server
 *           answers 413 (its max_bulk_items or max_bulk_bytes are lower). The server reads each key
 *           on its own anyway, so chunking changes nothing a reader can see.
 * Delete:   POST /bulk/delete?encoding=base64, one call whatever the number of keys (all or none).
 * Threads: main thread only. */
#include "cli/cli_int.h"
#include "common/kv_assert.h"
#include "common/kv_codec.h"

#include <stdlib.h>
#include <string.h>

#define GET_CHUNK       1000 /* keys per /bulk/get request */
#define TABLE_KEY_WIDTH 40   /* widest key column of the table; longer keys push their value right */

enum { OPT_KEY, OPT_BASE64 };

static const struct cli_opt key_opts[] = {
    {"--key", 1, OPT_KEY},
    {"--base64", 0, OPT_BASE64},
    {NULL, 0, 0},
};

/* The keys of `get` and `delete`: KEY[,KEY...] words and --key KEY, decoded once --base64 is known. */
static int parse_keys(struct cli *c, int argc, char **argv, struct cli_keys *keys, bool *b64)
{
    struct cli_word *words;
    size_t n;
    *b64 = false;
    int rc = cli_args_collect(c, argc, argv, key_opts, OPT_BASE64, b64, "no key given", &words, &n);
    for (size_t i = 0; i < n && rc == CLI_OK; i++) {
        const char *w = words[i].val[0];
        rc = words[i].id == OPT_KEY ? cli_keys_add_one(c, w, *b64, keys) : cli_keys_split(c, w, *b64, keys);
    }
    free(words);
    return rc;
}

/* {"keys":["<base64>",...]} for keys [from, to). */
static void keys_body(const struct cli_keys *k, size_t from, size_t to, struct kv_buf *out)
{
    out->len = 0;
    kv_buf_append_str(out, "{\"keys\":[");
    for (size_t i = from; i < to; i++) {
        kv_buf_append_str(out, i > from ? ",\"" : "\"");
        cli_b64(out, k->v[i].ptr, k->v[i].len);
        kv_buf_append_byte(out, '"');
    }
    kv_buf_append_str(out, "]}");
}

/* "k1, k2, ..." escaped, for a message; at most 10 keys named. */
static void key_list(const struct cli_keys *k, struct kv_buf *out)
{
    for (size_t i = 0; i < k->n && i < 10; i++) {
        if (i)
            kv_buf_append_str(out, ", ");
        cli_escape(out, k->v[i].ptr, k->v[i].len);
    }
    if (k->n > 10)
        kv_buf_printf(out, " and %zu more", k->n - 10);
    kv_buf_append_byte(out, 0);
}

/* ---- get ---------------------------------------------------------------------------------------- */

static int get_one(struct cli *c, const struct kv_buf *key, bool b64)
{
    struct kv_buf path = {0}, msg = {0};
    struct cli_resp r = {0};
    kv_buf_append_str(&path, "/kv/");
    kv_percent_encode(key->ptr, key->len, &path);
    kv_buf_append_byte(&path, 0);
    int rc = cli_call(c, "GET", (const char *)path.ptr, NULL, b64 ? NULL : stdout, CLI_F_404_OK, &r);
    if (rc == CLI_NOT_FOUND && r.status == 404) {
        cli_escape(&msg, key->ptr, key->len);
        kv_buf_append_byte(&msg, 0);
        cli_fail(rc, "key not found: %s", (const char *)msg.ptr);
    } else if (rc == CLI_OK && b64) {
        struct kv_buf text = {0};
        cli_b64(&text, r.body.ptr, r.body.len);
        kv_buf_append_byte(&text, '\n');
        cli_out(text.ptr, text.len);
        kv_buf_free(&text);
    }
    if (rc == CLI_OK)
        rc = cli_out_finish();
    kv_buf_free(&path);
    kv_buf_free(&msg);
    cli_resp_free(&r);
    return rc;
}

/* What /bulk/get found, in request order. */
struct found {
    struct cli_keys keys, values, missing;
};

static void found_free(struct found *f)
{
    cli_keys_free(&f->keys);
    cli_keys_free(&f->values);
    cli_keys_free(&f->missing);
}

/* Adds one answer of /bulk/get to f. CLI_SERVER after printing when it is malformed. */
static int found_add(const struct cli *c, const json_t *root, struct found *f)
{
    const json_t *items = json_object_get(root, "items"), *missing = json_object_get(root, "missing"), *it;
    struct kv_buf k = {0}, v = {0};
    size_t i;
    int rc = CLI_OK;
    if (!json_is_array(items) || !json_is_array(missing))
        rc = CLI_SERVER;
    json_array_foreach(items, i, it)
    {
        if (rc != CLI_OK || cli_json_b64(it, "key", &k) != 0 || cli_json_b64(it, "value", &v) != 0) {
            rc = CLI_SERVER;
            break;
        }
        cli_keys_push(&f->keys, k.ptr, k.len);
        cli_keys_push(&f->values, v.ptr, v.len);
    }
    json_array_foreach(missing, i, it)
    {
        k.len = 0;
        if (rc != CLI_OK || !json_is_string(it) ||
            kv_base64_decode(json_string_value(it), json_string_length(it), &k) != 0) {
            rc = CLI_SERVER;
            break;
        }
        cli_keys_push(&f->missing, k.ptr, k.len);
    }
    kv_buf_free(&k);
    kv_buf_free(&v);
    if (rc != CLI_OK)
        return cli_fail(rc, "unexpected answer from %s: /bulk/get items are malformed", c->url);
    return CLI_OK;
}

/* Appends the table form of bytes: the text, or "[base64] ..." when it is not printable. */
static void cell(struct kv_buf *out, const struct kv_buf *b)
{
    if (cli_printable(b->ptr, b->len)) {
        kv_buf_append(out, b->ptr, b->len);
    } else {
        kv_buf_append_str(out, "[base64] ");
        cli_b64(out, b->ptr, b->len);
    }
}

/* Characters (not bytes) of UTF-8 text. */
static size_t text_width(const uint8_t *p, size_t len)
{
    size_t w = 0;
    for (size_t i = 0; i < len; i++)
        w += (p[i] & 0xc0) != 0x80;
    return w;
}

static void print_table(const struct found *f, bool b64)
{
    struct kv_buf line = {0};
    size_t width = 3; /* "KEY" */
    for (size_t i = 0; i < f->keys.n; i++) {
        line.len = 0;
        if (b64)
            cli_b64(&line, f->keys.v[i].ptr, f->keys.v[i].len);
        else
            cell(&line, &f->keys.v[i]);
        size_t w = text_width(line.ptr, line.len);
        width = w > width ? (w < TABLE_KEY_WIDTH ? w : TABLE_KEY_WIDTH) : width;
    }
    cli_outf("%-*s  %s\n", (int)width, "KEY", "VALUE");
    for (size_t i = 0; i < f->keys.n; i++) {
        line.len = 0;
        for (int col = 0; col < 2; col++) {
            const struct kv_buf *b = col == 0 ? &f->keys.v[i] : &f->values.v[i];
            size_t start = line.len;
            if (b64)
                cli_b64(&line, b->ptr, b->len);
            else
                cell(&line, b);
            for (size_t w = text_width(line.ptr + start, line.len - start); col == 0 && w < width + 2; w++)
                kv_buf_append_byte(&line, ' ');
        }
        kv_buf_append_byte(&line, '\n');
        cli_out(line.ptr, line.len);
    }
    kv_buf_free(&line);
}

static void print_found_json(const struct found *f, bool b64)
{
    struct kv_buf out = {0};
    kv_buf_append_str(&out, "{\"items\":[");
    for (size_t i = 0; i < f->keys.n; i++) {
        kv_buf_append_str(&out, i ? ",\n{" : "\n{");
        cli_json_member(&out, "key", f->keys.v[i].ptr, f->keys.v[i].len, b64);
        kv_buf_append_byte(&out, ',');
        cli_json_member(&out, "value", f->values.v[i].ptr, f->values.v[i].len, b64);
        kv_buf_append_byte(&out, '}');
    }
    kv_buf_append_str(&out, "],\n\"missing\":[");
    for (size_t i = 0; i < f->missing.n; i++) {
        kv_buf_append_str(&out, i ? ",{" : "{");
        cli_json_member(&out, "key", f->missing.v[i].ptr, f->missing.v[i].len, b64);
        kv_buf_append_byte(&out, '}');
    }
    kv_buf_append_str(&out, "]}\n");
    cli_out(out.ptr, out.len);
    kv_buf_free(&out);
}

static int get_many(struct cli *c, const struct cli_keys *keys, bool b64)
{
    struct found f = {0};
    struct kv_buf body = {0}, msg = {0};
    struct cli_resp r = {0};
    int rc = CLI_OK;
    size_t chunk = GET_CHUNK;
    for (size_t from = 0; from < keys->n && rc == CLI_OK;) { /* each pass moves on or halves chunk */
        size_t to = keys->n - from > chunk ? from + chunk : keys->n;
        keys_body(keys, from, to, &body);
        json_t *root = NULL;
        rc = cli_call(c, "POST", "/bulk/get?encoding=base64", &body, NULL, CLI_F_413_QUIET, &r);
        if (rc != CLI_OK && r.status == 413 && to - from > 1) {
            chunk = (to - from) / 2; /* the server's bulk limits are lower than ours: ask for less */
            rc = CLI_OK;
            continue;
        }
        if (rc != CLI_OK && r.status == 413)
            cli_fail(rc, "%s", r.msg); /* one key's value alone is over the limit */
        if (rc == CLI_OK)
            rc = cli_resp_json(c, &r, &root);
        if (rc == CLI_OK)
            rc = found_add(c, root, &f);
        json_decref(root);
        from = to;
    }
    if (rc != CLI_OK)
        goto out_free;
    if (c->json)
        print_found_json(&f, b64);
    else
        print_table(&f, b64);
    rc = cli_out_finish();
    if (rc == CLI_OK && f.missing.n > 0) {
        key_list(&f.missing, &msg);
        rc = cli_fail(CLI_NOT_FOUND, "%zu of %zu keys not found: %s", f.missing.n, keys->n,
                      (const char *)msg.ptr);
    }

out_free:
    found_free(&f);
    kv_buf_free(&body);
    kv_buf_free(&msg);
    cli_resp_free(&r);
    return rc;
}

static int get_run(struct cli *c, int argc, char **argv)
{
    struct cli_keys keys = {0};
    bool b64;
    int rc = parse_keys(c, argc, argv, &keys, &b64);
    if (rc == CLI_OK)
        rc = keys.n == 1 && !c->json ? get_one(c, &keys.v[0], b64) : get_many(c, &keys, b64);
    cli_keys_free(&keys);
    return rc;
}

const struct cli_command cli_cmd_get = {
    "get",
    "read keys: one value raw to stdout, several as a table (--json: JSON)",
    "usage: triekv-cli get KEY[,KEY...] [--key KEY]... [--base64] [--json]\n"
    "\n"
    "One key: its value goes to stdout exactly as stored (binary-safe, no newline added).\n"
    "Several keys (or --json): a table KEY VALUE, where a key or value that is not printable UTF-8\n"
    "is shown as '[base64] ...'; with --json one object\n"
    "  {\"items\": [{\"key\": K, \"value\": V}, ...], \"missing\": [{\"key\": K}, ...]}\n"
    "in which a member holding bytes that are not UTF-8 is named key_base64 / value_base64 instead.\n"
    "A missing key is named on stderr and the exit status is 1.\n"
    "\n"
    "options:\n"
    "  --key KEY   one key taken whole (it may contain ','); repeatable\n"
    "  --base64    keys are given in base64; values and keys are printed in base64 (one value:\n"
    "              its base64 and a newline; --json: only *_base64 members)\n"
    "\n"
    "examples:\n"
    "  triekv-cli get user:42 > user42.bin\n"
    "  triekv-cli get a,b,c\n"
    "  triekv-cli get a,b,c --json | jq '.items[].key'\n"
    "  triekv-cli get --key 'x,y' --key plain\n",
    get_run,
};

/* ---- delete ------------------------------------------------------------------------------------- */

static int delete_run(struct cli *c, int argc, char **argv)
{
    struct cli_keys keys = {0};
    struct kv_buf body = {0};
    struct cli_resp r = {0};
    json_t *root = NULL;
    bool b64;
    int rc = parse_keys(c, argc, argv, &keys, &b64);
    if (rc != CLI_OK)
        goto out_free;
    keys_body(&keys, 0, keys.n, &body);
    rc = cli_call(c, "POST", "/bulk/delete?encoding=base64", &body, NULL, 0, &r);
    if (rc == CLI_OK)
        rc = cli_resp_json(c, &r, &root);
    if (rc != CLI_OK)
        goto out_free;
    const json_t *jseq = json_object_get(root, "seq"), *jdeleted = json_object_get(root, "deleted");
    if (!json_is_integer(jseq) || !json_is_integer(jdeleted)) {
        rc = cli_fail(CLI_SERVER, "unexpected answer from %s: no seq and deleted counts", c->url);
        goto out_free;
    }
    json_int_t seq = json_integer_value(jseq), deleted = json_integer_value(jdeleted);
    if (c->json)
        cli_outf("{\"seq\":%lld,\"deleted\":%lld,\"count\":%zu}\n", (long long)seq, (long long)deleted,
                 keys.n);
    else
        cli_outf("deleted %lld of %zu\n", (long long)deleted, keys.n);
    rc = cli_out_finish();

out_free:
    json_decref(root);
    cli_keys_free(&keys);
    kv_buf_free(&body);
    cli_resp_free(&r);
    return rc;
}

const struct cli_command cli_cmd_delete = {
    "delete",
    "delete keys in one atomic call; reports how many existed",
    "usage: triekv-cli delete KEY[,KEY...] [--key KEY]... [--base64] [--json]\n"
    "\n"
    "Deletes every key given in one atomic batch and prints 'deleted D of N': D of the N keys\n"
    "existed. Keys that did not exist are not an error (exit status 0).\n"
    "--json prints {\"seq\": S, \"deleted\": D, \"count\": N}.\n"
    "\n"
    "options:\n"
    "  --key KEY   one key taken whole (it may contain ','); repeatable\n"
    "  --base64    keys are given in base64\n"
    "\n"
    "examples:\n"
    "  triekv-cli delete session:1,session:2\n"
    "  triekv-cli delete --key 'a,b' --json\n",
    delete_run,
};
