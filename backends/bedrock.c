/* AWS Bedrock Runtime, ConverseStream: a SigV4-signed JSON request, an
 * application/vnd.amazon.eventstream answer, rest-json errors. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <jansson.h>

#include "backends/backend.h"
#include "backends/eventstream.h"
#include "backends/retry.h"
#include "backends/sigv4.h"
#include "backends/utf8.h"
#include "backends/wire_util.h"

/* Credential scope service: Bedrock signs as "bedrock", although its
 * hosts are named bedrock-runtime. */
#define BEDROCK_SIGNING_SERVICE "bedrock"
/* One frame carries one small JSON event; a megabyte is generous. */
#define BEDROCK_MAX_FRAME (1024 * 1024)
/* The provider's own sentence in .error; longer ones are cut. */
#define BEDROCK_MAX_PROVIDER_MESSAGE 400

/* Signing time source; tests replace it to reproduce a signature. */
extern time_t (*bedrock_clock)(void);

static time_t system_clock(void)
{
	return time(NULL);
}

time_t (*bedrock_clock)(void) = system_clock;

/* --- endpoint ------------------------------------------------------ */

/* The pieces of the endpoint URL the request needs. Heap strings, freed
 * by endpoint_release(). */
struct endpoint {
	char *origin;	   /* "https://host[:port]" exactly as configured */
	char *host_header; /* "host" or "host:port" (non-default port only) */
	char *base_path;   /* configured path without trailing '/', often "" */
};

static void endpoint_release(struct endpoint *e)
{
	free(e->base_path);
	free(e->host_header);
	free(e->origin);
	memset(e, 0, sizeof(*e));
}

/* Splits "scheme://host[:port][/path]". The Host header must be what
 * the server sees, so the port appears only when it is not the scheme's
 * default, as curl itself would send it. Userinfo, queries and fragments
 * have no place in a base URL and are refused. */
static int endpoint_parse(const char *url, struct endpoint *out)
{
	const char *authority, *authority_end, *host_end, *port = NULL;
	const char *default_port;
	size_t host_len, path_len;
	int ret = -EINVAL;

	memset(out, 0, sizeof(*out));
	if (strncasecmp(url, "https://", 8) == 0) {
		authority = url + 8;
		default_port = "443";
	} else if (strncasecmp(url, "http://", 7) == 0) {
		authority = url + 7;
		default_port = "80";
	} else {
		goto out;
	}
	authority_end = authority + strcspn(authority, "/?#");
	if (authority_end == authority || strpbrk(authority_end, "?#") ||
	    memchr(authority, '@', (size_t)(authority_end - authority)))
		goto out;

	if (*authority == '[') {
		host_end = memchr(authority, ']', (size_t)(authority_end - authority));
		if (!host_end)
			goto out;
		host_end++;
	} else {
		host_end = memchr(authority, ':', (size_t)(authority_end - authority));
		if (!host_end)
			host_end = authority_end;
	}
	if (host_end < authority_end) {
		if (*host_end != ':')
			goto out;
		port = host_end + 1;
	}
	host_len = (size_t)(host_end - authority);

	ret = -ENOMEM;
	out->origin = strndup(url, (size_t)(authority_end - url));
	if (port && port < authority_end &&
	    ((size_t)(authority_end - port) != strlen(default_port) ||
	     strncmp(port, default_port, strlen(default_port)) != 0))
		out->host_header = strndup(authority, (size_t)(authority_end - authority));
	else
		out->host_header = strndup(authority, host_len);
	path_len = (size_t)endpoint_trimmed_length(authority_end);
	out->base_path = strndup(authority_end, path_len);
	if (out->origin && out->host_header && out->base_path)
		ret = 0;
out:
	if (ret < 0)
		endpoint_release(out);
	return ret;
}

/* --- request body -------------------------------------------------- */

