/* Names, attributes and directories: lookup, getattr, setattr, readdir,
 * mkdir, rmdir, unlink, rename. The structure that comes from the config
 * (clouds, regions, models) cannot be changed here (EPERM); below a model
 * the tree behaves like a disk. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fs/audit.h"
#include "fs/job.h"
#include "fs/node.h"
#include "fs/ops.h"
#include "fs/ops_internal.h"
#include "fs/policy_store.h"
#include "fs/state.h"

/* How long the kernel may keep what a reply told it.
 *
 * Names: a name stands for the same node for as long as it exists (file
 * nodes are keyed by directory and name, and jobs replace and remove
 * their files without retiring the node), and whatever is made, renamed
 * or removed through the mount updates the kernel's dentries itself. So
 * every entry may be cached. The one thing the kernel cannot see is a
 * job removing its .response, .meta or .error (rm or mv of the prompt):
 * it may then believe for CACHE_TIMEOUT that the name still exists, but
 * every stat, open or access of it still asks (attributes below) and gets
 * ENOENT; only mkdir of that very name would be told EEXIST meanwhile.
 *
 * Attributes: those of the files jobs write change behind the kernel's
 * back (a .response grows while it is read, each new job empties it) and
 * of workspaces too (their times, as jobs write into them): never
 * cached. Those of prompts and other files change only through the
 * mount, whose writes and setattrs update or invalidate the kernel's
 * copy; those of the structure are fixed but for its times. */
#define CACHE_TIMEOUT 1.0

static int is_structure_level(const struct node *dir)
{
	return dir->kind == NODE_ROOT || dir->kind == NODE_CLOUD || dir->kind == NODE_REGION;
}

/* Whether NAME in DIR is part of the tree the config describes. Below a
 * model everything is visible. */
int ops_name_visible(const struct node *dir, const char *name)
{
	if (ops_name_is_policy(name))
		return 1; /* every directory may have a policy */
	switch (dir->kind) {
	case NODE_ROOT:
		for (size_t i = 0; i < pfs.config->n_clouds; i++) {
			if (strcmp(pfs.config->clouds[i].name, name) == 0)
				return 1;
		}
		return 0;
	case NODE_CLOUD:
		for (size_t i = 0; dir->cloud && i < dir->cloud->n_regions; i++) {
			if (strcmp(dir->cloud->regions[i].name, name) == 0)
				return 1;
		}
		return 0;
	case NODE_REGION:
		for (size_t i = 0; dir->region && i < dir->region->n_models; i++) {
			if (strcmp(dir->region->models[i].name, name) == 0)
				return 1;
		}
		return 0;
	default:
		return 1;
	}
}

/* Whether N, named NAME in DIR (NULL when not known), is a file a job
 * writes. */
static int is_generated(const struct node *n, const struct node *dir, const char *name)
{
	return n->kind == NODE_FILE &&
	       (!dir || !name ||
		(node_in_model_tree(dir) && file_role_generated(file_role_of(name))));
}

static double attr_timeout_for(const struct node *n, const struct node *dir, const char *name)
{
	/* a .policy is rewritten by the daemon at each change */
	if (n->kind == NODE_FILE && name && ops_name_is_policy(name))
		return 0.0;
	return n->kind == NODE_WORKSPACE || is_generated(n, dir, name) ? 0.0 : CACHE_TIMEOUT;
}

int ops_stat_node(struct node *n, struct stat *st, double *attr_timeout)
{
	struct node *dir;
	char *name;
	int rc, fd;

	if (n->kind != NODE_FILE) {
		fd = node_dir_fd(n);
		if (fd < 0)
			return fd;
		rc = fstatat(fd, "", st, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) < 0 ? -errno : 0;
		node_dir_fd_release(n, fd);
		if (rc == 0)
			node_fill_attr(n, NULL, NULL, st);
		*attr_timeout = attr_timeout_for(n, NULL, NULL);
		return rc;
	}
	rc = node_file_location(n, &dir, &name);
	if (rc < 0)
		return rc;
	fd = node_dir_fd(dir);
	rc = fd;
	if (fd >= 0) {
		rc = fstatat(fd, name, st, AT_SYMLINK_NOFOLLOW) < 0 ? -errno : 0;
		node_dir_fd_release(dir, fd);
	}
	if (rc == 0)
		node_fill_attr(n, dir, name, st);
	*attr_timeout = attr_timeout_for(n, dir, name);
	free(name);
	node_put(dir);
	return rc;
}

