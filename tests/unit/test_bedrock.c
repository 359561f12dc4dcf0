/* The Bedrock backend: the signed ConverseStream request (re-derived
 * here with sigv4 at a fixed clock), the body's shape, the event-stream
 * answer fed split at every byte, in-stream failures, and the
 * classification of error responses. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <cmocka.h>
#include <jansson.h>

#include "backends/backend.h"
#include "backends/eventstream.h"
#include "backends/sigv4.h"

/* Signing clock of backends/bedrock.c, replaced for reproducibility. */
extern time_t (*bedrock_clock)(void);

#define FIXED_TIME 1440938160 /* 2015-08-30T12:36:00Z */
#define MODEL_ID "eu.anthropic.claude-3-7-sonnet-20250219-v1:0"
#define AWS_HOST "bedrock-runtime.eu-central-1.amazonaws.com"

static time_t fixed_clock(void)
{
	return FIXED_TIME;
}

/* --- fixtures ------------------------------------------------------ */

struct fixture {
	struct region region;
	struct model model;
	struct credentials creds;
	struct backend_target target;
	struct llm_message messages[8];
	struct llm_request req;
	char *stop[2];
};

static void fixture_init(struct fixture *f, const char *endpoint)
{
	memset(f, 0, sizeof(*f));
	f->region.name = "eu-central-1";
	f->region.endpoint = (char *)endpoint;
	f->model.id = MODEL_ID;
	f->model.region = &f->region;
	f->creds.aws_access_key_id = "AKIDEXAMPLE";
	f->creds.aws_secret_access_key = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
	f->target.model = &f->model;
	f->target.credentials = &f->creds;
	f->messages[0].role = "user";
	f->messages[0].content = "Hello";
	f->req.messages = f->messages;
	f->req.n_messages = 1;
	bedrock_clock = fixed_clock;
}

/* The value of header NAME in LIST ("Name: value"); NULL if absent. */
static const char *header_value(const struct curl_slist *list, const char *name)
{
	size_t len = strlen(name);

	for (; list; list = list->next)
		if (strncasecmp(list->data, name, len) == 0 && list->data[len] == ':')
			return list->data[len + 1] == ' ' ? list->data + len + 2
							  : list->data + len + 1;
	return NULL;
}

static size_t header_count(const struct curl_slist *list)
{
	size_t n = 0;

	for (; list; list = list->next)
		n++;
	return n;
}

/* Re-derives the signature of OUT the way AWS does on receipt: the path
 * as sent, the signed headers as sent, the body as sent. */
static void assert_signature_matches(const struct http_request *out, const char *origin,
				     const char *region, const char *token)
{
	struct sigv4_header headers[2];
	struct sigv4_input in;
	struct sigv4_result res;
	const char *path;

	assert_int_equal(strncmp(out->url, origin, strlen(origin)), 0);
	path = out->url + strlen(origin);
	headers[0].name = "Host";
	headers[0].value = header_value(out->headers, "Host");
	headers[1].name = "Content-Type";
	headers[1].value = header_value(out->headers, "Content-Type");
	assert_non_null(headers[0].value);
	assert_non_null(headers[1].value);

	memset(&in, 0, sizeof(in));
	in.method = "POST";
	in.path = path;
	in.headers = headers;
	in.n_headers = 2;
	in.payload = out->body;
	in.payload_len = out->body_len;
	in.region = region;
	in.service = "bedrock";
	in.access_key_id = "AKIDEXAMPLE";
	in.secret_access_key = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
	in.session_token = token;
	in.when = FIXED_TIME;
	in.normalize_path = 1;
	assert_int_equal(sigv4_sign(&in, &res), 0);
	assert_string_equal(header_value(out->headers, "Authorization"), res.authorization);
	assert_string_equal(header_value(out->headers, "X-Amz-Date"), "20150830T123600Z");
	/* The model id's %3A is encoded once more for signing. */
	assert_non_null(strstr(res.canonical_request, "-v1%253A0/converse-stream\n"));
	sigv4_result_release(&res);
}

/* --- build_request ------------------------------------------------- */

