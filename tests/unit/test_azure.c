/* Unit tests of the Azure OpenAI backend: request, streamed answer with
 * content filtering, errors. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <errno.h>

#include <cmocka.h>

#include "backends/backend.h"
#include "tests/unit/backend_harness.h"

/* ---- fixtures --------------------------------------------------------- */

static struct cloud azure_cloud = {
	.name = "azure",
	.provider = PROVIDER_AZURE,
	.credentials = { .api_key = "azure-key-1" },
};

static struct region azure_region = {
	.name = "westeurope",
	.endpoint = "https://contoso-weu.openai.azure.com",
	.cloud = &azure_cloud,
};

static struct model gpt4o = {
	.name = "gpt-4o",
	.id = "gpt-4o-prod",
	.api_version = "2024-06-01",
	.region = &azure_region,
};

static struct llm_message conversation[] = {
	{ .role = "system", .content = "You are terse." },
	{ .role = "user", .content = "Hello" },
};

static char *stops[] = { "END" };

/* ---- request ---------------------------------------------------------- */

static void build_request_key(void **state)
{
	struct llm_request req = {
		.messages = conversation,
		.n_messages = 2,
		.has_temperature = 1,
		.temperature = 0.7,
		.max_tokens = 100,
		.stop = stops,
		.n_stop = 1,
	};
	struct backend_target target = {
		.model = &gpt4o,
		.credentials = &azure_cloud.credentials,
	};
	struct http_request out;
	char headers[1024];

	(void)state;
	assert_int_equal(backend_azure.build_request(&target, &req, &out), 0);
	assert_string_equal(out.url, "https://contoso-weu.openai.azure.com/openai/deployments/"
				     "gpt-4o-prod/chat/completions?api-version=2024-06-01");
	headers_join(out.headers, headers, sizeof(headers));
	assert_string_equal(headers, "api-key: azure-key-1\n"
				     "Content-Type: application/json\n"
				     "Accept: text/event-stream\n");
	/* The deployment in the URL names the model: no "model" key. */
	assert_string_equal(out.body,
			    "{\"messages\":[{\"role\":\"system\",\"content\":\"You are terse.\"},"
			    "{\"role\":\"user\",\"content\":\"Hello\"}],"
			    "\"stream\":true,\"stream_options\":{\"include_usage\":true},"
			    "\"temperature\":0.7,\"max_tokens\":100,\"stop\":[\"END\"]}");
	assert_int_equal(out.body_len, strlen(out.body));
	http_request_release(&out);
}

static void build_request_bearer_and_default_version(void **state)
{
	struct credentials entra = { .bearer_token = "eyJ0eXAi.entra" };
	struct model unversioned = gpt4o;
	struct region slashed = azure_region;
	struct llm_request req = { .messages = conversation + 1, .n_messages = 1 };
	struct backend_target target = {
		.model = &unversioned,
		.credentials = &entra,
	};
	struct http_request out;
	char headers[1024];

	(void)state;
	unversioned.api_version = NULL;
	slashed.endpoint = "https://contoso-weu.openai.azure.com/";
	unversioned.region = &slashed;
	assert_int_equal(backend_azure.build_request(&target, &req, &out), 0);
	assert_string_equal(out.url, "https://contoso-weu.openai.azure.com/openai/deployments/"
				     "gpt-4o-prod/chat/completions?api-version=2024-10-21");
	headers_join(out.headers, headers, sizeof(headers));
	assert_string_equal(headers, "Authorization: Bearer eyJ0eXAi.entra\n"
				     "Content-Type: application/json\n"
				     "Accept: text/event-stream\n");
	http_request_release(&out);
}

static void build_request_refusals(void **state)
{
	struct credentials none = { 0 };
	struct credentials evil = { .api_key = "k\nX-Injected: 1" };
	struct llm_request req = { .messages = conversation + 1, .n_messages = 1 };
	struct backend_target keyless = { .model = &gpt4o, .credentials = &none };
	struct backend_target injected = { .model = &gpt4o, .credentials = &evil };
	struct http_request out;

	(void)state;
	assert_int_equal(backend_azure.build_request(&keyless, &req, &out), -ENOKEY);
	assert_null(out.url);
	assert_int_equal(backend_azure.build_request(&injected, &req, &out), -EINVAL);
}

/* ---- streamed answer -------------------------------------------------- */

/* As Azure streams: a first chunk with no choices but the prompt's
 * filter verdicts, content chunks with their own verdicts, a finish, the
 * usage chunk and [DONE]. */
