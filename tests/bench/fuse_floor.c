/* The FUSE floor of tests/bench/peer.sh: the cheapest file system that
 * answers loadgen's round trip, to measure what the kernel's FUSE protocol
 * alone costs on this machine. It keeps everything in memory, sends
 * nothing anywhere and makes nothing durable: closing a written NAME.prompt
 * makes NAME.response hold a fixed answer at once. What the kernel sees is
 * what promptfs shows it -- default_permissions, the same entry and
 * attribute timeouts, direct_io on prompts and responses, no FLUSH for a
 * response, 64 worker threads -- so it receives the same requests per
 * round trip, and its rate is a ceiling no FUSE file system doing that
 * round trip exceeds here.
 *
 *   fuse_floor ANSWER MOUNTPOINT
 *
 * Runs in the foreground until unmounted (fusermount3 -u MOUNTPOINT).
 * Built by peer.sh with cc -O2 -pthread and libfuse3; not part of the
 * meson build, not a part of promptfs. */
#define FUSE_USE_VERSION 314
#define _GNU_SOURCE
#include <errno.h>
#include <fuse_lowlevel.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define CACHE_TIMEOUT 1.0
#define LIVE_TIMEOUT 0.1
#define BUCKETS (1u << 20)

struct inode {
	fuse_ino_t ino, parent;
	char *name;
	mode_t mode;
	uid_t uid;
	gid_t gid;
	char *data;
	size_t size;
	struct inode *next_in_bucket;
};

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static struct inode **by_ino; /* index: ino */
static size_t n_inodes, cap_inodes;
static struct inode *buckets[BUCKETS];
static const char *answer;

static size_t bucket_of(fuse_ino_t parent, const char *name)
{
	uint64_t h = parent * 0x9e3779b97f4a7c15ull;

	for (const unsigned char *p = (const unsigned char *)name; *p; p++)
		h = (h ^ *p) * 0x100000001b3ull;
	return (size_t)(h >> 11) % BUCKETS;
}

static struct inode *find_locked(fuse_ino_t parent, const char *name)
{
	for (struct inode *n = buckets[bucket_of(parent, name)]; n; n = n->next_in_bucket)
		if (n->parent == parent && strcmp(n->name, name) == 0)
			return n;
	return NULL;
}

static struct inode *add_locked(fuse_ino_t parent, const char *name, mode_t mode, uid_t uid,
				gid_t gid)
{
	struct inode *n = calloc(1, sizeof(*n));
	size_t b = bucket_of(parent, name);

	if (!n)
		return NULL;
	if (n_inodes == cap_inodes) {
		size_t cap = cap_inodes ? cap_inodes * 2 : 1024;
		struct inode **grown = realloc(by_ino, cap * sizeof(*grown));

		if (!grown) {
			free(n);
			return NULL;
		}
		by_ino = grown;
		cap_inodes = cap;
	}
	if (n_inodes == 0)
		by_ino[n_inodes++] = NULL; /* no inode 0 */
	n->ino = n_inodes;
	by_ino[n_inodes++] = n;
	n->parent = parent;
	n->name = strdup(name);
	n->mode = mode;
	n->uid = uid;
	n->gid = gid;
	n->next_in_bucket = buckets[b];
	buckets[b] = n;
	return n;
}

static struct inode *get_locked(fuse_ino_t ino)
{
	return ino < n_inodes ? by_ino[ino] : NULL;
}

static void fill_stat(const struct inode *n, struct stat *st)
{
	memset(st, 0, sizeof(*st));
	st->st_ino = n->ino;
	st->st_mode = n->mode;
	st->st_nlink = S_ISDIR(n->mode) ? 2 : 1;
	st->st_uid = n->uid;
	st->st_gid = n->gid;
	st->st_size = (off_t)n->size;
}

static int ends_with(const char *name, const char *suffix)
{
	size_t a = strlen(name), b = strlen(suffix);

	return a > b && strcmp(name + a - b, suffix) == 0;
}

static double timeout_for(const struct inode *n)
{
	return ends_with(n->name, ".response") ? LIVE_TIMEOUT : CACHE_TIMEOUT;
}

static void reply_entry_locked(fuse_req_t req, const struct inode *n)
{
	struct fuse_entry_param e = { .ino = n->ino, .generation = 1 };

	fill_stat(n, &e.attr);
	e.attr_timeout = timeout_for(n);
	e.entry_timeout = CACHE_TIMEOUT;
	pthread_mutex_unlock(&lock);
	fuse_reply_entry(req, &e);
}

static void op_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct inode *n;

	pthread_mutex_lock(&lock);
	n = find_locked(parent, name);
	if (!n) {
		pthread_mutex_unlock(&lock);
		fuse_reply_err(req, ENOENT);
		return;
	}
	reply_entry_locked(req, n);
}

static void op_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct inode *n;
	struct stat st;
	double timeout;

	(void)fi;
	pthread_mutex_lock(&lock);
	n = get_locked(ino);
	if (!n) {
		pthread_mutex_unlock(&lock);
		fuse_reply_err(req, ENOENT);
		return;
	}
	fill_stat(n, &st);
	timeout = timeout_for(n);
	pthread_mutex_unlock(&lock);
	fuse_reply_attr(req, &st, timeout);
}