/* {"text": TEXT}. Returns 0 and a new reference in *OUT, -EINVAL if TEXT
 * is not UTF-8, or -ENOMEM. */
static int text_block(const char *text, json_t **out)
{
	json_t *block;

	*out = NULL;
	/* Checked here so that jansson failing afterwards can only mean
	 * memory ran out, which is retried, unlike a bad prompt. */
	if (!text || !utf8_is_valid(text))
		return -EINVAL;
	block = json_object();
	/* The _new setter takes over its value even when it fails. */
	if (json_object_set_new(block, "text", json_string(text)) < 0) {
		json_decref(block);
		return -ENOMEM;
	}
	*out = block;
	return 0;
}

/* Appends MSG to the Converse "messages" list. Bedrock wants user and
 * assistant turns to alternate, so a turn repeating the previous role
 * joins it as one more content block. */
static int append_turn(json_t *messages, const struct llm_message *msg)
{
	json_t *last = json_array_get(messages, json_array_size(messages) - 1);
	json_t *block, *turn = NULL, *content = NULL;
	int ret;

	ret = text_block(msg->content, &block);
	if (ret < 0)
		return ret;
	ret = -ENOMEM;
	if (last && strcmp(json_string_value(json_object_get(last, "role")), msg->role) == 0) {
		content = json_object_get(last, "content");
		ret = json_array_append(content, block) < 0 ? -ENOMEM : 0;
		json_decref(block);
		return ret;
	}

	/* Non-stealing setters keep every reference ours until "out". */
	content = json_array();
	turn = json_object();
	if (json_array_append(content, block) < 0 ||
	    json_object_set_new(turn, "role", json_string(msg->role)) < 0 ||
	    json_object_set(turn, "content", content) < 0 || json_array_append(messages, turn) < 0)
		goto out;
	ret = 0;
out:
	json_decref(turn);
	json_decref(content);
	json_decref(block);
	return ret;
}

static int add_inference_config(json_t *root, const struct llm_request *req)
{
	json_t *config = json_object();
	long max_tokens = req->max_tokens; /* the deployment's cap is applied already */
	size_t i;
	int ret = -ENOMEM;

	if (!config)
		goto out;
	if (max_tokens > 0 &&
	    json_object_set_new(config, "maxTokens", json_integer(max_tokens)) < 0)
		goto out;
	if (req->has_temperature &&
	    json_object_set_new(config, "temperature", json_real(req->temperature)) < 0)
		goto out;
	if (req->n_stop > 0) {
		json_t *stops = json_array();

		if (json_object_set_new(config, "stopSequences", stops) < 0)
			goto out;
		for (i = 0; i < req->n_stop; i++) {
			if (!req->stop[i] || !utf8_is_valid(req->stop[i])) {
				ret = -EINVAL;
				goto out;
			}
			if (json_array_append_new(stops, json_string(req->stop[i])) < 0)
				goto out;
		}
	}
	ret = 0;
	if (json_object_size(config) > 0)
		ret = json_object_set(root, "inferenceConfig", config) < 0 ? -ENOMEM : 0;
out:
	json_decref(config);
	return ret;
}

/* The ConverseStream body (reference §5.1): messages, system, and
 * inferenceConfig when anything in it is set. Returns 0 and a string in
 * *BODY (caller frees) of *BODY_LEN bytes, -EINVAL for an unknown role,
 * invalid UTF-8 or no user/assistant turn, or -ENOMEM. */
