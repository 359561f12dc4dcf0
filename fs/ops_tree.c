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
#include "fs/log.h"
#include "fs/metrics.h"
#include "fs/node.h"
#include "fs/ops.h"
#include "fs/ops_internal.h"
#include "fs/policy_store.h"
#include "fs/usage.h"
#include "fs/state.h"

/* How long the kernel may keep what a reply told it (docs/architecture.md,
 * "What the kernel may cache").
 *
 * Names: a name stands for the same node for as long as it exists (file
 * nodes are keyed by directory and name, and jobs replace and remove
 * their files without retiring the node), and whatever is made, renamed
 * or removed through the mount updates the kernel's dentries itself. So
 * every entry may be cached. The one thing the kernel cannot see is a
 * job removing its .response, .meta or .error (rm or mv of the prompt):
 * it may then believe for CACHE_TIMEOUT that the name still exists, but
 * the attributes it holds are dropped (below), so every stat, open or
 * access of it asks and gets ENOENT; only mkdir of that very name would
 * be told EEXIST meanwhile.
 *
 * Attributes: CACHE_TIMEOUT for every node, so that `ls -l` and path
 * walks through a workspace cost no request per entry, except:
 * - a .policy's: never (the daemon rewrites it at each change);
 * - the files of a live job (one in the job table, whose files still
 *   change): LIVE_TIMEOUT, enough for the lookup and the permission
 *   check of one open() to share a reply.
 * What the daemon changes behind the kernel's back it tells the kernel
 * (node_attrs_changed): a live .response at each append, retry and end,
 * before any reader is answered from the new state (fs/job_read.c); a
 * name's generated files after a submission, refusal or removal through
 * the mount replaced or removed them (ops_job_files_changed). A reply
 * marks its node (node_attrs_given) before it reads the attributes, so
 * no change after that read goes untold. Left to the timeouts: the times
 * of a directory jobs write into (a second at most, as for models), a
 * live job's .meta once its end is written (LIVE_TIMEOUT), and the rare
 * first lookup of a name whose reply crosses such a change (the kernel
 * has no inode to drop yet). Reads of a .response are direct_io and
 * never limited by a cached size. */
#define CACHE_TIMEOUT 1.0
#define LIVE_TIMEOUT 0.1

static int is_structure_level(const struct node *dir)
{
	return dir->kind == NODE_ROOT || dir->kind == NODE_CLOUD || dir->kind == NODE_REGION ||
	       dir->kind == NODE_ANY || dir->kind == NODE_GEO;
}

/* Whether NAME in DIR is part of the tree the config describes. Below a
 * model everything is visible. */
int ops_name_visible(const struct node *dir, const char *name)
{
	if (ops_name_is_policy(name) || usage_is_name(name))
		return 1; /* every directory may have a policy, and has its .usage */
	if (metrics_file_is(dir, name))
		return 1;
	switch (dir->kind) {
	case NODE_ROOT:
		if (strcmp(name, ANY_DIR) == 0)
			return 1;
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
	case NODE_ANY:
		return config_geo_named(pfs.config, name) != NULL;
	case NODE_GEO:
		return dir->geo && config_family_in_geo(pfs.config, dir->geo, name) != NULL;
	default:
		return 1;
	}
}

/* Whether NAME in DIR is a file a job writes, should it be a file. */
static int generated_name(const struct node *dir, const char *name)
{
	return node_in_model_tree(dir) && file_role_generated(file_role_of(name));
}

static double attr_timeout_for(const struct node *n, const char *name, int live)
{
	/* a .policy is rewritten by the daemon at each change, a .usage
	 * changes with every job below it, /.metrics with every attempt (a
	 * user's file of that name below a model is not cached either) */
	if (n->kind == NODE_FILE && name &&
	    (ops_name_is_policy(name) || usage_is_name(name) || metrics_file_is_name(name)))
		return 0.0;
	return live ? LIVE_TIMEOUT : CACHE_TIMEOUT;
}

