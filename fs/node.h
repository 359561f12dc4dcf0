/* The inode table of the low-level API.
 *
 * Directories are identified by their backing directory (device and
 * inode number) and reach it through an O_PATH descriptor, so their I/O
 * survives renames. Every node but the root knows where it is: its
 * directory (a referenced parent) and its name there, kept right by
 * renames under the table lock. A directory's deployment and, later, its
 * policy chain are therefore found by walking up, and a workspace moved
 * to another model runs its next jobs there.
 *
 * The descriptors the table holds are bounded, whatever the tree's size.
 * The root and the structure directories (clouds, regions, models: few,
 * fixed by the config) keep theirs once opened. A workspace's sits in a
 * cache of at most node_fd_cache_limit() descriptors, least recently
 * used out first, and is opened again on demand from its parent's
 * (walking up as far as needed), checked to still be the node's
 * (dev, ino). Nobody reads `fd` directly: a caller borrows it with
 * node_dir_fd() and gives it back with node_dir_fd_release(); a borrowed
 * descriptor is never closed.
 *
 * Files are identified by their directory and name, and are opened by
 * name each time: generated files are replaced by rename(2) when they
 * are rewritten, and a name-keyed node follows that for free. The FUSE
 * inode number is the node's address. */
#ifndef PROMPTFS_NODE_H
#define PROMPTFS_NODE_H

#include <stddef.h>
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
	NODE_ANY,	/* any/, the routed view */
	NODE_GEO,	/* any/<geo> */
	NODE_FAMILY,	/* any/<geo>/<family>: prompts go to an eligible deployment */
	NODE_WORKSPACE, /* a directory a user made under a model or a family */
	NODE_FILE,
};

