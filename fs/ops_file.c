/* Open files: ordinary files pass through to state_dir; a prompt open for
 * writing is submitted by the close() that flushes it; a .response is
 * read through its job, parking reads that must wait. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fs/audit.h"
#include "fs/job.h"
#include "fs/metrics.h"
#include "fs/ops_internal.h"
#include "fs/policy_store.h"
#include "fs/prompt.h"
#include "fs/usage.h"
#include "fs/state.h"

static struct handle *handle_of(const struct fuse_file_info *fi)
{
	return (struct handle *)(uintptr_t)fi->fh;
}

static int wants_write(int flags)
{
	return (flags & O_ACCMODE) != O_RDONLY || (flags & O_TRUNC);
}

/* Flags for the backing open: a prompt is opened read-write so that its
 * close can read back what it submits. */
static int backing_flags(int flags, enum file_role role)
{
	flags &= ~(O_CREAT | O_EXCL | O_NOCTTY | O_NONBLOCK);
	if (role == ROLE_PROMPT && (flags & O_ACCMODE) == O_WRONLY)
		flags = (flags & ~O_ACCMODE) | O_RDWR;
	return flags | O_NOFOLLOW | O_CLOEXEC;
}

/* Open handles, so that those the kernel never released (a close just
 * before the unmount) are freed at exit. */
static pthread_mutex_t open_lock = PTHREAD_MUTEX_INITIALIZER;
static struct handle *open_handles;

/* Tracks H, opened by REQ's caller. */
static void handle_track(struct handle *h, fuse_req_t req)
{
	h->opener = fuse_req_ctx(req)->pid;
	pthread_mutex_lock(&open_lock);
	h->prev_open = NULL;
	h->next_open = open_handles;
	if (open_handles)
		open_handles->prev_open = h;
	open_handles = h;
	pthread_mutex_unlock(&open_lock);
}

static void handle_untrack(struct handle *h)
{
	pthread_mutex_lock(&open_lock);
	if (h->prev_open)
		h->prev_open->next_open = h->next_open;
	else if (open_handles == h)
		open_handles = h->next_open;
	if (h->next_open)
		h->next_open->prev_open = h->prev_open;
	h->prev_open = h->next_open = NULL;
	pthread_mutex_unlock(&open_lock);
}

static void handle_free(struct handle *h)
{
	handle_untrack(h);
	if (h->kind == HANDLE_POLICY)
		ops_policy_release(h);
	if (h->kind == HANDLE_RESPONSE)
		job_response_close(&h->reader);
	else if (h->fd >= 0)
		close(h->fd);
	free(h->snapshot);
	free(h->policy_text);
	node_put(h->node);
	free(h);
}

/* Fills H for an open of NAME in DIR with FLAGS, on backing FD. */
static int handle_setup(struct handle *h, struct node *dir, const char *name, int fd, int flags,
			struct fuse_file_info *fi)
{
	enum file_role role = node_in_model_tree(dir) ? file_role_of(name) : ROLE_PLAIN;

	h->fd = fd;
	h->nonblock = (flags & O_NONBLOCK) != 0;
	/* Only a written prompt's close does something (it submits): no
	 * other close costs a request. */
	fi->noflush = 1;
	switch (role) {
	case ROLE_PROMPT:
		h->kind = (flags & O_ACCMODE) != O_RDONLY ? HANDLE_PROMPT : HANDLE_PLAIN;
		if (h->kind == HANDLE_PROMPT) {
			/* `: > x.prompt` changed it too: its close supersedes
			 * the job (an empty prompt is not submitted) */
			if (flags & O_TRUNC)
				h->dirty = 1;
			/* known at open: a write past it fails at once */
			job_policy_prompt_caps(dir, &h->caps);
			fi->noflush = 0;
			/* Writes go straight to us: the kernel then asks for no
			 * security.capability before each one (it would, this
			 * file system's superblock not being SB_NOSEC), and
			 * ops_write clears set-id bits itself. Every open drops
			 * the pages others cached, as it does without this. */
			fi->direct_io = 1;
		}
		break;
	case ROLE_RESPONSE:
		h->kind = HANDLE_RESPONSE;
		/* its size grows while it is read: no page cache, no size limit */
		fi->direct_io = 1;
		h->fd = -1;
		return job_response_open(dir, name, fd, &h->reader);
	case ROLE_META:
		fi->direct_io = 1;
		h->snapshot = job_meta_snapshot(dir, name, &h->snapshot_len);
		h->kind = h->snapshot ? HANDLE_SNAPSHOT : HANDLE_PLAIN;
		break;
	case ROLE_ERROR:
		fi->direct_io = 1;
		h->kind = HANDLE_PLAIN;
		break;
	default:
		h->kind = HANDLE_PLAIN;
		break;
	}
	return 0;
}

