/* Unit tests of Google service-account OAuth: the signed assertion, the
 * token exchange, and the token cache. The RSA key is made at test time,
 * so no private key is kept in the repository. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>

#include <cmocka.h>
#include <jansson.h>
#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include "backends/google_auth.h"

#define NOW ((time_t)1764151200) /* 2025-11-26T10:00:00Z */

struct fixture {
	EVP_PKEY *key;
	char *pem;
	struct google_service_account sa;
};

static char *pem_of(EVP_PKEY *key, const EVP_CIPHER *cipher, const char *passphrase)
{
	BIO *bio = BIO_new(BIO_s_mem());
	char *data;
	long len;
	char *pem;

	assert_non_null(bio);
	assert_int_equal(
		PEM_write_bio_PKCS8PrivateKey(bio, key, cipher, NULL, 0, NULL, (void *)passphrase),
		1);
	len = BIO_get_mem_data(bio, &data);
	pem = strndup(data, (size_t)len);
	assert_non_null(pem);
	BIO_free(bio);
	return pem;
}

static int fixture_setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));

	if (!f)
		return -1;
	f->key = EVP_RSA_gen(2048);
	if (!f->key)
		return -1;
	f->pem = pem_of(f->key, NULL, NULL);
	f->sa.client_email = "promptfs@acme-prod.iam.gserviceaccount.com";
	f->sa.private_key_pem = f->pem;
	f->sa.private_key_id = "0123456789abcdef";
	f->sa.token_uri = "https://oauth2.googleapis.com/token";
	*state = f;
	return 0;
}

static int fixture_teardown(void **state)
{
	struct fixture *f = *state;

	EVP_PKEY_free(f->key);
	free(f->pem);
	free(f);
	return 0;
}

/* ---- helpers ---------------------------------------------------------- */

/* Decodes base64url without padding; checks the alphabet on the way. */
static unsigned char *base64url_decode(const char *text, size_t len, size_t *out_len)
{
	size_t padded = (len + 3) / 4 * 4;
	char *standard = malloc(padded + 1);
	unsigned char *out = malloc(padded);
	int n;
	size_t i;

	assert_non_null(standard);
	assert_non_null(out);
	for (i = 0; i < len; i++) {
		assert_null(strchr("+/=", text[i]));
		standard[i] = text[i] == '-' ? '+' : text[i] == '_' ? '/' : text[i];
	}
	for (; i < padded; i++)
		standard[i] = '=';
	standard[padded] = '\0';
	n = EVP_DecodeBlock(out, (unsigned char *)standard, (int)padded);
	assert_true(n >= 0);
	*out_len = (size_t)n - (padded - len);
	free(standard);
	return out;
}

static json_t *json_part(const char *text, size_t len)
{
	size_t decoded_len;
	unsigned char *decoded = base64url_decode(text, len, &decoded_len);
	json_t *value = json_loadb((char *)decoded, decoded_len, 0, NULL);

	assert_non_null(value);
	free(decoded);
	return value;
}

/* Checks JWT is header.claims.signature with the expected contents and
 * a signature that KEY's public half accepts. */
