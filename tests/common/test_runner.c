/* Kept threads (common/runner.h): a task runs, is joined, and the next one
 * runs on the thread the last left idle; tasks started together run at
 * once; a task nothing waits for runs too; at most DS_RUNNER_IDLE_MAX
 * threads stay idle. */
#include "testlib.h"

#include <stdatomic.h>
#include <time.h>

#include "common/runner.h"

static void pause_ms(int ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* Waits up to 5 s for ds_runner_idle() to reach n. */
static bool idle_reaches(unsigned n)
{
    for (int i = 0; i < 5000 && ds_runner_idle() != n; i++)
        pause_ms(1);
    return ds_runner_idle() == n;
}

typedef struct probe {
    pthread_t ran_on;
    int value;
} probe;

static void *record(void *arg)
{
    probe *p = arg;
    p->ran_on = pthread_self();
    p->value++;
    return NULL;
}

static void test_joined_tasks_reuse_the_thread(void **state)
{
    (void)state;
    unsigned idle = ds_runner_idle();
    probe a = {0}, b = {0};
    ds_runner_task task;
    assert_true(ds_runner_start(&task, record, &a));
    ds_runner_join(&task);
    assert_int_equal(a.value, 1);
    assert_false(pthread_equal(a.ran_on, pthread_self()));
    assert_true(idle_reaches(idle > 0 ? idle : 1));
    assert_true(ds_runner_start(&task, record, &b));
    ds_runner_join(&task);
    assert_int_equal(b.value, 1);
    if (idle == 0)
        assert_true(pthread_equal(a.ran_on, b.ran_on)); /* the only idle thread took it */
}

/* Two tasks that each wait (up to 5 s) for the other to have started:
 * both see it only when they run at once. */
static atomic_int g_started;
static void *meet(void *arg)
{
    atomic_bool *met = arg;
    atomic_fetch_add(&g_started, 1);
    for (int i = 0; i < 5000 && atomic_load(&g_started) < 2; i++)
        pause_ms(1);
    atomic_store(met, atomic_load(&g_started) >= 2);
    return NULL;
}

static void test_tasks_run_at_once(void **state)
{
    (void)state;
    atomic_store(&g_started, 0);
    atomic_bool met[2] = {false, false};
    ds_runner_task tasks[2];
    for (int i = 0; i < 2; i++)
        assert_true(ds_runner_start(&tasks[i], meet, &met[i]));
    for (int i = 0; i < 2; i++)
        ds_runner_join(&tasks[i]);
    assert_true(atomic_load(&met[0]));
    assert_true(atomic_load(&met[1]));
}

static atomic_int g_unjoined;
static void *count_unjoined(void *arg)
{
    (void)arg;
    atomic_fetch_add(&g_unjoined, 1);
    return NULL;
}

static void test_unjoined_task_runs(void **state)
{
    (void)state;
    atomic_store(&g_unjoined, 0);
    for (int i = 0; i < 3; i++)
        assert_true(ds_runner_start(NULL, count_unjoined, NULL));
    for (int i = 0; i < 5000 && atomic_load(&g_unjoined) < 3; i++)
        pause_ms(1);
    assert_int_equal(atomic_load(&g_unjoined), 3);
}

/* 20 tasks held at a gate at once need 20 threads; afterwards 16 stay. */
static atomic_bool g_gate;
static void *wait_gate(void *arg)
{
    (void)arg;
    for (int i = 0; i < 10000 && !atomic_load(&g_gate); i++)
        pause_ms(1);
    return NULL;
}

static void test_idle_threads_capped(void **state)
{
    (void)state;
    enum { N = DS_RUNNER_IDLE_MAX + 4 };
    atomic_store(&g_gate, false);
    ds_runner_task tasks[N];
    for (int i = 0; i < N; i++)
        assert_true(ds_runner_start(&tasks[i], wait_gate, NULL));
    assert_int_equal(ds_runner_idle(), 0);
    atomic_store(&g_gate, true);
    for (int i = 0; i < N; i++)
        ds_runner_join(&tasks[i]);
    assert_true(idle_reaches(DS_RUNNER_IDLE_MAX));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_joined_tasks_reuse_the_thread),
        cmocka_unit_test(test_tasks_run_at_once),
        cmocka_unit_test(test_unjoined_task_runs),
        cmocka_unit_test(test_idle_threads_capped),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
