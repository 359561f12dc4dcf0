/* The journal's segments, records and group commit (see journal.h). */
#include "fs/journal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "fs/log.h"

#define SEGMENT_SUFFIX ".log"

static pthread_mutex_t journal_lock = PTHREAD_MUTEX_INITIALIZER;
/* Waiters sleep on the condition of the flush that will cover them: the
 * running one's, when their record was appended before it began, else
 * the next one's. A flush's end then wakes just the waiters it made
 * durable, and one of the others to lead the next flush, instead of
 * every waiter to find most of them still waiting. */
static pthread_cond_t flushed[2] = { PTHREAD_COND_INITIALIZER, PTHREAD_COND_INITIALIZER };
static unsigned flush_count;  /* flushes begun; the parity of the running one's */
static uint64_t flush_target; /* what the running flush makes durable */

static int state_dir_fd = -1;	 /* state_dir (the caller's) */
static int dir_fd = -1;		 /* state_dir/journal */
static int segment_fd = -1;	 /* the segment being appended to */
static int64_t segment_seq = -1; /* its number */
static off_t segment_used;	 /* bytes of records in it */
static off_t segment_size;	 /* bytes preallocated */
static uint64_t appended;	 /* position after the last record */
static uint64_t durable;	 /* position up to which it is on disk */
static int flushing;		 /* a flush runs without the lock */
static int broken;		 /* -errno of a failed flush, for good */

/* Empties and removes state_dir/journal.new, left by a first mount that
 * did not finish. */
