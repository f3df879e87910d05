/* PostgreSQL's protocol with pg_auth: trust on a wildcard address: loopback
 * clients in without a password, others refused; and the protocol spoken by
 * hand over a socket: SSLRequest and GSSENCRequest answered N, Execute with
 * a row limit (PortalSuspended), a hostile message length, the idle
 * timeout. */
#include <arpa/inet.h>
#include <libpq-fe.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "testlib.h"
#include "tl_http.h"

static char *g_dir, *g_log;
static tl_server g_srv;
static uint16_t g_pg_port;

static int setup_group(void **state)
{
    (void)state;
    g_dir = tl_mkdtemp();
    g_pg_port = tl_free_port();
    char path[700];
    snprintf(path, sizeof path, "%s/duckdb.yaml", g_dir);
    tl_write_filef(path,
                   "duckdb:\n  path: %s/store.duckdb\n  pg_listen: \"0.0.0.0:%u\"\n  pg_auth: trust\n"
                   "  pg_idle_timeout: 1\n",
                   g_dir, g_pg_port);
    if (asprintf(&g_log, "%s/serve.log", g_dir) < 0)
        fail_msg("out of memory");
    tl_server_start(&g_srv, g_dir, g_log, NULL);
    return 0;
}

static int teardown_group(void **state)
{
    (void)state;
    if (g_srv.pid != 0)
        assert_int_equal(tl_server_stop(&g_srv, 30, NULL), 0);
    tl_assert_clean_log(g_log);
    tl_server_kill_all();
    tl_rmtree(g_dir);
    free(g_dir);
    free(g_log);
    return 0;
}

/* This host's first address that is not loopback, or NULL. */
static char *outside_address(void)
{
    char *out = NULL;
    if (tl_run(
            &out,
            "hostname -I 2>/dev/null | tr ' ' '\\n' | grep -E '^[0-9]+\\.' | grep -v '^127\\.' | head -1") !=
            0 ||
        out == NULL || out[0] == '\0') {
        free(out);
        return NULL;
    }
    out[strcspn(out, "\n")] = '\0';
    return out;
}

static void test_trust_on_loopback_only(void **state)
{
    (void)state;
    PGconn *c =
        PQconnectdb(tl_keepf("host=127.0.0.1 port=%u dbname=cache user=anyone sslmode=disable", g_pg_port));
    if (PQstatus(c) != CONNECTION_OK)
        fail_msg("loopback trust: %s", PQerrorMessage(c));
    PGresult *r = PQexec(c, "SELECT 6 * 7");
    assert_string_equal(PQgetvalue(r, 0, 0), "42");
    PQclear(r);
    PQfinish(c);
    char *addr = outside_address();
    if (addr == NULL) {
        print_message("no address beyond loopback on this host: the refusal is not checked\n");
        return;
    }
    c = PQconnectdb(tl_keepf("host=%s port=%u dbname=cache user=anyone sslmode=disable", addr, g_pg_port));
    assert_int_equal(PQstatus(c), CONNECTION_BAD);
    tl_assert_contains_at(PQerrorMessage(c), "trust authentication is only for clients on this host",
                          __FILE__, __LINE__);
    PQfinish(c);
    free(addr);
}

/* ---- the protocol by hand ---- */

static int dial(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(g_pg_port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0)
        fail_msg("connect to the protocol port failed");
    return fd;
}

static void put32(char *p, uint32_t v)
{
    v = htonl(v);
    memcpy(p, &v, 4);
}

static void send_all(int fd, const void *p, size_t n)
{
    assert_int_equal(send(fd, p, n, MSG_NOSIGNAL), (ssize_t)n);
}

/* Reads exactly n bytes within 30 s; false at EOF. */
static bool read_n(int fd, void *dst, size_t n)
{
    char *p = dst;
    double deadline = tl_now_ms() + 30000;
    while (n > 0) {
        struct pollfd pf = {.fd = fd, .events = POLLIN};
        if (poll(&pf, 1, 1000) <= 0) {
            if (tl_now_ms() > deadline)
                fail_msg("no answer from the server");
            continue;
        }
        ssize_t k = recv(fd, p, n, 0);
        if (k <= 0)
            return false;
        p += k;
        n -= (size_t)k;
    }
    return true;
}

/* The next message: its type, and its body into buf (NUL-terminated). */
static char next_msg(int fd, char *buf, size_t cap)
{
    char head[5];
    if (!read_n(fd, head, 5))
        return 0;
    uint32_t len;
    memcpy(&len, head + 1, 4);
    len = ntohl(len) - 4;
    assert_true(len < cap);
    assert_true(read_n(fd, buf, len));
    buf[len] = '\0';
    return head[0];
}