static void jwt_check(const char *jwt, EVP_PKEY *key, const char *kid, const char *aud)
{
	const char *dot1 = strchr(jwt, '.');
	const char *dot2 = dot1 ? strchr(dot1 + 1, '.') : NULL;
	json_t *header;
	json_t *claims;
	unsigned char *sig;
	size_t sig_len;
	EVP_MD_CTX *md;

	assert_non_null(dot1);
	assert_non_null(dot2);
	assert_null(strchr(dot2 + 1, '.'));

	header = json_part(jwt, (size_t)(dot1 - jwt));
	assert_string_equal(json_string_value(json_object_get(header, "alg")), "RS256");
	assert_string_equal(json_string_value(json_object_get(header, "typ")), "JWT");
	if (kid)
		assert_string_equal(json_string_value(json_object_get(header, "kid")), kid);
	else
		assert_null(json_object_get(header, "kid"));
	assert_int_equal(json_object_size(header), kid ? 3 : 2);

	claims = json_part(dot1 + 1, (size_t)(dot2 - dot1 - 1));
	assert_string_equal(json_string_value(json_object_get(claims, "iss")),
			    "promptfs@acme-prod.iam.gserviceaccount.com");
	assert_string_equal(json_string_value(json_object_get(claims, "scope")),
			    "https://www.googleapis.com/auth/cloud-platform");
	assert_string_equal(json_string_value(json_object_get(claims, "aud")), aud);
	assert_int_equal(json_integer_value(json_object_get(claims, "iat")), NOW);
	assert_int_equal(json_integer_value(json_object_get(claims, "exp")), NOW + 3600);
	assert_int_equal(json_object_size(claims), 5);

	sig = base64url_decode(dot2 + 1, strlen(dot2 + 1), &sig_len);
	assert_int_equal(sig_len, 256);
	md = EVP_MD_CTX_new();
	assert_non_null(md);
	assert_int_equal(EVP_DigestVerifyInit(md, NULL, EVP_sha256(), NULL, key), 1);
	assert_int_equal(EVP_DigestVerify(md, sig, sig_len, (const unsigned char *)jwt,
					  (size_t)(dot2 - jwt)),
			 1);
	/* And a single changed byte of the signed part is caught. */
	EVP_MD_CTX_reset(md);
	assert_int_equal(EVP_DigestVerifyInit(md, NULL, EVP_sha256(), NULL, key), 1);
	assert_int_equal(EVP_DigestVerify(md, sig, sig_len, (const unsigned char *)jwt,
					  (size_t)(dot2 - jwt) - 1),
			 0);
	EVP_MD_CTX_free(md);
	free(sig);
	json_decref(claims);
	json_decref(header);
}

/* ---- assertion -------------------------------------------------------- */

static void assertion_signed(void **state)
{
	struct fixture *f = *state;
	char *jwt = NULL;

	assert_int_equal(google_jwt_assertion(&f->sa, NOW, &jwt), 0);
	jwt_check(jwt, f->key, "0123456789abcdef", "https://oauth2.googleapis.com/token");
	google_secret_free(jwt);
}

static void assertion_defaults(void **state)
{
	struct fixture *f = *state;
	struct google_service_account sa = f->sa;
	char *jwt = NULL;

	/* No key id: no kid; no token_uri: Google's own. */
	sa.private_key_id = NULL;
	sa.token_uri = NULL;
	assert_int_equal(google_jwt_assertion(&sa, NOW, &jwt), 0);
	jwt_check(jwt, f->key, NULL, GOOGLE_DEFAULT_TOKEN_URI);
	google_secret_free(jwt);

	/* A fake endpoint is both the audience and the URL. */
	sa.token_uri = "http://127.0.0.1:8089/token";
	assert_int_equal(google_jwt_assertion(&sa, NOW, &jwt), 0);
	jwt_check(jwt, f->key, NULL, "http://127.0.0.1:8089/token");
	google_secret_free(jwt);
}

static void assertion_bad_keys(void **state)
{
	struct fixture *f = *state;
	struct google_service_account sa = f->sa;
	EVP_PKEY *ec_key = EVP_EC_gen("P-256");
	char *ec_pem;
	char *encrypted_pem;
	char *jwt = (char *)"untouched";

	assert_non_null(ec_key);
	ec_pem = pem_of(ec_key, NULL, NULL);
	encrypted_pem = pem_of(f->key, EVP_aes_256_cbc(), "secret");

	sa.private_key_pem = "-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n";
	assert_int_equal(google_jwt_assertion(&sa, NOW, &jwt), -EINVAL);
	assert_null(jwt);
	/* RS256 needs RSA. */
	sa.private_key_pem = ec_pem;
	assert_int_equal(google_jwt_assertion(&sa, NOW, &jwt), -EINVAL);
	/* An encrypted key fails at once instead of asking for a passphrase. */
	sa.private_key_pem = encrypted_pem;
	assert_int_equal(google_jwt_assertion(&sa, NOW, &jwt), -EINVAL);
	sa.private_key_pem = NULL;
	assert_int_equal(google_jwt_assertion(&sa, NOW, &jwt), -EINVAL);
	sa = f->sa;
	sa.client_email = NULL;
	assert_int_equal(google_jwt_assertion(&sa, NOW, &jwt), -EINVAL);

	free(encrypted_pem);
	free(ec_pem);
	EVP_PKEY_free(ec_key);
}

