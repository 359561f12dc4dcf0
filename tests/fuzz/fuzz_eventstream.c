/* libFuzzer target for backends/eventstream.c: the first byte picks the
 * message cap and the chunk size; the rest is fed as frames. The
 * messages decoded must not depend on how the bytes were split. */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "backends/eventstream.h"

struct digest {
	uint64_t hash;
	size_t n_messages;
};

static uint64_t hash_bytes(uint64_t h, const void *data, size_t len)
{
	const unsigned char *p = data;
	size_t i;

	for (i = 0; i < len; i++)
		h = (h ^ p[i]) * 1099511628211ULL;
	return h;
}

static uint64_t hash_string(uint64_t h, const char *s)
{
	return s ? hash_bytes(h, s, strlen(s) + 1) : hash_bytes(h, "-", 1);
}

static int on_message(void *ctx, const struct eventstream_message *msg)
{
	struct digest *d = ctx;
	struct eventstream_header h;

	d->hash = hash_string(d->hash, msg->message_type);
	d->hash = hash_string(d->hash, msg->event_type);
	d->hash = hash_string(d->hash, msg->content_type);
	d->hash = hash_string(d->hash, msg->exception_type);
	d->hash = hash_string(d->hash, msg->error_code);
	d->hash = hash_string(d->hash, msg->error_message);
	d->hash = hash_bytes(d->hash, msg->headers, msg->headers_len);
	d->hash = hash_bytes(d->hash, msg->payload, msg->payload_len);
	if (eventstream_message_header(msg, ":message-type", &h) == 0) {
		d->hash = hash_bytes(d->hash, h.name, h.name_len);
		d->hash = hash_bytes(d->hash, h.value, h.value_len);
	}
	if (eventstream_message_header(msg, "x", &h) == 0)
		d->hash = hash_bytes(d->hash, h.value, h.value_len);
	d->n_messages++;
	return 0;
}

static int run(const uint8_t *data, size_t len, size_t cap, size_t chunk, struct digest *d,
	       int *pending)
{
	struct eventstream_decoder *dec;
	size_t pos = 0;
	int rc = 0;

	memset(d, 0, sizeof(*d));
	d->hash = 14695981039346656037ULL;
	dec = eventstream_new(cap, on_message, d);
	if (!dec)
		abort();
	while (pos < len && rc == 0) {
		size_t n = len - pos < chunk ? len - pos : chunk;
		unsigned char *piece = malloc(n ? n : 1);

		memcpy(piece, data + pos, n);
		rc = eventstream_feed(dec, piece, n);
		free(piece);
		pos += n;
	}
	if (rc < 0 && eventstream_feed(dec, "x", 1) != rc)
		abort(); /* failures are final */
	*pending = rc == 0 ? eventstream_pending(dec) : 0;
	eventstream_free(dec);
	return rc;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t len);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t len)
{
	struct digest whole, split;
	int pending_whole, pending_split;
	size_t cap, chunk;
	int rc_whole, rc_split;

	if (len < 1)
		return 0;
	cap = (data[0] & 0x80) ? (size_t)(data[0] & 0x7f) * 4 : 0;
	chunk = (size_t)(data[0] & 0x0f) + 1;
	data++;
	len--;
	rc_whole = run(data, len, cap, len ? len : 1, &whole, &pending_whole);
	rc_split = run(data, len, cap, chunk, &split, &pending_split);
	if (rc_whole != rc_split || whole.n_messages != split.n_messages ||
	    whole.hash != split.hash || pending_whole != pending_split)
		abort();
	return 0;
}
