/* The engine thread: every backend transfer of the daemon runs here, on
 * one curl multi handle, so that no FUSE thread ever waits on the
 * network and thousands of jobs cost no threads.
 *
 * A job moves between five places: incoming (filled by engine_submit
 * under the lock), then, owned by the engine thread, waiting (for a
 * transfer slot, max_inflight), active (a transfer in the multi handle,
 * engine_attempt.c), backoff (waiting for its retry time) and token
 * (waiting for its cloud's OAuth token, engine_token.c). Cancellations
 * and credential updates arrive through the same lock.
 *
 * Each attempt goes to one candidate of the job's plan. Before it
 * starts, the candidate's circuit breaker and throttle have their say
 * (job_admit, engine_health.c): an open circuit skips the candidate, a
 * throttled deployment makes the job wait its turn. When the attempt
 * ends, engine_job_next_step reads the outcome table: a retryable
 * failure waits in backoff and tries the same candidate again, up to the
 * plan's retries (a timeout first tries the other candidates); a failure
 * worth failing over then moves to the next candidate; anything else
 * ends the job. */
#include "backends/engine_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "backends/metrics.h"
#include "backends/retry.h"

double engine_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

double engine_random01(struct engine *e)
{
	/* xorshift: jitter needs spread, not secrecy */
	unsigned x = e->rng;

	x ^= x << 13;
	x ^= x >> 17;
	x ^= x << 5;
	e->rng = x;
	return (double)(x % 1000000u) / 1000000.0;
}

/* ---- lists owned by the engine thread ---- */

void engine_waiting_push(struct engine *e, struct engine_job *job)
{
	job->place = PLACE_WAITING;
	job->next = NULL;
	if (e->waiting_tail)
		e->waiting_tail->next = job;
	else
		e->waiting_head = job;
	e->waiting_tail = job;
	e->n_waiting++;
}

static struct engine_job *waiting_pop(struct engine *e)
{
	struct engine_job *job = e->waiting_head;

	if (!job)
		return NULL;
	e->waiting_head = job->next;
	if (!e->waiting_head)
		e->waiting_tail = NULL;
	job->next = NULL;
	e->n_waiting--;
	return job;
}

static void waiting_remove(struct engine *e, struct engine_job *job)
{
	struct engine_job **pp = &e->waiting_head;
	struct engine_job *prev = NULL;

	while (*pp && *pp != job) {
		prev = *pp;
		pp = &(*pp)->next;
	}
	if (!*pp)
		return;
	*pp = job->next;
	if (e->waiting_tail == job)
		e->waiting_tail = prev;
	e->n_waiting--;
}

static void backoff_remove(struct engine *e, struct engine_job *job)
{
	struct engine_job **pp = &e->backoff;

	while (*pp && *pp != job)
		pp = &(*pp)->next;
	if (!*pp)
		return;
	*pp = job->next;
	e->n_backoff--;
}

void engine_active_add(struct engine *e, struct engine_job *job)
{
	job->place = PLACE_ACTIVE;
	job->prev_active = NULL;
	job->next_active = e->active;
	if (e->active)
		e->active->prev_active = job;
	e->active = job;
	e->n_active++;
}

void engine_active_remove(struct engine *e, struct engine_job *job)
{
	if (job->prev_active)
		job->prev_active->next_active = job->next_active;
	else
		e->active = job->next_active;
	if (job->next_active)
		job->next_active->prev_active = job->prev_active;
	job->prev_active = job->next_active = NULL;
	e->n_active--;
}

/* The job ends here: the sink's done() is its last call, then the
 * engine forgets it. */
