/* cli/cli_cmd_range.c - `range`: every key of a range in byte order, following the server's cursor
 * through every page (GET /bulk/range?encoding=base64) and printing each page as it arrives.
 *
 * Output: one line per item, KEY<TAB>VALUE, both escaped by cli_escape() (\\ \t \n \r \xNN; UTF-8
 * text stays as it is), or base64 with --base64; --json writes one document {"items": [...]},
 * one item per line, as the pages come, and closes it only when every page arrived (a failure
 * leaves it unterminated, so no parser mistakes a part for the whole). The server promises pages in strictly
 * increasing key order without repeats; the client checks it, which also bounds the loop: every page must
 * move forward. Threads: main thread only. */
#include "cli/cli_int.h"
#include "common/kv_codec.h"
#include "common/kv_err.h"

#include <string.h>

#define RANGE_PAGES_MAX 100000000u /* far beyond any store; a server that loops is stopped here */

enum { OPT_START, OPT_END, OPT_PREFIX, OPT_LIMIT, OPT_KEYS_ONLY, OPT_BASE64 };

static const struct cli_opt range_opts[] = {
    {"--start", 1, OPT_START},
    {"--end", 1, OPT_END},
    {"--prefix", 1, OPT_PREFIX},
    {"--limit", 1, OPT_LIMIT},
    {"--keys-only", 0, OPT_KEYS_ONLY},
    {"--base64", 0, OPT_BASE64},
    {NULL, 0, 0},
};

struct range {
    const char *bound[3]; /* --start, --end, --prefix as given (NULL: absent) */
    uint64_t limit;       /* items to print at most; 0: all */
    bool keys_only, b64;
    /* while paging */
    struct kv_buf last; /* the last key printed */
    uint64_t printed;
    struct kv_buf out; /* the page's output */
};

static int parse_range(struct cli *c, int argc, char **argv, struct range *rg)
{
    struct cli_args a = {.argc = argc, .argv = argv};
    const char *val[2];
    int id;
    while ((id = cli_args_next(c, &a, range_opts, val)) != CLI_ARG_END) {
        switch (id) {
        case CLI_ARG_HELP:
            return CLI_HELP;
        case CLI_ARG_ERR:
            return CLI_USAGE;
        case CLI_ARG_POS:
            return cli_usage(c, "range takes options only, not '%s'", val[0]);
        case OPT_LIMIT:
            if (cli_parse_u64(c, "--limit", val[0], 1, UINT64_MAX / 2, &rg->limit) != CLI_OK)
                return CLI_USAGE;
            break;
        case OPT_KEYS_ONLY:
            rg->keys_only = true;
            break;
        case OPT_BASE64:
            rg->b64 = true;
            break;
        default: /* OPT_START, OPT_END, OPT_PREFIX */
            rg->bound[id] = val[0];
        }
    }
    if (rg->bound[OPT_PREFIX] && (rg->bound[OPT_START] || rg->bound[OPT_END]))
        return cli_usage(c, "give --prefix, or --start/--end, not both");
    return CLI_OK;
}

/* The first page's path: the bounds, decoded from base64 when asked, percent-encoded. */
static int first_path(const struct cli *c, const struct range *rg, struct kv_buf *path)
{
    static const char *const names[3] = {"start_key", "end_key", "prefix"};
    static const char *const opts[3] = {"--start", "--end", "--prefix"};
    struct kv_buf raw = {0};
    int rc = CLI_OK;
    for (int i = 0; i < 3 && rc == CLI_OK; i++) {
        const char *b = rg->bound[i];
        if (b == NULL)
            continue;
        raw.len = 0;
        if (!rg->b64)
            kv_buf_append_str(&raw, b);
        else if (kv_base64_decode(b, strlen(b), &raw) != 0)
            rc = cli_usage(c, "%s '%s' is not valid base64 (--base64)", opts[i], b);
        kv_buf_printf(path, "&%s=", names[i]);
        kv_percent_encode(raw.ptr, raw.len, path);
    }
    kv_buf_free(&raw);
    return rc;
}

static void print_item(const struct cli *c, struct range *rg, const struct kv_buf *key,
                       const struct kv_buf *value)
{
    struct kv_buf *o = &rg->out;
    if (c->json) {
        kv_buf_append_str(o, rg->printed ? ",\n{" : "\n{");
        cli_json_member(o, "key", key->ptr, key->len, rg->b64);
        if (!rg->keys_only) {
            kv_buf_append_byte(o, ',');
            cli_json_member(o, "value", value->ptr, value->len, rg->b64);
        }
        kv_buf_append_byte(o, '}');
        return;
    }
    for (int col = 0; col < (rg->keys_only ? 1 : 2); col++) {
        const struct kv_buf *b = col == 0 ? key : value;
        if (col)
            kv_buf_append_byte(o, '\t');
        if (rg->b64)
            cli_b64(o, b->ptr, b->len);
        else
            cli_escape(o, b->ptr, b->len);
    }
    kv_buf_append_byte(o, '\n');
}

