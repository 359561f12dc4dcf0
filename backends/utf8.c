/* UTF-8 decoding and cutting (see utf8.h). */
#include "backends/utf8.h"

#include <string.h>

/* A continuation byte: 10xxxxxx. */
static int is_continuation(unsigned char c)
{
	return (c & 0xC0) == 0x80;
}

int utf8_sequence_length(const char *s, size_t avail)
{
	const unsigned char *u = (const unsigned char *)s;
	unsigned char lo = 0x80; /* the range of the second byte; later ones */
	unsigned char hi = 0xBF; /* are always 80..BF */
	int need;
	int i;

	if (u[0] < 0x80)
		return 1;
	if (u[0] >= 0xC2 && u[0] <= 0xDF) {
		need = 2;
	} else if (u[0] >= 0xE0 && u[0] <= 0xEF) {
		need = 3;
		if (u[0] == 0xE0)
			lo = 0xA0; /* a shorter form exists: overlong */
		else if (u[0] == 0xED)
			hi = 0x9F; /* U+D800..U+DFFF: surrogates */
	} else if (u[0] >= 0xF0 && u[0] <= 0xF4) {
		need = 4;
		if (u[0] == 0xF0)
			lo = 0x90; /* overlong */
		else if (u[0] == 0xF4)
			hi = 0x8F; /* above U+10FFFF */
	} else {
		return 0; /* a continuation byte, C0/C1 (overlong), F5..FF */
	}
	for (i = 1; i < need; i++) {
		if ((size_t)i >= avail)
			return -1;
		if (u[i] < lo || u[i] > hi)
			return 0;
		lo = 0x80;
		hi = 0xBF;
	}
	return need;
}

size_t utf8_invalid_offset(const char *text, size_t len)
{
	size_t pos = 0;
	int seq;

	while (pos < len) {
		if (text[pos] == '\0')
			return pos;
		seq = utf8_sequence_length(text + pos, len - pos);
		if (seq <= 0)
			return pos;
		pos += (size_t)seq;
	}
	return len;
}

int utf8_is_valid(const char *text)
{
	size_t len = strlen(text);

	return utf8_invalid_offset(text, len) == len;
}

size_t utf8_prefix_length(const char *text, size_t len, size_t max)
{
	if (len <= max)
		return len;
	while (max > 0 && is_continuation((unsigned char)text[max]))
		max--;
	return max;
}

void utf8_trim_partial_tail(char *text)
{
	size_t len = strlen(text);
	size_t start = len;

	/* A sequence is at most four bytes: its lead byte is found within
	 * three continuation bytes of the end, or the tail is no cut one. */
	while (start > 0 && len - start < 3 && is_continuation((unsigned char)text[start - 1]))
		start--;
	if (start == 0)
		return;
	start--;
	if (utf8_sequence_length(text + start, len - start) < 0)
		text[start] = '\0';
}

void utf8_cut_at_word(char *text, size_t size)
{
	static const char ellipsis[] = "\xe2\x80\xa6"; /* … */
	size_t len = strlen(text), keep, space;

	if (size < sizeof(ellipsis) + 1)
		return;
	/* room for the ellipsis, then back to the start of a character */
	keep = utf8_prefix_length(text, len, size - sizeof(ellipsis));
	/* and to the end of a word, unless that loses more than half */
	for (space = keep; space > 0 && text[space] != ' ' && text[space - 1] != ' '; space--)
		;
	if (keep < len && space > keep / 2)
		keep = space;
	while (keep > 0 && text[keep - 1] == ' ')
		keep--;
	memcpy(text + keep, ellipsis, sizeof(ellipsis));
}
