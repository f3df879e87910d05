/* SCRAM-SHA-256 and trust (auth.h), with OpenSSL's primitives. */
#include "pgwire/auth.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/strbuf.h"

#define SCRAM_ITERATIONS 4096
#define SALT_LEN 16
#define NONCE_LEN 18
/* Every failed login answers this long after it began, whatever was wrong
 * (unknown user, wrong password, malformed exchange), so timing tells a
 * client nothing. */
#define FAIL_DELAY_MS 500

#define AUTH_OK 0
#define AUTH_SASL 10
#define AUTH_SASL_CONTINUE 11
#define AUTH_SASL_FINAL 12

static void send_auth(pgm_conn *c, int32_t code, const char *data, size_t n)
{
    pgm_begin(c, 'R');
    pgm_put_i32(&c->out, code);
    if (n > 0)
        ds_buf_appendn(&c->out, data, n);
    pgm_end(c);
}

static void b64(const unsigned char *in, size_t n, char *out)
{
    EVP_EncodeBlock((unsigned char *)out, in, (int)n);
}

/* Decodes standard base64 into out (cap bytes); -1 when malformed. */
static int unb64(const char *in, unsigned char *out, size_t cap)
{
    size_t n = strlen(in);
    if (n % 4 != 0 || n / 4 * 3 > cap + 2 || n == 0)
        return -1;
    unsigned char tmp[256];
    if (n / 4 * 3 > sizeof tmp)
        return -1;
    int k = EVP_DecodeBlock(tmp, (const unsigned char *)in, (int)n);
    if (k < 0)
        return -1;
    if (n >= 1 && in[n - 1] == '=')
        k--;
    if (n >= 2 && in[n - 2] == '=')
        k--;
    if ((size_t)k > cap)
        return -1;
    memcpy(out, tmp, (size_t)k);
    return k;
}

static void hmac(const unsigned char *key, size_t klen, const void *data, size_t n, unsigned char *out)
{
    unsigned int len = 32;
    HMAC(EVP_sha256(), key, (int)klen, data, n, out, &len);
}

static void salted_password(const char *password, const unsigned char *salt, size_t salt_len, int iterations,
                            unsigned char *out)
{
    PKCS5_PBKDF2_HMAC(password, (int)strlen(password), salt, (int)salt_len, iterations, EVP_sha256(), 32,
                      out);
}

bool pga_scram_client_proof(const char *password, const unsigned char *salt, size_t salt_len, int iterations,
                            const char *auth_message, char *proof_b64, size_t cap)
{
    unsigned char salted[32], ckey[32], stored[32], sig[32], proof[32];
    if (cap < 45)
        return false;
    salted_password(password, salt, salt_len, iterations, salted);
    hmac(salted, 32, "Client Key", 10, ckey);
    SHA256(ckey, 32, stored);
    hmac(stored, 32, auth_message, strlen(auth_message), sig);
    for (int i = 0; i < 32; i++)
        proof[i] = ckey[i] ^ sig[i];
    b64(proof, 32, proof_b64);
    return true;
}

static double now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec * 1000.0 + (double)t.tv_nsec / 1e6;
}

static bool refuse(pgm_conn *c, double started, const char *user, ds_error *err, const char *why)
{
    double left = FAIL_DELAY_MS - (now_ms() - started);
    if (left > 0) {
        struct timespec t = {.tv_sec = (time_t)(left / 1000),
                             .tv_nsec = (long)((int64_t)(left * 1e6) % 1000000000)};
        nanosleep(&t, NULL);
    }
    ds_buf m = DS_BUF_INIT;
    ds_buf_appendf(&m, "password authentication failed for user \"%s\"", user);
    pgm_error(c, 'E', "FATAL", "28P01", ds_buf_str(&m) ? ds_buf_str(&m) : "password authentication failed",
              0);
    ds_buf_free(&m);
    ds_error ignored;
    pgm_flush(c, &ignored);
    return ds_error_set(err, DS_ERR_USAGE, "authentication of user \"%.80s\" failed: %s", user, why);
}

/* "key=value" attribute of a SCRAM message (after a comma or at its
 * start); NULL when absent. The value ends at the next comma. */
static const char *attr(const char *msg, char key, size_t *len)
{
    for (const char *p = msg; p && *p; p = strchr(p, ',') ? strchr(p, ',') + 1 : NULL) {
        if (p[0] == key && p[1] == '=') {
            const char *v = p + 2;
            const char *end = strchr(v, ',');
            *len = end ? (size_t)(end - v) : strlen(v);
            return v;
        }
    }
    return NULL;
}

/* Reads a 'p' message into body; false when the client sent something else
 * or went away. */
static bool read_password_message(pgm_conn *c, ds_buf *body, ds_error *err)
{
    char type;
    bool timed_out;
    if (!pgm_read_message(c, &type, body, 60000, &timed_out, err))
        return false;
    if (type != 'p')
        return ds_error_set(err, DS_ERR_DECODE, "expected a SASL response, got message '%c'", type);
    return true;
}

