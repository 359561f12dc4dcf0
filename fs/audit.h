/* state_dir/audit.jsonl (SPEC §8): one JSON line per finished job (done,
 * failed, cancelled) and per refused submission. The line's format is
 * fs/audit_line.h; this is when lines are written and how none is lost
 * or written twice.
 *
 * No line has an fsync of its own: a job's line rides on the durability
 * of its end. It is written after the job's end record is in the
 * journal (by the writer thread, beside .meta; a cancelled job's right
 * after its cancel record), so a crash can only lose lines whose ends
 * the journal still holds: at mount, every end (and cancel) the replay
 * finds whose line is missing from the file since the last checkpoint
 * gets it then. A checkpoint's syncfs makes the file durable before the
 * records that could remake its lines are dropped, and it then notes the
 * file's size at its cut (state_dir/audit.pos), where the next mount's
 * search for missing lines begins. docs/architecture.md ("The audit
 * log") states the invariant.
 *
 * Threads: lines are written whole under one lock (a leaf: nothing else
 * is taken while it is held) with O_APPEND. */
#ifndef PROMPTFS_AUDIT_H
#define PROMPTFS_AUDIT_H

#include <jansson.h>
#include <stddef.h>

#include "fs/node.h"
#include "fs/policy.h"
#include "fs/promptfs.h"

struct job;

/* ---- the process behind a submission (fs/ops_*.c) ---- */

/* Around a call that may submit or refuse a prompt (job_submit,
 * job_check_deployment, job_refuse_unwritten), on the FUSE thread that
 * serves REQ: its caller's uid and pid go into the job's .meta and into
 * a refusal's line. */
void audit_request_begin(fuse_req_t req);
/* Ends it with the call's result RC: a refusal noted meanwhile gets its
 * line, with RC's errno, and the hash (and, under audit_prompts, the
 * text) of the prompt in PROMPT_FD (-1: none, as at open()). Returns
 * RC. */
int audit_request_end(int rc, int prompt_fd);

/* ---- what jobs tell it (fs/job*.c) ---- */

/* JOB is being accepted under the policy P with PROMPT (LEN bytes): its
 * .meta gets the submitter's pid, and the text is kept for its line when
 * P's audit_prompts is true. Before its record is written. */
void audit_job_submitted(struct job *job, const struct effective_policy *p, const char *prompt,
			 size_t len);
/* A submission of BASE.prompt in DIR is refused for REASON (the
 * sentence of NAME.error). */
void audit_refusal(struct node *dir, const char *base, const char *reason);
/* JOB was just superseded (rm, rewrite, rename over it): its line, when
 * that cancelled it before its end was recorded. */
void audit_job_cancelled(struct job *job);
/* JOB's end went through the writer; RECORDED: its end record is in the
 * journal (then it gets its line). META: its final .meta, the calling
 * thread's own (read without a lock). */
void audit_job_ended(struct job *job, const json_t *meta, int recorded);
void audit_job_release(struct job *job);

/* ---- the journal (fs/job_journal.c) ---- */

/* Each record replayed at mount, in order. */
void audit_replay_record(json_t *record);
/* After the replay, before any job runs: the missing lines are written. */
void audit_replay_finish(void);
/* A checkpoint cut the journal (journal_gate write-locked) ... */
void audit_checkpoint_cut(void);
/* ... and dropped the segments before the cut (DROPPED), or failed to. */
void audit_checkpoint_done(int dropped);

/* ---- the file ---- */

/* SIGHUP: the next line opens state_dir/audit.jsonl again (made if a
 * rotation moved it away). */
void audit_reopen(void);
/* At unmount: lines still waiting for room are tried once more. */
void audit_close(void);

#endif
