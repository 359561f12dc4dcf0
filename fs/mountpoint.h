/* The mountpoint, checked before anything is mounted on it (SPEC §1).
 *
 * A mountpoint must be an empty directory (unless -o nonempty) that no
 * live promptfs serves. A promptfs mount whose daemon died (kill -9, a
 * crash) answers every call with ENOTCONN until someone unmounts it; it
 * is ours to clear, so it is detached and the start goes on. */
#ifndef PROMPTFS_MOUNTPOINT_H
#define PROMPTFS_MOUNTPOINT_H

#include <stddef.h>
#include <stdio.h>

/* The type of promptfs's mounts in the mount table. */
#define MOUNTPOINT_FSTYPE "fuse.promptfs"

/* Looks up PATH (absolute, symbolic links resolved) in MOUNTINFO, text
 * in the format of /proc/self/mountinfo, and copies the type of the
 * topmost mount there into TYPE. Returns 1 when PATH is a mount point,
 * 0 when it is not, -errno on a read error. */
int mountinfo_type_at(FILE *mountinfo, const char *path, char *type, size_t type_size);

/* Makes MOUNTPOINT ready for fuse_session_mount: detaches a dead
 * promptfs mount found there (logged), then refuses a live promptfs
 * mount, a path that is not a directory, and a directory that is not
 * empty unless ALLOW_NONEMPTY. 0, or -errno with a sentence in ERR. */
int mountpoint_prepare(const char *mountpoint, int allow_nonempty, char *err, size_t err_size);

#endif
