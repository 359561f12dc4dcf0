/* What the backends' unit tests share (backend_harness.c). */
#ifndef PROMPTFS_BACKEND_HARNESS_H
#define PROMPTFS_BACKEND_HARNESS_H

#include <stddef.h>

#include "backends/backend.h"

/* Everything a parser reported through answer_events. */
struct recorder {
	char text[8192];
	size_t text_len;
	long input_tokens;
	long output_tokens;
	int usage_calls;
	char finish_reason[64]; /* the word .meta would show */
	char finish_word[256];	/* the provider's, or who filtered */
	enum finish_reason finish;
	int finish_calls;
	char request_id[128];
	int request_id_calls;
	int text_rc; /* what text() answers; 0 takes the bytes */
};

extern const struct answer_events recorder_events;

void recorder_reset(struct recorder *rec);

/* Feeds STREAM cut in two at SPLIT (the second half byte by byte when
 * BYTEWISE), then ends the body. Returns the first failure, or what
 * parser_finish says. */
int stream_run(const struct backend *b, const char *stream, size_t len, size_t split, int bytewise,
	       struct recorder *rec, struct attempt_error *err);

/* Runs STREAM split at every byte, and once byte by byte, and checks
 * each run reports the same complete answer. */
void stream_expect_everywhere(const struct backend *b, const char *stream, const char *text,
			      long input_tokens, long output_tokens, const char *finish_reason,
			      const char *request_id);

/* Runs STREAM whole and expects a failure; returns it. */
int stream_fail(const struct backend *b, const char *stream, struct recorder *rec,
		struct attempt_error *err);

/* Runs STREAM split at every byte and expects it to parse as an answer
 * that a safety system cut short, told by FILTERED_BY. */
void stream_expect_filtered(const struct backend *b, const char *stream, const char *filtered_by);

/* The header lines of LIST, joined by '\n'. */
void headers_join(const struct curl_slist *list, char *out, size_t size);

void head_init(struct http_response_head *head, long status);

/* classify_error of B on BODY, into a cleared ERR. */
void classify(const struct backend *b, const struct http_response_head *head, const char *body,
	      struct attempt_error *err);

/* Makes every jansson allocation fail in turn while B builds REQ for
 * WHERE and parses STREAM: each run must fail cleanly with -ENOMEM or
 * give exactly TEXT. */
void chaos_run(const struct backend *b, const struct backend_target *where,
	       const struct llm_request *req, const char *stream, const char *text);

#endif
