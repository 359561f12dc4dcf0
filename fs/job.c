/* Job lifecycle: submission (durable before close() returns), the sink
 * the engine reports to, the end (response fsync'd, then .meta), removal,
 * and resumption after a restart. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "fs/job_internal.h"
#include "fs/log.h"
#include "fs/prompt.h"
#include "fs/state.h"

#define JOB_TABLE_SIZE 4096
#define SUBMIT_STRIPES 64

pthread_mutex_t jobs_lock = PTHREAD_MUTEX_INITIALIZER;
static struct job *job_table[JOB_TABLE_SIZE];
static int shutting_down;	/* under jobs_lock */

/* Submissions and removals of one NAME are serialised so that two
 * writers closing the same prompt cannot interleave their files; other
 * names go in parallel. */
static pthread_mutex_t submit_stripes[SUBMIT_STRIPES];

static size_t job_hash(const struct node *dir, const char *base)
{
	uint64_t h = (uint64_t)(uintptr_t)dir * 0x9e3779b97f4a7c15ull;

	for (const unsigned char *p = (const unsigned char *)base; *p; p++)
		h = (h ^ *p) * 0x100000001b3ull;
	return (size_t)(h >> 11);
}

static pthread_mutex_t *stripe_for(const struct node *dir, const char *base)
{
	return &submit_stripes[job_hash(dir, base) % SUBMIT_STRIPES];
}

int jobs_init(void)
{
	for (size_t i = 0; i < SUBMIT_STRIPES; i++)
		pthread_mutex_init(&submit_stripes[i], NULL);
	return 0;
}

void jobs_begin_shutdown(void)
{
	pthread_mutex_lock(&jobs_lock);
	shutting_down = 1;
	pthread_mutex_unlock(&jobs_lock);
}

struct job *job_lookup_locked(struct node *dir, const char *base)
{
	struct job *job = job_table[job_hash(dir, base) % JOB_TABLE_SIZE];

	while (job && !(job->dir == dir && strcmp(job->base, base) == 0))
		job = job->hash_next;
	return job;
}

static void table_insert_locked(struct job *job)
{
	size_t bucket = job_hash(job->dir, job->base) % JOB_TABLE_SIZE;

	job->hash_next = job_table[bucket];
	job_table[bucket] = job;
	job->in_table = 1;
	job->refs++;
}

/* Returns the table's reference, which the caller must drop. */
static void table_remove_locked(struct job *job)
{
	struct job **pp = &job_table[job_hash(job->dir, job->base) % JOB_TABLE_SIZE];

	while (*pp && *pp != job)
		pp = &(*pp)->hash_next;
	if (*pp)
		*pp = job->hash_next;
	job->hash_next = NULL;
	job->in_table = 0;
}

static void job_free(struct job *job)
{
	if (job->response_fd >= 0)
		close(job->response_fd);
	json_decref(job->meta);
	pthread_mutex_destroy(&job->file_lock);
	node_put(job->dir);
	free(job->base);
	free(job);
}

void job_put(struct job *job)
{
	unsigned refs;

	pthread_mutex_lock(&jobs_lock);
	refs = --job->refs;
	pthread_mutex_unlock(&jobs_lock);
	if (refs == 0)
		job_free(job);
}

static struct job *job_new(struct node *dir, const char *base)
{
	struct job *job = calloc(1, sizeof(*job));

	if (!job)
		return NULL;
	job->base = strdup(base);
	job->meta = json_object();
	if (!job->base || !job->meta) {
		free(job->base);
		json_decref(job->meta);
		free(job);
		return NULL;
	}
	pthread_mutex_init(&job->file_lock, NULL);
	node_hold(dir);
	job->dir = dir;
	job->model = dir->model;
	job->response_fd = -1;
	job->refs = 1;
	job->status = JOB_QUEUED;
	return job;
}

/* ---- small helpers ---- */

