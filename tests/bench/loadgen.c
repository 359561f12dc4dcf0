/* Load generator of tests/bench/peer.sh: closed-loop round trips through a
 * promptfs mount, or the disk's own fdatasync rate for scale.
 *
 *   loadgen DIR THREADS SECONDS [EXPECTED]
 *	Each thread works in its own workspace DIR/w<thread> and loops:
 *	write w<thread>/t<thread>-<i>.prompt (close() must return 0: that is
 *	the submission), then read t<thread>-<i>.response to end-of-file.
 *	One round trip is one sample. With EXPECTED, an answer that differs
 *	from it is an error too.
 *
 *   loadgen --fsync FILE THREADS SECONDS
 *	Each thread appends 128 bytes to FILE.<thread> and fdatasync()s it.
 *	One append and sync is one sample.
 *
 *   loadgen --create DIR THREADS SECONDS
 *	Each thread creates empty files in DIR/c<thread>, a new name each
 *	time (open with O_CREAT | O_EXCL, then close). One file is one
 *	sample: what the file system charges for an inode, which a job pays
 *	three times (its prompt, .response and .meta).
 *
 * Prints one line: count=N seconds=S rate=R p50_ms=X p99_ms=Y errors=E,
 * and the first error on stderr. Exits 0 when there was no error, 1 when
 * there were errors, 2 on bad usage or setup.
 *
 * Built by peer.sh with cc -O2 -pthread; not part of the meson build. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

enum mode { MODE_PROMPTS, MODE_FSYNC, MODE_CREATE };

struct worker {
	pthread_t thread;
	int index;
	double *samples; /* round trip times, seconds */
	size_t count;
	size_t cap;
	unsigned long errors;
	char first_error[4400]; /* room for a whole path */
};

static enum mode mode;
static const char *target; /* DIR, or FILE's prefix with --fsync */
static const char *expected;
static double deadline;
static pthread_barrier_t start_line;

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void fail(struct worker *w, const char *what, const char *path, int err)
{
	if (w->errors++ == 0)
		snprintf(w->first_error, sizeof(w->first_error), "%s %s: %s", what, path,
			 strerror(err));
}

static int record(struct worker *w, double seconds)
{
	double *grown;

	if (w->count == w->cap) {
		w->cap = w->cap ? w->cap * 2 : 4096;
		grown = realloc(w->samples, w->cap * sizeof(*grown));
		if (!grown)
			return -1;
		w->samples = grown;
	}
	w->samples[w->count++] = seconds;
	return 0;
}

/* Writes the prompt; returns 0 once close() accepted it. */
static int submit(struct worker *w, const char *path, unsigned long i)
{
	char prompt[96];
	int len = snprintf(prompt, sizeof(prompt), "bench prompt %d-%lu\n", w->index, i);
	int fd = open(path, O_CREAT | O_WRONLY | O_TRUNC, 0644);

	if (fd < 0) {
		fail(w, "open", path, errno);
		return -1;
	}
	if (write(fd, prompt, (size_t)len) != len) {
		fail(w, "write", path, errno ? errno : EIO);
		close(fd);
		return -1;
	}
	if (close(fd) != 0) {
		fail(w, "close", path, errno);
		return -1;
	}
	return 0;
}

/* Reads the answer to end-of-file; returns 0 when it came whole (and is
 * EXPECTED, when given). */
static int fetch(struct worker *w, const char *path)
{
	char buf[4096];
	size_t got = 0;
	size_t want = expected ? strlen(expected) : 0;
	int same = 1;
	ssize_t n;
	int fd = open(path, O_RDONLY);

	if (fd < 0) {
		fail(w, "open", path, errno);
		return -1;
	}
	while ((n = read(fd, buf, sizeof(buf))) != 0) {
		if (n < 0) {
			if (errno == EINTR)
				continue;
			fail(w, "read", path, errno);
			close(fd);
			return -1;
		}
		if (expected && (got + (size_t)n > want || memcmp(buf, expected + got, (size_t)n)))
			same = 0;
		got += (size_t)n;
	}
	close(fd);
	if (expected && (!same || got != want)) {
		fail(w, "unexpected answer in", path, EBADMSG);
		return -1;
	}
	return 0;
}

static void prompts_loop(struct worker *w)
{
	char dir[4096];
	char path[4200];
	unsigned long i;
	double t0;

	snprintf(dir, sizeof(dir), "%s/w%d", target, w->index);
	if (mkdir(dir, 0755) != 0 && errno != EEXIST)
		fail(w, "mkdir", dir, errno);
	pthread_barrier_wait(&start_line);
	for (i = 0; now() < deadline; i++) {
		t0 = now();
		snprintf(path, sizeof(path), "%s/t%d-%lu.prompt", dir, w->index, i);
		if (submit(w, path, i) != 0)
			continue;
		snprintf(path, sizeof(path), "%s/t%d-%lu.response", dir, w->index, i);
		if (fetch(w, path) != 0)
			continue;
		if (record(w, now() - t0) != 0) {
			fail(w, "memory for", "samples", ENOMEM);
			break;
		}
	}
}

