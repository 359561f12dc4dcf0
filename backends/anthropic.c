/* Anthropic Messages API, streamed (SSE with named events).
 *
 * The answer is complete at message_stop; input tokens arrive in
 * message_start, output tokens as a running total in message_delta. */
#include "backends/backend.h"

#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <curl/curl.h>
#include <jansson.h>

#include "backends/retry.h"
#include "backends/sse_answer.h"
#include "backends/wire_util.h"

#define ANTHROPIC_VERSION "2023-06-01"
/* Anthropic refuses a request without max_tokens; this is the bound
 * used when neither the prompt nor the deployment sets one. */
#define ANTHROPIC_DEFAULT_MAX_TOKENS 4096
/* One event is a few hundred bytes; this only stops a runaway. */
#define ANTHROPIC_MAX_EVENT_BYTES (1024 * 1024)
/* Cap of a 200 body that is plain JSON instead of an event stream. */
#define ANTHROPIC_MAX_JSON_BYTES (4 * 1024 * 1024)

/* ---- request ---------------------------------------------------------- */

/* The system messages joined by blank lines; NULL (and 0) when there
 * are none, -ENOMEM on allocation failure. */
static int system_text_join(const struct llm_request *req, char **out)
{
	size_t len = 0;
	size_t n = 0;
	size_t i;
	char *text;
	char *at;

	*out = NULL;
	for (i = 0; i < req->n_messages; i++) {
		if (strcmp(req->messages[i].role, "system") == 0) {
			len += strlen(req->messages[i].content) + 2;
			n++;
		}
	}
	if (n == 0)
		return 0;
	text = malloc(len + 1);
	if (!text)
		return -ENOMEM;
	at = text;
	for (i = 0; i < req->n_messages; i++) {
		if (strcmp(req->messages[i].role, "system") != 0)
			continue;
		if (at != text) {
			memcpy(at, "\n\n", 2);
			at += 2;
		}
		len = strlen(req->messages[i].content);
		memcpy(at, req->messages[i].content, len);
		at += len;
	}
	*at = '\0';
	*out = text;
	return 0;
}

static int anthropic_body(const struct model *model, const struct llm_request *req, char **out,
			  size_t *out_len)
{
	json_t *root = json_object();
	json_t *messages = json_array();
	char *system = NULL;
	const struct llm_message *msg;
	long max_tokens = req->max_tokens;
	size_t i;
	int bad = !root || !messages;
	int rc;

	*out = NULL;
	/* the deployment's cap is applied already; Anthropic requires one */
	if (max_tokens <= 0)
		max_tokens = ANTHROPIC_DEFAULT_MAX_TOKENS;
	for (i = 0; !bad && i < req->n_messages; i++) {
		msg = &req->messages[i];
		if (strcmp(msg->role, "system") == 0)
			continue;
		if (strcmp(msg->role, "user") != 0 && strcmp(msg->role, "assistant") != 0) {
			rc = -EINVAL;
			goto out;
		}
		bad |= json_array_append_new(messages, json_pack("{s:s, s:s}", "role", msg->role,
								 "content", msg->content));
	}
	if (bad) {
		rc = -ENOMEM;
		goto out;
	}
	/* Anthropic refuses a request with nothing to answer. */
	if (json_array_size(messages) == 0) {
		rc = -EINVAL;
		goto out;
	}
	rc = system_text_join(req, &system);
	if (rc < 0)
		goto out;
	bad |= json_object_set_new(root, "model", json_string(model->id));
	bad |= json_object_set_new(root, "max_tokens", json_integer(max_tokens));
	if (system)
		bad |= json_object_set_new(root, "system", json_string(system));
	bad |= json_object_set(root, "messages", messages);
	if (req->has_temperature)
		bad |= json_object_set_new(root, "temperature", json_real(req->temperature));
	if (req->n_stop > 0)
		bad |= json_object_set_new(root, "stop_sequences", stop_sequences_json(req));
	bad |= json_object_set_new(root, "stream", json_true());
	rc = bad ? -ENOMEM : json_body_dump(root, out, out_len);
out:
	free(system);
	json_decref(messages);
	json_decref(root);
	return rc;
}

static int anthropic_build_request(const struct backend_target *target,
				   const struct llm_request *req, struct http_request *out)
{
	const struct model *model = target->model;
	const struct region *region = model ? model->region : NULL;
	const char *api_key = target->credentials ? target->credentials->api_key : NULL;
	int rc = -EINVAL;

	memset(out, 0, sizeof(*out));
	if (!region || !region->endpoint || !model->id)
		goto fail;
	rc = -ENOKEY;
	if (!api_key || !api_key[0])
		goto fail;
	rc = anthropic_body(model, req, &out->body, &out->body_len);
	if (rc < 0)
		goto fail;
	if (asprintf(&out->url, "%.*s/v1/messages", endpoint_trimmed_length(region->endpoint),
		     region->endpoint) < 0) {
		out->url = NULL;
		rc = -ENOMEM;
		goto fail;
	}
	rc = http_header_append(&out->headers, "x-api-key: ", api_key);
	if (rc == 0)
		rc = http_header_append(&out->headers, "anthropic-version: ", ANTHROPIC_VERSION);
	if (rc == 0)
		rc = http_header_append(&out->headers, "content-type: application/json", "");
	if (rc == 0)
		rc = http_header_append(&out->headers, "accept: text/event-stream", "");
	if (rc < 0)
		goto fail;
	return 0;
fail:
	http_request_release(out);
	return rc;
}

