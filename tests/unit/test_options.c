/* Command line and -o options (SPEC §1–§2). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <unistd.h>

#include "mountopts/options.h"

struct parsed {
	struct mount_options opts;
	struct fuse_args args;
	char err[256];
	int rc;
};

static void parse(struct parsed *p, int argc, const char **argv)
{
	memset(p, 0, sizeof(*p));
	p->rc = options_parse(argc, (char **)argv, &p->opts, &p->args, p->err, sizeof(p->err));
}

static void release(struct parsed *p)
{
	fuse_opt_free_args(&p->args);
	options_release(&p->opts);
}

static int has_arg(const struct fuse_args *args, const char *want)
{
	for (int i = 0; i < args->argc; i++) {
		if (strcmp(args->argv[i], want) == 0)
			return 1;
	}
	return 0;
}

/* libfuse keeps -o options together as one "-oa,b" or "-o" "a,b" pair;
 * look for the option anywhere in the kept arguments */
static int kept_option(const struct fuse_args *args, const char *opt)
{
	for (int i = 0; i < args->argc; i++) {
		if (strstr(args->argv[i], opt))
			return 1;
	}
	return 0;
}

static void config_and_mountpoint_with_promptfs_options(void **state)
{
	const char *argv[] = { "promptfs", "-o",
			       "state_dir=/tmp/s,max_inflight=8,timeout=2.5,"
			       "connect_timeout=3,admin_uid=1000,admin_gid=50,log_level=debug,"
			       "breaker_failures=3,breaker_cooldown=2.5,allow_other",
			       "/etc/clouds.json", "/mnt/ai" };
	struct parsed p;

	(void)state;
	parse(&p, 5, argv);
	assert_int_equal(p.rc, 0);
	assert_string_equal(p.opts.config_path, "/etc/clouds.json");
	assert_string_equal(p.opts.mountpoint, "/mnt/ai");
	assert_string_equal(p.opts.state_dir, "/tmp/s");
	assert_int_equal(p.opts.max_inflight, 8);
	assert_true(p.opts.timeout_s == 2.5);
	assert_true(p.opts.connect_timeout_s == 3);
	assert_int_equal(p.opts.admin_uid, 1000);
	assert_int_equal(p.opts.admin_gid, 50);
	assert_int_equal(p.opts.log_level, LOG_DEBUG);
	assert_int_equal(p.opts.breaker_failures, 3);
	assert_true(p.opts.breaker_cooldown_s == 2.5);
	/* promptfs's own options are consumed; FUSE's pass through */
	assert_false(kept_option(&p.args, "state_dir"));
	assert_false(kept_option(&p.args, "breaker_"));
	assert_true(kept_option(&p.args, "allow_other"));
	assert_true(has_arg(&p.args, "-odefault_permissions"));
	assert_true(has_arg(&p.args, "-osubtype=promptfs"));
	release(&p);
}

static void defaults_without_config(void **state)
{
	const char *argv[] = { "promptfs", "-f", "/mnt/ai" };
	struct parsed p;

	(void)state;
	parse(&p, 3, argv);
	assert_int_equal(p.rc, 0);
	assert_null(p.opts.config_path);
	assert_string_equal(p.opts.mountpoint, "/mnt/ai");
	assert_int_equal(p.opts.max_inflight, 64);
	assert_true(p.opts.timeout_s == 120);
	assert_true(p.opts.connect_timeout_s == 10);
	assert_int_equal(p.opts.admin_uid, -1);
	assert_int_equal(p.opts.breaker_failures, 5);
	assert_true(p.opts.breaker_cooldown_s == 30);
	assert_int_equal(p.opts.log_target, LOG_TO_STDERR);
	assert_non_null(p.opts.state_dir);
	release(&p);
}

static void fstab_words_are_ignored(void **state)
{
	const char *argv[] = {
		"promptfs", "/etc/c.json", "/mnt/ai", "-o",
		"_netdev,nofail,noauto,auto,user,users,defaults,default_permissions"
	};
	struct parsed p;

	(void)state;
	parse(&p, 5, argv);
	assert_int_equal(p.rc, 0);
	assert_false(kept_option(&p.args, "_netdev"));
	assert_false(kept_option(&p.args, "nofail"));
	release(&p);
}

