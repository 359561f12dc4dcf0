/* Prompt files into requests (see prompt.h). */
#include "fs/prompt.h"

#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "backends/utf8.h"

/* Bytes reckoned for one message's role and framing (SPEC §6.4). */
#define COST_BYTES_PER_MESSAGE 8
#define MAX_STOP_SEQUENCES 4
/* How much of an unknown key an error message repeats. */
#define KEY_ECHO_BYTES 64

static void err_set(char *err, size_t err_size, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void err_set(char *err, size_t err_size, const char *fmt, ...)
{
	va_list ap;

	if (!err || err_size == 0)
		return;
	va_start(ap, fmt);
	vsnprintf(err, err_size, fmt, ap);
	va_end(ap);
}

static int is_blank(char c)
{
	return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

/* KEY as it may appear in a one-line message: control characters shown
 * as '?', cut at a character boundary. */
static void key_echo(const char *key, char out[KEY_ECHO_BYTES + 1])
{
	size_t len = utf8_prefix_length(key, strlen(key), KEY_ECHO_BYTES);
	size_t i;

	for (i = 0; i < len; i++)
		out[i] = (unsigned char)key[i] < 0x20 ? '?' : key[i];
	out[len] = '\0';
}

static char *bytes_dup(const char *bytes, size_t len)
{
	char *copy;

	copy = malloc(len + 1);
	if (!copy)
		return NULL;
	memcpy(copy, bytes, len);
	copy[len] = '\0';
	return copy;
}

static int role_is_known(const char *role)
{
	return strcmp(role, "system") == 0 || strcmp(role, "user") == 0 ||
	       strcmp(role, "assistant") == 0;
}

static int unknown_keys_check(json_t *object, const char *const *known, size_t n_known,
			      const char *where, char *err, size_t err_size)
{
	char echo[KEY_ECHO_BYTES + 1];
	const char *key;
	json_t *value;
	size_t i;

	json_object_foreach (object, key, value) {
		for (i = 0; i < n_known; i++) {
			if (strcmp(key, known[i]) == 0)
				break;
		}
		if (i < n_known)
			continue;
		key_echo(key, echo);
		if (where)
			err_set(err, err_size, "%s has an unknown key \"%s\"", where, echo);
		else
			err_set(err, err_size,
				"the prompt is a JSON request with an unknown key \"%s\"", echo);
		return -EINVAL;
	}
	return 0;
}

static int message_parse(json_t *item, size_t index, struct llm_message *out, char *err,
			 size_t err_size)
{
	static const char *const known[] = { "role", "content" };
	char where[32];
	json_t *role;
	json_t *content;
	int rc;

	snprintf(where, sizeof(where), "messages[%zu]", index);
	if (!json_is_object(item)) {
		err_set(err, err_size, "%s must be an object with \"role\" and \"content\"", where);
		return -EINVAL;
	}
	rc = unknown_keys_check(item, known, 2, where, err, err_size);
	if (rc < 0)
		return rc;
	role = json_object_get(item, "role");
	if (!json_is_string(role) || !role_is_known(json_string_value(role))) {
		err_set(err, err_size, "%s.role must be one of system, user, assistant", where);
		return -EINVAL;
	}
	content = json_object_get(item, "content");
	if (!json_is_string(content)) {
		err_set(err, err_size, "%s.content must be a string", where);
		return -EINVAL;
	}
	out->role = strdup(json_string_value(role));
	out->content = bytes_dup(json_string_value(content), json_string_length(content));
	if (!out->role || !out->content)
		return -ENOMEM;
	return 0;
}

static int messages_parse(json_t *messages, struct llm_request *out, char *err, size_t err_size)
{
	size_t n;
	size_t i;
	int rc;

	if (!messages) {
		err_set(err, err_size, "the prompt is a JSON request without \"messages\"");
		return -EINVAL;
	}
	n = json_is_array(messages) ? json_array_size(messages) : 0;
	if (n == 0) {
		err_set(err, err_size, "messages must be a non-empty array");
		return -EINVAL;
	}
	out->messages = calloc(n, sizeof(*out->messages));
	if (!out->messages)
		return -ENOMEM;
	for (i = 0; i < n; i++) {
		/* Counted before filling so a half-built message is freed too. */
		out->n_messages = i + 1;
		rc = message_parse(json_array_get(messages, i), i, &out->messages[i], err,
				   err_size);
		if (rc < 0)
			return rc;
	}
	return 0;
}

static int stop_parse(json_t *stop, struct llm_request *out, char *err, size_t err_size)
{
	json_t *item;
	size_t n;
	size_t i;

	if (json_is_string(stop)) {
		out->stop = calloc(1, sizeof(*out->stop));
		if (!out->stop)
			return -ENOMEM;
		out->n_stop = 1;
		out->stop[0] = bytes_dup(json_string_value(stop), json_string_length(stop));
		return out->stop[0] ? 0 : -ENOMEM;
	}
	if (!json_is_array(stop) || json_array_size(stop) > MAX_STOP_SEQUENCES) {
		err_set(err, err_size, "stop must be a string or an array of at most %d strings",
			MAX_STOP_SEQUENCES);
		return -EINVAL;
	}
	n = json_array_size(stop);
	if (n == 0)
		return 0;
	out->stop = calloc(n, sizeof(*out->stop));
	if (!out->stop)
		return -ENOMEM;
	for (i = 0; i < n; i++) {
		item = json_array_get(stop, i);
		if (!json_is_string(item)) {
			err_set(err, err_size, "stop[%zu] must be a string", i);
			return -EINVAL;
		}
		out->n_stop = i + 1;
		out->stop[i] = bytes_dup(json_string_value(item), json_string_length(item));
		if (!out->stop[i])
			return -ENOMEM;
	}
	return 0;
}

static int options_parse(json_t *root, struct llm_request *out, char *err, size_t err_size)
{
	json_t *temperature;
	json_t *max_tokens;
	json_t *stop;
	double value;

	temperature = json_object_get(root, "temperature");
	if (temperature) {
		value = json_number_value(temperature);
		if (!json_is_number(temperature) || value < 0 || value > 2) {
			err_set(err, err_size, "temperature must be a number from 0 to 2");
			return -EINVAL;
		}
		out->has_temperature = 1;
		out->temperature = value;
	}
	max_tokens = json_object_get(root, "max_tokens");
	if (max_tokens) {
		if (!json_is_integer(max_tokens) || json_integer_value(max_tokens) < 1 ||
		    json_integer_value(max_tokens) > LONG_MAX) {
			err_set(err, err_size, "max_tokens must be an integer of at least 1");
			return -EINVAL;
		}
		out->max_tokens = (long)json_integer_value(max_tokens);
	}
	stop = json_object_get(root, "stop");
	if (stop)
		return stop_parse(stop, out, err, err_size);
	return 0;
}

static int json_request_parse(const char *buf, size_t len, struct llm_request *out, char *err,
			      size_t err_size)
{
	static const char *const known[] = {
		"messages",
		"temperature",
		"max_tokens",
		"stop",
	};
	json_error_t jerr;
	json_t *root;
	size_t i;
	int rc;

	/* Two "messages" keys would leave the request ambiguous. */
	root = json_loadb(buf, len, JSON_REJECT_DUPLICATES, &jerr);
	if (!root) {
		/* jansson's own text here names one of its flags, which means
		 * nothing to the person who wrote the prompt. */
		err_set(err, err_size,
			"the prompt is not valid JSON (prompt_format is json): %s at line %d "
			"column %d",
			json_error_code(&jerr) == json_error_null_character
				? "a string holds \\u0000, which is not allowed"
				: jerr.text,
			jerr.line, jerr.column);
		/* jansson quotes the bytes near the fault, control bytes
		 * included, and the sentence must stay one line. */
		for (i = 0; err && i < err_size && err[i]; i++) {
			if ((unsigned char)err[i] < 0x20)
				err[i] = '?';
		}
		rc = -EINVAL;
		goto out;
	}
	rc = unknown_keys_check(root, known, sizeof(known) / sizeof(known[0]), NULL, err, err_size);
	if (rc < 0)
		goto out;
	rc = messages_parse(json_object_get(root, "messages"), out, err, err_size);
	if (rc < 0)
		goto out;
	rc = options_parse(root, out, err, err_size);
out:
	json_decref(root);
	return rc;
}

static int plain_text_parse(const char *buf, size_t len, struct llm_request *out)
{
	out->messages = calloc(1, sizeof(*out->messages));
	if (!out->messages)
		return -ENOMEM;
	out->n_messages = 1;
	out->messages[0].role = strdup("user");
	out->messages[0].content = bytes_dup(buf, len);
	if (!out->messages[0].role || !out->messages[0].content)
		return -ENOMEM;
	return 0;
}

/* Whether BUF is a JSON object with a "messages" array: what auto reads
 * as a request (SPEC §5.2). */
static int looks_like_request(const char *buf, size_t len)
{
	json_t *root = json_loadb(buf, len, JSON_REJECT_DUPLICATES, NULL);
	int yes = json_is_object(root) && json_is_array(json_object_get(root, "messages"));

	json_decref(root);
	return yes;
}

int prompt_parse(const char *buf, size_t len, struct llm_request *out, char *err, size_t err_size)
{
	return prompt_parse_as(buf, len, PROMPT_FORMAT_AUTO, out, NULL, err, err_size);
}

int prompt_parse_as(const char *buf, size_t len, enum prompt_format format, struct llm_request *out,
		    int *is_json, char *err, size_t err_size)
{
	size_t bad;
	size_t first;
	int rc, json;

	memset(out, 0, sizeof(*out));
	err_set(err, err_size, "%s", "");
	bad = utf8_invalid_offset(buf, len);
	if (bad < len) {
		err_set(err, err_size, "the prompt is not valid UTF-8 (byte offset %zu)", bad);
		rc = -EILSEQ;
		goto out;
	}
	for (first = 0; first < len && is_blank(buf[first]); first++)
		;
	if (first == len) {
		err_set(err, err_size, "empty prompt");
		rc = -ENODATA;
		goto out;
	}
	json = format == PROMPT_FORMAT_JSON ||
	       (format == PROMPT_FORMAT_AUTO && buf[first] == '{' && looks_like_request(buf, len));
	if (is_json)
		*is_json = json;
	if (json)
		rc = json_request_parse(buf, len, out, err, err_size);
	else
		rc = plain_text_parse(buf, len, out);
	if (rc == -ENOMEM)
		err_set(err, err_size, "out of memory while reading the prompt");
out:
	if (rc < 0)
		llm_request_release(out);
	return rc;
}

static int request_has_system(const struct llm_request *req)
{
	size_t i;

	for (i = 0; i < req->n_messages; i++) {
		if (strcmp(req->messages[i].role, "system") == 0)
			return 1;
	}
	return 0;
}

static int system_prepend(struct llm_request *req, const char *system)
{
	struct llm_message *messages;
	char *role = NULL;
	char *content = NULL;
	int rc = -ENOMEM;

	role = strdup("system");
	if (!role)
		goto out;
	content = strdup(system);
	if (!content)
		goto out;
	messages = realloc(req->messages, (req->n_messages + 1) * sizeof(*req->messages));
	if (!messages)
		goto out;
	memmove(messages + 1, messages, req->n_messages * sizeof(*messages));
	messages[0].role = role;
	messages[0].content = content;
	req->messages = messages;
	req->n_messages++;
	role = NULL;
	content = NULL;
	rc = 0;
out:
	free(content);
	free(role);
	return rc;
}

int prompt_apply_defaults(struct llm_request *req, const char *system, int has_temperature,
			  double temperature, long max_output_tokens_cap)
{
	int rc;

	/* The system message goes first, where every provider expects it;
	 * it is the one step that can fail, so it runs before the others to
	 * leave REQ unchanged on failure. */
	if (system && system[0] && !request_has_system(req)) {
		rc = system_prepend(req, system);
		if (rc < 0)
			return rc;
	}
	if (has_temperature && !req->has_temperature) {
		req->has_temperature = 1;
		req->temperature = temperature;
	}
	llm_request_cap_tokens(req, max_output_tokens_cap);
	return 0;
}

long prompt_bytes_for_cost(const struct llm_request *req)
{
	long total = 0;
	size_t i;

	for (i = 0; i < req->n_messages; i++)
		total += (long)strlen(req->messages[i].content) + COST_BYTES_PER_MESSAGE;
	return total;
}

int prompt_utf8_continues(const char *before, size_t before_len, const char *buf, size_t len)
{
	size_t start = before_len, i;

	/* back to the start of the character the bytes before end in */
	while (start > 0 && ((unsigned char)before[start - 1] & 0xc0) == 0x80)
		start--;
	if (start > 0)
		start--;
	else if (before_len > 0 && ((unsigned char)before[0] & 0xc0) == 0x80)
		start = before_len; /* a character begun further back: not judged */
	/* the bytes from there: BEFORE's tail, then BUF */
	for (i = start; i < before_len + len;) {
		char window[4];
		size_t avail = before_len + len - i, n;
		int seq;

		if (avail > sizeof(window))
			avail = sizeof(window);
		for (n = 0; n < avail; n++)
			window[n] = i + n < before_len ? before[i + n] : buf[i + n - before_len];
		seq = utf8_sequence_length(window, avail);
		if (seq < 0)
			return 0; /* cut by the end of this write: the next one may finish it */
		if (seq == 0 || window[0] == '\0')
			return -EILSEQ;
		i += (size_t)seq;
	}
	return 0;
}
