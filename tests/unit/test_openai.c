/* Unit tests for the Chat Completions format (backends/openai_chat.c),
 * the openai backend's request (backends/openai.c), and the helpers of
 * backends/request.c. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "backends/backend.h"
#include "backends/openai_chat.h"
#include "tests/unit/backend_harness.h"

#define EPSILON 1e-9

/* ---- what the parser reported ----------------------------------------- */

struct answer {
	char text[8192];
	size_t text_len;
	long input_tokens;
	long output_tokens;
	int usage_calls;
	char finish_reason[32];
	char request_id[64];
	int request_id_calls;
	int text_fails; /* the text callback refuses with -ECANCELED */
};

static int answer_text(void *ctx, const char *bytes, size_t len)
{
	struct answer *a = ctx;

	if (a->text_fails)
		return -ECANCELED;
	assert_true(a->text_len + len < sizeof(a->text));
	memcpy(a->text + a->text_len, bytes, len);
	a->text_len += len;
	a->text[a->text_len] = '\0';
	return 0;
}

static void answer_usage(void *ctx, long input_tokens, long output_tokens)
{
	struct answer *a = ctx;

	a->input_tokens = input_tokens;
	a->output_tokens = output_tokens;
	a->usage_calls++;
}

static void answer_finish_reason(void *ctx, enum finish_reason reason, const char *word)
{
	struct answer *a = ctx;

	snprintf(a->finish_reason, sizeof(a->finish_reason), "%s",
		 finish_reason_word(reason) ? finish_reason_word(reason) : word);
}

static void answer_request_id(void *ctx, const char *id)
{
	struct answer *a = ctx;

	snprintf(a->request_id, sizeof(a->request_id), "%s", id);
	a->request_id_calls++;
}

static const struct answer_events answer_events = {
	.text = answer_text,
	.usage = answer_usage,
	.finish_reason = answer_finish_reason,
	.request_id = answer_request_id,
};

static void answer_init(struct answer *a)
{
	memset(a, 0, sizeof(*a));
	a->input_tokens = -2;
	a->output_tokens = -2;
}

/* Feeds BODY in pieces of STEP bytes (0: all at once), then finishes.
 * Returns the first negative result, or finish's. */
static int parse_body(const char *body, size_t step, struct answer *a, struct attempt_error *err)
{
	struct stream_parser *p;
	size_t len = strlen(body);
	size_t pos = 0;
	size_t n;
	int rc = 0;

	p = openai_chat_parser_new(&answer_events, a);
	assert_non_null(p);
	if (step == 0)
		step = len ? len : 1;
	while (pos < len) {
		n = len - pos < step ? len - pos : step;
		rc = openai_chat_parser_feed(p, body + pos, n, err);
		if (rc < 0)
			goto out;
		pos += n;
	}
	rc = openai_chat_parser_finish(p, err);
out:
	openai_chat_parser_free(p);
	return rc;
}

/* ---- request body ------------------------------------------------------ */

static void expect_body(const struct llm_request *req, const char *model, const char *expected)
{
	char *body;
	size_t len;

	assert_int_equal(openai_chat_body(req, model, &body, &len), 0);
	assert_string_equal(body, expected);
	assert_int_equal(len, strlen(expected));
	free(body);
}

static void test_body_plain(void **state)
{
	struct llm_message messages[] = { { "user", "Hi" } };
	struct llm_request req = { .messages = messages, .n_messages = 1 };

	(void)state;
	expect_body(&req, "gpt-4o",
		    "{\"model\":\"gpt-4o\",\"messages\":[{\"role\":\"user\",\"content\":\"Hi\"}],"
		    "\"stream\":true,\"stream_options\":{\"include_usage\":true}}");
}

static void test_body_every_option(void **state)
{
	struct llm_message messages[] = {
		{ "system", "Be \"brief\"." },
		{ "user", "caf\xC3\xA9\nline\t2" },
		{ "assistant", "" },
		{ "user", "again" },
	};
	char *stop[] = { "END", "###" };
	struct llm_request req = {
		.messages = messages,
		.n_messages = 4,
		.has_temperature = 1,
		.temperature = 0.2,
		.max_tokens = 500,
		.stop = stop,
		.n_stop = 2,
	};

	(void)state;
	expect_body(&req, "llama3.2",
		    "{\"model\":\"llama3.2\",\"messages\":["
		    "{\"role\":\"system\",\"content\":\"Be \\\"brief\\\".\"},"
		    "{\"role\":\"user\",\"content\":\"caf\xC3\xA9\\nline\\t2\"},"
		    "{\"role\":\"assistant\",\"content\":\"\"},"
		    "{\"role\":\"user\",\"content\":\"again\"}],"
		    "\"stream\":true,\"stream_options\":{\"include_usage\":true},"
		    "\"temperature\":0.2,\"max_tokens\":500,\"stop\":[\"END\",\"###\"]}");
}

