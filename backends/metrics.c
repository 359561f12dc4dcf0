/* The daemon's counters (see metrics.h).
 *
 * Each deployment has its counters in one struct, found from its model's
 * address by binary search in a table sorted once at metrics_init. An
 * attempt's outcome is kept under a key of (outcome, HTTP status): a slot
 * is claimed with one compare-and-swap the first time its key is seen,
 * so counting never blocks, whoever counts; the words of .meta are made
 * from the keys when read, and keys giving the same word are added up.
 * Histogram buckets are counted each on its own (not cumulative), so an
 * observation is one increment, and the reader makes them cumulative: a
 * histogram read while an attempt is counted is off by that attempt at
 * most, never inconsistent in itself (+Inf is always _count). */
#include "backends/metrics.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* clang-format off */
const struct metrics_buckets metrics_duration_buckets = {
	13,
	{ 50, 100, 250, 500, 1000, 2500, 5000, 10000, 20000, 30000, 60000, 120000, 300000 },
	{ "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "10", "20", "30", "60", "120", "300" },
};

const struct metrics_buckets metrics_ttfb_buckets = {
	11,
	{ 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000 },
	{ "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "10", "30", "60" },
};
/* clang-format on */

struct outcome_slot {
	_Atomic uint32_t key; /* 0: free; else outcome_key() */
	_Atomic uint64_t count;
};

struct histogram {
	_Atomic uint64_t bucket[METRICS_MAX_BUCKETS + 1]; /* the last: above every bound */
	_Atomic uint64_t sum_ms;
};

struct deployment_counters {
	const struct model *model;
	struct outcome_slot outcomes[METRICS_OUTCOME_SLOTS];
	_Atomic uint64_t other_outcomes; /* when every slot is taken */
	struct histogram duration, ttfb;
	_Atomic uint64_t retries, failovers;
	_Atomic uint64_t input_tokens, output_tokens;
	_Atomic int64_t cost_nusd;
};

struct by_address {
	uintptr_t model;
	struct deployment_counters *counters;
};

struct registry {
	struct deployment_counters *deployments; /* in config order */
	struct by_address *index;		 /* sorted by model address */
	size_t n;
};

/* Set before the threads that count start, cleared after they stopped;
 * atomic all the same, so that a test may set it while an engine runs. */
static _Atomic(struct registry *) registry;

static _Atomic int64_t jobs_queued, jobs_in_flight, parked_readers;

static int by_address_compare(const void *a, const void *b)
{
	uintptr_t x = ((const struct by_address *)a)->model;
	uintptr_t y = ((const struct by_address *)b)->model;

	return x < y ? -1 : x > y;
}

int metrics_init_models(const struct model *const *models, size_t n)
{
	struct registry *r = calloc(1, sizeof(*r));

	if (!r)
		return -ENOMEM;
	r->n = n;
	r->deployments = calloc(n ? n : 1, sizeof(*r->deployments));
	r->index = calloc(n ? n : 1, sizeof(*r->index));
	if (!r->deployments || !r->index) {
		free(r->deployments);
		free(r->index);
		free(r);
		return -ENOMEM;
	}
	for (size_t i = 0; i < n; i++) {
		r->deployments[i].model = models[i];
		r->index[i].model = (uintptr_t)models[i];
		r->index[i].counters = &r->deployments[i];
	}
	qsort(r->index, n, sizeof(*r->index), by_address_compare);
	metrics_free();
	atomic_store_explicit(&registry, r, memory_order_release);
	return 0;
}

int metrics_init(const struct config *cfg)
{
	const struct model **models;
	size_t n = 0, k = 0;
	int rc;

	for (size_t c = 0; c < cfg->n_clouds; c++)
		for (size_t r = 0; r < cfg->clouds[c].n_regions; r++)
			n += cfg->clouds[c].regions[r].n_models;
	models = calloc(n ? n : 1, sizeof(*models));
	if (!models)
		return -ENOMEM;
	for (size_t c = 0; c < cfg->n_clouds; c++)
		for (size_t r = 0; r < cfg->clouds[c].n_regions; r++)
			for (size_t m = 0; m < cfg->clouds[c].regions[r].n_models; m++)
				models[k++] = &cfg->clouds[c].regions[r].models[m];
	rc = metrics_init_models(models, n);
	free(models);
	return rc;
}

void metrics_free(void)
{
	struct registry *r = atomic_exchange(&registry, NULL);

	if (!r)
		return;
	free(r->deployments);
	free(r->index);
	free(r);
}

/* MODEL's counters, or NULL when it was not registered. */
static struct deployment_counters *counters_of(const struct model *model)
{
	struct registry *r = atomic_load_explicit(&registry, memory_order_acquire);
	struct by_address key = { .model = (uintptr_t)model };
	struct by_address *found;

	if (!r || !model)
		return NULL;
	found = bsearch(&key, r->index, r->n, sizeof(*r->index), by_address_compare);
	return found ? found->counters : NULL;
}

static void add(_Atomic uint64_t *counter, uint64_t n)
{
	atomic_fetch_add_explicit(counter, n, memory_order_relaxed);
}

static void gauge_add(_Atomic int64_t *gauge, int64_t delta)
{
	atomic_fetch_add_explicit(gauge, delta, memory_order_relaxed);
}

/* The key of an attempt's outcome: the HTTP status is kept only where
 * the word shows it ("http_503"), so that "timeout" is one key. */
static uint32_t outcome_key(enum outcome o, long http_status)
{
	if ((unsigned)o >= OUTCOME_COUNT)
		o = OUTCOME_LOCAL_ERROR;
	if (!strstr(outcome_info(o)->word, "%ld") || http_status <= 0 || http_status > 0xffff)
		http_status = 0;
	return ((uint32_t)o + 1) << 16 | (uint32_t)http_status;
}

static void count_outcome(struct deployment_counters *d, uint32_t key)
{
	for (size_t i = 0; i < METRICS_OUTCOME_SLOTS; i++) {
		struct outcome_slot *slot = &d->outcomes[i];
		uint32_t seen = atomic_load_explicit(&slot->key, memory_order_acquire);

		if (seen == 0 && atomic_compare_exchange_strong(&slot->key, &seen, key))
			seen = key;
		if (seen == key) {
			add(&slot->count, 1);
			return;
		}
	}
	add(&d->other_outcomes, 1);
}

static void histogram_observe(struct histogram *h, const struct metrics_buckets *b, long ms)
{
	size_t i = 0;

	if (ms < 0)
		ms = 0;
	while (i < b->n && ms > b->le_ms[i])
		i++;
	add(&h->bucket[i], 1);
	add(&h->sum_ms, (uint64_t)ms);
}

void metrics_job_queued(void)
{
	gauge_add(&jobs_queued, 1);
}

void metrics_attempt_started(const struct model *model, const struct model *previous)
{
	struct deployment_counters *d;

	gauge_add(&jobs_queued, -1);
	gauge_add(&jobs_in_flight, 1);
	if (!previous)
		return;
	if (previous == model) {
		d = counters_of(model);
		if (d)
			add(&d->retries, 1);
	} else {
		d = counters_of(previous);
		if (d)
			add(&d->failovers, 1);
	}
}

void metrics_attempt_ended(const struct engine_attempt_report *report)
{
	struct deployment_counters *d = counters_of(report->model);

	gauge_add(&jobs_in_flight, -1);
	gauge_add(&jobs_queued, 1);
	if (!d)
		return;
	count_outcome(d, outcome_key(report->outcome, report->http_status));
	histogram_observe(&d->duration, &metrics_duration_buckets, report->elapsed_ms);
	if (report->ttfb_ms >= 0)
		histogram_observe(&d->ttfb, &metrics_ttfb_buckets, report->ttfb_ms);
}

void metrics_job_ended(void)
{
	gauge_add(&jobs_queued, -1);
}

void metrics_job_charged(const struct model *model, uint64_t input_tokens, uint64_t output_tokens,
			 int64_t cost_nusd)
{
	struct deployment_counters *d = counters_of(model);

	if (!d)
		return;
	add(&d->input_tokens, input_tokens);
	add(&d->output_tokens, output_tokens);
	atomic_fetch_add_explicit(&d->cost_nusd, cost_nusd, memory_order_relaxed);
}

void metrics_parked_readers_add(int delta)
{
	gauge_add(&parked_readers, delta);
}

/* ---- reading ---- */

static uint64_t load(_Atomic uint64_t *counter)
{
	return atomic_load_explicit(counter, memory_order_relaxed);
}

static uint64_t gauge_load(_Atomic int64_t *gauge)
{
	int64_t v = atomic_load_explicit(gauge, memory_order_relaxed);

	return v > 0 ? (uint64_t)v : 0;
}

static void histogram_read(struct histogram *h, const struct metrics_buckets *b,
			   struct metrics_histogram_view *out)
{
	uint64_t total = 0;

	for (size_t i = 0; i <= b->n; i++) {
		total += load(&h->bucket[i]);
		out->cumulative[i] = total;
	}
	out->sum_ms = load(&h->sum_ms);
}

static int outcome_view_compare(const void *a, const void *b)
{
	return strcmp(((const struct metrics_outcome_view *)a)->word,
		      ((const struct metrics_outcome_view *)b)->word);
}

/* Adds COUNT attempts under WORD to OUT (N entries so far). */
static void outcome_view_add(struct metrics_outcome_view *out, size_t *n, const char *word,
			     uint64_t count)
{
	for (size_t i = 0; i < *n; i++) {
		if (strcmp(out[i].word, word) == 0) {
			out[i].count += count;
			return;
		}
	}
	snprintf(out[*n].word, sizeof(out[*n].word), "%s", word);
	out[*n].count = count;
	(*n)++;
}

static void outcomes_read(struct deployment_counters *d, struct metrics_deployment_view *out)
{
	char word[32];

	out->n_outcomes = 0;
	outcome_view_add(out->outcomes, &out->n_outcomes, "ok", 0);
	for (size_t i = 0; i < METRICS_OUTCOME_SLOTS; i++) {
		uint32_t key = atomic_load_explicit(&d->outcomes[i].key, memory_order_acquire);

		if (key == 0)
			break; /* slots are claimed in order */
		outcome_word((enum outcome)((key >> 16) - 1), (long)(key & 0xffff), word,
			     sizeof(word));
		outcome_view_add(out->outcomes, &out->n_outcomes, word,
				 load(&d->outcomes[i].count));
	}
	if (load(&d->other_outcomes))
		outcome_view_add(out->outcomes, &out->n_outcomes, "other",
				 load(&d->other_outcomes));
	qsort(out->outcomes + 1, out->n_outcomes - 1, sizeof(out->outcomes[0]),
	      outcome_view_compare);
}

int metrics_snapshot_take(struct metrics_snapshot *out)
{
	struct registry *r = atomic_load_explicit(&registry, memory_order_acquire);
	size_t n = r ? r->n : 0;

	memset(out, 0, sizeof(*out));
	out->deployments = calloc(n ? n : 1, sizeof(*out->deployments));
	if (!out->deployments)
		return -ENOMEM;
	out->n_deployments = n;
	for (size_t i = 0; i < n; i++) {
		struct deployment_counters *d = &r->deployments[i];
		struct metrics_deployment_view *v = &out->deployments[i];

		v->model = d->model;
		outcomes_read(d, v);
		histogram_read(&d->duration, &metrics_duration_buckets, &v->duration);
		histogram_read(&d->ttfb, &metrics_ttfb_buckets, &v->ttfb);
		v->retries = load(&d->retries);
		v->failovers = load(&d->failovers);
		v->input_tokens = load(&d->input_tokens);
		v->output_tokens = load(&d->output_tokens);
		v->cost_nusd = atomic_load_explicit(&d->cost_nusd, memory_order_relaxed);
		v->circuit = METRICS_CIRCUIT_CLOSED;
	}
	out->jobs_queued = gauge_load(&jobs_queued);
	out->jobs_in_flight = gauge_load(&jobs_in_flight);
	out->parked_readers = gauge_load(&parked_readers);
	return 0;
}

static enum metrics_circuit circuit_of(enum breaker_state state)
{
	switch (state) {
	case BREAKER_OPEN:
		return METRICS_CIRCUIT_OPEN;
	case BREAKER_HALF_OPEN:
		return METRICS_CIRCUIT_HALF_OPEN;
	default:
		return METRICS_CIRCUIT_CLOSED;
	}
}

void metrics_snapshot_add_circuits(struct metrics_snapshot *s,
				   const struct engine_breaker_entry *entries, size_t n)
{
	/* a few deployments each: no index needed */
	for (size_t i = 0; i < n; i++) {
		for (size_t k = 0; k < s->n_deployments; k++) {
			struct metrics_deployment_view *v = &s->deployments[k];

			if (v->model == entries[i].model) {
				v->circuit = circuit_of(entries[i].state);
				v->circuit_opens = entries[i].opened_total;
				break;
			}
		}
	}
}

void metrics_snapshot_release(struct metrics_snapshot *s)
{
	free(s->deployments);
	s->deployments = NULL;
	s->n_deployments = 0;
}