/* The SQLSTATE field of an ErrorResponse body. */
static const char *sqlstate(const char *body, size_t len)
{
    for (const char *p = body; p < body + len && *p; p += strlen(p) + 1)
        if (*p == 'C')
            return p + 1;
    return "";
}

/* Startup as user "raw"; reads up to the first ReadyForQuery. */
static int start_session(void)
{
    int fd = dial();
    char pkt[64];
    static const char params[] = "user\0raw\0database\0cache\0";
    size_t n = 8 + sizeof params;
    put32(pkt, (uint32_t)n);
    put32(pkt + 4, 196608);
    memcpy(pkt + 8, params, sizeof params);
    send_all(fd, pkt, n);
    char body[4096], t;
    while ((t = next_msg(fd, body, sizeof body)) != 'Z')
        if (t == 0 || t == 'E')
            fail_msg("startup failed (%c)", t);
    return fd;
}

static void test_ssl_and_gssenc_refused(void **state)
{
    (void)state;
    uint32_t codes[] = {80877104, 80877103}; /* GSSENC, then SSL, then the startup */
    int fd = dial();
    for (int i = 0; i < 2; i++) {
        char req[8];
        put32(req, 8);
        put32(req + 4, codes[i]);
        send_all(fd, req, 8);
        char answer;
        assert_true(read_n(fd, &answer, 1));
        assert_int_equal(answer, 'N');
    }
    char pkt[64];
    static const char params[] = "user\0raw\0";
    put32(pkt, 8 + sizeof params);
    put32(pkt + 4, 196608);
    memcpy(pkt + 8, params, sizeof params);
    send_all(fd, pkt, 8 + sizeof params);
    char body[4096], t;
    while ((t = next_msg(fd, body, sizeof body)) != 'Z')
        assert_true(t == 'R' || t == 'S' || t == 'K');
    close(fd);
}

static size_t msg(char *out, char type, const char *body, size_t n)
{
    out[0] = type;
    put32(out + 1, (uint32_t)(n + 4));
    memcpy(out + 5, body, n);
    return 5 + n;
}

static void test_execute_row_limit(void **state)
{
    (void)state;
    int fd = start_session();
    char out[512];
    size_t n = 0;
    static const char parse[] = "\0SELECT range AS i FROM range(5)\0\0\0";
    n += msg(out + n, 'P', parse, sizeof parse - 1);
    static const char bind[] = "\0\0\0\0\0\0\0\0";
    n += msg(out + n, 'B', bind, sizeof bind - 1);
    char exec[5] = {0};
    put32(exec + 1, 2);
    for (int i = 0; i < 3; i++)
        n += msg(out + n, 'E', exec, 5);
    n += msg(out + n, 'S', "", 0);
    send_all(fd, out, n);
    char seq[32] = {0}, body[4096];
    size_t k = 0;
    char t;
    while (k + 1 < sizeof seq && (t = next_msg(fd, body, sizeof body)) != 0) {
        seq[k++] = t;
        if (t == 'Z')
            break;
    }
    /* 2 rows and PortalSuspended, twice, then the last row and
     * CommandComplete "SELECT 5". */
    assert_string_equal(seq, "12DDsDDsDCZ");
    close(fd);
}

static void test_hostile_length(void **state)
{
    (void)state;
    int fd = start_session();
    char q[5] = {'Q'};
    put32(q + 1, 0x7fffffff);
    send_all(fd, q, 5);
    char body[4096];
    assert_int_equal(next_msg(fd, body, sizeof body), 'E');
    assert_string_equal(sqlstate(body, sizeof body), "08P01");
    assert_int_equal(next_msg(fd, body, sizeof body), 0); /* closed */
    close(fd);
    /* The server goes on. */
    fd = start_session();
    close(fd);
}

static void test_idle_timeout(void **state)
{
    (void)state;
    int fd = start_session();
    char body[4096];
    double t0 = tl_now_ms();
    assert_int_equal(next_msg(fd, body, sizeof body), 'E');
    assert_string_equal(sqlstate(body, sizeof body), "57P05");
    assert_true(tl_now_ms() - t0 >= 900);
    close(fd);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_trust_on_loopback_only), cmocka_unit_test(test_ssl_and_gssenc_refused),
        cmocka_unit_test(test_execute_row_limit),      cmocka_unit_test(test_hostile_length),
        cmocka_unit_test(test_idle_timeout),
    };
    return cmocka_run_group_tests(tests, setup_group, teardown_group);
}
