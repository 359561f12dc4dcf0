/* The inode table: two hash tables under one lock, directories by
 * backing identity, files by (directory, name), and a list of the nodes
 * whose entries were removed while someone still held them. */
#include "fs/node.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define TABLE_SIZE 16384

static pthread_mutex_t table_lock = PTHREAD_MUTEX_INITIALIZER;
static struct node *dir_table[TABLE_SIZE];
static struct node *file_table[TABLE_SIZE];
/* nodes without a name: out of both tables, freed with their last
 * reference, or at unmount if the kernel never let go of them */
static struct node *removed_nodes;

static size_t dir_hash(dev_t dev, ino_t ino)
{
	uint64_t h = (uint64_t)ino * 0x9e3779b97f4a7c15ull ^ (uint64_t)dev;

	return (size_t)(h >> 17) % TABLE_SIZE;
}

static size_t file_hash(const struct node *parent, const char *name)
{
	uint64_t h = (uint64_t)(uintptr_t)parent * 0x9e3779b97f4a7c15ull;

	for (const unsigned char *p = (const unsigned char *)name; *p; p++)
		h = (h ^ *p) * 0x100000001b3ull;
	return (size_t)(h >> 7) % TABLE_SIZE;
}

static void table_unlink(struct node **table, size_t bucket, struct node *n)
{
	struct node **pp = &table[bucket];

	while (*pp && *pp != n)
		pp = &(*pp)->hash_next;
	if (*pp)
		*pp = n->hash_next;
	n->hash_next = NULL;
}

/* Drops a node no one references. Called with the lock held; returns the
 * parent whose reference the caller must drop next (iteratively, so a
 * deep tree cannot overflow the stack). */
static struct node *node_free_locked(struct node *n)
{
	struct node *parent = n->parent;

	if (!n->name)
		table_unlink(&removed_nodes, 0, n);
	else if (n->kind == NODE_FILE)
		table_unlink(file_table, file_hash(n->parent, n->name), n);
	else
		table_unlink(dir_table, dir_hash(n->dev, n->ino), n);
	if (n->fd >= 0)
		close(n->fd);
	free(n->name);
	free(n);
	return parent;
}

static void node_release_locked(struct node *n)
{
	while (n && n->kind != NODE_ROOT && n->nlookup == 0 && n->refs == 0) {
		struct node *parent = node_free_locked(n);

		if (!parent)
			return;
		parent->refs--;
		n = parent;
	}
}

static void node_put_locked(struct node *n)
{
	n->refs--;
	node_release_locked(n);
}

