/* Azure OpenAI, dated "deployments" API: the Chat Completions wire
 * format (openai_chat.c) at an Azure URL, with Azure's key header and
 * its content filter.
 *
 * The answer parser is openai_chat's, wrapped: a second, light read of
 * the same events collects which filter categories fired, so that a
 * finish_reason of content_filter can name them. */
#include "backends/backend.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <curl/curl.h>
#include <jansson.h>

#include "backends/openai_chat.h"
#include "backends/retry.h"
#include "backends/sse.h"
#include "backends/wire_util.h"

/* Room for the names of the filter categories that fired. */
#define AZURE_CATEGORIES_BYTES 256

/* ---- request ---------------------------------------------------------- */

/* api-key when the cloud has a key, else an Entra ID bearer token. */
static int auth_header_append(struct curl_slist **list, const struct credentials *credentials)
{
	if (credentials && credentials->api_key && credentials->api_key[0])
		return http_header_append(list, "api-key: ", credentials->api_key);
	if (credentials && credentials->bearer_token && credentials->bearer_token[0])
		return http_header_append(list, "Authorization: Bearer ",
					  credentials->bearer_token);
	return -ENOKEY;
}

static int azure_build_request(const struct backend_target *target, const struct llm_request *req,
			       struct http_request *out)
{
	const struct model *model = target->model;
	const struct region *region = model ? model->region : NULL;
	char *deployment = NULL;
	char *version = NULL;
	int rc = -EINVAL;

	memset(out, 0, sizeof(*out));
	if (!region || !region->endpoint || !model->id)
		goto out;
	rc = auth_header_append(&out->headers, target->credentials);
	if (rc == 0)
		rc = http_header_append(&out->headers, "Content-Type: application/json", "");
	if (rc == 0)
		rc = http_header_append(&out->headers, "Accept: text/event-stream", "");
	if (rc < 0)
		goto out;
	/* The deployment names the model, so the body carries none. */
	rc = openai_chat_body(req, NULL, &out->body, &out->body_len);
	if (rc < 0)
		goto out;
	/* Names from the config go into the URL: escaping keeps a stray
	 * '/', '?' or '&' from changing what is addressed. */
	deployment = curl_easy_escape(NULL, model->id, 0);
	version = curl_easy_escape(
		NULL, model->api_version ? model->api_version : AZURE_DEFAULT_API_VERSION, 0);
	if (!deployment || !version ||
	    asprintf(&out->url, "%.*s/openai/deployments/%s/chat/completions?api-version=%s",
		     endpoint_trimmed_length(region->endpoint), region->endpoint, deployment,
		     version) < 0) {
		out->url = NULL;
		rc = -ENOMEM;
	}
out:
	if (rc < 0)
		http_request_release(out);
	curl_free(version);
	curl_free(deployment);
	return rc;
}

/* ---- content filter --------------------------------------------------- */

/* Non-zero when LIST (", "-separated) names NAME as a whole word. */
static int list_has_name(const char *list, const char *name)
{
	size_t len = strlen(name);
	const char *at = strstr(list, name);

	while (at) {
		if ((at == list || at[-1] == ' ') && (at[len] == ',' || at[len] == '\0'))
			return 1;
		at = strstr(at + len, name);
	}
	return 0;
}

/* Adds to LIST (", "-separated, capped at SIZE) each category of RESULTS
 * whose verdict is filtered:true and that LIST does not name yet. A name
 * that does not fit is left out whole. */
static void filtered_categories_add(json_t *results, char *list, size_t size)
{
	const char *name;
	json_t *verdict;
	size_t used;
	size_t need;

	json_object_foreach (results, name, verdict) {
		if (!json_is_true(json_object_get(verdict, "filtered")) ||
		    list_has_name(list, name))
			continue;
		used = strlen(list);
		need = (used ? 2 : 0) + strlen(name);
		if (used + need + 1 > size)
			continue;
		snprintf(list + used, size - used, "%s%s", used ? ", " : "", name);
	}
}

/* ---- errors ----------------------------------------------------------- */

