/* Unit tests for backends/retry.c. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
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
	/* the exponential minimum: 0.5 s doubling, at most 8 s */
	assert_float_equal(backoff_floor_s(0), 0.5, EPSILON);
	assert_float_equal(backoff_floor_s(1), 1, EPSILON);
	assert_float_equal(backoff_floor_s(3), 4, EPSILON);
	assert_float_equal(backoff_floor_s(4), 8, EPSILON);
	assert_float_equal(backoff_floor_s(1000), 8, EPSILON);
	assert_float_equal(backoff_floor_s(-3), 0.5, EPSILON);
	/* a draw of 0 waits the minimum, 1 twice that: full jitter over [m, 2m] */
	assert_float_equal(backoff_delay_s(0, 0), 0.5, EPSILON);
	assert_float_equal(backoff_delay_s(0, 1), 1, EPSILON);
	assert_float_equal(backoff_delay_s(1, 0), 1, EPSILON);
	assert_float_equal(backoff_delay_s(2, 0.5), 3, EPSILON);
	assert_float_equal(backoff_delay_s(4, 0), 8, EPSILON);
	assert_float_equal(backoff_delay_s(5, 1), 16, EPSILON);
	assert_float_equal(backoff_delay_s(1000, 0.25), 10, EPSILON);
	/* Out-of-range inputs are clamped. */
	assert_float_equal(backoff_delay_s(-3, 0), 0.5, EPSILON);
	assert_float_equal(backoff_delay_s(0, 7), 1, EPSILON);
	assert_float_equal(backoff_delay_s(0, -1), 0.5, EPSILON);
	assert_float_equal(backoff_delay_s(0, 0.0 / 0.0), 0.5, EPSILON);
	/* every retry waits at least its minimum, whatever the draw */
	for (int n = 0; n < 8; n++) {
		for (double r = 0; r <= 1; r += 0.125) {
			assert_true(backoff_delay_s(n, r) >= backoff_floor_s(n) - EPSILON);
			assert_true(backoff_delay_s(n, r) <= 2 * backoff_floor_s(n) + EPSILON);
		}
	}
}

/* The provider's hint, but never under the exponential minimum:
 * Retry-After: 0 does not make a retry immediate. */
static void test_retry_wait_with_hint(void **state)
{
	(void)state;
	assert_float_equal(retry_wait_s(0, 0, 0), 0.5, EPSILON);
	assert_float_equal(retry_wait_s(0, 0, 1), 1, EPSILON);
	assert_float_equal(retry_wait_s(2, 0, 0), 2, EPSILON);
	assert_float_equal(retry_wait_s(0, 0.2, 0), 0.5, EPSILON);
	assert_float_equal(retry_wait_s(0, 2, 0), 2, EPSILON);
	assert_float_equal(retry_wait_s(0, 2, 1), 2.5, EPSILON);
	assert_float_equal(retry_wait_s(1, 30, 0.5), 30.5, EPSILON);
	assert_float_equal(retry_wait_s(0, -1, 0), 0.5, EPSILON);
	assert_float_equal(retry_wait_s(0, 0.0 / 0.0, 0), 0.5, EPSILON);
}

static void test_ratelimit_headers(void **state)
{
	struct ratelimit_hints h;
	/* 2024-05-01T12:00:00Z */
	const time_t now = 1714564800;
	static const char remaining[] = "x-ratelimit-remaining-requests";

	(void)state;
	memset(&h, 0, sizeof(h));
	assert_false(ratelimit_header_take(&h, "content-type", 12, "x"));
	assert_true(ratelimit_reset_wait(&h, now) < 0);

	/* OpenAI: Go durations; the exhausted limit decides */
	assert_true(ratelimit_header_take(&h, remaining, strlen(remaining), "0"));
	assert_true(ratelimit_header_take(&h, "X-RateLimit-Reset-Requests", 26, "1m30s"));
	assert_true(ratelimit_header_take(&h, "x-ratelimit-remaining-tokens", 28, "29000"));
	assert_true(ratelimit_header_take(&h, "x-ratelimit-reset-tokens", 24, "120ms"));
	assert_float_equal(ratelimit_reset_wait(&h, now), 90, EPSILON);
	/* none exhausted: the earliest reset */
	snprintf(h.remaining[RATELIMIT_REQUESTS], sizeof(h.remaining[0]), "12");
	assert_float_equal(ratelimit_reset_wait(&h, now), 0.12, EPSILON);

	/* Azure's spelling, seconds */
	memset(&h, 0, sizeof(h));
	assert_true(ratelimit_header_take(&h, "x-rate-limit-reset-tokens", 25, "6"));
	assert_float_equal(ratelimit_reset_wait(&h, now), 6, EPSILON);

	/* Anthropic: RFC 3339 times */
	memset(&h, 0, sizeof(h));
	assert_true(ratelimit_header_take(&h, "anthropic-ratelimit-tokens-remaining", 36, "0"));
	assert_true(ratelimit_header_take(&h, "anthropic-ratelimit-tokens-reset", 32,
					  "2024-05-01T12:00:30Z"));
	assert_true(ratelimit_header_take(&h, "anthropic-ratelimit-requests-reset", 34,
					  "2024-05-01T12:00:05.5Z"));
	assert_float_equal(ratelimit_reset_wait(&h, now), 30, EPSILON);
	snprintf(h.remaining[RATELIMIT_TOKENS], sizeof(h.remaining[0]), "100");
	assert_float_equal(ratelimit_reset_wait(&h, now), 5.5, EPSILON);
	/* offsets, and a time already past */
	memset(&h, 0, sizeof(h));
	snprintf(h.reset[RATELIMIT_INPUT_TOKENS], sizeof(h.reset[0]), "2024-05-01T14:00:10+02:00");
	assert_float_equal(ratelimit_reset_wait(&h, now), 10, EPSILON);
	snprintf(h.reset[RATELIMIT_INPUT_TOKENS], sizeof(h.reset[0]), "2024-05-01T11:00:00Z");
	assert_float_equal(ratelimit_reset_wait(&h, now), 0, EPSILON);
	/* what does not parse is no hint */
	static const char *const junk[] = {
		"soon", "12abc",      "2024-05-01", "2024-13-01T00:00:00Z", "2024-05-01T12:00:00",
		"-5",	"1m30s junk",
	};
	for (size_t i = 0; i < sizeof(junk) / sizeof(junk[0]); i++) {
		snprintf(h.reset[RATELIMIT_INPUT_TOKENS], sizeof(h.reset[0]), "%s", junk[i]);
		assert_true(ratelimit_reset_wait(&h, now) < 0);
	}
}

