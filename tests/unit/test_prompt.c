/* Unit tests for fs/prompt.c: UTF-8 checks, JSON requests, defaults,
 * and the cost size. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "fs/prompt.h"

#define EPSILON 1e-9

/* Parses a NUL-terminated TEXT. */
static int parse(const char *text, struct llm_request *req, char *err, size_t err_size)
{
	return prompt_parse(text, strlen(text), req, err, err_size);
}

/* Expects BYTES (LEN of them) to be refused as not UTF-8 at OFFSET. */
static void expect_bad_utf8(const char *bytes, size_t len, size_t offset)
{
	struct llm_request req;
	char err[256];
	char expected[256];

	snprintf(expected, sizeof(expected), "the prompt is not valid UTF-8 (byte offset %zu)",
		 offset);
	assert_int_equal(prompt_parse(bytes, len, &req, err, sizeof(err)), -EILSEQ);
	assert_string_equal(err, expected);
	assert_null(req.messages);
	assert_int_equal(req.n_messages, 0);
}

/* Expects TEXT to be refused as a JSON request with MESSAGE, under
 * FORMAT. */
static void expect_invalid_as(const char *text, enum prompt_format format, const char *message)
{
	struct llm_request req;
	char err[256];

	assert_int_equal(prompt_parse_as(text, strlen(text), format, &req, NULL, err, sizeof(err)),
			 -EINVAL);
	assert_string_equal(err, message);
	assert_null(req.messages);
	assert_null(req.stop);
}

/* A request with a "messages" array is one under auto too. */
static void expect_invalid(const char *text, const char *message)
{
	expect_invalid_as(text, PROMPT_FORMAT_AUTO, message);
	expect_invalid_as(text, PROMPT_FORMAT_JSON, message);
}

/* Under auto TEXT is plain text (SPEC 5.2); under json, MESSAGE. */
static void expect_text_unless_json(const char *text, const char *message)
{
	struct llm_request req;
	int is_json = -1;

	assert_int_equal(
		prompt_parse_as(text, strlen(text), PROMPT_FORMAT_AUTO, &req, &is_json, NULL, 0),
		0);
	assert_int_equal(is_json, 0);
	assert_int_equal(req.n_messages, 1);
	assert_string_equal(req.messages[0].role, "user");
	assert_string_equal(req.messages[0].content, text);
	llm_request_release(&req);
	expect_invalid_as(text, PROMPT_FORMAT_JSON, message);
}

static void test_plain_text_kept_exactly(void **state)
{
	struct llm_request req;
	char err[256];

	(void)state;
	assert_int_equal(parse("  Why is the sky blue?\n", &req, err, sizeof(err)), 0);
	assert_int_equal(req.n_messages, 1);
	assert_string_equal(req.messages[0].role, "user");
	assert_string_equal(req.messages[0].content, "  Why is the sky blue?\n");
	assert_false(req.has_temperature);
	assert_int_equal(req.max_tokens, 0);
	assert_int_equal(req.n_stop, 0);
	llm_request_release(&req);
	assert_null(req.messages);
}

static void test_plain_text_utf8(void **state)
{
	struct llm_request req;
	/* 2-, 3- and 4-byte sequences, including the largest code point. */
	const char text[] = "caf\xC3\xA9 \xE2\x82\xAC \xF0\x9F\x98\x80 \xF4\x8F\xBF\xBF";
	char err[256];

	(void)state;
	assert_int_equal(parse(text, &req, err, sizeof(err)), 0);
	assert_string_equal(req.messages[0].content, text);
	llm_request_release(&req);
}

