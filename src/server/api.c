/* The endpoints of api.h: status, health, metrics, syncs and watermark
 * resets, and the router that checks path, token, method and parameters
 * in the documented order. */
#include "server/api.h"
#include "server/query.h"
#include "server/ui.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/strbuf.h"
#include "publish/publish.h"
#include "server/axis.h"
#include "sync/plan.h"

static const char no_endpoint[] = "no such endpoint; see docs/api.md";
static const char sync_disabled[] = "syncing is disabled (duckdb.enabled: false)";

static bool valid_source_name(const char *name, size_t len)
{
    if (len == 0 || len > 63)
        return false;
    for (size_t i = 0; i < len; i++) {
        char c = name[i];
        if (!((c >= 'a' && c <= 'z') || c == '_' || (i > 0 && c >= '0' && c <= '9')))
            return false;
    }
    return true;
}

/* Appends a JSON string; false (and arr unchanged) when out of memory. */
static bool append_name(json_t *arr, const char *name)
{
    return json_array_append_new(arr, json_string(name)) == 0;
}

static enum MHD_Result unknown_source(api_ctx *a, http_request *req, const char *name)
{
    const cfg_config *cfg = jobs_config_acquire(a->jobs);
    json_t *known = json_array();
    for (size_t i = 0; known != NULL && i < cfg->n_sources; i++)
        if (!append_name(known, cfg->sources[i].name)) {
            json_decref(known);
            known = NULL;
        }
    jobs_config_release(a->jobs, cfg);
    return http_send_json(req, MHD_HTTP_NOT_FOUND,
                          json_pack("{s:b,s:o,s:o}", "success", 0, "error",
                                    http_json_stringf("no source named \"%s\"", name), "sources", known));
}

/* What a source action answers for each result of its jobs_* call; every
 * message has one %s, the source's name. */
typedef struct action_answers {
    unsigned done_status;
    const char *done;
    const char *busy;       /* 409 */
    unsigned failed_status; /* JOBS_FAILED: err's message */
} action_answers;

static enum MHD_Result answer_action(api_ctx *a, http_request *req, const char *name, jobs_start_result res,
                                     const ds_error *err, const action_answers *answers)
{
    switch (res) {
    case JOBS_STARTED:
        return http_send_messagef(req, answers->done_status, answers->done, name);
    case JOBS_BUSY:
        return http_send_errorf(req, MHD_HTTP_CONFLICT, answers->busy, name);
    case JOBS_STREAMING:
        return http_send_messagef(
            req, MHD_HTTP_OK,
            "%s streams its changes as they commit (capture: logical): nothing to start; "
            "?full=true loads it again",
            name);
    case JOBS_STOPPING:
        return http_send_error(req, MHD_HTTP_SERVICE_UNAVAILABLE, "the server is shutting down");
    case JOBS_FAILED:
        return http_send_error(req, answers->failed_status, err->msg);
    case JOBS_UNKNOWN:
        break;
    }
    return unknown_source(a, req, name);
}

/* ?full= as AXIS parses a boolean: true/false, 1/0, yes/no, on/off, t/f,
 * y/n in any case; absent = false. "?full" alone has a NULL value: an
 * error, not the default. */
static bool full_param(http_request *req, bool *full)
{
    static const char *const yes[] = {"true", "1", "yes", "on", "t", "y"};
    static const char *const no[] = {"false", "0", "no", "off", "f", "n"};
    const char *arg = NULL;
    bool given =
        MHD_lookup_connection_value_n(req->conn, MHD_GET_ARGUMENT_KIND, "full", 4, &arg, NULL) == MHD_YES;
    *full = false;
    if (!given)
        return true;
    for (size_t i = 0; arg != NULL && i < sizeof yes / sizeof yes[0]; i++) {
        if (strcasecmp(arg, yes[i]) == 0)
            return *full = true;
        if (strcasecmp(arg, no[i]) == 0)
            return true;
    }
    return false;
}