void engine_job_finish(struct engine *e, struct engine_job *job, int status, const char *message)
{
	const struct engine_sink *sink = job->plan.sink;
	void *ctx = job->plan.sink_ctx;
	struct engine_job **pp;

	engine_health_release(e, job);
	engine_attempt_release(e, job);
	/* whoever learns of the end may read what its attempts did to the
	 * deployments' circuits */
	engine_health_publish(e);
	metrics_job_ended();
	sink->done(ctx, status, message);
	pthread_mutex_lock(&e->lock);
	if (job->in_cancel_list) {
		pp = &e->cancels;
		while (*pp && *pp != job)
			pp = &(*pp)->next_cancel;
		if (*pp)
			*pp = job->next_cancel;
	}
	pthread_mutex_unlock(&e->lock);
	llm_request_release(&job->plan.request);
	free(job);
}

/* Points JOB at candidate INDEX of its plan. */
static void candidate_select(struct engine_job *job, size_t index)
{
	job->candidate = index;
	job->model = job->plan.candidates[index];
	job->backend = backend_for(job->model->region->cloud->provider);
	job->candidate_mark[index] = CANDIDATE_DONE;
	job->throttle_waited = 0;
}

/* The candidate JOB should try next: the first untried one, else the
 * first deferred one; -1 when none is left. */
static int candidate_next(const struct engine_job *job)
{
	size_t i;

	for (i = 0; i < job->plan.n_candidates; i++) {
		if (job->candidate_mark[i] == CANDIDATE_UNTRIED)
			return (int)i;
	}
	for (i = 0; i < job->plan.n_candidates; i++) {
		if (job->candidate_mark[i] == CANDIDATE_DEFERRED)
			return (int)i;
	}
	return -1;
}

static int attempts_total(const struct engine_job *job)
{
	int total = 0;

	for (size_t i = 0; i < job->plan.n_candidates; i++)
		total += job->attempts_on[i];
	return total;
}

static void backoff_push(struct engine *e, struct engine_job *job, double delay)
{
	job->place = PLACE_BACKOFF;
	job->retry_at = engine_now() + delay;
	job->next = e->backoff;
	e->backoff = job;
	e->n_backoff++;
}

/* The wait the provider demands before JOB's next attempt on its
 * candidate, at NOW: its hint to JOB, or to every job sent there (0:
 * none). The back-off's own floor and jitter are not demands: they
 * never fail a job. */
static double wait_demanded(struct engine *e, const struct engine_job *job, double now)
{
	const struct deployment_health *h = engine_health_of(e, job->model);
	double wait = job->error.retry_after_s;

	if (h && throttle_asked_s(&h->throttle, now) > wait)
		wait = throttle_asked_s(&h->throttle, now);
	return wait > 0 ? wait : 0;
}

/* The pause before retrying JOB's candidate at NOW: the provider's hint
 * and the deployment's throttle, never under the exponential minimum of
 * this retry, with jitter (SPEC §7, docs/contract.md). */
static double retry_delay(struct engine *e, const struct engine_job *job, double now)
{
	const struct deployment_health *h = engine_health_of(e, job->model);
	double random01 = engine_random01(e);
	double delay = retry_wait_s(job->attempts_on[job->candidate] - 1, job->error.retry_after_s,
				    random01);
	double throttled = h ? throttle_wait_s(&h->throttle, now, random01) : 0;

	return throttled > delay ? throttled : delay;
}

/* Another attempt follows: the bytes the failed one streamed are never
 * part of the answer. (A job that ends failed keeps them on disk; its
 * readers get EIO either way.) */
static void attempt_bytes_discard(struct engine_job *job)
{
	if (job->streamed_text)
		job->plan.sink->attempt_discarded(job->plan.sink_ctx);
	job->streamed_text = 0;
}

/* Moves JOB on to its next candidate: 1 if there is one (JOB then waits
 * for a slot), else 0. */
static int candidate_advance(struct engine *e, struct engine_job *job)
{
	const struct engine_sink *sink = job->plan.sink;
	int next;

	for (;;) {
		next = candidate_next(job);
		if (next < 0)
			return 0;
		/* the sink may skip a candidate (one its budget cannot afford) */
		if (!sink->candidate ||
		    sink->candidate(job->plan.sink_ctx, job->plan.candidates[next]) == 0)
			break;
		job->candidate_mark[next] = CANDIDATE_DONE;
	}
	attempt_bytes_discard(job);
	candidate_select(job, (size_t)next);
	engine_waiting_push(e, job);
	return 1;
}

