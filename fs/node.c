/* The inode table: two hash tables under one lock, directories by
 * backing identity, files by (directory, name), and a list of the nodes
 * whose entries were removed while someone still held them; and the
 * cache of workspace descriptors, an LRU list under the same lock. */
#include "fs/node.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "fs/log.h"

#define TABLE_FIRST_SIZE 4096
#define FD_CACHE_MAX 1024
#define FD_CACHE_MIN 16

/* A chained hash table that doubles once it holds more nodes than it
 * has buckets. The kernel keeps a node for every file it remembers, so a
 * long-lived mount holds hundreds of thousands after a large batch; with
 * a fixed size every lookup walked longer chains as the batch went on.
 * It does not shrink: its peak is 8 bytes a node. */
struct table {
	struct node **buckets;
	size_t size; /* a power of two */
	size_t count;
};

static pthread_mutex_t table_lock = PTHREAD_MUTEX_INITIALIZER;
static struct table dir_table, file_table;
/* nodes without a name: out of both tables, freed with their last
 * reference, or at unmount if the kernel never let go of them */
static struct node *removed_nodes;

/* Workspace nodes with a descriptor, most recently used first: a
 * workspace is in this list exactly when its fd is not -1. */
static struct node *lru_head, *lru_tail;
static size_t lru_count, lru_limit = FD_CACHE_MAX;
/* bumped by every rename and removal: a reopen that found nothing where
 * a node was walks again if the tree moved meanwhile */
static uint64_t moves;

/* The last steps of MurmurHash3: every bit of H reaches the low bits,
 * which pick the bucket. */
static uint64_t mix(uint64_t h)
{
	h ^= h >> 33;
	h *= 0xff51afd7ed558ccdull;
	h ^= h >> 33;
	h *= 0xc4ceb9fe1a85ec53ull;
	return h ^ (h >> 33);
}

static uint64_t dir_hash(dev_t dev, ino_t ino)
{
	return mix((uint64_t)ino * 0x9e3779b97f4a7c15ull ^ (uint64_t)dev);
}

static uint64_t file_hash(const struct node *parent, const char *name)
{
	uint64_t h = (uint64_t)(uintptr_t)parent;

	for (const unsigned char *p = (const unsigned char *)name; *p; p++)
		h = (h ^ *p) * 0x100000001b3ull;
	return mix(h);
}

static int table_init(struct table *t)
{
	t->buckets = calloc(TABLE_FIRST_SIZE, sizeof(*t->buckets));
	t->size = t->buckets ? TABLE_FIRST_SIZE : 0;
	t->count = 0;
	return t->buckets ? 0 : -ENOMEM;
}

static struct node **table_chain(const struct table *t, uint64_t hash)
{
	return &t->buckets[hash & (t->size - 1)];
}

/* Doubles T, when memory allows: without it, the chains only grow longer. */
static void table_grow(struct table *t)
{
	size_t size = t->size * 2;
	struct node **buckets = calloc(size, sizeof(*buckets));

	if (!buckets)
		return;
	for (size_t i = 0; i < t->size; i++) {
		while (t->buckets[i]) {
			struct node *n = t->buckets[i];

			t->buckets[i] = n->hash_next;
			n->hash_next = buckets[n->hash & (size - 1)];
			buckets[n->hash & (size - 1)] = n;
		}
	}
	free(t->buckets);
	t->buckets = buckets;
	t->size = size;
}

/* N->hash is its key's. */
static void table_insert(struct table *t, struct node *n)
{
	struct node **chain;

	if (t->count >= t->size)
		table_grow(t);
	chain = table_chain(t, n->hash);
	n->hash_next = *chain;
	*chain = n;
	t->count++;
}

/* ---- the descriptor cache (all under the table lock) ---- */

static int fd_cached_kind(const struct node *n)
{
	return n->kind == NODE_WORKSPACE;
}

static void lru_unlink(struct node *n)
{
	if (n->lru_prev)
		n->lru_prev->lru_next = n->lru_next;
	else
		lru_head = n->lru_next;
	if (n->lru_next)
		n->lru_next->lru_prev = n->lru_prev;
	else
		lru_tail = n->lru_prev;
	n->lru_prev = n->lru_next = NULL;
	lru_count--;
}

