/* One attempt of one job on one candidate deployment: it begins
 * (engine_attempt_begin), its HTTP request is built by the candidate's
 * backend, the response's headers and body go to the backend's parser,
 * and it ends exactly once (engine_attempt_end) with an outcome from
 * outcome.h, which engine.c turns into the next step. Engine thread
 * only. */
#include "backends/engine_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "backends/metrics.h"
#include "backends/retry.h"

void engine_attempt_release(struct engine *e, struct engine_job *job)
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
	capped_buffer_release(&job->error_body);
}

static int events_text(void *ctx, const char *bytes, size_t len)
{
	struct engine_job *job = ctx;
	int rc;

	if (job->sink_error)
		return job->sink_error;
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

/* A filtered answer is truncated: the attempt will end as
 * OUTCOME_CONTENT_FILTER whatever the stream does next (attempt_outcome). */
static void events_finish_reason(void *ctx, enum finish_reason reason, const char *word)
{
	struct engine_job *job = ctx;

	job->finish = reason;
	if (reason == FINISH_FILTERED)
		snprintf(job->filter_detail, sizeof(job->filter_detail), "%s",
			 word ? word : "the provider's content filter");
	job->plan.sink->finish_reason(job->plan.sink_ctx, reason, word);
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
	/* clang-format off */
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
		/* clang-format on */
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
	if (name_len > 6 &&
	    (strncasecmp(buffer, "x-rate", 6) == 0 ||
	     strncasecmp(buffer, "anthropic-ratelimit", name_len < 19 ? name_len : 19) == 0)) {
		char value[64];

		copy_header_value(value, sizeof(value), colon + 1, len - name_len - 1);
		ratelimit_header_take(&job->ratelimit, buffer, name_len, value);
		return len;
	}
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
	room = job->error_body.cap - job->error_body.len;
	(void)capped_buffer_append(&job->error_body, data, len < room ? len : room);
	return len;
}

void engine_set_tls_options(struct engine *e, CURL *easy)
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

/* Forgets what the previous attempt saw. */
static void attempt_reset(struct engine_job *job)
{
	memset(&job->head, 0, sizeof(job->head));
	memset(&job->ratelimit, 0, sizeof(job->ratelimit));
	memset(&job->error, 0, sizeof(job->error));
	job->error.retry_after_s = -1;
	capped_buffer_init(&job->error_body, ERROR_BODY_CAP);
	job->head_seen = job->body_accepted = job->wrong_content_type = 0;
	job->body_bytes = 0;
	job->streamed_text = job->sink_error = job->parser_failed = 0;
	job->text_bytes = 0;
	job->reported_request_id = 0;
	job->body_too_large = 0;
	job->request_sent = job->request_resent = 0;
	job->finish = FINISH_NONE;
	job->filter_detail[0] = '\0';
}

/* The start that every attempt reports, whatever comes next. */
static void attempt_announce(struct engine_job *job)
{
	job->attempts_on[job->candidate]++;
	job->attempt_started = engine_now();
	metrics_attempt_started(job->model, job->previous_model);
	job->previous_model = job->model;
	job->plan.sink->attempt_started(job->plan.sink_ctx, job->model);
}

void engine_attempt_end(struct engine *e, struct engine_job *job)
{
	struct engine_attempt_report report = {
		.model = job->model,
		.outcome = job->error.outcome,
		.http_status = job->head.status ? job->head.status : job->error.http_status,
		.elapsed_ms = (long)((engine_now() - job->attempt_started) * 1000),
		.ttfb_ms = -1,
	};
	curl_off_t ttfb_us = 0;

	if (job->place == PLACE_ACTIVE)
		engine_active_remove(e, job);
	if (job->easy &&
	    curl_easy_getinfo(job->easy, CURLINFO_STARTTRANSFER_TIME_T, &ttfb_us) == CURLE_OK &&
	    ttfb_us > 0)
		report.ttfb_ms = (long)(ttfb_us / 1000);
	engine_health_attempt_ended(e, job);
	metrics_attempt_ended(&report);
	job->plan.sink->attempt_ended(job->plan.sink_ctx, &report);
	if (!job->reported_request_id && job->head.request_id[0])
		/* providers that keep the id in a header only (Bedrock), and
		 * every HTTP error: the id a support ticket asks for */
		job->plan.sink->request_id(job->plan.sink_ctx, job->head.request_id);
	engine_attempt_release(e, job);
	engine_job_next_step(e, job);
}

void engine_attempt_begin_failed(struct engine *e, struct engine_job *job)
{
	struct attempt_error error = job->error;

	attempt_reset(job);
	job->error = error;
	attempt_announce(job);
	engine_attempt_end(e, job);
}

/* The request as this candidate gets it: the deployment's own cap on
 * the answer's tokens applies here, once, for every provider (a prompt
 * may ask for fewer, never for more). A shallow copy: the plan keeps
 * owning the members. */
static struct llm_request request_for_candidate(const struct engine_job *job)
{
	struct llm_request req = job->plan.request;

	llm_request_cap_tokens(&req, job->model->max_output_tokens);
	return req;
}

/* Called by libcurl right before it sends the request. libcurl sends
 * it again, on a fresh connection, when a reused connection died before
 * any byte of the answer ("Connection died, retrying a fresh connect"):
 * for an inference request that is a second request the provider may
 * have run and billed, sent at once, outside the retries, their back-off
 * and .meta's attempts. So one attempt is one request: the second send
 * is refused, and the attempt ends as the connection failure it was. */
static int on_prerequest(void *clientp, char *primary_ip, char *local_ip, int primary_port,
			 int local_port)
{
	struct engine_job *job = clientp;

	(void)primary_ip;
	(void)local_ip;
	(void)primary_port;
	(void)local_port;
	if (job->request_sent) {
		job->request_resent = 1;
		return CURL_PREREQFUNC_ABORT;
	}
	job->request_sent = 1;
	return CURL_PREREQFUNC_OK;
}

/* Builds the transfer of JOB's attempt. 0 or -errno. */
static int transfer_build(struct engine *e, struct engine_job *job, const char *access_token)
{
	const struct model *model = job->model;
	struct backend_target target = {
		.model = model,
		.credentials = &model->region->cloud->credentials,
		.access_token = access_token,
	};
	struct llm_request req = request_for_candidate(job);
	CURL *easy;
	int rc;

	if (!job->backend)
		return -ENOSYS;
	rc = job->backend->build_request(&target, &req, &job->http);
	if (rc < 0)
		return rc;
	job->parser = job->backend->parser_new(&engine_answer_events, job);
	if (!job->parser)
		return -ENOMEM;
	easy = curl_easy_init();
	if (!easy)
		return -ENOMEM;
	job->easy = easy;
	/* Expect: 100-continue would cost a round trip on every big prompt */
	rc = http_header_append(&job->http.headers, "Expect:", "");
	if (rc < 0)
		return rc;
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
	curl_easy_setopt(easy, CURLOPT_PREREQFUNCTION, on_prerequest);
	curl_easy_setopt(easy, CURLOPT_PREREQDATA, job);
	curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(easy, CURLOPT_TIMEOUT_MS, (long)(job->plan.timeout_s * 1000));
	curl_easy_setopt(easy, CURLOPT_CONNECTTIMEOUT_MS, (long)(e->opts.connect_timeout_s * 1000));
	curl_easy_setopt(easy, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(easy, CURLOPT_TCP_KEEPALIVE, 1L);
	engine_set_tls_options(e, easy);
	return 0;
}

void engine_attempt_begin(struct engine *e, struct engine_job *job, const char *access_token)
{
	int rc;

	attempt_reset(job);
	attempt_announce(job);
	rc = transfer_build(e, job, access_token);
	if (rc == 0 && curl_multi_add_handle(e->multi, job->easy) != CURLM_OK)
		rc = -ENOMEM;
	if (rc < 0) {
		if (rc == -ENOMEM)
			attempt_error_set(&job->error, OUTCOME_NO_MEMORY,
					  "out of memory starting the request to %s/%s/%s",
					  job->model->region->cloud->name, job->model->region->name,
					  job->model->name);
		else
			attempt_error_set(&job->error, OUTCOME_LOCAL_ERROR,
					  "the request for %s/%s/%s could not be built: %s",
					  job->model->region->cloud->name, job->model->region->name,
					  job->model->name,
					  rc == -ENOSYS ? "its provider is not built in"
							: strerror(-rc));
		engine_attempt_end(e, job);
		return;
	}
	engine_active_add(e, job);
}

/* A filtered answer is cut short, however its stream ended: -EIO with
 * JOB's error set when the attempt's answer was filtered, else 0. */
static int attempt_filtered(struct engine_job *job)
{
	if (job->finish != FINISH_FILTERED)
		return 0;
	attempt_error_set(&job->error, OUTCOME_CONTENT_FILTER, "the answer was cut short by %s",
			  job->filter_detail);
	return -EIO;
}

/* A 429 without Retry-After may still say when its limit resets, in
 * the provider's rate-limit headers: a longer wait than the one its
 * message's prose gave ("try again in 1s") wins, since the headers name
 * the limit that is spent. */
static void rate_limit_hint(struct engine_job *job)
{
	struct attempt_error *err = &job->error;
	time_t now = time(NULL);
	double reset;

	if (!outcome_rate_limited(err->outcome, job->head.status) ||
	    retry_after_parse(job->head.retry_after, job->head.retry_after_ms, now) >= 0)
		return;
	reset = ratelimit_reset_wait(&job->ratelimit, now);
	if (reset > err->retry_after_s)
		err->retry_after_s = reset;
}

/* Explains a transfer that did not deliver a complete answer; 0 when it
 * did. */
static int attempt_outcome(struct engine *e, struct engine_job *job, CURLcode result)
{
	struct attempt_error *err = &job->error;

	if (attempt_filtered(job))
		return -EIO;
	if (job->sink_error == -EFBIG) {
		attempt_error_set(err, OUTCOME_TOO_LARGE,
				  "the answer exceeded the limit of %zu bytes (max_response_bytes)",
				  e->opts.max_answer_bytes);
		return -EIO;
	}
	if (job->body_too_large) {
		attempt_error_set(err, OUTCOME_TOO_LARGE,
				  "the provider's response exceeded the limit of %zu bytes",
				  e->opts.max_body_bytes);
		return -EIO;
	}
	if (job->sink_error) {
		attempt_error_set(err, OUTCOME_LOCAL_ERROR, "the answer could not be stored: %s",
				  strerror(-job->sink_error));
		return -EIO;
	}
	if (job->parser_failed)
		return -EIO;
	if (result == CURLE_OPERATION_TIMEDOUT) {
		attempt_error_set(err, OUTCOME_TIMEOUT, "the attempt timed out after %g s",
				  job->plan.timeout_s);
		return -EIO;
	}
	if (result == CURLE_PEER_FAILED_VERIFICATION || result == CURLE_SSL_CACERT_BADFILE) {
		attempt_error_set(err, OUTCOME_TLS, "TLS verification failed: %s",
				  curl_easy_strerror(result));
		return -EIO;
	}
	if (result == CURLE_ABORTED_BY_CALLBACK && job->request_resent) {
		attempt_error_set(err, OUTCOME_CONNECTION,
				  "could not reach the provider: the connection closed before "
				  "any answer");
		return -EIO;
	}
	if (result != CURLE_OK) {
		if (job->body_accepted)
			attempt_error_set(err, OUTCOME_STREAM_CUT,
					  "the connection broke while the answer streamed: %s",
					  curl_easy_strerror(result));
		else
			attempt_error_set(err, OUTCOME_CONNECTION,
					  "could not reach the provider: %s",
					  curl_easy_strerror(result));
		return -EIO;
	}
	if (!job->head_seen)
		on_first_body_bytes(job);
	if (job->head.status < 200 || job->head.status >= 300) {
		job->backend->classify_error(&job->head,
					     job->error_body.data ? job->error_body.data : "",
					     job->error_body.len, err);
		err->outcome = outcome_refine_rejection(err->outcome, err->message);
		rate_limit_hint(job);
		return -EIO;
	}
	if (job->wrong_content_type) {
		attempt_error_set(
			err, OUTCOME_BAD_CONTENT_TYPE,
			"the provider answered HTTP %ld with content type '%s', not an answer",
			job->head.status,
			job->head.content_type[0] ? job->head.content_type : "none");
		return -EIO;
	}
	if (job->backend->parser_finish(job->parser, &job->error) < 0)
		return -EIO;
	/* the stream may report a filter only at its very end */
	return attempt_filtered(job);
}

void engine_attempt_transfer_done(struct engine *e, struct engine_job *job, CURLcode result)
{
	if (attempt_outcome(e, job, result) == 0)
		attempt_error_set(&job->error, OUTCOME_OK, "%s", "");
	engine_attempt_end(e, job);
}
