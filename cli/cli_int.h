/* cli/cli_int.h - private to cli/: what the files of triekv-cli share.
 *
 * triekv-cli speaks the REST API of docs/API.md over libcurl. main.c parses the global options and
 * runs one command (cli_cmd_*.c); every command returns an exit status from enum cli_exit and has
 * printed its one-line message on stderr by then. Keys and values are bytes everywhere: they travel
 * as (pointer, length) and base64 on the wire, never as C strings.
 *
 * Threads: everything runs on the main thread except `bench`, whose workers each own one
 * struct cli_http (a libcurl easy handle must not be shared). cli_http_global_init() runs once in
 * main() before any thread starts. */
#ifndef CLI_INT_H
#define CLI_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <jansson.h>

#include "common/kv_buf.h"

#define CLI_NAME              "triekv-cli"
#define CLI_VERSION           "0.1.0"
#define CLI_DEFAULT_URL       "http://127.0.0.1:3030"
#define CLI_URL_MAX           300        /* a base URL: http://host:port, no path */
#define CLI_MSG_MAX           1024       /* one line on stderr */
#define CLI_TIMEOUT_S_DEFAULT 30         /* whole request */
#define CLI_CONNECT_MS_MAX    2000       /* connecting, capped by the request timeout */
#define CLI_KEYS_MAX          100000     /* keys named in one command */
#define CLI_INPUT_BYTES_MAX   (1u << 30) /* one value read from a file or stdin (the engine's hard cap) */

/* Exit statuses (docs/CLI.md). */
enum cli_exit {
    CLI_OK = 0,
    CLI_NOT_FOUND = 1, /* a key is missing, or a precondition failed */
    CLI_USAGE = 2,     /* a mistake on the command line, or a request the server refused as invalid */
    CLI_SERVER = 3,    /* unreachable, a server-side failure, a replica refusing a write, or output lost */
    CLI_HELP = -1,     /* internal: the command saw --help; main prints its help and exits 0 */
};

/* ---- global state (main.c) ------------------------------------------------------------------ */

struct cli_command;
struct cli_http;

struct cli {
    char url[CLI_URL_MAX]; /* the server's base URL, without a trailing '/'; "" after a bad TRIEKV_URL */
    char url_error[CLI_MSG_MAX]; /* why TRIEKV_URL was refused: reported at the first request */
    bool json;                   /* --json */
    double timeout_s;            /* --timeout */
    const struct cli_command *cmd;
    struct cli_http *http; /* the main thread's handle, made by the first request (cli_connect) */
};

struct cli_command {
    const char *name;
    const char *summary;                              /* one line for the overview */
    const char *help;                                 /* the full text of `triekv-cli COMMAND --help` */
    int (*run)(struct cli *c, int argc, char **argv); /* argv: what follows the command word */
};

extern const struct cli_command cli_cmd_get, cli_cmd_set, cli_cmd_delete, cli_cmd_range, cli_cmd_stats,
    cli_cmd_watch_stats, cli_cmd_bench;

