/* Google Vertex AI: Gemini streamGenerateContent with alt=sse.
 *
 * Each event of the stream is a whole GenerateContentResponse holding
 * the next piece of text; there is no end sentinel, so an answer is
 * complete only once a chunk has carried a finishReason. */
#include "backends/backend.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
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

/* One chunk is a few hundred bytes; this only stops a runaway. */
#define VERTEX_MAX_EVENT_BYTES (1024 * 1024)
/* Cap of a 200 body that is plain JSON instead of an event stream. */
#define VERTEX_MAX_JSON_BYTES (4 * 1024 * 1024)

/* ---- request ---------------------------------------------------------- */

static json_t *text_part_new(const char *text)
{
	return json_pack("{s:s}", "text", text);
}

static int generation_config_fill(json_t *config, const struct llm_request *req)
{
	long max_tokens = req->max_tokens; /* the deployment's cap is applied already */
	int bad = 0;

	if (req->has_temperature)
		bad |= json_object_set_new(config, "temperature", json_real(req->temperature));
	if (max_tokens > 0)
		bad |= json_object_set_new(config, "maxOutputTokens", json_integer(max_tokens));
	if (req->n_stop > 0)
		bad |= json_object_set_new(config, "stopSequences", stop_sequences_json(req));
	return bad ? -ENOMEM : 0;
}

/* The GenerateContentRequest for REQ: roles user and model, system
 * messages moved to systemInstruction. */
static int vertex_body(const struct llm_request *req, char **out, size_t *out_len)
{
	json_t *root = json_object();
	json_t *contents = json_array();
	json_t *system_parts = json_array();
	json_t *config = json_object();
	const struct llm_message *msg;
	const char *role;
	size_t i;
	int bad = !root || !contents || !system_parts || !config;
	int rc;

	*out = NULL;
	for (i = 0; !bad && i < req->n_messages; i++) {
		msg = &req->messages[i];
		if (strcmp(msg->role, "system") == 0) {
			bad |= json_array_append_new(system_parts, text_part_new(msg->content));
			continue;
		}
		if (strcmp(msg->role, "user") == 0)
			role = "user";
		else if (strcmp(msg->role, "assistant") == 0)
			role = "model";
		else {
			rc = -EINVAL;
			goto out;
		}
		bad |= json_array_append_new(contents,
					     json_pack("{s:s, s:[o]}", "role", role, "parts",
						       text_part_new(msg->content)));
	}
	if (bad) {
		rc = -ENOMEM;
		goto out;
	}
	/* Gemini refuses a request with nothing to answer. */
	if (json_array_size(contents) == 0) {
		rc = -EINVAL;
		goto out;
	}
	rc = generation_config_fill(config, req);
	if (rc < 0)
		goto out;
	bad |= json_object_set(root, "contents", contents);
	if (json_array_size(system_parts) > 0)
		bad |= json_object_set_new(root, "systemInstruction",
					   json_pack("{s:O}", "parts", system_parts));
	if (json_object_size(config) > 0)
		bad |= json_object_set(root, "generationConfig", config);
	rc = bad ? -ENOMEM : json_body_dump(root, out, out_len);
out:
	json_decref(config);
	json_decref(system_parts);
	json_decref(contents);
	json_decref(root);
	return rc;
}

static int vertex_build_request(const struct backend_target *target, const struct llm_request *req,
				struct http_request *out)
{
	const struct model *model = target->model;
	const struct region *region = model ? model->region : NULL;
	const struct cloud *cloud = region ? region->cloud : NULL;
	const char *token = target->access_token;
	char *project = NULL;
	char *location = NULL;
	char *model_id = NULL;
	int rc = -EINVAL;

