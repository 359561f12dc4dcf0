/* Extended attributes (SPEC §6.3): a directory's own policy key by key
 * as user.policy.KEY, the policy in force as user.effective.KEY
 * (read-only). Nothing else is stored: other user.* names are ENODATA,
 * and setting them ENOTSUP. The other namespaces (security.*, system.*
 * ACLs, trusted.*) are not supported at all: ENOTSUP, which tells `ls
 * -l` (it asks for security.selinux and system.posix_acl_access of
 * every file) to stop asking on this file system, where ENODATA would
 * cost a request per file and per listing. (Only ENOSYS would make the
 * kernel itself stop asking, for every name: user.policy.* too.) */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/xattr.h>

#include "fs/log.h"
#include "fs/ops_internal.h"
#include "fs/policy_store.h"

#define MAX_GROUPS 256

/* Whether the requester may change policies: root, admin_uid, or a
 * member of admin_gid (its primary or a supplementary group). */
int ops_is_policy_admin(fuse_req_t req)
{
	const struct fuse_ctx *ctx = fuse_req_ctx(req);
	gid_t groups[MAX_GROUPS];
	int n;

	if (ctx->uid == 0 || (pfs.opts->admin_uid >= 0 && ctx->uid == (uid_t)pfs.opts->admin_uid))
		return 1;
	if (pfs.opts->admin_gid < 0)
		return 0;
	if (ctx->gid == (gid_t)pfs.opts->admin_gid)
		return 1;
	n = fuse_req_getgroups(req, MAX_GROUPS, groups);
	for (int i = 0; i < n && i < MAX_GROUPS; i++)
		if (groups[i] == (gid_t)pfs.opts->admin_gid)
			return 1;
	return 0;
}

/* The key of NAME under PREFIX, or -ENODATA when NAME is not one. */
static int key_under(const char *name, const char *prefix)
{
	size_t n = strlen(prefix);

	if (strncmp(name, prefix, n) != 0)
		return -ENODATA;
	return policy_key_from_name(name + n);
}

static void reply_value(fuse_req_t req, const char *value, size_t size)
{
	size_t len = strlen(value);

	if (size == 0)
		fuse_reply_xattr(req, len);
	else if (size < len)
		fuse_reply_err(req, ERANGE);
	else
		fuse_reply_buf(req, value, len);
}

static int user_namespace(const char *name)
{
	return strncmp(name, "user.", 5) == 0;
}

void ops_getxattr(fuse_req_t req, fuse_ino_t ino, const char *name, size_t size)
{
	struct node *dir = node_from_ino(ino);
	struct effective_policy eff;
	struct policy own;
	char *value = NULL;
	int key, rc;

	if (!user_namespace(name)) {
		fuse_reply_err(req, ENOTSUP);
		return;
	}
	if (dir->kind == NODE_FILE) {
		fuse_reply_err(req, ENODATA);
		return;
	}
	if ((key = key_under(name, POLICY_XATTR_PREFIX)) >= 0) {
		rc = policy_store_own(dir, &own);
		if (rc == 0)
			rc = policy_get_value(&own, (enum policy_key)key, &value);
		policy_release(&own);
	} else if ((key = key_under(name, EFFECTIVE_XATTR_PREFIX)) >= 0) {
		rc = policy_store_effective(dir, &eff);
		if (rc == 0)
			rc = effective_get_value(&eff, (enum policy_key)key, &value);
		effective_release(&eff);
	} else {
		rc = -ENODATA; /* another user.* name */
	}
	if (rc < 0)
		fuse_reply_err(req, rc == -EINVAL ? ENODATA : -rc);
	else
		reply_value(req, value, size);
	free(value);
}

void ops_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size)
{
	struct node *dir = node_from_ino(ino);
	struct policy own;
	char *buf = NULL;
	ssize_t len = 0;
	int rc = 0;

	if (dir->kind != NODE_FILE) {
		rc = policy_store_own(dir, &own);
		if (rc == 0)
			len = policy_list_keys(&own, NULL, 0);
		if (rc == 0 && len > 0 && size >= (size_t)len && !(buf = malloc((size_t)len)))
			rc = -ENOMEM;
		if (rc == 0 && buf)
			len = policy_list_keys(&own, buf, (size_t)len);
		policy_release(&own);
	}
	if (rc == 0 && len < 0)
		rc = (int)len;
	if (rc < 0)
		fuse_reply_err(req, -rc);
	else if (size == 0)
		fuse_reply_xattr(req, (size_t)len);
	else if (size < (size_t)len)
		fuse_reply_err(req, ERANGE);
	else
		fuse_reply_buf(req, buf, (size_t)len);
	free(buf);
}

/* Changes KEY of DIR's own policy: VALUE set, or removed when NULL. */
static int change_policy(struct node *dir, int key, const char *value, size_t size, int flags)
{
	struct policy own;
	char reason[256];
	int rc, was_set;

	rc = policy_store_own(dir, &own);
	if (rc < 0)
		return rc;
	was_set = (own.set & POLICY_BIT(key)) != 0;
	if (value && (flags & XATTR_CREATE) && was_set)
		rc = -EEXIST;
	else if (value && (flags & XATTR_REPLACE) && !was_set)
		rc = -ENODATA;
	else if (value)
		rc = policy_set_value(&own, (enum policy_key)key, value, size, reason,
				      sizeof(reason));
	else
		rc = policy_unset(&own, (enum policy_key)key);
	if (rc == -EINVAL)
		log_info("policy refused: %s", reason);
	if (rc == 0)
		rc = policy_store_replace(dir, &own);
	policy_release(&own);
	return rc;
}

void ops_setxattr(fuse_req_t req, fuse_ino_t ino, const char *name, const char *value, size_t size,
		  int flags)
{
	struct node *dir = node_from_ino(ino);
	int key;

	if (dir->kind == NODE_FILE) {
		fuse_reply_err(req, ENOTSUP);
		return;
	}
	if (key_under(name, EFFECTIVE_XATTR_PREFIX) != -ENODATA) {
		fuse_reply_err(req, EPERM); /* read-only: the result of composition */
		return;
	}
	if (strncmp(name, POLICY_XATTR_PREFIX, strlen(POLICY_XATTR_PREFIX)) != 0) {
		fuse_reply_err(req, ENOTSUP);
		return;
	}
	if (!ops_is_policy_admin(req)) {
		fuse_reply_err(req, EPERM);
		return;
	}
	key = key_under(name, POLICY_XATTR_PREFIX);
	if (key < 0) {
		log_info("policy refused: unknown policy key \"%s\"",
			 name + strlen(POLICY_XATTR_PREFIX));
		fuse_reply_err(req, EINVAL);
		return;
	}
	fuse_reply_err(req, -change_policy(dir, key, value, size, flags));
}

void ops_removexattr(fuse_req_t req, fuse_ino_t ino, const char *name)
{
	struct node *dir = node_from_ino(ino);
	int key = dir->kind == NODE_FILE ? -ENODATA : key_under(name, POLICY_XATTR_PREFIX);

	if (!user_namespace(name)) {
		fuse_reply_err(req, ENOTSUP);
		return;
	}
	if (key < 0) {
		fuse_reply_err(req, key_under(name, EFFECTIVE_XATTR_PREFIX) >= 0 ? EPERM : ENODATA);
		return;
	}
	if (!ops_is_policy_admin(req)) {
		fuse_reply_err(req, EPERM);
		return;
	}
	fuse_reply_err(req, -change_policy(dir, key, NULL, 0, 0));
}
