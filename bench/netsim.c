/* A simulated network between duckstore and PostgreSQL, in user space (no
 * root, no kernel netem): a TCP relay on loopback that gives every
 * connection a one-way delay, a link rate shared by all connections (each
 * direction its own link, as on a full-duplex wire), and a window: a
 * connection has at most WINDOW bytes in flight per direction until they
 * are "acknowledged" one delay after delivery, so one connection carries
 * at most WINDOW / (2 x DELAY) per second, as one TCP stream does over a
 * long path. Used by bench/run.sh (a remote server) and by the sync tests
 * (a read bound by the network, not by PostgreSQL).
 *
 *   netsim LISTEN_PORT TARGET_PORT DELAY_MS RATE_MBIT WINDOW_KB
 *
 * LISTEN_PORT 0 picks a free port; the port is printed on stdout, then the
 * relay runs until killed. RATE_MBIT 0: no link limit. Target and listener
 * are 127.0.0.1. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_PAIRS 128
#define CHUNK 65536

typedef struct segment {
    double release; /* when its first byte may reach the receiver */
    size_t len, off;
    struct segment *next;
    char data[];
} segment;

typedef struct ack {
    double at;
    size_t len;
} ack;

/* One direction of a relayed connection. */
typedef struct flow {
    int from, to;
    segment *head, *tail;
    size_t in_flight; /* read, not yet acknowledged */
    ack *acks;
    size_t n_acks, cap_acks;
    bool eof, done;
} flow;

typedef struct pair {
    bool used;
    flow f[2]; /* client -> server, server -> client */
} pair;

static double delay_s, rate_bps, window_bytes;
static double link_free[2]; /* when each direction's link is next idle */
static pair pairs[MAX_PAIRS];

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void die(const char *what)
{
    perror(what);
    exit(1);
}

static void flow_free(flow *f)
{
    while (f->head != NULL) {
        segment *s = f->head;
        f->head = s->next;
        free(s);
    }
    free(f->acks);
}

static void pair_close(pair *p)
{
    close(p->f[0].from);
    close(p->f[0].to);
    flow_free(&p->f[0]);
    flow_free(&p->f[1]);
    memset(p, 0, sizeof *p);
}

/* Reads what the window allows from f->from; the bytes go on the link
 * (queued behind what it still carries) and arrive one delay later. */
static bool flow_read(flow *f, int dir, double now)
{
    size_t room = window_bytes - (double)f->in_flight;
    size_t want = room < CHUNK ? room : CHUNK;
    segment *s = malloc(sizeof *s + want);
    if (s == NULL)
        die("malloc");
    ssize_t n = read(f->from, s->data, want);
    if (n <= 0) {
        free(s);
        if (n < 0 && (errno == EAGAIN || errno == EINTR))
            return true;
        f->eof = true;
        return n == 0;
    }
    double start = link_free[dir] > now ? link_free[dir] : now;
    link_free[dir] = rate_bps > 0 ? start + (double)n * 8 / rate_bps : start;
    *s = (segment){.release = link_free[dir] + delay_s, .len = (size_t)n};
    if (f->tail != NULL)
        f->tail->next = s;
    else
        f->head = s;
    f->tail = s;
    f->in_flight += (size_t)n;
    return true;
}

static void ack_push(flow *f, double at, size_t len)
{
    if (f->n_acks == f->cap_acks) {
        f->cap_acks = f->cap_acks ? f->cap_acks * 2 : 64;
        f->acks = realloc(f->acks, f->cap_acks * sizeof *f->acks);
        if (f->acks == NULL)
            die("realloc");
    }
    f->acks[f->n_acks++] = (ack){at, len};
}

/* Delivers the released bytes to f->to; each delivery frees its window
 * one delay later (the acknowledgement's way back). */
static bool flow_write(flow *f, double now)
{
    while (f->head != NULL && f->head->release <= now) {
        segment *s = f->head;
        ssize_t n = write(f->to, s->data + s->off, s->len - s->off);
        if (n < 0)
            return errno == EAGAIN || errno == EINTR;
        ack_push(f, now + delay_s, (size_t)n);
        s->off += (size_t)n;
        if (s->off < s->len)
            return true;
        f->head = s->next;
        if (f->head == NULL)
            f->tail = NULL;
        free(s);
    }
    if (f->eof && f->head == NULL && !f->done) {
        shutdown(f->to, SHUT_WR);
        f->done = true;
    }
    return true;
}