/* A deployment's throttle: every 429 wave doubles the floor all jobs
 * wait; answers to requests sent before the last rise say nothing new;
 * a success brings the level back to 0. */
static void test_throttle(void **state)
{
	struct throttle t = { 0 };

	(void)state;
	assert_float_equal(throttle_wait_s(&t, 100, 0.5), 0, EPSILON);
	/* a 429 with Retry-After: 0 still holds every job for the floor */
	throttle_note(&t, 1, 0, 99.9, 100);
	assert_int_equal(t.level, 1);
	assert_float_equal(t.not_before, 100.5, EPSILON);
	assert_float_equal(throttle_wait_s(&t, 100, 0), 0.5, EPSILON);
	assert_float_equal(throttle_wait_s(&t, 100, 1), 1, EPSILON);
	assert_float_equal(throttle_wait_s(&t, 100.5, 1), 0, EPSILON);
	/* the rest of the same wave: requests sent before its not_before */
	throttle_note(&t, 1, -1, 99.95, 100.01);
	assert_int_equal(t.level, 1);
	assert_float_equal(t.not_before, 100.51, EPSILON);
	/* the next wave doubles it, once: the jobs it released one after the
	 * other were all sent before the new not_before */
	throttle_note(&t, 1, -1, 100.6, 100.7);
	assert_int_equal(t.level, 2);
	assert_float_equal(t.not_before, 101.7, EPSILON);
	throttle_note(&t, 1, -1, 100.75, 100.8);
	throttle_note(&t, 1, -1, 101.0, 101.1);
	assert_int_equal(t.level, 2);
	assert_float_equal(t.not_before, 102.1, EPSILON);
	assert_float_equal(throttle_wait_s(&t, 101, 0.5), 1.6, EPSILON);
	/* only the provider's hints are asked for: the floor is ours */
	assert_float_equal(throttle_asked_s(&t, 100.8), 0, EPSILON);
	/* a longer hint wins; a shorter one never shortens the wait */
	throttle_note(&t, 1, 5, 100.5, 100.8);
	assert_float_equal(t.not_before, 105.8, EPSILON);
	assert_float_equal(throttle_asked_s(&t, 101.8), 4, EPSILON);
	throttle_note(&t, 0, 0.1, 100.9, 101);
	assert_float_equal(t.not_before, 105.8, EPSILON);
	/* a success: level 0, the promised wait stays */
	throttle_clear(&t);
	assert_int_equal(t.level, 0);
	assert_float_equal(t.not_before, 105.8, EPSILON);
	/* a hint without a rate limit (503 Retry-After: 2) moves not_before only */
	throttle_note(&t, 0, 2, 110, 110);
	assert_int_equal(t.level, 0);
	assert_float_equal(t.not_before, 112, EPSILON);
	/* the floor stops doubling at 8 s */
	for (int i = 0; i < 10; i++)
		throttle_note(&t, 1, -1, 200 + 20 * i, 200 + 20 * i + 0.1);
	assert_int_equal(t.level, 10);
	assert_float_equal(throttle_floor_s(&t), 8, EPSILON);
	/* a minute without a 429: the next one starts again at level 1 */
	throttle_note(&t, 1, -1, 500, 500);
	assert_int_equal(t.level, 1);
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
		cmocka_unit_test(test_retry_wait_with_hint),
		cmocka_unit_test(test_ratelimit_headers),
		cmocka_unit_test(test_throttle),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