static void fsync_loop(struct worker *w)
{
	char path[4200];
	char line[128];
	double t0;
	int fd;

	snprintf(path, sizeof(path), "%s.%d", target, w->index);
	memset(line, 'x', sizeof(line) - 1);
	line[sizeof(line) - 1] = '\n';
	fd = open(path, O_CREAT | O_WRONLY | O_APPEND | O_TRUNC, 0644);
	if (fd < 0)
		fail(w, "open", path, errno);
	pthread_barrier_wait(&start_line);
	while (fd >= 0 && now() < deadline) {
		t0 = now();
		if (write(fd, line, sizeof(line)) != (ssize_t)sizeof(line)) {
			fail(w, "write", path, errno ? errno : EIO);
			break;
		}
		if (fdatasync(fd) != 0) {
			fail(w, "fdatasync", path, errno);
			break;
		}
		if (record(w, now() - t0) != 0) {
			fail(w, "memory for", "samples", ENOMEM);
			break;
		}
	}
	if (fd >= 0)
		close(fd);
}

static void create_loop(struct worker *w)
{
	char dir[4096];
	char path[4200];
	unsigned long i;
	double t0;
	int fd;

	snprintf(dir, sizeof(dir), "%s/c%d", target, w->index);
	if (mkdir(dir, 0755) != 0 && errno != EEXIST)
		fail(w, "mkdir", dir, errno);
	pthread_barrier_wait(&start_line);
	for (i = 0; now() < deadline; i++) {
		t0 = now();
		snprintf(path, sizeof(path), "%s/f%lu", dir, i);
		fd = open(path, O_CREAT | O_EXCL | O_WRONLY, 0644);
		if (fd < 0) {
			fail(w, "open", path, errno);
			break;
		}
		close(fd);
		if (record(w, now() - t0) != 0) {
			fail(w, "memory for", "samples", ENOMEM);
			break;
		}
	}
}

static void *run(void *arg)
{
	struct worker *w = arg;

	if (mode == MODE_FSYNC)
		fsync_loop(w);
	else if (mode == MODE_CREATE)
		create_loop(w);
	else
		prompts_loop(w);
	return NULL;
}

static int by_value(const void *a, const void *b)
{
	double x = *(const double *)a;
	double y = *(const double *)b;

	return (x > y) - (x < y);
}

/* Nearest-rank percentile of SORTED (N > 0 values), in milliseconds. */
static double percentile_ms(const double *sorted, size_t n, double p)
{
	size_t rank = (size_t)(p / 100.0 * (double)n + 0.999999);

	if (rank < 1)
		rank = 1;
	if (rank > n)
		rank = n;
	return sorted[rank - 1] * 1000.0;
}

static int usage(void)
{
	fprintf(stderr, "usage: loadgen DIR THREADS SECONDS [EXPECTED]\n"
			"       loadgen --fsync FILE THREADS SECONDS\n"
			"       loadgen --create DIR THREADS SECONDS\n");
	return 2;
}

int main(int argc, char **argv)
{
	struct worker *workers;
	double *all;
	size_t total = 0;
	unsigned long errors = 0;
	const char *first_error = NULL;
	double started;
	double elapsed;
	double seconds;
	int threads;
	int i;

	if (argc > 1 && (strcmp(argv[1], "--fsync") == 0 || strcmp(argv[1], "--create") == 0)) {
		mode = strcmp(argv[1], "--fsync") == 0 ? MODE_FSYNC : MODE_CREATE;
		argv++;
		argc--;
		if (argc != 4)
			return usage();
	} else if (argc != 4 && argc != 5) {
		return usage();
	}
	target = argv[1];
	threads = atoi(argv[2]);
	seconds = atof(argv[3]);
	if (mode == MODE_PROMPTS && argc == 5)
		expected = argv[4];
	if (threads < 1 || threads > 1024 || seconds <= 0)
		return usage();

	workers = calloc((size_t)threads, sizeof(*workers));
	if (!workers || pthread_barrier_init(&start_line, NULL, (unsigned)threads + 1) != 0) {
		perror("loadgen");
		return 2;
	}
	for (i = 0; i < threads; i++) {
		workers[i].index = i;
		if (pthread_create(&workers[i].thread, NULL, run, &workers[i]) != 0) {
			perror("loadgen: pthread_create");
			return 2;
		}
	}
	/* The clock starts once every thread is ready, so thread start-up and
	 * the workspaces' mkdir are not measured. */
	started = now();
	deadline = started + seconds;
	pthread_barrier_wait(&start_line);
	for (i = 0; i < threads; i++)
		pthread_join(workers[i].thread, NULL);
	/* Round trips under way at the deadline are finished and counted. */
	elapsed = now() - started;

	for (i = 0; i < threads; i++) {
		total += workers[i].count;
		errors += workers[i].errors;
		if (!first_error && workers[i].errors)
			first_error = workers[i].first_error;
	}
	all = malloc((total ? total : 1) * sizeof(*all));
	if (!all) {
		perror("loadgen");
		return 2;
	}
	total = 0;
	for (i = 0; i < threads; i++) {
		memcpy(all + total, workers[i].samples, workers[i].count * sizeof(*all));
		total += workers[i].count;
		free(workers[i].samples);
	}
	qsort(all, total, sizeof(*all), by_value);
	printf("count=%zu seconds=%.2f rate=%.1f p50_ms=%.3f p99_ms=%.3f errors=%lu\n", total,
	       elapsed, (double)total / elapsed, total ? percentile_ms(all, total, 50) : 0.0,
	       total ? percentile_ms(all, total, 99) : 0.0, errors);
	if (first_error)
		fprintf(stderr, "loadgen: %lu errors, first: %s\n", errors, first_error);
	free(all);
	free(workers);
	return errors ? 1 : 0;
}
