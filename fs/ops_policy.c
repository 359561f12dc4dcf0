/* `.policy` through the mount (SPEC §6.1): anyone may read it; an admin
 * may write it, and the close() checks the whole text and makes it the
 * directory's policy (EINVAL, and the old one stays, when it does not
 * parse). Writes go to memory until then, so the file never holds text
 * that is not in force. Whatever was written, the file then holds the
 * policy's canonical text, the same data as the user.policy.* xattrs. */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fs/log.h"
#include "fs/ops_internal.h"
#include "fs/policy_store.h"
#include "fs/state.h"

int ops_name_is_policy(const char *name)
{
	return strcmp(name, POLICY_FILE) == 0;
}

/* The backing `.policy` of DIR, made empty if there is none, so the
 * kernel has a file to open; the close() that stores nothing removes
 * it again. */
int ops_policy_backing(struct node *dir)
{
	int dir_fd = node_dir_fd(dir), fd;

	if (dir_fd < 0)
		return dir_fd;
	fd = openat(dir_fd, POLICY_FILE, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0 && errno == ENOENT)
		fd = state_create_file(dir_fd, POLICY_FILE, "", 0, POLICY_FILE_MODE, getuid(),
				       getgid());
	else if (fd < 0)
		fd = -errno;
	node_dir_fd_release(dir, dir_fd);
	return fd;
}

int ops_policy_open(struct handle *h, int truncate)
{
	ssize_t n;

	h->kind = HANDLE_POLICY;
	h->policy_text = malloc(POLICY_FILE_MAX);
	if (!h->policy_text)
		return -ENOMEM;
	h->policy_len = 0;
	/* emptied but not written: the policy goes at the last close
	 * (ops_policy_release), not at the close of a duplicate that a
	 * shell makes before it writes */
	h->policy_emptied = truncate;
	if (truncate)
		return 0;
	n = pread(h->fd, h->policy_text, POLICY_FILE_MAX, 0);
	if (n < 0)
		return -errno;
	h->policy_len = (size_t)n;
	return 0;
}

int ops_policy_write(struct handle *h, const char *buf, size_t size, off_t off)
{
	if (off < 0 || (size_t)off > POLICY_FILE_MAX || size > POLICY_FILE_MAX - (size_t)off) {
		/* a policy not stored whole is never applied, nor emptied */
		h->write_error = EFBIG;
		h->policy_emptied = 0;
		return -EFBIG;
	}
	if ((size_t)off > h->policy_len)
		memset(h->policy_text + h->policy_len, 0, (size_t)off - h->policy_len);
	memcpy(h->policy_text + off, buf, size);
	h->policy_emptied = 0;
	if ((size_t)off + size > h->policy_len)
		h->policy_len = (size_t)off + size;
	h->dirty = 1;
	return (int)size;
}

int ops_policy_truncate(struct handle *h, off_t size)
{
	if (size < 0 || (size_t)size > POLICY_FILE_MAX)
		return -EFBIG;
	if ((size_t)size > h->policy_len)
		memset(h->policy_text + h->policy_len, 0, (size_t)size - h->policy_len);
	h->policy_len = (size_t)size;
	if (size == 0 && !h->dirty)
		h->policy_emptied = 1;
	else
		h->dirty = 1;
	return 0;
}

void ops_policy_release(struct handle *h)
{
	struct policy none = { 0 };
	struct node *dir;
	char *name;

	if (!h->policy_emptied || node_file_location(h->node, &dir, &name) < 0)
		return;
	/* `: > .policy`: no policy here any more */
	if (policy_store_replace(dir, &none) < 0)
		log_error("cannot remove a policy emptied by a write");
	free(name);
	node_put(dir);
}

int ops_policy_close(struct handle *h, struct node *dir)
{
	struct policy p, old;
	char reason[256];
	int rc;

	if (h->write_error) {
		h->dirty = 0;
		return -h->write_error;
	}
	if (!h->dirty)
		return 0;
	h->dirty = 0;
	rc = policy_parse(h->policy_text, h->policy_len, &p, reason, sizeof(reason));
	if (rc == -EINVAL) {
		log_info("policy refused: %s", reason);
		/* the old policy stays, and so does its file (or its absence) */
		if (policy_store_own(dir, &old) == 0)
			policy_store_replace(dir, &old);
		policy_release(&old);
		return rc;
	}
	if (rc == 0)
		rc = policy_store_replace(dir, &p);
	policy_release(&p);
	return rc;
}