static const char full_values[] = "full must be true or false (also 1/0, yes/no, on/off, t/f, y/n)";

/* duckdb.enabled (read once at start: a reload keeps its value). */
static bool syncing_enabled(api_ctx *a)
{
    const cfg_config *cfg = jobs_config_acquire(a->jobs);
    bool enabled = cfg->store.enabled;
    jobs_config_release(a->jobs, cfg);
    return enabled;
}

static enum MHD_Result handle_sync_one(api_ctx *a, http_request *req, const char *name)
{
    static const action_answers sync = {MHD_HTTP_ACCEPTED, "sync of %s started", "%s is already syncing",
                                        MHD_HTTP_SERVICE_UNAVAILABLE};
    static const action_answers full_sync = {MHD_HTTP_ACCEPTED, "full sync of %s started",
                                             "%s is already syncing", MHD_HTTP_SERVICE_UNAVAILABLE};
    enum MHD_Result ret;
    if (!http_query_ok(req, "full", &ret))
        return ret;
    bool full;
    if (!full_param(req, &full))
        return http_send_error(req, MHD_HTTP_BAD_REQUEST, full_values);
    if (!syncing_enabled(a))
        return http_send_error(req, MHD_HTTP_CONFLICT, sync_disabled);
    ds_error err;
    jobs_start_result res = jobs_start_sync(a->jobs, name, full, &err);
    return answer_action(a, req, name, res, &err, full ? &full_sync : &sync);
}

static enum MHD_Result handle_reset(api_ctx *a, http_request *req, const char *name)
{
    static const action_answers reset = {
        MHD_HTTP_OK, "watermarks of %s cleared; the next sync is a full rebuild",
        "%s is syncing; reset its watermarks when the sync is done", MHD_HTTP_INTERNAL_SERVER_ERROR};
    enum MHD_Result ret;
    if (!http_query_ok(req, NULL, &ret))
        return ret;
    ds_error err;
    jobs_start_result res = jobs_reset_watermark(a->jobs, name, &err);
    return answer_action(a, req, name, res, &err, &reset);
}

/* Starts every enabled source; the answer lists those started and those
 * already syncing. A source that could not start (no memory or thread)
 * turns the answer into a 503 that still lists what did start. */
static enum MHD_Result handle_sync_all(api_ctx *a, http_request *req)
{
    enum MHD_Result ret;
    if (!http_query_ok(req, "full", &ret))
        return ret;
    bool full;
    if (!full_param(req, &full))
        return http_send_error(req, MHD_HTTP_BAD_REQUEST, full_values);
    const cfg_config *cfg = jobs_config_acquire(a->jobs);
    if (!cfg->store.enabled) {
        jobs_config_release(a->jobs, cfg);
        return http_send_error(req, MHD_HTTP_CONFLICT, sync_disabled);
    }
    json_t *started = json_array(), *busy = json_array();
    bool ok = started != NULL && busy != NULL;
    ds_error err, failure;
    ds_error_clear(&failure);
    for (size_t i = 0; i < cfg->n_sources; i++) {
        const cfg_source *src = &cfg->sources[i];
        if (!src->enabled)
            continue;
        jobs_start_result r = jobs_start_sync(a->jobs, src->name, full, &err);
        if (r == JOBS_FAILED && failure.code == DS_OK)
            failure = err;
        else if (r != JOBS_FAILED) /* a streaming source is listed as syncing */
            ok = ok && append_name(r == JOBS_STARTED ? started : busy, src->name);
    }
    jobs_config_release(a->jobs, cfg);
    json_t *doc = NULL;
    if (ok && failure.code != DS_OK)
        doc = json_pack("{s:b,s:o,s:O,s:O}", "success", 0, "error", http_json_text(failure.msg), "started",
                        started, "already_syncing", busy);
    else if (ok)
        doc = json_pack("{s:b,s:o,s:O,s:O}", "success", 1, "message",
                        http_json_stringf("sync started for %zu source(s)", json_array_size(started)),
                        "started", started, "already_syncing", busy);
    json_decref(started);
    json_decref(busy);
    unsigned status = failure.code != DS_OK ? MHD_HTTP_SERVICE_UNAVAILABLE : MHD_HTTP_ACCEPTED;
    return http_send_json(req, status, doc);
}

