/* Writes a source's data as Hive-partitioned Parquet versions: the rows
 * stream from the store into a private in-memory DuckDB (the store's own
 * database has no file access) whose COPY writes a new version directory;
 * partitions that did not change since the previous version are hard
 * links to its files, so a version directory is always whole while an
 * incremental sync costs only the partitions it touched. The manifest,
 * replaced by rename, is what makes a version visible. */
#include "publish/publish.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/clock.h"
#include "common/json_text.h"
#include "common/log.h"
#include "source/pgsrc.h"
#include "store/result_feed.h"
#include "sync/sync.h"

/* Rows per Parquet row group: large enough for scans, small enough that a
 * partition's writer holds little in memory. */
/* The writer's memory is bounded whatever the table: each open file holds
 * one row group (at most 122,880 rows and 16 MB, DuckDB's default row count
 * and a byte cap for wide rows), at most 8 files are open at once (rows
 * arriving in partition order, as time-ordered data does, still give one
 * file per partition), and the whole is held to 128 MB (a partitioned
 * write spills to .spill beyond it). Without these bounds a version of
 * 1.2M rows of 1.5 KB took 2.6 GB; with them 0.3 GB. */
#define PUBLISH_ROW_GROUP 122880
#define PUBLISH_ROW_GROUP_BYTES (16 << 20)
#define PUBLISH_OPEN_FILES 8
#define PUBLISH_MEMORY_LIMIT "128MB"
/* A version beyond keep_versions is removed this long after the next one
 * replaced it, so readers of the older manifest can finish. */
#define PUBLISH_GRACE_S 60.0

/* One publish at a time in a process: two of one source would race for a
 * version number. */
static pthread_mutex_t publish_lock = PTHREAD_MUTEX_INITIALIZER;

/* ---- outcomes, for /metrics ---- */

#define MAX_TRACKED 256
typedef struct tracked {
    char name[CFG_SOURCE_NAME_MAX + 1];
    uint64_t ok, failed;
    int64_t version, bytes_written;
    double last_success_unix, last_duration_s;
} tracked;
static pthread_mutex_t tracked_lock = PTHREAD_MUTEX_INITIALIZER;
static tracked tracked_sources[MAX_TRACKED];
static size_t n_tracked;

static void track(const char *name, bool ok, const publish_result *r, double duration_s)
{
    pthread_mutex_lock(&tracked_lock);
    tracked *t = NULL;
    for (size_t i = 0; i < n_tracked && t == NULL; i++)
        if (strcmp(tracked_sources[i].name, name) == 0)
            t = &tracked_sources[i];
    if (t == NULL && n_tracked < MAX_TRACKED) {
        t = &tracked_sources[n_tracked++];
        snprintf(t->name, sizeof t->name, "%s", name);
    }
    if (t != NULL) {
        t->last_duration_s = duration_s;
        if (ok) {
            t->ok++;
            t->version = r->version;
            t->bytes_written += r->bytes_written;
            t->last_success_unix = ds_unix_s();
        } else {
            t->failed++;
        }
    }
    pthread_mutex_unlock(&tracked_lock);
}

void publish_metrics_text(ds_buf *b)
{
    pthread_mutex_lock(&tracked_lock);
    if (n_tracked == 0) {
        pthread_mutex_unlock(&tracked_lock);
        return;
    }
    ds_buf_append(b, "# HELP duckstore_publish_total Publishes of each source by result.\n"
                     "# TYPE duckstore_publish_total counter\n");
    for (size_t i = 0; i < n_tracked; i++) {
        const tracked *t = &tracked_sources[i];
        ds_buf_appendf(b, "duckstore_publish_total{source=\"%s\",result=\"success\"} %llu\n", t->name,
                       (unsigned long long)t->ok);
        ds_buf_appendf(b, "duckstore_publish_total{source=\"%s\",result=\"error\"} %llu\n", t->name,
                       (unsigned long long)t->failed);
    }
    static const struct {
        const char *name, *type, *help;
    } families[] = {
        {"duckstore_publish_version", "gauge", "Version of the last published manifest."},
        {"duckstore_publish_last_success_timestamp_seconds", "gauge", "Unix time of the last publish."},
        {"duckstore_publish_last_duration_seconds", "gauge", "Duration of the last publish attempt."},
        {"duckstore_publish_bytes_written_total", "counter", "Parquet bytes written (not linked)."},
    };
    for (size_t f = 0; f < sizeof families / sizeof families[0]; f++) {
        ds_buf_appendf(b, "# HELP %s %s\n# TYPE %s %s\n", families[f].name, families[f].help,
                       families[f].name, families[f].type);
        for (size_t i = 0; i < n_tracked; i++) {
            const tracked *t = &tracked_sources[i];
            double v = f == 0   ? (double)t->version
                       : f == 1 ? t->last_success_unix
                       : f == 2 ? t->last_duration_s
                                : (double)t->bytes_written;
            ds_buf_appendf(b, "%s{source=\"%s\"} %.3f\n", families[f].name, t->name, v);
        }
    }
    pthread_mutex_unlock(&tracked_lock);
}

/* ---- files ---- */

static char *path_join(const char *a, const char *b)
{
    ds_buf p = DS_BUF_INIT;
    ds_buf_appendf(&p, "%s/%s", a, b);
    return ds_buf_take(&p);
}

static bool mkdir_p(const char *path, ds_error *err)
{
    ds_buf p = DS_BUF_INIT;
    ds_buf_append(&p, path);
    char *s = ds_buf_take(&p);
    if (s == NULL)
        return ds_error_set(err, DS_ERR_NOMEM, "out of memory");
    bool ok = true;
    for (char *c = s + 1; ok; c++) {
        bool end = *c == '\0';
        if (*c != '/' && !end)
            continue;
        *c = '\0';
        if (mkdir(s, 0755) != 0 && errno != EEXIST)
            ok = ds_error_set(err, DS_ERR_STORE, "cannot create directory %s: %s", s, strerror(errno));
        if (end)
            break;
        *c = '/';
    }
    free(s);
    return ok;
}

static bool fsync_path(const char *path, ds_error *err)
{
    int fd = open(path, O_RDONLY);
    if (fd < 0)
        return ds_error_set(err, DS_ERR_STORE, "cannot open %s: %s", path, strerror(errno));
    bool ok = fsync(fd) == 0 || ds_error_set(err, DS_ERR_STORE, "cannot fsync %s: %s", path, strerror(errno));
    close(fd);
    return ok;
}

static int remove_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path) == 0 || errno == ENOENT ? 0 : -1;
}

static bool remove_tree(const char *path)
{
    return nftw(path, remove_entry, 16, FTW_DEPTH | FTW_PHYS) == 0 || errno == ENOENT;
}

