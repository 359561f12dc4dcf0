/* What the engine's files share: its structures and the functions one
 * file calls in another. Not for use outside backends/engine*.c. */
#ifndef PROMPTFS_ENGINE_INTERNAL_H
#define PROMPTFS_ENGINE_INTERNAL_H

#include <pthread.h>

#include "backends/engine.h"
#include "backends/retry.h"
#include "backends/wire_util.h"

/* A failed response's body is kept only this far: enough for any
 * provider's error JSON, and bounded whatever the server sends. */
#define ERROR_BODY_CAP (64 * 1024)

/* A cap for the token endpoint's answer: a token and a few fields. */
#define TOKEN_BODY_CAP (16 * 1024)

enum job_place { PLACE_INCOMING, PLACE_WAITING, PLACE_ACTIVE, PLACE_BACKOFF, PLACE_TOKEN };

enum candidate_mark {
	CANDIDATE_UNTRIED,
	CANDIDATE_DEFERRED, /* left after a timeout with retries to spare: tried again
			       once every other candidate has been */
	CANDIDATE_DONE,	    /* being tried, spent, or skipped */
};

/* What the engine knows of one deployment: its circuit breaker and its
 * throttle (the "not before" of rate limits). Engine thread only. */
struct deployment_health {
	const struct model *model; /* NULL: a free slot */
	struct breaker breaker;
	struct throttle throttle;
};

/* Every deployment's health, by deployment, and the copy of it that
 * other threads read (engine_breaker_snapshot). */
struct health_table {
	struct breaker_config config;
	struct deployment_health *slots; /* open addressing; engine thread only */
	size_t cap, n;
	int dirty; /* changed since last published */
	pthread_mutex_t published_lock;
	struct engine_breaker_entry *published; /* under published_lock */
	size_t n_published, cap_published;	/* under published_lock */
};

/* The OAuth token of one cloud whose credential is a Google service
 * account: cached, refreshed by one transfer while the jobs that need it
 * wait here (they hold no transfer slot meanwhile). */
struct cloud_token {
	const struct cloud *cloud;
	const struct google_service_account *account;
	struct google_token_cache *cache;
	CURL *easy; /* the refresh in flight, if any */
	struct http_request http;
	struct capped_buffer body; /* the token endpoint's answer; a secret */
	struct engine_job *waiters;
	struct cloud_token *next;
};

struct engine_job {
	struct engine *engine;
	struct engine_plan plan;
	enum job_place place;
	struct engine_job *next; /* in incoming, waiting or backoff */
	struct engine_job *prev_active, *next_active;
	struct engine_job *next_cancel;
	int cancel_requested; /* under engine->lock */
	int in_cancel_list;   /* under engine->lock */

	/* The candidate being tried. */
	size_t candidate;	       /* index in plan.candidates */
	const struct model *model;     /* plan.candidates[candidate] */
	const struct backend *backend; /* its provider's; NULL if not built in */
	double retry_at;	       /* monotonic seconds, in backoff */
	/* What became of each candidate: enum candidate_mark, and the
	 * attempts started on it (a deferred one keeps its count). */
	unsigned char candidate_mark[ENGINE_MAX_CANDIDATES];
	int attempts_on[ENGINE_MAX_CANDIDATES];
	/* The next attempt passed the deployment's circuit breaker (as its
	 * probe, when PROBE): held until that attempt ends. */
	int admitted;
	int probe;
	/* The wait before the next attempt already honoured the
	 * deployment's throttle: it goes when the wait is over. */
	int throttle_waited;
	char skipped[512]; /* candidates skipped without an attempt, and why */

	/* The deployment of the job's last attempt (NULL before its first):
	 * the next attempt is a retry there or a failover from it. */
	const struct model *previous_model;

	/* The current attempt, between engine_attempt_begin and _end. */
	CURL *easy;
	struct http_request http;
	struct stream_parser *parser;
	struct http_response_head head;
	int head_seen;
	int body_accepted; /* 2xx with an answer content type */
	int wrong_content_type;
	struct ratelimit_hints ratelimit; /* a 429's reset headers */
	struct capped_buffer error_body;  /* a failed response's body, capped */
	size_t body_bytes;
	int streamed_text; /* answer bytes went to the sink */
	int reported_request_id;
	size_t text_bytes;
	int sink_error;
	int parser_failed;
	int body_too_large;
	/* The attempt's request went out once; a second send (libcurl
	 * resending it on a fresh connection) was refused. */
	int request_sent;
	int request_resent;
	enum finish_reason finish;
	char filter_detail[256]; /* who filtered, when FINISH_FILTERED */
	struct attempt_error error;
	double attempt_started;
};