void ops_job_files_changed(struct node *dir, const char *name)
{
	static const char *const suffixes[] = { ".response", ".meta", ".error" };
	char *base = name_job_base(name);

	for (size_t i = 0; base && i < sizeof(suffixes) / sizeof(suffixes[0]); i++) {
		char *generated = name_with_suffix(base, suffixes[i]);
		struct node *n = generated ? node_find_file(dir, generated) : NULL;

		if (n) {
			node_attrs_changed(n);
			node_put(n);
		}
		free(generated);
	}
	free(base);
}

int ops_stat_node(struct node *n, struct stat *st, double *attr_timeout)
{
	struct node *dir;
	char *name;
	int rc, fd, generated, live = 0;

	node_attrs_given(n);
	if (n->kind != NODE_FILE) {
		fd = node_dir_fd(n);
		if (fd < 0)
			return fd;
		rc = fstatat(fd, "", st, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) < 0 ? -errno : 0;
		node_dir_fd_release(n, fd);
		if (rc == 0)
			node_fill_attr(n, NULL, NULL, st);
		*attr_timeout = attr_timeout_for(n, NULL, 0);
		return rc;
	}
	rc = node_file_location(n, &dir, &name);
	if (rc < 0)
		return rc;
	/* live before or after the stat: its files may be changing */
	generated = generated_name(dir, name);
	live = generated && job_is_live(dir, name);
	if (usage_is_name(name)) {
		usage_stat(dir, st); /* made by the daemon, not stored */
		rc = 0;
	} else if (metrics_file_is(dir, name)) {
		metrics_file_stat(pfs.engine, st);
		rc = 0;
	} else {
		fd = rc = node_dir_fd(dir);
		if (fd >= 0) {
			rc = fstatat(fd, name, st, AT_SYMLINK_NOFOLLOW) < 0 ? -errno : 0;
			node_dir_fd_release(dir, fd);
		}
	}
	if (rc == 0) {
		node_fill_attr(n, dir, name, st);
		live = live || (generated && job_is_live(dir, name));
	}
	*attr_timeout = attr_timeout_for(n, name, live);
	free(name);
	node_put(dir);
	return rc;
}

/* Looks NAME up in DIR, open as FD, and fills E with one kernel
 * reference. */