	memset(out, 0, sizeof(*out));
	if (!cloud || !region->endpoint || !region->name || !cloud->project || !model->id)
		goto out;
	if (!token && target->credentials)
		token = target->credentials->bearer_token;
	rc = -ENOKEY;
	if (!token || !token[0])
		goto out;
	rc = vertex_body(req, &out->body, &out->body_len);
	if (rc < 0)
		goto out;
	/* Names from the config go into the path: escaping keeps a stray
	 * '/' or '?' from changing which resource is addressed. */
	project = curl_easy_escape(NULL, cloud->project, 0);
	location = curl_easy_escape(NULL, region->name, 0);
	model_id = curl_easy_escape(NULL, model->id, 0);
	if (!project || !location || !model_id ||
	    asprintf(&out->url,
		     "%.*s/v1/projects/%s/locations/%s/publishers/google/models/"
		     "%s:streamGenerateContent?alt=sse",
		     endpoint_trimmed_length(region->endpoint), region->endpoint, project, location,
		     model_id) < 0) {
		out->url = NULL;
		rc = -ENOMEM;
		goto out;
	}
	rc = http_header_append(&out->headers, "Authorization: Bearer ", token);
	if (rc == 0)
		rc = http_header_append(&out->headers, "Content-Type: application/json", "");
	if (rc == 0)
		rc = http_header_append(&out->headers, "Accept: text/event-stream", "");
out:
	if (rc < 0)
		http_request_release(out);
	curl_free(model_id);
	curl_free(location);
	curl_free(project);
	return rc;
}

/* ---- errors ----------------------------------------------------------- */

/* The google.rpc.Status inside a body: {"error":{...}}, also when the
 * body is an array wrapping it. Borrowed; NULL if there is none. */
static json_t *rpc_status_of(json_t *root)
{
	if (json_is_array(root))
		root = json_array_get(root, 0);
	return json_object_get(root, "error");
}

static int rpc_status_retryable(const char *status)
{
	static const char *const transient[] = {
		"RESOURCE_EXHAUSTED",
		"UNAVAILABLE",
		"INTERNAL",
		"DEADLINE_EXCEEDED",
	};

	return word_is_one_of(status, transient, sizeof(transient) / sizeof(transient[0]));
}

/* The wait a google.rpc.RetryInfo detail asks for ("30s", "1.5s");
 * -1 if there is none. */
static double rpc_retry_delay(json_t *status)
{
	json_t *details = json_object_get(status, "details");
	const char *type;
	const char *delay;
	char *end;
	double seconds;
	size_t i;

	for (i = 0; i < json_array_size(details); i++) {
		type = json_string_value(json_object_get(json_array_get(details, i), "@type"));
		delay = json_string_value(
			json_object_get(json_array_get(details, i), "retryDelay"));
		if (!type || !delay || !strstr(type, "google.rpc.RetryInfo"))
			continue;
		seconds = strtod(delay, &end);
		/* strtod also reads "infs" and "1e500s": no wait is endless. */
		if (end != delay && strcmp(end, "s") == 0 && isfinite(seconds) && seconds >= 0)
			return seconds;
	}
	return -1;
}

/* A Status delivered after the 200, inside the answer. */
static void rpc_status_report(json_t *status, struct attempt_error *err)
{
	const char *name = json_string_value(json_object_get(status, "status"));
	const char *message = json_string_value(json_object_get(status, "message"));
	json_t *code = json_object_get(status, "code");
	int retryable =
		rpc_status_retryable(name) ||
		(json_is_integer(code) && http_status_retryable((long)json_integer_value(code)));

	attempt_error_set(err, retryable ? OUTCOME_PROVIDER_ERROR : OUTCOME_PROVIDER_REJECTED,
			  "Vertex AI reported an error in the answer (%s): %s",
			  name ? name : "UNKNOWN", message ? message : "no message");
	err->retry_after_s = rpc_retry_delay(status);
}

static void vertex_classify_error(const struct http_response_head *head, const char *body,
				  size_t len, struct attempt_error *err)
{
	json_t *root = len ? json_loadb(body, len, 0, NULL) : NULL;
	json_t *status = rpc_status_of(root);
	const char *name = json_string_value(json_object_get(status, "status"));
	const char *message = json_string_value(json_object_get(status, "message"));
	enum outcome outcome =
		outcome_of_http_status(head->status, rpc_status_retryable(name) ? 1 : -1);
	double wait;

	http_error_explain(err, outcome, head->status, "Vertex AI", name, message);
	wait = retry_after_parse(head->retry_after, head->retry_after_ms, time(NULL));
	if (wait < 0)
		wait = rpc_retry_delay(status);
	err->retry_after_s = wait;
	json_decref(root);
}

