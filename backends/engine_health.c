/* What the engine knows of each deployment it sends to: its circuit
 * breaker (breaker.c) and its throttle (retry.c), kept by the engine
 * thread in a small hash table keyed by the deployment, and a copy of
 * it for other threads (/.metrics), published after every change under
 * a lock of its own, so that a reader never holds up a submission. */
#include "backends/engine_internal.h"

#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define HEALTH_INITIAL_SLOTS 16

int engine_health_init(struct engine *e, const struct breaker_config *config)
{
	struct health_table *t = &e->health;

	memset(t, 0, sizeof(*t));
	breaker_config_default(&t->config);
	if (config->threshold)
		t->config.threshold = config->threshold;
	if (config->cooldown_s > 0)
		t->config.cooldown_s = config->cooldown_s;
	if (config->cooldown_max_s > 0)
		t->config.cooldown_max_s = config->cooldown_max_s;
	if (t->config.cooldown_max_s < t->config.cooldown_s)
		t->config.cooldown_max_s = t->config.cooldown_s;
	return -pthread_mutex_init(&t->published_lock, NULL);
}

void engine_health_free(struct engine *e)
{
	struct health_table *t = &e->health;

	free(t->slots);
	free(t->published);
	pthread_mutex_destroy(&t->published_lock);
	memset(t, 0, sizeof(*t));
}

static size_t slot_of(const struct model *model, size_t cap)
{
	uint64_t key = (uint64_t)(uintptr_t)model;

	/* Fibonacci hashing of the address: its low bits are alignment */
	return (size_t)((key * UINT64_C(0x9e3779b97f4a7c15)) >> 32) & (cap - 1);
}

static struct deployment_health *slot_find(struct deployment_health *slots, size_t cap,
					   const struct model *model)
{
	size_t i = slot_of(model, cap);

	while (slots[i].model && slots[i].model != model)
		i = (i + 1) & (cap - 1);
	return &slots[i];
}

static int table_grow(struct health_table *t)
{
	size_t cap = t->cap ? t->cap * 2 : HEALTH_INITIAL_SLOTS;
	struct deployment_health *slots = calloc(cap, sizeof(*slots));

	if (!slots)
		return -ENOMEM;
	for (size_t i = 0; i < t->cap; i++) {
		if (t->slots[i].model)
			*slot_find(slots, cap, t->slots[i].model) = t->slots[i];
	}
	free(t->slots);
	t->slots = slots;
	t->cap = cap;
	return 0;
}

struct deployment_health *engine_health_of(struct engine *e, const struct model *model)
{
	struct health_table *t = &e->health;
	struct deployment_health *h;

	if (t->cap) {
		h = slot_find(t->slots, t->cap, model);
		if (h->model)
			return h;
	}
	/* at most half full, so that probing stays short */
	if ((t->n + 1) * 2 > t->cap && table_grow(t) < 0)
		return NULL;
	h = slot_find(t->slots, t->cap, model);
	memset(h, 0, sizeof(*h));
	h->model = model;
	t->n++;
	t->dirty = 1;
	return h;
}

void engine_health_attempt_ended(struct engine *e, struct engine_job *job)
{
	const struct attempt_error *err = &job->error;
	long status = job->head.status ? job->head.status : err->http_status;
	struct deployment_health *h;
	enum breaker_result result;
	double now = engine_now();
	double not_before;
	int rate_limited;

	job->throttle_waited = 0; /* the wait was for this attempt */
	if (!job->admitted)
		return;
	job->admitted = 0;
	h = engine_health_of(e, job->model);
	if (!h)
		return;
	if (err->outcome == OUTCOME_OK)
		result = BREAKER_SUCCESS;
	else if (outcome_deployment_fault(err->outcome, status))
		result = BREAKER_FAILURE;
	else
		result = BREAKER_NEUTRAL;
	if (breaker_record(&h->breaker, &e->health.config, result, job->probe, now))
		e->health.dirty = 1;
	job->probe = 0;

	rate_limited = outcome_rate_limited(err->outcome, status);
	not_before = h->throttle.not_before;
	if (err->outcome == OUTCOME_OK)
		throttle_clear(&h->throttle);
	else if (outcome_retryable(err->outcome) && (rate_limited || err->retry_after_s >= 0))
		throttle_note(&h->throttle, rate_limited, err->retry_after_s, job->attempt_started,
			      now);
	if (h->throttle.not_before != not_before)
		e->health.dirty = 1;
}