static void test_invalid_utf8(void **state)
{
	(void)state;
	expect_bad_utf8("ab\xFF", 3, 2);
	expect_bad_utf8("\x80", 1, 0);		   /* lone continuation */
	expect_bad_utf8("ok \xC0\xAF", 5, 3);	   /* overlong '/' */
	expect_bad_utf8("\xC1\xBF", 2, 0);	   /* overlong */
	expect_bad_utf8("x\xE0\x80\xAF", 4, 1);	   /* overlong, 3 bytes */
	expect_bad_utf8("\xF0\x80\x80\xAF", 4, 0); /* overlong, 4 bytes */
	expect_bad_utf8("a\xED\xA0\x80", 4, 1);	   /* surrogate U+D800 */
	expect_bad_utf8("\xED\xBF\xBF", 3, 0);	   /* surrogate U+DFFF */
	expect_bad_utf8("\xF4\x90\x80\x80", 4, 0); /* U+110000 */
	expect_bad_utf8("\xF5\x80\x80\x80", 4, 0);
	expect_bad_utf8("hello \xE2\x82", 8, 6); /* truncated at the end */
	expect_bad_utf8("hello \xF0\x9F\x98", 9, 6);
	expect_bad_utf8("\xC3", 1, 0);
	expect_bad_utf8("\xC3x", 2, 0); /* continuation missing */
	expect_bad_utf8("nul\0byte", 8, 3);
	expect_bad_utf8("{\"messages\":[]}\xFF", 16, 15);
}

static void test_empty_prompt(void **state)
{
	struct llm_request req;
	char err[256];

	(void)state;
	assert_int_equal(prompt_parse("", 0, &req, err, sizeof(err)), -ENODATA);
	assert_string_equal(err, "empty prompt");
	assert_int_equal(parse(" \t\r\n\n", &req, err, sizeof(err)), -ENODATA);
	assert_string_equal(err, "empty prompt");
	assert_null(req.messages);
	/* A caller that needs no sentence may pass no buffer. */
	assert_int_equal(parse("\n", &req, NULL, 0), -ENODATA);
}

static void test_json_request_full(void **state)
{
	struct llm_request req;
	char err[256];

	(void)state;
	assert_int_equal(parse("\n {\"messages\":["
			       "{\"role\":\"system\",\"content\":\"Be brief.\"},"
			       "{\"role\":\"user\",\"content\":\"Hi\\n\"},"
			       "{\"content\":\"Hello!\",\"role\":\"assistant\"},"
			       "{\"role\":\"user\",\"content\":\"\\u00e9\"}],"
			       "\"temperature\":0.2,\"max_tokens\":500,"
			       "\"stop\":[\"END\",\"###\"]}\n",
			       &req, err, sizeof(err)),
			 0);
	assert_int_equal(req.n_messages, 4);
	assert_string_equal(req.messages[0].role, "system");
	assert_string_equal(req.messages[0].content, "Be brief.");
	assert_string_equal(req.messages[1].content, "Hi\n");
	assert_string_equal(req.messages[2].role, "assistant");
	assert_string_equal(req.messages[3].content, "\xC3\xA9");
	assert_true(req.has_temperature);
	assert_float_equal(req.temperature, 0.2, EPSILON);
	assert_int_equal(req.max_tokens, 500);
	assert_int_equal(req.n_stop, 2);
	assert_string_equal(req.stop[0], "END");
	assert_string_equal(req.stop[1], "###");
	llm_request_release(&req);
}

static void test_json_request_minimal_forms(void **state)
{
	struct llm_request req;
	char err[256];

	(void)state;
	/* Integer temperature, stop as one string, last message not user. */
	assert_int_equal(parse("{\"messages\":[{\"role\":\"assistant\",\"content\":\"\"}],"
			       "\"temperature\":2,\"stop\":\"\\n\\n\"}",
			       &req, err, sizeof(err)),
			 0);
	assert_int_equal(req.n_messages, 1);
	assert_true(req.has_temperature);
	assert_float_equal(req.temperature, 2, EPSILON);
	assert_int_equal(req.n_stop, 1);
	assert_string_equal(req.stop[0], "\n\n");
	llm_request_release(&req);

	assert_int_equal(parse("{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],"
			       "\"temperature\":0,\"stop\":[]}",
			       &req, err, sizeof(err)),
			 0);
	assert_float_equal(req.temperature, 0, EPSILON);
	assert_int_equal(req.n_stop, 0);
	llm_request_release(&req);
}

/* Found by fuzzing: jansson quotes the bytes near a syntax error, and a
 * control byte there reached the one-line sentence for .error. */