static void test_body_without_model(void **state)
{
	struct llm_message messages[] = { { "user", "x" } };
	char *stop[] = { "\n\n" };
	struct llm_request req = {
		.messages = messages,
		.n_messages = 1,
		.has_temperature = 1,
		.temperature = 1,
		.stop = stop,
		.n_stop = 1,
	};

	(void)state;
	/* Azure names the deployment in the URL, not in the body. */
	expect_body(&req, NULL,
		    "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],"
		    "\"stream\":true,\"stream_options\":{\"include_usage\":true},"
		    "\"temperature\":1.0,\"stop\":[\"\\n\\n\"]}");
	req.temperature = 0;
	req.n_stop = 0;
	expect_body(&req, NULL,
		    "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],"
		    "\"stream\":true,\"stream_options\":{\"include_usage\":true},"
		    "\"temperature\":0.0}");
}

/* ---- streamed answers -------------------------------------------------- */

/* The example stream of the wire-protocol reference, §2.3. */
static const char reference_stream[] =
	"data: "
	"{\"id\":\"chatcmpl-X\",\"object\":\"chat.completion.chunk\",\"created\":1735689600,"
	"\"model\":\"gpt-4o-mini\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\","
	"\"content\":\"\"},\"logprobs\":null,\"finish_reason\":null}],\"usage\":null}\n"
	"\n"
	"data: "
	"{\"id\":\"chatcmpl-X\",\"object\":\"chat.completion.chunk\",\"created\":1735689600,"
	"\"model\":\"gpt-4o-mini\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hel\"},"
	"\"logprobs\":null,\"finish_reason\":null}],\"usage\":null}\n"
	"\n"
	"data: "
	"{\"id\":\"chatcmpl-X\",\"object\":\"chat.completion.chunk\",\"created\":1735689600,"
	"\"model\":\"gpt-4o-mini\",\"choices\":[{\"index\":0,\"delta\":{},\"logprobs\":null,"
	"\"finish_reason\":\"stop\"}],\"usage\":null}\n"
	"\n"
	"data: "
	"{\"id\":\"chatcmpl-X\",\"object\":\"chat.completion.chunk\",\"created\":1735689600,"
	"\"model\":\"gpt-4o-mini\",\"choices\":[],\"usage\":{\"prompt_tokens\":12,\"completion_"
	"tokens\":3,\"total_tokens\":15}}\n"
	"\n"
	"data: [DONE]\n"
	"\n";

/* Several content chunks, an escaped non-ASCII character, a keep-alive
 * comment and CRLF line ends. */
static const char hello_stream[] =
	": keep-alive\r\n\r\n"
	"data: "
	"{\"id\":\"chatcmpl-42\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\","
	"\"content\":\"\"},\"finish_reason\":null}],\"usage\":null}\r\n\r\n"
	"data: "
	"{\"id\":\"chatcmpl-42\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hello\"},"
	"\"finish_reason\":null}],\"usage\":null}\r\n\r\n"
	"data: {\"id\":\"chatcmpl-42\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\", "
	"w\\u00f6rld\"},\"finish_reason\":null}],\"usage\":null}\r\n\r\n"
	"data: "
	"{\"id\":\"chatcmpl-42\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"!\\n\"},"
	"\"finish_reason\":null}],\"usage\":null}\r\n\r\n"
	"data: "
	"{\"id\":\"chatcmpl-42\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":"
	"\"length\"}],\"usage\":null}\r\n\r\n"
	"data: "
	"{\"id\":\"chatcmpl-42\",\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_"
	"tokens\":5,\"total_tokens\":14}}\r\n\r\n"
	"data: [DONE]\r\n\r\n";

static void test_reference_stream_byte_by_byte(void **state)
{
	struct attempt_error err;
	struct answer a;

	(void)state;
	answer_init(&a);
	assert_int_equal(parse_body(reference_stream, 1, &a, &err), 0);
	assert_string_equal(a.text, "Hel");
	assert_string_equal(a.finish_reason, "stop");
	assert_int_equal(a.input_tokens, 12);
	assert_int_equal(a.output_tokens, 3);
	assert_int_equal(a.usage_calls, 1);
	assert_string_equal(a.request_id, "chatcmpl-X");
	assert_int_equal(a.request_id_calls, 1);
}

static void test_hello_stream_any_chunking(void **state)
{
	static const size_t steps[] = { 1, 2, 3, 7, 64, 0 };
	struct attempt_error err;
	struct answer a;
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(steps) / sizeof(steps[0]); i++) {
		answer_init(&a);
		assert_int_equal(parse_body(hello_stream, steps[i], &a, &err), 0);
		assert_string_equal(a.text, "Hello, w\xC3\xB6rld!\n");
		assert_string_equal(a.finish_reason, "length");
		assert_int_equal(a.input_tokens, 9);
		assert_int_equal(a.output_tokens, 5);
		assert_string_equal(a.request_id, "chatcmpl-42");
		assert_int_equal(a.request_id_calls, 1);
	}
}

