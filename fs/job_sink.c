/* What the engine reports about a job (on its thread): the attempt's
 * bytes appended to the response and handed to waiting readers, usage,
 * attempts; and the end, recorded by the finisher thread (below). */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "backends/utf8.h"
#include "fs/job_internal.h"
#include "fs/journal.h"
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

/* ---- the finisher: job ends recorded together ----
 *
 * The engine hands every job's end to one thread, which takes all ends
 * waiting at once as a batch: it writes an end record for each to the
 * journal (with the answer itself when small; a larger answer is
 * fsync'd first), flushes the journal once for the batch, then writes
 * each job's .meta and .error (no flush of their own: the journal
 * remakes them after a crash) and lets its readers see the end. A
 * reader therefore sees a job end only once its end is durable, and an
 * answer that has arrived is recorded within one flush, not behind a
 * queue of flushes. */
struct finished_job {
	struct job *job;
	int status;
	char *message;
	struct finished_job *next;
	/* decided by the finisher */
	enum job_status final;
	int keep_files;
	json_t *final_meta;
	char *meta_text;
	size_t meta_len;
	char *error;
	int recorded; /* its end record was appended */
	uint64_t lsn;
};

static pthread_mutex_t finish_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t finish_cond = PTHREAD_COND_INITIALIZER;
static struct finished_job *finish_head, *finish_tail;
static int finisher_running, finisher_stopping, checkpoint_wanted;
static pthread_t finisher_thread;

/* Jobs whose .meta or .error could not be written (finisher only). */
static struct job **pending;
static size_t n_pending, cap_pending;

#define PENDING_RETRY_S 1

/* A small answer, read back from the page cache for its end record;
 * NULL when it must be fsync'd instead. */
static char *small_answer(struct job *job, size_t *len)
{
	unsigned long long size;
	char *buf;
	ssize_t n;

	pthread_mutex_lock(&jobs_lock);
	size = job->size;
	pthread_mutex_unlock(&jobs_lock);
	if (size > JOB_INLINE_BYTES)
		return NULL;
	buf = malloc(size + 1);
	if (!buf)
		return NULL;
	n = pread(job->response_fd, buf, size, 0);
	/* the record holds UTF-8 text without NUL; anything else stays a file */
	if (n != (ssize_t)size || utf8_invalid_offset(buf, size) != size) {
		free(buf);
		return NULL;
	}
	*len = size;
	return buf;
}

/* Decides IT's end and appends its record. With IT's file_lock held. */
static void prepare_end(struct finished_job *it)
{
	struct job *job = it->job;
	char *answer = NULL, failure[160];
	size_t answer_len = 0;
	int rc;

	pthread_mutex_lock(&jobs_lock);
	/* At shutdown the engine cancels what it holds; those jobs stay
	 * unfinished in the journal and resume at the next mount. */
	it->keep_files =
		!job->detached && !(jobs_shutting_down_locked() && it->status == -ECANCELED);
	pthread_mutex_unlock(&jobs_lock);
	if (it->keep_files && it->status == 0) {
		answer = small_answer(job, &answer_len);
		if (!answer && fsync(job->response_fd) < 0) {
			/* an answer that may not be on disk is not "done" */
			snprintf(failure, sizeof(failure), "the answer could not be stored: %s",
				 strerror(errno));
			free(it->message);
			it->message = strdup(failure);
			it->status = -EIO;
			log_error("%s (%s.prompt)", failure, job->base);
		}
	}
	it->final = it->status == 0	       ? JOB_DONE
		    : it->status == -ECANCELED ? JOB_CANCELLED
					       : JOB_FAILED;
	pthread_mutex_lock(&jobs_lock);
	/* The final record is made on a copy: until its files are on disk,
	 * readers of .meta must not see an end that .error does not show. */
	it->final_meta = it->keep_files ? json_deep_copy(job->meta) : NULL;
	if (it->final_meta) {
		json_object_set_new(it->final_meta, "status",
				    json_string(job_status_word(it->final)));
		job_meta_set_time(it->final_meta, "finished");
		if (job->served)
			meta_settle_cost(it->final_meta, job->served);
		it->meta_text = job_meta_dump(it->final_meta, &it->meta_len);
		if (it->final != JOB_DONE)
			it->error = error_text(it->final_meta,
					       it->message ? it->message : "The job failed.");
	}
	pthread_mutex_unlock(&jobs_lock);
	if (it->final_meta && it->meta_text) {
		rc = job_journal_end(job, it->final_meta, it->error, answer, answer_len, &it->lsn);
		if (rc < 0)
			log_error("cannot record the end of job %s.prompt: %s; it may run again "
				  "after a restart",
				  job->base, strerror(-rc));
		it->recorded = rc == 0;
	}
	free(answer);
}