/* The same for a failure whose outcome is worth failing over. */
static int fail_over(struct engine *e, struct engine_job *job)
{
	return outcome_failover(job->error.outcome) && candidate_advance(e, job);
}

/* Adds NOTE to what JOB's message will say of skipped candidates. */
static void skip_note(struct engine_job *job, const char *note)
{
	size_t len = strlen(job->skipped);

	snprintf(job->skipped + len, sizeof(job->skipped) - len, "%s%s", len ? "; " : "", note);
}

/* JOB passes over its candidate without an attempt: NOTE joins what its
 * message will say (a sentence naming the deployment), and its sink
 * hears REASON, for .meta. */
static void candidate_skip(struct engine_job *job, const char *note, const char *reason)
{
	skip_note(job, note);
	if (job->plan.sink->skipped)
		job->plan.sink->skipped(job->plan.sink_ctx, job->model, reason);
}

/* JOB ends failed: its last attempt's error (if it made one), then the
 * candidates it skipped. */
static void job_fail(struct engine *e, struct engine_job *job, const char *message)
{
	char text[sizeof(job->error.message) + sizeof(job->skipped) + 64];

	if (!job->skipped[0])
		snprintf(text, sizeof(text), "%s", message);
	else if (attempts_total(job) == 0)
		snprintf(text, sizeof(text), "not sent: %s", job->skipped);
	else
		snprintf(text, sizeof(text), "%s; then %s", message, job->skipped);
	engine_job_finish(e, job, -EIO, text);
}

/* Timeouts cost a whole wait each: such a deployment is not asked again
 * before the job's other candidates have been tried. */
static int outcome_slow(enum outcome o)
{
	return o == OUTCOME_TIMEOUT || o == OUTCOME_FIRST_TOKEN_TIMEOUT;
}

void engine_job_next_step(struct engine *e, struct engine_job *job)
{
	const struct attempt_error *err = &job->error;
	const struct model *m = job->model;
	const struct deployment_health *h;
	char message[sizeof(err->message) + 256];
	double now = engine_now();
	double demanded;
	int retry;

	if (err->outcome == OUTCOME_OK) {
		engine_job_finish(e, job, 0, NULL);
		return;
	}
	if (err->outcome == OUTCOME_CANCELLED) {
		engine_job_finish(e, job, -ECANCELED, "the job was cancelled");
		return;
	}
	retry = outcome_retryable(err->outcome) &&
		job->attempts_on[job->candidate] <= job->plan.retries;
	h = engine_health_of(e, job->model);
	if (retry && h && breaker_peek(&h->breaker, now) == BREAKER_SKIP) {
		/* the circuit opened: no point waiting for it, job_admit
		 * moves the job on (or ends it) at once */
		attempt_bytes_discard(job);
		engine_waiting_push(e, job);
		return;
	}
	if (retry && outcome_slow(err->outcome) && outcome_failover(err->outcome) &&
	    candidate_next(job) >= 0) {
		job->candidate_mark[job->candidate] = CANDIDATE_DEFERRED;
		candidate_advance(e, job);
		return;
	}
	if (retry) {
		demanded = wait_demanded(e, job, now);
		if (demanded <= job->plan.timeout_s) {
			attempt_bytes_discard(job);
			backoff_push(e, job, retry_delay(e, job, now));
			job->throttle_waited = 1;
			return;
		}
		snprintf(message, sizeof(message),
			 "%s (%s/%s/%s asked to wait %.0f s, longer than the %g s an attempt may "
			 "take)",
			 err->message, m->region->cloud->name, m->region->name, m->name, demanded,
			 job->plan.timeout_s);
		if (fail_over(e, job))
			return;
		job_fail(e, job, message);
		return;
	}
	if (fail_over(e, job))
		return;
	job_fail(e, job, err->message);
}

