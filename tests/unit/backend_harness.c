/* What the backends' unit tests share: a recorder of what a parser
 * reports, and runners that feed a stream split at every byte. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "tests/unit/backend_harness.h"

static int record_text(void *ctx, const char *bytes, size_t len)
{
	struct recorder *rec = ctx;

	if (rec->text_rc)
		return rec->text_rc;
	assert_true(rec->text_len + len < sizeof(rec->text));
	memcpy(rec->text + rec->text_len, bytes, len);
	rec->text_len += len;
	rec->text[rec->text_len] = '\0';
	return 0;
}

static void record_usage(void *ctx, long input_tokens, long output_tokens)
{
	struct recorder *rec = ctx;

	rec->input_tokens = input_tokens;
	rec->output_tokens = output_tokens;
	rec->usage_calls++;
}

static void record_finish_reason(void *ctx, enum finish_reason reason, const char *word)
{
	struct recorder *rec = ctx;

	snprintf(rec->finish_reason, sizeof(rec->finish_reason), "%s",
		 finish_reason_word(reason) ? finish_reason_word(reason) : word);
	snprintf(rec->finish_word, sizeof(rec->finish_word), "%s", word ? word : "");
	rec->finish = reason;
	rec->finish_calls++;
}

static void record_request_id(void *ctx, const char *id)
{
	struct recorder *rec = ctx;

	snprintf(rec->request_id, sizeof(rec->request_id), "%s", id);
	rec->request_id_calls++;
}

const struct answer_events recorder_events = {
	.text = record_text,
	.usage = record_usage,
	.finish_reason = record_finish_reason,
	.request_id = record_request_id,
};

void recorder_reset(struct recorder *rec)
{
	memset(rec, 0, sizeof(*rec));
	rec->input_tokens = -2;
	rec->output_tokens = -2;
}

/* Feeds STREAM cut in two at SPLIT (the second half byte by byte when
 * BYTEWISE), then ends the body. Returns the first failure, or what
 * parser_finish says. */
int stream_run(const struct backend *b, const char *stream, size_t len, size_t split, int bytewise,
	       struct recorder *rec, struct attempt_error *err)
{
	struct stream_parser *p;
	size_t i;
	int rc;

	recorder_reset(rec);
	memset(err, 0, sizeof(*err));
	p = b->parser_new(&recorder_events, rec);
	assert_non_null(p);
	rc = b->parser_feed(p, stream, split, err);
	for (i = split; rc == 0 && i < len; i += bytewise ? 1 : len - split)
		rc = b->parser_feed(p, stream + i, bytewise ? 1 : len - split, err);
	if (rc == 0)
		rc = b->parser_finish(p, err);
	b->parser_free(p);
	return rc;
}

/* Runs STREAM split at every byte, and once byte by byte, and checks
 * each run reports the same complete answer. */
void stream_expect_everywhere(const struct backend *b, const char *stream, const char *text,
			      long input_tokens, long output_tokens, const char *finish_reason,
			      const char *request_id)
{
	struct recorder rec;
	struct attempt_error err;
	size_t len = strlen(stream);
	size_t split;
	int bytewise;

	for (bytewise = 0; bytewise < 2; bytewise++) {
		for (split = 0; split <= len; split += bytewise ? len + 1 : 1) {
			assert_int_equal(stream_run(b, stream, len, split, bytewise, &rec, &err),
					 0);
			assert_string_equal(rec.text, text);
			assert_int_equal(rec.input_tokens, input_tokens);
			assert_int_equal(rec.output_tokens, output_tokens);
			assert_string_equal(rec.finish_reason, finish_reason);
			assert_int_equal(rec.finish_calls, 1);
			assert_string_equal(rec.request_id, request_id);
			assert_int_equal(rec.request_id_calls, 1);
		}
	}
}

/* Runs STREAM whole and expects a failure. */
int stream_fail(const struct backend *b, const char *stream, struct recorder *rec,
		struct attempt_error *err)
{
	size_t len = strlen(stream);
	int rc = stream_run(b, stream, len, len, 0, rec, err);

	assert_true(rc < 0);
	return rc;
}

/* Runs STREAM split at every byte and expects it to parse as an answer
 * that a safety system cut short, told by FILTERED_BY. */
void stream_expect_filtered(const struct backend *b, const char *stream, const char *filtered_by)
{
	struct recorder rec;
	struct attempt_error err;
	size_t len = strlen(stream);

	for (size_t split = 0; split <= len; split++) {
		assert_int_equal(stream_run(b, stream, len, split, 0, &rec, &err), 0);
		assert_int_equal(rec.finish, FINISH_FILTERED);
		assert_string_equal(rec.finish_reason, "content_filter");
		assert_string_equal(rec.finish_word, filtered_by);
		assert_int_equal(rec.finish_calls, 1);
	}
}

/* The header lines of LIST, joined by '\n'. */
void headers_join(const struct curl_slist *list, char *out, size_t size)
{
	size_t used = 0;

	out[0] = '\0';
	for (; list; list = list->next) {
		used += (size_t)snprintf(out + used, size - used, "%s\n", list->data);
		assert_true(used < size);
	}
}

void head_init(struct http_response_head *head, long status)
{
	memset(head, 0, sizeof(*head));
	head->status = status;
}

void classify(const struct backend *b, const struct http_response_head *head, const char *body,
	      struct attempt_error *err)
{
	memset(err, 0, sizeof(*err));
	b->classify_error(head, body, strlen(body), err);
}

static long allocations_left; /* < 0: never fail */

static void *failing_malloc(size_t size)
{
	if (allocations_left == 0)
		return NULL;
	if (allocations_left > 0)
		allocations_left--;
	return malloc(size);
}

/* Every jansson allocation in turn fails once: the request builder and
 * the parser must fail cleanly (no crash, no leak under ASan) and never
 * report success with a wrong answer. */
void chaos_run(const struct backend *b, const struct backend_target *where,
	       const struct llm_request *req, const char *stream, const char *text)
{
	struct http_request out;
	struct recorder rec;
	struct attempt_error err;
	long n;
	int rc;
	int clean_runs = 0;

	for (n = 0; clean_runs < 2; n++) {
		json_set_alloc_funcs(failing_malloc, free);
		allocations_left = n;
		rc = b->build_request(where, req, &out);
		if (rc == 0)
			http_request_release(&out);
		else
			assert_int_equal(rc, -ENOMEM);
		allocations_left = n;
		rc = stream_run(b, stream, strlen(stream), strlen(stream) / 2, 0, &rec, &err);
		if (rc == 0)
			assert_string_equal(rec.text, text);
		json_set_alloc_funcs(malloc, free);
		/* Once N exceeds what one run needs, both succeed. */
		if (allocations_left > 0 && rc == 0)
			clean_runs++;
	}
}
