/* Google service-account OAuth2 (see google_auth.h). */
#include "backends/google_auth.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>
#include <jansson.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include "backends/retry.h"
#include "backends/wire_util.h"

#define TOKEN_GRANT_PREFIX \
	"grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion="

/* Longest token lifetime believed; a larger expires_in is clamped so a
 * confused endpoint cannot pin a token for days. */
#define TOKEN_MAX_LIFETIME_S 86400L

void google_secret_free(char *secret)
{
	if (!secret)
		return;
	explicit_bzero(secret, strlen(secret));
	free(secret);
}

/* base64url without padding (RFC 7515 §2). NULL on allocation failure. */
static char *base64url_encode(const unsigned char *bytes, size_t len)
{
	char *out;
	int n;
	int i;

	if (len > (size_t)INT_MAX / 2)
		return NULL;
	out = malloc(4 * ((len + 2) / 3) + 1);
	if (!out)
		return NULL;
	n = EVP_EncodeBlock((unsigned char *)out, bytes, (int)len);
	while (n > 0 && out[n - 1] == '=')
		n--;
	out[n] = '\0';
	for (i = 0; i < n; i++) {
		if (out[i] == '+')
			out[i] = '-';
		else if (out[i] == '/')
			out[i] = '_';
	}
	return out;
}

static char *json_base64url(json_t *value)
{
	char *text;
	char *encoded = NULL;

	if (!value)
		return NULL;
	text = json_dumps(value, JSON_COMPACT);
	if (text) {
		encoded = base64url_encode((const unsigned char *)text, strlen(text));
		free(text);
	}
	return encoded;
}

/* An encrypted key would make OpenSSL ask for a passphrase on the
 * terminal; a daemon has nobody to ask. */
static int refuse_passphrase(char *buf, int size, int rwflag, void *userdata)
{
	(void)buf;
	(void)size;
	(void)rwflag;
	(void)userdata;
	return -1;
}

/* RSASSA-PKCS1-v1_5 with SHA-256 of DATA under the PEM key. */
static int rs256_sign(const char *pem, const char *data, size_t len, unsigned char **sig_out,
		      size_t *sig_len_out)
{
	BIO *bio = NULL;
	EVP_PKEY *key = NULL;
	EVP_MD_CTX *md = NULL;
	unsigned char *sig = NULL;
	size_t sig_len = 0;
	int rc = -EINVAL;

	bio = BIO_new_mem_buf(pem, -1);
	if (!bio) {
		rc = -ENOMEM;
		goto out;
	}
	key = PEM_read_bio_PrivateKey(bio, NULL, refuse_passphrase, NULL);
	if (!key || !EVP_PKEY_is_a(key, "RSA"))
		goto out;
	md = EVP_MD_CTX_new();
	if (!md) {
		rc = -ENOMEM;
		goto out;
	}
	if (EVP_DigestSignInit(md, NULL, EVP_sha256(), NULL, key) != 1)
		goto out;
	if (EVP_DigestSign(md, NULL, &sig_len, (const unsigned char *)data, len) != 1)
		goto out;
	sig = malloc(sig_len);
	if (!sig) {
		rc = -ENOMEM;
		goto out;
	}
	if (EVP_DigestSign(md, sig, &sig_len, (const unsigned char *)data, len) != 1)
		goto out;
	*sig_out = sig;
	*sig_len_out = sig_len;
	sig = NULL;
	rc = 0;
out:
	free(sig);
	EVP_MD_CTX_free(md);
	EVP_PKEY_free(key);
	BIO_free(bio);
	/* Leave no stale errors behind for the TLS code that runs next on
	 * this thread. */
	ERR_clear_error();
	return rc;
}

static const char *token_uri_of(const struct google_service_account *sa)
{
	if (sa->token_uri && sa->token_uri[0])
		return sa->token_uri;
	return GOOGLE_DEFAULT_TOKEN_URI;
}

