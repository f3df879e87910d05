/* What PostgreSQL can still commit below a read (docs/incremental.md):
 * the time horizon (the start of the oldest transaction open on the source
 * database, for time columns) and the read's snapshot (the transactions in
 * progress when it was taken, prepared ones and, on a standby, the
 * primary's included), whose later commits the next reads look for. */
#ifndef DS_SOURCE_HORIZON_H
#define DS_SOURCE_HORIZON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/error.h"
#include "source/pgsrc.h"

typedef struct pgsrc_horizon {
    char *value;   /* literal in the column's type: UTC "...+00" for timestamptz */
    char *holder;  /* the open transaction holding it back, NULL when none */
    char *role;    /* the session's role (current_user) */
    bool sees_all; /* the role can see other sessions' transactions */
} pgsrc_horizon;

/* The query: horizon, holder description, whether the role sees all, the
 * role. only_now: the source's current time alone (commit_horizon off: a
 * future-dated row still cannot carry the watermark past now). */
char *pgsrc_horizon_sql(bool with_time_zone, bool only_now);

/* Must run before the snapshot that reads the rows, so that a transaction
 * committing in between is either visible to the read or counted here. */
bool pgsrc_take_horizon(pgsrc_conn *conn, bool with_time_zone, bool only_now, pgsrc_horizon *out,
                        ds_error *err);
void pgsrc_horizon_free(pgsrc_horizon *h);

/* What the commit horizon can see from a session: whether the server is a
 * hot standby (the primary's sessions are not in its pg_stat_activity) and
 * whether the role sees other users' sessions (pg_read_all_stats). */
typedef struct pgsrc_session_facts {
    bool standby, sees_all;
    char role[128];
} pgsrc_session_facts;
bool pgsrc_read_session_facts(pgsrc_conn *conn, pgsrc_session_facts *out, ds_error *err);

/* A read's snapshot: transaction ids below xmin had ended, those from xmax
 * on had not started; xip lists the ones in progress in between. 64-bit
 * ids (with the epoch), so they never wrap. A hot standby's snapshots do
 * not list them (PostgreSQL keeps the primary's in another array): there
 * xip holds xmax - 1 alone, standing for every id in [xmin, xmax), and
 * such an id counts as ended only once a later snapshot's xmin passes it. */
typedef struct pgsrc_snapshot {
    uint64_t xmin, xmax;
    uint64_t *xip;
    size_t nxip;
    bool standby;
    /* Transactions holding a write lock on what the query reads that have
     * no transaction id yet, so the snapshot cannot list them (a COPY
     * filling its first buffer, an INSERT in a slow trigger: their sequence
     * values are taken already), as "backend/local" virtual transaction ids
     * separated by commas; and the virtual ids of every running
     * transaction that has an id. Empty when none; NULL on a standby. */
    char *xidless;
    char *running_vxids;
} pgsrc_snapshot;

/* Parses PostgreSQL's text form "xmin:xmax:xip,xip,..." (pg_snapshot and
 * txid_snapshot alike); false when malformed or out of memory. */
bool pgsrc_parse_snapshot(const char *text, pgsrc_snapshot *out);
void pgsrc_snapshot_free(pgsrc_snapshot *s);

/* Begins the read's transaction (REPEATABLE READ, READ ONLY) and fixes
 * its snapshot: every statement of the read, and every partition worker
 * importing it, sees exactly out. The caller ends the transaction.
 *
 * On a primary, out->xip lists the transactions in progress that a later
 * read must wait for: those the snapshot lists, and those running past its
 * xmax (which it does not list: pg_locks shows them), less those that hold
 * no write lock on a relation query reads. Such a one has not written the
 * rows this read could see, and whatever it writes later takes values
 * after them (a sequence's next value; a time column is bounded by the
 * time horizon). One that ended between the snapshot and that check could
 * have written anything this read cannot see: the snapshot is taken anew
 * (up to five times; then it stays listed, which is safe). */
bool pgsrc_begin_read(pgsrc_conn *conn, const char *query, pgsrc_snapshot *out, ds_error *err);

/* pgsrc_take_horizon, then pgsrc_begin_read, in one round trip. */
bool pgsrc_begin_read_after_horizon(pgsrc_conn *conn, const char *query, bool with_time_zone, bool only_now,
                                    pgsrc_horizon *horizon, pgsrc_snapshot *out, ds_error *err);

/* How transactions noted in progress by an earlier read stand in the
 * current read's snapshot snap (inside the read's transaction). An id too
 * old for PostgreSQL to know, or one a standby saw end, counts as
 * committed. */
typedef enum pgsrc_xact_outcome {
    PGSRC_XACT_IN_PROGRESS, /* not visible to this read yet */
    PGSRC_XACT_COMMITTED,   /* its rows are visible to this read */
    PGSRC_XACT_ABORTED,
} pgsrc_xact_outcome;
bool pgsrc_xact_outcomes(pgsrc_conn *conn, const pgsrc_snapshot *snap, const uint64_t *xids, size_t n,
                         pgsrc_xact_outcome *out, ds_error *err);

/* Who holds transaction xid open, for the status: a session, a prepared
 * transaction, or (not visible here) a transaction on the primary or in
 * another database. NULL when out of memory or the query fails. */
char *pgsrc_describe_xact(pgsrc_conn *conn, uint64_t xid);

#endif
