/* HTTP client of the CLI (libcurl): finds a running server of the DuckDB
 * file through its server file and sends it the API requests that stand in
 * for opening the file. */
#include "cli/remote.h"

#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/strbuf.h"

/* Time to connect: the server is on this host, so a slow connect means it
 * is gone or stuck. */
#define CONNECT_TIMEOUT_S 5L

void cli_remote_free(cli_remote *r)
{
    http_serve_info_free(&r->info);
    free(r->db_path);
    r->db_path = NULL;
    if (r->curl_ready)
        curl_global_cleanup();
    r->curl_ready = false;
}

void cli_answer_free(cli_answer *a)
{
    free(a->body);
    a->body = NULL;
    a->len = 0;
}

static size_t collect(char *data, size_t size, size_t n, void *userdata)
{
    ds_buf *b = userdata;
    return ds_buf_appendn(b, data, size * n) ? size * n : 0;
}

bool cli_remote_request(const cli_remote *r, const char *method, const char *path, const char *body,
                        long timeout_s, cli_answer *out, ds_error *err)
{
    memset(out, 0, sizeof *out);
    CURL *curl = curl_easy_init();
    ds_buf url = DS_BUF_INIT, auth = DS_BUF_INIT, answer = DS_BUF_INIT;
    ds_buf_appendf(&url, "%s%s", r->info.url, path);
    if (r->token != NULL)
        ds_buf_appendf(&auth, "Authorization: Bearer %s", r->token);
    struct curl_slist *headers = NULL;
    if (r->token != NULL && ds_buf_str(&auth) != NULL)
        headers = curl_slist_append(headers, ds_buf_str(&auth));
    if (body != NULL)
        headers = curl_slist_append(headers, "Content-Type: application/json");
    if (curl == NULL || ds_buf_str(&url) == NULL || (r->token != NULL && ds_buf_str(&auth) == NULL) ||
        ((r->token != NULL || body != NULL) && headers == NULL)) {
        ds_error_set(err, DS_ERR_NOMEM, "out of memory");
    } else {
        curl_easy_setopt(curl, CURLOPT_URL, ds_buf_str(&url));
        curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, method);
        curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(curl, CURLOPT_NOPROXY, "*"); /* the server is local: never through a proxy */
        curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT, CONNECT_TIMEOUT_S);
        curl_easy_setopt(curl, CURLOPT_TIMEOUT, timeout_s);
        curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
        curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, collect);
        curl_easy_setopt(curl, CURLOPT_WRITEDATA, &answer);
        if (body != NULL) {
            curl_easy_setopt(curl, CURLOPT_POSTFIELDS, body);
            curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE, (long)strlen(body));
        } else if (strcmp(method, "POST") == 0) {
            curl_easy_setopt(curl, CURLOPT_POSTFIELDS, "");
        }
        CURLcode rc = curl_easy_perform(curl);
        if (rc == CURLE_OK) {
            curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &out->status);
            out->len = answer.len;
            out->body = ds_buf_take(&answer);
            if (out->body == NULL && (out->body = strdup("")) == NULL)
                ds_error_set(err, DS_ERR_NOMEM, "out of memory");
        } else if (rc == CURLE_WRITE_ERROR) {
            ds_error_set(err, DS_ERR_NOMEM, "out of memory reading the answer of %s", r->info.url);
        } else {
            ds_error_set(err, DS_ERR_BUSY,
                         "the duckstore server (PID %ld) at %s that holds %s did not answer %s %s: %s%s",
                         r->info.pid, r->info.url, r->db_path, method, path, curl_easy_strerror(rc),
                         rc == CURLE_OPERATION_TIMEDOUT ? "" : " (did it stop? run the command again)");
        }
    }
    curl_slist_free_all(headers);
    if (curl != NULL)
        curl_easy_cleanup(curl);
    ds_buf_free(&url);
    ds_buf_free(&auth);
    ds_buf_free(&answer);
    return out->body != NULL;
}

json_t *cli_remote_json(const cli_remote *r, const char *method, const char *path, const char *body,
                        long timeout_s, long *status, ds_error *err)
{
    cli_answer a;
    *status = 0;
    if (!cli_remote_request(r, method, path, body, timeout_s, &a, err))
        return NULL;
    *status = a.status;
    json_error_t jerr;
    json_t *doc = json_loadb(a.body, a.len, 0, &jerr);
    if (a.status == 401)
        ds_error_set(err, DS_ERR_USAGE,
                     "the duckstore server (PID %ld) at %s that holds %s refused DUCKSTORE_API_TOKEN (%s); "
                     "set it to the token the server was started with",
                     r->info.pid, r->info.url, r->db_path, r->token ? "wrong token" : "not set");
    else if (doc == NULL)
        ds_error_set(err, DS_ERR_STORE,
                     "the duckstore server at %s answered %s %s with HTTP %ld and no JSON: %.200s",
                     r->info.url, method, path, a.status, a.body);
    cli_answer_free(&a);
    if (a.status == 401) {
        json_decref(doc);
        return NULL;
    }
    return doc;
}

const char *cli_remote_error_text(json_t *doc)
{
    const char *msg = json_string_value(json_object_get(doc, "error"));
    return msg ? msg : "(the answer gave no reason)";
}

cli_remote_found cli_remote_find(const char *db_path, cli_remote *r)
{
    memset(r, 0, sizeof *r);
    if (!http_serve_file_find(db_path, &r->info))
        return CLI_REMOTE_NONE;
    const char *token = getenv("DUCKSTORE_API_TOKEN");
    r->token = r->info.token_required && token != NULL && token[0] != '\0' ? token : NULL;
    r->db_path = strdup(db_path);
    r->curl_ready = curl_global_init(CURL_GLOBAL_DEFAULT) == CURLE_OK;
    /* Nothing listening there: the PID was reused after a crash. */
    cli_answer a;
    ds_error err;
    if (r->db_path == NULL || !r->curl_ready ||
        !cli_remote_request(r, "GET", "/health", NULL, 30L, &a, &err)) {
        cli_remote_free(r);
        return CLI_REMOTE_NONE;
    }
    cli_answer_free(&a);
    if (r->info.token_required && r->token == NULL) {
        fprintf(stderr,
                "duckstore: the DuckDB file %s is held by duckstore serve (PID %ld, %s), which requires a "
                "bearer token: set DUCKSTORE_API_TOKEN to its token to go through it\n",
                db_path, r->info.pid, r->info.url);
        cli_remote_free(r);
        return CLI_REMOTE_FAILED;
    }
    return CLI_REMOTE_SERVER;
}
