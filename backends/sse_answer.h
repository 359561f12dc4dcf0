/* The skeleton every streamed answer shares, whatever the provider: a 2xx
 * body is either the event stream that was asked for or, from a server
 * that did not stream (or that reports an error), one plain JSON document,
 * and its first non-blank byte tells which. Events go through the SSE
 * parser as they arrive; a JSON body is kept, under its cap, until the
 * end. A stream may end without the blank line after its last event,
 * which is then dispatched at the end. The first failure sticks: every
 * later call repeats it.
 *
 * A provider's struct stream_parser starts with a struct sse_answer; the
 * provider describes its answer in a const struct sse_answer_format and
 * keeps only its own event handling. The sse_answer_parser_* functions
 * are then its struct backend hooks. Used by anthropic.c, vertex.c and
 * openai_chat.c (the openai and azure backends). */
#ifndef PROMPTFS_SSE_ANSWER_H
#define PROMPTFS_SSE_ANSWER_H

#include <stddef.h>

#include "backends/backend.h"
#include "backends/sse.h"
#include "backends/wire_util.h"

/* What one provider's answer looks like. Static data. */
struct sse_answer_format {
	const char *provider;	 /* in sentences: "Anthropic", "the provider" */
	const char *json_starts; /* the bytes that start a plain JSON body: "{" */
	const char *event_what;	 /* one event, in sentences: "an event" */
	size_t max_event_bytes;
	size_t max_json_bytes;
	/* Why an answer fails whose body ended before it was complete. */
	const char *cut_sentence;
	/* One event: NAME its event: field ("" when absent), DATA its data
	 * (NUL-terminated, LEN bytes, possibly 0). Returns 0, or a negative
	 * value with the reason in the answer's err. */
	int (*event)(struct stream_parser *p, const char *name, const char *data, size_t len);
	/* The whole body when it was plain JSON, once it has ended: DATA
	 * (NUL-terminated, LEN bytes). Returns 0, or a negative value with
	 * the reason in the answer's err. */
	int (*json_body)(struct stream_parser *p, const char *data, size_t len);
};

/* The first member of a provider's struct stream_parser. */
struct sse_answer {
	const struct sse_answer_format *format;
	const struct answer_events *ev; /* where the answer goes, */
	void *ctx;			/* and what EV's callbacks get */
	/* The error of the feed or finish call running: what the format's
	 * callbacks fill when they fail. */
	struct attempt_error *err;
	/* Set by the provider once the answer is whole: finish accepts the
	 * answer, and a last event without its blank line is not needed. */
	int complete;
	int at_eof; /* dispatching a last event that had no blank line */
	struct sse_parser *sse;
	enum body_kind kind;
	struct capped_buffer json; /* the body, when BODY_JSON */
	int event_failed;	   /* the failure came from a callback, which said why */
	struct parser_failure failure;
};

/* A new parser of SIZE bytes, zeroed but for its first member, a struct
 * sse_answer started for FORMAT and reporting to EV/CTX. SIZE is the
 * sizeof of the provider's struct stream_parser. Freed with
 * sse_answer_parser_free; NULL on allocation failure. */
struct stream_parser *sse_answer_parser_new(size_t size, const struct sse_answer_format *format,
					    const struct answer_events *ev, void *ctx);

/* The struct backend hooks of such a parser. Feed returns 0, or -EIO
 * with ERR filled (malformed data, an in-band error, a body or event over
 * its cap), -ENOMEM, or the negative value a callback returned. Finish
 * returns 0 when the provider marked the answer complete, else a negative
 * value with ERR filled (the format's cut_sentence, outcome stream_cut,
 * when nothing else failed). Free frees the parser, which must hold
 * nothing else to free; NULL is fine. */
int sse_answer_parser_feed(struct stream_parser *p, const char *data, size_t len,
			   struct attempt_error *err);
int sse_answer_parser_finish(struct stream_parser *p, struct attempt_error *err);
void sse_answer_parser_free(struct stream_parser *p);

/* For an event callback: an event that is not what the provider sends.
 * Returns -EIO with the answer's err saying SENTENCE (outcome
 * bad_response); but 0 for the last event of a body that ended without
 * its blank line, since that event was most likely cut short, which
 * finish reports. */
int sse_answer_event_malformed(struct sse_answer *a, const char *sentence);

#endif
