/* PostgreSQL side of a sync: connections with duckstore's session settings,
 * describing a query without running it, and streaming it with binary COPY
 * through a copy_decoder. */
#ifndef DS_SOURCE_PGSRC_H
#define DS_SOURCE_PGSRC_H

#include <libpq-fe.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "common/error.h"
#include "source/copy_decoder.h"
#include "source/pgtypes.h"

typedef struct pgsrc_conn {
    PGconn *pg;
    PGcancel *cancel; /* for pgsrc_cancel() from another thread */
    /* Longest wait for any byte from the server (query_timeout + a grace):
     * statement_timeout ends every healthy statement before it, so a longer
     * silence is a hung server or network path, which TCP keepalives do not
     * see while the peer's kernel still acknowledges. */
    double silence_s;
    bool hung; /* that bound was hit: the socket is shut down */
    /* Optional stop request (a sync's cancel flag): checked while waiting,
     * so a request that arrives just before a statement starts still
     * cancels it. */
    atomic_bool *stop;
    bool stop_sent;
} pgsrc_conn;

typedef struct pgsrc_column {
    char *name;
    uint32_t oid;
    int32_t typmod;
    char *pg_type; /* format_type(oid, NULL): the cast target for literals */
    pgsrc_type type;
    pgsrc_cast cast;
} pgsrc_column;

typedef struct pgsrc_desc {
    pgsrc_column *cols;
    size_t ncols;
} pgsrc_desc;

/* Connects with connect_timeout, TCP keepalives, client_encoding UTF8 and
 * statement_timeout = query_timeout_s. Messages never contain the password. */
bool pgsrc_connect(const char *url, double query_timeout_s, pgsrc_conn *out, ds_error *err);
void pgsrc_disconnect(pgsrc_conn *conn);

/* Asks the server to cancel the running statement; callable from any thread. */
void pgsrc_cancel(pgsrc_conn *conn);

/* Fills err from a failed result: the primary message, DS_ERR_TIMEOUT for
 * statement_timeout, DS_ERR_CANCELLED for a cancel. Returns false. */
bool pgsrc_result_error(pgsrc_conn *conn, PGresult *res, ds_error *err);

/* Runs a statement that returns no rows (or ignores them). */
bool pgsrc_exec(pgsrc_conn *conn, const char *sql, ds_error *err);

/* Runs a statement and returns its result, or NULL with err set when it
 * could not be sent or the server stayed silent past the connection's bound.
 * The caller checks the status and PQclear()s it. */
PGresult *pgsrc_query(pgsrc_conn *conn, const char *sql, ds_error *err);

/* Runs a query and returns the first column of the first row, malloc'd
 * (*out NULL for SQL NULL or no row). */
bool pgsrc_query_value(pgsrc_conn *conn, const char *sql, char **out, ds_error *err);

/* Prepares and describes the query: column names, types and the read plan
 * of each. A query that cannot work as written (SQL PostgreSQL rejects,
 * not a SELECT, $n parameters, duplicate column names) is DS_ERR_CONFIG. */
bool pgsrc_describe(pgsrc_conn *conn, const char *query, pgsrc_desc *out, ds_error *err);
void pgsrc_desc_free(pgsrc_desc *desc);
int pgsrc_desc_find(const pgsrc_desc *desc, const char *name);

/* "a, b, c" (at most max_chars long, then ", …"), for messages. Caller frees. */
char *pgsrc_desc_column_list(const pgsrc_desc *desc);

/* Escaping through libpq (encoding-aware). Caller frees with free(). */
char *pgsrc_quote_ident(pgsrc_conn *conn, const char *ident);
char *pgsrc_quote_literal(pgsrc_conn *conn, const char *value);

/* The user's query without trailing semicolons and blanks. Caller frees. */
char *pgsrc_trim_query(const char *query);

/* COPY (SELECT <columns, casts applied> FROM (<query>) AS _ds [WHERE where]
 * [LIMIT limit]) TO STDOUT (FORMAT binary). limit < 0: none. Caller frees. */
char *pgsrc_copy_sql(pgsrc_conn *conn, const char *query, const pgsrc_desc *desc, const char *where,
                     int64_t limit);

/* A running COPY ... TO STDOUT (FORMAT binary), pulled chunk by chunk. */
typedef struct pgsrc_stream {
    pgsrc_conn *conn;
    copy_decoder *dec;
    char *msg; /* current CopyData message and how much of it is decoded */
    size_t msg_len, msg_used;
    bool ended;
    _Atomic uint64_t *bytes; /* optional progress counter */
    uint64_t bytes_read;     /* of this stream */
} pgsrc_stream;

/* Starts the COPY statement. */
bool pgsrc_stream_open(pgsrc_stream *s, pgsrc_conn *conn, const char *copy_sql, copy_decoder *dec,
                       _Atomic uint64_t *bytes, ds_error *err);

/* Decodes rows into chunk (from row 0) until it is full or the data ends,
 * and sets the chunk's size; s->ended once the COPY completed cleanly. */
bool pgsrc_stream_fill(pgsrc_stream *s, duckdb_data_chunk chunk, ds_error *err);

/* Ends the stream; one still running is cancelled and its connection
 * drained, so the connection can be reused or closed. */
void pgsrc_stream_close(pgsrc_stream *s);

#endif
