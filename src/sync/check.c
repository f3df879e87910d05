/* The describe-only validation of a query, shared by a sync (before it
 * reads) and check-config (which only describes), so both say the same. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/strbuf.h"
#include "source/querytext.h"
#include "sync/incremental.h"
#include "sync/sync.h"

void sync_report_warning(sync_report *report, const char *fmt, ...)
{
    if (report->nwarnings >= SYNC_MAX_WARNINGS)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(report->warnings[report->nwarnings], sizeof report->warnings[0], fmt, ap);
    va_end(ap);
    ds_utf8_trim_end(report->warnings[report->nwarnings]);
    /* The queries of a split source may say the same thing: once. */
    for (size_t i = 0; i < report->nwarnings; i++)
        if (strcmp(report->warnings[i], report->warnings[report->nwarnings]) == 0)
            return;
    report->nwarnings++;
}

typedef struct column_rule {
    const char *key, *column, *effect;
    bool (*usable)(const pgsrc_type *);
} column_rule;

static void check_column(const cfg_source *src, const char *label, const pgsrc_desc *desc,
                         const column_rule *rule, sync_report *warnings)
{
    int idx = pgsrc_desc_find(desc, rule->column);
    if (idx >= 0 && rule->usable(&desc->cols[idx].type))
        return;
    if (idx >= 0) {
        const char *fix = desc->cols[idx].type.kind == PGSRC_NUMERIC_DOUBLE
                              ? ". Fix: give it a precision in the query, e.g. ::numeric(20,0), so DuckDB "
                                "stores it exactly"
                              : "";
        sync_report_warning(warnings, "%s: %s \"%s\" of %s has type %s, which cannot be used for it; %s %s%s",
                            src->name, rule->key, rule->column, label, desc->cols[idx].pg_type, label,
                            rule->effect, fix);
        return;
    }
    char *cols = pgsrc_desc_column_list(desc);
    sync_report_warning(
        warnings,
        "%s: %s \"%s\" is not a column of %s (columns: %s); %s %s. Fix: select \"%s\" in %s, or change %s",
        src->name, rule->key, rule->column, label, cols ? cols : "", label, rule->effect, rule->column, label,
        rule->key);
    free(cols);
}

/* A value stored as text whose maximum is taken for a watermark: DuckDB
 * takes the text maximum ("$9.00" over "$10.00"), PostgreSQL's `>` compares
 * as the type, so every sync would read and append the same rows again. */
static bool refuse_text_watermark(const cfg_source *src, const cfg_query_plan *plan, const pgsrc_column *col,
                                  ds_error *err)
{
    const char *type = col->pg_type;
    bool address = strcmp(type, "inet") == 0 || strcmp(type, "cidr") == 0;
    ds_buf fix = DS_BUF_INIT;
    if (address)
        ds_buf_append(&fix, "(host(");
    ds_buf_append_ident(&fix, col->name);
    ds_buf_append(&fix, address                      ? ")::inet - '0.0.0.0') for IPv4 addresses (a bigint)"
                        : strcmp(type, "money") == 0 ? "::numeric(20,2)"
                                                     : "::text where text order is the one wanted");
    char *fix_text = ds_buf_take(&fix);
    ds_error_set(err, DS_ERR_CONFIG,
                 "%s:%d: incremental_column \"%s\" of %s has type %s, which is stored as text: DuckDB "
                 "orders its text, PostgreSQL orders %s by its own rules, so the stored maximum would not "
                 "bound the next read and every sync would append the same rows again. Fix: cast it in the "
                 "query to a type that orders the same, e.g. %s, or use a timestamp or serial column as "
                 "incremental_column",
                 src->file, src->incremental_column_line, col->name, plan->label, type, type,
                 fix_text ? fix_text : "a number");
    free(fix_text);
    return false;
}

/* A lookback is subtracted from the watermark in the column's type: a
 * number from numbers, an interval from dates and times; nothing else has
 * a distance to subtract. */
static bool check_lookback(const cfg_source *src, const cfg_query_plan *plan, const pgsrc_column *col,
                           ds_error *err)
{
    bool numeric = false, temporal = false;
    switch (col->type.kind) {
    case PGSRC_INT2:
    case PGSRC_INT4:
    case PGSRC_INT8:
    case PGSRC_OID:
    case PGSRC_FLOAT4:
    case PGSRC_FLOAT8:
    case PGSRC_NUMERIC_DECIMAL:
    case PGSRC_NUMERIC_DOUBLE:
        numeric = true;
        break;
    case PGSRC_DATE:
    case PGSRC_TIME:
    case PGSRC_TIMESTAMP:
    case PGSRC_TIMESTAMPTZ:
        temporal = true;
        break;
    default:
        break;
    }
    if ((numeric && src->lookback_is_number) || (temporal && !src->lookback_is_number))
        return true;
    const char *fits = numeric    ? "a numeric column takes a number in its own unit, e.g. lookback: 100"
                       : temporal ? "a date or time column takes an interval, e.g. lookback: \"5 minutes\""
                                  : "a column of this type takes no lookback (only numbers, dates and "
                                    "times have a distance to subtract): remove lookback";
    return ds_error_set(err, DS_ERR_CONFIG,
                        "%s:%d: lookback \"%s\" is %s, but incremental_column \"%s\" of %s has type %s: %s",
                        src->file, src->lookback_line, src->lookback,
                        src->lookback_is_number ? "a number" : "an interval", col->name, plan->label,
                        col->pg_type, fits);
}