/* Prints "triekv-cli: <message> (see triekv-cli COMMAND --help)" and returns CLI_USAGE (cli_args.c). */
int cli_usage(const struct cli *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Prints "triekv-cli: <message>" and returns code. */
int cli_fail(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* ---- arguments (cli_args.c) ------------------------------------------------------------------ */

/* A command's option: name with its dashes ("--start"); nargs 0, 1 or 2. */
struct cli_opt {
    const char *name;
    int nargs;
    int id; /* >= 0; returned by cli_args_next */
};

struct cli_args {
    int argc;
    char **argv; /* borrowed from main() */
    int i;
    bool only_positional; /* after "--" */
};

enum { CLI_ARG_END = -1, CLI_ARG_POS = -2, CLI_ARG_HELP = -3, CLI_ARG_ERR = -4 };

/* The next argument: an option id of opts (a {NULL} terminated table) with its values in val[0..],
 * CLI_ARG_POS with the word in val[0], CLI_ARG_END, CLI_ARG_HELP for --help/-h, or CLI_ARG_ERR after
 * printing a usage message. The global options (--server, --json, --timeout) are accepted anywhere
 * and applied to c. "--name=value" works for one-value options. */
int cli_args_next(struct cli *c, struct cli_args *a, const struct cli_opt *opts, const char *val[2]);
/* One argument of a command that collects them all before acting (get, delete, set): a word
 * (id CLI_ARG_POS) or an option with its values. */
struct cli_word {
    int id;
    const char *val[2]; /* borrowed from argv */
};
/* Reads every argument with opts; the option flag_id (no value) only sets *flag, so it may come
 * anywhere, and the rest are returned in order: *words (n of them, at least one) is yours to free().
 * CLI_OK, CLI_HELP, or CLI_USAGE after printing (none_msg when nothing but flags was given). */
int cli_args_collect(struct cli *c, int argc, char **argv, const struct cli_opt *opts, int flag_id,
                     bool *flag, const char *none_msg, struct cli_word **words, size_t *n);
/* Parses a whole number in [min, max] for option name. CLI_USAGE after printing. */
int cli_parse_u64(const struct cli *c, const char *name, const char *text, uint64_t min, uint64_t max,
                  uint64_t *out);
/* Parses seconds (fractions allowed) in [min, max]. CLI_USAGE after printing. */
int cli_parse_seconds(const struct cli *c, const char *name, const char *text, double min, double max,
                      double *out);
/* Checks and normalises a server URL (http://HOST[:PORT], "HOST:PORT" taken as http). 0, or -1 with
 * the reason in why. */
int cli_url_normalize(const char *in, char *out, size_t outlen, char *why, size_t whylen);

/* A list of keys from the command line, in order; each key is owned bytes. */
struct cli_keys {
    struct kv_buf *v; /* owned: free with cli_keys_free */
    size_t n, cap;
};
void cli_keys_free(struct cli_keys *k);
/* Appends a copy of the bytes. */
void cli_keys_push(struct cli_keys *k, const void *p, size_t len);
/* Splits "k1,k2,..." into k; with b64 each piece is decoded from base64. CLI_USAGE after printing. */
int cli_keys_split(const struct cli *c, const char *list, bool b64, struct cli_keys *k);
/* One key given whole (--key K): decoded with b64. CLI_USAGE after printing. */
int cli_keys_add_one(const struct cli *c, const char *key, bool b64, struct cli_keys *k);

/* ---- HTTP (cli_http.c) ------------------------------------------------------------------------ */

/* An answer. body is reused across calls (cleared at the start of each): free with cli_resp_free. */
struct cli_resp {
    long status;           /* 0 when no answer came */
    struct kv_buf body;    /* the body, unless it went to a sink */
    char msg[CLI_MSG_MAX]; /* when a call returns non-zero: the one line for stderr, without the prefix */
};
void cli_resp_free(struct cli_resp *r);

#define CLI_F_404_OK    1u /* a 404 returns CLI_NOT_FOUND (msg says "not found") instead of an error */
#define CLI_F_413_QUIET 2u /* cli_call prints no 413: the caller retries with a smaller request */

int cli_http_global_init(void);
void cli_http_global_cleanup(void);
/* A handle for the server at base_url (borrowed for the call) with the request timeout. On success
 * *out is yours: release with cli_http_destroy(). */
int cli_http_create(const char *base_url, double timeout_s, struct cli_http **out);
void cli_http_destroy(struct cli_http *h); /* NULL is a no-op */
/* Sends METHOD (GET, POST, PUT or DELETE) base_url+path (path starts with '/' and is already
 * percent-encoded). body (may be NULL) is sent as JSON with POST, as raw bytes with PUT. With sink, a 2xx
 * body is written there as it arrives. Returns CLI_OK for a 2xx answer; otherwise the exit status the answer
 * means (or CLI_SERVER for a transport failure), with resp->msg saying what happened and what to do. Prints
 * nothing. */
int cli_http_call(struct cli_http *h, const char *method, const char *path, const void *body, size_t len,
                  FILE *sink, unsigned flags, struct cli_resp *resp);
/* Makes c->http for c->url unless it exists. CLI_OK, or an exit status after printing. */
int cli_connect(struct cli *c);
/* cli_http_call on c's handle (cli_connect first) that prints resp->msg on failure, except a 404
 * with CLI_F_404_OK and a 413 with CLI_F_413_QUIET (the caller decides about those). */
int cli_call(struct cli *c, const char *method, const char *path, const struct kv_buf *body, FILE *sink,
             unsigned flags, struct cli_resp *resp);

/* ---- output and formatting (cli_out.c) --------------------------------------------------------- */

/* Writes to stdout; a failure is remembered and reported by cli_out_finish. */
void cli_out(const void *p, size_t len);
void cli_out_str(const char *s);
void cli_outf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Flushes stdout now (streamed output); a failure is remembered like a failed write. */
void cli_out_flush(void);
/* Flushes stdout. CLI_OK, or CLI_SERVER after printing "cannot write the output: ...". */
int cli_out_finish(void);

/* Appends bytes with \\, \t, \n, \r, other control bytes and bytes that are not UTF-8 written as
 * escapes (\xNN). Lossless and one line. */
void cli_escape(struct kv_buf *out, const uint8_t *p, size_t len);
/* True when p is valid UTF-8 without control characters: it can be shown as it is. */
bool cli_printable(const uint8_t *p, size_t len);
/* Appends "name":"text" when p is UTF-8 and !force_b64, else "name_base64":"...". */
void cli_json_member(struct kv_buf *out, const char *name, const uint8_t *p, size_t len, bool force_b64);
/* Appends the base64 of p. */
void cli_b64(struct kv_buf *out, const uint8_t *p, size_t len);

/* Human formats, into buf (at least 32 bytes): 1,234,567 / 1.5 MiB / 1h2m3s / 1,234.5/s */
const char *cli_fmt_count(char *buf, size_t len, uint64_t v);
const char *cli_fmt_bytes(char *buf, size_t len, uint64_t v);
const char *cli_fmt_duration(char *buf, size_t len, double seconds);
const char *cli_fmt_rate(char *buf, size_t len, double per_second);

/* Base64 of a JSON string member of obj (its "name"), decoded into out (emptied first). -1 if absent
 * or invalid. */
int cli_json_b64(const json_t *obj, const char *name, struct kv_buf *out);
/* Parses resp's body as a JSON object (cli_http.c). CLI_SERVER after printing when it is not.
 * *out: json_decref it. */
int cli_resp_json(const struct cli *c, const struct cli_resp *r, json_t **out);

#endif
