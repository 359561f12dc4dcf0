/* UTF-8 as RFC 3629 defines it, in one place: no overlong forms, no
 * surrogates (U+D800..U+DFFF), nothing above U+10FFFF. The prompt check,
 * the request builders and the sentences made from remote text all ask
 * here.
 *
 *   utf8_sequence_length    the well-formed sequence at one position
 *   utf8_invalid_offset     where a buffer stops being UTF-8 text
 *   utf8_is_valid           the same question for a C string
 *   utf8_prefix_length      where to cut text without splitting a
 *                           character
 *   utf8_trim_partial_tail  drops a character that a cut already split
 *
 * Pure functions: no allocation, no state. */
#ifndef PROMPTFS_UTF8_H
#define PROMPTFS_UTF8_H

#include <stddef.h>

/* The length of the well-formed sequence that starts at S, of which
 * AVAIL bytes (at least 1) may be read: 1 to 4; 0 when the bytes there
 * are not UTF-8 (a continuation byte, C0, C1, F5..FF, a bad continuation,
 * an overlong form, a surrogate, a code point above U+10FFFF); -1 when a
 * sequence well-formed so far is cut short by the end of the AVAIL
 * bytes. A NUL byte is a sequence of length 1. */
int utf8_sequence_length(const char *s, size_t avail);

/* The offset of the first byte of TEXT (LEN bytes) that does not start a
 * well-formed sequence, a sequence cut by the end included, or LEN when
 * all of TEXT is UTF-8. A NUL byte counts as invalid: the text is kept
 * in C strings. */
size_t utf8_invalid_offset(const char *text, size_t len);

/* Non-zero when the C string TEXT is UTF-8 throughout. */
int utf8_is_valid(const char *text);

/* How many bytes of TEXT (LEN bytes) to keep to cut it to at most MAX
 * without splitting a character: LEN when LEN <= MAX, else MAX moved back
 * to the start of the character that byte MAX belongs to. */
size_t utf8_prefix_length(const char *text, size_t len, size_t max);

/* TEXT, a sentence that was cut to fit SIZE bytes, ends at a word
 * boundary (unless that loses more than half of it) followed by "…",
 * all within SIZE bytes with its NUL, never splitting a character. */
void utf8_cut_at_word(char *text, size_t size);

/* Ends the C string TEXT before a sequence that a cut (snprintf
 * truncating, say) split at its end, so text shortened from UTF-8 stays
 * UTF-8. Anything else, invalid bytes included, is left as it is. */
void utf8_trim_partial_tail(char *text);

#endif
