/* Implementation of the server-test helpers declared in tl_http.h. */
#include "tl_http.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "testlib.h"

#define MAX_SERVERS 16

static char *transcript_path;
static pid_t running[MAX_SERVERS];
static bool kill_registered;

double tl_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

void tl_sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

void tl_http_set_transcript(const char *path)
{
    free(transcript_path);
    transcript_path = path ? strdup(path) : NULL;
}

static bool send_all(int fd, const char *buf, size_t len)
{
    while (len > 0) {
        ssize_t n = send(fd, buf, len, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return false;
        buf += n;
        len -= (size_t)n;
    }
    return true;
}

/* Parses "HTTP/1.1 200 OK\r\n...\r\n\r\nbody" (Connection: close, so the body
 * is everything after the header block). */
static void parse_response(char *raw, size_t len, tl_http_response *out)
{
    char *end = strstr(raw, "\r\n\r\n");
    size_t hlen = end ? (size_t)(end - raw) : len;
    out->headers = strndup(raw, hlen);
    size_t blen = end ? len - hlen - 4 : 0;
    out->body = malloc(blen + 1);
    if (blen)
        memcpy(out->body, end + 4, blen);
    out->body[blen] = '\0';
    out->body_len = blen;
    if (sscanf(raw, "HTTP/1.%*d %d", &out->status) != 1)
        out->status = -1;
    char ct[128];
    if (tl_http_header(out, "Content-Type", ct, sizeof ct))
        snprintf(out->content_type, sizeof out->content_type, "%s", ct);
}

bool tl_http_request(uint16_t port, const char *method, const char *target, const char *extra_headers,
                     const char *body, size_t body_len, tl_http_response *out)
{
    memset(out, 0, sizeof *out);
    double start = tl_now_ms();
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return false;
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons(port)};
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&addr, sizeof addr) != 0) {
        close(fd);
        return false;
    }
    struct timeval tv = {30, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    char *head = NULL;
    char clen[64] = "";
    if (body != NULL)
        snprintf(clen, sizeof clen, "Content-Length: %zu\r\n", body_len);
    if (asprintf(&head,
                 "%s %s HTTP/1.1\r\nHost: 127.0.0.1:%u\r\nUser-Agent: duckstore-test\r\n"
                 "Connection: close\r\n%s%s\r\n",
                 method, target, (unsigned)port, extra_headers ? extra_headers : "", clen) < 0)
        fail_msg("out of memory");
    /* The server may answer (413) and close before reading a big body, so
     * a failed send is not an error as long as an answer arrives. */
    if (send_all(fd, head, strlen(head)) && body != NULL)
        send_all(fd, body, body_len);
    free(head);
    size_t cap = 8192, len = 0;
    char *raw = malloc(cap);
    for (;;) {
        if (cap - len < 4096) {
            cap *= 2;
            raw = realloc(raw, cap);
        }
        ssize_t r = recv(fd, raw + len, cap - len - 1, 0);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        len += (size_t)r;
    }
    close(fd);
    raw[len] = '\0';
    out->ms = tl_now_ms() - start;
    if (len == 0) {
        free(raw);
        out->headers = strdup("");
        out->body = strdup("");
        return false;
    }
    parse_response(raw, len, out);
    if (transcript_path) {
        FILE *f = fopen(transcript_path, "a");
        if (f) {
            fprintf(f, "%s %s\n%s\n\n%s\n\n", method, target, out->headers, out->body);
            fclose(f);
        }
    }
    free(raw);
    return true;
}

void tl_http_response_free(tl_http_response *resp)
{
    free(resp->headers);
    free(resp->body);
    resp->headers = resp->body = NULL;
}

const char *tl_http_header(const tl_http_response *resp, const char *name, char *buf, size_t cap)
{
    size_t nlen = strlen(name);
    for (const char *line = resp->headers; line && *line;) {
        const char *eol = strstr(line, "\r\n");
        size_t llen = eol ? (size_t)(eol - line) : strlen(line);
        if (llen > nlen && strncasecmp(line, name, nlen) == 0 && line[nlen] == ':') {
            const char *v = line + nlen + 1;
            while (*v == ' ')
                v++;
            snprintf(buf, cap, "%.*s", (int)(llen - (size_t)(v - line)), v);
            return buf;
        }
        line = eol ? eol + 2 : NULL;
    }
    return NULL;
}