static void test_request_url_and_headers(void **state)
{
	struct fixture f;
	struct http_request out;
	const char *auth;

	(void)state;
	fixture_init(&f, "https://" AWS_HOST);
	assert_int_equal(backend_bedrock.build_request(&f.target, &f.req, &out), 0);
	assert_string_equal(out.url, "https://" AWS_HOST "/model/"
				     "eu.anthropic.claude-3-7-sonnet-20250219-v1%3A0"
				     "/converse-stream");
	assert_string_equal(header_value(out.headers, "Host"), AWS_HOST);
	assert_string_equal(header_value(out.headers, "Content-Type"), "application/json");
	assert_string_equal(header_value(out.headers, "Accept"),
			    "application/vnd.amazon.eventstream");
	assert_string_equal(header_value(out.headers, "Expect"), "");
	assert_null(header_value(out.headers, "X-Amz-Security-Token"));
	assert_int_equal(header_count(out.headers), 6);
	auth = header_value(out.headers, "Authorization");
	assert_non_null(auth);
	assert_non_null(strstr(auth, "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/"
				     "20150830/eu-central-1/bedrock/aws4_request, "
				     "SignedHeaders=content-type;host;x-amz-date, "
				     "Signature="));
	assert_int_equal(out.body_len, strlen(out.body));
	assert_signature_matches(&out, "https://" AWS_HOST, "eu-central-1", NULL);
	http_request_release(&out);
}

static void test_request_session_token(void **state)
{
	struct fixture f;
	struct http_request out;

	(void)state;
	fixture_init(&f, "https://" AWS_HOST "/");
	f.creds.aws_session_token = "EXAMPLESESSIONTOKEN";
	assert_int_equal(backend_bedrock.build_request(&f.target, &f.req, &out), 0);
	assert_string_equal(header_value(out.headers, "X-Amz-Security-Token"),
			    "EXAMPLESESSIONTOKEN");
	assert_non_null(strstr(header_value(out.headers, "Authorization"),
			       "SignedHeaders=content-type;host;x-amz-date;x-amz-security-token,"));
	assert_signature_matches(&out, "https://" AWS_HOST, "eu-central-1", "EXAMPLESESSIONTOKEN");
	http_request_release(&out);
}

/* Whatever the endpoint, the scope names the region; the Host header is
 * what curl would send for that URL. */
static void test_request_custom_endpoints(void **state)
{
	static const struct {
		const char *endpoint;
		const char *origin;
		const char *host;
		const char *path_prefix;
	} cases[] = {
		{ "http://127.0.0.1:8080", "http://127.0.0.1:8080", "127.0.0.1:8080", "" },
		{ "http://localhost:80/fake/bedrock//", "http://localhost:80", "localhost",
		  "/fake/bedrock" },
		{ "https://vpce.example.com:443/", "https://vpce.example.com:443",
		  "vpce.example.com", "" },
		{ "https://vpce.example.com:8443", "https://vpce.example.com:8443",
		  "vpce.example.com:8443", "" },
		{ "http://[::1]:9000/", "http://[::1]:9000", "[::1]:9000", "" },
		{ "HTTPS://[::1]", "HTTPS://[::1]", "[::1]", "" },
	};
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct fixture f;
		struct http_request out;
		char url[256];

		fixture_init(&f, cases[i].endpoint);
		assert_int_equal(backend_bedrock.build_request(&f.target, &f.req, &out), 0);
		snprintf(url, sizeof(url), "%s%s/model/%s/converse-stream", cases[i].origin,
			 cases[i].path_prefix, "eu.anthropic.claude-3-7-sonnet-20250219-v1%3A0");
		assert_string_equal(out.url, url);
		assert_string_equal(header_value(out.headers, "Host"), cases[i].host);
		assert_non_null(strstr(header_value(out.headers, "Authorization"),
				       "/eu-central-1/bedrock/aws4_request"));
		assert_signature_matches(&out, cases[i].origin, "eu-central-1", NULL);
		http_request_release(&out);
	}
}

static void test_request_model_arn(void **state)
{
	struct fixture f;
	struct http_request out;

	(void)state;
	fixture_init(&f, "https://" AWS_HOST);
	f.model.id = "arn:aws:bedrock:eu-central-1:123456789012:"
		     "inference-profile/eu.x-v1:0";
	assert_int_equal(backend_bedrock.build_request(&f.target, &f.req, &out), 0);
	assert_string_equal(out.url, "https://" AWS_HOST "/model/"
				     "arn%3Aaws%3Abedrock%3Aeu-central-1%3A123456789012"
				     "%3Ainference-profile%2Feu.x-v1%3A0/converse-stream");
	http_request_release(&out);
}

