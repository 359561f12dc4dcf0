/* The text of an audit.jsonl line (fs/audit_line.c): the head's exact
 * bytes, JSON escaping streamed in pieces, money in fixed notation, and
 * the key read back from a line's first bytes. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "fs/audit_line.h"

static void usd_in_fixed_notation(void **state)
{
	static const struct {
		double usd;
		const char *text;
	} cases[] = {
		{ 0.0000036, "0.0000036" },
		{ 12.5, "12.5" },
		{ 0, "0" },
		{ 3, "3" },
		{ 1e-12, "0" },
		{ 0.000486, "0.000486" },
		{ 1234.5678, "1234.5678" },
		{ 0.1 + 0.2, "0.3" },
		{ -0.0, "0" },
	};
	char buf[64];

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		audit_format_usd(cases[i].usd, buf, sizeof(buf));
		assert_string_equal(buf, cases[i].text);
	}
}

static char *escape_whole(const char *in, size_t len)
{
	char *out = malloc(AUDIT_ESCAPE_MAX(len) + 1);
	size_t used, n = audit_json_escape(in, len, 1, out, &used);

	assert_int_equal(used, len);
	out[n] = '\0';
	return out;
}

static void escaping(void **state)
{
	static const char in[] = "q\" b\\ t\t n\n r\r bell\x07 nul";
	char *out;

	(void)state;
	out = escape_whole(in, sizeof(in)); /* the NUL at the end too */
	assert_string_equal(out, "q\\\" b\\\\ t\\t n\\n r\\r bell\\u0007 nul\\u0000");
	free(out);
	/* UTF-8 kept as it is; bytes that are not UTF-8 become U+FFFD */
	out = escape_whole("\xc3\xa9 \xe4\xb8\x96 \xf0\x9f\x98\x80", 11);
	assert_string_equal(out, "\xc3\xa9 \xe4\xb8\x96 \xf0\x9f\x98\x80");
	free(out);
	out = escape_whole("a\xff"
			   "b\xc3",
			   4);
	assert_string_equal(out, "a\\ufffdb\\ufffd");
	free(out);
	out = escape_whole("\xed\xa0\x80", 3); /* a surrogate */
	assert_string_equal(out, "\\ufffd\\ufffd\\ufffd");
	free(out);
}

/* Escaped in two pieces cut at every byte, as a file is read a chunk at
 * a time, the text comes out as escaped whole. */
static void escaping_in_pieces(void **state)
{
	static const char in[] = "\xc3\xa9\"\xe4\xb8\x96\n\xf0\x9f\x98\x80\xff\\x";
	size_t len = sizeof(in) - 1;
	char *whole = escape_whole(in, len);

	(void)state;
	for (size_t cut = 0; cut <= len; cut++) {
		char buf[64], out[256];
		size_t used, n, o, carry;

		memcpy(buf, in, cut);
		o = audit_json_escape(buf, cut, 0, out, &used);
		assert_true(cut - used <= 3);
		carry = cut - used;
		memmove(buf, buf + used, carry);
		memcpy(buf + carry, in + cut, len - cut);
		n = audit_json_escape(buf, carry + len - cut, 1, out + o, &used);
		assert_int_equal(used, carry + len - cut);
		out[o + n] = '\0';
		assert_string_equal(out, whole);
	}
	free(whole);
}

