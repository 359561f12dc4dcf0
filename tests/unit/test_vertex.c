/* Unit tests of the Vertex AI backend: request, streamed answer, errors. */
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

static struct cloud gcp_cloud = {
	.name = "gcp",
	.provider = PROVIDER_VERTEX,
	.project = "acme-prod",
	.credentials = { .bearer_token = "env-token" },
};

static struct region gcp_region = {
	.name = "europe-west4",
	.endpoint = "https://europe-west4-aiplatform.googleapis.com/",
	.cloud = &gcp_cloud,
};

static struct model gemini = {
	.name = "gemini-2.0-flash",
	.id = "gemini-2.0-flash",
	.region = &gcp_region,
};

static struct llm_message conversation[] = {
	{ .role = "system", .content = "You are terse." },
	{ .role = "user", .content = "Hello" },
	{ .role = "assistant", .content = "Hi." },
	{ .role = "system", .content = "Answer in English." },
	{ .role = "user", .content = "Say \"hi\" again" },
};

static char *stops[] = { "\n\n", "END" };

/* ---- request ---------------------------------------------------------- */

static void build_request_full(void **state)
{
	struct llm_request req = {
		.messages = conversation,
		.n_messages = 5,
		.has_temperature = 1,
		.temperature = 0.2,
		.max_tokens = 256,
		.stop = stops,
		.n_stop = 2,
	};
	struct backend_target target = {
		.model = &gemini,
		.credentials = &gcp_cloud.credentials,
		.access_token = "ya29.fresh",
	};
	struct http_request out;
	char headers[1024];

	(void)state;
	assert_int_equal(backend_vertex.build_request(&target, &req, &out), 0);
	assert_string_equal(out.url, "https://europe-west4-aiplatform.googleapis.com/v1/projects/"
				     "acme-prod/locations/europe-west4/publishers/google/models/"
				     "gemini-2.0-flash:streamGenerateContent?alt=sse");
	headers_join(out.headers, headers, sizeof(headers));
	assert_string_equal(headers, "Authorization: Bearer ya29.fresh\n"
				     "Content-Type: application/json\n"
				     "Accept: text/event-stream\n");
	assert_string_equal(out.body,
			    "{\"contents\":["
			    "{\"role\":\"user\",\"parts\":[{\"text\":\"Hello\"}]},"
			    "{\"role\":\"model\",\"parts\":[{\"text\":\"Hi.\"}]},"
			    "{\"role\":\"user\",\"parts\":[{\"text\":\"Say \\\"hi\\\" again\"}]}],"
			    "\"systemInstruction\":{\"parts\":[{\"text\":\"You are "
			    "terse.\"},{\"text\":\"Answer in English.\"}]},"
			    "\"generationConfig\":{\"temperature\":0.2,\"maxOutputTokens\":256,"
			    "\"stopSequences\":[\"\\n\\n\",\"END\"]}}");
	assert_int_equal(out.body_len, strlen(out.body));
	http_request_release(&out);
}

static void build_request_minimal(void **state)
{
	struct llm_request req = { .messages = conversation + 1, .n_messages = 1 };
	struct backend_target target = {
		.model = &gemini,
		.credentials = &gcp_cloud.credentials,
	};
	struct http_request out;
	char headers[1024];

	(void)state;
	assert_int_equal(backend_vertex.build_request(&target, &req, &out), 0);
	headers_join(out.headers, headers, sizeof(headers));
	/* Without a fetched token, the configured one is used. */
	assert_non_null(strstr(headers, "Authorization: Bearer env-token\n"));
	assert_string_equal(
		out.body, "{\"contents\":[{\"role\":\"user\",\"parts\":[{\"text\":\"Hello\"}]}]}");
	http_request_release(&out);
}

/* The deployment's cap is applied by the engine before the request
 * reaches a backend: a backend sends the max_tokens it is given. */
