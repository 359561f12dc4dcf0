/* The end of a job: recorded (by the engine, else the recorder thread),
 * then published and written by two threads, each handing batches on.
 *
 * An end is recorded on the engine thread itself when that takes no
 * wait: its end record (with the answer, small enough to go in it) is
 * appended to the journal, in the page cache, which outlives the
 * daemon, so an answer that has arrived is on record at once, with no
 * hand-over. Otherwise (a larger answer to fsync first, a checkpoint
 * holding the journal gate, a submission holding the job's file) the
 * recorder thread takes it, with every other end handed over as one
 * batch. Neither ever waits for a flush.
 *
 * The publisher waits for the batch's records to be durable (one flush,
 * shared with every submission and batch waiting then), writes .error of
 * the jobs that failed, and lets the readers see the ends (end of file or
 * EIO, and .meta's final status from memory).
 *
 * The writer then writes each job's .meta (no flush of its own: the
 * journal makes it again after a crash) and takes the job out of the
 * table; until then the table answers for it. A full disk leaves a job
 * there, its state in memory the truth, and the writer tries its files
 * again every second. Checkpoints run on the writer, between files, so
 * they never hold up a record. */
#include <errno.h>
#include <limits.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "backends/metrics.h"
#include "backends/utf8.h"
#include "fs/audit.h"
#include "fs/job_internal.h"
#include "fs/journal.h"
#include "fs/log.h"
#include "fs/state.h"

struct finished_job {
	struct job *job;
	int status;
	char *message;
	struct finished_job *next;
	/* decided by the recorder */
	enum job_status final;
	int keep_files;
	char *meta_text;
	size_t meta_len;
	char *error;
	int recorded; /* its end record was appended */
	uint64_t lsn;
	unsigned epoch; /* end_epoch when it was */
	char *answer;	/* read ahead for its record by record_now, or NULL */
	size_t answer_len;
	/* Its final .meta, once recorded: a copy of the job's (end_meta,
	 * then meta) that only the writer reads, for the log and the audit
	 * line, without jobs_lock. */
	json_t *final_meta;
};

/* A queue and the thread that empties it. */
struct stage {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	struct finished_job *head, *tail;
	int running, stopping;
	pthread_t thread;
};

static struct stage recorder = { PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER };
static struct stage publisher = { PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER };
static struct stage writer = { PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER };
static int checkpoint_wanted; /* under writer.lock */
/* End records appended and not yet settled by the writer, counted by
 * the checkpoint epoch they were appended in (its parity). The engine and
 * the recorder append in parallel, so ends reach the writer in no fixed
 * order of position: a checkpoint waits for its epoch's count to reach
 * zero, not for a position. An epoch changes under the journal gate's
 * write lock; appends hold its read lock. */
static unsigned end_epoch;
static _Atomic unsigned unsettled_ends[2];

/* Jobs whose .meta or .error could not be written (writer only). */
static struct job **pending;
static size_t n_pending, cap_pending;

#define PENDING_RETRY_S 1

static double cost_of(const struct model *model, long input_tokens, long output_tokens)
{
	return (double)input_tokens / 1e6 * model->price.input_per_mtok +
	       (double)output_tokens / 1e6 * model->price.output_per_mtok;
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
	json_object_set_new(meta, "price_source",
			    json_string(model->price.from_catalog ? "catalog" : "config"));
}

/* For a job a provider refused the credentials of: where the daemon
 * took them, and what makes it take a new one (a file is read again at
 * SIGHUP; a variable of the daemon's environment only at a restart).
 * Never the secret itself. */
