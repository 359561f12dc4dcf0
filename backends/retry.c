/* Retry decisions and delays (see retry.h). */
#include "backends/retry.h"

#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define BACKOFF_INITIAL_S 0.5
#define BACKOFF_MAX_S 8.0
/* a deployment that has not said 429 for this long starts again at level 0 */
#define THROTTLE_QUIET_S 60.0

int http_status_retryable(long status)
{
	switch (status) {
	case 408: /* request timeout */
	case 429: /* rate limited */
	case 500:
	case 502:
	case 503:
	case 504:
	case 529: /* Anthropic: overloaded */
		return 1;
	default:
		return 0;
	}
}

/* A finite number >= 0 filling all of TEXT but surrounding blanks;
 * -1 otherwise. */
static double nonnegative_number_parse(const char *text)
{
	char *end;
	double value;

	while (*text == ' ' || *text == '\t')
		text++;
	/* strtod would also take "inf", "nan" and hexadecimal forms, which no
	 * server means. */
	if (!isdigit((unsigned char)*text) && *text != '.')
		return -1;
	value = strtod(text, &end);
	if (end == text)
		return -1;
	while (*end == ' ' || *end == '\t')
		end++;
	if (*end != '\0' || !isfinite(value) || value < 0)
		return -1;
	return value;
}

static int name_index(const char *text, const char *const *names, int n)
{
	int i;

	for (i = 0; i < n; i++) {
		if (strncmp(text, names[i], 3) == 0)
			return i;
	}
	return -1;
}

/* Exactly N decimal digits at TEXT; -1 otherwise. */
static int digits_parse(const char *text, int n)
{
	int value = 0;
	int i;

	for (i = 0; i < n; i++) {
		if (!isdigit((unsigned char)text[i]))
			return -1;
		value = value * 10 + (text[i] - '0');
	}
	return value;
}

/* The time of the broken-down UTC TM, its fields in range: 0 and *OUT,
 * or -1 (a field out of range, a digit missing, or no such time). */
static int utc_time(struct tm *tm, time_t *out)
{
	time_t when;

	if (tm->tm_year < 0 || tm->tm_mon < 0 || tm->tm_mon > 11 || tm->tm_mday < 1 ||
	    tm->tm_mday > 31 || tm->tm_hour < 0 || tm->tm_hour > 23 || tm->tm_min < 0 ||
	    tm->tm_min > 59 || tm->tm_sec < 0 || tm->tm_sec > 60)
		return -1;
	when = timegm(tm);
	if (when == (time_t)-1)
		return -1;
	*out = when;
	return 0;
}

/* IMF-fixdate (RFC 9110 §5.6.7): "Sun, 06 Nov 1994 08:49:37 GMT", fixed
 * width, English names, always GMT. Returns 0 and the time in *OUT, or -1. */
static int imf_fixdate_parse(const char *text, time_t *out)
{
	static const char *const days[] = {
		"Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun",
	};
	static const char *const months[] = {
		"Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
	};
	struct tm tm;

	while (*text == ' ' || *text == '\t')
		text++;
	if (strlen(text) < 29 || name_index(text, days, 7) < 0 || strncmp(text + 3, ", ", 2) != 0 ||
	    text[7] != ' ' || text[11] != ' ' || text[16] != ' ' || text[19] != ':' ||
	    text[22] != ':' || strncmp(text + 25, " GMT", 4) != 0)
		return -1;
	memset(&tm, 0, sizeof(tm));
	tm.tm_mday = digits_parse(text + 5, 2);
	tm.tm_mon = name_index(text + 8, months, 12);
	tm.tm_year = digits_parse(text + 12, 4) - 1900;
	tm.tm_hour = digits_parse(text + 17, 2);
	tm.tm_min = digits_parse(text + 20, 2);
	tm.tm_sec = digits_parse(text + 23, 2);
	text += 29;
	while (*text == ' ' || *text == '\t')
		text++;
	if (*text != '\0')
		return -1;
	return utc_time(&tm, out);
}

double retry_after_parse(const char *retry_after, const char *retry_after_ms, time_t now)
{
	double value;
	time_t when;

	if (retry_after_ms && *retry_after_ms) {
		value = nonnegative_number_parse(retry_after_ms);
		if (value >= 0)
			return value / 1000.0;
	}
	if (!retry_after || !*retry_after)
		return -1;
	value = nonnegative_number_parse(retry_after);
	if (value >= 0)
		return value;
	if (imf_fixdate_parse(retry_after, &when) < 0)
		return -1;
	if (when <= now)
		return 0;
	return difftime(when, now);
}

