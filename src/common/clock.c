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