struct node {
	enum node_kind kind;
	uint64_t nlookup; /* kernel references; under the table lock */
	unsigned refs;	  /* our own references; under the table lock */
	/* Directories: the cached O_PATH descriptor or -1, with the number
	 * of borrowers and a place in the cache's LRU list (workspaces);
	 * under the table lock. Files: -1. */
	int fd;
	unsigned fd_users;
	struct node *lru_prev, *lru_next;
	dev_t dev; /* directories: the backing identity, their key */
	ino_t ino;
	/* Where the node is, under the table lock: its directory
	 * (referenced; NULL for the root) and its name there. A NULL name
	 * on another node means its entry was removed: lookups no longer
	 * find it, and it lives on until the kernel and we let go. */
	struct node *parent;
	char *name;
	/* Structure directories: what the config says of them, each set
	 * only on its own kind; NULL for one no longer configured (it is
	 * hidden). Structure never moves (renaming it is EPERM), so these
	 * never change. Workspaces and files have none: their deployment
	 * is their model ancestor's, see node_deployment. */
	const struct cloud *cloud;   /* NODE_CLOUD */
	const struct region *region; /* NODE_REGION */
	const struct model *model;   /* NODE_MODEL */
	const char *geo;	     /* NODE_GEO, NODE_FAMILY: a tag of the config's */
	const char *family;	     /* NODE_FAMILY: a family of the config's */
	/* Set (atomically) before a reply hands the kernel attributes it
	 * may keep; cleared by node_attrs_changed, which then tells the
	 * kernel to drop them. So a change costs a notification only when
	 * the kernel may hold attributes from before it. */
	int attrs_out;
	uint64_t hash; /* of its key in the inode table */
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
 * one of ours (release with node_put). A directory node found by ST's
 * identity whose directory was removed meanwhile (inode numbers are
 * reused) is retired and a fresh one made; a new directory node has no
 * descriptor yet (node_dir_fd opens it). NULL on allocation failure, or
 * when a found node's descriptor is needed to check it and none can be
 * had. */
struct node *node_get_child(struct node *parent, const char *name, const struct stat *st,
			    int kernel_ref);
/* The same, with the reason of a failure in *ERR (-ENOMEM, -EMFILE ...). */
struct node *node_get_child_err(struct node *parent, const char *name, const struct stat *st,
				int kernel_ref, int *err);

/* Borrows directory DIR's O_PATH descriptor, opening it again if the
 * cache let it go: by name from its parent's, checked to be DIR's
 * (dev, ino). The caller holds a reference on DIR while it uses the
 * descriptor, and gives it back with node_dir_fd_release. -ENOENT when
 * DIR (or an ancestor) was removed and its descriptor is gone, -ESTALE
 * when its place holds another directory, -EMFILE/-ENFILE when no
 * descriptor can be had (logged, rate-limited), -ENOMEM. */
int node_dir_fd(struct node *dir);
void node_dir_fd_release(struct node *dir, int fd);

/* Logs that a request was refused for want of a descriptor (ERR is
 * EMFILE or ENFILE; anything else is ignored): once a minute at most,
 * with the count of refusals since. */
void node_fd_shortage(int err);

/* The most workspace descriptors the cache keeps (borrowed ones may
 * exceed it for as long as they are borrowed). Set at node_table_init
 * from RLIMIT_NOFILE (at most 1024); node_fd_cache_set_limit is for
 * tests. node_fd_cache_count is the number cached now. */
size_t node_fd_cache_limit(void);
void node_fd_cache_set_limit(size_t limit);
size_t node_fd_cache_count(void);

void node_hold(struct node *n);
void node_put(struct node *n);
void node_forget(struct node *n, uint64_t nlookup);

/* One rename(2) below a model, for the node table. The caller fills the
 * first fields from status taken before the rename (the kernel holds
 * both directories locked, so they stay true), calls node_rename_prepare
 * before renaming, node_renamed once the rename succeeded, and
 * node_rename_release in every case. */
struct node_rename {
	struct node *from_dir;
	const char *from_name;
	struct stat from; /* the entry that moves */
	struct node *to_dir;
	const char *to_name;
	struct stat to; /* the entry at TO_NAME, when TO_EXISTS */
	int to_exists;
	int exchange; /* RENAME_EXCHANGE: TO moves to FROM's place */
	/* copies of the names the nodes will carry, made by
	 * node_rename_prepare so that nothing can fail after the rename */
	char *to_copy;
	char *from_copy;
};

/* 0, or -ENOMEM with nothing to rename. */
int node_rename_prepare(struct node_rename *r);
/* Moves the nodes of a done rename: the moved entry (file or directory)
 * to its new directory and name, its reference going from the old
 * directory to the new one; the entry it replaced is removed, or with
 * an exchange moved the other way. */
void node_renamed(struct node_rename *r);
/* Frees the copies node_renamed did not take. */
void node_rename_release(struct node_rename *r);

/* The node of file NAME in DIR, with a reference of ours (node_put), or
 * NULL when the table has none. */
struct node *node_find_file(struct node *dir, const char *name);

/* What the kernel caches of N's attributes (SPEC 5.3: a .response's
 * size grows behind its back). node_attrs_given: a reply is about to
 * give N's attributes with a timeout; call it before reading them.
 * node_attrs_changed: they changed; if the kernel may hold older ones,
 * it is told to drop them (no request, no lock the kernel could be
 * waiting on: safe inside any operation and under jobs_lock). */
void node_attrs_given(struct node *n);
void node_attrs_changed(struct node *n);

/* A file NAME in DIR was unlinked: its node, if any, has no name from
 * now on. */
void node_file_unlinked(struct node *dir, const char *name);

/* A directory whose backing status was ST was removed (rmdir): its node,
 * if any, leaves the table and has no name from now on. */
void node_directory_removed(const struct stat *st);

/* Copies a file node's directory and name under the table lock, so a
 * concurrent rename cannot free them under the caller. Caller puts the
 * directory and frees the name. -ENOENT if the file was unlinked. */
int node_file_location(struct node *n, struct node **dir, char **name);

/* The deployment DIR's jobs run on: the model of its model ancestor (or
 * its own), found by one walk up under the table lock, since a rename
 * may move DIR at any time. NULL outside a model subtree and under a
 * model no longer configured. The model belongs to the config, which
 * outlives every node. */
const struct model *node_deployment(struct node *dir);

/* The chain of directories from the root down to DIR (included), for
 * what composes from the root down (policies). Returns the chain's
 * length N. When N <= MAX, OUT[0] is the root and OUT[N-1] is DIR, each
 * with one reference of ours taken under one hold of the table lock (a
 * consistent snapshot even while renames go on): release them with
 * node_put_all. When N > MAX, nothing is stored or referenced; call
 * again with room for N. */
size_t node_ancestry(struct node *dir, struct node **out, size_t max);

/* The directory node at PATH from the mount root ("/a/b"), with one
 * reference of ours, found by looking each name up in state_dir; NULL
 * when a name is missing or no directory (replay finds jobs so). */
struct node *node_at_path(const char *path);

/* Drops one reference of each of the N nodes in NODES. */
void node_put_all(struct node **nodes, size_t n);

/* DIR's path from the mount root, e.g. "/openai/us/gpt-4o/ws" ("/" for
 * the root), for messages that name a directory. Its length, or
 * -ENAMETOOLONG when it does not fit in SIZE with its terminating NUL,
 * or -ENOENT when DIR or one of its ancestors was removed. */
int node_path(struct node *dir, char *buf, size_t size);

/* Whether files in directory DIR are jobs and scratch (the subtree of a
 * model, or of a family under any/). */
static inline int node_in_model_tree(const struct node *dir)
{
	return dir->kind == NODE_MODEL || dir->kind == NODE_FAMILY || dir->kind == NODE_WORKSPACE;
}

/* Where DIR's prompts go: a model directory's deployment (*MODEL), or a
 * family of any/ (*GEO and *FAMILY), found by one walk up under the
 * table lock. 0, or -ENOENT outside both (and under structure no longer
 * configured). */
int node_route(struct node *dir, const struct model **model, const char **geo, const char **family);

/* Adjusts a backing stat for the kernel: our inode number, generated
 * files read-only. A file's DIR and NAME are where the caller found it
 * (a file's own parent link may change under a rename); NULL for a
 * directory. */
void node_fill_attr(const struct node *n, const struct node *dir, const char *name,
		    struct stat *st);

#endif
