/* Unit tests for fs/policy.c: `.policy` parsing and its canonical text,
 * the xattr view of every key, composition down a chain of directories,
 * and the worst-case cost. */
#include <errno.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "fs/policy.h"
#include "mountopts/config.h"

#define COST_EPSILON 1e-12

/* Every key set, each to a value other than its default. */
static const char full_policy[] = "{\n"
				  "  \"providers\": [\"aws\", \"azure\"],\n"
				  "  \"residency\": [\"eu\", \"de\"],\n"
				  "  \"max_request_usd\": 0.25,\n"
				  "  \"max_output_tokens\": 800,\n"
				  "  \"max_prompt_bytes\": 65536,\n"
				  "  \"budget_usd\": 50,\n"
				  "  \"budget_period\": \"day\",\n"
				  "  \"fallback\": true,\n"
				  "  \"order\": \"price\",\n"
				  "  \"retries\": 3,\n"
				  "  \"timeout_s\": 30,\n"
				  "  \"first_token_timeout_s\": 2.5,\n"
				  "  \"temperature\": 0.2,\n"
				  "  \"system\": \"Answer in \\\"French\\\".\\n\",\n"
				  "  \"umask\": \"077\",\n"
				  "  \"audit_prompts\": false,\n"
				  "  \"prompt_format\": \"json\"\n"
				  "}\n";

static int parse(const char *text, struct policy *p, char *err, size_t err_size)
{
	return policy_parse(text, strlen(text), p, err, err_size);
}

static int set(struct policy *p, enum policy_key key, const char *value, char *err, size_t err_size)
{
	return policy_set_value(p, key, value, strlen(value), err, err_size);
}

/* Expects KEY of P to read EXPECTED through its xattr. */
static void expect_own_value(const struct policy *p, enum policy_key key, const char *expected)
{
	char *value;

	assert_int_equal(policy_get_value(p, key, &value), 0);
	assert_string_equal(value, expected);
	free(value);
}

/* Expects user.effective.KEY of E to be EXPECTED, or ENODATA when NULL. */
static void expect_effective(const struct effective_policy *e, enum policy_key key,
			     const char *expected)
{
	char *value;

	if (!expected) {
		assert_int_equal(effective_get_value(e, key, &value), -ENODATA);
		assert_null(value);
		return;
	}
	assert_int_equal(effective_get_value(e, key, &value), 0);
	assert_string_equal(value, expected);
	free(value);
}

/* Expects TEXT to be refused as a .policy with MESSAGE, leaving nothing
 * to free. */
static void expect_invalid(const char *text, const char *message)
{
	struct policy p;
	char err[256];

	assert_int_equal(parse(text, &p, err, sizeof(err)), -EINVAL);
	assert_string_equal(err, message);
	assert_int_equal(p.set, 0);
	assert_null(p.providers.names);
	assert_null(p.residency.names);
	assert_null(p.system);
}

/* Expects xattr text VALUE to be refused for KEY with MESSAGE, and the
 * value set before to stay. */
static void expect_invalid_value(enum policy_key key, const char *value, const char *message)
{
	struct policy p;
	struct policy before;
	char err[256];

	assert_int_equal(parse(full_policy, &p, err, sizeof(err)), 0);
	assert_int_equal(policy_copy(&before, &p), 0);
	assert_int_equal(set(&p, key, value, err, sizeof(err)), -EINVAL);
	assert_string_equal(err, message);
	assert_true(policy_equal(&p, &before));
	policy_release(&before);
	policy_release(&p);
}

static void test_key_names(void **state)
{
	int key;

	(void)state;
	for (key = 0; key < POLICY_N_KEYS; key++)
		assert_int_equal(policy_key_from_name(policy_key_name((enum policy_key)key)), key);
	assert_string_equal(policy_key_name(POLICY_PROVIDERS), "providers");
	assert_string_equal(policy_key_name(POLICY_FIRST_TOKEN_TIMEOUT_S), "first_token_timeout_s");
	assert_string_equal(policy_key_name(POLICY_PROMPT_FORMAT), "prompt_format");
	assert_null(policy_key_name(POLICY_N_KEYS));
	assert_int_equal(policy_key_from_name("provider"), -EINVAL);
	assert_int_equal(policy_key_from_name("Providers"), -EINVAL);
	assert_int_equal(policy_key_from_name("user.policy.providers"), -EINVAL);
	assert_int_equal(policy_key_from_name(""), -EINVAL);
	assert_string_equal(policy_budget_period_name(POLICY_PERIOD_DAY), "day");
	assert_string_equal(policy_budget_period_name(POLICY_PERIOD_MONTH), "month");
	assert_string_equal(policy_budget_period_name(POLICY_PERIOD_TOTAL), "total");
}

static void test_parse_empty(void **state)
{
	static const char *const empty[] = { "", " \n\t\r\n", "{}", "\n{ }\n" };
	struct policy p;
	char err[256];
	char *json;
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(empty) / sizeof(empty[0]); i++) {
		assert_int_equal(parse(empty[i], &p, err, sizeof(err)), 0);
		assert_string_equal(err, "");
		assert_int_equal(p.set, 0);
		json = policy_to_json(&p);
		assert_string_equal(json, "{}\n");
		free(json);
		assert_int_equal(policy_list_keys(&p, NULL, 0), 0);
		policy_release(&p);
	}
	/* A caller that needs no sentence may pass no buffer. */
	assert_int_equal(policy_parse("", 0, &p, NULL, 0), 0);
	assert_int_equal(parse("[", &p, NULL, 0), -EINVAL);
}

static void test_parse_every_key(void **state)
{
	struct policy p;
	char err[256];

	(void)state;
	assert_int_equal(parse(full_policy, &p, err, sizeof(err)), 0);
	assert_int_equal(p.set, (1u << POLICY_N_KEYS) - 1);
	assert_int_equal(p.providers.n, 2);
	assert_string_equal(p.providers.names[0], "aws");
	assert_string_equal(p.providers.names[1], "azure");
	assert_int_equal(p.residency.n, 2);
	assert_string_equal(p.residency.names[0], "eu");
	assert_string_equal(p.residency.names[1], "de");
	assert_true(p.max_request_usd == 0.25);
	assert_int_equal(p.max_output_tokens, 800);
	assert_int_equal(p.max_prompt_bytes, 65536);
	assert_true(p.budget_usd == 50);
	assert_int_equal(p.budget_period, POLICY_PERIOD_DAY);
	assert_int_equal(p.fallback, 1);
	assert_int_equal(p.order, POLICY_ORDER_PRICE);
	assert_int_equal(p.retries, 3);
	assert_true(p.timeout_s == 30);
	assert_true(p.first_token_timeout_s == 2.5);
	assert_true(p.temperature == 0.2);
	assert_string_equal(p.system, "Answer in \"French\".\n");
	assert_int_equal(p.umask, 077);
	assert_int_equal(p.audit_prompts, 0);
	assert_int_equal(p.prompt_format, POLICY_FORMAT_JSON);
	policy_release(&p);
	assert_int_equal(p.set, 0);
	assert_null(p.system);
	policy_release(NULL);
}