json_t *tl_http_json(uint16_t port, const char *method, const char *target, const char *token,
                     int expect_status, char **raw)
{
    char auth[256] = "";
    if (token)
        snprintf(auth, sizeof auth, "Authorization: Bearer %s\r\n", token);
    tl_http_response resp;
    if (!tl_http_request(port, method, target, auth, NULL, 0, &resp))
        fail_msg("%s %s: no answer from the server on port %u", method, target, (unsigned)port);
    if (resp.status != expect_status)
        fail_msg("%s %s: expected HTTP %d, got %d: %s", method, target, expect_status, resp.status,
                 resp.body);
    if (strcmp(resp.content_type, "application/json") != 0)
        fail_msg("%s %s: Content-Type is \"%s\", not application/json", method, target, resp.content_type);
    json_error_t jerr;
    json_t *doc = json_loads(resp.body, 0, &jerr);
    if (doc == NULL)
        fail_msg("%s %s: body is not JSON (%s): %s", method, target, jerr.text, resp.body);
    if (raw)
        *raw = strdup(resp.body);
    tl_http_response_free(&resp);
    return doc;
}

uint16_t tl_free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = 0};
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t alen = sizeof addr;
    if (fd < 0 || bind(fd, (struct sockaddr *)&addr, sizeof addr) != 0 ||
        getsockname(fd, (struct sockaddr *)&addr, &alen) != 0)
        fail_msg("cannot find a free port: %s", strerror(errno));
    close(fd);
    return ntohs(addr.sin_port);
}

static void track(pid_t pid, bool add)
{
    for (size_t i = 0; i < MAX_SERVERS; i++) {
        if (add && running[i] == 0) {
            running[i] = pid;
            return;
        }
        if (!add && running[i] == pid) {
            running[i] = 0;
            return;
        }
    }
}

void tl_server_kill_all(void)
{
    for (size_t i = 0; i < MAX_SERVERS; i++) {
        if (running[i] > 0) {
            kill(running[i], SIGKILL);
            waitpid(running[i], NULL, 0);
            running[i] = 0;
        }
    }
}

static pid_t spawn(const tl_server *srv)
{
    const char *bin = getenv("DUCKSTORE_BIN");
    if (bin == NULL || bin[0] == '\0')
        fail_msg("DUCKSTORE_BIN is not set (ctest sets it; by hand: DUCKSTORE_BIN=build/duckstore)");
    char listen[64];
    snprintf(listen, sizeof listen, "127.0.0.1:%u", (unsigned)srv->port);
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0)
        fail_msg("fork: %s", strerror(errno));
    if (pid == 0) {
        int log = open(srv->log_path, O_WRONLY | O_CREAT | O_APPEND, 0644);
        int null = open("/dev/null", O_RDWR);
        if (log < 0 || null < 0)
            _exit(126);
        dup2(null, STDIN_FILENO);
        dup2(log, STDOUT_FILENO);
        dup2(log, STDERR_FILENO);
        if (srv->token[0])
            setenv("DUCKSTORE_API_TOKEN", srv->token, 1);
        else
            unsetenv("DUCKSTORE_API_TOKEN");
        execl(bin, bin, "--config-dir", srv->config_dir, "serve", "--listen", listen, (char *)NULL);
        dprintf(STDERR_FILENO, "tl_server_start: cannot run %s: %s\n", bin, strerror(errno));
        _exit(127);
    }
    return pid;
}

void tl_server_start(tl_server *srv, const char *config_dir, const char *log_path, const char *token)
{
    if (!kill_registered) {
        atexit(tl_server_kill_all);
        kill_registered = true;
    }
    memset(srv, 0, sizeof *srv);
    snprintf(srv->config_dir, sizeof srv->config_dir, "%s", config_dir);
    snprintf(srv->log_path, sizeof srv->log_path, "%s", log_path);
    if (token)
        snprintf(srv->token, sizeof srv->token, "%s", token);
    /* The free port may be taken by someone else before the server binds
     * it: then the server exits and we try another. */
    int last_status = 0;
    for (int attempt = 0; attempt < 5; attempt++) {
        srv->port = tl_free_port();
        srv->pid = spawn(srv);
        track(srv->pid, true);
        double deadline = tl_now_ms() + 30000;
        while (tl_now_ms() < deadline) {
            int status;
            if (waitpid(srv->pid, &status, WNOHANG) == srv->pid) {
                last_status = status;
                track(srv->pid, false);
                srv->pid = 0;
                break;
            }
            tl_http_response resp;
            bool up =
                tl_http_request(srv->port, "GET", "/health", NULL, NULL, 0, &resp) && resp.status == 200;
            tl_http_response_free(&resp);
            if (up)
                return;
            tl_sleep_ms(20);
        }
        if (srv->pid != 0)
            break;
    }
    char *log = tl_read_file(log_path);
    tl_server_kill_all();
    fail_msg("the server did not come up (%s %d); its log %s:\n%s",
             WIFSIGNALED(last_status) ? "last one killed by signal" : "last exit code",
             WIFSIGNALED(last_status) ? WTERMSIG(last_status) : WEXITSTATUS(last_status), log_path,
             log ? log : "(none)");
}

