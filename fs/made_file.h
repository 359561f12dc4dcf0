/* The status of a file the daemon makes when it is read (.usage,
 * .metrics): no backing file, so its attributes are made up here. */
#ifndef PROMPTFS_MADE_FILE_H
#define PROMPTFS_MADE_FILE_H

#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* A read-only regular file owned by the daemon, SIZE bytes (its text's
 * now), its times now. The inode number is the caller's to fill. */
static inline void made_file_stat(struct stat *st, size_t size)
{
	memset(st, 0, sizeof(*st));
	st->st_mode = S_IFREG | 0444;
	st->st_nlink = 1;
	st->st_uid = getuid();
	st->st_gid = getgid();
	st->st_size = (off_t)size;
	st->st_blksize = 4096;
	clock_gettime(CLOCK_REALTIME, &st->st_mtim);
	st->st_atim = st->st_ctim = st->st_mtim;
}

#endif
