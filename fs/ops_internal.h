/* What the operation files share. */
#ifndef PROMPTFS_OPS_INTERNAL_H
#define PROMPTFS_OPS_INTERNAL_H

#include <sys/stat.h>

#include "fs/job.h"
#include "fs/node.h"

enum handle_kind {
	HANDLE_PLAIN,	 /* an ordinary file, or a finished job's .meta/.error */
	HANDLE_PROMPT,	 /* NAME.prompt open for writing */
	HANDLE_RESPONSE, /* NAME.response */
	HANDLE_SNAPSHOT, /* a live job's .meta, as it was at open */
	HANDLE_POLICY,	 /* .policy open for writing, by an admin */
};

struct handle {
	struct handle *prev_open, *next_open; /* every open handle, for unmount */
	enum handle_kind kind;
	pid_t opener; /* the thread that opened it */
	int fd;
	struct node *node; /* referenced */
	/* Atomic: a process that inherited the descriptor may write while
	 * the opener's close() reads and clears them on another thread. */
	_Atomic int dirty;	 /* written since the last submission */
	_Atomic int write_error; /* errno of a write that failed since: never submitted */
	struct prompt_caps caps; /* HANDLE_PROMPT: how large it may grow here */
	int nonblock;
	struct response_reader reader;
	char *snapshot;
	size_t snapshot_len;
	char *policy_text; /* HANDLE_POLICY: what was written, until close */
	size_t policy_len;
	int policy_emptied; /* opened with O_TRUNC (or truncated), nothing written */
};

int ops_name_visible(const struct node *dir, const char *name);

/* ops_policy.c: `.policy` through the mount */
int ops_name_is_policy(const char *name);
int ops_policy_backing(struct node *dir);
int ops_policy_open(struct handle *h, int truncate);
int ops_policy_write(struct handle *h, const char *buf, size_t size, off_t off);
int ops_policy_truncate(struct handle *h, off_t size);
int ops_policy_close(struct handle *h, struct node *dir);
void ops_policy_release(struct handle *h);

/* ops_xattr.c: policies as extended attributes */
int ops_is_policy_admin(fuse_req_t req);
void ops_getxattr(fuse_req_t req, fuse_ino_t ino, const char *name, size_t size);
void ops_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size);
void ops_setxattr(fuse_req_t req, fuse_ino_t ino, const char *name, const char *value, size_t size,
		  int flags);
void ops_removexattr(fuse_req_t req, fuse_ino_t ino, const char *name);
void ops_release_open_files(void);
void ops_release_open_dirs(void);
/* Stats N where it is now, with how long the kernel may keep the
 * attributes. 0 or -errno. */
int ops_stat_node(struct node *n, struct stat *st, double *attr_timeout);
int ops_make_entry(struct node *dir, const char *name, struct fuse_entry_param *e);
/* The group of what a creator of group GID makes in the directory whose
 * backing descriptor is DIR_FD: that directory's own group when it is
 * set-group-ID, as on a disk, else GID. */
gid_t ops_new_gid(int dir_fd, gid_t gid);
/* The generated files of the job of NAME (the prompt's or any of its
 * files' name) in DIR were replaced or removed by an operation: the
 * kernel drops what it holds of their attributes. Called after the
 * change. */
void ops_job_files_changed(struct node *dir, const char *name);

void ops_create(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
		struct fuse_file_info *fi);
void ops_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi);
void ops_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi);
void ops_write(fuse_req_t req, fuse_ino_t ino, const char *buf, size_t size, off_t off,
	       struct fuse_file_info *fi);
void ops_flush(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi);
void ops_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi);
void ops_fsync(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi);
void ops_poll(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi,
	      struct fuse_pollhandle *ph);

#endif
