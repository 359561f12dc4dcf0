/* When to try again, and how long to wait first (SPEC §7).
 *
 * Pure functions: no clock or random source is read here, the caller
 * passes them in, so the results are reproducible in tests. */
#ifndef PROMPTFS_RETRY_H
#define PROMPTFS_RETRY_H

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

/* The pause before retry number RETRY_INDEX (0 for the first retry):
 * min(0.5 * 2^n, 8) seconds scaled by a jitter factor in [0.75, 1.0]
 * that RANDOM01 (in [0, 1], clamped) chooses: 0 gives the full delay. */
double backoff_delay_s(int retry_index, double random01);

#endif
