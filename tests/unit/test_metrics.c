/* Unit tests of the counters (backends/metrics.c) and of /.metrics as
 * text (fs/metrics.c): exact samples for what was counted, outcome words
 * as .meta writes them (keys giving one word added up), histogram buckets
 * at their bounds, label escaping, money in fixed decimal, deployments
 * listed at zero, figures of unknown deployments dropped, and threads
 * counting at once without losing a count. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "backends/metrics.h"
#include "fs/metrics.h"

/* Two clouds: aws with two models, one whose name needs escaping; local
 * with a region whose name holds a newline. */
struct fixture {
	struct config cfg;
	struct cloud clouds[2];
	struct region aws_regions[1], local_regions[1];
	struct model aws_models[2], local_models[1];
};

static struct fixture fx;

static const struct model *claude, *weird, *llama;

static int setup(void **state)
{
	(void)state;
	memset(&fx, 0, sizeof(fx));
	fx.clouds[0].name = "aws";
	fx.clouds[0].regions = fx.aws_regions;
	fx.clouds[0].n_regions = 1;
	fx.aws_regions[0].name = "eu-central-1";
	fx.aws_regions[0].cloud = &fx.clouds[0];
	fx.aws_regions[0].models = fx.aws_models;
	fx.aws_regions[0].n_models = 2;
	fx.aws_models[0].name = "claude";
	fx.aws_models[0].region = &fx.aws_regions[0];
	fx.aws_models[1].name = "we\"ird\\name";
	fx.aws_models[1].region = &fx.aws_regions[0];
	fx.clouds[1].name = "local";
	fx.clouds[1].regions = fx.local_regions;
	fx.clouds[1].n_regions = 1;
	fx.local_regions[0].name = "lo\ncal";
	fx.local_regions[0].cloud = &fx.clouds[1];
	fx.local_regions[0].models = fx.local_models;
	fx.local_regions[0].n_models = 1;
	fx.local_models[0].name = "llama";
	fx.local_models[0].region = &fx.local_regions[0];
	fx.cfg.clouds = fx.clouds;
	fx.cfg.n_clouds = 2;
	claude = &fx.aws_models[0];
	weird = &fx.aws_models[1];
	llama = &fx.local_models[0];
	assert_int_equal(metrics_init(&fx.cfg), 0);
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	metrics_free();
	return 0;
}

static char *render(void)
{
	size_t len = 0;
	char *text = metrics_file_text(NULL, &len);

	assert_non_null(text);
	assert_int_equal(strlen(text), len);
	assert_true(len > 0 && text[len - 1] == '\n');
	return text;
}

/* Whether TEXT holds LINE as a whole line. */
static int has_line(const char *text, const char *line)
{
	size_t n = strlen(line);

	for (const char *p = text; (p = strstr(p, line)) != NULL; p++) {
		if ((p == text || p[-1] == '\n') && p[n] == '\n')
			return 1;
	}
	return 0;
}

#define assert_line(text, line)                                            \
	do {                                                               \
		if (!has_line(text, line))                                 \
			fail_msg("missing line: %s\nin:\n%s", line, text); \
	} while (0)

#define CLAUDE "cloud=\"aws\",region=\"eu-central-1\",model=\"claude\""

/* One attempt on MODEL: started, then ended with OUTCOME. */
static void attempt(const struct model *model, const struct model *previous, enum outcome outcome,
		    long status, long ms, long ttfb_ms)
{
	struct engine_attempt_report report = {
		.model = model,
		.outcome = outcome,
		.http_status = status,
		.elapsed_ms = ms,
		.ttfb_ms = ttfb_ms,
	};

	metrics_attempt_started(model, previous);
	metrics_attempt_ended(&report);
}

/* Every deployment is listed before anything happened, every family
 * with its HELP and TYPE. */
