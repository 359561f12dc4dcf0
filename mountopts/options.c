/* Command line and -o options, parsed with a fuse_opt table in the manner
 * of sshfs: our own keys are consumed here, fstab-only words discarded,
 * everything else passes through to libfuse, which rejects what it does
 * not know. */
#include "mountopts/options.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <syslog.h>
#include <unistd.h>

#include "backends/breaker.h"

enum {
	KEY_HELP,
	KEY_VERSION,
	KEY_FOREGROUND,
	KEY_DEBUG,
	KEY_PRINT_CONFIG,
	KEY_CHECK,
	KEY_STATE_DIR,
	KEY_MAX_INFLIGHT,
	KEY_TIMEOUT,
	KEY_CONNECT_TIMEOUT,
	KEY_CAFILE,
	KEY_ADMIN_UID,
	KEY_ADMIN_GID,
	KEY_LOG,
	KEY_LOG_LEVEL,
	KEY_CATALOG,
	KEY_MAX_RESPONSE_BYTES,
	KEY_NONEMPTY,
	KEY_BREAKER_FAILURES,
	KEY_BREAKER_COOLDOWN,
};

static const struct fuse_opt promptfs_opts[] = {
	FUSE_OPT_KEY("-h", KEY_HELP),
	FUSE_OPT_KEY("--help", KEY_HELP),
	FUSE_OPT_KEY("-V", KEY_VERSION),
	FUSE_OPT_KEY("--version", KEY_VERSION),
	FUSE_OPT_KEY("-f", KEY_FOREGROUND),
	FUSE_OPT_KEY("-d", KEY_DEBUG),
	FUSE_OPT_KEY("debug", KEY_DEBUG),
	FUSE_OPT_KEY("--print-config", KEY_PRINT_CONFIG),
	FUSE_OPT_KEY("--check", KEY_CHECK),
	FUSE_OPT_KEY("state_dir=", KEY_STATE_DIR),
	FUSE_OPT_KEY("max_inflight=", KEY_MAX_INFLIGHT),
	FUSE_OPT_KEY("timeout=", KEY_TIMEOUT),
	FUSE_OPT_KEY("connect_timeout=", KEY_CONNECT_TIMEOUT),
	FUSE_OPT_KEY("cafile=", KEY_CAFILE),
	FUSE_OPT_KEY("admin_uid=", KEY_ADMIN_UID),
	FUSE_OPT_KEY("admin_gid=", KEY_ADMIN_GID),
	FUSE_OPT_KEY("log=", KEY_LOG),
	FUSE_OPT_KEY("log_level=", KEY_LOG_LEVEL),
	FUSE_OPT_KEY("catalog=", KEY_CATALOG),
	FUSE_OPT_KEY("max_response_bytes=", KEY_MAX_RESPONSE_BYTES),
	FUSE_OPT_KEY("breaker_failures=", KEY_BREAKER_FAILURES),
	FUSE_OPT_KEY("breaker_cooldown=", KEY_BREAKER_COOLDOWN),
	/* libfuse 3 dropped it; we check emptiness ourselves, so it is ours */
	FUSE_OPT_KEY("nonempty", KEY_NONEMPTY),
	/* fstab words that mean something to mount(8), nothing to us */
	FUSE_OPT_KEY("_netdev", FUSE_OPT_KEY_DISCARD),
	FUSE_OPT_KEY("nofail", FUSE_OPT_KEY_DISCARD),
	FUSE_OPT_KEY("noauto", FUSE_OPT_KEY_DISCARD),
	FUSE_OPT_KEY("auto", FUSE_OPT_KEY_DISCARD),
	FUSE_OPT_KEY("user", FUSE_OPT_KEY_DISCARD),
	FUSE_OPT_KEY("users", FUSE_OPT_KEY_DISCARD),
	FUSE_OPT_KEY("defaults", FUSE_OPT_KEY_DISCARD),
	/* always on: the kernel enforces the modes we report */
	FUSE_OPT_KEY("default_permissions", FUSE_OPT_KEY_DISCARD),
	FUSE_OPT_END,
};

struct parse_state {
	struct mount_options *opts;
	char *err;
	size_t err_size;
	int failed;
	int n_nonopts;
	char *nonopts[2];
	int has_fsname;
	int has_subtype;
};