static enum MHD_Result handle_status(api_ctx *a, http_request *req)
{
    enum MHD_Result ret;
    if (!http_query_ok(req, NULL, &ret))
        return ret;
    json_t *doc = json_pack("{s:b,s:b,s:o}", "success", 1, "enabled", syncing_enabled(a), "datasets",
                            jobs_status_json(a->jobs));
    /* The file deleted or not open: the datasets' last states no longer
     * say what a restart would find. */
    const char *state;
    ds_error err;
    if (doc != NULL && a->st != NULL && !store_health(a->st, &state, &err))
        json_object_set_new(doc, "store_error", http_json_text(err.msg));
    return http_send_json(req, MHD_HTTP_OK, doc);
}

/* 200 while the DuckDB file is open at its path; 503 when it was deleted
 * or replaced (what is synced would be lost at exit) or could not be
 * reopened after a failure. */
static enum MHD_Result handle_health(api_ctx *a, http_request *req)
{
    const char *state = a->st ? "open" : "closed";
    ds_error err;
    if (a->st != NULL && !store_health(a->st, &state, &err))
        return http_send_json(req, MHD_HTTP_SERVICE_UNAVAILABLE,
                              json_pack("{s:s,s:s,s:o,s:o}", "status", "error", "store", state, "path",
                                        http_json_text(store_path(a->st)), "error", http_json_text(err.msg)));
    return http_send_json(req, MHD_HTTP_OK,
                          json_pack("{s:s,s:s,s:o}", "status", "ok", "store", state, "path",
                                    http_json_text(a->st ? store_path(a->st) : "")));
}

static enum MHD_Result handle_metrics(api_ctx *a, http_request *req)
{
    char *text = jobs_metrics_text(a->jobs);
    if (text == NULL)
        return http_send_error(req, MHD_HTTP_INTERNAL_SERVER_ERROR, "out of memory");
    enum MHD_Result ret = http_send_text(req, MHD_HTTP_OK, "text/plain; version=0.0.4; charset=utf-8", text);
    free(text);
    return ret;
}

/* ?sync_id=N of a cancel request; absent: 0 (whichever sync runs). */
static bool sync_id_param(http_request *req, uint64_t *id)
{
    const char *arg = NULL;
    *id = 0;
    if (MHD_lookup_connection_value_n(req->conn, MHD_GET_ARGUMENT_KIND, "sync_id", 7, &arg, NULL) != MHD_YES)
        return true;
    char *end = NULL;
    unsigned long long v = arg != NULL && arg[0] >= '1' && arg[0] <= '9' ? strtoull(arg, &end, 10) : 0;
    *id = (uint64_t)v;
    return v > 0 && end != NULL && *end == '\0';
}

/* How long a cancel request waits for the sync to end: cancelling is a
 * PostgreSQL cancel and dropping staging tables, but a commit that had
 * begun runs to its end. */
#define CANCEL_WAIT_S 10.0

/* POST /api/store/sync/NAME/cancel[?sync_id=N]: cancels the running sync
 * of a source (only sync N when given) as shutdown does, before its commit
 * and changing nothing, and answers how it ended. */
