/* state_dir layout and the durable-write helpers every other part uses. */
#include "fs/state.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fs/log.h"
#include "fs/promptfs.h"

static atomic_ulong staging_counter;

static int mkdir_p(const char *path, mode_t mode)
{
	char *copy = strdup(path);
	int rc = 0;

	if (!copy)
		return -ENOMEM;
	for (char *p = copy + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(copy, 0755) < 0 && errno != EEXIST) {
			rc = -errno;
			goto out;
		}
		*p = '/';
	}
	if (mkdir(copy, mode) < 0 && errno != EEXIST)
		rc = -errno;
out:
	free(copy);
	return rc;
}

static int open_subdir(int parent_fd, const char *name, mode_t mode)
{
	int fd;

	if (mkdirat(parent_fd, name, mode) < 0 && errno != EEXIST)
		return -errno;
	fd = openat(parent_fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	return fd < 0 ? -errno : fd;
}

static void empty_staging(int staging_fd)
{
	int fd = dup(staging_fd);
	struct dirent *de;
	DIR *dir;

	if (fd < 0)
		return;
	dir = fdopendir(fd);
	if (!dir) {
		close(fd);
		return;
	}
	while ((de = readdir(dir)) != NULL) {
		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
			continue;
		unlinkat(staging_fd, de->d_name, 0);
	}
	closedir(dir);
}

/* any/<geo>/<family>/ for every tag and every family with a deployment
 * carrying it. -1 with errno set on failure. */
static int make_routed_view(void)
{
	const struct config *cfg = pfs.config;
	int any_fd = open_subdir(pfs.tree_fd, ANY_DIR, 0755);

	if (any_fd < 0)
		return -1;
	for (size_t c = 0; c < cfg->n_clouds; c++) {
		const struct cloud *cloud = &cfg->clouds[c];

		for (size_t r = 0; r < cloud->n_regions; r++) {
			const struct region *region = &cloud->regions[r];

			for (size_t g = 0; g < region->n_geo; g++) {
				int geo_fd = open_subdir(any_fd, region->geo[g], 0755);

				if (geo_fd < 0) {
					close(any_fd);
					return -1;
				}
				for (size_t m = 0; m < region->n_models; m++) {
					const char *family = region->models[m].family;

					if (mkdirat(geo_fd, family, 01777) == 0)
						fchmodat(geo_fd, family, 01777, 0);
					else if (errno != EEXIST) {
						close(geo_fd);
						close(any_fd);
						return -1;
					}
				}
				close(geo_fd);
			}
		}
	}
	close(any_fd);
	return 0;
}

/* The structure directories from the config. Existing ones keep the
 * modes and owners admins gave them. */
static int make_structure(char *err, size_t err_size)
{
	const struct config *cfg = pfs.config;

	for (size_t c = 0; c < cfg->n_clouds; c++) {
		const struct cloud *cloud = &cfg->clouds[c];
		int cloud_fd = open_subdir(pfs.tree_fd, cloud->name, 0755);

		if (cloud_fd < 0)
			goto fail;
		for (size_t r = 0; r < cloud->n_regions; r++) {
			const struct region *region = &cloud->regions[r];
			int region_fd = open_subdir(cloud_fd, region->name, 0755);

			if (region_fd < 0) {
				close(cloud_fd);
				goto fail;
			}
			for (size_t m = 0; m < region->n_models; m++) {
				const char *model = region->models[m].name;

				if (mkdirat(region_fd, model, 01777) == 0) {
					/* the sticky 1777 is the point, whatever mkdir kept */
					fchmodat(region_fd, model, 01777, 0);
				} else if (errno != EEXIST) {
					close(region_fd);
					close(cloud_fd);
					goto fail;
				}
			}
			close(region_fd);
		}
		close(cloud_fd);
	}
	return make_routed_view() < 0 ? -errno : 0;
fail:
	snprintf(err, err_size, "cannot create the tree in the state directory: %s",
		 strerror(errno));
	return -errno;
}

/* state_dir holds every prompt and answer with the modes their owners
 * gave them: open to group or others, it would let anyone read what the
 * mount's permissions refuse. An existing one is made 0700, and said so;
 * one the daemon may not chmod is refused. */
static int restrict_mode(int state_fd, const char *state_dir, char *err, size_t err_size)
{
	struct stat st;
	int rc;

	if (fstat(state_fd, &st) < 0) {
		rc = -errno;
		snprintf(err, err_size, "state_dir %s: %s", state_dir, strerror(errno));
		return rc;
	}
	if ((st.st_mode & 077) == 0)
		return 0;
	if (fchmod(state_fd, 0700) < 0) {
		rc = -errno;
		snprintf(err, err_size,
			 "state_dir %s is mode %04o and cannot be made 0700 (%s): it holds every "
			 "prompt and answer; chmod 700 it, or choose another state_dir",
			 state_dir, (unsigned)(st.st_mode & 07777), strerror(errno));
		return rc;
	}
	log_warn("state_dir %s was mode %04o, open to other users; it is now 0700, as it "
		 "holds every prompt and answer",
		 state_dir, (unsigned)(st.st_mode & 07777));
	return 0;
}

int state_open(const char *state_dir, char *err, size_t err_size)
{
	int rc;

	rc = mkdir_p(state_dir, 0700);
	if (rc < 0) {
		snprintf(err, err_size, "state_dir %s: %s", state_dir, strerror(-rc));
		return rc;
	}
	pfs.state_fd = open(state_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (pfs.state_fd < 0) {
		rc = -errno;
		snprintf(err, err_size, "state_dir %s: %s", state_dir, strerror(errno));
		return rc;
	}
	rc = restrict_mode(pfs.state_fd, state_dir, err, err_size);
	if (rc < 0)
		goto err_state;
	pfs.lock_fd = openat(pfs.state_fd, "lock", O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (pfs.lock_fd < 0) {
		rc = -errno;
		snprintf(err, err_size, "state_dir %s: lock: %s", state_dir, strerror(errno));
		goto err_state;
	}
	if (flock(pfs.lock_fd, LOCK_EX | LOCK_NB) < 0) {
		rc = -errno;
		snprintf(err, err_size, "state_dir %s is in use by another promptfs", state_dir);
		goto err_lock;
	}
	pfs.tree_fd = open_subdir(pfs.state_fd, "tree", 0755);
	if (pfs.tree_fd < 0) {
		rc = pfs.tree_fd;
		snprintf(err, err_size, "state_dir %s: tree: %s", state_dir, strerror(-rc));
		goto err_lock;
	}
	pfs.staging_fd = open_subdir(pfs.state_fd, "staging", 0700);
	if (pfs.staging_fd < 0) {
		rc = pfs.staging_fd;
		snprintf(err, err_size, "state_dir %s: staging: %s", state_dir, strerror(-rc));
		goto err_tree;
	}
	empty_staging(pfs.staging_fd);
	rc = make_structure(err, err_size);
	if (rc < 0)
		goto err_staging;
	return 0;

err_staging:
	close(pfs.staging_fd);
err_tree:
	close(pfs.tree_fd);
err_lock:
	close(pfs.lock_fd);
err_state:
	close(pfs.state_fd);
	pfs.state_fd = pfs.tree_fd = pfs.staging_fd = pfs.lock_fd = -1;
	return rc;
}

void state_close(void)
{
	if (pfs.staging_fd >= 0)
		close(pfs.staging_fd);
	if (pfs.tree_fd >= 0)
		close(pfs.tree_fd);
	if (pfs.lock_fd >= 0)
		close(pfs.lock_fd);
	if (pfs.state_fd >= 0)
		close(pfs.state_fd);
	pfs.state_fd = pfs.tree_fd = pfs.staging_fd = pfs.lock_fd = -1;
}

void state_give_file(int fd, uid_t uid, gid_t gid)
{
	if (pfs.daemon_is_root && fchown(fd, uid, gid) < 0)
		return;
}

static int staging_create(char *name, size_t size, mode_t mode)
{
	unsigned long n = atomic_fetch_add(&staging_counter, 1);
	int fd;

	snprintf(name, size, "%d.%lu", (int)getpid(), n);
	fd = openat(pfs.staging_fd, name, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, mode);
	return fd < 0 ? -errno : fd;
}

static int write_all(int fd, const void *data, size_t len)
{
	const char *p = data;

	while (len > 0) {
		ssize_t n = write(fd, p, len);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

int state_stage_file(char *staged, const void *data, size_t len, mode_t mode, uid_t uid, gid_t gid)
{
	int fd, rc;

	fd = staging_create(staged, STATE_STAGED_NAME, mode);
	if (fd < 0)
		return fd;
	rc = write_all(fd, data, len); /* the mode is MODE: no umask (main.c) */
	if (rc < 0) {
		close(fd);
		unlinkat(pfs.staging_fd, staged, 0);
		return rc;
	}
	state_give_file(fd, uid, gid);
	return fd;
}

int state_place_staged(const char *staged, int dir_fd, const char *name)
{
	return renameat(pfs.staging_fd, staged, dir_fd, name) < 0 ? -errno : 0;
}

void state_discard_staged(const char *staged)
{
	unlinkat(pfs.staging_fd, staged, 0);
}

int state_write_file(int dir_fd, const char *name, const void *data, size_t len, mode_t mode,
		     uid_t uid, gid_t gid, int flags)
{
	char staged[STATE_STAGED_NAME];
	int fd, rc = 0;

	fd = state_stage_file(staged, data, len, mode, uid, gid);
	if (fd < 0)
		return fd;
	if ((flags & STATE_DURABLE) && fsync(fd) < 0)
		rc = -errno;
	close(fd);
	if (rc == 0)
		rc = state_place_staged(staged, dir_fd, name);
	if (rc < 0)
		state_discard_staged(staged);
	return rc;
}

int state_create_file(int dir_fd, const char *name, const void *data, size_t len, mode_t mode,
		      uid_t uid, gid_t gid)
{
	int fd = openat(dir_fd, name, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode);
	int rc;

	if (fd < 0)
		return -errno;
	rc = write_all(fd, data, len); /* the mode is MODE: no umask (main.c) */
	if (rc < 0) {
		close(fd);
		unlinkat(dir_fd, name, 0);
		return rc;
	}
	state_give_file(fd, uid, gid);
	return fd;
}

int state_rewrite_file(int dir_fd, const char *name, const void *data, size_t len, mode_t mode,
		       uid_t uid, gid_t gid)
{
	int fd = openat(dir_fd, name, O_WRONLY | O_NOFOLLOW | O_CLOEXEC);
	int rc = 0;

	if (fd < 0 && errno == ENOENT)
		return state_write_file(dir_fd, name, data, len, mode, uid, gid, 0);
	if (fd < 0)
		return -errno;
	for (size_t done = 0; done < len && rc == 0;) {
		ssize_t n = pwrite(fd, (const char *)data + done, len - done, (off_t)done);

		if (n < 0 && errno != EINTR)
			rc = -errno;
		else if (n > 0)
			done += (size_t)n;
	}
	if (rc == 0 && ftruncate(fd, (off_t)len) < 0)
		rc = -errno;
	close(fd);
	return rc;
}

int state_replace_empty(int dir_fd, const char *name, mode_t mode, uid_t uid, gid_t gid)
{
	char staged[STATE_STAGED_NAME];
	int fd, rc;

	fd = state_stage_file(staged, "", 0, mode, uid, gid);
	if (fd < 0)
		return fd;
	rc = state_place_staged(staged, dir_fd, name);
	if (rc < 0) {
		close(fd);
		state_discard_staged(staged);
		return rc;
	}
	return fd;
}

int state_sync_dir(int dir_fd)
{
	int fd = openat(dir_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	int rc = 0;

	if (fd < 0)
		return -errno;
	if (fsync(fd) < 0)
		rc = -errno;
	close(fd);
	return rc;
}