static int build_body(const struct llm_request *req, char **body, size_t *body_len)
{
	json_t *root = json_object();
	json_t *messages = json_array();
	json_t *system = json_array();
	size_t i;
	int ret = -ENOMEM;

	*body = NULL;
	if (!root || !messages || !system)
		goto out;
	for (i = 0; i < req->n_messages; i++) {
		const struct llm_message *msg = &req->messages[i];

		if (!msg->role || !msg->content) {
			ret = -EINVAL;
			goto out;
		}
		if (strcmp(msg->role, "system") == 0) {
			json_t *block;

			ret = text_block(msg->content, &block);
			if (ret < 0)
				goto out;
			ret = -ENOMEM;
			if (json_array_append_new(system, block) < 0)
				goto out;
		} else if (strcmp(msg->role, "user") == 0 || strcmp(msg->role, "assistant") == 0) {
			ret = append_turn(messages, msg);
			if (ret < 0)
				goto out;
		} else {
			ret = -EINVAL;
			goto out;
		}
	}
	if (json_array_size(messages) == 0) {
		ret = -EINVAL;
		goto out;
	}
	ret = -ENOMEM;
	if (json_object_set(root, "messages", messages) < 0)
		goto out;
	if (json_array_size(system) > 0 && json_object_set(root, "system", system) < 0)
		goto out;
	ret = add_inference_config(root, req);
	if (ret < 0)
		goto out;
	ret = json_body_dump(root, body, body_len);
out:
	json_decref(system);
	json_decref(messages);
	json_decref(root);
	return ret;
}

/* --- request ------------------------------------------------------- */

static int has_text(const char *s)
{
	return s && *s;
}

/* The headers sent, in the order sent. The signed ones (Host,
 * Content-Type and what sigv4 adds) are set explicitly, so libcurl sends
 * exactly the values that were signed; "Expect:" stops libcurl from
 * adding an unsigned Expect: 100-continue to large bodies. */
static int build_headers(const struct endpoint *ep, const char *session_token,
			 const struct sigv4_result *sig, struct curl_slist **out)
{
	struct curl_slist *list = NULL;
	int ret;

	ret = http_header_append(&list, "Host: ", ep->host_header);
	if (ret == 0)
		ret = http_header_append(&list, "Content-Type: ", "application/json");
	if (ret == 0)
		ret = http_header_append(&list, "Accept: ", "application/vnd.amazon.eventstream");
	if (ret == 0)
		ret = http_header_append(&list, "X-Amz-Date: ", sig->amz_date);
	if (ret == 0 && session_token)
		ret = http_header_append(&list, "X-Amz-Security-Token: ", session_token);
	if (ret == 0)
		ret = http_header_append(&list, "Authorization: ", sig->authorization);
	if (ret == 0)
		ret = http_header_append(&list, "Expect:", "");
	if (ret < 0) {
		curl_slist_free_all(list);
		list = NULL;
	}
	*out = list;
	return ret;
}

static int bedrock_build_request(const struct backend_target *target, const struct llm_request *req,
				 struct http_request *out)
{
	const struct model *model = target->model;
	const struct credentials *creds = target->credentials;
	const char *session_token = NULL;
	struct endpoint ep;
	struct sigv4_header signed_headers[2];
	struct sigv4_input sign_in;
	struct sigv4_result sig;
	char *encoded_id = NULL, *path = NULL, *url = NULL, *body = NULL;
	struct curl_slist *headers = NULL;
	size_t body_len = 0;
	size_t len;
	int ret;

	memset(out, 0, sizeof(*out));
	memset(&sig, 0, sizeof(sig));
	if (!model || !model->region || !has_text(model->id) || !has_text(model->region->name) ||
	    !has_text(model->region->endpoint) || !creds || !has_text(creds->aws_access_key_id) ||
	    !has_text(creds->aws_secret_access_key))
		return -EINVAL;
	if (has_text(creds->aws_session_token))
		session_token = creds->aws_session_token;

	ret = endpoint_parse(model->region->endpoint, &ep);
	if (ret < 0)
		return ret;
	ret = build_body(req, &body, &body_len);
	if (ret < 0)
		goto out_endpoint;