static void flow_acks(flow *f, double now)
{
    size_t kept = 0;
    for (size_t i = 0; i < f->n_acks; i++) {
        if (f->acks[i].at <= now)
            f->in_flight -= f->acks[i].len;
        else
            f->acks[kept++] = f->acks[i];
    }
    f->n_acks = kept;
}

/* The earliest moment a queued segment or an acknowledgement is due. */
static double flow_next_event(const flow *f)
{
    double t = f->head != NULL ? f->head->release : 1e300;
    for (size_t i = 0; i < f->n_acks; i++)
        if (f->acks[i].at < t)
            t = f->acks[i].at;
    return t;
}

static int listen_on(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) != 0 || listen(fd, 64) != 0)
        die("listen");
    socklen_t len = sizeof a;
    getsockname(fd, (struct sockaddr *)&a, &len);
    printf("%d\n", ntohs(a.sin_port));
    fflush(stdout);
    return fd;
}

static int connect_to(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0)
        return -1;
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0 && errno != EINPROGRESS) {
        close(fd);
        return -1;
    }
    return fd;
}

static void accept_one(int lfd, int target_port)
{
    int c = accept4(lfd, NULL, NULL, SOCK_NONBLOCK);
    if (c < 0)
        return;
    int s = connect_to(target_port);
    pair *p = NULL;
    for (int i = 0; i < MAX_PAIRS && p == NULL; i++)
        if (!pairs[i].used)
            p = &pairs[i];
    if (s < 0 || p == NULL) {
        close(c);
        if (s >= 0)
            close(s);
        return;
    }
    int one = 1;
    setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    *p = (pair){.used = true};
    p->f[0] = (flow){.from = c, .to = s};
    p->f[1] = (flow){.from = s, .to = c};
}

int main(int argc, char **argv)
{
    if (argc != 6) {
        fprintf(stderr, "usage: netsim LISTEN_PORT TARGET_PORT DELAY_MS RATE_MBIT WINDOW_KB\n");
        return 2;
    }
    int target_port = atoi(argv[2]);
    delay_s = atof(argv[3]) / 1000;
    rate_bps = atof(argv[4]) * 1e6;
    window_bytes = atof(argv[5]) * 1024;
    if (window_bytes < 1024) {
        fprintf(stderr, "netsim: WINDOW_KB must be at least 1\n");
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    int lfd = listen_on(atoi(argv[1]));

    struct pollfd fds[1 + MAX_PAIRS * 4];
    for (;;) {
        double now = now_s(), next = now + 1;
        int n = 0;
        fds[n++] = (struct pollfd){.fd = lfd, .events = POLLIN};
        for (int i = 0; i < MAX_PAIRS; i++) {
            if (!pairs[i].used)
                continue;
            for (int d = 0; d < 2; d++) {
                flow *f = &pairs[i].f[d];
                flow_acks(f, now);
                bool can_read = !f->eof && (double)f->in_flight < window_bytes;
                bool due = f->head != NULL && f->head->release <= now;
                fds[n++] = (struct pollfd){.fd = can_read ? f->from : -1, .events = POLLIN};
                fds[n++] = (struct pollfd){.fd = due ? f->to : -1, .events = POLLOUT};
                double t = flow_next_event(f);
                if (t < next)
                    next = t;
            }
        }
        int timeout_ms = next <= now ? 0 : (int)((next - now) * 1000) + 1;
        if (poll(fds, (nfds_t)n, timeout_ms) < 0 && errno != EINTR)
            die("poll");
        now = now_s();
        int k = 1; /* the pairs in the order they were polled */
        for (int i = 0; i < MAX_PAIRS; i++) {
            if (!pairs[i].used)
                continue;
            bool ok = true;
            for (int d = 0; d < 2; d++, k += 2) {
                flow *f = &pairs[i].f[d];
                if (fds[k].revents & (POLLIN | POLLHUP | POLLERR))
                    ok = flow_read(f, d, now) && ok;
                ok = flow_write(f, now) && ok;
            }
            if (!ok || (pairs[i].f[0].done && pairs[i].f[1].done))
                pair_close(&pairs[i]);
        }
        if (fds[0].revents & POLLIN)
            accept_one(lfd, target_port);
    }
}
