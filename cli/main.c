/* cli/main.c - triekv-cli's entry point: the global options, the server address (--server, else
 * TRIEKV_URL, else http://127.0.0.1:3030), the overview help, and dispatch to one command.
 *
 * Exit statuses are those of enum cli_exit (docs/CLI.md): every path out of a command has printed
 * its one line on stderr before it returns one. Threads: main thread; only bench starts others. */
#include "cli/cli_int.h"

#include <stdlib.h>
#include <string.h>

static const struct cli_command *const commands[] = {
    &cli_cmd_get,   &cli_cmd_set,         &cli_cmd_delete, &cli_cmd_range,
    &cli_cmd_stats, &cli_cmd_watch_stats, &cli_cmd_bench,
};
#define NCOMMANDS (sizeof commands / sizeof commands[0])

static void print_overview(FILE *f)
{
    fprintf(f,
            "usage: %s [--server URL] [--timeout SECONDS] COMMAND [ARGS] [--json]\n\n"
            "A command-line client of a triekv server (docs/CLI.md).\n\ncommands:\n",
            CLI_NAME);
    for (size_t i = 0; i < NCOMMANDS; i++)
        fprintf(f, "  %-12s %s\n", commands[i]->name, commands[i]->summary);
    fprintf(f,
            "\nglobal options (anywhere on the line):\n"
            "  --server URL       the server, http://HOST[:PORT] (default: $TRIEKV_URL, else %s)\n"
            "  --timeout SECONDS  longest time one request may take (default %d; connecting: at most 2)\n"
            "  --json             machine-readable output\n"
            "  -h, --help         help; `%s help COMMAND` or `%s COMMAND --help` for one command\n"
            "  --version          the client's version\n"
            "\nexit status: 0 ok, 1 a key was missing or a precondition failed, 2 usage error (or a\n"
            "request the server refused as invalid), 3 the server is unreachable or failed.\n"
            "\nexamples:\n"
            "  %s set greeting=hello\n"
            "  %s get greeting\n"
            "  TRIEKV_URL=http://10.0.0.5:3030 %s stats\n",
            CLI_DEFAULT_URL, CLI_TIMEOUT_S_DEFAULT, CLI_NAME, CLI_NAME, CLI_NAME, CLI_NAME, CLI_NAME);
}

static const struct cli_command *find_command(const char *name)
{
    for (size_t i = 0; i < NCOMMANDS; i++)
        if (strcmp(commands[i]->name, name) == 0)
            return commands[i];
    return NULL;
}

static int unknown_command(const struct cli *c, const char *name)
{
    return cli_usage(c,
                     "unknown command '%s'; the commands are get, set, delete, range, stats, watch-stats "
                     "and bench",
                     name);
}

/* `triekv-cli help [COMMAND]` */
static int run_help(const struct cli *c, int argc, char **argv)
{
    if (argc == 0) {
        print_overview(stdout);
        return cli_out_finish();
    }
    const struct cli_command *cmd = find_command(argv[0]);
    if (cmd == NULL || argc > 1)
        return cmd == NULL ? unknown_command(c, argv[0]) : cli_usage(c, "help takes one command name");
    fputs(cmd->help, stdout);
    return cli_out_finish();
}

/* The server address before the options: $TRIEKV_URL or the default. A bad TRIEKV_URL is reported
 * only if no --server replaces it (when the first request is made). */
static void default_server(struct cli *c)
{
    const char *env = getenv("TRIEKV_URL");
    char why[CLI_MSG_MAX / 2];
    if (env == NULL || env[0] == 0) {
        snprintf(c->url, sizeof c->url, "%s", CLI_DEFAULT_URL);
    } else if (cli_url_normalize(env, c->url, sizeof c->url, why, sizeof why) != 0) {
        c->url[0] = 0;
        snprintf(c->url_error, sizeof c->url_error,
                 "TRIEKV_URL=%.200s: %s (fix it, unset it, or give --server)", env, why);
    }
}

/* --help or -h anywhere before "--" wins over any mistake on the line: asking for help is never an
 * error. (A key spelled "-h" is given after "--".) */
static bool wants_help(int argc, char **argv)
{
    for (int i = 0; i < argc && strcmp(argv[i], "--") != 0; i++)
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0)
            return true;
    return false;
}

enum { OPT_VERSION };

static int run(struct cli *c, int argc, char **argv)
{
    static const struct cli_opt opts[] = {{"--version", 0, OPT_VERSION}, {NULL, 0, 0}};
    struct cli_args a = {.argc = argc - 1, .argv = argv + 1};
    const char *val[2];
    switch (cli_args_next(c, &a, opts, val)) { /* global options until the command word */
    case CLI_ARG_ERR:
        return CLI_USAGE;
    case CLI_ARG_HELP:
        print_overview(stdout);
        return cli_out_finish();
    case OPT_VERSION:
        printf("%s %s\n", CLI_NAME, CLI_VERSION);
        return cli_out_finish();
    case CLI_ARG_END:
        print_overview(stderr);
        return cli_usage(c, "no command given");
    default: /* CLI_ARG_POS */
        break;
    }
    if (strcmp(val[0], "help") == 0)
        return run_help(c, a.argc - a.i, a.argv + a.i);
    c->cmd = find_command(val[0]);
    if (c->cmd == NULL)
        return unknown_command(c, val[0]);
    int rc = wants_help(a.argc - a.i, a.argv + a.i) ? CLI_HELP : c->cmd->run(c, a.argc - a.i, a.argv + a.i);
    if (rc != CLI_HELP)
        return rc;
    fputs(c->cmd->help, stdout);
    return cli_out_finish();
}

int main(int argc, char **argv)
{
    struct cli c = {.timeout_s = CLI_TIMEOUT_S_DEFAULT};
    default_server(&c);
    int rc = cli_http_global_init();
    if (rc != CLI_OK)
        return rc;
    rc = run(&c, argc, argv);
    cli_http_destroy(c.http);
    cli_http_global_cleanup();
    return rc;
}