/* Every regular file under base/rel (paths relative to base), fsynced,
 * and each directory fsynced after its entries. */
static bool sync_tree(const char *base, const char *rel, json_t *files, ds_error *err)
{
    char *dir = rel[0] ? path_join(base, rel) : strdup(base);
    DIR *d = dir ? opendir(dir) : NULL;
    if (d == NULL) {
        bool r = ds_error_set(err, DS_ERR_STORE, "cannot read directory %s: %s", dir ? dir : base,
                              strerror(errno));
        free(dir);
        return r;
    }
    bool ok = true;
    struct dirent *e;
    while (ok && (e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        char *sub = rel[0] ? path_join(rel, e->d_name) : strdup(e->d_name);
        char *full = sub ? path_join(base, sub) : NULL;
        struct stat sb;
        if (full == NULL) {
            ok = ds_error_set(err, DS_ERR_NOMEM, "out of memory");
        } else if (lstat(full, &sb) != 0) {
            ok = ds_error_set(err, DS_ERR_STORE, "cannot stat %s: %s", full, strerror(errno));
        } else if (S_ISDIR(sb.st_mode)) {
            ok = sync_tree(base, sub, files, err);
        } else if (S_ISREG(sb.st_mode)) {
            ok = fsync_path(full, err);
            if (files != NULL)
                json_array_append_new(files, json_string(sub));
        }
        free(sub);
        free(full);
    }
    closedir(d);
    ok = ok && fsync_path(dir, err);
    free(dir);
    return ok;
}

static bool copy_file(const char *from, const char *to, ds_error *err)
{
    FILE *in = fopen(from, "rb");
    FILE *out = in ? fopen(to, "wb") : NULL;
    bool ok = in && out;
    char buf[65536];
    size_t n;
    while (ok && (n = fread(buf, 1, sizeof buf, in)) > 0)
        ok = fwrite(buf, 1, n, out) == n;
    ok = ok && !ferror(in);
    if (out && fclose(out) != 0)
        ok = false;
    if (in)
        fclose(in);
    return ok || ds_error_set(err, DS_ERR_STORE, "cannot copy %s to %s: %s", from, to, strerror(errno));
}

/* The unchanged file enters the new version without a byte written; a
 * file system without hard links (some object store mounts) gets a copy. */
static bool link_or_copy(const char *from, const char *to, ds_error *err)
{
    char *slash = strrchr(to, '/');
    if (slash != NULL) {
        *slash = '\0';
        bool ok = mkdir_p(to, err);
        *slash = '/';
        if (!ok)
            return false;
    }
    if (link(from, to) == 0)
        return true;
    if (errno == EXDEV || errno == EPERM || errno == ENOTSUP || errno == EMLINK)
        return copy_file(from, to, err);
    return ds_error_set(err, DS_ERR_STORE, "cannot link %s to %s: %s", from, to, strerror(errno));
}

/* The number of "v<N>", "v<N>_<table>" or ".tmp-v<N>..." (0: none of them). */
static int64_t version_of(const char *name, bool *tmp)
{
    *tmp = strncmp(name, ".tmp-", 5) == 0;
    const char *s = *tmp ? name + 5 : name;
    if (s[0] != 'v' || s[1] < '0' || s[1] > '9')
        return 0;
    char *end;
    long long v = strtoll(s + 1, &end, 10);
    return *end == '\0' || *end == '_' ? v : 0;
}

static double grace_s(void)
{
    const char *env = getenv("DUCKSTORE_PUBLISH_GRACE_SECONDS");
    char *end;
    double v = env ? strtod(env, &end) : -1;
    return env && *end == '\0' && v >= 0 ? v : PUBLISH_GRACE_S;
}

/* Removes versions beyond keep (counting from `current` down) once the
 * version after each has been visible for the grace period, and leftovers
 * of publishes that were killed. */
static void remove_old_versions(const char *root, int64_t current, int keep)
{
    DIR *d = opendir(root);
    if (d == NULL)
        return;
    double grace = grace_s();
    time_t now = time(NULL);
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        bool tmp;
        int64_t v = version_of(e->d_name, &tmp);
        if (v == 0 || (!tmp && v > current - keep))
            continue;
        char *full = path_join(root, e->d_name);
        struct stat sb;
        double age = -1;
        if (tmp) {
            if (full && stat(full, &sb) == 0)
                age = difftime(now, sb.st_mtime);
        } else {
            /* Replaced when v + 1 was published. */
            ds_buf next = DS_BUF_INIT;
            ds_buf_appendf(&next, "%s/v%lld", root, (long long)(v + 1));
            if (ds_buf_str(&next) && stat(ds_buf_str(&next), &sb) == 0)
                age = difftime(now, sb.st_mtime);
            else if (v + 1 <= current - keep)
                age = grace; /* the next one is gone already */
            ds_buf_free(&next);
        }
        if (full && age >= grace) {
            if (!remove_tree(full))
                ds_log_warn("publish: cannot remove %s: %s", full, strerror(errno));
        }
        free(full);
    }
    closedir(d);
}

/* The highest version number under root, whatever its state. */
static int64_t highest_version(const char *root)
{
    DIR *d = opendir(root);
    int64_t max = 0;
    struct dirent *e;
    while (d && (e = readdir(d)) != NULL) {
        bool tmp;
        int64_t v = version_of(e->d_name, &tmp);
        if (v > max)
            max = v;
    }
    if (d)
        closedir(d);
    return max;
}

/* ---- SQL ---- */

static bool duck_error(duckdb_result *res, const char *what, ds_error *err)
{
    const char *e = duckdb_result_error(res);
    ds_error_set(err, DS_ERR_STORE, "%s: %s", what, e ? e : "unknown DuckDB error");
    duckdb_destroy_result(res);
    return false;
}

static bool run(duckdb_connection con, const char *sql, duckdb_result *res, const char *what, ds_error *err)
{
    if (sql == NULL)
        return ds_error_set(err, DS_ERR_NOMEM, "out of memory");
    if (duckdb_query(con, sql, res) == DuckDBError)
        return duck_error(res, what, err);
    return true;
}

static char *cell(duckdb_result *res, idx_t col, idx_t row)
{
    char *v = duckdb_value_varchar(res, col, row);
    char *copy = v ? strdup(v) : NULL;
    duckdb_free(v);
    return copy;
}

/* How a relation is partitioned: the key expression (text) on the store,
 * and the Hive column the files are partitioned by. */
typedef struct partitioning {
    bool on;
    bool derived;            /* day(col) etc.: a computed column, not in the files */
    char column[160];        /* the Hive partition column */
    ds_buf key;              /* SQL of the key as text, over alias d */
    char source_column[128]; /* the data's column */
} partitioning;

