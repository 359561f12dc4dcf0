/* Incremental decoder of application/vnd.amazon.eventstream, the binary
 * framing of Bedrock's streaming answers.
 *
 * A message is a 12-byte prelude (total length, headers length, CRC-32 of
 * those 8 bytes), typed headers, a payload and a CRC-32 of everything
 * before it; integers are big-endian. Bytes may be fed split anywhere.
 * Memory is bounded: one message longer than the cap fails the stream.
 * Any failure is final: the decoder answers every later feed with the
 * same error, because after a corrupt frame no later boundary can be
 * trusted. */
#ifndef PROMPTFS_EVENTSTREAM_H
#define PROMPTFS_EVENTSTREAM_H

#include <stddef.h>
#include <stdint.h>

#define EVENTSTREAM_PRELUDE_BYTES 12
#define EVENTSTREAM_MIN_MESSAGE_BYTES 16 /* prelude + message CRC */
#define EVENTSTREAM_MAX_HEADERS_BYTES (128 * 1024)
#define EVENTSTREAM_DEFAULT_MAX_MESSAGE (1024 * 1024)

enum eventstream_header_type {
	EVENTSTREAM_BOOL_TRUE = 0,
	EVENTSTREAM_BOOL_FALSE = 1,
	EVENTSTREAM_BYTE = 2,
	EVENTSTREAM_SHORT = 3,
	EVENTSTREAM_INTEGER = 4,
	EVENTSTREAM_LONG = 5,
	EVENTSTREAM_BYTE_ARRAY = 6,
	EVENTSTREAM_STRING = 7,
	EVENTSTREAM_TIMESTAMP = 8, /* milliseconds since the epoch */
	EVENTSTREAM_UUID = 9,
};

/* One header, pointing into the message being delivered (valid only
 * during the callback). NAME and VALUE are not NUL-terminated. */
struct eventstream_header {
	const char *name;
	size_t name_len;
	enum eventstream_header_type type;
	const unsigned char *value; /* strings / byte arrays: the bytes after the length */
	size_t value_len;
	int64_t integer; /* bools (1/0), byte, short, integer, long, timestamp */
};

/* One complete, CRC-checked message. Everything points into decoder
 * memory and is valid only during the callback. The well-known string
 * headers are NUL-terminated copies, NULL when absent. */
struct eventstream_message {
	const char *message_type;     /* ":message-type": event, exception, error */
	const char *event_type;	      /* ":event-type" */
	const char *content_type;     /* ":content-type" */
	const char *exception_type;   /* ":exception-type" */
	const char *error_code;	      /* ":error-code" */
	const char *error_message;    /* ":error-message" */
	const unsigned char *headers; /* raw header block, already validated */
	size_t headers_len;
	size_t n_headers;
	const unsigned char *payload;
	size_t payload_len;
};

/* Called once per complete message. Return 0 to go on, or a negative
 * errno to stop: eventstream_feed() returns it and the decoder fails. */
typedef int (*eventstream_message_cb)(void *ctx, const struct eventstream_message *msg);

struct eventstream_decoder;

/* A new decoder; MAX_MESSAGE_BYTES caps one message (0: the default,
 * 1 MiB). Caller frees with eventstream_free(). NULL on allocation
 * failure. */
struct eventstream_decoder *eventstream_new(size_t max_message_bytes, eventstream_message_cb cb,
					    void *ctx);

/* Feeds LEN bytes. Returns 0, or fails for good with -EBADMSG (bad CRC,
 * impossible lengths, malformed headers), -EMSGSIZE (a message over the
 * cap), -ENOMEM, or the callback's negative value. */
int eventstream_feed(struct eventstream_decoder *d, const void *data, size_t len);

/* Non-zero when bytes of an unfinished message are buffered: a stream
 * ending now was cut inside a message. */
int eventstream_pending(const struct eventstream_decoder *d);

void eventstream_free(struct eventstream_decoder *d);

/* Looks up header NAME of MSG. Returns 0 and fills OUT, or -ENOENT. */
int eventstream_message_header(const struct eventstream_message *msg, const char *name,
			       struct eventstream_header *out);

/* CRC-32 (IEEE 802.3, the zlib one) of LEN bytes, continuing from CRC
 * (0 to start): eventstream_crc32(0, "123456789", 9) == 0xCBF43926. */
uint32_t eventstream_crc32(uint32_t crc, const void *data, size_t len);

#endif
