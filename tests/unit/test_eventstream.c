/* The event-stream decoder: frames built here (with the module's own
 * CRC, itself checked against the standard check value and published
 * frames), fed whole, byte by byte and split at every boundary; corrupt
 * and impossible frames rejected for good. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "backends/eventstream.h"

#define MAX_FRAME 4096
#define MAX_SEEN 16

/* --- building frames ----------------------------------------------- */

struct frame {
	unsigned char bytes[MAX_FRAME];
	size_t len;
};

struct header_block {
	unsigned char bytes[MAX_FRAME];
	size_t len;
};

static void put_be(unsigned char *p, uint64_t v, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		p[i] = (unsigned char)(v >> (8 * (n - 1 - i)));
}

static void header_put_name(struct header_block *h, const char *name,
			    enum eventstream_header_type type)
{
	size_t name_len = strlen(name);

	h->bytes[h->len++] = (unsigned char)name_len;
	memcpy(h->bytes + h->len, name, name_len);
	h->len += name_len;
	h->bytes[h->len++] = (unsigned char)type;
}

static void header_add_string(struct header_block *h, const char *name, const char *value)
{
	size_t value_len = strlen(value);

	header_put_name(h, name, EVENTSTREAM_STRING);
	put_be(h->bytes + h->len, value_len, 2);
	h->len += 2;
	memcpy(h->bytes + h->len, value, value_len);
	h->len += value_len;
}

static void header_add_fixed(struct header_block *h, const char *name,
			     enum eventstream_header_type type, uint64_t value, size_t value_len)
{
	header_put_name(h, name, type);
	put_be(h->bytes + h->len, value, value_len);
	h->len += value_len;
}

/* Lays out prelude, headers, payload and both CRCs; TOTAL_OVERRIDE and
 * HEADERS_OVERRIDE (when not 0) forge the prelude lengths, with a prelude
 * CRC that still matches them. */
static void frame_build_forged(struct frame *f, const struct header_block *h, const char *payload,
			       uint32_t total_override, uint32_t headers_override)
{
	size_t headers_len = h ? h->len : 0;
	size_t payload_len = payload ? strlen(payload) : 0;
	size_t total = 16 + headers_len + payload_len;

	assert_true(total <= MAX_FRAME);
	put_be(f->bytes, total_override ? total_override : total, 4);
	put_be(f->bytes + 4, headers_override ? headers_override : headers_len, 4);
	put_be(f->bytes + 8, eventstream_crc32(0, f->bytes, 8), 4);
	if (headers_len)
		memcpy(f->bytes + 12, h->bytes, headers_len);
	if (payload_len)
		memcpy(f->bytes + 12 + headers_len, payload, payload_len);
	put_be(f->bytes + total - 4, eventstream_crc32(0, f->bytes, total - 4), 4);
	f->len = total;
}

static void frame_build(struct frame *f, const struct header_block *h, const char *payload)
{
	frame_build_forged(f, h, payload, 0, 0);
}

static void frame_build_event(struct frame *f, const char *event_type, const char *payload)
{
	struct header_block h = { .len = 0 };

	header_add_string(&h, ":event-type", event_type);
	header_add_string(&h, ":content-type", "application/json");
	header_add_string(&h, ":message-type", "event");
	frame_build(f, &h, payload);
}

/* --- collecting what the decoder delivers -------------------------- */

struct seen_message {
	char event_type[64];
	char message_type[64];
	char payload[512];
	size_t n_headers;
};

struct collector {
	struct seen_message seen[MAX_SEEN];
	size_t n_seen;
	int fail_with; /* callback result to return, 0 to accept */
};

static void copy_or_empty(char *dst, size_t cap, const char *src)
{
	snprintf(dst, cap, "%s", src ? src : "");
}

static int collect(void *ctx, const struct eventstream_message *msg)
{
	struct collector *c = ctx;
	struct seen_message *s;

	assert_true(c->n_seen < MAX_SEEN);
	s = &c->seen[c->n_seen++];
	copy_or_empty(s->event_type, sizeof(s->event_type), msg->event_type);
	copy_or_empty(s->message_type, sizeof(s->message_type), msg->message_type);
	assert_true(msg->payload_len < sizeof(s->payload));
	memcpy(s->payload, msg->payload, msg->payload_len);
	s->payload[msg->payload_len] = '\0';
	s->n_headers = msg->n_headers;
	return c->fail_with;
}

