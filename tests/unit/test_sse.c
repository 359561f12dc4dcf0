/* Unit tests for backends/sse.c: line ends, fields, caps, and input cut
 * at every possible byte. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "backends/sse.h"

#define MAX_RECORDED 16

/* Every dispatched event, as "event|data", so one string comparison
 * checks both fields. */
struct recorder {
	char events[MAX_RECORDED][512];
	size_t n_events;
	int stop_after; /* > 0: the callback fails on that event */
};

static int record_event(void *ctx, const char *event, const char *data, size_t data_len)
{
	struct recorder *rec = ctx;

	assert_int_equal(strlen(data), data_len);
	assert_true(rec->n_events < MAX_RECORDED);
	snprintf(rec->events[rec->n_events], sizeof(rec->events[0]), "%s|%s", event, data);
	rec->n_events++;
	if (rec->stop_after > 0 && rec->n_events == (size_t)rec->stop_after)
		return -ECANCELED;
	return 0;
}

/* Feeds TEXT in one call to a fresh parser and returns sse_feed's value. */
static int feed_whole(struct recorder *rec, const char *text, size_t cap)
{
	struct sse_parser *p;
	int rc;

	memset(rec, 0, sizeof(*rec));
	p = sse_new(cap, record_event, rec);
	assert_non_null(p);
	rc = sse_feed(p, text, strlen(text));
	sse_free(p);
	return rc;
}

static void test_lf_line_ends(void **state)
{
	struct recorder rec;

	(void)state;
	assert_int_equal(feed_whole(&rec, "data: one\n\ndata: two\n\n", 1024), 0);
	assert_int_equal(rec.n_events, 2);
	assert_string_equal(rec.events[0], "|one");
	assert_string_equal(rec.events[1], "|two");
}

static void test_crlf_line_ends(void **state)
{
	struct recorder rec;

	(void)state;
	assert_int_equal(feed_whole(&rec, "data: one\r\n\r\ndata: two\r\n\r\n", 1024), 0);
	assert_int_equal(rec.n_events, 2);
	assert_string_equal(rec.events[0], "|one");
	assert_string_equal(rec.events[1], "|two");
}

static void test_cr_line_ends(void **state)
{
	struct recorder rec;

	(void)state;
	assert_int_equal(feed_whole(&rec, "data: one\r\rdata: two\r\r", 1024), 0);
	assert_int_equal(rec.n_events, 2);
	assert_string_equal(rec.events[0], "|one");
	assert_string_equal(rec.events[1], "|two");
}

static void test_mixed_line_ends(void **state)
{
	struct recorder rec;

	(void)state;
	assert_int_equal(feed_whole(&rec,
				    "data: a\r\ndata: b\rdata: c\n\r\n"
				    "data: d\n\r",
				    1024),
			 0);
	assert_int_equal(rec.n_events, 2);
	assert_string_equal(rec.events[0], "|a\nb\nc");
	assert_string_equal(rec.events[1], "|d");
}

static void test_crlf_split_across_chunks(void **state)
{
	struct recorder rec;
	struct sse_parser *p;

	(void)state;
	memset(&rec, 0, sizeof(rec));
	p = sse_new(1024, record_event, &rec);
	assert_non_null(p);
	/* The \r ending one chunk and the \n starting the next are one line
	 * end; counting them as two would dispatch after the first line. */
	assert_int_equal(sse_feed(p, "data: a\r", 8), 0);
	assert_int_equal(sse_feed(p, "\ndata: b\r", 9), 0);
	assert_int_equal(rec.n_events, 0);
	assert_int_equal(sse_feed(p, "\n\r", 2), 0);
	assert_int_equal(rec.n_events, 1);
	assert_string_equal(rec.events[0], "|a\nb");
	/* A lone \r at a chunk's end followed by a non-\n byte ends the line
	 * by itself. */
	assert_int_equal(sse_feed(p, "\n", 1), 0);
	assert_int_equal(sse_feed(p, "data: c\r", 8), 0);
	assert_int_equal(sse_feed(p, "\r", 1), 0);
	assert_int_equal(rec.n_events, 2);
	assert_string_equal(rec.events[1], "|c");
	sse_free(p);
}

static void test_comments_ignored(void **state)
{
	struct recorder rec;

	(void)state;
	assert_int_equal(feed_whole(&rec, ": keep-alive\n\n:\ndata: x\n: mid\ndata: y\n\n", 1024),
			 0);
	assert_int_equal(rec.n_events, 1);
	assert_string_equal(rec.events[0], "|x\ny");
}

