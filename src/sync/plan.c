/* duckstore plan: a sync's own steps up to its read (sync/job.c), then
 * PostgreSQL's estimate of the read, and a rollback. */
#include "sync/plan.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/strbuf.h"
#include "sync/conns.h"
#include "sync/job.h"

/* The SELECT inside the COPY statement (pgsrc_append_copy_sql writes
 * "COPY (<select>) TO STDOUT (FORMAT binary)"): what EXPLAIN can plan. */
static char *select_of_copy(const char *copy)
{
    static const char head[] = "COPY (", tail[] = ") TO STDOUT (FORMAT binary)";
    if (copy == NULL)
        return NULL;
    size_t len = strlen(copy), nh = sizeof head - 1, nt = sizeof tail - 1;
    if (len < nh + nt || strncmp(copy, head, nh) != 0 || strcmp(copy + len - nt, tail) != 0)
        return NULL;
    return strndup(copy + nh, len - nh - nt);
}

/* PostgreSQL's row estimate of the read, inside its read-only transaction;
 * -1 when it cannot give one (the reason is not the plan's concern: the
 * sync would meet it and say so). */
static double row_estimate(pgsrc_conn *pg, const char *copy)
{
    char *select = select_of_copy(copy);
    ds_buf sql = DS_BUF_INIT;
    ds_buf_appendf(&sql, "EXPLAIN (FORMAT JSON) %s", select ? select : "");
    free(select);
    double rows = -1;
    const char *text = ds_buf_str(&sql);
    PGresult *res = text && strlen(text) > 22 ? PQexec(pg->pg, text) : NULL;
    if (res != NULL && PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1) {
        json_t *doc = json_loads(PQgetvalue(res, 0, 0), 0, NULL);
        json_t *n = json_object_get(json_object_get(json_array_get(doc, 0), "Plan"), "Plan Rows");
        if (json_is_number(n))
            rows = json_number_value(n);
        json_decref(doc);
    }
    PQclear(res);
    ds_buf_free(&sql);
    return rows;
}

static char *dup_or_null(const char *s)
{
    return s ? strdup(s) : NULL;
}

/* Runs the job's steps up to the read and records what they decided. */
static bool plan_table(table_job *job, pgsrc_conn *pg, duckdb_connection duck, sync_table_plan *out)
{
    pump_shared shared;
    if (!job_describe_and_decide(job, pg, duck) || !job_open_read(job, pg, duck, &shared))
        return false;
    out->plan = job->plan;
    out->incremental = job->incremental;
    out->why = job_decision_text(job->why);
    out->watermark = dup_or_null(job->old_watermark);
    out->read_start = dup_or_null(job->read_start);
    out->start_inclusive = job->start_inclusive;
    out->late_commits = job->late_commits;
    out->pending = job->next_state.npending;
    out->tracks_xacts = job->tracks_xacts;
    out->horizon = dup_or_null(job->horizon.value);
    out->horizon_holder = dup_or_null(job->horizon.holder);
    out->partitions = job_partitions(job);
    out->row_limit = pump_copy_limit(&shared);
    out->copy_sql = job_copy_sql(job, pg, &shared);
    bool ok = out->copy_sql != NULL || ds_error_set(&job->err, DS_ERR_NOMEM, "out of memory");
    if (ok)
        out->row_estimate = row_estimate(pg, out->copy_sql);
    pgsrc_exec(pg, "ROLLBACK", NULL);
    return ok;
}

bool sync_plan_source(store *st, const cfg_config *cfg, const cfg_source *src, bool force_full,
                      sync_plan *out, ds_error *err)
{
    memset(out, 0, sizeof *out);
    sync_options opt = {.force_full = force_full};
    bool ok = true;
    for (size_t i = 0; ok && i < src->n_plans; i++) {
        table_job job;
        job_init(&job, st, cfg, src, &opt, i);
        sync_table_plan *t = &out->tables[out->ntables];
        t->row_estimate = -1;
        pgsrc_conn pg;
        duckdb_connection duck = NULL;
        ok = sync_connect(src, &opt, &pg, &job.err);
        if (ok) {
            ok = store_connect(st, &duck, &job.err) && plan_table(&job, &pg, duck, t);
            if (duck != NULL)
                duckdb_disconnect(&duck);
            sync_disconnect(&opt, &pg, false);
        }
        out->ntables++;
        for (size_t w = 0; w < job.warnings.nwarnings; w++)
            sync_report_warning(&out->warnings, "%s", job.warnings.warnings[w]);
        if (!ok) {
            *err = job.err;
            ds_error_prefix(err, "%s: ", src->name);
        }
        job_free(&job);
    }
    return ok;
}

