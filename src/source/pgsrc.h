/* PostgreSQL side of a sync: connections with duckstore's session settings,
 * statements whose every wait is bounded, describing a query without running
 * it (its columns and how each is read), the SQL that reads it, and
 * streaming that with binary COPY through a copy_decoder into DuckDB chunks.
 * PostgreSQL statements are built here, through ds_buf and libpq's
 * escaping. */
#ifndef DS_SOURCE_PGSRC_H
#define DS_SOURCE_PGSRC_H

#include <libpq-fe.h>
#include <stdatomic.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "common/error.h"
#include "common/strbuf.h"
#include "source/copy_decoder.h"
#include "source/pgtypes.h"

#define PGSRC_PREPARED_MAX 8

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
    /* What this session has checked before (pgsrc_describe), so a kept
     * connection's next sync skips those round trips: the COPY statement it
     * last ran without error, and catalog facts of built-in types (OIDs
     * below 16384 name the same type on every server, for ever). */
    char *probed_copy;
    struct pgsrc_type_facts {
        struct pgsrc_type_fact *v;
        size_t n;
    } types;
    /* Statements this session prepared (the commit horizon, a read's
     * snapshot statement, pgsrc_pipeline_send): a kept connection's next
     * sync skips PostgreSQL's parse and plan of them. */
    struct pgsrc_prepared {
        char *sql;
        unsigned id; /* the statement is named duckstore_<id> */
    } prepared[PGSRC_PREPARED_MAX];
    size_t nprepared;
    unsigned prepared_ids; /* ids handed out; never reused in a session */
} pgsrc_conn;

/* In a pipeline: sends sql as a statement the session prepares once (the
 * first time its Parse goes first; its result comes before the
 * statement's), or unnamed when PGSRC_PREPARED_MAX are prepared already.
 * *parse: the index to pass to pgsrc_prepared_answered, -1 when no Parse
 * was sent. False when libpq could not queue it. */
bool pgsrc_pipeline_send(pgsrc_conn *conn, const char *sql, int *parse);
/* The answer to a Parse sent by pgsrc_pipeline_send: prepared, the
 * statement is used from now on; else it is not. */
void pgsrc_prepared_answered(pgsrc_conn *conn, int parse, const char *sql, bool prepared);
/* Forgets them (the next pgsrc_pipeline_send prepares anew, under a new
 * name): after a failure that may have been a missing statement. */
void pgsrc_prepared_forget(pgsrc_conn *conn);

typedef struct pgsrc_column {
    char *name;
    uint32_t oid;
    int32_t typmod;
    char *pg_type;   /* format_type(oid, NULL): the cast target for literals */
    pgsrc_type type; /* how the value is decoded, and its DuckDB type */
    pgsrc_cast cast; /* what the COPY query casts the column to first */
    /* The table column it copies as is (PQftable / PQftablecol): 0 when
     * the query computes it. */
    uint32_t table_oid;
    int table_col;
} pgsrc_column;

typedef struct pgsrc_desc {
    pgsrc_column *cols;
    size_t ncols;
    /* After a failed pgsrc_describe: the byte offset in the query where
     * PostgreSQL located the error, -1 when it named no place in it. */
    long error_at;
} pgsrc_desc;

/* Connects with connect_timeout 10 s, TCP keepalives, application_name
 * duckstore (each overridable in the URL), client_encoding UTF8 (not
 * overridable: the decoder needs UTF-8), statement_timeout =
 * query_timeout_s and idle_in_transaction_session_timeout off (whatever the
 * role or database sets); waits for the server are bounded by query_timeout_s +
 * 10 s (silence_s). Messages never contain the password. */
bool pgsrc_connect(const char *url, double query_timeout_s, pgsrc_conn *out, ds_error *err);
void pgsrc_disconnect(pgsrc_conn *conn);

/* The server's NOTICE and WARNING messages go to duckstore's log, prefixed
 * with name (a source's; it must outlive the connection) or nothing. */
void pgsrc_set_log_name(pgsrc_conn *conn, const char *name);

/* Asks the server to cancel the running statement; callable from any
 * thread. Waits for the server's answer without a bound. */
void pgsrc_cancel(pgsrc_conn *conn);

/* Fills err from a failed result (res NULL: from the connection's last
 * error): the primary message with its SQLSTATE and position, DS_ERR_TIMEOUT
 * for statement_timeout, DS_ERR_CANCELLED for another cancel, else
 * DS_ERR_SOURCE. Keeps err as it is for a connection given up as hung.
 * Returns false. */
bool pgsrc_result_error(pgsrc_conn *conn, PGresult *res, ds_error *err);

/* Runs a statement, ignoring the rows it returns. */
bool pgsrc_exec(pgsrc_conn *conn, const char *sql, ds_error *err);

