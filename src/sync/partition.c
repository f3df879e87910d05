/* Partition workers: a shared queue of ranges, taken one at a time, so a
 * skewed range does not leave the other workers idle.
 *
 * sync_workers is a ceiling, not a count: each worker is a PostgreSQL
 * connection and a DuckDB insert stream, and on a machine whose cores are
 * already busy decoding and inserting (DuckDB-bound) more streams only
 * contend for them. A range is dearer for PostgreSQL than the whole query
 * too: the whole query is one sequential scan through a small ring of
 * buffers, a range an index or TID scan through shared_buffers, which a
 * new backend maps page by page (on a virtual machine whose page faults
 * are dear, 1 CPU-second per 256 MB of shared_buffers). So the read starts
 * as sync_workers 1 would: the caller reads the whole query on its own
 * connection, and changes course only when a watcher's first measure says
 * more streams help: the reader waits on PostgreSQL's socket
 * (PostgreSQL-bound: a slow query, a remote server) or cores are idle (a
 * large machine). Then it drops the rows read so far (half a second's
 * worth: the read ran in a savepoint, and the staging table is made again)
 * and reads again: PostgreSQL-bound, the whole query with PostgreSQL's own
 * parallel workers where its planner can use them; network-bound (the
 * backend waits to send: one connection carries the rows no faster), or
 * otherwise, in ranges with the streams the measure asked for, more
 * joining later while they help (the other table finished). */
#include "sync/partition.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/clock.h"
#include "common/log.h"
#include "common/strbuf.h"
#include "source/ranges.h"
#include "sync/conns.h"

typedef struct range_queue {
    pgsrc_ranges ranges;
    _Atomic size_t next;
    const char *snapshot;
    atomic_bool failed;
    atomic_int running; /* workers started and not yet finished */
} range_queue;

typedef struct partition_worker {
    pthread_t thread;
    const partition_read *read;
    range_queue *queue;
    bool ok;
    ds_error err;
} partition_worker;

/* The next range's COPY statement, until none is left, a worker failed or
 * the budget ran out. */
static char *next_range(void *ctx, pgsrc_conn *pg, bool *nomem)
{
    partition_worker *w = ctx;
    const partition_read *r = w->read;
    if (atomic_load(&w->queue->failed) || atomic_load(&r->shared->truncated))
        return NULL;
    size_t i = atomic_fetch_add(&w->queue->next, 1);
    if (i >= w->queue->ranges.n)
        return NULL;
    char *copy =
        pgsrc_copy_sql(pg, r->query, r->desc, w->queue->ranges.conditions[i], pump_copy_limit(r->shared));
    *nomem = copy == NULL;
    return copy;
}

/* Reads ranges from the queue into one insert stream: their rows fill the
 * same batches, so a range's end costs no commit of its own. */
static bool read_ranges(partition_worker *w, pgsrc_conn *pg)
{
    const partition_read *r = w->read;
    return pump_copy_series(r->st, r->cfg, r->table_ref, pg, r->desc, next_range, w, r->shared, r->opt,
                            &w->err);
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
    atomic_fetch_sub(&w->queue->running, 1);
    return NULL;
}

/* ---- choosing the number of insert streams ---------------------------- */

/* Wait for PostgreSQL above this share of the streams' time: PostgreSQL is
 * the bottleneck and another reader adds its output, if some core is idle
 * (PostgreSQL on this machine may be short of CPU, not of readers: a
 * DuckDB-bound read on two cores waits 20-40% of its time) or whatever the
 * cores do above PG_BOUND_WAIT_ALONE (a remote or sleeping server). */
#define PG_BOUND_WAIT 0.5
#define PG_BOUND_WAIT_ALONE 0.8
/* Idle cores (of the whole machine) from which another stream is started
 * when DuckDB is the bottleneck: a stream and its PostgreSQL backend take
 * about one and a half cores on a local server. */
#define IDLE_CORES_MIN 0.75
/* The least share of the time the reader and its backend must both wait
 * (the one for rows, the other to send them) for the path between them to
 * be the limit. Over a path with a window both wait while bytes are in
 * flight (a remote server 60 ms away: the reader waited 41-71 % of the
 * time, the backend in 7-10 of 10 samples, 0.6-0.9 cores idle; the least
 * sum was 1.21). On one machine the two exclude each other, but on busy
 * cores, where a reader is woken late: a local read on 2 saturated cores
 * waited 32 % of its time for a backend that waited to send in 10 of 10
 * samples. So, as for PostgreSQL-bound, some core must be idle too. */