static void test_zero_listing(void **state)
{
	static const char *const families[][2] = {
		{ "promptfs_requests_total", "counter" },
		{ "promptfs_attempt_duration_seconds", "histogram" },
		{ "promptfs_time_to_first_byte_seconds", "histogram" },
		{ "promptfs_tokens_total", "counter" },
		{ "promptfs_cost_usd_total", "counter" },
		{ "promptfs_retries_total", "counter" },
		{ "promptfs_failovers_total", "counter" },
		{ "promptfs_circuit_state", "gauge" },
		{ "promptfs_circuit_opens_total", "counter" },
		{ "promptfs_jobs_queued", "gauge" },
		{ "promptfs_jobs_in_flight", "gauge" },
		{ "promptfs_parked_readers", "gauge" },
	};
	char *text = render();
	char line[256];

	(void)state;
	for (size_t i = 0; i < sizeof(families) / sizeof(families[0]); i++) {
		snprintf(line, sizeof(line), "# TYPE %s %s", families[i][0], families[i][1]);
		assert_line(text, line);
		snprintf(line, sizeof(line), "# HELP %s ", families[i][0]);
		assert_non_null(strstr(text, line));
	}
	assert_line(text, "promptfs_requests_total{" CLAUDE ",outcome=\"ok\"} 0");
	assert_line(text, "promptfs_requests_total{cloud=\"local\",region=\"lo\\ncal\","
			  "model=\"llama\",outcome=\"ok\"} 0");
	/* backslash and double quote escaped */
	assert_line(text, "promptfs_retries_total{cloud=\"aws\",region=\"eu-central-1\","
			  "model=\"we\\\"ird\\\\name\"} 0");
	assert_line(text, "promptfs_attempt_duration_seconds_bucket{" CLAUDE ",le=\"+Inf\"} 0");
	assert_line(text, "promptfs_attempt_duration_seconds_sum{" CLAUDE "} 0.000");
	assert_line(text, "promptfs_time_to_first_byte_seconds_count{" CLAUDE "} 0");
	assert_line(text, "promptfs_tokens_total{" CLAUDE ",direction=\"input\"} 0");
	assert_line(text, "promptfs_tokens_total{" CLAUDE ",direction=\"output\"} 0");
	assert_line(text, "promptfs_cost_usd_total{" CLAUDE "} 0");
	assert_line(text, "promptfs_circuit_state{" CLAUDE "} 0");
	assert_line(text, "promptfs_circuit_opens_total{" CLAUDE "} 0");
	assert_line(text, "promptfs_jobs_queued 0");
	assert_line(text, "promptfs_jobs_in_flight 0");
	assert_line(text, "promptfs_parked_readers 0");
	/* no other outcome before it happened */
	assert_null(strstr(text, "http_"));
	free(text);
}

/* A job retried twice on claude, then failed over to the weird one,
 * which answered: outcomes, retries, failovers, histograms, tokens, cost. */