/* Writes a finished job's .error and .meta in its directory. */
static int write_end_files(struct job *job, const char *meta_text, size_t meta_len,
			   const char *error)
{
	char *meta_name = name_with_suffix(job->base, ".meta");
	char *error_name = name_with_suffix(job->base, ".error");
	int rc, dir_fd = node_dir_fd(job->dir);

	rc = dir_fd < 0 ? dir_fd : !meta_name || !error_name ? -ENOMEM : 0;
	/* .error first: a .meta that says failed has its reason beside it */
	if (rc == 0 && error)
		rc = state_write_file(dir_fd, error_name, error, strlen(error), job->file_mode,
				      job->file_uid, job->file_gid, 0);
	if (rc == 0)
		rc = state_write_file(dir_fd, meta_name, meta_text, meta_len, job->file_mode,
				      job->file_uid, job->file_gid, 0);
	node_dir_fd_release(job->dir, dir_fd);
	free(error_name);
	free(meta_name);
	return rc;
}

static void add_pending(struct job *job)
{
	if (n_pending == cap_pending) {
		size_t new_cap = cap_pending ? cap_pending * 2 : 16;
		struct job **grown = realloc(pending, new_cap * sizeof(*pending));

		if (!grown)
			return; /* stays in the table; the next mount writes its files */
		pending = grown;
		cap_pending = new_cap;
	}
	pthread_mutex_lock(&jobs_lock);
	job->refs++;
	pthread_mutex_unlock(&jobs_lock);
	pending[n_pending++] = job;
}

/* Lets IT's readers see its end, once its record is durable. With IT's
 * file_lock held; releases it. */
static void complete_end(struct finished_job *it)
{
	struct job *job = it->job;
	struct wakeups w = { 0 };
	int table_ref = 0, files_rc = 0;

	if (it->keep_files && it->meta_text)
		files_rc = write_end_files(job, it->meta_text, it->meta_len, it->error);
	if (files_rc < 0)
		log_error("cannot write the files of finished job %s.prompt: %s; retrying",
			  job->base, strerror(-files_rc));
	pthread_mutex_lock(&jobs_lock);
	if (it->final_meta) {
		json_decref(job->meta);
		job->meta = it->final_meta;
		it->final_meta = NULL;
	}
	job->status = it->final;
	if (files_rc < 0 && job->in_table) {
		/* its state in memory stays the truth until they are written */
		job->files_pending = 1;
		job->end_error = it->error;
		it->error = NULL;
	} else {
		table_ref = job->in_table;
		if (table_ref)
			job_table_remove_locked(job);
	}
	job_wake_readers(job, &w);
	pthread_mutex_unlock(&jobs_lock);
	pthread_mutex_unlock(&job->file_lock);
	wakeups_deliver(&w);
	if (files_rc < 0 && job->files_pending)
		add_pending(job);
	if (it->keep_files)
		log_info("job %s.prompt %s", job->base, job_status_word(it->final));
	if (table_ref)
		job_put(job);
	job_put(job); /* the engine's */
}

static void free_finished(struct finished_job *it)
{
	json_decref(it->final_meta);
	free(it->meta_text);
	free(it->error);
	free(it->message);
	free(it);
}

/* The ends in BATCH (a list): records appended, one flush, then files
 * and readers. */