/* Runs a statement and returns its result, or NULL with err set when it
 * could not be sent or the server stayed silent past the connection's bound.
 * The caller checks the status and PQclear()s it. */
PGresult *pgsrc_query(pgsrc_conn *conn, const char *sql, ds_error *err);

/* Runs a query that returns rows: its result (status PGRES_TUPLES_OK), or
 * NULL with err set, classified like every statement (query_timeout,
 * cancel). sql NULL (a builder out of memory) is DS_ERR_NOMEM. */
PGresult *pgsrc_query_rows(pgsrc_conn *conn, const char *sql, ds_error *err);

/* Runs a query and returns the first column of the first row as text,
 * malloc'd (*out NULL for SQL NULL or no row). */
bool pgsrc_query_value(pgsrc_conn *conn, const char *sql, char **out, ds_error *err);

/* Prepares the query as the unnamed statement (pgsrc_trim_query's text),
 * describes it and looks its column types up in pg_type: column names,
 * types and the read plan of each (built-in types are decoded as they are,
 * enums as text, other arrays cast to text[], any other type cast to text).
 * Then runs it wrapped exactly as the sync's COPY wraps it, with LIMIT 0, so
 * that privileges, statements that cannot be a subquery and the wrapped
 * text are checked by the server too. A query that cannot work as written
 * (anything PostgreSQL rejects it with but for the connection, the
 * server's resources, locks or a cancel; no columns, $n parameters,
 * duplicate column names) is DS_ERR_CONFIG; out->error_at then locates
 * PostgreSQL's error position in the query. */
bool pgsrc_describe(pgsrc_conn *conn, const char *query, pgsrc_desc *out, ds_error *err);
void pgsrc_desc_free(pgsrc_desc *desc);
int pgsrc_desc_find(const pgsrc_desc *desc, const char *name);

/* Every column name, unquoted, as "a, b, c", for messages. Caller frees;
 * NULL when out of memory. */
char *pgsrc_desc_column_list(const pgsrc_desc *desc);

/* Appends an identifier / a literal escaped by libpq for the connection's
 * encoding (PQescapeIdentifier / PQescapeLiteral; a literal holding a
 * backslash comes out as " E'...'", space included). False with err set (and the buffer
 * marked failed) when libpq refuses the text or memory runs out. */
bool pgsrc_append_ident(ds_buf *b, pgsrc_conn *conn, const char *ident, ds_error *err);
bool pgsrc_append_literal(ds_buf *b, pgsrc_conn *conn, const char *value, ds_error *err);

/* The same, freshly allocated (caller frees); NULL on failure. */
char *pgsrc_quote_ident(pgsrc_conn *conn, const char *ident);
char *pgsrc_quote_literal(pgsrc_conn *conn, const char *value);

/* The user's query without the trailing blanks, and without the
 * semicolons a query pasted from psql ends with and any blanks and
 * comments after them ("...; -- comment"); quotes, dollar quotes and
 * comments are skipped as PostgreSQL reads them (an unclosed one stays).
 * Only a suffix is cut. Caller frees; NULL when out of memory. */
char *pgsrc_trim_query(const char *query);

/* Appends COPY (SELECT <columns> FROM (<query>\n) AS _ds [WHERE where]
 * [LIMIT limit]) TO STDOUT (FORMAT binary): each column by its quoted name,
 * those with a cast as "name"::text AS "name" (or ::text[]); the query as
 * pgsrc_trim_query cuts it, the newline ending any comment left in it;
 * where is SQL put in as it is; limit < 0: none. False with err set on
 * failure. */
bool pgsrc_append_copy_sql(ds_buf *b, pgsrc_conn *conn, const char *query, const pgsrc_desc *desc,
                           const char *where, int64_t limit, ds_error *err);

/* pgsrc_append_copy_sql into a fresh string (caller frees); NULL on
 * failure (out of memory, or a name libpq cannot quote). */
char *pgsrc_copy_sql(pgsrc_conn *conn, const char *query, const pgsrc_desc *desc, const char *where,
                     int64_t limit);

/* Runs a COPY ... TO STDOUT and reads its data to the end, discarding it
 * (meant for one of no rows). Returns the COPY's final result (status
 * PGRES_COMMAND_OK, or the error; the caller PQclear()s it), or NULL with
 * err set when the server went silent or the send failed. */
PGresult *pgsrc_copy_run(pgsrc_conn *conn, const char *copy_sql, ds_error *err);

/* The rows of a stream as PostgreSQL sent them, kept while they fit in
 * max bytes: each binary COPY tuple (the file header and trailer left out)
 * as a 4-byte length and its bytes. over: more came than fit. Equal bytes
 * decode to equal rows, so a later read can be compared with a kept one
 * without DuckDB (src/sync/memo.h). */