/* openat(2) in DIR: a descriptor, or -errno. With CREATOR (and O_EXCL,
 * so that success means it was made) the new file is given to the
 * creator, in the group the directory gives (ops_new_gid). */
static int open_in(struct node *dir, const char *name, int flags, mode_t mode,
		   const struct fuse_ctx *creator)
{
	int dir_fd = node_dir_fd(dir), fd;

	if (dir_fd < 0)
		return dir_fd;
	fd = openat(dir_fd, name, flags, mode);
	if (fd < 0) {
		fd = -errno;
		node_fd_shortage(-fd);
	} else if (creator && pfs.daemon_is_root) {
		state_give_file(fd, creator->uid, ops_new_gid(dir_fd, creator->gid));
	}
	node_dir_fd_release(dir, dir_fd);
	return fd;
}

/* A handle on N, the .policy of DIR, opened for writing by an admin (the
 * caller checked): what is written is kept in memory and becomes the
 * policy at close (ops_policy.c). The backing file, made again if a
 * change removed it while the kernel kept its name, serves reads. */
static int policy_handle(fuse_req_t req, struct node *dir, struct node *n,
			 struct fuse_file_info *fi, int truncate, struct handle **out)
{
	struct handle *h;
	int fd, rc;

	fd = ops_policy_backing(dir);
	if (fd < 0)
		return fd;
	h = calloc(1, sizeof(*h));
	if (!h) {
		close(fd);
		return -ENOMEM;
	}
	node_hold(n);
	h->node = n;
	h->fd = fd;
	rc = ops_policy_open(h, truncate);
	if (rc < 0) {
		handle_free(h);
		return rc;
	}
	fi->noflush = 0;
	fi->direct_io = 1;
	handle_track(h, req);
	fi->fh = (uintptr_t)h;
	*out = h;
	return 0;
}

static void create_policy(fuse_req_t req, struct node *dir, const char *name,
			  struct fuse_file_info *fi)
{
	struct fuse_entry_param e;
	struct handle *h;
	struct node *n;
	int rc;

	/* the backing file first: the entry is made from it */
	rc = ops_is_policy_admin(req) ? ops_policy_backing(dir) : -EPERM;
	if (rc >= 0) {
		close(rc);
		rc = ops_make_entry(dir, name, &e);
	}
	if (rc < 0) {
		fuse_reply_err(req, -rc);
		return;
	}
	n = node_from_ino(e.ino);
	/* what is written replaces the whole policy */
	rc = policy_handle(req, dir, n, fi, 1, &h);
	if (rc < 0) {
		node_forget(n, 1);
		fuse_reply_err(req, -rc);
		return;
	}
	if (fuse_reply_create(req, &e, fi) != 0) {
		node_forget(n, 1);
		handle_free(h);
	}
}

void ops_create(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
		struct fuse_file_info *fi)
{
	const struct fuse_ctx *ctx = fuse_req_ctx(req);
	struct node *dir = node_from_ino(parent);
	struct fuse_entry_param e;
	enum file_role role;
	struct handle *h;
	int fd, rc;