static void test_one_job_with_retries_and_failover(void **state)
{
	char *text;

	(void)state;
	metrics_job_queued();
	attempt(claude, NULL, OUTCOME_HTTP_RETRYABLE, 503, 50, 10);
	attempt(claude, claude, OUTCOME_HTTP_RETRYABLE, 503, 51, 25);
	attempt(claude, claude, OUTCOME_TIMEOUT, 0, 400000, -1);
	/* the job is queued between attempts, in flight during one */
	metrics_attempt_started(weird, claude);
	text = render();
	assert_line(text, "promptfs_jobs_queued 0");
	assert_line(text, "promptfs_jobs_in_flight 1");
	free(text);
	{
		struct engine_attempt_report ok = {
			.model = weird,
			.outcome = OUTCOME_OK,
			.http_status = 200,
			.elapsed_ms = 1234,
			.ttfb_ms = 999,
		};
		metrics_attempt_ended(&ok);
	}
	metrics_job_ended();
	metrics_job_charged(weird, 12, 30, 486000); /* 0.000486 USD */

	text = render();
	assert_line(text, "promptfs_requests_total{" CLAUDE ",outcome=\"ok\"} 0");
	assert_line(text, "promptfs_requests_total{" CLAUDE ",outcome=\"http_503\"} 2");
	assert_line(text, "promptfs_requests_total{" CLAUDE ",outcome=\"timeout\"} 1");
	assert_line(text, "promptfs_retries_total{" CLAUDE "} 2");
	assert_line(text, "promptfs_failovers_total{" CLAUDE "} 1");
	/* 50 ms is at the 0.05 bound, 51 above it, 400 s above every bound */
	assert_line(text, "promptfs_attempt_duration_seconds_bucket{" CLAUDE ",le=\"0.05\"} 1");
	assert_line(text, "promptfs_attempt_duration_seconds_bucket{" CLAUDE ",le=\"0.1\"} 2");
	assert_line(text, "promptfs_attempt_duration_seconds_bucket{" CLAUDE ",le=\"300\"} 2");
	assert_line(text, "promptfs_attempt_duration_seconds_bucket{" CLAUDE ",le=\"+Inf\"} 3");
	assert_line(text, "promptfs_attempt_duration_seconds_count{" CLAUDE "} 3");
	assert_line(text, "promptfs_attempt_duration_seconds_sum{" CLAUDE "} 400.101");
	/* time to first byte only where a first byte came */
	assert_line(text, "promptfs_time_to_first_byte_seconds_bucket{" CLAUDE ",le=\"0.025\"} 2");
	assert_line(text, "promptfs_time_to_first_byte_seconds_count{" CLAUDE "} 2");
	assert_line(text, "promptfs_time_to_first_byte_seconds_sum{" CLAUDE "} 0.035");

#define WEIRD "cloud=\"aws\",region=\"eu-central-1\",model=\"we\\\"ird\\\\name\""
	assert_line(text, "promptfs_requests_total{" WEIRD ",outcome=\"ok\"} 1");
	assert_line(text, "promptfs_retries_total{" WEIRD "} 0");
	assert_line(text, "promptfs_failovers_total{" WEIRD "} 0");
	assert_line(text, "promptfs_attempt_duration_seconds_bucket{" WEIRD ",le=\"1\"} 0");
	assert_line(text, "promptfs_attempt_duration_seconds_bucket{" WEIRD ",le=\"2.5\"} 1");
	assert_line(text, "promptfs_attempt_duration_seconds_sum{" WEIRD "} 1.234");
	assert_line(text, "promptfs_time_to_first_byte_seconds_bucket{" WEIRD ",le=\"0.5\"} 0");
	assert_line(text, "promptfs_time_to_first_byte_seconds_bucket{" WEIRD ",le=\"1\"} 1");
	assert_line(text, "promptfs_tokens_total{" WEIRD ",direction=\"input\"} 12");
	assert_line(text, "promptfs_tokens_total{" WEIRD ",direction=\"output\"} 30");
	assert_line(text, "promptfs_cost_usd_total{" WEIRD "} 0.000486");
	assert_line(text, "promptfs_cost_usd_total{" CLAUDE "} 0");
	assert_line(text, "promptfs_jobs_queued 0");
	assert_line(text, "promptfs_jobs_in_flight 0");
	/* never an exponent */
	assert_null(strstr(text, "e-"));
	free(text);
}

/* Outcomes are the words of .meta: two outcomes with one word are one
 * sample, "ok" comes first and the rest by word; an HTTP status is kept
 * only where the word shows it. */