static void test_parse_value_forms(void **state)
{
	struct policy p;
	char err[256];

	(void)state;
	/* One string is a list of one; duplicates go, order stays; the
	 * empty list is valid and allows nothing; bounds are inclusive. */
	assert_int_equal(parse("{\"providers\":\"aws\",\"residency\":[\"us\",\"eu\",\"us\"],"
			       "\"retries\":0,\"temperature\":2,\"max_request_usd\":0,"
			       "\"budget_usd\":1e3,\"timeout_s\":86400,\"umask\":\"0\","
			       "\"system\":\"\",\"first_token_timeout_s\":0.001}",
			       &p, err, sizeof(err)),
			 0);
	assert_int_equal(p.providers.n, 1);
	assert_string_equal(p.providers.names[0], "aws");
	expect_own_value(&p, POLICY_RESIDENCY, "us,eu");
	expect_own_value(&p, POLICY_RETRIES, "0");
	expect_own_value(&p, POLICY_TEMPERATURE, "2");
	expect_own_value(&p, POLICY_MAX_REQUEST_USD, "0");
	expect_own_value(&p, POLICY_BUDGET_USD, "1000");
	expect_own_value(&p, POLICY_TIMEOUT_S, "86400");
	expect_own_value(&p, POLICY_UMASK, "000");
	expect_own_value(&p, POLICY_SYSTEM, "");
	expect_own_value(&p, POLICY_FIRST_TOKEN_TIMEOUT_S, "0.001");
	policy_release(&p);

	assert_int_equal(parse("{\"providers\":[],\"umask\":\"0777\",\"max_request_usd\":-0}", &p,
			       err, sizeof(err)),
			 0);
	assert_true(p.set & POLICY_BIT(POLICY_PROVIDERS));
	assert_int_equal(p.providers.n, 0);
	expect_own_value(&p, POLICY_PROVIDERS, "");
	expect_own_value(&p, POLICY_UMASK, "777");
	/* -0 is written back as 0. */
	expect_own_value(&p, POLICY_MAX_REQUEST_USD, "0");
	policy_release(&p);

	/* Non-ASCII names and text are kept. */
	assert_int_equal(parse("{\"residency\":[\"\xC3\xA9u\"],\"system\":\"R\\u00e9ponds.\"}", &p,
			       err, sizeof(err)),
			 0);
	expect_own_value(&p, POLICY_RESIDENCY, "\xC3\xA9u");
	expect_own_value(&p, POLICY_SYSTEM, "R\xC3\xA9ponds.");
	policy_release(&p);
}

static void test_parse_invalid_values(void **state)
{
	static const char list_rule[] = "must be a list of cloud names, each non-empty, without "
					"commas, control characters or surrounding blanks";
	char message[256];

	(void)state;
	snprintf(message, sizeof(message), "providers %s", list_rule);
	expect_invalid("{\"providers\":\"aws,azure\"}", message);
	expect_invalid("{\"providers\":[\"aws\",1]}", message);
	expect_invalid("{\"providers\":[\"\"]}", message);
	expect_invalid("{\"providers\":[\" aws\"]}", message);
	expect_invalid("{\"providers\":[\"aws\\t\"]}", message);
	expect_invalid("{\"providers\":[\"a\\nb\"]}", message);
	expect_invalid("{\"providers\":{\"aws\":true}}", message);
	expect_invalid("{\"providers\":null}", message);
	expect_invalid("{\"residency\":[\"eu\",\"us,de\"]}",
		       "residency must be a list of geo tags, each non-empty, without commas, "
		       "control characters or surrounding blanks");
	expect_invalid("{\"residency\":5}",
		       "residency must be a list of geo tags, each non-empty, without commas, "
		       "control characters or surrounding blanks");

	expect_invalid("{\"max_request_usd\":-0.01}", "max_request_usd must be a number >= 0");
	expect_invalid("{\"max_request_usd\":\"1\"}", "max_request_usd must be a number >= 0");
	expect_invalid("{\"max_request_usd\":true}", "max_request_usd must be a number >= 0");
	expect_invalid("{\"max_output_tokens\":0}", "max_output_tokens must be an integer >= 1");
	expect_invalid("{\"max_output_tokens\":5.0}", "max_output_tokens must be an integer >= 1");
	expect_invalid("{\"max_output_tokens\":\"5\"}",
		       "max_output_tokens must be an integer >= 1");
	expect_invalid("{\"max_prompt_bytes\":-1}", "max_prompt_bytes must be an integer >= 1");
	expect_invalid("{\"max_prompt_bytes\":1.5}", "max_prompt_bytes must be an integer >= 1");
	expect_invalid("{\"budget_usd\":-5}", "budget_usd must be a number >= 0");
	expect_invalid("{\"budget_usd\":null}", "budget_usd must be a number >= 0");
	expect_invalid("{\"budget_period\":\"week\"}",
		       "budget_period must be one of day, month, total");
	expect_invalid("{\"budget_period\":\"Month\"}",
		       "budget_period must be one of day, month, total");
	expect_invalid("{\"budget_period\":1}", "budget_period must be one of day, month, total");
	expect_invalid("{\"fallback\":\"true\"}", "fallback must be true or false");
	expect_invalid("{\"fallback\":1}", "fallback must be true or false");
	expect_invalid("{\"order\":\"random\"}", "order must be one of config, price, latency");
	expect_invalid("{\"order\":[\"price\"]}", "order must be one of config, price, latency");
	expect_invalid("{\"retries\":11}", "retries must be an integer from 0 to 10");
	expect_invalid("{\"retries\":-1}", "retries must be an integer from 0 to 10");
	expect_invalid("{\"retries\":2.5}", "retries must be an integer from 0 to 10");
	expect_invalid("{\"timeout_s\":0}",
		       "timeout_s must be a number of seconds > 0 and <= 86400");
	expect_invalid("{\"timeout_s\":-3}",
		       "timeout_s must be a number of seconds > 0 and <= 86400");
	expect_invalid("{\"timeout_s\":86400.5}",
		       "timeout_s must be a number of seconds > 0 and <= 86400");
	expect_invalid("{\"first_token_timeout_s\":0}",
		       "first_token_timeout_s must be a number of seconds > 0 and <= 86400");
	expect_invalid("{\"first_token_timeout_s\":\"10\"}",
		       "first_token_timeout_s must be a number of seconds > 0 and <= 86400");
	expect_invalid("{\"temperature\":2.01}", "temperature must be a number from 0 to 2");
	expect_invalid("{\"temperature\":-0.5}", "temperature must be a number from 0 to 2");
	expect_invalid("{\"temperature\":\"warm\"}", "temperature must be a number from 0 to 2");
	expect_invalid("{\"system\":7}", "system must be UTF-8 text without NUL bytes");
	expect_invalid("{\"system\":[\"a\"]}", "system must be UTF-8 text without NUL bytes");
	expect_invalid("{\"umask\":77}",
		       "umask must be an octal string from \"000\" to \"777\", such as \"077\"");
	expect_invalid("{\"umask\":\"078\"}",
		       "umask must be an octal string from \"000\" to \"777\", such as \"077\"");
	expect_invalid("{\"umask\":\"1000\"}",
		       "umask must be an octal string from \"000\" to \"777\", such as \"077\"");
	expect_invalid("{\"umask\":\"\"}",
		       "umask must be an octal string from \"000\" to \"777\", such as \"077\"");
	expect_invalid("{\"umask\":\"00777\"}",
		       "umask must be an octal string from \"000\" to \"777\", such as \"077\"");
	expect_invalid("{\"audit_prompts\":\"yes\"}", "audit_prompts must be true or false");
	expect_invalid("{\"prompt_format\":\"xml\"}",
		       "prompt_format must be one of auto, text, json");
	expect_invalid("{\"prompt_format\":null}", "prompt_format must be one of auto, text, json");

	/* A good key before the bad one is not kept either. */
	expect_invalid("{\"providers\":[\"aws\"],\"system\":\"x\",\"retries\":99}",
		       "retries must be an integer from 0 to 10");
}

