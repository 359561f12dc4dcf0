/* `/.metrics` (see metrics.h): the counters' copy written out.
 *
 * Every deployment of the config is listed, at zero too, so a dashboard
 * sees it before its first request: its "ok" requests, its histograms,
 * tokens, cost, retries, failovers and circuit state. Label values are
 * escaped as the format asks (backslash, double quote, newline); money is
 * fixed decimal, never an exponent; durations are seconds with the
 * milliseconds the engine measures. */
#include "fs/metrics.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include "fs/ledger.h"
#include "fs/made_file.h"

/* One family's HELP and TYPE lines. */
static void family(FILE *f, const char *name, const char *type, const char *help)
{
	fprintf(f, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void put_escaped(FILE *f, const char *value)
{
	for (const char *p = value; *p; p++) {
		if (*p == '\\')
			fputs("\\\\", f);
		else if (*p == '"')
			fputs("\\\"", f);
		else if (*p == '\n')
			fputs("\\n", f);
		else
			fputc(*p, f);
	}
}

/* The labels naming deployment V, without braces. */
static void put_deployment(FILE *f, const struct metrics_deployment_view *v)
{
	fputs("cloud=\"", f);
	put_escaped(f, v->model->region->cloud->name);
	fputs("\",region=\"", f);
	put_escaped(f, v->model->region->name);
	fputs("\",model=\"", f);
	put_escaped(f, v->model->name);
	fputc('"', f);
}

/* One sample NAME{deployment} VALUE. */
static void put_sample(FILE *f, const char *name, const struct metrics_deployment_view *v,
		       uint64_t value)
{
	fprintf(f, "%s{", name);
	put_deployment(f, v);
	fprintf(f, "} %" PRIu64 "\n", value);
}

static void put_requests(FILE *f, const struct metrics_snapshot *s)
{
	family(f, "promptfs_requests_total", "counter",
	       "Attempts sent to a deployment, by how they ended (the outcome words of .meta).");
	for (size_t i = 0; i < s->n_deployments; i++) {
		const struct metrics_deployment_view *v = &s->deployments[i];

		for (size_t k = 0; k < v->n_outcomes; k++) {
			fputs("promptfs_requests_total{", f);
			put_deployment(f, v);
			fputs(",outcome=\"", f);
			put_escaped(f, v->outcomes[k].word);
			fprintf(f, "\"} %" PRIu64 "\n", v->outcomes[k].count);
		}
	}
}

static void put_histogram(FILE *f, const char *name, const struct metrics_deployment_view *v,
			  const struct metrics_histogram_view *h, const struct metrics_buckets *b)
{
	char sample[96];

	for (size_t i = 0; i <= b->n; i++) {
		fprintf(f, "%s_bucket{", name);
		put_deployment(f, v);
		fprintf(f, ",le=\"%s\"} %" PRIu64 "\n", i < b->n ? b->le_text[i] : "+Inf",
			h->cumulative[i]);
	}
	fprintf(f, "%s_sum{", name);
	put_deployment(f, v);
	fprintf(f, "} %" PRIu64 ".%03" PRIu64 "\n", h->sum_ms / 1000, h->sum_ms % 1000);
	/* +Inf and _count are one figure, read once */
	snprintf(sample, sizeof(sample), "%s_count", name);
	put_sample(f, sample, v, h->cumulative[b->n]);
}

static void put_histograms(FILE *f, const struct metrics_snapshot *s)
{
	family(f, "promptfs_attempt_duration_seconds", "histogram",
	       "How long attempts took, from the start of the request to its end.");
	for (size_t i = 0; i < s->n_deployments; i++)
		put_histogram(f, "promptfs_attempt_duration_seconds", &s->deployments[i],
			      &s->deployments[i].duration, &metrics_duration_buckets);
	family(f, "promptfs_time_to_first_byte_seconds", "histogram",
	       "Time from the start of an attempt to the first byte of its response, for the "
	       "attempts that got one.");
	for (size_t i = 0; i < s->n_deployments; i++)
		put_histogram(f, "promptfs_time_to_first_byte_seconds", &s->deployments[i],
			      &s->deployments[i].ttfb, &metrics_ttfb_buckets);
}

static void put_tokens_and_cost(FILE *f, const struct metrics_snapshot *s)
{
	char money[32];

	family(f, "promptfs_tokens_total", "counter",
	       "Tokens the provider reported for the jobs a deployment served, as charged at "
	       "their end.");
	for (size_t i = 0; i < s->n_deployments; i++) {
		const struct metrics_deployment_view *v = &s->deployments[i];

		fputs("promptfs_tokens_total{", f);
		put_deployment(f, v);
		fprintf(f, ",direction=\"input\"} %" PRIu64 "\n", v->input_tokens);
		fputs("promptfs_tokens_total{", f);
		put_deployment(f, v);
		fprintf(f, ",direction=\"output\"} %" PRIu64 "\n", v->output_tokens);
	}
	family(f, "promptfs_cost_usd_total", "counter",
	       "What the jobs a deployment served cost in USD, as charged to the budgets.");
	for (size_t i = 0; i < s->n_deployments; i++) {
		fputs("promptfs_cost_usd_total{", f);
		put_deployment(f, &s->deployments[i]);
		fprintf(f, "} %s\n",
			nusd_format(s->deployments[i].cost_nusd, money, sizeof(money)));
	}
}

static void put_routing(FILE *f, const struct metrics_snapshot *s)
{
	family(f, "promptfs_retries_total", "counter",
	       "Attempts sent to a deployment again right after an attempt there failed.");
	for (size_t i = 0; i < s->n_deployments; i++)
		put_sample(f, "promptfs_retries_total", &s->deployments[i],
			   s->deployments[i].retries);
	family(f, "promptfs_failovers_total", "counter",
	       "Jobs that moved from this deployment to another one after an attempt here "
	       "failed.");
	for (size_t i = 0; i < s->n_deployments; i++)
		put_sample(f, "promptfs_failovers_total", &s->deployments[i],
			   s->deployments[i].failovers);
	family(f, "promptfs_circuit_state", "gauge",
	       "The circuit breaker's state of a deployment: 0 closed, 1 open, 2 half-open.");
	for (size_t i = 0; i < s->n_deployments; i++)
		put_sample(f, "promptfs_circuit_state", &s->deployments[i],
			   (uint64_t)s->deployments[i].circuit);
	family(f, "promptfs_circuit_opens_total", "counter",
	       "Times the circuit breaker opened the circuit of a deployment.");
	for (size_t i = 0; i < s->n_deployments; i++)
		put_sample(f, "promptfs_circuit_opens_total", &s->deployments[i],
			   s->deployments[i].circuit_opens);
}

static void put_gauge(FILE *f, const char *name, const char *help, uint64_t value)
{
	family(f, name, "gauge", help);
	fprintf(f, "%s %" PRIu64 "\n", name, value);
}

char *metrics_file_render(const struct metrics_snapshot *s, size_t *len)
{
	char *text = NULL;
	size_t size = 0;
	FILE *f = open_memstream(&text, &size);

	if (!f)
		return NULL;
	put_requests(f, s);
	put_histograms(f, s);
	put_tokens_and_cost(f, s);
	put_routing(f, s);
	put_gauge(f, "promptfs_jobs_queued",
		  "Jobs waiting for their next attempt: for a transfer slot (max_inflight), an "
		  "OAuth token or a retry's back-off.",
		  s->jobs_queued);
	put_gauge(f, "promptfs_jobs_in_flight", "Jobs with an attempt in progress.",
		  s->jobs_in_flight);
	put_gauge(f, "promptfs_parked_readers",
		  "Reads of a .response waiting for the answer's next bytes.", s->parked_readers);
	if (ferror(f)) {
		fclose(f);
		free(text);
		return NULL;
	}
	if (fclose(f) != 0) {
		free(text);
		return NULL;
	}
	*len = size;
	return text;
}

/* The circuit breakers' copy ENGINE published (no lock a submission
 * takes), into S. Without memory for it, every circuit reads closed. */
static void add_circuits(struct metrics_snapshot *s, struct engine *engine)
{
	struct engine_breaker_entry *entries = NULL;
	size_t max = s->n_deployments, n = 0;

	if (!engine)
		return; /* read before the engine started */
	for (;;) {
		struct engine_breaker_entry *grown =
			realloc(entries, (max ? max : 1) * sizeof(*entries));

		if (!grown)
			break;
		entries = grown;
		n = engine_breaker_snapshot(engine, entries, max);
		if (n <= max)
			break;
		max = n; /* more than the config's (cannot be): room for all */
	}
	if (entries && n <= max)
		metrics_snapshot_add_circuits(s, entries, n);
	free(entries);
}

char *metrics_file_text(struct engine *engine, size_t *len)
{
	struct metrics_snapshot s;
	char *text;

	if (metrics_snapshot_take(&s) < 0)
		return NULL;
	add_circuits(&s, engine);
	text = metrics_file_render(&s, len);
	metrics_snapshot_release(&s);
	return text;
}

void metrics_file_stat(struct engine *engine, struct stat *st)
{
	size_t len = 0;
	char *text = metrics_file_text(engine, &len);

	free(text);
	made_file_stat(st, len);
}
