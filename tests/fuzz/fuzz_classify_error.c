/* libFuzzer target for each backend's classify_error().
 *
 * Input: byte 0 picks the backend, bytes 1-2 the HTTP status; then the
 * response headers the classifiers read, each ended by a NUL byte
 * (content type, request id, Retry-After, retry-after-ms,
 * x-amzn-ErrorType, x-should-retry), then the body. Like the engine, the
 * body is handed over NUL-terminated in a buffer of exactly that size. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "backends/backend.h"

static const struct backend *const backends[] = {
	&backend_openai, &backend_azure, &backend_anthropic, &backend_vertex, &backend_bedrock,
};

/* Copies the next NUL-ended field of *DATA into OUT (SIZE bytes),
 * truncated as the engine truncates header values. */
static void header_take(const uint8_t **data, size_t *len, char *out, size_t size)
{
	const uint8_t *nul = memchr(*data, '\0', *len);
	size_t n = nul ? (size_t)(nul - *data) : *len;
	size_t copy = n < size - 1 ? n : size - 1;

	memcpy(out, *data, copy);
	out[copy] = '\0';
	*data += nul ? n + 1 : n;
	*len -= nul ? n + 1 : n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t len);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t len)
{
	struct http_response_head head;
	struct attempt_error err;
	const struct backend *be;
	char *body;

	if (len < 3)
		return 0;
	memset(&head, 0, sizeof(head));
	be = backends[data[0] % (sizeof(backends) / sizeof(backends[0]))];
	head.status = (long)((data[1] << 8 | data[2]) % 1000);
	data += 3;
	len -= 3;
	header_take(&data, &len, head.content_type, sizeof(head.content_type));
	header_take(&data, &len, head.request_id, sizeof(head.request_id));
	header_take(&data, &len, head.retry_after, sizeof(head.retry_after));
	header_take(&data, &len, head.retry_after_ms, sizeof(head.retry_after_ms));
	header_take(&data, &len, head.amzn_error_type, sizeof(head.amzn_error_type));
	header_take(&data, &len, head.should_retry, sizeof(head.should_retry));

	body = malloc(len + 1);
	if (!body)
		return 0;
	memcpy(body, data, len);
	body[len] = '\0';
	memset(&err, 0x5a, sizeof(err));
	be->classify_error(&head, body, len, &err);
	free(body);

	if ((unsigned)err.outcome >= OUTCOME_COUNT ||
	    !memchr(err.message, '\0', sizeof(err.message)))
		abort();
	if (err.outcome == OUTCOME_OK || err.message[0] == '\0')
		abort();
	if (strchr(err.message, '\n') || strchr(err.message, '\r'))
		abort(); /* .error's first line must stay one */
	if (isnan(err.retry_after_s) || isinf(err.retry_after_s))
		abort();
	return 0;
}