	/* The model id is one path segment: ':' travels as %3A and an ARN's
	 * '/' as %2F. This exact string is both sent and signed. */
	ret = sigv4_uri_encode(model->id, strlen(model->id), 0, &encoded_id);
	if (ret < 0)
		goto out_body;
	ret = -ENOMEM;
	len = strlen(ep.base_path) + strlen(encoded_id) + 64;
	path = malloc(len);
	if (!path)
		goto out_id;
	snprintf(path, len, "%s/model/%s/converse-stream", ep.base_path, encoded_id);
	len = strlen(ep.origin) + strlen(path) + 1;
	url = malloc(len);
	if (!url)
		goto out_path;
	snprintf(url, len, "%s%s", ep.origin, path);

	signed_headers[0].name = "Host";
	signed_headers[0].value = ep.host_header;
	signed_headers[1].name = "Content-Type";
	signed_headers[1].value = "application/json";
	memset(&sign_in, 0, sizeof(sign_in));
	sign_in.method = "POST";
	sign_in.path = path;
	sign_in.headers = signed_headers;
	sign_in.n_headers = 2;
	sign_in.payload = body;
	sign_in.payload_len = body_len;
	sign_in.region = model->region->name;
	sign_in.service = BEDROCK_SIGNING_SERVICE;
	sign_in.access_key_id = creds->aws_access_key_id;
	sign_in.secret_access_key = creds->aws_secret_access_key;
	sign_in.session_token = session_token;
	sign_in.when = bedrock_clock();
	sign_in.normalize_path = 1;
	ret = sigv4_sign(&sign_in, &sig);
	if (ret < 0)
		goto out_url;
	ret = build_headers(&ep, session_token, &sig, &headers);
	if (ret < 0)
		goto out_sig;

	out->url = url;
	out->headers = headers;
	out->body_len = body_len;
	out->body = body;
	url = NULL;
	body = NULL;
out_sig:
	sigv4_result_release(&sig);
out_url:
	free(url);
out_path:
	free(path);
out_id:
	free(encoded_id);
out_body:
	free(body);
out_endpoint:
	endpoint_release(&ep);
	return ret;
}

/* --- error classification ------------------------------------------ */

static int name_in(const char *name, const char *const *list)
{
	size_t i;

	for (i = 0; list[i]; i++)
		if (strcasecmp(name, list[i]) == 0)
			return 1;
	return 0;
}

/* Error names compare without case: the same error arrives as
 * "ThrottlingException" in headers and "throttlingException" in
 * streams. */
static const char *const retryable_errors[] = {
	"ThrottlingException",	  "ServiceUnavailableException", "InternalServerException",
	"ModelNotReadyException", "ModelStreamErrorException",	 NULL,
};

static const char *const final_errors[] = {
	"ValidationException",
	"AccessDeniedException",
	"ResourceNotFoundException",
	"UnrecognizedClientException",
	"InvalidSignatureException",
	"MissingAuthenticationTokenException",
	NULL,
};

/* "Name:namespace-url" or "ns#Name" → "Name". */
static void error_name_copy(char *dst, size_t cap, const char *src)
{
	const char *hash;
	size_t len;

	dst[0] = '\0';
	if (!src)
		return;
	len = strcspn(src, ":");
	hash = memrchr(src, '#', len);
	if (hash) {
		len -= (size_t)(hash + 1 - src);
		src = hash + 1;
	}
	if (len >= cap)
		len = cap - 1;
	memcpy(dst, src, len);
	dst[len] = '\0';
}

/* Copies at most CAP-1 bytes of SRC, control characters turned into
 * spaces so a hostile message cannot forge lines in .error. A cut falls
 * between UTF-8 characters, never inside one. */
static void provider_text_copy(char *dst, size_t cap, const char *src, size_t len)
{
	size_t i;

	len = utf8_prefix_length(src, len, cap - 1);
	for (i = 0; i < len; i++) {
		unsigned char c = (unsigned char)src[i];

		dst[i] = c < 0x20 || c == 0x7f ? ' ' : (char)c;
	}
	dst[len] = '\0';
}

