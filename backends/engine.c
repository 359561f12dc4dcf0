/* The engine thread: every backend transfer of the daemon runs here, on
 * one curl multi handle, so that no FUSE thread ever waits on the
 * network and thousands of jobs cost no threads.
 *
 * A job moves between four places, all owned by the engine thread:
 * incoming (filled by engine_submit under the lock), waiting (for a
 * transfer slot, max_inflight), active (a transfer in the multi handle)
 * and backoff (waiting for its retry time). Cancellations arrive through
 * a list guarded by the same lock. */
#include "backends/engine.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "backends/google_auth.h"
#include "backends/retry.h"

/* A failed response's body is kept only this far: enough for any
 * provider's error JSON, and bounded whatever the server sends. */
#define ERROR_BODY_CAP (64 * 1024)

/* A cap for the token endpoint's answer: a token and a few fields. */
#define TOKEN_BODY_CAP (16 * 1024)

enum job_place { PLACE_INCOMING, PLACE_WAITING, PLACE_ACTIVE, PLACE_BACKOFF, PLACE_TOKEN };

/* The OAuth token of one cloud whose credential is a Google service
 * account: cached, refreshed by one transfer while the jobs that need it
 * wait here (they hold no transfer slot meanwhile). */
struct cloud_token {
	const struct cloud *cloud;
	struct google_token_cache *cache;
	CURL *easy;			/* the refresh in flight, if any */
	struct http_request http;
	char *body;
	size_t body_len;
	struct engine_job *waiters;
	struct cloud_token *next;
};

struct engine_job {
	struct engine *engine;
	struct engine_plan plan;
	const struct backend *backend;
	char target[768];
	enum job_place place;
	struct engine_job *next;	/* in incoming, waiting or backoff */
	struct engine_job *prev_active, *next_active;
	struct engine_job *next_cancel;
	int cancel_requested;		/* under engine->lock */
	int in_cancel_list;		/* under engine->lock */

	int attempts;			/* started so far */
	double retry_at;		/* monotonic seconds, in backoff */

	/* The current attempt. */
	CURL *easy;
	struct http_request http;
	struct stream_parser *parser;
	struct http_response_head head;
	int head_seen;
	int body_accepted;		/* 2xx with an answer content type */
	int wrong_content_type;
	char *error_body;
	size_t error_len;
	size_t body_bytes;
	int streamed_text;
	int reported_request_id;
	size_t text_bytes;
	int sink_error;
	int parser_failed;
	int body_too_large;
	struct attempt_error error;
	double attempt_started;
	double first_text_at;
};

struct engine {
	struct engine_options opts;
	pthread_t thread;
	pthread_mutex_t lock;
	CURLM *multi;
	int stopping;			/* under lock */
	struct engine_job *incoming_head, *incoming_tail;	/* under lock */
	struct engine_job *cancels;	/* under lock */
	void (*update_fn)(void *);	/* under lock */
	void *update_arg;		/* under lock */
	unsigned n_incoming;		/* under lock */

	/* engine thread only; the counts are read under lock */
	struct engine_job *waiting_head, *waiting_tail;
	struct engine_job *backoff;
	struct engine_job *active;
	struct cloud_token *tokens;
	unsigned n_active;
	unsigned n_waiting;
	unsigned n_backoff;
	unsigned rng;
};

static double monotonic_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double random01(struct engine *e)
{
	/* xorshift: jitter needs spread, not secrecy */
	unsigned x = e->rng;

	x ^= x << 13;
	x ^= x >> 17;
	x ^= x << 5;
	e->rng = x;
	return (double)(x % 1000000u) / 1000000.0;
}

/* ---- lists owned by the engine thread ---- */

static void waiting_push(struct engine *e, struct engine_job *job)
{
	job->place = PLACE_WAITING;
	job->next = NULL;
	if (e->waiting_tail)
		e->waiting_tail->next = job;
	else
		e->waiting_head = job;
	e->waiting_tail = job;
	e->n_waiting++;
}

static struct engine_job *waiting_pop(struct engine *e)
{
	struct engine_job *job = e->waiting_head;

	if (!job)
		return NULL;
	e->waiting_head = job->next;
	if (!e->waiting_head)
		e->waiting_tail = NULL;
	job->next = NULL;
	e->n_waiting--;
	return job;
}

