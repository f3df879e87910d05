/* Partitioned reads on PostgreSQL: one snapshot exported by a coordinating
 * transaction and imported by every worker, and the ranges of the
 * partition column each worker reads (boundaries computed by PostgreSQL in
 * the column's own type); or the whole query with PostgreSQL's own
 * parallel workers; and what a reading backend waits on, to tell which. */
#ifndef DS_SOURCE_RANGES_H
#define DS_SOURCE_RANGES_H

#include <stdbool.h>

#include "common/error.h"
#include "source/pgsrc.h"

/* Conditions on the partition column that together cover every row once:
 * (-inf, b1), [b1, b2), ..., [bn, +inf), and IS NULL. */
typedef struct pgsrc_ranges {
    char **conditions;
    size_t n;
} pgsrc_ranges;

/* pg_export_snapshot() inside the caller's read transaction
 * (pgsrc_begin_read): the snapshot's name (malloc'd). The transaction must
 * stay open until every worker has imported it. */
bool pgsrc_export_snapshot(pgsrc_conn *conn, char **snapshot, ds_error *err);
/* A read-only repeatable-read transaction on an exported snapshot. */
bool pgsrc_import_snapshot(pgsrc_conn *conn, const char *snapshot, ds_error *err);

/* The query that returns up to ranges-1 distinct inner boundaries of col
 * over the query's rows, as text in order. */
char *pgsrc_bounds_sql(const char *query, const pgsrc_column *col, int ranges);
/* col >= lo AND col < hi; lo or hi NULL leaves that side open; both NULL
 * is col IS NOT NULL. lo and hi are SQL expressions (typed literals). */
char *pgsrc_range_sql(const char *col, const char *lo, const char *hi);

/* The condition of an incremental read: col > literal::pg_type (>= when
 * inclusive) or col IS NULL (a row without a value is read every time and
 * stored once); text compared byte-wise (COLLATE "C"), as DuckDB orders
 * it; literal already quoted (pgsrc_quote_literal). */
char *pgsrc_since_sql(const pgsrc_column *col, const char *literal, bool inclusive);

/* Computes the ranges (about `ranges` of them) on conn. */
bool pgsrc_plan_ranges(pgsrc_conn *conn, const char *query, const pgsrc_column *col, int ranges,
                       pgsrc_ranges *out, ds_error *err);
void pgsrc_ranges_free(pgsrc_ranges *r);

/* Whether PostgreSQL plans query with parallel workers (a Gather) once
 * parallelism is made free to its planner (SET LOCAL in the caller's
 * transaction: max_parallel_workers_per_gather = workers;
 * parallel_setup_cost, parallel_tuple_cost and
 * min_parallel_table_scan_size 0): the leader streams the COPY, the
 * workers scan (each through a ring of buffers, as a serial read) and
 * compute the query's expressions. The settings stay only when it does; a
 * server (or role) whose max_parallel_workers_per_gather is 0 has said no.
 * The settings and the EXPLAIN go in one round trip, a workers setting of
 * 0 included. */
bool pgsrc_plans_parallel(pgsrc_conn *conn, const char *query, int workers, bool *parallel, ds_error *err);
/* Those settings back to their defaults, in one round trip. */
bool pgsrc_parallel_off(pgsrc_conn *conn, ds_error *err);

/* How many of `samples` looks at backend pid, interval_s apart, found it
 * waiting to send to its client (wait event ClientWrite: its socket is
 * full), in one statement on conn (another connection of the same role). */
bool pgsrc_sample_send_waits(pgsrc_conn *conn, int pid, int samples, double interval_s, int *waiting,
                             ds_error *err);

#endif