static int feed_all(const unsigned char *bytes, size_t len, size_t max, struct collector *c)
{
	struct eventstream_decoder *d = eventstream_new(max, collect, c);
	int ret;

	assert_non_null(d);
	ret = eventstream_feed(d, bytes, len);
	if (ret == 0 && eventstream_pending(d))
		ret = -EPIPE; /* a complete input must leave nothing behind */
	eventstream_free(d);
	return ret;
}

static size_t hex_decode(const char *hex, unsigned char *out)
{
	size_t n = 0;

	while (hex[0] && hex[1]) {
		unsigned int byte;

		assert_int_equal(sscanf(hex, "%2x", &byte), 1);
		out[n++] = (unsigned char)byte;
		hex += 2;
	}
	return n;
}

/* --- tests --------------------------------------------------------- */

static void test_crc32_check_value(void **state)
{
	(void)state;
	assert_int_equal(eventstream_crc32(0, "123456789", 9), 0xCBF43926u);
	assert_int_equal(eventstream_crc32(0, "", 0), 0);
	/* Continuing a CRC over a second part equals one pass. */
	assert_int_equal(eventstream_crc32(eventstream_crc32(0, "1234", 4), "56789", 5),
			 0xCBF43926u);
}

/* The smallest legal message, as published with botocore's tests. */
static void test_empty_message(void **state)
{
	unsigned char bytes[16];
	struct collector c = { .n_seen = 0 };
	struct frame f;

	(void)state;
	assert_int_equal(hex_decode("0000001000000000"
				    "05c248eb7d98c8ff",
				    bytes),
			 16);
	frame_build(&f, NULL, NULL);
	assert_int_equal(f.len, 16);
	assert_memory_equal(f.bytes, bytes, 16);
	assert_int_equal(feed_all(bytes, 16, 0, &c), 0);
	assert_int_equal(c.n_seen, 1);
	assert_int_equal(c.seen[0].n_headers, 0);
	assert_string_equal(c.seen[0].payload, "");
}

/* The contentBlockDelta frame of our wire reference (§5.4), which this
 * builder must reproduce byte for byte. */
static const char reference_delta_hex[] =
	"0000009f00000057c37babff0b3a6576656e742d74797065070011636f6e74656e74426c6f636b44656c7461"
	"0d3a636f6e74656e742d747970650700106170706c69636174696f6e2f6a736f6e0d3a6d6573736167652d74"
	"7970650700056576656e747b22636f6e74656e74426c6f636b496e646578223a302c2264656c7461223a7b22"
	"74657874223a224869227d2c2270223a2261626364227df2ace5ff";

static void test_reference_frame(void **state)
{
	unsigned char bytes[256];
	struct collector c = { .n_seen = 0 };
	struct frame f;
	size_t len;

	(void)state;
	len = hex_decode(reference_delta_hex, bytes);
	assert_int_equal(len, 159);
	frame_build_event(&f, "contentBlockDelta",
			  "{\"contentBlockIndex\":0,\"delta\":{\"text\":\"Hi\"},\"p\":\"abcd\"}");
	assert_int_equal(f.len, 159);
	assert_memory_equal(f.bytes, bytes, 159);

	assert_int_equal(feed_all(bytes, len, 0, &c), 0);
	assert_int_equal(c.n_seen, 1);
	assert_string_equal(c.seen[0].event_type, "contentBlockDelta");
	assert_string_equal(c.seen[0].message_type, "event");
	assert_int_equal(c.seen[0].n_headers, 3);
	assert_string_equal(c.seen[0].payload,
			    "{\"contentBlockIndex\":0,\"delta\":{\"text\":\"Hi\"},\"p\":\"abcd\"}");
}