/* Whether JOB's attempt may start now on its candidate, as its circuit
 * breaker and throttle say: 0 yes (JOB is admitted); 1 no: JOB waits in
 * backoff, or has moved on to another candidate, or has ended. */
static int job_admit(struct engine *e, struct engine_job *job, double now)
{
	struct deployment_health *h;
	const struct model *m;
	char note[384], reason[160];
	double wait;

	while (!job->admitted) {
		h = engine_health_of(e, job->model);
		if (!h) {
			job->admitted = 1; /* no memory for its record: unguarded */
			break;
		}
		m = job->model;
		if (breaker_peek(&h->breaker, now) == BREAKER_SKIP) {
			engine_health_skip_reason(h, now, note, sizeof(note));
			engine_health_circuit_reason(h, now, reason, sizeof(reason));
		} else if (!job->throttle_waited && h->throttle.not_before > now) {
			wait = throttle_asked_s(&h->throttle, now);
			if (wait <= job->plan.timeout_s) {
				/* its turn, as for every job sent there */
				backoff_push(
					e, job,
					throttle_wait_s(&h->throttle, now, engine_random01(e)));
				job->throttle_waited = 1;
				return 1;
			}
			snprintf(reason, sizeof(reason),
				 "it asked to wait %.0f s, longer than the %g s an attempt may "
				 "take",
				 wait, job->plan.timeout_s);
			snprintf(note, sizeof(note), "%s/%s/%s is skipped: %s",
				 m->region->cloud->name, m->region->name, m->name, reason);
		} else {
			job->probe = breaker_admit(&h->breaker, now) == BREAKER_PROBE;
			job->admitted = 1;
			if (job->probe)
				e->health.dirty = 1;
			break;
		}
		candidate_skip(job, note, reason);
		if (candidate_advance(e, job))
			return 1; /* back in the waiting list, for its next candidate */
		job_fail(e, job, job->error.message);
		return 1;
	}
	return 0;
}

static void start_waiting_jobs(struct engine *e)
{
	struct engine_job *job;
	int rc;

	while (e->n_active < e->opts.max_inflight) {
		const char *token = NULL;

		job = waiting_pop(e);
		if (!job)
			return;
		if (job_admit(e, job, engine_now()))
			continue;
		rc = engine_oauth_token_for(e, job, &token);
		if (rc == 1)
			continue; /* parked until the refresh ends */
		if (rc < 0) {
			engine_attempt_begin_failed(e, job);
			continue;
		}
		engine_attempt_begin(e, job, token);
	}
}

static void wake_due_backoffs(struct engine *e, double now)
{
	struct engine_job **pp = &e->backoff;

	while (*pp) {
		struct engine_job *job = *pp;

		if (job->retry_at <= now) {
			*pp = job->next;
			e->n_backoff--;
			engine_waiting_push(e, job);
		} else {
			pp = &job->next;
		}
	}
}

static void check_first_token_timeouts(struct engine *e, double now)
{
	struct engine_job *job = e->active;

	while (job) {
		struct engine_job *next = job->next_active;
		double limit = job->plan.first_token_timeout_s;

		if (limit > 0 && !job->streamed_text && now - job->attempt_started > limit) {
			attempt_error_set(&job->error, OUTCOME_FIRST_TOKEN_TIMEOUT,
					  "no answer byte arrived within %g s", limit);
			engine_attempt_end(e, job);
		}
		job = next;
	}
}

static void cancel_job(struct engine *e, struct engine_job *job)
{
	switch (job->place) {
	case PLACE_WAITING:
		waiting_remove(e, job);
		break;
	case PLACE_BACKOFF:
		backoff_remove(e, job);
		break;
	case PLACE_ACTIVE:
		/* the attempt ends as cancelled, and with it the job */
		attempt_error_set(&job->error, OUTCOME_CANCELLED, "the job was cancelled");
		engine_attempt_end(e, job);
		return;
	case PLACE_TOKEN:
		engine_token_waiter_remove(e, job);
		break;
	case PLACE_INCOMING:
		break;
	}
	engine_job_finish(e, job, -ECANCELED, "the job was cancelled");
}