static void waiting_remove(struct engine *e, struct engine_job *job)
{
	struct engine_job **pp = &e->waiting_head;
	struct engine_job *prev = NULL;

	while (*pp && *pp != job) {
		prev = *pp;
		pp = &(*pp)->next;
	}
	if (!*pp)
		return;
	*pp = job->next;
	if (e->waiting_tail == job)
		e->waiting_tail = prev;
	e->n_waiting--;
}

static void backoff_remove(struct engine *e, struct engine_job *job)
{
	struct engine_job **pp = &e->backoff;

	while (*pp && *pp != job)
		pp = &(*pp)->next;
	if (!*pp)
		return;
	*pp = job->next;
	e->n_backoff--;
}

static void active_add(struct engine *e, struct engine_job *job)
{
	job->place = PLACE_ACTIVE;
	job->prev_active = NULL;
	job->next_active = e->active;
	if (e->active)
		e->active->prev_active = job;
	e->active = job;
	e->n_active++;
}

static void active_remove(struct engine *e, struct engine_job *job)
{
	if (job->prev_active)
		job->prev_active->next_active = job->next_active;
	else
		e->active = job->next_active;
	if (job->next_active)
		job->next_active->prev_active = job->prev_active;
	job->prev_active = job->next_active = NULL;
	e->n_active--;
}

/* ---- one attempt ---- */

static void attempt_release(struct engine *e, struct engine_job *job)
{
	if (job->easy) {
		curl_multi_remove_handle(e->multi, job->easy);
		curl_easy_cleanup(job->easy);
		job->easy = NULL;
	}
	if (job->parser) {
		job->backend->parser_free(job->parser);
		job->parser = NULL;
	}
	http_request_release(&job->http);
	free(job->error_body);
	job->error_body = NULL;
	job->error_len = 0;
}

/* The job ends here: the sink's done() is its last call, then the
 * engine forgets it. */
static void job_finish(struct engine *e, struct engine_job *job, int status,
		       const char *message)
{
	const struct engine_sink *sink = job->plan.sink;
	void *ctx = job->plan.sink_ctx;
	struct engine_job **pp;

	attempt_release(e, job);
	sink->done(ctx, status, message);
	pthread_mutex_lock(&e->lock);
	if (job->in_cancel_list) {
		pp = &e->cancels;
		while (*pp && *pp != job)
			pp = &(*pp)->next_cancel;
		if (*pp)
			*pp = job->next_cancel;
	}
	pthread_mutex_unlock(&e->lock);
	llm_request_release(&job->plan.request);
	free(job);
}

static int events_text(void *ctx, const char *bytes, size_t len)
{
	struct engine_job *job = ctx;
	int rc;

	if (job->sink_error)
		return job->sink_error;
	if (!job->streamed_text)
		job->first_text_at = monotonic_s();
	job->streamed_text = 1;
	job->text_bytes += len;
	if (job->text_bytes > job->engine->opts.max_answer_bytes) {
		job->sink_error = -EFBIG;
		return -EFBIG;
	}
	rc = job->plan.sink->text(job->plan.sink_ctx, bytes, len);
	if (rc < 0)
		job->sink_error = rc;
	return rc;
}

static void events_usage(void *ctx, long input_tokens, long output_tokens)
{
	struct engine_job *job = ctx;

	job->plan.sink->usage(job->plan.sink_ctx, input_tokens, output_tokens);
}

static void events_finish_reason(void *ctx, const char *reason)
{
	struct engine_job *job = ctx;

	job->plan.sink->finish_reason(job->plan.sink_ctx, reason);
}

static void events_request_id(void *ctx, const char *id)
{
	struct engine_job *job = ctx;

	job->reported_request_id = 1;
	job->plan.sink->request_id(job->plan.sink_ctx, id);
}

static const struct answer_events engine_answer_events = {
	.text = events_text,
	.usage = events_usage,
	.finish_reason = events_finish_reason,
	.request_id = events_request_id,
};

static void copy_header_value(char *dst, size_t size, const char *value, size_t len)
{
	while (len > 0 && (value[len - 1] == '\r' || value[len - 1] == '\n' ||
			   value[len - 1] == ' ' || value[len - 1] == '\t'))
		len--;
	while (len > 0 && (*value == ' ' || *value == '\t')) {
		value++;
		len--;
	}
	if (len >= size)
		len = size - 1;
	memcpy(dst, value, len);
	dst[len] = '\0';
}

