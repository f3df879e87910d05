/* Implementation of the fault-test helpers declared in tl_fault.h. */
#include "tl_fault.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "testlib.h"

bool tl_soak(void)
{
    const char *v = getenv("DUCKSTORE_SOAK");
    return v && v[0] && strcmp(v, "0") != 0;
}

int tl_scale(int fast, int soak)
{
    return tl_soak() ? soak : fast;
}

bool tl_sanitized(void)
{
#if defined(__SANITIZE_ADDRESS__)
    return true;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
    return true;
#else
    return false;
#endif
#else
    return false;
#endif
}

/* ---- a PostgreSQL instance of the test's own -------------------------- */

#define MAX_INSTANCES 4
static tl_pg_instance *instances[MAX_INSTANCES];
static bool instance_atexit;

static const char *as_postgres(void)
{
    return geteuid() == 0 ? "runuser -u postgres -- " : "";
}

static void instance_track(tl_pg_instance *pg, bool add)
{
    for (size_t i = 0; i < MAX_INSTANCES; i++) {
        if (add && instances[i] == NULL) {
            instances[i] = pg;
            return;
        }
        if (!add && instances[i] == pg) {
            instances[i] = NULL;
            return;
        }
    }
}

static void stop_all_instances(void)
{
    for (size_t i = 0; i < MAX_INSTANCES; i++)
        if (instances[i] && instances[i]->running)
            tl_pg_instance_stop(instances[i], "immediate");
}

static void find_pg_bin(char *out, size_t cap)
{
    const char *env = getenv("DUCKSTORE_TEST_PG_BIN");
    if (env && env[0]) {
        snprintf(out, cap, "%s", env);
        return;
    }
    char *found = NULL;
    tl_run(&found, "ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 | tr -d '\\n'");
    if (found == NULL || found[0] == '\0')
        fail_msg("no PostgreSQL server binaries found (scripts/install-deps.sh installs them)");
    snprintf(out, cap, "%s", found);
    free(found);
}

static bool instance_try_start(tl_pg_instance *pg, char **log)
{
    return tl_run(log, "%s'%s/pg_ctl' -D '%s/data' -l '%s/server.log' -w -t 60 start -o '%s'", as_postgres(),
                  pg->bin, pg->dir, pg->dir, pg->options) == 0;
}

void tl_pg_instance_init(tl_pg_instance *pg)
{
    memset(pg, 0, sizeof *pg);
    find_pg_bin(pg->bin, sizeof pg->bin);
    char *dir = tl_mkdtemp();
    snprintf(pg->dir, sizeof pg->dir, "%s", dir);
    free(dir);
    chmod(pg->dir, 0755);
    char *out = NULL;
    if (geteuid() == 0 && tl_run(&out, "chown postgres: '%s'", pg->dir) != 0)
        fail_msg("chown postgres %s: %s", pg->dir, out);
    free(out);
    if (tl_run(&out, "%s'%s/initdb' -D '%s/data' -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 --no-sync",
               as_postgres(), pg->bin, pg->dir) != 0)
        fail_msg("initdb failed:\n%s", out);
    free(out);
    if (!instance_atexit) {
        atexit(stop_all_instances);
        instance_atexit = true;
    }
    instance_track(pg, true);
    for (int attempt = 0; attempt < 5; attempt++) {
        pg->port = tl_free_port();
        snprintf(pg->options, sizeof pg->options,
                 "-c listen_addresses=127.0.0.1 -p %u -k %s -c fsync=off -c synchronous_commit=off "
                 "-c full_page_writes=off -c max_connections=50 -c shared_buffers=32MB",
                 (unsigned)pg->port, pg->dir);
        if (instance_try_start(pg, &out)) {
            free(out);
            pg->running = true;
            snprintf(pg->conninfo, sizeof pg->conninfo,
                     "host=127.0.0.1 port=%u user=postgres dbname=postgres connect_timeout=10",
                     (unsigned)pg->port);
            return;
        }
        free(out);
    }
    char *path = NULL;
    if (asprintf(&path, "%s/server.log", pg->dir) < 0)
        fail_msg("out of memory");
    fail_msg("cannot start the test's own PostgreSQL; log:\n%s", tl_read_file(path));
}

