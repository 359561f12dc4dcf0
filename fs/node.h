/* The inode table of the low-level API.
 *
 * Directories are identified by their backing directory (device and
 * inode number) and hold an O_PATH descriptor to it, so they survive
 * renames. Files are identified by their directory and name, and are
 * opened by name each time: generated files are replaced by rename(2)
 * when they are rewritten, and a name-keyed node follows that for free.
 * The FUSE inode number is the node's address. */
#ifndef PROMPTFS_NODE_H
#define PROMPTFS_NODE_H

#include <stdint.h>
#include <sys/stat.h>
#include <sys/types.h>

#include "fs/names.h"
#include "fs/promptfs.h"

enum node_kind {
	NODE_ROOT,
	NODE_CLOUD,
	NODE_REGION,
	NODE_MODEL,
	NODE_WORKSPACE, /* a directory a user made under a model */
	NODE_FILE,
};

struct node {
	enum node_kind kind;
	uint64_t nlookup; /* kernel references; under the table lock */
	unsigned refs;	  /* our own references; under the table lock */
	int fd;		  /* directories: O_PATH; files: -1 */
	dev_t dev;
	ino_t ino;
	struct node *parent; /* files: the directory (referenced) */
	char *name;	     /* files: name in parent; NULL once unlinked */
	const struct cloud *cloud;
	const struct region *region;
	const struct model *model; /* model directories and below */
	struct node *hash_next;
};

int node_table_init(int root_fd);
void node_table_destroy(void);

static inline fuse_ino_t node_ino(const struct node *n)
{
	return n->kind == NODE_ROOT ? FUSE_ROOT_ID : (fuse_ino_t)(uintptr_t)n;
}

struct node *node_from_ino(fuse_ino_t ino);

/* Finds or makes the node for NAME in directory PARENT, whose backing
 * entry has status ST. Adds one kernel reference when KERNEL_REF, else
 * one of ours (release with node_put). NULL on allocation failure. */
struct node *node_get_child(struct node *parent, const char *name, const struct stat *st,
			    int kernel_ref);

void node_hold(struct node *n);
void node_put(struct node *n);
void node_forget(struct node *n, uint64_t nlookup);

/* A file node's name moved (rename) or went away (NEW_NAME NULL). */
void node_file_renamed(struct node *old_parent, const char *old_name, struct node *new_parent,
		       const char *new_name);

/* Opens a file node's backing file with FLAGS. fd or -errno. */
int node_open_file(struct node *n, int flags);

/* Copies a file node's directory and name under the table lock, so a
 * concurrent rename cannot free them under the caller. Caller puts the
 * directory and frees the name. -ENOENT if the file was unlinked. */
int node_file_location(struct node *n, struct node **dir, char **name);

/* Whether files in directory DIR are jobs and scratch (model subtree). */
static inline int node_in_model_tree(const struct node *dir)
{
	return dir->kind == NODE_MODEL || dir->kind == NODE_WORKSPACE;
}

/* Adjusts a backing stat for the kernel: our inode number, generated
 * files read-only. */
void node_fill_attr(const struct node *n, const char *name, struct stat *st);

#endif