static size_t on_header(char *buffer, size_t size, size_t nitems, void *userdata)
{
	static const struct {
		const char *name;
		size_t offset;
		size_t size;
	} wanted[] = {
#define FIELD(name, member) { name, offsetof(struct http_response_head, member), \
			      sizeof(((struct http_response_head *)0)->member) }
		FIELD("content-type", content_type),
		FIELD("x-request-id", request_id),
		FIELD("request-id", request_id),
		FIELD("x-amzn-requestid", request_id),
		FIELD("apim-request-id", request_id),
		FIELD("retry-after", retry_after),
		FIELD("retry-after-ms", retry_after_ms),
		FIELD("x-amzn-errortype", amzn_error_type),
		FIELD("x-should-retry", should_retry),
#undef FIELD
	};
	struct engine_job *job = userdata;
	size_t len = size * nitems;
	const char *colon;
	size_t name_len;

	if (len >= 5 && strncmp(buffer, "HTTP/", 5) == 0) {
		/* a new response (after 100-continue or a redirect) starts afresh */
		memset(&job->head, 0, sizeof(job->head));
		return len;
	}
	colon = memchr(buffer, ':', len);
	if (!colon)
		return len;
	name_len = (size_t)(colon - buffer);
	for (size_t i = 0; i < sizeof(wanted) / sizeof(wanted[0]); i++) {
		char *dst = (char *)&job->head + wanted[i].offset;

		if (strlen(wanted[i].name) != name_len ||
		    strncasecmp(buffer, wanted[i].name, name_len) != 0)
			continue;
		/* the first request id seen wins: x-request-id over the others */
		if (wanted[i].offset == offsetof(struct http_response_head, request_id) &&
		    job->head.request_id[0])
			continue;
		copy_header_value(dst, wanted[i].size, colon + 1, len - name_len - 1);
	}
	return len;
}

static int answer_content_type(const char *content_type)
{
	static const char *const accepted[] = {
		"text/event-stream",
		"application/json",
		"application/vnd.amazon.eventstream",
	};

	for (size_t i = 0; i < sizeof(accepted) / sizeof(accepted[0]); i++) {
		if (strncasecmp(content_type, accepted[i], strlen(accepted[i])) == 0)
			return 1;
	}
	return 0;
}

static void on_first_body_bytes(struct engine_job *job)
{
	long status = 0;

	curl_easy_getinfo(job->easy, CURLINFO_RESPONSE_CODE, &status);
	job->head.status = status;
	job->head_seen = 1;
	if (status >= 200 && status < 300) {
		if (answer_content_type(job->head.content_type))
			job->body_accepted = 1;
		else
			job->wrong_content_type = 1;
	}
}

static size_t on_body(char *data, size_t size, size_t nmemb, void *userdata)
{
	struct engine_job *job = userdata;
	size_t len = size * nmemb;
	size_t room;
	int rc;

	if (!job->head_seen)
		on_first_body_bytes(job);
	job->body_bytes += len;
	if (job->body_bytes > job->engine->opts.max_body_bytes) {
		job->body_too_large = 1;
		return 0;
	}
	if (job->body_accepted) {
		rc = job->backend->parser_feed(job->parser, data, len, &job->error);
		if (job->sink_error)
			return 0;
		if (rc < 0) {
			job->parser_failed = 1;
			return 0;
		}
		return len;
	}
	/* an error or unexpected body: keep a bounded prefix for the message */
	room = ERROR_BODY_CAP - job->error_len;
	if (len < room)
		room = len;
	if (room > 0) {
		char *grown = realloc(job->error_body, job->error_len + room + 1);

		if (!grown)
			return len;
		job->error_body = grown;
		memcpy(job->error_body + job->error_len, data, room);
		job->error_len += room;
		job->error_body[job->error_len] = '\0';
	}
	return len;
}

static void set_tls_options(struct engine *e, CURL *easy)
{
	curl_easy_setopt(easy, CURLOPT_SSL_VERIFYPEER, 1L);
	curl_easy_setopt(easy, CURLOPT_SSL_VERIFYHOST, 2L);
	if (e->opts.cafile) {
		/* CAINFO alone would replace the system store; with OpenSSL the
		 * system directory stays trusted through CAPATH. */
		curl_easy_setopt(easy, CURLOPT_CAINFO, e->opts.cafile);
		curl_easy_setopt(easy, CURLOPT_CAPATH, "/etc/ssl/certs");
	}
}