	if (ops_name_is_policy(name)) {
		create_policy(req, dir, name, fi);
		return;
	}
	if (usage_is_name(name) || metrics_file_is(dir, name)) {
		fuse_reply_err(req, fi->flags & O_EXCL ? EEXIST : EACCES);
		return;
	}
	if (!node_in_model_tree(dir)) {
		fuse_reply_err(req, EPERM);
		return;
	}
	role = file_role_of(name);
	if (file_role_generated(role)) {
		fuse_reply_err(req, EACCES);
		return;
	}
	/* a prompt the policies will refuse is refused before it is written */
	if (role == ROLE_PROMPT) {
		audit_request_begin(req);
		rc = audit_request_end(job_check_deployment(dir, name, ctx->uid, ctx->gid), -1);
		if (rc < 0) {
			ops_job_files_changed(dir, name); /* NAME.error says why */
			fuse_reply_err(req, -rc);
			return;
		}
	}
	/* the policy's umask, beyond the creator's own */
	mode &= ~job_policy_umask(dir);
	fd = open_in(dir, name, backing_flags(fi->flags, role) | O_CREAT | O_EXCL, mode, ctx);
	if (fd == -EEXIST && !(fi->flags & O_EXCL))
		fd = open_in(dir, name, backing_flags(fi->flags, role), 0, NULL);
	if (fd < 0) {
		fuse_reply_err(req, -fd);
		return;
	}
	h = calloc(1, sizeof(*h));
	if (!h) {
		close(fd);
		fuse_reply_err(req, ENOMEM);
		return;
	}
	rc = ops_make_entry(dir, name, &e);
	if (rc < 0) {
		close(fd);
		free(h);
		fuse_reply_err(req, -rc);
		return;
	}
	h->node = node_from_ino(e.ino);
	node_hold(h->node);
	handle_setup(h, dir, name, fd, fi->flags, fi);
	handle_track(h, req);
	fi->fh = (uintptr_t)h;
	if (fuse_reply_create(req, &e, fi) != 0) {
		/* the kernel gave up on this open: forget what it never saw */
		node_forget(h->node, 1);
		handle_free(h);
	}
}

static void open_policy(fuse_req_t req, struct node *n, struct node *dir, struct fuse_file_info *fi)
{
	struct handle *h;
	int rc = ops_is_policy_admin(req) ? 0 : -EPERM;

	if (rc == 0)
		rc = policy_handle(req, dir, n, fi, (fi->flags & O_TRUNC) != 0, &h);

	if (rc < 0)
		fuse_reply_err(req, -rc);
	else if (fuse_reply_open(req, fi) != 0)
		handle_free(h);
}

/* A file the daemon makes, N named NAME in DIR: DIR's .usage or the
 * root's .metrics, its text as it is now, read from memory. */
static void open_made_file(fuse_req_t req, struct node *n, struct node *dir, const char *name,
			   struct fuse_file_info *fi)
{
	struct handle *h;

	if (wants_write(fi->flags) || (fi->flags & O_TRUNC)) {
		fuse_reply_err(req, EACCES);
		return;
	}
	h = calloc(1, sizeof(*h));
	if (h)
		h->snapshot = metrics_file_is(dir, name)
				      ? metrics_file_text(pfs.engine, &h->snapshot_len)
				      : usage_text(dir, &h->snapshot_len);
	if (!h || !h->snapshot) {
		free(h);
		fuse_reply_err(req, ENOMEM);
		return;
	}
	node_hold(n);
	h->node = n;
	h->fd = -1;
	h->kind = HANDLE_SNAPSHOT;
	/* its size is the text's at this open, not at the last stat */
	fi->direct_io = 1;
	fi->noflush = 1;
	handle_track(h, req);
	fi->fh = (uintptr_t)h;
	if (fuse_reply_open(req, fi) != 0)
		handle_free(h);
}

void ops_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct node *n = node_from_ino(ino);
	struct node *dir;
	enum file_role role;
	struct handle *h;
	char *name;
	int fd, rc;

	if (n->kind != NODE_FILE) {
		fuse_reply_err(req, EISDIR);
		return;
	}
	rc = node_file_location(n, &dir, &name);
	if (rc < 0) {
		fuse_reply_err(req, -rc);
		return;
	}
	role = node_in_model_tree(dir) ? file_role_of(name) : ROLE_PLAIN;
	if (file_role_generated(role) && wants_write(fi->flags)) {
		rc = -EACCES; /* generated files are read-only, even for root */
		goto out;
	}
	if (ops_name_is_policy(name) && wants_write(fi->flags)) {
		open_policy(req, n, dir, fi);
		goto out;
	}
	if (usage_is_name(name) || metrics_file_is(dir, name)) {
		open_made_file(req, n, dir, name, fi);
		goto out;
	}
	fd = open_in(dir, name, backing_flags(fi->flags, role), 0, NULL);
	if (fd < 0) {
		rc = fd;
		goto out;
	}
	h = calloc(1, sizeof(*h));
	if (!h) {
		close(fd);
		rc = -ENOMEM;
		goto out;
	}
	node_hold(n);
	h->node = n;
	handle_setup(h, dir, name, fd, fi->flags, fi);
	handle_track(h, req);
	fi->fh = (uintptr_t)h;
	if (fuse_reply_open(req, fi) != 0)
		handle_free(h);