static void test_json_syntax_error_control_bytes(void **state)
{
	static const char text[] = "{\"messages\":[{\f\f\f";
	struct llm_request req;
	char err[256];
	size_t i;

	(void)state;
	assert_int_equal(prompt_parse_as(text, strlen(text), PROMPT_FORMAT_JSON, &req, NULL, err,
					 sizeof(err)),
			 -EINVAL);
	assert_non_null(strstr(err, "not valid JSON"));
	for (i = 0; err[i]; i++)
		assert_true((unsigned char)err[i] >= 0x20);
}

static void test_json_request_invalid(void **state)
{
	(void)state;
	expect_invalid("{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"foo\":1}",
		       "the prompt is a JSON request with an unknown key \"foo\"");
	expect_invalid("{\"model\":\"gpt-4o\",\"messages\":[]}",
		       "the prompt is a JSON request with an unknown key \"model\"");
	expect_text_unless_json("{\"temperature\":1}",
				"the prompt is a JSON request without \"messages\"");
	expect_invalid("{\"messages\":[]}", "messages must be a non-empty array");
	expect_text_unless_json("{\"messages\":\"hi\"}", "messages must be a non-empty array");
	expect_invalid("{\"messages\":[\"hi\"]}",
		       "messages[0] must be an object with \"role\" and \"content\"");
	expect_invalid("{\"messages\":[{\"role\":\"user\",\"content\":\"a\"},"
		       "{\"role\":\"tool\",\"content\":\"b\"}]}",
		       "messages[1].role must be one of system, user, assistant");
	expect_invalid("{\"messages\":[{\"content\":\"b\"}]}",
		       "messages[0].role must be one of system, user, assistant");
	expect_invalid("{\"messages\":[{\"role\":1,\"content\":\"b\"}]}",
		       "messages[0].role must be one of system, user, assistant");
	expect_invalid("{\"messages\":[{\"role\":\"user\"}]}",
		       "messages[0].content must be a string");
	expect_invalid("{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"text\"}]}]}",
		       "messages[0].content must be a string");
	expect_invalid("{\"messages\":[{\"role\":\"user\",\"content\":\"a\",\"name\":\"x\"}]}",
		       "messages[0] has an unknown key \"name\"");
	expect_invalid(
		"{\"messages\":[{\"role\":\"user\",\"content\":\"a\"}],\"temperature\":\"hot\"}",
		"temperature must be a number from 0 to 2");
	expect_invalid("{\"messages\":[{\"role\":\"user\",\"content\":\"a\"}],\"temperature\":2.5}",
		       "temperature must be a number from 0 to 2");
	expect_invalid(
		"{\"messages\":[{\"role\":\"user\",\"content\":\"a\"}],\"temperature\":-0.1}",
		"temperature must be a number from 0 to 2");
	expect_invalid("{\"messages\":[{\"role\":\"user\",\"content\":\"a\"}],\"max_tokens\":0}",
		       "max_tokens must be an integer of at least 1");
	expect_invalid("{\"messages\":[{\"role\":\"user\",\"content\":\"a\"}],\"max_tokens\":10.5}",
		       "max_tokens must be an integer of at least 1");
	expect_invalid(
		"{\"messages\":[{\"role\":\"user\",\"content\":\"a\"}],\"max_tokens\":\"9\"}",
		"max_tokens must be an integer of at least 1");
	expect_invalid("{\"messages\":[{\"role\":\"user\",\"content\":\"a\"}],\"stop\":5}",
		       "stop must be a string or an array of at most 4 strings");
	expect_invalid("{\"messages\":[{\"role\":\"user\",\"content\":\"a\"}],"
		       "\"stop\":[\"a\",\"b\",\"c\",\"d\",\"e\"]}",
		       "stop must be a string or an array of at most 4 strings");
	expect_invalid(
		"{\"messages\":[{\"role\":\"user\",\"content\":\"a\"}],\"stop\":[\"a\",null]}",
		"stop[1] must be a string");
}

