/* Publishing a source as Hive-partitioned Parquet for other engines
 * (docs/publish.md): each version is a new directory, made visible by
 * atomically replacing _duckstore_manifest.json. Called after a sync has
 * committed; its outcome goes to the source's status document (`publish`)
 * and to /metrics, never to the sync's own result. */
#ifndef DS_PUBLISH_PUBLISH_H
#define DS_PUBLISH_PUBLISH_H

#include <stdbool.h>
#include <stdint.h>

#include "common/error.h"
#include "common/strbuf.h"
#include "config/config.h"
#include "store/store.h"

#define PUBLISH_MANIFEST "_duckstore_manifest.json"

typedef struct publish_result {
    int64_t version;
    int64_t rows;
    int64_t files, files_written; /* files of the version, and of them the ones written now */
    int64_t bytes_written;
    double duration_s;
} publish_result;

/* Publishes src's data now (a new version), whatever `every` says. */
bool publish_source(store *st, const cfg_source *src, publish_result *out, ds_error *err);

/* After a successful sync: publishes when the source has publish: and it
 * is due (every sync, `every` minutes since the last version, or the last
 * attempt failed or was interrupted). A sync that changed no data
 * (data_changed false) publishes only to repair a failed or interrupted
 * attempt: the current version already holds its data. Logs and records
 * its outcome; never fails. */
void publish_after_sync(store *st, const cfg_source *src, bool data_changed);

/* The duckstore_publish_* families of /metrics, from this process's
 * publishes. */
void publish_metrics_text(ds_buf *b);

#endif