static int attempt_start(struct engine *e, struct engine_job *job, const char *access_token)
{
	const struct model *model = job->plan.model;
	struct backend_target target = {
		.model = model,
		.credentials = &model->region->cloud->credentials,
		.access_token = access_token,
	};
	CURL *easy;
	int rc;

	memset(&job->head, 0, sizeof(job->head));
	memset(&job->error, 0, sizeof(job->error));
	job->head_seen = job->body_accepted = job->wrong_content_type = 0;
	job->body_bytes = 0;
	job->streamed_text = job->sink_error = job->parser_failed = 0;
	job->text_bytes = 0;
	job->reported_request_id = 0;
	job->body_too_large = 0;
	job->first_text_at = 0;
	job->attempts++;

	if (!job->backend)
		return -ENOSYS;
	rc = job->backend->build_request(&target, &job->plan.request, &job->http);
	if (rc < 0)
		return rc;
	job->parser = job->backend->parser_new(&engine_answer_events, job);
	if (!job->parser)
		return -ENOMEM;
	easy = curl_easy_init();
	if (!easy)
		return -ENOMEM;
	job->easy = easy;
	curl_easy_setopt(easy, CURLOPT_URL, job->http.url);
	curl_easy_setopt(easy, CURLOPT_HTTPHEADER, job->http.headers);
	curl_easy_setopt(easy, CURLOPT_POST, 1L);
	curl_easy_setopt(easy, CURLOPT_POSTFIELDS, job->http.body);
	curl_easy_setopt(easy, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)job->http.body_len);
	curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(easy, CURLOPT_WRITEDATA, job);
	curl_easy_setopt(easy, CURLOPT_HEADERFUNCTION, on_header);
	curl_easy_setopt(easy, CURLOPT_HEADERDATA, job);
	curl_easy_setopt(easy, CURLOPT_PRIVATE, job);
	curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(easy, CURLOPT_TIMEOUT_MS, (long)(job->plan.timeout_s * 1000));
	curl_easy_setopt(easy, CURLOPT_CONNECTTIMEOUT_MS,
			 (long)(e->opts.connect_timeout_s * 1000));
	curl_easy_setopt(easy, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(easy, CURLOPT_TCP_KEEPALIVE, 1L);
	/* Expect: 100-continue would cost a round trip on every big prompt */
	job->http.headers = curl_slist_append(job->http.headers, "Expect:");
	curl_easy_setopt(easy, CURLOPT_HTTPHEADER, job->http.headers);
	set_tls_options(e, easy);

	job->attempt_started = monotonic_s();
	job->plan.sink->attempt_started(job->plan.sink_ctx, job->target);
	if (curl_multi_add_handle(e->multi, easy) != CURLM_OK)
		return -ENOMEM;
	active_add(e, job);
	return 0;
}

/* Explains a transfer that did not deliver a complete answer; 0 when it
 * did. */
static int attempt_outcome(struct engine *e, struct engine_job *job, CURLcode result)
{
	struct attempt_error *err = &job->error;

	if (job->sink_error == -EFBIG) {
		attempt_error_set(err, 0, "too_large",
				  "the answer exceeded the limit of %zu bytes (max_response_bytes)",
				  e->opts.max_answer_bytes);
		return -EIO;
	}
	if (job->body_too_large) {
		attempt_error_set(err, 0, "too_large",
				  "the provider's response exceeded the limit of %zu bytes",
				  e->opts.max_body_bytes);
		return -EIO;
	}
	if (job->sink_error) {
		attempt_error_set(err, 0, "local_error", "the answer could not be stored: %s",
				  strerror(-job->sink_error));
		return -EIO;
	}
	if (job->parser_failed)
		return -EIO;
	if (result == CURLE_OPERATION_TIMEDOUT) {
		attempt_error_set(err, 1, "timeout", "the attempt timed out after %g s",
				  job->plan.timeout_s);
		return -EIO;
	}
	if (result == CURLE_PEER_FAILED_VERIFICATION || result == CURLE_SSL_CACERT_BADFILE) {
		attempt_error_set(err, 0, "tls", "TLS verification failed: %s",
				  curl_easy_strerror(result));
		return -EIO;
	}
	if (result != CURLE_OK) {
		if (job->body_accepted)
			attempt_error_set(err, 1, "stream_cut",
					  "the connection broke while the answer streamed: %s",
					  curl_easy_strerror(result));
		else
			attempt_error_set(err, 1, "connection", "could not reach the provider: %s",
					  curl_easy_strerror(result));
		return -EIO;
	}
	if (!job->head_seen)
		on_first_body_bytes(job);
	if (job->head.status < 200 || job->head.status >= 300) {
		job->backend->classify_error(&job->head, job->error_body ? job->error_body : "",
					     job->error_len, err);
		return -EIO;
	}
	if (job->wrong_content_type) {
		attempt_error_set(err, 1, "bad_content_type",
				  "the provider answered HTTP %ld with content type '%s', not an answer",
				  job->head.status,
				  job->head.content_type[0] ? job->head.content_type : "none");
		return -EIO;
	}
	return job->backend->parser_finish(job->parser, &job->error);
}