static enum MHD_Result handle_cancel(api_ctx *a, http_request *req, const char *name)
{
    enum MHD_Result ret;
    if (!http_query_ok(req, "sync_id", &ret))
        return ret;
    uint64_t id;
    if (!sync_id_param(req, &id))
        return http_send_error(req, MHD_HTTP_BAD_REQUEST,
                               "sync_id must be a positive integer (progress.sync_id of the status)");
    jobs_cancel_answer ans;
    jobs_cancel_sync(a->jobs, name, id, CANCEL_WAIT_S, &ans);
    json_int_t sid = (json_int_t)ans.sync_id;
    const char *trigger = jobs_trigger_name(ans.trigger);
    json_t *result = ans.result != JOBS_RESULT_NONE ? json_string(jobs_result_name(ans.result)) : json_null();
    switch (ans.outcome) {
    case JOBS_CANCEL_UNKNOWN:
        json_decref(result);
        return unknown_source(a, req, name);
    case JOBS_CANCEL_IDLE:
        json_decref(result);
        if (id != 0)
            return http_send_json(req, MHD_HTTP_CONFLICT,
                                  json_pack("{s:b,s:o,s:I}", "success", 0, "error",
                                            http_json_stringf("%s is not syncing: sync %llu is not running",
                                                              name, (unsigned long long)id),
                                            "sync_id", (json_int_t)id));
        return http_send_errorf(req, MHD_HTTP_CONFLICT, "%s is not syncing: nothing to cancel", name);
    case JOBS_CANCEL_OTHER:
        json_decref(result);
        return http_send_json(
            req, MHD_HTTP_CONFLICT,
            json_pack("{s:b,s:o,s:I,s:s}", "success", 0, "error",
                      http_json_stringf("the running sync of %s is sync %lld (%s), not sync "
                                        "%llu: not cancelled",
                                        name, (long long)sid, trigger, (unsigned long long)id),
                      "sync_id", sid, "trigger", trigger));
    case JOBS_CANCEL_ENDING:
        return http_send_json(
            req, MHD_HTTP_ACCEPTED,
            json_pack("{s:b,s:o,s:I,s:s,s:o}", "success", 1, "message",
                      http_json_stringf("cancel of the sync of %s requested; it is still ending", name),
                      "sync_id", sid, "trigger", trigger, "result", result));
    case JOBS_CANCEL_ENDED:
        break;
    }
    json_t *message =
        ans.result == JOBS_RESULT_CANCELLED
            ? http_json_stringf("the sync of %s was cancelled before its commit; its data, watermarks and "
                                "status are unchanged",
                                name)
        : ans.result == JOBS_RESULT_SUCCESS
            ? http_json_stringf("the sync of %s had begun its commit and completed", name)
            : http_json_stringf("the sync of %s ended before the cancel took effect", name);
    return http_send_json(req, MHD_HTTP_OK,
                          json_pack("{s:b,s:o,s:I,s:s,s:o}", "success", 1, "message", message, "sync_id", sid,
                                    "trigger", trigger, "result", result));
}

/* The plan of one source as JSON: its lines (sync/plan.c writes them, the
 * CLI prints them as they are), and the error when planning failed. */
static json_t *plan_json(api_ctx *a, const cfg_config *cfg, const cfg_source *src, bool full)
{
    ds_buf text = DS_BUF_INIT;
    ds_error err;
    bool ok = sync_plan_text(a->st, cfg, src, full, &text, &err);
    json_t *lines = json_array();
    for (const char *p = ds_buf_str(&text); lines != NULL && p != NULL && *p != '\0';) {
        const char *nl = strchr(p, '\n');
        size_t n = nl ? (size_t)(nl - p) : strlen(p);
        char *line = strndup(p, n);
        json_t *j = line ? http_json_text(line) : NULL;
        free(line);
        if (j == NULL || json_array_append_new(lines, j) != 0) {
            json_decref(lines);
            lines = NULL;
        }
        p = nl ? nl + 1 : p + n;
    }
    ds_buf_free(&text);
    if (ok)
        return json_pack("{s:b,s:s,s:o}", "success", 1, "source", src->name, "lines", lines);
    return json_pack("{s:b,s:s,s:o,s:o,s:s}", "success", 0, "source", src->name, "lines", lines, "error",
                     http_json_text(err.msg), "error_kind", jobs_error_kind(err.code));
}