typedef struct pgsrc_kept_rows {
    ds_buf buf;
    size_t max;
    bool over;
    /* Optional (track_top): also the rows whose column top_col (an integer,
     * date or time: binary COPY sends it as a signed big-endian integer of
     * top_width bytes) holds the largest value seen, and those where it is
     * NULL, within max bytes too: what a read from that value on meets
     * again, whatever the batch's size. pgsrc_kept_rows_finish puts the
     * NULL ones after them in top. */
    bool track_top;
    int top_col, top_width;
    bool have_top, top_over, nulls_over;
    int64_t top_value;
    ds_buf top, nulls;
} pgsrc_kept_rows;

void pgsrc_kept_rows_finish(pgsrc_kept_rows *keep);
/* The rows in buf. */
uint64_t pgsrc_kept_rows_count(const pgsrc_kept_rows *keep);
void pgsrc_kept_rows_free(pgsrc_kept_rows *keep);

/* The time the streams of one read spend waiting for PostgreSQL's data
 * (the socket was empty), up to date while they wait: a window measured
 * during a long wait (a slow first chunk) counts it. */
typedef struct pgsrc_wait_meter {
    pthread_mutex_t lock;
    double done_s;  /* waits that have ended, summed */
    double begun_s; /* the start times of the waits going on, summed */
    int waiting;    /* waits going on */
} pgsrc_wait_meter;

#define PGSRC_WAIT_METER_INIT                                                                                \
    {                                                                                                        \
        .lock = PTHREAD_MUTEX_INITIALIZER                                                                    \
    }

/* Seconds waited up to now (ds_monotonic_s()). */
double pgsrc_wait_meter_total(pgsrc_wait_meter *m, double now);

/* A running COPY ... TO STDOUT (FORMAT binary), pulled chunk by chunk. */
typedef struct pgsrc_stream {
    pgsrc_conn *conn;
    copy_decoder *dec;
    char *msg; /* current CopyData message and how much of it is decoded */
    size_t msg_len, msg_used;
    bool ended;
    _Atomic uint64_t *bytes; /* optional progress counter */
    uint64_t bytes_read;     /* of this stream */
    uint64_t chunk_bytes;    /* a chunk ends once its rows came in this many bytes (0: rows only) */
    uint64_t largest_row;    /* bytes of the largest CopyData message (one row) so far */
    uint64_t row_bytes_max;  /* a larger row is refused before it is decoded (0: no limit) */
    pgsrc_wait_meter *wait;  /* optional: the time waiting for PostgreSQL's data is counted there */
    pgsrc_kept_rows *keep;   /* optional: the rows are kept there too */
    struct {
        char *msg;
        int len;
    } * ahead; /* messages read ahead (pgsrc_stream_prefetch), not decoded yet */
    size_t ahead_n, ahead_used, ahead_cap;
    bool ahead_end; /* the data ended while reading ahead (its result is still to read) */
} pgsrc_stream;

/* Starts the COPY statement. A NULL copy_sql or dec (what a failed
 * allocation leaves) is DS_ERR_NOMEM; pgsrc_append_copy_sql tells a
 * builder's own failure apart. On failure the stream is ended and closing
 * it is a no-op. */
bool pgsrc_stream_open(pgsrc_stream *s, pgsrc_conn *conn, const char *copy_sql, copy_decoder *dec,
                       _Atomic uint64_t *bytes, ds_error *err);

/* Decodes rows into chunk (from row 0) until it is full, its rows came in
 * s->chunk_bytes bytes or more, or the data ends,
 * and sets the chunk's size (0 once the stream has ended); s->ended once
 * the COPY completed cleanly. */
bool pgsrc_stream_fill(pgsrc_stream *s, duckdb_data_chunk chunk, ds_error *err);

/* Reads ahead, without decoding, until the data ends or max_bytes came
 * (counted and kept as pgsrc_stream_fill would); pgsrc_stream_fill then
 * decodes them first. pgsrc_stream_prefetched_all: the data has ended. */
bool pgsrc_stream_prefetch(pgsrc_stream *s, size_t max_bytes, ds_error *err);
bool pgsrc_stream_prefetched_all(const pgsrc_stream *s);

/* Ends a stream read to its end by pgsrc_stream_prefetch without decoding
 * it (its rows are kept, and known to be stored): checks the COPY's
 * result and end marker. */
bool pgsrc_stream_skip(pgsrc_stream *s, ds_error *err);

/* Ends the stream; one still running is cancelled and its connection
 * drained, so the connection can be reused or closed. */
void pgsrc_stream_close(pgsrc_stream *s);

#endif