void tl_pg_instance_stop(tl_pg_instance *pg, const char *mode)
{
    char *out = NULL;
    int rc =
        tl_run(&out, "%s'%s/pg_ctl' -D '%s/data' -m %s -w -t 60 stop", as_postgres(), pg->bin, pg->dir, mode);
    pg->running = false;
    if (rc != 0)
        fail_msg("pg_ctl stop -m %s failed:\n%s", mode, out);
    free(out);
}

void tl_pg_instance_start(tl_pg_instance *pg)
{
    char *out = NULL;
    if (!instance_try_start(pg, &out))
        fail_msg("pg_ctl start failed:\n%s", out);
    free(out);
    pg->running = true;
}

void tl_pg_instance_destroy(tl_pg_instance *pg)
{
    if (pg->running) {
        char *out = NULL;
        tl_run(&out, "%s'%s/pg_ctl' -D '%s/data' -m immediate -w -t 60 stop", as_postgres(), pg->bin,
               pg->dir);
        free(out);
        pg->running = false;
    }
    instance_track(pg, false);
    if (pg->dir[0])
        tl_rmtree(pg->dir);
    pg->dir[0] = '\0';
}

/* ---- servers and DuckDB files ----------------------------------------- */

void tl_duck_open_ro(const char *path, duckdb_database *db, duckdb_connection *con)
{
    duckdb_config config;
    char *error = NULL;
    if (duckdb_create_config(&config) == DuckDBError)
        fail_msg("duckdb_create_config failed");
    duckdb_set_config(config, "access_mode", "READ_ONLY");
    if (duckdb_open_ext(path, db, config, &error) == DuckDBError) {
        duckdb_destroy_config(&config);
        fail_msg("the DuckDB file %s does not open: %s", path, error ? error : "?");
    }
    duckdb_destroy_config(&config);
    if (duckdb_connect(*db, con) == DuckDBError)
        fail_msg("cannot connect to %s", path);
    tl_duck_exec(*con, "SET TimeZone = 'UTC'");
}

void tl_duck_close(duckdb_database *db, duckdb_connection *con)
{
    duckdb_disconnect(con);
    duckdb_close(db);
}

void tl_duck_ints(duckdb_connection con, int64_t *out, size_t n, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *sql = NULL;
    if (vasprintf(&sql, fmt, ap) < 0)
        fail_msg("out of memory");
    va_end(ap);
    duckdb_result res;
    if (duckdb_query(con, sql, &res) == DuckDBError) {
        char msg[1024];
        snprintf(msg, sizeof msg, "%s", duckdb_result_error(&res));
        duckdb_destroy_result(&res);
        fail_msg("DuckDB error: %s\nSQL: %s", msg, sql);
    }
    if (duckdb_row_count(&res) < 1 || duckdb_column_count(&res) < n)
        fail_msg("expected a row of %zu values from: %s", n, sql);
    for (size_t i = 0; i < n; i++)
        out[i] = duckdb_value_is_null(&res, i, 0) ? 0 : duckdb_value_int64(&res, i, 0);
    duckdb_destroy_result(&res);
    free(sql);
}

/* ---- configs and server calls ------------------------------------------ */

char *tl_conf_dir(const char *parent, const char *name, const char *duckdb_lines)
{
    char *dir = NULL, *path = NULL;
    if (asprintf(&dir, "%s/%s", parent, name) < 0 || asprintf(&path, "%s/duckdb.yaml", dir) < 0)
        fail_msg("out of memory");
    mkdir(dir, 0755);
    tl_write_filef(path, "duckdb:\n%s", duckdb_lines);
    free(path);
    return dir;
}

void tl_conf_source(const char *dir, const char *source, const char *body_fmt, ...)
{
    va_list ap;
    va_start(ap, body_fmt);
    char *body = NULL;
    if (vasprintf(&body, body_fmt, ap) < 0)
        fail_msg("out of memory");
    va_end(ap);
    char path[700];
    snprintf(path, sizeof path, "%s/%s_db.yaml", dir, source);
    tl_write_filef(path, "%s_db:\n%s", source, body);
    free(body);
}