static const char stream_ok[] =
	"data: {\"choices\":[],\"created\":0,\"id\":\"\",\"model\":\"\",\"object\":\"\","
	"\"prompt_filter_results\":[{\"prompt_index\":0,\"content_filter_results\":{"
	"\"hate\":{\"filtered\":false,\"severity\":\"safe\"},\"jailbreak\":{\"filtered\":false,"
	"\"detected\":false}}}]}\n\n"
	"data: "
	"{\"choices\":[{\"content_filter_results\":{},\"delta\":{\"content\":\"\",\"role\":"
	"\"assistant\"},"
	"\"finish_reason\":null,\"index\":0,\"logprobs\":null}],\"created\":1735689600,\"id\":"
	"\"chatcmpl-AZ1\","
	"\"model\":\"gpt-4o-2024-08-06\",\"object\":\"chat.completion.chunk\",\"system_"
	"fingerprint\":\"fp_1\"}\n\n"
	"data: "
	"{\"choices\":[{\"content_filter_results\":{\"hate\":{\"filtered\":false,\"severity\":"
	"\"safe\"},"
	"\"violence\":{\"filtered\":false,\"severity\":\"safe\"}},\"delta\":{\"content\":\"Hel\"},"
	"\"finish_reason\":null,\"index\":0,\"logprobs\":null}],\"created\":1735689600,\"id\":"
	"\"chatcmpl-AZ1\","
	"\"model\":\"gpt-4o-2024-08-06\",\"object\":\"chat.completion.chunk\"}\n\n"
	"data: "
	"{\"choices\":[{\"content_filter_results\":{\"hate\":{\"filtered\":false,\"severity\":"
	"\"safe\"}},"
	"\"delta\":{\"content\":\"lo!\"},\"finish_reason\":null,\"index\":0,\"logprobs\":null}],"
	"\"created\":1735689600,\"id\":\"chatcmpl-AZ1\",\"model\":\"gpt-4o-2024-08-06\",\"object\":"
	"\"chat.completion.chunk\"}\n\n"
	"data: "
	"{\"choices\":[{\"content_filter_results\":{},\"delta\":{},\"finish_reason\":\"stop\","
	"\"index\":0,"
	"\"logprobs\":null}],\"created\":1735689600,\"id\":\"chatcmpl-AZ1\",\"model\":\"gpt-4o-"
	"2024-08-06\","
	"\"object\":\"chat.completion.chunk\"}\n\n"
	"data: "
	"{\"choices\":[],\"created\":1735689600,\"id\":\"chatcmpl-AZ1\",\"model\":\"gpt-4o-2024-08-"
	"06\","
	"\"object\":\"chat.completion.chunk\",\"usage\":{\"completion_tokens\":3,\"prompt_tokens\":"
	"12,\"total_tokens\":15}}\n\n"
	"data: [DONE]\n\n";

static void stream_complete(void **state)
{
	(void)state;
	stream_expect_everywhere(&backend_azure, stream_ok, "Hello!", 12, 3, "stop",
				 "chatcmpl-AZ1");
}

/* The output filter fires: a verdict chunk without delta first (the
 * asynchronous filter), then the finish. */
static const char stream_filtered[] =
	"data: {\"choices\":[{\"content_filter_results\":{},\"delta\":{\"content\":\"Once upon\"},"
	"\"finish_reason\":null,\"index\":0}],\"created\":1,\"id\":\"chatcmpl-F\",\"model\":\"gpt-"
	"4o\",\"object\":\"chat.completion.chunk\"}\n\n"
	"data: "
	"{\"choices\":[{\"content_filter_offsets\":{\"check_offset\":0,\"start_offset\":0,\"end_"
	"offset\":9},"
	"\"content_filter_results\":{\"hate\":{\"filtered\":false,\"severity\":\"safe\"},"
	"\"violence\":{\"filtered\":true,\"severity\":\"high\"}},\"finish_reason\":null,\"index\":"
	"0}],"
	"\"created\":1,\"id\":\"chatcmpl-F\",\"model\":\"gpt-4o\",\"object\":\"chat.completion."
	"chunk\"}\n\n"
	"data: "
	"{\"choices\":[{\"content_filter_results\":{\"self_harm\":{\"filtered\":true,\"severity\":"
	"\"medium\"},"
	"\"violence\":{\"filtered\":true,\"severity\":\"high\"}},\"delta\":{},\"finish_reason\":"
	"\"content_filter\",\"index\":0}],"
	"\"created\":1,\"id\":\"chatcmpl-F\",\"model\":\"gpt-4o\",\"object\":\"chat.completion."
	"chunk\"}\n\n"
	"data: [DONE]\n\n";

