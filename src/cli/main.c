/* duckstore command line: takes the global options wherever they stand,
 * splits --option=value, answers help and --version, and dispatches to one
 * command. Commands only call the sync and store APIs. */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/commands.h"
#include "common/log.h"

static const cli_command commands[] = {
    {"sync", "sync [NAME...] [--full] [--dry-run]", "sync the named sources, or every enabled source",
     "  NAME        a source (monitoring) or its status key (monitoring_data); several may be given\n"
     "  --full      rebuild every table in full instead of reading from the watermarks\n"
     "  --dry-run   print what the sync would do (duckstore plan) and change nothing\n"
     "Ctrl-C cancels the running sync; the DuckDB file keeps its previous data (exit 130).\n",
     cli_cmd_sync},
    {"plan", "plan [NAME...] [--full]", "show what a sync would do, changing nothing",
     "  NAME        a source or its status key; default: every enabled source\n"
     "  --full      plan a full rebuild, as sync --full would run\n"
     "For each table: full or incremental and why, the watermark and commit horizon, the SQL\n"
     "sent to PostgreSQL, PostgreSQL's row estimate and the warnings. The DuckDB file is opened\n"
     "read-only and PostgreSQL is read in a read-only transaction.\n",
     cli_cmd_plan},
    {"status", "status [--json]", "show the sync status of every source",
     "  --json      the status document (as GET /api/store/status answers it)\n", cli_cmd_status},
    {"reset-watermark", "reset-watermark NAME", "clear a source's watermarks (next sync is full)",
     "  NAME        a source or its status key\n", cli_cmd_reset_watermark},
    {"publish", "publish NAME", "write a source's data as a new Parquet version (its publish: section)",
     "  NAME        a source with a publish: section\n"
     "Through a running duckstore serve when one holds the DuckDB file.\n",
     cli_cmd_publish},
    {"check-config", "check-config [--offline]", "validate the config and describe every query",
     "  --offline   do not connect to PostgreSQL (YAML and keys only)\n", cli_cmd_check_config},
    {"drop-slot", "drop-slot NAME [--url URL]", "drop a logical source's replication slot and publication",
     "  NAME        a replication slot (duckstore_monitoring) or a source name (monitoring)\n"
     "  --url URL   the server to drop it on (default: the source's url, else every configured\n"
     "              source's server is searched)\n"
     "Refused while a process streams from the slot. duckstore's own publication of the\n"
     "source is dropped too unless a configured source still uses it.\n",
     cli_cmd_drop_slot},
    {"serve", "serve [--listen HOST:PORT]",
     "run the HTTP API, scheduler and startup sync (default 127.0.0.1:8500)",
     "  --listen HOST:PORT   address to listen on (default 127.0.0.1:8500)\n"
     "Set DUCKSTORE_API_TOKEN to require Authorization: Bearer <token> on /api/.\n",
     cli_cmd_serve},
    {"query", "query [--format F] SQL",
     "run a read-only SQL query on the DuckDB cache (F: table, tsv, csv, json; default table on a terminal, "
     "else tsv)",
     "  --format F  table, tsv, csv or json (default: table on a terminal, else tsv);\n"
     "              NULL prints as NULL in table and tsv, as an empty field in csv, null in json\n",
     cli_cmd_query},
    {"version", "version", "print the version", "", cli_cmd_version},
    {"help", "help [COMMAND]", "this help, or a command's", "", NULL},
};
#define NCOMMANDS (sizeof commands / sizeof commands[0])

static const char global_options[] =
    "global options (before or after the command; --option=value works too):\n"
    "  --config-dir DIR   YAML config directory (default ./config)\n"
    "  --db PATH          DuckDB file (overrides duckdb.path)\n"
    "  -v, --verbose      debug logging: each table's decisions and step times\n"
    "  --log-format F     log lines as text (default) or json (one object per line)\n"
    "  -h, --help         this help (after a command: the command's)\n"
    "  --version          print the version\n";

static void usage(FILE *out)
{
    fprintf(out, "usage: duckstore [OPTIONS] COMMAND [ARGS]\n\n"
                 "Keeps a DuckDB analytics cache in sync with PostgreSQL.\n\n"
                 "commands:\n");
    for (size_t i = 0; i < NCOMMANDS; i++)
        fprintf(out, "  %-36s %s\n", commands[i].usage, commands[i].summary);
    fprintf(out, "\n%s\nduckstore help COMMAND shows a command's options.\n", global_options);
}

static const cli_command *find_command(const char *name)
{
    for (size_t c = 0; c < NCOMMANDS; c++)
        if (strcmp(name, commands[c].name) == 0)
            return &commands[c];
    return NULL;
}

static void command_help(const cli_command *cmd)
{
    printf("usage: duckstore [OPTIONS] %s\n\n%s.\n", cmd->usage, cmd->summary);
    if (cmd->options[0] != '\0')
        printf("\n%s", cmd->options);
    printf("\n%s", global_options);
}