/* Looks NAME up in DIR and fills E with one kernel reference. */
int ops_make_entry(struct node *dir, const char *name, struct fuse_entry_param *e)
{
	struct node *n;
	struct stat st;
	int fd, rc;

	memset(e, 0, sizeof(*e));
	if (!ops_name_visible(dir, name))
		return -ENOENT;
	fd = node_dir_fd(dir);
	if (fd < 0)
		return fd;
	rc = fstatat(fd, name, &st, AT_SYMLINK_NOFOLLOW) < 0 ? -errno : 0;
	node_dir_fd_release(dir, fd);
	if (rc < 0)
		return rc;
	if (is_structure_level(dir) && !S_ISDIR(st.st_mode) && !ops_name_is_policy(name))
		return -ENOENT;
	if (ops_name_is_policy(name) && !S_ISREG(st.st_mode))
		return -ENOENT;
	n = node_get_child_err(dir, name, &st, 1, &rc);
	if (!n)
		return rc;
	node_fill_attr(n, dir, name, &st);
	e->ino = node_ino(n);
	e->attr = st;
	e->attr_timeout = attr_timeout_for(n, dir, name);
	/* a .policy comes and goes with setxattr behind the kernel's back
	 * (telling the kernel from inside a setxattr on its directory would
	 * wait on the directory's lock the kernel holds): its name is
	 * looked up each time */
	e->entry_timeout = ops_name_is_policy(name) ? 0.0 : CACHE_TIMEOUT;
	return 0;
}

static void op_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct fuse_entry_param e;
	int rc = ops_make_entry(node_from_ino(parent), name, &e);

	if (rc < 0)
		fuse_reply_err(req, -rc);
	else
		fuse_reply_entry(req, &e);
}

static void op_forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup)
{
	node_forget(node_from_ino(ino), nlookup);
	fuse_reply_none(req);
}

static void op_forget_multi(fuse_req_t req, size_t count, struct fuse_forget_data *forgets)
{
	for (size_t i = 0; i < count; i++)
		node_forget(node_from_ino(forgets[i].ino), forgets[i].nlookup);
	fuse_reply_none(req);
}

static void op_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct node *n = node_from_ino(ino);
	double timeout;
	struct stat st;
	int rc;

	(void)fi;
	rc = ops_stat_node(n, &st, &timeout);
	if (rc < 0)
		fuse_reply_err(req, -rc);
	else
		fuse_reply_attr(req, &st, timeout);
}

/* The times of a setattr for utimensat: each one given, "now", or left
 * as it is. */
static void setattr_times(const struct stat *attr, int to_set, struct timespec ts[2])
{
	ts[0] = (struct timespec){ .tv_nsec = UTIME_OMIT };
	ts[1] = (struct timespec){ .tv_nsec = UTIME_OMIT };
	if (to_set & FUSE_SET_ATTR_ATIME_NOW)
		ts[0].tv_nsec = UTIME_NOW;
	else if (to_set & FUSE_SET_ATTR_ATIME)
		ts[0] = attr->st_atim;
	if (to_set & FUSE_SET_ATTR_MTIME_NOW)
		ts[1].tv_nsec = UTIME_NOW;
	else if (to_set & FUSE_SET_ATTR_MTIME)
		ts[1] = attr->st_mtim;
}