/* Moves what other threads handed in to the engine thread's lists. */
static int take_handovers(struct engine *e)
{
	struct engine_job *incoming, *cancels, *job;
	void (*update_fn)(void *);
	void *update_arg;
	int stopping;

	pthread_mutex_lock(&e->lock);
	e->wake_sent = 0; /* what is handed in from now on needs a wakeup */
	update_fn = e->update_fn;
	update_arg = e->update_arg;
	e->update_fn = NULL;
	incoming = e->incoming_head;
	e->incoming_head = e->incoming_tail = NULL;
	e->n_incoming = 0;
	cancels = e->cancels;
	e->cancels = NULL;
	for (job = cancels; job; job = job->next_cancel)
		job->in_cancel_list = 0;
	stopping = e->stopping;
	pthread_mutex_unlock(&e->lock);

	if (update_fn) {
		update_fn(update_arg);
		/* tokens of the old credentials must not outlive them; jobs
		 * waiting for one are requeued and ask again */
		for (struct cloud_token *ct = e->tokens; ct; ct = ct->next)
			engine_token_waiters_resume(e, ct);
		engine_tokens_free(e);
	}
	while (incoming) {
		job = incoming;
		incoming = job->next;
		engine_waiting_push(e, job);
	}
	while (cancels) {
		job = cancels;
		cancels = job->next_cancel;
		cancel_job(e, job);
	}
	return stopping;
}

static int poll_timeout_ms(struct engine *e, double now)
{
	double soonest = now + 1.0;
	struct engine_job *job;

	for (job = e->backoff; job; job = job->next) {
		if (job->retry_at < soonest)
			soonest = job->retry_at;
	}
	for (job = e->active; job; job = job->next_active) {
		double limit = job->plan.first_token_timeout_s;

		if (limit > 0 && !job->streamed_text && job->attempt_started + limit < soonest)
			soonest = job->attempt_started + limit;
	}
	if (soonest <= now)
		return 0;
	return (int)((soonest - now) * 1000) + 1;
}

static void collect_finished_transfers(struct engine *e)
{
	struct engine_job *job;
	CURLMsg *msg;
	int queued;

	for (;;) {
		msg = curl_multi_info_read(e->multi, &queued);
		if (!msg)
			return;
		if (msg->msg != CURLMSG_DONE)
			continue;
		if (engine_token_transfer_done(e, msg->easy_handle, msg->data.result))
			continue;
		job = NULL;
		curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&job);
		if (job)
			engine_attempt_transfer_done(e, job, msg->data.result);
	}
}

static void cancel_everything(struct engine *e)
{
	struct engine_job *job;

	while (e->active)
		cancel_job(e, e->active);
	while (e->backoff) {
		job = e->backoff;
		cancel_job(e, job);
	}
	for (struct cloud_token *ct = e->tokens; ct; ct = ct->next)
		engine_token_waiters_resume(e, ct);
	while (e->waiting_head) {
		job = e->waiting_head;
		cancel_job(e, job);
	}
	engine_tokens_free(e);
}

static void *engine_main(void *arg)
{
	struct engine *e = arg;
	int running;
	double now;

	for (;;) {
		if (take_handovers(e))
			break;
		now = engine_now();
		wake_due_backoffs(e, now);
		check_first_token_timeouts(e, now);
		start_waiting_jobs(e);
		curl_multi_perform(e->multi, &running);
		collect_finished_transfers(e);
		/* finished transfers free slots: start more before sleeping */
		start_waiting_jobs(e);
		engine_health_publish(e);
		curl_multi_poll(e->multi, NULL, 0, poll_timeout_ms(e, engine_now()), NULL);
	}
	/* take what arrived with the stop request, then end it all */
	take_handovers(e);
	cancel_everything(e);
	return NULL;
}

struct engine *engine_new(const struct engine_options *opts, int *err_out)
{
	struct engine *e;
	int rc;