#define NETWORK_OVERLAP 0.15
/* And the reader must wait at least this share of its time: one busier
 * gains little from another connection. A read waiting less is never
 * sampled. */
#define NETWORK_WAIT_MIN 0.3
/* The measuring window: long enough to span several chunks of a stream. */
#define WINDOW_S 0.5
#define POLL_NS 50000000L

/* The machine's idle and total CPU time (/proc/stat, in clock ticks). */
typedef struct cpu_sample {
    unsigned long long idle, total;
    bool ok;
} cpu_sample;

static cpu_sample cpu_now(void)
{
    cpu_sample s = {0};
    FILE *f = fopen("/proc/stat", "r");
    if (f == NULL)
        return s;
    unsigned long long v[8] = {0};
    s.ok = fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3], &v[4], &v[5],
                  &v[6], &v[7]) == 8;
    fclose(f);
    s.idle = v[3] + v[4]; /* idle + iowait */
    for (int i = 0; i < 8; i++)
        s.total += v[i];
    return s;
}

static int online_cores(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n < 1 ? 1 : (int)n;
}

/* An explicit number of streams, for diagnosis and for pinning a choice:
 * 0 when unset or not a number from 1 to 64. */
static int streams_override(void)
{
    const char *v = getenv("DUCKSTORE_INSERT_STREAMS");
    if (v == NULL || *v == '\0')
        return 0;
    char *end;
    long n = strtol(v, &end, 10);
    return *end == '\0' && n >= 1 && n <= 64 ? (int)n : 0;
}

/* The first measure's verdict pinned by DUCKSTORE_READ_BOUND (postgresql,
 * duckdb, cores or network), for diagnosis and for a server known to be
 * remote or slow: *bound set and true, or false when unset or not one of
 * those. Pinned to postgresql, the backend's send waits still tell a slow
 * path (network-bound) from a busy server. */
static bool bound_override(partition_bound *bound)
{
    static const struct {
        const char *name;
        partition_bound bound;
    } names[] = {{"postgresql", PARTITION_PG_BOUND},
                 {"duckdb", PARTITION_DUCKDB_BOUND},
                 {"cores", PARTITION_IDLE_CORES},
                 {"network", PARTITION_NETWORK_BOUND}};
    const char *v = getenv("DUCKSTORE_READ_BOUND");
    for (size_t i = 0; v != NULL && i < sizeof names / sizeof names[0]; i++)
        if (strcmp(v, names[i].name) == 0) {
            *bound = names[i].bound;
            return true;
        }
    return false;
}

/* Streams to add to the running ones, which wait wait_share of their time
 * for rows: each is busy 1 - wait of the time, so that many more keep the
 * rows flowing; at most asked in all. */
static int streams_for_wait(double wait_share, int asked, int running)
{
    double busy = 1.0 - wait_share;
    int want = (int)((double)running / (busy < 0.1 ? 0.1 : busy) + 0.999);
    return (want > asked ? asked : want) - running;
}

int partition_streams_to_add(const partition_measure *m, int asked, int running, partition_bound *bound)
{
    *bound = PARTITION_DUCKDB_BOUND;
    if (running >= asked)
        return 0;
    if (m->wait_share >= PG_BOUND_WAIT_ALONE ||
        (m->wait_share >= PG_BOUND_WAIT && m->idle_cores >= IDLE_CORES_MIN / 2)) {
        *bound = PARTITION_PG_BOUND;
        return streams_for_wait(m->wait_share, asked, running);
    }
    if (m->idle_cores >= IDLE_CORES_MIN) {
        *bound = PARTITION_IDLE_CORES;
        return 1;
    }
    return 0;
}

bool partition_network_bound(const partition_measure *m, double send_share)
{
    return send_share > 0.5 && m->wait_share >= NETWORK_WAIT_MIN &&
           m->wait_share + send_share >= 1.0 + NETWORK_OVERLAP &&
           (m->wait_share >= PG_BOUND_WAIT_ALONE || m->idle_cores >= IDLE_CORES_MIN / 2);
}

const char *partition_bound_text(partition_bound bound)
{
    switch (bound) {
    case PARTITION_PG_BOUND:
        return "PostgreSQL-bound";
    case PARTITION_IDLE_CORES:
        return "cores idle";
    case PARTITION_NETWORK_BOUND:
        return "network-bound";
    case PARTITION_DUCKDB_BOUND:
        break;
    }
    return "DuckDB-bound";
}