static void attempt_failed(struct engine *e, struct engine_job *job)
{
	const struct attempt_error *err = &job->error;
	double delay;

	if (!err->retryable || job->attempts > job->plan.retries) {
		job_finish(e, job, -EIO, err->message);
		return;
	}
	if (err->retry_after_s >= 0) {
		delay = err->retry_after_s;
		if (delay > job->plan.timeout_s) {
			char message[sizeof(err->message) + 128];

			snprintf(message, sizeof(message),
				 "%s (the provider asked to wait %.0f s, longer than the %g s limit)",
				 err->message, delay, job->plan.timeout_s);
			job_finish(e, job, -EIO, message);
			return;
		}
	} else {
		delay = backoff_delay_s(job->attempts - 1, random01(e));
	}
	if (job->streamed_text)
		job->plan.sink->attempt_discarded(job->plan.sink_ctx);
	job->streamed_text = 0;
	attempt_release(e, job);
	job->place = PLACE_BACKOFF;
	job->retry_at = monotonic_s() + delay;
	job->next = e->backoff;
	e->backoff = job;
	e->n_backoff++;
}

static void attempt_done(struct engine *e, struct engine_job *job, CURLcode result)
{
	long elapsed_ms;
	int rc;

	active_remove(e, job);
	rc = attempt_outcome(e, job, result);
	elapsed_ms = (long)((monotonic_s() - job->attempt_started) * 1000);
	job->plan.sink->attempt_ended(job->plan.sink_ctx, job->target,
				      rc == 0 ? "ok" : job->error.outcome, elapsed_ms);
	if (rc == 0) {
		/* providers that keep the id in a header only (Bedrock) */
		if (!job->reported_request_id && job->head.request_id[0])
			job->plan.sink->request_id(job->plan.sink_ctx, job->head.request_id);
		job_finish(e, job, 0, NULL);
		return;
	}
	attempt_failed(e, job);
}


/* ---- OAuth tokens for service-account clouds ---- */

static int needs_oauth_token(const struct engine_job *job)
{
	const struct cloud *cloud = job->plan.model->region->cloud;

	return cloud->provider == PROVIDER_VERTEX && cloud->credentials.service_account &&
	       !cloud->credentials.bearer_token;
}

static struct cloud_token *cloud_token_for(struct engine *e, const struct cloud *cloud)
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
	ct->next = e->tokens;
	e->tokens = ct;
	return ct;
}

static size_t on_token_body(char *data, size_t size, size_t nmemb, void *userdata)
{
	struct cloud_token *ct = userdata;
	size_t len = size * nmemb;
	char *grown;

	if (ct->body_len + len > TOKEN_BODY_CAP)
		return 0;
	grown = realloc(ct->body, ct->body_len + len + 1);
	if (!grown)
		return 0;
	ct->body = grown;
	memcpy(ct->body + ct->body_len, data, len);
	ct->body_len += len;
	ct->body[ct->body_len] = '\0';
	return len;
}

static void token_transfer_release(struct engine *e, struct cloud_token *ct)
{
	if (ct->easy) {
		curl_multi_remove_handle(e->multi, ct->easy);
		curl_easy_cleanup(ct->easy);
		ct->easy = NULL;
	}
	http_request_release(&ct->http);
	if (ct->body)
		explicit_bzero(ct->body, ct->body_len);
	free(ct->body);
	ct->body = NULL;
	ct->body_len = 0;
}

/* Starts the token exchange of CT. 0 or -errno. */
static int token_transfer_start(struct engine *e, struct cloud_token *ct)
{
	int rc;

	rc = google_token_request_build(ct->cloud->credentials.service_account, time(NULL),
					&ct->http);
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
	set_tls_options(e, ct->easy);
	if (curl_multi_add_handle(e->multi, ct->easy) != CURLM_OK) {
		token_transfer_release(e, ct);
		return -ENOMEM;
	}
	return 0;
}

