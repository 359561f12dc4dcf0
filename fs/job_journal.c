/* What the journal says about jobs, and what a mount makes of it.
 *
 * Records (one JSON object each, "t" says which):
 *   job     a job accepted: id, its directory's path, NAME, the prompt's
 *           hash, its files' owner and mode, its .meta, and the prompt
 *           itself when small ("prompt")
 *   end     how job ID ended: its final .meta, .error's text, and the
 *           answer itself when small ("response"); a larger answer was
 *           fsync'd before the record was written
 *   cancel  job ID was removed or replaced by hand
 *   drop    the job at DIR and NAME, finished or not, lost its files by
 *           hand (a generated file removed, the prompt emptied)
 *   move    the directory at FROM is now at TO ("exchange": swapped)
 *   forget  the directory of budget account ACCT was removed: its
 *           account goes (ledger_forget), and the jobs recorded before
 *           reserve there no more
 *   ledger  what every budget account had spent when the segment it
 *           opens began (see checkpoints below)
 * A job record holds the job's reservation ("acct": its directories'
 * accounts, root first; "reserve": nano-dollars), and the first end
 * record of a job its charge ("charge"); the copies a checkpoint makes
 * have none, since the ledger record before them counts it.
 * A job record with the path and NAME of a live one replaces it.
 *
 * At mount the records are replayed: a job with no end is resumed; an
 * ended one gets its files written again if a crash lost them. Then a
 * checkpoint starts a new segment holding the live jobs only, so a mount
 * reads what is unfinished, not the history.
 *
 * journal_gate: a record that names a job's place (job, cancel, move) is
 * appended, and the job table or the tree brought up to date with it,
 * under the gate read-locked; a checkpoint write-locks it to cut the
 * journal and to copy the live jobs, so no job is between the two. A
 * forget write-locks it too: an end record's charge and the ledger's
 * are made under the read side, so no charge can be counted in memory
 * on one side of a forget and recorded on the other. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
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
#include "fs/replay_place.h"
#include "fs/state.h"

pthread_rwlock_t journal_gate;
static uint64_t next_id = 1; /* under jobs_lock */
static int journal_fresh;    /* a state_dir from before the journal */

