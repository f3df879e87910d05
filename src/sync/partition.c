/* Partition workers: a shared queue of ranges, taken one at a time, so a
 * skewed range does not leave the other workers idle. */
#include "sync/partition.h"

#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "source/ranges.h"
#include "sync/conns.h"

typedef struct range_queue {
    pgsrc_ranges ranges;
    _Atomic size_t next;
    const char *snapshot;
    atomic_bool failed;
} range_queue;

typedef struct partition_worker {
    pthread_t thread;
    const partition_read *read;
    range_queue *queue;
    bool ok;
    ds_error err;
} partition_worker;

/* Reads ranges until none is left, a worker failed or the budget ran out. */
static bool read_ranges(partition_worker *w, pgsrc_conn *pg)
{
    const partition_read *r = w->read;
    for (;;) {
        if (atomic_load(&w->queue->failed) || atomic_load(&r->shared->truncated))
            return true;
        size_t i = atomic_fetch_add(&w->queue->next, 1);
        if (i >= w->queue->ranges.n)
            return true;
        char *copy =
            pgsrc_copy_sql(pg, r->query, r->desc, w->queue->ranges.conditions[i], pump_copy_limit(r->shared));
        bool ok = pump_copy_into(r->st, r->cfg, r->table_ref, pg, r->desc, copy, r->shared, r->opt, &w->err);
        free(copy);
        if (!ok)
            return false;
    }
}

static void *worker_main(void *arg)
{
    partition_worker *w = arg;
    const partition_read *r = w->read;
    pgsrc_conn pg;
    w->ok = false;
    if (sync_connect(r->src, r->opt, &pg, &w->err)) {
        w->ok = pgsrc_import_snapshot(&pg, w->queue->snapshot, &w->err) && read_ranges(w, &pg) &&
                pgsrc_exec(&pg, "COMMIT", &w->err);
        sync_disconnect(r->opt, &pg, w->ok);
    }
    if (!w->ok)
        atomic_store(&w->queue->failed, true);
    return NULL;
}

/* Starts the workers and waits for them; the first failure is the error. */
static bool run_workers(const partition_read *read, range_queue *queue, ds_error *err)
{
    partition_worker *ws = calloc((size_t)read->workers, sizeof *ws);
    if (ws == NULL)
        return ds_error_set(err, DS_ERR_NOMEM, "out of memory");
    int started = 0;
    for (; started < read->workers; started++) {
        ws[started] = (partition_worker){.read = read, .queue = queue};
        if (pthread_create(&ws[started].thread, NULL, worker_main, &ws[started]) != 0)
            break;
    }
    bool ok =
        started == read->workers || ds_error_set(err, DS_ERR_NOMEM, "cannot start partition worker threads");
    if (!ok)
        atomic_store(&queue->failed, true);
    for (int i = 0; i < started; i++) {
        pthread_join(ws[i].thread, NULL);
        if (!ws[i].ok && ok) {
            ok = false;
            *err = ws[i].err;
        }
    }
    free(ws);
    return ok;
}

bool partition_load(const partition_read *read, pgsrc_conn *pg, ds_error *err)
{
    range_queue queue;
    memset(&queue, 0, sizeof queue);
    atomic_init(&queue.next, 0);
    atomic_init(&queue.failed, false);
    char *snapshot = NULL;
    if (!pgsrc_export_snapshot(pg, &snapshot, err) ||
        !pgsrc_plan_ranges(pg, read->query, read->col, read->workers * 4, &queue.ranges, err)) {
        free(snapshot);
        return false;
    }
    queue.snapshot = snapshot;
    ds_log_debug("%s: reading %s in %zu ranges with %d workers", read->src->name, read->table_ref,
                 queue.ranges.n, read->workers);
    /* The caller's read transaction, which exported the snapshot, ends
     * after the workers: it must outlive their SET TRANSACTION SNAPSHOT. */
    bool ok = run_workers(read, &queue, err);
    pgsrc_ranges_free(&queue.ranges);
    free(snapshot);
    return ok;
}
