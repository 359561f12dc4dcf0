/* Unit tests for backends/outcome.c: the one table of attempt outcomes. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>

#include <cmocka.h>

#include "backends/outcome.h"

static void test_every_outcome_has_a_word(void **state)
{
	char word[32];

	(void)state;
	for (int o = 0; o < OUTCOME_COUNT; o++) {
		const struct outcome_info *info = outcome_info((enum outcome)o);

		assert_non_null(info->word);
		outcome_word((enum outcome)o, 503, word, sizeof(word));
		assert_true(word[0] != '\0');
		assert_null(strchr(word, '%'));
		/* only a complete answer reads as one */
		if (o == OUTCOME_OK)
			assert_int_equal(info->reader_errno, 0);
		else
			assert_true(info->reader_errno > 0);
	}
	/* out of range reads as a local error, never out of the table */
	assert_ptr_equal(outcome_info(OUTCOME_COUNT), outcome_info(OUTCOME_LOCAL_ERROR));
}

static void test_words(void **state)
{
	char word[32];

	(void)state;
	assert_string_equal(outcome_word(OUTCOME_OK, 0, word, sizeof(word)), "ok");
	assert_string_equal(outcome_word(OUTCOME_HTTP_RETRYABLE, 503, word, sizeof(word)),
			    "http_503");
	assert_string_equal(outcome_word(OUTCOME_AUTH, 401, word, sizeof(word)), "http_401");
	assert_string_equal(outcome_word(OUTCOME_HTTP_REJECTED, 0, word, sizeof(word)),
			    "http_error");
	assert_string_equal(outcome_word(OUTCOME_TOKEN_REJECTED, 400, word, sizeof(word)),
			    "token_http_400");
	assert_string_equal(outcome_word(OUTCOME_TOKEN_UNAVAILABLE, 0, word, sizeof(word)), "auth");
	assert_string_equal(outcome_word(OUTCOME_STREAM_CUT, 200, word, sizeof(word)),
			    "stream_cut");
	assert_string_equal(outcome_word(OUTCOME_CONTENT_FILTER, 400, word, sizeof(word)),
			    "content_filter");
}

/* SPEC §7: what is retried, and what is never retried nor failed over. */
static void test_spec_retry_rules(void **state)
{
	static const enum outcome retried[] = {
		OUTCOME_CONNECTION, OUTCOME_TIMEOUT,	    OUTCOME_FIRST_TOKEN_TIMEOUT,
		OUTCOME_STREAM_CUT, OUTCOME_HTTP_RETRYABLE, OUTCOME_MALFORMED,
	};
	static const enum outcome final[] = {
		OUTCOME_HTTP_REJECTED, OUTCOME_AUTH, OUTCOME_CONTEXT_LENGTH, OUTCOME_CONTENT_FILTER,
		OUTCOME_TOO_LARGE,     OUTCOME_OK,   OUTCOME_CANCELLED,	     OUTCOME_TOKEN_REJECTED,
	};

	(void)state;
	for (size_t i = 0; i < sizeof(retried) / sizeof(retried[0]); i++) {
		assert_true(outcome_retryable(retried[i]));
		assert_true(outcome_failover(retried[i]));
	}
	for (size_t i = 0; i < sizeof(final) / sizeof(final[0]); i++) {
		assert_false(outcome_retryable(final[i]));
		assert_false(outcome_failover(final[i]));
	}
}

static void test_http_status(void **state)
{
	static const long retryable[] = { 408, 429, 500, 502, 503, 504, 529 };
	static const long rejected[] = { 400, 404, 409, 413, 422, 501, 505 };

	(void)state;
	for (size_t i = 0; i < sizeof(retryable) / sizeof(retryable[0]); i++)
		assert_int_equal(outcome_of_http_status(retryable[i], -1), OUTCOME_HTTP_RETRYABLE);
	for (size_t i = 0; i < sizeof(rejected) / sizeof(rejected[0]); i++)
		assert_int_equal(outcome_of_http_status(rejected[i], -1), OUTCOME_HTTP_REJECTED);
	assert_int_equal(outcome_of_http_status(401, -1), OUTCOME_AUTH);
	assert_int_equal(outcome_of_http_status(403, -1), OUTCOME_AUTH);
	/* the provider's own verdict may take a retry away, never add one
	 * outside the list, nor retry an auth failure */
	assert_int_equal(outcome_of_http_status(409, 1), OUTCOME_HTTP_REJECTED);
	assert_int_equal(outcome_of_http_status(400, 1), OUTCOME_HTTP_REJECTED);
	assert_int_equal(outcome_of_http_status(401, 1), OUTCOME_AUTH);
	assert_int_equal(outcome_of_http_status(503, 0), OUTCOME_HTTP_REJECTED);
	assert_int_equal(outcome_of_http_status(429, 1), OUTCOME_HTTP_RETRYABLE);
	assert_int_equal(should_retry_header("true"), 1);
	assert_int_equal(should_retry_header("False"), 0);
	assert_int_equal(should_retry_header(""), -1);
	assert_int_equal(should_retry_header(NULL), -1);
}