static void build_request_model_cap(void **state)
{
	struct model capped = gemini;
	struct llm_request req = { .messages = conversation + 1,
				   .n_messages = 1,
				   .max_tokens = 1000 };
	struct backend_target target = {
		.model = &capped,
		.credentials = &gcp_cloud.credentials,
	};
	struct http_request out;

	(void)state;
	capped.max_output_tokens = 5000;
	assert_int_equal(backend_vertex.build_request(&target, &req, &out), 0);
	assert_non_null(strstr(out.body, "\"generationConfig\":{\"maxOutputTokens\":1000}"));
	http_request_release(&out);
}

static void build_request_refusals(void **state)
{
	struct credentials none = { 0 };
	struct llm_request only_system = { .messages = conversation, .n_messages = 1 };
	struct llm_request hello = { .messages = conversation + 1, .n_messages = 1 };
	struct backend_target no_token = { .model = &gemini, .credentials = &none };
	struct backend_target evil = {
		.model = &gemini,
		.credentials = &none,
		.access_token = "tok\r\nX-Injected: 1",
	};
	struct backend_target ok = {
		.model = &gemini,
		.credentials = &gcp_cloud.credentials,
	};
	struct http_request out;

	(void)state;
	assert_int_equal(backend_vertex.build_request(&no_token, &hello, &out), -ENOKEY);
	assert_null(out.url);
	assert_int_equal(backend_vertex.build_request(&evil, &hello, &out), -EINVAL);
	assert_int_equal(backend_vertex.build_request(&ok, &only_system, &out), -EINVAL);
	assert_null(out.body);
}

/* ---- streamed answer -------------------------------------------------- */

/* As Vertex sends it: CRLF pairs between events, zero counters left
 * out, usage on the first and the last chunk. */
static const char stream_ok[] =
	"data: {\"candidates\":[{\"content\":{\"role\":\"model\",\"parts\":[{\"text\":\"Hel\"}]}}],"
	"\"usageMetadata\":{\"promptTokenCount\":5,\"trafficType\":\"ON_DEMAND\"},"
	"\"modelVersion\":\"gemini-2.0-flash\",\"createTime\":\"2025-01-01T00:00:00.123456Z\","
	"\"responseId\":\"resp-42\"}\r\n\r\n"
	"data: {\"candidates\":[{\"content\":{\"role\":\"model\",\"parts\":[{\"text\":\"lo, "
	"\"},{\"text\":\"w\xc3\xb6rld\"}]}}],"
	"\"modelVersion\":\"gemini-2.0-flash\",\"responseId\":\"resp-42\"}\r\n\r\n"
	"data: {\"candidates\":[{\"content\":{\"role\":\"model\",\"parts\":[{\"text\":\"!\"}]},"
	"\"finishReason\":\"STOP\",\"avgLogprobs\":-0.12}],"
	"\"usageMetadata\":{\"promptTokenCount\":5,\"candidatesTokenCount\":4,\"totalTokenCount\":"
	"9},"
	"\"modelVersion\":\"gemini-2.0-flash\",\"responseId\":\"resp-42\"}\r\n\r\n";

static void stream_complete(void **state)
{
	(void)state;
	stream_expect_everywhere(&backend_vertex, stream_ok, "Hello, w\xc3\xb6rld!", 5, 4, "stop",
				 "resp-42");
}

static void stream_max_tokens_and_thoughts(void **state)
{
	static const char stream[] = "data: "
				     "{\"candidates\":[{\"content\":{\"parts\":[{\"text\":"
				     "\"pondering\",\"thought\":true},{\"text\":\"Long\"}]},"
				     "\"finishReason\":\"MAX_TOKENS\"}],"
				     "\"usageMetadata\":{\"promptTokenCount\":3,"
				     "\"candidatesTokenCount\":1,\"thoughtsTokenCount\":7},"
				     "\"responseId\":\"r\"}\n\n";

	(void)state;
	/* Thinking tokens are billed as output; thought parts are no answer. */
	stream_expect_everywhere(&backend_vertex, stream, "Long", 3, 8, "length", "r");
}