static void test_field_value_forms(void **state)
{
	struct recorder rec;

	(void)state;
	/* Only one leading space is dropped; no space is fine; a line without
	 * a colon is a field with an empty value. */
	assert_int_equal(feed_whole(&rec,
				    "data:  two spaces\n\ndata:tight\n\ndata\n\n"
				    "data: a:b: c\n\n",
				    1024),
			 0);
	assert_int_equal(rec.n_events, 4);
	assert_string_equal(rec.events[0], "| two spaces");
	assert_string_equal(rec.events[1], "|tight");
	assert_string_equal(rec.events[2], "|");
	assert_string_equal(rec.events[3], "|a:b: c");
}

static void test_event_field_and_unknown_fields(void **state)
{
	struct recorder rec;

	(void)state;
	assert_int_equal(feed_whole(&rec,
				    "event: message_start\nid: 7\nretry: 10\n"
				    "x-custom: y\ndata: {\"a\":1}\n\n"
				    "data: plain\n\n",
				    1024),
			 0);
	assert_int_equal(rec.n_events, 2);
	assert_string_equal(rec.events[0], "message_start|{\"a\":1}");
	/* The event name does not leak into the next event. */
	assert_string_equal(rec.events[1], "|plain");
}

static void test_event_without_data_not_dispatched(void **state)
{
	struct recorder rec;

	(void)state;
	assert_int_equal(feed_whole(&rec, "event: ping\n\nid: 3\n\n\n\n", 1024), 0);
	assert_int_equal(rec.n_events, 0);
}

static void test_byte_order_mark_skipped(void **state)
{
	struct recorder rec;

	(void)state;
	assert_int_equal(feed_whole(&rec,
				    "\xEF\xBB\xBF"
				    "data: x\n\n",
				    1024),
			 0);
	assert_int_equal(rec.n_events, 1);
	assert_string_equal(rec.events[0], "|x");
}

static void test_pending(void **state)
{
	struct recorder rec;
	struct sse_parser *p;

	(void)state;
	memset(&rec, 0, sizeof(rec));
	p = sse_new(1024, record_event, &rec);
	assert_non_null(p);
	assert_false(sse_pending(p));
	assert_int_equal(sse_feed(p, "data: par", 9), 0);
	assert_true(sse_pending(p));
	assert_int_equal(sse_feed(p, "tial\n", 5), 0);
	assert_true(sse_pending(p));
	assert_int_equal(sse_feed(p, "\n", 1), 0);
	assert_false(sse_pending(p));
	assert_int_equal(rec.n_events, 1);
	assert_int_equal(sse_feed(p, ": comment\n", 10), 0);
	assert_false(sse_pending(p));
	sse_free(p);
}

static void test_callback_error_stops(void **state)
{
	struct recorder rec;
	struct sse_parser *p;

	(void)state;
	memset(&rec, 0, sizeof(rec));
	rec.stop_after = 1;
	p = sse_new(1024, record_event, &rec);
	assert_non_null(p);
	assert_int_equal(sse_feed(p, "data: 1\n\ndata: 2\n\n", 18), -ECANCELED);
	assert_int_equal(rec.n_events, 1);
	/* The parser stays failed: it cannot know where the next event starts. */
	assert_int_equal(sse_feed(p, "data: 3\n\n", 9), -ECANCELED);
	assert_int_equal(rec.n_events, 1);
	sse_free(p);
}

static void test_cap_on_line(void **state)
{
	struct recorder rec;
	char line[64];

	(void)state;
	/* "data: " + 10 bytes = 16: exactly at the cap is fine. */
	snprintf(line, sizeof(line), "data: %s\n\n", "0123456789");
	assert_int_equal(feed_whole(&rec, line, 16), 0);
	assert_int_equal(rec.n_events, 1);
	snprintf(line, sizeof(line), "data: %s\n\n", "0123456789A");
	assert_int_equal(feed_whole(&rec, line, 16), -E2BIG);
	assert_int_equal(rec.n_events, 0);
	/* A line without an end is refused as soon as it outgrows the cap. */
	assert_int_equal(feed_whole(&rec, ": a comment that never ends", 16), -E2BIG);
}

