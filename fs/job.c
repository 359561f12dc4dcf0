/* Jobs: the table of live jobs, submission (durable before close()
 * returns), removal, and what readers and stat see of a live job. The
 * engine's reports are in job_sink.c, restarts in job_resume.c, the
 * record's format in job_record.c. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fs/audit.h"
#include "fs/job_internal.h"
#include "fs/journal.h"
#include "fs/log.h"
#include "fs/policy_store.h"
#include "fs/prompt.h"
#include "fs/state.h"

#define JOB_TABLE_SIZE 4096
/* A .meta is read whole up to this much to see its status. */
#define JOB_META_READ_MAX (64 * 1024)
#define SUBMIT_STRIPES 64

pthread_mutex_t jobs_lock = PTHREAD_MUTEX_INITIALIZER;
static struct job *job_table[JOB_TABLE_SIZE];
static int shutting_down; /* under jobs_lock */

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

int jobs_shutting_down_locked(void)
{
	return shutting_down;
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

void job_table_insert_locked(struct job *job)
{
	size_t bucket = job_hash(job->dir, job->base) % JOB_TABLE_SIZE;

	job->hash_next = job_table[bucket];
	job_table[bucket] = job;
	job->in_table = 1;
	job->refs++;
}

/* The table's reference goes to the caller, who drops it with job_put
 * once jobs_lock is released. */
void job_table_remove_locked(struct job *job)
{
	struct job **pp = &job_table[job_hash(job->dir, job->base) % JOB_TABLE_SIZE];

	while (*pp && *pp != job)
		pp = &(*pp)->hash_next;
	if (*pp)
		*pp = job->hash_next;
	job->hash_next = NULL;
	job->in_table = 0;
}

int jobs_collect(struct job ***out, size_t *n)
{
	struct job **jobs = NULL;
	size_t count = 0, cap = 0;
	int rc = 0;

	pthread_mutex_lock(&jobs_lock);
	for (size_t b = 0; b < JOB_TABLE_SIZE && rc == 0; b++) {
		for (struct job *job = job_table[b]; job; job = job->hash_next) {
			if (count == cap) {
				size_t new_cap = cap ? cap * 2 : 256;
				struct job **grown = realloc(jobs, new_cap * sizeof(*jobs));

				if (!grown) {
					rc = -ENOMEM;
					break;
				}
				jobs = grown;
				cap = new_cap;
			}
			job->refs++;
			jobs[count++] = job;
		}
	}
	pthread_mutex_unlock(&jobs_lock);
	if (rc < 0) {
		for (size_t i = 0; i < count; i++)
			job_put(jobs[i]);
		free(jobs);
		return rc;
	}
	*out = jobs;
	*n = count;
	return 0;
}

static void job_free(struct job *job)
{
	if (job->response_fd >= 0)
		close(job->response_fd);
	json_decref(job->meta);
	json_decref(job->end_meta);
	free(job->end_error);
	/* whatever ended it, a job gone holds no room in any budget */
	ledger_release(&job->hold);
	ledger_hold_free(&job->hold);
	free(job->budgets);
	pthread_mutex_destroy(&job->file_lock);
	audit_job_release(job);
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

struct job *job_new(struct node *dir, const char *base, const struct model *model)
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
	job->model = model;
	job->response_fd = -1;
	job->refs = 1;
	job->status = JOB_QUEUED;
	job->limits.retries = 2;
	job->limits.timeout_s = pfs.opts->timeout_s;
	return job;
}

/* ---- submission and removal (FUSE threads) ---- */

/* Takes the live job of BASE out of service: cancelled, its files no
 * longer its own. Called with BASE's stripe held and journal_gate
 * read-locked; RECORD says whether the journal is told (a new job of
 * BASE tells it by itself). */
static void supersede(struct node *dir, const char *base, int record)
{
	struct wakeups w = { 0 };
	struct job *old;
	int table_ref;

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
	table_ref = old->in_table;
	if (table_ref)
		job_table_remove_locked(old);
	if (old->engine_job)
		engine_cancel(pfs.engine, old->engine_job);
	if (old->status == JOB_QUEUED || old->status == JOB_RUNNING)
		old->status = JOB_CANCELLED;
	job_wake_readers(old, &w);
	pthread_mutex_unlock(&jobs_lock);
	/* cancelled: its room goes back (an end already recorded charged it) */
	ledger_release(&old->hold);
	pthread_mutex_unlock(&old->file_lock);
	wakeups_deliver(&w);
	if (record && table_ref)
		job_journal_cancel(old);
	audit_job_cancelled(old);
	if (table_ref)
		job_put(old);
	job_put(old);
}

static void unlink_generated(struct node *dir, const char *base)
{
	static const char *const suffixes[] = { ".response", ".meta", ".error" };
	int fd = node_dir_fd(dir);

	if (fd < 0)
		return;
	for (size_t i = 0; i < sizeof(suffixes) / sizeof(suffixes[0]); i++) {
		char *name = name_with_suffix(base, suffixes[i]);

		if (name)
			unlinkat(fd, name, 0);
		free(name);
	}
	node_dir_fd_release(dir, fd);
}

/* The job of BASE and its files are gone (see job_discard). Under
 * BASE's stripe. *RC: whether the journal was told. */
static void discard_locked(struct node *dir, const char *base, int remove_files, int *rc)
{
	pthread_rwlock_rdlock(&journal_gate);
	supersede(dir, base, 1);
	*rc = job_journal_drop(dir, base);
	pthread_rwlock_unlock(&journal_gate);
	if (*rc < 0)
		log_error(
			"%s: cannot record that the job's files were removed (%s); a crash before "
			"the next checkpoint may bring them back",
			base, strerror(-*rc));
	if (remove_files)
		unlink_generated(dir, base);
}

/* A refused submission: no job, the reason in NAME.error. */
static void record_refusal(struct node *dir, const char *base, const char *reason,
			   const struct stat *prompt_st)
{
	char *error_name = name_with_suffix(base, ".error");
	char *text = name_with_suffix(reason, "\n");
	int fd;

	pthread_rwlock_rdlock(&journal_gate);
	supersede(dir, base, 1);
	pthread_rwlock_unlock(&journal_gate);
	unlink_generated(dir, base);
	fd = node_dir_fd(dir);
	/* no job, so no journal record: the refusal is made durable here */
	if (fd >= 0 && error_name && text)
		state_write_file(fd, error_name, text, strlen(text),
				 (prompt_st->st_mode & 0444) | 0200, prompt_st->st_uid,
				 prompt_st->st_gid, STATE_DURABLE);
	if (fd >= 0)
		state_sync_dir(fd);
	node_dir_fd_release(dir, fd);
	audit_refusal(dir, base, reason);
	free(text);
	free(error_name);
}

/* Hands a job in the table to the engine. Called with its stripe held. */
int job_start(struct job *job, struct llm_request *req)
{
	struct engine_plan plan = {
		.request = *req,
		.n_candidates = job->route.n,
		.retries = (unsigned)job->limits.retries,
		.timeout_s = job->limits.timeout_s,
		.first_token_timeout_s = job->limits.first_token_timeout_s,
		.sink = &job_engine_sink,
		.sink_ctx = job,
	};
	struct engine_job *ej;

	memcpy(plan.candidates, job->route.models, job->route.n * sizeof(*plan.candidates));
	memset(req, 0, sizeof(*req));
	pthread_mutex_lock(&jobs_lock);
	job->refs++; /* the engine's, dropped in sink_done */
	pthread_mutex_unlock(&jobs_lock);
	/* the engine may call the sink before engine_submit returns */
	pthread_mutex_lock(&job->file_lock);
	ej = engine_submit(pfs.engine, &plan);
	pthread_mutex_lock(&jobs_lock);
	if (ej && job->status != JOB_DONE && job->status != JOB_FAILED &&
	    job->status != JOB_CANCELLED)
		job->engine_job = ej;
	pthread_mutex_unlock(&jobs_lock);
	pthread_mutex_unlock(&job->file_lock);
	if (!ej) {
		job_put(job); /* the engine's, never taken */
		job_abandon(job);
		return -ENOMEM;
	}
	return 0;
}

void job_publish(struct job *job)
{
	pthread_mutex_lock(&jobs_lock);
	job_table_insert_locked(job);
	pthread_mutex_unlock(&jobs_lock);
}

void job_abandon(struct job *job)
{
	struct wakeups w = { 0 };
	int was_in_table;

	pthread_mutex_lock(&jobs_lock);
	was_in_table = job->in_table;
	if (was_in_table)
		job_table_remove_locked(job);
	job->status = JOB_FAILED;
	job_wake_readers(job, &w);
	pthread_mutex_unlock(&jobs_lock);
	ledger_release(&job->hold);
	wakeups_deliver(&w);
	if (was_in_table)
		job_put(job); /* the table's reference */
}

/* A new job's files, made in staging/ before it is accepted: an empty
 * response and a queued .meta. */
struct staged_files {
	int in_place; /* no previous files: made in place, not staged */
	char response[STATE_STAGED_NAME];
	char meta[STATE_STAGED_NAME];
};

static int stage_job_files(struct job *job, struct staged_files *staged)
{
	size_t meta_len = 0;
	char *meta_text = job_meta_dump(job->meta, &meta_len);
	int fd, rc;

	if (!meta_text)
		return -ENOMEM;
	rc = job->response_fd = state_stage_file(staged->response, "", 0, job->file_mode,
						 job->file_uid, job->file_gid);
	if (rc >= 0) {
		fd = rc = state_stage_file(staged->meta, meta_text, meta_len, job->file_mode,
					   job->file_uid, job->file_gid);
		if (fd >= 0)
			close(fd);
	}
	if (rc < 0 && job->response_fd >= 0) {
		close(job->response_fd);
		job->response_fd = -1;
		state_discard_staged(staged->response);
	}
	free(meta_text);
	return rc < 0 ? rc : 0;
}

static void discard_staged(struct job *job, struct staged_files *staged)
{
	if (job->response_fd >= 0)
		close(job->response_fd);
	job->response_fd = -1;
	if (staged->in_place)
		return;
	state_discard_staged(staged->response);
	state_discard_staged(staged->meta);
}

/* A new job's files where no previous job's are: made in place, which
 * spares the file system a rename and an inode freed per job. After the
 * job is in the table, so no reader finds them without it. */
static int make_job_files(struct job *job, int dir_fd, const char *response_name,
			  const char *meta_name)
{
	size_t meta_len = 0;
	char *meta_text = job_meta_dump(job->meta, &meta_len);
	int rc;

	if (!meta_text)
		return -ENOMEM;
	rc = state_create_file(dir_fd, response_name, "", 0, job->file_mode, job->file_uid,
			       job->file_gid);
	if (rc >= 0) {
		job->response_fd = rc;
		rc = state_create_file(dir_fd, meta_name, meta_text, meta_len, job->file_mode,
				       job->file_uid, job->file_gid);
		if (rc >= 0)
			close(rc);
	}
	free(meta_text);
	return rc < 0 ? rc : 0;
}

/* Puts a new job's staged files in place. The journal is the durable
 * record; a crash before these reach the disk makes them again. */
static int place_job_files(struct job *job, struct staged_files *staged)
{
	char *response_name = name_with_suffix(job->base, ".response");
	char *meta_name = name_with_suffix(job->base, ".meta");
	char *error_name = name_with_suffix(job->base, ".error");
	int rc, dir_fd = node_dir_fd(job->dir);

	rc = dir_fd;
	if (rc >= 0 && (!response_name || !meta_name || !error_name))
		rc = -ENOMEM;
	if (rc >= 0 && staged->in_place) {
		rc = make_job_files(job, dir_fd, response_name, meta_name);
		goto out;
	}
	if (rc >= 0)
		rc = state_place_staged(staged->response, dir_fd, response_name);
	if (rc >= 0) {
		unlinkat(dir_fd, error_name, 0);
		rc = state_place_staged(staged->meta, dir_fd, meta_name);
	}
out:
	node_dir_fd_release(job->dir, dir_fd);
	free(error_name);
	free(meta_name);
	free(response_name);
	return rc < 0 ? rc : 0;
}

/* -EISDIR when a directory holds a name the job's files need: found
 * before anything is sent or replaced. *FRESH: none of them exists. */
static int check_job_names(struct node *dir, const char *base, int *fresh)
{
	static const char *const suffixes[] = { ".response", ".meta", ".error" };
	int rc = 0, fd = node_dir_fd(dir);

	*fresh = 1;
	if (fd < 0)
		return fd;
	for (size_t i = 0; i < sizeof(suffixes) / sizeof(suffixes[0]) && rc == 0; i++) {
		char *name = name_with_suffix(base, suffixes[i]);
		struct stat st;

		if (!name) {
			rc = -ENOMEM;
		} else if (fstatat(fd, name, &st, AT_SYMLINK_NOFOLLOW) == 0) {
			*fresh = 0;
			if (!S_ISREG(st.st_mode))
				rc = S_ISDIR(st.st_mode) ? -EISDIR : -EEXIST;
		}
		free(name);
	}
	node_dir_fd_release(dir, fd);
	return rc;
}

/* Whether BASE in DIR has a live job or any generated file. */
static int has_job_or_files(struct node *dir, const char *base)
{
	int fresh = 1, live;

	pthread_mutex_lock(&jobs_lock);
	live = job_lookup_locked(dir, base) != NULL;
	pthread_mutex_unlock(&jobs_lock);
	if (!live)
		check_job_names(dir, base, &fresh);
	return live || !fresh;
}

int job_submit(struct node *dir, const char *prompt_name, int prompt_fd, uid_t uid)
{
	struct llm_request req = { 0 };
	struct effective_policy policy = { 0 };
	struct ledger_hold hold = { 0 };
	struct route route;
	struct staged_files staged;
	struct job_limits limits;
	const struct model *model;
	char reason[512], sha[65];
	pthread_mutex_t *stripe;
	struct job *job = NULL;
	int rc, inline_prompt, fresh_name, is_json = 0;
	char *base, *text = NULL;
	struct stat st;
	uint64_t lsn;
	size_t len;

	base = name_strip_suffix(prompt_name, ".prompt");
	if (!base)
		return -EINVAL;
	stripe = stripe_for(dir, base);
	pthread_mutex_lock(stripe);
	if (fstat(prompt_fd, &st) < 0) {
		rc = -errno;
		goto out;
	}
	rc = job_read_prompt(prompt_fd, &text, &len);
	if (rc == -EFBIG) {
		snprintf(reason, sizeof(reason),
			 "The prompt was refused: it is larger than the limit of %zu bytes.",
			 pfs.opts->max_prompt_bytes);
		record_refusal(dir, base, reason, &st);
		goto out;
	}
	if (rc < 0)
		goto out;
	/* the policies in force here, composed once for this submission */
	rc = policy_store_effective(dir, &policy);
	if (rc < 0) {
		snprintf(reason, sizeof(reason),
			 "The prompt was refused: the policies of this directory could not be "
			 "read (%s).",
			 strerror(-rc));
		record_refusal(dir, base, reason, &st);
		goto out;
	}
	rc = prompt_parse_as(text, len, job_policy_format_of(&policy), &req, &is_json, reason,
			     sizeof(reason));
	if (rc == -ENODATA) {
		/* touch: nothing to do; an emptied prompt (`: > x.prompt`, or
		 * an empty file renamed over it) no longer has its answer */
		rc = 0;
		if (has_job_or_files(dir, base))
			discard_locked(dir, base, 1, &rc);
		rc = 0;
		goto out;
	}
	if (rc < 0) {
		char sentence[640];

		snprintf(sentence, sizeof(sentence), "The prompt was refused: %s", reason);
		record_refusal(dir, base, sentence, &st);
		goto out;
	}
	/* where the directory is now; a move later does not change it */
	rc = job_policy_admit(dir, &policy, len, &req, &route, &limits, reason, sizeof(reason));
	if (rc == -ENOENT)
		goto out; /* not below a configured model or family: nowhere to run */
	if (rc < 0) {
		char sentence[640];

		snprintf(sentence, sizeof(sentence), "The prompt was %s.", reason);
		log_info("%s.prompt: %s", base, reason);
		record_refusal(dir, base, sentence, &st);
		goto out;
	}
	/* a directory where the job's files go: refused before anything
	 * is sent or replaced */
	rc = check_job_names(dir, base, &fresh_name);
	if (rc < 0)
		goto out;
	/* the last refusal: room in every budget on the path, held from
	 * now until the job's end is charged */
	rc = job_policy_reserve_route(dir, &policy, &route, &req, &hold, reason, sizeof(reason));
	model = route.models[0];
	if (rc == -EDQUOT) {
		char sentence[640];

		snprintf(sentence, sizeof(sentence), "The prompt was %s.", reason);
		log_info("%s.prompt: %s", base, reason);
		record_refusal(dir, base, sentence, &st);
		goto out;
	}
	if (rc < 0)
		goto out;
	/* the prompt must survive a crash once close() says yes: in the
	 * journal's record when small, else flushed where it is */
	inline_prompt = len <= JOB_INLINE_BYTES;
	if (!inline_prompt && fsync(prompt_fd) < 0) {
		rc = -errno;
		goto out;
	}
	job_sha256_hex(text, len, sha);
	job = job_new(dir, base, model);
	if (!job) {
		rc = -ENOMEM;
		goto out;
	}
	job->file_uid = st.st_uid;
	job->file_gid = st.st_gid;
	job->file_mode = (st.st_mode & 0444) | 0200;
	job->limits = limits;
	job->hold = hold; /* the job's now: released with it */
	memset(&hold, 0, sizeof(hold));
	job->route = route;
	rc = job_keep_cost_inputs(job, &policy, &req);
	if (rc < 0)
		goto out;
	job->journal_id = job_journal_new_id();
	json_object_set_new(job->meta, "status", json_string("queued"));
	job_meta_set_time(job->meta, "submitted");
	json_object_set_new(job->meta, "uid", json_integer(uid));
	json_object_set_new(job->meta, "prompt_sha256", json_string(sha));
	json_object_set_new(job->meta, "format", json_string(is_json ? "json" : "text"));
	audit_job_submitted(job, &policy, text, len);

	/* made before the job is accepted: a full disk refuses it here,
	 * with the previous job of NAME and its files untouched; a name
	 * with no previous job gets them in place, once it is accepted */
	staged.in_place = fresh_name;
	rc = fresh_name ? 0 : stage_job_files(job, &staged);
	if (rc < 0)
		goto out;
	pthread_rwlock_rdlock(&journal_gate);
	rc = job_journal_submit(job, inline_prompt ? text : NULL, len, &lsn);
	if (rc == 0)
		rc = journal_wait(lsn); /* shared with every submission waiting now */
	if (rc < 0) {
		pthread_rwlock_unlock(&journal_gate);
		log_error("cannot record a new job in state_dir: %s", strerror(-rc));
		discard_staged(job, &staged);
		goto out;
	}
	supersede(dir, base, 0);
	/* in the table before its files appear: a reader that finds
	 * NAME.response must find its job too, not an empty finished file */
	job_publish(job);
	pthread_rwlock_unlock(&journal_gate);
	rc = place_job_files(job, &staged);
	if (rc < 0) {
		log_error("cannot put a new job's files in place: %s", strerror(-rc));
		pthread_rwlock_rdlock(&journal_gate);
		job_journal_cancel(job);
		pthread_rwlock_unlock(&journal_gate);
		job_abandon(job);
		discard_staged(job, &staged);
		/* none of NAME's generated files is left to mislead */
		unlink_generated(dir, base);
		goto out;
	}
	rc = job_start(job, &req);
out:
	pthread_mutex_unlock(stripe);
	ledger_release(&hold); /* refused after the reservation */
	ledger_hold_free(&hold);
	if (job)
		job_put(job);
	effective_release(&policy);
	llm_request_release(&req);
	free(text);
	free(base);
	return rc;
}

int job_check_deployment(struct node *dir, const char *prompt_name, uid_t uid, gid_t gid)
{
	const struct model *model;
	const char *geo, *family;
	struct route route;
	char why[512], sentence[600];
	struct stat st = { .st_mode = S_IFREG | 0644, .st_uid = uid, .st_gid = gid };
	struct effective_policy e;
	char *base;
	int rc;

	/* NAME.response must fit where NAME.prompt does */
	if (strlen(prompt_name) - strlen(".prompt") + strlen(".response") > NAME_MAX)
		return -ENAMETOOLONG;
	if (node_route(dir, &model, &geo, &family) < 0)
		return 0;
	rc = policy_store_effective(dir, &e);
	if (rc < 0)
		rc = 0; /* a policy that cannot be read refuses at close() */
	else
		rc = job_policy_route(dir, &e, &route, why, sizeof(why));
	/* refused when no candidate could take even an empty prompt (the
	 * first one's reason is told) */
	if (rc == 0) {
		rc = -EDQUOT;
		for (size_t i = 0; rc == -EDQUOT && i < route.n; i++) {
			char other[512];

			rc = job_policy_check_empty(dir, &e, route.models[i], i ? other : why,
						    i ? sizeof(other) : sizeof(why));
		}
	}
	effective_release(&e);
	if (rc != -EACCES && rc != -EDQUOT)
		return 0;
	base = name_strip_suffix(prompt_name, ".prompt");
	if (base) {
		pthread_mutex_t *stripe = stripe_for(dir, base);

		snprintf(sentence, sizeof(sentence), "The prompt was %s.", why);
		log_info("%s: %s", prompt_name, why);
		pthread_mutex_lock(stripe);
		record_refusal(dir, base, sentence, &st);
		pthread_mutex_unlock(stripe);
	}
	free(base);
	return rc;
}

/* Why a write past the caps of job_policy_prompt_caps failed with
 * ERROR (EFBIG or EDQUOT), naming the .policy that set the cap. */
static void cap_sentence(struct node *dir, int error, char *buf, size_t size)
{
	struct prompt_caps caps;
	char where[512];

	job_policy_prompt_caps(dir, &caps);
	if (error == EDQUOT && caps.budget_bytes < caps.cost_bytes) {
		snprintf(buf, size,
			 "The prompt was refused: its budgets have room for the worst case of a "
			 "prompt of %zu bytes at most, and it is longer (see .usage).",
			 caps.budget_bytes);
	} else if (error == EDQUOT) {
		policy_store_deciding_file(dir, POLICY_MAX_REQUEST_USD, where, sizeof(where));
		snprintf(
			buf, size,
			"The prompt was refused by %s: max_request_usd, the worst case of a prompt "
			"of more than %zu bytes exceeds it.",
			where, caps.cost_bytes);
	} else if (caps.size_bytes < pfs.opts->max_prompt_bytes) {
		policy_store_deciding_file(dir, POLICY_MAX_PROMPT_BYTES, where, sizeof(where));
		snprintf(buf, size,
			 "The prompt was refused by %s: max_prompt_bytes %zu, and it is larger.",
			 where, caps.size_bytes);
	} else {
		snprintf(buf, size,
			 "The prompt was not submitted: it is larger than the limit of %zu bytes.",
			 caps.size_bytes);
	}
}

int job_refuse_unwritten(struct node *dir, const char *prompt_name, int prompt_fd, int error)
{
	char *base = name_strip_suffix(prompt_name, ".prompt");
	char reason[640];
	pthread_mutex_t *stripe;
	struct stat st;

	if (!base)
		return -error;
	if (error == EFBIG || error == EDQUOT)
		cap_sentence(dir, error, reason, sizeof(reason));
	else if (error == EILSEQ)
		snprintf(reason, sizeof(reason),
			 "The prompt was refused: it is not valid UTF-8 (a write to it was "
			 "refused).");
	else
		snprintf(reason, sizeof(reason),
			 "The prompt was not submitted: a write to it failed (%s).",
			 strerror(error));
	stripe = stripe_for(dir, base);
	pthread_mutex_lock(stripe);
	if (fstat(prompt_fd, &st) == 0)
		record_refusal(dir, base, reason, &st);
	pthread_mutex_unlock(stripe);
	free(base);
	return -error;
}

/* Cancels the job of BASE (freed here) under its stripe, and removes
 * its generated files when REMOVE_FILES. */
static void cancel_base(struct node *dir, char *base, int remove_files)
{
	pthread_mutex_t *stripe;

	if (!base)
		return;
	stripe = stripe_for(dir, base);
	pthread_mutex_lock(stripe);
	pthread_rwlock_rdlock(&journal_gate);
	supersede(dir, base, 1);
	pthread_rwlock_unlock(&journal_gate);
	if (remove_files)
		unlink_generated(dir, base);
	pthread_mutex_unlock(stripe);
	free(base);
}

void job_remove(struct node *dir, const char *prompt_name)
{
	cancel_base(dir, name_strip_suffix(prompt_name, ".prompt"), 1);
}

void job_discard(struct node *dir, const char *name, int remove_files)
{
	char *base = name_job_base(name);
	pthread_mutex_t *stripe;
	int rc;

	if (!base)
		return;
	stripe = stripe_for(dir, base);
	pthread_mutex_lock(stripe);
	discard_locked(dir, base, remove_files, &rc);
	pthread_mutex_unlock(stripe);
	free(base);
}

void job_follow_prompt(struct node *dir, int dir_fd, const char *prompt_name)
{
	static const char *const suffixes[] = { ".response", ".meta", ".error" };
	char *base = name_strip_suffix(prompt_name, ".prompt");
	pthread_mutex_t *stripe;
	struct job *job;
	struct stat st;
	mode_t mode;

	if (!base)
		return;
	stripe = stripe_for(dir, base);
	pthread_mutex_lock(stripe);
	if (fstatat(dir_fd, prompt_name, &st, AT_SYMLINK_NOFOLLOW) < 0)
		goto out;
	mode = (st.st_mode & 0444) | 0200;
	/* the live job writes its files with these from now on (read under
	 * its file_lock by the finisher, under jobs_lock by the journal) */
	pthread_mutex_lock(&jobs_lock);
	job = job_lookup_locked(dir, base);
	if (job)
		job->refs++;
	pthread_mutex_unlock(&jobs_lock);
	if (job) {
		pthread_mutex_lock(&job->file_lock);
		pthread_mutex_lock(&jobs_lock);
		job->file_mode = mode;
		job->file_uid = st.st_uid;
		job->file_gid = st.st_gid;
		pthread_mutex_unlock(&jobs_lock);
		pthread_mutex_unlock(&job->file_lock);
		job_put(job);
	}
	for (size_t i = 0; i < sizeof(suffixes) / sizeof(suffixes[0]); i++) {
		char *name = name_with_suffix(base, suffixes[i]);

		if (name && fchownat(dir_fd, name, st.st_uid, st.st_gid, AT_SYMLINK_NOFOLLOW) == 0)
			fchmodat(dir_fd, name, mode, 0);
		free(name);
	}
out:
	pthread_mutex_unlock(stripe);
	free(base);
}

/* ---- what readers and stat see of live jobs ---- */

/* Whether BASE.meta in DIR_FD exists and says done. */
static int meta_says_done(int dir_fd, const char *base)
{
	char *name = name_with_suffix(base, ".meta"), buf[JOB_META_READ_MAX];
	json_t *meta = NULL;
	ssize_t n = -1;
	int fd, done;

	fd = name ? openat(dir_fd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC) : -1;
	if (fd >= 0) {
		n = read(fd, buf, sizeof(buf));
		close(fd);
	}
	if (n > 0)
		meta = json_loadb(buf, (size_t)n, 0, NULL);
	done = meta &&
	       strcmp(json_string_value(json_object_get(meta, "status")) ?: "", "done") == 0;
	json_decref(meta);
	free(name);
	return done;
}

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
		/* a finished job: its answer ends cleanly only if nothing says
		 * it failed and its .meta, still there, says done */
		int dir_fd = node_dir_fd(dir);

		error_name = name_with_suffix(base, ".error");
		if (dir_fd >= 0 && error_name &&
		    fstatat(dir_fd, error_name, &st, AT_SYMLINK_NOFOLLOW) == 0)
			reader->failed = 1;
		else if (dir_fd >= 0 && !meta_says_done(dir_fd, base))
			reader->failed = 1;
		node_dir_fd_release(dir, dir_fd);
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
		text = job_meta_dump(job->meta, len);
	pthread_mutex_unlock(&jobs_lock);
	free(base);
	return text;
}
