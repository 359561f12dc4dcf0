/* Release functions for the request types of backend.h and the attempt
 * error setter. */
#include "backends/backend.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backends/utf8.h"

void llm_request_release(struct llm_request *req)
{
	size_t i;

	if (!req)
		return;
	for (i = 0; i < req->n_messages; i++) {
		free(req->messages[i].role);
		free(req->messages[i].content);
	}
	free(req->messages);
	for (i = 0; i < req->n_stop; i++)
		free(req->stop[i]);
	free(req->stop);
	memset(req, 0, sizeof(*req));
}

void llm_request_cap_tokens(struct llm_request *req, long cap)
{
	if (cap > 0 && (req->max_tokens <= 0 || req->max_tokens > cap))
		req->max_tokens = cap;
}

/* Headers carry API keys and signatures, and a token request's body an
 * assertion: wiped before the memory goes back to the allocator. */
void http_request_release(struct http_request *req)
{
	if (!req)
		return;
	free(req->url);
	for (struct curl_slist *h = req->headers; h; h = h->next)
		explicit_bzero(h->data, strlen(h->data));
	curl_slist_free_all(req->headers);
	if (req->body)
		explicit_bzero(req->body, req->body_len);
	free(req->body);
	memset(req, 0, sizeof(*req));
}

static void attempt_error_vset(struct attempt_error *err, enum outcome outcome, long status,
			       const char *fmt, va_list ap)
{
	int written;

	err->outcome = outcome;
	err->http_status = status;
	err->retry_after_s = -1;
	written = vsnprintf(err->message, sizeof(err->message), fmt, ap);
	if (written < 0)
		err->message[0] = '\0';
	else if ((size_t)written >= sizeof(err->message))
		/* a cut message stays UTF-8 and says it was cut, at a word */
		utf8_cut_at_word(err->message, sizeof(err->message));
}

void attempt_error_set(struct attempt_error *err, enum outcome outcome, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	attempt_error_vset(err, outcome, 0, fmt, ap);
	va_end(ap);
}

void attempt_error_set_http(struct attempt_error *err, enum outcome outcome, long status,
			    const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	attempt_error_vset(err, outcome, status, fmt, ap);
	va_end(ap);
}
