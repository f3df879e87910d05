/* Changes of transactions PostgreSQL streams before they commit (pgoutput
 * protocol 2, `streaming 'on'`, for transactions larger than the server's
 * logical_decoding_work_mem): kept as their raw messages in a DuckDB
 * temporary table of a connection of their own (DuckDB spills it to disk
 * past memory_limit) until the transaction's Stream Commit replays them in
 * order, or its Stream Abort (or a subtransaction's) drops them. Nothing is
 * kept across a restart: PostgreSQL streams an unconfirmed transaction
 * again from its start. */
#ifndef DS_CDC_SPOOL_H
#define DS_CDC_SPOOL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/error.h"
#include "store/store.h"

typedef struct cdc_spool cdc_spool;

cdc_spool *cdc_spool_new(store *st, ds_error *err);
void cdc_spool_free(cdc_spool *sp);

/* Keeps one message of transaction xid (subxid: the subtransaction it
 * belongs to, xid itself for the top level). */
bool cdc_spool_add(cdc_spool *sp, uint32_t xid, uint32_t subxid, const char *msg, size_t len, ds_error *err);

/* Drops a subtransaction's messages, or (subxid == xid) the transaction's. */
bool cdc_spool_abort(cdc_spool *sp, uint32_t xid, uint32_t subxid, ds_error *err);

/* Calls fn with each message of xid in the order they came, then drops
 * them. */
typedef bool (*cdc_spool_fn)(void *ctx, const char *msg, size_t len, ds_error *err);
bool cdc_spool_replay(cdc_spool *sp, uint32_t xid, cdc_spool_fn fn, void *ctx, ds_error *err);

/* Messages kept, all transactions. */
uint64_t cdc_spool_count(const cdc_spool *sp);

#endif