static void stream_content_filter(void **state)
{
	(void)state;
	/* reported as a filtered finish, naming what fired: the engine
	 * fails the attempt */
	stream_expect_filtered(&backend_azure, stream_filtered,
			       "Azure OpenAI's content filter (violence, self_harm)");
}

static void stream_content_filter_without_verdicts(void **state)
{
	static const char stream[] =
		"data: "
		"{\"choices\":[{\"delta\":{},\"finish_reason\":\"content_filter\",\"index\":0}],"
		"\"id\":\"c\",\"object\":\"chat.completion.chunk\"}\n\n"
		"data: [DONE]\n\n";
	(void)state;
	stream_expect_filtered(&backend_azure, stream, "Azure OpenAI's content filter");
}

static void stream_cut(void **state)
{
	struct recorder rec;
	struct attempt_error err;
	size_t len = strlen(stream_ok);
	size_t whole = len - strlen("data: [DONE]\n\n");
	size_t cut;

	(void)state;
	/* cut anywhere before the usage chunk's end: the answer may be short */
	for (cut = 0; cut < whole; cut++) {
		assert_int_equal(stream_run(&backend_azure, stream_ok, cut, cut, 0, &rec, &err),
				 -EIO);
		assert_true(outcome_retryable(err.outcome));
		assert_string_equal(ATTEMPT_ERROR_WORD(&err), "stream_cut");
	}
	/* after it, only [DONE] is missing: finish and usage said all */
	for (cut = whole; cut < len; cut++)
		assert_int_equal(stream_run(&backend_azure, stream_ok, cut, cut, 0, &rec, &err), 0);
}

static void stream_in_band_error(void **state)
{
	static const char stream[] = "data: "
				     "{\"choices\":[{\"delta\":{\"content\":\"Hel\"},\"finish_"
				     "reason\":null,\"index\":0}],"
				     "\"id\":\"c\",\"object\":\"chat.completion.chunk\"}\n\n"
				     "data: {\"error\":{\"message\":\"The server had an error "
				     "while processing your request.\","
				     "\"type\":\"server_error\",\"param\":null,\"code\":null}}\n\n";
	struct recorder rec;
	struct attempt_error err;

	(void)state;
	assert_int_equal(stream_fail(&backend_azure, stream, &rec, &err), -EIO);
	assert_true(outcome_retryable(err.outcome));
	assert_non_null(
		strstr(err.message, "The server had an error while processing your request."));
}

/* ---- errors ----------------------------------------------------------- */

static void classify_prompt_filtered(void **state)
{
	/* As observed on the deployments API: innererror and the singular
	 * content_filter_result. */
	static const char body[] =
		"{\"error\":{\"message\":\"The response was filtered due to the prompt triggering "
		"Azure OpenAI's "
		"content management policy. Please modify your prompt and "
		"retry.\",\"type\":null,\"param\":\"prompt\","
		"\"code\":\"content_filter\",\"status\":400,\"innererror\":{\"code\":"
		"\"ResponsibleAIPolicyViolation\","
		"\"content_filter_result\":{\"hate\":{\"filtered\":false,\"severity\":\"safe\"},"
		"\"jailbreak\":{\"filtered\":true,\"detected\":true},"
		"\"self_harm\":{\"filtered\":false,\"severity\":\"safe\"},"
		"\"sexual\":{\"filtered\":false,\"severity\":\"safe\"},"
		"\"violence\":{\"filtered\":false,\"severity\":\"safe\"}}}}}";
	/* As the spec spells it: inner_error and content_filter_results. */
	static const char body_spec[] =
		"{\"error\":{\"code\":\"content_filter\",\"message\":\"filtered\",\"param\":"
		"\"prompt\",\"type\":null,"
		"\"inner_error\":{\"code\":\"ResponsibleAIPolicyViolation\",\"content_filter_"
		"results\":{"
		"\"hate\":{\"filtered\":true,\"severity\":\"high\"},\"violence\":{\"filtered\":"
		"true,\"severity\":\"medium\"},"
		"\"profanity\":{\"filtered\":false,\"detected\":true}}}}}";
	struct http_response_head head;
	struct attempt_error err;

	(void)state;
	head_init(&head, 400);
	classify(&backend_azure, &head, body, &err);
	assert_false(outcome_retryable(err.outcome));
	assert_string_equal(ATTEMPT_ERROR_WORD(&err), "content_filter");
	assert_string_equal(err.message,
			    "Azure OpenAI's content filter rejected the prompt (jailbreak)");
	classify(&backend_azure, &head, body_spec, &err);
	assert_false(outcome_retryable(err.outcome));
	assert_string_equal(err.message,
			    "Azure OpenAI's content filter rejected the prompt (hate, violence)");
}

