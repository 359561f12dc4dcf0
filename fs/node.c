/* The inode table: two hash tables under one lock, directories by
 * backing identity, files by (directory, name). */
#include "fs/node.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define TABLE_SIZE 16384

static pthread_mutex_t table_lock = PTHREAD_MUTEX_INITIALIZER;
static struct node *dir_table[TABLE_SIZE];
static struct node *file_table[TABLE_SIZE];

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

	if (n->kind == NODE_FILE) {
		if (n->name)
			table_unlink(file_table, file_hash(n->parent, n->name), n);
	} else {
		table_unlink(dir_table, dir_hash(n->dev, n->ino), n);
	}
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

/* Structure context of a new directory below PARENT. */
static void set_directory_context(struct node *n, struct node *parent, const char *name)
{
	n->cloud = parent->cloud;
	n->region = parent->region;
	n->model = parent->model;
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

static struct node *get_directory(struct node *parent, const char *name, const struct stat *st,
				  int kernel_ref)
{
	size_t bucket = dir_hash(st->st_dev, st->st_ino);
	struct node *n;
	int fd;

	pthread_mutex_lock(&table_lock);
	for (n = dir_table[bucket]; n; n = n->hash_next) {
		if (n->dev == st->st_dev && n->ino == st->st_ino) {
			add_reference(n, kernel_ref);
			pthread_mutex_unlock(&table_lock);
			return n;
		}
	}
	pthread_mutex_unlock(&table_lock);

	fd = openat(parent->fd, name, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return NULL;
	n = calloc(1, sizeof(*n));
	if (!n) {
		close(fd);
		return NULL;
	}
	n->fd = fd;
	n->dev = st->st_dev;
	n->ino = st->st_ino;
	set_directory_context(n, parent, name);

	pthread_mutex_lock(&table_lock);
	/* another thread may have made it meanwhile: keep theirs */
	for (struct node *other = dir_table[bucket]; other; other = other->hash_next) {
		if (other->dev == st->st_dev && other->ino == st->st_ino) {
			add_reference(other, kernel_ref);
			pthread_mutex_unlock(&table_lock);
			close(fd);
			free(n);
			return other;
		}
	}
	add_reference(n, kernel_ref);
	n->hash_next = dir_table[bucket];
	dir_table[bucket] = n;
	pthread_mutex_unlock(&table_lock);
	return n;
}

static struct node *find_file_locked(struct node *parent, const char *name, size_t bucket)
{
	for (struct node *n = file_table[bucket]; n; n = n->hash_next) {
		if (n->parent == parent && strcmp(n->name, name) == 0)
			return n;
	}
	return NULL;
}

static struct node *get_file(struct node *parent, const char *name, int kernel_ref)
{
	size_t bucket = file_hash(parent, name);
	struct node *n;

	pthread_mutex_lock(&table_lock);
	n = find_file_locked(parent, name, bucket);
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
	n->cloud = parent->cloud;
	n->region = parent->region;
	n->model = parent->model;
	add_reference(n, kernel_ref);
	n->hash_next = file_table[bucket];
	file_table[bucket] = n;
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
	n->refs--;
	node_release_locked(n);
	pthread_mutex_unlock(&table_lock);
}

void node_forget(struct node *n, uint64_t nlookup)
{
	pthread_mutex_lock(&table_lock);
	n->nlookup = nlookup > n->nlookup ? 0 : n->nlookup - nlookup;
	node_release_locked(n);
	pthread_mutex_unlock(&table_lock);
}

void node_file_renamed(struct node *old_parent, const char *old_name, struct node *new_parent,
		       const char *new_name)
{
	struct node *moved, *replaced = NULL;
	char *copy = NULL;

	if (new_name) {
		copy = strdup(new_name);
		if (!copy)
			new_name = NULL; /* treat as gone: lookups will find it anew */
	}
	pthread_mutex_lock(&table_lock);
	moved = find_file_locked(old_parent, old_name, file_hash(old_parent, old_name));
	if (new_name) {
		replaced = find_file_locked(new_parent, new_name, file_hash(new_parent, new_name));
		if (replaced && replaced != moved) {
			/* the entry it replaced is gone from the tree */
			table_unlink(file_table, file_hash(new_parent, new_name), replaced);
			free(replaced->name);
			replaced->name = NULL;
		}
	}
	if (moved) {
		table_unlink(file_table, file_hash(old_parent, old_name), moved);
		free(moved->name);
		moved->name = NULL;
		if (new_name) {
			moved->name = copy;
			copy = NULL;
			if (moved->parent != new_parent) {
				new_parent->refs++;
				old_parent->refs--;
				moved->parent = new_parent;
				moved->model = new_parent->model;
			}
			moved->hash_next = file_table[file_hash(new_parent, new_name)];
			file_table[file_hash(new_parent, new_name)] = moved;
		}
	}
	pthread_mutex_unlock(&table_lock);
	free(copy);
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

int node_open_file(struct node *n, int flags)
{
	struct node *dir;
	char *name;
	int rc;

	rc = node_file_location(n, &dir, &name);
	if (rc < 0)
		return rc;
	rc = openat(dir->fd, name, flags | O_NOFOLLOW | O_CLOEXEC);
	if (rc < 0)
		rc = -errno;
	free(name);
	node_put(dir);
	return rc;
}

void node_fill_attr(const struct node *n, const char *name, struct stat *st)
{
	enum file_role role = name ? file_role_of(name) : ROLE_PLAIN;

	st->st_ino = node_ino(n);
	if (n->kind == NODE_FILE && n->parent && node_in_model_tree(n->parent) &&
	    file_role_generated(role))
		st->st_mode &= ~(mode_t)0222;
}
