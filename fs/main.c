/* promptfs: mounts multi-cloud AI inference as files.
 *
 * Start-up order matters: everything that can fail on the user's input
 * (options, config, credentials, state_dir, the mount itself) is checked
 * before the daemon detaches, so the reason reaches the terminal; the
 * engine thread starts after fuse_daemonize(), whose fork would lose it. */
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "backends/metrics.h"
#include "fs/audit.h"
#include "fs/job.h"
#include "fs/log.h"
#include "fs/mountpoint.h"
#include "fs/notify.h"
#include "fs/policy_store.h"
#include "fs/node.h"
#include "fs/ops.h"
#include "fs/promptfs.h"
#include "fs/state.h"

struct promptfs pfs = {
	.state_fd = -1,
	.tree_fd = -1,
	.staging_fd = -1,
	.lock_fd = -1,
};

static int load_config(const struct mount_options *opts, struct config **cfg)
{
	char err[CONFIG_ERROR_MAX];
	int rc;

	if (opts->config_path)
		rc = config_load(opts->config_path, opts->catalog_path, cfg, err);
	else
		rc = config_from_environment(opts->catalog_path, cfg, err);
	if (rc < 0)
		fprintf(stderr, "promptfs: %s\n", err);
	return rc;
}

/* A state_dir inside the mount would be served by the mount itself. */
static int check_state_dir_placement(const struct mount_options *opts)
{
	char mnt[PATH_MAX], state[PATH_MAX];
	size_t n;

	/* a dead mount may not resolve; the path is absolute already */
	if (!realpath(opts->mountpoint, mnt))
		snprintf(mnt, sizeof(mnt), "%s", opts->mountpoint);
	if (!realpath(opts->state_dir, state))
		return 0; /* created later, outside anything we serve */
	n = strlen(mnt);
	if (strncmp(state, mnt, n) == 0 && (state[n] == '/' || state[n] == '\0')) {
		fprintf(stderr, "promptfs: state_dir %s is inside the mountpoint %s\n",
			opts->state_dir, opts->mountpoint);
		return -EINVAL;
	}
	return 0;
}

/* Every queued job keeps its response file open, and every reader and
 * transfer takes a descriptor more: thousands of jobs need more than the
 * usual soft limit of 1024. */
static void raise_fd_limit(void)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
}

static void *wait_for_cancel(void *arg)
{
	(void)arg;
	for (;;)
		pause();
	return NULL;
}

/* libfuse ends its workers with pthread_cancel, and glibc's first
 * pthread_cancel dlopens libgcc_s for the unwinder: at unmount, after
 * the descriptors ran out, that open fails and glibc aborts. One
 * cancellation now has it loaded (and kept) for the life of the daemon.
 * glibc may let it go in the child of a fork, so this runs after the
 * last one (fuse_daemonize). */
static void load_unwinder(void)
{
	pthread_t t;

	if (pthread_create(&t, NULL, wait_for_cancel, NULL) != 0)
		return;
	pthread_cancel(t);
	pthread_join(t, NULL);
}

static int serve(struct fuse_session *se)
{
	struct fuse_loop_config *loop = fuse_loop_cfg_create();
	int rc;

	if (!loop)
		return -ENOMEM;
	/* Parked reads hold no thread; these serve opens, closes (which
	 * fsync submissions) and stats arriving together. A thread once
	 * made stays: under many writers, threads that exit when idle are
	 * made again a moment later, each with its megabyte of buffer. */
	fuse_loop_cfg_set_max_threads(loop, 64);
	fuse_loop_cfg_set_idle_threads(loop, 64);
	rc = fuse_session_loop_mt(se, loop);
	fuse_loop_cfg_destroy(loop);
	return rc;
}

static void ignore_sighup(void)
{
	struct sigaction sa = { .sa_handler = SIG_IGN };

	/* libfuse maps SIGHUP to unmount; the contract says it must not */
	sigaction(SIGHUP, &sa, NULL);
}

/* ---- SIGHUP: re-read the config ---- */

static int reload_pipe[2] = { -1, -1 };

static void on_sighup(int sig)
{
	char byte = 'r';
	int saved = errno;

	(void)sig;
	if (write(reload_pipe[1], &byte, 1) < 0) {
		/* a reload is already pending */
	}
	errno = saved;
}

/* Runs on the engine thread, the only reader of credentials. */
static void adopt_credentials(void *arg)
{
	struct config *fresh = arg;
	size_t n = config_adopt_credentials((struct config *)pfs.config, fresh);

	config_free(fresh);
	log_info("config reloaded: credentials of %zu cloud(s) renewed", n);
}

