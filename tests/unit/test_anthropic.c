/* Unit tests of the Anthropic backend: request, streamed answer, errors. */
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

#include "backends/backend.h"
#include "tests/unit/backend_harness.h"

/* ---- fixtures --------------------------------------------------------- */

static struct cloud anthropic_cloud = {
	.name = "anthropic",
	.provider = PROVIDER_ANTHROPIC,
	.credentials = { .api_key = "sk-ant-test" },
};

static struct region anthropic_region = {
	.name = "us",
	.endpoint = "https://api.anthropic.com",
	.cloud = &anthropic_cloud,
};

static struct model claude = {
	.name = "claude-sonnet",
	.id = "claude-sonnet-4-20250514",
	.region = &anthropic_region,
};

static struct llm_message conversation[] = {
	{ .role = "system", .content = "You are terse." },
	{ .role = "user", .content = "Hello" },
	{ .role = "assistant", .content = "Hi." },
	{ .role = "system", .content = "Answer in English." },
	{ .role = "user", .content = "Again" },
};

static char *stops[] = { "END" };

static struct backend_target target = {
	.model = &claude,
	.credentials = &anthropic_cloud.credentials,
};

/* ---- request ---------------------------------------------------------- */

static void build_request_full(void **state)
{
	struct llm_request req = {
		.messages = conversation,
		.n_messages = 5,
		.has_temperature = 1,
		.temperature = 0.5,
		.max_tokens = 300,
		.stop = stops,
		.n_stop = 1,
	};
	struct http_request out;
	char headers[1024];

	(void)state;
	assert_int_equal(backend_anthropic.build_request(&target, &req, &out), 0);
	assert_string_equal(out.url, "https://api.anthropic.com/v1/messages");
	headers_join(out.headers, headers, sizeof(headers));
	assert_string_equal(headers, "x-api-key: sk-ant-test\n"
				     "anthropic-version: 2023-06-01\n"
				     "content-type: application/json\n"
				     "accept: text/event-stream\n");
	assert_string_equal(out.body,
			    "{\"model\":\"claude-sonnet-4-20250514\",\"max_tokens\":300,"
			    "\"system\":\"You are terse.\\n\\nAnswer in English.\","
			    "\"messages\":[{\"role\":\"user\",\"content\":\"Hello\"},"
			    "{\"role\":\"assistant\",\"content\":\"Hi.\"},"
			    "{\"role\":\"user\",\"content\":\"Again\"}],"
			    "\"temperature\":0.5,\"stop_sequences\":[\"END\"],\"stream\":true}");
	assert_int_equal(out.body_len, strlen(out.body));
	http_request_release(&out);
}

static void build_request_max_tokens_defaults(void **state)
{
	struct llm_request req = { .messages = conversation + 1, .n_messages = 1 };
	struct model capped = claude;
	struct backend_target capped_target = {
		.model = &capped,
		.credentials = &anthropic_cloud.credentials,
	};
	struct http_request out;

	(void)state;
	/* Anthropic requires max_tokens: the built-in bound... */
	assert_int_equal(backend_anthropic.build_request(&target, &req, &out), 0);
	assert_string_equal(
		out.body,
		"{\"model\":\"claude-sonnet-4-20250514\",\"max_tokens\":4096,"
		"\"messages\":[{\"role\":\"user\",\"content\":\"Hello\"}],\"stream\":true}");
	http_request_release(&out);
	/* ...or the request's, which the engine has capped already. */
	capped.max_output_tokens = 100;
	req.max_tokens = 8192;
	assert_int_equal(backend_anthropic.build_request(&capped_target, &req, &out), 0);
	assert_non_null(strstr(out.body, "\"max_tokens\":8192,"));
	http_request_release(&out);
}

static void build_request_refusals(void **state)
{
	struct credentials none = { 0 };
	struct backend_target keyless = { .model = &claude, .credentials = &none };
	struct llm_request only_system = { .messages = conversation, .n_messages = 1 };
	struct llm_request hello = { .messages = conversation + 1, .n_messages = 1 };
	struct http_request out;

	(void)state;
	assert_int_equal(backend_anthropic.build_request(&keyless, &hello, &out), -ENOKEY);
	assert_null(out.url);
	assert_int_equal(backend_anthropic.build_request(&target, &only_system, &out), -EINVAL);
}

