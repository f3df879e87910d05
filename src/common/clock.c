/* clock_gettime as seconds. */
#include "common/clock.h"

#include <time.h>

static double clock_s(clockid_t id)
{
    struct timespec ts;
    clock_gettime(id, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

double ds_monotonic_s(void)
{
    return clock_s(CLOCK_MONOTONIC);
}

double ds_unix_s(void)
{
    return clock_s(CLOCK_REALTIME);
}

void ds_timespec_add_ms(struct timespec *t, int64_t ms)
{
    t->tv_sec += (time_t)(ms / 1000);
    t->tv_nsec += (long)(ms % 1000) * 1000000L;
    if (t->tv_nsec >= 1000000000L) {
        t->tv_sec++;
        t->tv_nsec -= 1000000000L;
    }
}

struct timespec ds_timespec_in(clockid_t clock, int64_t ms)
{
    struct timespec t;
    clock_gettime(clock, &t);
    ds_timespec_add_ms(&t, ms);
    return t;
}