/* error.code as text: Azure sends it as a string ("429",
 * "DeploymentNotFound") or, from some gateways, as a number. */
static void error_code_text(json_t *code, char *out, size_t size)
{
	out[0] = '\0';
	if (json_is_string(code))
		snprintf(out, size, "%s", json_string_value(code));
	else if (json_is_integer(code))
		snprintf(out, size, "%" JSON_INTEGER_FORMAT, json_integer_value(code));
}

static json_t *object_get_either(json_t *object, const char *key, const char *other_key)
{
	json_t *value = json_object_get(object, key);

	return value ? value : json_object_get(object, other_key);
}

static void content_filter_report(json_t *error, const char *message, struct attempt_error *err)
{
	json_t *inner = object_get_either(error, "innererror", "inner_error");
	char categories[AZURE_CATEGORIES_BYTES] = "";

	/* The deployments API spells it content_filter_result, the rest
	 * content_filter_results; some gateways put it beside the code. */
	filtered_categories_add(
		object_get_either(inner, "content_filter_result", "content_filter_results"),
		categories, sizeof(categories));
	filtered_categories_add(
		object_get_either(error, "content_filter_result", "content_filter_results"),
		categories, sizeof(categories));
	if (categories[0])
		attempt_error_set(err, OUTCOME_CONTENT_FILTER,
				  "Azure OpenAI's content filter rejected the prompt (%s)",
				  categories);
	else if (message)
		attempt_error_set(err, OUTCOME_CONTENT_FILTER,
				  "Azure OpenAI's content filter rejected the prompt: %s", message);
	else
		attempt_error_set(err, OUTCOME_CONTENT_FILTER,
				  "Azure OpenAI's content filter rejected the prompt");
}

static void azure_classify_error(const struct http_response_head *head, const char *body,
				 size_t len, struct attempt_error *err)
{
	json_t *root = len ? json_loadb(body, len, 0, NULL) : NULL;
	json_t *error = json_object_get(root, "error");
	json_t *inner = object_get_either(error, "innererror", "inner_error");
	const char *message = json_string_value(json_object_get(error, "message"));
	const char *inner_code = json_string_value(json_object_get(inner, "code"));
	char code[64];
	char status_text[24];
	enum outcome outcome;
	double wait;

	error_code_text(json_object_get(error, "code"), code, sizeof(code));
	if (strcmp(code, "content_filter") == 0 ||
	    (inner_code && strcmp(inner_code, "ResponsibleAIPolicyViolation") == 0)) {
		content_filter_report(error, message, err);
		goto out;
	}
	outcome = outcome_of_http_status(head->status, should_retry_header(head->should_retry));
	snprintf(status_text, sizeof(status_text), "%ld", head->status);
	/* Azure's code is often the status again ("429"): no news there. */
	http_error_explain(err, outcome, head->status, "Azure OpenAI",
			   code[0] && strcmp(code, status_text) != 0 ? code : NULL, message);
	wait = retry_after_parse(head->retry_after, head->retry_after_ms, time(NULL));
	/* The wait is sometimes only in the prose: "Please retry after 6
	 * seconds". */
	if (wait < 0 && message)
		wait = retry_after_from_text(message);
	err->retry_after_s = wait;
out:
	error_message_flatten(err->message);
	json_decref(root);
}

/* ---- answer parser ---------------------------------------------------- */

/* struct stream_parser stays openai_chat's; this file's parser is an
 * azure_parser handed out under that opaque name. */
struct azure_parser {
	struct stream_parser *chat;    /* reads the answer */
	struct sse_parser *filter_sse; /* reads the same events for filter verdicts */
	const struct answer_events *ev;
	void *ctx;
	char categories[AZURE_CATEGORIES_BYTES];
};

static struct azure_parser *azure_parser_of(struct stream_parser *p)
{
	return (struct azure_parser *)(void *)p;
}

static int forward_text(void *ctx, const char *bytes, size_t len)
{
	struct azure_parser *ap = ctx;

	return ap->ev->text(ap->ctx, bytes, len);
}

