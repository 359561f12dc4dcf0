/* The mountpoint, checked before mounting; see mountpoint.h. */
#include "fs/mountpoint.h"

#include <dirent.h>
#include <errno.h>
#include <libgen.h>
#include <limits.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include "fs/log.h"

extern char **environ;

/* A dead mount stacked on a dead mount is possible (two crashes with an
 * older promptfs between them); more than this is not a promptfs. */
#define MAX_DEAD_MOUNTS 8

/* Undoes the kernel's octal escapes (\040 for a space, \011, \012, \134)
 * of a mountinfo field, in place. */
static void unescape_octal(char *s)
{
	char *out = s;

	while (*s) {
		if (s[0] == '\\' && s[1] >= '0' && s[1] <= '3' && s[2] >= '0' && s[2] <= '7' &&
		    s[3] >= '0' && s[3] <= '7') {
			*out++ = (char)((s[1] - '0') * 64 + (s[2] - '0') * 8 + (s[3] - '0'));
			s += 4;
		} else {
			*out++ = *s++;
		}
	}
	*out = '\0';
}

/* Fields of one mountinfo line: "ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTS
 * [OPTIONAL...] - TYPE SOURCE SUPEROPTS". Points *MNT and *TYPE into
 * LINE (changed); 0, or -1 for a line that is not in that shape. */
static int mountinfo_fields(char *line, char **mnt, char **type)
{
	char *save = NULL, *field;
	int i = 0;

	*mnt = *type = NULL;
	for (field = strtok_r(line, " \n", &save); field; field = strtok_r(NULL, " \n", &save)) {
		if (i == 4)
			*mnt = field;
		if (i >= 6 && strcmp(field, "-") == 0) {
			*type = strtok_r(NULL, " \n", &save);
			break;
		}
		i++;
	}
	if (!*mnt || !*type)
		return -1;
	unescape_octal(*mnt);
	return 0;
}

int mountinfo_type_at(FILE *mountinfo, const char *path, char *type, size_t type_size)
{
	char *line = NULL, *mnt, *line_type;
	size_t cap = 0;
	int found = 0;

	errno = 0;
	/* later lines are mounted over earlier ones: the last match is on top */
	while (getline(&line, &cap, mountinfo) >= 0) {
		if (mountinfo_fields(line, &mnt, &line_type) < 0 || strcmp(mnt, path) != 0)
			continue;
		snprintf(type, type_size, "%s", line_type);
		found = 1;
	}
	free(line);
	if (ferror(mountinfo))
		return errno ? -errno : -EIO;
	return found;
}

static int type_at(const char *path, char *type, size_t type_size)
{
	FILE *f = fopen("/proc/self/mountinfo", "re");
	int rc;

	if (!f)
		return -errno;
	rc = mountinfo_type_at(f, path, type, type_size);
	fclose(f);
	return rc;
}

/* MOUNTPOINT as the mount table spells it: symbolic links resolved. A
 * dead mount cannot be resolved itself, so then its parent is. */
static int canonical_path(const char *mountpoint, char out[PATH_MAX])
{
	char parent[PATH_MAX], *copy_dir, *copy_base, *base;
	int rc = 0;

	if (realpath(mountpoint, out))
		return 0;
	copy_dir = strdup(mountpoint);
	copy_base = strdup(mountpoint);
	if (!copy_dir || !copy_base) {
		rc = -ENOMEM;
		goto out;
	}
	base = basename(copy_base);
	if (!realpath(dirname(copy_dir), parent)) {
		rc = -errno;
		goto out;
	}
	if (snprintf(out, PATH_MAX, "%s%s%s", parent, strcmp(parent, "/") ? "/" : "", base) >=
	    PATH_MAX)
		rc = -ENAMETOOLONG;
out:
	free(copy_dir);
	free(copy_base);
	return rc;
}

/* Lazily unmounts PATH: root does it itself, anyone else through the
 * setuid fusermount3, which lets a user unmount only their own mounts. */
