/* The describe-only validation of a query, shared by a sync (before it
 * reads) and check-config (which only describes), so both say the same. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/strbuf.h"
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

bool sync_check_query(const cfg_source *src, const cfg_query_plan *plan, const pgsrc_desc *desc,
                      sync_report *warnings, ds_error *err)
{
    const char *missing_key = NULL;
    for (size_t i = 0; missing_key == NULL && i < plan->key->n; i++)
        if (pgsrc_desc_find(desc, plan->key->cols[i]) < 0)
            missing_key = plan->key->cols[i];
    bool no_dataset_id = plan->needs_dataset_id && pgsrc_desc_find(desc, "dataset_id") < 0;
    if (no_dataset_id || missing_key != NULL) {
        char *cols = pgsrc_desc_column_list(desc);
        if (no_dataset_id)
            ds_error_set(err, DS_ERR_CONFIG,
                         "%s (%s:%d) has no column named dataset_id (columns: %s); both queries of a split "
                         "source are joined on it: select it or alias one, e.g. trace_id AS dataset_id",
                         plan->label, src->file, src->line, cols ? cols : "");
        else
            ds_error_set(
                err, DS_ERR_CONFIG,
                "%s:%d: unique_key column \"%s\" is not a column of %s (columns: %s); select it or fix "
                "unique_key",
                src->file, src->unique_key_line, missing_key, plan->label, cols ? cols : "");
        free(cols);
        return false;
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
