/* Reading files that hold secrets, refusing them like ssh does when
 * someone else may read them. */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "mountopts/credentials.h"

/* Key files are a few kilobytes; anything far bigger is not one. */
#define SECRET_FILE_MAX (1024 * 1024)

/* The rules a secret file's metadata must follow. 0 or -errno. */
static int secret_file_check_stat(struct load_ctx *ctx, const char *path, const char *prefix,
				  const char *file, const struct stat *st)
{
	if (!S_ISREG(st->st_mode))
		return load_error(ctx, -EINVAL, path, "%s%s is not a regular file", prefix, file);
	if (st->st_mode & (S_IRGRP | S_IROTH))
		return load_error(ctx, -EACCES, path,
				  "%s%s is readable by group or others (mode %04o); chmod 600 it",
				  prefix, file, (unsigned)(st->st_mode & 07777));
	if (st->st_size > SECRET_FILE_MAX)
		return load_error(ctx, -EFBIG, path, "%s%s is larger than %d bytes", prefix, file,
				  SECRET_FILE_MAX);
	return 0;
}

/* In check mode, a secret file this process cannot open is taken for
 * absent: --check runs where the secrets may not be, or as another user
 * than the daemon. Whatever stat() still shows of it (a file readable
 * by others, a directory) is checked. Returns 1 (absent, with RC in
 * *RC), or 0 when the failure stays an error. */
static int secret_file_unseen(struct load_ctx *ctx, const char *path, const char *prefix,
			      const char *file, int open_errno, int *rc)
{
	struct stat st;

	if (open_errno != ENOENT && open_errno != EACCES && open_errno != ENOTDIR)
		return 0;
	if (!load_secret_absent(ctx))
		return 0;
	*rc = stat(file, &st) == 0 ? secret_file_check_stat(ctx, path, prefix, file, &st) : 0;
	return 1;
}

int secret_file_read(struct load_ctx *ctx, const char *path, const char *prefix, const char *file,
		     char **out, size_t *out_len)
{
	char *buf = NULL;
	size_t len = 0;
	struct stat st;
	ssize_t got;
	int fd;
	int rc;

	*out = NULL;
	*out_len = 0;
	fd = open(file, O_RDONLY | O_CLOEXEC | O_NOCTTY);
	if (fd < 0 && secret_file_unseen(ctx, path, prefix, file, errno, &rc))
		goto out;
	if (fd < 0) {
		rc = load_error(ctx, -errno, path, "%scannot open %s: %s", prefix, file,
				strerror(errno));
		goto out;
	}
	if (fstat(fd, &st) < 0) {
		rc = load_error(ctx, -errno, path, "%scannot stat %s: %s", prefix, file,
				strerror(errno));
		goto out;
	}
	rc = secret_file_check_stat(ctx, path, prefix, file, &st);
	if (rc < 0)
		goto out;

	/* Sized once, so no realloc leaves a stray copy of the secret. */
	buf = malloc((size_t)st.st_size + 1);
	if (!buf) {
		rc = load_error(ctx, -ENOMEM, NULL, "out of memory");
		goto out;
	}
	while (len < (size_t)st.st_size) {
		got = read(fd, buf + len, (size_t)st.st_size - len);
		if (got < 0 && errno == EINTR)
			continue;
		if (got < 0) {
			rc = load_error(ctx, -errno, path, "%scannot read %s: %s", prefix, file,
					strerror(errno));
			goto out;
		}
		if (got == 0)
			break;
		len += (size_t)got;
	}
	buf[len] = '\0';
	if (strlen(buf) != len) {
		rc = load_error(ctx, -EINVAL, path, "%s%s contains a NUL byte", prefix, file);
		goto out;
	}
	*out = buf;
	*out_len = len;
	buf = NULL;
	rc = 0;
out:
	if (buf) {
		explicit_bzero(buf, len);
		free(buf);
	}
	if (fd >= 0)
		close(fd);
	return rc;
}
