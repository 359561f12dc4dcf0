/* The inode table on a real directory tree in a temporary directory:
 * lookups by identity, renames of files and directories, the deployment
 * and ancestry found by walking up, paths, references, stale nodes, a
 * table that grows. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fs/node.h"

struct promptfs pfs;

/* The config the tree is built from: openai/us/{gpt-4o,gpt-4o-mini} and
 * local/localhost/llama3.2. A directory "retired" at the root stands for
 * a cloud no longer configured. */
static struct model us_models[] = { { .name = "gpt-4o" }, { .name = "gpt-4o-mini" } };
static struct model localhost_models[] = { { .name = "llama3.2" } };
static struct region openai_regions[] = {
	{ .name = "us", .models = us_models, .n_models = 2 },
};
static struct region local_regions[] = {
	{ .name = "localhost", .models = localhost_models, .n_models = 1 },
};
static struct cloud clouds[] = {
	{ .name = "openai", .regions = openai_regions, .n_regions = 1 },
	{ .name = "local", .regions = local_regions, .n_regions = 1 },
};
static struct config config = { .clouds = clouds, .n_clouds = 2 };

#define GPT (&us_models[0])
#define MINI (&us_models[1])
#define LLAMA (&localhost_models[0])

struct fixture {
	char dir[64];
	int fd;
};

static void make_dirs(int fd, const char *path)
{
	char buf[256], *p;

	snprintf(buf, sizeof(buf), "%s", path);
	for (p = strchr(buf, '/'); p; p = strchr(p + 1, '/')) {
		*p = '\0';
		mkdirat(fd, buf, 0755);
		*p = '/';
	}
	assert_int_equal(mkdirat(fd, buf, 0755), 0);
}

static void make_file(int fd, const char *path)
{
	int f = openat(fd, path, O_WRONLY | O_CREAT | O_EXCL, 0644);

	assert_true(f >= 0);
	close(f);
}

