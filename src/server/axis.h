/* The read endpoints AXIS's dashboards call (docs/api.md):
 * GET /api/store/metadata/NAME and GET /api/store/data/NAME. Internal to
 * src/server. */
#ifndef DS_SERVER_AXIS_H
#define DS_SERVER_AXIS_H

#include "server/api.h"

/* Answers url when it is one of these endpoints (true, the answer in
 * *ret); false leaves the request to the other routes. */
bool axis_route(api_ctx *a, http_request *req, const char *url, bool get, enum MHD_Result *ret);
/* Whether a streaming source's metadata document, computed age_s ago at
 * a cost of cost_s, is served again for a later batch (axis.c). */
bool axis_metadata_reusable(double age_s, double cost_s);
/* Frees the metadata documents kept between syncs (at shutdown). */
void axis_cache_free(void);

#endif