static int unknown_command(const char *name)
{
    fprintf(stderr, "duckstore: unknown command \"%s\" (duckstore help lists them)\n", name);
    return CLI_EXIT_USAGE;
}

/* `duckstore help [COMMAND]` */
static int run_help(int argc, char **argv)
{
    if (argc == 0) {
        usage(stdout);
        return CLI_EXIT_OK;
    }
    const cli_command *cmd = find_command(argv[0]);
    if (argc > 1 || cmd == NULL)
        return argc > 1 ? (fprintf(stderr, "usage: duckstore help [COMMAND]\n"), CLI_EXIT_USAGE)
                        : unknown_command(argv[0]);
    command_help(cmd);
    return CLI_EXIT_OK;
}

/* A global option's value: the next argument. False after saying so. */
static bool option_value(int argc, char **argv, int *i, const char **value)
{
    if (*i + 1 >= argc) {
        fprintf(stderr, "duckstore: %s needs a value (see duckstore --help)\n", argv[*i]);
        return false;
    }
    *value = argv[++*i];
    return true;
}

int main(int argc, char **argv)
{
    cli_globals globals = {.config_dir = "config", .db_path = NULL};
    /* "--option=value" becomes "--option" "value"; global options are taken
     * out wherever they stand; what is left is the command and its
     * arguments. Past "--" every argument is the command's as it is. */
    char **args = calloc((size_t)argc * 2 + 1, sizeof *args);
    char **rest = calloc((size_t)argc * 2 + 1, sizeof *rest);
    if (args == NULL || rest == NULL) {
        fprintf(stderr, "duckstore: out of memory\n");
        return CLI_EXIT_SYNC_ERROR;
    }
    int nargs = 0, nrest = 0;
    bool literal = false;
    for (int i = 1; i < argc; i++) {
        char *eq = strchr(argv[i], '=');
        literal = literal || strcmp(argv[i], "--") == 0;
        if (!literal && strncmp(argv[i], "--", 2) == 0 && eq != NULL) {
            *eq = '\0';
            args[nargs++] = argv[i];
            args[nargs++] = eq + 1;
        } else {
            args[nargs++] = argv[i];
        }
    }
    bool help = false, version = false;
    int rc = -1;
    literal = false;
    for (int i = 0; rc < 0 && i < nargs; i++) {
        const char *arg = args[i];
        if (literal || strcmp(arg, "--") == 0) {
            if (literal)
                rest[nrest++] = args[i];
            literal = true;
        } else if (strcmp(arg, "-h") == 0 || strcmp(arg, "--help") == 0) {
            help = true;
        } else if (strcmp(arg, "--version") == 0) {
            version = true;
        } else if (strcmp(arg, "-v") == 0 || strcmp(arg, "--verbose") == 0) {
            globals.verbose = 1;
        } else if (strcmp(arg, "--config-dir") == 0) {
            if (!option_value(nargs, args, &i, &globals.config_dir))
                rc = CLI_EXIT_USAGE;
        } else if (strcmp(arg, "--db") == 0) {
            if (!option_value(nargs, args, &i, &globals.db_path))
                rc = CLI_EXIT_USAGE;
        } else if (strcmp(arg, "--log-format") == 0) {
            const char *value = NULL;
            ds_log_format format;
            if (!option_value(nargs, args, &i, &value)) {
                rc = CLI_EXIT_USAGE;
            } else if (!ds_log_parse_format(value, &format)) {
                fprintf(stderr, "duckstore: --log-format must be text or json, got \"%s\"\n", value);
                rc = CLI_EXIT_USAGE;
            } else {
                ds_log_set_format(format);
            }
        } else if (nrest == 0 && arg[0] == '-') {
            fprintf(stderr, "duckstore: unknown option %s (see duckstore --help)\n", arg);
            rc = CLI_EXIT_USAGE;
        } else {
            rest[nrest++] = args[i];
        }
    }
    const cli_command *cmd = rc < 0 && nrest > 0 ? find_command(rest[0]) : NULL;
    if (rc >= 0) {
        /* a usage error, said above */
    } else if (version) {
        rc = cli_cmd_version(&globals, 0, NULL);
    } else if (nrest > 0 && cmd == NULL) {
        rc = unknown_command(rest[0]);
    } else if (help && cmd != NULL) {
        command_help(cmd);
        rc = CLI_EXIT_OK;
    } else if (help) {
        usage(stdout);
        rc = CLI_EXIT_OK;
    } else if (nrest == 0) {
        usage(stderr);
        rc = CLI_EXIT_USAGE;
    } else if (cmd->run == NULL) {
        rc = run_help(nrest - 1, rest + 1);
    } else {
        rc = cmd->run(&globals, nrest - 1, rest + 1);
    }
    free(args);
    free(rest);
    return rc;
}