static int setup(void **state)
{
	struct fixture *fx = calloc(1, sizeof(*fx));

	assert_non_null(fx);
	snprintf(fx->dir, sizeof(fx->dir), "/tmp/test_node.XXXXXX");
	assert_non_null(mkdtemp(fx->dir));
	fx->fd = open(fx->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	assert_true(fx->fd >= 0);
	make_dirs(fx->fd, "openai/us/gpt-4o");
	make_dirs(fx->fd, "openai/us/gpt-4o-mini");
	make_dirs(fx->fd, "local/localhost/llama3.2");
	make_dirs(fx->fd, "retired/eu/old-model");
	for (size_t c = 0; c < 2; c++) {
		for (size_t r = 0; r < clouds[c].n_regions; r++) {
			clouds[c].regions[r].cloud = &clouds[c];
			for (size_t m = 0; m < clouds[c].regions[r].n_models; m++)
				clouds[c].regions[r].models[m].region = &clouds[c].regions[r];
		}
	}
	pfs.config = &config;
	assert_int_equal(node_table_init(fx->fd), 0);
	*state = fx;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *fx = *state;
	char cmd[128];

	node_table_destroy();
	close(fx->fd);
	snprintf(cmd, sizeof(cmd), "rm -rf %s", fx->dir);
	assert_int_equal(system(cmd), 0);
	free(fx);
	return 0;
}

/* DIR's descriptor. Borrowed and given back at once: single-threaded,
 * with room in the cache, it stays open until the test evicts it. */
static int dfd(struct node *dir)
{
	int fd = node_dir_fd(dir);

	assert_true(fd >= 0);
	node_dir_fd_release(dir, fd);
	return fd;
}

/* The node of NAME in DIR, with one reference of ours. */
static struct node *child(struct node *dir, const char *name)
{
	struct node *n;
	struct stat st;

	assert_int_equal(fstatat(dfd(dir), name, &st, AT_SYMLINK_NOFOLLOW), 0);
	n = node_get_child(dir, name, &st, 0);
	assert_non_null(n);
	return n;
}

/* The node at PATH (a/b/c) below DIR, with one reference of ours; the
 * directories on the way are held only by their children. */
static struct node *walk(struct node *dir, const char *path)
{
	char buf[256], *save = NULL;
	struct node *n = dir, *next;

	snprintf(buf, sizeof(buf), "%s", path);
	node_hold(n);
	for (char *part = strtok_r(buf, "/", &save); part; part = strtok_r(NULL, "/", &save)) {
		next = child(n, part);
		node_put(n);
		n = next;
	}
	return n;
}

/* rename(2) through the table, as op_rename does it. */
static void do_rename(struct node *from_dir, const char *from, struct node *to_dir, const char *to,
		      unsigned int flags)
{
	struct node_rename r = {
		.from_dir = from_dir,
		.from_name = from,
		.to_dir = to_dir,
		.to_name = to,
		.exchange = (flags & RENAME_EXCHANGE) != 0,
	};

	assert_int_equal(fstatat(dfd(from_dir), from, &r.from, AT_SYMLINK_NOFOLLOW), 0);
	r.to_exists = fstatat(dfd(to_dir), to, &r.to, AT_SYMLINK_NOFOLLOW) == 0;
	assert_int_equal(node_rename_prepare(&r), 0);
	assert_int_equal(renameat2(dfd(from_dir), from, dfd(to_dir), to, flags), 0);
	node_renamed(&r);
	node_rename_release(&r);
}

static void assert_path(struct node *n, const char *want)
{
	char buf[256];

	assert_int_equal(node_path(n, buf, sizeof(buf)), (int)strlen(want));
	assert_string_equal(buf, want);
}

static void structure_from_the_config(void **state)
{
	struct node *openai, *us, *gpt, *mini, *retired, *old;

	(void)state;
	openai = child(pfs.root, "openai");
	assert_int_equal(openai->kind, NODE_CLOUD);
	assert_ptr_equal(openai->cloud, &clouds[0]);
	assert_ptr_equal(openai->parent, pfs.root);
	assert_string_equal(openai->name, "openai");
	us = child(openai, "us");
	assert_int_equal(us->kind, NODE_REGION);
	assert_ptr_equal(us->region, &openai_regions[0]);
	gpt = child(us, "gpt-4o");
	mini = child(us, "gpt-4o-mini");
	assert_int_equal(gpt->kind, NODE_MODEL);
	assert_ptr_equal(gpt->model, GPT);
	assert_ptr_equal(mini->model, MINI);
	assert_ptr_equal(node_deployment(gpt), GPT);
	assert_null(node_deployment(us));
	assert_null(node_deployment(openai));
	assert_null(node_deployment(pfs.root));

	/* a cloud no longer configured: structure without config, no
	 * deployment anywhere below it */
	old = walk(pfs.root, "retired/eu/old-model");
	assert_int_equal(old->kind, NODE_MODEL);
	assert_null(old->model);
	assert_null(node_deployment(old));
	retired = child(pfs.root, "retired");
	assert_int_equal(retired->kind, NODE_CLOUD);
	assert_null(retired->cloud);

	node_put(retired);
	node_put(old);
	node_put(mini);
	node_put(gpt);
	node_put(us);
	node_put(openai);
}

static void children_are_found_by_identity(void **state)
{
	struct fixture *fx = *state;
	struct node *gpt, *ws, *again, *f, *f2, *g;
	unsigned gpt_refs;

	gpt = walk(pfs.root, "openai/us/gpt-4o");
	gpt_refs = gpt->refs;
	make_dirs(fx->fd, "openai/us/gpt-4o/ws");
	make_file(fx->fd, "openai/us/gpt-4o/ws/f.txt");
	make_file(fx->fd, "openai/us/gpt-4o/ws/g.txt");

	ws = child(gpt, "ws");
	assert_int_equal(ws->kind, NODE_WORKSPACE);
	assert_null(ws->model); /* workspaces copy nothing: they walk up */
	assert_int_equal(gpt->refs, gpt_refs + 1);
	again = child(gpt, "ws");
	assert_ptr_equal(again, ws);
	assert_int_equal(gpt->refs, gpt_refs + 1); /* one child, one reference */

	f = child(ws, "f.txt");
	f2 = child(ws, "f.txt");
	g = child(ws, "g.txt");
	assert_int_equal(f->kind, NODE_FILE);
	assert_ptr_equal(f, f2);
	assert_ptr_not_equal(f, g);
	assert_int_equal(f->refs, 2);
	assert_ptr_equal(node_deployment(f), GPT);

	node_put(g);
	node_put(f2);
	node_put(f);
	node_put(again);
	node_put(ws);
	/* the workspace went with its last reference, and its hold on the
	 * model directory with it */
	assert_int_equal(gpt->refs, gpt_refs);
	node_put(gpt);
}

static void kernel_references_keep_a_node(void **state)
{
	struct fixture *fx = *state;
	struct node *gpt, *ws, *again;
	unsigned gpt_refs;
	struct stat st;

	gpt = walk(pfs.root, "openai/us/gpt-4o");
	gpt_refs = gpt->refs;
	make_dirs(fx->fd, "openai/us/gpt-4o/k");
	assert_int_equal(fstatat(dfd(gpt), "k", &st, 0), 0);
	ws = node_get_child(gpt, "k", &st, 1);
	assert_non_null(ws);
	assert_int_equal(ws->nlookup, 1);
	assert_int_equal(ws->refs, 0);
	again = child(gpt, "k");
	assert_ptr_equal(again, ws);
	node_put(again);
	assert_int_equal(gpt->refs, gpt_refs + 1); /* the kernel still has it */
	node_forget(ws, 1);
	assert_int_equal(gpt->refs, gpt_refs);
	node_put(gpt);
}

static void file_rename_moves_its_node(void **state)
{
	struct fixture *fx = *state;
	struct node *gpt, *ws1, *ws2, *f, *victim, *moved, *fresh, *dir;
	unsigned refs1, refs2;
	char *name;

	make_dirs(fx->fd, "openai/us/gpt-4o/ws1");
	make_dirs(fx->fd, "openai/us/gpt-4o/ws2");
	make_file(fx->fd, "openai/us/gpt-4o/ws1/f");
	make_file(fx->fd, "openai/us/gpt-4o/ws2/g");
	gpt = walk(pfs.root, "openai/us/gpt-4o");
	ws1 = child(gpt, "ws1");
	ws2 = child(gpt, "ws2");
	f = child(ws1, "f");
	victim = child(ws2, "g");
	refs1 = ws1->refs;
	refs2 = ws2->refs;

	do_rename(ws1, "f", ws2, "g", 0);
	assert_ptr_equal(f->parent, ws2);
	assert_string_equal(f->name, "g");
	assert_int_equal(ws1->refs, refs1 - 1);
	assert_int_equal(ws2->refs, refs2 + 1);
	moved = child(ws2, "g");
	assert_ptr_equal(moved, f);
	/* the file it replaced is gone */
	assert_null(victim->name);
	assert_int_equal(node_file_location(victim, &dir, &name), -ENOENT);
	assert_int_equal(node_file_location(f, &dir, &name), 0);
	assert_ptr_equal(dir, ws2);
	assert_string_equal(name, "g");
	free(name);
	node_put(dir);
	/* the old name is free for a new file */
	make_file(fx->fd, "openai/us/gpt-4o/ws1/f");
	fresh = child(ws1, "f");
	assert_ptr_not_equal(fresh, f);

	node_put(fresh);
	node_put(moved);
	node_put(victim);
	node_put(f);
	node_put(ws2);
	node_put(ws1);
	node_put(gpt);
}

static void file_unlink_forgets_its_name(void **state)
{
	struct fixture *fx = *state;
	struct node *gpt, *f, *fresh;

	make_file(fx->fd, "openai/us/gpt-4o/u");
	gpt = walk(pfs.root, "openai/us/gpt-4o");
	f = child(gpt, "u");
	assert_int_equal(unlinkat(dfd(gpt), "u", 0), 0);
	node_file_unlinked(gpt, "u");
	assert_null(f->name);
	make_file(fx->fd, "openai/us/gpt-4o/u");
	fresh = child(gpt, "u");
	assert_ptr_not_equal(fresh, f);
	node_put(fresh);
	node_put(f);
	node_put(gpt);
}

/* node_find_file finds what the table has, never makes a node; the mark
 * of attributes given to the kernel is cleared by the change that
 * follows (no session here: nothing is sent). */
static void file_found_by_name_without_creating(void **state)
{
	struct fixture *fx = *state;
	struct node *gpt, *f, *found;
	unsigned refs;

	make_file(fx->fd, "openai/us/gpt-4o/q.response");
	gpt = walk(pfs.root, "openai/us/gpt-4o");
	assert_null(node_find_file(gpt, "q.response"));
	f = child(gpt, "q.response");
	refs = f->refs;
	found = node_find_file(gpt, "q.response");
	assert_ptr_equal(found, f);
	assert_int_equal(f->refs, refs + 1);
	node_put(found);
	assert_null(node_find_file(gpt, "q.meta"));
	assert_int_equal(f->attrs_out, 0);
	node_attrs_given(f);
	assert_int_equal(f->attrs_out, 1);
	node_attrs_changed(f);
	assert_int_equal(f->attrs_out, 0);
	node_file_unlinked(gpt, "q.response");
	assert_null(node_find_file(gpt, "q.response"));
	node_put(f);
	node_put(gpt);
}

/* Many more nodes than the table's first size (4096): it grows while
 * they are held, and every node is found by its key after each growth;
 * a removed one is not, the others still are. */
static void the_table_grows_and_still_finds_every_node(void **state)
{
	enum { FILES = 3 * 4096, DIRS = 4096 + 100 };
	struct node **files = calloc(FILES, sizeof(*files)), **dirs = calloc(DIRS, sizeof(*dirs));
	struct fixture *fx = *state;
	struct stat file_st = { .st_mode = S_IFREG | 0644 };
	struct node *gpt, *found;
	char name[32];

	assert_non_null(files);
	assert_non_null(dirs);
	gpt = walk(pfs.root, "openai/us/gpt-4o");
	for (int i = 0; i < FILES; i++) {
		snprintf(name, sizeof(name), "job-%05d.prompt", i);
		files[i] = node_get_child(gpt, name, &file_st, 0);
		assert_non_null(files[i]);
	}
	for (int i = 0; i < DIRS; i++) {
		snprintf(name, sizeof(name), "openai/us/gpt-4o/ws-%04d", i);
		make_dirs(fx->fd, name);
		dirs[i] = child(gpt, name + strlen("openai/us/gpt-4o/"));
	}
	for (int i = 0; i < FILES; i++) {
		snprintf(name, sizeof(name), "job-%05d.prompt", i);
		found = node_find_file(gpt, name);
		assert_ptr_equal(found, files[i]);
		node_put(found);
	}
	for (int i = 0; i < DIRS; i++) {
		snprintf(name, sizeof(name), "ws-%04d", i);
		found = child(gpt, name);
		assert_ptr_equal(found, dirs[i]);
		node_put(found);
	}
	for (int i = 0; i < FILES; i += 2) {
		snprintf(name, sizeof(name), "job-%05d.prompt", i);
		node_file_unlinked(gpt, name);
		assert_null(node_find_file(gpt, name));
	}
	for (int i = 1; i < FILES; i += 2) {
		snprintf(name, sizeof(name), "job-%05d.prompt", i);
		found = node_find_file(gpt, name);
		assert_ptr_equal(found, files[i]);
		node_put(found);
	}
	for (int i = 0; i < FILES; i++)
		node_put(files[i]);
	for (int i = 0; i < DIRS; i++)
		node_put(dirs[i]);
	node_put(gpt);
	free(dirs);
	free(files);
}

static void directory_rename_moves_it_and_its_reference(void **state)
{
	struct fixture *fx = *state;
	struct node *gpt, *llama, *ws, *sub, *again;
	unsigned gpt_refs, llama_refs;

	make_dirs(fx->fd, "openai/us/gpt-4o/ws/sub");
	gpt = walk(pfs.root, "openai/us/gpt-4o");
	llama = walk(pfs.root, "local/localhost/llama3.2");
	ws = child(gpt, "ws");
	sub = child(ws, "sub");
	assert_ptr_equal(node_deployment(sub), GPT);
	gpt_refs = gpt->refs;
	llama_refs = llama->refs;

	do_rename(gpt, "ws", llama, "moved", 0);
	assert_ptr_equal(ws->parent, llama);
	assert_string_equal(ws->name, "moved");
	assert_int_equal(gpt->refs, gpt_refs - 1);
	assert_int_equal(llama->refs, llama_refs + 1);
	assert_ptr_equal(node_deployment(ws), LLAMA);
	assert_ptr_equal(node_deployment(sub), LLAMA);
	assert_path(sub, "/local/localhost/llama3.2/moved/sub");
	/* found at its new place as the same node */
	again = child(llama, "moved");
	assert_ptr_equal(again, ws);
	node_put(again);

	/* and back, renamed in place on the way */
	do_rename(llama, "moved", llama, "moved2", 0);
	assert_path(sub, "/local/localhost/llama3.2/moved2/sub");
	assert_int_equal(llama->refs, llama_refs + 1);
	do_rename(llama, "moved2", gpt, "ws", 0);
	assert_int_equal(gpt->refs, gpt_refs);
	assert_int_equal(llama->refs, llama_refs);
	assert_ptr_equal(node_deployment(sub), GPT);

	node_put(sub);
	node_put(ws);
	/* the moves left no reference behind: the whole chain is gone */
	assert_int_equal(gpt->refs, gpt_refs - 1);
	node_put(llama);
	node_put(gpt);
}

static void directory_rename_onto_an_empty_directory(void **state)
{
	struct fixture *fx = *state;
	struct node *gpt, *mini, *ws, *empty, *found;
	char buf[64];

	make_dirs(fx->fd, "openai/us/gpt-4o/ws");
	make_dirs(fx->fd, "openai/us/gpt-4o-mini/empty");
	gpt = walk(pfs.root, "openai/us/gpt-4o");
	mini = walk(pfs.root, "openai/us/gpt-4o-mini");
	ws = child(gpt, "ws");
	empty = child(mini, "empty");

	do_rename(gpt, "ws", mini, "empty", 0);
	assert_null(empty->name); /* replaced: out of the table */
	assert_int_equal(node_path(empty, buf, sizeof(buf)), -ENOENT);
	assert_ptr_equal(node_deployment(empty), MINI); /* it still has a parent */
	found = child(mini, "empty");
	assert_ptr_equal(found, ws);
	assert_ptr_equal(node_deployment(ws), MINI);

	node_put(found);
	node_put(empty);
	node_put(ws);
	node_put(mini);
	node_put(gpt);
}

static void directory_exchange_swaps_places(void **state)
{
	struct fixture *fx = *state;
	struct node *gpt, *llama, *a, *b;
	unsigned gpt_refs, llama_refs;

	make_dirs(fx->fd, "openai/us/gpt-4o/a");
	make_dirs(fx->fd, "local/localhost/llama3.2/b");
	gpt = walk(pfs.root, "openai/us/gpt-4o");
	llama = walk(pfs.root, "local/localhost/llama3.2");
	a = child(gpt, "a");
	b = child(llama, "b");
	gpt_refs = gpt->refs;
	llama_refs = llama->refs;

	do_rename(gpt, "a", llama, "b", RENAME_EXCHANGE);
	assert_path(a, "/local/localhost/llama3.2/b");
	assert_path(b, "/openai/us/gpt-4o/a");
	assert_ptr_equal(node_deployment(a), LLAMA);
	assert_ptr_equal(node_deployment(b), GPT);
	assert_int_equal(gpt->refs, gpt_refs);
	assert_int_equal(llama->refs, llama_refs);

	node_put(b);
	node_put(a);
	node_put(llama);
	node_put(gpt);
}

static void deployment_of_a_workspace_three_deep(void **state)
{
	struct fixture *fx = *state;
	struct node *c;

	make_dirs(fx->fd, "local/localhost/llama3.2/a/b/c");
	c = walk(pfs.root, "local/localhost/llama3.2/a/b/c");
	assert_int_equal(c->kind, NODE_WORKSPACE);
	assert_ptr_equal(node_deployment(c), LLAMA);
	assert_ptr_equal(node_deployment(c->parent), LLAMA);
	node_put(c);
}

static void ancestry_from_the_root_down(void **state)
{
	static const char *const names[] = { NULL, "openai", "us", "gpt-4o", "a", "b", "c" };
	struct fixture *fx = *state;
	struct node *c, *chain[8];
	unsigned refs[7];
	size_t i, n;

	make_dirs(fx->fd, "openai/us/gpt-4o/a/b/c");
	c = walk(pfs.root, "openai/us/gpt-4o/a/b/c");

	/* too small: the length, and nothing taken */
	i = c->refs;
	assert_int_equal(node_ancestry(c, chain, 6), 7);
	assert_int_equal(c->refs, i);

	n = node_ancestry(c, chain, 8);
	assert_int_equal(n, 7);
	assert_ptr_equal(chain[0], pfs.root);
	assert_ptr_equal(chain[6], c);
	for (i = 1; i < n; i++) {
		assert_ptr_equal(chain[i]->parent, chain[i - 1]);
		assert_string_equal(chain[i]->name, names[i]);
		refs[i] = chain[i]->refs;
	}
	/* the chain holds each one: they outlive the caller's own reference */
	node_put(c);
	assert_int_equal(chain[6]->refs, refs[6] - 1);
	node_put_all(chain, n);
	assert_int_equal(node_ancestry(pfs.root, chain, 8), 1);
	assert_ptr_equal(chain[0], pfs.root);
	node_put_all(chain, 1);
}

static void paths_from_the_mount_root(void **state)
{
	struct fixture *fx = *state;
	const char *want = "/openai/us/gpt-4o/ws";
	struct node *ws, *f;
	char buf[64];

	make_dirs(fx->fd, "openai/us/gpt-4o/ws");
	make_file(fx->fd, "openai/us/gpt-4o/ws/q.prompt");
	ws = walk(pfs.root, "openai/us/gpt-4o/ws");
	f = child(ws, "q.prompt");
	assert_path(pfs.root, "/");
	assert_path(ws, want);
	assert_path(f, "/openai/us/gpt-4o/ws/q.prompt");
	/* exactly enough room, and one byte short */
	assert_int_equal(node_path(ws, buf, strlen(want) + 1), (int)strlen(want));
	assert_string_equal(buf, want);
	assert_int_equal(node_path(ws, buf, strlen(want)), -ENAMETOOLONG);
	assert_int_equal(node_path(pfs.root, buf, 1), -ENAMETOOLONG);
	node_put(f);
	node_put(ws);
}

static void removed_directory_is_retired(void **state)
{
	struct fixture *fx = *state;
	struct node *gpt, *d, *fresh;
	struct stat st;
	char buf[64];

	make_dirs(fx->fd, "openai/us/gpt-4o/d");
	gpt = walk(pfs.root, "openai/us/gpt-4o");
	d = child(gpt, "d");
	assert_int_equal(fstatat(dfd(gpt), "d", &st, 0), 0);
	assert_int_equal(unlinkat(dfd(gpt), "d", AT_REMOVEDIR), 0);
	node_directory_removed(&st);
	assert_null(d->name);
	assert_int_equal(node_path(d, buf, sizeof(buf)), -ENOENT);
	make_dirs(fx->fd, "openai/us/gpt-4o/d");
	fresh = child(gpt, "d");
	assert_ptr_not_equal(fresh, d);
	assert_path(fresh, "/openai/us/gpt-4o/d");
	node_put(fresh);
	node_put(d);
	node_put(gpt);
}

/* The kernel may never forget removed entries before the unmount: the
 * table frees them anyway (LeakSanitizer checks it in the ASan build). */
static void removed_nodes_still_held_are_freed_at_the_end(void **state)
{
	struct fixture *fx = *state;
	struct node *gpt, *d, *f;
	struct stat st;

	make_dirs(fx->fd, "openai/us/gpt-4o/held");
	make_file(fx->fd, "openai/us/gpt-4o/held.txt");
	gpt = walk(pfs.root, "openai/us/gpt-4o");
	assert_int_equal(fstatat(dfd(gpt), "held", &st, 0), 0);
	d = node_get_child(gpt, "held", &st, 1);
	assert_int_equal(fstatat(dfd(gpt), "held.txt", &st, 0), 0);
	f = node_get_child(gpt, "held.txt", &st, 1);
	assert_non_null(d);
	assert_non_null(f);
	assert_int_equal(fstatat(dfd(gpt), "held", &st, 0), 0);
	assert_int_equal(unlinkat(dfd(gpt), "held", AT_REMOVEDIR), 0);
	node_directory_removed(&st);
	assert_int_equal(unlinkat(dfd(gpt), "held.txt", 0), 0);
	node_file_unlinked(gpt, "held.txt");
	assert_null(d->name);
	assert_null(f->name);
	node_put(gpt);
	/* teardown's node_table_destroy frees d and f */
}

/* A node whose directory was removed behind the table's back while its
 * identity went to another directory. The backing filesystems of the
 * tests do not reuse the number of an inode a descriptor still holds, so
 * the test makes the situation: the node of d is given the descriptor of
 * a removed directory, as if d had been removed and its number reused for
 * the d now on disk. */
static void stale_directory_node_is_replaced(void **state)
{
	struct fixture *fx = *state;
	struct node *gpt, *d, *fresh, *again;
	struct stat st, now;
	int dead;

	make_dirs(fx->fd, "openai/us/gpt-4o/d");
	make_dirs(fx->fd, "openai/us/gpt-4o/gone");
	gpt = walk(pfs.root, "openai/us/gpt-4o");
	d = child(gpt, "d");
	dead = openat(dfd(gpt), "gone", O_PATH | O_DIRECTORY | O_CLOEXEC);
	assert_true(dead >= 0);
	assert_int_equal(unlinkat(dfd(gpt), "gone", AT_REMOVEDIR), 0);
	assert_int_equal(dup2(dead, dfd(d)), dfd(d));
	close(dead);

	fresh = child(gpt, "d");
	assert_ptr_not_equal(fresh, d);
	assert_null(d->name); /* retired: it lives on only for its holders */
	assert_string_equal(fresh->name, "d");
	assert_int_equal(fstat(dfd(fresh), &now), 0);
	assert_int_equal(fstatat(dfd(gpt), "d", &st, 0), 0);
	assert_true(now.st_ino == st.st_ino && now.st_nlink > 0);
	again = child(gpt, "d");
	assert_ptr_equal(again, fresh);

	node_put(again);
	node_put(fresh);
	node_put(d);
	node_put(gpt);
}

/* ---- the descriptor cache ---- */

/* Closes every workspace descriptor no one borrows. */
static void evict_all(void)
{
	size_t limit = node_fd_cache_limit();

	node_fd_cache_set_limit(0);
	assert_int_equal(node_fd_cache_count(), 0);
	node_fd_cache_set_limit(limit);
}

static int fd_is(int fd, const struct stat *st)
{
	struct stat now;

	return fstat(fd, &now) == 0 && now.st_dev == st->st_dev && now.st_ino == st->st_ino;
}

/* Workspaces keep at most the cache's limit of descriptors, least
 * recently used out first; a borrowed one is never closed; structure
 * keeps its own outside the count. */
static void descriptor_cache_evicts_the_least_recently_used(void **state)
{
	struct fixture *fx = *state;
	struct node *gpt, *ws[5];
	struct stat st;
	int held;

	for (int i = 0; i < 5; i++) {
		char name[64];

		snprintf(name, sizeof(name), "openai/us/gpt-4o/w%d", i);
		make_dirs(fx->fd, name);
	}
	node_fd_cache_set_limit(2);
	gpt = walk(pfs.root, "openai/us/gpt-4o");
	for (int i = 0; i < 5; i++) {
		char name[16];

		snprintf(name, sizeof(name), "w%d", i);
		ws[i] = child(gpt, name);
		assert_int_equal(ws[i]->fd, -1); /* opened when first used */
	}
	assert_int_equal(node_fd_cache_count(), 0);
	for (int i = 0; i < 5; i++) {
		dfd(ws[i]);
		assert_true(node_fd_cache_count() <= 2);
	}
	assert_true(gpt->fd >= 0); /* structure: kept, not counted */
	assert_int_equal(ws[0]->fd, -1);
	assert_true(ws[3]->fd >= 0 && ws[4]->fd >= 0);

	/* w0 borrowed: w1, w2, w3 go through the cache, w0 stays */
	held = node_dir_fd(ws[0]);
	assert_true(held >= 0);
	for (int i = 1; i < 4; i++)
		dfd(ws[i]);
	assert_int_equal(ws[0]->fd, held);
	assert_int_equal(fstatat(dfd(gpt), "w0", &st, 0), 0);
	assert_true(fd_is(held, &st));
	node_dir_fd_release(ws[0], held);
	assert_true(node_fd_cache_count() <= 2);

	/* each one evicted still reaches its own directory */
	for (int i = 0; i < 5; i++) {
		char name[16];
		int fd;

		snprintf(name, sizeof(name), "w%d", i);
		fd = node_dir_fd(ws[i]);
		assert_true(fd >= 0);
		assert_int_equal(fstatat(dfd(gpt), name, &st, 0), 0);
		assert_true(fd_is(fd, &st));
		node_dir_fd_release(ws[i], fd);
	}
	for (int i = 0; i < 5; i++)
		node_put(ws[i]);
	node_put(gpt);
	assert_int_equal(node_fd_cache_count(), 0);
}

/* A workspace evicted, then moved (its parent renamed, then itself moved
 * to another model): reopened from where it is now. */
static void evicted_directory_reopens_after_a_rename(void **state)
{
	struct fixture *fx = *state;
	struct node *gpt, *llama, *a, *b, *c;
	struct stat st;
	int fd;

	make_dirs(fx->fd, "openai/us/gpt-4o/a/b/c");
	gpt = walk(pfs.root, "openai/us/gpt-4o");
	llama = walk(pfs.root, "local/localhost/llama3.2");
	a = child(gpt, "a");
	b = child(a, "b");
	c = child(b, "c");
	dfd(c);
	evict_all();
	assert_int_equal(a->fd, -1);
	assert_int_equal(c->fd, -1);

	do_rename(gpt, "a", gpt, "a2", 0);
	evict_all();
	fd = node_dir_fd(c);
	assert_true(fd >= 0);
	assert_int_equal(fstatat(fx->fd, "openai/us/gpt-4o/a2/b/c", &st, 0), 0);
	assert_true(fd_is(fd, &st));
	node_dir_fd_release(c, fd);

	do_rename(a, "b", llama, "b2", 0);
	evict_all();
	fd = node_dir_fd(c);
	assert_true(fd >= 0);
	assert_int_equal(fstatat(fx->fd, "local/localhost/llama3.2/b2/c", &st, 0), 0);
	assert_true(fd_is(fd, &st));
	node_dir_fd_release(c, fd);
	assert_ptr_equal(node_deployment(c), LLAMA);

	node_put(c);
	node_put(b);
	node_put(a);
	node_put(llama);
	node_put(gpt);
}

/* A directory removed while its descriptor was closed gives an error,
 * never another directory: removed through the table (ENOENT), removed
 * behind its back (ENOENT), or replaced by another directory of the
 * same name (ESTALE). */
static void evicted_directory_removed_is_an_error(void **state)
{
	struct fixture *fx = *state;
	struct node *gpt, *x, *y, *z;
	struct stat st;

	make_dirs(fx->fd, "openai/us/gpt-4o/x");
	make_dirs(fx->fd, "openai/us/gpt-4o/y");
	make_dirs(fx->fd, "openai/us/gpt-4o/z");
	gpt = walk(pfs.root, "openai/us/gpt-4o");
	x = child(gpt, "x");
	y = child(gpt, "y");
	z = child(gpt, "z");
	dfd(x);
	dfd(y);
	dfd(z);
	evict_all();

	assert_int_equal(fstatat(dfd(gpt), "x", &st, 0), 0);
	assert_int_equal(unlinkat(dfd(gpt), "x", AT_REMOVEDIR), 0);
	node_directory_removed(&st);
	assert_int_equal(node_dir_fd(x), -ENOENT);

	assert_int_equal(unlinkat(dfd(gpt), "y", AT_REMOVEDIR), 0);
	assert_int_equal(node_dir_fd(y), -ENOENT);

	/* made while the old z still exists, so it cannot reuse its inode
	 * number (a file system may hand a freed one out again at once) */
	make_dirs(fx->fd, "openai/us/gpt-4o/z-new");
	assert_int_equal(unlinkat(dfd(gpt), "z", AT_REMOVEDIR), 0);
	assert_int_equal(renameat(dfd(gpt), "z-new", dfd(gpt), "z"), 0);
	assert_int_equal(node_dir_fd(z), -ESTALE);

	node_put(z);
	node_put(y);
	node_put(x);
	node_put(gpt);
}

/* No descriptor to be had: the cache gives up its unused ones and tries
 * again, and says EMFILE when there is none to give. */
static void descriptor_shortage_is_emfile(void **state)
{
	struct fixture *fx = *state;
	struct node *gpt, *p, *q;
	struct rlimit old, low;
	int fds[256], n = 0, fd;

	make_dirs(fx->fd, "openai/us/gpt-4o/p");
	make_dirs(fx->fd, "openai/us/gpt-4o/q");
	gpt = walk(pfs.root, "openai/us/gpt-4o");
	p = child(gpt, "p");
	q = child(gpt, "q");
	node_fd_cache_set_limit(1);
	dfd(p);
	assert_true(p->fd >= 0);
	assert_int_equal(getrlimit(RLIMIT_NOFILE, &old), 0);
	low = old;
	low.rlim_cur = 64;
	assert_int_equal(setrlimit(RLIMIT_NOFILE, &low), 0);
	while (n < 256 && (fd = dup(0)) >= 0)
		fds[n++] = fd;
	assert_int_equal(errno, EMFILE);

	/* p's cached descriptor is given up for q's */
	fd = node_dir_fd(q);
	assert_true(fd >= 0);
	assert_int_equal(p->fd, -1);
	/* and with q's borrowed, p cannot have one */
	assert_int_equal(node_dir_fd(p), -EMFILE);
	node_dir_fd_release(q, fd);

	while (n > 0)
		close(fds[--n]);
	assert_int_equal(setrlimit(RLIMIT_NOFILE, &old), 0);
	node_put(q);
	node_put(p);
	node_put(gpt);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(structure_from_the_config, setup, teardown),
		cmocka_unit_test_setup_teardown(children_are_found_by_identity, setup, teardown),
		cmocka_unit_test_setup_teardown(kernel_references_keep_a_node, setup, teardown),
		cmocka_unit_test_setup_teardown(file_rename_moves_its_node, setup, teardown),
		cmocka_unit_test_setup_teardown(file_unlink_forgets_its_name, setup, teardown),
		cmocka_unit_test_setup_teardown(the_table_grows_and_still_finds_every_node, setup,
						teardown),
		cmocka_unit_test_setup_teardown(file_found_by_name_without_creating, setup,
						teardown),
		cmocka_unit_test_setup_teardown(directory_rename_moves_it_and_its_reference, setup,
						teardown),
		cmocka_unit_test_setup_teardown(directory_rename_onto_an_empty_directory, setup,
						teardown),
		cmocka_unit_test_setup_teardown(directory_exchange_swaps_places, setup, teardown),
		cmocka_unit_test_setup_teardown(deployment_of_a_workspace_three_deep, setup,
						teardown),
		cmocka_unit_test_setup_teardown(ancestry_from_the_root_down, setup, teardown),
		cmocka_unit_test_setup_teardown(paths_from_the_mount_root, setup, teardown),
		cmocka_unit_test_setup_teardown(removed_directory_is_retired, setup, teardown),
		cmocka_unit_test_setup_teardown(removed_nodes_still_held_are_freed_at_the_end,
						setup, teardown),
		cmocka_unit_test_setup_teardown(stale_directory_node_is_replaced, setup, teardown),
		cmocka_unit_test_setup_teardown(descriptor_cache_evicts_the_least_recently_used,
						setup, teardown),
		cmocka_unit_test_setup_teardown(evicted_directory_reopens_after_a_rename, setup,
						teardown),
		cmocka_unit_test_setup_teardown(evicted_directory_removed_is_an_error, setup,
						teardown),
		cmocka_unit_test_setup_teardown(descriptor_shortage_is_emfile, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