bool pga_authenticate(pgm_conn *c, const pga_users *users, const char *user, bool loopback, ds_error *err)
{
    if (users->trust) {
        if (!loopback) {
            pgm_error(c, 'E', "FATAL", "28000",
                      "trust authentication is only for clients on this host (loopback); connect with a "
                      "password from pg_users",
                      0);
            ds_error ignored;
            pgm_flush(c, &ignored);
            return ds_error_set(err, DS_ERR_USAGE, "trust refused to a client beyond loopback");
        }
        send_auth(c, AUTH_OK, NULL, 0);
        return true;
    }
    double started = now_ms();
    const char *password = NULL;
    for (size_t i = 0; i < users->n; i++)
        if (strcmp(users->names[i], user) == 0)
            password = users->passwords[i];

    static const char mech[] = "SCRAM-SHA-256\0";
    send_auth(c, AUTH_SASL, mech, sizeof mech);
    if (!pgm_flush(c, err))
        return false;

    ds_buf body = DS_BUF_INIT, server_first = DS_BUF_INIT, auth_msg = DS_BUF_INIT;
    bool ok = false;
    const char *why = "malformed SCRAM exchange";
    if (!read_password_message(c, &body, err))
        goto out_quiet;
    pgm_reader r;
    pgm_reader_init(&r, body.data, body.len);
    const char *m = pgm_get_str(&r);
    int32_t n = pgm_get_i32(&r);
    const char *first = n >= 0 ? pgm_get_bytes(&r, (size_t)n) : NULL;
    if (r.bad || first == NULL || strcmp(m, "SCRAM-SHA-256") != 0)
        goto out;
    /* gs2 header: n,, or y,, (no channel binding), then client-first-bare */
    char *cfirst = strndup(first, (size_t)n);
    if (cfirst == NULL || (cfirst[0] != 'n' && cfirst[0] != 'y') || cfirst[1] != ',' ||
        strchr(cfirst + 2, ',') == NULL) {
        free(cfirst);
        goto out;
    }
    const char *bare = strchr(cfirst + 2, ',') + 1;
    size_t cnonce_len;
    const char *cnonce = attr(bare, 'r', &cnonce_len);
    if (cnonce == NULL || cnonce_len == 0 || cnonce_len > 256) {
        free(cfirst);
        goto out;
    }
    /* An unknown user goes through the same exchange with a random salt
     * and no password that can match. */
    unsigned char salt[SALT_LEN], rnd[NONCE_LEN];
    RAND_bytes(salt, sizeof salt);
    RAND_bytes(rnd, sizeof rnd);
    char salt64[64], rnd64[64];
    b64(salt, sizeof salt, salt64);
    b64(rnd, sizeof rnd, rnd64);
    ds_buf_appendf(&server_first, "r=%.*s%s,s=%s,i=%d", (int)cnonce_len, cnonce, rnd64, salt64,
                   SCRAM_ITERATIONS);
    ds_buf_appendf(&auth_msg, "%s,%s,", bare, ds_buf_str(&server_first));
    free(cfirst);
    if (server_first.failed || auth_msg.failed)
        goto out;
    send_auth(c, AUTH_SASL_CONTINUE, server_first.data, server_first.len);
    if (!pgm_flush(c, err) || !read_password_message(c, &body, err))
        goto out_quiet;
    /* client-final: c=biws,r=<nonce>,p=<proof> */
    char *final = strndup(body.data, body.len);
    if (final == NULL)
        goto out;
    char *pp = strstr(final, ",p=");
    size_t nonce_len;
    const char *nonce = attr(final, 'r', &nonce_len);
    size_t full_nonce_len = server_first.len; /* r=... up to the comma */
    const char *sf_nonce = attr(server_first.data, 'r', &full_nonce_len);
    unsigned char proof[32];
    if (pp == NULL || nonce == NULL || nonce_len != full_nonce_len ||
        memcmp(nonce, sf_nonce, nonce_len) != 0 || unb64(pp + 3, proof, sizeof proof) != 32) {
        free(final);
        goto out;
    }
    *pp = '\0'; /* client-final-without-proof */
    ds_buf_append(&auth_msg, final);
    free(final);
    if (auth_msg.failed)
        goto out;
    unsigned char salted[32], ckey[32], stored[32], sig[32], skey[32], ssig[32];
    salted_password(password ? password : "", salt, sizeof salt, SCRAM_ITERATIONS, salted);
    hmac(salted, 32, "Client Key", 10, ckey);
    SHA256(ckey, 32, stored);
    hmac(stored, 32, auth_msg.data, auth_msg.len, sig);
    for (int i = 0; i < 32; i++)
        ckey[i] = proof[i] ^ sig[i];
    unsigned char check[32];
    SHA256(ckey, 32, check);
    bool match = CRYPTO_memcmp(check, stored, 32) == 0;
    why = "wrong password";
    if (password == NULL) {
        why = "no such user in pg_users";
        goto out;
    }
    if (!match)
        goto out;
    hmac(salted, 32, "Server Key", 10, skey);
    hmac(skey, 32, auth_msg.data, auth_msg.len, ssig);
    char v[80] = "v=";
    b64(ssig, 32, v + 2);
    send_auth(c, AUTH_SASL_FINAL, v, strlen(v));
    send_auth(c, AUTH_OK, NULL, 0);
    ok = true;
    OPENSSL_cleanse(salted, sizeof salted);
    goto done;
out:
    refuse(c, started, user, err, why);
    goto done;
out_quiet:
    /* the client went away or broke the protocol: err says which */
done:
    ds_buf_free(&body);
    ds_buf_free(&server_first);
    ds_buf_free(&auth_msg);
    return ok;
}