static bool column_type(duckdb_connection duck, const char *relation, const char *column, char **type,
                        ds_error *err)
{
    ds_buf sql = DS_BUF_INIT;
    ds_buf_append(&sql, "SELECT column_type FROM (DESCRIBE SELECT * FROM ");
    ds_buf_append_ident(&sql, relation);
    ds_buf_append(&sql, ") WHERE column_name = ");
    ds_buf_append_literal(&sql, column);
    char *text = ds_buf_take(&sql);
    bool ok =
        text ? store_query_text(duck, text, type, err) : ds_error_set(err, DS_ERR_NOMEM, "out of memory");
    free(text);
    return ok;
}

/* partition_by for one relation; a table without its column is written
 * whole (a split source's dataset table may not have it). must: the
 * column has to be there (the view). */
static bool plan_partitioning(duckdb_connection duck, const cfg_source *src, const char *relation, bool must,
                              partitioning *p, ds_error *err)
{
    memset(p, 0, sizeof *p);
    ds_buf_init(&p->key);
    if (src->publish_partition_by == NULL) {
        ds_buf_append(&p->key, "''");
        return true;
    }
    char fn[8];
    cfg_publish_partition(src->publish_partition_by, fn, p->source_column, sizeof p->source_column);
    char *type = NULL;
    if (!column_type(duck, relation, p->source_column, &type, err))
        return false;
    if (type == NULL) {
        ds_buf_append(&p->key, "''");
        if (!must)
            return true;
        return ds_error_set(
            err, DS_ERR_CONFIG,
            "%s:%d: publish.partition_by: \"%s\" is not a column of %s; name one of its columns", src->file,
            src->publish_partition_line, p->source_column, relation);
    }
    p->on = true;
    p->derived = fn[0] != '\0';
    bool ok = true;
    if (!p->derived) {
        snprintf(p->column, sizeof p->column, "%s", p->source_column);
        ds_buf_append(&p->key, "CAST(d.");
        ds_buf_append_ident(&p->key, p->source_column);
        ds_buf_append(&p->key, " AS VARCHAR)");
    } else if (strncmp(type, "TIMESTAMP", 9) != 0 && strcmp(type, "DATE") != 0) {
        ok = ds_error_set(
            err, DS_ERR_CONFIG,
            "%s:%d: publish.partition_by: %s() needs a timestamp or date column, but \"%s\" is %s; "
            "partition by the column itself or by another column",
            src->file, src->publish_partition_line, fn, p->source_column, type);
    } else {
        static const struct {
            const char *fn, *format;
        } formats[] = {{"hour", "%Y-%m-%dT%H"}, {"day", "%Y-%m-%d"}, {"month", "%Y-%m"}, {"year", "%Y"}};
        const char *format = "%Y-%m-%d";
        for (size_t i = 0; i < sizeof formats / sizeof formats[0]; i++)
            if (strcmp(fn, formats[i].fn) == 0)
                format = formats[i].format;
        snprintf(p->column, sizeof p->column, "%s_%s", p->source_column, fn);
        ds_buf_append(&p->key, "strftime(d.");
        ds_buf_append_ident(&p->key, p->source_column);
        ds_buf_append(&p->key, ", ");
        ds_buf_append_literal(&p->key, format);
        ds_buf_append(&p->key, ")");
        char *clash = NULL;
        ok = column_type(duck, relation, p->column, &clash, err);
        if (ok && clash != NULL)
            ok =
                ds_error_set(err, DS_ERR_CONFIG,
                             "%s:%d: publish.partition_by: the partition column \"%s\" would hide the column "
                             "of that name in %s; rename that column or partition otherwise",
                             src->file, src->publish_partition_line, p->column, relation);
        free(clash);
    }
    free(type);
    return ok && (!p->key.failed || ds_error_set(err, DS_ERR_NOMEM, "out of memory"));
}

/* ---- the private writer ---- */

/* A private DuckDB that may write under root only, in UTC; feed: the rows
 * duckstore_result() reads, or NULL. */
static bool open_writer(const char *root, store_result_feed *feed, duckdb_database *db,
                        duckdb_connection *con, ds_error *err)
{
    /* A partitioned write larger than memory spills beside the versions,
     * not into the process's working directory. */
    *db = NULL;
    *con = NULL;
    char *spill = path_join(root, ".spill");
    char *dir = path_join(root, "");
    store_writer_settings s = {.temp_directory = spill,
                               .allowed_directory = dir,
                               .utc = true,
                               .memory_limit = PUBLISH_MEMORY_LIMIT,
                               .any_order = true,
                               .max_open_files = PUBLISH_OPEN_FILES};
    bool ok = spill != NULL && dir != NULL ? store_writer_open(&s, feed, db, con, err)
                                           : ds_error_set(err, DS_ERR_NOMEM, "out of memory");
    free(spill);
    free(dir);
    return ok;
}

/* ---- one relation ---- */

typedef struct pub {
    const cfg_source *src;
    duckdb_connection duck; /* the store's, in the publish's read transaction */
    const char *root;
    int64_t version;
    publish_result *result;
} pub;

/* The previous version's partition of key k when it can be taken as is:
 * same row count and fingerprint, and every file still there. */
static const json_t *reusable(const pub *p, const json_t *prev, const char *key, int64_t rows, const char *fp)
{
    size_t i;
    json_t *part;
    json_array_foreach(json_object_get(prev, "partitions"), i, part)
    {
        const char *k = json_string_value(json_object_get(part, "key"));
        if (k == NULL || strcmp(k, key) != 0)
            continue;
        const char *f = json_string_value(json_object_get(part, "fingerprint"));
        if (json_integer_value(json_object_get(part, "rows")) != rows || f == NULL || strcmp(f, fp) != 0)
            return NULL;
        /* Its files must hold exactly its rows (a partition whose files
         * were not matched to it is rewritten, never dropped). */
        int64_t in_files = 0;
        size_t j;
        json_t *file;
        json_array_foreach(json_object_get(part, "files"), j, file)
        {
            char *full = path_join(p->root, json_string_value(json_object_get(file, "path")));
            struct stat sb;
            bool there = full && stat(full, &sb) == 0;
            free(full);
            if (!there)
                return NULL;
            in_files += json_integer_value(json_object_get(file, "rows"));
        }
        return in_files == rows && rows > 0 ? part : NULL;
    }
    return NULL;
}