/* The token JOB needs: 0 with *TOKEN, 1 when JOB now waits for a
 * refresh, or -EIO with JOB's attempt error set. */
static int oauth_token_for(struct engine *e, struct engine_job *job, const char **token)
{
	struct cloud_token *ct = cloud_token_for(e, job->plan.model->region->cloud);
	int rc;

	if (!ct) {
		attempt_error_set(&job->error, 1, "auth", "out of memory for the token cache");
		return -EIO;
	}
	rc = google_token_cache_get(ct->cache, time(NULL), token);
	if (rc == 0)
		return 0;
	if (rc == -EAGAIN) {
		rc = token_transfer_start(e, ct);
		if (rc < 0) {
			google_token_cache_fail(ct->cache, strerror(-rc), time(NULL));
			attempt_error_set(&job->error, 1, "auth",
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
	attempt_error_set(&job->error, 1, "auth", "%s",
			  google_token_cache_error(ct->cache) ?: "no access token");
	return -EIO;
}

static void token_waiters_resume(struct engine *e, struct cloud_token *ct)
{
	while (ct->waiters) {
		struct engine_job *job = ct->waiters;

		ct->waiters = job->next;
		waiting_push(e, job);
	}
}

/* Returns 1 if EASY was a token exchange (now handled), else 0. */
static int token_transfer_done(struct engine *e, CURL *easy, CURLcode result)
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
		google_token_cache_fail(ct->cache, curl_easy_strerror(result), time(NULL));
	} else {
		rc = google_token_response_parse(status, ct->body ? ct->body : "", ct->body_len,
						 &token, &expires_in, &err);
		if (rc == 0)
			rc = google_token_cache_store(ct->cache, token, expires_in, time(NULL));
		if (rc < 0)
			google_token_cache_fail(ct->cache, err.message[0] ? err.message :
						"the token endpoint's answer was unusable", time(NULL));
		google_secret_free(token);
	}
	token_transfer_release(e, ct);
	token_waiters_resume(e, ct);
	return 1;
}

static void token_waiter_remove(struct engine *e, struct engine_job *job)
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

static void cloud_tokens_free(struct engine *e)
{
	while (e->tokens) {
		struct cloud_token *ct = e->tokens;

		e->tokens = ct->next;
		token_transfer_release(e, ct);
		google_token_cache_free(ct->cache);
		free(ct);
	}
}

static void start_waiting_jobs(struct engine *e)
{
	struct engine_job *job;
	int rc;

	while (e->n_active < e->opts.max_inflight) {
		const char *token = NULL;

		job = waiting_pop(e);
		if (!job)
			return;
		if (needs_oauth_token(job)) {
			rc = oauth_token_for(e, job, &token);
			if (rc == 1)
				continue;	/* parked until the refresh ends */
			if (rc < 0) {
				job->attempts++;
				job->plan.sink->attempt_started(job->plan.sink_ctx, job->target);
				job->plan.sink->attempt_ended(job->plan.sink_ctx, job->target,
							      job->error.outcome, 0);
				attempt_failed(e, job);
				continue;
			}
		}
		rc = attempt_start(e, job, token);
		if (rc < 0) {
			char message[1024];

			snprintf(message, sizeof(message),
				 "the request for %s could not be built: %s",
				 job->target, strerror(-rc));
			job_finish(e, job, -EIO, message);
		}
	}
}

static void wake_due_backoffs(struct engine *e, double now)
{
	struct engine_job **pp = &e->backoff;

	while (*pp) {
		struct engine_job *job = *pp;

		if (job->retry_at <= now) {
			*pp = job->next;
			e->n_backoff--;
			waiting_push(e, job);
		} else {
			pp = &job->next;
		}
	}
}

static void check_first_token_timeouts(struct engine *e, double now)
{
	struct engine_job *job = e->active;

	while (job) {
		struct engine_job *next = job->next_active;
		double limit = job->plan.first_token_timeout_s;

		if (limit > 0 && !job->streamed_text && now - job->attempt_started > limit) {
			active_remove(e, job);
			attempt_error_set(&job->error, 1, "first_token_timeout",
					  "no answer byte arrived within %g s", limit);
			job->plan.sink->attempt_ended(job->plan.sink_ctx, job->target,
						      job->error.outcome,
						      (long)((now - job->attempt_started) * 1000));
			attempt_failed(e, job);
		}
		job = next;
	}
}

static void cancel_job(struct engine *e, struct engine_job *job)
{
	switch (job->place) {
	case PLACE_WAITING:
		waiting_remove(e, job);
		break;
	case PLACE_BACKOFF:
		backoff_remove(e, job);
		break;
	case PLACE_ACTIVE:
		active_remove(e, job);
		job->plan.sink->attempt_ended(job->plan.sink_ctx, job->target, "cancelled",
					      (long)((monotonic_s() - job->attempt_started) * 1000));
		break;
	case PLACE_TOKEN:
		token_waiter_remove(e, job);
		break;
	case PLACE_INCOMING:
		break;
	}
	job_finish(e, job, -ECANCELED, "the job was cancelled");
}

/* Moves what other threads handed in to the engine thread's lists. */
static int take_handovers(struct engine *e)
{
	struct engine_job *incoming, *cancels, *job;
	void (*update_fn)(void *);
	void *update_arg;
	int stopping;

	pthread_mutex_lock(&e->lock);
	update_fn = e->update_fn;
	update_arg = e->update_arg;
	e->update_fn = NULL;
	incoming = e->incoming_head;
	e->incoming_head = e->incoming_tail = NULL;
	e->n_incoming = 0;
	cancels = e->cancels;
	e->cancels = NULL;
	for (job = cancels; job; job = job->next_cancel)
		job->in_cancel_list = 0;
	stopping = e->stopping;
	pthread_mutex_unlock(&e->lock);

	if (update_fn) {
		update_fn(update_arg);
		/* tokens of the old credentials must not outlive them; jobs
		 * waiting for one are requeued and ask again */
		for (struct cloud_token *ct = e->tokens; ct; ct = ct->next)
			token_waiters_resume(e, ct);
		cloud_tokens_free(e);
	}
	while (incoming) {
		job = incoming;
		incoming = job->next;
		waiting_push(e, job);
	}
	while (cancels) {
		job = cancels;
		cancels = job->next_cancel;
		cancel_job(e, job);
	}
	return stopping;
}

static int poll_timeout_ms(struct engine *e, double now)
{
	double soonest = now + 1.0;
	struct engine_job *job;

	for (job = e->backoff; job; job = job->next) {
		if (job->retry_at < soonest)
			soonest = job->retry_at;
	}
	for (job = e->active; job; job = job->next_active) {
		double limit = job->plan.first_token_timeout_s;

		if (limit > 0 && !job->streamed_text && job->attempt_started + limit < soonest)
			soonest = job->attempt_started + limit;
	}
	if (soonest <= now)
		return 0;
	return (int)((soonest - now) * 1000) + 1;
}

static void collect_finished_transfers(struct engine *e)
{
	struct engine_job *job;
	CURLMsg *msg;
	int queued;

	for (;;) {
		msg = curl_multi_info_read(e->multi, &queued);
		if (!msg)
			return;
		if (msg->msg != CURLMSG_DONE)
			continue;
		if (token_transfer_done(e, msg->easy_handle, msg->data.result))
			continue;
		job = NULL;
		curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&job);
		if (job)
			attempt_done(e, job, msg->data.result);
	}
}

