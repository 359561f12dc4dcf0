/* What the engine reports about a job (on its thread): the attempt's
 * bytes appended to the response and handed to waiting readers, usage,
 * attempts; the end goes to job_finish.c. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fs/job_internal.h"
#include "fs/log.h"
#include "fs/prompt.h"
#include "fs/state.h"

static void sink_attempt_started(void *ctx, const struct model *model)
{
	struct job *job = ctx;
	const struct model *before;
	char target[256];
	size_t n;

	pthread_mutex_lock(&jobs_lock);
	before = job->last_tried;
	n = json_array_size(json_object_get(job->meta, "attempts"));
	pthread_mutex_unlock(&jobs_lock);
	/* each retry and failover is a line (the first attempt is not) */
	if (before) {
		route_target_name(model, target, sizeof(target));
		log_info("job %s.prompt: %s to %s (attempt %zu)", job->base,
			 before == model ? "retry" : "failover", target, n + 1);
	}
	pthread_mutex_lock(&jobs_lock);
	if (job->status == JOB_QUEUED) {
		job->status = JOB_RUNNING;
		json_object_set_new(job->meta, "status", json_string("running"));
		if (!json_object_get(job->meta, "started"))
			job_meta_set_time(job->meta, "started");
	}
	pthread_mutex_unlock(&jobs_lock);
}

static int sink_text(void *ctx, const char *bytes, size_t len)
{
	struct job *job = ctx;
	struct wakeups w = { 0 };
	ssize_t written;
	int rc = 0;

	pthread_mutex_lock(&jobs_lock);
	if (job->detached) {
		rc = -ECANCELED;
		goto out;
	}
	/* a page-cache write: fast enough to do under the lock, which keeps
	 * size and contents consistent for readers */
	for (size_t done = 0; done < len; done += (size_t)written) {
		written = pwrite(job->response_fd, bytes + done, len - done,
				 (off_t)(job->size + done));
		/* a short write is retried for the reason it stopped, e.g.
		 * ENOSPC, which the job's .error then names */
		if (written < 0 && errno == EINTR) {
			written = 0;
			continue;
		}
		if (written <= 0) {
			rc = written < 0 ? -errno : -EIO;
			goto out;
		}
	}
	job->size += len;
	job_wake_readers(job, &w);
out:
	pthread_mutex_unlock(&jobs_lock);
	wakeups_deliver(&w);
	return rc;
}

static void sink_attempt_discarded(void *ctx)
{
	struct job *job = ctx;
	struct wakeups w = { 0 };

	pthread_mutex_lock(&jobs_lock);
	if (!job->detached && ftruncate(job->response_fd, 0) < 0)
		log_warn("cannot truncate a response: %s", strerror(errno));
	job->size = 0;
	job->generation++;
	job_wake_readers(job, &w);
	pthread_mutex_unlock(&jobs_lock);
	wakeups_deliver(&w);
}

static void sink_usage(void *ctx, long input_tokens, long output_tokens)
{
	struct job *job = ctx;
	json_t *usage;

	pthread_mutex_lock(&jobs_lock);
	usage = json_object_get(job->meta, "usage");
	if (!usage) {
		usage = json_object();
		json_object_set_new(job->meta, "usage", usage);
	}
	if (usage && input_tokens >= 0)
		json_object_set_new(usage, "input_tokens", json_integer(input_tokens));
	if (usage && output_tokens >= 0)
		json_object_set_new(usage, "output_tokens", json_integer(output_tokens));
	pthread_mutex_unlock(&jobs_lock);
}

static void sink_finish_reason(void *ctx, enum finish_reason reason, const char *provider_word)
{
	struct job *job = ctx;
	const char *word = finish_reason_word(reason);

	if (!word)
		word = provider_word ? provider_word : "unknown";
	pthread_mutex_lock(&jobs_lock);
	json_object_set_new(job->meta, "finish_reason", json_string(word));
	pthread_mutex_unlock(&jobs_lock);
}

