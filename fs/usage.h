/* `.usage` (SPEC §6.4): a read-only file in every directory, made when
 * it is read: what the subtree spent and holds reserved, in the period
 * of the budget in force there, from the ledger (one lookup, no walk of
 * the subtree). */
#ifndef PROMPTFS_USAGE_H
#define PROMPTFS_USAGE_H

#include <stddef.h>
#include <string.h>
#include <sys/stat.h>

#include "fs/node.h"

#define USAGE_FILE ".usage"

static inline int usage_is_name(const char *name)
{
	return name[0] == '.' && name[1] == 'u' && strcmp(name, USAGE_FILE) == 0;
}

/* The JSON text of DIR's `.usage`, with a final newline; NULL when out of
 * memory or DIR is gone. Caller frees. */
char *usage_text(struct node *dir, size_t *len);

/* The status of DIR's `.usage` (its node's inode number is the caller's
 * to fill): a read-only regular file owned by the daemon, its size the
 * text's now, its times now. */
void usage_stat(struct node *dir, struct stat *st);

#endif