static int check_every_type(void *ctx, const struct eventstream_message *msg)
{
	static const unsigned char uuid[16] = {
		0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15
	};
	struct eventstream_header h;
	int *calls = ctx;

	(*calls)++;
	assert_int_equal(msg->n_headers, 11);
	assert_string_equal(msg->error_code, "E1");
	assert_string_equal(msg->error_message, "went wrong");
	assert_int_equal(eventstream_message_header(msg, "t", &h), 0);
	assert_int_equal(h.type, EVENTSTREAM_BOOL_TRUE);
	assert_int_equal(h.integer, 1);
	assert_int_equal(eventstream_message_header(msg, "f", &h), 0);
	assert_int_equal(h.integer, 0);
	assert_int_equal(eventstream_message_header(msg, "byte", &h), 0);
	assert_int_equal(h.integer, -1);
	assert_int_equal(eventstream_message_header(msg, "short", &h), 0);
	assert_int_equal(h.integer, -2);
	assert_int_equal(eventstream_message_header(msg, "int", &h), 0);
	assert_int_equal(h.integer, 123456789);
	assert_int_equal(eventstream_message_header(msg, "long", &h), 0);
	assert_true(h.integer == INT64_C(-5000000000));
	assert_int_equal(eventstream_message_header(msg, "time", &h), 0);
	assert_int_equal(h.type, EVENTSTREAM_TIMESTAMP);
	assert_true(h.integer == INT64_C(1440938160000));
	assert_int_equal(eventstream_message_header(msg, "bytes", &h), 0);
	assert_int_equal(h.type, EVENTSTREAM_BYTE_ARRAY);
	assert_int_equal(h.value_len, 3);
	assert_memory_equal(h.value, "\x01\x00\x02", 3);
	assert_int_equal(eventstream_message_header(msg, "id", &h), 0);
	assert_int_equal(h.value_len, 16);
	assert_memory_equal(h.value, uuid, 16);
	assert_int_equal(eventstream_message_header(msg, "absent", &h), -ENOENT);
	assert_int_equal(msg->payload_len, 0);
	return 0;
}

static void test_every_header_type(void **state)
{
	struct header_block h = { .len = 0 };
	struct eventstream_decoder *d;
	struct frame f;
	int calls = 0;
	size_t i;

	(void)state;
	header_add_fixed(&h, "t", EVENTSTREAM_BOOL_TRUE, 0, 0);
	header_add_fixed(&h, "f", EVENTSTREAM_BOOL_FALSE, 0, 0);
	header_add_fixed(&h, "byte", EVENTSTREAM_BYTE, 0xff, 1);
	header_add_fixed(&h, "short", EVENTSTREAM_SHORT, 0xfffe, 2);
	header_add_fixed(&h, "int", EVENTSTREAM_INTEGER, 123456789, 4);
	header_add_fixed(&h, "long", EVENTSTREAM_LONG, (uint64_t)INT64_C(-5000000000), 8);
	header_add_fixed(&h, "time", EVENTSTREAM_TIMESTAMP, 1440938160000u, 8);
	header_put_name(&h, "bytes", EVENTSTREAM_BYTE_ARRAY);
	put_be(h.bytes + h.len, 3, 2);
	memcpy(h.bytes + h.len + 2, "\x01\x00\x02", 3);
	h.len += 5;
	header_put_name(&h, "id", EVENTSTREAM_UUID);
	for (i = 0; i < 16; i++)
		h.bytes[h.len++] = (unsigned char)i;
	header_add_string(&h, ":error-code", "E1");
	header_add_string(&h, ":error-message", "went wrong");
	frame_build(&f, &h, NULL);

	d = eventstream_new(0, check_every_type, &calls);
	assert_non_null(d);
	assert_int_equal(eventstream_feed(d, f.bytes, f.len), 0);
	assert_int_equal(calls, 1);
	eventstream_free(d);
}

/* Three frames back to back, the last one without headers. */
static size_t build_sequence(unsigned char *out)
{
	struct frame f;
	size_t len = 0;

	frame_build_event(&f, "messageStart", "{\"role\":\"assistant\"}");
	memcpy(out + len, f.bytes, f.len);
	len += f.len;
	frame_build_event(&f, "contentBlockDelta", "{\"delta\":{\"text\":\"x\"}}");
	memcpy(out + len, f.bytes, f.len);
	len += f.len;
	frame_build(&f, NULL, "tail");
	memcpy(out + len, f.bytes, f.len);
	len += f.len;
	return len;
}

static void assert_sequence_seen(const struct collector *c)
{
	assert_int_equal(c->n_seen, 3);
	assert_string_equal(c->seen[0].event_type, "messageStart");
	assert_string_equal(c->seen[0].payload, "{\"role\":\"assistant\"}");
	assert_string_equal(c->seen[1].event_type, "contentBlockDelta");
	assert_string_equal(c->seen[2].event_type, "");
	assert_string_equal(c->seen[2].payload, "tail");
}

static void test_sequence_whole(void **state)
{
	unsigned char bytes[3 * MAX_FRAME];
	struct collector c = { .n_seen = 0 };
	size_t len = build_sequence(bytes);

	(void)state;
	assert_int_equal(feed_all(bytes, len, 0, &c), 0);
	assert_sequence_seen(&c);
}