void engine_health_release(struct engine *e, struct engine_job *job)
{
	struct deployment_health *h;

	if (!job->admitted)
		return;
	job->admitted = 0;
	if (!job->probe)
		return;
	job->probe = 0;
	h = engine_health_of(e, job->model);
	if (h && breaker_record(&h->breaker, &e->health.config, BREAKER_NEUTRAL, 1, engine_now()))
		e->health.dirty = 1;
}

/* Monotonic engine time T as Unix time, for readers on other clocks. */
static double wall_time_of(double t, double mono_now, double wall_now)
{
	return wall_now + (t - mono_now);
}

static double unix_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

void engine_health_circuit_reason(const struct deployment_health *h, double now, char *buf,
				  size_t size)
{
	char until[32];
	struct tm tm;
	time_t t;

	if (h->breaker.state != BREAKER_OPEN) {
		snprintf(buf, size,
			 "circuit half open: its one probe request is out, after %u failed "
			 "attempts in a row",
			 h->breaker.failures);
		return;
	}
	/* a UTC time, not "28 s more": .meta is read long after; rounded
	 * up, so that it never names a moment before the probe may go */
	t = (time_t)ceil(wall_time_of(h->breaker.open_until, now, unix_now()));
	if (!gmtime_r(&t, &tm) || !strftime(until, sizeof(until), "%Y-%m-%dT%H:%M:%SZ", &tm))
		snprintf(until, sizeof(until), "%lld", (long long)t);
	snprintf(buf, size, "circuit open until %s, after %u failed attempts in a row", until,
		 h->breaker.failures);
}

void engine_health_skip_reason(const struct deployment_health *h, double now, char *buf,
			       size_t size)
{
	const struct model *m = h->model;

	if (h->breaker.state == BREAKER_OPEN)
		snprintf(buf, size,
			 "%s/%s/%s is skipped for %.0f s more after %u failed attempts in a row "
			 "(circuit open)",
			 m->region->cloud->name, m->region->name, m->name,
			 h->breaker.open_until - now + 0.5, h->breaker.failures);
	else
		snprintf(buf, size,
			 "%s/%s/%s is skipped while one probe request tests it, after %u failed "
			 "attempts in a row (circuit half open)",
			 m->region->cloud->name, m->region->name, m->name, h->breaker.failures);
}

void engine_health_publish(struct engine *e)
{
	struct health_table *t = &e->health;
	struct engine_breaker_entry *entries;
	double mono_now, wall;
	size_t n = 0;

	if (!t->dirty)
		return;
	wall = unix_now();
	mono_now = engine_now();
	pthread_mutex_lock(&t->published_lock);
	if (t->cap_published < t->n) {
		/* grown under the lock: a reader copies a consistent array */
		entries = realloc(t->published, t->cap * sizeof(*entries));
		if (!entries) {
			pthread_mutex_unlock(&t->published_lock);
			return; /* stays dirty: tried again at the next turn */
		}
		t->published = entries;
		t->cap_published = t->cap;
	}
	for (size_t i = 0; i < t->cap; i++) {
		const struct deployment_health *h = &t->slots[i];
		struct engine_breaker_entry *out;

		if (!h->model)
			continue;
		out = &t->published[n++];
		out->model = h->model;
		out->state = h->breaker.state;
		out->consecutive_failures = h->breaker.failures;
		out->opened_total = h->breaker.opened_total;
		out->open_until = h->breaker.state == BREAKER_CLOSED
					  ? 0
					  : wall_time_of(h->breaker.open_until, mono_now, wall);
		out->not_before = h->throttle.not_before > mono_now
					  ? wall_time_of(h->throttle.not_before, mono_now, wall)
					  : 0;
	}
	t->n_published = n;
	pthread_mutex_unlock(&t->published_lock);
	t->dirty = 0;
}

size_t engine_breaker_snapshot(struct engine *e, struct engine_breaker_entry *out, size_t max)
{
	struct health_table *t = &e->health;
	size_t n;

	pthread_mutex_lock(&t->published_lock);
	n = t->n_published;
	if (out && max && n)
		memcpy(out, t->published, (n < max ? n : max) * sizeof(*out));
	pthread_mutex_unlock(&t->published_lock);
	return n;
}
