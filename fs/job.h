/* Jobs (SPEC §5): a prompt handed to the engine, and the generated files
 * beside it. A job lives in memory from submission until it ends; the
 * files in state_dir/tree are its durable record, so a job that was
 * queued or running when the daemon stopped is found and resumed at the
 * next mount. */
#ifndef PROMPTFS_JOB_H
#define PROMPTFS_JOB_H

#include <jansson.h>
#include <stddef.h>
#include <sys/types.h>

#include "fs/node.h"

struct job;

/* One open NAME.response: where its reader is, so that a reader that got
 * bytes of an attempt later thrown away gets EIO instead of a mixture. */
struct response_reader {
	struct job *job; /* referenced; NULL for a finished job's file */
	int fd;		 /* the response file */
	int failed;	 /* finished job that failed: every read is EIO */
	unsigned generation;
	unsigned long long delivered;
	struct fuse_pollhandle *poll_handle; /* under the jobs lock */
	struct response_reader *next_poller;
	int polling;
};

int jobs_init(void);
/* The threads that record job ends (job_finish.c); after
 * fuse_daemonize(). Stop them after the engine: they record every end
 * handed to them first. */
int jobs_start_finisher(void);
void jobs_stop_finisher(void);
/* Before the engine stops: jobs it cancels now stay queued on disk. */
void jobs_begin_shutdown(void);

/* Opens the journal in state_dir (before the mount). 0 or -errno with a
 * sentence in ERR. */
int jobs_journal_open(char *err, size_t err_size);
void jobs_journal_close(void);

/* Replays the journal: the jobs it shows unfinished are handed to the
 * engine again, finished ones get back files a crash lost. After the
 * finisher and the engine started. */
void jobs_resume(void);

/* A directory rename, recorded in the journal before it is done, so
 * that the jobs below it are found at their new place after a crash. */
struct job_move {
	json_t *record;
};
/* 0 with the record durable (then call job_move_end whatever happens),
 * or -errno: the rename must not go ahead. */
int job_move_begin(struct job_move *mv, struct node *from_dir, const char *from_name,
		   struct node *to_dir, const char *to_name, int exchange);
/* MOVED: whether the rename was done. */
void job_move_end(struct job_move *mv, int moved);

/* The directory whose inode number in state_dir/tree is ACCT was
 * removed (or ACCT is a new directory's, whose number an old one may
 * have had): its budget account is forgotten, durably (a "forget"
 * record, flushed), so that no directory given that number later finds
 * the old one's spending, even after a crash. 0, or -errno when the
 * record could not be made durable (the account is gone in memory all
 * the same). */
int job_journal_forget(uint64_t acct);

/* Checks the prompt in FD, read as DIR's policies say and as they would
 * admit it now (its budgets' room included, nothing reserved): 0 if it
 * would be submitted, -ENODATA if empty, -EILSEQ, -EINVAL, -EFBIG,
 * -EACCES or -EDQUOT with the reason in ERR. */
int job_check_prompt(struct node *dir, int fd, char *err, size_t err_size);

/* Submits the prompt file PROMPT_NAME (NAME.prompt) in DIR, open in
 * PROMPT_FD, for UID, to the deployment DIR is under now (it stays the
 * job's if DIR moves while it runs). Durable before it returns 0. An
 * empty prompt is not submitted (0). -EINVAL/-EFBIG: refused, reason in
 * NAME.error. -ENOENT: DIR is under no configured model. */
int job_submit(struct node *dir, const char *prompt_name, int prompt_fd, uid_t uid);

/* PROMPT_NAME in DIR, open in PROMPT_FD, was not stored whole (a write
 * failed with ERROR: EFBIG and EDQUOT from the caps above, or the
 * disk's): it is not submitted, the previous job of NAME is cancelled
 * and its files removed, and NAME.error says why. Returns -ERROR,
 * close()'s answer. */
int job_refuse_unwritten(struct node *dir, const char *prompt_name, int prompt_fd, int error);

/* Whether a prompt PROMPT_NAME may be made in DIR at all (SPEC 5.1:
 * refused as early as the information allows): -EACCES when the
 * policies exclude DIR's deployment, -EDQUOT when even an empty prompt's
 * worst case exceeds max_request_usd or has no room in a budget, with the
 * sentence in NAME.error (owned by UID/GID); -ENAMETOOLONG when
 * NAME.response would not fit in a file name; 0 otherwise, also outside
 * any model. */
int job_check_deployment(struct node *dir, const char *prompt_name, uid_t uid, gid_t gid);

/* The extra umask DIR's policies give files and directories made there. */
mode_t job_policy_umask(struct node *dir);

/* What a prompt being written in DIR may grow to, known at open so that
 * a write() past it fails at once (SPEC 5.1): EFBIG past SIZE_BYTES
 * (max_prompt_bytes, the mount's limit the ceiling); EDQUOT past
 * COST_BYTES, where the worst case of a text prompt of that many bytes
 * exceeds max_request_usd. COST_BYTES applies only to a prompt read as
 * text (under prompt_format auto, one that does not start with '{': a
 * JSON request's cost counts its messages, not its syntax). */
struct prompt_caps {
	size_t size_bytes;
	size_t cost_bytes;   /* SIZE_MAX: no cost cap */
	size_t budget_bytes; /* past it no candidate's worst case fits the
				budgets' room as it was at open (SIZE_MAX: no
				budget); a write past it asks again */
	int may_be_json;     /* prompt_format auto: a leading '{' lifts COST_BYTES */
	int always_json;     /* prompt_format json: COST_BYTES does not apply */
};
void job_policy_prompt_caps(struct node *dir, struct prompt_caps *caps);

/* The budget_bytes of DIR now. */
size_t job_policy_budget_bytes(struct node *dir);

/* NAME.prompt is going away (rm, or renamed over): cancels its job and
 * removes its generated files. */
void job_remove(struct node *dir, const char *prompt_name);

/* The job of NAME (a prompt or a generated file's name) no longer
 * answers its prompt: the prompt emptied or truncated (its generated
 * files are removed: REMOVE_FILES), or a generated file removed by hand
 * (the others stay: rm -r removes them one by one; a .response whose
 * .meta is gone or does not say done never reads as a clean answer). The
 * job is cancelled if live, and the journal is told, so that no restart
 * resumes the job or writes its files again. The prompt stays. */
void job_discard(struct node *dir, const char *name, int remove_files);

/* PROMPT_NAME in DIR (open as DIR_FD) changed mode or owner: its job's
 * generated files take its owner and read bits, now and when the job
 * writes them later. */
void job_follow_prompt(struct node *dir, int dir_fd, const char *prompt_name);

/* Opens NAME.response for reading. 0 or -errno. */
int job_response_open(struct node *dir, const char *response_name, int fd,
		      struct response_reader *reader);
void job_response_close(struct response_reader *reader);
/* Answers REQ: bytes, EOF, EIO, EAGAIN, or parks it until one of those. */
void job_response_read(fuse_req_t req, struct response_reader *reader, size_t size, off_t off,
		       int nonblock);
void job_response_poll(fuse_req_t req, struct response_reader *reader, struct fuse_pollhandle *ph);

/* Whether the job of NAME (any of its files' names) in DIR is live: in
 * the table, its files still changing. */
int job_is_live(struct node *dir, const char *name);

/* The current .meta text of the live job of META_NAME in DIR, or NULL
 * when none is live (the file on disk is then the truth). Caller frees. */
char *job_meta_snapshot(struct node *dir, const char *meta_name, size_t *len);

#endif