void tl_trigger(const tl_server *srv, const char *source, bool full)
{
    char target[200];
    snprintf(target, sizeof target, "/api/store/sync/%s%s", source, full ? "?full=true" : "");
    char auth[256] = "";
    if (srv->token[0])
        snprintf(auth, sizeof auth, "Authorization: Bearer %s\r\n", srv->token);
    double deadline = tl_now_ms() + 60000;
    for (;;) {
        tl_http_response resp;
        if (!tl_http_request(srv->port, "POST", target, auth, NULL, 0, &resp))
            fail_msg("POST %s: no answer", target);
        int status = resp.status;
        if (status != 202 && (status != 409 || tl_now_ms() > deadline))
            fail_msg("POST %s: expected 202, got %d: %s", target, status, resp.body);
        tl_http_response_free(&resp);
        if (status == 202)
            return;
        tl_sleep_ms(20);
    }
}

const char *tl_phase(const tl_server *srv, const char *dataset, int64_t *rows_read)
{
    static char phase[32];
    json_t *ds = tl_server_dataset(srv, dataset);
    const char *state = json_string_value(json_object_get(ds, "state"));
    json_t *progress = json_object_get(ds, "progress");
    const char *p = json_string_value(json_object_get(progress, "phase"));
    snprintf(phase, sizeof phase, "%s",
             state && strcmp(state, "syncing") == 0 && p ? p
             : state                                     ? state
                                                         : "?");
    if (rows_read)
        *rows_read = (int64_t)json_integer_value(json_object_get(progress, "rows_read"));
    json_decref(ds);
    return phase;
}

/* ---- a TCP listener that hangs, relays or freezes ---------------------- */

#define PROXY_MAX_FDS 64

struct tl_proxy {
    pthread_t thread;
    /* Held while the thread accepts or relays: once tl_proxy_set_mode
     * returns, no byte moves unless the new mode is TL_PROXY_FORWARD. */
    pthread_mutex_t lock;
    int listener;
    uint16_t port, target;
    _Atomic int mode;
    atomic_bool stop;
    atomic_int accepted;
    /* pairs[i] relays to pairs[i ^ 1]; -1 = unused; a hung client has -2 as
     * its partner. */
    int fds[PROXY_MAX_FDS];
    bool stranded[PROXY_MAX_FDS]; /* never relayed again */
};

static int connect_loopback(uint16_t port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons(port)};
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd >= 0 && connect(fd, (struct sockaddr *)&addr, sizeof addr) != 0) {
        close(fd);
        fd = -1;
    }
    return fd;
}

static void proxy_add_pair(tl_proxy *p, int a, int b)
{
    for (size_t i = 0; i + 1 < PROXY_MAX_FDS; i += 2) {
        if (p->fds[i] == -1) {
            p->fds[i] = a;
            p->fds[i + 1] = b;
            p->stranded[i] = p->stranded[i + 1] = false;
            return;
        }
    }
    close(a);
    if (b >= 0)
        close(b);
}

static void proxy_close_pair(tl_proxy *p, size_t i)
{
    size_t base = i & ~(size_t)1;
    for (size_t k = base; k < base + 2; k++) {
        if (p->fds[k] >= 0)
            close(p->fds[k]);
        p->fds[k] = -1;
    }
}