int tl_server_stop(tl_server *srv, double timeout_s, double *elapsed_s)
{
    if (srv->pid <= 0)
        fail_msg("tl_server_stop: no server running");
    double start = tl_now_ms();
    kill(srv->pid, SIGTERM);
    int code = -1, status;
    while (tl_now_ms() - start < timeout_s * 1000) {
        if (waitpid(srv->pid, &status, WNOHANG) == srv->pid) {
            code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
            break;
        }
        tl_sleep_ms(5);
    }
    if (elapsed_s)
        *elapsed_s = (tl_now_ms() - start) / 1000;
    if (code == -1) {
        kill(srv->pid, SIGKILL);
        waitpid(srv->pid, NULL, 0);
    }
    track(srv->pid, false);
    srv->pid = 0;
    return code;
}

void tl_server_kill(tl_server *srv)
{
    if (srv->pid <= 0)
        fail_msg("tl_server_kill: no server running");
    kill(srv->pid, SIGKILL);
    waitpid(srv->pid, NULL, 0);
    track(srv->pid, false);
    srv->pid = 0;
}

json_t *tl_server_dataset(const tl_server *srv, const char *dataset)
{
    json_t *doc =
        tl_http_json(srv->port, "GET", "/api/store/status", srv->token[0] ? srv->token : NULL, 200, NULL);
    json_t *ds = json_object_get(json_object_get(doc, "datasets"), dataset);
    if (ds == NULL) {
        char *text = json_dumps(doc, 0);
        fail_msg("no dataset %s in the status: %s", dataset, text);
    }
    json_incref(ds);
    json_decref(doc);
    return ds;
}

json_t *tl_server_wait_state(const tl_server *srv, const char *dataset, const char *state, double timeout_s)
{
    double deadline = tl_now_ms() + timeout_s * 1000;
    for (;;) {
        json_t *ds = tl_server_dataset(srv, dataset);
        const char *now = json_string_value(json_object_get(ds, "state"));
        if (now && strcmp(now, state) == 0)
            return ds;
        if (tl_now_ms() > deadline) {
            char *text = json_dumps(ds, JSON_INDENT(2));
            fail_msg("%s did not reach state %s in %.0f s; status: %s", dataset, state, timeout_s, text);
        }
        json_decref(ds);
        tl_sleep_ms(50);
    }
}

uint16_t tl_serve_for_readers(tl_server *srv, const char *dir, const char *duckdb_extra,
                              const char *source_file, const char *source_yaml, const char *dataset,
                              double timeout_s)
{
    char *out = NULL;
    if (tl_run(&out, "mkdir -p '%s'", dir) != 0)
        fail_msg("mkdir %s: %s", dir, out ? out : "");
    free(out);
    uint16_t port = tl_free_port();
    tl_write_filef(tl_keepf("%s/duckdb.yaml", dir),
                   "duckdb:\n  path: %s/store.duckdb\n  pg_listen: \"127.0.0.1:%u\"\n  pg_auth: trust\n%s",
                   dir, port, duckdb_extra);
    tl_write_filef(tl_keepf("%s/%s", dir, source_file), "%s", source_yaml);
    tl_server_start(srv, dir, tl_keepf("%s/serve.log", dir), NULL);
    json_decref(tl_server_wait_state(srv, dataset, "ready", timeout_s));
    return port;
}

PGconn *tl_reader_connect(uint16_t port)
{
    PGconn *c =
        PQconnectdb(tl_keepf("host=127.0.0.1 port=%u dbname=cache user=reader connect_timeout=30", port));
    if (PQstatus(c) != CONNECTION_OK)
        fail_msg("connect: %s", PQerrorMessage(c));
    return c;
}

char *tl_server_metrics(const tl_server *srv)
{
    char auth[256] = "";
    if (srv->token[0])
        snprintf(auth, sizeof auth, "Authorization: Bearer %s\r\n", srv->token);
    tl_http_response resp;
    if (!tl_http_request(srv->port, "GET", "/metrics", auth, NULL, 0, &resp) || resp.status != 200)
        fail_msg("GET /metrics failed: %d %s", resp.status, resp.body);
    free(resp.headers);
    return resp.body;
}

double tl_metric(const char *metrics_text, const char *series)
{
    size_t slen = strlen(series);
    for (const char *line = metrics_text; line && *line;) {
        if (strncmp(line, series, slen) == 0 && line[slen] == ' ')
            return strtod(line + slen + 1, NULL);
        line = strchr(line, '\n');
        if (line)
            line++;
    }
    fail_msg("no metric %s in:\n%s", series, metrics_text);
    return 0;
}