/* ---- token exchange --------------------------------------------------- */

static void token_request(void **state)
{
	static const char prefix[] =
		"grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion=";
	struct fixture *f = *state;
	struct http_request req;
	const struct curl_slist *h;
	int n_headers = 0;

	assert_int_equal(google_token_request_build(&f->sa, NOW, &req), 0);
	assert_string_equal(req.url, "https://oauth2.googleapis.com/token");
	for (h = req.headers; h; h = h->next)
		n_headers++;
	assert_int_equal(n_headers, 2);
	assert_string_equal(req.headers->data, "Content-Type: application/x-www-form-urlencoded");
	assert_string_equal(req.headers->next->data, "Accept: application/json");
	assert_int_equal(req.body_len, strlen(req.body));
	assert_int_equal(strncmp(req.body, prefix, strlen(prefix)), 0);
	jwt_check(req.body + strlen(prefix), f->key, "0123456789abcdef",
		  "https://oauth2.googleapis.com/token");
	http_request_release(&req);
}

static void token_request_bad_key(void **state)
{
	struct fixture *f = *state;
	struct google_service_account sa = f->sa;
	struct http_request req;

	sa.private_key_pem = "garbage";
	assert_int_equal(google_token_request_build(&sa, NOW, &req), -EINVAL);
	assert_null(req.url);
	assert_null(req.headers);
	assert_null(req.body);
}

static int token_parse(long status, const char *body, char **token, long *expires_in,
		       struct attempt_error *err)
{
	memset(err, 0, sizeof(*err));
	return google_token_response_parse(status, body, strlen(body), token, expires_in, err);
}

static void token_response_ok(void **state)
{
	struct attempt_error err;
	char *token = NULL;
	long expires_in = 0;

	(void)state;
	assert_int_equal(token_parse(200,
				     "{\"access_token\":\"ya29.c.b0Aaek\",\"expires_in\":3599,"
				     "\"token_type\":\"Bearer\"}",
				     &token, &expires_in, &err),
			 0);
	assert_string_equal(token, "ya29.c.b0Aaek");
	assert_int_equal(expires_in, 3599);
	google_secret_free(token);

	/* expires_in may come as a string. */
	assert_int_equal(token_parse(200,
				     "{\"access_token\":\"t2\",\"expires_in\":\"120\",\"token_"
				     "type\":\"Bearer\"}",
				     &token, &expires_in, &err),
			 0);
	assert_string_equal(token, "t2");
	assert_int_equal(expires_in, 120);
	google_secret_free(token);
}

static void token_response_errors(void **state)
{
	struct attempt_error err;
	char *token = (char *)"untouched";
	long expires_in = 1;

	(void)state;
	assert_int_equal(token_parse(400,
				     "{\"error\":\"invalid_grant\",\"error_description\":\"Invalid "
				     "JWT Signature.\"}",
				     &token, &expires_in, &err),
			 -EIO);
	assert_null(token);
	assert_false(outcome_retryable(err.outcome));
	assert_string_equal(ATTEMPT_ERROR_WORD(&err), "token_http_400");
	assert_string_equal(err.message, "Google OAuth token endpoint answered HTTP 400 "
					 "(invalid_grant): Invalid JWT Signature.");

	assert_int_equal(token_parse(400, "{\"error\":\"temporarily_unavailable\"}", &token,
				     &expires_in, &err),
			 -EIO);
	assert_true(outcome_retryable(err.outcome));
	assert_string_equal(
		err.message,
		"Google OAuth token endpoint answered HTTP 400 (temporarily_unavailable)");

	assert_int_equal(token_parse(503, "<html>unavailable</html>", &token, &expires_in, &err),
			 -EIO);
	assert_true(outcome_retryable(err.outcome));
	assert_string_equal(err.message, "Google OAuth token endpoint answered HTTP 503");

	/* A 200 without a usable token. */
	assert_int_equal(token_parse(200, "{\"expires_in\":3599}", &token, &expires_in, &err),
			 -EIO);
	assert_false(outcome_retryable(err.outcome));
	assert_int_equal(token_parse(200,
				     "{\"access_token\":\"a\\r\\nX-Evil: 1\",\"expires_in\":3599}",
				     &token, &expires_in, &err),
			 -EIO);
	assert_int_equal(token_parse(200, "{\"access_token\":\"a\",\"expires_in\":\"soon\"}",
				     &token, &expires_in, &err),
			 -EIO);
	assert_int_equal(token_parse(200, "not json", &token, &expires_in, &err), -EIO);
	assert_null(token);
}