/* The seconds in one unit word at TEXT (advancing *LEN over it), or -1. */
static double unit_seconds(const char *text, size_t *len)
{
	static const struct {
		const char *word;
		double seconds;
	} units[] = {
		/* Longest spellings first so "ms" is not read as "m". */
		{ "milliseconds", 0.001 },
		{ "millisecond", 0.001 },
		{ "ms", 0.001 },
		{ "seconds", 1 },
		{ "second", 1 },
		{ "secs", 1 },
		{ "sec", 1 },
		{ "s", 1 },
		{ "minutes", 60 },
		{ "minute", 60 },
		{ "mins", 60 },
		{ "min", 60 },
		{ "m", 60 },
		{ "hours", 3600 },
		{ "hour", 3600 },
		{ "h", 3600 },
	};
	size_t i;
	size_t n;

	for (i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
		n = strlen(units[i].word);
		if (strncasecmp(text, units[i].word, n) == 0 && !isalpha((unsigned char)text[n])) {
			*len = n;
			return units[i].seconds;
		}
	}
	return -1;
}

/* A duration at TEXT: "6 seconds", "18.642s", "1m30s", "120ms", or a
 * bare number taken as seconds. -1 when TEXT does not start with one;
 * *END (if not NULL) is where the duration stopped. */
static double duration_parse(const char *text, const char **end_out)
{
	double total = 0;
	double amount;
	double unit;
	size_t unit_len;
	int parts = 0;
	char *end;

	for (;;) {
		if (!isdigit((unsigned char)*text))
			break;
		amount = strtod(text, &end);
		if (end == text || !isfinite(amount))
			break;
		text = end;
		while (*text == ' ')
			text++;
		unit = unit_seconds(text, &unit_len);
		if (unit < 0) {
			/* A bare number ends the duration: seconds if it
			 * stands alone, else it belongs to other prose. */
			if (parts == 0)
				total = amount;
			parts++;
			break;
		}
		total += amount * unit;
		parts++;
		text += unit_len;
	}
	if (end_out)
		*end_out = text;
	return parts ? total : -1;
}

double retry_after_from_text(const char *message)
{
	static const char *const phrases[] = { "retry after ", "try again in " };
	const char *at;
	const char *hit;
	double seconds;
	size_t i;
	size_t n;

	if (!message)
		return -1;
	for (i = 0; i < sizeof(phrases) / sizeof(phrases[0]); i++) {
		n = strlen(phrases[i]);
		at = message;
		/* A phrase may occur without a number ("try again in a few
		 * minutes"); keep looking past it. */
		for (;;) {
			hit = strcasestr(at, phrases[i]);
			if (!hit)
				break;
			seconds = duration_parse(hit + n, NULL);
			if (seconds >= 0)
				return seconds;
			at = hit + n;
		}
	}
	return -1;
}

static double random_clamp(double random01)
{
	if (!(random01 >= 0)) /* also catches NaN */
		return 0;
	return random01 > 1 ? 1 : random01;
}

double backoff_floor_s(int retry_index)
{
	double delay = BACKOFF_INITIAL_S;
	int i;

	/* Doubling stops at the ceiling, so a large index cannot overflow. */
	for (i = 0; i < retry_index && delay < BACKOFF_MAX_S; i++)
		delay *= 2;
	return delay > BACKOFF_MAX_S ? BACKOFF_MAX_S : delay;
}

double backoff_delay_s(int retry_index, double random01)
{
	return retry_wait_s(retry_index, -1, random01);
}

double retry_wait_s(int retry_index, double hint, double random01)
{
	double floor_s = backoff_floor_s(retry_index);
	double base = hint > floor_s ? hint : floor_s; /* also when hint is NaN */

	return base + floor_s * random_clamp(random01);
}

/* ---- rate-limit reset headers ---- */

int ratelimit_header_take(struct ratelimit_hints *hints, const char *name, size_t name_len,
			  const char *value)
{
	static const struct {
		const char *name;
		enum ratelimit_kind kind;
		int is_reset;
	} known[] = {
		{ "x-ratelimit-remaining-requests", RATELIMIT_REQUESTS, 0 },
		{ "x-ratelimit-remaining-tokens", RATELIMIT_TOKENS, 0 },
		{ "x-ratelimit-reset-requests", RATELIMIT_REQUESTS, 1 },
		{ "x-ratelimit-reset-tokens", RATELIMIT_TOKENS, 1 },
		/* Azure, with the extra hyphen */
		{ "x-rate-limit-reset-requests", RATELIMIT_REQUESTS, 1 },
		{ "x-rate-limit-reset-tokens", RATELIMIT_TOKENS, 1 },
		{ "anthropic-ratelimit-requests-remaining", RATELIMIT_REQUESTS, 0 },
		{ "anthropic-ratelimit-requests-reset", RATELIMIT_REQUESTS, 1 },
		{ "anthropic-ratelimit-tokens-remaining", RATELIMIT_TOKENS, 0 },
		{ "anthropic-ratelimit-tokens-reset", RATELIMIT_TOKENS, 1 },
		{ "anthropic-ratelimit-input-tokens-remaining", RATELIMIT_INPUT_TOKENS, 0 },
		{ "anthropic-ratelimit-input-tokens-reset", RATELIMIT_INPUT_TOKENS, 1 },
		{ "anthropic-ratelimit-output-tokens-remaining", RATELIMIT_OUTPUT_TOKENS, 0 },
		{ "anthropic-ratelimit-output-tokens-reset", RATELIMIT_OUTPUT_TOKENS, 1 },
	};
	size_t i;
	char *dst;
	size_t size;

	for (i = 0; i < sizeof(known) / sizeof(known[0]); i++) {
		if (strlen(known[i].name) != name_len ||
		    strncasecmp(name, known[i].name, name_len) != 0)
			continue;
		dst = known[i].is_reset ? hints->reset[known[i].kind]
					: hints->remaining[known[i].kind];
		size = known[i].is_reset ? sizeof(hints->reset[0]) : sizeof(hints->remaining[0]);
		snprintf(dst, size, "%s", value);
		return 1;
	}
	return 0;
}