static int detach(const char *path)
{
	char *argv[] = { "fusermount3", "-u", "-z", "--", (char *)path, NULL };
	int status, rc;
	pid_t pid;

	if (geteuid() == 0)
		return umount2(path, MNT_DETACH) == 0 ? 0 : -errno;
	rc = posix_spawnp(&pid, "fusermount3", NULL, NULL, argv, environ);
	if (rc != 0)
		return -rc;
	while (waitpid(pid, &status, 0) < 0) {
		if (errno != EINTR)
			return -errno;
	}
	return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : -EPERM;
}

/* 1 when the directory PATH holds nothing, 0 when it holds something,
 * -errno when it cannot be read. */
static int is_empty_directory(const char *path)
{
	DIR *dir = opendir(path);
	struct dirent *de;
	int empty = 1;

	if (!dir)
		return -errno;
	while ((de = readdir(dir)) != NULL) {
		if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0) {
			empty = 0;
			break;
		}
	}
	closedir(dir);
	return empty;
}

/* 1 when the promptfs mount at PATH lost its daemon. statfs always asks
 * the daemon, where stat may answer from the kernel's cache. */
static int is_dead(const char *path)
{
	struct statfs sfs;

	return statfs(path, &sfs) < 0 && errno == ENOTCONN;
}

/* Detaches the dead promptfs mounts at PATH (canonical), then stat's
 * PATH into ST. 0, or -errno with a sentence in ERR. */
static int clear_dead_mounts(const char *mountpoint, const char *path, struct stat *st, char *err,
			     size_t err_size)
{
	char type[64];
	int found, rc;

	for (int i = 0; i < MAX_DEAD_MOUNTS; i++) {
		found = type_at(path, type, sizeof(type));
		if (found <= 0 || strcmp(type, MOUNTPOINT_FSTYPE) != 0 || !is_dead(path))
			break;
		rc = detach(path);
		if (rc < 0) {
			snprintf(err, err_size,
				 "mountpoint %s: a dead promptfs mount is there and cannot be "
				 "unmounted: %s",
				 mountpoint, strerror(-rc));
			return rc;
		}
		log_warn("mountpoint %s: unmounted (lazily) a dead promptfs mount left by a "
			 "daemon that ended without unmounting (kill -9 or a crash)",
			 mountpoint);
	}
	if (stat(path, st) == 0)
		return 0;
	rc = -errno;
	if (rc == -ENOTCONN)
		snprintf(err, err_size,
			 "mountpoint %s: %s: a dead FUSE mount is there; unmount it first "
			 "(fusermount3 -u %s)",
			 mountpoint, strerror(ENOTCONN), mountpoint);
	else
		snprintf(err, err_size, "mountpoint %s: %s", mountpoint, strerror(-rc));
	return rc;
}

int mountpoint_prepare(const char *mountpoint, int allow_nonempty, char *err, size_t err_size)
{
	char path[PATH_MAX], type[64];
	struct stat st;
	int rc;

	rc = canonical_path(mountpoint, path);
	if (rc < 0) {
		snprintf(err, err_size, "mountpoint %s: %s", mountpoint, strerror(-rc));
		return rc;
	}
	rc = clear_dead_mounts(mountpoint, path, &st, err, err_size);
	if (rc < 0)
		return rc;
	if (type_at(path, type, sizeof(type)) > 0 && strcmp(type, MOUNTPOINT_FSTYPE) == 0) {
		snprintf(err, err_size,
			 "mountpoint %s is already a promptfs mount; unmount it first "
			 "(fusermount3 -u %s)",
			 mountpoint, mountpoint);
		return -EBUSY;
	}
	if (!S_ISDIR(st.st_mode)) {
		snprintf(err, err_size, "mountpoint %s is not a directory", mountpoint);
		return -ENOTDIR;
	}
	if (allow_nonempty)
		return 0;
	rc = is_empty_directory(path);
	if (rc < 0) {
		snprintf(err, err_size, "mountpoint %s: %s", mountpoint, strerror(-rc));
		return rc;
	}
	if (rc == 0) {
		snprintf(err, err_size,
			 "mountpoint %s is not empty: the mount would hide what is there "
			 "(use an empty directory, or -o nonempty)",
			 mountpoint);
		return -ENOTEMPTY;
	}
	return 0;
}
