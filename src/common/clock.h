/* Seconds as doubles: the monotonic clock for durations and deadlines, the
 * wall clock for times shown to people and metrics. */
#ifndef DS_COMMON_CLOCK_H
#define DS_COMMON_CLOCK_H

double ds_monotonic_s(void);
double ds_unix_s(void);

#endif