static void done_line(void **state)
{
	json_t *attempts = json_loads(
		"[{\"target\":\"openai/us/gpt-4o\",\"outcome\":\"ok\",\"ms\":12}]", 0, NULL);
	struct audit_record r = {
		.time = "2026-11-26T10:00:03Z",
		.journal_id = 42,
		.submitted = "2026-11-26T10:00:01Z",
		.outcome = "done",
		.uid = 1000,
		.pid = 4242,
		.path = "/mnt/ai/openai/us/gpt-4o/x \"1\".prompt",
		.route = "openai/us/gpt-4o",
		.attempts = attempts,
		.has_tokens = 1,
		.input_tokens = 3,
		.output_tokens = 5,
		.has_cost = 1,
		.cost_usd = 0.0000575,
		.prompt_sha256 = "aa",
		.response_sha256 = "bb",
	};
	char submitted[AUDIT_TIME_SIZE];
	size_t len = 0;
	char *head = audit_line_head(&r, &len);
	uint64_t id = 0;

	(void)state;
	assert_non_null(head);
	assert_int_equal(len, strlen(head));
	assert_string_equal(
		head,
		"{\"time\":\"2026-11-26T10:00:03Z\",\"journal_id\":42,"
		"\"submitted\":\"2026-11-26T10:00:01Z\",\"outcome\":\"done\",\"errno\":null,"
		"\"reason\":null,\"uid\":1000,\"pid\":4242,"
		"\"path\":\"/mnt/ai/openai/us/gpt-4o/x \\\"1\\\".prompt\","
		"\"route\":\"openai/us/gpt-4o\","
		"\"attempts\":[{\"target\":\"openai/us/gpt-4o\",\"outcome\":\"ok\",\"ms\":12}],"
		"\"tokens\":{\"input\":3,\"output\":5},\"cost_usd\":0.0000575,"
		"\"prompt_sha256\":\"aa\",\"response_sha256\":\"bb\"");
	assert_int_equal(audit_line_key(head, len, &id, submitted), 0);
	assert_int_equal(id, 42);
	assert_string_equal(submitted, "2026-11-26T10:00:01Z");
	/* only the first bytes are needed */
	assert_int_equal(audit_line_key(head, 100, &id, submitted), 0);
	assert_int_equal(audit_line_key(head, 60, &id, submitted), -1);
	free(head);
	json_decref(attempts);
}

static void refusal_line(void **state)
{
	struct audit_record r = {
		.time = "2026-11-26T10:00:03Z",
		.outcome = "refused",
		.errno_name = "EDQUOT",
		.reason = "The prompt was refused by /mnt/ai/.policy: max_request_usd 1.",
		.uid = 0,
		.pid = -1,
		.path = "/mnt/ai/a/b/c/q.prompt",
		.prompt_sha256 = "cc",
	};
	char submitted[AUDIT_TIME_SIZE], *line;
	size_t len = 0;
	char *head = audit_line_head(&r, &len);
	uint64_t id = 7;
	json_t *parsed;

	(void)state;
	assert_non_null(head);
	assert_int_equal(audit_line_key(head, len, &id, submitted), 0);
	assert_int_equal(id, 0);
	assert_string_equal(submitted, "");
	/* with its end, one JSON object */
	line = malloc(len + sizeof(AUDIT_LINE_END));
	strcpy(line, head);
	strcat(line, AUDIT_LINE_END);
	parsed = json_loads(line, 0, NULL);
	assert_non_null(parsed);
	assert_string_equal(json_string_value(json_object_get(parsed, "errno")), "EDQUOT");
	assert_string_equal(json_string_value(json_object_get(parsed, "reason")), r.reason);
	assert_true(json_is_null(json_object_get(parsed, "journal_id")));
	assert_true(json_is_null(json_object_get(parsed, "pid")));
	assert_true(json_is_null(json_object_get(parsed, "route")));
	assert_int_equal(json_array_size(json_object_get(parsed, "attempts")), 0);
	assert_true(json_is_null(json_object_get(parsed, "tokens")));
	assert_true(json_is_null(json_object_get(parsed, "cost_usd")));
	assert_true(json_is_null(json_object_get(parsed, "response_sha256")));
	assert_int_equal(json_object_size(parsed), 15);
	json_decref(parsed);
	free(line);
	free(head);
}

static void keys_of_other_text(void **state)
{
	static const char *const bad[] = {
		"",
		"{}",
		"{\"time\":null,\"journal_id\":1,\"submitted\":null,",
		"{\"time\":\"2026-11-26T10:00:03Z\",\"journal_id\":01,\"submitted\":null,",
		"{\"time\":\"2026-11-26T10:00:03Z\",\"journal_id\":-1,\"submitted\":null,",
		"{\"time\":\"2026-11-26T10:00:03Z\",\"journal_id\":99999999999999999999,"
		"\"submitted\":null,",
		"{\"time\":\"2026-11-26T10:00:03Z\",\"journal_id\":1,\"submitted\":\"x\",",
		"{\"time\":\"2026-11-26T10:00:03Z\",\"journal_id\":1}",
	};
	char submitted[AUDIT_TIME_SIZE];
	uint64_t id;

	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		assert_int_equal(audit_line_key(bad[i], strlen(bad[i]), &id, submitted), -1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(usd_in_fixed_notation), cmocka_unit_test(escaping),
		cmocka_unit_test(escaping_in_pieces),	 cmocka_unit_test(done_line),
		cmocka_unit_test(refusal_line),		 cmocka_unit_test(keys_of_other_text),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