static int make_entry_at(struct node *dir, int fd, const char *name, struct fuse_entry_param *e)
{
	struct node *n;
	struct stat st;
	int rc, generated, live;

	memset(e, 0, sizeof(*e));
	generated = generated_name(dir, name);
	live = generated && job_is_live(dir, name);
	if (usage_is_name(name))
		usage_stat(dir, &st); /* made by the daemon, not stored */
	else if (metrics_file_is(dir, name))
		metrics_file_stat(pfs.engine, &st);
	else if (fstatat(fd, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
		return -errno;
	if (is_structure_level(dir) && !S_ISDIR(st.st_mode) && !ops_name_is_policy(name) &&
	    !usage_is_name(name) && !metrics_file_is(dir, name))
		return -ENOENT;
	if (ops_name_is_policy(name) && !S_ISREG(st.st_mode))
		return -ENOENT;
	n = node_get_child_err(dir, name, &st, 1, &rc);
	if (!n)
		return rc;
	/* the node was needed to mark it: a live job's file is read again
	 * after the mark, so that no change since goes untold */
	node_attrs_given(n);
	generated = generated && n->kind == NODE_FILE;
	live = generated && (live || job_is_live(dir, name));
	if (live && fstatat(fd, name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
		rc = -errno;
		node_forget(n, 1);
		return rc;
	}
	node_fill_attr(n, dir, name, &st);
	e->ino = node_ino(n);
	e->attr = st;
	e->attr_timeout = attr_timeout_for(n, name, live);
	/* a .policy comes and goes with setxattr behind the kernel's back
	 * (telling the kernel from inside a setxattr on its directory would
	 * wait on the directory's lock the kernel holds): its name is
	 * looked up each time */
	e->entry_timeout = ops_name_is_policy(name) ? 0.0 : CACHE_TIMEOUT;
	return 0;
}

int ops_make_entry(struct node *dir, const char *name, struct fuse_entry_param *e)
{
	int fd, rc;

	memset(e, 0, sizeof(*e));
	if (!ops_name_visible(dir, name))
		return -ENOENT;
	fd = node_dir_fd(dir);
	if (fd < 0)
		return fd;
	rc = make_entry_at(dir, fd, name, e);
	node_dir_fd_release(dir, fd);
	return rc;
}

gid_t ops_new_gid(int dir_fd, gid_t gid)
{
	struct stat st;

	/* a team's directory (chmod g+s) keeps its group on what is made
	 * in it; the daemon made it, so the kernel's own rule does not */
	if (fstat(dir_fd, &st) == 0 && (st.st_mode & S_ISGID))
		return st.st_gid;
	return gid;
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

/* A prompt's size changed: its text is a new question (issue: any change
 * of a prompt supersedes its job). Through a descriptor open for writing,
 * its close submits the new text; by path (truncate(1)), nothing will,
 * so the old job and its files go now. */
static void prompt_truncated(struct node *dir, const char *name, struct fuse_file_info *fi)
{
	struct handle *h = fi && fi->fh ? (struct handle *)(uintptr_t)fi->fh : NULL;

	if (h && h->kind == HANDLE_PROMPT) {
		h->dirty = 1;
	} else {
		job_discard(dir, name, 1);
		ops_job_files_changed(dir, name);
	}
}

static int setattr_file_at(struct node *dir, int dir_fd, const char *name, const struct stat *attr,
			   int to_set, struct fuse_file_info *fi)
{
	enum file_role role = node_in_model_tree(dir) ? file_role_of(name) : ROLE_PLAIN;
	int generated = file_role_generated(role);

	if (usage_is_name(name) || metrics_file_is(dir, name))
		return -EPERM; /* the daemon's, made when read */
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
	/* a job's files take their prompt's owner and read bits, also later */
	if (role == ROLE_PROMPT &&
	    (to_set & (FUSE_SET_ATTR_MODE | FUSE_SET_ATTR_UID | FUSE_SET_ATTR_GID))) {
		job_follow_prompt(dir, dir_fd, name);
		/* the kernel checks permissions on what it keeps */
		ops_job_files_changed(dir, name);
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
		if (role == ROLE_PROMPT)
			prompt_truncated(dir, name, fi);
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

/* The offsets after the entries that end a listing, the root's .metrics
 * then every directory's .usage: past any offset the backing directory's
 * stream gives (ext4 and tmpfs give hashes or counters below 2^63 - 2). */
#define METRICS_DIR_OFFSET (INT64_MAX - 1)
#define USAGE_DIR_OFFSET INT64_MAX

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

static int remember_ino(fuse_ino_t **list, size_t *n, size_t *cap, fuse_ino_t ino)
{
	if (*n == *cap) {
		size_t grown = *cap ? *cap * 2 : 64;
		fuse_ino_t *more = realloc(*list, grown * sizeof(*more));

		if (!more)
			return 0;
		*list = more;
		*cap = grown;
	}
	(*list)[(*n)++] = ino;
	return 1;
}

/* An entry the daemon makes (NAME: the root's .metrics, or the .usage
 * that ends every listing) at offset OFFSET of a listing of D into BUF
 * (SIZE bytes, *USED of them taken), with its attributes and a kernel
 * reference under PLUS (remembered in GIVEN, to be taken back if the
 * reply fails). 1 if it fit, else 0 (the next call comes back for it). */
static int add_made_entry(fuse_req_t req, struct dir_handle *d, const char *name, off_t offset,
			  char *buf, size_t size, size_t *used, int plus, fuse_ino_t **given,
			  size_t *n_given, size_t *cap_given)
{
	struct fuse_entry_param e = { 0 };
	size_t need;

	if (!plus || make_entry_at(d->node, dirfd(d->dp), name, &e) < 0) {
		memset(&e, 0, sizeof(e));
		e.attr.st_mode = S_IFREG;
		e.attr.st_ino = 1; /* readdir(3) skips an entry numbered 0 */
	}
	if (plus)
		need = fuse_add_direntry_plus(req, buf + *used, size - *used, name, &e, offset);
	else
		need = fuse_add_direntry(req, buf + *used, size - *used, name, &e.attr, offset);
	if (need <= size - *used && (!e.ino || remember_ino(given, n_given, cap_given, e.ino))) {
		*used += need;
		return 1;
	}
	if (e.ino)
		node_forget(node_from_ino(e.ino), 1);
	return 0;
}

/* One READDIR or, with PLUS, READDIRPLUS: each entry with its
 * attributes and a kernel reference, so that `ls -l` costs no lookup per
 * entry (the kernel asks for READDIRPLUS while the entries it returned
 * are used, plain READDIR otherwise). */
static void read_directory(fuse_req_t req, size_t size, off_t offset, struct fuse_file_info *fi,
			   int plus)
{
	struct dir_handle *d = (struct dir_handle *)(uintptr_t)fi->fh;
	char *buf = calloc(1, size);
	/* the references given, taken back if the reply does not arrive */
	fuse_ino_t *given = NULL;
	size_t used = 0, n_given = 0, cap_given = 0;
	int err = 0;

	if (!buf) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	if (offset >= METRICS_DIR_OFFSET) {
		/* past the directory's own entries: .usage, unless it was
		 * the last */
		if (offset == METRICS_DIR_OFFSET)
			add_made_entry(req, d, USAGE_FILE, USAGE_DIR_OFFSET, buf, size, &used, plus,
				       &given, &n_given, &cap_given);
		goto reply;
	}
	if (offset != d->offset) {
		seekdir(d->dp, offset);
		d->entry = NULL;
		d->offset = offset;
	}
	for (;;) {
		struct fuse_entry_param e = { 0 };
		const char *name;
		size_t need;
		int dots, fits;

		if (!d->entry) {
			errno = 0;
			d->entry = readdir(d->dp);
			if (!d->entry && d->node->kind == NODE_WORKSPACE)
				break;
			if (!d->entry) {
				/* then the daemon's own, which no directory
				 * stores: the root's .metrics, and .usage; a
				 * workspace's .usage is not listed (only read by
				 * name), so that rm -r, cp -r and tar of it work */
				if (d->node->kind == NODE_ROOT &&
				    !add_made_entry(req, d, METRICS_FILE, METRICS_DIR_OFFSET, buf,
						    size, &used, plus, &given, &n_given,
						    &cap_given))
					break;
				add_made_entry(req, d, USAGE_FILE, USAGE_DIR_OFFSET, buf, size,
					       &used, plus, &given, &n_given, &cap_given);
				break;
			}
		}
		name = d->entry->d_name;
		dots = strcmp(name, ".") == 0 || strcmp(name, "..") == 0;
		/* a stored .usage (a user's, from before) is hidden: the
		 * daemon's comes last */
		if ((!dots && !ops_name_visible(d->node, name)) || usage_is_name(name) ||
		    metrics_file_is(d->node, name)) {
			d->offset = d->entry->d_off;
			d->entry = NULL;
			continue;
		}
		/* without attributes (nodeid 0) when it cannot be had, e.g.
		 * removed meanwhile: the kernel looks it up if it needs to */
		if (!plus || dots || make_entry_at(d->node, dirfd(d->dp), name, &e) < 0) {
			memset(&e, 0, sizeof(e));
			e.attr.st_ino = d->entry->d_ino;
			e.attr.st_mode = (mode_t)d->entry->d_type << 12;
		}
		if (plus)
			need = fuse_add_direntry_plus(req, buf + used, size - used, name, &e,
						      d->entry->d_off);
		else
			need = fuse_add_direntry(req, buf + used, size - used, name, &e.attr,
						 d->entry->d_off);
		fits = need <= size - used;
		if (fits && e.ino && !remember_ino(&given, &n_given, &cap_given, e.ino)) {
			node_forget(node_from_ino(e.ino), 1);
			err = ENOMEM;
			break;
		}
		if (!fits) {
			/* the next call starts with this entry, which the
			 * kernel does not get now: nor does its reference */
			if (e.ino)
				node_forget(node_from_ino(e.ino), 1);
			break;
		}
		used += need;
		d->offset = d->entry->d_off;
		d->entry = NULL;
	}
reply:
	if (err)
		fuse_reply_err(req, err);
	if (err || fuse_reply_buf(req, buf, used) != 0) {
		for (size_t i = 0; i < n_given; i++)
			node_forget(node_from_ino(given[i]), 1);
	}
	free(given);
	free(buf);
}

static void op_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t offset,
		       struct fuse_file_info *fi)
{
	(void)ino;
	read_directory(req, size, offset, fi, 0);
}

static void op_readdirplus(fuse_req_t req, fuse_ino_t ino, size_t size, off_t offset,
			   struct fuse_file_info *fi)
{
	(void)ino;
	read_directory(req, size, offset, fi, 1);
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
	int rc, fd, made;

	if (!node_in_model_tree(dir) || ops_name_is_policy(name)) {
		fuse_reply_err(req, EPERM);
		return;
	}
	/* a generated name is a job's, whoever makes it: a directory there
	 * would keep another user's prompt from ever running */
	if (file_role_generated(file_role_of(name))) {
		fuse_reply_err(req, EACCES);
		return;
	}
	fd = node_dir_fd(dir);
	if (fd < 0) {
		fuse_reply_err(req, -fd);
		return;
	}
	rc = mkdirat(fd, name, mode & ~job_policy_umask(dir)) < 0 ? -errno : 0;
	/* a new directory may have an old one's inode number: no policy,
	 * no spending (an account left by a directory removed in state_dir
	 * behind the daemon's back, or by an older daemon) */
	made = rc == 0 && fstatat(fd, name, &st, AT_SYMLINK_NOFOLLOW) == 0;
	if (made)
		policy_store_forget(st.st_dev, st.st_ino);
	if (rc == 0 && pfs.daemon_is_root)
		fchownat(fd, name, ctx->uid, ops_new_gid(fd, ctx->gid), AT_SYMLINK_NOFOLLOW);
	node_dir_fd_release(dir, fd);
	if (rc < 0) {
		fuse_reply_err(req, -rc);
		return;
	}
	if (made && job_journal_forget((uint64_t)st.st_ino) < 0)
		log_error(
			"%s: cannot record that a new directory starts a budget account of its own",
			name);
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
	/* its budget account too: a new directory may get its inode
	 * number, and must not inherit its spending. The directory is gone
	 * whatever the journal says, so rmdir succeeds; a failure is the
	 * journal's (which then refuses every submission) */
	rc = job_journal_forget((uint64_t)st.st_ino);
	if (rc < 0)
		log_error("%s: cannot record that its budget account is gone (%s); a crash "
			  "before the next checkpoint may bring its spending back",
			  name, strerror(-rc));
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
	enum file_role role = file_role_of(name);
	struct stat st;
	int fd, rc = 0;

	if (ops_name_is_policy(name)) {
		unlink_policy(req, dir, name);
		return;
	}
	if (usage_is_name(name) || metrics_file_is(dir, name)) {
		fuse_reply_err(req, EPERM);
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
	/* a generated file the kernel still knew, removed a moment ago with
	 * a sibling (rm -r removes x.meta, then x.response): already done */
	if (rc == ENOENT && file_role_generated(file_role_of(name)))
		rc = 0;
	else if (rc == 0) {
		role = S_ISREG(st.st_mode) ? file_role_of(name) : ROLE_PLAIN;
		if (role == ROLE_PROMPT)
			job_remove(dir, name);
		else if (role != ROLE_PLAIN)
			/* a live job goes with all its files (its .meta
			 * would say running forever); a finished one's
			 * other files stay, so rm -r removes them in any
			 * order */
			job_discard(dir, name, job_is_live(dir, name));
		if (unlinkat(fd, name, 0) < 0 && !(errno == ENOENT && role != ROLE_PLAIN))
			rc = errno;
	}
	node_dir_fd_release(dir, fd);
	if (rc) {
		fuse_reply_err(req, rc);
		return;
	}
	node_file_unlinked(dir, name);
	if (role != ROLE_PLAIN)
		ops_job_files_changed(dir, name);
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
	if (ops_name_is_policy(r->from_name) || ops_name_is_policy(r->to_name) ||
	    usage_is_name(r->from_name) || usage_is_name(r->to_name))
		return -EPERM;
	if (fstatat(from_fd, r->from_name, &r->from, AT_SYMLINK_NOFOLLOW) < 0)
		return -errno;
	if (fstatat(to_fd, r->to_name, &r->to, AT_SYMLINK_NOFOLLOW) == 0)
		r->to_exists = 1;
	else if (errno != ENOENT)
		return -errno;
	r->exchange = (flags & RENAME_EXCHANGE) != 0;
	from_role = file_role_of(r->from_name);
	to_role = file_role_of(r->to_name);
	/* nothing, not even a directory, takes a job's generated name */
	if (file_role_generated(to_role))
		return -EACCES;
	if (!S_ISREG(r->from.st_mode))
		return 0; /* workspaces move freely */
	if (file_role_generated(from_role))
		return -EPERM;
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
	uint64_t replaced = 0; /* the inode number of a directory the rename removed */
	char reason[512];
	int submit = 0, rc, fd = -1, from_fd = -1, to_fd = -1;

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
		if (rc == -EINVAL || rc == -EFBIG || rc == -EILSEQ || rc == -EDQUOT ||
		    rc == -EACCES) {
			/* refused: the reason goes where the job would have been */
			rc = job_submit(r.to_dir, newname, fd, ctx->uid);
			/* mv reads EINVAL as "a subdirectory of itself" */
			if (rc == -EINVAL)
				rc = -EBADMSG;
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
	if (!r.exchange && r.to_exists && S_ISDIR(r.to.st_mode) && r.to.st_ino != r.from.st_ino)
		replaced = (uint64_t)r.to.st_ino;
	rc = 0;
	if (submit)
		rc = job_submit(r.to_dir, newname, fd, ctx->uid);
out:
	/* a prompt moved away took its job's files, one moved in replaced
	 * them (or its refusal did) */
	if (S_ISREG(r.from.st_mode) && file_role_of(name) == ROLE_PROMPT)
		ops_job_files_changed(r.from_dir, name);
	if (submit)
		ops_job_files_changed(r.to_dir, newname);
	rc = audit_request_end(rc, fd);
	node_rename_release(&r);
	if (fd >= 0)
		close(fd);
	node_dir_fd_release(r.to_dir, to_fd);
	node_dir_fd_release(r.from_dir, from_fd);
	/* an empty directory replaced is removed, as by rmdir: its account
	 * goes (with no descriptor held while the journal gate is waited
	 * for) */
	if (replaced && job_journal_forget(replaced) < 0)
		log_error(
			"%s: cannot record that the directory it replaced has no budget account "
			"any more; a crash before the next checkpoint may bring its spending back",
			newname);
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
	.readdirplus = op_readdirplus,
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
