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

/* Appends LINE to *HEADERS; curl copies it. 0 or -ENOMEM. */
static int header_add(struct curl_slist **headers, const char *line)
{
	struct curl_slist *grown;

	grown = curl_slist_append(*headers, line);
	if (!grown)
		return -ENOMEM;
	*headers = grown;
	return 0;
}

static int authorization_add(struct curl_slist **headers, const char *api_key)
{
	char *line = NULL;
	int rc;

	if (asprintf(&line, "Authorization: Bearer %s", api_key) < 0)
		return -ENOMEM;
	rc = header_add(headers, line);
	/* The key must not linger in freed heap memory. */
	explicit_bzero(line, strlen(line));
	free(line);
	return rc;
}

static int openai_build_request(const struct backend_target *target,
				const struct llm_request *req,
				struct http_request *out)
{
	const struct model *model = target->model;
	const char *endpoint;
	size_t endpoint_len;
	int rc = -EINVAL;

	memset(out, 0, sizeof(*out));
	if (!model || !model->id || !model->region || !model->region->endpoint)
		goto fail;
	endpoint = model->region->endpoint;
	endpoint_len = strlen(endpoint);
	/* "http://host/v1/" and "http://host/v1" mean the same base. */
	while (endpoint_len > 0 && endpoint[endpoint_len - 1] == '/')
		endpoint_len--;
	rc = -ENOMEM;
	if (asprintf(&out->url, "%.*s/chat/completions", (int)endpoint_len,
		     endpoint) < 0) {
		out->url = NULL;
		goto fail;
	}
	/* Local servers need no key: without one, no Authorization at all. */
	if (target->credentials && target->credentials->api_key &&
	    target->credentials->api_key[0]) {
		rc = authorization_add(&out->headers,
				       target->credentials->api_key);
		if (rc < 0)
			goto fail;
	}
	rc = header_add(&out->headers, "Content-Type: application/json");
	if (rc < 0)
		goto fail;
	rc = header_add(&out->headers, "Accept: text/event-stream");
	if (rc < 0)
		goto fail;
	/* curl would otherwise send "Expect: 100-continue" for large bodies
	 * and wait up to a second for an interim answer few servers give. */
	rc = header_add(&out->headers, "Expect:");
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