static int parse_fail(struct parse_state *st, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static int parse_fail(struct parse_state *st, const char *fmt, ...)
{
	va_list ap;

	if (!st->failed) {
		va_start(ap, fmt);
		vsnprintf(st->err, st->err_size, fmt, ap);
		va_end(ap);
	}
	st->failed = 1;
	return -1;
}

static const char *option_value(const char *arg)
{
	const char *eq = strchr(arg, '=');

	return eq ? eq + 1 : "";
}

/* PATH made absolute against the current directory, as a new string
 * (caller frees); NULL when out of memory or the directory is gone. The
 * daemon runs in / once libfuse has set it up, so every path it opens
 * again later (CONFIG at SIGHUP, cafile at each connection, the
 * mountpoint at unmount) must not depend on where it was started.
 * Symbolic links are kept: a config reached through one is read
 * through it again at reload. */
static char *absolute_path(const char *path)
{
	char *cwd, *joined = NULL;

	if (path[0] == '/')
		return strdup(path);
	while (path[0] == '.' && path[1] == '/') {
		path += 2;
		while (path[0] == '/')
			path++;
	}
	cwd = getcwd(NULL, 0);
	if (!cwd)
		return NULL;
	if (path[0] == '\0' || strcmp(path, ".") == 0)
		joined = strdup(cwd);
	else if (asprintf(&joined, "%s%s%s", cwd, strcmp(cwd, "/") ? "/" : "", path) < 0)
		joined = NULL;
	free(cwd);
	return joined;
}

/* The longest time limit any option takes (a day). */
#define SECONDS_MAX 86400.0

/* ARG's value as seconds above 0 and at most MAX into OUT, else the
 * option's error (which names MAX when it is lower than a day). */
static int parse_seconds(struct parse_state *st, const char *arg, double max, double *out)
{
	const char *value = option_value(arg);
	char *end;
	double v;

	errno = 0;
	v = strtod(value, &end);
	if (errno || end == value || *end || !isfinite(v) || v <= 0 || v > max) {
		if (max < SECONDS_MAX)
			return parse_fail(
				st, "option %s: expected a number of seconds above 0, at most %g",
				arg, max);
		return parse_fail(st, "option %s: expected a number of seconds above 0", arg);
	}
	*out = v;
	return 0;
}

static int parse_id(struct parse_state *st, const char *arg, long *out)
{
	const char *value = option_value(arg);
	char *end;
	long v;

	errno = 0;
	v = strtol(value, &end, 10);
	if (errno || end == value || *end || v < 0 || v > (long)UINT_MAX - 1)
		return parse_fail(st, "option %s: expected a numeric id", arg);
	*out = v;
	return 0;
}

static int replace_path(struct parse_state *st, char **slot, const char *value)
{
	char *path = absolute_path(value);

	if (!path)
		return parse_fail(st, "%s: cannot make the path absolute: %s", value,
				  strerror(errno));
	free(*slot);
	*slot = path;
	return 0;
}

static int parse_log_level(struct parse_state *st, const char *arg)
{
	static const struct {
		const char *name;
		int level;
	} levels[] = {
		{ "error", LOG_ERR },
		{ "warn", LOG_WARNING },
		{ "info", LOG_INFO },
		{ "debug", LOG_DEBUG },
	};
	const char *value = option_value(arg);

	for (size_t i = 0; i < sizeof(levels) / sizeof(levels[0]); i++) {
		if (strcmp(value, levels[i].name) == 0) {
			st->opts->log_level = levels[i].level;
			return 0;
		}
	}
	return parse_fail(st, "option %s: expected error, warn, info or debug", arg);
}

static int parse_log(struct parse_state *st, const char *arg)
{
	const char *value = option_value(arg);

	if (strcmp(value, "stderr") == 0) {
		st->opts->log_target = LOG_TO_STDERR;
		return 0;
	}
	if (strcmp(value, "syslog") == 0) {
		st->opts->log_target = LOG_TO_SYSLOG;
		return 0;
	}
	if (value[0] == '\0')
		return parse_fail(st, "option %s: expected stderr, syslog or a file path", arg);
	st->opts->log_target = LOG_TO_FILE;
	return replace_path(st, &st->opts->log_file, value);
}

/* ARG's value as a whole number from LO to HI into OUT, else the
 * option's error. */
static int parse_integer(struct parse_state *st, const char *arg, long lo, long hi, long *out)
{
	const char *value = option_value(arg);
	char *end;
	long v;

	errno = 0;
	v = strtol(value, &end, 10);
	if (errno || end == value || *end || v < lo || v > hi)
		return parse_fail(st, "option %s: expected an integer from %ld to %ld", arg, lo,
				  hi);
	*out = v;
	return 0;
}

static int parse_max_inflight(struct parse_state *st, const char *arg)
{
	long v;
	int rc = parse_integer(st, arg, 1, 100000, &v);

	if (rc == 0)
		st->opts->max_inflight = (unsigned)v;
	return rc;
}

static int parse_max_response_bytes(struct parse_state *st, const char *arg)
{
	const char *value = option_value(arg);
	char *end;
	long long v;

	errno = 0;
	v = strtoll(value, &end, 10);
	if (errno || end == value || *end || v < 1024 || v > (1LL << 32))
		return parse_fail(st, "option %s: expected a byte count from 1024 to 4294967296",
				  arg);
	st->opts->max_answer_bytes = (size_t)v;
	return 0;
}

static int parse_breaker_failures(struct parse_state *st, const char *arg)
{
	long v;
	int rc = parse_integer(st, arg, 1, 1000, &v);

	if (rc == 0)
		st->opts->breaker_failures = (unsigned)v;
	return rc;
}

/* The first cool-down: the doubling stops at BREAKER_COOLDOWN_MAX_S, so
 * a longer first one would make that cap a lie. */
static int parse_breaker_cooldown(struct parse_state *st, const char *arg)
{
	return parse_seconds(st, arg, BREAKER_COOLDOWN_MAX_S, &st->opts->breaker_cooldown_s);
}

static int parse_keyed_option(struct parse_state *st, const char *arg, int key)
{
	struct mount_options *o = st->opts;

	switch (key) {
	case KEY_STATE_DIR:
		if (option_value(arg)[0] == '\0')
			return parse_fail(st, "option state_dir: empty path");
		return replace_path(st, &o->state_dir, option_value(arg));
	case KEY_MAX_INFLIGHT:
		return parse_max_inflight(st, arg);
	case KEY_TIMEOUT:
		return parse_seconds(st, arg, SECONDS_MAX, &o->timeout_s);
	case KEY_CONNECT_TIMEOUT:
		return parse_seconds(st, arg, SECONDS_MAX, &o->connect_timeout_s);
	case KEY_CAFILE:
		if (access(option_value(arg), R_OK) != 0)
			return parse_fail(st, "option cafile: %s: %s", option_value(arg),
					  strerror(errno));
		return replace_path(st, &o->cafile, option_value(arg));
	case KEY_ADMIN_UID:
		return parse_id(st, arg, &o->admin_uid);
	case KEY_ADMIN_GID:
		return parse_id(st, arg, &o->admin_gid);
	case KEY_LOG:
		return parse_log(st, arg);
	case KEY_LOG_LEVEL:
		return parse_log_level(st, arg);
	case KEY_CATALOG:
		return replace_path(st, &o->catalog_path, option_value(arg));
	case KEY_MAX_RESPONSE_BYTES:
		return parse_max_response_bytes(st, arg);
	case KEY_NONEMPTY:
		o->allow_nonempty = 1;
		return 0;
	case KEY_BREAKER_FAILURES:
		return parse_breaker_failures(st, arg);
	case KEY_BREAKER_COOLDOWN:
		return parse_breaker_cooldown(st, arg);
	}
	return parse_fail(st, "internal error: option key %d", key);
}

/* fuse_opt callback: 0 consumes ARG, 1 keeps it for libfuse. */
static int option_proc(void *data, const char *arg, int key, struct fuse_args *outargs)
{
	struct parse_state *st = data;

	(void)outargs;
	switch (key) {
	case KEY_HELP:
		st->opts->show_help = 1;
		return 0;
	case KEY_VERSION:
		st->opts->show_version = 1;
		return 0;
	case KEY_FOREGROUND:
		st->opts->foreground = 1;
		return 0;
	case KEY_DEBUG:
		st->opts->debug = 1;
		st->opts->foreground = 1;
		return 0;
	case KEY_PRINT_CONFIG:
		st->opts->print_config = 1;
		return 0;
	case KEY_CHECK:
		st->opts->check_config = 1;
		return 0;
	case FUSE_OPT_KEY_NONOPT:
		if (st->n_nonopts >= 2)
			return parse_fail(st, "too many arguments: %s", arg);
		st->nonopts[st->n_nonopts] = absolute_path(arg);
		if (!st->nonopts[st->n_nonopts])
			return parse_fail(st, "%s: cannot make the path absolute: %s", arg,
					  strerror(errno));
		st->n_nonopts++;
		return 0;
	case FUSE_OPT_KEY_OPT:
		if (strncmp(arg, "fsname=", 7) == 0)
			st->has_fsname = 1;
		if (strncmp(arg, "subtype=", 8) == 0)
			st->has_subtype = 1;
		if (arg[0] == '-' && arg[1] != 'o')
			return parse_fail(st, "unknown option %s (see promptfs -h)", arg);
		return 1;
	default:
		if (parse_keyed_option(st, arg, key) < 0)
			return -1;
		return 0;
	}
}

static int is_regular_file(const char *path)
{
	struct stat st;

	return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

/* SPEC §2: $XDG_STATE_HOME/promptfs, else ~/.local/state/promptfs, and
 * /var/lib/promptfs for root. */
static char *default_state_dir(void)
{
	const char *xdg = getenv("XDG_STATE_HOME");
	const char *home = getenv("HOME");
	char *path = NULL;
	struct passwd *pw;

	if (geteuid() == 0)
		return strdup("/var/lib/promptfs");
	if (xdg && xdg[0] == '/') {
		if (asprintf(&path, "%s/promptfs", xdg) < 0)
			return NULL;
		return path;
	}
	if (!home || home[0] != '/') {
		pw = getpwuid(geteuid());
		home = pw ? pw->pw_dir : NULL;
	}
	if (!home)
		return NULL;
	if (asprintf(&path, "%s/.local/state/promptfs", home) < 0)
		return NULL;
	return path;
}

static void set_defaults(struct mount_options *opts)
{
	memset(opts, 0, sizeof(*opts));
	opts->max_inflight = 64;
	opts->timeout_s = 120;
	opts->connect_timeout_s = 10;
	opts->admin_uid = -1;
	opts->admin_gid = -1;
	opts->log_target = LOG_TO_DEFAULT;
	opts->log_level = LOG_INFO;
	opts->max_prompt_bytes = 1024 * 1024;
	opts->max_answer_bytes = 16 * 1024 * 1024;
	opts->breaker_failures = BREAKER_THRESHOLD;
	opts->breaker_cooldown_s = BREAKER_COOLDOWN_S;
}

static int add_fuse_defaults(struct parse_state *st, struct fuse_args *fuse_args)
{
	if (fuse_opt_add_arg(fuse_args, "-odefault_permissions") != 0)
		return parse_fail(st, "out of memory");
	if (!st->has_subtype && fuse_opt_add_arg(fuse_args, "-osubtype=promptfs") != 0)
		return parse_fail(st, "out of memory");
	if (!st->has_fsname && fuse_opt_add_arg(fuse_args, "-ofsname=promptfs") != 0)
		return parse_fail(st, "out of memory");
	if (st->opts->debug && fuse_opt_add_arg(fuse_args, "-odebug") != 0)
		return parse_fail(st, "out of memory");
	return 0;
}

int options_parse(int argc, char **argv, struct mount_options *opts, struct fuse_args *fuse_args,
		  char *err, size_t err_size)
{
	struct parse_state st = {
		.opts = opts,
		.err = err,
		.err_size = err_size,
	};
	struct fuse_args in = FUSE_ARGS_INIT(argc, argv);

	set_defaults(opts);
	err[0] = '\0';
	*fuse_args = (struct fuse_args)FUSE_ARGS_INIT(0, NULL);
	/* fuse_opt_parse copies argv[0] and every kept option into OUT. */
	if (fuse_opt_parse(&in, &st, promptfs_opts, option_proc) != 0) {
		parse_fail(&st, "invalid options");
		goto fail;
	}
	*fuse_args = in;
	if (st.failed)
		goto fail;
	if (opts->show_help || opts->show_version)
		return 0;
	if (opts->check_config) {
		/* CONFIG [MOUNTPOINT]: the mount's own command line with
		 * --check added checks its config; nothing is mounted. */
		if (st.n_nonopts == 0) {
			parse_fail(&st, "--check needs CONFIG (usage: promptfs --check CONFIG)");
			goto fail;
		}
		opts->config_path = st.nonopts[0];
		opts->mountpoint = st.nonopts[1];
		st.nonopts[0] = st.nonopts[1] = NULL;
		return 0;
	}
	if (st.n_nonopts == 2) {
		opts->config_path = st.nonopts[0];
		opts->mountpoint = st.nonopts[1];
	} else if (st.n_nonopts == 1 && opts->print_config) {
		opts->config_path = st.nonopts[0];
	} else if (st.n_nonopts == 1 && is_regular_file(st.nonopts[0])) {
		/* mounting over it would hide the config and take its name */
		parse_fail(&st,
			   "missing MOUNTPOINT: %s is a file (usage: promptfs [options] [CONFIG] "
			   "MOUNTPOINT)",
			   st.nonopts[0]);
		goto fail;
	} else if (st.n_nonopts == 1) {
		opts->mountpoint = st.nonopts[0];
	} else if (!opts->print_config) {
		parse_fail(&st,
			   "missing MOUNTPOINT (usage: promptfs [options] [CONFIG] MOUNTPOINT)");
		goto fail;
	}
	st.nonopts[0] = st.nonopts[1] = NULL;
	if (!opts->state_dir) {
		opts->state_dir = default_state_dir();
		if (!opts->state_dir) {
			parse_fail(&st, "cannot find a state directory: set -o state_dir=DIR");
			goto fail;
		}
	}
	if (opts->log_target == LOG_TO_DEFAULT)
		opts->log_target = opts->foreground ? LOG_TO_STDERR : LOG_TO_SYSLOG;
	if (add_fuse_defaults(&st, fuse_args) < 0)
		goto fail;
	return 0;
fail:
	free(st.nonopts[0]);
	free(st.nonopts[1]);
	return -EINVAL;
}

void options_release(struct mount_options *opts)
{
	free(opts->config_path);
	free(opts->mountpoint);
	free(opts->state_dir);
	free(opts->cafile);
	free(opts->log_file);
	free(opts->catalog_path);
	memset(opts, 0, sizeof(*opts));
}

void options_print_help(const char *progname)
{
	printf("usage: %s [options] [CONFIG] MOUNTPOINT\n"
	       "       %s --check [-o catalog=FILE] CONFIG\n"
	       "\n"
	       "Mounts multi-cloud AI inference as files.\n"
	       "\n"
	       "options:\n"
	       "    -h, --help             print this help\n"
	       "    -V, --version          print the version\n"
	       "    -f                     stay in the foreground\n"
	       "    -d                     debug output (implies -f)\n"
	       "    --print-config         print the config in use (no secrets) and exit\n"
	       "    --check CONFIG         check CONFIG and exit, mounting nothing: every\n"
	       "                           error is printed (file, JSON path, reason);\n"
	       "                           secrets need not be present, but a secret file\n"
	       "                           that is must be mode 0600; exit 0 valid, 1 not\n"
	       "    -o opt[,opt...]        mount options:\n"
	       "       state_dir=DIR         durable store (files, jobs)\n"
	       "       max_inflight=N        backend requests in flight at once (64)\n"
	       "       timeout=S             limit of one attempt, seconds (120)\n"
	       "       connect_timeout=S     connection limit, seconds (10)\n"
	       "       cafile=FILE           extra trusted CA certificates (PEM)\n"
	       "       admin_uid=UID, admin_gid=GID   who may change policy\n"
	       "       log=stderr|syslog|FILE\n"
	       "       log_level=error|warn|info|debug\n"
	       "       catalog=FILE          model and price catalog\n"
	       "       max_response_bytes=N  cap of one answer (16 MiB)\n"
	       "       nonempty              mount over a directory that is not empty\n"
	       "       breaker_failures=N    failed attempts that open a circuit (5)\n"
	       "       breaker_cooldown=S    its first cool-down, seconds (30; up to 300)\n"
	       "       allow_other, ro, fsname=, ... are passed to FUSE\n",
	       progname, progname);
}
