/* The status page (internal to src/server): one HTML document with its CSS
 * and script inline, compiled into the binary from src/server/ui/index.html
 * (src/server/ui/embed.cmake), served at / and /ui without a token. The
 * page itself asks for the token and sends it on every /api/ call. */
#ifndef DS_SERVER_UI_H
#define DS_SERVER_UI_H

#include <stddef.h>

#include "server/http.h"

/* Generated at build time: the page's bytes, and a Content-Security-Policy
 * that allows exactly its inline script and style (by their sha256) and
 * requests to this server only. */
extern const unsigned char ui_page[];
extern const size_t ui_page_len;
extern const char ui_page_csp[];

/* GET and HEAD: the page; any other method: 405. */
enum MHD_Result ui_route(http_request *req, const char *method);

#endif