/* GET /api/store/plan[/NAME][?full=true]: what a sync would do, planned
 * on the server's store as `duckstore plan` plans on the file (read-only;
 * PostgreSQL read in a read-only transaction). It connects to PostgreSQL,
 * so it answers once planned. Every enabled source without NAME. */
static enum MHD_Result handle_plan(api_ctx *a, http_request *req, const char *name)
{
    enum MHD_Result ret;
    if (!http_query_ok(req, "full", &ret))
        return ret;
    bool full;
    if (!full_param(req, &full))
        return http_send_error(req, MHD_HTTP_BAD_REQUEST, full_values);
    if (a->st == NULL)
        return http_send_error(req, MHD_HTTP_SERVICE_UNAVAILABLE, "the DuckDB file is not open");
    const cfg_config *cfg = jobs_config_acquire(a->jobs);
    json_t *doc = NULL;
    if (name != NULL) {
        const cfg_source *src = cfg_find_source(cfg, name);
        if (src == NULL) {
            jobs_config_release(a->jobs, cfg);
            return unknown_source(a, req, name);
        }
        doc = plan_json(a, cfg, src, full);
    } else {
        json_t *plans = json_array();
        bool ok = true;
        for (size_t i = 0; plans != NULL && i < cfg->n_sources; i++) {
            if (!cfg->sources[i].enabled)
                continue;
            json_t *p = plan_json(a, cfg, &cfg->sources[i], full);
            ok = ok && json_is_true(json_object_get(p, "success"));
            if (p == NULL || json_array_append_new(plans, p) != 0) {
                json_decref(plans);
                plans = NULL;
            }
        }
        doc = json_pack("{s:b,s:o}", "success", ok, "plans", plans);
    }
    jobs_config_release(a->jobs, cfg);
    return http_send_json(req, MHD_HTTP_OK, doc);
}

/* POST /api/store/publish/NAME: publishes now and answers when the new
 * version's manifest is in place (docs/publish.md). */
static enum MHD_Result handle_publish(api_ctx *a, http_request *req, const char *name)
{
    enum MHD_Result ret;
    if (!http_query_ok(req, NULL, &ret))
        return ret;
    if (a->st == NULL)
        return http_send_error(req, MHD_HTTP_SERVICE_UNAVAILABLE, "the DuckDB file is not open");
    const cfg_config *cfg = jobs_config_acquire(a->jobs);
    const cfg_source *src = cfg_find_source(cfg, name);
    if (src == NULL) {
        jobs_config_release(a->jobs, cfg);
        return unknown_source(a, req, name);
    }
    publish_result r;
    ds_error err;
    bool ok = publish_source(a->st, src, &r, &err);
    jobs_refresh_source(a->jobs, name);
    char *path = strdup(src->publish_path ? src->publish_path : "");
    jobs_config_release(a->jobs, cfg);
    if (!ok) {
        free(path);
        return http_send_error(
            req, err.code == DS_ERR_CONFIG ? MHD_HTTP_BAD_REQUEST : MHD_HTTP_INTERNAL_SERVER_ERROR, err.msg);
    }
    json_t *doc = json_pack("{s:b,s:{s:I,s:s?,s:I,s:I,s:I,s:I,s:f}}", "success", 1, "publish", "version",
                            (json_int_t)r.version, "path", path, "rows", (json_int_t)r.rows, "files",
                            (json_int_t)r.files, "files_written", (json_int_t)r.files_written,
                            "bytes_written", (json_int_t)r.bytes_written, "duration_seconds", r.duration_s);
    free(path);
    return http_send_json(req, MHD_HTTP_OK, doc);
}

/* /api/store/sync/NAME, /api/store/sync/NAME/reset-watermark and
 * /api/store/sync/NAME/cancel. */