/* chmod, chown and utimes of a directory through its O_PATH descriptor. */
static int setattr_directory_fd(int fd, const struct stat *attr, int to_set)
{
	char path[64];

	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	if ((to_set & FUSE_SET_ATTR_MODE) && chmod(path, attr->st_mode & 07777) < 0)
		return -errno;
	if (to_set & (FUSE_SET_ATTR_UID | FUSE_SET_ATTR_GID)) {
		uid_t uid = to_set & FUSE_SET_ATTR_UID ? attr->st_uid : (uid_t)-1;
		gid_t gid = to_set & FUSE_SET_ATTR_GID ? attr->st_gid : (gid_t)-1;

		if (fchownat(fd, "", uid, gid, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) < 0)
			return -errno;
	}
	if (to_set & (FUSE_SET_ATTR_ATIME | FUSE_SET_ATTR_MTIME)) {
		struct timespec ts[2];

		setattr_times(attr, to_set, ts);
		if (utimensat(AT_FDCWD, path, ts, 0) < 0)
			return -errno;
	}
	return 0;
}

static int setattr_directory(struct node *n, const struct stat *attr, int to_set)
{
	int fd = node_dir_fd(n), rc;

	if (fd < 0)
		return fd;
	rc = setattr_directory_fd(fd, attr, to_set);
	node_dir_fd_release(n, fd);
	return rc;
}

static int setattr_file_at(struct node *dir, int dir_fd, const char *name, const struct stat *attr,
			   int to_set, struct fuse_file_info *fi)
{
	enum file_role role = node_in_model_tree(dir) ? file_role_of(name) : ROLE_PLAIN;
	int generated = file_role_generated(role);

	if (ops_name_is_policy(name)) {
		struct handle *h = fi && fi->fh ? (struct handle *)(uintptr_t)fi->fh : NULL;

		/* its text changes only by a write that close() checks */
		if (h && h->kind == HANDLE_POLICY && to_set == FUSE_SET_ATTR_SIZE)
			return ops_policy_truncate(h, attr->st_size);
		if (to_set & ~(FUSE_SET_ATTR_ATIME | FUSE_SET_ATTR_MTIME | FUSE_SET_ATTR_ATIME_NOW |
			       FUSE_SET_ATTR_MTIME_NOW | FUSE_SET_ATTR_CTIME))
			return -EPERM;
	}

	if (generated && (to_set & FUSE_SET_ATTR_SIZE))
		return -EACCES;
	if (generated && (to_set & (FUSE_SET_ATTR_MODE | FUSE_SET_ATTR_UID | FUSE_SET_ATTR_GID)))
		return -EPERM; /* they follow their prompt */
	if ((to_set & FUSE_SET_ATTR_MODE) && fchmodat(dir_fd, name, attr->st_mode & 07777, 0) < 0)
		return -errno;
	if (to_set & (FUSE_SET_ATTR_UID | FUSE_SET_ATTR_GID)) {
		uid_t uid = to_set & FUSE_SET_ATTR_UID ? attr->st_uid : (uid_t)-1;
		gid_t gid = to_set & FUSE_SET_ATTR_GID ? attr->st_gid : (gid_t)-1;

		if (fchownat(dir_fd, name, uid, gid, AT_SYMLINK_NOFOLLOW) < 0)
			return -errno;
	}
	if (to_set & FUSE_SET_ATTR_SIZE) {
		int rc;

		if (role == ROLE_PROMPT && (size_t)attr->st_size > pfs.opts->max_prompt_bytes)
			return -EFBIG;
		if (fi && fi->fh)
			rc = ftruncate(((struct handle *)(uintptr_t)fi->fh)->fd, attr->st_size);
		else {
			int fd = openat(dir_fd, name, O_WRONLY | O_NOFOLLOW | O_CLOEXEC);

			if (fd < 0)
				return -errno;
			rc = ftruncate(fd, attr->st_size);
			close(fd);
		}
		if (rc < 0)
			return -errno;
	}
	if (to_set & (FUSE_SET_ATTR_ATIME | FUSE_SET_ATTR_MTIME)) {
		struct timespec ts[2];

		setattr_times(attr, to_set, ts);
		if (utimensat(dir_fd, name, ts, AT_SYMLINK_NOFOLLOW) < 0)
			return -errno;
	}
	return 0;
}

