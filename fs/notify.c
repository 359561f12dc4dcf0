/* sd_notify(3)'s datagram protocol, without libsystemd; see notify.h. */
#include "fs/notify.h"

#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

static struct sockaddr_un notify_addr;
static socklen_t notify_addr_len; /* 0: no manager listens */

int notify_init(void)
{
	const char *name = getenv("NOTIFY_SOCKET");
	int rc = 1;
	size_t len;

	notify_addr_len = 0;
	if (!name)
		return 0;
	len = strlen(name);
	/* a path, or '@' for an abstract name; systemd's vsock:… is not
	 * for a local daemon */
	if ((name[0] == '/' || (name[0] == '@' && len > 1)) && len < sizeof(notify_addr.sun_path)) {
		memset(&notify_addr, 0, sizeof(notify_addr));
		notify_addr.sun_family = AF_UNIX;
		memcpy(notify_addr.sun_path, name, len);
		if (name[0] == '@')
			notify_addr.sun_path[0] = '\0'; /* its length says where it ends */
		else
			len++; /* the path's NUL */
		notify_addr_len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len);
	} else {
		rc = -EAFNOSUPPORT;
	}
	unsetenv("NOTIFY_SOCKET");
	return rc;
}

int notify_send(const char *state)
{
	ssize_t sent;
	int fd, rc = 0;

	if (notify_addr_len == 0)
		return 0;
	fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	sent = sendto(fd, state, strlen(state), MSG_NOSIGNAL, (struct sockaddr *)&notify_addr,
		      notify_addr_len);
	if (sent < 0)
		rc = -errno;
	else if ((size_t)sent != strlen(state))
		rc = -EMSGSIZE;
	close(fd);
	return rc;
}
