/* Serves the status page of ui.h: a constant document with headers that keep
 * a browser from running anything but its own script (CSP), from guessing
 * another type, and from using a stale copy after an upgrade. */
#include "server/ui.h"

#include <string.h>

#include "common/log.h"

enum MHD_Result ui_route(http_request *req, const char *method)
{
    if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0)
        return http_send_not_allowed(req, "GET, HEAD", "use GET for the status page");
    /* The page is static data: libmicrohttpd sends it without a copy. */
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(ui_page_len, (void *)ui_page, MHD_RESPMEM_PERSISTENT);
    if (resp == NULL) {
        ds_log_error("%s %s: no memory for the answer; connection closed", req->method, req->path);
        return MHD_NO;
    }
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "text/html; charset=utf-8");
    MHD_add_response_header(resp, "Content-Security-Policy", ui_page_csp);
    /* no-cache, not no-store: a browser may keep it but must ask again. */
    MHD_add_response_header(resp, "Cache-Control", "no-cache");
    MHD_add_response_header(resp, "X-Content-Type-Options", "nosniff");
    MHD_add_response_header(resp, "X-Frame-Options", "DENY");
    MHD_add_response_header(resp, "Referrer-Policy", "no-referrer");
    enum MHD_Result ret = MHD_queue_response(req->conn, MHD_HTTP_OK, resp);
    MHD_destroy_response(resp);
    req->status = MHD_HTTP_OK;
    return ret;
}
