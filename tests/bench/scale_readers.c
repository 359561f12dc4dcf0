/* Readers of scale.sh: PROMPTS*PER threads, PER of them on each
 * DIR/rI.response (I = 0 .. PROMPTS-1), each reading to end-of-file and
 * comparing with the fake cloud's answer to the prompt scale.py wrote:
 *
 *   prompt  "reader prompt I [[fault:gate name=GATE]]\n"
 *   answer  "echo: reader prompt I [[fault:gate name=GATE]]\n"
 *
 * C threads rather than Python ones: with 10,000 Python threads every
 * wake-up needs the GIL, and on a busy machine handing it over thousands
 * of times took minutes; these threads share nothing.
 *
 *   scale_readers DIR PROMPTS PER GATE
 *
 * Prints "started=N start_errors=M" once every thread exists (the caller
 * then watches them block), and after the last one ended
 * "ok=N mismatches=N errors=N first_bad=..." (key=value, no spaces in
 * values). Exit status 0 when it could run at all. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#define ANSWER_MAX 4096

enum outcome { OK, MISMATCH, OPEN_ERROR, READ_ERROR };

struct reader {
	pthread_t thread;
	int running; /* the thread was created */
	int index;   /* which prompt */
	enum outcome outcome;
	int err;	/* errno of an open or read error */
	size_t got;	/* bytes read */
	char first[32]; /* the start of what was read, for the report */
};

static const char *dir, *gate;

static int expected(int index, char *buf, size_t size)
{
	return snprintf(buf, size, "echo: reader prompt %d [[fault:gate name=%s]]\n", index, gate);
}

static void *read_answer(void *arg)
{
	struct reader *r = arg;
	char path[PATH_MAX], want[512], buf[ANSWER_MAX];
	size_t len = 0;
	int fd, n = expected(r->index, want, sizeof(want));

	snprintf(path, sizeof(path), "%s/r%d.response", dir, r->index);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		r->outcome = OPEN_ERROR;
		r->err = errno;
		return NULL;
	}
	for (;;) {
		ssize_t got = read(fd, buf + len, sizeof(buf) - len);

		if (got < 0 && errno == EINTR)
			continue;
		if (got < 0) {
			r->outcome = READ_ERROR;
			r->err = errno;
			break;
		}
		if (got == 0)
			break;
		len += (size_t)got;
		if (len == sizeof(buf))
			break; /* far longer than any answer: a mismatch */
	}
	close(fd);
	r->got = len;
	snprintf(r->first, sizeof(r->first), "%.*s", (int)(len < 24 ? len : 24), buf);
	for (char *p = r->first; *p; p++) {
		if (*p == ' ' || *p == '\n')
			*p = '_';
	}
	if (r->outcome == OK && (len != (size_t)n || memcmp(buf, want, len) != 0))
		r->outcome = MISMATCH;
	return NULL;
}

int main(int argc, char **argv)
{
	struct reader *readers;
	pthread_attr_t attr;
	struct rlimit rl;
	long prompts, per, total, started = 0, start_errors = 0;
	long ok = 0, mismatches = 0, errors = 0;
	char first_bad[128] = "-";

	if (argc != 5) {
		fprintf(stderr, "usage: %s DIR PROMPTS PER GATE\n", argv[0]);
		return 2;
	}
	dir = argv[1];
	prompts = strtol(argv[2], NULL, 10);
	per = strtol(argv[3], NULL, 10);
	gate = argv[4];
	total = prompts * per;
	if (prompts <= 0 || per <= 0) {
		fprintf(stderr, "scale_readers: PROMPTS and PER must be positive\n");
		return 2;
	}
	/* one descriptor per reader; root may raise the hard limit */
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < (rlim_t)total + 64) {
		rl.rlim_cur = (rlim_t)total + 64;
		if (rl.rlim_max < rl.rlim_cur)
			rl.rlim_max = rl.rlim_cur;
		if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
			perror("scale_readers: setrlimit");
	}
	readers = calloc((size_t)total, sizeof(*readers));
	if (!readers) {
		perror("scale_readers");
		return 2;
	}
	/* a reader needs little stack: 10,000 of them stay cheap */
	pthread_attr_init(&attr);
	pthread_attr_setstacksize(&attr, 64 * 1024);
	for (long k = 0; k < total; k++) {
		readers[k].index = (int)(k % prompts);
		if (pthread_create(&readers[k].thread, &attr, read_answer, &readers[k]) == 0) {
			readers[k].running = 1;
			started++;
		} else {
			readers[k].outcome = OPEN_ERROR;
			readers[k].err = EAGAIN;
			start_errors++;
		}
	}
	pthread_attr_destroy(&attr);
	printf("started=%ld start_errors=%ld\n", started, start_errors);
	fflush(stdout);

	for (long k = 0; k < total; k++) {
		struct reader *r = &readers[k];

		if (r->running)
			pthread_join(r->thread, NULL);
		if (r->outcome == OK) {
			ok++;
			continue;
		}
		if (r->outcome == MISMATCH)
			mismatches++;
		else
			errors++;
		if (strcmp(first_bad, "-") == 0)
			snprintf(first_bad, sizeof(first_bad), "reader%ld:r%d:%s:%zu_bytes:%s", k,
				 r->index, r->outcome == MISMATCH ? "mismatch" : strerror(r->err),
				 r->got, r->first);
	}
	for (char *p = first_bad; *p; p++) {
		if (*p == ' ')
			*p = '_';
	}
	printf("ok=%ld mismatches=%ld errors=%ld first_bad=%s\n", ok, mismatches, errors,
	       first_bad);
	free(readers);
	return 0;
}