static void test_azure_filter_chunks(void **state)
{
	static const char stream[] =
		"data: {\"choices\":[],\"created\":0,\"id\":\"\",\"model\":\"\",\"object\":\"\","
		"\"prompt_filter_results\":[{\"prompt_index\":0,\"content_filter_results\":"
		"{\"hate\":{\"filtered\":false,\"severity\":\"safe\"}}}]}\n\n"
		"data: "
		"{\"choices\":[{\"content_filter_results\":{},\"delta\":{\"content\":null,\"role\":"
		"\"assistant\"},"
		"\"finish_reason\":null,\"index\":0}],\"created\":1,\"id\":\"chatcmpl-az\","
		"\"model\":\"gpt-4o\","
		"\"object\":\"chat.completion.chunk\"}\n\n"
		"data: "
		"{\"choices\":[{\"content_filter_results\":{\"hate\":{\"filtered\":false,"
		"\"severity\":\"safe\"}},"
		"\"delta\":{\"content\":\"Bonjour\"},\"finish_reason\":null,\"index\":0}],\"id\":"
		"\"chatcmpl-az\"}\n\n"
		"data: "
		"{\"choices\":[{\"content_filter_offsets\":{\"check_offset\":0,\"start_offset\":0,"
		"\"end_offset\":7},"
		"\"content_filter_results\":{},\"finish_reason\":null,\"index\":0}],\"id\":"
		"\"chatcmpl-az\"}\n\n"
		"data: {\"choices\":[\"odd\"],\"id\":\"chatcmpl-az\"}\n\n"
		"data: {\"choices\":{},\"id\":\"chatcmpl-az\"}\n\n"
		"data: "
		"{\"choices\":[{\"delta\":{},\"finish_reason\":\"stop\",\"index\":0}],\"id\":"
		"\"chatcmpl-az\"}\n\n"
		"data: [DONE]\n\n";
	struct attempt_error err;
	struct answer a;

	(void)state;
	answer_init(&a);
	assert_int_equal(parse_body(stream, 5, &a, &err), 0);
	assert_string_equal(a.text, "Bonjour");
	assert_string_equal(a.finish_reason, "stop");
	/* The empty id of the filter chunk is not the request's id. */
	assert_string_equal(a.request_id, "chatcmpl-az");
	assert_int_equal(a.request_id_calls, 1);
	/* No usage chunk was sent, so none was reported. */
	assert_int_equal(a.usage_calls, 0);
}

static void test_in_band_error(void **state)
{
	static const char stream[] =
		"data: "
		"{\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Par\"}}]}\n\n"
		"data: {\"error\":{\"message\":\"The server had an error while processing your "
		"request.\","
		"\"type\":\"server_error\",\"param\":null,\"code\":null}}\n\n"
		"data: [DONE]\n\n";
	struct attempt_error err;
	struct answer a;

	(void)state;
	answer_init(&a);
	assert_int_equal(parse_body(stream, 0, &a, &err), -EIO);
	assert_string_equal(a.text, "Par");
	assert_true(outcome_retryable(err.outcome));
	assert_string_equal(ATTEMPT_ERROR_WORD(&err), "stream_error");
	assert_string_equal(err.message, "the provider reported an error in its answer: "
					 "The server had an error while processing your request.");
}

static void test_in_band_error_not_retryable(void **state)
{
	static const char invalid[] = "data: {\"error\":{\"message\":\"Invalid "
				      "prompt\",\"type\":\"invalid_request_error\","
				      "\"code\":\"invalid_prompt\"}}\n\n";
	static const char coded[] =
		"data: {\"error\":{\"message\":\"Loading model\",\"type\":\"x\",\"code\":503}}\n\n";
	static const char flat[] =
		"data: {\"object\":\"error\",\"message\":\"bad\",\"type\":\"BadRequestError\","
		"\"param\":null,\"code\":400}\n\n";
	struct attempt_error err;
	struct answer a;

	(void)state;
	answer_init(&a);
	assert_int_equal(parse_body(invalid, 1, &a, &err), -EIO);
	assert_false(outcome_retryable(err.outcome));
	assert_string_equal(err.message,
			    "the provider reported an error in its answer: Invalid prompt");
	answer_init(&a);
	assert_int_equal(parse_body(coded, 0, &a, &err), -EIO);
	assert_true(outcome_retryable(err.outcome));
	answer_init(&a);
	assert_int_equal(parse_body(flat, 0, &a, &err), -EIO);
	assert_false(outcome_retryable(err.outcome));
	assert_string_equal(err.message, "the provider reported an error in its answer: bad");
}

static void test_malformed_json(void **state)
{
	static const char stream[] =
		"data: "
		"{\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"ok\"}}]}\n\n"
		"data: {\"id\":\"c1\",\"choices\":[{\n\n"
		"data: [DONE]\n\n";
	struct attempt_error err;
	struct answer a;
	struct stream_parser *p;

	(void)state;
	answer_init(&a);
	assert_int_equal(parse_body(stream, 0, &a, &err), -EIO);
	assert_true(outcome_retryable(err.outcome));
	assert_string_equal(ATTEMPT_ERROR_WORD(&err), "malformed");
	assert_non_null(strstr(err.message, "not valid JSON"));

	/* Once failed, the parser says so again on every call. */
	p = openai_chat_parser_new(&answer_events, &a);
	assert_non_null(p);
	assert_int_equal(openai_chat_parser_feed(p, "data: nope\n\n", 12, &err), -EIO);
	memset(&err, 0, sizeof(err));
	assert_int_equal(openai_chat_parser_feed(p, "data: [DONE]\n\n", 14, &err), -EIO);
	assert_string_equal(ATTEMPT_ERROR_WORD(&err), "malformed");
	memset(&err, 0, sizeof(err));
	assert_int_equal(openai_chat_parser_finish(p, &err), -EIO);
	assert_string_equal(ATTEMPT_ERROR_WORD(&err), "malformed");
	openai_chat_parser_free(p);
}

