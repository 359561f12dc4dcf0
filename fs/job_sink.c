/* What the engine reports about a job (on its thread): the attempt's
 * bytes appended to the response and handed to waiting readers, usage,
 * attempts, and the end, written durably: the response first, then
 * .error, then .meta. */
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

	(void)model;
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
	written = pwrite(job->response_fd, bytes, len, (off_t)job->size);
	if (written != (ssize_t)len) {
		rc = written < 0 ? -errno : -EIO;
		goto out;
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

static double cost_of(const struct model *model, long input_tokens, long output_tokens)
{
	return (double)input_tokens / 1e6 * model->price.input_per_mtok +
	       (double)output_tokens / 1e6 * model->price.output_per_mtok;
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

/* "cloud/region/model", the name of a deployment in .meta and .error. */
static void model_route(const struct model *model, char *buf, size_t size)
{
	snprintf(buf, size, "%s/%s/%s", model->region->cloud->name, model->region->name,
		 model->name);
}

static void sink_attempt_ended(void *ctx, const struct engine_attempt_report *report)
{
	struct job *job = ctx;
	json_t *attempts, *attempt;
	char route[3 * 256 + 3];
	char word[32];

	model_route(report->model, route, sizeof(route));
	outcome_word(report->outcome, report->http_status, word, sizeof(word));
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
	pthread_mutex_unlock(&jobs_lock);
}

/* The usage of a finished job, and what it cost where the price is known.
 * Under jobs_lock. */
static void meta_settle_cost(json_t *meta, const struct model *model)
{
	json_t *usage = json_object_get(meta, "usage");
	long in, out;

	if (!usage || !model->price.known)
		return;
	in = (long)json_integer_value(json_object_get(usage, "input_tokens"));
	out = (long)json_integer_value(json_object_get(usage, "output_tokens"));
	json_object_set_new(meta, "cost_usd", json_real(cost_of(model, in, out)));
}

/* The .error text: what happened, then one line per attempt. */
static char *error_text(const json_t *meta, const char *message)
{
	json_t *attempts = json_object_get(meta, "attempts");
	size_t i, size = strlen(message) + 64;
	json_t *a;
	char *text, *p;

	json_array_foreach (attempts, i, a)
		size += 96 + strlen(json_string_value(json_object_get(a, "target")) ?: "") +
			strlen(json_string_value(json_object_get(a, "outcome")) ?: "");
	text = malloc(size);
	if (!text)
		return NULL;
	p = text + snprintf(text, size, "%s\n", message);
	/* the first line is a sentence */
	if (text[0] >= 'a' && text[0] <= 'z')
		text[0] = (char)(text[0] - 'a' + 'A');
	json_array_foreach (attempts, i, a) {
		p += snprintf(p, size - (size_t)(p - text), "attempt %zu: %s: %s after %lld ms\n",
			      i + 1, json_string_value(json_object_get(a, "target")) ?: "?",
			      json_string_value(json_object_get(a, "outcome")) ?: "?",
			      (long long)json_integer_value(json_object_get(a, "ms")));
	}
	return text;
}

/* Writes the end of a job durably: the response first, then .error, then
 * .meta, so a .meta saying done always has its whole response. */
void job_persist_end(struct job *job, enum job_status final, const char *meta_text, size_t meta_len,
		     const char *error)
{
	char *meta_name = name_with_suffix(job->base, ".meta");
	char *error_name = name_with_suffix(job->base, ".error");
	int rc = 0, dir_fd = -1;

	if (!meta_name || !error_name) {
		log_error("out of memory recording a finished job");
		goto out;
	}
	if (fsync(job->response_fd) < 0)
		rc = -errno;
	if (rc == 0)
		rc = dir_fd = node_dir_fd(job->dir);
	if (rc >= 0)
		rc = 0;
	if (rc == 0 && final != JOB_DONE && error)
		rc = state_write_file(dir_fd, error_name, error, strlen(error), job->file_mode,
				      job->file_uid, job->file_gid);
	if (rc == 0)
		rc = state_write_file(dir_fd, meta_name, meta_text, meta_len, job->file_mode,
				      job->file_uid, job->file_gid);
	if (rc == 0)
		rc = state_sync_dir(dir_fd);
	if (rc < 0)
		log_error("cannot record a finished job in state_dir: %s", strerror(-rc));
	node_dir_fd_release(job->dir, dir_fd);
out:
	free(error_name);
	free(meta_name);
}

/* Writes the end of JOB durably, then lets its readers see it. Runs on
 * the finisher thread (or the engine's, when the finisher cannot take
 * it), never under a lock the engine needs. */
static void job_finish_now(struct job *job, int status, const char *message)
{
	enum job_status final;
	struct wakeups w = { 0 };
	char *meta_text = NULL, *error = NULL;
	json_t *final_meta = NULL;
	size_t meta_len = 0;
	int keep_files, table_ref;

	pthread_mutex_lock(&job->file_lock);
	pthread_mutex_lock(&jobs_lock);
	/* At shutdown the engine cancels what it holds; those jobs stay
	 * queued on disk and resume at the next mount. */
	keep_files = !job->detached && !(jobs_shutting_down_locked() && status == -ECANCELED);
	final = status == 0 ? JOB_DONE : status == -ECANCELED ? JOB_CANCELLED : JOB_FAILED;
	/* The final record is made on a copy: until its files are on disk,
	 * readers of .meta must not see an end that .error does not show. */
	final_meta = json_deep_copy(job->meta);
	if (keep_files && final_meta) {
		json_object_set_new(final_meta, "status", json_string(job_status_word(final)));
		job_meta_set_time(final_meta, "finished");
		if (job->served)
			meta_settle_cost(final_meta, job->served);
		meta_text = job_meta_dump(final_meta, &meta_len);
		if (final != JOB_DONE)
			error = error_text(final_meta, message ? message : "The job failed.");
	}
	pthread_mutex_unlock(&jobs_lock);

	if (keep_files && meta_text)
		job_persist_end(job, final, meta_text, meta_len, error);

	pthread_mutex_lock(&jobs_lock);
	if (keep_files && final_meta) {
		json_decref(job->meta);
		job->meta = final_meta;
		final_meta = NULL;
	}
	job->status = final;
	table_ref = job->in_table;
	if (table_ref)
		job_table_remove_locked(job);
	job_wake_readers(job, &w);
	pthread_mutex_unlock(&jobs_lock);
	pthread_mutex_unlock(&job->file_lock);
	wakeups_deliver(&w);
	if (keep_files)
		log_info("job %s.prompt %s", job->base, job_status_word(final));
	json_decref(final_meta);
	free(meta_text);
	free(error);
	if (table_ref)
		job_put(job);
	job_put(job); /* the engine's */
}

/* ---- the finisher: job ends are written off the engine thread ---- */

/* A job's end costs several fsyncs; done on the engine thread they would
 * pause every other transfer. The engine hands ends over here instead. */
struct finished_job {
	struct job *job;
	int status;
	char *message;
	struct finished_job *next;
};

static pthread_mutex_t finish_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t finish_cond = PTHREAD_COND_INITIALIZER;
static struct finished_job *finish_head, *finish_tail;
static int finisher_running, finisher_stopping;
static pthread_t finisher_thread;

static void *finisher_main(void *arg)
{
	struct finished_job *item;

	(void)arg;
	for (;;) {
		pthread_mutex_lock(&finish_lock);
		while (!finish_head && !finisher_stopping)
			pthread_cond_wait(&finish_cond, &finish_lock);
		item = finish_head;
		if (item) {
			finish_head = item->next;
			if (!finish_head)
				finish_tail = NULL;
		}
		pthread_mutex_unlock(&finish_lock);
		if (!item)
			return NULL; /* stopping, and every end written */
		job_finish_now(item->job, item->status, item->message);
		free(item->message);
		free(item);
	}
}

int jobs_start_finisher(void)
{
	int rc = pthread_create(&finisher_thread, NULL, finisher_main, NULL);

	if (rc != 0)
		return -rc;
	pthread_mutex_lock(&finish_lock);
	finisher_running = 1;
	pthread_mutex_unlock(&finish_lock);
	return 0;
}

void jobs_stop_finisher(void)
{
	pthread_mutex_lock(&finish_lock);
	if (!finisher_running) {
		pthread_mutex_unlock(&finish_lock);
		return;
	}
	finisher_stopping = 1;
	pthread_cond_signal(&finish_cond);
	pthread_mutex_unlock(&finish_lock);
	pthread_join(finisher_thread, NULL);
	finisher_running = 0;
}

static void sink_done(void *ctx, int status, const char *message)
{
	struct job *job = ctx;
	struct finished_job *item;

	/* the engine forgets the job now: nobody may cancel it any more */
	pthread_mutex_lock(&jobs_lock);
	job->engine_job = NULL;
	pthread_mutex_unlock(&jobs_lock);

	item = calloc(1, sizeof(*item));
	if (item && message) {
		item->message = strdup(message);
		if (!item->message) {
			free(item);
			item = NULL;
		}
	}
	pthread_mutex_lock(&finish_lock);
	if (!item || !finisher_running) {
		pthread_mutex_unlock(&finish_lock);
		if (item)
			free(item->message);
		free(item);
		job_finish_now(job, status, message);
		return;
	}
	item->job = job;
	item->status = status;
	if (finish_tail)
		finish_tail->next = item;
	else
		finish_head = item;
	finish_tail = item;
	pthread_cond_signal(&finish_cond);
	pthread_mutex_unlock(&finish_lock);
}

const struct engine_sink job_engine_sink = {
	.attempt_started = sink_attempt_started,
	.text = sink_text,
	.attempt_discarded = sink_attempt_discarded,
	.usage = sink_usage,
	.finish_reason = sink_finish_reason,
	.request_id = sink_request_id,
	.attempt_ended = sink_attempt_ended,
	.done = sink_done,
};