static void stream_last_event_without_blank_line(void **state)
{
	static const char stream[] = "data: "
				     "{\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"ok\"}]}"
				     ",\"finishReason\":\"STOP\"}],\"responseId\":\"r\"}";

	(void)state;
	stream_expect_everywhere(&backend_vertex, stream, "ok", -2, -2, "stop", "r");
}

static void stream_cut(void **state)
{
	struct recorder rec;
	struct attempt_error err;
	size_t len = strlen(stream_ok);
	size_t cut;

	(void)state;
	/* Everywhere before the final chunk ends, the answer is incomplete. */
	for (cut = 0; cut < len - 5; cut++) {
		assert_int_equal(stream_run(&backend_vertex, stream_ok, cut, cut, 0, &rec, &err),
				 -EIO);
		assert_true(outcome_retryable(err.outcome));
		assert_string_equal(ATTEMPT_ERROR_WORD(&err), "stream_cut");
		assert_string_equal(rec.finish_reason, "");
	}
}

static void stream_in_band_error(void **state)
{
	static const char stream[] =
		"data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"Hel\"}]}}]}\r\n\r\n"
		"data: {\"error\":{\"code\":503,\"message\":\"The service is currently "
		"unavailable.\",\"status\":\"UNAVAILABLE\"}}\r\n\r\n";
	struct recorder rec;
	struct attempt_error err;

	(void)state;
	assert_int_equal(stream_fail(&backend_vertex, stream, &rec, &err), -EIO);
	assert_true(outcome_retryable(err.outcome));
	assert_string_equal(ATTEMPT_ERROR_WORD(&err), "stream_error");
	assert_string_equal(err.message, "Vertex AI reported an error in the answer (UNAVAILABLE): "
					 "The service is currently unavailable.");
}

static void stream_json_error_body(void **state)
{
	/* A 200 whose body is a bare Status array instead of events. */
	static const char body[] = "[{\n  \"error\": {\n    \"code\": 400,\n    \"message\": "
				   "\"Request contains an invalid argument.\",\n"
				   "    \"status\": \"INVALID_ARGUMENT\"\n  }\n}\n]";
	struct recorder rec;
	struct attempt_error err;
	size_t len = strlen(body);
	size_t split;

	(void)state;
	for (split = 0; split <= len; split++) {
		assert_int_equal(stream_run(&backend_vertex, body, len, split, 0, &rec, &err),
				 -EIO);
		assert_false(outcome_retryable(err.outcome));
		assert_string_equal(err.message,
				    "Vertex AI reported an error in the answer (INVALID_ARGUMENT): "
				    "Request contains an invalid argument.");
	}
}

static void stream_json_whole_answer(void **state)
{
	static const char body[] =
		"{\"candidates\":[{\"content\":{\"role\":\"model\",\"parts\":[{\"text\":\"Hi!\"}]},"
		"\"finishReason\":\"STOP\"}],"
		"\"usageMetadata\":{\"promptTokenCount\":5,\"candidatesTokenCount\":2,"
		"\"totalTokenCount\":7},\"responseId\":\"w\"}";

	(void)state;
	stream_expect_everywhere(&backend_vertex, body, "Hi!", 5, 2, "stop", "w");
}

static void stream_safety_block(void **state)
{
	static const char stream[] =
		"data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"Sure, \"}]}}]}\r\n\r\n"
		"data: {\"candidates\":[{\"content\":{\"parts\":[]},\"finishReason\":\"SAFETY\","
		"\"safetyRatings\":[{\"category\":\"HARM_CATEGORY_DANGEROUS_CONTENT\","
		"\"probability\":\"HIGH\",\"blocked\":true}]}]}\r\n\r\n";
	(void)state;
	stream_expect_filtered(&backend_vertex, stream,
			       "Vertex AI safety filters, which blocked the answer (SAFETY)");
}

