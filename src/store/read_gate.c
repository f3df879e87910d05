/* The readers' turn (read_gate.h): counted slots, the turns that hold
 * them, and a line of waiters, each with its own condition, so a slot set
 * free wakes only the first. */
#include "store/read_gate.h"

#include <pthread.h>
#include <stdlib.h>

#include "common/clock.h"

typedef struct waiter {
    pthread_cond_t turn;
    bool admitted; /* a slot was handed over */
    struct waiter *next;
} waiter;

struct read_gate {
    pthread_mutex_t lock;
    int slots, turn_ms;
    int held;           /* slots held */
    int running;        /* turns taken and not ended */
    read_turn *holders; /* those turns */
    int waiting;
    unsigned long long waited_total;
    waiter *head, *tail;
};

read_gate *read_gate_new(int slots, int turn_ms)
{
    read_gate *g = calloc(1, sizeof *g);
    if (g == NULL)
        return NULL;
    pthread_mutex_init(&g->lock, NULL);
    g->slots = slots > 0 ? slots : 0;
    g->turn_ms = turn_ms > 0 ? turn_ms : 0;
    return g;
}

void read_gate_free(read_gate *g)
{
    if (g == NULL)
        return;
    pthread_mutex_destroy(&g->lock);
    free(g);
}

static void unlink_waiter(read_gate *g, waiter *w)
{
    waiter *prev = NULL;
    for (waiter *p = g->head; p != NULL; prev = p, p = p->next) {
        if (p != w)
            continue;
        if (prev == NULL)
            g->head = p->next;
        else
            prev->next = p->next;
        if (g->tail == p)
            g->tail = prev;
        break;
    }
    g->waiting--;
}

/* Called holding g->lock: a freed slot goes to the first in line. */
static void pass_on(read_gate *g)
{
    waiter *w = g->head;
    if (w == NULL) {
        g->held--;
        return;
    }
    unlink_waiter(g, w);
    w->admitted = true;
    pthread_cond_signal(&w->turn);
}

/* Called holding g->lock: the turn holds a slot from now. */
static void hold(read_gate *g, read_turn *t)
{
    clock_gettime(CLOCK_MONOTONIC, &t->since);
    t->counted = true;
    t->next = g->holders;
    g->holders = t;
    g->running++;
}

static double ms_between(const struct timespec *a, const struct timespec *b)
{
    return (double)(b->tv_sec - a->tv_sec) * 1e3 + (double)(b->tv_nsec - a->tv_nsec) / 1e6;
}

/* Called holding g->lock by a waiter: turns that have run out free their
 * slots. */
static void end_long_turns(read_gate *g)
{
    if (g->turn_ms == 0)
        return;
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    for (read_turn *t = g->holders; t != NULL; t = t->next)
        if (t->counted && ms_between(&t->since, &now) >= g->turn_ms) {
            t->counted = false;
            pass_on(g);
        }
}

bool read_gate_enter(read_gate *g, read_turn *turn, read_gate_stop_fn stop, void *arg)
{
    turn->counted = false;
    if (g == NULL)
        return true;
    pthread_mutex_lock(&g->lock);
    if (g->slots == 0 || (g->held < g->slots && g->head == NULL)) {
        g->held++;
        hold(g, turn);
        pthread_mutex_unlock(&g->lock);
        return true;
    }
    g->waited_total++;
    waiter w = {.admitted = false, .next = NULL};
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&w.turn, &attr);
    pthread_condattr_destroy(&attr);
    if (g->tail != NULL)
        g->tail->next = &w;
    else
        g->head = &w;
    g->tail = &w;
    g->waiting++;
    bool stopped = false;
    while (!w.admitted && !stopped) {
        struct timespec until = ds_timespec_in(CLOCK_MONOTONIC, READ_GATE_POLL_MS);
        pthread_cond_timedwait(&w.turn, &g->lock, &until);
        end_long_turns(g);
        if (!w.admitted && stop != NULL) {
            /* stop takes its own locks: not under the gate's */
            pthread_mutex_unlock(&g->lock);
            stopped = stop(arg);
            pthread_mutex_lock(&g->lock);
        }
    }
    if (!w.admitted)
        unlink_waiter(g, &w);
    else if (stopped)
        pass_on(g); /* handed a slot while deciding to stop: the next one takes it */
    else
        hold(g, turn);
    pthread_mutex_unlock(&g->lock);
    pthread_cond_destroy(&w.turn);
    return !stopped;
}

void read_gate_leave(read_gate *g, read_turn *turn)
{
    if (g == NULL)
        return;
    pthread_mutex_lock(&g->lock);
    for (read_turn **p = &g->holders; *p != NULL; p = &(*p)->next)
        if (*p == turn) {
            *p = turn->next;
            break;
        }
    g->running--;
    if (turn->counted && g->slots == 0)
        g->held--;
    else if (turn->counted)
        pass_on(g);
    pthread_mutex_unlock(&g->lock);
}

read_gate_counts read_gate_read(read_gate *g)
{
    read_gate_counts c = {0};
    if (g == NULL)
        return c;
    pthread_mutex_lock(&g->lock);
    c.running = g->running;
    c.waiting = g->waiting;
    c.waited_total = g->waited_total;
    pthread_mutex_unlock(&g->lock);
    return c;
}