static void iso_time(char *out, size_t size, time_t t)
{
	struct tm tm;

	gmtime_r(&t, &tm);
	strftime(out, size, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

static void meta_set_time(json_t *meta, const char *key)
{
	char stamp[32];

	iso_time(stamp, sizeof(stamp), time(NULL));
	json_object_set_new(meta, key, json_string(stamp));
}

static const char *status_word(enum job_status s)
{
	static const char *const words[] = { "queued", "running", "done", "failed", "cancelled" };

	return words[s];
}

static char *meta_dump(const json_t *meta, size_t *len)
{
	/* ten significant digits: a cost of 7.2e-06, not 7.2000000000000005e-06 */
	char *text = json_dumps(meta, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(10));
	char *with_newline;

	if (!text)
		return NULL;
	with_newline = name_with_suffix(text, "\n");
	free(text);
	if (with_newline && len)
		*len = strlen(with_newline);
	return with_newline;
}

static void sha256_hex(const void *data, size_t len, char out[65])
{
	unsigned char digest[SHA256_DIGEST_LENGTH];

	SHA256(data, len, digest);
	for (int i = 0; i < SHA256_DIGEST_LENGTH; i++)
		snprintf(out + 2 * i, 3, "%02x", digest[i]);
}

/* Reads a whole prompt, refusing more than the limit. Caller frees. */
static int read_prompt(int fd, char **out, size_t *len)
{
	size_t cap = pfs.opts->max_prompt_bytes;
	char *buf = malloc(cap + 1);
	size_t have = 0;
	ssize_t n;

	if (!buf)
		return -ENOMEM;
	for (;;) {
		n = pread(fd, buf + have, cap + 1 - have, (off_t)have);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			free(buf);
			return -errno;
		}
		if (n == 0)
			break;
		have += (size_t)n;
		if (have > cap) {
			free(buf);
			return -EFBIG;
		}
	}
	buf[have] = '\0';
	*out = buf;
	*len = have;
	return 0;
}

int job_check_prompt(int fd, char *err, size_t err_size)
{
	struct llm_request req = { 0 };
	size_t len;
	char *text;
	int rc;

	rc = read_prompt(fd, &text, &len);
	if (rc == -EFBIG) {
		snprintf(err, err_size, "The prompt is larger than the limit of %zu bytes.",
			 pfs.opts->max_prompt_bytes);
		return rc;
	}
	if (rc < 0) {
		snprintf(err, err_size, "The prompt could not be read: %s.", strerror(-rc));
		return rc;
	}
	rc = prompt_parse(text, len, &req, err, err_size);
	llm_request_release(&req);
	free(text);
	return rc;
}

/* ---- the sink the engine reports to (engine thread) ---- */

static void sink_attempt_started(void *ctx, const char *target)
{
	struct job *job = ctx;

	(void)target;
	pthread_mutex_lock(&jobs_lock);
	if (job->status == JOB_QUEUED) {
		job->status = JOB_RUNNING;
		json_object_set_new(job->meta, "status", json_string("running"));
		if (!json_object_get(job->meta, "started"))
			meta_set_time(job->meta, "started");
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
	if (job->size + len > pfs.opts->max_answer_bytes) {
		rc = -EFBIG;
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

static void sink_finish_reason(void *ctx, const char *reason)
{
	struct job *job = ctx;

	pthread_mutex_lock(&jobs_lock);
	json_object_set_new(job->meta, "finish_reason", json_string(reason));
	pthread_mutex_unlock(&jobs_lock);
}

static void sink_request_id(void *ctx, const char *id)
{
	struct job *job = ctx;

	pthread_mutex_lock(&jobs_lock);
	json_object_set_new(job->meta, "request_id", json_string(id));
	pthread_mutex_unlock(&jobs_lock);
}

static void sink_attempt_ended(void *ctx, const char *target, const char *outcome,
			       long elapsed_ms)
{
	struct job *job = ctx;
	json_t *attempts, *attempt;

	pthread_mutex_lock(&jobs_lock);
	attempts = json_object_get(job->meta, "attempts");
	if (!attempts) {
		attempts = json_array();
		json_object_set_new(job->meta, "attempts", attempts);
	}
	attempt = json_pack("{s:s, s:s, s:i}", "target", target, "outcome", outcome,
			    "ms", (json_int_t)elapsed_ms);
	if (attempts && attempt)
		json_array_append_new(attempts, attempt);
	if (strcmp(outcome, "ok") == 0)
		json_object_set_new(job->meta, "route", json_string(target));
	pthread_mutex_unlock(&jobs_lock);
}

/* The usage of a finished job, and what it cost where the price is known.
 * Under jobs_lock. */
static void meta_settle_cost(struct job *job)
{
	json_t *usage = json_object_get(job->meta, "usage");
	long in, out;

	if (!usage || !job->model->price.known)
		return;
	in = (long)json_integer_value(json_object_get(usage, "input_tokens"));
	out = (long)json_integer_value(json_object_get(usage, "output_tokens"));
	json_object_set_new(job->meta, "cost_usd", json_real(cost_of(job->model, in, out)));
}

/* The .error text: what happened, then one line per attempt. */
static char *error_text(const json_t *meta, const char *message)
{
	json_t *attempts = json_object_get(meta, "attempts");
	size_t i, size = strlen(message) + 64;
	json_t *a;
	char *text, *p;

	json_array_foreach(attempts, i, a)
		size += 96 + strlen(json_string_value(json_object_get(a, "target")) ?: "") +
			strlen(json_string_value(json_object_get(a, "outcome")) ?: "");
	text = malloc(size);
	if (!text)
		return NULL;
	p = text + snprintf(text, size, "%s\n", message);
	/* the first line is a sentence */
	if (text[0] >= 'a' && text[0] <= 'z')
		text[0] = (char)(text[0] - 'a' + 'A');
	json_array_foreach(attempts, i, a) {
		p += snprintf(p, size - (size_t)(p - text), "attempt %zu: %s: %s after %lld ms\n",
			      i + 1, json_string_value(json_object_get(a, "target")) ?: "?",
			      json_string_value(json_object_get(a, "outcome")) ?: "?",
			      (long long)json_integer_value(json_object_get(a, "ms")));
	}
	return text;
}

/* Writes the end of a job durably: the response first, then .error, then
 * .meta, so a .meta saying done always has its whole response. */
static void persist_end(struct job *job, enum job_status final, const char *meta_text,
			size_t meta_len, const char *error)
{
	char *meta_name = name_with_suffix(job->base, ".meta");
	char *error_name = name_with_suffix(job->base, ".error");
	int rc = 0;

	if (!meta_name || !error_name) {
		log_error("out of memory recording a finished job");
		goto out;
	}
	if (fsync(job->response_fd) < 0)
		rc = -errno;
	if (rc == 0 && final != JOB_DONE && error)
		rc = state_write_file(job->dir->fd, error_name, error, strlen(error),
				      job->file_mode, job->file_uid, job->file_gid);
	if (rc == 0)
		rc = state_write_file(job->dir->fd, meta_name, meta_text, meta_len,
				      job->file_mode, job->file_uid, job->file_gid);
	if (rc == 0)
		rc = state_sync_dir(job->dir->fd);
	if (rc < 0)
		log_error("cannot record a finished job in state_dir: %s", strerror(-rc));
out:
	free(error_name);
	free(meta_name);
}

static void sink_done(void *ctx, int status, const char *message)
{
	struct job *job = ctx;
	enum job_status final;
	struct wakeups w = { 0 };
	const char *reason;
	char *meta_text = NULL, *error = NULL;
	size_t meta_len = 0;
	int keep_files;

	pthread_mutex_lock(&job->file_lock);
	pthread_mutex_lock(&jobs_lock);
	job->engine_job = NULL;
	/* At shutdown the engine cancels what it holds; those jobs stay
	 * queued on disk and resume at the next mount. */
	keep_files = !job->detached && !(shutting_down && status == -ECANCELED);
	reason = json_string_value(json_object_get(job->meta, "finish_reason"));
	if (status == 0 && reason && strcmp(reason, "content_filter") == 0) {
		status = -EIO;
		message = "The provider's content filter cut the answer short.";
	}
	final = status == 0 ? JOB_DONE : status == -ECANCELED ? JOB_CANCELLED : JOB_FAILED;
	if (keep_files) {
		json_object_set_new(job->meta, "status", json_string(status_word(final)));
		meta_set_time(job->meta, "finished");
		meta_settle_cost(job);
		meta_text = meta_dump(job->meta, &meta_len);
		if (final != JOB_DONE)
			error = error_text(job->meta, message ? message : "The job failed.");
	}
	pthread_mutex_unlock(&jobs_lock);

	if (keep_files && meta_text)
		persist_end(job, final, meta_text, meta_len, error);

	pthread_mutex_lock(&jobs_lock);
	job->status = final;
	if (job->in_table) {
		table_remove_locked(job);
		job->refs--;	/* the table's; the engine's is dropped below */
	}
	job_wake_readers(job, &w);
	pthread_mutex_unlock(&jobs_lock);
	pthread_mutex_unlock(&job->file_lock);
	wakeups_deliver(&w);
	if (keep_files)
		log_info("job %s.prompt %s", job->base, status_word(final));
	free(meta_text);
	free(error);
	job_put(job);
}

static const struct engine_sink job_sink = {
	.attempt_started = sink_attempt_started,
	.text = sink_text,
	.attempt_discarded = sink_attempt_discarded,
	.usage = sink_usage,
	.finish_reason = sink_finish_reason,
	.request_id = sink_request_id,
	.attempt_ended = sink_attempt_ended,
	.done = sink_done,
};

/* ---- submission and removal (FUSE threads) ---- */

/* Takes the live job of BASE out of service: cancelled, its files no
 * longer its own. Called with BASE's stripe held. */
static void supersede(struct node *dir, const char *base)
{
	struct wakeups w = { 0 };
	struct job *old;

	pthread_mutex_lock(&jobs_lock);
	old = job_lookup_locked(dir, base);
	if (old)
		old->refs++;
	pthread_mutex_unlock(&jobs_lock);
	if (!old)
		return;
	/* wait for an end being written right now, so it cannot land on
	 * top of what replaces it */
	pthread_mutex_lock(&old->file_lock);
	pthread_mutex_lock(&jobs_lock);
	old->detached = 1;
	if (old->in_table) {
		table_remove_locked(old);
		old->refs--;
	}
	if (old->engine_job)
		engine_cancel(pfs.engine, old->engine_job);
	if (old->status == JOB_QUEUED || old->status == JOB_RUNNING)
		old->status = JOB_CANCELLED;
	job_wake_readers(old, &w);
	pthread_mutex_unlock(&jobs_lock);
	pthread_mutex_unlock(&old->file_lock);
	wakeups_deliver(&w);
	job_put(old);
}

static void unlink_generated(struct node *dir, const char *base)
{
	static const char *const suffixes[] = { ".response", ".meta", ".error" };

	for (size_t i = 0; i < sizeof(suffixes) / sizeof(suffixes[0]); i++) {
		char *name = name_with_suffix(base, suffixes[i]);

		if (name)
			unlinkat(dir->fd, name, 0);
		free(name);
	}
}

/* A refused submission: no job, the reason in NAME.error. */
static void record_refusal(struct node *dir, const char *base, const char *reason,
			   const struct stat *prompt_st)
{
	char *error_name = name_with_suffix(base, ".error");
	char *text = name_with_suffix(reason, "\n");

	supersede(dir, base);
	unlink_generated(dir, base);
	if (error_name && text)
		state_write_file(dir->fd, error_name, text, strlen(text),
				 (prompt_st->st_mode & 0444) | 0200, prompt_st->st_uid,
				 prompt_st->st_gid);
	state_sync_dir(dir->fd);
	free(text);
	free(error_name);
}

static int apply_defaults(struct llm_request *req, const struct model *model)
{
	return prompt_apply_defaults(req, NULL, 0, 0.0, model->max_output_tokens);
}

/* Hands a job in the table to the engine. Called with its stripe held. */
static int start_job(struct job *job, struct llm_request *req)
{
	struct engine_plan plan = {
		.request = *req,
		.model = job->model,
		.retries = 2,
		.timeout_s = pfs.opts->timeout_s,
		.first_token_timeout_s = 0,
		.sink = &job_sink,
		.sink_ctx = job,
	};
	struct engine_job *ej;

	memset(req, 0, sizeof(*req));
	if (apply_defaults(&plan.request, job->model) < 0) {
		llm_request_release(&plan.request);
		return -ENOMEM;
	}
	pthread_mutex_lock(&jobs_lock);
	table_insert_locked(job);
	job->refs++;	/* the engine's, dropped in sink_done */
	pthread_mutex_unlock(&jobs_lock);
	/* the engine may call the sink before engine_submit returns */
	pthread_mutex_lock(&job->file_lock);
	ej = engine_submit(pfs.engine, &plan);
	pthread_mutex_lock(&jobs_lock);
	if (ej && job->status != JOB_DONE && job->status != JOB_FAILED &&
	    job->status != JOB_CANCELLED)
		job->engine_job = ej;
	if (!ej) {
		table_remove_locked(job);
		job->refs -= 2;
	}
	pthread_mutex_unlock(&jobs_lock);
	pthread_mutex_unlock(&job->file_lock);
	return ej ? 0 : -ENOMEM;
}

/* Makes a new job's files: an empty response and a queued .meta. */
static int create_job_files(struct job *job)
{
	char *response_name = name_with_suffix(job->base, ".response");
	char *meta_name = name_with_suffix(job->base, ".meta");
	char *error_name = name_with_suffix(job->base, ".error");
	char *meta_text = NULL;
	size_t meta_len = 0;
	int rc;

	if (!response_name || !meta_name || !error_name) {
		rc = -ENOMEM;
		goto out;
	}
	rc = state_replace_empty(job->dir->fd, response_name, job->file_mode,
				 job->file_uid, job->file_gid);
	if (rc < 0)
		goto out;
	job->response_fd = rc;
	unlinkat(job->dir->fd, error_name, 0);
	meta_text = meta_dump(job->meta, &meta_len);
	if (!meta_text) {
		rc = -ENOMEM;
		goto out;
	}
	rc = state_write_file(job->dir->fd, meta_name, meta_text, meta_len, job->file_mode,
			      job->file_uid, job->file_gid);
	if (rc == 0)
		rc = state_sync_dir(job->dir->fd);
out:
	free(meta_text);
	free(error_name);
	free(meta_name);
	free(response_name);
	return rc;
}

int job_submit(struct node *dir, const char *prompt_name, int prompt_fd, uid_t uid)
{
	struct llm_request req = { 0 };
	char reason[512], sha[65];
	pthread_mutex_t *stripe;
	struct job *job = NULL;
	struct stat st;
	char *base, *text = NULL;
	size_t len;
	int rc;

	base = name_strip_suffix(prompt_name, ".prompt");
	if (!base)
		return -EINVAL;
	stripe = stripe_for(dir, base);
	pthread_mutex_lock(stripe);
	if (fstat(prompt_fd, &st) < 0) {
		rc = -errno;
		goto out;
	}
	rc = read_prompt(prompt_fd, &text, &len);
	if (rc == -EFBIG) {
		snprintf(reason, sizeof(reason),
			 "The prompt was refused: it is larger than the limit of %zu bytes.",
			 pfs.opts->max_prompt_bytes);
		record_refusal(dir, base, reason, &st);
		goto out;
	}
	if (rc < 0)
		goto out;
	rc = prompt_parse(text, len, &req, reason, sizeof(reason));
	if (rc == -ENODATA) {
		rc = 0;		/* touch, or an empty write: nothing to do */
		goto out;
	}
	if (rc < 0) {
		char sentence[640];

		snprintf(sentence, sizeof(sentence), "The prompt was refused: %s", reason);
		record_refusal(dir, base, sentence, &st);
		goto out;
	}
	/* the prompt itself must survive a crash once close() says yes */
	if (fsync(prompt_fd) < 0) {
		rc = -errno;
		goto out;
	}
	sha256_hex(text, len, sha);
	job = job_new(dir, base);
	if (!job) {
		rc = -ENOMEM;
		goto out;
	}
	job->file_uid = st.st_uid;
	job->file_gid = st.st_gid;
	job->file_mode = (st.st_mode & 0444) | 0200;
	json_object_set_new(job->meta, "status", json_string("queued"));
	meta_set_time(job->meta, "submitted");
	json_object_set_new(job->meta, "uid", json_integer(uid));
	json_object_set_new(job->meta, "prompt_sha256", json_string(sha));

	supersede(dir, base);
	rc = create_job_files(job);
	if (rc < 0) {
		log_error("cannot record a new job in state_dir: %s", strerror(-rc));
		goto out;
	}
	rc = start_job(job, &req);
out:
	pthread_mutex_unlock(stripe);
	if (job)
		job_put(job);
	llm_request_release(&req);
	free(text);
	free(base);
	return rc;
}

void job_remove(struct node *dir, const char *prompt_name)
{
	char *base = name_strip_suffix(prompt_name, ".prompt");
	pthread_mutex_t *stripe;

	if (!base)
		return;
	stripe = stripe_for(dir, base);
	pthread_mutex_lock(stripe);
	supersede(dir, base);
	unlink_generated(dir, base);
	pthread_mutex_unlock(stripe);
	free(base);
}

void job_cancel_by_name(struct node *dir, const char *generated_name)
{
	char *base = name_job_base(generated_name);
	pthread_mutex_t *stripe;

	if (!base)
		return;
	stripe = stripe_for(dir, base);
	pthread_mutex_lock(stripe);
	supersede(dir, base);
	pthread_mutex_unlock(stripe);
	free(base);
}

/* ---- what readers and stat see of live jobs ---- */

int job_response_open(struct node *dir, const char *response_name, int fd,
		      struct response_reader *reader)
{
	char *base = name_strip_suffix(response_name, ".response");
	char *error_name;
	struct job *job;
	struct stat st;

	memset(reader, 0, sizeof(*reader));
	reader->fd = fd;
	if (!base)
		return 0;
	pthread_mutex_lock(&jobs_lock);
	job = job_lookup_locked(dir, base);
	if (job) {
		job->refs++;
		reader->job = job;
		reader->generation = job->generation;
	}
	pthread_mutex_unlock(&jobs_lock);
	if (!job) {
		/* a finished job: it failed if it left an .error */
		error_name = name_with_suffix(base, ".error");
		if (error_name && fstatat(dir->fd, error_name, &st, AT_SYMLINK_NOFOLLOW) == 0)
			reader->failed = 1;
		free(error_name);
	}
	free(base);
	return 0;
}

char *job_meta_snapshot(struct node *dir, const char *meta_name, size_t *len)
{
	char *base = name_strip_suffix(meta_name, ".meta");
	struct job *job;
	char *text = NULL;

	if (!base)
		return NULL;
	pthread_mutex_lock(&jobs_lock);
	job = job_lookup_locked(dir, base);
	if (job)
		text = meta_dump(job->meta, len);
	pthread_mutex_unlock(&jobs_lock);
	free(base);
	return text;
}

long long job_response_size(struct node *dir, const char *response_name)
{
	char *base = name_strip_suffix(response_name, ".response");
	long long size = -1;
	struct job *job;

	if (!base)
		return -1;
	pthread_mutex_lock(&jobs_lock);
	job = job_lookup_locked(dir, base);
	if (job)
		size = (long long)job->size;
	pthread_mutex_unlock(&jobs_lock);
	free(base);
	return size;
}

/* ---- resumption after a restart ---- */

static void resume_fail(struct job *job, const char *message)
{
	char *text;
	size_t len;

	json_object_set_new(job->meta, "status", json_string("failed"));
	meta_set_time(job->meta, "finished");
	text = meta_dump(job->meta, &len);
	persist_end(job, JOB_FAILED, text ? text : "{}\n", text ? len : 3, message);
	free(text);
}

static void resume_one(struct node *dir, const char *base, json_t *meta)
{
	const char *want_sha = json_string_value(json_object_get(meta, "prompt_sha256"));
	struct llm_request req = { 0 };
	char reason[512], sha[65];
	char *prompt_name = name_with_suffix(base, ".prompt");
	char *response_name = name_with_suffix(base, ".response");
	struct job *job = job_new(dir, base);
	char *text = NULL;
	struct stat st;
	size_t len;
	int fd = -1, rc;

	if (!job || !prompt_name || !response_name)
		goto out;
	json_decref(job->meta);
	job->meta = json_incref(meta);
	json_object_set_new(job->meta, "status", json_string("queued"));
	fd = openat(dir->fd, prompt_name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0 || fstat(fd, &st) < 0) {
		job->response_fd = openat(dir->fd, response_name, O_RDWR | O_CLOEXEC);
		if (job->response_fd >= 0)
			resume_fail(job, "The job could not be resumed: its prompt file is gone.\n");
		goto out;
	}
	job->file_uid = st.st_uid;
	job->file_gid = st.st_gid;
	job->file_mode = (st.st_mode & 0444) | 0200;
	rc = state_replace_empty(dir->fd, response_name, job->file_mode, job->file_uid,
				 job->file_gid);
	if (rc < 0)
		goto out;
	job->response_fd = rc;
	rc = read_prompt(fd, &text, &len);
	if (rc == 0) {
		sha256_hex(text, len, sha);
		rc = want_sha && strcmp(sha, want_sha) == 0 ? 0 : -ESTALE;
	}
	if (rc == 0)
		rc = prompt_parse(text, len, &req, reason, sizeof(reason));
	if (rc < 0) {
		resume_fail(job, "The job could not be resumed: its prompt changed while the "
				 "daemon was stopped. Write the prompt again to resubmit it.\n");
		goto out;
	}
	log_info("resuming job %s.prompt", base);
	start_job(job, &req);
out:
	if (fd >= 0)
		close(fd);
	llm_request_release(&req);
	free(text);
	free(response_name);
	free(prompt_name);
	if (job)
		job_put(job);
}

static json_t *load_meta(int dir_fd, const char *name)
{
	json_error_t error;
	json_t *meta;
	FILE *f;
	int fd;

	fd = openat(dir_fd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return NULL;
	f = fdopen(fd, "r");
	if (!f) {
		close(fd);
		return NULL;
	}
	meta = json_loadf(f, 0, &error);
	fclose(f);
	if (meta && !json_is_object(meta)) {
		json_decref(meta);
		return NULL;
	}
	return meta;
}

static void resume_directory(struct node *dir, int depth)
{
	struct dirent *de;
	DIR *d;
	int fd;

	fd = openat(dir->fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return;
	d = fdopendir(fd);
	if (!d) {
		close(fd);
		return;
	}
	while ((de = readdir(d)) != NULL) {
		struct stat st;

		if (de->d_name[0] == '.' && (!de->d_name[1] || !strcmp(de->d_name, "..")))
			continue;
		if (fstatat(dir->fd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0)
			continue;
		if (S_ISDIR(st.st_mode) && depth < 64) {
			struct node *child = node_get_child(dir, de->d_name, &st, 0);

			if (child) {
				resume_directory(child, depth + 1);
				node_put(child);
			}
		} else if (S_ISREG(st.st_mode) && file_role_of(de->d_name) == ROLE_META) {
			json_t *meta = load_meta(dir->fd, de->d_name);
			const char *status = json_string_value(json_object_get(meta, "status"));
			char *base = name_strip_suffix(de->d_name, ".meta");

			if (base && status && (!strcmp(status, "queued") || !strcmp(status, "running")))
				resume_one(dir, base, meta);
			free(base);
			json_decref(meta);
		}
	}
	closedir(d);
}

static struct node *structure_child(struct node *parent, const char *name)
{
	struct stat st;

	if (fstatat(parent->fd, name, &st, AT_SYMLINK_NOFOLLOW) < 0 || !S_ISDIR(st.st_mode))
		return NULL;
	return node_get_child(parent, name, &st, 0);
}

void jobs_resume(void)
{
	const struct config *cfg = pfs.config;

	for (size_t c = 0; c < cfg->n_clouds; c++) {
		const struct cloud *cloud = &cfg->clouds[c];
		struct node *cloud_node = structure_child(pfs.root, cloud->name);

		for (size_t r = 0; cloud_node && r < cloud->n_regions; r++) {
			const struct region *region = &cloud->regions[r];
			struct node *region_node = structure_child(cloud_node, region->name);

			for (size_t m = 0; region_node && m < region->n_models; m++) {
				struct node *model_node =
					structure_child(region_node, region->models[m].name);

				if (model_node) {
					resume_directory(model_node, 0);
					node_put(model_node);
				}
			}
			node_put(region_node);
		}
		node_put(cloud_node);
	}
}