static void *proxy_main(void *arg)
{
    tl_proxy *p = arg;
    while (!atomic_load(&p->stop)) {
        struct pollfd pfd[PROXY_MAX_FDS + 1];
        size_t idx[PROXY_MAX_FDS + 1];
        nfds_t n = 0;
        pfd[n] = (struct pollfd){.fd = p->listener, .events = POLLIN};
        idx[n++] = (size_t)-1;
        int mode = atomic_load(&p->mode);
        if (mode == TL_PROXY_FORWARD)
            for (size_t i = 0; i < PROXY_MAX_FDS; i++)
                if (p->fds[i] >= 0 && p->fds[i ^ 1] >= 0 && !p->stranded[i]) {
                    pfd[n] = (struct pollfd){.fd = p->fds[i], .events = POLLIN};
                    idx[n++] = i;
                }
        if (poll(pfd, n, 50) <= 0)
            continue;
        pthread_mutex_lock(&p->lock);
        bool relay = atomic_load(&p->mode) == TL_PROXY_FORWARD;
        if (pfd[0].revents & POLLIN) {
            int c = accept4(p->listener, NULL, NULL, SOCK_CLOEXEC);
            if (c >= 0) {
                atomic_fetch_add(&p->accepted, 1);
                /* The mode now, not as it was when poll began. */
                bool forward = atomic_load(&p->mode) == TL_PROXY_FORWARD;
                int t = forward ? connect_loopback(p->target) : -2;
                if (t == -1)
                    close(c);
                else
                    proxy_add_pair(p, c, t);
            }
        }
        for (nfds_t k = 1; k < n && relay; k++) {
            if (!(pfd[k].revents & (POLLIN | POLLHUP | POLLERR)))
                continue;
            size_t i = idx[k];
            if (p->fds[i] < 0 || p->stranded[i])
                continue;
            char buf[65536];
            ssize_t r = recv(p->fds[i], buf, sizeof buf, 0);
            if (r <= 0) {
                proxy_close_pair(p, i);
                continue;
            }
            for (ssize_t sent = 0; sent < r;) {
                ssize_t w = send(p->fds[i ^ 1], buf + sent, (size_t)(r - sent), MSG_NOSIGNAL);
                if (w <= 0) {
                    proxy_close_pair(p, i);
                    break;
                }
                sent += w;
            }
        }
        pthread_mutex_unlock(&p->lock);
    }
    for (size_t i = 0; i < PROXY_MAX_FDS; i++)
        if (p->fds[i] >= 0)
            close(p->fds[i]);
    return NULL;
}

tl_proxy *tl_proxy_start(uint16_t target_port, tl_proxy_mode mode)
{
    tl_proxy *p = calloc(1, sizeof *p);
    for (size_t i = 0; i < PROXY_MAX_FDS; i++)
        p->fds[i] = -1;
    p->target = target_port;
    pthread_mutex_init(&p->lock, NULL);
    atomic_init(&p->mode, (int)mode);
    atomic_init(&p->stop, false);
    atomic_init(&p->accepted, 0);
    p->listener = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(p->listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = 0};
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t alen = sizeof addr;
    if (p->listener < 0 || bind(p->listener, (struct sockaddr *)&addr, sizeof addr) != 0 ||
        listen(p->listener, 16) != 0 || getsockname(p->listener, (struct sockaddr *)&addr, &alen) != 0)
        fail_msg("tl_proxy_start: %s", strerror(errno));
    p->port = ntohs(addr.sin_port);
    if (pthread_create(&p->thread, NULL, proxy_main, p) != 0)
        fail_msg("tl_proxy_start: cannot start its thread");
    return p;
}

uint16_t tl_proxy_port(const tl_proxy *p)
{
    return p->port;
}

void tl_proxy_set_mode(tl_proxy *p, tl_proxy_mode mode)
{
    pthread_mutex_lock(&p->lock);
    atomic_store(&p->mode, (int)mode);
    pthread_mutex_unlock(&p->lock);
}

void tl_proxy_strand_existing(tl_proxy *p)
{
    pthread_mutex_lock(&p->lock);
    for (size_t i = 0; i < PROXY_MAX_FDS; i++)
        p->stranded[i] = p->fds[i] >= 0;
    atomic_store(&p->mode, (int)TL_PROXY_FORWARD);
    pthread_mutex_unlock(&p->lock);
}

int tl_proxy_accepted(tl_proxy *p)
{
    return atomic_load(&p->accepted);
}

void tl_proxy_stop(tl_proxy *p)
{
    atomic_store(&p->stop, true);
    pthread_join(p->thread, NULL);
    close(p->listener);
    pthread_mutex_destroy(&p->lock);
    free(p);
}
