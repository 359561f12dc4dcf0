/* The Chat Completions wire format (see openai_chat.h). */
#include "backends/openai_chat.h"

#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <jansson.h>

#include "backends/retry.h"
#include "backends/sse_answer.h"
#include "backends/utf8.h"
#include "backends/wire_util.h"

/* How much of a body that is not JSON goes into an error message. */
#define RAW_BODY_EXCERPT_BYTES 200
/* Room for the provider's own words in a message; attempt_error_set
 * truncates the whole sentence to its field anyway. */
#define PROVIDER_MESSAGE_BYTES 480

/* ---- request body ---------------------------------------------------- */

static int messages_build(json_t *messages, const struct llm_request *req)
{
	json_t *message;
	size_t i;

	for (i = 0; i < req->n_messages; i++) {
		message = json_object();
		if (json_array_append_new(messages, message) < 0)
			return -ENOMEM;
		if (json_object_set_new(message, "role", json_string(req->messages[i].role)) < 0 ||
		    json_object_set_new(message, "content", json_string(req->messages[i].content)) <
			    0)
			return -ENOMEM;
	}
	return 0;
}

int openai_chat_body(const struct llm_request *req, const char *model, char **out, size_t *out_len)
{
	json_t *root;
	json_t *messages;
	json_t *stream_options;
	int rc = -ENOMEM;

	*out = NULL;
	*out_len = 0;
	root = json_object();
	if (!root)
		goto out;
	if (model && json_object_set_new(root, "model", json_string(model)) < 0)
		goto out;
	messages = json_array();
	if (json_object_set_new(root, "messages", messages) < 0)
		goto out;
	if (messages_build(messages, req) < 0)
		goto out;
	if (json_object_set_new(root, "stream", json_true()) < 0)
		goto out;
	/* Without include_usage a stream carries no token counts at all, and
	 * the cost could not be charged. */
	stream_options = json_object();
	if (json_object_set_new(root, "stream_options", stream_options) < 0 ||
	    json_object_set_new(stream_options, "include_usage", json_true()) < 0)
		goto out;
	if (req->has_temperature &&
	    json_object_set_new(root, "temperature", json_real(req->temperature)) < 0)
		goto out;
	/* max_tokens rather than max_completion_tokens: OpenAI-compatible
	 * servers such as Ollama only know the older name. */
	if (req->max_tokens > 0 &&
	    json_object_set_new(root, "max_tokens", json_integer(req->max_tokens)) < 0)
		goto out;
	if (req->n_stop > 0 && json_object_set_new(root, "stop", stop_sequences_json(req)) < 0)
		goto out;
	rc = json_body_dump(root, out, out_len);
out:
	json_decref(root);
	return rc;
}

/* ---- text from remote data --------------------------------------------- */

/* Copies IN (LEN bytes) into OUT (SIZE bytes, NUL-terminated) as one
 * printable line of UTF-8: controls and runs of white space become one
 * space, bytes that are not UTF-8 become '?', a sequence cut by the end of
 * the input is dropped, and a sequence that would not fit is not split. */
static void text_sanitize(const char *in, size_t len, char *out, size_t size)
{
	const unsigned char *s = (const unsigned char *)in;
	size_t pos = 0;
	size_t used = 0;
	int pending_space = 0;
	int seq;

	if (size == 0)
		return;
	while (pos < len) {
		if (s[pos] < 0x20 || s[pos] == 0x7F || s[pos] == ' ') {
			pending_space = used > 0;
			pos++;
			continue;
		}
		seq = utf8_sequence_length(in + pos, len - pos);
		if (seq < 0)
			break;
		if (used + (size_t)pending_space + (size_t)(seq ? seq : 1) + 1 > size)
			break;
		if (pending_space)
			out[used++] = ' ';
		pending_space = 0;
		if (seq == 0) {
			out[used++] = '?';
			pos++;
		} else {
			memcpy(out + used, s + pos, (size_t)seq);
			used += (size_t)seq;
			pos += (size_t)seq;
		}
	}
	out[used] = '\0';
}

/* ---- provider error bodies --------------------------------------------- */

/* What an error body says, read leniently: {"error":{...}}, {"error":"..."},
 * a flat {"message":...,"type":...,"code":...} (vLLM), or {"detail":...}
 * (FastAPI-based servers). */
struct provider_error {
	char message[PROVIDER_MESSAGE_BYTES];
	char type[64];
	char code[64];
};

static void json_text_copy(json_t *value, char *out, size_t size)
{
	char number[32];

	out[0] = '\0';
	if (json_is_string(value)) {
		text_sanitize(json_string_value(value), json_string_length(value), out, size);
	} else if (json_is_integer(value)) {
		/* llama.cpp and vLLM send the code as an integer */
		snprintf(number, sizeof(number), "%" JSON_INTEGER_FORMAT,
			 json_integer_value(value));
		text_sanitize(number, strlen(number), out, size);
	}
}