static void test_parse_invalid_documents(void **state)
{
	(void)state;
	expect_invalid("{\"provider\":[\"aws\"]}", "unknown policy key \"provider\"");
	expect_invalid("{\"retries\":1,\"Retries\":1}", "unknown policy key \"Retries\"");
	expect_invalid("{\"a\\nb\":1}", "unknown policy key \"a?b\"");
	expect_invalid("[]", "the policy must be a JSON object");
	expect_invalid("5", "the policy must be a JSON object");
	expect_invalid("null", "the policy must be a JSON object");
	expect_invalid("\"providers\"", "the policy must be a JSON object");
	expect_invalid("{\"retries\":1,\"retries\":2}",
		       "the policy is not valid JSON: duplicate object key near '\"retries\"' at "
		       "line 1 column 22");
	expect_invalid("{\"retries\":1", "the policy is not valid JSON: '}' expected near end of "
					 "file at line 1 column 12");
	expect_invalid("{} {}", "the policy is not valid JSON: end of file expected near '{' at "
				"line 1 column 4");
	expect_invalid("{\"system\":\"a\\u0000b\"}",
		       "the policy is not valid JSON: a string holds \\u0000, which is not "
		       "allowed at line 1 column 20");
}

/* Found by the same habit as prompt.c's fuzzing: jansson quotes the bytes
 * near a syntax error, and the sentence must stay one line. */
static void test_parse_error_one_line(void **state)
{
	static const char text[] = "{\"retries\":\f\f\n\t";
	struct policy p;
	char err[256];
	size_t i;

	(void)state;
	assert_int_equal(parse(text, &p, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "not valid JSON"));
	for (i = 0; err[i]; i++)
		assert_true((unsigned char)err[i] >= 0x20);
	/* A short buffer gets the start of the sentence. */
	assert_int_equal(parse("{\"x\":1}", &p, err, 8), -EINVAL);
	assert_string_equal(err, "unknown");
}

static void test_round_trip(void **state)
{
	static const char *const texts[] = {
		"{\"system\":\"tab\\t cr\\r quote\\\" backslash\\\\ bell\\u0007 "
		"del\\u007f \\u00e9\\u20ac\\ud83d\\ude00\"}",
		"{\"max_request_usd\":0.1,\"budget_usd\":1e-7,\"temperature\":0.3,"
		"\"timeout_s\":1e-3,\"first_token_timeout_s\":12345.678}",
		"{\"budget_usd\":1e15,\"max_request_usd\":1.2345678901234567e19}",
		"{\"budget_usd\":0.30000000000000004,\"max_request_usd\":2.2250738585072014e-308}",
		"{\"providers\":[],\"residency\":[\"x y\",\"\xF0\x9F\x98\x80\"]}",
	};
	struct policy p;
	struct policy again;
	char err[256];
	char *json;
	char *json_again;
	size_t i;

	(void)state;
	/* The canonical text of the full policy is the text it came from. */
	assert_int_equal(parse(full_policy, &p, err, sizeof(err)), 0);
	json = policy_to_json(&p);
	assert_string_equal(json, full_policy);
	free(json);
	policy_release(&p);

	for (i = 0; i < sizeof(texts) / sizeof(texts[0]); i++) {
		assert_int_equal(parse(texts[i], &p, err, sizeof(err)), 0);
		json = policy_to_json(&p);
		assert_non_null(json);
		assert_int_equal(parse(json, &again, err, sizeof(err)), 0);
		assert_true(policy_equal(&p, &again));
		json_again = policy_to_json(&again);
		assert_string_equal(json, json_again);
		free(json_again);
		free(json);
		policy_release(&again);
		policy_release(&p);
	}

	assert_int_equal(parse(texts[1], &p, err, sizeof(err)), 0);
	json = policy_to_json(&p);
	assert_string_equal(json, "{\n"
				  "  \"max_request_usd\": 0.1,\n"
				  "  \"budget_usd\": 1e-07,\n"
				  "  \"timeout_s\": 0.001,\n"
				  "  \"first_token_timeout_s\": 12345.678,\n"
				  "  \"temperature\": 0.3\n"
				  "}\n");
	free(json);
	policy_release(&p);

	assert_int_equal(parse(texts[0], &p, err, sizeof(err)), 0);
	json = policy_to_json(&p);
	assert_string_equal(json, "{\n"
				  "  \"system\": \"tab\\t cr\\r quote\\\" backslash\\\\ "
				  "bell\\u0007 del\x7f \xC3\xA9\xE2\x82\xAC\xF0\x9F\x98\x80\"\n"
				  "}\n");
	free(json);
	policy_release(&p);
}

static void test_equal_and_copy(void **state)
{
	struct policy a;
	struct policy b;
	char err[256];

	(void)state;
	assert_int_equal(parse(full_policy, &a, err, sizeof(err)), 0);
	assert_int_equal(policy_copy(&b, &a), 0);
	assert_true(policy_equal(&a, &b));
	/* The copy owns its own strings. */
	assert_ptr_not_equal(a.system, b.system);
	assert_ptr_not_equal(a.providers.names[0], b.providers.names[0]);
	assert_int_equal(set(&b, POLICY_PROVIDERS, "azure,aws", err, sizeof(err)), 0);
	assert_false(policy_equal(&a, &b));
	assert_int_equal(set(&b, POLICY_PROVIDERS, "aws,azure", err, sizeof(err)), 0);
	assert_true(policy_equal(&a, &b));
	assert_int_equal(set(&b, POLICY_SYSTEM, "other", err, sizeof(err)), 0);
	assert_false(policy_equal(&a, &b));
	assert_int_equal(policy_unset(&b, POLICY_SYSTEM), 0);
	assert_false(policy_equal(&a, &b));
	policy_release(&b);
	policy_release(&a);
}

struct xattr_case {
	enum policy_key key;
	const char *in;
	const char *out;
};