static void credentials_hint(const struct model *model, char *buf, size_t size)
{
	const struct cloud *cloud = model->region->cloud;
	int from_env = 0;
	size_t used;

	used = (size_t)snprintf(buf, size, "The credentials of cloud %s come from", cloud->name);
	for (size_t i = 0; i < cloud->n_auth_sources && used < size; i++) {
		const struct auth_source *s = &cloud->auth_sources[i];

		from_env |= strstr(s->key, "_env") != NULL;
		used += (size_t)snprintf(buf + used, size - used, "%s %s %s", i ? "," : "", s->key,
					 s->value);
	}
	if (!cloud->n_auth_sources && used < size)
		used += (size_t)snprintf(buf + used, size - used, " nothing (no key is sent)");
	if (used < size)
		snprintf(buf + used, size - used,
			 from_env ? "; a new key in the environment needs a restart of the daemon."
				  : "; a new key file is read at SIGHUP, no restart needed.");
}

/* A failed job's .meta says why, and where it failed last: "error" is
 * the first line of .error, "route" the last deployment tried. */
static void meta_failure(json_t *meta, const char *message)
{
	json_t *attempts = json_object_get(meta, "attempts");
	json_t *last = json_array_get(attempts, json_array_size(attempts) - 1);

	char first[512];

	/* as the first line of .error says it (error_text) */
	snprintf(first, sizeof(first), "%s", message ? message : "The job failed.");
	if (first[0] >= 'a' && first[0] <= 'z')
		first[0] = (char)(first[0] - 'a' + 'A');
	json_object_set_new(meta, "error", json_string(first));
	if (!json_object_get(meta, "route") && json_object_get(last, "target"))
		json_object_set(meta, "route", json_object_get(last, "target"));
}

/* One line in the log for a job's end: where, whose, how, how long. */
static void log_end(struct job *job, enum job_status final, const json_t *meta)
{
	const json_t *attempts, *a;
	char path[PATH_MAX], outcomes[256] = "";
	size_t used = 0, i;
	const char *route, *request_id;
	json_int_t uid, total_ms = 0;

	if (node_path(job->dir, path, sizeof(path)) < 0)
		snprintf(path, sizeof(path), "?");
	attempts = json_object_get(meta, "attempts");
	json_array_foreach (attempts, i, a) {
		total_ms += json_integer_value(json_object_get(a, "ms"));
		if (used < sizeof(outcomes))
			used += (size_t)snprintf(
				outcomes + used, sizeof(outcomes) - used, "%s%s", i ? "," : "",
				json_string_value(json_object_get(a, "outcome")) ?: "?");
	}
	route = json_string_value(json_object_get(meta, "route"));
	request_id = json_string_value(json_object_get(meta, "request_id"));
	uid = json_integer_value(json_object_get(meta, "uid"));
	log_info("job %s%s%s.prompt uid %lld %s: route %s, %zu attempt(s) [%s] in %lld ms%s%s",
		 path, strcmp(path, "/") ? "/" : "", job->base, (long long)uid,
		 job_status_word(final), route ? route : "none", json_array_size(attempts),
		 outcomes, (long long)total_ms, request_id ? ", request " : "",
		 request_id ? request_id : "");
}