static void make(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
		 struct fuse_file_info *fi)
{
	const struct fuse_ctx *ctx = fuse_req_ctx(req);
	struct fuse_entry_param e = { .generation = 1 };
	struct inode *n;

	pthread_mutex_lock(&lock);
	if (find_locked(parent, name)) {
		pthread_mutex_unlock(&lock);
		fuse_reply_err(req, EEXIST);
		return;
	}
	n = add_locked(parent, name, mode & ~ctx->umask, ctx->uid, ctx->gid);
	if (!n) {
		pthread_mutex_unlock(&lock);
		fuse_reply_err(req, ENOMEM);
		return;
	}
	e.ino = n->ino;
	fill_stat(n, &e.attr);
	e.attr_timeout = timeout_for(n);
	e.entry_timeout = CACHE_TIMEOUT;
	pthread_mutex_unlock(&lock);
	if (fi) {
		fi->direct_io = 1;
		fi->fh = 1; /* written: its close makes the answer */
		fuse_reply_create(req, &e, fi);
	} else {
		fuse_reply_entry(req, &e);
	}
}

static void op_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode)
{
	make(req, parent, name, S_IFDIR | mode, NULL);
}

static void op_create(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
		      struct fuse_file_info *fi)
{
	make(req, parent, name, S_IFREG | mode, fi);
}

static void op_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	fi->direct_io = 1;
	fi->noflush = (fi->flags & O_ACCMODE) == O_RDONLY;
	fi->fh = (fi->flags & O_ACCMODE) != O_RDONLY;
	(void)ino;
	fuse_reply_open(req, fi);
}

static void op_write(fuse_req_t req, fuse_ino_t ino, const char *buf, size_t size, off_t off,
		     struct fuse_file_info *fi)
{
	struct inode *n;
	char *grown;

	(void)fi;
	pthread_mutex_lock(&lock);
	n = get_locked(ino);
	grown = n ? realloc(n->data, (size_t)off + size) : NULL;
	if (!grown) {
		pthread_mutex_unlock(&lock);
		fuse_reply_err(req, n ? ENOMEM : ENOENT);
		return;
	}
	memcpy(grown + off, buf, size);
	n->data = grown;
	if ((size_t)off + size > n->size)
		n->size = (size_t)off + size;
	pthread_mutex_unlock(&lock);
	fuse_reply_write(req, size);
}

/* A written NAME.prompt's close: NAME.response gets the answer. */
static void op_flush(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct inode *n;

	pthread_mutex_lock(&lock);
	n = get_locked(ino);
	if (n && fi->fh && ends_with(n->name, ".prompt")) {
		size_t len = strlen(n->name) - strlen(".prompt");
		char *name = malloc(len + sizeof(".response"));
		struct inode *r;

		if (name) {
			memcpy(name, n->name, len);
			strcpy(name + len, ".response");
			r = find_locked(n->parent, name);
			if (!r)
				r = add_locked(n->parent, name, S_IFREG | 0644, n->uid, n->gid);
			if (r) {
				free(r->data);
				r->data = strdup(answer);
				r->size = strlen(answer);
			}
			free(name);
		}
	}
	pthread_mutex_unlock(&lock);
	fuse_reply_err(req, 0);
}

static void op_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	(void)ino;
	(void)fi;
	fuse_reply_err(req, 0);
}

static void op_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		    struct fuse_file_info *fi)
{
	struct inode *n;
	char buf[4096];
	size_t len = 0;

	(void)fi;
	pthread_mutex_lock(&lock);
	n = get_locked(ino);
	if (n && (size_t)off < n->size) {
		len = n->size - (size_t)off;
		if (len > size)
			len = size;
		if (len > sizeof(buf))
			len = sizeof(buf);
		memcpy(buf, n->data + off, len);
	}
	pthread_mutex_unlock(&lock);
	fuse_reply_buf(req, buf, len);
}

static const struct fuse_lowlevel_ops ops = {
	.lookup = op_lookup,
	.getattr = op_getattr,
	.mkdir = op_mkdir,
	.create = op_create,
	.open = op_open,
	.write = op_write,
	.flush = op_flush,
	.release = op_release,
	.read = op_read,
};

int main(int argc, char **argv)
{
	char *fuse_argv[] = { argv[0], "-o", "default_permissions,fsname=fuse_floor", NULL };
	struct fuse_args args = FUSE_ARGS_INIT(3, fuse_argv);
	struct fuse_loop_config *loop;
	struct fuse_session *se;
	int rc = 1;

	if (argc != 3) {
		fprintf(stderr, "usage: fuse_floor ANSWER MOUNTPOINT\n");
		return 2;
	}
	answer = argv[1];
	pthread_mutex_lock(&lock);
	add_locked(0, "", S_IFDIR | 0777, 0, 0); /* the root: inode 1 */
	pthread_mutex_unlock(&lock);
	se = fuse_session_new(&args, &ops, sizeof(ops), NULL);
	if (!se)
		return 1;
	if (fuse_session_mount(se, argv[2]) == 0) {
		loop = fuse_loop_cfg_create();
		fuse_loop_cfg_set_max_threads(loop, 64);
		fuse_loop_cfg_set_idle_threads(loop, 64);
		rc = fuse_session_loop_mt(se, loop) == 0 ? 0 : 1;
		fuse_loop_cfg_destroy(loop);
		fuse_session_unmount(se);
	}
	fuse_session_destroy(se);
	return rc;
}