/* Non-zero when ROOT is an error body; fills PE. */
static int provider_error_read(json_t *root, struct provider_error *pe)
{
	json_t *error;
	json_t *source = NULL;

	memset(pe, 0, sizeof(*pe));
	if (!json_is_object(root))
		return 0;
	error = json_object_get(root, "error");
	if (json_is_object(error)) {
		source = error;
	} else if (json_is_string(error)) {
		json_text_copy(error, pe->message, sizeof(pe->message));
		source = root; /* type and code, if any, sit beside it */
	} else if (json_is_string(json_object_get(root, "message"))) {
		source = root;
	} else if (json_is_string(json_object_get(root, "detail"))) {
		json_text_copy(json_object_get(root, "detail"), pe->message, sizeof(pe->message));
		return 1;
	} else {
		return 0;
	}
	if (!pe->message[0])
		json_text_copy(json_object_get(source, "message"), pe->message,
			       sizeof(pe->message));
	json_text_copy(json_object_get(source, "type"), pe->type, sizeof(pe->type));
	json_text_copy(json_object_get(source, "code"), pe->code, sizeof(pe->code));
	return 1;
}

/* An error that arrives inside a 200 stream has no status to go by; its
 * type or code tells whether the server was at fault. */
static int provider_error_retryable(const struct provider_error *pe)
{
	static const char *const transient[] = {
		"server_error",	  "overloaded",	       "overloaded_error",    "api_error",
		"internal_error", "unavailable_error", "service_unavailable", "timeout",
	};
	const char *words[2];
	char *end;
	long number;
	size_t i;
	size_t w;

	words[0] = pe->type;
	words[1] = pe->code;
	for (w = 0; w < 2; w++) {
		for (i = 0; i < sizeof(transient) / sizeof(transient[0]); i++) {
			if (strcasecmp(words[w], transient[i]) == 0)
				return 1;
		}
	}
	number = strtol(pe->code, &end, 10);
	if (end != pe->code && *end == '\0' && number >= 500 && number <= 599)
		return 1;
	return 0;
}

/* ---- answer parser ----------------------------------------------------- */

struct stream_parser {
	struct sse_answer answer; /* first (see sse_answer.h); complete: [DONE] arrived */
	int id_reported;
	int finish_seen; /* a choice's finish_reason arrived */
	int usage_seen;	 /* the usage chunk (include_usage) arrived */
};

_Static_assert(offsetof(struct stream_parser, answer) == 0, "the answer comes first");

/* OpenAI's finish_reason in the words every backend uses. */
static enum finish_reason finish_reason_of(const char *word)
{
	if (strcmp(word, "stop") == 0)
		return FINISH_STOP;
	if (strcmp(word, "length") == 0)
		return FINISH_LENGTH;
	if (strcmp(word, "content_filter") == 0)
		return FINISH_FILTERED;
	return FINISH_OTHER;
}

static int malformed(struct stream_parser *p, const json_error_t *jerr)
{
	/* Often a proxy cut the body short, so another attempt may do. */
	attempt_error_set(p->answer.err, OUTCOME_MALFORMED,
			  "the provider sent an answer that is not valid JSON: %s",
			  jerr ? jerr->text : "not a JSON object");
	return -EIO;
}

static int in_band_error(struct stream_parser *p, json_t *root)
{
	struct provider_error pe;

	provider_error_read(root, &pe);
	attempt_error_set(p->answer.err,
			  provider_error_retryable(&pe) ? OUTCOME_PROVIDER_ERROR
							: OUTCOME_PROVIDER_REJECTED,
			  "the provider reported an error in its answer: %s",
			  pe.message[0] ? pe.message : "(no message)");
	p->answer.err->retry_after_s = retry_after_from_text(pe.message);
	return -EIO;
}

static void usage_report(struct stream_parser *p, json_t *usage)
{
	json_t *input;
	json_t *output;

	if (!json_is_object(usage))
		return; /* "usage": null on every chunk but one */
	p->usage_seen = 1;
	input = json_object_get(usage, "prompt_tokens");
	output = json_object_get(usage, "completion_tokens");
	p->answer.ev->usage(p->answer.ctx,
			    json_is_integer(input) ? (long)json_integer_value(input) : -1,
			    json_is_integer(output) ? (long)json_integer_value(output) : -1);
}

/* Reports what one chunk (or the whole completion, when WHOLE) carries.
 * Any part may be missing: Azure sends chunks with "choices": [], with
 * no delta, or with "content": null. */
