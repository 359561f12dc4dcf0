/* One table of what an attempt can come to (SPEC §7), and of how an
 * answer can end. Every backend and the engine name an attempt's end by
 * an enum outcome; what it means — the word in .meta, whether the same
 * deployment is worth another try, whether another deployment is, what
 * a reader of the answer gets — is said once, here, in outcome.c.
 *
 * Pure data and functions: no state, no locks. */
#ifndef PROMPTFS_OUTCOME_H
#define PROMPTFS_OUTCOME_H

#include <stddef.h>

enum outcome {
	OUTCOME_OK,
	OUTCOME_CANCELLED,
	/* the transport */
	OUTCOME_CONNECTION,	     /* no connection, or it broke before an answer */
	OUTCOME_TIMEOUT,	     /* the attempt's time limit */
	OUTCOME_FIRST_TOKEN_TIMEOUT, /* no answer byte in time */
	OUTCOME_STREAM_CUT,	     /* the answer stopped before its end */
	OUTCOME_TLS,		     /* the server's certificate was not trusted */
	/* what the provider said */
	OUTCOME_HTTP_RETRYABLE,	   /* 408, 429, 5xx, 529, or the provider said so */
	OUTCOME_HTTP_REJECTED,	   /* other 4xx: the request itself is wrong */
	OUTCOME_AUTH,		   /* 401, 403: our credentials were refused */
	OUTCOME_CONTEXT_LENGTH,	   /* the prompt does not fit the model */
	OUTCOME_CONTENT_FILTER,	   /* the provider's safety system stopped it */
	OUTCOME_PROVIDER_ERROR,	   /* an error inside a 2xx answer, transient */
	OUTCOME_PROVIDER_REJECTED, /* an error inside a 2xx answer, final */
	OUTCOME_MALFORMED,	   /* a frame or chunk that does not parse */
	OUTCOME_BAD_RESPONSE,	   /* well-formed, but not an answer */
	OUTCOME_BAD_CONTENT_TYPE,  /* 2xx with something else than an answer */
	OUTCOME_TOO_LARGE,	   /* the answer went over its cap */
	OUTCOME_TOKEN_UNAVAILABLE, /* an OAuth token could not be had, for now */
	OUTCOME_TOKEN_REJECTED,	   /* the token endpoint refused our key */
	/* here */
	OUTCOME_NO_MEMORY,   /* memory ran out on our side */
	OUTCOME_LOCAL_ERROR, /* the answer could not be stored or built */
	OUTCOME_COUNT
};

struct outcome_info {
	/* The word in .meta's attempts; "%ld" in it stands for the HTTP
	 * status (outcome_word fills it in). */
	const char *word;
	/* Another attempt on the same deployment may succeed. */
	unsigned retryable : 1;
	/* Another deployment of the same family may succeed where this one
	 * failed (a fault of this deployment, not of the request). */
	unsigned failover : 1;
	/* What a reader of the answer gets once the job ended so: 0 for a
	 * complete answer, else a positive errno. */
	int reader_errno;
};

const struct outcome_info *outcome_info(enum outcome o);

static inline int outcome_retryable(enum outcome o)
{
	return outcome_info(o)->retryable;
}

static inline int outcome_failover(enum outcome o)
{
	return outcome_info(o)->failover;
}

/* Writes O's word into BUF (SIZE bytes), with HTTP_STATUS where the
 * word takes one ("http_503"). Returns BUF. */
char *outcome_word(enum outcome o, long http_status, char *buf, size_t size);

/* The outcome of an HTTP error status when nothing more specific is
 * known: the status list of SPEC §7 decides what is retried. The
 * provider's own verdict SHOULD_RETRY (1 yes, 0 no, -1 it gave none)
 * may only take a retry away (x-should-retry: false, a spent budget):
 * it never makes a status outside the list retryable, nor an auth
 * failure. */
enum outcome outcome_of_http_status(long status, int should_retry);

/* A rejected request (OUTCOME_HTTP_REJECTED) whose provider MESSAGE says
 * the prompt does not fit the model's context window becomes
 * OUTCOME_CONTEXT_LENGTH ("maximum context length", "prompt is too
 * long", "input is too long", "exceeds the maximum number of tokens",
 * "context_length_exceeded" ...); any other outcome is returned as it
 * is. */
enum outcome outcome_refine_rejection(enum outcome o, const char *message);

/* The attempt was rate limited (HTTP 429): the deployment's throttle
 * slows every job sent there; it says nothing of the deployment's
 * health, so it does not count towards its circuit breaker. */
int outcome_rate_limited(enum outcome o, long http_status);

/* The attempt failed by a fault of the deployment (the failover column,
 * a rate limit excepted): it counts towards the deployment's circuit
 * breaker. */
int outcome_deployment_fault(enum outcome o, long http_status);

/* The verdict of an x-should-retry header: 1, 0, or -1 for none. */
int should_retry_header(const char *value);

/* How an answer ended, in the same words for every provider. */
enum finish_reason {
	FINISH_NONE,	 /* not said (yet) */
	FINISH_STOP,	 /* the model finished, or met a stop sequence */
	FINISH_LENGTH,	 /* max_tokens or the context window cut it */
	FINISH_FILTERED, /* a safety system cut it: the answer is truncated */
	FINISH_OTHER,	 /* anything else (tool calls ...): the provider's word is kept */
};

/* The word for .meta: "stop", "length", "content_filter"; NULL for
 * FINISH_NONE and FINISH_OTHER (the provider's own word is used). */
const char *finish_reason_word(enum finish_reason r);

#endif
