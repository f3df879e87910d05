/* Logging to stderr: one line per event, ISO 8601 UTC timestamp and level.
 * Callers never pass secrets; connection strings go through
 * cfg_mask_url() first. */
#ifndef DS_COMMON_LOG_H
#define DS_COMMON_LOG_H

typedef enum ds_log_level { DS_LOG_DEBUG, DS_LOG_INFO, DS_LOG_WARN, DS_LOG_ERROR } ds_log_level;

void ds_log_set_level(ds_log_level level);
void ds_log(ds_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define ds_log_debug(...) ds_log(DS_LOG_DEBUG, __VA_ARGS__)
#define ds_log_info(...) ds_log(DS_LOG_INFO, __VA_ARGS__)
#define ds_log_warn(...) ds_log(DS_LOG_WARN, __VA_ARGS__)
#define ds_log_error(...) ds_log(DS_LOG_ERROR, __VA_ARGS__)

#endif