static const char *json_text(json_t *obj, const char *key)
{
	json_t *value = json_object_get(obj, key);

	return json_is_string(value) ? json_string_value(value) : NULL;
}

/* The provider's "message" (or "Message") from a JSON payload; "" when
 * there is none. */
static void provider_message_copy(char *dst, size_t cap, json_t *obj)
{
	const char *message = json_text(obj, "message");

	if (!message)
		message = json_text(obj, "Message");
	dst[0] = '\0';
	if (message)
		provider_text_copy(dst, cap, message, strlen(message));
}

static void bedrock_classify_error(const struct http_response_head *head, const char *body,
				   size_t len, struct attempt_error *err)
{
	char name[128], message[BEDROCK_MAX_PROVIDER_MESSAGE];
	char what[160];
	json_t *json = NULL;
	enum outcome outcome;

	error_name_copy(name, sizeof(name), head->amzn_error_type);
	message[0] = '\0';
	if (body && len > 0)
		json = json_loadb(body, len, 0, NULL);
	if (json_is_object(json)) {
		provider_message_copy(message, sizeof(message), json);
		if (!name[0])
			error_name_copy(name, sizeof(name), json_text(json, "__type"));
		if (!name[0])
			error_name_copy(name, sizeof(name), json_text(json, "code"));
		if (!name[0])
			error_name_copy(name, sizeof(name), json_text(json, "Code"));
	} else if (body && len > 0) {
		/* Front doors and proxies answer in plain text or HTML. */
		provider_text_copy(message, sizeof(message), body, len);
	}
	json_decref(json);

	if (name[0] && name_in(name, retryable_errors))
		outcome = outcome_of_http_status(head->status, 1);
	else if (name[0] && name_in(name, final_errors))
		outcome = outcome_of_http_status(head->status, 0);
	else
		outcome = outcome_of_http_status(head->status, -1);

	if (name[0])
		snprintf(what, sizeof(what), "%s", name);
	else
		snprintf(what, sizeof(what), "HTTP %ld", head->status);
	if (message[0])
		attempt_error_set_http(err, outcome, head->status,
				       "Bedrock rejected the request (%s): %s", what, message);
	else
		attempt_error_set_http(err, outcome, head->status,
				       "Bedrock rejected the request (%s) with HTTP %ld", what,
				       head->status);
	/* The error name comes from a header or the body unfiltered, and
	 * .error's first line must stay one. */
	error_message_flatten(err->message);
	/* The shared parser, not strtod: "inf" or "1e500" would ask for an
	 * endless wait. */
	err->retry_after_s = retry_after_parse(head->retry_after, head->retry_after_ms, time(NULL));
}

/* --- streamed answer ----------------------------------------------- */

struct stream_parser {
	const struct answer_events *ev;
	void *ctx;
	struct eventstream_decoder *decoder;
	int saw_message_stop;
	int complete; /* metadata arrived after messageStop */
	int failed;   /* FAILURE holds why; every later call repeats it */
	struct attempt_error failure;
};

static void parser_fail(struct stream_parser *p, enum outcome outcome, const char *sentence)
{
	/* The first failure is the cause; later ones are consequences. */
	if (p->failed)
		return;
	attempt_error_set(&p->failure, outcome, "%s", sentence);
	p->failure.retry_after_s = -1;
	p->failed = 1;
}

/* Bedrock's stopReason in the words every backend uses. A guardrail or
 * the model's own content filter cuts the answer short. */
static enum finish_reason finish_reason_from_stop(const char *stop_reason, const char **word)
{
	*word = stop_reason;
	if (strcmp(stop_reason, "end_turn") == 0 || strcmp(stop_reason, "stop_sequence") == 0)
		return FINISH_STOP;
	if (strcmp(stop_reason, "max_tokens") == 0)
		return FINISH_LENGTH;
	if (strcmp(stop_reason, "guardrail_intervened") == 0) {
		*word = "a Bedrock guardrail (guardrail_intervened)";
		return FINISH_FILTERED;
	}
	if (strcmp(stop_reason, "content_filtered") == 0) {
		*word = "Bedrock's content filter (content_filtered)";
		return FINISH_FILTERED;
	}
	return FINISH_OTHER;
}