static json_t *schema_json(duckdb_connection duck, duckdb_connection writer, const char *relation,
                           const char *sample_file, const pgsrc_desc *const *descs, size_t ndescs)
{
    json_t *schema = json_array();
    ds_buf sql = DS_BUF_INIT;
    ds_buf_append(&sql, "SELECT column_name, column_type FROM (DESCRIBE SELECT * FROM ");
    ds_buf_append_ident(&sql, relation);
    ds_buf_append(&sql, ")");
    duckdb_result res, pq;
    ds_error e;
    bool have_pq = false;
    if (sample_file != NULL) {
        ds_buf q = DS_BUF_INIT;
        ds_buf_append(&q, "SELECT name, type, logical_type, converted_type FROM parquet_schema(");
        ds_buf_append_literal(&q, sample_file);
        ds_buf_append(&q, ")");
        have_pq = run(writer, ds_buf_str(&q), &pq, "parquet_schema", &e);
        ds_buf_free(&q);
    }
    if (run(duck, ds_buf_str(&sql), &res, "describe", &e)) {
        for (idx_t r = 0; r < duckdb_row_count(&res); r++) {
            char *name = cell(&res, 0, r), *type = cell(&res, 1, r);
            json_t *col = json_object();
            json_object_set_new(col, "name", ds_json_text(name ? name : ""));
            json_object_set_new(col, "duckdb_type", ds_json_text(type ? type : ""));
            const char *pg = NULL;
            for (size_t d = 0; d < ndescs && pg == NULL; d++) {
                int at = descs[d] ? pgsrc_desc_find(descs[d], name) : -1;
                if (at >= 0)
                    pg = descs[d]->cols[at].pg_type;
            }
            json_object_set_new(col, "postgresql_type", pg ? ds_json_text(pg) : json_null());
            for (idx_t q = 0; have_pq && q < duckdb_row_count(&pq); q++) {
                char *pname = cell(&pq, 0, q);
                if (pname && name && strcmp(pname, name) == 0) {
                    char *pt = cell(&pq, 1, q), *lt = cell(&pq, 2, q), *ct = cell(&pq, 3, q);
                    json_object_set_new(col, "parquet_type", pt ? ds_json_text(pt) : json_null());
                    json_object_set_new(col, "parquet_logical_type", lt ? ds_json_text(lt) : json_null());
                    json_object_set_new(col, "parquet_converted_type", ct ? ds_json_text(ct) : json_null());
                    free(pt);
                    free(lt);
                    free(ct);
                }
                free(pname);
            }
            json_array_append_new(schema, col);
            free(name);
            free(type);
        }
        duckdb_destroy_result(&res);
    }
    if (have_pq)
        duckdb_destroy_result(&pq);
    ds_buf_free(&sql);
    return schema;
}

/* Streams SELECT d.*[, key] FROM relation d [WHERE key IN changed] into the
 * writer's COPY to dir. */
static bool write_rows(pub *p, const char *relation, const partitioning *part, json_t *changed, bool all,
                       const char *dir, ds_error *err)
{
    ds_buf sql = DS_BUF_INIT;
    ds_buf_append(&sql, "SELECT d.*");
    if (part->derived) {
        ds_buf_appendf(&sql, ", %s AS ", ds_buf_str(&part->key));
        ds_buf_append_ident(&sql, part->column);
    }
    ds_buf_append(&sql, " FROM ");
    ds_buf_append_ident(&sql, relation);
    ds_buf_append(&sql, " AS d");
    if (!all) {
        bool null_key = false;
        ds_buf_appendf(&sql, " WHERE %s IN (", ds_buf_str(&part->key));
        size_t i, n = 0;
        json_t *k;
        json_array_foreach(changed, i, k)
        {
            if (json_is_null(k)) {
                null_key = true;
                continue;
            }
            if (n++ > 0)
                ds_buf_append(&sql, ", ");
            ds_buf_append_literal(&sql, json_string_value(k));
        }
        if (n == 0)
            ds_buf_append(&sql, "NULL");
        ds_buf_append(&sql, ")");
        if (null_key)
            ds_buf_appendf(&sql, " OR %s IS NULL", ds_buf_str(&part->key));
    }
    duckdb_prepared_statement ps = NULL;
    duckdb_pending_result pending = NULL;
    duckdb_result res;
    bool have_res = false;
    bool ok = !sql.failed || ds_error_set(err, DS_ERR_NOMEM, "out of memory");
    if (ok && duckdb_prepare(p->duck, ds_buf_str(&sql), &ps) == DuckDBError)
        ok = ds_error_set(err, DS_ERR_STORE, "cannot read %s: %s", relation, duckdb_prepare_error(ps));
    if (ok && duckdb_pending_prepared_streaming(ps, &pending) == DuckDBError)
        ok = ds_error_set(err, DS_ERR_STORE, "cannot read %s: %s", relation, duckdb_pending_error(pending));
    if (ok) {
        have_res = true;
        if (duckdb_execute_pending(pending, &res) == DuckDBError)
            ok = duck_error(&res, "cannot read the data", err), have_res = false;
    }
    ds_buf_free(&sql);
    store_result_feed f = {.res = have_res ? &res : NULL};
    duckdb_database db = NULL;
    duckdb_connection con = NULL;
    ok = ok && open_writer(p->root, &f, &db, &con, err);
    if (ok) {
        ds_buf copy = DS_BUF_INIT;
        ds_buf_append(&copy, "COPY (SELECT * FROM duckstore_result()) TO ");
        if (part->on) {
            ds_buf_append_literal(&copy, dir);
            ds_buf_append(&copy, " (FORMAT parquet, COMPRESSION zstd, PARTITION_BY (");
            ds_buf_append_ident(&copy, part->column);
            ds_buf_appendf(&copy, ")%s, ROW_GROUP_SIZE %d, ROW_GROUP_SIZE_BYTES %d)",
                           part->derived ? "" : ", WRITE_PARTITION_COLUMNS true", PUBLISH_ROW_GROUP,
                           PUBLISH_ROW_GROUP_BYTES);
        } else {
            char *file = path_join(dir, "data_0.parquet");
            ds_buf_append_literal(&copy, file ? file : dir);
            free(file);
            ds_buf_appendf(&copy,
                           " (FORMAT parquet, COMPRESSION zstd, ROW_GROUP_SIZE %d, ROW_GROUP_SIZE_BYTES %d)",
                           PUBLISH_ROW_GROUP, PUBLISH_ROW_GROUP_BYTES);
        }
        duckdb_result cres;
        ok = run(con, copy.failed ? NULL : ds_buf_str(&copy), &cres, "cannot write Parquet", err);
        if (ok)
            duckdb_destroy_result(&cres);
        else if (f.error != NULL)
            ds_error_set(err, DS_ERR_STORE, "cannot read the data: %s", f.error);
        ds_buf_free(&copy);
    }
    store_writer_close(&db, &con);
    store_result_feed_free(&f);
    if (have_res)
        duckdb_destroy_result(&res);
    if (pending)
        duckdb_destroy_pending(&pending);
    if (ps)
        duckdb_destroy_prepare(&ps);
    return ok;
}