out:
	if (rc < 0)
		fuse_reply_err(req, -rc);
	free(name);
	node_put(dir);
}

void ops_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi)
{
	struct handle *h = handle_of(fi);
	char *buf;
	ssize_t got;

	(void)ino;
	if (h->kind == HANDLE_RESPONSE) {
		job_response_read(req, &h->reader, size, off,
				  h->nonblock || (fi->flags & O_NONBLOCK));
		return;
	}
	if (h->kind == HANDLE_SNAPSHOT) {
		size_t start = off < 0 ? 0 : (size_t)off;

		if (start > h->snapshot_len)
			start = h->snapshot_len;
		if (size > h->snapshot_len - start)
			size = h->snapshot_len - start;
		/* Reply from a copy: once the kernel has the reply, the reader may
		 * close and the handle (with its snapshot) be released while
		 * this thread is still returning from the write. */
		buf = malloc(size ? size : 1);
		if (!buf) {
			fuse_reply_err(req, ENOMEM);
			return;
		}
		memcpy(buf, h->snapshot + start, size);
		fuse_reply_buf(req, buf, size);
		free(buf);
		return;
	}
	buf = malloc(size ? size : 1);
	if (!buf) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	got = pread(h->fd, buf, size, off);
	if (got < 0)
		fuse_reply_err(req, errno);
	else
		fuse_reply_buf(req, buf, (size_t)got);
	free(buf);
}

/* What a disk does on write(2) by a writer without CAP_FSETID (root here:
 * the daemon cannot see the writer's capabilities): set-user-ID is
 * cleared, and set-group-ID when group execution is allowed. The kernel
 * does it itself for writes through the page cache, not for the direct
 * writes of a prompt. Its cached attributes are then told to go. */
static void drop_set_id_bits(fuse_req_t req, struct handle *h, fuse_ino_t ino)
{
	struct stat st;
	mode_t mode;

	if (fuse_req_ctx(req)->uid == 0 || fstat(h->fd, &st) < 0)
		return;
	mode = st.st_mode & 07777;
	if (mode & S_ISUID)
		mode &= ~(mode_t)S_ISUID;
	if ((mode & (S_ISGID | S_IXGRP)) == (S_ISGID | S_IXGRP))
		mode &= ~(mode_t)S_ISGID;
	if (mode == (st.st_mode & 07777) || fchmod(h->fd, mode) < 0)
		return;
	/* attributes only (offset < 0): safe inside this write, which
	 * holds no page the kernel would wait for */
	fuse_lowlevel_notify_inval_inode(pfs.session, ino, -1, 0);
}

/* Whether BUF, written at END of prompt H, keeps it UTF-8 (SPEC 5.1:
 * EILSEQ at the write that shows it). Judged for a write at the end of
 * what is there, the way prompts are written; a write elsewhere is left
 * to close(). */
static int utf8_so_far(struct handle *h, const char *buf, size_t size, off_t end)
{
	char before[3];
	struct stat st;
	ssize_t n = 0;

	if (fstat(h->fd, &st) < 0 || st.st_size != end)
		return 1;
	if (end > 0) {
		off_t from = end > 3 ? end - 3 : 0;

		n = pread(h->fd, before, (size_t)(end - from), from);
		if (n < 0)
			n = 0;
	}
	return prompt_utf8_continues(before, (size_t)n, buf, size) == 0;
}

