/* One log sink for the whole daemon; lines are written whole so that
 * threads do not interleave them. */
#include "fs/log.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

static enum log_target log_target = LOG_TO_STDERR;
static int log_level = LOG_INFO;
static int log_fd = STDERR_FILENO;
/* log=FILE, absolute: a reopen after fuse_daemonize's chdir("/") finds
 * the same file */
static char log_path[PATH_MAX];

#define SYSLOG_SOCKET "/dev/log"

/* Whether a syslog daemon listens on SYSLOG_SOCKET. */
static int syslog_reachable(void)
{
	struct sockaddr_un addr = { .sun_family = AF_UNIX };
	int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0), ok;

	if (fd < 0)
		return 0;
	snprintf(addr.sun_path, sizeof(addr.sun_path), "%s", SYSLOG_SOCKET);
	ok = connect(fd, (struct sockaddr *)&addr, sizeof(addr)) == 0;
	close(fd);
	return ok;
}

void log_warn_if_unheard(void)
{
	/* said on stderr while there is one: once detached, lines sent to
	 * no syslog are lost without a word */
	if (log_target == LOG_TO_SYSLOG && !syslog_reachable())
		fprintf(stderr,
			"promptfs: warning: no syslog answers at %s: the log is lost "
			"(use -o log=FILE, or -f to log on stderr)\n",
			SYSLOG_SOCKET);
}

int log_open(enum log_target target, const char *file, int level)
{
	char cwd[PATH_MAX];
	int fd;

	log_level = level;
	log_target = target;
	if (target == LOG_TO_SYSLOG) {
		openlog("promptfs", LOG_PID, LOG_DAEMON);
		return 0;
	}
	if (target == LOG_TO_FILE) {
		fd = open(file, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
		if (fd < 0)
			return -errno;
		log_fd = fd;
		if (file[0] == '/' || !getcwd(cwd, sizeof(cwd)) ||
		    snprintf(log_path, sizeof(log_path), "%s/%s", cwd, file) >=
			    (int)sizeof(log_path))
			snprintf(log_path, sizeof(log_path), "%s", file);
	}
	return 0;
}

void log_reopen(void)
{
	int fd;

	if (log_target != LOG_TO_FILE || log_fd <= STDERR_FILENO)
		return;
	fd = open(log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
	if (fd < 0) {
		log_error("log %s: cannot open it again: %s; still writing the old one", log_path,
			  strerror(errno));
		return;
	}
	/* one atomic swap: a line being written goes to one file or the
	 * other */
	if (dup3(fd, log_fd, O_CLOEXEC) < 0)
		log_error("log %s: cannot switch to it: %s", log_path, strerror(errno));
	close(fd);
}

void log_close(void)
{
	if (log_target == LOG_TO_SYSLOG)
		closelog();
	else if (log_target == LOG_TO_FILE && log_fd > STDERR_FILENO)
		close(log_fd);
	log_target = LOG_TO_STDERR;
	log_fd = STDERR_FILENO;
}

static const char *level_word(int level)
{
	switch (level) {
	case LOG_ERR:
		return "error";
	case LOG_WARNING:
		return "warn";
	case LOG_INFO:
		return "info";
	default:
		return "debug";
	}
}

void log_msg(int level, const char *fmt, ...)
{
	char line[2048];
	char stamp[32];
	struct tm tm;
	time_t now;
	va_list ap;
	int n;

	if (level > log_level)
		return;
	va_start(ap, fmt);
	if (log_target == LOG_TO_SYSLOG) {
		vsyslog(level, fmt, ap);
		va_end(ap);
		return;
	}
	now = time(NULL);
	gmtime_r(&now, &tm);
	strftime(stamp, sizeof(stamp), "%Y-%m-%dT%H:%M:%SZ", &tm);
	n = snprintf(line, sizeof(line), "%s promptfs[%d] %s: ", stamp, (int)getpid(),
		     level_word(level));
	if (n > 0 && (size_t)n < sizeof(line))
		n += vsnprintf(line + n, sizeof(line) - (size_t)n, fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	if ((size_t)n >= sizeof(line) - 1)
		n = sizeof(line) - 2;
	line[n++] = '\n';
	/* one write(2) per line keeps lines from threads whole */
	if (write(log_fd, line, (size_t)n) < 0)
		return;
}
