/* libFuzzer target for prompt_parse() and what follows it for a job:
 * the defaults of a policy and the cost estimate. The prompt is handed
 * over in a buffer of exactly its size, not NUL-terminated. */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fs/prompt.h"

static void check_request(const struct llm_request *req)
{
	size_t i;

	if (req->n_messages == 0 || !req->messages)
		abort();
	for (i = 0; i < req->n_messages; i++) {
		const char *role = req->messages[i].role;

		if (!role || !req->messages[i].content)
			abort();
		if (strcmp(role, "system") != 0 && strcmp(role, "user") != 0 &&
		    strcmp(role, "assistant") != 0)
			abort();
		(void)strlen(req->messages[i].content);
	}
	for (i = 0; i < req->n_stop; i++) {
		if (!req->stop[i])
			abort();
		(void)strlen(req->stop[i]);
	}
	if (req->max_tokens < 0)
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t len);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t len)
{
	struct llm_request req;
	char err[256];
	char *buf;
	int rc;

	buf = malloc(len ? len : 1);
	if (!buf)
		return 0;
	memcpy(buf, data, len);
	memset(&req, 0, sizeof(req));
	memset(err, 'x', sizeof(err));
	rc = prompt_parse(buf, len, &req, err, sizeof(err));
	free(buf);
	if (rc == 0) {
		check_request(&req);
		if (prompt_bytes_for_cost(&req) < 0)
			abort();
		if (prompt_apply_defaults(&req, "Be brief.", 1, 0.5, 100) == 0) {
			check_request(&req);
			if (req.max_tokens <= 0 || req.max_tokens > 100)
				abort();
		}
		llm_request_release(&req);
	} else {
		if (rc != -ENODATA && rc != -EINVAL && rc != -ENOMEM)
			abort();
		if (!memchr(err, '\0', sizeof(err)))
			abort();
		/* The sentence becomes a line of .error. */
		for (size_t i = 0; err[i]; i++) {
			if ((unsigned char)err[i] < 0x20)
				abort();
		}
	}
	return 0;
}