static void test_xattr_set_get(void **state)
{
	static const struct xattr_case cases[] = {
		{ POLICY_PROVIDERS, "aws", "aws" },
		{ POLICY_PROVIDERS, "aws,azure", "aws,azure" },
		{ POLICY_PROVIDERS, " aws , azure\n", "aws,azure" },
		{ POLICY_PROVIDERS, "aws,\tazure,aws", "aws,azure" },
		{ POLICY_PROVIDERS, "", "" },
		{ POLICY_PROVIDERS, " \n", "" },
		{ POLICY_RESIDENCY, "eu, us", "eu,us" },
		{ POLICY_RESIDENCY, "local", "local" },
		{ POLICY_RESIDENCY, "x y,z", "x y,z" },
		{ POLICY_MAX_REQUEST_USD, "0.25", "0.25" },
		{ POLICY_MAX_REQUEST_USD, "0", "0" },
		{ POLICY_MAX_REQUEST_USD, "-0", "0" },
		{ POLICY_MAX_REQUEST_USD, ".5", "0.5" },
		{ POLICY_MAX_REQUEST_USD, "3.", "3" },
		{ POLICY_MAX_REQUEST_USD, "1e2", "100" },
		{ POLICY_MAX_REQUEST_USD, "+0.1\n", "0.1" },
		{ POLICY_MAX_REQUEST_USD, "1E-5", "1e-05" },
		{ POLICY_MAX_OUTPUT_TOKENS, "800", "800" },
		{ POLICY_MAX_OUTPUT_TOKENS, "+1", "1" },
		{ POLICY_MAX_OUTPUT_TOKENS, "0009", "9" },
		{ POLICY_MAX_PROMPT_BYTES, "1048576", "1048576" },
		{ POLICY_MAX_PROMPT_BYTES, "9223372036854775807", "9223372036854775807" },
		{ POLICY_BUDGET_USD, "50", "50" },
		{ POLICY_BUDGET_USD, "50.0", "50" },
		{ POLICY_BUDGET_USD, "1000000", "1000000" },
		{ POLICY_BUDGET_USD, "12.345", "12.345" },
		{ POLICY_BUDGET_PERIOD, "day", "day" },
		{ POLICY_BUDGET_PERIOD, "month", "month" },
		{ POLICY_BUDGET_PERIOD, " total\n", "total" },
		{ POLICY_FALLBACK, "true", "true" },
		{ POLICY_FALLBACK, "false", "false" },
		{ POLICY_ORDER, "config", "config" },
		{ POLICY_ORDER, "price", "price" },
		{ POLICY_ORDER, "latency", "latency" },
		{ POLICY_RETRIES, "0", "0" },
		{ POLICY_RETRIES, "10", "10" },
		{ POLICY_TIMEOUT_S, "30", "30" },
		{ POLICY_TIMEOUT_S, "0.5", "0.5" },
		{ POLICY_TIMEOUT_S, "86400", "86400" },
		{ POLICY_FIRST_TOKEN_TIMEOUT_S, "2.5", "2.5" },
		{ POLICY_TEMPERATURE, "0", "0" },
		{ POLICY_TEMPERATURE, "0.7", "0.7" },
		{ POLICY_TEMPERATURE, "2", "2" },
		{ POLICY_SYSTEM, "Be brief.", "Be brief." },
		{ POLICY_SYSTEM, " Two lines,\nexactly. ", " Two lines,\nexactly. " },
		{ POLICY_SYSTEM, "", "" },
		{ POLICY_UMASK, "077", "077" },
		{ POLICY_UMASK, "77", "077" },
		{ POLICY_UMASK, "0027", "027" },
		{ POLICY_UMASK, "7", "007" },
		{ POLICY_UMASK, "777\n", "777" },
		{ POLICY_AUDIT_PROMPTS, "true", "true" },
		{ POLICY_AUDIT_PROMPTS, "false", "false" },
		{ POLICY_PROMPT_FORMAT, "auto", "auto" },
		{ POLICY_PROMPT_FORMAT, "text", "text" },
		{ POLICY_PROMPT_FORMAT, "json", "json" },
	};
	struct policy p;
	struct policy reread;
	char err[256];
	char *json;
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		memset(&p, 0, sizeof(p));
		assert_int_equal(set(&p, cases[i].key, cases[i].in, err, sizeof(err)), 0);
		assert_string_equal(err, "");
		assert_int_equal(p.set, POLICY_BIT(cases[i].key));
		expect_own_value(&p, cases[i].key, cases[i].out);
		/* What the xattr set, the .policy file keeps. */
		json = policy_to_json(&p);
		assert_int_equal(parse(json, &reread, err, sizeof(err)), 0);
		assert_true(policy_equal(&p, &reread));
		free(json);
		policy_release(&reread);
		policy_release(&p);
	}
}

static void test_xattr_replaces_and_keeps(void **state)
{
	struct policy p;
	char err[256];

	(void)state;
	memset(&p, 0, sizeof(p));
	assert_int_equal(set(&p, POLICY_PROVIDERS, "aws,azure", err, sizeof(err)), 0);
	assert_int_equal(set(&p, POLICY_PROVIDERS, "gcp", err, sizeof(err)), 0);
	expect_own_value(&p, POLICY_PROVIDERS, "gcp");
	assert_int_equal(set(&p, POLICY_SYSTEM, "one", err, sizeof(err)), 0);
	assert_int_equal(set(&p, POLICY_SYSTEM, "two", err, sizeof(err)), 0);
	expect_own_value(&p, POLICY_SYSTEM, "two");
	/* A bad value leaves the old one in force. */
	assert_int_equal(set(&p, POLICY_PROVIDERS, "aws,,gcp", err, sizeof(err)), -EINVAL);
	expect_own_value(&p, POLICY_PROVIDERS, "gcp");
	assert_int_equal(p.set, POLICY_BIT(POLICY_PROVIDERS) | POLICY_BIT(POLICY_SYSTEM));
	/* The value's length counts, not a NUL. */
	assert_int_equal(policy_set_value(&p, POLICY_RETRIES, "3x", 1, err, sizeof(err)), 0);
	expect_own_value(&p, POLICY_RETRIES, "3");
	assert_int_equal(policy_set_value(&p, POLICY_RETRIES, "4", 0, err, sizeof(err)), -EINVAL);
	assert_int_equal(policy_set_value(&p, POLICY_N_KEYS, "4", 1, err, sizeof(err)), -EINVAL);
	assert_string_equal(err, "unknown policy key");
	policy_release(&p);
}