static void test_body_shape(void **state)
{
	struct fixture f;
	struct http_request out;
	json_t *body;
	char *dump;

	(void)state;
	fixture_init(&f, "https://" AWS_HOST);
	f.messages[0] = (struct llm_message){ "system", "Be terse." };
	f.messages[1] = (struct llm_message){ "user", "Hi" };
	f.messages[2] = (struct llm_message){ "user", "there" };
	f.messages[3] = (struct llm_message){ "assistant", "Hello." };
	f.messages[4] = (struct llm_message){ "system", "No emoji." };
	f.messages[5] = (struct llm_message){ "user", "\"quoted\" \xc3\xa9" };
	f.req.n_messages = 6;
	f.req.has_temperature = 1;
	f.req.temperature = 0.7;
	f.req.max_tokens = 500;
	f.stop[0] = "\n\n";
	f.stop[1] = "END";
	f.req.stop = f.stop;
	f.req.n_stop = 2;

	assert_int_equal(backend_bedrock.build_request(&f.target, &f.req, &out), 0);
	assert_string_equal(
		out.body,
		"{\"messages\":["
		"{\"role\":\"user\",\"content\":[{\"text\":\"Hi\"},{\"text\":\"there\"}]},"
		"{\"role\":\"assistant\",\"content\":[{\"text\":\"Hello.\"}]},"
		"{\"role\":\"user\",\"content\":[{\"text\":\"\\\"quoted\\\" \xc3\xa9\"}]}],"
		"\"system\":[{\"text\":\"Be terse.\"},{\"text\":\"No emoji.\"}],"
		"\"inferenceConfig\":{\"maxTokens\":500,\"temperature\":0.7,"
		"\"stopSequences\":[\"\\n\\n\",\"END\"]}}");
	body = json_loadb(out.body, out.body_len, 0, NULL);
	assert_non_null(body);
	dump = json_dumps(json_object_get(body, "inferenceConfig"), JSON_COMPACT);
	assert_non_null(dump);
	free(dump);
	json_decref(body);
	http_request_release(&out);

	/* Nothing set: no inferenceConfig, no system. */
	fixture_init(&f, "https://" AWS_HOST);
	assert_int_equal(backend_bedrock.build_request(&f.target, &f.req, &out), 0);
	assert_string_equal(out.body, "{\"messages\":[{\"role\":\"user\","
				      "\"content\":[{\"text\":\"Hello\"}]}]}");
	http_request_release(&out);

	/* The request's max_tokens goes as it is: the deployment's cap is
	 * applied by the engine before a backend sees the request. */
	fixture_init(&f, "https://" AWS_HOST);
	f.model.max_output_tokens = 10;
	f.req.max_tokens = 100;
	assert_int_equal(backend_bedrock.build_request(&f.target, &f.req, &out), 0);
	assert_non_null(strstr(out.body, "\"inferenceConfig\":{\"maxTokens\":100}"));
	http_request_release(&out);
	f.req.max_tokens = 50;
	assert_int_equal(backend_bedrock.build_request(&f.target, &f.req, &out), 0);
	assert_non_null(strstr(out.body, "\"maxTokens\":50"));
	http_request_release(&out);
}

static void assert_build_fails(struct fixture *f, int want)
{
	struct http_request out;

	memset(&out, 0x5a, sizeof(out));
	assert_int_equal(backend_bedrock.build_request(&f->target, &f->req, &out), want);
	/* On failure OUT holds nothing to free. */
	assert_null(out.url);
	assert_null(out.headers);
	assert_null(out.body);
}

static void test_request_refused(void **state)
{
	struct fixture f;

	(void)state;
	fixture_init(&f, "https://" AWS_HOST);
	f.messages[0].role = "tool";
	assert_build_fails(&f, -EINVAL);

	fixture_init(&f, "https://" AWS_HOST);
	f.messages[0].role = "system"; /* no turn to answer */
	assert_build_fails(&f, -EINVAL);

	fixture_init(&f, "https://" AWS_HOST);
	f.messages[0].content = "bad \xff utf-8";
	assert_build_fails(&f, -EINVAL);

	fixture_init(&f, "https://" AWS_HOST);
	f.messages[0].content = "surrogate \xed\xa0\x80";
	assert_build_fails(&f, -EINVAL);

	fixture_init(&f, "https://" AWS_HOST);
	f.messages[0].content = "overlong \xc0\xaf";
	assert_build_fails(&f, -EINVAL);

	fixture_init(&f, "https://" AWS_HOST);
	f.stop[0] = "cut \xe2\x82";
	f.req.stop = f.stop;
	f.req.n_stop = 1;
	assert_build_fails(&f, -EINVAL);

	fixture_init(&f, "https://" AWS_HOST);
	f.creds.aws_secret_access_key = NULL;
	assert_build_fails(&f, -EINVAL);

	fixture_init(&f, "ftp://" AWS_HOST);
	assert_build_fails(&f, -EINVAL);

	fixture_init(&f, "https://user:pw@" AWS_HOST);
	assert_build_fails(&f, -EINVAL);

	fixture_init(&f, "https://" AWS_HOST "/?x=1");
	assert_build_fails(&f, -EINVAL);
}