struct engine {
	struct engine_options opts;
	pthread_t thread;
	pthread_mutex_t lock;
	CURLM *multi;
	int stopping;					  /* under lock */
	struct engine_job *incoming_head, *incoming_tail; /* under lock */
	struct engine_job *cancels;			  /* under lock */
	void (*update_fn)(void *);			  /* under lock */
	void *update_arg;				  /* under lock */
	unsigned n_incoming;				  /* under lock */
	int wake_sent; /* under lock: a wakeup the engine has not yet acted on */

	/* engine thread only; the counts are read under lock */
	struct engine_job *waiting_head, *waiting_tail;
	struct engine_job *backoff;
	struct engine_job *active;
	struct cloud_token *tokens;
	unsigned n_active;
	unsigned n_waiting;
	unsigned n_backoff;
	unsigned rng;
	struct health_table health;
};

/* engine.c: the loop, its lists, and what follows an attempt */
double engine_now(void);
double engine_random01(struct engine *e);
void engine_waiting_push(struct engine *e, struct engine_job *job);
void engine_active_add(struct engine *e, struct engine_job *job);
void engine_active_remove(struct engine *e, struct engine_job *job);
void engine_job_finish(struct engine *e, struct engine_job *job, int status, const char *message);
/* The attempt of JOB ended (engine_attempt_end) with JOB->error: the
 * job ends, waits to try the same candidate again, or moves to the next
 * candidate. */
void engine_job_next_step(struct engine *e, struct engine_job *job);

/* engine_attempt.c: one attempt of one job, from its start to its end */
/* Starts an attempt of JOB on its current candidate, with ACCESS_TOKEN
 * where its backend needs one (NULL otherwise). On failure the attempt
 * has been ended and the next step taken. */
void engine_attempt_begin(struct engine *e, struct engine_job *job, const char *access_token);
/* An attempt that could not even start (no token): reported as begun
 * and ended at once, with JOB->error already set. */
void engine_attempt_begin_failed(struct engine *e, struct engine_job *job);
/* The transfer of JOB's attempt finished with RESULT. */
void engine_attempt_transfer_done(struct engine *e, struct engine_job *job, CURLcode result);
/* The end of JOB's attempt, with JOB->error saying how it ended
 * (OUTCOME_OK for a complete answer): reported once, its transfer
 * released, then the job's next step. Also how the engine stops an
 * attempt early (first-token timeout, cancel). */
void engine_attempt_end(struct engine *e, struct engine_job *job);
void engine_attempt_release(struct engine *e, struct engine_job *job);
void engine_set_tls_options(struct engine *e, CURL *easy);

/* engine_health.c: each deployment's circuit breaker and throttle */
int engine_health_init(struct engine *e, const struct breaker_config *config);
void engine_health_free(struct engine *e);
/* The record of MODEL, made on first use; NULL when memory ran out (the
 * deployment then goes unguarded). Valid until the next call. */
struct deployment_health *engine_health_of(struct engine *e, const struct model *model);
/* JOB's admitted attempt ended with JOB->error: its breaker and
 * throttle learn from it, and the admission is spent. */
void engine_health_attempt_ended(struct engine *e, struct engine_job *job);
/* JOB gives up an admission it never used (cancelled, or failed before
 * its attempt): a probe it held goes to the next attempt. */
void engine_health_release(struct engine *e, struct engine_job *job);
/* Makes the changes since the last call visible to
 * engine_breaker_snapshot. */
void engine_health_publish(struct engine *e);
/* A sentence saying why H's deployment is skipped at NOW ("... is
 * skipped for 28 s more after 5 failed attempts in a row"), into BUF. */
void engine_health_skip_reason(const struct deployment_health *h, double now, char *buf,
			       size_t size);
/* Why H's deployment is skipped at NOW, for .meta's list, without its
 * name ("circuit open until 2026-11-26T10:00:30Z, after 5 failed
 * attempts in a row"), into BUF. */
void engine_health_circuit_reason(const struct deployment_health *h, double now, char *buf,
				  size_t size);

/* engine_token.c: OAuth tokens of service-account clouds */
/* The token JOB's candidate needs: 0 with *TOKEN (NULL when it needs
 * none), 1 when JOB now waits for a refresh, or -EIO with JOB's attempt
 * error set. */
int engine_oauth_token_for(struct engine *e, struct engine_job *job, const char **token);
int engine_token_transfer_done(struct engine *e, CURL *easy, CURLcode result);
void engine_token_waiter_remove(struct engine *e, struct engine_job *job);
void engine_token_waiters_resume(struct engine *e, struct cloud_token *ct);
void engine_tokens_free(struct engine *e);

#endif