/* Found by fuzzing: jansson quotes the bytes near a fault, and an event
 * of two data: lines put a line end into .error's first line. */
static void test_malformed_json_line_end(void **state)
{
	static const char stream[] = "data: {\"a\":\"Hel\\u00\n"
				     "data: x\"}\n\n";
	struct attempt_error err;
	struct answer a;

	(void)state;
	answer_init(&a);
	assert_int_equal(parse_body(stream, 0, &a, &err), -EIO);
	assert_string_equal(ATTEMPT_ERROR_WORD(&err), "malformed");
	assert_null(strchr(err.message, '\n'));
	assert_non_null(strstr(err.message, "not valid JSON"));
}

static void test_missing_done(void **state)
{
	static const char cut_between[] =
		"data: "
		"{\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hel\"}}]}\n\n";
	static const char cut_inside[] =
		"data: "
		"{\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hel\"}}]}\n\n"
		"data: {\"id\":\"c1\",\"choi";
	struct attempt_error err;
	struct answer a;

	(void)state;
	answer_init(&a);
	assert_int_equal(parse_body(cut_between, 0, &a, &err), -EIO);
	assert_string_equal(a.text, "Hel");
	assert_true(outcome_retryable(err.outcome));
	assert_string_equal(ATTEMPT_ERROR_WORD(&err), "stream_cut");
	assert_string_equal(err.message, "the stream ended before its end marker");
	assert_true(err.retry_after_s < 0);

	answer_init(&a);
	assert_int_equal(parse_body(cut_inside, 3, &a, &err), -EIO);
	assert_string_equal(ATTEMPT_ERROR_WORD(&err), "stream_cut");

	answer_init(&a);
	assert_int_equal(parse_body("", 0, &a, &err), -EIO);
	assert_string_equal(ATTEMPT_ERROR_WORD(&err), "stream_cut");

	/* A last event cut inside its JSON is a cut stream, not bad JSON. */
	answer_init(&a);
	assert_int_equal(parse_body("data: {\"id\":\"c1\",\"choi\n", 0, &a, &err), -EIO);
	assert_string_equal(ATTEMPT_ERROR_WORD(&err), "stream_cut");
}

/* [DONE] left out after the finish_reason and the usage chunk: the answer
 * and its token counts are whole, so the stream is complete. Without
 * the usage chunk, or without the finish_reason, it may be truncated. */
static void test_whole_stream_without_done(void **state)
{
	static const char whole[] =
		"data: "
		"{\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hel\"}}]}\n\n"
		"data: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{},"
		"\"finish_reason\":\"stop\"}]}\n\n"
		"data: {\"id\":\"c1\",\"choices\":[],"
		"\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":1}}\n\n";
	static const char no_usage[] =
		"data: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hel\"},"
		"\"finish_reason\":\"stop\"}]}\n\n";
	static const char no_finish[] =
		"data: "
		"{\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hel\"}}]}\n\n"
		"data: {\"id\":\"c1\",\"choices\":[],"
		"\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":1}}\n\n";
	struct attempt_error err;
	struct answer a;
	size_t step;

	(void)state;
	for (step = 0; step <= 7; step++) {
		answer_init(&a);
		assert_int_equal(parse_body(whole, step, &a, &err), 0);
		assert_string_equal(a.text, "Hel");
		assert_int_equal(a.output_tokens, 1);
	}
	answer_init(&a);
	assert_int_equal(parse_body(no_usage, 0, &a, &err), -EIO);
	assert_string_equal(ATTEMPT_ERROR_WORD(&err), "stream_cut");
	answer_init(&a);
	assert_int_equal(parse_body(no_finish, 0, &a, &err), -EIO);
	assert_string_equal(ATTEMPT_ERROR_WORD(&err), "stream_cut");
}

static void test_done_without_blank_line(void **state)
{
	static const char *const endings[] = {
		"data: [DONE]",
		"data: [DONE]\n",
		"data: [DONE]\r",
		"data: [DONE]\r\n",
	};
	struct attempt_error err;
	struct answer a;
	char body[256];
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(endings) / sizeof(endings[0]); i++) {
		snprintf(body, sizeof(body),
			 "data: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":"
			 "{\"content\":\"A\"}}]}\n\n%s",
			 endings[i]);
		answer_init(&a);
		assert_int_equal(parse_body(body, 1, &a, &err), 0);
		assert_string_equal(a.text, "A");
	}
	answer_init(&a);
	assert_int_equal(parse_body("data: [DON", 0, &a, &err), -EIO);
	assert_string_equal(ATTEMPT_ERROR_WORD(&err), "stream_cut");
}

