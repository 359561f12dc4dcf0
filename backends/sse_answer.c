/* The shared skeleton of streamed answers (see sse_answer.h). */
#include "backends/sse_answer.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* A provider's parser starts with its struct sse_answer (C11 6.7.2.1:
 * a pointer to a struct, converted, points to its first member). */
static struct sse_answer *answer_of(struct stream_parser *p)
{
	return (struct sse_answer *)(void *)p;
}

static struct stream_parser *parser_of(struct sse_answer *a)
{
	return (struct stream_parser *)(void *)a;
}

static int on_sse_event(void *ctx, const char *event, const char *data, size_t len)
{
	struct sse_answer *a = ctx;
	int rc;

	rc = a->format->event(parser_of(a), event, data, len);
	if (rc < 0)
		a->event_failed = 1;
	return rc;
}

struct stream_parser *sse_answer_parser_new(size_t size, const struct sse_answer_format *format,
					    const struct answer_events *ev, void *ctx)
{
	struct sse_answer *a;

	if (size < sizeof(*a))
		return NULL;
	a = calloc(1, size);
	if (!a)
		return NULL;
	a->format = format;
	a->ev = ev;
	a->ctx = ctx;
	capped_buffer_init(&a->json, format->max_json_bytes);
	a->sse = sse_new(format->max_event_bytes, on_sse_event, a);
	if (!a->sse) {
		free(a);
		return NULL;
	}
	return parser_of(a);
}

void sse_answer_parser_free(struct stream_parser *p)
{
	struct sse_answer *a = answer_of(p);

	if (!a)
		return;
	sse_free(a->sse);
	capped_buffer_release(&a->json);
	free(a);
}

/* The start of a feed or finish call: the callbacks report into ERR,
 * and a parser that failed says so again. */
static int call_begin(struct sse_answer *a, struct attempt_error *err)
{
	a->err = err;
	return parser_failure_repeat(&a->failure, err);
}

int sse_answer_parser_feed(struct stream_parser *p, const char *data, size_t len,
			   struct attempt_error *err)
{
	struct sse_answer *a = answer_of(p);
	const struct sse_answer_format *f = a->format;
	size_t skipped;
	int rc;

	rc = call_begin(a, err);
	if (rc)
		return rc;
	if (a->kind == BODY_UNKNOWN) {
		skipped = body_kind_detect(data, len, f->json_starts, &a->kind);
		data += skipped;
		len -= skipped;
	}
	if (a->kind == BODY_JSON)
		rc = capped_buffer_append(&a->json, data, len);
	else if (len > 0)
		rc = sse_feed(a->sse, data, len);
	if (rc >= 0)
		return 0;
	if (a->kind == BODY_JSON)
		answer_overflow_explain(rc, f->provider, "a JSON answer", f->max_json_bytes, err);
	else if (!a->event_failed)
		answer_overflow_explain(rc, f->provider, f->event_what, f->max_event_bytes, err);
	return parser_failure_remember(&a->failure, rc == -E2BIG ? -EIO : rc, err);
}

int sse_answer_parser_finish(struct stream_parser *p, struct attempt_error *err)
{
	struct sse_answer *a = answer_of(p);
	int rc;

	rc = call_begin(a, err);
	if (rc)
		return rc;
	if (a->kind == BODY_JSON) {
		rc = a->format->json_body(p, a->json.data, a->json.len);
		if (rc < 0)
			return parser_failure_remember(&a->failure, rc, err);
	} else if (!a->complete && sse_pending(a->sse)) {
		/* The stream may end without the blank line after its last
		 * event: dispatch what is there. */
		a->at_eof = 1;
		rc = sse_feed(a->sse, "\n\n", 2);
		if (rc < 0 && a->event_failed)
			return parser_failure_remember(&a->failure, rc, err);
	}
	if (a->complete)
		return 0;
	attempt_error_set(err, OUTCOME_STREAM_CUT, "%s", a->format->cut_sentence);
	return parser_failure_remember(&a->failure, -EIO, err);
}

int sse_answer_event_malformed(struct sse_answer *a, const char *sentence)
{
	/* A last event cut short is a cut stream, told by finish. */
	if (a->at_eof)
		return 0;
	attempt_error_set(a->err, OUTCOME_BAD_RESPONSE, "%s", sentence);
	return -EIO;
}