static void test_xattr_invalid(void **state)
{
	static const char providers_rule[] =
		"providers must be a list of cloud names, each non-empty, without commas, "
		"control characters or surrounding blanks";
	static const char residency_rule[] =
		"residency must be a list of geo tags, each non-empty, without commas, "
		"control characters or surrounding blanks";
	static const char umask_rule[] =
		"umask must be an octal string from \"000\" to \"777\", such as \"077\"";
	static const char timeout_rule[] = "timeout_s must be a number of seconds > 0 and <= 86400";

	(void)state;
	expect_invalid_value(POLICY_PROVIDERS, "aws,,azure", providers_rule);
	expect_invalid_value(POLICY_PROVIDERS, "aws,", providers_rule);
	expect_invalid_value(POLICY_PROVIDERS, ",aws", providers_rule);
	expect_invalid_value(POLICY_PROVIDERS, "aws, ,azure", providers_rule);
	expect_invalid_value(POLICY_PROVIDERS, "a\x01z", providers_rule);
	expect_invalid_value(POLICY_PROVIDERS, "caf\xC3", providers_rule);
	expect_invalid_value(POLICY_RESIDENCY, "eu,\xFF", residency_rule);
	expect_invalid_value(POLICY_RESIDENCY, ",", residency_rule);

	expect_invalid_value(POLICY_MAX_REQUEST_USD, "-1", "max_request_usd must be a number >= 0");
	expect_invalid_value(POLICY_MAX_REQUEST_USD, "", "max_request_usd must be a number >= 0");
	expect_invalid_value(POLICY_MAX_REQUEST_USD, "$5", "max_request_usd must be a number >= 0");
	expect_invalid_value(POLICY_MAX_REQUEST_USD, "0x10",
			     "max_request_usd must be a number >= 0");
	expect_invalid_value(POLICY_MAX_REQUEST_USD, "inf",
			     "max_request_usd must be a number >= 0");
	expect_invalid_value(POLICY_MAX_REQUEST_USD, "nan",
			     "max_request_usd must be a number >= 0");
	expect_invalid_value(POLICY_MAX_REQUEST_USD, "1e999",
			     "max_request_usd must be a number >= 0");
	expect_invalid_value(POLICY_MAX_REQUEST_USD, ".", "max_request_usd must be a number >= 0");
	expect_invalid_value(POLICY_MAX_REQUEST_USD, "1e", "max_request_usd must be a number >= 0");
	expect_invalid_value(POLICY_MAX_REQUEST_USD, "1 2",
			     "max_request_usd must be a number >= 0");
	expect_invalid_value(POLICY_MAX_REQUEST_USD, "0,5",
			     "max_request_usd must be a number >= 0");
	expect_invalid_value(POLICY_MAX_OUTPUT_TOKENS, "0",
			     "max_output_tokens must be an integer >= 1");
	expect_invalid_value(POLICY_MAX_OUTPUT_TOKENS, "1.0",
			     "max_output_tokens must be an integer >= 1");
	expect_invalid_value(POLICY_MAX_OUTPUT_TOKENS, "1e3",
			     "max_output_tokens must be an integer >= 1");
	expect_invalid_value(POLICY_MAX_OUTPUT_TOKENS, "many",
			     "max_output_tokens must be an integer >= 1");
	expect_invalid_value(POLICY_MAX_PROMPT_BYTES, "-5",
			     "max_prompt_bytes must be an integer >= 1");
	expect_invalid_value(POLICY_MAX_PROMPT_BYTES, "9223372036854775808",
			     "max_prompt_bytes must be an integer >= 1");
	expect_invalid_value(POLICY_MAX_PROMPT_BYTES, "1MiB",
			     "max_prompt_bytes must be an integer >= 1");
	expect_invalid_value(POLICY_BUDGET_USD, "-0.5", "budget_usd must be a number >= 0");
	expect_invalid_value(POLICY_BUDGET_USD, "fifty", "budget_usd must be a number >= 0");
	expect_invalid_value(POLICY_BUDGET_PERIOD, "year",
			     "budget_period must be one of day, month, total");
	expect_invalid_value(POLICY_BUDGET_PERIOD, "DAY",
			     "budget_period must be one of day, month, total");
	expect_invalid_value(POLICY_FALLBACK, "yes", "fallback must be true or false");
	expect_invalid_value(POLICY_FALLBACK, "1", "fallback must be true or false");
	expect_invalid_value(POLICY_FALLBACK, "True", "fallback must be true or false");
	expect_invalid_value(POLICY_ORDER, "cheapest",
			     "order must be one of config, price, latency");
	expect_invalid_value(POLICY_RETRIES, "11", "retries must be an integer from 0 to 10");
	expect_invalid_value(POLICY_RETRIES, "-1", "retries must be an integer from 0 to 10");
	expect_invalid_value(POLICY_RETRIES, "2.0", "retries must be an integer from 0 to 10");
	expect_invalid_value(POLICY_TIMEOUT_S, "0", timeout_rule);
	expect_invalid_value(POLICY_TIMEOUT_S, "-0", timeout_rule);
	expect_invalid_value(POLICY_TIMEOUT_S, "90000", timeout_rule);
	expect_invalid_value(POLICY_TIMEOUT_S, "30s", timeout_rule);
	expect_invalid_value(POLICY_FIRST_TOKEN_TIMEOUT_S, "0",
			     "first_token_timeout_s must be a number of seconds > 0 and <= 86400");
	expect_invalid_value(POLICY_TEMPERATURE, "3", "temperature must be a number from 0 to 2");
	expect_invalid_value(POLICY_TEMPERATURE, "-0.1",
			     "temperature must be a number from 0 to 2");
	expect_invalid_value(POLICY_SYSTEM, "caf\xC3",
			     "system must be UTF-8 text without NUL bytes");
	expect_invalid_value(POLICY_UMASK, "0o77", umask_rule);
	expect_invalid_value(POLICY_UMASK, "8", umask_rule);
	expect_invalid_value(POLICY_UMASK, "1000", umask_rule);
	expect_invalid_value(POLICY_UMASK, "", umask_rule);
	expect_invalid_value(POLICY_UMASK, "-77", umask_rule);
	expect_invalid_value(POLICY_AUDIT_PROMPTS, "no", "audit_prompts must be true or false");
	expect_invalid_value(POLICY_PROMPT_FORMAT, "JSON",
			     "prompt_format must be one of auto, text, json");
}

static void test_xattr_nul_bytes(void **state)
{
	struct policy p;
	char err[256];

	(void)state;
	memset(&p, 0, sizeof(p));
	assert_int_equal(policy_set_value(&p, POLICY_SYSTEM, "a\0b", 3, err, sizeof(err)), -EINVAL);
	assert_string_equal(err, "system must be UTF-8 text without NUL bytes");
	assert_int_equal(policy_set_value(&p, POLICY_PROVIDERS, "aws\0x", 5, err, sizeof(err)),
			 -EINVAL);
	assert_int_equal(policy_set_value(&p, POLICY_RETRIES, "2\0", 2, err, sizeof(err)), -EINVAL);
	assert_int_equal(policy_set_value(&p, POLICY_ORDER, "price\0", 6, err, sizeof(err)),
			 -EINVAL);
	assert_int_equal(p.set, 0);
}

static void test_xattr_unset_and_list(void **state)
{
	static const char all_names[] = "user.policy.providers\0user.policy.residency\0"
					"user.policy.max_request_usd\0"
					"user.policy.max_output_tokens\0"
					"user.policy.max_prompt_bytes\0user.policy.budget_usd\0"
					"user.policy.budget_period\0user.policy.fallback\0"
					"user.policy.order\0user.policy.retries\0"
					"user.policy.timeout_s\0user.policy.first_token_timeout_s\0"
					"user.policy.temperature\0user.policy.system\0"
					"user.policy.umask\0user.policy.audit_prompts\0"
					"user.policy.prompt_format\0";
	struct policy p;
	char buf[1024];
	char err[256];
	char *value;
	int key;

	(void)state;
	assert_int_equal(parse(full_policy, &p, err, sizeof(err)), 0);
	assert_int_equal(policy_list_keys(&p, NULL, 0), sizeof(all_names) - 1);
	assert_int_equal(policy_list_keys(&p, buf, sizeof(buf)), sizeof(all_names) - 1);
	assert_memory_equal(buf, all_names, sizeof(all_names) - 1);
	assert_int_equal(policy_list_keys(&p, buf, sizeof(all_names) - 2), -ERANGE);

	assert_int_equal(policy_unset(&p, POLICY_SYSTEM), 0);
	assert_null(p.system);
	assert_int_equal(policy_get_value(&p, POLICY_SYSTEM, &value), -ENODATA);
	assert_null(value);
	assert_int_equal(policy_unset(&p, POLICY_SYSTEM), -ENODATA);
	assert_int_equal(policy_unset(&p, POLICY_N_KEYS), -ENODATA);
	/* Every key but the lists and system: unset, then the policy no
	 * longer lists it. */
	for (key = POLICY_MAX_REQUEST_USD; key < POLICY_N_KEYS; key++) {
		if (key != POLICY_SYSTEM)
			assert_int_equal(policy_unset(&p, (enum policy_key)key), 0);
		assert_int_equal(policy_get_value(&p, (enum policy_key)key, &value), -ENODATA);
	}
	assert_int_equal(policy_list_keys(&p, buf, sizeof(buf)),
			 sizeof("user.policy.providers\0user.policy.residency") - 1 + 1);
	assert_memory_equal(buf, "user.policy.providers\0user.policy.residency\0",
			    sizeof("user.policy.providers\0user.policy.residency"));
	assert_int_equal(policy_unset(&p, POLICY_PROVIDERS), 0);
	assert_null(p.providers.names);
	assert_int_equal(policy_unset(&p, POLICY_RESIDENCY), 0);
	assert_int_equal(p.set, 0);
	assert_int_equal(policy_list_keys(&p, buf, sizeof(buf)), 0);
	value = policy_to_json(&p);
	assert_string_equal(value, "{}\n");
	free(value);
	policy_release(&p);
}

/* Composition */

/* A policy from its .policy TEXT, for a chain. */
static void policy_from(struct policy *p, const char *text)
{
	char err[256];

	assert_int_equal(parse(text, p, err, sizeof(err)), 0);
}

