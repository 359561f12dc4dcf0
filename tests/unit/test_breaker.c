/* Unit tests of the circuit breaker's state machine (backends/breaker.c),
 * with a clock the test moves: no sleeping. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>

#include <cmocka.h>

#include "backends/breaker.h"

#define EPSILON 1e-9

static const struct breaker_config config = {
	.threshold = 5,
	.cooldown_s = 30,
	.cooldown_max_s = 300,
};

/* N attempts admitted and failed at NOW. */
static void fail_times(struct breaker *b, int n, double now)
{
	for (int i = 0; i < n; i++) {
		assert_int_equal(breaker_admit(b, now), BREAKER_PASS);
		breaker_record(b, &config, BREAKER_FAILURE, 0, now);
	}
}

static void test_defaults(void **state)
{
	struct breaker_config c;

	(void)state;
	breaker_config_default(&c);
	assert_int_equal(c.threshold, 5);
	assert_float_equal(c.cooldown_s, 30, EPSILON);
	assert_float_equal(c.cooldown_max_s, 300, EPSILON);
	assert_string_equal(breaker_state_word(BREAKER_CLOSED), "closed");
	assert_string_equal(breaker_state_word(BREAKER_OPEN), "open");
	assert_string_equal(breaker_state_word(BREAKER_HALF_OPEN), "half_open");
}

/* Four failures in a row leave it closed; the fifth opens it for 30 s. */
static void test_opens_at_threshold(void **state)
{
	struct breaker b = { 0 };

	(void)state;
	fail_times(&b, 4, 100);
	assert_int_equal(b.state, BREAKER_CLOSED);
	assert_int_equal(b.failures, 4);
	assert_int_equal(breaker_peek(&b, 100), BREAKER_PASS);
	assert_true(breaker_record(&b, &config, BREAKER_FAILURE, 0, 101));
	assert_int_equal(b.state, BREAKER_OPEN);
	assert_int_equal(b.failures, 5);
	assert_int_equal(b.opened_total, 1);
	assert_float_equal(b.open_until, 131, EPSILON);
	/* skipped all through the cool-down */
	assert_int_equal(breaker_peek(&b, 101), BREAKER_SKIP);
	assert_int_equal(breaker_admit(&b, 130.999), BREAKER_SKIP);
	assert_int_equal(b.state, BREAKER_OPEN);
}

/* A success anywhere in the run starts the count again. */
static void test_success_resets_the_count(void **state)
{
	struct breaker b = { 0 };

	(void)state;
	fail_times(&b, 4, 100);
	breaker_record(&b, &config, BREAKER_SUCCESS, 0, 100);
	assert_int_equal(b.failures, 0);
	fail_times(&b, 4, 100);
	assert_int_equal(b.state, BREAKER_CLOSED);
	/* what says nothing of the deployment neither counts nor resets */
	breaker_record(&b, &config, BREAKER_NEUTRAL, 0, 100);
	assert_int_equal(b.failures, 4);
	assert_int_equal(b.state, BREAKER_CLOSED);
	fail_times(&b, 1, 100);
	assert_int_equal(b.state, BREAKER_OPEN);
}

/* After the cool-down exactly one attempt goes, as the probe; its
 * success closes the circuit and forgets everything. */
static void test_probe_success_closes(void **state)
{
	struct breaker b = { 0 };

	(void)state;
	fail_times(&b, 5, 100);
	assert_int_equal(breaker_peek(&b, 130), BREAKER_PROBE);
	assert_int_equal(b.state, BREAKER_OPEN); /* peek changes nothing */
	assert_int_equal(breaker_admit(&b, 130), BREAKER_PROBE);
	assert_int_equal(b.state, BREAKER_HALF_OPEN);
	/* one probe at a time: the others are skipped meanwhile */
	assert_int_equal(breaker_admit(&b, 131), BREAKER_SKIP);
	assert_int_equal(breaker_admit(&b, 500), BREAKER_SKIP);
	assert_true(breaker_record(&b, &config, BREAKER_SUCCESS, 1, 132));
	assert_int_equal(b.state, BREAKER_CLOSED);
	assert_int_equal(b.failures, 0);
	assert_int_equal(b.openings, 0);
	assert_int_equal(b.opened_total, 1);
	assert_int_equal(breaker_admit(&b, 132), BREAKER_PASS);
	/* the next opening starts from 30 s again */
	fail_times(&b, 5, 200);
	assert_float_equal(b.open_until, 230, EPSILON);
}

/* A failed probe opens it again for twice as long, and so on up to the
 * cap. */
