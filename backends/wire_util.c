/* Wire pieces shared by the provider backends (see wire_util.h). */
#include "backends/wire_util.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* First allocation of a capped buffer; it doubles from there. Small:
 * an SSE parser holds three, most of whose lines and events are short. */
#define CAPPED_BUFFER_FIRST_ALLOC 256

int http_header_append(struct curl_slist **list, const char *head, const char *value)
{
	struct curl_slist *grown;
	char *line = NULL;
	const char *c;
	int rc = 0;

	for (c = value; *c; c++) {
		if ((unsigned char)*c < ' ' || *c == 0x7f) {
			rc = -EINVAL;
			goto out;
		}
	}
	if (asprintf(&line, "%s%s", head, value) < 0) {
		line = NULL;
		rc = -ENOMEM;
		goto out;
	}
	grown = curl_slist_append(*list, line);
	if (!grown) {
		rc = -ENOMEM;
		goto out;
	}
	*list = grown;
out:
	if (line) {
		explicit_bzero(line, strlen(line));
		free(line);
	}
	return rc;
}

int endpoint_trimmed_length(const char *endpoint)
{
	size_t len = strlen(endpoint);

	while (len > 0 && endpoint[len - 1] == '/')
		len--;
	return (int)len;
}

void capped_buffer_init(struct capped_buffer *buf, size_t cap)
{
	memset(buf, 0, sizeof(*buf));
	buf->cap = cap;
}

int capped_buffer_append(struct capped_buffer *buf, const char *bytes, size_t len)
{
	size_t need;
	size_t new_alloc;
	char *grown;

	if (buf->len > buf->cap || len > buf->cap - buf->len)
		return -E2BIG;
	need = buf->len + len + 1; /* and the NUL */
	if (need > buf->alloc) {
		new_alloc = buf->alloc ? buf->alloc : CAPPED_BUFFER_FIRST_ALLOC;
		while (new_alloc < need)
			new_alloc *= 2;
		/* No point holding room the cap will never let us use. */
		if (buf->cap < SIZE_MAX && new_alloc > buf->cap + 1)
			new_alloc = buf->cap + 1;
		grown = realloc(buf->data, new_alloc);
		if (!grown)
			return -ENOMEM;
		buf->data = grown;
		buf->alloc = new_alloc;
	}
	if (len)
		memcpy(buf->data + buf->len, bytes, len);
	buf->len += len;
	buf->data[buf->len] = '\0';
	return 0;
}

void capped_buffer_release(struct capped_buffer *buf)
{
	free(buf->data);
	buf->data = NULL;
	buf->len = 0;
	buf->alloc = 0;
}

/* The blanks isspace() knows in the C locale, spelled out so that no
 * locale can change what a body is taken for. */
static int is_blank(char c)
{
	return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\v' || c == '\f';
}

size_t body_kind_detect(const char *data, size_t len, const char *json_starts, enum body_kind *kind)
{
	size_t skipped = 0;

	while (skipped < len && is_blank(data[skipped]))
		skipped++;
	/* strchr would find a NUL byte at the end of JSON_STARTS. */
	if (skipped < len)
		*kind = data[skipped] != '\0' && strchr(json_starts, data[skipped]) ? BODY_JSON
										    : BODY_SSE;
	return skipped;
}

void error_message_flatten(char *message)
{
	for (; *message; message++) {
		if ((unsigned char)*message < ' ')
			*message = ' ';
	}
}

void answer_overflow_explain(int rc, const char *provider, const char *what, size_t cap,
			     struct attempt_error *err)
{
	if (rc == -E2BIG)
		attempt_error_set(err, OUTCOME_TOO_LARGE, "%s sent %s over %zu bytes", provider,
				  what, cap);
	else
		attempt_error_set(err, OUTCOME_NO_MEMORY, "out of memory reading the answer");
}

int answer_text_report(const struct answer_events *ev, void *ctx, const char *text, size_t len,
		       struct attempt_error *err)
{
	int rc;

	if (len == 0)
		return 0;
	rc = ev->text(ctx, text, len);
	if (rc < 0)
		attempt_error_set(err, OUTCOME_LOCAL_ERROR, "the answer could not be taken: %s",
				  strerror(-rc));
	return rc;
}

int parser_failure_remember(struct parser_failure *f, int rc, struct attempt_error *err)
{
	error_message_flatten(err->message);
	f->rc = rc;
	f->error = *err;
	return rc;
}

int parser_failure_repeat(const struct parser_failure *f, struct attempt_error *err)
{
	if (f->rc)
		*err = f->error;
	return f->rc;
}

json_t *stop_sequences_json(const struct llm_request *req)
{
	json_t *stops = json_array();
	size_t i;

	for (i = 0; stops && i < req->n_stop; i++) {
		if (json_array_append_new(stops, json_string(req->stop[i])) < 0) {
			json_decref(stops);
			return NULL;
		}
	}
	return stops;
}

int json_body_dump(const json_t *root, char **out, size_t *out_len)
{
	*out = json_dumps(root, JSON_COMPACT | JSON_REAL_PRECISION(15));
	if (!*out)
		return -ENOMEM;
	*out_len = strlen(*out);
	return 0;
}

void http_error_explain(struct attempt_error *err, enum outcome outcome, long status,
			const char *provider, const char *kind, const char *message)
{
	attempt_error_set_http(err, outcome, status, "%s answered HTTP %ld%s%s%s%s%s", provider,
			       status, kind ? " (" : "", kind ? kind : "", kind ? ")" : "",
			       message ? ": " : "", message ? message : "");
	error_message_flatten(err->message);
}

int word_is_one_of(const char *word, const char *const list[], size_t n)
{
	size_t i;

	for (i = 0; word && i < n; i++) {
		if (strcmp(word, list[i]) == 0)
			return 1;
	}
	return 0;
}