/* Whether a prompt of BYTES in H's directory has no room in its budgets
 * now (the room known at open may have grown since). */
static int over_budget_now(struct handle *h, size_t bytes)
{
	struct node *dir;
	char *name;
	int over;

	if (node_file_location(h->node, &dir, &name) < 0)
		return 0;
	h->caps.budget_bytes = job_policy_budget_bytes(dir);
	over = bytes > h->caps.budget_bytes;
	free(name);
	node_put(dir);
	return over;
}

/* A write taking prompt H past its cost cap: whether the prompt is read
 * as text (a JSON request's cost is its messages', known at close). */
static int over_cost_cap(struct handle *h, const char *buf, size_t size, off_t off)
{
	char first = 0;

	if (h->caps.always_json)
		return 0;
	if (!h->caps.may_be_json)
		return 1;
	if (off == 0 && size > 0)
		first = buf[0];
	else if (pread(h->fd, &first, 1, 0) != 1)
		first = size > 0 && off == 0 ? buf[0] : 0;
	return first != '{';
}

void ops_write(fuse_req_t req, fuse_ino_t ino, const char *buf, size_t size, off_t off,
	       struct fuse_file_info *fi)
{
	struct handle *h = handle_of(fi);
	ssize_t written;

	if (h->kind == HANDLE_POLICY) {
		int n = ops_policy_write(h, buf, size, off);

		if (n < 0)
			fuse_reply_err(req, -n);
		else
			fuse_reply_write(req, (size_t)n);
		return;
	}
	if (h->kind != HANDLE_PLAIN && h->kind != HANDLE_PROMPT) {
		fuse_reply_err(req, EBADF);
		return;
	}
	if (h->kind == HANDLE_PROMPT) {
		struct stat st;
		off_t end = off;

		if ((fi->flags & O_APPEND) && fstat(h->fd, &st) == 0)
			end = st.st_size;
		if ((size_t)end + size > h->caps.size_bytes) {
			h->write_error = EFBIG;
			fuse_reply_err(req, EFBIG);
			return;
		}
		if ((size_t)end + size > h->caps.cost_bytes && over_cost_cap(h, buf, size, off)) {
			h->write_error = EDQUOT;
			fuse_reply_err(req, EDQUOT);
			return;
		}
		if ((size_t)end + size > h->caps.budget_bytes && over_cost_cap(h, buf, size, off) &&
		    over_budget_now(h, (size_t)end + size)) {
			h->write_error = EDQUOT;
			fuse_reply_err(req, EDQUOT);
			return;
		}
		if (!utf8_so_far(h, buf, size, end)) {
			h->write_error = EILSEQ;
			fuse_reply_err(req, EILSEQ);
			return;
		}
	}
	written = pwrite(h->fd, buf, size, off);
	if (written < 0) {
		if (h->kind == HANDLE_PROMPT)
			h->write_error = errno;
		fuse_reply_err(req, errno);
		return;
	}
	if (h->kind == HANDLE_PROMPT) {
		h->dirty = 1;
		drop_set_id_bits(req, h, ino);
	}
	fuse_reply_write(req, (size_t)written);
}

/* Whether process OPENER has a descriptor on the file at PATH (what
 * /proc/OPENER/fd/N links to). Read without asking this file system. */
static int still_holds(pid_t opener, const char *path)
{
	char dir_path[64], link[PATH_MAX + 1];
	struct dirent *entry;
	int held = 0;
	DIR *fds;

	snprintf(dir_path, sizeof(dir_path), "/proc/%d/fd", (int)opener);
	fds = opendir(dir_path);
	if (!fds)
		return 0; /* gone, or not ours to read: nothing holds it back */
	while (!held && (entry = readdir(fds))) {
		ssize_t n = readlinkat(dirfd(fds), entry->d_name, link, sizeof(link) - 1);

		if (n > 0) {
			link[n] = '\0';
			held = strcmp(link, path) == 0;
		}
	}
	closedir(fds);
	return held;
}

/* Whether a close(2) by PID acts for the open file H (submits a prompt,
 * applies a policy): a close by the process that opened it (any of its
 * threads), or by another once the opener holds it no more. A child that
 * inherited the descriptor (`{ cat r; echo x; } > x.prompt`) closes while
 * the shell still holds it and may write more: its close does nothing,
 * and the text is submitted once, whole, when the shell closes it. */