/* ---- streamed answer -------------------------------------------------- */

/* The reference's example stream, with two deltas. */
static const char stream_ok[] = "event: message_start\n"
				"data: "
				"{\"type\":\"message_start\",\"message\":{\"id\":\"msg_01XFD\","
				"\"type\":\"message\",\"role\":\"assistant\","
				"\"content\":[],\"model\":\"claude-sonnet-4-20250514\",\"stop_"
				"reason\":null,\"stop_sequence\":null,"
				"\"usage\":{\"input_tokens\":25,\"output_tokens\":1}}}\n"
				"\n"
				"event: content_block_start\n"
				"data: "
				"{\"type\":\"content_block_start\",\"index\":0,\"content_block\":{"
				"\"type\":\"text\",\"text\":\"\"}}\n"
				"\n"
				"event: ping\n"
				"data: {\"type\":\"ping\"}\n"
				"\n"
				"event: content_block_delta\n"
				"data: "
				"{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":"
				"\"text_delta\",\"text\":\"Hello\"}}\n"
				"\n"
				"event: content_block_delta\n"
				"data: "
				"{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":"
				"\"text_delta\",\"text\":\", w\xc3\xb6rld\"}}\n"
				"\n"
				"event: content_block_stop\n"
				"data: {\"type\":\"content_block_stop\",\"index\":0}\n"
				"\n"
				"event: message_delta\n"
				"data: "
				"{\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_"
				"turn\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":15}}\n"
				"\n"
				"event: message_stop\n"
				"data: {\"type\":\"message_stop\"}\n"
				"\n";

static void stream_complete(void **state)
{
	(void)state;
	stream_expect_everywhere(&backend_anthropic, stream_ok, "Hello, w\xc3\xb6rld", 25, 15,
				 "stop", "msg_01XFD");
}

static void stream_stop_reasons(void **state)
{
	static const char stream_head[] =
		"event: message_start\n"
		"data: "
		"{\"type\":\"message_start\",\"message\":{\"id\":\"m\",\"usage\":{\"input_tokens\":"
		"3,"
		"\"cache_read_input_tokens\":10,\"cache_creation_input_tokens\":2,\"output_"
		"tokens\":1}}}\n\n"
		"event: thinking_soon\n"
		"data: {\"type\":\"thinking_soon\"}\n\n"
		"event: content_block_delta\n"
		"data: "
		"{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"thinking_"
		"delta\",\"thinking\":\"hmm\"}}\n\n"
		"event: content_block_delta\n"
		"data: "
		"{\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"text_delta\","
		"\"text\":\"x\"}}\n\n"
		"event: message_delta\n"
		"data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"";
	static const char stream_tail[] = "\"},\"usage\":{\"output_tokens\":9}}\n\n"
					  "event: message_stop\n"
					  "data: {\"type\":\"message_stop\"}\n\n";
	static const char *const cases[][2] = {
		{ "max_tokens", "length" },
		{ "stop_sequence", "stop" },
		{ "tool_use", "tool_use" },
	};
	char stream[2048];
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		snprintf(stream, sizeof(stream), "%s%s%s", stream_head, cases[i][0], stream_tail);
		/* Unknown events and thinking are skipped; cache reads and
		 * writes count as input. */
		stream_expect_everywhere(&backend_anthropic, stream, "x", 15, 9, cases[i][1], "m");
	}
}

static void stream_cut(void **state)
{
	struct recorder rec;
	struct attempt_error err;
	size_t len = strlen(stream_ok);
	size_t end_of_stop = len - strlen("{\"type\":\"message_stop\"}\n\n");
	size_t cut;

	(void)state;
	for (cut = 0; cut < end_of_stop; cut++) {
		assert_int_equal(stream_run(&backend_anthropic, stream_ok, cut, cut, 0, &rec, &err),
				 -EIO);
		assert_true(outcome_retryable(err.outcome));
		assert_string_equal(ATTEMPT_ERROR_WORD(&err), "stream_cut");
	}
	/* message_stop without its blank line still ends the answer. */
	assert_int_equal(stream_run(&backend_anthropic, stream_ok, len - 2, len - 2, 0, &rec, &err),
			 0);
}