/* Found by fuzzing: the endpoint's error words went into .error with
 * their line ends. */
static void token_response_error_line_end(void **state)
{
	struct attempt_error err;
	char *token = NULL;
	long expires_in = 0;

	(void)state;
	assert_int_equal(token_parse(400,
				     "{\"error\":\"\\nt\",\"error_description\":\"In\\r\\nJWT\"}",
				     &token, &expires_in, &err),
			 -EIO);
	assert_string_equal(err.message,
			    "Google OAuth token endpoint answered HTTP 400 ( t): In  JWT");
}

/* Found by fuzzing: an expires_in of 3e90 was converted to long, which
 * is undefined. Huge values are capped like large integers. */
static void token_response_huge_real_expiry(void **state)
{
	struct attempt_error err;
	char *token = NULL;
	long expires_in = 0;
	long capped;

	(void)state;
	assert_int_equal(token_parse(200, "{\"access_token\":\"t\",\"expires_in\":99999999999}",
				     &token, &expires_in, &err),
			 0);
	capped = expires_in;
	google_secret_free(token);
	assert_int_equal(token_parse(200, "{\"access_token\":\"aXv5\",\"expires_in\":3e90}", &token,
				     &expires_in, &err),
			 0);
	assert_int_equal(expires_in, capped);
	google_secret_free(token);
	assert_int_equal(token_parse(200, "{\"access_token\":\"t\",\"expires_in\":-3e90}", &token,
				     &expires_in, &err),
			 -EIO);
}

/* ---- cache ------------------------------------------------------------ */

static void cache_lifecycle(void **state)
{
	struct google_token_cache *cache = google_token_cache_new();
	const char *token = "untouched";

	(void)state;
	assert_non_null(cache);
	/* Empty: the first caller refreshes, the next ones wait for it. */
	assert_int_equal(google_token_cache_get(cache, NOW, &token), -EAGAIN);
	assert_null(token);
	assert_int_equal(google_token_cache_get(cache, NOW + 1, &token), -EINPROGRESS);
	assert_int_equal(google_token_cache_store(cache, "tok-1", 3600, NOW + 2), 0);

	/* Fresh until five minutes are left. */
	assert_int_equal(google_token_cache_get(cache, NOW + 2, &token), 0);
	assert_string_equal(token, "tok-1");
	assert_int_equal(google_token_cache_get(cache, NOW + 2 + 3600 - 301, &token), 0);
	assert_string_equal(token, "tok-1");

	/* Then renewed early; meanwhile the old token still serves. */
	assert_int_equal(google_token_cache_get(cache, NOW + 2 + 3600 - 300, &token), -EAGAIN);
	assert_int_equal(google_token_cache_get(cache, NOW + 2 + 3600 - 299, &token), 0);
	assert_string_equal(token, "tok-1");
	assert_int_equal(google_token_cache_store(cache, "tok-2", 3600, NOW + 3400), 0);
	assert_int_equal(google_token_cache_get(cache, NOW + 3400, &token), 0);
	assert_string_equal(token, "tok-2");
	google_token_cache_free(cache);
}