static void test_outcome_words(void **state)
{
	char *text, *ok, *http, *stream;

	(void)state;
	attempt(llama, NULL, OUTCOME_HTTP_REJECTED, 400, 1, 1);
	attempt(llama, NULL, OUTCOME_HTTP_RETRYABLE, 400, 1, 1); /* x-should-retry: true */
	attempt(llama, NULL, OUTCOME_AUTH, 401, 1, 1);
	attempt(llama, NULL, OUTCOME_PROVIDER_ERROR, 200, 1, 1);
	attempt(llama, NULL, OUTCOME_PROVIDER_REJECTED, 200, 1, 1);
	attempt(llama, NULL, OUTCOME_TOKEN_UNAVAILABLE, 0, 1, -1);
	attempt(llama, NULL, OUTCOME_OK, 200, 1, 1);
	text = render();
#define LLAMA "cloud=\"local\",region=\"lo\\ncal\",model=\"llama\""
	assert_line(text, "promptfs_requests_total{" LLAMA ",outcome=\"ok\"} 1");
	assert_line(text, "promptfs_requests_total{" LLAMA ",outcome=\"http_400\"} 2");
	assert_line(text, "promptfs_requests_total{" LLAMA ",outcome=\"http_401\"} 1");
	assert_line(text, "promptfs_requests_total{" LLAMA ",outcome=\"stream_error\"} 2");
	/* no answer from the token endpoint at all, as .meta says */
	assert_line(text, "promptfs_requests_total{" LLAMA ",outcome=\"auth\"} 1");
	assert_line(text, "promptfs_attempt_duration_seconds_count{" LLAMA "} 7");
	assert_line(text, "promptfs_time_to_first_byte_seconds_count{" LLAMA "} 6");
	ok = strstr(text, LLAMA ",outcome=\"ok\"");
	http = strstr(text, LLAMA ",outcome=\"http_400\"");
	stream = strstr(text, LLAMA ",outcome=\"stream_error\"");
	assert_true(ok && http && stream && ok < http && http < stream);
	free(text);
}

/* More distinct outcomes than slots: the rest is counted as "other",
 * nothing is lost. */
static void test_outcome_overflow(void **state)
{
	char *text, line[160];

	(void)state;
	for (long status = 500; status < 500 + METRICS_OUTCOME_SLOTS + 5; status++)
		attempt(claude, NULL, OUTCOME_HTTP_RETRYABLE, status, 1, 1);
	text = render();
	assert_line(text, "promptfs_requests_total{" CLAUDE ",outcome=\"http_500\"} 1");
	snprintf(line, sizeof(line), "promptfs_requests_total{" CLAUDE ",outcome=\"http_%d\"} 1",
		 500 + METRICS_OUTCOME_SLOTS - 1);
	assert_line(text, line);
	assert_line(text, "promptfs_requests_total{" CLAUDE ",outcome=\"other\"} 5");
	snprintf(line, sizeof(line), "promptfs_attempt_duration_seconds_count{" CLAUDE "} %d",
		 METRICS_OUTCOME_SLOTS + 5);
	assert_line(text, line);
	free(text);
}

/* A deployment not in the config counts nowhere; the gauges still move. */
static void test_unknown_deployment(void **state)
{
	struct model stranger = { .name = "stranger", .region = &fx.aws_regions[0] };
	char *text;

	(void)state;
	metrics_job_queued();
	attempt(&stranger, NULL, OUTCOME_OK, 200, 10, 5);
	metrics_job_charged(&stranger, 5, 5, 5);
	metrics_parked_readers_add(1);
	text = render();
	assert_null(strstr(text, "stranger"));
	assert_line(text, "promptfs_jobs_queued 1");
	assert_line(text, "promptfs_parked_readers 1");
	free(text);
	metrics_job_ended();
	metrics_parked_readers_add(-1);
	text = render();
	assert_line(text, "promptfs_jobs_queued 0");
	assert_line(text, "promptfs_parked_readers 0");
	free(text);
}

/* The breakers' copy (engine_breaker_snapshot) gives each deployment
 * it names its state and opens; the others stay closed, a deployment
 * not in the config is ignored. */
