/* Unit tests for backends/utf8.c: the one UTF-8 decoder. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>

#include <cmocka.h>

#include "backends/utf8.h"

/* utf8_sequence_length over the whole of a string literal. */
static int seq(const char *s)
{
	return utf8_sequence_length(s, strlen(s));
}

static void test_well_formed_sequences(void **state)
{
	(void)state;
	assert_int_equal(seq("A"), 1);
	assert_int_equal(utf8_sequence_length("\0", 1), 1);
	assert_int_equal(seq("\x7F"), 1);
	assert_int_equal(seq("\xC2\x80"), 2);	      /* U+0080 */
	assert_int_equal(seq("\xC3\xA9"), 2);	      /* é */
	assert_int_equal(seq("\xDF\xBF"), 2);	      /* U+07FF */
	assert_int_equal(seq("\xE0\xA0\x80"), 3);     /* U+0800 */
	assert_int_equal(seq("\xE2\x82\xAC"), 3);     /* € */
	assert_int_equal(seq("\xED\x9F\xBF"), 3);     /* U+D7FF, below the surrogates */
	assert_int_equal(seq("\xEE\x80\x80"), 3);     /* U+E000, above them */
	assert_int_equal(seq("\xEF\xBF\xBF"), 3);     /* U+FFFF */
	assert_int_equal(seq("\xF0\x90\x80\x80"), 4); /* U+10000 */
	assert_int_equal(seq("\xF0\x9F\x98\x80"), 4); /* 😀 */
	assert_int_equal(seq("\xF4\x8F\xBF\xBF"), 4); /* U+10FFFF */
	/* only the sequence at S counts, not what follows it */
	assert_int_equal(seq("\xC3\xA9xyz"), 2);
}

static void test_overlong_forms(void **state)
{
	(void)state;
	assert_int_equal(seq("\xC0\x80"), 0); /* U+0000 in two bytes */
	assert_int_equal(seq("\xC1\xBF"), 0); /* U+007F in two bytes */
	assert_int_equal(seq("\xE0\x80\x80"), 0);
	assert_int_equal(seq("\xE0\x9F\xBF"), 0); /* U+07FF in three bytes */
	assert_int_equal(seq("\xF0\x80\x80\x80"), 0);
	assert_int_equal(seq("\xF0\x8F\xBF\xBF"), 0); /* U+FFFF in four bytes */
}

static void test_surrogates(void **state)
{
	(void)state;
	assert_int_equal(seq("\xED\xA0\x80"), 0); /* U+D800 */
	assert_int_equal(seq("\xED\xAF\xBF"), 0); /* U+DBFF */
	assert_int_equal(seq("\xED\xB0\x80"), 0); /* U+DC00 */
	assert_int_equal(seq("\xED\xBF\xBF"), 0); /* U+DFFF */
	/* a CESU-8 pair is two surrogates, not one character */
	assert_int_equal(utf8_invalid_offset("a\xED\xA0\xBD\xED\xB8\x80", 7), 1);
}

static void test_beyond_u10ffff(void **state)
{
	(void)state;
	assert_int_equal(seq("\xF4\x90\x80\x80"), 0); /* U+110000 */
	assert_int_equal(seq("\xF4\xBF\xBF\xBF"), 0);
	assert_int_equal(seq("\xF5\x80\x80\x80"), 0);
	assert_int_equal(seq("\xF7\xBF\xBF\xBF"), 0);
	assert_int_equal(seq("\xF8\x88\x80\x80\x80"), 0); /* old five-byte form */
	assert_int_equal(seq("\xFC\x84\x80\x80\x80\x80"), 0);
	assert_int_equal(seq("\xFE"), 0);
	assert_int_equal(seq("\xFF"), 0);
}

static void test_stray_and_bad_continuations(void **state)
{
	(void)state;
	assert_int_equal(seq("\x80"), 0);
	assert_int_equal(seq("\xBF"), 0);
	assert_int_equal(seq("\xC3("), 0);
	assert_int_equal(seq("\xE2\x82("), 0);
	assert_int_equal(seq("\xE2(\xAC"), 0);
	assert_int_equal(seq("\xF0\x9F\x98("), 0);
	assert_int_equal(seq("\xC3\xC3\xA9"), 0); /* a lead byte where a continuation belongs */
}