static void reload_config(void)
{
	char err[CONFIG_ERROR_MAX];
	struct config *fresh = NULL;
	int rc;

	if (pfs.opts->config_path)
		rc = config_load(pfs.opts->config_path, pfs.opts->catalog_path, &fresh, err);
	else
		rc = config_from_environment(pfs.opts->catalog_path, &fresh, err);
	if (rc < 0) {
		log_error("config reload refused, the previous config stays: %s", err);
		return;
	}
	if (!config_same_structure(pfs.config, fresh))
		log_warn("config reload: clouds, regions, endpoints or models changed; "
			 "the tree follows at the next mount");
	if (engine_run_credentials_update(pfs.engine, adopt_credentials, fresh) < 0) {
		log_warn("config reload: the previous reload is still being applied");
		config_free(fresh);
	}
}

static void *reload_main(void *arg)
{
	char byte;

	(void)arg;
	while (read(reload_pipe[0], &byte, 1) == 1) {
		if (byte == 'q')
			break;
		log_reopen(); /* logrotate: a SIGHUP after moving the files away */
		audit_reopen();
		reload_config();
	}
	return NULL;
}

/* After fuse_daemonize: the thread would not survive its fork. */
static int start_reloader(pthread_t *thread)
{
	struct sigaction sa = { .sa_handler = on_sighup, .sa_flags = SA_RESTART };

	if (pipe2(reload_pipe, O_CLOEXEC | O_NONBLOCK) < 0)
		return -errno;
	/* the reader blocks; only the signal handler must never block */
	fcntl(reload_pipe[0], F_SETFL, 0);
	if (pthread_create(thread, NULL, reload_main, NULL) != 0)
		return -EAGAIN;
	pthread_setname_np(*thread, "pfs-reload");
	sigemptyset(&sa.sa_mask);
	sigaction(SIGHUP, &sa, NULL);
	return 0;
}

static void stop_reloader(pthread_t thread)
{
	char byte = 'q';

	ignore_sighup();
	if (write(reload_pipe[1], &byte, 1) == 1)
		pthread_join(thread, NULL);
	close(reload_pipe[0]);
	close(reload_pipe[1]);
}

