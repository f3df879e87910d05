/* Seconds as doubles: the monotonic clock for durations and deadlines, the
 * wall clock for times shown to people and metrics. */
#ifndef DS_COMMON_CLOCK_H
#define DS_COMMON_CLOCK_H

#include <stdint.h>
#include <time.h>

double ds_monotonic_s(void);
double ds_unix_s(void);

/* *t += ms (ms >= 0), for the deadlines of pthread_cond_timedwait. */
void ds_timespec_add_ms(struct timespec *t, int64_t ms);
/* The clock's now plus ms. */
struct timespec ds_timespec_in(clockid_t clock, int64_t ms);

#endif
