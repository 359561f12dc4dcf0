/* libFuzzer target for the answer parsers behind each backend table.
 *
 * Input: byte 0 picks the backend (and, in its high bits, whether the
 * text callback refuses text at some point); byte 1 says how many split
 * bytes follow; those give the sizes of successive parser_feed() calls
 * over the rest, which is the body. parser_finish() ends every run.
 *
 * The callbacks check what the interface promises: strings are non-NULL
 * and NUL-terminated, and nothing is reported once a call has failed or
 * after the text callback refused. The body is also parsed whole, and
 * must give the same text and outcome as when split. */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "backends/backend.h"

static const struct backend *const backends[] = {
	&backend_openai, &backend_azure, &backend_anthropic, &backend_vertex, &backend_bedrock,
};

struct observer {
	uint64_t text_hash;
	size_t text_bytes;
	int failed;	  /* a feed or finish call returned an error */
	int refuse_after; /* > 0: the text callback fails on that call */
	int text_calls;
	int refused; /* the text callback returned an error */
};

static uint64_t hash_bytes(uint64_t h, const void *data, size_t len)
{
	const unsigned char *p = data;
	size_t i;

	for (i = 0; i < len; i++)
		h = (h ^ p[i]) * 1099511628211ULL;
	return h;
}

static int on_text(void *ctx, const char *bytes, size_t len)
{
	struct observer *o = ctx;

	if (!bytes || o->failed || o->refused)
		abort();
	o->text_hash = hash_bytes(o->text_hash, bytes, len);
	o->text_bytes += len;
	o->text_calls++;
	if (o->refuse_after > 0 && o->text_calls == o->refuse_after) {
		o->refused = 1;
		return -ECANCELED;
	}
	return 0;
}

static void on_usage(void *ctx, long input_tokens, long output_tokens)
{
	struct observer *o = ctx;

	(void)input_tokens;
	(void)output_tokens;
	if (o->failed)
		abort();
}

static void check_string(struct observer *o, const char *s)
{
	if (!s || o->failed)
		abort();
	(void)strlen(s);
}

static void on_finish_reason(void *ctx, enum finish_reason reason, const char *word)
{
	if ((unsigned)reason > FINISH_OTHER)
		abort();
	if (word)
		check_string(ctx, word);
}

static void on_request_id(void *ctx, const char *id)
{
	check_string(ctx, id);
}

static const struct answer_events events = {
	.text = on_text,
	.usage = on_usage,
	.finish_reason = on_finish_reason,
	.request_id = on_request_id,
};

static void check_error(const struct attempt_error *err)
{
	if ((unsigned)err->outcome >= OUTCOME_COUNT ||
	    memchr(err->message, '\0', sizeof(err->message)) == NULL)
		abort();
	if (err->outcome == OUTCOME_OK || err->message[0] == '\0')
		abort();
	if (strchr(err->message, '\n') || strchr(err->message, '\r'))
		abort(); /* .error's first line must stay one */
}

/* Parses BODY split as SPLITS says. Returns finish's (or the failed
 * feed's) value. */
static int run(const struct backend *be, const uint8_t *splits, size_t n_splits,
	       const uint8_t *body, size_t len, struct observer *o)
{
	struct stream_parser *p;
	struct attempt_error err;
	size_t pos = 0;
	size_t k = 0;
	int last_empty = 0;
	int rc = 0;

	o->text_hash = 14695981039346656037ULL;
	p = be->parser_new(&events, o);
	if (!p)
		abort();
	while (pos < len) {
		size_t n = n_splits ? splits[k++ % n_splits] : len - pos;
		char *piece;

		if (n == 0 && last_empty)
			n = 1;
		last_empty = n == 0;
		if (n > len - pos)
			n = len - pos;
		/* An exact-size copy lets the sanitizer see reads past a chunk. */
		piece = malloc(n ? n : 1);
		memcpy(piece, body + pos, n);
		memset(&err, 0, sizeof(err));
		rc = be->parser_feed(p, piece, n, &err);
		free(piece);
		pos += n;
		if (rc < 0) {
			if (rc != -EIO && !o->refused)
				abort();
			check_error(&err);
			o->failed = 1;
			break;
		}
	}
	if (rc == 0) {
		memset(&err, 0, sizeof(err));
		rc = be->parser_finish(p, &err);
		if (rc < 0) {
			check_error(&err);
			o->failed = 1;
		}
	}
	if (rc < 0) {
		struct attempt_error again;
		int rc2;

		/* Every later call repeats the failure and reports nothing. */
		memset(&again, 0, sizeof(again));
		rc2 = be->parser_feed(p, "data: {}\n\n", 10, &again);
		if (rc2 >= 0)
			abort();
		check_error(&again);
		memset(&again, 0, sizeof(again));
		rc2 = be->parser_finish(p, &again);
		if (rc2 >= 0)
			abort();
		check_error(&again);
	} else if (o->refused) {
		abort(); /* refused text, yet the answer counted as complete */
	}
	be->parser_free(p);
	return rc;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t len);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t len)
{
	const struct backend *be;
	struct observer whole, split;
	const uint8_t *splits;
	size_t n_splits;
	int rc_whole, rc_split;
	int refuse_after;

	if (len < 2)
		return 0;
	be = backends[(data[0] & 0x0f) % (sizeof(backends) / sizeof(backends[0]))];
	refuse_after = data[0] >> 4 >= 12 ? (data[0] >> 4) - 11 : 0;
	n_splits = data[1] % 9;
	if (len < 2 + n_splits)
		return 0;
	splits = data + 2;
	data += 2 + n_splits;
	len -= 2 + n_splits;

	memset(&whole, 0, sizeof(whole));
	memset(&split, 0, sizeof(split));
	whole.refuse_after = refuse_after;
	split.refuse_after = refuse_after;
	rc_whole = run(be, NULL, 0, data, len, &whole);
	rc_split = run(be, splits, n_splits, data, len, &split);
	/* Text before a failure may depend on where the stream broke; a
	 * complete answer may not. */
	if ((rc_whole == 0) != (rc_split == 0))
		abort();
	if (rc_whole == 0 &&
	    (whole.text_hash != split.text_hash || whole.text_bytes != split.text_bytes))
		abort();
	return 0;
}