static void stream_in_band_error(void **state)
{
	static const char overloaded[] = "event: message_start\n"
					 "data: "
					 "{\"type\":\"message_start\",\"message\":{\"id\":\"m\","
					 "\"usage\":{\"input_tokens\":3,\"output_tokens\":1}}}\n\n"
					 "event: error\n"
					 "data: "
					 "{\"type\":\"error\",\"error\":{\"type\":\"overloaded_"
					 "error\",\"message\":\"Overloaded\"}}\n\n";
	static const char invalid[] = "event: error\n"
				      "data: "
				      "{\"type\":\"error\",\"error\":{\"type\":\"invalid_request_"
				      "error\",\"message\":\"prompt is too long\"}}\n\n";
	struct recorder rec;
	struct attempt_error err;

	(void)state;
	assert_int_equal(stream_fail(&backend_anthropic, overloaded, &rec, &err), -EIO);
	assert_true(outcome_retryable(err.outcome));
	assert_string_equal(ATTEMPT_ERROR_WORD(&err), "stream_error");
	assert_string_equal(
		err.message,
		"Anthropic reported an error in the answer (overloaded_error): Overloaded");
	assert_string_equal(rec.request_id, "m");

	assert_int_equal(stream_fail(&backend_anthropic, invalid, &rec, &err), -EIO);
	assert_false(outcome_retryable(err.outcome));
	assert_string_equal(err.message, "Anthropic reported an error in the answer "
					 "(invalid_request_error): prompt is too long");
}

static void stream_refusal(void **state)
{
	static const char stream[] = "event: content_block_delta\n"
				     "data: "
				     "{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{"
				     "\"type\":\"text_delta\",\"text\":\"Step 1\"}}\n\n"
				     "event: message_delta\n"
				     "data: "
				     "{\"type\":\"message_delta\",\"delta\":{\"stop_reason\":"
				     "\"refusal\"},\"usage\":{\"output_tokens\":2}}\n\n"
				     "event: message_stop\n"
				     "data: {\"type\":\"message_stop\"}\n\n";
	(void)state;
	/* reported as a filtered finish: the engine fails the attempt */
	stream_expect_filtered(&backend_anthropic, stream,
			       "Anthropic's safety classifiers (refusal)");
}

static void stream_json_bodies(void **state)
{
	static const char error_body[] = "{\"type\":\"error\",\"error\":{\"type\":\"api_error\","
					 "\"message\":\"Internal server error\"}}";
	static const char message_body[] = "{\"id\":\"msg_01\",\"type\":\"message\",\"role\":"
					   "\"assistant\",\"model\":\"claude\","
					   "\"content\":[{\"type\":\"text\",\"text\":\"Hi!\"}],"
					   "\"stop_reason\":\"end_turn\",\"stop_sequence\":null,"
					   "\"usage\":{\"input_tokens\":12,\"output_tokens\":4}}";
	struct recorder rec;
	struct attempt_error err;

	(void)state;
	assert_int_equal(stream_fail(&backend_anthropic, error_body, &rec, &err), -EIO);
	assert_true(outcome_retryable(err.outcome));
	assert_string_equal(
		err.message,
		"Anthropic reported an error in the answer (api_error): Internal server error");
	stream_expect_everywhere(&backend_anthropic, message_body, "Hi!", 12, 4, "stop", "msg_01");
}

static void stream_malformed(void **state)
{
	static const char stream[] = "event: message_start\ndata: {\"type\":\n\n";
	struct recorder rec;
	struct attempt_error err;

	(void)state;
	assert_int_equal(stream_fail(&backend_anthropic, stream, &rec, &err), -EIO);
	assert_false(outcome_retryable(err.outcome));
	assert_string_equal(ATTEMPT_ERROR_WORD(&err), "bad_response");
}

static void stream_text_refused(void **state)
{
	struct stream_parser *p;
	struct recorder rec;
	struct attempt_error err;

	(void)state;
	recorder_reset(&rec);
	rec.text_rc = -ECANCELED;
	p = backend_anthropic.parser_new(&recorder_events, &rec);
	assert_non_null(p);
	assert_int_equal(backend_anthropic.parser_feed(p, stream_ok, strlen(stream_ok), &err),
			 -ECANCELED);
	assert_int_equal(backend_anthropic.parser_finish(p, &err), -ECANCELED);
	backend_anthropic.parser_free(p);
}

