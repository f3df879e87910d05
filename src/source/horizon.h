/* The commit horizon of an incremental read on PostgreSQL: the start of the
 * oldest transaction still open on the source database (or now), below
 * which no row can still commit (docs/incremental.md). */
#ifndef DS_SOURCE_HORIZON_H
#define DS_SOURCE_HORIZON_H

#include <stdbool.h>

#include "common/error.h"
#include "source/pgsrc.h"

typedef struct pgsrc_horizon {
    char *value;   /* literal in the column's type: UTC "...+00" for timestamptz */
    char *holder;  /* the open transaction holding it back, NULL when none */
    bool sees_all; /* the role can see other sessions' transactions */
} pgsrc_horizon;

/* The query: horizon, holder description, whether the role sees all. */
char *pgsrc_horizon_sql(bool with_time_zone);

/* Must run before the snapshot that reads the rows, so that a transaction
 * committing in between is either visible to the read or counted here. */
bool pgsrc_take_horizon(pgsrc_conn *conn, bool with_time_zone, pgsrc_horizon *out, ds_error *err);
void pgsrc_horizon_free(pgsrc_horizon *h);

#endif