static void test_compose_defaults(void **state)
{
	const struct policy *chain[3] = { NULL, NULL, NULL };
	struct effective_policy e;
	struct policy empty;

	(void)state;
	memset(&empty, 0, sizeof(empty));
	chain[1] = &empty;
	assert_int_equal(policy_compose(chain, 3, 0, &e), 0);
	assert_false(e.providers_constrained);
	assert_false(e.residency_constrained);
	assert_false(e.has_max_request_usd);
	assert_int_equal(e.max_output_tokens, 0);
	assert_int_equal(e.max_prompt_bytes, 1048576);
	assert_int_equal(e.n_budgets, 0);
	assert_null(e.budgets);
	assert_int_equal(e.fallback, 0);
	assert_int_equal(e.order, POLICY_ORDER_CONFIG);
	assert_int_equal(e.retries, 2);
	assert_true(e.timeout_s == 0);
	assert_true(e.first_token_timeout_s == 0);
	assert_false(e.has_temperature);
	assert_null(e.system);
	assert_int_equal(e.umask, 0);
	assert_int_equal(e.audit_prompts, 0);
	assert_int_equal(e.prompt_format, POLICY_FORMAT_AUTO);

	expect_effective(&e, POLICY_PROVIDERS, NULL);
	expect_effective(&e, POLICY_RESIDENCY, NULL);
	expect_effective(&e, POLICY_MAX_REQUEST_USD, NULL);
	expect_effective(&e, POLICY_MAX_OUTPUT_TOKENS, NULL);
	expect_effective(&e, POLICY_MAX_PROMPT_BYTES, "1048576");
	expect_effective(&e, POLICY_BUDGET_USD, NULL);
	expect_effective(&e, POLICY_BUDGET_PERIOD, NULL);
	expect_effective(&e, POLICY_FALLBACK, "false");
	expect_effective(&e, POLICY_ORDER, "config");
	expect_effective(&e, POLICY_RETRIES, "2");
	expect_effective(&e, POLICY_TIMEOUT_S, NULL);
	expect_effective(&e, POLICY_FIRST_TOKEN_TIMEOUT_S, NULL);
	expect_effective(&e, POLICY_TEMPERATURE, NULL);
	expect_effective(&e, POLICY_SYSTEM, NULL);
	expect_effective(&e, POLICY_UMASK, "000");
	expect_effective(&e, POLICY_AUDIT_PROMPTS, "false");
	expect_effective(&e, POLICY_PROMPT_FORMAT, "auto");
	expect_effective(&e, POLICY_N_KEYS, NULL);
	/* Nothing constrains: any deployment, with or without tags. */
	assert_true(effective_allows(&e, "aws", NULL, 0));
	effective_release(&e);
	effective_release(NULL);

	/* Under any/, fallback defaults to true; an empty chain composes. */
	assert_int_equal(policy_compose(NULL, 0, 1, &e), 0);
	assert_int_equal(e.fallback, 1);
	expect_effective(&e, POLICY_FALLBACK, "true");
	effective_release(&e);
}

static void test_compose_intersection(void **state)
{
	static const char *const eu_de[] = { "eu", "de" };
	static const char *const us[] = { "us" };
	static const char *const global[] = { "global" };
	const struct policy *chain[4];
	struct effective_policy e;
	struct policy root;
	struct policy cloud;
	struct policy leaf;

	(void)state;
	policy_from(&root, "{\"providers\":[\"aws\",\"azure\",\"gcp\"],\"residency\":[\"eu\"]}");
	policy_from(&cloud, "{\"providers\":[\"openai\",\"gcp\",\"azure\"]}");
	policy_from(&leaf, "{\"residency\":[\"us\",\"de\",\"eu\"],\"retries\":1}");
	chain[0] = &root;
	chain[1] = NULL;
	chain[2] = &cloud;
	chain[3] = &leaf;
	assert_int_equal(policy_compose(chain, 4, 0, &e), 0);
	assert_true(e.providers_constrained);
	/* In the topmost level's order. */
	expect_effective(&e, POLICY_PROVIDERS, "azure,gcp");
	expect_effective(&e, POLICY_RESIDENCY, "eu");
	assert_true(effective_allows(&e, "gcp", eu_de, 2));
	assert_true(effective_allows(&e, "azure", eu_de, 2));
	assert_false(effective_allows(&e, "aws", eu_de, 2));
	assert_false(effective_allows(&e, "openai", eu_de, 2));
	assert_false(effective_allows(&e, "gcp", us, 1));
	assert_false(effective_allows(&e, "gcp", global, 1));
	assert_false(effective_allows(&e, "gcp", NULL, 0));
	/* Matched exactly: no prefix, no case folding. */
	assert_false(effective_allows(&e, "Azure", eu_de, 2));
	assert_false(effective_allows(&e, "azur", eu_de, 2));
	effective_release(&e);

	/* A level with an empty list allows nothing below it. */
	policy_release(&leaf);
	policy_from(&leaf, "{\"providers\":[]}");
	assert_int_equal(policy_compose(chain, 4, 0, &e), 0);
	assert_true(e.providers_constrained);
	assert_int_equal(e.providers.n, 0);
	expect_effective(&e, POLICY_PROVIDERS, "");
	assert_false(effective_allows(&e, "azure", eu_de, 2));
	effective_release(&e);

	/* Disjoint lists: empty too. */
	policy_release(&leaf);
	policy_from(&leaf, "{\"providers\":[\"aws\"],\"residency\":[\"us\"]}");
	assert_int_equal(policy_compose(chain, 4, 0, &e), 0);
	expect_effective(&e, POLICY_PROVIDERS, "");
	expect_effective(&e, POLICY_RESIDENCY, "");
	assert_false(effective_allows(&e, "aws", us, 1));
	effective_release(&e);

	/* Only the leaf constrains residency: any of several tags passes. */
	policy_release(&root);
	memset(&root, 0, sizeof(root));
	policy_release(&leaf);
	policy_from(&leaf, "{\"residency\":[\"de\",\"us\"]}");
	assert_int_equal(policy_compose(chain, 4, 0, &e), 0);
	expect_effective(&e, POLICY_PROVIDERS, "openai,gcp,azure");
	expect_effective(&e, POLICY_RESIDENCY, "de,us");
	assert_true(effective_allows(&e, "gcp", eu_de, 2));
	assert_true(effective_allows(&e, "openai", us, 1));
	assert_false(effective_allows(&e, "gcp", global, 1));
	effective_release(&e);

	policy_release(&leaf);
	policy_release(&cloud);
	policy_release(&root);
}

static void test_compose_caps(void **state)
{
	const struct policy *chain[3];
	struct effective_policy e;
	struct policy root;
	struct policy mid;
	struct policy leaf;

	(void)state;
	policy_from(&root, "{\"max_request_usd\":1,\"max_output_tokens\":4000,"
			   "\"max_prompt_bytes\":4194304}");
	policy_from(&mid, "{\"max_request_usd\":0.5,\"max_output_tokens\":8000}");
	policy_from(&leaf, "{\"max_request_usd\":2,\"max_prompt_bytes\":8388608}");
	chain[0] = &root;
	chain[1] = &mid;
	chain[2] = &leaf;
	assert_int_equal(policy_compose(chain, 3, 0, &e), 0);
	assert_true(e.has_max_request_usd);
	assert_true(e.max_request_usd == 0.5);
	assert_int_equal(e.max_output_tokens, 4000);
	/* The root may raise the default; the leaf cannot go above it. */
	assert_int_equal(e.max_prompt_bytes, 4194304);
	expect_effective(&e, POLICY_MAX_REQUEST_USD, "0.5");
	expect_effective(&e, POLICY_MAX_OUTPUT_TOKENS, "4000");
	expect_effective(&e, POLICY_MAX_PROMPT_BYTES, "4194304");
	effective_release(&e);

	policy_release(&leaf);
	policy_from(&leaf, "{\"max_request_usd\":0,\"max_output_tokens\":1,"
			   "\"max_prompt_bytes\":1000}");
	assert_int_equal(policy_compose(chain, 3, 0, &e), 0);
	expect_effective(&e, POLICY_MAX_REQUEST_USD, "0");
	expect_effective(&e, POLICY_MAX_OUTPUT_TOKENS, "1");
	expect_effective(&e, POLICY_MAX_PROMPT_BYTES, "1000");
	effective_release(&e);

	/* A cap set only below applies from there. */
	assert_int_equal(policy_compose(chain, 1, 0, &e), 0);
	expect_effective(&e, POLICY_MAX_REQUEST_USD, "1");
	effective_release(&e);

	policy_release(&leaf);
	policy_release(&mid);
	policy_release(&root);
}

