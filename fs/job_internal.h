/* What job.c (lifecycle) and job_read.c (readers) share. Not for other
 * files: they use job.h. */
#ifndef PROMPTFS_JOB_INTERNAL_H
#define PROMPTFS_JOB_INTERNAL_H

#include <jansson.h>
#include <pthread.h>
#include <stdint.h>

#include "fs/job.h"
#include "fs/ledger.h"
#include "fs/route.h"
#include "fs/policy.h"
#include "fs/prompt.h"

enum job_status { JOB_QUEUED, JOB_RUNNING, JOB_DONE, JOB_FAILED, JOB_CANCELLED };

/* A read(2) of a .response that had nothing to return yet: its reply is
 * sent later by whoever appends bytes or ends the job. */
struct parked_read {
	fuse_req_t req;
	struct response_reader *reader;
	size_t size;
	off_t off;
	struct parked_read *prev, *next;	 /* on its job */
	struct parked_read *prev_all, *next_all; /* on every job's list, for interrupts */
};

/* What a job's plan takes from the policies of its directory. */
struct job_limits {
	long retries;
	double timeout_s;
	double first_token_timeout_s; /* 0: none */
};

struct job {
	unsigned refs;	  /* under jobs_lock */
	struct node *dir; /* referenced */
	char *base;	  /* NAME of NAME.prompt */
	/* the deployment of its directory when it was submitted (or
	 * resumed): a job whose directory moves finishes where it began */
	const struct model *model;
	const struct model *served;	  /* the one whose answer it kept; NULL until then */
	const struct model *refused_auth; /* the last one that refused its credentials */
	/* where its last attempt went: a failed job's reported usage is
	 * counted there in /.metrics */
	const struct model *last_tried;
	enum job_status status;
	int in_table;
	int detached;		   /* superseded or removed: its files are not its own */
	pthread_mutex_t file_lock; /* held while writing its files at the end */
	int response_fd;
	unsigned long long size; /* bytes of the current attempt */
	unsigned generation;	 /* attempts whose bytes were thrown away */
	struct parked_read *parked;
	struct response_reader *pollers;
	json_t *meta;		       /* the .meta object */
	struct engine_job *engine_job; /* while the engine holds it */
	uid_t file_uid;
	gid_t file_gid;
	mode_t file_mode;
	uint64_t journal_id; /* its records' id; 0 before it has one */
	struct job_limits limits;
	/* the deployments that may serve it, in order (MODEL first) */
	struct route route;
	/* its worst case, reserved in every directory from the root down
	 * to its own until its end is charged (job_policy_reserve), at the
	 * price of the candidate it is on; with the budgets it must fit in
	 * and what its worst case is made of, for a failover to another
	 * price (engine thread) */
	struct ledger_hold hold;
	struct ledger_budget *budgets;
	size_t n_budgets;
	long cost_in_bytes, cost_out_tokens;
	struct audit_job *audit; /* what its audit line needs (fs/audit.c) */
	/* ended, recorded in the journal, but its .meta or .error could not
	 * be written (a full disk): it stays in the table, its state in
	 * memory the truth, until the finisher writes them */
	int files_pending;
	int end_recorded; /* its end record is in the journal */
	/* its final .meta from the moment its end is recorded until readers
	 * are told (then it becomes META): .meta read through the mount must
	 * not say failed before .error exists */
	json_t *end_meta;
	char *end_error; /* .error's text once it ended */
	struct job *hash_next;
};

/* One lock for every job's state: short sections only, never I/O that
 * can wait on the network. */
extern pthread_mutex_t jobs_lock;

/* A reply decided under jobs_lock and sent after it is released. */
struct pending_reply {
	fuse_req_t req;
	int error; /* 0: send DATA (LEN bytes, 0 = end of file) */
	char *data;
	size_t len;
	struct pending_reply *next;
};

struct wakeups {
	struct pending_reply *replies;
	struct fuse_pollhandle **polls;
	size_t n_polls, cap_polls;
};