/* ---- errors ----------------------------------------------------------- */

static void classify_overloaded(void **state)
{
	struct http_response_head head;
	struct attempt_error err;

	(void)state;
	head_init(&head, 529);
	classify(&backend_anthropic, &head,
		 "{\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":"
		 "\"Overloaded\"},"
		 "\"request_id\":\"req_011\"}",
		 &err);
	assert_true(outcome_retryable(err.outcome));
	assert_string_equal(ATTEMPT_ERROR_WORD(&err), "http_529");
	assert_string_equal(err.message,
			    "Anthropic answered HTTP 529 (overloaded_error): Overloaded");
	assert_true(err.retry_after_s < 0);
}

static void classify_rate_limited(void **state)
{
	struct http_response_head head;
	struct attempt_error err;

	(void)state;
	head_init(&head, 429);
	snprintf(head.retry_after, sizeof(head.retry_after), "12");
	classify(&backend_anthropic, &head,
		 "{\"type\":\"error\",\"error\":{\"type\":\"rate_limit_error\",\"message\":"
		 "\"Number of request tokens has exceeded your per-minute rate limit\"}}",
		 &err);
	assert_true(outcome_retryable(err.outcome));
	assert_true(err.retry_after_s > 11.99 && err.retry_after_s < 12.01);
	assert_string_equal(err.message,
			    "Anthropic answered HTTP 429 (rate_limit_error): Number of request "
			    "tokens has exceeded your per-minute rate limit");

	/* A spend limit does not lift by waiting. */
	classify(&backend_anthropic, &head,
		 "{\"type\":\"error\",\"error\":{\"type\":\"rate_limit_error\",\"message\":\"spend "
		 "limit\","
		 "\"details\":{\"error_code\":\"enforced_spend_limit_reached\"}}}",
		 &err);
	assert_false(outcome_retryable(err.outcome));
}

static void classify_client_errors(void **state)
{
	static const struct {
		long status;
		const char *type;
	} cases[] = {
		{ 400, "invalid_request_error" },
		{ 401, "authentication_error" },
		{ 403, "permission_error" },
		{ 404, "not_found_error" },
	};
	struct http_response_head head;
	struct attempt_error err;
	char body[256];
	char expected[256];
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		head_init(&head, cases[i].status);
		snprintf(body, sizeof(body),
			 "{\"type\":\"error\",\"error\":{\"type\":\"%s\",\"message\":\"nope\"}}",
			 cases[i].type);
		classify(&backend_anthropic, &head, body, &err);
		assert_false(outcome_retryable(err.outcome));
		snprintf(expected, sizeof(expected), "Anthropic answered HTTP %ld (%s): nope",
			 cases[i].status, cases[i].type);
		assert_string_equal(err.message, expected);
	}
	/* The server's own word cannot make a 400 retryable (SPEC §7). */
	head_init(&head, 400);
	snprintf(head.should_retry, sizeof(head.should_retry), "true");
	classify(&backend_anthropic, &head, "", &err);
	assert_false(outcome_retryable(err.outcome));
	assert_string_equal(err.message, "Anthropic answered HTTP 400");
}

/* ---- allocation failure ----------------------------------------------- */

static void allocation_failures(void **state)
{
	struct llm_request req = {
		.messages = conversation,
		.n_messages = 5,
		.stop = stops,
		.n_stop = 1,
	};

	(void)state;
	chaos_run(&backend_anthropic, &target, &req, stream_ok, "Hello, w\xc3\xb6rld");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(build_request_full),
		cmocka_unit_test(build_request_max_tokens_defaults),
		cmocka_unit_test(build_request_refusals),
		cmocka_unit_test(stream_complete),
		cmocka_unit_test(stream_stop_reasons),
		cmocka_unit_test(stream_cut),
		cmocka_unit_test(stream_in_band_error),
		cmocka_unit_test(stream_refusal),
		cmocka_unit_test(stream_json_bodies),
		cmocka_unit_test(stream_malformed),
		cmocka_unit_test(stream_text_refused),
		cmocka_unit_test(classify_overloaded),
		cmocka_unit_test(classify_rate_limited),
		cmocka_unit_test(classify_client_errors),
		cmocka_unit_test(allocation_failures),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
