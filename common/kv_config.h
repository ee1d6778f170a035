/* common/kv_config.h - typed configuration from a JSON file, the environment and command-line
 * flags, for the node and the proxy.
 *
 * A program describes its keys in a table (name, type, where the value lives in its config struct,
 * range or choices, help); the struct holds the defaults before loading. Sources apply in this
 * order, each overriding the one before: defaults, the JSON file, PREFIX_<KEY> environment
 * variables, --key flags. Every mistake is refused with one line that names the key and its source
 * and says what is allowed: an unknown key, a wrong type, a value out of range.
 *
 * Values in text form (environment, flags) are parsed by type: integers in decimal with an
 * optional k/m/g suffix (powers of 1024) where the key allows it, booleans true/false/1/0/yes/no,
 * lists as comma-separated items or a JSON array, JSON values as JSON text. */
#ifndef KV_CONFIG_H
#define KV_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum kv_cfg_type {
    KV_CFG_INT,     /* int64_t */
    KV_CFG_BOOL,    /* bool */
    KV_CFG_STRING,  /* char *, owned by the struct (kv_cfg_free) */
    KV_CFG_ENUM,    /* char *, one of choices */
    KV_CFG_STRLIST, /* struct kv_strlist */
    KV_CFG_JSON,    /* char *: any JSON value, as compact JSON text, for the program to read */
};

struct kv_strlist {
    char **v; /* owned */
    size_t n;
};

struct kv_cfg_key {
    const char *name;
    enum kv_cfg_type type;
    size_t offset;              /* of the value in the config struct */
    int64_t min, max;           /* KV_CFG_INT: inclusive range */
    bool size_suffix;           /* KV_CFG_INT: text values may end in k, m or g */
    const char *const *choices; /* KV_CFG_ENUM: NULL-terminated */
    const char *help;           /* one line, for --help */
};

#define KV_CFG_ERR_MAX 512

/* Loads a JSON object from path. Returns 0, or -1 with a one-line message in err. */
int kv_cfg_load_file(const struct kv_cfg_key *keys, void *cfg, const char *path, char *err);
/* Applies PREFIX<UPPERCASE_KEY> variables that are set. */
int kv_cfg_load_env(const struct kv_cfg_key *keys, void *cfg, const char *prefix, char *err);
/* Sets one key from text (a flag or variable); source names it in messages ("--port"). */
int kv_cfg_set_text(const struct kv_cfg_key *keys, void *cfg, const char *name, const char *value,
                    const char *source, char *err);
/* The key named name ('-' and '_' are the same), or NULL. */
const struct kv_cfg_key *kv_cfg_find(const struct kv_cfg_key *keys, const char *name);
/* Frees the strings and lists the table owns in cfg. */
void kv_cfg_free(const struct kv_cfg_key *keys, void *cfg);
/* Prints one line per key: --name TYPE  help (default). */
void kv_cfg_print_help(const struct kv_cfg_key *keys, const void *defaults);
/* Sets a string or enum field (copying value; frees the old one). */
void kv_cfg_set_string(char **field, const char *value);

/* A program's command line: [--config FILE] [--check] [--KEY VALUE | --KEY=VALUE]... */
struct kv_cfg_program {
    const char *name; /* "triekv-server", for --version */
    const char *version;
    const char *env_prefix; /* "TRIEKV_" */
    void (*usage)(void);    /* prints --help */
};
/* Loads cfg (holding its defaults) from the command line: the --config FILE first, wherever it
 * stands, then env_prefix variables, then the flags in order. --help and --version print and
 * return 1; --check sets *check_only. Returns 0, 1, or -1 with a one-line message in err that
 * starts with "usage:" for a mistake on the command line. */
int kv_cfg_load_args(const struct kv_cfg_key *keys, void *cfg, const struct kv_cfg_program *p, int argc,
                     char **argv, bool *check_only, char *err);
/* Whether u is an http:// URL naming a host (http://host[:port][/path]), at most 512 bytes, with
 * no query, fragment, space or quote. */
bool kv_cfg_http_url_ok(const char *u);

#endif
