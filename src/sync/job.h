/* One table of a sync: describe its query, decide full or incremental,
 * and read it into a staging table, on a thread of its own. What it leaves
 * in the job is what the commit applies. Internal to the sync engine. */
#ifndef DS_SYNC_JOB_H
#define DS_SYNC_JOB_H

#include "source/horizon.h"
#include "store/tables.h"
#include "sync/incremental.h"
#include "sync/pump.h"
#include "sync/sync.h"

/* Why a table is read in full or incrementally (duckstore plan, -v). */
typedef enum job_decision {
    JOB_INCREMENTAL,
    JOB_FULL_ASKED,
    JOB_FULL_NO_COLUMN,
    JOB_FULL_NO_USABLE_COLUMN,
    JOB_FULL_NO_TABLE,
    JOB_FULL_NO_WATERMARK,
    JOB_FULL_OTHER_COLUMN,
    JOB_FULL_SCHEMA_CHANGED,
} job_decision;

/* The steps of a job, timed for duckstore -v. */
typedef enum job_step {
    JOB_STEP_CONNECT,  /* a PostgreSQL connection: a kept one, or a new one */
    JOB_STEP_DESCRIBE, /* describe the query (a kept connection's check), read the table's metadata, decide */
    JOB_STEP_STAGING,  /* create the staging table */
    JOB_STEP_HORIZON,  /* commit horizon, the read's snapshot, late commits, read start */
    JOB_STEP_READ,     /* COPY into the staging table */
    JOB_STEP_IDS,      /* dataset_id uniqueness of the loaded rows */
    JOB_NSTEPS
} job_step;
const char *job_step_name(job_step step);

typedef struct table_job {
    pthread_t thread;
    store *st;
    const cfg_config *cfg;
    const cfg_source *src;
    const sync_options *opt;
    const cfg_query_plan *plan;
    int slot; /* index in the source's plans and the progress */
    /* The staging table in SQL: in the file for a full load (it is renamed
     * into place), in the in-memory catalog for an incremental batch (no
     * WAL or fsync for rows that are merged moments later). */
    char *staging_ref;
    bool staging_made; /* an incremental batch's is made when its first row is stored */
    /* results */
    pgsrc_desc desc;
    store_column *columns; /* desc as the store sees it */
    char *signature;
    bool has_inc_col, incremental;
    job_decision why;
    int inc_idx; /* incremental column in desc, -1 when absent */
    char *old_watermark;
    bool old_inclusive;
    pgsrc_horizon horizon; /* value NULL for a column that is not a time */
    char *read_start;      /* incremental reads: where this one started, NULL: the beginning */
    bool start_inclusive, overlap;
    /* Late commits (commit_horizon): the read's snapshot, what the last
     * read left (prev) and what this one leaves (next), and who holds the
     * oldest transaction still in progress (status). */
    bool tracks_xacts;
    pgsrc_snapshot snap;
    inc_read_state prev_state, next_state;
    size_t late_commits;
    char *pending_holder;
    int64_t rows_inserted, rows_updated;
    int64_t rows_loaded;
    int64_t bytes_loaded; /* their COPY data */
    bool truncated;
    /* An incremental read of an append-only table keeps its rows when they
     * are few (src/sync/memo.h): a batch the store already holds is then
     * not merged. */
    pgsrc_kept_rows kept;
    bool
        unchanged; /* the batch is stored already (found by the read or the commit): the table is as it was */
    char *known_max;     /* then: the incremental column's maximum, as remembered */
    int64_t known_count; /* and its row count */
    char *next_max;      /* the maximum the commit computed (or knew) */
    /* Dataset table of a split source: the rows this sync loaded keep each
     * dataset_id stored at most once (1), do not (0), not checked (-1). */
    int batch_ids_unique;
    double step_ms[JOB_NSTEPS];
    double described_from; /* when the (last) description of the query began */
    sync_report warnings;
    bool ok;
    ds_error err;
} table_job;

void job_init(table_job *job, store *st, const cfg_config *cfg, const cfg_source *src,
              const sync_options *opt, size_t slot);
/* The thread body: connects, runs the job, sets job->ok / job->err. */
void *job_main(void *arg);
void job_free(table_job *job);

/* The steps of a job a plan runs too, so that the plan and the sync
 * decide alike: describe the query and decide full or incremental; then
 * take the commit horizon, begin the read's transaction (REPEATABLE READ,
 * READ ONLY; the caller ends it) and settle the read start and row budget;
 * then the COPY statement of a one-stream read (NULL: out of memory). */
bool job_describe_and_decide(table_job *job, pgsrc_conn *pg, duckdb_connection duck);
bool job_open_read(table_job *job, pgsrc_conn *pg, duckdb_connection duck, pump_shared *shared);
char *job_copy_sql(table_job *job, pgsrc_conn *pg, pump_shared *shared);
/* Partitioned readers of a full read (1: one stream). */
int job_partitions(const table_job *job);
const char *job_decision_text(job_decision why);

/* DuckDB type of the incremental column, NULL when the job has none. */
const char *job_inc_type(const table_job *job);
/* The incremental batch the job read, as the commit merges it. */
inc_batch job_batch(const table_job *job);

#endif