static void test_data_after_done_ignored(void **state)
{
	static const char stream[] =
		"data: "
		"{\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"A\"}}]}\n\n"
		"data: [DONE]\n\n"
		"data: "
		"{\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"B\"}}]}\n\n"
		"data: {broken\n\n";
	struct attempt_error err;
	struct answer a;

	(void)state;
	answer_init(&a);
	assert_int_equal(parse_body(stream, 0, &a, &err), 0);
	assert_string_equal(a.text, "A");
}

static void test_text_refused(void **state)
{
	struct attempt_error err;
	struct answer a;

	(void)state;
	answer_init(&a);
	a.text_fails = 1;
	assert_int_equal(parse_body(hello_stream, 0, &a, &err), -ECANCELED);
	assert_false(outcome_retryable(err.outcome));
	assert_string_equal(ATTEMPT_ERROR_WORD(&err), "local_error");
}

static void test_event_over_cap(void **state)
{
	struct attempt_error err;
	struct answer a;
	struct stream_parser *p;
	char *chunk;
	size_t len = OPENAI_CHAT_MAX_EVENT_BYTES + 16;

	(void)state;
	answer_init(&a);
	chunk = malloc(len);
	assert_non_null(chunk);
	memcpy(chunk, "data: ", 6);
	memset(chunk + 6, 'x', len - 6);
	p = openai_chat_parser_new(&answer_events, &a);
	assert_non_null(p);
	assert_int_equal(openai_chat_parser_feed(p, chunk, len, &err), -EIO);
	assert_string_equal(ATTEMPT_ERROR_WORD(&err), "too_large");
	openai_chat_parser_free(p);
	free(chunk);
}

/* ---- non-streamed answers ---------------------------------------------- */

static const char whole_answer[] =
	"\n  {\n"
	"  \"id\": \"chatcmpl-whole\",\n"
	"  \"object\": \"chat.completion\",\n"
	"  \"created\": 1735689600,\n"
	"  \"model\": \"gpt-4o-mini-2024-07-18\",\n"
	"  \"choices\": [\n"
	"    { \"index\": 0,\n"
	"      \"message\": { \"role\": \"assistant\", \"content\": \"Hello!\", \"refusal\": null, "
	"\"annotations\": [] },\n"
	"      \"logprobs\": null,\n"
	"      \"finish_reason\": \"stop\" }\n"
	"  ],\n"
	"  \"usage\": { \"prompt_tokens\": 12, \"completion_tokens\": 3, \"total_tokens\": 15 },\n"
	"  \"system_fingerprint\": \"fp_ollama\"\n"
	"}\n";

static void test_whole_json_answer(void **state)
{
	static const size_t steps[] = { 1, 2, 13, 0 };
	struct attempt_error err;
	struct answer a;
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(steps) / sizeof(steps[0]); i++) {
		answer_init(&a);
		assert_int_equal(parse_body(whole_answer, steps[i], &a, &err), 0);
		assert_string_equal(a.text, "Hello!");
		assert_string_equal(a.finish_reason, "stop");
		assert_int_equal(a.input_tokens, 12);
		assert_int_equal(a.output_tokens, 3);
		assert_string_equal(a.request_id, "chatcmpl-whole");
	}
}

static void test_whole_json_answer_faults(void **state)
{
	struct attempt_error err;
	struct answer a;
	struct stream_parser *p;
	char *big;
	size_t len = OPENAI_CHAT_MAX_JSON_BYTES + 1;

	(void)state;
	answer_init(&a);
	assert_int_equal(parse_body("{\"id\":\"x\",\"choices\":[{\"mess", 0, &a, &err), -EIO);
	assert_string_equal(ATTEMPT_ERROR_WORD(&err), "malformed");
	assert_true(outcome_retryable(err.outcome));

	answer_init(&a);
	assert_int_equal(parse_body("{\"id\":\"x\",\"choices\":[]}", 0, &a, &err), -EIO);
	assert_string_equal(ATTEMPT_ERROR_WORD(&err), "malformed");

	answer_init(&a);
	assert_int_equal(parse_body("{\"error\":{\"message\":\"no such model\","
				    "\"type\":\"not_found_error\"}}",
				    0, &a, &err),
			 -EIO);
	assert_string_equal(err.message,
			    "the provider reported an error in its answer: no such model");
	assert_false(outcome_retryable(err.outcome));

	answer_init(&a);
	big = malloc(len);
	assert_non_null(big);
	memset(big, ' ', len);
	big[0] = '{';
	p = openai_chat_parser_new(&answer_events, &a);
	assert_non_null(p);
	assert_int_equal(openai_chat_parser_feed(p, big, len - 1, &err), 0);
	assert_int_equal(openai_chat_parser_feed(p, big + len - 1, 1, &err), -EIO);
	assert_string_equal(ATTEMPT_ERROR_WORD(&err), "too_large");
	assert_false(outcome_retryable(err.outcome));
	openai_chat_parser_free(p);
	free(big);
}