static void cache_expiry_and_stalled_refresh(void **state)
{
	struct google_token_cache *cache = google_token_cache_new();
	const char *token;

	(void)state;
	assert_non_null(cache);
	assert_int_equal(google_token_cache_get(cache, NOW, &token), -EAGAIN);
	assert_int_equal(google_token_cache_store(cache, "short", 400, NOW), 0);
	assert_int_equal(google_token_cache_get(cache, NOW + 299, &token), 0);
	/* Renewal due after three quarters of its life (five minutes early
	 * would leave it 100 s), lent until 7/8 of it while renewed. */
	assert_int_equal(google_token_cache_get(cache, NOW + 300, &token), -EAGAIN);
	assert_int_equal(google_token_cache_get(cache, NOW + 349, &token), 0);
	assert_int_equal(google_token_cache_get(cache, NOW + 350, &token), -EINPROGRESS);
	/* A refresher that never reports back is given up on. */
	assert_int_equal(
		google_token_cache_get(cache, NOW + 300 + GOOGLE_TOKEN_REFRESH_TIMEOUT_S, &token),
		-EAGAIN);
	google_token_cache_free(cache);
}

/* The rule of issue 9 item 7: any lifetime the endpoint grants is
 * usable, renewed at a fraction of it, never in a loop. */
static void refresh_time_rule(void **state)
{
	(void)state;
	/* Long tokens: five minutes early; shorter ones: at three quarters. */
	assert_true(google_token_refresh_after(3600) == 3300.0);
	assert_true(google_token_refresh_after(1200) == 900.0);
	assert_true(google_token_refresh_after(400) == 300.0);
	assert_true(google_token_refresh_after(303) == 227.25);
	assert_true(google_token_refresh_after(6) == 4.5);
	assert_true(google_token_refresh_after(2) == 1.5);
	/* Never sooner than the floor, even for a one-second token. */
	assert_true(google_token_refresh_after(1) == GOOGLE_TOKEN_REFRESH_FLOOR_S);
	assert_true(GOOGLE_TOKEN_REFRESH_FLOOR_S >= 1.0);

	assert_true(google_token_lend_for(3600) == 3540.0);
	assert_true(google_token_lend_for(400) == 350.0);
	assert_true(google_token_lend_for(6) == 5.25);
	assert_true(google_token_lend_for(2) == 1.75);
	assert_true(google_token_lend_for(1) == 1.0);

	for (long lifetime = 1; lifetime <= 86400; lifetime++) {
		double after = google_token_refresh_after(lifetime);
		double lend = google_token_lend_for(lifetime);

		assert_true(after >= GOOGLE_TOKEN_REFRESH_FLOOR_S);
		assert_true(after <= (double)lifetime);
		assert_true(lend >= after);
		assert_true(lend <= (double)lifetime);
	}
}

/* A token granted for 6 s (shorter than the five-minute margin) used to
 * be due for renewal the moment it arrived: every caller refreshed
 * again, about 30 tokens a second, and no job ever ran. */
