/* What one thread waking another costs on this machine: two threads pass
 * a byte back and forth through two pipes, first both on CPU 0, then on
 * CPUs 0 and 1. A promptfs round trip is a chain of such wake-ups (the
 * client and a FUSE worker, ten times; a worker and the engine; the
 * engine, the backend and the thread that makes the end durable), so
 * their price here bounds what any FUSE daemon with more than one thread
 * reaches. Part of peer.sh's report; not a test.
 *
 *   handoff SECONDS
 *
 * Prints one line per placement, in loadgen's format plus the CPU time
 * the two threads used per round trip:
 *   same-cpu count=N seconds=S rate=R p50_ms=P p99_ms=Q errors=0 cpu_us=C
 *   other-cpu ...   (only with two CPUs or more)
 * Exits 0, or 2 when it cannot run. */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#define MAX_SAMPLES 2000000

struct pair {
	int there[2], back[2]; /* pipes: to the echoing thread, and back */
	int echo_cpu;
	int unpinned; /* the echoing thread could not run on ECHO_CPU */
};

static double now(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static double cpu_seconds(void)
{
	struct rusage u;

	getrusage(RUSAGE_SELF, &u);
	return (double)(u.ru_utime.tv_sec + u.ru_stime.tv_sec) +
	       (double)(u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e6;
}

static int pin(int cpu)
{
	cpu_set_t set;

	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	return pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
}

static void *echo(void *arg)
{
	struct pair *p = arg;
	char c;

	/* without its CPU it answers nothing: closing its end of the way
	 * back ends the measuring thread's read at once */
	if (pin(p->echo_cpu) != 0) {
		p->unpinned = 1;
		close(p->back[1]);
		p->back[1] = -1;
		return NULL;
	}
	while (read(p->there[0], &c, 1) == 1 && c != 'q')
		if (write(p->back[1], &c, 1) != 1)
			break;
	return NULL;
}

static int by_value(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

/* Round trips from CPU 0 to ECHO_CPU for SECONDS; prints the line. */
static int measure(const char *label, int echo_cpu, double seconds, double *samples)
{
	struct pair p = { .echo_cpu = echo_cpu };
	double start, end, cpu0, t;
	size_t n = 0;
	pthread_t thread;
	char c = 'x';
	int rc = 0;

	if (pipe(p.there) < 0 || pipe(p.back) < 0) {
		perror("handoff: pipe");
		return 2;
	}
	if (pthread_create(&thread, NULL, echo, &p) != 0) {
		perror("handoff: pthread_create");
		return 2;
	}
	cpu0 = cpu_seconds();
	start = now();
	end = start + seconds;
	for (t = start; t < end && n < MAX_SAMPLES;) {
		double sent = t;

		if (write(p.there[1], &c, 1) != 1 || read(p.back[0], &c, 1) != 1) {
			rc = 2;
			break;
		}
		t = now();
		samples[n++] = t - sent;
	}
	c = 'q';
	if (write(p.there[1], &c, 1) != 1)
		rc = 2;
	pthread_join(thread, NULL);
	close(p.there[0]);
	close(p.there[1]);
	close(p.back[0]);
	if (p.back[1] >= 0)
		close(p.back[1]);
	if (rc != 0 || n == 0) {
		if (p.unpinned)
			fprintf(stderr, "handoff: cannot run a thread on CPU %d\n", echo_cpu);
		else
			fprintf(stderr, "handoff: a pipe failed (%s)\n", strerror(errno));
		return 2;
	}
	qsort(samples, n, sizeof(*samples), by_value);
	printf("%s count=%zu seconds=%.2f rate=%.1f p50_ms=%.4f p99_ms=%.4f errors=0 cpu_us=%.2f\n",
	       label, n, t - start, (double)n / (t - start), samples[n / 2] * 1e3,
	       samples[(size_t)((double)(n - 1) * 0.99)] * 1e3,
	       (cpu_seconds() - cpu0) * 1e6 / (double)n);
	return 0;
}

int main(int argc, char **argv)
{
	double seconds = argc == 2 ? atof(argv[1]) : 0, *samples;
	int rc;

	if (seconds <= 0) {
		fprintf(stderr, "usage: handoff SECONDS\n");
		return 2;
	}
	samples = malloc(MAX_SAMPLES * sizeof(*samples));
	if (!samples || pin(0) != 0) {
		fprintf(stderr, "handoff: cannot set up (memory, or CPU 0 not allowed)\n");
		return 2;
	}
	rc = measure("same-cpu", 0, seconds, samples);
	if (rc == 0 && sysconf(_SC_NPROCESSORS_ONLN) > 1)
		rc = measure("other-cpu", 1, seconds, samples);
	free(samples);
	return rc;
}