static void test_sequence_byte_by_byte(void **state)
{
	unsigned char bytes[3 * MAX_FRAME];
	struct collector c = { .n_seen = 0 };
	struct eventstream_decoder *d = eventstream_new(0, collect, &c);
	size_t len = build_sequence(bytes), i;

	(void)state;
	assert_non_null(d);
	for (i = 0; i < len; i++) {
		size_t seen_before = c.n_seen;

		assert_int_equal(eventstream_feed(d, bytes + i, 1), 0);
		/* Only the byte that completes a message empties the buffer. */
		if (c.n_seen > seen_before)
			assert_false(eventstream_pending(d));
		else
			assert_true(eventstream_pending(d));
	}
	assert_false(eventstream_pending(d));
	eventstream_free(d);
	assert_sequence_seen(&c);
}

static void test_sequence_every_split(void **state)
{
	unsigned char bytes[3 * MAX_FRAME];
	size_t len = build_sequence(bytes), split;

	(void)state;
	for (split = 0; split <= len; split++) {
		struct collector c = { .n_seen = 0 };
		struct eventstream_decoder *d = eventstream_new(0, collect, &c);

		assert_non_null(d);
		assert_int_equal(eventstream_feed(d, bytes, split), 0);
		assert_int_equal(eventstream_feed(d, bytes + split, len - split), 0);
		assert_false(eventstream_pending(d));
		eventstream_free(d);
		assert_sequence_seen(&c);
	}
}

static void test_pending_after_partial(void **state)
{
	struct collector c = { .n_seen = 0 };
	struct eventstream_decoder *d = eventstream_new(0, collect, &c);
	struct frame f;

	(void)state;
	frame_build_event(&f, "metadata", "{}");
	assert_false(eventstream_pending(d));
	assert_int_equal(eventstream_feed(d, f.bytes, 5), 0);
	assert_true(eventstream_pending(d));
	assert_int_equal(eventstream_feed(d, f.bytes + 5, f.len - 6), 0);
	assert_true(eventstream_pending(d));
	assert_int_equal(c.n_seen, 0);
	assert_int_equal(eventstream_feed(d, f.bytes + f.len - 1, 1), 0);
	assert_false(eventstream_pending(d));
	assert_int_equal(c.n_seen, 1);
	eventstream_free(d);
}

/* Feeds BAD (split at every boundary, then followed by a valid frame):
 * the decoder must fail with WANT, deliver nothing of BAD, and stay
 * failed. */
static void assert_rejected(const unsigned char *bad, size_t len, size_t max, int want)
{
	struct frame good;
	size_t split;

	frame_build_event(&good, "messageStart", "{}");
	for (split = 0; split <= len; split++) {
		struct collector c = { .n_seen = 0 };
		struct eventstream_decoder *d = eventstream_new(max, collect, &c);
		int first, second;

		assert_non_null(d);
		first = eventstream_feed(d, bad, split);
		second = eventstream_feed(d, bad + split, len - split);
		assert_true(first == want || (first == 0 && second == want));
		assert_int_equal(eventstream_feed(d, good.bytes, good.len), want);
		assert_int_equal(c.n_seen, 0);
		eventstream_free(d);
	}
}

static void test_bad_prelude_crc(void **state)
{
	struct frame f;

	(void)state;
	frame_build_event(&f, "contentBlockDelta", "{}");
	f.bytes[9] ^= 0x01;
	assert_rejected(f.bytes, f.len, 0, -EBADMSG);
}

static void test_bad_message_crc(void **state)
{
	struct frame f;

	(void)state;
	frame_build_event(&f, "contentBlockDelta", "{\"delta\":{}}");
	f.bytes[f.len - 6] ^= 0x20; /* a payload byte */
	assert_rejected(f.bytes, f.len, 0, -EBADMSG);
	frame_build_event(&f, "contentBlockDelta", "{\"delta\":{}}");
	f.bytes[f.len - 1] ^= 0x80; /* the CRC itself */
	assert_rejected(f.bytes, f.len, 0, -EBADMSG);
}

static void test_total_below_minimum(void **state)
{
	struct frame f;

	(void)state;
	frame_build_forged(&f, NULL, NULL, 15, 0);
	assert_rejected(f.bytes, f.len, 0, -EBADMSG);
	frame_build_forged(&f, NULL, NULL, 0, 0);
	put_be(f.bytes, 0, 4);
	put_be(f.bytes + 8, eventstream_crc32(0, f.bytes, 8), 4);
	assert_rejected(f.bytes, f.len, 0, -EBADMSG);
}

static void test_headers_longer_than_message(void **state)
{
	struct frame f;

	(void)state;
	frame_build_forged(&f, NULL, "abcd", 0, 5);
	assert_rejected(f.bytes, f.len, 0, -EBADMSG);
	/* headers_len near UINT32_MAX must not wrap around the check */
	frame_build_forged(&f, NULL, "abcd", 0, 0xFFFFFFF0u);
	assert_rejected(f.bytes, f.len, 0, -EBADMSG);
}