char *tl_read_file(const char *path)
{
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return NULL;
    size_t cap = 8192, len = 0, n;
    char *buf = malloc(cap);
    while ((n = fread(buf + len, 1, cap - len - 1, f)) > 0) {
        len += n;
        if (cap - len < 4096) {
            cap *= 2;
            buf = realloc(buf, cap);
        }
    }
    fclose(f);
    buf[len] = '\0';
    return buf;
}

size_t tl_count(const char *haystack, const char *needle)
{
    size_t n = 0, nlen = strlen(needle);
    for (const char *p = haystack; (p = strstr(p, needle)) != NULL; p += nlen)
        n++;
    return n;
}

void tl_assert_clean_log(const char *log_path)
{
    char *log = tl_read_file(log_path);
    if (log == NULL)
        return;
    const char *password = getenv("DUCKSTORE_TEST_PG_PASSWORD");
    if (password && password[0] && strstr(log, password))
        fail_msg("the PostgreSQL password is in %s:\n%s", log_path, log);
    static const char *const markers[] = {"ERROR: AddressSanitizer", "ERROR: LeakSanitizer",
                                          "runtime error:", "SUMMARY: UndefinedBehaviorSanitizer"};
    for (size_t i = 0; i < sizeof markers / sizeof markers[0]; i++)
        if (strstr(log, markers[i]))
            fail_msg("sanitizer report in %s:\n%s", log_path, strstr(log, markers[i]));
    free(log);
}

bool tl_http_raw(uint16_t port, const char *data, size_t len, int pause_ms, bool half_close, double timeout_s,
                 tl_http_response *out)
{
    memset(out, 0, sizeof *out);
    double start = tl_now_ms();
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons(port)};
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || connect(fd, (struct sockaddr *)&addr, sizeof addr) != 0)
        fail_msg("tl_http_raw: cannot connect to port %u: %s", (unsigned)port, strerror(errno));
    struct timeval tv = {(time_t)timeout_s, (long)((timeout_s - (double)(time_t)timeout_s) * 1e6)};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    bool sent = true;
    if (pause_ms > 0) {
        for (size_t i = 0; i < len && sent; i++) {
            sent = send_all(fd, data + i, 1);
            tl_sleep_ms(pause_ms);
        }
    } else {
        sent = send_all(fd, data, len);
    }
    if (half_close)
        shutdown(fd, SHUT_WR);
    size_t cap = 8192, got = 0;
    char *raw = malloc(cap);
    while (tl_now_ms() - start < timeout_s * 1000) {
        if (cap - got < 4096) {
            cap *= 2;
            raw = realloc(raw, cap);
        }
        ssize_t r = recv(fd, raw + got, cap - got - 1, 0);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        got += (size_t)r;
    }
    close(fd);
    raw[got] = '\0';
    out->ms = tl_now_ms() - start;
    (void)sent; /* the server may answer and close before taking every byte */
    if (got == 0) {
        free(raw);
        out->headers = strdup("");
        out->body = strdup("");
        return false;
    }
    parse_response(raw, got, out);
    if (transcript_path) {
        FILE *f = fopen(transcript_path, "a");
        if (f) {
            fprintf(f, "(raw request of %zu bytes)\n%s\n\n%s\n\n", len, out->headers, out->body);
            fclose(f);
        }
    }
    free(raw);
    return true;
}

long long tl_server_count(const tl_server *srv, const char *table, const char *where)
{
    char body[1024];
    snprintf(body, sizeof body, "{\"sql\":\"SELECT count(*) AS n FROM %s WHERE %s\",\"format\":\"csv\"}",
             table, where);
    tl_http_response resp;
    long long n = -1;
    /* CSV: the header "n", then the number, in a chunked answer. */
    if (tl_http_request(srv->port, "POST", "/api/store/query", "Content-Type: application/json\r\n", body,
                        strlen(body), &resp) &&
        resp.status == 200) {
        const char *header = strstr(resp.body, "\nn");
        const char *value = header ? strpbrk(header + 2, "0123456789") : NULL;
        if (value)
            n = atoll(value);
    }
    tl_http_response_free(&resp);
    return n;
}

char *tl_http_dechunk(const char *raw, char **trailers)
{
    size_t cap = strlen(raw) + 1, len = 0;
    char *out = malloc(cap);
    const char *p = raw;
    for (;;) {
        char *end;
        unsigned long n = strtoul(p, &end, 16);
        const char *data = strstr(end, "\r\n");
        assert_non_null(data);
        data += 2;
        if (n == 0) {
            if (trailers)
                *trailers = strdup(data);
            break;
        }
        memcpy(out + len, data, n);
        len += n;
        p = data + n + 2;
    }
    out[len] = '\0';
    return out;
}
