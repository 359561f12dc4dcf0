/* Command line and mount options (SPEC §1–§2).
 *
 * options_parse() reads argv with a fuse_opt table, keeps promptfs's own
 * options in struct mount_options, drops the fstab-only words, and leaves
 * in FUSE_ARGS what libfuse itself must see (allow_other, ro, fsname …),
 * with default_permissions and subtype=promptfs added. Every path in it
 * (CONFIG, MOUNTPOINT, state_dir, cafile, catalog, log) is absolute,
 * made so against the directory it was started in. */
#ifndef PROMPTFS_OPTIONS_H
#define PROMPTFS_OPTIONS_H

#include <stddef.h>
#include <sys/types.h>

#define FUSE_USE_VERSION 312
#include <fuse_lowlevel.h>

enum log_target { LOG_TO_DEFAULT, LOG_TO_STDERR, LOG_TO_SYSLOG, LOG_TO_FILE };

struct mount_options {
	char *config_path; /* NULL: the embedded default */
	char *mountpoint;
	int foreground;
	int debug;
	int show_help;
	int show_version;
	int print_config;
	int check_config; /* --check: validate CONFIG, mount nothing */

	char *state_dir; /* always set after options_parse */
	unsigned max_inflight;
	double timeout_s;
	double connect_timeout_s;
	char *cafile;
	long admin_uid; /* -1: none */
	long admin_gid;
	enum log_target log_target;
	char *log_file;
	int log_level; /* LOG_ERR … LOG_DEBUG from syslog.h */
	char *catalog_path;
	int allow_nonempty;	   /* -o nonempty */
	unsigned breaker_failures; /* failed attempts in a row that open a circuit */
	double breaker_cooldown_s; /* its first cool-down; doubles up to BREAKER_COOLDOWN_MAX_S */

	/* Not from the user: internal limits with safe defaults. */
	size_t max_prompt_bytes;
	size_t max_answer_bytes;
};

/* Parses ARGC/ARGV into OPTS (zeroed and defaulted first) and FUSE_ARGS
 * (caller frees with fuse_opt_free_args; options_release frees OPTS's
 * strings). Returns 0, or -EINVAL with a sentence in ERR. */
int options_parse(int argc, char **argv, struct mount_options *opts, struct fuse_args *fuse_args,
		  char *err, size_t err_size);

void options_release(struct mount_options *opts);

void options_print_help(const char *progname);

#endif
