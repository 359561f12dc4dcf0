/* Job file names: which names are prompts, which are generated. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>

#include "fs/names.h"

static void roles(void **state)
{
	(void)state;
	assert_int_equal(file_role_of("q.prompt"), ROLE_PROMPT);
	assert_int_equal(file_role_of("a.b.prompt"), ROLE_PROMPT);
	assert_int_equal(file_role_of("q.response"), ROLE_RESPONSE);
	assert_int_equal(file_role_of("q.meta"), ROLE_META);
	assert_int_equal(file_role_of("q.error"), ROLE_ERROR);
	assert_int_equal(file_role_of(".prompt"), ROLE_PLAIN);
	assert_int_equal(file_role_of("prompt"), ROLE_PLAIN);
	assert_int_equal(file_role_of("q.prompt.txt"), ROLE_PLAIN);
	assert_int_equal(file_role_of("q.Prompt"), ROLE_PLAIN);
	assert_int_equal(file_role_of("notes.txt"), ROLE_PLAIN);
	assert_int_equal(file_role_of(""), ROLE_PLAIN);
	assert_true(file_role_generated(ROLE_META));
	assert_false(file_role_generated(ROLE_PROMPT));
	assert_false(file_role_generated(ROLE_PLAIN));
}

static void bases(void **state)
{
	char *s;

	(void)state;
	s = name_strip_suffix("batch.q1.prompt", ".prompt");
	assert_string_equal(s, "batch.q1");
	free(s);
	assert_null(name_strip_suffix(".prompt", ".prompt"));
	assert_null(name_strip_suffix("q.meta", ".prompt"));
	s = name_with_suffix("q", ".response");
	assert_string_equal(s, "q.response");
	free(s);
	s = name_job_base("x y.error");
	assert_string_equal(s, "x y");
	free(s);
	assert_null(name_job_base("notes.txt"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(roles),
		cmocka_unit_test(bases),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