static int setattr_file(struct node *dir, const char *name, const struct stat *attr, int to_set,
			struct fuse_file_info *fi)
{
	int fd = node_dir_fd(dir), rc;

	if (fd < 0)
		return fd;
	rc = setattr_file_at(dir, fd, name, attr, to_set, fi);
	node_dir_fd_release(dir, fd);
	return rc;
}

static void op_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr, int to_set,
		       struct fuse_file_info *fi)
{
	struct node *n = node_from_ino(ino);
	struct node *dir;
	double timeout;
	struct stat st;
	char *name;
	int rc;

	if (n->kind != NODE_FILE) {
		rc = (to_set & FUSE_SET_ATTR_SIZE) ? -EISDIR : setattr_directory(n, attr, to_set);
	} else {
		rc = node_file_location(n, &dir, &name);
		if (rc == 0) {
			rc = setattr_file(dir, name, attr, to_set, fi);
			free(name);
			node_put(dir);
		}
	}
	if (rc == 0)
		rc = ops_stat_node(n, &st, &timeout);
	if (rc < 0)
		fuse_reply_err(req, -rc);
	else
		fuse_reply_attr(req, &st, timeout);
}

/* ---- directories ---- */

struct dir_handle {
	struct dir_handle *prev_open, *next_open; /* every open one, for unmount */
	DIR *dp;
	struct node *node;
	off_t offset;
	struct dirent *entry;
};

static pthread_mutex_t open_dirs_lock = PTHREAD_MUTEX_INITIALIZER;
static struct dir_handle *open_dirs;

static void dir_handle_track(struct dir_handle *d)
{
	pthread_mutex_lock(&open_dirs_lock);
	d->next_open = open_dirs;
	if (open_dirs)
		open_dirs->prev_open = d;
	open_dirs = d;
	pthread_mutex_unlock(&open_dirs_lock);
}

static void dir_handle_free(struct dir_handle *d)
{
	pthread_mutex_lock(&open_dirs_lock);
	if (d->prev_open)
		d->prev_open->next_open = d->next_open;
	else if (open_dirs == d)
		open_dirs = d->next_open;
	if (d->next_open)
		d->next_open->prev_open = d->prev_open;
	pthread_mutex_unlock(&open_dirs_lock);
	closedir(d->dp);
	free(d);
}

void ops_release_open_dirs(void)
{
	while (open_dirs)
		dir_handle_free(open_dirs);
}

void ops_release_all(void)
{
	ops_release_open_files();
	ops_release_open_dirs();
}

static void op_opendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct node *n = node_from_ino(ino);
	struct dir_handle *d;
	int fd, dir_fd;

	if (n->kind == NODE_FILE) {
		fuse_reply_err(req, ENOTDIR);
		return;
	}
	dir_fd = node_dir_fd(n);
	if (dir_fd < 0) {
		fuse_reply_err(req, -dir_fd);
		return;
	}
	d = calloc(1, sizeof(*d));
	if (!d) {
		node_dir_fd_release(n, dir_fd);
		fuse_reply_err(req, ENOMEM);
		return;
	}
	fd = openat(dir_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd >= 0)
		d->dp = fdopendir(fd);
	node_dir_fd_release(n, dir_fd);
	if (!d->dp) {
		int err = errno;

		if (fd >= 0)
			close(fd);
		free(d);
		node_fd_shortage(err);
		fuse_reply_err(req, err);
		return;
	}
	d->node = n;
	dir_handle_track(d);
	fi->fh = (uintptr_t)d;
	if (fuse_reply_open(req, fi) != 0)
		dir_handle_free(d);
}

static void op_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t offset,
		       struct fuse_file_info *fi)
{
	struct dir_handle *d = (struct dir_handle *)(uintptr_t)fi->fh;
	char *buf = calloc(1, size);
	size_t used = 0;