static void lru_push_front(struct node *n)
{
	n->lru_prev = NULL;
	n->lru_next = lru_head;
	if (lru_head)
		lru_head->lru_prev = n;
	else
		lru_tail = n;
	lru_head = n;
	lru_count++;
}

/* Closes the least recently used descriptors no one borrows until at
 * most LIMIT are cached (borrowed ones stay, even above it). */
static void lru_trim_locked(size_t limit)
{
	struct node *n = lru_tail;

	while (lru_count > limit && n) {
		struct node *prev = n->lru_prev;

		if (n->fd_users == 0) {
			lru_unlink(n);
			close(n->fd);
			n->fd = -1;
		}
		n = prev;
	}
}

static int borrow_locked(struct node *n)
{
	n->fd_users++;
	if (fd_cached_kind(n) && lru_head != n) {
		lru_unlink(n);
		lru_push_front(n);
	}
	return n->fd;
}

static void give_back_locked(struct node *n)
{
	n->fd_users--;
	if (n->fd_users == 0 && lru_count > lru_limit)
		lru_trim_locked(lru_limit);
}

/* Drops N's descriptor as N is freed or the table destroyed. */
static void drop_fd_locked(struct node *n)
{
	if (n->fd < 0)
		return;
	if (fd_cached_kind(n))
		lru_unlink(n);
	close(n->fd);
	n->fd = -1;
}

/* Takes N out of the chain at HEAD: 1 if it was there. */
static int list_unlink(struct node **head, struct node *n)
{
	struct node **pp = head;
	int found;

	while (*pp && *pp != n)
		pp = &(*pp)->hash_next;
	found = *pp != NULL;
	if (found)
		*pp = n->hash_next;
	n->hash_next = NULL;
	return found;
}

static void table_remove(struct table *t, struct node *n)
{
	if (list_unlink(table_chain(t, n->hash), n))
		t->count--;
}

/* Frees T and every node in it (with its descriptor), at unmount. */
static void table_destroy_locked(struct table *t)
{
	for (size_t i = 0; i < t->size; i++) {
		while (t->buckets[i]) {
			struct node *n = t->buckets[i];

			t->buckets[i] = n->hash_next;
			drop_fd_locked(n);
			free(n->name);
			free(n);
		}
	}
	free(t->buckets);
	*t = (struct table){ 0 };
}

/* Drops a node no one references. Called with the lock held; returns the
 * parent whose reference the caller must drop next (iteratively, so a
 * deep tree cannot overflow the stack). */
static struct node *node_free_locked(struct node *n)
{
	struct node *parent = n->parent;

	if (!n->name)
		list_unlink(&removed_nodes, n);
	else
		table_remove(n->kind == NODE_FILE ? &file_table : &dir_table, n);
	drop_fd_locked(n);
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
	struct rlimit rl;
	struct stat st;
	int fd;

	/* a quarter of the descriptors at most: jobs, readers and
	 * transfers need theirs */
	lru_limit = FD_CACHE_MAX;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY &&
	    rl.rlim_cur / 4 < lru_limit)
		lru_limit = rl.rlim_cur / 4 > FD_CACHE_MIN ? rl.rlim_cur / 4 : FD_CACHE_MIN;
	if (fstat(root_fd, &st) < 0)
		return -errno;
	if (table_init(&dir_table) < 0 || table_init(&file_table) < 0)
		goto no_memory;
	fd = openat(root_fd, ".", O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0) {
		fd = -errno;
		goto fail;
	}
	root = calloc(1, sizeof(*root));
	if (!root) {
		close(fd);
		goto no_memory;
	}
	root->kind = NODE_ROOT;
	root->fd = fd;
	root->dev = st.st_dev;
	root->ino = st.st_ino;
	root->nlookup = 1;
	root->hash = dir_hash(root->dev, root->ino);
	table_insert(&dir_table, root);
	pfs.root = root;
	return 0;

no_memory:
	fd = -ENOMEM;