/* RFC 3339: "2024-05-01T12:00:30Z", "2024-05-01T12:00:30.25+02:00".
 * 0 and the time in *OUT (fractions of a second kept), or -1. */
static int rfc3339_parse(const char *text, double *out)
{
	struct tm tm;
	time_t when;
	double fraction = 0;
	int offset = 0;
	char *end;

	if (strlen(text) < 20 || text[4] != '-' || text[7] != '-' ||
	    (text[10] != 'T' && text[10] != 't' && text[10] != ' ') || text[13] != ':' ||
	    text[16] != ':')
		return -1;
	memset(&tm, 0, sizeof(tm));
	tm.tm_year = digits_parse(text, 4) - 1900;
	tm.tm_mon = digits_parse(text + 5, 2) - 1;
	tm.tm_mday = digits_parse(text + 8, 2);
	tm.tm_hour = digits_parse(text + 11, 2);
	tm.tm_min = digits_parse(text + 14, 2);
	tm.tm_sec = digits_parse(text + 17, 2);
	text += 19;
	if (*text == '.') {
		if (!isdigit((unsigned char)text[1]))
			return -1;
		fraction = strtod(text, &end);
		text = end;
	}
	if (*text == 'Z' || *text == 'z') {
		text++;
	} else if ((*text == '+' || *text == '-') && text[3] == ':') {
		int hours = digits_parse(text + 1, 2);
		int minutes = digits_parse(text + 4, 2);

		if (hours < 0 || minutes < 0)
			return -1;
		offset = (hours * 60 + minutes) * 60 * (*text == '+' ? 1 : -1);
		text += 6;
	} else {
		return -1;
	}
	if (*text != '\0' || utc_time(&tm, &when) < 0)
		return -1;
	*out = (double)when - offset + fraction;
	return 0;
}

/* The seconds from NOW until the reset TEXT; -1 when it does not parse. */
static double reset_value_parse(const char *text, time_t now)
{
	const char *end;
	double seconds;
	double when;

	if (!*text)
		return -1;
	if (rfc3339_parse(text, &when) == 0)
		return when > (double)now ? when - (double)now : 0;
	seconds = duration_parse(text, &end);
	if (seconds < 0 || *end != '\0')
		return -1;
	return seconds;
}

double ratelimit_reset_wait(const struct ratelimit_hints *hints, time_t now)
{
	double exhausted = -1;
	double earliest = -1;
	double wait;
	int kind;

	for (kind = 0; kind < RATELIMIT_KINDS; kind++) {
		wait = reset_value_parse(hints->reset[kind], now);
		if (wait < 0)
			continue;
		if (nonnegative_number_parse(hints->remaining[kind]) == 0) {
			if (wait > exhausted)
				exhausted = wait;
		} else if (earliest < 0 || wait < earliest) {
			earliest = wait;
		}
	}
	return exhausted >= 0 ? exhausted : earliest;
}

/* ---- a deployment's throttle ---- */

double throttle_floor_s(const struct throttle *t)
{
	return t->level == 0 ? 0 : backoff_floor_s((int)t->level - 1);
}

void throttle_note(struct throttle *t, int rate_limited, double hint, double started, double now)
{
	double floor_s;
	double until;
	int raised;

	/* a rate limit long past says nothing of this one */
	if (t->level > 0 && now - t->raised_at > THROTTLE_QUIET_S)
		t->level = 0;
	raised = rate_limited && (t->level == 0 || started >= t->wave_end);
	if (raised) {
		if (t->level < 16)
			t->level++;
		t->raised_at = now;
	}
	floor_s = rate_limited ? throttle_floor_s(t) : 0;
	until = now + (hint > floor_s ? hint : floor_s);
	if (raised)
		t->wave_end = until;
	if (until > t->not_before)
		t->not_before = until;
	if (hint >= 0 && now + hint > t->asked_until)
		t->asked_until = now + hint;
}

double throttle_asked_s(const struct throttle *t, double now)
{
	return t->asked_until > now ? t->asked_until - now : 0;
}

void throttle_clear(struct throttle *t)
{
	t->level = 0;
}

double throttle_wait_s(const struct throttle *t, double now, double random01)
{
	double spread = throttle_floor_s(t);

	if (t->not_before <= now)
		return 0;
	if (spread < BACKOFF_INITIAL_S)
		spread = BACKOFF_INITIAL_S;
	return t->not_before - now + spread * random_clamp(random01);
}
