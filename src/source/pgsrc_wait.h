/* Waiting for PostgreSQL within a connection's silence bound; shared by the
 * files of src/source that talk to libpq. Internal to the module. */
#ifndef DS_SOURCE_PGSRC_WAIT_H
#define DS_SOURCE_PGSRC_WAIT_H

#include "source/pgsrc.h"

/* Waits until the server sends something (or the connection's stop flag
 * is set, or silence_s passes), then lets libpq read it. */
bool pgsrc_await_input(pgsrc_conn *conn, ds_error *err);

/* What PQexec would return for the statement just sent with PQsend*,
 * within the same bounds; NULL once the results are done or on failure. */
PGresult *pgsrc_await_result(pgsrc_conn *conn, ds_error *err);

#endif
