/* Unit tests for backends/retry.c. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <time.h>

#include <cmocka.h>

#include "backends/retry.h"

#define EPSILON 1e-9

/* Wed, 21 Oct 2015 07:28:00 GMT */
static const time_t date_2015_10_21 = 1445412480;

static void test_status_retryable(void **state)
{
	static const long retryable[] = { 408, 429, 500, 502, 503, 504, 529 };
	static const long final[] = { 200, 400, 401, 403, 404, 409, 413, 422, 501, 505, 0, -1 };
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(retryable) / sizeof(retryable[0]); i++)
		assert_true(http_status_retryable(retryable[i]));
	for (i = 0; i < sizeof(final) / sizeof(final[0]); i++)
		assert_false(http_status_retryable(final[i]));
}

static void test_retry_after_seconds(void **state)
{
	(void)state;
	assert_float_equal(retry_after_parse("7", NULL, 0), 7, EPSILON);
	assert_float_equal(retry_after_parse("0", "", 0), 0, EPSILON);
	assert_float_equal(retry_after_parse("1.5", NULL, 0), 1.5, EPSILON);
	assert_float_equal(retry_after_parse(" 20 ", NULL, 0), 20, EPSILON);
}

static void test_retry_after_ms_wins(void **state)
{
	(void)state;
	assert_float_equal(retry_after_parse("7", "250", 0), 0.25, EPSILON);
	assert_float_equal(retry_after_parse(NULL, "1500.5", 0), 1.5005, EPSILON);
	/* An unusable retry-after-ms falls back to retry-after. */
	assert_float_equal(retry_after_parse("3", "soon", 0), 3, EPSILON);
	assert_float_equal(retry_after_parse("3", "-5", 0), 3, EPSILON);
}

static void test_retry_after_date(void **state)
{
	(void)state;
	assert_float_equal(
		retry_after_parse("Wed, 21 Oct 2015 07:28:00 GMT", NULL, date_2015_10_21 - 30), 30,
		EPSILON);
	/* A date in the past means: now. */
	assert_float_equal(
		retry_after_parse("Wed, 21 Oct 2015 07:28:00 GMT", NULL, date_2015_10_21 + 100), 0,
		EPSILON);
	assert_float_equal(retry_after_parse("Thu, 01 Jan 1970 00:01:00 GMT", NULL, 0), 60,
			   EPSILON);
}

static void test_retry_after_unusable(void **state)
{
	(void)state;
	assert_true(retry_after_parse(NULL, NULL, 0) < 0);
	assert_true(retry_after_parse("", "", 0) < 0);
	assert_true(retry_after_parse("-1", NULL, 0) < 0);
	assert_true(retry_after_parse("soon", NULL, 0) < 0);
	assert_true(retry_after_parse("12abc", NULL, 0) < 0);
	assert_true(retry_after_parse("inf", NULL, 0) < 0);
	assert_true(retry_after_parse("nan", NULL, 0) < 0);
	assert_true(retry_after_parse("Wed, 21 Oct 2015 07:28:00 UTC", NULL, 0) < 0);
	assert_true(retry_after_parse("Wed, 21 Foo 2015 07:28:00 GMT", NULL, 0) < 0);
	assert_true(retry_after_parse("Wed, 32 Oct 2015 07:28:00 GMT", NULL, 0) < 0);
	assert_true(retry_after_parse("Wed, 21 Oct 2015 25:28:00 GMT", NULL, 0) < 0);
	assert_true(retry_after_parse("Wed, 21 Oct 2015 07:28:00 GMT junk", NULL, 0) < 0);
	assert_true(retry_after_parse("Wednesday, 21-Oct-15 07:28:00 GMT", NULL, 0) < 0);
}

static void test_retry_after_from_text(void **state)
{
	(void)state;
	assert_float_equal(
		retry_after_from_text(
			"Requests to the ChatCompletions_Create Operation ... have exceeded "
			"token rate limit of your current OpenAI S0 pricing tier. Please "
			"retry after 6 seconds. Please go here: https://aka.ms/oai/quotaincrease"),
		6, EPSILON);
	assert_float_equal(
		retry_after_from_text(
			"Rate limit reached for gpt-4o in organization org-x on tokens per "
			"min (TPM): Limit 30000, Used 14567, Requested 24754. Please try "
			"again in 18.642s. Visit https://platform.openai.com/account/rate-limits"),
		18.642, EPSILON);
	assert_float_equal(retry_after_from_text("Retry after 1 second."), 1, EPSILON);
	assert_float_equal(retry_after_from_text("please try again in 120ms"), 0.12, EPSILON);
	assert_float_equal(retry_after_from_text("Please try again in 1m30s."), 90, EPSILON);
	assert_float_equal(retry_after_from_text("try again in 6m0s"), 360, EPSILON);
	/* A phrase without a number is skipped, a later one still counts. */
	assert_float_equal(
		retry_after_from_text("Please try again in a moment, or retry after 4 seconds"), 4,
		EPSILON);
	assert_true(retry_after_from_text("The server had an error") < 0);
	assert_true(retry_after_from_text("try again later") < 0);
	assert_true(retry_after_from_text("") < 0);
	assert_true(retry_after_from_text(NULL) < 0);
}

static void test_backoff(void **state)
{
	(void)state;
	assert_float_equal(backoff_delay_s(0, 0), 0.5, EPSILON);
	assert_float_equal(backoff_delay_s(1, 0), 1, EPSILON);
	assert_float_equal(backoff_delay_s(2, 0), 2, EPSILON);
	assert_float_equal(backoff_delay_s(3, 0), 4, EPSILON);
	assert_float_equal(backoff_delay_s(4, 0), 8, EPSILON);
	assert_float_equal(backoff_delay_s(5, 0), 8, EPSILON);
	assert_float_equal(backoff_delay_s(1000, 0), 8, EPSILON);
	/* Jitter takes off up to a quarter. */
	assert_float_equal(backoff_delay_s(0, 1), 0.375, EPSILON);
	assert_float_equal(backoff_delay_s(2, 0.5), 1.75, EPSILON);
	assert_float_equal(backoff_delay_s(10, 1), 6, EPSILON);
	/* Out-of-range inputs are clamped. */
	assert_float_equal(backoff_delay_s(-3, 0), 0.5, EPSILON);
	assert_float_equal(backoff_delay_s(0, 7), 0.375, EPSILON);
	assert_float_equal(backoff_delay_s(0, -1), 0.5, EPSILON);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_status_retryable),
		cmocka_unit_test(test_retry_after_seconds),
		cmocka_unit_test(test_retry_after_ms_wins),
		cmocka_unit_test(test_retry_after_date),
		cmocka_unit_test(test_retry_after_unusable),
		cmocka_unit_test(test_retry_after_from_text),
		cmocka_unit_test(test_backoff),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
