/* Directory policies in state_dir and in memory (see policy_store.h). */
#include "fs/policy_store.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fs/log.h"
#include "fs/promptfs.h"
#include "fs/state.h"

#define STORE_BUCKETS 1024
/* deeper paths than this compose in two passes (node_ancestry's rule) */
#define CHAIN_ON_STACK 32

/* One directory's own policy as read from its `.policy`. */
struct kept {
	dev_t dev;
	ino_t ino;
	struct policy policy;
	struct kept *next;
};

/* Guards the table, and makes a read of `.policy` and its replacement
 * one step each: policy changes are rare, reads copy out. */
static pthread_mutex_t store_lock = PTHREAD_MUTEX_INITIALIZER;
static struct kept *table[STORE_BUCKETS];

void policy_store_destroy(void)
{
	pthread_mutex_lock(&store_lock);
	for (size_t b = 0; b < STORE_BUCKETS; b++) {
		while (table[b]) {
			struct kept *k = table[b];

			table[b] = k->next;
			policy_release(&k->policy);
			free(k);
		}
	}
	pthread_mutex_unlock(&store_lock);
}

static size_t bucket_of(dev_t dev, ino_t ino)
{
	return (size_t)(((uint64_t)dev * 0x9e3779b97f4a7c15ull) ^ (uint64_t)ino) % STORE_BUCKETS;
}

static struct kept *find_locked(dev_t dev, ino_t ino)
{
	struct kept *k = table[bucket_of(dev, ino)];

	while (k && !(k->dev == dev && k->ino == ino))
		k = k->next;
	return k;
}

/* Reads DIR's `.policy` into P. A file that does not parse (edited in
 * state_dir by hand) is logged and refuses everything: a policy that
 * cannot be read must not open what it was there to close. */