static void test_cap_on_event(void **state)
{
	struct recorder rec;

	(void)state;
	/* Each line fits, but their joined data does not: 5+1+5+1+5 = 17. */
	assert_int_equal(feed_whole(&rec, "data: aaaaa\ndata: bbbbb\ndata: ccccc\n\n", 16), -E2BIG);
	assert_int_equal(rec.n_events, 0);
	assert_int_equal(feed_whole(&rec, "data: aaaaa\ndata: bbbbb\n\n", 16), 0);
	assert_int_equal(rec.n_events, 1);
	/* The event name counts toward the same cap. */
	assert_int_equal(feed_whole(&rec, "event: eeeeeeee\ndata: aaaaaaaaa\n\n", 16), -E2BIG);
}

static const char realistic_stream[] =
	": OPENROUTER PROCESSING\n\n"
	"data: {\"id\":\"chatcmpl-X\",\"object\":\"chat.completion.chunk\",\"choices\":"
	"[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},"
	"\"finish_reason\":null}],\"usage\":null}\n\n"
	"data: {\"id\":\"chatcmpl-X\",\"object\":\"chat.completion.chunk\",\"choices\":"
	"[{\"index\":0,\"delta\":{\"content\":\"Hel\\u00e9\"},\"finish_reason\":null}],"
	"\"usage\":null}\r\n\r\n"
	"data: {\"id\":\"chatcmpl-X\",\"choices\":[],\"usage\":{\"prompt_tokens\":12,"
	"\"completion_tokens\":3,\"total_tokens\":15}}\r\r"
	"data: [DONE]\n\n";

static void check_realistic_events(const struct recorder *rec)
{
	assert_int_equal(rec->n_events, 4);
	assert_non_null(strstr(rec->events[0], "\"role\":\"assistant\""));
	assert_non_null(strstr(rec->events[1], "Hel\\u00e9"));
	assert_non_null(strstr(rec->events[1], "\"usage\":null}"));
	assert_non_null(strstr(rec->events[2], "\"total_tokens\":15}}"));
	assert_string_equal(rec->events[3], "|[DONE]");
}

static void test_realistic_stream_byte_by_byte(void **state)
{
	struct recorder rec;
	struct sse_parser *p;
	size_t i;

	(void)state;
	memset(&rec, 0, sizeof(rec));
	p = sse_new(4096, record_event, &rec);
	assert_non_null(p);
	for (i = 0; i < sizeof(realistic_stream) - 1; i++)
		assert_int_equal(sse_feed(p, realistic_stream + i, 1), 0);
	check_realistic_events(&rec);
	assert_false(sse_pending(p));
	sse_free(p);
}

static void test_realistic_stream_every_split(void **state)
{
	size_t len = sizeof(realistic_stream) - 1;
	struct recorder rec;
	struct recorder whole;
	struct sse_parser *p;
	size_t split;
	size_t i;

	(void)state;
	assert_int_equal(feed_whole(&whole, realistic_stream, 4096), 0);
	check_realistic_events(&whole);
	for (split = 0; split <= len; split++) {
		memset(&rec, 0, sizeof(rec));
		p = sse_new(4096, record_event, &rec);
		assert_non_null(p);
		assert_int_equal(sse_feed(p, realistic_stream, split), 0);
		assert_int_equal(sse_feed(p, realistic_stream + split, len - split), 0);
		assert_int_equal(rec.n_events, whole.n_events);
		for (i = 0; i < rec.n_events; i++)
			assert_string_equal(rec.events[i], whole.events[i]);
		sse_free(p);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_lf_line_ends),
		cmocka_unit_test(test_crlf_line_ends),
		cmocka_unit_test(test_cr_line_ends),
		cmocka_unit_test(test_mixed_line_ends),
		cmocka_unit_test(test_crlf_split_across_chunks),
		cmocka_unit_test(test_comments_ignored),
		cmocka_unit_test(test_field_value_forms),
		cmocka_unit_test(test_event_field_and_unknown_fields),
		cmocka_unit_test(test_event_without_data_not_dispatched),
		cmocka_unit_test(test_byte_order_mark_skipped),
		cmocka_unit_test(test_pending),
		cmocka_unit_test(test_callback_error_stops),
		cmocka_unit_test(test_cap_on_line),
		cmocka_unit_test(test_cap_on_event),
		cmocka_unit_test(test_realistic_stream_byte_by_byte),
		cmocka_unit_test(test_realistic_stream_every_split),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