/* ---- error responses --------------------------------------------------- */

static void classify_status(long status, const char *retry_after, const char *should_retry,
			    const char *body, struct attempt_error *err)
{
	struct http_response_head head;

	memset(&head, 0, sizeof(head));
	head.status = status;
	snprintf(head.retry_after, sizeof(head.retry_after), "%s", retry_after);
	snprintf(head.should_retry, sizeof(head.should_retry), "%s", should_retry);
	openai_chat_classify_error(&head, body, body ? strlen(body) : 0, err);
}

static void test_classify_429_retry_after(void **state)
{
	struct attempt_error err;

	(void)state;
	classify_status(
		429, "20", "",
		"{\"error\":{\"message\":\"Rate limit reached for gpt-4o on tokens per min (TPM). "
		"Please try again in 18.642s.\",\"type\":\"tokens\",\"param\":null,"
		"\"code\":\"rate_limit_exceeded\"}}",
		&err);
	assert_true(outcome_retryable(err.outcome));
	assert_string_equal(ATTEMPT_ERROR_WORD(&err), "http_429");
	/* The header wins over the message. */
	assert_float_equal(err.retry_after_s, 20, EPSILON);
	assert_string_equal(err.message,
			    "the provider answered HTTP 429: Rate limit reached for gpt-4o on "
			    "tokens per min (TPM). Please try again in 18.642s.");

	classify_status(429, "", "", "{\"error\":{\"message\":\"Please try again in 18.642s.\"}}",
			&err);
	assert_float_equal(err.retry_after_s, 18.642, EPSILON);

	/* Azure: code as a string, the wait only in prose. */
	classify_status(
		429, "", "",
		"{\"error\":{\"code\":\"429\",\"message\":\"Requests ... have exceeded token "
		"rate limit of your current OpenAI S0 pricing tier. Please retry after 6 "
		"seconds.\"}}",
		&err);
	assert_true(outcome_retryable(err.outcome));
	assert_float_equal(err.retry_after_s, 6, EPSILON);
}

static void test_classify_retry_after_ms(void **state)
{
	struct http_response_head head;
	struct attempt_error err;

	(void)state;
	memset(&head, 0, sizeof(head));
	head.status = 503;
	snprintf(head.retry_after, sizeof(head.retry_after), "3");
	snprintf(head.retry_after_ms, sizeof(head.retry_after_ms), "1250");
	openai_chat_classify_error(&head, "", 0, &err);
	assert_float_equal(err.retry_after_s, 1.25, EPSILON);
	assert_string_equal(err.message, "the provider answered HTTP 503");
}

static void test_classify_400_error_object(void **state)
{
	struct attempt_error err;

	(void)state;
	classify_status(
		400, "", "",
		"{\"error\":{\"message\":\"Unsupported parameter: 'max_tokens' is not supported "
		"with this model. Use 'max_completion_tokens' instead.\","
		"\"type\":\"invalid_request_error\",\"param\":\"max_tokens\","
		"\"code\":\"unsupported_parameter\"}}",
		&err);
	assert_false(outcome_retryable(err.outcome));
	assert_string_equal(ATTEMPT_ERROR_WORD(&err), "http_400");
	assert_true(err.retry_after_s < 0);
	assert_string_equal(
		err.message,
		"the provider answered HTTP 400: Unsupported parameter: 'max_tokens' "
		"is not supported with this model. Use 'max_completion_tokens' instead.");
}

static void test_classify_vllm_flat(void **state)
{
	struct attempt_error err;

	(void)state;
	classify_status(
		400, "", "",
		"{\"object\":\"error\",\"message\":\"This model's maximum context length is "
		"4096 tokens.\",\"type\":\"BadRequestError\",\"param\":null,\"code\":400}",
		&err);
	assert_false(outcome_retryable(err.outcome));
	assert_string_equal(err.message,
			    "the provider answered HTTP 400: This model's maximum context length "
			    "is 4096 tokens.");
}

static void test_classify_llama_cpp_integer_code(void **state)
{
	struct attempt_error err;

	(void)state;
	classify_status(503, "", "",
			"{\"error\":{\"code\":503,\"message\":\"Loading "
			"model\",\"type\":\"unavailable_error\"}}",
			&err);
	assert_true(outcome_retryable(err.outcome));
	assert_string_equal(ATTEMPT_ERROR_WORD(&err), "http_503");
	assert_string_equal(err.message, "the provider answered HTTP 503: Loading model");

	classify_status(401, "", "",
			"{\"error\":{\"code\":401,\"message\":\"Invalid API "
			"Key\",\"type\":\"authentication_error\"}}",
			&err);
	assert_false(outcome_retryable(err.outcome));
	assert_string_equal(err.message, "the provider answered HTTP 401: Invalid API Key");
}