/* jansson allocations left before the next one fails. */
static size_t json_allocs_left;

static void *failing_json_malloc(size_t size)
{
	if (json_allocs_left == 0)
		return NULL;
	json_allocs_left--;
	return malloc(size);
}

/* Every JSON allocation of the request failing in turn gives -ENOMEM,
 * never a false -EINVAL and never a leak (run under ASan). */
static void test_request_json_allocation_failure(void **state)
{
	struct fixture f;
	struct http_request out;
	size_t n;
	int ret = -ENOMEM;

	(void)state;
	fixture_init(&f, "https://" AWS_HOST);
	f.messages[0] = (struct llm_message){ "system", "Be terse." };
	f.messages[1] = (struct llm_message){ "user", "Hi" };
	f.messages[2] = (struct llm_message){ "user", "there" };
	f.req.n_messages = 3;
	f.req.has_temperature = 1;
	f.req.temperature = 0.2;
	f.req.max_tokens = 10;
	f.stop[0] = "END";
	f.req.stop = f.stop;
	f.req.n_stop = 1;
	for (n = 0; n < 1000 && ret == -ENOMEM; n++) {
		json_allocs_left = n;
		json_set_alloc_funcs(failing_json_malloc, free);
		ret = backend_bedrock.build_request(&f.target, &f.req, &out);
		json_set_alloc_funcs(malloc, free);
		if (ret == -ENOMEM)
			assert_null(out.url);
	}
	assert_int_equal(ret, 0);
	assert_true(n > 5);
	http_request_release(&out);
}

/* --- frames -------------------------------------------------------- */

struct stream {
	unsigned char bytes[8192];
	size_t len;
};

static void put_be32(unsigned char *p, uint32_t v)
{
	p[0] = (unsigned char)(v >> 24);
	p[1] = (unsigned char)(v >> 16);
	p[2] = (unsigned char)(v >> 8);
	p[3] = (unsigned char)v;
}

static size_t put_string_header(unsigned char *p, const char *name, const char *value)
{
	size_t name_len = strlen(name), value_len = strlen(value);

	p[0] = (unsigned char)name_len;
	memcpy(p + 1, name, name_len);
	p[1 + name_len] = 7; /* string */
	p[2 + name_len] = (unsigned char)(value_len >> 8);
	p[3 + name_len] = (unsigned char)value_len;
	memcpy(p + 4 + name_len, value, value_len);
	return 4 + name_len + value_len;
}

/* Appends one frame: ":message-type" KIND, plus ":event-type" or
 * ":exception-type" TYPE, and a JSON payload. */
static void stream_add(struct stream *s, const char *kind, const char *type, const char *payload)
{
	unsigned char *frame = s->bytes + s->len;
	size_t headers_len = 0, payload_len = strlen(payload), total;

	headers_len += put_string_header(frame + 12 + headers_len, ":message-type", kind);
	if (type)
		headers_len += put_string_header(
			frame + 12 + headers_len,
			strcmp(kind, "exception") == 0 ? ":exception-type" : ":event-type", type);
	headers_len +=
		put_string_header(frame + 12 + headers_len, ":content-type", "application/json");
	total = 16 + headers_len + payload_len;
	assert_true(s->len + total <= sizeof(s->bytes));
	put_be32(frame, (uint32_t)total);
	put_be32(frame + 4, (uint32_t)headers_len);
	put_be32(frame + 8, eventstream_crc32(0, frame, 8));
	memcpy(frame + 12 + headers_len, payload, payload_len);
	put_be32(frame + total - 4, eventstream_crc32(0, frame, total - 4));
	s->len += total;
}

static void stream_add_event(struct stream *s, const char *type, const char *payload)
{
	stream_add(s, "event", type, payload);
}

