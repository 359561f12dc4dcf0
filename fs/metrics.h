/* `/.metrics` (SPEC §8): a read-only file at the root of the mount only,
 * made when it is opened, in the Prometheus text exposition format 0.0.4,
 * from a copy of the daemon's counters (backends/metrics.h). What it
 * lists: docs/contract.md. */
#ifndef PROMPTFS_FS_METRICS_H
#define PROMPTFS_FS_METRICS_H

#include <stddef.h>
#include <string.h>
#include <sys/stat.h>

#include "backends/metrics.h"
#include "fs/node.h"

#define METRICS_FILE ".metrics"

static inline int metrics_file_is_name(const char *name)
{
	return name[0] == '.' && name[1] == 'm' && strcmp(name, METRICS_FILE) == 0;
}

/* Whether NAME in DIR is the daemon's /.metrics: the root's only; below
 * a model the name is an ordinary file like any other. */
static inline int metrics_file_is(const struct node *dir, const char *name)
{
	return dir->kind == NODE_ROOT && metrics_file_is_name(name);
}

/* S in the exposition format, with a final newline; NULL when out of
 * memory. Caller frees. */
char *metrics_file_render(const struct metrics_snapshot *s, size_t *len);

/* The text of /.metrics now, with the circuit states ENGINE published
 * (none, all closed, when NULL); NULL when out of memory. Caller frees. */
char *metrics_file_text(struct engine *engine, size_t *len);

/* The status of /.metrics (its node's inode number is the caller's to
 * fill): a read-only regular file owned by the daemon, its size the
 * text's now, its times now. */
void metrics_file_stat(struct engine *engine, struct stat *st);

#endif
