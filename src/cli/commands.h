/* The CLI's commands; each returns the process exit code. */
#ifndef DS_CLI_COMMANDS_H
#define DS_CLI_COMMANDS_H

/* 128 + the signal after Ctrl-C or SIGTERM, as shells report it. */
enum { CLI_EXIT_OK = 0, CLI_EXIT_SYNC_ERROR = 1, CLI_EXIT_USAGE = 2, CLI_EXIT_SIGNAL = 128 };

typedef struct cli_globals {
    const char *config_dir;
    const char *db_path; /* NULL: duckdb.path from the config */
    int verbose;
} cli_globals;

typedef int (*cli_run_fn)(const cli_globals *globals, int argc, char **argv);

typedef struct cli_command {
    const char *name;
    const char *usage;
    const char *summary;
    const char *options; /* the command's help: its arguments and options */
    cli_run_fn run;      /* NULL: help */
} cli_command;

int cli_cmd_sync(const cli_globals *g, int argc, char **argv);
int cli_cmd_plan(const cli_globals *g, int argc, char **argv);
int cli_cmd_status(const cli_globals *g, int argc, char **argv);
int cli_cmd_publish(const cli_globals *g, int argc, char **argv);
int cli_cmd_reset_watermark(const cli_globals *g, int argc, char **argv);
int cli_cmd_check_config(const cli_globals *g, int argc, char **argv);
int cli_cmd_drop_slot(const cli_globals *g, int argc, char **argv);
int cli_cmd_serve(const cli_globals *g, int argc, char **argv);
int cli_cmd_query(const cli_globals *g, int argc, char **argv);
int cli_cmd_version(const cli_globals *g, int argc, char **argv);

#endif