/* ---- running the workers ---------------------------------------------- */

typedef struct stream_choice {
    int asked, streams, cores, forced;
    partition_measure last; /* the last window measured */
    partition_bound bound;  /* what it said */
    int windows;            /* how many were measured */
    bool split;             /* the lead's read was dropped, to read again */
    int pg_parallel;        /* with this many PostgreSQL parallel workers (0: in ranges) */
    partition_measure lead; /* the lead's first measure, which decided */
    partition_bound lead_bound;
    bool pinned;                  /* lead_bound set by DUCKSTORE_READ_BOUND */
    partition_bound pinned_bound; /* to this (network-bound may refine PostgreSQL-bound) */
} stream_choice;

static bool start_worker(partition_worker *ws, int *started, const partition_read *read, range_queue *queue)
{
    partition_worker *w = &ws[*started];
    *w = (partition_worker){.read = read, .queue = queue};
    atomic_fetch_add(&queue->running, 1);
    if (pthread_create(&w->thread, NULL, worker_main, w) != 0) {
        atomic_fetch_sub(&queue->running, 1);
        return false;
    }
    (*started)++;
    return true;
}

static void sleep_poll(void)
{
    struct timespec ts = {0, POLL_NS};
    nanosleep(&ts, NULL);
}

/* A measuring window: the machine's CPU, the clock and the streams' wait
 * when it began, and how many streams ran through it. */
typedef struct window {
    cpu_sample cpu;
    double t;
    double wait_s;
    int streams;
} window;

static window window_open(const partition_read *read, int streams)
{
    double t = ds_monotonic_s();
    return (window){.cpu = cpu_now(),
                    .t = t,
                    .wait_s = pgsrc_wait_meter_total(&read->shared->wait, t),
                    .streams = streams};
}

/* What the window measured so far (to time t). */
static partition_measure window_measure(const window *win, double t, const partition_read *read, int cores)
{
    cpu_sample c1 = cpu_now();
    partition_measure m = {.cores = cores};
    m.wait_share =
        (pgsrc_wait_meter_total(&read->shared->wait, t) - win->wait_s) / ((t - win->t) * win->streams);
    m.idle_cores = win->cpu.ok && c1.ok && c1.total > win->cpu.total
                       ? (double)(c1.idle - win->cpu.idle) / (double)(c1.total - win->cpu.total) * cores
                       : 0;
    return m;
}

/* Closes the window at time t: what it measured, and how many streams to
 * add (ch->bound says why); logged. */
static int window_close(const window *win, double t, const partition_read *read, stream_choice *ch,
                        int running)
{
    partition_measure m = window_measure(win, t, read, ch->cores);
    ch->last = m;
    ch->windows++;
    int add = partition_streams_to_add(&m, ch->asked, running, &ch->bound);
    ds_log_debug("%s: %s: %.0f%% of the time waiting for PostgreSQL, %.2f of %d cores idle: %s, %d "
                 "insert stream(s) running, %d more",
                 read->src->name, read->src->plans[read->shared->slot].table, m.wait_share * 100,
                 m.idle_cores, ch->cores, partition_bound_text(ch->bound), running, add);
    return add;
}

/* Watches the running range workers, window by window, and starts more
 * while ranges are left and the measure says they help. */
static void watch_and_grow(partition_worker *ws, int *started, const partition_read *read, range_queue *queue,
                           stream_choice *ch)
{
    window win = window_open(read, *started);
    while (atomic_load(&queue->running) > 0) {
        sleep_poll();
        double t = ds_monotonic_s();
        if (ch->forced || *started >= ch->asked || t - win.t < WINDOW_S)
            continue;
        if (atomic_load(&queue->failed) || atomic_load(&read->shared->truncated) ||
            atomic_load(&queue->next) >= queue->ranges.n)
            continue; /* nothing left for a new worker */
        int add = window_close(&win, t, read, ch, *started);
        for (int i = 0; i < add; i++)
            if (!start_worker(ws, started, read, queue))
                break; /* the running ones finish the ranges */
        ch->streams = *started;
        win = window_open(read, *started);
    }
}

/* The lead's watcher: measures the first window of the lead's read (on
 * the caller's thread) and, if the measure asks for more streams, ends
 * that read. */
typedef struct lead_watch {
    pthread_t thread;
    const partition_read *read;
    stream_choice *ch;
    int lead_pid; /* the lead's PostgreSQL backend */
    atomic_bool lead_done;
    int add; /* streams the measure asked for beside the lead */
} lead_watch;