/* A complete answer, with the padding field real streams carry. */
static void build_answer(struct stream *s, const char *stop_reason)
{
	char stop[128];

	s->len = 0;
	stream_add_event(s, "messageStart", "{\"role\":\"assistant\",\"p\":\"abc\"}");
	stream_add_event(
		s, "contentBlockDelta",
		"{\"contentBlockIndex\":0,\"delta\":{\"text\":\"Hel\"},\"p\":\"abcdefgh\"}");
	stream_add_event(s, "contentBlockDelta",
			 "{\"contentBlockIndex\":0,\"delta\":{\"text\":\"lo, w\\u00f6r\"}}");
	stream_add_event(s, "contentBlockDelta",
			 "{\"contentBlockIndex\":0,\"delta\":{\"text\":\"ld\\n\"}}");
	stream_add_event(s, "contentBlockStop", "{\"contentBlockIndex\":0}");
	snprintf(stop, sizeof(stop), "{\"stopReason\":\"%s\"}", stop_reason);
	stream_add_event(s, "messageStop", stop);
	stream_add_event(s, "metadata",
			 "{\"usage\":{\"inputTokens\":12,\"outputTokens\":4,\"totalTokens\":16},"
			 "\"metrics\":{\"latencyMs\":412}}");
}

#define EXPECTED_TEXT "Hello, w\xc3\xb6rld\n"

/* --- what the parser reports --------------------------------------- */

struct answer {
	char text[1024];
	size_t text_len;
	long input_tokens;
	long output_tokens;
	int usage_calls;
	char finish_reason[64];
	int refuse_text; /* text() result to return, 0 to accept */
};

static int on_text(void *ctx, const char *bytes, size_t len)
{
	struct answer *a = ctx;

	if (a->refuse_text)
		return a->refuse_text;
	assert_true(a->text_len + len < sizeof(a->text));
	memcpy(a->text + a->text_len, bytes, len);
	a->text_len += len;
	a->text[a->text_len] = '\0';
	return 0;
}

static void on_usage(void *ctx, long input_tokens, long output_tokens)
{
	struct answer *a = ctx;

	a->input_tokens = input_tokens;
	a->output_tokens = output_tokens;
	a->usage_calls++;
}

static void on_finish_reason(void *ctx, enum finish_reason reason, const char *word)
{
	struct answer *a = ctx;

	snprintf(a->finish_reason, sizeof(a->finish_reason), "%s",
		 finish_reason_word(reason) ? finish_reason_word(reason) : word);
}

static const struct answer_events events = {
	.text = on_text,
	.usage = on_usage,
	.finish_reason = on_finish_reason,
	.request_id = NULL,
};

/* Feeds S split at SPLIT; returns what parser_finish returned. */
static int parse_split(const struct stream *s, size_t split, struct answer *a,
		       struct attempt_error *err)
{
	struct stream_parser *p = backend_bedrock.parser_new(&events, a);
	const char *bytes = (const char *)s->bytes;
	int ret;

	assert_non_null(p);
	ret = backend_bedrock.parser_feed(p, bytes, split, err);
	if (ret == 0)
		ret = backend_bedrock.parser_feed(p, bytes + split, s->len - split, err);
	if (ret == 0)
		ret = backend_bedrock.parser_finish(p, err);
	backend_bedrock.parser_free(p);
	return ret;
}

static void test_answer_every_split(void **state)
{
	struct stream s;
	size_t split;

	(void)state;
	build_answer(&s, "end_turn");
	for (split = 0; split <= s.len; split++) {
		struct answer a = { .text_len = 0 };
		struct attempt_error err;

		assert_int_equal(parse_split(&s, split, &a, &err), 0);
		assert_string_equal(a.text, EXPECTED_TEXT);
		assert_int_equal(a.input_tokens, 12);
		assert_int_equal(a.output_tokens, 4);
		assert_int_equal(a.usage_calls, 1);
		assert_string_equal(a.finish_reason, "stop");
	}
}

static void test_answer_byte_by_byte(void **state)
{
	struct answer a = { .text_len = 0 };
	struct attempt_error err;
	struct stream_parser *p = backend_bedrock.parser_new(&events, &a);
	struct stream s;
	size_t i;

	(void)state;
	build_answer(&s, "end_turn");
	for (i = 0; i < s.len; i++)
		assert_int_equal(backend_bedrock.parser_feed(p, (const char *)s.bytes + i, 1, &err),
				 0);
	assert_int_equal(backend_bedrock.parser_finish(p, &err), 0);
	backend_bedrock.parser_free(p);
	assert_string_equal(a.text, EXPECTED_TEXT);
}

static void test_finish_reasons(void **state)
{
	static const char *const mapping[][2] = {
		{ "end_turn", "stop" },
		{ "stop_sequence", "stop" },
		{ "max_tokens", "length" },
		/* a guardrail or filter cuts the answer: the engine fails it */
		{ "guardrail_intervened", "content_filter" },
		{ "content_filtered", "content_filter" },
	};
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(mapping) / sizeof(mapping[0]); i++) {
		struct answer a = { .text_len = 0 };
		struct attempt_error err;
		struct stream s;

		build_answer(&s, mapping[i][0]);
		assert_int_equal(parse_split(&s, 0, &a, &err), 0);
		assert_string_equal(a.finish_reason, mapping[i][1]);
	}
}