static void forward_usage(void *ctx, long input_tokens, long output_tokens)
{
	struct azure_parser *ap = ctx;

	ap->ev->usage(ap->ctx, input_tokens, output_tokens);
}

/* A filtered answer is reported with the categories that fired, which
 * the chat parser does not know. */
static void forward_finish_reason(void *ctx, enum finish_reason reason, const char *word)
{
	struct azure_parser *ap = ctx;
	char detail[AZURE_CATEGORIES_BYTES + 64];

	if (reason != FINISH_FILTERED) {
		ap->ev->finish_reason(ap->ctx, reason, word);
		return;
	}
	if (ap->categories[0])
		snprintf(detail, sizeof(detail), "Azure OpenAI's content filter (%s)",
			 ap->categories);
	else
		snprintf(detail, sizeof(detail), "Azure OpenAI's content filter");
	error_message_flatten(detail);
	ap->ev->finish_reason(ap->ctx, reason, detail);
}

static void forward_request_id(void *ctx, const char *id)
{
	struct azure_parser *ap = ctx;

	ap->ev->request_id(ap->ctx, id);
}

static const struct answer_events azure_forwarding_events = {
	.text = forward_text,
	.usage = forward_usage,
	.finish_reason = forward_finish_reason,
	.request_id = forward_request_id,
};

/* Never fails the parse: malformed events are the chat parser's to
 * report. Azure's first chunk often has no choices at all. */
static int on_filter_event(void *ctx, const char *event, const char *data, size_t len)
{
	struct azure_parser *ap = ctx;
	json_t *chunk;
	json_t *choices;
	size_t i;

	(void)event;
	if (len == 0 || strcmp(data, "[DONE]") == 0)
		return 0;
	chunk = json_loadb(data, len, 0, NULL);
	choices = json_object_get(chunk, "choices");
	for (i = 0; i < json_array_size(choices); i++)
		filtered_categories_add(
			json_object_get(json_array_get(choices, i), "content_filter_results"),
			ap->categories, sizeof(ap->categories));
	json_decref(chunk);
	return 0;
}

static struct stream_parser *azure_parser_new(const struct answer_events *ev, void *ctx)
{
	struct azure_parser *ap = calloc(1, sizeof(*ap));

	if (!ap)
		return NULL;
	ap->ev = ev;
	ap->ctx = ctx;
	ap->chat = openai_chat_parser_new(&azure_forwarding_events, ap);
	ap->filter_sse = sse_new(OPENAI_CHAT_MAX_EVENT_BYTES, on_filter_event, ap);
	if (!ap->chat || !ap->filter_sse) {
		openai_chat_parser_free(ap->chat);
		sse_free(ap->filter_sse);
		free(ap);
		return NULL;
	}
	return (struct stream_parser *)(void *)ap;
}

static void azure_parser_free(struct stream_parser *p)
{
	struct azure_parser *ap = azure_parser_of(p);

	if (!ap)
		return;
	openai_chat_parser_free(ap->chat);
	sse_free(ap->filter_sse);
	free(ap);
}

static int azure_parser_feed(struct stream_parser *p, const char *data, size_t len,
			     struct attempt_error *err)
{
	struct azure_parser *ap = azure_parser_of(p);

	/* First, so the verdicts of an event are known by the time the
	 * chat parser reports its finish_reason. An over-long event fails
	 * the chat parser too, which says so. */
	sse_feed(ap->filter_sse, data, len);
	return openai_chat_parser_feed(ap->chat, data, len, err);
}

static int azure_parser_finish(struct stream_parser *p, struct attempt_error *err)
{
	struct azure_parser *ap = azure_parser_of(p);

	/* A last event without its blank line still counts. */
	if (sse_pending(ap->filter_sse))
		sse_feed(ap->filter_sse, "\n\n", 2);
	return openai_chat_parser_finish(ap->chat, err);
}

const struct backend backend_azure = {
	.name = "azure",
	.build_request = azure_build_request,
	.parser_new = azure_parser_new,
	.parser_feed = azure_parser_feed,
	.parser_finish = azure_parser_finish,
	.parser_free = azure_parser_free,
	.classify_error = azure_classify_error,
};
