/* Where directory policies live (SPEC §6.1): each directory's own policy
 * is its `.policy` file in state_dir/tree, written durably by the daemon
 * alone in canonical form, and kept parsed in memory by the directory's
 * identity once read. */
#ifndef PROMPTFS_POLICY_STORE_H
#define PROMPTFS_POLICY_STORE_H

#include <sys/types.h>

#include "fs/node.h"
#include "fs/policy.h"

#define POLICY_FILE ".policy"
/* Its mode: anyone may try to write it (the kernel lets them), and the
 * daemon refuses all but admins with EPERM, as SPEC §6.1 says. */
#define POLICY_FILE_MODE 0666
/* A `.policy` written through the mount is read into memory up to this. */
#define POLICY_FILE_MAX (64 * 1024)

void policy_store_destroy(void);

/* A copy of DIR's own policy into OUT (one that sets nothing when DIR has
 * none). 0 or -errno; free OUT with policy_release. */
int policy_store_own(struct node *dir, struct policy *out);

/* Makes P DIR's own policy, durably, before it returns: its `.policy`
 * is rewritten (or removed when P sets nothing) and synced. 0 or -errno. */
int policy_store_replace(struct node *dir, const struct policy *p);

/* The policy in force at DIR: every own policy from the root down to it,
 * composed. 0 or -errno; free OUT with effective_release. */
int policy_store_effective(struct node *dir, struct effective_policy *out);

/* "MOUNTPOINT/a/b/.policy" of the level along the path to DIR that
 * decides KEY (the nearest that sets it), for a refusal's sentence. */
void policy_store_deciding_file(struct node *dir, enum policy_key key, char *buf, size_t size);

/* "MOUNTPOINT/a/.policy" of the LEVELth directory from the root on the
 * path to DIR (an effective policy's budget level). */
void policy_store_level_file(struct node *dir, size_t level, char *buf, size_t size);

/* Which `.policy` along the path to DIR first excludes MODEL (by
 * providers or residency): 0 when none does, else -EACCES with a
 * sentence naming it in WHY. */
int policy_store_check_deployment(struct node *dir, const struct model *model, char *why,
				  size_t size);

/* The directory (DEV, INO) is gone, or new: what was kept of it goes. */
void policy_store_forget(dev_t dev, ino_t ino);

#endif