static void assert_cut(const struct stream *s, size_t len)
{
	struct answer a = { .text_len = 0 };
	struct attempt_error err;
	struct stream cut = *s;

	cut.len = len;
	memset(&err, 0, sizeof(err));
	assert_int_equal(parse_split(&cut, len / 2, &a, &err), -EIO);
	assert_true(outcome_retryable(err.outcome));
	assert_string_equal(ATTEMPT_ERROR_WORD(&err), "stream_cut");
}

static void test_cut_stream(void **state)
{
	struct stream s, no_metadata;
	size_t len;

	(void)state;
	build_answer(&s, "end_turn");
	/* Every prefix of the answer is incomplete. */
	for (len = 0; len < s.len; len++)
		assert_cut(&s, len);

	/* metadata before messageStop does not complete an answer */
	no_metadata.len = 0;
	stream_add_event(&no_metadata, "contentBlockDelta", "{\"delta\":{\"text\":\"x\"}}");
	stream_add_event(&no_metadata, "metadata",
			 "{\"usage\":{\"inputTokens\":1,\"outputTokens\":1}}");
	stream_add_event(&no_metadata, "messageStop", "{\"stopReason\":\"end_turn\"}");
	assert_cut(&no_metadata, no_metadata.len);
}

static void assert_exception(const char *type, int retryable)
{
	struct answer a = { .text_len = 0 };
	struct attempt_error err;
	struct stream_parser *p = backend_bedrock.parser_new(&events, &a);
	struct stream s;
	char expected[256];

	s.len = 0;
	stream_add_event(&s, "contentBlockDelta", "{\"delta\":{\"text\":\"par\"}}");
	stream_add(&s, "exception", type, "{\"message\":\"Too many\\ntokens\"}");
	stream_add_event(&s, "contentBlockDelta", "{\"delta\":{\"text\":\"tial\"}}");
	assert_int_equal(backend_bedrock.parser_feed(p, (const char *)s.bytes, s.len, &err), -EIO);
	assert_int_equal(outcome_retryable(err.outcome), retryable);
	assert_string_equal(ATTEMPT_ERROR_WORD(&err), "stream_error");
	snprintf(expected, sizeof(expected), "Bedrock failed while streaming (%s): Too many tokens",
		 type);
	assert_string_equal(err.message, expected);
	assert_string_equal(a.text, "par"); /* nothing after the exception */

	/* The failure sticks, through feed and finish. */
	memset(&err, 0, sizeof(err));
	assert_int_equal(backend_bedrock.parser_feed(p, "x", 1, &err), -EIO);
	assert_string_equal(err.message, expected);
	memset(&err, 0, sizeof(err));
	assert_int_equal(backend_bedrock.parser_finish(p, &err), -EIO);
	assert_string_equal(ATTEMPT_ERROR_WORD(&err), "stream_error");
	backend_bedrock.parser_free(p);
}

static void test_exception_frames(void **state)
{
	(void)state;
	assert_exception("throttlingException", 1);
	assert_exception("serviceUnavailableException", 1);
	assert_exception("internalServerException", 1);
	assert_exception("modelStreamErrorException", 1);
	assert_exception("validationException", 0);
}

static void test_error_frame(void **state)
{
	struct answer a = { .text_len = 0 };
	struct attempt_error err;
	struct stream_parser *p = backend_bedrock.parser_new(&events, &a);
	unsigned char frame[256];
	size_t headers_len = 0, total;

	(void)state;
	headers_len += put_string_header(frame + 12, ":message-type", "error");
	headers_len +=
		put_string_header(frame + 12 + headers_len, ":error-code", "InternalFailure");
	headers_len +=
		put_string_header(frame + 12 + headers_len, ":error-message", "Something broke");
	total = 16 + headers_len;
	put_be32(frame, (uint32_t)total);
	put_be32(frame + 4, (uint32_t)headers_len);
	put_be32(frame + 8, eventstream_crc32(0, frame, 8));
	put_be32(frame + total - 4, eventstream_crc32(0, frame, total - 4));

	assert_int_equal(backend_bedrock.parser_feed(p, (const char *)frame, total, &err), -EIO);
	assert_true(outcome_retryable(err.outcome));
	assert_string_equal(ATTEMPT_ERROR_WORD(&err), "stream_error");
	assert_string_equal(err.message, "Bedrock failed while streaming "
					 "(InternalFailure): Something broke");
	backend_bedrock.parser_free(p);
}