int main(int argc, char *argv[])
{
	struct engine_options engine_opts = { 0 };
	struct mount_options opts;
	struct fuse_args args;
	struct config *cfg = NULL;
	struct fuse_session *se = NULL;
	pthread_t reloader;
	int reloading = -1, notifying;
	char err[1024];
	int rc, status = 1;

	rc = options_parse(argc, argv, &opts, &args, err, sizeof(err));
	if (rc < 0) {
		fprintf(stderr, "promptfs: %s\n", err);
		goto out_args;
	}
	if (opts.show_help) {
		options_print_help(argv[0]);
		status = 0;
		goto out_args;
	}
	if (opts.show_version) {
		printf("promptfs %s (libfuse %s, %s)\n", PROMPTFS_VERSION, fuse_pkgversion(),
		       curl_version());
		status = 0;
		goto out_args;
	}
	if (opts.check_config) {
		status = config_check_command(opts.config_path, opts.catalog_path, stdout, stderr);
		goto out_args;
	}
	notifying = notify_init();
	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
		fprintf(stderr, "promptfs: cannot initialise libcurl\n");
		goto out_args;
	}
	json_object_seed(0);
	if (load_config(&opts, &cfg) < 0)
		goto out_curl;
	if (opts.print_config) {
		status = config_print(cfg, stdout) < 0 ? 1 : 0;
		goto out_config;
	}
	if (check_state_dir_placement(&opts) < 0)
		goto out_config;
	/* before the mountpoint and state_dir, which may have to say what
	 * they found and changed; a log file inside the mountpoint is
	 * opened before the mount hides it */
	if (log_open(opts.log_target, opts.log_file, opts.log_level) < 0) {
		fprintf(stderr, "promptfs: log %s: %s\n", opts.log_file, strerror(errno));
		goto out_config;
	}
	if (notifying < 0)
		log_warn("NOTIFY_SOCKET is neither a path nor an abstract name (@…): "
			 "the service manager will not be told when the mount is ready");
	else if (notifying > 0 && !opts.foreground)
		log_warn("NOTIFY_SOCKET is set but promptfs detaches: a service manager "
			 "waiting for READY=1 from the process it started needs -f");
	if (mountpoint_prepare(opts.mountpoint, opts.allow_nonempty, err, sizeof(err)) < 0) {
		fprintf(stderr, "promptfs: %s\n", err);
		goto out_log;
	}
	raise_fd_limit();
	/* What is made in state_dir gets exactly the mode asked for: a file
	 * or workspace made through the mount has its creator's mode minus
	 * its creator's umask (the kernel applies it) and the policy's,
	 * never the daemon's own as well; the daemon's own files name
	 * theirs (0600, 0700). */
	umask(0);
	pfs.opts = &opts;
	pfs.config = cfg;
	pfs.daemon_is_root = geteuid() == 0;
	if (state_open(opts.state_dir, err, sizeof(err)) < 0) {
		fprintf(stderr, "promptfs: %s\n", err);
		goto out_log;
	}
	if (jobs_journal_open(err, sizeof(err)) < 0) {
		fprintf(stderr, "promptfs: %s\n", err);
		goto out_state;
	}
	rc = node_table_init(pfs.tree_fd);
	if (rc < 0) {
		fprintf(stderr, "promptfs: %s\n", strerror(-rc));
		goto out_journal;
	}
	jobs_init();
	/* every deployment counted from the first job on, resumed ones too */
	rc = metrics_init(cfg);
	if (rc < 0) {
		fprintf(stderr, "promptfs: %s\n", strerror(-rc));
		goto out_nodes;
	}
	se = fuse_session_new(&args, &promptfs_ops, sizeof(promptfs_ops), NULL);
	if (!se)
		goto out_nodes; /* libfuse said why on stderr */
	pfs.session = se;
	if (fuse_set_signal_handlers(se) != 0)
		goto out_session;
	ignore_sighup();
	if (fuse_session_mount(se, opts.mountpoint) != 0)
		goto out_signals;
	if (!opts.foreground)
		log_warn_if_unheard();
	if (fuse_daemonize(opts.foreground) != 0)
		goto out_unmount;

	rc = jobs_start_finisher();
	if (rc < 0) {
		log_error("cannot start the threads that record job ends: %s", strerror(-rc));
		goto out_unmount;
	}
	engine_opts.max_inflight = opts.max_inflight;
	engine_opts.connect_timeout_s = opts.connect_timeout_s;
	engine_opts.cafile = opts.cafile;
	engine_opts.max_answer_bytes = opts.max_answer_bytes;
	engine_opts.breaker.threshold = opts.breaker_failures;
	engine_opts.breaker.cooldown_s = opts.breaker_cooldown_s;
	engine_opts.breaker.cooldown_max_s = BREAKER_COOLDOWN_MAX_S;
	/* JSON framing around the text can take several times its size */
	engine_opts.max_body_bytes = opts.max_answer_bytes * 64 + 1024 * 1024;
	pfs.engine = engine_new(&engine_opts, &rc);
	if (!pfs.engine) {
		log_error("cannot start the engine: %s", strerror(-rc));
		goto out_finisher;
	}
	jobs_resume();
	reloading = start_reloader(&reloader);
	if (reloading < 0)
		log_warn("SIGHUP will not reload the config: %s", strerror(-reloading));
	log_info("mounted %s (state_dir %s)", opts.mountpoint, opts.state_dir);
	load_unwinder();
	/* requests that arrive before the loop reads them wait in the kernel:
	 * the mount answers from here on */
	rc = notify_send("READY=1\nSTATUS=serving");
	if (rc < 0)
		log_warn("cannot tell the service manager that the mount is ready: %s",
			 strerror(-rc));
	rc = serve(se);
	/* SIGTERM/SIGINT end the loop with the signal's number: a clean
	 * unmount, as asked */
	status = rc == 0 || rc == SIGTERM || rc == SIGINT ? 0 : 1;
	notify_send("STOPPING=1\nSTATUS=unmounting");
	log_info("unmounting %s", opts.mountpoint);
	if (reloading == 0)
		stop_reloader(reloader);

	jobs_begin_shutdown();
	engine_free(pfs.engine);
	pfs.engine = NULL;
out_finisher:
	jobs_stop_finisher();
	audit_close();
	ops_release_all();
out_unmount:
	fuse_session_unmount(se);
out_signals:
	fuse_remove_signal_handlers(se);
out_session:
	fuse_session_destroy(se);
out_nodes:
	metrics_free();
	policy_store_destroy();
	node_table_destroy();
out_journal:
	jobs_journal_close();
out_state:
	state_close();
out_log:
	log_close();
out_config:
	config_free(cfg);
out_curl:
	curl_global_cleanup();
out_args:
	fuse_opt_free_args(&args);
	options_release(&opts);
	return status;
}