static void test_classify_error_as_string(void **state)
{
	struct attempt_error err;

	(void)state;
	classify_status(404, "", "",
			"{\"error\":\"model 'llama9' not found, try pulling it first\"}", &err);
	assert_false(outcome_retryable(err.outcome));
	assert_string_equal(err.message,
			    "the provider answered HTTP 404: model 'llama9' not found, try "
			    "pulling it first");
	classify_status(422, "", "", "{\"detail\":\"Field required\"}", &err);
	assert_string_equal(err.message, "the provider answered HTTP 422: Field required");
}

static void test_classify_html_body(void **state)
{
	struct attempt_error err;
	char body[1024];
	char expected[512];

	(void)state;
	classify_status(502, "", "",
			"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n"
			"<body>\r\n<center><h1>502 Bad Gateway</h1></center>\r\n"
			"<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n",
			&err);
	assert_true(outcome_retryable(err.outcome));
	assert_string_equal(err.message,
			    "the provider answered HTTP 502: <html> <head><title>502 Bad "
			    "Gateway</title></head> <body> <center><h1>502 Bad Gateway</h1>"
			    "</center> <hr><center>nginx</center> </body> </html>");

	/* Only the first 200 bytes; bytes that are not UTF-8 become '?'. */
	memset(body, 'a', sizeof(body));
	body[0] = '\xFF';
	body[sizeof(body) - 1] = '\0';
	classify_status(500, "", "", body, &err);
	snprintf(expected, sizeof(expected), "the provider answered HTTP 500: ?%.199s", body + 1);
	assert_string_equal(err.message, expected);

	/* A multi-byte character cut at byte 200 is dropped, not mangled. */
	memset(body, 'b', 199);
	memcpy(body + 199, "\xC3\xA9 tail", 8);
	classify_status(500, "", "", body, &err);
	snprintf(expected, sizeof(expected), "the provider answered HTTP 500: %.199s", body);
	assert_string_equal(err.message, expected);
}

static void test_classify_should_retry_header(void **state)
{
	struct attempt_error err;

	(void)state;
	classify_status(503, "", "false", "{\"error\":{\"message\":\"down\"}}", &err);
	assert_false(outcome_retryable(err.outcome));
	/* the provider may take a retry away, never add one outside SPEC §7's list */
	classify_status(409, "", "true", "{\"error\":{\"message\":\"conflict\"}}", &err);
	assert_false(outcome_retryable(err.outcome));
	classify_status(401, "", "true", "{\"error\":{\"message\":\"bad key\"}}", &err);
	assert_int_equal(err.outcome, OUTCOME_AUTH);
	classify_status(400, "", "", NULL, &err);
	assert_false(outcome_retryable(err.outcome));
	assert_string_equal(err.message, "the provider answered HTTP 400");
}

/* ---- the openai backend's request --------------------------------------- */

static void expect_headers(const struct curl_slist *headers, const char *const *expected, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++) {
		assert_non_null(headers);
		assert_string_equal(headers->data, expected[i]);
		headers = headers->next;
	}
	assert_null(headers);
}

static void test_build_request(void **state)
{
	static const char *const with_key[] = {
		"Authorization: Bearer sk-test",
		"Content-Type: application/json",
		"Accept: text/event-stream",
		"Expect:",
	};
	struct llm_message messages[] = { { "user", "Hi" } };
	struct llm_request req = { .messages = messages, .n_messages = 1 };
	struct region region = { .name = "us", .endpoint = "https://api.openai.com/v1/" };
	struct model model = { .name = "gpt-4o", .id = "gpt-4o-2024-08-06", .region = &region };
	struct credentials credentials = { .api_key = "sk-test" };
	struct backend_target target = { .model = &model, .credentials = &credentials };
	struct http_request out;

	(void)state;
	assert_ptr_equal(backend_for(PROVIDER_OPENAI), &backend_openai);
	assert_string_equal(backend_openai.name, "openai");
	assert_int_equal(backend_openai.build_request(&target, &req, &out), 0);
	assert_string_equal(out.url, "https://api.openai.com/v1/chat/completions");
	expect_headers(out.headers, with_key, 4);
	assert_string_equal(out.body,
			    "{\"model\":\"gpt-4o-2024-08-06\",\"messages\":[{\"role\":\"user\","
			    "\"content\":\"Hi\"}],\"stream\":true,\"stream_options\":"
			    "{\"include_usage\":true}}");
	assert_int_equal(out.body_len, strlen(out.body));
	http_request_release(&out);
	assert_null(out.url);

	/* A local server without a key gets no Authorization header. */
	region.endpoint = "http://127.0.0.1:11434/v1";
	credentials.api_key = NULL;
	assert_int_equal(backend_openai.build_request(&target, &req, &out), 0);
	assert_string_equal(out.url, "http://127.0.0.1:11434/v1/chat/completions");
	expect_headers(out.headers, with_key + 1, 3);
	http_request_release(&out);

	target.credentials = NULL;
	assert_int_equal(backend_openai.build_request(&target, &req, &out), 0);
	expect_headers(out.headers, with_key + 1, 3);
	http_request_release(&out);

	region.endpoint = NULL;
	assert_int_equal(backend_openai.build_request(&target, &req, &out), -EINVAL);
	assert_null(out.url);
	assert_null(out.headers);
}