/* Rows, bytes and partition key of each Parquet file under dir (written
 * just now), keyed by its path relative to dir. */
static bool describe_written(pub *p, const char *dir, const partitioning *part, json_t *out, ds_error *err)
{
    duckdb_database db = NULL;
    duckdb_connection con = NULL;
    bool ok = open_writer(p->root, NULL, &db, &con, err);
    char *glob = path_join(dir, "**/*.parquet");
    size_t prefix = strlen(dir) + 1;
    if (ok) {
        /* Nothing written (no partition changed, or no rows at all). */
        ds_buf q = DS_BUF_INIT;
        ds_buf_append(&q, "SELECT count(*) FROM glob(");
        ds_buf_append_literal(&q, glob);
        ds_buf_append(&q, ")");
        int64_t n = 0;
        ok = ds_buf_str(&q) ? store_query_int(con, ds_buf_str(&q), &n, err)
                            : ds_error_set(err, DS_ERR_NOMEM, "out of memory");
        ds_buf_free(&q);
        if (ok && n == 0) {
            free(glob);
            store_writer_close(&db, &con);
            return true;
        }
    }
    if (ok) {
        ds_buf q = DS_BUF_INIT;
        ds_buf_append(&q, "SELECT m.file_name, m.num_rows, m.file_size_bytes");
        ds_buf_append(&q, part->on ? ", k.key" : ", ''");
        ds_buf_append(&q, " FROM parquet_file_metadata(");
        ds_buf_append_literal(&q, glob);
        ds_buf_append(&q, ") m");
        if (part->on) {
            ds_buf_append(&q, " LEFT JOIN (SELECT DISTINCT filename, CAST(");
            ds_buf_append_ident(&q, part->column);
            ds_buf_append(&q, " AS VARCHAR) AS key FROM read_parquet(");
            ds_buf_append_literal(&q, glob);
            ds_buf_append(&q,
                          ", filename = true, hive_partitioning = true, hive_types_autocast = false)) k ON "
                          "k.filename = m.file_name");
        }
        duckdb_result res;
        ok = run(con, q.failed ? NULL : ds_buf_str(&q), &res, "cannot read the written files", err);
        for (idx_t r = 0; ok && r < duckdb_row_count(&res); r++) {
            char *name = cell(&res, 0, r), *key = cell(&res, 3, r);
            json_t *file = json_object();
            json_object_set_new(file, "rows", json_integer(duckdb_value_int64(&res, 1, r)));
            json_object_set_new(file, "bytes", json_integer(duckdb_value_int64(&res, 2, r)));
            json_object_set_new(file, "key", key ? ds_json_text(key) : json_null());
            if (name && strlen(name) > prefix)
                json_object_set_new(out, name + prefix, file);
            else
                json_decref(file);
            free(name);
            free(key);
        }
        if (ok)
            duckdb_destroy_result(&res);
        ds_buf_free(&q);
    }
    free(glob);
    store_writer_close(&db, &con);
    return ok;
}

static bool key_equal(const json_t *a, const char *b)
{
    return json_is_string(a) ? b != NULL && strcmp(json_string_value(a), b) == 0 : b == NULL;
}

/* Publishes one relation into <root>/<dirname> of this version: fingerprints
 * each partition, writes the changed ones, links the rest from prev (the
 * previous manifest's entry of the relation). Returns its manifest entry. */