static void cache_short_lived_token_is_used(void **state)
{
	struct google_token_cache *cache = google_token_cache_new();
	const char *token;
	int refreshes = 0;
	double now;

	(void)state;
	assert_non_null(cache);
	assert_int_equal(google_token_cache_get(cache, NOW, &token), -EAGAIN);
	assert_int_equal(google_token_cache_store(cache, "six", 6, NOW + 0.1), 0);
	assert_int_equal(google_token_cache_get(cache, NOW + 0.1, &token), 0);
	assert_string_equal(token, "six");
	assert_int_equal(google_token_cache_get(cache, NOW + 4.5, &token), 0);
	assert_int_equal(google_token_cache_get(cache, NOW + 4.6, &token), -EAGAIN);
	assert_int_equal(google_token_cache_get(cache, NOW + 5.3, &token), 0);
	assert_string_equal(token, "six");
	assert_int_equal(google_token_cache_get(cache, NOW + 5.4, &token), -EINPROGRESS);

	/* A caller every 10 ms for a minute, each refresh answered at once:
	 * one token per 4.5 s, the first included. */
	google_token_cache_free(cache);
	cache = google_token_cache_new();
	assert_non_null(cache);
	for (now = NOW; now < NOW + 60; now += 0.01) {
		int rc = google_token_cache_get(cache, now, &token);

		if (rc == -EAGAIN) {
			refreshes++;
			assert_int_equal(google_token_cache_store(cache, "t", 6, now), 0);
			rc = google_token_cache_get(cache, now, &token);
		}
		assert_int_equal(rc, 0);
	}
	assert_int_equal(refreshes, 14); /* 1 + floor(60 / 4.5) */

	/* A one-second token: renewed once a second, not more. */
	refreshes = 0;
	google_token_cache_free(cache);
	cache = google_token_cache_new();
	assert_non_null(cache);
	for (now = NOW; now < NOW + 10; now += 0.01) {
		if (google_token_cache_get(cache, now, &token) == -EAGAIN) {
			refreshes++;
			assert_int_equal(google_token_cache_store(cache, "t", 1, now), 0);
		}
	}
	assert_int_equal(refreshes, 10);
	google_token_cache_free(cache);
}

static void cache_failure(void **state)
{
	struct google_token_cache *cache = google_token_cache_new();
	const char *token;

	(void)state;
	assert_non_null(cache);
	assert_string_equal(google_token_cache_error(cache), "");
	assert_int_equal(google_token_cache_get(cache, NOW, &token), -EAGAIN);
	google_token_cache_fail(cache,
				"Google OAuth token endpoint answered HTTP 400 (invalid_grant): "
				"Invalid JWT Signature.",
				NOW);
	/* Fail fast for a while instead of hammering the endpoint... */
	assert_int_equal(google_token_cache_get(cache, NOW + 1, &token), -EIO);
	assert_null(token);
	assert_string_equal(google_token_cache_error(cache),
			    "Google OAuth token endpoint answered HTTP 400 (invalid_grant): "
			    "Invalid JWT Signature.");
	/* ...then try again. */
	assert_int_equal(google_token_cache_get(cache, NOW + GOOGLE_TOKEN_FAIL_BACKOFF_S, &token),
			 -EAGAIN);
	assert_int_equal(google_token_cache_store(cache, "ok", 3600, NOW + 20), 0);
	assert_string_equal(google_token_cache_error(cache), "");

	/* A failed early renewal leaves the still valid token in use. */
	assert_int_equal(google_token_cache_get(cache, NOW + 20 + 3400, &token), -EAGAIN);
	google_token_cache_fail(cache, NULL, NOW + 20 + 3400);
	assert_int_equal(google_token_cache_get(cache, NOW + 20 + 3401, &token), 0);
	assert_string_equal(token, "ok");
	assert_string_equal(google_token_cache_error(cache),
			    "the Google OAuth token could not be fetched");

	assert_int_equal(google_token_cache_store(cache, "", 3600, NOW), -EINVAL);
	assert_int_equal(google_token_cache_store(cache, "a\nb", 3600, NOW), -EINVAL);
	assert_int_equal(google_token_cache_store(cache, "ok", 0, NOW), -EINVAL);
	google_token_cache_free(cache);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(assertion_signed),
		cmocka_unit_test(assertion_defaults),
		cmocka_unit_test(assertion_bad_keys),
		cmocka_unit_test(token_request),
		cmocka_unit_test(token_request_bad_key),
		cmocka_unit_test(token_response_ok),
		cmocka_unit_test(token_response_errors),
		cmocka_unit_test(token_response_error_line_end),
		cmocka_unit_test(token_response_huge_real_expiry),
		cmocka_unit_test(cache_lifecycle),
		cmocka_unit_test(cache_expiry_and_stalled_refresh),
		cmocka_unit_test(cache_failure),
		cmocka_unit_test(refresh_time_rule),
		cmocka_unit_test(cache_short_lived_token_is_used),
	};

	return cmocka_run_group_tests(tests, fixture_setup, fixture_teardown);
}
