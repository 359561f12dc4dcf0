/* The openai backend: OpenAI's Chat Completions API and the servers that
 * copy it (Ollama, llama.cpp, vLLM). The wire format itself lives in
 * openai_chat.c, shared with azure; this file only addresses and
 * authenticates the request. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backends/backend.h"
#include "backends/openai_chat.h"
#include "backends/wire_util.h"

static int openai_build_request(const struct backend_target *target, const struct llm_request *req,
				struct http_request *out)
{
	const struct model *model = target->model;
	const char *endpoint;
	int rc = -EINVAL;

	memset(out, 0, sizeof(*out));
	if (!model || !model->id || !model->region || !model->region->endpoint)
		goto fail;
	endpoint = model->region->endpoint;
	rc = -ENOMEM;
	if (asprintf(&out->url, "%.*s/chat/completions", endpoint_trimmed_length(endpoint),
		     endpoint) < 0) {
		out->url = NULL;
		goto fail;
	}
	/* Local servers need no key: without one, no Authorization at all. */
	if (target->credentials && target->credentials->api_key &&
	    target->credentials->api_key[0]) {
		rc = http_header_append(&out->headers, "Authorization: Bearer ",
					target->credentials->api_key);
		if (rc < 0)
			goto fail;
	}
	rc = http_header_append(&out->headers, "Content-Type: application/json", "");
	if (rc < 0)
		goto fail;
	rc = http_header_append(&out->headers, "Accept: text/event-stream", "");
	if (rc < 0)
		goto fail;
	/* curl would otherwise send "Expect: 100-continue" for large bodies
	 * and wait up to a second for an interim answer few servers give. */
	rc = http_header_append(&out->headers, "Expect:", "");
	if (rc < 0)
		goto fail;
	rc = openai_chat_body(req, model->id, &out->body, &out->body_len);
	if (rc < 0)
		goto fail;
	return 0;
fail:
	http_request_release(out);
	return rc;
}

const struct backend backend_openai = {
	.name = "openai",
	.build_request = openai_build_request,
	.parser_new = openai_chat_parser_new,
	.parser_feed = openai_chat_parser_feed,
	.parser_finish = openai_chat_parser_finish,
	.parser_free = openai_chat_parser_free,
	.classify_error = openai_chat_classify_error,
};