/* With jobs_lock held: answers every parked read of JOB that can be
 * answered now, and every poller, into W. */
void job_wake_readers(struct job *job, struct wakeups *w);
/* Without the lock: sends what job_wake_readers decided. */
void wakeups_deliver(struct wakeups *w);

struct job *job_lookup_locked(struct node *dir, const char *base);
void job_put(struct job *job);

/* job.c: the table and lifecycle */
/* A new job of BASE.prompt in DIR, to run on MODEL (the deployment of
 * DIR at submission, see node_deployment). */
struct job *job_new(struct node *dir, const char *base, const struct model *model);
void job_table_insert_locked(struct job *job);
void job_table_remove_locked(struct job *job);
int jobs_shutting_down_locked(void);
/* Puts JOB in the table (it takes a reference): from now on readers of
 * its files wait for it. */
void job_publish(struct job *job);
/* Takes a published JOB out of the table as failed, answering its
 * readers EIO; for a job whose files or hand-over could not be made. */
void job_abandon(struct job *job);
/* Hands a published JOB to the engine; REQ is moved out. On failure the
 * job is abandoned. */
int job_start(struct job *job, struct llm_request *req);

/* Every job in the table, referenced (job_put each), for a checkpoint.
 * 0 or -ENOMEM. */
int jobs_collect(struct job ***out, size_t *n);

/* job_sink.c: what the engine calls */
extern const struct engine_sink job_engine_sink;

/* job_finish.c: a job's end, recorded then written (see there) */
/* Hands over the end of JOB (STATUS 0, -ECANCELED or another -errno,
 * MESSAGE for a failure) with the reference the engine held. */
void job_finish(struct job *job, int status, const char *message);
/* Asks the writer thread for a checkpoint between two files. */
void jobs_request_checkpoint(void);

/* job_journal.c: the journal's records of jobs (see there) */
/* Prompts and answers up to this size are written into the journal
 * itself; larger ones are fsync'd where they are. */
#define JOB_INLINE_BYTES (32 * 1024)
/* Journal bytes after which the finisher makes a checkpoint. */
#define JOURNAL_CHECKPOINT_BYTES (2 * 1024 * 1024)
extern pthread_rwlock_t journal_gate;
uint64_t job_journal_new_id(void);
/* JOB accepted; PROMPT (LEN bytes, valid UTF-8) is written in the
 * record when not NULL. Called with journal_gate read-locked. */
int job_journal_submit(struct job *job, const char *prompt, size_t len, uint64_t *lsn);
/* JOB was removed or replaced: it is not to be resumed. Called with
 * journal_gate read-locked. */
void job_journal_cancel(struct job *job);
/* The job of BASE in DIR, finished or not, is gone with its files: no
 * replay resumes it or writes them again. Durable when it returns 0.
 * Called with journal_gate read-locked. */
int job_journal_drop(struct node *dir, const char *base);
/* How JOB ended: FINAL_META, the .error text (NULL when done), the
 * answer when small (RESPONSE, NULL when it was fsync'd instead) and
 * what it was charged (CHARGE, taken; NULL in a checkpoint's copy). */
int job_journal_end(struct job *job, const json_t *final_meta, const char *error,
		    const char *response, size_t response_len, json_t *charge, uint64_t *lsn);
/* A checkpoint in two steps: the cut (journal_gate write-locked), then,
 * once every end recorded before the cut has its files written, the
 * rest (syncfs, the live jobs copied, the old segments dropped). */
void jobs_checkpoint_cut_locked(void);
void jobs_checkpoint_finish(void);
int jobs_checkpoint_due(void);

/* job_policy.c: what the policy E in force at DIR does to a job whose
 * prompt (PROMPT_LEN bytes) became REQ: 0 with REQ given the policy's
 * defaults and caps, ROUTE its candidates (those whose worst case passes
 * max_request_usd) and LIMITS filled, or -ENOENT (DIR is under no model
 * or family), -EACCES (no deployment allowed), -EFBIG
 * (max_prompt_bytes), -EDQUOT (a cost cap), with a sentence naming the
 * .policy that refused in WHY. */
