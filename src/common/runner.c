/* Kept threads for short tasks (runner.h). */
#include "common/runner.h"

#include <stdlib.h>

typedef struct worker {
    pthread_cond_t wake; /* under g_lock */
    bool has_task;
    void *(*fn)(void *);
    void *arg;
    ds_runner_task *task;
    struct worker *next_idle;
} worker;

static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
static worker *g_idle;
static unsigned g_nidle;

static void finish(ds_runner_task *task)
{
    if (task == NULL)
        return;
    pthread_mutex_lock(&task->lock);
    task->done = true;
    pthread_cond_signal(&task->cond);
    /* The joiner may free the task once this is unlocked: not touched after. */
    pthread_mutex_unlock(&task->lock);
}

static void *worker_main(void *arg)
{
    worker *w = arg;
    for (;;) {
        w->fn(w->arg);
        finish(w->task);
        pthread_mutex_lock(&g_lock);
        if (g_nidle >= DS_RUNNER_IDLE_MAX) {
            pthread_mutex_unlock(&g_lock);
            pthread_cond_destroy(&w->wake);
            free(w);
            return NULL;
        }
        w->has_task = false;
        w->next_idle = g_idle;
        g_idle = w;
        g_nidle++;
        while (!w->has_task)
            pthread_cond_wait(&w->wake, &g_lock);
        pthread_mutex_unlock(&g_lock);
    }
}

bool ds_runner_start(ds_runner_task *task, void *(*fn)(void *), void *arg)
{
    if (task != NULL) {
        task->done = false;
        if (pthread_mutex_init(&task->lock, NULL) != 0)
            return false;
        if (pthread_cond_init(&task->cond, NULL) != 0) {
            pthread_mutex_destroy(&task->lock);
            return false;
        }
    }
    pthread_mutex_lock(&g_lock);
    worker *w = g_idle;
    if (w != NULL) {
        g_idle = w->next_idle;
        g_nidle--;
        w->fn = fn;
        w->arg = arg;
        w->task = task;
        w->has_task = true;
        pthread_cond_signal(&w->wake);
        pthread_mutex_unlock(&g_lock);
        return true;
    }
    pthread_mutex_unlock(&g_lock);
    w = calloc(1, sizeof *w);
    bool ok = w != NULL && pthread_cond_init(&w->wake, NULL) == 0;
    if (ok) {
        w->fn = fn;
        w->arg = arg;
        w->task = task;
        w->has_task = true;
        pthread_attr_t attr;
        pthread_t t;
        ok = pthread_attr_init(&attr) == 0;
        if (ok) {
            pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
            ok = pthread_create(&t, &attr, worker_main, w) == 0;
            pthread_attr_destroy(&attr);
        }
        if (!ok)
            pthread_cond_destroy(&w->wake);
    }
    if (!ok) {
        free(w);
        if (task != NULL) {
            pthread_cond_destroy(&task->cond);
            pthread_mutex_destroy(&task->lock);
        }
    }
    return ok;
}

void ds_runner_join(ds_runner_task *task)
{
    pthread_mutex_lock(&task->lock);
    while (!task->done)
        pthread_cond_wait(&task->cond, &task->lock);
    pthread_mutex_unlock(&task->lock);
    pthread_cond_destroy(&task->cond);
    pthread_mutex_destroy(&task->lock);
}

unsigned ds_runner_idle(void)
{
    pthread_mutex_lock(&g_lock);
    unsigned n = g_nidle;
    pthread_mutex_unlock(&g_lock);
    return n;
}