static void remove_unadopted(int state_fd)
{
	int fd = openat(state_fd, "journal.new", O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	struct dirent *de;
	DIR *d;

	if (fd < 0)
		return;
	d = fdopendir(fd);
	if (!d) {
		close(fd);
		return;
	}
	while ((de = readdir(d)) != NULL)
		if (de->d_name[0] != '.')
			unlinkat(fd, de->d_name, 0);
	closedir(d);
	unlinkat(state_fd, "journal.new", AT_REMOVEDIR);
}

int journal_open(int state_fd, int *fresh, char *err, size_t err_size)
{
	const char *name = "journal";

	*fresh = 0;
	dir_fd = openat(state_fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (dir_fd < 0 && errno == ENOENT) {
		/* made as journal.new, renamed once it holds every job the
		 * tree shows unfinished (journal_adopt): a crash before
		 * that finds no journal and scans the tree again */
		*fresh = 1;
		name = "journal.new";
		remove_unadopted(state_fd);
		if (mkdirat(state_fd, name, 0700) < 0)
			goto fail;
		dir_fd = openat(state_fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	}
	if (dir_fd < 0)
		goto fail;
	state_dir_fd = state_fd;
	return 0;
fail:
	snprintf(err, err_size, "state_dir: %s: %s", name, strerror(errno));
	return -errno;
}

int journal_adopt(void)
{
	if (renameat(state_dir_fd, "journal.new", state_dir_fd, "journal") < 0)
		return -errno;
	return fsync(state_dir_fd) < 0 ? -errno : 0;
}

static int parse_segment_name(const char *name, int64_t *seq)
{
	char *end;
	unsigned long long v;

	if (strlen(name) != 16 + strlen(SEGMENT_SUFFIX) || strcmp(name + 16, SEGMENT_SUFFIX) != 0)
		return -EINVAL;
	errno = 0;
	v = strtoull(name, &end, 16);
	if (errno || end != name + 16 || v > INT64_MAX)
		return -EINVAL;
	*seq = (int64_t)v;
	return 0;
}

static void segment_name(int64_t seq, char *buf, size_t size)
{
	snprintf(buf, size, "%016" PRIx64 SEGMENT_SUFFIX, (uint64_t)seq);
}

static int compare_seq(const void *a, const void *b)
{
	int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;

	return x < y ? -1 : x > y;
}

/* The numbers of the segments present, sorted. Caller frees *OUT. */
static int list_segments(int64_t **out, size_t *n)
{
	int fd = openat(dir_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	size_t cap = 0;
	struct dirent *de;
	int64_t *seqs = NULL, seq;
	DIR *d;

	*n = 0;
	d = fd < 0 ? NULL : fdopendir(fd);
	if (!d) {
		int rc = -errno;

		if (fd >= 0)
			close(fd);
		return rc;
	}
	while ((de = readdir(d)) != NULL) {
		if (parse_segment_name(de->d_name, &seq) < 0)
			continue;
		if (*n == cap) {
			size_t new_cap = cap ? cap * 2 : 16;
			int64_t *grown = realloc(seqs, new_cap * sizeof(*seqs));

			if (!grown) {
				closedir(d);
				free(seqs);
				return -ENOMEM;
			}
			seqs = grown;
			cap = new_cap;
		}
		seqs[(*n)++] = seq;
	}
	closedir(d);
	if (*n)
		qsort(seqs, *n, sizeof(*seqs), compare_seq);
	*out = seqs;
	return 0;
}

/* One line of a segment: 0 and the record, 1 at the end of the records
 * (zeros, or nothing more), -EBADMSG for a line that does not check. */
static int parse_line(const char *line, size_t len, json_t **record)
{
	unsigned long want;
	json_error_t error;
	char *end;

	*record = NULL;
	if (len == 0 || line[0] == '\0')
		return 1;
	if (len < 10 || line[8] != ' ')
		return -EBADMSG;
	errno = 0;
	want = strtoul(line, &end, 16);
	if (errno || end != line + 8)
		return -EBADMSG;
	if (crc32(0, (const Bytef *)line + 9, (uInt)(len - 9)) != want)
		return -EBADMSG;
	*record = json_loadb(line + 9, len - 9, 0, &error);
	if (!*record || !json_is_object(*record)) {
		json_decref(*record);
		*record = NULL;
		return -EBADMSG;
	}
	return 0;
}

static int replay_segment(int64_t seq, int last, void (*fn)(void *ctx, json_t *record), void *ctx)
{
	char name[64];
	char *data, *p, *end;
	struct stat st;
	size_t have = 0;
	int fd, rc = 0;

	segment_name(seq, name, sizeof(name));
	fd = openat(dir_fd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0 || fstat(fd, &st) < 0) {
		rc = -errno;
		if (fd >= 0)
			close(fd);
		return rc;
	}
	data = malloc((size_t)st.st_size + 1);
	if (!data) {
		close(fd);
		return -ENOMEM;
	}
	while (have < (size_t)st.st_size) {
		ssize_t n = pread(fd, data + have, (size_t)st.st_size - have, (off_t)have);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			rc = n < 0 ? -errno : 0;
			break;
		}
		have += (size_t)n;
	}
	close(fd);
	for (p = data, end = data + have; rc == 0 && p < end;) {
		char *nl = memchr(p, '\n', (size_t)(end - p));
		json_t *record;
		int line_rc;

		line_rc = parse_line(p, nl ? (size_t)(nl - p) : (size_t)(end - p), &record);
		if (line_rc == 0 && !nl)
			line_rc = -EBADMSG; /* no newline: cut off while written */
		if (line_rc == 1)
			break;
		if (line_rc < 0) {
			/* a crash cuts only the end of the newest segment;
			 * anything else is damage worth saying */
			int more = nl && nl + 1 < end && nl[1] != '\0';

			if (!last || more)
				log_warn("journal %s: a record at byte %zu does not check; "
					 "the rest of the segment is ignored",
					 name, (size_t)(p - data));
			break;
		}
		fn(ctx, record);
		json_decref(record);
		p = nl + 1;
	}
	free(data);
	return rc;
}

int journal_replay(void (*fn)(void *ctx, json_t *record), void *ctx)
{
	int64_t *seqs;
	size_t n;
	int rc = list_segments(&seqs, &n);

	if (rc < 0)
		return rc;
	for (size_t i = 0; i < n && rc == 0; i++) {
		rc = replay_segment(seqs[i], i + 1 == n, fn, ctx);
		if (rc < 0)
			log_error("journal: cannot read segment %zu: %s", i, strerror(-rc));
	}
	if (n)
		segment_seq = seqs[n - 1];
	free(seqs);
	return rc;
}

static int sync_dir(void)
{
	return fsync(dir_fd) < 0 ? -errno : 0;
}

/* Writes BYTES of zeros to FD: 0, or an errno (ENOSPC on a full disk).
 * Written, not fallocate()d: a record then overwrites blocks that exist,
 * so its fdatasync writes the record and nothing else. In an fallocated
 * range each record first turns unwritten blocks into written ones, and
 * every flush also had to write that change of the file's extents. */
static int zero_fill(int fd, off_t bytes)
{
	static const char zeros[65536];
	off_t at = 0;

	while (at < bytes) {
		size_t want =
			bytes - at < (off_t)sizeof(zeros) ? (size_t)(bytes - at) : sizeof(zeros);
		ssize_t n = pwrite(fd, zeros, want, at);

		if (n < 0 && errno != EINTR)
			return errno;
		if (n == 0)
			return EIO;
		if (n > 0)
			at += n;
	}
	return 0;
}

/* A new segment of at least BYTES, made durable with its name, then the
 * one appended to. Called with journal_lock held and no flush running. */
static int start_segment(off_t bytes)
{
	int64_t seq = segment_seq + 1;
	char name[64];
	int fd, rc;

	segment_name(seq, name, sizeof(name));
	fd = openat(dir_fd, name, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0)
		return -errno;
	rc = zero_fill(fd, bytes);
	if (rc == 0 && fsync(fd) < 0)
		rc = errno;
	if (rc == 0)
		rc = -sync_dir();
	if (rc != 0) {
		close(fd);
		unlinkat(dir_fd, name, 0);
		return -rc;
	}
	/* the old one's records were flushed by the caller */
	if (segment_fd >= 0)
		close(segment_fd);
	segment_fd = fd;
	segment_seq = seq;
	segment_used = 0;
	segment_size = bytes;
	return 0;
}

/* Wakes the waiters a flush's end concerns: all of both conditions
 * (EVERYONE: everything appended is durable, or the journal is broken),
 * else those the flush covered and one other, to lead the next. */
static void wake_after_flush(int everyone)
{
	pthread_cond_t *covered = &flushed[flush_count & 1];
	pthread_cond_t *next = &flushed[(flush_count + 1) & 1];

	pthread_cond_broadcast(covered);
	if (everyone)
		pthread_cond_broadcast(next);
	else
		pthread_cond_signal(next);
}

/* Makes every record appended so far durable. Called with journal_lock
 * held; waits for a running flush, and runs one if records remain. */
static int flush_locked(void)
{
	while (flushing)
		pthread_cond_wait(&flushed[flush_count & 1], &journal_lock);
	if (broken)
		return broken;
	if (durable < appended) {
		if (fdatasync(segment_fd) < 0) {
			broken = -errno;
			log_error("journal: flush failed: %s; no more jobs are accepted",
				  strerror(errno));
			wake_after_flush(1);
			return broken;
		}
		durable = appended;
		wake_after_flush(1);
	}
	return 0;
}

int64_t journal_rotate(void)
{
	int64_t rc;

	pthread_mutex_lock(&journal_lock);
	rc = flush_locked();
	if (rc == 0)
		rc = start_segment(JOURNAL_SEGMENT_BYTES);
	if (rc == 0)
		rc = segment_seq;
	pthread_mutex_unlock(&journal_lock);
	return rc;
}

static int write_all_at(int fd, const char *p, size_t len, off_t off)
{
	while (len > 0) {
		ssize_t n = pwrite(fd, p, len, off);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		p += n;
		off += n;
		len -= (size_t)n;
	}
	return 0;
}

int journal_append(const json_t *record, uint64_t *lsn)
{
	char *text =
		json_dumps(record, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(10));
	size_t len, line_len;
	char *line;
	int rc;

	if (!text)
		return -ENOMEM;
	len = strlen(text);
	line_len = 9 + len + 1;
	line = malloc(line_len + 1);
	if (!line) {
		free(text);
		return -ENOMEM;
	}
	snprintf(line, 10, "%08lx ", (unsigned long)crc32(0, (const Bytef *)text, (uInt)len));
	memcpy(line + 9, text, len);
	line[line_len - 1] = '\n';
	free(text);

	pthread_mutex_lock(&journal_lock);
	rc = broken;
	if (rc == 0 && segment_fd < 0)
		rc = -EBADF;
	if (rc == 0 && segment_used + (off_t)line_len > segment_size) {
		/* the full segment must be durable before records follow in
		 * the next, or a crash could keep a later one and lose these */
		rc = flush_locked();
		/* flush_locked may have waited without the lock while another
		 * append started a segment: only a record that still does not
		 * fit starts one */
		if (rc == 0 && segment_used + (off_t)line_len > segment_size)
			rc = start_segment((off_t)line_len > JOURNAL_SEGMENT_BYTES
						   ? (off_t)line_len
						   : JOURNAL_SEGMENT_BYTES);
	}
	if (rc == 0)
		rc = write_all_at(segment_fd, line, line_len, segment_used);
	if (rc == 0) {
		segment_used += (off_t)line_len;
		appended += line_len;
		*lsn = appended;
	}
	pthread_mutex_unlock(&journal_lock);
	free(line);
	return rc;
}

int journal_wait(uint64_t lsn)
{
	int rc = 0;

	pthread_mutex_lock(&journal_lock);
	while (durable < lsn && rc == 0) {
		uint64_t target;
		int fd;

		if (broken) {
			rc = broken;
			break;
		}
		if (flushing) {
			pthread_cond_wait(&flushed[(flush_count + (lsn > flush_target)) & 1],
					  &journal_lock);
			continue;
		}
		/* lead one flush for everything appended until now */
		flushing = 1;
		flush_count++;
		target = flush_target = appended;
		fd = segment_fd;
		pthread_mutex_unlock(&journal_lock);
		rc = fdatasync(fd) < 0 ? -errno : 0;
		pthread_mutex_lock(&journal_lock);
		flushing = 0;
		if (rc < 0) {
			broken = rc;
			log_error("journal: flush failed: %s; no more jobs are accepted",
				  strerror(-rc));
		} else if (durable < target) {
			durable = target;
		}
		wake_after_flush(rc < 0 || durable >= appended);
	}
	pthread_mutex_unlock(&journal_lock);
	return rc;
}

int journal_drop_old(int64_t seq)
{
	int64_t *seqs;
	size_t n;
	int rc = list_segments(&seqs, &n);

	if (rc < 0)
		return rc;
	for (size_t i = 0; i < n && seqs[i] < seq; i++) {
		char name[64];

		segment_name(seqs[i], name, sizeof(name));
		if (unlinkat(dir_fd, name, 0) < 0 && errno != ENOENT && rc == 0)
			rc = -errno;
	}
	free(seqs);
	if (rc == 0)
		rc = sync_dir();
	return rc;
}

uint64_t journal_position(void)
{
	uint64_t pos;

	pthread_mutex_lock(&journal_lock);
	pos = appended;
	pthread_mutex_unlock(&journal_lock);
	return pos;
}

void journal_close(void)
{
	pthread_mutex_lock(&journal_lock);
	flush_locked();
	if (segment_fd >= 0)
		close(segment_fd);
	if (dir_fd >= 0)
		close(dir_fd);
	segment_fd = dir_fd = state_dir_fd = -1;
	segment_seq = -1;
	segment_used = segment_size = 0;
	appended = durable = 0;
	broken = 0;
	pthread_mutex_unlock(&journal_lock);
}
