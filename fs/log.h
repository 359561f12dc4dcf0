/* The daemon's log: stderr, syslog or a file (SPEC §2 log=, log_level=).
 * Never give it a secret, a prompt or an answer. */
#ifndef PROMPTFS_LOG_H
#define PROMPTFS_LOG_H

#include <syslog.h>

#include "mountopts/options.h"

/* Opens the log target. 0 or -errno. */
int log_open(enum log_target target, const char *file, int level);
/* SIGHUP: log=FILE is opened again (logrotate moved it away), the lines
 * of other threads going to the old file or the new one, never lost. */
void log_reopen(void);
void log_close(void);

/* Before detaching: a warning on stderr when the log goes to a syslog
 * that nobody listens to. */
void log_warn_if_unheard(void);

void log_msg(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define log_error(...) log_msg(LOG_ERR, __VA_ARGS__)
#define log_warn(...) log_msg(LOG_WARNING, __VA_ARGS__)
#define log_info(...) log_msg(LOG_INFO, __VA_ARGS__)
#define log_debug(...) log_msg(LOG_DEBUG, __VA_ARGS__)

#endif