	(void)ino;
	if (!buf) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	if (offset != d->offset) {
		seekdir(d->dp, offset);
		d->entry = NULL;
		d->offset = offset;
	}
	for (;;) {
		struct stat st = { 0 };
		size_t need;

		if (!d->entry) {
			errno = 0;
			d->entry = readdir(d->dp);
			if (!d->entry)
				break;
		}
		if (strcmp(d->entry->d_name, ".") != 0 && strcmp(d->entry->d_name, "..") != 0 &&
		    !ops_name_visible(d->node, d->entry->d_name)) {
			d->offset = d->entry->d_off;
			d->entry = NULL;
			continue;
		}
		st.st_ino = d->entry->d_ino;
		st.st_mode = (mode_t)d->entry->d_type << 12;
		need = fuse_add_direntry(req, buf + used, size - used, d->entry->d_name, &st,
					 d->entry->d_off);
		if (need > size - used)
			break; /* the next call starts with this entry */
		used += need;
		d->offset = d->entry->d_off;
		d->entry = NULL;
	}
	fuse_reply_buf(req, buf, used);
	free(buf);
}

static void op_releasedir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct dir_handle *d = (struct dir_handle *)(uintptr_t)fi->fh;

	(void)ino;
	dir_handle_free(d);
	fuse_reply_err(req, 0);
}

static void op_fsyncdir(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi)
{
	struct dir_handle *d = (struct dir_handle *)(uintptr_t)fi->fh;

	(void)ino;
	(void)datasync;
	fuse_reply_err(req, fsync(dirfd(d->dp)) < 0 ? errno : 0);
}

static void op_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode)
{
	const struct fuse_ctx *ctx = fuse_req_ctx(req);
	struct node *dir = node_from_ino(parent);
	struct fuse_entry_param e;
	struct stat st;
	int rc, fd;

	if (!node_in_model_tree(dir) || ops_name_is_policy(name)) {
		fuse_reply_err(req, EPERM);
		return;
	}
	fd = node_dir_fd(dir);
	if (fd < 0) {
		fuse_reply_err(req, -fd);
		return;
	}
	rc = mkdirat(fd, name, mode & ~job_policy_umask(dir)) < 0 ? -errno : 0;
	/* a new directory may have an old one's inode number: no policy */
	if (rc == 0 && fstatat(fd, name, &st, AT_SYMLINK_NOFOLLOW) == 0)
		policy_store_forget(st.st_dev, st.st_ino);
	if (rc == 0 && pfs.daemon_is_root)
		fchownat(fd, name, ctx->uid, ctx->gid, AT_SYMLINK_NOFOLLOW);
	node_dir_fd_release(dir, fd);
	if (rc < 0) {
		fuse_reply_err(req, -rc);
		return;
	}
	rc = ops_make_entry(dir, name, &e);
	if (rc < 0)
		fuse_reply_err(req, -rc);
	else
		fuse_reply_entry(req, &e);
}

static void op_rmdir(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct node *dir = node_from_ino(parent);
	struct stat st;
	int fd, rc;

	if (!node_in_model_tree(dir)) {
		fuse_reply_err(req, ops_name_visible(dir, name) ? EPERM : ENOENT);
		return;
	}
	fd = node_dir_fd(dir);
	if (fd < 0) {
		fuse_reply_err(req, -fd);
		return;
	}
	/* its identity, so that its node (the kernel may hold it a while)
	 * can be retired: a new directory must never be served with it */
	rc = 0;
	if (fstatat(fd, name, &st, AT_SYMLINK_NOFOLLOW) < 0 || unlinkat(fd, name, AT_REMOVEDIR) < 0)
		rc = errno;
	node_dir_fd_release(dir, fd);
	if (rc) {
		fuse_reply_err(req, rc);
		return;
	}
	node_directory_removed(&st);
	policy_store_forget(st.st_dev, st.st_ino);
	fuse_reply_err(req, 0);
}