/* ---- answer parser ---------------------------------------------------- */

struct stream_parser {
	struct sse_answer answer; /* first (see sse_answer.h); complete: a finishReason arrived */
	int request_id_sent;
};

_Static_assert(offsetof(struct stream_parser, answer) == 0, "the answer comes first");

static const char *const blocked_finish_reasons[] = {
	"SAFETY", "RECITATION",	 "BLOCKLIST",	 "PROHIBITED_CONTENT",
	"SPII",	  "MODEL_ARMOR", "IMAGE_SAFETY",
};

/* What a safety block says, for .error: "Vertex AI safety filters
 * blocked the prompt (SAFETY): detail". */
#define BLOCK_DETAIL_BYTES 400

static void block_detail(char *out, size_t size, const char *what, const char *reason,
			 const char *detail)
{
	if (detail)
		snprintf(out, size, "Vertex AI safety filters, which blocked %s (%s): %s", what,
			 reason, detail);
	else
		snprintf(out, size, "Vertex AI safety filters, which blocked %s (%s)", what,
			 reason);
	error_message_flatten(out);
}

/* Gemini's finishReason in the words every backend uses. */
static void finish_reason_report(struct stream_parser *p, const char *reason, const char *detail)
{
	char lower[64], filtered[BLOCK_DETAIL_BYTES];
	size_t i;

	if (strcmp(reason, "STOP") == 0) {
		p->answer.ev->finish_reason(p->answer.ctx, FINISH_STOP, reason);
		return;
	}
	if (strcmp(reason, "MAX_TOKENS") == 0) {
		p->answer.ev->finish_reason(p->answer.ctx, FINISH_LENGTH, reason);
		return;
	}
	if (word_is_one_of(reason, blocked_finish_reasons,
			   sizeof(blocked_finish_reasons) / sizeof(blocked_finish_reasons[0]))) {
		block_detail(filtered, sizeof(filtered), "the answer", reason, detail);
		p->answer.ev->finish_reason(p->answer.ctx, FINISH_FILTERED, filtered);
		return;
	}
	for (i = 0; reason[i] && i < sizeof(lower) - 1; i++)
		lower[i] = (char)tolower((unsigned char)reason[i]);
	lower[i] = '\0';
	p->answer.ev->finish_reason(p->answer.ctx, FINISH_OTHER, lower);
}

static int candidate_handle(struct stream_parser *p, json_t *candidate)
{
	json_t *parts = json_object_get(json_object_get(candidate, "content"), "parts");
	json_t *part;
	json_t *text;
	const char *reason;
	size_t i;
	int rc;

	for (i = 0; i < json_array_size(parts); i++) {
		part = json_array_get(parts, i);
		/* Thought summaries are the model's notes, not its answer. */
		if (json_is_true(json_object_get(part, "thought")))
			continue;
		text = json_object_get(part, "text");
		rc = answer_text_report(p->answer.ev, p->answer.ctx, json_string_value(text),
					json_string_length(text), p->answer.err);
		if (rc < 0)
			return rc;
	}
	reason = json_string_value(json_object_get(candidate, "finishReason"));
	if (!reason || p->answer.complete)
		return 0;
	p->answer.complete = 1;
	finish_reason_report(p, reason,
			     json_string_value(json_object_get(candidate, "finishMessage")));
	return 0;
}

static long token_count(json_t *usage, const char *key)
{
	json_t *count = json_object_get(usage, key);

	/* proto3 leaves zero counters out. */
	return json_is_integer(count) ? (long)json_integer_value(count) : 0;
}

