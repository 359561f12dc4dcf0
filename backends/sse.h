/* Incremental Server-Sent Events parser (text/event-stream), shared by
 * the openai, azure, anthropic and vertex backends.
 *
 * Accepts \n, \r\n and \r line ends, comments, multi-line data, and input
 * split at any byte. Memory is bounded: a line or an event longer than
 * the cap fails the parse. */
#ifndef PROMPTFS_SSE_H
#define PROMPTFS_SSE_H

#include <stddef.h>

/* Called once per complete event. EVENT is the event: field ("" when
 * absent), DATA the joined data: lines (NUL-terminated, DATA_LEN bytes).
 * Return 0 to go on, or a negative value to stop; sse_feed returns it. */
typedef int (*sse_event_cb)(void *ctx, const char *event, const char *data, size_t data_len);

struct sse_parser;

/* A new parser; MAX_EVENT_BYTES caps one event. Caller frees with
 * sse_free. NULL on allocation failure. */
struct sse_parser *sse_new(size_t max_event_bytes, sse_event_cb cb, void *ctx);

/* Feeds bytes. Returns 0, -E2BIG when an event exceeds the cap, -ENOMEM,
 * or the callback's negative value. */
int sse_feed(struct sse_parser *p, const char *data, size_t len);

/* Non-zero when bytes of an unfinished event are buffered (a stream that
 * ends now was cut mid-event). */
int sse_pending(const struct sse_parser *p);

void sse_free(struct sse_parser *p);

#endif