/* The share of a moment the lead's backend spends waiting to send (wait
 * event ClientWrite: its socket is full), sampled on side. Waiting while
 * the reader waits too, PostgreSQL has rows ready and the path to
 * duckstore carries them no faster: a remote server whose one TCP stream
 * is limited by its window and round trip, where more connections
 * (ranges) carry more, and a Gather, which sends through the one stream,
 * would not (partition_network_bound). */
#define SEND_SAMPLES 20
#define SEND_SAMPLE_S 0.01

static double send_wait_share(pgsrc_conn *side, const partition_read *read, int pid)
{
    int blocked = 0;
    ds_error err = {0};
    if (!pgsrc_sample_send_waits(side, pid, SEND_SAMPLES, SEND_SAMPLE_S, &blocked, &err)) {
        ds_log_debug("%s: cannot sample the reader's PostgreSQL backend: %s", read->src->name, err.msg);
        return 0;
    }
    ds_log_debug("%s: %s: the reader's PostgreSQL backend waited to send in %d of %d samples",
                 read->src->name, read->src->plans[read->shared->slot].table, blocked, SEND_SAMPLES);
    return (double)blocked / SEND_SAMPLES;
}

/* Whether the backend's send waits could make measure m network-bound:
 * else they are not asked for. */
static bool could_be_network(partition_measure m)
{
    return partition_network_bound(&m, 1.0);
}

static void *watch_lead(void *arg)
{
    lead_watch *lw = arg;
    window win = window_open(lw->read, 1);
    partition_bound pinned;
    bool is_pinned = bound_override(&pinned);
    /* Pinned to PostgreSQL-bound, the reader counts as always waiting, so
     * the backend's send waits alone decide; pinned otherwise, nothing is
     * sampled. */
    bool pg_pinned = is_pinned && pinned == PARTITION_PG_BOUND;
    /* The connection to sample the lead's backend on, made while the
     * window runs (over a long path a connection takes several round
     * trips) once its first half waited on PostgreSQL enough for the path
     * to be the limit, else at the verdict if the whole window did: a
     * short read, or one that keeps DuckDB busy, makes none. When the
     * caller keeps connections, a range reader takes it over afterwards. */
    pgsrc_conn side;
    bool have_side = false, tried_side = false;
    ds_error side_err = {0};
    while (!atomic_load(&lw->lead_done)) {
        sleep_poll();
        double t = ds_monotonic_s();
        if (!tried_side && lw->lead_pid > 0 && t - win.t >= WINDOW_S / 2 &&
            (pg_pinned ||
             (!is_pinned && could_be_network(window_measure(&win, t, lw->read, lw->ch->cores))))) {
            tried_side = true;
            have_side = sync_connect(lw->read->src, lw->read->opt, &side, &side_err);
            t = ds_monotonic_s();
        }
        if (t - win.t < WINDOW_S || atomic_load(&lw->read->shared->truncated))
            continue;
        stream_choice *ch = lw->ch;
        lw->add = window_close(&win, t, lw->read, ch, 1);
        ch->lead = ch->last;
        ch->lead_bound = ch->bound;
        if (is_pinned) {
            ch->lead_bound = ch->pinned_bound = pinned;
            ch->pinned = true;
            lw->add = pinned == PARTITION_PG_BOUND || pinned == PARTITION_NETWORK_BOUND
                          ? ch->asked - 1
                          : pinned == PARTITION_IDLE_CORES;
        }
        /* Waiting on PostgreSQL enough, measured or pinned: its backend's
         * own waits tell the path from the server. */
        partition_measure lead = ch->lead;
        if (pg_pinned)
            lead.wait_share = 1.0;
        if ((pg_pinned || !is_pinned) && could_be_network(lead) && lw->lead_pid > 0) {
            if (!tried_side) {
                tried_side = true;
                have_side = sync_connect(lw->read->src, lw->read->opt, &side, &side_err);
            }
            if (have_side && partition_network_bound(&lead, send_wait_share(&side, lw->read, lw->lead_pid))) {
                ch->lead_bound = PARTITION_NETWORK_BOUND;
                if (lw->add == 0) /* each connection carries its share: as many as keep DuckDB busy */
                    lw->add = streams_for_wait(lead.wait_share, ch->asked, 1);
            }
        }
        if (lw->add > 0)
            atomic_store(&lw->read->shared->abandon, true);
        break;
    }
    if (have_side)
        sync_disconnect(lw->read->opt, &side, PQtransactionStatus(side.pg) == PQTRANS_IDLE);
    return NULL;
}

