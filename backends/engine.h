/* The engine: one thread owning one curl multi handle, running every
 * backend transfer of the daemon (ARCHITECTURE.md).
 *
 * Whoever submits a job hands the engine a plan: the request, where to
 * send it, retry limits and timeouts, and a sink to report to. The
 * engine calls the sink on its own thread, never while holding its own
 * lock, and the sink's done() is always the last call for a job. */
#ifndef PROMPTFS_ENGINE_H
#define PROMPTFS_ENGINE_H

#include <stddef.h>

#include "backends/backend.h"
#include "backends/breaker.h"

/* How one attempt ended, as the engine reports it. */
struct engine_attempt_report {
	const struct model *model; /* the deployment it went to */
	enum outcome outcome;
	long http_status; /* 0 when the attempt got no HTTP answer */
	long elapsed_ms;
	long ttfb_ms; /* time to the first byte of the response (curl's); -1: none came */
};

/* What the engine reports about one job. CTX is the plan's sink_ctx. */
struct engine_sink {
	/* An attempt starts on MODEL, one of the plan's candidates. */
	void (*attempt_started)(void *ctx, const struct model *model);
	/* Next bytes of the current attempt's answer. 0, or -errno to fail
	 * the job at once (e.g. -EFBIG over the answer cap). */
	int (*text)(void *ctx, const char *bytes, size_t len);
	/* The bytes of the current attempt are void: another attempt
	 * follows. */
	void (*attempt_discarded)(void *ctx);
	void (*usage)(void *ctx, long input_tokens, long output_tokens);
	/* How the current attempt's answer ended (outcome.h). A filtered
	 * answer also ends its attempt as OUTCOME_CONTENT_FILTER. */
	void (*finish_reason)(void *ctx, enum finish_reason reason, const char *provider_word);
	void (*request_id)(void *ctx, const char *id);
	/* The attempt that attempt_started announced ended; every started
	 * attempt ends exactly once. An OUTCOME_OK attempt is the one whose
	 * answer the job keeps. */
	void (*attempt_ended)(void *ctx, const struct engine_attempt_report *report);
	/* May the job fail over to MODEL (a candidate after the first, or
	 * the first again when the job comes back to it after a timeout)?
	 * 0, or -errno to skip it (the sink says why where it reports). May
	 * be NULL: every candidate may be tried. Must not block. */
	int (*candidate)(void *ctx, const struct model *model);
	/* The job passes over MODEL without an attempt: its circuit is open
	 * or its probe is out, or its throttle asks a longer wait than an
	 * attempt may take. REASON says which, without the deployment's
	 * name ("circuit open until 2026-11-26T10:00:30Z, after 5 failed
	 * attempts in a row"). May be NULL. Must not block. */
	void (*skipped)(void *ctx, const struct model *model, const char *reason);
	/* The job ended: STATUS 0 (complete answer), -EIO (failed, MESSAGE
	 * says why) or -ECANCELED. Last call for this job. */
	void (*done)(void *ctx, int status, const char *message);
};

/* More candidates than this are not tried. */
#define ENGINE_MAX_CANDIDATES 16

struct engine_plan {
	struct llm_request request; /* owned by the plan */
	/* The deployments that may serve the job, in the order to try
	 * them; they outlive the job. The first is tried first; the next
	 * one after a failure whose outcome is worth failing over
	 * (outcome.h), once the retries on the current one are spent. */
	const struct model *candidates[ENGINE_MAX_CANDIDATES];
	size_t n_candidates;
	int retries;		      /* retries on one candidate after its first attempt */
	double timeout_s;	      /* one attempt */
	double first_token_timeout_s; /* 0: none */
	const struct engine_sink *sink;
	void *sink_ctx;
};

struct engine_options {
	unsigned max_inflight;
	double connect_timeout_s;
	const char *cafile;	 /* NULL: system CAs only */
	size_t max_answer_bytes; /* cap of one answer's text */
	size_t max_body_bytes;	 /* cap of one response body, framing included */
	/* The circuit breakers' numbers (the mount options
	 * breaker_failures= and breaker_cooldown=); a zero member takes
	 * the default of breaker.h. */
	struct breaker_config breaker;
};

struct engine;
struct engine_job;

/* Creates the engine and starts its thread. NULL on failure (-errno in
 * *ERR_OUT). Free with engine_free, which stops the thread first and
 * reports -ECANCELED for every job still held. */
struct engine *engine_new(const struct engine_options *opts, int *err_out);
void engine_free(struct engine *e);

/* Takes PLAN (its request is moved out; PLAN itself may be on the
 * stack) and queues the job. Returns a handle valid until the sink's
 * done() has returned, or NULL on allocation failure or a plan without
 * candidates (the request is then released and no sink call happens). */
struct engine_job *engine_submit(struct engine *e, struct engine_plan *plan);

/* Aborts JOB; its sink sees done(-ECANCELED) soon after unless the job
 * has already ended. Safe from any thread while the handle is valid. */
void engine_cancel(struct engine *e, struct engine_job *job);

/* One deployment's circuit breaker and throttle, as /.metrics shows
 * them. */
struct engine_breaker_entry {
	const struct model *model;     /* the deployment (outlives the engine) */
	enum breaker_state state;      /* closed, open (cooling down), half_open (probing) */
	unsigned consecutive_failures; /* failed attempts in a row (outcome_deployment_fault) */
	unsigned long opened_total;    /* times the circuit opened since the engine started */
	double open_until;	       /* Unix time when the cool-down ends and a probe may go;
					  0 when closed */
	double not_before;	       /* Unix time before which no request goes there (429,
					  Retry-After); 0 when none; may lie in the past */
};

/* A copy of the circuit state of every deployment the engine has sent a
 * request to: fills OUT with up to MAX entries and returns how many
 * there are (call again with a larger OUT when that is more than MAX).
 * A deployment not listed is closed, with no failures. The copy is as
 * the engine thread last published it (after every change). Safe from
 * any thread: it takes only a lock that the engine holds to publish a
 * copy, never the one submissions take. */
size_t engine_breaker_snapshot(struct engine *e, struct engine_breaker_entry *out, size_t max);

/* Runs FN(ARG) on the engine thread at its next turn, then forgets every
 * cached OAuth token: the way to change credentials (SIGHUP) without a
 * lock on the hot path, since only the engine thread reads them. */
int engine_run_credentials_update(struct engine *e, void (*fn)(void *arg), void *arg);

#endif
