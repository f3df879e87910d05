/* /api/store/query: one read-only SQL statement over the cache, answered as
 * JSON, NDJSON, CSV or Parquet streamed chunk by chunk (docs/api.md). Each
 * query runs on its own thread, connection and READ ONLY transaction; the
 * HTTP thread is suspended while the query has nothing to send. */
#ifndef DS_SERVER_QUERY_H
#define DS_SERVER_QUERY_H

#include "server/api.h"

/* Answers GET and POST /api/store/query (token already checked). */
enum MHD_Result query_route(api_ctx *a, http_request *req, const char *method);

/* The read-only rule of /api/store/query and of the PostgreSQL protocol:
 * NULL when the prepared statement is a read (SELECT, EXPLAIN and what
 * DuckDB plans as them), else the kind it is ("INSERT", "CREATE", ...). */
const char *query_refused_kind(duckdb_prepared_statement ps);

/* Refuses new queries, interrupts the running ones and waits until every
 * query thread has left DuckDB and resumed its connection: call before the
 * HTTP daemon stops and the store closes. */
void query_shutdown(void);

#endif