/* Reads the whole query on pg into the staging table. */
static bool read_whole(const partition_read *read, pgsrc_conn *pg, ds_error *err)
{
    char *copy = pgsrc_copy_sql(pg, read->query, read->desc, NULL, pump_copy_limit(read->shared));
    bool ok = pump_copy_into(read->st, read->cfg, read->table_ref, pg, read->desc, copy, read->shared,
                             read->opt, err);
    free(copy);
    return ok;
}

/* After the first read was dropped because PostgreSQL is the bottleneck:
 * the whole query again with PostgreSQL's parallel workers when its
 * planner can use them (*read_again). Range readers are dearer there:
 * each is a new backend mapping shared_buffers page by page (on the
 * bench's 2-core VM, md5 of 1M traces' texts: 5.9 s with a Gather of 2
 * workers against 8.2 s for 4 range readers and 10.6 s serial, COPY to
 * /dev/null). */
static bool read_parallel(const partition_read *read, pgsrc_conn *pg, stream_choice *ch, bool *read_again,
                          ds_error *err)
{
    *read_again = false;
    int workers = ch->asked - 1;
    bool parallel = false;
    if (!pgsrc_plans_parallel(pg, read->query, workers, &parallel, err))
        return false;
    if (!parallel)
        return true;
    *read_again = true;
    ch->pg_parallel = workers;
    ds_log_debug("%s: %s: reading the whole query again with up to %d PostgreSQL parallel workers",
                 read->src->name, read->src->plans[read->shared->slot].table, workers);
    return read_whole(read, pg, err) && pgsrc_parallel_off(pg, err);
}

/* Reads the whole query on pg, in a savepoint its abandon can roll back
 * to, while a watcher measures. If the measure asked for more streams:
 * reads again with PostgreSQL's parallel workers (PostgreSQL-bound, where
 * its planner can) or returns the streams to read ranges with
 * (*ranges_with; 0: the read is done). */
static bool read_whole_first(const partition_read *read, pgsrc_conn *pg, stream_choice *ch, int *ranges_with,
                             ds_error *err)
{
    *ranges_with = 0;
    if (!pgsrc_exec(pg, "SAVEPOINT duckstore_whole_read", err))
        return false;
    lead_watch lw = {.read = read, .ch = ch, .lead_pid = PQbackendPID(pg->pg)};
    atomic_init(&lw.lead_done, false);
    bool watched = pthread_create(&lw.thread, NULL, watch_lead, &lw) == 0;
    bool ok = read_whole(read, pg, err);
    atomic_store(&lw.lead_done, true);
    if (watched)
        pthread_join(lw.thread, NULL);
    ch->streams = 1;
    if (ok || err->code != DS_ERR_RESTART)
        return ok; /* a lead that ended its read before it saw the flag keeps its rows */
    /* What the lead stored goes with the table it was stored in. */
    ch->split = true;
    ds_error_clear(err);
    if (!pgsrc_exec(pg, "ROLLBACK TO SAVEPOINT duckstore_whole_read; RELEASE SAVEPOINT duckstore_whole_read",
                    err) ||
        !read->restart(read->restart_ctx, err))
        return false;
    pump_shared_forget(read->shared, read->opt);
    atomic_store(&read->shared->abandon, false);
    ds_log_debug("%s: %s: the whole query's first read is dropped after %.1f s", read->src->name,
                 read->src->plans[read->shared->slot].table, WINDOW_S);
    bool read_again = false;
    if (ch->lead_bound == PARTITION_PG_BOUND && !read_parallel(read, pg, ch, &read_again, err))
        return false;
    if (!read_again)
        *ranges_with = 1 + lw.add;
    return true;
}

/* What DUCKSTORE_READ_BOUND did to the verdict, for the log line. */
static const char *pin_text(const stream_choice *ch)
{
    if (!ch->pinned)
        return "";
    if (ch->lead_bound != ch->pinned_bound)
        return " (PostgreSQL-bound set by DUCKSTORE_READ_BOUND, its backend waiting to send)";
    return " (set by DUCKSTORE_READ_BOUND)";
}

