/* The low-level FUSE operations of promptfs. */
#ifndef PROMPTFS_OPS_H
#define PROMPTFS_OPS_H

#include "fs/promptfs.h"

extern const struct fuse_lowlevel_ops promptfs_ops;

#endif