static void stream_prompt_blocked(void **state)
{
	static const char stream[] =
		"data: "
		"{\"promptFeedback\":{\"blockReason\":\"PROHIBITED_CONTENT\","
		"\"blockReasonMessage\":\"The prompt was blocked.\"},"
		"\"usageMetadata\":{\"promptTokenCount\":9},\"responseId\":\"b\"}\r\n\r\n";
	(void)state;
	stream_expect_filtered(&backend_vertex, stream,
			       "Vertex AI safety filters, which blocked the prompt "
			       "(PROHIBITED_CONTENT): The prompt was blocked.");
}

static void stream_malformed(void **state)
{
	static const char stream[] = "data: {\"candidates\": [\r\n\r\n";
	struct recorder rec;
	struct attempt_error err;

	(void)state;
	assert_int_equal(stream_fail(&backend_vertex, stream, &rec, &err), -EIO);
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
	rec.text_rc = -EFBIG;
	p = backend_vertex.parser_new(&recorder_events, &rec);
	assert_non_null(p);
	assert_int_equal(backend_vertex.parser_feed(p, stream_ok, strlen(stream_ok), &err), -EFBIG);
	/* Once failed, the parser keeps saying so. */
	memset(&err, 0, sizeof(err));
	assert_int_equal(backend_vertex.parser_finish(p, &err), -EFBIG);
	assert_string_equal(ATTEMPT_ERROR_WORD(&err), "local_error");
	backend_vertex.parser_free(p);
}

/* ---- errors ----------------------------------------------------------- */

static void classify_resource_exhausted(void **state)
{
	struct http_response_head head;
	struct attempt_error err;

	(void)state;
	head_init(&head, 429);
	classify(&backend_vertex, &head,
		 "{\"error\":{\"code\":429,\"message\":\"Resource exhausted. Please try again "
		 "later.\","
		 "\"status\":\"RESOURCE_EXHAUSTED\"}}",
		 &err);
	assert_true(outcome_retryable(err.outcome));
	assert_string_equal(ATTEMPT_ERROR_WORD(&err), "http_429");
	assert_string_equal(err.message, "Vertex AI answered HTTP 429 (RESOURCE_EXHAUSTED): "
					 "Resource exhausted. Please try again later.");
	assert_true(err.retry_after_s < 0);
}

static void classify_array_and_retry_info(void **state)
{
	struct http_response_head head;
	struct attempt_error err;

	(void)state;
	head_init(&head, 503);
	classify(&backend_vertex, &head,
		 "[{\"error\":{\"code\":503,\"message\":\"The service is currently unavailable.\","
		 "\"status\":\"UNAVAILABLE\",\"details\":[{\"@type\":\"type.googleapis.com/"
		 "google.rpc.RetryInfo\","
		 "\"retryDelay\":\"1.5s\"}]}}]",
		 &err);
	assert_true(outcome_retryable(err.outcome));
	assert_string_equal(
		err.message,
		"Vertex AI answered HTTP 503 (UNAVAILABLE): The service is currently unavailable.");
	assert_true(err.retry_after_s > 1.49 && err.retry_after_s < 1.51);

	/* A header wins over the body's hint. */
	snprintf(head.retry_after, sizeof(head.retry_after), "7");
	classify(&backend_vertex, &head,
		 "{\"error\":{\"code\":503,\"message\":\"x\",\"status\":\"UNAVAILABLE\"}}", &err);
	assert_true(err.retry_after_s > 6.99 && err.retry_after_s < 7.01);

	/* An infinite delay is no hint at all. */
	head.retry_after[0] = '\0';
	classify(&backend_vertex, &head,
		 "{\"error\":{\"code\":503,\"message\":\"x\",\"status\":\"UNAVAILABLE\","
		 "\"details\":[{\"@type\":\"type.googleapis.com/google.rpc.RetryInfo\","
		 "\"retryDelay\":\"1e500s\"}]}}",
		 &err);
	assert_true(err.retry_after_s < 0);
}

