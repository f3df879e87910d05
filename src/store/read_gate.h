/* The readers' turn: how many reader queries (the PostgreSQL protocol's
 * statements, /api/store/query) DuckDB executes at once in `serve`; the
 * others wait in line, first come first served. DuckDB gives every running
 * query the machine's cores and memory: ten dashboard aggregates at once
 * on 2 cores ran 2.4 a second and spilled 260MB to disk, where one or two
 * at a time ran 6 a second within 400MB. A slot is held while DuckDB works
 * towards a result's first rows (a join's hash table, a sort, an
 * aggregate); streaming the rows after that holds none. The AXIS data
 * pages do not take turns: they run on the HTTP server's four threads,
 * which a wait behind a long query would take from /health and /metrics. */
#ifndef DS_STORE_READ_GATE_H
#define DS_STORE_READ_GATE_H

#include <stdbool.h>

typedef struct read_gate read_gate;

/* slots 0: no limit (every query runs at once). NULL when out of memory. */
read_gate *read_gate_new(int slots);
void read_gate_free(read_gate *g);

/* Asked while a query waits (every READ_GATE_POLL_MS): true stops the
 * wait (a cancel, a statement timeout, shutdown). */
typedef bool (*read_gate_stop_fn)(void *arg);
#define READ_GATE_POLL_MS 20

/* Takes a slot, waiting for one in line; false when stop said so first
 * (no slot is held then). g NULL: no gate. */
bool read_gate_enter(read_gate *g, read_gate_stop_fn stop, void *arg);
/* Gives the slot to the first in line, or frees it. */
void read_gate_leave(read_gate *g);

typedef struct read_gate_counts {
    int running, waiting;
    unsigned long long waited_total; /* queries that had to wait, since start */
} read_gate_counts;
read_gate_counts read_gate_read(read_gate *g);

#endif