static int read_policy_file(struct node *dir, struct policy *p)
{
	char *text = NULL, err[256];
	int fd, rc, dir_fd = node_dir_fd(dir);
	struct stat st;
	ssize_t n;

	memset(p, 0, sizeof(*p));
	if (dir_fd < 0)
		return dir_fd;
	fd = openat(dir_fd, POLICY_FILE, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	node_dir_fd_release(dir, dir_fd);
	if (fd < 0)
		return errno == ENOENT ? 0 : -errno;
	rc = fstat(fd, &st) < 0 ? -errno : 0;
	if (rc == 0 && st.st_size > POLICY_FILE_MAX)
		rc = -EFBIG;
	if (rc == 0 && !(text = malloc((size_t)st.st_size + 1)))
		rc = -ENOMEM;
	if (rc == 0) {
		n = pread(fd, text, (size_t)st.st_size, 0);
		rc = n == st.st_size ? 0 : n < 0 ? -errno : -EIO;
	}
	close(fd);
	if (rc == 0)
		rc = policy_parse(text, (size_t)st.st_size, p, err, sizeof(err));
	free(text);
	if (rc == -EINVAL || rc == -EFBIG) {
		log_error("a .policy in state_dir does not parse (%s); it allows nothing",
			  rc == -EINVAL ? err : "too large");
		memset(p, 0, sizeof(*p));
		p->set = POLICY_BIT(POLICY_PROVIDERS); /* an empty list: nothing */
		rc = 0;
	}
	return rc;
}

/* DIR's kept policy, read first if need be. Under store_lock. */
static int kept_locked(struct node *dir, struct kept **out)
{
	struct kept *k = find_locked(dir->dev, dir->ino);
	size_t b;
	int rc;

	if (k) {
		*out = k;
		return 0;
	}
	k = calloc(1, sizeof(*k));
	if (!k)
		return -ENOMEM;
	rc = read_policy_file(dir, &k->policy);
	if (rc < 0) {
		free(k);
		return rc;
	}
	k->dev = dir->dev;
	k->ino = dir->ino;
	b = bucket_of(k->dev, k->ino);
	k->next = table[b];
	table[b] = k;
	*out = k;
	return 0;
}

int policy_store_own(struct node *dir, struct policy *out)
{
	struct kept *k;
	int rc;

	memset(out, 0, sizeof(*out));
	if (dir->kind == NODE_FILE)
		return -ENOTDIR;
	pthread_mutex_lock(&store_lock);
	rc = kept_locked(dir, &k);
	if (rc == 0)
		rc = policy_copy(out, &k->policy);
	pthread_mutex_unlock(&store_lock);
	return rc;
}

/* Says in the log which names a policy gives that nothing configured
 * has: a site-wide policy may outlive a config change, so it is no
 * error, but a typo should be visible. */
static void note_unknown_names(const struct policy *p)
{
	const struct config *cfg = pfs.config;

	for (size_t i = 0; (p->set & POLICY_BIT(POLICY_PROVIDERS)) && i < p->providers.n; i++) {
		const char *name = p->providers.names[i];
		int known = 0;

		for (size_t c = 0; c < cfg->n_clouds && !known; c++)
			known = strcmp(cfg->clouds[c].name, name) == 0;
		if (!known)
			log_info("policy: providers names %s, which is no configured cloud", name);
	}
	for (size_t i = 0; (p->set & POLICY_BIT(POLICY_RESIDENCY)) && i < p->residency.n; i++) {
		const char *tag = p->residency.names[i];
		int known = 0;

		for (size_t c = 0; c < cfg->n_clouds && !known; c++) {
			const struct cloud *cloud = &cfg->clouds[c];

			for (size_t r = 0; r < cloud->n_regions && !known; r++)
				for (size_t g = 0; g < cloud->regions[r].n_geo && !known; g++)
					known = strcmp(cloud->regions[r].geo[g], tag) == 0;
		}
		if (!known)
			log_info("policy: residency names %s, which no configured region has", tag);
	}
}

/* Writes P as DIR's `.policy` (or removes it), durably. */
static int write_policy_file(struct node *dir, const struct policy *p)
{
	char *text = p->set ? policy_to_json(p) : NULL;
	int rc, dir_fd;

	if (p->set && !text)
		return -ENOMEM;
	dir_fd = node_dir_fd(dir);
	rc = dir_fd < 0 ? dir_fd : 0;
	if (rc == 0 && text)
		rc = state_write_file(dir_fd, POLICY_FILE, text, strlen(text), POLICY_FILE_MODE,
				      getuid(), getgid(), STATE_DURABLE);
	else if (rc == 0 && unlinkat(dir_fd, POLICY_FILE, 0) < 0 && errno != ENOENT)
		rc = -errno;
	/* the name itself must survive a crash too */
	if (rc == 0)
		rc = state_sync_dir(dir_fd);
	node_dir_fd_release(dir, dir_fd);
	free(text);
	return rc;
}

int policy_store_replace(struct node *dir, const struct policy *p)
{
	struct policy copy;
	struct kept *k;
	int rc;

	if (dir->kind == NODE_FILE)
		return -ENOTDIR;
	rc = policy_copy(&copy, p);
	if (rc < 0)
		return rc;
	pthread_mutex_lock(&store_lock);
	rc = kept_locked(dir, &k);
	if (rc == 0)
		rc = write_policy_file(dir, p);
	if (rc == 0) {
		policy_release(&k->policy);
		k->policy = copy;
		memset(&copy, 0, sizeof(copy));
	}
	pthread_mutex_unlock(&store_lock);
	policy_release(&copy);
	if (rc == 0)
		note_unknown_names(p);
	return rc;
}

/* A directory's ancestry, root first, each node referenced. */
struct chain {
	struct node *on_stack[CHAIN_ON_STACK];
	struct node **nodes;
	size_t n;
};

static int chain_get(struct node *dir, struct chain *c)
{
	c->nodes = c->on_stack;
	c->n = node_ancestry(dir, c->on_stack, CHAIN_ON_STACK);
	if (c->n <= CHAIN_ON_STACK)
		return 0;
	c->nodes = calloc(c->n, sizeof(*c->nodes));
	if (!c->nodes || node_ancestry(dir, c->nodes, c->n) != c->n) {
		/* a rename made the path deeper meanwhile: rare enough to
		 * report instead of chasing */
		free(c->nodes);
		c->nodes = NULL;
		c->n = 0;
		return -EAGAIN;
	}
	return 0;
}

static void chain_put(struct chain *c)
{
	node_put_all(c->nodes, c->n);
	if (c->nodes != c->on_stack)
		free(c->nodes);
}

int policy_store_effective(struct node *dir, struct effective_policy *out)
{
	const struct policy *on_stack[CHAIN_ON_STACK], **policies = on_stack;
	struct chain c;
	int rc;

	memset(out, 0, sizeof(*out));
	rc = chain_get(dir, &c);
	if (rc < 0)
		return rc;
	if (c.n > CHAIN_ON_STACK && !(policies = calloc(c.n, sizeof(*policies))))
		rc = -ENOMEM;
	pthread_mutex_lock(&store_lock);
	for (size_t i = 0; i < c.n && rc == 0; i++) {
		struct kept *k;

		rc = kept_locked(c.nodes[i], &k);
		if (rc == 0)
			policies[i] = &k->policy;
	}
	/* fallback defaults to true in the routed view */
	if (rc == 0)
		rc = policy_compose(policies, c.n, c.n > 1 && c.nodes[1]->kind == NODE_ANY, out);
	pthread_mutex_unlock(&store_lock);
	/* the same chain's directories, for the ledger's accounts */
	if (rc == 0 && !(out->dirs = calloc(c.n, sizeof(*out->dirs))))
		rc = -ENOMEM;
	for (size_t i = 0; rc == 0 && i < c.n; i++)
		out->dirs[i] = (uint64_t)c.nodes[i]->ino;
	if (rc == 0)
		out->n_dirs = c.n;
	else
		effective_release(out);
	if (policies != on_stack)
		free(policies);
	chain_put(&c);
	return rc;
}

/* "MOUNTPOINT/PATH/.policy" of DIR into BUF. */
static void policy_file_path(struct node *dir, char *buf, size_t size)
{
	char path[4096];

	if (node_path(dir, path, sizeof(path)) < 0)
		snprintf(path, sizeof(path), "/?");
	/* a path too long for a sentence is cut: it only names the place */
	if (snprintf(buf, size, "%s%s%s", pfs.opts->mountpoint, strcmp(path, "/") ? path : "",
		     "/" POLICY_FILE) >= (int)size &&
	    size > 4)
		memcpy(buf + size - 4, "...", 4);
}

static int list_has(const struct policy_list *l, const char *name)
{
	for (size_t i = 0; i < l->n; i++)
		if (strcmp(l->names[i], name) == 0)
			return 1;
	return 0;
}

/* Whether MODEL's region has one of the tags in L. */
static int residency_allows(const struct policy_list *l, const struct model *model)
{
	for (size_t g = 0; g < model->region->n_geo; g++)
		if (list_has(l, model->region->geo[g]))
			return 1;
	return 0;
}

int policy_store_check_deployment(struct node *dir, const struct model *model, char *why,
				  size_t size)
{
	struct chain c;
	int rc = chain_get(dir, &c);

	pthread_mutex_lock(&store_lock);
	for (size_t i = 0; i < c.n && rc == 0; i++) {
		const struct policy *p;
		struct kept *k;
		char where[512];

		rc = kept_locked(c.nodes[i], &k);
		if (rc < 0)
			break;
		p = &k->policy;
		if ((p->set & POLICY_BIT(POLICY_PROVIDERS)) &&
		    !list_has(&p->providers, model->region->cloud->name)) {
			policy_file_path(c.nodes[i], where, sizeof(where));
			snprintf(why, size,
				 "refused by %s: providers does not include %s, the cloud of "
				 "%s/%s/%s",
				 where, model->region->cloud->name, model->region->cloud->name,
				 model->region->name, model->name);
			rc = -EACCES;
		} else if ((p->set & POLICY_BIT(POLICY_RESIDENCY)) &&
			   !residency_allows(&p->residency, model)) {
			policy_file_path(c.nodes[i], where, sizeof(where));
			snprintf(why, size,
				 "refused by %s: residency does not include a geo tag of region "
				 "%s/%s",
				 where, model->region->cloud->name, model->region->name);
			rc = -EACCES;
		}
	}
	pthread_mutex_unlock(&store_lock);
	chain_put(&c);
	return rc;
}

void policy_store_level_file(struct node *dir, size_t level, char *buf, size_t size)
{
	struct chain c;

	snprintf(buf, size, "?");
	if (chain_get(dir, &c) < 0)
		return;
	if (level < c.n)
		policy_file_path(c.nodes[level], buf, size);
	chain_put(&c);
}

void policy_store_deciding_file(struct node *dir, enum policy_key key, char *buf, size_t size)
{
	struct chain c;
	int found = 0;

	snprintf(buf, size, "?");
	if (chain_get(dir, &c) < 0)
		return;
	pthread_mutex_lock(&store_lock);
	/* the nearest level that sets KEY: the smallest cap is at or above
	 * it, and a preference is its */
	for (size_t i = c.n; !found && i-- > 0;) {
		struct kept *k;

		if (kept_locked(c.nodes[i], &k) == 0 && (k->policy.set & POLICY_BIT(key))) {
			policy_file_path(c.nodes[i], buf, size);
			found = 1;
		}
	}
	pthread_mutex_unlock(&store_lock);
	chain_put(&c);
}

void policy_store_forget(dev_t dev, ino_t ino)
{
	struct kept **pp, *k;

	pthread_mutex_lock(&store_lock);
	pp = &table[bucket_of(dev, ino)];
	while (*pp && !((*pp)->dev == dev && (*pp)->ino == ino))
		pp = &(*pp)->next;
	k = *pp;
	if (k)
		*pp = k->next;
	pthread_mutex_unlock(&store_lock);
	if (k) {
		policy_release(&k->policy);
		free(k);
	}
}
