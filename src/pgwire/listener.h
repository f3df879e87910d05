/* PostgreSQL's wire protocol in front of the cache (docs/pg-protocol.md):
 * the listening socket of pg_listen, one thread per session, the connection
 * limit, SSLRequest (TLS when pg_tls_cert/pg_tls_key are set), GSSENCRequest
 * refused, CancelRequest, the statement timeout's watchdog and shutdown. */
#ifndef DS_PGWIRE_LISTENER_H
#define DS_PGWIRE_LISTENER_H

#include <stdbool.h>
#include <stdint.h>

#include "common/error.h"
#include "config/config.h"
#include "store/store.h"

typedef struct pgl_listener pgl_listener;

/* Binds st->pg_listen (relative TLS files are read from config_dir) and
 * starts accepting. Copies what it needs of cs. */
bool pgl_start(store *st, const cfg_store *cs, const char *config_dir, pgl_listener **out, ds_error *err);

/* The port bound (the kernel's choice for port 0). */
uint16_t pgl_port(const pgl_listener *l);

/* Stops accepting, interrupts running statements, ends every session and
 * waits for their threads: call before the store closes. NULL: nothing. */
void pgl_stop(pgl_listener *l);

#endif