int job_policy_admit(struct node *dir, const struct effective_policy *e, size_t prompt_len,
		     struct llm_request *req, struct route *route, struct job_limits *limits,
		     char *why, size_t size);

/* The route of a prompt in DIR under E before its text is known: -EACCES
 * with the sentence naming the .policy in WHY when no deployment may
 * serve it, -ENOENT outside any model or family. */
int job_policy_route(struct node *dir, const struct effective_policy *e, struct route *route,
		     char *why, size_t size);

/* What JOB's reservation needs at another candidate's price, kept from
 * its request and E's budgets. 0 or -ENOMEM. */
int job_keep_cost_inputs(struct job *job, const struct effective_policy *e,
			 const struct llm_request *req);

/* A failover: JOB moves on to MODEL, whose price may differ. Its
 * reservation grows to the worst case there if every budget has room:
 * 0, or -EDQUOT with the reason in WHY (the candidate is skipped). */
int job_policy_follow_candidate(struct job *job, const struct model *model, char *why, size_t size);

/* Reserves the worst case of REQ on MODEL in every budget E (in force
 * at DIR) applies, into HOLD, which gets E's directories as accounts:
 * 0, or -EDQUOT with the sentence naming the budget without room (or
 * the unknown price) in WHY, or -ENOMEM. A budget-free path reserves
 * too, so .usage shows what is in flight. Release with ledger_release
 * or ledger_charge. */
int job_policy_reserve(struct node *dir, const struct effective_policy *e,
		       const struct model *model, const struct llm_request *req,
		       struct ledger_hold *hold, char *why, size_t size);

/* Whether even an empty prompt passes E's cost cap and has room in its
 * budgets at DIR on MODEL: 0, or -EDQUOT with the sentence in WHY. */
int job_policy_check_empty(struct node *dir, const struct effective_policy *e,
			   const struct model *model, char *why, size_t size);

/* job_policy_reserve at the first candidate of ROUTE whose price fits
 * every budget; the ones before it leave ROUTE (the first refusal is
 * told when none fits). */
int job_policy_reserve_route(struct node *dir, const struct effective_policy *e,
			     struct route *route, const struct llm_request *req,
			     struct ledger_hold *hold, char *why, size_t size);

/* What a job's end costs, from its final .meta, ending in STATUS. */
void job_policy_charge(const json_t *final_meta, enum job_status status, struct ledger_charge *out);

/* How the policy E (in force at a directory, see policy_store_effective)
 * says prompts are read; the same for DIR, composed for the purpose. */
enum prompt_format job_policy_format_of(const struct effective_policy *e);
enum prompt_format job_policy_prompt_format(struct node *dir);

/* job_resume.c: jobs handed to the engine again at mount */
struct resume_from {
	uint64_t id;	    /* its journal id; 0: give it one */
	const char *prompt; /* the accepted prompt, when the journal has it */
	size_t prompt_len;
	mode_t mode; /* its files' owner and mode, when known */
	uid_t uid;
	gid_t gid;
	/* its reservation, held again: nano-dollars and accounts */
	const json_t *reserve;
	const json_t *acct;
};
void job_resume_one(struct node *dir, const char *base, json_t *meta,
		    const struct resume_from *from);
/* A state_dir from before the journal: every .meta is read. */
void job_resume_scan(void);

/* job_record.c: the durable record */
void job_meta_set_time(json_t *meta, const char *key);
const char *job_status_word(enum job_status s);
/* The .meta text with a final newline; caller frees. */
char *job_meta_dump(const json_t *meta, size_t *len);
void job_sha256_hex(const void *data, size_t len, char out[65]);
/* A whole prompt, -EFBIG past the limit. Caller frees *OUT. */
int job_read_prompt(int fd, char **out, size_t *len);

#endif