/* The .error text: what happened, then one line per attempt. */
static char *error_text(const json_t *meta, const char *message, const struct model *refused_auth)
{
	char hint[512] = "";
	json_t *attempts = json_object_get(meta, "attempts");
	size_t i, size = strlen(message) + 64;
	json_t *a;
	char *text, *p;

	if (refused_auth)
		credentials_hint(refused_auth, hint, sizeof(hint));
	size += strlen(hint) + 1;
	json_array_foreach (attempts, i, a)
		size += 96 + strlen(json_string_value(json_object_get(a, "target")) ?: "") +
			strlen(json_string_value(json_object_get(a, "outcome")) ?: "");
	text = malloc(size);
	if (!text)
		return NULL;
	p = text + snprintf(text, size, "%s\n%s%s", message, hint, hint[0] ? "\n" : "");
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

/* ---- the recorder ---- */

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

/* Decides IT's end, appends its record and makes its final .meta the
 * job's. With IT's file_lock held. */
static void record_end(struct finished_job *it)
{
	struct job *job = it->job;
	const struct model *charged_to; /* for /.metrics: who answered, else who was tried last */
	const struct model *served, *refused_auth;
	char *answer = NULL, failure[160];
	json_t *final_meta = NULL;
	size_t answer_len = 0;
	int rc;

	pthread_mutex_lock(&jobs_lock);
	/* At shutdown the engine cancels what it holds; those jobs stay
	 * unfinished in the journal and resume at the next mount. */
	it->keep_files =
		!job->detached && !(jobs_shutting_down_locked() && it->status == -ECANCELED);
	pthread_mutex_unlock(&jobs_lock);
	if (it->keep_files && it->status == 0) {
		if (it->answer) { /* read ahead by record_now */
			answer = it->answer;
			answer_len = it->answer_len;
			it->answer = NULL;
		} else {
			answer = small_answer(job, &answer_len);
		}
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
	served = job->served;
	refused_auth = job->refused_auth;
	charged_to = served ? served : job->last_tried;
	if (it->keep_files)
		final_meta = json_deep_copy(job->meta);
	pthread_mutex_unlock(&jobs_lock);
	/* the copy is this thread's own: made final outside the lock every
	 * FUSE thread takes */
	if (final_meta) {
		json_object_set_new(final_meta, "status", json_string(job_status_word(it->final)));
		job_meta_set_time(final_meta, "finished");
		if (served)
			meta_settle_cost(final_meta, served);
		if (it->final == JOB_FAILED)
			meta_failure(final_meta, it->message);
		it->meta_text = job_meta_dump(final_meta, &it->meta_len);
		if (it->final != JOB_DONE)
			it->error = error_text(final_meta,
					       it->message ? it->message : "The job failed.",
					       refused_auth);
	}
	if (final_meta && it->meta_text) {
		struct ledger_charge charge;

		/* charged with its record, under the journal gate: a
		 * checkpoint's ledger record counts exactly the charges
		 * recorded before it */
		job_policy_charge(final_meta, it->final, &charge);
		rc = job_journal_end(job, final_meta, it->error, answer, answer_len,
				     ledger_charge_to_json(&job->hold, &charge), &it->lsn);
		if (rc < 0)
			log_error("cannot record the end of job %s.prompt: %s; it may run again "
				  "after a restart",
				  job->base, strerror(-rc));
		it->recorded = rc == 0;
		/* billed either way: the provider answered */
		ledger_charge(&job->hold, &charge);
		metrics_job_charged(charged_to, charge.input_tokens, charge.output_tokens,
				    charge.cost);
	}
	/* the writer's copy, made before the job's goes where other threads
	 * read it: one object is never shared between threads, as jansson's
	 * json_decref reads its count without an atomic */
	it->final_meta = final_meta ? json_deep_copy(final_meta) : NULL;
	pthread_mutex_lock(&jobs_lock);
	if (final_meta) {
		json_decref(job->end_meta);
		job->end_meta = final_meta;
		final_meta = NULL;
		free(job->end_error);
		job->end_error = it->error ? strdup(it->error) : NULL;
	}
	job->end_recorded = it->recorded;
	pthread_mutex_unlock(&jobs_lock);
	json_decref(final_meta);
	free(answer);
}

/* Once IT's end is durable: its readers see it. */
static void publish_end(struct finished_job *it)
{
	struct job *job = it->job;
	struct wakeups w = { 0 };

	pthread_mutex_lock(&jobs_lock);
	if (job->end_meta) {
		json_decref(job->meta);
		job->meta = job->end_meta;
		job->end_meta = NULL;
	}
	job->status = it->final;
	job_wake_readers(job, &w);
	pthread_mutex_unlock(&jobs_lock);
	wakeups_deliver(&w);
}

static void stage_push(struct stage *s, struct finished_job *batch)
{
	struct finished_job *last = batch;

	while (last->next)
		last = last->next;
	pthread_mutex_lock(&s->lock);
	if (s->tail)
		s->tail->next = batch;
	else
		s->head = batch;
	s->tail = last;
	pthread_cond_signal(&s->cond);
	pthread_mutex_unlock(&s->lock);
}

static void write_batch(struct finished_job *batch);
static int write_end_files(struct job *job, const char *meta_text, size_t meta_len,
			   const char *error);

/* Counts IT's end record for the checkpoint that waits for it. Under the
 * journal gate's read lock. */
static void note_appended(struct finished_job *it)
{
	it->epoch = end_epoch;
	atomic_fetch_add(&unsettled_ends[it->epoch & 1], 1);
}

/* Appends the end records of BATCH (a list) at once, never waiting for a
 * flush: what the page cache holds survives the daemon's own death, so
 * an answer that has arrived is on record within microseconds. */
static void record_batch(struct finished_job *batch)
{
	pthread_rwlock_rdlock(&journal_gate);
	for (struct finished_job *it = batch; it; it = it->next) {
		/* waits for a submission replacing it to be done */
		pthread_mutex_lock(&it->job->file_lock);
		record_end(it);
		pthread_mutex_unlock(&it->job->file_lock);
		if (it->recorded)
			note_appended(it);
	}
	pthread_rwlock_unlock(&journal_gate);
}

/* Records IT on the calling (engine) thread when nothing makes it wait:
 * 1 when recorded, 0 when the recorder must. An answer too large for
 * the record needs an fsync; a checkpoint's cut holds the gate; a
 * submission of the same name holds the file: each would pause every
 * transfer of the engine, so the recorder waits for them instead. */
static int record_now(struct finished_job *it)
{
	struct job *job = it->job;

	/* a done job's answer goes in its record, else it is fsync'd */
	if (it->status == 0) {
		it->answer = small_answer(job, &it->answer_len);
		if (!it->answer)
			return 0;
	}
	if (pthread_rwlock_tryrdlock(&journal_gate) != 0)
		return 0;
	if (pthread_mutex_trylock(&job->file_lock) != 0) {
		pthread_rwlock_unlock(&journal_gate);
		return 0;
	}
	record_end(it);
	pthread_mutex_unlock(&job->file_lock);
	if (it->recorded)
		note_appended(it);
	pthread_rwlock_unlock(&journal_gate);
	return 1;
}

/* Once BATCH's records are durable (one flush for all of them, shared
 * with whatever else waits): readers see the ends. */
static void settle_batch(struct finished_job *batch)
{
	uint64_t lsn = 0;
	int rc = 0;

	for (struct finished_job *it = batch; it; it = it->next)
		if (it->recorded && it->lsn > lsn)
			lsn = it->lsn;
	if (lsn)
		rc = journal_wait(lsn);
	if (rc < 0)
		log_error("cannot make job ends durable: %s; they may run again after a restart",
			  strerror(-rc));
	for (struct finished_job *it = batch; it; it = it->next) {
		struct job *job = it->job;

		/* a reader told of a failure finds its reason: .error is
		 * written first (again by the writer if this fails) */
		if (it->keep_files && it->error) {
			pthread_mutex_lock(&job->file_lock);
			pthread_mutex_lock(&jobs_lock);
			it->keep_files = !job->detached;
			pthread_mutex_unlock(&jobs_lock);
			if (it->keep_files && write_end_files(job, NULL, 0, it->error) == 0) {
				free(it->error);
				it->error = NULL;
			}
			pthread_mutex_unlock(&job->file_lock);
		}
		publish_end(it);
	}
}

/* ---- the writer ---- */

/* Writes a finished job's .error (unless ERROR is NULL) and .meta
 * (unless META_TEXT is NULL) in its directory. */
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
	/* in place: while the job is in the table readers of .meta get
	 * its text from memory, and after a crash the journal remakes it */
	if (rc == 0 && meta_text)
		rc = state_rewrite_file(dir_fd, meta_name, meta_text, meta_len, job->file_mode,
					job->file_uid, job->file_gid);
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

/* Writes the files of JOB (META_TEXT, ERROR) unless another job took its
 * name meanwhile, then takes it out of the table; on failure it stays,
 * pending. Returns the write's result. */
static int settle_files(struct job *job, const char *meta_text, size_t meta_len, const char *error)
{
	int rc = 0, table_ref = 0, detached;

	pthread_mutex_lock(&job->file_lock);
	pthread_mutex_lock(&jobs_lock);
	detached = job->detached;
	pthread_mutex_unlock(&jobs_lock);
	if (!detached && meta_text)
		rc = write_end_files(job, meta_text, meta_len, error);
	pthread_mutex_lock(&jobs_lock);
	job->files_pending = rc < 0 && job->in_table;
	if (!job->files_pending) {
		table_ref = job->in_table;
		if (table_ref)
			job_table_remove_locked(job);
	}
	pthread_mutex_unlock(&jobs_lock);
	pthread_mutex_unlock(&job->file_lock);
	if (table_ref)
		job_put(job);
	return job->files_pending ? rc : 0;
}

static void free_finished(struct finished_job *it)
{
	free(it->meta_text);
	free(it->error);
	free(it->message);
	free(it->answer);
	json_decref(it->final_meta);
	free(it);
}

static void write_batch(struct finished_job *batch)
{
	while (batch) {
		struct finished_job *next = batch->next;
		struct job *job = batch->job;
		int rc;

		rc = settle_files(job, batch->keep_files ? batch->meta_text : NULL, batch->meta_len,
				  batch->error);
		if (rc < 0) {
			log_error("cannot write the files of finished job %s.prompt: %s; retrying",
				  job->base, strerror(-rc));
			add_pending(job);
		}
		audit_job_ended(job, batch->final_meta, batch->recorded);
		if (batch->recorded)
			atomic_fetch_sub(&unsettled_ends[batch->epoch & 1], 1);
		if (batch->keep_files && batch->final_meta)
			log_end(job, batch->final, batch->final_meta);
		job_put(job); /* the engine's */
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
		char *meta_text = NULL, *error = NULL;
		size_t meta_len = 0;
		int rc = 0;

		pthread_mutex_lock(&jobs_lock);
		if (job->files_pending) {
			meta_text = job_meta_dump(job->meta, &meta_len);
			error = job->end_error ? strdup(job->end_error) : NULL;
		}
		pthread_mutex_unlock(&jobs_lock);
		if (meta_text)
			rc = settle_files(job, meta_text, meta_len, error);
		if (rc < 0) {
			pending[kept++] = job;
		} else {
			if (meta_text)
				log_info("job %s.prompt: its files are written now", job->base);
			job_put(job); /* the pending list's */
		}
		free(error);
		free(meta_text);
	}
	n_pending = kept;
}

/* Takes the whole queue of S, or NULL. */
static struct finished_job *stage_take(struct stage *s)
{
	struct finished_job *batch = s->head;

	s->head = s->tail = NULL;
	return batch;
}

/* A checkpoint, after writing the files of every end recorded before
 * the journal's cut: those records go with the old segments, so their
 * files must be on disk by the checkpoint's syncfs. */
static void writer_checkpoint(void)
{
	unsigned before;

	pthread_rwlock_wrlock(&journal_gate);
	jobs_checkpoint_cut_locked();
	before = end_epoch++;
	pthread_rwlock_unlock(&journal_gate);
	/* those ends are on their way through the publisher to here (the
	 * previous checkpoint emptied the count this epoch shares) */
	while (atomic_load(&unsettled_ends[before & 1]) > 0) {
		struct finished_job *batch;

		pthread_mutex_lock(&writer.lock);
		while (!writer.head)
			pthread_cond_wait(&writer.cond, &writer.lock);
		batch = stage_take(&writer);
		pthread_mutex_unlock(&writer.lock);
		write_batch(batch);
	}
	jobs_checkpoint_finish();
}

static void *writer_main(void *arg)
{
	struct finished_job *batch;
	int checkpoint, stop;

	(void)arg;
	for (;;) {
		pthread_mutex_lock(&writer.lock);
		while (!writer.head && !writer.stopping && !checkpoint_wanted) {
			struct timespec until;

			if (!n_pending) {
				pthread_cond_wait(&writer.cond, &writer.lock);
				continue;
			}
			clock_gettime(CLOCK_REALTIME, &until);
			until.tv_sec += PENDING_RETRY_S;
			if (pthread_cond_timedwait(&writer.cond, &writer.lock, &until) != 0)
				break;
		}
		batch = stage_take(&writer);
		checkpoint = checkpoint_wanted;
		checkpoint_wanted = 0;
		stop = writer.stopping && !batch;
		pthread_mutex_unlock(&writer.lock);
		write_batch(batch);
		if (n_pending)
			retry_pending();
		if (!stop && (checkpoint || jobs_checkpoint_due()))
			writer_checkpoint();
		if (stop)
			return NULL;
	}
}

static void *recorder_main(void *arg)
{
	struct finished_job *batch;

	(void)arg;
	for (;;) {
		pthread_mutex_lock(&recorder.lock);
		while (!recorder.head && !recorder.stopping)
			pthread_cond_wait(&recorder.cond, &recorder.lock);
		batch = stage_take(&recorder);
		pthread_mutex_unlock(&recorder.lock);
		if (!batch)
			return NULL; /* stopping, and every end handed over recorded */
		record_batch(batch);
		stage_push(&publisher, batch);
	}
}

static void *publisher_main(void *arg)
{
	struct finished_job *batch;

	(void)arg;
	for (;;) {
		pthread_mutex_lock(&publisher.lock);
		while (!publisher.head && !publisher.stopping)
			pthread_cond_wait(&publisher.cond, &publisher.lock);
		batch = stage_take(&publisher);
		pthread_mutex_unlock(&publisher.lock);
		if (!batch)
			return NULL;
		settle_batch(batch);
		stage_push(&writer, batch);
	}
}

static int stage_start(struct stage *s, void *(*main)(void *), const char *name)
{
	int rc = pthread_create(&s->thread, NULL, main, NULL);

	if (rc != 0)
		return -rc;
	pthread_setname_np(s->thread, name); /* what top -H and perf show */
	pthread_mutex_lock(&s->lock);
	s->running = 1;
	pthread_mutex_unlock(&s->lock);
	return 0;
}

static void stage_stop(struct stage *s)
{
	pthread_mutex_lock(&s->lock);
	if (!s->running) {
		pthread_mutex_unlock(&s->lock);
		return;
	}
	s->stopping = 1;
	pthread_cond_signal(&s->cond);
	pthread_mutex_unlock(&s->lock);
	pthread_join(s->thread, NULL);
	pthread_mutex_lock(&s->lock);
	s->running = 0;
	pthread_mutex_unlock(&s->lock);
}

int jobs_start_finisher(void)
{
	int rc = stage_start(&writer, writer_main, "pfs-writer");

	if (rc == 0)
		rc = stage_start(&publisher, publisher_main, "pfs-publisher");
	if (rc == 0)
		rc = stage_start(&recorder, recorder_main, "pfs-recorder");
	if (rc < 0) {
		stage_stop(&publisher);
		stage_stop(&writer);
	}
	return rc;
}

void jobs_stop_finisher(void)
{
	/* each hands its last batches to the next */
	stage_stop(&recorder);
	stage_stop(&publisher);
	stage_stop(&writer);
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
	pthread_mutex_lock(&writer.lock);
	checkpoint_wanted = 1;
	pthread_cond_signal(&writer.cond);
	pthread_mutex_unlock(&writer.lock);
}

void job_finish(struct job *job, int status, const char *message)
{
	struct finished_job *item = calloc(1, sizeof(*item));

	if (!item) {
		log_error("out of memory recording the end of job %s.prompt", job->base);
		job_abandon(job);
		job_put(job); /* the engine's */
		return;
	}
	item->job = job;
	item->status = status;
	item->message = message ? strdup(message) : NULL;
	pthread_mutex_lock(&recorder.lock);
	if (!recorder.running) {
		/* before the threads started, or after they stopped */
		pthread_mutex_unlock(&recorder.lock);
		record_batch(item);
		settle_batch(item);
		write_batch(item);
		return;
	}
	pthread_mutex_unlock(&recorder.lock);
	if (record_now(item))
		stage_push(&publisher, item);
	else
		stage_push(&recorder, item);
}