static void test_truncated_at_the_end(void **state)
{
	(void)state;
	assert_int_equal(seq("\xC3"), -1);
	assert_int_equal(seq("\xE2"), -1);
	assert_int_equal(seq("\xE2\x82"), -1);
	assert_int_equal(seq("\xF0"), -1);
	assert_int_equal(seq("\xF0\x9F"), -1);
	assert_int_equal(seq("\xF0\x9F\x98"), -1);
	/* the bytes there already rule the sequence out: not a cut one */
	assert_int_equal(seq("\xE0\x80"), 0);
	assert_int_equal(seq("\xED\xA0"), 0);
	assert_int_equal(seq("\xF4\x90"), 0);
	/* AVAIL, not a NUL, is where the input ends */
	assert_int_equal(utf8_sequence_length("\xE2\x82\xAC", 2), -1);
}

static void test_invalid_offset(void **state)
{
	(void)state;
	assert_int_equal(utf8_invalid_offset("", 0), 0);
	assert_int_equal(utf8_invalid_offset("plain", 5), 5);
	assert_int_equal(utf8_invalid_offset("caf\xC3\xA9 \xE2\x82\xAC \xF0\x9F\x98\x80", 14), 14);
	assert_int_equal(utf8_invalid_offset("ab\xFF", 3), 2);
	assert_int_equal(utf8_invalid_offset("ab\xC0\x80", 4), 2);
	assert_int_equal(utf8_invalid_offset("\xE2\x82\xAC\xED\xA0\x80", 6), 3);
	/* a sequence cut by the end of the buffer is invalid where it starts */
	assert_int_equal(utf8_invalid_offset("abc\xE2\x82", 5), 3);
	assert_int_equal(utf8_invalid_offset("abc\xF0\x9F\x98", 6), 3);
	/* NUL cannot stand in a C string */
	assert_int_equal(utf8_invalid_offset("ab\0cd", 5), 2);
	/* LEN bounds the check, a NUL does not end it */
	assert_int_equal(utf8_invalid_offset("ab\xC3\xA9", 2), 2);
}

static void test_is_valid(void **state)
{
	(void)state;
	assert_true(utf8_is_valid(""));
	assert_true(utf8_is_valid("Gr\xC3\xBC\xC3\x9F"
				  "e \xF0\x9F\x91\x8B"));
	assert_false(utf8_is_valid("\xC0\xAF"));
	assert_false(utf8_is_valid("x\xED\xB2\x80"));
	assert_false(utf8_is_valid("x\xF4\x90\x80\x80"));
	assert_false(utf8_is_valid("x\xE2\x82"));
	assert_false(utf8_is_valid("\x80"));
}

static void test_prefix_length(void **state)
{
	static const char euros[] = "\xE2\x82\xAC\xE2\x82\xAC"; /* €€ */

	(void)state;
	assert_int_equal(utf8_prefix_length("abcdef", 6, 10), 6);
	assert_int_equal(utf8_prefix_length("abcdef", 6, 6), 6);
	assert_int_equal(utf8_prefix_length("abcdef", 6, 4), 4);
	assert_int_equal(utf8_prefix_length(euros, 6, 6), 6);
	assert_int_equal(utf8_prefix_length(euros, 6, 5), 3);
	assert_int_equal(utf8_prefix_length(euros, 6, 4), 3);
	assert_int_equal(utf8_prefix_length(euros, 6, 3), 3);
	assert_int_equal(utf8_prefix_length(euros, 6, 2), 0);
	assert_int_equal(utf8_prefix_length(euros, 6, 0), 0);
	assert_int_equal(utf8_prefix_length("a\xF0\x9F\x98\x80", 5, 4), 1);
}

/* utf8_trim_partial_tail on a copy of IN; the result into OUT. */
static const char *trimmed(const char *in, char out[32])
{
	strcpy(out, in);
	utf8_trim_partial_tail(out);
	return out;
}