static void test_json_request_malformed(void **state)
{
	(void)state;
	expect_text_unless_json("{\"messages\": [",
				"the prompt is not valid JSON (prompt_format is json): "
				"']' expected near end of file at line 1 column 14");
	expect_text_unless_json("{\n\"messages\":[{\"role\":\"user\",\"content\":\"a\"}]}\nmore",
				"the prompt is not valid JSON (prompt_format is json): "
				"end of file expected near 'more' at line 3 column 4");
	expect_text_unless_json("{\"messages\":[{\"role\":\"user\",\"content\":\"a\"}],"
				"\"messages\":[{\"role\":\"user\",\"content\":\"b\"}]}",
				"the prompt is not valid JSON (prompt_format is json): "
				"duplicate object key near '\"messages\"' at line 1 column 54");
	expect_text_unless_json("{\"messages\":[{\"role\":\"user\",\"content\":\"a\\u0000b\"}]}",
				"the prompt is not valid JSON (prompt_format is json): "
				"a string holds \\u0000, which is not allowed at line 1 column 48");
}

/* prompt_format text: JSON is sent as the words it is. */
static void test_format_text_takes_json_as_text(void **state)
{
	static const char text[] = "{\"messages\":[{\"role\":\"user\",\"content\":\"a\"}]}";
	struct llm_request req;
	int is_json = -1;

	(void)state;
	assert_int_equal(
		prompt_parse_as(text, strlen(text), PROMPT_FORMAT_TEXT, &req, &is_json, NULL, 0),
		0);
	assert_int_equal(is_json, 0);
	assert_string_equal(req.messages[0].content, text);
	llm_request_release(&req);
	assert_int_equal(
		prompt_parse_as(text, strlen(text), PROMPT_FORMAT_AUTO, &req, &is_json, NULL, 0),
		0);
	assert_int_equal(is_json, 1);
	assert_string_equal(req.messages[0].content, "a");
	llm_request_release(&req);
}

static void test_error_buffer_truncated(void **state)
{
	struct llm_request req;
	char err[8];

	(void)state;
	assert_int_equal(parse("{\"messages\":[],\"foo\":1}", &req, err, sizeof(err)), -EINVAL);
	assert_string_equal(err, "the pro");
}

static void test_defaults_on_plain_text(void **state)
{
	struct llm_request req;
	char err[256];

	(void)state;
	assert_int_equal(parse("Hi", &req, err, sizeof(err)), 0);
	assert_int_equal(prompt_apply_defaults(&req, "Answer in French.", 1, 0.3, 800), 0);
	assert_int_equal(req.n_messages, 2);
	assert_string_equal(req.messages[0].role, "system");
	assert_string_equal(req.messages[0].content, "Answer in French.");
	assert_string_equal(req.messages[1].role, "user");
	assert_string_equal(req.messages[1].content, "Hi");
	assert_true(req.has_temperature);
	assert_float_equal(req.temperature, 0.3, EPSILON);
	assert_int_equal(req.max_tokens, 800);
	llm_request_release(&req);

	/* Nothing given: nothing changes. */
	assert_int_equal(parse("Hi", &req, err, sizeof(err)), 0);
	assert_int_equal(prompt_apply_defaults(&req, NULL, 0, 0.9, 0), 0);
	assert_int_equal(req.n_messages, 1);
	assert_false(req.has_temperature);
	assert_int_equal(req.max_tokens, 0);
	assert_int_equal(prompt_apply_defaults(&req, "", 0, 0, 0), 0);
	assert_int_equal(req.n_messages, 1);
	llm_request_release(&req);
}