int node_table_init(int root_fd)
{
	struct node *root;
	struct stat st;
	int fd;

	if (fstat(root_fd, &st) < 0)
		return -errno;
	fd = openat(root_fd, ".", O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	root = calloc(1, sizeof(*root));
	if (!root) {
		close(fd);
		return -ENOMEM;
	}
	root->kind = NODE_ROOT;
	root->fd = fd;
	root->dev = st.st_dev;
	root->ino = st.st_ino;
	root->nlookup = 1;
	dir_table[dir_hash(root->dev, root->ino)] = root;
	pfs.root = root;
	return 0;
}

void node_table_destroy(void)
{
	pthread_mutex_lock(&table_lock);
	for (size_t i = 0; i < TABLE_SIZE; i++) {
		while (file_table[i]) {
			struct node *n = file_table[i];

			file_table[i] = n->hash_next;
			free(n->name);
			free(n);
		}
	}
	for (size_t i = 0; i < TABLE_SIZE; i++) {
		while (dir_table[i]) {
			struct node *n = dir_table[i];

			dir_table[i] = n->hash_next;
			if (n->fd >= 0)
				close(n->fd);
			free(n->name);
			free(n);
		}
	}
	while (removed_nodes) {
		struct node *n = removed_nodes;

		removed_nodes = n->hash_next;
		if (n->fd >= 0)
			close(n->fd);
		free(n);
	}
	pfs.root = NULL;
	pthread_mutex_unlock(&table_lock);
}

struct node *node_from_ino(fuse_ino_t ino)
{
	if (ino == FUSE_ROOT_ID)
		return pfs.root;
	return (struct node *)(uintptr_t)ino;
}

static void add_reference(struct node *n, int kernel_ref)
{
	if (kernel_ref)
		n->nlookup++;
	else
		n->refs++;
}

/* ---- directories ---- */

static struct node *find_directory_locked(dev_t dev, ino_t ino)
{
	for (struct node *n = dir_table[dir_hash(dev, ino)]; n; n = n->hash_next) {
		if (n->dev == dev && n->ino == ino)
			return n;
	}
	return NULL;
}

static void insert_directory_locked(struct node *n)
{
	size_t bucket = dir_hash(n->dev, n->ino);

	n->hash_next = dir_table[bucket];
	dir_table[bucket] = n;
}

/* N's entry is gone from the tree: lookups must not find N again. It
 * keeps its parent until it is freed. */
static void remove_locked(struct node *n)
{
	if (n->kind == NODE_FILE)
		table_unlink(file_table, file_hash(n->parent, n->name), n);
	else
		table_unlink(dir_table, dir_hash(n->dev, n->ino), n);
	free(n->name);
	n->name = NULL;
	n->hash_next = removed_nodes;
	removed_nodes = n;
}

/* The kind and config entry of a new directory named NAME below PARENT.
 * Structure is matched by name against the config; a name it does not
 * know gives a structure node without one (hidden). */
static void set_directory_context(struct node *n, const struct node *parent, const char *name)
{
	switch (parent->kind) {
	case NODE_ROOT:
		n->kind = NODE_CLOUD;
		for (size_t i = 0; i < pfs.config->n_clouds; i++) {
			if (strcmp(pfs.config->clouds[i].name, name) == 0)
				n->cloud = &pfs.config->clouds[i];
		}
		break;
	case NODE_CLOUD:
		n->kind = NODE_REGION;
		for (size_t i = 0; parent->cloud && i < parent->cloud->n_regions; i++) {
			if (strcmp(parent->cloud->regions[i].name, name) == 0)
				n->region = &parent->cloud->regions[i];
		}
		break;
	case NODE_REGION:
		n->kind = NODE_MODEL;
		for (size_t i = 0; parent->region && i < parent->region->n_models; i++) {
			if (strcmp(parent->region->models[i].name, name) == 0)
				n->model = &parent->region->models[i];
		}
		break;
	default:
		n->kind = NODE_WORKSPACE;
		break;
	}
}

/* Whether directory node N still is the directory whose entry has status
 * ST. Its O_PATH descriptor keeps the inode allocated, so on ext4, xfs or
 * tmpfs its number cannot be handed out again while the node lives; but
 * a node outlives its directory (rmdir while the kernel holds it), and a
 * backing filesystem without stable inode numbers could give a new
 * directory the same identity. Serving that one with the old node would
 * give it a dead descriptor and a wrong place in the tree. */
static int directory_is_current(const struct node *n, const struct stat *st)
{
	struct stat now;

	if (fstat(n->fd, &now) < 0)
		return 0;
	return now.st_nlink > 0 && now.st_dev == st->st_dev && now.st_ino == st->st_ino;
}

/* The node of the directory with ST's identity, with a reference added,
 * if there is one and it is current; a stale one is retired. */
static struct node *find_current_directory(const struct stat *st, int kernel_ref)
{
	struct node *n;
	int current;

	pthread_mutex_lock(&table_lock);
	n = find_directory_locked(st->st_dev, st->st_ino);
	if (n)
		n->refs++; /* kept while its descriptor is checked, unlocked */
	pthread_mutex_unlock(&table_lock);
	if (!n)
		return NULL;
	current = n->kind == NODE_ROOT || directory_is_current(n, st);

	pthread_mutex_lock(&table_lock);
	if (current)
		add_reference(n, kernel_ref);
	else if (n->name)
		remove_locked(n); /* unless another thread did */
	node_put_locked(n);
	pthread_mutex_unlock(&table_lock);
	return current ? n : NULL;
}

static struct node *get_directory(struct node *parent, const char *name, const struct stat *st,
				  int kernel_ref)
{
	struct node *n, *other;
	char *copy;
	int fd;

	n = find_current_directory(st, kernel_ref);
	if (n)
		return n;

	fd = openat(parent->fd, name, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return NULL;
	n = calloc(1, sizeof(*n));
	copy = strdup(name);
	if (!n || !copy) {
		free(copy);
		free(n);
		close(fd);
		return NULL;
	}
	n->fd = fd;
	n->dev = st->st_dev;
	n->ino = st->st_ino;
	n->name = copy;
	set_directory_context(n, parent, name);

	pthread_mutex_lock(&table_lock);
	/* another thread may have made it meanwhile: keep theirs */
	other = find_directory_locked(st->st_dev, st->st_ino);
	if (other) {
		add_reference(other, kernel_ref);
		pthread_mutex_unlock(&table_lock);
		close(fd);
		free(copy);
		free(n);
		return other;
	}
	n->parent = parent;
	parent->refs++;
	add_reference(n, kernel_ref);
	insert_directory_locked(n);
	pthread_mutex_unlock(&table_lock);
	return n;
}

/* ---- files ---- */

static struct node *find_file_locked(struct node *parent, const char *name)
{
	for (struct node *n = file_table[file_hash(parent, name)]; n; n = n->hash_next) {
		if (n->parent == parent && strcmp(n->name, name) == 0)
			return n;
	}
	return NULL;
}

static void insert_file_locked(struct node *n)
{
	size_t bucket = file_hash(n->parent, n->name);

	n->hash_next = file_table[bucket];
	file_table[bucket] = n;
}

static void unhash_file_locked(struct node *n)
{
	table_unlink(file_table, file_hash(n->parent, n->name), n);
}

static struct node *get_file(struct node *parent, const char *name, int kernel_ref)
{
	struct node *n;

	pthread_mutex_lock(&table_lock);
	n = find_file_locked(parent, name);
	if (n) {
		add_reference(n, kernel_ref);
		pthread_mutex_unlock(&table_lock);
		return n;
	}
	n = calloc(1, sizeof(*n));
	if (n)
		n->name = strdup(name);
	if (!n || !n->name) {
		pthread_mutex_unlock(&table_lock);
		free(n);
		return NULL;
	}
	n->kind = NODE_FILE;
	n->fd = -1;
	n->parent = parent;
	parent->refs++;
	add_reference(n, kernel_ref);
	insert_file_locked(n);
	pthread_mutex_unlock(&table_lock);
	return n;
}

struct node *node_get_child(struct node *parent, const char *name, const struct stat *st,
			    int kernel_ref)
{
	if (S_ISDIR(st->st_mode))
		return get_directory(parent, name, st, kernel_ref);
	return get_file(parent, name, kernel_ref);
}

void node_hold(struct node *n)
{
	pthread_mutex_lock(&table_lock);
	n->refs++;
	pthread_mutex_unlock(&table_lock);
}

void node_put(struct node *n)
{
	if (!n)
		return;
	pthread_mutex_lock(&table_lock);
	node_put_locked(n);
	pthread_mutex_unlock(&table_lock);
}

void node_forget(struct node *n, uint64_t nlookup)
{
	pthread_mutex_lock(&table_lock);
	n->nlookup = nlookup > n->nlookup ? 0 : n->nlookup - nlookup;
	node_release_locked(n);
	pthread_mutex_unlock(&table_lock);
}

/* ---- renames and removals ---- */

int node_rename_prepare(struct node_rename *r)
{
	r->to_copy = strdup(r->to_name);
	r->from_copy = r->exchange ? strdup(r->from_name) : NULL;
	if (!r->to_copy || (r->exchange && !r->from_copy)) {
		node_rename_release(r);
		return -ENOMEM;
	}
	return 0;
}

void node_rename_release(struct node_rename *r)
{
	free(r->to_copy);
	free(r->from_copy);
	r->to_copy = NULL;
	r->from_copy = NULL;
}

/* The node of the entry NAME in DIR with status ST, if the table has
 * one: directories by identity, files by name. */
static struct node *entry_node_locked(struct node *dir, const char *name, const struct stat *st)
{
	if (S_ISDIR(st->st_mode)) {
		struct node *n = find_directory_locked(st->st_dev, st->st_ino);

		return n && n->kind != NODE_ROOT ? n : NULL;
	}
	return find_file_locked(dir, name);
}

/* Moves N, taken out of its hash chain, to DIR under NAME (which it
 * takes), and hashes it again. Its reference on its directory moves
 * too; returns the old directory, whose reference the caller drops once
 * every move is done, since dropping it may free it. */
static struct node *move_locked(struct node *n, struct node *dir, char *name)
{
	struct node *old = n->parent;

	free(n->name);
	n->name = name;
	dir->refs++;
	n->parent = dir;
	if (n->kind == NODE_FILE)
		insert_file_locked(n);
	return old;
}

void node_renamed(struct node_rename *r)
{
	struct node *moved, *other = NULL, *old_dirs[2] = { NULL, NULL };

	/* a rename between two names of one file does nothing */
	if (r->to_exists && r->to.st_dev == r->from.st_dev && r->to.st_ino == r->from.st_ino)
		return;
	pthread_mutex_lock(&table_lock);
	moved = entry_node_locked(r->from_dir, r->from_name, &r->from);
	if (r->to_exists)
		other = entry_node_locked(r->to_dir, r->to_name, &r->to);
	if (other && !r->exchange) {
		remove_locked(other); /* replaced: gone from the tree */
		other = NULL;
	}
	/* out of the file table before either key changes: in an exchange
	 * each takes the other's */
	if (moved && moved->kind == NODE_FILE)
		unhash_file_locked(moved);
	if (other && other->kind == NODE_FILE)
		unhash_file_locked(other);
	if (moved) {
		old_dirs[0] = move_locked(moved, r->to_dir, r->to_copy);
		r->to_copy = NULL;
	}
	if (other) {
		old_dirs[1] = move_locked(other, r->from_dir, r->from_copy);
		r->from_copy = NULL;
	}
	for (size_t i = 0; i < 2; i++) {
		if (old_dirs[i])
			node_put_locked(old_dirs[i]);
	}
	pthread_mutex_unlock(&table_lock);
}

void node_file_unlinked(struct node *dir, const char *name)
{
	struct node *n;

	pthread_mutex_lock(&table_lock);
	n = find_file_locked(dir, name);
	if (n)
		remove_locked(n);
	pthread_mutex_unlock(&table_lock);
}

void node_directory_removed(const struct stat *st)
{
	struct node *n;

	pthread_mutex_lock(&table_lock);
	n = find_directory_locked(st->st_dev, st->st_ino);
	if (n && n->kind != NODE_ROOT)
		remove_locked(n);
	pthread_mutex_unlock(&table_lock);
}

int node_file_location(struct node *n, struct node **dir, char **name)
{
	int rc = 0;

	pthread_mutex_lock(&table_lock);
	if (!n->name) {
		rc = -ENOENT;
		goto out;
	}
	*name = strdup(n->name);
	if (!*name) {
		rc = -ENOMEM;
		goto out;
	}
	*dir = n->parent;
	n->parent->refs++;
out:
	pthread_mutex_unlock(&table_lock);
	return rc;
}

/* ---- walks up the tree ---- */

const struct model *node_deployment(struct node *dir)
{
	const struct model *model = NULL;
	struct node *n;

	pthread_mutex_lock(&table_lock);
	n = dir;
	while (n && (n->kind == NODE_WORKSPACE || n->kind == NODE_FILE))
		n = n->parent;
	if (n && n->kind == NODE_MODEL)
		model = n->model;
	pthread_mutex_unlock(&table_lock);
	return model;
}

size_t node_ancestry(struct node *dir, struct node **out, size_t max)
{
	size_t len = 0, i;

	pthread_mutex_lock(&table_lock);
	for (struct node *n = dir; n; n = n->parent)
		len++;
	if (len <= max) {
		i = len;
		for (struct node *n = dir; n; n = n->parent) {
			n->refs++;
			out[--i] = n;
		}
	}
	pthread_mutex_unlock(&table_lock);
	return len;
}

void node_put_all(struct node **nodes, size_t n)
{
	pthread_mutex_lock(&table_lock);
	/* deepest first: each one freed still finds its parent referenced */
	while (n > 0)
		node_put_locked(nodes[--n]);
	pthread_mutex_unlock(&table_lock);
}

int node_path(struct node *dir, char *buf, size_t size)
{
	size_t len = 0, pos;
	int rc;

	pthread_mutex_lock(&table_lock);
	for (struct node *n = dir; n->parent; n = n->parent) {
		if (!n->name) {
			rc = -ENOENT;
			goto out;
		}
		len += 1 + strlen(n->name);
	}
	if (len == 0)
		len = 1; /* the root: "/" */
	if (len >= size || len > INT_MAX) {
		rc = -ENAMETOOLONG;
		goto out;
	}
	buf[0] = '/';
	buf[len] = '\0';
	pos = len;
	for (struct node *n = dir; n->parent; n = n->parent) {
		size_t l = strlen(n->name);

		pos -= l;
		memcpy(buf + pos, n->name, l);
		buf[--pos] = '/';
	}
	rc = (int)len;
out:
	pthread_mutex_unlock(&table_lock);
	return rc;
}

void node_fill_attr(const struct node *n, const struct node *dir, const char *name, struct stat *st)
{
	enum file_role role = name ? file_role_of(name) : ROLE_PLAIN;

	st->st_ino = node_ino(n);
	if (n->kind == NODE_FILE && dir && node_in_model_tree(dir) && file_role_generated(role))
		st->st_mode &= ~(mode_t)0222;
}