static void cancel_everything(struct engine *e)
{
	struct engine_job *job;

	while (e->active)
		cancel_job(e, e->active);
	while (e->backoff) {
		job = e->backoff;
		cancel_job(e, job);
	}
	for (struct cloud_token *ct = e->tokens; ct; ct = ct->next)
		token_waiters_resume(e, ct);
	while (e->waiting_head) {
		job = e->waiting_head;
		cancel_job(e, job);
	}
	cloud_tokens_free(e);
}

static void *engine_main(void *arg)
{
	struct engine *e = arg;
	int running;
	double now;

	for (;;) {
		if (take_handovers(e))
			break;
		now = monotonic_s();
		wake_due_backoffs(e, now);
		check_first_token_timeouts(e, now);
		start_waiting_jobs(e);
		curl_multi_perform(e->multi, &running);
		collect_finished_transfers(e);
		/* finished transfers free slots: start more before sleeping */
		start_waiting_jobs(e);
		curl_multi_poll(e->multi, NULL, 0, poll_timeout_ms(e, monotonic_s()), NULL);
	}
	/* take what arrived with the stop request, then end it all */
	take_handovers(e);
	cancel_everything(e);
	return NULL;
}

struct engine *engine_new(const struct engine_options *opts, int *err_out)
{
	struct engine *e;
	int rc;