fail:
	table_destroy_locked(&dir_table);
	table_destroy_locked(&file_table);
	return fd;
}

void node_table_destroy(void)
{
	pthread_mutex_lock(&table_lock);
	table_destroy_locked(&file_table);
	table_destroy_locked(&dir_table);
	while (removed_nodes) {
		struct node *n = removed_nodes;

		removed_nodes = n->hash_next;
		drop_fd_locked(n);
		free(n);
	}
	lru_head = lru_tail = NULL;
	lru_count = 0;
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
	uint64_t hash = dir_hash(dev, ino);

	for (struct node *n = *table_chain(&dir_table, hash); n; n = n->hash_next) {
		if (n->dev == dev && n->ino == ino)
			return n;
	}
	return NULL;
}

static void insert_directory_locked(struct node *n)
{
	n->hash = dir_hash(n->dev, n->ino);
	table_insert(&dir_table, n);
}

/* N's entry is gone from the tree: lookups must not find N again. It
 * keeps its parent until it is freed. */
static void remove_locked(struct node *n)
{
	table_remove(n->kind == NODE_FILE ? &file_table : &dir_table, n);
	free(n->name);
	n->name = NULL;
	moves++;
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
		/* "any" is no cloud's name: the config refuses it */
		if (strcmp(name, ANY_DIR) == 0) {
			n->kind = NODE_ANY;
			break;
		}
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
	case NODE_ANY:
		n->kind = NODE_GEO;
		n->geo = config_geo_named(pfs.config, name);
		break;
	case NODE_GEO:
		n->kind = NODE_FAMILY;
		n->geo = parent->geo;
		n->family =
			parent->geo ? config_family_in_geo(pfs.config, parent->geo, name) : NULL;
		break;
	default:
		n->kind = NODE_WORKSPACE;
		break;
	}
}

/* Whether the directory open as FD still is the one whose entry has
 * status ST. A cached descriptor keeps the inode allocated, so on ext4,
 * xfs or tmpfs its number cannot be handed out again while it is open;
 * but a node outlives its directory (rmdir while the kernel holds it),
 * and a backing filesystem without stable inode numbers could give a new
 * directory the same identity. Serving that one with the old node would
 * give it a dead descriptor and a wrong place in the tree. */
static int directory_is_current(int fd, const struct stat *st)
{
	struct stat now;

	if (fstat(fd, &now) < 0)
		return 0;
	return now.st_nlink > 0 && now.st_dev == st->st_dev && now.st_ino == st->st_ino;
}

/* The node of the directory with ST's identity, found as NAME in PARENT,
 * with a reference added, if there is one and it is current; a stale one
 * is retired. NULL with *ERR set when that could not be decided. */
static struct node *find_current_directory(struct node *parent, const char *name,
					   const struct stat *st, int kernel_ref, int *err)
{
	struct node *n;
	int current, placed, fd;

	pthread_mutex_lock(&table_lock);
	n = find_directory_locked(st->st_dev, st->st_ino);
	if (n && n->kind == NODE_ROOT) {
		add_reference(n, kernel_ref);
		pthread_mutex_unlock(&table_lock);
		return n;
	}
	if (!n) {
		pthread_mutex_unlock(&table_lock);
		return NULL;
	}
	n->refs++; /* kept while it is checked, unlocked */
	/* without a descriptor, a node whose place is where the entry was
	 * just found is that directory: a directory has one name */
	placed = n->fd < 0 && n->parent == parent && n->name && strcmp(n->name, name) == 0;
	pthread_mutex_unlock(&table_lock);

	current = placed;
	if (!placed) {
		fd = node_dir_fd(n);
		if (fd >= 0) {
			current = directory_is_current(fd, st);
			node_dir_fd_release(n, fd);
		} else if (fd != -ENOENT && fd != -ESTALE && fd != -ENOTDIR) {
			*err = fd; /* no descriptor to tell */
			node_put(n);
			return NULL;
		}
	}

	pthread_mutex_lock(&table_lock);
	if (current)
		add_reference(n, kernel_ref);
	else if (n->name)
		remove_locked(n); /* unless another thread did */
	node_put_locked(n);
	pthread_mutex_unlock(&table_lock);
	return current ? n : NULL;
}