/* ---- allocation failure ------------------------------------------------ */

static void test_allocation_failures(void **state)
{
	struct llm_message messages[] = {
		{ "system", "Be \"brief\"." },
		{ "user", "caf\xC3\xA9" },
		{ "assistant", "Oui." },
		{ "user", "again" },
	};
	char *stop[] = { "END", "###" };
	struct llm_request req = {
		.messages = messages,
		.n_messages = 4,
		.has_temperature = 1,
		.temperature = 0.2,
		.max_tokens = 500,
		.stop = stop,
		.n_stop = 2,
	};
	struct region region = { .name = "us", .endpoint = "https://api.openai.com/v1" };
	struct model model = { .name = "gpt-4o", .id = "gpt-4o-2024-08-06", .region = &region };
	struct credentials credentials = { .api_key = "sk-test" };
	struct backend_target target = { .model = &model, .credentials = &credentials };

	(void)state;
	chaos_run(&backend_openai, &target, &req, hello_stream, "Hello, w\xc3\xb6rld!\n");
	chaos_run(&backend_openai, &target, &req, reference_stream, "Hel");
	/* a server that answers with one JSON object instead of a stream */
	chaos_run(&backend_openai, &target, &req, whole_answer, "Hello!");
}

/* ---- request.c helpers -------------------------------------------------- */

static void test_attempt_error_set(void **state)
{
	struct attempt_error err;
	char long_text[600];
	size_t len;

	(void)state;
	attempt_error_set(&err, OUTCOME_STREAM_CUT, "failed %d times", 3);
	assert_true(outcome_retryable(err.outcome));
	assert_float_equal(err.retry_after_s, -1, EPSILON);
	assert_int_equal(err.http_status, 0);
	assert_string_equal(ATTEMPT_ERROR_WORD(&err), "stream_cut");
	assert_string_equal(err.message, "failed 3 times");

	attempt_error_set_http(&err, OUTCOME_HTTP_REJECTED, 422, "no");
	assert_string_equal(ATTEMPT_ERROR_WORD(&err), "http_422");

	/* Truncation never leaves half a character behind, and says it cut
	 * with an ellipsis. */
	memset(long_text, 'x', sizeof(long_text));
	memcpy(long_text + 507, "\xE2\x82\xAC", 3);
	long_text[sizeof(long_text) - 1] = '\0';
	attempt_error_set(&err, OUTCOME_BAD_RESPONSE, "%s", long_text);
	len = strlen(err.message);
	assert_int_equal(len, 507 + 3);
	assert_string_equal(err.message + 507, "\xE2\x80\xA6");
	assert_false(outcome_retryable(err.outcome));
}

static void test_backend_for_every_provider(void **state)
{
	(void)state;
	assert_ptr_equal(backend_for(PROVIDER_OPENAI), &backend_openai);
	assert_ptr_equal(backend_for(PROVIDER_AZURE), &backend_azure);
	assert_ptr_equal(backend_for(PROVIDER_BEDROCK), &backend_bedrock);
	assert_ptr_equal(backend_for(PROVIDER_VERTEX), &backend_vertex);
	assert_ptr_equal(backend_for(PROVIDER_ANTHROPIC), &backend_anthropic);
	assert_string_equal(backend_for(PROVIDER_OPENAI)->name, "openai");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_body_plain),
		cmocka_unit_test(test_body_every_option),
		cmocka_unit_test(test_body_without_model),
		cmocka_unit_test(test_reference_stream_byte_by_byte),
		cmocka_unit_test(test_hello_stream_any_chunking),
		cmocka_unit_test(test_azure_filter_chunks),
		cmocka_unit_test(test_in_band_error),
		cmocka_unit_test(test_in_band_error_not_retryable),
		cmocka_unit_test(test_malformed_json),
		cmocka_unit_test(test_malformed_json_line_end),
		cmocka_unit_test(test_missing_done),
		cmocka_unit_test(test_whole_stream_without_done),
		cmocka_unit_test(test_done_without_blank_line),
		cmocka_unit_test(test_data_after_done_ignored),
		cmocka_unit_test(test_text_refused),
		cmocka_unit_test(test_event_over_cap),
		cmocka_unit_test(test_whole_json_answer),
		cmocka_unit_test(test_whole_json_answer_faults),
		cmocka_unit_test(test_classify_429_retry_after),
		cmocka_unit_test(test_classify_retry_after_ms),
		cmocka_unit_test(test_classify_400_error_object),
		cmocka_unit_test(test_classify_vllm_flat),
		cmocka_unit_test(test_classify_llama_cpp_integer_code),
		cmocka_unit_test(test_classify_error_as_string),
		cmocka_unit_test(test_classify_html_body),
		cmocka_unit_test(test_classify_should_retry_header),
		cmocka_unit_test(test_build_request),
		cmocka_unit_test(test_allocation_failures),
		cmocka_unit_test(test_attempt_error_set),
		cmocka_unit_test(test_backend_for_every_provider),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
