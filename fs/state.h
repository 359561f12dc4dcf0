/* state_dir: everything durable (SPEC §2).
 *
 *   state_dir/lock      flock'd: one daemon per state_dir
 *   state_dir/tree/     the files users see, mirrored one to one
 *   state_dir/staging/  files being written before rename(2) makes them
 *                       visible, so a crash leaves old or new, never half
 */
#ifndef PROMPTFS_STATE_H
#define PROMPTFS_STATE_H

#include <stddef.h>
#include <sys/types.h>

/* Creates (mode 0700) and locks state_dir, opens tree/ and staging/,
 * empties staging/, and makes the configured structure directories.
 * Fills pfs.state_fd, tree_fd, staging_fd, lock_fd. 0 or -errno with a
 * sentence in ERR. */
int state_open(const char *state_dir, char *err, size_t err_size);
void state_close(void);

/* Writes DATA to NAME in DIR_FD durably: a staging file is written,
 * fsync'd, given MODE/UID/GID, then renamed over NAME. The directory is
 * not fsync'd (state_sync_dir). 0 or -errno. */
int state_write_file(int dir_fd, const char *name, const void *data, size_t len, mode_t mode,
		     uid_t uid, gid_t gid);

/* Creates an empty file and renames it over NAME in DIR_FD; returns an
 * O_RDWR descriptor of the new file or -errno. Readers of the old file
 * keep the old one. */
int state_replace_empty(int dir_fd, const char *name, mode_t mode, uid_t uid, gid_t gid);

/* fsync of the directory DIR_FD (an O_PATH descriptor is fine). */
int state_sync_dir(int dir_fd);

/* Gives a new file to UID/GID when the daemon may (root); else no-op. */
void state_give_file(int fd, uid_t uid, gid_t gid);

#endif