/* An incremental read is the query wrapped in WHERE col > watermark, its
 * rows appended: a LIMIT inside then picks rows from the new ones only, and
 * the stored rows it would have dropped stay. */
static void warn_limit(const cfg_source *src, const cfg_query_plan *plan, sync_report *warnings)
{
    const char *clause = pgsrc_top_level_limit(plan->sql);
    if (clause == NULL)
        return;
    sync_report_warning(
        warnings,
        "%s: %s has a top-level %s, but an incremental sync reads the query wrapped in WHERE "
        "\"%s\" > watermark and appends those rows: rows that drop out of the %s stay stored, "
        "so the table grows past it and is no longer the query's result. Fix: drop the %s "
        "(max_sync_rows caps a table), or remove incremental_column so every sync reads the "
        "query in full",
        src->name, plan->label, clause, src->incremental_column, clause, clause);
}

bool sync_check_query(const cfg_source *src, const cfg_query_plan *plan, const pgsrc_desc *desc,
                      sync_report *warnings, ds_error *err)
{
    const char *missing_key = NULL;
    for (size_t i = 0; missing_key == NULL && i < plan->key->n; i++)
        if (pgsrc_desc_find(desc, plan->key->cols[i]) < 0)
            missing_key = plan->key->cols[i];
    /* A split source's queries are joined on join.columns (dataset_id by default). */
    const char *no_join_col = NULL;
    for (size_t i = 0; plan->needs_dataset_id && no_join_col == NULL && i < src->join_columns.n; i++)
        if (pgsrc_desc_find(desc, src->join_columns.cols[i]) < 0)
            no_join_col = src->join_columns.cols[i];
    if (no_join_col != NULL || missing_key != NULL) {
        char *cols = pgsrc_desc_column_list(desc);
        if (no_join_col != NULL && src->join_line == 0)
            ds_error_set(err, DS_ERR_CONFIG,
                         "%s (%s:%d) has no column named dataset_id (columns: %s); both queries of a split "
                         "source are joined on it: select it or alias one, e.g. trace_id AS dataset_id",
                         plan->label, src->file, src->line, cols ? cols : "");
        else if (no_join_col != NULL)
            ds_error_set(
                err, DS_ERR_CONFIG,
                "%s:%d: join column \"%s\" is not a column of %s (columns: %s); both queries of a "
                "split source must select each column of join.columns: select it or fix join.columns",
                src->file, src->join_line, no_join_col, plan->label, cols ? cols : "");
        else
            ds_error_set(
                err, DS_ERR_CONFIG,
                "%s:%d: unique_key column \"%s\" is not a column of %s (columns: %s); select it or fix "
                "unique_key",
                src->file, src->unique_key_line, missing_key, plan->label, cols ? cols : "");
        free(cols);
        return false;
    }
    int inc = src->incremental_column ? pgsrc_desc_find(desc, src->incremental_column) : -1;
    if (inc >= 0 && pgtypes_is_text_form(&desc->cols[inc].type))
        return refuse_text_watermark(src, plan, &desc->cols[inc], err);
    if (inc >= 0 && inc_usable_as_watermark(&desc->cols[inc].type)) {
        if (src->lookback != NULL && !check_lookback(src, plan, &desc->cols[inc], err))
            return false;
        warn_limit(src, plan, warnings);
    }
    const column_rule rules[] = {
        {"incremental_column", src->incremental_column, "is read in full on every sync",
         inc_usable_as_watermark},
        {"partition_column", src->partition_column, "is read in one stream", pgtypes_is_partitionable},
    };
    for (size_t i = 0; i < sizeof rules / sizeof rules[0]; i++)
        if (rules[i].column != NULL)
            check_column(src, plan->label, desc, &rules[i], warnings);
    return true;
}

void sync_check_horizon(const cfg_source *src, const pgsrc_desc *desc, const pgsrc_session_facts *facts,
                        sync_report *warnings)
{
    int idx = src->incremental_column ? pgsrc_desc_find(desc, src->incremental_column) : -1;
    if (idx < 0 || !inc_usable_as_watermark(&desc->cols[idx].type) ||
        !inc_horizon_enabled(src, &desc->cols[idx]))
        return;
    if (inc_time_horizon_applies(desc->cols[idx].type.kind) && !facts->standby && !facts->sees_all)
        sync_report_warning(
            warnings,
            "%s: the role \"%s\" cannot see other users' sessions in pg_stat_activity, so the "
            "commit horizon cannot see a transaction that began before a read and writes after "
            "it; GRANT pg_read_all_stats TO \"%s\" (it also shows the role other sessions' "
            "query text), or set lookback with unique_key",
            src->name, facts->role, facts->role);
    if (facts->standby && src->lookback == NULL)
        sync_report_warning(
            warnings,
            "%s: the source is a hot standby, which sees the primary's transactions only from "
            "their first write: a row stamped by a transaction that began before a read and "
            "wrote after it can be missed; set lookback (with unique_key) to cover it, or read "
            "the primary (docs/incremental.md)",
            src->name);
}