static void sink_request_id(void *ctx, const char *id)
{
	struct job *job = ctx;

	pthread_mutex_lock(&jobs_lock);
	json_object_set_new(job->meta, "request_id", json_string(id));
	pthread_mutex_unlock(&jobs_lock);
}

static void sink_attempt_ended(void *ctx, const struct engine_attempt_report *report)
{
	struct job *job = ctx;
	json_t *attempts, *attempt;
	char route[3 * 256 + 3];
	char word[32];

	route_target_name(report->model, route, sizeof(route));
	outcome_word(report->outcome, report->http_status, word, sizeof(word));
	if (report->http_status)
		log_debug("job %s.prompt: %s answered HTTP %ld (%s) in %ld ms", job->base, route,
			  report->http_status, word, report->elapsed_ms);
	else
		log_debug("job %s.prompt: %s: %s after %ld ms", job->base, route, word,
			  report->elapsed_ms);
	pthread_mutex_lock(&jobs_lock);
	attempts = json_object_get(job->meta, "attempts");
	if (!attempts) {
		attempts = json_array();
		json_object_set_new(job->meta, "attempts", attempts);
	}
	attempt = json_pack("{s:s, s:s, s:I}", "target", route, "outcome", word, "ms",
			    (json_int_t)report->elapsed_ms);
	if (attempt && report->ttfb_ms >= 0)
		json_object_set_new(attempt, "ttfb_ms", json_integer(report->ttfb_ms));
	if (attempts && attempt)
		json_array_append_new(attempts, attempt);
	else
		json_decref(attempt);
	if (report->outcome == OUTCOME_OK) {
		json_object_set_new(job->meta, "route", json_string(route));
		job->served = report->model;
	}
	job->last_tried = report->model;
	if (report->outcome == OUTCOME_AUTH)
		job->refused_auth = report->model;
	pthread_mutex_unlock(&jobs_lock);
	route_note_latency(report->model, report->ttfb_ms);
}

/* Adds WHY ("TARGET skipped: reason") to .meta's list of the candidates
 * JOB passed over without an attempt. */
static void meta_add_skipped(struct job *job, const char *why)
{
	json_t *skipped;

	pthread_mutex_lock(&jobs_lock);
	skipped = json_object_get(job->meta, "skipped");
	if (!skipped) {
		skipped = json_array();
		json_object_set_new(job->meta, "skipped", skipped);
	}
	if (skipped)
		json_array_append_new(skipped, json_string(why));
	pthread_mutex_unlock(&jobs_lock);
}

/* A failover to MODEL: its price must fit the budgets (SPEC §7); a
 * candidate skipped is listed in .meta with the reason. */
static int sink_candidate(void *ctx, const struct model *model)
{
	struct job *job = ctx;
	char why[512];
	int rc = job_policy_follow_candidate(job, model, why, sizeof(why));

	if (rc == 0)
		return 0;
	meta_add_skipped(job, why);
	return rc;
}

/* The engine passed over MODEL (its circuit, its throttle): listed in
 * .meta the way a candidate the budget cannot afford is, since the
 * attempts alone would not show why the job went elsewhere or failed. */
static void sink_skipped(void *ctx, const struct model *model, const char *reason)
{
	struct job *job = ctx;
	char target[256], why[512];

	route_target_name(model, target, sizeof(target));
	snprintf(why, sizeof(why), "%s skipped: %s", target, reason);
	meta_add_skipped(job, why);
}

static void sink_done(void *ctx, int status, const char *message)
{
	struct job *job = ctx;

	/* the engine forgets the job now: nobody may cancel it any more */
	pthread_mutex_lock(&jobs_lock);
	job->engine_job = NULL;
	pthread_mutex_unlock(&jobs_lock);
	job_finish(job, status, message);
}

const struct engine_sink job_engine_sink = {
	.attempt_started = sink_attempt_started,
	.text = sink_text,
	.attempt_discarded = sink_attempt_discarded,
	.usage = sink_usage,
	.finish_reason = sink_finish_reason,
	.request_id = sink_request_id,
	.attempt_ended = sink_attempt_ended,
	.candidate = sink_candidate,
	.skipped = sink_skipped,
	.done = sink_done,
};
