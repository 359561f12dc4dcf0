/* The outcome table (see outcome.h). */
#include "backends/outcome.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "backends/retry.h"

/* clang-format off */
static const struct outcome_info outcomes[OUTCOME_COUNT] = {
	/*                                 word                  retry fail  reader */
	[OUTCOME_OK]                  = { "ok",                  0,    0,    0 },
	[OUTCOME_CANCELLED]           = { "cancelled",           0,    0,    ECANCELED },
	[OUTCOME_CONNECTION]          = { "connection",          1,    1,    EIO },
	[OUTCOME_TIMEOUT]             = { "timeout",             1,    1,    EIO },
	[OUTCOME_FIRST_TOKEN_TIMEOUT] = { "first_token_timeout", 1,    1,    EIO },
	[OUTCOME_STREAM_CUT]          = { "stream_cut",          1,    1,    EIO },
	[OUTCOME_TLS]                 = { "tls",                 0,    1,    EIO },
	[OUTCOME_HTTP_RETRYABLE]      = { "http_%ld",            1,    1,    EIO },
	[OUTCOME_HTTP_REJECTED]       = { "http_%ld",            0,    0,    EIO },
	[OUTCOME_AUTH]                = { "http_%ld",            0,    0,    EIO },
	[OUTCOME_CONTEXT_LENGTH]      = { "context_length",      0,    0,    EIO },
	[OUTCOME_CONTENT_FILTER]      = { "content_filter",      0,    0,    EIO },
	[OUTCOME_PROVIDER_ERROR]      = { "stream_error",        1,    1,    EIO },
	[OUTCOME_PROVIDER_REJECTED]   = { "stream_error",        0,    0,    EIO },
	[OUTCOME_MALFORMED]           = { "malformed",           1,    1,    EIO },
	[OUTCOME_BAD_RESPONSE]        = { "bad_response",        0,    1,    EIO },
	[OUTCOME_BAD_CONTENT_TYPE]    = { "bad_content_type",    1,    1,    EIO },
	[OUTCOME_TOO_LARGE]           = { "too_large",           0,    0,    EIO },
	[OUTCOME_TOKEN_UNAVAILABLE]   = { "token_http_%ld",      1,    1,    EIO },
	[OUTCOME_TOKEN_REJECTED]      = { "token_http_%ld",      0,    0,    EIO },
	[OUTCOME_NO_MEMORY]           = { "no_memory",           1,    0,    EIO },
	[OUTCOME_LOCAL_ERROR]         = { "local_error",         0,    0,    EIO },
};
/* clang-format on */

const struct outcome_info *outcome_info(enum outcome o)
{
	if ((unsigned)o >= OUTCOME_COUNT)
		o = OUTCOME_LOCAL_ERROR;
	return &outcomes[o];
}

char *outcome_word(enum outcome o, long http_status, char *buf, size_t size)
{
	const char *word = outcome_info(o)->word;
	const char *mark = strstr(word, "%ld");

	if (!mark)
		snprintf(buf, size, "%s", word);
	else if (http_status > 0)
		snprintf(buf, size, "%.*s%ld", (int)(mark - word), word, http_status);
	else if (o == OUTCOME_TOKEN_UNAVAILABLE || o == OUTCOME_TOKEN_REJECTED)
		snprintf(buf, size, "auth"); /* no answer from the token endpoint at all */
	else
		snprintf(buf, size, "%.*serror", (int)(mark - word), word);
	return buf;
}

enum outcome outcome_of_http_status(long status, int should_retry)
{
	if (should_retry != 0 && http_status_retryable(status))
		return OUTCOME_HTTP_RETRYABLE;
	if (status == 401 || status == 403)
		return OUTCOME_AUTH;
	return OUTCOME_HTTP_REJECTED;
}

enum outcome outcome_refine_rejection(enum outcome o, const char *message)
{
	/* the providers' own words */
	static const char *const too_long[] = {
		"context_length_exceeded",		/* OpenAI, Azure: the code */
		"maximum context length",		/* OpenAI, Azure */
		"context window",			/* Bedrock: model_context_window_exceeded */
		"context_window",			/* ... and its spelling as a word */
		"prompt is too long",			/* Anthropic */
		"input is too long",			/* Bedrock */
		"exceeds the maximum number of tokens", /* Vertex */
		"too many input tokens",
	};
	size_t i;

	if (o != OUTCOME_HTTP_REJECTED || !message)
		return o;
	for (i = 0; i < sizeof(too_long) / sizeof(too_long[0]); i++) {
		if (strcasestr(message, too_long[i]))
			return OUTCOME_CONTEXT_LENGTH;
	}
	return o;
}

int outcome_rate_limited(enum outcome o, long http_status)
{
	return o == OUTCOME_HTTP_RETRYABLE && http_status == 429;
}

int outcome_deployment_fault(enum outcome o, long http_status)
{
	return outcome_failover(o) && !outcome_rate_limited(o, http_status);
}

int should_retry_header(const char *value)
{
	if (value && strcasecmp(value, "true") == 0)
		return 1;
	if (value && strcasecmp(value, "false") == 0)
		return 0;
	return -1;
}

const char *finish_reason_word(enum finish_reason r)
{
	switch (r) {
	case FINISH_STOP:
		return "stop";
	case FINISH_LENGTH:
		return "length";
	case FINISH_FILTERED:
		return "content_filter";
	default:
		return NULL;
	}
}