static void classify_rate_limited(void **state)
{
	static const char body[] =
		"{\"error\":{\"code\":\"429\",\"message\":\"Requests to the ChatCompletions_Create "
		"Operation under "
		"Azure OpenAI API version 2024-08-01-preview have exceeded token rate limit of "
		"your current OpenAI "
		"S0 pricing tier. Please retry after 6 seconds. Please go here: "
		"https://aka.ms/oai/quotaincrease "
		"if you would like to further increase the default rate limit.\"}}";
	struct http_response_head head;
	struct attempt_error err;

	(void)state;
	/* Only the prose gives the wait. */
	head_init(&head, 429);
	classify(&backend_azure, &head, body, &err);
	assert_true(outcome_retryable(err.outcome));
	assert_string_equal(ATTEMPT_ERROR_WORD(&err), "http_429");
	assert_true(err.retry_after_s > 5.99 && err.retry_after_s < 6.01);
	assert_non_null(
		strstr(err.message,
		       "Azure OpenAI answered HTTP 429: Requests to the ChatCompletions_Create"));
	/* retry-after beats the prose... */
	snprintf(head.retry_after, sizeof(head.retry_after), "9");
	classify(&backend_azure, &head, body, &err);
	assert_true(err.retry_after_s > 8.99 && err.retry_after_s < 9.01);
	/* ...and retry-after-ms beats retry-after. */
	snprintf(head.retry_after_ms, sizeof(head.retry_after_ms), "2500");
	classify(&backend_azure, &head, body, &err);
	assert_true(err.retry_after_s > 2.49 && err.retry_after_s < 2.51);
}

static void classify_other(void **state)
{
	struct http_response_head head;
	struct attempt_error err;

	(void)state;
	head_init(&head, 404);
	classify(&backend_azure, &head,
		 "{\"error\":{\"code\":\"DeploymentNotFound\",\"message\":\"The API deployment for "
		 "this resource does not exist.\"}}",
		 &err);
	assert_false(outcome_retryable(err.outcome));
	assert_string_equal(ATTEMPT_ERROR_WORD(&err), "http_404");
	assert_string_equal(err.message, "Azure OpenAI answered HTTP 404 (DeploymentNotFound): The "
					 "API deployment for this resource does not exist.");

	head_init(&head, 401);
	classify(&backend_azure, &head,
		 "{\"error\":{\"code\":401,\"message\":\"Access denied due to invalid subscription "
		 "key or wrong API endpoint.\"}}",
		 &err);
	assert_false(outcome_retryable(err.outcome));
	assert_string_equal(err.message, "Azure OpenAI answered HTTP 401: Access denied due to "
					 "invalid subscription key or wrong API endpoint.");

	head_init(&head, 503);
	classify(&backend_azure, &head, "Service Unavailable", &err);
	assert_true(outcome_retryable(err.outcome));
	assert_string_equal(err.message, "Azure OpenAI answered HTTP 503");
	assert_true(err.retry_after_s < 0);
}

/* ---- allocation failure ----------------------------------------------- */

static void allocation_failures(void **state)
{
	struct llm_request req = {
		.messages = conversation,
		.n_messages = 2,
		.has_temperature = 1,
		.temperature = 0.7,
		.max_tokens = 100,
		.stop = stops,
		.n_stop = 1,
	};
	struct backend_target key = {
		.model = &gpt4o,
		.credentials = &azure_cloud.credentials,
	};
	struct credentials entra = { .bearer_token = "eyJ0eXAi.entra" };
	struct backend_target bearer = { .model = &gpt4o, .credentials = &entra };

	(void)state;
	chaos_run(&backend_azure, &key, &req, stream_ok, "Hello!");
	chaos_run(&backend_azure, &bearer, &req, stream_ok, "Hello!");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(build_request_key),
		cmocka_unit_test(build_request_bearer_and_default_version),
		cmocka_unit_test(build_request_refusals),
		cmocka_unit_test(stream_complete),
		cmocka_unit_test(stream_content_filter),
		cmocka_unit_test(stream_content_filter_without_verdicts),
		cmocka_unit_test(stream_cut),
		cmocka_unit_test(stream_in_band_error),
		cmocka_unit_test(classify_prompt_filtered),
		cmocka_unit_test(classify_rate_limited),
		cmocka_unit_test(classify_other),
		cmocka_unit_test(allocation_failures),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
