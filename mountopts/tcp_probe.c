/* Is a local server listening? The embedded default offers a local
 * OpenAI-compatible server only when one is there; a connect tells
 * without speaking to it. */
#include <errno.h>
#include <netdb.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "mountopts/loader.h"

static long now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000L + ts.tv_nsec / 1000000L;
}

static int connect_within(const struct addrinfo *ai, long deadline)
{
	struct pollfd pfd = { .events = POLLOUT };
	socklen_t len = sizeof(int);
	int fd, rc, so_error = 0;
	int answered = 0;

	fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol);
	if (fd < 0)
		return 0;
	rc = connect(fd, ai->ai_addr, ai->ai_addrlen);
	if (rc == 0) {
		answered = 1;
		goto out;
	}
	if (errno != EINPROGRESS)
		goto out;
	pfd.fd = fd;
	do {
		long left = deadline - now_ms();

		if (left <= 0)
			goto out;
		rc = poll(&pfd, 1, (int)left);
	} while (rc < 0 && errno == EINTR);
	if (rc <= 0)
		goto out;
	if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &so_error, &len) < 0)
		goto out;
	answered = so_error == 0;
out:
	close(fd);
	return answered;
}

int tcp_port_answers(const char *host, const char *port, int timeout_ms)
{
	struct addrinfo hints = {
		.ai_socktype = SOCK_STREAM,
		.ai_flags = AI_NUMERICSERV,
	};
	struct addrinfo *list = NULL, *ai;
	long deadline = now_ms() + timeout_ms;
	int answered = 0;

	if (getaddrinfo(host, port, &hints, &list) != 0)
		return 0;
	for (ai = list; ai && !answered; ai = ai->ai_next)
		answered = connect_within(ai, deadline);
	freeaddrinfo(list);
	return answered;
}