void sync_plan_free(sync_plan *p)
{
    for (size_t i = 0; i < p->ntables; i++) {
        sync_table_plan *t = &p->tables[i];
        free(t->watermark);
        free(t->read_start);
        free(t->horizon);
        free(t->horizon_holder);
        free(t->copy_sql);
    }
    p->ntables = 0;
}

/* When the server's scheduler will rebuild the source in full: its status
 * document's next_full_refresh (sync/status.c computes it), once passed. */
static void full_refresh_text(store *st, const cfg_source *src, ds_buf *out)
{
    if (src->full_refresh_interval_minutes <= 0)
        return;
    ds_error err;
    json_t *doc = sync_status_json(st, src, &err);
    const char *next = json_string_value(json_object_get(doc, "next_full_refresh"));
    time_t due;
    if (next != NULL && sync_parse_iso(next, &due) && due <= time(NULL))
        ds_buf_appendf(out,
                       "  periodic full refresh: due since %s: the next scheduled sync in duckstore serve "
                       "rebuilds every table in full (duckstore sync without --full reads incrementally as "
                       "planned below)\n",
                       next);
    else if (next != NULL)
        ds_buf_appendf(out, "  periodic full refresh: next at %s (duckstore serve's scheduler)\n", next);
    json_decref(doc);
}

static void table_plan_text(const sync_table_plan *t, ds_buf *out)
{
    ds_buf_appendf(out, "  %s (%s): %s sync: %s\n", t->plan->table, t->plan->label,
                   t->incremental ? "incremental" : "full", t->why);
    if (t->watermark != NULL)
        ds_buf_appendf(out, "    watermark:      %s\n", t->watermark);
    if (t->incremental)
        ds_buf_appendf(out, "    read starts at: %s%s\n", t->read_start ? t->read_start : "the beginning",
                       t->read_start == NULL ? ""
                       : t->start_inclusive  ? " (inclusive)"
                                             : " (exclusive)");
    if (t->late_commits > 0)
        ds_buf_appendf(out,
                       "    late commits:   %zu transaction(s) seen in progress by the last read have "
                       "committed; the read starts low enough to meet their rows\n",
                       t->late_commits);
    if (t->horizon != NULL)
        ds_buf_appendf(out, "    commit horizon: %s%s%s\n", t->horizon,
                       t->horizon_holder ? ", held back by " : " (no open transaction holds it back)",
                       t->horizon_holder ? t->horizon_holder : "");
    else if (!t->tracks_xacts)
        ds_buf_append(out, "    commit horizon: off\n");
    if (t->pending > 0)
        ds_buf_appendf(out, "    in progress:    %zu transaction(s) the next read looks for again\n",
                       t->pending);
    if (t->partitions > 1)
        ds_buf_appendf(
            out,
            "    partitions:     one reader over the whole query; if its first half second says "
            "PostgreSQL is the bottleneck, the query again with PostgreSQL's parallel workers where it "
            "can; else, or if cores are idle, about %d ranges of partition_column (each adds its range "
            "to the WHERE) read by up to %d workers\n",
            t->partitions * 4, t->partitions);
    if (t->row_limit >= 0)
        ds_buf_appendf(out, "    row limit:      max_sync_rows (LIMIT %lld)\n", (long long)t->row_limit);
    if (t->row_estimate >= 0)
        ds_buf_appendf(out, "    estimate:       %.0f rows (PostgreSQL's EXPLAIN)\n", t->row_estimate);
    else
        ds_buf_append(out, "    estimate:       unknown (EXPLAIN gave none)\n");
    ds_buf_appendf(out, "    SQL:            %s\n", t->copy_sql);
}

bool sync_plan_text(store *st, const cfg_config *cfg, const cfg_source *src, bool force_full, ds_buf *out,
                    ds_error *err)
{
    char *url = cfg_mask_url(src->url);
    ds_buf_appendf(out, "%s (%s:%d) -> %s, from %s\n", src->name, src->file, src->line, src->data_name,
                   url ? url : "(url not shown: out of memory)");
    free(url);
    full_refresh_text(st, src, out);
    sync_plan plan;
    ds_error_clear(err);
    bool ok = sync_plan_source(st, cfg, src, force_full, &plan, err);
    for (size_t i = 0; ok && i < plan.ntables; i++)
        table_plan_text(&plan.tables[i], out);
    for (size_t w = 0; w < plan.warnings.nwarnings; w++)
        ds_buf_appendf(out, "  warning: %s\n", plan.warnings.warnings[w]);
    sync_plan_free(&plan);
    if (ok && ds_buf_str(out) == NULL)
        return ds_error_set(err, DS_ERR_NOMEM, "%s: out of memory writing the plan", src->name);
    return ok;
}