static long json_count(json_t *obj, const char *key)
{
	json_t *value = json_object_get(obj, key);

	return json_is_integer(value) ? (long)json_integer_value(value) : -1;
}

static int on_delta(struct stream_parser *p, json_t *payload)
{
	json_t *text = json_object_get(json_object_get(payload, "delta"), "text");
	int ret;

	/* Tool-use and reasoning deltas carry no answer text. */
	if (!json_is_string(text) || json_string_length(text) == 0)
		return 0;
	ret = p->ev->text(p->ctx, json_string_value(text), json_string_length(text));
	/* The reader refusing text is final: another deployment would
	 * produce an answer just as long. */
	if (ret == -EFBIG || ret == -E2BIG) {
		parser_fail(p, OUTCOME_TOO_LARGE, "The answer exceeds its size limit");
		return -EIO;
	}
	if (ret < 0) {
		parser_fail(p, OUTCOME_LOCAL_ERROR, "Storing the answer failed while it streamed");
		return -EIO;
	}
	return 0;
}

static void on_message_stop(struct stream_parser *p, json_t *payload)
{
	const char *stop_reason = json_text(payload, "stopReason");

	p->saw_message_stop = 1;
	if (stop_reason && p->ev->finish_reason) {
		const char *word;
		enum finish_reason reason = finish_reason_from_stop(stop_reason, &word);

		p->ev->finish_reason(p->ctx, reason, word);
	}
}

static void on_metadata(struct stream_parser *p, json_t *payload)
{
	json_t *usage = json_object_get(payload, "usage");

	if (json_is_object(usage) && p->ev->usage)
		p->ev->usage(p->ctx, json_count(usage, "inputTokens"),
			     json_count(usage, "outputTokens"));
	if (p->saw_message_stop)
		p->complete = 1;
}

static int on_event(struct stream_parser *p, const struct eventstream_message *msg, json_t *payload)
{
	const char *type = msg->event_type ? msg->event_type : "";

	if (strcmp(type, "contentBlockDelta") == 0)
		return on_delta(p, payload);
	if (strcmp(type, "messageStop") == 0)
		on_message_stop(p, payload);
	else if (strcmp(type, "metadata") == 0)
		on_metadata(p, payload);
	/* messageStart, contentBlockStart/Stop and future events: nothing
	 * to report. */
	return 0;
}

/* An exception modeled by the service, sent instead of the next event. */
static int on_exception(struct stream_parser *p, const struct eventstream_message *msg,
			json_t *payload)
{
	/* an empty type would leave .meta's outcome empty */
	const char *type = msg->exception_type && msg->exception_type[0] ? msg->exception_type
									 : "unknownException";
	char name[32], message[BEDROCK_MAX_PROVIDER_MESSAGE];
	char sentence[sizeof(message) + 128];

	provider_text_copy(name, sizeof(name), type, strlen(type));
	provider_message_copy(message, sizeof(message), payload);
	snprintf(sentence, sizeof(sentence), "Bedrock failed while streaming (%.100s): %s", name,
		 message[0] ? message : "no message");
	parser_fail(p,
		    name_in(type, retryable_errors) ? OUTCOME_PROVIDER_ERROR
						    : OUTCOME_PROVIDER_REJECTED,
		    sentence);
	return -EIO;
}

/* An error the service did not model; it comes from the server side, so
 * another attempt may well succeed. */