int google_jwt_assertion(const struct google_service_account *sa, time_t now, char **out)
{
	json_t *header = NULL;
	json_t *claims = NULL;
	char *header_b64 = NULL;
	char *claims_b64 = NULL;
	char *signing_input = NULL;
	unsigned char *sig = NULL;
	size_t sig_len = 0;
	char *sig_b64 = NULL;
	char *jwt = NULL;
	int rc;

	*out = NULL;
	if (!sa || !sa->client_email || !sa->private_key_pem || !sa->client_email[0]) {
		rc = -EINVAL;
		goto out;
	}
	header = json_pack("{s:s, s:s}", "alg", "RS256", "typ", "JWT");
	if (header && sa->private_key_id && sa->private_key_id[0] &&
	    json_object_set_new(header, "kid", json_string(sa->private_key_id)) != 0) {
		rc = -ENOMEM;
		goto out;
	}
	claims = json_pack("{s:s, s:s, s:s, s:I, s:I}", "iss", sa->client_email, "scope",
			   GOOGLE_OAUTH_SCOPE, "aud", token_uri_of(sa), "iat", (json_int_t)now,
			   "exp", (json_int_t)now + GOOGLE_ASSERTION_LIFETIME_S);
	header_b64 = json_base64url(header);
	claims_b64 = json_base64url(claims);
	if (!header_b64 || !claims_b64) {
		/* json_pack fails on a client_email that is not UTF-8. */
		rc = header && !claims ? -EINVAL : -ENOMEM;
		goto out;
	}
	if (asprintf(&signing_input, "%s.%s", header_b64, claims_b64) < 0) {
		signing_input = NULL;
		rc = -ENOMEM;
		goto out;
	}
	rc = rs256_sign(sa->private_key_pem, signing_input, strlen(signing_input), &sig, &sig_len);
	if (rc < 0)
		goto out;
	sig_b64 = base64url_encode(sig, sig_len);
	if (!sig_b64) {
		rc = -ENOMEM;
		goto out;
	}
	if (asprintf(&jwt, "%s.%s", signing_input, sig_b64) < 0) {
		jwt = NULL;
		rc = -ENOMEM;
		goto out;
	}
	*out = jwt;
	rc = 0;
out:
	free(sig_b64);
	free(sig);
	free(signing_input);
	free(claims_b64);
	free(header_b64);
	json_decref(claims);
	json_decref(header);
	return rc;
}

int google_token_request_build(const struct google_service_account *sa, time_t now,
			       struct http_request *out)
{
	char *jwt = NULL;
	char *url = NULL;
	char *body = NULL;
	struct curl_slist *headers = NULL;
	int rc;

	memset(out, 0, sizeof(*out));
	rc = google_jwt_assertion(sa, now, &jwt);
	if (rc < 0)
		goto out;
	url = strdup(token_uri_of(sa));
	/* The assertion's alphabet (base64url and '.') needs no form
	 * escaping, so it is appended as it is. */
	if (!url || asprintf(&body, "%s%s", TOKEN_GRANT_PREFIX, jwt) < 0) {
		body = NULL;
		rc = -ENOMEM;
		goto out;
	}
	rc = http_header_append(&headers, "Content-Type: application/x-www-form-urlencoded", "");
	if (rc == 0)
		rc = http_header_append(&headers, "Accept: application/json", "");
	if (rc < 0)
		goto out;
	out->url = url;
	out->headers = headers;
	out->body = body;
	out->body_len = strlen(body);
	url = NULL;
	headers = NULL;
	body = NULL;
	rc = 0;
out:
	curl_slist_free_all(headers);
	google_secret_free(body);
	free(url);
	google_secret_free(jwt);
	return rc;
}