/* rm of a .policy: the directory's policy is removed (admins only). */
static void unlink_policy(fuse_req_t req, struct node *dir, const char *name)
{
	struct policy none = { 0 };
	int rc;

	if (!ops_is_policy_admin(req)) {
		fuse_reply_err(req, EPERM);
		return;
	}
	rc = policy_store_replace(dir, &none);
	if (rc == 0)
		node_file_unlinked(dir, name);
	fuse_reply_err(req, -rc);
}

static void op_unlink(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct node *dir = node_from_ino(parent);
	enum file_role role;
	struct stat st;
	int fd, rc = 0;

	if (ops_name_is_policy(name)) {
		unlink_policy(req, dir, name);
		return;
	}
	if (!node_in_model_tree(dir)) {
		fuse_reply_err(req, ops_name_visible(dir, name) ? EPERM : ENOENT);
		return;
	}
	fd = node_dir_fd(dir);
	if (fd < 0) {
		fuse_reply_err(req, -fd);
		return;
	}
	if (fstatat(fd, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
		rc = errno;
	if (rc == 0) {
		role = S_ISREG(st.st_mode) ? file_role_of(name) : ROLE_PLAIN;
		if (role == ROLE_PROMPT)
			job_remove(dir, name);
		else if (role != ROLE_PLAIN)
			job_cancel_by_name(dir, name);
		if (unlinkat(fd, name, 0) < 0)
			rc = errno;
	}
	node_dir_fd_release(dir, fd);
	if (rc) {
		fuse_reply_err(req, rc);
		return;
	}
	node_file_unlinked(dir, name);
	fuse_reply_err(req, 0);
}

/* Whether the rename R may go ahead, with the entries' status filled in;
 * SUBMIT says whether it submits a prompt. */
static int rename_checks(struct node_rename *r, int from_fd, int to_fd, unsigned int flags,
			 int *submit)
{
	enum file_role from_role, to_role;

	*submit = 0;
	if (!node_in_model_tree(r->from_dir) || !node_in_model_tree(r->to_dir))
		return -EPERM;
	/* a policy changes only by a write its close() checks */
	if (ops_name_is_policy(r->from_name) || ops_name_is_policy(r->to_name))
		return -EPERM;
	if (fstatat(from_fd, r->from_name, &r->from, AT_SYMLINK_NOFOLLOW) < 0)
		return -errno;
	if (fstatat(to_fd, r->to_name, &r->to, AT_SYMLINK_NOFOLLOW) == 0)
		r->to_exists = 1;
	else if (errno != ENOENT)
		return -errno;
	r->exchange = (flags & RENAME_EXCHANGE) != 0;
	if (!S_ISREG(r->from.st_mode))
		return 0; /* workspaces move freely */
	from_role = file_role_of(r->from_name);
	to_role = file_role_of(r->to_name);
	if (file_role_generated(from_role))
		return -EPERM;
	if (file_role_generated(to_role))
		return -EACCES;
	*submit = to_role == ROLE_PROMPT;
	return 0;
}

/* The batch pattern: `mv x.tmp x.prompt` submits. The prompt is checked
 * before the rename, so a refused one stays where it was. A directory
 * moved, even to another model, keeps its node: its jobs keep their
 * directory, and the next ones run on the deployment of its new place. */
static void op_rename(fuse_req_t req, fuse_ino_t parent, const char *name, fuse_ino_t newparent,
		      const char *newname, unsigned int flags)
{
	const struct fuse_ctx *ctx = fuse_req_ctx(req);
	struct node_rename r = {
		.from_dir = node_from_ino(parent),
		.from_name = name,
		.to_dir = node_from_ino(newparent),
		.to_name = newname,
	};
	struct job_move move = { 0 };
	char reason[512];
	int submit, rc, fd = -1, from_fd = -1, to_fd = -1;

	/* who renamed, for a job submitted or refused here */
	audit_request_begin(req);
	if (!node_in_model_tree(r.from_dir) || !node_in_model_tree(r.to_dir)) {
		rc = -EPERM;
		goto out;
	}
	from_fd = rc = node_dir_fd(r.from_dir);
	if (rc < 0)
		goto out;
	to_fd = rc = node_dir_fd(r.to_dir);
	if (rc < 0)
		goto out;
	rc = rename_checks(&r, from_fd, to_fd, flags, &submit);
	if (rc < 0)
		goto out;
	if (submit) {
		/* refused before the rename: the file stays where it was */
		rc = job_check_deployment(r.to_dir, newname, ctx->uid, ctx->gid);
		if (rc < 0)
			goto out;
		fd = openat(from_fd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
		if (fd < 0) {
			rc = -errno;
			goto out;
		}
		rc = job_check_prompt(r.to_dir, fd, reason, sizeof(reason));
		if (rc == -EINVAL || rc == -EFBIG) {
			/* refused: the reason goes where the job would have been */
			rc = job_submit(r.to_dir, newname, fd, ctx->uid);
			goto out;
		}
		if (rc < 0 && rc != -ENODATA)
			goto out;
	}
	/* nothing may fail once the rename is done */
	rc = node_rename_prepare(&r);
	if (rc < 0)
		goto out;
	if (file_role_of(name) == ROLE_PROMPT && S_ISREG(r.from.st_mode))
		job_remove(r.from_dir, name);
	/* the jobs below a directory are found by its path after a crash */
	if (S_ISDIR(r.from.st_mode) || (r.exchange && r.to_exists && S_ISDIR(r.to.st_mode))) {
		rc = job_move_begin(&move, r.from_dir, name, r.to_dir, newname, r.exchange);
		if (rc < 0)
			goto out;
	}
	if (renameat2(from_fd, name, to_fd, newname, flags) < 0) {
		rc = -errno;
		job_move_end(&move, 0);
		goto out;
	}
	node_renamed(&r);
	job_move_end(&move, 1);
	rc = 0;
	if (submit)
		rc = job_submit(r.to_dir, newname, fd, ctx->uid);
out:
	rc = audit_request_end(rc, fd);
	node_rename_release(&r);
	if (fd >= 0)
		close(fd);
	node_dir_fd_release(r.to_dir, to_fd);
	node_dir_fd_release(r.from_dir, from_fd);
	fuse_reply_err(req, -rc);
}

static void op_link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t newparent, const char *newname)
{
	(void)ino;
	(void)newparent;
	(void)newname;
	/* one job per prompt file: a second name for it would be ambiguous */
	fuse_reply_err(req, EPERM);
}

static void op_symlink(fuse_req_t req, const char *link, fuse_ino_t parent, const char *name)
{
	(void)link;
	(void)parent;
	(void)name;
	fuse_reply_err(req, EPERM);
}

static void op_mknod(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode, dev_t rdev)
{
	(void)parent;
	(void)name;
	(void)mode;
	(void)rdev;
	fuse_reply_err(req, EPERM);
}

static void op_statfs(fuse_req_t req, fuse_ino_t ino)
{
	struct statvfs sv;

	(void)ino;
	if (fstatvfs(pfs.tree_fd, &sv) < 0)
		fuse_reply_err(req, errno);
	else
		fuse_reply_statfs(req, &sv);
}

const struct fuse_lowlevel_ops promptfs_ops = {
	.lookup = op_lookup,
	.forget = op_forget,
	.forget_multi = op_forget_multi,
	.getattr = op_getattr,
	.setattr = op_setattr,
	.opendir = op_opendir,
	.readdir = op_readdir,
	.releasedir = op_releasedir,
	.fsyncdir = op_fsyncdir,
	.mkdir = op_mkdir,
	.rmdir = op_rmdir,
	.unlink = op_unlink,
	.rename = op_rename,
	.link = op_link,
	.symlink = op_symlink,
	.mknod = op_mknod,
	.statfs = op_statfs,
	.getxattr = ops_getxattr,
	.listxattr = ops_listxattr,
	.setxattr = ops_setxattr,
	.removexattr = ops_removexattr,
	.create = ops_create,
	.open = ops_open,
	.read = ops_read,
	.write = ops_write,
	.flush = ops_flush,
	.release = ops_release,
	.fsync = ops_fsync,
	.poll = ops_poll,
};
