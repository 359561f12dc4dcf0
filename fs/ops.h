/* The low-level FUSE operations of promptfs. */
#ifndef PROMPTFS_OPS_H
#define PROMPTFS_OPS_H

#include "fs/promptfs.h"

extern const struct fuse_lowlevel_ops promptfs_ops;

/* After the session ends: frees what the kernel opened and never released
 * (a close just before the unmount is released asynchronously). */
void ops_release_all(void);

#endif