static void test_compose_budgets(void **state)
{
	const struct policy *chain[5];
	struct effective_policy e;
	struct policy root;
	struct policy cloud;
	struct policy model;
	struct policy workspace;

	(void)state;
	policy_from(&root, "{\"budget_usd\":100}");
	policy_from(&cloud, "{\"budget_usd\":10,\"budget_period\":\"day\"}");
	/* A period without a budget does nothing. */
	policy_from(&model, "{\"budget_period\":\"total\"}");
	policy_from(&workspace, "{\"budget_usd\":0,\"budget_period\":\"total\"}");
	chain[0] = &root;
	chain[1] = NULL;
	chain[2] = &cloud;
	chain[3] = &model;
	chain[4] = &workspace;
	assert_int_equal(policy_compose(chain, 5, 0, &e), 0);
	assert_int_equal(e.n_budgets, 3);
	assert_int_equal(e.budgets[0].level, 0);
	assert_true(e.budgets[0].usd == 100);
	assert_int_equal(e.budgets[0].period, POLICY_PERIOD_MONTH);
	assert_int_equal(e.budgets[1].level, 2);
	assert_true(e.budgets[1].usd == 10);
	assert_int_equal(e.budgets[1].period, POLICY_PERIOD_DAY);
	assert_int_equal(e.budgets[2].level, 4);
	assert_true(e.budgets[2].usd == 0);
	assert_int_equal(e.budgets[2].period, POLICY_PERIOD_TOTAL);
	/* The budgets are read through .usage, not user.effective. */
	expect_effective(&e, POLICY_BUDGET_USD, NULL);
	expect_effective(&e, POLICY_BUDGET_PERIOD, NULL);
	effective_release(&e);

	assert_int_equal(policy_compose(chain, 2, 0, &e), 0);
	assert_int_equal(e.n_budgets, 1);
	assert_int_equal(e.budgets[0].level, 0);
	effective_release(&e);

	policy_release(&workspace);
	policy_release(&model);
	policy_release(&cloud);
	policy_release(&root);
}

static void test_compose_nearest_wins(void **state)
{
	const struct policy *chain[3];
	struct effective_policy e;
	struct policy root;
	struct policy leaf;

	(void)state;
	policy_from(&root, "{\"fallback\":false,\"order\":\"price\",\"retries\":5,"
			   "\"timeout_s\":60,\"first_token_timeout_s\":10,\"temperature\":0.2,"
			   "\"system\":\"Root.\",\"umask\":\"077\",\"audit_prompts\":true,"
			   "\"prompt_format\":\"json\"}");
	chain[0] = &root;
	chain[1] = NULL;
	chain[2] = NULL;
	/* Set above, it holds below, under any/ too. */
	assert_int_equal(policy_compose(chain, 3, 1, &e), 0);
	expect_effective(&e, POLICY_FALLBACK, "false");
	expect_effective(&e, POLICY_ORDER, "price");
	expect_effective(&e, POLICY_RETRIES, "5");
	expect_effective(&e, POLICY_TIMEOUT_S, "60");
	expect_effective(&e, POLICY_FIRST_TOKEN_TIMEOUT_S, "10");
	expect_effective(&e, POLICY_TEMPERATURE, "0.2");
	expect_effective(&e, POLICY_SYSTEM, "Root.");
	expect_effective(&e, POLICY_UMASK, "077");
	expect_effective(&e, POLICY_AUDIT_PROMPTS, "true");
	expect_effective(&e, POLICY_PROMPT_FORMAT, "json");
	effective_release(&e);

	/* Nearer, it wins, even where it relaxes (preferences may). */
	policy_from(&leaf, "{\"fallback\":true,\"order\":\"latency\",\"retries\":0,"
			   "\"timeout_s\":5.5,\"first_token_timeout_s\":1,\"temperature\":0,"
			   "\"system\":\"\",\"umask\":\"002\",\"audit_prompts\":false,"
			   "\"prompt_format\":\"text\"}");
	chain[2] = &leaf;
	assert_int_equal(policy_compose(chain, 3, 0, &e), 0);
	expect_effective(&e, POLICY_FALLBACK, "true");
	expect_effective(&e, POLICY_ORDER, "latency");
	expect_effective(&e, POLICY_RETRIES, "0");
	expect_effective(&e, POLICY_TIMEOUT_S, "5.5");
	expect_effective(&e, POLICY_FIRST_TOKEN_TIMEOUT_S, "1");
	expect_effective(&e, POLICY_TEMPERATURE, "0");
	assert_true(e.has_temperature);
	/* "" is no system message, in force over the root's. */
	expect_effective(&e, POLICY_SYSTEM, "");
	expect_effective(&e, POLICY_UMASK, "002");
	expect_effective(&e, POLICY_AUDIT_PROMPTS, "false");
	expect_effective(&e, POLICY_PROMPT_FORMAT, "text");
	effective_release(&e);

	/* The composition owns what it holds: the chain may go. */
	policy_release(&leaf);
	policy_from(&leaf, "{\"system\":\"Leaf.\"}");
	assert_int_equal(policy_compose(chain, 3, 0, &e), 0);
	policy_release(&leaf);
	policy_release(&root);
	assert_string_equal(e.system, "Leaf.");
	expect_effective(&e, POLICY_TEMPERATURE, "0.2");
	effective_release(&e);
}

static void test_allows_model(void **state)
{
	char *eu_tags[] = { "eu", "de" };
	struct cloud cloud;
	struct region region;
	struct model model;
	const struct policy *chain[1];
	struct effective_policy e;
	struct policy p;

	(void)state;
	memset(&cloud, 0, sizeof(cloud));
	memset(&region, 0, sizeof(region));
	memset(&model, 0, sizeof(model));
	cloud.name = "aws";
	region.name = "eu-central-1";
	region.geo = eu_tags;
	region.n_geo = 2;
	region.cloud = &cloud;
	model.name = "claude-sonnet";
	model.region = &region;
	chain[0] = &p;

	policy_from(&p, "{\"providers\":[\"aws\"],\"residency\":[\"de\"]}");
	assert_int_equal(policy_compose(chain, 1, 0, &e), 0);
	assert_true(effective_allows_model(&e, &model));
	effective_release(&e);
	policy_release(&p);

	policy_from(&p, "{\"residency\":[\"us\"]}");
	assert_int_equal(policy_compose(chain, 1, 0, &e), 0);
	assert_false(effective_allows_model(&e, &model));
	effective_release(&e);
	policy_release(&p);

	policy_from(&p, "{\"providers\":[\"azure\"]}");
	assert_int_equal(policy_compose(chain, 1, 0, &e), 0);
	assert_false(effective_allows_model(&e, &model));
	effective_release(&e);
	policy_release(&p);
}