static int acts_for_opener(struct handle *h, pid_t pid)
{
	char path[PATH_MAX], task[64], where[PATH_MAX];
	struct node *dir;
	char *name;
	int held;

	if (pid == h->opener || pid <= 0 || h->opener <= 0)
		return 1;
	snprintf(task, sizeof(task), "/proc/%d/task/%d", (int)h->opener, (int)pid);
	if (access(task, F_OK) == 0)
		return 1; /* another thread of the opener */
	if (node_file_location(h->node, &dir, &name) < 0)
		return 1;
	held = node_path(dir, where, sizeof(where)) >= 0 &&
	       snprintf(path, sizeof(path), "%s%s/%s", pfs.opts->mountpoint,
			strcmp(where, "/") ? where : "", name) < (int)sizeof(path) &&
	       still_holds(h->opener, path);
	free(name);
	node_put(dir);
	return !held;
}

/* close(2) of a written prompt: submit it. Its return value is close's. */
void ops_flush(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	const struct fuse_ctx *ctx = fuse_req_ctx(req);
	struct handle *h = handle_of(fi);
	struct node *dir;
	char *name;
	int rc;

	(void)ino;
	if ((h->kind == HANDLE_POLICY || h->kind == HANDLE_PROMPT) &&
	    (h->dirty || h->write_error) && !acts_for_opener(h, ctx->pid)) {
		fuse_reply_err(req, 0); /* the opener's close will */
		return;
	}
	if (h->kind == HANDLE_POLICY) {
		rc = node_file_location(h->node, &dir, &name);
		if (rc == 0) {
			rc = ops_policy_close(h, dir);
			free(name);
			node_put(dir);
		}
		fuse_reply_err(req, rc < 0 ? -rc : 0);
		return;
	}
	if (h->kind != HANDLE_PROMPT || (!h->dirty && !h->write_error)) {
		fuse_reply_err(req, 0);
		return;
	}
	h->dirty = 0;
	rc = node_file_location(h->node, &dir, &name);
	if (rc < 0) {
		fuse_reply_err(req, 0); /* removed while open: nothing to submit */
		return;
	}
	/* a prompt a write failed to store whole is never sent */
	audit_request_begin(req);
	if (node_in_model_tree(dir) && file_role_of(name) == ROLE_PROMPT && h->write_error)
		rc = job_refuse_unwritten(dir, name, h->fd, h->write_error);
	else if (node_in_model_tree(dir) && file_role_of(name) == ROLE_PROMPT)
		rc = job_submit(dir, name, h->fd, ctx->uid);
	if (node_in_model_tree(dir) && file_role_of(name) == ROLE_PROMPT)
		ops_job_files_changed(dir, name);
	/* what a failed write left is not the prompt: no hash of it */
	rc = audit_request_end(rc, h->write_error ? -1 : h->fd);
	h->write_error = 0;
	free(name);
	node_put(dir);
	fuse_reply_err(req, rc < 0 ? -rc : 0);
}

void ops_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	(void)ino;
	handle_free(handle_of(fi));
	fuse_reply_err(req, 0);
}

void ops_fsync(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi)
{
	struct handle *h = handle_of(fi);
	int fd = h->kind == HANDLE_RESPONSE ? h->reader.fd : h->fd;
	int rc = 0;

	(void)ino;
	if (fd >= 0)
		rc = datasync ? fdatasync(fd) : fsync(fd);
	fuse_reply_err(req, rc < 0 ? errno : 0);
}

void ops_poll(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi, struct fuse_pollhandle *ph)
{
	struct handle *h = handle_of(fi);

	(void)ino;
	if (h->kind == HANDLE_RESPONSE) {
		job_response_poll(req, &h->reader, ph);
		return;
	}
	if (ph)
		fuse_pollhandle_destroy(ph);
	fuse_reply_poll(req, POLLIN | POLLRDNORM | POLLOUT | POLLWRNORM);
}

void ops_release_open_files(void)
{
	while (open_handles)
		handle_free(open_handles);
}
