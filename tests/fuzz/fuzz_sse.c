/* libFuzzer target for backends/sse.c: the first byte picks the event cap,
 * the second how the rest is split into sse_feed() calls. Whatever the
 * split, the same events must come out. */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "backends/sse.h"

struct digest {
	uint64_t hash;
	size_t n_events;
};

static uint64_t hash_bytes(uint64_t h, const void *data, size_t len)
{
	const unsigned char *p = data;
	size_t i;

	for (i = 0; i < len; i++)
		h = (h ^ p[i]) * 1099511628211ULL;
	return h;
}

static int on_event(void *ctx, const char *event, const char *data, size_t data_len)
{
	struct digest *d = ctx;

	if (!event || !data || strlen(data) > data_len || data[data_len] != '\0')
		abort();
	d->hash = hash_bytes(d->hash, event, strlen(event) + 1);
	d->hash = hash_bytes(d->hash, data, data_len + 1);
	d->n_events++;
	return 0;
}

static int run(const uint8_t *data, size_t len, size_t cap, size_t chunk, struct digest *d,
	       int *pending)
{
	struct sse_parser *p;
	size_t pos = 0;
	int rc = 0;

	memset(d, 0, sizeof(*d));
	d->hash = 14695981039346656037ULL;
	p = sse_new(cap, on_event, d);
	if (!p)
		abort();
	while (pos < len && rc == 0) {
		size_t n = len - pos < chunk ? len - pos : chunk;
		char *piece = malloc(n ? n : 1);

		/* Exact-size copies let the sanitizer see reads past a chunk. */
		memcpy(piece, data + pos, n);
		rc = sse_feed(p, piece, n);
		free(piece);
		pos += n;
	}
	if (rc < 0 && sse_feed(p, "\n", 1) != rc)
		abort(); /* failures are sticky */
	*pending = rc == 0 ? sse_pending(p) : 0;
	sse_free(p);
	return rc;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t len);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t len)
{
	struct digest whole, split;
	int pending_whole, pending_split;
	size_t cap, chunk;
	int rc_whole, rc_split;

	if (len < 2)
		return 0;
	cap = data[0] < 128 ? (size_t)data[0] + 1 : 65536;
	chunk = (size_t)data[1] % 17 + 1;
	data += 2;
	len -= 2;
	rc_whole = run(data, len, cap, len ? len : 1, &whole, &pending_whole);
	rc_split = run(data, len, cap, chunk, &split, &pending_split);
	if (rc_whole != rc_split)
		abort();
	if (rc_whole == 0 && (whole.hash != split.hash || whole.n_events != split.n_events ||
			      pending_whole != pending_split))
		abort();
	return 0;
}