static void classify_not_retryable(void **state)
{
	struct http_response_head head;
	struct attempt_error err;

	(void)state;
	head_init(&head, 404);
	classify(&backend_vertex, &head,
		 "{\"error\":{\"code\":404,\"message\":\"Publisher Model "
		 "`projects/acme-prod/locations/europe-west4/publishers/google/models/x` was not "
		 "found or your project does not have access to it.\","
		 "\"status\":\"NOT_FOUND\"}}",
		 &err);
	assert_false(outcome_retryable(err.outcome));
	assert_string_equal(ATTEMPT_ERROR_WORD(&err), "http_404");
	assert_string_equal(err.message,
			    "Vertex AI answered HTTP 404 (NOT_FOUND): Publisher Model "
			    "`projects/acme-prod/locations/europe-west4/publishers/google/models/"
			    "x` was not found or your project does not have access to it.");

	head_init(&head, 401);
	classify(&backend_vertex, &head,
		 "{\"error\":{\"code\":401,\"message\":\"Request had invalid authentication "
		 "credentials.\\nExpected OAuth 2 access token.\",\"status\":\"UNAUTHENTICATED\"}}",
		 &err);
	assert_false(outcome_retryable(err.outcome));
	/* The provider's line end does not split .error's first line. */
	assert_string_equal(err.message,
			    "Vertex AI answered HTTP 401 (UNAUTHENTICATED): Request had invalid "
			    "authentication credentials. Expected OAuth 2 access token.");
}

static void classify_status_rules(void **state)
{
	struct http_response_head head;
	struct attempt_error err;

	(void)state;
	/* The canonical code cannot make a status outside SPEC §7's list
	 * retryable... */
	head_init(&head, 400);
	classify(&backend_vertex, &head,
		 "{\"error\":{\"code\":400,\"message\":\"m\",\"status\":\"INTERNAL\"}}", &err);
	assert_false(outcome_retryable(err.outcome));
	/* ...the HTTP status alone makes it retryable. */
	head_init(&head, 502);
	classify(&backend_vertex, &head, "<html>Bad Gateway</html>", &err);
	assert_true(outcome_retryable(err.outcome));
	assert_string_equal(err.message, "Vertex AI answered HTTP 502");
	head_init(&head, 400);
	classify(&backend_vertex, &head,
		 "{\"error\":{\"code\":400,\"message\":\"bad\",\"status\":\"INVALID_ARGUMENT\"}}",
		 &err);
	assert_false(outcome_retryable(err.outcome));
	assert_string_equal(ATTEMPT_ERROR_WORD(&err), "http_400");
}

/* ---- allocation failure ----------------------------------------------- */

static void allocation_failures(void **state)
{
	struct backend_target target = {
		.model = &gemini,
		.credentials = &gcp_cloud.credentials,
	};
	struct llm_request req = {
		.messages = conversation,
		.n_messages = 5,
		.has_temperature = 1,
		.temperature = 0.2,
		.stop = stops,
		.n_stop = 2,
	};

	(void)state;
	chaos_run(&backend_vertex, &target, &req, stream_ok, "Hello, w\xc3\xb6rld!");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(build_request_full),
		cmocka_unit_test(build_request_minimal),
		cmocka_unit_test(build_request_model_cap),
		cmocka_unit_test(build_request_refusals),
		cmocka_unit_test(stream_complete),
		cmocka_unit_test(stream_max_tokens_and_thoughts),
		cmocka_unit_test(stream_last_event_without_blank_line),
		cmocka_unit_test(stream_cut),
		cmocka_unit_test(stream_in_band_error),
		cmocka_unit_test(stream_json_error_body),
		cmocka_unit_test(stream_json_whole_answer),
		cmocka_unit_test(stream_safety_block),
		cmocka_unit_test(stream_prompt_blocked),
		cmocka_unit_test(stream_malformed),
		cmocka_unit_test(stream_text_refused),
		cmocka_unit_test(classify_resource_exhausted),
		cmocka_unit_test(classify_array_and_retry_info),
		cmocka_unit_test(classify_not_retryable),
		cmocka_unit_test(classify_status_rules),
		cmocka_unit_test(allocation_failures),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
