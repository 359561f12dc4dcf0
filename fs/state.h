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

/* Creates (mode 0700) and locks state_dir (an existing one open to
 * group or others is made 0700, logged, or refused if it cannot be),
 * opens tree/ and staging/, empties staging/, and makes the configured
 * structure directories.
 * Fills pfs.state_fd, tree_fd, staging_fd, lock_fd. 0 or -errno with a
 * sentence in ERR. */
int state_open(const char *state_dir, char *err, size_t err_size);
void state_close(void);

/* Writes DATA to NAME in DIR_FD: a staging file is written, given
 * MODE/UID/GID, then renamed over NAME, so readers see the old file or
 * the new one, never half. With STATE_DURABLE the file is fsync'd first
 * (the directory is not: state_sync_dir); without, the journal is what
 * survives a crash and the file is made again from it. 0 or -errno. */
#define STATE_DURABLE 1
int state_write_file(int dir_fd, const char *name, const void *data, size_t len, mode_t mode,
		     uid_t uid, gid_t gid, int flags);

/* A file made in staging/ before it has a place: NAME (its staging
 * name, at least STATE_STAGED_NAME bytes) holds DATA with MODE/UID/GID.
 * Returns an O_RDWR descriptor of it or -errno. state_place_staged then
 * renames it to NAME in DIR_FD, state_discard_staged removes it. */
#define STATE_STAGED_NAME 64
int state_stage_file(char *staged, const void *data, size_t len, mode_t mode, uid_t uid, gid_t gid);
int state_place_staged(const char *staged, int dir_fd, const char *name);
void state_discard_staged(const char *staged);

/* Creates NAME in DIR_FD (it must not exist) holding DATA, with
 * MODE/UID/GID; returns an O_RDWR descriptor of it or -errno (a failed
 * one is removed again). */
int state_create_file(int dir_fd, const char *name, const void *data, size_t len, mode_t mode,
		      uid_t uid, gid_t gid);

/* Writes DATA over the contents of NAME in DIR_FD, in place (made if
 * missing): for a file no reader reads while it changes. 0 or -errno. */
int state_rewrite_file(int dir_fd, const char *name, const void *data, size_t len, mode_t mode,
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