/* A rejection in the providers' words for a prompt too long for the
 * model is context_length: never retried, never failed over. */
static void test_context_length(void **state)
{
	static const char *const too_long[] = {
		"the provider answered HTTP 400: This model's maximum context length is 128000 "
		"tokens. However, your messages resulted in 130000 tokens.",
		"Azure OpenAI answered HTTP 400 (context_length_exceeded): too long",
		"Anthropic answered HTTP 400 (invalid_request_error): prompt is too long: 210000 "
		"tokens > 200000 maximum",
		"Bedrock answered HTTP 400 (ValidationException): Input is too long for requested "
		"model.",
		"Vertex AI answered HTTP 400 (INVALID_ARGUMENT): The input token count (1200000) "
		"exceeds the maximum number of tokens allowed (1048576).",
	};

	(void)state;
	for (size_t i = 0; i < sizeof(too_long) / sizeof(too_long[0]); i++)
		assert_int_equal(outcome_refine_rejection(OUTCOME_HTTP_REJECTED, too_long[i]),
				 OUTCOME_CONTEXT_LENGTH);
	assert_int_equal(outcome_refine_rejection(OUTCOME_HTTP_REJECTED, "Invalid temperature"),
			 OUTCOME_HTTP_REJECTED);
	assert_int_equal(outcome_refine_rejection(OUTCOME_HTTP_REJECTED, NULL),
			 OUTCOME_HTTP_REJECTED);
	/* Bedrock's throttle says "Too many tokens, please wait": a 429, left as it is */
	assert_int_equal(outcome_refine_rejection(OUTCOME_HTTP_RETRYABLE, "maximum context length"),
			 OUTCOME_HTTP_RETRYABLE);
	assert_int_equal(outcome_refine_rejection(OUTCOME_AUTH, "prompt is too long"),
			 OUTCOME_AUTH);
}

/* What counts towards a deployment's circuit breaker, and what is a
 * rate limit (its throttle instead). */
static void test_breaker_and_rate_limit(void **state)
{
	(void)state;
	assert_true(outcome_deployment_fault(OUTCOME_HTTP_RETRYABLE, 503));
	assert_true(outcome_deployment_fault(OUTCOME_HTTP_RETRYABLE, 529));
	assert_true(outcome_deployment_fault(OUTCOME_CONNECTION, 0));
	assert_true(outcome_deployment_fault(OUTCOME_TIMEOUT, 0));
	assert_true(outcome_deployment_fault(OUTCOME_FIRST_TOKEN_TIMEOUT, 0));
	assert_true(outcome_deployment_fault(OUTCOME_STREAM_CUT, 200));
	assert_false(outcome_deployment_fault(OUTCOME_HTTP_RETRYABLE, 429));
	assert_true(outcome_rate_limited(OUTCOME_HTTP_RETRYABLE, 429));
	assert_false(outcome_rate_limited(OUTCOME_HTTP_RETRYABLE, 503));
	assert_false(outcome_rate_limited(OUTCOME_HTTP_REJECTED, 429));
	/* the request's own faults say nothing of the deployment */
	assert_false(outcome_deployment_fault(OUTCOME_HTTP_REJECTED, 400));
	assert_false(outcome_deployment_fault(OUTCOME_CONTEXT_LENGTH, 400));
	assert_false(outcome_deployment_fault(OUTCOME_CONTENT_FILTER, 200));
	assert_false(outcome_deployment_fault(OUTCOME_AUTH, 401));
	assert_false(outcome_deployment_fault(OUTCOME_TOKEN_REJECTED, 400));
	assert_false(outcome_deployment_fault(OUTCOME_OK, 200));
	assert_false(outcome_deployment_fault(OUTCOME_CANCELLED, 0));
}

static void test_finish_reasons(void **state)
{
	(void)state;
	assert_string_equal(finish_reason_word(FINISH_STOP), "stop");
	assert_string_equal(finish_reason_word(FINISH_LENGTH), "length");
	assert_string_equal(finish_reason_word(FINISH_FILTERED), "content_filter");
	assert_null(finish_reason_word(FINISH_OTHER));
	assert_null(finish_reason_word(FINISH_NONE));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_every_outcome_has_a_word),
		cmocka_unit_test(test_words),
		cmocka_unit_test(test_spec_retry_rules),
		cmocka_unit_test(test_http_status),
		cmocka_unit_test(test_finish_reasons),
		cmocka_unit_test(test_context_length),
		cmocka_unit_test(test_breaker_and_rate_limit),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
