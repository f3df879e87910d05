/* Authentication of a protocol session (docs/pg-protocol.md): SCRAM-SHA-256
 * (RFC 5802/7677, as PostgreSQL speaks it, without channel binding) against
 * pg_users, or trust for loopback clients when pg_auth says so. Passwords
 * are never logged nor sent. */
#ifndef DS_PGWIRE_AUTH_H
#define DS_PGWIRE_AUTH_H

#include <stdbool.h>

#include "common/error.h"
#include "pgwire/message.h"

typedef struct pga_users {
    char **names, **passwords;
    size_t n;
    bool trust;
} pga_users;

/* Runs the exchange for user; true once the client proved the password
 * (AuthenticationOk sent). A failure has sent its ErrorResponse (28P01,
 * after the same delay whatever was wrong) and err says why for the log. */
bool pga_authenticate(pgm_conn *c, const pga_users *users, const char *user, bool loopback, ds_error *err);

/* The SCRAM proof check, apart for tests: the client's final message for a
 * password, given the exchange so far. */
bool pga_scram_client_proof(const char *password, const unsigned char *salt, size_t salt_len, int iterations,
                            const char *auth_message, char *proof_b64, size_t cap);

#endif
