/* application/vnd.amazon.eventstream decoder (see eventstream.h). */
#include "backends/eventstream.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* CRC-32 with the reflected IEEE polynomial 0xEDB88320, four bits at a
 * time: entry N is N run through four rounds of the bitwise algorithm.
 * Sixteen entries keep the table short enough to check by eye. */
static const uint32_t crc32_nibble_table[16] = {
	0x00000000, 0x1db71064, 0x3b6e20c8, 0x26d930ac, 0x76dc4190, 0x6b6b51f4,
	0x4db26158, 0x5005713c, 0xedb88320, 0xf00f9344, 0xd6d6a3e8, 0xcb61b38c,
	0x9b64c2b0, 0x86d3d2d4, 0xa00ae278, 0xbdbdf21c,
};

uint32_t eventstream_crc32(uint32_t crc, const void *data, size_t len)
{
	const unsigned char *p = data;
	size_t i;

	crc = ~crc;
	for (i = 0; i < len; i++) {
		crc ^= p[i];
		crc = (crc >> 4) ^ crc32_nibble_table[crc & 0x0f];
		crc = (crc >> 4) ^ crc32_nibble_table[crc & 0x0f];
	}
	return ~crc;
}

static uint32_t read_be32(const unsigned char *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

static uint64_t read_be_unsigned(const unsigned char *p, size_t n)
{
	uint64_t v = 0;
	size_t i;

	for (i = 0; i < n; i++)
		v = v << 8 | p[i];
	return v;
}

/* Sign-extends an N-byte big-endian two's complement integer. */
static int64_t read_be_signed(const unsigned char *p, size_t n)
{
	uint64_t v = read_be_unsigned(p, n);

	if (n < 8 && (v >> (8 * n - 1)))
		v |= ~(uint64_t)0 << (8 * n);
	return (int64_t)v;
}

struct eventstream_decoder {
	size_t max_message;
	eventstream_message_cb cb;
	void *ctx;
	unsigned char *buf; /* the message being assembled */
	size_t buf_cap;
	size_t have;		/* bytes of it received */
	size_t total;		/* its length once the prelude checked out; 0 before */
	unsigned char *strings; /* NUL-terminated copies of well-known headers */
	size_t strings_cap;
	int error; /* 0, or the error it failed with, for good */
};

struct eventstream_decoder *eventstream_new(size_t max_message_bytes, eventstream_message_cb cb,
					    void *ctx)
{
	struct eventstream_decoder *d = calloc(1, sizeof(*d));

	if (!d)
		return NULL;
	d->max_message = max_message_bytes ? max_message_bytes : EVENTSTREAM_DEFAULT_MAX_MESSAGE;
	if (d->max_message < EVENTSTREAM_MIN_MESSAGE_BYTES)
		d->max_message = EVENTSTREAM_MIN_MESSAGE_BYTES;
	d->cb = cb;
	d->ctx = ctx;
	return d;
}

void eventstream_free(struct eventstream_decoder *d)
{
	if (!d)
		return;
	free(d->strings);
	free(d->buf);
	free(d);
}

int eventstream_pending(const struct eventstream_decoder *d)
{
	return d->have > 0;
}

/* Not a capped_buffer (wire_util.h), though it holds network bytes: the
 * cap is applied before any growth, to the length a message's prelude
 * announces (check_prelude refuses one over max_message), and the buffer
 * then grows once to that exact length instead of by appends. */
static int grow_buffer(unsigned char **buf, size_t *cap, size_t need)
{
	unsigned char *grown;

	if (need <= *cap)
		return 0;
	grown = realloc(*buf, need);
	if (!grown)
		return -ENOMEM;
	*buf = grown;
	*cap = need;
	return 0;
}

/* --- headers ------------------------------------------------------- */

/* Reads the header at *CURSOR (before END) into OUT and advances.
 * Returns 0, or -EBADMSG if it does not fit or has an unknown type. */
static int header_next(const unsigned char **cursor, const unsigned char *end,
		       struct eventstream_header *out)
{
	const unsigned char *p = *cursor;
	size_t name_len, fixed_len;

	name_len = *p++;
	/* Name, then its type byte. */
	if (name_len == 0 || (size_t)(end - p) < name_len + 1)
		return -EBADMSG;
	out->name = (const char *)p;
	out->name_len = name_len;
	p += name_len;
	out->type = (enum eventstream_header_type) * p++;
	out->integer = 0;

	switch (out->type) {
	case EVENTSTREAM_BOOL_TRUE:
	case EVENTSTREAM_BOOL_FALSE:
		fixed_len = 0;
		out->integer = out->type == EVENTSTREAM_BOOL_TRUE;
		break;
	case EVENTSTREAM_BYTE:
		fixed_len = 1;
		break;
	case EVENTSTREAM_SHORT:
		fixed_len = 2;
		break;
	case EVENTSTREAM_INTEGER:
		fixed_len = 4;
		break;
	case EVENTSTREAM_LONG:
	case EVENTSTREAM_TIMESTAMP:
		fixed_len = 8;
		break;
	case EVENTSTREAM_UUID:
		fixed_len = 16;
		break;
	case EVENTSTREAM_BYTE_ARRAY:
	case EVENTSTREAM_STRING:
		if (end - p < 2)
			return -EBADMSG;
		fixed_len = (size_t)read_be_unsigned(p, 2);
		p += 2;
		break;
	default:
		return -EBADMSG;
	}
	if ((size_t)(end - p) < fixed_len)
		return -EBADMSG;
	out->value = p;
	out->value_len = fixed_len;
	if ((out->type >= EVENTSTREAM_BYTE && out->type <= EVENTSTREAM_LONG) ||
	    out->type == EVENTSTREAM_TIMESTAMP)
		out->integer = read_be_signed(p, fixed_len);
	*cursor = p + fixed_len;
	return 0;
}

static int header_name_is(const struct eventstream_header *h, const char *name)
{
	return h->name_len == strlen(name) && memcmp(h->name, name, h->name_len) == 0;
}

int eventstream_message_header(const struct eventstream_message *msg, const char *name,
			       struct eventstream_header *out)
{
	const unsigned char *p = msg->headers;
	const unsigned char *end = msg->headers + msg->headers_len;

	while (p < end) {
		if (header_next(&p, end, out) < 0)
			return -ENOENT;
		if (header_name_is(out, name))
			return 0;
	}
	return -ENOENT;
}

/* The string headers a consumer dispatches on, with where they go. */
static const char **well_known_slot(struct eventstream_message *msg,
				    const struct eventstream_header *h)
{
	if (header_name_is(h, ":message-type"))
		return &msg->message_type;
	if (header_name_is(h, ":event-type"))
		return &msg->event_type;
	if (header_name_is(h, ":content-type"))
		return &msg->content_type;
	if (header_name_is(h, ":exception-type"))
		return &msg->exception_type;
	if (header_name_is(h, ":error-code"))
		return &msg->error_code;
	if (header_name_is(h, ":error-message"))
		return &msg->error_message;
	return NULL;
}

/* Walks the whole header block, so a malformed one fails before any
 * callback, and copies the well-known strings NUL-terminated. A
 * duplicate or mistyped well-known header makes the message ambiguous,
 * hence corrupt. */
static int decode_headers(struct eventstream_decoder *d, struct eventstream_message *msg)
{
	const unsigned char *p = msg->headers;
	const unsigned char *end = msg->headers + msg->headers_len;
	size_t used = 0;
	int ret;

	/* Copies never exceed the block itself plus one NUL per header. */
	ret = grow_buffer(&d->strings, &d->strings_cap, msg->headers_len + 1);
	if (ret < 0)
		return ret;

	while (p < end) {
		struct eventstream_header h;
		const char **slot;

		ret = header_next(&p, end, &h);
		if (ret < 0)
			return ret;
		msg->n_headers++;
		slot = well_known_slot(msg, &h);
		if (!slot)
			continue;
		if (*slot || h.type != EVENTSTREAM_STRING || memchr(h.value, '\0', h.value_len))
			return -EBADMSG;
		memcpy(d->strings + used, h.value, h.value_len);
		d->strings[used + h.value_len] = '\0';
		*slot = (const char *)d->strings + used;
		used += h.value_len + 1;
	}
	return 0;
}

/* --- framing ------------------------------------------------------- */

static int check_prelude(struct eventstream_decoder *d)
{
	uint32_t total = read_be32(d->buf);
	uint32_t headers_len = read_be32(d->buf + 4);
	uint32_t prelude_crc = read_be32(d->buf + 8);

	if (eventstream_crc32(0, d->buf, 8) != prelude_crc)
		return -EBADMSG;
	if (total < EVENTSTREAM_MIN_MESSAGE_BYTES ||
	    headers_len > total - EVENTSTREAM_MIN_MESSAGE_BYTES ||
	    headers_len > EVENTSTREAM_MAX_HEADERS_BYTES)
		return -EBADMSG;
	if (total > d->max_message)
		return -EMSGSIZE;
	d->total = total;
	return grow_buffer(&d->buf, &d->buf_cap, total);
}

static int deliver_message(struct eventstream_decoder *d)
{
	struct eventstream_message msg;
	uint32_t headers_len = read_be32(d->buf + 4);
	uint32_t message_crc = read_be32(d->buf + d->total - 4);
	int ret;

	if (eventstream_crc32(0, d->buf, d->total - 4) != message_crc)
		return -EBADMSG;

	memset(&msg, 0, sizeof(msg));
	msg.headers = d->buf + EVENTSTREAM_PRELUDE_BYTES;
	msg.headers_len = headers_len;
	msg.payload = msg.headers + headers_len;
	msg.payload_len = d->total - EVENTSTREAM_MIN_MESSAGE_BYTES - headers_len;
	ret = decode_headers(d, &msg);
	if (ret < 0)
		return ret;
	return d->cb ? d->cb(d->ctx, &msg) : 0;
}

int eventstream_feed(struct eventstream_decoder *d, const void *data, size_t len)
{
	const unsigned char *p = data;
	int ret = 0;

	if (d->error)
		return d->error;
	ret = grow_buffer(&d->buf, &d->buf_cap, EVENTSTREAM_PRELUDE_BYTES);
	if (ret < 0)
		goto out;

	while (len > 0) {
		size_t want = d->total ? d->total : EVENTSTREAM_PRELUDE_BYTES;
		size_t take = want - d->have;

		if (take > len)
			take = len;
		memcpy(d->buf + d->have, p, take);
		d->have += take;
		p += take;
		len -= take;
		if (d->have < want)
			break;

		if (!d->total) {
			ret = check_prelude(d);
			if (ret < 0)
				goto out;
			continue;
		}
		ret = deliver_message(d);
		d->have = 0;
		d->total = 0;
		if (ret < 0)
			goto out;
	}
out:
	if (ret < 0)
		d->error = ret;
	return ret;
}
