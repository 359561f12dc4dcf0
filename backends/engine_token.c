/* OAuth tokens for clouds whose credential is a Google service account:
 * one cache and at most one refresh transfer per cloud; jobs that need a
 * token wait on their cloud meanwhile, holding no transfer slot. Engine
 * thread only. */
#include "backends/engine_internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backends/google_auth.h"

static struct cloud_token *cloud_token_for(struct engine *e, const struct cloud *cloud,
					   const struct google_service_account *account)
{
	struct cloud_token *ct;

	for (ct = e->tokens; ct; ct = ct->next) {
		if (ct->cloud == cloud)
			return ct;
	}
	ct = calloc(1, sizeof(*ct));
	if (!ct)
		return NULL;
	ct->cache = google_token_cache_new();
	if (!ct->cache) {
		free(ct);
		return NULL;
	}
	ct->cloud = cloud;
	ct->account = account;
	capped_buffer_init(&ct->body, TOKEN_BODY_CAP);
	ct->next = e->tokens;
	e->tokens = ct;
	return ct;
}

static size_t on_token_body(char *data, size_t size, size_t nmemb, void *userdata)
{
	struct cloud_token *ct = userdata;
	size_t len = size * nmemb;

	return capped_buffer_append(&ct->body, data, len) == 0 ? len : 0;
}

static void token_transfer_release(struct engine *e, struct cloud_token *ct)
{
	if (ct->easy) {
		curl_multi_remove_handle(e->multi, ct->easy);
		curl_easy_cleanup(ct->easy);
		ct->easy = NULL;
	}
	http_request_release(&ct->http);
	if (ct->body.data)
		explicit_bzero(ct->body.data, ct->body.len);
	capped_buffer_release(&ct->body);
}

/* Starts the token exchange of CT. 0 or -errno. */
static int token_transfer_start(struct engine *e, struct cloud_token *ct)
{
	int rc;

	rc = google_token_request_build(ct->account, time(NULL), &ct->http);
	if (rc < 0)
		return rc;
	ct->easy = curl_easy_init();
	if (!ct->easy) {
		http_request_release(&ct->http);
		return -ENOMEM;
	}
	curl_easy_setopt(ct->easy, CURLOPT_URL, ct->http.url);
	curl_easy_setopt(ct->easy, CURLOPT_HTTPHEADER, ct->http.headers);
	curl_easy_setopt(ct->easy, CURLOPT_POST, 1L);
	curl_easy_setopt(ct->easy, CURLOPT_POSTFIELDS, ct->http.body);
	curl_easy_setopt(ct->easy, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)ct->http.body_len);
	curl_easy_setopt(ct->easy, CURLOPT_WRITEFUNCTION, on_token_body);
	curl_easy_setopt(ct->easy, CURLOPT_WRITEDATA, ct);
	curl_easy_setopt(ct->easy, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(ct->easy, CURLOPT_TIMEOUT_MS, (long)GOOGLE_TOKEN_REFRESH_TIMEOUT_S * 1000);
	curl_easy_setopt(ct->easy, CURLOPT_CONNECTTIMEOUT_MS,
			 (long)(e->opts.connect_timeout_s * 1000));
	curl_easy_setopt(ct->easy, CURLOPT_PROTOCOLS_STR, "http,https");
	engine_set_tls_options(e, ct->easy);
	if (curl_multi_add_handle(e->multi, ct->easy) != CURLM_OK) {
		token_transfer_release(e, ct);
		return -ENOMEM;
	}
	return 0;
}

int engine_oauth_token_for(struct engine *e, struct engine_job *job, const char **token)
{
	const struct cloud *cloud = job->model->region->cloud;
	const struct google_service_account *account = NULL;
	struct cloud_token *ct;
	int rc;

	*token = NULL;
	if (job->backend && job->backend->oauth_account)
		account = job->backend->oauth_account(cloud);
	if (!account)
		return 0;
	ct = cloud_token_for(e, cloud, account);
	if (!ct) {
		attempt_error_set(&job->error, OUTCOME_NO_MEMORY,
				  "out of memory for the token cache");
		return -EIO;
	}
	rc = google_token_cache_get(ct->cache, engine_now(), token);
	if (rc == 0)
		return 0;
	if (rc == -EAGAIN) {
		rc = token_transfer_start(e, ct);
		if (rc < 0) {
			google_token_cache_fail(ct->cache, strerror(-rc), engine_now());
			attempt_error_set(
				&job->error, OUTCOME_TOKEN_UNAVAILABLE,
				"the Google service account token could not be requested: %s",
				strerror(-rc));
			return -EIO;
		}
		rc = -EINPROGRESS;
	}
	if (rc == -EINPROGRESS) {
		job->place = PLACE_TOKEN;
		job->next = ct->waiters;
		ct->waiters = job;
		return 1;
	}
	attempt_error_set(&job->error, OUTCOME_TOKEN_UNAVAILABLE, "%s",
			  google_token_cache_error(ct->cache) ?: "no access token");
	return -EIO;
}

void engine_token_waiters_resume(struct engine *e, struct cloud_token *ct)
{
	while (ct->waiters) {
		struct engine_job *job = ct->waiters;

		ct->waiters = job->next;
		engine_waiting_push(e, job);
	}
}

/* Returns 1 if EASY was a token exchange (now handled), else 0. */
int engine_token_transfer_done(struct engine *e, CURL *easy, CURLcode result)
{
	struct attempt_error err = { 0 };
	struct cloud_token *ct;
	char *token = NULL;
	long status = 0, expires_in = 0;
	int rc;

	for (ct = e->tokens; ct && ct->easy != easy; ct = ct->next)
		;
	if (!ct)
		return 0;
	curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &status);
	if (result != CURLE_OK) {
		google_token_cache_fail(ct->cache, curl_easy_strerror(result), engine_now());
	} else {
		rc = google_token_response_parse(status, ct->body.data ? ct->body.data : "",
						 ct->body.len, &token, &expires_in, &err);
		if (rc == 0)
			rc = google_token_cache_store(ct->cache, token, expires_in, engine_now());
		if (rc < 0)
			google_token_cache_fail(
				ct->cache,
				err.message[0] ? err.message
					       : "the token endpoint's answer was unusable",
				engine_now());
		google_secret_free(token);
	}
	token_transfer_release(e, ct);
	engine_token_waiters_resume(e, ct);
	return 1;
}

void engine_token_waiter_remove(struct engine *e, struct engine_job *job)
{
	for (struct cloud_token *ct = e->tokens; ct; ct = ct->next) {
		struct engine_job **pp = &ct->waiters;

		while (*pp && *pp != job)
			pp = &(*pp)->next;
		if (*pp) {
			*pp = job->next;
			return;
		}
	}
}

void engine_tokens_free(struct engine *e)
{
	while (e->tokens) {
		struct cloud_token *ct = e->tokens;

		e->tokens = ct->next;
		token_transfer_release(e, ct);
		google_token_cache_free(ct->cache);
		free(ct);
	}
}