/* A directory node starts without a descriptor: node_dir_fd opens it
 * when it is first used, so that a lookup never needs one. */
static struct node *get_directory(struct node *parent, const char *name, const struct stat *st,
				  int kernel_ref, int *err)
{
	struct node *n, *other;
	char *copy;

	*err = -ENOMEM;
	n = find_current_directory(parent, name, st, kernel_ref, err);
	if (n || *err != -ENOMEM)
		return n;

	n = calloc(1, sizeof(*n));
	copy = strdup(name);
	if (!n || !copy) {
		free(copy);
		free(n);
		return NULL;
	}
	n->fd = -1;
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

/* ---- descriptors ---- */

void node_fd_shortage(int err)
{
	static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
	static time_t last;
	static unsigned long missed;
	time_t now = time(NULL);
	unsigned long n = 0;
	int say = 0;

	if (err != EMFILE && err != ENFILE)
		return;
	pthread_mutex_lock(&lock);
	missed++;
	if (last == 0 || now - last >= 60) {
		say = 1;
		n = missed;
		missed = 0;
		last = now;
	}
	pthread_mutex_unlock(&lock);
	if (say)
		log_warn("out of file descriptors (%s): %lu request(s) refused since the last "
			 "warning",
			 strerror(err), n);
}

int node_dir_fd(struct node *dir)
{
	struct node *held = NULL; /* the last level opened: borrowed, referenced */
	int rc, tries = 0, trimmed = 0;

	pthread_mutex_lock(&table_lock);
	for (;;) {
		struct node *n = dir, *p;
		struct stat now;
		uint64_t gen;
		char *name;
		int pfd, fd, err = ENOMEM;

		if (dir->fd >= 0) {
			rc = borrow_locked(dir);
			break;
		}
		/* the topmost directory without a descriptor: its parent has
		 * one (the root always does) */
		while (n->parent && n->parent->fd < 0)
			n = n->parent;
		if (!n->parent || !n->name) {
			rc = -ENOENT; /* removed while its descriptor was closed */
			break;
		}
		p = n->parent;
		p->refs++;
		pfd = borrow_locked(p);
		n->refs++;
		name = strdup(n->name);
		gen = moves;
		if (held) {
			give_back_locked(held);
			node_put_locked(held);
			held = NULL;
		}
		pthread_mutex_unlock(&table_lock);

		fd = -1;
		if (name) {
			fd = openat(pfd, name, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
			err = fd < 0 ? errno : 0;
			if (fd >= 0 &&
			    (fstat(fd, &now) < 0 || now.st_dev != n->dev || now.st_ino != n->ino)) {
				close(fd);
				fd = -1;
				err = ESTALE; /* another directory has its name */
			}
			free(name);
		}

		pthread_mutex_lock(&table_lock);
		give_back_locked(p);
		node_put_locked(p);
		if (fd < 0) {
			node_put_locked(n);
			if ((err == ENOENT || err == ENOTDIR || err == ESTALE) && moves != gen &&
			    ++tries < 16)
				continue; /* moved meanwhile: walk again */
			if ((err == EMFILE || err == ENFILE) && !trimmed) {
				trimmed = 1;
				lru_trim_locked(0);
				continue;
			}
			rc = -err;
			break;
		}
		if (n->fd < 0) {
			n->fd = fd;
			if (fd_cached_kind(n))
				lru_push_front(n);
		} else {
			close(fd); /* another thread opened it meanwhile */
		}
		borrow_locked(n); /* kept open for the next level down */
		held = n;
		if (lru_count > lru_limit)
			lru_trim_locked(lru_limit);
	}
	if (held) {
		give_back_locked(held);
		node_put_locked(held);
	}
	pthread_mutex_unlock(&table_lock);
	if (rc == -EMFILE || rc == -ENFILE)
		node_fd_shortage(-rc);
	return rc;
}

void node_dir_fd_release(struct node *dir, int fd)
{
	if (fd < 0)
		return;
	pthread_mutex_lock(&table_lock);
	give_back_locked(dir);
	pthread_mutex_unlock(&table_lock);
}

size_t node_fd_cache_limit(void)
{
	size_t limit;

	pthread_mutex_lock(&table_lock);
	limit = lru_limit;
	pthread_mutex_unlock(&table_lock);
	return limit;
}

void node_fd_cache_set_limit(size_t limit)
{
	pthread_mutex_lock(&table_lock);
	lru_limit = limit;
	lru_trim_locked(lru_limit);
	pthread_mutex_unlock(&table_lock);
}

size_t node_fd_cache_count(void)
{
	size_t count;

	pthread_mutex_lock(&table_lock);
	count = lru_count;
	pthread_mutex_unlock(&table_lock);
	return count;
}

/* ---- files ---- */

static struct node *find_file_locked(struct node *parent, const char *name)
{
	uint64_t hash = file_hash(parent, name);

	for (struct node *n = *table_chain(&file_table, hash); n; n = n->hash_next) {
		if (n->hash == hash && n->parent == parent && strcmp(n->name, name) == 0)
			return n;
	}
	return NULL;
}

static void insert_file_locked(struct node *n)
{
	n->hash = file_hash(n->parent, n->name);
	table_insert(&file_table, n);
}

static void unhash_file_locked(struct node *n)
{
	table_remove(&file_table, n);
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

struct node *node_get_child_err(struct node *parent, const char *name, const struct stat *st,
				int kernel_ref, int *err)
{
	*err = -ENOMEM;
	if (S_ISDIR(st->st_mode))
		return get_directory(parent, name, st, kernel_ref, err);
	return get_file(parent, name, kernel_ref);
}

struct node *node_get_child(struct node *parent, const char *name, const struct stat *st,
			    int kernel_ref)
{
	int err;

	return node_get_child_err(parent, name, st, kernel_ref, &err);
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
	moves++;
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

struct node *node_find_file(struct node *dir, const char *name)
{
	struct node *n;

	pthread_mutex_lock(&table_lock);
	n = find_file_locked(dir, name);
	if (n)
		n->refs++;
	pthread_mutex_unlock(&table_lock);
	return n;
}

void node_attrs_given(struct node *n)
{
	__atomic_store_n(&n->attrs_out, 1, __ATOMIC_SEQ_CST);
}

void node_attrs_changed(struct node *n)
{
	if (!__atomic_exchange_n(&n->attrs_out, 0, __ATOMIC_SEQ_CST) || !pfs.session)
		return;
	/* attributes only (offset < 0): no page is waited for */
	fuse_lowlevel_notify_inval_inode(pfs.session, node_ino(n), -1, 0);
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

int node_route(struct node *dir, const struct model **model, const char **geo, const char **family)
{
	struct node *n;
	int rc = -ENOENT;

	*model = NULL;
	*geo = *family = NULL;
	pthread_mutex_lock(&table_lock);
	n = dir;
	while (n && (n->kind == NODE_WORKSPACE || n->kind == NODE_FILE))
		n = n->parent;
	if (n && n->kind == NODE_MODEL && n->model) {
		*model = n->model;
		rc = 0;
	} else if (n && n->kind == NODE_FAMILY && n->family) {
		*geo = n->geo;
		*family = n->family;
		rc = 0;
	}
	pthread_mutex_unlock(&table_lock);
	return rc;
}

struct node *node_at_path(const char *path)
{
	char *copy = strdup(path), *save = NULL;
	struct node *dir = pfs.root;

	if (!copy || !dir) {
		free(copy);
		return NULL;
	}
	node_hold(dir);
	for (char *name = strtok_r(copy, "/", &save); name && dir;
	     name = strtok_r(NULL, "/", &save)) {
		int fd = node_dir_fd(dir);
		struct node *child = NULL;
		struct stat st;

		if (fd >= 0 && fstatat(fd, name, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
		    S_ISDIR(st.st_mode))
			child = node_get_child(dir, name, &st, 0);
		node_dir_fd_release(dir, fd);
		node_put(dir);
		dir = child;
	}
	free(copy);
	return dir;
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
