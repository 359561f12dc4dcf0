/* The daemon's shared state: one mount, one instance. */
#ifndef PROMPTFS_PROMPTFS_H
#define PROMPTFS_PROMPTFS_H

#define FUSE_USE_VERSION 312
#include <fuse_lowlevel.h>
#include <sys/types.h>

#include "backends/engine.h"
#include "mountopts/config.h"
#include "mountopts/options.h"

#define PROMPTFS_VERSION "0.1.0"

struct node;

struct promptfs {
	const struct mount_options *opts;
	const struct config *config;
	struct engine *engine;
	struct fuse_session *session;
	int state_fd;	/* state_dir */
	int tree_fd;	/* state_dir/tree: the files users see */
	int staging_fd; /* state_dir/staging: files being made durable */
	int lock_fd;	/* flock: one daemon per state_dir */
	struct node *root;
	int daemon_is_root; /* may chown files to their creators */
};

extern struct promptfs pfs;

#endif