static int on_error(struct stream_parser *p, const struct eventstream_message *msg)
{
	const char *code = msg->error_code ? msg->error_code : "unknown error";
	const char *text = msg->error_message ? msg->error_message : "";
	char name[64], message[BEDROCK_MAX_PROVIDER_MESSAGE];
	char sentence[sizeof(message) + 128];

	provider_text_copy(name, sizeof(name), code, strlen(code));
	provider_text_copy(message, sizeof(message), text, strlen(text));
	snprintf(sentence, sizeof(sentence), "Bedrock failed while streaming (%s): %s", name,
		 message[0] ? message : "no message");
	parser_fail(p, OUTCOME_PROVIDER_ERROR, sentence);
	return -EIO;
}

static int on_frame(void *ctx, const struct eventstream_message *msg)
{
	struct stream_parser *p = ctx;
	const char *kind = msg->message_type ? msg->message_type : "";
	json_t *payload = NULL;
	int ret = 0;

	if (strcmp(kind, "error") == 0)
		return on_error(p, msg);
	if (strcmp(kind, "event") != 0 && strcmp(kind, "exception") != 0)
		return 0; /* unknown kinds are for future clients */

	payload = json_loadb((const char *)msg->payload, msg->payload_len, 0, NULL);
	/* An exception is reported even when its payload is unreadable. */
	if (strcmp(kind, "exception") == 0) {
		ret = on_exception(p, msg, payload);
		goto out;
	}
	if (!json_is_object(payload)) {
		parser_fail(p, OUTCOME_MALFORMED,
			    "Bedrock sent an event whose payload is not a JSON object");
		ret = -EIO;
		goto out;
	}
	ret = on_event(p, msg, payload);
out:
	json_decref(payload);
	return ret;
}

static struct stream_parser *bedrock_parser_new(const struct answer_events *ev, void *ctx)
{
	struct stream_parser *p = calloc(1, sizeof(*p));

	if (!p)
		return NULL;
	p->ev = ev;
	p->ctx = ctx;
	p->decoder = eventstream_new(BEDROCK_MAX_FRAME, on_frame, p);
	if (!p->decoder) {
		free(p);
		return NULL;
	}
	return p;
}

static int bedrock_parser_feed(struct stream_parser *p, const char *data, size_t len,
			       struct attempt_error *err)
{
	int ret;

	if (!p->failed) {
		ret = eventstream_feed(p->decoder, data, len);
		/* A corrupt frame means nothing after it can be trusted, but
		 * another attempt may well get a clean stream. */
		if (ret == -EBADMSG)
			parser_fail(p, OUTCOME_MALFORMED,
				    "Bedrock sent a corrupt event-stream frame");
		else if (ret == -EMSGSIZE)
			parser_fail(p, OUTCOME_MALFORMED,
				    "Bedrock sent an event-stream frame over the size limit");
		else if (ret == -ENOMEM)
			parser_fail(p, OUTCOME_NO_MEMORY,
				    "Out of memory while reading the Bedrock stream");
		else if (ret < 0)
			parser_fail(p, OUTCOME_MALFORMED, "Reading the Bedrock stream failed");
	}
	if (!p->failed)
		return 0;
	*err = p->failure;
	return -EIO;
}

static int bedrock_parser_finish(struct stream_parser *p, struct attempt_error *err)
{
	if (!p->failed && (!p->complete || eventstream_pending(p->decoder)))
		parser_fail(p, OUTCOME_STREAM_CUT,
			    "The Bedrock stream ended before the answer was complete");
	if (!p->failed)
		return 0;
	*err = p->failure;
	return -EIO;
}

static void bedrock_parser_free(struct stream_parser *p)
{
	if (!p)
		return;
	eventstream_free(p->decoder);
	free(p);
}

const struct backend backend_bedrock = {
	.name = "bedrock",
	.build_request = bedrock_build_request,
	.parser_new = bedrock_parser_new,
	.parser_feed = bedrock_parser_feed,
	.parser_finish = bedrock_parser_finish,
	.parser_free = bedrock_parser_free,
	.classify_error = bedrock_classify_error,
};