static void test_corrupt_frame(void **state)
{
	struct stream s;
	size_t second_frame, i;

	(void)state;
	build_answer(&s, "end_turn");
	second_frame = (size_t)s.bytes[0] << 24 | (size_t)s.bytes[1] << 16 |
		       (size_t)s.bytes[2] << 8 | s.bytes[3];
	/* Flip one byte of the first delta's payload ("Hel" -> "Hdl"). */
	for (i = second_frame; i < s.len; i++)
		if (memcmp(s.bytes + i, "Hel", 3) == 0)
			break;
	assert_true(i < s.len);
	s.bytes[i + 1] ^= 0x01;

	for (i = 0; i <= s.len; i++) {
		struct answer a = { .text_len = 0 };
		struct attempt_error err;

		memset(&err, 0, sizeof(err));
		assert_int_equal(parse_split(&s, i, &a, &err), -EIO);
		assert_true(outcome_retryable(err.outcome));
		assert_string_equal(ATTEMPT_ERROR_WORD(&err), "malformed");
		assert_string_equal(a.text, ""); /* corrupt text never shown */
	}
}

static void test_payload_not_json(void **state)
{
	struct answer a = { .text_len = 0 };
	struct attempt_error err;
	struct stream s;

	(void)state;
	s.len = 0;
	stream_add_event(&s, "contentBlockDelta", "{\"delta\":");
	assert_int_equal(parse_split(&s, 3, &a, &err), -EIO);
	assert_string_equal(ATTEMPT_ERROR_WORD(&err), "malformed");
	assert_true(outcome_retryable(err.outcome));
}

static void test_text_refused(void **state)
{
	struct answer a = { .refuse_text = -EFBIG };
	struct attempt_error err;
	struct stream s;

	(void)state;
	build_answer(&s, "end_turn");
	assert_int_equal(parse_split(&s, 10, &a, &err), -EIO);
	assert_false(outcome_retryable(err.outcome));
	assert_string_equal(ATTEMPT_ERROR_WORD(&err), "too_large");
}

/* --- classify_error ------------------------------------------------ */

static void classify(long status, const char *error_type, const char *body,
		     struct attempt_error *err)
{
	struct http_response_head head;

	memset(&head, 0, sizeof(head));
	head.status = status;
	snprintf(head.amzn_error_type, sizeof(head.amzn_error_type), "%s", error_type);
	memset(err, 0, sizeof(*err));
	backend_bedrock.classify_error(&head, body, body ? strlen(body) : 0, err);
}

static void test_classify_error(void **state)
{
	struct attempt_error err;

	(void)state;
	classify(429,
		 "ThrottlingException:http://internal.amazon.com/coral/"
		 "com.amazon.bedrock/",
		 "{\"message\":\"Too many tokens, please wait before trying again.\"}", &err);
	assert_true(outcome_retryable(err.outcome));
	assert_string_equal(ATTEMPT_ERROR_WORD(&err), "http_429");
	assert_string_equal(err.message,
			    "Bedrock rejected the request "
			    "(ThrottlingException): Too many tokens, please wait before "
			    "trying again.");
	assert_true(err.retry_after_s < 0);

	classify(400,
		 "ValidationException:http://internal.amazon.com/coral/"
		 "com.amazon.bedrock/",
		 "{\"message\":\"The provided model identifier is invalid.\"}", &err);
	assert_false(outcome_retryable(err.outcome));
	assert_string_equal(ATTEMPT_ERROR_WORD(&err), "http_400");
	assert_string_equal(err.message,
			    "Bedrock rejected the request "
			    "(ValidationException): The provided model identifier is invalid.");

	/* "Message", and the code from the body's __type */
	classify(403, "",
		 "{\"__type\":\"com.amazon.coral.service#"
		 "UnrecognizedClientException\",\"Message\":\"The security token "
		 "included in the request is invalid.\"}",
		 &err);
	assert_false(outcome_retryable(err.outcome));
	assert_string_equal(err.message,
			    "Bedrock rejected the request "
			    "(UnrecognizedClientException): The security token included in "
			    "the request is invalid.");

	classify(403, "InvalidSignatureException", "{\"message\":\"x\"}", &err);
	assert_false(outcome_retryable(err.outcome));
	classify(403, "AccessDeniedException", "{\"message\":\"x\"}", &err);
	assert_false(outcome_retryable(err.outcome));
	classify(404, "ResourceNotFoundException", "{}", &err);
	assert_false(outcome_retryable(err.outcome));
	assert_string_equal(err.message, "Bedrock rejected the request "
					 "(ResourceNotFoundException) with HTTP 404");
	classify(429, "ModelNotReadyException", "{\"message\":\"warming\"}", &err);
	assert_true(outcome_retryable(err.outcome));
	classify(500, "InternalServerException", "{\"message\":\"x\"}", &err);
	assert_true(outcome_retryable(err.outcome));
	classify(503, "ServiceUnavailableException", "{\"message\":\"x\"}", &err);
	assert_true(outcome_retryable(err.outcome));
	/* An unknown name falls back on the status. */
	classify(424, "ModelErrorException", "{\"message\":\"x\"}", &err);
	assert_false(outcome_retryable(err.outcome));
	classify(408, "ModelTimeoutException", "{\"message\":\"slow\"}", &err);
	assert_true(outcome_retryable(err.outcome));
	assert_string_equal(ATTEMPT_ERROR_WORD(&err), "http_408");

	/* Not JSON at all: a proxy's page, control characters flattened. */
	classify(502, "", "<html>\r\nBad Gateway</html>", &err);
	assert_true(outcome_retryable(err.outcome));
	assert_string_equal(ATTEMPT_ERROR_WORD(&err), "http_502");
	assert_string_equal(err.message, "Bedrock rejected the request "
					 "(HTTP 502): <html>  Bad Gateway</html>");
	classify(401, "", NULL, &err);
	assert_false(outcome_retryable(err.outcome));
	assert_string_equal(err.message, "Bedrock rejected the request "
					 "(HTTP 401) with HTTP 401");
}