	e = calloc(1, sizeof(*e));
	if (!e) {
		*err_out = -ENOMEM;
		return NULL;
	}
	e->opts = *opts;
	if (e->opts.max_inflight == 0)
		e->opts.max_inflight = 1;
	e->rng = (unsigned)time(NULL) ^ ((unsigned)getpid() << 16) ^ 0x9e3779b9u;
	if (e->rng == 0)
		e->rng = 1;
	pthread_mutex_init(&e->lock, NULL);
	rc = engine_health_init(e, &opts->breaker);
	if (rc < 0)
		goto err_lock;
	e->multi = curl_multi_init();
	if (!e->multi) {
		rc = -ENOMEM;
		goto err_health;
	}
	/* keep-alive connections for every job in flight, not curl's default 4x */
	curl_multi_setopt(e->multi, CURLMOPT_MAXCONNECTS, (long)e->opts.max_inflight);
	curl_multi_setopt(e->multi, CURLMOPT_PIPELINING, (long)CURLPIPE_MULTIPLEX);
	rc = -pthread_create(&e->thread, NULL, engine_main, e);
	if (rc < 0)
		goto err_multi;
	pthread_setname_np(e->thread, "pfs-engine"); /* what top -H and perf show */
	return e;

err_multi:
	curl_multi_cleanup(e->multi);
err_health:
	engine_health_free(e);
err_lock:
	pthread_mutex_destroy(&e->lock);
	free(e);
	*err_out = rc;
	return NULL;
}

void engine_free(struct engine *e)
{
	if (!e)
		return;
	pthread_mutex_lock(&e->lock);
	e->stopping = 1;
	pthread_mutex_unlock(&e->lock);
	curl_multi_wakeup(e->multi);
	pthread_join(e->thread, NULL);
	curl_multi_cleanup(e->multi);
	engine_health_free(e);
	pthread_mutex_destroy(&e->lock);
	free(e);
}

struct engine_job *engine_submit(struct engine *e, struct engine_plan *plan)
{
	struct engine_job *job;
	int wake;

	job = plan->n_candidates > 0 ? calloc(1, sizeof(*job)) : NULL;
	if (!job) {
		llm_request_release(&plan->request);
		return NULL;
	}
	job->engine = e;
	job->plan = *plan;
	if (job->plan.n_candidates > ENGINE_MAX_CANDIDATES)
		job->plan.n_candidates = ENGINE_MAX_CANDIDATES;
	memset(&plan->request, 0, sizeof(plan->request));
	candidate_select(job, 0);
	job->place = PLACE_INCOMING;
	metrics_job_queued();

	pthread_mutex_lock(&e->lock);
	if (e->incoming_tail)
		e->incoming_tail->next = job;
	else
		e->incoming_head = job;
	e->incoming_tail = job;
	e->n_incoming++;
	/* one wakeup until the engine takes the list: under many writers it
	 * is mostly awake already, and each wakeup is a syscall here and a
	 * return from poll() there */
	wake = !e->wake_sent;
	e->wake_sent = 1;
	pthread_mutex_unlock(&e->lock);
	if (wake)
		curl_multi_wakeup(e->multi);
	return job;
}

void engine_cancel(struct engine *e, struct engine_job *job)
{
	pthread_mutex_lock(&e->lock);
	if (!job->cancel_requested) {
		job->cancel_requested = 1;
		job->in_cancel_list = 1;
		job->next_cancel = e->cancels;
		e->cancels = job;
	}
	pthread_mutex_unlock(&e->lock);
	curl_multi_wakeup(e->multi);
}

int engine_run_credentials_update(struct engine *e, void (*fn)(void *arg), void *arg)
{
	int rc = 0;

	pthread_mutex_lock(&e->lock);
	if (e->update_fn)
		rc = -EBUSY; /* the previous one has not run yet */
	else {
		e->update_fn = fn;
		e->update_arg = arg;
	}
	pthread_mutex_unlock(&e->lock);
	curl_multi_wakeup(e->multi);
	return rc;
}