static void test_defaults_yield_to_prompt(void **state)
{
	struct llm_request req;
	char err[256];

	(void)state;
	assert_int_equal(parse("{\"messages\":[{\"role\":\"user\",\"content\":\"a\"},"
			       "{\"role\":\"system\",\"content\":\"Mine.\"}],"
			       "\"temperature\":1.5,\"max_tokens\":100}",
			       &req, err, sizeof(err)),
			 0);
	assert_int_equal(prompt_apply_defaults(&req, "Policy.", 1, 0.1, 500), 0);
	assert_int_equal(req.n_messages, 2);
	assert_string_equal(req.messages[1].content, "Mine.");
	assert_float_equal(req.temperature, 1.5, EPSILON);
	/* Lower than the cap: the prompt's value stays. */
	assert_int_equal(req.max_tokens, 100);
	/* Above the cap: the cap wins. */
	assert_int_equal(prompt_apply_defaults(&req, NULL, 0, 0, 50), 0);
	assert_int_equal(req.max_tokens, 50);
	llm_request_release(&req);

	/* A JSON request without a system message gets the policy's. */
	assert_int_equal(parse("{\"messages\":[{\"role\":\"user\",\"content\":\"a\"}],"
			       "\"max_tokens\":100}",
			       &req, err, sizeof(err)),
			 0);
	assert_int_equal(prompt_apply_defaults(&req, "Policy.", 0, 0, 0), 0);
	assert_int_equal(req.n_messages, 2);
	assert_string_equal(req.messages[0].content, "Policy.");
	assert_int_equal(req.max_tokens, 100);
	llm_request_release(&req);
}

static void test_cost_bytes(void **state)
{
	struct llm_request req;
	char err[256];

	(void)state;
	assert_int_equal(parse("caf\xC3\xA9\n", &req, err, sizeof(err)), 0);
	assert_int_equal(prompt_bytes_for_cost(&req), 6 + 8);
	assert_int_equal(prompt_apply_defaults(&req, "Be brief.", 0, 0, 0), 0);
	assert_int_equal(prompt_bytes_for_cost(&req), 6 + 8 + 9 + 8);
	llm_request_release(&req);

	assert_int_equal(parse("{\"messages\":[{\"role\":\"user\",\"content\":\"\"},"
			       "{\"role\":\"assistant\",\"content\":\"abc\"}]}",
			       &req, err, sizeof(err)),
			 0);
	assert_int_equal(prompt_bytes_for_cost(&req), 0 + 8 + 3 + 8);
	llm_request_release(&req);
}

/* A write is judged with the bytes before it: a character split between
 * two writes is fine, one cut at the end is left to the next write. */
static void test_utf8_across_writes(void **state)
{
	(void)state;
	assert_int_equal(prompt_utf8_continues("", 0, "caf\xc3\xa9", 5), 0);
	assert_int_equal(prompt_utf8_continues("", 0, "caf\xc3", 4), 0);
	assert_int_equal(prompt_utf8_continues("af\xc3", 3, "\xa9!", 2), 0);
	assert_int_equal(prompt_utf8_continues("\xe2\x82", 2, "\xac", 1), 0);
	assert_int_equal(prompt_utf8_continues("", 0, "caf\xc3(\n", 6), -EILSEQ);
	assert_int_equal(prompt_utf8_continues("af\xc3", 3, "(", 1), -EILSEQ);
	assert_int_equal(prompt_utf8_continues("abc", 3, "\xff", 1), -EILSEQ);
	assert_int_equal(prompt_utf8_continues("abc", 3, "x\0y", 3), -EILSEQ);
	assert_int_equal(prompt_utf8_continues("abc", 3, "\xa9", 1), -EILSEQ);
	/* continuation bytes of a character begun before what is kept */
	assert_int_equal(prompt_utf8_continues("\x80\x80\x80", 3, "ok", 2), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_plain_text_kept_exactly),
		cmocka_unit_test(test_plain_text_utf8),
		cmocka_unit_test(test_invalid_utf8),
		cmocka_unit_test(test_empty_prompt),
		cmocka_unit_test(test_json_request_full),
		cmocka_unit_test(test_json_request_minimal_forms),
		cmocka_unit_test(test_json_request_invalid),
		cmocka_unit_test(test_json_syntax_error_control_bytes),
		cmocka_unit_test(test_json_request_malformed),
		cmocka_unit_test(test_format_text_takes_json_as_text),
		cmocka_unit_test(test_error_buffer_truncated),
		cmocka_unit_test(test_defaults_on_plain_text),
		cmocka_unit_test(test_defaults_yield_to_prompt),
		cmocka_unit_test(test_cost_bytes),
		cmocka_unit_test(test_utf8_across_writes),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