/* ---- errors ----------------------------------------------------------- */

static int error_type_retryable(const char *type)
{
	/* rate_limit_error and timeout_error are the forms of HTTP 429 and
	 * 504, which SPEC §7 retries; overloaded_error is 529. */
	static const char *const transient[] = {
		"overloaded_error",
		"api_error",
		"rate_limit_error",
		"timeout_error",
	};

	return word_is_one_of(type, transient, sizeof(transient) / sizeof(transient[0]));
}

static void anthropic_classify_error(const struct http_response_head *head, const char *body,
				     size_t len, struct attempt_error *err)
{
	json_t *root = len ? json_loadb(body, len, 0, NULL) : NULL;
	json_t *error = json_object_get(root, "error");
	const char *type = json_string_value(json_object_get(error, "type"));
	const char *message = json_string_value(json_object_get(error, "message"));
	const char *detail_code =
		json_string_value(json_object_get(json_object_get(error, "details"), "error_code"));
	int should_retry = error_type_retryable(type) ? 1 : -1;
	enum outcome outcome;

	/* A spent budget does not come back by waiting a few seconds. */
	if (detail_code && strcmp(detail_code, "enforced_spend_limit_reached") == 0)
		should_retry = 0;
	/* the provider's own verdict wins */
	if (should_retry_header(head->should_retry) >= 0)
		should_retry = should_retry_header(head->should_retry);
	outcome = outcome_of_http_status(head->status, should_retry);
	http_error_explain(err, outcome, head->status, "Anthropic", type, message);
	err->retry_after_s = retry_after_parse(head->retry_after, head->retry_after_ms, time(NULL));
	json_decref(root);
}

/* ---- answer parser ---------------------------------------------------- */

struct stream_parser {
	struct sse_answer answer; /* first (see sse_answer.h); complete: message_stop arrived */
	int finish_sent;
	long input_tokens; /* -1 until known */
	long output_tokens;
};

_Static_assert(offsetof(struct stream_parser, answer) == 0, "the answer comes first");

static long count_of(json_t *usage, const char *key)
{
	json_t *count = json_object_get(usage, key);

	return json_is_integer(count) ? (long)json_integer_value(count) : -1;
}

/* Reads the counters of a usage object; the three kinds of input tokens
 * (plain, cache write, cache read) together are what the prompt cost. */
static void usage_read(struct stream_parser *p, json_t *usage)
{
	long plain = count_of(usage, "input_tokens");
	long cache_write = count_of(usage, "cache_creation_input_tokens");
	long cache_read = count_of(usage, "cache_read_input_tokens");
	long output = count_of(usage, "output_tokens");

	if (!json_is_object(usage))
		return;
	if (plain >= 0)
		p->input_tokens = plain + (cache_write > 0 ? cache_write : 0) +
				  (cache_read > 0 ? cache_read : 0);
	if (output >= 0)
		p->output_tokens = output; /* a running total: the latest wins */
	p->answer.ev->usage(p->answer.ctx, p->input_tokens, p->output_tokens);
}

/* Anthropic's stop_reason in the words every backend uses. */
static void stop_reason_report(struct stream_parser *p, const char *reason)
{
	enum finish_reason mapped = FINISH_OTHER;
	const char *word = reason;

	if (!reason || p->finish_sent)
		return;
	if (strcmp(reason, "end_turn") == 0 || strcmp(reason, "stop_sequence") == 0)
		mapped = FINISH_STOP;
	else if (strcmp(reason, "max_tokens") == 0 ||
		 strcmp(reason, "model_context_window_exceeded") == 0)
		mapped = FINISH_LENGTH;
	else if (strcmp(reason, "refusal") == 0) {
		mapped = FINISH_FILTERED;
		word = "Anthropic's safety classifiers (refusal)";
	}
	p->finish_sent = 1;
	p->answer.ev->finish_reason(p->answer.ctx, mapped, word);
}

static void stream_error_report(struct stream_parser *p, json_t *error)
{
	const char *type = json_string_value(json_object_get(error, "type"));
	const char *message = json_string_value(json_object_get(error, "message"));

	attempt_error_set(p->answer.err,
			  error_type_retryable(type) ? OUTCOME_PROVIDER_ERROR
						     : OUTCOME_PROVIDER_REJECTED,
			  "Anthropic reported an error in the answer (%s): %s",
			  type ? type : "unknown", message ? message : "no message");
}

static void request_id_report(struct stream_parser *p, json_t *message)
{
	const char *id = json_string_value(json_object_get(message, "id"));

	if (id)
		p->answer.ev->request_id(p->answer.ctx, id);
}

