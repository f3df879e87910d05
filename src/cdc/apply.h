/* Applying a logical replication stream's changes to the cached tables.
 *
 * Changes are collected per table and applied in batches inside the
 * caller's DuckDB transaction: within a batch each key keeps only its last
 * version (an update that changes the key ends the old one), so a batch
 * costs one DELETE of every key it touched and one INSERT of the rows that
 * remain, whatever the mix of inserts, updates and deletes. The select list
 * and WHERE of the source's query are evaluated by DuckDB on each new
 * version, so a row that stops matching the query leaves the cache.
 *
 * Values arrive in PostgreSQL's binary send format and are decoded by the
 * binary COPY decoder (a change is turned into a COPY tuple). An unchanged
 * TOASTed value ('u') is taken from the old row (REPLICA IDENTITY FULL), an
 * earlier version in the batch, or the stored row; when none has it the
 * batch fails with DS_ERR_RELOAD: the source must be loaded again.
 *
 * A table identified by the whole row (REPLICA IDENTITY FULL, no key) may
 * hold identical rows that only their place tells apart: there a batch
 * counts copies per distinct row instead (an insert adds one, a delete
 * takes one, an update does both), then deletes and inserts that many. */
#ifndef DS_CDC_APPLY_H
#define DS_CDC_APPLY_H

#include <duckdb.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/error.h"
#include "source/pgoutput.h"
#include "source/pgtypes.h"

/* What one cached table is made of: the query's table and how the cache
 * stores it. Strings are borrowed for the applier's life. */
typedef struct cdc_target_spec {
    const char *table;       /* DuckDB table the query fills */
    const char *select_list; /* the query's select list, evaluated by DuckDB */
    const char *alias;       /* the name the select list and where refer to the table by */
    const char *where;       /* NULL: every row */
    /* The key rows are deleted and updated by: relation column names and
     * the cached table's column that stores each as it is. */
    const char *const *key_cols;
    const char *const *key_target_cols;
    size_t nkey;
    /* The key is the whole row (REPLICA IDENTITY FULL): it may hold NULLs,
     * and identical rows share it, so each change adds or takes one copy. */
    bool whole_row;
    /* Relation column -> cached column storing it as is (NULL: none), for
     * filling unchanged TOASTed values from the stored row. */
    const char *const *plain_source; /* names of relation columns copied as is */
    const char *const *plain_target; /* the cached column of each */
    size_t nplain;
} cdc_target_spec;

typedef struct cdc_applier cdc_applier;

/* An applier for ntargets tables on duck (a connection of the store). */
cdc_applier *cdc_applier_new(duckdb_connection duck, const cdc_target_spec *targets, size_t ntargets);
void cdc_applier_free(cdc_applier *a);

/* The table's columns as the stream describes them (a Relation message),
 * with the read plan of each (types[i] for rel->cols[i]: the caller looks
 * up types that are not built in). Pending changes of the table are
 * flushed first. A key column the relation lacks is DS_ERR_RELOAD. */
bool cdc_applier_relation(cdc_applier *a, size_t target, const pgo_relation *rel, const pgsrc_type *types,
                          ds_error *err);

/* Queues an Insert, Update or Delete of the target's table. */
bool cdc_applier_change(cdc_applier *a, size_t target, const pgo_message *m, ds_error *err);

/* Empties the target's table (after applying what is queued before it). */
bool cdc_applier_truncate(cdc_applier *a, size_t target, ds_error *err);

/* Applies every queued change in the caller's open DuckDB transaction. */
bool cdc_applier_flush(cdc_applier *a, ds_error *err);

/* Changes queued and not yet flushed, and their bytes. */
size_t cdc_applier_pending(const cdc_applier *a);
size_t cdc_applier_pending_bytes(const cdc_applier *a);

/* Changes applied since the applier was created (inserts, updates,
 * deletes as received). */
uint64_t cdc_applier_applied(const cdc_applier *a);

/* Stored rows the flushed batches deleted (an update deletes the old
 * version) since cdc_applier_forget_removed, plus the updates and deletes
 * queued: at most the rows whose deletion DuckDB marks in memory until
 * its next checkpoint (a delete in a stored vector of 2,048 rows makes
 * DuckDB hold that vector's version information, about 21 KB). */
uint64_t cdc_applier_removed(const cdc_applier *a);
void cdc_applier_forget_removed(cdc_applier *a);

#endif