int jobs_journal_open(char *err, size_t err_size)
{
	pthread_rwlockattr_t attr;

	pthread_rwlockattr_init(&attr);
	/* a checkpoint must not starve behind a stream of submissions */
	pthread_rwlockattr_setkind_np(&attr, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
	pthread_rwlock_init(&journal_gate, &attr);
	pthread_rwlockattr_destroy(&attr);
	return journal_open(pfs.state_fd, &journal_fresh, err, err_size);
}

uint64_t job_journal_new_id(void)
{
	uint64_t id;

	pthread_mutex_lock(&jobs_lock);
	id = next_id++;
	pthread_mutex_unlock(&jobs_lock);
	return id;
}

/* The record of JOB as it stands: where it is, and who owns its files. */
static json_t *job_record(struct job *job)
{
	char path[PATH_MAX];
	json_t *rec, *meta;
	uid_t uid;
	gid_t gid;
	mode_t mode;

	if (node_path(job->dir, path, sizeof(path)) < 0)
		return NULL;
	pthread_mutex_lock(&jobs_lock);
	meta = json_deep_copy(job->meta);
	uid = job->file_uid;
	gid = job->file_gid;
	mode = job->file_mode;
	pthread_mutex_unlock(&jobs_lock);
	rec = json_pack("{s:s, s:I, s:s, s:s, s:I, s:I, s:I, s:o*}", "t", "job", "id",
			(json_int_t)job->journal_id, "dir", path, "base", job->base, "uid",
			(json_int_t)uid, "gid", (json_int_t)gid, "mode", (json_int_t)mode, "meta",
			meta);
	if (rec && job->hold.n) {
		/* a checkpoint's copy leaves out an account forgotten since:
		 * resumed, the job must not bring it back */
		json_object_set_new(rec, "acct", ledger_hold_accts_json(&job->hold));
		json_object_set_new(rec, "reserve", json_integer((json_int_t)job->hold.amount));
	}
	return rec;
}

int job_journal_submit(struct job *job, const char *prompt, size_t len, uint64_t *lsn)
{
	json_t *rec = job_record(job);
	int rc;

	if (!rec)
		return -ENOMEM;
	if (prompt)
		json_object_set_new(rec, "prompt", json_stringn(prompt, len));
	rc = journal_append(rec, lsn);
	json_decref(rec);
	return rc;
}

void job_journal_cancel(struct job *job)
{
	json_t *rec;
	uint64_t lsn;

	if (!job->journal_id)
		return;
	/* not waited for: lost in a crash, the job is found without its
	 * prompt, or with another job's, and not run again */
	rec = json_pack("{s:s, s:I}", "t", "cancel", "id", (json_int_t)job->journal_id);
	if (rec && journal_append(rec, &lsn) < 0)
		log_warn("journal: cannot record a cancelled job");
	json_decref(rec);
}

int job_journal_drop(struct node *dir, const char *base)
{
	char path[PATH_MAX];
	uint64_t lsn;
	json_t *rec;
	int rc;

	if (node_path(dir, path, sizeof(path)) < 0)
		return -ENOENT;
	rec = json_pack("{s:s, s:s, s:s}", "t", "drop", "dir", path, "base", base);
	rc = rec ? journal_append(rec, &lsn) : -ENOMEM;
	if (rc == 0)
		rc = journal_wait(lsn);
	json_decref(rec);
	return rc;
}

int job_journal_end(struct job *job, const json_t *final_meta, const char *error,
		    const char *response, size_t response_len, json_t *charge, uint64_t *lsn)
{
	json_t *rec = json_pack("{s:s, s:I, s:O, s:o*}", "t", "end", "id",
				(json_int_t)job->journal_id, "meta", final_meta, "charge", charge);
	int rc;

	if (!rec)
		return -ENOMEM;
	if (error)
		json_object_set_new(rec, "error", json_string(error));
	if (response)
		json_object_set_new(rec, "response", json_stringn(response, response_len));
	rc = journal_append(rec, lsn);
	json_decref(rec);
	return rc;
}

/* ---- directory moves ---- */

int job_move_begin(struct job_move *mv, struct node *from_dir, const char *from_name,
		   struct node *to_dir, const char *to_name, int exchange)
{
	char from[PATH_MAX], to[PATH_MAX];
	uint64_t lsn;
	int rc;

	memset(mv, 0, sizeof(*mv));
	if (node_path(from_dir, from, sizeof(from)) < 0 || node_path(to_dir, to, sizeof(to)) < 0)
		return -ENOENT;
	mv->record =
		json_pack("{s:s, s:s++, s:s++, s:b}", "t", "move", "from", from, from[1] ? "/" : "",
			  from_name, "to", to, to[1] ? "/" : "", to_name, "exchange", exchange);
	if (!mv->record)
		return -ENOMEM;
	/* said before it is done: replay tries the old place too, for a
	 * crash between the two */
	pthread_rwlock_rdlock(&journal_gate);
	rc = journal_append(mv->record, &lsn);
	if (rc == 0)
		rc = journal_wait(lsn);
	if (rc < 0) {
		pthread_rwlock_unlock(&journal_gate);
		json_decref(mv->record);
		mv->record = NULL;
		return rc;
	}
	return 0;
}

void job_move_end(struct job_move *mv, int moved)
{
	uint64_t lsn;

	if (!mv->record)
		return;
	if (!moved) {
		/* it did not happen: say so, or replay would follow it */
		json_t *from = json_incref(json_object_get(mv->record, "from"));

		json_object_set(mv->record, "from", json_object_get(mv->record, "to"));
		json_object_set_new(mv->record, "to", from);
		if (journal_append(mv->record, &lsn) == 0)
			journal_wait(lsn);
	}
	pthread_rwlock_unlock(&journal_gate);
	json_decref(mv->record);
	mv->record = NULL;
}

/* ---- removed directories ---- */

int job_journal_forget(uint64_t acct)
{
	uint64_t lsn = 0;
	json_t *rec;
	int rc = 0;

	/* most directories removed (or made) have no account: no record,
	 * and no wait for the gate */
	if (!ledger_knows(acct))
		return 0;
	rec = ledger_forget_record(acct);
	if (!rec)
		return -ENOMEM;
	/* write side: no end record can be between its charge in memory
	 * and its append (see journal_gate above); a checkpoint's ledger
	 * record is wholly before or after it */
	pthread_rwlock_wrlock(&journal_gate);
	if (ledger_forget(acct))
		rc = journal_append(rec, &lsn);
	pthread_rwlock_unlock(&journal_gate);
	json_decref(rec);
	/* rmdir is rare: its reply waits for a flush, so a crash after it
	 * cannot bring the account back from a snapshot */
	if (rc == 0 && lsn)
		rc = journal_wait(lsn);
	return rc;
}

/* ---- replay ---- */

/* The jobs the records leave: id → { "job": record, "end": record,
 * "path": where it is now, "alt": where it was before the last move }. */
struct replay {
	json_t *jobs;
	json_t *by_place; /* "PATH\nNAME" → id, for a job replacing another */
	uint64_t max_id;
};

static void replay_forget(struct replay *r, const char *job_id)
{
	/* JOB_ID may be the very string by_place holds and frees below */
	char *id = strdup(job_id);
	json_t *entry = id ? json_object_get(r->jobs, id) : NULL;
	char *key;

	if (!entry) {
		free(id);
		return;
	}
	key = replay_place_key(json_string_value(json_object_get(entry, "path")),
			       replay_entry_base(entry));
	if (key && !strcmp(json_string_value(json_object_get(r->by_place, key)) ?: "", id))
		json_object_del(r->by_place, key);
	free(key);
	json_object_del(r->jobs, id);
	free(id);
}

static void replay_job(struct replay *r, json_t *rec, const char *id)
{
	const char *path = json_string_value(json_object_get(rec, "dir"));
	const char *base = json_string_value(json_object_get(rec, "base"));
	json_t *entry, *old_id;
	char *key;

	if (!path || !base || path[0] != '/')
		return;
	key = replay_place_key(path, base);
	if (!key)
		return;
	old_id = json_object_get(r->by_place, key);
	if (old_id && strcmp(json_string_value(old_id), id) != 0)
		replay_forget(r, json_string_value(old_id));
	replay_forget(r, id); /* a checkpoint's copy of the same job */
	entry = json_pack("{s:O, s:s}", "job", rec, "path", path);
	if (entry) {
		json_object_set_new(r->jobs, id, entry);
		json_object_set_new(r->by_place, key, json_string(id));
	}
	free(key);
}

static void replay_move(struct replay *r, json_t *rec)
{
	const char *from = json_string_value(json_object_get(rec, "from"));
	const char *to = json_string_value(json_object_get(rec, "to"));
	int exchange = json_is_true(json_object_get(rec, "exchange"));
	const char *id;
	json_t *entry;

	if (!from || !to)
		return;
	json_object_foreach (r->jobs, id, entry) {
		const char *path = json_string_value(json_object_get(entry, "path"));
		char *now = replay_path_after_move(path, from, to, exchange);
		char *old_key, *new_key;

		if (!now)
			continue;
		old_key = replay_place_key(path, replay_entry_base(entry));
		new_key = replay_place_key(now, replay_entry_base(entry));
		if (old_key && new_key) {
			json_object_del(r->by_place, old_key);
			json_object_set_new(r->by_place, new_key, json_string(id));
		}
		json_object_set(entry, "alt", json_object_get(entry, "path"));
		json_object_set_new(entry, "path", json_string(now));
		free(old_key);
		free(new_key);
		free(now);
	}
}

/* The job at the record's place is forgotten: neither resumed nor its
 * files written again. */
static void replay_drop(struct replay *r, json_t *rec)
{
	const char *path = json_string_value(json_object_get(rec, "dir"));
	const char *base = json_string_value(json_object_get(rec, "base"));
	char *key = path && base ? replay_place_key(path, base) : NULL;
	const char *id = key ? json_string_value(json_object_get(r->by_place, key)) : NULL;

	if (id)
		replay_forget(r, id);
	free(key);
}

/* A forget record: the account goes, and the unfinished jobs recorded
 * before it reserve there no more when resumed, as in the daemon that
 * wrote it (ledger_hold_accts_json). */
static void replay_forget_acct(struct replay *r, json_t *rec)
{
	json_int_t acct = json_integer_value(json_object_get(rec, "acct"));
	const char *id;
	json_t *entry;

	if (ledger_forget_replay(rec) < 0) {
		log_error("journal: a forget record does not read; a removed directory's "
			  "spending may show in a new one");
		return;
	}
	json_object_foreach (r->jobs, id, entry) {
		json_t *list = json_object_get(json_object_get(entry, "job"), "acct");

		for (size_t i = json_array_size(list); i-- > 0;)
			if (json_integer_value(json_array_get(list, i)) == acct)
				json_array_remove(list, i);
	}
}

/* A job's charge, counted again as it was when its end was recorded. */
static void replay_charge(const json_t *charge)
{
	struct ledger_charge c;
	uint64_t *accts;
	size_t n;

	if (!charge)
		return;
	if (ledger_charge_from_json(charge, &accts, &n, &c) == 0)
		ledger_apply(accts, n, &c);
	else
		log_error("journal: a charge does not read; the budgets miss it");
	free(accts);
}

static void replay_record(void *ctx, json_t *rec)
{
	struct replay *r = ctx;
	const char *type = json_string_value(json_object_get(rec, "t"));
	json_int_t n = json_integer_value(json_object_get(rec, "id"));
	char id[32];

	if (!type)
		return;
	audit_replay_record(rec);
	snprintf(id, sizeof(id), "%" PRIu64, (uint64_t)n);
	if (n > 0 && (uint64_t)n > r->max_id)
		r->max_id = (uint64_t)n;
	if (!strcmp(type, "job")) {
		replay_job(r, rec, id);
	} else if (!strcmp(type, "end")) {
		json_t *entry = json_object_get(r->jobs, id);

		if (entry)
			json_object_set(entry, "end", rec);
		replay_charge(json_object_get(rec, "charge"));
	} else if (!strcmp(type, "ledger")) {
		/* what was spent before this segment: the records before it
		 * are counted in it (records are replayed in order) */
		if (ledger_restore(rec) < 0)
			log_error("journal: a ledger record does not read; budgets count "
				  "from what follows it");
	} else if (!strcmp(type, "cancel")) {
		replay_forget(r, id);
	} else if (!strcmp(type, "drop")) {
		replay_drop(r, rec);
	} else if (!strcmp(type, "move")) {
		replay_move(r, rec);
	} else if (!strcmp(type, "forget")) {
		/* after the snapshot and the charges before it, as it came */
		replay_forget_acct(r, rec);
	}
}

static int file_exists(struct node *dir, const char *name)
{
	int fd = node_dir_fd(dir), found;
	struct stat st;

	if (fd < 0)
		return 0;
	found = fstatat(fd, name, &st, AT_SYMLINK_NOFOLLOW) == 0;
	node_dir_fd_release(dir, fd);
	return found;
}

/* Where the job of ENTRY is: its path, or where it was before a move the
 * crash cut short. Its prompt (or .meta) says which. */
static struct node *entry_dir(json_t *entry)
{
	const char *places[] = { json_string_value(json_object_get(entry, "path")),
				 json_string_value(json_object_get(entry, "alt")) };
	const char *base = replay_entry_base(entry);
	char *prompt = name_with_suffix(base, ".prompt");
	char *meta = name_with_suffix(base, ".meta");
	struct node *found = NULL;

	for (size_t i = 0; i < 2 && !found && prompt && meta; i++) {
		struct node *dir = places[i] ? node_at_path(places[i]) : NULL;

		if (dir && (file_exists(dir, prompt) || file_exists(dir, meta)))
			found = dir;
		else if (dir)
			node_put(dir);
	}
	free(meta);
	free(prompt);
	return found;
}

/* Whether NAME in DIR_FD holds exactly DATA. */
static int file_holds(int dir_fd, const char *name, const char *data, size_t len)
{
	char *buf = malloc(len + 1);
	int fd = openat(dir_fd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	ssize_t n = -1;

	if (fd >= 0 && buf)
		n = pread(fd, buf, len + 1, 0);
	if (fd >= 0)
		close(fd);
	n = n == (ssize_t)len && memcmp(buf, data, len) == 0;
	free(buf);
	return (int)n;
}

/* Writes NAME.SUFFIX again unless it already holds TEXT. */
static int restore_file(int dir_fd, const char *base, const char *suffix, const char *text,
			size_t len, json_t *rec)
{
	char *name = name_with_suffix(base, suffix);
	int rc = 0;

	if (!name)
		return -ENOMEM;
	if (!file_holds(dir_fd, name, text, len))
		rc = state_write_file(dir_fd, name, text, len,
				      (mode_t)json_integer_value(json_object_get(rec, "mode")),
				      (uid_t)json_integer_value(json_object_get(rec, "uid")),
				      (gid_t)json_integer_value(json_object_get(rec, "gid")), 0);
	free(name);
	return rc;
}

/* An ended job: its files as the record says, should a crash have lost
 * them (they are written after the record, without a flush of their
 * own). */
static int restore_end(json_t *entry)
{
	json_t *job = json_object_get(entry, "job"), *end = json_object_get(entry, "end");
	json_t *response = json_object_get(end, "response");
	const char *error = json_string_value(json_object_get(end, "error"));
	const char *base = replay_entry_base(entry);
	struct node *dir = entry_dir(entry);
	char *meta_text, *error_name;
	size_t meta_len;
	int dir_fd, rc = 0;

	if (!dir)
		return 0; /* removed since, with its files */
	dir_fd = node_dir_fd(dir);
	meta_text = job_meta_dump(json_object_get(end, "meta"), &meta_len);
	error_name = name_with_suffix(base, ".error");
	if (dir_fd < 0 || !meta_text || !error_name) {
		rc = dir_fd < 0 ? dir_fd : -ENOMEM;
		goto out;
	}
	if (json_is_string(response))
		rc = restore_file(dir_fd, base, ".response", json_string_value(response),
				  json_string_length(response), job);
	if (rc == 0 && error)
		rc = restore_file(dir_fd, base, ".error", error, strlen(error), job);
	else if (rc == 0 && unlinkat(dir_fd, error_name, 0) < 0 && errno != ENOENT)
		rc = -errno;
	if (rc == 0)
		rc = restore_file(dir_fd, base, ".meta", meta_text, meta_len, job);
out:
	if (rc < 0)
		log_error("cannot restore the files of finished job %s.prompt: %s", base,
			  strerror(-rc));
	node_dir_fd_release(dir, dir_fd);
	free(error_name);
	free(meta_text);
	node_put(dir);
	return rc;
}

static void resume_entry(json_t *entry, const char *id)
{
	json_t *job = json_object_get(entry, "job");
	json_t *prompt = json_object_get(job, "prompt");
	struct node *dir = entry_dir(entry);
	struct resume_from from = {
		.id = strtoull(id, NULL, 10),
		.prompt = json_string_value(prompt),
		.prompt_len = json_string_length(prompt),
		.mode = (mode_t)json_integer_value(json_object_get(job, "mode")),
		.uid = (uid_t)json_integer_value(json_object_get(job, "uid")),
		.gid = (gid_t)json_integer_value(json_object_get(job, "gid")),
		.reserve = json_object_get(job, "reserve"),
		.acct = json_object_get(job, "acct"),
	};

	if (!dir) {
		log_warn("job %s.prompt in %s is gone: not resumed", replay_entry_base(entry),
			 json_string_value(json_object_get(entry, "path")));
		return;
	}
	job_resume_one(dir, replay_entry_base(entry), json_object_get(job, "meta"), &from);
	node_put(dir);
}

/* Makes what the replayed records say true: ended jobs' files written
 * again where a crash lost them, unfinished jobs resumed. 0 when every
 * ended job's files are as recorded. */
static int replay_apply(struct replay *r)
{
	int rc = 0, restored = 0, resumed = 0;
	const char *id;
	json_t *entry;

	json_object_foreach (r->jobs, id, entry) {
		if (json_object_get(entry, "end")) {
			if (restore_end(entry) < 0)
				rc = -EIO;
			restored++;
		} else {
			resume_entry(entry, id);
			resumed++;
		}
	}
	log_debug("journal: %d finished jobs checked, %d unfinished resumed", restored, resumed);
	return rc;
}

/* ---- checkpoints ---- */

static uint64_t checkpoint_position;

/* Appends a record of every job in the table (and the end of those whose
 * end is recorded: their files may not be written yet). With
 * journal_gate write-locked. */
static int record_live_jobs(uint64_t *lsn)
{
	struct job **live = NULL;
	size_t n = 0;
	int rc = jobs_collect(&live, &n);

	for (size_t i = 0; i < n && rc == 0; i++) {
		struct job *job = live[i];
		json_t *rec = job_record(job);

		rc = rec ? journal_append(rec, lsn) : -ENOMEM;
		json_decref(rec);
		/* an end already recorded goes along with it: its first
		 * record of the job may be in a segment about to go */
		if (rc == 0 && job->end_recorded) {
			json_t *meta;

			pthread_mutex_lock(&jobs_lock);
			meta = json_deep_copy(job->end_meta ? job->end_meta : job->meta);
			pthread_mutex_unlock(&jobs_lock);
			rc = meta ? job_journal_end(job, meta, job->end_error, NULL, 0, NULL, lsn)
				  : -ENOMEM;
			json_decref(meta);
		}
	}
	for (size_t i = 0; i < n; i++)
		job_put(live[i]);
	free(live);
	return rc;
}

static int64_t checkpoint_seq = -1;

void jobs_checkpoint_cut_locked(void)
{
	json_t *ledger;
	uint64_t lsn;
	int rc;

	checkpoint_seq = journal_rotate();
	audit_checkpoint_cut();
	if (checkpoint_seq < 0) {
		log_error("journal: cannot start a segment: %s", strerror((int)-checkpoint_seq));
		return;
	}
	/* the new segment opens with what every charge recorded before it
	 * adds up to (no charge can be appended meanwhile: the gate is
	 * write-locked), so the old segments may go; made durable with the
	 * live jobs' copies. Without it they stay. */
	ledger = ledger_snapshot();
	rc = ledger ? journal_append(ledger, &lsn) : -ENOMEM;
	json_decref(ledger);
	if (rc < 0) {
		log_error("journal: cannot record the ledger: %s; no checkpoint", strerror(-rc));
		checkpoint_seq = -1;
	}
}

void jobs_checkpoint_finish(void)
{
	uint64_t lsn = 0;
	int rc;

	if (checkpoint_seq < 0)
		return;
	/* the files written since the last checkpoint, made durable at
	 * once, so the records that could remake them may go */
	if (syncfs(pfs.tree_fd) < 0) {
		log_error("journal: cannot flush state_dir: %s", strerror(errno));
		return;
	}
	pthread_rwlock_wrlock(&journal_gate);
	rc = record_live_jobs(&lsn);
	pthread_rwlock_unlock(&journal_gate);
	if (rc == 0 && lsn)
		rc = journal_wait(lsn);
	if (rc == 0)
		rc = journal_drop_old(checkpoint_seq);
	audit_checkpoint_done(rc == 0);
	if (rc < 0)
		log_error("journal: checkpoint failed: %s", strerror(-rc));
	else
		log_info("journal: checkpoint done, segments before %016llx dropped",
			 (unsigned long long)checkpoint_seq);
	checkpoint_position = journal_position();
}

/* A state_dir without a journal: the tree is scanned, and the journal
 * takes its name once it records every job found unfinished. */
static int adopt_tree(void)
{
	uint64_t lsn = 0;
	int rc;

	job_resume_scan();
	pthread_rwlock_wrlock(&journal_gate);
	rc = record_live_jobs(&lsn);
	pthread_rwlock_unlock(&journal_gate);
	if (rc == 0 && lsn)
		rc = journal_wait(lsn);
	if (rc == 0)
		rc = journal_adopt();
	if (rc < 0)
		log_error("journal: cannot start one: %s", strerror(-rc));
	return rc;
}

int jobs_checkpoint_due(void)
{
	return journal_position() - checkpoint_position > JOURNAL_CHECKPOINT_BYTES;
}

void jobs_resume(void)
{
	struct replay r = { .jobs = json_object(), .by_place = json_object() };
	int64_t seq;
	int rc = 0;

	if (!r.jobs || !r.by_place)
		rc = -ENOMEM;
	else if (!journal_fresh)
		rc = journal_replay(replay_record, &r);
	audit_replay_finish();
	pthread_mutex_lock(&jobs_lock);
	if (r.max_id >= next_id)
		next_id = r.max_id + 1;
	pthread_mutex_unlock(&jobs_lock);
	/* a segment of its own for what happens from now on, before any
	 * resumed job can end */
	pthread_rwlock_wrlock(&journal_gate);
	seq = journal_rotate();
	pthread_rwlock_unlock(&journal_gate);
	if (seq < 0)
		log_error("journal: cannot start a segment: %s; no job can be accepted",
			  strerror((int)-seq));
	if (journal_fresh && seq >= 0)
		rc = adopt_tree();
	else if (r.jobs && r.by_place && replay_apply(&r) < 0)
		rc = -EIO;
	json_decref(r.by_place);
	json_decref(r.jobs);
	if (rc < 0 || seq < 0) {
		/* keep the records that could remake the files */
		log_warn("journal: kept as it is; the next mount replays it again");
		return;
	}
	jobs_request_checkpoint();
}

void jobs_journal_close(void)
{
	journal_close();
	pthread_rwlock_destroy(&journal_gate);
}
