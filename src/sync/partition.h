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
} partition_read;

/* Exports a snapshot on conn (kept open until the workers are done), plans
 * about 4 ranges per worker and runs the workers. */
bool partition_load(const partition_read *read, pgsrc_conn *pg, ds_error *err);

#endif
