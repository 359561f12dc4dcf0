/* Restart: a job the journal shows unfinished is handed to the engine
 * again, unless its prompt changed meanwhile; and, for a state_dir from
 * before the journal, the scan of every .meta that found them then. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fs/job_internal.h"
#include "fs/log.h"
#include "fs/policy_store.h"
#include "fs/prompt.h"
#include "fs/state.h"

/* Each level holds a directory stream open while it walks deeper. */
#define RESUME_MAX_DEPTH 256

/* Ends JOB as failed, the way every job ends: recorded, then its files.
 * In the table meanwhile, like any job: its .meta is rewritten in place,
 * and a reader must get the text from memory, not half of each. */
static void resume_fail(struct job *job, const char *message)
{
	job_publish(job);
	pthread_mutex_lock(&jobs_lock);
	job->refs++; /* what the engine would hold, dropped at the end */
	pthread_mutex_unlock(&jobs_lock);
	job_engine_sink.done(job, -EIO, message);
}

/* The prompt file, written again from the journal when a crash lost it
 * (missing or empty). Returns an open descriptor or -errno. */
static int open_prompt(int dir_fd, const char *name, const struct resume_from *from)
{
	int fd = openat(dir_fd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	struct stat st;

	if (fd >= 0 && (fstat(fd, &st) < 0 || st.st_size > 0 || !from->prompt))
		return fd;
	if (fd < 0 && (errno != ENOENT || !from->prompt))
		return -errno;
	if (fd >= 0)
		close(fd);
	if (state_write_file(dir_fd, name, from->prompt, from->prompt_len, from->mode, from->uid,
			     from->gid, 0) < 0)
		return -errno;
	log_info("%s: written again from the journal", name);
	fd = openat(dir_fd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	return fd < 0 ? -errno : fd;
}

/* The reservation FROM records, held by JOB again. 0 or -ENOMEM. */
static int hold_again(struct job *job, const struct resume_from *from)
{
	size_t i, n = json_array_size(from->acct);
	json_t *v;

	if (!n)
		return 0; /* recorded before budgets were */
	job->hold.accts = calloc(n, sizeof(*job->hold.accts));
	if (!job->hold.accts)
		return -ENOMEM;
	json_array_foreach (from->acct, i, v)
		job->hold.accts[i] = (uint64_t)json_integer_value(v);
	job->hold.n = n;
	job->hold.amount = (nusd_t)json_integer_value(from->reserve);
	return ledger_hold_again(&job->hold);
}

void job_resume_one(struct node *dir, const char *base, json_t *meta,
		    const struct resume_from *from)
{
	const char *want_sha = json_string_value(json_object_get(meta, "prompt_sha256"));
	struct effective_policy policy = { 0 };
	struct llm_request req = { 0 };
	char reason[512], sha[65];
	char *prompt_name = name_with_suffix(base, ".prompt");
	char *response_name = name_with_suffix(base, ".response");
	/* the deployment (or family) its directory is under now: a
	 * workspace moved before the daemon stopped resumes its jobs where
	 * it is */
	const struct model *model = NULL;
	const char *geo, *family;
	struct job *job =
		node_route(dir, &model, &geo, &family) == 0 ? job_new(dir, base, model) : NULL;
	char *text = NULL;
	struct stat st;
	size_t len;
	int fd = -1, dir_fd = -1, rc;

	if (!job || !prompt_name || !response_name)
		goto out;
	job->journal_id = from->id ? from->id : job_journal_new_id();
	/* a copy of its own: the job's record changes on the engine's and
	 * the finisher's threads, META stays the caller's */
	json_decref(job->meta);
	job->meta = json_deep_copy(meta);
	if (!job->meta)
		goto out;
	json_object_set_new(job->meta, "status", json_string("queued"));
	dir_fd = node_dir_fd(dir);
	if (dir_fd < 0)
		goto out;
	fd = open_prompt(dir_fd, prompt_name, from);
	if (fd < 0 || fstat(fd, &st) < 0) {
		job->file_uid = from->uid;
		job->file_gid = from->gid;
		job->file_mode = from->mode ? from->mode : 0644;
		resume_fail(job, "The job could not be resumed: its prompt file is gone.");
		goto out;
	}
	job->file_uid = st.st_uid;
	job->file_gid = st.st_gid;
	job->file_mode = (st.st_mode & 0444) | 0200;
	rc = state_replace_empty(dir_fd, response_name, job->file_mode, job->file_uid,
				 job->file_gid);
	if (rc < 0)
		goto out;
	job->response_fd = rc;
	/* the policies in force now: one may have changed meanwhile */
	rc = policy_store_effective(dir, &policy);
	if (rc < 0) {
		resume_fail(job, "The job could not be resumed: the policies of its directory "
				 "could not be read.");
		goto out;
	}
	rc = job_read_prompt(fd, &text, &len);
	if (rc == 0) {
		job_sha256_hex(text, len, sha);
		rc = want_sha && strcmp(sha, want_sha) == 0 ? 0 : -ESTALE;
	}
	if (rc == 0)
		rc = prompt_parse_as(text, len, job_policy_format_of(&policy), &req, NULL, reason,
				     sizeof(reason));
	if (rc < 0) {
		resume_fail(job, "The job could not be resumed: its prompt changed while the "
				 "daemon was stopped. Write the prompt again to resubmit it.");
		goto out;
	}
	rc = job_policy_admit(dir, &policy, len, &req, &job->route, &job->limits, reason,
			      sizeof(reason));
	if (rc == 0) {
		job->model = job->route.models[0];
		rc = job_keep_cost_inputs(job, &policy, &req);
		if (rc < 0)
			snprintf(reason, sizeof(reason), "out of memory");
	}
	if (rc < 0) {
		char sentence[640];

		snprintf(sentence, sizeof(sentence), "The job could not be resumed: it was %s.",
			 reason);
		resume_fail(job, sentence);
		goto out;
	}
	/* accepted before the restart: its room is held again, whatever
	 * the budgets say now */
	if (hold_again(job, from) < 0) {
		resume_fail(job, "The job could not be resumed: out of memory.");
		goto out;
	}
	log_info("resuming job %s.prompt", base);
	job_publish(job);
	job_start(job, &req);
out:
	if (fd >= 0)
		close(fd);
	node_dir_fd_release(dir, dir_fd);
	effective_release(&policy);
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
	int fd, dir_fd = node_dir_fd(dir);

	if (dir_fd < 0)
		return;
	fd = openat(dir_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	d = fd < 0 ? NULL : fdopendir(fd);
	if (!d) {
		if (fd >= 0)
			close(fd);
		node_dir_fd_release(dir, dir_fd);
		return;
	}
	while ((de = readdir(d)) != NULL) {
		struct stat st;

		if (de->d_name[0] == '.' && (!de->d_name[1] || !strcmp(de->d_name, "..")))
			continue;
		if (fstatat(dir_fd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0)
			continue;
		if (S_ISDIR(st.st_mode) && depth >= RESUME_MAX_DEPTH) {
			log_warn("jobs in workspaces deeper than %d levels are not resumed",
				 RESUME_MAX_DEPTH);
		} else if (S_ISDIR(st.st_mode)) {
			struct node *child = node_get_child(dir, de->d_name, &st, 0);

			if (child) {
				resume_directory(child, depth + 1);
				node_put(child);
			}
		} else if (S_ISREG(st.st_mode) && file_role_of(de->d_name) == ROLE_META) {
			json_t *meta = load_meta(dir_fd, de->d_name);
			const char *status = json_string_value(json_object_get(meta, "status"));
			char *base = name_strip_suffix(de->d_name, ".meta");

			if (base && status &&
			    (!strcmp(status, "queued") || !strcmp(status, "running")))
				job_resume_one(dir, base, meta, &(struct resume_from){ 0 });
			free(base);
			json_decref(meta);
		}
	}
	closedir(d);
	node_dir_fd_release(dir, dir_fd);
}

static struct node *structure_child(struct node *parent, const char *name)
{
	struct stat st;
	int fd = node_dir_fd(parent), rc;

	if (fd < 0)
		return NULL;
	rc = fstatat(fd, name, &st, AT_SYMLINK_NOFOLLOW);
	node_dir_fd_release(parent, fd);
	if (rc < 0 || !S_ISDIR(st.st_mode))
		return NULL;
	return node_get_child(parent, name, &st, 0);
}

void job_resume_scan(void)
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
