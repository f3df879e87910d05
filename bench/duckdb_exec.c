/* Benchmark driver: runs SQL statements on a DuckDB file through the same
 * libduckdb duckstore links, so the reference pipelines (Parquet and CSV
 * loads) are measured on equal terms. Usage: duckdb_exec FILE SQL [SQL...] */
#include <duckdb.h>
#include <stdio.h>

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: %s DBFILE SQL [SQL...]\n", argv[0]);
        return 2;
    }
    duckdb_database db;
    duckdb_connection con;
    char *failure = NULL;
    if (duckdb_open_ext(argv[1], &db, NULL, &failure) == DuckDBError) {
        fprintf(stderr, "cannot open %s: %s\n", argv[1], failure ? failure : "unknown error");
        duckdb_free(failure);
        return 1;
    }
    if (duckdb_connect(db, &con) == DuckDBError) {
        fprintf(stderr, "cannot connect to %s\n", argv[1]);
        duckdb_close(&db);
        return 1;
    }
    int rc = 0;
    for (int i = 2; i < argc && rc == 0; i++) {
        duckdb_result res;
        if (duckdb_query(con, argv[i], &res) == DuckDBError) {
            fprintf(stderr, "%s\nSQL: %s\n", duckdb_result_error(&res), argv[i]);
            rc = 1;
        } else if (duckdb_column_count(&res) == 1 && duckdb_row_count(&res) == 1) {
            char *v = duckdb_value_varchar(&res, 0, 0);
            if (v)
                printf("%s\n", v);
            duckdb_free(v);
        }
        duckdb_destroy_result(&res);
    }
    duckdb_disconnect(&con);
    duckdb_close(&db);
    return rc;
}