static void finish_batch(struct finished_job *batch)
{
	uint64_t lsn = 0;
	int rc = 0;

	for (struct finished_job *it = batch; it; it = it->next) {
		/* waits for a submission replacing it to be done */
		pthread_mutex_lock(&it->job->file_lock);
		prepare_end(it);
		if (it->recorded && it->lsn > lsn)
			lsn = it->lsn;
	}
	if (lsn)
		rc = journal_wait(lsn);
	if (rc < 0)
		log_error("cannot make job ends durable: %s; they may run again after a restart",
			  strerror(-rc));
	while (batch) {
		struct finished_job *next = batch->next;

		complete_end(batch);
		free_finished(batch);
		batch = next;
	}
}

/* Tries again to write the files of jobs that a full disk stopped. */
static void retry_pending(void)
{
	size_t kept = 0;

	for (size_t i = 0; i < n_pending; i++) {
		struct job *job = pending[i];
		char *meta_text = NULL;
		size_t meta_len = 0;
		int rc = 0, table_ref = 0;

		pthread_mutex_lock(&job->file_lock);
		pthread_mutex_lock(&jobs_lock);
		if (!job->detached && job->files_pending)
			meta_text = job_meta_dump(job->meta, &meta_len);
		pthread_mutex_unlock(&jobs_lock);
		if (meta_text)
			rc = write_end_files(job, meta_text, meta_len, job->end_error);
		pthread_mutex_lock(&jobs_lock);
		if (meta_text && rc < 0) {
			pending[kept++] = job;
		} else {
			job->files_pending = 0;
			table_ref = job->in_table;
			if (table_ref)
				job_table_remove_locked(job);
		}
		pthread_mutex_unlock(&jobs_lock);
		pthread_mutex_unlock(&job->file_lock);
		if (meta_text && rc == 0)
			log_info("job %s.prompt: its files are written now", job->base);
		free(meta_text);
		if (table_ref)
			job_put(job);
		if (!(meta_text && rc < 0))
			job_put(job); /* the pending list's */
	}
	n_pending = kept;
}

static void *finisher_main(void *arg)
{
	struct finished_job *batch;
	int checkpoint, stop;

	(void)arg;
	for (;;) {
		pthread_mutex_lock(&finish_lock);
		while (!finish_head && !finisher_stopping && !checkpoint_wanted) {
			struct timespec until;

			if (!n_pending) {
				pthread_cond_wait(&finish_cond, &finish_lock);
				continue;
			}
			clock_gettime(CLOCK_REALTIME, &until);
			until.tv_sec += PENDING_RETRY_S;
			if (pthread_cond_timedwait(&finish_cond, &finish_lock, &until) != 0)
				break;
		}
		batch = finish_head;
		finish_head = finish_tail = NULL;
		checkpoint = checkpoint_wanted;
		checkpoint_wanted = 0;
		stop = finisher_stopping && !batch;
		pthread_mutex_unlock(&finish_lock);
		if (batch)
			finish_batch(batch);
		if (n_pending)
			retry_pending();
		/* between batches: every recorded end has its files written */
		if (!stop && (checkpoint || jobs_checkpoint_due()))
			jobs_checkpoint();
		if (stop)
			return NULL; /* every end handed over is recorded */
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
	/* jobs still waiting to write their files: the journal has their
	 * ends, and the next mount writes them */
	for (size_t i = 0; i < n_pending; i++)
		job_put(pending[i]);
	free(pending);
	pending = NULL;
	n_pending = cap_pending = 0;
}

void jobs_request_checkpoint(void)
{
	pthread_mutex_lock(&finish_lock);
	checkpoint_wanted = 1;
	pthread_cond_signal(&finish_cond);
	pthread_mutex_unlock(&finish_lock);
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
	if (!item) {
		log_error("out of memory recording the end of job %s.prompt", job->base);
		job_abandon(job);
		job_put(job); /* the engine's */
		return;
	}
	item->job = job;
	item->status = status;
	item->message = message ? strdup(message) : NULL;
	pthread_mutex_lock(&finish_lock);
	if (!finisher_running) {
		/* before the finisher started, or after it stopped */
		pthread_mutex_unlock(&finish_lock);
		finish_batch(item);
		return;
	}
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