/* Found by fuzzing: an error name with a line end, from the
 * x-amzn-ErrorType header or the body's __type, split .error's first
 * line. */
static void test_classify_error_name_line_end(void **state)
{
	struct attempt_error err;

	(void)state;
	classify(582, "\rt", "", &err);
	assert_string_equal(err.message, "Bedrock rejected the request ( t) with HTTP 582");
	classify(400, "", "{\"__type\":\"a\\nb\",\"message\":\"x\"}", &err);
	assert_string_equal(err.message, "Bedrock rejected the request (a b): x");
}

static void test_classify_retry_after(void **state)
{
	struct http_response_head head;
	struct attempt_error err;

	(void)state;
	memset(&head, 0, sizeof(head));
	head.status = 429;
	snprintf(head.retry_after, sizeof(head.retry_after), "3");
	backend_bedrock.classify_error(&head, "", 0, &err);
	assert_true(err.retry_after_s > 2.99 && err.retry_after_s < 3.01);
	snprintf(head.retry_after_ms, sizeof(head.retry_after_ms), "1500");
	backend_bedrock.classify_error(&head, "", 0, &err);
	assert_true(err.retry_after_s > 1.49 && err.retry_after_s < 1.51);

	/* Found by fuzzing: strtod took these as an endless wait. */
	head.retry_after_ms[0] = '\0';
	snprintf(head.retry_after, sizeof(head.retry_after), "1e500");
	backend_bedrock.classify_error(&head, "", 0, &err);
	assert_true(err.retry_after_s < 0);
	snprintf(head.retry_after, sizeof(head.retry_after), "inf");
	backend_bedrock.classify_error(&head, "", 0, &err);
	assert_true(err.retry_after_s < 0);
	snprintf(head.retry_after_ms, sizeof(head.retry_after_ms), "infinity");
	backend_bedrock.classify_error(&head, "", 0, &err);
	assert_true(err.retry_after_s < 0);
}

int main(void)
{
	static const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_request_url_and_headers),
		cmocka_unit_test(test_request_session_token),
		cmocka_unit_test(test_request_custom_endpoints),
		cmocka_unit_test(test_request_model_arn),
		cmocka_unit_test(test_body_shape),
		cmocka_unit_test(test_request_refused),
		cmocka_unit_test(test_request_json_allocation_failure),
		cmocka_unit_test(test_answer_every_split),
		cmocka_unit_test(test_answer_byte_by_byte),
		cmocka_unit_test(test_finish_reasons),
		cmocka_unit_test(test_cut_stream),
		cmocka_unit_test(test_exception_frames),
		cmocka_unit_test(test_error_frame),
		cmocka_unit_test(test_corrupt_frame),
		cmocka_unit_test(test_payload_not_json),
		cmocka_unit_test(test_text_refused),
		cmocka_unit_test(test_classify_error),
		cmocka_unit_test(test_classify_error_name_line_end),
		cmocka_unit_test(test_classify_retry_after),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
