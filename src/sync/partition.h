/* Partitioned full reads: several workers, each on its own PostgreSQL
 * connection and DuckDB insert stream, read ranges of partition_column from
 * one shared snapshot. Internal to the sync engine. */
#ifndef DS_SYNC_PARTITION_H
#define DS_SYNC_PARTITION_H

#include "sync/pump.h"

/* What a partitioned read loads, and where. */
typedef struct partition_read {
    store *st;
    const cfg_config *cfg;
    const cfg_source *src;
    const sync_options *opt;
    const char *table_ref; /* staging table, quoted */
    const char *query;
    const pgsrc_desc *desc;
    const pgsrc_column *col; /* partition_column */
    int workers;
    pump_shared *shared;
    /* Empties the target (table_ref) again, when the whole query's read
     * is dropped to read in ranges. */
    bool (*restart)(void *ctx, ds_error *err);
    void *restart_ctx;
} partition_read;

/* What a window of a partitioned read measured. */
typedef struct partition_measure {
    double wait_share; /* of the streams' time, spent waiting for PostgreSQL's data */
    double idle_cores; /* the machine's idle CPU, in cores */
    int cores;
} partition_measure;

typedef enum partition_bound {
    PARTITION_DUCKDB_BOUND,  /* the streams are busy and no core is idle: more would contend */
    PARTITION_PG_BOUND,      /* the streams wait for PostgreSQL: more readers add its output */
    PARTITION_IDLE_CORES,    /* the streams are busy and cores are idle: one more uses them */
    PARTITION_NETWORK_BOUND, /* the streams and their backends both wait, to read and to send: the
                              * path between is the limit, and more connections add to what it
                              * carries */
} partition_bound;

/* How many insert streams to add to the running ones, at most asked in
 * all, after a window that measured m; bound says why. */
int partition_streams_to_add(const partition_measure *m, int asked, int running, partition_bound *bound);
/* Whether the path between PostgreSQL and duckstore is the read's limit,
 * after a window that measured m, whose backend then waited to send
 * (PostgreSQL's ClientWrite) send_share of the time. */
bool partition_network_bound(const partition_measure *m, double send_share);
const char *partition_bound_text(partition_bound bound);

/* Reads the whole query on conn (in its read transaction), which is the
 * whole read unless the first measure says more streams help; then reads
 * again: with PostgreSQL's parallel workers (PostgreSQL-bound, where its
 * planner can, and not network-bound), or in about 4 ranges per worker on a snapshot exported by
 * conn (kept open until the workers are done), read by the workers the
 * measure asked for and more (up to read->workers) while a measure says
 * they help. DUCKSTORE_INSERT_STREAMS sets the number of range workers
 * instead; DUCKSTORE_READ_BOUND pins the first verdict. Logs what it chose
 * and why. */
bool partition_load(const partition_read *read, pgsrc_conn *pg, ds_error *err);

#endif
