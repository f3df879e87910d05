/* Command implementations for the duckstore CLI. */
#include "cli/commands.h"

#include <duckdb.h>
#include <stdio.h>

#include "common/version.h"

static int not_yet(const char *name)
{
    fprintf(stderr, "duckstore: %s is not available in this build\n", name);
    return CLI_EXIT_USAGE;
}

int cli_cmd_sync(const cli_globals *g, int argc, char **argv)
{
    (void)g, (void)argc, (void)argv;
    return not_yet("sync");
}

int cli_cmd_status(const cli_globals *g, int argc, char **argv)
{
    (void)g, (void)argc, (void)argv;
    return not_yet("status");
}

int cli_cmd_reset_watermark(const cli_globals *g, int argc, char **argv)
{
    (void)g, (void)argc, (void)argv;
    return not_yet("reset-watermark");
}

int cli_cmd_check_config(const cli_globals *g, int argc, char **argv)
{
    (void)g, (void)argc, (void)argv;
    return not_yet("check-config");
}

int cli_cmd_version(const cli_globals *g, int argc, char **argv)
{
    (void)g, (void)argc, (void)argv;
    printf("duckstore %s (DuckDB %s)\n", DS_VERSION, duckdb_library_version());
    return CLI_EXIT_OK;
}
