/* The PostgreSQL objects logical capture reads through: the publication
 * that names a source's tables, its replication slot, and the server
 * settings both need. Plain SQL on an ordinary connection; the replication
 * protocol itself is elsewhere. */
#ifndef DS_SOURCE_PUBLICATION_H
#define DS_SOURCE_PUBLICATION_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/error.h"
#include "source/pgsrc.h"

typedef struct pub_slot {
    bool exists;
    char plugin[64];
    char confirmed_lsn[24], restart_lsn[24]; /* "" when NULL */
    char wal_status[16]; /* reserved / extended / unreserved / lost ("" before PostgreSQL 13) */
    bool active;
    int active_pid;
    int64_t lag_bytes; /* pg_current_wal_lsn() - confirmed_flush_lsn, -1 unknown */
} pub_slot;

/* The server's wal_level ("replica", "logical", ...). */
bool pub_wal_level(pgsrc_conn *c, char *out, size_t cap, ds_error *err);

/* Whether the connection's role may stream changes: REPLICATION or superuser. */
bool pub_can_replicate(pgsrc_conn *c, bool *ok, ds_error *err);

/* Creates the publication FOR TABLE <tables> when missing, or (owned) sets
 * its table list and the four actions (and publish_via_partition_root,
 * so a partitioned table's changes come under its own name); a publication the user named
 * (owned false) is never changed: it must exist and publish those tables
 * and insert, update, delete and truncate, otherwise a DS_ERR_CONFIG error
 * names what is missing and the ALTER PUBLICATION that fixes it.
 * qualified_tables are quoted for SQL ("schema"."table"). */
bool pub_ensure(pgsrc_conn *c, const char *publication, bool owned, const char *const *qualified_tables,
                size_t n, ds_error *err);

/* The slot's state (out->exists false when there is none). */
bool pub_slot_info(pgsrc_conn *c, const char *slot, pub_slot *out, ds_error *err);

/* Drops the slot; one a process streams from is refused, naming its PID,
 * and a missing one is DS_ERR_CONFIG. */
bool pub_drop_slot(pgsrc_conn *c, const char *slot, ds_error *err);

/* Drops the publication when it exists. */
bool pub_drop_publication(pgsrc_conn *c, const char *publication, ds_error *err);

/* True when the connection's database has a publication of that name. */
bool pub_exists(pgsrc_conn *c, const char *publication, bool *exists, ds_error *err);

/* Slots whose name starts with "duckstore_" on this server, by name
 * (malloc'd array of malloc'd names; pub_free_names frees it). dbs, when
 * not NULL, gets the database of each (malloc'd likewise; "" for a
 * physical slot). */
bool pub_list_slots(pgsrc_conn *c, char ***names, size_t *n, ds_error *err);
bool pub_list_slots_db(pgsrc_conn *c, char ***names, char ***dbs, size_t *n, ds_error *err);
void pub_free_names(char **names, size_t n);

#endif