static enum MHD_Result route_source(api_ctx *a, http_request *req, const char *rest, bool post)
{
    const char *slash = strchr(rest, '/');
    size_t len = slash ? (size_t)(slash - rest) : strlen(rest);
    bool reset = slash && strcmp(slash, "/reset-watermark") == 0;
    bool cancel = slash && strcmp(slash, "/cancel") == 0;
    if ((slash && !reset && !cancel) || !valid_source_name(rest, len))
        return http_send_error(req, MHD_HTTP_NOT_FOUND, no_endpoint);
    if (!post)
        return http_send_not_allowed(req, "POST", "use POST");
    char name[64]; /* valid_source_name: at most 63 bytes */
    memcpy(name, rest, len);
    name[len] = '\0';
    if (cancel)
        return handle_cancel(a, req, name);
    return reset ? handle_reset(a, req, name) : handle_sync_one(a, req, name);
}

enum MHD_Result api_route(void *cls, http_request *req, const char *url, const char *method)
{
    api_ctx *a = cls;
    enum MHD_Result ret;
    bool get = strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0;
    bool post = strcmp(method, "POST") == 0;
    if (strcmp(url, "/") == 0 || strcmp(url, "/ui") == 0)
        return ui_route(req, method);
    if (strcmp(url, "/health") == 0)
        return get ? handle_health(a, req) : http_send_not_allowed(req, "GET, HEAD", "use GET for /health");
    bool api = strncmp(url, "/api/", 5) == 0;
    if (!api && strcmp(url, "/metrics") != 0)
        return http_send_error(req, MHD_HTTP_NOT_FOUND, no_endpoint);
    if (!http_authorized(req, a->api_token))
        return http_send_error(req, MHD_HTTP_UNAUTHORIZED, "missing or wrong bearer token");
    if (strcmp(url, "/metrics") == 0)
        return get ? handle_metrics(a, req) : http_send_not_allowed(req, "GET, HEAD", "use GET for /metrics");
    if (strcmp(url, "/api/store/status") == 0)
        return get ? handle_status(a, req)
                   : http_send_not_allowed(req, "GET, HEAD", "use GET for /api/store/status");
    if (strcmp(url, "/api/store/sync") == 0)
        return post ? handle_sync_all(a, req)
                    : http_send_not_allowed(req, "POST", "use POST for /api/store/sync");
    if (strcmp(url, "/api/store/query") == 0)
        return query_route(a, req, method);
    if (axis_route(a, req, url, get, &ret))
        return ret;
    if (strcmp(url, "/api/store/plan") == 0)
        return get ? handle_plan(a, req, NULL)
                   : http_send_not_allowed(req, "GET, HEAD", "use GET for /api/store/plan");
    static const char plan_prefix[] = "/api/store/plan/";
    if (strncmp(url, plan_prefix, sizeof plan_prefix - 1) == 0) {
        const char *name = url + sizeof plan_prefix - 1;
        if (!valid_source_name(name, strlen(name)))
            return http_send_error(req, MHD_HTTP_NOT_FOUND, no_endpoint);
        return get ? handle_plan(a, req, name) : http_send_not_allowed(req, "GET, HEAD", "use GET");
    }
    static const char publish_prefix[] = "/api/store/publish/";
    if (strncmp(url, publish_prefix, sizeof publish_prefix - 1) == 0) {
        const char *name = url + sizeof publish_prefix - 1;
        if (!valid_source_name(name, strlen(name)))
            return http_send_error(req, MHD_HTTP_NOT_FOUND, no_endpoint);
        return post ? handle_publish(a, req, name) : http_send_not_allowed(req, "POST", "use POST");
    }
    static const char prefix[] = "/api/store/sync/";
    if (strncmp(url, prefix, sizeof prefix - 1) == 0)
        return route_source(a, req, url + sizeof prefix - 1, post);
    return http_send_error(req, MHD_HTTP_NOT_FOUND, no_endpoint);
}
