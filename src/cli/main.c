/* duckstore command line: parses global options and dispatches to one
 * command. Commands only call the sync and store APIs. */
#include <stdio.h>
#include <string.h>

#include "cli/commands.h"
#include "common/log.h"

static const cli_command commands[] = {
    {"sync", "sync [NAME] [--full]", "sync one source, or every enabled source", cli_cmd_sync},
    {"status", "status [--json]", "show the sync status of every source", cli_cmd_status},
    {"reset-watermark", "reset-watermark NAME", "clear a source's watermarks (next sync is full)",
     cli_cmd_reset_watermark},
    {"check-config", "check-config [--offline]", "validate the config and describe every query",
     cli_cmd_check_config},
    {"serve", "serve [--listen HOST:PORT]",
     "run the HTTP API, scheduler and startup sync (default 127.0.0.1:8500)", cli_cmd_serve},
    {"query", "query [--format F] SQL",
     "run a read-only SQL query on the DuckDB cache (F: table, tsv, csv, json; default table on a terminal, "
     "else tsv)",
     cli_cmd_query},
    {"version", "version", "print the version", cli_cmd_version},
};

static void usage(FILE *out)
{
    fprintf(out, "usage: duckstore [--config-dir DIR] [--db PATH] COMMAND [ARGS]\n\n"
                 "Keeps a DuckDB analytics cache in sync with PostgreSQL.\n\n"
                 "commands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(out, "  %-28s %s\n", commands[i].usage, commands[i].summary);
    fprintf(out, "\nglobal options:\n"
                 "  --config-dir DIR             YAML config directory (default ./config)\n"
                 "  --db PATH                    DuckDB file (overrides duckdb.path)\n"
                 "  -v, --verbose                debug logging\n"
                 "  --log-format text|json       log lines as text (default) or one JSON object each\n"
                 "  -h, --help                   this help\n");
}

int main(int argc, char **argv)
{
    cli_globals globals = {.config_dir = "config", .db_path = NULL};
    int i = 1;
    for (; i < argc && argv[i][0] == '-'; i++) {
        const char *arg = argv[i];
        if (strcmp(arg, "-h") == 0 || strcmp(arg, "--help") == 0) {
            usage(stdout);
            return 0;
        } else if (strcmp(arg, "-v") == 0 || strcmp(arg, "--verbose") == 0) {
            globals.verbose = 1;
        } else if (strcmp(arg, "--log-format") == 0 && i + 1 < argc) {
            ds_log_format format;
            if (!ds_log_parse_format(argv[++i], &format)) {
                fprintf(stderr, "duckstore: --log-format must be text or json, got \"%s\"\n", argv[i]);
                return CLI_EXIT_USAGE;
            }
            ds_log_set_format(format);
        } else if ((strcmp(arg, "--config-dir") == 0 || strcmp(arg, "--db") == 0) && i + 1 < argc) {
            if (strcmp(arg, "--db") == 0)
                globals.db_path = argv[++i];
            else
                globals.config_dir = argv[++i];
        } else {
            fprintf(stderr, "duckstore: unknown or incomplete option %s\n\n", arg);
            usage(stderr);
            return CLI_EXIT_USAGE;
        }
    }
    if (i >= argc) {
        usage(stderr);
        return CLI_EXIT_USAGE;
    }
    for (size_t c = 0; c < sizeof commands / sizeof commands[0]; c++)
        if (strcmp(argv[i], commands[c].name) == 0)
            return commands[c].run(&globals, argc - i - 1, argv + i + 1);
    fprintf(stderr, "duckstore: unknown command \"%s\"\n\n", argv[i]);
    usage(stderr);
    return CLI_EXIT_USAGE;
}
