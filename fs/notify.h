/* Telling a service manager how the daemon is doing: systemd's
 * sd_notify(3) datagram protocol, which systemd documents as stable,
 * spoken directly instead of linking libsystemd.
 *
 * The manager names an AF_UNIX datagram socket in $NOTIFY_SOCKET (a
 * path, or an abstract name written with a leading '@'); each state is
 * one datagram of newline-separated VAR=VALUE lines: READY=1 once the
 * mount serves, STOPPING=1 when it is being unmounted. Without the
 * variable every call does nothing. */
#ifndef PROMPTFS_NOTIFY_H
#define PROMPTFS_NOTIFY_H

/* Takes $NOTIFY_SOCKET and removes it from the environment, so that no
 * program the daemon starts (fusermount3) speaks for it. Call it before
 * any thread starts. 1 when there is a manager to tell, 0 when there is
 * none, -EAFNOSUPPORT for an address it cannot use (not a path, not '@';
 * too long), which is then ignored. */
int notify_init(void);

/* Sends STATE (e.g. "READY=1") to the manager, if there is one. 0 when
 * sent or when there is no manager, -errno otherwise. */
int notify_send(const char *state);

#endif