static void test_message_over_cap(void **state)
{
	struct frame f;
	struct collector c = { .n_seen = 0 };

	(void)state;
	frame_build_event(&f, "contentBlockDelta", "0123456789abcdef");
	assert_rejected(f.bytes, f.len, f.len - 1, -EMSGSIZE);
	/* exactly at the cap is fine */
	assert_int_equal(feed_all(f.bytes, f.len, f.len, &c), 0);
	assert_int_equal(c.n_seen, 1);
	/* the default cap is 1 MiB: a prelude announcing one byte more fails
	 * before anything is buffered */
	frame_build_forged(&f, NULL, NULL, 1024 * 1024 + 1, 0);
	assert_rejected(f.bytes, 12, 0, -EMSGSIZE);
	frame_build_forged(&f, NULL, NULL, 0xFFFFFFFFu, 0);
	assert_rejected(f.bytes, 12, 0, -EMSGSIZE);
}

static void test_malformed_headers(void **state)
{
	struct header_block h;
	struct frame f;

	(void)state;
	/* zero-length name */
	h.len = 0;
	h.bytes[h.len++] = 0;
	h.bytes[h.len++] = EVENTSTREAM_BOOL_TRUE;
	frame_build(&f, &h, "{}");
	assert_rejected(f.bytes, f.len, 0, -EBADMSG);

	/* unknown value type */
	h.len = 0;
	header_put_name(&h, "x", (enum eventstream_header_type)10);
	frame_build(&f, &h, "{}");
	assert_rejected(f.bytes, f.len, 0, -EBADMSG);

	/* string claiming more bytes than the header block holds */
	h.len = 0;
	header_put_name(&h, ":event-type", EVENTSTREAM_STRING);
	put_be(h.bytes + h.len, 200, 2);
	h.len += 2;
	memcpy(h.bytes + h.len, "abc", 3);
	h.len += 3;
	frame_build(&f, &h, "{}");
	assert_rejected(f.bytes, f.len, 0, -EBADMSG);

	/* fixed-size value cut by the end of the block */
	h.len = 0;
	header_put_name(&h, "n", EVENTSTREAM_LONG);
	h.bytes[h.len++] = 1;
	frame_build(&f, &h, NULL);
	assert_rejected(f.bytes, f.len, 0, -EBADMSG);

	/* a well-known header twice is ambiguous */
	h.len = 0;
	header_add_string(&h, ":message-type", "event");
	header_add_string(&h, ":message-type", "exception");
	frame_build(&f, &h, "{}");
	assert_rejected(f.bytes, f.len, 0, -EBADMSG);

	/* a well-known header with a non-string type */
	h.len = 0;
	header_add_fixed(&h, ":event-type", EVENTSTREAM_INTEGER, 7, 4);
	frame_build(&f, &h, "{}");
	assert_rejected(f.bytes, f.len, 0, -EBADMSG);
}

static void test_callback_error_sticks(void **state)
{
	struct collector c = { .n_seen = 0, .fail_with = -ECANCELED };
	struct eventstream_decoder *d = eventstream_new(0, collect, &c);
	unsigned char bytes[3 * MAX_FRAME];
	size_t len = build_sequence(bytes);

	(void)state;
	assert_int_equal(eventstream_feed(d, bytes, len), -ECANCELED);
	assert_int_equal(c.n_seen, 1); /* stopped at the first message */
	assert_int_equal(eventstream_feed(d, bytes, len), -ECANCELED);
	assert_int_equal(c.n_seen, 1);
	eventstream_free(d);
}

int main(void)
{
	static const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_crc32_check_value),
		cmocka_unit_test(test_empty_message),
		cmocka_unit_test(test_reference_frame),
		cmocka_unit_test(test_every_header_type),
		cmocka_unit_test(test_sequence_whole),
		cmocka_unit_test(test_sequence_byte_by_byte),
		cmocka_unit_test(test_sequence_every_split),
		cmocka_unit_test(test_pending_after_partial),
		cmocka_unit_test(test_bad_prelude_crc),
		cmocka_unit_test(test_bad_message_crc),
		cmocka_unit_test(test_total_below_minimum),
		cmocka_unit_test(test_headers_longer_than_message),
		cmocka_unit_test(test_message_over_cap),
		cmocka_unit_test(test_malformed_headers),
		cmocka_unit_test(test_callback_error_sticks),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
