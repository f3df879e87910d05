/* The runbook's endpoints (docs/api.md) and their router (internal to
 * src/server). Handlers read memory or start background work, so every
 * answer is immediate, but a plan (it asks PostgreSQL) and a cancel (it
 * waits a bounded time for the sync to end). */
#ifndef DS_SERVER_API_H
#define DS_SERVER_API_H

#include "config/config.h"
#include "server/http.h"
#include "server/jobs.h"
#include "store/store.h"

/* The config in force comes from jobs (jobs_config_acquire): a reload
 * replaces it. */
typedef struct api_ctx {
    store *st;
    jobs *jobs;
    const char *api_token; /* NULL: no auth */
} api_ctx;

/* An http_route_fn; cls is an api_ctx. */
enum MHD_Result api_route(void *cls, http_request *req, const char *url, const char *method);

#endif
