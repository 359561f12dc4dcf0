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

int secret_file_read(struct load_ctx *ctx, const char *path, const char *prefix, const char *file,
		     char **out, size_t *out_len)
{
	char *buf = NULL;
	size_t len = 0;
	struct stat st;
	ssize_t got;
	int fd;
	int rc;

	fd = open(file, O_RDONLY | O_CLOEXEC | O_NOCTTY);
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
	if (!S_ISREG(st.st_mode)) {
		rc = load_error(ctx, -EINVAL, path, "%s%s is not a regular file", prefix, file);
		goto out;
	}
	if (st.st_mode & (S_IRGRP | S_IROTH)) {
		rc = load_error(ctx, -EACCES, path,
				"%s%s is readable by group or others (mode %04o); chmod 600 it",
				prefix, file, (unsigned)(st.st_mode & 07777));
		goto out;
	}
	if (st.st_size > SECRET_FILE_MAX) {
		rc = load_error(ctx, -EFBIG, path, "%s%s is larger than %d bytes", prefix, file,
				SECRET_FILE_MAX);
		goto out;
	}

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