/* Prints a page's items; sets *done when --limit is reached. */
static int print_page(const struct cli *c, struct range *rg, const json_t *items, bool *done)
{
    struct kv_buf k = {0}, v = {0};
    size_t i;
    const json_t *it;
    int rc = CLI_OK;
    rg->out.len = 0;
    json_array_foreach(items, i, it)
    {
        if (cli_json_b64(it, "key", &k) != 0 || (!rg->keys_only && cli_json_b64(it, "value", &v) != 0)) {
            rc = cli_fail(CLI_SERVER, "unexpected answer from %s: a range item is malformed", c->url);
            break;
        }
        if (rg->printed > 0 &&
            kv_slice_cmp(kv_slice_make(k.ptr, k.len), kv_slice_make(rg->last.ptr, rg->last.len)) <= 0) {
            rc = cli_fail(CLI_SERVER, "the server at %s sent range keys out of order; stopping", c->url);
            break;
        }
        print_item(c, rg, &k, &v);
        rg->last.len = 0;
        kv_buf_append(&rg->last, k.ptr, k.len);
        rg->printed++;
        if (rg->limit > 0 && rg->printed >= rg->limit) {
            *done = true;
            break;
        }
    }
    cli_out(rg->out.ptr, rg->out.len);
    cli_out_flush(); /* stream: a page is on its way before the next is asked for */
    kv_buf_free(&k);
    kv_buf_free(&v);
    return rc;
}

/* Asks for every page and prints it. */
static int follow(struct cli *c, struct range *rg)
{
    struct kv_buf path = {0};
    struct cli_resp r = {0};
    json_t *root = NULL;
    const char *cursor = NULL;
    bool done = false;
    int rc = CLI_OK;
    for (uint32_t page = 0; rc == CLI_OK && !done && page < RANGE_PAGES_MAX; page++) {
        path.len = 0;
        kv_buf_printf(&path, "/bulk/range?encoding=base64%s", rg->keys_only ? "&keys_only=true" : "");
        if (cursor != NULL) {
            kv_buf_append_str(&path, "&cursor=");
            kv_percent_encode((const uint8_t *)cursor, strlen(cursor), &path);
        } else {
            rc = first_path(c, rg, &path);
        }
        kv_buf_append_byte(&path, 0);
        if (rc == CLI_OK)
            rc = cli_call(c, "GET", (const char *)path.ptr, NULL, NULL, 0, &r);
        json_decref(root); /* the previous page: cursor pointed into it until now */
        root = NULL;
        if (rc == CLI_OK)
            rc = cli_resp_json(c, &r, &root);
        if (rc != CLI_OK)
            break;
        const json_t *items = json_object_get(root, "items"), *next = json_object_get(root, "next");
        if (!json_is_array(items) || (!json_is_null(next) && !json_is_string(next))) {
            rc = cli_fail(CLI_SERVER, "unexpected answer from %s: not a range page", c->url);
            break;
        }
        if (c->json && page == 0)
            cli_out_str("{\"items\":["); /* only once the server answers: no half document if it does not */
        rc = print_page(c, rg, items, &done);
        if (json_is_null(next))
            done = true;
        else if (json_array_size(items) == 0)
            rc = cli_fail(CLI_SERVER, "the server at %s sent an empty range page with a cursor; stopping",
                          c->url);
        cursor = json_string_value(next);
    }
    json_decref(root);
    kv_buf_free(&path);
    cli_resp_free(&r);
    return rc;
}

static int range_run(struct cli *c, int argc, char **argv)
{
    struct range rg = {0};
    int rc = parse_range(c, argc, argv, &rg);
    if (rc != CLI_OK)
        return rc;
    rc = follow(c, &rg);
    if (c->json && rc == CLI_OK) /* after a failure the document stays open: a parser must not take it */
        cli_out_str(rg.printed ? "\n]}\n" : "]}\n");
    int out_rc = cli_out_finish();
    kv_buf_free(&rg.last);
    kv_buf_free(&rg.out);
    return rc != CLI_OK ? rc : out_rc;
}

const struct cli_command cli_cmd_range = {
    "range",
    "list keys in byte order across every page of a range",
    "usage: triekv-cli range [--start A] [--end B] [--prefix P] [--limit N] [--keys-only] [--base64] "
    "[--json]\n"
    "\n"
    "Lists keys (and values) in byte order, following the server's cursor through every page and\n"
    "printing each page as it arrives. Output: one line per item, KEY<TAB>VALUE, where a\n"
    "backslash is written \\\\, tab \\t, newline \\n, carriage return \\r, and any other control\n"
    "byte or byte that is not UTF-8 \\xNN (so a line is always one item, and nothing is lost).\n"
    "--json writes one document {\"items\": [{\"key\": K, \"value\": V}, ...]}, an item per line,\n"
    "with key_base64 / value_base64 members for bytes that are not UTF-8.\n"
    "\n"
    "options:\n"
    "  --start A     first key (inclusive)\n"
    "  --end B       stop before this key (exclusive)\n"
    "  --prefix P    only keys starting with P (instead of --start/--end)\n"
    "  --limit N     print at most N items in all (pages keep the server's size)\n"
    "  --keys-only   keys without values\n"
    "  --base64      A, B and P are given in base64; keys and values are printed in base64\n"
    "\n"
    "examples:\n"
    "  triekv-cli range --prefix user: --keys-only\n"
    "  triekv-cli range --start a --end m --limit 10\n"
    "  triekv-cli range --json | jq -r '.items[].key'\n",
    range_run,
};