static void test_partial_tail_trim(void **state)
{
	char out[32];

	(void)state;
	/* whole characters stay */
	assert_string_equal(trimmed("", out), "");
	assert_string_equal(trimmed("abc", out), "abc");
	assert_string_equal(trimmed("ab\xC3\xA9", out), "ab\xC3\xA9");
	assert_string_equal(trimmed("ab\xE2\x82\xAC", out), "ab\xE2\x82\xAC");
	assert_string_equal(trimmed("ab\xF0\x9F\x98\x80", out), "ab\xF0\x9F\x98\x80");
	/* a character cut short goes, whole */
	assert_string_equal(trimmed("ab\xC3", out), "ab");
	assert_string_equal(trimmed("ab\xE2", out), "ab");
	assert_string_equal(trimmed("ab\xE2\x82", out), "ab");
	assert_string_equal(trimmed("ab\xF0", out), "ab");
	assert_string_equal(trimmed("ab\xF0\x9F", out), "ab");
	assert_string_equal(trimmed("ab\xF0\x9F\x98", out), "ab");
	assert_string_equal(trimmed("\xE2\x82\xAC\xF0\x9F\x98", out), "\xE2\x82\xAC");
	assert_string_equal(trimmed("\xE2\x82", out), "");
	/* bytes that were never UTF-8 are not a cut: left alone */
	assert_string_equal(trimmed("ab\x80\x80\x80\x80", out), "ab\x80\x80\x80\x80");
	assert_string_equal(trimmed("ab\xFF", out), "ab\xFF");
	assert_string_equal(trimmed("ab\xED\xA0", out), "ab\xED\xA0");
}

/* The rule the trim exists for: every cut of valid text, trimmed, is
 * valid text. */
static void test_every_cut_trims_to_utf8(void **state)
{
	static const char text[] = "a\xC3\xA9\xE2\x82\xAC\xF0\x9F\x98\x80z\xF4\x8F\xBF\xBF";
	char cut[sizeof(text)];
	size_t n;

	(void)state;
	for (n = 0; n < sizeof(text); n++) {
		memcpy(cut, text, n);
		cut[n] = '\0';
		utf8_trim_partial_tail(cut);
		assert_true(utf8_is_valid(cut));
		assert_true(strlen(cut) + 3 >= n);
		assert_int_equal(strlen(cut), utf8_prefix_length(text, sizeof(text) - 1, n));
	}
}

/* A sentence cut to fit ends at a word with an ellipsis, in its size. */
static void test_cut_at_word(void **state)
{
	char text[32];

	(void)state;
	strcpy(text, "the provider said: quota exceed");
	utf8_cut_at_word(text, 24);
	assert_string_equal(text, "the provider said:\xe2\x80\xa6");
	assert_true(strlen(text) < 24);
	/* one long word: cut inside it rather than lose more than half */
	strcpy(text, "a supercalifragilisticexpialid");
	utf8_cut_at_word(text, 16);
	assert_string_equal(text, "a supercalif\xe2\x80\xa6");
	/* never inside a character */
	strcpy(text, "caf\xc3\xa9 caf\xc3\xa9 caf\xc3\xa9 caf\xc3\xa9");
	utf8_cut_at_word(text, 12);
	assert_string_equal(text, "caf\xc3\xa9\xe2\x80\xa6");
	assert_int_equal(utf8_invalid_offset(text, strlen(text)), strlen(text));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_well_formed_sequences),
		cmocka_unit_test(test_overlong_forms),
		cmocka_unit_test(test_surrogates),
		cmocka_unit_test(test_beyond_u10ffff),
		cmocka_unit_test(test_stray_and_bad_continuations),
		cmocka_unit_test(test_truncated_at_the_end),
		cmocka_unit_test(test_invalid_offset),
		cmocka_unit_test(test_is_valid),
		cmocka_unit_test(test_prefix_length),
		cmocka_unit_test(test_partial_tail_trim),
		cmocka_unit_test(test_cut_at_word),
		cmocka_unit_test(test_every_cut_trims_to_utf8),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