static json_t *publish_relation(pub *p, const char *relation, const char *dirname, const json_t *prev,
                                bool must, const pgsrc_desc *const *descs, size_t ndescs, ds_error *err)
{
    partitioning part;
    if (!plan_partitioning(p->duck, p->src, relation, must, &part, err)) {
        ds_buf_free(&part.key);
        return NULL;
    }
    /* A partition's fingerprint: its row count and the sum of its rows'
     * hashes; equal ones are taken from the previous version. */
    ds_buf q = DS_BUF_INIT;
    ds_buf_appendf(&q, "SELECT %s AS k, count(*), CAST(sum(hash(d)) AS VARCHAR) FROM ",
                   ds_buf_str(&part.key));
    ds_buf_append_ident(&q, relation);
    ds_buf_append(&q, " AS d GROUP BY ALL ORDER BY ALL");
    duckdb_result res;
    if (!run(p->duck, q.failed ? NULL : ds_buf_str(&q), &res, "cannot read the data's partitions", err)) {
        ds_buf_free(&q);
        ds_buf_free(&part.key);
        return NULL;
    }
    ds_buf_free(&q);
    char *tmp_name = NULL, *tmp = NULL, *final = NULL;
    ds_buf tn = DS_BUF_INIT;
    ds_buf_appendf(&tn, ".tmp-%s", dirname);
    tmp_name = ds_buf_take(&tn);
    tmp = tmp_name ? path_join(p->root, tmp_name) : NULL;
    final = path_join(p->root, dirname);
    json_t *partitions = json_array(), *changed = json_array(), *reused = json_array();
    int64_t rows = 0;
    bool ok = tmp && final && mkdir_p(tmp, err);
    for (idx_t r = 0; ok && r < duckdb_row_count(&res); r++) {
        char *key = cell(&res, 0, r), *fp = cell(&res, 2, r);
        int64_t n = duckdb_value_int64(&res, 1, r);
        rows += n;
        json_t *entry = json_object();
        json_object_set_new(entry, "key", key ? ds_json_text(key) : json_null());
        json_object_set_new(entry, "rows", json_integer(n));
        json_object_set_new(entry, "fingerprint", ds_json_text(fp ? fp : ""));
        json_object_set_new(entry, "files", json_array());
        json_array_append_new(partitions, entry);
        const json_t *old = key && fp ? reusable(p, prev, key, n, fp) : NULL;
        if (old != NULL)
            json_array_append(reused, (json_t *)old);
        else
            json_array_append_new(changed, key ? ds_json_text(key) : json_null());
        free(key);
        free(fp);
    }
    duckdb_destroy_result(&res);
    bool all = json_array_size(reused) == 0;
    if (ok && (json_array_size(changed) > 0 || rows == 0))
        ok = write_rows(p, relation, &part, changed, all, tmp, err);
    json_t *written = json_object();
    ok = ok && describe_written(p, tmp, &part, written, err);
    /* Files of unchanged partitions: hard links to the previous version's. */
    json_t *files = json_array();
    int64_t nfiles_written = 0;
    const char *path;
    json_t *w;
    json_object_foreach(written, path, w)
    {
        ds_buf rel = DS_BUF_INIT;
        ds_buf_appendf(&rel, "%s/%s", dirname, path);
        json_t *file = json_object();
        json_object_set_new(file, "path", ds_json_text(ds_buf_str(&rel) ? ds_buf_str(&rel) : ""));
        json_object_set(file, "rows", json_object_get(w, "rows"));
        json_object_set(file, "bytes", json_object_get(w, "bytes"));
        json_object_set(file, "partition", json_object_get(w, "key"));
        json_object_set_new(file, "written_in", json_integer(p->version));
        json_array_append_new(files, file);
        nfiles_written++;
        p->result->bytes_written += json_integer_value(json_object_get(w, "bytes"));
        ds_buf_free(&rel);
    }
    size_t i;
    json_t *old;
    json_array_foreach(reused, i, old)
    {
        size_t j;
        json_t *f;
        json_array_foreach(json_object_get(old, "files"), j, f)
        {
            if (!ok)
                break;
            const char *from_rel = json_string_value(json_object_get(f, "path"));
            const char *inside = from_rel ? strchr(from_rel, '/') : NULL;
            if (inside == NULL)
                continue;
            char *from = path_join(p->root, from_rel);
            char *to = path_join(tmp, inside + 1);
            ok = from && to && link_or_copy(from, to, err);
            ds_buf rel = DS_BUF_INIT;
            ds_buf_appendf(&rel, "%s/%s", dirname, inside + 1);
            json_t *file = json_deep_copy(f);
            json_object_set_new(file, "path", ds_json_text(ds_buf_str(&rel) ? ds_buf_str(&rel) : ""));
            json_object_set(file, "partition", json_object_get(old, "key"));
            json_array_append_new(files, file);
            ds_buf_free(&rel);
            free(from);
            free(to);
        }
    }
    /* Each partition lists its files, for the next version's reuse. */
    json_t *file;
    json_array_foreach(files, i, file)
    {
        size_t j;
        json_t *entry;
        json_array_foreach(partitions, j, entry)
        {
            const json_t *fk = json_object_get(file, "partition");
            const json_t *pk = json_object_get(entry, "key");
            if (key_equal(fk, json_is_string(pk) ? json_string_value(pk) : NULL) &&
                (part.on || json_array_size(partitions) == 1))
                json_array_append_new(json_object_get(entry, "files"), json_deep_copy(file));
        }
    }
    ok = ok && sync_tree(tmp, "", NULL, err);
    if (ok && rename(tmp, final) != 0)
        ok = ds_error_set(err, DS_ERR_STORE, "cannot rename %s to %s: %s", tmp, final, strerror(errno));
    json_t *entry = NULL;
    if (ok) {
        const char *sample = NULL;
        char *sample_path = NULL;
        if (json_array_size(files) > 0) {
            sample_path =
                path_join(p->root, json_string_value(json_object_get(json_array_get(files, 0), "path")));
            sample = sample_path;
        }
        duckdb_database db = NULL;
        duckdb_connection con = NULL;
        json_t *schema = NULL;
        if (open_writer(p->root, NULL, &db, &con, err))
            schema = schema_json(p->duck, con, relation, sample, descs, ndescs);
        store_writer_close(&db, &con);
        free(sample_path);
        entry = json_object();
        json_object_set_new(entry, "name", ds_json_text(relation));
        json_object_set_new(entry, "dir", ds_json_text(dirname));
        json_object_set_new(entry, "rows", json_integer(rows));
        json_object_set_new(entry, "partition_column", part.on ? ds_json_text(part.column) : json_null());
        json_object_set_new(entry, "schema", schema ? schema : json_array());
        json_object_set_new(entry, "files", json_incref(files));
        json_object_set_new(entry, "partitions", json_incref(partitions));
        p->result->files += (int64_t)json_array_size(files);
        p->result->files_written += nfiles_written;
    } else if (tmp) {
        remove_tree(tmp);
    }
    json_decref(written);
    json_decref(files);
    json_decref(partitions);
    json_decref(changed);
    json_decref(reused);
    free(tmp_name);
    free(tmp);
    free(final);
    ds_buf_free(&part.key);
    return entry;
}

/* ---- manifest, status ---- */

static bool write_manifest(const char *root, json_t *manifest, ds_error *err)
{
    char *final = path_join(root, PUBLISH_MANIFEST);
    char *tmp = path_join(root, "." PUBLISH_MANIFEST ".tmp");
    char *text = json_dumps(manifest, JSON_INDENT(2) | JSON_SORT_KEYS);
    bool ok = final && tmp && text;
    if (!ok) {
        ds_error_set(err, DS_ERR_NOMEM, "out of memory");
    } else {
        FILE *out = fopen(tmp, "w");
        ok = out != NULL && fputs(text, out) >= 0 && fputc('\n', out) != EOF && fflush(out) == 0 &&
             fsync(fileno(out)) == 0;
        if (out != NULL && fclose(out) != 0)
            ok = false;
        if (!ok)
            ds_error_set(err, DS_ERR_STORE, "cannot write %s: %s", tmp, strerror(errno));
        else if (rename(tmp, final) != 0)
            ok = ds_error_set(err, DS_ERR_STORE, "cannot rename %s to %s: %s", tmp, final, strerror(errno));
        ok = ok && fsync_path(root, err);
    }
    free(text);
    free(final);
    free(tmp);
    return ok;
}

/* The persisted status's `publish` object, updated in place. */
static void record_status(store *st, const cfg_source *src, const publish_result *r, const ds_error *failure)
{
    duckdb_connection duck;
    ds_error err;
    store_use_begin(st);
    if (!store_connect(st, &duck, &err)) {
        store_use_end(st);
        ds_log_warn("%s: publish: cannot record its status: %s", src->name, err.msg);
        return;
    }
    store_commit_lock(st);
    char *text = NULL;
    json_t *doc = NULL;
    if (store_get_status(NULL, duck, src->name, &text, &err) && text)
        doc = json_loads(text, 0, NULL);
    free(text);
    if (!json_is_object(doc)) {
        /* Published before any sync was recorded in this file. */
        json_decref(doc);
        doc = json_pack("{s:s}", "state", sync_state_name(SYNC_STATE_NOT_SYNCED));
    }
    json_t *pubdoc = json_object_get(doc, "publish");
    if (!json_is_object(pubdoc)) {
        pubdoc = json_object();
        json_object_set_new(doc, "publish", pubdoc);
        json_object_set_new(pubdoc, "version", json_null());
        json_object_set_new(pubdoc, "at", json_null());
    }
    char now[SYNC_TIME_CAP];
    sync_now_iso(now, sizeof now);
    json_object_set_new(pubdoc, "path", ds_json_text(src->publish_path));
    json_object_set_new(pubdoc, "last_attempt", json_string(now));
    if (failure == NULL) {
        json_object_set_new(pubdoc, "version", json_integer(r->version));
        json_object_set_new(pubdoc, "at", json_string(now));
        json_object_set_new(pubdoc, "rows", json_integer(r->rows));
        json_object_set_new(pubdoc, "files", json_integer(r->files));
        json_object_set_new(pubdoc, "files_written", json_integer(r->files_written));
        json_object_set_new(pubdoc, "bytes_written", json_integer(r->bytes_written));
        json_object_set_new(pubdoc, "duration_seconds", json_real(r->duration_s));
        json_object_set_new(pubdoc, "error", json_null());
    } else {
        json_object_set_new(pubdoc, "error", ds_json_text(failure->msg));
    }
    char *out = json_dumps(doc, JSON_COMPACT);
    bool ok = out && store_exec(duck, "BEGIN TRANSACTION", &err) &&
              store_put_status(st, duck, src->name, out, &err) && store_exec(duck, "COMMIT", &err);
    if (!ok) {
        store_exec(duck, "ROLLBACK", NULL);
        ds_log_warn("%s: publish: cannot record its status: %s", src->name, out ? err.msg : "out of memory");
    }
    free(out);
    json_decref(doc);
    store_commit_unlock(st);
    duckdb_disconnect(&duck);
    store_use_end(st);
}