static void test_worst_case_cost(void **state)
{
	(void)state;
	/* (1000 + 200 + 8 * 2) * $3/M + 500 * $15/M */
	assert_float_equal(policy_worst_case_usd(1000, 200, 2, 500, 3.0, 15.0), 0.003648 + 0.0075,
			   COST_EPSILON);
	/* One plain-text message of 14 bytes, 800 tokens, $2.50 / $10. */
	assert_float_equal(policy_worst_case_usd(14, 0, 1, 800, 2.5, 10.0),
			   22 * 2.5 / 1e6 + 800 * 10.0 / 1e6, COST_EPSILON);
	assert_float_equal(policy_worst_case_usd(14, 0, 1, 800, 2.5, 10.0), 0.008055, COST_EPSILON);
	/* A 1 MiB prompt at $15/M in, 4096 tokens at $75/M out. */
	assert_float_equal(policy_worst_case_usd(1048576, 0, 1, 4096, 15.0, 75.0),
			   15.728760 + 0.3072, COST_EPSILON);
	assert_float_equal(policy_worst_case_usd(0, 0, 0, 1, 0, 0), 0, COST_EPSILON);
	assert_float_equal(policy_worst_case_usd(0, 0, 1, 100, 1.0, 0), 0.000008, COST_EPSILON);
	/* No bound on the answer: a free answer costs nothing, another
	 * could cost anything. */
	assert_float_equal(policy_worst_case_usd(100, 0, 1, 0, 1.0, 0), 0.000108, COST_EPSILON);
	assert_true(isinf(policy_worst_case_usd(100, 0, 1, 0, 1.0, 2.0)));
	assert_true(isinf(policy_worst_case_usd(100, 0, 1, -1, 1.0, 2.0)));
}

/* Allocation failure: linked with -Wl,--wrap=malloc,--wrap=calloc,
 * --wrap=realloc,--wrap=strdup, the allocations of policy.c come here.
 * The Nth one fails; every function must report -ENOMEM, leave nothing
 * to free (LeakSanitizer checks) and crash nowhere, for every N until it
 * succeeds. jansson's own allocations are left alone. */
void *__real_malloc(size_t size);
void *__real_calloc(size_t n, size_t size);
void *__real_realloc(void *ptr, size_t size);
char *__real_strdup(const char *s);
void *__wrap_malloc(size_t size);
void *__wrap_calloc(size_t n, size_t size);
void *__wrap_realloc(void *ptr, size_t size);
char *__wrap_strdup(const char *s);

static long allocs_before_failure = -1; /* -1: never fail */

static int allocation_fails(void)
{
	if (allocs_before_failure < 0)
		return 0;
	if (allocs_before_failure == 0) {
		allocs_before_failure = -1;
		return 1;
	}
	allocs_before_failure--;
	return 0;
}

void *__wrap_malloc(size_t size)
{
	return allocation_fails() ? NULL : __real_malloc(size);
}

void *__wrap_calloc(size_t n, size_t size)
{
	return allocation_fails() ? NULL : __real_calloc(n, size);
}

void *__wrap_realloc(void *ptr, size_t size)
{
	return allocation_fails() ? NULL : __real_realloc(ptr, size);
}

char *__wrap_strdup(const char *s)
{
	return allocation_fails() ? NULL : __real_strdup(s);
}

static const struct policy *failure_chain[3];

/* Each runs one function of policy.c once: 0, or -ENOMEM. */
static int run_parse(void)
{
	struct policy p;
	char err[256];
	int rc;

	rc = parse(full_policy, &p, err, sizeof(err));
	if (rc == -ENOMEM) {
		assert_string_equal(err, "out of memory while reading the policy");
		assert_int_equal(p.set, 0);
	}
	policy_release(&p);
	return rc;
}

static int run_to_json(void)
{
	char *json;

	json = policy_to_json(failure_chain[0]);
	if (!json)
		return -ENOMEM;
	assert_string_equal(json, full_policy);
	free(json);
	return 0;
}

static int run_set_value(void)
{
	struct policy p;
	char err[256];
	int rc;

	assert_int_equal(policy_copy(&p, failure_chain[1]), 0);
	rc = set(&p, POLICY_PROVIDERS, "a, b, c, d, e, f, g, h, i", err, sizeof(err));
	if (rc == 0)
		rc = set(&p, POLICY_SYSTEM, "Be brief.", err, sizeof(err));
	if (rc == -ENOMEM)
		assert_string_equal(err, "out of memory while reading the policy");
	policy_release(&p);
	return rc;
}

static int run_get_value(void)
{
	char *value;
	int rc;

	rc = policy_get_value(failure_chain[0], POLICY_PROVIDERS, &value);
	if (rc == -ENOMEM)
		assert_null(value);
	free(value);
	return rc;
}

static int run_copy(void)
{
	struct policy p;
	int rc;

	rc = policy_copy(&p, failure_chain[0]);
	if (rc == -ENOMEM)
		assert_int_equal(p.set, 0);
	else
		assert_true(policy_equal(&p, failure_chain[0]));
	policy_release(&p);
	return rc;
}

static int run_compose(void)
{
	struct effective_policy e;
	char *value = NULL;
	int rc;

	rc = policy_compose(failure_chain, 3, 0, &e);
	if (rc == 0)
		rc = effective_get_value(&e, POLICY_PROVIDERS, &value);
	if (rc == 0)
		assert_string_equal(value, "aws");
	free(value);
	effective_release(&e);
	return rc;
}

/* Runs RUN with the Nth allocation failing, for N = 0, 1, ... until it
 * succeeds; returns how many failures it survived. */
static long survive_failures(int (*run)(void))
{
	long n;
	int rc;

	for (n = 0;; n++) {
		allocs_before_failure = n;
		rc = run();
		allocs_before_failure = -1;
		if (rc == 0)
			break;
		assert_int_equal(rc, -ENOMEM);
	}
	return n;
}

static void test_allocation_failure(void **state)
{
	struct policy full;
	struct policy small;
	struct policy leaf;

	(void)state;
	policy_from(&full, full_policy);
	policy_from(&small, "{\"retries\":1}");
	policy_from(&leaf, "{\"providers\":[\"gcp\",\"aws\"],\"system\":\"x\",\"budget_usd\":1}");
	failure_chain[0] = &full;
	failure_chain[1] = &small;
	failure_chain[2] = &leaf;
	assert_true(survive_failures(run_parse) >= 6);
	assert_true(survive_failures(run_to_json) >= 1);
	assert_true(survive_failures(run_set_value) >= 10);
	assert_true(survive_failures(run_get_value) >= 1);
	assert_true(survive_failures(run_copy) >= 6);
	assert_true(survive_failures(run_compose) >= 4);
	policy_release(&leaf);
	policy_release(&small);
	policy_release(&full);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_key_names),
		cmocka_unit_test(test_parse_empty),
		cmocka_unit_test(test_parse_every_key),
		cmocka_unit_test(test_parse_value_forms),
		cmocka_unit_test(test_parse_invalid_values),
		cmocka_unit_test(test_parse_invalid_documents),
		cmocka_unit_test(test_parse_error_one_line),
		cmocka_unit_test(test_round_trip),
		cmocka_unit_test(test_equal_and_copy),
		cmocka_unit_test(test_xattr_set_get),
		cmocka_unit_test(test_xattr_replaces_and_keeps),
		cmocka_unit_test(test_xattr_invalid),
		cmocka_unit_test(test_xattr_nul_bytes),
		cmocka_unit_test(test_xattr_unset_and_list),
		cmocka_unit_test(test_compose_defaults),
		cmocka_unit_test(test_compose_intersection),
		cmocka_unit_test(test_compose_caps),
		cmocka_unit_test(test_compose_budgets),
		cmocka_unit_test(test_compose_nearest_wins),
		cmocka_unit_test(test_allows_model),
		cmocka_unit_test(test_worst_case_cost),
		cmocka_unit_test(test_allocation_failure),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