static void test_probe_failure_doubles_the_cooldown(void **state)
{
	static const double expected[] = { 30, 60, 120, 240, 300, 300, 300 };
	struct breaker b = { 0 };
	double now = 1000;

	(void)state;
	fail_times(&b, 5, now);
	for (size_t i = 0; i < sizeof(expected) / sizeof(expected[0]); i++) {
		assert_int_equal(b.state, BREAKER_OPEN);
		assert_float_equal(b.open_until - now, expected[i], EPSILON);
		assert_int_equal(breaker_admit(&b, b.open_until - 0.001), BREAKER_SKIP);
		now = b.open_until;
		assert_int_equal(breaker_admit(&b, now), BREAKER_PROBE);
		assert_true(breaker_record(&b, &config, BREAKER_FAILURE, 1, now));
	}
	assert_int_equal(b.opened_total, 1 + sizeof(expected) / sizeof(expected[0]));
	assert_float_equal(breaker_next_cooldown_s(&b, &config), 300, EPSILON);
	/* many more openings cannot overflow the doubling */
	b.openings = 4000000000u;
	assert_float_equal(breaker_next_cooldown_s(&b, &config), 300, EPSILON);
}

/* A probe that says nothing of the deployment (the request's own fault,
 * a cancel, never sent) lets the next attempt probe instead. */
static void test_neutral_probe_frees_the_probe(void **state)
{
	struct breaker b = { 0 };

	(void)state;
	fail_times(&b, 5, 0);
	assert_int_equal(breaker_admit(&b, 30), BREAKER_PROBE);
	breaker_record(&b, &config, BREAKER_NEUTRAL, 1, 31);
	assert_int_equal(b.state, BREAKER_HALF_OPEN);
	assert_int_equal(breaker_peek(&b, 31), BREAKER_PROBE);
	assert_int_equal(breaker_admit(&b, 31), BREAKER_PROBE);
	assert_int_equal(breaker_admit(&b, 31), BREAKER_SKIP);
	breaker_record(&b, &config, BREAKER_SUCCESS, 1, 32);
	assert_int_equal(b.state, BREAKER_CLOSED);
}

/* Attempts that were in flight when the circuit opened: their failures
 * count without lengthening the cool-down; a success among them shows
 * the deployment serves, and closes it. */
static void test_late_results(void **state)
{
	struct breaker b = { 0 };

	(void)state;
	fail_times(&b, 5, 10);
	breaker_record(&b, &config, BREAKER_FAILURE, 0, 11);
	assert_int_equal(b.state, BREAKER_OPEN);
	assert_int_equal(b.failures, 6);
	assert_float_equal(b.open_until, 40, EPSILON);
	assert_int_equal(b.opened_total, 1);
	breaker_record(&b, &config, BREAKER_SUCCESS, 0, 12);
	assert_int_equal(b.state, BREAKER_CLOSED);
	assert_int_equal(b.failures, 0);
	/* and a probe whose circuit a late success already closed counts as
	 * any attempt */
	fail_times(&b, 5, 100);
	assert_int_equal(breaker_admit(&b, 130), BREAKER_PROBE);
	breaker_record(&b, &config, BREAKER_SUCCESS, 0, 131);
	breaker_record(&b, &config, BREAKER_FAILURE, 1, 132);
	assert_int_equal(b.state, BREAKER_CLOSED);
	assert_int_equal(b.failures, 1);
}

/* Another threshold and cool-down come from the config. */
static void test_config(void **state)
{
	const struct breaker_config two = { .threshold = 2, .cooldown_s = 1, .cooldown_max_s = 3 };
	struct breaker b = { 0 };

	(void)state;
	breaker_record(&b, &two, BREAKER_FAILURE, 0, 0);
	assert_int_equal(b.state, BREAKER_CLOSED);
	breaker_record(&b, &two, BREAKER_FAILURE, 0, 0);
	assert_int_equal(b.state, BREAKER_OPEN);
	assert_float_equal(b.open_until, 1, EPSILON);
	breaker_admit(&b, 1);
	breaker_record(&b, &two, BREAKER_FAILURE, 1, 1);
	assert_float_equal(b.open_until, 3, EPSILON);
	breaker_admit(&b, 3);
	breaker_record(&b, &two, BREAKER_FAILURE, 1, 3);
	assert_float_equal(b.open_until, 6, EPSILON); /* capped at 3 s */
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_defaults),
		cmocka_unit_test(test_opens_at_threshold),
		cmocka_unit_test(test_success_resets_the_count),
		cmocka_unit_test(test_probe_success_closes),
		cmocka_unit_test(test_probe_failure_doubles_the_cooldown),
		cmocka_unit_test(test_neutral_probe_frees_the_probe),
		cmocka_unit_test(test_late_results),
		cmocka_unit_test(test_config),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
