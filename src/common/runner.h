/* Threads kept for tasks that would otherwise each start a thread of their
 * own (a sync in `serve`, the table jobs of every sync). A thread's first
 * calls pay for setting up DuckDB's and the allocator's per-thread state
 * (a quiet sync's DuckDB BEGIN took 0.6-0.8 ms of CPU on a new thread,
 * 0.03 ms on a used one) and its exit for the allocator's purge: a task
 * goes to an idle kept thread, or to a new thread kept after it (at most
 * DS_RUNNER_IDLE_MAX wait idle). */
#ifndef DS_COMMON_RUNNER_H
#define DS_COMMON_RUNNER_H

#include <pthread.h>
#include <stdbool.h>

#define DS_RUNNER_IDLE_MAX 16

/* A task that is waited for (ds_runner_join). */
typedef struct ds_runner_task {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    bool done;
} ds_runner_task;

/* Runs fn(arg) on a kept thread. With a task, ds_runner_join(task) must
 * follow (the task stays valid until then); without, nothing waits for
 * it. False when no thread could be started (nothing runs). */
bool ds_runner_start(ds_runner_task *task, void *(*fn)(void *), void *arg);
void ds_runner_join(ds_runner_task *task);

/* Threads waiting idle now (tests). */
unsigned ds_runner_idle(void);

#endif
