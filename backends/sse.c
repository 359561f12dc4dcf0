/* Incremental Server-Sent Events parser (see sse.h).
 *
 * Bytes are cut into lines as they arrive; only the current line and the
 * current event are buffered, both bounded by the cap given to sse_new().
 * A line end may be \n, \r\n or \r, and a \r\n pair may straddle two
 * sse_feed() calls, so a trailing \r is remembered until the next byte
 * shows whether it was followed by \n. */
#include "backends/sse.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "backends/wire_util.h"

struct sse_parser {
	size_t max_event_bytes;
	sse_event_cb cb;
	void *ctx;

	/* Their caps move: see buf_append. */
	struct capped_buffer line;  /* the line being received, no line end */
	struct capped_buffer data;  /* data: values of the current event, joined with \n */
	struct capped_buffer event; /* event: value of the current event */
	int has_data;		    /* at least one data: line in the current event */
	int after_cr;		    /* the last byte seen was \r: a \n next is the same line end */
	int first_line_done;	    /* a byte order mark is only allowed before the first line */
	int failed;		    /* sticky error: the stream cannot be resynchronised */
};

/* Appends to BUF under CAP. The line's cap is the event's; the event's
 * two buffers share theirs, so each one's is what the other leaves. */
static int buf_append(struct capped_buffer *buf, const char *bytes, size_t len, size_t cap)
{
	buf->cap = cap;
	return capped_buffer_append(buf, bytes, len);
}

struct sse_parser *sse_new(size_t max_event_bytes, sse_event_cb cb, void *ctx)
{
	struct sse_parser *p;

	p = calloc(1, sizeof(*p));
	if (!p)
		return NULL;
	p->max_event_bytes = max_event_bytes;
	p->cb = cb;
	p->ctx = ctx;
	return p;
}

void sse_free(struct sse_parser *p)
{
	if (!p)
		return;
	capped_buffer_release(&p->line);
	capped_buffer_release(&p->data);
	capped_buffer_release(&p->event);
	free(p);
}

int sse_pending(const struct sse_parser *p)
{
	return p->line.len > 0 || p->has_data || p->event.len > 0;
}

static void event_reset(struct sse_parser *p)
{
	p->data.len = 0;
	p->event.len = 0;
	p->has_data = 0;
}

static int event_dispatch(struct sse_parser *p)
{
	int rc = 0;

	/* An event made only of event:, id: or unknown fields carries
	 * nothing for us. */
	if (p->has_data)
		rc = p->cb(p->ctx, p->event.len ? p->event.data : "",
			   p->data.len ? p->data.data : "", p->data.len);
	event_reset(p);
	return rc;
}

/* The event's two buffers share one cap, so the remaining room for one
 * of them is the cap minus what the other holds. */
static size_t event_room(const struct sse_parser *p, const struct capped_buffer *other)
{
	return p->max_event_bytes - other->len;
}

static int field_apply(struct sse_parser *p, const char *name, size_t name_len, const char *value,
		       size_t value_len)
{
	int rc = 0;

	if (name_len == 4 && memcmp(name, "data", 4) == 0) {
		if (p->has_data) {
			rc = buf_append(&p->data, "\n", 1, event_room(p, &p->event));
			if (rc < 0)
				goto out;
		}
		rc = buf_append(&p->data, value, value_len, event_room(p, &p->event));
		if (rc < 0)
			goto out;
		p->has_data = 1;
	} else if (name_len == 5 && memcmp(name, "event", 5) == 0) {
		p->event.len = 0;
		rc = buf_append(&p->event, value, value_len, event_room(p, &p->data));
	}
	/* id:, retry: and unknown fields do not matter to a client that
	 * never reconnects with Last-Event-ID. */
out:
	return rc;
}

static int line_process(struct sse_parser *p)
{
	const char *line = p->line.data;
	size_t len = p->line.len;
	const char *colon;
	const char *value;
	size_t name_len;
	size_t value_len;
	int rc = 0;

	if (!p->first_line_done) {
		p->first_line_done = 1;
		if (len >= 3 && memcmp(line, "\xEF\xBB\xBF", 3) == 0) {
			line += 3;
			len -= 3;
		}
	}
	if (len == 0) {
		rc = event_dispatch(p);
		goto out;
	}
	if (line[0] == ':')
		goto out; /* a comment, often a keep-alive */

	colon = memchr(line, ':', len);
	if (colon) {
		name_len = (size_t)(colon - line);
		value = colon + 1;
		value_len = len - name_len - 1;
		if (value_len > 0 && value[0] == ' ') {
			value++;
			value_len--;
		}
	} else {
		name_len = len;
		value = "";
		value_len = 0;
	}
	rc = field_apply(p, line, name_len, value, value_len);
out:
	p->line.len = 0;
	return rc;
}

static size_t line_end_find(const char *data, size_t len)
{
	size_t i;

	for (i = 0; i < len; i++) {
		if (data[i] == '\n' || data[i] == '\r')
			break;
	}
	return i;
}

int sse_feed(struct sse_parser *p, const char *data, size_t len)
{
	size_t pos = 0;
	size_t span;
	int rc = 0;

	if (p->failed) {
		rc = p->failed;
		goto out;
	}
	while (pos < len) {
		if (p->after_cr) {
			p->after_cr = 0;
			if (data[pos] == '\n') {
				pos++;
				continue;
			}
		}
		span = line_end_find(data + pos, len - pos);
		rc = buf_append(&p->line, data + pos, span, p->max_event_bytes);
		if (rc < 0)
			goto fail;
		pos += span;
		if (pos == len)
			break; /* the line continues in a later chunk */
		p->after_cr = data[pos] == '\r';
		pos++;
		rc = line_process(p);
		if (rc < 0)
			goto fail;
	}
	goto out;
fail:
	p->failed = rc;
out:
	return rc;
}
