/* What the engine's files share: its structures and the functions one
 * file calls in another. Not for use outside backends/engine*.c. */
#ifndef PROMPTFS_ENGINE_INTERNAL_H
#define PROMPTFS_ENGINE_INTERNAL_H

#include <pthread.h>

#include "backends/engine.h"

/* A failed response's body is kept only this far: enough for any
 * provider's error JSON, and bounded whatever the server sends. */
#define ERROR_BODY_CAP (64 * 1024)

/* A cap for the token endpoint's answer: a token and a few fields. */
#define TOKEN_BODY_CAP (16 * 1024)

enum job_place { PLACE_INCOMING, PLACE_WAITING, PLACE_ACTIVE, PLACE_BACKOFF, PLACE_TOKEN };

/* The OAuth token of one cloud whose credential is a Google service
 * account: cached, refreshed by one transfer while the jobs that need it
 * wait here (they hold no transfer slot meanwhile). */
struct cloud_token {
	const struct cloud *cloud;
	struct google_token_cache *cache;
	CURL *easy; /* the refresh in flight, if any */
	struct http_request http;
	char *body;
	size_t body_len;
	struct engine_job *waiters;
	struct cloud_token *next;
};

struct engine_job {
	struct engine *engine;
	struct engine_plan plan;
	const struct backend *backend;
	char target[768];
	enum job_place place;
	struct engine_job *next; /* in incoming, waiting or backoff */
	struct engine_job *prev_active, *next_active;
	struct engine_job *next_cancel;
	int cancel_requested; /* under engine->lock */
	int in_cancel_list;   /* under engine->lock */

	int attempts;	 /* started so far */
	double retry_at; /* monotonic seconds, in backoff */

	/* The current attempt. */
	CURL *easy;
	struct http_request http;
	struct stream_parser *parser;
	struct http_response_head head;
	int head_seen;
	int body_accepted; /* 2xx with an answer content type */
	int wrong_content_type;
	char *error_body;
	size_t error_len;
	size_t body_bytes;
	int streamed_text;
	int reported_request_id;
	size_t text_bytes;
	int sink_error;
	int parser_failed;
	int body_too_large;
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

	/* engine thread only; the counts are read under lock */
	struct engine_job *waiting_head, *waiting_tail;
	struct engine_job *backoff;
	struct engine_job *active;
	struct cloud_token *tokens;
	unsigned n_active;
	unsigned n_waiting;
	unsigned n_backoff;
	unsigned rng;
};

/* engine.c: the loop and its lists */
double engine_now(void);
double engine_random01(struct engine *e);
void engine_waiting_push(struct engine *e, struct engine_job *job);
void engine_active_add(struct engine *e, struct engine_job *job);
void engine_active_remove(struct engine *e, struct engine_job *job);
void engine_job_finish(struct engine *e, struct engine_job *job, int status, const char *message);

/* engine_attempt.c: one transfer of one job */
int engine_attempt_start(struct engine *e, struct engine_job *job, const char *access_token);
void engine_attempt_done(struct engine *e, struct engine_job *job, CURLcode result);
void engine_attempt_failed(struct engine *e, struct engine_job *job);
void engine_attempt_release(struct engine *e, struct engine_job *job);
void engine_set_tls_options(struct engine *e, CURL *easy);

/* engine_token.c: OAuth tokens of service-account clouds */
int engine_needs_oauth_token(const struct engine_job *job);
int engine_oauth_token_for(struct engine *e, struct engine_job *job, const char **token);
int engine_token_transfer_done(struct engine *e, CURL *easy, CURLcode result);
void engine_token_waiter_remove(struct engine *e, struct engine_job *job);
void engine_token_waiters_resume(struct engine *e, struct cloud_token *ct);
void engine_tokens_free(struct engine *e);

#endif