	e = calloc(1, sizeof(*e));
	if (!e) {
		*err_out = -ENOMEM;
		return NULL;
	}
	e->opts = *opts;
	if (e->opts.max_inflight == 0)
		e->opts.max_inflight = 1;
	e->rng = (unsigned)time(NULL) ^ ((unsigned)getpid() << 16) ^ 0x9e3779b9u;
	if (e->rng == 0)
		e->rng = 1;
	pthread_mutex_init(&e->lock, NULL);
	e->multi = curl_multi_init();
	if (!e->multi) {
		rc = -ENOMEM;
		goto err_lock;
	}
	/* keep-alive connections for every job in flight, not curl's default 4x */
	curl_multi_setopt(e->multi, CURLMOPT_MAXCONNECTS, (long)e->opts.max_inflight);
	curl_multi_setopt(e->multi, CURLMOPT_PIPELINING, (long)CURLPIPE_MULTIPLEX);
	rc = -pthread_create(&e->thread, NULL, engine_main, e);
	if (rc < 0)
		goto err_multi;
	return e;

err_multi:
	curl_multi_cleanup(e->multi);
err_lock:
	pthread_mutex_destroy(&e->lock);
	free(e);
	*err_out = rc;
	return NULL;
}

void engine_free(struct engine *e)
{
	if (!e)
		return;
	pthread_mutex_lock(&e->lock);
	e->stopping = 1;
	pthread_mutex_unlock(&e->lock);
	curl_multi_wakeup(e->multi);
	pthread_join(e->thread, NULL);
	curl_multi_cleanup(e->multi);
	pthread_mutex_destroy(&e->lock);
	free(e);
}

struct engine_job *engine_submit(struct engine *e, struct engine_plan *plan)
{
	const struct model *model = plan->model;
	struct engine_job *job;

	job = calloc(1, sizeof(*job));
	if (!job) {
		llm_request_release(&plan->request);
		return NULL;
	}
	job->engine = e;
	job->plan = *plan;
	memset(&plan->request, 0, sizeof(plan->request));
	job->backend = backend_for(model->region->cloud->provider);
	snprintf(job->target, sizeof(job->target), "%s/%s/%s",
		 model->region->cloud->name, model->region->name, model->name);
	job->place = PLACE_INCOMING;
	if (!job->backend) {
		/* reported on the engine thread like any other failure */
		job->plan.retries = 0;
	}

	pthread_mutex_lock(&e->lock);
	if (e->incoming_tail)
		e->incoming_tail->next = job;
	else
		e->incoming_head = job;
	e->incoming_tail = job;
	e->n_incoming++;
	pthread_mutex_unlock(&e->lock);
	curl_multi_wakeup(e->multi);
	return job;
}

void engine_cancel(struct engine *e, struct engine_job *job)
{
	pthread_mutex_lock(&e->lock);
	if (!job->cancel_requested) {
		job->cancel_requested = 1;
		job->in_cancel_list = 1;
		job->next_cancel = e->cancels;
		e->cancels = job;
	}
	pthread_mutex_unlock(&e->lock);
	curl_multi_wakeup(e->multi);
}

int engine_run_credentials_update(struct engine *e, void (*fn)(void *arg), void *arg)
{
	int rc = 0;

	pthread_mutex_lock(&e->lock);
	if (e->update_fn)
		rc = -EBUSY;	/* the previous one has not run yet */
	else {
		e->update_fn = fn;
		e->update_arg = arg;
	}
	pthread_mutex_unlock(&e->lock);
	curl_multi_wakeup(e->multi);
	return rc;
}

void engine_counts(struct engine *e, unsigned *inflight, unsigned *waiting)
{
	/* read without the engine thread's cooperation: a snapshot, not exact */
	pthread_mutex_lock(&e->lock);
	*inflight = __atomic_load_n(&e->n_active, __ATOMIC_RELAXED);
	*waiting = __atomic_load_n(&e->n_waiting, __ATOMIC_RELAXED) +
		   __atomic_load_n(&e->n_backoff, __ATOMIC_RELAXED) + e->n_incoming;
	pthread_mutex_unlock(&e->lock);
}