/* One GenerateContentResponse. 0, or negative with P->err filled. */
static int chunk_handle(struct stream_parser *p, json_t *chunk)
{
	json_t *status = json_object_get(chunk, "error");
	json_t *feedback;
	json_t *usage;
	const char *block;
	const char *id;
	int rc;

	if (!json_is_object(chunk)) {
		attempt_error_set(p->answer.err, OUTCOME_BAD_RESPONSE,
				  "Vertex AI sent an answer chunk that is not a JSON object");
		return -EIO;
	}
	if (status) {
		rpc_status_report(status, p->answer.err);
		return -EIO;
	}
	id = json_string_value(json_object_get(chunk, "responseId"));
	if (id && !p->request_id_sent) {
		p->request_id_sent = 1;
		p->answer.ev->request_id(p->answer.ctx, id);
	}
	feedback = json_object_get(chunk, "promptFeedback");
	block = json_string_value(json_object_get(feedback, "blockReason"));
	if (block && !p->answer.complete) {
		char filtered[BLOCK_DETAIL_BYTES];

		/* no candidate follows: the whole answer is withheld */
		block_detail(filtered, sizeof(filtered), "the prompt", block,
			     json_string_value(json_object_get(feedback, "blockReasonMessage")));
		p->answer.complete = 1;
		p->answer.ev->finish_reason(p->answer.ctx, FINISH_FILTERED, filtered);
		return 0;
	}
	usage = json_object_get(chunk, "usageMetadata");
	if (json_is_object(usage))
		/* Thinking tokens are billed as output. */
		p->answer.ev->usage(p->answer.ctx, token_count(usage, "promptTokenCount"),
				    token_count(usage, "candidatesTokenCount") +
					    token_count(usage, "thoughtsTokenCount"));
	rc = candidate_handle(p, json_array_get(json_object_get(chunk, "candidates"), 0));
	return rc;
}

static int on_event(struct stream_parser *p, const char *event, const char *data, size_t len)
{
	json_t *chunk;
	int rc;

	(void)event;
	if (len == 0)
		return 0;
	chunk = json_loadb(data, len, 0, NULL);
	if (!chunk)
		return sse_answer_event_malformed(
			&p->answer, "Vertex AI sent an answer chunk that is not JSON");
	rc = chunk_handle(p, chunk);
	json_decref(chunk);
	return rc;
}

/* A 200 body that is one JSON document: an error Status (bare or in an
 * array), one whole response, or an array of chunks. */
static int on_json_body(struct stream_parser *p, const char *data, size_t len)
{
	json_t *root = json_loadb(data, len, 0, NULL);
	size_t i;
	int rc = 0;

	if (!root) {
		attempt_error_set(p->answer.err, OUTCOME_STREAM_CUT,
				  "Vertex AI sent an answer that ends in the middle of its JSON");
		return -EIO;
	}
	if (json_is_array(root)) {
		for (i = 0; rc == 0 && i < json_array_size(root); i++)
			rc = chunk_handle(p, json_array_get(root, i));
	} else {
		rc = chunk_handle(p, root);
	}
	json_decref(root);
	return rc;
}

static const struct sse_answer_format vertex_answer_format = {
	.provider = "Vertex AI",
	.json_starts = "{[",
	.event_what = "an answer chunk",
	.max_event_bytes = VERTEX_MAX_EVENT_BYTES,
	.max_json_bytes = VERTEX_MAX_JSON_BYTES,
	.cut_sentence = "the Vertex AI answer ended before it was complete",
	.event = on_event,
	.json_body = on_json_body,
};

static struct stream_parser *vertex_parser_new(const struct answer_events *ev, void *ctx)
{
	return sse_answer_parser_new(sizeof(struct stream_parser), &vertex_answer_format, ev, ctx);
}

/* A static access token goes as it is; a service account's is fetched by
 * the engine. */
static const struct google_service_account *vertex_oauth_account(const struct cloud *cloud)
{
	if (cloud->credentials.bearer_token)
		return NULL;
	return cloud->credentials.service_account;
}

const struct backend backend_vertex = {
	.name = "vertex",
	.build_request = vertex_build_request,
	.parser_new = vertex_parser_new,
	.parser_feed = sse_answer_parser_feed,
	.parser_finish = sse_answer_parser_finish,
	.parser_free = sse_answer_parser_free,
	.classify_error = vertex_classify_error,
	.oauth_account = vertex_oauth_account,
};