/* The sync's status fields a manifest repeats: the sync's time and the
 * watermarks of each table. */
/* A logical source's version holds the transactions up to the stored
 * LSN, read in the publish's snapshot: a reader can tell exactly which
 * PostgreSQL commits it contains. */
static void add_capture_position(duckdb_connection duck, const cfg_source *src, json_t *manifest)
{
    ds_buf sql = DS_BUF_INIT;
    ds_buf_append(&sql,
                  "SELECT lsn, strftime(last_commit_at AT TIME ZONE 'UTC', '%Y-%m-%dT%H:%M:%S.%f+00:00') "
                  "FROM _duckstore.capture WHERE source = ");
    ds_buf_append_literal(&sql, src->name);
    duckdb_result res;
    json_t *capture = json_object();
    if (ds_buf_str(&sql) != NULL) {
        if (duckdb_query(duck, ds_buf_str(&sql), &res) == DuckDBSuccess && duckdb_row_count(&res) > 0) {
            char *lsn = duckdb_value_varchar(&res, 0, 0);
            char *at = duckdb_value_varchar(&res, 1, 0);
            json_object_set_new(capture, "lsn", lsn ? ds_json_text(lsn) : json_null());
            json_object_set_new(capture, "last_commit_at", at ? ds_json_text(at) : json_null());
            duckdb_free(lsn);
            duckdb_free(at);
        }
        duckdb_destroy_result(&res);
    }
    ds_buf_free(&sql);
    json_object_set_new(manifest, "capture", capture);
}

static void add_sync_facts(duckdb_connection duck, const cfg_source *src, json_t *manifest)
{
    char *text = NULL;
    json_t *doc = NULL;
    ds_error err;
    if (store_get_status(NULL, duck, src->name, &text, &err) && text)
        doc = json_loads(text, 0, NULL);
    free(text);
    json_t *last = json_object_get(doc, "last_sync");
    json_object_set_new(manifest, "synced_at", json_is_string(last) ? json_incref(last) : json_null());
    json_decref(doc);
    json_t *watermarks = json_object();
    for (size_t i = 0; i < src->n_plans; i++) {
        store_table_meta meta;
        if (!store_get_table_meta(NULL, duck, src->plans[i].table, &meta, &err))
            continue;
        json_object_set_new(watermarks, src->plans[i].table,
                            meta.watermark ? ds_json_text(meta.watermark) : json_null());
        store_table_meta_free(&meta);
    }
    json_object_set_new(manifest, "watermarks", watermarks);
    if (src->capture == CFG_CAPTURE_LOGICAL)
        add_capture_position(duck, src, manifest);
}

/* The columns' types with their modifiers, as PostgreSQL prints them:
 * numeric(10,2), character varying(20). Kept without them on failure. */
static void with_typmods(pgsrc_conn *conn, pgsrc_desc *desc)
{
    ds_buf sql = DS_BUF_INIT;
    ds_buf_append(&sql, "SELECT string_agg(format_type(o, t), E'\\n' ORDER BY n) FROM unnest('{");
    for (size_t i = 0; i < desc->ncols; i++)
        ds_buf_appendf(&sql, "%s%u", i ? "," : "", desc->cols[i].oid);
    ds_buf_append(&sql, "}'::oid[], '{");
    for (size_t i = 0; i < desc->ncols; i++)
        ds_buf_appendf(&sql, "%s%d", i ? "," : "", (int)desc->cols[i].typmod);
    ds_buf_append(&sql, "}'::int[]) WITH ORDINALITY AS x(o, t, n)");
    char *text = NULL;
    ds_error err;
    if (ds_buf_str(&sql) && pgsrc_query_value(conn, ds_buf_str(&sql), &text, &err) && text) {
        char *save = NULL;
        char *line = strtok_r(text, "\n", &save);
        for (size_t i = 0; i < desc->ncols && line != NULL; i++, line = strtok_r(NULL, "\n", &save)) {
            char *copy = strdup(line);
            if (copy != NULL) {
                free(desc->cols[i].pg_type);
                desc->cols[i].pg_type = copy;
            }
        }
    }
    free(text);
    ds_buf_free(&sql);
}

/* The PostgreSQL types of the queries' columns; a source that cannot be
 * reached gives none (the manifest says null), never a failed publish. */
static size_t describe_source(const cfg_source *src, pgsrc_desc *descs)
{
    if (src->url_unexpanded)
        return 0;
    pgsrc_conn conn;
    ds_error err;
    if (!pgsrc_connect(src->url, src->query_timeout_s, &conn, &err)) {
        ds_log_warn("%s: publish: no PostgreSQL types in the manifest: %s", src->name, err.msg);
        return 0;
    }
    size_t n = 0;
    for (size_t i = 0; i < src->n_plans; i++) {
        memset(&descs[n], 0, sizeof descs[n]);
        if (pgsrc_describe(&conn, src->plans[i].sql, &descs[n], &err))
            with_typmods(&conn, &descs[n++]);
        else
            ds_log_warn("%s: publish: no PostgreSQL types of %s: %s", src->name, src->plans[i].label,
                        err.msg);
    }
    pgsrc_disconnect(&conn);
    return n;
}