static int completion_apply(struct stream_parser *p, json_t *root, int whole)
{
	json_t *error;
	json_t *id;
	json_t *choices;
	json_t *choice;
	json_t *content;
	json_t *reason;
	const char *object;
	int rc;

	if (!json_is_object(root))
		return malformed(p, NULL);
	/* {"error": {...}} from OpenAI, or vLLM's flat {"object": "error"} */
	error = json_object_get(root, "error");
	object = json_string_value(json_object_get(root, "object"));
	if ((error && !json_is_null(error)) || (object && strcmp(object, "error") == 0))
		return in_band_error(p, root);

	id = json_object_get(root, "id");
	if (!p->id_reported && json_is_string(id) && json_string_length(id) > 0) {
		p->answer.ev->request_id(p->answer.ctx, json_string_value(id));
		p->id_reported = 1;
	}
	choices = json_object_get(root, "choices");
	choice = json_is_array(choices) ? json_array_get(choices, 0) : NULL;
	if (json_is_object(choice)) {
		content = json_object_get(json_object_get(choice, whole ? "message" : "delta"),
					  "content");
		rc = answer_text_report(p->answer.ev, p->answer.ctx, json_string_value(content),
					json_string_length(content), p->answer.err);
		if (rc < 0)
			return rc;
		reason = json_object_get(choice, "finish_reason");
		if (json_is_string(reason) && json_string_length(reason) > 0) {
			p->finish_seen = 1;
			p->answer.ev->finish_reason(p->answer.ctx,
						    finish_reason_of(json_string_value(reason)),
						    json_string_value(reason));
		}
	} else if (whole) {
		attempt_error_set(p->answer.err, OUTCOME_MALFORMED,
				  "the provider's answer holds no choices");
		return -EIO;
	}
	usage_report(p, json_object_get(root, "usage"));
	return 0;
}

static int stream_event(struct stream_parser *p, const char *event, const char *data,
			size_t data_len)
{
	json_error_t jerr;
	json_t *root;
	int rc;

	(void)event; /* the format uses data: lines only */
	if (p->answer.complete)
		return 0; /* nothing after the end marker belongs to the answer */
	if (data_len == 6 && memcmp(data, "[DONE]", 6) == 0) {
		p->answer.complete = 1;
		return 0;
	}
	/* Some servers close right after "data: [DONE]\n" without the blank
	 * line that ends the event: at the end only that marker still
	 * counts, as any other last event may be cut short. */
	if (p->answer.at_eof)
		return 0;
	root = json_loadb(data, data_len, 0, &jerr);
	if (!root)
		return malformed(p, &jerr);
	rc = completion_apply(p, root, 0);
	json_decref(root);
	return rc;
}

/* A whole chat.completion object, from a server that ignored
 * "stream": true. */
static int json_answer(struct stream_parser *p, const char *data, size_t len)
{
	json_error_t jerr;
	json_t *root;
	int rc;

	root = json_loadb(data, len, 0, &jerr);
	if (!root)
		return malformed(p, &jerr);
	rc = completion_apply(p, root, 1);
	json_decref(root);
	if (rc == 0)
		p->answer.complete = 1;
	return rc;
}

static const struct sse_answer_format openai_chat_answer_format = {
	.provider = "the provider",
	.json_starts = "{",
	.event_what = "an event",
	.max_event_bytes = OPENAI_CHAT_MAX_EVENT_BYTES,
	.max_json_bytes = OPENAI_CHAT_MAX_JSON_BYTES,
	.cut_sentence = "the stream ended before its end marker",
	.event = stream_event,
	.json_body = json_answer,
};

struct stream_parser *openai_chat_parser_new(const struct answer_events *ev, void *ctx)
{
	return sse_answer_parser_new(sizeof(struct stream_parser), &openai_chat_answer_format, ev,
				     ctx);
}

int openai_chat_parser_feed(struct stream_parser *p, const char *data, size_t len,
			    struct attempt_error *err)
{
	return sse_answer_parser_feed(p, data, len, err);
}

int openai_chat_parser_finish(struct stream_parser *p, struct attempt_error *err)
{
	/* Finish is called only for a transfer that ended cleanly. A stream
	 * whose finish_reason and usage chunk (the last two before the
	 * marker) arrived holds the whole answer and its token counts:
	 * [DONE] is a sentinel some servers and proxies leave out, and a
	 * retry would ask, and bill, the same answer again. Without them
	 * the answer may be truncated: a cut stream. */
	if (p->finish_seen && p->usage_seen)
		p->answer.complete = 1;
	return sse_answer_parser_finish(p, err);
}

void openai_chat_parser_free(struct stream_parser *p)
{
	sse_answer_parser_free(p);
}

/* ---- error responses --------------------------------------------------- */

void openai_chat_classify_error(const struct http_response_head *head, const char *body, size_t len,
				struct attempt_error *err)
{
	struct provider_error pe;
	enum outcome outcome;
	const char *detail;
	json_t *root = NULL;

	memset(&pe, 0, sizeof(pe));
	if (body && len > 0)
		root = json_loadb(body, len, 0, NULL);
	if (!provider_error_read(root, &pe) || !pe.message[0]) {
		/* An HTML page from a proxy, plain text, or JSON without a
		 * message: the start of the body is the best explanation. */
		text_sanitize(body ? body : "",
			      len < RAW_BODY_EXCERPT_BYTES ? len : RAW_BODY_EXCERPT_BYTES,
			      pe.message, sizeof(pe.message));
	}
	detail = pe.message;

	outcome = outcome_of_http_status(head->status, should_retry_header(head->should_retry));
	http_error_explain(err, outcome, head->status, "the provider", NULL,
			   detail[0] ? detail : NULL);
	err->retry_after_s = retry_after_parse(head->retry_after, head->retry_after_ms, time(NULL));
	/* Azure and OpenAI often give the wait only in the message. */
	if (err->retry_after_s < 0)
		err->retry_after_s = retry_after_from_text(detail);
	json_decref(root);
}
