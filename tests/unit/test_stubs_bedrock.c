/* Stand-ins for the engine-side helpers the bedrock backend calls, so
 * its unit test links without the engine. They behave like the real
 * ones as far as the test looks: fields filled, strings truncated. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backends/backend.h"

void attempt_error_set(struct attempt_error *err, int retryable,
		       const char *outcome, const char *fmt, ...)
{
	va_list ap;

	err->retryable = retryable;
	err->retry_after_s = -1;
	snprintf(err->outcome, sizeof(err->outcome), "%s", outcome);
	va_start(ap, fmt);
	vsnprintf(err->message, sizeof(err->message), fmt, ap);
	va_end(ap);
}

void http_request_release(struct http_request *req)
{
	free(req->url);
	curl_slist_free_all(req->headers);
	free(req->body);
	memset(req, 0, sizeof(*req));
}
