/* When to try again, and how long to wait first (SPEC §7).
 *
 * Pure functions: no clock or random source is read here, the caller
 * passes them in, so the results are reproducible in tests. */
#ifndef PROMPTFS_RETRY_H
#define PROMPTFS_RETRY_H

#include <stddef.h>
#include <time.h>

/* Non-zero for the HTTP statuses worth another attempt: 408, 429, 500,
 * 502, 503, 504, 529. */
int http_status_retryable(long status);

/* The wait a response asks for, in seconds (>= 0), from its
 * retry-after-ms header (milliseconds, may be fractional) or else its
 * retry-after header (seconds, may be fractional, or an IMF-fixdate such
 * as "Wed, 21 Oct 2015 07:28:00 GMT", compared with NOW; a date in the
 * past gives 0). Either argument may be NULL or "". -1 when neither gives
 * a usable value. */
double retry_after_parse(const char *retry_after, const char *retry_after_ms, time_t now);

/* The wait a provider's error message asks for in prose, in seconds:
 * "Please retry after 6 seconds", "Please try again in 18.642s",
 * "try again in 1m30s", "try again in 120ms". -1 when there is none. */
double retry_after_from_text(const char *message);

/* The exponential minimum of retry number RETRY_INDEX (0 for the
 * first retry): 0.5 * 2^n seconds, at most 8. No wait before that retry
 * is shorter, whatever the provider's hint says (Retry-After: 0 too). */
double backoff_floor_s(int retry_index);

/* The pause before retry number RETRY_INDEX: its exponential minimum m
 * plus a full-jitter share of it, m * (1 + RANDOM01), so in [m, 2m];
 * RANDOM01 (in [0, 1], clamped) is the caller's draw. */
double backoff_delay_s(int retry_index, double random01);

/* The pause before retry number RETRY_INDEX when the provider asked for
 * HINT seconds (< 0: no hint): the larger of the hint and the
 * exponential minimum, plus the same jitter share, so that jobs told the
 * same hint do not all come back in the same millisecond. */
double retry_wait_s(int retry_index, double hint, double random01);

/* ---- providers' rate-limit reset headers ---- */

/* The limits whose reset a provider announces: OpenAI and Azure
 * x-ratelimit-{remaining,reset}-{requests,tokens} (Azure also
 * x-rate-limit-reset-tokens), Anthropic
 * anthropic-ratelimit-{requests,tokens,input-tokens,output-tokens}-
 * {remaining,reset}. */
enum ratelimit_kind {
	RATELIMIT_REQUESTS,
	RATELIMIT_TOKENS,
	RATELIMIT_INPUT_TOKENS,
	RATELIMIT_OUTPUT_TOKENS,
	RATELIMIT_KINDS
};

/* The values of those headers as sent ("" when absent), truncated to
 * the field size. */
struct ratelimit_hints {
	char remaining[RATELIMIT_KINDS][24];
	char reset[RATELIMIT_KINDS][48];
};

/* Stores the header NAME: VALUE (NAME_LEN bytes of name, VALUE
 * NUL-terminated and trimmed) in HINTS if it is one of the reset or
 * remaining headers above; returns 1 if it was, 0 otherwise. */
int ratelimit_header_take(struct ratelimit_hints *hints, const char *name, size_t name_len,
			  const char *value);

/* The wait, in seconds, that the reset headers of a rate-limited (429)
 * answer announce: the latest reset of the limits whose remaining count
 * is 0; when none says 0, the earliest reset given (something frees up
 * then). A reset is a duration ("1s", "6m0s", "120ms", "20" seconds) or
 * an RFC 3339 time ("2024-05-01T12:00:30Z"), compared with NOW. -1 when
 * there is no usable reset. */
double ratelimit_reset_wait(const struct ratelimit_hints *hints, time_t now);

/* ---- a deployment's throttle ---- */

/* How long every job must wait before its next request to one
 * deployment, after that deployment said it was rate limited or asked
 * for a pause: a "not before" time all jobs respect, so that a 429
 * slows every job sent there, not only the job that saw it. Times are
 * the caller's clock (the engine's monotonic seconds). */
struct throttle {
	double not_before;  /* no attempt starts before this */
	unsigned level;	    /* waves of rate limits in a row; the floor doubles with each */
	double raised_at;   /* when level last rose */
	double wave_end;    /* the not_before that rise set */
	double asked_until; /* the part of not_before the provider's hints asked for */
};

/* An attempt that started at STARTED ended at NOW with a rate-limit
 * answer (RATE_LIMITED: 429) and/or a hint of HINT seconds (< 0: none).
 * A rate limit raises the level once per wave: a 429 to a request sent
 * before the not_before of the last rise belongs to that rise's wave
 * and says nothing new. not_before becomes at least NOW + max(HINT, the
 * floor of the level). */
void throttle_note(struct throttle *t, int rate_limited, double hint, double started, double now);

/* How long, from NOW, the provider itself asked every job to wait (its
 * hints, not the floor): what is compared with a job's time left. */
double throttle_asked_s(const struct throttle *t, double now);

/* An answer came through: the level falls back to 0 (a not_before
 * already promised stays). */
void throttle_clear(struct throttle *t);

/* The floor of T's level: the exponential minimum of the level's retry
 * (0 at level 0). */
double throttle_floor_s(const struct throttle *t);

/* How long a job must wait at NOW before its request may go to T's
 * deployment, with a jitter share drawn by RANDOM01 that spreads the
 * jobs released together over the floor (at least 0.5 s); 0 when it may
 * go at once. */
double throttle_wait_s(const struct throttle *t, double now, double random01);

#endif
