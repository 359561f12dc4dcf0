/* Google service-account OAuth2: the JWT bearer flow (RFC 7523) that
 * turns a service account key into an access token for Vertex AI.
 *
 * The engine mints a signed assertion from the key, sends it to the
 * key's token_uri as an ordinary transfer, and keeps the token it gets
 * in a google_token_cache until shortly before it expires.
 *
 * Threads: nothing here takes a lock. A cache belongs to the single
 * engine thread (one cache per cloud); the other functions are pure.
 *
 * Secrets: the private key, the assertion and the access token are never
 * logged, and every buffer that held one is wiped before it is freed. */
#ifndef PROMPTFS_GOOGLE_AUTH_H
#define PROMPTFS_GOOGLE_AUTH_H

#include <stddef.h>
#include <time.h>

#include "backends/backend.h"
#include "mountopts/config.h"

#define GOOGLE_OAUTH_SCOPE "https://www.googleapis.com/auth/cloud-platform"
#define GOOGLE_DEFAULT_TOKEN_URI "https://oauth2.googleapis.com/token"
/* Google refuses assertions meant to live longer than an hour. */
#define GOOGLE_ASSERTION_LIFETIME_S 3600
/* When a token is renewed (google_token_refresh_after): five minutes
 * before it ends, so a request never starts with a token that could
 * expire while it streams... */
#define GOOGLE_TOKEN_REFRESH_EARLY_S 300
/* ...or, when that leaves less, after this fraction of its life: an
 * endpoint may grant tokens shorter than the margin above, and any
 * lifetime it grants must be usable. */
#define GOOGLE_TOKEN_REFRESH_FRACTION 0.75
/* ...and never sooner than this after the token arrived, so no lifetime
 * makes the engine fetch tokens in a loop. */
#define GOOGLE_TOKEN_REFRESH_FLOOR_S 1.0
/* While a refresh runs (or after it failed), other requests may still
 * use the old token until it has this much left... */
#define GOOGLE_TOKEN_MIN_LEFT_S 60
/* ...or, for a short-lived token, until this fraction of its life has
 * passed, whichever is later (google_token_lend_for). */
#define GOOGLE_TOKEN_LEND_FRACTION 0.875
/* A refresh whose caller never reported back is given up after this. */
#define GOOGLE_TOKEN_REFRESH_TIMEOUT_S 60
/* After a failed refresh, requests fail at once for this long instead of
 * each hammering the token endpoint. */
#define GOOGLE_TOKEN_FAIL_BACKOFF_S 10
/* Longest access token accepted (Google's are a few hundred bytes). */
#define GOOGLE_TOKEN_MAX_BYTES 4096

/* The signed assertion (header.claims.signature, base64url) for SA at
 * NOW. Returns 0 and *OUT (caller frees with google_secret_free), or
 * -EINVAL (key missing, unreadable, encrypted or not RSA; fields
 * missing), or -ENOMEM. */
int google_jwt_assertion(const struct google_service_account *sa, time_t now, char **out);

/* Fills OUT with the token request for SA at NOW (POST to token_uri, or
 * GOOGLE_DEFAULT_TOKEN_URI when the key names none). OUT->body holds the
 * assertion, a credential for an hour: release OUT with
 * http_request_release. Returns 0 or -errno (OUT then holds nothing). */
int google_token_request_build(const struct google_service_account *sa, time_t now,
			       struct http_request *out);

/* Reads the token endpoint's answer: HTTP STATUS and the (capped) BODY.
 * Returns 0 with *ACCESS_TOKEN (caller frees with google_secret_free)
 * and *EXPIRES_IN (seconds), or -EIO with ERR saying why (the endpoint's
 * error and error_description; 5xx, 408, 429 and Google's transient
 * error codes are retryable). */
int google_token_response_parse(long status, const char *body, size_t len, char **access_token,
				long *expires_in, struct attempt_error *err);

/* Wipes a NUL-terminated secret, then frees it. NULL is fine. */
void google_secret_free(char *secret);

/* Seconds after its arrival that a token granted for LIFETIME seconds
 * (> 0) is renewed: the later of LIFETIME - GOOGLE_TOKEN_REFRESH_EARLY_S
 * and LIFETIME * GOOGLE_TOKEN_REFRESH_FRACTION, at least
 * GOOGLE_TOKEN_REFRESH_FLOOR_S. 3600 s -> 3300, 400 -> 300, 6 -> 4.5,
 * 2 -> 1.5, 1 -> 1. */
double google_token_refresh_after(long lifetime);

/* Seconds after its arrival that a token granted for LIFETIME seconds is
 * still lent to new requests while its successor is fetched: the later
 * of LIFETIME - GOOGLE_TOKEN_MIN_LEFT_S and LIFETIME *
 * GOOGLE_TOKEN_LEND_FRACTION, never before google_token_refresh_after.
 * 3600 s -> 3540, 400 -> 350, 6 -> 5.25, 2 -> 1.75, 1 -> 1. */
double google_token_lend_for(long lifetime);

/* One cloud's access token and the state of its renewal. Its times
 * (NOW below) are seconds on any clock that never goes back; the engine
 * uses CLOCK_MONOTONIC, so a wall-clock step cannot age a token. */
struct google_token_cache;

/* An empty cache; NULL on allocation failure. Free with
 * google_token_cache_free (which wipes the token). */
struct google_token_cache *google_token_cache_new(void);
void google_token_cache_free(struct google_token_cache *cache);

/* The token to use for a request starting at NOW:
 *   0            *TOKEN is borrowed, valid until the next call that
 *                changes the cache;
 *   -EAGAIN      a refresh is needed and the caller now owns it: it runs
 *                the token request and reports with _store or _fail;
 *   -EINPROGRESS another caller's refresh is running and no usable token
 *                is left: wait for its _store or _fail, then ask again;
 *   -EIO         the last refresh failed moments ago:
 *                google_token_cache_error() says why.
 * *TOKEN is NULL unless 0 is returned. */
int google_token_cache_get(struct google_token_cache *cache, double now, const char **token);

/* A refresh succeeded at NOW: TOKEN (copied) lives EXPIRES_IN seconds.
 * Returns 0, -EINVAL (empty, oversized or unusable token), -ENOMEM. */
int google_token_cache_store(struct google_token_cache *cache, const char *token, long expires_in,
			     double now);

/* A refresh failed at NOW because of MESSAGE (copied, truncated). */
void google_token_cache_fail(struct google_token_cache *cache, const char *message, double now);

/* Why the last refresh failed; "" if it did not. Borrowed. */
const char *google_token_cache_error(const struct google_token_cache *cache);

#endif