static void bad_values_are_refused_with_a_reason(void **state)
{
	static const struct {
		const char *opt;
		const char *message;
	} cases[] = {
		{ "max_inflight=0", "option max_inflight=0: expected an integer from 1 to 100000" },
		{ "timeout=abc", "option timeout=abc: expected a number of seconds above 0" },
		{ "timeout=-1", "option timeout=-1: expected a number of seconds above 0" },
		{ "admin_uid=x", "option admin_uid=x: expected a numeric id" },
		{ "breaker_failures=0",
		  "option breaker_failures=0: expected an integer from 1 to 1000" },
		{ "breaker_failures=2.5",
		  "option breaker_failures=2.5: expected an integer from 1 to 1000" },
		{ "breaker_cooldown=0",
		  "option breaker_cooldown=0: expected a number of seconds above 0, at most 300" },
		{ "breaker_cooldown=301", "option breaker_cooldown=301: expected a number of "
					  "seconds above 0, at most 300" },
		{ "breaker_cooldown=",
		  "option breaker_cooldown=: expected a number of seconds above 0, at most 300" },
		{ "log_level=loud", "option log_level=loud: expected error, warn, info or debug" },
		{ "log=", "option log=: expected stderr, syslog or a file path" },
		{ "cafile=/nonexistent/ca.pem",
		  "option cafile: /nonexistent/ca.pem: No such file or directory" },
	};
	struct parsed p;

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const char *argv[] = { "promptfs", "-o", cases[i].opt, "/mnt/ai" };

		parse(&p, 4, argv);
		assert_int_equal(p.rc, -EINVAL);
		assert_string_equal(p.err, cases[i].message);
		release(&p);
	}
}

static void missing_mountpoint_and_extra_arguments(void **state)
{
	const char *none[] = { "promptfs" };
	const char *three[] = { "promptfs", "a", "b", "c" };
	struct parsed p;

	(void)state;
	parse(&p, 1, none);
	assert_int_equal(p.rc, -EINVAL);
	assert_string_equal(p.err,
			    "missing MOUNTPOINT (usage: promptfs [options] [CONFIG] MOUNTPOINT)");
	release(&p);
	parse(&p, 4, three);
	assert_int_equal(p.rc, -EINVAL);
	assert_string_equal(p.err, "too many arguments: c");
	release(&p);
}

static void assert_under(const char *dir, const char *name, const char *value)
{
	char *expected = NULL;

	assert_true(asprintf(&expected, "%s/%s", dir, name) > 0);
	assert_string_equal(value, expected);
	free(expected);
}

/* The daemon runs in /: every path must mean what it meant where it was
 * started, at reload and at unmount as well. */
static void relative_paths_are_made_absolute(void **state)
{
	char dir[] = "/tmp/promptfs-options-XXXXXX";
	const char *argv[] = { "promptfs", "-o",
			       "state_dir=st,log=logs/p.log,catalog=./cat.json,cafile=ca.pem",
			       "./clouds.json", "mnt" };
	char *saved = getcwd(NULL, 0);
	struct parsed p;
	FILE *f;

	(void)state;
	assert_non_null(mkdtemp(dir));
	assert_int_equal(chdir(dir), 0);
	f = fopen("ca.pem", "w"); /* cafile must be readable at once */
	assert_non_null(f);
	fclose(f);
	parse(&p, 5, argv);
	assert_int_equal(p.rc, 0);
	assert_under(dir, "clouds.json", p.opts.config_path);
	assert_under(dir, "mnt", p.opts.mountpoint);
	assert_under(dir, "st", p.opts.state_dir);
	assert_under(dir, "logs/p.log", p.opts.log_file);
	assert_under(dir, "cat.json", p.opts.catalog_path);
	assert_under(dir, "ca.pem", p.opts.cafile);
	assert_int_equal(p.opts.log_target, LOG_TO_FILE);
	release(&p);
	unlink("ca.pem");
	assert_int_equal(chdir(saved), 0);
	rmdir(dir);
	free(saved);
}