static bool publish_locked(store *st, const cfg_source *src, publish_result *out, ds_error *err)
{
    memset(out, 0, sizeof *out);
    if (src->publish_line == 0 || src->publish_path == NULL)
        return ds_error_set(err, DS_ERR_CONFIG,
                            "%s:%d: %s has no publish: section; add publish: {path: published/%s}", src->file,
                            src->line, src->name, src->name);
    double t0 = ds_monotonic_s();
    const char *root = src->publish_path;
    if (!mkdir_p(root, err))
        return false;
    char *manifest_path = path_join(root, PUBLISH_MANIFEST);
    json_t *prev = manifest_path ? json_load_file(manifest_path, 0, NULL) : NULL;
    free(manifest_path);
    int64_t prev_version = json_integer_value(json_object_get(prev, "version"));
    int64_t highest = highest_version(root);
    pub p = {.src = src, .root = root, .result = out};
    p.version = (highest > prev_version ? highest : prev_version) + 1;
    out->version = p.version;

    pgsrc_desc descs[CFG_MAX_QUERIES];
    size_t ndescs = describe_source(src, descs);
    const pgsrc_desc *desc_refs[CFG_MAX_QUERIES];
    for (size_t i = 0; i < ndescs; i++)
        desc_refs[i] = &descs[i];

    store_use_begin(st);
    bool ok = store_connect(st, &p.duck, err);
    json_t *manifest = json_object();
    /* One snapshot for every relation and the watermarks. */
    ok = ok && store_exec(p.duck, "BEGIN TRANSACTION", err);
    if (ok) {
        ds_buf dir = DS_BUF_INIT;
        ds_buf_appendf(&dir, "v%lld", (long long)p.version);
        json_t *data = ds_buf_str(&dir) ? publish_relation(&p, src->data_name, ds_buf_str(&dir), prev, true,
                                                           desc_refs, ndescs, err)
                                        : NULL;
        ds_buf_free(&dir);
        ok = data != NULL;
        if (ok) {
            out->rows = json_integer_value(json_object_get(data, "rows"));
            json_object_update(manifest, data);
            json_decref(data);
        }
        json_t *tables = json_array();
        for (size_t i = 0; ok && src->publish_tables && i < src->n_plans; i++) {
            const char *table = src->plans[i].table;
            json_t *prev_table = NULL;
            size_t j;
            json_t *t;
            json_array_foreach(json_object_get(prev, "tables"), j, t)
            {
                const char *name = json_string_value(json_object_get(t, "name"));
                if (name && strcmp(name, table) == 0)
                    prev_table = t;
            }
            ds_buf tdir = DS_BUF_INIT;
            ds_buf_appendf(&tdir, "v%lld_%s", (long long)p.version, table);
            json_t *entry = ds_buf_str(&tdir)
                                ? publish_relation(&p, table, ds_buf_str(&tdir), prev_table, false,
                                                   desc_refs + i, ndescs > i ? 1 : 0, err)
                                : NULL;
            ds_buf_free(&tdir);
            ok = entry != NULL;
            if (ok)
                json_array_append_new(tables, entry);
        }
        json_object_set_new(manifest, "tables", tables);
        if (ok)
            add_sync_facts(p.duck, src, manifest);
        store_exec(p.duck, ok ? "COMMIT" : "ROLLBACK", NULL);
    }
    if (p.duck)
        duckdb_disconnect(&p.duck);
    store_use_end(st);
    for (size_t i = 0; i < ndescs; i++)
        pgsrc_desc_free(&descs[i]);

    if (ok) {
        char now[SYNC_TIME_CAP];
        sync_now_iso(now, sizeof now);
        json_object_set_new(manifest, "format", json_integer(1));
        json_object_set_new(manifest, "version", json_integer(p.version));
        json_object_set_new(manifest, "created_at", json_string(now));
        json_object_set_new(manifest, "source", ds_json_text(src->name));
        json_object_set_new(manifest, "partition_by",
                            src->publish_partition_by ? ds_json_text(src->publish_partition_by)
                                                      : json_null());
        json_object_set_new(manifest, "previous_version",
                            prev_version ? json_integer(prev_version) : json_null());
        ok = write_manifest(root, manifest, err);
    }
    json_decref(manifest);
    json_decref(prev);
    if (ok)
        remove_old_versions(root, p.version, src->publish_keep_versions);
    out->duration_s = ds_monotonic_s() - t0;
    return ok;
}

bool publish_source(store *st, const cfg_source *src, publish_result *out, ds_error *err)
{
    pthread_mutex_lock(&publish_lock);
    double t0 = ds_monotonic_s();
    bool ok = publish_locked(st, src, out, err);
    if (!ok)
        ds_error_prefix(err, "%s: publish: ", src->name);
    pthread_mutex_unlock(&publish_lock);
    record_status(st, src, out, ok ? NULL : err);
    track(src->name, ok, out, ds_monotonic_s() - t0);
    if (ok)
        ds_log_info(
            "%s: published version %lld to %s: %lld rows, %lld files (%lld written, %lld bytes), %.2f s",
            src->name, (long long)out->version, src->publish_path, (long long)out->rows,
            (long long)out->files, (long long)out->files_written, (long long)out->bytes_written,
            out->duration_s);
    else
        ds_log_warn("%s (retried after the next sync)", err->msg);
    return ok;
}

/* A version directory (or its temporary one) above the recorded version:
 * a publish was killed before it could record its outcome. */
static bool interrupted(const char *root, int64_t recorded)
{
    return highest_version(root) > recorded;
}

/* Due after every sync, or when `every` minutes have passed since the last
 * version, or when the last attempt failed or was killed. */
static bool due(store *st, const cfg_source *src, bool data_changed)
{
    if (src->publish_every_minutes <= 0 && data_changed)
        return true;
    duckdb_connection duck;
    ds_error err;
    char *text = NULL;
    if (!store_borrow(st, &duck, &err))
        return true;
    store_get_status(NULL, duck, src->name, &text, &err);
    store_release(st, &duck);
    json_t *doc = text ? json_loads(text, 0, NULL) : NULL;
    free(text);
    json_t *pubdoc = json_object_get(doc, "publish");
    const char *at = json_string_value(json_object_get(pubdoc, "at"));
    time_t last;
    /* No version yet, or the last attempt failed or was killed. */
    bool repair = !json_is_null(json_object_get(pubdoc, "error")) || at == NULL ||
                  !sync_parse_iso(at, &last) ||
                  interrupted(src->publish_path, json_integer_value(json_object_get(pubdoc, "version")));
    bool elapsed = repair || src->publish_every_minutes <= 0 ||
                   difftime(time(NULL), last) >= src->publish_every_minutes * 60.0;
    json_decref(doc);
    return repair || (data_changed && elapsed);
}

void publish_after_sync(store *st, const cfg_source *src, bool data_changed)
{
    if (src->publish_line == 0 || !due(st, src, data_changed))
        return;
    publish_result r;
    ds_error err;
    ds_error_clear(&err);
    publish_source(st, src, &r, &err);
}