static void test_circuits(void **state)
{
	struct model stranger = { .name = "stranger", .region = &fx.aws_regions[0] };
	struct engine_breaker_entry entries[] = {
		{ .model = claude, .state = BREAKER_OPEN, .opened_total = 2 },
		{ .model = &stranger, .state = BREAKER_OPEN, .opened_total = 9 },
		{ .model = weird, .state = BREAKER_HALF_OPEN, .opened_total = 1 },
	};
	struct metrics_snapshot s;
	size_t len;
	char *text;

	(void)state;
	assert_int_equal(metrics_snapshot_take(&s), 0);
	metrics_snapshot_add_circuits(&s, entries, sizeof(entries) / sizeof(entries[0]));
	text = metrics_file_render(&s, &len);
	metrics_snapshot_release(&s);
	assert_non_null(text);
	assert_line(text, "promptfs_circuit_state{" CLAUDE "} 1");
	assert_line(text, "promptfs_circuit_opens_total{" CLAUDE "} 2");
	assert_line(text, "promptfs_circuit_state{" WEIRD "} 2");
	assert_line(text, "promptfs_circuit_opens_total{" WEIRD "} 1");
	assert_line(text, "promptfs_circuit_state{" LLAMA "} 0");
	assert_line(text, "promptfs_circuit_opens_total{" LLAMA "} 0");
	assert_null(strstr(text, "stranger"));
	free(text);
}

#define THREADS 4
#define PER_THREAD 5000

static void *count_attempts(void *arg)
{
	long n = (long)(intptr_t)arg;

	for (long i = 0; i < PER_THREAD; i++) {
		metrics_job_queued();
		/* every thread claims the same new outcome slots at once */
		attempt(llama, NULL, OUTCOME_HTTP_RETRYABLE, 500 + (i + n) % 7, i % 100, 1);
		metrics_job_charged(llama, 1, 2, 1);
		metrics_job_ended();
	}
	return NULL;
}

/* Threads counting at once lose nothing: no count waits on a lock. */
static void test_threads_count_exactly(void **state)
{
	pthread_t threads[THREADS];
	struct metrics_snapshot s;
	uint64_t attempts = 0;

	(void)state;
	for (long i = 0; i < THREADS; i++)
		assert_int_equal(
			pthread_create(&threads[i], NULL, count_attempts, (void *)(intptr_t)i), 0);
	for (int i = 0; i < THREADS; i++)
		pthread_join(threads[i], NULL);
	assert_int_equal(metrics_snapshot_take(&s), 0);
	assert_int_equal(s.n_deployments, 3);
	assert_ptr_equal(s.deployments[2].model, llama);
	/* "ok" and the seven statuses, each in one sample */
	assert_int_equal(s.deployments[2].n_outcomes, 8);
	for (size_t i = 1; i < s.deployments[2].n_outcomes; i++)
		attempts += s.deployments[2].outcomes[i].count;
	assert_int_equal(attempts, THREADS * PER_THREAD);
	assert_int_equal(s.deployments[2].duration.cumulative[metrics_duration_buckets.n],
			 THREADS * PER_THREAD);
	assert_int_equal(s.deployments[2].input_tokens, THREADS * PER_THREAD);
	assert_int_equal(s.deployments[2].output_tokens, 2 * THREADS * PER_THREAD);
	assert_int_equal(s.deployments[2].cost_nusd, THREADS * PER_THREAD);
	assert_int_equal(s.jobs_queued, 0);
	assert_int_equal(s.jobs_in_flight, 0);
	metrics_snapshot_release(&s);
}

#define METRICS_TEST(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
		METRICS_TEST(test_zero_listing),
		METRICS_TEST(test_one_job_with_retries_and_failover),
		METRICS_TEST(test_outcome_words),
		METRICS_TEST(test_outcome_overflow),
		METRICS_TEST(test_unknown_deployment),
		METRICS_TEST(test_circuits),
		METRICS_TEST(test_threads_count_exactly),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