/* One event of the stream. 0, or negative with P->err filled. */
static int event_handle(struct stream_parser *p, const char *type, json_t *data)
{
	json_t *delta;
	json_t *text;

	if (strcmp(type, "message_start") == 0) {
		request_id_report(p, json_object_get(data, "message"));
		usage_read(p, json_object_get(json_object_get(data, "message"), "usage"));
		return 0;
	}
	if (strcmp(type, "content_block_delta") == 0) {
		delta = json_object_get(data, "delta");
		if (!json_is_string(json_object_get(delta, "type")) ||
		    strcmp(json_string_value(json_object_get(delta, "type")), "text_delta") != 0)
			return 0; /* thinking, tool input: not the answer */
		text = json_object_get(delta, "text");
		return answer_text_report(p->answer.ev, p->answer.ctx, json_string_value(text),
					  json_string_length(text), p->answer.err);
	}
	if (strcmp(type, "message_delta") == 0) {
		usage_read(p, json_object_get(data, "usage"));
		stop_reason_report(p, json_string_value(json_object_get(
					      json_object_get(data, "delta"), "stop_reason")));
		return 0;
	}
	if (strcmp(type, "message_stop") == 0) {
		p->answer.complete = 1;
		return 0;
	}
	if (strcmp(type, "error") == 0) {
		stream_error_report(p, json_object_get(data, "error"));
		return -EIO;
	}
	return 0; /* ping, block start and stop, and types yet to come */
}

/* A 200 body that is one JSON document: an error, or a whole message
 * from a server that did not stream. */
static int on_json_body(struct stream_parser *p, const char *data, size_t len)
{
	json_t *root = json_loadb(data, len, 0, NULL);
	const char *type = json_string_value(json_object_get(root, "type"));
	json_t *content;
	json_t *block;
	json_t *text;
	size_t i;
	int rc = 0;

	if (!type) {
		attempt_error_set(p->answer.err, OUTCOME_STREAM_CUT,
				  "Anthropic sent an answer that is neither an event stream nor a "
				  "whole message");
		rc = -EIO;
		goto out;
	}
	if (strcmp(type, "error") == 0) {
		stream_error_report(p, json_object_get(root, "error"));
		rc = -EIO;
		goto out;
	}
	if (strcmp(type, "message") != 0) {
		attempt_error_set(p->answer.err, OUTCOME_BAD_RESPONSE,
				  "Anthropic sent a JSON answer of unknown type '%s'", type);
		rc = -EIO;
		goto out;
	}
	request_id_report(p, root);
	content = json_object_get(root, "content");
	for (i = 0; rc == 0 && i < json_array_size(content); i++) {
		block = json_array_get(content, i);
		if (!json_is_string(json_object_get(block, "type")) ||
		    strcmp(json_string_value(json_object_get(block, "type")), "text") != 0)
			continue;
		text = json_object_get(block, "text");
		rc = answer_text_report(p->answer.ev, p->answer.ctx, json_string_value(text),
					json_string_length(text), p->answer.err);
	}
	if (rc < 0)
		goto out;
	usage_read(p, json_object_get(root, "usage"));
	stop_reason_report(p, json_string_value(json_object_get(root, "stop_reason")));
	p->answer.complete = 1;
out:
	json_decref(root);
	return rc;
}

static int on_event(struct stream_parser *p, const char *event, const char *data, size_t len)
{
	json_t *root;
	const char *type = event;
	int rc;

	if (len == 0 || p->answer.complete)
		return 0;
	root = json_loadb(data, len, 0, NULL);
	if (!json_is_object(root)) {
		json_decref(root);
		return sse_answer_event_malformed(
			&p->answer, "Anthropic sent an event that is not a JSON object");
	}
	if (!type[0])
		type = json_string_value(json_object_get(root, "type"));
	rc = type ? event_handle(p, type, root) : 0;
	json_decref(root);
	return rc;
}

static const struct sse_answer_format anthropic_answer_format = {
	.provider = "Anthropic",
	.json_starts = "{",
	.event_what = "an event",
	.max_event_bytes = ANTHROPIC_MAX_EVENT_BYTES,
	.max_json_bytes = ANTHROPIC_MAX_JSON_BYTES,
	.cut_sentence = "the Anthropic answer ended before message_stop",
	.event = on_event,
	.json_body = on_json_body,
};

static struct stream_parser *anthropic_parser_new(const struct answer_events *ev, void *ctx)
{
	struct stream_parser *p =
		sse_answer_parser_new(sizeof(*p), &anthropic_answer_format, ev, ctx);

	if (p) {
		p->input_tokens = -1;
		p->output_tokens = -1;
	}
	return p;
}

const struct backend backend_anthropic = {
	.name = "anthropic",
	.build_request = anthropic_build_request,
	.parser_new = anthropic_parser_new,
	.parser_feed = sse_answer_parser_feed,
	.parser_finish = sse_answer_parser_finish,
	.parser_free = sse_answer_parser_free,
	.classify_error = anthropic_classify_error,
};
