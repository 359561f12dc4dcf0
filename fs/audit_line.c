/* The text of an audit line (see audit_line.h). */
#include "fs/audit_line.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backends/utf8.h"

size_t audit_json_escape(const char *in, size_t len, int final, char *out, size_t *used)
{
	static const char hex[] = "0123456789abcdef";
	size_t i = 0, o = 0;

	while (i < len) {
		unsigned char c = (unsigned char)in[i];
		int n = utf8_sequence_length(in + i, len - i);

		if (n < 0 && !final)
			break; /* the rest of this character comes in the next piece */
		if (n <= 0) {
			memcpy(out + o, "\\ufffd", 6);
			o += 6;
			i++;
			continue;
		}
		if (n > 1) {
			memcpy(out + o, in + i, (size_t)n);
			o += (size_t)n;
			i += (size_t)n;
			continue;
		}
		if (c == '"' || c == '\\') {
			out[o++] = '\\';
			out[o++] = (char)c;
		} else if (c == '\n') {
			out[o++] = '\\';
			out[o++] = 'n';
		} else if (c == '\t') {
			out[o++] = '\\';
			out[o++] = 't';
		} else if (c == '\r') {
			out[o++] = '\\';
			out[o++] = 'r';
		} else if (c < 0x20) {
			memcpy(out + o, "\\u00", 4);
			out[o + 4] = hex[c >> 4];
			out[o + 5] = hex[c & 15];
			o += 6;
		} else {
			out[o++] = (char)c;
		}
		i++;
	}
	*used = i;
	return o;
}

void audit_format_usd(double usd, char *buf, size_t size)
{
	char *end;

	if (!isfinite(usd) || size < 2) {
		snprintf(buf, size, "0");
		return;
	}
	snprintf(buf, size, "%.10f", usd);
	if (!strchr(buf, '.'))
		return;
	end = buf + strlen(buf) - 1;
	while (*end == '0')
		*end-- = '\0';
	if (*end == '.')
		*end = '\0';
	if (!strcmp(buf, "-0"))
		strcpy(buf, "0");
}

/* A growing line; ERR once an allocation failed. */
struct line {
	char *text;
	size_t len, cap;
	int err;
};

static void put(struct line *l, const char *s, size_t n)
{
	if (l->err)
		return;
	if (l->len + n + 1 > l->cap) {
		size_t cap = l->cap ? l->cap : 512;
		char *grown;

		while (cap < l->len + n + 1)
			cap *= 2;
		grown = realloc(l->text, cap);
		if (!grown) {
			l->err = 1;
			return;
		}
		l->text = grown;
		l->cap = cap;
	}
	memcpy(l->text + l->len, s, n);
	l->len += n;
	l->text[l->len] = '\0';
}

static void put_str(struct line *l, const char *s)
{
	put(l, s, strlen(s));
}

/* ,"KEY": (or {"KEY": for the first) */
static void put_key(struct line *l, const char *key)
{
	put_str(l, l->len ? ",\"" : "{\"");
	put_str(l, key);
	put_str(l, "\":");
}

static void put_string(struct line *l, const char *key, const char *value)
{
	size_t n, used;
	char *escaped;

	put_key(l, key);
	if (!value) {
		put_str(l, "null");
		return;
	}
	n = strlen(value);
	escaped = malloc(AUDIT_ESCAPE_MAX(n) + 1);
	if (!escaped) {
		l->err = 1;
		return;
	}
	n = audit_json_escape(value, n, 1, escaped, &used);
	put_str(l, "\"");
	put(l, escaped, n);
	put_str(l, "\"");
	free(escaped);
}

static void put_integer(struct line *l, const char *key, long long value, int known)
{
	char buf[32];

	put_key(l, key);
	snprintf(buf, sizeof(buf), "%lld", value);
	put_str(l, known ? buf : "null");
}

char *audit_line_head(const struct audit_record *r, size_t *len)
{
	struct line l = { 0 };
	char number[64];

	put_string(&l, "time", r->time);
	put_key(&l, "journal_id");
	snprintf(number, sizeof(number), "%" PRIu64, r->journal_id);
	put_str(&l, r->journal_id ? number : "null");
	put_string(&l, "submitted", r->submitted);
	put_string(&l, "outcome", r->outcome);
	put_string(&l, "errno", r->errno_name);
	put_string(&l, "reason", r->reason);
	put_integer(&l, "uid", r->uid, r->uid >= 0);
	put_integer(&l, "pid", r->pid, r->pid >= 0);
	put_string(&l, "path", r->path);
	put_string(&l, "route", r->route);
	put_key(&l, "attempts");
	if (r->attempts) {
		char *attempts = json_dumps(r->attempts,
					    JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_ENCODE_ANY);

		if (attempts)
			put_str(&l, attempts);
		else
			l.err = 1;
		free(attempts);
	} else {
		put_str(&l, "[]");
	}
	put_key(&l, "tokens");
	if (r->has_tokens) {
		snprintf(number, sizeof(number), "{\"input\":%lld,\"output\":%lld}",
			 r->input_tokens, r->output_tokens);
		put_str(&l, number);
	} else {
		put_str(&l, "null");
	}
	put_key(&l, "cost_usd");
	audit_format_usd(r->cost_usd, number, sizeof(number));
	put_str(&l, r->has_cost && isfinite(r->cost_usd) ? number : "null");
	put_string(&l, "prompt_sha256", r->prompt_sha256);
	put_string(&l, "response_sha256", r->response_sha256);
	if (l.err) {
		free(l.text);
		return NULL;
	}
	*len = l.len;
	return l.text;
}

/* Whether P (with END) starts with S; moves P past it. */
static int skip(const char **p, const char *end, const char *s)
{
	size_t n = strlen(s);

	if ((size_t)(end - *p) < n || memcmp(*p, s, n) != 0)
		return 0;
	*p += n;
	return 1;
}

/* A quoted time ("…Z", 20 characters) into OUT, or null (OUT empty). */
static int read_time(const char **p, const char *end, char out[AUDIT_TIME_SIZE])
{
	out[0] = '\0';
	if (skip(p, end, "null"))
		return 0;
	if (end - *p < AUDIT_TIME_SIZE + 1 || (*p)[0] != '"' || (*p)[AUDIT_TIME_SIZE] != '"')
		return -1;
	memcpy(out, *p + 1, AUDIT_TIME_SIZE - 1);
	out[AUDIT_TIME_SIZE - 1] = '\0';
	if (memchr(out, '"', AUDIT_TIME_SIZE - 1) || memchr(out, '\\', AUDIT_TIME_SIZE - 1))
		return -1;
	*p += AUDIT_TIME_SIZE + 1;
	return 0;
}

int audit_line_key(const char *line, size_t len, uint64_t *journal_id,
		   char submitted[AUDIT_TIME_SIZE])
{
	const char *p = line, *end = line + len;
	char time[AUDIT_TIME_SIZE];
	uint64_t id = 0;

	if (!skip(&p, end, "{\"time\":") || read_time(&p, end, time) < 0 || !time[0] ||
	    !skip(&p, end, ",\"journal_id\":"))
		return -1;
	if (!skip(&p, end, "null")) {
		if (p == end || *p < '1' || *p > '9')
			return -1;
		while (p < end && *p >= '0' && *p <= '9') {
			if (id > (UINT64_MAX - 9) / 10)
				return -1;
			id = id * 10 + (uint64_t)(*p++ - '0');
		}
	}
	if (!skip(&p, end, ",\"submitted\":") || read_time(&p, end, submitted) < 0 ||
	    !skip(&p, end, ","))
		return -1;
	*journal_id = id;
	return 0;
}