/* A header value must not smuggle a line end or other control bytes. */
static int token_usable(const char *token, size_t len)
{
	size_t i;

	if (len == 0 || len > GOOGLE_TOKEN_MAX_BYTES)
		return 0;
	for (i = 0; i < len; i++) {
		if ((unsigned char)token[i] <= ' ' || token[i] == 0x7f)
			return 0;
	}
	return 1;
}

/* expires_in as a number or as a string of digits; -1 if neither. */
static long expires_in_read(json_t *value)
{
	const char *text;
	char *end;
	long seconds;

	if (!value)
		return GOOGLE_ASSERTION_LIFETIME_S; /* RFC 6749 leaves it optional */
	if (json_is_integer(value))
		seconds = (long)json_integer_value(value);
	else if (json_is_real(value)) {
		/* Converting a double beyond LONG_MAX is undefined: compare
		 * first. */
		if (!(json_real_value(value) > 0))
			return -1;
		if (json_real_value(value) > TOKEN_MAX_LIFETIME_S)
			return TOKEN_MAX_LIFETIME_S;
		seconds = (long)json_real_value(value);
	} else if (json_is_string(value)) {
		text = json_string_value(value);
		errno = 0;
		seconds = strtol(text, &end, 10);
		if (errno || end == text || *end)
			return -1;
	} else
		return -1;
	if (seconds <= 0)
		return -1;
	return seconds > TOKEN_MAX_LIFETIME_S ? TOKEN_MAX_LIFETIME_S : seconds;
}

static int google_error_retryable(long status, const char *code)
{
	static const char *const transient[] = {
		"internal_failure",
		"server_error",
		"temporarily_unavailable",
	};

	if (status >= 500 || http_status_retryable(status))
		return 1;
	return word_is_one_of(code, transient, sizeof(transient) / sizeof(transient[0]));
}

static void token_error_explain(long status, json_t *root, struct attempt_error *err)
{
	const char *code = NULL;
	const char *description = NULL;
	enum outcome outcome;

	if (json_is_object(root)) {
		code = json_string_value(json_object_get(root, "error"));
		description = json_string_value(json_object_get(root, "error_description"));
	}
	outcome = google_error_retryable(status, code) ? OUTCOME_TOKEN_UNAVAILABLE
						       : OUTCOME_TOKEN_REJECTED;
	/* The endpoint's error and error_description may hold line ends:
	 * the sentence is flattened. */
	http_error_explain(err, outcome, status, "Google OAuth token endpoint", code, description);
}

int google_token_response_parse(long status, const char *body, size_t len, char **access_token,
				long *expires_in, struct attempt_error *err)
{
	json_t *root = NULL;
	json_t *token_value;
	const char *token;
	size_t token_len;
	long seconds;
	char *copy = NULL;
	int rc = -EIO;

	*access_token = NULL;
	*expires_in = 0;
	if (body && len)
		root = json_loadb(body, len, 0, NULL);
	if (status < 200 || status > 299) {
		token_error_explain(status, root, err);
		goto out;
	}
	token_value = json_object_get(root, "access_token");
	token = json_string_value(token_value);
	token_len = json_string_length(token_value);
	seconds = expires_in_read(json_object_get(root, "expires_in"));
	if (!token || !token_usable(token, token_len) || seconds < 0) {
		attempt_error_set(
			err, OUTCOME_TOKEN_REJECTED,
			"Google OAuth token endpoint sent an answer without a usable access token");
		err->retry_after_s = -1;
		goto out;
	}
	copy = strdup(token);
	if (!copy) {
		attempt_error_set(err, OUTCOME_NO_MEMORY,
				  "out of memory reading the Google OAuth token");
		err->retry_after_s = -1;
		goto out;
	}
	*access_token = copy;
	*expires_in = seconds;
	rc = 0;
out:
	token_value = json_object_get(root, "access_token");
	if (json_is_string(token_value)) {
		/* jansson frees without wiping; its copy of the token is
		 * wiped here, the only place that still knows where it is. */
		explicit_bzero((char *)json_string_value(token_value),
			       json_string_length(token_value));
	}
	json_decref(root);
	return rc;
}