/* `promptfs -o state_dir=X clouds.json` once mounted FUSE over the
 * config file itself. */
static void a_lone_file_argument_is_a_missing_mountpoint(void **state)
{
	char path[] = "/tmp/promptfs-options-XXXXXX";
	const char *argv[] = { "promptfs", path };
	const char *print[] = { "promptfs", "--print-config", path };
	char *expected = NULL;
	struct parsed p;
	int fd;

	(void)state;
	fd = mkstemp(path);
	assert_true(fd >= 0);
	close(fd);
	parse(&p, 2, argv);
	assert_int_equal(p.rc, -EINVAL);
	assert_true(asprintf(&expected,
			     "missing MOUNTPOINT: %s is a file (usage: promptfs [options] [CONFIG] "
			     "MOUNTPOINT)",
			     path) > 0);
	assert_string_equal(p.err, expected);
	free(expected);
	release(&p);
	/* the one argument of --print-config is the config */
	parse(&p, 3, print);
	assert_int_equal(p.rc, 0);
	assert_string_equal(p.opts.config_path, path);
	release(&p);
	unlink(path);
}

static void help_version_and_debug(void **state)
{
	const char *help[] = { "promptfs", "-h" };
	const char *version[] = { "promptfs", "-V" };
	const char *debug[] = { "promptfs", "-d", "/mnt/ai" };
	struct parsed p;

	(void)state;
	parse(&p, 2, help);
	assert_int_equal(p.rc, 0);
	assert_true(p.opts.show_help);
	release(&p);
	parse(&p, 2, version);
	assert_true(p.opts.show_version);
	release(&p);
	parse(&p, 3, debug);
	assert_true(p.opts.debug);
	assert_true(p.opts.foreground);
	assert_true(has_arg(&p.args, "-odebug"));
	release(&p);
}

/* --check CONFIG [MOUNTPOINT]: CONFIG is the first argument even alone,
 * and -o options are parsed (and checked) as for a mount. */
static void check_takes_config(void **state)
{
	const char *alone[] = { "promptfs", "--check", "clouds.json" };
	const char *as_mounted[] = { "promptfs",    "--check", "-o", "catalog=/etc/cat.json",
				     "clouds.json", "/mnt/ai" };
	const char *none[] = { "promptfs", "--check" };
	const char *bad_option[] = { "promptfs", "--check", "-o", "max_inflight=0", "clouds.json" };
	struct parsed p;

	(void)state;
	parse(&p, 3, alone);
	assert_int_equal(p.rc, 0);
	assert_true(p.opts.check_config);
	/* made absolute, like every path of the command line */
	assert_true(p.opts.config_path[0] == '/');
	assert_string_equal(strrchr(p.opts.config_path, '/'), "/clouds.json");
	assert_null(p.opts.mountpoint);
	release(&p);

	parse(&p, 6, as_mounted);
	assert_int_equal(p.rc, 0);
	assert_string_equal(strrchr(p.opts.config_path, '/'), "/clouds.json");
	assert_string_equal(p.opts.mountpoint, "/mnt/ai");
	assert_string_equal(p.opts.catalog_path, "/etc/cat.json");
	release(&p);

	parse(&p, 2, none);
	assert_int_equal(p.rc, -EINVAL);
	assert_string_equal(p.err, "--check needs CONFIG (usage: promptfs --check CONFIG)");
	release(&p);

	parse(&p, 5, bad_option);
	assert_int_equal(p.rc, -EINVAL);
	assert_non_null(strstr(p.err, "max_inflight=0"));
	release(&p);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(config_and_mountpoint_with_promptfs_options),
		cmocka_unit_test(defaults_without_config),
		cmocka_unit_test(fstab_words_are_ignored),
		cmocka_unit_test(bad_values_are_refused_with_a_reason),
		cmocka_unit_test(missing_mountpoint_and_extra_arguments),
		cmocka_unit_test(relative_paths_are_made_absolute),
		cmocka_unit_test(a_lone_file_argument_is_a_missing_mountpoint),
		cmocka_unit_test(help_version_and_debug),
		cmocka_unit_test(check_takes_config),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
