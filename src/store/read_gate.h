/* The readers' turn: how many reader queries (the PostgreSQL protocol's
 * statements, /api/store/query) DuckDB executes at once in `serve`; the
 * others wait in line, first come first served. DuckDB gives every running
 * query the machine's cores and memory: ten dashboard aggregates at once
 * on 2 cores ran 2.4 a second and spilled 260MB to disk, where one or two
 * at a time ran 6 a second within 400MB. A slot is held while DuckDB works
 * towards a result's first rows (a join's hash table, a sort, an
 * aggregate); streaming the rows after that holds none. A query still at
 * that work after the gate's turn length goes on beside the others and
 * stops holding its slot, so long analytical queries cannot hold the
 * dashboards' short ones up. The AXIS data pages do not take turns: they
 * run on the HTTP server's four threads, which a wait behind a long query
 * would take from /health and /metrics. */
#ifndef DS_STORE_READ_GATE_H
#define DS_STORE_READ_GATE_H

#include <stdbool.h>
#include <time.h>

typedef struct read_gate read_gate;

/* slots 0: no limit (every query runs at once); turn_ms 0: a slot is held
 * until the query's first rows, however long. NULL when out of memory. */
read_gate *read_gate_new(int slots, int turn_ms);
void read_gate_free(read_gate *g);

/* A query's turn, the caller's (on its stack) from enter to leave. */
typedef struct read_turn {
    struct timespec since; /* when it was taken */
    bool counted;          /* it still holds a slot (its turn has not run out) */
    struct read_turn *next;
} read_turn;

/* Asked while a query waits (every READ_GATE_POLL_MS): true stops the
 * wait (a cancel, a statement timeout, shutdown). */
typedef bool (*read_gate_stop_fn)(void *arg);
#define READ_GATE_POLL_MS 20

/* Takes a turn, waiting for a slot in line; false when stop said so first
 * (then no turn is held). g NULL: no gate. */
bool read_gate_enter(read_gate *g, read_turn *turn, read_gate_stop_fn stop, void *arg);
/* Ends the turn: its slot, if it still holds one, goes to the first in
 * line. */
void read_gate_leave(read_gate *g, read_turn *turn);

typedef struct read_gate_counts {
    int running;                     /* queries between enter and leave */
    int waiting;                     /* queries in line */
    unsigned long long waited_total; /* queries that had to wait, since start */
} read_gate_counts;
read_gate_counts read_gate_read(read_gate *g);

#endif