double google_token_refresh_after(long lifetime)
{
	double early = (double)lifetime - GOOGLE_TOKEN_REFRESH_EARLY_S;
	double fraction = (double)lifetime * GOOGLE_TOKEN_REFRESH_FRACTION;
	double after = early > fraction ? early : fraction;

	return after > GOOGLE_TOKEN_REFRESH_FLOOR_S ? after : GOOGLE_TOKEN_REFRESH_FLOOR_S;
}

double google_token_lend_for(long lifetime)
{
	double margin = (double)lifetime - GOOGLE_TOKEN_MIN_LEFT_S;
	double fraction = (double)lifetime * GOOGLE_TOKEN_LEND_FRACTION;
	double lend = margin > fraction ? margin : fraction;
	double refresh = google_token_refresh_after(lifetime);

	return lend > refresh ? lend : refresh;
}

struct google_token_cache {
	char *token;		 /* secret; NULL before the first refresh */
	double refresh_at;	 /* renew the token from then on */
	double lend_until;	 /* while renewing, lend the old token until then */
	int refreshing;		 /* a caller got -EAGAIN and has not reported */
	double refresh_deadline; /* a silent refresher is given up after this */
	double failed_until;	 /* fail fast until then after a failed refresh */
	char error[sizeof(((struct attempt_error *)0)->message)];
};

struct google_token_cache *google_token_cache_new(void)
{
	return calloc(1, sizeof(struct google_token_cache));
}

void google_token_cache_free(struct google_token_cache *cache)
{
	if (!cache)
		return;
	google_secret_free(cache->token);
	free(cache);
}

int google_token_cache_get(struct google_token_cache *cache, double now, const char **token)
{
	int lendable = cache->token && now < cache->lend_until;
	int rc;

	*token = NULL;
	if (cache->token && now < cache->refresh_at) {
		rc = 0;
		goto out;
	}
	if (cache->refreshing && now < cache->refresh_deadline) {
		/* The old token still serves while its successor is fetched. */
		rc = lendable ? 0 : -EINPROGRESS;
		goto out;
	}
	if (!cache->refreshing && now < cache->failed_until) {
		rc = lendable ? 0 : -EIO;
		goto out;
	}
	cache->refreshing = 1;
	cache->refresh_deadline = now + GOOGLE_TOKEN_REFRESH_TIMEOUT_S;
	rc = -EAGAIN;
out:
	if (rc == 0)
		*token = cache->token;
	return rc;
}

int google_token_cache_store(struct google_token_cache *cache, const char *token, long expires_in,
			     double now)
{
	char *copy;

	if (!token || !token_usable(token, strlen(token)) || expires_in <= 0)
		return -EINVAL;
	copy = strdup(token);
	if (!copy)
		return -ENOMEM;
	google_secret_free(cache->token);
	cache->token = copy;
	if (expires_in > TOKEN_MAX_LIFETIME_S)
		expires_in = TOKEN_MAX_LIFETIME_S;
	/* NOW is when the answer arrived, a little after the endpoint
	 * started the token's clock: the lend fraction's margin covers the
	 * round trip. */
	cache->refresh_at = now + google_token_refresh_after(expires_in);
	cache->lend_until = now + google_token_lend_for(expires_in);
	cache->refreshing = 0;
	cache->failed_until = 0;
	cache->error[0] = '\0';
	return 0;
}

void google_token_cache_fail(struct google_token_cache *cache, const char *message, double now)
{
	cache->refreshing = 0;
	cache->failed_until = now + GOOGLE_TOKEN_FAIL_BACKOFF_S;
	snprintf(cache->error, sizeof(cache->error), "%s",
		 message && message[0] ? message : "the Google OAuth token could not be fetched");
}

const char *google_token_cache_error(const struct google_token_cache *cache)
{
	return cache->error;
}