static void log_choice(const partition_read *read, const stream_choice *ch)
{
    const char *table = read->src->plans[read->shared->slot].table;
    char why[240];
    if (ch->forced)
        snprintf(why, sizeof why, "set by DUCKSTORE_INSERT_STREAMS");
    else if (ch->windows == 0)
        snprintf(why, sizeof why, "the whole query, read before a measure (%.1f s) on %d cores", WINDOW_S,
                 ch->cores);
    else { /* the verdict that split the read, or kept it whole */
        char how[80] = "the whole query";
        if (ch->pg_parallel > 0)
            snprintf(how, sizeof how, "the whole query, %d PostgreSQL parallel workers", ch->pg_parallel);
        else if (ch->split)
            snprintf(how, sizeof how, "ranges");
        snprintf(why, sizeof why,
                 "%s, %s%s on %d cores (%.0f%% of the time waiting for PostgreSQL, %.1f cores idle)", how,
                 partition_bound_text(ch->lead_bound), pin_text(ch), ch->cores, ch->lead.wait_share * 100,
                 ch->lead.idle_cores);
    }
    ds_log_about about = {.source = read->src->name, .table = table, .event = "insert_streams"};
    ds_log_field fields[] = {DS_LOG_FIELD_INT("workers_asked", ch->asked),
                             DS_LOG_FIELD_INT("insert_streams", ch->streams),
                             DS_LOG_FIELD_INT("pg_parallel_workers", ch->pg_parallel),
                             DS_LOG_FIELD_INT("cores", ch->cores), DS_LOG_FIELD_STR("why", why)};
    ds_log_event(DS_LOG_INFO, &about, fields, sizeof fields / sizeof fields[0],
                 "%s: %s: %d workers asked, %d insert stream%s: %s", read->src->name, table, ch->asked,
                 ch->streams, ch->streams == 1 ? "" : "s", why);
}

/* Plans the ranges on pg and runs `first` range workers, more while they
 * help; the first failure is the error. */
static bool run_ranges(partition_worker *ws, const partition_read *read, pgsrc_conn *pg, range_queue *queue,
                       stream_choice *ch, int first, ds_error *err)
{
    if (!pgsrc_plan_ranges(pg, read->query, read->col, read->workers * 4, &queue->ranges, err))
        return false;
    ds_log_debug("%s: reading %s in %zu ranges with up to %d workers", read->src->name, read->table_ref,
                 queue->ranges.n, read->workers);
    int started = 0;
    while (started < first && start_worker(ws, &started, read, queue))
        ;
    if (started == 0) {
        atomic_store(&queue->failed, true);
        return ds_error_set(err, DS_ERR_NOMEM, "cannot start partition worker threads");
    }
    ch->streams = started;
    watch_and_grow(ws, &started, read, queue, ch);
    bool ok = true;
    for (int i = 0; i < started; i++) {
        pthread_join(ws[i].thread, NULL);
        if (!ws[i].ok && ok) {
            ok = false;
            *err = ws[i].err;
        }
    }
    return ok;
}

/* The lead first (unless the number of streams is forced), then ranges if
 * its measure asked for them. */
static bool run_workers(const partition_read *read, pgsrc_conn *pg, range_queue *queue, ds_error *err)
{
    stream_choice ch = {.asked = read->workers, .cores = online_cores(), .forced = streams_override()};
    int first = ch.forced ? (ch.forced < read->workers ? ch.forced : read->workers) : 0;
    if (!ch.forced && !read_whole_first(read, pg, &ch, &first, err))
        return false;
    bool ok = true;
    if (first > 0) {
        partition_worker *ws = calloc((size_t)read->workers, sizeof *ws);
        char *snapshot = NULL;
        /* The caller's read transaction exports the snapshot and ends
         * after the workers: it must outlive their SET TRANSACTION SNAPSHOT. */
        ok = (ws != NULL || ds_error_set(err, DS_ERR_NOMEM, "out of memory")) &&
             pgsrc_export_snapshot(pg, &snapshot, err);
        queue->snapshot = snapshot;
        ok = ok && run_ranges(ws, read, pg, queue, &ch, first, err);
        free(snapshot);
        free(ws);
    }
    if (ok)
        log_choice(read, &ch);
    return ok;
}

bool partition_load(const partition_read *read, pgsrc_conn *pg, ds_error *err)
{
    range_queue queue;
    memset(&queue, 0, sizeof queue);
    atomic_init(&queue.next, 0);
    atomic_init(&queue.failed, false);
    atomic_init(&queue.running, 0);
    bool ok = run_workers(read, pg, &queue, err);
    pgsrc_ranges_free(&queue.ranges);
    return ok;
}
